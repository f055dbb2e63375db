//! From a rule's rows to the notifications subscribers receive, with the
//! semantics Prometheus and Alertmanager users rely on:
//!
//! rule rows ([`telemine_types::alert::Alert`], one per instance and window)
//!   → [`lifecycle`]: inactive → pending → firing → resolved, with `for`
//!     and `keep_firing_for`, per rule and fingerprint
//!   → [`dispatch`]: groups by labels with `group_wait`, `group_interval`
//!     and `repeat_interval`; silences ([`silence`]) and inhibition rules
//!     mute what they match
//!   → [`payload`]: Alertmanager's webhook payload, version 4, keyed by
//!     group key.
//!
//! Everything here runs on event time (window ends and the watermark),
//! so a replay of the same records sends the same notifications.
//! [`template`] renders the rules' annotations.

pub mod alertmanager;
pub mod config;
pub mod dispatch;
pub mod http;
pub mod lifecycle;
pub mod payload;
pub mod silence;
pub mod webhook;

use std::collections::BTreeMap;

use crate::config::AlertingConfig;
use dispatch::{Dispatcher, InhibitRule, Route};
use lifecycle::Lifecycle;
use payload::Payload;
use silence::Silences;
use telemine_types::alert::Alert;
pub use telemine_types::alert::rule::Evaluation;
use telemine_types::alert::rule::Timing;

/// The version of the alerting state [`Alerter::snapshot`] writes and
/// [`Alerter::restore`] reads.
pub const STATE_VERSION: u32 = 1;

/// Why a saved alerting state cannot be taken back; the alerting then
/// starts without it (and says so).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Not an alerting state at all (cut short, or another value).
    #[error("not an alerting state: {0}")]
    Unreadable(#[source] serde_json::Error),
    /// Written by a telemine whose state this build does not read.
    #[error("alerting state version {found} (this build reads {STATE_VERSION})")]
    Version { found: u32 },
    /// The notification groups in it do not read.
    #[error("the saved notification groups cannot be read: {0}")]
    Groups(#[source] serde_json::Error),
}

/// The whole path from rule rows to notifications.
pub struct Alerter {
    lifecycle: Lifecycle,
    dispatcher: Dispatcher,
    pub silences: Silences,
    /// The latest window end each rule was evaluated for.
    last_at: BTreeMap<String, i64>,
    clock: i64,
    /// Evaluations ahead of the alerting clock (a source read ahead of
    /// another), by (window end, rule), with their rows: applied in order
    /// once the clock reaches them, so a fast source cannot fire and
    /// resolve an alert in one step before any look at its group.
    pending: BTreeMap<(i64, String), Held>,
    /// The lifecycle's state changes since [`Alerter::take_states`], when
    /// [`Alerter::record_states`] asked for them (the Alertmanager
    /// senders read alert state, not notifications). Not saved.
    states: Option<Vec<lifecycle::Update>>,
}

/// An evaluation held until the alerting clock reaches it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Held {
    timing: Timing,
    rows: Vec<Alert>,
}

impl Alerter {
    pub fn new(config: &AlertingConfig) -> Alerter {
        Alerter {
            lifecycle: Lifecycle::default(),
            dispatcher: Dispatcher::new(
                Route::from_config(config),
                InhibitRule::from_config(config),
                config.receiver.clone(),
                config.external_url.clone(),
            ),
            silences: Silences::default(),
            last_at: BTreeMap::new(),
            clock: i64::MIN,
            pending: BTreeMap::new(),
            states: None,
        }
    }

    /// Keeps every state change of the lifecycle (firing, resolved) for
    /// [`Alerter::take_states`], which must then be called after each step.
    pub fn record_states(&mut self) {
        self.states.get_or_insert_with(Vec::new);
    }

    /// Whether [`Alerter::record_states`] was asked for.
    pub fn records_states(&self) -> bool {
        self.states.is_some()
    }

