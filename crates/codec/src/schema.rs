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

use crate::error::SchemaError;

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

/// How a JSON source writes its event time (the source's
/// `timestamp_unit`).
///
/// A numeric event time is also checked against the magnitude bands of
/// [`TimestampUnit::looks_like`], so a record written in another unit than
/// the declared one is a dead letter instead of a row dated 1970 or 50,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Epoch seconds, fractions allowed (collectd's `time`).
    S,
    /// Epoch milliseconds; RFC 3339 strings are taken too (what JSON
    /// sources read before the key existed).
    #[default]
    Ms,
    /// Epoch microseconds.
    Us,
    /// Epoch nanoseconds.
    Ns,
    /// RFC 3339 strings only (`2026-11-27T00:00:00Z`); a number is a
    /// dead letter.
    Rfc3339,
}

/// Below this magnitude a numeric event time is taken in the declared
/// unit without a check: every unit gives a time before 1973-03-03, which
/// no producer clock reads, but replays and tests start clocks near zero.
pub const UNCHECKED_BELOW: f64 = 1e8;

impl TimestampUnit {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            TimestampUnit::S => "s",
            TimestampUnit::Ms => "ms",
            TimestampUnit::Us => "us",
            TimestampUnit::Ns => "ns",
            TimestampUnit::Rfc3339 => "rfc3339",
        }
    }

    /// Milliseconds per unit (`None` for RFC 3339).
    pub fn ms_per_unit(self) -> Option<f64> {
        match self {
            TimestampUnit::S => Some(1e3),
            TimestampUnit::Ms => Some(1.0),
            TimestampUnit::Us => Some(1e-3),
            TimestampUnit::Ns => Some(1e-6),
            TimestampUnit::Rfc3339 => None,
        }
    }

    /// The unit a numeric epoch time `v` looks like, by magnitude alone
    /// (fixed bands, independent of today's date): |v| in [1e8, 1e11) is
    /// seconds (1973-03-03 to 5138-11-16), [1e11, 1e14) milliseconds,
    /// [1e14, 1e17) microseconds, [1e17, 1e20) nanoseconds. Below 1e8 it
    /// is [`Magnitude::Any`] (see [`UNCHECKED_BELOW`]); at 1e20 and above,
    /// or NaN and infinities, [`Magnitude::None`].
    pub fn looks_like(v: f64) -> Magnitude {
        let a = v.abs();
        if a.is_nan() || a >= 1e20 {
            Magnitude::None
        } else if a < UNCHECKED_BELOW {
            Magnitude::Any
        } else if a < 1e11 {
            Magnitude::Unit(TimestampUnit::S)
        } else if a < 1e14 {
            Magnitude::Unit(TimestampUnit::Ms)
        } else if a < 1e17 {
            Magnitude::Unit(TimestampUnit::Us)
        } else {
            Magnitude::Unit(TimestampUnit::Ns)
        }
    }
}

/// What the magnitude of a numeric event time says of its unit (see
/// [`TimestampUnit::looks_like`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magnitude {
    /// Small enough to be taken in any unit.
    Any,
    /// The magnitude of this unit.
    Unit(TimestampUnit),
    /// No unit's (1e20 and above, or not a number).
    None,
}

/// Where a column is read from inside a JSON object: keys and array
/// indexes, written `meta.host`, `values[0]`, `a.b[2][0].c`. Keys holding
/// `.` or `[` cannot be addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    steps: Vec<PathStep>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathStep {
    Key(String),
    Index(usize),
}

impl FieldPath {
    /// The path as written in the config.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path in `v`, if every step exists.
    pub fn lookup<'a>(&self, v: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        let mut at = v;
        for step in &self.steps {
            at = match step {
                PathStep::Key(k) => at.as_object()?.get(k)?,
                PathStep::Index(i) => at.as_array()?.get(*i)?,
            };
        }
        Some(at)
    }
}

/// Steps a path may take at most: deeper objects are refused by the
/// source's `max_depth` anyway.
const MAX_PATH_STEPS: usize = 64;

impl FromStr for FieldPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            format!("path `{s}`: {why} (write keys and indexes as in `meta.host` or `values[0]`)")
        };
        let mut steps = Vec::new();
        for part in s.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(i) => (&part[..i], &part[i..]),
                None => (part, ""),
            };
            if key.is_empty() && (steps.is_empty() || rest.is_empty()) {
                return Err(bad("a key is empty"));
            }
            if !key.is_empty() {
                if key.contains(']') {
                    return Err(bad("a `]` without its `[`"));
                }
                steps.push(PathStep::Key(key.to_string()));
            }
            while !rest.is_empty() {
                let close = rest.find(']').ok_or_else(|| bad("a `[` is not closed"))?;
                let index: usize = rest[1..close]
                    .parse()
                    .map_err(|_| bad("an index is not a whole number"))?;
                steps.push(PathStep::Index(index));
                rest = &rest[close + 1..];
                if !rest.is_empty() && !rest.starts_with('[') {
                    return Err(bad("text after `]` must be `[` or `.`"));
                }
            }
        }
        if steps.len() > MAX_PATH_STEPS {
            return Err(bad(&format!("more than {MAX_PATH_STEPS} steps")));
        }
        Ok(FieldPath {
            text: s.to_string(),
            steps,
        })
    }
}

