//! Kafka: the consumer-group source and the producer behind every sink.
//!
//! Both are configured from one [`KafkaClientConfig`]: bootstrap servers
//! plus any librdkafka property, passed through unchanged (TLS, SASL,
//! timeouts — whatever the operator's cluster needs).

mod admin;
mod close;
mod context;
mod owned;
mod producer;
mod source;
mod table;

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

pub use admin::{
    Purger, create_compacted_topic, create_topic_unless_present, create_topics, create_topics_with,
    partition_counts, reachable,
};
pub use context::Quiet;
pub use owned::{OwnedEvent, OwnedTopic};
pub use producer::{KafkaProducer, TransactionOffsets};
pub use source::{
    CommitOffset, ConsumerErrors, KafkaSource, KafkaSourceOptions, SourceEvent, SourceSpec,
};
pub use table::{Table, TableEntry, TableReader};

/// The librdkafka this build links, and what it was built with
/// (`builtin.features`: compression codecs, TLS, SASL mechanisms, OIDC).
pub fn librdkafka_build() -> String {
    let (_, version) = rdkafka::util::get_rdkafka_version();
    let features = rdkafka::ClientConfig::new()
        .create_native_config()
        .and_then(|c| c.get("builtin.features"))
        .unwrap_or_else(|e| format!("unknown ({e})"));
    format!("librdkafka {version} with {features}")
}

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
    /// The engine consumer's `group.instance.id` (Kafka's static
    /// membership): after a crash or kill, a restart takes its partitions
    /// back at once instead of waiting for the broker to time the old
    /// member out; and a second instance started with the same config
    /// fences the first, which stops with an error, so two never split the
    /// group's notifications. "" turns static membership off.
    /// Default: "telemine".
    #[serde(default = "default_instance")]
    pub instance_id: String,
}

fn default_group() -> String {
    "telemine".to_string()
}

fn default_instance() -> String {
    "telemine".to_string()
}

impl KafkaClientConfig {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaClientConfig {
            bootstrap_servers: bootstrap_servers.into(),
            group_id: default_group(),
            properties: BTreeMap::new(),
            instance_id: default_instance(),
        }
    }

    /// Checks every pass-through property against librdkafka itself (the
    /// name exists, the value parses): `(key, what is wrong)` for each
    /// that does not. The messages never hold a value that could be a
    /// secret: see [`redact`].
    pub fn check_properties(&self) -> Vec<(String, String)> {
        let mut wrong = Vec::new();
        for (k, v) in &self.properties {
            let mut c = ClientConfig::new();
            c.set(k, v);
            if let Err(e) = c.create_native_config() {
                let why = match redact(e) {
                    rdkafka::error::KafkaError::ClientConfig(_, desc, _, _) => desc,
                    other => other.to_string(),
                };
                wrong.push((k.clone(), why));
            }
        }
        wrong
    }

    /// The `group.instance.id` the engine's consumer joins with, if any
    /// (a `group.instance.id` property wins over `instance_id`).
    pub fn group_instance_id(&self) -> Option<String> {
        self.properties
            .get("group.instance.id")
            .cloned()
            .or_else(|| Some(self.instance_id.clone()))
            .filter(|id| !id.is_empty())
    }

    /// A librdkafka config with the bootstrap servers and pass-through
    /// properties; callers add their role's settings on top.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_over(&[])
    }

    /// [`Self::client_config`] over a role's `defaults`: a key the
    /// `[kafka.properties]` set wins over its default.
    pub fn client_config_over(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// Whether a librdkafka property may hold a secret (passwords, keys,
/// tokens, JAAS and OAuth settings): its value is never printed.
pub fn looks_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "pass", "pwd", "secret", "token", "key", "jaas", "cred", "auth", "sasl", "oauth",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// A client-config error without the value, when the value could be a
/// secret: always for an unknown name (a misspelt `sasl.pasword` is still
/// a password), and for names that [`looks_secret`]. Every other error
/// passes unchanged.
pub fn redact(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    match e {
        KafkaError::ClientConfig(res, desc, key, value) => {
            let unknown = res == rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN;
            if value.is_empty() || !(unknown || looks_secret(&key)) {
                return KafkaError::ClientConfig(res, desc, key, value);
            }
            let desc = desc.replace(&value, "<redacted>");
            KafkaError::ClientConfig(res, desc, key, "<redacted>".into())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_checked_by_librdkafka_and_secrets_never_printed() {
        let mut c = KafkaClientConfig::new("localhost:9092");
        for (k, v) in [
            ("linger.ms", "5"),
            ("sasl.pasword", "hunter2-secret"),
            ("sasl.password", "hunter2-ok"),
            ("linger.ms.typo", "7"),
            ("queue.buffering.max.ms", "soon"),
            ("ssl.key.password", ""),
        ] {
            c.properties.insert(k.into(), v.into());
        }
        let wrong = c.check_properties();
        let keys: Vec<&str> = wrong.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["linger.ms.typo", "queue.buffering.max.ms", "sasl.pasword"],
            "{wrong:?}"
        );
        for (_, why) in &wrong {
            assert!(!why.contains("hunter2"), "{why}");
        }
        // A value that is not secret may be shown, to help fix it.
        assert!(wrong[1].1.contains("soon") || !wrong[1].1.is_empty());
        let e = redact(rdkafka::error::KafkaError::ClientConfig(
            rdkafka::types::RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "Invalid value \"hunter2\" for configuration property \"sasl.password\"".into(),
            "sasl.password".into(),
            "hunter2".into(),
        ));
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
