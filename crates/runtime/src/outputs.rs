//! What the Kafka pipeline produces, on one producer whose deliveries the
//! next offset commit settles first.
//!
//! - [`Outputs`]: what every instance's input side produces — rule rows
//!   (`sinks.rows_topic`), late rows and dead letters (with their origin
//!   in headers), the alerting relay's messages and the repartitioned
//!   rows — and the alerting owner's rule rows too.
//! - [`Notifier`]: the alerting owner's [`Outputs`] with what only it
//!   does: notifications to the alerts topic, the webhooks and a test's
//!   tap, and the alerts' state to the Alertmanagers.
//!
//! Everything fits `sinks.max_message_bytes`: notifications are split, a
//! record taken out of the stream is cut with its size and digest in
//! headers. Both take [`OutputSettings`], resolved from the config once.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{Int32Type, Int64Type};
use datafusion::arrow::json::LineDelimitedWriter;
use telemine_codec::decode::DeadLetter;
use telemine_codec::schema::{OFFSET_COLUMN, PARTITION_COLUMN};
use telemine_connectors::ConnectorError;
use telemine_connectors::kafka::KafkaProducer;
use tokio::sync::mpsc;

use super::error::PipelineError;
use crate::settings::{Settings, SinkSettings};
use telemine_alerting::alertmanager::{self, Alertmanagers};
use telemine_alerting::config::AlertingConfig;
use telemine_alerting::lifecycle::Update;
use telemine_alerting::payload::Payload;
use telemine_alerting::webhook::Webhooks;
use telemine_observe::metrics::Metrics;
use telemine_stream::windows::LateRows;
use telemine_types::alert::Alert;
use telemine_types::error::EngineError;

/// Longest reason header a dead letter carries, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// Where the outputs go and how large a message may be: the `[sinks]`
/// settings, and the `[kafka]` and `[alerting]` keys the outputs read.
#[derive(Debug, Clone)]
pub(crate) struct OutputSettings {
    pub(crate) sinks: SinkSettings,
    /// The relay messages' key (`kafka.instance_id`).
    pub(crate) relay_key: String,
    /// Most alerts one notification carries (`alerting.max_alerts`).
    pub(crate) max_alerts: usize,
}

impl OutputSettings {
    pub(crate) fn of(settings: &Settings) -> OutputSettings {
        OutputSettings {
            sinks: settings.sinks.clone(),
            relay_key: settings.kafka.instance_id.clone(),
            max_alerts: settings.alerting.max_alerts,
        }
    }
}

/// See the module docs.
pub(crate) struct Outputs {
    settings: OutputSettings,
    /// Also what the state store produces with (see `StateStore`).
    pub(crate) producer: KafkaProducer,
    metrics: Arc<Metrics>,
}

/// The alerting owner's outputs: [`Outputs`] and the notifications.
pub(crate) struct Notifier {
    pub(crate) out: Outputs,
    /// Receives every notification as it is produced (tests).
    tap: Option<mpsc::UnboundedSender<Payload>>,
    /// `[[alerting.webhooks]]`: the same payloads, POSTed.
    pub(crate) webhooks: Option<Webhooks>,
    /// `[[alerting.alertmanagers]]`: the alerts' state (firing, resolved),
    /// as Prometheus sends it.
    pub(crate) alertmanagers: Option<Alertmanagers>,
}

impl Notifier {
    /// Starts the webhook and Alertmanager senders of `alerting`.
    pub(crate) fn new(
        out: Outputs,
        alerting: &AlertingConfig,
        tap: Option<mpsc::UnboundedSender<Payload>>,
    ) -> Notifier {
        let metrics = out.metrics.clone();
        Notifier {
            webhooks: Webhooks::start(&alerting.webhooks, metrics.clone()),
            alertmanagers: Alertmanagers::start(
                &alerting.alertmanagers,
                &alerting.external_url,
                metrics,
                alertmanager::system_clock(),
            ),
            out,
            tap,
        }
    }

