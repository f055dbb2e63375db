//! Event-time tumbling windows over decoded batches.
//!
//! Per source the engine buffers rows and tracks, per Kafka partition, the
//! highest event time seen. The source's watermark is the lowest of those
//! minus the source's `max_out_of_orderness`. Each feature view closes its
//! windows when the watermark reaches their end: the rows of every newly
//! closed window go to the view's SQL in one evaluation, then the rules
//! that read the view run over its output. A window is evaluated exactly
//! once; rows older than the earliest open window of their source are late
//! and are counted, not buffered.
//!
//! Invariants:
//! - every timestamp here is event time, ms since the epoch, UTC;
//! - `closed_until` of a view only grows, and no row below it reaches the
//!   view again;
//! - the buffer of a source holds exactly the rows some view still needs.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, AsArray, BooleanArray, RecordBatch, TimestampMillisecondArray,
};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
use datafusion::common::hash_utils::create_hashes_with_hasher;
use telemine_connectors::schema::{OFFSET_COLUMN, PARTITION_COLUMN};
use thiserror::Error;

use super::checkpoint::Checkpoint;
use crate::alert::{Alert, alerts_from_batches};
use crate::config::SourceDef;
use crate::metrics::Metrics;
use crate::sql::SqlSet;

/// An error of the engine itself (not of one view or rule, which are logged
/// and counted and do not stop the stream).
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("internal error (a bug in telemine, please report it): {0}")]
    Internal(String),
}

#[derive(Debug, Clone)]
struct PartitionState {
    max_ts: Option<i64>,
    /// Offset after the last record consumed.
    next_offset: Option<i64>,
    /// Offsets below this were read before a restart (from the checkpoint).
    replay_until: i64,
    /// When the partition was assigned or last delivered rows.
    last_activity: Instant,
}

impl Default for PartitionState {
    fn default() -> Self {
        PartitionState {
            max_ts: None,
            next_offset: None,
            replay_until: 0,
            last_activity: Instant::now(),
        }
    }
}

struct SourceState {
    name: String,
    delay_ms: i64,
    idle: Duration,
    /// Highest watermark so far: it never moves back.
    watermark: Option<i64>,
    ts_index: usize,
    partition_index: usize,
    offset_index: usize,
    partitions: BTreeMap<i32, PartitionState>,
    buffer: Vec<RecordBatch>,
    views: Vec<usize>,
    /// Columns that, with event time, identify a duplicate (empty: off).
    dedupe: Vec<usize>,
    /// Row hashes of (dedupe columns, event time) seen in open windows, with
    /// their event time (for pruning and to rule out hash collisions).
    seen: HashMap<u64, i64>,
    /// Late rows not yet taken by the pipeline.
    late: Vec<LateRows>,
    /// This source's share of the late and duplicate counters.
    counts: SourceCounts,
}

/// Per-source counts of rows that did not reach a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounts {
    pub late: u64,
    pub duplicates: u64,
}

/// Rows of one source that arrived after every window they could count in
/// had closed: they go to the late-records topic.
#[derive(Debug, Clone)]
pub struct LateRows {
    pub source: usize,
    /// In the source's batch schema (with `_partition`, `_offset`).
    pub rows: RecordBatch,
    /// Per row: how far behind the earliest open window it was, in ms.
    pub lateness_ms: Vec<i64>,
}

