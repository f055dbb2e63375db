//! CPU and CUDA score the same batch alike. Runs only where the crate is
//! built with `cuda` and a GPU is present; elsewhere it says why it skips
//! (`scripts/gpu-check.sh` is the same check with throughput figures).

use telemine_model::{Device, Frame, ModelKind, Scorer, TrainOptions};

#[test]
fn cuda_scores_agree_with_cpu() {
    if !cfg!(feature = "cuda") {
        eprintln!("skipped: built without the `cuda` feature (see scripts/gpu-check.sh)");
        return;
    }
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("skipped: no usable CUDA GPU here ({e})");
            return;
        }
    };
    let n = 4096;
    let data: Vec<f32> = (0..n * 5)
        .map(|i| ((i / 5) as f32 * 0.01 + (i % 5) as f32).sin())
        .collect();
    let frame = Frame::new(n, 5, data).unwrap();
    let keys: Vec<String> = (0..n).map(|i| format!("k{}", i % 8)).collect();
    for kind in ["autoencoder", "pca", "kmeans"] {
        let mut trained = Scorer::train(
            ModelKind::named(kind, 5).unwrap(),
            (0..5).map(|i| format!("f{i}")).collect(),
            &frame,
            &keys,
            &TrainOptions {
                epochs: 5,
                ..TrainOptions::default()
            },
            &Device::Cpu,
            &mut |_| {},
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        trained.save(&path).unwrap();
        let cpu = Scorer::load(&path, &Device::Cpu)
            .unwrap()
            .score(&frame, None)
            .unwrap();
        let cuda = Scorer::load(&path, &gpu)
            .unwrap()
            .score(&frame, None)
            .unwrap();
        for (a, b) in cpu.score.iter().zip(&cuda.score) {
            assert!((a - b).abs() < 1e-3, "{kind}: cpu {a}, cuda {b}");
        }
    }
}
