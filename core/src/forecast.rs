//! What the predictor hands the planner: capacity needed at `now + lead`, and beyond.
//!
//! A [`Forecast`] is made by the `predictor` crate at `made_at` for one pool. Its
//! `target_slots` is the number of slots the pool should have *ready* at
//! `made_at + lead_s` (lead = launch-to-ready time), sized at the pool's service level;
//! `backlog_slots` is what the classic reactive estimator asks for right now. The
//! planner takes the larger of the two, so a forecast can launch ahead of demand but
//! never leaves a visible backlog unanswered.
//!
//! `points` look further ahead for people (API, dashboard); the planner does not read
//! them, and the predictor only fills them when asked, so the per-tick path allocates
//! nothing.

use serde::{Deserialize, Serialize};

use crate::spec::ScalingPolicy;
use crate::time::Timestamp;

/// Capacity a pool needs, as forecast at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// When the forecast was made.
    pub made_at: Timestamp,
    /// Which predictor made it.
    pub policy: ScalingPolicy,
    /// Launch-to-ready time it looks ahead by, in seconds.
    pub lead_s: f64,
    /// Slots needed at `made_at + lead_s`, at the pool's service level. For the
    /// reactive policy this equals `backlog_slots`.
    pub target_slots: u32,
    /// The reactive estimator's answer to the backlog seen at `made_at` (pending and
    /// running tasks against existing capacity, booting included).
    pub backlog_slots: u32,
    /// Expected busy slots at `made_at + lead_s` (the mean `target_slots` is an upper
    /// quantile of). Equals `backlog_slots` for the reactive policy.
    pub expected_busy_slots: f64,
    /// Forecast further ahead, in increasing time order; empty unless asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<ForecastPoint>,
}

/// Forecast busy slots at one future instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastPoint {
    /// The instant forecast.
    pub at: Timestamp,
    /// Expected busy slots.
    pub mean: f64,
    /// Upper quantiles of busy slots, in increasing `p` order.
    pub quantiles: Vec<Quantile>,
}

/// One quantile of a forecast distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    /// Probability level in (0, 1).
    pub p: f64,
    /// Smallest slot count whose probability of covering demand is at least `p`.
    pub slots: f64,
}

impl Forecast {
    /// The slots the planner should aim for from this forecast alone: the larger of the
    /// forecast and backlog targets.
    pub fn demand_slots(&self) -> u32 {
        self.target_slots.max(self.backlog_slots)
    }
}
