//! Delivery of notifications to webhook receivers, as Alertmanager's
//! webhook receiver POSTs them: the same JSON as on the alerts topic.
//!
//! Each receiver has a thread and a bounded queue of its own, so a slow or
//! dead receiver never delays another, and the engine never waits for any:
//! [`Webhooks::send`] only queues. When a receiver's queue is full, its
//! oldest waiting notification is dropped and counted
//! (`webhook_queue_drops`): a group's newer notification carries its newer
//! state, so the oldest is the one worth least. Each notification is tried
//! until it is accepted or its retries are spent, with exponential backoff
//! between tries (see [`super::http`] for headers, authentication and TLS).

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::config::WebhookConfig;
use super::http::{Client, Target, wait_until};
use telemine_observe::metrics::Metrics;

/// How long [`Webhooks::finish`] lets the receivers deliver what is
/// queued; past it, what is left is dropped (and logged).
pub const FINISH_WAIT: Duration = Duration::from_secs(10);

/// The senders: queue notifications with [`Webhooks::send`]; dropping it
/// (or [`Webhooks::finish`]) lets each thread deliver what is queued (for
/// at most [`FINISH_WAIT`]), then stop.
pub struct Webhooks {
    receivers: Vec<Receiver>,
}

/// One receiver's queue and thread.
struct Receiver {
    name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
}

/// What the engine and a receiver's thread share.
#[derive(Default)]
pub(crate) struct Shared {
    inbox: Mutex<Inbox>,
    /// Signalled when a notification is queued, when the sender closes,
    /// and when the thread ends.
    changed: Condvar,
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<String>,
    cap: usize,
    /// No more notifications: deliver what is queued until `give_up_at`.
    closed: bool,
    give_up_at: Option<Instant>,
    /// The thread has ended.
    done: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        // A thread that panicked holding the lock left a queue that is
        // still whole: go on with it.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `body`, dropping the oldest waiting one when full; returns
    /// whether one was dropped.
    fn push(&self, body: String) -> bool {
        let mut inbox = self.lock();
        let dropped = inbox.queue.len() >= inbox.cap.max(1);
        if dropped {
            inbox.queue.pop_front();
        }
        inbox.queue.push_back(body);
        drop(inbox);
        self.changed.notify_all();
        dropped
    }

    /// The next notification, waiting for one; `None` once closed and
    /// empty, or past the finish deadline.
    fn next(&self) -> Option<String> {
        let mut inbox = self.lock();
        loop {
            if inbox.give_up_at.is_some_and(|d| Instant::now() >= d) {
                return None;
            }
            if let Some(body) = inbox.queue.pop_front() {
                return Some(body);
            }
            if inbox.closed {
                return None;
            }
            inbox = self.changed.wait(inbox).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn past_deadline(&self) -> bool {
        self.lock().give_up_at.is_some_and(|d| Instant::now() >= d)
    }
}

impl Webhooks {
    /// `None` when there are no receivers. A receiver whose HTTP keys
    /// cannot work (`telemine check` reports them) is left out, with an
    /// error in the log.
    pub fn start(receivers: &[WebhookConfig], metrics: Arc<Metrics>) -> Option<Webhooks> {
        if receivers.is_empty() {
            return None;
        }
        let receivers = receivers
            .iter()
            .filter_map(|r| {
                let client = match Target::webhook(r).and_then(Client::new) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(url = %super::http::redact(r.url.get_ref()), error = %e, "webhook receiver left out: fix its keys in [[alerting.webhooks]]");
                        return None;
                    }
                };
                Some(Receiver::start(client, r.queue_size, metrics.clone()))
            })
            .collect();
        Some(Webhooks { receivers })
    }

    /// Queues `json` for every receiver; never waits.
    pub fn send(&self, json: String) {
        for r in &self.receivers {
            if r.shared.push(json.clone()) {
                // Counted per drop; the receiver is named (its URL without
                // credentials) so the operator knows which one lags.
                Metrics::add(&r.metrics.webhook_queue_drops, 1);
                tracing::warn!(url = %r.name, "webhook queue full: the oldest waiting notification was dropped");
            }
        }
    }

    /// Delivers what is queued (each notification until it is accepted or
    /// its retries are spent) for at most [`FINISH_WAIT`], then stops.
    pub fn finish(self) {
        self.finish_within(FINISH_WAIT);
    }