    /// Produces notifications to the alerts topic, keyed by group key so
    /// one group's updates stay in order on one partition; hands them to
    /// the webhooks and the tap.
    pub(crate) async fn notify(&mut self, payloads: Vec<Payload>) -> Result<(), ConnectorError> {
        let (max_alerts, max_bytes) = (
            self.out.settings.max_alerts,
            self.out.settings.sinks.max_payload_bytes,
        );
        for p in payloads
            .into_iter()
            .flat_map(|p| p.split(max_alerts, max_bytes))
        {
            if p.truncated_alerts > 0 {
                Metrics::add(&self.out.metrics.notifications_truncated, 1);
            }
            let json = p.to_json();
            let out = &mut self.out;
            send_json(
                &mut out.producer,
                &out.settings.sinks.alerts_topic,
                &p.group_key,
                &json,
            )
            .await?;
            Metrics::add(&self.out.metrics.notifications, 1);
            if let Some(w) = &self.webhooks {
                w.send(json.clone());
            }
            if let Some(tap) = &self.tap {
                let _ = tap.send(p);
            }
        }
        Ok(())
    }

    /// Hands the alerts' state changes of a step to the Alertmanagers
    /// (never waits for them).
    pub(crate) fn alert_states(&self, states: Vec<Update>) {
        if let Some(a) = &self.alertmanagers {
            a.update(&states);
        }
    }

    /// This instance no longer runs the alerting: the Alertmanagers stop
    /// re-sending what it knew (their leases end them unless the new owner
    /// sends them).
    pub(crate) fn forget_alert_states(&self) {
        if let Some(a) = &self.alertmanagers {
            a.forget();
        }
    }
}

impl Outputs {
    pub(crate) fn new(
        settings: OutputSettings,
        producer: KafkaProducer,
        metrics: Arc<Metrics>,
    ) -> Outputs {
        Outputs {
            settings,
            producer,
            metrics,
        }
    }

    /// Produces messages of the alerting relay (see `relay.rs`).
    pub(crate) async fn relay(
        &mut self,
        topic: &str,
        messages: Vec<Vec<u8>>,
    ) -> Result<(), ConnectorError> {
        for m in messages {
            self.producer
                .send(topic, Some(self.settings.relay_key.as_bytes()), &m, &[])
                .await?;
        }
        Ok(())
    }

    /// Produces rows and marks to the repartition topics (see
    /// `repartition.rs`).
    pub(crate) async fn repartition(
        &mut self,
        messages: Vec<telemine_stream::repartition::Message>,
    ) -> Result<(), ConnectorError> {
        Metrics::add(&self.metrics.repartition_messages, messages.len() as u64);
        for m in messages {
            self.producer
                .send_to(&m.topic, Some(m.partition), None, &m.payload, &[])
                .await?;
        }
        Ok(())
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Waits until the broker has acknowledged everything produced since
    /// the last settle; messages it refused for what they are are counted
    /// in `messages_refused`.
    pub(crate) async fn settle(&mut self) -> Result<(), ConnectorError> {
        let refused = self
            .producer
            .settle("alerts, dead letters and state")
            .await?;
        Metrics::add(&self.metrics.messages_refused, refused);
        Ok(())
    }

    /// Rule rows to `sinks.rows_topic`, when one is set, keyed by
    /// fingerprint.
    pub(crate) async fn rule_rows(&mut self, rows: &[Alert]) -> Result<(), ConnectorError> {
        if let Some(topic) = &self.settings.sinks.rows_topic {
            for a in rows {
                send_json(&mut self.producer, topic, &a.fingerprint, &a.to_json()).await?;
            }
        }
        Ok(())
    }

    /// Produces late rows as JSON, one message each, with their lateness and
    /// origin (`topic`, their partition and offset) in headers.
    pub(crate) async fn late(&mut self, topic: &str, late: LateRows) -> Result<(), PipelineError> {
        let rows = &late.rows;
        let schema = rows.schema();
        let (Ok(pi), Ok(oi)) = (
            schema.index_of(PARTITION_COLUMN),
            schema.index_of(OFFSET_COLUMN),
        ) else {
            return Err(EngineError::Internal("late rows lack _partition/_offset".into()).into());
        };
        let parts = rows.column(pi).as_primitive::<Int32Type>().clone();
        let offs = rows.column(oi).as_primitive::<Int64Type>().clone();
        let data: Vec<usize> = (0..schema.fields().len())
            .filter(|&i| i != pi && i != oi)
            .collect();
        let payload = rows
            .project(&data)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let mut json = Vec::new();
        {
            let mut writer = LineDelimitedWriter::new(&mut json);
            writer
                .write(&payload)
                .map_err(|e| EngineError::Internal(e.to_string()))?;
            writer
                .finish()
                .map_err(|e| EngineError::Internal(e.to_string()))?;
        }
        for (i, line) in json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let lateness = late
                .lateness_ms
                .get(i)
                .copied()
                .unwrap_or_default()
                .to_string();
            let origin = (topic, parts.value(i), offs.value(i));
            self.send_with_origin(
                Aside::Late,
                line,
                ("telemine.lateness_ms", &lateness),
                origin,
            )
            .await?;
        }
        Ok(())
    }

