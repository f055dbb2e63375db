//! JSON → Arrow, through arrow-json's tape decoder.
//!
//! Three shapes of message, decided per flush:
//!
//! - One object per message, every column read from the field of its
//!   name: the payloads go straight to the flat scanner (`flat.rs`), or to
//!   arrow-json where it gives up on one (the fast path).
//! - Columns read from paths (`[sources.paths] host = "meta.host"`), a
//!   message that is an array of objects, or `format = "collectd"`: each
//!   message is parsed once into a tree, and each record of it (each array
//!   element; for collectd each (dsname, value) pair of each element) is
//!   written as one flat object holding just the declared columns, which
//!   arrow-json then decodes as above — so every column type converts the
//!   same way whatever the shape. A message may give at most
//!   `max_records` records (the engine's `max_batch_records`); a larger
//!   one is one dead letter. A bad element is a dead letter on its own
//!   (its JSON as the payload, the message's partition and offset), and
//!   the other elements of its message are kept.
//!
//! The event time is decoded in the source's [`TimestampUnit`] and checked
//! against the unit its magnitude suggests (see
//! [`TimestampUnit::looks_like`]): a mismatch is a dead letter naming the
//! unit it looks like and the `timestamp_unit` key to set.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimestampMillisecondType};
use arrow::json::reader::{Decoder as ArrowJsonDecoder, ReaderBuilder};
use serde_json::{Map, Value};

use super::flat::FlatScanner;
use super::limits::{Guard, Syntax};
use super::{DeadLetter, Decoded, Decoder, RecordChunk, finish_batch};
use crate::error::{Refusal, SchemaError};
use crate::schema::{Magnitude, SourceSchema, TimestampUnit};

/// Decodes JSON messages straight into Arrow arrays. See the module docs.
///
/// Payloads are copied into one arena on `push` (a memcpy, far cheaper than
/// parsing) so that a flush that meets a bad record can fall back to
/// decoding records one by one and name the culprit. The fast path hands
/// every payload to a single arrow-json decoder and never builds a per-row
/// value.
pub struct JsonDecoder {
    schema: SourceSchema,
    /// The declared columns as arrow-json parses them: the event time as
    /// the raw type its unit is written in.
    raw: SchemaRef,
    /// `format = "collectd"`: records are (dsname, value) pairs.
    collectd: bool,
    max_records: usize,
    decoder: ArrowJsonDecoder,
    /// The scanner for flat objects, tried first (`None`: a column type
    /// it does not decode).
    flat: Option<FlatScanner>,
    arena: Vec<u8>,
    spans: Vec<(usize, usize)>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    guard: Guard,
    /// Records the guard refused before parsing, since the last flush.
    screened: Vec<DeadLetter>,
    /// Records pushed since the last flush, screened out ones included.
    pushed: usize,
    /// A message buffered since the last flush is a JSON array.
    arrays: bool,
}

/// The records a flush expanded its messages into (tree path): for each,
/// the bytes a dead letter of it carries.
struct Origins {
    arena: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl JsonDecoder {
    pub fn new(
        schema: SourceSchema,
        max_records: usize,
        guard: Guard,
    ) -> Result<Self, SchemaError> {
        Self::build_with(schema, max_records, guard, false)
    }

    /// A decoder of collectd's `write_kafka` JSON (see [`super::Format`]).
    pub fn collectd(
        schema: SourceSchema,
        max_records: usize,
        guard: Guard,
    ) -> Result<Self, SchemaError> {
        Self::build_with(schema, max_records, guard, true)
    }

    fn build_with(
        schema: SourceSchema,
        max_records: usize,
        guard: Guard,
        collectd: bool,
    ) -> Result<Self, SchemaError> {
        let raw = raw_schema(&schema);
        let decoder = build(&raw, max_records)?;
        let flat = FlatScanner::new(&raw);
        Ok(JsonDecoder {
            schema,
            raw,
            collectd,
            max_records,
            decoder,
            flat,
            arena: Vec::new(),
            spans: Vec::new(),
            partitions: Vec::new(),
            offsets: Vec::new(),
            guard,
            screened: Vec::new(),
            pushed: 0,
            arrays: false,
        })
    }

    /// The guard's verdict on one payload; a refused one becomes a dead
    /// letter at once (the dead-letter sink cuts oversized payloads).
    fn admit(&mut self, payload: &[u8], partition: i32, offset: i64) -> bool {
        self.pushed += 1;
        match self.guard.screen(payload, Syntax::Json) {
            Ok(()) => {
                if payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
                    self.arrays = true;
                }
                true
            }
            Err(reason) => {
                self.screened.push(DeadLetter {
                    payload: payload.to_vec(),
                    reason,
                    partition,
                    offset,
                });
                false
            }
        }
    }

    fn payload(&self, i: usize) -> &[u8] {
        let (s, e) = self.spans[i];
        &self.arena[s..e]
    }

    /// Every buffered payload decoded at once: by the flat scanner where it
    /// takes them all (`flat.rs`), else by arrow-json; `None` if any payload
    /// was not exactly one complete JSON value or the columns did not
    /// convert.
    fn fast_path(&mut self) -> Option<Vec<ArrayRef>> {
        if let Some(flat) = &mut self.flat {
            let (arena, spans) = (&self.arena, &self.spans);
            if let Some(columns) = flat.scan(spans.iter().map(|&(s, e)| &arena[s..e])) {
                return Some(columns);
            }
        }
        let (arena, spans) = (&self.arena, &self.spans);
        arrow_json_columns(&mut self.decoder, spans.iter().map(|&(s, e)| &arena[s..e]))
    }