    /// [`Webhooks::finish`] with another wait.
    pub fn finish_within(mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        for r in &self.receivers {
            let mut inbox = r.shared.lock();
            inbox.closed = true;
            inbox.give_up_at = Some(deadline);
            drop(inbox);
            r.shared.changed.notify_all();
        }
        for r in &mut self.receivers {
            let inbox = wait_until(r.shared.lock(), &r.shared.changed, deadline, |i| i.done);
            if inbox.done {
                drop(inbox);
                if let Some(t) = r.thread.take() {
                    let _ = t.join();
                }
            } else {
                // Stuck in a request: left to end on its own (it stops at
                // its next try, being past the deadline).
                tracing::warn!(url = %r.name, left = inbox.queue.len(), "webhook receiver did not take what was queued before the stop; dropped");
                drop(inbox);
                r.thread.take();
            }
        }
    }
}

impl Drop for Webhooks {
    fn drop(&mut self) {
        if self.receivers.iter().any(|r| r.thread.is_some()) {
            let receivers = std::mem::take(&mut self.receivers);
            Webhooks { receivers }.finish();
        }
    }
}

impl Receiver {
    fn start(client: Client, cap: usize, metrics: Arc<Metrics>) -> Receiver {
        let shared = Arc::new(Shared::default());
        shared.lock().cap = cap.max(1);
        let name = client.name.clone();
        let thread = {
            let shared = shared.clone();
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("telemine-webhook".into())
                .spawn(move || {
                    while let Some(body) = shared.next() {
                        let stop = || shared.past_deadline();
                        if client.post(&body, "webhook delivery", &stop) {
                            Metrics::add(&metrics.webhook_deliveries, 1);
                        } else {
                            Metrics::add(&metrics.webhook_failures, 1);
                        }
                    }
                    shared.lock().done = true;
                    shared.changed.notify_all();
                })
        };
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(url = %name, error = %e, "cannot start the webhook receiver's thread; it is left out");
                shared.lock().done = true;
                None
            }
        };
        Receiver {
            name,
            shared,
            thread,
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::http::testing;
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// A receiver on a local port that answers the given statuses in turn
    /// and hands back the bodies it got.
    fn receiver(statuses: Vec<u16>) -> (String, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let mut bodies = Vec::new();
            for status in statuses {
                let (stream, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("header");
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                bodies.push(String::from_utf8(body).expect("utf-8"));
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .expect("answer");
            }
            bodies
        });
        (url, handle)
    }

    fn config(url: &str, max_retries: u32) -> WebhookConfig {
        WebhookConfig {
            url: toml::Spanned::new(0..0, url.to_string()),
            max_retries,
            backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
            queue_size: 1000,
            headers: Default::default(),
            bearer_token: None,
            bearer_token_file: None,
            basic_auth: None,
            tls: Default::default(),
        }
    }

    impl Webhooks {
        /// What waits in each receiver's queue.
        fn queued(&self) -> Vec<Vec<String>> {
            self.receivers
                .iter()
                .map(|r| r.shared.lock().queue.iter().cloned().collect())
                .collect()
        }
    }

    #[test]
    fn headers_bearer_and_basic_auth_are_sent() {
        use crate::config::{BasicAuthConfig, Secret};
        let (bearer_url, bearer) = testing::server(vec![]);
        let (basic_url, basic) = testing::server(vec![]);
        let dir = std::env::temp_dir().join(format!("telemine-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let token_file = dir.join("token");
        std::fs::write(&token_file, "from-file\n").expect("token");
        let mut a = config(&format!("{bearer_url}/hook"), 0);
        a.bearer_token = Some(Secret("t0k3n".into()));
        a.headers
            .insert("X-Scope-OrgID".into(), Secret("team-a".into()));
        let mut b = config(&format!("{basic_url}/hook"), 0);
        b.basic_auth = Some(BasicAuthConfig {
            username: "alice".into(),
            password: Secret("s3cret".into()),
        });
        let mut c = config(&format!("{bearer_url}/file"), 0);
        c.bearer_token_file = Some(token_file);
        let metrics = Arc::new(Metrics::default());
        let w = Webhooks::start(&[a, b, c], metrics.clone()).expect("senders");
        w.send("{}".into());
        let mut got: Vec<_> = (0..2)
            .map(|_| {
                bearer
                    .recv_timeout(testing::PATIENCE)
                    .expect("bearer request")
            })
            .collect();
        got.sort_by(|x, y| x.path.cmp(&y.path));
        assert_eq!(got[0].headers["authorization"], "Bearer from-file");
        assert_eq!(got[1].path, "/hook");
        assert_eq!(got[1].headers["authorization"], "Bearer t0k3n");
        assert_eq!(got[1].headers["x-scope-orgid"], "team-a");
        assert_eq!(got[1].headers["content-type"], "application/json");
        let b = basic
            .recv_timeout(testing::PATIENCE)
            .expect("basic request");
        assert_eq!(b.headers["authorization"], "Basic YWxpY2U6czNjcmV0");
        w.finish();
        assert_eq!(Metrics::get(&metrics.webhook_deliveries), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_dead_receiver_never_delays_a_healthy_one() {
        let (dead_url, dead) = testing::dead_server();
        let (healthy_url, healthy) = testing::server(vec![]);
        let mut stuck = config(&dead_url, 0);
        stuck.timeout = Duration::from_secs(3600);
        let metrics = Arc::new(Metrics::default());
        let w =
            Webhooks::start(&[stuck, config(&healthy_url, 0)], metrics.clone()).expect("senders");
        for i in 0..5 {
            w.send(format!("n{i}"));
        }
        let bodies: Vec<String> = (0..5)
            .map(|_| {
                healthy
                    .recv_timeout(testing::PATIENCE)
                    .expect("healthy")
                    .body
            })
            .collect();
        assert_eq!(bodies, ["n0", "n1", "n2", "n3", "n4"]);
        // Meanwhile the dead one still waits on its first notification.
        dead.recv_timeout(testing::PATIENCE).expect("dead accepted");
        assert!(dead.try_recv().is_err(), "one connection, still stuck");
        assert_eq!(w.queued()[0], ["n1", "n2", "n3", "n4"]);
        // Counted once the healthy one's answers are read.
        assert!(testing::eventually(|| Metrics::get(
            &metrics.webhook_deliveries
        ) == 5));
        assert_eq!(Metrics::get(&metrics.webhook_failures), 0);
        w.finish_within(Duration::from_millis(1));
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts() {
        let (dead_url, dead) = testing::dead_server();
        let mut stuck = config(&dead_url, 0);
        stuck.timeout = Duration::from_secs(3600);
        stuck.queue_size = 2;
        let metrics = Arc::new(Metrics::default());
        let w = Webhooks::start(&[stuck], metrics.clone()).expect("sender");
        w.send("first".into());
        // The thread took it and is stuck on it.
        dead.recv_timeout(testing::PATIENCE).expect("dead accepted");
        for n in ["a", "b", "c", "d"] {
            w.send(n.into());
        }
        assert_eq!(w.queued()[0], ["c", "d"]);
        assert_eq!(Metrics::get(&metrics.webhook_queue_drops), 2);
        w.finish_within(Duration::from_millis(1));
    }

    #[test]
    fn retries_server_errors_then_delivers() {
        let (url, server) = receiver(vec![503, 500, 200]);
        let metrics = Arc::new(Metrics::default());
        let w = Webhooks::start(&[config(&url, 5)], metrics.clone()).expect("sender");
        w.send(r#"{"version":"4"}"#.into());
        w.finish();
        let bodies = server.join().expect("server");
        assert_eq!(bodies, vec![r#"{"version":"4"}"#; 3]);
        assert_eq!(Metrics::get(&metrics.webhook_deliveries), 1);
        assert_eq!(Metrics::get(&metrics.webhook_failures), 0);
    }

    #[test]
    fn a_client_error_is_not_retried_and_spent_retries_are_counted() {
        let (url, server) = receiver(vec![400, 502, 502]);
        let metrics = Arc::new(Metrics::default());
        let w = Webhooks::start(&[config(&url, 1)], metrics.clone()).expect("sender");
        w.send("a".into()); // 400: refused at once
        w.send("b".into()); // 502, 502: retries spent
        w.finish();
        assert_eq!(server.join().expect("server"), ["a", "b", "b"]);
        assert_eq!(Metrics::get(&metrics.webhook_failures), 2);
        assert_eq!(Metrics::get(&metrics.webhook_deliveries), 0);
    }
}
