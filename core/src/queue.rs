//! The demand signal of a pool.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::worker::{Worker, WorkerState};

/// What a pool's task queue looked like over one sampling interval ending at `at`.
///
/// `pending` and `running` are levels at `at`; `arrivals` and `completions` are counts
/// over the interval since the previous sample. Samples are pushed through the API or
/// pulled by queue adapters, stored per pool, and are the predictor's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueSample {
    /// End of the interval.
    pub at: Timestamp,
    /// Tasks waiting for a slot at `at`.
    pub pending: u32,
    /// Tasks running at `at`.
    pub running: u32,
    /// Tasks that entered the queue during the interval.
    // Optional when read but always written, and the API only sends samples: required
    // in the document.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub arrivals: u32,
    /// Tasks that finished during the interval.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub completions: u32,
}

/// Tasks that arrived over an interval when the source only reports levels: the growth
/// of pending + running since the previous sample, plus the tasks that completed. With
/// no previous sample it is `completions` alone: a first sample's backlog arrived at
/// unknown times, and booking it all into one interval would fake a burst.
///
/// The API (pushed samples without `arrivals`) and the queue adapters both use this.
pub fn estimate_arrivals(level: u32, previous_level: Option<u32>, completions: u32) -> u32 {
    let growth = previous_level.map_or(0, |p| level.saturating_sub(p));
    growth.saturating_add(completions)
}

/// Whether `pending` tasks are more than the idle slots of the pool's `ready` workers
/// (capacity minus busy slots): the condition for waking the reconcile loop at once
/// instead of waiting for its next tick.
pub fn backlog_exceeds_idle(pending: u32, workers: &[Worker]) -> bool {
    if pending == 0 {
        return false;
    }
    let idle: u64 = workers
        .iter()
        .filter(|w| w.state == WorkerState::Ready)
        .map(|w| u64::from(w.capacity.saturating_sub(w.busy_slots)))
        .sum();
    u64::from(pending) > idle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_growth_plus_completions() {
        assert_eq!(estimate_arrivals(15, Some(12), 2), 5);
        assert_eq!(estimate_arrivals(9, Some(15), 7), 7);
        assert_eq!(estimate_arrivals(40, None, 3), 3);
    }
}
