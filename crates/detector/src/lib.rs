//! The streaming detector: the one stage that turns a feature view's rows
//! into anomaly scores, the same under `run`, `dry-run`, `test`, `train`
//! and `eval`.
//!
//! A configured model (`[[models]]`) scores every row its view emits. Per
//! row, in window order within each series (the view's model keys):
//!
//! 1. [`features`]: what the model reads — the view's features, and with
//!    `past_windows` / `season_windows` features of the series' previous
//!    windows (never of later ones);
//! 2. the model (`telemine_model::Scorer`): an error per row and each
//!    feature's share of it, the whole batch in one pass on the device;
//! 3. [`score`]: the error turned into `anomaly_score` against the
//!    series' recent errors, with the range check and one alarm per burst.
//!
//! The view gains two columns: `anomaly_score` (in [0, 1]; NULL while the
//! model warms up) and `anomaly_features` (the three view columns that
//! missed most, worst first, each with its direction and the value
//! expected of it: see [`explain`]). Rules read them like any other
//! column.
//!
//! Without a checkpoint the model trains online, on the rows it has seen:
//! first after `warmup_windows` windows, then again on the `retrain`
//! schedule — inline (so `dry-run`, `test` and `eval` do not depend on
//! timing), or under `run` on a thread of its own, the new model swapped
//! in between two batches.
//!
//! Invariants:
//! - a row's score reads only that row and its series' earlier windows;
//! - a series' state changes only with a window newer than the last it
//!   took: a late firing of an older window is scored against the state
//!   as it is and leaves it unchanged;
//! - rows are taken in (window end, series) order, whatever order the
//!   view's SQL emitted them in, so batching does not change a score;
//! - state per series is bounded (see [`Settings::values_per_series`]),
//!   and so is the number of series (`max_series`).

pub mod blend;
pub mod explain;
pub mod features;
pub mod score;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimestampMillisecondType};
use datafusion::error::DataFusionError;
use serde::Deserialize;
use telemine_model::{
    Device, DeviceChoice, Frame, ModelKind, ProfileFit, ProfileState, Scored, Scorer, TrainOptions,
    pick_device,
};

pub use blend::Blend;
pub use features::{Past, PastFeatures};
pub use score::{Miss, Recent, ScoreMode, Scoring};

use telemine_sql::{SqlSet, View, ViewScorer, WINDOW_END, WINDOW_START};

pub use telemine_model::Kind;

/// What went wrong in a detector, naming its model.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    /// The model crate refused: a checkpoint's files, a model's bytes.
    #[error("model `{model}`: {source}")]
    Model {
        model: String,
        #[source]
        source: telemine_model::ModelError,
    },
    /// A checkpoint trained on other features than the model reads.
    #[error(
        "model `{model}`: checkpoint {path} was trained on features [{trained}], the model reads [{reads}]"
    )]
    CheckpointFeatures {
        model: String,
        path: String,
        trained: String,
        reads: String,
    },
    /// Saved state written under other settings: the detector starts
    /// afresh.
    #[error("model `{model}` was saved under other settings: it starts afresh")]
    OtherSettings { model: String },
    /// Saved state that cannot be read back.
    #[error("model `{model}`: its saved state cannot be read: {reason}")]
    SavedState { model: String, reason: String },
    /// State that cannot be encoded to be saved.
    #[error("model `{model}`: its state cannot be saved: {reason}")]
    Save { model: String, reason: String },
    /// A panic left the detector's state behind a poisoned lock (a bug).
    #[error("model `{model}`: its state was left inconsistent by a panic (a bug in telemine)")]
    Poisoned { model: String },
}

/// Rows of its own past the profile detector's prediction reads.
const LAGS_PER_FEATURE: usize = telemine_model::profile::LAGS;

/// How many contributing features `anomaly_features` names.
pub const TOP_FEATURES: usize = 3;

/// When a model trained online trains again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retrain {
    /// Every `retrain_windows` windows (each time the windows seen have
    /// doubled, until that is sooner).
    #[default]
    Every,
    /// Each time the windows seen have doubled since the last training.
    Doubling,
}

/// Where a model trained online trains under `run`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Training {
    #[default]
    Background,
    Inline,
}

/// A model's settings, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub name: String,
    /// The view's columns the model reads.
    pub view_features: Vec<String>,
    /// What the model reads: the view's features through `past`.
    pub model_features: Vec<String>,
    /// The model (`None`: the per-series profile detector).
    pub kind: Option<ModelKind>,
    pub past: PastFeatures,
    pub scoring: Scoring,
    pub warmup_windows: usize,
    pub retrain: Retrain,
    pub retrain_windows: usize,
    pub training_rows: usize,
    pub epochs: usize,
    pub max_series: usize,
    /// The profile detector: the least scale of a feature, and the slots
    /// of its season.
    pub scale_floor: f64,
    pub season: usize,
    /// The view it scores.
    pub view: String,
    /// Where it scores (`cpu`, `cuda`, `auto`).
    pub device: DeviceChoice,
    /// A trained model to start from (`telemine train`'s sidecar).
    pub checkpoint: Option<std::path::PathBuf>,
    /// Where it trains online under `run`.
    pub training: Training,
}

/// Limits on the per-series settings, so a config cannot ask for
/// unbounded state.
pub const MAX_PAST_WINDOWS: usize = 1000;
pub const MAX_SEASON_WINDOWS: usize = 20_000;
pub const MAX_ERROR_HISTORY: usize = 10_000;
pub const MAX_REFRACTORY: usize = 10_000;
pub const MAX_RANK_HISTORY: usize = 100_000;

