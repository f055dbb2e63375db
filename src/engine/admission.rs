//! Admission: which rows of a source's batch may enter its windows.
//!
//! Per source it tracks, per Kafka partition, the newest event time seen,
//! how far the partition has been read, and (from a checkpoint, or from
//! an earlier assignment of the same partition) below which offset records
//! were read before. The source's watermark is the lowest newest-event-time
//! over the partitions that are not idle, minus `max_out_of_orderness`;
//! it never moves back. A row is admitted unless it is:
//! - **late**: older than the frontier (what every view of the source has
//!   closed, less what allowed lateness still reopens) and read for the
//!   first time — it goes to the late topic;
//! - **replayed**: older than the frontier but read before a restart or
//!   reassignment — skipped silently, unless a view rebuilds state from it
//!   (above the floor: HOP panes, open sessions);
//! - **a duplicate**: with `dedupe_by`, the same dedupe values and event
//!   time as a row already admitted into an open window.
//!
//! What the views need (the frontier and the floor) is the window engine's
//! to say; admission only applies it.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, PrimitiveArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
use datafusion::common::hash_utils::create_hashes_with_hasher;

use super::windows::{EngineError, SourceCounts};
use crate::config::SourceDef;

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

/// See the module docs.
pub(super) struct Admission {
    delay_ms: i64,
    /// Allowed lateness of closed windows, ms (0: none).
    pub(super) lateness_ms: i64,
    idle: Duration,
    /// Highest watermark so far: it never moves back.
    pub(super) watermark: Option<i64>,
    partitions: BTreeMap<i32, PartitionState>,
    /// Columns that, with event time, identify a duplicate (empty: off).
    dedupe: Vec<usize>,
    /// Row hashes of (dedupe columns, event time) seen in open windows, with
    /// their event time (for pruning and to rule out hash collisions).
    seen: HashMap<u64, i64>,
    hasher: RandomState,
    /// This source's share of the late and duplicate counters.
    pub(super) counts: SourceCounts,
    /// Per partition revoked from this run: the offset it had been read to.
    read_before: BTreeMap<i32, i64>,
}

/// What admission made of one batch: per row, whether it enters the
/// windows and whether it is late; the counts.
pub(super) struct Admitted {
    pub(super) keep: Vec<bool>,
    pub(super) is_late: Vec<bool>,
    pub(super) late: u64,
    pub(super) replayed: u64,
    pub(super) duplicates: u64,
}

impl Admission {
    pub(super) fn new(def: &SourceDef) -> Admission {
        let schema = def.schema.batch_schema();
        let dedupe = def
            .dedupe_by
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        Admission {
            delay_ms: def.max_out_of_orderness.as_millis() as i64,
            lateness_ms: def.allowed_lateness.as_millis() as i64,
            idle: def.idle_timeout,
            watermark: None,
            partitions: BTreeMap::new(),
            dedupe,
            seen: HashMap::new(),
            hasher: RandomState::new(),
            counts: SourceCounts::default(),
            read_before: BTreeMap::new(),
        }
    }

