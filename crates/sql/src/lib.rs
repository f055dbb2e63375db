//! Analysts' SQL: loading, checking and running feature views and rules.
//!
//! A SQL folder holds `features/*.sql` — feature views, one `SELECT` per
//! file, each reading one source through `TUMBLE(source, time_column,
//! INTERVAL '…')` — and `rules/*.sql` — alert rules, one `SELECT` per file
//! over feature views; every row a rule returns is an alert. Metadata rides
//! in leading comments (`-- @severity: critical`).
//!
//! [`SqlSet::load`] parses, rewrites and plans every file once, against the
//! declared source schemas, and reports every problem as a
//! `file:line:col: message` [`Diagnostic`](telemine_types::diagnostic::Diagnostic);
//! the same load is what `telemine check` runs. At run time the engine hands
//! each view the rows of its closing windows ([`SqlSet::run_view`]) and then
//! runs the rules over the views' fresh output ([`SqlSet::run_rule`]). This
//! crate never sees Kafka, the config file or the metrics: reference tables
//! arrive read ([`ReferenceTable`]) and what a set does is reported to an
//! [`Observer`]. [`source::SourceDef`] is a source as the engine runs it.

mod aggregates;
mod alerts;
mod files;
mod panes;
mod planner;
pub mod sandbox;
mod sliding;
pub mod source;
mod window;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::PartitionData;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

pub use alerts::alerts_from_batches;
pub use files::{Kind, RuleMeta, SqlFile, read_dir, rule_meta};
pub use panes::{PaneColumns, PanePlan};
pub use sliding::Sliding;
pub use window::{WINDOW_END, WINDOW_START, WindowKind, WindowSpec};

use crate::source::SourceDef;
use telemine_types::diagnostic::Diagnostics;

/// A feature view: SQL over the closing windows of one source.
#[derive(Debug, Clone)]
pub struct View {
    pub name: String,
    pub file: PathBuf,
    /// Index of the source it windows, in the config's source order
    /// (`None` for a view over views).
    pub source: Option<usize>,
    /// A view over views: the windowed views it reads (empty otherwise).
    pub inputs: Vec<usize>,
    pub window: WindowSpec,
    /// Name of the table that holds the window's input rows.
    pub input_table: String,
    pub input_schema: SchemaRef,
    pub plan: LogicalPlan,
    pub output_schema: SchemaRef,
    /// GROUP BY columns that identify a series (e.g. `host`), excluding the
    /// window bounds: they become alert labels.
    pub keys: Vec<String>,
    /// SESSION views: the source columns (batch-schema indices) sessions
    /// are kept per.
    pub session_keys: Vec<usize>,
    /// HOP views whose aggregate splits into panes: its two phases, and
    /// where the window bounds sit in the partial states. `None`: each
    /// window is recomputed.
    pub panes: Option<Arc<PanePlan>>,
    /// The model that scores this view, if any: `output_schema` then ends
    /// with [`ANOMALY_SCORE`] and [`ANOMALY_FEATURES`].
    pub model: Option<ModelBinding>,
}

/// How a view's windows can be computed when several instances share the
/// consumer group, each holding some of its source's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Its GROUP BY holds every column of its source's message `key`:
    /// one partition's records make whole rows of it.
    PerPartition,
    /// It groups by other columns (`by`; empty: one group over all
    /// records): its rows need the records of every partition, brought
    /// together by `by`.
    Repartitioned { by: Vec<String> },
    /// A view over views: computed where its inputs' rows meet.
    OverViews,
}

impl View {
    /// See [`Placement`]; `sources` are the config's, in the SQL set's
    /// order.
    pub fn placement(&self, sources: &[SourceDef]) -> Placement {
        let Some(source) = self.source.and_then(|s| sources.get(s)) else {
            return Placement::OverViews;
        };
        if !source.key.is_empty() && source.key.iter().all(|k| self.keys.contains(k)) {
            Placement::PerPartition
        } else {
            Placement::Repartitioned {
                by: self.keys.clone(),
            }
        }
    }
}

/// The column of a scored view with each row's anomaly score in [0, 1]
/// (NULL while its model is still warming up).
pub const ANOMALY_SCORE: &str = "anomaly_score";
/// The column of a scored view naming the features that contributed most
/// to the row's score, worst first, comma-separated.
pub const ANOMALY_FEATURES: &str = "anomaly_features";

/// Which columns of a view its model reads (indices into the view's SQL
/// output, before the score columns).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelBinding {
    pub name: String,
    pub features: Vec<usize>,
    pub keys: Vec<usize>,
}

