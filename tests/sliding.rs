//! Hopping windows merged from shared pane states (`crates/sql/src/sliding.rs`) give
//! exactly what recomputing every window from its rows gives, for every
//! common aggregate, with keys that come and go, NULLs, HAVING, several
//! window shapes and rows out of order within the bound.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use telemine::config::Config;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::WindowEngine;
use telemine_types::alert::Alert;

const T0: i64 = 1_795_737_600_000;

fn config(lateness: &str) -> (Config, Vec<SourceDef>) {
    let text = r#"
[kafka]
bootstrap_servers = "none"
[[sources]]
name = "s"
topic = "s"
columns = ["ts timestamp", "host string", "cpu double", "mem bigint"]
event_time = "ts"
max_out_of_orderness = "3s"
allowed_lateness = "LATENESS"
"#
    .replace("LATENESS", lateness);
    let config = Config::parse(std::path::Path::new("sliding.toml"), &text).unwrap();
    let defs = config.source_defs().unwrap();
    (config, defs)
}

/// A small deterministic generator (no outside randomness in tests).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Event time, host, CPU, memory.
type Row = (i64, String, Option<f64>, i64);

/// 400 s of rows for up to 12 hosts: each host is silent for stretches,
/// CPU is sometimes NULL, and rows arrive up to 2 s out of order; with
/// `stragglers`, one row in 37 arrives 8 to 20 s late instead.
fn batches(def: &SourceDef, stragglers: bool) -> Vec<RecordBatch> {
    let mut rng = Lcg(7);
    let mut rows: Vec<Row> = Vec::new();
    for s in 0..400i64 {
        for h in 0..12u64 {
            // Host h is away for a stretch every (h + 3) * 10 seconds.
            if (s as u64 / 10).is_multiple_of(h + 3) && h > 0 {
                continue;
            }
            for _ in 0..(rng.next() % 3) {
                let t = T0 + s * 1000 + (rng.next() % 1000) as i64;
                let cpu = (!rng.next().is_multiple_of(5)).then(|| (rng.next() % 400) as f64 / 4.0);
                rows.push((t, format!("h{h}"), cpu, (rng.next() % 1000) as i64));
            }
        }
    }
    // Out of order within the 3 s bound: swap rows up to 2 s apart.
    for i in (1..rows.len()).step_by(7) {
        let j = i.saturating_sub(1 + (rng.next() % 20) as usize);
        if rows[i].0 - rows[j].0 < 2000 {
            rows.swap(i, j);
        }
    }
    if stragglers {
        let mut held: Vec<(i64, Row)> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            held.sort_by_key(|h| std::cmp::Reverse(h.0));
            while held.last().is_some_and(|h| h.0 <= row.0) {
                if let Some((_, r)) = held.pop() {
                    out.push(r);
                }
            }
            if i % 37 == 0 {
                held.push((row.0 + 8000 + (rng.next() % 12_000) as i64, row));
            } else {
                out.push(row);
            }
        }
        held.sort_by_key(|h| h.0);
        out.extend(held.into_iter().map(|h| h.1));
        rows = out;
    }
    let schema = def.schema.batch_schema().clone();
    rows.chunks(211)
        .enumerate()
        .map(|(c, part)| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    part.iter().map(|r| r.0),
                )),
                Arc::new(StringArray::from_iter_values(part.iter().map(|r| &r.1))),
                Arc::new(Float64Array::from_iter(part.iter().map(|r| r.2))),
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.3))),
                Arc::new(Int32Array::from(vec![0; part.len()])),
                Arc::new(Int64Array::from_iter_values(
                    (0..part.len() as i64).map(|i| (c * 211) as i64 + i),
                )),
            ];
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect()
}

const AGGREGATES: &str = "count(*) AS n, count(cpu) AS n_cpu, sum(mem) AS mem_sum, \
    min(cpu) AS cpu_min, max(cpu) AS cpu_max, avg(cpu) AS cpu_avg, \
    stddev(cpu) AS cpu_sd, var_pop(cpu) AS cpu_var, bool_or(cpu > 90) AS hot, \
    count(*) FILTER (WHERE mem > 500) AS heavy";

