//! The commit frontier's bookkeeping: which offsets (with their
//! checkpoints) the pipeline last sent, whether what the engine may commit
//! now differs from them, and which stored checkpoints a newer commit has
//! replaced.
//!
//! Invariants:
//! - nothing is sent twice unchanged, except after an assignment change, a
//!   failed commit, or while the broker has not confirmed it (then
//!   everything is sent again: a commit made before may never have reached
//!   the broker);
//! - a checkpoint stored in the state topic is retired only once the
//!   broker has confirmed a newer commit of its partition — until then a
//!   restart may still need it.

use telemine_connectors::kafka::CommitOffset;

/// A stored checkpoint a newer commit no longer points at.
struct Retired {
    source: usize,
    partition: i32,
    /// The commit metadata that points at it.
    metadata: String,
    /// Its keys in the state topic.
    keys: Vec<String>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct CommitLog {
    /// The offsets last sent.
    sent: Vec<CommitOffset>,
    /// Stored checkpoints replaced by a newer commit, kept until the broker
    /// confirms a newer one for their partition.
    retired: Vec<Retired>,
}

impl CommitLog {
    /// Whether `offsets` (what the engine may commit now) are exactly what
    /// was last sent.
    pub(crate) fn unchanged(&self, offsets: &[CommitOffset]) -> bool {
        offsets.len() == self.sent.len()
            && offsets.iter().zip(self.sent.iter()).all(|(a, b)| {
                a.offset == b.offset
                    && a.metadata == b.metadata
                    && a.partition == b.partition
                    && a.source == b.source
            })
    }

    /// The next commit sends everything again (the assignment changed, or
    /// a commit was not taken).
    pub(crate) fn forget_sent(&mut self) {
        self.sent.clear();
    }

    /// `offsets` were sent. The stored checkpoints (`stored_keys` of a
    /// commit's metadata) that they no longer point at are retired; those
    /// whose partition's confirmed commit (`confirmed`) is now a newer one
    /// are returned, to be deleted.
    pub(crate) fn sent(
        &mut self,
        offsets: Vec<CommitOffset>,
        stored_keys: impl Fn(&CommitOffset) -> Option<Vec<String>>,
        confirmed: impl Fn(usize, i32) -> Option<String>,
    ) -> Vec<String> {
        for old in &self.sent {
            if !offsets.iter().any(|o| o.metadata == old.metadata)
                && let Some(keys) = stored_keys(old)
            {
                self.retired.push(Retired {
                    source: old.source,
                    partition: old.partition,
                    metadata: old.metadata.clone(),
                    keys,
                });
            }
        }
        let mut gone = Vec::new();
        self.retired.retain(|r| {
            let superseded = confirmed(r.source, r.partition).is_some_and(|c| c != r.metadata);
            if superseded {
                gone.extend(r.keys.iter().cloned());
            }
            !superseded
        });
        self.sent = offsets;
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(partition: i32, offset: i64, metadata: &str) -> CommitOffset {
        CommitOffset {
            source: 0,
            partition,
            offset,
            metadata: metadata.into(),
        }
    }

    #[test]
    fn a_stored_checkpoint_goes_only_after_a_newer_commit_is_confirmed() {
        let mut log = CommitLog::default();
        let stored = |o: &CommitOffset| {
            o.metadata
                .starts_with("ref")
                .then(|| vec![format!("k/{}", o.metadata)])
        };
        assert!(
            log.sent(vec![offset(0, 10, "ref1")], stored, |_, _| None)
                .is_empty()
        );
        assert!(log.unchanged(&[offset(0, 10, "ref1")]));
        assert!(!log.unchanged(&[offset(0, 11, "ref1")]));
        // A newer commit is sent; the broker still confirms the old one.
        let old = |_: usize, _: i32| Some("ref1".to_string());
        assert!(
            log.sent(vec![offset(0, 20, "ref2")], stored, old)
                .is_empty()
        );
        // Once it confirms the newer one, the old chunks go, once.
        let new = |_: usize, _: i32| Some("ref2".to_string());
        assert_eq!(
            log.sent(vec![offset(0, 20, "ref2")], stored, new),
            ["k/ref1"]
        );
        assert!(
            log.sent(vec![offset(0, 20, "ref2")], stored, new)
                .is_empty()
        );
        log.forget_sent();
        assert!(!log.unchanged(&[offset(0, 20, "ref2")]));
    }
}
