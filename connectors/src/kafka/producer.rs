//! The producer used by the alert and dead-letter sinks.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{KafkaClientConfig, Quiet};
use crate::ConnectorError;

/// An idempotent producer. [`KafkaProducer::send`] enqueues and returns the
/// delivery future; callers await the futures before they commit the input
/// offsets the messages derive from (at-least-once).
#[derive(Clone)]
pub struct KafkaProducer {
    producer: FutureProducer<Quiet>,
}

impl KafkaProducer {
    pub fn new(client: &KafkaClientConfig) -> Result<Self, ConnectorError> {
        let mut c = client.client_config();
        if !client.properties.contains_key("enable.idempotence") {
            c.set("enable.idempotence", "true");
        }
        // A broker that stalls or restarts must not fail a delivery (the
        // engine would stop): retried until it is back. Shutdown bounds
        // its own wait.
        if !client.properties.contains_key("message.timeout.ms") {
            c.set("message.timeout.ms", "0");
        }
        if !client.properties.contains_key("linger.ms") {
            c.set("linger.ms", "5");
        }
        let producer = c.create_with_context(Quiet::new(client)).map_err(|e| {
            ConnectorError::kafka("creating the producer (check [kafka] settings)", e)
        })?;
        Ok(KafkaProducer { producer })
    }

    /// Enqueues one message; waits (briefly, repeatedly) while the local
    /// queue is full.
    pub async fn send(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<DeliveryFuture, ConnectorError> {
        let mut hs = OwnedHeaders::new_with_capacity(headers.len());
        for (k, v) in headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let mut record = FutureRecord::to(topic).payload(payload).headers(hs);
        if let Some(k) = key {
            record = record.key(k);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(ConnectorError::kafka(
                        format!("producing to topic `{topic}`"),
                        e,
                    ));
                }
            }
        }
    }

    /// Enqueues a tombstone (a null value) for `key`: the compacted
    /// topic's way of deleting it.
    pub async fn send_tombstone(
        &self,
        topic: &str,
        key: &[u8],
    ) -> Result<DeliveryFuture, ConnectorError> {
        loop {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key);
            match self.producer.send_result(record) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return Err(ConnectorError::kafka(
                        format!("deleting a key of topic `{topic}`"),
                        e,
                    ));
                }
            }
        }
    }

    /// Awaits delivery reports; fails on the first message the broker did
    /// not acknowledge.
    pub async fn acknowledged(
        futures: Vec<DeliveryFuture>,
        what: &str,
    ) -> Result<(), ConnectorError> {
        for f in futures {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    return Err(ConnectorError::kafka(format!("delivering {what}"), e));
                }
                Err(_) => {
                    return Err(ConnectorError::Internal(format!(
                        "delivery of {what} was cancelled (the producer was dropped)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Awaits delivery reports like [`KafkaProducer::acknowledged`], but a
    /// message the broker refuses for what it is (too large, invalid; see
    /// [`ConnectorError::is_message_refused`]) is logged and counted
    /// instead of failing the rest: no one message may stop the stream.
    /// Returns how many were refused.
    pub async fn settled(futures: Vec<DeliveryFuture>, what: &str) -> Result<u64, ConnectorError> {
        let mut refused = 0;
        for f in futures {
            match f.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, m))) => {
                    let e = ConnectorError::kafka(format!("delivering {what}"), e);
                    if !e.is_message_refused() {
                        return Err(e);
                    }
                    refused += 1;
                    tracing::error!(topic = m.topic(), bytes = m.payload().map_or(0, <[u8]>::len), error = %e,
                        "the broker refused a message; it is dropped and counted in messages_refused");
                }
                Err(_) => {
                    return Err(ConnectorError::Internal(format!(
                        "delivery of {what} was cancelled (the producer was dropped)"
                    )));
                }
            }
        }
        Ok(refused)
    }

    /// Flushes the producer's queue (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(|e| ConnectorError::kafka("flushing the producer", e))
    }
}
