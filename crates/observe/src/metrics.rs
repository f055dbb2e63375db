//! Every metric the engine keeps, declared once with its name, help text
//! and labels, in the Prometheus registry `GET /metrics` exposes
//! (`http/`). `run` also logs them in one line at shutdown and in its
//! progress lines; `demo` and `bench` print them.
//!
//! - Unlabelled counters are cheap to bump from any thread
//!   ([`Metrics::add`]); they are named `telemine_<field>_total`.
//! - Labelled families (per source and partition, per view, per rule, per
//!   model, per receiver) are named `telemine_<field>`; counters among
//!   them end in `_total`, durations in `_seconds`. Label values come from
//!   the config and the SQL (source, view, rule and model names), never
//!   from records, so the number of series is bounded by what the operator
//!   declared (partition numbers are bounded by the topics').
//! - [`Metrics::live`] holds what the JSON API and the live page show
//!   (recent rows, scores, active alerts): bounded, see `live.rs`.

use prometheus::core::Collector;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::live::Live;

/// How one kind of metric is made from its declaration.
trait Declare: Collector + Clone + 'static {
    fn declare(field: &str, help: &str, labels: &[&str]) -> Self;
}

// The names and labels below are literals of this file, checked by the
// unit test at the bottom: a failure here is a bug, never outside data.
const VALID: &str = "metric names and labels are declared valid in metrics.rs";

impl Declare for IntCounter {
    fn declare(field: &str, help: &str, _: &[&str]) -> Self {
        IntCounter::new(format!("telemine_{field}_total"), help).expect(VALID)
    }
}

impl Declare for IntGauge {
    fn declare(field: &str, help: &str, _: &[&str]) -> Self {
        IntGauge::new(format!("telemine_{field}"), help).expect(VALID)
    }
}

impl Declare for IntCounterVec {
    fn declare(field: &str, help: &str, labels: &[&str]) -> Self {
        IntCounterVec::new(Opts::new(format!("telemine_{field}"), help), labels).expect(VALID)
    }
}

impl Declare for IntGaugeVec {
    fn declare(field: &str, help: &str, labels: &[&str]) -> Self {
        IntGaugeVec::new(Opts::new(format!("telemine_{field}"), help), labels).expect(VALID)
    }
}

impl Declare for GaugeVec {
    fn declare(field: &str, help: &str, labels: &[&str]) -> Self {
        GaugeVec::new(Opts::new(format!("telemine_{field}"), help), labels).expect(VALID)
    }
}

impl Declare for HistogramVec {
    fn declare(field: &str, help: &str, labels: &[&str]) -> Self {
        // 100 µs to about 26 s: a view over a busy window to a query
        // stopped at its time limit.
        let buckets = prometheus::exponential_buckets(0.0001, 2.0, 19).expect(VALID);
        HistogramVec::new(
            HistogramOpts::new(format!("telemine_{field}"), help).buckets(buckets),
            labels,
        )
        .expect(VALID)
    }
}

