//! The profile detector: one series' normal behaviour by time of day, and
//! how far a row departs from it — fitted on the series' own training
//! rows, then scored row by row while it follows slow drift.
//!
//! Fit (rows `x_t` of k features, each with its slot of the season):
//! 1. **Profile:** per slot, the median of the training rows in it (one
//!    slot — the global median — when training covers fewer than
//!    [`MIN_SEASONS`] seasons). `d = x − profile[slot]`.
//! 2. **Prediction:** ridge regression (λ = [`RIDGE`] of a lag column's
//!    sum of squares) of `d_t` on
//!    `[d_{t−1}, d_{t−2}, d_{t−3}, 1]`; its residual `e`.
//! 3. **Relations:** principal components of the robustly scaled `d` that
//!    explain [`PCA_VARIANCE`] of it; the residual `q` off them (a broken
//!    relation between features).
//! 4. **Scales:** per column of `d`, `e` and `q`, the median and a
//!    normal-consistent scale from the 99th percentile of absolute
//!    deviations, never below the feature's floor: `scale_floor` times
//!    its training spread (0.99 less 0.01 quantile), so the detector
//!    reads watts, rpm and shares of one alike. A row's contribution per
//!    column is its clipped squared robust z (at most [`CLIP`]²).
//! 5. **Score:** the mean contribution over the last [`SMOOTH`] rows,
//!    averaged over the 3k columns, divided by the 0.99 quantile of the
//!    training rows' scores: 1 is the label-free threshold.
//!
//! Scoring a row also updates the profile when the row scores below
//! [`GATE`] (an offset at rate 1/72, the row's slot at rate 0.1), and the
//! offset alone, 20 times slower, when it scores above: the baseline
//! follows drift without absorbing anomalies, and a permanent level shift
//! is learned in the end instead of alarming forever.
//!
//! The threshold follows the series too: a running median of its raw
//! scores (a frugal estimate, one number: up or down by a factor
//! e^[`MEDIAN_STEP`] per row) is compared with the training scores'
//! median, and where it stands higher the score is divided by the ratio.
//! Trained on a few days, a series' normal rows later score higher than
//! its training rows did; without this its threshold would sit inside
//! normal behaviour.

use serde::{Deserialize, Serialize};

use crate::{ModelError, Result};

/// Seasons training must cover for a per-slot profile.
pub const MIN_SEASONS: usize = 3;
/// Rows the prediction reads.
pub const LAGS: usize = 3;
/// Ridge penalty of the prediction, as a share of a lag column's sum of
/// squares over the training rows (1 where that is not positive).
pub const RIDGE: f64 = 0.05;
/// Share of variance the relations' components explain.
pub const PCA_VARIANCE: f64 = 0.9;
/// Largest robust |z| a column contributes.
pub const CLIP: f64 = 10.0;
/// Rows a score averages over.
pub const SMOOTH: usize = 3;

/// The fewest rows a series' profile is fitted on.
pub const MIN_ROWS: usize = 2 * (LAGS + SMOOTH);
/// The training score quantile that is the threshold.
pub const QUANTILE: f64 = 0.99;
/// Score (threshold = 1) below which a row updates the profile.
pub const GATE: f64 = 0.7;
const OFFSET_RATE: f64 = 1.0 / 72.0;
const PROFILE_RATE: f64 = 0.1;
/// Share of the offset rate rows above the gate still update at.
const LEAK: f64 = 0.05;
/// The running median of the raw scores moves by e^±this per row.
pub const MEDIAN_STEP: f64 = 0.001;
/// z of the 99.5% normal quantile: turns a 99th percentile of absolute
/// deviations into a normal-consistent scale.
const Z995: f64 = 2.575_829;

/// A series' fitted profile detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileFit {
    k: usize,
    /// Slots × k (one slot without a season).
    profile: Vec<Vec<f64>>,
    /// (LAGS·k + 1) × k, row-major.
    weights: Vec<f64>,
    /// k × r principal directions of the scaled `d`, row-major, and the
    /// mean they are taken about.
    directions: Vec<f64>,
    components: usize,
    centre: Vec<f64>,
    /// Per column of `d`, `e`, `q`: median and scale.
    median: Vec<f64>,
    scale: Vec<f64>,
    /// The training scores' quantile: a row scoring it scores 1.
    threshold: f64,
    /// The training scores' median, in units of `threshold` (0: the
    /// threshold does not follow the series).
    #[serde(default)]
    typical: f64,
}

