//! What a run reads from the brokers before it starts, asked again until
//! they answer (within `alerting.startup_timeout`): our compacted topics
//! (silences, the group's saved state) and the source topics' partition
//! counts. telemine never alerts without its silences and saved state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use telemine_connectors::ConnectorError;
use telemine_connectors::kafka::{
    Table, TableEntry, TableReader, create_compacted_topic, partition_counts, reachable,
};
use tokio::sync::mpsc;

use super::error::PipelineError;
use crate::settings::Settings;
use telemine_alerting::Alerter;
use telemine_alerting::silence::Silences;

/// A compacted topic of ours (created if missing), read to its end: the
/// reader, to follow it, and every key's latest value.
async fn open_table(
    settings: &Settings,
    topic: &str,
) -> Result<(TableReader, Table), ConnectorError> {
    if let Err(e) = create_compacted_topic(&settings.kafka, topic).await {
        tracing::warn!(%topic, error = %e, "cannot create the topic");
    }
    TableReader::open(&settings.kafka, topic, Duration::from_secs(30)).await
}

/// One of our compacted topics read to its end, asked again until it
/// answers: telemine never alerts without its silences and saved state.
/// Each failed try says so; after `alerting.startup_timeout` the run ends
/// with an error (and a non-zero exit) instead of starting without them.
async fn open_table_patiently(
    settings: &Settings,
    topic: &str,
    what: &str,
) -> Result<(TableReader, Table), PipelineError> {
    let started = Instant::now();
    let limit = settings.alerting.startup_timeout;
    loop {
        let opened = match reachable(&settings.kafka, Duration::from_secs(5)).await {
            Ok(()) => open_table(settings, topic).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(t) => return Ok(t),
            Err(e) if started.elapsed() < limit => {
                tracing::warn!(%topic, error = %e, waited_s = started.elapsed().as_secs(),
                    "cannot read the {what} yet (are the brokers at {} reachable?); telemine waits for it, up to alerting.startup_timeout = {}s",
                    settings.kafka.bootstrap_servers, limit.as_secs());
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                return Err(PipelineError::Unavailable(format!(
                    "cannot read the {what} (topic `{topic}`, brokers {}) after {}s: {e}. telemine does not alert without it; fix the brokers or the topic's access, or raise alerting.startup_timeout",
                    settings.kafka.bootstrap_servers,
                    started.elapsed().as_secs()
                )));
            }
        }
    }
}

/// The partition counts of `topics`, asked again until the brokers answer
/// (a broker just started may not yet): each failed try says so; after
/// `alerting.startup_timeout` the run ends with an error.
pub(crate) async fn partition_counts_patiently(
    settings: &Settings,
    topics: &[String],
) -> Result<Vec<(String, i32)>, PipelineError> {
    let started = Instant::now();
    let limit = settings.alerting.startup_timeout;
    loop {
        match partition_counts(&settings.kafka, topics, Duration::from_secs(10)).await {
            Ok(counts) => return Ok(counts),
            Err(e) if started.elapsed() < limit => {
                tracing::warn!(?topics, error = %e, waited_s = started.elapsed().as_secs(),
                    "cannot read the topics' partition counts yet (are the brokers at {} reachable?); telemine waits, up to alerting.startup_timeout = {}s",
                    settings.kafka.bootstrap_servers, limit.as_secs());
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(PipelineError::Unavailable(format!(
                    "cannot read the partition counts of {topics:?} (brokers {}) after {}s: {e}",
                    settings.kafka.bootstrap_servers,
                    started.elapsed().as_secs()
                )));
            }
        }
    }
}

/// Reads the silences topic to its end into `alerter`, then follows it on
/// a thread of its own.
pub(crate) async fn follow_silences(
    settings: &Settings,
    alerter: &mut Alerter,
    tx: mpsc::UnboundedSender<TableEntry>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, PipelineError> {
    let topic = &settings.alerting.silences_topic;
    let (reader, table) = open_table_patiently(settings, topic, "silences").await?;
    alerter.silences = Silences::from_table(&table);
    tracing::info!(%topic, silences = table.len(), "silences loaded");
    Ok(reader.follow(stop, move |entry| {
        let _ = tx.send(entry);
    }))
}

/// This consumer group's entries of the state topic (its alerting state's
/// chunks, its detectors' state, its checkpoints), read to the end, asked
/// again until the brokers answer (see [`open_table_patiently`]).
pub(crate) async fn read_group_state(settings: &Settings) -> Result<Table, PipelineError> {
    let topic = &settings.alerting.state_topic;
    let group = &settings.kafka.group_id;
    let (_, table) = open_table_patiently(settings, topic, "saved state").await?;
    let prefix = format!("{group}/");
    Ok(table
        .into_iter()
        .filter(|(k, _)| k == group || k.starts_with(&prefix))
        .collect())
}
