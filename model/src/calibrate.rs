//! From a detector's raw error to a score in [0, 1]: the share of training
//! rows whose error was lower.

use serde::{Deserialize, Serialize};

/// The training errors' distribution, as quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Probabilities, ascending, the last one `1 - 1/(n+1)` for `n`
    /// training rows.
    pub probs: Vec<f64>,
    /// The training error at each probability.
    pub errors: Vec<f64>,
    /// The score a row must exceed to count as anomalous by default (the
    /// `threshold_quantile` of training errors, as a score).
    pub threshold: f64,
}

/// Quantiles kept: dense where alerts live.
fn probabilities(n: usize) -> Vec<f64> {
    let top = 1.0 - 1.0 / (n as f64 + 1.0);
    let mut p: Vec<f64> = (0..=18).map(|i| i as f64 * 0.05).collect();
    p.extend((1..10).map(|i| 0.9 + i as f64 * 0.01));
    p.extend((1..10).map(|i| 0.99 + i as f64 * 0.001));
    p.extend([0.9995, 0.9999]);
    p.retain(|&x| x < top);
    p.push(top);
    p
}

impl Calibration {
    /// From the training rows' raw errors; `threshold_quantile` (e.g.
    /// 0.999) sets the default threshold.
    pub fn fit(errors: &[f32], threshold_quantile: f64) -> Calibration {
        let mut sorted: Vec<f64> = errors
            .iter()
            .map(|&e| e as f64)
            .filter(|e| e.is_finite())
            .collect();
        sorted.sort_by(f64::total_cmp);
        let probs = probabilities(sorted.len());
        let at = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            // Quantile by linear interpolation between order statistics,
            // with the largest error at 1 - 1/(n+1).
            let n = sorted.len();
            let pos = (p * (n as f64 + 1.0) - 1.0).clamp(0.0, (n - 1) as f64);
            let (lo, frac) = (pos.floor() as usize, pos.fract());
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        };
        let errors: Vec<f64> = probs.iter().map(|&p| at(p)).collect();
        let mut c = Calibration {
            probs,
            errors,
            threshold: 0.0,
        };
        c.threshold = threshold_quantile.clamp(0.0, 1.0);
        c
    }

    /// The score of a raw error: the interpolated share of training errors
    /// below it; past the largest, closer to 1 the further past it.
    pub fn score(&self, error: f64) -> f64 {
        let (Some(&first), Some(&last)) = (self.errors.first(), self.errors.last()) else {
            return 0.0;
        };
        if !error.is_finite() {
            return 1.0;
        }
        if error <= first {
            return self.probs[0];
        }
        let top = *self.probs.last().unwrap_or(&1.0);
        if error >= last {
            return if last > 0.0 {
                1.0 - (1.0 - top) * (last / error)
            } else {
                1.0
            };
        }
        let i = self.errors.partition_point(|&e| e <= error);
        let (e0, e1) = (self.errors[i - 1], self.errors[i]);
        let (p0, p1) = (self.probs[i - 1], self.probs[i]);
        if e1 > e0 {
            p0 + (p1 - p0) * (error - e0) / (e1 - e0)
        } else {
            p1
        }
    }
}

impl Calibration {
    /// The training error at probability `p` (interpolated between the
    /// quantiles kept; the largest kept past them).
    pub fn error_at(&self, p: f64) -> f64 {
        let i = self.probs.partition_point(|&q| q < p);
        match (i.checked_sub(1), self.probs.get(i)) {
            (_, None) => self.errors.last().copied().unwrap_or(0.0),
            (None, Some(_)) => self.errors.first().copied().unwrap_or(0.0),
            (Some(lo), Some(&p1)) => {
                let p0 = self.probs[lo];
                let (e0, e1) = (self.errors[lo], self.errors[i]);
                if p1 > p0 {
                    e0 + (e1 - e0) * (p - p0) / (p1 - p0)
                } else {
                    e1
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_at_a_probability_inverts_the_score() {
        let errors: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let c = Calibration::fit(&errors, 0.99);
        for p in [0.1, 0.5, 0.75, 0.93, 0.995] {
            let e = c.error_at(p);
            assert!(
                (c.score(e) - p).abs() < 1e-9,
                "{p}: {e} scores {}",
                c.score(e)
            );
        }
    }

    #[test]
    fn scores_are_the_share_of_training_errors_below() {
        let errors: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        let c = Calibration::fit(&errors, 0.99);
        assert!((c.score(500.0) - 0.5).abs() < 0.002, "{}", c.score(500.0));
        assert!((c.score(990.0) - 0.99).abs() < 0.002);
        assert!(c.score(1.0) <= 0.001);
        let beyond = c.score(2000.0);
        assert!(beyond > c.score(1000.0) && beyond < 1.0, "{beyond}");
        assert!(c.score(4000.0) > beyond, "further past, closer to 1");
        assert_eq!(c.threshold, 0.99);
    }
}