impl SourceState {
    /// The lowest newest-event-time over the partitions that are not idle,
    /// minus the allowed out-of-orderness. An active partition that has
    /// delivered nothing yet holds it back; when every partition is idle the
    /// newest event time seen anywhere counts.
    fn current_watermark(&self, now: Instant) -> Option<i64> {
        let (mut active, mut lowest, mut newest) = (false, None::<i64>, None::<i64>);
        for p in self.partitions.values() {
            if let Some(t) = p.max_ts {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            if now.saturating_duration_since(p.last_activity) < self.idle {
                active = true;
                let t = p.max_ts?;
                lowest = Some(lowest.map_or(t, |l| l.min(t)));
            }
        }
        let t = if active { lowest } else { newest }?;
        let wm = t - self.delay_ms;
        Some(self.watermark.map_or(wm, |w| w.max(wm)))
    }
}

/// See the module docs.
pub struct WindowEngine {
    sql: SqlSet,
    sources: Vec<SourceState>,
    /// Per view: end of the last closed window.
    closed_until: Vec<Option<i64>>,
    metrics: Arc<Metrics>,
    hasher: RandomState,
}

impl WindowEngine {
    pub fn new(sql: SqlSet, sources: &[SourceDef], metrics: Arc<Metrics>) -> Self {
        let states = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let schema = s.schema.batch_schema();
                SourceState {
                    name: s.name.clone(),
                    delay_ms: s.max_out_of_orderness.as_millis() as i64,
                    idle: s.idle_timeout,
                    watermark: None,
                    ts_index: s.schema.event_time_index(),
                    partition_index: schema
                        .index_of(PARTITION_COLUMN)
                        .unwrap_or(schema.fields().len() - 2),
                    offset_index: schema
                        .index_of(OFFSET_COLUMN)
                        .unwrap_or(schema.fields().len() - 1),
                    partitions: BTreeMap::new(),
                    buffer: Vec::new(),
                    dedupe: s
                        .dedupe_by
                        .iter()
                        .filter_map(|c| schema.index_of(c).ok())
                        .collect(),
                    seen: HashMap::new(),
                    late: Vec::new(),
                    counts: SourceCounts::default(),
                    views: sql
                        .views
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.source == i)
                        .map(|(vi, _)| vi)
                        .collect(),
                }
            })
            .collect();
        let closed_until = vec![None; sql.views.len()];
        WindowEngine {
            sql,
            sources: states,
            closed_until,
            metrics,
            hasher: RandomState::new(),
        }
    }

    /// Restores a partition's checkpoint before its first rows arrive.
    pub fn restore(&mut self, source: usize, partition: i32, checkpoint: Option<&Checkpoint>) {
        let Some(state) = self.sources.get_mut(source) else {
            return;
        };
        let p = state.partitions.entry(partition).or_default();
        let Some(c) = checkpoint else { return };
        p.replay_until = p.replay_until.max(c.next);
        for &vi in &state.views {
            if let Some(&closed) = c.closed.get(&self.sql.views[vi].name) {
                let cur = &mut self.closed_until[vi];
                *cur = Some(cur.map_or(closed, |x| x.max(closed)));
            }
        }
    }

    /// The consumer now owns exactly `partitions` of `source`. New ones hold
    /// the watermark back until they deliver or go idle; rows of revoked ones
    /// are dropped (their new owner re-reads them from the committed offset).
    pub fn assign(&mut self, source: usize, partitions: &[i32]) -> Result<(), EngineError> {
        let Some(state) = self.sources.get_mut(source) else {
            return Ok(());
        };
        state.partitions.retain(|p, _| partitions.contains(p));
        for p in partitions {
            state.partitions.entry(*p).or_default();
        }
        let idx = state.partition_index;
        retain_rows(&mut state.buffer, |b| {
            let parts = b.column(idx).as_primitive::<Int32Type>();
            parts
                .values()
                .iter()
                .map(|p| Some(partitions.contains(p)))
                .collect()
        })
    }

    /// Closes windows that time alone allows: partitions that went idle no
    /// longer hold the watermark back. Call periodically.
    pub async fn tick(&mut self) -> Result<Vec<Alert>, EngineError> {
        let mut alerts = Vec::new();
        for s in 0..self.sources.len() {
            alerts.extend(self.close_ready(s, false).await?);
        }
        Ok(alerts)
    }

    /// Records how far each partition has been read (including records
    /// that decoded to nothing).
    pub fn note_consumed(&mut self, source: usize, consumed: &[(i32, i64)]) {
        if let Some(state) = self.sources.get_mut(source) {
            for &(p, next) in consumed {
                let e = state.partitions.entry(p).or_default();
                e.next_offset = Some(e.next_offset.map_or(next, |x| x.max(next)));
            }
        }
    }

    /// Takes a decoded batch of `source`, then closes every window the
    /// advanced watermark allows. Returns the alerts those windows raised.
    pub async fn ingest(
        &mut self,
        source: usize,
        batch: RecordBatch,
    ) -> Result<Vec<Alert>, EngineError> {
        self.accept(source, batch)?;
        self.close_ready(source, false).await
    }

    /// End of input: closes every open window of every source.
    pub async fn finish(&mut self) -> Result<Vec<Alert>, EngineError> {
        let mut alerts = Vec::new();
        for s in 0..self.sources.len() {
            alerts.extend(self.close_ready(s, true).await?);
        }
        Ok(alerts)
    }

    /// Late and duplicate counts per source, by source name.
    pub fn source_counts(&self) -> Vec<(String, SourceCounts)> {
        self.sources
            .iter()
            .map(|s| (s.name.clone(), s.counts.clone()))
            .collect()
    }

    /// Takes the late rows gathered since the last call.
    pub fn take_late(&mut self) -> Vec<LateRows> {
        self.sources
            .iter_mut()
            .flat_map(|s| std::mem::take(&mut s.late))
            .collect()
    }

    /// The source's current watermark, if it has one.
    pub fn watermark(&self, source: usize) -> Option<i64> {
        self.sources
            .get(source)
            .and_then(|s| s.current_watermark(Instant::now()))
    }

    /// What may be committed now for each partition of `source`: the lowest
    /// offset still buffered (else the next offset to read) and the
    /// checkpoint that goes with it.
    pub fn commit_positions(&self, source: usize) -> Vec<(i32, i64, Checkpoint)> {
        let Some(state) = self.sources.get(source) else {
            return Vec::new();
        };
        let mut lowest: BTreeMap<i32, i64> = BTreeMap::new();
        for b in &state.buffer {
            let parts = b.column(state.partition_index).as_primitive::<Int32Type>();
            let offs = b.column(state.offset_index).as_primitive::<Int64Type>();
            for (p, o) in parts.values().iter().zip(offs.values().iter()) {
                let e = lowest.entry(*p).or_insert(*o);
                if *o < *e {
                    *e = *o;
                }
            }
        }
        let closed: BTreeMap<String, i64> = state
            .views
            .iter()
            .filter_map(|&vi| self.closed_until[vi].map(|c| (self.sql.views[vi].name.clone(), c)))
            .collect();
        state
            .partitions
            .iter()
            .filter_map(|(&p, ps)| {
                let next = ps.next_offset?;
                let offset = lowest.get(&p).copied().map_or(next, |l| l.min(next));
                Some((
                    p,
                    offset,
                    Checkpoint {
                        v: Checkpoint::VERSION,
                        next,
                        closed: closed.clone(),
                    },
                ))
            })
            .collect()
    }

    /// The start of the earliest open window over all views of a source:
    /// rows below it cannot count anywhere.
    fn frontier(&self, source: usize) -> Option<i64> {
        let views = &self.sources[source].views;
        if views.iter().any(|&vi| self.closed_until[vi].is_none()) {
            return None;
        }
        views.iter().filter_map(|&vi| self.closed_until[vi]).min()
    }

    /// Drops late and replayed rows, advances partition event times, buffers
    /// the rest.
    fn accept(&mut self, source: usize, batch: RecordBatch) -> Result<(), EngineError> {
        let frontier = self.frontier(source);
        let state = self
            .sources
            .get_mut(source)
            .ok_or_else(|| EngineError::Internal(format!("no source #{source}")))?;
        let n = batch.num_rows();
        Metrics::add(&self.metrics.records_decoded, n as u64);
        let ts = batch
            .column(state.ts_index)
            .as_primitive_opt::<TimestampMillisecondType>()
            .ok_or_else(|| {
                EngineError::Internal(format!(
                    "source `{}`: event time is not a timestamp column",
                    state.name
                ))
            })?;
        let parts = batch
            .column(state.partition_index)
            .as_primitive::<Int32Type>();
        let offs = batch.column(state.offset_index).as_primitive::<Int64Type>();
        let (mut late, mut replayed) = (0u64, 0u64);
        let mut keep = Vec::with_capacity(n);
        let mut is_late = Vec::with_capacity(n);
        let mut last: Option<(i32, i64)> = None;
        for i in 0..n {
            let t = ts.value(i);
            let p = parts.value(i);
            // Per-row partition bookkeeping, batched over runs of one partition.
            match &mut last {
                Some((lp, lt)) if *lp == p => *lt = (*lt).max(t),
                _ => {
                    if let Some((lp, lt)) = last.take() {
                        bump(&mut state.partitions, lp, lt);
                    }
                    last = Some((p, t));
                }
            }
            let ok = frontier.is_none_or(|f| t >= f);
            if !ok {
                let replay_until = state.partitions.get(&p).map_or(0, |s| s.replay_until);
                if offs.value(i) < replay_until {
                    replayed += 1;
                    is_late.push(false);
                } else {
                    late += 1;
                    is_late.push(true);
                }
            } else {
                is_late.push(false);
            }
            keep.push(ok);
        }
        if let Some((lp, lt)) = last {
            bump(&mut state.partitions, lp, lt);
        }
        // Duplicates: the same dedupe values and event time as a row already
        // in an open window (or earlier in this batch).
        let mut duplicates = 0u64;
        if !state.dedupe.is_empty() {
            let mut cols: Vec<ArrayRef> = state
                .dedupe
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            cols.push(batch.column(state.ts_index).clone());
            let mut hashes = vec![0u64; n];
            create_hashes_with_hasher(&cols, &self.hasher, &mut hashes)
                .map_err(|e| EngineError::Internal(format!("hashing dedupe columns: {e}")))?;
            for (i, h) in hashes.iter().enumerate() {
                if keep[i] && state.seen.insert(*h, ts.value(i)) == Some(ts.value(i)) {
                    keep[i] = false;
                    duplicates += 1;
                }
            }
        }
        Metrics::add(&self.metrics.late_records, late);
        Metrics::add(&self.metrics.replayed_skipped, replayed);
        Metrics::add(&self.metrics.duplicates_dropped, duplicates);
        state.counts.late += late;
        state.counts.duplicates += duplicates;
        if late > 0 {
            let rows = filter_record_batch(&batch, &BooleanArray::from(is_late))
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            let f = frontier.unwrap_or_default();
            let lateness_ms = rows
                .column(state.ts_index)
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .iter()
                .map(|t| f - t)
                .collect();
            state.late.push(LateRows {
                source,
                rows,
                lateness_ms,
            });
        }
        let batch = if late + replayed + duplicates == 0 {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::from(keep))
                .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        if batch.num_rows() > 0 {
            state.buffer.push(batch);
        }
        Ok(())
    }

    /// Closes the windows of `source`'s views that the watermark has passed
    /// (all of them with `all`), runs their SQL and the rules over it.
    async fn close_ready(&mut self, source: usize, all: bool) -> Result<Vec<Alert>, EngineError> {
        let Some(wm) = (if all {
            Some(i64::MAX)
        } else {
            self.watermark(source)
        }) else {
            return Ok(Vec::new());
        };
        if !all {
            self.sources[source].watermark = Some(wm);
        }
        let mut updated = Vec::new();
        let mut closed_any = false;
        for vi in self.sources[source].views.clone() {
            let view = &self.sql.views[vi];
            let size = view.window.size_ms;
            let lo = self.closed_until[vi];
            let hi = if all {
                // Close through the window of the newest buffered row.
                match max_ts(&self.sources[source]) {
                    Some(t) => view.window.start_of(t) + size,
                    None => continue,
                }
            } else {
                view.window.start_of(wm)
            };
            if lo.is_some_and(|lo| hi <= lo) {
                continue;
            }
            let input = window_rows(&self.sources[source], lo, hi, size, &view.input_schema)?;
            self.closed_until[vi] = Some(hi);
            closed_any = true;
            if input.is_empty() {
                continue;
            }
            Metrics::add(&self.metrics.window_closes, 1);
            match self.sql.run_view(vi, input).await {
                Ok(out) if out.is_empty() => {}
                Ok(_) => updated.push(vi),
                Err(e) => {
                    let what = count_failure(&self.metrics, &e);
                    tracing::error!(view = %view.name, file = %view.file.display(), error = %e.strip_backtrace(), "feature view {what}; its windows are skipped");
                }
            }
        }
        let mut alerts = Vec::new();
        if !updated.is_empty() {
            for (ri, rule) in self.sql.rules.iter().enumerate() {
                if !rule.views.iter().any(|v| updated.contains(v)) {
                    continue;
                }
                match self.sql.run_rule(ri).await {
                    Ok(batches) => alerts.extend(alerts_from_batches(rule, &batches)),
                    Err(e) => {
                        let what = count_failure(&self.metrics, &e);
                        tracing::error!(rule = %rule.name, file = %rule.file.display(), error = %e.strip_backtrace(), "rule {what}; its alerts for these windows are lost");
                    }
                }
            }
            self.sql.clear_views().await;
        }
        if closed_any {
            self.prune(source)?;
        }
        Metrics::add(&self.metrics.alerts, alerts.len() as u64);
        Ok(alerts)
    }

    /// Drops buffered rows no view needs any more.
    fn prune(&mut self, source: usize) -> Result<(), EngineError> {
        let Some(frontier) = self.frontier(source) else {
            return Ok(());
        };
        let state = &mut self.sources[source];
        state.seen.retain(|_, t| *t >= frontier);
        let idx = state.ts_index;
        retain_rows(&mut state.buffer, |b| {
            let ts = b.column(idx).as_primitive::<TimestampMillisecondType>();
            ts.values().iter().map(|&t| Some(t >= frontier)).collect()
        })
    }
}