/// What the SQL needs to know of a configured model.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub name: String,
    pub view: String,
    pub features: Vec<String>,
    /// Empty: the view's keys.
    pub keys: Vec<String>,
    /// Where it is configured, for messages.
    pub config: PathBuf,
}

/// Scores a view's output rows: the batches with the score columns added.
pub trait ViewScorer: Send + Sync {
    fn score(
        &self,
        view: &View,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError>;
}

/// An alert rule: SQL over feature views; each returned row is an alert.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub severity: telemine_types::alert::rule::Severity,
    pub file: PathBuf,
    pub plan: LogicalPlan,
    /// Indices of the views it reads.
    pub views: Vec<usize>,
    /// Output columns that are view keys: the alert's labels.
    pub label_columns: Vec<String>,
    /// `@for` and `@keep_firing_for`.
    pub timing: telemine_types::alert::rule::Timing,
    /// `@label.NAME` labels, added to every alert.
    pub extra_labels: std::collections::BTreeMap<String, String>,
    /// Annotation templates, by name.
    pub annotations: Vec<(String, telemine_types::alert::template::Template)>,
}

/// What a SQL set may use beyond its files: reference tables and the
/// per-query memory limit.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// Bytes one evaluation of a view or rule may hold (DataFusion's memory
    /// pool); more fails that evaluation with `ResourcesExhausted`.
    pub query_memory_limit: usize,
    /// Static tables, joinable by name.
    pub tables: Vec<ReferenceTable>,
    /// Models scoring views: their score columns are part of the view.
    pub models: Vec<ModelSpec>,
    /// Longest one evaluation of a view or rule may run; longer fails it
    /// (and only it).
    pub query_time_limit: std::time::Duration,
}

/// Where a SQL set reports what it does: the engine's metrics and live
/// page implement it; without one (`telemine check`) nothing is reported.
pub trait Observer: Send + Sync {
    /// One evaluation of view or rule (`kind`) `name` ran for `seconds`;
    /// `failed`: it ended in an error.
    fn evaluated(&self, kind: &str, name: &str, seconds: f64, failed: bool);
    /// Model `model` scored `rows` rows in `seconds`.
    fn scored(&self, model: &str, rows: usize, seconds: f64);
    /// View `view` (its series keyed by `keys`) made these rows, scored
    /// where a model scores it.
    fn view_rows(&self, view: &str, keys: &[String], batches: &[RecordBatch]);
}

/// A reference table, read before planning: joinable by its name.
#[derive(Debug, Clone)]
pub struct ReferenceTable {
    pub name: String,
    /// Where it was read from (diagnostics point there).
    pub path: PathBuf,
    /// Its rows, or why they could not be read.
    pub rows: Result<RecordBatch, String>,
}

/// Every view and rule of a SQL folder, planned and ready to run.
pub struct SqlSet {
    ctx: SessionContext,
    pub views: Vec<View>,
    pub rules: Vec<Rule>,
    slots: HashMap<String, PartitionData>,
    /// Scorers of the views models score, by view name.
    scorers: HashMap<String, Arc<dyn ViewScorer>>,
    /// What one evaluation may take: time, and bytes of output.
    limits: QueryLimits,
    /// What it was planned from, to plan it again.
    origin: Arc<Origin>,
    /// Where evaluation times, model figures and the rows made are
    /// reported (`None`: nowhere, as under `telemine check`).
    observer: Option<Arc<dyn Observer>>,
}

/// The files, sources and options a SQL set was planned from.
#[derive(Debug)]
pub(crate) struct Origin {
    files: Vec<SqlFile>,
    sources: Vec<SourceDef>,
    options: SqlOptions,
}

/// The bounds of one evaluation (see [`bounded`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueryLimits {
    pub time: std::time::Duration,
    pub output_bytes: usize,
}

/// Runs one evaluation's plan to the end under `limits`: its output is
/// collected batch by batch and refused once it holds more than the memory
/// limit (the pool only sees operators' state, not what the query
/// returns), and the whole run is stopped at the time limit. DataFusion's
/// operators yield to the runtime between batches, so the limit is met
/// within one batch's work; what one expression may build in one call is
/// bounded by the sandbox.
pub(crate) async fn bounded(
    limits: QueryLimits,
    stream: impl std::future::Future<
        Output = Result<datafusion::execution::SendableRecordBatchStream, DataFusionError>,
    >,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    use futures::StreamExt;
    let run = async {
        let mut stream = stream.await?;
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            bytes += batch.get_array_memory_size();
            if bytes > limits.output_bytes {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "the query's output passed engine.query_memory_limit ({} bytes)",
                    limits.output_bytes
                )));
            }
            if batch.num_rows() > 0 {
                out.push(batch);
            }
        }
        Ok(out)
    };
    match tokio::time::timeout(limits.time, run).await {
        Ok(r) => r,
        Err(_) => Err(DataFusionError::Execution(format!(
            "{TIME_LIMIT_MARK} ({:?}); stopped",
            limits.time
        ))),
    }
}

