//! Errors classified by who has to act on them, and the engine's own.

use thiserror::Error;

/// Who has to act on an error, decided where it crosses a boundary: the
/// binary prints it (and exits) accordingly, and nothing that a user or
/// an operator can fix is ever reported as a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The config, the SQL, an input file or a command-line argument is
    /// wrong, or the broker refuses us for a reason only its operator can
    /// change (authorisation, a topic's limits): fix it and run again.
    User,
    /// The broker or another peer is unavailable or too slow now: running
    /// again later (a service manager's restart) may succeed.
    Retryable,
    /// telemine broke an invariant of its own: a bug to report.
    Internal,
}

impl ErrorClass {
    /// The process exit code for an error of this class: 1 for a user's
    /// or operator's mistake (as for a config or SQL file that does not
    /// check), 75 (sysexits' `EX_TEMPFAIL`) for a peer that may come
    /// back, 70 (`EX_SOFTWARE`) for a bug.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::User => 1,
            ErrorClass::Retryable => 75,
            ErrorClass::Internal => 70,
        }
    }
}

/// An error of the engine itself (not of one view or rule, which are logged
/// and counted and do not stop the stream).
#[derive(Debug, Error)]
pub enum EngineError {
    /// What the engine was given cannot be run (a source's declaration).
    #[error("{0}")]
    Config(String),
    #[error("internal error (a bug in telemine, please report it): {0}")]
    Internal(String),
}

impl EngineError {
    /// Who has to act on it.
    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::Config(_) => ErrorClass::User,
            EngineError::Internal(_) => ErrorClass::Internal,
        }
    }
}
