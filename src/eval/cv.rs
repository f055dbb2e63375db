//! Choosing a detector's settings so that the figure predicts data it has
//! not seen: cross-validation across the groups a corpus has (NAB's
//! categories, ASD's servers).
//!
//! Every candidate setting is run once over the whole corpus (each series
//! or server is scored on its own, by its own streaming state, so a
//! candidate's scores on one group never depend on another group). Then,
//! per fold, everything is chosen on the other folds alone — the
//! candidate and its threshold — and the held-out fold is scored at
//! exactly those choices. The reported figure pools the held-out folds;
//! the best choice over the whole corpus (in-sample) is printed beside it,
//! labelled, never alone.

use super::asd::{self, Counts};
use super::nab::{self, Profile, Scored};

/// Groups of a corpus, each a fold held out in turn.
#[derive(Debug, Clone, PartialEq)]
pub struct Folds {
    /// Per fold, a name and the indices of its items (series, servers).
    pub folds: Vec<(String, Vec<usize>)>,
}

impl Folds {
    /// One fold per distinct group, in order of first appearance.
    pub fn by_group<'a>(groups: impl IntoIterator<Item = &'a str>) -> Folds {
        let mut folds: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, g) in groups.into_iter().enumerate() {
            match folds.iter_mut().find(|(name, _)| name == g) {
                Some((_, items)) => items.push(i),
                None => folds.push((g.to_string(), vec![i])),
            }
        }
        Folds { folds }
    }

    /// `items` named `names` dealt into `k` folds of consecutive items
    /// (sizes differing by at most one), each named by its items.
    pub fn consecutive(names: &[String], k: usize) -> Folds {
        let n = names.len();
        let k = k.clamp(1, n.max(1));
        let mut folds = Vec::new();
        let mut start = 0;
        for f in 0..k {
            let size = n / k + usize::from(f < n % k);
            let items: Vec<usize> = (start..start + size).collect();
            let name = items
                .iter()
                .map(|&i| names[i].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            folds.push((name, items));
            start += size;
        }
        Folds { folds }
    }

    /// Whether item `i` is in fold `f`.
    fn holds(&self, f: usize, i: usize) -> bool {
        self.folds[f].1.contains(&i)
    }
}

/// One candidate setting's scores: per item (series or server), its rows'
/// scores in order.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub scores: Vec<Vec<f64>>,
    /// The thresholds it may flag at, on its own label-free scale (ASD);
    /// empty where every score value is tried (NAB).
    pub levels: Vec<f64>,
}

/// One NAB fold's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct NabFold {
    pub held_out: String,
    /// What the other folds chose, and its normalised score there.
    pub chosen: String,
    pub threshold: f64,
    pub training: f64,
    /// The held-out fold at those choices: raw, and normalised over its
    /// own windows (NaN without windows).
    pub raw: f64,
    pub normalized: f64,
}

/// Leave-one-group-out for one NAB profile.
#[derive(Debug, Clone, PartialEq)]
pub struct NabCv {
    pub folds: Vec<NabFold>,
    /// The held-out raw scores summed and normalised over every window.
    pub held_out: f64,
    /// In-sample: the best candidate and threshold over the whole corpus.
    pub in_sample: (String, f64),
}

fn scored<'a>(
    c: &'a Candidate,
    windows: &'a [Vec<(usize, usize)>],
    keep: impl Fn(usize) -> bool,
) -> Vec<Scored<'a>> {
    c.scores
        .iter()
        .zip(windows)
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, (s, w))| Scored {
            scores: s,
            windows: w,
        })
        .collect()
}