impl Settings {
    /// The window count at which a model trained with `windows` windows
    /// taken trains next (`None`: never).
    fn next_training_after(&self, windows: usize) -> Option<usize> {
        match self.retrain {
            // Sooner while the windows seen are fewer: the first models
            // are trained on little, and their calibration shows it.
            Retrain::Every if self.retrain_windows > 0 => {
                Some(windows + self.retrain_windows.min(windows.max(1)))
            }
            Retrain::Every => None,
            Retrain::Doubling => Some(windows.max(1) * 2),
        }
    }

    /// Previous windows' view features kept per series: what the past
    /// features and the median range check read.
    pub fn keep(&self) -> usize {
        self.past
            .keep()
            .max(self.scoring.median_windows.saturating_sub(1))
    }

    /// Values (8 bytes each, plus a small fixed overhead per window and
    /// series) one series holds at most: its past windows' view features,
    /// its recent errors, range and scores, and a sequence model's
    /// previous model rows.
    pub fn values_per_series(&self) -> usize {
        let k = self.view_features.len();
        let context = self
            .kind
            .as_ref()
            .and_then(ModelKind::context_len)
            .unwrap_or(0)
            * self.model_features.len();
        let profile = if self.kind.is_none() {
            // The fitted profile and its running copy, and the rows it is
            // fitted on until then.
            2 * self.season.max(1) * k
                + 12 * k
                + (LAGS_PER_FEATURE * k + 1) * k
                + k * k
                + self.warmup_windows.min(self.training_rows) * (k + 1)
        } else {
            0
        };
        self.keep() * k
            + self.scoring.history
            + 4 * k
            + self.scoring.refractory
            + self.scoring.range_rank
            + 2 * self.scoring.rank_history
            + context
            + profile
    }
}

/// A row's score, as the detector logs it when asked to (`dry-run
/// --scores`, `eval`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredRow {
    pub view: String,
    pub key: String,
    pub window_start: Option<i64>,
    pub window_end: Option<i64>,
    pub score: Option<f64>,
    pub features: Option<String>,
}

/// Every row a detector scored, in the order it took them.
#[derive(Debug, Default)]
pub struct ScoreLog(Mutex<Vec<ScoredRow>>);

impl ScoreLog {
    pub fn take(&self) -> Vec<ScoredRow> {
        self.0
            .lock()
            .map(|mut rows| std::mem::take(&mut *rows))
            .unwrap_or_default()
    }
}

/// What the detector remembers of one series.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Series {
    /// The newest window end it took.
    last_end: Option<i64>,
    past: Past,
    recent: Recent,
    /// A sequence model's input: the model rows of its last windows.
    context: VecDeque<Vec<f32>>,
    /// When it last took a window (the detector's window count).
    touched: usize,
    /// The profile detector: its fit and running state once fitted, and
    /// until then the (slot, features) rows it is fitted on.
    profile: Option<Box<(ProfileFit, ProfileState)>>,
    profile_rows: Vec<(usize, Vec<f64>)>,
}

#[derive(Default)]
struct State {
    scorer: Option<Arc<Scorer>>,
    /// Whether `scorer` was trained here (saved with the state) rather
    /// than loaded from a checkpoint file; bumped with each new model.
    online_model: u64,
    /// The model generation and whether anything changed, as last saved.
    saved_model: u64,
    dirty: bool,
    series: HashMap<String, Series>,
    /// Model rows to (re)train on, oldest first, with their series: the
    /// rows numbered `rows_total - rows.len()` to `rows_total` of all the
    /// detector has kept (see [`ROWS_PER_SEGMENT`]).
    rows: VecDeque<(String, Vec<f32>)>,
    rows_total: u64,
    /// `rows_total` at the last save.
    rows_saved: u64,
    /// Distinct window ends taken, and the newest.
    windows: usize,
    last_end: Option<i64>,
    /// Train when a new window comes with this many taken (`None`: never).
    next_training: Option<usize>,
    training: Option<Receiver<Result<Scorer, String>>>,
    /// Series forgotten to stay within `max_series`.
    evicted: u64,
}

/// What the detector does with the rows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Score {
        background: bool,
    },
    /// Keep every model row, score nothing (`telemine train`).
    Record,
}

/// One model over one view: see the module docs.
pub struct Detector {
    settings: Settings,
    mode: Mode,
    device: Device,
    state: Mutex<State>,
    log: Option<Arc<ScoreLog>>,
}

/// The rows one model scores in a call: the model, its rows (row-major),
/// and (sequence models) each row's context and whether it is full.
type Batch = (Arc<Scorer>, Vec<f32>, Vec<f32>, Vec<bool>);

/// One row of a call, in the order taken.
struct Taken {
    batch: usize,
    row: usize,
    key: String,
    /// The view features (`None`: a feature is NULL or not finite).
    x: Option<Vec<f64>>,
    /// Their medians over the series' last windows (median range check).
    medians: Option<Vec<f64>>,
    /// Whether it is the series' newest window (else a late firing).
    fresh: bool,
    /// Index into the call's models, and into that model's batch.
    model: Option<(usize, usize)>,
}

