//! The Kafka pipeline: source → [`WindowEngine`] → producers → commits.
//! This file sets a run up (sources, repartitioning, the producers, what
//! is read before the first poll) and runs its two sides: the input side
//! (`input.rs`, an event loop over the stages of `stages.rs`) and the
//! group's alerting (`alerting_owner.rs`).
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
use std::time::Duration;

use telemine_codec::decode::decoder_for;
use telemine_connectors::kafka::{
    KafkaProducer, KafkaSource, KafkaSourceOptions, SourceSpec, create_topic_unless_present,
};
use tokio::sync::{mpsc, watch};

use super::alerting_owner::{self, Control, OwnerScoring};
use super::alerting_stage::AlertingStage;
use super::error::PipelineError;
pub use super::input::Stop;
use super::input::{InputLoop, Parts};
use super::outputs::{Notifier, OutputSettings, Outputs};
use super::relay::{self};
use super::source_errors::SourceErrors;
use super::stages::{Purge, RelayOut, Stages};
use super::startup::{follow_silences, partition_counts_patiently, read_group_state};
use super::state_store::StateStore;
use crate::settings::{Delivery, Settings};
use telemine_alerting::Alerter;
use telemine_alerting::payload::Payload;
use telemine_observe::live::Catalog;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::deferred::Deferral;
use telemine_stream::driver::Driver;
use telemine_stream::repartition::{self, RepartitionDecoder, Writer};
use telemine_stream::windows::WindowEngine;

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
    settings: &Settings,
    sql: SqlSet,
    options: RunOptions,
    stop: impl Future<Output = Stop>,
) -> Result<RunSummary, PipelineError> {
    let mut defs = settings.sources.clone();
    let metrics = options.metrics.clone().unwrap_or_default();
    let mut sql = sql;
    // Views that need every partition's rows, through repartition topics
    // (`defs` gains the derived sources).
    let writer = if settings.engine.repartition {
        plan_repartition(settings, &mut sql, &mut defs).await?
    } else {
        None
    };
    let models = if options.without_models {
        Vec::new()
    } else {
        settings.models.clone()
    };
    let alone = telemine_stream::alone_reasons(&sql, &defs, settings.engine.repartition);
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
    let specs = source_specs(settings, &defs)?;
    let all_topics: Vec<String> = defs.iter().map(|d| d.topic.clone()).collect();
    let producer = output_producer(settings, "").await?;
    let mut alerter = Alerter::new(&settings.alerting);
    let follow_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (silence_tx, silence_rx) = mpsc::unbounded_channel();
    tokio::pin!(stop);
    // The silences and the saved state first: telemine never alerts
    // without them (the alerting state itself is read by whichever
    // instance owns the alerting relay, when it gains it). Waiting for
    // them honours a stop.
    let startup = async {
        let follower =
            follow_silences(settings, &mut alerter, silence_tx, follow_stop.clone()).await?;
        let table = read_group_state(settings).await?;
        let relay_topic = relay::topic(&settings.kafka);
        if let Err(e) = create_topic_unless_present(&settings.kafka, &relay_topic, 1, &[]).await {
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
        &settings.alerting.state_topic,
        &settings.kafka.group_id,
        settings.sinks.max_payload_bytes,
        state_table,
        String::new(),
    );
    let (tx, mut rx) = mpsc::channel(settings.engine.queue_batches.max(1));
    let source = KafkaSource::start(
        &settings.kafka,
        KafkaSourceOptions {
            max_batch_records: settings.engine.max_batch_records,
            linger: settings.engine.batch_linger,
            stop_at_end: options.stop_at_end,
            alone: (!alone.is_empty()).then(|| alone.join("; ")),
        },
        specs,
        tx,
    )?;
    let stages = Stages {
        outputs: Outputs::new(OutputSettings::of(settings), producer, metrics.clone()),
        relay: RelayOut::new(settings, &source.topics()),
        state,
        purge: writer.as_ref().and_then(|_| Purge::new(settings)),
        writer,
        names: defs.iter().map(|d| d.name.clone()).collect(),
        errors: SourceErrors::default(),
    };
    // The Alertmanagers read the alerts' state changes.
    if !settings.alerting.alertmanagers.is_empty() {
        alerter.record_states();
    }
    // The group's alerting, if this instance gets the relay (see
    // `alerting_owner.rs`), on its own producer.
    let (control, control_rx) = watch::channel(Control::Running);
    let owner = alerting_owner::run(
        settings,
        &all_topics,
        AlertingStage::new(alerter, silence_rx),
        Notifier::new(
            Outputs::new(
                OutputSettings::of(settings),
                output_producer(settings, ".alerting").await?,
                metrics.clone(),
            ),
            &settings.alerting,
            options.alert_tap.clone(),
        ),
        control_rx,
        owner_scoring,
    );
    let input = async {
        let finished = InputLoop::new(Parts {
            settings,
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

/// Binds the views that need every partition's rows to derived sources
/// (appended to `defs`), creates their repartition topics (as many
/// partitions as the source's topic) unless present, and returns the
/// writer that feeds them; `None` when no view needs it.
async fn plan_repartition(
    settings: &Settings,
    sql: &mut SqlSet,
    defs: &mut Vec<SourceDef>,
) -> Result<Option<Writer>, PipelineError> {
    let needed = repartition::needed(sql, defs);
    if needed.is_empty() {
        return Ok(None);
    }
    let upstream: Vec<String> = defs.iter().map(|d| d.topic.clone()).collect();
    let counts = partition_counts_patiently(settings, &upstream).await?;
    let count_of = |counts: &[(String, i32)], t: &str| {
        counts
            .iter()
            .find(|(name, _)| name == t)
            .map_or(0, |(_, n)| *n)
    };
    let all = repartition::derive(sql, defs, &settings.kafka.group_id, &needed, |t| {
        count_of(&counts, t)
    });
    let derived: Vec<&SourceDef> = all.iter().filter(|d| d.derived.is_some()).collect();
    for d in &derived {
        let n = d.derived.as_ref().map_or(1, |x| x.upstream_partitions);
        if let Err(e) = create_topic_unless_present(&settings.kafka, &d.topic, n, &[]).await {
            tracing::warn!(topic = %d.topic, error = %e, "cannot create the repartition topic");
        }
    }
    let topics: Vec<String> = derived.iter().map(|d| d.topic.clone()).collect();
    let made = partition_counts_patiently(settings, &topics).await?;
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
        settings.sinks.max_payload_bytes,
    )?;
    *defs = all;
    Ok(Some(writer))
}

fn source_specs(settings: &Settings, defs: &[SourceDef]) -> Result<Vec<SourceSpec>, PipelineError> {
    defs.iter()
        .map(|d| {
            let threads = settings.engine.decode_threads.max(1);
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
                        settings.engine.max_batch_records,
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

/// The producer of an instance's outputs (`role` ""), or of its alerting
/// (".alerting"): transactional under `delivery = "exactly_once"`, with an
/// id derived from the group and the instance id, so a restart fences
/// the killed incarnation and aborts what it left open.
async fn output_producer(settings: &Settings, role: &str) -> Result<KafkaProducer, PipelineError> {
    match settings.engine.delivery {
        Delivery::AtLeastOnce => Ok(KafkaProducer::new(&settings.kafka)?),
        Delivery::ExactlyOnce => {
            let Some(instance) = settings.kafka.group_instance_id() else {
                return Err(PipelineError::Config(
                    "[engine] delivery = \"exactly_once\" needs [kafka] instance_id (each instance's transactional id derives from it)".into(),
                ));
            };
            let id = format!("{}{role}.{instance}", settings.kafka.group_id);
            let mut client = settings.kafka.clone();
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