/// Counts a failed view or rule evaluation (and whether it was its memory
/// limit); returns what happened, for the log line.
fn count_failure(metrics: &Metrics, e: &datafusion::error::DataFusionError) -> &'static str {
    Metrics::add(&metrics.sql_errors, 1);
    if crate::sql::is_memory_exceeded(e) {
        Metrics::add(&metrics.sql_memory_exceeded, 1);
        "exceeded engine.query_memory_limit (raise the limit, or make the query hold less: fewer groups, smaller aggregates)"
    } else {
        "failed"
    }
}

/// Keeps the rows of `buffer` that `keep` selects, batch by batch: a batch
/// kept whole is not copied, one kept in part is filtered, an empty one is
/// dropped.
fn retain_rows(
    buffer: &mut Vec<RecordBatch>,
    keep: impl Fn(&RecordBatch) -> BooleanArray,
) -> Result<(), EngineError> {
    let mut kept = Vec::with_capacity(buffer.len());
    for b in buffer.drain(..) {
        let mask = keep(&b);
        match mask.true_count() {
            0 => {}
            n if n == b.num_rows() => kept.push(b),
            _ => kept.push(
                filter_record_batch(&b, &mask).map_err(|e| EngineError::Internal(e.to_string()))?,
            ),
        }
    }
    *buffer = kept;
    Ok(())
}