impl Detector {
    /// From its settings; loads the checkpoint if one is named.
    /// `background`: train online on a thread of its own (`run`).
    pub fn new(settings: Settings, background: bool) -> Result<Detector, DetectorError> {
        let name = settings.name.clone();
        let (device, note) = pick_device(settings.device);
        if let Some(note) = note {
            tracing::warn!(model = %name, "{note}");
        }
        let mut state = State::default();
        if let Some(path) = &settings.checkpoint {
            let scorer = load_checkpoint(&name, path, &settings.model_features, &device)?;
            state.scorer = Some(Arc::new(scorer));
        }
        state.next_training = match (&state.scorer, settings.retrain) {
            (None, _) => Some(settings.warmup_windows),
            // A checkpoint is trained on more than the rows seen here:
            // only a fixed schedule retrains it.
            (Some(_), Retrain::Every) => settings.next_training_after(0),
            (Some(_), Retrain::Doubling) => None,
        };
        let background = background && settings.training == Training::Background;
        Ok(Detector {
            settings,
            mode: Mode::Score { background },
            device,
            state: Mutex::new(state),
            log: None,
        })
    }

    /// A detector that keeps every model row its view emits and scores
    /// none: what `telemine train` learns from.
    pub fn recorder(settings: Settings) -> Detector {
        Detector {
            settings,
            mode: Mode::Record,
            device: Device::Cpu,
            state: Mutex::new(State::default()),
            log: None,
        }
    }

