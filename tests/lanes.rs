//! A partition handed from one instance to another mid-stream, without
//! Kafka: the instance that receives it has closed more windows than the
//! partition's checkpoint says, so it computes the partition in a lane of
//! its own (`crates/stream/src/driver.rs`). Every window of every host is then
//! evaluated — by the first instance before its last commit, or by the
//! second after — and no row goes late; the same handover without lanes
//! loses windows to lateness (the control that shows the test can fail).

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use support::*;
use telemine::config::Config;
use telemine_codec::decode::{Decoder, decoder_for};
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::Checkpoint;
use telemine_stream::WindowEngine;
use telemine_stream::driver::{Driver, Input};
use telemine_types::alert::Alert;

/// Hosts by partition: the source is keyed by host.
const PARTITION_OF: [(&str, i32); 4] = [("h1", 0), ("h2", 0), ("h3", 1), ("h4", 1)];

/// Hot minutes per host (CPU 96 for the whole minute).
const HOT: [(&str, i64); 4] = [("h2", 1), ("h2", 2), ("h3", 4), ("h4", 6)];

/// One record per host per second for eight minutes, in time order, each
/// with its partition.
fn records() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for s in 0..8 * 60 {
        for (i, (host, p)) in PARTITION_OF.iter().enumerate() {
            let hot = HOT.contains(&(host, s / 60));
            let cpu = if hot { 96.0 } else { 30.0 + (s % 5) as f64 };
            out.push((*p, record(T0 + s * 1000, host, cpu, (s + i as i64) % 7)));
        }
    }
    out
}

struct Setup {
    defs: Vec<SourceDef>,
    sql: SqlSet,
    decoder: Box<dyn Decoder>,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let sql_dir = sql_with(
        dir.path(),
        &["features/host_1m.sql", "rules/host_cpu_saturated.sql"],
    );
    let text = config_text("unused:9092", "g", "t", &sql_dir).replacen(
        "idle_timeout = \"2s\"",
        "idle_timeout = \"2s\"\nkey = [\"host\"]",
        1,
    );
    let config = Config::parse(std::path::Path::new("test.toml"), &text).expect("config");
    let defs = config.source_defs().expect("sources");
    let sql = SqlSet::load(&config.sql.dir, &defs, &config.sql_options())
        .await
        .expect("sql");
    assert!(
        telemine_stream::alone_reasons(&sql, &defs, false).is_empty(),
        "the test's SQL scales out"
    );
    let decoder = decoder_for(
        &defs[0].format,
        &defs[0].influx,
        &defs[0].schema,
        100_000,
        &defs[0].limits,
    )
    .expect("decoder");
    Setup {
        defs,
        sql,
        decoder,
        _dir: dir,
    }
}

/// One instance: a driver and how far it has read each partition.
struct Instance {
    driver: Driver,
    metrics: Arc<Metrics>,
    alerts: Vec<Alert>,
}

impl Instance {
    async fn new(s: &Setup, lanes: bool, partitions: &[i32]) -> Instance {
        let metrics = Arc::new(Metrics::default());
        let engine = WindowEngine::new(s.sql.fork(), &s.defs, metrics.clone());
        let mut driver = if lanes {
            Driver::with_lanes(engine, s.defs.clone())
        } else {
            Driver::new(engine)
        };
        driver
            .handle(Input::Assigned {
                source: 0,
                partitions: partitions.to_vec(),
            })
            .await
            .expect("assign");
        Instance {
            driver,
            metrics,
            alerts: Vec::new(),
        }
    }

    async fn start(&mut self, partition: i32, checkpoint: Option<Checkpoint>) {
        self.driver
            .handle(Input::PartitionStart {
                source: 0,
                partition,
                checkpoint,
            })
            .await
            .expect("restore");
    }

    /// Feeds `records` (partition, offset, JSON) in batches of 64.
    async fn feed(&mut self, s: &mut Setup, records: &[(i32, i64, String)]) {
        for chunk in records.chunks(64) {
            for (p, o, r) in chunk {
                s.decoder.push(r.as_bytes(), *p, *o);
            }
            let batch = s.decoder.flush().batch;
            let mut consumed: Vec<(i32, i64)> = Vec::new();
            for (p, o, _) in chunk {
                match consumed.iter_mut().find(|(q, _)| q == p) {
                    Some(c) => c.1 = o + 1,
                    None => consumed.push((*p, o + 1)),
                }
            }
            let step = self
                .driver
                .handle(Input::Batch {
                    source: 0,
                    batch,
                    dead: Vec::new(),
                    consumed,
                    marks: Vec::new(),
                })
                .await
                .expect("batch");
            self.alerts.extend(step.rows);
        }
    }

