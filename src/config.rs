//! The `telemine.toml` config file: one serde struct that documents itself.
//!
//! Every struct denies unknown keys, so a misspelled key is an error that
//! names it (with file, line and column) instead of a silent default. See
//! `config/telemine.toml` for a commented example of every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use telemine_codec::decode::{Clock, Format, InfluxOptions, Limits, NonFinite, limits};
use telemine_codec::schema::{ColumnSpec, SourceSchema, TimestampUnit};
use telemine_connectors::kafka::KafkaClientConfig;
use toml::Spanned;

use telemine_types::diagnostic::{Diagnostic, Diagnostics};
use telemine_types::duration::serde_duration;

use telemine_alerting::config::AlertingConfig;
use telemine_detector::{self as detector, Kind, Settings};
use telemine_sql::source::SourceDef;
use telemine_sql::{ModelSpec, ReferenceTable, SqlOptions};

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster to consume from and produce to. Required.
    pub kafka: KafkaClientConfig,
    /// Input streams; each becomes a table SQL can window. At least one.
    pub sources: Vec<SourceConfig>,
    /// Output topics.
    #[serde(default)]
    pub sinks: SinksConfig,
    /// Static reference tables SQL can join (host → rack, owner, tier).
    #[serde(default)]
    pub tables: Vec<TableConfig>,
    /// Where the analysts' SQL lives.
    #[serde(default)]
    pub sql: SqlConfig,
    /// Batching, commits and back-pressure.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Anomaly models scoring feature views; their scores are columns of
    /// the view that rules can read.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub alerting: AlertingConfig,
    /// The HTTP server of `telemine run`: `/metrics`, `/healthz`,
    /// `/readyz`, the JSON API and the live page.
    #[serde(default)]
    pub http: HttpConfig,
    /// Not a key: the wall clock the decoders compare event times with
    /// (`max_future_skew`); the system clock except where a test sets it.
    #[serde(skip)]
    pub clock: Clock,
}

/// `[http]`: the HTTP server of `telemine run` (see docs/HTTP.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port to listen on, e.g. "127.0.0.1:9464" (port 0: any
    /// free port, logged). Default: none (no HTTP server).
    #[serde(default)]
    pub listen: Option<Spanned<String>>,
    /// Bearer token the API's changes (adding and expiring silences) need
    /// in `Authorization: Bearer …`; without it they get 401. Default:
    /// none (changes are refused with 401; reads need no token).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding that token (its first line), instead of `token`.
    /// Default: none.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `/readyz` answers 200 only while every assigned partition's
    /// consumer lag is at most this many messages. Default: 10000.
    #[serde(default = "default_ready_max_lag")]
    pub ready_max_lag: u64,
}

fn default_ready_max_lag() -> u64 {
    10_000
}

