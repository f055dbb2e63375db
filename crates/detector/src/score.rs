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
//!    (`"calibrated"`) the share of training rows with a lower error —
//!    on data like the training rows, a score above `t` comes `1 − t` of
//!    the time. With `normal_share = s` the error is first measured
//!    against the series' own: where the series' last `error_history`
//!    errors at their `1 − s` quantile stand above the training rows'
//!    at that quantile (plus two standard errors of the estimate), the
//!    error is scaled down by that ratio. A behaviour that fills a share
//!    `s` of the series' recent windows —
//!    a level shift that stays, a pattern that keeps coming back — is
//!    then its normal, and alerts on it resolve; a series is never
//!    scored as more surprising than the fleet would make it.
//! 2. **Range** (`range_margin`): a feature further past the range the
//!    series has shown than that share of the range scores 1 — a new
//!    extreme needs no model to be surprising. The same for the median of
//!    the series' last windows (`median_range_windows`,
//!    `median_range_margin`): a shift of level that single values hide in
//!    their noise. With `range_rank_windows = N` such a row scores
//!    1 / (1 + the series' rows past a range in its last N windows)
//!    instead: a new extreme is surprising in a series that rarely sets
//!    one, not in one that keeps setting them (a trend).
//! 3. **Refractory** (`refractory_windows`): a score no higher than one of
//!    the series' previous scores is reported as 0: one alarm per burst.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use telemine_model::Calibration;

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
    /// Windows over which rows past a range are counted to rank the next
    /// (0: each scores 1).
    pub range_rank: usize,
    pub refractory: usize,
    /// Earlier likelihoods a likelihood is ranked against (0: none).
    pub rank_history: usize,
    /// `"calibrated"`: the share of a series' recent windows a behaviour
    /// must fill to be its normal (0: off).
    pub normal_share: f64,
}

/// A model's miss on a row: its raw error and how the model calibrated
/// its training rows' errors.
#[derive(Debug, Clone, Copy)]
pub struct Miss<'a> {
    pub error: f64,
    pub calibration: &'a Calibration,
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
    /// Rows stepped, and the rows (by that count) past a range within the
    /// last `range_rank` windows.
    #[serde(default)]
    steps: u64,
    #[serde(default)]
    outside_at: VecDeque<u64>,
}

impl Recent {
    /// Keeps `error` among the series' last `history` errors.
    fn remember_error(&mut self, error: f64, history: usize) {
        self.errors.push_back(error);
        if self.errors.len() > history {
            self.errors.pop_front();
        }
    }

    /// Values held.
    pub fn values(&self) -> usize {
        self.errors.len()
            + 2 * self.range.len()
            + 2 * self.median_range.len()
            + self.scores.len()
            + self.likelihoods.len()
            + self.ranked.len()
            + self.outside_at.len()
    }
}

impl Scoring {
    /// The score of a row of the series `recent` remembers, and remembers
    /// it: `x` its view features, `medians` their medians over the last
    /// windows (when the median range check is on and the series has had
    /// enough), `miss` the model's miss (`None` while no model is
    /// trained). `None` when there is nothing to score with yet.
    pub fn step(
        &self,
        recent: &mut Recent,
        x: &[f64],
        medians: Option<&[f64]>,
        miss: Option<Miss<'_>>,
    ) -> Option<f64> {
        let mut outside = match self.range_margin {
            Some(margin) => outside_range(&mut recent.range, x, margin),
            None => false,
        };
        if let Some(m) = medians {
            outside |= outside_range(&mut recent.median_range, m, self.median_margin);
        }
        let model = miss.map(|m| match self.mode {
            ScoreMode::Likelihood => self.likelihood(recent, m.error),
            ScoreMode::Calibrated => self.calibrated(recent, m),
        });
        recent.steps += 1;
        let score = match (outside, model) {
            (true, Some(s)) => self.outside_score(recent).max(s),
            (true, None) => self.outside_score(recent),
            (false, Some(s)) => s,
            // Before the first model, the range check alone scores.
            (false, None) if self.range_margin.is_some() || self.median_windows > 0 => 0.0,
            (false, None) => return None,
        };
        Some(self.refractory(recent, score))
    }

