//! Feature rows scored per second by each detector, on the CPU: one batch
//! of 65,536 rows × 19 features (ASD's width), copied to the device,
//! normalised and scored in one pass. `cargo bench --workspace --bench scoring`
//! (GPU figures: scripts/gpu-check.sh).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use telemine_model::{Device, Frame, History, ModelKind, Scorer, TrainOptions};

const FEATURES: usize = 19;
const ROWS: usize = 65_536;

fn rows(n: usize) -> (Frame, Vec<String>) {
    let mut data = Vec::with_capacity(n * FEATURES);
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let t = (i / 64) as f32 * 0.13 + (i % 64) as f32;
        for j in 0..FEATURES {
            data.push(0.5 + 0.2 * (t * (1.0 + j as f32 * 0.05)).sin());
        }
        keys.push(format!("server-{}", i % 64));
    }
    (Frame::new(n, FEATURES, data).expect("frame"), keys)
}

fn bench(c: &mut Criterion) {
    let (train, train_keys) = rows(8_192);
    let (batch, keys) = rows(ROWS);
    let mut group = c.benchmark_group("scoring");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ROWS as u64));
    for kind in ["autoencoder", "sequence", "pca", "kmeans"] {
        let scorer = Scorer::train(
            ModelKind::named(kind, FEATURES).expect("kind"),
            (1..=FEATURES).map(|i| format!("m{i}")).collect(),
            &train,
            &train_keys,
            &TrainOptions {
                epochs: 3,
                ..TrainOptions::default()
            },
            &Device::Cpu,
            &mut |_| {},
        )
        .expect("train");
        group.bench_function(kind, |b| {
            b.iter(|| match scorer.context_len() {
                Some(len) => {
                    let mut h = History::new(len, FEATURES);
                    let (ctx, full) = h.contexts(&keys, &batch);
                    scorer.score(&batch, Some((&ctx, &full))).expect("score")
                }
                None => scorer.score(&batch, None).expect("score"),
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
