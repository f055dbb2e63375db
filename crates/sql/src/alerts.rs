//! A rule's output rows as [`Alert`]s: labels (the rule name, severity,
//! the row's key columns and `@label.*`), values (every other selected
//! column, JSON), rendered annotations and the window bounds. The one
//! place the engine leaves columnar data.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::{Rule, WINDOW_END, WINDOW_START};
use telemine_types::alert::{
    ALERT_SCHEMA, Alert, MAX_LABEL_BYTES, MAX_TEXT_BYTES, cut, fingerprint, format_ms,
};

/// Turns a rule's output rows into alerts.
pub fn alerts_from_batches(rule: &Rule, batches: &[RecordBatch]) -> Vec<Alert> {
    let mut out = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let columns: Vec<Column> = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, a)| Column::new(f.name(), a))
            .collect();
        let (Some(ws), Some(we)) = (
            columns.iter().position(|c| c.name == WINDOW_START),
            columns.iter().position(|c| c.name == WINDOW_END),
        ) else {
            continue;
        };
        for row in 0..batch.num_rows() {
            let mut labels = BTreeMap::new();
            labels.insert("alertname".to_string(), rule.name.clone());
            labels.insert("severity".to_string(), rule.severity.as_str().to_string());
            let mut values = serde_json::Map::new();
            for (i, c) in columns.iter().enumerate() {
                if i == ws || i == we {
                    continue;
                }
                if rule.label_columns.iter().any(|l| l == &c.name) {
                    if let Some(v) = c.text(row) {
                        labels.insert(c.name.clone(), cut(v, MAX_LABEL_BYTES));
                    }
                } else {
                    let v = match c.json(row) {
                        serde_json::Value::String(s) => {
                            serde_json::Value::String(cut(s, MAX_TEXT_BYTES))
                        }
                        v => v,
                    };
                    values.insert(c.name.clone(), v);
                }
            }
            for (k, v) in &rule.extra_labels {
                labels.insert(k.clone(), v.clone());
            }
            let annotations = rule
                .annotations
                .iter()
                .map(|(name, t)| {
                    (
                        name.clone(),
                        cut(t.render(&labels, &values), MAX_TEXT_BYTES),
                    )
                })
                .collect();
            let start = columns[ws].millis(row).unwrap_or_default();
            let end = columns[we].millis(row).unwrap_or_default();
            out.push(Alert {
                schema: ALERT_SCHEMA.to_string(),
                status: "firing".to_string(),
                rule: rule.name.clone(),
                severity: rule.severity.as_str().to_string(),
                fingerprint: fingerprint(&labels),
                labels,
                annotations,
                values,
                window_start: format_ms(start),
                window_end: format_ms(end),
                window_start_ms: start,
                window_end_ms: end,
            });
        }
    }
    out
}

/// A column prepared for row access: numbers as f64, the rest as text.
struct Column {
    name: String,
    kind: ColumnKind,
}

enum ColumnKind {
    Number(ArrayRef),
    Time(ArrayRef),
    Bool(ArrayRef),
    Text(ArrayRef),
}

impl Column {
    fn new(name: &str, a: &ArrayRef) -> Self {
        let dt = a.data_type();
        let kind = if dt.is_numeric() {
            cast(a, &DataType::Float64).map(ColumnKind::Number)
        } else if matches!(
            dt,
            DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
        ) {
            cast(
                a,
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            )
            .and_then(|t| cast(&t, &DataType::Int64))
            .map(ColumnKind::Time)
        } else if dt == &DataType::Boolean {
            Ok(ColumnKind::Bool(a.clone()))
        } else {
            cast(a, &DataType::Utf8).map(ColumnKind::Text)
        };
        let kind = kind.unwrap_or_else(|_| ColumnKind::Text(a.clone()));
        Column {
            name: name.to_string(),
            kind,
        }
    }

    fn millis(&self, row: usize) -> Option<i64> {
        match &self.kind {
            ColumnKind::Time(a) if a.is_valid(row) => {
                Some(a.as_primitive::<Int64Type>().value(row))
            }
            _ => None,
        }
    }

    fn text(&self, row: usize) -> Option<String> {
        match self.json(row) {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s),
            v => Some(v.to_string()),
        }
    }

    fn json(&self, row: usize) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            ColumnKind::Number(a) if a.is_valid(row) => {
                let v = a.as_primitive::<Float64Type>().value(row);
                serde_json::Number::from_f64(v)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
            ColumnKind::Time(a) if a.is_valid(row) => {
                Value::String(format_ms(a.as_primitive::<Int64Type>().value(row)))
            }
            ColumnKind::Bool(a) if a.is_valid(row) => Value::Bool(a.as_boolean().value(row)),
            ColumnKind::Text(a) if a.is_valid(row) => match a.as_string_opt::<i32>() {
                Some(s) => Value::String(s.value(row).to_string()),
                None => Value::Null,
            },
            _ => Value::Null,
        }
    }
}
