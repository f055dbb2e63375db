//! Golden replay tests of streaming semantics, without Kafka: records go
//! through the JSON decoder into the window engine with the project's
//! default SQL, and the alerts are compared with what the fixture implies.

mod support;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use support::*;
use telemine::config::Config;
use telemine_codec::decode::{Decoder, decoder_for};
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::{WindowEngine, repartition};
use telemine_types::alert::Alert;

struct Harness {
    engine: WindowEngine,
    decoder: Box<dyn Decoder>,
    metrics: Arc<Metrics>,
    /// Offset the next record gets (one partition).
    offset: i64,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with_source_options("").await
    }

    /// With extra keys for the telemetry source (e.g. `dedupe_by`).
    async fn with_source_options(extra: &str) -> Harness {
        Harness::with(extra, &repo().join("sql")).await
    }

    /// With the SQL folder `sql`.
    async fn with(extra: &str, sql: &std::path::Path) -> Harness {
        let text = config_text("unused:9092", "g", "t", sql).replacen(
            "idle_timeout = \"2s\"",
            &format!("idle_timeout = \"2s\"\n{extra}"),
            1,
        );
        let config = Config::parse(std::path::Path::new("test.toml"), &text).unwrap();
        let defs = config.source_defs().unwrap();
        let sql = SqlSet::load(&config.sql.dir, &defs, &config.sql_options())
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let engine = WindowEngine::new(sql, &defs, metrics.clone());
        let decoder = decoder_for(
            &defs[0].format,
            &defs[0].influx,
            &defs[0].schema,
            100_000,
            &defs[0].limits,
        )
        .unwrap();
        Harness {
            engine,
            decoder,
            metrics,
            offset: 0,
        }
    }

    fn decode(&mut self, records: &[(String, String)], first_offset: i64) -> RecordBatch {
        for (i, (_, r)) in records.iter().enumerate() {
            self.decoder.push(r.as_bytes(), 0, first_offset + i as i64);
        }
        self.decoder.flush().batch.expect("fixture rows decode")
    }

    /// Feeds records in chunks of `chunk`, as a consumer would.
    async fn feed(&mut self, records: &[(String, String)], chunk: usize) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for part in records.chunks(chunk) {
            let batch = self.decode(part, self.offset);
            self.offset += part.len() as i64;
            self.engine.note_consumed(0, &[(0, self.offset)]);
            alerts.extend(self.engine.ingest(0, batch).await.unwrap());
        }
        alerts
    }
}

const SATURATED: Anomalies = &[(1, 95.0, 95.0), (3, 95.0, 84.0)];

