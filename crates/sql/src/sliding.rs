//! Sliding-window aggregation over pane states: each HOP window merges two
//! states per key, whatever its length in panes.
//!
//! Event time is cut into blocks one window long, aligned to the epoch. A
//! window `[s, s + size)` that starts inside block `B` is the *suffix* of
//! `B` from `s` (panes `s .. end of B`) followed by the *prefix* of the next
//! block up to the window's last pane. Prefixes are built pane by pane as
//! `prefix(p) = prefix(p - slide) ⊕ pane(p)` and suffixes from a block's end
//! backwards, each memoised, so every pane costs about one prefix merge,
//! one suffix merge and one final merge per key, instead of the window's
//! `size / slide` state merges. A window starting on a block boundary is
//! one whole prefix.
//!
//! States are merged by the view's own aggregate accumulators
//! (DataFusion's `GroupsAccumulator::merge_batch`, then `state` to keep a
//! state, or `evaluate` for the window's values), addressed by a key id
//! that each key gets once, when it first appears in a pane.
//!
//! Invariants:
//! - a pane is set complete (the watermark has passed its end) before any
//!   window over it is evaluated, and set again whole when it takes late
//!   records, which drops the prefixes and suffixes built on it; a missing
//!   pane is empty;
//! - a prefix or suffix reads only panes at or after the window start it
//!   was computed for, so forgetting everything before the next window's
//!   start never changes a later window.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat, take};
use datafusion::arrow::datatypes::{Schema, TimestampMillisecondType};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::aggregates::Aggregates;
use super::panes::PanePlan;

type Result<T> = std::result::Result<T, DataFusionError>;

/// Accumulator states for some keys: row `i` of every state column belongs
/// to key `ids[i]`.
#[derive(Debug, Default)]
pub struct StateSet {
    ids: Vec<u32>,
    states: Vec<ArrayRef>,
}

/// One HOP view's pane states and the prefixes and suffixes built from
/// them.
pub struct Sliding {
    plan: Arc<PanePlan>,
    size: i64,
    slide: i64,
    /// Key columns (the GROUP BY columns but the window bounds) among the
    /// partial phase's columns.
    key_columns: Vec<usize>,
    /// Key id by key; `None` when the view has no key but the window. (In
    /// a mutex only to be `Sync`: it is reached through `&mut self`.)
    interner: Option<Mutex<Box<dyn GroupValues>>>,
    /// Key values by id, one array per key column.
    key_values: Vec<ArrayRef>,
    key_count: usize,
    panes: BTreeMap<i64, Arc<StateSet>>,
    prefixes: BTreeMap<i64, Arc<StateSet>>,
    suffixes: BTreeMap<i64, Arc<StateSet>>,
    /// Scratch: a key id's place among the groups being merged.
    slots: Vec<u32>,
}

const FREE: u32 = u32::MAX;

impl fmt::Debug for Sliding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sliding")
            .field("size", &self.size)
            .field("slide", &self.slide)
            .field("keys", &self.key_count)
            .field("panes", &self.panes.len())
            .finish_non_exhaustive()
    }
}

impl Sliding {
    pub fn new(plan: Arc<PanePlan>, size: i64, slide: i64) -> Result<Sliding> {
        let schema = plan.aggregate_schema();
        let cols = plan.cols;
        let key_columns: Vec<usize> = (0..plan.group_by().len())
            .filter(|&i| i != cols.window_start && i != cols.window_end)
            .collect();
        let key_schema = Arc::new(Schema::new(
            key_columns
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
        ));
        let interner = if key_columns.is_empty() {
            None
        } else {
            Some(Mutex::new(new_group_values(
                Arc::clone(&key_schema),
                &GroupOrdering::None,
            )?))
        };
        let key_values = key_schema
            .fields()
            .iter()
            .map(|f| datafusion::arrow::array::new_empty_array(f.data_type()))
            .collect();
        Ok(Sliding {
            plan,
            size,
            slide,
            key_columns,
            interner,
            key_values,
            key_count: 0,
            panes: BTreeMap::new(),
            prefixes: BTreeMap::new(),
            suffixes: BTreeMap::new(),
            slots: Vec::new(),
        })
    }