    /// The calibrated score of `miss`, measured against the series' own
    /// errors with `normal_share`; remembers the error.
    fn calibrated(&self, recent: &mut Recent, miss: Miss<'_>) -> f64 {
        let error = miss.error;
        if !error.is_finite() {
            return 1.0;
        }
        if self.normal_share <= 0.0 {
            return miss.calibration.score(error);
        }
        let p = (1.0 - self.normal_share).clamp(0.0, 1.0);
        // A behaviour is the series' normal once it fills `normal_share`
        // of `error_history` windows — counted against the whole history,
        // so a young series does not take its first anomaly for its
        // normal: `own` is the k-th largest of the recent errors.
        let k = ((self.normal_share * self.history as f64).ceil() as usize).max(1);
        let own =
            (recent.errors.len() >= k.max(MIN_ERRORS)).then(|| kth_largest(&recent.errors, k));
        // That estimate must stand above the training rows' quantile two
        // standard errors higher before it counts, so a normal series'
        // sampling noise is not taken for a new normal (which would bias
        // its scores low).
        let margin = 2.0 * (p * (1.0 - p) / self.history.max(1) as f64).sqrt();
        let fleet = miss.calibration.error_at(p);
        let beyond = miss.calibration.error_at((p + margin).min((1.0 + p) / 2.0));
        let scaled = match own {
            Some(own) if own > beyond && own > 0.0 => error * fleet / own,
            _ => error,
        };
        recent.remember_error(error, self.history);
        miss.calibration.score(scaled)
    }

    /// What a row past a range scores: 1, or with `range_rank` 1 over one
    /// plus the rows past a range in the last `range_rank` windows;
    /// remembers the row.
    fn outside_score(&self, recent: &mut Recent) -> f64 {
        if self.range_rank == 0 {
            return 1.0;
        }
        let now = recent.steps;
        let window = self.range_rank as u64;
        while recent.outside_at.front().is_some_and(|&t| now - t > window) {
            recent.outside_at.pop_front();
        }
        let score = 1.0 / (1 + recent.outside_at.len()) as f64;
        recent.outside_at.push_back(now);
        score
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
        recent.remember_error(error, self.history);
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

/// The `k`-th largest of `values` (1: the largest).
fn kth_largest(values: &VecDeque<f64>, k: usize) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted
        .get(k.saturating_sub(1))
        .or(sorted.last())
        .copied()
        .unwrap_or(0.0)
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

    pub(super) fn scoring() -> Scoring {
        Scoring {
            mode: ScoreMode::Likelihood,
            history: 200,
            spread_floor: 1.0,
            range_margin: Some(0.02),
            median_windows: 0,
            median_margin: 0.05,
            range_rank: 0,
            refractory: 30,
            rank_history: 0,
            normal_share: 0.0,
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
            assert_eq!(s.step(&mut r, &[v], None, None), Some(0.0));
        }
        // 2% of the range 0..10 past its top: 10.2 is not past, 10.3 is.
        assert_eq!(s.step(&mut r, &[10.2], None, None), Some(0.0));
        assert_eq!(s.step(&mut r, &[10.5], None, None), Some(1.0));
        let no_range = Scoring {
            range_margin: None,
            ..s
        };
        assert_eq!(no_range.step(&mut r, &[99.0], None, None), None);
    }

    #[test]
    fn an_error_far_above_the_recent_ones_scores_high_and_the_history_is_bounded() {
        let s = Scoring {
            range_margin: None,
            refractory: 0,
            ..scoring()
        };
        let mut r = Recent::default();
        let cal = Calibration::fit(&[1.0, 2.0], 0.99);
        let miss = |error: f64| {
            Some(Miss {
                error,
                calibration: &cal,
            })
        };
        for i in 0..300 {
            let e = 1.0 + (i % 7) as f64 * 0.1;
            let score = s.step(&mut r, &[0.0], None, miss(e)).unwrap();
            assert!(score < 0.2, "{i}: {score}");
        }
        assert_eq!(r.errors.len(), 200);
        let high = s.step(&mut r, &[0.0], None, miss(20.0)).unwrap();
        assert!(high > 0.8 && high < 1.0, "{high}");
        let nan = s.step(&mut r, &[0.0], None, miss(f64::NAN)).unwrap();
        assert!(nan > high, "a non-finite error is the worst: {nan}");
        assert!(r.errors.iter().all(|e| e.is_finite()));
    }
}

#[cfg(test)]
mod adapt_tests {
    use super::*;

