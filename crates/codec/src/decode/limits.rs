//! What a source accepts at all: the bounds every decoder applies before
//! and after parsing, so that no single record can crash, stall or
//! mislead the engine.
//!
//! - Before parsing ([`Guard::screen`]): a message larger than
//!   `max_message_bytes`, JSON nested deeper than `max_depth`, or a string
//!   (JSON) or value (line protocol) longer than `max_field_bytes` is a
//!   dead letter. The scan is one pass over the bytes without recursion, so
//!   no nesting depth can exhaust the stack.
//! - After parsing ([`Guard::finish`]): NaN and ±Infinity in a `double`
//!   column (as numbers or strings) are never taken as readings: the
//!   source's [`NonFinite`] policy sends the record to the dead letters or
//!   makes the value NULL. An event time more than `max_future_skew` ahead
//!   of the wall clock — or of the newest event time its partition has
//!   already delivered, when that is later — is a dead letter too, so a
//!   broken producer clock can never move a watermark.
//!
//! The wall clock is a [`Clock`], so tests and rule tests set it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int32Array, RecordBatch};
use arrow::compute::nullif;
use arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};
use serde::Deserialize;

use crate::error::Refusal;
use crate::schema::SourceSchema;

/// The wall clock as the decoders see it: milliseconds since the epoch.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn wall() -> Clock {
        Clock(Arc::new(|| chrono::Utc::now().timestamp_millis()))
    }

    /// A clock that always reads `ms` (tests, rule tests).
    pub fn fixed(ms: i64) -> Clock {
        Clock(Arc::new(move || ms))
    }

    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::wall()
    }
}

/// What a source does with NaN and ±Infinity in a `double` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NonFinite {
    /// The record goes to the dead-letter topic with the column named.
    #[default]
    DeadLetter,
    /// The value becomes NULL (SQL decides how to fill it); the record is
    /// kept.
    Null,
}

/// A source's bounds (see the module docs). `Default` gives the documented
/// defaults and the system clock.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_depth: usize,
    pub max_field_bytes: usize,
    pub non_finite: NonFinite,
    pub max_future_skew: Duration,
    pub clock: Clock,
}

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_DEPTH: usize = 32;
pub const DEFAULT_MAX_FIELD_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(3600);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_field_bytes: DEFAULT_MAX_FIELD_BYTES,
            non_finite: NonFinite::default(),
            max_future_skew: DEFAULT_MAX_FUTURE_SKEW,
            clock: Clock::wall(),
        }
    }
}

/// How [`Guard::screen`] reads a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Syntax {
    Json,
    LineProtocol,
}

/// A decoder's copy of its source's [`Limits`], and per partition the
/// newest event time it has accepted.
#[derive(Debug, Clone)]
pub struct Guard {
    limits: Limits,
    skew_ms: i64,
    newest: HashMap<i32, i64>,
}

