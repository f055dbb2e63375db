//! The error type of the connector boundary.

use thiserror::Error;

use telemine_types::error::ErrorClass;

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
    /// The broker refused messages for what they are (too large, invalid
    /// for the topic) where the caller cannot go on without them.
    #[error("kafka: {0}")]
    Refused(String),
    /// Arrow refused to build a batch; this is a bug in telemine.
    #[error("internal error (a bug in telemine, please report it): {0}")]
    Internal(String),
}

impl ConnectorError {
    /// Who has to act on it (see [`ErrorClass`]).
    pub fn class(&self) -> ErrorClass {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode as C};
        match self {
            ConnectorError::Schema { .. }
            | ConnectorError::File { .. }
            | ConnectorError::Conflict(_)
            | ConnectorError::Refused(_) => ErrorClass::User,
            ConnectorError::Timeout(_) => ErrorClass::Retryable,
            ConnectorError::Internal(_) => ErrorClass::Internal,
            ConnectorError::Kafka { source, .. } => match source {
                KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => ErrorClass::User,
                _ if self.is_message_refused() => ErrorClass::User,
                _ => match source.rdkafka_error_code() {
                    Some(
                        C::TopicAuthorizationFailed
                        | C::GroupAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::TransactionalIdAuthorizationFailed
                        | C::SaslAuthenticationFailed
                        | C::Authentication
                        | C::InvalidConfig
                        | C::InvalidReplicationFactor
                        | C::InvalidPartitions
                        | C::UnsupportedVersion
                        | C::UnsupportedCompressionType
                        | C::SecurityDisabled,
                    ) => ErrorClass::User,
                    _ => ErrorClass::Retryable,
                },
            },
        }
    }

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