    /// Decodes payloads one at a time, so each failure is attributed to its
    /// record. Only used for flushes that contain a bad record.
    fn slow_path(
        &mut self,
        origins: Option<&Origins>,
        dead: &mut Vec<DeadLetter>,
    ) -> Option<Salvaged> {
        let mut batches: Vec<RecordBatch> = Vec::new();
        let (mut parts, mut offs, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.spans.len() {
            match decode_one(&self.raw, &self.schema, self.payload(i)) {
                Ok(b) => {
                    batches.push(b);
                    parts.push(self.partitions[i]);
                    offs.push(self.offsets[i]);
                    kept.push(i);
                }
                Err(reason) => dead.push(DeadLetter {
                    payload: origin_of(&self.arena, &self.spans, origins, i),
                    reason,
                    partition: self.partitions[i],
                    offset: self.offsets[i],
                }),
            }
        }
        if batches.is_empty() {
            return None;
        }
        match concat_batches(&self.raw, &batches) {
            Ok(merged) => Some(Salvaged {
                columns: merged.columns().to_vec(),
                partitions: parts,
                offsets: offs,
                kept,
            }),
            Err(e) => {
                // Cannot happen for batches of one schema; never lose rows.
                for i in kept {
                    dead.push(DeadLetter {
                        payload: origin_of(&self.arena, &self.spans, origins, i),
                        reason: Refusal::Internal(e.to_string()),
                        partition: self.partitions[i],
                        offset: self.offsets[i],
                    });
                }
                None
            }
        }
    }

    /// The tree path: replaces the buffered messages by one flat object per
    /// record (see the module docs), sending what cannot be a record to
    /// `dead`. Returns what each record's dead letter would carry.
    fn expand(&mut self, dead: &mut Vec<DeadLetter>) -> Origins {
        let mut rows = Vec::with_capacity(self.arena.len());
        let mut spans = Vec::with_capacity(self.spans.len());
        let (mut parts, mut offs) = (Vec::new(), Vec::new());
        let mut origins = Origins {
            arena: Vec::new(),
            spans: Vec::new(),
        };
        for i in 0..self.spans.len() {
            let (partition, offset) = (self.partitions[i], self.offsets[i]);
            let payload = self.payload(i);
            let mut bury = |payload: Vec<u8>, reason: Refusal| {
                dead.push(DeadLetter {
                    payload,
                    reason,
                    partition,
                    offset,
                })
            };
            let tree: Value = match serde_json::from_slice(payload) {
                Ok(v) => v,
                Err(e) => {
                    bury(
                        payload.to_vec(),
                        Refusal::Malformed(format!("invalid JSON: {e}")),
                    );
                    continue;
                }
            };
            let (elements, whole) = match &tree {
                Value::Array(a) if a.is_empty() => {
                    bury(
                        payload.to_vec(),
                        Refusal::Malformed("the message is an empty array: no record".into()),
                    );
                    continue;
                }
                Value::Array(a) => (a.as_slice(), false),
                Value::Object(_) => (std::slice::from_ref(&tree), true),
                _ => {
                    bury(
                        payload.to_vec(),
                        Refusal::Malformed(
                            "invalid JSON: expected an object or an array of objects".into(),
                        ),
                    );
                    continue;
                }
            };
            let mut records: Vec<(Map<String, Value>, usize)> = Vec::new();
            let mut failed: Vec<(usize, Refusal)> = Vec::new();
            for (e, element) in elements.iter().enumerate() {
                let Some(object) = element.as_object() else {
                    failed.push((e, Refusal::Malformed("is not an object".into())));
                    continue;
                };
                if self.collectd {
                    match collectd_records(object) {
                        Ok(recs) => records.extend(
                            recs.iter()
                                .map(|r| (flatten(&self.schema, element, Some(r)), e)),
                        ),
                        Err(why) => failed.push((e, why)),
                    }
                } else {
                    records.push((flatten(&self.schema, element, None), e));
                }
            }
            if records.len() > self.max_records {
                bury(
                    payload.to_vec(),
                    Refusal::TooManyRecords {
                        records: records.len(),
                        limit: self.max_records,
                    },
                );
                continue;
            }
            let n = elements.len();
            for (e, why) in failed {
                let bytes = if whole {
                    payload.to_vec()
                } else {
                    serde_json::to_vec(&elements[e]).unwrap_or_default()
                };
                let part = if whole {
                    "the message".to_string()
                } else {
                    format!("element {} of {n} in the message's array", e + 1)
                };
                let reason = Refusal::Part {
                    part,
                    why: Box::new(why),
                };
                bury(bytes, reason);
            }
            let mut last_origin: Option<(usize, (usize, usize))> = None;
            for (record, e) in records {
                let start = rows.len();
                if serde_json::to_writer(&mut rows, &Value::Object(record)).is_err() {
                    rows.truncate(start);
                    continue;
                }
                spans.push((start, rows.len()));
                parts.push(partition);
                offs.push(offset);
                // collectd gives several records per element: one copy of
                // the element serves them all.
                let origin = match last_origin {
                    Some((le, span)) if le == e => span,
                    _ => {
                        let s = origins.arena.len();
                        if whole {
                            origins.arena.extend_from_slice(payload);
                        } else if serde_json::to_writer(&mut origins.arena, &elements[e]).is_err() {
                            origins.arena.truncate(s);
                        }
                        (s, origins.arena.len())
                    }
                };
                last_origin = Some((e, origin));
                origins.spans.push(origin);
            }
        }
        self.arena = rows;
        self.spans = spans;
        self.partitions = parts;
        self.offsets = offs;
        origins
    }

    /// Turns the raw event-time column into milliseconds, refusing (per
    /// row, in the returned list) times in another unit than the declared
    /// one.
    fn event_times(&self, columns: &mut [ArrayRef]) -> Vec<Option<Refusal>> {
        let at = self.schema.event_time_index();
        let unit = self.schema.time_unit();
        let (times, refused) = convert_event_time(&columns[at], unit);
        columns[at] = times;
        refused
    }
}

/// The bytes a dead letter of buffered record `i` carries: its origin on
/// the tree path, else the payload itself.
fn origin_of(
    arena: &[u8],
    spans: &[(usize, usize)],
    origins: Option<&Origins>,
    i: usize,
) -> Vec<u8> {
    let (s, e) = match origins {
        Some(o) => {
            return o
                .spans
                .get(i)
                .map_or_else(Vec::new, |&(s, e)| o.arena[s..e].to_vec());
        }
        None => spans[i],
    };
    arena[s..e].to_vec()
}

/// The well-formed records of a flush that had bad ones: their columns, and
/// for each row its partition, offset and index among the pushed records.
struct Salvaged {
    columns: Vec<ArrayRef>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    kept: Vec<usize>,
}

/// What the flat scanner and arrow-json each make of `payloads` (one
/// message each) under `schema`: `None` where one does not take them all.
/// For differential tests and the fuzz targets: where the scanner takes a
/// flush, arrow-json must give the same columns.
#[doc(hidden)]
pub fn scanner_and_arrow_json(
    schema: &SourceSchema,
    payloads: &[&[u8]],
) -> (Option<Vec<ArrayRef>>, Option<Vec<ArrayRef>>) {
    let raw = raw_schema(schema);
    let flat = FlatScanner::new(&raw).and_then(|mut f| f.scan(payloads.iter().copied()));
    (flat, arrow_json_of(&raw, payloads))
}

/// `payloads` through a fresh arrow-json decoder for `raw` (see
/// [`arrow_json_columns`]).
pub(super) fn arrow_json_of(raw: &SchemaRef, payloads: &[&[u8]]) -> Option<Vec<ArrayRef>> {
    let mut d = build(raw, payloads.len()).ok()?;
    arrow_json_columns(&mut d, payloads.iter().copied())
}

/// Feeds every payload to `decoder` and flushes it: the columns, one row
/// per payload; `None` if any payload was not exactly one complete JSON
/// value or the columns did not convert (the decoder may then hold half a
/// record: build it afresh).
fn arrow_json_columns<'a>(
    decoder: &mut ArrowJsonDecoder,
    payloads: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Option<Vec<ArrayRef>> {
    let rows = payloads.len();
    for p in payloads {
        let before = decoder.len();
        match decoder.decode(p) {
            Ok(n)
                if n == p.len() && !decoder.has_partial_record() && decoder.len() == before + 1 => {
            }
            _ => return None,
        }
    }
    match decoder.flush() {
        Ok(Some(batch)) if batch.num_rows() == rows => Some(batch.columns().to_vec()),
        _ => None,
    }
}

/// The declared columns as arrow-json parses them: the event time as a
/// `Timestamp(ms)` (unit "ms": numbers or RFC 3339 strings), a `Float64`
/// (s, us, ns: fractions allowed) or a string (rfc3339).
fn raw_schema(schema: &SourceSchema) -> SchemaRef {
    let at = schema.event_time_index();
    let fields: Vec<Field> = schema
        .decoded_schema()
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i != at {
                return f.as_ref().clone();
            }
            let ty = match schema.time_unit() {
                TimestampUnit::Ms => f.data_type().clone(),
                TimestampUnit::S | TimestampUnit::Us | TimestampUnit::Ns => DataType::Float64,
                TimestampUnit::Rfc3339 => DataType::Utf8,
            };
            Field::new(f.name(), ty, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

fn build(raw: &SchemaRef, max_records: usize) -> Result<ArrowJsonDecoder, SchemaError> {
    ReaderBuilder::new(raw.clone())
        .with_batch_size(max_records.max(1) + 1)
        .build_decoder()
        .map_err(|e| SchemaError::Decoder(e.to_string()))
}

/// Decodes a single payload that must hold exactly one JSON object.
fn decode_one(
    raw: &SchemaRef,
    schema: &SourceSchema,
    payload: &[u8],
) -> Result<RecordBatch, Refusal> {
    let invalid = |why: String| Refusal::Malformed(format!("invalid JSON: {why}"));
    let mut d = build(raw, 1).map_err(|e| Refusal::Internal(e.to_string()))?;
    let n = d.decode(payload).map_err(|e| invalid(e.to_string()))?;
    if n != payload.len() || d.len() > 1 {
        return Err(invalid("expected exactly one object per message".into()));
    }
    if d.has_partial_record() {
        return Err(invalid("the object is incomplete".into()));
    }
    match d.flush() {
        Ok(Some(b)) if b.num_rows() == 1 => Ok(b),
        Ok(_) => Err(invalid("the message holds no object".into())),
        Err(e) => {
            let ts = schema.event_time_name();
            let hint = if e.to_string().contains(&format!("'{ts}'")) {
                match schema.time_unit() {
                    TimestampUnit::Rfc3339 => " (the source's timestamp_unit = \"rfc3339\" \
                        takes strings only: for epoch numbers set timestamp_unit to \"s\", \
                        \"ms\", \"us\" or \"ns\")"
                        .to_string(),
                    TimestampUnit::Ms => String::new(),
                    u => format!(
                        " (the source's timestamp_unit = \"{}\" takes epoch numbers: \
                         for RFC 3339 strings set timestamp_unit = \"rfc3339\" or \"ms\")",
                        u.name()
                    ),
                }
            } else {
                String::new()
            };
            Err(Refusal::WrongType(format!("wrong type: {e}{hint}")))
        }
    }
}

/// The flat object of one record: each declared column from its path, or
/// from `extra` (collectd's per-pair fields), or from the element's field
/// of its name; absent and null values are left out.
fn flatten(
    schema: &SourceSchema,
    element: &Value,
    extra: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (i, c) in schema.columns().iter().enumerate() {
        let v = match schema.path(i) {
            Some(p) => p.lookup(element),
            None => extra
                .and_then(|x| x.get(&c.name))
                .or_else(|| element.get(&c.name)),
        };
        if let Some(v) = v.filter(|v| !v.is_null()) {
            out.insert(c.name.clone(), v.clone());
        }
    }
    out
}

/// collectd's identity fields, copied into each of a value list's records.
const COLLECTD_FIELDS: [&str; 7] = [
    "host",
    "plugin",
    "plugin_instance",
    "type",
    "type_instance",
    "time",
    "interval",
];

/// One collectd value list → one record per (dsname, value) pair.
fn collectd_records(list: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, Refusal> {
    let array = |key: &str| {
        list.get(key).and_then(Value::as_array).ok_or_else(|| {
            Refusal::Malformed(format!(
                "is not a collectd value list: `{key}` is missing or not an array"
            ))
        })
    };
    let (values, dsnames, dstypes) = (array("values")?, array("dsnames")?, array("dstypes")?);
    if values.len() != dsnames.len() || values.len() != dstypes.len() {
        return Err(Refusal::Malformed(format!(
            "is not a collectd value list: {} values, {} dsnames, {} dstypes",
            values.len(),
            dsnames.len(),
            dstypes.len()
        )));
    }
    let mut base = Map::new();
    for key in COLLECTD_FIELDS {
        if let Some(v) = list.get(key) {
            base.insert(key.to_string(), v.clone());
        }
    }
    Ok(values
        .iter()
        .zip(dsnames)
        .zip(dstypes)
        .map(|((value, dsname), dstype)| {
            let mut r = base.clone();
            r.insert("dsname".into(), dsname.clone());
            r.insert("dstype".into(), dstype.clone());
            r.insert("value".into(), value.clone());
            r
        })
        .collect())
}

/// The event-time column in milliseconds from its raw column (see
/// [`raw_schema`]), and per row the reason it is refused, if it is: a
/// number in another unit than `unit` by its magnitude, not a number, or
/// not an RFC 3339 time.
fn convert_event_time(raw: &ArrayRef, unit: TimestampUnit) -> (ArrayRef, Vec<Option<Refusal>>) {
    let n = raw.len();
    let mut refused = vec![None; n];
    match unit {
        TimestampUnit::Ms => {
            if let Some(ms) = raw.as_primitive_opt::<TimestampMillisecondType>() {
                for (i, v) in ms.iter().enumerate() {
                    if let Some(v) = v {
                        refused[i] = check_unit(v as f64, unit).err();
                    }
                }
            }
            (raw.clone(), refused)
        }
        TimestampUnit::S | TimestampUnit::Us | TimestampUnit::Ns => {
            let factor = unit.ms_per_unit().unwrap_or(1.0);
            let Some(values) = raw.as_primitive_opt::<Float64Type>() else {
                return (raw.clone(), refused);
            };
            let ms: TimestampMillisecondArray = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let v = v?;
                    if let Err(why) = check_unit(v, unit) {
                        refused[i] = Some(why);
                        return None;
                    }
                    // Within the bands, |v * factor| < 1e20 ms fits an i64
                    // only up to 9.2e18: larger is refused by the guard's
                    // future skew, never wrapped.
                    let t = (v * factor).floor();
                    if t.abs() >= 9.0e18 {
                        refused[i] = Some(Refusal::EventTime(format!(
                            "event time {v} {} is out of range",
                            unit.name()
                        )));
                        return None;
                    }
                    Some(t as i64)
                })
                .collect();
            (Arc::new(ms), refused)
        }
        TimestampUnit::Rfc3339 => {
            let parsed = arrow::compute::cast(raw, &crate::schema::EVENT_TIME_TYPE);
            let Ok(parsed) = parsed else {
                // Whole-column failure cannot happen with the safe cast;
                // refuse each row rather than guess.
                for (i, r) in refused.iter_mut().enumerate() {
                    if !raw.is_null(i) {
                        *r = Some(Refusal::EventTime(
                            "event time is not an RFC 3339 time".into(),
                        ));
                    }
                }
                return (Arc::new(TimestampMillisecondArray::new_null(n)), refused);
            };
            if let Some(strings) = raw.as_string_opt::<i32>() {
                for (i, s) in strings.iter().enumerate() {
                    if let Some(s) = s
                        && parsed.is_null(i)
                    {
                        refused[i] = Some(Refusal::EventTime(format!(
                            "event time `{s}` is not an RFC 3339 time (the source's \
                             timestamp_unit is \"rfc3339\")"
                        )));
                    }
                }
            }
            (parsed, refused)
        }
    }
}

/// Whether numeric event time `v`, declared in `unit`, has the magnitude
/// of that unit; the reason to refuse it if not.
fn check_unit(v: f64, unit: TimestampUnit) -> Result<(), Refusal> {
    match TimestampUnit::looks_like(v) {
        Magnitude::Any => Ok(()),
        Magnitude::Unit(u) if u == unit => Ok(()),
        Magnitude::Unit(u) => Err(Refusal::EventTime(format!(
            "event time {v} looks like epoch {} but the source's timestamp_unit is \"{}\": \
             set timestamp_unit = \"{}\" on the source if its producers write {}",
            long_name(u),
            unit.name(),
            u.name(),
            long_name(u),
        ))),
        Magnitude::None => Err(Refusal::EventTime(format!(
            "event time {v} is no epoch time in any unit (at most 1e20, as nanoseconds; \
             the source's timestamp_unit is \"{}\")",
            unit.name()
        ))),
    }
}

fn long_name(u: TimestampUnit) -> &'static str {
    match u {
        TimestampUnit::S => "seconds",
        TimestampUnit::Ms => "milliseconds",
        TimestampUnit::Us => "microseconds",
        TimestampUnit::Ns => "nanoseconds",
        TimestampUnit::Rfc3339 => "RFC 3339",
    }
}

impl Decoder for JsonDecoder {
    fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        if !self.admit(payload, partition, offset) {
            return;
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(payload);
        self.spans.push((start, self.arena.len()));
        self.partitions.push(partition);
        self.offsets.push(offset);
    }

