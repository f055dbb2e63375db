//! Training, scoring, saving and loading a scorer.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use linfa::prelude::*;
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::nets::{Autoencoder, Centroids, Nearest, Net, Pca, Sequence};
use crate::{
    Calibration, Frame, History, Kind, ModelError, Normalizer, Result, Sidecar, TrainingInfo,
};

/// Which detector, with its sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelKind {
    /// Reconstruction through a bottleneck (Candle).
    Autoencoder { hidden: usize, latent: usize },
    /// Prediction from the key's previous `window` windows (Candle GRU).
    Sequence { window: usize, hidden: usize },
    /// Reconstruction from principal components (`principal::Principal`);
    /// 0 components: as many as explain [`PCA_VARIANCE`], chosen in training.
    Pca { components: usize },
    /// Distance to the nearest k-means centroid (linfa-clustering).
    Kmeans { clusters: usize },
    /// Distance to the nearest training row (1-NN): no fitting, no seed.
    Nearest,
}

impl ModelKind {
    /// The kind named `name` with sizes suited to `features` features
    /// (`None`: no such kind, or the profile detector, which is no
    /// `Scorer`).
    pub fn named(name: &str, features: usize) -> Option<ModelKind> {
        ModelKind::of(name.parse().ok()?, features)
    }

    /// `kind` with sizes suited to `features` features (`None`: the
    /// profile detector, which is no `Scorer`).
    pub fn of(kind: Kind, features: usize) -> Option<ModelKind> {
        let k = features.max(1);
        Some(match kind {
            Kind::Autoencoder => ModelKind::Autoencoder {
                hidden: (2 * k).max(8),
                latent: (k / 3).max(2).min(k),
            },
            Kind::Sequence => ModelKind::Sequence {
                window: 8,
                hidden: (2 * k).max(16),
            },
            // As many components as explain PCA_VARIANCE of the training
            // rows' variance, chosen when it trains.
            Kind::Pca => ModelKind::Pca { components: 0 },
            Kind::Kmeans => ModelKind::Kmeans { clusters: 8 },
            Kind::Nearest => ModelKind::Nearest,
            Kind::Profile => return None,
        })
    }

    /// How many previous windows of its series a row needs (sequence).
    pub fn context_len(&self) -> Option<usize> {
        match self {
            ModelKind::Sequence { window, .. } => Some(*window),
            _ => None,
        }
    }

    /// The network of a kind trained by gradient descent, its variables
    /// made in `vb` (the same names whether trained or loaded).
    fn network(&self, vb: VarBuilder, features: usize) -> Result<Box<dyn Net>> {
        Ok(match self {
            ModelKind::Autoencoder { hidden, latent } => Box::new(Autoencoder::new(
                vb.pp("autoencoder"),
                features,
                *hidden,
                *latent,
            )?),
            ModelKind::Sequence { window, hidden } => Box::new(Sequence::new(
                vb.pp("sequence"),
                features,
                *hidden,
                *window,
            )?),
            ModelKind::Pca { .. } | ModelKind::Kmeans { .. } | ModelKind::Nearest => {
                return Err(ModelError::Invalid(format!(
                    "{} is fitted, not a trained network",
                    self.name()
                )));
            }
        })
    }

    /// Which kind it is.
    pub fn kind(&self) -> Kind {
        match self {
            ModelKind::Autoencoder { .. } => Kind::Autoencoder,
            ModelKind::Sequence { .. } => Kind::Sequence,
            ModelKind::Pca { .. } => Kind::Pca,
            ModelKind::Kmeans { .. } => Kind::Kmeans,
            ModelKind::Nearest => Kind::Nearest,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    /// Default alert threshold, as a quantile of calibration errors.
    pub threshold_quantile: f64,
    /// Share of rows held out to calibrate on (when there are enough).
    pub holdout: f64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            epochs: 40,
            batch_size: 128,
            learning_rate: 3e-3,
            seed: 7,
            threshold_quantile: 0.999,
            holdout: 0.15,
        }
    }
}

/// Where training is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f32,
}

/// Scores of a batch of rows.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Calibrated anomaly score in [0, 1] per row (0 where not `ready`).
    pub score: Vec<f32>,
    /// Raw error per row: mean squared miss over the normalised features.
    pub error: Vec<f32>,
    /// Each feature's squared miss, per row (rows × features).
    pub contributions: Frame,
    /// Each feature's signed miss, per row: how many training standard
    /// deviations the value stands above (positive) or below (negative)
    /// what the model expected of it (rows × features). The expected value
    /// in the feature's units is `x − deviation · std` (see
    /// [`Scorer::expected`]).
    pub deviation: Frame,
    /// Whether the row could be scored (a sequence model needs its key's
    /// previous windows).
    pub ready: Vec<bool>,
}

