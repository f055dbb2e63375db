//! Point-wise detection figures for multivariate labelled data: precision,
//! recall and F1 per row, the same after point adjustment, ROC AUC, and
//! whether the explanation names the metrics a person found responsible.

/// Counts of one threshold's decisions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
    }

    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// Row by row.
pub fn pointwise(flagged: &[bool], labels: &[bool]) -> Counts {
    let mut c = Counts::default();
    for (&f, &l) in flagged.iter().zip(labels) {
        match (f, l) {
            (true, true) => c.tp += 1,
            (true, false) => c.fp += 1,
            (false, true) => c.fn_ += 1,
            (false, false) => {}
        }
    }
    c
}

/// After point adjustment: a labelled segment with any flagged row counts
/// as flagged throughout (the usual, generous, convention of papers).
pub fn point_adjusted(flagged: &[bool], labels: &[bool]) -> Counts {
    let mut adjusted = flagged.to_vec();
    let mut i = 0;
    while i < labels.len() {
        if !labels[i] {
            i += 1;
            continue;
        }
        let start = i;
        while i < labels.len() && labels[i] {
            i += 1;
        }
        if flagged[start..i].iter().any(|f| *f) {
            adjusted[start..i].iter_mut().for_each(|f| *f = true);
        }
    }
    pointwise(&adjusted, labels)
}

/// Area under the ROC curve of `scores` against `labels` (ties counted
/// half), by ranks.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let positives = labels.iter().filter(|l| **l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return f64::NAN;
    }
    // Sum of the positives' average ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum += avg;
            }
        }
        i = j + 1;
    }
    (rank_sum - (positives * (positives + 1)) as f64 / 2.0) / (positives * negatives) as f64
}

/// The best point-wise F1 any single threshold reaches, and that
/// threshold (rows scoring at or above it are flagged). The threshold is
/// fitted to the labels: an upper bound on what a label-free threshold can
/// score, as papers that report "best F1" use it — not a detector's result.
pub fn best_f1(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|l| **l).count();
    let (mut tp, mut flagged) = (0usize, 0usize);
    let mut best = (0.0, f64::INFINITY);
    let mut i = 0;
    while i < order.len() {
        // Rows with equal scores are flagged together.
        let t = scores[order[i]];
        while i < order.len() && scores[order[i]] == t {
            tp += usize::from(labels[order[i]]);
            flagged += 1;
            i += 1;
        }
        let f1 = 2.0 * tp as f64 / (flagged + positives) as f64;
        if f1 > best.0 {
            best = (f1, t);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_threshold_by_hand() {
        // Flagging down to 0.8: TP 1, FP 1, FN 1 → F1 0.5; down to 0.7:
        // TP 2, FP 1 → 0.8; down to 0.6: TP 2, FP 2 → 0.667.
        let scores = [0.9, 0.8, 0.1, 0.7, 0.6, 0.2];
        let labels = [false, true, false, true, false, false];
        let (f1, t) = best_f1(&scores, &labels);
        assert!((f1 - 0.8).abs() < 1e-12, "{f1}");
        assert_eq!(t, 0.7);
        // Ties move together: one threshold cannot split them.
        assert_eq!(best_f1(&[0.5, 0.5], &[true, false]), (2.0 / 3.0, 0.5));
    }

    #[test]
    fn counts_adjustment_and_auc() {
        let labels = [false, true, true, true, false, false];
        let flagged = [true, false, true, false, false, false];
        let c = pointwise(&flagged, &labels);
        assert_eq!(
            c,
            Counts {
                tp: 1,
                fp: 1,
                fn_: 2
            }
        );
        assert!((c.f1() - 0.4).abs() < 1e-12);
        let a = point_adjusted(&flagged, &labels);
        assert_eq!(
            a,
            Counts {
                tp: 3,
                fp: 1,
                fn_: 0
            }
        );
        assert_eq!(roc_auc(&[0.1, 0.9, 0.8, 0.7, 0.2, 0.3], &labels), 1.0);
        assert_eq!(roc_auc(&[0.5; 6], &labels), 0.5);
    }
}
