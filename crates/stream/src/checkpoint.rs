//! The checkpoint stored as Kafka commit metadata with each partition's
//! offset.
//!
//! The committed offset of a partition is the lowest offset still held in an
//! open window (or the next offset to read, if none is held). After a
//! restart the engine re-reads from there; the checkpoint then tells it,
//! for each view, up to where windows were already emitted (`closed`) and
//! which offsets it had already read (`next`), so re-read rows of emitted
//! windows are skipped instead of producing their alerts twice.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::chunked::ChunkRef;

/// Checkpoint of one partition. Serialised as compact JSON (Kafka allows
/// 4 KiB of commit metadata by default).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub v: u32,
    /// The next offset the engine had read when it committed.
    pub next: i64,
    /// Per view reading this partition's source: the end of its last
    /// emitted window (ms since the epoch); for SESSION views, the
    /// watermark they last closed at.
    pub closed: BTreeMap<String, i64>,
    /// Per view that still needs rows older than `closed` (HOP panes of
    /// windows not yet emitted, SESSION sessions still open): the oldest
    /// event time a re-read row must have to be rebuilt into its state.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub keep: BTreeMap<String, i64>,
    /// Set instead of `closed` and `keep` when the whole checkpoint would
    /// not fit the broker's commit-metadata limit: it is stored in the
    /// alerting state topic, in chunks this finds (see `chunked.rs`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub stored: Option<ChunkRef>,
    /// A repartition topic's partition: per upstream partition, the
    /// offset after its last row taken here and its clock (see
    /// `admission.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub up: super::admission::UpstreamPositions,
}

/// Longest commit metadata telemine writes: the broker's default
/// `offset.metadata.max.bytes` is 4096, and a larger commit is refused.
pub const MAX_METADATA_BYTES: usize = 3072;

impl Checkpoint {
    pub const VERSION: u32 = 1;

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses commit metadata; `None` for empty or foreign metadata (then
    /// the partition starts without a checkpoint).
    pub fn decode(metadata: &str) -> Option<Checkpoint> {
        let c: Checkpoint = serde_json::from_str(metadata).ok()?;
        (c.v == Self::VERSION).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_foreign_metadata() {
        let c = Checkpoint {
            v: 1,
            next: 42,
            closed: [("host_1m".to_string(), 60_000)].into(),
            keep: [("host_hop".to_string(), 1_000)].into(),
            stored: None,
            up: [(2, (17, Some(60_000))), (3, (0, None))].into(),
        };
        assert_eq!(Checkpoint::decode(&c.encode()), Some(c));
        assert_eq!(Checkpoint::decode(""), None);
        assert_eq!(
            Checkpoint::decode("{\"v\":9,\"next\":1,\"closed\":{}}"),
            None
        );
    }
}