/// What scoring carries from row to row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileState {
    profile: Vec<Vec<f64>>,
    offset: Vec<f64>,
    /// The last LAGS rows of `d`, oldest first.
    lags: Vec<Vec<f64>>,
    /// The last SMOOTH − 1 rows of contributions.
    recent: Vec<Vec<f64>>,
    /// The running median of the raw scores (units of the threshold).
    #[serde(default)]
    level: f64,
}

/// A row's score and each feature's share of it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileScore {
    /// In threshold units: 1 is the label-free threshold.
    pub score: f64,
    /// Per feature (k), its contribution over `d`, `e` and `q`.
    pub contributions: Vec<f64>,
    /// Per feature, what the profile and the prediction from the last
    /// rows expected of it (`x − e`), in its units.
    pub expected: Vec<f64>,
}

impl ProfileFit {
    /// Fits on `rows` (each k features, in time order) whose slots of a
    /// season of `season` slots are `slots`; `scale_floor` is the least
    /// scale of a column, as a share of its feature's training spread. Returns the fit and the state to score the rows
    /// after them with.
    pub fn fit(
        rows: &[Vec<f64>],
        slots: &[usize],
        season: usize,
        scale_floor: f64,
    ) -> Result<(ProfileFit, ProfileState)> {
        let n = rows.len();
        let k = rows.first().map_or(0, Vec::len);
        if n < MIN_ROWS || k == 0 || slots.len() != n {
            return Err(ModelError::Invalid(format!(
                "the profile detector needs at least {MIN_ROWS} training rows, got {n}"
            )));
        }
        if rows
            .iter()
            .any(|r| r.len() != k || r.iter().any(|v| !v.is_finite()))
        {
            return Err(ModelError::Invalid(
                "training rows must have the same finite features".into(),
            ));
        }
        let seasons = if season > 1 && n >= MIN_SEASONS * season {
            season
        } else {
            1
        };
        let slot_of = |i: usize| if seasons > 1 { slots[i] % seasons } else { 0 };
        // 1. Profile: per slot median, the global median where a slot is
        // empty.
        let global: Vec<f64> = (0..k)
            .map(|j| median(rows.iter().map(|r| r[j]).collect()))
            .collect();
        let mut by_slot: Vec<Vec<usize>> = vec![Vec::new(); seasons];
        for i in 0..n {
            by_slot[slot_of(i)].push(i);
        }
        let profile: Vec<Vec<f64>> = by_slot
            .iter()
            .map(|members| {
                if members.is_empty() {
                    global.clone()
                } else {
                    (0..k)
                        .map(|j| median(members.iter().map(|&i| rows[i][j]).collect()))
                        .collect()
                }
            })
            .collect();
        let d: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..k)
                    .map(|j| rows[i][j] - profile[slot_of(i)][j])
                    .collect()
            })
            .collect();
        // 2. Prediction from the last LAGS rows.
        let weights = ridge(&d, k)?;
        let e: Vec<Vec<f64>> = (0..n)
            .map(|t| {
                if t < LAGS {
                    vec![0.0; k]
                } else {
                    residual(&d[t], &d[t - LAGS..t], &weights, k)
                }
            })
            .collect();
        // 3. Relations: components of the robustly scaled d.
        let floor = floors(rows, k, scale_floor);
        let (d_med, d_scale): (Vec<f64>, Vec<f64>) = (0..k)
            .map(|j| robust(d.iter().map(|r| r[j]).collect(), floor[j]))
            .unzip();
        let z: Vec<Vec<f64>> = d
            .iter()
            .map(|r| (0..k).map(|j| (r[j] - d_med[j]) / d_scale[j]).collect())
            .collect();
        let (centre, directions, components) = principal(&z, k);
        let q: Vec<Vec<f64>> = z
            .iter()
            .map(|zr| off_components(zr, &centre, &directions, components, &d_scale))
            .collect();
        // 4. Scales of e (from row LAGS on) and q.
        let (e_med, e_scale): (Vec<f64>, Vec<f64>) = (0..k)
            .map(|j| robust(e[LAGS..].iter().map(|r| r[j]).collect(), floor[j]))
            .unzip();
        let (q_med, q_scale): (Vec<f64>, Vec<f64>) = (0..k)
            .map(|j| robust(q.iter().map(|r| r[j]).collect(), floor[j]))
            .unzip();
        let mut fit = ProfileFit {
            k,
            profile,
            weights,
            directions,
            components,
            centre,
            median: [d_med, e_med, q_med].concat(),
            scale: [d_scale, e_scale, q_scale].concat(),
            threshold: 1.0,
            typical: 0.0,
        };
        // 5. The training rows' scores; the threshold is their quantile.
        let c: Vec<Vec<f64>> = (0..n)
            .map(|t| {
                let mut c = fit.contributions(&d[t], &e[t], &q[t]);
                if t < LAGS {
                    c[k..2 * k].iter_mut().for_each(|v| *v = 0.0);
                }
                c
            })
            .collect();
        let scores: Vec<f64> = (LAGS + SMOOTH - 1..n)
            .map(|t| mean(&smoothed(&c[t + 1 - SMOOTH..=t])))
            .collect();
        fit.threshold = quantile(scores.clone(), QUANTILE).max(f64::MIN_POSITIVE);
        let units: Vec<f64> = scores.iter().map(|a| a / fit.threshold).collect();
        fit.typical = median(units.clone());
        // The running median starts where the last week of training rows
        // (at most) put it.
        let level = median(units[units.len().saturating_sub(SEED_ROWS)..].to_vec());
        let state = ProfileState {
            profile: fit.profile.clone(),
            offset: vec![0.0; k],
            lags: d[n - LAGS..].to_vec(),
            recent: c[n - (SMOOTH - 1)..].to_vec(),
            level,
        };
        Ok((fit, state))
    }

    /// Scores the next row `x` in slot `slot` and updates `state` (pass a
    /// copy to score without remembering).
    pub fn step(&self, state: &mut ProfileState, slot: usize, x: &[f64]) -> ProfileScore {
        let k = self.k;
        let s = if state.profile.len() > 1 {
            slot % state.profile.len()
        } else {
            0
        };
        let d: Vec<f64> = (0..k)
            .map(|j| x[j] - state.profile[s][j] - state.offset[j])
            .collect();
        let e = residual(&d, &state.lags, &self.weights, k);
        let z: Vec<f64> = (0..k)
            .map(|j| (d[j] - self.median[j]) / self.scale[j])
            .collect();
        let q = off_components(
            &z,
            &self.centre,
            &self.directions,
            self.components,
            &self.scale[..k],
        );
        let c = self.contributions(&d, &e, &q);
        let mut window = state.recent.clone();
        window.push(c.clone());
        let cw = smoothed(&window);
        let raw = mean(&cw) / self.threshold;
        // Divided by how far the series' running median stands above the
        // training rows' (as it was before this row).
        let factor = if self.typical > 0.0 && state.level > self.typical {
            state.level / self.typical
        } else {
            1.0
        };
        let score = raw / factor;
        if self.typical > 0.0 {
            let step = if raw > state.level {
                MEDIAN_STEP
            } else {
                -MEDIAN_STEP
            };
            state.level = (state.level * step.exp()).max(f64::MIN_POSITIVE);
        }
        let contributions = (0..k).map(|j| cw[j] + cw[k + j] + cw[2 * k + j]).collect();
        let expected = (0..k).map(|j| x[j] - e[j]).collect();
        // Remember the row.
        state.lags.remove(0);
        state.lags.push(d);
        state.recent.remove(0);
        state.recent.push(c);
        // Follow drift with normal rows; slowly, the level of any. The
        // gate reads the raw score: the threshold's own drift must not
        // let an anomaly into the profile.
        let rate = if raw < GATE {
            OFFSET_RATE
        } else {
            OFFSET_RATE * LEAK
        };
        let slot_profile = &mut state.profile[s];
        for ((b, p), &v) in state.offset.iter_mut().zip(slot_profile.iter_mut()).zip(x) {
            *b += rate * (v - *p - *b);
            if raw < GATE {
                *p += PROFILE_RATE * (v - *b - *p);
            }
        }
        ProfileScore {
            score,
            contributions,
            expected,
        }
    }

    /// Each of the 3k columns' clipped squared robust z.
    fn contributions(&self, d: &[f64], e: &[f64], q: &[f64]) -> Vec<f64> {
        d.iter()
            .chain(e)
            .chain(q)
            .enumerate()
            .map(|(i, v)| {
                let z = ((v - self.median[i]) / self.scale[i]).abs().min(CLIP);
                z * z
            })
            .collect()
    }

    /// The score a row must reach to be flagged, in the units of
    /// [`ProfileScore::score`].
    pub fn threshold(&self) -> f64 {
        1.0
    }
}

