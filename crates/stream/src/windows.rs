//! Event-time windows over decoded batches.
//!
//! Per source the engine buffers the rows its views still need; what may
//! enter (the watermark per partition with idleness, late, replayed and
//! duplicate rows) is `admission.rs`'s to decide. The source's watermark
//! is the lowest newest-event-time over its partitions minus its
//! `max_out_of_orderness`. Each feature view closes its
//! windows when the watermark passes them — TUMBLE windows and HOP panes
//! at their end, SESSION windows one gap after their last row — and runs
//! its SQL once over every newly closed window; then the rules that read
//! the view run over its output. `window_kinds.rs` picks the rows and
//! bounds for each kind. Rows older than what every view of their source
//! has closed are late: they are counted and handed to the late topic,
//! never counted in a window. Views over views, scored views' scores and
//! the rules reading them are the scoring stage's (`deferred.rs`): the
//! engine hands their inputs' rows on and never runs them itself.
//!
//! Invariants:
//! - every timestamp here is event time, ms since the epoch, UTC;
//! - `closed_until` of a view only grows, and no row below it reaches the
//!   view again;
//! - a window is emitted at most once per run, and after a restart only
//!   windows ending after the checkpoint's `closed` are emitted;
//! - the buffer of a source holds exactly the rows some view still needs,
//!   including (HOP, SESSION) those needed to rebuild state after a restart,
//!   so the committed offset never passes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{Int32Type, Int64Type, TimestampMillisecondType};
use telemine_codec::decode::UpstreamMark;
use telemine_codec::schema::{OFFSET_COLUMN, PARTITION_COLUMN};
use telemine_types::error::EngineError;

use super::admission::{Admission, Admitted, SourceCounts};
use super::checkpoint::Checkpoint;
use super::deferred::{Deferral, ViewRows};
use super::window_kinds;
use telemine_observe::metrics::Metrics;
use telemine_sql::alerts_from_batches;
use telemine_sql::source::SourceDef;
use telemine_sql::{Sliding, SqlSet, WindowKind};
use telemine_types::alert::Alert;

/// What the engine keeps per source: its admission state, the rows some
/// view still needs, and the late rows not yet taken.
struct SourceState {
    name: String,
    /// Watermark, partitions, late / replayed / duplicate rows.
    admission: Admission,
    ts_index: usize,
    partition_index: usize,
    offset_index: usize,
    buffer: Vec<RecordBatch>,
    views: Vec<usize>,
    /// Late rows not yet taken by the pipeline.
    late: Vec<LateRows>,
}

/// What an engine holds (see [`WindowEngine::held`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// Per windowed view (not SESSION): windows open.
    pub open_windows: Vec<(String, i64)>,
    /// Per source: rows buffered.
    pub buffered_rows: Vec<(String, i64)>,
    /// Per windowed view: the rows of its source's buffer inside its open
    /// windows (what it still has to evaluate; a SESSION view: every row
    /// buffered). Views share their source's buffer, so these overlap.
    pub view_rows: Vec<(String, i64)>,
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

/// What the engine keeps per view between closes.
#[derive(Debug)]
struct ViewState {
    /// End of the last closed window (TUMBLE; HOP: of the last emitted
    /// window, which is also the end of the last closed pane); SESSION: the
    /// watermark at the last close.
    closed_until: Option<i64>,
    /// What only this view's window kind keeps.
    kind: KindState,
}

/// The state only one window kind keeps, in a type of its own: a view's
/// kind never changes while its state lives (a reload that changes it
/// starts the view afresh).
#[derive(Debug)]
enum KindState {
    Tumble(GridState),
    Hop(GridState, Box<PaneState>),
    Session(SessionState),
}

/// TUMBLE and HOP: windows on a fixed grid.
#[derive(Debug, Default)]
struct GridState {
    /// With allowed lateness: starts of closed windows (HOP: panes) that
    /// took records since, to evaluate again.
    dirty: BTreeSet<i64>,
    /// From the checkpoint: rows from here on are rebuilt (TUMBLE with
    /// allowed lateness, HOP), until the source has a watermark again.
    restored_keep: Option<i64>,
}

/// HOP with pane sharing.
#[derive(Debug, Default)]
struct PaneState {
    /// Partial states by pane, for the windows not emitted yet, and what
    /// is built from them.
    sliding: Option<Sliding>,
    /// End of the panes computed so far.
    panes_until: Option<i64>,
}

/// SESSION.
#[derive(Debug, Default)]
struct SessionState {
    /// Earliest start of a session still open.
    open_from: Option<i64>,
    /// No session can close before the watermark reaches this.
    due: Option<i64>,
    /// With allowed lateness: where records reached closed sessions since
    /// the last close.
    late: Vec<window_kinds::LateInSession>,
}

impl ViewState {
    fn new(kind: &WindowKind, closed_until: Option<i64>) -> ViewState {
        let kind = match kind {
            WindowKind::Tumble => KindState::Tumble(GridState::default()),
            WindowKind::Hop { .. } => KindState::Hop(GridState::default(), Box::default()),
            WindowKind::Session => KindState::Session(SessionState::default()),
        };
        ViewState { closed_until, kind }
    }

    fn grid(&self) -> Option<&GridState> {
        match &self.kind {
            KindState::Tumble(g) | KindState::Hop(g, _) => Some(g),
            KindState::Session(_) => None,
        }
    }

    fn grid_mut(&mut self) -> Option<&mut GridState> {
        match &mut self.kind {
            KindState::Tumble(g) | KindState::Hop(g, _) => Some(g),
            KindState::Session(_) => None,
        }
    }

    fn panes(&self) -> Option<&PaneState> {
        match &self.kind {
            KindState::Hop(_, p) => Some(&**p),
            _ => None,
        }
    }

    fn panes_mut(&mut self) -> Option<&mut PaneState> {
        match &mut self.kind {
            KindState::Hop(_, p) => Some(&mut **p),
            _ => None,
        }
    }

    fn session(&self) -> Option<&SessionState> {
        match &self.kind {
            KindState::Session(s) => Some(s),
            _ => None,
        }
    }

