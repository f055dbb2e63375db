//! A compacted topic read as a table: every key's latest value (none for a
//! tombstone), loaded from the beginning, then followed for changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{KafkaClientConfig, Quiet};
use crate::ConnectorError;

/// One message of the table's topic: a key and its value (`None`: deleted).
pub type TableEntry = (String, Option<Vec<u8>>);

/// Every key's latest value (`None`: deleted), in key order.
pub type Table = BTreeMap<String, Option<Vec<u8>>>;

/// A reader of a compacted topic, assigned (no consumer group) to every
/// partition from the beginning.
pub struct TableReader {
    consumer: BaseConsumer<Quiet>,
    topic: String,
}

impl TableReader {
    pub fn new(client: &KafkaClientConfig, topic: &str) -> Result<TableReader, ConnectorError> {
        let mut config = client.client_config();
        config
            .set("enable.auto.commit", "false")
            .set("group.id", format!("telemine-table-{topic}"));
        let consumer: BaseConsumer<Quiet> = config
            .create_with_context(Quiet::new(client))
            .map_err(|e| ConnectorError::kafka(format!("reading `{topic}`"), e))?;
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| ConnectorError::kafka(format!("metadata of `{topic}`"), e))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| ConnectorError::kafka(format!("assigning `{topic}`"), e))?;
        }
        consumer
            .assign(&tpl)
            .map_err(|e| ConnectorError::kafka(format!("assigning `{topic}`"), e))?;
        Ok(TableReader {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// Opens `topic` and reads it to its end (see [`TableReader::load`]),
    /// off the async runtime's threads; the reader can then follow it.
    pub async fn open(
        client: &KafkaClientConfig,
        topic: &str,
        timeout: Duration,
    ) -> Result<(TableReader, Table), ConnectorError> {
        let (client, topic) = (client.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || {
            let reader = TableReader::new(&client, &topic)?;
            let table = reader.load(timeout)?;
            Ok((reader, table))
        })
        .await
        .map_err(|e| ConnectorError::Internal(format!("reading a table topic: {e}")))?
    }

    /// Every message up to the end the partitions have now, latest value
    /// per key, in key order.
    pub fn load(&self, timeout: Duration) -> Result<Table, ConnectorError> {
        let mut ends = BTreeMap::new();
        let assignment = self
            .consumer
            .assignment()
            .map_err(|e| ConnectorError::kafka(format!("assignment of `{}`", self.topic), e))?;
        for e in assignment.elements() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), Duration::from_secs(10))
                .map_err(|err| {
                    ConnectorError::kafka(format!("end offsets of `{}`", self.topic), err)
                })?;
            ends.insert(e.partition(), high);
        }
        let mut table = BTreeMap::new();
        let mut next: BTreeMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        let deadline = Instant::now() + timeout;
        while ends.iter().any(|(p, end)| next[p] < *end) {
            if Instant::now() > deadline {
                return Err(ConnectorError::Timeout(format!(
                    "`{}` was not read to its end within {timeout:?}",
                    self.topic
                )));
            }
            if let Some((p, offset, entry)) = self.poll(Duration::from_millis(100))? {
                next.insert(p, offset + 1);
                table.insert(entry.0, entry.1);
            }
            // Written in transactions (exactly-once), a partition ends
            // with a commit or abort marker that is never delivered: the
            // consumer's position goes past it.
            if let Ok(positions) = self.consumer.position() {
                for e in positions.elements() {
                    if let (rdkafka::Offset::Offset(o), Some(n)) =
                        (e.offset(), next.get_mut(&e.partition()))
                    {
                        *n = (*n).max(o);
                    }
                }
            }
        }
        Ok(table)
    }

    /// The next message, if one arrives within `wait`.
    fn poll(&self, wait: Duration) -> Result<Option<(i32, i64, TableEntry)>, ConnectorError> {
        match self.consumer.poll(wait) {
            None => Ok(None),
            Some(Err(e)) => Err(ConnectorError::kafka(
                format!("reading `{}`", self.topic),
                e,
            )),
            Some(Ok(m)) => {
                let key = m
                    .key()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                Ok(Some((
                    m.partition(),
                    m.offset(),
                    (key, m.payload().map(<[u8]>::to_vec)),
                )))
            }
        }
    }

    /// Follows the topic on a thread of its own, sending each new message
    /// to `on_change` until `stop` is set.
    pub fn follow(
        self,
        stop: Arc<AtomicBool>,
        on_change: impl Fn(TableEntry) + Send + 'static,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match self.poll(Duration::from_millis(200)) {
                    Ok(Some((_, _, entry))) => on_change(entry),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "reading a table topic; retrying");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        })
    }
}