    /// Logs every row scored into `log`.
    pub fn with_log(mut self, log: Arc<ScoreLog>) -> Detector {
        self.log = Some(log);
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The rows recorded (see [`Detector::recorder`]), in the order taken,
    /// and their series.
    pub fn take_rows(&self) -> Result<(Frame, Vec<String>), DetectorError> {
        let mut state = self.state.lock().map_err(|_| self.poisoned())?;
        let rows = std::mem::take(&mut state.rows);
        let cols = self.settings.model_features.len();
        let (keys, values): (Vec<String>, Vec<Vec<f32>>) = rows.into_iter().unzip();
        let frame = Frame::new(keys.len(), cols, values.concat()).map_err(|e| self.model(e))?;
        Ok((frame, keys))
    }

    fn poisoned(&self) -> DetectorError {
        DetectorError::Poisoned {
            model: self.settings.name.clone(),
        }
    }

    fn model(&self, source: telemine_model::ModelError) -> DetectorError {
        DetectorError::Model {
            model: self.settings.name.clone(),
            source,
        }
    }

    fn cannot_save(&self, reason: impl std::fmt::Display) -> DetectorError {
        DetectorError::Save {
            model: self.settings.name.clone(),
            reason: reason.to_string(),
        }
    }

    fn unreadable(&self, reason: impl std::fmt::Display) -> DetectorError {
        DetectorError::SavedState {
            model: self.settings.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// How many training rows the detector holds now.
    pub fn training_rows_held(&self) -> usize {
        self.state.lock().map(|s| s.rows.len()).unwrap_or(0)
    }

    /// The newest window end the detector has taken (restored with its
    /// state): what the scoring stage has scored (`crates/stream/src/deferred.rs`).
    pub fn last_window_end(&self) -> Option<i64> {
        self.state.lock().ok().and_then(|s| s.last_end)
    }

    /// Series held now, and series forgotten to stay within `max_series`.
    pub fn series(&self) -> (usize, u64) {
        self.state
            .lock()
            .map(|s| (s.series.len(), s.evicted))
            .unwrap_or_default()
    }

    /// Trains on the rows kept: inline, or on a thread of its own.
    fn start_training(&self, state: &mut State, background: bool) {
        if state.training.is_some() || state.rows.len() < 2 {
            return;
        }
        let (keys, values): (Vec<String>, Vec<Vec<f32>>) = state.rows.iter().cloned().unzip();
        let cols = self.settings.model_features.len();
        let frame = Frame::new(values.len(), cols, values.concat());
        let Some(kind) = self.settings.kind.clone() else {
            return;
        };
        let (features, device, name, epochs) = (
            self.settings.model_features.clone(),
            self.device.clone(),
            self.settings.name.clone(),
            self.settings.epochs,
        );
        let train = move || -> Result<Scorer, String> {
            let frame = frame.map_err(|e| e.to_string())?;
            let started = std::time::Instant::now();
            let options = TrainOptions {
                epochs,
                ..TrainOptions::default()
            };
            let scorer = Scorer::train(
                kind,
                features,
                &frame,
                &keys,
                &options,
                &device,
                &mut |_| {},
            )
            .map_err(|e| e.to_string())?;
            tracing::debug!(model = %name, rows = frame.rows, loss = scorer.sidecar().training.final_loss, seconds = started.elapsed().as_secs_f32(), "model trained online");
            Ok(scorer)
        };
        let (tx, rx) = channel();
        if background {
            std::thread::spawn(move || {
                let _ = tx.send(train());
            });
        } else {
            let _ = tx.send(train());
        }
        state.training = Some(rx);
        self.collect_training(state);
    }

    /// Swaps in a model trained since.
    fn collect_training(&self, state: &mut State) {
        let Some(rx) = &state.training else { return };
        match rx.try_recv() {
            Ok(Ok(scorer)) => {
                state.scorer = Some(Arc::new(scorer));
                state.training = None;
                state.online_model += 1;
                state.dirty = true;
            }
            Ok(Err(e)) => {
                tracing::warn!(model = %self.settings.name, "online training failed, keeping the current model: {e}");
                state.training = None;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => state.training = None,
        }
    }

    /// The profile detector on one row of `series` in slot `slot`: until
    /// the series has `warmup_windows` windows (at most `training_rows`)
    /// they are kept and score nothing; then the series' profile is fitted
    /// on them and scores every row after. `fresh`: the series' newest
    /// window (a late firing is scored without changing the series).
    /// Returns the score in [0, 1) (0.5 at the threshold) and the three
    /// features that contributed most.
    fn profile_step(
        &self,
        series: &mut Series,
        fresh: bool,
        slot: usize,
        x: &[f64],
        end: Option<i64>,
        windows: usize,
    ) -> Option<(f64, String)> {
        if fresh {
            series.last_end = end.or(series.last_end);
            series.touched = windows;
        }
        let Some(profile) = series.profile.as_mut() else {
            if !fresh {
                return None;
            }
            series.profile_rows.push((slot, x.to_vec()));
            // Never fewer rows than a profile can be fitted on: a fit that
            // must fail would be tried (and logged) every window.
            let due = self
                .settings
                .warmup_windows
                .min(self.settings.training_rows)
                .max(telemine_model::profile::MIN_ROWS);
            if series.profile_rows.len() >= due {
                let (slots, rows): (Vec<usize>, Vec<Vec<f64>>) =
                    std::mem::take(&mut series.profile_rows).into_iter().unzip();
                match ProfileFit::fit(
                    &rows,
                    &slots,
                    self.settings.season,
                    self.settings.scale_floor,
                ) {
                    Ok((fit, state)) => series.profile = Some(Box::new((fit, state))),
                    Err(e) => {
                        tracing::warn!(model = %self.settings.name, error = %e, "a series' profile cannot be fitted; it learns again from its next windows")
                    }
                }
            }
            return None;
        };
        let (fit, state) = &mut **profile;
        let scored = if fresh {
            fit.step(state, slot, x)
        } else {
            fit.step(&mut state.clone(), slot, x)
        };
        let named = explain::explain(
            &self.settings.view_features,
            x,
            &scored.contributions,
            &scored.expected,
            TOP_FEATURES,
        );
        let s = scored.score.max(0.0);
        Some((s / (1.0 + s), named))
    }

    /// The series `key`, made room for within `max_series`.
    fn series_mut<'a>(&self, state: &'a mut State, key: &str) -> &'a mut Series {
        if !state.series.contains_key(key) && state.series.len() >= self.settings.max_series {
            let stalest = state
                .series
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(k, _)| k.clone());
            if let Some(k) = stalest {
                state.series.remove(&k);
                state.evicted += 1;
                if state.evicted.is_power_of_two() {
                    tracing::warn!(model = %self.settings.name, max_series = self.settings.max_series, forgotten = state.evicted, "more series than max_series: the least recently seen are forgotten");
                }
            }
        }
        state.series.entry(key.to_string()).or_default()
    }

    /// `anomaly_features` of row `i` a model scored, whose view features
    /// are `x`: each view feature's share is the miss of every model
    /// feature made from it, and its expected value the model's
    /// prediction of the feature itself.
    fn explain_model_row(&self, scorer: &Scorer, s: &Scored, i: usize, x: &[f64]) -> String {
        let per = self.settings.past.per_view();
        let miss = s.contributions.row(i);
        let deviation = s.deviation.row(i);
        let k = self.settings.view_features.len();
        let mut share = vec![0.0; k];
        let mut expected = vec![f64::NAN; k];
        for j in 0..k {
            let group = j * per..((j + 1) * per).min(miss.len());
            share[j] = miss
                .get(group.clone())
                .map_or(0.0, |m| m.iter().map(|v| f64::from(*v)).sum::<f64>());
            if let Some(&d) = deviation.get(j * per) {
                expected[j] = scorer.expected(j * per, x[j], d);
            }
        }
        explain::explain(
            &self.settings.view_features,
            x,
            &share,
            &expected,
            TOP_FEATURES,
        )
    }

    /// Scores every row of `batches` (a view's output in one call),
    /// advancing the series' state: see the module docs.
    fn score_rows(&self, view: &View, batches: &[RecordBatch]) -> Result<Rows, DataFusionError> {
        let binding = view.model.as_ref().ok_or_else(|| {
            DataFusionError::Internal(format!("view `{}` has no model", view.name))
        })?;
        let mut state = self.state.lock().map_err(|_| {
            DataFusionError::Internal(format!("model `{}` state poisoned", self.settings.name))
        })?;
        self.collect_training(&mut state);
        // Every row of the call, taken in (window end, series) order.
        let mut taken = Vec::new();
        let mut bounds = Vec::with_capacity(batches.len());
        for (b, batch) in batches.iter().enumerate() {
            let keys = key_strings(batch, &binding.keys)?;
            let values = feature_values(batch, &binding.features)?;
            let starts = time_column(view, batch, WINDOW_START);
            let ends = time_column(view, batch, WINDOW_END);
            for (i, (key, x)) in keys.into_iter().zip(values).enumerate() {
                taken.push(Taken {
                    batch: b,
                    row: i,
                    key,
                    x,
                    medians: None,
                    fresh: false,
                    model: None,
                });
            }
            bounds.push((starts, ends));
        }
        let end_of = |t: &Taken| bounds[t.batch].1.as_ref().map(|e| e[t.row]);
        taken.sort_by(|a, b| end_of(a).cmp(&end_of(b)).then_with(|| a.key.cmp(&b.key)));

        // Pass 1, in order: the model rows, the series' past, the
        // training schedule.
        let keep = self.settings.keep();
        let context_len = state.scorer.as_ref().and_then(|s| s.context_len()).or(self
            .settings
            .kind
            .as_ref()
            .and_then(ModelKind::context_len));
        let cols = self.settings.model_features.len();
        let mut models: Vec<Batch> = Vec::new();
        let mut state_changed = false;
        // Rows the profile detector scored: (batch, row, score, top).
        let mut profiled: Vec<(usize, usize, f64, String)> = Vec::new();
        let size_ms = view.window.size_ms;
        for t in taken.iter_mut() {
            let end = end_of(t);
            let new_window = match (end, state.last_end) {
                (Some(e), Some(l)) => e > l,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if new_window {
                if let Mode::Score { background } = self.mode
                    && state.next_training.is_some_and(|n| state.windows >= n)
                {
                    self.start_training(&mut state, background);
                    state.next_training = self.settings.next_training_after(state.windows);
                }
                state.windows += 1;
                state.last_end = end;
            }
            let Some(x) = &t.x else { continue };
            let windows = state.windows;
            let series = self.series_mut(&mut state, &t.key);
            t.fresh = match (end, series.last_end) {
                (Some(e), Some(l)) => e > l,
                _ => true,
            };
            if self.settings.kind.is_none() {
                let slot = end.map_or(0, |e| (e.div_euclid(size_ms.max(1)) - 1).max(0) as usize);
                let scored = self.profile_step(series, t.fresh, slot, x, end, windows);
                state_changed |= t.fresh;
                if let Some((score, top)) = scored {
                    profiled.push((t.batch, t.row, score, top));
                }
                continue;
            }
            let mut row = Vec::with_capacity(cols);
            self.settings.past.row(&series.past, x, &mut row);
            t.medians = series.past.medians(x, self.settings.scoring.median_windows);
            // Until the series has had the windows its past features read,
            // they mean something else: such rows get no model score
            // (NULL: warming up). They still train the model, as a few
            // rows among many.
            let warming = series.past.seen() < self.settings.past.window;
            let context = context_len.map(|len| {
                let full = series.context.len() == len;
                let mut ctx = Vec::with_capacity(len * cols);
                let fill = series.context.front().unwrap_or(&row).clone();
                for _ in series.context.len()..len {
                    ctx.extend_from_slice(&fill);
                }
                for r in &series.context {
                    ctx.extend_from_slice(r);
                }
                (ctx, full)
            });
            if t.fresh {
                state_changed = true;
                series.past.push(x, keep);
                series.last_end = end.or(series.last_end);
                series.touched = windows;
                if let Some(len) = context_len {
                    if series.context.len() == len {
                        series.context.pop_front();
                    }
                    series.context.push_back(row.clone());
                }
                let cap = match self.mode {
                    Mode::Record => usize::MAX,
                    Mode::Score { .. } => self.settings.training_rows,
                };
                if state.rows.len() >= cap {
                    state.rows.pop_front();
                }
                state.rows.push_back((t.key.clone(), row.clone()));
                state.rows_total += 1;
            }
            if !warming && let Some(scorer) = &state.scorer {
                let m = match models.iter().position(|(s, ..)| Arc::ptr_eq(s, scorer)) {
                    Some(m) => m,
                    None => {
                        models.push((scorer.clone(), Vec::new(), Vec::new(), Vec::new()));
                        models.len() - 1
                    }
                };
                let (_, rows, ctx, full) = &mut models[m];
                t.model = Some((m, rows.len() / cols));
                rows.extend_from_slice(&row);
                if let Some((c, f)) = context {
                    ctx.extend_from_slice(&c);
                    full.push(f);
                }
            }
        }
        state.dirty |= state_changed;
        let mut scores: Vec<Vec<Option<f64>>> =
            batches.iter().map(|b| vec![None; b.num_rows()]).collect();
        let mut named: Vec<Vec<Option<String>>> =
            batches.iter().map(|b| vec![None; b.num_rows()]).collect();
        if self.mode == Mode::Record {
            drop(state);
            return Ok(Rows::new(taken, bounds, scores, named));
        }

        // Pass 2: each model scores its rows in one pass.
        let mut scored: Vec<Scored> = Vec::with_capacity(models.len());
        for (scorer, rows, ctx, full) in models.iter() {
            let n = rows.len() / cols;
            let frame = Frame::new(n, cols, rows.clone())
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let context = scorer
                .context_len()
                .map(|_| (ctx.as_slice(), full.as_slice()));
            scored.push(scorer.score_owned(frame, context).map_err(|e| {
                DataFusionError::External(format!("model `{}`: {e}", self.settings.name).into())
            })?);
        }

        // Pass 3, in order: the scoring steps, per series.
        for (b, i, score, top) in profiled {
            scores[b][i] = Some(score);
            named[b][i] = Some(top);
        }
        let scoring = self.settings.scoring;
        for t in &taken {
            let Some(x) = &t.x else { continue };
            if self.settings.kind.is_none() {
                continue;
            }
            let (miss, top) = match t.model {
                Some((m, i)) if scored[m].ready[i] => {
                    let s = &scored[m];
                    (
                        Some(Miss {
                            error: f64::from(s.error[i]),
                            calibration: &models[m].0.sidecar().calibration,
                        }),
                        Some(self.explain_model_row(&models[m].0, s, i, x)),
                    )
                }
                _ => (None, None),
            };
            let medians = t.medians.as_deref();
            // A series forgotten within this call (max_series) scores
            // from nothing rather than coming back.
            let mut scratch = Recent::default();
            let recent = match state.series.get_mut(&t.key) {
                Some(series) if t.fresh => &mut series.recent,
                Some(series) => {
                    scratch = series.recent.clone();
                    &mut scratch
                }
                None => &mut scratch,
            };
            let score = scoring.step(recent, x, medians, miss);
            scores[t.batch][t.row] = score;
            named[t.batch][t.row] = top.filter(|_| score.is_some());
        }
        drop(state);
        Ok(Rows::new(taken, bounds, scores, named))
    }
}

/// The scores of one call's rows, by batch and row, and the order the
/// detector took the rows in.
pub(crate) struct Rows {
    /// (batch, row, series) in the order taken.
    order: Vec<(usize, usize, String)>,
    /// Each batch's window starts and ends.
    bounds: Vec<Bounds>,
    scores: Vec<Vec<Option<f64>>>,
    named: Vec<Vec<Option<String>>>,
}

type Bounds = (Option<Vec<i64>>, Option<Vec<i64>>);

impl Rows {
    fn new(
        taken: Vec<Taken>,
        bounds: Vec<Bounds>,
        scores: Vec<Vec<Option<f64>>>,
        named: Vec<Vec<Option<String>>>,
    ) -> Rows {
        Rows {
            order: taken.into_iter().map(|t| (t.batch, t.row, t.key)).collect(),
            bounds,
            scores,
            named,
        }
    }

    /// Logs every row into `log`, in the order taken.
    fn log(&self, view: &View, log: Option<&ScoreLog>) {
        let Some(Ok(mut rows)) = log.map(|l| l.0.lock()) else {
            return;
        };
        for (b, i, key) in &self.order {
            let (starts, ends) = &self.bounds[*b];
            rows.push(ScoredRow {
                view: view.name.clone(),
                key: key.clone(),
                window_start: starts.as_ref().map(|s| s[*i]),
                window_end: ends.as_ref().map(|e| e[*i]),
                score: self.scores[*b][*i],
                features: self.named[*b][*i].clone(),
            });
        }
    }

    /// `batches` with the score columns appended.
    fn append(
        self,
        view: &View,
        batches: &[RecordBatch],
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        batches
            .iter()
            .zip(self.scores.into_iter().zip(self.named))
            .map(|(b, (s, n))| with_scores(view, b, s, n))
            .collect()
    }
}

/// Training rows are saved in segments of this many, numbered from the
/// detector's first row: a save rewrites only the segments that gained
/// rows since the last one (at most this many old rows), not the whole
/// `training_rows`.
pub const ROWS_PER_SEGMENT: u64 = 1024;

/// What a detector saves with the engine's checkpoint (see
/// [`Detector::save`]).
#[derive(Debug, Default)]
pub struct Saved {
    /// The series' state and the training schedule.
    pub state: Vec<u8>,
    /// The model trained online, when it changed since the last save.
    pub model: Option<Vec<u8>>,
    /// The segments of training rows that changed: (number, bytes).
    pub segments: SavedSegments,
    /// Segments numbered below this hold no row the detector keeps: the
    /// caller may delete them.
    pub first_segment: u64,
}

/// Segments of training rows as saved: (number, bytes).
pub type SavedSegments = Vec<(u64, Vec<u8>)>;

/// One segment of training rows: the number of its first row, then the
/// rows.
#[derive(serde::Serialize, serde::Deserialize)]
struct Segment {
    start: u64,
    rows: PackedRows,
}

/// [`SavedState`] as written, borrowing the series rather than copying
/// them.
#[derive(serde::Serialize)]
struct SavingState<'a> {
    settings: String,
    windows: usize,
    last_end: Option<i64>,
    next_training: Option<usize>,
    online_model: bool,
    series: &'a HashMap<String, Series>,
    evicted: u64,
    rows_total: u64,
    rows_kept: u64,
}

/// The series' state and the training schedule, as saved.
#[derive(serde::Deserialize)]
struct SavedState {
    /// The settings it was made under: a restart under others starts
    /// afresh rather than read state that means something else.
    settings: String,
    windows: usize,
    last_end: Option<i64>,
    next_training: Option<usize>,
    /// Whether a model trained online goes with it.
    online_model: bool,
    series: HashMap<String, Series>,
    evicted: u64,
    /// How many training rows were ever kept, and how many of the last
    /// are kept now (in segments of their own), so that a retraining
    /// after a restart learns what it would have without one.
    rows_total: u64,
    rows_kept: u64,
}

/// Training rows, compact: each row's series as an index into `keys`, the
/// values as little-endian `f32`, row after row.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct PackedRows {
    keys: Vec<String>,
    #[serde(with = "serde_bytes_vec")]
    key_of_row: Vec<u8>,
    #[serde(with = "serde_bytes_vec")]
    values: Vec<u8>,
}