    async fn finish(&mut self) {
        let step = self.driver.handle(Input::Finish).await.expect("finish");
        self.alerts.extend(step.rows);
    }

    fn checkpoint(&self, partition: i32) -> (i64, Checkpoint) {
        self.driver
            .commit_positions(0)
            .into_iter()
            .find(|(p, _, _)| *p == partition)
            .map(|(_, o, c)| (o, c))
            .expect("a commit position")
    }

    fn late(&self) -> u64 {
        Metrics::get(&self.metrics.late_records)
    }
}

/// Partition `partition`'s records of the first three minutes.
fn first_minutes(all: &[(i32, i64, String)], partition: i32) -> Vec<(i32, i64, String)> {
    all.iter()
        .filter(|(p, _, r)| *p == partition && ts(r) < T0 + 180_000)
        .cloned()
        .collect()
}

/// The records with their offsets within their partition.
fn with_offsets(records: &[(i32, String)]) -> Vec<(i32, i64, String)> {
    let mut next = [0i64; 2];
    records
        .iter()
        .map(|(p, r)| {
            let o = next[*p as usize];
            next[*p as usize] += 1;
            (*p, o, r.clone())
        })
        .collect()
}

/// (rule, host, window end) of each alert, without repeats.
fn windows(alerts: &[Alert]) -> BTreeSet<(String, String, String)> {
    alerts
        .iter()
        .map(|a| {
            (
                a.rule.clone(),
                a.labels.get("host").cloned().unwrap_or_default(),
                a.window_end.clone(),
            )
        })
        .collect()
}

/// The handover: instance A reads both partitions to minute 3 and
/// commits; B takes partition 0 from that commit and reads it to minute
/// 7; A reads partition 1 on to minute 4.5 and dies; B then gets partition 1
/// from A's commit and reads both to the end. Returns (what A and B
/// raised together, B's late rows, B's lanes).
async fn handover(s: &mut Setup, lanes: bool) -> (BTreeSet<(String, String, String)>, u64, usize) {
    let all = with_offsets(&records());
    let until = |secs: i64| -> Vec<(i32, i64, String)> {
        all.iter()
            .filter(|(_, _, r)| ts(r) < T0 + secs * 1000)
            .cloned()
            .collect()
    };
    let mut a = Instance::new(s, lanes, &[0, 1]).await;
    a.start(0, None).await;
    a.start(1, None).await;
    a.feed(s, &until(180)).await;
    let (next0, c0) = a.checkpoint(0);
    let (next1, c1) = a.checkpoint(1);
    // A goes on with partition 1 alone (partition 0 went to B), up to
    // minute 4.5: it closes minute 3, not h3's hot minute 4.
    a.driver
        .handle(Input::Assigned {
            source: 0,
            partitions: vec![1],
        })
        .await
        .expect("assign");
    let p1_more: Vec<_> = all
        .iter()
        .filter(|(p, _, r)| *p == 1 && (T0 + 180_000..T0 + 270_000).contains(&ts(r)))
        .cloned()
        .collect();
    let mut b = Instance::new(s, lanes, &[0]).await;
    b.start(0, Some(c0)).await;
    let p0_to_7: Vec<_> = all
        .iter()
        .filter(|(p, o, r)| *p == 0 && *o >= next0 && ts(r) < T0 + 420_000)
        .cloned()
        .collect();
    b.feed(s, &p0_to_7).await;
    a.feed(s, &p1_more).await;
    // A dies; B gets partition 1 from A's last commit.
    b.driver
        .handle(Input::Assigned {
            source: 0,
            partitions: vec![0, 1],
        })
        .await
        .expect("assign");
    b.start(1, Some(c1)).await;
    let rest: Vec<_> = all
        .iter()
        .filter(|(p, o, r)| {
            (*p == 1 && *o >= next1) || (*p == 0 && *o >= next0 && ts(r) >= T0 + 420_000)
        })
        .cloned()
        .collect();
    b.feed(s, &rest).await;
    let lanes_used = b.driver.lanes();
    b.finish().await;
    let mut raised = windows(&a.alerts);
    raised.extend(windows(&b.alerts));
    (raised, b.late(), lanes_used)
}

