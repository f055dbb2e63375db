//! The Kafka source: one consumer in the engine's consumer group, polled on
//! a dedicated thread, with decoding on a second one.
//!
//! The poll thread routes each message by topic into its source's raw chunk
//! (payload bytes copied into one buffer), and hands a chunk to the decode
//! thread when it holds `max_batch_records` records or its oldest record
//! has waited `linger`. The decode thread runs the source's [`Decoder`] and
//! sends the result to the engine as a [`SourceEvent::Batch`]. Every other
//! event travels the same two bounded queues, so the engine sees them in
//! order, and a slow engine slows polling instead of growing memory. Polling
//! and decoding on separate threads lets the fetch path and the JSON parser
//! use both cores. Offsets are never committed
//! here: the engine commits through [`KafkaSource::commit`] once everything
//! derived from a record is safely produced.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::close;
use super::producer::TransactionOffsets;
use super::{KafkaClientConfig, Quiet};
use crate::ConnectorError;
use telemine_codec::decode::{DeadLetter, Decoder, RecordChunk, UpstreamMark};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// One input: a topic and the decoder for its messages.
pub struct SourceSpec {
    pub topic: String,
    /// One decoder per decode thread (all specs give the same number; at
    /// least one).
    pub decoders: Vec<Box<dyn Decoder>>,
    /// A topic other instances write while they read theirs (a
    /// repartition topic): in a drain, a partition of it is read until
    /// the engine says it is complete ([`KafkaSource::partition_complete`]),
    /// not to an end offset.
    pub fed_by_engine: bool,
}

/// How long a drain waits, once every other partition is read to its
/// end, for the engine to complete the partitions of topics it feeds.
const FED_DRAIN_WAIT: Duration = Duration::from_secs(60);

/// How the poll loop behaves.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// Flush a decoder once it holds this many records.
    pub max_batch_records: usize,
    /// Flush a decoder once its oldest record has waited this long.
    pub linger: Duration,
    /// Stop once every partition has been read up to the end it had when
    /// the source started (bench, demo, tests); otherwise run until stopped.
    pub stop_at_end: bool,
    /// Why this instance must be alone in its consumer group, if it must
    /// (what the engine computes would be wrong split across instances):
    /// a group holding another member is then refused with this reason.
    pub alone: Option<String>,
}

/// What the source tells the engine, in order.
#[derive(Debug)]
pub enum SourceEvent {
    /// The first record of a partition is about to arrive. Carries the
    /// group's committed offset and metadata for it, so the engine can
    /// restore its checkpoint before any of the partition's rows.
    PartitionStart {
        source: usize,
        partition: i32,
        committed: Option<(i64, String)>,
    },
    /// The partitions of a source this consumer owns changed (group
    /// rebalance). Sent before any batch of a newly assigned partition.
    Assigned { source: usize, partitions: Vec<i32> },
    /// Decoded records of one source.
    Batch {
        source: usize,
        batch: Option<RecordBatch>,
        dead: Vec<DeadLetter>,
        /// Per partition, the offset after the last record in this batch.
        consumed: Vec<(i32, i64)>,
        /// Upstream progress read (a repartition topic's).
        marks: Vec<UpstreamMark>,
    },
    /// While draining: a partition held has been read to its end; no
    /// batch of it follows.
    Drained { source: usize, partition: i32 },
    /// Every partition has been read to its end (only with `stop_at_end`),
    /// or the source was stopped; no event follows.
    End,
    /// The consumer cannot go on (e.g. fenced by another instance with the
    /// same `group.instance.id`); no event follows.
    Failed(String),
}

/// An offset to commit, with the engine's checkpoint as commit metadata.
#[derive(Debug, Clone)]
pub struct CommitOffset {
    pub source: usize,
    pub partition: i32,
    pub offset: i64,
    pub metadata: String,
}

/// The source's consumer, shared by the poll thread and the committer;
/// replaced when the poll thread starts a new one (see [`Rejoin`]).
type SharedConsumer = Arc<RwLock<Arc<BaseConsumer<Quiet>>>>;

/// A running Kafka source. See the module docs.
pub struct KafkaSource {
    consumer: SharedConsumer,
    topics: Vec<String>,
    control: Arc<AtomicU8>,
    /// Partitions of engine-fed topics the engine has completed.
    completed: Arc<Mutex<HashSet<(usize, i32)>>>,
    threads: Vec<JoinHandle<()>>,
}

const RUNNING: u8 = 0;
const STOP: u8 = 1;
const DRAIN: u8 = 2;

