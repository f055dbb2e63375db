//! The configs `telemine eval` writes for a corpus: a source over the
//! corpus' CSV, a feature view, and the model — the same files a user
//! would write to run the detector over that data, and what `eval` then
//! runs through the engine's local runner. `config/examples/nab.toml` is
//! one of them.

use std::fmt::Write;

/// The detector settings `eval` runs NAB series with, for every series
/// alike; only the warm-up (NAB's probation) and the season (records a
/// day) follow the series.
#[derive(Debug, Clone)]
pub struct NabModel {
    pub kind: String,
    /// Windows before the first training: NAB's probation, at least 32.
    pub warmup_windows: usize,
    /// Records a day (0: fewer than two a day).
    pub season_windows: usize,
    pub epochs: usize,
    pub scoring: NabScoring,
}

/// The scoring steps `eval` runs NAB series with (see
/// `telemine_detector::score`); [`NabScoring::default`] is what
/// `config/examples/nab.toml` ships, the rest are the variants
/// `eval --cv` chooses among.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NabScoring {
    pub range_margin: Option<f64>,
    pub median_range_windows: usize,
    pub median_range_margin: f64,
    pub rank_history: usize,
    /// Rank the range checks over the last day of records (the season, or
    /// 288 records where the series has none): see `range_rank_windows`.
    pub range_rank_daily: bool,
    pub refractory_windows: usize,
}

/// Records ranked over when a series has no season (a day of 5-minute
/// records).
const NO_SEASON_DAY: usize = 288;

impl NabScoring {
    /// `range_rank_windows` for a series with `season` records a day.
    pub fn range_rank_windows(&self, season: usize) -> usize {
        match (self.range_rank_daily, season) {
            (false, _) => 0,
            (true, 0) => NO_SEASON_DAY,
            (true, s) => s.max(8),
        }
    }
}

impl Default for NabScoring {
    fn default() -> NabScoring {
        NabScoring {
            range_margin: Some(0.02),
            median_range_windows: 8,
            median_range_margin: 0.05,
            rank_history: 5000,
            range_rank_daily: true,
            refractory_windows: 30,
        }
    }
}

/// The scoring variants `eval --cv` runs each detector with, by name: the
/// shipped steps, and the same with every row past a range scoring 1
/// (the previous default). Kept small on purpose: choosing among many
/// variants per fold fitted the folds, not the data (held-out 72.4 for
/// kmeans over five variants against 76.3 for its shipped steps alone).
pub fn nab_variants() -> Vec<(&'static str, NabScoring)> {
    let shipped = NabScoring::default();
    vec![
        ("shipped", shipped),
        (
            "unranked-range",
            NabScoring {
                range_rank_daily: false,
                ..shipped
            },
        ),
    ]
}

/// What a NAB config's scoring keys do, in words.
fn scoring_text(model: &NabModel) -> String {
    let sc = &model.scoring;
    let mut t = String::from("The error against the last 200 errors");
    if sc.rank_history > 0 {
        let _ = write!(
            t,
            ", ranked against the series' last {} surprises",
            sc.rank_history
        );
    }
    if let Some(m) = sc.range_margin {
        let _ = write!(
            t,
            "; a value {}% of the range past the range seen scores 1",
            m * 100.0
        );
    }
    if sc.median_range_windows > 0 {
        let _ = write!(
            t,
            ", and so does a median of the last {} records {}% past the range of such medians",
            sc.median_range_windows,
            sc.median_range_margin * 100.0
        );
    }
    let ranked = sc.range_rank_windows(model.season_windows);
    if ranked > 0 && (sc.range_margin.is_some() || sc.median_range_windows > 0) {
        let _ = write!(
            t,
            " — divided by one plus the rows past a range in the last {ranked} records (a day), so a trend that keeps setting new extremes stops alarming on each"
        );
    }
    let _ = write!(
        t,
        "; one alarm per burst of {} records.",
        sc.refractory_windows
    );
    t
}

/// `text` as TOML comment lines of at most 76 characters.
fn comment(text: &str) -> String {
    let mut lines: Vec<String> = vec![String::from("#")];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line at least");
        if last.len() + 1 + word.len() > 76 && last.len() > 1 {
            lines.push(format!("# {word}"));
        } else {
            last.push(' ');
            last.push_str(word);
        }
    }
    lines.join("\n")
}

/// The feature view of a NAB series: one row per record (its one-second
/// window; records with the same timestamp average into one row).
pub const NAB_VIEW: &str = "\
-- One row per record of the series (its one-second window): the value
-- the detector scores. Records sharing a timestamp average into one row.
SELECT window_start, window_end, avg(value) AS value
FROM TUMBLE(series, timestamp, INTERVAL '1 second')
GROUP BY window_start, window_end
";