#[tokio::test]
async fn a_window_is_computed_once_when_the_watermark_passes_its_end() {
    let mut h = Harness::new().await;
    // Minutes 0..=3 and 0:00–0:05 of minute 4: the watermark (newest event
    // time − 5 s) reaches 4:00, so minute 3 has just closed; minute 4 is open.
    let alerts = h.feed(&telemetry(0, 246, SATURATED), 97).await;
    assert_eq!(
        summary(&alerts),
        [
            ("HostCpuSaturated".into(), "h2".into(), 1),
            ("HostCpuSaturated".into(), "h2".into(), 3)
        ]
    );
    let a = &alerts[0];
    assert_eq!(a.labels["alertname"], "HostCpuSaturated");
    assert_eq!(a.labels["dc"], "fra1");
    assert_eq!(a.window_end_ms - a.window_start_ms, 60_000);
    assert_eq!(a.values["cpu_avg"], serde_json::json!(95.0));
    assert_eq!(
        a.fingerprint, alerts[1].fingerprint,
        "same rule and labels, same fingerprint"
    );
    // Nothing is emitted twice, even when more rows of open windows arrive.
    let more = h.feed(&telemetry(246, 250, SATURATED), 97).await;
    assert!(more.is_empty());
    assert_eq!(Metrics::get(&h.metrics.late_records), 0);
    // What /metrics shows: minute 4 is the one window open; its rows are
    // buffered; every record read was taken into windows.
    let held = h.engine.held();
    assert!(
        held.open_windows.contains(&("host_1m".to_string(), 1)),
        "{held:?}"
    );
    let telemetry_rows = held
        .buffered_rows
        .iter()
        .find(|(s, _)| s == "telemetry")
        .map_or(0, |r| r.1);
    assert!(telemetry_rows >= 4 * 10, "{held:?}");
    // The view's share of them: the rows of its open minute, no more.
    let view_rows = held
        .view_rows
        .iter()
        .find(|(v, _)| v == "host_1m")
        .map_or(0, |r| r.1);
    assert!(view_rows > 0 && view_rows <= telemetry_rows, "{held:?}");
    let text = h.metrics.exposition();
    let read = 4 * 250;
    assert!(
        text.contains(&format!(
            "telemine_records_in_total{{partition=\"0\",source=\"telemetry\"}} {read}"
        )),
        "{text}"
    );
    assert!(text.contains(&format!(
        "telemine_records_out_total{{partition=\"0\",source=\"telemetry\"}} {read}"
    )));
    assert!(text.contains(r#"telemine_evaluation_seconds_count{kind="view",name="host_1m"} 4"#));
}

#[tokio::test]
async fn out_of_order_rows_within_the_bound_count_and_later_ones_are_late() {
    let mut h = Harness::new().await;
    let mut records = telemetry(0, 130, &[]);
    // h2's saturated minute 1 arrives 4 s behind the others (within the
    // 5 s bound): the window still sees all of it.
    let saturated: Vec<_> = telemetry(60, 120, &[(1, 99.0, 99.0)])
        .into_iter()
        .filter(|(k, _)| k == "h2")
        .collect();
    records.retain(|(k, r)| {
        !(k == "h2" && (60..120).any(|s| r.contains(&format!("\"ts\":{},", T0 + s * 1000))))
    });
    let split = records
        .iter()
        .position(|(_, r)| r.contains(&format!("\"ts\":{},", T0 + 124_000)))
        .unwrap();
    let mut ordered = records[..split].to_vec();
    ordered.extend(saturated);
    ordered.extend(records[split..].to_vec());
    let alerts = h.feed(&ordered, 50).await;
    assert_eq!(
        summary(&alerts),
        [("HostCpuSaturated".into(), "h2".into(), 1)]
    );
    // A row for minute 0, long closed, is late: counted, not evaluated.
    let late = vec![("h1".to_string(), record(T0 + 1_000, "h1", 99.0, 0))];
    assert!(h.feed(&late, 1).await.is_empty());
    assert_eq!(Metrics::get(&h.metrics.late_records), 1);
    let counts = h.engine.source_counts();
    assert_eq!((counts[0].0.as_str(), counts[0].1.late), ("telemetry", 1));
    assert_eq!((counts[1].0.as_str(), counts[1].1.late), ("market", 0));
}

#[tokio::test]
async fn a_restart_from_the_checkpoint_neither_loses_nor_repeats_a_window() {
    let all = telemetry(0, 400, SATURATED);
    // Uninterrupted run, closing every window at the end.
    let mut whole = Harness::new().await;
    let mut expected = whole.feed(&all, 64).await;
    expected.extend(whole.engine.finish().await.unwrap());

    // Interrupted run: stop in the middle of minute 3 (whose alert needs
    // both halves), restore from what would have been committed.
    let stop_at = all
        .iter()
        .position(|(_, r)| r.contains(&format!("\"ts\":{},", T0 + 215_000)))
        .unwrap();
    let mut first = Harness::new().await;
    let mut got = first.feed(&all[..stop_at], 64).await;
    let positions = first.engine.commit_positions(0);
    assert_eq!(positions.len(), 1);
    let (_, committed, checkpoint) = positions[0].clone();
    assert!(
        committed < stop_at as i64,
        "rows of the open window stay uncommitted"
    );
    assert_eq!(checkpoint.next, stop_at as i64);

    let mut second = Harness::new().await;
    second.engine.restore(0, 0, Some(&checkpoint));
    second.offset = committed;
    got.extend(second.feed(&all[committed as usize..], 64).await);
    got.extend(second.engine.finish().await.unwrap());

    assert_eq!(summary(&got), summary(&expected));
    assert_eq!(
        summary(&got),
        [
            ("HostCpuSaturated".into(), "h2".into(), 1),
            ("HostCpuSaturated".into(), "h2".into(), 3)
        ]
    );
}

/// A broker stall that outlives the consumer's session revokes the
/// partition; when it comes back, the records since the last commit are
/// delivered again. Those of closed windows were counted already: they are
/// replays, not late records, and no window is emitted twice or short.
#[tokio::test]
async fn records_read_again_after_a_revoke_are_replays_not_late() {
    let all = telemetry(0, 400, SATURATED);
    let mut whole = Harness::new().await;
    let mut expected = whole.feed(&all, 64).await;
    expected.extend(whole.engine.finish().await.unwrap());

    let mut h = Harness::new().await;
    let mut got = h.feed(&all[..520], 64).await;
    let (_, committed, checkpoint) = h.engine.commit_positions(0)[0].clone();
    // Read on to minute 4 (minutes 1..3 close), then the stall: revoked,
    // assigned again, re-read from the committed offset.
    got.extend(h.feed(&all[520..984], 64).await);
    h.engine.assign(0, &[]).unwrap();
    h.engine.assign(0, &[0]).unwrap();
    h.engine.restore(0, 0, Some(&checkpoint));
    h.offset = committed;
    got.extend(h.feed(&all[committed as usize..], 64).await);
    got.extend(h.engine.finish().await.unwrap());

    assert_eq!(Metrics::get(&h.metrics.late_records), 0);
    assert!(Metrics::get(&h.metrics.replayed_skipped) > 0);
    assert_eq!(summary(&got), summary(&expected));
}

#[tokio::test]
async fn late_rows_come_out_with_their_lateness() {
    let mut h = Harness::new().await;
    h.feed(&telemetry(0, 130, &[]), 50).await;
    // Minute 1 has closed (frontier 2:00); a row from 0:01 is 119 s late.
    let late = vec![("h3".to_string(), record(T0 + 1_000, "h3", 50.0, 0))];
    h.feed(&late, 1).await;
    let out = h.engine.take_late();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].rows.num_rows(), 1);
    assert_eq!(out[0].lateness_ms, [119_000]);
    assert!(h.engine.take_late().is_empty(), "taken once");
}

