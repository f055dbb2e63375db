//! What the model reads of a row: the view's features, and optionally
//! features of the series' past windows — never of later ones.
//!
//! With `past_windows = N` each view feature `f` becomes up to four model
//! features: `f` itself and those `past_features` names — `f_change`
//! (since the series' previous window), `f_from_mean` (distance from the
//! mean of the N previous windows) and `f_spread` (their standard
//! deviation). With `season_windows = S` one more, `f_from_season`: the
//! distance from the mean of the windows around the same one a season
//! before (N/2 either side, at least one).

use std::collections::VecDeque;

/// The past-only feature transform of one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PastFeatures {
    pub window: usize,
    pub season: usize,
    /// Which of the past features: change, from_mean, spread.
    pub parts: [bool; 3],
}

/// The names of the past features, as `past_features` lists them.
pub const PARTS: [&str; 3] = ["change", "from_mean", "spread"];

impl PastFeatures {
    /// Whether the model reads the view's features as they are.
    pub fn identity(&self) -> bool {
        self.window == 0 && self.season == 0
    }

    /// Previous windows of a series the transform reads: what
    /// [`Past`] keeps.
    pub fn keep(&self) -> usize {
        if self.identity() {
            return 0;
        }
        let around = self.around();
        let seasonal = if self.season > 0 {
            self.season + around
        } else {
            0
        };
        self.window.max(seasonal).max(1)
    }

    /// Windows either side of the same window a season before.
    fn around(&self) -> usize {
        (self.window / 2).max(1)
    }

    /// How many model features each view feature becomes: the feature
    /// itself first, then its past features (see [`PastFeatures::names`]).
    pub fn per_view(&self) -> usize {
        if self.identity() {
            return 1;
        }
        let parts = if self.window > 0 {
            self.parts.iter().filter(|p| **p).count()
        } else {
            0
        };
        1 + parts + usize::from(self.season > 0)
    }

    /// The model's feature names, from the view's.
    pub fn names(&self, view: &[String]) -> Vec<String> {
        if self.identity() {
            return view.to_vec();
        }
        let mut out = Vec::new();
        for f in view {
            out.push(f.clone());
            if self.window > 0 {
                for (part, on) in PARTS.iter().zip(self.parts) {
                    if on {
                        out.push(format!("{f}_{part}"));
                    }
                }
            }
            if self.season > 0 {
                out.push(format!("{f}_from_season"));
            }
        }
        out
    }

    /// The model row of `x` (the view's features of a row), given the
    /// series' past windows, appended to `out`.
    pub fn row(&self, past: &Past, x: &[f64], out: &mut Vec<f32>) {
        if self.identity() {
            out.extend(x.iter().map(|&v| v as f32));
            return;
        }
        let n = past.seen;
        let recent = past.last(self.window);
        for (j, &v) in x.iter().enumerate() {
            let prev = recent.last().map_or(v, |r| r[j]);
            let (mean, spread) = if recent.is_empty() {
                (v, 0.0)
            } else {
                let m = recent.iter().map(|r| r[j]).sum::<f64>() / recent.len() as f64;
                let var =
                    recent.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / recent.len() as f64;
                (m, var.sqrt())
            };
            out.push(v as f32);
            if self.window > 0 {
                for (value, on) in [v - prev, v - mean, spread].into_iter().zip(self.parts) {
                    if on {
                        out.push(value as f32);
                    }
                }
            }
            if self.season > 0 {
                // Windows [centre - around, centre + around) of the
                // series, counted from its first, clipped to those seen.
                let seasonal = n.checked_sub(self.season).and_then(|centre| {
                    let lo = centre.saturating_sub(self.around());
                    let hi = (centre + self.around()).min(n);
                    let near = past.span(lo, hi);
                    (!near.is_empty())
                        .then(|| v - near.iter().map(|r| r[j]).sum::<f64>() / near.len() as f64)
                });
                out.push(seasonal.unwrap_or(0.0) as f32);
            }
        }
    }
}

/// A series' previous windows' view features, newest last, at most
/// `keep`, and how many it has had in all.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Past {
    rows: VecDeque<Vec<f64>>,
    /// Windows the series has had (its first is window 0).
    seen: usize,
}

impl Past {
    /// Remembers `x` as the series' newest window.
    pub fn push(&mut self, x: &[f64], keep: usize) {
        self.seen += 1;
        if keep == 0 {
            return;
        }
        if self.rows.len() == keep {
            self.rows.pop_front();
        }
        self.rows.push_back(x.to_vec());
    }

