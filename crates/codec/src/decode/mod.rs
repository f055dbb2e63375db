//! Columnar decoders: Kafka payloads in, Arrow record batches out.
//!
//! A [`Decoder`] accumulates raw payloads with [`Decoder::push`] and turns
//! them into one [`RecordBatch`] per [`Decoder::flush`]. Well-formed records
//! become rows of the source's declared schema (see
//! [`crate::schema::SourceSchema::batch_schema`]); every record that cannot
//! be decoded — invalid syntax, a value of the wrong type, no event time —
//! becomes a [`DeadLetter`] carrying the original bytes and the reason. A
//! decoder never fails the stream because of one record.
//!
//! ```
//! use telemine_codec::decode::{decoder_for, Format};
//! use telemine_codec::schema::SourceSchema;
//!
//! let schema = SourceSchema::new(
//!     vec!["ts timestamp".parse().unwrap(), "host string".parse().unwrap(), "cpu double".parse().unwrap()],
//!     "ts",
//! ).unwrap();
//! let mut decoder = decoder_for(&Format::Json, &Default::default(), &schema, 1024, &Default::default()).unwrap();
//! decoder.push(br#"{"ts":"2026-11-27T00:00:00Z","host":"h1","cpu":12.5}"#, 0, 41);
//! decoder.push(b"{not json", 0, 42);
//! let out = decoder.flush();
//! assert_eq!(out.batch.unwrap().num_rows(), 1);
//! assert_eq!(out.dead[0].offset, 42);
//! ```

mod flat;
mod influx;
mod json;
pub mod limits;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch};
use arrow::compute::filter_record_batch;
use serde::Deserialize;

pub use influx::InfluxDecoder;
pub use json::{JsonDecoder, scanner_and_arrow_json};
pub use limits::{Clock, Guard, Limits, NonFinite};

use crate::error::{Refusal, SchemaError};
use crate::schema::SourceSchema;

/// The wire format of a source's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per message, or an array of objects (one record
    /// each). Unknown fields are ignored; missing fields are null; a column
    /// may be read from a path (`meta.host`, `values[0]`). Event times are
    /// read in the source's `timestamp_unit` (default: epoch milliseconds
    /// or RFC 3339 strings).
    #[default]
    Json,
    /// InfluxDB line protocol, as Telegraf's Kafka output writes it: one or
    /// more lines per message; tags and fields map to columns by name.
    Influx,
    /// collectd's `write_kafka` plugin with `Format JSON`: an array of
    /// value lists per message; each (dsname, value) pair of each becomes
    /// one row with columns host, plugin, plugin_instance, type,
    /// type_instance, dsname, dstype, value, interval and time (epoch
    /// seconds, so the source's `timestamp_unit` defaults to "s").
    Collectd,
}

/// Options of the line-protocol decoder.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxOptions {
    /// Column that receives the measurement name, if any. Default: none.
    #[serde(default)]
    pub measurement_column: Option<String>,
    /// Unit of the line timestamps: "ns" (Telegraf's default), "us", "ms" or
    /// "s". Default: "ns".
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Prefix of the column each tag fills: with "tag_", tag `cpu` fills
    /// column `tag_cpu`, so it never meets a field `cpu`. Without one, a
    /// tag and a field of the same name share the column and the field
    /// fills it. Default: "" (tags fill the column of their name).
    #[serde(default)]
    pub tag_prefix: String,
}

fn default_precision() -> String {
    "ns".to_string()
}

impl Default for InfluxOptions {
    fn default() -> Self {
        InfluxOptions {
            measurement_column: None,
            precision: default_precision(),
            tag_prefix: String::new(),
        }
    }
}

/// A record that could not be decoded, with enough to find and replay it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    pub reason: Refusal,
    pub partition: i32,
    pub offset: i64,
}

/// What one flush produced.
#[derive(Debug, Default)]
pub struct Decoded {
    /// The decoded rows in the source's batch schema; `None` when no record
    /// was well formed.
    pub batch: Option<RecordBatch>,
    pub dead: Vec<DeadLetter>,
    /// Progress of the upstream partitions, from a repartition topic's
    /// messages (empty for every other source).
    pub marks: Vec<UpstreamMark>,
}

/// What a repartition topic's message says of the upstream partition it
/// came from: the newest event time read there when it was written, and
/// whether that partition had been read to its end (a drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamMark {
    /// The repartition topic's partition the message was read from.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// The upstream partition.
    pub upstream: i32,
    /// Newest event time read from the upstream partition (ms).
    pub clock: Option<i64>,
    /// The upstream partition was read to its end: nothing more follows.
    pub end: bool,
}

/// Raw records gathered by a source before decoding: payload bytes in one
/// buffer, and per record its span in it, partition and offset.
#[derive(Debug, Default, Clone)]
pub struct RecordChunk {
    pub data: Vec<u8>,
    pub spans: Vec<(usize, usize)>,
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
}

