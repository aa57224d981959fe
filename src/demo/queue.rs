//! The demo's task queues: one in memory per pool, filled by its [`Demand`] as the
//! tasks' times come, emptied by the simulated workers ([`super::fleet`]), and reported
//! to capstan every [`SAMPLE_EVERY`] through `POST /v1/pools/{id}/queue`, the route a
//! CI system's exporter would push to.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::sync::watch;

use super::demand::{BURST_SPREAD_S, Demand};
use super::say;
use crate::client::{ApiClient, pool_path};
use crate::clock::wall_clock;

/// How often each queue is sampled and pushed: the predictor's tick.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often due tasks move into the queue.
const ARRIVAL_STEP: Duration = Duration::from_millis(250);

/// A task waiting or running.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Task {
    /// How long it runs once it has a slot, seconds.
    pub run_s: f64,
}

/// What one queue sample reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Tasks waiting now.
    pub pending: u32,
    /// Tasks running now.
    pub running: u32,
    /// Tasks that arrived since the last sample.
    pub arrivals: u32,
    /// Tasks that finished since the last sample.
    pub completions: u32,
}

/// One pool's queue.
#[derive(Debug, Default)]
pub struct TaskQueue {
    pending: VecDeque<Task>,
    running: u32,
    arrivals: u32,
    completions: u32,
}

impl TaskQueue {
    /// A task enters the queue.
    pub fn arrive(&mut self, task: Task) {
        self.pending.push_back(task);
        self.arrivals += 1;
    }

    /// A worker with `free` idle slots takes up to that many tasks, oldest first.
    pub fn claim(&mut self, free: u32) -> Vec<Task> {
        let n = (free as usize).min(self.pending.len());
        self.running += n as u32;
        self.pending.drain(..n).collect()
    }

    /// A running task finished.
    pub fn finish(&mut self) {
        self.running = self.running.saturating_sub(1);
        self.completions += 1;
    }

    /// A machine went away with `task` unfinished: it goes back to the head of the
    /// queue to be run again (not a new arrival).
    pub fn give_back(&mut self, task: Task) {
        self.running = self.running.saturating_sub(1);
        self.pending.push_front(task);
    }

    /// Waiting and running tasks now.
    pub fn levels(&self) -> (u32, u32) {
        (self.pending.len() as u32, self.running)
    }

    /// The sample for now; the arrival and completion counts start again from zero.
    pub fn take_sample(&mut self) -> Counts {
        let counts = Counts {
            pending: self.pending.len() as u32,
            running: self.running,
            arrivals: self.arrivals,
            completions: self.completions,
        };
        self.arrivals = 0;
        self.completions = 0;
        counts
    }

    /// A sample could not be delivered: its counts go into the next one.
    pub fn restore(&mut self, counts: Counts) {
        self.arrivals += counts.arrivals;
        self.completions += counts.completions;
    }
}

/// A queue shared by its driver, its feeder and the pool's workers.
#[derive(Debug, Clone, Default)]
pub struct SharedQueue(Arc<Mutex<TaskQueue>>);

impl SharedQueue {
    /// The queue, locked.
    pub fn lock(&self) -> MutexGuard<'_, TaskQueue> {
        // Plain counters: a panic elsewhere leaves them usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Moves `demand`'s tasks into `queue` as their times come, saying so on stdout when a
/// burst begins, until `stop`.
pub async fn drive(
    pool: String,
    demand: Demand,
    queue: SharedQueue,
    mut stop: watch::Receiver<bool>,
) {
    let mut from_ms = wall_clock().unix_ms();
    let mut announced: Option<i64> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(ARRIVAL_STEP) => {}
        }
        let to_ms = wall_clock().unix_ms() + 1;
        let due = demand.live(from_ms, to_ms);
        from_ms = to_ms;
        let mut q = queue.lock();
        for a in due {
            if let Some(burst) = a.burst
                && announced != Some(burst)
            {
                announced = Some(burst);
                let spread_ms = (BURST_SPREAD_S * 1000.0) as i64 + 1;
                let size = demand
                    .live(burst, burst + spread_ms)
                    .iter()
                    .filter(|t| t.burst == Some(burst))
                    .count();
                say(&format!("burst: {size} tasks arrive in {pool}"));
            }
            q.arrive(Task { run_s: a.run_s });
        }
    }
}

/// Pushes `queue`'s sample to capstan every [`SAMPLE_EVERY`] until `stop`. A sample
/// that does not get through is folded into the next one.
pub async fn feed(
    pool: String,
    queue: SharedQueue,
    api: ApiClient,
    mut stop: watch::Receiver<bool>,
) {
    let path = match pool_path(&pool) {
        Ok(p) => format!("{p}/queue"),
        Err(e) => {
            tracing::error!(pool, error = %e, "demo: no queue feed");
            return;
        }
    };
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        let counts = queue.lock().take_sample();
        let body = json!({"samples": [{
            "pending": counts.pending,
            "running": counts.running,
            "arrivals": counts.arrivals,
            "completions": counts.completions,
        }]});
        if let Err(e) = api.send(Method::POST, &path, &[], &[], Some(&body)).await {
            tracing::warn!(pool, error = %format!("{e:#}"), "demo: queue sample not accepted; its counts go into the next one");
            queue.lock().restore(counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_counts_since_the_last_and_levels_are_current() {
        let mut q = TaskQueue::default();
        for run_s in [10.0, 20.0, 30.0] {
            q.arrive(Task { run_s });
        }
        let taken = q.claim(2);
        assert_eq!(taken, vec![Task { run_s: 10.0 }, Task { run_s: 20.0 }]);
        q.finish();
        let s = q.take_sample();
        assert_eq!(
            s,
            Counts {
                pending: 1,
                running: 1,
                arrivals: 3,
                completions: 1
            }
        );
        // A lost machine's task goes back first in line and is no new arrival.
        q.give_back(Task { run_s: 20.0 });
        assert_eq!(q.claim(1), vec![Task { run_s: 20.0 }]);
        let s2 = q.take_sample();
        assert_eq!(
            (s2.pending, s2.running, s2.arrivals, s2.completions),
            (1, 1, 0, 0)
        );
        // An undelivered sample's counts are carried into the next.
        q.restore(s);
        let s3 = q.take_sample();
        assert_eq!((s3.arrivals, s3.completions), (3, 1));
        assert_eq!(q.claim(5).len(), 1);
        assert_eq!(q.levels(), (0, 2));
    }
}
