//! InfluxDB line protocol → Arrow, appended straight into column builders.
//!
//! `measurement[,tag=value…] field=value[,field=value…] [timestamp]`, one
//! point per line, several lines per message allowed (Telegraf batches).
//! Tags and fields land in the declared column of the same name (a tag in
//! column `tag_prefix` + its name, when the source sets
//! `influx.tag_prefix`); undeclared ones are ignored. When a line has a tag
//! and a field filling the same column, the field fills it and the tag is
//! left out (Telegraf's `cpu` plugin tags `cpu=cpu0`; set a prefix to keep
//! both).
//!
//! Escapes are exactly the line protocol's: `\,` and `\ ` in the
//! measurement; `\,`, `\=` and `\ ` in tag keys, tag values and field
//! keys; `\"` and `\\` in string field values. A backslash before any
//! other character is kept as it is (`\t` stays a backslash and a `t`).
//! Integers are `i` (i64) or `u` (u64): an unsigned value above
//! i64::MAX fills a `double` or `string` column, and a `bigint` column
//! refuses it (a dead letter saying to declare `double`).
//!
//! Each line is a record of its own: a malformed line is a dead letter
//! carrying just that line's bytes (and its message's partition and
//! offset), and the message's other lines are kept — so replaying a dead
//! letter never doubles the good lines.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};

use super::limits::{Guard, NonFinite, Syntax};
use super::{DeadLetter, Decoded, Decoder, InfluxOptions, finish_batch};
use crate::error::{Refusal, SchemaError};
use crate::schema::{ColumnType, SourceSchema};

enum Column {
    Str(StringBuilder),
    F64(Float64Builder),
    I64(Int64Builder),
    Bool(BooleanBuilder),
    Ts(TimestampMillisecondBuilder),
}

