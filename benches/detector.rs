//! Rows per second through the streaming detector — the stage `run`,
//! `dry-run` and `eval` score with: a window of 4,096 series × 5 view
//! features per call, with past features (`past_windows = 5`: 20 model
//! features), the likelihood, range check and refractory per series, on
//! the CPU. Each detector has trained (inline) before it is timed.
//! `cargo bench --bench detector` (release build).

use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::Schema;
use telemine_detector::Detector;
use telemine_sql::{SqlSet, View, ViewScorer};

const SERIES: usize = 4096;
const T0: i64 = 1_764_201_600_000;

fn setup(dir: &std::path::Path, kind: &str) -> (telemine::config::Config, SqlSet) {
    std::fs::create_dir_all(dir.join("sql/features")).expect("dir");
    std::fs::write(
        dir.join("sql/features/host_1m.sql"),
        "SELECT host, window_start, window_end, avg(a) AS a, avg(b) AS b, avg(c) AS c, avg(d) AS d, avg(e) AS e\n\
         FROM TUMBLE(telemetry, ts, INTERVAL '1 minute')\n\
         GROUP BY host, window_start, window_end\n",
    )
    .expect("view");
    let past = if kind == "profile" { 0 } else { 5 };
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "unused:9092"

[[sources]]
name = "telemetry"
topic = "telemetry"
columns = ["ts timestamp", "host string", "a double", "b double", "c double", "d double", "e double"]
event_time = "ts"

[sql]
dir = "sql"

[[models]]
name = "m"
view = "host_1m"
features = ["a", "b", "c", "d", "e"]
kind = "{kind}"
device = "cpu"
epochs = 3
past_windows = {past}
warmup_windows = 20
retrain_windows = 0
training_rows = 20000
range_margin = 0.02
refractory_windows = 5
"#
    );
    let path = dir.join("telemine.toml");
    std::fs::write(&path, text).expect("config");
    let config = telemine::config::Config::load(&path).expect("config loads");
    let defs = config.source_defs().expect("sources");
    let sql = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(SqlSet::load(&config.sql.dir, &defs, &config.sql_options()))
        .expect("sql");
    (config, sql)
}

/// Window `w` of every series, as the view's SQL outputs it.
fn window(view: &View, w: i64) -> RecordBatch {
    let fields = view.output_schema.fields();
    let schema = Arc::new(Schema::new(fields[..fields.len() - 2].to_vec()));
    let value = |s: usize, j: usize| {
        let t = w as f64 / 17.0 + s as f64;
        10.0 * (j + 1) as f64
            + (t * (1.0 + j as f64 * 0.1)).sin()
            + ((s * 31 + j) % 7) as f64 * 0.01
    };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            (0..SERIES).map(|s| format!("h{s}")).collect::<Vec<_>>(),
        )),
        Arc::new(TimestampMillisecondArray::from(vec![
            T0 + w * 60_000;
            SERIES
        ])),
        Arc::new(TimestampMillisecondArray::from(vec![
            T0 + (w + 1) * 60_000;
            SERIES
        ])),
    ];
    for j in 0..5 {
        columns.push(Arc::new(Float64Array::from(
            (0..SERIES).map(|s| value(s, j)).collect::<Vec<_>>(),
        )));
    }
    RecordBatch::try_new(schema, columns).expect("batch")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("detector");
    group.sample_size(10);
    group.throughput(Throughput::Elements(SERIES as u64));
    for kind in ["pca", "kmeans", "nearest", "autoencoder", "profile"] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (config, sql) = setup(dir.path(), kind);
        let view = sql
            .views
            .iter()
            .find(|v| v.name == "host_1m")
            .expect("view");
        let detector =
            Detector::new(config.models[0].settings().expect("settings"), false).expect("detector");
        let mut w = 0i64;
        // Warm-up and training, untimed.
        while w < 30 {
            detector.score(view, vec![window(view, w)]).expect("score");
            w += 1;
        }
        // Each iteration a new window (its batch built untimed).
        group.bench_function(kind, |b| {
            b.iter_batched(
                || {
                    w += 1;
                    window(view, w)
                },
                |batch| detector.score(view, vec![batch]).expect("score"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
