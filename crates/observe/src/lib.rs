//! What telemine shows of itself: the Prometheus metrics every stage
//! counts into (`metrics`), the rows and alerts the live page shows
//! (`live`), and how it logs and prints (`logging`, with the `note!` and
//! `out!` macros). It knows the SQL's views to name them, never Kafka or
//! the config.

pub mod live;
pub mod logging;
pub mod metrics;