/// The schema of one source: its columns and which one is event time.
#[derive(Debug, Clone)]
pub struct SourceSchema {
    columns: Vec<ColumnSpec>,
    event_time: usize,
    /// Per column, where a JSON decoder reads it (`None`: the top-level
    /// field of the column's name).
    paths: Vec<Option<FieldPath>>,
    /// How a JSON decoder reads the event time.
    time_unit: TimestampUnit,
    /// Columns as decoded (all nullable: a missing field is a null).
    decoded: SchemaRef,
    /// Decoded columns plus `_partition` and `_offset`.
    with_meta: SchemaRef,
}

impl SourceSchema {
    /// Builds a schema; fails when the event-time column is not declared as
    /// a timestamp or a column name repeats.
    pub fn new(columns: Vec<ColumnSpec>, event_time: &str) -> Result<Self, SchemaError> {
        let mut seen = std::collections::HashSet::new();
        for c in &columns {
            if !seen.insert(c.name.as_str()) {
                return Err(SchemaError::DuplicateColumn(c.name.clone()));
            }
            if c.name == PARTITION_COLUMN || c.name == OFFSET_COLUMN {
                return Err(SchemaError::ReservedColumn(c.name.clone()));
            }
        }
        let event_time_idx = columns
            .iter()
            .position(|c| c.name == event_time)
            .ok_or_else(|| SchemaError::UnknownEventTime(event_time.to_string()))?;
        if columns[event_time_idx].ty != ColumnType::Timestamp {
            return Err(SchemaError::EventTimeNotTimestamp(event_time.to_string()));
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
            paths: vec![None; columns.len()],
            time_unit: TimestampUnit::default(),
            columns,
            event_time: event_time_idx,
            decoded,
            with_meta: Arc::new(Schema::new(meta_fields)),
        })
    }

    /// Reads `column` from `path` (JSON sources). Fails when the column is
    /// not declared or the path does not parse.
    pub fn with_path(mut self, column: &str, path: &str) -> Result<Self, SchemaError> {
        let i = self
            .columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| SchemaError::UnknownPathColumn(column.to_string()))?;
        self.paths[i] = Some(
            path.parse::<FieldPath>()
                .map_err(|e| SchemaError::BadPath {
                    column: column.to_string(),
                    why: e.to_string(),
                })?,
        );
        Ok(self)
    }

    /// Reads the event time in `unit` (JSON sources).
    pub fn with_time_unit(mut self, unit: TimestampUnit) -> Self {
        self.time_unit = unit;
        self
    }

    /// Where a JSON decoder reads column `i` (`None`: the field of its name).
    pub fn path(&self, i: usize) -> Option<&FieldPath> {
        self.paths.get(i).and_then(Option::as_ref)
    }

    /// Whether any column is read from a path.
    pub fn has_paths(&self) -> bool {
        self.paths.iter().any(Option::is_some)
    }

    pub fn time_unit(&self) -> TimestampUnit {
        self.time_unit
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
                .to_string()
                .contains("unknown column type")
        );
    }

    #[test]
    fn parses_field_paths() {
        let v: serde_json::Value =
            serde_json::from_str(r#"{"meta":{"host":"h","l":[[1,2],[3]]},"values":[7]}"#).unwrap();
        let at = |p: &str| p.parse::<FieldPath>().unwrap().lookup(&v).cloned();
        assert_eq!(at("meta.host"), Some("h".into()));
        assert_eq!(at("values[0]"), Some(7.into()));
        assert_eq!(at("meta.l[1][0]"), Some(3.into()));
        assert_eq!(at("meta.l[5]"), None);
        assert_eq!(at("values.x"), None);
        for bad in ["", "a..b", "a[", "a[x]", "a]b", "a[0]b", ".a"] {
            let e = bad.parse::<FieldPath>().unwrap_err();
            assert!(e.contains("path"), "{bad}: {e}");
        }
    }

    #[test]
    fn timestamp_bands_do_not_depend_on_the_date() {
        use TimestampUnit::*;
        let looks = TimestampUnit::looks_like;
        assert_eq!(looks(1000.0), Magnitude::Any);
        assert_eq!(looks(1_796_078_349.826), Magnitude::Unit(S));
        assert_eq!(looks(1_796_078_349_826.0), Magnitude::Unit(Ms));
        assert_eq!(looks(1.796e15), Magnitude::Unit(Us));
        assert_eq!(looks(1.796e18), Magnitude::Unit(Ns));
        assert_eq!(looks(-1.796e12), Magnitude::Unit(Ms));
        assert_eq!(looks(1e20), Magnitude::None);
        assert_eq!(looks(f64::NAN), Magnitude::None);
        assert_eq!(looks(f64::INFINITY), Magnitude::None);
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
                .to_string()
                .contains("timestamp")
        );
        assert!(
            SourceSchema::new(cols, "time")
                .unwrap_err()
                .to_string()
                .contains("not one of")
        );
    }
}
