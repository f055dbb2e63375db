//! The alerting stage of a consumer group, run by the instance that owns
//! the alerting relay (`alerting_owner.rs`): the [`Alerter`] (rule rows →
//! alert lifecycle → grouped notifications) with the changes to the
//! silences topic, which the follower thread hands over and which are
//! applied before each step.

use telemine_connectors::kafka::TableEntry;
use tokio::sync::mpsc;

use telemine_alerting::config::AlertingConfig;
use telemine_alerting::lifecycle::Update;
use telemine_alerting::payload::Payload;
use telemine_alerting::{Alerter, Evaluation};
use telemine_observe::metrics::Metrics;
use telemine_types::alert::Alert;

/// See the module docs.
pub(crate) struct AlertingStage {
    alerter: Alerter,
    /// Changes to the silences topic since the last step.
    silences: mpsc::UnboundedReceiver<TableEntry>,
    /// When the active alerts were last shown to the API.
    published: Option<std::time::Instant>,
    /// A step ran since they were.
    unpublished: bool,
}

/// How often the active alerts are shown to the API and `/metrics` at
/// most: a step may come with every relay message, and an incident may
/// hold thousands of alerts.
const PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl AlertingStage {
    pub(crate) fn new(alerter: Alerter, silences: mpsc::UnboundedReceiver<TableEntry>) -> Self {
        AlertingStage {
            alerter,
            silences,
            published: None,
            unpublished: false,
        }
    }

    /// Starts afresh from `saved` (the state the group's last owner
    /// saved, if any), keeping the silences; an unreadable state is
    /// logged and the alerter starts without it.
    pub(crate) fn take_over(&mut self, config: &AlertingConfig, saved: Option<&[u8]>) {
        let mut alerter = Alerter::new(config);
        if self.alerter.records_states() {
            alerter.record_states();
        }
        alerter.silences = std::mem::take(&mut self.alerter.silences);
        if let Some(state) = saved
            && let Err(e) = alerter.restore(state)
        {
            tracing::warn!(error = %e, "the saved alerting state cannot be read; starting without it");
        }
        self.alerter = alerter;
    }

    /// One step on event time: the silences as they stand now, then the
    /// rule evaluations and rows, with the alerting clock at `watermark`
    /// (see [`Alerter::step`]). Returns the notifications due.
    pub(crate) fn step(
        &mut self,
        evaluations: Vec<Evaluation>,
        rows: Vec<Alert>,
        watermark: Option<i64>,
    ) -> Vec<Payload> {
        while let Ok((id, value)) = self.silences.try_recv() {
            self.alerter.silences.apply_message(&id, value.as_deref());
        }
        self.unpublished = true;
        self.alerter.step(evaluations, rows, watermark)
    }

    /// End of input: every group's last notification (see
    /// [`Alerter::finish`]).
    pub(crate) fn finish(&mut self) -> Vec<Payload> {
        self.alerter.finish()
    }

    /// The alerts' state changes since the last call (for the
    /// Alertmanagers; empty unless the alerter records them).
    pub(crate) fn take_states(&mut self) -> Vec<Update> {
        self.alerter.take_states()
    }

    /// Shows the alerts pending and firing now to the API and in
    /// `telemine_alerts_active`, if a step ran since they were last shown:
    /// at most every [`PUBLISH_EVERY`], unless `now`. The owner also calls
    /// it on its timer, so the last step is shown within a tick of that.
    pub(crate) fn publish(&mut self, metrics: &Metrics, now: bool) {
        let recent = self.published.is_some_and(|t| t.elapsed() < PUBLISH_EVERY);
        if !self.unpublished || (recent && !now) {
            return;
        }
        self.unpublished = false;
        self.published = Some(std::time::Instant::now());
        let active = self.alerter.active();
        let firing = active.iter().filter(|a| a["state"] == "firing").count();
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics
            .alerts_active
            .with_label_values(&["firing"])
            .set(count(firing));
        metrics
            .alerts_active
            .with_label_values(&["pending"])
            .set(count(active.len() - firing));
        metrics.live.set_alerts(active);
    }

    /// The alerting state as saved to the state topic.
    pub(crate) fn snapshot(&self) -> String {
        self.alerter.snapshot()
    }
}