impl KafkaSource {
    /// Joins the consumer group, subscribes to every spec's topic and starts
    /// the poll thread.
    pub fn start(
        client: &KafkaClientConfig,
        options: KafkaSourceOptions,
        specs: Vec<SourceSpec>,
        tx: mpsc::Sender<SourceEvent>,
    ) -> Result<Self, ConnectorError> {
        let mut c = client.client_config_over(&[
            ("auto.offset.reset", "earliest"),
            // librdkafka postpones a partition's next fetch by this much
            // once its local queue passes `queued.min.messages` (default
            // 1 s). A consumer that does real work between polls crosses
            // that threshold often and then idles until the postponed
            // fetch returns (measured: 150k records/s instead of 740k); a
            // short backoff keeps the queue fed.
            ("fetch.queue.backoff.ms", "5"),
            // Statistics carry each partition's consumer lag
            // (`consumer_lag`).
            ("statistics.interval.ms", "5000"),
        ]);
        c.set("group.id", &client.group_id);
        c.set("enable.auto.commit", "false");
        c.set("enable.auto.offset.store", "false");
        let instance = client.group_instance_id();
        if let Some(id) = &instance {
            c.set("group.instance.id", id);
        }
        let topics: Vec<String> = specs.iter().map(|s| s.topic.clone()).collect();
        let fed: Vec<bool> = specs.iter().map(|s| s.fed_by_engine).collect();
        let rejoin = Rejoin {
            config: c,
            client: client.clone(),
            instance,
            alone: options.alone.clone(),
            own_ids: VecDeque::new(),
            recent: VecDeque::new(),
        };
        let consumer = rejoin.consumer(&topics, None)?;
        let ends = if options.stop_at_end {
            Some(end_offsets(&consumer, &topics, &fed)?)
        } else {
            None
        };
        let control = Arc::new(AtomicU8::new(RUNNING));
        let sources = topics.len();
        let workers = specs
            .iter()
            .map(|s| s.decoders.len())
            .min()
            .unwrap_or(1)
            .max(1);
        let mut per_worker: Vec<Vec<Box<dyn Decoder>>> = (0..workers).map(|_| Vec::new()).collect();
        for spec in specs {
            for (w, d) in spec.decoders.into_iter().take(workers).enumerate() {
                per_worker[w].push(d);
            }
        }
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| ConnectorError::Internal(format!("cannot start a source thread: {e}")))
        };
        let mut threads = Vec::new();
        let (mut stage_txs, mut out_rxs) = (Vec::new(), Vec::new());
        for (w, decoders) in per_worker.into_iter().enumerate() {
            let (stage_tx, stage_rx) = std::sync::mpsc::sync_channel::<Stage>(2);
            let (out_tx, out_rx) = std::sync::mpsc::sync_channel::<SourceEvent>(2);
            threads.push(spawn(
                format!("kafka-decode-{w}"),
                Box::new(move || decode_loop(decoders, stage_rx, out_tx)),
            )?);
            stage_txs.push(stage_tx);
            out_rxs.push(out_rx);
        }
        threads.push(spawn(
            "kafka-merge".into(),
            Box::new(move || merge_loop(out_rxs, tx)),
        )?);
        let shared: SharedConsumer = Arc::new(RwLock::new(consumer.clone()));
        let completed = Arc::new(Mutex::new(HashSet::new()));
        let mut poll = PollLoop {
            consumer,
            shared: shared.clone(),
            rejoin,
            topics: topics.clone(),
            raw: (0..sources).map(|_| RecordChunk::default()).collect(),
            options,
            tx: stage_txs,
            next_worker: 0,
            control: control.clone(),
            parts: Vec::new(),
            assigned: Vec::new(),
            assignment_checked: None,

            oldest: Vec::new(),
            ends,
            fed,
            completed: completed.clone(),
            drained: HashSet::new(),
            ends_reached: None,
        };
        threads.push(spawn("kafka-source".into(), Box::new(move || poll.run()))?);
        Ok(KafkaSource {
            consumer: shared,
            topics,
            control,
            completed,
            threads,
        })
    }

    /// Commits offsets with their metadata, without waiting for the broker:
    /// the result arrives while the consumer polls (see
    /// [`KafkaSource::confirmed`], [`KafkaSource::take_commit_failed`]). A
    /// failure is logged (rate-limited), never an error: the
    /// next commit retries, and until one succeeds a restart re-reads more.
    /// Offsets of partitions this consumer does not hold now, or of an
    /// assignment it lost (a session timeout in a broker stall), are not
    /// sent: such a commit carries a stale member id, which the broker
    /// answers for a static member with a fatal "fenced".
    /// Returns false when some offsets were left out: the caller sends
    /// them again next time.
    pub fn commit(&self, offsets: &[CommitOffset]) -> bool {
        let consumer = self.current();
        let Some(tpl) = self.held(&consumer, offsets) else {
            return offsets.is_empty();
        };
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            consumer.context().commit_failed(&e);
        }
        tpl.count() == offsets.len()
    }

    /// Commits offsets and waits up to `timeout` for the broker's answer
    /// (the last commit before shutdown). `Ok(false)`: no answer in time.
    pub async fn commit_and_wait(
        &self,
        offsets: &[CommitOffset],
        timeout: Duration,
    ) -> Result<bool, ConnectorError> {
        let consumer = self.current();
        let Some(tpl) = self.held(&consumer, offsets) else {
            return Ok(true);
        };
        let commit = tokio::task::spawn_blocking(move || {
            let r = consumer.commit(&tpl, CommitMode::Sync);
            if r.is_ok() {
                consumer.context().commits.confirm(&tpl);
            }
            r
        });
        match tokio::time::timeout(timeout, commit).await {
            Ok(Ok(Ok(()))) => Ok(true),
            Ok(Ok(Err(e))) => Err(ConnectorError::kafka("committing offsets", e)),
            Ok(Err(e)) => Err(ConnectorError::Internal(format!(
                "the commit task failed: {e}"
            ))),
            Err(_) => Ok(false),
        }
    }

    /// The offsets of `offsets` on partitions `consumer` holds now, as a
    /// list to commit; `None` if there is nothing to send.
    fn held(
        &self,
        consumer: &BaseConsumer<Quiet>,
        offsets: &[CommitOffset],
    ) -> Option<TopicPartitionList> {
        if offsets.is_empty() || consumer.assignment_lost() {
            return None;
        }
        let assignment = consumer.assignment().ok()?;
        let mut tpl = TopicPartitionList::new();
        for o in offsets {
            let topic = &self.topics[o.source];
            if assignment.find_partition(topic, o.partition).is_none() {
                continue;
            }
            if tpl
                .add_partition_offset(topic, o.partition, Offset::Offset(o.offset))
                .is_err()
            {
                continue;
            }
            if let Some(mut el) = tpl.find_partition(topic, o.partition) {
                el.set_metadata(o.metadata.clone());
            }
        }
        (tpl.count() > 0).then_some(tpl)
    }

    /// Consumer lag per (topic, partition) of the partitions this
    /// consumer is assigned, from librdkafka's latest statistics (every
    /// `statistics.interval.ms`, 5 s unless set); -1 where it is not known
    /// yet.
    pub fn consumer_lag(&self) -> Vec<(String, i32, i64)> {
        self.current().context().consumer_lag()
    }

    /// The errors the consumer reported since the last call (losing the
    /// brokers excepted: that is logged as the cluster's problem), each
    /// with the source it belongs to: the one whose topic the error names,
    /// else the only source; `None` when the consumer reads several and the
    /// error names none of their topics.
    pub fn take_consumer_errors(&self) -> Vec<ConsumerErrors> {
        self.current()
            .context()
            .take_poll_errors()
            .into_iter()
            .map(|(count, error)| ConsumerErrors {
                // The longest topic named wins (`telemetry-v2` over
                // `telemetry`).
                source: (0..self.topics.len())
                    .filter(|&i| error.contains(self.topics[i].as_str()))
                    .max_by_key(|&i| self.topics[i].len())
                    .or((self.topics.len() == 1).then_some(0)),
                count,
                error,
            })
            .collect()
    }

    /// The consumer in use now.
    fn current(&self) -> Arc<BaseConsumer<Quiet>> {
        self.consumer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `offsets` (those of partitions held now) for a producer's
    /// transaction, with this consumer's group metadata; `None` when none
    /// is held or the group is not joined.
    pub fn transaction_offsets(&self, offsets: &[CommitOffset]) -> Option<TransactionOffsets> {
        let consumer = self.current();
        let list = self.held(&consumer, offsets)?;
        let group = consumer.group_metadata()?;
        Some(TransactionOffsets { list, group })
    }

    /// The metadata of the newest commit the broker confirmed for
    /// `source`'s `partition`.
    pub fn confirmed(&self, source: usize, partition: i32) -> Option<String> {
        self.current()
            .context()
            .commits
            .confirmed(&self.topics[source], partition)
    }

    /// Whether a commit failed since the last call.
    pub fn take_commit_failed(&self) -> bool {
        self.current().context().commits.take_failed()
    }

    /// In a drain, `partition` of engine-fed `source` has received all it
    /// will (see [`SourceSpec::fed_by_engine`]).
    pub fn partition_complete(&self, source: usize, partition: i32) {
        self.completed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((source, partition));
    }

    /// Asks the poll thread to flush what it has decoded and stop.
    pub fn stop(&self) {
        self.control.store(STOP, Ordering::SeqCst);
    }

    /// Asks the poll thread to read every partition it holds up to its
    /// current end, then stop.
    pub fn drain(&self) {
        let _ = self
            .control
            .compare_exchange(RUNNING, DRAIN, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Waits for the poll and decode threads to end, then closes the
    /// consumer (it leaves the group) within [`close::CLOSE_WAIT`].
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let what = self.topics.join(",");
        close::close_within(self, &what, close::CLOSE_WAIT);
    }

    /// The topic of source `i`.
    pub fn topic(&self, i: usize) -> &str {
        &self.topics[i]
    }

    /// Every source's topic, in source order.
    pub fn topics(&self) -> Vec<String> {
        self.topics.clone()
    }
}

/// Errors of one kind the consumer reported (see
/// [`KafkaSource::take_consumer_errors`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerErrors {
    /// The source they belong to, when known.
    pub source: Option<usize>,
    /// How many since the last look.
    pub count: u64,
    /// The latest one, as librdkafka words it.
    pub error: String,
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.control.store(STOP, Ordering::SeqCst);
    }
}