    fn session_mut(&mut self) -> Option<&mut SessionState> {
        match &mut self.kind {
            KindState::Session(s) => Some(s),
            _ => None,
        }
    }
}

/// What closing one view's windows did.
enum Closed {
    /// Nothing new to close.
    Nothing,
    /// Windows closed, but they held no rows.
    Empty,
    /// The view's SQL ran over the closed windows.
    Ran(Result<Vec<RecordBatch>, datafusion::error::DataFusionError>),
}

/// See the module docs.
pub struct WindowEngine {
    sql: SqlSet,
    sources: Vec<SourceState>,
    /// Per view, in the SQL set's order.
    views: Vec<ViewState>,
    /// With allowed lateness: (rule, fingerprint, window start) of alerts
    /// raised for windows that may still fire again, by window end.
    raised: BTreeMap<i64, std::collections::HashSet<(String, String, i64)>>,
    /// The largest allowed lateness over the sources, ms.
    max_lateness_ms: i64,
    /// The rule evaluations run since the last `take_evaluations`.
    evaluations: Vec<telemine_types::alert::rule::Evaluation>,
    metrics: Arc<Metrics>,
    /// Scoring left to the scoring stage (`deferred.rs`): asked for with
    /// [`WindowEngine::defer_scoring`], planned for each SQL set.
    defer: bool,
    deferral: Option<Deferral>,
    /// Rows of the deferred views since the last `take_deferred`.
    deferred: Vec<ViewRows>,
}