    /// The state changes since the last call, in the order they happened.
    pub fn take_states(&mut self) -> Vec<lifecycle::Update> {
        self.states.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Takes one engine step: the rule evaluations it ran and the rows
    /// they returned; `now` is the alerting clock — the lowest watermark
    /// over every source, `None` while a source that has none yet still
    /// holds it back. Evaluations are held until the clock reaches them,
    /// then run in window-end order whatever source they came from, each
    /// after the looks due before it; one for a window end a rule has
    /// already passed (a late firing) changes no alert's state.
    pub fn step(
        &mut self,
        evaluations: Vec<Evaluation>,
        rows: Vec<Alert>,
        now: Option<i64>,
    ) -> Vec<Payload> {
        for e in &evaluations {
            self.pending
                .entry((e.at, e.rule.clone()))
                .or_default()
                .timing = e.timing;
        }
        for a in rows {
            let key = (a.window_end_ms, a.rule.clone());
            let timing = evaluations
                .iter()
                .find(|e| e.rule == key.1)
                .map(|e| e.timing);
            let held = self.pending.entry(key).or_default();
            if let Some(t) = timing {
                held.timing = t;
            }
            held.rows.push(a);
        }
        self.release(now.unwrap_or(i64::MIN), now)
    }

    /// Applies the held evaluations up to `until`, each after the looks due
    /// before it, then looks at the groups due by the clock (`now`).
    fn release(&mut self, until: i64, now: Option<i64>) -> Vec<Payload> {
        let mut sent = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            let (at, _) = *entry.key();
            if at > until {
                break;
            }
            let ((at, rule), held) = entry.remove_entry();
            let last = self.last_at.entry(rule.clone()).or_insert(i64::MIN);
            if at <= *last {
                continue;
            }
            *last = at;
            // Looks due before this evaluation see the state before it.
            sent.extend(self.dispatcher.flush(at - 1, &self.silences));
            for u in self.lifecycle.evaluate(&rule, held.timing, at, held.rows) {
                if let Some(states) = &mut self.states {
                    states.push(u.clone());
                }
                self.dispatcher.insert(u, at);
            }
            self.clock = self.clock.max(at);
        }
        if let Some(now) = now {
            self.clock = self.clock.max(now);
        }
        sent.extend(self.dispatcher.flush(self.clock, &self.silences));
        sent
    }

    /// The alerts pending and firing now (see [`Lifecycle::active`]).
    pub fn active(&self) -> Vec<serde_json::Value> {
        self.lifecycle.active()
    }

    /// The lifecycle, groups and clocks as JSON, to restore after a
    /// restart (silences are not part of it: they live in their topic).
    pub fn snapshot(&self) -> String {
        serde_json::json!({
            "version": STATE_VERSION,
            "lifecycle": self.lifecycle,
            "groups": self.dispatcher.groups_json(),
            "last_at": self.last_at,
            "clock": self.clock,
            "pending": self.pending.iter().map(|((at, rule), h)| (at, rule, h)).collect::<Vec<_>>(),
        })
        .to_string()
    }

    /// Takes back a [`Alerter::snapshot`]; on an error nothing changed.
    pub fn restore(&mut self, json: &[u8]) -> Result<(), RestoreError> {
        #[derive(serde::Deserialize)]
        struct State {
            version: u32,
            lifecycle: Lifecycle,
            groups: serde_json::Value,
            last_at: BTreeMap<String, i64>,
            clock: i64,
            #[serde(default)]
            pending: Vec<(i64, String, Held)>,
        }
        let s: State = serde_json::from_slice(json).map_err(RestoreError::Unreadable)?;
        if s.version != STATE_VERSION {
            return Err(RestoreError::Version { found: s.version });
        }
        self.dispatcher
            .restore_groups(s.groups)
            .map_err(RestoreError::Groups)?;
        self.lifecycle = s.lifecycle;
        self.last_at = s.last_at;
        self.clock = s.clock;
        self.pending = s
            .pending
            .into_iter()
            .map(|(at, rule, mut held)| {
                for a in &mut held.rows {
                    a.window_end_ms = at;
                    a.window_start_ms =
                        telemine_types::alert::parse_ms(&a.window_start).unwrap_or(at);
                }
                ((at, rule), held)
            })
            .collect();
        Ok(())
    }

    /// End of input: sends what the groups would send once their wait is
    /// over (the first notification of new groups, resolutions).
    pub fn finish(&mut self) -> Vec<Payload> {
        let mut sent = self.release(i64::MAX, None);
        let later = self.clock.saturating_add(
            self.dispatcher
                .route
                .group_wait_ms
                .max(self.dispatcher.route.group_interval_ms),
        );
        self.clock = later;
        sent.extend(self.dispatcher.flush(later, &self.silences));
        sent
    }
}

