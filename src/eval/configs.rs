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
# The error against the last 200 errors, ranked against the series' last
# 5000 surprises; a value 2% of the range past the range seen scores 1, and
# so does a median of the last 8 records 5% past the range of such medians;
# one alarm per burst of 30 records.
score = "likelihood"
error_history = 200
spread_floor = 1.0
rank_history = 5000
range_margin = 0.02
median_range_windows = 8
median_range_margin = 0.05
refractory_windows = 30
"#,
        kind = model.kind,
        epochs = model.epochs,
        season = model.season_windows,
        warmup = model.warmup_windows,
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
        season = if kind == crate::detector::PROFILE {
            season
        } else {
            0
        },
        columns = columns.join(", "),
        features = quoted.join(", "),
    )
}
