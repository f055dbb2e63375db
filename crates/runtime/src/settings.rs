//! What the runtime reads: the config file's keys, resolved by the binary
//! once (`Config::runtime_settings`) before a pipeline starts. Nothing in
//! this crate parses, validates or names the config file; a key's name
//! appears here only in docs, so that an operator's error points at it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use telemine_alerting::config::AlertingConfig;
use telemine_connectors::kafka::KafkaClientConfig;
use telemine_sql::SqlOptions;
use telemine_sql::source::SourceDef;

/// Everything a pipeline run reads.
#[derive(Clone)]
pub struct Settings {
    /// `[kafka]`: the brokers, the group and this instance.
    pub kafka: KafkaClientConfig,
    /// `[[sources]]`, resolved (the decoders' limits and the admission's
    /// times included).
    pub sources: Vec<SourceDef>,
    /// `[[models]]`, resolved.
    pub models: Vec<telemine_detector::Settings>,
    /// `sql.dir`: where the SQL is read from, and reloaded from.
    pub sql_dir: PathBuf,
    /// The `[engine]` limits a query runs under, the reference tables and
    /// the models' specs: made again at each reload, so that the tables
    /// are read again with the SQL.
    pub sql_options: Arc<dyn Fn() -> SqlOptions + Send + Sync>,
    pub engine: EngineSettings,
    pub sinks: SinkSettings,
    pub alerting: AlertingConfig,
}

/// The `[engine]` keys the pipeline reads.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// `engine.max_batch_records`: most records one batch holds.
    pub max_batch_records: usize,
    /// `engine.batch_linger`: longest a partial batch waits.
    pub batch_linger: Duration,
    /// `engine.commit_interval`.
    pub commit_interval: Duration,
    /// `engine.queue_batches`: batches queued between the poll and the core.
    pub queue_batches: usize,
    /// `engine.decode_threads`.
    pub decode_threads: usize,
    pub delivery: Delivery,
    /// `engine.repartition`: views that need every partition read them
    /// through repartition topics.
    pub repartition: bool,
    /// `engine.progress_interval`: how often progress is logged.
    pub progress_interval: Duration,
}

/// How outputs are delivered (`engine.delivery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

/// The `[sinks]` topics and the size every message fits.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    pub alerts_topic: String,
    pub rows_topic: Option<String>,
    pub late_topic: String,
    pub dead_letter_topic: String,
    /// Largest payload a message carries (`sinks.max_message_bytes` less
    /// room for headers).
    pub max_payload_bytes: usize,
}