impl HttpConfig {
    /// The token changes need: `token`, or the first line of
    /// `token_file`.
    pub fn bearer_token(&self) -> Result<Option<String>, String> {
        if let Some(t) = &self.token {
            return Ok(Some(t.clone()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("[http] token_file `{}`: {e}", path.display()))?;
        match text.lines().next().map(str::trim) {
            Some(t) if !t.is_empty() => Ok(Some(t.to_string())),
            _ => Err(format!("[http] token_file `{}` is empty", path.display())),
        }
    }
}

/// A model that scores one feature view's rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Unique name. Required.
    pub name: Spanned<String>,
    /// The feature view whose rows it scores (one model per view).
    /// Required.
    pub view: Spanned<String>,
    /// Numeric columns of the view the model reads. Required.
    pub features: Spanned<Vec<String>>,
    /// Columns that identify a series (the sequence model reads each
    /// series' previous windows). Default: the view's keys.
    #[serde(default)]
    pub keys: Vec<String>,
    /// "autoencoder", "sequence" (GRU over the series' last windows),
    /// "pca", "kmeans" or "nearest" (pooled over every series), or
    /// "profile" (one profile per series); or a blend of the pooled ones,
    /// joined by `+` ("nearest+kmeans"): each scores the rows with its own
    /// state, and the score is the geometric mean of theirs. Default:
    /// "autoencoder".
    #[serde(default = "default_model_kind")]
    pub kind: Spanned<String>,
    /// A checkpoint written by `telemine train` (the `.json` sidecar; a
    /// relative path is relative to the config file). Without one the
    /// model trains online.
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// Online training: windows of the view to learn from before the first
    /// scores (rows score NULL until then); `kind = "profile"`: windows of
    /// each series, at least 12. Default: 60.
    #[serde(default = "default_warmup_windows")]
    pub warmup_windows: usize,
    /// Online training: train again every this many windows, on the
    /// latest rows, and swap the new model in (0: never); while fewer
    /// windows than this have been seen, each training comes when they
    /// have doubled, so the first models learn from more than the
    /// warm-up. Default: 360.
    #[serde(default = "default_retrain_windows")]
    pub retrain_windows: usize,
    /// Online training: feature rows kept to train on. Default: 50000.
    #[serde(default = "default_training_rows")]
    pub training_rows: usize,
    /// "cpu", "cuda" or "auto" (CUDA when built with it and a GPU is
    /// there). Default: "auto".
    #[serde(default = "default_device")]
    pub device: String,
    /// Online training under `run`: "background" (on a thread of its own;
    /// scoring goes on with the current model and the new one is swapped
    /// in between two batches) or "inline" (the batch waits for it: scores
    /// that do not depend on timing, as under `dry-run`, `test` and
    /// `eval`, which always train inline). Default: "background".
    #[serde(default)]
    pub training: telemine_detector::Training,
    /// Passes over the training rows when training online (networks).
    /// Default: 40.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Online retraining: "every" (every `retrain_windows` windows) or
    /// "doubling" (each time the windows seen have doubled since the last
    /// training, on every row kept). Default: "every".
    #[serde(default)]
    pub retrain: telemine_detector::Retrain,
    /// Past-only features: with N > 0 the model reads, for each feature,
    /// its value, its change since the series' previous window, its
    /// distance from the mean of the series' N previous windows and their
    /// spread. 0: the features as the view emits them. At most 1000.
    /// Default: 0.
    #[serde(default)]
    pub past_windows: usize,
    /// Which past features `past_windows` adds: any of "change",
    /// "from_mean", "spread". Default: all three.
    #[serde(default = "default_past_features")]
    pub past_features: Vec<String>,
    /// Windows in a season (1440 for a day of one-minute windows): the
    /// model also reads each feature's distance from the series' mean
    /// around the same window one season before. 0: none. At most 20000.
    /// Default: 0.
    #[serde(default)]
    pub season_windows: usize,
    /// How the model's error becomes `anomaly_score`: "likelihood" (how
    /// far the error stands above the series' recent errors) or
    /// "calibrated" (the share of training rows with a lower error).
    /// Default: "likelihood".
    #[serde(default)]
    pub score: telemine_detector::ScoreMode,
    /// "likelihood": how many of the series' recent errors a row's error
    /// is compared with. Default: 200.
    #[serde(default = "default_error_history")]
    pub error_history: usize,
    /// "likelihood": the least spread of those errors, in the model's
    /// units (1 = a squared miss of one training deviation), so that the
    /// smallest misses of a model that is nearly always right do not read
    /// as alarms. Default: 1.0.
    #[serde(default = "default_spread_floor")]
    pub spread_floor: f64,
    /// "likelihood": rank each likelihood against the series' last N: it
    /// is divided by one plus how many of them were at least as high, so a
    /// surprise the series often shows counts for less than its first.
    /// 0: off. At most 100000 (memory: 16 bytes per series and value).
    /// Default: 0.
    #[serde(default)]
    pub rank_history: usize,
    /// Range check: a feature further past the range the series has shown
    /// than this share of that range scores 1, whatever the model says.
    /// Unset: no range check. Default: unset.
    #[serde(default)]
    pub range_margin: Option<f64>,
    /// Range check on the level: the median of each feature over the
    /// series' last N windows (this one included) further past the range
    /// of such medians than `median_range_margin` of it scores 1 — a shift
    /// that single values hide in their noise. 0: off. At most 1000.
    /// Default: 0.
    #[serde(default)]
    pub median_range_windows: usize,
    /// See `median_range_windows`. Default: 0.05.
    #[serde(default = "default_median_range_margin")]
    pub median_range_margin: f64,
    /// `score = "calibrated"`: a behaviour that fills this share of the
    /// series' last `error_history` windows is its normal — a level shift
    /// that stays, a pattern that keeps coming back — and stops alarming:
    /// the model's error is scaled down by how far the series' own errors
    /// at the quantile 1 − share stand above the training rows'. Never
    /// scores a series above what the training rows alone would. 0: off
    /// (the fleet's calibration alone). Default: 0.
    #[serde(default)]
    pub normal_share: f64,
    /// Range checks ranked like surprises: a row past the range (or the
    /// medians' range) scores 1 / (1 + the series' rows past it in its
    /// last N windows) instead of 1, so a series that keeps setting new
    /// extremes (a trend, a growing daily peak) stops alarming on each.
    /// 0: every such row scores 1. At most 100000. Default: 0.
    #[serde(default)]
    pub range_rank_windows: usize,
    /// One alarm per burst: a score that does not beat the series' scores
    /// of this many previous windows is reported as 0. 0: off. Default: 0.
    #[serde(default)]
    pub refractory_windows: usize,
    /// "profile": the least robust scale of a feature, as a share of its
    /// training spread (its 0.99 less its 0.01 quantile; a feature that
    /// did not spread takes the typical spread of the others), so a
    /// feature nearly constant in training does not make its first move
    /// an infinite surprise, whatever its units. Default: 0.05.
    #[serde(default = "default_scale_floor")]
    pub scale_floor: f64,
    /// Series the detector keeps state for (past windows, recent errors,
    /// range, recent scores); past it the series seen least recently is
    /// forgotten and counted. Default: 100000.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

impl ModelConfig {
    /// What is wrong with a model's settings, as messages naming the key.
    pub fn problems(&self) -> Vec<String> {
        let m = self;
        let mut out = Vec::new();
        for (key, value, max) in [
            ("past_windows", m.past_windows, detector::MAX_PAST_WINDOWS),
            (
                "season_windows",
                m.season_windows,
                detector::MAX_SEASON_WINDOWS,
            ),
            (
                "error_history",
                m.error_history,
                detector::MAX_ERROR_HISTORY,
            ),
            (
                "refractory_windows",
                m.refractory_windows,
                detector::MAX_REFRACTORY,
            ),
            ("rank_history", m.rank_history, detector::MAX_RANK_HISTORY),
            (
                "range_rank_windows",
                m.range_rank_windows,
                detector::MAX_RANK_HISTORY,
            ),
            (
                "median_range_windows",
                m.median_range_windows,
                detector::MAX_PAST_WINDOWS,
            ),
        ] {
            if value > max {
                out.push(format!("{key} = {value}: at most {max}"));
            }
        }
        if m.error_history < 10 {
            out.push(format!("error_history = {}: at least 10", m.error_history));
        }
        if !(m.spread_floor.is_finite() && m.spread_floor > 0.0) {
            out.push(format!(
                "spread_floor = {}: a positive number",
                m.spread_floor
            ));
        }
        if let Some(r) = m.range_margin
            && !(r.is_finite() && r >= 0.0)
        {
            out.push(format!("range_margin = {r}: zero or more"));
        }
        if !(m.normal_share.is_finite() && (0.0..1.0).contains(&m.normal_share)) {
            out.push(format!(
                "normal_share = {}: at least 0, below 1",
                m.normal_share
            ));
        }
        if !(m.median_range_margin.is_finite() && m.median_range_margin >= 0.0) {
            out.push(format!(
                "median_range_margin = {}: zero or more",
                m.median_range_margin
            ));
        }
        if m.kind.get_ref() == Kind::Profile.name() && m.past_windows > 0 {
            out.push(
                "the profile detector reads the view's features as they are: leave past_windows at 0".to_string(),
            );
        }
        for f in &m.past_features {
            if !detector::features::PARTS.contains(&f.as_str()) {
                out.push(format!(
                    "past_features: unknown `{f}` (use {})",
                    detector::features::PARTS.join(", ")
                ));
            }
        }
        if !(m.scale_floor.is_finite() && m.scale_floor > 0.0) {
            out.push(format!(
                "scale_floor = {}: a positive number",
                m.scale_floor
            ));
        }
        if m.max_series == 0 {
            out.push("max_series = 0: at least 1".to_string());
        }
        out
    }

    /// The detectors `kind` names: one, or a blend's members (see
    /// `telemine_detector::blend`), which takes no checkpoint.
    pub fn kinds(&self) -> Result<Vec<Kind>, String> {
        let name = self.name.get_ref();
        let kinds = detector::blend::kinds(self.kind.get_ref())
            .map_err(|e| format!("model `{name}`: {e}"))?;
        if kinds.len() > 1 && self.checkpoint.is_some() {
            return Err(format!(
                "model `{name}`: a blend trains online; a checkpoint is for one detector (leave checkpoint out, or name one kind)"
            ));
        }
        Ok(kinds)
    }

    /// The settings of each detector the model runs, checked: one, or
    /// each member of a blend, named `MODEL.KIND`.
    pub fn detector_settings(&self) -> Result<Vec<Settings>, String> {
        let kinds = self.kinds()?;
        let one = kinds.len() == 1;
        kinds
            .into_iter()
            .map(|kind| {
                let name = if one {
                    self.name.get_ref().clone()
                } else {
                    detector::blend::member_name(self.name.get_ref(), kind)
                };
                self.settings_of(kind, name)
            })
            .collect()
    }

    /// The detector's settings, checked, for a model of one kind (a blend:
    /// see [`ModelConfig::detector_settings`]).
    pub fn settings(&self) -> Result<Settings, String> {
        match self.detector_settings()?.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(format!(
                "model `{}` is a blend of detectors ({}): a blend trains online, each member on its own; `train` and checkpoints are for one detector",
                self.name.get_ref(),
                self.kind.get_ref()
            )),
        }
    }

    fn settings_of(&self, kind: Kind, name: String) -> Result<Settings, String> {
        let m = self;
        if let Some(p) = m.problems().into_iter().next() {
            return Err(format!("model `{}`: {p}", m.name.get_ref()));
        }
        let profile = kind == Kind::Profile;
        // The profile detector reads the season itself (its slots), not
        // as a past feature.
        let past = detector::PastFeatures {
            window: m.past_windows,
            season: if profile { 0 } else { m.season_windows },
            parts: detector::features::PARTS.map(|p| m.past_features.iter().any(|f| f == p)),
        };
        let view_features = m.features.get_ref().clone();
        let model_features = past.names(&view_features);
        let kind = telemine_model::ModelKind::of(kind, model_features.len());
        let device = m
            .device
            .parse()
            .map_err(|e| format!("model `{name}`: {e}"))?;
        Ok(Settings {
            name,
            view_features,
            model_features,
            kind,
            past,
            scoring: detector::Scoring {
                mode: m.score,
                history: m.error_history,
                spread_floor: m.spread_floor,
                range_margin: m.range_margin,
                median_windows: m.median_range_windows,
                median_margin: m.median_range_margin,
                range_rank: m.range_rank_windows,
                refractory: m.refractory_windows,
                normal_share: m.normal_share,
                rank_history: m.rank_history,
            },
            warmup_windows: m.warmup_windows.max(1),
            retrain: m.retrain,
            retrain_windows: m.retrain_windows,
            training_rows: m.training_rows.max(2),
            epochs: m.epochs,
            max_series: m.max_series,
            scale_floor: m.scale_floor,
            season: m.season_windows,
            view: m.view.get_ref().clone(),
            device,
            checkpoint: m.checkpoint.clone(),
            training: m.training,
        })
    }
}

fn default_epochs() -> usize {
    40
}

fn default_error_history() -> usize {
    200
}

fn default_spread_floor() -> f64 {
    1.0
}

fn default_median_range_margin() -> f64 {
    0.05
}

fn default_past_features() -> Vec<String> {
    telemine_detector::features::PARTS
        .iter()
        .map(|p| p.to_string())
        .collect()
}

fn default_scale_floor() -> f64 {
    0.05
}

fn default_max_series() -> usize {
    100_000
}

fn default_model_kind() -> Spanned<String> {
    Spanned::new(0..0, "autoencoder".to_string())
}

fn default_warmup_windows() -> usize {
    60
}

fn default_retrain_windows() -> usize {
    360
}

fn default_training_rows() -> usize {
    50_000
}

fn default_device() -> String {
    "auto".to_string()
}

/// One input stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Table name in SQL (`TUMBLE(<name>, …)`). Required, unique.
    pub name: Spanned<String>,
    /// Kafka topic to consume: one topic named in full. A regular
    /// expression (`^telemetry-.*`) is refused, as is any name Kafka would
    /// refuse (letters, digits, `.`, `_`, `-`; at most 249). Required.
    pub topic: String,
    /// Refused: a source reads one topic (its watermarks and checkpoints
    /// are kept per partition number, which two topics would share).
    /// Declare one source per topic and `UNION ALL` them in SQL.
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// Message format: "json" (one object per message, or an array of
    /// objects), "influx" (InfluxDB line protocol, as Telegraf writes) or
    /// "collectd" (collectd's write_kafka plugin, `Format JSON`).
    /// Default: "json".
    #[serde(default)]
    pub format: Format,
    /// How JSON and collectd sources write the event time: "s", "ms", "us",
    /// "ns" (epoch numbers, fractions allowed) or "rfc3339" (strings). "ms"
    /// also takes RFC 3339 strings. A number whose magnitude is another
    /// unit's (|t| in [1e8, 1e11) is seconds, [1e11, 1e14) milliseconds,
    /// [1e14, 1e17) microseconds, [1e17, 1e20) nanoseconds; below 1e8 it is
    /// taken as declared) is a dead letter naming that unit. Line protocol
    /// uses `influx.precision` instead. Default: "ms" ("s" with
    /// `format = "collectd"`).
    #[serde(default)]
    pub timestamp_unit: Option<TimestampUnit>,
    /// JSON and collectd sources: columns read from a path inside the
    /// object instead of the field of their name, as `[sources.paths]
    /// host = "meta.host"`, `cpu = "values[0]"`. Default: none.
    #[serde(default)]
    pub paths: std::collections::BTreeMap<String, String>,
    /// Line-protocol options (only with `format = "influx"`).
    #[serde(default)]
    pub influx: InfluxOptions,
    /// Declared columns, each `"name type"` with type one of string, double,
    /// bigint, boolean, timestamp. Fields not declared are ignored; declared
    /// fields missing from a record are null. Required.
    pub columns: Spanned<Vec<ColumnSpec>>,
    /// The column holding event time (declared as `timestamp`; JSON may carry
    /// RFC 3339 strings or epoch milliseconds). Required.
    pub event_time: Spanned<String>,
    /// How far behind the newest event time a record may arrive and still
    /// count: the watermark is the partition's max event time minus this.
    /// Default: "5s".
    #[serde(default = "default_out_of_orderness", with = "serde_duration")]
    pub max_out_of_orderness: Duration,
    /// A partition that delivers nothing for this long (processing time)
    /// stops holding the watermark back, so a quiet partition cannot stall
    /// every window. Default: "10s".
    #[serde(default = "default_idle_timeout", with = "serde_duration")]
    pub idle_timeout: Duration,
    /// How long after the watermark passes a window's end the window still
    /// takes stragglers (SESSION: how far behind the watermark a record may
    /// be): such a record is counted, its window is evaluated again (a late
    /// firing) and raises the alerts it had not raised before. Later
    /// records go to the late topic.
    /// Default: "0s".
    #[serde(default, with = "serde_duration")]
    pub allowed_lateness: Duration,
    /// Drop a record whose values in these columns and whose event time
    /// equal those of a record already in an open window (the duplicates
    /// at-least-once producers create). Counted in `duplicates_dropped`.
    /// Default: none (keep every record).
    #[serde(default)]
    pub dedupe_by: Vec<String>,
    /// The columns the producers key this topic's messages by (Kafka puts
    /// every record of one key on one partition). A view whose GROUP BY
    /// holds them is computed from one partition's records alone, so it
    /// scales out by partition at no extra cost; `telemine check` says,
    /// per view, whether it does. Default: none (not known).
    #[serde(default)]
    pub key: Vec<String>,
    /// A record whose event time is more than this ahead of the wall clock
    /// (or of the newest event time its partition has delivered, when that
    /// is later: a replay running faster than time) goes to the dead-letter
    /// topic with the reason and never moves a watermark: one producer
    /// with a broken clock cannot make every later record late.
    /// Default: "1h".
    #[serde(default = "default_future_skew", with = "serde_duration")]
    pub max_future_skew: Duration,
    /// NaN and ±Infinity in a `double` column (as numbers or strings) are
    /// never readings: "dead_letter" sends the record to the dead-letter
    /// topic, "null" keeps it with the value NULL. Default: "dead_letter".
    #[serde(default)]
    pub non_finite: NonFinite,
    /// A larger message is a dead letter (cut to fit the dead-letter
    /// topic, with its size and digest in headers). Default: "1MiB".
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: bytesize::ByteSize,
    /// JSON nested deeper than this is a dead letter. Default: 32.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// A string (JSON) or token (line protocol) longer than this is a dead
    /// letter. Default: "16KiB".
    #[serde(default = "default_max_field_bytes")]
    pub max_field_bytes: bytesize::ByteSize,
}

