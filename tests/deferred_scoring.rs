//! Scoring apart from the windows (`crates/stream/src/deferred.rs`), without Kafka:
//! two instances, each holding one partition of host-keyed telemetry,
//! hand their closed windows to one scoring stage — through the relay's
//! encoding, in small messages, each sent twice (what at-least-once
//! delivery may do) — and the stage scores as the alerting clock (the
//! lower of the two) passes each window end. Every row is scored as one
//! instance scoring inline, over both partitions, scores it. The control:
//! each instance scoring inline with a detector of its own (what several
//! instances did before) scores otherwise.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use support::*;
use telemine::config::Config;
use telemine_codec::decode::{Decoder, decoder_for};
use telemine_detector::Detector;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::WindowEngine;
use telemine_stream::deferred::{self, Deferral, ScoringStage, ViewRows};
use telemine_stream::driver::{Driver, Input, Step};
use telemine_types::alert::Alert;

/// Hosts and the partition each is keyed to.
const HOSTS: [(&str, i32); 4] = [("h1", 0), ("h2", 0), ("h3", 1), ("h4", 1)];
const MINUTES: i64 = 30;

/// One record per host per second; each host's CPU on a slow wave of its
/// own, power following it, except h3's, which breaks away in minutes 20
/// and 21.
fn records() -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for s in 0..MINUTES * 60 {
        for (i, (h, p)) in HOSTS.iter().enumerate() {
            let cpu = 40.0 + 15.0 * ((s as f64) / 170.0 + i as f64).sin() + (s % 3) as f64;
            let mut power = 180.0 + 2.2 * cpu;
            if *h == "h3" && (1200..1320).contains(&s) {
                power += 60.0;
            }
            out.push((
                *p,
                format!(
                    r#"{{"ts":{},"dc":"fra1","rack":"fra1-r01","host":"{h}","cpu":{cpu:.3},"mem":40,"temp_c":{:.3},"power_w":{power:.3},"fan_rpm":{:.1},"latency_ms":{:.3}}}"#,
                    T0 + s * 1000,
                    25.0 + 0.08 * cpu,
                    4500.0 + (s % 7) as f64,
                    4.0 + 0.02 * cpu
                ),
            ));
        }
    }
    out
}

struct Setup {
    config: Config,
    defs: Vec<SourceDef>,
    _dir: tempfile::TempDir,
}

/// The default per-host view, a rule reporting every scored row, a rule
/// that reads no score, and a model trained inline (scores that do not
/// depend on timing).
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let sql = sql_with(
        dir.path(),
        &["features/host_1m.sql", "rules/host_cpu_saturated.sql"],
    );
    std::fs::write(
        sql.join("rules/every_score.sql"),
        "-- Every row the model scored, with its score.\n\
         SELECT dc, rack, host, window_start, window_end, anomaly_score\n\
         FROM host_1m WHERE anomaly_score IS NOT NULL\n",
    )
    .expect("rule");
    let text = config_text("unused:9092", "g", "t", &sql).replacen(
        "idle_timeout = \"2s\"",
        "idle_timeout = \"2s\"\nkey = [\"host\"]",
        1,
    ) + &inline_model(3, 4, 5);
    let config = Config::parse(std::path::Path::new("test.toml"), &text).expect("config");
    let defs = config.source_defs().expect("sources");
    Setup {
        config,
        defs,
        _dir: dir,
    }
}

impl Setup {
    async fn sql(&self) -> SqlSet {
        SqlSet::load(&self.config.sql.dir, &self.defs, &self.config.sql_options())
            .await
            .expect("sql")
    }

    /// The SQL with the models' detectors attached (trained inline).
    async fn scored_sql(&self) -> SqlSet {
        self.scored_sql_with_detectors().await.0
    }

    async fn scored_sql_with_detectors(&self) -> (SqlSet, Vec<Arc<Detector>>) {
        let mut sql = self.sql().await;
        let detectors = telemine_detector::attach(
            &mut sql,
            &self.config.model_settings().expect("models"),
            false,
            None,
        )
        .expect("models");
        (sql, detectors)
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        let d = &self.defs[0];
        decoder_for(&d.format, &d.influx, &d.schema, 100_000, &d.limits).expect("decoder")
    }
}