/// Cross-validates `candidates` over NAB series whose windows are
/// `windows`, under `profile`.
pub fn nab(
    candidates: &[Candidate],
    windows: &[Vec<(usize, usize)>],
    folds: &Folds,
    profile: &Profile,
) -> NabCv {
    let total: usize = windows.iter().map(Vec::len).sum();
    let best_of = |keep: &dyn Fn(usize) -> bool| -> Option<(usize, nab::Sweep)> {
        candidates
            .iter()
            .enumerate()
            .map(|(c, cand)| {
                (
                    c,
                    nab::best_threshold(&scored(cand, windows, keep), profile),
                )
            })
            // Of equal sums the first candidate wins.
            .fold(
                None,
                |best: Option<(usize, nab::Sweep)>, (c, s)| match best {
                    Some((_, b)) if b.raw >= s.raw => best,
                    _ => Some((c, s)),
                },
            )
    };
    let mut out = Vec::new();
    let mut held_raw = 0.0;
    for (f, (name, items)) in folds.folds.iter().enumerate() {
        let Some((c, sweep)) = best_of(&|i| !folds.holds(f, i)) else {
            continue;
        };
        let held = scored(&candidates[c], windows, |i| folds.holds(f, i));
        let raw = nab::raw_at(&held, profile, sweep.threshold);
        let w: usize = items.iter().map(|&i| windows[i].len()).sum();
        held_raw += raw;
        out.push(NabFold {
            held_out: name.clone(),
            chosen: candidates[c].name.clone(),
            threshold: sweep.threshold,
            training: sweep.normalized,
            raw,
            normalized: if w > 0 {
                nab::normalize(raw, w, profile)
            } else {
                f64::NAN
            },
        });
    }
    let in_sample = best_of(&|_| true)
        .map(|(c, s)| (candidates[c].name.clone(), s.normalized))
        .unwrap_or_default();
    NabCv {
        folds: out,
        held_out: nab::normalize(held_raw, total, profile),
        in_sample,
    }
}

/// One ASD fold's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct AsdFold {
    pub held_out: String,
    pub chosen: String,
    pub threshold: f64,
    /// Point-wise F1 on the other folds at those choices.
    pub training_f1: f64,
    pub counts: Counts,
    pub auc: f64,
}

/// Leave-servers-out over ASD servers.
#[derive(Debug, Clone, PartialEq)]
pub struct AsdCv {
    pub folds: Vec<AsdFold>,
    /// The held-out folds' decisions pooled, and the ROC AUC of their
    /// scores pooled.
    pub counts: Counts,
    pub auc: f64,
    /// In-sample: the best candidate and threshold over every server, and
    /// its point-wise F1.
    pub in_sample: (String, f64, f64),
}

