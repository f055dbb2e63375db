//! The Kafka pipeline: source → [`WindowEngine`] → producers → commits.
//!
//! Ordering that makes delivery at-least-once: a record's offset is
//! committed only after (1) the windows it belongs to have closed, (2)
//! every alert they raised and every dead letter among the records before
//! it has been acknowledged by the broker. Shutdown (SIGINT/SIGTERM, or the
//! caller's future) stops polling, lets the batches already decoded run
//! through, produces their alerts, waits for the acknowledgements and
//! commits; windows still open are re-read after the restart.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemine_codec::decode::decoder_for;
use telemine_connectors::kafka::{
    CommitOffset, KafkaProducer, KafkaSource, KafkaSourceOptions, Purger, SourceSpec,
    create_topic_unless_present,
};
use tokio::sync::{mpsc, watch};

use super::alerting_owner::{self, Control, OwnerScoring};
use super::alerting_stage::AlertingStage;
use super::commits::CommitLog;
use super::error::PipelineError;
use super::input::{InputLoop, Parts};
use super::outputs::{Notifier, OutputSettings, Outputs};
use super::relay::{self, Progress, Reached, Relay};
use super::source_errors::{self, SourceError, SourceErrors};
use super::startup::{follow_silences, partition_counts_patiently, read_group_state};
use super::state_store::StateStore;
use crate::config::{Config, Delivery};
use telemine_alerting::Alerter;
use telemine_alerting::payload::Payload;
use telemine_observe::live::Catalog;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::deferred::Deferral;
use telemine_stream::driver::{Driver, Step};
use telemine_stream::repartition::{self, RepartitionDecoder, Writer};
use telemine_stream::windows::WindowEngine;

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

/// How a run ends and what it reports to.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Stop once every partition is read to the end it had at start, and
    /// close all open windows (bench, tests). Otherwise run until shutdown.
    pub stop_at_end: bool,
    /// Shared counters; a fresh set when `None`.
    pub metrics: Option<Arc<Metrics>>,
    /// Receives every notification as it is produced (tests).
    pub alert_tap: Option<mpsc::UnboundedSender<Payload>>,
    /// Reload the SQL folder when it changes or on SIGHUP (`run`).
    pub hot_reload: bool,
    /// Leave the models out: scored views carry NULL scores, as under
    /// `telemine check` (`bench` measures what the model stage costs).
    pub without_models: bool,
}

/// What a finished run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub records: u64,
    pub dead_letters: u64,
    pub late: u64,
    /// Rule rows raised.
    pub alerts: u64,
    /// Notifications produced to the alerts topic.
    pub notifications: u64,
    /// From the first record received to the end of the run.
    pub busy: Duration,
}