fn bump(partitions: &mut BTreeMap<i32, PartitionState>, p: i32, t: i64) {
    let e = partitions.entry(p).or_default();
    e.max_ts = Some(e.max_ts.map_or(t, |m| m.max(t)));
    e.last_activity = Instant::now();
}

fn max_ts(state: &SourceState) -> Option<i64> {
    state
        .buffer
        .iter()
        .filter_map(|b| {
            let ts = b
                .column(state.ts_index)
                .as_primitive::<TimestampMillisecondType>();
            ts.values().iter().max().copied()
        })
        .max()
}

/// The buffered rows with `lo <= ts < hi`, with `window_start` and
/// `window_end` appended, in the view's input schema.
fn window_rows(
    state: &SourceState,
    lo: Option<i64>,
    hi: i64,
    size: i64,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> Result<Vec<RecordBatch>, EngineError> {
    let mut out = Vec::new();
    for b in &state.buffer {
        let ts = b
            .column(state.ts_index)
            .as_primitive::<TimestampMillisecondType>();
        let keep: BooleanArray = ts
            .values()
            .iter()
            .map(|&t| Some(lo.is_none_or(|lo| t >= lo) && t < hi))
            .collect();
        let rows = match keep.true_count() {
            0 => continue,
            n if n == b.num_rows() => b.clone(),
            _ => filter_record_batch(b, &keep).map_err(|e| EngineError::Internal(e.to_string()))?,
        };
        let ts = rows
            .column(state.ts_index)
            .as_primitive::<TimestampMillisecondType>();
        let starts: TimestampMillisecondArray = ts
            .values()
            .iter()
            .map(|&t| Some(t - t.rem_euclid(size)))
            .collect();
        let ends: TimestampMillisecondArray =
            starts.values().iter().map(|&s| Some(s + size)).collect();
        let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
        columns.push(Arc::new(starts));
        columns.push(Arc::new(ends));
        let batch = RecordBatch::try_new(schema.clone(), columns)
            .map_err(|e| EngineError::Internal(format!("window input: {e}")))?;
        out.push(batch);
    }
    Ok(out)
}
