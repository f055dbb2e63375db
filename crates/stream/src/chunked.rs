//! Values of any size in a compacted topic whose messages are bounded
//! (`sinks.max_message_bytes`): the alerting state of an incident with
//! thousands of alerts, a checkpoint naming hundreds of views.
//!
//! A value is written as chunks keyed `KEY/DIGEST/i`, where DIGEST is the
//! xxh3 of the whole value, and is found again through a [`ChunkRef`]
//! (digest, chunk count, length): the alerting state keeps its ref as the
//! value of `KEY` (the head, written after its chunks), a checkpoint keeps
//! it in the commit metadata. Chunks of a value are never overwritten, so
//! a crash between writing a new value and pointing at it leaves the old
//! one readable; the chunks a newer value replaced are deleted
//! (tombstones) only once the newer ref is safely stored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a chunked value lives and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// xxh3-64 of the whole value, 16 hex digits.
    pub xxh3: String,
    /// Number of chunks.
    pub parts: usize,
    /// Length of the whole value in bytes.
    pub bytes: usize,
}

/// The head message of a chunked value: marks it as one (a value written
/// by an older telemine is the state itself).
#[derive(Debug, Serialize, Deserialize)]
struct Head {
    chunked: ChunkRef,
}

impl ChunkRef {
    /// The chunk keys of this value under `key`.
    pub fn keys(&self, key: &str) -> Vec<String> {
        (0..self.parts)
            .map(|i| format!("{key}/{}/{i}", self.xxh3))
            .collect()
    }
}

/// `value` as chunks of at most `chunk_bytes` (at least one chunk, even
/// when empty), with the ref that finds them under `key`.
pub fn split(key: &str, value: &[u8], chunk_bytes: usize) -> (ChunkRef, Vec<(String, Vec<u8>)>) {
    let chunk_bytes = chunk_bytes.max(1);
    let r = ChunkRef {
        xxh3: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(value)),
        parts: value.len().div_ceil(chunk_bytes).max(1),
        bytes: value.len(),
    };
    let mut chunks: Vec<(String, Vec<u8>)> = r
        .keys(key)
        .into_iter()
        .zip(value.chunks(chunk_bytes))
        .map(|(k, c)| (k, c.to_vec()))
        .collect();
    if chunks.is_empty() {
        chunks.push((format!("{key}/{}/0", r.xxh3), Vec::new()));
    }
    (r, chunks)
}

/// The head message for `key` that points at `r`.
pub fn head(r: &ChunkRef) -> Vec<u8> {
    serde_json::to_vec(&Head { chunked: r.clone() }).unwrap_or_default()
}

/// Why a chunked value cannot be read back: the state it held is lost
/// (the caller starts afresh and says so).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk the head names is not in the topic (deleted, or never
    /// written before a crash).
    #[error("chunk `{key}` is missing")]
    Missing { key: String },
    /// The chunks are there but are not the value the head describes.
    #[error(
        "chunks under `{key}` do not add up: {bytes} bytes with digest {digest}, expected {expected_bytes} bytes with {expected_digest}"
    )]
    Mismatch {
        key: String,
        bytes: usize,
        digest: String,
        expected_bytes: usize,
        expected_digest: String,
    },
}

/// Reads back the value `r` points at under `key`, checking its length
/// and digest.
pub fn join(
    table: &BTreeMap<String, Option<Vec<u8>>>,
    key: &str,
    r: &ChunkRef,
) -> Result<Vec<u8>, ChunkError> {
    let mut value = Vec::with_capacity(r.bytes.min(1 << 30));
    for k in r.keys(key) {
        match table.get(&k) {
            Some(Some(chunk)) => value.extend_from_slice(chunk),
            _ => return Err(ChunkError::Missing { key: k }),
        }
    }
    let digest = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&value));
    if value.len() != r.bytes || digest != r.xxh3 {
        return Err(ChunkError::Mismatch {
            key: key.to_string(),
            bytes: value.len(),
            digest,
            expected_bytes: r.bytes,
            expected_digest: r.xxh3.clone(),
        });
    }
    Ok(value)
}

/// The ref in `key`'s head, if it is a chunked value.
pub fn read_ref(table: &BTreeMap<String, Option<Vec<u8>>>, key: &str) -> Option<ChunkRef> {
    let Some(Some(value)) = table.get(key) else {
        return None;
    };
    serde_json::from_slice::<Head>(value)
        .ok()
        .map(|h| h.chunked)
}

/// The value stored under `key`: through its head when it is chunked, the
/// message itself when an older telemine wrote it whole.
pub fn read(
    table: &BTreeMap<String, Option<Vec<u8>>>,
    key: &str,
) -> Result<Option<Vec<u8>>, ChunkError> {
    let Some(Some(value)) = table.get(key) else {
        return Ok(None);
    };
    match serde_json::from_slice::<Head>(value) {
        Ok(h) => join(table, key, &h.chunked).map(Some),
        Err(_) => Ok(Some(value.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_chunks_and_are_checked() {
        let value: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let (r, chunks) = split("g", &value, 4096);
        assert_eq!(r.parts, 10);
        assert!(chunks.iter().all(|(_, c)| c.len() <= 4096));
        let mut table: BTreeMap<String, Option<Vec<u8>>> =
            chunks.into_iter().map(|(k, v)| (k, Some(v))).collect();
        table.insert("g".into(), Some(head(&r)));
        assert_eq!(read(&table, "g").unwrap(), Some(value.clone()));
        assert_eq!(join(&table, "g", &r).unwrap(), value);
        // A value written whole by an older build reads as itself.
        table.insert("old".into(), Some(b"{\"version\":1}".to_vec()));
        assert_eq!(read(&table, "old").unwrap().unwrap(), b"{\"version\":1}");
        assert_eq!(read(&table, "absent").unwrap(), None);
        // A lost or altered chunk is an error, never a wrong value.
        let k = r.keys("g")[3].clone();
        table.insert(k.clone(), Some(b"x".to_vec()));
        assert!(matches!(
            read(&table, "g"),
            Err(ChunkError::Mismatch { .. })
        ));
        table.insert(k, None);
        assert!(matches!(read(&table, "g"), Err(ChunkError::Missing { .. })));
        let (empty, chunks) = split("e", b"", 10);
        assert_eq!((empty.parts, chunks.len()), (1, 1));
    }
}
