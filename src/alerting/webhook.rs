//! Delivery of notifications to webhook receivers, as Alertmanager's
//! webhook receiver POSTs them: the same JSON as on the alerts topic. A
//! thread of its own does the HTTP, so a slow receiver never holds up the
//! stream; each notification is tried until it is accepted or its retries
//! are spent, with exponential backoff between tries.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::WebhookConfig;
use crate::metrics::Metrics;

/// What one try of a POST came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Delivered,
    /// Worth another try: connection error, timeout, 429, 5xx.
    Retry(String),
    /// Not worth another: other 4xx.
    Refused(String),
}

/// The sender: queue notifications with [`Webhooks::send`]; dropping it
/// (or [`Webhooks::finish`]) lets the thread deliver what is queued, then
/// stop.
pub struct Webhooks {
    tx: Option<mpsc::Sender<String>>,
    thread: Option<JoinHandle<()>>,
}

impl Webhooks {
    /// `None` when there are no receivers.
    pub fn start(receivers: &[WebhookConfig], metrics: Arc<Metrics>) -> Option<Webhooks> {
        if receivers.is_empty() {
            return None;
        }
        let receivers = receivers.to_vec();
        let (tx, rx) = mpsc::channel::<String>();
        let thread = std::thread::spawn(move || {
            // One HTTP agent per receiver, kept for its connections.
            let agents: Vec<ureq::Agent> = receivers
                .iter()
                .map(|r| {
                    ureq::Agent::config_builder()
                        .timeout_global(Some(r.timeout))
                        .http_status_as_error(false)
                        .build()
                        .into()
                })
                .collect();
            for body in rx {
                for (r, agent) in receivers.iter().zip(&agents) {
                    deliver(r, agent, &body, &metrics);
                }
            }
        });
        Some(Webhooks {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn send(&self, json: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(json);
        }
    }

    /// Delivers what is queued (each notification until it is accepted or
    /// its retries are spent), then stops.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn deliver(r: &WebhookConfig, agent: &ureq::Agent, body: &str, metrics: &Metrics) {
    let url = r.url.get_ref();
    let mut wait = r.backoff;
    for attempt in 0..=r.max_retries {
        let outcome = match agent
            .post(url)
            .header("content-type", "application/json")
            .send(body)
        {
            Ok(resp) => classify(resp.status().as_u16()),
            Err(e) => Outcome::Retry(e.to_string()),
        };
        match outcome {
            Outcome::Delivered => {
                Metrics::add(&metrics.webhook_deliveries, 1);
                return;
            }
            Outcome::Refused(why) => {
                Metrics::add(&metrics.webhook_failures, 1);
                tracing::error!(%url, %why, "webhook receiver refused a notification; not retried");
                return;
            }
            Outcome::Retry(why) if attempt < r.max_retries => {
                tracing::warn!(%url, %why, attempt = attempt + 1, retry_in = ?wait, "webhook delivery failed; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(60));
            }
            Outcome::Retry(why) => {
                Metrics::add(&metrics.webhook_failures, 1);
                tracing::error!(%url, %why, tries = attempt + 1, "webhook delivery failed; notification dropped for this receiver");
            }
        }
    }
}

fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        429 | 500..=599 => Outcome::Retry(format!("HTTP {status}")),
        _ => Outcome::Refused(format!("HTTP {status}")),
    }
}

#[cfg(test)]
mod tests {
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
        }
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
