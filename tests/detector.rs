//! The streaming detector's state: saved and restored, it scores on as if
//! it had never stopped — no second warm-up, no repeated alarm — and its
//! scores do not depend on how the rows were batched.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use datafusion::arrow::datatypes::{Float64Type, Schema};
use telemine_detector::Detector;
use telemine_sql::{SqlSet, View, ViewScorer};

const T0: i64 = 1_764_201_600_000;
const HOSTS: usize = 3;

fn setup(dir: &std::path::Path) -> (telemine::config::Config, SqlSet) {
    std::fs::create_dir_all(dir.join("sql/features")).unwrap();
    std::fs::write(
        dir.join("sql/features/host_10s.sql"),
        "SELECT host, window_start, window_end, avg(v) AS v, avg(w) AS w\n\
         FROM TUMBLE(telemetry, ts, INTERVAL '10 seconds')\n\
         GROUP BY host, window_start, window_end\n",
    )
    .unwrap();
    let text = r#"
[kafka]
bootstrap_servers = "unused:9092"

[[sources]]
name = "telemetry"
topic = "telemetry"
columns = ["ts timestamp", "host string", "v double", "w double"]
event_time = "ts"

[sql]
dir = "sql"

[[models]]
name = "m"
view = "host_10s"
features = ["v", "w"]
kind = "nearest"
device = "cpu"
past_windows = 4
warmup_windows = 20
retrain = "doubling"
score = "likelihood"
range_margin = 0.02
median_range_windows = 4
refractory_windows = 5
rank_history = 50
"#;
    let path = dir.join("telemine.toml");
    std::fs::write(&path, text).unwrap();
    let config = telemine::config::Config::load(&path).unwrap();
    let defs = config.source_defs().unwrap();
    let sql = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(SqlSet::load(&config.sql.dir, &defs, &config.sql_options()))
        .unwrap();
    (config, sql)
}

/// Window `w` of every host, as the view's SQL outputs it (rows in an
/// order that changes from window to window, as a hash aggregate's do).
fn window(view: &View, w: i64) -> RecordBatch {
    let fields = view.output_schema.fields();
    let schema = Arc::new(Schema::new(fields[..fields.len() - 2].to_vec()));
    let mut hosts: Vec<usize> = (0..HOSTS).collect();
    hosts.rotate_left(w as usize % HOSTS);
    let v: Vec<f64> = hosts
        .iter()
        .map(|&h| {
            let base = 10.0 * h as f64 + (w as f64 / 7.0 + h as f64).sin();
            // Host 1 breaks away at window 150.
            if h == 1 && (150..155).contains(&w) {
                base + 0.8
            } else {
                base
            }
        })
        .collect();
    let w_col: Vec<f64> = v.iter().map(|x| 2.0 * x + 1.0).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            hosts.iter().map(|h| format!("h{h}")).collect::<Vec<_>>(),
        )),
        Arc::new(TimestampMillisecondArray::from(vec![
            T0 + w * 10_000;
            HOSTS
        ])),
        Arc::new(TimestampMillisecondArray::from(vec![
            T0 + (w + 1) * 10_000;
            HOSTS
        ])),
        Arc::new(Float64Array::from(v)),
        Arc::new(Float64Array::from(w_col)),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