/// A NAB series' config; `sql_dir` holds [`NAB_VIEW`] as
/// `features/series.sql`, `about` says which series it is for.
pub fn nab_config(model: &NabModel, sql_dir: &str, about: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"# A NAB series scored by telemine's streaming detector: the config
# `telemine eval` writes for {about}.
# Run it over the series' CSV (timestamp,value) with
#   telemine dry-run --config THIS --input SERIES.csv --scores scores.csv

[kafka]
bootstrap_servers = "unused:9092"   # dry-run and eval read files

[[sources]]
name = "series"
topic = "series"
columns = ["timestamp timestamp", "value double"]
event_time = "timestamp"
# A recorded series is in order: each record closes the window before it.
max_out_of_orderness = "0s"

[sql]
dir = "{sql_dir}"

[[models]]
name = "nab"
view = "series"
features = ["value"]
kind = "{kind}"
device = "cpu"
epochs = {epochs}
# Features of the record and the ones before it only: its change, its
# distance from the last 8 and their spread, and its distance from the
# same time a day ({season} records) before.
past_windows = 8
season_windows = {season}
# Learn from NAB's probation (15% of the series, at most 750 records, at
# least 32), then again each time the series has doubled.
warmup_windows = {warmup}
retrain = "doubling"
training_rows = 50000
{scoring_comment}
score = "likelihood"
error_history = 200
spread_floor = 1.0
rank_history = {rank}
{range_line}
median_range_windows = {median}
median_range_margin = {median_margin}
range_rank_windows = {range_rank}
refractory_windows = {refractory}
"#,
        kind = model.kind,
        epochs = model.epochs,
        season = model.season_windows,
        warmup = model.warmup_windows,
        rank = model.scoring.rank_history,
        range_line = match model.scoring.range_margin {
            Some(m) => format!("range_margin = {m}"),
            None => "# range_margin: unset, no range check".to_string(),
        },
        median = model.scoring.median_range_windows,
        median_margin = model.scoring.median_range_margin,
        refractory = model.scoring.refractory_windows,
        range_rank = model.scoring.range_rank_windows(model.season_windows),
        scoring_comment = comment(&scoring_text(model)),
    );
    s
}

/// The feature view of a server: one row per record, its window as long
/// as the records' spacing (`spacing_ms`).
pub fn asd_view(features: &[String], spacing_ms: i64) -> String {
    let cols: Vec<String> = features
        .iter()
        .map(|f| format!("avg({f}) AS {f}"))
        .collect();
    format!(
        "-- One row per record of the server (every {spacing_ms} ms): its metrics.\n\
         SELECT window_start, window_end, {}\n\
         FROM TUMBLE(server, timestamp, INTERVAL '{spacing_ms} milliseconds')\n\
         GROUP BY window_start, window_end\n",
        cols.join(", ")
    )
}

/// The profile detector's season for records `spacing_ms` apart: the
/// windows in a day, when a day holds a whole number of them within the
/// limit on `season_windows`; 0 (no time-of-day profile) otherwise.
pub fn daily_season(spacing_ms: i64) -> usize {
    const DAY_MS: i64 = 86_400_000;
    if spacing_ms > 0 && DAY_MS % spacing_ms == 0 {
        let n = (DAY_MS / spacing_ms) as usize;
        if (2..=20_000).contains(&n) {
            return n;
        }
    }
    0
}

/// An ASD server's config: trained on its training rows (the first
/// `train_rows` windows), then scoring the test rows that follow.
pub fn asd_config(
    kind: &str,
    features: &[String],
    train_rows: usize,
    epochs: usize,
    season: usize,
    sql_dir: &str,
    about: &str,
) -> String {
    let columns: Vec<String> = std::iter::once("\"timestamp timestamp\"".to_string())
        .chain(features.iter().map(|f| format!("\"{f} double\"")))
        .collect();
    let quoted: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
    format!(
        r#"# An ASD server scored by telemine's streaming detector: the config
# `telemine eval` writes for {about}. Its input is the server's training
# rows followed by its test rows (timestamp,m1,…).

[kafka]
bootstrap_servers = "unused:9092"   # dry-run and eval read files

[[sources]]
name = "server"
topic = "server"
columns = [{columns}]
event_time = "timestamp"
max_out_of_orderness = "0s"

[sql]
dir = "{sql_dir}"

[[models]]
name = "asd"
view = "server"
features = [{features}]
kind = "{kind}"
device = "cpu"
epochs = {epochs}
# Learn from the training rows, then score.
warmup_windows = {train_rows}
retrain_windows = 0
training_rows = {train_rows}
score = "calibrated"
# The profile detector: its slots of a day (0: none).
season_windows = {season}
"#,
        season = if kind == telemine_detector::Kind::Profile.name() {
            season
        } else {
            0
        },
        columns = columns.join(", "),
        features = quoted.join(", "),
    )
}
