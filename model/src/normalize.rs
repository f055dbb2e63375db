//! Per-feature standardisation with the training rows' statistics.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Frame, Result};

/// Mean and standard deviation of each feature over the training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// A feature that never varied in training is scaled by this instead of
/// 0, so any change in it shows (and nothing divides by zero).
const MIN_STD: f32 = 1e-6;

impl Normalizer {
    pub fn fit(frame: &Frame) -> Normalizer {
        let (n, k) = (frame.rows.max(1) as f64, frame.cols);
        let mut mean = vec![0f64; k];
        for i in 0..frame.rows {
            for (m, v) in mean.iter_mut().zip(frame.row(i)) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let mut var = vec![0f64; k];
        for i in 0..frame.rows {
            for ((s, v), m) in var.iter_mut().zip(frame.row(i)).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
        Normalizer {
            mean: mean.iter().map(|m| *m as f32).collect(),
            std: var
                .iter()
                .map(|s| ((s / n).sqrt() as f32).max(MIN_STD))
                .collect(),
        }
    }

    /// `(x - mean) / std` on the device, for `x` of shape (…, features).
    pub fn apply(&self, x: &Tensor, device: &Device) -> Result<Tensor> {
        let mean = Tensor::from_slice(&self.mean, self.mean.len(), device)?;
        let std = Tensor::from_slice(&self.std, self.std.len(), device)?;
        Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardises_each_feature() {
        let f = Frame::new(4, 2, vec![1.0, 5.0, 2.0, 5.0, 3.0, 5.0, 4.0, 5.0]).unwrap();
        let n = Normalizer::fit(&f);
        assert_eq!(n.mean, vec![2.5, 5.0]);
        assert!((n.std[0] - 1.118_034).abs() < 1e-5);
        assert_eq!(n.std[1], MIN_STD, "a constant feature keeps a tiny scale");
        let x = n
            .apply(&f.to_tensor(&Device::Cpu).unwrap(), &Device::Cpu)
            .unwrap();
        let v: Vec<Vec<f32>> = x.to_vec2().unwrap();
        assert!((v[0][0] + 1.341_640_8).abs() < 1e-5);
        assert_eq!(v[0][1], 0.0);
    }
}