#[cfg(test)]
pub(crate) mod tests {

    use super::dispatch::{Dispatcher, InhibitRule, Route};
    use super::lifecycle::Lifecycle;
    use super::payload::Payload;
    use super::silence::{Silence, Silences};
    use super::{Alerter, Evaluation, lifecycle};
    use telemine_types::alert::Alert;
    use telemine_types::alert::matcher::Matcher;
    use telemine_types::alert::rule::Timing;

    /// An alert of `rule` with `labels` (see [`Alert::sample`]).
    pub fn alert(rule: &str, labels: &[(&str, &str)]) -> Alert {
        Alert::sample(rule, labels)
    }

    const MIN: i64 = 60_000;

    /// The problems `docs/alertmanager-webhook-v4.schema.json` finds in
    /// `payload`.
    pub fn schema_errors(payload: &serde_json::Value) -> Vec<String> {
        let schema: serde_json::Value = serde_json::from_str(include_str!(
            "../../../docs/alertmanager-webhook-v4.schema.json"
        ))
        .expect("the schema is JSON");
        let validator = jsonschema::validator_for(&schema).expect("the schema is a JSON Schema");
        validator
            .iter_errors(payload)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }

    #[test]
    fn the_schema_accepts_payloads_and_refuses_what_receivers_could_not_read() {
        let mut d = Dispatcher::new(
            Route {
                group_by: vec!["alertname".into()],
                group_wait_ms: 0,
                group_interval_ms: MIN,
                repeat_interval_ms: 60 * MIN,
            },
            vec![],
            "telemine".into(),
            "http://telemine:9898".into(),
        );
        let mut life = Lifecycle::default();
        let t = Timing::default();
        for u in life.evaluate("Hot", t, MIN, vec![alert("Hot", &[("host", "h1")])]) {
            d.insert(u, MIN);
        }
        let firing = d.flush(MIN, &Silences::default());
        for u in life.evaluate("Hot", t, 2 * MIN, vec![]) {
            d.insert(u, 2 * MIN);
        }
        let resolved = d.flush(2 * MIN, &Silences::default());
        assert_eq!((firing.len(), resolved.len()), (1, 1));
        for p in firing.iter().chain(&resolved) {
            let v = serde_json::to_value(p).expect("payload JSON");
            assert_eq!(schema_errors(&v), Vec::<String>::new(), "{v}");
        }
        let good = serde_json::to_value(&firing[0]).expect("payload JSON");
        let broken = |path: &str, value: serde_json::Value| {
            let mut v = good.clone();
            *v.pointer_mut(path).expect("path") = value;
            schema_errors(&v)
        };
        assert!(!broken("/version", "3".into()).is_empty());
        assert!(
            !broken("/alerts/0/endsAt", "2025-11-27T00:05:00Z".into()).is_empty(),
            "a firing alert has no end"
        );
        assert!(!broken("/alerts/0/fingerprint", "xyz".into()).is_empty());
        assert!(!broken("/alerts/0/startsAt", "yesterday".into()).is_empty());
        assert!(!broken("/alerts", serde_json::json!([])).is_empty());
    }

    /// Groups wait 30 s, then are looked at every minute.
    fn waiting_config() -> crate::config::AlertingConfig {
        crate::config::AlertingConfig {
            group_wait: std::time::Duration::from_secs(30),
            group_interval: std::time::Duration::from_secs(60),
            ..Default::default()
        }
    }

    /// An evaluation of rule `Hot` at `at`.
    fn eval(at: i64) -> Evaluation {
        Evaluation {
            rule: "Hot".into(),
            timing: Timing::default(),
            at,
        }
    }

    /// `Hot`'s row for host h1 in the window ending at `at`.
    fn row(at: i64) -> Alert {
        let mut a = alert("Hot", &[("host", "h1")]);
        a.window_end_ms = at;
        a
    }

