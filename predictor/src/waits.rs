//! How long tasks actually wait, read from queue samples alone.
//!
//! The forecast's spare slots are sized from a model; whether they were enough shows in
//! the queue: a task still pending `target_wait_s` after it arrived waited too long.
//! Queue samples carry no per-task data, but with a FIFO queue they carry enough:
//! each sample's arrivals form a **cohort**, dated at the middle of the interval they
//! arrived in (the unbiased guess without per-task times); the tasks that started
//! during the interval (`running` now − `running` before + `completions`) leave the
//! queue oldest cohort first; and the cohorts left must add up to `pending`. A cohort
//! is scored once, at the first sample at least `target_wait_s` after it arrived: its
//! tasks still waiting then are **late**. Waits are only seen at sample granularity:
//! with 30 s samples and a 60 s target, a task is late when it has not started by the
//! second sample after the one that first counted it (a wait of about 75 s).
//!
//! The predictor's quantile level is driven by these counts, so the pool's
//! `service_level` means what an operator expects: the share of tasks that start
//! within `target_wait_s`.
//!
//! When the counts disagree with `pending` (an interrupted task went back to the queue,
//! an adapter rounds), the difference is settled so that the cohorts equal `pending`
//! again: extra waiting tasks join the newest cohort, missing ones leave the oldest.
//! State is a fixed ring of cohorts; a sample costs O(1) amortised.

use capstan_core::QueueSample;

/// Cohorts tracked at most; beyond that new arrivals join the newest cohort.
const MAX_COHORTS: usize = 512;

#[derive(Debug, Clone, Copy, Default)]
struct Cohort {
    at_ms: i64,
    size: u64,
    waiting: u64,
    scored: bool,
}

/// FIFO reconstruction of task waits from queue samples.
#[derive(Debug, Clone)]
pub struct WaitTracker {
    ring: Box<[Cohort; MAX_COHORTS]>,
    head: usize,
    len: usize,
    /// Cohorts at the front that are already scored.
    scored_prefix: usize,
    prev_running: Option<u32>,
    prev_at_ms: Option<i64>,
    tasks: u64,
    late: u64,
}

impl Default for WaitTracker {
    fn default() -> Self {
        Self::new()
    }
}

/// What one sample settled: tasks scored and how many of them were late.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scored {
    /// Tasks whose cohort reached `target_wait_s` at this sample.
    pub tasks: u64,
    /// Of those, the ones still waiting.
    pub late: u64,
}

impl WaitTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self {
            ring: Box::new([Cohort::default(); MAX_COHORTS]),
            head: 0,
            len: 0,
            scored_prefix: 0,
            prev_running: None,
            prev_at_ms: None,
            tasks: 0,
            late: 0,
        }
    }

    fn at(&mut self, i: usize) -> &mut Cohort {
        &mut self.ring[(self.head + i) % MAX_COHORTS]
    }

    /// Takes `n` tasks off the front of the queue (they started). A cohort that
    /// empties before it was scored started in time: its size is returned as on-time
    /// tasks.
    fn drain(&mut self, mut n: u64) -> u64 {
        let mut on_time = 0;
        while n > 0 && self.len > 0 {
            let c = self.at(0);
            let take = c.waiting.min(n);
            c.waiting -= take;
            n -= take;
            if c.waiting == 0 {
                let (scored, size) = (c.scored, c.size);
                self.head = (self.head + 1) % MAX_COHORTS;
                self.len -= 1;
                if scored {
                    self.scored_prefix -= 1;
                } else {
                    on_time += size;
                }
            }
        }
        on_time
    }

    fn push(&mut self, at_ms: i64, n: u64) {
        if n == 0 {
            return;
        }
        if self.len == MAX_COHORTS {
            let last = self.len - 1;
            let c = self.at(last);
            c.size += n;
            c.waiting += n;
            return;
        }
        let i = self.len;
        *self.at(i) = Cohort {
            at_ms,
            size: n,
            waiting: n,
            scored: false,
        };
        self.len += 1;
    }

    /// Feeds one sample; returns the tasks scored by it. `target_wait_ms` is the wait
    /// a task may have before it counts as late.
    pub fn observe(&mut self, sample: &QueueSample, target_wait_ms: i64) -> Scored {
        let now = sample.at.unix_ms();
        let started = match self.prev_running {
            Some(prev) => (u64::from(sample.running) + u64::from(sample.completions))
                .saturating_sub(u64::from(prev)),
            // The first sample: everything pending arrived before we looked.
            None => 0,
        };
        self.prev_running = Some(sample.running);
        let arrived_ms = match self.prev_at_ms {
            Some(prev) if prev < now => prev + (now - prev) / 2,
            _ => now,
        };
        self.prev_at_ms = Some(now);
        self.push(arrived_ms, u64::from(sample.arrivals));
        let mut on_time = self.drain(started);
        let waiting: u64 = (0..self.len)
            .map(|i| self.ring[(self.head + i) % MAX_COHORTS].waiting)
            .sum();
        let pending = u64::from(sample.pending);
        if waiting > pending {
            on_time += self.drain(waiting - pending);
        } else if waiting < pending {
            self.push(now, pending - waiting);
        }
        let mut scored = Scored {
            tasks: on_time,
            late: 0,
        };
        while self.scored_prefix < self.len {
            let i = self.scored_prefix;
            let c = self.at(i);
            if now - c.at_ms < target_wait_ms {
                break;
            }
            c.scored = true;
            scored.tasks += c.size;
            scored.late += c.waiting;
            self.scored_prefix += 1;
        }
        self.tasks += scored.tasks;
        self.late += scored.late;
        scored
    }

    /// Fraction of scored tasks that were late, if any were scored.
    pub fn late_fraction(&self) -> Option<f64> {
        (self.tasks > 0).then(|| self.late as f64 / self.tasks as f64)
    }
}

