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
//!
//! A source derived through a repartition topic (`repartition.rs`) is
//! admitted the same way, with two differences. Its watermark follows the
//! upstream partitions, not the rows: per partition of the repartition
//! topic, the lowest clock the upstream partitions that are neither idle
//! nor ended have sent there ([`Upstreams`]); so a partition gets the
//! watermark one instance reading every upstream partition would have.
//! And a row is identified by its upstream partition and offset: a copy
//! (written again after an upstream instance re-read its input) is never
//! fresh and never admitted twice into an open window.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, PrimitiveArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
use datafusion::common::hash_utils::create_hashes_with_hasher;

use telemine_sql::source::SourceDef;
use telemine_types::error::EngineError;

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

/// Per-source counts of rows that did not reach a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounts {
    pub late: u64,
    pub duplicates: u64,
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
    /// A derived source's upstream partitions (see the module docs).
    upstream: Option<Upstreams>,
    /// A derived source: (partition, upstream partition, upstream offset)
    /// of the rows in open windows, with their event time (for pruning).
    seen_ids: HashMap<(i32, i32, i64), i64>,
}

/// For a derived source: per partition of its repartition topic, what
/// each upstream partition has said there.
#[derive(Debug, Default)]
pub(super) struct Upstreams {
    /// How many upstream partitions there are.
    count: i32,
    by: BTreeMap<i32, BTreeMap<i32, UpState>>,
}

/// One upstream partition, as seen on one repartition partition.
#[derive(Debug, Clone)]
struct UpState {
    /// Newest event time it had read (its marks').
    clock: Option<i64>,
    /// Its offset after the last row of it taken here.
    next: i64,
    /// When it last sent something here (or the partition was assigned).
    last: Instant,
    /// It was read to its end (a drain): nothing more follows.
    end: bool,
}

impl UpState {
    fn new(now: Instant) -> UpState {
        UpState {
            clock: None,
            next: 0,
            last: now,
            end: false,
        }
    }
}

/// What a derived source's checkpoint keeps per upstream partition:
/// (offset after its last row taken, its clock).
pub type UpstreamPositions = BTreeMap<i32, (i64, Option<i64>)>;

