//! The one driver of the window engine, whatever feeds it: the Kafka
//! pipeline (`pipeline.rs`) and the local runner (`local.rs`: `dry-run`,
//! `telemine test`, `train`, `eval`) turn what they read into the same
//! [`Input`]s, and every input gives a [`Step`] — the rule rows, the rule
//! evaluations with the alerting clock, the late rows and the dead
//! letters — in the same order, so the two cannot drift apart. What
//! happens to a step (produced to Kafka and alerted on, or collected) is
//! the caller's.

use datafusion::arrow::array::RecordBatch;
use telemine_connectors::decode::DeadLetter;

use super::checkpoint::Checkpoint;
use super::windows::{EngineError, LateRows, SourceCounts, WindowEngine};
use crate::alert::Alert;
use crate::alerting::Evaluation;
use crate::sql::SqlSet;

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
    /// The alerting clock after the step: the lowest watermark over every
    /// source (see [`WindowEngine::lowest_watermark`]).
    pub clock: Option<i64>,
    /// Rows that arrived after their windows closed.
    pub late: Vec<LateRows>,
}

/// See the module docs.
pub struct Driver {
    engine: WindowEngine,
}

impl Driver {
    pub fn new(engine: WindowEngine) -> Driver {
        Driver { engine }
    }

    /// Runs one input through the engine.
    pub async fn handle(&mut self, input: Input) -> Result<Step, EngineError> {
        let mut step = Step::default();
        match input {
            Input::Assigned { source, partitions } => {
                self.engine.assign(source, &partitions)?;
            }
            Input::PartitionStart {
                source,
                partition,
                checkpoint,
            } => self.engine.restore(source, partition, checkpoint.as_ref()),
            Input::Batch {
                source,
                batch,
                dead,
                consumed,
            } => {
                step.dead = dead.into_iter().map(|d| (source, d)).collect();
                self.engine.note_consumed(source, &consumed);
                if let Some(batch) = batch {
                    step.rows = self.engine.ingest(source, batch).await?;
                }
            }
            Input::Tick => step.rows = self.engine.tick().await?,
            Input::Finish => step.rows = self.engine.finish().await?,
        }
        step.evaluations = self.engine.take_evaluations();
        step.clock = self.engine.lowest_watermark();
        step.late = self.engine.take_late();
        Ok(step)
    }

    /// Swaps in a new SQL set (see [`WindowEngine::replace_sql`]).
    pub fn replace_sql(&mut self, sql: SqlSet) -> Result<(), EngineError> {
        self.engine.replace_sql(sql)
    }

    /// The engine, for what commits read (positions, checkpoints).
    pub fn engine(&self) -> &WindowEngine {
        &self.engine
    }

    /// Late and duplicate counts per source name.
    pub fn source_counts(&self) -> Vec<(String, SourceCounts)> {
        self.engine.source_counts()
    }
}
