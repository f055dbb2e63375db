//! A univariate series scored record by record, without look-ahead: the
//! shape NAB asks detectors to have.
//!
//! Each record becomes a small feature vector from the record and the ones
//! before it only (level, change, distance from and spread of the last few
//! values, and — for series with several records a day — distance from the
//! same time a day before); a `telemine_model::Scorer` learns those vectors from the
//! probation records, then again on everything seen so far each time the
//! series doubles in length. The detector's raw error is turned into an
//! anomaly likelihood, as Numenta's detectors do: how unusual the mean
//! error of the last few records is against the errors of the recent past
//! (a normal tail probability), so a level the model keeps missing stops
//! alarming once it is the new normal.

use std::collections::VecDeque;

use telemine_model::{Device, Frame, ModelKind, Scorer, TrainOptions};

/// Values before a record its features read.
const WINDOW: usize = 8;
/// Features per record.
const FEATURES: usize = 5;
/// Errors the likelihood compares against, and the recent ones it averages.
const LONG: usize = 500;
const SHORT: usize = 4;

pub struct Univariate {
    kind: String,
    values: Vec<f64>,
    rows: Vec<f32>,
    scorer: Option<Scorer>,
    /// Records per day, when the series has several a day: the features
    /// compare a record with the same time a day before.
    season: Option<usize>,
    next_training: usize,
    errors: VecDeque<f64>,
    epochs: usize,
}

impl Univariate {
    /// A detector of kind `kind` that trains first after `probation`
    /// records.
    pub fn new(kind: &str, probation: usize, epochs: usize, season: Option<usize>) -> Univariate {
        Univariate {
            kind: kind.to_string(),
            values: Vec::new(),
            rows: Vec::new(),
            scorer: None,
            season: season.filter(|&s| s >= 2),
            next_training: probation.max(WINDOW * 4),
            errors: VecDeque::new(),
            epochs,
        }
    }

    fn features(&self, x: f64) -> [f32; FEATURES] {
        let past = &self.values[self.values.len().saturating_sub(WINDOW)..];
        let prev = past.last().copied().unwrap_or(x);
        let (mean, std) = if past.is_empty() {
            (x, 0.0)
        } else {
            let m = past.iter().sum::<f64>() / past.len() as f64;
            let v = past.iter().map(|p| (p - m).powi(2)).sum::<f64>() / past.len() as f64;
            (m, v.sqrt())
        };
        // Against the same time a day before (seasonal naive), averaged
        // over a few records either side of it.
        let seasonal = self.season.and_then(|s| {
            let n = self.values.len();
            let centre = n.checked_sub(s)?;
            let lo = centre.saturating_sub(WINDOW / 2);
            let hi = (centre + WINDOW / 2).min(n);
            let near = &self.values[lo..hi];
            (!near.is_empty()).then(|| x - near.iter().sum::<f64>() / near.len() as f64)
        });
        [
            x as f32,
            (x - prev) as f32,
            (x - mean) as f32,
            std as f32,
            seasonal.unwrap_or(0.0) as f32,
        ]
    }

