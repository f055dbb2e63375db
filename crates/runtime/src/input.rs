//! The input side of a run as an event loop, in the manner of
//! rust-analyzer's main loop: [`InputLoop::next_event`] waits for the next
//! [`Event`] (a stop, something from the Kafka source, a SQL reload
//! trigger or a reloaded SQL set, the commit tick), and one method per
//! event handles it and says whether the loop goes on ([`Flow`]). What the
//! handlers share — the driver, the stages after it, the commit log, the
//! stop and drain flags — lives in the struct, not in loop-local flags.
//!
//! Ordering (see `pipeline.rs`): a batch's rows reach the stages before
//! the commit that covers them; a stop during an evaluation abandons it
//! (at-least-once: the windows since the last commit are read again); a
//! drain reads every partition to its end, closes every window, and
//! commits last.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemine_connectors::kafka::{KafkaSource, SourceEvent};
use telemine_observe::live::Catalog;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::deferred::Deferral;
use telemine_stream::driver::{Driver, Input};
use telemine_stream::repartition;
use telemine_types::diagnostic::{Diagnostic, Diagnostics};
use tokio::sync::mpsc;

use super::commits::CommitLog;
use super::error::PipelineError;
use super::progress::Progress;
use super::reload::{ReloadCause, ReloadTriggers};
use super::stages::{PURGE_WAIT, Stages, commit};
use crate::settings::Settings;

/// A SQL folder loaded again off the loop: its reload's generation, why it
/// was reloaded, and the set or why it does not check.
type Loaded = (u64, ReloadCause, Result<SqlSet, Diagnostics>);

/// What the loop waits for.
pub(super) enum Event {
    /// The caller asked the run to end.
    Stop(Stop),
    /// The Kafka source: an assignment, a batch, a drained partition, its
    /// end (`None`: the source is gone).
    Source(Option<SourceEvent>),
    /// The SQL folder changed or SIGHUP arrived.
    Reload(ReloadCause),
    /// A reload's SQL set, planned off the loop.
    Reloaded(Loaded),
    /// Time to evaluate on processing time and commit.
    CommitTick,
}

/// What the loop does after an event.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    /// The input ended (a drain read everything, or the source stopped).
    End,
    /// A stop arrived while views or rules ran: their work is dropped.
    Abandon,
}

/// How the input side ended, for the alerting owner and the summary.
pub(super) struct Finished {
    /// Every partition was drained and committed: the owner may finish the
    /// group's alerting.
    pub drained: bool,
    pub first_record: Option<Instant>,
}

/// The input side of one run (see the module docs).
pub(super) struct InputLoop<'a> {
    settings: &'a Settings,
    defs: &'a [SourceDef],
    metrics: Arc<Metrics>,
    source: &'a KafkaSource,
    driver: &'a mut Driver,
    stages: Stages,
    /// The alerting owner's side of a reload (the scoring stage's SQL).
    owner_reloads: Option<&'a mpsc::UnboundedSender<SqlSet>>,
    events: &'a mut mpsc::Receiver<SourceEvent>,
    committed: CommitLog,
    commit_tick: tokio::time::Interval,
    ending: Ending,
    reload: Option<ReloadTriggers>,
    reload_done: (mpsc::Sender<Loaded>, mpsc::Receiver<Loaded>),
    reload_generation: u64,
    /// Partitions assigned, per source.
    assigned: Vec<u64>,
    progress: Progress,
    first_record: Option<Instant>,
}

/// What [`InputLoop::new`] takes.
pub(super) struct Parts<'a> {
    pub settings: &'a Settings,
    pub defs: &'a [SourceDef],
    pub metrics: Arc<Metrics>,
    pub source: &'a KafkaSource,
    pub driver: &'a mut Driver,
    pub stages: Stages,
    pub owner_reloads: Option<&'a mpsc::UnboundedSender<SqlSet>>,
    pub events: &'a mut mpsc::Receiver<SourceEvent>,
    pub hot_reload: bool,
    pub stop_at_end: bool,
}