/// What a new consumer of the source is made from, and the bound on how
/// often the source may start one again after its consumer was fenced.
struct Rejoin {
    config: ClientConfig,
    client: KafkaClientConfig,
    instance: Option<String>,
    /// See [`KafkaSourceOptions::alone`].
    alone: Option<String>,
    /// The member ids this source's consumers were given, newest last (a
    /// member of the group with one of them is this instance).
    own_ids: VecDeque<String>,
    /// When this source last started again, within [`REJOIN_WINDOW`].
    recent: VecDeque<Instant>,
}

/// At most this many fresh starts after a fence per [`REJOIN_WINDOW`]:
/// beyond, another instance is taken to hold the instance id.
const MAX_REJOINS: usize = 3;
const REJOIN_WINDOW: Duration = Duration::from_secs(600);
/// A fence this soon after a lost session is the consumer's own rejoin.
const SESSION_LOST_WINDOW: Duration = Duration::from_secs(120);

impl Rejoin {
    /// A consumer subscribed to `topics`, once the group is known to hold
    /// no other instance. `own`: the member ids of this instance's
    /// consumers (a member with the instance id but another member id is
    /// another instance); `None` at start, when such a member is taken for
    /// this instance's previous run (killed, not yet timed out).
    fn consumer(
        &self,
        topics: &[String],
        own: Option<&VecDeque<String>>,
    ) -> Result<Arc<BaseConsumer<Quiet>>, ConnectorError> {
        let consumer: BaseConsumer<Quiet> = self
            .config
            .create_with_context(Quiet::new(&self.client))
            .map_err(|e| {
                ConnectorError::kafka("creating the consumer (check [kafka] settings)", e)
            })?;
        if let Some(why) = &self.alone {
            alone_in_group(
                &consumer,
                &self.client.group_id,
                self.instance.as_deref(),
                own,
                why,
            )?;
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| ConnectorError::kafka(format!("subscribing to {names:?}"), e))?;
        Ok(Arc::new(consumer))
    }

