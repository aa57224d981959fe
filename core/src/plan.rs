//! Plans: what the reconciler decided for a pool at one tick, and why.
//!
//! `reconciler::plan` turns (spec, workers, forecast, offering health, now) into a
//! [`Plan`]: a list of [`Action`]s for the actuator plus a [`PlanReport`] that explains
//! the decision (which term set the target, the numbers behind it, which offerings
//! were skipped and why). Plans are recorded and served by the API as JSON, so every
//! type here is `Serialize + Deserialize`.
//!
//! [`LaunchLog`] is the one piece of state the planner needs beyond the observed
//! workers: when recent launches happened, for the per-minute launch-rate limit.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::WorkerId;
use crate::spec::ScalingPolicy;
use crate::time::Timestamp;

/// What the planner decided at one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Actions for the actuator, launches first then terminations.
    pub actions: Vec<Action>,
    /// Why.
    pub report: PlanReport,
}

impl Plan {
    /// Instances this plan launches, over all its launch actions.
    pub fn launch_count(&self) -> u32 {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Launch { count, .. } => *count,
                Action::Terminate { .. } => 0,
            })
            .sum()
    }
}

/// One thing for the actuator to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Launch `count` instances of a launch config. The token is unique per action and
    /// deterministic (pool, tick, sequence), so a retried create cannot double-launch;
    /// the actuator derives one provider token per instance from it (`{token}-{i}`).
    Launch {
        /// The launch config (offering) to use.
        launch_config_id: String,
        /// The zone to launch in, when the offering names one (a launch config without
        /// a zone may stand for one offering per zone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone: Option<String>,
        /// Instances to launch (at least 1).
        count: u32,
        /// Idempotency token of this action.
        idempotency_token: String,
    },
    /// Terminate one worker.
    Terminate {
        /// The worker.
        worker: WorkerId,
        /// Why.
        reason: TerminateReason,
    },
}

/// Why the planner terminates a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminateReason {
    /// Idle longer than the pool's idle timeout, and not needed for the target.
    IdleTimeout,
    /// Older than the pool's maximum lifetime.
    MaxLifetime,
    /// Launched but never registered within the registration timeout.
    RegistrationTimeout,
    /// The pool holds more than its maximum capacity.
    OverMax,
    /// The worker failed (launch failure, crash); its machine must go.
    Failed,
    /// A registered worker stopped sending heartbeats.
    HeartbeatLost,
}

impl TerminateReason {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle_timeout",
            Self::MaxLifetime => "max_lifetime",
            Self::RegistrationTimeout => "registration_timeout",
            Self::OverMax => "over_max",
            Self::Failed => "failed",
            Self::HeartbeatLost => "heartbeat_lost",
        }
    }
}

impl fmt::Display for TerminateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The term that decided a plan's target capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetTerm {
    /// The pool's `min_capacity` floor.
    Min,
    /// An open schedule window's floor.
    Schedule,
    /// The predictor's forecast for `now + lead`.
    Forecast,
    /// The reactive backlog target.
    Backlog,
    /// The pool's `max_capacity` ceiling.
    Max,
    /// The budget's ceiling on cost per hour.
    Budget,
}

/// Why an offering was not used for launches in this plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// Marked unavailable (insufficient capacity, quota) until `until`.
    Unavailable {
        /// When it may be tried again.
        until: Timestamp,
        /// What the provider said.
        reason: String,
    },
    /// The offering already holds its own `max_slots`.
    OverOwnMax {
        /// Its cap.
        max_slots: u32,
        /// Slots it holds now (requested, booting, ready).
        current_slots: u32,
    },
    /// One more instance would take the pool over its budget.
    OverBudget {
        /// Cost per hour of the pool's instances, counting the launches this plan
        /// already made.
        current_cost_per_hour: f64,
        /// Price of one more instance of this offering.
        instance_price_per_hour: f64,
        /// The budget's ceiling.
        max_cost_per_hour: f64,
    },
}