    /// Aggregates `input` (what the aggregate reads: each row with its
    /// pane's bounds) into the states of the panes it covers, which replace
    /// what those panes held: newly closed panes, or panes that took late
    /// records, computed again whole. Then merges the windows ending at
    /// `ends` (see [`Sliding::windows`]).
    pub fn advance(
        &mut self,
        input: &[RecordBatch],
        ends: impl IntoIterator<Item = i64>,
    ) -> Result<Option<RecordBatch>> {
        let plan = Arc::clone(&self.plan);
        let aggs = plan.aggregates();
        let mut accs = aggs.accumulators()?;
        // One group per key and run of rows of one pane; a pane's runs
        // (more than one only for rows out of order) are kept side by side.
        let mut group_keys: Vec<u32> = Vec::new();
        let mut runs: BTreeMap<i64, Vec<Range<usize>>> = BTreeMap::new();
        let mut groups: Vec<usize> = Vec::new();
        let mut placed = Vec::new();
        let start_expr = &plan.group_by()[plan.cols.window_start];
        for batch in input {
            let n = batch.num_rows();
            let keys: Vec<ArrayRef> = self
                .key_columns
                .iter()
                .map(|&i| plan.group_by()[i].evaluate(batch)?.into_array(n))
                .collect::<Result<_>>()?;
            let ids = self.intern(&keys, n)?;
            let starts = start_expr.evaluate(batch)?.into_array(n)?;
            let starts = starts
                .as_primitive_opt::<TimestampMillisecondType>()
                .ok_or_else(|| DataFusionError::Internal("pane bounds are not timestamps".into()))?
                .values();
            self.slots.resize(self.key_count, FREE);
            groups.clear();
            let mut from = 0;
            while from < n {
                let pane = starts[from];
                let to = from + starts[from..].iter().take_while(|&&s| s == pane).count();
                let base = group_keys.len();
                place(
                    &mut self.slots,
                    &ids[from..to],
                    &mut group_keys,
                    base,
                    &mut placed,
                );
                groups.extend_from_slice(&placed);
                release(&mut self.slots, &group_keys[base..]);
                runs.entry(pane).or_default().push(base..group_keys.len());
                from = to;
            }
            for (i, acc) in accs.iter_mut().enumerate() {
                let args = aggs.args[i]
                    .iter()
                    .map(|e| e.evaluate(batch)?.into_array(n))
                    .collect::<Result<Vec<_>>>()?;
                let filter = match &aggs.filters[i] {
                    Some(f) => Some(f.evaluate(batch)?.into_array(n)?),
                    None => None,
                };
                let filter = filter.as_ref().map(|f| f.as_boolean());
                acc.update_batch(&args, &groups, filter, group_keys.len())?;
            }
        }
        if !group_keys.is_empty() {
            let mut states = Vec::new();
            for acc in &mut accs {
                states.extend(acc.state(EmitTo::All)?);
            }
            for (pane, ranges) in runs {
                let ids: Vec<u32> = ranges
                    .iter()
                    .flat_map(|r| &group_keys[r.clone()])
                    .copied()
                    .collect();
                let columns = states
                    .iter()
                    .map(|c| {
                        let parts: Vec<ArrayRef> =
                            ranges.iter().map(|r| c.slice(r.start, r.len())).collect();
                        match parts.as_slice() {
                            [one] => Ok(Arc::clone(one)),
                            _ => concat(&parts.iter().map(|p| p.as_ref()).collect::<Vec<_>>()),
                        }
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                self.set_pane(
                    pane,
                    Arc::new(StateSet {
                        ids,
                        states: columns,
                    }),
                );
            }
        }
        self.windows(ends)
    }

    /// Sets the states of the pane starting at `start`, dropping the
    /// prefixes and suffixes built on what it held before.
    fn set_pane(&mut self, start: i64, set: Arc<StateSet>) {
        let block = start - start.rem_euclid(self.size);
        let stale: Vec<i64> = self
            .prefixes
            .range(start..block + self.size)
            .map(|(&p, _)| p)
            .collect();
        for p in stale {
            self.prefixes.remove(&p);
        }
        let stale: Vec<i64> = self
            .suffixes
            .range(block..=start)
            .map(|(&p, _)| p)
            .collect();
        for p in stale {
            self.suffixes.remove(&p);
        }
        self.panes.insert(start, set);
    }

    /// Key ids of the `n` rows with key columns `keys`, giving new keys
    /// the next ids.
    fn intern(&mut self, keys: &[ArrayRef], n: usize) -> Result<Vec<u32>> {
        let Some(interner) = self.interner.as_mut() else {
            self.key_count = 1;
            return Ok(vec![0; n]);
        };
        let mut groups = Vec::with_capacity(n);
        interner
            .get_mut()
            .map_err(|_| DataFusionError::Internal("key interner poisoned".into()))?
            .intern(keys, &mut groups)?;
        // Ids are handed out in order of first appearance.
        let mut fresh = Vec::new();
        let mut next = self.key_count;
        for (row, &g) in groups.iter().enumerate() {
            if g == next {
                fresh.push(row as u32);
                next += 1;
            }
        }
        if !fresh.is_empty() {
            let fresh = UInt32Array::from(fresh);
            for (kept, key) in self.key_values.iter_mut().zip(keys) {
                let new = take(key.as_ref(), &fresh, None)?;
                *kept = concat(&[kept.as_ref(), new.as_ref()])?;
            }
            self.key_count = next;
        }
        groups
            .into_iter()
            .map(|g| {
                u32::try_from(g).map_err(|_| {
                    DataFusionError::ResourcesExhausted(
                        "a hopping view has more than 4 billion keys".into(),
                    )
                })
            })
            .collect()
    }

    /// Forgets every state before `start` (no later window reads it).
    pub fn forget_before(&mut self, start: i64) {
        for map in [&mut self.panes, &mut self.prefixes, &mut self.suffixes] {
            *map = map.split_off(&start);
        }
    }

    /// The aggregate's output (GROUP BY columns, then the aggregates) for
    /// the windows ending at `ends`; `None` when none holds a row.
    pub fn windows(&mut self, ends: impl IntoIterator<Item = i64>) -> Result<Option<RecordBatch>> {
        let mut windows = Vec::new();
        for end in ends {
            let start = end - self.size;
            let last = end - self.slide;
            let parts = if start.rem_euclid(self.size) == 0 {
                vec![self.prefix(last)?]
            } else {
                vec![self.suffix(start)?, self.prefix(last)?]
            };
            windows.push((start, end, parts));
        }
        let aggs = self.plan.aggregates();
        let mut accs = aggs.accumulators()?;
        let (mut ids, mut starts, mut window_ends) = (Vec::new(), Vec::new(), Vec::new());
        self.slots.resize(self.key_count, FREE);
        for (start, end, parts) in &windows {
            let base = ids.len();
            merge_into(
                &mut self.slots,
                aggs,
                &mut accs,
                parts.iter().map(|p| p.as_ref()),
                &mut ids,
            )?;
            starts.extend(std::iter::repeat_n(*start, ids.len() - base));
            window_ends.extend(std::iter::repeat_n(*end, ids.len() - base));
        }
        if ids.is_empty() {
            return Ok(None);
        }
        let schema = self.plan.aggregate_schema();
        let ids = UInt32Array::from(ids);
        let mut keys = self.key_values.iter();
        let cols = self.plan.cols;
        let mut columns = Vec::with_capacity(schema.fields().len());
        for i in 0..self.plan.group_by().len() {
            let bound = |v: &mut Vec<i64>| -> Result<ArrayRef> {
                let a = TimestampMillisecondArray::from(std::mem::take(v));
                Ok(cast(&a, schema.field(i).data_type())?)
            };
            columns.push(if i == cols.window_start {
                bound(&mut starts)?
            } else if i == cols.window_end {
                bound(&mut window_ends)?
            } else {
                let key = keys
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("key column missing".into()))?;
                take(key.as_ref(), &ids, None)?
            });
        }
        for acc in &mut accs {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }

    fn pane(&self, start: i64) -> Arc<StateSet> {
        self.panes.get(&start).cloned().unwrap_or_default()
    }

    /// States of the panes from the start of `last`'s block through `last`.
    fn prefix(&mut self, last: i64) -> Result<Arc<StateSet>> {
        if let Some(s) = self.prefixes.get(&last) {
            return Ok(Arc::clone(s));
        }
        let block = last - last.rem_euclid(self.size);
        let (mut p, mut acc) = match self.prefixes.range(block..last).next_back() {
            Some((&p, s)) => (p + self.slide, Arc::clone(s)),
            None => (block, Arc::default()),
        };
        while p <= last {
            acc = self.merge(&acc, &self.pane(p))?;
            self.prefixes.insert(p, Arc::clone(&acc));
            p += self.slide;
        }
        Ok(acc)
    }

    /// States of the panes from `first` to the end of its block.
    fn suffix(&mut self, first: i64) -> Result<Arc<StateSet>> {
        if let Some(s) = self.suffixes.get(&first) {
            return Ok(Arc::clone(s));
        }
        let end = first - first.rem_euclid(self.size) + self.size;
        let (mut p, mut acc) = match self.suffixes.range(first + 1..end).next() {
            Some((&p, s)) => (p - self.slide, Arc::clone(s)),
            None => (end - self.slide, Arc::default()),
        };
        while p >= first {
            acc = self.merge(&self.pane(p), &acc)?;
            self.suffixes.insert(p, Arc::clone(&acc));
            p -= self.slide;
        }
        Ok(acc)
    }

    /// `a ⊕ b`, as states.
    fn merge(&mut self, a: &Arc<StateSet>, b: &Arc<StateSet>) -> Result<Arc<StateSet>> {
        if a.ids.is_empty() {
            return Ok(Arc::clone(b));
        }
        if b.ids.is_empty() {
            return Ok(Arc::clone(a));
        }
        let aggs = self.plan.aggregates();
        let mut accs = aggs.accumulators()?;
        let mut ids = Vec::with_capacity(a.ids.len().max(b.ids.len()));
        self.slots.resize(self.key_count, FREE);
        merge_into(
            &mut self.slots,
            aggs,
            &mut accs,
            [a.as_ref(), b.as_ref()],
            &mut ids,
        )?;
        let mut states = Vec::new();
        for acc in &mut accs {
            states.extend(acc.state(EmitTo::All)?);
        }
        Ok(Arc::new(StateSet { ids, states }))
    }
}

/// Merges `parts` into `accs` as one more group per key: the groups from
/// `ids.len()` on, their keys appended to `ids`.
fn merge_into<'a>(
    slots: &mut [u32],
    aggs: &Aggregates,
    accs: &mut [Box<dyn GroupsAccumulator>],
    parts: impl IntoIterator<Item = &'a StateSet>,
    ids: &mut Vec<u32>,
) -> Result<()> {
    let base = ids.len();
    let mut groups = Vec::new();
    for part in parts.into_iter().filter(|p| !p.ids.is_empty()) {
        place(slots, &part.ids, ids, base, &mut groups);
        for (acc, range) in accs.iter_mut().zip(&aggs.ranges) {
            acc.merge_batch(&part.states[range.clone()], &groups, ids.len())?;
        }
    }
    release(slots, &ids[base..]);
    Ok(())
}

/// Group index of each of `part`'s keys among the groups from `base` on,
/// adding the keys not placed yet to `ids`.
fn place(
    slots: &mut [u32],
    part: &[u32],
    ids: &mut Vec<u32>,
    base: usize,
    groups: &mut Vec<usize>,
) {
    groups.clear();
    for &id in part {
        let slot = &mut slots[id as usize];
        if *slot == FREE {
            *slot = (ids.len() - base) as u32;
            ids.push(id);
        }
        groups.push(base + *slot as usize);
    }
}

fn release(slots: &mut [u32], ids: &[u32]) {
    for &id in ids {
        slots[id as usize] = FREE;
    }
}