    /// Notes the member id `consumer` has now.
    fn remember(&mut self, consumer: &BaseConsumer<Quiet>) {
        let Some(id) = member_id(consumer) else {
            return;
        };
        if self.own_ids.back() != Some(&id) {
            self.own_ids.push_back(id);
            if self.own_ids.len() > 16 {
                self.own_ids.pop_front();
            }
        }
    }

    /// A new consumer after the current one was fenced, or why this
    /// instance stops instead.
    /// `session_lost`: the fenced consumer lost its session shortly before.
    fn again(
        &mut self,
        topics: &[String],
        reason: &str,
        session_lost: bool,
    ) -> Result<Arc<BaseConsumer<Quiet>>, String> {
        let group = &self.client.group_id;
        let taken_over = format!(
            "another telemine joined consumer group `{group}` with this instance's group.instance.id and took over ({reason}); this instance stops. Instances sharing a group each need their own [kafka] instance_id"
        );
        self.recent.retain(|t| t.elapsed() < REJOIN_WINDOW);
        if self.recent.len() >= MAX_REJOINS {
            return Err(format!(
                "{taken_over} (fenced {} times within {} min)",
                self.recent.len() + 1,
                REJOIN_WINDOW.as_secs() / 60
            ));
        }
        // A fence soon after the session was lost is taken for the
        // consumer's own rejoin even when the group's member id was never
        // seen here (librdkafka may have joined twice meanwhile).
        let own = (!session_lost).then_some(&self.own_ids);
        self.recent.push_back(Instant::now());
        tracing::warn!(%reason,
            "this instance's consumer was fenced and no other instance is in the group: its session was lost (a broker stall) and its own rejoin fenced it; joining again with a new consumer (the records since the last commit are read again, as replays)");
        self.consumer(topics, own).map_err(|e| match e {
            ConnectorError::Conflict(_) => taken_over,
            other => format!("cannot join consumer group `{group}` again: {other}"),
        })
    }
}

/// The member id the group coordinator gave `consumer` (none before it
/// joined).
fn member_id(consumer: &BaseConsumer<Quiet>) -> Option<String> {
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is a live client handle (borrowed from `consumer`).
    // rd_kafka_memberid returns NULL or a NUL-terminated string that the
    // caller owns and frees with rd_kafka_mem_free, which is done below
    // once it is copied.
    unsafe {
        let p = rdkafka::bindings::rd_kafka_memberid(rk);
        if p.is_null() {
            return None;
        }
        let id = std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        rdkafka::bindings::rd_kafka_mem_free(rk, p.cast());
        (!id.is_empty()).then_some(id)
    }
}