#[tokio::test]
async fn duplicates_are_dropped_only_when_the_source_asks() {
    // Every record of 1:00-1:09 arrives twice, as an at-least-once producer
    // retrying would deliver it, while minute 1 is still open.
    let mut records = telemetry(0, 130, &[(1, 95.0, 95.0)]);
    let dups: Vec<_> = telemetry(60, 70, &[(1, 95.0, 95.0)]);
    let at = records
        .iter()
        .position(|(_, r)| r.contains(&format!("\"ts\":{},", T0 + 80_000)))
        .unwrap();
    for (i, d) in dups.iter().enumerate() {
        records.insert(at + i, d.clone());
    }

    let mut plain = Harness::new().await;
    let a = plain.feed(&records, 64).await;
    assert_eq!(Metrics::get(&plain.metrics.duplicates_dropped), 0);

    let mut deduped = Harness::with_source_options("dedupe_by = [\"host\"]").await;
    let b = deduped.feed(&records, 64).await;
    assert_eq!(
        Metrics::get(&deduped.metrics.duplicates_dropped),
        dups.len() as u64
    );
    assert_eq!(
        deduped.engine.source_counts()[0].1.duplicates,
        dups.len() as u64
    );
    assert_eq!(summary(&a), summary(&b));
    assert_eq!(summary(&b), [("HostCpuSaturated".into(), "h2".into(), 1)]);
}

/// A SQL folder with one view over telemetry and a rule that reports every
/// window of it, so a run's alerts list every window it emitted.
fn every_window_sql(from: &str) -> tempfile::TempDir {
    every_window_sql_with(from, "")
}

/// Like `every_window_sql`, with `extra` aggregates in the view.
fn every_window_sql_with(from: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("features")).unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("features/w.sql"),
        format!(
            "SELECT host, window_start, window_end, avg(cpu) AS cpu_avg, count(*) AS n{extra}\n\
             FROM {from}\nGROUP BY host, window_start, window_end\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/every.sql"),
        "SELECT host, window_start, window_end, cpu_avg, n FROM w\n",
    )
    .unwrap();
    dir
}

/// Every emitted window as one sortable line.
fn windows_of(alerts: &[Alert]) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .map(|a| {
            format!(
                "{} {} {} n={} avg={}",
                a.labels["host"],
                a.window_start_ms,
                a.window_end_ms,
                a.values["n"],
                a.values["cpu_avg"]
            )
        })
        .collect();
    v.sort();
    v
}

