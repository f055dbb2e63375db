//! The rule and alert vocabulary: what an alert is ([`Alert`]: labels,
//! values, annotations, window, fingerprint), how rules are timed and
//! ranked ([`rule`]), label matchers ([`matcher`]) and annotation
//! templates ([`template`]), and the limits and time text they share.
//!
//! A leaf: it depends on nothing else in the crate, so `sql/` (which
//! parses and plans rules), `alerting/` (which turns their rows into
//! notifications) and `config.rs` all build on it without importing each
//! other. `sql::alerts_from_batches` turns a rule's output rows into
//! [`Alert`]s — the one place the engine leaves columnar data.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod matcher;
pub mod rule;
pub mod template;

/// Version tag of the alert JSON; bumped on incompatible changes.
pub const ALERT_SCHEMA: &str = "telemine.alert/v1";

/// Longest label value an alert carries, in bytes; longer ones are cut
/// and marked (see [`cut`]), before the fingerprint is taken.
pub const MAX_LABEL_BYTES: usize = 1024;
/// Longest string value or rendered annotation, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes on a character boundary, marked with
/// `…[+N bytes]` (N: what was cut) so nobody mistakes it for the value.
pub fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker_room = 24;
    let mut end = max.saturating_sub(marker_room);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[+{} bytes]", &text[..end], text.len() - end)
}

/// One alert instance: a rule's row for one series and one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub schema: String,
    pub status: String,
    pub rule: String,
    pub severity: String,
    /// 16 hex digits; the same rule and labels always give the same value,
    /// across restarts and instances.
    pub fingerprint: String,
    /// `alertname`, `severity` and the rule's key columns.
    pub labels: BTreeMap<String, String>,
    /// The rule's annotations (summary, description, runbook_url, …),
    /// rendered with this row's labels and values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Every other column the rule selected.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Window bounds, RFC 3339 UTC: `[window_start, window_end)`.
    pub window_start: String,
    pub window_end: String,
    #[serde(skip)]
    pub window_end_ms: i64,
    #[serde(skip)]
    pub window_start_ms: i64,
}

impl Alert {
    /// A firing warning of `rule` with `labels` (plus `alertname` and
    /// `severity`) and no values: for tests and examples.
    pub fn sample(rule: &str, labels: &[(&str, &str)]) -> Alert {
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("alertname".into(), rule.into());
        l.insert("severity".into(), "warning".into());
        Alert {
            schema: ALERT_SCHEMA.into(),
            status: "firing".into(),
            rule: rule.into(),
            severity: "warning".into(),
            fingerprint: fingerprint(&l),
            labels: l,
            annotations: [("summary".to_string(), format!("{rule} on {labels:?}"))].into(),
            values: serde_json::Map::new(),
            window_start: String::new(),
            window_end: String::new(),
            window_end_ms: 0,
            window_start_ms: 0,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses an alert message as subscribers receive it.
    pub fn from_json(bytes: &[u8]) -> Result<Alert, serde_json::Error> {
        let mut a: Alert = serde_json::from_slice(bytes)?;
        a.window_start_ms = parse_ms(&a.window_start).map_err(serde::de::Error::custom)?;
        a.window_end_ms = parse_ms(&a.window_end).map_err(serde::de::Error::custom)?;
        Ok(a)
    }
}

/// Fingerprint of a label set: FNV-1a 64 over the labels sorted by name,
/// each name and value followed by a 0xFF separator — the scheme
/// Prometheus and Alertmanager use, so fingerprints match theirs.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// Milliseconds since the epoch of an RFC 3339 time.
pub fn parse_ms(text: &str) -> Result<i64, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(text).map(|d| d.timestamp_millis())
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_prometheus_label_set_hash() {
        // Prometheus: model.LabelSet{"alertname":"A","host":"h1"}.Fingerprint()
        // is FNV-1a 64 over "alertname\xffA\xffhost\xffh1\xff".
        let labels: BTreeMap<String, String> = [
            ("host".to_string(), "h1".to_string()),
            ("alertname".to_string(), "A".to_string()),
        ]
        .into();
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"alertname\xffA\xffhost\xffh1\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(fingerprint(&labels), format!("{h:016x}"));
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }

    #[test]
    fn long_texts_are_cut_on_a_char_boundary_and_marked() {
        assert_eq!(cut("short".into(), 1024), "short");
        let long = "é".repeat(100_000);
        let c = cut(long, MAX_LABEL_BYTES);
        assert!(c.len() <= MAX_LABEL_BYTES, "{}", c.len());
        assert!(c.ends_with(" bytes]"), "{c}");
        let cut_bytes: usize = c
            .rsplit("…[+")
            .next()
            .and_then(|t| t.trim_end_matches(" bytes]").parse().ok())
            .unwrap();
        assert_eq!(
            c.len() - "…[+ bytes]".len() - cut_bytes.to_string().len() + cut_bytes,
            200_000
        );
    }

    #[test]
    fn timestamps_render_as_rfc3339_utc() {
        assert_eq!(format_ms(1_764_201_660_000), "2025-11-27T00:01:00.000Z");
    }
}
