//! The edge between the config file and the Kafka runtime
//! (`telemine-runtime`): the config is resolved into the runtime's
//! [`Settings`] here, once per run, and the runtime below never sees the
//! file.

use std::future::Future;

use telemine_sql::SqlSet;

pub use telemine_runtime::{PipelineError, RunOptions, RunSummary, Settings, Stop};

use crate::config::Config;

/// Runs the pipeline on `config` (see [`telemine_runtime::run_pipeline`]).
pub async fn run_pipeline(
    config: &Config,
    sql: SqlSet,
    options: RunOptions,
    stop: impl Future<Output = Stop>,
) -> Result<RunSummary, PipelineError> {
    let settings = config.runtime_settings().map_err(PipelineError::Config)?;
    telemine_runtime::run_pipeline(&settings, sql, options, stop).await
}

/// The topic a group's instances relay to its alerting owner.
pub fn relay_topic(config: &Config) -> String {
    telemine_runtime::relay_topic(&config.kafka)
}
