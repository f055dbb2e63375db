//! A source as the engine runs it: its topic, format and schema resolved
//! from the config, the decoders' limits, and (for a source the engine
//! derives to repartition another) where its rows come from.

use std::time::Duration;

use telemine_codec::decode::{Format, InfluxOptions, Limits};
use telemine_codec::schema::SourceSchema;

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
    /// `crates/stream/src/repartition.rs`); `None` for every configured source.
    pub derived: Option<Derived>,
}

impl SourceDef {
    /// How far behind its partition's newest event time a record may
    /// arrive, when the source says nothing else.
    pub const DEFAULT_MAX_OUT_OF_ORDERNESS: Duration = Duration::from_secs(5);
    /// How long a silent partition holds the watermark back, when the
    /// source says nothing else.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Source `name` on `topic`, JSON records of `schema`, every other
    /// setting at its default (the defaults the config documents), keyed
    /// by nothing.
    pub fn new(name: &str, topic: &str, schema: SourceSchema) -> SourceDef {
        SourceDef {
            name: name.to_string(),
            topic: topic.to_string(),
            format: Format::default(),
            influx: InfluxOptions::default(),
            schema,
            max_out_of_orderness: Self::DEFAULT_MAX_OUT_OF_ORDERNESS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            allowed_lateness: Duration::ZERO,
            dedupe_by: Vec::new(),
            key: Vec::new(),
            limits: Limits::default(),
            derived: None,
        }
    }

    /// Source `telemetry` on topic `t` with event time `ts` and `columns`
    /// written as in the config (`"cpu double"`, after `ts timestamp`),
    /// keyed by `key`: the source the engine's tests run on.
    ///
    /// # Panics
    /// On a column the config would refuse; tests only.
    pub fn for_tests(columns: &[&str], key: &[&str]) -> SourceDef {
        let specs = std::iter::once("ts timestamp")
            .chain(columns.iter().copied())
            .map(|c| {
                c.parse()
                    .unwrap_or_else(|e| panic!("test column `{c}`: {e}"))
            })
            .collect();
        let schema = SourceSchema::new(specs, "ts").unwrap_or_else(|e| panic!("test source: {e}"));
        let mut def = SourceDef::new("telemetry", "t", schema);
        def.key = key.iter().map(|k| k.to_string()).collect();
        def
    }
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