/// Runs the pipeline until `stop` resolves (or, with `stop_at_end`, until
/// the input is drained).
pub async fn run_pipeline(
    config: &Config,
    sql: SqlSet,
    options: RunOptions,
    stop: impl Future<Output = Stop>,
) -> Result<RunSummary, PipelineError> {
    let mut defs = config.source_defs().map_err(PipelineError::Config)?;
    let metrics = options.metrics.clone().unwrap_or_default();
    let mut sql = sql;
    // Views that need every partition's rows, through repartition topics
    // (`defs` gains the derived sources).
    let writer = if config.engine.repartition {
        plan_repartition(config, &mut sql, &mut defs).await?
    } else {
        None
    };
    let models = if options.without_models {
        Vec::new()
    } else {
        config.model_settings().map_err(PipelineError::Config)?
    };
    let alone = telemine_stream::alone_reasons(&sql, &defs, config.engine.repartition);
    // The models score, and the views over views are computed, at the
    // alerting owner (`deferred.rs`), whatever the number of instances.
    // (Every configured model scores a view, so there is nothing to score
    // on the input side.)
    let owner_sql = match Deferral::plan(&sql) {
        Some(_) => Some(sql.replan().await.map_err(|d| {
            PipelineError::Config(format!("planning the SQL for the alerting owner:\n{d}"))
        })?),
        None => None,
    };
    metrics.live.set_catalog(Catalog::of(&sql, &defs));
    let engine = WindowEngine::new(sql, &defs, metrics.clone());
    // Partitions arriving from another instance get lanes of their own
    // when instances may share the group (see `driver.rs`).
    let mut driver = if alone.is_empty() {
        Driver::with_lanes(engine, defs.clone())
    } else {
        Driver::new(engine)
    };
    let (owner_reloads, owner_scoring) = match owner_sql {
        Some(sql) => {
            driver.defer_scoring();
            let (tx, reloads) = mpsc::unbounded_channel();
            let scoring = OwnerScoring {
                sql,
                models,
                max_lateness_ms: telemine_stream::deferred::max_lateness_ms(&defs),
                metrics: metrics.clone(),
                reloads,
            };
            (Some(tx), Some(scoring))
        }
        None => (None, None),
    };
    let specs = source_specs(config, &defs)?;
    let all_topics: Vec<String> = defs.iter().map(|d| d.topic.clone()).collect();
    let producer = output_producer(config, "").await?;
    let mut alerter = Alerter::new(&config.alerting);
    let follow_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (silence_tx, silence_rx) = mpsc::unbounded_channel();
    tokio::pin!(stop);
    // The silences and the saved state first: telemine never alerts
    // without them (the alerting state itself is read by whichever
    // instance owns the alerting relay, when it gains it). Waiting for
    // them honours a stop.
    let startup = async {
        let follower =
            follow_silences(config, &mut alerter, silence_tx, follow_stop.clone()).await?;
        let table = read_group_state(config).await?;
        let relay_topic = relay::topic(config);
        if let Err(e) = create_topic_unless_present(&config.kafka, &relay_topic, 1, &[]).await {
            tracing::warn!(topic = %relay_topic, error = %e, "cannot create the alerting relay topic");
        }
        Ok::<_, PipelineError>((follower, table))
    };
    let (follower, state_table) = tokio::select! {
        biased;
        _ = &mut stop => {
            tracing::info!("stopped while starting: nothing was read or committed");
            follow_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(RunSummary::default());
        }
        r = startup => r?,
    };
    let follower = Some(follower);
    let state = StateStore::new(
        &config.alerting.state_topic,
        &config.kafka.group_id,
        config.sinks.max_payload_bytes(),
        state_table,
        String::new(),
    );
    let (tx, mut rx) = mpsc::channel(config.engine.queue_batches.max(1));
    let source = KafkaSource::start(
        &config.kafka,
        KafkaSourceOptions {
            max_batch_records: config.engine.max_batch_records,
            linger: config.engine.batch_linger,
            stop_at_end: options.stop_at_end,
            alone: (!alone.is_empty()).then(|| alone.join("; ")),
        },
        specs,
        tx,
    )?;
    let stages = Stages {
        outputs: Outputs::new(OutputSettings::of(config), producer, metrics.clone()),
        relay: RelayOut::new(config, &source.topics()),
        state,
        purge: writer.as_ref().and_then(|_| Purge::new(config)),
        writer,
        names: defs.iter().map(|d| d.name.clone()).collect(),
        errors: SourceErrors::default(),
    };
    // The Alertmanagers read the alerts' state changes.
    if !config.alerting.alertmanagers.is_empty() {
        alerter.record_states();
    }
    // The group's alerting, if this instance gets the relay (see
    // `alerting_owner.rs`), on its own producer.
    let (control, control_rx) = watch::channel(Control::Running);
    let owner = alerting_owner::run(
        config,
        &all_topics,
        AlertingStage::new(alerter, silence_rx),
        Notifier::new(
            Outputs::new(
                OutputSettings::of(config),
                output_producer(config, ".alerting").await?,
                metrics.clone(),
            ),
            &config.alerting,
            options.alert_tap.clone(),
        ),
        control_rx,
        owner_scoring,
    );
    let input = async {
        let finished = InputLoop::new(Parts {
            config,
            defs: &defs,
            metrics: metrics.clone(),
            source: &source,
            driver: &mut driver,
            stages,
            owner_reloads: owner_reloads.as_ref(),
            events: &mut rx,
            hot_reload: options.hot_reload,
            stop_at_end: options.stop_at_end,
        })
        .run(stop.as_mut())
        .await?;
        // The owner task finishes the group's alerting once every partition
        // was drained (if it holds the relay), or stops with this instance.
        let _ = control.send(if finished.drained {
            Control::InputDone
        } else {
            Control::Stop
        });
        Ok::<_, PipelineError>(finished.first_record)
    };
    let (first_record, ()) = tokio::try_join!(input, owner)?;
    follow_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(f) = follower {
        tokio::task::spawn_blocking(move || f.join()).await.ok();
    }
    tracing::info!(metrics = %metrics.summary(), "pipeline stopped");
    for (name, c) in driver.source_counts() {
        tracing::info!(source = %name, late = c.late, duplicates = c.duplicates, "per-source counts");
    }
    // Nothing reads the source's queue any more: closing it lets a poll or
    // decode thread blocked on a full queue end, so the join cannot hang.
    drop(rx);
    tokio::task::spawn_blocking(move || source.join())
        .await
        .ok();
    Ok(RunSummary {
        records: Metrics::get(&metrics.records_decoded),
        dead_letters: Metrics::get(&metrics.dead_letters),
        late: Metrics::get(&metrics.late_records),
        alerts: Metrics::get(&metrics.alerts),
        notifications: Metrics::get(&metrics.notifications),
        busy: first_record.map(|t| t.elapsed()).unwrap_or_default(),
    })
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

/// After work raced with a stop: if the end of input arrived meanwhile
/// (`drain_now`), starts draining and says so.
pub(super) fn begin_drain(
    source: &KafkaSource,
    drain_now: bool,
    stop_requested: &mut bool,
) -> bool {
    if drain_now {
        *stop_requested = true;
        start_draining(source);
    }
    drain_now
}

/// Asks the source to read every partition to its current end, then stop.
pub(super) fn start_draining(source: &KafkaSource) {
    tracing::info!("draining: reading every partition to its current end");
    source.drain();
}

/// Swaps in the SQL folder loaded again (off the pipeline's path); a
/// folder that does not check is refused with its diagnostics logged, and
/// the running SQL stays.
pub(super) fn swap_sql(
    config: &Config,
    driver: &mut Driver,
    metrics: &Metrics,
    defs: &[SourceDef],
    cause: super::reload::ReloadCause,
    loaded: Result<SqlSet, telemine_types::diagnostic::Diagnostics>,
    owner: Option<&mpsc::UnboundedSender<SqlSet>>,
) -> Result<(), PipelineError> {
    let dir = &config.sql.dir;
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

/// Binds the views that need every partition's rows to derived sources
/// (appended to `defs`), creates their repartition topics (as many
/// partitions as the source's topic) unless present, and returns the
/// writer that feeds them; `None` when no view needs it.
async fn plan_repartition(
    config: &Config,
    sql: &mut SqlSet,
    defs: &mut Vec<SourceDef>,
) -> Result<Option<Writer>, PipelineError> {
    let needed = repartition::needed(sql, defs);
    if needed.is_empty() {
        return Ok(None);
    }
    let upstream: Vec<String> = defs.iter().map(|d| d.topic.clone()).collect();
    let counts = partition_counts_patiently(config, &upstream).await?;
    let count_of = |counts: &[(String, i32)], t: &str| {
        counts
            .iter()
            .find(|(name, _)| name == t)
            .map_or(0, |(_, n)| *n)
    };
    let all = repartition::derive(sql, defs, &config.kafka.group_id, &needed, |t| {
        count_of(&counts, t)
    });
    let derived: Vec<&SourceDef> = all.iter().filter(|d| d.derived.is_some()).collect();
    for d in &derived {
        let n = d.derived.as_ref().map_or(1, |x| x.upstream_partitions);
        if let Err(e) = create_topic_unless_present(&config.kafka, &d.topic, n, &[]).await {
            tracing::warn!(topic = %d.topic, error = %e, "cannot create the repartition topic");
        }
    }
    let topics: Vec<String> = derived.iter().map(|d| d.topic.clone()).collect();
    let made = partition_counts_patiently(config, &topics).await?;
    for (topic, n) in &made {
        if *n == 0 {
            return Err(PipelineError::Unavailable(format!(
                "the repartition topic `{topic}` does not exist and could not be created: create it with as many partitions as its source's topic, or set [engine] repartition = false"
            )));
        }
        let views: Vec<&str> = sql
            .views
            .iter()
            .filter(|v| {
                v.source
                    .and_then(|s| all.get(s))
                    .is_some_and(|d| &d.topic == topic)
            })
            .map(|v| v.name.as_str())
            .collect();
        tracing::info!(%topic, partitions = n, ?views, "repartitioning through Kafka");
    }
    let writer = Writer::new(
        &all,
        |t| count_of(&made, t),
        config.sinks.max_payload_bytes(),
    )?;
    *defs = all;
    Ok(Some(writer))
}

fn source_specs(config: &Config, defs: &[SourceDef]) -> Result<Vec<SourceSpec>, PipelineError> {
    defs.iter()
        .map(|d| {
            let threads = config.engine.decode_threads.max(1);
            if let Some(derived) = &d.derived {
                let upstream = defs[derived.from].schema.batch_schema();
                return Ok(SourceSpec {
                    topic: d.topic.clone(),
                    decoders: (0..threads)
                        .map(|_| {
                            Box::new(RepartitionDecoder::new(upstream.clone()))
                                as Box<dyn telemine_codec::decode::Decoder>
                        })
                        .collect(),
                    fed_by_engine: true,
                });
            }
            let decoders = (0..threads)
                .map(|_| {
                    decoder_for(
                        &d.format,
                        &d.influx,
                        &d.schema,
                        config.engine.max_batch_records,
                        &d.limits,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PipelineError::Config(format!("source `{}`: {e}", d.name)))?;
            Ok(SourceSpec {
                topic: d.topic.clone(),
                decoders,
                fed_by_engine: false,
            })
        })
        .collect()
}

/// Commits what the engine may commit now, with its checkpoints, once the
/// alerting state and every output it derives from are acknowledged
/// (at-least-once). The commit itself is not awaited (see
/// [`KafkaSource::commit`]) unless `last`: the commit before shutdown
/// waits up to [`LAST_COMMIT_WAIT`] for the broker.
pub(super) async fn commit(
    source: &KafkaSource,
    engine: &Driver,
    stages: &mut Stages,
    defs: &[SourceDef],
    committed: &mut CommitLog,
    last: bool,
) -> Result<(), PipelineError> {
    let mut offsets = Vec::new();
    let mut stored = Vec::new();
    for s in 0..defs.len() {
        for (partition, offset, checkpoint) in engine.commit_positions(s) {
            let (metadata, chunks) =
                stages
                    .state
                    .checkpoint_metadata(source.topic(s), partition, &checkpoint);
            stored.extend(chunks);
            offsets.push(CommitOffset {
                source: s,
                partition,
                offset,
                metadata,
            });
        }
    }
    if stages.outputs.producer.is_transactional() {
        return commit_transaction(source, stages, committed, offsets, stored, defs, last).await;
    }
    // Sent before and confirmed by the broker: nothing to send. A commit
    // whose answer never came (its consumer replaced after a fence, a
    // request lost in a broker stall) is sent again.
    let unchanged = committed.unchanged(&offsets)
        && !source.take_commit_failed()
        && offsets
            .iter()
            .all(|o| source.confirmed(o.source, o.partition).as_deref() == Some(&o.metadata));
    if !unchanged {
        // Large checkpoints go to the state topic before the commit that
        // points at them.
        for (key, chunk) in stored {
            stages
                .state
                .store(&mut stages.outputs.producer, key, chunk)
                .await?;
        }
    }
    stages.outputs.settle().await?;
    if offsets.is_empty() || (unchanged && !last) {
        return Ok(());
    }
    if last {
        match source.commit_and_wait(&offsets, LAST_COMMIT_WAIT).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the broker did not confirm the last commit within {} s; a restart re-reads the records since the last confirmed one",
                LAST_COMMIT_WAIT.as_secs()
            ),
            Err(e) => tracing::warn!(error = %e,
                "the last commit failed; a restart re-reads the records since the last confirmed one"),
        }
    } else if !source.commit(&offsets) {
        // Partitions not held now (a rebalance, a lost session): nothing
        // of them was sent; the next tick sends them again.
        committed.forget_sent();
        return Ok(());
    }
    Metrics::add(&stages.outputs.metrics().commits, 1);
    // Checkpoints stored in the state topic that the new commit no longer
    // points at: deleted once the broker confirmed a newer commit of their
    // partition (until then a restart may still need them).
    if let Some(purge) = stages.purge.as_mut() {
        purge.note(&offsets, defs);
        purge.run(source, |s, p| source.confirmed(s, p), last);
    }
    let state = &stages.state;
    let gone = committed.sent(
        offsets,
        |o| state.checkpoint_chunks(source.topic(o.source), o.partition, &o.metadata),
        |s, p| source.confirmed(s, p),
    );
    stages.state.retire(gone);
    Ok(())
}

/// The exactly-once commit: the large checkpoints, then one transaction
/// with everything produced since the last and the input offsets; a
/// failure stops the run (see [`KafkaProducer::commit_transaction`]).
async fn commit_transaction(
    source: &KafkaSource,
    stages: &mut Stages,
    committed: &mut CommitLog,
    offsets: Vec<CommitOffset>,
    stored: Vec<(String, Vec<u8>)>,
    defs: &[SourceDef],
    last: bool,
) -> Result<(), PipelineError> {
    for (key, chunk) in stored {
        stages
            .state
            .store(&mut stages.outputs.producer, key, chunk)
            .await?;
    }
    let txn = source.transaction_offsets(&offsets);
    stages.outputs.producer.commit_transaction(txn).await?;
    if offsets.is_empty() {
        return Ok(());
    }
    Metrics::add(&stages.outputs.metrics().commits, 1);
    // The commit is confirmed once the transaction is.
    let confirmed: std::collections::HashMap<(usize, i32), String> = offsets
        .iter()
        .map(|o| ((o.source, o.partition), o.metadata.clone()))
        .collect();
    if let Some(purge) = stages.purge.as_mut() {
        purge.note(&offsets, defs);
        purge.run(source, |s, p| confirmed.get(&(s, p)).cloned(), last);
    }
    let state = &stages.state;
    let gone = committed.sent(
        offsets,
        |o| state.checkpoint_chunks(source.topic(o.source), o.partition, &o.metadata),
        |s, p| confirmed.get(&(s, p)).cloned(),
    );
    stages.state.retire(gone);
    Ok(())
}

/// The producer of an instance's outputs (`role` ""), or of its alerting
/// (".alerting"): transactional under `delivery = "exactly_once"`, with an
/// id derived from the group and the instance id, so a restart fences
/// the killed incarnation and aborts what it left open.
async fn output_producer(config: &Config, role: &str) -> Result<KafkaProducer, PipelineError> {
    match config.engine.delivery {
        Delivery::AtLeastOnce => Ok(KafkaProducer::new(&config.kafka)?),
        Delivery::ExactlyOnce => {
            let Some(instance) = config.kafka.group_instance_id() else {
                return Err(PipelineError::Config(
                    "[engine] delivery = \"exactly_once\" needs [kafka] instance_id (each instance's transactional id derives from it)".into(),
                ));
            };
            let id = format!("{}{role}.{instance}", config.kafka.group_id);
            let mut client = config.kafka.clone();
            // A killed instance's open transaction is aborted by its
            // successor at once; one whose instance never comes back
            // holds read_committed readers back until this timeout.
            client
                .properties
                .entry("transaction.timeout.ms".into())
                .or_insert_with(|| "10000".into());
            Ok(KafkaProducer::transactional(&client, &id).await?)
        }
    }
}

/// How long shutdown waits for the outputs and the last commit.
pub(super) const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// How long an abandoned run waits for undelivered outputs.
pub(super) const ABANDONED_FLUSH: Duration = Duration::from_secs(5);

/// How long the commit before shutdown waits for the broker.
const LAST_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The stages after the window engine: its outputs, the alerting relay
/// and the state store, all producing on the outputs' producer.
pub(super) struct Stages {
    pub(super) outputs: Outputs,
    pub(super) relay: RelayOut,
    pub(super) state: StateStore,
    /// Writes what the repartitioned views read (see `repartition.rs`).
    writer: Option<Writer>,
    /// Deletes what was read back from the repartition topics.
    pub(super) purge: Option<Purge>,
    /// The sources' names, in source order (metric labels).
    names: Vec<String>,
    /// Dead letters and consumer errors per source, counted and told once
    /// per spell.
    errors: SourceErrors,
}

impl Stages {
    /// Counts and tells the consumer's errors since the last look; writes
    /// the summaries of the error spells that are due.
    pub(super) fn consumer_errors(&mut self, source: &KafkaSource, metrics: &Metrics) {
        let now = Instant::now();
        for e in source.take_consumer_errors() {
            let name = e
                .source
                .and_then(|s| self.names.get(s))
                .map_or("*", String::as_str);
            let error = SourceError {
                source: name,
                kind: source_errors::Kind::Consumer,
                partition: None,
                offset: None,
                reason: &e.error,
            };
            self.errors.record_many(metrics, &error, e.count, now);
        }
        self.errors.tick(now);
    }

    /// What the engine produced in one step: its dead letters (to the
    /// dead-letter topic), its rule rows (to the rows topic; with the
    /// evaluations and this instance's progress, to the alerting relay);
    /// then its late rows (to the late topic, with their source topic).
    pub(super) async fn emit(
        &mut self,
        source: &KafkaSource,
        step: Step,
    ) -> Result<(), PipelineError> {
        let Step {
            dead,
            rows,
            evaluations,
            progress,
            late,
            scored,
            ..
        } = step;
        let metrics = self.outputs.metrics().clone();
        let name = |s: usize| self.names.get(s).map_or("?", String::as_str);
        let now = Instant::now();
        for (s, d) in dead {
            Metrics::add_to(&metrics.source_dead_letters_total, &[name(s)], 1);
            let e = SourceError {
                source: name(s),
                kind: source_errors::Kind::Decode,
                partition: Some(d.partition),
                offset: Some(d.offset),
                reason: &d.reason,
            };
            self.errors.record(&metrics, &e, now);
            self.outputs.dead_letter(source.topic(s), d).await?;
        }
        for p in &progress {
            if let Some(clock) = p.clock {
                metrics
                    .watermark_seconds
                    .with_label_values(&[name(p.source), &p.partition.to_string()])
                    .set(clock as f64 / 1000.0);
            }
        }
        self.outputs.rule_rows(&rows).await?;
        let progress: Vec<Progress> = progress
            .iter()
            .filter_map(|p| {
                let reached = match (p.clock, p.idle) {
                    (Some(c), _) => Reached::Clock(c),
                    (None, true) => Reached::Idle,
                    (None, false) => return None,
                };
                Some(self.relay.progress(p.source, p.partition, reached))
            })
            .collect();
        // The scored views' rows before the progress that says they are all.
        let mut messages = Vec::new();
        for rows in &scored {
            messages.extend(telemine_stream::deferred::encode(
                rows,
                self.relay.max_bytes,
            )?);
        }
        messages.extend(self.relay.messages(&rows, &evaluations, progress));
        self.outputs.relay(&self.relay.topic, messages).await?;
        for l in late {
            self.outputs.late(source.topic(l.source), l).await?;
        }
        Ok(())
    }

    /// A decoded batch of `source`, to the repartition topics over it.
    pub(super) async fn repartition(
        &mut self,
        source: usize,
        batch: Option<&datafusion::arrow::array::RecordBatch>,
    ) -> Result<(), PipelineError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let messages = writer.write(source, batch)?;
        self.outputs.repartition(messages).await?;
        Ok(())
    }

    /// `source`'s `partition` was read to its end in a drain: the
    /// repartition topics over it hear so.
    pub(super) async fn drained(
        &mut self,
        source: usize,
        partition: i32,
    ) -> Result<(), PipelineError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let messages = writer.drained(source, partition);
        self.outputs.repartition(messages).await?;
        Ok(())
    }

    /// After the last step of a drain: every partition held is at its end.
    pub(super) async fn relay_end(&mut self) -> Result<(), PipelineError> {
        let end = self.relay.held_at(Reached::End);
        let messages = self.relay.messages(&[], &[], end);
        self.outputs.relay(&self.relay.topic, messages).await?;
        Ok(())
    }
}