/// Each host's score, by host name, from scored batches.
fn scores(out: &[RecordBatch]) -> Vec<(String, Option<f64>)> {
    let mut rows = Vec::new();
    for b in out {
        let hosts = b.column(0).as_string::<i32>();
        let s = b.column(b.num_columns() - 2).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            rows.push((
                hosts.value(i).to_string(),
                (!s.is_null(i)).then(|| s.value(i)),
            ));
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

#[test]
fn a_restored_detector_scores_as_if_it_had_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let model = &config.models[0];

    let whole = Detector::new(model.settings().unwrap(), false).unwrap();
    let uninterrupted: Vec<_> = (0..200)
        .map(|w| scores(&whole.score(view, vec![window(view, w)]).unwrap()))
        .collect();

    let first = Detector::new(model.settings().unwrap(), false).unwrap();
    for w in 0..120 {
        first.score(view, vec![window(view, w)]).unwrap();
    }
    let saved = first.save().unwrap().expect("state to save");
    assert!(saved.model.is_some(), "the model trained online is saved");
    assert!(first.save().unwrap().is_none(), "nothing new to save");
    let restarted = Detector::new(model.settings().unwrap(), false).unwrap();
    restarted
        .restore(&saved.state, saved.model.as_deref(), |seg| {
            segment_of(&saved, seg)
        })
        .unwrap();
    for (w, expected) in uninterrupted.iter().enumerate().skip(120) {
        let got = scores(&restarted.score(view, vec![window(view, w as i64)]).unwrap());
        assert_eq!(&got, expected, "window {w}");
    }
    // The break was found, once per burst, by both.
    let alarms: Vec<usize> = (150..160)
        .filter(|&w| uninterrupted[w][1].1.is_some_and(|s| s > 0.5))
        .collect();
    assert!(!alarms.is_empty(), "host 1's break scores high");

    // Without its state, a restart warms up again: no model, so no
    // features named (the range check alone scores, 0 here).
    let fresh = Detector::new(model.settings().unwrap(), false).unwrap();
    let cold = fresh.score(view, vec![window(view, 120)]).unwrap();
    let named = cold[0].column(cold[0].num_columns() - 1);
    assert_eq!(named.null_count(), HOSTS, "no model yet");

    // State saved under other settings is refused, not misread.
    let mut other = model.clone();
    other.past_windows = 3;
    let changed = Detector::new(other.settings().unwrap(), false).unwrap();
    assert!(matches!(
        changed.restore(&saved.state, saved.model.as_deref(), |seg| {
            segment_of(&saved, seg)
        }),
        Err(telemine_detector::DetectorError::OtherSettings { .. })
    ));
}

#[test]
fn batching_does_not_change_a_score() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let model = &config.models[0];
    let one_by_one = Detector::new(model.settings().unwrap(), false).unwrap();
    let mut a = Vec::new();
    for w in 0..200 {
        a.extend(scores(
            &one_by_one.score(view, vec![window(view, w)]).unwrap(),
        ));
    }
    // The same windows, 50 at a time, in one call each and newest first
    // within the call.
    let in_bulk = Detector::new(model.settings().unwrap(), false).unwrap();
    let mut b = Vec::new();
    for chunk in (0..200).collect::<Vec<i64>>().chunks(50) {
        let batches: Vec<RecordBatch> = chunk.iter().rev().map(|&w| window(view, w)).collect();
        let out = in_bulk.score(view, batches).unwrap();
        // Back to window order to compare.
        for batch in out.iter().rev() {
            b.extend(scores(std::slice::from_ref(batch)));
        }
    }
    assert_eq!(a, b);
}

#[test]
fn more_series_than_max_series_forgets_the_stalest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let mut model = config.models[0].clone();
    model.max_series = 2;
    let d = Detector::new(model.settings().unwrap(), false).unwrap();
    for w in 0..30 {
        d.score(view, vec![window(view, w)]).unwrap();
    }
    let (held, forgotten) = d.series();
    assert_eq!(held, 2);
    assert!(forgotten > 0, "{forgotten}");
}

#[test]
fn a_null_or_non_finite_feature_scores_null_and_leaves_the_series_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let model = &config.models[0];
    let (clean, dirty) = (
        Detector::new(model.settings().unwrap(), false).unwrap(),
        Detector::new(model.settings().unwrap(), false).unwrap(),
    );
    let mut a = Vec::new();
    let mut b = Vec::new();
    for w in 0..100 {
        let batch = window(view, w);
        a.push(scores(&clean.score(view, vec![batch.clone()]).unwrap()));
        if w == 60 {
            // The same window with every `v` NaN, then NULL: no scores,
            // and the series go on as if neither had come.
            for v in [Some(f64::NAN), None] {
                let mut cols = batch.columns().to_vec();
                cols[3] = Arc::new(Float64Array::from(vec![v; HOSTS]));
                let broken = RecordBatch::try_new(batch.schema(), cols).unwrap();
                let got = scores(&dirty.score(view, vec![broken]).unwrap());
                assert!(got.iter().all(|(_, s)| s.is_none()), "{got:?}");
            }
        }
        b.push(scores(&dirty.score(view, vec![batch]).unwrap()));
    }
    assert_eq!(a, b);
}

