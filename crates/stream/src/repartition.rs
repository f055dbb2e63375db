//! Repartitioning through Kafka: how a view whose GROUP BY does not hold
//! its source's message key (`rack_1m` over host-keyed records) is
//! computed right when several instances share the consumer group, as
//! Kafka Streams does it.
//!
//! With `[engine] repartition = true`, each such (source, GROUP BY) gets a
//! *derived source*: a repartition topic `GROUP.repartition.SOURCE.KEYS`
//! with as many partitions as the source's topic. Every instance writes
//! the records it decodes from the partitions it holds there
//! ([`Writer`]), each row to the partition its GROUP BY values hash to,
//! and the view is bound to the derived source: it is computed, per
//! partition of the repartition topic, by whichever instance holds that
//! partition. Every row of one group meets in one partition, so each
//! partition makes whole rows of the view, and the derived source is
//! windowed, checkpointed, committed and moved on a rebalance like any
//! other.
//!
//! A message carries the rows of one upstream partition bound for one
//! repartition partition (Arrow IPC, in the source's batch schema, so the
//! upstream partition and offset of each row travel with it), after a
//! header with the upstream partition's clock: the newest event time
//! read there. Partitions that got no rows from a batch get the header
//! alone (a mark) when the clock moved; a partition read to its end in a
//! drain says so with a last mark. Admission (`admission.rs`) takes the
//! derived watermark from these clocks — the lowest over the upstream
//! partitions that are neither idle nor ended, as one instance reading
//! every partition would — and drops copies (rows written again after an
//! upstream instance re-read its input) by their upstream offset.
//!
//! Invariants:
//! - every instance of a group writes a row to the same partition: the
//!   hash is xxh3 over DataFusion's column hashing, with no random seed
//!   (instances of one group must run the same telemine version);
//! - what is written to the repartition topic goes through the outputs'
//!   producer, so the commit of the input it came from waits for it
//!   (at-least-once) or shares its transaction (exactly-once).

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Schema, SchemaRef, TimestampMillisecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::hash_utils::create_hashes_with_hasher;
use telemine_codec::decode::{DeadLetter, Decoded, Decoder, UpstreamMark};
use telemine_codec::error::Refusal;
use telemine_codec::schema::{OFFSET_COLUMN, PARTITION_COLUMN};
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use telemine_sql::source::{Derived, SourceDef};
use telemine_sql::{Placement, SqlSet};
use telemine_types::error::EngineError;

/// The upstream partition of a derived source's row (last but one column
/// of its decoded batches; admission takes it off).
pub const UP_PARTITION: &str = "_up_partition";
/// The upstream offset of a derived source's row (last column).
pub const UP_OFFSET: &str = "_up_offset";

const MAGIC: &[u8; 4] = b"TMR1";
/// Magic, upstream partition (i32), flags (u8), clock (i64).
const HEADER_BYTES: usize = 4 + 4 + 1 + 8;
const FLAG_CLOCK: u8 = 1;
const FLAG_END: u8 = 2;

/// The repartition topic of `source` by `by` in consumer group `group`:
/// only the characters Kafka allows, and unique per `by`.
pub fn topic(group: &str, source: &str, by: &[String]) -> String {
    let keys = if by.is_empty() {
        "all".to_string()
    } else {
        by.join("-")
    };
    let raw = format!("{group}.repartition.{source}.{keys}");
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == raw && clean.len() <= 200 {
        clean
    } else {
        let hash = xxhash_rust::xxh3::xxh3_64(raw.as_bytes());
        let head: String = clean.chars().take(180).collect();
        format!("{head}.{hash:016x}")
    }
}

/// The (source, GROUP BY) pairs the views need repartitioned, in the
/// order of the views that need them first.
pub fn needed(sql: &SqlSet, defs: &[SourceDef]) -> Vec<(usize, Vec<String>)> {
    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
    for v in &sql.views {
        if let (Placement::Repartitioned { by }, Some(source)) = (v.placement(defs), v.source) {
            let mut by = by;
            by.sort();
            if !out.iter().any(|(s, b)| *s == source && *b == by) {
                out.push((source, by));
            }
        }
    }
    out
}

