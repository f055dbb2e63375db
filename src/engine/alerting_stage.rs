//! The alerting stage of a consumer group, run by the instance that owns
//! the alerting relay (`alerting_owner.rs`): the [`Alerter`] (rule rows →
//! alert lifecycle → grouped notifications) with the changes to the
//! silences topic, which the follower thread hands over and which are
//! applied before each step.

use telemine_connectors::kafka::TableEntry;
use tokio::sync::mpsc;

use crate::alert::Alert;
use crate::alerting::lifecycle::Update;
use crate::alerting::payload::Payload;
use crate::alerting::{Alerter, Evaluation};
use crate::config::AlertingConfig;

/// See the module docs.
pub(crate) struct AlertingStage {
    alerter: Alerter,
    /// Changes to the silences topic since the last step.
    silences: mpsc::UnboundedReceiver<TableEntry>,
}

impl AlertingStage {
    pub(crate) fn new(alerter: Alerter, silences: mpsc::UnboundedReceiver<TableEntry>) -> Self {
        AlertingStage { alerter, silences }
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

    /// The alerting state as saved to the state topic.
    pub(crate) fn snapshot(&self) -> String {
        self.alerter.snapshot()
    }
}
