//! The alerting relay: how the rule rows, rule evaluations and progress of
//! every instance in a consumer group reach the one alerting stage of the
//! group. Alertmanager-style groups span hosts that different instances
//! read, so notifications are made in one place: whichever instance holds
//! the relay topic's only partition (`src/runtime/alerting_owner.rs`).
//!
//! Each instance produces [`Relay`] messages (JSON) to the relay topic,
//! `GROUP.alerting-relay`, on the producer the next offset commit settles
//! first: rule rows and evaluations as the windows close, then the
//! progress of every input partition it holds — "every evaluation for a
//! window end up to this clock has been relayed for this partition".
//!
//! The owner keeps a [`Board`] of that progress over every partition of
//! every source topic. Its alerting clock is the lowest progress over
//! them: an evaluation is applied only once every partition that could
//! add rows to it has gone past it, so N instances give the alerter the
//! same evaluations, with the same rows, as one instance would.
//!
//! Invariants:
//! - progress per partition only grows on the board (a partition moved to
//!   another instance that re-reads it reports less: ignored), so the
//!   clock never goes back;
//! - a partition never reported holds the clock back (an instance that
//!   has not started, or one that died before the rebalance);
//! - rows and evaluations relayed again after a restart or a rebalance are
//!   harmless: the alerter merges rows of one (rule, window end) by
//!   fingerprint, and an evaluation for a window end a rule has passed
//!   changes nothing;
//! - every message fits `sinks.max_message_bytes`: a step's rows and
//!   evaluations are split over several messages, the progress rides in
//!   the last.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use telemine_connectors::kafka::KafkaClientConfig;

use telemine_alerting::Evaluation;
use telemine_types::alert::{Alert, parse_ms};

/// The relay topic of `kafka`'s consumer group (one partition).
pub fn topic(kafka: &KafkaClientConfig) -> String {
    format!("{}.alerting-relay", kafka.group_id)
}

/// The consumer group whose member holding the relay runs the alerting.
pub(crate) fn group(kafka: &KafkaClientConfig) -> String {
    format!("{}.alerting", kafka.group_id)
}

/// The relay's format version.
const VERSION: u32 = 1;

/// One relay message.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Relay {
    pub v: u32,
    /// The instance that sent it (`[kafka] instance_id`), for logs.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub rows: Vec<Alert>,
    #[serde(default)]
    pub evaluations: Vec<Evaluation>,
    #[serde(default)]
    pub progress: Vec<Progress>,
}

/// How far one input partition has been taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub topic: String,
    pub partition: i32,
    pub reached: Reached,
}

/// What a partition's progress says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Reached {
    /// Every evaluation up to this window end has been relayed.
    Clock(i64),
    /// The instance has no clock because nothing it reads is active (an
    /// empty topic): the partition holds nobody back.
    Idle,
    /// Read to its end and every window closed (a drain).
    End,
}

impl Relay {
    /// The messages carrying one step: `rows` and `evaluations` packed
    /// under `max_bytes` each, `progress` in the last. Nothing when there
    /// is nothing to say.
    pub(crate) fn pack(
        from: &str,
        rows: &[Alert],
        evaluations: &[Evaluation],
        progress: &[Progress],
        max_bytes: usize,
    ) -> Vec<Vec<u8>> {
        if rows.is_empty() && evaluations.is_empty() && progress.is_empty() {
            return Vec::new();
        }
        let head = serde_json::json!({ "v": VERSION, "from": from }).to_string();
        // `{"v":1,"from":"…"` + `,"rows":[` … `]` + `,"evaluations":[` … `]`
        // + `,"progress":[…]}`.
        let overhead = head.len() + 64;
        let mut packer = Packer::new(head, max_bytes.saturating_sub(overhead).max(1));
        for r in rows {
            packer.add(Part::Rows, serde_json::to_string(r).unwrap_or_default());
        }
        for e in evaluations {
            packer.add(
                Part::Evaluations,
                serde_json::to_string(e).unwrap_or_default(),
            );
        }
        let progress = serde_json::to_string(progress).unwrap_or_else(|_| "[]".into());
        packer.finish(&progress)
    }

