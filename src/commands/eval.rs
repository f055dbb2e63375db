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

use telemine::eval::configs::{self, NabModel, NabScoring};
use telemine::eval::corpus::{self, AsdServer, Layout, NabSeries};
use telemine::eval::cv::{self, Candidate, Folds};
use telemine::eval::{asd, detectors, nab};
use telemine_detector::{ScoreLog, ScoredRow};
use telemine_observe::metrics::Metrics;
use telemine_stream::local::replay;

pub struct EvalCommand {
    pub data: PathBuf,
    pub detector: String,
    pub out: PathBuf,
    pub epochs: usize,
    /// Also run the scoring variants (NAB) and choose among all the
    /// detectors and variants by cross-validation across the corpus'
    /// groups; each detector as shipped is cross-validated either way.
    pub cv: bool,
}

pub async fn eval(opts: EvalCommand) -> anyhow::Result<ExitCode> {
    let known = detectors();
    let detectors: Vec<&str> = if opts.detector == "all" {
        known.clone()
    } else {
        let named: Vec<&str> = opts.detector.split(',').map(str::trim).collect();
        if let Some(bad) = named.iter().find(|d| !telemine::eval::known(d)) {
            anyhow::bail!(
                "--detector {bad}: use one of {} (several separated by commas; a blend joined by +, as nearest+kmeans) or all",
                known.join(", ")
            );
        }
        named
    };
    std::fs::create_dir_all(&opts.out)?;
    let out = std::path::absolute(&opts.out)?;
    match corpus::layout(&opts.data).map_err(anyhow::Error::msg)? {
        Layout::Nab => {
            let series = corpus::read_nab(&opts.data).map_err(anyhow::Error::msg)?;
            let mut candidates = Vec::new();
            for d in detectors {
                if !telemine::eval::univariate(d) {
                    telemine_observe::note!(
                        "eval: {d} is for multivariate server metrics; skipped on NAB"
                    );
                    continue;
                }
                let variants = if opts.cv {
                    configs::nab_variants()
                } else {
                    vec![("shipped", NabScoring::default())]
                };
                let shipped = candidates.len();
                for (variant, scoring) in variants {
                    let name = candidate_name(d, variant);
                    let scores = eval_nab(&series, d, &name, scoring, &opts, &out).await?;
                    candidates.push(Candidate {
                        name,
                        scores,
                        levels: Vec::new(),
                    });
                }
                // The detector as shipped, its threshold alone chosen by
                // the other folds.
                report_nab_cv(&series, &candidates[shipped..=shipped]);
            }
            if opts.cv && candidates.len() > 1 {
                report_nab_cv(&series, &candidates);
            }
        }
        Layout::Asd => {
            let servers = corpus::read_asd(&opts.data).map_err(anyhow::Error::msg)?;
            let mut candidates = Vec::new();
            for d in detectors {
                let scores = eval_asd(&servers, d, &opts, &out).await?;
                candidates.push(Candidate {
                    name: d.to_string(),
                    scores,
                    levels: label_free_levels(d),
                });
                report_asd_cv(&servers, &candidates[candidates.len() - 1..]);
            }
            if opts.cv && candidates.len() > 1 {
                report_asd_cv(&servers, &candidates);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A candidate's name: the detector, and the variant unless it is the
/// shipped one.
fn candidate_name(detector: &str, variant: &str) -> String {
    if variant == "shipped" {
        detector.to_string()
    } else {
        format!("{detector}-{variant}")
    }
}

/// Prints NAB's leave-one-category-out figures over `candidates`: per
/// profile the pooled held-out score, each fold's choice, and the
/// in-sample best beside them.
fn report_nab_cv(series: &[NabSeries], candidates: &[Candidate]) {
    let folds = Folds::by_group(
        series
            .iter()
            .map(|s| s.name.split_once('/').map_or("", |(c, _)| c)),
    );
    if folds.folds.len() < 2 || candidates.is_empty() {
        return;
    }
    let windows: Vec<Vec<(usize, usize)>> = series.iter().map(|s| s.windows.clone()).collect();
    let names: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    let mut line = format!(
        "nab held-out (leave one category out, {} folds; candidates {}; detector, variant and threshold chosen on the other folds):",
        folds.folds.len(),
        names.join(" ")
    );
    let mut details = Vec::new();
    for p in &nab::PROFILES {
        let result = cv::nab(candidates, &windows, &folds, p);
        line.push_str(&format!(
            " {} {:.1} (in-sample best, not a result: {:.1} by {});",
            p.name, result.held_out, result.in_sample.1, result.in_sample.0
        ));
        for f in &result.folds {
            details.push(format!(
                "nab held-out {} {}: chose {} at {:.6} ({:.1} on the other folds); held out raw {:.2}, normalised {:.1}",
                p.name, f.held_out, f.chosen, f.threshold, f.training, f.raw, f.normalized
            ));
        }
    }
    telemine_observe::out!("{line}");
    for d in details {
        telemine_observe::out!("{d}");
    }
}

/// Prints ASD's leave-servers-out figures over `candidates`: folds of two
/// or three consecutive servers.
fn report_asd_cv(servers: &[AsdServer], candidates: &[Candidate]) {
    if servers.len() < 2 || candidates.is_empty() {
        return;
    }
    let names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    let folds = Folds::consecutive(&names, asd_folds(servers.len()));
    let labels: Vec<Vec<bool>> = servers.iter().map(|s| s.labels.clone()).collect();
    let result = cv::asd(candidates, &labels, &folds);
    let cands: Vec<&str> = candidates.iter().map(|c| c.name.as_str()).collect();
    telemine_observe::out!(
        "asd held-out (servers left out, {} folds; candidates {}; detector and label-free threshold chosen on the other folds): point-wise P {:.3} R {:.3} F1 {:.3}, ROC AUC {:.3} (in-sample best, not a result: F1 {:.3} by {} at {:.4})",
        folds.folds.len(),
        cands.join(" "),
        result.counts.precision(),
        result.counts.recall(),
        result.counts.f1(),
        result.auc,
        result.in_sample.2,
        result.in_sample.0,
        result.in_sample.1
    );
    for f in &result.folds {
        telemine_observe::out!(
            "asd held-out {}: chose {} at {:.4} (F1 {:.3} on the other folds); held out P {:.3} R {:.3} F1 {:.3}, ROC AUC {:.3}",
            f.held_out,
            f.chosen,
            f.threshold,
            f.training_f1,
            f.counts.precision(),
            f.counts.recall(),
            f.counts.f1(),
            f.auc
        );
    }
}

/// Folds for `n` servers: two or three servers each.
fn asd_folds(n: usize) -> usize {
    ((n as f64 / 2.5).round() as usize).clamp(2, n.max(2))
}

/// What running a detector cost: rows through the engine (decoding, the
/// view's SQL, the model with its online training), the time they took,
/// and the most state one series held (`Settings::values_per_series`).
#[derive(Debug, Default)]
struct Cost {
    rows: usize,
    seconds: f64,
    values_per_series: usize,
}

impl Cost {
    fn text(&self) -> String {
        format!(
            "cost: {:.0} rows/s through the engine (decode, SQL, model and its online training; this machine), at most {} values ({} bytes) of state per series",
            self.rows as f64 / self.seconds.max(1e-9),
            self.values_per_series,
            8 * self.values_per_series
        )
    }
}

/// Runs `input` through the engine with the config at `config` and
/// returns every row its models scored, in the order they took them;
/// adds what that cost to `cost`.
async fn score_through_engine(
    config: &Path,
    input: &Path,
    cost: &mut Cost,
) -> anyhow::Result<Vec<ScoredRow>> {
    let started = std::time::Instant::now();
    let Some((cfg, mut sql)) = super::load(config, None).await? else {
        anyhow::bail!("{}: the config eval wrote does not load", config.display());
    };
    let models = cfg.model_settings().map_err(anyhow::Error::msg)?;
    // A blend's members each hold their own state for a series.
    let held: usize = models.iter().map(|m| m.values_per_series()).sum();
    cost.values_per_series = cost.values_per_series.max(held);
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
    telemine_detector::attach(&mut sql, &models, false, Some(log.clone()))
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
    let rows = log.take();
    cost.rows += rows.len();
    cost.seconds += started.elapsed().as_secs_f64();
    Ok(rows)
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
    name: &str,
    scoring: NabScoring,
    opts: &EvalCommand,
    out: &Path,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let total: usize = series.iter().map(|s| s.values.len()).sum();
    let progress = super::progress_bar(total as u64, format!("nab {name}"), "")?;
    let configs_dir = out.join("configs").join(name);
    let sql_dir = configs_dir.join("nab-sql");
    write_file(&sql_dir.join("features/series.sql"), configs::NAB_VIEW)?;
    let mut all_scores = Vec::with_capacity(series.len());
    let mut cost = Cost::default();
    for s in series {
        progress.set_message(s.name.clone());
        let model = NabModel {
            kind: detector.to_string(),
            warmup_windows: nab::probation(s.values.len()).max(32),
            season_windows: records_per_day(&s.timestamps)
                .filter(|&d| d >= 2)
                .unwrap_or(0),
            epochs: opts.epochs,
            scoring,
        };
        let config = configs_dir.join(s.name.replace(".csv", ".toml"));
        write_file(
            &config,
            &configs::nab_config(&model, &sql_dir.to_string_lossy(), &s.name),
        )?;
        let rows =
            score_through_engine(&config, &opts.data.join("data").join(&s.name), &mut cost).await?;
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
        write_nab_results(out, name, s, &scores)?;
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
        "nab {name}: {} series, {total} records, {windows} windows; in-sample (the threshold fitted to these series):",
        series.len()
    );
    for p in &nab::PROFILES {
        let sweep = nab::best_threshold(&scored, p);
        line.push_str(&format!(
            " {} {:.1} (threshold {:.6})",
            p.name, sweep.normalized, sweep.threshold
        ));
    }
    telemine_observe::out!("{line}; {}", cost.text());
    Ok(all_scores)
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
    if detector == telemine_detector::Kind::Profile.name() {
        0.5
    } else {
        0.999
    }
}

/// The share of a model's training rows scoring at least its label-free
/// threshold: the profile detector's threshold is its training scores'
/// 0.99 quantile; a calibrated score above `t` is the top `1 − t` of the
/// training rows' errors.
fn training_share_above(detector: &str) -> f64 {
    if detector == telemine_detector::Kind::Profile.name() {
        0.01
    } else {
        1.0 - label_free_threshold(detector)
    }
}

/// The label-free thresholds `eval` may choose among for a detector by
/// cross-validation: for the profile detector `s/(1 + s)` with `s` the
/// multiple of its training scores' 0.99 quantile, for a calibrated score
/// quantiles of the training rows' errors.
fn label_free_levels(detector: &str) -> Vec<f64> {
    if detector == telemine_detector::Kind::Profile.name() {
        [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]
            .iter()
            .map(|s| s / (1.0 + s))
            .collect()
    } else {
        vec![0.99, 0.995, 0.998, 0.999, 0.9995]
    }
}

/// Runs every server's training rows, then its test rows, through the
/// engine with its config; prints point-wise and adjusted figures at the
/// shipped label-free threshold, ROC AUC and how often the explanation
/// names a responsible metric; writes each server's scores, and returns
/// each server's test rows' scores.
async fn eval_asd(
    servers: &[AsdServer],
    detector: &str,
    opts: &EvalCommand,
    out: &Path,
) -> anyhow::Result<Vec<Vec<f64>>> {
    let progress = super::progress_bar(servers.len() as u64, format!("asd {detector}"), "")?;
    let (mut point, mut adjusted) = (asd::Counts::default(), asd::Counts::default());
    let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
    let (mut explained, mut named_right) = (0usize, 0usize);
    // What naming three features at random would score on the same rows.
    let mut by_chance = 0f64;
    let mut best_per_server = Vec::new();
    let configs_dir = out.join("configs").join(detector);
    let mut per_server = Vec::with_capacity(servers.len());
    let mut cost = Cost::default();
    for server in servers {
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
        let mut rows = score_through_engine(&config, &input, &mut cost).await?;
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
                telemine_detector::explain::named(r.features.as_deref().unwrap_or_default())
                    .filter_map(|f| server.features.iter().position(|x| x == f))
                    .collect()
            })
            .collect();
        let threshold = label_free_threshold(detector);
        let flagged: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
        write_asd_scores(out, detector, server, test, &flagged)?;
        point.add(asd::pointwise(&flagged, &server.labels));
        adjusted.add(asd::point_adjusted(&flagged, &server.labels));
        if server.labels.iter().any(|l| *l) {
            best_per_server.push(asd::best_f1(&scores, &server.labels).0);
        }
        all_scores.extend_from_slice(&scores);
        all_labels.extend_from_slice(&server.labels);
        per_server.push(scores);
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
    // Calibration: the share of label-normal test rows at or above the
    // label-free threshold, against the share of training rows there.
    let threshold = label_free_threshold(detector);
    let normal = all_labels.iter().filter(|l| !**l).count();
    let normal_above = all_scores
        .iter()
        .zip(&all_labels)
        .filter(|(s, l)| !**l && **s >= threshold)
        .count();
    let mean_best = best_per_server.iter().sum::<f64>() / best_per_server.len().max(1) as f64;
    telemine_observe::out!(
        "asd {detector}: {} servers, {rows} test rows ({} anomalous); at the shipped label-free threshold, in-sample: point-wise P {:.3} R {:.3} F1 {:.3}; point-adjusted (inflated) P {:.3} R {:.3} F1 {:.3}; ROC AUC {:.3}; best point-wise F1 for thresholds fitted to the labels (upper bounds): pooled {:.3}, per-server mean {mean_best:.3}; top-3 features name a labelled metric in {named_right} of {explained} flagged anomalous rows ({:.1}%; three features at random: {:.1}%); calibration: {:.2}% of the {normal} label-normal test rows score at least {threshold} ({:.2}% of training rows do); {}",
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
        100.0 * by_chance / explained.max(1) as f64,
        100.0 * normal_above as f64 / normal.max(1) as f64,
        100.0 * training_share_above(detector),
        cost.text()
    );
    Ok(per_server)
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
