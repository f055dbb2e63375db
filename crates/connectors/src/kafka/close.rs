//! Closing a group consumer within a bound.
//!
//! Dropping a librdkafka group consumer leaves its group: it serves the
//! final revoke and waits until the group coordinator has let it go. If
//! an assignment arrives while it closes (a rebalance right after a broker
//! stall, say), librdkafka's `rd_kafka_assign` inside that close can wait
//! for ever (confluentinc/librdkafka#4884, seen here as a `run` that never
//! exited after SIGTERM). The engine must stop all the same: the consumer
//! is closed on a thread of its own, and past [`CLOSE_WAIT`] it is left
//! behind with a warning. The group then gives its partitions to the
//! others once the broker times the member out (`session.timeout.ms`),
//! as after a kill; nothing uncommitted is lost.

use std::sync::mpsc;
use std::time::Duration;

/// How long a stopping instance waits for a consumer to leave its group.
pub const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Drops `consumer` (whatever owns the last handle on a consumer) on a
/// thread of its own and waits at most `wait` for it. Returns whether it
/// closed in time.
pub fn close_within<T: Send + 'static>(consumer: T, what: &str, wait: Duration) -> bool {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("kafka-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        // No thread to close it on (the consumer was dropped here, with
        // the closure that could not start).
        tracing::warn!(consumer = %what, error = %e, "cannot start a thread to close the consumer");
        return false;
    }
    match done_rx.recv_timeout(wait) {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                consumer = %what,
                "the consumer did not leave its group within {} s (a rebalance during the close); stopping without waiting for it: the group gives its partitions to the other members after session.timeout.ms",
                wait.as_secs()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Slow(Duration);

    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(self.0);
        }
    }

    #[test]
    fn a_close_that_hangs_is_left_behind_after_the_wait() {
        // Stands for a consumer stuck in its close: only the bound returns.
        assert!(!close_within(
            Slow(Duration::from_secs(3600)),
            "stuck",
            Duration::from_millis(50)
        ));
    }

    #[test]
    fn a_close_within_the_wait_is_waited_for() {
        assert!(close_within(
            Slow(Duration::from_millis(1)),
            "quick",
            Duration::from_secs(30)
        ));
    }
}