/// An instance holding `partitions`: its driver and decoder.
struct Instance {
    driver: Driver,
    decoder: Box<dyn Decoder>,
    next: BTreeMap<i32, i64>,
}

impl Instance {
    async fn new(s: &Setup, sql: SqlSet, partitions: &[i32], defer: bool) -> Instance {
        let engine = WindowEngine::new(sql, &s.defs, Arc::new(Metrics::default()));
        let mut driver = Driver::new(engine);
        if defer {
            assert!(driver.defer_scoring().is_some(), "the SQL defers scoring");
        }
        driver
            .handle(Input::Assigned {
                source: 0,
                partitions: partitions.to_vec(),
            })
            .await
            .expect("assign");
        for &p in partitions {
            driver
                .handle(Input::PartitionStart {
                    source: 0,
                    partition: p,
                    checkpoint: None,
                })
                .await
                .expect("start");
        }
        Instance {
            driver,
            decoder: s.decoder(),
            next: partitions.iter().map(|&p| (p, 0)).collect(),
        }
    }

    /// Feeds the records of the partitions it holds, in one batch.
    async fn feed(&mut self, records: &[(i32, String)]) -> Step {
        let mut consumed = Vec::new();
        for (p, r) in records {
            let Some(next) = self.next.get_mut(p) else {
                continue;
            };
            self.decoder.push(r.as_bytes(), *p, *next);
            *next += 1;
            consumed.retain(|(q, _)| q != p);
            consumed.push((*p, *next));
        }
        let decoded = self.decoder.flush();
        self.driver
            .handle(Input::Batch {
                source: 0,
                batch: decoded.batch,
                dead: decoded.dead,
                consumed,
                marks: Vec::new(),
            })
            .await
            .expect("batch")
    }

    async fn finish(&mut self) -> Step {
        self.driver.handle(Input::Finish).await.expect("finish")
    }
}

/// Rows of `rule`, as (host, window start) → score.
fn scored(rows: &[Alert], rule: &str) -> BTreeMap<(String, String), String> {
    rows.iter()
        .filter(|a| a.rule == rule)
        .map(|a| {
            (
                (a.labels["host"].clone(), a.window_start.clone()),
                a.values["anomaly_score"].to_string(),
            )
        })
        .collect()
}

/// Rows of a rule that reads no score, as (host, window start).
fn saturated(rows: &[Alert]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rows
        .iter()
        .filter(|a| a.rule == "HostCpuSaturated")
        .map(|a| (a.labels["host"].clone(), a.window_start.clone()))
        .collect();
    out.sort();
    out
}

/// One instance over both partitions, scoring inline.
async fn inline(s: &Setup, records: &[(i32, String)]) -> Vec<Alert> {
    let mut one = Instance::new(s, s.scored_sql().await, &[0, 1], false).await;
    let mut rows = Vec::new();
    for chunk in records.chunks(64) {
        rows.extend(one.feed(chunk).await.rows);
    }
    rows.extend(one.finish().await.rows);
    rows
}

/// The stage takes a step's view rows as the owner takes them off the
/// relay: encoded in messages of at most 4 KiB, each delivered `times`.
fn relay(stage: &mut ScoringStage, step: &Step, offset: &mut i64, times: usize) -> usize {
    let mut messages = 0;
    for rows in &step.scored {
        for m in deferred::encode(rows, 4096).expect("encode") {
            for _ in 0..times {
                let (name, batches) = deferred::decode(&m)
                    .expect("a view message")
                    .expect("reads");
                let view = stage.view(&name).expect("a view the stage takes");
                stage
                    .add(
                        ViewRows {
                            view,
                            name: name.clone(),
                            batches,
                        },
                        Some(*offset),
                    )
                    .expect("add");
                *offset += 1;
                messages += 1;
            }
        }
    }
    messages
}

/// The lowest clock over the instances' partitions (`None` until each
/// has one).
fn clock(steps: &[&Step]) -> Option<i64> {
    if steps.iter().any(|s| s.progress.is_empty()) {
        return None;
    }
    let clocks: Vec<Option<i64>> = steps
        .iter()
        .flat_map(|s| s.progress.iter().map(|p| p.clock))
        .collect();
    clocks
        .iter()
        .copied()
        .collect::<Option<Vec<i64>>>()?
        .into_iter()
        .min()
}

