//! Sources, sinks and decoders for telemine.
//!
//! This crate owns everything that touches bytes from the outside world:
//!
//! - [`schema`]: the declared column schema of a source and its Arrow form.
//! - [`decode`]: columnar decoders (JSON objects, InfluxDB line protocol) that
//!   append Kafka payloads straight into Arrow builders and split out
//!   malformed records as [`decode::DeadLetter`]s.
//! - [`kafka`]: the Kafka source (a consumer-group poll loop that yields
//!   decoded batches) and the producer used by the alert and dead-letter sinks.
//! - [`generator`]: synthetic data-center telemetry and market ticks with
//!   injected, labelled anomalies, for the demo, tests and benchmarks.
//!
//! Nothing here knows about SQL, windows or alerts: the engine crate builds
//! those on the [`decode::Decoded`] batches this crate yields.

pub mod decode;
pub mod error;
pub mod generator;
pub mod kafka;
pub mod schema;

pub use error::ConnectorError;
