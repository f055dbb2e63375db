//! The streaming detector across a restart, against the real broker: its
//! per-series state and its model trained online are saved with the
//! commits of the alerting owner, which scores (`crates/stream/src/deferred.rs`), and
//! restored when an owner gains the relay, so a `telemine run` stopped
//! mid-stream and started again scores every window exactly as a run that
//! never stopped — no second warm-up, no repeated alarm.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use support::broker::*;
use support::setup::*;
use support::*;

/// Four hosts, one record a second for `[from_s, to_s)`, each host's CPU
/// on a slow wave of its own and power following it; h3's power breaks
/// away from its CPU in minutes 14 and 15.
fn records(from_s: i64, to_s: i64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in from_s..to_s {
        for (i, h) in HOSTS.iter().enumerate() {
            let cpu = 40.0 + 15.0 * ((s as f64) / 170.0 + i as f64).sin() + (s % 3) as f64;
            let mut power = 180.0 + 2.2 * cpu;
            if *h == "h3" && (840..960).contains(&s) {
                power += 60.0;
            }
            let ts = T0 + s * 1000;
            out.push((
                h.to_string(),
                format!(
                    r#"{{"ts":{ts},"dc":"fra1","rack":"fra1-r01","host":"{h}","cpu":{cpu:.3},"mem":40,"temp_c":{:.3},"power_w":{power:.3},"fan_rpm":{:.1},"latency_ms":{:.3}}}"#,
                    25.0 + 0.08 * cpu,
                    4500.0 + (s % 7) as f64,
                    4.0 + 0.02 * cpu
                ),
            ));
        }
    }
    out
}

/// The default feature view, a rule that reports every scored row, and a
/// model that trains inline (scores that do not depend on timing).
fn config(s: &Setup, dir: &Path) -> std::path::PathBuf {
    let sql = dir.join("sql");
    std::fs::create_dir_all(sql.join("features")).unwrap();
    std::fs::create_dir_all(sql.join("rules")).unwrap();
    std::fs::copy(
        repo().join("sql/features/host_1m.sql"),
        sql.join("features/host_1m.sql"),
    )
    .unwrap();
    std::fs::write(
        sql.join("rules/every_score.sql"),
        "-- Every row the model scored, with its score.\n\
         SELECT dc, rack, host, window_start, window_end, anomaly_score, anomaly_features\n\
         FROM host_1m WHERE anomaly_score IS NOT NULL\n",
    )
    .unwrap();
    let text = config_text(&s.brokers, &s.group, &s.prefix, &sql) + &inline_model(3, 4, 5);
    let path = dir.join("telemine.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Every scored row on the rows topic: (host, window start) → score, and
/// how many rows repeat one already read (at-least-once replays).
fn scores(s: &Setup, min: usize) -> (BTreeMap<(String, String), serde_json::Value>, usize) {
    let mut out = BTreeMap::new();
    let mut repeats = 0;
    for a in s.alerts(min) {
        let key = (a.labels["host"].clone(), a.window_start.clone());
        let score = a.values["anomaly_score"].clone();
        if let Some(before) = out.insert(key.clone(), score.clone()) {
            repeats += 1;
            assert_eq!(before, score, "{key:?} scored twice, differently");
        }
    }
    (out, repeats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_stream_scores_as_an_uninterrupted_run() {
    let Some(whole) = Setup::new("detector-whole").await else {
        return;
    };
    let Some(restarted) = Setup::new("detector-restart").await else {
        return;
    };
    let all = records(0, 1200);
    let (dir_whole, dir_restart) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    // Uninterrupted: the whole stream, to its end.
    produce(&whole.brokers, &whole.topic("telemetry"), &all).await;
    let text = std::fs::read_to_string(config(&whole, dir_whole.path())).unwrap();
    whole.run_text_to_end(&text).await;
    // Windows 0–3 warm up, then every host's every window is scored.
    let (expected, _) = scores(&whole, 4 * 16);
    assert!(expected.len() >= 4 * 16, "{} rows scored", expected.len());

    // Interrupted: the first 10 minutes, SIGTERM once minute 8 is
    // committed, then the rest and a restart.
    let path = config(&restarted, dir_restart.path());
    produce(
        &restarted.brokers,
        &restarted.topic("telemetry"),
        &records(0, 600),
    )
    .await;
    let first = Engine::start(&path);
    wait_committed(&restarted, 9 * 60 * HOSTS.len() as i64);
    // The alerting owner has scored windows 4 to 7 of every host.
    let before = scores(&restarted, 4 * HOSTS.len()).0.len();
    let status = first.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    // It saved its detector's state when it stopped.
    let state = read_topic(
        &restarted.brokers,
        &restarted.topic("alert-state"),
        1,
        1,
        Duration::from_secs(2),
        Duration::from_secs(20),
    );
    let key = format!("{}/detector/host_behaviour", restarted.group);
    assert!(
        state
            .iter()
            .any(|m| m.key.as_deref() == Some(key.as_bytes()) && !m.payload.is_empty()),
        "the detector's state is saved under {key}"
    );
    produce(
        &restarted.brokers,
        &restarted.topic("telemetry"),
        &records(600, 1200),
    )
    .await;
    let second = Engine::start(&path);
    // Every window but the last (nothing later closes it) is scored.
    wait_committed(&restarted, 19 * 60 * HOSTS.len() as i64);
    let (got, repeats) = scores(&restarted, expected.len() - HOSTS.len());
    let status = second.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");

    let mut after_restart = 0;
    for (key, score) in &got {
        assert_eq!(
            Some(score),
            expected.get(key),
            "{key:?}: the restarted run scores it otherwise"
        );
        if key.1.as_str() >= "2026-11-27T00:10:00" {
            after_restart += 1;
        }
    }
    assert!(
        after_restart >= 4 * 9,
        "{after_restart} rows scored after the restart"
    );
    // The broken relation was found (in both runs alike).
    let h3: Vec<f64> = got
        .iter()
        .filter(|((h, t), _)| {
            h == "h3" && t.as_str() >= "2026-11-27T00:14:00" && t.as_str() < "2026-11-27T00:16:00"
        })
        .filter_map(|(_, s)| s.as_f64())
        .collect();
    assert!(
        h3.iter().any(|&s| s > 0.5),
        "h3's power break scores high: {h3:?}"
    );
    println!(
        "{before} rows scored before the stop; {} rows scored by the restarted run, {after_restart} after the restart, all equal to the uninterrupted run's; {repeats} repeated by at-least-once delivery, with the same score",
        got.len()
    );
}
