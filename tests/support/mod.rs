//! Helpers shared by the integration tests: fixture telemetry with known
//! anomalies, and a real-broker handle.

#![allow(dead_code)]

pub mod broker;
pub mod peers;
pub mod setup;

use std::path::{Path, PathBuf};

use telemine_types::alert::Alert;

/// 2026-11-27T00:00:00Z.
pub const T0: i64 = 1_795_737_600_000;
pub const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];

/// Where host `h2`'s CPU is saturated: minute → CPU for the first and the
/// second half of that minute.
pub type Anomalies = &'static [(i64, f64, f64)];

/// One JSON telemetry record.
pub fn record(t_ms: i64, host: &str, cpu: f64, jitter: i64) -> String {
    format!(
        r#"{{"ts":{t_ms},"dc":"fra1","rack":"fra1-r01","host":"{host}","cpu":{cpu},"mem":40,"temp_c":25.0,"power_w":300,"fan_rpm":{},"latency_ms":5.0}}"#,
        4000 + jitter * 10
    )
}

/// Telemetry for `HOSTS`, one record per host per second over event seconds
/// `[from_s, to_s)`, with h2's CPU following `anomalies`; keyed by host.
pub fn telemetry(from_s: i64, to_s: i64, anomalies: Anomalies) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in from_s..to_s {
        for (i, h) in HOSTS.iter().enumerate() {
            let minute = s / 60;
            let mut cpu = 30.0 + (s % 5) as f64;
            if *h == "h2"
                && let Some(&(_, first, second)) = anomalies.iter().find(|a| a.0 == minute)
            {
                cpu = if s % 60 < 30 { first } else { second };
            }
            out.push((
                h.to_string(),
                record(T0 + s * 1000, h, cpu, (s + i as i64) % 7),
            ));
        }
    }
    out
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A config for the project's default SQL, with the given brokers, group
/// and topic prefix.
pub fn config_text(brokers: &str, group: &str, prefix: &str, sql: &Path) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{brokers}"
group_id = "{group}"

[[sources]]
name = "telemetry"
topic = "{prefix}.telemetry"
columns = ["ts timestamp", "dc string", "rack string", "host string", "cpu double", "mem double",
           "temp_c double", "power_w double", "fan_rpm double", "latency_ms double"]
event_time = "ts"
max_out_of_orderness = "5s"
idle_timeout = "2s"

[[sources]]
name = "market"
topic = "{prefix}.market"
columns = ["ts timestamp", "symbol string", "price double", "volume double", "bid double", "ask double"]
event_time = "ts"

[sinks]
alerts_topic = "{prefix}.alerts"
rows_topic = "{prefix}.rows"
late_topic = "{prefix}.late"
dead_letter_topic = "{prefix}.dead-letter"

[alerting]
silences_topic = "{prefix}.silences"
state_topic = "{prefix}.alert-state"

[sql]
dir = "{}"

[engine]
batch_linger = "20ms"
commit_interval = "200ms"
"#,
        sql.display()
    ) + if sql.join("rules/host_behaviour_anomaly.sql").exists() {
        // The default SQL's model rule reads this model's score. It never
        // finishes warming up here, so these tests' alerts are the
        // threshold rules' alone (tests/demo.rs covers the model).
        r#"
[[models]]
name = "host_behaviour"
view = "host_1m"
features = ["cpu_avg", "power_avg", "temp_avg", "fan_avg", "lat_avg"]
kind = "pca"
warmup_windows = 1000000
device = "cpu"
"#
    } else {
        ""
    }
}

/// A config from its text, with its SQL folder loaded.
pub async fn load_config(text: &str) -> (telemine::config::Config, telemine_sql::SqlSet) {
    let config =
        telemine::config::Config::parse(Path::new("test.toml"), text).expect("test config");
    let sql = telemine_sql::SqlSet::load(
        &config.sql.dir,
        &config.source_defs().expect("sources"),
        &config.sql_options(),
    )
    .await
    .expect("the test's SQL");
    (config, sql)
}

/// A name unique to this test run.
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("test.{name}.{}.{nanos}", std::process::id())
}

/// Alerts as (rule, host label, minute of the window since `T0`), sorted:
/// what the fixtures' expectations are written in.
pub fn summary(alerts: &[Alert]) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> = alerts
        .iter()
        .map(|a| {
            (
                a.rule.clone(),
                a.labels.get("host").cloned().unwrap_or_default(),
                (a.window_start_ms - T0) / 60_000,
            )
        })
        .collect();
    v.sort();
    v
}

/// The problems `docs/alertmanager-webhook-v4.schema.json` finds in a
/// message of the alerts topic.
pub fn payload_schema_errors(message: &[u8]) -> Vec<String> {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docs/alertmanager-webhook-v4.schema.json"))
            .expect("the schema file"),
    )
    .expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema is a JSON Schema");
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(message) else {
        return vec!["not JSON".into()];
    };
    validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Runs `command` (the `telemine` binary, as a test set it up), asserts
/// that it succeeded, showing its stderr if not, and returns its stdout.
pub fn stdout_of(command: &mut std::process::Command) -> String {
    let out = command.output().expect("run telemine");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A SQL folder under `dir` holding `files` of the project's SQL
/// (`features/host_1m.sql`, …).
#[allow(dead_code)]
pub fn sql_with(dir: &Path, files: &[&str]) -> std::path::PathBuf {
    let sql = dir.join("sql");
    for sub in ["features", "rules"] {
        std::fs::create_dir_all(sql.join(sub)).expect("sql dir");
    }
    for file in files {
        std::fs::copy(repo().join("sql").join(file), sql.join(file)).expect("copy SQL");
    }
    sql
}

/// A model on `host_1m` trained inline (scores that do not depend on
/// timing), as a `[[models]]` section.
#[allow(dead_code)]
pub fn inline_model(past_windows: u32, warmup_windows: u32, retrain_windows: u32) -> String {
    format!(
        r#"
[[models]]
name = "host_behaviour"
view = "host_1m"
features = ["cpu_avg", "power_avg", "temp_avg", "fan_avg", "lat_avg"]
kind = "pca"
device = "cpu"
training = "inline"
past_windows = {past_windows}
warmup_windows = {warmup_windows}
retrain_windows = {retrain_windows}
score = "likelihood"
range_margin = 0.02
refractory_windows = 3
"#
    )
}

/// A copy of the project's SQL folder under `dir`, to add files to.
pub fn copy_default_sql(dir: &Path) -> std::path::PathBuf {
    let sql = dir.join("sql");
    for sub in ["features", "rules"] {
        std::fs::create_dir_all(sql.join(sub)).expect("sql dir");
        for f in std::fs::read_dir(repo().join("sql").join(sub)).expect("default SQL") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, sql.join(sub).join(f.file_name().expect("name"))).expect("copy");
        }
    }
    sql
}

/// The engine's log lines in the test's output (`RUST_LOG`, default
/// `info`), shown when a test fails: what an in-process run did is what a
/// failure needs explained.
#[allow(dead_code)]
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,librdkafka=warn".into()),
        )
        .with_test_writer()
        .try_init();
}
