//! Sends alerts to Alertmanager as Prometheus does, so teams keep their
//! Alertmanager routing, receivers and silences: a JSON array of
//! `{labels, annotations, startsAt, endsAt, generatorURL}` POSTed to
//! `URL/api/v2/alerts`, in batches of at most [`MAX_BATCH`].
//!
//! What is sent is the alerts' state from the lifecycle (firing,
//! resolved), not telemine's grouped notifications: Alertmanager groups,
//! silences and inhibits for itself, so telemine's own silences and
//! inhibition rules do not apply here.
//!
//! # Two clocks
//!
//! Alerts change state on event time (the lifecycle, see
//! [`super::lifecycle`]): that decides *what* is sent. Alertmanager reads
//! `endsAt` on its wall clock: an alert whose `endsAt` has passed is
//! resolved. So *when* to send again, and the lease `endsAt` carries, are
//! wall time:
//!
//! - An alert is sent when it starts firing, when its annotations change,
//!   and when it resolves — as soon as the engine's step says so.
//! - A firing alert is sent again every `resend_interval` of wall time
//!   (Prometheus' `resend_delay`, default 1 min) with `endsAt` = now + 4 ×
//!   `resend_interval`: a lease Alertmanager keeps it active for. The
//!   re-sends go on whatever the input does — a paused source leaves the
//!   alert's state as it was, so it still fires; should telemine stop
//!   (crash, stop, a dead Alertmanager link), Alertmanager resolves it
//!   when the lease ends. Driving re-sends by event time instead would
//!   resolve every alert whenever the input paused, and send a burst of
//!   them with stale leases when a backlog is replayed.
//! - A resolved alert is sent once (again after a failed POST, until a
//!   lease has passed: by then Alertmanager has resolved it anyway), with
//!   `endsAt` = the event time it resolved.
//! - Times are capped at the wall clock: `startsAt` and a resolved
//!   `endsAt` are never later than now (an event time ahead of the wall
//!   clock would otherwise keep a resolved alert active in Alertmanager),
//!   and `endsAt` is never before `startsAt` (Alertmanager refuses that).
//!
//! After a restart the table is empty; the restored lifecycle reports
//! every firing alert at its next evaluation, which sends it again.
//!
//! Each Alertmanager has a thread and a table of its own (alerts by
//! fingerprint, at most `queue_size`), so one that is down never delays
//! another, and the engine only updates the tables, never waiting for
//! HTTP. A table coalesces: while an Alertmanager is down (or a backlog is
//! read faster than it is sent), an alert's newer state replaces its older
//! one — Alertmanager needs only the newest — so nothing but new alerts past
//! `queue_size` is ever dropped (counted in `alertmanager_queue_drops`).
//!
//! Label and annotation names must be `[a-zA-Z_][a-zA-Z0-9_]*` for
//! Alertmanager: any other character becomes `_` (and a leading digit
//! gets a `_` before it); labels with empty values are left out, as
//! Alertmanager itself does.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::config::AlertmanagerConfig;
use super::http::{Client, Target, redact, wait_until};
use super::lifecycle::{Status, Update};
use telemine_observe::metrics::Metrics;
use telemine_types::alert::format_ms;

/// Most alerts one POST carries (Prometheus' `maxBatchSize`).
pub const MAX_BATCH: usize = 64;

/// A firing alert's lease, in resend intervals.
pub const LEASE_RESENDS: i64 = 4;

/// How long [`Alertmanagers::finish`] lets each thread send what changed
/// last.
pub const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The wall clock, in milliseconds since the epoch (a test sets its own).
pub type WallClock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's wall clock.
pub fn system_clock() -> WallClock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// What the table holds of one alert.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    generator_url: String,
    /// Event time it started firing.
    starts_at: i64,
    /// Event time it resolved.
    resolved_at: Option<i64>,
    /// Wall time it was last sent.
    last_sent: Option<i64>,
    /// Changed since it was last sent: send at once.
    dirty: bool,
    /// Wall time a resolved alert was first tried.
    first_try: Option<i64>,
}

/// One Alertmanager's alerts, by fingerprint: what to send and when (see
/// the module docs). Pure: the caller passes the wall time.
#[derive(Debug)]
pub struct Table {
    entries: BTreeMap<String, Entry>,
    cap: usize,
    resend_ms: i64,
    external_url: String,
}

impl Table {
    pub fn new(cap: usize, resend: Duration, external_url: &str) -> Table {
        Table {
            entries: BTreeMap::new(),
            cap: cap.max(1),
            resend_ms: (resend.as_millis() as i64).max(1),
            external_url: external_url.trim_end_matches('/').to_string(),
        }
    }