/// The configured sources followed by the derived ones (`needed`, with
/// each upstream topic's partition count from `partitions`), and every
/// repartitioned view of `sql` bound to its derived source.
pub fn derive(
    sql: &mut SqlSet,
    defs: &[SourceDef],
    group: &str,
    needed: &[(usize, Vec<String>)],
    partitions: impl Fn(&str) -> i32,
) -> Vec<SourceDef> {
    let mut all = defs.to_vec();
    for (source, by) in needed {
        let from = &defs[*source];
        let mut d = from.clone();
        d.name = format!("{}#{}", from.name, by.join(","));
        d.topic = topic(group, &from.name, by);
        d.key = by.clone();
        d.derived = Some(Derived {
            from: *source,
            by: by.clone(),
            upstream_partitions: partitions(&from.topic).max(1),
        });
        all.push(d);
    }
    // Every view that needs one has its derived source now.
    let _ = bind(sql, &all);
    all
}

/// Binds every view of `sql` (loaded against the configured sources,
/// which `all` starts with) that does not group by its source's key to
/// the derived source of its (source, GROUP BY) in `all`. A view that
/// needs one this run has not set up (a reload that added it) is an
/// error naming it: the repartition topics are set up at start.
pub fn bind(sql: &mut SqlSet, all: &[SourceDef]) -> Result<(), Unbound> {
    let configured: Vec<SourceDef> = all
        .iter()
        .filter(|d| d.derived.is_none())
        .cloned()
        .collect();
    let mut missing = Vec::new();
    for v in &mut sql.views {
        let (Placement::Repartitioned { by }, Some(source)) = (v.placement(&configured), v.source)
        else {
            continue;
        };
        let mut by = by;
        by.sort();
        let found = all.iter().position(|d| {
            d.derived
                .as_ref()
                .is_some_and(|x| x.from == source && x.by == by)
        });
        match found {
            Some(i) => v.source = Some(i),
            None => missing.push(format!("`{}` (by {})", v.name, by.join(", "))),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Unbound { views: missing })
    }
}

/// Views a reload added that need a repartition topic this run did not
/// set up (`` `view` (by keys) `` each).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "view(s) {} need a repartition topic this run did not set up (they are set up at start): restart telemine to add them",
    views.join(", ")
)]
pub struct Unbound {
    pub views: Vec<String>,
}

/// A message for a repartition topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub partition: i32,
    pub payload: Vec<u8>,
}

/// One derived source, as the instances reading its upstream write it.
struct Target {
    topic: String,
    /// Its GROUP BY columns in the upstream batch.
    by: Vec<usize>,
    partitions: i32,
}

/// What was last sent from one upstream partition to one repartition
/// partition.
#[derive(Debug, Clone, Copy)]
struct Sent {
    clock: Option<i64>,
    at: Instant,
}

/// Writes the rows of the configured sources the derived ones repartition
/// (see the module docs).
pub struct Writer {
    /// Per configured source: the derived sources over it.
    targets: Vec<Vec<Target>>,
    ts_index: Vec<usize>,
    partition_index: Vec<usize>,
    /// Per (source, upstream partition): the newest event time read.
    clocks: HashMap<(usize, i32), i64>,
    /// Per (source, target, upstream partition, partition).
    sent: HashMap<(usize, usize, i32, i32), Sent>,
    /// A mark goes to a partition at least this often while its upstream
    /// partition delivers, so it never looks idle there.
    keep_alive: Vec<Duration>,
    max_bytes: usize,
}

