//! The one driver of the window engine, whatever feeds it: the Kafka
//! pipeline (`pipeline.rs`) and the local runner (`local.rs`: `dry-run`,
//! `telemine test`, `train`, `eval`) turn what they read into the same
//! [`Input`]s, and every input gives a [`Step`] — the rule rows, the rule
//! evaluations with the alerting clock, the late rows and the dead
//! letters — in the same order, so the two cannot drift apart. What
//! happens to a step (produced to Kafka and alerted on, or collected) is
//! the caller's.
//!
//! Lanes. When instances share a consumer group (every view grouped by
//! its source's message key, see `repartition::alone_reasons`), a partition
//! may arrive from another instance with a checkpoint that does not fit
//! this engine's windows: the other instance had closed fewer windows
//! (or more), or never committed it (it is read from its start). Joining the engine would make its rows late for windows it
//! never had evaluated (or evaluate windows again over part of their
//! rows), so such a partition is computed by an engine of its own — a
//! lane over the same SQL, restored from its checkpoint, with its own
//! watermark — for as long as this instance holds it. One partition's
//! records make whole rows of every view, so a lane's windows are exactly
//! what that partition contributes; its evaluations reach the alerting
//! relay like the main engine's, and the alerting clock of a step is the
//! lowest over the main engine and the lanes.

use std::collections::BTreeMap;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::Int32Type;
use telemine_codec::decode::{DeadLetter, UpstreamMark};
use telemine_codec::schema::PARTITION_COLUMN;

use super::admission::SourceCounts;
use super::checkpoint::Checkpoint;
use super::deferred::{Deferral, ViewRows};
use super::windows::{LateRows, WindowEngine};
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_types::alert::Alert;
use telemine_types::alert::rule::Evaluation;
use telemine_types::error::EngineError;

/// What a runner hands the engine.
#[derive(Debug)]
pub enum Input {
    /// The partitions of `source` now held (all of them: revoked ones are
    /// those missing).
    Assigned { source: usize, partitions: Vec<i32> },
    /// A partition's first rows are about to arrive; its committed
    /// checkpoint, if any.
    PartitionStart {
        source: usize,
        partition: i32,
        checkpoint: Option<Checkpoint>,
    },
    /// Decoded records of `source`: the batch (if any record decoded), the
    /// records that could not be, and how far each partition has been read.
    Batch {
        source: usize,
        batch: Option<RecordBatch>,
        dead: Vec<DeadLetter>,
        consumed: Vec<(i32, i64)>,
        /// A derived source's upstream progress (see `repartition.rs`).
        marks: Vec<UpstreamMark>,
    },
    /// Processing time has passed: close what idleness allows.
    Tick,
    /// End of input: close every open window.
    Finish,
}

/// What one input produced, in the order the runners hand it on.
#[derive(Debug, Default)]
pub struct Step {
    /// Records that could not be decoded, with their source.
    pub dead: Vec<(usize, DeadLetter)>,
    /// Rule rows raised.
    pub rows: Vec<Alert>,
    /// The rule evaluations run (including those that returned no rows).
    pub evaluations: Vec<Evaluation>,
    /// How far each partition held has been taken, for the alerting relay:
    /// the clock of the engine computing it — once it has started there
    /// (before that, whether it joins the engine or gets a lane is not
    /// known, and only an idle one is reported).
    pub progress: Vec<PartitionProgress>,
    /// Rows that arrived after their windows closed.
    pub late: Vec<LateRows>,
    /// Partitions of a derived source that every upstream partition has
    /// said its end to (a drain): nothing more will arrive there.
    pub complete: Vec<(usize, i32)>,
    /// With scoring deferred: the closed windows of the views the scoring
    /// stage takes (see `deferred.rs`).
    pub scored: Vec<ViewRows>,
}