impl PackedRows {
    fn pack<'a>(rows: impl Iterator<Item = &'a (String, Vec<f32>)>) -> PackedRows {
        let mut index: HashMap<&str, u32> = HashMap::new();
        let mut out = PackedRows::default();
        for (key, values) in rows {
            let next = index.len() as u32;
            let i = *index.entry(key.as_str()).or_insert_with(|| {
                out.keys.push(key.clone());
                next
            });
            out.key_of_row.extend_from_slice(&i.to_le_bytes());
            for v in values {
                out.values.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }

    fn unpack(&self, cols: usize) -> Result<VecDeque<(String, Vec<f32>)>, String> {
        let n = self.key_of_row.len() / 4;
        if self.values.len() != n * cols * 4 {
            return Err(format!(
                "{} bytes of values for {n} rows of {cols} features",
                self.values.len()
            ));
        }
        let mut out = VecDeque::with_capacity(n);
        for (r, k) in self.key_of_row.chunks_exact(4).enumerate() {
            let k = u32::from_le_bytes([k[0], k[1], k[2], k[3]]) as usize;
            let key = self.keys.get(k).ok_or("a row of an unknown series")?;
            let values = self.values[r * cols * 4..(r + 1) * cols * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.push_back((key.clone(), values));
        }
        Ok(out)
    }
}

/// The segments of training rows that gained rows since the last save,
/// as saved, and the first segment still holding a kept row.
fn changed_segments(state: &State) -> Result<(SavedSegments, u64), String> {
    let first = state.rows_total - state.rows.len() as u64;
    let mut out = Vec::new();
    if state.rows_total > state.rows_saved && !state.rows.is_empty() {
        let from = state.rows_saved.max(first) / ROWS_PER_SEGMENT;
        for seg in from..=(state.rows_total - 1) / ROWS_PER_SEGMENT {
            let start = (seg * ROWS_PER_SEGMENT).max(first);
            let end = ((seg + 1) * ROWS_PER_SEGMENT).min(state.rows_total);
            let rows = state
                .rows
                .range((start - first) as usize..(end - first) as usize);
            let segment = Segment {
                start,
                rows: PackedRows::pack(rows),
            };
            let mut bytes = Vec::new();
            ciborium::into_writer(&segment, &mut bytes).map_err(|e| e.to_string())?;
            out.push((seg, bytes));
        }
    }
    Ok((out, first / ROWS_PER_SEGMENT))
}

/// The training rows numbered `first..total`, read segment by segment:
/// the newest run of them without a gap, and the number after its last.
fn read_segments(
    first: u64,
    total: u64,
    cols: usize,
    mut segment: impl FnMut(u64) -> Option<Vec<u8>>,
) -> (VecDeque<(String, Vec<f32>)>, u64) {
    let mut rows = VecDeque::new();
    let mut next = first;
    if total == first {
        return (rows, total);
    }
    for seg in first / ROWS_PER_SEGMENT..=(total - 1) / ROWS_PER_SEGMENT {
        let part = segment(seg)
            .and_then(|b| ciborium::from_reader::<Segment, _>(b.as_slice()).ok())
            .and_then(|p| Some((p.start, p.rows.unpack(cols).ok()?)));
        let Some((start, got)) = part else {
            // A gap: only the rows after it can be kept.
            rows.clear();
            next = ((seg + 1) * ROWS_PER_SEGMENT).min(total);
            continue;
        };
        if start > next {
            rows.clear();
            next = start;
        }
        for (at, row) in (start..).zip(got) {
            if at == next && at < total {
                rows.push_back(row);
                next += 1;
            }
        }
    }
    (rows, next)
}

/// A model trained online, as saved: its sidecar and weights.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedModel {
    sidecar: String,
    #[serde(with = "serde_bytes_vec")]
    weights: Vec<u8>,
}

/// Bytes as one CBOR byte string rather than an array of numbers.
mod serde_bytes_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let v = ciborium::Value::deserialize(d)?;
        v.into_bytes()
            .map_err(|_| serde::de::Error::custom("expected a byte string"))
    }
}

