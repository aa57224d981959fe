//! Busy slots and finished tasks: what each heartbeat reports.
//!
//! Pure bookkeeping, no I/O: the caller reads the busy file or watches the child and
//! passes the count and the time in.
//!
//! - [`SlotLedger`] follows the busy count the worker writes to its busy file. It
//!   remembers when each slot became busy; when the count drops, the oldest slots are
//!   the ones taken to have finished (first in, first out), so each freed slot yields
//!   one task whose duration is the time since that slot became busy. The worker's
//!   count says how many slots are busy, not which, so FIFO is an assumption; it is
//!   exact for one slot and unbiased on average for many.
//! - [`TaskOutbox`] holds finished tasks until a heartbeat carrying them is
//!   acknowledged. The server deduplicates resent tasks by `finished_at`, so every
//!   task gets a distinct one: a task that would share a millisecond with the one
//!   before is stamped a millisecond later.

use std::collections::VecDeque;

use capstan_core::Timestamp;
use serde::Serialize;

/// One finished task, as the heartbeat body carries it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FinishedTask {
    /// When it finished (RFC 3339); unique per agent.
    pub finished_at: Timestamp,
    /// How long it ran, in seconds.
    pub duration_s: f64,
}

/// Finished tasks not yet acknowledged by the server, oldest first.
#[derive(Debug, Default)]
pub struct TaskOutbox {
    pending: Vec<FinishedTask>,
    /// The latest `finished_at` handed out, so the next one is strictly later.
    last: Option<Timestamp>,
}

impl TaskOutbox {
    /// Records a task that finished at `now` after running `duration_s` seconds.
    pub fn push(&mut self, now: Timestamp, duration_s: f64) {
        let finished_at = match self.last {
            Some(last) if now <= last => Timestamp::from_unix_ms(last.unix_ms() + 1),
            _ => now,
        };
        self.last = Some(finished_at);
        self.pending.push(FinishedTask {
            finished_at,
            duration_s: duration_s.max(0.0),
        });
    }

    /// The tasks the next heartbeat carries.
    pub fn pending(&self) -> &[FinishedTask] {
        &self.pending
    }

    /// A heartbeat carrying the first `sent` pending tasks was acknowledged.
    pub fn acknowledge(&mut self, sent: usize) {
        self.pending.drain(..sent.min(self.pending.len()));
    }
}

/// The busy slots the worker reported, each with when it became busy.
#[derive(Debug, Default)]
pub struct SlotLedger {
    busy_since: VecDeque<Timestamp>,
}

impl SlotLedger {
    /// The worker now says `busy` slots are busy. Returns the durations (seconds) of
    /// the tasks that finished, one per freed slot, oldest slot first.
    pub fn observe(&mut self, busy: u32, now: Timestamp) -> Vec<f64> {
        let busy = busy as usize;
        let mut finished = Vec::new();
        while self.busy_since.len() > busy {
            if let Some(since) = self.busy_since.pop_front() {
                finished.push(now.secs_since(since));
            }
        }
        while self.busy_since.len() < busy {
            self.busy_since.push_back(now);
        }
        finished
    }

    /// How many slots are busy.
    pub fn busy(&self) -> u32 {
        u32::try_from(self.busy_since.len()).unwrap_or(u32::MAX)
    }

    /// Forgets every busy slot without finishing a task: the worker is gone, its
    /// tasks did not finish.
    pub fn clear(&mut self) {
        self.busy_since.clear();
    }
}

/// Parses the busy file: an unsigned integer, surrounding whitespace allowed; an
/// empty file means 0.
pub fn parse_busy_count(text: &str) -> Result<u32, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        format!("expected the number of busy slots (a whole number such as 0 or 2), found {text:?}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: f64) -> Timestamp {
        Timestamp::from_unix_ms((secs * 1000.0) as i64)
    }

    #[test]
    fn a_dropping_count_finishes_the_oldest_slots_first() {
        let mut ledger = SlotLedger::default();
        assert!(ledger.observe(1, at(100.0)).is_empty());
        assert!(ledger.observe(3, at(110.0)).is_empty());
        assert_eq!(ledger.busy(), 3);
        // Two slots free at 130: the one busy since 100 and one of those since 110.
        assert_eq!(ledger.observe(1, at(130.0)), vec![30.0, 20.0]);
        assert_eq!(ledger.observe(0, at(135.0)), vec![25.0]);
        assert_eq!(ledger.busy(), 0);
    }

    #[test]
    fn an_unchanged_count_finishes_nothing_and_keeps_start_times() {
        let mut ledger = SlotLedger::default();
        ledger.observe(2, at(0.0));
        assert!(ledger.observe(2, at(5.0)).is_empty());
        assert_eq!(ledger.observe(1, at(9.0)), vec![9.0]);
    }

    #[test]
    fn clear_frees_slots_without_tasks() {
        let mut ledger = SlotLedger::default();
        ledger.observe(2, at(0.0));
        ledger.clear();
        assert_eq!(ledger.busy(), 0);
        assert!(ledger.observe(0, at(9.0)).is_empty());
    }

    #[test]
    fn tasks_finishing_in_one_millisecond_get_distinct_stamps() {
        let mut outbox = TaskOutbox::default();
        outbox.push(at(10.0), 1.0);
        outbox.push(at(10.0), 2.0);
        outbox.push(at(9.0), 3.0);
        let stamps: Vec<i64> = outbox
            .pending()
            .iter()
            .map(|t| t.finished_at.unix_ms())
            .collect();
        assert_eq!(stamps, vec![10_000, 10_001, 10_002]);
    }

    #[test]
    fn acknowledged_tasks_leave_and_later_ones_stay() {
        let mut outbox = TaskOutbox::default();
        outbox.push(at(1.0), 1.0);
        outbox.push(at(2.0), 1.0);
        outbox.acknowledge(1);
        outbox.push(at(3.0), 1.0);
        let stamps: Vec<i64> = outbox
            .pending()
            .iter()
            .map(|t| t.finished_at.unix_ms())
            .collect();
        assert_eq!(stamps, vec![2_000, 3_000]);
        outbox.acknowledge(5);
        assert!(outbox.pending().is_empty());
    }

    #[test]
    fn busy_file_counts() {
        assert_eq!(parse_busy_count(""), Ok(0));
        assert_eq!(parse_busy_count(" 3\n"), Ok(3));
        let err = parse_busy_count("two").unwrap_err();
        assert!(err.contains("\"two\""), "{err}");
        assert!(parse_busy_count("-1").is_err());
    }
}
