//! The window engine without Kafka: recorded or hand-written records in,
//! alerts out. `dry-run` and `telemine test` run through here, with the
//! same decoders, windows and SQL as the Kafka pipeline; only the
//! transport is missing: both hand the same inputs to the one
//! [`Driver`].
//!
//! Records are fed as a consumer would see them: per source and
//! partition, in offset order, one batch at a time. A partition takes part
//! in the source's watermark from its first record on. [`LocalRun::wait`]
//! lets processing time pass (idle partitions), [`LocalRun::finish`] is the
//! end of input: every open window closes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use telemine_codec::decode::{DeadLetter, Decoder, decoder_for};

use super::admission::SourceCounts;
use super::deferred::{self, Deferral, ScoringStage};
use super::driver::{Driver, Input, Step};
use super::windows::{LateRows, WindowEngine};
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_types::alert::Alert;
use telemine_types::alert::rule::Evaluation;
use telemine_types::error::EngineError;

/// Records decoded into one batch at most; longer inputs are split.
const MAX_BATCH: usize = 65_536;

/// What a local run produced.
#[derive(Debug, Default)]
pub struct LocalOutcome {
    pub alerts: Vec<Alert>,
    pub late: Vec<LateRows>,
    pub dead: Vec<(usize, DeadLetter)>,
    /// Late and duplicate counts per source name.
    pub counts: Vec<(String, SourceCounts)>,
}

/// One step as the alerting takes it: the rule evaluations run, the rows
/// they returned, and the alerting clock after it — what the pipeline hands
/// its alerter (see [`LocalRun::record_alerting`]).
#[derive(Debug, Default, Clone)]
pub struct AlertingStep {
    pub evaluations: Vec<Evaluation>,
    pub rows: Vec<Alert>,
    pub clock: Option<i64>,
}

/// See the module docs.
pub struct LocalRun {
    driver: Driver,
    /// The scored views' scoring, the views over views and the rules that
    /// read them (see `deferred.rs`), as the alerting clock passes their
    /// window ends.
    scoring: Option<ScoringStage>,
    defs: Vec<SourceDef>,
    decoders: Vec<Box<dyn Decoder>>,
    /// Per source: partitions seen and the next offset of each.
    offsets: Vec<BTreeMap<i32, i64>>,
    out: LocalOutcome,
    /// The steps for the alerting, kept when asked
    /// ([`LocalRun::record_alerting`]).
    alerting: Option<Vec<AlertingStep>>,
}

