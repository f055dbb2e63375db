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

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::arrow::json::LineDelimitedWriter;
use rdkafka::producer::DeliveryFuture;
use telemine_connectors::ConnectorError;
use telemine_connectors::decode::{DeadLetter, decoder_for};
use telemine_connectors::kafka::{
    CommitOffset, KafkaProducer, KafkaSource, KafkaSourceOptions, SourceEvent, SourceSpec, Table,
    TableEntry, TableReader, create_compacted_topic,
};
use telemine_connectors::schema::{OFFSET_COLUMN, PARTITION_COLUMN};
use thiserror::Error;
use tokio::sync::mpsc;

use super::checkpoint::Checkpoint;
use super::windows::{EngineError, LateRows, WindowEngine};
use crate::alerting::Alerter;
use crate::alerting::payload::Payload;
use crate::alerting::silence::Silences;
use crate::config::{Config, SourceDef};
use crate::metrics::Metrics;
use crate::sql::SqlSet;

/// Why a pipeline stopped with an error.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("config: {0}")]
    Config(String),
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
}

/// What a finished run did.
#[derive(Debug, Clone)]
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
    crate::models::attach(&mut sql, &config.models, true).map_err(PipelineError::Config)?;
    let mut engine = WindowEngine::new(sql, &defs, metrics.clone());
    let specs = source_specs(config, &defs)?;
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
    let producer = KafkaProducer::new(&config.kafka)?;
    let mut alerter = Alerter::new(&config.alerting);
    let follow_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (silence_tx, silence_rx) = mpsc::unbounded_channel();
    let follower = follow_silences(config, &mut alerter, silence_tx, follow_stop.clone()).await;
    let saved_state = restore_alerting_state(config, &mut alerter).await;
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
    };
    let mut last_commit: Vec<CommitOffset> = Vec::new();
    let mut commit_tick = tokio::time::interval(config.engine.commit_interval);
    commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut stop_requested = false;
    let mut stopping = false;
    let mut drain = options.stop_at_end;
    let mut first_record: Option<Instant> = None;
    let mut reload = options
        .hot_reload
        .then(|| super::reload::ReloadTriggers::start(&config.sql.dir));
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
                        tracing::info!("draining: reading every partition to its current end");
                        source.drain();
                        drain = true;
                    }
                }
            }
            event = rx.recv() => match event {
                None | Some(SourceEvent::End) => break,
                Some(SourceEvent::Assigned { source: s, partitions }) => {
                    tracing::info!(topic = %source.topic(s), ?partitions, "assignment");
                    engine.assign(s, &partitions)?;
                }
                Some(SourceEvent::PartitionStart { source: s, partition, committed }) => {
                    let checkpoint = committed.as_ref().and_then(|(_, m)| Checkpoint::decode(m));
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
                        let alerts = engine.ingest(s, batch).await?;
                        sinks.outputs(&source, &mut engine, alerts).await?;
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
                reload_sql(config, &defs, &mut engine, &metrics, cause).await?;
            }
            _ = commit_tick.tick() => {
                let alerts = engine.tick().await?;
                sinks.outputs(&source, &mut engine, alerts).await?;
                commit(&source, &engine, &mut sinks, &defs, &mut last_commit).await?;
            }
        }
    }
    if drain && !stopping {
        let alerts = engine.finish().await?;
        sinks.outputs(&source, &mut engine, alerts).await?;
        let last = sinks.alerter.finish();
        sinks.notify(last).await?;
    }
    commit(&source, &engine, &mut sinks, &defs, &mut last_commit).await?;
    sinks.producer.flush(Duration::from_secs(30))?;
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

/// A compacted topic of ours (created if missing), read to its end: the
/// reader, to follow it, and every key's latest value.
async fn open_table(config: &Config, topic: &str) -> Result<(TableReader, Table), ConnectorError> {
    if let Err(e) = create_compacted_topic(&config.kafka, topic).await {
        tracing::warn!(%topic, error = %e, "cannot create the topic");
    }
    TableReader::open(&config.kafka, topic, Duration::from_secs(30)).await
}

