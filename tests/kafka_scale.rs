//! Scale-out on the real broker: several instances in one consumer group
//! send the notifications one instance sends. The telemetry topic has six
//! partitions and its records are keyed by host; one view groups by host
//! (computed per partition), the other by rack (`rack_1m`: every rack's
//! hosts are spread over the partitions, so it is computed through the
//! group's repartition topic, `[engine] repartition = true`), and the
//! alert groups (`group_by = ["alertname"]`) span hosts and racks that
//! different instances read — the alerting runs once, on the instance
//! that holds the group's alerting relay. A model scores the per-host
//! view, and a view over views joins each host's minute with its rack's,
//! where the alerting runs, so the model learns from every host and the
//! join sees every host and rack whatever the number of instances.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::broker::*;
use support::setup::test_topics;
use support::*;
use telemine::runtime::{RunOptions, RunSummary, Stop, run_pipeline};
use telemine_alerting::payload::Payload;
use telemine_observe::metrics::Metrics;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

const PARTITIONS: i32 = 6;
const HOSTS: usize = 24;
const MINUTES: i64 = 10;

/// The per-host view, two of its rules and one on its model's score, the
/// per-rack view with its rule (repartitioned), and a view over both with
/// its rule.
fn scale_sql(dir: &std::path::Path) -> std::path::PathBuf {
    let sql = sql_with(
        dir,
        &[
            "features/host_1m.sql",
            "features/rack_1m.sql",
            "rules/host_cpu_saturated.sql",
            "rules/host_latency_spike.sql",
            "rules/rack_overheating.sql",
        ],
    );
    std::fs::write(
        sql.join("rules/host_anomalous.sql"),
        "-- A host unlike what the model learned of every host (scored where the\n\
         -- group's alerting runs).\n\
         -- @name: HostAnomalous\n\
         -- @severity: warning\n\
         SELECT dc, rack, host, window_start, window_end, anomaly_score\n\
         FROM host_1m WHERE anomaly_score > 0.9\n",
    )
    .expect("rule");
    // A view over views: each host's window joined with its rack's, which
    // different instances compute (the join runs where the alerting runs).
    std::fs::write(
        sql.join("features/host_in_rack.sql"),
        "-- Each host's minute beside its rack's.\n\
         SELECT h.dc, h.rack, h.host, h.window_start, h.window_end, h.cpu_avg, r.temp_avg AS rack_temp\n\
         FROM host_1m h JOIN rack_1m r ON h.window_start = r.window_start AND h.rack = r.rack\n",
    )
    .expect("view over views");
    std::fs::write(
        sql.join("rules/hot_host_in_hot_rack.sql"),
        "-- A saturated host in an overheating rack.\n\
         -- @name: HotHostInHotRack\n\
         -- @severity: critical\n\
         SELECT dc, rack, host, window_start, window_end, cpu_avg, rack_temp\n\
         FROM host_in_rack WHERE cpu_avg > 85 AND rack_temp > 35\n",
    )
    .expect("rule");
    sql
}

/// Hosts `h00`..`h23` in racks of eight, one record a second each for
/// [`MINUTES`] minutes. Every third host runs hot for two minutes,
/// starting at a minute that depends on the host; every fifth has a
/// latency spike in minute 6; rack 1 overheats in minutes 3 and 4, rack 2
/// in minute 7.
fn records() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for s in 0..MINUTES * 60 {
        for i in 0..HOSTS {
            let host = format!("h{i:02}");
            let minute = s / 60;
            let start = 1 + (i as i64 % 4);
            let hot = i.is_multiple_of(3) && (start..start + 2).contains(&minute);
            let cpu = if hot { 96.0 } else { 30.0 + (s % 5) as f64 };
            let latency = if i.is_multiple_of(5) && minute == 6 {
                90.0
            } else {
                5.0
            };
            let rack = i / 8;
            let temp = if (rack == 1 && (3..5).contains(&minute)) || (rack == 2 && minute == 7) {
                40.0
            } else {
                25.0
            };
            out.push((
                host.clone(),
                format!(
                    r#"{{"ts":{},"dc":"fra1","rack":"fra1-r{rack:02}","host":"{host}","cpu":{cpu},"mem":40,"temp_c":{temp},"power_w":300,"fan_rpm":{},"latency_ms":{latency}}}"#,
                    T0 + s * 1000,
                    4000 + (s + i as i64) % 7 * 10
                ),
            ));
        }
    }
    out
}