    /// Takes one state change from the lifecycle; `false` when it was
    /// dropped (a new alert with the table full).
    pub fn update(&mut self, u: &Update) -> bool {
        let fp = &u.alert.fingerprint;
        let resolved_at = match u.status {
            Status::Firing => None,
            Status::Resolved => Some(u.ends_at.unwrap_or(u.starts_at)),
        };
        let annotations = valid_names(&u.alert.annotations, false);
        let full = self.entries.len() >= self.cap;
        match self.entries.get_mut(fp) {
            Some(e) => {
                if e.annotations != annotations
                    || e.resolved_at != resolved_at
                    || e.starts_at != u.starts_at
                {
                    e.dirty = true;
                    e.first_try = None;
                }
                e.annotations = annotations;
                e.resolved_at = resolved_at;
                e.starts_at = u.starts_at;
                true
            }
            None if full => false,
            None => {
                self.entries.insert(
                    fp.clone(),
                    Entry {
                        labels: valid_names(&u.alert.labels, true),
                        annotations,
                        generator_url: format!("{}/rules/{}", self.external_url, u.alert.rule),
                        starts_at: u.starts_at,
                        resolved_at,
                        last_sent: None,
                        dirty: true,
                        first_try: None,
                    },
                );
                true
            }
        }
    }

    /// Alerts held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// When something is next due (wall time), if anything is held.
    pub fn next_due(&self) -> Option<i64> {
        self.entries
            .values()
            .map(|e| match (e.dirty, e.last_sent) {
                (false, Some(at)) if e.resolved_at.is_none() => at.saturating_add(self.resend_ms),
                _ => i64::MIN,
            })
            .min()
    }

    /// What is due at `now` (wall time): changed alerts, and firing ones
    /// sent a resend interval ago or more; resolved ones leave the table
    /// (see [`Table::failed`]). `only_changed` sends changes only (the
    /// last send before a stop).
    pub fn due(&mut self, now: i64, only_changed: bool) -> Vec<Sent> {
        let mut out = Vec::new();
        let lease = self.resend_ms.saturating_mul(LEASE_RESENDS);
        let resend = self.resend_ms;
        self.entries.retain(|fp, e| {
            let repeat = !only_changed
                && e.resolved_at.is_none()
                && e.last_sent
                    .is_none_or(|at| now >= at.saturating_add(resend));
            if !(e.dirty || repeat) {
                return true;
            }
            let starts = e.starts_at.min(now);
            let ends = match e.resolved_at {
                None => now.saturating_add(lease),
                Some(r) => r.min(now).max(starts),
            };
            let alert = PostableAlert {
                labels: e.labels.clone(),
                annotations: e.annotations.clone(),
                starts_at: format_ms(starts),
                ends_at: format_ms(ends),
                generator_url: e.generator_url.clone(),
            };
            e.last_sent = Some(now);
            e.dirty = false;
            let keep = e.resolved_at.is_none();
            if !keep {
                e.first_try.get_or_insert(now);
            }
            out.push(Sent {
                fingerprint: fp.clone(),
                alert,
                // Resolved: kept aside by the sender until delivered.
                resolved: (!keep).then(|| e.clone()),
            });
            keep
        });
        out
    }

    /// A POST of `sent` (as [`Table::due`] gave them) failed at `now`:
    /// resolved alerts come back to be tried again, unless the alert has
    /// changed since, or a lease has passed since the first try
    /// (Alertmanager has resolved it by then). Firing ones go with the
    /// next re-send.
    pub fn failed(&mut self, sent: Vec<Sent>, now: i64) {
        let lease = self.resend_ms.saturating_mul(LEASE_RESENDS);
        for s in sent {
            let Some(mut e) = s.resolved else { continue };
            let fresh = e.first_try.is_none_or(|t| now < t.saturating_add(lease));
            if fresh && !self.entries.contains_key(&s.fingerprint) {
                e.dirty = true;
                self.entries.insert(s.fingerprint, e);
            }
        }
    }
}

/// One alert [`Table::due`] gave to send.
#[derive(Debug, Clone)]
pub struct Sent {
    pub fingerprint: String,
    pub alert: PostableAlert,
    /// A resolved alert's entry, which left the table: put back by
    /// [`Table::failed`] if the POST fails.
    resolved: Option<Entry>,
}

