//! Grouping, inhibition and silencing, as Alertmanager's dispatcher does
//! them, on event time.
//!
//! - Alerts are grouped by the route's `group_by` labels. A new group
//!   waits `group_wait` before its first notification, so alerts that
//!   start together arrive together; after that the group is looked at
//!   every `group_interval`.
//! - A look sends a notification when the set of firing alerts differs
//!   from the last one sent, when an alert that was sent as firing has
//!   resolved, or when `repeat_interval` has passed since the last
//!   notification and something still fires. Resolved alerts are sent
//!   once and then forgotten; one that resolved before it was ever sent
//!   is not sent at all.
//! - Muted alerts are left out of a look as if absent: those an active
//!   silence matches, and those an inhibition rule's firing source mutes
//!   (source and target matchers, and equal values of the `equal`
//!   labels). A group whose alerts are all muted sends nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::lifecycle::{Status, Update};
use super::payload::{NO_END, Payload, PayloadAlert, common, group_key};
use super::silence::Silences;
use crate::config::AlertingConfig;
use telemine_types::alert::matcher::{Matcher, all_match};
use telemine_types::alert::{Alert, format_ms};

/// How alerts are grouped and how often groups notify, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub group_by: Vec<String>,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
}

impl Route {
    /// `[alerting]`'s grouping and intervals.
    pub fn from_config(config: &AlertingConfig) -> Route {
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Route {
            group_by: config.group_by.clone(),
            group_wait_ms: ms(config.group_wait),
            group_interval_ms: ms(config.group_interval),
            repeat_interval_ms: ms(config.repeat_interval),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    /// `[[alerting.inhibit]]`; the config's validation has checked their
    /// matchers.
    pub fn from_config(config: &AlertingConfig) -> Vec<InhibitRule> {
        let parse = |m: &[String]| m.iter().filter_map(|t| Matcher::parse(t).ok()).collect();
        config
            .inhibit
            .iter()
            .map(|i| InhibitRule {
                source: parse(i.source_matchers.get_ref()),
                target: parse(i.target_matchers.get_ref()),
                equal: i.equal.clone(),
            })
            .collect()
    }
}

/// Per inhibition rule, the firing alerts its source matchers match, by
/// their values of the rule's `equal` labels: built once per flush, so
/// muting a target costs one lookup per rule instead of a pass over every
/// alert (an incident with thousands of alerts made that quadratic).
struct Inhibited {
    /// Per rule: `equal` values → fingerprints of the firing sources.
    sources: Vec<std::collections::HashMap<Vec<Option<String>>, Vec<String>>>,
}

impl Inhibited {
    fn index(rules: &[InhibitRule], groups: &BTreeMap<String, Group>) -> Inhibited {
        let sources = rules
            .iter()
            .map(|rule| {
                let mut by_equal: std::collections::HashMap<_, Vec<String>> = Default::default();
                for e in groups.values().flat_map(|g| g.alerts.values()) {
                    if e.status == Status::Firing && all_match(&rule.source, &e.alert.labels) {
                        by_equal
                            .entry(equal_values(rule, &e.alert))
                            .or_default()
                            .push(e.alert.fingerprint.clone());
                    }
                }
                by_equal
            })
            .collect();
        Inhibited { sources }
    }

    /// Whether a firing source of some rule mutes `target` (never itself).
    fn mutes(&self, rules: &[InhibitRule], target: &Alert) -> bool {
        rules.iter().zip(&self.sources).any(|(rule, sources)| {
            all_match(&rule.target, &target.labels)
                && sources
                    .get(&equal_values(rule, target))
                    .is_some_and(|fps| fps.iter().any(|f| *f != target.fingerprint))
        })
    }
}

fn equal_values(rule: &InhibitRule, alert: &Alert) -> Vec<Option<String>> {
    rule.equal
        .iter()
        .map(|l| alert.labels.get(l).cloned())
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    alert: Alert,
    status: Status,
    starts_at: i64,
    ends_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Group {
    labels: BTreeMap<String, String>,
    alerts: BTreeMap<String, Entry>,
    next_look: i64,
    /// Fingerprints sent as firing in the last notification.
    sent_firing: BTreeSet<String>,
    last_sent: Option<i64>,
}

/// Alert groups and what each last sent.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pub route: Route,
    pub inhibit: Vec<InhibitRule>,
    pub receiver: String,
    pub external_url: String,
    groups: BTreeMap<String, Group>,
}

impl Dispatcher {
    pub fn new(
        route: Route,
        inhibit: Vec<InhibitRule>,
        receiver: String,
        external_url: String,
    ) -> Self {
        Dispatcher {
            route,
            inhibit,
            receiver,
            external_url,
            groups: BTreeMap::new(),
        }
    }

    /// Takes an update from the lifecycle at event time `now`.
    pub fn insert(&mut self, u: Update, now: i64) {
        let labels: BTreeMap<String, String> = self
            .route
            .group_by
            .iter()
            .filter_map(|l| u.alert.labels.get(l).map(|v| (l.clone(), v.clone())))
            .collect();
        let key = group_key(&labels);
        let wait = self.route.group_wait_ms;
        let group = self.groups.entry(key).or_insert_with(|| Group {
            labels,
            alerts: BTreeMap::new(),
            next_look: now.saturating_add(wait),
            sent_firing: BTreeSet::new(),
            last_sent: None,
        });
        group.alerts.insert(
            u.alert.fingerprint.clone(),
            Entry {
                alert: u.alert,
                status: u.status,
                starts_at: u.starts_at,
                ends_at: u.ends_at,
            },
        );
    }

    /// Looks at every group due by `now`, in time order, and returns the
    /// notifications they send.
    ///
    /// However far `now` jumps, a group is looked at most twice per flush:
    /// at its due time, and at the last look time its `group_interval`
    /// grid reaches before `now` (where a `repeat_interval` may fall due).
    /// The looks in between would see the same alerts — nothing changes
    /// the groups during a flush — so they could only repeat the same
    /// notification; walking them one by one made a jump of event time
    /// cost time and memory in proportion to its size.
    pub fn flush(&mut self, now: i64, silences: &Silences) -> Vec<Payload> {
        let mut out = Vec::new();
        let mut due: BTreeSet<(i64, String)> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_look <= now)
            .map(|(k, g)| (g.next_look, k.clone()))
            .collect();
        if due.is_empty() {
            // The common case (a flush before every evaluation): no pass
            // over the alerts to index inhibition sources.
            return out;
        }
        let inhibited = Inhibited::index(&self.inhibit, &self.groups);
        let mut skipped: BTreeSet<String> = BTreeSet::new();
        while let Some((at, key)) = due.pop_first() {
            if let Some(p) = self.look(&key, at, silences, &inhibited) {
                out.push(p);
            }
            let interval = self.route.group_interval_ms.max(1);
            let Some(g) = self.groups.get_mut(&key) else {
                continue;
            };
            if g.next_look > now {
                continue;
            }
            if skipped.insert(key.clone()) {
                // Straight to the last grid point at or before `now`.
                let steps = (now - at) / interval;
                g.next_look = at.saturating_add(steps.saturating_mul(interval));
                due.insert((g.next_look, key));
            } else {
                g.next_look = now.saturating_add(1);
            }
        }
        out
    }

    fn muted(&self, alert: &Alert, at: i64, silences: &Silences, inhibited: &Inhibited) -> bool {
        silences.mutes(&alert.labels, at) || inhibited.mutes(&self.inhibit, alert)
    }

    fn look(
        &mut self,
        key: &str,
        at: i64,
        silences: &Silences,
        inhibited: &Inhibited,
    ) -> Option<Payload> {
        let group = self.groups.get(key)?;
        // What a notification would carry: the unmuted alerts that fire,
        // and the unmuted resolved ones that were sent as firing.
        let mut carried: Vec<&Entry> = group
            .alerts
            .values()
            .filter(|e| {
                e.status == Status::Firing || group.sent_firing.contains(&e.alert.fingerprint)
            })
            .filter(|e| !self.muted(&e.alert, at, silences, inhibited))
            .collect();
        let firing: BTreeSet<String> = carried
            .iter()
            .filter(|e| e.status == Status::Firing)
            .map(|e| e.alert.fingerprint.clone())
            .collect();
        let resolved = carried.iter().any(|e| e.status == Status::Resolved);
        let repeat_due = group
            .last_sent
            .is_none_or(|t| at - t >= self.route.repeat_interval_ms);
        let send = !carried.is_empty() && (firing != group.sent_firing || resolved || repeat_due);
        let payload = send.then(|| {
            carried.sort_by(|a, b| a.alert.labels.cmp(&b.alert.labels));
            self.payload(key, &group.labels, &carried, !firing.is_empty())
        });
        let interval = self.route.group_interval_ms.max(1);
        let group = self.groups.get_mut(key)?;
        if payload.is_some() {
            group.sent_firing = firing;
            group.last_sent = Some(at);
        }
        group.alerts.retain(|_, e| e.status == Status::Firing);
        group.next_look = at.saturating_add(interval);
        if group.alerts.is_empty() {
            self.groups.remove(key);
        }
        payload
    }

    fn payload(
        &self,
        key: &str,
        labels: &BTreeMap<String, String>,
        alerts: &[&Entry],
        firing: bool,
    ) -> Payload {
        Payload {
            version: "4".into(),
            group_key: key.to_string(),
            truncated_alerts: 0,
            status: if firing {
                Status::Firing
            } else {
                Status::Resolved
            },
            receiver: self.receiver.clone(),
            group_labels: labels.clone(),
            common_labels: common(alerts.iter().map(|e| &e.alert.labels)),
            common_annotations: common(alerts.iter().map(|e| &e.alert.annotations)),
            external_url: self.external_url.clone(),
            alerts: alerts
                .iter()
                .map(|e| PayloadAlert {
                    status: e.status,
                    labels: e.alert.labels.clone(),
                    annotations: e.alert.annotations.clone(),
                    starts_at: format_ms(e.starts_at),
                    ends_at: e
                        .ends_at
                        .map(format_ms)
                        .unwrap_or_else(|| NO_END.to_string()),
                    generator_url: format!("{}/rules/{}", self.external_url, e.alert.rule),
                    fingerprint: e.alert.fingerprint.clone(),
                })
                .collect(),
        }
    }

    pub(crate) fn groups_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.groups).unwrap_or_default()
    }

    pub(crate) fn restore_groups(
        &mut self,
        groups: serde_json::Value,
    ) -> Result<(), serde_json::Error> {
        self.groups = serde_json::from_value(groups)?;
        Ok(())
    }

    /// Number of groups with alerts.
    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}
