//! Every detector, trained on rows of correlated features, scores rows that
//! break the correlations above the rows like its training data, names the
//! broken feature first, and scores the same after a save and a load.

use telemine_model::{Device, Frame, History, ModelKind, Scorer, TrainOptions};

const FEATURES: usize = 6;
const KEYS: usize = 8;

/// A deterministic generator (tests use no outside randomness).
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

/// `per_key` windows for each key, key by key in time order: two slow
/// latent signals drive all six features (plus a little noise).
fn rows(per_key: usize, offset: usize, rng: &mut Lcg) -> (Frame, Vec<String>) {
    let (mut data, mut keys) = (Vec::new(), Vec::new());
    for k in 0..KEYS {
        for t in offset..offset + per_key {
            let phase = t as f32 * 0.21 + k as f32;
            let (a, b) = (phase.sin(), (phase * 0.37).cos());
            let row = [a, b, a + b, a - 0.5 * b, 2.0 * a, -b];
            for v in row {
                data.push(10.0 + 3.0 * v + 0.05 * rng.unit());
            }
            keys.push(format!("host-{k}"));
        }
    }
    let n = keys.len();
    (Frame::new(n, FEATURES, data).unwrap(), keys)
}

/// `frame` with feature `broken` pushed off its correlation in every row.
fn broken(frame: &Frame, broken: usize) -> Frame {
    let mut f = frame.clone();
    for i in 0..f.rows {
        f.data[i * f.cols + broken] += 9.0;
    }
    f
}

fn score(
    scorer: &Scorer,
    frame: &Frame,
    keys: &[String],
    history: Option<History>,
) -> telemine_model::Scored {
    match (scorer.context_len(), history) {
        (Some(_), Some(mut h)) => {
            let (ctx, full) = h.contexts(keys, frame);
            scorer.score(frame, Some((&ctx, &full))).unwrap()
        }
        _ => scorer.score(frame, None).unwrap(),
    }
}

fn check(kind: &str) {
    let device = Device::Cpu;
    let mut rng = Lcg(3);
    let (train, train_keys) = rows(300, 0, &mut rng);
    let (test, test_keys) = rows(40, 300, &mut rng);
    let names: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
    let mut epochs_seen = 0;
    let mut scorer = Scorer::train(
        ModelKind::named(kind, FEATURES).unwrap(),
        names,
        &train,
        &train_keys,
        &TrainOptions {
            epochs: 25,
            ..TrainOptions::default()
        },
        &device,
        &mut |p| epochs_seen = p.epoch,
    )
    .unwrap();
    // A sequence model reads each key's previous windows: warm its history
    // on the end of the training data.
    let history = scorer.context_len().map(|len| {
        let mut h = History::new(len, FEATURES);
        h.contexts(&train_keys, &train);
        h
    });
    let normal = score(&scorer, &test, &test_keys, history.clone());
    let bad = score(&scorer, &broken(&test, 3), &test_keys, history.clone());
    let median = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v[v.len() / 2]
    };
    eprintln!(
        "{kind}: loss {:.4}, normal median {:.3}, broken median {:.4}, named {}",
        scorer.sidecar().training.final_loss,
        median(&normal.score),
        median(&bad.score),
        (0..bad.score.len())
            .filter(|&i| bad.top(i, 1) == [3])
            .count()
    );
    assert!(
        median(&normal.score) < 0.95,
        "{kind}: normal rows score {}",
        median(&normal.score)
    );
    let flagged = bad.score.iter().filter(|&&s| s > 0.99).count();
    assert!(
        flagged * 10 >= bad.score.len() * 9,
        "{kind}: {flagged} of {} broken rows above 0.99",
        bad.score.len()
    );
    let named = (0..bad.score.len())
        .filter(|&i| bad.top(i, 1) == [3])
        .count();
    assert!(
        named * 10 >= bad.score.len() * 8,
        "{kind}: the broken feature is named first in {named} of {} rows",
        bad.score.len()
    );
    // The same scores after a save and a load.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{kind}.json"));
    scorer.save(&path).unwrap();
    assert!(path.with_extension("safetensors").exists());
    let loaded = Scorer::load(&path, &device).unwrap();
    let again = score(&loaded, &broken(&test, 3), &test_keys, history);
    for (a, b) in bad.error.iter().zip(&again.error) {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{kind}: {a} vs {b}"
        );
    }
    assert_eq!(loaded.sidecar(), scorer.sidecar());
    // And as bytes (what the engine saves with its state).
    let (sidecar, weights) = scorer.to_bytes().unwrap();
    let from_bytes = Scorer::from_bytes(&sidecar, &weights, &device).unwrap();
    let history = from_bytes.context_len().map(|len| {
        let mut h = History::new(len, FEATURES);
        h.contexts(&train_keys, &train);
        h
    });
    let thrice = score(&from_bytes, &broken(&test, 3), &test_keys, history);
    assert_eq!(thrice.error, again.error, "{kind}: from bytes");
    let trained = matches!(kind, "autoencoder" | "sequence");
    assert_eq!(epochs_seen > 0, trained, "{kind}: progress reported");
}

#[test]
fn autoencoder() {
    check("autoencoder");
}

#[test]
fn sequence() {
    check("sequence");
}

#[test]
fn pca() {
    check("pca");
}

#[test]
fn kmeans() {
    check("kmeans");
}

#[test]
fn nearest() {
    check("nearest");
}

/// Rows a server really sends: a metric that never moves, metrics that move
/// as one, all zeros, a single row. Training on them may fail with an
/// error, never panic, and a model that trains scores finite values.
#[test]
fn degenerate_training_rows_never_panic() {
    let k = 4;
    let cases: Vec<(&str, Vec<f32>)> = vec![
        ("constant", vec![3.0; 64 * k]),
        ("zeros", vec![0.0; 64 * k]),
        (
            "collinear",
            (0..64)
                .flat_map(|i| [i as f32, i as f32, 2.0 * i as f32, 7.0])
                .collect(),
        ),
        ("one row", vec![1.0, 2.0, 3.0, 4.0]),
        (
            "huge and tiny",
            (0..64)
                .flat_map(|i| [1e30 + i as f32, 1e-30, -1e30, 0.0])
                .collect(),
        ),
    ];
    for kind in ["pca", "kmeans", "nearest", "autoencoder"] {
        for (name, data) in &cases {
            let n = data.len() / k;
            let frame = Frame::new(n, k, data.clone()).unwrap();
            let keys: Vec<String> = (0..n).map(|i| format!("h{}", i % 3)).collect();
            let trained = Scorer::train(
                ModelKind::named(kind, k).unwrap(),
                (0..k).map(|j| format!("f{j}")).collect(),
                &frame,
                &keys,
                &TrainOptions {
                    epochs: 2,
                    ..TrainOptions::default()
                },
                &Device::Cpu,
                &mut |_| {},
            );
            if let Ok(scorer) = trained {
                let scored = scorer.score(&frame, None).unwrap();
                assert!(
                    scored.score.iter().all(|s| s.is_finite()),
                    "{kind} on {name}: {:?}",
                    scored.score
                );
            }
        }
    }
}
