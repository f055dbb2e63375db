//! Window + SQL evaluation: the default feature views and rules over ten
//! minutes of telemetry from 512 hosts (307,200 rows), fed in decoded
//! batches of 8192 so windows close as the watermark advances.
//!
//! `cargo bench --bench window_sql`

use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::RecordBatch;
use telemine::config::Config;
use telemine_codec::decode::decoder_for;
use telemine_connectors::generator::{Generator, GeneratorConfig, Stream};
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_stream::WindowEngine;

const SECONDS: usize = 600;

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = Config::load(&root.join("config/telemine.toml")).expect("default config");
    let defs = config.source_defs().expect("sources");
    let mut decoder = decoder_for(
        &defs[0].format,
        &defs[0].influx,
        &defs[0].schema,
        8192,
        &defs[0].limits,
    )
    .expect("decoder");
    let mut generator = Generator::new(GeneratorConfig {
        late_fraction: 0.0,
        ..Default::default()
    });
    let mut batches: Vec<RecordBatch> = Vec::new();
    let mut offset = 0i64;
    for _ in 0..SECONDS {
        generator.emit_second(&mut |s, _, p| {
            if s == Stream::Telemetry {
                decoder.push(p, 0, offset);
                offset += 1;
            }
        });
        if decoder.buffered() >= 8192 {
            batches.extend(decoder.flush().batch);
        }
    }
    batches.extend(decoder.flush().batch);
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();

    let mut group = c.benchmark_group("window_sql");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function("tumbling_1m_default_views_and_rules", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let sql = SqlSet::load(&config.sql.dir, &defs, &config.sql_options())
                    .await
                    .expect("default SQL");
                let mut engine = WindowEngine::new(sql, &defs, Arc::new(Metrics::default()));
                let mut alerts = 0;
                for batch in &batches {
                    alerts += engine.ingest(0, batch.clone()).await.expect("ingest").len();
                }
                alerts += engine.finish().await.expect("finish").len();
                alerts
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
