//! A univariate series scored record by record, without look-ahead: the
//! shape NAB asks detectors to have.
//!
//! Each record becomes a small feature vector from the record and the ones
//! before it only (level, change, distance from and spread of the last few
//! values, and — for series with several records a day — distance from the
//! same time a day before); a `telemine_model::Scorer` learns those vectors
//! from the probation records, then again on everything seen so far each
//! time the series doubles in length. Three steps turn the model's error
//! into the record's score:
//!
//! 1. **Likelihood.** How far the error stands above the errors of the
//!    last [`HISTORY`] records, in spreads (never less than
//!    [`MIN_SPREAD`]), read as a normal tail probability `Q` and reported
//!    as `L/(L + 30)` with `L = −ln Q`: monotone, in [0, 1), and never
//!    rounding to 1 however extreme, so a threshold can still tell the
//!    largest surprises apart. A level the model keeps missing stops
//!    alarming once the recent errors have risen with it.
//! 2. **Range.** A value more than [`RANGE_MARGIN`] of the range seen so
//!    far above its maximum or below its minimum scores 1: a new extreme
//!    needs no model to be surprising.
//! 3. **Refractory.** A score no higher than one of the [`REFRACTORY`]
//!    records before it is reported as 0: one alarm per burst, as an
//!    operator wants, not one per record of it.

use std::collections::VecDeque;

use telemine_model::{Device, Frame, ModelKind, Scorer, TrainOptions};

/// Values before a record its features read.
const WINDOW: usize = 8;
/// Features per record.
const FEATURES: usize = 5;
/// Errors the likelihood compares a record's error against.
pub const HISTORY: usize = 200;
/// The least spread of those errors the likelihood divides by, in the
/// model's units (a squared miss of one training standard deviation is
/// 1): a model that is nearly always right does not make its smallest
/// misses look like alarms.
pub const MIN_SPREAD: f64 = 1.0;
/// How far past the range seen so far a value must fall, as a share of
/// that range, to score 1.
pub const RANGE_MARGIN: f64 = 0.02;
/// Records before this one whose scores a record must beat to be reported.
pub const REFRACTORY: usize = 30;

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
    /// The least and greatest value seen so far.
    range: Option<(f64, f64)>,
    /// Scores of the last [`REFRACTORY`] records, before the refractory
    /// step.
    recent: VecDeque<f64>,
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
            range: None,
            recent: VecDeque::new(),
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
        let outside = self.outside_range(x);
        let row = self.features(x);
        self.values.push(x);
        if self.values.len() > self.next_training {
            self.train()?;
            self.next_training *= 2;
        }
        self.rows.extend_from_slice(&row);
        let likelihood = match &self.scorer {
            Some(scorer) => {
                let error = self.error(scorer, &row)?;
                self.likelihood(error)
            }
            None => 0.0,
        };
        let score = if outside { 1.0 } else { likelihood };
        Ok(self.refractory(score))
    }

    /// The model's error on the newest record (its row already stored).
    fn error(&self, scorer: &Scorer, row: &[f32; FEATURES]) -> Result<f64, String> {
        let frame = Frame::new(1, FEATURES, row.to_vec()).map_err(|e| e.to_string())?;
        let scored = match scorer.context_len() {
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
        .map_err(|e| e.to_string())?;
        Ok(f64::from(scored.error[0]))
    }

    /// Whether `x` falls outside the range seen so far (by more than
    /// [`RANGE_MARGIN`] of it); widens the range to take it in.
    fn outside_range(&mut self, x: f64) -> bool {
        let Some((lo, hi)) = self.range else {
            self.range = Some((x, x));
            return false;
        };
        let margin = RANGE_MARGIN * (hi - lo);
        self.range = Some((lo.min(x), hi.max(x)));
        hi > lo && (x > hi + margin || x < lo - margin)
    }

    fn likelihood(&mut self, error: f64) -> f64 {
        let n = self.errors.len();
        let score = if n < 10 {
            0.0
        } else {
            let mean = self.errors.iter().sum::<f64>() / n as f64;
            let var = self.errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64;
            let z = (error - mean) / var.sqrt().max(MIN_SPREAD);
            let l = neg_ln_tail(z);
            // Below 1 even where `l` is huge: a new extreme ranks above.
            (l / (l + 30.0)).min(1.0 - 1e-12)
        };
        self.errors.push_back(error);
        if self.errors.len() > HISTORY {
            self.errors.pop_front();
        }
        score
    }

    /// `score`, or 0 where one of the last [`REFRACTORY`] records scored
    /// at least as high.
    fn refractory(&mut self, score: f64) -> f64 {
        let beaten = self.recent.iter().all(|&s| score > s);
        self.recent.push_back(score);
        if self.recent.len() > REFRACTORY {
            self.recent.pop_front();
        }
        if beaten { score } else { 0.0 }
    }
}