/// The event time of a fixture record.
fn ts(record: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(record).expect("fixture JSON");
    v["ts"].as_i64().expect("ts")
}

#[tokio::test]
async fn a_partition_handed_over_mid_stream_loses_no_window() {
    let mut s = setup().await;
    // One instance holding both partitions all along.
    let mut one = Instance::new(&s, true, &[0, 1]).await;
    one.start(0, None).await;
    one.start(1, None).await;
    let all = with_offsets(&records());
    one.feed(&mut s, &all).await;
    one.finish().await;
    let expected = windows(&one.alerts);
    let hosts: BTreeSet<&str> = expected.iter().map(|(_, h, _)| h.as_str()).collect();
    assert_eq!(hosts, BTreeSet::from(["h2", "h3", "h4"]), "{expected:#?}");
    assert_eq!(one.late(), 0);

    let (raised, late, lanes) = handover(&mut s, true).await;
    println!(
        "with lanes: {} windows raised of {} expected, {late} late rows, {lanes} lane(s)",
        raised.len(),
        expected.len()
    );
    assert_eq!(lanes, 1, "partition 1 was computed on its own");
    assert_eq!(late, 0);
    assert_eq!(raised, expected);

    // The control: the same handover into one engine makes partition 1's
    // rows behind B's windows late, and h3's hot minute is lost.
    let (raised, late, _) = handover(&mut s, false).await;
    println!(
        "without lanes: {} windows raised of {} expected, {late} late rows",
        raised.len(),
        expected.len()
    );
    assert!(late > 0);
    assert_ne!(raised, expected);
}

/// The engine takes the first partition it computes as it comes; a second
/// one whose checkpoint says otherwise gets a lane, even when the first
/// came without a checkpoint (read from its start) and nothing has closed
/// yet: joining would move the engine's windows past the first one's rows.
#[tokio::test]
async fn a_partition_that_does_not_fit_the_first_one_started_gets_a_lane() {
    let mut s = setup().await;
    let all = with_offsets(&records());
    // A checkpoint of partition 1 after three minutes.
    let mut a = Instance::new(&s, true, &[1]).await;
    a.start(1, None).await;
    let p1 = first_minutes(&all, 1);
    a.feed(&mut s, &p1).await;
    let (_, c1) = a.checkpoint(1);
    assert!(!c1.closed.is_empty(), "{c1:?}");

    // A fresh instance starts partition 0 from its beginning, then gets
    // partition 1 with that checkpoint.
    let mut b = Instance::new(&s, true, &[0, 1]).await;
    b.start(0, None).await;
    b.start(1, Some(c1)).await;
    assert_eq!(b.driver.lanes(), 1);
    // Without a checkpoint it would have fitted (both from the start).
    let mut c = Instance::new(&s, true, &[0, 1]).await;
    c.start(0, None).await;
    c.start(1, None).await;
    assert_eq!(c.driver.lanes(), 0);
}

/// A checkpoint names only the views that closed a window: one whose
/// holder had closed none (it was killed early, or its watermark was held
/// back) does not fit an engine that has closed some, and gets a lane —
/// joining would make every row of its open windows late.
#[tokio::test]
async fn a_checkpoint_that_closed_nothing_does_not_fit_an_engine_that_closed_windows() {
    let mut s = setup().await;
    let all = with_offsets(&records());
    let mut a = Instance::new(&s, true, &[0]).await;
    a.start(0, None).await;
    let p0 = first_minutes(&all, 0);
    a.feed(&mut s, &p0).await;
    // Partition 1's previous holder had read its first record and closed
    // nothing: its checkpoint names no view.
    let empty = Checkpoint {
        v: Checkpoint::VERSION,
        next: 1,
        ..Default::default()
    };
    a.driver
        .handle(Input::Assigned {
            source: 0,
            partitions: vec![0, 1],
        })
        .await
        .expect("assign");
    a.start(1, Some(empty)).await;
    assert_eq!(a.driver.lanes(), 1);
    let p1 = first_minutes(&all, 1);
    a.feed(&mut s, &p1).await;
    assert_eq!(a.late(), 0, "partition 1's rows are nobody's late rows");
}