    #[test]
    fn a_restored_alerter_sends_what_was_waiting_and_looks_before_later_evaluations() {
        let config = waiting_config();
        // Fires at 2:00; its group waits until 2:30, after the watermark.
        let mut first = Alerter::new(&config);
        assert!(
            first
                .step(
                    vec![eval(2 * MIN)],
                    vec![row(2 * MIN)],
                    Some(2 * MIN + 5_000)
                )
                .is_empty()
        );
        let state = first.snapshot();

        // A restart without the state has lost the alert.
        let mut bare = Alerter::new(&config);
        assert!(
            bare.step(vec![eval(3 * MIN)], vec![], Some(3 * MIN + 5_000))
                .is_empty()
        );

        // With it, the look at 2:30 comes before the evaluation at 3:00
        // that resolves the alert: firing is sent, then resolved at 3:30.
        let mut restored = Alerter::new(&config);
        restored.restore(state.as_bytes()).expect("restore");
        let sent = restored.step(vec![eval(3 * MIN)], vec![], Some(3 * MIN + 5_000));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].alerts[0].status, lifecycle::Status::Firing);
        let sent = restored.step(vec![eval(4 * MIN)], vec![], Some(4 * MIN + 5_000));
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].status, lifecycle::Status::Resolved);
        assert_eq!(sent[0].alerts[0].ends_at, "1970-01-01T00:03:00.000Z");
        assert!(restored.restore(b"{\"version\":2}").is_err());
    }

    #[test]
    fn a_source_ahead_of_another_cannot_fire_and_resolve_unseen() {
        let config = waiting_config();
        // A fast source fires at 1:00 and resolves at 2:00 in one step,
        // while another source has no watermark yet: the clock is held,
        // and so are both evaluations.
        let mut a = Alerter::new(&config);
        let sent = a.step(vec![eval(MIN), eval(2 * MIN)], vec![row(MIN)], None);
        assert!(sent.is_empty());
        // The held evaluations survive a restart with the state.
        let mut b = Alerter::new(&config);
        b.restore(a.snapshot().as_bytes()).expect("restore");
        // The slow source catches up: the look at 1:30 comes before the
        // resolution at 2:00, so the firing is sent, then the resolution.
        let sent = b.step(vec![], vec![], Some(3 * MIN));
        let statuses: Vec<_> = sent.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [lifecycle::Status::Firing, lifecycle::Status::Resolved],
            "{sent:?}"
        );
    }

    #[test]
    fn a_jump_of_the_clock_repeats_a_firing_group_once_not_per_interval() {
        let config = crate::config::AlertingConfig {
            group_wait: std::time::Duration::from_secs(0),
            group_interval: std::time::Duration::from_secs(60),
            repeat_interval: std::time::Duration::from_secs(3600),
            ..Default::default()
        };
        let mut a = Alerter::new(&config);
        let first = a.step(vec![eval(MIN)], vec![row(MIN)], Some(MIN));
        assert_eq!(first.len(), 1);
        // 75 years of event time later (one producer's clock): before,
        // one repeat per hour of the jump, 657,000 notifications.
        let later = a.step(vec![], vec![], Some(75 * 365 * 24 * 60 * MIN));
        assert_eq!(later.len(), 1, "one repeat for the whole jump");
        assert!(a.step(vec![], vec![], Some(i64::MAX - 1)).len() <= 1);
    }

    /// One line per notification: group, status, and each alert's
    /// status and host (or alertname).
    fn line(p: &Payload, at: i64) -> String {
        let alerts: Vec<String> = p
            .alerts
            .iter()
            .map(|a| {
                let who = a.labels.get("host").unwrap_or(&a.labels["alertname"]);
                format!("{}:{:?}", who, a.status).to_lowercase()
            })
            .collect();
        format!(
            "t={} {} {:?} [{}]",
            at / MIN,
            p.group_key,
            p.status,
            alerts.join(" ")
        )
        .to_lowercase()
    }

    /// Drives two rules through the lifecycle and the dispatcher, minute by
    /// minute: `HostHot` per host (for 2m) and `DcPowerLoss` per data
    /// center (for 0), grouped by `dc`, with an inhibition rule (power loss
    /// mutes its hosts' heat) and a silence on one data center. Each mutes
    /// what it matches and nothing more: dc1 is not silenced, dc2 is not
    /// inhibited.
    #[test]
    fn notifications_follow_alertmanagers_rules() {
        let mut life = Lifecycle::default();
        let mut d = Dispatcher::new(
            Route {
                group_by: vec!["dc".into()],
                group_wait_ms: 30_000,
                group_interval_ms: 2 * MIN,
                repeat_interval_ms: 10 * MIN,
            },
            vec![InhibitRule {
                source: vec![Matcher::parse("alertname=DcPowerLoss").unwrap()],
                target: vec![Matcher::parse("alertname=HostHot").unwrap()],
                equal: vec!["dc".into()],
            }],
            "telemine.alerts".into(),
            "http://telemine:9898".into(),
        );
        let mut silences = Silences::default();
        let hot = Timing {
            for_ms: 2 * MIN,
            keep_firing_for_ms: 0,
        };
        let power = Timing::default();
        let mut sent = Vec::new();
        for minute in 1..=30 {
            let at = minute * MIN;
            // h1 (dc1) is hot from minute 1 to 14; h2 (dc1) from 3 to 20;
            // h3 (dc2) from 5 to 25; h4 (dc2) from 9 to 12, all inside a
            // silence of dc2 from minute 10 to 16; dc1 loses power from
            // minute 17 to 22.
            let mut rows = Vec::new();
            if (1..=14).contains(&minute) {
                rows.push(alert("HostHot", &[("dc", "dc1"), ("host", "h1")]));
            }
            if (3..=20).contains(&minute) {
                rows.push(alert("HostHot", &[("dc", "dc1"), ("host", "h2")]));
            }
            if (5..=25).contains(&minute) {
                rows.push(alert("HostHot", &[("dc", "dc2"), ("host", "h3")]));
            }
            if (9..=12).contains(&minute) {
                rows.push(alert("HostHot", &[("dc", "dc2"), ("host", "h4")]));
            }
            let power_rows = if (17..=22).contains(&minute) {
                vec![alert("DcPowerLoss", &[("dc", "dc1")])]
            } else {
                vec![]
            };
            if minute == 10 {
                silences.apply(
                    "s1",
                    Some(Silence::new(
                        "s1".into(),
                        vec![Matcher::parse("dc=dc2").unwrap()],
                        at,
                        16 * MIN,
                        "ops".into(),
                        "disk swap".into(),
                    )),
                );
            }
            for u in life
                .evaluate("HostHot", hot, at, rows)
                .into_iter()
                .chain(life.evaluate("DcPowerLoss", power, at, power_rows))
            {
                d.insert(u, at);
            }
            // Looks happen between evaluations too: flush up to just
            // before the next one.
            for p in d.flush(at + MIN - 1, &silences) {
                let v = serde_json::to_value(&p).expect("payload JSON");
                assert_eq!(schema_errors(&v), Vec::<String>::new(), "{v}");
                sent.push(line(&p, at));
            }
        }
        let expected = [
            // h1 fires at minute 3 (pending at 1, 2 minutes later); the
            // group waits 30 s.
            r#"t=3 {}:{dc="dc1"} firing [h1:firing]"#,
            // h2 fires at 5; the next look is at 5.5 (3.5 + 2).
            r#"t=5 {}:{dc="dc1"} firing [h1:firing h2:firing]"#,
            // h3 fires at 7 in dc2, a new group.
            r#"t=7 {}:{dc="dc2"} firing [h3:firing]"#,
            // dc2 is silenced from 10 to 16: h4 fires (11) and resolves
            // (13) unseen, and h3 is left out, so dc2 sends nothing.
            // h1 resolves at 15 (no row); the look at 15.5 sends it once.
            r#"t=15 {}:{dc="dc1"} firing [h1:resolved h2:firing]"#,
            // dc1 loses power at 17: the look at 17.5 sends the power
            // alert, and h2 is inhibited, so it is left out.
            r#"t=17 {}:{dc="dc1"} firing [dcpowerloss:firing]"#,
            // The silence ended at 16: h3 is back, as sent before, so
            // nothing is sent until the repeat interval (7.5 + 10 = 17.5).
            r#"t=17 {}:{dc="dc2"} firing [h3:firing]"#,
            // h2 resolves at 21 while inhibited: not sent. Power returns
            // at 23; sent resolved at the look at 23.5.
            r#"t=23 {}:{dc="dc1"} resolved [dcpowerloss:resolved]"#,
            // h3 resolves at 26; its group's look at 27.5 sends it.
            r#"t=27 {}:{dc="dc2"} resolved [h3:resolved]"#,
        ];
        assert_eq!(sent, expected, "\n{}", sent.join("\n"));
        assert_eq!(d.groups(), 0, "every group emptied");
        assert_eq!(life, Lifecycle::default());
    }
}
