//! Integration tests against a real Apache Kafka broker (started by
//! `scripts/test.sh`). Each test uses topics and groups of its own.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use support::broker::*;
use support::setup::*;
use support::*;
use telemine::runtime::{RunOptions, Stop, run_pipeline};
use telemine_connectors::kafka::{KafkaClientConfig, create_topics};
use telemine_stream::Checkpoint;

/// Producers that compress (zstd is Kafka's recommended codec, and what
/// many clusters' producers are set to) are read like any other:
/// librdkafka is built with zstd, lz4, gzip and snappy. The stream is
/// written in four parts, one per codec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_written_with_zstd_lz4_gzip_or_snappy_are_read_and_alert() {
    let Some(s) = Setup::new("codecs").await else {
        return;
    };
    let records = telemetry(0, 300, SATURATED);
    let quarter = records.len().div_ceil(4);
    for (part, codec) in records
        .chunks(quarter)
        .zip(["zstd", "lz4", "gzip", "snappy"])
    {
        produce_with(
            &s.brokers,
            &s.topic("telemetry"),
            part,
            &[("compression.type", codec)],
        )
        .await;
    }
    let run = s.run_to_end().await;
    assert_eq!(
        run.records,
        300 * 4,
        "every record read, whatever its codec"
    );
    assert_eq!(run.dead_letters, 0);
    assert_eq!(run.alerts, 2, "alerts produced");
    assert_eq!(summary(&s.alerts(2)), expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_anomaly_yields_exactly_its_alerts_and_offsets_are_committed() {
    let Some(s) = Setup::new("alerts").await else {
        return;
    };
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 300, SATURATED),
    )
    .await;

    let run = s.run_to_end().await;
    assert_eq!(run.records, 300 * 4);
    assert_eq!(run.alerts, 2, "alerts produced");
    assert_eq!(run.dead_letters, 0);

    let alerts = s.alerts(2);
    assert_eq!(summary(&alerts), expected());
    assert_eq!(alerts[0].labels["alertname"], "HostCpuSaturated");
    assert_eq!(alerts[0].labels["severity"], "warning");
    assert_eq!(
        s.valid_notifications(run.notifications as usize),
        run.notifications as usize
    );

    let ends = ends(&s.brokers, &s.topic("telemetry"), TELEMETRY_PARTITIONS);
    for (p, offset, metadata) in committed(
        &s.brokers,
        &s.group,
        &s.topic("telemetry"),
        TELEMETRY_PARTITIONS,
    ) {
        if ends[p as usize] == 0 {
            continue;
        }
        assert_eq!(
            offset,
            Some(ends[p as usize]),
            "partition {p} committed to its end"
        );
        let checkpoint = Checkpoint::decode(&metadata).expect("checkpoint metadata");
        assert_eq!(checkpoint.closed["host_1m"], T0 + 300_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_go_to_the_dead_letter_topic_and_the_rest_still_alert() {
    let Some(s) = Setup::new("dlq").await else {
        return;
    };
    let mut records = telemetry(0, 300, SATURATED);
    let bad = [
        (
            "h1",
            r#"{"ts": 1795737700000, "host": "h1", "cpu": 1"#.to_string(),
            "invalid JSON",
        ),
        (
            "h2",
            record(T0 + 100_500, "h2", 0.0, 0).replace("\"cpu\":0", "\"cpu\":\"hot\""),
            "wrong type",
        ),
        (
            "h3",
            r#"{"dc":"fra1","rack":"fra1-r01","host":"h3","cpu":50}"#.to_string(),
            "missing event time",
        ),
        // Epoch seconds on a source whose timestamp_unit is "ms" (the
        // default): once silently dated 1970.
        (
            "h4",
            record(T0 / 1000 + 200, "h4", 0.0, 0),
            "event time 1795737800 looks like epoch seconds",
        ),
    ];
    for (i, (k, v, _)) in bad.iter().enumerate() {
        records.insert(400 + i * 100, (k.to_string(), v.clone()));
    }
    let positions = produce(&s.brokers, &s.topic("telemetry"), &records).await;

    let metrics = std::sync::Arc::new(telemine_observe::metrics::Metrics::default());
    let run = s.run_to_end_counting(metrics.clone()).await;
    assert_eq!(run.dead_letters, 4);
    // Counted per source and kind (and told in one log line, not four).
    let exposition = metrics.exposition();
    assert!(
        exposition.contains(r#"telemine_source_errors_total{kind="decode",source="telemetry"} 4"#),
        "{exposition}"
    );
    assert_eq!(summary(&s.alerts(2)), expected());
    assert!(s.valid_notifications(1) >= 1);

    let dead = read_topic(
        &s.brokers,
        &s.topic("dead-letter"),
        1,
        4,
        Duration::from_secs(1),
        Duration::from_secs(30),
    );
    assert_eq!(dead.len(), 4);
    for (i, (_, payload, reason)) in bad.iter().enumerate() {
        let (partition, offset) = positions[400 + i * 100];
        let m = dead
            .iter()
            .find(|m| m.payload == payload.as_bytes())
            .expect("dead letter with the original payload");
        assert!(
            m.headers["telemine.error"].starts_with(reason),
            "{:?}",
            m.headers
        );
        assert_eq!(m.headers["telemine.source.topic"], s.topic("telemetry"));
        assert_eq!(
            m.headers["telemine.source.partition"],
            partition.to_string()
        );
        assert_eq!(m.headers["telemine.source.offset"], offset.to_string());
    }

    // A record from minute 0 after every window up to 5:00 was emitted (and
    // committed): late, by 4:59.
    let late_record = [("h1".to_string(), record(T0 + 1_000, "h1", 99.0, 0))];
    let (partition, offset) = produce(&s.brokers, &s.topic("telemetry"), &late_record).await[0];
    let again = s.run_to_end().await;
    assert_eq!((again.records, again.late, again.alerts), (1, 1, 0));
    let late = read_topic(
        &s.brokers,
        &s.topic("late"),
        1,
        1,
        Duration::from_secs(1),
        Duration::from_secs(30),
    );
    assert_eq!(late.len(), 1, "the late record is on the late topic");
    let row: serde_json::Value =
        serde_json::from_slice(&late[0].payload).expect("late row as JSON");
    assert_eq!(row["host"], "h1");
    assert_eq!(row["cpu"], 99.0);
    assert!(
        late[0].headers["telemine.lateness_ms"]
            .parse::<i64>()
            .expect("lateness")
            > 0
    );
    assert_eq!(
        late[0].headers["telemine.source.partition"],
        partition.to_string()
    );
    assert_eq!(
        late[0].headers["telemine.source.offset"],
        offset.to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_then_restart_loses_no_window_and_doubles_no_alert() {
    let Some(s) = Setup::new("restart").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = s.config_file(dir.path());

    // First half: up to 3:30 of event time; minute 3's anomaly needs both
    // halves of the minute to fire (95% then 84%).
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 210, SATURATED),
    )
    .await;
    let first = Engine::start(&config);
    let seen = s.alerts(1);
    assert_eq!(summary(&seen), expected()[..1]);
    // Let it read the rest of the first half, so minute 3 is open and
    // half-full when the signal arrives.
    std::thread::sleep(Duration::from_secs(2));
    let status = first.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");

    // Second half, then a restart.
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(210, 400, SATURATED),
    )
    .await;
    let second = Engine::start(&config);
    let alerts = s.alerts(2);
    std::thread::sleep(Duration::from_secs(2));
    let status = second.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");

    let alerts = {
        let again = s.alerts(alerts.len());
        assert!(again.len() >= alerts.len());
        again
    };
    assert_eq!(
        summary(&alerts),
        expected(),
        "every expected alert, nothing else"
    );
    let mut seen = HashSet::new();
    for a in &alerts {
        assert!(
            seen.insert((a.fingerprint.clone(), a.window_start.clone())),
            "duplicate alert {a:?}"
        );
    }
    // Whatever reached the alerts topic is a valid payload (what it
    // holds across a restart is pinned by the test after next).
    s.valid_notifications(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_edits_are_reloaded_without_a_restart_and_broken_ones_refused() {
    let Some(s) = Setup::new("reload").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sql = copy_default_sql(dir.path());
    let config = dir.path().join("telemine.toml");
    // Records arrive in three bursts with pauses between: a partition
    // whose next burst is slow to be fetched on a loaded machine must not
    // count as idle (2 s let another partition close minute 3 without
    // h1's rows: the test's flake).
    let text = config_text(&s.brokers, &s.group, &s.prefix, &sql).replacen(
        "idle_timeout = \"2s\"",
        "idle_timeout = \"10s\"",
        1,
    );
    std::fs::write(&config, text).expect("config");

    // Normal load: no default rule fires. Minutes 0 and 1 close under the
    // default SQL (their 480 records committed); minute 2 is open.
    produce(&s.brokers, &s.topic("telemetry"), &telemetry(0, 130, &[])).await;
    let engine = Engine::start(&config);
    wait_committed(&s, 480);

    // A new rule, picked up by the file watcher: it fires for h1 in every
    // window that closes from now on (minutes 2 and 3), not before.
    std::fs::write(
        sql.join("rules/host_busy.sql"),
        "-- @name: HostBusy\nSELECT dc, rack, host, window_start, window_end, cpu_avg\nFROM host_1m WHERE host = 'h1' AND cpu_avg > 20\n",
    )
    .expect("new rule");
    std::thread::sleep(Duration::from_secs(3));
    produce(&s.brokers, &s.topic("telemetry"), &telemetry(130, 250, &[])).await;
    let alerts = s.alerts(2);
    assert_eq!(
        summary(&alerts),
        [
            ("HostBusy".into(), "h1".into(), 2),
            ("HostBusy".into(), "h1".into(), 3)
        ]
    );

    // A broken file, and SIGHUP: refused; the running rules keep going.
    std::fs::write(sql.join("rules/broken.sql"), "SELECT host FROM nowhere\n").expect("broken");
    let ok = Command::new("kill")
        .args(["-HUP", &engine.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(ok.success());
    std::thread::sleep(Duration::from_secs(3));
    produce(&s.brokers, &s.topic("telemetry"), &telemetry(250, 370, &[])).await;
    let alerts = s.alerts(4);
    assert_eq!(
        summary(&alerts),
        [
            ("HostBusy".into(), "h1".into(), 2),
            ("HostBusy".into(), "h1".into(), 3),
            ("HostBusy".into(), "h1".into(), 4),
            ("HostBusy".into(), "h1".into(), 5)
        ]
    );
    let status = engine.sigterm_and_wait();
    assert!(
        status.success(),
        "still running and exits cleanly, got {status}"
    );
    assert!(s.valid_notifications(1) >= 1, "HostBusy was notified");
}

/// h2 runs hot for minutes 1–3.
const HOT: Anomalies = &[(1, 95.0, 95.0), (2, 95.0, 95.0), (3, 95.0, 95.0)];

/// The config of the notification tests: the project's SQL plus
/// `HostCpuHot` (`@for: 1m`; h2 while hot, h4 all along), groups by
/// alert name looked at every second.
fn hot_hosts_config(s: &Setup, dir: &std::path::Path) -> String {
    let sql = copy_default_sql(dir);
    std::fs::write(
        sql.join("rules/host_cpu_hot.sql"),
        "-- @name: HostCpuHot\n-- @for: 1m\n-- @label.team: compute\n-- @summary: {{ $labels.host }} CPU at {{ $values.cpu_avg }}%\n-- @runbook_url: https://runbooks.example/cpu\nSELECT dc, rack, host, window_start, window_end, cpu_avg\nFROM host_1m WHERE cpu_avg > 85 OR host = 'h4'\n",
    )
    .expect("rule");
    config_text(&s.brokers, &s.group, &s.prefix, &sql).replace(
        "[alerting]\n",
        "[alerting]\ngroup_by = [\"alertname\"]\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\nrepeat_interval = \"1h\"\n",
    )
}

/// The alerts topic as one line per alert in each notification, by group
/// (`status host alert-status startsAt..endsAt-year summary`), after
/// checking each message against the schema and its key.
fn notifications_by_group(s: &Setup, n: usize) -> std::collections::BTreeMap<String, Vec<String>> {
    let messages = read_topic(
        &s.brokers,
        &s.topic("alerts"),
        3,
        n,
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    assert_eq!(messages.len(), n);
    let mut by_group: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for m in &messages {
        assert_eq!(payload_schema_errors(&m.payload), Vec::<String>::new());
        let p: serde_json::Value = serde_json::from_slice(&m.payload).expect("payload");
        assert_eq!(
            m.key.as_deref(),
            p["groupKey"].as_str().map(str::as_bytes),
            "keyed by group"
        );
        for a in p["alerts"].as_array().expect("alerts") {
            by_group
                .entry(p["groupKey"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(format!(
                    "{} {} {} {}..{} {}",
                    p["status"].as_str().unwrap_or_default(),
                    a["labels"]["host"].as_str().unwrap_or_default(),
                    a["status"].as_str().unwrap_or_default(),
                    &a["startsAt"].as_str().unwrap_or_default()[11..16],
                    &a["endsAt"].as_str().unwrap_or_default()[..4],
                    a["annotations"]["summary"].as_str().unwrap_or("-"),
                ));
            assert_eq!(
                a["labels"]["alertname"] == "HostCpuHot",
                a["labels"]["team"] == "compute"
            );
        }
    }
    by_group
}

fn groups(pairs: &[(&str, &[&str])]) -> std::collections::BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|l| l.to_string()).collect()))
        .collect()
}

const SATURATED_H2: &[&str] = &[
    // Fires at the close of minute 1 (00:02), resolves at 00:05: window
    // [00:04, 00:05) had no row.
    "firing h2 firing 00:02..0001 h2 CPU at 95% for a whole minute",
    "resolved h2 resolved 00:02..2026 h2 CPU at 95% for a whole minute",
];

/// A condition driven through pending → firing → resolved on the real
/// broker, read back as notifications: `@for` holds an alert pending, an
/// inhibition rule mutes exactly the alerts it matches, and every message
/// on the alerts topic is a valid webhook payload, keyed by its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_condition_goes_pending_firing_resolved_and_inhibition_mutes_only_its_targets() {
    let Some(s) = Setup::new("notify").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "{}\n[[alerting.inhibit]]\nsource_matchers = [\"alertname=HostCpuSaturated\"]\ntarget_matchers = [\"alertname=HostCpuHot\"]\nequal = [\"host\"]\n",
        hot_hosts_config(&s, dir.path())
    );
    produce(&s.brokers, &s.topic("telemetry"), &telemetry(0, 300, HOT)).await;
    let run = s.run_text_to_end(&text).await;
    assert_eq!(run.notifications, 3);
    let expected = groups(&[
        (
            // h4 pending at 00:01, firing at 00:02 (`for: 1m`), still
            // firing at the end. h2's HostCpuHot fires at 00:03 but is
            // inhibited while its HostCpuSaturated fires, and resolves
            // (00:05) without ever having been sent, so it never is.
            r#"{}:{alertname="HostCpuHot"}"#,
            &["firing h4 firing 00:02..0001 h4 CPU at 32%"],
        ),
        (r#"{}:{alertname="HostCpuSaturated"}"#, SATURATED_H2),
    ]);
    assert_eq!(notifications_by_group(&s, 3), expected);
}

/// Silences made with `telemine silence`, kept in the compacted topic:
/// one on h4 mutes h4's alert and nothing else; one expired through the
/// CLI no longer shows as active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_from_the_cli_mute_what_they_match_and_nothing_more() {
    let Some(s) = Setup::new("silence").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("telemine.toml");
    std::fs::write(&config, hot_hosts_config(&s, dir.path())).expect("config");
    // The silences' clock is the test's: the CLI takes `--now` (the
    // data's event time), never today's date.
    let now = telemine_types::alert::format_ms(T0 + 1_000);
    let cli = |args: &[&str]| {
        stdout_of(
            Command::new(env!("CARGO_BIN_EXE_telemine"))
                .arg("silence")
                .args(args)
                .arg("--config")
                .arg(&config)
                .args(["--now", now.as_str()]),
        )
        .trim()
        .to_string()
    };
    let start = telemine_types::alert::format_ms(T0);
    let h4 = cli(&[
        "add",
        "-m",
        "host=h4",
        "--start",
        &start,
        "--duration",
        "24h",
        "--comment",
        "h4 rebuild",
    ]);
    // Starts at --now (T0 + 1 s) and is expired at the same instant, so it
    // never mutes anything.
    let other = cli(&["add", "-m", "host=~h[23]", "--duration", "1h"]);
    assert_eq!((h4.len(), other.len()), (32, 32), "ids");
    let listed = cli(&["list"]);
    assert!(listed.contains(&h4) && listed.contains(&other), "{listed}");
    assert!(
        listed.contains(r#"{host="h4"}"#) && listed.contains("h4 rebuild"),
        "{listed}"
    );
    cli(&["expire", &other]);
    let listed = cli(&["list"]);
    assert!(listed.contains(&h4) && !listed.contains(&other), "{listed}");
    let all = cli(&["list", "--all"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with(&other) && l.contains("expired")),
        "{all}"
    );

    produce(&s.brokers, &s.topic("telemetry"), &telemetry(0, 300, HOT)).await;
    let text = std::fs::read_to_string(&config).expect("config");
    let run = s.run_text_to_end(&text).await;
    assert_eq!(run.notifications, 4);
    let expected = groups(&[
        (
            // h4 is silenced throughout; h2 (not inhibited in this
            // config) fires at 00:03 and resolves at 00:05.
            r#"{}:{alertname="HostCpuHot"}"#,
            &[
                "firing h2 firing 00:03..0001 h2 CPU at 95%",
                "resolved h2 resolved 00:03..2026 h2 CPU at 95%",
            ],
        ),
        (r#"{}:{alertname="HostCpuSaturated"}"#, SATURATED_H2),
    ]);
    assert_eq!(notifications_by_group(&s, 4), expected);
}

/// The alerting state is saved with each commit and restored at start: an
/// alert that fired just before SIGTERM, while its group was still
/// waiting, is notified after the restart — firing, then resolved — and
/// nothing is sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_waiting_at_sigterm_is_sent_after_the_restart() {
    let Some(s) = Setup::new("state").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = s.config_file_edited(dir.path(), |text| {
        text.replace(
            "[alerting]\n",
            "[alerting]\ngroup_wait = \"30s\"\ngroup_interval = \"1s\"\n",
        )
    });

    // Up to 2:20: minute 1 closes and h2's alert fires at 2:00; its group
    // waits until 2:30, which the watermark (2:14) has not reached.
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 140, SATURATED),
    )
    .await;
    let first = Engine::start(&config);
    wait_committed(&s, 480);
    let status = first.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");

    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(140, 400, SATURATED),
    )
    .await;
    let second = Engine::start(&config);
    let by_group = notifications_by_group(&s, 4);
    let status = second.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");
    let expected = groups(&[(
        r#"{}:{alertname="HostCpuSaturated"}"#,
        &[
            "firing h2 firing 00:02..0001 h2 CPU at 95% for a whole minute",
            "resolved h2 resolved 00:02..2026 h2 CPU at 95% for a whole minute",
            "firing h2 firing 00:04..0001 h2 CPU at 89.5% for a whole minute",
            "resolved h2 resolved 00:04..2026 h2 CPU at 89.5% for a whole minute",
        ],
    )]);
    assert_eq!(by_group, expected);
}

/// A config whose only SQL is one view (max CPU per host and minute) and
/// one rule (`Hot`: above 90), every alert in one group, notified at once.
fn storm_config(s: &Setup, dir: &std::path::Path) -> String {
    let sql = dir.join("sql");
    std::fs::create_dir_all(sql.join("features")).expect("sql dir");
    std::fs::create_dir_all(sql.join("rules")).expect("sql dir");
    std::fs::write(
        sql.join("features/host_1m.sql"),
        "SELECT host, window_start, window_end, max(cpu) AS cpu_max\nFROM TUMBLE(telemetry, ts, INTERVAL '1 minute')\nGROUP BY host, window_start, window_end\n",
    )
    .expect("view");
    std::fs::write(
        sql.join("rules/hot.sql"),
        "-- @name: Hot\n-- @summary: {{ $labels.host }} CPU at {{ $values.cpu_max }}%\nSELECT host, window_start, window_end, cpu_max FROM host_1m WHERE cpu_max > 90\n",
    )
    .expect("rule");
    config_text(&s.brokers, &s.group, &s.prefix, &sql).replace(
        "[alerting]\n",
        "[alerting]\ngroup_by = [\"alertname\"]\ngroup_wait = \"0s\"\ngroup_interval = \"1s\"\nrepeat_interval = \"1h\"\n",
    )
}

/// Every notification on the alerts topic, checked against the schema and
/// the message limit: (status, fingerprint) of each alert they carry.
fn storm_notifications(s: &Setup, min: usize) -> Vec<(String, String)> {
    let messages = read_topic(
        &s.brokers,
        &s.topic("alerts"),
        3,
        min,
        Duration::from_secs(3),
        Duration::from_secs(120),
    );
    let mut out = Vec::new();
    for m in &messages {
        assert!(m.payload.len() <= 1_000_000, "{} bytes", m.payload.len());
        assert_eq!(payload_schema_errors(&m.payload), Vec::<String>::new());
        let p: serde_json::Value = serde_json::from_slice(&m.payload).expect("payload");
        let alerts = p["alerts"].as_array().expect("alerts");
        assert!(
            alerts.len() <= 1000,
            "{} alerts in one notification",
            alerts.len()
        );
        for a in alerts {
            out.push((
                a["status"].as_str().unwrap_or_default().to_string(),
                a["fingerprint"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// An incident: 10,000 hosts fire at once in one group. Every one is
/// notified (in parts of at most `max_alerts`, each under the message
/// limit), the alerting state (megabytes) is saved in chunks, and a
/// restart restores it: the 10,000 resolutions are sent after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_hosts_alerting_at_once_are_all_notified_across_a_restart() {
    logs();
    let Some(s) = Setup::new("storm").await else {
        return;
    };
    const N: usize = 10_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let text = storm_config(&s, dir.path());
    let hosts: Vec<String> = (0..N).map(|i| format!("host-{i:05}")).collect();
    let minute = |m: i64, cpu: f64| -> Vec<(String, String)> {
        hosts
            .iter()
            .map(|h| (h.clone(), record(T0 + m * 60_000 + 5_000, h, cpu, 0)))
            .collect()
    };
    produce(&s.brokers, &s.topic("telemetry"), &minute(0, 95.0)).await;
    let first = s.run_text_to_end(&text).await;
    assert_eq!(first.alerts, N as u64);
    assert!(first.notifications >= (N / 1000) as u64, "{first:?}");
    let fired = storm_notifications(&s, first.notifications as usize);
    let firing: HashSet<&String> = fired
        .iter()
        .filter(|(st, _)| st == "firing")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(firing.len(), N, "every host notified as firing");
    // The state (one entry per alert) is far over one message: chunked.
    let state = read_topic(
        &s.brokers,
        &s.topic("alert-state"),
        1,
        2,
        Duration::from_secs(2),
        Duration::from_secs(30),
    );
    let chunks = state
        .iter()
        .filter(|m| {
            m.key
                .as_deref()
                .is_some_and(|k| k.starts_with(format!("{}/", s.group).as_bytes()))
        })
        .count();
    assert!(chunks >= 2, "the state is saved in chunks ({chunks})");

    // After a restart, the same hosts cool down: only a restored state
    // knows they were firing.
    produce(&s.brokers, &s.topic("telemetry"), &minute(1, 10.0)).await;
    let second = s.run_text_to_end(&text).await;
    assert_eq!(second.alerts, 0);
    let all = storm_notifications(&s, (first.notifications + second.notifications) as usize);
    let resolved: HashSet<&String> = all
        .iter()
        .filter(|(st, _)| st == "resolved")
        .map(|(_, f)| f)
        .collect();
    assert_eq!(
        resolved.len(),
        N,
        "every host notified as resolved after the restart"
    );
    println!(
        "storm: {N} alerts; first run {} notifications, second run {}; {} state messages",
        first.notifications,
        second.notifications,
        state.len()
    );
}

/// Records that used to crash the engine (or lock it in a crash loop),
/// on a real broker: each goes to the dead-letter topic with its reason,
/// an oversized one cut to fit with its size and digest in headers, a
/// long host name that trips a rule is cut in the alert's labels, and
/// the well-formed records still alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_pills_go_to_the_dead_letter_topic_and_the_stream_goes_on() {
    let Some(s) = Setup::new("poison").await else {
        return;
    };
    // An input topic that takes messages up to 4 MB.
    let raw = s.topic("raw");
    telemine_connectors::kafka::create_topics_with(
        &KafkaClientConfig::new(s.brokers.clone()),
        &[(raw.as_str(), 1)],
        &[("max.message.bytes", "4000000")],
    )
    .await
    .expect("raw topic");
    let text = s.config_text.replace(
        &format!("topic = \"{}\"", s.topic("telemetry")),
        &format!("topic = \"{raw}\""),
    );
    let mut records: Vec<(String, String)> = telemetry(0, 300, SATURATED);
    let big = format!("{{\"ts\": {T0}, \"blob\": \"{}", "x".repeat(1_500_000));
    let big_len = big.len().to_string();
    let deep = format!(
        "{{\"ts\":{},\"host\":\"h1\",\"x\":{}1{}}}",
        T0 + 10_000,
        "[".repeat(50_000),
        "]".repeat(50_000)
    );
    let huge_host = record(T0 + 20_000, &"h".repeat(200_000), 99.0, 0);
    let nan = record(T0 + 30_000, "h1", 0.0, 0).replace("\"cpu\":0", "\"cpu\":\"NaN\"");
    let future = record(4_102_444_800_000, "h1", 99.0, 0);
    // A 10 KB host name within the field limit that saturates its CPU for
    // minute 1: its alert's host label is cut.
    let long = "l".repeat(10_000);
    for sec in 60..120 {
        records.push((long.clone(), record(T0 + sec * 1000, &long, 95.0, 0)));
    }
    for (k, v) in [
        ("big", big),
        ("deep", deep),
        ("huge", huge_host),
        ("nan", nan),
        ("future", future),
    ] {
        records.push((k.to_string(), v));
    }
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    for (k, v) in &records {
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&raw).key(k).payload(v),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
    }
    let run = s.run_text_to_end(&text).await;
    assert_eq!(run.dead_letters, 5, "{run:?}");
    let dead = read_topic(
        &s.brokers,
        &s.topic("dead-letter"),
        1,
        5,
        Duration::from_secs(2),
        Duration::from_secs(60),
    );
    assert_eq!(dead.len(), 5);
    let reason = |needle: &str| {
        dead.iter()
            .find(|d| d.headers["telemine.error"].contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no dead letter for `{needle}`: {:?}",
                    dead.iter().map(|d| &d.headers).collect::<Vec<_>>()
                )
            })
    };
    let cut = reason("message too large");
    assert!(cut.payload.len() < 1_000_000, "{}", cut.payload.len());
    assert_eq!(cut.headers["telemine.original_size"], big_len);
    assert_eq!(cut.headers["telemine.original_xxh3"].len(), 16);
    reason("max_depth");
    reason("max_field_bytes");
    reason("non-finite value NaN");
    reason("max_future_skew");
    let alerts = s.alerts(3);
    let long_alert = alerts
        .iter()
        .find(|a| a.labels["host"].starts_with("lll"))
        .expect("the long host's alert");
    assert!(long_alert.labels["host"].len() <= telemine_types::alert::MAX_LABEL_BYTES);
    assert!(long_alert.labels["host"].ends_with(" bytes]"));
    let normal: Vec<_> = alerts
        .iter()
        .filter(|a| a.labels["host"] == "h2")
        .cloned()
        .collect();
    assert_eq!(summary(&normal), expected());
}

/// With 80 feature views a partition's checkpoint no longer fits the
/// broker's 4 KiB of commit metadata: the commit carries a ref, the
/// checkpoint itself goes to the state topic first, and a restart with
/// such metadata goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_too_large_for_commit_metadata_goes_to_the_state_topic() {
    let Some(s) = Setup::new("manyviews").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let sql = copy_default_sql(dir.path());
    for i in 0..80 {
        std::fs::write(
            sql.join(format!("features/host_extra_view_number_{i:03}.sql")),
            "SELECT host, window_start, window_end, max(cpu) AS cpu_max\nFROM TUMBLE(telemetry, ts, INTERVAL '1 minute')\nGROUP BY host, window_start, window_end\n",
        )
        .expect("view");
    }
    let text = config_text(&s.brokers, &s.group, &s.prefix, &sql);
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 300, SATURATED),
    )
    .await;
    let first = s.run_text_to_end(&text).await;
    assert_eq!(first.alerts, 2);
    let table: std::collections::BTreeMap<String, Option<Vec<u8>>> = read_topic(
        &s.brokers,
        &s.topic("alert-state"),
        1,
        1,
        Duration::from_secs(2),
        Duration::from_secs(30),
    )
    .into_iter()
    .filter_map(|m| Some((String::from_utf8(m.key?).ok()?, Some(m.payload))))
    .collect();
    let mut checked = 0;
    for (p, offset, metadata) in committed(
        &s.brokers,
        &s.group,
        &s.topic("telemetry"),
        TELEMETRY_PARTITIONS,
    ) {
        if offset.is_none() {
            continue;
        }
        assert!(
            metadata.len() <= 3072,
            "{} bytes of metadata",
            metadata.len()
        );
        let pointer = Checkpoint::decode(&metadata).expect("checkpoint metadata");
        let r = pointer.stored.expect("a ref to the stored checkpoint");
        let key = format!("{}/checkpoint/{}/{p}", s.group, s.topic("telemetry"));
        let full = telemine_stream::chunked::join(&table, &key, &r).expect("stored checkpoint");
        let full =
            Checkpoint::decode(std::str::from_utf8(&full).expect("utf-8")).expect("checkpoint");
        assert_eq!(full.closed.len(), 80 + 2, "{:?}", full.closed.keys());
        assert_eq!(full.closed["host_1m"], T0 + 300_000);
        checked += 1;
    }
    assert_eq!(checked, TELEMETRY_PARTITIONS);
    // A restart reads the ref back from the commit and goes on.
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(300, 420, &[(6, 95.0, 95.0)]),
    )
    .await;
    let second = s.run_text_to_end(&text).await;
    assert_eq!(second.alerts, 1, "{second:?}");
}