impl Guard {
    pub fn new(limits: Limits) -> Guard {
        let skew_ms = i64::try_from(limits.max_future_skew.as_millis()).unwrap_or(i64::MAX / 4);
        Guard {
            limits,
            skew_ms,
            newest: HashMap::new(),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Size, depth and field-length checks on the raw bytes, before any
    /// parser sees them.
    pub(crate) fn screen(&self, payload: &[u8], syntax: Syntax) -> Result<(), Refusal> {
        let l = &self.limits;
        if payload.len() > l.max_message_bytes {
            return Err(Refusal::TooLarge {
                bytes: payload.len(),
                limit: l.max_message_bytes,
            });
        }
        match syntax {
            Syntax::Json => scan_json(payload, l.max_depth, l.max_field_bytes),
            Syntax::LineProtocol => scan_line_protocol(payload, l.max_field_bytes),
        }
    }

    /// The wall clock, read once per batch or message by the callers.
    pub(crate) fn now_ms(&self) -> i64 {
        self.limits.clock.now_ms()
    }

    /// Why event time `t` of `partition` is refused at wall-clock time
    /// `now`, if it is: later than both `now` and the partition's newest
    /// accepted time, by more than the skew.
    pub(crate) fn check_time(&self, partition: i32, t: i64, now: i64) -> Result<(), Refusal> {
        let base = self.newest.get(&partition).map_or(now, |&n| n.max(now));
        let limit = base.saturating_add(self.skew_ms);
        if t <= limit {
            return Ok(());
        }
        Err(Refusal::AheadOfClock {
            time: t,
            skew_ms: self.skew_ms,
            partition,
        })
    }

    /// `partition` delivered an accepted record with event time `t`.
    pub(crate) fn advance(&mut self, partition: i32, t: i64) {
        let e = self.newest.entry(partition).or_insert(t);
        *e = (*e).max(t);
    }

    /// Applies the non-finite policy and the future-skew bound to a decoded
    /// batch: returns the batch with non-finite values made NULL (policy
    /// `null`), and marks in `refused` the rows that must become dead
    /// letters, with the reason. Accepted rows advance their partition
    /// (`partition_of(i)`). Rows already marked are left alone.
    pub(crate) fn review(
        &mut self,
        batch: RecordBatch,
        schema: &SourceSchema,
        partitions: &Int32Array,
        refused: &mut [Option<Refusal>],
    ) -> RecordBatch {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut nulled = false;
        for (c, col) in batch.columns().iter().enumerate() {
            if col.data_type() != &DataType::Float64 || col.null_count() == col.len() {
                continue;
            }
            let values = col.as_primitive::<Float64Type>();
            if values.iter().all(|v| v.is_none_or(f64::is_finite)) {
                continue;
            }
            let bad: BooleanArray = values
                .iter()
                .map(|v| Some(v.is_some_and(|x| !x.is_finite())))
                .collect();
            match self.limits.non_finite {
                NonFinite::Null => {
                    if let Ok(a) = nullif(col, &bad) {
                        columns[c] = a;
                        nulled = true;
                    }
                }
                NonFinite::DeadLetter => {
                    let name = schema.columns().get(c).map_or("?", |col| col.name.as_str());
                    for (i, b) in bad.iter().enumerate() {
                        if b == Some(true) && refused[i].is_none() {
                            refused[i] = Some(Refusal::NonFiniteValue {
                                value: values.value(i).to_string(),
                                column: name.to_string(),
                            });
                        }
                    }
                }
            }
        }
        let batch = if nulled {
            RecordBatch::try_new(batch.schema(), columns).unwrap_or(batch)
        } else {
            batch
        };
        let times = batch
            .column(schema.event_time_index())
            .as_primitive::<TimestampMillisecondType>();
        let now = self.now_ms();
        for (i, why) in refused.iter_mut().enumerate().take(n) {
            if why.is_some() || times.is_null(i) {
                continue;
            }
            let p = partitions.value(i);
            match self.check_time(p, times.value(i), now) {
                Ok(()) => self.advance(p, times.value(i)),
                Err(reason) => *why = Some(reason),
            }
        }
        batch
    }
}

/// One pass over a JSON text: nesting depth and string lengths. Syntax is
/// left to the parser; this only refuses what could hurt it.
fn scan_json(bytes: &[u8], max_depth: usize, max_field: usize) -> Result<(), Refusal> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'"' => {
                // To the closing quote, past escapes, a chunk at a time.
                let start = i + 1;
                let mut j = start;
                let end = loop {
                    match bytes
                        .get(j..)
                        .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                    {
                        Some(k) if bytes[j + k] == b'\\' => j += k + 2,
                        Some(k) => break Some(j + k),
                        None => break None,
                    }
                };
                let Some(end) = end else {
                    // Unterminated: the parser refuses it; only its length
                    // is this check's.
                    if bytes.len() - start > max_field {
                        return Err(field_too_long(bytes.len() - start, max_field));
                    }
                    return Ok(());
                };
                if end - start > max_field {
                    return Err(field_too_long(end - start, max_field));
                }
                i = end;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Refusal::TooDeep { limit: max_depth });
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Line protocol: no token (measurement, key, value, quoted string) longer
/// than `max_field`. Tokens end at `,`, `=`, space or newline outside
/// quotes; escapes are skipped.
fn scan_line_protocol(bytes: &[u8], max_field: usize) -> Result<(), Refusal> {
    let (mut start, mut in_quotes, mut escaped) = (0usize, false, false);
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' => escaped = true,
            b'"' => in_quotes = !in_quotes,
            b',' | b'=' | b' ' | b'\n' if !in_quotes => {
                if i - start > max_field {
                    return Err(field_too_long(i - start, max_field));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if bytes.len() - start > max_field {
        return Err(field_too_long(bytes.len() - start, max_field));
    }
    Ok(())
}

fn field_too_long(len: usize, limit: usize) -> Refusal {
    Refusal::FieldTooLong { len, limit }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard::new(Limits {
            max_message_bytes: 100,
            max_depth: 3,
            max_field_bytes: 8,
            clock: Clock::fixed(1_000_000),
            ..Limits::default()
        })
    }

    #[test]
    fn screens_size_depth_and_field_length_without_recursion() {
        let g = guard();
        assert!(g.screen(br#"{"a":{"b":[1]}}"#, Syntax::Json).is_ok());
        let deep = g
            .screen(br#"{"a":{"b":[[1]]}}"#, Syntax::Json)
            .unwrap_err()
            .to_string();
        assert!(deep.contains("max_depth (3)"), "{deep}");
        // Brackets inside strings do not count.
        assert!(g.screen(br#"{"a":"[[[["}"#, Syntax::Json).is_ok());
        let long = g
            .screen(br#"{"a":"123456789"}"#, Syntax::Json)
            .unwrap_err()
            .to_string();
        assert!(long.contains("9 bytes"), "{long}");
        // An escaped quote does not end the string.
        assert!(g.screen(br#"{"a":"1234\"56789"}"#, Syntax::Json).is_err());
        let big = vec![b' '; 101];
        assert!(
            g.screen(&big, Syntax::Json)
                .unwrap_err()
                .to_string()
                .contains("101 bytes")
        );
        // 50,000 levels: refused at once, no stack used.
        let deepest = "[".repeat(50_000);
        let g = Guard::new(Limits::default());
        assert!(g.screen(deepest.as_bytes(), Syntax::Json).is_err());
        assert!(
            guard()
                .screen(b"cpu,host=h1 v=1 1000", Syntax::LineProtocol)
                .is_ok()
        );
        assert!(
            guard()
                .screen(b"cpu,host=h123456789 v=1 1000", Syntax::LineProtocol)
                .is_err()
        );
    }

    impl Guard {
        fn check_time_now(&self, partition: i32, t: i64) -> Result<(), Refusal> {
            self.check_time(partition, t, self.now_ms())
        }
    }

    #[test]
    fn future_times_are_measured_against_clock_and_partition_progress() {
        let mut g = guard();
        let hour = 3_600_000;
        assert!(g.check_time_now(0, 1_000_000 + hour).is_ok());
        let err = g
            .check_time_now(0, 1_000_000 + hour + 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_future_skew (1h)"), "{err}");
        // A partition already ahead of the clock (a replay running faster
        // than time) may move on by up to the skew from where it is.
        g.advance(1, 1_000_000 + 5 * hour);
        assert!(g.check_time_now(1, 1_000_000 + 6 * hour).is_ok());
        assert!(g.check_time_now(1, 1_000_000 + 7 * hour).is_err());
        assert!(g.check_time_now(0, 1_000_000 + 6 * hour).is_err());
        // Absurd times are described, never overflow.
        assert!(
            g.check_time_now(0, i64::MAX)
                .unwrap_err()
                .to_string()
                .contains("ms")
        );
    }
}