/// Refuses to join a consumer group that already has a member other than
/// this telemine's own earlier self (static membership: its member id
/// starts with our `group.instance.id`), when what the engine computes
/// would be wrong split across instances (`why`). A group that cannot be
/// described is let be (the same `group.instance.id` still fences a twin).
fn alone_in_group(
    consumer: &BaseConsumer<Quiet>,
    group: &str,
    instance: Option<&str>,
    own_ids: Option<&VecDeque<String>>,
    why: &str,
) -> Result<(), ConnectorError> {
    let list = match consumer.fetch_group_list(Some(group), METADATA_TIMEOUT) {
        Ok(list) => list,
        Err(e) => {
            // librdkafka's mock cluster (the demo) cannot list groups.
            if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnsupportedFeature)
            {
                tracing::debug!(%group, error = %e, "cannot describe the consumer group");
            } else {
                tracing::warn!(%group, error = %e, "cannot describe the consumer group to check that no other instance is in it");
            }
            return Ok(());
        }
    };
    let ours = instance.map(|id| format!("{id}-"));
    for g in list.groups().iter().filter(|g| g.name() == group) {
        for m in g.members() {
            let mine = ours.as_deref().is_some_and(|p| m.id().starts_with(p))
                && own_ids.is_none_or(|ids| ids.iter().any(|id| id == m.id()));
            if !mine {
                return Err(ConnectorError::Conflict(format!(
                    "consumer group `{group}` already has a member that is not this telemine \
                     (member {} of client `{}` on {}), and this instance must run alone: {why}. \
                     Stop the other instance, or give this one its own [kafka] group_id \
                     (a member that was killed leaves the group once the broker times it out, \
                     session.timeout.ms, 45 s by default)",
                    m.id(),
                    m.client_id(),
                    m.client_host()
                )));
            }
        }
    }
    Ok(())
}

/// The high watermark of every partition of `topics` and the group's
/// committed offset for it, keyed by (source index, partition).
fn end_offsets(
    consumer: &BaseConsumer<Quiet>,
    topics: &[String],
    fed: &[bool],
) -> Result<HashMap<(usize, i32), i64>, ConnectorError> {
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (i, topic) in topics.iter().enumerate() {
        if fed.get(i).copied().unwrap_or(false) {
            continue;
        }
        let md = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| {
                ConnectorError::kafka(format!("fetching metadata of topic `{topic}`"), e)
            })?;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                    .map_err(|e| {
                        ConnectorError::kafka(
                            format!("fetching watermarks of {topic}/{}", p.id()),
                            e,
                        )
                    })?;
                if high > low {
                    ends.insert((i, p.id()), high);
                    tpl.add_partition(topic, p.id());
                }
            }
        }
    }
    // Partitions the group has already read to the end need no reading.
    if tpl.count() > 0 {
        let committed = committed_offsets(consumer, &tpl)?;
        for el in committed.elements() {
            if let (Offset::Offset(o), Some(i)) =
                (el.offset(), topics.iter().position(|t| t == el.topic()))
                && ends.get(&(i, el.partition())).is_some_and(|&h| o >= h)
            {
                ends.remove(&(i, el.partition()));
            }
        }
    }
    Ok(ends)
}

/// The group's committed offsets, retried for a while: right after a broker
/// starts, or while the group coordinator moves, the coordinator answers
/// "loading" or "not coordinator" for a few seconds.
fn committed_offsets(
    consumer: &BaseConsumer<Quiet>,
    tpl: &TopicPartitionList,
) -> Result<TopicPartitionList, ConnectorError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.committed_offsets(tpl.clone(), METADATA_TIMEOUT) {
            Ok(list) => return Ok(list),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "committed offsets not available yet; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                return Err(ConnectorError::kafka(
                    "fetching committed offsets (is the group coordinator up?)",
                    e,
                ));
            }
        }
    }
}

/// What the poll thread hands the decode thread, in order.
enum Stage {
    Chunk {
        source: usize,
        chunk: RecordChunk,
        consumed: Vec<(i32, i64)>,
    },
    Event(SourceEvent),
}

/// A decode thread: decodes the chunks it is dealt and passes every stage
/// on as an event. Ends when the poll thread hangs up or the merge thread
/// is gone.
fn decode_loop(
    mut decoders: Vec<Box<dyn Decoder>>,
    rx: std::sync::mpsc::Receiver<Stage>,
    tx: std::sync::mpsc::SyncSender<SourceEvent>,
) {
    while let Ok(stage) = rx.recv() {
        let event = match stage {
            Stage::Event(e) => e,
            Stage::Chunk {
                source,
                chunk,
                consumed,
            } => {
                let decoded = decoders[source].decode_chunk(chunk);
                SourceEvent::Batch {
                    source,
                    batch: decoded.batch,
                    dead: decoded.dead,
                    consumed,
                    marks: decoded.marks,
                }
            }
        };
        if tx.send(event).is_err() {
            return;
        }
    }
}