/// Column means of `rows`.
fn smoothed(rows: &[Vec<f64>]) -> Vec<f64> {
    let n = rows.len().max(1) as f64;
    let cols = rows.first().map_or(0, Vec::len);
    (0..cols)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The median (mean of the two middle values for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    quantile_sorted(
        {
            v.sort_by(f64::total_cmp);
            &v
        },
        0.5,
    )
}

/// The `q` quantile by linear interpolation between order statistics
/// (numpy's default).
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    quantile_sorted(&v, q)
}

fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// Training rows the running median of the scores starts from (a week
/// of five-minute rows).
const SEED_ROWS: usize = 2016;

/// Each feature's least scale: `share` of its training spread (the 0.99
/// less the 0.01 quantile); a feature that did not spread gets `share` of
/// the typical (median) spread of those that did, or `share` itself.
fn floors(rows: &[Vec<f64>], k: usize, share: f64) -> Vec<f64> {
    let spread: Vec<f64> = (0..k)
        .map(|j| {
            let mut v: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            v.sort_by(f64::total_cmp);
            quantile_sorted(&v, 0.99) - quantile_sorted(&v, 0.01)
        })
        .collect();
    let spreading: Vec<f64> = spread.iter().copied().filter(|s| *s > 0.0).collect();
    let typical = if spreading.is_empty() {
        1.0
    } else {
        median(spreading)
    };
    spread
        .iter()
        .map(|&s| share * if s > 0.0 { s } else { typical })
        .collect()
}