const TIME_LIMIT_MARK: &str = "ran longer than engine.query_time_limit";

/// Whether a view's or rule's failure was its time limit.
pub fn is_time_exceeded(e: &DataFusionError) -> bool {
    e.to_string().contains(TIME_LIMIT_MARK)
}

impl std::fmt::Debug for SqlSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSet")
            .field("views", &self.views.len())
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl SqlSet {
    /// Another handle on the same plans, context, table slots and
    /// scorers, for a second window engine that evaluates on the same
    /// thread (a partition computed on its own, `crates/stream/src/driver.rs`): each
    /// evaluation fills the slots it reads and clears them after, so two
    /// engines taking turns never see each other's rows.
    pub fn fork(&self) -> SqlSet {
        SqlSet {
            ctx: self.ctx.clone(),
            views: self.views.clone(),
            rules: self.rules.clone(),
            slots: self.slots.clone(),
            scorers: self.scorers.clone(),
            limits: self.limits,
            origin: self.origin.clone(),
            observer: self.observer.clone(),
        }
    }

    /// Reports each evaluation's time, each model's scoring and the rows
    /// each view makes to `observer` (the engine's metrics: `/metrics`
    /// and the API).
    pub fn observe(&mut self, observer: Arc<dyn Observer>) {
        self.observer = Some(observer);
    }

    /// The same files planned again, in a context and table slots of their
    /// own (no scorers): a set that can evaluate while this one does, on
    /// another task (the scoring stage of `run`). Views bound to derived
    /// sources (`crates/stream/src/repartition.rs`) are planned as they were loaded.
    pub async fn replan(&self) -> Result<SqlSet, Diagnostics> {
        let o = &self.origin;
        let mut set = planner::plan_all(o.files.clone(), &o.sources, &o.options).await?;
        set.observer = self.observer.clone();
        Ok(set)
    }

    /// Loads and plans every `.sql` file under `dir`. All problems are
    /// collected and returned together.
    pub async fn load(
        dir: &Path,
        sources: &[SourceDef],
        options: &SqlOptions,
    ) -> Result<SqlSet, Diagnostics> {
        let files = files::read_dir(dir)?;
        SqlSet::load_files(dir, files, sources, options).await
    }

    /// Plans the given files (read from `dir`, or made in memory).
    pub async fn load_files(
        dir: &Path,
        files: Vec<SqlFile>,
        sources: &[SourceDef],
        options: &SqlOptions,
    ) -> Result<SqlSet, Diagnostics> {
        if files.iter().all(|f| f.kind != Kind::View) {
            return Err(Diagnostics(vec![
                telemine_types::diagnostic::Diagnostic::new(
                    &dir.join("features"),
                    1,
                    1,
                    "no feature views: add at least one features/*.sql",
                ),
            ]));
        }
        planner::plan_all(files, sources, options).await
    }

    /// Runs view `i` over `input` (rows of closing windows, with window
    /// columns) and keeps its output for the rules. Returns the output.
    pub async fn run_view(
        &self,
        i: usize,
        input: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let view = &self.views[i];
        self.fill(&view.input_table, input).await;
        let result = self
            .timed("view", &view.name, self.execute(&view.plan))
            .await;
        self.fill(&view.input_table, Vec::new()).await;
        let out = self.scored(i, result?)?;
        self.fill(&view.name, out.clone()).await;
        Ok(out)
    }

    /// Lets `scorer` score view `view`'s rows (a view a model scores).
    pub fn attach_scorer(&mut self, view: &str, scorer: Arc<dyn ViewScorer>) {
        self.scorers.insert(view.to_string(), scorer);
    }

    /// The scorer attached to view `view`, if any.
    pub fn scorer(&self, view: &str) -> Option<Arc<dyn ViewScorer>> {
        self.scorers.get(view).cloned()
    }

    /// View `i`'s output `out` (as its SQL computed it) scored by the
    /// scorer attached to it (see [`SqlSet::scored`]).
    pub fn score(
        &self,
        i: usize,
        out: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        self.scored(i, out)
    }

    /// A handle like [`SqlSet::fork`] without the scorers: what an engine
    /// whose scoring is deferred evaluates (see `crates/stream/src/deferred.rs`).
    pub fn fork_unscored(&self) -> SqlSet {
        let mut sql = self.fork();
        sql.scorers.clear();
        sql
    }

    /// View `i`'s output with its model's score columns (NULL when no
    /// scorer is attached, as under `telemine check`).
    fn scored(&self, i: usize, out: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, DataFusionError> {
        let view = &self.views[i];
        if out.is_empty() {
            return Ok(out);
        }
        let Some(model) = &view.model else {
            if let Some(m) = &self.observer {
                m.view_rows(&view.name, &view.keys, &out);
            }
            return Ok(out);
        };
        match self.scorers.get(&view.name) {
            Some(s) => {
                let rows: usize = out.iter().map(|b| b.num_rows()).sum();
                let started = std::time::Instant::now();
                let scored = s.score(view, out)?;
                if let Some(m) = &self.observer {
                    m.scored(&model.name, rows, started.elapsed().as_secs_f64());
                    m.view_rows(&view.name, &view.keys, &scored);
                }
                Ok(scored)
            }
            // Unscored here (deferred to the scoring stage, or under
            // `check`): the stage shows the scored rows.
            None => out
                .into_iter()
                .map(|b| {
                    let mut columns = b.columns().to_vec();
                    columns.push(datafusion::arrow::array::new_null_array(
                        &datafusion::arrow::datatypes::DataType::Float64,
                        b.num_rows(),
                    ));
                    columns.push(datafusion::arrow::array::new_null_array(
                        &datafusion::arrow::datatypes::DataType::Utf8,
                        b.num_rows(),
                    ));
                    Ok(RecordBatch::try_new(view.output_schema.clone(), columns)?)
                })
                .collect(),
        }
    }

    /// What a pane-split HOP view's aggregate reads from `input` (rows
    /// with their pane's bounds as window bounds), for [`Sliding::advance`].
    pub async fn run_view_panes(
        &self,
        i: usize,
        input: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let plan = self.pane_plan(i)?;
        panes::run_input(&self.ctx, plan, input, self.limits).await
    }

    /// The rest of a pane-split HOP view over its aggregate's output
    /// `merged` (see [`Sliding`]); keeps the output for the rules, like
    /// [`SqlSet::run_view`].
    pub async fn run_view_windows(
        &self,
        i: usize,
        merged: RecordBatch,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let plan = self.pane_plan(i)?;
        let out = self
            .timed(
                "view",
                &self.views[i].name,
                panes::run_upper(&self.ctx, plan, merged, self.limits),
            )
            .await?;
        let out = self.scored(i, out)?;
        self.fill(&self.views[i].name, out.clone()).await;
        Ok(out)
    }

    fn pane_plan(&self, i: usize) -> Result<&PanePlan, DataFusionError> {
        self.views[i].panes.as_deref().ok_or_else(|| {
            DataFusionError::Internal(format!(
                "view `{}` does not split into panes",
                self.views[i].name
            ))
        })
    }

    /// Runs view-over-views `i` with its input views holding `inputs` (the
    /// windows all of them have closed). The caller sets what the rules
    /// see afterwards with [`SqlSet::set_output`].
    pub async fn run_view_over_views(
        &self,
        i: usize,
        inputs: Vec<(usize, Vec<RecordBatch>)>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        for (vi, batches) in inputs {
            self.fill(&self.views[vi].name, batches).await;
        }
        let out = self
            .timed(
                "view",
                &self.views[i].name,
                self.execute(&self.views[i].plan),
            )
            .await;
        self.clear_views().await;
        self.scored(i, out?)
    }

    /// Sets what view `i`'s table holds for the rules.
    pub async fn set_output(&self, i: usize, batches: Vec<RecordBatch>) {
        self.fill(&self.views[i].name, batches).await;
    }

    /// Runs rule `i` over the views' latest output.
    pub async fn run_rule(&self, i: usize) -> Result<Vec<RecordBatch>, DataFusionError> {
        let rule = &self.rules[i];
        self.timed("rule", &rule.name, self.execute(&rule.plan))
            .await
    }

    /// Runs `work`, an evaluation of view or rule `name`, into the
    /// evaluation-time histogram (and a failure into its errors).
    async fn timed<T>(
        &self,
        kind: &str,
        name: &str,
        work: impl Future<Output = Result<T, DataFusionError>>,
    ) -> Result<T, DataFusionError> {
        let started = std::time::Instant::now();
        let out = work.await;
        if let Some(m) = &self.observer {
            m.evaluated(kind, name, started.elapsed().as_secs_f64(), out.is_err());
        }
        out
    }

    /// Forgets the views' latest output (after the rules ran).
    pub async fn clear_views(&self) {
        for v in &self.views {
            self.fill(&v.name, Vec::new()).await;
        }
    }

    async fn execute(&self, plan: &LogicalPlan) -> Result<Vec<RecordBatch>, DataFusionError> {
        bounded(self.limits, async {
            let df = self.ctx.execute_logical_plan(plan.clone()).await?;
            df.execute_stream().await
        })
        .await
    }

    async fn fill(&self, table: &str, batches: Vec<RecordBatch>) {
        if let Some(slot) = self.slots.get(table) {
            *slot.write().await = batches;
        }
    }
}

/// The values `plan` compares [`ANOMALY_SCORE`] with, as a lower bound
/// (`anomaly_score > 0.99`, `>=`, or the literal on the left with `<` /
/// `<=`): a rule's score thresholds, for the live page.
pub fn score_thresholds(plan: &LogicalPlan) -> Vec<f64> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
    fn column(e: &Expr) -> bool {
        match e {
            Expr::Column(c) => c.name == ANOMALY_SCORE,
            Expr::Cast(c) => column(&c.expr),
            Expr::TryCast(c) => column(&c.expr),
            _ => false,
        }
    }
    fn literal(e: &Expr) -> Option<f64> {
        match e {
            Expr::Literal(v, _) => v.to_string().parse().ok(),
            Expr::Cast(c) => literal(&c.expr),
            Expr::TryCast(c) => literal(&c.expr),
            _ => None,
        }
    }
    let mut found = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|x| {
                if let Expr::BinaryExpr(BinaryExpr { left, op, right }) = x {
                    let t = match op {
                        Operator::Gt | Operator::GtEq if column(left) => literal(right),
                        Operator::Lt | Operator::LtEq if column(right) => literal(left),
                        _ => None,
                    };
                    if let Some(t) = t.filter(|t| t.is_finite()) {
                        found.push(t);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found.sort_by(f64::total_cmp);
    found.dedup();
    found
}

/// Whether a view's or rule's failure was its memory limit.
pub fn is_memory_exceeded(e: &DataFusionError) -> bool {
    matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
}

/// Registers an empty in-memory table whose contents the engine swaps per
/// evaluation; plans made once keep reading the same table.
fn register_slot(
    ctx: &SessionContext,
    slots: &mut HashMap<String, PartitionData>,
    name: &str,
    schema: SchemaRef,
) -> Result<(), DataFusionError> {
    let table = MemTable::try_new(schema, vec![Vec::new()])?;
    slots.insert(name.to_string(), table.batches[0].clone());
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use futures::StreamExt;

    use super::*;

    fn limits(time_ms: u64, output_bytes: usize) -> QueryLimits {
        QueryLimits {
            time: std::time::Duration::from_millis(time_ms),
            output_bytes,
        }
    }

    /// A stream of `n` batches of 1,000 rows, then the end, or no end.
    fn stream(n: usize, end: bool) -> datafusion::execution::SendableRecordBatchStream {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..1000))],
        )
        .expect("batch");
        let batches = futures::stream::iter((0..n).map(move |_| Ok(batch.clone())));
        let tail = if end {
            futures::stream::empty().boxed()
        } else {
            futures::stream::pending().boxed()
        };
        Box::pin(RecordBatchStreamAdapter::new(schema, batches.chain(tail)))
    }

    #[tokio::test]
    async fn an_evaluation_that_never_ends_is_stopped_at_the_time_limit() {
        let r = bounded(limits(50, usize::MAX), async { Ok(stream(2, false)) }).await;
        let e = r.expect_err("stopped");
        assert!(is_time_exceeded(&e), "{e}");
    }

    #[tokio::test]
    async fn an_evaluation_whose_output_passes_the_limit_is_refused() {
        let r = bounded(limits(60_000, 20_000), async { Ok(stream(10, true)) }).await;
        let e = r.expect_err("refused");
        assert!(!is_time_exceeded(&e), "{e}");
        assert!(e.to_string().contains("query_memory_limit"), "{e}");
        let ok = bounded(limits(60_000, usize::MAX), async { Ok(stream(10, true)) })
            .await
            .expect("within the limits");
        assert_eq!(ok.iter().map(RecordBatch::num_rows).sum::<usize>(), 10_000);
    }
}