/// The merge thread: the poll thread deals stages to the decode threads in
/// turn, so taking their output in the same turn restores the order.
fn merge_loop(rxs: Vec<std::sync::mpsc::Receiver<SourceEvent>>, tx: mpsc::Sender<SourceEvent>) {
    for i in 0.. {
        let Ok(event) = rxs[i % rxs.len()].recv() else {
            return;
        };
        if tx.blocking_send(event).is_err() {
            return;
        }
    }
}

/// What the poll loop tracks per partition of a source (indexed by
/// partition id: cheaper per message than a map).
#[derive(Debug, Default, Clone)]
struct PartState {
    /// Its `PartitionStart` was sent.
    started: bool,
    /// Offset after the last record read.
    next: Option<i64>,
    /// Read since the last flush of its source.
    dirty: bool,
}

fn part(parts: &mut [Vec<PartState>], source: usize, partition: i32) -> &mut PartState {
    let list = &mut parts[source];
    let i = usize::try_from(partition).unwrap_or(0);
    if list.len() <= i {
        list.resize(i + 1, PartState::default());
    }
    &mut list[i]
}

fn next_of(parts: &[Vec<PartState>], source: usize, partition: i32) -> Option<i64> {
    let i = usize::try_from(partition).ok()?;
    parts.get(source)?.get(i)?.next
}

struct PollLoop {
    /// The consumer in use; also published in `shared`.
    consumer: Arc<BaseConsumer<Quiet>>,
    shared: SharedConsumer,
    rejoin: Rejoin,
    topics: Vec<String>,
    raw: Vec<RecordChunk>,
    options: KafkaSourceOptions,
    /// One queue per decode thread, dealt to in turn.
    tx: Vec<std::sync::mpsc::SyncSender<Stage>>,
    next_worker: usize,
    control: Arc<AtomicU8>,
    /// Per source, per partition id: what the loop knows of it.
    parts: Vec<Vec<PartState>>,
    /// Per source: when the oldest unflushed record arrived.
    oldest: Vec<Option<Instant>>,
    /// With `stop_at_end`: partitions still to read, and their end offset.
    ends: Option<HashMap<(usize, i32), i64>>,
    /// Per source: whether the engine feeds its topic (see
    /// [`SourceSpec::fed_by_engine`]).
    fed: Vec<bool>,
    /// Partitions of fed topics the engine has completed.
    completed: Arc<Mutex<HashSet<(usize, i32)>>>,
    /// Partitions announced as read to their end in this drain.
    drained: HashSet<(usize, i32)>,
    /// When every partition with an end offset had been read to it.
    ends_reached: Option<Instant>,
    /// Per source: the assignment last announced.
    assigned: Vec<Vec<i32>>,
    assignment_checked: Option<Instant>,
}

impl PollLoop {
    /// Deals a stage to the next decode thread; false if they are gone.
    fn send(&mut self, stage: Stage) -> bool {
        let w = self.next_worker % self.tx.len();
        self.next_worker = self.next_worker.wrapping_add(1);
        self.tx[w].send(stage).is_ok()
    }

