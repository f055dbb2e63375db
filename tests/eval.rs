//! `telemine eval` over small corpora in NAB's and ASD's layouts, made
//! here (the real ones live in ../shared/data and are not needed to test;
//! the one test that reads them skips, saying so, where they are absent).

mod support;

use std::path::Path;
use std::process::Command;

fn eval(data: &Path, detector: &str, out: &Path) -> String {
    support::stdout_of(
        Command::new(env!("CARGO_BIN_EXE_telemine"))
            .args(["eval", "--epochs", "5", "--detector", detector, "--data"])
            .arg(data)
            .arg("--out")
            .arg(out),
    )
}

#[test]
fn nab_layout_gives_a_score_per_profile_and_results_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nab");
    std::fs::create_dir_all(data.join("labels")).unwrap();
    std::fs::create_dir_all(data.join("data/demo")).unwrap();
    // 1,200 records every 5 minutes from 2020-01-01; a spike at record
    // 1,000, inside the labelled window.
    let start = chrono::NaiveDate::from_ymd_opt(2020, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let at = |i: i64| {
        (start + chrono::Duration::minutes(5 * i))
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    let mut csv = String::from("timestamp,value\n");
    for i in 0..1200 {
        let v = 10.0 + (i as f64 * 0.2).sin() + if i == 1000 { 15.0 } else { 0.0 };
        csv.push_str(&format!("{},{v}\n", at(i)));
    }
    std::fs::write(data.join("data/demo/spike.csv"), csv).unwrap();
    std::fs::write(
        data.join("labels/combined_windows.json"),
        format!(
            r#"{{"demo/spike.csv": [["{}.000000", "{}.000000"]]}}"#,
            at(980),
            at(1020)
        ),
    )
    .unwrap();
    let out = dir.path().join("results");
    let stdout = eval(&data, "pca", &out);
    assert!(
        stdout.contains("nab pca: 1 series, 1200 records, 1 windows;"),
        "{stdout}"
    );
    for profile in ["standard", "reward_low_FP_rate", "reward_low_FN_rate"] {
        assert!(stdout.contains(profile), "{stdout}");
    }
    let results = std::fs::read_to_string(out.join("pca/demo/pca_spike.csv")).unwrap();
    let mut lines = results.lines();
    assert_eq!(lines.next(), Some("timestamp,value,anomaly_score,label"));
    assert_eq!(results.lines().count(), 1201);
    let spike = results.lines().nth(1001).unwrap();
    let score: f64 = spike.split(',').nth(2).unwrap().parse().unwrap();
    assert!(score > 0.99, "the spike scores {score}: {spike}");
    assert!(spike.ends_with(",1"), "{spike}");
}

/// A server in ASD's layout under `dir/asd`, records `spacing_s` seconds
/// apart from 2021-01-01: 600 training rows, 300 test rows. Six metrics
/// driven by one signal; in test rows 100–120 m2 breaks away.
fn asd_corpus(dir: &Path, spacing_s: i64) -> std::path::PathBuf {
    let data = dir.join("asd");
    std::fs::create_dir_all(&data).unwrap();
    let row = |i: usize, broken: bool| {
        let a = 0.5 + 0.2 * (i as f64 * 0.05).sin();
        let m2 = if broken { 0.95 } else { 0.8 * a };
        format!(
            "{a:.4},{m2:.4},{:.4},{:.4},{:.4},{:.4}",
            1.0 - a,
            0.5 * a + 0.2,
            0.3 + 0.5 * (a - 0.5),
            a * a
        )
    };
    let at = |i: usize| {
        chrono::DateTime::from_timestamp(1_609_459_200 + spacing_s * i as i64, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let mut train = String::from("timestamp,m1,m2,m3,m4,m5,m6\n");
    for i in 0..600 {
        train.push_str(&format!("{},{}\n", at(i), row(i, false)));
    }
    let mut test = String::from("timestamp,m1,m2,m3,m4,m5,m6,label\n");
    for i in 0..300 {
        let broken = (100..=120).contains(&i);
        test.push_str(&format!(
            "{},{},{}\n",
            at(600 + i),
            row(600 + i, broken),
            u8::from(broken)
        ));
    }
    std::fs::write(data.join("omi-1.train.csv"), train).unwrap();
    std::fs::write(data.join("omi-1.test.csv"), test).unwrap();
    std::fs::write(data.join("omi-1.txt"), "100-120:2\n").unwrap();
    data
}

#[test]
fn asd_layout_at_any_spacing_scores_every_row() {
    // One-minute records, as SMD-like servers have.
    let dir = tempfile::tempdir().unwrap();
    let data = asd_corpus(dir.path(), 60);
    let stdout = eval(&data, "profile", &dir.path().join("results"));
    assert!(
        stdout.contains("asd profile: 1 servers, 300 test rows (21 anomalous)"),
        "{stdout}"
    );
}

#[test]
fn asd_layout_gives_pointwise_figures_and_explanations() {
    let dir = tempfile::tempdir().unwrap();
    let data = asd_corpus(dir.path(), 300);
    for detector in ["pca", "profile"] {
        let out = dir.path().join(format!("results-{detector}"));
        let stdout = eval(&data, detector, &out);
        assert!(
            stdout.contains(&format!(
                "asd {detector}: 1 servers, 300 test rows (21 anomalous)"
            )),
            "{stdout}"
        );
        let f1: f64 = stdout
            .split("point-wise")
            .nth(1)
            .and_then(|s| s.split("F1 ").nth(1))
            .and_then(|s| s.split([';', ' ']).next())
            .and_then(|s| s.trim().parse().ok())
            .expect("F1 in the output");
        assert!(f1 > 0.8, "{stdout}");
        // The explanation names m2 first; three of six at random would
        // hit half the time.
        assert!(
            stdout.contains("rows (100.0%; three features at random: 50.0%)"),
            "{stdout}"
        );
        // Per test row: time, score, flag, label, top features.
        let rows = std::fs::read_to_string(out.join(format!("asd/{detector}/omi-1.csv"))).unwrap();
        let mut lines = rows.lines();
        assert_eq!(
            lines.next(),
            Some("timestamp,anomaly_score,flag,label,top_features")
        );
        let broken = lines.nth(110).unwrap();
        assert!(
            broken.starts_with("2021-01-03T11:10:00Z,")
                && broken.contains(",1,1,\"m2 higher than expected "),
            "{broken}"
        );
    }
}

/// The scores `eval` writes for a NAB series are exactly what `dry-run`
/// gives with `config/examples/nab.toml` over the same CSV: one scoring
/// path, and the example is the config `eval` runs.
#[test]
fn dry_run_with_the_example_config_gives_the_scores_eval_writes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("tests/fixtures/nab");
    let series = "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    // The default epochs, as the example says (1-NN ignores them).
    let stdout = support::stdout_of(
        Command::new(env!("CARGO_BIN_EXE_telemine"))
            .args(["eval", "--detector", "nearest", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&out),
    );
    assert!(
        stdout.contains("nab nearest: 1 series, 4032 records"),
        "{stdout}"
    );

    // The config eval wrote is the example, but for where its SQL is.
    let written = std::fs::read_to_string(
        out.join("configs/nearest")
            .join(series.replace(".csv", ".toml")),
    )
    .unwrap();
    let example = std::fs::read_to_string(root.join("config/examples/nab.toml")).unwrap();
    let without_dir = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("dir = "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(without_dir(&written), without_dir(&example));

    let scores = dir.path().join("scores.csv");
    support::stdout_of(
        Command::new(env!("CARGO_BIN_EXE_telemine"))
            .arg("dry-run")
            .arg("--config")
            .arg(root.join("config/examples/nab.toml"))
            .arg("--input")
            .arg(data.join("data").join(series))
            .arg("--scores")
            .arg(&scores),
    );
    let dry: Vec<String> = std::fs::read_to_string(&scores)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let score = l.split(',').nth(4).unwrap();
            // A row scored NULL (none here: the range check scores from
            // the first record) is a 0 in NAB's results.
            if score.is_empty() {
                "0".into()
            } else {
                score.to_string()
            }
        })
        .collect();
    let evaluated: Vec<String> = std::fs::read_to_string(
        out.join("nearest/realAWSCloudwatch/nearest_ec2_cpu_utilization_5f5533.csv"),
    )
    .unwrap()
    .lines()
    .skip(1)
    .map(|l| l.split(',').nth(2).unwrap().to_string())
    .collect();
    assert_eq!(
        dry.len(),
        4032,
        "one scored row per record (no duplicate timestamps)"
    );
    assert_eq!(dry, evaluated, "dry-run and eval scores differ");
    assert!(
        evaluated
            .iter()
            .filter(|s| s.parse::<f64>().unwrap() > 0.5)
            .count()
            >= 2,
        "the detector fires somewhere"
    );
}

/// On days of real servers it has not seen, the profile detector's score
/// means what it says: its label-free threshold (0.5, its training
/// scores' 0.99 quantile) is passed by about 1% of the rows the labels
/// call normal. Four of ASD's servers, from ../shared/data/asd.
#[test]
fn the_profile_score_is_calibrated_on_unseen_days_of_real_servers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let asd = root.join("../shared/data/asd");
    if !asd.join("omi-1.train.csv").exists() {
        eprintln!(
            "skipped: {} is absent (the shared benchmark data)",
            asd.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("asd");
    std::fs::create_dir_all(&data).unwrap();
    for server in ["omi-1", "omi-2", "omi-3", "omi-4"] {
        for ext in ["train.csv", "test.csv", "txt"] {
            let name = format!("{server}.{ext}");
            std::fs::copy(asd.join(&name), data.join(&name)).unwrap();
        }
    }
    let stdout = eval(&data, "profile", &dir.path().join("out"));
    // "calibration: 1.06% of the 16487 label-normal test rows score at
    // least 0.5 (1.00% of training rows do)"
    let share: f64 = stdout
        .split("calibration: ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no calibration figure in:\n{stdout}"));
    assert!(
        (0.5..=2.0).contains(&share),
        "{share}% of normal rows above the 1% threshold:\n{stdout}"
    );
}

/// A blend runs through the same engine path as its members: each row's
/// score is the geometric mean of what the members alone score it.
#[test]
fn a_blend_scores_each_record_the_geometric_mean_of_its_members() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = root.join("tests/fixtures/nab");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let stdout = eval(&data, "nearest,kmeans,nearest+kmeans", &out);
    assert!(
        stdout.contains("nab nearest+kmeans: 1 series, 4032 records"),
        "{stdout}"
    );
    let scores = |d: &str| -> Vec<f64> {
        std::fs::read_to_string(out.join(format!(
            "{d}/realAWSCloudwatch/{d}_ec2_cpu_utilization_5f5533.csv"
        )))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect()
    };
    let (a, b, blend) = (
        scores("nearest"),
        scores("kmeans"),
        scores("nearest+kmeans"),
    );
    assert_eq!((a.len(), b.len()), (blend.len(), blend.len()));
    for (i, ((x, y), s)) in a.iter().zip(&b).zip(&blend).enumerate() {
        assert!(
            (s - (x * y).sqrt()).abs() < 1e-12,
            "record {i}: {s} from {x} and {y}"
        );
    }
    assert!(blend.iter().any(|s| *s > 0.5), "the blend fires somewhere");
}