macro_rules! declare_metrics {
    ($( $(#[doc = $doc:literal])+ $field:ident : $kind:ident $([$($label:literal),+])? ; )*) => {
        /// The engine's metrics (see the module docs). Cheap to bump from
        /// any thread; one per process, shared as `Arc<Metrics>`.
        pub struct Metrics {
            $( $(#[doc = $doc])+ pub $field: $kind, )*
            /// What the API and the live page show (see `live.rs`).
            pub live: Live,
            registry: Registry,
        }

        impl Default for Metrics {
            fn default() -> Self {
                let registry = Registry::new();
                $(
                    let $field = <$kind as Declare>::declare(
                        stringify!($field),
                        concat!($($doc),+).trim(),
                        &[$($($label),+)?],
                    );
                    registry.register(Box::new($field.clone())).expect(VALID);
                )*
                Metrics { $($field,)* live: Live::default(), registry }
            }
        }
    };
}

declare_metrics! {
    /// Records decoded into rows.
    records_decoded: IntCounter;
    /// Records sent to the dead-letter topic (malformed, wrong type, no
    /// event time).
    dead_letters: IntCounter;
    /// Rows older than every open window of their source: not counted in
    /// any window.
    late_records: IntCounter;
    /// Records dropped as duplicates (same `dedupe_by` values and event
    /// time as a record already in an open window).
    duplicates_dropped: IntCounter;
    /// Rows re-read after a restart that belong to windows already emitted
    /// before it (skipped, by design).
    replayed_skipped: IntCounter;
    /// Windows closed (per view, per close; one close may cover many keys).
    window_closes: IntCounter;
    /// TUMBLE windows evaluated again because records arrived within the
    /// source's allowed lateness after they closed.
    late_firings: IntCounter;
    /// Rule rows raised (one per alert instance and window).
    alerts: IntCounter;
    /// Notifications (webhook payloads) produced to the alerts topic.
    notifications: IntCounter;
    /// Notifications a webhook receiver accepted.
    webhook_deliveries: IntCounter;
    /// Notifications a webhook receiver refused, or whose retries ran out.
    webhook_failures: IntCounter;
    /// Notifications dropped because a webhook receiver's queue was full
    /// (the oldest waiting one goes; summed over receivers, each drop is
    /// logged with the receiver's URL).
    webhook_queue_drops: IntCounter;
    /// Batches of alerts an Alertmanager accepted (`POST /api/v2/alerts`).
    alertmanager_deliveries: IntCounter;
    /// Batches of alerts an Alertmanager refused, or whose retries ran out
    /// (firing ones go again with the next re-send).
    alertmanager_failures: IntCounter;
    /// Alerts not taken because an Alertmanager's `queue_size` alerts were
    /// already held (summed over Alertmanagers, each drop logged with the
    /// URL).
    alertmanager_queue_drops: IntCounter;
    /// View or rule evaluations that failed (the engine keeps going).
    sql_errors: IntCounter;
    /// View or rule evaluations stopped because they exceeded
    /// `engine.query_memory_limit` (also counted in `sql_errors`).
    sql_memory_exceeded: IntCounter;
    /// View or rule evaluations stopped at `engine.query_time_limit` (also
    /// counted in `sql_errors`).
    sql_time_exceeded: IntCounter;
    /// SQL folder reloads swapped in.
    sql_reloads: IntCounter;
    /// SQL folder reloads refused (the running SQL kept).
    sql_reload_failures: IntCounter;
    /// Input partitions assigned to this instance now, over every source.
    partitions_assigned: IntGauge;
    /// Offset commits made.
    commits: IntCounter;
    /// Messages telemine produced that the broker refused for what they
    /// are (too large, invalid): logged, dropped, and the stream goes on.
    messages_refused: IntCounter;
    /// Dead letters and late records cut to fit `sinks.max_message_bytes`.
    messages_cut: IntCounter;
    /// Notifications that could not carry every alert of their group
    /// (`truncatedAlerts` > 0).
    notifications_truncated: IntCounter;
    /// Messages written to repartition topics (rows and marks).
    repartition_messages: IntCounter;
    /// Rows of scored views dropped by the scoring stage as copies (relayed
    /// again after a restart or rebalance, or for windows already scored).
    scoring_copies: IntCounter;
    /// Window ends scored before the alerting clock passed them, because
    /// the rows held for scoring reached their bound.
    scoring_forced: IntCounter;
    /// Records read and decoded, per source and partition.
    records_in_total: IntCounterVec ["source", "partition"];
    /// Rows taken into windows (not late, not duplicates, not replayed),
    /// per source and partition.
    records_out_total: IntCounterVec ["source", "partition"];
    /// Dead letters per source.
    source_dead_letters_total: IntCounterVec ["source"];
    /// Late rows per source (older than every open window of theirs).
    source_late_records_total: IntCounterVec ["source"];
    /// Duplicates dropped per source (`dedupe_by`).
    source_duplicates_total: IntCounterVec ["source"];
    /// Errors reading a source, by kind (decode: a record not decoded,
    /// sent to the dead-letter topic; consumer: an error the Kafka consumer
    /// reported for the source's topic, source "*" when it names no
    /// source's topic). The log tells the first of a spell and summarises
    /// the rest once a minute; this counts every one.
    source_errors_total: IntCounterVec ["source", "kind"];
    /// Messages the consumer has not read yet, per topic and partition
    /// (librdkafka's consumer lag; -1 while unknown).
    consumer_lag: IntGaugeVec ["topic", "partition"];
    /// Event-time watermark per source and partition (Unix seconds): every
    /// window ending at or before it has been evaluated.
    watermark_seconds: GaugeVec ["source", "partition"];
    /// Windows open now, per view.
    open_windows: IntGaugeVec ["view"];
    /// Input rows held for windows not yet closed, per source (its views
    /// share them).
    buffered_rows: IntGaugeVec ["source"];
    /// Per view: the rows of its source's buffer inside its open windows
    /// (a SESSION view: every row its source buffers).
    view_buffered_rows: IntGaugeVec ["view"];
    /// How long one evaluation of a view or a rule took (kind "view" or
    /// "rule").
    evaluation_seconds: HistogramVec ["kind", "name"];
    /// Evaluations of a view or a rule that failed (its memory or time
    /// limit, an error in its SQL at run time).
    evaluation_errors_total: IntCounterVec ["kind", "name"];
    /// How long a model took to score one closed window's rows.
    model_scoring_seconds: HistogramVec ["model"];
    /// Rows a model scored.
    model_rows_total: IntCounterVec ["model"];
    /// Alerts held by the alerter now, by state (pending, firing).
    alerts_active: IntGaugeVec ["state"];
}

impl telemine_sql::Observer for Metrics {
    fn evaluated(&self, kind: &str, name: &str, seconds: f64, failed: bool) {
        self.evaluation_seconds
            .with_label_values(&[kind, name])
            .observe(seconds);
        if failed {
            Metrics::add_to(&self.evaluation_errors_total, &[kind, name], 1);
        }
    }

    fn scored(&self, model: &str, rows: usize, seconds: f64) {
        self.model_scoring_seconds
            .with_label_values(&[model])
            .observe(seconds);
        Metrics::add_to(&self.model_rows_total, &[model], rows as u64);
    }

    fn view_rows(
        &self,
        view: &str,
        keys: &[String],
        batches: &[datafusion::arrow::record_batch::RecordBatch],
    ) {
        self.live.record(view, keys, batches);
    }
}

impl Metrics {
    pub fn add(counter: &IntCounter, n: u64) {
        counter.inc_by(n);
    }

    pub fn get(counter: &IntCounter) -> u64 {
        counter.get()
    }

    /// Bumps family `counter`'s series for `labels` by `n` (nothing when
    /// `n` is 0, so no series appears before it counts anything).
    pub fn add_to(counter: &IntCounterVec, labels: &[&str], n: u64) {
        if n > 0 {
            counter.with_label_values(labels).inc_by(n);
        }
    }

    /// Times `f` into family `histogram`'s series for `labels`.
    pub fn time<T>(histogram: &HistogramVec, labels: &[&str], f: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let out = f();
        histogram
            .with_label_values(labels)
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// Every metric in Prometheus' text exposition format (0.0.4).
    pub fn exposition(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "bug: the metrics could not be encoded");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// One line for logs: every unlabelled counter as `name=value`
    /// (`records_decoded=… dead_letters=… …`), read from the registry so a
    /// new counter appears without being listed here.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for family in self.registry.gather() {
            if family.get_field_type() != prometheus::proto::MetricType::COUNTER {
                continue;
            }
            let [metric] = family.get_metric() else {
                continue;
            };
            if !metric.get_label().is_empty() {
                continue;
            }
            let name = family.name();
            let key = name.strip_prefix("telemine_").unwrap_or(name);
            let key = key.strip_suffix("_total").unwrap_or(key);
            parts.push(format!("{key}={}", metric.get_counter().get_value()));
        }
        parts.join(" ")
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_declared_once_with_help_and_exposed() {
        let m = Metrics::default();
        Metrics::add(&m.records_decoded, 3);
        Metrics::add_to(&m.records_in_total, &["telemetry", "0"], 2);
        Metrics::add_to(&m.records_in_total, &["telemetry", "1"], 0);
        m.watermark_seconds
            .with_label_values(&["telemetry", "0"])
            .set(1.5);
        Metrics::time(&m.evaluation_seconds, &["view", "host_1m"], || ());
        let text = m.exposition();
        assert!(text.contains("# HELP telemine_records_decoded_total Records decoded into rows."));
        assert!(text.contains("# TYPE telemine_records_decoded_total counter"));
        assert!(text.contains("telemine_records_decoded_total 3"));
        assert!(text.contains(r#"telemine_records_in_total{partition="0",source="telemetry"} 2"#));
        assert!(
            !text.contains(r#"partition="1""#),
            "a zero add makes no series"
        );
        assert!(
            text.contains(r#"telemine_watermark_seconds{partition="0",source="telemetry"} 1.5"#)
        );
        assert!(
            text.contains(r#"telemine_evaluation_seconds_count{kind="view",name="host_1m"} 1"#)
        );
        // Help texts are whole sentences, never empty.
        for line in text.lines().filter(|l| l.starts_with("# HELP")) {
            assert!(line.split(' ').count() > 4, "{line}");
        }
    }

    #[test]
    fn the_summary_line_names_every_unlabelled_counter_and_only_those() {
        let m = Metrics::default();
        Metrics::add(&m.records_decoded, 3);
        Metrics::add(&m.dead_letters, 1);
        Metrics::add_to(&m.records_in_total, &["telemetry", "0"], 2);
        let summary = m.summary();
        let pairs: Vec<&str> = summary.split(' ').collect();
        assert!(pairs.contains(&"records_decoded=3"), "{summary}");
        assert!(pairs.contains(&"dead_letters=1"), "{summary}");
        assert!(pairs.contains(&"commits=0"), "{summary}");
        assert!(
            !summary.contains("records_in"),
            "labelled families stay out: {summary}"
        );
        let counters = m
            .registry
            .gather()
            .iter()
            .filter(|f| f.get_field_type() == prometheus::proto::MetricType::COUNTER)
            .filter(|f| f.get_metric().iter().all(|x| x.get_label().is_empty()))
            .count();
        assert_eq!(pairs.len(), counters);
    }
}