fn default_future_skew() -> Duration {
    limits::DEFAULT_MAX_FUTURE_SKEW
}
fn default_max_message_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::b(limits::DEFAULT_MAX_MESSAGE_BYTES as u64)
}
fn default_max_depth() -> usize {
    limits::DEFAULT_MAX_DEPTH
}
fn default_max_field_bytes() -> bytesize::ByteSize {
    bytesize::ByteSize::b(limits::DEFAULT_MAX_FIELD_BYTES as u64)
}

/// A reference table: a CSV file loaded once, joined by name in SQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Table name in SQL. Required, unique among sources and tables.
    pub name: Spanned<String>,
    /// CSV file with a header row; a relative path is relative to the
    /// config file's folder. Required.
    pub path: Spanned<PathBuf>,
    /// Declared columns, `"name type"` as for sources; the header names
    /// them, extra CSV columns are ignored. Required.
    pub columns: Spanned<Vec<ColumnSpec>>,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_out_of_orderness() -> Duration {
    Duration::from_secs(5)
}

/// Output topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinksConfig {
    /// Topic notifications are produced to: Alertmanager webhook payloads
    /// (version 4), keyed by group key. Default: "telemine.alerts".
    #[serde(default = "default_alerts_topic")]
    pub alerts_topic: String,
    /// Optional topic that receives every rule row as it is raised, before
    /// the alert lifecycle: one `telemine.alert/v1` JSON message per alert
    /// instance and window, keyed by fingerprint — for audits, training
    /// data, or consumers that want every window. Default: none.
    #[serde(default)]
    pub rows_topic: Option<String>,
    /// Topic late records go to: rows older than every open window of their
    /// source, as JSON, with headers telemine.lateness_ms,
    /// telemine.source.topic, telemine.source.partition,
    /// telemine.source.offset. Default: "telemine.late".
    #[serde(default = "default_late_topic")]
    pub late_topic: String,
    /// Topic malformed records go to, with the reason and their origin in
    /// headers. Default: "telemine.dead-letter".
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// The largest message telemine produces (Kafka's default limit,
    /// librdkafka's `message.max.bytes`, is 1000000). Dead letters and late
    /// records are cut to fit, with `telemine.original_size` and
    /// `telemine.original_xxh3` headers; notifications are split so each
    /// fits; the alerting state is written in chunks below it.
    /// Default: 1000000.
    #[serde(default = "default_sink_message_bytes")]
    pub max_message_bytes: usize,
}

