//! The Kafka pipeline: source → [`WindowEngine`] → producers → commits.
//!
//! Ordering that makes delivery at-least-once: a record's offset is
//! committed only after (1) the windows it belongs to have closed, (2)
//! every alert they raised and every dead letter among the records before
//! it has been acknowledged by the broker. Shutdown (SIGINT/SIGTERM, or the
//! caller's future) stops polling, lets the batches already decoded run
//! through, produces their alerts, waits for the acknowledgements and
//! commits; windows still open are re-read after the restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::arrow::json::LineDelimitedWriter;
use rdkafka::producer::DeliveryFuture;
use telemine_connectors::ConnectorError;
use telemine_connectors::decode::{DeadLetter, decoder_for};
use telemine_connectors::kafka::{
    CommitOffset, KafkaProducer, KafkaSource, KafkaSourceOptions, SourceEvent, SourceSpec, Table,
    TableEntry, TableReader, create_compacted_topic, reachable,
};
use telemine_connectors::schema::{OFFSET_COLUMN, PARTITION_COLUMN};
use thiserror::Error;
use tokio::sync::mpsc;

use super::checkpoint::Checkpoint;
use super::chunked;
use super::windows::{EngineError, LateRows, WindowEngine};
use crate::alerting::Alerter;
use crate::alerting::payload::Payload;
use crate::alerting::silence::Silences;
use crate::config::{Config, SourceDef};
use crate::metrics::Metrics;
use crate::sql::SqlSet;

