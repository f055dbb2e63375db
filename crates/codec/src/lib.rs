//! Records in, Arrow out: the declared schema of a source and the
//! columnar decoders, with no transport.
//!
//! - [`schema`]: a source's declared columns, its event time, and the
//!   Arrow schema of its batches (with the partition and offset columns the
//!   engine adds).
//! - [`decode`]: decoders (JSON objects, InfluxDB line protocol) that
//!   append payloads straight into Arrow builders, bounded by
//!   [`decode::Limits`], and split out malformed records as
//!   [`decode::DeadLetter`]s.
//!
//! Where the bytes come from (Kafka, a recorded file, the generator) is the
//! connectors' business; this crate is below them and below the streaming
//! core, so neither needs librdkafka to decode.

pub mod decode;
pub mod error;
pub mod schema;