/// The test's config for consumer group `group`, instance `instance`. A
/// member that stops answering leaves the group after 6 s (the broker's
/// least), not the default 45 s.
fn config(
    brokers: &str,
    prefix: &str,
    group: &str,
    instance: &str,
    sql: &std::path::Path,
) -> String {
    config_text(brokers, group, prefix, sql)
        .replacen(
            "\n[[sources]]",
            "\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\n[[sources]]",
            1,
        )
        .replace(
            &format!("group_id = \"{group}\""),
            &format!("group_id = \"{group}\"\ninstance_id = \"{instance}\""),
        )
        // Records arrive only once every instance has joined: a partition
        // silent since then must not count as idle when the first records
        // of another arrive (2 s would make its first rows late).
        .replace(
            "idle_timeout = \"2s\"\n",
            "idle_timeout = \"30s\"\nkey = [\"host\"]\n",
        )
        .replace(
            "[alerting]\n",
            "[alerting]\ngroup_by = [\"alertname\"]\ngroup_wait = \"30s\"\ngroup_interval = \"1m\"\nrepeat_interval = \"1h\"\n",
        )
        .replace("[engine]\n", "[engine]\nrepartition = true\n")
        + &inline_model(2, 3, 3)
}

/// A notification as the test compares it: status, group and each alert's
/// host, status, start and end (annotations hold averages whose last digits
/// are not the point here).
fn line(p: &Payload) -> String {
    let mut alerts: Vec<String> = p
        .alerts
        .iter()
        .map(|a| {
            format!(
                "{}:{}:{}..{}",
                a.labels
                    .get("host")
                    .or_else(|| a.labels.get("rack"))
                    .map(String::as_str)
                    .unwrap_or("-"),
                serde_json::to_string(&a.status).unwrap_or_default(),
                a.starts_at,
                a.ends_at
            )
        })
        .collect();
    alerts.sort();
    format!(
        "{} {} [{}]",
        serde_json::to_string(&p.status).unwrap_or_default(),
        p.group_key,
        alerts.join(" ")
    )
}

/// Notifications as (line → how many times it was sent).
fn tally(rx: &mut mpsc::UnboundedReceiver<Payload>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    while let Ok(p) = rx.try_recv() {
        *out.entry(line(&p)).or_default() += 1;
    }
    out
}

/// One instance's run, stopped by the test.
struct Instance {
    metrics: Arc<Metrics>,
    stop: oneshot::Sender<Stop>,
    task: tokio::task::JoinHandle<RunSummary>,
}

async fn start(text: String, tap: mpsc::UnboundedSender<Payload>) -> Instance {
    let (config, sql) = load_config(&text).await;
    let metrics = Arc::new(Metrics::default());
    let (stop, stop_rx) = oneshot::channel();
    let options = RunOptions {
        metrics: Some(metrics.clone()),
        alert_tap: Some(tap),
        ..Default::default()
    };
    let name = config.kafka.instance_id.clone();
    let task = tokio::spawn(
        async move {
            run_pipeline(&config, sql, options, async move {
                stop_rx.await.unwrap_or(Stop::Now)
            })
            .await
            .expect("instance run")
        }
        .instrument(tracing::info_span!("instance", name)),
    );
    // Until it is aborted (killed) or stopped.
    Instance {
        metrics,
        stop,
        task,
    }
}

/// One instance over the records already produced, in a group of its
/// own: the notifications the others are compared with.
async fn one_instance(
    brokers: &str,
    prefix: &str,
    sql: &std::path::Path,
) -> (RunSummary, BTreeMap<String, usize>) {
    let (tap, mut rx) = mpsc::unbounded_channel();
    let (config_one, sql_one) = load_config(&config(
        brokers,
        prefix,
        &format!("{prefix}.one"),
        "solo",
        sql,
    ))
    .await;
    let options = RunOptions {
        stop_at_end: true,
        alert_tap: Some(tap),
        ..Default::default()
    };
    let one = run_pipeline(
        &config_one,
        sql_one,
        options,
        std::future::pending::<Stop>(),
    )
    .await
    .expect("one instance");
    (one, tally(&mut rx))
}