/// `map` with names Alertmanager takes (`[a-zA-Z_][a-zA-Z0-9_]*`);
/// `drop_empty`: values that are empty are left out (labels).
fn valid_names(map: &BTreeMap<String, String>, drop_empty: bool) -> BTreeMap<String, String> {
    map.iter()
        .filter(|(_, v)| !(drop_empty && v.is_empty()))
        .map(|(k, v)| (valid_name(k), v.clone()))
        .collect()
}

/// A label name Alertmanager takes: other characters become `_`, a
/// leading digit (or nothing) gets a `_` before it.
pub fn valid_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The senders, one per `[[alerting.alertmanagers]]`: hand them the
/// lifecycle's state changes with [`Alertmanagers::update`]; dropping them
/// (or [`Alertmanagers::finish`]) sends what changed last, then stops.
pub struct Alertmanagers {
    senders: Vec<Sender>,
}

/// One Alertmanager's table and thread.
struct Sender {
    name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the table changes, when closing, and when the
    /// thread ends.
    changed: Condvar,
}

struct State {
    table: Table,
    closed: bool,
    done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Alertmanagers {
    /// `None` when there are none. One whose HTTP keys cannot work
    /// (`telemine check` reports them) is left out, with an error in the
    /// log.
    pub fn start(
        configs: &[AlertmanagerConfig],
        external_url: &str,
        metrics: Arc<Metrics>,
        clock: WallClock,
    ) -> Option<Alertmanagers> {
        if configs.is_empty() {
            return None;
        }
        let senders = configs
            .iter()
            .filter_map(|c| {
                match Target::alertmanager(c).and_then(Client::new) {
                    Ok(client) => Some(Sender::start(
                        client,
                        Table::new(c.queue_size, c.resend_interval, external_url),
                        metrics.clone(),
                        clock.clone(),
                    )),
                    Err(e) => {
                        tracing::error!(url = %redact(c.url.get_ref()), error = %e, "Alertmanager left out: fix its keys in [[alerting.alertmanagers]]");
                        None
                    }
                }
            })
            .collect();
        Some(Alertmanagers { senders })
    }

    /// Takes the lifecycle's state changes of one step; never waits for
    /// HTTP.
    pub fn update(&self, updates: &[Update]) {
        if updates.is_empty() {
            return;
        }
        for s in &self.senders {
            let mut state = s.shared.lock();
            let dropped = updates.iter().filter(|u| !state.table.update(u)).count();
            drop(state);
            s.shared.changed.notify_all();
            if dropped > 0 {
                Metrics::add(&s.metrics.alertmanager_queue_drops, dropped as u64);
                tracing::warn!(url = %s.name, dropped, "Alertmanager's table is full (queue_size): new alerts dropped");
            }
        }
    }

    /// Forgets every alert held (the alerting moved to another instance,
    /// which sends them from now on).
    pub fn forget(&self) {
        for s in &self.senders {
            s.shared.lock().table.entries.clear();
        }
    }

    /// Alerts held for each Alertmanager, in config order (tests, logs).
    pub fn held(&self) -> Vec<usize> {
        self.senders
            .iter()
            .map(|s| s.shared.lock().table.len())
            .collect()
    }

    /// Sends what changed since the last send (not the re-sends) for at
    /// most [`FINISH_WAIT`], then stops. Firing alerts stay active in
    /// Alertmanager until their lease ends, unless the next run sends
    /// them again.
    pub fn finish(self) {
        self.finish_within(FINISH_WAIT);
    }

    /// [`Alertmanagers::finish`] with another wait.
    pub fn finish_within(mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        for s in &self.senders {
            s.shared.lock().closed = true;
            s.shared.changed.notify_all();
        }
        for s in &mut self.senders {
            let state = wait_until(s.shared.lock(), &s.shared.changed, deadline, |st| st.done);
            if state.done {
                drop(state);
                if let Some(t) = s.thread.take() {
                    let _ = t.join();
                }
            } else {
                tracing::warn!(url = %s.name, "Alertmanager did not take the last changes before the stop; its alerts end with their leases");
                s.thread.take();
            }
        }
    }
}

impl Drop for Alertmanagers {
    fn drop(&mut self) {
        if self.senders.iter().any(|s| s.thread.is_some()) {
            let senders = std::mem::take(&mut self.senders);
            Alertmanagers { senders }.finish();
        }
    }
}

impl Sender {
    fn start(client: Client, table: Table, metrics: Arc<Metrics>, clock: WallClock) -> Sender {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                table,
                closed: false,
                done: false,
            }),
            changed: Condvar::new(),
        });
        let name = client.name.clone();
        let thread = {
            let shared = shared.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("telemine-alertmanager".into())
                .spawn(move || {
                    run(&client, &shared, &metrics, &clock);
                    shared.lock().done = true;
                    shared.changed.notify_all();
                })
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(url = %name, error = %e, "cannot start the Alertmanager's thread; it is left out");
                shared.lock().done = true;
                None
            }
        };
        Sender {
            name,
            shared,
            thread,
            metrics,
        }
    }
}

