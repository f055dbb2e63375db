//! The producer used by the alert, dead-letter and state outputs; it owns
//! their deliveries.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{KafkaClientConfig, Quiet};
use crate::ConnectorError;

/// An idempotent producer that owns its deliveries: [`KafkaProducer::send`]
/// enqueues, and [`KafkaProducer::settle`] waits until the broker has
/// acknowledged everything sent since the last settle. The engine settles
/// before it commits the input offsets the messages derive from
/// (at-least-once), so no delivery handle leaves the connector.
pub struct KafkaProducer {
    producer: FutureProducer<Quiet>,
    /// Deliveries not yet settled.
    pending: Vec<DeliveryFuture>,
    /// Messages refused for what they are since the last settle.
    refused: u64,
    /// Whether everything sent is in a transaction (exactly-once), which
    /// [`KafkaProducer::commit_transaction`] commits with input offsets.
    transactional: bool,
}

/// Input offsets that go into a producer's transaction, with the consumer
/// group they belong to (Kafka then fences a zombie of a rebalanced
/// group, KIP-447).
pub struct TransactionOffsets {
    pub(crate) list: TopicPartitionList,
    pub(crate) group: ConsumerGroupMetadata,
}

/// How often [`KafkaProducer::settle`] says it is still waiting.
const SETTLE_NOTICE: Duration = Duration::from_secs(10);

/// How long a transaction's commit (or abort) may take.
const TRANSACTION_WAIT: Duration = Duration::from_secs(60);

impl KafkaProducer {
    pub fn new(client: &KafkaClientConfig) -> Result<Self, ConnectorError> {
        let c = client.client_config_over(&[
            ("enable.idempotence", "true"),
            // A broker that stalls or restarts must not fail a delivery
            // (the engine would stop): retried until it is back. Shutdown
            // bounds its own wait.
            ("message.timeout.ms", "0"),
            ("linger.ms", "5"),
        ]);
        let producer = c.create_with_context(Quiet::new(client)).map_err(|e| {
            ConnectorError::kafka("creating the producer (check [kafka] settings)", e)
        })?;
        Ok(KafkaProducer {
            producer,
            pending: Vec::new(),
            refused: 0,
            transactional: false,
        })
    }