    fn calibrated(normal_share: f64) -> Scoring {
        Scoring {
            mode: ScoreMode::Calibrated,
            history: 120,
            range_margin: None,
            refractory: 0,
            normal_share,
            ..super::tests::scoring()
        }
    }

    /// Training errors 1.000 … 2.000: a calibrated score is the share of
    /// them below the error.
    fn training() -> Calibration {
        let errors: Vec<f32> = (0..=1000).map(|i| 1.0 + i as f32 / 1000.0).collect();
        Calibration::fit(&errors, 0.999)
    }

    /// A series' errors: normal (1.0–2.0, cycling) for 200 windows, then
    /// three times as high for good. Returns each window's score.
    fn shifted(s: &Scoring, cal: &Calibration) -> Vec<f64> {
        let mut r = Recent::default();
        (0..400)
            .map(|i| {
                let normal = 1.0 + (i * 37 % 100) as f64 / 100.0;
                let error = if i < 200 { normal } else { 3.0 * normal };
                s.step(
                    &mut r,
                    &[0.0],
                    None,
                    Some(Miss {
                        error,
                        calibration: cal,
                    }),
                )
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_level_shift_that_stays_becomes_the_series_normal() {
        let cal = training();
        let fixed = shifted(&calibrated(0.0), &cal);
        let adapting = shifted(&calibrated(0.25), &cal);
        // Before the shift both are the plain calibrated score.
        assert_eq!(fixed[..200], adapting[..200]);
        // At the shift both alarm.
        assert!(fixed[200] > 0.999 && adapting[200] > 0.999);
        // The fixed score alarms for ever; the adapting one stops once
        // the shift fills a quarter of the last 120 windows (30), and
        // then scores like a normal series.
        assert!(fixed[300..].iter().all(|&s| s > 0.999));
        let first_quiet = adapting[200..].iter().position(|&s| s < 0.999).unwrap();
        assert!(
            (20..=40).contains(&first_quiet),
            "quiet after {first_quiet}"
        );
        let late = &adapting[300..];
        let above = late.iter().filter(|&&s| s > 0.99).count();
        assert!(above <= 3, "{above} of the last 100 above 0.99: {late:?}");
    }

    #[test]
    fn a_quiet_series_is_never_scored_above_what_the_fleet_would_say() {
        let cal = training();
        let s = calibrated(0.25);
        let mut r = Recent::default();
        // A series much quieter than the fleet's training rows.
        for _ in 0..200 {
            s.step(
                &mut r,
                &[0.0],
                None,
                Some(Miss {
                    error: 0.5,
                    calibration: &cal,
                }),
            );
        }
        let score = s
            .step(
                &mut r,
                &[0.0],
                None,
                Some(Miss {
                    error: 1.5,
                    calibration: &cal,
                }),
            )
            .unwrap();
        assert!((score - cal.score(1.5)).abs() < 1e-12, "{score}");
    }
}

#[cfg(test)]
mod rank_tests {
    use super::*;

    #[test]
    fn a_likelihood_is_divided_by_one_plus_the_earlier_ones_at_least_as_high() {
        let s = Scoring {
            range_margin: None,
            refractory: 0,
            rank_history: 3,
            ..super::tests::scoring()
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
