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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

    /// The plan in plain words, for an operator: the target and what set it (with the
    /// numbers behind it), the slots there are, what is launched where, which
    /// offerings were skipped and why, the launch-rate limit, unmet slots and what is
    /// terminated why. One line, clauses separated by `; `, e.g.
    ///
    /// ```text
    /// forecast policy: target 42 slots, set by the forecast (forecast 42, backlog 12, max 100);
    /// 30 slots now; launching 12 slots: 3 × spot-c6i; skipped od-m5: unavailable until
    /// 2026-11-30T12:03:00.000Z (InsufficientInstanceCapacity); terminating 2: idle_timeout w-1, w-2
    /// ```
    pub fn summary(&self) -> String {
        self.summary_with(|s| {
            format!(
                "skipped {}: {}",
                s.launch_config_id,
                s.reason.words(|t| t.to_string())
            )
        })
    }

    /// [`Plan::summary`] with each skipped offering's clause written by `skipped` (the
    /// dashboard says its times as clocks).
    pub fn summary_with(&self, skipped: impl Fn(&SkippedOffering) -> String) -> String {
        let r = &self.report;
        let mut clauses = Vec::new();

        let mut terms = vec![
            format!("forecast {}", r.forecast_slots),
            if r.boot_hedge_slots > 0 {
                format!(
                    "backlog {} with {} hedging slow boots",
                    r.backlog_slots, r.boot_hedge_slots
                )
            } else {
                format!("backlog {}", r.backlog_slots)
            },
        ];
        if r.schedule_slots > 0 || r.target_set_by == TargetTerm::Schedule {
            terms.push(format!("schedule floor {}", r.schedule_slots));
        }
        if r.min_slots > 0 || r.target_set_by == TargetTerm::Min {
            terms.push(format!("min {}", r.min_slots));
        }
        terms.push(format!("max {}", r.max_slots));
        if let Some(b) = r.budget_slots {
            terms.push(format!("budget allows {b}"));
        }
        let set_by = match r.target_set_by {
            TargetTerm::Min => "set by the pool's minimum",
            TargetTerm::Schedule => "set by a schedule window's floor",
            TargetTerm::Forecast => "set by the forecast",
            TargetTerm::Backlog => "set by the backlog of pending tasks",
            TargetTerm::Max => "capped by the pool's maximum",
            TargetTerm::Budget => "capped by the budget",
        };
        clauses.push(format!(
            "{} policy: target {}, {set_by} ({})",
            r.policy.as_str(),
            slots(r.target_slots),
            terms.join(", ")
        ));
        clauses.push(format!("{} now", slots(r.current_slots)));
        if r.held_slots > 0 {
            clauses.push(format!(
                "{} held idle for tasks shorter than a boot",
                slots(r.held_slots)
            ));
        }

        let launches: Vec<String> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Launch {
                    launch_config_id,
                    zone,
                    count,
                    ..
                } => Some(match zone {
                    Some(zone) => format!("{count} × {launch_config_id} in {zone}"),
                    None => format!("{count} × {launch_config_id}"),
                }),
                Action::Terminate { .. } => None,
            })
            .collect();
        if !launches.is_empty() {
            clauses.push(format!(
                "launching {}: {}",
                slots(r.launch_slots),
                launches.join(", ")
            ));
        }
        clauses.extend(r.skipped_offerings.iter().map(skipped));
        if r.rate_limited {
            clauses.push(format!(
                "held back by the launch-rate limit ({} launched in the last minute)",
                r.launched_last_minute
            ));
        }
        if r.unmet_slots > 0 {
            clauses.push(format!("{} unmet", slots(r.unmet_slots)));
        }

        // Terminations grouped by reason, in the order reasons first appear.
        let mut groups: Vec<(TerminateReason, Vec<&str>)> = Vec::new();
        for a in &self.actions {
            if let Action::Terminate { worker, reason } = a {
                match groups.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, ids)) => ids.push(worker.as_str()),
                    None => groups.push((*reason, vec![worker.as_str()])),
                }
            }
        }
        if !groups.is_empty() {
            let n: usize = groups.iter().map(|(_, ids)| ids.len()).sum();
            let groups: Vec<String> = groups
                .iter()
                .map(|(reason, ids)| {
                    let mut text =
                        format!("{reason} {}", ids[..ids.len().min(SUMMARY_IDS)].join(", "));
                    if ids.len() > SUMMARY_IDS {
                        text.push_str(&format!(" (+{} more)", ids.len() - SUMMARY_IDS));
                    }
                    text
                })
                .collect();
            clauses.push(format!("terminating {n}: {}", groups.join(" and ")));
        }
        if self.actions.is_empty() {
            clauses.push("no change".to_owned());
        }
        clauses.join("; ")
    }
}