/// An offering the planner passed over, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedOffering {
    /// The offering's launch config.
    pub launch_config_id: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// The explanation that travels with every plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReport {
    /// When the plan was made.
    pub at: Timestamp,
    /// The predictor behind the forecast.
    pub policy: ScalingPolicy,
    /// The forecast's target for `now + lead` (slots).
    pub forecast_slots: u32,
    /// The reactive backlog target (slots).
    pub backlog_slots: u32,
    /// The pool's floor (slots).
    pub min_slots: u32,
    /// The highest floor of the schedule windows open now (0 if none).
    pub schedule_slots: u32,
    /// The pool's ceiling (slots).
    pub max_slots: u32,
    /// The ceiling the budget allows, when the pool has a budget and prices are known.
    pub budget_slots: Option<u32>,
    /// What the plan aims for (slots).
    pub target_slots: u32,
    /// The term that decided `target_slots`.
    pub target_set_by: TargetTerm,
    /// Idle timeouts never take the pool below this many slots: the forecast's need
    /// (not the backlog term, which never scales in) raised to the floor, cut to max.
    pub keep_slots: u32,
    /// Slots of workers that count as capacity (requested, booting, ready) before the
    /// plan, excluding ones this plan terminates.
    pub current_slots: u32,
    /// Slots this plan launches.
    pub launch_slots: u32,
    /// Instances launched in the minute before `at` (from the launch log).
    pub launched_last_minute: u32,
    /// Whether the launch-rate limit held launches back.
    pub rate_limited: bool,
    /// Slots the plan wanted but could not launch (rate limit, every offering
    /// skipped or capped).
    pub unmet_slots: u32,
    /// Offerings passed over, and why.
    pub skipped_offerings: Vec<SkippedOffering>,
}

/// When the pool's recent launches happened, one entry per instance, oldest first.
///
/// The planner reads it for the `max_launches_per_minute` limit; whoever applies a plan
/// records the launches it made with [`LaunchLog::record`]. Entries older than a minute
/// are dropped on record, so the log stays as small as the limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchLog {
    launches: VecDeque<Timestamp>,
}

/// The window the launch-rate limit counts over, in seconds.
pub const LAUNCH_RATE_WINDOW_S: i64 = 60;

impl LaunchLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `count` instance launches at `at` (times must not go backwards) and
    /// forgets launches older than the rate window.
    pub fn record(&mut self, at: Timestamp, count: u32) {
        let horizon = at.plus_secs(-LAUNCH_RATE_WINDOW_S);
        while self.launches.front().is_some_and(|t| *t <= horizon) {
            self.launches.pop_front();
        }
        for _ in 0..count {
            self.launches.push_back(at);
        }
    }

    /// Instances launched in the rate window before `now`: in `(now - 60 s, now]`.
    pub fn launched_in_window(&self, now: Timestamp) -> u32 {
        let horizon = now.plus_secs(-LAUNCH_RATE_WINDOW_S);
        let n = self
            .launches
            .iter()
            .rev()
            .take_while(|t| **t > horizon)
            .filter(|t| **t <= now)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_log_counts_the_last_minute_only() {
        let t = Timestamp::from_unix_secs;
        let mut log = LaunchLog::new();
        log.record(t(0), 3);
        log.record(t(30), 2);
        assert_eq!(log.launched_in_window(t(30)), 5);
        assert_eq!(log.launched_in_window(t(59)), 5);
        assert_eq!(log.launched_in_window(t(60)), 2);
        log.record(t(90), 1);
        assert_eq!(log.launched_in_window(t(90)), 1);
        assert_eq!(log.launches.len(), 1);
    }

    #[test]
    fn plans_round_trip_through_json() {
        let plan = Plan {
            actions: vec![
                Action::Launch {
                    launch_config_id: "a".into(),
                    zone: None,
                    count: 2,
                    idempotency_token: "p-1-0".into(),
                },
                Action::Terminate {
                    worker: WorkerId::from_string("w"),
                    reason: TerminateReason::IdleTimeout,
                },
            ],
            report: PlanReport {
                at: Timestamp::from_unix_secs(1),
                policy: ScalingPolicy::Forecast,
                forecast_slots: 3,
                backlog_slots: 1,
                min_slots: 0,
                schedule_slots: 0,
                max_slots: 10,
                budget_slots: None,
                target_slots: 3,
                target_set_by: TargetTerm::Forecast,
                keep_slots: 3,
                current_slots: 1,
                launch_slots: 2,
                launched_last_minute: 0,
                rate_limited: false,
                unmet_slots: 0,
                skipped_offerings: vec![SkippedOffering {
                    launch_config_id: "b".into(),
                    reason: SkipReason::OverOwnMax {
                        max_slots: 1,
                        current_slots: 1,
                    },
                }],
            },
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert!(json.contains(r#""type":"launch""#), "{json}");
        assert!(json.contains(r#""reason":"idle_timeout""#), "{json}");
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
        assert_eq!(plan.launch_count(), 2);
    }
}
