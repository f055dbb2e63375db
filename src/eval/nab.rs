//! The Numenta Anomaly Benchmark score, as the benchmark defines it (see
//! `../shared/data/README.md`): per labelled window the earliest detection
//! earns a true positive weighted by how early it came, a window without
//! one costs a false negative, every detection outside the windows costs a
//! false positive weighted by how far past the previous window it is; the
//! first `min(⌊0.15·N⌋, 750)` records are probation. One threshold per
//! detector and profile, chosen to maximise the sum over all series; the
//! sum is normalised between the null detector (0) and a perfect one (100).

/// A cost profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fn_: f64,
    pub fp: f64,
}

pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fn_: 1.0,
        fp: 0.11,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fn_: 1.0,
        fp: 0.22,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fn_: 2.0,
        fp: 0.11,
    },
];

/// Records of a series no detection counts in.
pub fn probation(records: usize) -> usize {
    ((0.15 * records as f64).floor() as usize).min(750)
}

/// 2/(1+e^{5y}) − 1, and −1 beyond 3.
pub fn scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// The raw NAB score of one series: `detections[i]` says whether record
/// `i` was flagged; `windows` are inclusive index ranges, in order.
pub fn score_series(detections: &[bool], windows: &[(usize, usize)], profile: &Profile) -> f64 {
    let skip = probation(detections.len());
    let mut total = 0.0;
    let mut detected = vec![false; windows.len()];
    let mut w = 0; // first window not yet passed
    for (i, _) in detections
        .iter()
        .enumerate()
        .skip(skip)
        .filter(|(_, d)| **d)
    {
        while w < windows.len() && windows[w].1 < i {
            w += 1;
        }
        match windows.get(w) {
            Some(&(start, end)) if start <= i => {
                if !detected[w] {
                    detected[w] = true;
                    let width = (end - start + 1) as f64;
                    let y = -((end - i + 1) as f64) / width;
                    total += profile.tp * scaled_sigmoid(y) / scaled_sigmoid(-1.0);
                }
            }
            _ => {
                // Outside every window: how far past the previous one.
                let sigma = match w.checked_sub(1).map(|p| windows[p]) {
                    None => -1.0,
                    Some((start, end)) => {
                        let width = (end - start + 1) as f64;
                        let y = (i - end) as f64 / (width - 1.0).max(1.0);
                        scaled_sigmoid(y)
                    }
                };
                total += profile.fp * sigma;
            }
        }
    }
    total - profile.fn_ * detected.iter().filter(|d| !**d).count() as f64
}

/// A series' anomaly scores and windows, for threshold sweeps.
pub struct Scored<'a> {
    pub scores: &'a [f64],
    pub windows: &'a [(usize, usize)],
}

/// The outcome of a sweep for one profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sweep {
    pub threshold: f64,
    pub raw: f64,
    /// 100·(raw − null)/(perfect − null).
    pub normalized: f64,
}

/// The threshold that maximises the summed score over `series`, among the
/// distinct score values (at most `candidates` of them, spread by rank).
pub fn best_threshold(series: &[Scored<'_>], profile: &Profile, candidates: usize) -> Sweep {
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    let perfect = windows as f64 * profile.tp;
    let null = -(windows as f64) * profile.fn_;
    let mut values: Vec<f64> = series
        .iter()
        .flat_map(|s| s.scores.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let step = (values.len() / candidates.max(1)).max(1);
    let mut thresholds: Vec<f64> = values.iter().step_by(step).copied().collect();
    // The top scores matter most: every one of the highest is a candidate.
    thresholds.extend(values.iter().rev().take(candidates));
    thresholds.push(f64::INFINITY); // never fire: the null detector
    let mut best = Sweep {
        threshold: f64::INFINITY,
        raw: f64::NEG_INFINITY,
        normalized: 0.0,
    };
    for t in thresholds {
        let raw: f64 = series
            .iter()
            .map(|s| {
                let d: Vec<bool> = s.scores.iter().map(|&v| v >= t).collect();
                score_series(&d, s.windows, profile)
            })
            .sum();
        if raw > best.raw {
            best = Sweep {
                threshold: t,
                raw,
                normalized: 100.0 * (raw - null) / (perfect - null).max(f64::MIN_POSITIVE),
            };
        }
    }
    best
}

/// The normalised score of `series` at one threshold.
pub fn score_at(series: &[Scored<'_>], profile: &Profile, threshold: f64) -> f64 {
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    let perfect = windows as f64 * profile.tp;
    let null = -(windows as f64) * profile.fn_;
    let raw: f64 = series
        .iter()
        .map(|s| {
            let d: Vec<bool> = s.scores.iter().map(|&v| v >= threshold).collect();
            score_series(&d, s.windows, profile)
        })
        .sum();
    100.0 * (raw - null) / (perfect - null).max(f64::MIN_POSITIVE)
}

/// The two-fold check: the series split into alternate halves (in the
/// order given), the threshold fitted on one half and the other half
/// scored at it, both ways: (A→B, B's own best, B→A, A's own best).
pub fn two_fold(series: &[Scored<'_>], profile: &Profile, candidates: usize) -> [f64; 4] {
    let half = |r: usize| -> Vec<Scored<'_>> {
        series
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == r)
            .map(|(_, s)| Scored {
                scores: s.scores,
                windows: s.windows,
            })
            .collect()
    };
    let (a, b) = (half(0), half(1));
    let (fit_a, fit_b) = (
        best_threshold(&a, profile, candidates),
        best_threshold(&b, profile, candidates),
    );
    [
        score_at(&b, profile, fit_a.threshold),
        fit_b.normalized,
        score_at(&a, profile, fit_b.threshold),
        fit_a.normalized,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten records, probation 1, one window over records 4–6; flagged: 2
    /// (before any window), 5 (in the window) and 8 (two records past it).
    /// By hand: TP σ(−2/3)/σ(−1) = 0.943742; FP before the first window
    /// −0.11; FP at y = 2/(3−1) = 1: 0.11·σ(1) = −0.108528.
    #[test]
    fn a_hand_computed_series() {
        let mut d = vec![false; 10];
        for i in [2, 5, 8] {
            d[i] = true;
        }
        let w = [(4, 6)];
        let standard = score_series(&d, &w, &PROFILES[0]);
        assert!((standard - 0.725_214_688).abs() < 1e-6, "{standard}");
        let low_fp = score_series(&d, &w, &PROFILES[1]);
        assert!((low_fp - 0.506_687_116).abs() < 1e-6, "{low_fp}");
        // Normalised: null −1, perfect 1 (standard); null −2 (low FN).
        let series = [Scored {
            scores: &[0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.0],
            windows: &w,
        }];
        let s = best_threshold(&series, &PROFILES[0], 100);
        assert!((s.normalized - 86.260_734).abs() < 1e-4, "{s:?}");
        let s = best_threshold(&series, &PROFILES[2], 100);
        assert!((s.normalized - 90.840_490).abs() < 1e-4, "{s:?}");
        assert!((score_at(&series, &PROFILES[2], s.threshold) - s.normalized).abs() < 1e-9);
    }

    #[test]
    fn only_the_earliest_detection_in_a_window_counts_and_probation_is_ignored() {
        let mut d = vec![false; 100];
        d[3] = true; // probation (15 records)
        d[40] = true;
        d[41] = true;
        let w = [(40, 49)];
        let s = score_series(&d, &w, &PROFILES[0]);
        assert!((s - 1.0).abs() < 1e-12, "{s}");
        assert_eq!(score_series(&[false; 100], &w, &PROFILES[2]), -2.0);
    }
}