/// Runs `view` and `rules` over the fixture: the alerts as windows,
/// sorted, and the number of late firings.
async fn run(view: &str, rules: &[String], lateness: &str) -> (Vec<Window>, u64) {
    let (config, defs) = config(lateness);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("features")).unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("features/w.sql"), view).unwrap();
    for (i, rule) in rules.iter().enumerate() {
        std::fs::write(dir.path().join(format!("rules/r{i}.sql")), rule).unwrap();
    }
    let sql = match SqlSet::load(dir.path(), &defs, &config.sql_options()).await {
        Ok(sql) => sql,
        Err(e) => panic!("{e}"),
    };
    let metrics = Arc::new(Metrics::default());
    let mut engine = WindowEngine::new(sql, &defs, metrics.clone());
    let mut alerts: Vec<Alert> = Vec::new();
    for b in batches(&defs[0], lateness != "0s") {
        alerts.extend(engine.ingest(0, b).await.unwrap());
    }
    alerts.extend(engine.finish().await.unwrap());
    let mut windows: Vec<Window> = alerts
        .iter()
        .map(|a| {
            let mut values = a.values.clone();
            values.remove("first_cpu");
            (
                format!("{:?} {} {}", a.labels, a.window_start_ms, a.window_end_ms),
                values,
            )
        })
        .collect();
    windows.sort_by(|a, b| a.0.cmp(&b.0));
    (windows, Metrics::get(&metrics.late_firings))
}

/// A window's labels and bounds, and its values.
type Window = (String, serde_json::Map<String, serde_json::Value>);

/// Equal, but for floating-point rounding (merging partial states adds in
/// another order than one pass over the rows).
fn same(a: &Window, b: &Window) -> bool {
    a.0 == b.0
        && a.1.len() == b.1.len()
        && a.1.iter().all(|(k, x)| {
            let Some(y) = b.1.get(k) else { return false };
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                _ => x == y,
            }
        })
}

async fn agrees_with_recomputation(window: &str, having: &str, lateness: &str) {
    let view = |extra: &str| {
        format!(
            "SELECT host, window_start, window_end, {AGGREGATES}{extra}\n\
             FROM {window}\nGROUP BY host, window_start, window_end\n{having}\n"
        )
    };
    let columns = "host, window_start, window_end, n, n_cpu, mem_sum, cpu_min, cpu_max, \
        cpu_avg, cpu_sd, cpu_var, hot, heavy";
    // Every window; and (for late firings) windows once they hold 8 rows.
    let rules = [
        format!("SELECT {columns} FROM w\n"),
        format!("SELECT {columns} FROM w WHERE n >= 8\n"),
    ];
    let (shared, fired) = run(&view(""), &rules, lateness).await;
    // An order-sensitive aggregate keeps the view from sharing panes.
    let (recomputed, fired_again) = run(
        &view(", first_value(cpu ORDER BY ts) AS first_cpu"),
        &rules,
        lateness,
    )
    .await;
    assert!(shared.len() > 50, "{window}: only {} windows", shared.len());
    assert_eq!(fired, fired_again, "late firings");
    if lateness != "0s" {
        assert!(fired > 20, "{window}: only {fired} late firings");
    }
    let differ: Vec<(&Window, &Window)> = shared
        .iter()
        .zip(&recomputed)
        .filter(|(a, b)| !same(a, b))
        .take(3)
        .collect();
    assert!(
        shared.len() == recomputed.len() && differ.is_empty(),
        "{window} {having}: {} windows shared, {} recomputed; first differences: {differ:#?}",
        shared.len(),
        recomputed.len(),
    );
}

#[tokio::test]
async fn every_second_over_a_minute() {
    agrees_with_recomputation(
        "HOP(s, ts, INTERVAL '1 second', INTERVAL '1 minute')",
        "",
        "0s",
    )
    .await;
}

#[tokio::test]
async fn windows_not_aligned_to_their_size_with_having() {
    agrees_with_recomputation(
        "HOP(s, ts, INTERVAL '15 seconds', INTERVAL '45 seconds')",
        "HAVING count(*) > 3",
        "0s",
    )
    .await;
}

#[tokio::test]
async fn two_panes_per_window() {
    agrees_with_recomputation(
        "HOP(s, ts, INTERVAL '10 seconds', INTERVAL '20 seconds')",
        "",
        "0s",
    )
    .await;
}

#[tokio::test]
async fn late_firings_merge_the_panes_again() {
    // Stragglers 8-20 s late, within 30 s of allowed lateness: their panes
    // are computed again and every open window over them fires again.
    agrees_with_recomputation(
        "HOP(s, ts, INTERVAL '5 seconds', INTERVAL '30 seconds')",
        "",
        "30s",
    )
    .await;
}