/// Longest reason header a dead letter carries, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// Why a pipeline stopped with an error.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("config: {0}")]
    Config(String),
    /// What the engine must not run without could not be read.
    #[error("{0}")]
    Unavailable(String),
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
    let defs = config.source_defs().map_err(PipelineError::Config)?;
    let metrics = options.metrics.clone().unwrap_or_default();
    let mut sql = sql;
    let models: &[crate::config::ModelConfig] = if options.without_models {
        &[]
    } else {
        &config.models
    };
    let detectors =
        crate::detector::attach(&mut sql, models, true, None).map_err(PipelineError::Config)?;
    let mut engine = WindowEngine::new(sql, &defs, metrics.clone());
    let specs = source_specs(config, &defs)?;
    let producer = KafkaProducer::new(&config.kafka)?;
    let mut alerter = Alerter::new(&config.alerting);
    let follow_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (silence_tx, silence_rx) = mpsc::unbounded_channel();
    tokio::pin!(stop);
    // The silences and the saved alerting state first: telemine never
    // alerts without them. Waiting for them honours a stop.
    let startup = async {
        let follower =
            follow_silences(config, &mut alerter, silence_tx, follow_stop.clone()).await?;
        let restored = restore_alerting_state(config, &mut alerter).await?;
        Ok::<_, PipelineError>((follower, restored))
    };
    let (follower, (saved_state, state_table)) = tokio::select! {
        biased;
        _ = &mut stop => {
            tracing::info!("stopped while starting: nothing was read or committed");
            follow_stop.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(RunSummary::default());
        }
        r = startup => r?,
    };
    let follower = Some(follower);
    let detector_chunks = restore_detectors(config, &detectors, &state_table);
    let (tx, mut rx) = mpsc::channel(config.engine.queue_batches.max(1));
    let source = KafkaSource::start(
        &config.kafka,
        KafkaSourceOptions {
            max_batch_records: config.engine.max_batch_records,
            linger: config.engine.batch_linger,
            stop_at_end: options.stop_at_end,
        },
        specs,
        tx,
    )?;
    let mut sinks = Sinks {
        config,
        producer,
        pending: Vec::new(),
        metrics: metrics.clone(),
        tap: options.alert_tap.clone(),
        alerter,
        silences: silence_rx,
        webhooks: crate::alerting::webhook::Webhooks::start(
            &config.alerting.webhooks,
            metrics.clone(),
        ),
        saved_state,
        state_chunks: chunked::read_ref(&state_table, &config.kafka.group_id)
            .map(|r| r.keys(&config.kafka.group_id))
            .unwrap_or_default(),
        state_table,
        stale: Vec::new(),
        detectors,
        detector_chunks,
    };
    let mut committed = Committed::default();
    let mut commit_tick = tokio::time::interval(config.engine.commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_requested = false;
    let mut stopping = false;
    let mut drain = options.stop_at_end;
    let mut first_record: Option<Instant> = None;
    let mut reload = options
        .hot_reload
        .then(|| super::reload::ReloadTriggers::start(&config.sql.dir));
    let (reload_done_tx, mut reload_done_rx) = mpsc::channel(1);
    let mut reload_generation = 0u64;
    let mut abandoned = false;
    // Partitions assigned, per source.
    let mut assigned = vec![0u64; defs.len()];
    loop {
        tokio::select! {
            biased;
            how = &mut stop, if !stop_requested => {
                stop_requested = true;
                match how {
                    Stop::Now => {
                        tracing::info!("shutting down: finishing decoded batches, then committing");
                        source.stop();
                        stopping = true;
                    }
                    Stop::Drain => {
                        start_draining(&source);
                        drain = true;
                    }
                }
            }
            event = rx.recv() => match event {
                None | Some(SourceEvent::End) => break,
                Some(SourceEvent::Failed(why)) => {
                    return Err(PipelineError::Unavailable(why));
                }
                Some(SourceEvent::Assigned { source: s, partitions }) => {
                    tracing::info!(topic = %source.topic(s), ?partitions, "assignment");
                    engine.assign(s, &partitions)?;
                    // A commit sent before the change may have failed
                    // (its result may never come: a consumer started
                    // again): the next one sends everything.
                    committed.sent.clear();
                    if let Some(n) = assigned.get_mut(s) {
                        *n = partitions.len() as u64;
                    }
                    metrics
                        .partitions_assigned
                        .store(assigned.iter().sum(), std::sync::atomic::Ordering::Relaxed);
                }
                Some(SourceEvent::PartitionStart { source: s, partition, committed }) => {
                    let checkpoint = committed
                        .as_ref()
                        .and_then(|(_, m)| sinks.checkpoint(source.topic(s), partition, m));
                    if let Some(c) = &checkpoint {
                        tracing::info!(topic = %source.topic(s), partition, next = c.next, "restoring checkpoint");
                    }
                    engine.restore(s, partition, checkpoint.as_ref());
                }
                Some(SourceEvent::Batch { source: s, batch, dead, consumed }) => {
                    first_record.get_or_insert_with(Instant::now);
                    sinks.dead_letters(source.topic(s), dead).await?;
                    engine.note_consumed(s, &consumed);
                    if let Some(batch) = batch {
                        // A stop during the evaluations abandons them (see
                        // `abandoned`); after a stop they run to the end.
                        let work = async {
                            let alerts = engine.ingest(s, batch).await?;
                            sinks.outputs(&source, &mut engine, alerts).await
                        };
                        let Some((done, drain_now)) =
                            unless_stopped(stop.as_mut(), stop_requested, work).await
                        else {
                            abandoned = true;
                            break;
                        };
                        drain |= begin_drain(&source, drain_now, &mut stop_requested);
                        done?;
                    }
                }
            },
            Some(cause) = async {
                match reload.as_mut() {
                    Some(r) => r.next().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(r) = reload.as_mut() {
                    r.settle().await;
                }
                // Planned on a task of its own: the stream goes on meanwhile.
                reload_generation += 1;
                let (generation, done) = (reload_generation, reload_done_tx.clone());
                let (dir, defs, options) = (
                    config.sql.dir.clone(),
                    defs.clone(),
                    crate::sql::SqlOptions::from_config(config),
                );
                tokio::spawn(async move {
                    let loaded = SqlSet::load(&dir, &defs, &options).await;
                    let _ = done.send((generation, cause, loaded)).await;
                });
            }
            Some((generation, cause, loaded)) = reload_done_rx.recv() => {
                if generation == reload_generation {
                    swap_sql(config, &mut engine, &metrics, cause, loaded)?;
                }
            }
            // After SIGTERM only the last commit is made, with a bound.
            _ = commit_tick.tick(), if !stopping => {
                // The evaluations, the outputs and the commit (which waits
                // for the broker): a stop meanwhile abandons them
                // (at-least-once).
                let work = async {
                    let alerts = engine.tick().await?;
                    sinks.outputs(&source, &mut engine, alerts).await?;
                    commit(&source, &engine, &mut sinks, &defs, &mut committed, false).await
                };
                let Some((done, drain_now)) =
                    unless_stopped(stop.as_mut(), stop_requested, work).await
                else {
                    abandoned = true;
                    break;
                };
                drain |= begin_drain(&source, drain_now, &mut stop_requested);
                done?;
            }
        }
    }
    if abandoned {
        // A stop arrived while views or rules were running: their work is
        // dropped, nothing more is committed, and a restart re-reads the
        // windows since the last commit (at-least-once).
        tracing::info!(
            "stopped during an evaluation or while waiting for the broker: the work was abandoned; the windows since the last commit are re-read at restart"
        );
        source.stop();
    } else {
        if drain && !stopping {
            let alerts = engine.finish().await?;
            sinks.outputs(&source, &mut engine, alerts).await?;
            let last = sinks.alerter.finish();
            sinks.notify(last).await?;
        }
        let last = commit(&source, &engine, &mut sinks, &defs, &mut committed, true);
        match tokio::time::timeout(SHUTDOWN_WAIT, last).await {
            Ok(done) => {
                done?;
                sinks.producer.flush(SHUTDOWN_WAIT)?;
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
    if abandoned && let Err(e) = sinks.producer.flush(ABANDONED_FLUSH) {
        tracing::warn!(error = %e, "outputs not yet delivered were dropped; they are produced again after the restart");
    }
    if let Some(w) = sinks.webhooks.take() {
        tokio::task::spawn_blocking(move || w.finish()).await.ok();
    }
    follow_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(f) = follower {
        tokio::task::spawn_blocking(move || f.join()).await.ok();
    }
    tracing::info!(metrics = %metrics.summary(), "pipeline stopped");
    for (name, c) in engine.source_counts() {
        tracing::info!(source = %name, late = c.late, duplicates = c.duplicates, "per-source counts");
    }
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
async fn unless_stopped<T, S: Future<Output = Stop>>(
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
fn begin_drain(source: &KafkaSource, drain_now: bool, stop_requested: &mut bool) -> bool {
    if drain_now {
        *stop_requested = true;
        start_draining(source);
    }
    drain_now
}

/// Asks the source to read every partition to its current end, then stop.
fn start_draining(source: &KafkaSource) {
    tracing::info!("draining: reading every partition to its current end");
    source.drain();
}

/// A compacted topic of ours (created if missing), read to its end: the
/// reader, to follow it, and every key's latest value.
async fn open_table(config: &Config, topic: &str) -> Result<(TableReader, Table), ConnectorError> {
    if let Err(e) = create_compacted_topic(&config.kafka, topic).await {
        tracing::warn!(%topic, error = %e, "cannot create the topic");
    }
    TableReader::open(&config.kafka, topic, Duration::from_secs(30)).await
}

/// One of our compacted topics read to its end, asked again until it
/// answers: telemine never alerts without its silences and saved state.
/// Each failed try says so; after `alerting.startup_timeout` the run ends
/// with an error (and a non-zero exit) instead of starting without them.
async fn open_table_patiently(
    config: &Config,
    topic: &str,
    what: &str,
) -> Result<(TableReader, Table), PipelineError> {
    let started = Instant::now();
    let limit = config.alerting.startup_timeout;
    loop {
        let opened = match reachable(&config.kafka, Duration::from_secs(5)).await {
            Ok(()) => open_table(config, topic).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(t) => return Ok(t),
            Err(e) if started.elapsed() < limit => {
                tracing::warn!(%topic, error = %e, waited_s = started.elapsed().as_secs(),
                    "cannot read the {what} yet (are the brokers at {} reachable?); telemine waits for it, up to alerting.startup_timeout = {}s",
                    config.kafka.bootstrap_servers, limit.as_secs());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                return Err(PipelineError::Unavailable(format!(
                    "cannot read the {what} (topic `{topic}`, brokers {}) after {}s: {e}. telemine does not alert without it; fix the brokers or the topic's access, or raise alerting.startup_timeout",
                    config.kafka.bootstrap_servers,
                    started.elapsed().as_secs()
                )));
            }
        }
    }
}

/// Reads the silences topic to its end into `alerter`, then follows it on
/// a thread of its own.
async fn follow_silences(
    config: &Config,
    alerter: &mut Alerter,
    tx: mpsc::UnboundedSender<TableEntry>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, PipelineError> {
    let topic = &config.alerting.silences_topic;
    let (reader, table) = open_table_patiently(config, topic, "silences").await?;
    alerter.silences = Silences::from_table(&table);
    tracing::info!(%topic, silences = table.len(), "silences loaded");
    Ok(reader.follow(stop, move |entry| {
        let _ = tx.send(entry);
    }))
}

/// Restores the alerting state this consumer group saved last, if any;
/// returns the state as it stands after (what is saved until it changes).
async fn restore_alerting_state(
    config: &Config,
    alerter: &mut Alerter,
) -> Result<(String, Table), PipelineError> {
    let topic = &config.alerting.state_topic;
    let group = &config.kafka.group_id;
    let (_, table) = open_table_patiently(config, topic, "saved alerting state").await?;
    match chunked::read(&table, group) {
        Ok(Some(state)) => match alerter.restore(&state) {
            Ok(()) => {
                tracing::info!(%topic, %group, bytes = state.len(), "alerting state restored")
            }
            Err(e) => {
                tracing::warn!(%topic, %group, error = %e, "the saved alerting state cannot be read; starting without it")
            }
        },
        Ok(None) => {
            tracing::info!(%topic, %group, "no saved alerting state: starting fresh")
        }
        Err(e) => {
            tracing::warn!(%topic, %group, error = %e, "the saved alerting state is incomplete; starting without it")
        }
    }
    // This group's entries: its state's chunks, its checkpoints.
    let prefix = format!("{group}/");
    let kept = table
        .into_iter()
        .filter(|(k, _)| k == group || k.starts_with(&prefix))
        .collect();
    Ok((alerter.snapshot(), kept))
}

/// Swaps in the SQL folder loaded again (off the pipeline's path); a
/// folder that does not check is refused with its diagnostics logged, and
/// the running SQL stays.
fn swap_sql(
    config: &Config,
    engine: &mut WindowEngine,
    metrics: &Metrics,
    cause: super::reload::ReloadCause,
    loaded: Result<SqlSet, crate::diagnostic::Diagnostics>,
) -> Result<(), PipelineError> {
    let dir = &config.sql.dir;
    match loaded {
        Ok(set) => {
            let (views, rules) = (set.views.len(), set.rules.len());
            engine.replace_sql(set)?;
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

fn source_specs(config: &Config, defs: &[SourceDef]) -> Result<Vec<SourceSpec>, PipelineError> {
    defs.iter()
        .map(|d| {
            let decoders = (0..config.engine.decode_threads.max(1))
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
            })
        })
        .collect()
}

/// Commits what the engine may commit now, with its checkpoints, once the
/// alerting state and every output it derives from are acknowledged
/// (at-least-once). The commit itself is not awaited (see
/// [`KafkaSource::commit`]) unless `last`: the commit before shutdown
/// waits up to [`LAST_COMMIT_WAIT`] for the broker.
async fn commit(
    source: &KafkaSource,
    engine: &WindowEngine,
    sinks: &mut Sinks<'_>,
    defs: &[SourceDef],
    committed: &mut Committed,
    last: bool,
) -> Result<(), PipelineError> {
    sinks.save_alerting_state().await?;
    sinks.save_detector_state().await?;
    let mut offsets = Vec::new();
    let mut stored = Vec::new();
    for s in 0..defs.len() {
        for (partition, offset, checkpoint) in engine.commit_positions(s) {
            let (metadata, chunks) =
                sinks.checkpoint_metadata(source.topic(s), partition, &checkpoint);
            stored.extend(chunks);
            offsets.push(CommitOffset {
                source: s,
                partition,
                offset,
                metadata,
            });
        }
    }
    let unchanged = offsets.len() == committed.sent.len()
        && offsets.iter().zip(committed.sent.iter()).all(|(a, b)| {
            a.offset == b.offset
                && a.metadata == b.metadata
                && a.partition == b.partition
                && a.source == b.source
        })
        && !source.take_commit_failed();
    if !unchanged {
        // Large checkpoints go to the state topic before the commit that
        // points at them.
        for (key, chunk) in stored {
            sinks.store(key, chunk).await?;
        }
    }
    let refused = KafkaProducer::settled(
        std::mem::take(&mut sinks.pending),
        "alerts and dead letters",
    )
    .await?;
    Metrics::add(&sinks.metrics.messages_refused, refused);
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
        committed.sent.clear();
        return Ok(());
    }
    Metrics::add(&sinks.metrics.commits, 1);
    // Checkpoints stored in the state topic that the new commit no longer
    // points at: deleted once the broker confirmed a newer commit of their
    // partition (until then a restart may still need them).
    for old in committed.sent.iter() {
        if let Some(r) = Checkpoint::decode(&old.metadata).and_then(|c| c.stored)
            && !offsets.iter().any(|o| o.metadata == old.metadata)
        {
            let key = checkpoint_key(
                &sinks.config.kafka.group_id,
                source.topic(old.source),
                old.partition,
            );
            committed.retired.push((
                old.source,
                old.partition,
                old.metadata.clone(),
                r.keys(&key),
            ));
        }
    }
    committed.retired.retain(|(s, p, metadata, keys)| {
        let superseded = source
            .confirmed(*s, *p)
            .is_some_and(|confirmed| confirmed != *metadata);
        if superseded {
            sinks.stale.extend(keys.iter().cloned());
        }
        !superseded
    });
    committed.sent = offsets;
    Ok(())
}

/// How long shutdown waits for the outputs and the last commit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// How long an abandoned run waits for undelivered outputs.
const ABANDONED_FLUSH: Duration = Duration::from_secs(5);

/// How long the commit before shutdown waits for the broker.
const LAST_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The pipeline's commits so far.
#[derive(Default)]
struct Committed {
    /// The offsets last sent.
    sent: Vec<CommitOffset>,
    /// Stored checkpoints a newer commit replaced, kept until the broker
    /// confirms a newer one for their partition: (source, partition, the
    /// metadata that points at them, their keys).
    retired: Vec<(usize, i32, String, Vec<String>)>,
}

/// Where a checkpoint too large for commit metadata is stored.
/// Where a model's detector state lives in the state topic.
fn detector_key(group: &str, model: &str) -> String {
    format!("{group}/detector/{model}")
}

/// Where segment `seg` of a detector's training rows lives (the number
/// zero-padded, so a segment's key never prefixes another's).
fn segment_key(detector: &str, seg: u64) -> String {
    format!("{detector}/rows/{seg:020}")
}

/// Gives each detector the state this consumer group saved for it, if
/// any (a state it cannot take is logged and the model starts afresh);
/// returns the chunk keys of what was read.
fn restore_detectors(
    config: &Config,
    detectors: &[Arc<crate::detector::Detector>],
    table: &Table,
) -> HashMap<String, Vec<String>> {
    let mut chunks = HashMap::new();
    for d in detectors {
        let key = detector_key(&config.kafka.group_id, d.name());
        let model_key = format!("{key}/model");
        for k in [&key, &model_key] {
            if let Some(r) = chunked::read_ref(table, k) {
                chunks.insert(k.clone(), r.keys(k));
            }
        }
        let state = match chunked::read(table, &key) {
            Ok(Some(state)) => state,
            Ok(None) => {
                tracing::info!(
                    model = d.name(),
                    "no saved detector state: the model starts afresh"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(model = d.name(), error = %e, "the saved detector state is incomplete: the model starts afresh");
                continue;
            }
        };
        let model = chunked::read(table, &model_key).ok().flatten();
        let segment = |seg: u64| {
            let k = segment_key(&key, seg);
            let r = chunked::read_ref(table, &k)?;
            chunks.insert(k.clone(), r.keys(&k));
            chunked::join(table, &k, &r).ok()
        };
        match d.restore(&state, model.as_deref(), segment) {
            Ok(()) => tracing::info!(
                model = d.name(),
                bytes = state.len(),
                "detector state restored: no warm-up"
            ),
            Err(e) => {
                tracing::warn!(model = d.name(), error = %e, "the saved detector state is not taken: the model starts afresh")
            }
        }
    }
    chunks
}

fn checkpoint_key(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}/checkpoint/{topic}/{partition}")
}

/// The alert and dead-letter producers, and the deliveries not yet awaited.
struct Sinks<'a> {
    config: &'a Config,
    producer: KafkaProducer,
    pending: Vec<DeliveryFuture>,
    metrics: Arc<Metrics>,
    tap: Option<mpsc::UnboundedSender<Payload>>,
    /// Rule rows → alert lifecycle → grouped notifications.
    alerter: Alerter,
    /// Changes to the silences topic, applied before each alerting step.
    silences: mpsc::UnboundedReceiver<TableEntry>,
    /// `[[alerting.webhooks]]`: the same payloads, POSTed.
    webhooks: Option<crate::alerting::webhook::Webhooks>,
    /// The alerting state last saved to the state topic.
    saved_state: String,
    /// The keys of its chunks.
    state_chunks: Vec<String>,
    /// This group's entries of the state topic: as read at start, plus
    /// what this run wrote (checkpoints are read back from here).
    state_table: Table,
    /// Chunks replaced by a value whose ref is now stored: deleted
    /// (tombstones) at the next save.
    stale: Vec<String>,
    /// The models' detectors, whose state is saved with each commit.
    detectors: Vec<Arc<crate::detector::Detector>>,
    /// Per saved detector value (its key), the keys of its chunks.
    detector_chunks: HashMap<String, Vec<String>>,
}

impl Sinks<'_> {
    /// Produces one JSON message; the next commit waits for its delivery.
    async fn produce_json(
        &mut self,
        topic: &str,
        key: &str,
        json: &str,
    ) -> Result<(), PipelineError> {
        let sent = self
            .producer
            .send(
                topic,
                Some(key.as_bytes()),
                json.as_bytes(),
                &[("content-type", b"application/json")],
            )
            .await;
        self.pend(topic, sent)
    }

    /// Keeps a delivery for the next commit to await; a message refused
    /// for what it is (too large, invalid) is logged and counted, and the
    /// stream goes on.
    fn pend(
        &mut self,
        topic: &str,
        sent: Result<DeliveryFuture, ConnectorError>,
    ) -> Result<(), PipelineError> {
        match sent {
            Ok(f) => {
                self.pending.push(f);
                Ok(())
            }
            Err(e) if e.is_message_refused() => {
                Metrics::add(&self.metrics.messages_refused, 1);
                tracing::error!(%topic, error = %e, "a message was refused; it is dropped and counted in messages_refused");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Saves the alerting state to the state topic if it changed since the
    /// last save — in chunks under the message limit, then the head that
    /// points at them; the commit that follows waits for all of it like
    /// for alerts. Chunks of older states are deleted once a newer head
    /// has been acknowledged.
    async fn save_alerting_state(&mut self) -> Result<(), PipelineError> {
        for key in std::mem::take(&mut self.stale) {
            self.state_table.remove(&key);
            let sent = self
                .producer
                .send_tombstone(&self.config.alerting.state_topic, key.as_bytes())
                .await;
            self.pend(&self.config.alerting.state_topic, sent)?;
        }
        let state = self.alerter.snapshot();
        if state == self.saved_state {
            return Ok(());
        }
        let group = self.config.kafka.group_id.clone();
        let (r, chunks) = chunked::split(
            &group,
            state.as_bytes(),
            self.config.sinks.max_payload_bytes(),
        );
        let keys: Vec<String> = chunks.iter().map(|(k, _)| k.clone()).collect();
        for (key, chunk) in chunks {
            self.store(key, chunk).await?;
        }
        self.store(group, chunked::head(&r)).await?;
        let old = std::mem::replace(&mut self.state_chunks, keys);
        self.stale
            .extend(old.into_iter().filter(|k| !self.state_chunks.contains(k)));
        self.saved_state = state;
        Ok(())
    }

    /// Saves each detector's state that changed since its last save (and
    /// its model trained online, when that changed) to the state topic,
    /// chunked like the alerting state, under `GROUP/detector/MODEL` (and
    /// `…/model`); the commit that follows waits for it.
    async fn save_detector_state(&mut self) -> Result<(), PipelineError> {
        for d in self.detectors.clone() {
            let saved = match d.save() {
                Ok(Some(saved)) => saved,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(model = d.name(), error = %e, "the detector state cannot be saved; a restart would warm this model up again");
                    continue;
                }
            };
            let key = detector_key(&self.config.kafka.group_id, d.name());
            for (seg, rows) in &saved.segments {
                self.store_chunked(segment_key(&key, *seg), rows).await?;
            }
            if let Some(model) = saved.model {
                self.store_chunked(format!("{key}/model"), &model).await?;
            }
            self.store_chunked(key.clone(), &saved.state).await?;
            // Segments whose rows all left the training window go, with
            // their chunks, once this state is stored.
            let prefix = format!("{key}/rows/");
            let gone: Vec<String> = self
                .detector_chunks
                .keys()
                .filter(|k| {
                    k.strip_prefix(&prefix)
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n < saved.first_segment)
                })
                .cloned()
                .collect();
            for k in gone {
                let chunks = self.detector_chunks.remove(&k).unwrap_or_default();
                self.stale.extend(chunks);
                self.stale.push(k);
            }
        }
        Ok(())
    }

    /// Stores `value` under `key` as chunks and then the head pointing at
    /// them; the chunks it replaces go stale.
    async fn store_chunked(&mut self, key: String, value: &[u8]) -> Result<(), PipelineError> {
        let (r, chunks) = chunked::split(&key, value, self.config.sinks.max_payload_bytes());
        let keys: Vec<String> = chunks.iter().map(|(k, _)| k.clone()).collect();
        for (k, chunk) in chunks {
            self.store(k, chunk).await?;
        }
        self.store(key.clone(), chunked::head(&r)).await?;
        let old = self
            .detector_chunks
            .insert(key, keys.clone())
            .unwrap_or_default();
        self.stale
            .extend(old.into_iter().filter(|k| !keys.contains(k)));
        Ok(())
    }

    /// Produces one entry of the state topic and keeps it in the local
    /// copy of the table.
    async fn store(&mut self, key: String, value: Vec<u8>) -> Result<(), PipelineError> {
        let topic = &self.config.alerting.state_topic;
        let sent = self
            .producer
            .send(topic, Some(key.as_bytes()), &value, &[])
            .await;
        self.pend(topic, sent)?;
        self.state_table.insert(key, Some(value));
        Ok(())
    }

    /// Commit metadata for a partition's checkpoint: the checkpoint itself
    /// when it fits the broker's limit, else a ref to chunks (returned, to
    /// be stored in the state topic before the commit).
    fn checkpoint_metadata(
        &self,
        topic: &str,
        partition: i32,
        checkpoint: &Checkpoint,
    ) -> (String, Vec<(String, Vec<u8>)>) {
        let full = checkpoint.encode();
        if full.len() <= super::checkpoint::MAX_METADATA_BYTES {
            return (full, Vec::new());
        }
        let key = checkpoint_key(&self.config.kafka.group_id, topic, partition);
        let (r, chunks) =
            chunked::split(&key, full.as_bytes(), self.config.sinks.max_payload_bytes());
        let pointer = Checkpoint {
            v: Checkpoint::VERSION,
            next: checkpoint.next,
            stored: Some(r),
            ..Default::default()
        };
        (pointer.encode(), chunks)
    }

    /// The checkpoint committed metadata stands for: itself, or the one
    /// stored in the state topic that it points at.
    fn checkpoint(&self, topic: &str, partition: i32, metadata: &str) -> Option<Checkpoint> {
        let c = Checkpoint::decode(metadata)?;
        let Some(r) = &c.stored else {
            return Some(c);
        };
        let key = checkpoint_key(&self.config.kafka.group_id, topic, partition);
        match chunked::join(&self.state_table, &key, r) {
            Ok(bytes) => {
                let full = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(Checkpoint::decode);
                if full.is_none() {
                    tracing::warn!(%topic, partition, "the stored checkpoint does not parse; starting this partition without one");
                }
                full
            }
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "the stored checkpoint cannot be read; starting this partition without one");
                None
            }
        }
    }

    /// Produces notifications to the alerts topic, keyed by group key so
    /// one group's updates stay in order on one partition.
    async fn notify(&mut self, payloads: Vec<Payload>) -> Result<(), PipelineError> {
        let (max_alerts, max_bytes) = (
            self.config.alerting.max_alerts,
            self.config.sinks.max_payload_bytes(),
        );
        for p in payloads
            .into_iter()
            .flat_map(|p| p.split(max_alerts, max_bytes))
        {
            if p.truncated_alerts > 0 {
                Metrics::add(&self.metrics.notifications_truncated, 1);
            }
            let json = p.to_json();
            self.produce_json(&self.config.sinks.alerts_topic, &p.group_key, &json)
                .await?;
            Metrics::add(&self.metrics.notifications, 1);
            if let Some(w) = &self.webhooks {
                w.send(json.clone());
            }
            if let Some(tap) = &self.tap {
                let _ = tap.send(p);
            }
        }
        Ok(())
    }

    /// What the engine produced in one step: its rule rows, through the
    /// alerter, as notifications; then its late rows (to the late topic,
    /// with their source topic).
    async fn outputs(
        &mut self,
        source: &KafkaSource,
        engine: &mut WindowEngine,
        rows: Vec<crate::alert::Alert>,
    ) -> Result<(), PipelineError> {
        if let Some(topic) = &self.config.sinks.rows_topic {
            for a in &rows {
                self.produce_json(topic, &a.fingerprint, &a.to_json())
                    .await?;
            }
        }
        while let Ok((id, value)) = self.silences.try_recv() {
            self.alerter.silences.apply_message(&id, value.as_deref());
        }
        let payloads =
            self.alerter
                .step(engine.take_evaluations(), rows, engine.lowest_watermark());
        self.notify(payloads).await?;
        for l in engine.take_late() {
            self.late(source.topic(l.source), l).await?;
        }
        Ok(())
    }

    /// Produces late rows as JSON, one message each, with their lateness and
    /// origin in headers.
    async fn late(&mut self, topic: &str, late: LateRows) -> Result<(), PipelineError> {
        let rows = &late.rows;
        let schema = rows.schema();
        let (Ok(pi), Ok(oi)) = (
            schema.index_of(PARTITION_COLUMN),
            schema.index_of(OFFSET_COLUMN),
        ) else {
            return Err(EngineError::Internal("late rows lack _partition/_offset".into()).into());
        };
        let parts = rows.column(pi).as_primitive::<Int32Type>().clone();
        let offs = rows.column(oi).as_primitive::<Int64Type>().clone();
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| i != pi && i != oi)
            .collect();
        let payload = rows
            .project(&data)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut json = Vec::new();
        {
            let mut writer = LineDelimitedWriter::new(&mut json);
            writer
                .write(&payload)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            writer
                .finish()
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        }
        for (i, line) in json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let lateness = late
                .lateness_ms
                .get(i)
                .copied()
                .unwrap_or_default()
                .to_string();
            let origin = (topic, parts.value(i), offs.value(i));
            let to = self.config.sinks.late_topic.as_str();
            self.send_with_origin(to, line, ("telemine.lateness_ms", &lateness), origin)
                .await?;
        }
        Ok(())
    }

    async fn dead_letters(
        &mut self,
        topic: &str,
        dead: Vec<DeadLetter>,
    ) -> Result<(), PipelineError> {
        if dead.is_empty() {
            return Ok(());
        }
        Metrics::add(&self.metrics.dead_letters, dead.len() as u64);
        for d in dead {
            tracing::debug!(topic, partition = d.partition, offset = d.offset, reason = %d.reason, "dead letter");
            let to = self.config.sinks.dead_letter_topic.as_str();
            let origin = (topic, d.partition, d.offset);
            self.send_with_origin(to, &d.payload, ("telemine.error", &d.reason), origin)
                .await?;
        }
        Ok(())
    }

    /// Produces a record taken out of the stream (dead letter, late row) to
    /// `to`, with one header saying why and three saying where it came from:
    /// `telemine.source.topic`, `.partition`, `.offset`.
    async fn send_with_origin(
        &mut self,
        to: &str,
        payload: &[u8],
        (why, reason): (&str, &str),
        (topic, partition, offset): (&str, i32, i64),
    ) -> Result<(), PipelineError> {
        let partition = partition.to_string();
        let offset = offset.to_string();
        let reason = crate::alert::cut(reason.to_string(), MAX_REASON_BYTES);
        let mut headers: Vec<(&str, &[u8])> = vec![
            (why, reason.as_bytes()),
            ("telemine.source.topic", topic.as_bytes()),
            ("telemine.source.partition", partition.as_bytes()),
            ("telemine.source.offset", offset.as_bytes()),
        ];
        // A record too large for the topic is cut to fit; its size and
        // digest say what it was.
        let cap = self.config.sinks.max_payload_bytes();
        let (size, digest);
        let body = if payload.len() > cap {
            size = payload.len().to_string();
            digest = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(payload));
            headers.push(("telemine.original_size", size.as_bytes()));
            headers.push(("telemine.original_xxh3", digest.as_bytes()));
            Metrics::add(&self.metrics.messages_cut, 1);
            &payload[..cap]
        } else {
            payload
        };
        let sent = self.producer.send(to, None, body, &headers).await;
        self.pend(to, sent)
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