    fn buffered(&self) -> usize {
        self.pushed
    }

    fn decode_chunk(&mut self, chunk: RecordChunk) -> Decoded {
        if !self.spans.is_empty() {
            for i in 0..chunk.len() {
                self.push(chunk.payload(i), chunk.partitions[i], chunk.offsets[i]);
            }
            return self.flush();
        }
        // Nothing buffered: adopt the chunk's buffers instead of copying,
        // leaving out the records the guard refuses.
        let mut keep = Vec::with_capacity(chunk.len());
        for i in 0..chunk.len() {
            keep.push(self.admit(chunk.payload(i), chunk.partitions[i], chunk.offsets[i]));
        }
        self.arena = chunk.data;
        if keep.iter().all(|k| *k) {
            self.spans = chunk.spans;
            self.partitions = chunk.partitions;
            self.offsets = chunk.offsets;
        } else {
            for (i, k) in keep.into_iter().enumerate() {
                if k {
                    self.spans.push(chunk.spans[i]);
                    self.partitions.push(chunk.partitions[i]);
                    self.offsets.push(chunk.offsets[i]);
                }
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> Decoded {
        self.pushed = 0;
        let mut dead = std::mem::take(&mut self.screened);
        let tree = self.collectd || self.arrays || self.schema.has_paths();
        self.arrays = false;
        let origins = if tree && !self.spans.is_empty() {
            Some(self.expand(&mut dead))
        } else {
            None
        };
        if self.spans.is_empty() {
            self.arena.clear();
            self.partitions.clear();
            self.offsets.clear();
            return Decoded {
                batch: None,
                dead,
                ..Default::default()
            };
        }
        // Expanded messages may give more rows than the decoder's batch.
        let oversized = self.spans.len() > self.max_records;
        if oversized {
            match build(&self.raw, self.spans.len()) {
                Ok(d) => self.decoder = d,
                Err(e) => tracing::error!("{e}"),
            }
        }
        let batch = match self.fast_path() {
            Some(mut columns) => {
                let early = self.event_times(&mut columns);
                let parts = std::mem::take(&mut self.partitions);
                let offs = std::mem::take(&mut self.offsets);
                let (spans, arena, origins) = (&self.spans, &self.arena, origins.as_ref());
                finish_batch(
                    &self.schema,
                    &mut self.guard,
                    columns,
                    parts,
                    offs,
                    |i| origin_of(arena, spans, origins, i),
                    early,
                    &mut dead,
                )
            }
            None => {
                // The shared decoder may hold half a record now; start afresh.
                match build(&self.raw, self.max_records) {
                    Ok(d) => self.decoder = d,
                    Err(e) => tracing::error!("{e}"),
                }
                match self.slow_path(origins.as_ref(), &mut dead) {
                    Some(mut s) => {
                        let early = self.event_times(&mut s.columns);
                        let (spans, arena, origins) = (&self.spans, &self.arena, origins.as_ref());
                        finish_batch(
                            &self.schema,
                            &mut self.guard,
                            s.columns,
                            s.partitions,
                            s.offsets,
                            |i| origin_of(arena, spans, origins, s.kept[i]),
                            early,
                            &mut dead,
                        )
                    }
                    None => None,
                }
            }
        };
        if oversized {
            match build(&self.raw, self.max_records) {
                Ok(d) => self.decoder = d,
                Err(e) => tracing::error!("{e}"),
            }
        }
        self.arena.clear();
        self.spans.clear();
        self.partitions.clear();
        self.offsets.clear();
        Decoded {
            batch,
            dead,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMillisecondType};

    use super::*;
    use crate::decode::test_support::{guard, telemetry_schema};

    fn decode(records: &[&str]) -> Decoded {
        let mut d = JsonDecoder::new(telemetry_schema(), 64, guard()).unwrap();
        for (i, r) in records.iter().enumerate() {
            d.push(r.as_bytes(), 3, 100 + i as i64);
        }
        d.flush()
    }

    /// The host column of the decoded rows.
    fn hosts(out: &Decoded) -> Vec<String> {
        out.batch
            .as_ref()
            .map(|b| {
                b.column(1)
                    .as_string::<i32>()
                    .iter()
                    .map(|h| h.unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn decodes_objects_with_meta_columns() {
        let out = decode(&[
            r#"{"ts":"2026-11-27T00:00:01Z","host":"a","cpu":1.5,"extra":[1,2]}"#,
            r#"{"ts":1795737602000,"host":"b"}"#,
        ]);
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        assert_eq!(b.num_rows(), 2);
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.value(0), 1_795_737_601_000);
        assert_eq!(ts.value(1), 1_795_737_602_000);
        assert!(
            b.column(2).as_primitive::<Float64Type>().is_null(1),
            "missing field is null"
        );
        assert_eq!(
            b.column_by_name("_offset")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(1),
            101
        );
        assert_eq!(
            b.column_by_name("_partition")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(0),
            3
        );
    }

    #[test]
    fn bad_records_become_dead_letters_and_the_rest_survive() {
        let out = decode(&[
            r#"{"ts":1000,"host":"a","cpu":1}"#,
            r#"{"ts":1001,"host":"b""#,
            r#"{"ts":1002,"host":"c","cpu":"hot"}"#,
            r#"{"host":"d","cpu":2}"#,
            "   ",
            r#"{"ts":1003,"host":"e"} {"ts":1004,"host":"f"}"#,
            r#"{"ts":1005,"host":"g","cpu":3}"#,
        ]);
        assert_eq!(hosts(&out), ["a", "g"]);
        let mut dead: Vec<_> = out
            .dead
            .iter()
            .map(|d| {
                (
                    d.offset,
                    d.reason.to_string().split(':').next().unwrap().to_string(),
                )
            })
            .collect();
        dead.sort();
        assert_eq!(
            dead,
            [
                (101, "invalid JSON".to_string()),
                (102, "wrong type".to_string()),
                (103, "missing event time".to_string()),
                (104, "invalid JSON".to_string()),
                (105, "invalid JSON".to_string()),
            ]
        );
        assert_eq!(out.dead[0].payload, br#"{"ts":1001,"host":"b""#);
    }

    #[test]
    fn decoder_is_reusable_after_a_bad_flush() {
        let mut d = JsonDecoder::new(telemetry_schema(), 8, guard()).unwrap();
        d.push(b"{", 0, 1);
        assert_eq!(d.flush().dead.len(), 1);
        d.push(br#"{"ts":5,"host":"x"}"#, 0, 2);
        let out = d.flush();
        assert!(out.dead.is_empty());
        assert_eq!(out.batch.unwrap().num_rows(), 1);
    }

    #[test]
    fn the_guard_refuses_deep_long_non_finite_and_future_records() {
        let deep = format!(
            "{{\"ts\":1000,\"x\":{}1{}}}",
            "[".repeat(50_000),
            "]".repeat(50_000)
        );
        let long_host = format!(r#"{{"ts":1000,"host":"{}"}}"#, "h".repeat(200_000));
        let out = decode(&[
            r#"{"ts":1000,"host":"a","cpu":1}"#,
            &deep,
            &long_host,
            r#"{"ts":1001,"host":"b","cpu":"NaN"}"#,
            r#"{"ts":1002,"host":"c","cpu":1e400}"#,
            r#"{"ts":"2100-01-01T00:00:00Z","host":"d","cpu":1}"#,
            r#"{"ts":1e30,"host":"e","cpu":1}"#,
            r#"{"ts":"9999-12-31T23:59:59Z","host":"f","cpu":1}"#,
            r#"{"ts":1003,"host":"g","cpu":2}"#,
        ]);
        assert_eq!(hosts(&out), ["a", "g"]);
        let mut dead: Vec<_> = out
            .dead
            .iter()
            .map(|d| (d.offset, d.reason.to_string()))
            .collect();
        dead.sort();
        let offsets: Vec<i64> = dead.iter().map(|d| d.0).collect();
        assert_eq!(offsets, [101, 102, 103, 104, 105, 106, 107], "{dead:?}");
        assert!(dead[0].1.contains("max_depth"), "{dead:?}");
        assert!(dead[1].1.contains("max_field_bytes"), "{dead:?}");
        assert!(dead[2].1.contains("non-finite value NaN"), "{dead:?}");
        assert!(dead[3].1.contains("non-finite value inf"), "{dead:?}");
        assert!(dead[4].1.contains("max_future_skew"), "{dead:?}");
        // Year 9999 in milliseconds has the magnitude of microseconds.
        assert!(
            dead[6].1.contains("looks like epoch microseconds"),
            "{dead:?}"
        );
        // The dead letter keeps the original bytes.
        assert_eq!(
            out.dead
                .iter()
                .find(|d| d.offset == 102)
                .unwrap()
                .payload
                .len(),
            200_021
        );
    }

    fn decoder_with(schema: SourceSchema, max_records: usize, collectd: bool) -> JsonDecoder {
        if collectd {
            JsonDecoder::collectd(schema, max_records, guard()).unwrap()
        } else {
            JsonDecoder::new(schema, max_records, guard()).unwrap()
        }
    }

    fn run(d: &mut JsonDecoder, records: &[&str]) -> Decoded {
        for (i, r) in records.iter().enumerate() {
            d.push(r.as_bytes(), 0, 100 + i as i64);
        }
        d.flush()
    }

    fn times(out: &Decoded) -> Vec<i64> {
        out.batch.as_ref().map_or_else(Vec::new, |b| {
            b.column(0)
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .to_vec()
        })
    }

    fn reasons(out: &Decoded) -> Vec<(i64, String)> {
        let mut r: Vec<_> = out
            .dead
            .iter()
            .map(|d| (d.offset, d.reason.to_string()))
            .collect();
        r.sort();
        r
    }

    // The guard's clock is 2026-11-27T00:00:00Z = 1_795_737_600 s.

    #[test]
    fn epoch_seconds_with_fractions_and_other_units() {
        use TimestampUnit::*;
        for (unit, text, want) in [
            (S, "1795737600.826", 1_795_737_600_826),
            (S, "1795737600", 1_795_737_600_000),
            (Ms, "1795737600826", 1_795_737_600_826),
            (Ms, r#""2026-11-27T00:00:00.5Z""#, 1_795_737_600_500),
            (Us, "1795737600826123", 1_795_737_600_826),
            (Ns, "1795737600826123456", 1_795_737_600_826),
            (Rfc3339, r#""2026-11-27T01:00:00+01:00""#, 1_795_737_600_000),
            // Test and replay clocks near zero are taken in any unit.
            (S, "12", 12_000),
        ] {
            let schema = telemetry_schema().with_time_unit(unit);
            let out = run(
                &mut decoder_with(schema, 8, false),
                &[&format!(r#"{{"ts":{text},"host":"a"}}"#)],
            );
            assert!(out.dead.is_empty(), "{unit:?} {text}: {:?}", out.dead);
            assert_eq!(times(&out), [want], "{unit:?} {text}");
        }
    }

    #[test]
    fn a_time_in_another_unit_is_a_dead_letter_naming_the_unit_and_key() {
        use TimestampUnit::*;
        for (unit, text, looks) in [
            // The user's report: seconds read as milliseconds (1970).
            (Ms, "1795737600", "looks like epoch seconds"),
            (Ms, "1795737600.826", "looks like epoch seconds"),
            (S, "1795737600826", "looks like epoch milliseconds"),
            (S, "1795737600826123456", "looks like epoch nanoseconds"),
            (Us, "1795737600826", "looks like epoch milliseconds"),
            (Ns, "1795737600826123", "looks like epoch microseconds"),
            (S, "1e25", "no epoch time in any unit"),
            (S, r#""soon""#, "timestamp_unit = \"rfc3339\""),
            (Rfc3339, "1795737600826", "takes strings only"),
            (Rfc3339, r#""yesterday""#, "not an RFC 3339 time"),
        ] {
            let schema = telemetry_schema().with_time_unit(unit);
            let out = run(
                &mut decoder_with(schema, 8, false),
                &[
                    &format!(r#"{{"ts":{text},"host":"bad"}}"#),
                    if unit == Rfc3339 {
                        r#"{"ts":"2026-11-27T00:00:00Z","host":"ok"}"#
                    } else {
                        r#"{"ts":50,"host":"ok"}"#
                    },
                ],
            );
            assert_eq!(hosts(&out), ["ok"], "{unit:?} {text}");
            let r = reasons(&out);
            assert_eq!(r.len(), 1, "{unit:?} {text}: {r:?}");
            assert!(r[0].1.contains(looks), "{unit:?} {text}: {r:?}");
            if looks.starts_with("looks like") {
                assert!(r[0].1.contains("set timestamp_unit"), "{r:?}");
            }
        }
    }

    #[test]
    fn columns_read_from_paths_into_objects_and_arrays() {
        let schema = telemetry_schema()
            .with_path("host", "meta.host")
            .unwrap()
            .with_path("cpu", "values[1]")
            .unwrap()
            .with_path("n", "deep.list[0][1].n")
            .unwrap();
        let mut d = decoder_with(schema, 8, false);
        let out = run(
            &mut d,
            &[
                r#"{"ts":1,"meta":{"host":"h1"},"values":[0.5,2.5],"deep":{"list":[[0,{"n":7}]]},"up":true}"#,
                r#"{"ts":2,"host":"not-read","values":[1]}"#,
                r#"{"ts":3,"meta":{"host":"h3"},"values":[0,"hot"]}"#,
            ],
        );
        assert_eq!(hosts(&out), ["h1", ""]);
        let b = out.batch.as_ref().unwrap();
        assert_eq!(b.column(2).as_primitive::<Float64Type>().value(0), 2.5);
        assert!(b.column(2).is_null(1), "a path that is not there is null");
        assert_eq!(
            b.column(3)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(0),
            7
        );
        assert!(
            b.column(4).as_boolean().value(0),
            "plain columns still work"
        );
        let r = reasons(&out);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].1.starts_with("wrong type"), "{r:?}");
        assert_eq!(out.dead[0].offset, 102);
    }

    #[test]
    fn an_array_gives_one_record_per_element_and_a_bad_element_alone_is_dead() {
        let mut d = decoder_with(telemetry_schema(), 4, false);
        let out = run(
            &mut d,
            &[
                r#"[{"ts":1,"host":"a"},{"ts":2,"host":"b"}]"#,
                r#"{"ts":3,"host":"c"}"#,
                r#"[{"ts":4,"host":"d"},7,{"ts":5,"host":"e","cpu":"hot"},{"host":"f"}]"#,
                "[]",
                r#"[{"ts":6},{"ts":6},{"ts":6},{"ts":6},{"ts":6}]"#,
                "[1,",
            ],
        );
        assert_eq!(hosts(&out), ["a", "b", "c", "d"]);
        let offsets: Vec<i64> = out
            .batch
            .as_ref()
            .unwrap()
            .column_by_name("_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .values()
            .to_vec();
        assert_eq!(offsets, [100, 100, 101, 102]);
        let r = reasons(&out);
        let summary: Vec<_> = r
            .iter()
            .map(|(o, why)| (*o, why.split(':').next().unwrap().to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                (102, "element 2 of 4 in the message's array is not an object".into()),
                (102, "missing event time".into()),
                (102, "wrong type".into()),
                (103, "the message is an empty array".into()),
                (
                    104,
                    "the message holds 5 records, more than a batch may hold ([engine] max_batch_records = 4)".into()
                ),
                (105, "invalid JSON".into()),
            ]
        );
        // An element's dead letter holds that element, so replaying it
        // doubles nothing.
        let element = out
            .dead
            .iter()
            .find(|d| d.reason.to_string().starts_with("wrong type"))
            .unwrap();
        assert_eq!(element.payload, br#"{"cpu":"hot","host":"e","ts":5}"#);
        // The decoder is reusable, and a plain flush takes the fast path.
        let out = run(&mut d, &[r#"{"ts":7,"host":"g"}"#]);
        assert_eq!(hosts(&out), ["g"]);
    }

    fn collectd_schema(columns: &[&str]) -> SourceSchema {
        SourceSchema::new(columns.iter().map(|c| c.parse().unwrap()).collect(), "time")
            .unwrap()
            .with_time_unit(TimestampUnit::S)
    }

    #[test]
    fn collectd_value_lists_give_one_row_per_data_source() {
        let schema = collectd_schema(&[
            "time timestamp",
            "host string",
            "plugin string",
            "plugin_instance string",
            "type string",
            "type_instance string",
            "dsname string",
            "dstype string",
            "value double",
            "interval double",
        ]);
        let mut d = decoder_with(schema, 64, true);
        let out = run(
            &mut d,
            &[
                r#"[{"values":[2565611520],"dstypes":["gauge"],"dsnames":["value"],"time":1795737599.826,"interval":2.000,"host":"h","plugin":"memory","plugin_instance":"","type":"memory","type_instance":"cached"}]"#,
                r#"[{"values":[3.94,2.53,1.04],"dstypes":["gauge","gauge","gauge"],"dsnames":["shortterm","midterm","longterm"],"time":1795737600.0,"interval":2.0,"host":"h","plugin":"load","plugin_instance":"","type":"load","type_instance":""},{"values":[1],"dsnames":[],"dstypes":[],"time":1795737600,"host":"h"}]"#,
            ],
        );
        let b = out.batch.clone().unwrap();
        assert_eq!(b.num_rows(), 4);
        let s = |c: usize, i: usize| b.column(c).as_string::<i32>().value(i).to_string();
        let f = |c: usize, i: usize| b.column(c).as_primitive::<Float64Type>().value(i);
        let t = b.column(0).as_primitive::<TimestampMillisecondType>();
        assert_eq!(t.value(0), 1_795_737_599_826);
        assert_eq!(t.value(3), 1_795_737_600_000);
        assert_eq!(
            (s(2, 0), s(6, 0), s(7, 0), f(8, 0)),
            (
                "memory".into(),
                "value".into(),
                "gauge".into(),
                2565611520.0
            )
        );
        let load: Vec<_> = (1..4).map(|i| (s(6, i), f(8, i))).collect();
        assert_eq!(
            load,
            [
                ("shortterm".to_string(), 3.94),
                ("midterm".to_string(), 2.53),
                ("longterm".to_string(), 1.04)
            ]
        );
        assert_eq!(f(9, 1), 2.0);
        assert_eq!(s(3, 1), "", "empty strings stay empty strings");
        let r = reasons(&out);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].1.contains("1 values, 0 dsnames, 0 dstypes"), "{r:?}");
        assert!(r[0].1.starts_with("element 2 of 2"), "{r:?}");
    }

    #[test]
    fn collectd_takes_only_the_declared_columns() {
        let schema = collectd_schema(&["time timestamp", "host string", "value double"]);
        let mut d = decoder_with(schema, 64, true);
        let out = run(
            &mut d,
            &[
                r#"[{"values":[1,null],"dstypes":["derive","gauge"],"dsnames":["rx","tx"],"time":1795737600.5,"host":"h","plugin":"interface"}]"#,
            ],
        );
        assert!(out.dead.is_empty(), "{:?}", out.dead);
        let b = out.batch.unwrap();
        assert_eq!(b.num_columns(), 5);
        assert_eq!(b.num_rows(), 2);
        assert!(b.column(2).is_null(1), "a null value is a NULL reading");
    }
}