/// Median and normal-consistent scale (from the 99th percentile of
/// absolute deviations), never below `floor`.
fn robust(v: Vec<f64>, floor: f64) -> (f64, f64) {
    let m = median(v.clone());
    let dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    (m, (quantile(dev, 0.99) / Z995).max(floor))
}

/// `d` minus its prediction from `lags` (LAGS rows, oldest first).
fn residual(d: &[f64], lags: &[Vec<f64>], weights: &[f64], k: usize) -> Vec<f64> {
    let mut features: Vec<f64> = lags.iter().rev().flatten().copied().collect();
    features.push(1.0);
    (0..k)
        .map(|j| {
            let predicted: f64 = features
                .iter()
                .enumerate()
                .map(|(i, f)| f * weights[i * k + j])
                .sum();
            d[j] - predicted
        })
        .collect()
}

/// Ridge regression of `d_t` on `[d_{t−1}, …, d_{t−LAGS}, 1]` over the
/// rows that have LAGS before them: `(FᵀF + λI)⁻¹FᵀD`, row-major
/// (LAGS·k + 1) × k.
fn ridge(d: &[Vec<f64>], k: usize) -> Result<Vec<f64>> {
    let p = LAGS * k + 1;
    let mut ftf = vec![0.0; p * p];
    let mut ftd = vec![0.0; p * k];
    for t in LAGS..d.len() {
        let mut f: Vec<f64> = d[t - LAGS..t].iter().rev().flatten().copied().collect();
        f.push(1.0);
        for a in 0..p {
            for b in 0..p {
                ftf[a * p + b] += f[a] * f[b];
            }
            for j in 0..k {
                ftd[a * k + j] += f[a] * d[t][j];
            }
        }
    }
    // The penalty in the lags' own units: a share of a lag column's sum
    // of squares (the diagonal's mean), so it weighs the same whatever
    // the features' scale and however many rows.
    let lag_square = (0..LAGS * k).map(|a| ftf[a * p + a]).sum::<f64>() / (LAGS * k) as f64;
    let lambda = if lag_square.is_finite() && lag_square > 0.0 {
        RIDGE * lag_square
    } else {
        1.0
    };
    // The intercept is not penalised: its column is 1 in any units.
    for a in 0..p - 1 {
        ftf[a * p + a] += lambda;
    }
    let l = cholesky(&ftf, p)?;
    let mut w = vec![0.0; p * k];
    for j in 0..k {
        let b: Vec<f64> = (0..p).map(|a| ftd[a * k + j]).collect();
        let x = cholesky_solve(&l, p, &b);
        for a in 0..p {
            w[a * k + j] = x[a];
        }
    }
    Ok(w)
}