    fn train(&mut self) -> Result<(), String> {
        let n = self.rows.len() / FEATURES;
        let frame = Frame::new(n, FEATURES, self.rows.clone()).map_err(|e| e.to_string())?;
        let keys = vec![String::new(); n];
        let kind = ModelKind::named(&self.kind, FEATURES)
            .ok_or_else(|| format!("unknown detector `{}`", self.kind))?;
        let names = ["level", "change", "from_mean", "spread", "from_yesterday"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let options = TrainOptions {
            epochs: self.epochs,
            ..TrainOptions::default()
        };
        self.scorer = Some(
            Scorer::train(
                kind,
                names,
                &frame,
                &keys,
                &options,
                &Device::Cpu,
                &mut |_| {},
            )
            .map_err(|e| e.to_string())?,
        );
        Ok(())
    }

    /// The anomaly score of the next record, in [0, 1].
    pub fn step(&mut self, x: f64) -> Result<f64, String> {
        let row = self.features(x);
        self.values.push(x);
        if self.values.len() > self.next_training {
            self.train()?;
            self.next_training *= 2;
        }
        self.rows.extend_from_slice(&row);
        let Some(scorer) = &self.scorer else {
            return Ok(0.0);
        };
        let frame = Frame::new(1, FEATURES, row.to_vec()).map_err(|e| e.to_string())?;
        let error = match scorer.context_len() {
            Some(len) => {
                // The record's own past rows, oldest first.
                let n = self.rows.len() / FEATURES;
                let mut ctx = Vec::with_capacity(len * FEATURES);
                for k in (1..=len).rev() {
                    let j = n.saturating_sub(1 + k);
                    ctx.extend_from_slice(&self.rows[j * FEATURES..(j + 1) * FEATURES]);
                }
                scorer.score(&frame, Some((&ctx, &[true])))
            }
            None => scorer.score(&frame, None),
        }
        .map_err(|e| e.to_string())?
        .error[0] as f64;
        Ok(self.likelihood(error))
    }

    fn likelihood(&mut self, error: f64) -> f64 {
        self.errors.push_back(error);
        if self.errors.len() > LONG + SHORT {
            self.errors.pop_front();
        }
        let n = self.errors.len();
        if n < SHORT + 10 {
            return 0.0;
        }
        let all: Vec<f64> = self.errors.iter().copied().collect();
        let (long, short) = all.split_at(n - SHORT);
        let mean = long.iter().sum::<f64>() / long.len() as f64;
        let var = long.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / long.len() as f64;
        let recent = short.iter().sum::<f64>() / short.len() as f64;
        spread_tail((recent - mean) / var.sqrt().max(1e-9))
    }
}

/// A score in [0, 1) that grows with `z` without saturating where Φ(z)
/// rounds to 1: `1 − Q(z)^(1/30)`, with `Q` the normal upper tail (so z = 3
/// scores 0.20, z = 10 scores 0.83, z = 30 scores 0.9995).
pub fn spread_tail(z: f64) -> f64 {
    let ln_q = if z < 5.0 {
        (1.0 - normal_cdf(z)).max(f64::MIN_POSITIVE).ln()
    } else {
        // Asymptotic expansion of ln Q(z) for large z.
        -z * z / 2.0 - z.ln() - 0.5 * (2.0 * std::f64::consts::PI).ln()
            + (1.0 - 1.0 / (z * z) + 3.0 / z.powi(4)).ln()
    };
    1.0 - (ln_q / 30.0).exp()
}

/// Φ(z), the standard normal distribution function (Abramowitz & Stegun
/// 7.1.26 for erf; absolute error below 1.5e-7).
pub fn normal_cdf(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    0.5 * (1.0 + erf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_distribution_function() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-3.0) - 0.001_349_9).abs() < 1e-6);
        // The spread tail is continuous at 5 and keeps growing past Φ's 1.
        assert!((spread_tail(4.999_999) - spread_tail(5.0)).abs() < 1e-4);
        assert!(spread_tail(12.0) < spread_tail(20.0) && spread_tail(20.0) < 1.0);
        assert!(
            (spread_tail(3.0) - 0.1976).abs() < 1e-3,
            "{}",
            spread_tail(3.0)
        );
    }

    #[test]
    fn a_spike_after_a_quiet_stretch_scores_high() {
        let mut d = Univariate::new("pca", 300, 5, None);
        let mut last = 0.0;
        for i in 0..1000 {
            let x = (i as f64 * 0.1).sin() + if i == 900 { 8.0 } else { 0.0 };
            let s = d.step(x).unwrap();
            if i == 900 {
                last = s;
            } else if (400..890).contains(&i) {
                assert!(s < 0.5, "record {i}: {s}");
            }
        }
        assert!(last > 0.5, "{last}");
    }
}