impl Detector {
    /// The state to save with the engine's checkpoint, if it changed since
    /// the last save: the series' state (CBOR) and, when it changed, the
    /// model trained online. A model loaded from a checkpoint file is not
    /// saved: the config names it.
    pub fn save(&self) -> Result<Option<Saved>, DetectorError> {
        let mut state = self.state.lock().map_err(|_| self.poisoned())?;
        if !state.dirty {
            return Ok(None);
        }
        let saved = SavingState {
            settings: format!("{:?}", self.settings),
            windows: state.windows,
            last_end: state.last_end,
            next_training: state.next_training,
            online_model: state.online_model > 0,
            series: &state.series,
            evicted: state.evicted,
            rows_total: state.rows_total,
            rows_kept: state.rows.len() as u64,
        };
        let mut bytes = Vec::new();
        ciborium::into_writer(&saved, &mut bytes).map_err(|e| self.cannot_save(e))?;
        let model = match &state.scorer {
            Some(scorer) if state.online_model > state.saved_model => {
                let (sidecar, weights) = scorer.to_bytes().map_err(|e| self.model(e))?;
                let mut m = Vec::new();
                ciborium::into_writer(&SavedModel { sidecar, weights }, &mut m)
                    .map_err(|e| self.cannot_save(e))?;
                Some(m)
            }
            _ => None,
        };
        let (segments, first_segment) =
            changed_segments(&state).map_err(|e| self.cannot_save(e))?;
        state.dirty = false;
        state.saved_model = state.online_model;
        state.rows_saved = state.rows_total;
        Ok(Some(Saved {
            state: bytes,
            model,
            segments,
            first_segment,
        }))
    }