impl RecordChunk {
    pub fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.spans.push((start, self.data.len()));
        self.partitions.push(partition);
        self.offsets.push(offset);
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn payload(&self, i: usize) -> &[u8] {
        let (s, e) = self.spans[i];
        &self.data[s..e]
    }
}

/// Turns raw payloads into Arrow batches. See the module docs.
pub trait Decoder: Send {
    /// Buffers one record. Cheap: parsing may happen here or at flush.
    fn push(&mut self, payload: &[u8], partition: i32, offset: i64);
    /// Number of records pushed since the last flush.
    fn buffered(&self) -> usize;
    /// Decodes everything buffered since the last flush.
    fn flush(&mut self) -> Decoded;
    /// Decodes a whole chunk (after anything already buffered). Decoders
    /// that keep raw bytes override it to take the chunk's buffer as is.
    fn decode_chunk(&mut self, chunk: RecordChunk) -> Decoded {
        for i in 0..chunk.len() {
            self.push(chunk.payload(i), chunk.partitions[i], chunk.offsets[i]);
        }
        self.flush()
    }
}

/// Builds the decoder for a source. `max_records` bounds how many records a
/// caller pushes between flushes (used to size buffers); `limits` are the
/// source's bounds (see [`limits`]).
pub fn decoder_for(
    format: &Format,
    influx: &InfluxOptions,
    schema: &SourceSchema,
    max_records: usize,
    limits: &Limits,
) -> Result<Box<dyn Decoder>, SchemaError> {
    let guard = Guard::new(limits.clone());
    Ok(match format {
        Format::Json => Box::new(JsonDecoder::new(schema.clone(), max_records, guard)?),
        Format::Influx => Box::new(InfluxDecoder::new(schema.clone(), influx, guard)?),
        Format::Collectd => Box::new(JsonDecoder::collectd(schema.clone(), max_records, guard)?),
    })
}

/// Finishes a batch of decoded columns (one row per record, in push order):
/// rows without an event time, and rows the source's [`Guard`] refuses
/// (non-finite values, event times beyond `max_future_skew`), become dead
/// letters; the `_partition` / `_offset` columns are appended.
///
/// `early` holds, per row, a refusal the decoder already made (empty: none).
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_batch(
    schema: &SourceSchema,
    guard: &mut Guard,
    columns: Vec<ArrayRef>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    payload_of: impl Fn(usize) -> Vec<u8>,
    early: Vec<Option<Refusal>>,
    dead: &mut Vec<DeadLetter>,
) -> Option<RecordBatch> {
    let n = partitions.len();
    if n == 0 {
        return None;
    }
    let partitions = Arc::new(Int32Array::from(partitions));
    let offsets = Arc::new(Int64Array::from(offsets));
    let mut columns = columns;
    columns.push(partitions.clone());
    columns.push(offsets.clone());
    let batch = match RecordBatch::try_new(schema.batch_schema().clone(), columns) {
        Ok(b) => b,
        Err(e) => {
            // The decoders build exactly the declared types, so this is a bug;
            // keep the records rather than lose them.
            for i in 0..n {
                dead.push(DeadLetter {
                    payload: payload_of(i),
                    reason: Refusal::Internal(e.to_string()),
                    partition: -1,
                    offset: -1,
                });
            }
            return None;
        }
    };
    let ts_index = schema.event_time_index();
    let mut refused: Vec<Option<Refusal>> = {
        let ts = batch.column(ts_index);
        (0..n)
            .map(|i| {
                if let Some(Some(why)) = early.get(i) {
                    return Some(why.clone());
                }
                ts.is_null(i).then(|| {
                    Refusal::EventTime(format!(
                        "missing event time: field `{}` is absent or null",
                        schema.event_time_name()
                    ))
                })
            })
            .collect()
    };
    let batch = guard.review(batch, schema, &partitions, &mut refused);
    if refused.iter().all(Option::is_none) {
        return Some(batch);
    }
    let mut keep = Vec::with_capacity(n);
    for (i, why) in refused.into_iter().enumerate() {
        keep.push(why.is_none());
        if let Some(reason) = why {
            dead.push(DeadLetter {
                payload: payload_of(i),
                reason,
                partition: partitions.value(i),
                offset: offsets.value(i),
            });
        }
    }
    match filter_record_batch(&batch, &BooleanArray::from(keep)) {
        Ok(b) if b.num_rows() > 0 => Some(b),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// The default limits with the clock at 2026-11-27T00:00:00Z.
    pub fn guard() -> Guard {
        Guard::new(Limits {
            clock: Clock::fixed(1_795_737_600_000),
            ..Limits::default()
        })
    }

    pub fn telemetry_schema() -> SourceSchema {
        SourceSchema::new(
            [
                "ts timestamp",
                "host string",
                "cpu double",
                "n bigint",
                "up boolean",
            ]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect(),
            "ts",
        )
        .unwrap()
    }
}