/// Stops a run at several points, restarts from what would have been
/// committed, and checks the two halves emit exactly the windows of an
/// uninterrupted run: none lost, none twice.
async fn restart_keeps_every_window_once(from: &str, records: &[(String, String)]) {
    restart_keeps_every_window_once_with(from, records, "").await;
}

/// [`restart_keeps_every_window_once`], with `options` for the source.
async fn restart_keeps_every_window_once_with(
    from: &str,
    records: &[(String, String)],
    options: &str,
) {
    let sql = every_window_sql(from);
    let mut whole = Harness::with(options, sql.path()).await;
    let mut expected = whole.feed(records, 64).await;
    expected.extend(whole.engine.finish().await.unwrap());
    let expected = windows_of(&expected);
    assert!(expected.len() > 20, "{from}: too few windows to test");
    let n = records.len();
    for stop_at in [37, n / 5, n / 3, n / 2, 2 * n / 3, n - 90] {
        let mut first = Harness::with(options, sql.path()).await;
        let mut got = first.feed(&records[..stop_at], 64).await;
        let (_, committed, checkpoint) = first.engine.commit_positions(0)[0].clone();
        let mut second = Harness::with(options, sql.path()).await;
        second.engine.restore(0, 0, Some(&checkpoint));
        second.offset = committed;
        got.extend(second.feed(&records[committed as usize..], 64).await);
        got.extend(second.engine.finish().await.unwrap());
        assert_eq!(
            windows_of(&got),
            expected,
            "{from}, stopped at record {stop_at}"
        );
    }
}

#[tokio::test]
async fn hopping_windows_survive_a_restart() {
    let records = telemetry(0, 300, SATURATED);
    restart_keeps_every_window_once(
        "HOP(telemetry, ts, INTERVAL '10 seconds', INTERVAL '1 minute')",
        &records,
    )
    .await;
}

/// Each host pauses for 25 s every 50 s, at its own phase: sessions with
/// a 20 s gap end at different times per host.
fn paused_telemetry() -> Vec<(String, String)> {
    telemetry(0, 400, SATURATED)
        .into_iter()
        .filter(|(host, r)| {
            let i = HOSTS.iter().position(|h| h == host).unwrap() as i64;
            let ts: i64 = r[6..r.find(',').unwrap()].parse().unwrap();
            let s = (ts - T0) / 1000;
            (s + 13 * i) % 50 >= 25
        })
        .collect()
}

#[tokio::test]
async fn session_windows_survive_a_restart() {
    restart_keeps_every_window_once(
        "SESSION(telemetry, ts, INTERVAL '20 seconds')",
        &paused_telemetry(),
    )
    .await;
}

#[tokio::test]
async fn session_windows_with_allowed_lateness_survive_a_restart() {
    // Closed sessions still open to stragglers keep their rows, and the
    // checkpoint's `keep` brings them back.
    restart_keeps_every_window_once_with(
        "SESSION(telemetry, ts, INTERVAL '20 seconds')",
        &paused_telemetry(),
        "allowed_lateness = \"30s\"",
    )
    .await;
}

#[tokio::test]
async fn hopping_windows_of_many_panes_survive_a_restart() {
    // 60 panes per window: each window merges a suffix and a prefix of
    // window-long blocks, which a restart builds again from the rows.
    let records = telemetry(0, 300, SATURATED);
    restart_keeps_every_window_once(
        "HOP(telemetry, ts, INTERVAL '1 second', INTERVAL '1 minute')",
        &records,
    )
    .await;
}

#[tokio::test]
async fn shared_panes_give_what_recomputing_every_window_gives() {
    // The same view twice: as is (pane states merged), and with
    // an order-sensitive aggregate added, which makes the engine recompute
    // every window from its rows. Their common columns must agree.
    let records = telemetry(0, 300, SATURATED);
    let from = "HOP(telemetry, ts, INTERVAL '1 second', INTERVAL '1 minute')";
    let mut results = Vec::new();
    for extra in ["", ", first_value(cpu ORDER BY ts) AS first_cpu"] {
        let sql = every_window_sql_with(from, extra);
        let mut h = Harness::with("", sql.path()).await;
        let mut alerts = h.feed(&records, 97).await;
        alerts.extend(h.engine.finish().await.unwrap());
        results.push(windows_of(&alerts));
    }
    assert!(results[0].len() > 1000, "{} windows", results[0].len());
    assert_eq!(results[0], results[1]);
}