/// Cross-validates `candidates` over servers labelled `labels`: per fold
/// the candidate and the threshold, from the candidate's `levels` (its
/// own label-free scale), with the best pooled point-wise F1 on the other
/// folds.
pub fn asd(candidates: &[Candidate], labels: &[Vec<bool>], folds: &Folds) -> AsdCv {
    let counts_at = |c: &Candidate, keep: &dyn Fn(usize) -> bool, t: f64| -> Counts {
        let mut total = Counts::default();
        for (i, (s, l)) in c.scores.iter().zip(labels).enumerate() {
            if keep(i) {
                let flagged: Vec<bool> = s.iter().map(|&v| v >= t).collect();
                total.add(asd::pointwise(&flagged, l));
            }
        }
        total
    };
    let best_of = |keep: &dyn Fn(usize) -> bool| -> Option<(usize, f64, f64)> {
        let mut best: Option<(usize, f64, f64)> = None;
        for (c, cand) in candidates.iter().enumerate() {
            for &t in &cand.levels {
                let f1 = counts_at(cand, keep, t).f1();
                if best.is_none_or(|(_, _, b)| f1 > b) {
                    best = Some((c, t, f1));
                }
            }
        }
        best
    };
    let pool = |c: &Candidate, keep: &dyn Fn(usize) -> bool| -> (Vec<f64>, Vec<bool>) {
        let mut scores = Vec::new();
        let mut ls = Vec::new();
        for (i, (s, l)) in c.scores.iter().zip(labels).enumerate() {
            if keep(i) {
                scores.extend_from_slice(s);
                ls.extend_from_slice(l);
            }
        }
        (scores, ls)
    };
    let mut out = Vec::new();
    let mut counts = Counts::default();
    let (mut all_scores, mut all_labels) = (Vec::new(), Vec::new());
    for (f, (name, _)) in folds.folds.iter().enumerate() {
        let Some((c, t, training_f1)) = best_of(&|i| !folds.holds(f, i)) else {
            continue;
        };
        let held = |i: usize| folds.holds(f, i);
        let fold_counts = counts_at(&candidates[c], &held, t);
        let (scores, ls) = pool(&candidates[c], &held);
        counts.add(fold_counts);
        out.push(AsdFold {
            held_out: name.clone(),
            chosen: candidates[c].name.clone(),
            threshold: t,
            training_f1,
            counts: fold_counts,
            auc: asd::roc_auc(&scores, &ls),
        });
        all_scores.extend(scores);
        all_labels.extend(ls);
    }
    let in_sample = best_of(&|_| true)
        .map(|(c, t, f1)| (candidates[c].name.clone(), t, f1))
        .unwrap_or_default();
    AsdCv {
        folds: out,
        counts,
        auc: asd::roc_auc(&all_scores, &all_labels),
        in_sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_by_group_and_consecutive() {
        let f = Folds::by_group(["a", "b", "a", "c"]);
        assert_eq!(
            f.folds,
            [
                ("a".to_string(), vec![0, 2]),
                ("b".to_string(), vec![1]),
                ("c".to_string(), vec![3])
            ]
        );
        let names: Vec<String> = (1..=12).map(|i| format!("s{i}")).collect();
        let f = Folds::consecutive(&names, 5);
        let sizes: Vec<usize> = f.folds.iter().map(|(_, i)| i.len()).collect();
        assert_eq!(sizes, [3, 3, 2, 2, 2]);
        assert_eq!(f.folds[4].0, "s11 s12");
    }

    /// Two candidates over four series in two groups: `good` finds every
    /// window, `noisy` fires everywhere. Each fold must choose `good` on
    /// the other and be scored at its threshold.
    #[test]
    fn each_fold_is_scored_at_what_the_other_folds_chose() {
        let n = 200;
        let windows = vec![vec![(100, 120)]; 4];
        let mut good = vec![0.0; n];
        good[105] = 0.9;
        let noisy: Vec<f64> = (0..n)
            .map(|i| if i % 7 == 0 { 0.95 } else { 0.0 })
            .collect();
        let candidates = [
            Candidate {
                name: "noisy".into(),
                scores: vec![noisy; 4],
                levels: Vec::new(),
            },
            Candidate {
                name: "good".into(),
                scores: vec![good; 4],
                levels: Vec::new(),
            },
        ];
        let folds = Folds::by_group(["x", "x", "y", "y"]);
        let cv = nab(&candidates, &windows, &folds, &nab::PROFILES[0]);
        assert_eq!(cv.folds.len(), 2);
        for f in &cv.folds {
            assert_eq!(f.chosen, "good");
            assert!((f.threshold - 0.9).abs() < 1e-12);
        }
        assert_eq!(cv.in_sample.0, "good");
        // 105 in a window of 21 records: early, so nearly perfect.
        assert!(cv.held_out > 90.0 && cv.held_out <= 100.0, "{cv:?}");
    }

    /// A candidate that fits one group only: held out, that group is
    /// scored at what the other group preferred, and the pooled figure
    /// shows the loss.
    #[test]
    fn a_choice_that_only_fits_one_group_costs_held_out() {
        let labels = vec![
            vec![false, false, true, true],
            vec![false, false, true, true],
        ];
        // `a` separates server 0 at 0.5 and server 1 not at all.
        let a = Candidate {
            name: "a".into(),
            scores: vec![vec![0.1, 0.2, 0.6, 0.7], vec![0.9, 0.9, 0.1, 0.1]],
            levels: vec![0.5],
        };
        let folds = Folds::by_group(["s0", "s1"]);
        let cv = asd(&[a], &labels, &folds);
        // Held out, server 1 flags its two normal rows and misses both
        // anomalies; server 0 is right.
        assert_eq!(
            cv.counts,
            Counts {
                tp: 2,
                fp: 2,
                fn_: 2
            }
        );
        assert!((cv.counts.f1() - 0.5).abs() < 1e-12);
    }
}
