//! telemine's anomaly scorers, independent of SQL and Kafka.
//!
//! A [`Scorer`] turns feature rows (one row per key and window, the output
//! of a feature view) into an anomaly score in [0, 1] per row and an
//! explanation: each feature's share of the row's error. It is made of
//! - a [`Normalizer`] (per-feature mean and deviation of the training rows),
//! - a detector: a Candle network ([`nets`]: an autoencoder over the
//!   feature vector, or a recurrent model predicting a key's row from its
//!   previous windows) or a classical baseline (PCA reconstruction, k-means
//!   distance), all scored as tensor operations on the chosen [`Device`],
//! - a [`Calibration`]: the distribution of the training rows' errors, so
//!   that a score of 0.99 means "more unusual than 99% of training rows".
//!
//! Invariants:
//! - a batch is scored in one forward pass: its rows are copied once into
//!   a tensor, normalised and scored on the device, and copied back once;
//! - the same checkpoint scores the same rows alike on CPU and CUDA, within
//!   floating-point tolerance;
//! - nothing here reads a file but [`Scorer::load`].

mod calibrate;
mod checkpoint;
mod device;
mod frame;
mod history;
mod kind;
pub mod nets;
mod normalize;
pub mod principal;
pub mod profile;
mod scorer;

pub use calibrate::Calibration;
pub use checkpoint::{Sidecar, TrainingInfo};
pub use device::{DeviceChoice, pick_device};
pub use frame::Frame;
pub use history::History;
pub use kind::{Kind, UnknownKind};
pub use normalize::Normalizer;
pub use profile::{ProfileFit, ProfileScore, ProfileState};
pub use scorer::{ModelKind, Progress, Scored, Scorer, TrainOptions};

pub use candle_core::Device;

/// What can go wrong building, training, loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