/// How far one partition's evaluations have gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    pub source: usize,
    pub partition: i32,
    /// Every window ending at or before it has been evaluated.
    pub clock: Option<i64>,
    /// Nothing it holds is active, so it holds no clock back.
    pub idle: bool,
}

/// See the module docs.
pub struct Driver {
    engine: WindowEngine,
    /// Partitions computed on their own, by (source, partition).
    lanes: BTreeMap<(usize, i32), WindowEngine>,
    /// The sources, when partitions may be given lanes.
    lane_sources: Option<Vec<SourceDef>>,
    /// Partitions held, by source, and whether each has started (its
    /// checkpoint restored, in the engine or a lane).
    held: BTreeMap<(usize, i32), bool>,
}

impl Driver {
    /// A driver whose one engine holds every partition.
    pub fn new(engine: WindowEngine) -> Driver {
        Driver {
            engine,
            lanes: BTreeMap::new(),
            lane_sources: None,
            held: BTreeMap::new(),
        }
    }

    /// A driver that gives a partition whose checkpoint does not fit the
    /// engine a lane of its own (see the module docs). Only for SQL whose
    /// every view groups by its source's message key.
    pub fn with_lanes(engine: WindowEngine, sources: Vec<SourceDef>) -> Driver {
        Driver {
            engine,
            lanes: BTreeMap::new(),
            lane_sources: Some(sources),
            held: BTreeMap::new(),
        }
    }

    /// Leaves scoring to a scoring stage (see
    /// [`WindowEngine::defer_scoring`]); returns what the stage takes, or
    /// `None` when this SQL is scored inline.
    pub fn defer_scoring(&mut self) -> Option<Deferral> {
        self.engine.defer_scoring();
        for lane in self.lanes.values_mut() {
            lane.defer_scoring();
        }
        self.engine.deferral().cloned()
    }

    /// What the scoring stage takes from the SQL now running, if scoring
    /// is deferred.
    pub fn deferral(&self) -> Option<&Deferral> {
        self.engine.deferral()
    }

    /// Runs one input through the engine.
    pub async fn handle(&mut self, input: Input) -> Result<Step, EngineError> {
        let mut step = Step::default();
        match input {
            Input::Assigned { source, partitions } => {
                self.lanes
                    .retain(|&(s, p), _| s != source || partitions.contains(&p));
                let main: Vec<i32> = partitions
                    .iter()
                    .copied()
                    .filter(|&p| !self.lanes.contains_key(&(source, p)))
                    .collect();
                self.engine.assign(source, &main)?;
                self.held
                    .retain(|&(s, p), _| s != source || partitions.contains(&p));
                for &p in &partitions {
                    self.held.entry((source, p)).or_insert(false);
                }
            }
            Input::PartitionStart {
                source,
                partition,
                checkpoint,
            } => {
                self.start_partition(source, partition, checkpoint)?;
                self.held.insert((source, partition), true);
            }
            Input::Batch {
                source,
                batch,
                dead,
                consumed,
                marks,
            } => {
                step.dead = dead.into_iter().map(|d| (source, d)).collect();
                if self.lanes.keys().any(|&(s, _)| s == source) {
                    step.rows = self.ingest_split(source, batch, &consumed, &marks).await?;
                } else {
                    step.rows = self.engine.take(source, batch, &consumed, &marks).await?;
                }
                if !marks.is_empty() {
                    step.complete = std::iter::once(&self.engine)
                        .chain(self.lanes.values())
                        .flat_map(|e| e.complete(source))
                        .map(|p| (source, p))
                        .collect();
                }
            }
            Input::Tick => {
                step.rows = self.engine.tick().await?;
                for lane in self.lanes.values_mut() {
                    step.rows.extend(lane.tick().await?);
                }
            }
            Input::Finish => {
                step.rows = self.engine.finish().await?;
                for lane in self.lanes.values_mut() {
                    step.rows.extend(lane.finish().await?);
                }
            }
        }
        step.evaluations = self.engine.take_evaluations();
        step.late = self.engine.take_late();
        step.scored = self.engine.take_deferred();
        for lane in self.lanes.values_mut() {
            step.evaluations.extend(lane.take_evaluations());
            step.late.extend(lane.take_late());
            step.scored.extend(lane.take_deferred());
        }
        step.progress = self.progress();
        Ok(step)
    }

