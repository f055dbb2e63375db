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
use super::matcher::{Matcher, all_match};
use super::payload::{NO_END, Payload, PayloadAlert, common, group_key};
use super::silence::Silences;
use crate::alert::{Alert, format_ms};

/// How alerts are grouped and how often groups notify, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub group_by: Vec<String>,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl InhibitRule {
    fn mutes(&self, source: &Alert, target: &Alert) -> bool {
        source.fingerprint != target.fingerprint
            && all_match(&self.source, &source.labels)
            && all_match(&self.target, &target.labels)
            && self
                .equal
                .iter()
                .all(|l| source.labels.get(l) == target.labels.get(l))
    }
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
            next_look: now + wait,
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
    pub fn flush(&mut self, now: i64, silences: &Silences) -> Vec<Payload> {
        let mut out = Vec::new();
        loop {
            let due = self
                .groups
                .iter()
                .filter(|(_, g)| g.next_look <= now)
                .min_by_key(|(k, g)| (g.next_look, (*k).clone()))
                .map(|(k, g)| (k.clone(), g.next_look));
            let Some((key, at)) = due else {
                break;
            };
            if let Some(p) = self.look(&key, at, silences) {
                out.push(p);
            }
        }
        out
    }

    fn muted(&self, alert: &Alert, at: i64, silences: &Silences) -> bool {
        if silences.mutes(&alert.labels, at) {
            return true;
        }
        self.inhibit.iter().any(|rule| {
            self.groups
                .values()
                .flat_map(|g| g.alerts.values())
                .any(|source| source.status == Status::Firing && rule.mutes(&source.alert, alert))
        })
    }

    fn look(&mut self, key: &str, at: i64, silences: &Silences) -> Option<Payload> {
        let group = self.groups.get(key)?;
        // What a notification would carry: the unmuted alerts that fire,
        // and the unmuted resolved ones that were sent as firing.
        let mut carried: Vec<&Entry> = group
            .alerts
            .values()
            .filter(|e| {
                e.status == Status::Firing || group.sent_firing.contains(&e.alert.fingerprint)
            })
            .filter(|e| !self.muted(&e.alert, at, silences))
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
        group.next_look = at + interval;
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
