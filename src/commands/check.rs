//! `telemine check`: validate config and SQL without a broker.

use std::path::Path;
use std::process::ExitCode;

pub async fn check(config: &Path, sql: Option<&Path>) -> anyhow::Result<ExitCode> {
    match super::load(config, sql).await? {
        Some((cfg, set)) => {
            println!(
                "ok: {} ({} sources), {} feature views and {} rules in {}",
                config.display(),
                cfg.sources.len(),
                set.views.len(),
                set.rules.len(),
                cfg.sql.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::FAILURE),
    }
}
