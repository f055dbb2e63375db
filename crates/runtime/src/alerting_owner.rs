//! The alerting stage of a consumer group, run by whichever of its
//! instances holds the alerting relay (see `relay.rs`): every instance
//! subscribes to the relay topic in the group `GROUP.alerting`, and Kafka
//! gives its only partition to one of them.
//!
//! On gaining it, the owner reads the alerting state the group saved last
//! (`[alerting] state_topic`, key `GROUP`), takes the partition counts of
//! every source topic (the partitions whose progress the alerting clock
//! waits for), and reads the relay from the group's committed offset:
//! each message's progress goes on the [`Board`], its rows and
//! evaluations into the alerter with the board's clock, and what is due
//! is notified. Every `engine.commit_interval` it saves the alerting
//! state, waits for the broker to acknowledge it and the notifications,
//! then commits the relay offset (at-least-once: a new owner re-reads the
//! messages since, which change nothing already applied, see `relay.rs`;
//! under `delivery = "exactly_once"` the notifications, the state and the
//! relay offset are committed in one transaction instead).
//! On losing the partition it drops the alerter; the next owner goes on
//! from the committed offset and the saved state.
//!
//! When models score views, the owner also scores them (`deferred.rs`):
//! on gaining the relay it gives the models fresh detectors with the state
//! the group saved, takes the scored views' rows from the relay, scores
//! them as the alerting clock passes their window ends and hands the rule
//! rows and evaluations to the alerter with the relayed ones. Each save
//! saves the detectors' state too, and commits the relay no further than
//! the first message whose rows are still waiting to be scored.

use std::time::{Duration, Instant};

use telemine_connectors::kafka::{OwnedEvent, OwnedTopic, Table};
use tokio::sync::{mpsc, watch};

use std::sync::Arc;

use super::alerting_stage::AlertingStage;
use super::error::PipelineError;
use super::outputs::Notifier;
use super::relay::{self, Board, Relay};
use super::startup::{partition_counts_patiently, read_group_state};
use super::state_store::StateStore;
use crate::settings::Settings;
use telemine_detector::Detector;
use telemine_observe::metrics::Metrics;
use telemine_sql::SqlSet;
use telemine_stream::chunked;
use telemine_stream::deferred::{self, Scored, ScoringStage, ViewRows};

/// What the owner needs to score the models' views (see `deferred.rs`).
pub(crate) struct OwnerScoring {
    /// The owner's own SQL set (planned apart from the input side's, whose
    /// evaluations run meanwhile); each gain scores through a handle on
    /// it with fresh detectors.
    pub sql: SqlSet,
    pub models: Vec<telemine_detector::Settings>,
    pub max_lateness_ms: i64,
    pub metrics: Arc<Metrics>,
    /// SQL reloaded by the input side (handles whose files are planned
    /// again here).
    pub reloads: mpsc::UnboundedReceiver<SqlSet>,
}

/// The scoring of one ownership.
struct Scoring {
    stage: ScoringStage,
    detectors: Vec<Arc<Detector>>,
}

/// What the instance's input side tells the owner task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Running,
    /// The input side drained its partitions and stopped: an owner waits
    /// until every partition was reported at its end, then finishes; a
    /// member that does not own the relay stops.
    InputDone,
    /// Stop now: save, settle, commit what was applied.
    Stop,
}

/// How long an owner whose input is done waits for a relay message before
/// it finishes with what it has (a partition whose instance died before
/// draining it, for example).
const DRAIN_WAIT: Duration = Duration::from_secs(120);

/// How long the last save and commit wait for the broker.
const LAST_WAIT: Duration = Duration::from_secs(30);

/// What the owner keeps while it holds the relay.
struct Held {
    state: StateStore,
    board: Board,
    /// The offset of the first relay message not yet applied.
    next: Option<i64>,
    /// Every partition was reported at its end, and the alerter finished.
    finished: bool,
    scoring: Option<Scoring>,
}