impl Column {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Column::Str(StringBuilder::new()),
            ColumnType::Double => Column::F64(Float64Builder::new()),
            ColumnType::BigInt => Column::I64(Int64Builder::new()),
            ColumnType::Boolean => Column::Bool(BooleanBuilder::new()),
            ColumnType::Timestamp => Column::Ts(TimestampMillisecondBuilder::new()),
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Str(b) => b.append_null(),
            Column::F64(b) => b.append_null(),
            Column::I64(b) => b.append_null(),
            Column::Bool(b) => b.append_null(),
            Column::Ts(b) => b.append_null(),
        }
    }

    /// Appends a value already checked by [`Column::check`].
    fn append(&mut self, v: &Value<'_>) {
        match (self, v) {
            (Column::Str(b), Value::Str(s)) => b.append_value(s),
            (Column::Str(b), other) => b.append_value(other.to_string()),
            // Non-finite values reach here only under `non_finite = "null"`.
            (Column::F64(b), v) => b.append_option(v.as_f64().filter(|x| x.is_finite())),
            (Column::I64(b), v) => b.append_option(v.as_i64()),
            (Column::Bool(b), v) => b.append_option(v.as_bool()),
            (Column::Ts(b), v) => b.append_option(v.as_i64()),
        }
    }

    fn check(&self, v: &Value<'_>) -> bool {
        match self {
            Column::Str(_) => true,
            Column::F64(_) => v.as_f64().is_some(),
            Column::I64(_) | Column::Ts(_) => v.as_i64().is_some(),
            Column::Bool(_) => v.as_bool().is_some(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Str(b) => Arc::new(b.finish()),
            Column::F64(b) => Arc::new(b.finish()),
            Column::I64(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Ts(b) => Arc::new(b.finish()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Column::Str(b) => b.len(),
            Column::F64(b) => b.len(),
            Column::I64(b) => b.len(),
            Column::Bool(b) => b.len(),
            Column::Ts(b) => b.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value<'a> {
    /// A tag value or quoted string field, unescaped.
    Str(Cow<'a, str>),
    Float(f64),
    Int(i64),
    /// A `u` integer (u64).
    UInt(u64),
    Bool(bool),
}

impl Value<'_> {
    fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Str(s) => s.parse().ok(),
            Value::Bool(_) => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::UInt(u) => i64::try_from(*u).ok(),
            Value::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            Value::Str(s) => parse_bool(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Float(v) => write!(f, "{v}"),
            Value::Int(v) => write!(f, "{v}"),
            Value::UInt(v) => write!(f, "{v}"),
            Value::Bool(v) => write!(f, "{v}"),
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "t" | "T" | "true" | "True" | "TRUE" => Some(true),
        "f" | "F" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Decodes InfluxDB line protocol. See the module docs.
pub struct InfluxDecoder {
    schema: SourceSchema,
    columns: Vec<Column>,
    by_name: HashMap<String, usize>,
    measurement: Option<usize>,
    /// Prefix of the column a tag fills (`influx.tag_prefix`).
    tag_prefix: String,
    /// Multiplier to turn a line timestamp into milliseconds (as a divisor).
    ts_divisor: i64,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    dead: Vec<DeadLetter>,
    pushed: usize,
    guard: Guard,
}

impl InfluxDecoder {
    pub fn new(
        schema: SourceSchema,
        opts: &InfluxOptions,
        guard: Guard,
    ) -> Result<Self, SchemaError> {
        let by_name: HashMap<String, usize> = schema
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let measurement = match &opts.measurement_column {
            Some(m) => Some(
                *by_name
                    .get(m)
                    .ok_or_else(|| SchemaError::UnknownMeasurementColumn(m.clone()))?,
            ),
            None => None,
        };
        let ts_divisor = match opts.precision.as_str() {
            "ns" => 1_000_000,
            "us" => 1_000,
            "ms" => 1,
            "s" => -1000,
            p => {
                return Err(SchemaError::BadPrecision(p.to_string()));
            }
        };
        let columns = schema.columns().iter().map(|c| Column::new(c.ty)).collect();
        Ok(InfluxDecoder {
            schema,
            columns,
            by_name,
            measurement,
            tag_prefix: opts.tag_prefix.clone(),
            ts_divisor,
            partitions: Vec::new(),
            offsets: Vec::new(),
            dead: Vec::new(),
            pushed: 0,
            guard,
        })
    }

    /// The guard's checks on a parsed message (all or nothing, like
    /// syntax): every event time within `max_future_skew`, and no
    /// non-finite reading unless the policy makes it NULL.
    fn review(&self, partition: i32, values: &[(usize, Value<'_>)]) -> Result<(), Refusal> {
        let ts = self.schema.event_time_index();
        let now = self.guard.now_ms();
        for (col, v) in values {
            if *col == ts {
                if let Some(t) = v.as_i64() {
                    self.guard.check_time(partition, t, now)?;
                }
            } else if let Some(Column::F64(_)) = self.columns.get(*col)
                && self.guard.limits().non_finite == NonFinite::DeadLetter
                && v.as_f64().is_some_and(|x| !x.is_finite())
            {
                return Err(Refusal::NonFiniteValue {
                    value: v.to_string(),
                    column: self.schema.columns()[*col].name.clone(),
                });
            }
        }
        Ok(())
    }

    fn to_millis(&self, t: i64) -> i64 {
        if self.ts_divisor < 0 {
            t.saturating_mul(-self.ts_divisor)
        } else {
            t.div_euclid(self.ts_divisor)
        }
    }

    /// Parses one line into `out`: its (column, value) pairs, each checked
    /// against its column, fields before tags (so a field keeps a column a
    /// tag of the same name would fill).
    fn parse_line<'a>(
        &self,
        line: &'a str,
        out: &mut Vec<(usize, Value<'a>)>,
    ) -> Result<(), Refusal> {
        let malformed = |why: String| Refusal::Malformed(why);
        let (series, rest) = split_unescaped(line, b' ', false);
        let rest = rest
            .ok_or_else(|| malformed("expected `measurement[,tags] fields [timestamp]`".into()))?;
        let (fields, ts) = split_unescaped(rest, b' ', true);
        let mut series_parts = SplitUnescaped::new(series, b',', false);
        let measurement = series_parts.next().unwrap_or("");
        if measurement.is_empty() {
            return Err(malformed("the measurement name is empty".into()));
        }
        if let Some(col) = self.measurement {
            out.push((col, Value::Str(unescape(measurement, MEASUREMENT_ESCAPES))));
        }
        let mut tags: Vec<(usize, Value<'a>, &'a str, &'a str)> = Vec::new();
        for tag in series_parts {
            let (k, v) = split_unescaped(tag, b'=', false);
            let v = v.ok_or_else(|| malformed(format!("tag `{tag}` has no `=`")))?;
            let key = unescape(k, KEY_ESCAPES);
            let col = if self.tag_prefix.is_empty() {
                self.by_name.get(key.as_ref())
            } else {
                self.by_name.get(&format!("{}{key}", self.tag_prefix))
            };
            if let Some(&col) = col {
                tags.push((col, Value::Str(unescape(v, KEY_ESCAPES)), k, v));
            }
        }
        let mut n_fields = 0;
        for field in SplitUnescaped::new(fields, b',', true) {
            let (k, v) = split_unescaped(field, b'=', false);
            let v = v.ok_or_else(|| malformed(format!("field `{field}` has no `=`")))?;
            let val = parse_field_value(v)
                .ok_or_else(|| malformed(format!("field `{k}` has an invalid value `{v}`")))?;
            n_fields += 1;
            if let Some(&col) = self.by_name.get(unescape(k, KEY_ESCAPES).as_ref()) {
                self.fits(col, &val, "field", k, v)?;
                out.push((col, val));
            }
        }
        if n_fields == 0 {
            return Err(malformed("a point needs at least one field".into()));
        }
        for (col, val, k, v) in tags {
            if out.iter().any(|(c, _)| *c == col) {
                continue;
            }
            self.fits(col, &val, "tag", k, v)?;
            out.push((col, val));
        }
        match ts.map(str::trim).filter(|t| !t.is_empty()) {
            Some(t) => {
                let t: i64 = t
                    .parse()
                    .map_err(|_| Refusal::EventTime(format!("invalid timestamp `{t}`")))?;
                out.push((
                    self.schema.event_time_index(),
                    Value::Int(self.to_millis(t)),
                ));
            }
            None => {
                return Err(Refusal::EventTime(format!(
                    "missing event time: the line has no timestamp for `{}`",
                    self.schema.event_time_name()
                )));
            }
        }
        Ok(())
    }

    /// Whether `val` (written `v` under key `k`) fits column `col`.
    fn fits(
        &self,
        col: usize,
        val: &Value<'_>,
        what: &str,
        k: &str,
        v: &str,
    ) -> Result<(), Refusal> {
        if self.columns[col].check(val) {
            return Ok(());
        }
        let ty = self.schema.columns()[col].ty;
        if let Value::UInt(u) = val {
            return Err(Refusal::WrongType(format!(
                "{what} `{k}` = {u}u is above the largest bigint ({}): declare the column \
                 `{}` as double (or string) to take such values",
                i64::MAX,
                self.schema.columns()[col].name
            )));
        }
        Err(Refusal::WrongType(format!(
            "{what} `{k}` = `{v}` does not fit column type {ty:?}"
        )))
    }

    /// Appends one parsed line as a row.
    fn append_line(&mut self, values: &[(usize, Value<'_>)], partition: i32, offset: i64) {
        let mut set = vec![false; self.columns.len()];
        for (col, v) in values {
            if *col == self.schema.event_time_index()
                && let Some(t) = v.as_i64()
            {
                self.guard.advance(partition, t);
            }
            // A repeated tag or field keeps its first value.
            if !set[*col] {
                self.columns[*col].append(v);
                set[*col] = true;
            }
        }
        for (i, s) in set.iter().enumerate() {
            if !*s {
                self.columns[i].append_null();
            }
        }
        self.partitions.push(partition);
        self.offsets.push(offset);
    }
}

impl Decoder for InfluxDecoder {
    fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        self.pushed += 1;
        let whole = self
            .guard
            .screen(payload, Syntax::LineProtocol)
            .and_then(|()| {
                std::str::from_utf8(payload)
                    .map_err(|e| Refusal::Malformed(format!("line protocol: not UTF-8: {e}")))
            });
        let text = match whole {
            Ok(text) => text,
            Err(reason) => {
                self.dead.push(DeadLetter {
                    payload: payload.to_vec(),
                    reason,
                    partition,
                    offset,
                });
                return;
            }
        };
        let mut points = 0usize;
        let mut values: Vec<(usize, Value<'_>)> = Vec::new();
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            points += 1;
            values.clear();
            let parsed = self
                .parse_line(line, &mut values)
                .and_then(|()| self.review(partition, &values));
            match parsed {
                Ok(()) => self.append_line(&values, partition, offset),
                Err(e) => self.dead.push(DeadLetter {
                    payload: line.as_bytes().to_vec(),
                    reason: Refusal::Line {
                        line: lineno + 1,
                        why: Box::new(e),
                    },
                    partition,
                    offset,
                }),
            }
        }
        if points == 0 {
            self.dead.push(DeadLetter {
                payload: payload.to_vec(),
                reason: Refusal::Malformed("line protocol: the message holds no point".into()),
                partition,
                offset,
            });
        }
    }

    fn buffered(&self) -> usize {
        self.pushed
    }

    fn flush(&mut self) -> Decoded {
        self.pushed = 0;
        let mut dead = std::mem::take(&mut self.dead);
        if self.columns.first().map(Column::len).unwrap_or(0) == 0 {
            self.partitions.clear();
            self.offsets.clear();
            return Decoded {
                batch: None,
                dead,
                ..Default::default()
            };
        }
        let columns: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let parts = std::mem::take(&mut self.partitions);
        let offs = std::mem::take(&mut self.offsets);
        // Lines are validated before they are appended, so every row has an
        // event time and `payload_of` is never called.
        let batch = finish_batch(
            &self.schema,
            &mut self.guard,
            columns,
            parts,
            offs,
            |_| Vec::new(),
            Vec::new(),
            &mut dead,
        );
        Decoded {
            batch,
            dead,
            ..Default::default()
        }
    }
}

/// Splits at the first unescaped `sep` (outside double quotes when
/// `quotes`), returning the part before and the rest after it.
fn split_unescaped(s: &str, sep: u8, quotes: bool) -> (&str, Option<&str>) {
    let mut it = SplitUnescaped::new(s, sep, quotes);
    let first = it.next().unwrap_or("");
    let rest_start = first.len() + 1;
    if rest_start > s.len() {
        (first, None)
    } else {
        (first, Some(&s[rest_start..]))
    }
}

/// Iterator over the pieces of `s` between unescaped separators.
struct SplitUnescaped<'a> {
    s: &'a str,
    pos: usize,
    sep: u8,
    quotes: bool,
    done: bool,
}

impl<'a> SplitUnescaped<'a> {
    fn new(s: &'a str, sep: u8, quotes: bool) -> Self {
        SplitUnescaped {
            s,
            pos: 0,
            sep,
            quotes,
            done: false,
        }
    }
}

impl<'a> Iterator for SplitUnescaped<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let bytes = self.s.as_bytes();
        let start = self.pos;
        let mut i = start;
        let mut in_quotes = false;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'\\' {
                i += 2;
                continue;
            }
            if self.quotes && b == b'"' {
                in_quotes = !in_quotes;
            } else if b == self.sep && !in_quotes {
                self.pos = i + 1;
                return Some(&self.s[start..i]);
            }
            i += 1;
        }
        self.done = true;
        Some(&self.s[start.min(self.s.len())..])
    }
}

/// What a backslash escapes in a measurement name.
const MEASUREMENT_ESCAPES: &[char] = &[',', ' '];
/// What a backslash escapes in tag keys, tag values and field keys.
const KEY_ESCAPES: &[char] = &[',', '=', ' '];
/// What a backslash escapes in a string field value.
const STRING_ESCAPES: &[char] = &['"', '\\'];

/// Removes the backslash before each of `escapable`; a backslash before
/// anything else is kept. Borrows when there is no backslash.
fn unescape<'a>(s: &'a str, escapable: &[char]) -> Cow<'a, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&n) = chars.peek()
            && escapable.contains(&n)
        {
            out.push(n);
            chars.next();
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn parse_field_value(v: &str) -> Option<Value<'_>> {
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner.strip_suffix('"')?;
        return Some(Value::Str(unescape(inner, STRING_ESCAPES)));
    }
    if let Some(i) = v.strip_suffix('i') {
        return i.parse().ok().map(Value::Int);
    }
    if let Some(u) = v.strip_suffix('u') {
        return u.parse::<u64>().ok().map(Value::UInt);
    }
    if let Some(b) = parse_bool(v) {
        return Some(Value::Bool(b));
    }
    // NaN and ±inf parse here; the source's non_finite policy decides
    // what becomes of them (see `InfluxDecoder::review`).
    v.parse::<f64>().ok().map(Value::Float)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};

    use super::*;
    use crate::decode::test_support::{guard, telemetry_schema};

    fn decoder(measurement: bool) -> InfluxDecoder {
        let mut cols: Vec<_> = telemetry_schema().columns().to_vec();
        cols.push("name string".parse().unwrap());
        let schema = SourceSchema::new(cols, "ts").unwrap();
        let opts = InfluxOptions {
            measurement_column: measurement.then(|| "name".to_string()),
            precision: "ns".into(),
            ..Default::default()
        };
        InfluxDecoder::new(schema, &opts, guard()).unwrap()
    }

    #[test]
    fn decodes_telegraf_lines() {
        let mut d = decoder(true);
        d.push(
            b"cpu,host=web\\ 1,dc=fra cpu=12.5,n=3i,up=t,note=\"a b, c\" 1764201600000000000\n\
              cpu,host=web2 cpu=7 1764201601000000000",
            2,
            9,
        );
        let out = d.flush();
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(
            b.column(0)
                .as_primitive::<TimestampMillisecondType>()
                .value(1),
            1_764_201_601_000
        );
        assert_eq!(b.column(1).as_string::<i32>().value(0), "web 1");
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(1), 7.0);
        assert_eq!(b.column(3).as_primitive::<Int64Type>().value(0), 3);
        assert!(b.column(3).is_null(1));
        assert!(b.column(4).as_boolean().value(0));
        assert_eq!(b.column(5).as_string::<i32>().value(0), "cpu");
    }

    #[test]
    fn a_bad_line_is_a_dead_letter_alone_and_the_other_lines_are_kept() {
        let mut d = decoder(false);
        d.push(b"cpu,host=a cpu=1 1000000000", 0, 1);
        d.push(
            b"cpu,host=b cpu=1 2000000000\ncpu,host=c cpu=oops 3000000000",
            0,
            2,
        );
        d.push(b"cpu,host=d cpu=1", 0, 3);
        d.push(b"cpu,host=e n=1.5 4000000000", 0, 4);
        d.push(b"", 0, 5);
        let out = d.flush();
        // host=a, and host=b from the message whose line 2 is bad.
        assert_eq!(out.batch.unwrap().num_rows(), 2);
        let reasons: Vec<_> = out
            .dead
            .iter()
            .map(|d| (d.offset, d.reason.to_string()))
            .collect();
        assert_eq!(reasons[0].0, 2);
        assert!(reasons[0].1.contains("line 2"), "{}", reasons[0].1);
        // Only the bad line is in the dead letter: replaying it doubles
        // nothing.
        assert_eq!(out.dead[0].payload, b"cpu,host=c cpu=oops 3000000000");
        assert!(reasons[1].1.contains("missing event time"));
        assert!(reasons[2].1.contains("does not fit"));
        assert!(reasons[3].1.contains("no point"));
    }

    #[test]
    fn non_finite_readings_and_future_times_refuse_their_line() {
        let mut d = decoder(false);
        // The guard's clock is 2026-11-27T00:00:00Z.
        d.push(b"cpu,host=a cpu=NaN 1795737600000000000", 0, 1);
        d.push(b"cpu,host=b cpu=inf 1795737600000000000", 0, 2);
        d.push(
            b"cpu,host=c cpu=1 1795737600000000000\ncpu,host=c cpu=2 4102444800000000000",
            0,
            3,
        );
        d.push(b"cpu,host=d cpu=3 1795737600000000000", 0, 4);
        let out = d.flush();
        let reasons: Vec<_> = out
            .dead
            .iter()
            .map(|d| (d.offset, d.reason.to_string()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons[0]
                .1
                .contains("non-finite value NaN in column `cpu`"),
            "{reasons:?}"
        );
        assert!(reasons[1].1.contains("non-finite"), "{reasons:?}");
        assert!(
            reasons[2].1.contains("2100-01-01T00:00:00.000Z"),
            "{reasons:?}"
        );
        assert_eq!(out.dead[2].payload, b"cpu,host=c cpu=2 4102444800000000000");
        assert_eq!(out.batch.unwrap().num_rows(), 2);
    }

    #[test]
    fn the_null_policy_keeps_the_record_without_the_value() {
        let mut cols: Vec<_> = telemetry_schema().columns().to_vec();
        cols.push("name string".parse().unwrap());
        let schema = SourceSchema::new(cols, "ts").unwrap();
        let mut limits = guard().limits().clone();
        limits.non_finite = NonFinite::Null;
        let mut d =
            InfluxDecoder::new(schema, &InfluxOptions::default(), Guard::new(limits)).unwrap();
        d.push(b"cpu,host=a cpu=-Infinity,n=1i 1795737600000000000", 0, 1);
        let out = d.flush();
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        assert!(b.column(2).is_null(0));
        assert_eq!(b.column(3).as_primitive::<Int64Type>().value(0), 1);
    }

    fn options(tag_prefix: &str) -> InfluxOptions {
        InfluxOptions {
            measurement_column: Some("name".into()),
            precision: "ns".into(),
            tag_prefix: tag_prefix.into(),
        }
    }

    fn decoder_of(columns: &[&str], opts: &InfluxOptions) -> InfluxDecoder {
        let schema =
            SourceSchema::new(columns.iter().map(|c| c.parse().unwrap()).collect(), "ts").unwrap();
        InfluxDecoder::new(schema, opts, guard()).unwrap()
    }

    #[test]
    fn a_tag_and_a_field_of_one_name_do_not_collide() {
        // Telegraf's cpu plugin: tag cpu=cpu0; here a field `cpu` too.
        let line: &[u8] = b"cpu,cpu=cpu0,host=a cpu=12.5,usage_user=3 1795737600000000000";
        let mut d = decoder_of(
            &["ts timestamp", "host string", "cpu double", "name string"],
            &options(""),
        );
        d.push(line, 0, 1);
        let out = d.flush();
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 12.5);
        // With a prefix, both are kept.
        let mut d = decoder_of(
            &[
                "ts timestamp",
                "tag_host string",
                "tag_cpu string",
                "cpu double",
                "name string",
            ],
            &options("tag_"),
        );
        d.push(line, 0, 1);
        let out = d.flush();
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        assert_eq!(b.column(1).as_string::<i32>().value(0), "a");
        assert_eq!(b.column(2).as_string::<i32>().value(0), "cpu0");
        assert_eq!(b.column(3).as_primitive::<Float64Type>().value(0), 12.5);
        // A tag alone still fills the column of its name, and must fit it.
        let mut d = decoder_of(&["ts timestamp", "cpu double", "name string"], &options(""));
        d.push(
            b"m,cpu=7 x=1 1795737600000000000\nm,cpu=cpu0 x=1 1795737600000000000",
            0,
            1,
        );
        let out = d.flush();
        assert_eq!(out.batch.unwrap().num_rows(), 1);
        assert!(
            out.dead[0]
                .reason
                .to_string()
                .contains("tag `cpu` = `cpu0` does not fit"),
            "{:?}",
            out.dead
        );
    }

    #[test]
    fn escapes_follow_the_line_protocol_exactly() {
        let mut d = decoder_of(
            &[
                "ts timestamp",
                "host string",
                "path string",
                "note string",
                "name string",
                "k=1 string",
            ],
            &options(""),
        );
        d.push(
            br#"dis\ k\,io\=x,host=a\,b\ c\=d,path=C:\temp\tx note="say \"hi\" \\ \t \n end",k\=1="v" 1795737600000000000"#,
            0,
            1,
        );
        let out = d.flush();
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        let s = |c: usize| b.column(c).as_string::<i32>().value(0).to_string();
        assert_eq!(
            s(4),
            r"dis k,io\=x",
            "measurement: only `,` and space escape"
        );
        assert_eq!(s(1), "a,b c=d");
        assert_eq!(s(2), r"C:\temp\tx", "`\\t` stays a backslash and a t");
        assert_eq!(s(3), r#"say "hi" \ \t \n end"#);
        assert_eq!(s(5), "v", "an escaped `=` in a field key");
    }

    #[test]
    fn unsigned_values_up_to_u64_max() {
        let mut d = decoder_of(
            &[
                "ts timestamp",
                "n bigint",
                "big double",
                "text string",
                "name string",
            ],
            &options(""),
        );
        d.push(
            b"m n=9223372036854775807u,big=18446744073709551615u,text=18446744073709551615u 1795737600000000000\n\
              m n=18446744073709551615u 1795737600000000000\n\
              m n=5u 1795737600000000000",
            0,
            1,
        );
        let out = d.flush();
        let b = out.batch.unwrap();
        assert_eq!(b.num_rows(), 2, "{:?}", out.dead);
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), i64::MAX);
        assert_eq!(
            b.column(2).as_primitive::<Float64Type>().value(0),
            18_446_744_073_709_551_615u64 as f64
        );
        assert_eq!(
            b.column(3).as_string::<i32>().value(0),
            "18446744073709551615"
        );
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(1), 5);
        assert_eq!(out.dead.len(), 1);
        let why = out.dead[0].reason.to_string();
        assert!(
            why.starts_with("line protocol, line 2: field `n` = 18446744073709551615u is above the largest bigint"),
            "{why}"
        );
        assert!(why.contains("declare the column `n` as double"), "{why}");
        assert_eq!(
            out.dead[0].payload,
            b"m n=18446744073709551615u 1795737600000000000"
        );
    }
}