    /// Reads one message; rows whose window times do not parse are
    /// dropped (with the count) rather than failing the message.
    pub(crate) fn read(bytes: &[u8]) -> Result<(Relay, usize), String> {
        let mut r: Relay = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if r.v != VERSION {
            return Err(format!(
                "relay version {} (this build reads {VERSION})",
                r.v
            ));
        }
        let before = r.rows.len();
        r.rows.retain_mut(
            |a| match (parse_ms(&a.window_start), parse_ms(&a.window_end)) {
                (Ok(s), Ok(e)) => {
                    a.window_start_ms = s;
                    a.window_end_ms = e;
                    true
                }
                _ => false,
            },
        );
        let dropped = before - r.rows.len();
        Ok((r, dropped))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Part {
    Rows,
    Evaluations,
}

/// Packs serialized rows and evaluations into messages of at most
/// `budget` bytes of items each.
struct Packer {
    head: String,
    budget: usize,
    done: Vec<Vec<u8>>,
    rows: Vec<String>,
    evaluations: Vec<String>,
    used: usize,
}

impl Packer {
    fn new(head: String, budget: usize) -> Packer {
        Packer {
            head,
            budget,
            done: Vec::new(),
            rows: Vec::new(),
            evaluations: Vec::new(),
            used: 0,
        }
    }

    fn add(&mut self, part: Part, item: String) {
        // An item larger than a message on its own cannot be relayed: the
        // rule rows are cut to the limits in `alert/` long before that.
        if item.len() + 1 > self.budget {
            tracing::error!(
                bytes = item.len(),
                "a rule row or evaluation larger than a relay message is dropped"
            );
            return;
        }
        if self.used + item.len() + 1 > self.budget {
            let message = self.message("[]");
            self.done.push(message);
        }
        self.used += item.len() + 1;
        match part {
            Part::Rows => self.rows.push(item),
            Part::Evaluations => self.evaluations.push(item),
        }
    }

    /// The message holding what was added since the last one.
    fn message(&mut self, progress: &str) -> Vec<u8> {
        let mut m = self.head.trim_end_matches('}').to_string();
        m.push_str(",\"rows\":[");
        m.push_str(&self.rows.join(","));
        m.push_str("],\"evaluations\":[");
        m.push_str(&self.evaluations.join(","));
        m.push_str("],\"progress\":");
        m.push_str(progress);
        m.push('}');
        self.rows.clear();
        self.evaluations.clear();
        self.used = 0;
        m.into_bytes()
    }

    fn finish(mut self, progress: &str) -> Vec<Vec<u8>> {
        let last = self.message(progress);
        self.done.push(last);
        self.done
    }
}

/// The owner's view of every input partition's progress (see the module
/// docs).
#[derive(Debug, Default)]
pub(crate) struct Board {
    partitions: BTreeMap<(String, i32), Seen>,
}

/// What the board knows of one partition.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    /// The highest clock reported.
    clock: Option<i64>,
    /// The latest report said idle.
    idle: bool,
    /// Reported read to its end.
    end: bool,
}

impl Board {
    /// A board over `counts` (topic, partitions): every one of those
    /// partitions holds the clock back until reported.
    pub(crate) fn new(counts: &[(String, i32)]) -> Board {
        let mut b = Board::default();
        for (topic, n) in counts {
            for p in 0..*n {
                b.partitions.entry((topic.clone(), p)).or_default();
            }
        }
        b
    }

    /// Takes one report.
    pub(crate) fn note(&mut self, p: &Progress) {
        let seen = self
            .partitions
            .entry((p.topic.clone(), p.partition))
            .or_default();
        match p.reached {
            Reached::Clock(c) => {
                seen.clock = Some(seen.clock.map_or(c, |x| x.max(c)));
                seen.idle = false;
            }
            Reached::Idle => seen.idle = true,
            Reached::End => seen.end = true,
        }
    }

    /// The alerting clock: the lowest progress over the partitions that
    /// are not idle (one at its end counts with the last clock it
    /// reported: what is left after it is released by the alerter's
    /// finish, once every partition has ended); `None` while one of them
    /// has reported no clock yet, or when none counts.
    pub(crate) fn clock(&self) -> Option<i64> {
        let mut lowest: Option<i64> = None;
        for s in self.partitions.values() {
            if s.end {
                if let Some(c) = s.clock {
                    lowest = Some(lowest.map_or(c, |l| l.min(c)));
                }
                continue;
            }
            if s.idle {
                continue;
            }
            let c = s.clock?;
            lowest = Some(lowest.map_or(c, |l| l.min(c)));
        }
        lowest
    }

    /// Every partition was read to its end (and there is at least one).
    pub(crate) fn ended(&self) -> bool {
        !self.partitions.is_empty() && self.partitions.values().all(|s| s.end)
    }

