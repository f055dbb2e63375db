//! The streaming engine: event-time windows over decoded batches, SQL
//! evaluation at window close, and the Kafka pipeline around it.
//!
//! - [`windows`]: [`WindowEngine`] — watermarks, window buffers, closing
//!   windows, running views and rules. Knows nothing of Kafka.
//! - [`checkpoint`]: what is stored with each committed offset so a restart
//!   neither loses nor repeats a window.
//! - [`chunked`]: values larger than a Kafka message (the alerting state,
//!   a large checkpoint) as chunks in a compacted topic.
//! - [`pipeline`]: Kafka source → [`WindowEngine`] → the stages after it,
//!   with at-least-once commits and clean shutdown: `outputs` (what is
//!   produced: notifications, rule rows, late rows, dead letters),
//!   `alerting_stage` (the alerter and the silences it follows) and
//!   `state_store` (alerting and detector state, large checkpoints, in the
//!   state topic). They share one producer, settled before each commit.
//! - [`repartition`]: views that do not group by their source's message
//!   key, computed across instances through repartition topics.

mod admission;
mod alerting_owner;
mod alerting_stage;
pub mod checkpoint;
pub mod chunked;
mod commits;
pub mod deferred;
pub mod driver;
mod error;
pub mod local;
mod outputs;
pub mod pipeline;
mod progress;
mod relay;
pub mod reload;
pub mod repartition;
mod source_errors;
mod startup;
mod state_store;
mod window_kinds;
pub mod windows;

pub use admission::SourceCounts;
pub use checkpoint::Checkpoint;
pub use error::PipelineError;
pub use pipeline::{RunOptions, RunSummary, Stop, alone_reasons, run_pipeline};
pub use relay::topic as relay_topic;
pub use windows::{LateRows, WindowEngine};
