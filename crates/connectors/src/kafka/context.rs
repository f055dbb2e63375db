//! The librdkafka client context every client of ours uses: librdkafka's
//! own log lines and global errors reach `tracing`, rate-limited per kind,
//! so a stopped broker says so once every few seconds (with how many lines
//! were held back) instead of dozens of times a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// How often one kind of librdkafka line is logged at most.
const EVERY: Duration = Duration::from_secs(10);

/// See the module docs.
#[derive(Default)]
pub struct Quiet {
    /// Per kind of line: when it was last logged, and how many since.
    seen: Mutex<HashMap<String, (Instant, u64)>>,
    /// The bootstrap servers, for "cannot reach" messages.
    brokers: String,
    /// What became of a consumer's commits.
    pub(crate) commits: Commits,
    /// When librdkafka last reported the group session lost (SESSTMOUT).
    session_lost: Mutex<Option<Instant>>,
    /// The group has given this consumer an assignment (empty or not).
    assigned: AtomicBool,
    /// From the latest statistics: consumer lag per (topic, partition)
    /// of the partitions assigned.
    lag: Mutex<Vec<(String, i32, i64)>>,
    /// Errors a consumer's poll returned since they were last taken, per
    /// kind: how many, and the latest one's text (see
    /// [`Quiet::poll_error`]).
    poll_errors: Mutex<BTreeMap<String, (u64, String)>>,
}

/// What became of a consumer's asynchronous commits (their results arrive
/// through [`ConsumerContext::commit_callback`] while the consumer polls).
#[derive(Default)]
pub(crate) struct Commits {
    /// Per (topic, partition): the metadata of the newest commit the broker
    /// confirmed.
    confirmed: Mutex<HashMap<(String, i32), String>>,
    /// A commit failed since this was last taken.
    failed: AtomicBool,
}

impl Commits {
    pub(crate) fn confirm(&self, offsets: &TopicPartitionList) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        for el in offsets.elements() {
            if matches!(el.offset(), Offset::Offset(_)) {
                confirmed.insert(
                    (el.topic().to_string(), el.partition()),
                    el.metadata().to_string(),
                );
            }
        }
    }

    pub(crate) fn confirmed(&self, topic: &str, partition: i32) -> Option<String> {
        let confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        confirmed.get(&(topic.to_string(), partition)).cloned()
    }

    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn take_failed(&self) -> bool {
        self.failed.swap(false, Ordering::SeqCst)
    }
}

impl Quiet {
    /// The context of a client of `client`'s cluster.
    pub fn new(client: &super::KafkaClientConfig) -> Quiet {
        Quiet {
            seen: Mutex::default(),
            brokers: client.bootstrap_servers.clone(),
            commits: Commits::default(),
            session_lost: Mutex::default(),
            assigned: AtomicBool::new(false),
            lag: Mutex::default(),
            poll_errors: Mutex::default(),
        }
    }

    /// Whether the group has given the consumer an assignment yet (an
    /// empty one included: another member holds what it would read).
    pub fn assigned_once(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
    }