    /// The lowest newest-event-time over the partitions that are not idle,
    /// minus the allowed out-of-orderness. An active partition that has
    /// delivered nothing yet holds it back; when every partition is idle the
    /// newest event time seen anywhere counts.
    pub(super) fn current_watermark(&self, now: Instant) -> Option<i64> {
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

    /// Whether `partition` is held and has neither delivered nor been
    /// assigned within the idle timeout.
    pub(super) fn partition_idle(&self, partition: i32, now: Instant) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| now.saturating_duration_since(p.last_activity) >= self.idle)
    }

    /// Whether some partition has delivered or been assigned within the
    /// idle timeout.
    pub(super) fn any_active(&self, now: Instant) -> bool {
        self.partitions
            .values()
            .any(|p| now.saturating_duration_since(p.last_activity) < self.idle)
    }

    /// A partition's first rows are about to arrive: records below `next`
    /// (its checkpoint's) — or below how far an earlier assignment of it
    /// had read — were read before.
    pub(super) fn restore(&mut self, partition: i32, next: Option<i64>) {
        let p = self.partitions.entry(partition).or_default();
        if let Some(&read) = self.read_before.get(&partition) {
            p.replay_until = p.replay_until.max(read);
        }
        if let Some(next) = next {
            p.replay_until = p.replay_until.max(next);
        }
    }

    /// The consumer now owns exactly `partitions`; how far each revoked one
    /// had been read is remembered (see [`Admission::restore`]).
    pub(super) fn assign(&mut self, partitions: &[i32]) {
        for (p, ps) in &self.partitions {
            if !partitions.contains(p)
                && let Some(next) = ps.next_offset
            {
                let read = self.read_before.entry(*p).or_insert(next);
                *read = (*read).max(next);
            }
        }
        self.partitions.retain(|p, _| partitions.contains(p));
        for p in partitions {
            self.partitions.entry(*p).or_default();
        }
    }

    /// Records how far each partition has been read (including records
    /// that decoded to nothing).
    pub(super) fn note_consumed(&mut self, consumed: &[(i32, i64)]) {
        for &(p, next) in consumed {
            let e = self.partitions.entry(p).or_default();
            e.next_offset = Some(e.next_offset.map_or(next, |x| x.max(next)));
        }
    }

    /// The partitions held, with the offset after the last record read.
    pub(super) fn read_to(&self) -> impl Iterator<Item = (i32, Option<i64>)> + '_ {
        self.partitions.iter().map(|(&p, s)| (p, s.next_offset))
    }

    /// Whether the record at `offset` of `partition` is read for the first
    /// time (not a replay of one read before a restart).
    pub(super) fn fresh(&self, partition: i32, offset: i64) -> bool {
        offset
            >= self
                .partitions
                .get(&partition)
                .map_or(0, |s| s.replay_until)
    }

    /// Judges each row of a batch against `frontier` (rows below it are
    /// late or replayed) and `floor` (replayed rows at or above it are
    /// still needed), drops duplicates, and advances the partitions' event
    /// times. `columns`: the batch's event-time, partition and offset
    /// columns.
    pub(super) fn admit(
        &mut self,
        batch: &RecordBatch,
        (ts, parts, offs): (
            &PrimitiveArray<TimestampMillisecondType>,
            &PrimitiveArray<Int32Type>,
            &PrimitiveArray<Int64Type>,
        ),
        ts_index: usize,
        frontier: Option<i64>,
        floor: Option<i64>,
    ) -> Result<Admitted, EngineError> {
        let n = batch.num_rows();
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
                        self.bump(lp, lt);
                    }
                    last = Some((p, t));
                }
            }
            let mut ok = frontier.is_none_or(|f| t >= f);
            if !ok {
                if self.fresh(p, offs.value(i)) {
                    late += 1;
                    is_late.push(true);
                } else {
                    // Read before the restart: skipped, unless a view
                    // rebuilds state from it (HOP panes, open sessions).
                    ok = floor.is_some_and(|f| t >= f);
                    if !ok {
                        replayed += 1;
                    }
                    is_late.push(false);
                }
            } else {
                is_late.push(false);
            }
            keep.push(ok);
        }
        if let Some((lp, lt)) = last {
            self.bump(lp, lt);
        }
        // Duplicates: the same dedupe values and event time as a row already
        // in an open window (or earlier in this batch).
        let mut duplicates = 0u64;
        if !self.dedupe.is_empty() {
            let mut cols: Vec<ArrayRef> = self
                .dedupe
                .iter()
                .map(|&i| batch.column(i).clone())
                .collect();
            cols.push(batch.column(ts_index).clone());
            let mut hashes = vec![0u64; n];
            create_hashes_with_hasher(&cols, &self.hasher, &mut hashes)
                .map_err(|e| EngineError::Internal(format!("hashing dedupe columns: {e}")))?;
            for (i, h) in hashes.iter().enumerate() {
                if keep[i] && self.seen.insert(*h, ts.value(i)) == Some(ts.value(i)) {
                    keep[i] = false;
                    duplicates += 1;
                }
            }
        }
        self.counts.late += late;
        self.counts.duplicates += duplicates;
        Ok(Admitted {
            keep,
            is_late,
            late,
            replayed,
            duplicates,
        })
    }

    /// Forgets the dedupe hashes of rows below `floor` (their windows are
    /// gone).
    pub(super) fn forget_before(&mut self, floor: i64) {
        self.seen.retain(|_, t| *t >= floor);
    }

    fn bump(&mut self, p: i32, t: i64) {
        let e = self.partitions.entry(p).or_default();
        e.max_ts = Some(e.max_ts.map_or(t, |m| m.max(t)));
        e.last_activity = Instant::now();
    }
}
