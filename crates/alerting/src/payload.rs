//! The message subscribers receive: Alertmanager's webhook payload,
//! version 4, so a receiver written for Alertmanager reads it unchanged.
//! `docs/alertmanager-webhook-v4.schema.json` is its JSON Schema.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::lifecycle::Status;

/// Alertmanager's "no end yet" time, which it sends for firing alerts.
pub const NO_END: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payload {
    /// Always "4".
    pub version: String,
    /// Identifies the group: its updates are keyed by it.
    pub group_key: String,
    pub truncated_alerts: u64,
    /// "firing" while any alert in it fires, else "resolved".
    pub status: Status,
    pub receiver: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<PayloadAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadAlert {
    pub status: Status,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339.
    pub starts_at: String,
    /// RFC 3339; [`NO_END`] while firing.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

impl Payload {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Payload, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Payload {
    /// This notification as one or more that each carry at most
    /// `max_alerts` alerts and serialise to at most `max_bytes`: an
    /// incident with thousands of alerts in one group is sent in parts,
    /// never dropped and never refused by the broker for its size. Every
    /// part is a whole webhook payload of the same group (same `groupKey`,
    /// alerts in the same order) whose `truncatedAlerts` says how many of
    /// the group's alerts it does not carry — Alertmanager's meaning, so a
    /// receiver knows it holds a part. A single alert too large for
    /// `max_bytes` still goes alone (its labels and texts are bounded).
    /// Parts carry the whole notification's `status`.
    pub fn split(self, max_alerts: usize, max_bytes: usize) -> Vec<Payload> {
        let total = self.alerts.len();
        let mut per = max_alerts.max(1).min(total.max(1));
        if per >= total && self.to_json().len() <= max_bytes {
            return vec![self];
        }
        loop {
            let parts: Vec<Payload> = self
                .alerts
                .chunks(per)
                .map(|c| self.part(c, total))
                .collect();
            if per == 1 || parts.iter().all(|p| p.to_json().len() <= max_bytes) {
                return parts;
            }
            per = per.div_ceil(2);
        }
    }

    fn part(&self, alerts: &[PayloadAlert], total: usize) -> Payload {
        Payload {
            version: self.version.clone(),
            group_key: self.group_key.clone(),
            truncated_alerts: self.truncated_alerts + (total - alerts.len()) as u64,
            // The group's status, not the part's: a part holding only
            // resolved alerts of a firing group must not read as its end.
            status: self.status,
            receiver: self.receiver.clone(),
            group_labels: self.group_labels.clone(),
            common_labels: common(alerts.iter().map(|a| &a.labels)),
            common_annotations: common(alerts.iter().map(|a| &a.annotations)),
            external_url: self.external_url.clone(),
            alerts: alerts.to_vec(),
        }
    }
}

/// Alertmanager's group key: the route (`{}`, the root) and the group's
/// labels, `{}:{dc="dc1", rack="r7"}`.
pub fn group_key(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{}}:{{{}}}", inner.join(", "))
}

/// The label pairs every map in `maps` shares.
pub fn common<'a>(
    mut maps: impl Iterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let Some(first) = maps.next() else {
        return BTreeMap::new();
    };
    let mut out = first.clone();
    for m in maps {
        out.retain(|k, v| m.get(k) == Some(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_and_common_labels() {
        let a: BTreeMap<String, String> = [("dc", "dc1"), ("rack", "r7")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(group_key(&a), r#"{}:{dc="dc1", rack="r7"}"#);
        assert_eq!(group_key(&BTreeMap::new()), "{}:{}");
        let mut b = a.clone();
        b.insert("rack".into(), "r8".into());
        let c = common([&a, &b].into_iter());
        assert_eq!(c.len(), 1);
        assert_eq!(c["dc"], "dc1");
    }

    fn storm(n: usize) -> Payload {
        let alerts = (0..n)
            .map(|i| PayloadAlert {
                status: if i % 2 == 0 {
                    Status::Firing
                } else {
                    Status::Resolved
                },
                labels: [
                    ("alertname".to_string(), "Hot".to_string()),
                    ("host".to_string(), format!("h{i:05}")),
                ]
                .into(),
                annotations: BTreeMap::new(),
                starts_at: "2026-11-27T00:00:00.000Z".into(),
                ends_at: NO_END.into(),
                generator_url: "http://telemine/rules/hot".into(),
                fingerprint: format!("{i:016x}"),
            })
            .collect();
        Payload {
            version: "4".into(),
            group_key: "{}:{}".into(),
            truncated_alerts: 0,
            status: Status::Firing,
            receiver: "telemine".into(),
            group_labels: BTreeMap::new(),
            common_labels: BTreeMap::new(),
            common_annotations: BTreeMap::new(),
            external_url: "http://telemine".into(),
            alerts,
        }
    }

    #[test]
    fn a_storm_is_sent_in_parts_that_each_fit_and_lose_nothing() {
        let whole = storm(10_000);
        assert_eq!(whole.clone().split(20_000, usize::MAX), vec![whole.clone()]);
        let parts = whole.clone().split(1000, 100_000);
        let carried: Vec<&PayloadAlert> = parts.iter().flat_map(|p| &p.alerts).collect();
        assert_eq!(carried.len(), 10_000);
        assert!(carried.iter().zip(&whole.alerts).all(|(a, b)| *a == b));
        for p in &parts {
            assert!(p.alerts.len() <= 1000);
            assert!(p.to_json().len() <= 100_000, "{}", p.to_json().len());
            assert_eq!(p.truncated_alerts as usize, 10_000 - p.alerts.len());
            assert_eq!(p.status, Status::Firing);
            assert_eq!(p.group_key, whole.group_key);
            assert_eq!(p.common_labels["alertname"], "Hot");
        }
        // Too many bytes for even 1000 alerts: halved until each fits.
        assert!(parts.len() > 10, "{}", parts.len());
        // One alert larger than the limit still goes, alone.
        let one = storm(2).split(10, 10);
        assert_eq!(one.len(), 2);
    }
}
