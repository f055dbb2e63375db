//! From the model's error on a row to the row's `anomaly_score`, per
//! series, in three steps (each configured per model):
//!
//! 1. **Likelihood** (`score = "likelihood"`): how far the error stands
//!    above the series' last `error_history` errors, in spreads (never
//!    less than `spread_floor`), read as a normal tail probability `Q` and
//!    reported as `L/(L + 30)` with `L = −ln Q`: monotone, in [0, 1), and
//!    never rounding to 1 however extreme, so a threshold can still tell
//!    the largest surprises apart. A level the model keeps missing stops
//!    alarming once the recent errors have risen with it. With
//!    `rank_history = N`, `L` is first divided by one plus the number of
//!    the series' last N values of `L` at least as high: a surprise the
//!    series has often shown counts for less than its first. Or
//!    (`"calibrated"`) the share of training rows with a lower error.
//! 2. **Range** (`range_margin`): a feature further past the range the
//!    series has shown than that share of the range scores 1 — a new
//!    extreme needs no model to be surprising. The same for the median of
//!    the series' last windows (`median_range_windows`,
//!    `median_range_margin`): a shift of level that single values hide in
//!    their noise.
//! 3. **Refractory** (`refractory_windows`): a score no higher than one of
//!    the series' previous scores is reported as 0: one alarm per burst.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// How the model's error becomes `anomaly_score`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMode {
    #[default]
    Likelihood,
    Calibrated,
}

/// The scoring steps of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scoring {
    pub mode: ScoreMode,
    pub history: usize,
    pub spread_floor: f64,
    pub range_margin: Option<f64>,
    /// Windows the median range check takes the median over (0: off),
    /// and its margin.
    pub median_windows: usize,
    pub median_margin: f64,
    pub refractory: usize,
    /// Earlier likelihoods a likelihood is ranked against (0: none).
    pub rank_history: usize,
}

/// Errors a likelihood needs before it scores above 0.
const MIN_ERRORS: usize = 10;

/// What scoring remembers of a series.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Recent {
    /// The last `history` model errors.
    errors: VecDeque<f64>,
    /// Per view feature, the least and greatest value seen.
    range: Vec<(f64, f64)>,
    /// Per view feature, the least and greatest median of the last windows.
    median_range: Vec<(f64, f64)>,
    /// The last `refractory` scores, before the refractory step.
    scores: VecDeque<f64>,
    /// The last `rank_history` likelihoods, in arrival order and sorted.
    likelihoods: VecDeque<f64>,
    ranked: Vec<f64>,
}

impl Recent {
    /// Values held.
    pub fn values(&self) -> usize {
        self.errors.len()
            + 2 * self.range.len()
            + 2 * self.median_range.len()
            + self.scores.len()
            + self.likelihoods.len()
            + self.ranked.len()
    }
}

impl Scoring {
    /// The score of a row of the series `recent` remembers, and remembers
    /// it: `x` its view features, `medians` their medians over the last
    /// windows (when the median range check is on and the series has had
    /// enough), `error` the model's error (`None` while no model is
    /// trained), `calibrated` that error as a share of training rows.
    /// `None` when there is nothing to score with yet.
    pub fn step(
        &self,
        recent: &mut Recent,
        x: &[f64],
        medians: Option<&[f64]>,
        error: Option<f64>,
        calibrated: Option<f64>,
    ) -> Option<f64> {
        let mut outside = match self.range_margin {
            Some(margin) => outside_range(&mut recent.range, x, margin),
            None => false,
        };
        if let Some(m) = medians {
            outside |= outside_range(&mut recent.median_range, m, self.median_margin);
        }
        let model = match self.mode {
            ScoreMode::Likelihood => error.map(|e| self.likelihood(recent, e)),
            ScoreMode::Calibrated => calibrated,
        };
        let score = match (outside, model) {
            (true, _) => 1.0,
            (false, Some(s)) => s,
            // Before the first model, the range check alone scores.
            (false, None) if self.range_margin.is_some() || self.median_windows > 0 => 0.0,
            (false, None) => return None,
        };
        Some(self.refractory(recent, score))
    }

    fn likelihood(&self, recent: &mut Recent, error: f64) -> f64 {
        if !error.is_finite() {
            // Kept out of the history: it would blind the next scores.
            return 1.0 - 1e-12;
        }
        let errors = &recent.errors;
        let n = errors.len();
        let score = if n < MIN_ERRORS {
            0.0
        } else {
            let mean = errors.iter().sum::<f64>() / n as f64;
            let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64;
            let z = (error - mean) / var.sqrt().max(self.spread_floor);
            let l = self.ranked(recent, neg_ln_tail(z));
            // Below 1 even where `l` is huge: a new extreme ranks above.
            (l / (l + 30.0)).min(1.0 - 1e-12)
        };
        let errors = &mut recent.errors;
        errors.push_back(error);
        if errors.len() > self.history {
            errors.pop_front();
        }
        score
    }