/// −ln Q(z), with `Q` the standard normal upper tail: finite and growing
/// for any `z`, where Q itself underflows past z ≈ 38.
pub fn neg_ln_tail(z: f64) -> f64 {
    if z < 5.0 {
        -(1.0 - normal_cdf(z)).max(f64::MIN_POSITIVE).ln()
    } else {
        // Asymptotic expansion of ln Q(z) for large z.
        z * z / 2.0 + z.ln() + 0.5 * (2.0 * std::f64::consts::PI).ln()
            - (1.0 - 1.0 / (z * z) + 3.0 / z.powi(4)).ln()
    }
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
    fn the_normal_distribution_function_and_its_tail() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-3.0) - 0.001_349_9).abs() < 1e-6);
        // −ln Q(3) = −ln 0.0013499 = 6.6077.
        assert!(
            (neg_ln_tail(3.0) - 6.6077).abs() < 1e-3,
            "{}",
            neg_ln_tail(3.0)
        );
        // Continuous where the expansion takes over, and still growing
        // where Q itself underflows.
        assert!((neg_ln_tail(4.999_999) - neg_ln_tail(5.0)).abs() < 1e-3);
        assert!(neg_ln_tail(40.0) < neg_ln_tail(41.0) && neg_ln_tail(41.0).is_finite());
    }

    /// A sine with a little deterministic noise; `bump` added at record 900.
    fn wave(i: usize, bump: f64) -> f64 {
        let noise = ((i * 7919) % 101) as f64 / 1000.0;
        (i as f64 * 0.1).sin() + noise + if i == 900 { bump } else { 0.0 }
    }

    #[test]
    fn a_new_extreme_scores_one() {
        let mut d = Univariate::new("pca", 300, 5, None);
        for i in 0..1000 {
            let s = d.step(wave(i, 8.0)).unwrap();
            if i == 900 {
                assert_eq!(s, 1.0);
            } else if (400..890).contains(&i) {
                assert!(s < 0.5, "record {i}: {s}");
            }
        }
    }

    #[test]
    fn a_break_inside_the_range_is_found_by_the_model() {
        // A plateau in probation widens the range: the later break stays
        // inside it, so only the model's error can find it.
        let mut d = Univariate::new("pca", 300, 5, None);
        let (mut quiet, mut at) = (0.0_f64, 0.0);
        for i in 0..1000 {
            let x = wave(i, 4.0) + if (100..150).contains(&i) { 5.0 } else { 0.0 };
            let s = d.step(x).unwrap();
            if i == 900 {
                at = s;
            } else if (400..890).contains(&i) {
                quiet = quiet.max(s);
            }
        }
        assert!(
            at < 1.0 && at > 0.2 && at > 5.0 * quiet,
            "break {at}, before it {quiet}"
        );
    }

    #[test]
    fn the_refractory_step_reports_one_alarm_per_burst() {
        let mut d = Univariate::new("pca", 300, 5, None);
        let reported: Vec<f64> = [0.1, 0.9, 0.8, 0.95, 0.2]
            .iter()
            .map(|&s| d.refractory(s))
            .collect();
        assert_eq!(reported, [0.1, 0.9, 0.0, 0.95, 0.0]);
        for _ in 0..REFRACTORY {
            d.refractory(0.0);
        }
        assert_eq!(d.refractory(0.5), 0.5, "the burst is forgotten");
    }
}
