//! Topic creation, for the demo, the benchmark and the tests.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaClientConfig;
use crate::ConnectorError;

/// Creates topics with the given partition counts (replication factor 1);
/// a topic that already exists is left as it is.
pub async fn create_topics(
    client: &KafkaClientConfig,
    topics: &[(&str, i32)],
) -> Result<(), ConnectorError> {
    create_topics_with(client, topics, &[]).await
}

/// Whether the brokers answer a metadata request within `timeout`: a
/// quick probe before slower admin calls, so a broker that is down is
/// reported in seconds.
pub async fn reachable(
    client: &KafkaClientConfig,
    timeout: Duration,
) -> Result<(), ConnectorError> {
    let config = client.client_config();
    let context = super::Quiet::new(client);
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer<super::Quiet> = config
            .create_with_context(context)
            .map_err(|e| ConnectorError::kafka("creating a client", e))?;
        rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, timeout)
            .map(|_| ())
            .map_err(|e| ConnectorError::kafka("asking the brokers for metadata", e))
    })
    .await
    .map_err(|e| ConnectorError::Internal(format!("metadata probe: {e}")))?
}

/// How many partitions each of `topics` has now (0 for a topic that does
/// not exist yet), asked of the brokers off the async runtime's threads.
pub async fn partition_counts(
    client: &KafkaClientConfig,
    topics: &[String],
    timeout: Duration,
) -> Result<Vec<(String, i32)>, ConnectorError> {
    let config = client.client_config();
    let context = super::Quiet::new(client);
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer<super::Quiet> = config
            .create_with_context(context)
            .map_err(|e| ConnectorError::kafka("creating a client", e))?;
        topics
            .into_iter()
            .map(|t| {
                let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(&t), timeout)
                    .map_err(|e| {
                        ConnectorError::kafka(format!("fetching metadata of topic `{t}`"), e)
                    })?;
                let n = md
                    .topics()
                    .iter()
                    .filter(|m| m.name() == t && m.error().is_none())
                    .map(|m| m.partitions().len() as i32)
                    .sum();
                Ok((t, n))
            })
            .collect()
    })
    .await
    .map_err(|e| ConnectorError::Internal(format!("metadata request: {e}")))?
}

/// Creates a one-partition compacted topic (a table keyed by message key)
/// unless it exists. Its segments roll every [`COMPACTED_SEGMENT_MS`]
/// (the broker's default is 7 days): the active segment is never
/// compacted, and everything in it is read again at each start.
pub async fn create_compacted_topic(
    client: &KafkaClientConfig,
    topic: &str,
) -> Result<(), ConnectorError> {
    create_topic_unless_present(client, topic, 1, &COMPACTED_TOPIC_CONFIG).await
}

/// Segment roll time of our compacted topics: one hour.
pub const COMPACTED_SEGMENT_MS: &str = "3600000";

/// The topic configs [`create_compacted_topic`] sets: compaction, a
/// segment rolled each hour so the cleaner can reach values rewritten in
/// it, and tombstones kept a day (a reader at most that far behind still
/// sees a deletion).
pub const COMPACTED_TOPIC_CONFIG: [(&str, &str); 3] = [
    ("cleanup.policy", "compact"),
    ("segment.ms", COMPACTED_SEGMENT_MS),
    ("delete.retention.ms", "86400000"),
];

/// Creates `topic` with `partitions` partitions and the given configs
/// unless it exists (asked first: an admin request is not sent when it
/// need not be — librdkafka's mock cluster never answers one).
pub async fn create_topic_unless_present(
    client: &KafkaClientConfig,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), ConnectorError> {
    let config = client.client_config();
    let t = topic.to_string();
    let exists = tokio::task::spawn_blocking(move || {
        let consumer: rdkafka::consumer::BaseConsumer = config.create().ok()?;
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(
            &consumer,
            Some(&t),
            Duration::from_secs(10),
        )
        .ok()?;
        Some(
            metadata
                .topics()
                .iter()
                .any(|m| m.name() == t && m.error().is_none() && !m.partitions().is_empty()),
        )
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false);
    if exists {
        return Ok(());
    }
    create_topics_with(client, &[(topic, partitions)], configs).await
}

/// Deletes the records of topics of ours below offsets the group has
/// committed (Kafka's DeleteRecords): a repartition topic then holds what
/// is not yet read back, not the broker's whole retention.
pub struct Purger {
    admin: AdminClient<DefaultClientContext>,
}

impl Purger {
    pub fn new(client: &KafkaClientConfig) -> Result<Purger, ConnectorError> {
        let admin = client
            .client_config()
            .create()
            .map_err(|e| ConnectorError::kafka("creating the admin client", e))?;
        Ok(Purger { admin })
    }

    /// Deletes, per (topic, partition, offset), the records below
    /// `offset`; returns how many partitions the broker moved.
    pub async fn delete_below(
        &self,
        offsets: &[(String, i32, i64)],
    ) -> Result<usize, ConnectorError> {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for (topic, partition, offset) in offsets {
            tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset))
                .map_err(|e| ConnectorError::kafka(format!("deleting records of `{topic}`"), e))?;
        }
        if tpl.count() == 0 {
            return Ok(0);
        }
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let done = self
            .admin
            .delete_records(&tpl, &opts)
            .await
            .map_err(|e| ConnectorError::kafka("deleting records", e))?;
        Ok(done.elements().iter().filter(|e| e.error().is_ok()).count())
    }
}

/// Creates topics like [`create_topics`], each with the given topic
/// configs (e.g. `("max.message.bytes", "4000000")`).
pub async fn create_topics_with(
    client: &KafkaClientConfig,
    topics: &[(&str, i32)],
    config: &[(&str, &str)],
) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> = client
        .client_config()
        .create()
        .map_err(|e| ConnectorError::kafka("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            config.iter().fold(
                NewTopic::new(name, *partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .map_err(|e| ConnectorError::kafka("creating topics", e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ConnectorError::kafka(
                    format!("creating topic `{topic}`"),
                    rdkafka::error::KafkaError::AdminOp(code),
                ));
            }
        }
    }
    Ok(())
}
