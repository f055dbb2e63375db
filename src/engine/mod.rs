//! The streaming engine: event-time windows over decoded batches, SQL
//! evaluation at window close, and the Kafka pipeline around it.
//!
//! - [`windows`]: [`WindowEngine`] — watermarks, window buffers, closing
//!   windows, running views and rules. Knows nothing of Kafka.
//! - [`checkpoint`]: what is stored with each committed offset so a restart
//!   neither loses nor repeats a window.
//! - [`chunked`]: values larger than a Kafka message (the alerting state,
//!   a large checkpoint) as chunks in a compacted topic.
//! - [`pipeline`]: Kafka source → [`WindowEngine`] → alert and dead-letter
//!   producers, with at-least-once commits and clean shutdown.

pub mod checkpoint;
pub mod chunked;
pub mod local;
pub mod pipeline;
pub mod reload;
mod window_kinds;
pub mod windows;

pub use checkpoint::Checkpoint;
pub use pipeline::{PipelineError, RunOptions, RunSummary, Stop, run_pipeline};
pub use windows::{LateRows, SourceCounts, WindowEngine};
