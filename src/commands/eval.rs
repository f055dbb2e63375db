//! `telemine eval --data DIR`: detection quality of each detector on
//! labelled data, NAB's or ASD's layout, through the engine.
//!
//! For each series (NAB) or server (ASD) `eval` writes a config — source,
//! feature view, model (`telemine::eval::configs`) — under
//! `OUT/configs/`, runs the series' CSV through the engine's local runner
//! with it, exactly as `telemine dry-run --config … --input …` would, and
//! scores what the detector logged. No scoring happens here.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use telemine::detector::{ScoreLog, ScoredRow};
use telemine::engine::local::replay;
use telemine::eval::configs::{self, NabModel};
use telemine::eval::corpus::{self, AsdServer, Layout, NabSeries};
use telemine::eval::{DETECTORS, asd, nab};
use telemine::metrics::Metrics;

pub struct EvalCommand {
    pub data: PathBuf,
    pub detector: String,
    pub out: PathBuf,
    pub epochs: usize,
}

pub async fn eval(opts: EvalCommand) -> anyhow::Result<ExitCode> {
    let detectors: Vec<&str> = if opts.detector == "all" {
        DETECTORS.to_vec()
    } else if DETECTORS.contains(&opts.detector.as_str()) {
        vec![opts.detector.as_str()]
    } else {
        anyhow::bail!(
            "--detector {}: use one of {} or all",
            opts.detector,
            DETECTORS.join(", ")
        );
    };
    std::fs::create_dir_all(&opts.out)?;
    let out = std::path::absolute(&opts.out)?;
    match corpus::layout(&opts.data).map_err(anyhow::Error::msg)? {
        Layout::Nab => {
            let series = corpus::read_nab(&opts.data).map_err(anyhow::Error::msg)?;
            for d in detectors {
                if !telemine::eval::univariate(d) {
                    telemine::note!("eval: {d} is for multivariate server metrics; skipped on NAB");
                    continue;
                }
                eval_nab(&series, d, &opts, &out).await?;
            }
        }
        Layout::Asd => {
            let servers = corpus::read_asd(&opts.data).map_err(anyhow::Error::msg)?;
            for d in detectors {
                eval_asd(&servers, d, &opts, &out).await?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `input` through the engine with the config at `config` and
/// returns every row its models scored, in the order they took them.
async fn score_through_engine(config: &Path, input: &Path) -> anyhow::Result<Vec<ScoredRow>> {
    let Some((cfg, mut sql)) = super::load(config, None).await? else {
        anyhow::bail!("{}: the config eval wrote does not load", config.display());
    };
    let defs = cfg.source_defs().map_err(anyhow::Error::msg)?;
    let recorded = telemine::recorded::read(input, &defs[0])?;
    if let Some(d) = recorded.dead.first() {
        anyhow::bail!(
            "{}:{}: not decoded: {}",
            input.display(),
            d.offset + 1,
            d.reason
        );
    }
    let log = Arc::new(ScoreLog::default());
    telemine::detector::attach(&mut sql, &cfg.models, false, Some(log.clone()))
        .map_err(anyhow::Error::msg)?;
    let out = replay(
        sql,
        &defs,
        0,
        recorded.batches,
        Arc::new(Metrics::default()),
    )
    .await?;
    let late: usize = out.late.iter().map(|l| l.rows.num_rows()).sum();
    if late > 0 {
        anyhow::bail!(
            "{}: {late} records arrived late: is it in time order?",
            input.display()
        );
    }
    Ok(log.take())
}

/// Writes `text` to `path`, making its folder.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Streams every series through the engine with its config, writes NAB's
/// results files, and prints the score under each profile.
async fn eval_nab(
    series: &[NabSeries],
    detector: &str,
    opts: &EvalCommand,
    out: &Path,
) -> anyhow::Result<()> {
    let total: usize = series.iter().map(|s| s.values.len()).sum();
    let progress = super::progress_bar(total as u64, format!("nab {detector}"), "")?;
    let configs_dir = out.join("configs").join(detector);
    let sql_dir = configs_dir.join("nab-sql");
    write_file(&sql_dir.join("features/series.sql"), configs::NAB_VIEW)?;
    let mut all_scores = Vec::with_capacity(series.len());
    for s in series {
        progress.set_message(s.name.clone());
        let model = NabModel {
            kind: detector.to_string(),
            warmup_windows: nab::probation(s.values.len()).max(32),
            season_windows: records_per_day(&s.timestamps)
                .filter(|&d| d >= 2)
                .unwrap_or(0),
            epochs: opts.epochs,
        };
        let config = configs_dir.join(s.name.replace(".csv", ".toml"));
        write_file(
            &config,
            &configs::nab_config(&model, &sql_dir.to_string_lossy(), &s.name),
        )?;
        let rows = score_through_engine(&config, &opts.data.join("data").join(&s.name)).await?;
        let by_start: HashMap<i64, f64> = rows
            .iter()
            .filter_map(|r| Some((r.window_start?, r.score.unwrap_or(0.0))))
            .collect();
        let mut scores = Vec::with_capacity(s.values.len());
        for t in &s.timestamps {
            let ms = nab_time(t).ok_or_else(|| anyhow::anyhow!("{}: timestamp `{t}`", s.name))?;
            scores.push(by_start.get(&ms).copied().unwrap_or(0.0));
        }
        progress.inc(s.values.len() as u64);
        write_nab_results(out, detector, s, &scores)?;
        all_scores.push(scores);
    }
    progress.finish_and_clear();
    let scored: Vec<nab::Scored<'_>> = series
        .iter()
        .zip(&all_scores)
        .map(|(s, scores)| nab::Scored {
            scores,
            windows: &s.windows,
        })
        .collect();
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    let mut line = format!(
        "nab {detector}: {} series, {total} records, {windows} windows;",
        series.len()
    );
    for p in &nab::PROFILES {
        let sweep = nab::best_threshold(&scored, p, 2000);
        line.push_str(&format!(
            " {} {:.1} (threshold {:.6})",
            p.name, sweep.normalized, sweep.threshold
        ));
    }
    telemine::out!("{line}");
    if series.len() >= 2 {
        let mut line = format!(
            "nab {detector} two-fold (alternate series; threshold fitted on one half, the other half scored at it, its own best in brackets):"
        );
        for p in &nab::PROFILES {
            let [ab, b_best, ba, a_best] = nab::two_fold(&scored, p, 2000);
            line.push_str(&format!(
                " {} A→B {ab:.1} ({b_best:.1}), B→A {ba:.1} ({a_best:.1});",
                p.name
            ));
        }
        telemine::out!("{line}");
    }
    Ok(())
}

/// A NAB timestamp (`YYYY-MM-DD HH:MM:SS`, UTC) in epoch milliseconds.
fn nab_time(t: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

/// `OUT/<detector>/<category>/<detector>_<name>.csv`, NAB's results format.
fn write_nab_results(
    out: &Path,
    detector: &str,
    s: &NabSeries,
    scores: &[f64],
) -> anyhow::Result<()> {
    let (category, file) = s.name.split_once('/').unwrap_or(("", s.name.as_str()));
    let dir = out.join(detector).join(category);
    std::fs::create_dir_all(&dir)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(
        dir.join(format!("{detector}_{file}")),
    )?);
    writeln!(w, "timestamp,value,anomaly_score,label")?;
    for (i, (t, v)) in s.timestamps.iter().zip(&s.values).enumerate() {
        writeln!(w, "{t},{v},{},{}", scores[i], u8::from(s.label(i)))?;
    }
    Ok(())
}

/// The label-free threshold of a detector's `anomaly_score`: for a
/// calibrated score the 0.999 quantile of the training rows' errors, as
/// the model's calibration sets it; for the profile detector 0.5, its
/// training scores' 0.99 quantile.
fn label_free_threshold(detector: &str) -> f64 {
    if detector == telemine::detector::PROFILE {
        0.5
    } else {
        0.999
    }
}

/// Runs every server's training rows, then its test rows, through the
/// engine with its config; prints point-wise and adjusted figures, ROC
/// AUC and how often the explanation names a responsible metric; writes
/// each server's scores.
async fn eval_asd(
    servers: &[AsdServer],
    detector: &str,
    opts: &EvalCommand,
    out: &Path,
) -> anyhow::Result<()> {
    let progress = super::progress_bar(servers.len() as u64, format!("asd {detector}"), "")?;
    let (mut point, mut adjusted) = (asd::Counts::default(), asd::Counts::default());
    let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
    let (mut explained, mut named_right) = (0usize, 0usize);
    // What naming three features at random would score on the same rows.
    let mut by_chance = 0f64;
    let mut best_per_server = Vec::new();
    let configs_dir = out.join("configs").join(detector);
    // The two halves of alternate servers, for the check across servers.
    let mut halves: [(asd::Counts, Vec<f64>, Vec<bool>); 2] = Default::default();
    for (index, server) in servers.iter().enumerate() {
        progress.set_message(server.name.clone());
        let k = server.features.len();
        let spacing = spacing_ms(&opts.data, server)?;
        let sql_dir = configs_dir.join(format!("{}-sql", server.name));
        write_file(
            &sql_dir.join("features/server.sql"),
            &configs::asd_view(&server.features, spacing),
        )?;
        let config = configs_dir.join(format!("{}.toml", server.name));
        write_file(
            &config,
            &configs::asd_config(
                detector,
                &server.features,
                server.train.len(),
                opts.epochs,
                configs::daily_season(spacing),
                &sql_dir.to_string_lossy(),
                &server.name,
            ),
        )?;
        // The engine's input: training rows, then test rows.
        let input = configs_dir.join(format!("{}.csv", server.name));
        write_server_input(&opts.data, server, &input)?;
        let mut rows = score_through_engine(&config, &input).await?;
        rows.sort_by_key(|r| r.window_start);
        let n = server.train.len() + server.test.len();
        if rows.len() != n {
            anyhow::bail!(
                "{}: the engine scored {} rows of {n}",
                server.name,
                rows.len()
            );
        }
        let test = &rows[server.train.len()..];
        let scores: Vec<f64> = test.iter().map(|r| r.score.unwrap_or(0.0)).collect();
        let tops: Vec<Vec<usize>> = test
            .iter()
            .map(|r| {
                r.features
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|f| server.features.iter().position(|x| x == f))
                    .collect()
            })
            .collect();
        let threshold = label_free_threshold(detector);
        let flagged: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
        write_asd_scores(out, detector, server, test, &flagged)?;
        point.add(asd::pointwise(&flagged, &server.labels));
        let half = &mut halves[index % 2];
        half.0.add(asd::pointwise(&flagged, &server.labels));
        half.1.extend_from_slice(&scores);
        half.2.extend_from_slice(&server.labels);
        adjusted.add(asd::point_adjusted(&flagged, &server.labels));
        if server.labels.iter().any(|l| *l) {
            best_per_server.push(asd::best_f1(&scores, &server.labels).0);
        }
        all_scores.extend_from_slice(&scores);
        all_labels.extend_from_slice(&server.labels);
        for (a, b, metrics) in &server.interpretation {
            for i in (*a..=*b).filter(|&i| i < flagged.len() && flagged[i]) {
                explained += 1;
                by_chance += random_hit(k, metrics.len(), 3);
                if tops[i].iter().take(3).any(|m| metrics.contains(m)) {
                    named_right += 1;
                }
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let rows = all_labels.len();
    let mean_best = best_per_server.iter().sum::<f64>() / best_per_server.len().max(1) as f64;
    telemine::out!(
        "asd {detector}: {} servers, {rows} test rows ({} anomalous); point-wise P {:.3} R {:.3} F1 {:.3} at the label-free threshold; point-adjusted (inflated) P {:.3} R {:.3} F1 {:.3}; ROC AUC {:.3}; best point-wise F1 for thresholds fitted to the labels (upper bounds): pooled {:.3}, per-server mean {mean_best:.3}; top-3 features name a labelled metric in {named_right} of {explained} flagged anomalous rows ({:.1}%; three features at random: {:.1}%)",
        servers.len(),
        all_labels.iter().filter(|l| **l).count(),
        point.precision(),
        point.recall(),
        point.f1(),
        adjusted.precision(),
        adjusted.recall(),
        adjusted.f1(),
        asd::roc_auc(&all_scores, &all_labels),
        asd::best_f1(&all_scores, &all_labels).0,
        100.0 * named_right as f64 / explained.max(1) as f64,
        100.0 * by_chance / explained.max(1) as f64
    );
    if servers.len() >= 2 {
        let names = |r: usize| -> String {
            servers
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == r)
                .map(|(_, s)| s.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let [a, b] = &halves;
        telemine::out!(
            "asd {detector} halves (alternate servers, the same settings): A ({}) F1 {:.3} AUC {:.3}; B ({}) F1 {:.3} AUC {:.3}",
            names(0),
            a.0.f1(),
            asd::roc_auc(&a.1, &a.2),
            names(1),
            b.0.f1(),
            asd::roc_auc(&b.1, &b.2)
        );
    }
    Ok(())
}

/// The spacing of a server's records, in milliseconds: the median gap
/// between the first training timestamps (RFC 3339, or epoch
/// milliseconds as the engine reads numbers).
fn spacing_ms(data: &Path, server: &AsdServer) -> anyhow::Result<i64> {
    let path = data.join(format!("{}.train.csv", server.name));
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let times: Vec<i64> = text
        .lines()
        .skip(1)
        .take(1000)
        .filter_map(|l| l.split(',').next())
        .filter_map(|t| {
            let t = t.trim().trim_matches('"');
            t.parse::<i64>().ok().or_else(|| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .ok()
                    .map(|d| d.timestamp_millis())
            })
        })
        .collect();
    let mut gaps: Vec<i64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no increasing timestamps (RFC 3339 or epoch ms) in the first column",
            path.display()
        )
    })
}

/// The server's training CSV followed by its test CSV (without the label
/// column): what the engine reads.
fn write_server_input(data: &Path, server: &AsdServer, path: &Path) -> anyhow::Result<()> {
    let read = |ext: &str| -> anyhow::Result<String> {
        let p = data.join(format!("{}.{ext}", server.name));
        std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
    };
    let (train, test) = (read("train.csv")?, read("test.csv")?);
    let mut text = String::with_capacity(train.len() + test.len());
    let k = server.features.len();
    for line in train.lines().chain(test.lines().skip(1)) {
        // Timestamp and the k metrics; the test file's label is dropped.
        let cells: Vec<&str> = line.split(',').take(k + 1).collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    write_file(path, &text)
}

/// `OUT/asd/<detector>/<server>.csv`: per test row its time, score, flag
/// (at the label-free threshold), label and top features.
fn write_asd_scores(
    out: &Path,
    detector: &str,
    server: &AsdServer,
    test: &[ScoredRow],
    flagged: &[bool],
) -> anyhow::Result<()> {
    let dir = out.join("asd").join(detector);
    std::fs::create_dir_all(&dir)?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(
        dir.join(format!("{}.csv", server.name)),
    )?);
    writeln!(w, "timestamp,anomaly_score,flag,label,top_features")?;
    for (i, r) in test.iter().enumerate() {
        let t = r
            .window_start
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        writeln!(
            w,
            "{t},{},{},{},\"{}\"",
            r.score.unwrap_or(0.0),
            u8::from(flagged[i]),
            u8::from(server.labels[i]),
            r.features.as_deref().unwrap_or_default()
        )?;
    }
    w.flush()?;
    Ok(())
}

/// The chance that `picks` features drawn at random from `k` include one
/// of `labelled`: 1 − C(k − labelled, picks) / C(k, picks).
fn random_hit(k: usize, labelled: usize, picks: usize) -> f64 {
    let mut miss = 1.0;
    for j in 0..picks.min(k) {
        miss *= k.saturating_sub(labelled + j) as f64 / (k - j) as f64;
    }
    1.0 - miss
}

/// Records a day, from the median spacing of `timestamps`
/// (`YYYY-MM-DD HH:MM:SS`); `None` when they do not parse.
fn records_per_day(timestamps: &[String]) -> Option<usize> {
    let secs: Vec<i64> = timestamps
        .iter()
        .filter_map(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").ok())
        .map(|t| t.and_utc().timestamp())
        .collect();
    let mut gaps: Vec<i64> = secs
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort_unstable();
    let median = gaps[gaps.len() / 2];
    usize::try_from(86_400 / median).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_a_day_follow_the_median_spacing() {
        let every_5_min: Vec<String> = (0..10)
            .map(|i| format!("2014-02-14 14:{:02}:00", i * 5))
            .collect();
        assert_eq!(records_per_day(&every_5_min), Some(288));
        assert_eq!(records_per_day(&["not a time".to_string()]), None);
    }
}
