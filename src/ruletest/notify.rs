//! Notifications in rule tests: a case's rule rows and evaluations go
//! through the alerter (`telemine-alerting`) exactly as the pipeline's
//! alerting stage hands them over — each engine step's evaluations and
//! rows with the alerting clock after it — and the notifications it sends
//! are compared, in order, with the case's `[[notification]]` tables.
//!
//! An input step with `alerting_restart = true` stops the alerting there
//! and starts a new one from the state the old one saved (its snapshot, as
//! the alerting owner saves it with each commit): what was notified is not
//! sent again, and what is still due is.
//!
//! ```toml
//! [alerting]                 # as in telemine.toml (default: its defaults)
//! group_wait = "0s"
//! [[notification]]
//! status = "firing"
//! group = { alertname = "HostCpuSaturated" }   # the group's labels, exactly
//! firing = [{ host = "h2" }]                   # one entry per alert in it
//! resolved = []
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use telemine_alerting::Alerter;
use telemine_alerting::config::AlertingConfig;
use telemine_alerting::lifecycle::Status;
use telemine_alerting::payload::{Payload, PayloadAlert};
use telemine_stream::local::AlertingStep;

use super::label_set;

/// One notification a case expects.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpectedNotification {
    /// "firing" while any alert in the group fires, else "resolved".
    status: String,
    /// The group's labels (the `group_by` values), exactly; left out: any.
    group: Option<BTreeMap<String, String>>,
    /// The alerts that fire in it: each entry's labels must be among one
    /// alert's labels. As many entries as firing alerts.
    #[serde(default)]
    firing: Vec<BTreeMap<String, String>>,
    /// The alerts resolved in it, likewise.
    #[serde(default)]
    resolved: Vec<BTreeMap<String, String>>,
}

/// The alerting of one case, fed step by step.
pub(super) struct Notifier {
    config: AlertingConfig,
    alerter: Alerter,
    sent: Vec<Payload>,
}

impl Notifier {
    pub(super) fn new(config: &AlertingConfig) -> Notifier {
        Notifier {
            config: config.clone(),
            alerter: Alerter::new(config),
            sent: Vec::new(),
        }
    }

    /// Hands the alerter what the engine made since the last call.
    pub(super) fn apply(&mut self, steps: Vec<AlertingStep>) {
        for s in steps {
            let out = self.alerter.step(s.evaluations, s.rows, s.clock);
            self.sent.extend(out);
        }
    }

    /// Stops the alerting and starts a new one from its saved state.
    pub(super) fn restart(&mut self) -> Result<(), String> {
        let saved = self.alerter.snapshot();
        let mut next = Alerter::new(&self.config);
        next.restore(saved.as_bytes())
            .map_err(|e| format!("alerting_restart: the saved state does not restore: {e}"))?;
        self.alerter = next;
        Ok(())
    }

    /// What was sent so far (input stopped mid-stream).
    pub(super) fn sent(self) -> Vec<Payload> {
        self.sent
    }

    /// End of input: what the groups send once their waits are over.
    pub(super) fn finish(mut self) -> Vec<Payload> {
        let last = self.alerter.finish();
        self.sent.extend(last);
        self.sent
    }
}

/// The differences between the notifications sent and those expected,
/// written into `report`.
pub(super) fn compare(want: &[ExpectedNotification], got: &[Payload], report: &mut String) {
    let mismatch = (0..want.len().max(got.len())).find(|&i| match (want.get(i), got.get(i)) {
        (Some(w), Some(g)) => !matches(w, g),
        _ => true,
    });
    let Some(first) = mismatch else {
        return;
    };
    let _ = writeln!(
        report,
        "notifications differ from #{} on (expected {}, sent {}):",
        first + 1,
        want.len(),
        got.len()
    );
    for (i, w) in want.iter().enumerate().skip(first) {
        let _ = writeln!(report, "  - #{} {}", i + 1, describe_expected(w));
    }
    for (i, g) in got.iter().enumerate().skip(first) {
        let _ = writeln!(report, "  + #{} {}", i + 1, describe(g));
    }
}

fn matches(want: &ExpectedNotification, got: &Payload) -> bool {
    if want.status != status_name(got.status) {
        return false;
    }
    if want.group.as_ref().is_some_and(|g| g != &got.group_labels) {
        return false;
    }
    let of =
        |s: Status| -> Vec<&PayloadAlert> { got.alerts.iter().filter(|a| a.status == s).collect() };
    same_alerts(&want.firing, of(Status::Firing))
        && same_alerts(&want.resolved, of(Status::Resolved))
}

/// Each expected entry matches a distinct alert, and none is left over.
fn same_alerts(want: &[BTreeMap<String, String>], got: Vec<&PayloadAlert>) -> bool {
    if want.len() != got.len() {
        return false;
    }
    let mut left = got;
    want.iter().all(|w| {
        match left
            .iter()
            .position(|a| w.iter().all(|(k, v)| a.labels.get(k) == Some(v)))
        {
            Some(i) => {
                left.remove(i);
                true
            }
            None => false,
        }
    })
}

fn status_name(s: Status) -> &'static str {
    match s {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

fn describe(p: &Payload) -> String {
    let alerts: Vec<String> = p
        .alerts
        .iter()
        .map(|a| format!("{} {}", status_name(a.status), label_set(&a.labels)))
        .collect();
    format!(
        "{} group {:?}: {}",
        status_name(p.status),
        p.group_labels,
        alerts.join("; ")
    )
}

fn describe_expected(w: &ExpectedNotification) -> String {
    let alerts: Vec<String> = w
        .firing
        .iter()
        .map(|l| format!("firing {}", label_set(l)))
        .chain(
            w.resolved
                .iter()
                .map(|l| format!("resolved {}", label_set(l))),
        )
        .collect();
    let group = w
        .group
        .as_ref()
        .map_or("any".to_string(), |g| format!("{g:?}"));
    format!("{} group {group}: {}", w.status, alerts.join("; "))
}
