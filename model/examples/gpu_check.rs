//! CPU against CUDA on the same batch: the same checkpoint scored on both
//! devices must agree within tolerance; prints rows/s on each.
//!
//! ```sh
//! source scripts/cuda-env.sh   # nvcc 13.0 for candle's kernels
//! cargo build --release -p telemine-model --features cuda --example gpu_check
//! target/release/examples/gpu_check [ROWS]
//! ```
//!
//! Without the `cuda` feature, or without a GPU, it says so and exits 0
//! after the CPU half.

use std::time::Instant;

use telemine_model::{Device, Frame, History, ModelKind, Scorer, TrainOptions};

const FEATURES: usize = 19;
const KEYS: usize = 64;

/// Rows of `FEATURES` correlated features, key by key in time order.
fn rows(n: usize, seed: u64) -> (Frame, Vec<String>) {
    let mut state = seed;
    let mut noise = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let per_key = n.div_ceil(KEYS);
    let (mut data, mut keys) = (Vec::with_capacity(n * FEATURES), Vec::with_capacity(n));
    'all: for k in 0..KEYS {
        for t in 0..per_key {
            if keys.len() == n {
                break 'all;
            }
            let phase = t as f32 * 0.13 + k as f32;
            let (a, b, c) = (phase.sin(), (phase * 0.41).cos(), (phase * 0.07).sin());
            for j in 0..FEATURES {
                let w = j as f32 / FEATURES as f32;
                data.push(
                    0.5 + 0.2 * (a * w + b * (1.0 - w) + c * (j % 3) as f32 * 0.3) + 0.02 * noise(),
                );
            }
            keys.push(format!("server-{k}"));
        }
    }
    (Frame::new(keys.len(), FEATURES, data).expect("frame"), keys)
}

fn score(s: &Scorer, frame: &Frame, keys: &[String]) -> telemine_model::Scored {
    match s.context_len() {
        Some(len) => {
            let mut h = History::new(len, frame.cols);
            let (ctx, full) = h.contexts(keys, frame);
            s.score(frame, Some((&ctx, &full))).expect("score")
        }
        None => s.score(frame, None).expect("score"),
    }
}

fn rows_per_second(s: &Scorer, frame: &Frame, keys: &[String], batch: usize) -> f64 {
    // One warm-up batch (kernel loading, allocator), then the timed pass.
    let first = frame.select(&(0..batch.min(frame.rows)).collect::<Vec<_>>());
    score(s, &first, &keys[..first.rows]);
    let started = Instant::now();
    let mut done = 0;
    while done < frame.rows {
        let idx: Vec<usize> = (done..(done + batch).min(frame.rows)).collect();
        let part = frame.select(&idx);
        score(s, &part, &keys[done..done + idx.len()]);
        done += idx.len();
    }
    frame.rows as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_048_576);
    let batch = 65_536;
    let dir = std::env::temp_dir().join("telemine-gpu-check");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (train, train_keys) = rows(20_000, 1);
    let (test, test_keys) = rows(total, 2);
    let cuda = if cfg!(feature = "cuda") {
        match Device::new_cuda(0) {
            Ok(d) => Some(d),
            Err(e) => {
                println!("no usable CUDA GPU ({e}): CPU only");
                None
            }
        }
    } else {
        println!("built without the `cuda` feature: CPU only");
        None
    };
    let mut worst = 0f64;
    for kind in ["autoencoder", "sequence", "pca", "kmeans"] {
        let mut trained = Scorer::train(
            ModelKind::named(kind, FEATURES).expect("kind"),
            (1..=FEATURES).map(|i| format!("m{i}")).collect(),
            &train,
            &train_keys,
            &TrainOptions {
                epochs: 10,
                ..TrainOptions::default()
            },
            &Device::Cpu,
            &mut |_| {},
        )
        .expect("train");
        let path = dir.join(format!("{kind}.json"));
        trained.save(&path).expect("save");
        let on_cpu = Scorer::load(&path, &Device::Cpu).expect("load on CPU");
        let same = test.select(&(0..batch.min(test.rows)).collect::<Vec<_>>());
        let cpu = score(&on_cpu, &same, &test_keys[..same.rows]);
        let cpu_rate = rows_per_second(&on_cpu, &test, &test_keys, batch);
        let Some(device) = &cuda else {
            println!("{kind}: cpu {cpu_rate:.0} rows/s");
            continue;
        };
        let on_gpu = Scorer::load(&path, device).expect("load on CUDA");
        let gpu = score(&on_gpu, &same, &test_keys[..same.rows]);
        let (mut max_err, mut max_score) = (0f64, 0f64);
        for (a, b) in cpu.error.iter().zip(&gpu.error) {
            let rel = ((a - b).abs() / a.abs().max(1e-6)) as f64;
            max_err = max_err.max(rel);
        }
        for (a, b) in cpu.score.iter().zip(&gpu.score) {
            max_score = max_score.max((a - b).abs() as f64);
        }
        let tops = (0..same.rows)
            .filter(|&i| cpu.top(i, 3) == gpu.top(i, 3))
            .count();
        let gpu_rate = rows_per_second(&on_gpu, &test, &test_keys, batch);
        worst = worst.max(max_score);
        println!(
            "{kind}: {} rows, max relative error difference {max_err:.2e}, max score difference {max_score:.2e}, same top-3 features in {tops}; cpu {cpu_rate:.0} rows/s, cuda {gpu_rate:.0} rows/s ({:.1}x)",
            same.rows,
            gpu_rate / cpu_rate
        );
    }
    if worst > 1e-3 {
        println!("FAIL: CPU and CUDA scores differ by up to {worst:.2e}");
        std::process::exit(1);
    }
}
