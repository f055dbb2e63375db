//! The detectors, as predictors of a row's normalised features: the row's
//! error is how far the prediction misses, feature by feature.
//!
//! - [`Autoencoder`]: the row through a narrow bottleneck and back; rows
//!   unlike the training rows come back distorted.
//! - [`Sequence`]: a GRU over the key's previous windows predicts this one;
//!   a break from the key's own recent behaviour misses.
//! - [`Pca`]: the row projected on the training rows' main components and
//!   back (components from [`crate::principal`]: the covariance
//!   diagonalised by Jacobi rotations).
//! - [`Centroids`]: the nearest of the training rows' k-means centroids
//!   (fitted by linfa-clustering);
//! - [`Nearest`]: the nearest training row itself (1-NN).
//!
//! All of them predict with tensor operations only, on the scorer's
//! device, whole batches at a time.

use candle_core::{D, Tensor};
use candle_nn::rnn::{GRU, GRUConfig, RNN, gru};
use candle_nn::{Linear, Module, VarBuilder, linear};

use crate::Result;

/// A detector as a predictor of normalised rows.
pub trait Net: Send + Sync {
    /// Each row's predicted features, from the row (`rows`: n × k) or from
    /// its key's previous windows (`context`: n × len × k, normalised).
    fn predict(&self, rows: &Tensor, context: Option<&Tensor>) -> Result<Tensor>;

    /// How many previous windows of its key a row needs, if any.
    fn context_len(&self) -> Option<usize> {
        None
    }
}

/// `k → hidden → latent → hidden → k`, ReLU between.
pub struct Autoencoder {
    layers: [Linear; 4],
}

impl Autoencoder {
    pub fn new(vb: VarBuilder, features: usize, hidden: usize, latent: usize) -> Result<Self> {
        Ok(Autoencoder {
            layers: [
                linear(features, hidden, vb.pp("enc1"))?,
                linear(hidden, latent, vb.pp("enc2"))?,
                linear(latent, hidden, vb.pp("dec1"))?,
                linear(hidden, features, vb.pp("dec2"))?,
            ],
        })
    }
}

impl Net for Autoencoder {
    fn predict(&self, rows: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        let [e1, e2, d1, d2] = &self.layers;
        let z = e2.forward(&e1.forward(rows)?.relu()?)?;
        Ok(d2.forward(&d1.forward(&z)?.relu()?)?)
    }
}

/// A GRU over the previous `len` windows, then a linear head.
pub struct Sequence {
    gru: GRU,
    head: Linear,
    len: usize,
}

impl Sequence {
    pub fn new(vb: VarBuilder, features: usize, hidden: usize, len: usize) -> Result<Self> {
        Ok(Sequence {
            gru: gru(features, hidden, GRUConfig::default(), vb.pp("gru"))?,
            head: linear(hidden, features, vb.pp("head"))?,
            len,
        })
    }
}

impl Net for Sequence {
    fn predict(&self, rows: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.ok_or_else(|| {
            crate::ModelError::Invalid(
                "the sequence model needs each row's previous windows".into(),
            )
        })?;
        let states = self.gru.seq(context)?;
        let last = states.last().ok_or_else(|| {
            crate::ModelError::Invalid("the sequence model needs at least one window".into())
        })?;
        let _ = rows;
        Ok(self.head.forward(last.h())?)
    }

    fn context_len(&self) -> Option<usize> {
        Some(self.len)
    }
}

/// Projection on principal components: `(x - m) · W · Wᵀ + m`.
pub struct Pca {
    /// k × components, orthonormal columns.
    pub components: Tensor,
    /// 1 × k, the training rows' mean.
    pub mean: Tensor,
}

impl Net for Pca {
    fn predict(&self, rows: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        let centred = rows.broadcast_sub(&self.mean)?;
        let back = centred
            .matmul(&self.components)?
            .matmul(&self.components.t()?)?;
        Ok(back.broadcast_add(&self.mean)?)
    }
}

/// The nearest centroid.
pub struct Centroids {
    /// clusters × k.
    pub centroids: Tensor,
}

impl Net for Centroids {
    fn predict(&self, rows: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        // |x - c|² = |x|² - 2 x·c + |c|²; |x|² does not change the argmin.
        let cross = rows.matmul(&self.centroids.t()?)?;
        let norms = self.centroids.sqr()?.sum(D::Minus1)?;
        let distance = cross.affine(-2.0, 0.0)?.broadcast_add(&norms)?;
        let nearest = distance.argmin(D::Minus1)?;
        Ok(self.centroids.index_select(&nearest, 0)?)
    }
}

/// The nearest training row.
pub struct Nearest {
    /// training rows × k.
    pub rows: Tensor,
}

/// Distances computed at once, at most: a batch is scored in chunks of
/// rows so that rows × training rows stays under it.
const NEAREST_CELLS: usize = 1 << 22;

impl Net for Nearest {
    fn predict(&self, rows: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        let (n, _) = rows.dims2()?;
        let (m, _) = self.rows.dims2()?;
        let norms = self.rows.sqr()?.sum(D::Minus1)?;
        let chunk = (NEAREST_CELLS / m.max(1)).max(1);
        let mut out = Vec::with_capacity(n.div_ceil(chunk));
        for start in (0..n).step_by(chunk) {
            let part = rows.narrow(0, start, chunk.min(n - start))?;
            let cross = part.matmul(&self.rows.t()?)?;
            let distance = cross.affine(-2.0, 0.0)?.broadcast_add(&norms)?;
            let nearest = distance.argmin(D::Minus1)?;
            out.push(self.rows.index_select(&nearest, 0)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn nearest_centroid_is_predicted() {
        let d = Device::Cpu;
        let c = Centroids {
            centroids: Tensor::new(&[[0f32, 0.], [10., 10.]], &d).unwrap(),
        };
        let x = Tensor::new(&[[1f32, 1.], [9., 8.]], &d).unwrap();
        let p: Vec<Vec<f32>> = c.predict(&x, None).unwrap().to_vec2().unwrap();
        assert_eq!(p, vec![vec![0., 0.], vec![10., 10.]]);
    }

    #[test]
    fn shapes_line_up() {
        let d = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &d);
        let ae = Autoencoder::new(vb.pp("ae"), 5, 8, 2).unwrap();
        let x = Tensor::zeros((3, 5), DType::F32, &d).unwrap();
        assert_eq!(ae.predict(&x, None).unwrap().dims(), &[3, 5]);
        let sq = Sequence::new(vb.pp("seq"), 5, 6, 4).unwrap();
        let ctx = Tensor::zeros((3, 4, 5), DType::F32, &d).unwrap();
        assert_eq!(sq.predict(&x, Some(&ctx)).unwrap().dims(), &[3, 5]);
    }
}
