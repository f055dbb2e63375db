//! The declared schema of a source.
//!
//! Every source declares its columns in the config (`columns = ["ts
//! timestamp", "host string", "cpu double"]`) and names one of them as its
//! event time. The decoders build exactly this schema, plus two metadata
//! columns that keep every row traceable to its Kafka record:
//! [`PARTITION_COLUMN`] and [`OFFSET_COLUMN`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Deserializer};

/// Kafka partition of the record a row was decoded from (`Int32`).
pub const PARTITION_COLUMN: &str = "_partition";
/// Kafka offset of the record a row was decoded from (`Int64`).
pub const OFFSET_COLUMN: &str = "_offset";

/// The Arrow type of event-time columns: milliseconds since the Unix epoch,
/// UTC, without a zone annotation. Every timestamp inside the engine has it.
pub const EVENT_TIME_TYPE: DataType = DataType::Timestamp(TimeUnit::Millisecond, None);

/// A column type an analyst can declare. Names follow SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Double,
    BigInt,
    Boolean,
    Timestamp,
}

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Double => DataType::Float64,
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => EVENT_TIME_TYPE,
        }
    }
}

impl FromStr for ColumnType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "string" | "text" | "varchar" | "utf8" => ColumnType::String,
            "double" | "float" | "float64" | "real" => ColumnType::Double,
            "bigint" | "int" | "integer" | "int64" | "long" => ColumnType::BigInt,
            "boolean" | "bool" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            other => {
                return Err(format!(
                    "unknown column type `{other}`: use string, double, bigint, boolean or timestamp"
                ));
            }
        })
    }
}

/// One declared column, written in config as `"name type"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
}

impl FromStr for ColumnSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(ty), None) => Ok(ColumnSpec {
                name: name.to_string(),
                ty: ty.parse()?,
            }),
            _ => Err(format!(
                "column `{s}` must be written as \"name type\", e.g. \"cpu double\""
            )),
        }
    }
}

impl fmt::Display for ColumnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.name, self.ty)
    }
}

impl<'de> Deserialize<'de> for ColumnSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The schema of one source: its columns and which one is event time.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    columns: Vec<ColumnSpec>,
    event_time: usize,
    /// Columns as decoded (all nullable: a missing field is a null).
    decoded: SchemaRef,
    /// Decoded columns plus `_partition` and `_offset`.
    with_meta: SchemaRef,
}

impl SourceSchema {
    /// Builds a schema; fails when the event-time column is not declared as
    /// a timestamp or a column name repeats.
    pub fn new(columns: Vec<ColumnSpec>, event_time: &str) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::new();
        for c in &columns {
            if !seen.insert(c.name.as_str()) {
                return Err(format!("column `{}` is declared twice", c.name));
            }
            if c.name == PARTITION_COLUMN || c.name == OFFSET_COLUMN {
                return Err(format!(
                    "column name `{}` is reserved for Kafka metadata",
                    c.name
                ));
            }
        }
        let event_time_idx = columns
            .iter()
            .position(|c| c.name == event_time)
            .ok_or_else(|| {
                format!("event_time `{event_time}` is not one of the declared columns")
            })?;
        if columns[event_time_idx].ty != ColumnType::Timestamp {
            return Err(format!(
                "event_time column `{event_time}` must be declared as `timestamp`"
            ));
        }
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.ty.data_type(), true))
            .collect();
        let decoded = Arc::new(Schema::new(fields.clone()));
        let mut meta_fields = fields;
        meta_fields.push(Field::new(PARTITION_COLUMN, DataType::Int32, false));
        meta_fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
        Ok(SourceSchema {
            columns,
            event_time: event_time_idx,
            decoded,
            with_meta: Arc::new(Schema::new(meta_fields)),
        })
    }

    pub fn columns(&self) -> &[ColumnSpec] {
        &self.columns
    }

    /// Index of the event-time column (same in both Arrow schemas).
    pub fn event_time_index(&self) -> usize {
        self.event_time
    }

    pub fn event_time_name(&self) -> &str {
        &self.columns[self.event_time].name
    }

    /// The schema the decoders parse into, without metadata columns.
    pub fn decoded_schema(&self) -> &SchemaRef {
        &self.decoded
    }

    /// The schema of decoded batches: declared columns, then `_partition`,
    /// `_offset`.
    pub fn batch_schema(&self) -> &SchemaRef {
        &self.with_meta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_column_specs() {
        let c: ColumnSpec = "cpu double".parse().unwrap();
        assert_eq!(c.ty, ColumnType::Double);
        assert!("cpu".parse::<ColumnSpec>().is_err());
        assert!(
            "cpu decimal"
                .parse::<ColumnSpec>()
                .unwrap_err()
                .contains("unknown column type")
        );
    }

    #[test]
    fn event_time_must_be_a_declared_timestamp() {
        let cols = vec![
            "ts timestamp".parse().unwrap(),
            "host string".parse().unwrap(),
        ];
        assert!(SourceSchema::new(cols.clone(), "ts").is_ok());
        assert!(
            SourceSchema::new(cols.clone(), "host")
                .unwrap_err()
                .contains("timestamp")
        );
        assert!(
            SourceSchema::new(cols, "time")
                .unwrap_err()
                .contains("not one of")
        );
    }
}
