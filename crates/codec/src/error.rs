//! The codec's two kinds of error, kept apart because different people act
//! on them:
//!
//! - [`SchemaError`]: a source's declaration cannot be decoded at all (a
//!   config mistake, found before the first record; the operator fixes
//!   the key it names).
//! - [`Refusal`]: why one record was refused. It becomes a dead letter's
//!   reason and the stream goes on; the producer of the record acts on it.

use thiserror::Error;

/// Why a source's declaration (columns, event time, paths, line-protocol
/// options) cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    #[error("column `{0}` is declared twice")]
    DuplicateColumn(String),
    #[error("column name `{0}` is reserved for Kafka metadata")]
    ReservedColumn(String),
    #[error("event_time `{0}` is not one of the declared columns")]
    UnknownEventTime(String),
    #[error("event_time column `{0}` must be declared as `timestamp`")]
    EventTimeNotTimestamp(String),
    #[error("paths: column `{0}` is not one of the declared columns")]
    UnknownPathColumn(String),
    #[error("paths.{column}: {why}")]
    BadPath { column: String, why: String },
    #[error("influx.measurement_column `{0}` is not one of the declared columns")]
    UnknownMeasurementColumn(String),
    #[error("influx.precision `{0}` must be one of ns, us, ms, s")]
    BadPrecision(String),
    /// Arrow refused the decoder for the declared columns (a bug, since
    /// every declared type has a decoder).
    #[error("cannot build a JSON decoder for this schema: {0}")]
    Decoder(String),
}

/// Why one record was refused (a dead letter's reason). The variants say
/// which check refused it; the words say what to change.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Refusal {
    #[error("message too large: {bytes} bytes, the source's max_message_bytes is {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("JSON nested deeper than the source's max_depth ({limit})")]
    TooDeep { limit: usize },
    #[error("a value of {len} bytes is longer than the source's max_field_bytes ({limit})")]
    FieldTooLong { len: usize, limit: usize },
    #[error(
        "the message holds {records} records, more than a batch may hold \
         ([engine] max_batch_records = {limit})"
    )]
    TooManyRecords { records: usize, limit: usize },
    #[error(
        "event time {} is more than max_future_skew ({}) ahead of the wall clock \
         and of what partition {partition} has delivered: a producer clock is wrong",
        describe_ms(*time),
        humantime_ms(*skew_ms)
    )]
    AheadOfClock {
        time: i64,
        skew_ms: i64,
        partition: i32,
    },
    #[error(
        "non-finite value {value} in column `{column}`: never taken as a reading \
         (the source's non_finite = \"null\" keeps the record with NULL)"
    )]
    NonFiniteValue { value: String, column: String },
    /// The payload is not the source's format (syntax, encoding, shape).
    #[error("{0}")]
    Malformed(String),
    /// A value does not fit its declared column.
    #[error("{0}")]
    WrongType(String),
    /// The event time is missing, out of range or not in the declared unit.
    #[error("{0}")]
    EventTime(String),
    /// One line of a line-protocol message.
    #[error("line protocol, line {line}: {why}")]
    Line { line: usize, why: Box<Refusal> },
    /// A part of a message (an element of its array, a collectd value).
    #[error("{part} {why}")]
    Part { part: String, why: Box<Refusal> },
    /// A check that cannot fail did: the record is kept as a dead letter
    /// rather than lost.
    #[error("internal error (a bug in telemine): {0}")]
    Internal(String),
}

/// An event time for a message: RFC 3339 when it is one, the number else.
fn describe_ms(t: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(t) {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{t} ms"),
    }
}

/// A duration in the largest whole unit (`1h`, `90s`).
fn humantime_ms(ms: i64) -> String {
    match ms {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1000 == 0 => format!("{}s", m / 1000),
        m => format!("{m}ms"),
    }
}
