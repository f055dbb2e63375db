//! JSON objects → Arrow, through arrow-json's tape decoder.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::concat_batches;
use arrow::json::reader::{Decoder as ArrowJsonDecoder, ReaderBuilder};

use super::limits::{Guard, Syntax};
use super::{DeadLetter, Decoded, Decoder, RecordChunk, finish_batch};
use crate::schema::SourceSchema;

/// Decodes one JSON object per message straight into Arrow arrays.
///
/// Payloads are copied into one arena on `push` (a memcpy, far cheaper than
/// parsing) so that a flush that meets a bad record can fall back to
/// decoding records one by one and name the culprit. The fast path hands
/// every payload to a single arrow-json decoder and never builds a per-row
/// value.
pub struct JsonDecoder {
    schema: SourceSchema,
    max_records: usize,
    decoder: ArrowJsonDecoder,
    arena: Vec<u8>,
    spans: Vec<(usize, usize)>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    guard: Guard,
    /// Records the guard refused before parsing, since the last flush.
    screened: Vec<DeadLetter>,
    /// Records pushed since the last flush, screened out ones included.
    pushed: usize,
}

impl JsonDecoder {
    pub fn new(schema: SourceSchema, max_records: usize, guard: Guard) -> Result<Self, String> {
        let decoder = build(&schema, max_records)?;
        Ok(JsonDecoder {
            schema,
            max_records,
            decoder,
            arena: Vec::new(),
            spans: Vec::new(),
            partitions: Vec::new(),
            offsets: Vec::new(),
            guard,
            screened: Vec::new(),
            pushed: 0,
        })
    }

    /// The guard's verdict on one payload; a refused one becomes a dead
    /// letter at once (the dead-letter sink cuts oversized payloads).
    fn admit(&mut self, payload: &[u8], partition: i32, offset: i64) -> bool {
        self.pushed += 1;
        match self.guard.screen(payload, Syntax::Json) {
            Ok(()) => true,
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

    /// Feeds every buffered payload to the decoder; `None` if any payload was
    /// not exactly one complete JSON value or the columns did not convert.
    fn fast_path(&mut self) -> Option<Vec<ArrayRef>> {
        for i in 0..self.spans.len() {
            let (s, e) = self.spans[i];
            let before = self.decoder.len();
            match self.decoder.decode(&self.arena[s..e]) {
                Ok(n)
                    if n == e - s
                        && !self.decoder.has_partial_record()
                        && self.decoder.len() == before + 1 => {}
                _ => return None,
            }
        }
        match self.decoder.flush() {
            Ok(Some(batch)) if batch.num_rows() == self.spans.len() => {
                Some(batch.columns().to_vec())
            }
            _ => None,
        }
    }

    /// Decodes payloads one at a time, so each failure is attributed to its
    /// record. Only used for flushes that contain a bad record.
    fn slow_path(&mut self, dead: &mut Vec<DeadLetter>) -> Option<Salvaged> {
        let mut batches: Vec<RecordBatch> = Vec::new();
        let (mut parts, mut offs, mut kept) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.spans.len() {
            match decode_one(&self.schema, self.payload(i)) {
                Ok(b) => {
                    batches.push(b);
                    parts.push(self.partitions[i]);
                    offs.push(self.offsets[i]);
                    kept.push(i);
                }
                Err(reason) => dead.push(DeadLetter {
                    payload: self.payload(i).to_vec(),
                    reason,
                    partition: self.partitions[i],
                    offset: self.offsets[i],
                }),
            }
        }
        if batches.is_empty() {
            return None;
        }
        match concat_batches(self.schema.decoded_schema(), &batches) {
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
                        payload: self.payload(i).to_vec(),
                        reason: format!("internal error (a bug in telemine): {e}"),
                        partition: self.partitions[i],
                        offset: self.offsets[i],
                    });
                }
                None
            }
        }
    }
}

/// The well-formed records of a flush that had bad ones: their columns, and
/// for each row its partition, offset and index among the pushed records.
struct Salvaged {
    columns: Vec<ArrayRef>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    kept: Vec<usize>,
}

fn build(schema: &SourceSchema, max_records: usize) -> Result<ArrowJsonDecoder, String> {
    ReaderBuilder::new(schema.decoded_schema().clone())
        .with_batch_size(max_records.max(1) + 1)
        .build_decoder()
        .map_err(|e| format!("cannot build a JSON decoder for this schema: {e}"))
}

/// Decodes a single payload that must hold exactly one JSON object.
fn decode_one(schema: &SourceSchema, payload: &[u8]) -> Result<RecordBatch, String> {
    let mut d = build(schema, 1)?;
    let n = d
        .decode(payload)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    if n != payload.len() || d.len() > 1 {
        return Err("invalid JSON: expected exactly one object per message".into());
    }
    if d.has_partial_record() {
        return Err("invalid JSON: the object is incomplete".into());
    }
    match d.flush() {
        Ok(Some(b)) if b.num_rows() == 1 => Ok(b),
        Ok(_) => Err("invalid JSON: the message holds no object".into()),
        Err(e) => Err(format!("wrong type: {e}")),
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
        if self.spans.is_empty() {
            self.arena.clear();
            return Decoded {
                batch: None,
                dead,
                ..Default::default()
            };
        }
        let batch = match self.fast_path() {
            Some(columns) => {
                let parts = std::mem::take(&mut self.partitions);
                let offs = std::mem::take(&mut self.offsets);
                let (spans, arena) = (&self.spans, &self.arena);
                finish_batch(
                    &self.schema,
                    &mut self.guard,
                    columns,
                    parts,
                    offs,
                    |i| {
                        let (s, e) = spans[i];
                        arena[s..e].to_vec()
                    },
                    &mut dead,
                )
            }
            None => {
                // The shared decoder may hold half a record now; start afresh.
                match build(&self.schema, self.max_records) {
                    Ok(d) => self.decoder = d,
                    Err(e) => tracing::error!("{e}"),
                }
                match self.slow_path(&mut dead) {
                    Some(s) => {
                        let (spans, arena) = (&self.spans, &self.arena);
                        finish_batch(
                            &self.schema,
                            &mut self.guard,
                            s.columns,
                            s.partitions,
                            s.offsets,
                            |i| {
                                let (a, b) = spans[s.kept[i]];
                                arena[a..b].to_vec()
                            },
                            &mut dead,
                        )
                    }
                    None => None,
                }
            }
        };
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
            .map(|d| (d.offset, d.reason.split(':').next().unwrap().to_string()))
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
            .map(|d| (d.offset, d.reason.clone()))
            .collect();
        dead.sort();
        let offsets: Vec<i64> = dead.iter().map(|d| d.0).collect();
        assert_eq!(offsets, [101, 102, 103, 104, 105, 106, 107], "{dead:?}");
        assert!(dead[0].1.contains("max_depth"), "{dead:?}");
        assert!(dead[1].1.contains("max_field_bytes"), "{dead:?}");
        assert!(dead[2].1.contains("non-finite value NaN"), "{dead:?}");
        assert!(dead[3].1.contains("non-finite value inf"), "{dead:?}");
        assert!(dead[4].1.contains("max_future_skew"), "{dead:?}");
        assert!(dead[6].1.contains("max_future_skew"), "{dead:?}");
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
}