impl Scored {
    /// The `n` features that missed most in row `i`, worst first.
    pub fn top(&self, i: usize, n: usize) -> Vec<usize> {
        let row = self.contributions.row(i);
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        idx.truncate(n);
        idx
    }
}

/// The share of the training rows' variance PCA's components explain
/// when the count is left to training (`ModelKind::Pca { components: 0 }`,
/// what `kind = "pca"` asks for): the rest, a broken relation between
/// features, is what it scores.
pub const PCA_VARIANCE: f64 = 0.95;

/// A trained detector with its normalisation and calibration.
pub struct Scorer {
    sidecar: Sidecar,
    net: Box<dyn Net>,
    varmap: VarMap,
    device: Device,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("kind", &self.sidecar.kind)
            .field("features", &self.sidecar.features)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// Trains `kind` on `frame` (rows of `features`; `keys[i]` is row i's
    /// key, rows of a key in time order — the sequence model reads them).
    pub fn train(
        kind: ModelKind,
        features: Vec<String>,
        frame: &Frame,
        keys: &[String],
        options: &TrainOptions,
        device: &Device,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Scorer> {
        if features.len() != frame.cols {
            return Err(ModelError::Invalid(format!(
                "{} feature names for {} feature columns",
                features.len(),
                frame.cols
            )));
        }
        if frame.rows < 2 {
            return Err(ModelError::Invalid(format!(
                "training needs at least 2 feature rows, got {}",
                frame.rows
            )));
        }
        let normalization = Normalizer::fit(frame)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let k = frame.cols;
        let context_len = kind.context_len();
        // Samples: every row, or (sequence) every row with a full history.
        let (context, usable) = match context_len {
            Some(len) => {
                let (ctx, full) = History::new(len, k).contexts(keys, frame);
                (Some(ctx), full)
            }
            None => (None, vec![true; frame.rows]),
        };
        let samples: Vec<usize> = (0..frame.rows).filter(|&i| usable[i]).collect();
        if samples.len() < 2 {
            return Err(ModelError::Invalid(format!(
                "training needs at least 2 usable feature rows, got {}",
                samples.len()
            )));
        }
        // Every n-th sample is held out to calibrate on: errors of rows the
        // model has not fitted are the honest reference.
        let every = (1.0 / options.holdout.clamp(0.01, 0.5)).round() as usize;
        let (mut fit_rows, mut calib_rows) = (Vec::new(), Vec::new());
        for (j, &i) in samples.iter().enumerate() {
            if samples.len() >= 200 && j % every == every - 1 {
                calib_rows.push(i);
            } else {
                fit_rows.push(i);
            }
        }
        if calib_rows.is_empty() {
            calib_rows = fit_rows.clone();
        }
        let x = normalization.apply(&frame.to_tensor(device)?, device)?;
        let ctx = match (&context, context_len) {
            (Some(c), Some(len)) => Some(normalization.apply(
                &Tensor::from_slice(c, (frame.rows, len, k), device)?,
                device,
            )?),
            _ => None,
        };
        let index = |rows: &[usize]| -> Result<Tensor> {
            let v: Vec<u32> = rows.iter().map(|&i| i as u32).collect();
            Ok(Tensor::from_vec(v, rows.len(), device)?)
        };
        let mut epochs = 0;
        let mut final_loss = 0f32;
        // The kind as trained (PCA's component count, once chosen).
        let mut trained_kind = kind.clone();
        let net: Box<dyn Net> = match &kind {
            ModelKind::Autoencoder { .. } | ModelKind::Sequence { .. } => {
                kind.network(vb.clone(), k)?
            }
            ModelKind::Pca { components } => {
                let rows = host_rows(&x.index_select(&index(&fit_rows)?, 0)?)?;
                let rows: Vec<Vec<f64>> = rows.outer_iter().map(|r| r.to_vec()).collect();
                let pca = crate::principal::Principal::fit(&rows);
                let r = match *components {
                    0 => pca.components_for(PCA_VARIANCE),
                    c => c,
                }
                .clamp(1, k);
                trained_kind = ModelKind::Pca { components: r };
                // k × r, one direction a column.
                let w: Vec<f32> = (0..k)
                    .flat_map(|j| pca.directions[..r].iter().map(move |d| d[j] as f32))
                    .collect();
                let w = Tensor::from_vec(w, (k, r), device)?;
                let mean: Vec<f32> = pca.mean.iter().map(|&m| m as f32).collect();
                let mean = Tensor::from_vec(mean, (1, k), device)?;
                insert(&varmap, "pca.components", &w)?;
                insert(&varmap, "pca.mean", &mean)?;
                Box::new(Pca {
                    components: w,
                    mean,
                })
            }
            ModelKind::Kmeans { clusters } => {
                let rows = host_rows(&x.index_select(&index(&fit_rows)?, 0)?)?;
                let n = (*clusters).min(fit_rows.len()).max(1);
                let model = linfa_clustering::KMeans::params(n)
                    .max_n_iterations(200)
                    .fit(&DatasetBase::from(rows))
                    .map_err(|e| ModelError::Invalid(format!("k-means: {e}")))?;
                let c = tensor_of(model.centroids(), device)?;
                insert(&varmap, "kmeans.centroids", &c)?;
                Box::new(Centroids { centroids: c })
            }
            ModelKind::Nearest => {
                let rows = x.index_select(&index(&fit_rows)?, 0)?;
                insert(&varmap, "nearest.rows", &rows)?;
                Box::new(Nearest { rows })
            }
        };
        if matches!(
            kind,
            ModelKind::Autoencoder { .. } | ModelKind::Sequence { .. }
        ) {
            let mut rng = StdRng::seed_from_u64(options.seed);
            seeded_init(&varmap, &mut rng)?;
            // The autoencoder learns to rebuild each feature from the
            // others (denoising: inputs with features masked out), so a
            // feature that breaks away stands out in its own error rather
            // than smearing into the others'.
            let denoise = matches!(kind, ModelKind::Autoencoder { .. });
            let mut opt = AdamW::new(
                varmap.all_vars(),
                ParamsAdamW {
                    lr: options.learning_rate,
                    weight_decay: 1e-4,
                    ..Default::default()
                },
            )?;
            let mut order = fit_rows.clone();
            for epoch in 0..options.epochs {
                order.shuffle(&mut rng);
                let (mut sum, mut batches) = (0f32, 0usize);
                for chunk in order.chunks(options.batch_size.max(1)) {
                    let idx = index(chunk)?;
                    let xb = x.index_select(&idx, 0)?;
                    let cb = match &ctx {
                        Some(c) => Some(c.index_select(&idx, 0)?),
                        None => None,
                    };
                    let input = if denoise {
                        let keep: Vec<f32> = (0..chunk.len() * k)
                            .map(|_| {
                                if rng.random::<f32>() < MASKED {
                                    0.0
                                } else {
                                    1.0
                                }
                            })
                            .collect();
                        (&xb * Tensor::from_vec(keep, (chunk.len(), k), device)?)?
                    } else {
                        xb.clone()
                    };
                    let pred = net.predict(&input, cb.as_ref())?;
                    let loss = candle_nn::loss::mse(&pred, &xb)?;
                    opt.backward_step(&loss)?;
                    sum += loss.to_scalar::<f32>()?;
                    batches += 1;
                }
                final_loss = sum / batches.max(1) as f32;
                epochs = epoch + 1;
                progress(Progress {
                    epoch: epochs,
                    epochs: options.epochs,
                    loss: final_loss,
                });
            }
        }
        let mut scorer = Scorer {
            sidecar: Sidecar {
                format: Sidecar::FORMAT.to_string(),
                kind: trained_kind,
                features,
                normalization,
                calibration: Calibration::fit(&[], options.threshold_quantile),
                training: TrainingInfo {
                    rows: fit_rows.len(),
                    calibration_rows: calib_rows.len(),
                    data_hash: frame.content_hash(),
                    epochs,
                    final_loss,
                },
                weights: String::new(),
            },
            net,
            varmap,
            device: device.clone(),
        };
        let calib = frame.select(&calib_rows);
        let calib_ctx =
            context.map(|c| select_contexts(&c, &calib_rows, context_len.unwrap_or(0) * k));
        let (errors, _) = scorer.errors(calib, calib_ctx.as_deref())?;
        scorer.sidecar.calibration = Calibration::fit(&errors, options.threshold_quantile);
        Ok(scorer)
    }

    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }

    pub fn features(&self) -> &[String] {
        &self.sidecar.features
    }

    /// How many previous windows of its key a row needs (sequence model).
    pub fn context_len(&self) -> Option<usize> {
        self.net.context_len()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What the model expected of feature `j` in a row where it read `x`
    /// and missed by `deviation` (see [`Scored::deviation`]), in the
    /// feature's units.
    pub fn expected(&self, j: usize, x: f64, deviation: f32) -> f64 {
        let std = self
            .sidecar
            .normalization
            .std
            .get(j)
            .copied()
            .unwrap_or(1.0);
        x - f64::from(deviation) * f64::from(std)
    }

    /// Raw error per row and each feature's signed miss (the value less
    /// the prediction, normalised), in one pass on the device.
    fn errors(&self, frame: Frame, context: Option<&[f32]>) -> Result<(Vec<f32>, Vec<f32>)> {
        if frame.rows == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let norm = &self.sidecar.normalization;
        let (rows, cols) = (frame.rows, frame.cols);
        let x = norm.apply(&frame.into_tensor(&self.device)?, &self.device)?;
        let ctx = match (context, self.net.context_len()) {
            (Some(c), Some(len)) => Some(norm.apply(
                &Tensor::from_slice(c, (rows, len, cols), &self.device)?,
                &self.device,
            )?),
            (None, Some(_)) => {
                return Err(ModelError::Invalid(
                    "the sequence model scores rows with their previous windows".into(),
                ));
            }
            _ => None,
        };
        let deviation = (&x - self.net.predict(&x, ctx.as_ref())?)?;
        let per_row = deviation.sqr()?.mean(1)?;
        Ok((
            per_row.to_vec1::<f32>()?,
            deviation.flatten_all()?.to_vec1::<f32>()?,
        ))
    }

    /// Scores `frame` (raw feature values, columns in [`Scorer::features`]
    /// order); `context` (sequence model) comes from a [`History`], with
    /// `ready` saying which rows had a full one.
    pub fn score(&self, frame: &Frame, context: Option<(&[f32], &[bool])>) -> Result<Scored> {
        self.score_owned(frame.clone(), context)
    }

    /// [`Scorer::score`], taking the frame over: the batch then goes to
    /// the device without another copy on the host.
    pub fn score_owned(&self, frame: Frame, context: Option<(&[f32], &[bool])>) -> Result<Scored> {
        if frame.cols != self.sidecar.features.len() {
            return Err(ModelError::Invalid(format!(
                "the model reads {} features, the batch has {}",
                self.sidecar.features.len(),
                frame.cols
            )));
        }
        let (rows, cols) = (frame.rows, frame.cols);
        let (error, deviation) = self.errors(frame, context.map(|c| c.0))?;
        let miss: Vec<f32> = deviation.iter().map(|d| d * d).collect();
        let ready: Vec<bool> = match context {
            Some((_, full)) => full.to_vec(),
            None => vec![true; rows],
        };
        let score = error
            .iter()
            .zip(&ready)
            .map(|(&e, &r)| {
                if r {
                    self.sidecar.calibration.score(e as f64) as f32
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Scored {
            score,
            error,
            contributions: Frame::new(rows, cols, miss)?,
            deviation: Frame::new(rows, cols, deviation)?,
            ready,
        })
    }

    /// Writes `PATH` (the JSON sidecar) and the weights beside it, with the
    /// same name and the extension `.safetensors`.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let weights = path.with_extension("safetensors");
        let file = |e: &dyn std::fmt::Display, p: &Path| ModelError::File {
            path: p.display().to_string(),
            message: e.to_string(),
        };
        self.varmap.save(&weights).map_err(|e| file(&e, &weights))?;
        self.sidecar.weights = weights
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = serde_json::to_string_pretty(&self.sidecar).map_err(|e| file(&e, path))?;
        std::fs::write(path, text).map_err(|e| file(&e, path))
    }

    /// Reads a checkpoint written by [`Scorer::save`] onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Scorer> {
        let file = |message: String| ModelError::File {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file(e.to_string()))?;
        let sidecar: Sidecar = serde_json::from_str(&text)
            .map_err(|e| file(format!("not a telemine model sidecar: {e}")))?;
        if sidecar.format != Sidecar::FORMAT {
            return Err(file(format!(
                "format `{}`, this telemine reads `{}`",
                sidecar.format,
                Sidecar::FORMAT
            )));
        }
        let weights: PathBuf = path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(&sidecar.weights);
        let bytes = std::fs::read(&weights)
            .map_err(|e| file(format!("weights {}: {e}", weights.display())))?;
        Scorer::from_parts(sidecar, &bytes, device)
            .map_err(|e| file(format!("weights {}: {e}", weights.display())))
    }

    /// The scorer as bytes, for the engine's saved state: the sidecar
    /// (JSON) and the weights (safetensors).
    pub fn to_bytes(&self) -> Result<(String, Vec<u8>)> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Invalid("model variables poisoned".into()))?;
        let tensors: Vec<(String, Tensor)> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let weights = safetensors::serialize(tensors, None)
            .map_err(|e| ModelError::Invalid(format!("weights: {e}")))?;
        let sidecar = serde_json::to_string(&self.sidecar)
            .map_err(|e| ModelError::Invalid(format!("sidecar: {e}")))?;
        Ok((sidecar, weights))
    }

    /// A scorer from [`Scorer::to_bytes`], onto `device`.
    pub fn from_bytes(sidecar: &str, weights: &[u8], device: &Device) -> Result<Scorer> {
        let sidecar: Sidecar = serde_json::from_str(sidecar)
            .map_err(|e| ModelError::Invalid(format!("not a telemine model sidecar: {e}")))?;
        Scorer::from_parts(sidecar, weights, device)
    }

    fn from_parts(sidecar: Sidecar, weights: &[u8], device: &Device) -> Result<Scorer> {
        if sidecar.format != Sidecar::FORMAT {
            return Err(ModelError::Invalid(format!(
                "format `{}`, this telemine reads `{}`",
                sidecar.format,
                Sidecar::FORMAT
            )));
        }
        let stored = candle_core::safetensors::load_buffer(weights, device)?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let k = sidecar.features.len();
        // Variables made with their shapes, then filled from the weights.
        let net: Box<dyn Net> = match &sidecar.kind {
            ModelKind::Autoencoder { .. } | ModelKind::Sequence { .. } => {
                sidecar.kind.network(vb.clone(), k)?
            }
            ModelKind::Pca { components } => {
                let c = (*components).min(k);
                let w = vb.get((k, c), "pca.components")?;
                let mean = vb.get((1, k), "pca.mean")?;
                Box::new(Pca {
                    components: w,
                    mean,
                })
            }
            ModelKind::Kmeans { .. } => {
                // The number of centroids k-means found is in the weights.
                let c = stored.get("kmeans.centroids").ok_or_else(|| {
                    ModelError::Invalid("the weights lack kmeans.centroids".into())
                })?;
                let c = vb.get(c.dims2()?, "kmeans.centroids")?;
                Box::new(Centroids { centroids: c })
            }
            ModelKind::Nearest => {
                let r = stored
                    .get("nearest.rows")
                    .ok_or_else(|| ModelError::Invalid("the weights lack nearest.rows".into()))?;
                let rows = vb.get(r.dims2()?, "nearest.rows")?;
                Box::new(Nearest { rows })
            }
        };
        {
            let data = varmap
                .data()
                .lock()
                .map_err(|_| ModelError::Invalid("model variables poisoned".into()))?;
            for (name, var) in data.iter() {
                let t = stored
                    .get(name)
                    .ok_or_else(|| ModelError::Invalid(format!("the weights lack {name}")))?;
                var.set(t)?;
            }
        }
        Ok(Scorer {
            sidecar,
            net,
            varmap,
            device: device.clone(),
        })
    }
}