#[cfg(test)]
mod tests {
    use capstan_core::Timestamp;

    use super::*;

    fn s(t: i64, pending: u32, running: u32, arrivals: u32, completions: u32) -> QueueSample {
        QueueSample {
            at: Timestamp::from_unix_secs(t),
            pending,
            running,
            arrivals,
            completions,
        }
    }

    #[test]
    fn tasks_started_within_the_target_are_on_time() {
        let mut w = WaitTracker::new();
        assert_eq!(w.observe(&s(0, 0, 0, 0, 0), 60_000), Scored::default());
        // 5 arrive, 3 start at once, 2 wait.
        assert_eq!(w.observe(&s(30, 2, 3, 5, 0), 60_000), Scored::default());
        // The 2 start: the cohort left the queue in time, 5 on-time tasks.
        assert_eq!(
            w.observe(&s(60, 0, 5, 0, 0), 60_000),
            Scored { tasks: 5, late: 0 }
        );
        assert_eq!(w.observe(&s(90, 0, 5, 0, 0), 60_000), Scored::default());
        assert_eq!(w.late_fraction(), Some(0.0));
    }

    #[test]
    fn fifo_order_decides_who_is_late() {
        let mut w = WaitTracker::new();
        w.observe(&s(0, 0, 0, 0, 0), 60_000);
        // 4 arrive, none can start.
        w.observe(&s(30, 4, 0, 4, 0), 60_000);
        // 2 more arrive; 3 start (all from the first cohort).
        w.observe(&s(60, 3, 3, 2, 0), 60_000);
        // First cohort reaches 60 s: 1 of its 4 still waits.
        assert_eq!(
            w.observe(&s(90, 3, 3, 0, 0), 60_000),
            Scored { tasks: 4, late: 1 }
        );
        // 1 task completes and 3 start: the rest of the queue empties.
        assert_eq!(
            w.observe(&s(120, 0, 5, 0, 1), 60_000),
            Scored { tasks: 2, late: 0 }
        );
        assert_eq!(w.late_fraction(), Some(1.0 / 6.0));
    }

    #[test]
    fn requeued_tasks_join_the_queue_as_a_new_cohort() {
        let mut w = WaitTracker::new();
        w.observe(&s(0, 0, 2, 0, 0), 60_000);
        // An interruption puts 2 running tasks back: pending 2 with no arrival.
        w.observe(&s(30, 2, 0, 0, 0), 60_000);
        w.observe(&s(60, 2, 0, 0, 0), 60_000);
        assert_eq!(
            w.observe(&s(90, 2, 0, 0, 0), 60_000),
            Scored { tasks: 2, late: 2 }
        );
    }
}