/// The lower Cholesky factor of a symmetric positive definite `p × p`
/// matrix (row-major).
fn cholesky(a: &[f64], p: usize) -> Result<Vec<f64>> {
    let mut l = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..=i {
            let s: f64 = (0..j).map(|m| l[i * p + m] * l[j * p + m]).sum();
            if i == j {
                let v = a[i * p + i] - s;
                if v <= 0.0 || !v.is_finite() {
                    return Err(ModelError::Invalid(
                        "the prediction's normal equations are not positive definite".into(),
                    ));
                }
                l[i * p + i] = v.sqrt();
            } else {
                l[i * p + j] = (a[i * p + j] - s) / l[j * p + j];
            }
        }
    }
    Ok(l)
}

/// Solves `L Lᵀ x = b`.
fn cholesky_solve(l: &[f64], p: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; p];
    for i in 0..p {
        let s: f64 = (0..i).map(|m| l[i * p + m] * y[m]).sum();
        y[i] = (b[i] - s) / l[i * p + i];
    }
    let mut x = vec![0.0; p];
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|m| l[m * p + i] * x[m]).sum();
        x[i] = (y[i] - s) / l[i * p + i];
    }
    x
}

/// The mean of `z` and its first principal directions (k × r,
/// row-major) that explain [`PCA_VARIANCE`] of its variance.
fn principal(z: &[Vec<f64>], k: usize) -> (Vec<f64>, Vec<f64>, usize) {
    let pca = crate::principal::Principal::fit(z);
    let r = pca.components_for(PCA_VARIANCE);
    // One direction a column of a k × r matrix, row-major.
    let mut directions = vec![0.0; k * r];
    for (c, d) in pca.directions.iter().take(r).enumerate() {
        for j in 0..k {
            directions[j * r + c] = d[j];
        }
    }
    (pca.mean, directions, r)
}