/// The segment `seg` of training rows among those `saved` wrote.
fn segment_of(saved: &telemine_detector::Saved, seg: u64) -> Option<Vec<u8>> {
    saved
        .segments
        .iter()
        .find(|(s, _)| *s == seg)
        .map(|(_, b)| b.clone())
}

#[test]
fn training_rows_are_saved_in_segments_and_only_the_changed_ones_are_rewritten() {
    use std::collections::BTreeMap;
    use telemine_detector::ROWS_PER_SEGMENT;

    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let mut model = config.models[0].clone();
    model.training_rows = 2100;
    model.retrain = telemine_detector::Retrain::Every;
    model.retrain_windows = 200;
    let per_window = HOSTS as u64;

    let whole = Detector::new(model.settings().unwrap(), false).unwrap();
    let first = Detector::new(model.settings().unwrap(), false).unwrap();
    // The state topic as a compacted table: segment number to bytes.
    let mut table: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut state = None;
    let mut model_bytes = None;
    let windows = 1500;
    let stop_at = 1200;
    let mut expected = Vec::new();
    for w in 0..windows {
        let batch = window(view, w);
        expected.push(scores(&whole.score(view, vec![batch.clone()]).unwrap()));
        if w >= stop_at {
            continue;
        }
        first.score(view, vec![batch]).unwrap();
        // Save every 7 windows, as a commit would.
        if w % 7 == 6 || w == stop_at - 1 {
            let saved = first.save().unwrap().expect("state changed");
            let rewritten: usize = saved.segments.len();
            // At most the segment the last save ended in, plus those the
            // new rows filled.
            let new_rows = 7 * per_window;
            assert!(
                rewritten as u64 <= 1 + new_rows.div_ceil(ROWS_PER_SEGMENT),
                "window {w}: {rewritten} segments rewritten"
            );
            for (seg, bytes) in &saved.segments {
                table.insert(*seg, bytes.clone());
            }
            table.retain(|seg, _| *seg >= saved.first_segment);
            if saved.model.is_some() {
                model_bytes = saved.model.clone();
            }
            state = Some(saved);
        }
    }
    let saved = state.unwrap();
    // 3600 rows were kept, 2100 of them still held: the table holds the
    // segments that cover them and no more.
    let held = (stop_at as u64 * per_window - 2100) / ROWS_PER_SEGMENT
        ..=(stop_at as u64 * per_window - 1) / ROWS_PER_SEGMENT;
    assert_eq!(
        table.keys().copied().collect::<Vec<_>>(),
        held.collect::<Vec<_>>()
    );

    let restarted = Detector::new(model.settings().unwrap(), false).unwrap();
    restarted
        .restore(&saved.state, model_bytes.as_deref(), |seg| {
            table.get(&seg).cloned()
        })
        .unwrap();
    let restarted_rows = restarted.training_rows_held();
    for w in stop_at..windows {
        let got = scores(&restarted.score(view, vec![window(view, w)]).unwrap());
        assert_eq!(got, expected[w as usize], "window {w}, after a retraining");
    }

    // A lost segment (a crash between writing it and the state) costs the
    // rows before it, not the restart.
    let oldest = *table.keys().next().unwrap();
    let lossy = Detector::new(model.settings().unwrap(), false).unwrap();
    lossy
        .restore(&saved.state, model_bytes.as_deref(), |seg| {
            (seg != oldest + 1)
                .then(|| table.get(&seg).cloned())
                .flatten()
        })
        .unwrap();
    assert_eq!(restarted_rows, 2100);
    let after_gap = stop_at as u64 * per_window - (oldest + 2) * ROWS_PER_SEGMENT;
    assert_eq!(lossy.training_rows_held() as u64, after_gap);
    let out = lossy.score(view, vec![window(view, stop_at)]).unwrap();
    assert_eq!(out[0].num_rows(), HOSTS);
}