    /// Windows the series has had.
    pub fn seen(&self) -> usize {
        self.seen
    }

    /// The last `n` windows (fewer when fewer are kept), oldest first.
    fn last(&self, n: usize) -> Vec<&[f64]> {
        let from = self.rows.len().saturating_sub(n);
        self.rows.range(from..).map(Vec::as_slice).collect()
    }

    /// Windows `lo..hi` (numbered from the series' first) that are kept.
    fn span(&self, lo: usize, hi: usize) -> Vec<&[f64]> {
        let first = self.seen - self.rows.len();
        let lo = lo.max(first);
        let hi = hi.max(lo);
        self.rows
            .range(lo - first..hi - first)
            .map(Vec::as_slice)
            .collect()
    }

    /// Per feature, the median of `x` and the `n - 1` windows before it;
    /// `None` until the series has had them (or `n` is 0).
    pub fn medians(&self, x: &[f64], n: usize) -> Option<Vec<f64>> {
        if n == 0 || self.seen < n - 1 || self.rows.len() < n - 1 {
            return None;
        }
        let recent = self.last(n - 1);
        Some(
            (0..x.len())
                .map(|j| {
                    let mut v: Vec<f64> = recent.iter().map(|r| r[j]).collect();
                    v.push(x[j]);
                    v.sort_by(f64::total_cmp);
                    let mid = v.len() / 2;
                    if v.len().is_multiple_of(2) {
                        (v[mid - 1] + v[mid]) / 2.0
                    } else {
                        v[mid]
                    }
                })
                .collect(),
        )
    }

    /// Values held.
    pub fn values(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_past_features_of_a_series_by_hand() {
        let t = PastFeatures {
            window: 2,
            season: 3,
            parts: [true; 3],
        };
        assert_eq!(t.keep(), 4);
        assert_eq!(
            t.names(&["v".into()]),
            ["v", "v_change", "v_from_mean", "v_spread", "v_from_season"]
        );
        let mut past = Past::default();
        let mut rows = Vec::new();
        for v in [1.0, 3.0, 5.0, 7.0, 9.0] {
            let mut out = Vec::new();
            t.row(&past, &[v], &mut out);
            rows.push(out);
            past.push(&[v], t.keep());
        }
        // The first window has no past: no change, no spread.
        assert_eq!(rows[0], [1.0, 0.0, 0.0, 0.0, 0.0]);
        // Window 2: mean of 1, 3 is 2, spread 1; no season yet.
        assert_eq!(rows[2], [5.0, 2.0, 3.0, 1.0, 0.0]);
        // Window 3: a season (3) before is window 0; around it, windows
        // [-1, 1) clipped to [0, 1): mean 1.
        assert_eq!(rows[3], [7.0, 2.0, 3.0, 1.0, 6.0]);
        // Window 4: windows [0, 2) around window 1: mean 2.
        assert_eq!(rows[4], [9.0, 2.0, 3.0, 1.0, 7.0]);
        assert_eq!(past.values(), 4, "at most `keep` windows are held");
        // Medians of 11 and the last three (3, 5, 7, 9 are kept; 5, 7, 9
        // the last three): 5, 7, 9, 11 → 8; of 11 and the last two: 9.
        assert_eq!(past.medians(&[11.0], 4), Some(vec![8.0]));
        assert_eq!(past.medians(&[11.0], 3), Some(vec![9.0]));
        assert_eq!(past.medians(&[11.0], 6), None, "only four are kept");
        // Only some of the past features.
        let some = PastFeatures {
            parts: [false, true, false],
            ..t
        };
        assert_eq!(
            some.names(&["v".into()]),
            ["v", "v_from_mean", "v_from_season"]
        );
        let mut out = Vec::new();
        some.row(&past, &[11.0], &mut out);
        assert_eq!(out, [11.0, 11.0 - 8.0, 11.0 - 4.0]);
    }

    #[test]
    fn without_a_past_the_features_are_the_views() {
        let t = PastFeatures {
            window: 0,
            season: 0,
            parts: [true; 3],
        };
        let mut out = Vec::new();
        t.row(&Past::default(), &[1.5, 2.5], &mut out);
        assert_eq!(out, [1.5, 2.5]);
        assert_eq!(t.keep(), 0);
    }
}
