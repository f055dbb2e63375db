//! A blend of detectors over one view: `kind = "nearest+kmeans"`.
//!
//! Each member is a [`Detector`] of its own (settings, model, per-series
//! state, saved and restored under its own name, `MODEL.KIND`): they
//! score the same rows, and a row's `anomaly_score` is the geometric mean
//! of the members' scores — high only where every member finds the row
//! unusual, so one member's false alarm is damped by the others. A row
//! scores NULL while any member warms up; its `anomaly_features` are those
//! of the member that scored it highest.
//!
//! The members' scores are each in [0, 1] with the same meaning (their
//! error's rank among the series' recent errors), so the mean needs no
//! rescaling; it is not calibrated like one member's score (its share
//! above t is below 1 − t), so a threshold on it is chosen by
//! `telemine eval`.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use telemine_model::Kind;
use telemine_sql::{View, ViewScorer};

use crate::{Detector, ScoreLog};

/// Joins the members in a blend's `kind`.
pub const SEPARATOR: char = '+';

/// Why a model's `kind` names no detector or blend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    #[error(transparent)]
    Unknown(#[from] telemine_model::UnknownKind),
    #[error("`{0}` is named twice in the blend: name each detector once")]
    Repeated(String),
    #[error(
        "the profile detector reads the view's features as they are, the others their past too: it cannot be blended"
    )]
    Profile,
}

/// The detectors a model's `kind` names: one, or the members of a blend
/// (`"nearest+kmeans"`), in order.
pub fn kinds(kind: &str) -> Result<Vec<Kind>, KindError> {
    let mut out: Vec<Kind> = Vec::new();
    for part in kind.split(SEPARATOR).map(str::trim) {
        let k: Kind = part.parse()?;
        if out.contains(&k) {
            return Err(KindError::Repeated(part.to_string()));
        }
        out.push(k);
    }
    if out.len() > 1 && out.contains(&Kind::Profile) {
        return Err(KindError::Profile);
    }
    Ok(out)
}

/// The name a blend's member is saved under: the model's and its kind's.
pub fn member_name(model: &str, kind: Kind) -> String {
    format!("{model}.{kind}")
}

/// Scores a view's rows by every member and combines the scores: see the
/// module docs.
pub struct Blend {
    members: Vec<Arc<Detector>>,
    log: Option<Arc<ScoreLog>>,
}

impl Blend {
    /// Over `members` (at least one), which log nothing themselves.
    pub fn new(members: Vec<Arc<Detector>>, log: Option<Arc<ScoreLog>>) -> Blend {
        Blend { members, log }
    }
}

/// The geometric mean of `scores`, NULL if any is.
pub fn combine(scores: &[Option<f64>]) -> Option<f64> {
    let mut log_sum = 0.0;
    for s in scores {
        let s = (*s)?.max(0.0);
        if s == 0.0 {
            return Some(0.0);
        }
        log_sum += s.ln();
    }
    (!scores.is_empty()).then(|| (log_sum / scores.len() as f64).exp())
}

impl ViewScorer for Blend {
    fn score(
        &self,
        view: &View,
        batches: Vec<RecordBatch>,
    ) -> Result<Vec<RecordBatch>, DataFusionError> {
        let mut scored = self
            .members
            .iter()
            .map(|m| m.score_rows(view, &batches))
            .collect::<Result<Vec<_>, _>>()?;
        if scored.is_empty() {
            return Err(DataFusionError::Internal(format!(
                "view `{}`: a blend of no detectors",
                view.name
            )));
        }
        let mut out = scored.remove(0);
        let mut member_scores = Vec::with_capacity(scored.len() + 1);
        for b in 0..out.scores.len() {
            for i in 0..out.scores[b].len() {
                member_scores.clear();
                member_scores.push(out.scores[b][i]);
                member_scores.extend(scored.iter().map(|r| r.scores[b][i]));
                let score = combine(&member_scores);
                // The features of the member that found the row most
                // unusual.
                let mut best = out.scores[b][i].unwrap_or(f64::NEG_INFINITY);
                for r in &mut scored {
                    if let Some(s) = r.scores[b][i]
                        && s > best
                    {
                        best = s;
                        out.named[b][i] = r.named[b][i].take();
                    }
                }
                out.scores[b][i] = score;
                if score.is_none() {
                    out.named[b][i] = None;
                }
            }
        }
        out.log(view, self.log.as_deref());
        out.append(view, &batches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_one_detector_or_a_blend() {
        assert_eq!(kinds("kmeans"), Ok(vec![Kind::Kmeans]));
        assert_eq!(
            kinds("nearest + kmeans"),
            Ok(vec![Kind::Nearest, Kind::Kmeans])
        );
        assert!(matches!(kinds("nearest+nope"), Err(KindError::Unknown(_))));
        assert_eq!(
            kinds("pca+pca"),
            Err(KindError::Repeated("pca".to_string()))
        );
        assert_eq!(kinds("profile+pca"), Err(KindError::Profile));
        assert!(kinds("").is_err());
    }

    #[test]
    fn the_blend_is_the_geometric_mean_and_null_while_any_member_warms_up() {
        assert_eq!(combine(&[Some(0.25), Some(1.0)]), Some(0.5));
        assert_eq!(combine(&[Some(0.9)]), Some(0.9));
        assert_eq!(combine(&[Some(0.0), Some(1.0)]), Some(0.0));
        assert_eq!(combine(&[Some(0.5), None]), None);
        assert_eq!(combine(&[]), None);
        let s = combine(&[Some(0.999), Some(0.99), Some(0.9)]).unwrap();
        assert!((s - (0.999f64 * 0.99 * 0.9).cbrt()).abs() < 1e-12);
    }
}
