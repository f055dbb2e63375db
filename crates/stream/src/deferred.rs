//! Scoring, and views over views, where the alerting is. A model learns
//! from, and keeps state for, every series of the view it scores, and a
//! view over views joins windows of views that different instances
//! compute (every host's power with the market's price), so the one
//! place that sees all of them — the alerting owner of the consumer
//! group — does both: N instances then give a model, or a join, the rows
//! that one instance reading every partition would.
//!
//! The split ([`Deferral`]): each instance's window engine computes the
//! windowed views as usual but does not score them, computes no view over
//! views, and does not run the rules that read a scored view or a view
//! over views; it hands the windows' rows those need on, as
//! [`ViewRows`]. Under `run`
//! they ride the alerting relay (binary messages of Arrow IPC, see
//! [`encode`]); the local runner hands them over in process. The
//! [`ScoringStage`] keeps them by window end until the alerting clock has
//! passed it — every partition of every source has relayed everything up
//! to it — then, window end by window end in order, scores them, computes
//! the views over views over them (inputs first), runs the rules reading
//! them and returns the rule rows and evaluations for the alerter.
//!
//! Invariants:
//! - a window end is scored once, whole: rows of a series already held
//!   for a window end (a copy relayed again after a restart or a
//!   rebalance) are dropped, and so are rows for a window end already
//!   scored (with allowed lateness, rows unlike those scored are a late
//!   firing and are scored as such);
//! - window ends are scored in order, so the detector sees what it would
//!   inline (`detector/`: batching never changes a score);
//! - what is held is bounded: past [`MAX_HELD_ROWS`] the oldest window end
//!   is scored without waiting for the clock (counted, logged);
//! - the owner commits the relay no further than the first message whose
//!   rows are still held ([`ScoringStage::held_from`]), and saves the
//!   detectors' state with that commit, so a new owner reads again exactly
//!   what was not scored.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::hash_utils::create_hashes_with_hasher;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use super::window_kinds::split_by_time;
use telemine_observe::metrics::Metrics;
use telemine_sql::{
    ANOMALY_FEATURES, ANOMALY_SCORE, SqlSet, WINDOW_END, WINDOW_START, alerts_from_batches,
};
use telemine_types::alert::Alert;
use telemine_types::alert::rule::Evaluation;
use telemine_types::error::EngineError;

/// Rows held for window ends the clock has not passed, at most.
pub const MAX_HELD_ROWS: usize = 2_000_000;

/// What the instances leave to the stage, by index into the SQL set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deferral {
    /// Views a model scores.
    pub scored: BTreeSet<usize>,
    /// Views over views, computed by the stage (inputs first).
    pub over: Vec<usize>,
    /// Windowed views whose rows the instances hand on: the scored ones,
    /// the inputs of the views over views, and every other view a
    /// deferred rule reads.
    pub views: BTreeSet<usize>,
    /// Rules that read a score or a view over views.
    pub rules: BTreeSet<usize>,
}

impl Deferral {
    /// The split for `sql`; `None` when nothing is scored and no view
    /// reads other views (the instances then do everything).
    pub fn plan(sql: &SqlSet) -> Option<Deferral> {
        let n = sql.views.len();
        let is_over = |i: usize| sql.views[i].source.is_none();
        let scored: BTreeSet<usize> = (0..n).filter(|&i| sql.views[i].model.is_some()).collect();
        // Views over views, each after the views it reads.
        let mut over: Vec<usize> = Vec::new();
        let mut left: Vec<usize> = (0..n).filter(|&i| is_over(i)).collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|&d| {
                let ready = sql.views[d]
                    .inputs
                    .iter()
                    .all(|&i| !is_over(i) || over.contains(&i));
                if ready {
                    over.push(d);
                }
                !ready
            });
            if left.len() == before {
                // A cycle the planner would have refused: leave them out.
                break;
            }
        }
        if scored.is_empty() && over.is_empty() {
            return None;
        }
        // A rule that reads a view over views, or a score, waits for the
        // stage; one that reads only a scored view's own columns (a
        // threshold on its features) runs on the instances, as before.
        let rules: BTreeSet<usize> = (0..sql.rules.len())
            .filter(|&r| {
                let rule = &sql.rules[r];
                rule.views.iter().any(|v| over.contains(v))
                    || (rule.views.iter().any(|v| scored.contains(v)) && reads_scores(&rule.plan))
            })
            .collect();
        let mut needed: Vec<usize> = scored.iter().chain(&over).copied().collect();
        needed.extend(
            rules
                .iter()
                .flat_map(|&r| sql.rules[r].views.iter().copied()),
        );
        let mut views = BTreeSet::new();
        while let Some(v) = needed.pop() {
            if is_over(v) {
                needed.extend(sql.views[v].inputs.iter().copied());
            } else {
                views.insert(v);
            }
        }
        Some(Deferral {
            scored,
            over,
            views,
            rules,
        })
    }
}

