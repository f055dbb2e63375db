//! telemine's Alertmanager sender against a real Alertmanager (Debian's
//! `prometheus-alertmanager`), configured from `[[alerting.alertmanagers]]`
//! as `telemine run` reads it: alerts from the alerter's lifecycle reach
//! Alertmanager, which routes them to its webhook receiver (a server in
//! this test) with telemine's labels; an Alertmanager silence mutes a
//! matching alert while a control alert still notifies; a resolution
//! reaches the receiver as resolved.
//!
//! That test drives the alerter and the sender directly. A second one
//! runs the whole pipeline on the real broker (as `telemine run` does) with
//! a local server standing in for Alertmanager's API, to show the pipeline
//! feeds the sender.
//!
//! Skipped, with a message, when `prometheus-alertmanager` is not
//! installed, unless `TELEMINE_REQUIRE_PEERS=1` (the pipeline test: when
//! no broker is named, unless `TELEMINE_REQUIRE_BROKER=1`).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use telemine::config::Config;
use telemine_alerting::alertmanager::{Alertmanagers, system_clock};
use telemine_alerting::{Alerter, Evaluation};
use telemine_observe::metrics::Metrics;
use telemine_types::alert::rule::Timing;
use telemine_types::alert::{ALERT_SCHEMA, Alert, fingerprint};

/// Bound on every wait for something that must come.
const PATIENCE: Duration = Duration::from_secs(60);

/// Event time of the test's evaluations: 2026-01-01T00:00:00Z (fixed; the
/// sender caps what Alertmanager reads at the wall clock).
const T0: i64 = 1_767_225_600_000;
const MIN: i64 = 60_000;

/// The binary, or `None` (with a message) to skip.
fn alertmanager_binary() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus-alertmanager"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var("TELEMINE_REQUIRE_PEERS").is_ok_and(|v| v == "1") => {
            panic!(
                "TELEMINE_REQUIRE_PEERS=1 but prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
            )
        }
        None => {
            eprintln!(
                "skipped: prometheus-alertmanager is not installed (apt-get install prometheus-alertmanager)"
            );
            None
        }
    }
}