    /// Produces a record of `topic` that could not be decoded to the
    /// dead-letter topic, with its reason and origin.
    pub(crate) async fn dead_letter(
        &mut self,
        topic: &str,
        d: DeadLetter,
    ) -> Result<(), ConnectorError> {
        Metrics::add(&self.metrics.dead_letters, 1);
        tracing::debug!(topic, partition = d.partition, offset = d.offset, reason = %d.reason, "dead letter");
        let origin = (topic, d.partition, d.offset);
        let reason = d.reason.to_string();
        self.send_with_origin(
            Aside::DeadLetter,
            &d.payload,
            ("telemine.error", &reason),
            origin,
        )
        .await
    }

    /// Produces a record taken out of the stream (dead letter, late row) to
    /// the topic for `to`, with one header saying why and three saying where
    /// it came from: `telemine.source.topic`, `.partition`, `.offset`.
    async fn send_with_origin(
        &mut self,
        to: Aside,
        payload: &[u8],
        (why, reason): (&str, &str),
        (topic, partition, offset): (&str, i32, i64),
    ) -> Result<(), ConnectorError> {
        let partition = partition.to_string();
        let offset = offset.to_string();
        let reason = telemine_types::alert::cut(reason.to_string(), MAX_REASON_BYTES);
        let mut headers: Vec<(&str, &[u8])> = vec![
            (why, reason.as_bytes()),
            ("telemine.source.topic", topic.as_bytes()),
            ("telemine.source.partition", partition.as_bytes()),
            ("telemine.source.offset", offset.as_bytes()),
        ];
        // A record too large for the topic is cut to fit; its size and
        // digest say what it was.
        let cap = self.settings.sinks.max_payload_bytes;
        let (size, digest);
        let body = if payload.len() > cap {
            size = payload.len().to_string();
            digest = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(payload));
            headers.push(("telemine.original_size", size.as_bytes()));
            headers.push(("telemine.original_xxh3", digest.as_bytes()));
            Metrics::add(&self.metrics.messages_cut, 1);
            &payload[..cap]
        } else {
            payload
        };
        let to = match to {
            Aside::Late => &self.settings.sinks.late_topic,
            Aside::DeadLetter => &self.settings.sinks.dead_letter_topic,
        };
        self.producer.send(to, None, body, &headers).await
    }
}

/// Where a record taken out of the stream goes.
#[derive(Debug, Clone, Copy)]
enum Aside {
    /// `sinks.late_topic`.
    Late,
    /// `sinks.dead_letter_topic`.
    DeadLetter,
}

/// Produces one JSON message.
async fn send_json(
    producer: &mut KafkaProducer,
    topic: &str,
    key: &str,
    json: &str,
) -> Result<(), ConnectorError> {
    producer
        .send(
            topic,
            Some(key.as_bytes()),
            json.as_bytes(),
            &[("content-type", b"application/json")],
        )
        .await
}