    /// Takes back state [`Detector::save`] wrote (`model`: the last model
    /// it saved, if any; `segment`: reads a segment of training rows by its
    /// number). State saved under other settings is refused: the detector
    /// then starts afresh. Training rows that cannot be read (a crash
    /// between saving a segment and the state) are logged and left out:
    /// the detector keeps the newest rows it has without a gap.
    pub fn restore(
        &self,
        saved: &[u8],
        model: Option<&[u8]>,
        segment: impl FnMut(u64) -> Option<Vec<u8>>,
    ) -> Result<(), DetectorError> {
        let saved: SavedState = ciborium::from_reader(saved)
            .map_err(|e| self.unreadable(format!("not a detector state: {e}")))?;
        if saved.settings != format!("{:?}", self.settings) {
            return Err(DetectorError::OtherSettings {
                model: self.settings.name.clone(),
            });
        }
        let scorer = match (saved.online_model, model) {
            (true, Some(m)) => {
                let m: SavedModel = ciborium::from_reader(m)
                    .map_err(|e| self.unreadable(format!("not a saved model: {e}")))?;
                Some(Arc::new(
                    Scorer::from_bytes(&m.sidecar, &m.weights, &self.device)
                        .map_err(|e| self.model(e))?,
                ))
            }
            (true, None) => return Err(self.unreadable("the model trained online is missing")),
            (false, _) => None,
        };
        let mut state = self.state.lock().map_err(|_| self.poisoned())?;
        if scorer.is_some() {
            state.scorer = scorer;
            state.online_model = 1;
            state.saved_model = 1;
        }
        let first = saved.rows_total.saturating_sub(saved.rows_kept);
        let (rows, next) = read_segments(
            first,
            saved.rows_total,
            self.settings.model_features.len(),
            segment,
        );
        if next < saved.rows_total || (rows.len() as u64) < saved.rows_kept {
            tracing::warn!(
                model = %self.settings.name,
                kept = rows.len(),
                saved = saved.rows_kept,
                "some saved training rows cannot be read: the next training learns from fewer rows"
            );
        }
        state.rows = rows;
        state.rows_total = next;
        state.rows_saved = next;
        state.windows = saved.windows;
        state.last_end = saved.last_end;
        state.next_training = saved.next_training;
        state.series = saved.series;
        state.evicted = saved.evicted;
        state.dirty = false;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }
}

