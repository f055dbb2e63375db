//! `telemine run`: the production job. Edits to the SQL folder (or
//! SIGHUP) reload it without a restart. With `[http] listen`, the HTTP
//! server (`/metrics`, health, the API, the live page) runs beside it.

use std::path::Path;
use std::process::ExitCode;

use telemine::http::HttpServer;
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_observe::metrics::Metrics;
use tokio::signal::unix::{SignalKind, signal};

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let Some((cfg, sql)) = super::load(config, None).await? else {
        return Ok(ExitCode::FAILURE);
    };
    tracing::info!(
        brokers = %cfg.kafka.bootstrap_servers,
        group = %cfg.kafka.group_id,
        views = sql.views.len(),
        rules = sql.rules.len(),
        "starting"
    );
    let mut term = signal(SignalKind::terminate())?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
        Stop::Now
    };
    let metrics = std::sync::Arc::new(Metrics::default());
    let server = match HttpServer::start(&cfg, metrics.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let options = RunOptions {
        hot_reload: true,
        metrics: Some(metrics),
        ..RunOptions::default()
    };
    let summary = run_pipeline(&cfg, sql, options, stop).await;
    if let Some(s) = server {
        s.stop().await;
    }
    let summary = summary?;
    tracing::info!(
        records = summary.records,
        alerts = summary.alerts,
        dead_letters = summary.dead_letters,
        "stopped cleanly"
    );
    Ok(ExitCode::SUCCESS)
}
