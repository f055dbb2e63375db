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
    let flagged = detections
        .iter()
        .enumerate()
        .filter(|(_, d)| **d)
        .map(|(i, _)| i);
    score_flagged(detections.len(), flagged, windows, profile)
}

/// Where record `i` of a series falls: in window `w` (its index in
/// `windows`) and what a first detection there earns before `tp`, or
/// outside every window and what a detection there costs before `fp` (σ,
/// negative: −1 before the first window, then by how far past the
/// previous one). `cursor` is the first window not yet passed; records
/// come in ascending order.
#[derive(Clone, Copy)]
enum Place {
    Window(usize, f64),
    Outside(f64),
}

fn place(windows: &[(usize, usize)], cursor: &mut usize, i: usize) -> Place {
    while *cursor < windows.len() && windows[*cursor].1 < i {
        *cursor += 1;
    }
    let w = *cursor;
    match windows.get(w) {
        Some(&(start, end)) if start <= i => {
            let width = (end - start + 1) as f64;
            let y = -((end - i + 1) as f64) / width;
            Place::Window(w, scaled_sigmoid(y) / scaled_sigmoid(-1.0))
        }
        _ => Place::Outside(match w.checked_sub(1).map(|p| windows[p]) {
            None => -1.0,
            Some((start, end)) => {
                let width = (end - start + 1) as f64;
                scaled_sigmoid((i - end) as f64 / (width - 1.0).max(1.0))
            }
        }),
    }
}

/// The raw NAB score of a series of `records` records whose flagged
/// records are `flagged` (indices, ascending); detections in probation
/// are ignored.
pub fn score_flagged(
    records: usize,
    flagged: impl Iterator<Item = usize>,
    windows: &[(usize, usize)],
    profile: &Profile,
) -> f64 {
    let skip = probation(records);
    let mut total = 0.0;
    let mut detected = vec![false; windows.len()];
    let mut w = 0; // first window not yet passed
    for i in flagged.filter(|&i| i >= skip) {
        match place(windows, &mut w, i) {
            Place::Window(w, worth) => {
                if !detected[w] {
                    detected[w] = true;
                    total += profile.tp * worth;
                }
            }
            Place::Outside(sigma) => total += profile.fp * sigma,
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

/// The (null, perfect) raw scores of series holding `windows` windows.
pub fn bounds(windows: usize, profile: &Profile) -> (f64, f64) {
    (-(windows as f64) * profile.fn_, windows as f64 * profile.tp)
}

/// `raw` normalised between the null detector (0) and a perfect one
/// (100) over `windows` windows.
pub fn normalize(raw: f64, windows: usize, profile: &Profile) -> f64 {
    let (null, perfect) = bounds(windows, profile);
    100.0 * (raw - null) / (perfect - null).max(f64::MIN_POSITIVE)
}

/// The threshold that maximises the summed score over `series`: every
/// distinct score value is tried, exactly, by walking the records from
/// the highest score down and adding each detection's worth as it comes
/// (a false positive's is its own; a window keeps its earliest
/// detection's). Of equal sums the highest threshold wins (the fewest
/// detections); infinity stands for the null detector.
pub fn best_threshold(series: &[Scored<'_>], profile: &Profile) -> Sweep {
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    let mut events: Vec<(f64, Place)> = Vec::new();
    let mut first_window = 0;
    for s in series {
        let skip = probation(s.scores.len());
        let mut w = 0;
        for (i, &v) in s.scores.iter().enumerate().skip(skip) {
            if !v.is_finite() {
                continue;
            }
            let at = match place(s.windows, &mut w, i) {
                Place::Window(w, worth) => Place::Window(first_window + w, worth),
                outside => outside,
            };
            events.push((v, at));
        }
        first_window += s.windows.len();
    }
    events.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (null, _) = bounds(windows, profile);
    let mut best = Sweep {
        threshold: f64::INFINITY,
        raw: null,
        normalized: 0.0,
    };
    // The earliest detection's worth per window (0: none yet).
    let mut earned = vec![0.0f64; windows];
    let (mut fp, mut tp, mut detected) = (0.0, 0.0, 0usize);
    let mut i = 0;
    while i < events.len() {
        let t = events[i].0;
        while i < events.len() && events[i].0 == t {
            match events[i].1 {
                Place::Outside(sigma) => fp += profile.fp * sigma,
                Place::Window(w, worth) if worth > earned[w] => {
                    if earned[w] == 0.0 {
                        detected += 1;
                    }
                    tp += profile.tp * (worth - earned[w]);
                    earned[w] = worth;
                }
                Place::Window(..) => {}
            }
            i += 1;
        }
        let raw = tp + fp - profile.fn_ * (windows - detected) as f64;
        if raw > best.raw {
            best = Sweep {
                threshold: t,
                raw,
                normalized: 0.0,
            };
        }
    }
    best.normalized = normalize(best.raw, windows, profile);
    best
}

/// The summed raw score of `series` at one threshold.
pub fn raw_at(series: &[Scored<'_>], profile: &Profile, threshold: f64) -> f64 {
    series
        .iter()
        .map(|s| {
            let flagged = s
                .scores
                .iter()
                .enumerate()
                .filter(|(_, v)| **v >= threshold)
                .map(|(i, _)| i);
            score_flagged(s.scores.len(), flagged, s.windows, profile)
        })
        .sum()
}

/// The normalised score of `series` at one threshold.
pub fn score_at(series: &[Scored<'_>], profile: &Profile, threshold: f64) -> f64 {
    let windows: usize = series.iter().map(|s| s.windows.len()).sum();
    normalize(raw_at(series, profile, threshold), windows, profile)
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
        let s = best_threshold(&series, &PROFILES[0]);
        assert!((s.normalized - 86.260_734).abs() < 1e-4, "{s:?}");
        let s = best_threshold(&series, &PROFILES[2]);
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

    #[test]
    fn the_sweep_finds_what_trying_every_threshold_finds() {
        // Pseudo-random scores (a fixed LCG) over three series with
        // windows, one without: the walk from the top must agree with
        // scoring each distinct value on its own.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 33) % 1000) as f64 / 1000.0
        };
        let scores: Vec<Vec<f64>> = (0..3).map(|_| (0..400).map(|_| next()).collect()).collect();
        let windows: [&[(usize, usize)]; 3] = [&[(100, 140), (300, 330)], &[], &[(390, 399)]];
        let series: Vec<Scored<'_>> = scores
            .iter()
            .zip(windows)
            .map(|(s, w)| Scored {
                scores: s,
                windows: w,
            })
            .collect();
        for p in &PROFILES {
            let sweep = best_threshold(&series, p);
            let mut values: Vec<f64> = scores.iter().flatten().copied().collect();
            values.push(f64::INFINITY);
            let brute = values
                .iter()
                .map(|&t| raw_at(&series, p, t))
                .fold(f64::NEG_INFINITY, f64::max);
            assert!(
                (sweep.raw - brute).abs() < 1e-9,
                "{}: {sweep:?} vs {brute}",
                p.name
            );
            assert!((raw_at(&series, p, sweep.threshold) - sweep.raw).abs() < 1e-9);
        }
    }
}