fn default_sink_message_bytes() -> usize {
    1_000_000
}

impl SinksConfig {
    /// Room for a message's payload once its key and headers are in
    /// (telemine's headers are bounded: a reason is cut to 1 KiB).
    pub fn max_payload_bytes(&self) -> usize {
        self.max_message_bytes.saturating_sub(16 * 1024).max(1024)
    }
}

fn default_alerts_topic() -> String {
    "telemine.alerts".into()
}
fn default_late_topic() -> String {
    "telemine.late".into()
}
fn default_dead_letter_topic() -> String {
    "telemine.dead-letter".into()
}

impl Default for SinksConfig {
    fn default() -> Self {
        SinksConfig {
            alerts_topic: default_alerts_topic(),
            rows_topic: None,
            late_topic: default_late_topic(),
            dead_letter_topic: default_dead_letter_topic(),
            max_message_bytes: default_sink_message_bytes(),
        }
    }
}

/// Where SQL files are read from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Folder with `features/*.sql` (feature views) and `rules/*.sql`
    /// (alert rules); a relative path is relative to the config file's
    /// folder. Default: "sql".
    #[serde(default = "default_sql_dir")]
    pub dir: PathBuf,
}

fn default_sql_dir() -> PathBuf {
    PathBuf::from("sql")
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            dir: default_sql_dir(),
        }
    }
}

