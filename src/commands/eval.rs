//! `telemine eval --data DIR`: detection quality of each detector on
//! labelled data, NAB's or ASD's layout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use telemine::eval::corpus::{self, AsdServer, Layout, NabSeries};
use telemine::eval::{DETECTORS, asd, nab, stream::Univariate};
use telemine_model::{Device, Frame, History, ModelKind, Scorer, TrainOptions};

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
    match corpus::layout(&opts.data).map_err(anyhow::Error::msg)? {
        Layout::Nab => {
            let series = corpus::read_nab(&opts.data).map_err(anyhow::Error::msg)?;
            for d in detectors {
                eval_nab(&series, d, &opts)?;
            }
        }
        Layout::Asd => {
            let servers = corpus::read_asd(&opts.data).map_err(anyhow::Error::msg)?;
            for d in detectors {
                eval_asd(&servers, d, &opts)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams every series through a fresh detector, writes NAB's results
/// files, and prints the score under each profile.
fn eval_nab(series: &[NabSeries], detector: &str, opts: &EvalCommand) -> anyhow::Result<()> {
    let total: usize = series.iter().map(|s| s.values.len()).sum();
    let progress = super::progress_bar(total as u64, format!("nab {detector}"), "")?;
    let mut all_scores = Vec::with_capacity(series.len());
    for s in series {
        progress.set_message(s.name.clone());
        let mut d = Univariate::new(
            detector,
            nab::probation(s.values.len()),
            opts.epochs,
            records_per_day(&s.timestamps),
        );
        let mut scores = Vec::with_capacity(s.values.len());
        for &v in &s.values {
            scores.push(d.step(v).map_err(|e| anyhow::anyhow!("{}: {e}", s.name))?);
            progress.inc(1);
        }
        write_nab_results(&opts.out, detector, s, &scores)?;
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
    println!("{line}");
    Ok(())
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

/// Trains a detector per server on its training rows, scores the test rows
/// in order, and prints point-wise and adjusted figures, ROC AUC and how
/// often the explanation names a responsible metric.
fn eval_asd(servers: &[AsdServer], detector: &str, opts: &EvalCommand) -> anyhow::Result<()> {
    let progress = super::progress_bar(servers.len() as u64, format!("asd {detector}"), "")?;
    let (mut point, mut adjusted) = (asd::Counts::default(), asd::Counts::default());
    let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
    let (mut explained, mut named_right) = (0usize, 0usize);
    // What naming three features at random would score on the same rows.
    let mut by_chance = 0f64;
    for server in servers {
        progress.set_message(server.name.clone());
        let k = server.features.len();
        let train = Frame::new(server.train.len(), k, server.train.concat())?;
        let test = Frame::new(server.test.len(), k, server.test.concat())?;
        let keys = vec![server.name.clone(); train.rows.max(test.rows)];
        let kind = ModelKind::named(detector, k)
            .ok_or_else(|| anyhow::anyhow!("unknown detector {detector}"))?;
        let scorer = Scorer::train(
            kind,
            server.features.clone(),
            &train,
            &keys[..train.rows],
            &TrainOptions {
                epochs: opts.epochs,
                ..TrainOptions::default()
            },
            &Device::Cpu,
            &mut |_| {},
        )
        .map_err(|e| anyhow::anyhow!("{}: {e}", server.name))?;
        // Record by record, with no look-ahead: a row's score depends on
        // it and (sequence) the rows before it, so one batch gives the same.
        let scored = match scorer.context_len() {
            Some(len) => {
                let mut h = History::new(len, k);
                h.contexts(&keys[..train.rows], &train);
                let (ctx, full) = h.contexts(&keys[..test.rows], &test);
                scorer.score(&test, Some((&ctx, &full)))?
            }
            None => scorer.score(&test, None)?,
        };
        let threshold = scorer.sidecar().calibration.threshold;
        let flagged: Vec<bool> = scored.score.iter().map(|&s| s as f64 > threshold).collect();
        point.add(asd::pointwise(&flagged, &server.labels));
        adjusted.add(asd::point_adjusted(&flagged, &server.labels));
        all_scores.extend(scored.score.iter().map(|&s| s as f64));
        all_labels.extend_from_slice(&server.labels);
        for (a, b, metrics) in &server.interpretation {
            for i in (*a..=*b).filter(|&i| i < flagged.len() && flagged[i]) {
                explained += 1;
                by_chance += random_hit(k, metrics.len(), 3);
                if scored.top(i, 3).iter().any(|m| metrics.contains(m)) {
                    named_right += 1;
                }
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    let rows = all_labels.len();
    println!(
        "asd {detector}: {} servers, {rows} test rows ({} anomalous); point-wise P {:.3} R {:.3} F1 {:.3}; point-adjusted P {:.3} R {:.3} F1 {:.3}; ROC AUC {:.3}; best point-wise F1 over thresholds fitted to the labels (an upper bound) {:.3}; top-3 features name a labelled metric in {named_right} of {explained} flagged anomalous rows ({:.1}%; three features at random: {:.1}%)",
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
