//! `telemine dry-run --input FILE`: run the SQL over recorded data without
//! a broker and print the alerts it would have raised.

use std::process::ExitCode;
use std::sync::Arc;

use telemine_detector::{ScoreLog, ScoredRow};
use telemine_observe::metrics::Metrics;
use telemine_stream::local::replay;

use crate::cli::DryRunOptions;

pub async fn dry_run(opts: DryRunOptions) -> anyhow::Result<ExitCode> {
    let Some((cfg, sql)) = super::load(&opts.recorded.config, opts.recorded.sql.as_deref()).await?
    else {
        return Ok(ExitCode::FAILURE);
    };
    let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
    let source = super::pick_source(
        &defs,
        opts.recorded.source.as_deref(),
        &opts.recorded.config,
    )?;
    let recorded = telemine::recorded::read(&opts.recorded.input, &defs[source])?;
    let metrics = Arc::new(Metrics::default());
    let mut sql = sql;
    let log = opts.scores.as_ref().map(|_| Arc::new(ScoreLog::default()));
    let models = cfg.model_settings().map_err(anyhow::Error::msg)?;
    telemine_detector::attach(&mut sql, &models, false, log.clone()).map_err(anyhow::Error::msg)?;
    let rows: usize = recorded.batches.iter().map(|b| b.num_rows()).sum();
    let out = replay(sql, &defs, source, recorded.batches, metrics.clone()).await?;
    if let (Some(path), Some(log)) = (&opts.scores, &log) {
        write_scores(path, &log.take())?;
    }
    for a in &out.alerts {
        telemine_observe::out!("{}", a.to_json());
    }
    for d in &recorded.dead {
        telemine_observe::note!(
            "{}:{}: not decoded: {}",
            opts.recorded.input.display(),
            d.offset + 1,
            d.reason
        );
    }
    let late: usize = out.late.iter().map(|l| l.rows.num_rows()).sum();
    telemine_observe::note!(
        "dry run of {} over {}: {rows} rows, {} not decoded, {late} late, {} duplicates, {} alerts ({})",
        cfg.sql.dir.display(),
        opts.recorded.input.display(),
        recorded.dead.len(),
        out.counts.iter().map(|(_, c)| c.duplicates).sum::<u64>(),
        out.alerts.len(),
        metrics.summary()
    );
    Ok(ExitCode::SUCCESS)
}

/// Every row the models scored, in the order they took them, as CSV:
/// `view,key,window_start,window_end,anomaly_score,anomaly_features`
/// (times in RFC 3339; an empty score is a row scored NULL).
pub fn write_scores(path: &std::path::Path, rows: &[ScoredRow]) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("--scores {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    writeln!(
        w,
        "view,key,window_start,window_end,anomaly_score,anomaly_features"
    )?;
    let time = |t: Option<i64>| {
        t.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    };
    for r in rows {
        writeln!(
            w,
            "{},{},{},{},{},\"{}\"",
            r.view,
            csv_field(&r.key),
            time(r.window_start),
            time(r.window_end),
            r.score.map(|s| s.to_string()).unwrap_or_default(),
            r.features.as_deref().unwrap_or_default()
        )?;
    }
    w.flush()?;
    Ok(())
}

/// `s` as one CSV field.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
