pub mod alert;
pub mod config;
pub mod diagnostic;
pub mod duration;
pub mod engine;
pub mod metrics;
pub mod scoring;
pub mod sql;