/// How often the repartition topics are cut below what the group has
/// committed there (and at the last commit).
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// How long shutdown waits for a deletion under way.
pub(super) const PURGE_WAIT: Duration = Duration::from_secs(5);

/// Deletes from the repartition topics the records below the offsets the
/// broker confirmed this instance committed there (Kafka's DeleteRecords,
/// on a task of its own): a repartition topic holds what is not yet read
/// back, not the broker's whole retention.
pub(super) struct Purge {
    purger: Arc<Purger>,
    /// Per derived (source, partition): the offsets last committed, with
    /// their metadata (to match the broker's confirmation, which comes
    /// after the next commit is sent), newest last.
    sent: std::collections::BTreeMap<(usize, i32), std::collections::VecDeque<(i64, String)>>,
    /// Per derived (source, partition): the offset last deleted below.
    purged: std::collections::BTreeMap<(usize, i32), i64>,
    last: Option<Instant>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Purge {
    fn new(config: &Config) -> Option<Purge> {
        match Purger::new(&config.kafka) {
            Ok(purger) => Some(Purge {
                purger: Arc::new(purger),
                sent: Default::default(),
                purged: Default::default(),
                last: None,
                running: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete what was read back from the repartition topics; the broker's retention deletes it");
                None
            }
        }
    }

    /// The offsets of a commit just sent.
    fn note(&mut self, offsets: &[CommitOffset], defs: &[SourceDef]) {
        for o in offsets {
            if defs.get(o.source).is_some_and(|d| d.derived.is_some()) {
                let recent = self.sent.entry((o.source, o.partition)).or_default();
                if recent.back().is_none_or(|(_, m)| *m != o.metadata) {
                    recent.push_back((o.offset, o.metadata.clone()));
                }
                while recent.len() > 8 {
                    recent.pop_front();
                }
            }
        }
    }

    /// Deletes below the confirmed commits, at most every
    /// [`PURGE_INTERVAL`] unless `now`, never two at once.
    fn run(
        &mut self,
        source: &KafkaSource,
        confirmed: impl Fn(usize, i32) -> Option<String>,
        now: bool,
    ) {
        if self.running.as_ref().is_some_and(|r| !r.is_finished())
            || (!now && self.last.is_some_and(|t| t.elapsed() < PURGE_INTERVAL))
        {
            return;
        }
        self.last = Some(Instant::now());
        let mut below = Vec::new();
        for (&(s, p), recent) in &self.sent {
            let Some(confirmed) = confirmed(s, p) else {
                continue;
            };
            let Some(&(offset, _)) = recent.iter().rev().find(|(_, m)| *m == confirmed) else {
                continue;
            };
            if self.purged.get(&(s, p)).is_none_or(|&d| d < offset) {
                below.push((source.topic(s).to_string(), p, offset));
                self.purged.insert((s, p), offset);
            }
        }
        if below.is_empty() {
            return;
        }
        let purger = self.purger.clone();
        self.running = Some(tokio::spawn(async move {
            match purger.delete_below(&below).await {
                Ok(n) => tracing::debug!(
                    partitions = n,
                    "deleted repartitioned records already read back"
                ),
                Err(e) => tracing::warn!(error = %e,
                    "cannot delete repartitioned records already read back; the broker's retention deletes them"),
            }
        }));
    }

    /// Waits up to `wait` for a deletion under way (shutdown).
    pub(super) async fn finish(&mut self, wait: Duration) {
        if let Some(r) = self.running.take() {
            let _ = tokio::time::timeout(wait, r).await;
        }
    }
}

/// What this instance relays to the group's alerting (see `relay.rs`).
pub(super) struct RelayOut {
    topic: String,
    from: String,
    max_bytes: usize,
    /// Source topics, by source index.
    topics: Vec<String>,
    /// Partitions held, by source index.
    held: Vec<Vec<i32>>,
    /// The progress relayed last.
    last: Vec<Progress>,
}

impl RelayOut {
    fn new(config: &Config, topics: &[String]) -> RelayOut {
        RelayOut {
            topic: relay::topic(config),
            from: config.kafka.instance_id.clone(),
            max_bytes: config.sinks.max_payload_bytes(),
            topics: topics.to_vec(),
            held: vec![Vec::new(); topics.len()],
            last: Vec::new(),
        }
    }

    pub(super) fn assigned(&mut self, source: usize, partitions: &[i32]) {
        if let Some(h) = self.held.get_mut(source) {
            *h = partitions.to_vec();
        }
    }

    fn progress(&self, source: usize, partition: i32, reached: Reached) -> Progress {
        Progress {
            topic: self.topics.get(source).cloned().unwrap_or_default(),
            partition,
            reached,
        }
    }

    /// Every partition held, at `reached`.
    fn held_at(&self, reached: Reached) -> Vec<Progress> {
        self.held
            .iter()
            .enumerate()
            .flat_map(|(s, ps)| ps.iter().map(move |&p| self.progress(s, p, reached)))
            .collect()
    }

    /// The messages for one step: its rows and evaluations, with the
    /// progress of the partitions held; nothing when there are no rows or
    /// evaluations and the progress is the one relayed last.
    fn messages(
        &mut self,
        rows: &[telemine_types::alert::Alert],
        evaluations: &[telemine_alerting::Evaluation],
        progress: Vec<Progress>,
    ) -> Vec<Vec<u8>> {
        let moved = !progress.is_empty() && progress != self.last;
        if rows.is_empty() && evaluations.is_empty() && !moved {
            return Vec::new();
        }
        if !progress.is_empty() {
            self.last.clone_from(&progress);
        }
        Relay::pack(&self.from, rows, evaluations, &progress, self.max_bytes)
    }
}

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
