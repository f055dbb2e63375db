//! One module per subcommand.

mod bench;
mod check;
mod demo;
mod dry_run;
mod eval;
mod fleet;
mod run;
mod silence;
mod test;
mod train;

use std::process::ExitCode;

use crate::cli::Command;

pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run { config } => run::run(&config).await,
        Command::Demo {
            seconds,
            speed,
            config,
            sql,
            seed,
            device,
        } => {
            demo::demo(demo::DemoOptions {
                seconds,
                speed,
                config,
                sql,
                seed,
                device,
            })
            .await
        }
        Command::Check { config, sql } => check::check(&config, sql.as_deref()).await,
        Command::Test { path, config } => {
            let path = match path {
                Some(p) => p,
                None => match telemine::config::Config::load(&config) {
                    Ok(c) => c.sql.dir.join("tests"),
                    Err(d) => {
                        telemine_observe::logging::diagnostics(&d);
                        return Ok(ExitCode::FAILURE);
                    }
                },
            };
            test::test(&path).await
        }
        Command::DryRun { options } => dry_run::dry_run(options).await,
        Command::Silence { command } => silence::silence(command).await,
        Command::Train {
            recorded,
            model,
            out,
            epochs,
            device,
        } => {
            train::train(train::TrainCommand {
                recorded,
                model,
                out,
                epochs,
                device,
            })
            .await
        }
        Command::Eval {
            data,
            fleet,
            anomalies,
            config,
            seed,
            detector,
            out,
            epochs,
            cv,
        } => match (data, fleet) {
            (_, Some(duration)) => {
                fleet::fleet(fleet::FleetCommand {
                    duration,
                    anomalies,
                    config,
                    seed,
                })
                .await
            }
            (Some(data), None) => {
                eval::eval(eval::EvalCommand {
                    data,
                    detector,
                    out,
                    epochs,
                    cv,
                })
                .await
            }
            (None, None) => anyhow::bail!("eval needs --data or --fleet"),
        },
        Command::Bench {
            brokers,
            records,
            partitions,
            config,
            pairs,
            json,
            compare,
        } => {
            bench::bench(bench::BenchOptions {
                brokers,
                records,
                partitions,
                config,
                pairs: pairs as usize,
                json,
                compare,
            })
            .await
        }
    }
}

/// Loads the config and the SQL it points to (or `sql`), printing
/// diagnostics; `None` when there were any.
pub(crate) async fn load(
    config: &std::path::Path,
    sql: Option<&std::path::Path>,
) -> anyhow::Result<Option<(telemine::config::Config, telemine_sql::SqlSet)>> {
    let mut cfg = match telemine::config::Config::load(config) {
        Ok(c) => c,
        Err(d) => {
            telemine_observe::logging::diagnostics(&d);
            return Ok(None);
        }
    };
    if let Some(dir) = sql {
        cfg.sql.dir = dir.to_path_buf();
    }
    let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
    match telemine_sql::SqlSet::load(&cfg.sql.dir, &defs, &cfg.sql_options()).await {
        Ok(set) => Ok(Some((cfg, set))),
        Err(d) => {
            telemine_observe::logging::diagnostics(&d);
            Ok(None)
        }
    }
}

/// The source recorded data belongs to: the one named, or the only one.
pub(crate) fn pick_source(
    defs: &[telemine_sql::source::SourceDef],
    name: Option<&str>,
    config: &std::path::Path,
) -> anyhow::Result<usize> {
    let names = || {
        defs.iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => defs.iter().position(|d| d.name == name).ok_or_else(|| {
            anyhow::anyhow!(
                "--source {name}: no such source in {} (declared: {})",
                config.display(),
                names()
            )
        }),
        None if defs.len() == 1 => Ok(0),
        None => anyhow::bail!(
            "{} declares several sources ({}): say which one the input holds with --source",
            config.display(),
            names()
        ),
    }
}

/// A progress bar on stderr for long work (`train`, `eval`): `prefix`,
/// the bar, then `unit` before the count (e.g. "epoch ").
pub(crate) fn progress_bar(
    len: u64,
    prefix: String,
    unit: &str,
) -> anyhow::Result<indicatif::ProgressBar> {
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{prefix}} [{{bar:30}}] {unit}{{pos}}/{{len}} {{msg}} ({{elapsed}}, eta {{eta}})"
    ))?
    .progress_chars("=> ");
    Ok(indicatif::ProgressBar::new(len)
        .with_style(style)
        .with_prefix(prefix))
}