/// Engine tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Records decoded into one Arrow batch at most. Default: 8192.
    #[serde(default = "default_batch_records")]
    pub max_batch_records: usize,
    /// Longest a record waits for its batch to fill. Default: "50ms".
    #[serde(default = "default_linger", with = "serde_duration")]
    pub batch_linger: Duration,
    /// How often consumed offsets are committed. Default: "1s".
    #[serde(default = "default_commit_interval", with = "serde_duration")]
    pub commit_interval: Duration,
    /// Decoded batches queued between the source and the engine; bounds
    /// memory when the engine falls behind. Default: 8.
    #[serde(default = "default_queue")]
    pub queue_batches: usize,
    /// Threads decoding records into Arrow batches (order is kept). Default: 2.
    #[serde(default = "default_decode_threads")]
    pub decode_threads: usize,
    /// Memory one evaluation of a view or rule may use (DataFusion's memory
    /// pool, e.g. "256MiB"). A query that needs more fails with an error
    /// naming it, is counted in `sql_memory_exceeded`, and the others keep
    /// running. Default: "256MiB".
    #[serde(default = "default_query_memory_limit")]
    pub query_memory_limit: bytesize::ByteSize,
    /// Longest one evaluation of a view or rule may run. A query that runs
    /// longer is stopped, fails with an error naming it, is counted in
    /// `sql_time_exceeded` (and `sql_errors`), and the others keep
    /// running. Default: "10s".
    #[serde(default = "default_query_time_limit", with = "serde_duration")]
    pub query_time_limit: Duration,
    /// `"at_least_once"`: outputs are acknowledged before the input
    /// offsets they derive from are committed; after a crash the records
    /// since the last commit are read again, and what they produced before
    /// the crash may be produced twice. `"exactly_once"`: one Kafka
    /// transaction per `commit_interval` carries every output (rule rows,
    /// late records, dead letters, the alerting relay, state) with the
    /// input offsets, and the alerting owner commits its notifications and
    /// state with the relay's offset the same way; subscribers reading
    /// with `isolation.level = read_committed` (librdkafka's default) see
    /// each notification once. Needs `[kafka] instance_id` (each
    /// instance's transactional id derives from it), and outputs that
    /// reach past the alerts topic (webhooks) stay at-least-once.
    /// Default: "at_least_once".
    #[serde(default)]
    pub delivery: Delivery,
    /// Repartition through Kafka the views whose GROUP BY does not hold
    /// their source's message `key` (see `crates/stream/src/repartition.rs`): every
    /// instance writes the records it reads to a repartition topic per
    /// (source, GROUP BY), keyed by the view's keys, and each view is
    /// computed from the partitions of that topic an instance holds. Then
    /// several instances may share the consumer group; each such record
    /// crosses Kafka twice more. Without it an instance with such views
    /// runs alone in its group. Default: false.
    #[serde(default)]
    pub repartition: bool,
    /// How often `run` logs a progress line (records/s, the largest
    /// consumer lag, alerts firing, notifications sent); "0s" turns them
    /// off. Default: "60s".
    #[serde(default = "default_progress_interval", with = "serde_duration")]
    pub progress_interval: Duration,
}

fn default_progress_interval() -> Duration {
    Duration::from_secs(60)
}

pub use telemine_runtime::Delivery;

fn default_query_time_limit() -> Duration {
    Duration::from_secs(10)
}

fn default_query_memory_limit() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(256)
}

fn default_decode_threads() -> usize {
    2
}

fn default_batch_records() -> usize {
    8192
}
fn default_linger() -> Duration {
    Duration::from_millis(50)
}
fn default_commit_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_queue() -> usize {
    8
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch_records: default_batch_records(),
            batch_linger: default_linger(),
            commit_interval: default_commit_interval(),
            queue_batches: default_queue(),
            decode_threads: default_decode_threads(),
            query_memory_limit: default_query_memory_limit(),
            query_time_limit: default_query_time_limit(),
            delivery: Delivery::default(),
            repartition: false,
            progress_interval: default_progress_interval(),
        }
    }
}

impl Config {
    /// What the SQL may use beyond its files, the reference tables read
    /// (a table that cannot be read is reported when the SQL is planned).
    pub fn sql_options(&self) -> SqlOptions {
        let config = self;
        SqlOptions {
            query_memory_limit: usize::try_from(config.engine.query_memory_limit.as_u64())
                .unwrap_or(usize::MAX),
            tables: config
                .tables
                .iter()
                .map(|t| ReferenceTable {
                    name: t.name.get_ref().clone(),
                    path: t.path.get_ref().clone(),
                    rows: crate::recorded::read_table(t.path.get_ref(), t.columns.get_ref())
                        .map_err(|e| e.to_string()),
                })
                .collect(),
            query_time_limit: config.engine.query_time_limit,
            models: config
                .models
                .iter()
                .map(|m| ModelSpec {
                    name: m.name.get_ref().clone(),
                    view: m.view.get_ref().clone(),
                    features: m.features.get_ref().clone(),
                    keys: m.keys.clone(),
                    config: PathBuf::from("[[models]]"),
                })
                .collect(),
        }
    }
}

impl Config {
    /// What a pipeline run reads, resolved once (the runtime never sees
    /// the file). The SQL options are made again at each reload, so that
    /// reference tables are read again with the SQL.
    pub fn runtime_settings(&self) -> Result<telemine_runtime::Settings, String> {
        let engine = &self.engine;
        let for_reloads = self.clone();
        Ok(telemine_runtime::Settings {
            kafka: self.kafka.clone(),
            sources: self.source_defs()?,
            models: self.model_settings()?,
            sql_dir: self.sql.dir.clone(),
            sql_options: std::sync::Arc::new(move || for_reloads.sql_options()),
            engine: telemine_runtime::EngineSettings {
                max_batch_records: engine.max_batch_records,
                batch_linger: engine.batch_linger,
                commit_interval: engine.commit_interval,
                queue_batches: engine.queue_batches,
                decode_threads: engine.decode_threads,
                delivery: engine.delivery,
                repartition: engine.repartition,
                progress_interval: engine.progress_interval,
            },
            sinks: telemine_runtime::SinkSettings {
                alerts_topic: self.sinks.alerts_topic.clone(),
                rows_topic: self.sinks.rows_topic.clone(),
                late_topic: self.sinks.late_topic.clone(),
                dead_letter_topic: self.sinks.dead_letter_topic.clone(),
                max_payload_bytes: self.sinks.max_payload_bytes(),
            },
            alerting: self.alerting.clone(),
        })
    }
}

