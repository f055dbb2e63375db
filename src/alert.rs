//! Alerts: the rows rules return, turned into messages for subscribers.
//!
//! This is the one place the engine leaves columnar data: each row of a
//! rule's output becomes an [`Alert`] with labels (the rule name, severity
//! and the row's key columns), values (every other selected column), the
//! window bounds and a stable fingerprint.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use serde::{Deserialize, Serialize};

use crate::sql::{Rule, WINDOW_END, WINDOW_START};

/// Version tag of the alert JSON; bumped on incompatible changes.
pub const ALERT_SCHEMA: &str = "telemine.alert/v1";

/// Longest label value an alert carries, in bytes; longer ones are cut
/// and marked (see [`cut`]), before the fingerprint is taken.
pub const MAX_LABEL_BYTES: usize = 1024;
/// Longest string value or rendered annotation, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes on a character boundary, marked with
/// `…[+N bytes]` (N: what was cut) so nobody mistakes it for the value.
pub fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker_room = 24;
    let mut end = max.saturating_sub(marker_room);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[+{} bytes]", &text[..end], text.len() - end)
}

/// One alert instance: a rule's row for one series and one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    pub status: String,
    pub rule: String,
    pub severity: String,
    /// 16 hex digits; the same rule and labels always give the same value,
    /// across restarts and instances.
    pub fingerprint: String,
    /// `alertname`, `severity` and the rule's key columns.
    pub labels: BTreeMap<String, String>,
    /// The rule's annotations (summary, description, runbook_url, …),
    /// rendered with this row's labels and values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Every other column the rule selected.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Window bounds, RFC 3339 UTC: `[window_start, window_end)`.
    pub window_start: String,
    pub window_end: String,
    #[serde(skip)]
    pub window_end_ms: i64,
    #[serde(skip)]
    pub window_start_ms: i64,
}

impl Alert {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an alert message as subscribers receive it.
    pub fn from_json(bytes: &[u8]) -> Result<Alert, serde_json::Error> {
        let mut a: Alert = serde_json::from_slice(bytes)?;
        a.window_start_ms = parse_ms(&a.window_start).map_err(serde::de::Error::custom)?;
        a.window_end_ms = parse_ms(&a.window_end).map_err(serde::de::Error::custom)?;
        Ok(a)
    }
}

/// Fingerprint of a label set: FNV-1a 64 over the labels sorted by name,
/// each name and value followed by a 0xFF separator — the scheme
/// Prometheus and Alertmanager use, so fingerprints match theirs.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_ms(text: &str) -> Result<i64, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(text).map(|d| d.timestamp_millis())
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_prometheus_label_set_hash() {
        // Prometheus: model.LabelSet{"alertname":"A","host":"h1"}.Fingerprint()
        // is FNV-1a 64 over "alertname\xffA\xffhost\xffh1\xff".
        let labels: BTreeMap<String, String> = [
            ("host".to_string(), "h1".to_string()),
            ("alertname".to_string(), "A".to_string()),
        ]
        .into();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"alertname\xffA\xffhost\xffh1\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(fingerprint(&labels), format!("{h:016x}"));
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }

    #[test]
    fn long_texts_are_cut_on_a_char_boundary_and_marked() {
        assert_eq!(cut("short".into(), 1024), "short");
        let long = "é".repeat(100_000);
        let c = cut(long, MAX_LABEL_BYTES);
        assert!(c.len() <= MAX_LABEL_BYTES, "{}", c.len());
        assert!(c.ends_with(" bytes]"), "{c}");
        let cut_bytes: usize = c
            .rsplit("…[+")
            .next()
            .and_then(|t| t.trim_end_matches(" bytes]").parse().ok())
            .unwrap();
        assert_eq!(
            c.len() - "…[+ bytes]".len() - cut_bytes.to_string().len() + cut_bytes,
            200_000
        );
    }

    #[test]
    fn timestamps_render_as_rfc3339_utc() {
        assert_eq!(format_ms(1_764_201_660_000), "2025-11-27T00:01:00.000Z");
    }
}