    /// `l` divided by one plus how many of the last `rank_history`
    /// likelihoods were at least as high; remembers `l`.
    fn ranked(&self, recent: &mut Recent, l: f64) -> f64 {
        if self.rank_history == 0 {
            return l;
        }
        let at_least = recent.ranked.len() - recent.ranked.partition_point(|&v| v < l);
        let at = recent.ranked.partition_point(|&v| v < l);
        recent.ranked.insert(at, l);
        recent.likelihoods.push_back(l);
        if recent.likelihoods.len() > self.rank_history
            && let Some(old) = recent.likelihoods.pop_front()
        {
            let i = recent.ranked.partition_point(|&v| v < old);
            recent.ranked.remove(i);
        }
        l / (1 + at_least) as f64
    }

    /// `score`, or 0 where one of the last `refractory` scores was at
    /// least as high.
    fn refractory(&self, recent: &mut Recent, score: f64) -> f64 {
        if self.refractory == 0 {
            return score;
        }
        let beaten = recent.scores.iter().all(|&s| score > s);
        recent.scores.push_back(score);
        if recent.scores.len() > self.refractory {
            recent.scores.pop_front();
        }
        if beaten { score } else { 0.0 }
    }
}

/// Whether a feature of `x` falls further outside the range seen so far
/// than `margin` of it; widens the ranges to take `x` in.
fn outside_range(range: &mut Vec<(f64, f64)>, x: &[f64], margin: f64) -> bool {
    if range.len() != x.len() {
        *range = x.iter().map(|&v| (v, v)).collect();
        return false;
    }
    let mut outside = false;
    for ((lo, hi), &v) in range.iter_mut().zip(x) {
        let m = margin * (*hi - *lo);
        outside |= *hi > *lo && (v > *hi + m || v < *lo - m);
        *lo = lo.min(v);
        *hi = hi.max(v);
    }
    outside
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

    fn scoring() -> Scoring {
        Scoring {
            mode: ScoreMode::Likelihood,
            history: 200,
            spread_floor: 1.0,
            range_margin: Some(0.02),
            median_windows: 0,
            median_margin: 0.05,
            refractory: 30,
            rank_history: 0,
        }
    }

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

    #[test]
    fn the_refractory_step_reports_one_alarm_per_burst() {
        let s = scoring();
        let mut r = Recent::default();
        let reported: Vec<f64> = [0.1, 0.9, 0.8, 0.95, 0.2]
            .iter()
            .map(|&x| s.refractory(&mut r, x))
            .collect();
        assert_eq!(reported, [0.1, 0.9, 0.0, 0.95, 0.0]);
        for _ in 0..30 {
            s.refractory(&mut r, 0.0);
        }
        assert_eq!(s.refractory(&mut r, 0.5), 0.5, "the burst is forgotten");
        assert!(r.scores.len() <= 30, "bounded");
    }

    #[test]
    fn a_new_extreme_scores_one_without_a_model() {
        let s = Scoring {
            refractory: 0,
            ..scoring()
        };
        let mut r = Recent::default();
        for v in [0.0, 10.0, 5.0] {
            assert_eq!(s.step(&mut r, &[v], None, None, None), Some(0.0));
        }
        // 2% of the range 0..10 past its top: 10.2 is not past, 10.3 is.
        assert_eq!(s.step(&mut r, &[10.2], None, None, None), Some(0.0));
        assert_eq!(s.step(&mut r, &[10.5], None, None, None), Some(1.0));
        let no_range = Scoring {
            range_margin: None,
            ..s
        };
        assert_eq!(no_range.step(&mut r, &[99.0], None, None, None), None);
    }

    #[test]
    fn an_error_far_above_the_recent_ones_scores_high_and_the_history_is_bounded() {
        let s = Scoring {
            range_margin: None,
            refractory: 0,
            ..scoring()
        };
        let mut r = Recent::default();
        for i in 0..300 {
            let e = 1.0 + (i % 7) as f64 * 0.1;
            let score = s.step(&mut r, &[0.0], None, Some(e), None).unwrap();
            assert!(score < 0.2, "{i}: {score}");
        }
        assert_eq!(r.errors.len(), 200);
        let high = s.step(&mut r, &[0.0], None, Some(20.0), None).unwrap();
        assert!(high > 0.8 && high < 1.0, "{high}");
        let nan = s.step(&mut r, &[0.0], None, Some(f64::NAN), None).unwrap();
        assert!(nan > high, "a non-finite error is the worst: {nan}");
        assert!(r.errors.iter().all(|e| e.is_finite()));
    }
}

#[cfg(test)]
mod rank_tests {
    use super::*;

    #[test]
    fn a_likelihood_is_divided_by_one_plus_the_earlier_ones_at_least_as_high() {
        let s = Scoring {
            mode: ScoreMode::Likelihood,
            history: 200,
            spread_floor: 1.0,
            range_margin: None,
            median_windows: 0,
            median_margin: 0.05,
            refractory: 0,
            rank_history: 3,
        };
        let mut r = Recent::default();
        let ranked: Vec<f64> = [4.0, 2.0, 4.0, 1.0, 8.0, 2.0]
            .iter()
            .map(|&l| s.ranked(&mut r, l))
            .collect();
        // 4: none before; 2: one (4); 4: one (4, a tie counts); 1: three;
        // 8: none; 2: of the last three (4, 1, 8), two.
        assert_eq!(ranked, [4.0, 1.0, 2.0, 0.25, 8.0, 2.0 / 3.0]);
        assert_eq!(r.ranked, [1.0, 2.0, 8.0], "the last three, sorted");
    }
}