    fn run(&mut self) {
        let sources = self.raw.len();
        self.parts = vec![Vec::new(); sources];
        self.oldest = vec![None; sources];
        self.assigned = vec![Vec::new(); sources];
        let poll_timeout = self
            .options
            .linger
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        let mut consumer = self.consumer.clone();
        loop {
            match self.control.load(Ordering::SeqCst) {
                STOP => break,
                DRAIN if self.ends.is_none() => {
                    match end_offsets(&consumer, &self.topics, &self.fed) {
                        Ok(mut ends) => {
                            // Partitions already read to their end get no more
                            // messages to tell us so. A drain asked for while
                            // running (several instances may share the group)
                            // reads the partitions held, not the others'.
                            let assigned = &self.assigned;
                            ends.retain(|&(s, p), high| {
                                assigned.get(s).is_some_and(|a| a.contains(&p))
                                    && next_of(&self.parts, s, p).is_none_or(|next| next < *high)
                            });
                            self.ends = Some(ends);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot fetch end offsets to drain; stopping now");
                            break;
                        }
                    }
                }
                _ => {}
            }
            if !self.announce_drained() {
                return;
            }
            if self.ends.as_ref().is_some_and(HashMap::is_empty) && self.fed_complete() {
                break;
            }
            if !self.check_assignment() {
                return;
            }
            match consumer.poll(poll_timeout) {
                None => self.ends_passed(&consumer),
                Some(Ok(m)) => {
                    let Some(source) = self.topics.iter().position(|t| t == m.topic()) else {
                        continue;
                    };
                    let partition = m.partition();
                    if !self.assigned[source].contains(&partition) && !self.check_assignment_now() {
                        return;
                    }
                    let offset = m.offset();
                    // Revoked and given back between two looks at the
                    // assignment (an eager rebalance), the consumer reads
                    // the partition again from its committed offset: the
                    // engine is told it left and came back, so it restores
                    // the checkpoint and takes the rows again as replays,
                    // never as new rows (late or counted twice).
                    let st = part(&mut self.parts, source, partition);
                    if st.started && st.next.is_some_and(|next| offset < next) {
                        tracing::info!(topic = %self.topics[source], partition, offset,
                            "the partition was given back and is read again from its commit");
                        let held = self.assigned[source].clone();
                        let without = held.iter().copied().filter(|&q| q != partition).collect();
                        if !self.announce(source, without) || !self.announce(source, held) {
                            return;
                        }
                    }
                    if !part(&mut self.parts, source, partition).started
                        && !self.partition_start(source, partition)
                    {
                        return;
                    }
                    self.raw[source].push(m.payload().unwrap_or(&[]), partition, offset);
                    let st = part(&mut self.parts, source, partition);
                    st.next = Some(offset + 1);
                    st.dirty = true;
                    self.oldest[source].get_or_insert_with(Instant::now);
                    if let Some(ends) = &mut self.ends
                        && ends
                            .get(&(source, partition))
                            .is_some_and(|&h| offset + 1 >= h)
                    {
                        ends.remove(&(source, partition));
                    }
                    if self.raw[source].spans.len() >= self.options.max_batch_records
                        && !self.flush(source)
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    if let Some((code, reason)) = consumer.client().fatal_error() {
                        let fenced = code == rdkafka::types::RDKafkaErrorCode::FencedInstanceId;
                        let why = if fenced {
                            match self.start_again(&reason) {
                                Ok(true) => {
                                    consumer = self.consumer.clone();
                                    continue;
                                }
                                Ok(false) => return,
                                Err(why) => why,
                            }
                        } else {
                            format!("the Kafka consumer failed for good: {code:?}: {reason}")
                        };
                        tracing::error!("{why}");
                        let _ = self.send(Stage::Event(SourceEvent::Failed(why)));
                        return;
                    }
                    consumer.context().poll_error(&e)
                }
            }
            for s in 0..sources {
                if self.oldest[s].is_some_and(|t| t.elapsed() >= self.options.linger)
                    && !self.flush(s)
                {
                    return;
                }
            }
        }
        for s in 0..sources {
            if !self.flush(s) {
                return;
            }
        }
        let _ = self.send(Stage::Event(SourceEvent::End));
    }

    /// After this instance's consumer was fenced: if the fence came from
    /// its own rejoin after a session lost in a broker stall (cf.
    /// librdkafka #3437 and #5585) — the group's member for the instance
    /// id has a member id this source's consumers were given, or the
    /// session was lost within [`SESSION_LOST_WINDOW`] — gives up every
    /// partition (`Assigned` with none: the engine treats it as a revoke)
    /// and joins again with a new consumer.
    /// `Ok(false)`: the engine is gone; `Err`: why this instance stops.
    fn start_again(&mut self, reason: &str) -> Result<bool, String> {
        self.rejoin.remember(&self.consumer);
        let session_lost = self
            .consumer
            .context()
            .session_lost_within(SESSION_LOST_WINDOW);
        let consumer = self.rejoin.again(&self.topics, reason, session_lost)?;
        for source in 0..self.raw.len() {
            if !self.announce(source, Vec::new()) {
                return Ok(false);
            }
        }
        *self.shared.write().unwrap_or_else(|p| p.into_inner()) = consumer.clone();
        self.consumer = consumer;
        self.assignment_checked = None;
        Ok(true)
    }

    /// Announces assignment changes, at most every 200 ms.
    /// While reading to an end: partitions whose read position has
    /// reached it although no message said so — a topic written in
    /// transactions ends with a commit marker, which is never delivered.
    fn ends_passed(&mut self, consumer: &BaseConsumer<Quiet>) {
        let Some(ends) = self.ends.as_mut() else {
            return;
        };
        if ends.is_empty() {
            return;
        }
        let Ok(positions) = consumer.position() else {
            return;
        };
        for e in positions.elements() {
            if let (Offset::Offset(o), Some(s)) =
                (e.offset(), self.topics.iter().position(|t| t == e.topic()))
                && ends.get(&(s, e.partition())).is_some_and(|&h| o >= h)
            {
                ends.remove(&(s, e.partition()));
            }
        }
    }

    /// While draining: announces each partition held (of a topic not fed
    /// by the engine) once it has nothing left to read, after its rows.
    /// False if the engine is gone.
    fn announce_drained(&mut self) -> bool {
        let Some(ends) = &self.ends else {
            return true;
        };
        let mut done: Vec<(usize, i32)> = Vec::new();
        for (s, parts) in self.assigned.iter().enumerate() {
            if self.fed.get(s).copied().unwrap_or(false) {
                continue;
            }
            for &p in parts {
                if !ends.contains_key(&(s, p)) && !self.drained.contains(&(s, p)) {
                    done.push((s, p));
                }
            }
        }
        for (source, partition) in done {
            if !self.flush(source) {
                return false;
            }
            self.drained.insert((source, partition));
            if !self.send(Stage::Event(SourceEvent::Drained { source, partition })) {
                return false;
            }
        }
        true
    }