impl Config {
    /// Every model's detector settings (see [`ModelConfig::settings`]).
    pub fn model_settings(&self) -> Result<Vec<Settings>, String> {
        let mut out = Vec::new();
        for m in &self.models {
            out.extend(m.detector_settings()?);
        }
        Ok(out)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics(vec![Diagnostic::new(
                path,
                1,
                1,
                format!("cannot read the config file: {e}"),
            )])
        })?;
        let mut config = Config::parse(path, &text)?;
        // Relative paths are relative to the config file.
        if let Some(parent) = path.parent() {
            config.resolve_paths(parent);
        }
        Ok(config)
    }

    /// Makes the SQL folder and table paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if self.sql.dir.is_relative() && !self.sql.dir.as_os_str().is_empty() {
            self.sql.dir = base.join(&self.sql.dir);
        }
        for m in &mut self.models {
            if let Some(c) = m.checkpoint.as_mut()
                && c.is_relative()
            {
                *c = base.join(&*c);
            }
        }
        for t in &mut self.tables {
            if t.path.get_ref().is_relative() {
                let span = t.path.span();
                t.path = Spanned::new(span, base.join(t.path.get_ref()));
            }
        }
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            Diagnostics(vec![Diagnostic::at_offset(
                path,
                text,
                offset,
                e.message().trim().to_string(),
            )])
        })?;
        let diags = config.validate(path, text);
        if diags.is_empty() {
            Ok(config)
        } else {
            Err(Diagnostics(diags))
        }
    }

    /// Checks what serde cannot: at least one source, unique names, valid
    /// schemas. `path` and `text` are the file the config came from, for
    /// positions.
    pub fn validate(&self, path: &Path, text: &str) -> Vec<Diagnostic> {
        let config = self;
        let mut diags = Vec::new();
        if config.sources.is_empty() {
            diags.push(Diagnostic::new(
                path,
                1,
                1,
                "no [[sources]]: declare at least one input stream",
            ));
        }
        for (key, why) in config.kafka.check_properties() {
            // librdkafka knows nothing of positions: find the key's line
            // in the file (quoted or bare), else point at the top.
            let offset = [format!("\"{key}\""), key.clone()]
                .iter()
                .find_map(|k| text.find(k.as_str()))
                .unwrap_or(0);
            diags.push(Diagnostic::at_offset(
                path,
                text,
                offset,
                format!("[kafka.properties] `{key}`: librdkafka refuses it: {why}"),
            ));
        }
        let mut model_names = std::collections::HashSet::new();
        let mut model_views = std::collections::HashSet::new();
        let mut blends = Vec::new();
        for m in &config.models {
            let at = |span: std::ops::Range<usize>, message: String| {
                Diagnostic::at_offset(path, text, span.start, message)
            };
            if !model_names.insert(m.name.get_ref().clone()) {
                diags.push(at(
                    m.name.span(),
                    format!("model name `{}` is used twice", m.name.get_ref()),
                ));
            }
            if !model_views.insert(m.view.get_ref().clone()) {
                diags.push(at(
                    m.view.span(),
                    format!(
                        "view `{}` is scored by two models: one model per view (its scores are the view's anomaly_score column)",
                        m.view.get_ref()
                    ),
                ));
            }
            if m.features.get_ref().is_empty() {
                diags.push(at(
                    m.features.span(),
                    format!("model `{}` reads no features", m.name.get_ref()),
                ));
            }
            match m.kinds() {
                Err(e) => diags.push(at(m.kind.span(), e)),
                Ok(kinds) if kinds.len() > 1 => blends.push((m, kinds)),
                Ok(_) => {}
            }
            if let Err(e) = m.device.parse::<telemine_model::DeviceChoice>() {
                diags.push(at(
                    m.name.span(),
                    format!("model `{}`: {e}", m.name.get_ref()),
                ));
            }
            for problem in m.problems() {
                diags.push(at(
                    m.name.span(),
                    format!("model `{}`: {problem}", m.name.get_ref()),
                ));
            }
        }
        // A blend's members save their state under names of their own:
        // no other model may have one.
        for (m, kinds) in blends {
            for kind in kinds {
                let member = telemine_detector::blend::member_name(m.name.get_ref(), kind);
                if model_names.contains(&member) {
                    diags.push(Diagnostic::at_offset(
                        path,
                        text,
                        m.name.span().start,
                        format!(
                            "model `{}`: its member `{kind}` saves its state as `{member}`, which another model is named: rename one",
                            m.name.get_ref()
                        ),
                    ));
                }
            }
        }
        for rule in &config.alerting.inhibit {
            for m in [&rule.source_matchers, &rule.target_matchers] {
                if m.get_ref().is_empty() {
                    diags.push(Diagnostic::at_offset(path, text, m.span().start,
                        "an inhibition rule needs at least one source and one target matcher (an empty list would match every alert)"));
                }
                for t in m.get_ref() {
                    if let Err(e) = telemine_types::alert::matcher::Matcher::parse(t) {
                        diags.push(Diagnostic::at_offset(
                            path,
                            text,
                            m.span().start,
                            e.to_string(),
                        ));
                    }
                }
            }
        }
        if let Some(listen) = &config.http.listen
            && listen.get_ref().parse::<std::net::SocketAddr>().is_err()
        {
            diags.push(Diagnostic::at_offset(
                path,
                text,
                listen.span().start,
                format!(
                    "[http] listen `{}` is not an address and port such as \"127.0.0.1:9464\"",
                    listen.get_ref()
                ),
            ));
        }
        if config.http.token.is_some() && config.http.token_file.is_some() {
            diags.push(Diagnostic::new(
                path,
                1,
                1,
                "[http] give `token` or `token_file`, not both",
            ));
        } else if let Err(e) = config.http.bearer_token() {
            diags.push(Diagnostic::new(path, 1, 1, e));
        }
        // Webhooks and Alertmanagers: the URL, the headers, one kind of
        // authentication, readable TLS files; reported at the entry's url.
        let http = config
            .alerting
            .webhooks
            .iter()
            .map(|w| {
                (
                    "webhook",
                    &w.url,
                    telemine_alerting::http::Target::webhook(w),
                )
            })
            .chain(config.alerting.alertmanagers.iter().map(|a| {
                (
                    "alertmanager",
                    &a.url,
                    telemine_alerting::http::Target::alertmanager(a),
                )
            }));
        for (kind, url, target) in http {
            for problem in telemine_alerting::http::problems(url.get_ref(), target) {
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    url.span().start,
                    format!("{kind}: {problem}"),
                ));
            }
        }
        for a in &config.alerting.alertmanagers {
            if a.resend_interval.is_zero() {
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    a.url.span().start,
                    "alertmanager: resend_interval must be more than 0s",
                ));
            }
        }
        if config.alerting.group_interval.is_zero() {
            diags.push(Diagnostic::new(
                path,
                1,
                1,
                "[alerting] group_interval must be more than 0s",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for t in &config.tables {
            if !names.insert(t.name.get_ref().clone()) {
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    t.name.span().start,
                    format!("table name `{}` is used twice", t.name.get_ref()),
                ));
            }
            if t.columns.get_ref().is_empty() {
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    t.columns.span().start,
                    format!("table `{}` declares no columns", t.name.get_ref()),
                ));
            }
        }
        for s in &config.sources {
            if !names.insert(s.name.get_ref().clone()) {
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    s.name.span().start,
                    format!(
                        "source name `{}` is used twice (sources and tables share one namespace)",
                        s.name.get_ref()
                    ),
                ));
            }
            if let Err(e) = s.check_topic_and_format() {
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    s.name.span().start,
                    format!("source `{}`: {e}", s.name.get_ref()),
                ));
            }
            if let Err(e) = s.schema() {
                let at = if e.contains("event_time") {
                    s.event_time.span().start
                } else {
                    s.columns.span().start
                };
                diags.push(Diagnostic::at_offset(
                    path,
                    text,
                    at,
                    format!("source `{}`: {e}", s.name.get_ref()),
                ));
            }
        }
        if config.engine.max_batch_records == 0 {
            diags.push(Diagnostic::new(
                path,
                1,
                1,
                "engine.max_batch_records must be at least 1",
            ));
        }
        diags
    }

    /// The sources with resolved schemas (validated by `parse`).
    pub fn source_defs(&self) -> Result<Vec<SourceDef>, String> {
        self.sources
            .iter()
            .map(|s| {
                Ok(SourceDef {
                    name: s.name.get_ref().clone(),
                    topic: s.topic.clone(),
                    format: s.format,
                    influx: s.influx.clone(),
                    schema: s.schema()?,
                    max_out_of_orderness: s.max_out_of_orderness,
                    idle_timeout: s.idle_timeout,
                    allowed_lateness: s.allowed_lateness,
                    dedupe_by: s.dedupe_by.clone(),
                    key: s.key.clone(),
                    limits: s.limits(&self.clock),
                    derived: None,
                })
            })
            .collect()
    }
}

