//! The streaming core: decoded batches in, window rows, rule rows,
//! evaluations, late rows and scored rows out. It knows nothing of Kafka
//! (it does not depend on librdkafka, even through another crate; CI
//! checks it) nor of the config file: what it runs on arrives resolved, as
//! [`SourceDef`](telemine_sql::source::SourceDef)s and a planned
//! [`SqlSet`](telemine_sql::SqlSet).
//!
//! - [`driver`]: the one [`Driver`](driver::Driver) of the engine; the
//!   Kafka runtime and the [`local`] runner hand it the same inputs and
//!   get the same steps back.
//! - [`windows`]: [`WindowEngine`], per-source buffers and each view's
//!   windows closing as the watermark passes them; [`window_kinds`] picks
//!   the rows of a closing TUMBLE, HOP or SESSION window.
//! - [`admission`]: which rows may enter (watermarks with idleness, late,
//!   replayed and duplicate rows).
//! - [`checkpoint`]: what is committed with each offset so a restart
//!   neither loses nor repeats a window; [`chunked`] stores values larger
//!   than one message as chunks.
//! - [`deferred`]: scoring and views over views, run where the alerting
//!   is.
//! - [`repartition`]: views that do not group by their source's message
//!   key: the derived sources and the rows written for them (the topics
//!   themselves are the runtime's).
//! - [`local`]: recorded or hand-written records through the same driver,
//!   for `dry-run`, `telemine test`, `train` and `eval`.

pub mod admission;
pub mod checkpoint;
pub mod chunked;
pub mod deferred;
pub mod driver;
pub mod local;
pub mod repartition;
mod window_kinds;
pub mod windows;

pub use admission::SourceCounts;
pub use checkpoint::Checkpoint;
pub use repartition::alone_reasons;
pub use windows::{LateRows, WindowEngine};
