//! A source as the engine runs it: its topic, format and schema resolved
//! from the config, the decoders' limits, and (for a source the engine
//! derives to repartition another) where its rows come from.

use std::time::Duration;

use telemine_connectors::decode::{Format, InfluxOptions, Limits};
use telemine_connectors::schema::SourceSchema;

/// A source with its schema resolved.
#[derive(Debug, Clone)]
pub struct SourceDef {
    pub name: String,
    pub topic: String,
    pub format: Format,
    pub influx: InfluxOptions,
    pub schema: SourceSchema,
    pub max_out_of_orderness: Duration,
    pub idle_timeout: Duration,
    pub allowed_lateness: Duration,
    pub dedupe_by: Vec<String>,
    /// `key`: the columns the topic's messages are keyed by.
    pub key: Vec<String>,
    /// What the decoders accept at all (sizes, depth, non-finite values,
    /// future event times), with the wall clock they compare against.
    pub limits: Limits,
    /// Set on a source the engine derives to repartition another (see
    /// `engine/repartition.rs`); `None` for every configured source.
    pub derived: Option<Derived>,
}

/// A source derived from configured source `from`: its rows, written by
/// every instance to a repartition topic keyed by `by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub from: usize,
    pub by: Vec<String>,
    /// How many partitions the source `from` has.
    pub upstream_partitions: i32,
}