/// Three sources read from the beginning by a new group — the JSON
/// telemetry, an empty one (market) and a line-protocol one — notify
/// exactly what the telemetry alone notifies: the alerting clock waits for
/// the slowest source (and for an empty one until it is idle), so no alert
/// fires and resolves unseen because one source was read ahead. (Which
/// source the consumer reads first is the broker's choice, so this run
/// does not force the race; `alerting::tests::a_source_ahead_of_another_…`
/// does, deterministically.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sources_notify_what_one_source_notifies() {
    let (Some(alone), Some(three)) = (
        Setup::new("onesource").await,
        Setup::new("threesources").await,
    ) else {
        return;
    };
    let data = telemetry(0, 300, HOT);
    // One source: the telemetry only.
    let dir = tempfile::tempdir().expect("temp dir");
    let text = hot_hosts_config(&alone, dir.path());
    let market = text
        .find("[[sources]]\nname = \"market\"")
        .expect("market source");
    let sinks = text.find("[sinks]").expect("sinks");
    let text = format!("{}{}", &text[..market], &text[sinks..]);
    for f in ["features/market_1m.sql", "rules/price_jump.sql"] {
        std::fs::remove_file(dir.path().join("sql").join(f)).expect("market SQL");
    }
    produce(&alone.brokers, &alone.topic("telemetry"), &data).await;
    let one = alone.run_text_to_end(&text).await;

    // Three: plus the empty market source and a line-protocol source.
    let lines_topic = three.topic("lines");
    create_topics(
        &KafkaClientConfig::new(three.brokers.clone()),
        &[(lines_topic.as_str(), 1)],
    )
    .await
    .expect("lines topic");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = hot_hosts_config(&three, dir.path()).replace(
        "[sinks]",
        &format!(
            "[[sources]]\nname = \"lines\"\ntopic = \"{lines_topic}\"\nformat = \"influx\"\ncolumns = [\"ts timestamp\", \"host string\", \"temp double\"]\nevent_time = \"ts\"\nidle_timeout = \"2s\"\n\n[sinks]"
        ),
    );
    let lines: Vec<(String, String)> = (0..300)
        .flat_map(|s| {
            HOSTS.iter().map(move |h| {
                (
                    h.to_string(),
                    format!("env,host={h} temp=25.5 {}", (T0 + s * 1000) * 1_000_000),
                )
            })
        })
        .collect();
    produce(&three.brokers, &lines_topic, &lines).await;
    produce(&three.brokers, &three.topic("telemetry"), &data).await;
    let run = three.run_text_to_end(&text).await;
    assert_eq!(run.dead_letters, 0);
    assert_eq!(run.records, (data.len() + lines.len()) as u64);
    assert_eq!(run.notifications, one.notifications, "{run:?} vs {one:?}");
    let n = one.notifications as usize;
    assert_eq!(
        notifications_by_group(&three, n),
        notifications_by_group(&alone, n)
    );
}