/// Kafka's rule for topic names (letters, digits, `.`, `_`, `-`; 1 to 249
/// characters), and no regular expression: librdkafka subscribes by
/// pattern to a name starting with `^`, and telemine routes records by
/// their exact topic, so a pattern would consume nothing it could route.
fn check_topic_name(topic: &str) -> Result<(), String> {
    if topic.starts_with('^') {
        return Err(format!(
            "topic `{topic}` is a regular expression: telemine reads topics named in full \
             (records are routed to a source by their exact topic, and a source's state is \
             kept per partition of one topic); set `topic` to one topic's name, one [[sources]] \
             per topic"
        ));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err(format!(
            "topic `{topic}` is not a Kafka topic name (1 to 249 characters, not `.` or `..`)"
        ));
    }
    if let Some(c) = topic.chars().find(|c| !legal(*c)) {
        return Err(format!(
            "topic `{topic}` is not a Kafka topic name: `{c}` is not allowed (letters, digits, \
             `.`, `_` and `-` only; regular expressions are not supported)"
        ));
    }
    Ok(())
}

impl SourceConfig {
    /// The decoders' bounds, on `clock`.
    fn limits(&self, clock: &Clock) -> Limits {
        let bytes = |b: bytesize::ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
        Limits {
            max_message_bytes: bytes(self.max_message_bytes),
            max_depth: self.max_depth,
            max_field_bytes: bytes(self.max_field_bytes),
            non_finite: self.non_finite,
            max_future_skew: self.max_future_skew,
            clock: clock.clone(),
        }
    }

    /// The topic is one Kafka topic named in full, and the JSON-only keys
    /// are not set on a line-protocol source.
    fn check_topic_and_format(&self) -> Result<(), String> {
        if self.topics.is_some() {
            return Err(
                "`topics` (a list) is not supported: a source reads one topic, \
                 because its watermarks, checkpoints and the alerting clock are kept per \
                 partition number and two topics' partitions would collide; declare one \
                 [[sources]] per topic (same columns) and UNION ALL them in SQL"
                    .into(),
            );
        }
        check_topic_name(&self.topic)?;
        if self.format == Format::Influx {
            if self.timestamp_unit.is_some() {
                return Err("timestamp_unit applies to json and collectd sources; \
                     line protocol's timestamps are set by influx.precision"
                    .into());
            }
            if !self.paths.is_empty() {
                return Err(
                    "paths apply to json and collectd sources, not to line protocol".into(),
                );
            }
        }
        Ok(())
    }

    fn schema(&self) -> Result<SourceSchema, String> {
        let unit = self.timestamp_unit.unwrap_or(match self.format {
            Format::Collectd => TimestampUnit::S,
            _ => TimestampUnit::Ms,
        });
        let mut schema =
            SourceSchema::new(self.columns.get_ref().clone(), self.event_time.get_ref())
                .map_err(|e| e.to_string())?
                .with_time_unit(unit);
        for (column, p) in &self.paths {
            schema = schema.with_path(column, p).map_err(|e| e.to_string())?;
        }
        for (what, cols) in [("dedupe_by", &self.dedupe_by), ("key", &self.key)] {
            for c in cols {
                if !schema.columns().iter().any(|d| &d.name == c) {
                    return Err(format!(
                        "{what} column `{c}` is not one of the declared columns"
                    ));
                }
            }
        }
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The streaming core's tests build sources without the config
    /// (`SourceDef::new`): its defaults are the ones documented here.
    #[test]
    fn a_source_built_without_the_config_has_the_configs_defaults() {
        assert_eq!(
            default_out_of_orderness(),
            SourceDef::DEFAULT_MAX_OUT_OF_ORDERNESS
        );
        assert_eq!(default_idle_timeout(), SourceDef::DEFAULT_IDLE_TIMEOUT);
    }

    const MINIMAL: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[[sources]]
name = "telemetry"
topic = "telemetry"
columns = ["ts timestamp", "host string", "cpu double"]
event_time = "ts"
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(c.kafka.group_id, "telemine");
        assert_eq!(c.sinks.alerts_topic, "telemine.alerts");
        assert_eq!(c.sources[0].max_out_of_orderness, Duration::from_secs(5));
        assert_eq!(c.source_defs().unwrap()[0].schema.event_time_name(), "ts");
    }

