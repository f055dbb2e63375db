//! The error type of the connector boundary.

use thiserror::Error;

/// An error raised by a source, sink or decoder set-up.
///
/// Per-record decode failures are not errors: they become dead letters and
/// the stream goes on. These are the failures an operator has to act on.
#[derive(Debug, Error)]
pub enum ConnectorError {
    /// The broker or the client configuration refused us; retrying may help
    /// when the broker is only temporarily unreachable.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A source's declared schema cannot be used (a config problem).
    #[error("source `{source_name}`: {message}")]
    Schema {
        source_name: String,
        message: String,
    },
    /// A recorded-data file could not be read.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// Another instance holds what this one needs (its consumer group).
    #[error("{0}")]
    Conflict(String),
    /// A topic could not be read to its end in time.
    #[error("kafka: {0}")]
    Timeout(String),
    /// Arrow refused to build a batch; this is a bug in telemine.
    #[error("internal error (a bug in telemine, please report it): {0}")]
    Internal(String),
}

impl ConnectorError {
    /// The broker (or librdkafka, before sending) refused this one message
    /// for what it is — too large, an invalid record — so retrying it can
    /// never succeed, and the stream must go on without it.
    pub fn is_message_refused(&self) -> bool {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
        let ConnectorError::Kafka { source, .. } = self else {
            return false;
        };
        let code = match source {
            KafkaError::MessageProduction(c) => *c,
            _ => match source.rdkafka_error_code() {
                Some(c) => c,
                None => return false,
            },
        };
        matches!(
            code,
            C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::InvalidMessage
                | C::InvalidRecord
                | C::MessageBatchTooLarge
                | C::PolicyViolation
        )
    }

    pub(crate) fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        ConnectorError::Kafka {
            context: context.into(),
            source: crate::kafka::redact(source),
        }
    }
}
