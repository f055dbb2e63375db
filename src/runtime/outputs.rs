//! What the Kafka pipeline produces, on one producer whose deliveries the
//! next offset commit settles first: notifications (to the alerts topic,
//! the webhooks and a test's tap; the alerts' state to the Alertmanagers), rule rows (`sinks.rows_topic`), late
//! rows and dead letters (with their origin in headers). Everything fits
//! `sinks.max_message_bytes`: notifications are split, a record taken out
//! of the stream is cut with its size and digest in headers.

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
use crate::config::Config;
use telemine_alerting::alertmanager::{self, Alertmanagers};
use telemine_alerting::lifecycle::Update;
use telemine_alerting::payload::Payload;
use telemine_alerting::webhook::Webhooks;
use telemine_observe::metrics::Metrics;
use telemine_stream::windows::LateRows;
use telemine_types::alert::Alert;
use telemine_types::error::EngineError;

/// Longest reason header a dead letter carries, in bytes.
const MAX_REASON_BYTES: usize = 1024;

/// See the module docs.
pub(crate) struct Outputs<'a> {
    config: &'a Config,
    /// Also what the state store produces with (see `StateStore`).
    pub(crate) producer: KafkaProducer,
    metrics: Arc<Metrics>,
    /// Receives every notification as it is produced (tests).
    tap: Option<mpsc::UnboundedSender<Payload>>,
    /// `[[alerting.webhooks]]`: the same payloads, POSTed.
    pub(crate) webhooks: Option<Webhooks>,
    /// `[[alerting.alertmanagers]]`: the alerts' state (firing, resolved),
    /// as Prometheus sends it.
    pub(crate) alertmanagers: Option<Alertmanagers>,
}

impl<'a> Outputs<'a> {
    pub(crate) fn new(
        config: &'a Config,
        producer: KafkaProducer,
        metrics: Arc<Metrics>,
        tap: Option<mpsc::UnboundedSender<Payload>>,
    ) -> Outputs<'a> {
        let webhooks = Webhooks::start(&config.alerting.webhooks, metrics.clone());
        let alertmanagers = Alertmanagers::start(
            &config.alerting.alertmanagers,
            &config.alerting.external_url,
            metrics.clone(),
            alertmanager::system_clock(),
        );
        Outputs {
            config,
            producer,
            metrics,
            tap,
            webhooks,
            alertmanagers,
        }
    }

    /// Outputs that never notify (no webhooks, no tap): an instance's
    /// input side, whose rule rows and evaluations go to the alerting
    /// relay.
    pub(crate) fn for_input(
        config: &'a Config,
        producer: KafkaProducer,
        metrics: Arc<Metrics>,
    ) -> Outputs<'a> {
        Outputs {
            config,
            producer,
            metrics,
            tap: None,
            webhooks: None,
            alertmanagers: None,
        }
    }

    /// Produces messages of the alerting relay (see `relay.rs`).
    pub(crate) async fn relay(
        &mut self,
        topic: &str,
        messages: Vec<Vec<u8>>,
    ) -> Result<(), ConnectorError> {
        let key = self.config.kafka.instance_id.as_bytes();
        for m in messages {
            self.producer.send(topic, Some(key), &m, &[]).await?;
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

    /// Produces one JSON message.
    async fn produce_json(
        &mut self,
        topic: &str,
        key: &str,
        json: &str,
    ) -> Result<(), ConnectorError> {
        self.producer
            .send(
                topic,
                Some(key.as_bytes()),
                json.as_bytes(),
                &[("content-type", b"application/json")],
            )
            .await
    }

    /// Rule rows to `sinks.rows_topic`, when one is set, keyed by
    /// fingerprint.
    pub(crate) async fn rule_rows(&mut self, rows: &[Alert]) -> Result<(), ConnectorError> {
        if let Some(topic) = &self.config.sinks.rows_topic {
            for a in rows {
                self.produce_json(topic, &a.fingerprint, &a.to_json())
                    .await?;
            }
        }
        Ok(())
    }

    /// Produces notifications to the alerts topic, keyed by group key so
    /// one group's updates stay in order on one partition; hands them to
    /// the webhooks and the tap.
    pub(crate) async fn notify(&mut self, payloads: Vec<Payload>) -> Result<(), ConnectorError> {
        let (max_alerts, max_bytes) = (
            self.config.alerting.max_alerts,
            self.config.sinks.max_payload_bytes(),
        );
        for p in payloads
            .into_iter()
            .flat_map(|p| p.split(max_alerts, max_bytes))
        {
            if p.truncated_alerts > 0 {
                Metrics::add(&self.metrics.notifications_truncated, 1);
            }
            let json = p.to_json();
            self.produce_json(&self.config.sinks.alerts_topic, &p.group_key, &json)
                .await?;
            Metrics::add(&self.metrics.notifications, 1);
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
            let to = self.config.sinks.late_topic.as_str();
            self.send_with_origin(to, line, ("telemine.lateness_ms", &lateness), origin)
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
        let to = self.config.sinks.dead_letter_topic.as_str();
        let origin = (topic, d.partition, d.offset);
        self.send_with_origin(to, &d.payload, ("telemine.error", &d.reason), origin)
            .await
    }

    /// Produces a record taken out of the stream (dead letter, late row) to
    /// `to`, with one header saying why and three saying where it came from:
    /// `telemine.source.topic`, `.partition`, `.offset`.
    async fn send_with_origin(
        &mut self,
        to: &str,
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
        let cap = self.config.sinks.max_payload_bytes();
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
        self.producer.send(to, None, body, &headers).await
    }
}
