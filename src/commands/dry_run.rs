//! `telemine dry-run --input FILE`: run the SQL over recorded data without
//! a broker and print the alerts it would have raised.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use telemine::engine::local::LocalRun;
use telemine::metrics::Metrics;

pub struct DryRunOptions {
    pub input: PathBuf,
    pub source: Option<String>,
    pub config: PathBuf,
    pub sql: Option<PathBuf>,
}

pub async fn dry_run(opts: DryRunOptions) -> anyhow::Result<ExitCode> {
    let Some((cfg, sql)) = super::load(&opts.config, opts.sql.as_deref()).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
    let source = match &opts.source {
        Some(name) => defs.iter().position(|d| &d.name == name).with_context(|| {
            format!(
                "--source {name}: no such source in {} (declared: {})",
                opts.config.display(),
                names(&defs)
            )
        })?,
        None if defs.len() == 1 => 0,
        None => anyhow::bail!(
            "{} declares several sources ({}): say which one the input holds with --source",
            opts.config.display(),
            names(&defs)
        ),
    };
    let recorded = telemine::recorded::read(&opts.input, &defs[source])?;
    let metrics = Arc::new(Metrics::default());
    let mut sql = sql;
    telemine::models::attach(&mut sql, &cfg.models, false).map_err(anyhow::Error::msg)?;
    let mut run = LocalRun::new(sql, &defs, metrics.clone())?;
    let mut rows = 0usize;
    for batch in recorded.batches {
        rows += batch.num_rows();
        run.push_batch(source, 0, batch).await?;
    }
    let out = run.finish().await?;
    for a in &out.alerts {
        println!("{}", a.to_json());
    }
    for d in &recorded.dead {
        eprintln!(
            "{}:{}: not decoded: {}",
            opts.input.display(),
            d.offset + 1,
            d.reason
        );
    }
    let late: usize = out.late.iter().map(|l| l.rows.num_rows()).sum();
    eprintln!(
        "dry run of {} over {}: {rows} rows, {} not decoded, {late} late, {} duplicates, {} alerts ({})",
        cfg.sql.dir.display(),
        opts.input.display(),
        recorded.dead.len(),
        out.counts.iter().map(|(_, c)| c.duplicates).sum::<u64>(),
        out.alerts.len(),
        metrics.summary()
    );
    Ok(ExitCode::SUCCESS)
}

fn names(defs: &[telemine::config::SourceDef]) -> String {
    defs.iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
