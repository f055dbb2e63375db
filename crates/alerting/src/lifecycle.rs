//! Each alert instance — a rule and a label set, named by its fingerprint
//! — moves inactive → pending → firing → resolved, as Prometheus moves
//! its alerts. Time is event time: a rule is evaluated once per window
//! end, and `at` is that window end.
//!
//! - A row for an inactive instance makes it pending, active from `at`.
//! - A pending instance fires at the first evaluation at least `for` after
//!   it became active (`for` = 0 fires at once). An evaluation without its
//!   row before then drops it back to inactive, silently.
//! - A firing instance is reported at every evaluation it holds (its row
//!   carries the newest values), and also while its last row is less than
//!   `keep_firing_for` old; after that, an evaluation without its row
//!   resolves it, once, with that evaluation's time as its end.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use telemine_types::alert::Alert;
use telemine_types::alert::rule::Timing;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Firing,
    Resolved,
}

/// What an evaluation says about one firing or just-resolved instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    pub alert: Alert,
    pub status: Status,
    /// When it started firing.
    pub starts_at: i64,
    /// When it resolved.
    pub ends_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Instance {
    alert: Alert,
    active_at: i64,
    fired_at: Option<i64>,
    last_true: i64,
}

/// Every pending and firing instance, by rule and fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    rules: BTreeMap<String, BTreeMap<String, Instance>>,
}

impl Lifecycle {
    /// One evaluation of `rule` at `at`: `rows` are the alerts its query
    /// returned for the window ending then (one per instance; a later row
    /// of the same instance replaces an earlier one).
    pub fn evaluate(
        &mut self,
        rule: &str,
        timing: Timing,
        at: i64,
        rows: Vec<Alert>,
    ) -> Vec<Update> {
        let instances = self.rules.entry(rule.to_string()).or_default();
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut latest: BTreeMap<String, Alert> = BTreeMap::new();
        for a in rows {
            latest.insert(a.fingerprint.clone(), a);
        }
        for (fp, alert) in latest {
            seen.insert(fp.clone());
            let i = instances.entry(fp).or_insert_with(|| Instance {
                alert: alert.clone(),
                active_at: at,
                fired_at: None,
                last_true: at,
            });
            i.alert = alert;
            i.last_true = i.last_true.max(at);
            if i.fired_at.is_none() && at - i.active_at >= timing.for_ms {
                i.fired_at = Some(at);
            }
            if let Some(fired) = i.fired_at {
                out.push(Update {
                    alert: i.alert.clone(),
                    status: Status::Firing,
                    starts_at: fired,
                    ends_at: None,
                });
            }
        }
        instances.retain(|fp, i| {
            if seen.contains(fp) {
                return true;
            }
            let Some(fired) = i.fired_at else {
                return false; // pending → inactive
            };
            let holding = at - i.last_true < timing.keep_firing_for_ms;
            out.push(Update {
                alert: i.alert.clone(),
                status: if holding {
                    Status::Firing
                } else {
                    Status::Resolved
                },
                starts_at: fired,
                ends_at: (!holding).then_some(at),
            });
            holding
        });
        if instances.is_empty() {
            self.rules.remove(rule);
        }
        out
    }

    /// Fingerprints of `rule`'s pending instances.
    pub fn pending(&self, rule: &str) -> Vec<String> {
        self.state(rule, false)
    }

    /// Fingerprints of `rule`'s firing instances.
    pub fn firing(&self, rule: &str) -> Vec<String> {
        self.state(rule, true)
    }