impl Writer {
    /// The writer for `defs` (configured sources, then derived ones, as
    /// [`derive`] returns them), with `partitions` the repartition topics'
    /// partition counts; messages stay under `max_bytes` where one row
    /// allows.
    pub fn new(
        defs: &[SourceDef],
        partitions: impl Fn(&str) -> i32,
        max_bytes: usize,
    ) -> Result<Writer, EngineError> {
        let mut targets: Vec<Vec<Target>> = Vec::new();
        let (mut ts_index, mut partition_index, mut keep_alive) =
            (Vec::new(), Vec::new(), Vec::new());
        for d in defs.iter().filter(|d| d.derived.is_none()) {
            let schema = d.schema.batch_schema();
            ts_index.push(d.schema.event_time_index());
            partition_index.push(schema.index_of(PARTITION_COLUMN).unwrap_or(0));
            keep_alive.push(d.idle_timeout / 2);
            targets.push(Vec::new());
        }
        for d in defs {
            let Some(derived) = &d.derived else { continue };
            let Some(list) = targets.get_mut(derived.from) else {
                continue;
            };
            let schema = defs[derived.from].schema.batch_schema();
            let by = derived
                .by
                .iter()
                .map(|c| {
                    schema.index_of(c).map_err(|_| {
                        EngineError::Internal(format!(
                            "repartition of `{}`: no column `{c}`",
                            defs[derived.from].name
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            list.push(Target {
                topic: d.topic.clone(),
                by,
                partitions: partitions(&d.topic).max(1),
            });
        }
        Ok(Writer {
            targets,
            ts_index,
            partition_index,
            clocks: HashMap::new(),
            sent: HashMap::new(),
            keep_alive,
            max_bytes: max_bytes.max(1024),
        })
    }

    /// Whether `source` is repartitioned at all.
    pub fn writes(&self, source: usize) -> bool {
        self.targets.get(source).is_some_and(|t| !t.is_empty())
    }

    /// The messages for one decoded batch of `source`: its rows, each to
    /// the partition of every derived source over it that its GROUP BY
    /// values hash to, and marks where the clock moved.
    pub fn write(
        &mut self,
        source: usize,
        batch: Option<&RecordBatch>,
    ) -> Result<Vec<Message>, EngineError> {
        if !self.writes(source) {
            return Ok(Vec::new());
        }
        let Some(batch) = batch.filter(|b| b.num_rows() > 0) else {
            return Ok(Vec::new());
        };
        let internal =
            |e: datafusion::arrow::error::ArrowError| EngineError::Internal(e.to_string());
        let parts = batch
            .column(self.partition_index[source])
            .as_primitive::<Int32Type>();
        let ts = batch
            .column(self.ts_index[source])
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| EngineError::Internal("event time is not a timestamp".into()))?;
        // The upstream partitions of the batch, their rows and clocks.
        let mut rows_of: HashMap<i32, Vec<u32>> = HashMap::new();
        for i in 0..batch.num_rows() {
            let u = parts.value(i);
            rows_of.entry(u).or_default().push(i as u32);
            if ts.is_valid(i) {
                let c = self.clocks.entry((source, u)).or_insert(i64::MIN);
                *c = (*c).max(ts.value(i));
            }
        }
        let now = Instant::now();
        let keep_alive = self.keep_alive[source];
        let mut out = Vec::new();
        for (ti, target) in self.targets[source].iter().enumerate() {
            let mut hashes = vec![0u64; batch.num_rows()];
            if !target.by.is_empty() {
                let cols: Vec<ArrayRef> =
                    target.by.iter().map(|&c| batch.column(c).clone()).collect();
                create_hashes_with_hasher(&cols, &Xxh3DefaultBuilder, &mut hashes)
                    .map_err(|e| EngineError::Internal(format!("hashing GROUP BY columns: {e}")))?;
            }
            for (&u, rows) in &rows_of {
                let clock = self.clocks.get(&(source, u)).copied();
                let mut by_partition: HashMap<i32, Vec<u32>> = HashMap::new();
                for &i in rows {
                    let r = (hashes[i as usize] % target.partitions as u64) as i32;
                    by_partition.entry(r).or_default().push(i);
                }
                for r in 0..target.partitions {
                    let key = (source, ti, u, r);
                    let last = self.sent.get(&key).copied();
                    match by_partition.get(&r) {
                        Some(idx) => {
                            let rows = take_record_batch(batch, &UInt32Array::from(idx.clone()))
                                .map_err(internal)?;
                            for payload in encode_rows(u, clock, &rows, self.max_bytes)? {
                                out.push(Message {
                                    topic: target.topic.clone(),
                                    partition: r,
                                    payload,
                                });
                            }
                        }
                        None => {
                            let moved = last.is_none_or(|l| l.clock < clock);
                            let quiet = last.is_none_or(|l| now.duration_since(l.at) >= keep_alive);
                            if !moved && !quiet {
                                continue;
                            }
                            out.push(Message {
                                topic: target.topic.clone(),
                                partition: r,
                                payload: header(u, clock, false),
                            });
                        }
                    }
                    self.sent.insert(key, Sent { clock, at: now });
                }
            }
        }
        Ok(out)
    }

    /// `source`'s `partition` was read to its end (a drain): a last mark
    /// to every partition of every derived source over it.
    pub fn drained(&mut self, source: usize, partition: i32) -> Vec<Message> {
        let Some(targets) = self.targets.get(source) else {
            return Vec::new();
        };
        let clock = self.clocks.get(&(source, partition)).copied();
        targets
            .iter()
            .flat_map(|t| {
                (0..t.partitions).map(move |r| Message {
                    topic: t.topic.clone(),
                    partition: r,
                    payload: header(partition, clock, true),
                })
            })
            .collect()
    }
}

fn header(upstream: i32, clock: Option<i64>, end: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&upstream.to_le_bytes());
    let mut flags = 0u8;
    if clock.is_some() {
        flags |= FLAG_CLOCK;
    }
    if end {
        flags |= FLAG_END;
    }
    out.push(flags);
    out.extend_from_slice(&clock.unwrap_or(0).to_le_bytes());
    out
}

/// `rows` as messages under `max_bytes` each (halved until they fit, down
/// to one row).
fn encode_rows(
    upstream: i32,
    clock: Option<i64>,
    rows: &RecordBatch,
    max_bytes: usize,
) -> Result<Vec<Vec<u8>>, EngineError> {
    let mut payload = header(upstream, clock, false);
    {
        let mut w = StreamWriter::try_new(&mut payload, &rows.schema())
            .map_err(|e| EngineError::Internal(format!("encoding repartitioned rows: {e}")))?;
        w.write(rows)
            .and_then(|_| w.finish())
            .map_err(|e| EngineError::Internal(format!("encoding repartitioned rows: {e}")))?;
    }
    if payload.len() <= max_bytes || rows.num_rows() <= 1 {
        return Ok(vec![payload]);
    }
    let half = rows.num_rows() / 2;
    let mut out = encode_rows(upstream, clock, &rows.slice(0, half), max_bytes)?;
    out.extend(encode_rows(
        upstream,
        clock,
        &rows.slice(half, rows.num_rows() - half),
        max_bytes,
    )?);
    Ok(out)
}

/// A derived source's decoded batch without its last two columns (the
/// upstream partition and offset), and those two.
pub fn split_upstream(
    batch: RecordBatch,
) -> Result<(RecordBatch, (ArrayRef, ArrayRef)), EngineError> {
    let n = batch.num_columns();
    if n < 2 {
        return Err(EngineError::Internal(
            "a repartitioned batch without its upstream columns".into(),
        ));
    }
    let up = (batch.column(n - 2).clone(), batch.column(n - 1).clone());
    let rows = batch
        .project(&(0..n - 2).collect::<Vec<_>>())
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    Ok((rows, up))
}

/// The schema a derived source's decoder gives: its upstream's batch
/// schema, then the upstream partition and offset.
pub fn derived_schema(upstream: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = upstream.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(UP_PARTITION, DataType::Int32, false)));
    fields.push(Arc::new(Field::new(UP_OFFSET, DataType::Int64, false)));
    Arc::new(Schema::new(fields))
}

/// Decodes a repartition topic's messages (see the module docs): the rows
/// with this topic's partition and offset, their upstream ones in the two
/// last columns, and every message's mark.
pub struct RepartitionDecoder {
    upstream: SchemaRef,
    schema: SchemaRef,
    partition_index: usize,
    offset_index: usize,
    batches: Vec<RecordBatch>,
    marks: Vec<UpstreamMark>,
    dead: Vec<DeadLetter>,
    pushed: usize,
}

impl RepartitionDecoder {
    /// For a derived source over a source whose batch schema is
    /// `upstream`.
    pub fn new(upstream: SchemaRef) -> RepartitionDecoder {
        let schema = derived_schema(&upstream);
        RepartitionDecoder {
            partition_index: upstream.index_of(PARTITION_COLUMN).unwrap_or(0),
            offset_index: upstream.index_of(OFFSET_COLUMN).unwrap_or(0),
            upstream,
            schema,
            batches: Vec::new(),
            marks: Vec::new(),
            dead: Vec::new(),
            pushed: 0,
        }
    }

    fn take(&mut self, payload: &[u8], partition: i32, offset: i64) -> Result<(), Refusal> {
        if payload.len() < HEADER_BYTES || &payload[..4] != MAGIC {
            return Err(Refusal::Malformed(
                "not a telemine repartition message".into(),
            ));
        }
        let word = |at: usize| -> [u8; 4] {
            let mut b = [0u8; 4];
            b.copy_from_slice(&payload[at..at + 4]);
            b
        };
        let upstream = i32::from_le_bytes(word(4));
        let flags = payload[8];
        let mut clock = [0u8; 8];
        clock.copy_from_slice(&payload[9..17]);
        let clock = (flags & FLAG_CLOCK != 0).then(|| i64::from_le_bytes(clock));
        let rows = &payload[HEADER_BYTES..];
        if !rows.is_empty() {
            let unreadable = |e: ArrowError| Refusal::Malformed(format!("unreadable rows: {e}"));
            let reader = StreamReader::try_new(Cursor::new(rows), None).map_err(unreadable)?;
            for b in reader {
                let b = b.map_err(unreadable)?;
                self.batches.push(self.rebase(b, partition, offset)?);
            }
        }
        self.marks.push(UpstreamMark {
            partition,
            offset,
            upstream,
            clock,
            end: flags & FLAG_END != 0,
        });
        Ok(())
    }

    /// Rows read from `partition` at `offset`: those in the derived
    /// schema, their upstream partition and offset moved to the end.
    fn rebase(&self, b: RecordBatch, partition: i32, offset: i64) -> Result<RecordBatch, Refusal> {
        let same = b.schema().fields().len() == self.upstream.fields().len()
            && b.schema()
                .fields()
                .iter()
                .zip(self.upstream.fields())
                .all(|(a, e)| a.name() == e.name() && a.data_type() == e.data_type());
        if !same {
            return Err(Refusal::Malformed(
                "rows of another schema (an instance of this group with another config or version?)"
                    .into(),
            ));
        }
        let n = b.num_rows();
        let mut cols: Vec<ArrayRef> = b.columns().to_vec();
        let up_p = cols[self.partition_index].clone();
        let up_o = cols[self.offset_index].clone();
        cols[self.partition_index] = Arc::new(Int32Array::from(vec![partition; n]));
        cols[self.offset_index] = Arc::new(Int64Array::from(vec![offset; n]));
        cols.push(up_p);
        cols.push(up_o);
        RecordBatch::try_new(self.schema.clone(), cols)
            .map_err(|e| Refusal::Internal(e.to_string()))
    }
}

impl Decoder for RepartitionDecoder {
    fn push(&mut self, payload: &[u8], partition: i32, offset: i64) {
        self.pushed += 1;
        if let Err(reason) = self.take(payload, partition, offset) {
            self.dead.push(DeadLetter {
                payload: payload.to_vec(),
                reason,
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
        let batches = std::mem::take(&mut self.batches);
        let batch = if batches.is_empty() {
            None
        } else {
            match concat_batches(&self.schema, &batches) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::error!(error = %e, "cannot join repartitioned rows");
                    None
                }
            }
        };
        Decoded {
            batch,
            dead: std::mem::take(&mut self.dead),
            marks: std::mem::take(&mut self.marks),
        }
    }
}

/// Why this instance must be alone in its consumer group: what would be
/// computed wrong with the group's partitions split across instances.
/// Empty: instances may share the group (scale-out).
/// `repartition`: `[engine] repartition` (with it, views that do not
/// group by their source's key are no reason).
pub fn alone_reasons(sql: &SqlSet, defs: &[SourceDef], repartition: bool) -> Vec<String> {
    let mut why = Vec::new();
    for v in &sql.views {
        match v.placement(defs) {
            Placement::PerPartition => {}
            Placement::Repartitioned { .. } if repartition => {}
            Placement::Repartitioned { .. } => why.push(format!(
                "view `{}` does not group by its source's message key (set [engine] repartition = true to compute it across instances through Kafka)",
                v.name
            )),
            // Computed where the alerting runs, from its inputs' rows
            // (`deferred.rs`).
            Placement::OverViews => {}
        }
    }
    // Models score where the alerting runs too (`deferred.rs`): they do
    // not keep the group to one instance.
    why
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::Int64Type;
    use telemine_codec::decode::decoder_for;

    use super::*;

    /// The `telemetry` source (keyed by host) and its derived source by
    /// rack, over 3 upstream partitions.
    fn defs() -> Vec<SourceDef> {
        let source = SourceDef::for_tests(&["rack string", "host string", "cpu double"], &["host"]);
        let mut derived = source.clone();
        derived.name = "telemetry#rack".into();
        derived.topic = topic("g", "telemetry", &["rack".into()]);
        derived.key = vec!["rack".into()];
        derived.derived = Some(Derived {
            from: 0,
            by: vec!["rack".into()],
            upstream_partitions: 3,
        });
        vec![source, derived]
    }

    /// Decoded rows: (upstream partition, offset, event time ms, rack).
    fn rows(def: &SourceDef, records: &[(i32, i64, i64, &str)]) -> RecordBatch {
        let mut d =
            decoder_for(&def.format, &def.influx, &def.schema, 1024, &def.limits).expect("decoder");
        for (p, o, ts, rack) in records {
            let json = format!(r#"{{"ts":{ts},"rack":"{rack}","host":"h{o}","cpu":1.5}}"#);
            d.push(json.as_bytes(), *p, *o);
        }
        d.flush().batch.expect("rows")
    }

    fn decode(defs: &[SourceDef], messages: &[Message]) -> Decoded {
        let mut d = RepartitionDecoder::new(defs[0].schema.batch_schema().clone());
        for (i, m) in messages.iter().enumerate() {
            d.push(&m.payload, m.partition, 100 + i as i64);
        }
        d.flush()
    }

    #[test]
    fn every_row_of_a_group_goes_to_one_partition_and_reads_back_with_its_origin() {
        let defs = defs();
        let mut w = Writer::new(&defs, |_| 4, 1 << 20).expect("writer");
        let records: Vec<(i32, i64, i64, &str)> = (0..40)
            .map(|i| {
                (
                    i % 3,
                    i as i64,
                    1_000 * i as i64,
                    ["r1", "r2", "r3", "r4", "r5"][i as usize % 5],
                )
            })
            .collect();
        let messages = w.write(0, Some(&rows(&defs[0], &records))).expect("write");
        assert!(
            messages
                .iter()
                .all(|m| m.topic == "g.repartition.telemetry.rack")
        );
        let decoded = decode(&defs, &messages);
        assert!(decoded.dead.is_empty(), "{:?}", decoded.dead);
        let batch = decoded.batch.expect("rows back");
        assert_eq!(batch.num_rows(), records.len());
        let schema = batch.schema();
        let col = |name: &str| schema.index_of(name).expect(name);
        let racks = batch
            .column(col("rack"))
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("rack")
            .clone();
        let here = batch
            .column(col(PARTITION_COLUMN))
            .as_primitive::<Int32Type>()
            .clone();
        let up = batch
            .column(col(UP_PARTITION))
            .as_primitive::<Int32Type>()
            .clone();
        let up_off = batch
            .column(col(UP_OFFSET))
            .as_primitive::<Int64Type>()
            .clone();
        // One partition per rack; every row keeps where it came from.
        let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            let p = *partition_of
                .entry(racks.value(i).to_string())
                .or_insert(here.value(i));
            assert_eq!(p, here.value(i), "rack {} split", racks.value(i));
            let o = up_off.value(i);
            assert_eq!(up.value(i), (o % 3) as i32);
        }
        // Every partition heard from every upstream partition: rows or a
        // mark with its clock.
        for r in 0..4 {
            for u in 0..3 {
                let clock = decoded
                    .marks
                    .iter()
                    .filter(|m| m.partition == r && m.upstream == u)
                    .filter_map(|m| m.clock)
                    .max();
                let newest = records.iter().filter(|x| x.0 == u).map(|x| x.2).max();
                assert_eq!(clock, newest, "partition {r}, upstream {u}");
            }
        }
        // The same routing on another writer (another instance).
        let again = Writer::new(&defs, |_| 4, 1 << 20)
            .expect("writer")
            .write(0, Some(&rows(&defs[0], &records)))
            .expect("write");
        let key = |ms: &[Message]| {
            ms.iter()
                .map(|m| (m.partition, m.payload.len()))
                .collect::<Vec<_>>()
        };
        let (mut a, mut b) = (key(&messages), key(&again));
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }

    #[test]
    fn a_batch_whose_clock_did_not_move_sends_no_marks_and_a_drain_ends_every_partition() {
        let defs = defs();
        let mut w = Writer::new(&defs, |_| 4, 1 << 20).expect("writer");
        w.write(0, Some(&rows(&defs[0], &[(1, 0, 5_000, "r1")])))
            .expect("write");
        // An older row of the same rack: its partition gets the rows, the
        // others nothing (the clock stayed).
        let second = w
            .write(0, Some(&rows(&defs[0], &[(1, 1, 4_000, "r1")])))
            .expect("write");
        assert_eq!(second.len(), 1, "{second:?}");
        let end = decode(&defs, &w.drained(0, 1));
        assert_eq!(end.marks.len(), 4);
        assert!(
            end.marks
                .iter()
                .all(|m| m.end && m.upstream == 1 && m.clock == Some(5_000))
        );
        assert!(end.batch.is_none());
    }

    #[test]
    fn rows_beyond_the_message_limit_are_split_and_none_is_lost() {
        let defs = defs();
        let mut w = Writer::new(&defs, |_| 1, 2048).expect("writer");
        let records: Vec<(i32, i64, i64, &str)> = (0..500).map(|i| (0, i, i * 10, "r1")).collect();
        let messages = w.write(0, Some(&rows(&defs[0], &records))).expect("write");
        assert!(messages.len() > 1);
        assert!(
            messages.iter().all(|m| m.payload.len() <= 2048),
            "{:?}",
            messages.iter().map(|m| m.payload.len()).collect::<Vec<_>>()
        );
        assert_eq!(
            decode(&defs, &messages).batch.map(|b| b.num_rows()),
            Some(500)
        );
    }

    #[test]
    fn a_foreign_message_is_a_dead_letter() {
        let defs = defs();
        let decoded = decode(
            &defs,
            &[Message {
                topic: "x".into(),
                partition: 0,
                payload: b"{\"not\":\"ours\"}".to_vec(),
            }],
        );
        assert_eq!(decoded.dead.len(), 1);
        assert!(
            decoded.dead[0]
                .reason
                .to_string()
                .contains("not a telemine repartition message")
        );
    }

    #[test]
    fn topic_names_keep_to_what_kafka_allows() {
        assert_eq!(
            topic("telemine", "telemetry", &["dc".into(), "rack".into()]),
            "telemine.repartition.telemetry.dc-rack"
        );
        assert_eq!(topic("g", "s", &[]), "g.repartition.s.all");
        let odd = topic("g", "s", &["a b".into()]);
        assert!(odd.starts_with("g.repartition.s.a_b."), "{odd}");
        assert_ne!(odd, topic("g", "s", &["a/b".into()]));
    }
}