    /// A partition's first rows are about to arrive: it joins the engine,
    /// or gets a lane when lanes are on and its checkpoint does not fit.
    fn start_partition(
        &mut self,
        source: usize,
        partition: i32,
        checkpoint: Option<Checkpoint>,
    ) -> Result<(), EngineError> {
        // A partition that had a lane starts again: from its checkpoint.
        let had_lane = self.lanes.remove(&(source, partition)).is_some();
        // The engine takes the first partition it computes as it comes;
        // the others must fit its windows.
        let engine_started = self.held.iter().any(|(&(s, p), &started)| {
            s == source && p != partition && started && !self.lanes.contains_key(&(s, p))
        });
        let fits = !engine_started || self.engine.fits(source, checkpoint.as_ref());
        tracing::debug!(
            source,
            partition,
            engine_started,
            fits,
            closed = ?checkpoint.as_ref().map(|c| &c.closed),
            "partition start"
        );
        let Some(sources) = self.lane_sources.as_ref().filter(|_| !fits) else {
            if had_lane {
                let mut main = self.engine.partitions(source);
                main.push(partition);
                self.engine.assign(source, &main)?;
            }
            self.engine.restore(source, partition, checkpoint.as_ref());
            return Ok(());
        };
        tracing::info!(
            source,
            partition,
            "the partition's checkpoint does not fit this instance's windows (it was read elsewhere up to another window, or never committed): computing it on its own"
        );
        let main: Vec<i32> = self
            .engine
            .partitions(source)
            .into_iter()
            .filter(|&p| p != partition)
            .collect();
        self.engine.assign(source, &main)?;
        let mut lane = self.engine.lane(sources);
        lane.assign(source, &[partition])?;
        lane.restore(source, partition, checkpoint.as_ref());
        self.lanes.insert((source, partition), lane);
        Ok(())
    }

    /// A batch of a source some of whose partitions have lanes: each
    /// partition's rows go to the engine that computes it.
    async fn ingest_split(
        &mut self,
        source: usize,
        batch: Option<RecordBatch>,
        consumed: &[(i32, i64)],
        marks: &[UpstreamMark],
    ) -> Result<Vec<Alert>, EngineError> {
        let lanes: Vec<i32> = self
            .lanes
            .keys()
            .filter(|(s, _)| *s == source)
            .map(|(_, p)| *p)
            .collect();
        let lane_of = |p: i32| lanes.contains(&p).then_some(p);
        type Consumed = Vec<(i32, i64)>;
        let (lane_consumed, main_consumed): (Consumed, Consumed) =
            consumed.iter().partition(|(p, _)| lane_of(*p).is_some());
        let mut parts: BTreeMap<Option<i32>, RecordBatch> = BTreeMap::new();
        if let Some(batch) = batch {
            let idx = batch
                .schema()
                .index_of(PARTITION_COLUMN)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            let column = batch.column(idx).as_primitive::<Int32Type>().clone();
            let mut keys: Vec<Option<i32>> = column.values().iter().map(|&p| lane_of(p)).collect();
            keys.sort_unstable();
            keys.dedup();
            for key in keys {
                let mask: BooleanArray = column
                    .values()
                    .iter()
                    .map(|&p| Some(lane_of(p) == key))
                    .collect();
                let rows = filter_record_batch(&batch, &mask)
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                parts.insert(key, rows);
            }
        }
        let (lane_marks, main_marks): (Vec<UpstreamMark>, Vec<UpstreamMark>) =
            marks.iter().partition(|m| lane_of(m.partition).is_some());
        let mut alerts = self
            .engine
            .take(source, parts.remove(&None), &main_consumed, &main_marks)
            .await?;
        for (key, lane) in self.lanes.iter_mut().filter(|((s, _), _)| *s == source) {
            let consumed: Vec<(i32, i64)> = lane_consumed
                .iter()
                .copied()
                .filter(|(p, _)| *p == key.1)
                .collect();
            let marks: Vec<UpstreamMark> = lane_marks
                .iter()
                .copied()
                .filter(|m| m.partition == key.1)
                .collect();
            let rows = parts.remove(&Some(key.1));
            alerts.extend(lane.take(source, rows, &consumed, &marks).await?);
        }
        Ok(alerts)
    }

