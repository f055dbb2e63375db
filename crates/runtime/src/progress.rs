//! What `run` tells about itself while it runs, besides `/metrics`: the
//! consumer lag librdkafka reports, copied into `telemine_consumer_lag`,
//! and a progress line in the log every `[engine] progress_interval`
//! (records/s since the last line, the largest lag, alerts firing,
//! notifications sent), so a log alone shows whether the engine keeps up.

use std::time::{Duration, Instant};

use telemine_observe::metrics::Metrics;

/// See the module docs.
pub(crate) struct Progress {
    every: Duration,
    last: Instant,
    records: u64,
    notifications: u64,
}

impl Progress {
    pub(crate) fn new(every: Duration, metrics: &Metrics) -> Progress {
        Progress {
            every,
            last: Instant::now(),
            records: Metrics::get(&metrics.records_decoded),
            notifications: Metrics::get(&metrics.notifications),
        }
    }

    /// Publishes what the engine holds (see
    /// [`telemine_stream::driver::Driver::held`]): open windows per view,
    /// buffered rows per source.
    pub(crate) fn held(&self, metrics: &Metrics, held: telemine_stream::windows::Held) {
        for (view, n) in held.open_windows {
            metrics.open_windows.with_label_values(&[&view]).set(n);
        }
        for (source, n) in held.buffered_rows {
            metrics.buffered_rows.with_label_values(&[&source]).set(n);
        }
        for (view, n) in held.view_rows {
            metrics
                .view_buffered_rows
                .with_label_values(&[&view])
                .set(n);
        }
    }

    /// Publishes `lag` (per topic and partition assigned here, from
    /// [`telemine_connectors::kafka::KafkaSource::consumer_lag`]) and logs
    /// the progress line when it is due.
    pub(crate) fn tick(&mut self, metrics: &Metrics, lag: &[(String, i32, i64)]) {
        // Partitions no longer assigned drop out of the gauge.
        metrics.consumer_lag.reset();
        for (topic, partition, n) in lag {
            metrics
                .consumer_lag
                .with_label_values(&[topic, &partition.to_string()])
                .set(*n);
        }
        let elapsed = self.last.elapsed();
        if self.every.is_zero() || elapsed < self.every {
            return;
        }
        let records = Metrics::get(&metrics.records_decoded);
        let notifications = Metrics::get(&metrics.notifications);
        let rate = (records - self.records.min(records)) as f64 / elapsed.as_secs_f64();
        let max_lag = lag.iter().map(|(_, _, n)| *n).max();
        let firing = metrics.alerts_active.with_label_values(&["firing"]).get();
        tracing::info!(
            records_per_s = format!("{rate:.0}"),
            records,
            max_lag = max_lag.map_or("unknown".to_string(), |n| n.to_string()),
            partitions = metrics.partitions_assigned.get(),
            alerts_firing = firing,
            notifications = notifications - self.notifications.min(notifications),
            dead_letters = Metrics::get(&metrics.dead_letters),
            late = Metrics::get(&metrics.late_records),
            "progress"
        );
        self.last = Instant::now();
        self.records = records;
        self.notifications = notifications;
    }
}