impl ViewScorer for Detector {
    fn score(
        &self,
        view: &View,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let rows = self.score_rows(view, &batches)?;
        rows.log(view, self.log.as_deref());
        rows.append(view, &batches)
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

/// Each row's view features as `f64`; `None` for a row with a NULL or
/// non-finite one (it is not scored and leaves its series unchanged).
fn feature_values(
    batch: &RecordBatch,
    features: &[usize],
) -> Result<Vec<Option<Vec<f64>>>, DataFusionError> {
    let columns = features
        .iter()
        .map(|&f| cast(batch.column(f), &DataType::Float64))
        .collect::<Result<Vec<_>, _>>()?;
    let columns: Vec<&Float64Array> = columns
        .iter()
        .map(|c| c.as_primitive::<Float64Type>())
        .collect();
    Ok((0..batch.num_rows())
        .map(|i| {
            columns
                .iter()
                .map(|c| (!c.is_null(i) && c.value(i).is_finite()).then(|| c.value(i)))
                .collect()
        })
        .collect())
}

/// A window bound column of the view's output, if it has one.
fn time_column(view: &View, batch: &RecordBatch, name: &str) -> Option<Vec<i64>> {
    let i = view.output_schema.index_of(name).ok()?;
    batch
        .column(i)
        .as_primitive_opt::<TimestampMillisecondType>()
        .map(|a| a.values().to_vec())
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
) -> Result<Scorer, DetectorError> {
    let scorer = Scorer::load(path, device).map_err(|source| DetectorError::Model {
        model: name.to_string(),
        source,
    })?;
    if scorer.features() != features {
        return Err(DetectorError::CheckpointFeatures {
            model: name.to_string(),
            path: path.display().to_string(),
            trained: scorer.features().join(", "),
            reads: features.join(", "),
        });
    }
    Ok(scorer)
}

/// Attaches a detector for every configured model to `sql` (whose views
/// the models score); `log`: where they log the rows they score.
/// `background`: train online on threads of their own. Settings that
/// share a view are the members of a blend (see [`blend`]): the view is
/// scored by their [`Blend`]. Returns every detector, members included:
/// each saves and restores its own state.
pub fn attach(
    sql: &mut SqlSet,
    models: &[Settings],
    background: bool,
    log: Option<Arc<ScoreLog>>,
) -> Result<Vec<Arc<Detector>>, DetectorError> {
    let mut out: Vec<Arc<Detector>> = Vec::with_capacity(models.len());
    let mut views: Vec<&str> = Vec::new();
    for m in models {
        if !views.contains(&m.view.as_str()) {
            views.push(&m.view);
        }
    }
    for view in views {
        let settings: Vec<&Settings> = models.iter().filter(|m| m.view == view).collect();
        if let [one] = settings.as_slice() {
            let mut detector = Detector::new((*one).clone(), background)?;
            if let Some(log) = &log {
                detector = detector.with_log(log.clone());
            }
            let detector = Arc::new(detector);
            sql.attach_scorer(view, detector.clone());
            out.push(detector);
            continue;
        }
        let members: Vec<Arc<Detector>> = settings
            .into_iter()
            .map(|m| Detector::new(m.clone(), background).map(Arc::new))
            .collect::<Result<_, _>>()?;
        sql.attach_scorer(view, Arc::new(Blend::new(members.clone(), log.clone())));
        out.extend(members);
    }
    Ok(out)
}