/// Most worker ids [`Plan::summary`] names per termination reason.
const SUMMARY_IDS: usize = 10;

/// `1 slot`, `n slots`.
fn slots(n: u32) -> String {
    if n == 1 {
        "1 slot".to_owned()
    } else {
        format!("{n} slots")
    }
}

/// One thing for the actuator to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
// `PlanAction` in the OpenAPI document: a bare `Action` says little among the API's schemas.
#[cfg_attr(feature = "openapi", schema(as = PlanAction))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Its pool is being deleted.
    PoolDeleted,
    /// It was draining (an operator's drain, an interruption notice) and its last
    /// heartbeat since reported no busy slot.
    Drained,
}

impl TerminateReason {
    /// Every reason, in the order they are documented.
    pub const ALL: [TerminateReason; 8] = [
        Self::IdleTimeout,
        Self::MaxLifetime,
        Self::RegistrationTimeout,
        Self::OverMax,
        Self::Failed,
        Self::HeartbeatLost,
        Self::PoolDeleted,
        Self::Drained,
    ];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle_timeout",
            Self::MaxLifetime => "max_lifetime",
            Self::RegistrationTimeout => "registration_timeout",
            Self::OverMax => "over_max",
            Self::Failed => "failed",
            Self::HeartbeatLost => "heartbeat_lost",
            Self::PoolDeleted => "pool_deleted",
            Self::Drained => "drained",
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl TargetTerm {
    /// Every term, in the order they are documented.
    pub const ALL: [TargetTerm; 6] = [
        Self::Min,
        Self::Schedule,
        Self::Forecast,
        Self::Backlog,
        Self::Max,
        Self::Budget,
    ];
}

/// Why an offering was not used for launches in this plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl SkipReason {
    /// Why, in words, with the time an offering is unavailable until written by `time`:
    /// "unavailable until 2026-11-30T12:03:00.000Z (InsufficientInstanceCapacity)",
    /// "at its own maximum (8 of 8 slots)", "over budget (…)".
    pub fn words(&self, time: impl Fn(Timestamp) -> String) -> String {
        match self {
            SkipReason::Unavailable { until, reason } => {
                format!("unavailable until {} ({reason})", time(*until))
            }
            SkipReason::OverOwnMax {
                max_slots,
                current_slots,
            } => format!("at its own maximum ({current_slots} of {max_slots} slots)"),
            SkipReason::OverBudget {
                current_cost_per_hour,
                instance_price_per_hour,
                max_cost_per_hour,
            } => format!(
                "over budget ({current_cost_per_hour:.2}/h + {instance_price_per_hour:.2}/h \
                 for one more exceeds {max_cost_per_hour:.2}/h)"
            ),
        }
    }
}

/// An offering the planner passed over, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SkippedOffering {
    /// The offering's launch config.
    pub launch_config_id: String,
    /// Why it was skipped.
    pub reason: SkipReason,
}