/// Share of features masked out of each training row (denoising).
const MASKED: f32 = 0.2;

/// Sets every weight from `rng` (uniform in ±1/√fan-in; biases 0), so a
/// seed gives the same model on any device (Candle's CPU generator cannot
/// be seeded).
fn seeded_init(varmap: &VarMap, rng: &mut StdRng) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Invalid("model variables poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = match dims.as_slice() {
            [_, fan_in] => {
                let bound = 1.0 / (*fan_in as f32).sqrt();
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            }
            _ => vec![0.0; n],
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

/// The contexts of `rows` out of a block of `stride` values per row.
fn select_contexts(all: &[f32], rows: &[usize], stride: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * stride);
    for &i in rows {
        out.extend_from_slice(&all[i * stride..(i + 1) * stride]);
    }
    out
}

fn host_rows(t: &Tensor) -> Result<Array2<f64>> {
    let (n, k) = t.dims2()?;
    let v: Vec<f64> = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Array2::from_shape_vec((n, k), v).map_err(|e| ModelError::Invalid(e.to_string()))
}

fn tensor_of(a: &Array2<f64>, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    Ok(Tensor::from_vec(v, a.dim(), device)?)
}

/// Stores `t` in `varmap` under `name`, so it is saved with the weights.
fn insert(varmap: &VarMap, name: &str, t: &Tensor) -> Result<()> {
    let mut data = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Invalid("model variables poisoned".into()))?;
    data.insert(name.to_string(), Var::from_tensor(t)?);
    Ok(())
}