    fn state(&self, rule: &str, fired: bool) -> Vec<String> {
        self.rules
            .get(rule)
            .map(|m| {
                m.iter()
                    .filter(|(_, i)| i.fired_at.is_some() == fired)
                    .map(|(fp, _)| fp.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every pending and firing instance, as the API shows them: the alert
    /// with its state, when it became active and when it fired (event
    /// time, RFC 3339).
    pub fn active(&self) -> Vec<serde_json::Value> {
        self.rules
            .values()
            .flat_map(|m| m.values())
            .map(|i| {
                serde_json::json!({
                    "state": if i.fired_at.is_some() { "firing" } else { "pending" },
                    "rule": i.alert.rule,
                    "severity": i.alert.severity,
                    "fingerprint": i.alert.fingerprint,
                    "labels": i.alert.labels,
                    "annotations": i.alert.annotations,
                    "values": i.alert.values,
                    "activeAt": telemine_types::alert::format_ms(i.active_at),
                    "firedAt": i.fired_at.map(telemine_types::alert::format_ms),
                    "lastTrueAt": telemine_types::alert::format_ms(i.last_true),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::alert;

    const MIN: i64 = 60_000;

    fn statuses(u: &[Update]) -> Vec<(String, Status, i64, Option<i64>)> {
        u.iter()
            .map(|u| {
                (
                    u.alert.labels["host"].clone(),
                    u.status,
                    u.starts_at,
                    u.ends_at,
                )
            })
            .collect()
    }

    #[test]
    fn pending_then_firing_then_resolved() {
        let mut l = Lifecycle::default();
        let t = Timing {
            for_ms: 2 * MIN,
            keep_firing_for_ms: 0,
        };
        let h1 = || vec![alert("Hot", &[("host", "h1")])];
        assert!(l.evaluate("Hot", t, MIN, h1()).is_empty());
        assert_eq!(l.pending("Hot").len(), 1);
        assert!(l.evaluate("Hot", t, 2 * MIN, h1()).is_empty(), "1 min of 2");
        let u = l.evaluate("Hot", t, 3 * MIN, h1());
        assert_eq!(statuses(&u), [("h1".into(), Status::Firing, 3 * MIN, None)]);
        assert_eq!(l.firing("Hot").len(), 1);
        let u = l.evaluate("Hot", t, 4 * MIN, h1());
        assert_eq!(
            statuses(&u),
            [("h1".into(), Status::Firing, 3 * MIN, None)],
            "still firing"
        );
        let u = l.evaluate("Hot", t, 5 * MIN, vec![]);
        assert_eq!(
            statuses(&u),
            [("h1".into(), Status::Resolved, 3 * MIN, Some(5 * MIN))]
        );
        assert!(
            l.evaluate("Hot", t, 6 * MIN, vec![]).is_empty(),
            "resolved once"
        );
        assert_eq!(l, Lifecycle::default());
    }

    #[test]
    fn a_pending_instance_that_stops_holding_never_fires() {
        let mut l = Lifecycle::default();
        let t = Timing {
            for_ms: 2 * MIN,
            keep_firing_for_ms: 0,
        };
        l.evaluate("Hot", t, MIN, vec![alert("Hot", &[("host", "h1")])]);
        assert!(l.evaluate("Hot", t, 2 * MIN, vec![]).is_empty());
        assert!(l.pending("Hot").is_empty());
        // Holding again starts the wait over.
        l.evaluate("Hot", t, 3 * MIN, vec![alert("Hot", &[("host", "h1")])]);
        assert!(
            l.evaluate("Hot", t, 4 * MIN, vec![alert("Hot", &[("host", "h1")])])
                .is_empty()
        );
    }

    #[test]
    fn keep_firing_for_bridges_gaps() {
        let mut l = Lifecycle::default();
        let t = Timing {
            for_ms: 0,
            keep_firing_for_ms: 2 * MIN,
        };
        let h1 = || vec![alert("Hot", &[("host", "h1")])];
        assert_eq!(
            l.evaluate("Hot", t, MIN, h1()).len(),
            1,
            "for 0 fires at once"
        );
        let u = l.evaluate("Hot", t, 2 * MIN, vec![]);
        assert_eq!(statuses(&u), [("h1".into(), Status::Firing, MIN, None)]);
        l.evaluate("Hot", t, 3 * MIN, h1());
        assert_eq!(
            l.evaluate("Hot", t, 4 * MIN, vec![])[0].status,
            Status::Firing
        );
        let u = l.evaluate("Hot", t, 5 * MIN, vec![]);
        assert_eq!(
            statuses(&u),
            [("h1".into(), Status::Resolved, MIN, Some(5 * MIN))]
        );
    }
}
