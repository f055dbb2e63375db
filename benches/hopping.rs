//! The cost of a 1-minute window sliding every second (HOP, pane-shared),
//! against a 1-minute tumbling window over the same rows, and against the
//! same HOP recomputed per window (no pane sharing), on two shapes of data:
//!
//! - `sparse`: 512 keys, one row per key per second (data-center telemetry
//!   at 1 Hz): every pane holds one row per key;
//! - `dense`: 8 keys, 250 rows per key per second (market ticks): every
//!   pane holds many rows per key.
//!
//! Each view computes avg, max and count per key and window; rows arrive
//! in time order in batches of 8192 and windows close as the watermark
//! passes them. `cargo bench --bench hopping`

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use telemine::config::Config;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_sql::source::SourceDef;
use telemine_stream::WindowEngine;

const T0: i64 = 1_795_737_600_000;

fn source() -> (Config, Vec<SourceDef>) {
    let text = r#"
[kafka]
bootstrap_servers = "none"
[[sources]]
name = "s"
topic = "s"
columns = ["ts timestamp", "host string", "cpu double"]
event_time = "ts"
max_out_of_orderness = "0s"
"#;
    let config = Config::parse(std::path::Path::new("bench.toml"), text).expect("config");
    let defs = config.source_defs().expect("sources");
    (config, defs)
}

/// `seconds` of data for `keys` keys at `per_second` rows per key per
/// second, in batches of 8192 rows.
fn data(def: &SourceDef, keys: usize, per_second: usize, seconds: i64) -> Vec<RecordBatch> {
    let names: Vec<String> = (0..keys).map(|k| format!("host-{k:04}")).collect();
    let (mut ts, mut host, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..seconds {
        for i in 0..per_second {
            let t = T0 + s * 1000 + (i * 1000 / per_second) as i64;
            for (k, name) in names.iter().enumerate() {
                ts.push(t);
                host.push(name.clone());
                cpu.push(((s as usize * 31 + i * 7 + k * 13) % 100) as f64);
            }
        }
    }
    let n = ts.len();
    let schema = def.schema.batch_schema().clone();
    (0..n)
        .step_by(8192)
        .map(|from| {
            let to = (from + 8192).min(n);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(TimestampMillisecondArray::from(ts[from..to].to_vec())),
                Arc::new(StringArray::from(host[from..to].to_vec())),
                Arc::new(Float64Array::from(cpu[from..to].to_vec())),
                Arc::new(Int32Array::from(vec![0; to - from])),
                Arc::new(Int64Array::from_iter_values(from as i64..to as i64)),
            ];
            RecordBatch::try_new(schema.clone(), columns).expect("batch")
        })
        .collect()
}

fn sql_dir(window: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("features")).expect("features");
    std::fs::write(
        dir.path().join("features/v.sql"),
        format!(
            "SELECT host, window_start, window_end, avg(cpu) AS cpu_avg, max(cpu) AS cpu_max, count(*) AS n{extra}\n\
             FROM {window}\nGROUP BY host, window_start, window_end\n"
        ),
    )
    .expect("view");
    dir
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (config, defs) = source();
    let tumble = sql_dir("TUMBLE(s, ts, INTERVAL '1 minute')", "");
    let hop = sql_dir("HOP(s, ts, INTERVAL '1 second', INTERVAL '1 minute')", "");
    // An order-sensitive aggregate keeps the view from sharing panes.
    let hop_recompute = sql_dir(
        "HOP(s, ts, INTERVAL '1 second', INTERVAL '1 minute')",
        ", first_value(cpu ORDER BY ts) AS first_cpu",
    );
    let tumble_same = sql_dir(
        "TUMBLE(s, ts, INTERVAL '1 minute')",
        ", first_value(cpu ORDER BY ts) AS first_cpu",
    );
    for (shape, keys, per_second, seconds) in [("sparse", 512, 1, 600), ("dense", 8, 250, 300)] {
        let batches = data(&defs[0], keys, per_second, seconds);
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let mut group = c.benchmark_group(format!("hopping/{shape}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(rows as u64));
        let mut cases = vec![("tumble_1m", &tumble), ("hop_1m_every_1s", &hop)];
        if shape == "dense" {
            // Per-window recomputation copies every row 60 times; on the
            // sparse shape it is measured once by hand (see BENCHMARKS.md).
            cases.push(("tumble_1m_first_value", &tumble_same));
            cases.push(("hop_1m_every_1s_recomputed", &hop_recompute));
        }
        for (name, dir) in cases {
            group.bench_function(name, |b| {
                b.iter(|| {
                    runtime.block_on(async {
                        let sql = SqlSet::load(dir.path(), &defs, &config.sql_options())
                            .await
                            .expect("SQL");
                        let mut engine =
                            WindowEngine::new(sql, &defs, Arc::new(Metrics::default()));
                        for batch in &batches {
                            engine.ingest(0, batch.clone()).await.expect("ingest");
                        }
                        engine.finish().await.expect("finish");
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
