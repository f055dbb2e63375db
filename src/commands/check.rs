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
            for m in &cfg.models {
                let s = telemine::detector::Settings::from_config(m).map_err(anyhow::Error::msg)?;
                let values = s.values_per_series();
                println!(
                    "model `{}` on view `{}`: {} model features; state per series at most {values} values (~{:.1} KiB), at most {} series; online training keeps at most {} rows ({:.1} MiB)",
                    s.name,
                    m.view.get_ref(),
                    s.model_features.len(),
                    values as f64 * 8.0 / 1024.0,
                    s.max_series,
                    s.training_rows,
                    (s.training_rows * s.model_features.len() * 4) as f64 / (1024.0 * 1024.0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        None => Ok(ExitCode::FAILURE),
    }
}