    /// Partitions that hold the clock back now, for the log.
    pub(crate) fn waiting_on(&self) -> Vec<String> {
        let clock = self.clock();
        self.partitions
            .iter()
            .filter(|(_, s)| !s.end && !s.idle && (s.clock.is_none() || s.clock == clock))
            .map(|((t, p), _)| format!("{t}[{p}]"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemine_types::alert::rule::Timing;

    fn progress(topic: &str, partition: i32, reached: Reached) -> Progress {
        Progress {
            topic: topic.into(),
            partition,
            reached,
        }
    }

    #[test]
    fn the_clock_waits_for_every_partition_and_never_goes_back() {
        let mut b = Board::new(&[("t".into(), 3)]);
        b.note(&progress("t", 0, Reached::Clock(100)));
        b.note(&progress("t", 1, Reached::Clock(200)));
        assert_eq!(b.clock(), None, "partition 2 has not reported");
        assert_eq!(b.waiting_on(), ["t[2]"]);
        b.note(&progress("t", 2, Reached::Clock(150)));
        assert_eq!(b.clock(), Some(100));
        // Partition 0 moved to an instance that re-reads it from an older
        // commit: the clock stays.
        b.note(&progress("t", 0, Reached::Clock(40)));
        assert_eq!(b.clock(), Some(100));
        b.note(&progress("t", 0, Reached::Clock(300)));
        assert_eq!(b.clock(), Some(150));
        // An idle partition holds nobody back; one at its end neither.
        b.note(&progress("t", 2, Reached::Idle));
        assert_eq!(b.clock(), Some(200));
        // At its end, a partition counts with its last clock: the rest is
        // the alerter's finish, once all have ended.
        b.note(&progress("t", 1, Reached::End));
        assert_eq!(b.clock(), Some(200));
        assert!(!b.ended());
        b.note(&progress("t", 0, Reached::End));
        b.note(&progress("t", 2, Reached::End));
        assert!(b.ended());
        assert_eq!(b.clock(), Some(150), "partition 2's last clock");
    }

    #[test]
    fn a_partition_not_known_at_start_counts_once_reported() {
        let mut b = Board::new(&[("t".into(), 1)]);
        b.note(&progress("t", 0, Reached::Clock(10)));
        b.note(&progress("u", 0, Reached::Clock(5)));
        assert_eq!(b.clock(), Some(5));
    }

    #[test]
    fn a_step_is_split_under_the_limit_and_read_back_whole() {
        let rows: Vec<Alert> = (0..200)
            .map(|i| {
                let mut a =
                    telemine_types::alert::Alert::sample("Hot", &[("host", &format!("h{i:03}"))]);
                a.window_start = "2026-01-01T00:00:00Z".into();
                a.window_end = "2026-01-01T00:01:00Z".into();
                a
            })
            .collect();
        let evaluations: Vec<Evaluation> = (0..50)
            .map(|i| Evaluation {
                rule: "Hot".into(),
                timing: Timing::default(),
                at: i * 60_000,
            })
            .collect();
        let progress = vec![progress("t", 0, Reached::Clock(60_000))];
        let messages = Relay::pack("a", &rows, &evaluations, &progress, 4096);
        assert!(messages.len() > 5, "{} messages", messages.len());
        let (mut got_rows, mut got_evals, mut got_progress) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in messages.iter().enumerate() {
            assert!(m.len() <= 4096, "message {i}: {} bytes", m.len());
            let (r, dropped) = Relay::read(m).expect("reads back");
            assert_eq!(dropped, 0);
            if i + 1 < messages.len() {
                assert!(r.progress.is_empty(), "progress only in the last message");
            }
            got_rows.extend(r.rows);
            got_evals.extend(r.evaluations);
            got_progress.extend(r.progress);
        }
        assert_eq!(got_rows.len(), 200);
        assert_eq!(got_rows[7].window_end_ms, 60_000 + 1_767_225_600_000);
        assert_eq!(got_evals, evaluations);
        assert_eq!(got_progress, progress);
        assert!(Relay::pack("a", &[], &[], &[], 4096).is_empty());
    }

    #[test]
    fn a_hostile_message_is_an_error_not_a_panic() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"v\":9}",
            b"{\"v\":1,\"progress\":[{\"topic\":1}]}",
            b"\xff\xfe",
        ] {
            assert!(Relay::read(bad).is_err(), "{bad:?}");
        }
        let (r, _) = Relay::read(b"{\"v\":1}").expect("an empty relay is fine");
        assert!(r.rows.is_empty() && r.progress.is_empty());
    }
}
