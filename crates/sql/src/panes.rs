//! Pane sharing for hopping windows: one aggregation per slide, not per
//! window.
//!
//! A view over `HOP(source, ts, slide, size)` has `size / slide` windows
//! over every row. Recomputing each window from its rows would cost that
//! many times a tumbling window. Instead the view's aggregate is split in
//! DataFusion's two phases:
//! - **partial**, once per pane (a slide-long slice of event time): the
//!   aggregate's accumulator states per key and pane, computed by
//!   `sliding.rs` from what the aggregate reads (the rows with their pane's
//!   bounds as `window_start` / `window_end`, through the view's filters
//!   and projections);
//! - **merge**, per window: the states of its panes merged by the
//!   aggregate's own accumulators (see `sliding.rs`, two merges per key and
//!   window), then the rest of the view (HAVING, projections) as planned,
//!   over the aggregate's output.
//!
//! Only a view whose one aggregate reads the window rows through filters
//! and projections, groups by plain columns including both window bounds,
//! and has no order-sensitive aggregate splits this way; [`analyse`] says
//! why another does not, and the engine then recomputes each window from
//! its rows (correct, slower).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;

use super::aggregates::Aggregates;
use super::window::{WINDOW_END, WINDOW_START};

/// Where the window bounds sit among the partial states' columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaneColumns {
    pub window_start: usize,
    pub window_end: usize,
}

/// The pieces of the view's aggregate, found in a fresh physical plan.
struct Aggregate {
    /// The node the final phase replaces (the whole aggregate).
    node: Arc<dyn ExecutionPlan>,
    group_by: PhysicalGroupBy,
    aggr_expr: Vec<Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>>,
    filter_expr: Vec<Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>>,
    input: Arc<dyn ExecutionPlan>,
}

/// Operators that keep rows independent: a pane's rows may pass through
/// them on their own.
const ROW_WISE: &[&str] = &[
    "DataSourceExec",
    "ProjectionExec",
    "FilterExec",
    "CoalesceBatchesExec",
    "RepartitionExec",
    "CoalescePartitionsExec",
];

/// A HOP view's aggregate split in two, as physical plans made once: the
/// partial phase over the window rows, and the rest of the view above the
/// aggregate, over a placeholder for the aggregate's output. Each
/// evaluation swaps in its own input (see [`rebind`]).
#[derive(Debug)]
pub struct PanePlan {
    pub cols: PaneColumns,
    /// What the aggregate reads: the window rows through filters and
    /// projections.
    input: Arc<dyn ExecutionPlan>,
    upper: Arc<dyn ExecutionPlan>,
    placeholder: Arc<dyn ExecutionPlan>,
    aggregates: Aggregates,
    /// The GROUP BY expressions, over the aggregate's input.
    group_by: Vec<Arc<dyn PhysicalExpr>>,
}

impl PanePlan {
    /// The GROUP BY expressions (window bounds at `cols`), over the
    /// aggregate's input.
    pub fn group_by(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.group_by
    }

    pub fn aggregates(&self) -> &Aggregates {
        &self.aggregates
    }

    /// Schema of the aggregate's output: GROUP BY columns, then one column
    /// per aggregate.
    pub fn aggregate_schema(&self) -> SchemaRef {
        self.placeholder.schema()
    }
}

/// Whether `plan` splits into panes: its two phases, or why not.
pub(crate) async fn analyse(ctx: &SessionContext, plan: &LogicalPlan) -> Result<PanePlan, String> {
    let physical = ctx
        .state()
        .create_physical_plan(plan)
        .await
        .map_err(|e| e.strip_backtrace())?;
    let agg = find_aggregate(&physical)?;
    let cols = pane_columns(&agg)?;
    let df = |e: DataFusionError| e.strip_backtrace();
    let target = agg.node;
    let placeholder: Arc<dyn ExecutionPlan> =
        MemorySourceConfig::try_new_exec(&[Vec::new()], target.schema(), None).map_err(df)?;
    let upper = physical
        .transform_down(|node| {
            Ok(if Arc::ptr_eq(&node, &target) {
                Transformed::yes(Arc::clone(&placeholder))
            } else {
                Transformed::no(node)
            })
        })
        .map_err(df)?
        .data;
    Ok(PanePlan {
        cols,
        input: agg.input,
        upper,
        placeholder,
        aggregates: Aggregates::new(agg.aggr_expr, agg.filter_expr).map_err(df)?,
        group_by: agg
            .group_by
            .expr()
            .iter()
            .map(|(e, _)| Arc::clone(e))
            .collect(),
    })
}