/// Waits until `instances` hold every partition (telemetry's, its
/// repartition topic's and market's one), each some, unchanged for 3 s;
/// returns how many each holds.
async fn spread(instances: &[&Instance]) -> Vec<u64> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut since: Option<Instant> = None;
    let mut last = Vec::new();
    loop {
        let held: Vec<u64> = instances
            .iter()
            .map(|i| i.metrics.partitions_assigned.get().max(0) as u64)
            .collect();
        let ok =
            held.iter().sum::<u64>() == 2 * PARTITIONS as u64 + 1 && held.iter().all(|&n| n > 0);
        if !ok || held != last {
            since = ok.then(Instant::now);
        }
        if since.is_some_and(|t| t.elapsed() > Duration::from_secs(3)) {
            return held;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions were never spread: {held:?}"
        );
        last = held;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Drains `instances` and waits for them.
async fn drain(instances: Vec<Instance>) -> Vec<RunSummary> {
    let mut summaries = Vec::new();
    let mut tasks = Vec::new();
    for i in instances {
        let _ = i.stop.send(Stop::Drain);
        tasks.push(i.task);
    }
    for task in tasks {
        summaries.push(
            tokio::time::timeout(Duration::from_secs(180), task)
                .await
                .expect("an instance drained within 3 minutes")
                .expect("instance task"),
        );
    }
    summaries
}

/// Records with event times in `[from_s, to_s)` seconds.
fn between(records: &[(String, String)], from_s: i64, to_s: i64) -> Vec<(String, String)> {
    records
        .iter()
        .filter(|(_, r)| {
            let v: serde_json::Value = serde_json::from_str(r).expect("fixture");
            let t = v["ts"].as_i64().expect("ts");
            (T0 + from_s * 1000..T0 + to_s * 1000).contains(&t)
        })
        .cloned()
        .collect()
}

/// The low and high watermarks of `topic`'s partitions.
fn watermarks(brokers: &str, topic: &str, partitions: i32) -> (Vec<i64>, Vec<i64>) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("watermark reader");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
        })
        .unzip()
}

