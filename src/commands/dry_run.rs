//! `telemine dry-run --input FILE`: run the SQL over recorded data without
//! a broker and print the alerts it would have raised.

use std::process::ExitCode;
use std::sync::Arc;

use telemine::engine::local::LocalRun;
use telemine::metrics::Metrics;

use crate::cli::Recorded;

pub async fn dry_run(opts: Recorded) -> anyhow::Result<ExitCode> {
    let Some((cfg, sql)) = super::load(&opts.config, opts.sql.as_deref()).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
    let source = super::pick_source(&defs, opts.source.as_deref(), &opts.config)?;
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
