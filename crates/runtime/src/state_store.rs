//! The engine's state in the compacted state topic (`[alerting]
//! state_topic`), keyed under the consumer group: the alerting state
//! (`GROUP`), each model's detector state (`GROUP/detector/MODEL`, its
//! model `…/model`, its training rows `…/rows/N`) and checkpoints too
//! large for commit metadata (`GROUP/checkpoint/TOPIC/PARTITION`). Every
//! value is stored as chunks under the message limit and then a head that
//! points at them (see [`chunked`]).
//!
//! Invariants:
//! - a value is saved only when it changed since its last save;
//! - chunks a newer head replaced are deleted (tombstones) only at the
//!   save after the one that wrote that head, so a restart between the two
//!   still finds every chunk the stored head points at;
//! - everything saved goes through the producer whose deliveries the next
//!   offset commit settles first: no commit points past state that was not
//!   acknowledged.

use std::collections::HashMap;
use std::sync::Arc;

use telemine_connectors::kafka::{KafkaProducer, Table};

use telemine_detector::Detector;
use telemine_stream::checkpoint::{Checkpoint, MAX_METADATA_BYTES};
use telemine_stream::chunked;

/// See the module docs.
pub(crate) struct StateStore {
    topic: String,
    group: String,
    /// Largest value one message of the topic carries.
    chunk_bytes: usize,
    /// This group's entries of the state topic: as read at start, plus
    /// what this run wrote (checkpoints are read back from here).
    table: Table,
    /// The alerting state last saved.
    saved_alerting: String,
    /// The keys of its chunks.
    alerting_chunks: Vec<String>,
    /// Per saved value other than the alerting state (its key), the keys
    /// of its chunks.
    chunks: HashMap<String, Vec<String>>,
    /// Keys replaced or retired: deleted at the next save.
    stale: Vec<String>,
}

impl StateStore {
    /// The store over `table` (this group's entries, read at start), with
    /// `saved_alerting` the alerting state as it stands after its restore.
    pub(crate) fn new(
        topic: &str,
        group: &str,
        chunk_bytes: usize,
        table: Table,
        saved_alerting: String,
    ) -> StateStore {
        let alerting_chunks = chunked::read_ref(&table, group)
            .map(|r| r.keys(group))
            .unwrap_or_default();
        StateStore {
            topic: topic.to_string(),
            group: group.to_string(),
            chunk_bytes,
            table,
            saved_alerting,
            alerting_chunks,
            chunks: HashMap::new(),
            stale: Vec::new(),
        }
    }

    /// Where a model's detector state lives.
    fn detector_key(group: &str, model: &str) -> String {
        format!("{group}/detector/{model}")
    }

    /// Where segment `seg` of a detector's training rows lives (the number
    /// zero-padded, so a segment's key never prefixes another's).
    fn segment_key(detector: &str, seg: u64) -> String {
        format!("{detector}/rows/{seg:020}")
    }

    fn checkpoint_key(&self, topic: &str, partition: i32) -> String {
        format!("{}/checkpoint/{topic}/{partition}", self.group)
    }

