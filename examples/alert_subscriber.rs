//! A subscriber of telemine's alerts topic: consumes the notifications
//! (Alertmanager webhook payloads, version 4) and prints one line per
//! notification — what an on-call bridge, a ticketing hook or a chat bot
//! would start from.
//!
//! ```sh
//! cargo run --example alert_subscriber -- --brokers 127.0.0.1:9092 --topic telemine.alerts
//! ```
//!
//! It joins consumer group `--group` (default `alert-subscriber`), so
//! several copies share the partitions; one group's notifications are
//! keyed by its group key and so arrive in order.

use std::time::Duration;

use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use telemine_alerting::lifecycle::Status;
use telemine_alerting::payload::Payload;

#[derive(Parser)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The alerts topic (`[sinks] alerts_topic`).
    #[arg(long, default_value = "telemine.alerts")]
    topic: String,
    /// Consumer group.
    #[arg(long, default_value = "alert-subscriber")]
    group: String,
    /// Read the topic from its beginning (a new group only).
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many notifications (default: run until killed).
    #[arg(long)]
    count: Option<usize>,
}

/// `FIRING    {}:{alertname="X"}  2 alerts: host=h1 (summary); host=h2 resolved`.
fn line(p: &Payload) -> String {
    let status = match p.status {
        Status::Firing => "FIRING  ",
        Status::Resolved => "RESOLVED",
    };
    let alerts: Vec<String> = p
        .alerts
        .iter()
        .map(|a| {
            // The labels that tell the alerts of a group apart (alone in
            // its group: all but the alert's name and severity).
            let alone = p.alerts.len() == 1;
            let own: Vec<String> = a
                .labels
                .iter()
                .filter(|(k, _)| {
                    if alone {
                        !matches!(k.as_str(), "alertname" | "severity")
                    } else {
                        !p.common_labels.contains_key(*k)
                    }
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let who = if own.is_empty() {
                a.fingerprint.clone()
            } else {
                own.join(",")
            };
            let state = if a.status == Status::Resolved {
                " resolved"
            } else {
                ""
            };
            match a.annotations.get("summary") {
                Some(s) => format!("{who}{state} ({s})"),
                None => format!("{who}{state}"),
            }
        })
        .collect();
    format!(
        "{status}  {}  {} alert{}: {}",
        p.group_key,
        p.alerts.len(),
        if p.alerts.len() == 1 { "" } else { "s" },
        alerts.join("; ")
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set(
            "auto.offset.reset",
            if args.from_beginning {
                "earliest"
            } else {
                "latest"
            },
        )
        .create()?;
    consumer.subscribe(&[&args.topic])?;
    eprintln!("reading {} as group {}", args.topic, args.group);
    let mut seen = 0;
    while args.count.is_none_or(|n| seen < n) {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(e)) => eprintln!("kafka: {e}"),
            Some(Ok(m)) => match Payload::from_json(m.payload().unwrap_or_default()) {
                Ok(p) => {
                    println!("{}", line(&p));
                    seen += 1;
                }
                Err(e) => eprintln!(
                    "partition {} offset {}: not a webhook payload: {e}",
                    m.partition(),
                    m.offset()
                ),
            },
        }
    }
    Ok(())
}
