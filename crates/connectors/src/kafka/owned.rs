//! A one-partition topic read by whichever member of a consumer group
//! holds it. Kafka's group protocol picks the owner among the instances
//! that subscribe, and hands the partition to another when the owner
//! leaves or its session times out; no election of our own.
//!
//! The engine reads the alerting relay this way (`crates/runtime/src/alerting_owner.rs`):
//! every instance subscribes, one of them runs the alerting stage. The
//! poll thread reports [`OwnedEvent::Gained`] before the first message of
//! an ownership and [`OwnedEvent::Lost`] when it ends; the owner commits
//! how far it has applied what it read (asynchronously, like the source).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::close;
use super::producer::TransactionOffsets;
use super::{KafkaClientConfig, Quiet};
use crate::ConnectorError;

/// What the poll thread reports, in order.
#[derive(Debug)]
pub enum OwnedEvent {
    /// This member now holds the topic: what follows is read from the
    /// group's committed offset.
    Gained,
    /// It no longer does (a rebalance); another member reads on from the
    /// committed offset.
    Lost,
    /// One message, while held.
    Message { offset: i64, payload: Vec<u8> },
}

/// See the module docs.
pub struct OwnedTopic {
    /// The current consumer: the poll thread starts a new one when the
    /// old one is fenced (see [`poll_loop`]).
    consumer: Arc<RwLock<Arc<BaseConsumer<Quiet>>>>,
    topic: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long one poll waits for a message; also how soon a stop is seen.
const POLL: Duration = Duration::from_millis(100);

impl OwnedTopic {
    /// Joins consumer group `group` for `topic` (static membership as
    /// `instance` when given) and starts the poll thread, which sends its
    /// events to `tx` until [`OwnedTopic::stop`].
    pub fn start(
        client: &KafkaClientConfig,
        group: &str,
        instance: Option<&str>,
        topic: &str,
        tx: mpsc::Sender<OwnedEvent>,
    ) -> Result<OwnedTopic, ConnectorError> {
        let mut config = client.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // A member joining or leaving does not move the partition
            // away from its owner.
            .set("partition.assignment.strategy", "cooperative-sticky");
        match instance {
            Some(id) => config.set("group.instance.id", id),
            None => config.remove("group.instance.id"),
        };
        let make = {
            let (client, topic) = (client.clone(), topic.to_string());
            move || -> Result<Arc<BaseConsumer<Quiet>>, ConnectorError> {
                let consumer: BaseConsumer<Quiet> = config
                    .create_with_context(Quiet::new(&client))
                    .map_err(|e| {
                        ConnectorError::kafka(format!("creating the consumer of `{topic}`"), e)
                    })?;
                consumer
                    .subscribe(&[&topic])
                    .map_err(|e| ConnectorError::kafka(format!("subscribing to `{topic}`"), e))?;
                Ok(Arc::new(consumer))
            }
        };
        let consumer = Arc::new(RwLock::new(make()?));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("telemine-owned".into())
                .spawn(move || poll_loop(&consumer, &make, &stop, &tx))
                .map_err(|e| ConnectorError::Internal(format!("starting a poll thread: {e}")))?
        };
        Ok(OwnedTopic {
            consumer,
            topic: topic.to_string(),
            stop,
            thread: Some(thread),
        })
    }

    /// Commits `next` (the offset of the first message not yet applied)
    /// for partition 0, without waiting. Returns false when this member
    /// does not hold it now (nothing is sent).
    pub fn commit(&self, next: i64) -> bool {
        let consumer = self.current();
        let held = consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false);
        if !held {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        if tpl
            .add_partition_offset(&self.topic, 0, Offset::Offset(next))
            .is_err()
        {
            return false;
        }
        match consumer.commit(&tpl, CommitMode::Async) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(topic = %self.topic, error = %e, "cannot commit the relay's offset; the next commit sends it again");
                false
            }
        }
    }

    /// Partition 0 at `next`, for a producer's transaction, with this
    /// consumer's group metadata; `None` when it is not held now.
    pub fn transaction_offsets(&self, next: i64) -> Option<TransactionOffsets> {
        let consumer = self.current();
        let held = consumer.assignment().ok()?.count() > 0;
        if !held {
            return None;
        }
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.topic, 0, Offset::Offset(next))
            .ok()?;
        let group = consumer.group_metadata()?;
        Some(TransactionOffsets { list, group })
    }

    fn current(&self) -> Arc<BaseConsumer<Quiet>> {
        self.consumer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the group has assigned this member its share yet: before,
    /// not holding the topic says nothing of who does.
    pub fn joined(&self) -> bool {
        self.current().context().assigned_once()
    }

    /// Asks the poll thread to end (the consumer leaves the group when
    /// this value is dropped).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops and waits for the poll thread, then closes the consumer (it
    /// leaves the group) within [`close::CLOSE_WAIT`].
    pub fn join(mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let what = self.topic.clone();
        close::close_within(self, &what, close::CLOSE_WAIT);
    }
}

impl Drop for OwnedTopic {
    /// A dropped owner (a run abandoned, a task aborted) stops polling, so
    /// it stops heartbeating and the group gives the partition to another.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Polls until stopped. A consumer that fails for good — fenced by its
/// own rejoin after a broker stall outlived its session (static
/// membership), as the source's can be — is replaced by a new one, which
/// joins the group again; ownership is reported lost meanwhile.
fn poll_loop(
    current: &RwLock<Arc<BaseConsumer<Quiet>>>,
    make: &dyn Fn() -> Result<Arc<BaseConsumer<Quiet>>, ConnectorError>,
    stop: &AtomicBool,
    tx: &mpsc::Sender<OwnedEvent>,
) {
    let mut held = false;
    let mut consumer = current.read().unwrap_or_else(|p| p.into_inner()).clone();
    while !stop.load(Ordering::Relaxed) {
        if let Some((code, reason)) = consumer.client().fatal_error() {
            tracing::warn!(?code, %reason, "the alerting relay's consumer failed for good; joining its group again with a new one");
            if held {
                held = false;
                if tx.blocking_send(OwnedEvent::Lost).is_err() {
                    return;
                }
            }
            match make() {
                Ok(c) => {
                    *current.write().unwrap_or_else(|p| p.into_inner()) = c.clone();
                    consumer = c;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the relay's consumer; trying again");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            continue;
        }
        let polled = consumer.poll(POLL);
        // Ownership changes inside poll: report them before the message
        // it returned, which belongs to the new assignment.
        let now = consumer.assignment().map(|a| a.count() > 0).unwrap_or(held);
        if now != held {
            held = now;
            let event = if held {
                OwnedEvent::Gained
            } else {
                OwnedEvent::Lost
            };
            if tx.blocking_send(event).is_err() {
                return;
            }
        }
        match polled {
            Some(Ok(m)) if held => {
                let event = OwnedEvent::Message {
                    offset: m.offset(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                };
                if tx.blocking_send(event).is_err() {
                    return;
                }
            }
            Some(Ok(_)) | None => {}
            // Errors are logged, rate-limited, by the client context.
            Some(Err(e)) => tracing::debug!(error = %e, "polling an owned topic"),
        }
    }
}
