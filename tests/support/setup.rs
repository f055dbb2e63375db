//! A test's own topics, group and config on the real broker, and
//! `telemine run` child processes: what the broker test binaries share.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::broker::*;
use super::*;
use telemine::runtime::{RunOptions, RunSummary, Stop, run_pipeline};
use telemine_connectors::kafka::{KafkaClientConfig, create_topics};
use telemine_types::alert::Alert;

pub const SATURATED: Anomalies = &[(1, 95.0, 95.0), (3, 95.0, 84.0)];
pub const TELEMETRY_PARTITIONS: i32 = 3;

/// A test's topics under `prefix`: telemetry with `telemetry_partitions`
/// partitions, market, rows, dead letters, late records, and `extra`
/// (suffix, partitions).
pub async fn test_topics(
    brokers: &str,
    prefix: &str,
    telemetry_partitions: i32,
    extra: &[(&str, i32)],
) {
    let client = KafkaClientConfig::new(brokers.to_string());
    let mut topics = vec![
        (format!("{prefix}.telemetry"), telemetry_partitions),
        (format!("{prefix}.market"), 1),
        (format!("{prefix}.rows"), 3),
        (format!("{prefix}.dead-letter"), 1),
        (format!("{prefix}.late"), 1),
    ];
    topics.extend(extra.iter().map(|(t, p)| (format!("{prefix}.{t}"), *p)));
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    create_topics(&client, &refs)
        .await
        .expect("create test topics");
}

pub struct Setup {
    pub brokers: String,
    pub prefix: String,
    pub group: String,
    pub config_text: String,
}

impl Setup {
    pub async fn new(name: &str) -> Option<Setup> {
        let brokers = brokers()?;
        let prefix = unique(name);
        let group = format!("{prefix}.group");
        test_topics(&brokers, &prefix, TELEMETRY_PARTITIONS, &[("alerts", 3)]).await;
        let config_text = config_text(&brokers, &group, &prefix, &repo().join("sql"));
        Some(Setup {
            brokers,
            prefix,
            group,
            config_text,
        })
    }

    /// The setup's config written to `dir/telemine.toml`, for `telemine
    /// run` child processes.
    pub fn config_file(&self, dir: &std::path::Path) -> PathBuf {
        self.config_file_edited(dir, |text| text.to_string())
    }

    /// The setup's config, changed by `edit`, written to
    /// `dir/telemine.toml`.
    pub fn config_file_edited(
        &self,
        dir: &std::path::Path,
        edit: impl Fn(&str) -> String,
    ) -> PathBuf {
        let config = dir.join("telemine.toml");
        std::fs::write(&config, edit(&self.config_text)).expect("write config");
        config
    }

    pub fn topic(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    pub async fn run_to_end(&self) -> RunSummary {
        self.run_text_to_end(&self.config_text).await
    }

    pub async fn run_text_to_end(&self, config_text: &str) -> RunSummary {
        self.run_text_to_end_with(config_text, Default::default())
            .await
    }

    /// [`Setup::run_to_end`], counting into `metrics`.
    #[allow(dead_code)]
    pub async fn run_to_end_counting(
        &self,
        metrics: std::sync::Arc<telemine_observe::metrics::Metrics>,
    ) -> RunSummary {
        self.run_text_to_end_with(&self.config_text, Some(metrics))
            .await
    }

    async fn run_text_to_end_with(
        &self,
        config_text: &str,
        metrics: Option<std::sync::Arc<telemine_observe::metrics::Metrics>>,
    ) -> RunSummary {
        let (config, sql) = load_config(config_text).await;
        let options = RunOptions {
            stop_at_end: true,
            metrics,
            ..Default::default()
        };
        run_pipeline(&config, sql, options, std::future::pending::<Stop>())
            .await
            .expect("pipeline run")
    }

    /// Reads the alerts topic and checks every message against the
    /// webhook payload schema; returns how many there were.
    pub fn valid_notifications(&self, min: usize) -> usize {
        let messages = read_topic(
            &self.brokers,
            &self.topic("alerts"),
            3,
            min,
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        for m in &messages {
            assert_eq!(
                payload_schema_errors(&m.payload),
                Vec::<String>::new(),
                "{}",
                String::from_utf8_lossy(&m.payload)
            );
        }
        messages.len()
    }

    /// The rule rows (one per alert instance and window) on the rows topic.
    pub fn alerts(&self, expected: usize) -> Vec<Alert> {
        read_topic(
            &self.brokers,
            &self.topic("rows"),
            3,
            expected,
            Duration::from_secs(2),
            Duration::from_secs(60),
        )
        .into_iter()
        .map(|m| {
            let a = Alert::from_json(&m.payload).expect("alert JSON");
            assert_eq!(
                m.key.as_deref(),
                Some(a.fingerprint.as_bytes()),
                "alerts are keyed by fingerprint"
            );
            a
        })
        .collect()
    }
}

/// One alert per (fingerprint, window): what at-least-once delivery
/// leaves once its repeats are set aside.
pub fn distinct(alerts: &[Alert]) -> Vec<Alert> {
    let mut distinct = alerts.to_vec();
    distinct
        .sort_by(|a, b| (&a.fingerprint, &a.window_start).cmp(&(&b.fingerprint, &b.window_start)));
    distinct
        .dedup_by(|a, b| (&a.fingerprint, &a.window_start) == (&b.fingerprint, &b.window_start));
    distinct
}

pub fn expected() -> Vec<(String, String, i64)> {
    vec![
        ("HostCpuSaturated".into(), "h2".into(), 1),
        ("HostCpuSaturated".into(), "h2".into(), 3),
    ]
}

/// A `telemine run` child process.
pub struct Engine {
    pub child: Child,
}

impl Engine {
    pub fn start(config: &PathBuf) -> Engine {
        let child = Command::new(env!("CARGO_BIN_EXE_telemine"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("start telemine run");
        Engine { child }
    }

    pub fn sigterm_and_wait(mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() >= deadline {
                dump_threads(self.child.id());
                panic!("telemine did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Prints every thread's stack of a process that did not stop (gdb, when
/// installed), so that a hang in CI says where it was.
fn dump_threads(pid: u32) {
    let out = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    match out {
        Ok(o) => eprintln!("threads of {pid}:\n{}", String::from_utf8_lossy(&o.stdout)),
        Err(e) => eprintln!("no thread dump of {pid} (gdb: {e})"),
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Waits until the group has committed `n` records of the telemetry topic
/// in all (the rows of every window closed so far).
pub fn wait_committed(s: &Setup, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sum: i64 = committed(
            &s.brokers,
            &s.group,
            &s.topic("telemetry"),
            TELEMETRY_PARTITIONS,
        )
        .iter()
        .filter_map(|(_, o, _)| *o)
        .sum();
        if sum >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {sum} of {n} records committed after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
