//! A model scores a feature view and rules read its scores: online training
//! after a warm-up, then `anomaly_score` and `anomaly_features` on every
//! row, through `telemine dry-run` (no broker).

mod support;

use std::path::Path;
use std::process::Command;

use support::T0;

/// 8 hosts, one record a second for 50 minutes. Network traffic follows
/// CPU (×2) and memory follows it by half; host h3's network drops to
/// nothing for one minute from 00:40 while its CPU carries on.
fn records() -> String {
    let mut out = String::new();
    let mut state = 11u64;
    let mut noise = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f64 / (1u64 << 24) as f64) - 0.5
    };
    for s in 0..3000i64 {
        for h in 0..8 {
            let cpu = 50.0 + 30.0 * ((s as f64) / 97.0 + h as f64).sin() + 2.0 * noise();
            let mem = 20.0 + 0.5 * cpu + noise();
            let mut net = 2.0 * cpu + 2.0 * noise();
            if h == 3 && (2400..2460).contains(&s) {
                net = 1.0;
            }
            let ts = chrono::DateTime::from_timestamp_millis(T0 + s * 1000)
                .unwrap()
                .to_rfc3339();
            out.push_str(&format!(
                "{{\"ts\":\"{ts}\",\"host\":\"h{h}\",\"cpu\":{cpu:.3},\"mem\":{mem:.3},\"net\":{net:.3}}}\n"
            ));
        }
    }
    out
}

fn write(dir: &Path, kind: &str) {
    std::fs::create_dir_all(dir.join("sql/features")).unwrap();
    std::fs::create_dir_all(dir.join("sql/rules")).unwrap();
    std::fs::write(
        dir.join("telemine.toml"),
        format!(
            r#"
[kafka]
bootstrap_servers = "none"

[[sources]]
name = "telemetry"
topic = "telemetry"
columns = ["ts timestamp", "host string", "cpu double", "mem double", "net double"]
event_time = "ts"
max_out_of_orderness = "0s"

[sql]
dir = "sql"

[[models]]
name = "host_behaviour"
view = "host_10s"
features = ["cpu_avg", "mem_avg", "net_avg"]
kind = "{kind}"
warmup_windows = 150
retrain_windows = 0
score = "calibrated"
device = "cpu"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("sql/features/host_10s.sql"),
        "SELECT host, window_start, window_end, avg(cpu) AS cpu_avg, avg(mem) AS mem_avg, avg(net) AS net_avg\n\
         FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds')\n\
         GROUP BY host, window_start, window_end\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("sql/rules/unusual_host.sql"),
        "-- @severity: warning\n\
         SELECT host, window_start, window_end, anomaly_score, anomaly_features\n\
         FROM host_10s WHERE anomaly_score > 0.999\n",
    )
    .unwrap();
    std::fs::write(dir.join("records.jsonl"), records()).unwrap();
}

fn alerts(kind: &str) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), kind);
    dry_run(
        &dir.path().join("telemine.toml"),
        &dir.path().join("records.jsonl"),
    )
}

/// `telemine dry-run`'s alerts.
fn dry_run(config: &Path, input: &Path) -> Vec<serde_json::Value> {
    support::stdout_of(
        Command::new(env!("CARGO_BIN_EXE_telemine"))
            .args(["dry-run", "--config"])
            .arg(config)
            .arg("--input")
            .arg(input),
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("alert JSON"))
    .collect()
}

fn check(kind: &str) {
    let alerts = alerts(kind);
    let broken: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| {
            a["labels"]["host"] == "h3"
                && a["window_start"].as_str().unwrap_or("") >= "2026-11-27T00:40:00"
                && a["window_start"].as_str().unwrap_or("") < "2026-11-27T00:41:00"
        })
        .collect();
    assert!(
        broken.len() >= 5,
        "{kind}: {} of the 6 broken windows alerted: {alerts:#?}",
        broken.len()
    );
    for a in &broken {
        let features = a["values"]["anomaly_features"].as_str().unwrap_or("");
        assert!(
            features.starts_with("net_avg"),
            "{kind}: explained by {features}"
        );
    }
    let false_alarms = alerts.len() - broken.len();
    assert!(
        false_alarms <= 3,
        "{kind}: {false_alarms} alerts outside the broken minute: {alerts:#?}"
    );
}

#[test]
fn an_autoencoder_trained_online_flags_the_broken_host() {
    check("autoencoder");
}

#[test]
fn a_pca_baseline_flags_it_too() {
    check("pca");
}

#[test]
fn check_refuses_a_model_whose_features_the_view_lacks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "autoencoder");
    let config = dir.path().join("telemine.toml");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"net_avg\"]", "\"net_p99\"]");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_telemine"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("run telemine");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("model `host_behaviour`") && stderr.contains("no column `net_p99`"),
        "{stderr}"
    );
}

