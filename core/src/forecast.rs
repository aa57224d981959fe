//! What the predictor hands the planner: capacity needed at `now + lead`, and beyond.
//!
//! A [`Forecast`] is made by the `predictor` crate at `made_at` for one pool. It carries
//! two numbers with different jobs:
//!
//! - `target_slots`: the slots the pool *needs* at `made_at + lead_s` (lead =
//!   launch-to-ready time). For the forecast policy, busy slots then plus spare for the
//!   arrivals after, sized at the pool's service level; for the reactive policy,
//!   running tasks plus the pending ones times the scaling ratio. Idle timeouts never
//!   cut the pool below it.
//! - `backlog_slots`: the classic reactive estimator's answer, existing slots plus the
//!   backlog they cannot absorb. It is never below the existing slots, so it only ever
//!   scales out.
//!
//! The planner launches toward the larger of the two, so a forecast can launch ahead of
//! demand but never leaves a visible backlog unanswered, and it scales in only through
//! idle timeouts, down to `target_slots`.
//!
//! `points` look further ahead for people (API, dashboard); the planner does not read
//! them, and the predictor only fills them when asked, so the per-tick path allocates
//! nothing.

use serde::{Deserialize, Serialize};

use crate::spec::ScalingPolicy;
use crate::time::Timestamp;

/// Capacity a pool needs, as forecast at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Forecast {
    /// When the forecast was made.
    pub made_at: Timestamp,
    /// Which predictor made it.
    pub policy: ScalingPolicy,
    /// Launch-to-ready time it looks ahead by, in seconds.
    pub lead_s: f64,
    /// Slots needed at `made_at + lead_s`: forecast busy slots plus spare at the pool's
    /// service level (forecast policy), or running plus pending × ratio (reactive).
    /// Idle timeouts never cut the pool below it.
    pub target_slots: u32,
    /// The reactive estimator's answer to the backlog seen at `made_at`: existing slots
    /// (booting included) plus what pending tasks need beyond the idle ones. Never
    /// below the existing slots; launches aim for `max(target_slots, backlog_slots)`.
    pub backlog_slots: u32,
    /// Expected busy slots at `made_at + lead_s` (the mean behind `target_slots`).
    /// Equals `target_slots` for the reactive policy.
    pub expected_busy_slots: f64,
    /// Forecast further ahead, in increasing time order; empty unless asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<ForecastPoint>,
}

/// Forecast busy slots at one future instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quantile {
    /// Probability level in (0, 1).
    pub p: f64,
    /// Smallest slot count whose probability of covering demand is at least `p`.
    pub slots: f64,
}

impl Forecast {
    /// The slots launches should aim for from this forecast alone: the larger of the
    /// forecast and backlog targets.
    pub fn demand_slots(&self) -> u32 {
        self.target_slots.max(self.backlog_slots)
    }
}