#[tokio::test]
async fn two_instances_scored_where_the_alerting_is_score_as_one_instance_inline() {
    let s = setup();
    let records = records();
    let expected = inline(&s, &records).await;
    let expected_scores = scored(&expected, "every_score");
    assert!(
        expected_scores.len() >= HOSTS.len() * 20,
        "{} rows scored",
        expected_scores.len()
    );

    // Two instances, one partition each, scoring deferred to one stage.
    let unscored = s.sql().await;
    let mut a = Instance::new(&s, unscored.fork_unscored(), &[0], true).await;
    let mut b = Instance::new(&s, unscored.fork_unscored(), &[1], true).await;
    let stage_sql = s.scored_sql().await;
    let plan = Deferral::plan(&stage_sql).expect("deferred");
    let metrics = Arc::new(Metrics::default());
    let mut stage = ScoringStage::new(stage_sql, plan, None, 0, metrics.clone());
    let (mut rows, mut offset, mut messages) = (Vec::new(), 0i64, 0usize);
    // Instance b runs a few batches behind a: the clock waits for it.
    let chunks: Vec<&[(i32, String)]> = records.chunks(64).collect();
    let lag = 40;
    let (mut last_a, mut last_b) = (Step::default(), Step::default());
    for i in 0..chunks.len() + lag {
        if let Some(chunk) = chunks.get(i) {
            last_a = a.feed(chunk).await;
            messages += relay(&mut stage, &last_a, &mut offset, 2);
            rows.append(&mut last_a.rows);
        }
        if let Some(chunk) = i.checked_sub(lag).and_then(|j| chunks.get(j)) {
            last_b = b.feed(chunk).await;
            messages += relay(&mut stage, &last_b, &mut offset, 2);
            rows.append(&mut last_b.rows);
        }
        let out = stage.advance(clock(&[&last_a, &last_b])).await;
        rows.extend(out.rows);
    }
    for inst in [&mut a, &mut b] {
        let mut last = inst.finish().await;
        messages += relay(&mut stage, &last, &mut offset, 2);
        rows.append(&mut last.rows);
    }
    rows.extend(stage.finish().await.rows);
    let got = scored(&rows, "every_score");
    let copies = Metrics::get(&metrics.scoring_copies);
    println!(
        "{} rows scored inline by one instance; {} by the stage from two instances over {messages} relay messages, {copies} copied rows dropped",
        expected_scores.len(),
        got.len()
    );
    assert_eq!(got, expected_scores, "scored as one instance inline");
    assert!(copies > 0, "every message was delivered twice");
    assert_eq!(
        saturated(&rows),
        saturated(&expected),
        "rules that read no score run on the instances, as before"
    );
    // The broken relation was found.
    let h3: Vec<f64> = got
        .iter()
        .filter(|((h, t), _)| {
            h == "h3" && t.as_str() >= "2026-11-27T00:20:00" && t.as_str() < "2026-11-27T00:22:00"
        })
        .filter_map(|(_, v)| v.parse().ok())
        .collect();
    assert!(
        h3.iter().any(|&v| v > 0.5),
        "h3's break scores high: {h3:?}"
    );

    // The control: each instance scores its own partition inline.
    let mut own = Vec::new();
    for p in [0, 1] {
        let mut alone = Instance::new(&s, s.scored_sql().await, &[p], false).await;
        for chunk in records.chunks(64) {
            own.extend(alone.feed(chunk).await.rows);
        }
        own.extend(alone.finish().await.rows);
    }
    assert_ne!(
        scored(&own, "every_score"),
        expected_scores,
        "a detector per instance learns from half the series and scores otherwise"
    );
}