/// Whether `plan` (its subqueries included) reads a score column.
fn reads_scores(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    use datafusion::logical_expr::LogicalPlan;
    let is_score = |name: &str| name == ANOMALY_SCORE || name == ANOMALY_FEATURES;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        // A rule that only selects a score has its projection pushed into
        // the scan: no expression names the column, the scan's schema does.
        if let LogicalPlan::TableScan(scan) = node
            && scan
                .projected_schema
                .fields()
                .iter()
                .any(|f| is_score(f.name()))
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::Column(c) = x
                    && is_score(&c.name)
                {
                    found = true;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// Closed windows of one view, as its SQL computed them (a scored view's
/// without its score columns).
#[derive(Debug, Clone)]
pub struct ViewRows {
    pub view: usize,
    /// The view's name, which the relay carries.
    pub name: String,
    pub batches: Vec<RecordBatch>,
}

/// First bytes of a relay message that carries view rows, not JSON.
const MAGIC: &[u8; 4] = b"TMV1";

/// `rows` as relay messages under `max_bytes` each (a batch is halved
/// until it fits, down to one row): the magic, the view's name (u16
/// length, UTF-8), then an Arrow IPC stream.
pub fn encode(rows: &ViewRows, max_bytes: usize) -> Result<Vec<Vec<u8>>, EngineError> {
    let mut out = Vec::new();
    for b in &rows.batches {
        encode_batch(&rows.name, b, max_bytes, &mut out)?;
    }
    Ok(out)
}

fn encode_batch(
    name: &str,
    batch: &RecordBatch,
    max_bytes: usize,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), EngineError> {
    let fail = |e: datafusion::arrow::error::ArrowError| {
        EngineError::Internal(format!("encoding rows of view `{name}`: {e}"))
    };
    let len = u16::try_from(name.len())
        .map_err(|_| EngineError::Internal(format!("view name `{name}` is too long")))?;
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(MAGIC);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(name.as_bytes());
    {
        let mut w = StreamWriter::try_new(&mut m, &batch.schema()).map_err(fail)?;
        w.write(batch).and_then(|_| w.finish()).map_err(fail)?;
    }
    if m.len() <= max_bytes || batch.num_rows() <= 1 {
        out.push(m);
        return Ok(());
    }
    let half = batch.num_rows() / 2;
    encode_batch(name, &batch.slice(0, half), max_bytes, out)?;
    encode_batch(
        name,
        &batch.slice(half, batch.num_rows() - half),
        max_bytes,
        out,
    )
}

/// Why a relay message of view rows does not read (another version of
/// telemine in the group, or a damaged message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableRows {
    #[error("truncated view rows")]
    Truncated,
    #[error("a view name that is not UTF-8")]
    NameNotUtf8,
    #[error("unreadable rows of view `{view}`: {why}")]
    Arrow { view: String, why: String },
}

/// Reads a message [`encode`] wrote: `None` when `payload` is not one
/// (a JSON relay message).
pub fn decode(payload: &[u8]) -> Option<Result<(String, Vec<RecordBatch>), UnreadableRows>> {
    let rest = payload.strip_prefix(MAGIC)?;
    let read = || {
        let (len, rest) = rest.split_at_checked(2).ok_or(UnreadableRows::Truncated)?;
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        let (name, ipc) = rest
            .split_at_checked(len)
            .ok_or(UnreadableRows::Truncated)?;
        let name = std::str::from_utf8(name).map_err(|_| UnreadableRows::NameNotUtf8)?;
        let unreadable = |e: datafusion::arrow::error::ArrowError| UnreadableRows::Arrow {
            view: name.to_string(),
            why: e.to_string(),
        };
        let reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(unreadable)?;
        let batches = reader.collect::<Result<Vec<_>, _>>().map_err(unreadable)?;
        Ok((name.to_string(), batches))
    };
    Some(read())
}

/// What the stage gave when the clock moved.
#[derive(Debug, Default)]
pub struct Scored {
    pub rows: Vec<Alert>,
    pub evaluations: Vec<Evaluation>,
}

/// Rows held for one window end.
#[derive(Debug, Default)]
struct Held {
    views: BTreeMap<usize, Vec<RecordBatch>>,
    /// (view, series and window start) of every row held.
    ids: HashSet<(usize, u64)>,
    /// The first relay message that brought rows here.
    from: Option<i64>,
}

/// See the module docs.
pub struct ScoringStage {
    /// Plans, table slots and the detectors as scorers; evaluated by this
    /// stage only.
    sql: SqlSet,
    plan: Deferral,
    held: BTreeMap<i64, Held>,
    held_rows: usize,
    /// Rows held at most ([`MAX_HELD_ROWS`] unless set).
    max_held_rows: usize,
    /// The last window end scored.
    done_until: Option<i64>,
    /// With allowed lateness: a digest of each row scored, by window end,
    /// for the windows that may fire again.
    scored_rows: BTreeMap<i64, HashSet<u64>>,
    max_lateness_ms: i64,
    metrics: Arc<Metrics>,
}

impl ScoringStage {
    /// A stage over `sql` (its scored views' scorers attached), which has
    /// scored every window end up to `done_until` (restored state).
    pub fn new(
        mut sql: SqlSet,
        plan: Deferral,
        done_until: Option<i64>,
        max_lateness_ms: i64,
        metrics: Arc<Metrics>,
    ) -> ScoringStage {
        sql.observe(metrics.clone());
        ScoringStage {
            sql,
            plan,
            held: BTreeMap::new(),
            held_rows: 0,
            max_held_rows: MAX_HELD_ROWS,
            done_until,
            scored_rows: BTreeMap::new(),
            max_lateness_ms,
            metrics,
        }
    }

    /// The same stage holding at most `rows` rows (tests).
    pub fn with_max_held_rows(mut self, rows: usize) -> ScoringStage {
        self.max_held_rows = rows;
        self
    }

    /// Rows held now, waiting for the clock.
    pub fn held_rows(&self) -> usize {
        self.held_rows
    }

    /// Swaps in a new SQL set (hot reload): the scorers stay with their
    /// views, the rows held move to the views of the same name (those the
    /// new SQL does not defer are dropped). `None` when the new SQL is not
    /// deferred at all (see [`Deferral::plan`]): the stage is then left
    /// as it was.
    pub fn replace_sql(&mut self, mut sql: SqlSet) -> Option<()> {
        sql.observe(self.metrics.clone());
        for v in &self.sql.views {
            if let Some(s) = self.sql.scorer(&v.name) {
                sql.attach_scorer(&v.name, s);
            }
        }
        let plan = Deferral::plan(&sql)?;
        let index: BTreeMap<usize, usize> = self
            .plan
            .views
            .iter()
            .filter_map(|&old| {
                let name = &self.sql.views[old].name;
                let new = sql.views.iter().position(|v| &v.name == name)?;
                plan.views.contains(&new).then_some((old, new))
            })
            .collect();
        for held in self.held.values_mut() {
            held.views = std::mem::take(&mut held.views)
                .into_iter()
                .filter_map(|(old, b)| Some((*index.get(&old)?, b)))
                .collect();
            held.ids = std::mem::take(&mut held.ids)
                .into_iter()
                .filter_map(|(old, id)| Some((*index.get(&old)?, id)))
                .collect();
        }
        self.held.retain(|_, h| !h.views.is_empty());
        self.held_rows = self
            .held
            .values()
            .flat_map(|h| h.views.values())
            .flatten()
            .map(|b| b.num_rows())
            .sum();
        self.sql = sql;
        self.plan = plan;
        Some(())
    }

    /// The index of the view named `name` whose rows this stage takes.
    pub fn view(&self, name: &str) -> Option<usize> {
        self.plan
            .views
            .iter()
            .copied()
            .find(|&i| self.sql.views[i].name == name)
    }

    /// The relay offset of the first message whose rows are still held.
    pub fn held_from(&self) -> Option<i64> {
        self.held.values().filter_map(|h| h.from).min()
    }

    /// Takes closed windows of one view (relayed by message `offset`).
    pub fn add(&mut self, rows: ViewRows, offset: Option<i64>) -> Result<(), EngineError> {
        if !self.plan.views.contains(&rows.view) {
            return Ok(());
        }
        let Some(first) = rows.batches.first() else {
            return Ok(());
        };
        let schema = first.schema();
        let internal =
            |e: datafusion::arrow::error::ArrowError| EngineError::Internal(e.to_string());
        let end = schema.index_of(WINDOW_END).map_err(internal)?;
        let mut id_columns = vec![schema.index_of(WINDOW_START).map_err(internal)?];
        // The series: the view's keys it selects (a key not selected
        // cannot tell series apart here, nor in the detector).
        id_columns.extend(
            self.sql.views[rows.view]
                .keys
                .iter()
                .filter_map(|k| schema.index_of(k).ok()),
        );
        let mut dropped = 0u64;
        for (at, batches) in split_by_time(&rows.batches, end)? {
            let scored_before = self.done_until.is_some_and(|d| at <= d);
            if scored_before && self.max_lateness_ms == 0 {
                dropped += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                continue;
            }
            let held = self.held.entry(at).or_default();
            for b in batches {
                let ids = row_hashes(&b, &id_columns)?;
                let digests = if scored_before {
                    row_hashes(&b, &(0..b.num_columns()).collect::<Vec<_>>())?
                } else {
                    Vec::new()
                };
                let seen = self.scored_rows.get(&at);
                let keep: BooleanArray = (0..b.num_rows())
                    .map(|i| {
                        let copy = if scored_before {
                            seen.is_some_and(|s| s.contains(&digests[i]))
                        } else {
                            held.ids.contains(&(rows.view, ids[i]))
                        };
                        if !copy {
                            held.ids.insert((rows.view, ids[i]));
                        }
                        Some(!copy)
                    })
                    .collect();
                let kept = filter_record_batch(&b, &keep).map_err(internal)?;
                dropped += (b.num_rows() - kept.num_rows()) as u64;
                if kept.num_rows() > 0 {
                    self.held_rows += kept.num_rows();
                    held.views.entry(rows.view).or_default().push(kept);
                    held.from = match (held.from, offset) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        self.held.retain(|_, h| !h.views.is_empty());
        if dropped > 0 {
            Metrics::add(&self.metrics.scoring_copies, dropped);
        }
        Ok(())
    }

    /// Scores every window end up to `clock` (the alerting clock), in
    /// order, and runs the rules reading them; past the bound on rows held
    /// ([`MAX_HELD_ROWS`]) the oldest are scored without waiting.
    pub async fn advance(&mut self, clock: Option<i64>) -> Scored {
        let mut out = Scored::default();
        while let Some((&at, _)) = self.held.first_key_value() {
            let due = clock.is_some_and(|c| at <= c);
            if !due && self.held_rows <= self.max_held_rows {
                break;
            }
            if !due {
                Metrics::add(&self.metrics.scoring_forced, 1);
                tracing::warn!(
                    window_end = at,
                    held = self.held_rows,
                    bound = self.max_held_rows,
                    "the alerting clock has not passed this window end, but the rows held for scoring passed their bound: scoring it now (a partition that reports nothing holds the clock back)"
                );
            }
            if let Some(held) = self.held.remove(&at) {
                self.score(at, held, &mut out).await;
            }
        }
        out
    }

    /// End of input: scores everything held.
    pub async fn finish(&mut self) -> Scored {
        self.advance(Some(i64::MAX)).await
    }

    /// Scores one window end's rows, computes the views over views over
    /// them and runs the rules that read them.
    async fn score(&mut self, at: i64, held: Held, out: &mut Scored) {
        let rows: usize = held.views.values().flatten().map(|b| b.num_rows()).sum();
        self.held_rows = self.held_rows.saturating_sub(rows);
        let mut outputs: BTreeMap<usize, Vec<RecordBatch>> = BTreeMap::new();
        for (vi, batches) in held.views {
            let batches = if self.plan.scored.contains(&vi) {
                match self.sql.score(vi, batches) {
                    Ok(b) => b,
                    Err(e) => {
                        let view = &self.sql.views[vi];
                        tracing::error!(view = %view.name, error = %e.strip_backtrace(), "scoring failed; what reads this view skips window end {at}");
                        continue;
                    }
                }
            } else {
                batches
            };
            if self.max_lateness_ms > 0 {
                let digests = self.scored_rows.entry(at).or_default();
                for b in &batches {
                    // The digest of the rows as relayed: without scores.
                    let n = if self.plan.scored.contains(&vi) {
                        b.num_columns().saturating_sub(2)
                    } else {
                        b.num_columns()
                    };
                    if let Ok(h) = row_hashes(b, &(0..n).collect::<Vec<_>>()) {
                        digests.extend(h);
                    }
                }
            }
            outputs.insert(vi, batches);
        }
        for &d in &self.plan.over {
            let inputs: Vec<(usize, Vec<RecordBatch>)> = self.sql.views[d]
                .inputs
                .iter()
                .map(|&i| (i, outputs.get(&i).cloned().unwrap_or_default()))
                .collect();
            if inputs.iter().all(|(_, b)| b.is_empty()) {
                continue;
            }
            Metrics::add(&self.metrics.window_closes, 1);
            match self.sql.run_view_over_views(d, inputs).await {
                Ok(o) if o.is_empty() => {}
                Ok(o) => {
                    outputs.insert(d, o);
                }
                Err(e) => {
                    Metrics::add(&self.metrics.sql_errors, 1);
                    let view = &self.sql.views[d];
                    tracing::error!(view = %view.name, file = %view.file.display(), error = %e.strip_backtrace(), "feature view failed; its window ending {at} is skipped");
                }
            }
        }
        let updated: BTreeSet<usize> = outputs.keys().copied().collect();
        for (vi, batches) in outputs {
            self.sql.set_output(vi, batches).await;
        }
        for &ri in &self.plan.rules {
            let rule = &self.sql.rules[ri];
            if !rule.views.iter().any(|v| updated.contains(v)) {
                continue;
            }
            out.evaluations.push(Evaluation {
                rule: rule.name.clone(),
                timing: rule.timing,
                at,
            });
            match self.sql.run_rule(ri).await {
                Ok(batches) => {
                    let alerts = alerts_from_batches(rule, &batches);
                    Metrics::add(&self.metrics.alerts, alerts.len() as u64);
                    out.rows.extend(alerts);
                }
                Err(e) => {
                    Metrics::add(&self.metrics.sql_errors, 1);
                    tracing::error!(rule = %rule.name, file = %rule.file.display(), error = %e.strip_backtrace(), "rule failed; its alerts for this window end are lost");
                }
            }
        }
        self.sql.clear_views().await;
        self.done_until = Some(self.done_until.map_or(at, |d| d.max(at)));
        if let Some(d) = self.done_until {
            self.scored_rows = self.scored_rows.split_off(&(d - self.max_lateness_ms));
        }
    }
}

/// The largest allowed lateness over `sources`, ms.
pub fn max_lateness_ms(sources: &[telemine_sql::source::SourceDef]) -> i64 {
    sources
        .iter()
        .map(|s| s.allowed_lateness.as_millis() as i64)
        .max()
        .unwrap_or(0)
}

/// One hash per row over `columns` (xxh3, no seed).
fn row_hashes(batch: &RecordBatch, columns: &[usize]) -> Result<Vec<u64>, EngineError> {
    let cols: Vec<ArrayRef> = columns.iter().map(|&c| batch.column(c).clone()).collect();
    let mut hashes = vec![0u64; batch.num_rows()];
    create_hashes_with_hasher(&cols, &Xxh3DefaultBuilder, &mut hashes)
        .map_err(|e| EngineError::Internal(format!("hashing view rows: {e}")))?;
    Ok(hashes)
}