/// What the state topic holds, for the report: messages written (values
/// and tombstones, before compaction), distinct keys, and what compaction
/// would keep (each key's latest value, tombstones dropped).
fn state_topic_figures(brokers: &str, topic: &str) -> String {
    let all = read_topic(
        brokers,
        topic,
        1,
        1,
        Duration::from_secs(2),
        Duration::from_secs(20),
    );
    let bytes: usize = all
        .iter()
        .map(|m| m.payload.len() + m.key.as_ref().map_or(0, Vec::len))
        .sum();
    let tombstones = all.iter().filter(|m| m.payload.is_empty()).count();
    let mut latest: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for m in &all {
        latest.insert(m.key.clone().unwrap_or_default(), m.payload.len());
    }
    let live: Vec<usize> = latest.values().copied().filter(|&n| n > 0).collect();
    format!(
        "{} messages written ({tombstones} tombstones, {bytes} bytes), {} distinct keys; compaction keeps {} values ({} bytes)",
        all.len(),
        latest.len(),
        live.len(),
        live.iter().sum::<usize>()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_send_the_notifications_one_instance_sends() {
    logs();
    let Some(brokers) = brokers() else {
        return;
    };
    let prefix = unique("scale");
    test_topics(&brokers, &prefix, PARTITIONS, &[("alerts", 3)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = scale_sql(dir.path());

    // Three instances join the group while the topic is still empty, so
    // the partitions are spread before the first record arrives.
    let group = format!("{prefix}.three");
    let (tap, mut three_rx) = mpsc::unbounded_channel();
    let mut three = Vec::new();
    for name in ["a", "b", "c"] {
        three.push(start(config(&brokers, &prefix, &group, name, &sql), tap.clone()).await);
    }
    drop(tap);
    let held = spread(&three.iter().collect::<Vec<_>>()).await;
    produce(&brokers, &format!("{prefix}.telemetry"), &records()).await;
    let summaries = drain(three).await;
    let by_three = tally(&mut three_rx);
    let (one, by_one) = one_instance(&brokers, &prefix, &sql).await;

    let records: Vec<u64> = summaries.iter().map(|s| s.records).collect();
    let notified: Vec<u64> = summaries.iter().map(|s| s.notifications).collect();
    let doubled: Vec<(&String, &usize)> = by_three.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "one instance: {} records, {} notifications ({} distinct); three instances (partitions held {held:?}): records {records:?}, notifications sent per instance {notified:?} ({} distinct), sent more than once: {}",
        one.records,
        by_one.values().sum::<usize>(),
        by_one.len(),
        by_three.len(),
        doubled.len()
    );
    // What repartitioning the per-rack view wrote, and what was deleted
    // once read back and committed (DeleteRecords below the group's
    // commits): the topic's high and low watermarks.
    let repartition = format!("{group}.repartition.telemetry.dc-rack");
    let (low, high) = watermarks(&brokers, &repartition, PARTITIONS);
    println!(
        "repartition topic of the three: {} messages written, {} deleted once read back, for {} records",
        high.iter().sum::<i64>(),
        low.iter().sum::<i64>(),
        one.records
    );
    assert!(
        low.iter().sum::<i64>() > 0,
        "what was read back and committed is deleted: low {low:?}, high {high:?}"
    );
    // What the relay carried: the windows of the views scored and joined
    // where the alerting runs (Arrow IPC), and the JSON of rule rows,
    // evaluations and progress.
    let relay = read_topic(
        &brokers,
        &format!("{group}.alerting-relay"),
        1,
        1,
        Duration::from_secs(2),
        Duration::from_secs(20),
    );
    let (views, json): (Vec<_>, Vec<_>) =
        relay.iter().partition(|m| m.payload.starts_with(b"TMV1"));
    let bytes = |v: &[&support::broker::Read]| v.iter().map(|m| m.payload.len()).sum::<usize>();
    println!(
        "relay of the three: {} messages of view rows ({} bytes), {} of rule rows, evaluations and progress ({} bytes)",
        views.len(),
        bytes(&views),
        json.len(),
        bytes(&json)
    );
    assert!(
        !views.is_empty(),
        "the scored and joined views' windows ride the relay"
    );
    assert_eq!(one.records, (HOSTS as u64) * (MINUTES as u64) * 60);
    assert_eq!(
        records.iter().sum::<u64>(),
        one.records,
        "every record read once"
    );
    let late: Vec<u64> = summaries.iter().map(|s| s.late).collect();
    assert_eq!((one.late, late), (0, vec![0, 0, 0]), "no row went late");
    assert_eq!(
        notified.iter().filter(|&&n| n > 0).count(),
        1,
        "one instance runs the group's alerting: {notified:?}"
    );
    assert!(by_one.len() >= 4, "the fixture notifies: {by_one:#?}");
    assert!(
        by_one.keys().any(|l| l.contains("HostAnomalous")),
        "the model's rule notifies: {by_one:#?}"
    );
    assert!(
        by_one.keys().any(|l| l.contains("HotHostInHotRack")),
        "the join's rule notifies: {by_one:#?}"
    );
    let one_set: Vec<&String> = by_one.keys().collect();
    let three_set: Vec<&String> = by_three.keys().collect();
    assert_eq!(three_set, one_set, "three instances notify what one does");
    // No instance was killed: nothing is sent twice.
    assert_eq!(doubled, Vec::<(&String, &usize)>::new());
}

/// Three instances; one killed mid-stream (its task dropped: no commit,
/// nothing flushed, no goodbye to the group), a fourth added later. The
/// partitions the killed one held, and those moved to the new one, arrive
/// with checkpoints behind their new holder's windows and are computed in
/// lanes of their own; if the killed one ran the alerting, another takes
/// it over from the saved state. The notifications are those of one
/// instance; what was sent twice (an owner killed after sending, before
/// its commit) is counted and printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_killed_and_added_mid_stream_send_what_one_sends() {
    logs();
    let Some(brokers) = brokers() else {
        return;
    };
    let prefix = unique("scalekill");
    test_topics(&brokers, &prefix, PARTITIONS, &[("alerts", 3)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = scale_sql(dir.path());
    let group = format!("{prefix}.group");
    let all = records();
    let telemetry = format!("{prefix}.telemetry");

    let (tap, mut rx) = mpsc::unbounded_channel();
    let a = start(config(&brokers, &prefix, &group, "a", &sql), tap.clone()).await;
    let b = start(config(&brokers, &prefix, &group, "b", &sql), tap.clone()).await;
    let c = start(config(&brokers, &prefix, &group, "c", &sql), tap.clone()).await;
    let first = spread(&[&a, &b, &c]).await;
    produce(&brokers, &telemetry, &between(&all, 0, 270)).await;
    // Kill c once it has read some of it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Metrics::get(&c.metrics.records_decoded) == 0 {
        assert!(Instant::now() < deadline, "c never read a record");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c_read = Metrics::get(&c.metrics.records_decoded);
    c.task.abort();
    let _ = c.task.await;
    let after_kill = spread(&[&a, &b]).await;
    produce(&brokers, &telemetry, &between(&all, 270, 420)).await;
    let d = start(config(&brokers, &prefix, &group, "d", &sql), tap.clone()).await;
    drop(tap);
    let after_add = spread(&[&a, &b, &d]).await;
    produce(&brokers, &telemetry, &between(&all, 420, MINUTES * 60)).await;
    let summaries = drain(vec![a, b, d]).await;
    let by_many = tally(&mut rx);
    let (one, by_one) = one_instance(&brokers, &prefix, &sql).await;

    let doubled: Vec<(&String, &usize)> = by_many.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<&String> = by_one
        .keys()
        .filter(|k| !by_many.contains_key(*k))
        .collect();
    let extra: Vec<&String> = by_many
        .keys()
        .filter(|k| !by_one.contains_key(*k))
        .collect();
    println!(
        "one instance: {} notifications; partitions held by a, b, c {first:?}; c killed after reading {c_read} records; a, b then {after_kill:?}; a, b, d {after_add:?}; records read by a, b, d {:?} (late {:?}); notifications {} ({} distinct), missing {}, not sent by one instance {}, sent more than once {} (at-least-once: an alerting owner killed between sending and committing)",
        by_one.values().sum::<usize>(),
        summaries.iter().map(|s| s.records).collect::<Vec<_>>(),
        summaries.iter().map(|s| s.late).collect::<Vec<_>>(),
        by_many.values().sum::<usize>(),
        by_many.len(),
        missing.len(),
        extra.len(),
        doubled.len()
    );
    for (line, n) in &doubled {
        println!("  sent {n} times: {line}");
    }
    if summaries.iter().any(|s| s.late > 0) {
        let late = read_topic(
            &brokers,
            &format!("{prefix}.late"),
            1,
            1,
            Duration::from_secs(2),
            Duration::from_secs(20),
        );
        let mut by: BTreeMap<(String, String), usize> = BTreeMap::new();
        for m in &late {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            *by.entry((
                m.headers
                    .get("telemine.source.partition")
                    .cloned()
                    .unwrap_or_default(),
                v["host"].as_str().unwrap_or("-").to_string(),
            ))
            .or_default() += 1;
        }
        println!("late rows by (partition, host): {by:?}");
    }
    println!(
        "state topic after the run: {}; alerting relay: {} messages",
        state_topic_figures(&brokers, &format!("{prefix}.alert-state")),
        read_topic(
            &brokers,
            &format!("{group}.alerting-relay"),
            1,
            1,
            Duration::from_secs(2),
            Duration::from_secs(20),
        )
        .len()
    );
    assert_eq!(one.records, (HOSTS as u64) * (MINUTES as u64) * 60);
    // A moved partition is computed from its checkpoint (in a lane when it
    // does not fit its new holder's windows): none of its rows goes late.
    assert_eq!(one.late, 0);
    assert_eq!(
        summaries.iter().map(|s| s.late).collect::<Vec<_>>(),
        vec![0, 0, 0],
        "no row went late (printed above by partition and host)"
    );
    assert_eq!(
        missing,
        Vec::<&String>::new(),
        "nothing one instance sends is lost"
    );
    assert_eq!(
        extra,
        Vec::<&String>::new(),
        "nothing one instance does not send"
    );
}