/// Runs until told to stop (or, once the input is done, until the alerting
/// it owns is finished, or at once if it owns nothing).
pub(crate) async fn run(
    settings: &Settings,
    topics: &[String],
    mut stage: AlertingStage,
    mut notifier: Notifier,
    mut control: watch::Receiver<Control>,
    mut scoring: Option<OwnerScoring>,
) -> Result<(), PipelineError> {
    let topic = relay::topic(&settings.kafka);
    let group = relay::group(&settings.kafka);
    let instance = settings
        .kafka
        .group_instance_id()
        .map(|i| format!("{i}-alerting"));
    let (tx, mut rx) = mpsc::channel(256);
    let consumer = OwnedTopic::start(&settings.kafka, &group, instance.as_deref(), &topic, tx)?;
    let mut held: Option<Held> = None;
    let mut tick = tokio::time::interval(settings.engine.commit_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut input_done = false;
    let mut last_message = Instant::now();
    let result: Result<(), PipelineError> = loop {
        tokio::select! {
            biased;
            changed = control.changed() => {
                let c = if changed.is_err() { Control::Stop } else { *control.borrow_and_update() };
                match c {
                    Control::Running => {}
                    Control::Stop => break last_save(&mut held, &mut stage, &mut notifier, &consumer).await,
                    Control::InputDone => {
                        input_done = true;
                        last_message = Instant::now();
                        // A member the group has not yet given its share
                        // may be about to get the relay: it waits for that.
                        let done = match held.as_ref() {
                            Some(h) => h.finished,
                            None => consumer.joined(),
                        };
                        if done {
                            break last_save(&mut held, &mut stage, &mut notifier, &consumer).await;
                        }
                    }
                }
            }
            event = rx.recv() => match event {
                None => break Ok(()),
                Some(OwnedEvent::Gained) => {
                    tracing::info!(%topic, "this instance runs the group's alerting now");
                    match gain(settings, topics, &mut stage, scoring.as_mut()).await {
                        Ok(h) => held = Some(h),
                        Err(e) => break Err(e),
                    }
                }
                Some(OwnedEvent::Lost) => {
                    tracing::info!(%topic, "another instance runs the group's alerting now");
                    held = None;
                    // The new owner sends the alerts now: re-sending what
                    // this one last knew could undo its resolutions.
                    notifier.forget_alert_states();
                    // The new owner sends again what was not committed.
                    let settled = if notifier.out.producer.is_transactional() {
                        notifier.out.producer.discard_transaction().await
                    } else {
                        notifier.out.settle().await
                    };
                    if let Err(e) = settled {
                        break Err(e.into());
                    }
                    if input_done {
                        break Ok(());
                    }
                }
                Some(OwnedEvent::Message { offset, payload }) => {
                    let Some(h) = held.as_mut() else { continue };
                    last_message = Instant::now();
                    if let Err(e) = apply(h, &mut stage, &mut notifier, offset, &payload).await {
                        break Err(e);
                    }
                    if h.finished && input_done {
                        break last_save(&mut held, &mut stage, &mut notifier, &consumer).await;
                    }
                }
            },
            Some(sql) = async {
                match scoring.as_mut() {
                    Some(s) => s.reloads.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Some(s) = scoring.as_mut() {
                    reload(s, held.as_mut(), sql).await;
                }
            }
            _ = tick.tick() => {
                if input_done && held.is_none() && (consumer.joined() || last_message.elapsed() > DRAIN_WAIT) {
                    break Ok(());
                }
                stage.publish(notifier.out.metrics(), false);
                if let Some(h) = held.as_mut() {
                    if let Err(e) = save(h, &mut stage, &mut notifier, &consumer).await {
                        break Err(e);
                    }
                    if input_done && !h.finished && last_message.elapsed() > DRAIN_WAIT {
                        tracing::warn!(waiting_on = ?h.board.waiting_on(), "no progress on the alerting relay for {} s after the input was drained: finishing with what was relayed", DRAIN_WAIT.as_secs());
                        if let Err(e) = finish(h, &mut stage, &mut notifier).await {
                            break Err(e);
                        }
                        break last_save(&mut held, &mut stage, &mut notifier, &consumer).await;
                    }
                }
            }
        }
    };
    // Closed first: the poll thread may be blocked on a full queue.
    drop(rx);
    tokio::task::spawn_blocking(move || consumer.join())
        .await
        .ok();
    // What is queued for the webhooks and Alertmanagers goes out (each
    // within its bounded wait, side by side) before the run ends.
    let (webhooks, alertmanagers) = (notifier.webhooks.take(), notifier.alertmanagers.take());
    let _ = tokio::join!(
        tokio::task::spawn_blocking(move || webhooks.map(|w| w.finish())),
        tokio::task::spawn_blocking(move || alertmanagers.map(|a| a.finish())),
    );
    result
}

/// Takes over the group's alerting: its saved state, and a board over
/// every partition of every source topic (`topics`, the derived ones
/// included).
async fn gain(
    settings: &Settings,
    topics: &[String],
    stage: &mut AlertingStage,
    scoring: Option<&mut OwnerScoring>,
) -> Result<Held, PipelineError> {
    let group = &settings.kafka.group_id;
    let table: Table = read_group_state(settings).await?;
    let saved = match chunked::read(&table, group) {
        Ok(saved) => saved,
        Err(e) => {
            tracing::warn!(%group, error = %e, "the saved alerting state is incomplete; starting without it");
            None
        }
    };
    match &saved {
        Some(s) => tracing::info!(%group, bytes = s.len(), "alerting state restored"),
        None => tracing::info!(%group, "no saved alerting state: starting fresh"),
    }
    stage.take_over(&settings.alerting, saved.as_deref());
    let counts = partition_counts_patiently(settings, topics).await?;
    tracing::info!(
        ?counts,
        "the alerting clock waits for every partition of these topics"
    );
    let mut state = StateStore::new(
        &settings.alerting.state_topic,
        group,
        settings.sinks.max_payload_bytes,
        table,
        stage.snapshot(),
    );
    let scoring = match scoring {
        Some(s) => Some(take_scoring(s, &mut state)?),
        None => None,
    };
    Ok(Held {
        state,
        board: Board::new(&counts),
        next: None,
        finished: false,
        scoring,
    })
}

/// Fresh detectors for the models, with the state the group saved, on a
/// handle on the owner's SQL: scoring goes on from what was saved.
fn take_scoring(s: &OwnerScoring, state: &mut StateStore) -> Result<Scoring, PipelineError> {
    let mut sql = s.sql.fork();
    let detectors = telemine_detector::attach(&mut sql, &s.models, true, None)
        .map_err(|e| PipelineError::Config(e.to_string()))?;
    state.restore_detectors(&detectors);
    let plan = deferred::Deferral::plan(&sql).ok_or_else(|| {
        PipelineError::Engine(telemine_types::error::EngineError::Internal(
            "the alerting owner scores, but its SQL has nothing to score".into(),
        ))
    })?;
    // What every model has taken was scored; the oldest of them is where
    // scoring goes on.
    let done_until = detectors
        .iter()
        .map(|d| d.last_window_end())
        .min()
        .flatten();
    if let Some(at) = done_until {
        tracing::info!(
            window_end = at,
            "scoring goes on after the last window end scored"
        );
    }
    let stage = ScoringStage::new(sql, plan, done_until, s.max_lateness_ms, s.metrics.clone());
    Ok(Scoring { stage, detectors })
}

/// The input side reloaded its SQL: the owner plans the same files again
/// for its scoring (and for its next gains).
async fn reload(s: &mut OwnerScoring, held: Option<&mut Held>, handle: SqlSet) {
    let sql = match handle.replan().await {
        Ok(sql) => sql,
        Err(d) => {
            tracing::error!(
                "the reloaded SQL does not plan for the alerting owner's scoring; it keeps the SQL it had:\n{d}"
            );
            return;
        }
    };
    if let Some(h) = held.and_then(|h| h.scoring.as_mut())
        && h.stage.replace_sql(sql.fork()).is_none()
    {
        tracing::error!(
            "the reloaded SQL cannot be scored by the alerting owner; it keeps the SQL it had"
        );
        return;
    }
    s.sql = sql;
}

/// Applies one relay message; an unreadable one is logged and skipped
/// (the relay is ours, but nothing read from outside may stop alerting).
async fn apply(
    h: &mut Held,
    stage: &mut AlertingStage,
    notifier: &mut Notifier,
    offset: i64,
    payload: &[u8],
) -> Result<(), PipelineError> {
    h.next = Some(offset + 1);
    if let Some(rows) = deferred::decode(payload) {
        take_rows(h, offset, rows);
        return Ok(());
    }
    let relay = match Relay::read(payload) {
        Ok((relay, dropped)) => {
            if dropped > 0 {
                tracing::warn!(
                    offset,
                    dropped,
                    "relayed rule rows with unreadable window times were skipped"
                );
            }
            relay
        }
        Err(e) => {
            tracing::warn!(offset, error = %e, "an unreadable alerting relay message was skipped");
            return Ok(());
        }
    };
    for p in &relay.progress {
        h.board.note(p);
    }
    let clock = h.board.clock();
    let (mut evaluations, mut rows) = (relay.evaluations, relay.rows);
    if let Some(s) = h.scoring.as_mut() {
        let scored = s.stage.advance(clock).await;
        notifier.out.rule_rows(&scored.rows).await?;
        evaluations.extend(scored.evaluations);
        rows.extend(scored.rows);
    }
    let payloads = stage.step(evaluations, rows, clock);
    stage.publish(notifier.out.metrics(), false);
    notifier.notify(payloads).await?;
    notifier.alert_states(stage.take_states());
    if h.board.ended() && !h.finished {
        finish(h, stage, notifier).await?;
    }
    Ok(())
}

/// A relay message of view rows, for the scoring stage.
fn take_rows(
    h: &mut Held,
    offset: i64,
    rows: Result<
        (String, Vec<datafusion::arrow::array::RecordBatch>),
        telemine_stream::deferred::UnreadableRows,
    >,
) {
    let Some(s) = h.scoring.as_mut() else {
        tracing::warn!(
            offset,
            "view rows on the alerting relay, but no model is configured here: skipped (do the group's instances run the same config?)"
        );
        return;
    };
    let (name, batches) = match rows {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(offset, error = %e, "unreadable view rows on the alerting relay were skipped");
            return;
        }
    };
    let Some(view) = s.stage.view(&name) else {
        tracing::warn!(offset, view = %name, "rows of a view this owner does not score were skipped (do the group's instances run the same SQL?)");
        return;
    };
    if let Err(e) = s.stage.add(
        ViewRows {
            view,
            name,
            batches,
        },
        Some(offset),
    ) {
        tracing::warn!(offset, error = %e, "view rows on the alerting relay were skipped");
    }
}

/// Every partition has ended (or the wait for them is over): everything
/// held is scored, and every group's last notification sent.
async fn finish(
    h: &mut Held,
    stage: &mut AlertingStage,
    notifier: &mut Notifier,
) -> Result<(), PipelineError> {
    if let Some(s) = h.scoring.as_mut() {
        let Scored { rows, evaluations } = s.stage.finish().await;
        notifier.out.rule_rows(&rows).await?;
        let payloads = stage.step(evaluations, rows, h.board.clock());
        notifier.notify(payloads).await?;
    }
    let last = stage.finish();
    stage.publish(notifier.out.metrics(), true);
    notifier.notify(last).await?;
    notifier.alert_states(stage.take_states());
    h.finished = true;
    Ok(())
}

/// Saves the alerting state if it changed, waits for it and every
/// notification to be acknowledged, then commits the relay offset.
async fn save(
    h: &mut Held,
    stage: &mut AlertingStage,
    notifier: &mut Notifier,
    consumer: &OwnedTopic,
) -> Result<(), PipelineError> {
    if let Some(s) = &h.scoring {
        h.state
            .save_detectors(&mut notifier.out.producer, &s.detectors)
            .await?;
    }
    h.state
        .save_alerting(&mut notifier.out.producer, stage.snapshot())
        .await?;
    // Messages whose rows are still held are read again by a new owner.
    let held_from = h.scoring.as_ref().and_then(|s| s.stage.held_from());
    let next = match (h.next, held_from) {
        (Some(n), Some(f)) => Some(n.min(f)),
        (n, _) => n,
    };
    if notifier.out.producer.is_transactional() {
        // Notifications, state and the relay's offset in one transaction.
        let txn = next.and_then(|n| consumer.transaction_offsets(n));
        notifier.out.producer.commit_transaction(txn).await?;
        return Ok(());
    }
    notifier.out.settle().await?;
    if let Some(next) = next {
        consumer.commit(next);
    }
    Ok(())
}

/// The save before stopping, bounded: past [`LAST_WAIT`] the next owner
/// re-reads what was not committed.
async fn last_save(
    held: &mut Option<Held>,
    stage: &mut AlertingStage,
    notifier: &mut Notifier,
    consumer: &OwnedTopic,
) -> Result<(), PipelineError> {
    let Some(h) = held.as_mut() else {
        return Ok(());
    };
    match tokio::time::timeout(LAST_WAIT, save(h, stage, notifier, consumer)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                "the broker did not acknowledge the alerting state within {} s; the next owner re-reads the relay since the last commit",
                LAST_WAIT.as_secs()
            );
            Ok(())
        }
    }
}
