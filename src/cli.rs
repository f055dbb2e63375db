//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "telemine",
    version,
    about = "Streaming mining engine for data-center telemetry and market streams on Kafka"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run against the broker named in the config until SIGINT/SIGTERM.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Zero set-up demo: embedded Kafka (librdkafka's mock cluster),
    /// synthetic telemetry and market data with injected anomalies, the
    /// default SQL; prints alerts as JSON lines and a score on stderr.
    Demo {
        /// Wall-clock seconds to generate data for.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Event-time seconds generated per wall-clock second.
        #[arg(long, default_value_t = 60)]
        speed: u64,
        /// Config whose sources, sinks and engine settings the demo uses
        /// (its [kafka] section is replaced by the embedded cluster).
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        /// SQL folder (default: the config's).
        #[arg(long)]
        sql: Option<PathBuf>,
        /// Seed of the generator.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Where the models score: cpu, cuda (a `--features cuda` build on
        /// an NVIDIA GPU) or auto. Default: each model's `device`.
        #[arg(long)]
        device: Option<String>,
    },
    /// Validate the config and every SQL file without a broker; prints
    /// file:line:col: message for each problem and exits 1 if any.
    Check {
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        /// SQL folder (default: the config's).
        #[arg(long)]
        sql: Option<PathBuf>,
    },
    /// Run rule test files: input records, the SQL under test and the
    /// alerts expected; prints a diff for each failure and exits 1.
    Test {
        /// A test file or a folder of them (default: `tests/` in the
        /// config's SQL folder, i.e. sql/tests).
        path: Option<PathBuf>,
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
    },
    /// Run the SQL over recorded data (JSONL, CSV or Parquet) without a
    /// broker and print the alerts it would have raised, one JSON line each.
    DryRun {
        #[command(flatten)]
        options: DryRunOptions,
    },
    /// Train the configured models on recorded data (JSONL, CSV or
    /// Parquet), through the same feature views `run` computes, and write
    /// their checkpoints (NAME.json + NAME.safetensors).
    Train {
        #[command(flatten)]
        recorded: Recorded,
        /// Train only this model (default: every one in the config).
        #[arg(long)]
        model: Option<String>,
        /// Where to write the checkpoint (with one model). Default: the
        /// model's `checkpoint`, else models/NAME.json.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Passes over the training rows (networks).
        #[arg(long, default_value_t = 40)]
        epochs: usize,
        /// cpu, cuda or auto.
        #[arg(long, default_value = "auto")]
        device: String,
    },
    /// Detection quality on labelled data: NAB's layout (NAB score under
    /// its three profiles, results CSV per series) or ASD's (point-wise and
    /// point-adjusted precision, recall, F1, ROC AUC, explanations).
    Eval {
        /// The corpus folder, e.g. ../shared/data/nab or ../shared/data/asd.
        #[arg(long, required_unless_present = "fleet", conflicts_with = "fleet")]
        data: Option<PathBuf>,
        /// Instead of a corpus: this much event time of the generated
        /// fleet (the demo's data, e.g. "24h") through --config's SQL,
        /// models and rules, every rule through the alert lifecycle; prints
        /// the notifications per rule and host-day and how the models'
        /// scores are calibrated.
        #[arg(long)]
        fleet: Option<String>,
        /// --fleet: inject the demo's anomalies (one every three minutes)
        /// and print precision and recall per detection path; without it
        /// the fleet is normal and every notification is a false one.
        #[arg(long, requires = "fleet")]
        anomalies: bool,
        /// --fleet: the config whose sources, SQL and models run.
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        /// --fleet: the generator's seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// autoencoder, sequence, pca, kmeans, nearest, profile or all;
        /// several separated by commas; a blend joined by + (nearest+kmeans).
        #[arg(long, default_value = "all")]
        detector: String,
        /// Where NAB results files go (OUT/<detector>/<category>/…).
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Passes over the training rows (networks).
        #[arg(long, default_value_t = 30)]
        epochs: usize,
        /// Also choose among the detectors and their scoring variants
        /// (NAB), with the threshold, by cross-validation across the
        /// corpus' groups (NAB: leave one category out; ASD: servers left
        /// out two or three at a time) and print that held-out figure.
        /// Each detector as shipped is always cross-validated over its
        /// threshold alone.
        #[arg(long)]
        cv: bool,
    },
    /// Silences: label matchers and a time range during which matching
    /// alerts are not notified, kept in the compacted silences topic.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Measure the engine against a bare consumer on a real broker.
    Bench {
        /// Bootstrap servers of the broker to benchmark on.
        #[arg(long)]
        brokers: String,
        /// Telemetry records to produce and consume.
        #[arg(long, default_value_t = 5_000_000)]
        records: u64,
        /// Partitions of the benchmark topic.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        /// Rounds on the warm topic, each a bare consumer and the engine
        /// with and without its models, in alternating order.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        pairs: u64,
        /// Write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Compare with figures an earlier run wrote with --json (e.g.
        /// benches/results/bench.json).
        #[arg(long)]
        compare: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Create a silence; prints its id.
    Add {
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        /// A label matcher: name=value, name!=value, name=~regex or
        /// name!~regex. Repeat for several (all must match).
        #[arg(long = "matcher", short = 'm', required = true)]
        matchers: Vec<String>,
        /// When it starts (RFC 3339). Default: now.
        #[arg(long)]
        start: Option<String>,
        /// How long it lasts, e.g. 2h.
        #[arg(long, conflicts_with = "end")]
        duration: Option<String>,
        /// When it ends (RFC 3339).
        #[arg(long)]
        end: Option<String>,
        /// Who asked for it. Default: $USER.
        #[arg(long)]
        created_by: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        clock: SilenceClock,
    },
    /// Print the silences not yet ended (with --all, every one).
    List {
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        clock: SilenceClock,
    },
    /// End a silence now.
    Expire {
        #[arg(long, default_value = "config/telemine.toml")]
        config: PathBuf,
        /// Its id, as `add` printed it.
        id: String,
        #[command(flatten)]
        clock: SilenceClock,
    },
}

/// What `telemine silence` takes as now.
#[derive(Debug, clap::Args)]
pub struct SilenceClock {
    /// The time taken as now (RFC 3339): where a silence added without
    /// --start begins, what `list` calls active or expired, when `expire`
    /// ends one. Silences apply on event time, so a replay of recorded
    /// data (or a test) passes the data's time. Default: the wall clock.
    #[arg(long)]
    pub now: Option<String>,
}

/// `dry-run`: recorded data through the config's SQL and models.
#[derive(Debug, clap::Args)]
pub struct DryRunOptions {
    #[command(flatten)]
    pub recorded: Recorded,
    /// Also write every row the models scored to this CSV
    /// (view,key,window_start,window_end,anomaly_score,anomaly_features).
    #[arg(long)]
    pub scores: Option<PathBuf>,
}

/// Recorded data run through the config's SQL (`dry-run`, `train`).
#[derive(Debug, clap::Args)]
pub struct Recorded {
    /// The recorded data; the format follows the extension (.jsonl, .csv,
    /// .parquet; anything else is read as one record per line).
    #[arg(long)]
    pub input: PathBuf,
    /// The source the records belong to (needed when the config declares
    /// several).
    #[arg(long)]
    pub source: Option<String>,
    #[arg(long, default_value = "config/telemine.toml")]
    pub config: PathBuf,
    /// SQL folder (default: the config's).
    #[arg(long)]
    pub sql: Option<PathBuf>,
}
