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

use std::time::{Duration, Instant};

use telemine_connectors::kafka::{OwnedEvent, OwnedTopic, Table, partition_counts};
use tokio::sync::{mpsc, watch};

use super::alerting_stage::AlertingStage;
use super::chunked;
use super::outputs::Outputs;
use super::pipeline::{PipelineError, read_group_state};
use super::relay::{self, Board, Relay};
use super::state_store::StateStore;
use crate::config::Config;

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
}

/// Runs until told to stop (or, once the input is done, until the alerting
/// it owns is finished, or at once if it owns nothing).
pub(crate) async fn run(
    config: &Config,
    topics: &[String],
    mut stage: AlertingStage,
    mut outputs: Outputs<'_>,
    mut control: watch::Receiver<Control>,
) -> Result<(), PipelineError> {
    let topic = relay::topic(config);
    let group = relay::group(config);
    let instance = config
        .kafka
        .group_instance_id()
        .map(|i| format!("{i}-alerting"));
    let (tx, mut rx) = mpsc::channel(256);
    let consumer = OwnedTopic::start(&config.kafka, &group, instance.as_deref(), &topic, tx)?;
    let mut held: Option<Held> = None;
    let mut tick = tokio::time::interval(config.engine.commit_interval);
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
                    Control::Stop => break last_save(&mut held, &mut stage, &mut outputs, &consumer).await,
                    Control::InputDone => {
                        input_done = true;
                        last_message = Instant::now();
                        if held.as_ref().is_none_or(|h| h.finished) {
                            break last_save(&mut held, &mut stage, &mut outputs, &consumer).await;
                        }
                    }
                }
            }
            event = rx.recv() => match event {
                None => break Ok(()),
                Some(OwnedEvent::Gained) => {
                    tracing::info!(%topic, "this instance runs the group's alerting now");
                    match gain(config, topics, &mut stage).await {
                        Ok(h) => held = Some(h),
                        Err(e) => break Err(e),
                    }
                }
                Some(OwnedEvent::Lost) => {
                    tracing::info!(%topic, "another instance runs the group's alerting now");
                    held = None;
                    // The new owner sends again what was not committed.
                    let settled = if outputs.producer.is_transactional() {
                        outputs.producer.discard_transaction().await
                    } else {
                        outputs.settle().await
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
                    if let Err(e) = apply(h, &mut stage, &mut outputs, offset, &payload).await {
                        break Err(e);
                    }
                    if h.finished && input_done {
                        break last_save(&mut held, &mut stage, &mut outputs, &consumer).await;
                    }
                }
            },
            _ = tick.tick() => {
                if let Some(h) = held.as_mut() {
                    if let Err(e) = save(h, &mut stage, &mut outputs, &consumer).await {
                        break Err(e);
                    }
                    if input_done && !h.finished && last_message.elapsed() > DRAIN_WAIT {
                        tracing::warn!(waiting_on = ?h.board.waiting_on(), "no progress on the alerting relay for {} s after the input was drained: finishing with what was relayed", DRAIN_WAIT.as_secs());
                        let last = stage.finish();
                        if let Err(e) = outputs.notify(last).await {
                            break Err(e.into());
                        }
                        h.finished = true;
                        break last_save(&mut held, &mut stage, &mut outputs, &consumer).await;
                    }
                }
            }
        }
    };
    tokio::task::spawn_blocking(move || consumer.join())
        .await
        .ok();
    result
}

/// Takes over the group's alerting: its saved state, and a board over
/// every partition of every source topic (`topics`, the derived ones
/// included).
async fn gain(
    config: &Config,
    topics: &[String],
    stage: &mut AlertingStage,
) -> Result<Held, PipelineError> {
    let group = &config.kafka.group_id;
    let table: Table = read_group_state(config).await?;
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
    stage.take_over(&config.alerting, saved.as_deref());
    let counts = partition_counts(&config.kafka, topics, Duration::from_secs(10)).await?;
    tracing::info!(
        ?counts,
        "the alerting clock waits for every partition of these topics"
    );
    let state = StateStore::new(
        &config.alerting.state_topic,
        group,
        config.sinks.max_payload_bytes(),
        table,
        stage.snapshot(),
    );
    Ok(Held {
        state,
        board: Board::new(&counts),
        next: None,
        finished: false,
    })
}

/// Applies one relay message; an unreadable one is logged and skipped
/// (the relay is ours, but nothing read from outside may stop alerting).
async fn apply(
    h: &mut Held,
    stage: &mut AlertingStage,
    outputs: &mut Outputs<'_>,
    offset: i64,
    payload: &[u8],
) -> Result<(), PipelineError> {
    h.next = Some(offset + 1);
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
    let payloads = stage.step(relay.evaluations, relay.rows, h.board.clock());
    outputs.notify(payloads).await?;
    if h.board.ended() && !h.finished {
        let last = stage.finish();
        outputs.notify(last).await?;
        h.finished = true;
    }
    Ok(())
}

/// Saves the alerting state if it changed, waits for it and every
/// notification to be acknowledged, then commits the relay offset.
async fn save(
    h: &mut Held,
    stage: &mut AlertingStage,
    outputs: &mut Outputs<'_>,
    consumer: &OwnedTopic,
) -> Result<(), PipelineError> {
    h.state
        .save_alerting(&mut outputs.producer, stage.snapshot())
        .await?;
    if outputs.producer.is_transactional() {
        // Notifications, state and the relay's offset in one transaction.
        let txn = h.next.and_then(|n| consumer.transaction_offsets(n));
        outputs.producer.commit_transaction(txn).await?;
        return Ok(());
    }
    outputs.settle().await?;
    if let Some(next) = h.next {
        consumer.commit(next);
    }
    Ok(())
}

/// The save before stopping, bounded: past [`LAST_WAIT`] the next owner
/// re-reads what was not committed.
async fn last_save(
    held: &mut Option<Held>,
    stage: &mut AlertingStage,
    outputs: &mut Outputs<'_>,
    consumer: &OwnedTopic,
) -> Result<(), PipelineError> {
    let Some(h) = held.as_mut() else {
        return Ok(());
    };
    match tokio::time::timeout(LAST_WAIT, save(h, stage, outputs, consumer)).await {
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
