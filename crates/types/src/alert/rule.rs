//! What a rule says about the alerts it raises, beyond its SQL: how
//! urgent they are and how long a condition must hold.

use serde::{Deserialize, Serialize};

/// Alert severity, as Prometheus rule labels spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A rule's timing, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
}

/// One evaluation of a rule: the window end it ran for, with the rule's
/// timing. The streaming core makes them; the alerting takes them to know
/// when a rule looked (an alert missing from an evaluation's rows
/// resolves).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Evaluation {
    pub rule: String,
    pub timing: Timing,
    pub at: i64,
}
