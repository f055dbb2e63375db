//! Sources and sinks for telemine: where records come from and where
//! results go.
//!
//! - [`kafka`]: the Kafka source (a consumer-group poll loop that yields
//!   decoded batches) and the producer used by the alert and dead-letter sinks.
//! - [`generator`]: synthetic data-center telemetry and market ticks with
//!   injected, labelled anomalies, for the demo, tests and benchmarks.
//!
//! The Kafka source decodes with `telemine-codec` (the schema and the
//! decoders live there, below the streaming core). Nothing here knows about
//! SQL, windows or alerts: the engine builds those on the
//! `telemine_codec::decode::Decoded` batches this crate yields.

pub mod error;
pub mod generator;
pub mod kafka;

pub use error::ConnectorError;
