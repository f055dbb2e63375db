//! Models scoring feature views: the bridge between a view's Arrow output
//! and a `telemine_model::Scorer`.
//!
//! A configured model (`[[models]]`) scores every row its view emits. The
//! view's feature columns are copied once into a row-major `f32` block
//! (the one host copy; the scorer copies it to the device, normalises and
//! scores the whole batch in one pass) and two columns are appended:
//! `anomaly_score` (calibrated, in [0, 1]) and `anomaly_features` (the
//! three features that missed most, worst first). Rules read them like any
//! other column: `WHERE anomaly_score > 0.99`.
//!
//! With a checkpoint (`telemine train`) the model scores from the first
//! row. Without one it trains online: it keeps the view's latest rows,
//! scores NULL until `warmup_windows` windows have passed, trains, and from
//! then on retrains every `retrain_windows` windows — in the background
//! under `run`, swapping the new model in atomically between two batches.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};
use datafusion::error::DataFusionError;
use telemine_model::{
    Device, DeviceChoice, Frame, History, ModelKind, Scorer, TrainOptions, pick_device,
};

use crate::config::ModelConfig;
use crate::sql::{SqlSet, View, ViewScorer};

/// How many contributing features `anomaly_features` names.
const TOP_FEATURES: usize = 3;

/// One model scoring one view.
pub struct ModelScorer {
    name: String,
    kind: ModelKind,
    features: Vec<String>,
    warmup_windows: usize,
    retrain_windows: usize,
    training_rows: usize,
    /// Train on a thread of its own (`run`), or inline (dry runs and
    /// tests, so their results do not depend on timing).
    background: bool,
    device: Device,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    scorer: Option<Arc<Scorer>>,
    /// The series' previous windows (sequence models).
    history: Option<History>,
    /// Latest rows without NULL features, to (re)train on.
    rows: VecDeque<(String, Vec<f32>)>,
    /// Newest window end seen, and windows seen since the last training.
    last_end: Option<i64>,
    since_training: usize,
    training: Option<Receiver<Result<Scorer, String>>>,
}

impl ModelScorer {
    /// From its config; loads the checkpoint if one is named.
    pub fn new(config: &ModelConfig, background: bool) -> Result<ModelScorer, String> {
        let name = config.name.get_ref().clone();
        let features = config.features.get_ref().clone();
        let kind = ModelKind::named(config.kind.get_ref(), features.len())
            .ok_or_else(|| format!("model `{name}`: unknown kind `{}`", config.kind.get_ref()))?;
        let choice: DeviceChoice = config
            .device
            .parse()
            .map_err(|e| format!("model `{name}`: {e}"))?;
        let (device, note) = pick_device(choice);
        if let Some(note) = note {
            tracing::warn!(model = %name, "{note}");
        }
        let mut state = State::default();
        if let Some(path) = &config.checkpoint {
            let scorer = load_checkpoint(&name, path, &features, &device)?;
            state.history = scorer
                .context_len()
                .map(|len| History::new(len, features.len()));
            state.scorer = Some(Arc::new(scorer));
        } else if let Some(len) = kind.context_len() {
            state.history = Some(History::new(len, features.len()));
        }
        Ok(ModelScorer {
            name,
            kind,
            features,
            warmup_windows: config.warmup_windows.max(1),
            retrain_windows: config.retrain_windows,
            training_rows: config.training_rows.max(2),
            background,
            device,
            state: Mutex::new(state),
        })
    }

    fn start_training(&self, state: &mut State) {
        let (keys, values): (Vec<String>, Vec<Vec<f32>>) = state.rows.iter().cloned().unzip();
        let cols = self.features.len();
        let frame = Frame::new(values.len(), cols, values.concat());
        let (kind, features, device, name) = (
            self.kind.clone(),
            self.features.clone(),
            self.device.clone(),
            self.name.clone(),
        );
        let train = move || -> Result<Scorer, String> {
            let frame = frame.map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let scorer = Scorer::train(
                kind,
                features,
                &frame,
                &keys,
                &TrainOptions::default(),
                &device,
                &mut |_| {},
            )
            .map_err(|e| e.to_string())?;
            tracing::info!(model = %name, rows = frame.rows, loss = scorer.sidecar().training.final_loss, seconds = started.elapsed().as_secs_f32(), "model trained online");
            Ok(scorer)
        };
        let (tx, rx) = channel();
        if self.background {
            std::thread::spawn(move || {
                let _ = tx.send(train());
            });
        } else {
            let _ = tx.send(train());
        }
        state.training = Some(rx);
        state.since_training = 0;
    }