/// A second instance in the same consumer group is refused at start, with
/// the member it found, instead of silently splitting the notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_in_the_group_is_refused() {
    let Some(s) = Setup::new("twice").await else {
        return;
    };
    let with_instance = |id: &str| {
        s.config_text.replace(
            &format!("group_id = \"{}\"", s.group),
            &format!("group_id = \"{}\"\ninstance_id = \"{id}\"", s.group),
        )
    };
    let (first_config, first_sql) = load_config(&with_instance("first")).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let first = tokio::spawn(async move {
        run_pipeline(
            &first_config,
            first_sql,
            RunOptions::default(),
            async move {
                let _ = stop_rx.await;
                Stop::Now
            },
        )
        .await
    });
    // Wait until the first has joined the group.
    let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .expect("probe");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let members = rdkafka::consumer::Consumer::fetch_group_list(
            &probe,
            Some(&s.group),
            Duration::from_secs(5),
        )
        .map(|l| l.groups().iter().map(|g| g.members().len()).sum::<usize>())
        .unwrap_or(0);
        if members > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the first instance never joined");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (second_config, second_sql) = load_config(&with_instance("second")).await;
    let refused = run_pipeline(
        &second_config,
        second_sql,
        RunOptions::default(),
        std::future::pending::<Stop>(),
    )
    .await
    .expect_err("the second instance must be refused");
    let why = refused.to_string();
    assert!(why.contains("already has a member"), "{why}");
    assert!(why.contains("first-"), "names the member it found: {why}");
    let _ = stop_tx.send(());
    first
        .await
        .expect("first instance task")
        .expect("the first instance runs on and stops cleanly");
}

