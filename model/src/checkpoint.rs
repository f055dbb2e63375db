//! A trained scorer on disk: `NAME.safetensors` (the weights) beside
//! `NAME.json` (this sidecar: everything needed to use them).

use serde::{Deserialize, Serialize};

use crate::{Calibration, ModelKind, Normalizer};

/// The JSON sidecar of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sidecar {
    /// `telemine.model/v1`.
    pub format: String,
    pub kind: ModelKind,
    /// Feature columns, in the order the weights expect them.
    pub features: Vec<String>,
    pub normalization: Normalizer,
    pub calibration: Calibration,
    pub training: TrainingInfo,
    /// The weights file, relative to the sidecar.
    pub weights: String,
}

impl Sidecar {
    pub const FORMAT: &'static str = "telemine.model/v1";
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    /// Feature rows trained on (and held out for calibration).
    pub rows: usize,
    pub calibration_rows: usize,
    /// xxh3-128 of the training rows (values and shape).
    pub data_hash: String,
    pub epochs: usize,
    /// Mean squared error of the last epoch (normalised units).
    pub final_loss: f32,
}