    /// Whether every partition held of an engine-fed topic is complete,
    /// or [`FED_DRAIN_WAIT`] has passed since the other partitions were
    /// read to their ends (then the drain stops without the rest, and
    /// says so).
    fn fed_complete(&mut self) -> bool {
        let completed = self.completed.lock().unwrap_or_else(|p| p.into_inner());
        let waiting: Vec<(usize, i32)> = self
            .assigned
            .iter()
            .enumerate()
            .filter(|(s, _)| self.fed.get(*s).copied().unwrap_or(false))
            .flat_map(|(s, parts)| parts.iter().map(move |&p| (s, p)))
            .filter(|k| !completed.contains(k))
            .collect();
        if waiting.is_empty() {
            return true;
        }
        let since = *self.ends_reached.get_or_insert_with(Instant::now);
        if since.elapsed() < FED_DRAIN_WAIT {
            return false;
        }
        tracing::warn!(
            ?waiting,
            "draining: these repartition partitions never heard that every upstream partition was read to its end; stopping without what they may still receive"
        );
        true
    }

    fn check_assignment(&mut self) -> bool {
        if self
            .assignment_checked
            .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return true;
        }
        self.check_assignment_now()
    }

    fn check_assignment_now(&mut self) -> bool {
        self.assignment_checked = Some(Instant::now());
        self.rejoin.remember(&self.consumer);
        let Ok(list) = self.consumer.assignment() else {
            return true;
        };
        let mut now: Vec<Vec<i32>> = vec![Vec::new(); self.raw.len()];
        for el in list.elements() {
            if let Some(s) = self.topics.iter().position(|t| t == el.topic()) {
                now[s].push(el.partition());
            }
        }
        for (source, mut partitions) in now.into_iter().enumerate() {
            partitions.sort_unstable();
            if partitions == self.assigned[source] {
                continue;
            }
            // While draining, a partition revoked is its new holder's to
            // read to the end.
            if self.control.load(Ordering::SeqCst) == DRAIN
                && let Some(ends) = self.ends.as_mut()
            {
                ends.retain(|&(s, p), _| s != source || partitions.contains(&p));
            }
            if !self.announce(source, partitions) {
                return false;
            }
        }
        true
    }

    /// Announces `source`'s new assignment: rows already decoded belong to
    /// the old one and go first; partitions no longer held start afresh
    /// when they come back. False if the engine is gone.
    fn announce(&mut self, source: usize, partitions: Vec<i32>) -> bool {
        if !self.flush(source) {
            return false;
        }
        for p in std::mem::take(&mut self.assigned[source]) {
            if !partitions.contains(&p) {
                part(&mut self.parts, source, p).started = false;
            }
        }
        self.assigned[source] = partitions.clone();
        self.send(Stage::Event(SourceEvent::Assigned { source, partitions }))
    }

    /// Announces a partition's first record, with its committed checkpoint.
    /// Rows already decoded for this source are sent first, to keep order.
    fn partition_start(&mut self, source: usize, partition: i32) -> bool {
        if !self.flush(source) {
            return false;
        }
        part(&mut self.parts, source, partition).started = true;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topics[source], partition);
        let committed = match committed_offsets(&self.consumer, &tpl) {
            Ok(list) => list.elements().first().and_then(|el| match el.offset() {
                Offset::Offset(o) => Some((o, el.metadata().to_string())),
                _ => None,
            }),
            Err(e) => {
                tracing::warn!(topic = %self.topics[source], partition, error = %e,
                    "cannot read the committed checkpoint; starting this partition without one");
                None
            }
        };
        self.send(Stage::Event(SourceEvent::PartitionStart {
            source,
            partition,
            committed,
        }))
    }

    /// Hands `source`'s raw chunk to the decode thread; false if the
    /// engine is gone.
    fn flush(&mut self, source: usize) -> bool {
        self.oldest[source] = None;
        if self.raw[source].spans.is_empty() {
            return true;
        }
        let capacity = self.raw[source].data.capacity();
        let chunk = std::mem::replace(
            &mut self.raw[source],
            RecordChunk {
                data: Vec::with_capacity(capacity),
                ..Default::default()
            },
        );
        let consumed = self.parts[source]
            .iter_mut()
            .enumerate()
            .filter(|(_, st)| st.dirty)
            .filter_map(|(p, st)| {
                st.dirty = false;
                st.next.map(|n| (p as i32, n))
            })
            .collect();
        self.send(Stage::Chunk {
            source,
            chunk,
            consumed,
        })
    }
}