impl<'a> InputLoop<'a> {
    pub(super) fn new(p: Parts<'a>) -> InputLoop<'a> {
        let mut commit_tick = tokio::time::interval(p.settings.engine.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        InputLoop {
            settings: p.settings,
            defs: p.defs,
            progress: Progress::new(p.settings.engine.progress_interval, &p.metrics),
            metrics: p.metrics,
            source: p.source,
            driver: p.driver,
            stages: p.stages,
            owner_reloads: p.owner_reloads,
            events: p.events,
            committed: CommitLog::default(),
            commit_tick,
            // A run to the end of its input (`stop_at_end`) drains from
            // the start: its end closes every window.
            ending: Ending {
                drain: p.stop_at_end,
                ..Ending::default()
            },
            reload: p
                .hot_reload
                .then(|| ReloadTriggers::start(&p.settings.sql_dir)),
            reload_done: mpsc::channel(1),
            reload_generation: 0,
            assigned: vec![0; p.defs.len()],
            first_record: None,
        }
    }

    /// Runs until the input ends, a stop abandons the work, or an error
    /// stops the run; then makes the last commit.
    pub(super) async fn run<S: Future<Output = Stop>>(
        mut self,
        mut stop: Pin<&mut S>,
    ) -> Result<Finished, PipelineError> {
        let flow = loop {
            self.metrics.live.beat();
            let event = self.next_event(stop.as_mut()).await;
            let flow = match event {
                Event::Stop(how) => self.on_stop(how),
                Event::Source(e) => self.on_source(e, stop.as_mut()).await?,
                Event::Reload(cause) => self.on_reload(cause).await,
                Event::Reloaded(loaded) => self.on_reloaded(loaded)?,
                Event::CommitTick => self.on_commit_tick(stop.as_mut()).await?,
            };
            if flow != Flow::Continue {
                break flow;
            }
        };
        self.finish(flow == Flow::Abandon).await
    }

    /// The next event; a stop first, then the source, then reloads, then
    /// the tick (after a `Stop::Now`, no more ticks: the last commit is
    /// made once the source ends).
    pub(super) async fn next_event<S: Future<Output = Stop>>(
        &mut self,
        stop: Pin<&mut S>,
    ) -> Event {
        let reload = self.reload.as_mut();
        tokio::select! {
            biased;
            how = stop, if self.ending.awaits_stop() => Event::Stop(how),
            e = self.events.recv() => Event::Source(e),
            Some(cause) = async {
                match reload {
                    Some(r) => r.next().await,
                    None => std::future::pending().await,
                }
            } => Event::Reload(cause),
            Some(loaded) = self.reload_done.1.recv() => Event::Reloaded(loaded),
            _ = self.commit_tick.tick(), if self.ending.ticks() => Event::CommitTick,
        }
    }

    fn on_stop(&mut self, how: Stop) -> Flow {
        self.ending.stop(how, self.source);
        Flow::Continue
    }

    async fn on_source<S: Future<Output = Stop>>(
        &mut self,
        event: Option<SourceEvent>,
        stop: Pin<&mut S>,
    ) -> Result<Flow, PipelineError> {
        match event {
            None | Some(SourceEvent::End) => return Ok(Flow::End),
            Some(SourceEvent::Failed(why)) => return Err(PipelineError::Unavailable(why)),
            Some(SourceEvent::Assigned { source, partitions }) => {
                self.on_assigned(source, partitions).await?;
            }
            Some(SourceEvent::PartitionStart {
                source: s,
                partition,
                committed,
            }) => {
                let topic = self.source.topic(s);
                let checkpoint = committed
                    .as_ref()
                    .and_then(|(_, m)| self.stages.state.checkpoint(topic, partition, m));
                if let Some(c) = &checkpoint {
                    tracing::info!(topic = %topic, partition, next = c.next, "restoring checkpoint");
                }
                self.driver
                    .handle(Input::PartitionStart {
                        source: s,
                        partition,
                        checkpoint,
                    })
                    .await?;
            }
            Some(SourceEvent::Drained {
                source: s,
                partition,
            }) => {
                self.stages.drained(s, partition).await?;
            }
            Some(SourceEvent::Batch {
                source: s,
                batch,
                dead,
                consumed,
                marks,
            }) => {
                self.first_record.get_or_insert_with(Instant::now);
                let (stages, driver, source) = (&mut self.stages, &mut *self.driver, self.source);
                // A stop during the evaluations abandons them; after a stop
                // they run to the end.
                let work = async {
                    stages.repartition(s, batch.as_ref()).await?;
                    let step = driver
                        .handle(Input::Batch {
                            source: s,
                            batch,
                            dead,
                            consumed,
                            marks,
                        })
                        .await?;
                    for &(s, p) in &step.complete {
                        source.partition_complete(s, p);
                    }
                    stages.emit(source, step).await
                };
                let raced = unless_stopped(stop, !self.ending.awaits_stop(), work).await;
                return self.settle(raced);
            }
        }
        Ok(Flow::Continue)
    }

    async fn on_assigned(&mut self, s: usize, partitions: Vec<i32>) -> Result<(), PipelineError> {
        tracing::info!(topic = %self.source.topic(s), ?partitions, "assignment");
        // Assignments raise nothing to emit.
        self.driver
            .handle(Input::Assigned {
                source: s,
                partitions: partitions.clone(),
            })
            .await?;
        // A commit sent before the change may have failed (its result may
        // never come: a consumer started again): the next one sends all.
        self.committed.forget_sent();
        self.stages.relay.assigned(s, &partitions);
        if let Some(n) = self.assigned.get_mut(s) {
            *n = partitions.len() as u64;
        }
        self.metrics
            .partitions_assigned
            .set(i64::try_from(self.assigned.iter().sum::<u64>()).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Loads the SQL folder again on a task of its own: the stream goes
    /// on meanwhile.
    async fn on_reload(&mut self, cause: ReloadCause) -> Flow {
        if let Some(r) = self.reload.as_mut() {
            r.settle().await;
        }
        self.reload_generation += 1;
        let (generation, done) = (self.reload_generation, self.reload_done.0.clone());
        // Loaded against the configured sources; the repartitioned views
        // are bound again when swapped in.
        let (dir, defs, options) = (
            self.settings.sql_dir.clone(),
            self.defs
                .iter()
                .filter(|d| d.derived.is_none())
                .cloned()
                .collect::<Vec<_>>(),
            (self.settings.sql_options)(),
        );
        tokio::spawn(async move {
            let loaded = SqlSet::load(&dir, &defs, &options).await;
            let _ = done.send((generation, cause, loaded)).await;
        });
        Flow::Continue
    }

    /// Swaps in a reloaded set, unless a newer reload is on its way.
    fn on_reloaded(&mut self, (generation, cause, loaded): Loaded) -> Result<Flow, PipelineError> {
        if generation != self.reload_generation {
            return Ok(Flow::Continue);
        }
        let defs = self.defs;
        let dir = &self.settings.sql_dir;
        let loaded = loaded.and_then(|mut set| {
            if defs.iter().any(|d| d.derived.is_some()) {
                repartition::bind(&mut set, defs)
                    .map_err(|e| Diagnostics(vec![Diagnostic::new(dir, 1, 1, e.to_string())]))?;
            }
            Ok(set)
        });
        swap_sql(
            self.settings,
            self.driver,
            &self.metrics,
            defs,
            cause,
            loaded,
            self.owner_reloads,
        )?;
        Ok(Flow::Continue)
    }

    /// Progress and errors into the metrics, then the evaluations due on
    /// processing time, their outputs and the commit (which waits for the
    /// broker): a stop meanwhile abandons them (at-least-once).
    async fn on_commit_tick<S: Future<Output = Stop>>(
        &mut self,
        stop: Pin<&mut S>,
    ) -> Result<Flow, PipelineError> {
        self.progress
            .tick(&self.metrics, &self.source.consumer_lag());
        self.stages.consumer_errors(self.source, &self.metrics);
        self.progress.held(&self.metrics, self.driver.held());
        let (stages, driver, source, defs, committed) = (
            &mut self.stages,
            &mut *self.driver,
            self.source,
            self.defs,
            &mut self.committed,
        );
        let work = async {
            let step = driver.handle(Input::Tick).await?;
            stages.emit(source, step).await?;
            commit(source, driver, stages, defs, committed, false).await
        };
        let raced = unless_stopped(stop, !self.ending.awaits_stop(), work).await;
        self.settle(raced)
    }

    /// After work raced with a stop: abandoned (`None`), or done, with a
    /// drain to start if the end of input arrived meanwhile.
    fn settle(
        &mut self,
        raced: Option<(Result<(), PipelineError>, bool)>,
    ) -> Result<Flow, PipelineError> {
        match self.ending.settle(raced, self.source) {
            None => Ok(Flow::Abandon),
            Some(done) => done.map(|()| Flow::Continue),
        }
    }

    /// After the loop: a drain closes every window and tells the relay;
    /// then the last commit, bounded, unless the work was abandoned.
    async fn finish(mut self, mut abandoned: bool) -> Result<Finished, PipelineError> {
        if abandoned {
            // A stop arrived while views or rules were running: their work
            // is dropped, nothing more is committed, and a restart re-reads
            // the windows since the last commit (at-least-once).
            tracing::info!(
                "stopped during an evaluation or while waiting for the broker: the work was abandoned; the windows since the last commit are re-read at restart"
            );
            self.source.stop();
        } else {
            if self.ending.closes_every_window() {
                let step = self.driver.handle(Input::Finish).await?;
                self.stages.emit(self.source, step).await?;
                self.stages.relay_end().await?;
            }
            let last = commit(
                self.source,
                &*self.driver,
                &mut self.stages,
                self.defs,
                &mut self.committed,
                true,
            );
            match tokio::time::timeout(SHUTDOWN_WAIT, last).await {
                Ok(done) => {
                    done?;
                    self.stages.outputs.producer.flush(SHUTDOWN_WAIT)?;
                    if let Some(purge) = self.stages.purge.as_mut() {
                        purge.finish(PURGE_WAIT).await;
                    }
                }
                Err(_) => {
                    tracing::warn!(
                        "the broker did not acknowledge the outputs within {} s; stopping without the last commit: a restart re-reads the records since the last confirmed one",
                        SHUTDOWN_WAIT.as_secs()
                    );
                    abandoned = true;
                }
            }
        }
        if abandoned && let Err(e) = self.stages.outputs.producer.flush(ABANDONED_FLUSH) {
            tracing::warn!(error = %e, "outputs not yet delivered were dropped; they are produced again after the restart");
        }
        Ok(Finished {
            drained: self.ending.closes_every_window() && !abandoned,
            first_record: self.first_record,
        })
    }
}

/// How the caller asks a running pipeline to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Finish the batches already decoded, commit, stop (SIGTERM). Open
    /// windows are left for the next run.
    Now,
    /// Read every partition to its current end, close every window, commit,
    /// stop (the demo, once its generator is done).
    Drain,
}

/// Runs engine work (views and rules) unless a `Stop::Now` arrives first:
/// then the work is dropped (`None`) and the caller abandons the run. A
/// `Stop::Drain` arriving meanwhile lets the work finish and is returned
/// with it (`true`: start draining). Once a stop was requested, the work
/// runs to its end.
pub(super) async fn unless_stopped<T, S: Future<Output = Stop>>(
    stop: std::pin::Pin<&mut S>,
    stop_requested: bool,
    work: impl Future<Output = T>,
) -> Option<(T, bool)> {
    if stop_requested {
        return Some((work.await, false));
    }
    tokio::pin!(work);
    tokio::select! {
        biased;
        how = stop => match how {
            Stop::Now => None,
            Stop::Drain => Some((work.await, true)),
        },
        r = &mut work => Some((r, false)),
    }
}

/// What the input side tells its source when the run ends.
pub(super) trait Halt {
    /// No more polling.
    fn halt(&self);
    /// Read every partition to its current end, then stop.
    fn drain_to_end(&self);
}

impl Halt for KafkaSource {
    fn halt(&self) {
        self.stop();
    }
    fn drain_to_end(&self) {
        self.drain();
    }
}

/// How far a run is from its end: the input side's stop and drain flags,
/// and what each event does to them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ending {
    /// A stop was asked for (or the end of input reached): the next one
    /// is not waited for, and work runs to its end.
    stop_requested: bool,
    /// `Stop::Now`: no more polling; the last commit only.
    stopping: bool,
    /// Reading every partition to its end, then closing every window.
    drain: bool,
}

impl Ending {
    /// A stop arrived (`Event::Stop`).
    pub(super) fn stop(&mut self, how: Stop, source: &impl Halt) {
        self.stop_requested = true;
        match how {
            Stop::Now => {
                tracing::info!("shutting down: finishing decoded batches, then committing");
                source.halt();
                self.stopping = true;
            }
            Stop::Drain => self.start_draining(source),
        }
    }

    /// After work raced with a stop ([`unless_stopped`]): `None` when it
    /// was abandoned; else its result, with a drain started if the end of
    /// input arrived meanwhile.
    pub(super) fn settle<T>(&mut self, raced: Option<(T, bool)>, source: &impl Halt) -> Option<T> {
        let (done, drain_now) = raced?;
        if drain_now {
            self.stop_requested = true;
            self.start_draining(source);
        }
        Some(done)
    }

    fn start_draining(&mut self, source: &impl Halt) {
        tracing::info!("draining: reading every partition to its current end");
        source.drain_to_end();
        self.drain = true;
    }

    /// Whether the loop still waits for a stop.
    pub(super) fn awaits_stop(&self) -> bool {
        !self.stop_requested
    }

    /// Whether the commit tick still runs (not after `Stop::Now`).
    pub(super) fn ticks(&self) -> bool {
        !self.stopping
    }

    /// Whether the end closes every window: a drain that no `Stop::Now`
    /// cut short.
    pub(super) fn closes_every_window(&self) -> bool {
        self.drain && !self.stopping
    }
}

/// Swaps in the SQL folder loaded again (off the pipeline's path); a
/// folder that does not check is refused with its diagnostics logged, and
/// the running SQL stays.
pub(super) fn swap_sql(
    settings: &Settings,
    driver: &mut Driver,
    metrics: &Metrics,
    defs: &[SourceDef],
    cause: super::reload::ReloadCause,
    loaded: Result<SqlSet, telemine_types::diagnostic::Diagnostics>,
    owner: Option<&mpsc::UnboundedSender<SqlSet>>,
) -> Result<(), PipelineError> {
    let dir = &settings.sql_dir;
    match loaded {
        Ok(set) if owner.is_some() != Deferral::plan(&set).is_some() => {
            Metrics::add(&metrics.sql_reload_failures, 1);
            tracing::error!(dir = %dir.display(), cause = cause.as_str(), "SQL reload refused, the running SQL keeps going: the new SQL adds the first (or drops the last) view over views or scored view, which moves work between the instances and the alerting owner (restart to apply it)");
        }
        Ok(set) => {
            if let Some(owner) = owner {
                // The owner plans the same files for its scoring.
                owner.send(set.fork()).ok();
            }
            let (views, rules) = (set.views.len(), set.rules.len());
            let catalog = Catalog::of(&set, defs);
            driver.replace_sql(set)?;
            metrics.live.set_catalog(catalog);
            Metrics::add(&metrics.sql_reloads, 1);
            tracing::info!(dir = %dir.display(), cause = cause.as_str(), views, rules, "SQL reloaded");
        }
        Err(diagnostics) => {
            Metrics::add(&metrics.sql_reload_failures, 1);
            tracing::error!(dir = %dir.display(), cause = cause.as_str(), "SQL reload refused, the running SQL keeps going:\n{diagnostics}");
        }
    }
    Ok(())
}

/// How long shutdown waits for the outputs and the last commit.
pub(super) const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// How long an abandoned run waits for undelivered outputs.
pub(super) const ABANDONED_FLUSH: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    /// Work that never ends: an evaluation stuck in a runaway query.
    fn endless() -> impl Future<Output = u32> {
        std::future::pending()
    }

    #[tokio::test]
    async fn sigterm_abandons_an_evaluation_that_runs() {
        let stop = std::future::ready(Stop::Now);
        tokio::pin!(stop);
        assert!(
            unless_stopped(stop.as_mut(), false, endless())
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn the_end_of_input_lets_the_evaluation_finish_then_drains() {
        let stop = std::future::ready(Stop::Drain);
        tokio::pin!(stop);
        let work = async {
            tokio::task::yield_now().await;
            7
        };
        assert_eq!(
            unless_stopped(stop.as_mut(), false, work).await,
            Some((7, true))
        );
    }

    /// A source that records what it was told.
    #[derive(Default)]
    struct Told(std::cell::RefCell<Vec<&'static str>>);

    impl Halt for Told {
        fn halt(&self) {
            self.0.borrow_mut().push("halt");
        }
        fn drain_to_end(&self) {
            self.0.borrow_mut().push("drain");
        }
    }

    #[test]
    fn sigterm_halts_the_source_ends_the_ticks_and_closes_no_window() {
        let (mut ending, told) = (Ending::default(), Told::default());
        assert!(ending.awaits_stop() && ending.ticks());
        ending.stop(Stop::Now, &told);
        assert_eq!(*told.0.borrow(), ["halt"]);
        assert!(!ending.awaits_stop(), "a second stop is not waited for");
        assert!(!ending.ticks(), "no commit tick after Stop::Now");
        assert!(!ending.closes_every_window());
    }

    #[test]
    fn the_end_of_input_drains_keeps_ticking_and_closes_every_window() {
        let (mut ending, told) = (Ending::default(), Told::default());
        ending.stop(Stop::Drain, &told);
        assert_eq!(*told.0.borrow(), ["drain"]);
        assert!(!ending.awaits_stop());
        assert!(ending.ticks(), "commits go on while the partitions drain");
        assert!(ending.closes_every_window());
    }

    #[test]
    fn work_that_a_stop_abandoned_settles_to_nothing_and_tells_the_source_nothing() {
        let (mut ending, told) = (Ending::default(), Told::default());
        assert_eq!(ending.settle::<u32>(None, &told), None);
        assert!(told.0.borrow().is_empty());
        assert_eq!(ending, Ending::default());
    }

    #[test]
    fn the_end_of_input_during_work_starts_the_drain_once_the_work_is_done() {
        let (mut ending, told) = (Ending::default(), Told::default());
        assert_eq!(ending.settle(Some((5, false)), &told), Some(5));
        assert!(told.0.borrow().is_empty() && ending.awaits_stop());
        assert_eq!(ending.settle(Some((6, true)), &told), Some(6));
        assert_eq!(*told.0.borrow(), ["drain"]);
        assert!(!ending.awaits_stop() && ending.closes_every_window());
    }

    #[tokio::test]
    async fn after_a_stop_was_requested_the_work_runs_to_its_end() {
        let stop = std::future::pending::<Stop>();
        tokio::pin!(stop);
        assert_eq!(
            unless_stopped(stop.as_mut(), true, async { 3 }).await,
            Some((3, false))
        );
    }
}
