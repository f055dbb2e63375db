//! A view's aggregates as the pane sharing of HOP windows uses them:
//! `panes.rs` finds them in the view's plan, `sliding.rs` keeps and merges
//! their states. Apart from both so neither imports the other for it.

use std::ops::Range;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::logical_expr::GroupsAccumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

type Result<T> = std::result::Result<T, DataFusionError>;

/// The view's aggregates, their arguments and FILTERs, and where their
/// states sit among a state set's columns.
#[derive(Debug)]
pub struct Aggregates {
    exprs: Vec<Arc<AggregateFunctionExpr>>,
    /// Per aggregate, its arguments, over the aggregate's input.
    pub(crate) args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    /// Per aggregate, its `FILTER (WHERE …)`, over the aggregate's input.
    pub(crate) filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// Per aggregate, its state columns among the state columns.
    pub(crate) ranges: Vec<Range<usize>>,
}

impl Aggregates {
    pub fn new(
        exprs: Vec<Arc<AggregateFunctionExpr>>,
        filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    ) -> Result<Aggregates> {
        let mut ranges = Vec::with_capacity(exprs.len());
        let mut at = 0;
        for e in &exprs {
            let n = e.state_fields()?.len();
            ranges.push(at..at + n);
            at += n;
        }
        let args = exprs.iter().map(|e| e.expressions()).collect();
        Ok(Aggregates {
            exprs,
            args,
            filters,
            ranges,
        })
    }

    /// One accumulator per aggregate, grouped (an adapter for those
    /// without a grouped form).
    pub(crate) fn accumulators(&self) -> Result<Vec<Box<dyn GroupsAccumulator>>> {
        self.exprs
            .iter()
            .map(|e| {
                if e.groups_accumulator_supported() {
                    e.create_groups_accumulator()
                } else {
                    let e = Arc::clone(e);
                    Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
                        e.create_accumulator()
                    })) as Box<dyn GroupsAccumulator>)
                }
            })
            .collect()
    }
}
