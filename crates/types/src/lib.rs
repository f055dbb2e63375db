//! The plain values every telemine stage shares, with no behaviour of a
//! stage: an alert and its rule's metadata (`alert`), a diagnostic that
//! points at a file, line and column (`diagnostic`), and durations as
//! config and SQL spell them (`duration`), and errors classified by who
//! must act on them (`error`). Nothing here reads a file, talks to Kafka
//! or knows the config.

pub mod alert;
pub mod diagnostic;
pub mod duration;
pub mod error;