/// `plan` with every in-memory scan that `pick` selects replaced by a scan
/// of `batches` (same schema and projection).
fn rebind(
    plan: &Arc<dyn ExecutionPlan>,
    pick: impl Fn(&Arc<dyn ExecutionPlan>) -> bool,
    batches: Vec<RecordBatch>,
) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
    Ok(Arc::clone(plan)
        .transform_down(|node| {
            if !pick(&node) {
                return Ok(Transformed::no(node));
            }
            let Some(mem) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|d| d.data_source().downcast_ref::<MemorySourceConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            let fresh: Arc<dyn ExecutionPlan> = MemorySourceConfig::try_new_exec(
                std::slice::from_ref(&batches),
                mem.original_schema(),
                mem.projection().clone(),
            )?;
            Ok(Transformed::yes(fresh))
        })?
        .data)
}

fn pane_columns(agg: &Aggregate) -> Result<PaneColumns, String> {
    if !agg.group_by.is_single() {
        return Err("it uses GROUPING SETS, CUBE or ROLLUP".into());
    }
    if let Some(a) = agg.aggr_expr.iter().find(|a| !a.order_bys().is_empty()) {
        return Err(format!(
            "aggregate `{}` depends on row order (ORDER BY inside it)",
            a.name()
        ));
    }
    let mut bad = None;
    agg.input
        .apply(|node| {
            if !ROW_WISE.contains(&node.name()) {
                bad = Some(node.name().to_string());
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .map_err(|e| e.strip_backtrace())?;
    if let Some(op) = bad {
        return Err(format!(
            "its aggregate reads the window through `{op}`, not only filters and projections"
        ));
    }
    let position = |name: &str| {
        agg.group_by.expr().iter().position(|(e, _)| {
            e.downcast_ref::<Column>()
                .is_some_and(|c| agg.input.schema().field(c.index()).name() == name)
        })
    };
    match (position(WINDOW_START), position(WINDOW_END)) {
        (Some(window_start), Some(window_end)) => Ok(PaneColumns {
            window_start,
            window_end,
        }),
        _ => Err("it does not GROUP BY window_start and window_end as plain columns".into()),
    }
}

/// The view's one aggregate: a single-phase one, or a final phase over its
/// partial phase.
fn find_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Result<Aggregate, String> {
    let mut found: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let _ = plan.apply(|node| {
        if node.is::<AggregateExec>() {
            found.push(Arc::clone(node));
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    let agg = |n: &Arc<dyn ExecutionPlan>| n.downcast_ref::<AggregateExec>().cloned();
    let (node, phase) = match found.as_slice() {
        [one] => {
            let a = agg(one).ok_or("no aggregate")?;
            match a.mode() {
                AggregateMode::Single | AggregateMode::SinglePartitioned => (Arc::clone(one), a),
                _ => return Err("its aggregate was planned in an unexpected shape".into()),
            }
        }
        [top, below] => {
            let (t, b) = (
                agg(top).ok_or("no aggregate")?,
                agg(below).ok_or("no aggregate")?,
            );
            let split = matches!(
                t.mode(),
                AggregateMode::Final | AggregateMode::FinalPartitioned
            ) && *b.mode() == AggregateMode::Partial
                && t.aggr_expr().len() == b.aggr_expr().len();
            if !split {
                return Err(
                    "it aggregates twice (e.g. COUNT(DISTINCT …) or a nested GROUP BY)".into(),
                );
            }
            (Arc::clone(top), b)
        }
        [] => return Err("it has no GROUP BY aggregate".into()),
        _ => return Err("it aggregates more than once".into()),
    };
    Ok(Aggregate {
        node,
        group_by: phase.group_expr().clone(),
        aggr_expr: phase.aggr_expr().to_vec(),
        filter_expr: phase.filter_expr().to_vec(),
        input: Arc::clone(phase.input()),
    })
}

/// What the aggregate reads from `rows` (window bounds set to each row's
/// pane): the rows through the view's filters and projections.
pub async fn run_input(
    ctx: &SessionContext,
    plan: &PanePlan,
    rows: Vec<RecordBatch>,
    limits: super::QueryLimits,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    // Below the aggregate the one scan is the window rows'.
    let input = rebind(&plan.input, |n| n.is::<DataSourceExec>(), rows)?;
    super::bounded(limits, async { execute_stream(input, ctx.task_ctx()) }).await
}

/// Runs the rest of the view over the aggregate's output `merged` (see
/// `sliding.rs`).
pub async fn run_upper(
    ctx: &SessionContext,
    plan: &PanePlan,
    merged: RecordBatch,
    limits: super::QueryLimits,
) -> Result<Vec<RecordBatch>, DataFusionError> {
    let placeholder = &plan.placeholder;
    let upper = rebind(&plan.upper, |n| Arc::ptr_eq(n, placeholder), vec![merged])?;
    super::bounded(limits, async { execute_stream(upper, ctx.task_ctx()) }).await
}
