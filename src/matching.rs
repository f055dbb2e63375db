//! Matching alerts against labelled anomalies (the demo's ground truth):
//! precision and recall per detection path.
//!
//! An alert *matches* an anomaly when it carries every label of the anomaly
//! (an alert on a host of a hot rack carries that rack's `dc` and `rack`)
//! and its window overlaps the anomaly's time span. Precision is the share
//! of alerts that match some anomaly; recall is the share of anomalies
//! matched by at least one alert.

use std::collections::BTreeMap;

use telemine_connectors::generator::Anomaly;

use telemine_types::alert::Alert;

/// Precision and recall of a set of alerts, with per-kind detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub alerts: usize,
    pub true_alerts: usize,
    pub anomalies: usize,
    pub detected: usize,
    pub precision: f64,
    pub recall: f64,
    /// Per anomaly kind: (injected, detected).
    pub by_kind: BTreeMap<&'static str, (usize, usize)>,
}

fn matches(alert: &Alert, anomaly: &Anomaly) -> bool {
    anomaly
        .labels
        .iter()
        .all(|(k, v)| alert.labels.get(k) == Some(v))
        && alert.window_start_ms < anomaly.end_ms
        && alert.window_end_ms > anomaly.start_ms
}

/// The alert instances a stream of notifications told about, one per
/// fingerprint, each spanning from `window_ms` before it started firing
/// (the window whose close fired it) to its end (or its start, while it
/// still fires): the unit precision counts.
pub fn episodes(payloads: &[telemine_alerting::payload::Payload], window_ms: i64) -> Vec<Alert> {
    let ms = |t: &str| telemine_types::alert::parse_ms(t).ok();
    let mut by_fp: BTreeMap<String, Alert> = BTreeMap::new();
    for a in payloads.iter().flat_map(|p| &p.alerts) {
        let Some(start) = ms(&a.starts_at) else {
            continue;
        };
        let end = ms(&a.ends_at).filter(|e| *e > start).unwrap_or(start);
        let e = by_fp.entry(a.fingerprint.clone()).or_insert_with(|| Alert {
            schema: telemine_types::alert::ALERT_SCHEMA.into(),
            status: "firing".into(),
            rule: a.labels.get("alertname").cloned().unwrap_or_default(),
            severity: a.labels.get("severity").cloned().unwrap_or_default(),
            fingerprint: a.fingerprint.clone(),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            values: Default::default(),
            window_start: String::new(),
            window_end: String::new(),
            window_start_ms: start - window_ms,
            window_end_ms: end,
        });
        e.window_start_ms = e.window_start_ms.min(start - window_ms);
        e.window_end_ms = e.window_end_ms.max(end);
    }
    by_fp.into_values().collect()
}

pub fn score(alerts: &[Alert], anomalies: &[Anomaly]) -> Score {
    let true_alerts = alerts
        .iter()
        .filter(|a| anomalies.iter().any(|x| matches(a, x)))
        .count();
    let mut by_kind: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut detected = 0;
    for x in anomalies {
        let hit = alerts.iter().any(|a| matches(a, x));
        let e = by_kind.entry(x.kind.name()).or_default();
        e.0 += 1;
        if hit {
            e.1 += 1;
            detected += 1;
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    Score {
        alerts: alerts.len(),
        true_alerts,
        anomalies: anomalies.len(),
        detected,
        precision: ratio(true_alerts, alerts.len()),
        recall: ratio(detected, anomalies.len()),
        by_kind,
    }
}

#[cfg(test)]
mod tests {
    use telemine_connectors::generator::AnomalyKind;

    use super::*;
    use telemine_types::alert::ALERT_SCHEMA;

    fn alert(labels: &[(&str, &str)], start: i64) -> Alert {
        Alert {
            schema: ALERT_SCHEMA.into(),
            status: "firing".into(),
            rule: "R".into(),
            severity: "warning".into(),
            fingerprint: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: Default::default(),
            values: Default::default(),
            window_start: String::new(),
            window_end: String::new(),
            window_start_ms: start,
            window_end_ms: start + 60_000,
        }
    }

    #[test]
    fn labels_and_time_must_both_match() {
        let rack = Anomaly {
            kind: AnomalyKind::RackTemperatureRise,
            labels: [
                ("dc".to_string(), "fra1".to_string()),
                ("rack".to_string(), "fra1-r01".to_string()),
            ]
            .into(),
            start_ms: 100_000,
            end_ms: 400_000,
        };
        let alerts = [
            alert(&[("dc", "fra1"), ("rack", "fra1-r01")], 120_000),
            alert(
                &[("dc", "fra1"), ("rack", "fra1-r01"), ("host", "h1")],
                360_000,
            ),
            alert(&[("dc", "fra1"), ("rack", "fra1-r02")], 120_000),
            alert(&[("dc", "fra1"), ("rack", "fra1-r01")], 400_000),
        ];
        let s = score(&alerts, &[rack]);
        assert_eq!((s.true_alerts, s.detected), (2, 1));
        assert_eq!(s.precision, 0.5);
        assert_eq!(s.recall, 1.0);
    }
}