#[tokio::test]
async fn a_new_owner_restored_from_the_save_drops_copies_of_what_was_scored_and_scores_the_rest_alike()
 {
    let s = setup();
    let records = records();
    let expected = scored(&inline(&s, &records).await, "every_score");

    // One instance deferring to a first owner, which saves its detector's
    // state (a commit) and is killed later; the next owner restores that
    // state and reads the relay again from a commit behind the save.
    let mut one = Instance::new(&s, s.sql().await.fork_unscored(), &[0, 1], true).await;
    let (first_sql, first_detectors) = s.scored_sql_with_detectors().await;
    let metrics = Arc::new(Metrics::default());
    let plan = Deferral::plan(&first_sql).expect("deferred");
    let mut first = ScoringStage::new(first_sql, plan, None, 0, metrics.clone());
    let chunks: Vec<&[(i32, String)]> = records.chunks(64).collect();
    let (save_at, kill_at) = (chunks.len() / 2, chunks.len() / 2 + 60);
    let (mut before_kill, mut steps, mut saved, mut offset) = (Vec::new(), Vec::new(), None, 0);
    for (i, chunk) in chunks.iter().enumerate() {
        let step = one.feed(chunk).await;
        if i < kill_at {
            relay(&mut first, &step, &mut offset, 1);
            before_kill.extend(first.advance(clock(&[&step])).await.rows);
        }
        if i == save_at {
            assert_eq!(first.held_from(), None, "one instance: nothing waits");
            saved = first_detectors[0].save().expect("save");
        }
        steps.push(step);
    }
    let saved = saved.expect("state to save");
    let (sql, detectors) = s.scored_sql_with_detectors().await;
    detectors[0]
        .restore(&saved.state, saved.model.as_deref(), |seg| {
            saved
                .segments
                .iter()
                .find(|(n, _)| *n == seg)
                .map(|(_, b)| b.clone())
        })
        .expect("restore");
    let done_until = detectors[0].last_window_end();
    assert!(done_until.is_some(), "the saved state has scored windows");
    let plan = Deferral::plan(&sql).expect("deferred");
    let mut second = ScoringStage::new(sql, plan, done_until, 0, metrics.clone());
    let copies_before = Metrics::get(&metrics.scoring_copies);
    let mut after_kill = Vec::new();
    steps.push(one.finish().await);
    for step in &steps[save_at - 30..] {
        relay(&mut second, step, &mut offset, 1);
        after_kill.extend(second.advance(clock(&[step])).await.rows);
    }
    after_kill.extend(second.finish().await.rows);
    let dropped = Metrics::get(&metrics.scoring_copies) - copies_before;
    let got = scored(&after_kill, "every_score");
    println!(
        "the new owner scored {} rows after restoring the state saved at window end {done_until:?}; {dropped} rows of window ends scored before the save dropped",
        got.len()
    );
    assert!(dropped > 0, "the windows scored before the save come again");
    assert!(got.len() > HOSTS.len() * 10, "the new owner scored");
    for (k, v) in &got {
        assert_eq!(
            Some(v),
            expected.get(k),
            "{k:?} scored otherwise by the new owner"
        );
    }
    let mut all = scored(&before_kill, "every_score");
    all.extend(got);
    assert_eq!(
        all, expected,
        "every row scored, as one uninterrupted owner scores it"
    );
}

#[tokio::test]
async fn rows_held_past_their_bound_are_scored_without_waiting_for_the_clock_and_counted() {
    let s = setup();
    let records = records();
    let mut one = Instance::new(&s, s.sql().await.fork_unscored(), &[0, 1], true).await;
    let sql = s.scored_sql().await;
    let plan = Deferral::plan(&sql).expect("deferred");
    let metrics = Arc::new(Metrics::default());
    // At most three windows of the four hosts; the clock never moves (a
    // partition that never reports).
    let bound = 3 * HOSTS.len();
    let mut stage =
        ScoringStage::new(sql, plan, None, 0, metrics.clone()).with_max_held_rows(bound);
    let (mut rows, mut offset) = (Vec::new(), 0);
    for chunk in records.chunks(64) {
        let step = one.feed(chunk).await;
        relay(&mut stage, &step, &mut offset, 1);
        rows.extend(stage.advance(None).await.rows);
        assert!(
            stage.held_rows() <= bound,
            "{} rows held",
            stage.held_rows()
        );
    }
    let forced = Metrics::get(&metrics.scoring_forced);
    assert!(
        forced >= (MINUTES as u64) - 4,
        "{forced} window ends scored early"
    );
    assert!(
        !scored(&rows, "every_score").is_empty(),
        "scored despite the clock"
    );
}
