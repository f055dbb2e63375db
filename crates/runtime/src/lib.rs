//! The Kafka runtime around the streaming core (`telemine-stream`): the
//! pipeline that reads the sources' topics, drives the core, produces what
//! it makes and commits what it read.
//!
//! - [`pipeline`]: Kafka source → the core's `Driver` → the stages after
//!   it (the input side an event loop, `input.rs`, one method per event), with at-least-once (or exactly-once) commits and clean shutdown:
//!   `outputs` (what is produced: notifications, rule rows, late rows, dead
//!   letters, repartitioned rows), `alerting_stage` (the alerter and the
//!   silences it follows) and `state_store` (alerting and detector state,
//!   large checkpoints, in the state topic). They share one producer,
//!   settled before each commit.
//! - `alerting_owner` and `relay`: the one instance of a group that runs
//!   the alerting, and what every instance relays to it.
//! - `startup`, `commits`, `progress`, `source_errors`, [`reload`]: what
//!   is read before the first poll, which offsets were sent, lag, error
//!   spells, and SQL reloads.

mod alerting_owner;
mod alerting_stage;
mod commits;
mod error;
mod input;
mod outputs;
pub mod pipeline;
mod progress;
mod relay;
pub mod reload;
pub mod settings;
mod source_errors;
mod stages;
mod startup;
mod state_store;

pub use error::PipelineError;
pub use pipeline::{RunOptions, RunSummary, Stop, run_pipeline};
pub use relay::topic as relay_topic;
pub use settings::{Delivery, EngineSettings, Settings, SinkSettings};