    /// A transactional producer (`transactional.id` = `id`: a restart with
    /// the same id fences the previous incarnation), its first transaction
    /// begun. What it sends becomes visible to `read_committed` readers
    /// only when [`KafkaProducer::commit_transaction`] commits it.
    pub async fn transactional(
        client: &KafkaClientConfig,
        id: &str,
    ) -> Result<Self, ConnectorError> {
        let mut client = client.clone();
        client
            .properties
            .insert("transactional.id".into(), id.to_string());
        // A delivery may not outlive its transaction.
        let txn_timeout = client
            .properties
            .get("transaction.timeout.ms")
            .cloned()
            .unwrap_or_else(|| "60000".into());
        client
            .properties
            .entry("message.timeout.ms".into())
            .or_insert(txn_timeout);
        let mut p = KafkaProducer::new(&client)?;
        p.transactional = true;
        let producer = p.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer.init_transactions(TRANSACTION_WAIT)?;
            producer.begin_transaction()
        })
        .await
        .map_err(|e| ConnectorError::Internal(format!("starting transactions: {e}")))?
        .map_err(|e| ConnectorError::kafka(format!("starting transactions as `{id}`"), e))?;
        Ok(p)
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Commits the transaction: everything sent since the last commit,
    /// with `offsets` (the input read to produce it), then begins the
    /// next. A failure aborts the transaction and is an error: nothing of
    /// it becomes visible, and the caller must not go on from state it
    /// no longer matches (the engine stops; a restart reads from the last
    /// committed offsets).
    pub async fn commit_transaction(
        &mut self,
        offsets: Option<TransactionOffsets>,
    ) -> Result<(), ConnectorError> {
        let refused = match self.settle("the transaction's messages").await {
            Ok(n) => n,
            Err(e) => return Err(self.abort(e).await),
        };
        if refused > 0 {
            let e = ConnectorError::Refused(format!(
                "the broker refused {refused} message(s) inside a transaction"
            ));
            return Err(self.abort(e).await);
        }
        let producer = self.producer.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(o) = offsets {
                producer.send_offsets_to_transaction(&o.list, &o.group, TRANSACTION_WAIT)?;
            }
            producer.commit_transaction(TRANSACTION_WAIT)?;
            producer.begin_transaction()
        })
        .await
        .map_err(|e| ConnectorError::Internal(format!("committing a transaction: {e}")))?;
        match done {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = ConnectorError::kafka("committing a transaction", e);
                Err(self.abort(e).await)
            }
        }
    }

    /// Drops what the open transaction holds (its commit is another's
    /// now) and begins the next.
    pub async fn discard_transaction(&mut self) -> Result<(), ConnectorError> {
        self.abort_open(true).await
    }

    /// Aborts the open transaction after `why`, as far as the producer
    /// still can (a fenced one cannot); returns `why`.
    async fn abort(&mut self, why: ConnectorError) -> ConnectorError {
        if let Err(e) = self.abort_open(false).await {
            tracing::warn!(error = %e, "the transaction could not be aborted; the broker aborts it once it times out");
        }
        why
    }

    /// Aborts the open transaction, dropping the deliveries it awaited,
    /// and begins the next if `begin`.
    async fn abort_open(&mut self, begin: bool) -> Result<(), ConnectorError> {
        self.pending.clear();
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer.abort_transaction(TRANSACTION_WAIT)?;
            if begin {
                producer.begin_transaction()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| ConnectorError::Internal(format!("aborting a transaction: {e}")))?
        .map_err(|e| ConnectorError::kafka("aborting a transaction", e))
    }

    /// Enqueues one message; waits (briefly, repeatedly) while the local
    /// queue is full. A message refused for what it is (too large,
    /// invalid: [`ConnectorError::is_message_refused`]) is logged and
    /// counted (see [`KafkaProducer::settle`]), and the stream goes on.
    pub async fn send(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), ConnectorError> {
        self.send_to(topic, None, key, payload, headers).await
    }

    /// [`KafkaProducer::send`] to a given partition (`None`: the one the
    /// key gives).
    pub async fn send_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), ConnectorError> {
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
        if let Some(p) = partition {
            record = record.partition(p);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return self.refuse(ConnectorError::kafka(
                        format!("producing to topic `{topic}`"),
                        e,
                    ));
                }
            }
        }
    }

    /// Enqueues a tombstone (a null value) for `key`: the compacted
    /// topic's way of deleting it.
    pub async fn delete(&mut self, topic: &str, key: &[u8]) -> Result<(), ConnectorError> {
        loop {
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).key(key);
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push(f);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => {
                    return self.refuse(ConnectorError::kafka(
                        format!("deleting a key of topic `{topic}`"),
                        e,
                    ));
                }
            }
        }
    }

    /// A message refused at enqueue: counted when it is refused for what
    /// it is, an error otherwise.
    fn refuse(&mut self, e: ConnectorError) -> Result<(), ConnectorError> {
        if !e.is_message_refused() {
            return Err(e);
        }
        self.refused += 1;
        tracing::error!(error = %e, "a message was refused; it is dropped and counted in messages_refused");
        Ok(())
    }

    /// Waits until the broker has acknowledged every message sent since
    /// the last settle. A message it refuses for what it is (too large,
    /// invalid) is logged and counted instead of failing the rest: no one
    /// message may stop the stream. Returns how many were refused since
    /// the last settle (at enqueue or at delivery); any other failure is
    /// an error, and the messages not yet awaited are dropped from the
    /// reckoning (the caller does not commit past them).
    pub async fn settle(&mut self, what: &str) -> Result<u64, ConnectorError> {
        let pending = std::mem::take(&mut self.pending);
        let (total, started) = (pending.len(), std::time::Instant::now());
        for (i, mut f) in pending.into_iter().enumerate() {
            // A broker that does not answer is waited for (deliveries never
            // time out), and said so every SETTLE_NOTICE.
            let delivered = loop {
                match tokio::time::timeout(SETTLE_NOTICE, &mut f).await {
                    Ok(d) => break d,
                    Err(_) => tracing::warn!(
                        waited_s = started.elapsed().as_secs(),
                        unacknowledged = total - i,
                        "still waiting for the broker to acknowledge {what}; nothing is committed meanwhile"
                    ),
                }
            };
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((e, m))) => {
                    let e = ConnectorError::kafka(format!("delivering {what}"), e);
                    if !e.is_message_refused() {
                        return Err(e);
                    }
                    self.refused += 1;
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
        Ok(std::mem::take(&mut self.refused))
    }

    /// Like [`KafkaProducer::settle`], but a refused message is an error
    /// too (a command writing one message whose loss must be reported).
    pub async fn acknowledged(&mut self, what: &str) -> Result<(), ConnectorError> {
        match self.settle(what).await? {
            0 => Ok(()),
            n => Err(ConnectorError::Refused(format!(
                "the broker refused {n} message(s) of {what} (too large or invalid for the topic; see its max.message.bytes)"
            ))),
        }
    }

    /// Flushes the producer's queue (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), ConnectorError> {
        self.producer
            .flush(timeout)
            .map_err(|e| ConnectorError::kafka("flushing the producer", e))
    }
}