/// After `kill -9`, a restart takes the partitions back at once: the
/// engine joins with a static `group.instance.id`, so the broker hands the
/// killed member's partitions to its successor instead of waiting out its
/// session (45 s). The group holds one member right after the restart, and
/// the alerts are the expected ones (at-least-once: a repeat of what the
/// killed run raised after its last commit is counted, not an error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_a_restart_takes_the_partitions_back_at_once() {
    let Some(s) = Setup::new("kill9").await else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = s.config_file(dir.path());
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 210, SATURATED),
    )
    .await;
    let mut first = Engine::start(&config);
    wait_committed(&s, 400);
    first.child.kill().expect("kill -9");
    let _ = first.child.wait();

    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(210, 400, SATURATED),
    )
    .await;
    let restarted = Instant::now();
    let second = Engine::start(&config);
    wait_committed(&s, 1440);
    let resumed = restarted.elapsed();
    let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .expect("probe");
    let members: Vec<String> = rdkafka::consumer::Consumer::fetch_group_list(
        &probe,
        Some(&s.group),
        Duration::from_secs(5),
    )
    .expect("group list")
    .groups()
    .iter()
    .flat_map(|g| g.members().iter().map(|m| m.id().to_string()))
    .collect();
    assert_eq!(
        members.len(),
        1,
        "the killed member was replaced, not waited out: {members:?}"
    );
    assert!(members[0].starts_with("telemine-"), "{members:?}");
    let status = second.sigterm_and_wait();
    assert!(status.success(), "clean exit on SIGTERM, got {status}");

    let alerts = s.alerts(2);
    let distinct = distinct(&alerts);
    assert_eq!(summary(&distinct), expected());
    println!(
        "kill -9: the restart committed the new records {:.1} s after it started; {} repeated rule rows (at-least-once)",
        resumed.as_secs_f64(),
        alerts.len() - distinct.len()
    );
}