/// The explanation that travels with every plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanReport {
    /// When the plan was made.
    pub at: Timestamp,
    /// The predictor behind the forecast.
    pub policy: ScalingPolicy,
    /// The forecast's target for `now + lead` (slots).
    pub forecast_slots: u32,
    /// The reactive backlog target (slots), hedge included.
    pub backlog_slots: u32,
    /// Of `backlog_slots`, the slots launched beyond the waiting tasks' own because
    /// measured boot times vary and the service level prices the wait they save (the
    /// forecast policy's hedge for slow boots; 0 otherwise). Absent in reports
    /// recorded before the field existed.
    #[serde(default)]
    pub boot_hedge_slots: u32,
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
    /// (not the backlog term, which never scales in) plus the spec's `warm_slots`,
    /// raised to the floor and to `held_slots`, cut to max.
    pub keep_slots: u32,
    /// The level held idle for the pool's tasks shorter than a boot, which a launch
    /// cannot serve (the forecast policy where capstan chooses the idle timeout; 0
    /// otherwise): `keep_slots` is at least this. Absent in reports recorded before
    /// the field existed.
    #[serde(default)]
    pub held_slots: u32,
    /// The idle timeout this plan applied, in seconds: the spec's `idle_timeout_s`, or
    /// the one capstan chose where the spec leaves it out. Absent in reports recorded
    /// before the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<f64>,
    /// Whether capstan chose `idle_timeout_s` (from the boot time and the observed idle
    /// gaps) because the spec leaves it out; false when the operator set it.
    #[serde(default)]
    pub idle_timeout_chosen: bool,
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
    fn all_lists_every_terminate_reason_and_target_term_once() {
        // Each variant's place in `ALL`: these matches stop compiling when a variant
        // is added; add it to `ALL` as well.
        let reason_at = |r: TerminateReason| match r {
            TerminateReason::IdleTimeout => 0,
            TerminateReason::MaxLifetime => 1,
            TerminateReason::RegistrationTimeout => 2,
            TerminateReason::OverMax => 3,
            TerminateReason::Failed => 4,
            TerminateReason::HeartbeatLost => 5,
            TerminateReason::PoolDeleted => 6,
            TerminateReason::Drained => 7,
        };
        let term_at = |t: TargetTerm| match t {
            TargetTerm::Min => 0,
            TargetTerm::Schedule => 1,
            TargetTerm::Forecast => 2,
            TargetTerm::Backlog => 3,
            TargetTerm::Max => 4,
            TargetTerm::Budget => 5,
        };
        for (i, r) in TerminateReason::ALL.into_iter().enumerate() {
            assert_eq!(reason_at(r), i, "{r}");
        }
        for (i, t) in TargetTerm::ALL.into_iter().enumerate() {
            assert_eq!(term_at(t), i, "{t:?}");
        }
    }

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

    fn quiet_report() -> PlanReport {
        PlanReport {
            at: Timestamp::from_unix_secs(1_800_000_000),
            policy: ScalingPolicy::Forecast,
            forecast_slots: 30,
            backlog_slots: 12,
            boot_hedge_slots: 0,
            min_slots: 0,
            schedule_slots: 0,
            max_slots: 100,
            budget_slots: None,
            target_slots: 30,
            target_set_by: TargetTerm::Forecast,
            keep_slots: 30,
            held_slots: 0,
            idle_timeout_s: Some(600.0),
            idle_timeout_chosen: false,
            current_slots: 30,
            launch_slots: 0,
            launched_last_minute: 0,
            rate_limited: false,
            unmet_slots: 0,
            skipped_offerings: vec![],
        }
    }

    fn launch(id: &str, zone: Option<&str>, count: u32) -> Action {
        Action::Launch {
            launch_config_id: id.into(),
            zone: zone.map(Into::into),
            count,
            idempotency_token: format!("p-1-{id}"),
        }
    }

    fn terminate(id: &str, reason: TerminateReason) -> Action {
        Action::Terminate {
            worker: WorkerId::from_string(id),
            reason,
        }
    }

    #[test]
    fn a_quiet_plan_says_nothing_changes() {
        let plan = Plan {
            actions: vec![],
            report: quiet_report(),
        };
        assert_eq!(
            plan.summary(),
            "forecast policy: target 30 slots, set by the forecast (forecast 30, backlog 12, \
             max 100); 30 slots now; no change"
        );
    }

    #[test]
    fn summaries_say_what_is_launched_skipped_and_terminated_and_why() {
        let mut report = quiet_report();
        report.forecast_slots = 42;
        report.target_slots = 42;
        report.launch_slots = 12;
        report.skipped_offerings = vec![
            SkippedOffering {
                launch_config_id: "od-m5".into(),
                reason: SkipReason::Unavailable {
                    until: "2026-11-30T12:03:00Z".parse().unwrap(),
                    reason: "InsufficientInstanceCapacity".into(),
                },
            },
            SkippedOffering {
                launch_config_id: "od-c5".into(),
                reason: SkipReason::OverOwnMax {
                    max_slots: 8,
                    current_slots: 8,
                },
            },
        ];
        let plan = Plan {
            actions: vec![
                launch("spot-c6i", None, 3),
                launch("spot-m6i", Some("us-east-1a"), 1),
                terminate("w-1", TerminateReason::IdleTimeout),
                terminate("w-9", TerminateReason::HeartbeatLost),
                terminate("w-2", TerminateReason::IdleTimeout),
            ],
            report,
        };
        assert_eq!(
            plan.summary(),
            "forecast policy: target 42 slots, set by the forecast (forecast 42, backlog 12, \
             max 100); 30 slots now; launching 12 slots: 3 × spot-c6i, 1 × spot-m6i in \
             us-east-1a; skipped od-m5: unavailable until 2026-11-30T12:03:00.000Z \
             (InsufficientInstanceCapacity); skipped od-c5: at its own maximum (8 of 8 slots); \
             terminating 3: idle_timeout w-1, w-2 and heartbeat_lost w-9"
        );
    }

    #[test]
    fn a_summary_says_how_much_of_the_backlog_hedges_slow_boots() {
        let mut report = quiet_report();
        report.target_set_by = TargetTerm::Backlog;
        report.backlog_slots = 40;
        report.boot_hedge_slots = 3;
        let plan = Plan {
            actions: Vec::new(),
            report,
        };
        assert!(
            plan.summary()
                .contains("(forecast 30, backlog 40 with 3 hedging slow boots, max 100)"),
            "{}",
            plan.summary()
        );
    }

    #[test]
    fn a_summary_says_the_slots_held_for_short_tasks_and_only_when_there_are_some() {
        let mut plan = Plan {
            actions: Vec::new(),
            report: quiet_report(),
        };
        assert!(!plan.summary().contains("held"), "{}", plan.summary());
        plan.report.held_slots = 3;
        assert!(
            plan.summary()
                .contains("; 30 slots now; 3 slots held idle for tasks shorter than a boot"),
            "{}",
            plan.summary()
        );
    }

    #[test]
    fn summaries_name_every_target_term() {
        let cases = [
            (
                TargetTerm::Min,
                "set by the pool's minimum (forecast 30, backlog 12, min 5, max 100)",
            ),
            (
                TargetTerm::Schedule,
                "set by a schedule window's floor (forecast 30, backlog 12, schedule floor 20, min 5, max 100)",
            ),
            (
                TargetTerm::Forecast,
                "set by the forecast (forecast 30, backlog 12, min 5, max 100)",
            ),
            (
                TargetTerm::Backlog,
                "set by the backlog of pending tasks (forecast 30, backlog 12, min 5, max 100)",
            ),
            (
                TargetTerm::Max,
                "capped by the pool's maximum (forecast 30, backlog 12, min 5, max 100)",
            ),
            (
                TargetTerm::Budget,
                "capped by the budget (forecast 30, backlog 12, min 5, max 100, budget allows 25)",
            ),
        ];
        for (term, words) in cases {
            let mut report = quiet_report();
            report.min_slots = 5;
            report.target_set_by = term;
            match term {
                TargetTerm::Schedule => report.schedule_slots = 20,
                TargetTerm::Budget => report.budget_slots = Some(25),
                _ => {}
            }
            let summary = Plan {
                actions: vec![],
                report,
            }
            .summary();
            assert!(summary.contains(words), "{term:?}: {summary}");
        }
    }

    #[test]
    fn summaries_explain_limits_budget_and_unmet_slots() {
        let mut report = quiet_report();
        report.policy = ScalingPolicy::Reactive;
        report.backlog_slots = 50;
        report.target_slots = 50;
        report.target_set_by = TargetTerm::Budget;
        report.budget_slots = Some(31);
        report.current_slots = 30;
        report.launch_slots = 1;
        report.launched_last_minute = 9;
        report.rate_limited = true;
        report.unmet_slots = 19;
        report.skipped_offerings = vec![SkippedOffering {
            launch_config_id: "big".into(),
            reason: SkipReason::OverBudget {
                current_cost_per_hour: 9.5,
                instance_price_per_hour: 0.75,
                max_cost_per_hour: 10.0,
            },
        }];
        let plan = Plan {
            actions: vec![launch("small", None, 1)],
            report,
        };
        assert_eq!(
            plan.summary(),
            "reactive policy: target 50 slots, capped by the budget (forecast 30, backlog 50, \
             max 100, budget allows 31); 30 slots now; launching 1 slot: 1 × small; skipped big: \
             over budget (9.50/h + 0.75/h for one more exceeds 10.00/h); held back by the \
             launch-rate limit (9 launched in the last minute); 19 slots unmet"
        );
    }

    #[test]
    fn long_termination_lists_are_cut() {
        let actions = (0..13)
            .map(|i| terminate(&format!("w-{i}"), TerminateReason::OverMax))
            .collect();
        let summary = Plan {
            actions,
            report: quiet_report(),
        }
        .summary();
        assert!(
            summary.ends_with("terminating 13: over_max w-0, w-1, w-2, w-3, w-4, w-5, w-6, w-7, w-8, w-9 (+3 more)"),
            "{summary}"
        );
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
                boot_hedge_slots: 0,
                min_slots: 0,
                schedule_slots: 0,
                max_slots: 10,
                budget_slots: None,
                target_slots: 3,
                target_set_by: TargetTerm::Forecast,
                keep_slots: 3,
                held_slots: 0,
                idle_timeout_s: Some(600.0),
                idle_timeout_chosen: false,
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