/// A running Alertmanager, stopped (by its PID) when dropped.
struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn start_alertmanager(binary: &Path, dir: &Path, hook: &str) -> Running {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, host]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: {hook}\n        send_resolved: true\n"
        ),
    )
    .expect("write alertmanager.yml");
    let port = free_port();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("alertmanager.log")).expect("log file"),
        ))
        .spawn()
        .expect("start prometheus-alertmanager");
    let running = Running {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let end = Instant::now() + PATIENCE;
    loop {
        let ready = ureq::get(format!("{}/-/ready", running.url))
            .call()
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return running;
        }
        assert!(
            Instant::now() < end,
            "Alertmanager not ready; its log: {}",
            std::fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The webhook receiver Alertmanager notifies: every payload, parsed.
fn receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(&stream);
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let mut stream = &stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            if let Ok(v) = serde_json::from_slice(&body)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// Rule `DiskFull`'s row for `host`, in the window ending at `at`.
fn row(host: &str, at: i64) -> Alert {
    let labels: BTreeMap<String, String> = [
        ("alertname", "DiskFull"),
        ("severity", "critical"),
        ("host", host),
        ("dc", "fra1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Alert {
        schema: ALERT_SCHEMA.into(),
        status: "firing".into(),
        rule: "DiskFull".into(),
        severity: "critical".into(),
        fingerprint: fingerprint(&labels),
        labels,
        annotations: [("summary".to_string(), format!("disk full on {host}"))].into(),
        values: serde_json::Map::new(),
        window_start: String::new(),
        window_end: String::new(),
        window_end_ms: at,
        window_start_ms: at - MIN,
    }
}

fn eval(at: i64) -> Evaluation {
    Evaluation {
        rule: "DiskFull".into(),
        timing: Timing::default(),
        at,
    }
}

/// Waits for a notification whose alerts include `host` with `status`;
/// returns it and every notification seen before it.
fn wait_for(
    rx: &mpsc::Receiver<serde_json::Value>,
    host: &str,
    status: &str,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    let end = Instant::now() + PATIENCE;
    let mut before = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let n = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {status} notification for {host}; got {before:?}"));
        let hit = n["alerts"].as_array().is_some_and(|alerts| {
            alerts
                .iter()
                .any(|a| a["labels"]["host"] == host && a["status"] == status)
        });
        if hit {
            return (n, before);
        }
        before.push(n);
    }
}

fn hosts(notifications: &[serde_json::Value]) -> Vec<String> {
    notifications
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["labels"]["host"].as_str().map(String::from))
        .collect()
}

/// Alertmanager's view of `host`'s alert: its state ("active",
/// "suppressed", …), if it has it.
fn state_of(am: &str, host: &str) -> Option<String> {
    let body = ureq::get(format!("{am}/api/v2/alerts"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
    let alerts: serde_json::Value = serde_json::from_str(&body).ok()?;
    alerts.as_array()?.iter().find_map(|a| {
        (a["labels"]["host"] == host).then(|| a["status"]["state"].as_str().map(String::from))?
    })
}

#[test]
fn alerts_reach_alertmanager_which_routes_and_silences_them() {
    let Some(binary) = alertmanager_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (hook, notifications) = receiver();
    let am = start_alertmanager(&binary, dir.path(), &hook);

    // The sender as `telemine run` starts it, from the product's config.
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:9092"

[[sources]]
name = "telemetry"
topic = "telemetry"
columns = ["ts timestamp", "host string", "disk double"]
event_time = "ts"

[alerting]
external_url = "http://telemine.test:9898"

[[alerting.alertmanagers]]
url = "{}"
resend_interval = "1m"
timeout = "5s"
"#,
        am.url
    );
    let config = Config::parse(Path::new("telemine.toml"), &text).expect("config");
    let metrics = Arc::new(Metrics::default());
    let sender = Alertmanagers::start(
        &config.alerting.alertmanagers,
        &config.alerting.external_url,
        metrics.clone(),
        system_clock(),
    )
    .expect("one Alertmanager");
    let mut alerter = Alerter::new(&config.alerting);
    alerter.record_states();
    let mut step = |at: i64, rows: Vec<Alert>| {
        alerter.step(vec![eval(at)], rows, Some(at));
        sender.update(&alerter.take_states());
    };

    // h1 fires: Alertmanager notifies its receiver, with our labels.
    step(T0 + MIN, vec![row("h1", T0 + MIN)]);
    let (n, _) = wait_for(&notifications, "h1", "firing");
    let a = &n["alerts"][0];
    assert_eq!(a["labels"]["alertname"], "DiskFull");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["dc"], "fra1");
    assert_eq!(a["annotations"]["summary"], "disk full on h1");
    assert_eq!(
        a["generatorURL"],
        "http://telemine.test:9898/rules/DiskFull"
    );
    assert_eq!(a["startsAt"], "2026-01-01T00:01:00Z");

    // An Alertmanager silence on host h2.
    let now = chrono::Utc::now();
    let silence = serde_json::json!({
        "matchers": [{"name": "host", "value": "h2", "isRegex": false, "isEqual": true}],
        "startsAt": now.to_rfc3339(),
        "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "telemine-test",
        "comment": "h2 disk swap",
    });
    let created = ureq::post(format!("{}/api/v2/silences", am.url))
        .header("content-type", "application/json")
        .send(silence.to_string())
        .expect("POST /api/v2/silences");
    assert_eq!(created.status(), 200);

    // h2 (silenced) and h3 (the control) fire together, h1 still firing.
    step(
        T0 + 2 * MIN,
        vec![
            row("h1", T0 + 2 * MIN),
            row("h2", T0 + 2 * MIN),
            row("h3", T0 + 2 * MIN),
        ],
    );
    let (_, before) = wait_for(&notifications, "h3", "firing");
    // Alertmanager holds h2, muted by the silence.
    let end = Instant::now() + PATIENCE;
    while state_of(&am.url, "h2").as_deref() != Some("suppressed") {
        assert!(
            Instant::now() < end,
            "h2 not suppressed: {:?}",
            state_of(&am.url, "h2")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(state_of(&am.url, "h3").as_deref(), Some("active"));

    // h1 resolves (no row at 3m): the receiver gets it resolved. Nothing
    // about h2 ever came, though its group waited as long as h3's.
    step(
        T0 + 3 * MIN,
        vec![row("h2", T0 + 3 * MIN), row("h3", T0 + 3 * MIN)],
    );
    let (resolved, between) = wait_for(&notifications, "h1", "resolved");
    assert_eq!(resolved["alerts"][0]["endsAt"], "2026-01-01T00:03:00Z");
    let seen = hosts(&[before, between].concat());
    assert!(!seen.contains(&"h2".to_string()), "h2 notified: {seen:?}");
    while let Ok(n) = notifications.try_recv() {
        assert!(
            !hosts(std::slice::from_ref(&n)).contains(&"h2".to_string()),
            "h2 notified: {n}"
        );
    }
    sender.finish();
    assert!(Metrics::get(&metrics.alertmanager_deliveries) >= 3);
    assert_eq!(Metrics::get(&metrics.alertmanager_failures), 0);
}

/// The pipeline (`run_pipeline`, as under `telemine run`) sends the
/// alerts' state to `[[alerting.alertmanagers]]`: h2's saturated CPU
/// reaches it, last as resolved. (The backlog is read far faster than
/// the sender posts, so the sender's table may coalesce h2's firing into
/// its resolution: Alertmanager needs only the newest state.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_sends_alert_state_to_alertmanagers() {
    use support::setup::{SATURATED, Setup};
    let Some(s) = Setup::new("alertmanager").await else {
        return;
    };
    let (hook, posts) = receiver();
    let am = hook.trim_end_matches("/hook");
    let text = format!(
        "{}\n[[alerting.alertmanagers]]\nurl = \"{am}\"\n",
        s.config_text
    );
    support::broker::produce(
        &s.brokers,
        &s.topic("telemetry"),
        &support::telemetry(0, 300, SATURATED),
    )
    .await;
    let run = s.run_text_to_end(&text).await;
    assert!(run.notifications > 0);
    // The run ends after the senders sent what changed last.
    let sent: Vec<serde_json::Value> = posts
        .try_iter()
        .flat_map(|p| p.as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["host"] == "h2" && a["labels"]["alertname"] == "HostCpuSaturated")
        .collect();
    assert!(!sent.is_empty(), "h2's alert was sent");
    let ms = |a: &serde_json::Value, key: &str| {
        telemine_types::alert::parse_ms(a[key].as_str().unwrap_or("")).expect("RFC 3339")
    };
    // Resolved: its end is its resolution (or now, whichever is earlier),
    // never a firing lease of 4 minutes past its start.
    let last = &sent[sent.len() - 1];
    assert!(
        ms(last, "endsAt") - ms(last, "startsAt") < 4 * MIN,
        "last sent as resolved: {sent:?}"
    );
    assert_eq!(last["labels"]["severity"], "warning");
    assert!(
        last["generatorURL"]
            .as_str()
            .is_some_and(|u| u.ends_with("/rules/HostCpuSaturated")),
        "{last}"
    );
}