impl LocalRun {
    pub fn new(
        sql: SqlSet,
        defs: &[SourceDef],
        metrics: Arc<Metrics>,
    ) -> Result<LocalRun, EngineError> {
        let decoders = defs
            .iter()
            .map(|d| {
                decoder_for(&d.format, &d.influx, &d.schema, MAX_BATCH, &d.limits)
                    .map_err(|e| EngineError::Config(format!("source `{}`: {e}", d.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (driver, scoring) = match Deferral::plan(&sql) {
            Some(plan) => {
                let mut driver = Driver::new(WindowEngine::new(
                    sql.fork_unscored(),
                    defs,
                    metrics.clone(),
                ));
                driver.defer_scoring();
                let lateness = deferred::max_lateness_ms(defs);
                let stage = ScoringStage::new(sql, plan, None, lateness, metrics);
                (driver, Some(stage))
            }
            None => (Driver::new(WindowEngine::new(sql, defs, metrics)), None),
        };
        Ok(LocalRun {
            driver,
            scoring,
            defs: defs.to_vec(),
            decoders,
            offsets: vec![BTreeMap::new(); defs.len()],
            out: LocalOutcome::default(),
            alerting: None,
        })
    }

    /// Keeps every step's evaluations, rows and alerting clock from now
    /// on, for [`LocalRun::take_alerting`]: what a caller that runs the
    /// alerting itself (`telemine test` with notifications) feeds its
    /// alerter.
    pub fn record_alerting(&mut self) {
        self.alerting.get_or_insert_with(Vec::new);
    }

    /// The steps kept since the last call (see
    /// [`LocalRun::record_alerting`]).
    pub fn take_alerting(&mut self) -> Vec<AlertingStep> {
        self.alerting
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Index of the source named `name`.
    pub fn source(&self, name: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.name == name)
    }

    /// The declaration of source `i`.
    pub fn source_def(&self, i: usize) -> &SourceDef {
        &self.defs[i]
    }

    /// Decodes `records` (one per item, in the source's format) as the next
    /// records of `partition` and feeds them as one batch (as several when
    /// there are more than a batch holds).
    pub async fn push_records(
        &mut self,
        source: usize,
        partition: i32,
        records: &[&[u8]],
    ) -> Result<(), EngineError> {
        for chunk in records.chunks(MAX_BATCH) {
            let first = self.join(source, partition).await?;
            let decoder = &mut self.decoders[source];
            for (i, r) in chunk.iter().enumerate() {
                decoder.push(r, partition, first + i as i64);
            }
            let decoded = decoder.flush();
            let next = first + chunk.len() as i64;
            self.feed(source, partition, next, decoded.batch, decoded.dead)
                .await?;
        }
        Ok(())
    }

    /// Feeds a batch already in the source's batch schema (its `_partition`
    /// and `_offset` columns as given).
    pub async fn push_batch(
        &mut self,
        source: usize,
        partition: i32,
        batch: RecordBatch,
    ) -> Result<(), EngineError> {
        let first = self.join(source, partition).await?;
        let next = first + batch.num_rows() as i64;
        self.feed(source, partition, next, Some(batch), Vec::new())
            .await
    }

    /// Swaps in a new SQL set (see [`WindowEngine::replace_sql`]).
    pub fn reload(&mut self, sql: SqlSet) -> Result<(), EngineError> {
        match self.scoring.as_mut() {
            Some(stage) => {
                let unscored = sql.fork_unscored();
                if stage.replace_sql(sql).is_none() {
                    return Err(EngineError::Config(
                        "the new SQL has no scored view and no view over views left: start again to run it".into(),
                    ));
                }
                self.driver.replace_sql(unscored)
            }
            None => self.driver.replace_sql(sql),
        }
    }

    /// Lets `d` of processing time pass, then closes what idleness allows.
    pub async fn wait(&mut self, d: Duration) -> Result<(), EngineError> {
        tokio::time::sleep(d).await;
        self.run(Input::Tick).await
    }

    /// End of input: closes every open window and returns the outcome.
    pub async fn finish(mut self) -> Result<LocalOutcome, EngineError> {
        self.close().await?;
        Ok(self.stop())
    }

    /// End of input: closes every open window, keeping the run (for
    /// [`LocalRun::take_alerting`]; [`LocalRun::stop`] then gives the
    /// outcome).
    pub async fn close(&mut self) -> Result<(), EngineError> {
        self.run(Input::Finish).await
    }

    /// Ends without closing open windows (what a stop mid-stream leaves).
    pub fn stop(mut self) -> LocalOutcome {
        self.out.counts = self.driver.source_counts();
        self.out
    }

    /// Makes `partition` of `source` known to the engine; returns its next
    /// offset.
    async fn join(&mut self, source: usize, partition: i32) -> Result<i64, EngineError> {
        let parts = self
            .offsets
            .get_mut(source)
            .ok_or_else(|| EngineError::Internal(format!("no source #{source}")))?;
        if let std::collections::btree_map::Entry::Vacant(e) = parts.entry(partition) {
            e.insert(0);
            let partitions: Vec<i32> = parts.keys().copied().collect();
            self.run(Input::Assigned { source, partitions }).await?;
        }
        Ok(self.offsets[source][&partition])
    }

    /// `partition` of `source` has been read up to `next`: what decoded
    /// (and what did not) goes to the driver.
    async fn feed(
        &mut self,
        source: usize,
        partition: i32,
        next: i64,
        batch: Option<RecordBatch>,
        dead: Vec<DeadLetter>,
    ) -> Result<(), EngineError> {
        self.offsets[source].insert(partition, next);
        self.run(Input::Batch {
            source,
            batch,
            dead,
            consumed: vec![(partition, next)],
            marks: Vec::new(),
        })
        .await
    }

    /// Hands one input to the driver and keeps what it produced.
    async fn run(&mut self, input: Input) -> Result<(), EngineError> {
        let finish = matches!(input, Input::Finish);
        let Step {
            dead,
            rows,
            evaluations,
            late,
            scored,
            ..
        } = self.driver.handle(input).await?;
        self.out.dead.extend(dead);
        let mut step = AlertingStep {
            evaluations,
            rows,
            clock: None,
        };
        self.out.late.extend(late);
        if let Some(stage) = self.scoring.as_mut() {
            for rows in scored {
                stage.add(rows, None)?;
            }
            // This runner holds every partition: its alerting clock is its
            // engine's.
            let clock = if finish {
                Some(i64::MAX)
            } else {
                self.driver.clock()
            };
            let done = stage.advance(clock).await;
            step.rows.extend(done.rows);
            step.evaluations.extend(done.evaluations);
        }
        match self.alerting.as_mut() {
            Some(kept) => {
                step.clock = self.driver.alerting_clock();
                self.out.alerts.extend(step.rows.iter().cloned());
                kept.push(step);
            }
            None => self.out.alerts.extend(step.rows),
        }
        Ok(())
    }
}

/// Runs recorded batches of source `source` through `sql` to the end of
/// input, as `dry-run` and `eval` do: the records as one partition, in
/// order, then every open window closed.
pub async fn replay(
    sql: SqlSet,
    defs: &[SourceDef],
    source: usize,
    batches: Vec<RecordBatch>,
    metrics: Arc<Metrics>,
) -> Result<LocalOutcome, EngineError> {
    let mut run = LocalRun::new(sql, defs, metrics)?;
    for batch in batches {
        run.push_batch(source, 0, batch).await?;
    }
    run.finish().await
}