    /// Logs a client error, at most once per kind and interval: librdkafka's
    /// global errors (through [`ClientContext::error`]) and the errors a
    /// consumer's poll returns share one limit.
    pub fn report(&self, error: &KafkaError, reason: &str) {
        let kind = format!("{:?}", error.rdkafka_error_code());
        let Some(held) = self.admit(&kind) else {
            return;
        };
        use rdkafka::types::RDKafkaErrorCode as C;
        let brokers = &self.brokers;
        match error.rdkafka_error_code() {
            Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve) => {
                tracing::error!(target: "librdkafka", held_back = held, %error, reason,
                    "cannot reach the Kafka brokers at {brokers}; retrying (check that they run and that [kafka] bootstrap_servers is right)")
            }
            _ => {
                tracing::warn!(target: "librdkafka", held_back = held, %error, reason, "kafka client error; continuing")
            }
        }
    }

    /// An error a consumer's poll returned. Losing the brokers is the
    /// cluster's problem and logged as such ([`Quiet::report`]); any other
    /// error (a partition that cannot be read or decompressed, a topic not
    /// authorised) is counted for the source it belongs to, and told by
    /// whoever takes them ([`Quiet::take_poll_errors`]) once per spell, not
    /// once per poll.
    pub(crate) fn poll_error(&self, error: &KafkaError) {
        use rdkafka::types::RDKafkaErrorCode as C;
        if matches!(
            error.rdkafka_error_code(),
            Some(C::AllBrokersDown | C::BrokerTransportFailure | C::Resolve)
        ) {
            self.report(error, "polling the consumer");
            return;
        }
        let kind = format!("{:?}", error.rdkafka_error_code());
        let mut errors = self.poll_errors.lock().unwrap_or_else(|p| p.into_inner());
        // Kinds are librdkafka's error codes: a bounded set.
        let entry = errors.entry(kind).or_default();
        entry.0 += 1;
        entry.1 = error.to_string();
    }

    /// The consumer's errors since the last call: per kind, how many and
    /// the latest one's text.
    pub fn take_poll_errors(&self) -> Vec<(u64, String)> {
        let mut errors = self.poll_errors.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *errors).into_values().collect()
    }

    /// Whether librdkafka reported the group session lost within `d`.
    pub(crate) fn session_lost_within(&self, d: Duration) -> bool {
        let lost = self.session_lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.is_some_and(|t| t.elapsed() < d)
    }

    /// Logs a failed commit, at most once per interval.
    pub(crate) fn commit_failed(&self, error: &KafkaError) {
        self.commits.fail();
        if let Some(held) = self.admit("commit failed") {
            tracing::warn!(target: "librdkafka", held_back = held, %error,
                "committing offsets failed; the next commit retries (until one succeeds, a restart re-reads the records since the last one)");
        }
    }

    /// Whether a line of `kind` may be logged now; if so, how many were
    /// held back since the last one.
    fn admit(&self, kind: &str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get_mut(kind) {
            Some((last, held)) if last.elapsed() < EVERY => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = Instant::now();
                Some(std::mem::take(held))
            }
            None => {
                if seen.len() > 1024 {
                    seen.clear();
                }
                seen.insert(kind.to_string(), (Instant::now(), 0));
                Some(0)
            }
        }
    }
}

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if fac == "SESSTMOUT" {
            *self.session_lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
        if matches!(level, RDKafkaLogLevel::Debug | RDKafkaLogLevel::Info) {
            tracing::debug!(target: "librdkafka", "{fac} {message}");
            return;
        }
        let Some(held) = self.admit(fac) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Warning | RDKafkaLogLevel::Notice => {
                tracing::warn!(target: "librdkafka", held_back = held, "{fac} {message}")
            }
            _ => tracing::error!(target: "librdkafka", held_back = held, "{fac} {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.report(&error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        let mut lag: Vec<(String, i32, i64)> = statistics
            .topics
            .into_iter()
            .flat_map(|(topic, t)| {
                t.partitions
                    .into_values()
                    // -1 is librdkafka's "unassigned" pseudo-partition;
                    // `desired` marks the partitions assigned here.
                    .filter(|p| p.partition >= 0 && p.desired)
                    .map(move |p| (topic.clone(), p.partition, lag_of(&p)))
            })
            .collect();
        lag.sort();
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }
}

/// A partition's consumer lag. librdkafka says -1 until this consumer
/// has a position there, even for a partition holding nothing: then the
/// lag is what the partition holds (0 when empty), -1 only while its
/// offsets are unknown too.
fn lag_of(p: &rdkafka::statistics::Partition) -> i64 {
    if p.consumer_lag >= 0 {
        p.consumer_lag
    } else if p.hi_offset >= 0 && p.lo_offset >= 0 {
        (p.hi_offset - p.lo_offset).max(0)
    } else {
        -1
    }
}

impl Quiet {
    /// See [`super::KafkaSource::consumer_lag`].
    pub fn consumer_lag(&self) -> Vec<(String, i32, i64)> {
        self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl ConsumerContext for Quiet {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if matches!(rebalance, rdkafka::consumer::Rebalance::Assign(_)) {
            self.assigned.store(true, Ordering::Relaxed);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.commits.confirm(offsets),
            Err(e) => self.commit_failed(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval() {
        let q = Quiet::default();
        assert_eq!(q.admit("FAIL"), Some(0));
        for _ in 0..50 {
            assert_eq!(q.admit("FAIL"), None);
        }
        assert_eq!(q.admit("CONNECT"), Some(0));
        // Pretend the interval passed.
        q.seen.lock().unwrap().get_mut("FAIL").unwrap().0 -= EVERY;
        assert_eq!(q.admit("FAIL"), Some(50));
    }
}