    /// Gives each detector the state this group saved for it, if any (a
    /// state it cannot take is logged and the model starts afresh).
    pub(crate) fn restore_detectors(&mut self, detectors: &[Arc<Detector>]) {
        for d in detectors {
            let key = Self::detector_key(&self.group, d.name());
            let model_key = format!("{key}/model");
            for k in [&key, &model_key] {
                if let Some(r) = chunked::read_ref(&self.table, k) {
                    self.chunks.insert(k.clone(), r.keys(k));
                }
            }
            let state = match chunked::read(&self.table, &key) {
                Ok(Some(state)) => state,
                Ok(None) => {
                    tracing::info!(
                        model = d.name(),
                        "no saved detector state: the model starts afresh"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(model = d.name(), error = %e, "the saved detector state is incomplete: the model starts afresh");
                    continue;
                }
            };
            let model = chunked::read(&self.table, &model_key).ok().flatten();
            let (table, chunks) = (&self.table, &mut self.chunks);
            let segment = |seg: u64| {
                let k = Self::segment_key(&key, seg);
                let r = chunked::read_ref(table, &k)?;
                chunks.insert(k.clone(), r.keys(&k));
                chunked::join(table, &k, &r).ok()
            };
            match d.restore(&state, model.as_deref(), segment) {
                Ok(()) => tracing::info!(
                    model = d.name(),
                    bytes = state.len(),
                    "detector state restored: no warm-up"
                ),
                Err(e) => {
                    tracing::warn!(model = d.name(), error = %e, "the saved detector state is not taken: the model starts afresh")
                }
            }
        }
    }

    /// Deletes what went stale since the last save, then saves the
    /// alerting state `snapshot` if it changed since its last save.
    pub(crate) async fn save_alerting(
        &mut self,
        producer: &mut KafkaProducer,
        snapshot: String,
    ) -> Result<(), telemine_connectors::ConnectorError> {
        for key in std::mem::take(&mut self.stale) {
            self.table.remove(&key);
            producer.delete(&self.topic, key.as_bytes()).await?;
        }
        if snapshot == self.saved_alerting {
            return Ok(());
        }
        let group = self.group.clone();
        let (r, chunks) = chunked::split(&group, snapshot.as_bytes(), self.chunk_bytes);
        let keys: Vec<String> = chunks.iter().map(|(k, _)| k.clone()).collect();
        for (key, chunk) in chunks {
            self.store(producer, key, chunk).await?;
        }
        self.store(producer, group, chunked::head(&r)).await?;
        let old = std::mem::replace(&mut self.alerting_chunks, keys);
        self.stale.extend(
            old.into_iter()
                .filter(|k| !self.alerting_chunks.contains(k)),
        );
        self.saved_alerting = snapshot;
        Ok(())
    }

    /// Saves each detector's state that changed since its last save (its
    /// model trained online, when that changed; its training rows' changed
    /// segments), and retires the segments whose rows all left the
    /// training window.
    pub(crate) async fn save_detectors(
        &mut self,
        producer: &mut KafkaProducer,
        detectors: &[Arc<Detector>],
    ) -> Result<(), telemine_connectors::ConnectorError> {
        for d in detectors {
            let saved = match d.save() {
                Ok(Some(saved)) => saved,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(model = d.name(), error = %e, "the detector state cannot be saved; a restart would warm this model up again");
                    continue;
                }
            };
            let key = Self::detector_key(&self.group, d.name());
            for (seg, rows) in &saved.segments {
                self.store_chunked(producer, Self::segment_key(&key, *seg), rows)
                    .await?;
            }
            if let Some(model) = saved.model {
                self.store_chunked(producer, format!("{key}/model"), &model)
                    .await?;
            }
            self.store_chunked(producer, key.clone(), &saved.state)
                .await?;
            // Segments whose rows all left the training window go, with
            // their chunks, once this state is stored.
            let prefix = format!("{key}/rows/");
            let gone: Vec<String> = self
                .chunks
                .keys()
                .filter(|k| {
                    k.strip_prefix(&prefix)
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n < saved.first_segment)
                })
                .cloned()
                .collect();
            for k in gone {
                let chunks = self.chunks.remove(&k).unwrap_or_default();
                self.stale.extend(chunks);
                self.stale.push(k);
            }
        }
        Ok(())
    }

    /// Stores `value` under `key` as chunks and then the head pointing at
    /// them; the chunks it replaces go stale.
    async fn store_chunked(
        &mut self,
        producer: &mut KafkaProducer,
        key: String,
        value: &[u8],
    ) -> Result<(), telemine_connectors::ConnectorError> {
        let (r, chunks) = chunked::split(&key, value, self.chunk_bytes);
        let keys: Vec<String> = chunks.iter().map(|(k, _)| k.clone()).collect();
        for (k, chunk) in chunks {
            self.store(producer, k, chunk).await?;
        }
        self.store(producer, key.clone(), chunked::head(&r)).await?;
        let old = self.chunks.insert(key, keys.clone()).unwrap_or_default();
        self.stale
            .extend(old.into_iter().filter(|k| !keys.contains(k)));
        Ok(())
    }

    /// Produces one entry and keeps it in the local copy of the table.
    pub(crate) async fn store(
        &mut self,
        producer: &mut KafkaProducer,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), telemine_connectors::ConnectorError> {
        producer
            .send(&self.topic, Some(key.as_bytes()), &value, &[])
            .await?;
        self.table.insert(key, Some(value));
        Ok(())
    }

    /// Keys to delete at the next save (a stored checkpoint a confirmed
    /// commit no longer points at).
    pub(crate) fn retire(&mut self, keys: impl IntoIterator<Item = String>) {
        self.stale.extend(keys);
    }

    /// Commit metadata for a partition's checkpoint: the checkpoint itself
    /// when it fits the broker's limit, else a ref to chunks (returned, to
    /// be stored before the commit) and the keys they will have.
    pub(crate) fn checkpoint_metadata(
        &self,
        topic: &str,
        partition: i32,
        checkpoint: &Checkpoint,
    ) -> (String, Vec<(String, Vec<u8>)>) {
        let full = checkpoint.encode();
        if full.len() <= MAX_METADATA_BYTES {
            return (full, Vec::new());
        }
        let key = self.checkpoint_key(topic, partition);
        let (r, chunks) = chunked::split(&key, full.as_bytes(), self.chunk_bytes);
        let pointer = Checkpoint {
            v: Checkpoint::VERSION,
            next: checkpoint.next,
            stored: Some(r),
            ..Default::default()
        };
        (pointer.encode(), chunks)
    }

    /// The keys of the stored checkpoint `metadata` points at, if it
    /// points at one.
    pub(crate) fn checkpoint_chunks(
        &self,
        topic: &str,
        partition: i32,
        metadata: &str,
    ) -> Option<Vec<String>> {
        let r = Checkpoint::decode(metadata).and_then(|c| c.stored)?;
        Some(r.keys(&self.checkpoint_key(topic, partition)))
    }

    /// The checkpoint committed metadata stands for: itself, or the one
    /// stored in the state topic that it points at.
    pub(crate) fn checkpoint(
        &self,
        topic: &str,
        partition: i32,
        metadata: &str,
    ) -> Option<Checkpoint> {
        let c = Checkpoint::decode(metadata)?;
        let Some(r) = &c.stored else {
            return Some(c);
        };
        let key = self.checkpoint_key(topic, partition);
        match chunked::join(&self.table, &key, r) {
            Ok(bytes) => {
                let full = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(Checkpoint::decode);
                if full.is_none() {
                    tracing::warn!(%topic, partition, "the stored checkpoint does not parse; starting this partition without one");
                }
                full
            }
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "the stored checkpoint cannot be read; starting this partition without one");
                None
            }
        }
    }
}
