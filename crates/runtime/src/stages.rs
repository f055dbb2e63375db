//! The stages after the window engine on an instance's input side, all
//! producing on the outputs' producer, and the commit that settles them:
//! [`Stages`] (the outputs, the alerting relay, the state store, the
//! repartition writer and its purge, the error spells) and [`commit`]
//! (offsets with their checkpoints, once everything they derive from is
//! acknowledged; in one transaction under exactly-once).

use std::sync::Arc;
use std::time::{Duration, Instant};

use telemine_connectors::kafka::{CommitOffset, KafkaSource, Purger};

use super::commits::CommitLog;
use super::error::PipelineError;
use super::outputs::Outputs;
use super::relay::{self, Progress, Reached, Relay};
use super::source_errors::{self, SourceError, SourceErrors};
use super::state_store::StateStore;
use crate::settings::Settings;
use telemine_observe::metrics::Metrics;
use telemine_sql::source::SourceDef;
use telemine_stream::driver::{Driver, Step};
use telemine_stream::repartition::Writer;

/// Commits what the engine may commit now, with its checkpoints, once the
/// alerting state and every output it derives from are acknowledged
/// (at-least-once). The commit itself is not awaited (see
/// [`KafkaSource::commit`]) unless `last`: the commit before shutdown
/// waits up to [`LAST_COMMIT_WAIT`] for the broker.
pub(super) async fn commit(
    source: &KafkaSource,
    engine: &Driver,
    stages: &mut Stages,
    defs: &[SourceDef],
    committed: &mut CommitLog,
    last: bool,
) -> Result<(), PipelineError> {
    let mut offsets = Vec::new();
    let mut stored = Vec::new();
    for s in 0..defs.len() {
        for (partition, offset, checkpoint) in engine.commit_positions(s) {
            let (metadata, chunks) =
                stages
                    .state
                    .checkpoint_metadata(source.topic(s), partition, &checkpoint);
            stored.extend(chunks);
            offsets.push(CommitOffset {
                source: s,
                partition,
                offset,
                metadata,
            });
        }
    }
    if stages.outputs.producer.is_transactional() {
        return commit_transaction(source, stages, committed, offsets, stored, defs, last).await;
    }
    // Sent before and confirmed by the broker: nothing to send. A commit
    // whose answer never came (its consumer replaced after a fence, a
    // request lost in a broker stall) is sent again.
    let unchanged = committed.unchanged(&offsets)
        && !source.take_commit_failed()
        && offsets
            .iter()
            .all(|o| source.confirmed(o.source, o.partition).as_deref() == Some(&o.metadata));
    if !unchanged {
        // Large checkpoints go to the state topic before the commit that
        // points at them.
        for (key, chunk) in stored {
            stages
                .state
                .store(&mut stages.outputs.producer, key, chunk)
                .await?;
        }
    }
    stages.outputs.settle().await?;
    if offsets.is_empty() || (unchanged && !last) {
        return Ok(());
    }
    if last {
        match source.commit_and_wait(&offsets, LAST_COMMIT_WAIT).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the broker did not confirm the last commit within {} s; a restart re-reads the records since the last confirmed one",
                LAST_COMMIT_WAIT.as_secs()
            ),
            Err(e) => tracing::warn!(error = %e,
                "the last commit failed; a restart re-reads the records since the last confirmed one"),
        }
    } else if !source.commit(&offsets) {
        // Partitions not held now (a rebalance, a lost session): nothing
        // of them was sent; the next tick sends them again.
        committed.forget_sent();
        return Ok(());
    }
    Metrics::add(&stages.outputs.metrics().commits, 1);
    // Checkpoints stored in the state topic that the new commit no longer
    // points at: deleted once the broker confirmed a newer commit of their
    // partition (until then a restart may still need them).
    if let Some(purge) = stages.purge.as_mut() {
        purge.note(&offsets, defs);
        purge.run(source, |s, p| source.confirmed(s, p), last);
    }
    let state = &stages.state;
    let gone = committed.sent(
        offsets,
        |o| state.checkpoint_chunks(source.topic(o.source), o.partition, &o.metadata),
        |s, p| source.confirmed(s, p),
    );
    stages.state.retire(gone);
    Ok(())
}