/// Reads the silences topic to its end into `alerter`, then follows it on
/// a thread of its own. Without it (no rights to create or read the
/// topic), alerts are notified unsilenced, and the log says why.
async fn follow_silences(
    config: &Config,
    alerter: &mut Alerter,
    tx: mpsc::UnboundedSender<TableEntry>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Option<std::thread::JoinHandle<()>> {
    let topic = &config.alerting.silences_topic;
    match open_table(config, topic).await {
        Ok((reader, table)) => {
            alerter.silences = Silences::from_table(&table);
            tracing::info!(%topic, silences = table.len(), "silences loaded");
            Some(reader.follow(stop, move |entry| {
                let _ = tx.send(entry);
            }))
        }
        Err(e) => {
            tracing::warn!(%topic, error = %e, "cannot read the silences topic: alerts are notified unsilenced");
            None
        }
    }
}

/// Restores the alerting state this consumer group saved last, if any;
/// returns the state as it stands after (what is saved until it changes).
async fn restore_alerting_state(config: &Config, alerter: &mut Alerter) -> String {
    let topic = &config.alerting.state_topic;
    let group = &config.kafka.group_id;
    match open_table(config, topic).await {
        Ok((_, table)) => match table.get(group).and_then(|v| v.as_deref()) {
            Some(state) => match alerter.restore(state) {
                Ok(()) => tracing::info!(%topic, %group, "alerting state restored"),
                Err(e) => {
                    tracing::warn!(%topic, %group, error = %e, "the saved alerting state cannot be read; starting without it")
                }
            },
            None => tracing::info!(%topic, %group, "no saved alerting state: starting fresh"),
        },
        Err(e) => {
            tracing::warn!(%topic, error = %e, "cannot read the alerting state topic; starting without it")
        }
    }
    alerter.snapshot()
}

/// Loads the SQL folder again and swaps it in; a folder that does not
/// check is refused with its diagnostics logged, and the running SQL stays.
async fn reload_sql(
    config: &Config,
    defs: &[SourceDef],
    engine: &mut WindowEngine,
    metrics: &Metrics,
    cause: super::reload::ReloadCause,
) -> Result<(), PipelineError> {
    let dir = &config.sql.dir;
    match SqlSet::load(dir, defs, &crate::sql::SqlOptions::from_config(config)).await {
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

/// Waits for every pending delivery, then commits what the engine allows.
async fn commit(
    source: &KafkaSource,
    engine: &WindowEngine,
    sinks: &mut Sinks<'_>,
    defs: &[SourceDef],
    last: &mut Vec<CommitOffset>,
) -> Result<(), PipelineError> {
    sinks.save_alerting_state().await?;
    KafkaProducer::acknowledged(
        std::mem::take(&mut sinks.pending),
        "alerts and dead letters",
    )
    .await?;
    let mut offsets = Vec::new();
    for s in 0..defs.len() {
        for (partition, offset, checkpoint) in engine.commit_positions(s) {
            offsets.push(CommitOffset {
                source: s,
                partition,
                offset,
                metadata: checkpoint.encode(),
            });
        }
    }
    let unchanged = offsets.len() == last.len()
        && offsets.iter().zip(last.iter()).all(|(a, b)| {
            a.offset == b.offset
                && a.metadata == b.metadata
                && a.partition == b.partition
                && a.source == b.source
        });
    if offsets.is_empty() || unchanged {
        return Ok(());
    }
    source.commit(&offsets)?;
    Metrics::add(&sinks.metrics.commits, 1);
    *last = offsets;
    Ok(())
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
}

impl Sinks<'_> {
    /// Produces one JSON message; the next commit waits for its delivery.
    async fn produce_json(
        &mut self,
        topic: &str,
        key: &str,
        json: &str,
    ) -> Result<(), PipelineError> {
        let f = self
            .producer
            .send(
                topic,
                Some(key.as_bytes()),
                json.as_bytes(),
                &[("content-type", b"application/json")],
            )
            .await?;
        self.pending.push(f);
        Ok(())
    }

    /// Saves the alerting state to the state topic if it changed since the
    /// last save; the commit that follows waits for it like for alerts.
    async fn save_alerting_state(&mut self) -> Result<(), PipelineError> {
        let state = self.alerter.snapshot();
        if state == self.saved_state {
            return Ok(());
        }
        let config = self.config;
        self.produce_json(&config.alerting.state_topic, &config.kafka.group_id, &state)
            .await?;
        self.saved_state = state;
        Ok(())
    }

    /// Produces notifications to the alerts topic, keyed by group key so
    /// one group's updates stay in order on one partition.
    async fn notify(&mut self, payloads: Vec<Payload>) -> Result<(), PipelineError> {
        for p in payloads {
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
        let headers: [(&str, &[u8]); 4] = [
            (why, reason.as_bytes()),
            ("telemine.source.topic", topic.as_bytes()),
            ("telemine.source.partition", partition.as_bytes()),
            ("telemine.source.offset", offset.as_bytes()),
        ];
        let f = self.producer.send(to, None, payload, &headers).await?;
        self.pending.push(f);
        Ok(())
    }
}