/// A running engine with the first half of the fixture read, after
/// another consumer took its `group.instance.id` ("telemine").
async fn fenced_engine(
    s: &Setup,
) -> (
    tokio::task::JoinHandle<
        Result<telemine::runtime::RunSummary, telemine::runtime::PipelineError>,
    >,
    tokio::sync::oneshot::Sender<()>,
) {
    produce(
        &s.brokers,
        &s.topic("telemetry"),
        &telemetry(0, 210, SATURATED),
    )
    .await;
    let (config, sql) = load_config(&s.config_text).await;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(async move {
        run_pipeline(&config, sql, RunOptions::default(), async move {
            let _ = stop_rx.await;
            Stop::Now
        })
        .await
    });
    wait_committed(s, 400);
    let probe: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .create()
        .expect("probe");
    let members = rdkafka::consumer::Consumer::fetch_group_list(
        &probe,
        Some(&s.group),
        Duration::from_secs(5),
    )
    .expect("group list");
    let member = members
        .groups()
        .iter()
        .flat_map(|g| g.members())
        .next()
        .expect("the engine is a member");
    assert!(member.id().starts_with("telemine-"), "{}", member.id());
    let other: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &s.brokers)
        .set("group.id", &s.group)
        .set("group.instance.id", "telemine")
        .set("enable.auto.commit", "false")
        .create()
        .expect("the other consumer");
    rdkafka::consumer::Consumer::subscribe(&other, &[s.topic("telemetry").as_str()])
        .expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline
        && !engine.is_finished()
        && rdkafka::consumer::Consumer::assignment(&other).map_or(0, |a| a.count()) == 0
    {
        let _ = other.poll(Duration::from_millis(100));
    }
    (engine, stop_tx)
}

/// A fence by another process that uses this instance's
/// `group.instance.id` stops the engine with a clear error: it never
/// fights the other for the partitions. (A fence by the engine's own
/// rejoin after a session lost in a broker stall starts a new consumer
/// instead: `tests/kafka_stall.rs`, when librdkafka produces one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_by_another_process_with_its_instance_id_stops_it() {
    let Some(s) = Setup::new("otherfence").await else {
        return;
    };
    let (engine, _stop) = fenced_engine(&s).await;
    let ended = tokio::time::timeout(Duration::from_secs(60), engine)
        .await
        .expect("the engine stops")
        .expect("engine task");
    let why = ended.expect_err("fenced by another process").to_string();
    assert!(why.contains("took over"), "{why}");
    assert!(why.contains(&s.group), "names the group: {why}");
}