impl WindowEngine {
    pub fn new(mut sql: SqlSet, sources: &[SourceDef], metrics: Arc<Metrics>) -> Self {
        sql.observe(metrics.clone());
        let states = sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let schema = s.schema.batch_schema();
                SourceState {
                    name: s.name.clone(),
                    admission: Admission::new(s),
                    ts_index: s.schema.event_time_index(),
                    partition_index: schema
                        .index_of(PARTITION_COLUMN)
                        .unwrap_or(schema.fields().len() - 2),
                    offset_index: schema
                        .index_of(OFFSET_COLUMN)
                        .unwrap_or(schema.fields().len() - 1),
                    buffer: Vec::new(),
                    late: Vec::new(),
                    views: views_of_source(&sql, i),
                }
            })
            .collect();
        let views = sql
            .views
            .iter()
            .map(|v| ViewState::new(&v.window.kind, None))
            .collect();
        let max_lateness_ms = sources
            .iter()
            .map(|s| s.allowed_lateness.as_millis() as i64)
            .max()
            .unwrap_or(0);
        WindowEngine {
            sql,
            sources: states,
            views,
            raised: BTreeMap::new(),
            max_lateness_ms,
            evaluations: Vec::new(),
            metrics,
            defer: false,
            deferral: None,
            deferred: Vec::new(),
        }
    }

    /// Leaves the scored views' scoring, the views over views and the
    /// rules that read them to the scoring stage (see `deferred.rs`): the
    /// windows' rows they need are handed on
    /// ([`WindowEngine::take_deferred`]) instead.
    pub fn defer_scoring(&mut self) {
        self.defer = true;
        self.plan_deferral();
    }

    /// What this SQL leaves to the stage.
    fn plan_deferral(&mut self) {
        self.deferral = Deferral::plan(&self.sql);
    }

    /// What the scoring stage takes from this engine's SQL, when scoring
    /// is deferred.
    pub fn deferral(&self) -> Option<&Deferral> {
        self.deferral.as_ref()
    }

    /// The alerting clock of the scoring stage for a runner that holds
    /// every partition (the local runner): the lowest watermark over the
    /// sources of the views the stage takes. A source that has delivered
    /// nothing yet holds it back, as an unreported partition holds the
    /// owner's board back (a join waits for its slower input), unless
    /// every partition it has is idle.
    pub fn deferred_clock(&self) -> Option<i64> {
        let d = self.deferral.as_ref()?;
        let feeding: BTreeSet<usize> = d
            .views
            .iter()
            .filter_map(|&v| self.sql.views[v].source)
            .collect();
        let now = Instant::now();
        let mut lowest: Option<i64> = None;
        for s in feeding {
            let state = &self.sources[s];
            match state.admission.watermark {
                Some(w) => lowest = Some(lowest.map_or(w, |l| l.min(w))),
                None if state.admission.any_active(now)
                    || state.admission.read_to().next().is_none() =>
                {
                    return None;
                }
                None => {}
            }
        }
        lowest
    }

    /// The deferred views' rows since the last call.
    pub fn take_deferred(&mut self) -> Vec<ViewRows> {
        std::mem::take(&mut self.deferred)
    }

    /// Swaps in a new SQL set (hot reload), between two batches, so every
    /// window evaluated from now on uses the new SQL whole. A view whose
    /// name and window are unchanged keeps its state: windows it has open
    /// are evaluated with the new SQL when they close, from the rows
    /// buffered, and none is emitted twice (HOP pane states are rebuilt
    /// from rows when its SQL changed). A new view, or one whose window
    /// changed, starts at its next window boundary after the watermark.
    /// Views over views are never run here: the scoring stage runs them
    /// (`deferred.rs`), so a runner defers them ([`WindowEngine::defer_scoring`]).
    pub fn replace_sql(&mut self, mut sql: SqlSet) -> Result<(), EngineError> {
        sql.observe(self.metrics.clone());
        // Models keep scoring (and learning) across reloads.
        for v in &self.sql.views {
            if let Some(s) = self.sql.scorer(&v.name) {
                sql.attach_scorer(&v.name, s);
            }
        }
        let mut old: HashMap<String, (usize, ViewState)> = self
            .sql
            .views
            .iter()
            .map(|v| v.name.clone())
            .zip(std::mem::take(&mut self.views))
            .enumerate()
            .map(|(i, (name, state))| (name, (i, state)))
            .collect();
        let mut views = Vec::with_capacity(sql.views.len());
        for v in &sql.views {
            let kept = old.remove(&v.name).and_then(|(i, state)| {
                let before = &self.sql.views[i];
                let inputs_before: Vec<&str> = before
                    .inputs
                    .iter()
                    .map(|&j| self.sql.views[j].name.as_str())
                    .collect();
                let inputs_now: Vec<&str> = v
                    .inputs
                    .iter()
                    .map(|&j| sql.views[j].name.as_str())
                    .collect();
                (before.window == v.window
                    && before.source == v.source
                    && inputs_before == inputs_now)
                    .then(|| {
                        let mut state = state;
                        if before.plan != v.plan {
                            // Partial states of the old SQL do not merge
                            // with the new: rebuild them from the rows.
                            if let Some(p) = state.panes_mut() {
                                *p = PaneState::default();
                            }
                        }
                        state
                    })
            });
            let state =
                match kept {
                    Some(state) => state,
                    None => {
                        let closed_until =
                            match v.source {
                                Some(s) => self.sources[s].admission.watermark.map(|wm| {
                                    match v.window.kind {
                                        WindowKind::Session => wm,
                                        _ => v.window.start_of(wm) + v.window.step_ms(),
                                    }
                                }),
                                None => None,
                            };
                        ViewState::new(&v.window.kind, closed_until)
                    }
                };
            views.push(state);
        }
        for (i, state) in self.sources.iter_mut().enumerate() {
            state.views = views_of_source(&sql, i);
        }
        self.views = views;
        self.sql = sql;
        if self.defer {
            self.plan_deferral();
        }
        Ok(())
    }

    /// Restores a partition's checkpoint before its first rows arrive.
    pub fn restore(&mut self, source: usize, partition: i32, checkpoint: Option<&Checkpoint>) {
        let Some(state) = self.sources.get_mut(source) else {
            return;
        };
        state.admission.restore(
            partition,
            checkpoint.map(|c| c.next),
            checkpoint.map(|c| &c.up),
        );
        let Some(c) = checkpoint else { return };
        for &vi in &state.views {
            let name = &self.sql.views[vi].name;
            let view = &mut self.views[vi];
            if let Some(&closed) = c.closed.get(name) {
                view.closed_until = Some(view.closed_until.map_or(closed, |x| x.max(closed)));
            }
            if let Some(&keep) = c.keep.get(name) {
                match &mut view.kind {
                    KindState::Session(s) => {
                        s.open_from = Some(s.open_from.map_or(keep, |x| x.min(keep)));
                    }
                    KindState::Tumble(g) | KindState::Hop(g, _) => {
                        g.restored_keep = Some(g.restored_keep.map_or(keep, |x| x.min(keep)));
                    }
                }
            }
        }
    }

    /// Whether a partition restored from `checkpoint` fits the windows of
    /// this engine, which already computes other partitions of `source`:
    /// every view of the source closed its windows up to where the
    /// checkpoint says. A view the checkpoint does not name had closed
    /// nothing there (a checkpoint names only views that closed a window),
    /// like every view without a checkpoint. A partition that does not
    /// fit would see its rows late, or skip windows, if it joined (see
    /// `driver.rs`).
    pub fn fits(&self, source: usize, checkpoint: Option<&Checkpoint>) -> bool {
        let Some(state) = self.sources.get(source) else {
            return true;
        };
        state.views.iter().all(|&vi| {
            let name = &self.sql.views[vi].name;
            let there = checkpoint.and_then(|c| c.closed.get(name).copied());
            self.views[vi].closed_until == there
        })
    }

    /// Whether `source`'s `partition` is held here and has been idle (no
    /// rows for the source's idle timeout since it was assigned or last
    /// delivered).
    pub fn partition_idle(&self, source: usize, partition: i32) -> bool {
        self.sources
            .get(source)
            .is_some_and(|s| s.admission.partition_idle(partition, Instant::now()))
    }

    /// The partitions of `source` this engine holds.
    pub fn partitions(&self, source: usize) -> Vec<i32> {
        self.sources
            .get(source)
            .map(|s| s.admission.read_to().map(|(p, _)| p).collect())
            .unwrap_or_default()
    }

    /// A new engine over the same SQL (see [`SqlSet::fork`]), holding
    /// nothing yet.
    pub fn lane(&self, sources: &[SourceDef]) -> WindowEngine {
        let mut lane = WindowEngine::new(self.sql.fork(), sources, self.metrics.clone());
        if self.defer {
            lane.defer_scoring();
        }
        lane
    }

    /// The consumer now owns exactly `partitions` of `source`. New ones hold
    /// the watermark back until they deliver or go idle; rows of revoked ones
    /// are dropped (their new owner re-reads them from the committed offset).
    /// How far a revoked partition had been read is remembered: if it comes
    /// back (a broker stall that outlived the session, a rebalance), the
    /// records re-read below that point whose windows have closed are
    /// replays, skipped and counted as such — never sent to the late topic.
    pub fn assign(&mut self, source: usize, partitions: &[i32]) -> Result<(), EngineError> {
        let Some(state) = self.sources.get_mut(source) else {
            return Ok(());
        };
        state.admission.assign(partitions);
        let idx = state.partition_index;
        let mut kept = Vec::with_capacity(state.buffer.len());
        for b in &state.buffer {
            let parts = b.column(idx).as_primitive::<Int32Type>();
            let mask = parts
                .values()
                .iter()
                .map(|p| Some(partitions.contains(p)))
                .collect();
            kept.extend(window_kinds::filter_rows(b, mask)?);
        }
        state.buffer = kept;
        Ok(())
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
            state.admission.note_consumed(consumed);
        }
    }

    /// Takes one decoded batch of `source`: how far its partitions were
    /// read, a derived source's upstream progress, its rows (if any
    /// record decoded); then closes every window the watermark allows.
    pub async fn take(
        &mut self,
        source: usize,
        batch: Option<RecordBatch>,
        consumed: &[(i32, i64)],
        marks: &[UpstreamMark],
    ) -> Result<Vec<Alert>, EngineError> {
        self.note_consumed(source, consumed);
        if let Some(state) = self.sources.get_mut(source) {
            state.admission.note_marks(marks);
        }
        match batch {
            Some(batch) => self.ingest(source, batch).await,
            // Marks alone may move a derived source's watermark.
            None if !marks.is_empty() => self.close_ready(source, false).await,
            None => Ok(Vec::new()),
        }
    }

    /// A derived source: its partitions held that every upstream
    /// partition has said its end to (a drain).
    pub fn complete(&self, source: usize) -> Vec<i32> {
        self.sources
            .get(source)
            .map(|s| s.admission.complete())
            .unwrap_or_default()
    }

    /// The rule evaluations (rule, window end) run since the last call,
    /// including those that returned no rows.
    pub fn take_evaluations(&mut self) -> Vec<telemine_types::alert::rule::Evaluation> {
        std::mem::take(&mut self.evaluations)
    }

    /// What `/metrics` shows of the state held: per windowed view, the
    /// windows its source's buffered rows fall in that have not closed
    /// (TUMBLE and HOP; SESSION views are left out: their sessions are
    /// found only when they close); per source, the rows buffered.
    pub fn held(&self) -> Held {
        let mut windows = Vec::new();
        let mut rows = Vec::new();
        let mut view_rows = Vec::new();
        for state in &self.sources {
            let n: usize = state.buffer.iter().map(|b| b.num_rows()).sum();
            // Rows of the buffer at or after `from` (event time).
            let since = |from: i64| -> i64 {
                let counted: usize = state
                    .buffer
                    .iter()
                    .filter_map(|b| {
                        b.column(state.ts_index)
                            .as_primitive_opt::<TimestampMillisecondType>()
                    })
                    .map(|ts| ts.values().iter().filter(|&&t| t >= from).count())
                    .sum();
                i64::try_from(counted).unwrap_or(i64::MAX)
            };
            rows.push((state.name.clone(), i64::try_from(n).unwrap_or(i64::MAX)));
            let span = state
                .buffer
                .iter()
                .fold(None, |acc: Option<(i64, i64)>, b| {
                    let ts = b
                        .column(state.ts_index)
                        .as_primitive_opt::<TimestampMillisecondType>()?;
                    let lo = datafusion::arrow::compute::min(ts)?;
                    let hi = datafusion::arrow::compute::max(ts)?;
                    Some(acc.map_or((lo, hi), |(l, h)| (l.min(lo), h.max(hi))))
                });
            for &vi in &state.views {
                let w = &self.sql.views[vi].window;
                let step = w.step_ms().max(1);
                let name = self.sql.views[vi].name.clone();
                let open = match (w.kind, span) {
                    (WindowKind::Session, _) => {
                        view_rows.push((name, i64::try_from(n).unwrap_or(i64::MAX)));
                        continue;
                    }
                    (_, None) => {
                        view_rows.push((name.clone(), 0));
                        0
                    }
                    (_, Some((lo, hi))) => {
                        let lo = self.views[vi].closed_until.map_or(lo, |c| lo.max(c));
                        let first = w.start_of(lo) - (w.size_ms - step).max(0);
                        view_rows.push((name.clone(), since(first)));
                        if hi < lo {
                            0
                        } else {
                            (w.start_of(hi) - first) / step + 1
                        }
                    }
                };
                windows.push((name, open));
            }
        }
        Held {
            open_windows: windows,
            buffered_rows: rows,
            view_rows,
        }
    }

    /// The alerting clock: the lowest watermark over every source. A
    /// source with no watermark yet holds it back (`None`) while any of
    /// its assigned partitions is active; once they are all idle (an empty
    /// topic), it no longer counts.
    pub fn lowest_watermark(&self) -> Option<i64> {
        let now = Instant::now();
        let mut lowest: Option<i64> = None;
        for s in &self.sources {
            match s.admission.watermark {
                Some(w) => lowest = Some(lowest.map_or(w, |l| l.min(w))),
                None => {
                    if s.admission.any_active(now) {
                        return None;
                    }
                }
            }
        }
        lowest
    }

    /// Whether any assigned partition of any source is active (has not
    /// gone idle): with no watermark, such a partition holds the alerting
    /// clock back; without one, nothing does.
    pub fn any_active(&self) -> bool {
        let now = Instant::now();
        self.sources.iter().any(|s| s.admission.any_active(now))
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
            .map(|s| (s.name.clone(), s.admission.counts.clone()))
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
            .and_then(|s| s.admission.current_watermark(Instant::now()))
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
        let mut closed = BTreeMap::new();
        let mut keep = BTreeMap::new();
        for &vi in &state.views {
            let name = &self.sql.views[vi].name;
            let Some(c) = self.views[vi].closed_until else {
                continue;
            };
            closed.insert(name.clone(), c);
            if let Some(k) = self.keep_from(vi)
                && k != c
            {
                keep.insert(name.clone(), k);
            }
        }
        state
            .admission
            .read_to()
            .filter_map(|(p, next)| {
                let next = next?;
                let offset = lowest.get(&p).copied().map_or(next, |l| l.min(next));
                Some((
                    p,
                    offset,
                    Checkpoint {
                        v: Checkpoint::VERSION,
                        next,
                        closed: closed.clone(),
                        keep: keep.clone(),
                        stored: None,
                        up: state.admission.upstream_positions(p),
                    },
                ))
            })
            .collect()
    }

    /// Rows of view `vi` below this are late for it: its windows (HOP: its
    /// panes; SESSION: the sessions they could join) are closed.
    fn late_before(&self, vi: usize) -> Option<i64> {
        let closed = self.views[vi].closed_until?;
        let w = &self.sql.views[vi].window;
        Some(match self.lateness_of(vi) {
            // SESSION: a record at most the lateness behind the watermark.
            Some((lateness, wm)) if w.kind == WindowKind::Session => closed.min(wm - lateness),
            // The first pane of the earliest window whose end plus the
            // lateness the watermark has not reached yet (TUMBLE: that
            // window's start).
            Some((lateness, wm)) => closed.min(w.start_of(wm - lateness - w.size_ms) + w.step_ms()),
            None => closed,
        })
    }

    /// For a view of a source with allowed lateness that has a watermark:
    /// (lateness, watermark).
    fn lateness_of(&self, vi: usize) -> Option<(i64, i64)> {
        let view = &self.sql.views[vi];
        let source = &self.sources[view.source?];
        if source.admission.lateness_ms == 0 {
            return None;
        }
        Some((source.admission.lateness_ms, source.admission.watermark?))
    }

    /// Rows of view `vi` below this are no longer needed by it, not even
    /// to rebuild its state after a restart.
    fn keep_from(&self, vi: usize) -> Option<i64> {
        let view = &self.views[vi];
        let closed = view.closed_until?;
        let w = &self.sql.views[vi].window;
        Some(match w.kind {
            // Closed windows still open to stragglers keep their rows; a
            // HOP window also reaches back over the panes before its last.
            WindowKind::Tumble | WindowKind::Hop { .. } => {
                let late = self.late_before(vi).map_or(closed, |l| l.min(closed));
                let from = late - (w.size_ms - w.step_ms());
                let source_has_watermark = self.sql.views[vi]
                    .source
                    .is_some_and(|s| self.sources[s].admission.watermark.is_some());
                match view.grid().and_then(|g| g.restored_keep) {
                    // Rows re-read after a restart, until the watermark is
                    // known again.
                    Some(k) if !source_has_watermark => k.min(from),
                    _ => from,
                }
            }
            WindowKind::Session => view
                .session()
                .and_then(|s| s.open_from)
                .map_or(closed, |o| o.min(closed)),
        })
    }

    /// The lowest of `f` over the views of `source`; `None` while any view
    /// has closed nothing yet.
    fn lowest_over_views(&self, source: usize, f: impl Fn(usize) -> Option<i64>) -> Option<i64> {
        lowest_all(self.sources[source].views.iter().map(|&vi| f(vi)))
    }

    /// Rows below this are late for every view of `source`.
    fn frontier(&self, source: usize) -> Option<i64> {
        self.lowest_over_views(source, |vi| self.late_before(vi))
    }

    /// Rows below this are needed by no view of `source`.
    fn floor(&self, source: usize) -> Option<i64> {
        self.lowest_over_views(source, |vi| self.keep_from(vi))
    }

    /// Drops late and replayed rows, advances partition event times, buffers
    /// the rest.
    fn accept(&mut self, source: usize, batch: RecordBatch) -> Result<(), EngineError> {
        let frontier = self.frontier(source);
        let floor = self.floor(source);
        let state = self
            .sources
            .get_mut(source)
            .ok_or_else(|| EngineError::Internal(format!("no source #{source}")))?;
        // A derived source's rows are counted where they were read first.
        if !state.admission.is_derived() {
            Metrics::add(&self.metrics.records_decoded, batch.num_rows() as u64);
        }
        // A derived source's rows end with their upstream partition and
        // offset (see `repartition.rs`): admission reads them, the views
        // never see them.
        let (batch, upstream) = if state.admission.is_derived() {
            let (batch, up) = super::repartition::split_upstream(batch)?;
            (batch, Some(up))
        } else {
            (batch, None)
        };
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
        let up_arrays = upstream
            .as_ref()
            .map(|(p, o)| (p.as_primitive::<Int32Type>(), o.as_primitive::<Int64Type>()));
        let Admitted {
            keep,
            is_late,
            late,
            replayed,
            duplicates,
            fresh,
        } = state.admission.admit(
            &batch,
            (ts, parts, offs),
            state.ts_index,
            frontier,
            floor,
            up_arrays,
        )?;
        Metrics::add(&self.metrics.late_records, late);
        Metrics::add(&self.metrics.replayed_skipped, replayed);
        Metrics::add(&self.metrics.duplicates_dropped, duplicates);
        if !state.admission.is_derived() {
            count_per_partition(&self.metrics, &state.name, parts.values(), &keep);
        }
        Metrics::add_to(
            &self.metrics.source_late_records_total,
            &[&state.name],
            late,
        );
        Metrics::add_to(
            &self.metrics.source_duplicates_total,
            &[&state.name],
            duplicates,
        );
        if late > 0 {
            let first = is_late.iter().position(|l| *l).unwrap_or(0);
            tracing::debug!(
                source = %state.name,
                late,
                frontier,
                partition = parts.value(first),
                offset = offs.value(first),
                event_time = ts.value(first),
                upstream = ?up_arrays.map(|(p, o)| (p.value(first), o.value(first))),
                "rows behind every open window: late"
            );
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
        // Records within the allowed lateness of closed windows make those
        // windows (HOP: every emitted window over their pane; SESSION: the
        // session they join) fire again.
        let mut dirty: Vec<(usize, i64)> = Vec::new();
        let mut in_sessions: Vec<(usize, Vec<window_kinds::LateInSession>)> = Vec::new();
        if state.admission.lateness_ms > 0 {
            for &vi in &state.views {
                let view = &self.sql.views[vi];
                let Some(closed) = self.views[vi].closed_until else {
                    continue;
                };
                let mut reached = Vec::new();
                for (i, kept) in keep.iter().enumerate() {
                    let t = ts.value(i);
                    if *kept && fresh[i] && t < closed {
                        if view.window.kind == WindowKind::Session {
                            reached.push(i as u32);
                        } else {
                            dirty.push((vi, view.window.start_of(t)));
                        }
                    }
                }
                if !reached.is_empty() {
                    let keys = window_kinds::session_keys(&batch, &view.session_keys, &reached)?;
                    let times = reached.iter().map(|&i| ts.value(i as usize));
                    in_sessions.push((vi, keys.into_iter().zip(times).collect()));
                }
            }
        }
        for (vi, start) in dirty {
            if let Some(g) = self.views[vi].grid_mut() {
                g.dirty.insert(start);
            }
        }
        for (vi, reached) in in_sessions {
            if let Some(s) = self.views[vi].session_mut() {
                s.late.extend(reached);
            }
        }
        let batch = if late + replayed + duplicates == 0 {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::from(keep))
                .map_err(|e| EngineError::Internal(e.to_string()))?
        };
        if batch.num_rows() > 0 {
            // Sessions this batch may have started or extended end no
            // earlier than its oldest row plus the gap.
            if let Some(&oldest) = batch
                .column(state.ts_index)
                .as_primitive::<TimestampMillisecondType>()
                .values()
                .iter()
                .min()
            {
                for &vi in &state.views {
                    if self.sql.views[vi].window.kind == WindowKind::Session {
                        let due = oldest + self.sql.views[vi].window.size_ms;
                        if let Some(s) = self.views[vi].session_mut() {
                            s.due = Some(s.due.map_or(due, |d| d.min(due)));
                        }
                    }
                }
            }
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
            self.sources[source].admission.watermark = Some(wm);
        }
        let mut latest = Vec::new();
        let mut closed_any = false;
        for vi in self.sources[source].views.clone() {
            let closed = match self.sql.views[vi].window.kind {
                WindowKind::Tumble => self.close_tumble(source, vi, wm, all).await?,
                WindowKind::Hop { .. } => self.close_hop(source, vi, wm, all).await?,
                WindowKind::Session => self.close_sessions(source, vi, wm, all).await?,
            };
            match closed {
                Closed::Nothing => {}
                Closed::Empty => closed_any = true,
                Closed::Ran(result) => {
                    closed_any = true;
                    Metrics::add(&self.metrics.window_closes, 1);
                    match result {
                        Ok(out) if out.is_empty() => {}
                        Ok(out) => latest.push((vi, out)),
                        Err(e) => self.view_failed(vi, &e),
                    }
                }
            }
        }
        // The views run in this step, each with the window ends it covered.
        let mut updated: Vec<(usize, std::collections::BTreeSet<i64>)> = Vec::new();
        for (vi, out) in &latest {
            let ends = match self.sql.views[*vi]
                .output_schema
                .index_of(telemine_sql::WINDOW_END)
            {
                Ok(end) => window_kinds::distinct_times(out, end)?,
                Err(_) => Default::default(),
            };
            updated.push((*vi, ends));
        }
        if let Some(d) = &self.deferral {
            for (vi, out) in &latest {
                if d.views.contains(vi) {
                    let scored = d.scored.contains(vi);
                    self.deferred.push(ViewRows {
                        view: *vi,
                        name: self.sql.views[*vi].name.clone(),
                        batches: out.iter().map(|b| unscored(b, scored)).collect(),
                    });
                }
            }
        }
        let mut alerts = Vec::new();
        if !updated.is_empty() {
            for (ri, rule) in self.sql.rules.iter().enumerate() {
                if self
                    .deferral
                    .as_ref()
                    .is_some_and(|d| d.rules.contains(&ri))
                {
                    continue;
                }
                let read: Vec<&std::collections::BTreeSet<i64>> = updated
                    .iter()
                    .filter(|(vi, _)| rule.views.contains(vi))
                    .map(|(_, ends)| ends)
                    .collect();
                if read.is_empty() {
                    continue;
                }
                // One evaluation per window end its views covered.
                let ends: std::collections::BTreeSet<i64> =
                    read.into_iter().flatten().copied().collect();
                self.evaluations.extend(ends.into_iter().map(|at| {
                    telemine_types::alert::rule::Evaluation {
                        rule: rule.name.clone(),
                        timing: rule.timing,
                        at,
                    }
                }));
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
        if self.max_lateness_ms > 0 {
            alerts = self.first_raised(alerts);
        }
        Metrics::add(&self.metrics.alerts, alerts.len() as u64);
        Ok(alerts)
    }

    /// Counts and logs a failed evaluation of view `vi`.
    fn view_failed(&self, vi: usize, e: &datafusion::error::DataFusionError) {
        let view = &self.sql.views[vi];
        let what = count_failure(&self.metrics, e);
        tracing::error!(view = %view.name, file = %view.file.display(), error = %e.strip_backtrace(), "feature view {what}; its windows are skipped");
    }

    /// With allowed lateness, a window may fire more than once: keeps only
    /// the alerts not raised for their window before, and forgets windows
    /// no source can fire again.
    fn first_raised(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let mut out = Vec::with_capacity(alerts.len());
        for a in alerts {
            let key = (a.rule.clone(), a.fingerprint.clone(), a.window_start_ms);
            if self.raised.entry(a.window_end_ms).or_default().insert(key) {
                out.push(a);
            }
        }
        let lowest_watermark = self
            .sources
            .iter()
            .filter_map(|s| s.admission.watermark)
            .min();
        if let Some(wm) = lowest_watermark {
            self.raised = self.raised.split_off(&(wm - self.max_lateness_ms));
        }
        out
    }

    /// TUMBLE: every window ending at or before the watermark, in one run.
    async fn close_tumble(
        &mut self,
        source: usize,
        vi: usize,
        wm: i64,
        all: bool,
    ) -> Result<Closed, EngineError> {
        let state = &self.sources[source];
        let view = &self.sql.views[vi];
        let size = view.window.size_ms;
        let lo = self.views[vi].closed_until;
        let hi = if all {
            // Close through the window of the newest buffered row.
            match max_ts(state) {
                Some(t) => view.window.start_of(t) + size,
                None => return Ok(Closed::Nothing),
            }
        } else {
            view.window.start_of(wm)
        };
        let fresh = lo.is_none_or(|lo| hi > lo);
        let dirty = self.views[vi]
            .grid_mut()
            .map(|g| std::mem::take(&mut g.dirty))
            .unwrap_or_default();
        if !fresh && dirty.is_empty() {
            return Ok(Closed::Nothing);
        }
        let state = &self.sources[source];
        let view = &self.sql.views[vi];
        let mut input = Vec::new();
        if fresh {
            input = window_kinds::grid_rows(
                &state.buffer,
                state.ts_index,
                lo,
                hi,
                size,
                &view.input_schema,
            )?;
            self.views[vi].closed_until = Some(hi);
        }
        // Late firings: closed windows that took records since, whole.
        for start in &dirty {
            input.extend(window_kinds::grid_rows(
                &state.buffer,
                state.ts_index,
                Some(*start),
                start + size,
                size,
                &view.input_schema,
            )?);
        }
        Metrics::add(&self.metrics.late_firings, dirty.len() as u64);
        if input.is_empty() {
            return Ok(Closed::Empty);
        }
        Ok(Closed::Ran(self.sql.run_view(vi, input).await))
    }

    /// HOP: closes the panes the watermark has passed, then emits every
    /// window whose last pane closed.
    async fn close_hop(
        &mut self,
        source: usize,
        vi: usize,
        wm: i64,
        all: bool,
    ) -> Result<Closed, EngineError> {
        let state = &self.sources[source];
        let view = &self.sql.views[vi];
        let (size, slide) = (view.window.size_ms, view.window.step_ms());
        let lo = self.views[vi].closed_until;
        // Panes end at or before `pane_hi`; windows end at or before `hi`.
        let (pane_hi, hi) = if all {
            match max_ts(state) {
                Some(t) => (
                    view.window.start_of(t) + slide,
                    view.window.start_of(t) + size,
                ),
                None => return Ok(Closed::Nothing),
            }
        } else {
            let p = view.window.start_of(wm);
            (p, p)
        };
        // Late firings: emitted windows over panes that took records within
        // the allowed lateness, unless the watermark has passed their end
        // plus the lateness.
        let dirty = self.views[vi]
            .grid_mut()
            .map(|g| std::mem::take(&mut g.dirty))
            .unwrap_or_default();
        let lateness = state.admission.lateness_ms;
        let expired = |end: i64| {
            state
                .admission
                .watermark
                .is_some_and(|w| end + lateness <= w)
        };
        let late_ends: BTreeSet<i64> = dirty
            .iter()
            .flat_map(|p| (p + slide..=p + size).step_by(slide as usize))
            .filter(|&end| lo.is_some_and(|lo| end <= lo) && !expired(end))
            .collect();
        let fresh = lo.is_none_or(|lo| hi > lo);
        if !fresh && late_ends.is_empty() {
            return Ok(Closed::Nothing);
        }
        // The first window to emit ends one slide after the last emitted
        // one, or (first close) after the earliest row's pane.
        let earliest = lo
            .map(|l| l - size + slide)
            .or_else(|| min_ts(state).map(|t| view.window.start_of(t)));
        let Some(first_start) = earliest else {
            self.views[vi].closed_until = Some(hi);
            return Ok(Closed::Empty);
        };
        let first_end = lo.map_or(first_start + slide, |l| l + slide);
        let hi = hi.max(lo.unwrap_or(hi));
        let fired = late_ends.len();
        let ends = late_ends
            .into_iter()
            .chain((first_end..=hi).step_by(slide as usize));
        let result = match view.panes.clone() {
            Some(plan) => {
                // After a restart, panes from what the checkpoint kept.
                let pane_lo = self.views[vi]
                    .panes()
                    .and_then(|p| p.panes_until)
                    .or_else(|| self.keep_from(vi));
                let mut panes = match self.partial_states(source, vi, pane_lo, pane_hi).await {
                    Ok(p) => p,
                    Err(e) => return self.skip_hop(vi, hi, e),
                };
                // Panes that took late records, again from their rows.
                for &p in dirty.range(..pane_lo.unwrap_or(i64::MIN)) {
                    match self.partial_states(source, vi, Some(p), p + slide).await {
                        Ok(states) => panes.extend(states),
                        Err(e) => return self.skip_hop(vi, hi, e),
                    }
                }
                let mut sliding = match self.views[vi].panes_mut().and_then(|p| p.sliding.take()) {
                    Some(s) => s,
                    None => match Sliding::new(plan, size, slide) {
                        Ok(s) => s,
                        Err(e) => return self.skip_hop(vi, hi, e),
                    },
                };
                let merged = match sliding.advance(&panes, ends) {
                    Ok(m) => m,
                    Err(e) => return self.skip_hop(vi, hi, e),
                };
                let v = &mut self.views[vi];
                if let Some(p) = v.panes_mut() {
                    p.sliding = Some(sliding);
                    p.panes_until = Some(pane_hi.max(p.panes_until.unwrap_or(pane_hi)));
                }
                v.closed_until = Some(hi);
                self.forget_panes(vi);
                Metrics::add(&self.metrics.late_firings, fired as u64);
                match merged {
                    None => return Ok(Closed::Empty),
                    Some(merged) => self.sql.run_view_windows(vi, merged).await,
                }
            }
            None => {
                let input = window_kinds::hop_rows(
                    &state.buffer,
                    state.ts_index,
                    size,
                    ends,
                    &view.input_schema,
                )?;
                self.views[vi].closed_until = Some(hi);
                Metrics::add(&self.metrics.late_firings, fired as u64);
                if input.is_empty() {
                    return Ok(Closed::Empty);
                }
                self.sql.run_view(vi, input).await
            }
        };
        Ok(Closed::Ran(result))
    }

    /// HOP: forgets the pane states that no window can (re)fire from.
    fn forget_panes(&mut self, vi: usize) {
        let from = self.keep_from(vi);
        let sliding = self.views[vi].panes_mut().and_then(|p| p.sliding.as_mut());
        if let (Some(from), Some(sliding)) = (from, sliding) {
            sliding.forget_before(from);
        }
    }

    /// Partial states of HOP view `vi` over the rows in `[lo, hi)`, grouped
    /// by pane.
    async fn partial_states(
        &self,
        source: usize,
        vi: usize,
        lo: Option<i64>,
        hi: i64,
    ) -> Result<Vec<RecordBatch>, datafusion::error::DataFusionError> {
        let state = &self.sources[source];
        let rows = window_kinds::grid_rows(
            &state.buffer,
            state.ts_index,
            lo,
            hi,
            self.sql.views[vi].window.step_ms(),
            &self.sql.views[vi].input_schema,
        )
        .map_err(|e| datafusion::error::DataFusionError::Internal(e.to_string()))?;
        if rows.iter().all(|b| b.num_rows() == 0) {
            return Ok(Vec::new());
        }
        self.sql.run_view_panes(vi, rows).await
    }

    /// A HOP view whose windows up to `hi` failed: they are skipped (and
    /// counted by the caller), like a failed TUMBLE window, and its pane
    /// states are rebuilt from the buffered rows at the next close.
    fn skip_hop(
        &mut self,
        vi: usize,
        hi: i64,
        e: datafusion::error::DataFusionError,
    ) -> Result<Closed, EngineError> {
        let v = &mut self.views[vi];
        if let Some(p) = v.panes_mut() {
            *p = PaneState::default();
        }
        v.closed_until = Some(hi);
        Ok(Closed::Ran(Err(e)))
    }

    /// SESSION: emits the sessions that ended at or before the watermark.
    async fn close_sessions(
        &mut self,
        source: usize,
        vi: usize,
        wm: i64,
        all: bool,
    ) -> Result<Closed, EngineError> {
        let v = &self.views[vi];
        let lo = v.closed_until;
        let (due, late_waiting) = v
            .session()
            .map_or((None, false), |s| (s.due, !s.late.is_empty()));
        let nothing_due = lo.is_some_and(|lo| wm <= lo) || due.is_none_or(|d| wm < d);
        if !all && nothing_due && !late_waiting {
            return Ok(Closed::Nothing);
        }
        let mut late = self.views[vi]
            .session_mut()
            .map(|s| std::mem::take(&mut s.late))
            .unwrap_or_default();
        late.sort();
        let floor = self.keep_from(vi);
        let state = &self.sources[source];
        let view = &self.sql.views[vi];
        let found = window_kinds::sessions(
            &state.buffer,
            state.ts_index,
            &view.session_keys,
            floor,
            view.window.size_ms,
            wm,
            lo,
            (state.admission.lateness_ms, &late),
            &view.input_schema,
        )?;
        Metrics::add(&self.metrics.late_firings, found.refired as u64);
        let v = &mut self.views[vi];
        if let Some(s) = v.session_mut() {
            s.open_from = found.open_from;
            s.due = found.next_end;
        }
        v.closed_until = Some(if all {
            found
                .max_end
                .into_iter()
                .chain(lo)
                .max()
                .unwrap_or(i64::MIN)
        } else {
            wm
        });
        match found.rows {
            None => Ok(Closed::Empty),
            Some(rows) => Ok(Closed::Ran(self.sql.run_view(vi, vec![rows]).await)),
        }
    }

    /// Drops buffered rows no view needs any more.
    fn prune(&mut self, source: usize) -> Result<(), EngineError> {
        let Some(floor) = self.floor(source) else {
            return Ok(());
        };
        let state = &mut self.sources[source];
        state.admission.forget_before(floor);
        state.buffer = window_kinds::rows_in(&state.buffer, state.ts_index, Some(floor), i64::MAX)?;
        Ok(())
    }
}

/// A scored view's rows without their (NULL) score columns: what its SQL
/// computed, for the scoring stage.
fn unscored(batch: &RecordBatch, scored: bool) -> RecordBatch {
    if !scored {
        return batch.clone();
    }
    let keep: Vec<usize> = (0..batch.num_columns().saturating_sub(2)).collect();
    batch.project(&keep).unwrap_or_else(|_| batch.clone())
}

/// Counts a failed view or rule evaluation (and whether it was its memory
/// limit); returns what happened, for the log line.
/// Rows read (`records_in_total`) and taken into windows
/// (`records_out_total`) per partition of source `source`: one count per
/// partition the batch holds, not per row.
fn count_per_partition(metrics: &Metrics, source: &str, parts: &[i32], keep: &[bool]) {
    // A batch holds runs of one partition each (usually one run): the map
    // is touched once per run, not per row.
    let mut counts: BTreeMap<i32, (u64, u64)> = BTreeMap::new();
    let mut start = 0;
    while start < parts.len() {
        let p = parts[start];
        let len = parts[start..].iter().take_while(|&&q| q == p).count();
        let kept = keep[start..start + len].iter().filter(|&&k| k).count();
        let c = counts.entry(p).or_default();
        c.0 += len as u64;
        c.1 += kept as u64;
        start += len;
    }
    for (p, (read, kept)) in counts {
        let p = p.to_string();
        Metrics::add_to(&metrics.records_in_total, &[source, &p], read);
        Metrics::add_to(&metrics.records_out_total, &[source, &p], kept);
    }
}

fn count_failure(metrics: &Metrics, e: &datafusion::error::DataFusionError) -> &'static str {
    Metrics::add(&metrics.sql_errors, 1);
    if telemine_sql::is_memory_exceeded(e) {
        Metrics::add(&metrics.sql_memory_exceeded, 1);
        "exceeded engine.query_memory_limit (raise the limit, or make the query hold less: fewer groups, smaller aggregates)"
    } else if telemine_sql::is_time_exceeded(e) {
        Metrics::add(&metrics.sql_time_exceeded, 1);
        "ran past engine.query_time_limit and was stopped (make the query do less per window)"
    } else {
        "failed"
    }
}

fn max_ts(state: &SourceState) -> Option<i64> {
    buffered_bounds(state).map(|(_, max)| max).max()
}

fn min_ts(state: &SourceState) -> Option<i64> {
    buffered_bounds(state).map(|(min, _)| min).min()
}

fn buffered_bounds(state: &SourceState) -> impl Iterator<Item = (i64, i64)> {
    state
        .buffer
        .iter()
        .filter_map(|b| window_kinds::time_bounds(b, state.ts_index))
}

/// The lowest of `values`; `None` when there are none or any is `None`.
fn lowest_all(values: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    let mut lowest: Option<i64> = None;
    for v in values {
        let v = v?;
        lowest = Some(lowest.map_or(v, |l| l.min(v)));
    }
    lowest
}

/// The views that window source `i`.
fn views_of_source(sql: &SqlSet, i: usize) -> Vec<usize> {
    sql.views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.source == Some(i))
        .map(|(vi, _)| vi)
        .collect()
}