#[test]
fn train_writes_a_checkpoint_that_scores_from_the_first_row() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "autoencoder");
    // Train on the first 30 minutes (all normal).
    let normal: String = records()
        .lines()
        .take(30 * 60 * 8)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.path().join("normal.jsonl"), normal).unwrap();
    let config = dir.path().join("telemine.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_telemine"))
        .args(["train", "--device", "cpu", "--config"])
        .arg(&config)
        .arg("--input")
        .arg(dir.path().join("normal.jsonl"))
        .arg("--out")
        .arg(dir.path().join("models/host_behaviour.json"))
        .output()
        .expect("run telemine");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("model `host_behaviour` (autoencoder)"),
        "{stderr}"
    );
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("models/host_behaviour.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        sidecar["features"],
        serde_json::json!(["cpu_avg", "mem_avg", "net_avg"])
    );
    assert_eq!(
        sidecar["normalization"]["mean"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(sidecar["calibration"]["threshold"].as_f64().is_some());
    assert_eq!(
        sidecar["training"]["data_hash"].as_str().map(str::len),
        Some(32)
    );
    assert!(
        dir.path()
            .join("models/host_behaviour.safetensors")
            .exists()
    );
    // With the checkpoint there is no warm-up: a config that would
    // otherwise wait 10,000 windows scores at once.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "warmup_windows = 150",
        "warmup_windows = 10000\ncheckpoint = \"models/host_behaviour.json\"",
    );
    std::fs::write(&config, text).unwrap();
    let alerts = dry_run(&config, &dir.path().join("records.jsonl"));
    let broken = alerts
        .iter()
        .filter(|a| {
            a["labels"]["host"] == "h3"
                && a["window_start"]
                    .as_str()
                    .is_some_and(|w| w.starts_with("2026-11-27T00:40"))
        })
        .count();
    assert!(broken >= 5, "{broken} broken windows alerted: {alerts:#?}");
    assert!(alerts.len() - broken <= 3, "{alerts:#?}");
}

#[test]
fn online_training_runs_in_the_background_and_the_model_is_swapped_in() {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
    };
    use datafusion::arrow::datatypes::{Float64Type, Schema};
    use telemine_detector::Detector;
    use telemine_sql::{SqlSet, ViewScorer};

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "autoencoder");
    let path = dir.path().join("telemine.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("warmup_windows = 150", "warmup_windows = 5");
    std::fs::write(&path, text).unwrap();
    let config = telemine::config::Config::load(&path).unwrap();
    let defs = config.source_defs().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let sql = runtime
        .block_on(SqlSet::load(&config.sql.dir, &defs, &config.sql_options()))
        .unwrap();
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    // What the view's SQL outputs: its schema without the score columns.
    let fields = view.output_schema.fields();
    let sql_schema = Arc::new(Schema::new(fields[..fields.len() - 2].to_vec()));
    let window = |w: i64| {
        let hosts: Vec<String> = (0..8).map(|h| format!("h{h}")).collect();
        let cpu: Vec<f64> = (0..8)
            .map(|h| 50.0 + 30.0 * ((w as f64) / 9.7 + h as f64).sin())
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(hosts)),
            Arc::new(TimestampMillisecondArray::from(vec![T0 + w * 10_000; 8])),
            Arc::new(TimestampMillisecondArray::from(vec![
                T0 + (w + 1) * 10_000;
                8
            ])),
            Arc::new(Float64Array::from(cpu.clone())),
            Arc::new(Float64Array::from(
                cpu.iter().map(|c| 20.0 + 0.5 * c).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(
                cpu.iter().map(|c| 2.0 * c).collect::<Vec<_>>(),
            )),
        ];
        RecordBatch::try_new(sql_schema.clone(), columns).unwrap()
    };
    let scorer = Detector::new(config.models[0].settings().unwrap(), true).unwrap();
    let scored = |b: &RecordBatch| {
        let out = scorer.score(view, vec![b.clone()]).unwrap();
        let s = out[0]
            .column(out[0].num_columns() - 2)
            .as_primitive::<Float64Type>()
            .clone();
        s.len() - s.null_count()
    };
    for w in 0..5 {
        assert_eq!(scored(&window(w)), 0, "window {w} is still warm-up");
    }
    // The sixth window starts training on a thread of its own; scoring
    // goes on (NULL) until the model is swapped in.
    let started = std::time::Instant::now();
    let mut w = 5;
    loop {
        if scored(&window(w)) == 8 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "no model after {w} windows"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        w += 1;
    }
}