/// One Alertmanager's thread: waits until something is due, sends it,
/// puts back resolved alerts a failed POST carried.
fn run(client: &Client, shared: &Shared, metrics: &Metrics, clock: &WallClock) {
    loop {
        let (batch, last) = {
            let mut state = shared.lock();
            loop {
                let now = clock();
                if state.closed {
                    break (state.table.due(now, true), true);
                }
                match state.table.next_due() {
                    Some(at) if at <= now => {
                        break (state.table.due(now, false), false);
                    }
                    next => {
                        // Woken early by a change; at most a minute
                        // between looks whatever the clock does.
                        let wait = next
                            .map(|at| Duration::from_millis((at - now).clamp(1, 60_000) as u64))
                            .unwrap_or(Duration::from_secs(60));
                        state = shared
                            .changed
                            .wait_timeout(state, wait)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                }
            }
        };
        let stop = || last;
        let mut failed: Vec<Sent> = Vec::new();
        for chunk in batch.chunks(MAX_BATCH) {
            let alerts: Vec<&PostableAlert> = chunk.iter().map(|s| &s.alert).collect();
            let body = match serde_json::to_string(&alerts) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot write alerts as JSON (a bug in telemine)");
                    continue;
                }
            };
            if client.post(&body, "sending alerts to Alertmanager", &stop) {
                Metrics::add(&metrics.alertmanager_deliveries, 1);
            } else {
                Metrics::add(&metrics.alertmanager_failures, 1);
                failed.extend(chunk.iter().cloned());
            }
        }
        if !failed.is_empty() && !last {
            let now = clock();
            shared.lock().table.failed(failed, now);
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::testing;
    use super::*;
    use crate::tests::alert;
    use telemine_types::alert::parse_ms;

    const MIN: i64 = 60_000;
    /// A wall time: 2026-01-01T00:00:00Z.
    const WALL: i64 = 1_767_225_600_000;

    fn firing(host: &str, starts_at: i64) -> Update {
        Update {
            alert: alert("Hot", &[("host", host)]),
            status: Status::Firing,
            starts_at,
            ends_at: None,
        }
    }

    fn resolved(host: &str, starts_at: i64, ends_at: i64) -> Update {
        Update {
            status: Status::Resolved,
            ends_at: Some(ends_at),
            ..firing(host, starts_at)
        }
    }

    fn ends(sent: &[Sent]) -> Vec<i64> {
        sent.iter()
            .map(|s| parse_ms(&s.alert.ends_at).expect("RFC 3339"))
            .collect()
    }

    #[test]
    fn firing_alerts_are_sent_again_before_their_lease_ends_and_resolved_ones_once() {
        let mut t = Table::new(100, Duration::from_secs(60), "http://telemine:9898/");
        // Fired at event time WALL - 10 min; seen at wall time WALL.
        assert!(t.update(&firing("h1", WALL - 10 * MIN)));
        let first = t.due(WALL, false);
        assert_eq!(first.len(), 1);
        let a = &first[0].alert;
        assert_eq!(a.labels["alertname"], "Hot");
        assert_eq!(a.labels["host"], "h1");
        assert_eq!(a.starts_at, format_ms(WALL - 10 * MIN));
        assert_eq!(ends(&first), [WALL + 4 * MIN], "a lease of 4 resends");
        assert_eq!(a.generator_url, "http://telemine:9898/rules/Hot");
        // Every evaluation reports it firing again: nothing new to send.
        assert!(t.update(&firing("h1", WALL - 10 * MIN)));
        assert!(t.due(WALL + 30_000, false).is_empty());
        assert_eq!(t.next_due(), Some(WALL + MIN));
        // A resend interval later it goes again, its lease pushed on,
        // long before the first lease ends.
        let again = t.due(WALL + MIN, false);
        assert_eq!(ends(&again), [WALL + 5 * MIN]);
        assert!(
            WALL + MIN < ends(&first)[0],
            "re-sent before the first lease ends"
        );
        // Resolved at event time WALL + 90 s: sent at once, with that end,
        // then forgotten.
        assert!(t.update(&resolved("h1", WALL - 10 * MIN, WALL + 90_000)));
        assert_eq!(t.next_due(), Some(i64::MIN), "due at once");
        let r = t.due(WALL + 91_000, false);
        assert_eq!(ends(&r), [WALL + 90_000]);
        assert!(t.is_empty());
        assert!(t.due(WALL + 10 * MIN, false).is_empty(), "sent once");
    }

    #[test]
    fn times_are_capped_at_the_wall_clock() {
        let mut t = Table::new(100, Duration::from_secs(60), "http://t");
        // Event time an hour ahead of the wall clock (a producer's clock).
        t.update(&resolved("h1", WALL + 60 * MIN, WALL + 61 * MIN));
        let sent = t.due(WALL, false);
        assert_eq!(sent[0].alert.starts_at, format_ms(WALL));
        assert_eq!(ends(&sent), [WALL], "resolved now, not in an hour");
        // A replay of old data: a resolved alert's end is its own time.
        t.update(&resolved("h2", WALL - 60 * MIN, WALL - 59 * MIN));
        assert_eq!(ends(&t.due(WALL, false)), [WALL - 59 * MIN]);
    }

    #[test]
    fn a_failed_resolve_is_tried_again_until_a_lease_has_passed() {
        let mut t = Table::new(100, Duration::from_secs(60), "http://t");
        t.update(&resolved("h1", WALL - MIN, WALL));
        let sent = t.due(WALL, false);
        assert_eq!(sent.len(), 1);
        assert!(t.is_empty());
        t.failed(sent, WALL + 1_000);
        let again = t.due(WALL + 1_000, false);
        assert_eq!(again.len(), 1, "tried again");
        t.failed(again, WALL + 4 * MIN);
        assert!(
            t.is_empty(),
            "a lease after the first try Alertmanager has resolved it"
        );
        // A firing alert's failed send is not put back: it goes again
        // with the next re-send.
        t.update(&firing("h2", WALL));
        let sent = t.due(WALL, false);
        t.failed(sent, WALL);
        assert!(t.due(WALL + 1, false).is_empty());
        assert_eq!(t.due(WALL + MIN, false).len(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_names_are_made_valid() {
        let mut t = Table::new(2, Duration::from_secs(60), "http://t");
        assert!(t.update(&firing("h1", WALL)));
        assert!(t.update(&firing("h2", WALL)));
        assert!(
            !t.update(&firing("h3", WALL)),
            "full: a new alert is dropped"
        );
        assert!(
            t.update(&resolved("h1", WALL, WALL)),
            "held ones still change"
        );
        assert_eq!(t.len(), 2);
        assert_eq!(valid_name("rack-id"), "rack_id");
        assert_eq!(valid_name("9lives"), "_9lives");
        assert_eq!(valid_name(""), "_");
        assert_eq!(valid_name("dc.zone/ü"), "dc_zone__");
        let mut u = firing("h1", WALL);
        u.alert.labels.insert("rack-id".into(), "r7".into());
        u.alert.labels.insert("empty".into(), String::new());
        u.alert.fingerprint = "other".into();
        let mut t = Table::new(2, Duration::from_secs(60), "http://t");
        t.update(&u);
        let sent = t.due(WALL, false);
        assert_eq!(
            sent[0].alert.labels.get("rack_id").map(String::as_str),
            Some("r7")
        );
        assert!(!sent[0].alert.labels.contains_key("empty"));
    }

    fn config(url: &str) -> AlertmanagerConfig {
        AlertmanagerConfig {
            url: toml::Spanned::new(0..0, url.to_string()),
            resend_interval: Duration::from_secs(60),
            queue_size: 100,
            max_retries: 0,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            headers: Default::default(),
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            tls: Default::default(),
        }
    }

    /// A wall clock standing still at `WALL`.
    fn still() -> WallClock {
        Arc::new(|| WALL)
    }

    fn alerts(body: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(body).expect("a JSON array")
    }

    #[test]
    fn posts_prometheus_shaped_alerts_with_auth_to_api_v2_alerts() {
        let (base, server) = testing::server(vec![]);
        let mut c = config(&format!("{base}/"));
        c.bearer_token = Some(crate::config::Secret("t0k3n".into()));
        let metrics = Arc::new(Metrics::default());
        let am = Alertmanagers::start(&[c], "http://telemine:9898", metrics.clone(), still())
            .expect("sender");
        let mut u = firing("h1", WALL - MIN);
        u.alert
            .annotations
            .insert("runbook-url".into(), "http://wiki/hot".into());
        am.update(&[u]);
        let r = server.recv_timeout(testing::PATIENCE).expect("a POST");
        assert_eq!(r.path, "/api/v2/alerts");
        assert_eq!(r.headers["authorization"], "Bearer t0k3n");
        assert_eq!(r.headers["content-type"], "application/json");
        let sent = alerts(&r.body);
        assert_eq!(sent.len(), 1);
        let a = sent[0].as_object().expect("an object");
        let keys: Vec<&str> = a.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "annotations",
                "endsAt",
                "generatorURL",
                "labels",
                "startsAt"
            ]
        );
        assert_eq!(a["labels"]["alertname"], "Hot");
        assert_eq!(a["labels"]["host"], "h1");
        assert_eq!(a["labels"]["severity"], "warning");
        assert_eq!(a["annotations"]["runbook_url"], "http://wiki/hot");
        assert_eq!(a["startsAt"], format_ms(WALL - MIN));
        assert_eq!(a["endsAt"], format_ms(WALL + 4 * MIN));
        assert_eq!(a["generatorURL"], "http://telemine:9898/rules/Hot");
        // Resolved: sent at once, with its end.
        am.update(&[resolved("h1", WALL - MIN, WALL - 1_000)]);
        let r = server.recv_timeout(testing::PATIENCE).expect("a POST");
        assert_eq!(alerts(&r.body)[0]["endsAt"], format_ms(WALL - 1_000));
        am.finish();
        assert_eq!(Metrics::get(&metrics.alertmanager_deliveries), 2);
    }

    #[test]
    fn firing_alerts_are_re_sent_on_the_wall_clock_until_resolved() {
        let (base, server) = testing::server(vec![]);
        let mut c = config(&base);
        c.resend_interval = Duration::from_millis(20);
        let metrics = Arc::new(Metrics::default());
        let am = Alertmanagers::start(&[c], "http://t", metrics, system_clock()).expect("sender");
        am.update(&[firing("h1", WALL)]);
        // Re-sent with no further update from the engine, each time with
        // a lease pushed on.
        let leases: Vec<i64> = (0..3)
            .map(|_| {
                let r = server.recv_timeout(testing::PATIENCE).expect("a POST");
                let a = &alerts(&r.body)[0];
                assert_eq!(a["startsAt"], format_ms(WALL));
                parse_ms(a["endsAt"].as_str().expect("endsAt")).expect("RFC 3339")
            })
            .collect();
        assert!(leases.windows(2).all(|w| w[0] <= w[1]), "{leases:?}");
        am.update(&[resolved("h1", WALL, WALL + 1_000)]);
        // Re-sends already under way may come first; then the resolution.
        let ends = loop {
            let r = server.recv_timeout(testing::PATIENCE).expect("a POST");
            let a = &alerts(&r.body)[0];
            if a["endsAt"] == format_ms(WALL + 1_000) {
                break a.clone();
            }
        };
        assert_eq!(ends["labels"]["host"], "h1");
        assert_eq!(am.held(), [0], "resolved and sent: forgotten");
        am.finish();
    }

    #[test]
    fn a_dead_alertmanager_never_delays_a_healthy_one() {
        let (dead_base, dead) = testing::dead_server();
        let (base, healthy) = testing::server(vec![]);
        let mut stuck = config(&dead_base);
        stuck.timeout = Duration::from_secs(3600);
        let metrics = Arc::new(Metrics::default());
        let am = Alertmanagers::start(&[stuck, config(&base)], "http://t", metrics, still())
            .expect("senders");
        for i in 0..5 {
            am.update(&[firing(&format!("h{i}"), WALL)]);
            // Each alert reaches the healthy one while the dead one is
            // still stuck on its first POST.
            let r = healthy.recv_timeout(testing::PATIENCE).expect("healthy");
            let hosts: Vec<String> = alerts(&r.body)
                .iter()
                .map(|a| a["labels"]["host"].as_str().unwrap_or("").to_string())
                .collect();
            assert!(hosts.contains(&format!("h{i}")), "{hosts:?}");
        }
        dead.recv_timeout(testing::PATIENCE).expect("dead accepted");
        assert!(dead.try_recv().is_err(), "one connection, still stuck");
        // The dead one's table keeps the newest state of every alert.
        assert_eq!(am.held(), [5, 5]);
        am.finish_within(Duration::from_millis(1));
    }
}
