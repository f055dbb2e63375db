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
}
