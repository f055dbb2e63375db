//! Every counter the engine keeps, declared once with its meaning.
//!
//! The HTTP `/metrics` endpoint (a later issue) will expose these in the
//! Prometheus text format; today `run` logs them and `demo` / `bench` print
//! them.

use std::sync::atomic::{AtomicU64, Ordering};

/// The engine's counters. Cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records decoded into rows.
    pub records_decoded: AtomicU64,
    /// Records sent to the dead-letter topic (malformed, wrong type, no
    /// event time).
    pub dead_letters: AtomicU64,
    /// Rows older than every open window of their source: not counted in
    /// any window.
    pub late_records: AtomicU64,
    /// Records dropped as duplicates (same `dedupe_by` values and event time
    /// as a record already in an open window).
    pub duplicates_dropped: AtomicU64,
    /// Rows re-read after a restart that belong to windows already emitted
    /// before it (skipped, by design).
    pub replayed_skipped: AtomicU64,
    /// Windows closed (per view, per close; one close may cover many keys).
    pub window_closes: AtomicU64,
    /// TUMBLE windows evaluated again because records arrived within the
    /// source's allowed lateness after they closed.
    pub late_firings: AtomicU64,
    /// Rule rows raised (one per alert instance and window).
    pub alerts: AtomicU64,
    /// Notifications (webhook payloads) produced to the alerts topic.
    pub notifications: AtomicU64,
    /// Notifications a webhook receiver accepted.
    pub webhook_deliveries: AtomicU64,
    /// Notifications a webhook receiver refused, or whose retries ran out.
    pub webhook_failures: AtomicU64,
    /// Notifications dropped because a webhook receiver's queue was full
    /// (the oldest waiting one goes; summed over receivers, each drop is
    /// logged with the receiver's URL).
    pub webhook_queue_drops: AtomicU64,
    /// Batches of alerts an Alertmanager accepted (`POST /api/v2/alerts`).
    pub alertmanager_deliveries: AtomicU64,
    /// Batches of alerts an Alertmanager refused, or whose retries ran out
    /// (firing ones go again with the next re-send).
    pub alertmanager_failures: AtomicU64,
    /// Alerts not taken because an Alertmanager's `queue_size` alerts were
    /// already held (summed over Alertmanagers, each drop logged with the
    /// URL).
    pub alertmanager_queue_drops: AtomicU64,
    /// View or rule evaluations that failed (the engine keeps going).
    pub sql_errors: AtomicU64,
    /// View or rule evaluations stopped because they exceeded
    /// `engine.query_memory_limit` (also counted in `sql_errors`).
    pub sql_memory_exceeded: AtomicU64,
    /// View or rule evaluations stopped at `engine.query_time_limit`
    /// (also counted in `sql_errors`).
    pub sql_time_exceeded: AtomicU64,
    /// SQL folder reloads swapped in.
    pub sql_reloads: AtomicU64,
    /// SQL folder reloads refused (the running SQL kept).
    pub sql_reload_failures: AtomicU64,
    /// Input partitions assigned to this instance now, over every source
    /// (a gauge).
    pub partitions_assigned: AtomicU64,
    /// Offset commits made.
    pub commits: AtomicU64,
    /// Messages telemine produced that the broker refused for what they
    /// are (too large, invalid): logged, dropped, and the stream goes on.
    pub messages_refused: AtomicU64,
    /// Dead letters and late records cut to fit `sinks.max_message_bytes`.
    pub messages_cut: AtomicU64,
    /// Notifications that could not carry every alert of their group
    /// (`truncatedAlerts` > 0).
    pub notifications_truncated: AtomicU64,
    /// Messages written to repartition topics (rows and marks).
    pub repartition_messages: AtomicU64,
    /// Rows of scored views dropped by the scoring stage as copies (relayed
    /// again after a restart or rebalance, or for windows already scored).
    pub scoring_copies: AtomicU64,
    /// Window ends scored before the alerting clock passed them, because
    /// the rows held for scoring reached their bound.
    pub scoring_forced: AtomicU64,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One line for logs: `records=… dead_letters=… …`.
    pub fn summary(&self) -> String {
        format!(
            "records={} dead_letters={} late={} duplicates={} replayed_skipped={} window_closes={} late_firings={} alerts={} notifications={} webhook_deliveries={} webhook_failures={} webhook_queue_drops={} alertmanager_deliveries={} alertmanager_failures={} alertmanager_queue_drops={} sql_errors={} sql_memory_exceeded={} sql_time_exceeded={} sql_reloads={} sql_reload_failures={} commits={} messages_refused={} messages_cut={} notifications_truncated={} repartition_messages={} scoring_copies={} scoring_forced={}",
            Self::get(&self.records_decoded),
            Self::get(&self.dead_letters),
            Self::get(&self.late_records),
            Self::get(&self.duplicates_dropped),
            Self::get(&self.replayed_skipped),
            Self::get(&self.window_closes),
            Self::get(&self.late_firings),
            Self::get(&self.alerts),
            Self::get(&self.notifications),
            Self::get(&self.webhook_deliveries),
            Self::get(&self.webhook_failures),
            Self::get(&self.webhook_queue_drops),
            Self::get(&self.alertmanager_deliveries),
            Self::get(&self.alertmanager_failures),
            Self::get(&self.alertmanager_queue_drops),
            Self::get(&self.sql_errors),
            Self::get(&self.sql_memory_exceeded),
            Self::get(&self.sql_time_exceeded),
            Self::get(&self.sql_reloads),
            Self::get(&self.sql_reload_failures),
            Self::get(&self.commits),
            Self::get(&self.messages_refused),
            Self::get(&self.messages_cut),
            Self::get(&self.notifications_truncated),
            Self::get(&self.repartition_messages),
            Self::get(&self.scoring_copies),
            Self::get(&self.scoring_forced),
        )
    }
}