#[test]
fn a_profile_asked_to_warm_up_on_fewer_rows_than_it_fits_on_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let mut model = config.models[0].clone();
    model.kind = toml::Spanned::new(0..0, "profile".to_string());
    model.past_windows = 0;
    model.warmup_windows = 3;
    let d = Detector::new(model.settings().unwrap(), false).unwrap();
    let first_scored = (0..40)
        .find(|&w| {
            scores(&d.score(view, vec![window(view, w)]).unwrap())
                .iter()
                .all(|(_, s)| s.is_some())
        })
        .expect("every host scored within 40 windows");
    // Fitted once, on its first MIN_ROWS windows: no fit is tried (and
    // failed, and logged) on fewer.
    assert_eq!(
        first_scored as usize,
        telemine_model::profile::MIN_ROWS,
        "scored from the window after the rows it is fitted on"
    );
}

#[test]
fn a_blend_scores_the_geometric_mean_of_its_members_and_each_member_restores_alone() {
    use telemine_detector::Blend;
    let dir = tempfile::tempdir().unwrap();
    let (config, sql) = setup(dir.path());
    let view = sql.views.iter().find(|v| v.name == "host_10s").unwrap();
    let mut model = config.models[0].clone();
    model.kind = toml::Spanned::new(0..0, "nearest+kmeans".to_string());
    let members = model.detector_settings().unwrap();
    let names: Vec<&str> = members.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["m.nearest", "m.kmeans"]);
    let detectors = |n: usize| -> Vec<Arc<Detector>> {
        members[..n]
            .iter()
            .map(|s| Arc::new(Detector::new(s.clone(), false).unwrap()))
            .collect()
    };

    // Each member alone, and the blend of fresh ones.
    let (alone, blended) = (detectors(2), detectors(2));
    let blend = Blend::new(blended.clone(), None);
    let mut whole = Vec::new();
    for w in 0..200 {
        let a = scores(&alone[0].score(view, vec![window(view, w)]).unwrap());
        let b = scores(&alone[1].score(view, vec![window(view, w)]).unwrap());
        let got = scores(&blend.score(view, vec![window(view, w)]).unwrap());
        for ((host, s), ((_, x), (_, y))) in got.iter().zip(a.iter().zip(&b)) {
            match (s, x, y) {
                (Some(s), Some(x), Some(y)) => {
                    assert!((s - (x * y).sqrt()).abs() < 1e-12, "{host} window {w}")
                }
                (None, _, _) => assert!(x.is_none() || y.is_none(), "{host} window {w}"),
                _ => panic!("{host} window {w}: {s:?} from {x:?} and {y:?}"),
            }
        }
        whole.push(got);
    }
    // Host 1's break is the blend's highest score after the warm-up.
    let top = (130..200)
        .flat_map(|w| {
            whole[w]
                .iter()
                .map(move |(h, s)| (w, h.clone(), s.unwrap_or(0.0)))
        })
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .unwrap();
    assert!(
        top.1 == "h1" && (150..160).contains(&top.0),
        "top score {top:?}"
    );

    // Each member saves its own state; restored, the blend scores on as
    // if it had never stopped.
    let first = detectors(2);
    let blend = Blend::new(first.clone(), None);
    for w in 0..120 {
        blend.score(view, vec![window(view, w)]).unwrap();
    }
    let restarted = detectors(2);
    for (old, new) in first.iter().zip(&restarted) {
        let saved = old.save().unwrap().expect("state to save");
        new.restore(&saved.state, saved.model.as_deref(), |seg| {
            segment_of(&saved, seg)
        })
        .unwrap();
    }
    let blend = Blend::new(restarted, None);
    for (w, expected) in whole.iter().enumerate().skip(120) {
        let got = scores(&blend.score(view, vec![window(view, w as i64)]).unwrap());
        assert_eq!(&got, expected, "window {w}");
    }
}

#[test]
fn a_blend_names_known_pooled_detectors_once_and_takes_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = setup(dir.path());
    let mut model = config.models[0].clone();
    for (kind, says) in [
        ("nearest+nope", "unknown"),
        ("pca+pca", "named twice"),
        ("profile+pca", "cannot be blended"),
    ] {
        model.kind = toml::Spanned::new(0..0, kind.to_string());
        let e = model.detector_settings().unwrap_err();
        assert!(e.contains(says) && e.contains("model `m`"), "{kind}: {e}");
    }
    model.kind = toml::Spanned::new(0..0, "pca+kmeans".to_string());
    model.checkpoint = Some("m.json".into());
    let e = model.detector_settings().unwrap_err();
    assert!(e.contains("checkpoint"), "{e}");
}