/// `(z − centre)` off the first `r` directions, back in `d`'s units.
fn off_components(z: &[f64], centre: &[f64], v: &[f64], r: usize, scale: &[f64]) -> Vec<f64> {
    let k = z.len();
    let c: Vec<f64> = (0..k).map(|j| z[j] - centre[j]).collect();
    let proj: Vec<f64> = (0..r)
        .map(|m| (0..k).map(|j| c[j] * v[j * r + m]).sum())
        .collect();
    (0..k)
        .map(|j| {
            let back: f64 = (0..r).map(|m| v[j * r + m] * proj[m]).sum();
            (c[j] - back) * scale[j]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_rows_fit_and_score_finite() {
        // A metric that never moves, metrics that move as one, all zeros:
        // server data has all three, and linfa's PCA once panicked on them.
        let n = 200;
        let cases: Vec<Vec<Vec<f64>>> = vec![
            vec![vec![5.0, 5.0, 5.0]; n],
            vec![vec![0.0; 3]; n],
            (0..n)
                .map(|i| {
                    let v = (i as f64 / 9.0).sin();
                    vec![v, v, 2.0 * v]
                })
                .collect(),
        ];
        let slots: Vec<usize> = (0..n).collect();
        for rows in cases {
            let (fit, mut state) = ProfileFit::fit(&rows, &slots, 24, 0.04).unwrap();
            let s = fit.step(&mut state, 0, &rows[0]);
            assert!(s.score.is_finite(), "{rows:?}");
        }
    }

    #[test]
    fn statistics_by_hand() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(quantile(vec![0.0, 10.0], 0.99), 9.9);
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        let x = cholesky_solve(&l, 2, &[2.0, 1.0]);
        // [[4, 2], [2, 3]] x = [2, 1] → x = [0.5, 0].
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
    }

    /// Two features, one a copy of the other, with a daily shape; test
    /// rows where the copy breaks away score above 1, named first.
    #[test]
    fn a_broken_relation_and_a_seasonal_shape() {
        let season = 24;
        let row = |t: usize| {
            let a = (t % season) as f64 / season as f64 + 0.01 * ((t * 7919) % 13) as f64;
            vec![a, a, 0.5 + 0.01 * ((t * 104_729) % 11) as f64]
        };
        let rows: Vec<Vec<f64>> = (0..season * 10).map(row).collect();
        let slots: Vec<usize> = (0..rows.len()).collect();
        let (fit, mut state) = ProfileFit::fit(&rows, &slots, season, 0.04).unwrap();
        let normal = (rows.len()..rows.len() + season)
            .map(|t| fit.step(&mut state, t, &row(t)).score)
            .fold(0.0f64, f64::max);
        let t = rows.len() + season;
        let mut broken = row(t);
        broken[1] += 0.4;
        let s = fit.step(&mut state.clone(), t, &broken);
        assert!(
            s.score > 1.0 && s.score > 3.0 * normal,
            "{s:?}, normal {normal}"
        );
        let worst = (0..3)
            .max_by(|&a, &b| s.contributions[a].total_cmp(&s.contributions[b]))
            .unwrap();
        assert_eq!(worst, 1, "{s:?}");
        // A whole season too short: the global median.
        let (short, _) =
            ProfileFit::fit(&rows[..season * 2], &slots[..season * 2], season, 0.04).unwrap();
        assert_eq!(short.profile.len(), 1);
    }

    /// Rows of three features with a daily shape and some noise.
    fn noisy_rows(n: usize, season: usize, noise: f64) -> Vec<Vec<f64>> {
        (0..n)
            .map(|t| {
                let a = (t % season) as f64 / season as f64;
                let wobble = |m: usize| noise * (((t * m) % 17) as f64 / 17.0 - 0.5);
                vec![
                    a + wobble(7919),
                    0.5 * a + wobble(104_729),
                    0.3 + wobble(31),
                ]
            })
            .collect()
    }

    /// Watts or shares of one: the same rows in other units score the
    /// same, because every floor and penalty is in the rows' own units.
    #[test]
    fn scores_do_not_depend_on_the_features_units() {
        let season = 24;
        let rows = noisy_rows(season * 6, season, 0.1);
        let slots: Vec<usize> = (0..rows.len()).collect();
        let scaled: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().map(|v| v * 1000.0).collect())
            .collect();
        let (a, mut sa) = ProfileFit::fit(&rows, &slots, season, 0.05).unwrap();
        let (b, mut sb) = ProfileFit::fit(&scaled, &slots, season, 0.05).unwrap();
        for t in rows.len()..rows.len() + season {
            let mut x = noisy_rows(t + 1, season, 0.1).pop().unwrap();
            x[2] += if t % 5 == 0 { 0.3 } else { 0.0 };
            let x1000: Vec<f64> = x.iter().map(|v| v * 1000.0).collect();
            let (ra, rb) = (a.step(&mut sa, t, &x), b.step(&mut sb, t, &x1000));
            assert!(
                (ra.score - rb.score).abs() <= 1e-6 * ra.score.max(1.0),
                "{t}: {} vs {}",
                ra.score,
                rb.score
            );
        }
    }

    /// Normal rows noisier than the training rows (a series trained on a
    /// quiet few days): the threshold follows them, so in the end they
    /// score below it again.
    #[test]
    fn the_threshold_follows_a_series_noisier_than_its_training() {
        let season = 24;
        let rows = noisy_rows(season * 6, season, 0.05);
        let slots: Vec<usize> = (0..rows.len()).collect();
        let (fit, mut state) = ProfileFit::fit(&rows, &slots, season, 0.05).unwrap();
        let later = noisy_rows(rows.len() + 6000, season, 0.15);
        let scores: Vec<f64> = (rows.len()..later.len())
            .map(|t| fit.step(&mut state, t, &later[t]).score)
            .collect();
        let above = |s: &[f64]| s.iter().filter(|&&v| v > 1.0).count() as f64 / s.len() as f64;
        let (first, last) = (&scores[..500], &scores[scores.len() - 500..]);
        assert!(
            above(last) < above(first) / 2.0 && above(last) < 0.05,
            "share above the threshold: first {}, last {}",
            above(first),
            above(last)
        );
    }
}