#[tokio::test]
async fn hopping_windows_with_allowed_lateness_survive_a_restart() {
    // Panes of windows still open to stragglers are rebuilt from the rows
    // the checkpoint's `keep` brings back.
    let from = "HOP(telemetry, ts, INTERVAL '10 seconds', INTERVAL '1 minute')";
    let records = telemetry(0, 400, SATURATED);
    let options = "allowed_lateness = \"20s\"";
    restart_keeps_every_window_once_with(from, &records, options).await;
    let sql = every_window_sql(from);
    let mut h = Harness::with(options, sql.path()).await;
    h.feed(&records[..records.len() / 2], 64).await;
    let (_, _, checkpoint) = h.engine.commit_positions(0)[0].clone();
    assert!(
        checkpoint.keep["w"] < checkpoint.closed["w"] - 60_000 + 10_000,
        "rows of panes open to stragglers are kept: {checkpoint:?}"
    );
}

#[tokio::test]
async fn tumbling_windows_with_allowed_lateness_survive_a_restart() {
    // Closed windows keep their rows for the allowed lateness; the
    // checkpoint's `keep` brings them back after a restart.
    let sql = every_window_sql("TUMBLE(telemetry, ts, INTERVAL '1 minute')");
    let records = telemetry(0, 400, SATURATED);
    let mut whole = Harness::with("allowed_lateness = \"20s\"", sql.path()).await;
    let mut expected = whole.feed(&records, 64).await;
    expected.extend(whole.engine.finish().await.unwrap());
    let stop_at = records.len() / 2;
    let mut first = Harness::with("allowed_lateness = \"20s\"", sql.path()).await;
    let mut got = first.feed(&records[..stop_at], 64).await;
    let (_, committed, checkpoint) = first.engine.commit_positions(0)[0].clone();
    assert!(
        checkpoint.keep.contains_key("w"),
        "rows of windows open to stragglers are kept: {checkpoint:?}"
    );
    let mut second = Harness::with("allowed_lateness = \"20s\"", sql.path()).await;
    second.engine.restore(0, 0, Some(&checkpoint));
    second.offset = committed;
    got.extend(second.feed(&records[committed as usize..], 64).await);
    got.extend(second.engine.finish().await.unwrap());
    assert_eq!(windows_of(&got), windows_of(&expected));
}
/// The repository's config and SQL: `rack_1m` groups by dc, rack over
/// host-keyed telemetry.
async fn default_set() -> (Vec<SourceDef>, SqlSet) {
    let root = repo();
    let config = Config::load(&root.join("config/telemine.toml")).expect("config");
    let defs = config.source_defs().expect("defs");
    let sql = SqlSet::load(&root.join("sql"), &defs, &config.sql_options())
        .await
        .expect("sql");
    (defs, sql)
}

#[tokio::test]
async fn the_views_keyed_otherwise_are_bound_to_their_derived_source() {
    let (defs, mut sql) = default_set().await;
    let needed = repartition::needed(&sql, &defs);
    assert_eq!(
        needed,
        vec![(0, vec!["dc".to_string(), "rack".to_string()])]
    );
    let all = repartition::derive(&mut sql, &defs, "g", &needed, |_| 6);
    assert_eq!(all.len(), defs.len() + 1);
    let derived = &all[defs.len()];
    assert_eq!(derived.topic, "g.repartition.telemetry.dc-rack");
    assert_eq!(
        derived.derived.as_ref().map(|d| d.upstream_partitions),
        Some(6)
    );
    let source_of = |set: &SqlSet, name: &str| {
        set.views
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.source)
    };
    assert_eq!(source_of(&sql, "rack_1m"), Some(defs.len()));
    assert_eq!(source_of(&sql, "host_1m"), Some(0));
    // Every view scales out now.
    assert!(repartition::alone_reasons(&sql, &all, true).is_empty());
    // A reload is bound the same way; one that needs a topic this run
    // did not set up is refused, naming the view.
    let (_, mut again) = default_set().await;
    repartition::bind(&mut again, &all).expect("bound");
    assert_eq!(source_of(&again, "rack_1m"), Some(defs.len()));
    let (_, mut other) = default_set().await;
    let err = repartition::bind(&mut other, &defs)
        .expect_err("no derived source")
        .to_string();
    assert!(err.contains("`rack_1m` (by dc, rack)"), "{err}");
}