    /// The scoring stage's clock for a runner that holds every partition
    /// (the local runner, which has no lanes): see
    /// [`WindowEngine::deferred_clock`].
    pub fn clock(&self) -> Option<i64> {
        self.engine.deferred_clock()
    }

    /// The alerting clock of a runner that holds every partition: the
    /// lowest watermark over every source (see
    /// [`WindowEngine::lowest_watermark`]), what the group's alerting owner
    /// reads off its board when one instance reads everything.
    pub fn alerting_clock(&self) -> Option<i64> {
        self.engine.lowest_watermark()
    }

    /// See [`Step::progress`].
    fn progress(&self) -> Vec<PartitionProgress> {
        let of = |e: &WindowEngine| {
            let clock = e.lowest_watermark();
            (clock, clock.is_none() && !e.any_active())
        };
        let main = of(&self.engine);
        self.held
            .iter()
            .map(|(&(source, partition), &started)| {
                let (clock, idle) = match self.lanes.get(&(source, partition)) {
                    Some(lane) => of(lane),
                    None if started => main,
                    None => (None, self.engine.partition_idle(source, partition)),
                };
                PartitionProgress {
                    source,
                    partition,
                    clock,
                    idle,
                }
            })
            .collect()
    }

    /// What may be committed now for each partition of `source`, from the
    /// engine and the lanes (see [`WindowEngine::commit_positions`]).
    pub fn commit_positions(&self, source: usize) -> Vec<(i32, i64, Checkpoint)> {
        let mut out = self.engine.commit_positions(source);
        for ((s, _), lane) in &self.lanes {
            if *s == source {
                out.extend(lane.commit_positions(source));
            }
        }
        out
    }

    /// Partitions computed on their own now.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Swaps in a new SQL set (see [`WindowEngine::replace_sql`]).
    pub fn replace_sql(&mut self, sql: SqlSet) -> Result<(), EngineError> {
        for lane in self.lanes.values_mut() {
            lane.replace_sql(sql.fork())?;
        }
        self.engine.replace_sql(sql)
    }

    /// [`WindowEngine::held`] over the engine and its lanes (summed by
    /// name).
    pub fn held(&self) -> super::windows::Held {
        let mut held = self.engine.held();
        for lane in self.lanes.values() {
            let l = lane.held();
            for (total, (_, n)) in held.open_windows.iter_mut().zip(l.open_windows) {
                total.1 += n;
            }
            for (total, (_, n)) in held.buffered_rows.iter_mut().zip(l.buffered_rows) {
                total.1 += n;
            }
            for (total, (_, n)) in held.view_rows.iter_mut().zip(l.view_rows) {
                total.1 += n;
            }
        }
        held
    }

    /// Late and duplicate counts per source name, over the engine and its
    /// lanes.
    pub fn source_counts(&self) -> Vec<(String, SourceCounts)> {
        let mut out = self.engine.source_counts();
        for lane in self.lanes.values() {
            for ((_, total), (_, c)) in out.iter_mut().zip(lane.source_counts()) {
                total.late += c.late;
                total.duplicates += c.duplicates;
            }
        }
        out
    }
}