    /// Swaps in a model trained since the last batch.
    fn collect_training(&self, state: &mut State) {
        let Some(rx) = &state.training else { return };
        match rx.try_recv() {
            Ok(Ok(scorer)) => {
                state.scorer = Some(Arc::new(scorer));
                state.training = None;
            }
            Ok(Err(e)) => {
                tracing::warn!(model = %self.name, "online training failed, keeping the current model: {e}");
                state.training = None;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => state.training = None,
        }
    }

    fn score_batch(
        &self,
        view: &View,
        batch: &RecordBatch,
    ) -> Result<RecordBatch, DataFusionError> {
        let binding = view.model.as_ref().ok_or_else(|| {
            DataFusionError::Internal(format!("view `{}` has no model", view.name))
        })?;
        let n = batch.num_rows();
        let keys = key_strings(batch, &binding.keys)?;
        let ends = view
            .output_schema
            .index_of(crate::sql::WINDOW_END)
            .ok()
            .and_then(|i| {
                batch
                    .column(i)
                    .as_primitive_opt::<TimestampMillisecondType>()
                    .cloned()
            });
        let mut state = self.state.lock().map_err(|_| {
            DataFusionError::Internal(format!("model `{}` state poisoned", self.name))
        })?;
        self.collect_training(&mut state);
        let scorer = state.scorer.clone();
        // A NULL feature scores as its training mean (no contribution).
        let fill = scorer
            .as_ref()
            .map(|s| s.sidecar().normalization.mean.clone());
        let (frame, complete) = feature_rows(batch, &binding.features, fill.as_deref())?;
        let context = state.history.as_mut().map(|h| h.contexts(&keys, &frame));
        // Learn from this batch: rows to train on (before the frame goes
        // to the device).
        for i in (0..n).filter(|&i| complete[i]) {
            if state.rows.len() == self.training_rows {
                state.rows.pop_front();
            }
            state
                .rows
                .push_back((keys[i].clone(), frame.row(i).to_vec()));
        }
        let mut scores = vec![None; n];
        let mut named = vec![None; n];
        if let Some(scorer) = &scorer {
            let scored = scorer
                .score_owned(
                    frame,
                    context.as_ref().map(|(c, f)| (c.as_slice(), f.as_slice())),
                )
                .map_err(|e| {
                    DataFusionError::External(format!("model `{}`: {e}", self.name).into())
                })?;
            for i in 0..n {
                if scored.ready[i] {
                    scores[i] = Some(scored.score[i] as f64);
                    let top: Vec<&str> = scored
                        .top(i, TOP_FEATURES)
                        .into_iter()
                        .map(|j| self.features[j].as_str())
                        .collect();
                    named[i] = Some(top.join(","));
                }
            }
        }
        if let Some(ends) = ends {
            let mut fresh: Vec<i64> = ends
                .values()
                .iter()
                .copied()
                .filter(|&e| state.last_end.is_none_or(|l| e > l))
                .collect();
            fresh.sort_unstable();
            fresh.dedup();
            state.since_training += fresh.len();
            if let Some(&newest) = fresh.last() {
                state.last_end = Some(newest);
            }
        }
        let due = if state.scorer.is_none() {
            state.since_training >= self.warmup_windows
        } else {
            self.retrain_windows > 0 && state.since_training >= self.retrain_windows
        };
        if due && state.training.is_none() && state.rows.len() >= 2 {
            self.start_training(&mut state);
            self.collect_training(&mut state);
        }
        drop(state);
        with_scores(view, batch, scores, named)
    }
}

/// `batch` with the score columns appended.
fn with_scores(
    view: &View,
    batch: &RecordBatch,
    scores: Vec<Option<f64>>,
    named: Vec<Option<String>>,
) -> Result<RecordBatch, DataFusionError> {
    let mut out: Vec<ArrayRef> = batch.columns().to_vec();
    out.push(Arc::new(Float64Array::from(scores)));
    let mut names = StringBuilder::new();
    for v in named {
        names.append_option(v);
    }
    out.push(Arc::new(names.finish()));
    Ok(RecordBatch::try_new(view.output_schema.clone(), out)?)
}

/// The one copy: the `features` columns of `batch` into one row-major
/// block of `f32`, NULLs replaced by `fill` (per feature; 0 without), and
/// which rows had no NULL.
fn feature_rows(
    batch: &RecordBatch,
    features: &[usize],
    fill: Option<&[f32]>,
) -> Result<(Frame, Vec<bool>), DataFusionError> {
    let (n, cols) = (batch.num_rows(), features.len());
    let mut data = vec![0f32; n * cols];
    let mut complete = vec![true; n];
    for (j, &f) in features.iter().enumerate() {
        let c = cast(batch.column(f), &DataType::Float64)?;
        let c = c.as_primitive::<Float64Type>();
        let fill = fill.and_then(|m| m.get(j)).copied().unwrap_or(0.0);
        for i in 0..n {
            data[i * cols + j] = if c.is_null(i) {
                complete[i] = false;
                fill
            } else {
                c.value(i) as f32
            };
        }
    }
    let frame = Frame::new(n, cols, data).map_err(|e| DataFusionError::External(Box::new(e)))?;
    Ok((frame, complete))
}

/// Keeps the feature rows a view emits (without scoring them): what
/// `telemine train` learns from.
#[derive(Default)]
pub struct FeatureRecorder {
    rows: Mutex<(Vec<String>, Vec<f32>)>,
}

impl FeatureRecorder {
    /// The rows recorded (those without NULL features), in the order the
    /// view emitted them, and their series.
    pub fn take(&self, cols: usize) -> Result<(Frame, Vec<String>), String> {
        let mut rows = self
            .rows
            .lock()
            .map_err(|_| "recorder poisoned".to_string())?;
        let (keys, data) = std::mem::take(&mut *rows);
        let frame = Frame::new(keys.len(), cols, data).map_err(|e| e.to_string())?;
        Ok((frame, keys))
    }
}

impl ViewScorer for FeatureRecorder {
    fn score(
        &self,
        view: &View,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let binding = view.model.as_ref().ok_or_else(|| {
            DataFusionError::Internal(format!("view `{}` has no model", view.name))
        })?;
        let mut rows = self
            .rows
            .lock()
            .map_err(|_| DataFusionError::Internal("recorder poisoned".into()))?;
        let mut out = Vec::with_capacity(batches.len());
        for b in &batches {
            let (frame, complete) = feature_rows(b, &binding.features, None)?;
            let keys = key_strings(b, &binding.keys)?;
            for (i, key) in keys.into_iter().enumerate().filter(|(i, _)| complete[*i]) {
                rows.0.push(key);
                rows.1.extend_from_slice(frame.row(i));
            }
            let n = b.num_rows();
            out.push(with_scores(view, b, vec![None; n], vec![None; n])?);
        }
        Ok(out)
    }
}

impl ViewScorer for ModelScorer {
    fn score(
        &self,
        view: &View,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        batches.iter().map(|b| self.score_batch(view, b)).collect()
    }
}

/// Each row's series, as one string (key values joined by `/`).
fn key_strings(batch: &RecordBatch, keys: &[usize]) -> Result<Vec<String>, DataFusionError> {
    let columns: Vec<StringArray> = keys
        .iter()
        .map(|&k| {
            Ok(cast(batch.column(k), &DataType::Utf8)?
                .as_string::<i32>()
                .clone())
        })
        .collect::<Result<_, DataFusionError>>()?;
    Ok((0..batch.num_rows())
        .map(|i| {
            columns
                .iter()
                .map(|c| if c.is_null(i) { "" } else { c.value(i) })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect())
}

fn load_checkpoint(
    name: &str,
    path: &Path,
    features: &[String],
    device: &Device,
) -> Result<Scorer, String> {
    let scorer = Scorer::load(path, device).map_err(|e| format!("model `{name}`: {e}"))?;
    if scorer.features() != features {
        return Err(format!(
            "model `{name}`: checkpoint {} was trained on features [{}], the config names [{}]",
            path.display(),
            scorer.features().join(", "),
            features.join(", ")
        ));
    }
    Ok(scorer)
}

/// Attaches a scorer for every configured model to `sql` (whose views the
/// models score). `background`: train online on threads of their own.
pub fn attach(sql: &mut SqlSet, models: &[ModelConfig], background: bool) -> Result<(), String> {
    for m in models {
        let scorer = ModelScorer::new(m, background)?;
        sql.attach_scorer(m.view.get_ref(), Arc::new(scorer));
    }
    Ok(())
}