/// What admission made of one batch: per row, whether it enters the
/// windows and whether it is late; the counts.
pub(super) struct Admitted {
    pub(super) keep: Vec<bool>,
    pub(super) is_late: Vec<bool>,
    pub(super) late: u64,
    pub(super) replayed: u64,
    pub(super) duplicates: u64,
    /// Per row: read for the first time (not a replay, not a copy).
    pub(super) fresh: Vec<bool>,
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
            upstream: def.derived.as_ref().map(|d| Upstreams {
                count: d.upstream_partitions.max(1),
                by: BTreeMap::new(),
            }),
            seen_ids: HashMap::new(),
        }
    }

    /// Whether this is a derived source's admission.
    pub(super) fn is_derived(&self) -> bool {
        self.upstream.is_some()
    }

    /// A partition as the watermark sees it: its newest event time and
    /// whether it is active (not idle). A derived source's partition
    /// takes the lowest clock over its active upstream partitions (none
    /// while one of them has sent none), or when none is active the
    /// newest.
    fn view_of(&self, partition: i32, p: &PartitionState, now: Instant) -> (Option<i64>, bool) {
        let Some(ups) = self.upstream.as_ref().and_then(|u| u.by.get(&partition)) else {
            return (
                p.max_ts,
                now.saturating_duration_since(p.last_activity) < self.idle,
            );
        };
        let live = |u: &&UpState| !u.end && now.saturating_duration_since(u.last) < self.idle;
        if ups.values().any(|u| live(&u)) {
            let mut lowest: Option<i64> = None;
            for u in ups.values().filter(live) {
                let c = match u.clock {
                    Some(c) => c,
                    None => return (None, true),
                };
                lowest = Some(lowest.map_or(c, |l| l.min(c)));
            }
            (lowest, true)
        } else {
            (ups.values().filter_map(|u| u.clock).max(), false)
        }
    }

    /// A derived source: takes the upstream progress read.
    pub(super) fn note_marks(&mut self, marks: &[telemine_codec::decode::UpstreamMark]) {
        let Some(up) = self.upstream.as_mut() else {
            return;
        };
        let now = Instant::now();
        for m in marks {
            let ups = up.by.entry(m.partition).or_default();
            let st = ups.entry(m.upstream).or_insert_with(|| UpState::new(now));
            if let Some(c) = m.clock {
                st.clock = Some(st.clock.map_or(c, |x| x.max(c)));
            }
            st.last = now;
            st.end |= m.end;
        }
    }

    /// A derived source: the partitions every upstream partition has
    /// said its end to.
    pub(super) fn complete(&self) -> Vec<i32> {
        let Some(up) = &self.upstream else {
            return Vec::new();
        };
        up.by
            .iter()
            .filter(|(_, ups)| (0..up.count).all(|u| ups.get(&u).is_some_and(|s| s.end)))
            .map(|(&p, _)| p)
            .collect()
    }

    /// A derived source: what `partition`'s checkpoint keeps of its
    /// upstream partitions.
    pub(super) fn upstream_positions(&self, partition: i32) -> UpstreamPositions {
        self.upstream
            .as_ref()
            .and_then(|u| u.by.get(&partition))
            .map(|ups| {
                ups.iter()
                    .filter(|(_, s)| s.next > 0 || s.clock.is_some())
                    .map(|(&u, s)| (u, (s.next, s.clock)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The lowest newest-event-time over the partitions that are not idle,
    /// minus the allowed out-of-orderness. An active partition that has
    /// delivered nothing yet holds it back; when every partition is idle the
    /// newest event time seen anywhere counts.
    pub(super) fn current_watermark(&self, now: Instant) -> Option<i64> {
        let (mut active, mut lowest, mut newest) = (false, None::<i64>, None::<i64>);
        for (&partition, p) in &self.partitions {
            let (max_ts, live) = self.view_of(partition, p, now);
            if let Some(t) = max_ts {
                newest = Some(newest.map_or(t, |n| n.max(t)));
            }
            if live {
                active = true;
                let t = max_ts?;
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
            .is_some_and(|p| !self.view_of(partition, p, now).1)
    }

    /// Whether some partition has delivered or been assigned within the
    /// idle timeout.
    pub(super) fn any_active(&self, now: Instant) -> bool {
        self.partitions
            .iter()
            .any(|(&partition, p)| self.view_of(partition, p, now).1)
    }

    /// A partition's first rows are about to arrive: records below `next`
    /// (its checkpoint's) — or below how far an earlier assignment of it
    /// had read — were read before.
    pub(super) fn restore(
        &mut self,
        partition: i32,
        next: Option<i64>,
        upstream: Option<&UpstreamPositions>,
    ) {
        let p = self.partitions.entry(partition).or_default();
        if let Some(&read) = self.read_before.get(&partition) {
            p.replay_until = p.replay_until.max(read);
        }
        if let Some(next) = next {
            p.replay_until = p.replay_until.max(next);
        }
        if let (Some(up), Some(saved)) = (self.upstream.as_mut(), upstream) {
            let now = Instant::now();
            let ups = up.by.entry(partition).or_default();
            for (&u, &(next, clock)) in saved {
                let st = ups.entry(u).or_insert_with(|| UpState::new(now));
                st.next = st.next.max(next);
                if let Some(c) = clock {
                    st.clock = Some(st.clock.map_or(c, |x| x.max(c)));
                }
            }
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
        self.seen_ids.retain(|(p, _, _), _| partitions.contains(p));
        if let Some(up) = self.upstream.as_mut() {
            let now = Instant::now();
            up.by.retain(|p, _| partitions.contains(p));
            for p in partitions {
                let ups = up.by.entry(*p).or_default();
                for u in 0..up.count {
                    ups.entry(u).or_insert_with(|| UpState::new(now));
                }
            }
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
        upstream: Option<(&PrimitiveArray<Int32Type>, &PrimitiveArray<Int64Type>)>,
    ) -> Result<Admitted, EngineError> {
        let n = batch.num_rows();
        let (mut late, mut replayed) = (0u64, 0u64);
        let mut keep = Vec::with_capacity(n);
        let mut is_late = Vec::with_capacity(n);
        let mut fresh = Vec::with_capacity(n);
        let mut last: Option<(i32, i64)> = None;
        let derived = self.upstream.is_some();
        for i in 0..n {
            let t = ts.value(i);
            let p = parts.value(i);
            // Per-row partition bookkeeping, batched over runs of one
            // partition (a derived source's watermark follows its marks).
            match &mut last {
                _ if derived => {}
                Some((lp, lt)) if *lp == p => *lt = (*lt).max(t),
                _ => {
                    if let Some((lp, lt)) = last.take() {
                        self.bump(lp, lt);
                    }
                    last = Some((p, t));
                }
            }
            let mut first = self.fresh(p, offs.value(i));
            let mut copy = false;
            if let (Some((ups, upo)), Some(up)) = (upstream, self.upstream.as_mut()) {
                let (u, o) = (ups.value(i), upo.value(i));
                let now = Instant::now();
                let st = up
                    .by
                    .entry(p)
                    .or_default()
                    .entry(u)
                    .or_insert_with(|| UpState::new(now));
                first &= o >= st.next;
                st.next = st.next.max(o + 1);
                copy =
                    frontier.is_none_or(|f| t >= f) && self.seen_ids.insert((p, u, o), t).is_some();
            }
            fresh.push(first);
            if copy {
                replayed += 1;
                is_late.push(false);
                keep.push(false);
                continue;
            }
            let mut ok = frontier.is_none_or(|f| t >= f);
            if !ok {
                if first {
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
            fresh,
        })
    }

    /// Forgets the dedupe hashes of rows below `floor` (their windows are
    /// gone).
    pub(super) fn forget_before(&mut self, floor: i64) {
        self.seen.retain(|_, t| *t >= floor);
        self.seen_ids.retain(|_, t| *t >= floor);
    }

    fn bump(&mut self, p: i32, t: i64) {
        let e = self.partitions.entry(p).or_default();
        e.max_ts = Some(e.max_ts.map_or(t, |m| m.max(t)));
        e.last_activity = Instant::now();
    }
}

#[cfg(test)]
mod tests {

    use datafusion::arrow::array::{
        Float64Array, Int32Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use telemine_codec::decode::UpstreamMark;

    use std::sync::Arc;

    use super::*;
    use telemine_sql::source::Derived;

    /// A derived source over 2 upstream partitions, 5 s out of order.
    fn derived() -> SourceDef {
        let mut d = SourceDef::for_tests(&["rack string", "cpu double"], &[]);
        d.derived = Some(Derived {
            from: 0,
            by: vec!["rack".into()],
            upstream_partitions: 2,
        });
        d
    }

    fn mark(upstream: i32, clock: i64, end: bool) -> UpstreamMark {
        UpstreamMark {
            partition: 0,
            offset: 0,
            upstream,
            clock: Some(clock),
            end,
        }
    }

    /// Admits rows (event time, upstream partition, upstream offset) read
    /// at `offset` of partition 0, against `frontier`.
    fn admit(
        a: &mut Admission,
        rows: &[(i64, i32, i64)],
        offset: i64,
        frontier: Option<i64>,
    ) -> Admitted {
        let n = rows.len();
        let ts = TimestampMillisecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let parts = Int32Array::from(vec![0; n]);
        let offs = Int64Array::from(vec![offset; n]);
        let ups = Int32Array::from(rows.iter().map(|r| r.1).collect::<Vec<_>>());
        let upo = Int64Array::from(rows.iter().map(|r| r.2).collect::<Vec<_>>());
        let batch = RecordBatch::try_from_iter([
            ("ts", Arc::new(ts.clone()) as ArrayRef),
            (
                "rack",
                Arc::new(StringArray::from(vec!["r1"; n])) as ArrayRef,
            ),
            (
                "cpu",
                Arc::new(Float64Array::from(vec![1.0; n])) as ArrayRef,
            ),
        ])
        .expect("batch");
        a.admit(
            &batch,
            (&ts, &parts, &offs),
            0,
            frontier,
            None,
            Some((&ups, &upo)),
        )
        .expect("admit")
    }

    #[test]
    fn a_derived_watermark_is_the_lowest_clock_of_the_live_upstream_partitions() {
        let mut a = Admission::new(&derived());
        a.assign(&[0]);
        let now = Instant::now();
        assert_eq!(
            a.current_watermark(now),
            None,
            "no upstream partition has spoken"
        );
        a.note_marks(&[mark(0, 60_000, false)]);
        assert_eq!(a.current_watermark(now), None, "upstream 1 still holds it");
        a.note_marks(&[mark(1, 30_000, false)]);
        assert_eq!(a.current_watermark(now), Some(25_000));
        // Rows never move it: their upstream partitions' marks do.
        admit(&mut a, &[(90_000, 1, 0)], 0, None);
        assert_eq!(a.current_watermark(now), Some(25_000));
        // An ended upstream partition no longer holds it back.
        a.note_marks(&[mark(1, 30_000, true)]);
        assert_eq!(a.current_watermark(now), Some(55_000));
        assert!(a.complete().is_empty());
        a.note_marks(&[mark(0, 60_000, true)]);
        assert_eq!(a.complete(), vec![0]);
    }

    #[test]
    fn copies_of_upstream_rows_are_neither_admitted_twice_nor_late() {
        let mut a = Admission::new(&derived());
        a.assign(&[0]);
        let first = admit(&mut a, &[(10_000, 0, 7), (11_000, 1, 3)], 0, None);
        assert_eq!(first.keep, vec![true, true]);
        assert_eq!(first.fresh, vec![true, true]);
        // Written again (an upstream instance re-read its input): the copy
        // in an open window is dropped, the copy of a closed one skipped.
        let again = admit(&mut a, &[(10_000, 0, 7), (11_000, 1, 3)], 1, Some(10_500));
        assert_eq!(again.keep, vec![false, false]);
        assert_eq!((again.late, again.replayed), (0, 2));
        // A row read for the first time behind the frontier is late.
        let late = admit(&mut a, &[(9_000, 0, 8)], 2, Some(10_500));
        assert_eq!((late.late, late.keep.clone()), (1, vec![false]));
        // The saved positions restore on another instance.
        let saved = a.upstream_positions(0);
        assert_eq!(saved.get(&0), Some(&(9, None)));
        let mut b = Admission::new(&derived());
        b.assign(&[0]);
        b.restore(0, Some(3), Some(&saved));
        let copy = admit(&mut b, &[(9_000, 0, 8)], 3, Some(10_500));
        assert_eq!((copy.late, copy.replayed), (0, 1));
    }
}