/// The exactly-once commit: the large checkpoints, then one transaction
/// with everything produced since the last and the input offsets; a
/// failure stops the run (see [`KafkaProducer::commit_transaction`]).
async fn commit_transaction(
    source: &KafkaSource,
    stages: &mut Stages,
    committed: &mut CommitLog,
    offsets: Vec<CommitOffset>,
    stored: Vec<(String, Vec<u8>)>,
    defs: &[SourceDef],
    last: bool,
) -> Result<(), PipelineError> {
    for (key, chunk) in stored {
        stages
            .state
            .store(&mut stages.outputs.producer, key, chunk)
            .await?;
    }
    let txn = source.transaction_offsets(&offsets);
    stages.outputs.producer.commit_transaction(txn).await?;
    if offsets.is_empty() {
        return Ok(());
    }
    Metrics::add(&stages.outputs.metrics().commits, 1);
    // The commit is confirmed once the transaction is.
    let confirmed: std::collections::HashMap<(usize, i32), String> = offsets
        .iter()
        .map(|o| ((o.source, o.partition), o.metadata.clone()))
        .collect();
    if let Some(purge) = stages.purge.as_mut() {
        purge.note(&offsets, defs);
        purge.run(source, |s, p| confirmed.get(&(s, p)).cloned(), last);
    }
    let state = &stages.state;
    let gone = committed.sent(
        offsets,
        |o| state.checkpoint_chunks(source.topic(o.source), o.partition, &o.metadata),
        |s, p| confirmed.get(&(s, p)).cloned(),
    );
    stages.state.retire(gone);
    Ok(())
}

/// How long the commit before shutdown waits for the broker.
const LAST_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The stages after the window engine: its outputs, the alerting relay
/// and the state store, all producing on the outputs' producer.
pub(super) struct Stages {
    pub(super) outputs: Outputs,
    pub(super) relay: RelayOut,
    pub(super) state: StateStore,
    /// Writes what the repartitioned views read (see `repartition.rs`).
    pub(super) writer: Option<Writer>,
    /// Deletes what was read back from the repartition topics.
    pub(super) purge: Option<Purge>,
    /// The sources' names, in source order (metric labels).
    pub(super) names: Vec<String>,
    /// Dead letters and consumer errors per source, counted and told once
    /// per spell.
    pub(super) errors: SourceErrors,
}

impl Stages {
    /// Counts and tells the consumer's errors since the last look; writes
    /// the summaries of the error spells that are due.
    pub(super) fn consumer_errors(&mut self, source: &KafkaSource, metrics: &Metrics) {
        let now = Instant::now();
        for e in source.take_consumer_errors() {
            let name = e
                .source
                .and_then(|s| self.names.get(s))
                .map_or("*", String::as_str);
            let error = SourceError {
                source: name,
                kind: source_errors::Kind::Consumer,
                partition: None,
                offset: None,
                reason: &e.error,
            };
            self.errors.record_many(metrics, &error, e.count, now);
        }
        self.errors.tick(now);
    }

