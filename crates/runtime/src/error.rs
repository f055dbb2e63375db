//! Why a Kafka pipeline stopped, classified by who has to act.

use telemine_connectors::ConnectorError;
use telemine_types::error::{EngineError, ErrorClass};
use thiserror::Error;

/// Why a pipeline stopped with an error.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("config: {0}")]
    Config(String),
    /// What the engine must not run without could not be read.
    #[error("{0}")]
    Unavailable(String),
}

impl PipelineError {
    /// Who has to act on it: a config mistake is the user's, an
    /// unreachable broker may come back, an engine invariant broken is a
    /// bug.
    pub fn class(&self) -> ErrorClass {
        match self {
            PipelineError::Connector(e) => e.class(),
            PipelineError::Engine(e) => e.class(),
            PipelineError::Config(_) => ErrorClass::User,
            PipelineError::Unavailable(_) => ErrorClass::Retryable,
        }
    }
}
