//! Kafka: the consumer-group source and the producer behind every sink.
//!
//! Both are configured from one [`KafkaClientConfig`]: bootstrap servers
//! plus any librdkafka property, passed through unchanged (TLS, SASL,
//! timeouts — whatever the operator's cluster needs).

mod admin;
mod producer;
mod source;
mod table;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

pub use admin::{create_compacted_topic, create_topics};
pub use producer::KafkaProducer;
pub use source::{CommitOffset, KafkaSource, KafkaSourceOptions, SourceEvent, SourceSpec};
pub use table::{Table, TableEntry, TableReader};

/// How to reach the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaClientConfig {
    /// `host:port[,host:port…]` of the brokers. Required.
    pub bootstrap_servers: String,
    /// Consumer group of the engine. Run several instances with the same
    /// group to share partitions. Default: "telemine".
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Any librdkafka property (e.g. `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanism" = "SCRAM-SHA-512"`, `"ssl.ca.location" = "…"`),
    /// applied to the consumer and every producer. Default: none.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_group() -> String {
    "telemine".to_string()
}

impl KafkaClientConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaClientConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: default_group(),
            properties: BTreeMap::new(),
        }
    }

    /// A librdkafka config with the bootstrap servers and pass-through
    /// properties; callers add their role's settings on top.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}