    #[test]
    fn alertmanagers_and_webhooks_take_auth_headers_and_tls() {
        let text = format!(
            r#"{MINIMAL}
[[alerting.alertmanagers]]
url = "http://127.0.0.1:9093"
resend_interval = "30s"
queue_size = 500
max_retries = 1
backoff = "1s"
timeout = "5s"
basic_auth = {{ username = "telemine", password = "s3cret" }}
headers = {{ "X-Scope-OrgID" = "team-a" }}
tls = {{ insecure_skip_verify = true }}

[[alerting.webhooks]]
url = "https://oncall:8443/hook"
queue_size = 10
bearer_token = "t0k3n"
"#
        );
        let c = Config::parse(Path::new("t.toml"), &text).expect("valid");
        let a = &c.alerting.alertmanagers[0];
        assert_eq!(a.resend_interval, Duration::from_secs(30));
        assert_eq!(a.queue_size, 500);
        assert_eq!(
            a.basic_auth.as_ref().map(|b| b.password.0.as_str()),
            Some("s3cret")
        );
        assert!(a.tls.insecure_skip_verify);
        assert_eq!(c.alerting.webhooks[0].queue_size, 10);
        let shown = format!("{c:?}");
        for secret in ["s3cret", "t0k3n", "team-a"] {
            assert!(!shown.contains(secret), "{secret} shown by Debug");
        }
        // Refusals, at the entry's url line.
        let bad = format!(
            r#"{MINIMAL}
[[alerting.alertmanagers]]
url = "127.0.0.1:9093"
bearer_token = "a"
bearer_token_file = "/run/secrets/am"
resend_interval = "0s"
tls = {{ ca_file = "/nonexistent/ca.pem" }}
headers = {{ "bad header" = "x" }}
"#
        );
        let e = Config::parse(Path::new("t.toml"), &bad)
            .unwrap_err()
            .to_string();
        for want in [
            "t.toml:12:7: alertmanager: url",
            "alertmanager: url `127.0.0.1:9093` must start with http:// or https://",
            "alertmanager: set at most one of `bearer_token`, `bearer_token_file` and `basic_auth`",
            "alertmanager: resend_interval must be more than 0s",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        let bad = format!(
            "{MINIMAL}\n[[alerting.webhooks]]\nurl = \"http://x\"\ntls = {{ ca_file = \"/nonexistent/ca.pem\" }}\nheaders = {{ \"bad header\" = \"x\" }}\n"
        );
        let e = Config::parse(Path::new("t.toml"), &bad)
            .unwrap_err()
            .to_string();
        for want in [
            "webhook: tls.ca_file /nonexistent/ca.pem",
            "webhook: headers: `bad header` is not a valid header name",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        let unknown = format!(
            "{MINIMAL}\n[[alerting.alertmanagers]]\nurl = \"http://x\"\npassword = \"p\"\n"
        );
        assert!(Config::parse(Path::new("t.toml"), &unknown).is_err());
    }

    #[test]
    fn unbounded_detector_settings_are_refused_with_the_model_named() {
        let text = format!(
            "{MINIMAL}\n[[models]]\nname = \"m\"\nview = \"v\"\nfeatures = [\"cpu\"]\n\
             past_windows = 5000\nrank_history = 1000000\nspread_floor = -1.0\nkind = \"profile\"\n\
             range_rank_windows = 100001\nnormal_share = 1.0\n"
        );
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        for want in [
            "model `m`: past_windows = 5000: at most 1000",
            "model `m`: rank_history = 1000000: at most 100000",
            "model `m`: spread_floor = -1: a positive number",
            "model `m`: the profile detector reads the view's features as they are",
            "model `m`: range_rank_windows = 100001: at most 100000",
            "model `m`: normal_share = 1: at least 0, below 1",
        ] {
            assert!(e.contains(want), "{want} in {e}");
        }
        assert!(e.starts_with("t.toml:12:"), "at the model's name: {e}");
    }

    #[test]
    fn unknown_key_is_reported_with_its_position() {
        let text = MINIMAL.replace(
            "topic = \"telemetry\"",
            "topic = \"telemetry\"\nwatermark = \"5s\"",
        );
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.toml:8:1: unknown field `watermark`"),
            "{e}"
        );
    }

    #[test]
    fn bad_event_time_points_at_its_key() {
        let text = MINIMAL.replace("event_time = \"ts\"", "event_time = \"host\"");
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.toml:9:14: source `telemetry`: event_time column `host` must be declared as `timestamp`"), "{e}");
    }

    #[test]
    fn bad_column_type_points_at_it() {
        let text = MINIMAL.replace("\"cpu double\"", "\"cpu decimal\"");
        let e = Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:8:") && e.contains("unknown column type `decimal`"),
            "{e}"
        );
    }

    fn source_error(replace: &str, with: &str) -> String {
        let text = MINIMAL.replace(replace, with);
        Config::parse(Path::new("t.toml"), &text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn regex_topics_and_topic_lists_are_refused_with_the_reason() {
        let e = source_error("topic = \"telemetry\"", "topic = \"^telemetry-.*\"");
        assert!(
            e.starts_with(
                "t.toml:6:8: source `telemetry`: topic `^telemetry-.*` is a regular expression"
            ),
            "{e}"
        );
        let e = source_error("topic = \"telemetry\"", "topic = \"telemetry-*\"");
        assert!(e.contains("`*` is not allowed"), "{e}");
        let e = source_error(
            "topic = \"telemetry\"",
            "topic = \"a\"\ntopics = [\"a\", \"b\"]",
        );
        assert!(e.contains("`topics` (a list) is not supported"), "{e}");
        assert!(e.contains("one [[sources]] per topic"), "{e}");
    }

    #[test]
    fn timestamp_unit_and_paths_reach_the_schema() {
        let text = MINIMAL.replace(
            "event_time = \"ts\"",
            "event_time = \"ts\"\ntimestamp_unit = \"s\"\n[sources.paths]\nhost = \"meta.host\"\ncpu = \"values[0]\"",
        );
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        let schema = &c.source_defs().unwrap()[0].schema;
        assert_eq!(schema.time_unit(), TimestampUnit::S);
        assert_eq!(schema.path(1).map(|p| p.as_str()), Some("meta.host"));
        assert_eq!(schema.path(2).map(|p| p.as_str()), Some("values[0]"));
        // Defaults: "ms" for json (what it read before), "s" for collectd.
        let c = Config::parse(Path::new("t.toml"), MINIMAL).unwrap();
        assert_eq!(
            c.source_defs().unwrap()[0].schema.time_unit(),
            TimestampUnit::Ms
        );
        let collectd = MINIMAL.replace("event_time", "format = \"collectd\"\nevent_time");
        let c = Config::parse(Path::new("t.toml"), &collectd).unwrap();
        assert_eq!(
            c.source_defs().unwrap()[0].schema.time_unit(),
            TimestampUnit::S
        );
        let e = source_error(
            "event_time = \"ts\"",
            "event_time = \"ts\"\ntimestamp_unit = \"minutes\"",
        );
        assert!(e.contains("unknown variant `minutes`"), "{e}");
        let e = source_error(
            "event_time = \"ts\"",
            "event_time = \"ts\"\n[sources.paths]\nnope = \"a.b\"",
        );
        assert!(
            e.contains("paths: column `nope` is not one of the declared columns"),
            "{e}"
        );
        let e = source_error(
            "event_time = \"ts\"",
            "event_time = \"ts\"\n[sources.paths]\nhost = \"a[x]\"",
        );
        assert!(e.contains("paths.host: path `a[x]`"), "{e}");
        let e = source_error(
            "event_time = \"ts\"",
            "event_time = \"ts\"\nformat = \"influx\"\ntimestamp_unit = \"s\"",
        );
        assert!(e.contains("influx.precision"), "{e}");
    }
}