    /// What the engine produced in one step: its dead letters (to the
    /// dead-letter topic), its rule rows (to the rows topic; with the
    /// evaluations and this instance's progress, to the alerting relay);
    /// then its late rows (to the late topic, with their source topic).
    pub(super) async fn emit(
        &mut self,
        source: &KafkaSource,
        step: Step,
    ) -> Result<(), PipelineError> {
        let Step {
            dead,
            rows,
            evaluations,
            progress,
            late,
            scored,
            ..
        } = step;
        let metrics = self.outputs.metrics().clone();
        let name = |s: usize| self.names.get(s).map_or("?", String::as_str);
        let now = Instant::now();
        for (s, d) in dead {
            Metrics::add_to(&metrics.source_dead_letters_total, &[name(s)], 1);
            let reason = d.reason.to_string();
            let e = SourceError {
                source: name(s),
                kind: source_errors::Kind::Decode,
                partition: Some(d.partition),
                offset: Some(d.offset),
                reason: &reason,
            };
            self.errors.record(&metrics, &e, now);
            self.outputs.dead_letter(source.topic(s), d).await?;
        }
        for p in &progress {
            if let Some(clock) = p.clock {
                metrics
                    .watermark_seconds
                    .with_label_values(&[name(p.source), &p.partition.to_string()])
                    .set(clock as f64 / 1000.0);
            }
        }
        self.outputs.rule_rows(&rows).await?;
        let progress: Vec<Progress> = progress
            .iter()
            .filter_map(|p| {
                let reached = match (p.clock, p.idle) {
                    (Some(c), _) => Reached::Clock(c),
                    (None, true) => Reached::Idle,
                    (None, false) => return None,
                };
                Some(self.relay.progress(p.source, p.partition, reached))
            })
            .collect();
        // The scored views' rows before the progress that says they are all.
        let mut messages = Vec::new();
        for rows in &scored {
            messages.extend(telemine_stream::deferred::encode(
                rows,
                self.relay.max_bytes,
            )?);
        }
        messages.extend(self.relay.messages(&rows, &evaluations, progress));
        self.outputs.relay(&self.relay.topic, messages).await?;
        for l in late {
            self.outputs.late(source.topic(l.source), l).await?;
        }
        Ok(())
    }

    /// A decoded batch of `source`, to the repartition topics over it.
    pub(super) async fn repartition(
        &mut self,
        source: usize,
        batch: Option<&datafusion::arrow::array::RecordBatch>,
    ) -> Result<(), PipelineError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let messages = writer.write(source, batch)?;
        self.outputs.repartition(messages).await?;
        Ok(())
    }

    /// `source`'s `partition` was read to its end in a drain: the
    /// repartition topics over it hear so.
    pub(super) async fn drained(
        &mut self,
        source: usize,
        partition: i32,
    ) -> Result<(), PipelineError> {
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        let messages = writer.drained(source, partition);
        self.outputs.repartition(messages).await?;
        Ok(())
    }

    /// After the last step of a drain: every partition held is at its end.
    pub(super) async fn relay_end(&mut self) -> Result<(), PipelineError> {
        let end = self.relay.held_at(Reached::End);
        let messages = self.relay.messages(&[], &[], end);
        self.outputs.relay(&self.relay.topic, messages).await?;
        Ok(())
    }
}

/// How often the repartition topics are cut below what the group has
/// committed there (and at the last commit).
const PURGE_INTERVAL: Duration = Duration::from_secs(30);

/// How long shutdown waits for a deletion under way.
pub(super) const PURGE_WAIT: Duration = Duration::from_secs(5);

