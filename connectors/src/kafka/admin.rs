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
    let admin: AdminClient<DefaultClientContext> = client
        .client_config()
        .create()
        .map_err(|e| ConnectorError::kafka("creating the admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
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