/// Deletes from the repartition topics the records below the offsets the
/// broker confirmed this instance committed there (Kafka's DeleteRecords,
/// on a task of its own): a repartition topic holds what is not yet read
/// back, not the broker's whole retention.
pub(super) struct Purge {
    purger: Arc<Purger>,
    /// Per derived (source, partition): the offsets last committed, with
    /// their metadata (to match the broker's confirmation, which comes
    /// after the next commit is sent), newest last.
    sent: std::collections::BTreeMap<(usize, i32), std::collections::VecDeque<(i64, String)>>,
    /// Per derived (source, partition): the offset last deleted below.
    purged: std::collections::BTreeMap<(usize, i32), i64>,
    last: Option<Instant>,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Purge {
    pub(super) fn new(settings: &Settings) -> Option<Purge> {
        match Purger::new(&settings.kafka) {
            Ok(purger) => Some(Purge {
                purger: Arc::new(purger),
                sent: Default::default(),
                purged: Default::default(),
                last: None,
                running: None,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot delete what was read back from the repartition topics; the broker's retention deletes it");
                None
            }
        }
    }

    /// The offsets of a commit just sent.
    fn note(&mut self, offsets: &[CommitOffset], defs: &[SourceDef]) {
        for o in offsets {
            if defs.get(o.source).is_some_and(|d| d.derived.is_some()) {
                let recent = self.sent.entry((o.source, o.partition)).or_default();
                if recent.back().is_none_or(|(_, m)| *m != o.metadata) {
                    recent.push_back((o.offset, o.metadata.clone()));
                }
                while recent.len() > 8 {
                    recent.pop_front();
                }
            }
        }
    }

    /// Deletes below the confirmed commits, at most every
    /// [`PURGE_INTERVAL`] unless `now`, never two at once.
    fn run(
        &mut self,
        source: &KafkaSource,
        confirmed: impl Fn(usize, i32) -> Option<String>,
        now: bool,
    ) {
        if self.running.as_ref().is_some_and(|r| !r.is_finished())
            || (!now && self.last.is_some_and(|t| t.elapsed() < PURGE_INTERVAL))
        {
            return;
        }
        self.last = Some(Instant::now());
        let mut below = Vec::new();
        for (&(s, p), recent) in &self.sent {
            let Some(confirmed) = confirmed(s, p) else {
                continue;
            };
            let Some(&(offset, _)) = recent.iter().rev().find(|(_, m)| *m == confirmed) else {
                continue;
            };
            if self.purged.get(&(s, p)).is_none_or(|&d| d < offset) {
                below.push((source.topic(s).to_string(), p, offset));
                self.purged.insert((s, p), offset);
            }
        }
        if below.is_empty() {
            return;
        }
        let purger = self.purger.clone();
        self.running = Some(tokio::spawn(async move {
            match purger.delete_below(&below).await {
                Ok(n) => tracing::debug!(
                    partitions = n,
                    "deleted repartitioned records already read back"
                ),
                Err(e) => tracing::warn!(error = %e,
                    "cannot delete repartitioned records already read back; the broker's retention deletes them"),
            }
        }));
    }

    /// Waits up to `wait` for a deletion under way (shutdown).
    pub(super) async fn finish(&mut self, wait: Duration) {
        if let Some(r) = self.running.take() {
            let _ = tokio::time::timeout(wait, r).await;
        }
    }
}

/// What this instance relays to the group's alerting (see `relay.rs`).
pub(super) struct RelayOut {
    topic: String,
    from: String,
    max_bytes: usize,
    /// Source topics, by source index.
    topics: Vec<String>,
    /// Partitions held, by source index.
    held: Vec<Vec<i32>>,
    /// The progress relayed last.
    last: Vec<Progress>,
}

impl RelayOut {
    pub(super) fn new(settings: &Settings, topics: &[String]) -> RelayOut {
        RelayOut {
            topic: relay::topic(&settings.kafka),
            from: settings.kafka.instance_id.clone(),
            max_bytes: settings.sinks.max_payload_bytes,
            topics: topics.to_vec(),
            held: vec![Vec::new(); topics.len()],
            last: Vec::new(),
        }
    }

    pub(super) fn assigned(&mut self, source: usize, partitions: &[i32]) {
        if let Some(h) = self.held.get_mut(source) {
            *h = partitions.to_vec();
        }
    }

    fn progress(&self, source: usize, partition: i32, reached: Reached) -> Progress {
        Progress {
            topic: self.topics.get(source).cloned().unwrap_or_default(),
            partition,
            reached,
        }
    }

    /// Every partition held, at `reached`.
    fn held_at(&self, reached: Reached) -> Vec<Progress> {
        self.held
            .iter()
            .enumerate()
            .flat_map(|(s, ps)| ps.iter().map(move |&p| self.progress(s, p, reached)))
            .collect()
    }

    /// The messages for one step: its rows and evaluations, with the
    /// progress of the partitions held; nothing when there are no rows or
    /// evaluations and the progress is the one relayed last.
    fn messages(
        &mut self,
        rows: &[telemine_types::alert::Alert],
        evaluations: &[telemine_alerting::Evaluation],
        progress: Vec<Progress>,
    ) -> Vec<Vec<u8>> {
        let moved = !progress.is_empty() && progress != self.last;
        if rows.is_empty() && evaluations.is_empty() && !moved {
            return Vec::new();
        }
        if !progress.is_empty() {
            self.last.clone_from(&progress);
        }
        Relay::pack(&self.from, rows, evaluations, &progress, self.max_bytes)
    }
}
