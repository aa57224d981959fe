//! `/v1/pools/{pool_id}/plan` and `/v1/pools/{pool_id}/forecast`: what the reconcile
//! loop decided for a pool, and the forecast behind it.
//!
//! The replica holding a pool's reconcile lease records its latest plan and forecast
//! every tick (and every plan that acted in a log); these routes read them from the
//! store, so any replica answers. Before the loop first planned a pool both answer 404
//! saying so.
//!
//! - `plan`: the latest plan (actions and the report explaining them), the same plan
//!   in plain words ([`capstan_core::Plan::summary`]), and the plans that acted in the
//!   last hour (at most 50, newest first).
//! - `forecast`: the latest forecast, with its points further ahead (mean and upper
//!   quantiles: the band), and the pool's queue samples of the last `history_s`
//!   seconds (default 6 h, at most 35 days), to draw both on one time axis.
//!
//! The core types are served as they are; [`doc`] describes their JSON for the
//! OpenAPI document (core does not depend on utoipa for them), and a test keeps the
//! two in step.

// utoipa's `params(QueryStruct)` expansion names the struct by its full path.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::State;
use capstan_core::{Action as PlanAction, Forecast, Plan, PoolId, QueueSample, Timestamp};
use serde::{Deserialize, Serialize};
use store::{PoolStatus, Store};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::pools::{PoolIdParam, PoolPath, existing};
use crate::queue::{MAX_AGE_S, MAX_FUTURE_S};
use crate::request::Query;

/// How far back `recent_actions` reaches, in seconds.
const RECENT_S: i64 = 3600;
/// Most entries of `recent_actions`.
const RECENT_MAX: usize = 50;
/// Page size when reading the plan log forward to find its newest entries.
const LOG_PAGE: u32 = 200;
/// Default `history_s` of the forecast route: 6 hours.
const DEFAULT_HISTORY_S: u32 = 21_600;

/// A pool's latest plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    /// The pool.
    pub pool_id: PoolId,
    /// When the plan was made.
    pub at: Timestamp,
    /// The replica that made it.
    pub owner: String,
    /// The actions and the report explaining them.
    #[schema(value_type = doc::Plan)]
    pub plan: Plan,
    /// The plan in plain words.
    pub summary: String,
    /// Plans that acted (launched or terminated) in the last hour, newest first, at
    /// most 50.
    pub recent_actions: Vec<RecentPlan>,
}

/// A plan that acted.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecentPlan {
    /// When it was made.
    pub at: Timestamp,
    /// The replica that made it.
    pub owner: String,
    /// What it did.
    #[schema(value_type = Vec<doc::PlanAction>)]
    pub actions: Vec<PlanAction>,
    /// The plan in plain words.
    pub summary: String,
}

/// A pool's latest forecast and its recent demand.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastView {
    /// The pool.
    pub pool_id: PoolId,
    /// When the forecast was made.
    pub made_at: Timestamp,
    /// The forecast: the target it sets and its points further ahead (mean and upper
    /// quantiles).
    #[schema(value_type = doc::Forecast)]
    pub forecast: Forecast,
    /// The pool's queue samples of the last `history_s` seconds, oldest first.
    #[schema(value_type = Vec<doc::QueueSample>)]
    pub history: Vec<QueueSample>,
}

/// Query of the forecast route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForecastQuery {
    /// Seconds of queue history to include, 1 to 3024000 (35 days); default 21600 (6 h).
    #[param(minimum = 1, maximum = 3_024_000)]
    history_s: Option<u32>,
}

/// The pool's status, or 404 (no pool; or not planned yet).
async fn status_of(store: &Store, id: &PoolId) -> Result<PoolStatus, ApiError> {
    existing(store, id).await?;
    store.pool_status(id).await?.ok_or_else(|| {
        ApiError::not_found(format!(
            "pool {id} has not been planned yet: the reconcile loop records a plan and a \
             forecast at its first tick for the pool"
        ))
    })
}

/// The plans that acted since `since`, newest first, at most [`RECENT_MAX`].
async fn recent_plans(
    store: &Store,
    id: &PoolId,
    since: Timestamp,
) -> Result<Vec<RecentPlan>, ApiError> {
    // The log reads oldest first; page forward and keep the newest.
    let mut kept = std::collections::VecDeque::with_capacity(RECENT_MAX);
    let mut from = since;
    loop {
        let page = store.plan_log(id, from, LOG_PAGE).await?;
        let full = page.len() == LOG_PAGE as usize;
        if let Some(last) = page.last() {
            from = Timestamp::from_unix_ms(last.at.unix_ms() + 1);
        }
        for entry in page {
            if kept.len() == RECENT_MAX {
                kept.pop_front();
            }
            kept.push_back(entry);
        }
        if !full {
            break;
        }
    }
    Ok(kept
        .into_iter()
        .rev()
        .map(|e| RecentPlan {
            at: e.at,
            owner: e.owner,
            summary: e.plan.summary(),
            actions: e.plan.actions,
        })
        .collect())
}

/// A pool's latest plan
///
/// What the reconcile loop decided at its latest tick for the pool: the actions, the
/// report explaining the target (which term set it and the numbers behind it, skipped
/// offerings, rate limiting, unmet slots), the same in plain words, and the plans that
/// acted in the last hour. Needs `pools:read:<pool_id>`.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}/plan", tag = "plans",
    params(PoolIdParam),
    responses(
        (status = 200, description = "The latest plan", body = PlanView),
        (status = 400, description = "Bad pool id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool, or not planned yet", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_plan(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
) -> Result<Json<PlanView>, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    let status = status_of(&state.store, &id).await?;
    let recent_actions = recent_plans(&state.store, &id, state.now().plus_secs(-RECENT_S)).await?;
    Ok(Json(PlanView {
        pool_id: id,
        at: status.at,
        owner: status.owner,
        summary: status.plan.summary(),
        plan: status.plan,
        recent_actions,
    }))
}

/// A pool's latest forecast
///
/// The forecast behind the latest plan: the slots needed at `made_at + lead_s`, the
/// backlog target, and points further ahead with their mean and upper quantiles; plus
/// the pool's queue samples of the last `history_s` seconds. Needs
/// `pools:read:<pool_id>`.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}/forecast", tag = "plans",
    params(PoolIdParam, ForecastQuery),
    responses(
        (status = 200, description = "The latest forecast and recent demand", body = ForecastView),
        (status = 400, description = "Bad pool id or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool, or no forecast yet", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_forecast(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    Query(q): Query<ForecastQuery>,
) -> Result<Json<ForecastView>, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    let history_s = match q.history_s {
        None => DEFAULT_HISTORY_S,
        Some(s) if (1..=MAX_AGE_S).contains(&i64::from(s)) => s,
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "history_s: must be between 1 and {MAX_AGE_S} seconds (35 days), got {s}"
            )));
        }
    };
    let status = status_of(&state.store, &id).await?;
    let now = state.now();
    // Pushed samples may be up to a minute ahead of this clock.
    let history = state
        .store
        .queue_samples(
            &id,
            now.plus_secs(-i64::from(history_s)),
            now.plus_secs(MAX_FUTURE_S + 1),
        )
        .await?;
    Ok(Json(ForecastView {
        pool_id: id,
        made_at: status.forecast.made_at,
        forecast: status.forecast,
        history,
    }))
}

/// The JSON of the core plan and forecast types, for the OpenAPI document only.
pub mod doc {
    use capstan_core::{ScalingPolicy, Timestamp};
    use serde::{Deserialize, Serialize};
    use utoipa::ToSchema;

    /// What the planner decided at one tick.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Plan {
        /// Actions for the actuator, launches first then terminations.
        pub actions: Vec<PlanAction>,
        /// Why.
        pub report: PlanReport,
    }

    /// One thing for the actuator to do.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
    pub enum PlanAction {
        /// Launch `count` instances of a launch config.
        Launch {
            /// The launch config (offering).
            launch_config_id: String,
            /// The zone, when the offering names one.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            zone: Option<String>,
            /// Instances to launch.
            count: u32,
            /// Idempotency token of this action.
            idempotency_token: String,
        },
        /// Terminate one worker.
        Terminate {
            /// The worker's id.
            worker: String,
            /// Why.
            reason: TerminateReason,
        },
    }

    /// Why the planner terminates a worker.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum TerminateReason {
        IdleTimeout,
        MaxLifetime,
        RegistrationTimeout,
        OverMax,
        Failed,
        HeartbeatLost,
        PoolDeleted,
    }

    /// The term that decided the target.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(rename_all = "snake_case")]
    pub enum TargetTerm {
        Min,
        Schedule,
        Forecast,
        Backlog,
        Max,
        Budget,
    }

    /// Why an offering was not used.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    pub enum SkipReason {
        /// Marked unavailable (capacity, quota) until `until`.
        Unavailable {
            /// When it may be tried again.
            until: Timestamp,
            /// What the provider said.
            reason: String,
        },
        /// The offering holds its own `max_slots` already.
        OverOwnMax {
            /// Its cap.
            max_slots: u32,
            /// Slots it holds now.
            current_slots: u32,
        },
        /// One more instance would take the pool over its budget.
        OverBudget {
            /// Cost per hour counting this plan's launches.
            current_cost_per_hour: f64,
            /// Price of one more instance.
            instance_price_per_hour: f64,
            /// The budget's ceiling.
            max_cost_per_hour: f64,
        },
    }

    /// An offering passed over, and why.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct SkippedOffering {
        /// Its launch config.
        pub launch_config_id: String,
        /// Why.
        pub reason: SkipReason,
    }

    /// The explanation that travels with every plan (slots throughout).
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct PlanReport {
        /// When the plan was made.
        pub at: Timestamp,
        /// The predictor behind the forecast.
        pub policy: ScalingPolicy,
        /// The forecast's target for now + lead.
        pub forecast_slots: u32,
        /// The reactive backlog target.
        pub backlog_slots: u32,
        /// The pool's floor.
        pub min_slots: u32,
        /// The highest floor of the schedule windows open now (0 if none).
        pub schedule_slots: u32,
        /// The pool's ceiling.
        pub max_slots: u32,
        /// The ceiling the budget allowed, when it limited launches.
        pub budget_slots: Option<u32>,
        /// What the plan aims for.
        pub target_slots: u32,
        /// The term that decided `target_slots`.
        pub target_set_by: TargetTerm,
        /// Idle timeouts never take the pool below this.
        pub keep_slots: u32,
        /// Capacity before the plan, excluding workers it terminates.
        pub current_slots: u32,
        /// Slots this plan launches.
        pub launch_slots: u32,
        /// Instances launched in the minute before `at`.
        pub launched_last_minute: u32,
        /// Whether the launch-rate limit held launches back.
        pub rate_limited: bool,
        /// Slots wanted but not launched.
        pub unmet_slots: u32,
        /// Offerings passed over, and why.
        pub skipped_offerings: Vec<SkippedOffering>,
    }

    /// Capacity a pool needs, as forecast at one instant.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Forecast {
        /// When it was made.
        pub made_at: Timestamp,
        /// Which predictor made it.
        pub policy: ScalingPolicy,
        /// Launch-to-ready time it looks ahead by, in seconds.
        pub lead_s: f64,
        /// Slots needed at `made_at + lead_s`.
        pub target_slots: u32,
        /// The reactive estimator's answer to the backlog at `made_at`.
        pub backlog_slots: u32,
        /// Expected busy slots at `made_at + lead_s`.
        pub expected_busy_slots: f64,
        /// Forecast further ahead, in increasing time order (left out when empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub points: Vec<ForecastPoint>,
    }

    /// Forecast busy slots at one future instant.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ForecastPoint {
        /// The instant.
        pub at: Timestamp,
        /// Expected busy slots.
        pub mean: f64,
        /// Upper quantiles, in increasing `p` order: the band.
        pub quantiles: Vec<Quantile>,
    }

    /// One quantile of a forecast distribution.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct Quantile {
        /// Probability level in (0, 1).
        pub p: f64,
        /// Smallest slot count covering demand with probability `p`.
        pub slots: f64,
    }

    /// The queue over one sampling interval ending at `at`.
    #[derive(Debug, Serialize, Deserialize, ToSchema)]
    #[serde(deny_unknown_fields)]
    pub struct QueueSample {
        /// End of the interval.
        pub at: Timestamp,
        /// Tasks waiting at `at`.
        pub pending: u32,
        /// Tasks running at `at`.
        pub running: u32,
        /// Tasks that arrived during the interval.
        pub arrivals: u32,
        /// Tasks that finished during the interval.
        pub completions: u32,
    }
}

#[cfg(test)]
mod tests {
    use capstan_core::{
        ForecastPoint, PlanReport, Quantile, ScalingPolicy, SkipReason, SkippedOffering,
        TargetTerm, TerminateReason, WorkerId,
    };
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;

    /// `value` read as the documented type and written back is `value` again.
    fn documented<D: DeserializeOwned + Serialize>(value: &impl Serialize) {
        let json = serde_json::to_value(value).unwrap();
        let doc: D = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("the document's schema does not describe {json}: {e}"));
        assert_eq!(serde_json::to_value(doc).unwrap(), json);
    }

    /// Every terminate reason. The match fails to compile when core grows one: add it
    /// here and to [`doc::TerminateReason`].
    fn every_reason() -> Vec<TerminateReason> {
        use TerminateReason::*;
        let all = vec![
            IdleTimeout,
            MaxLifetime,
            RegistrationTimeout,
            OverMax,
            Failed,
            HeartbeatLost,
            PoolDeleted,
        ];
        for r in &all {
            match r {
                IdleTimeout | MaxLifetime | RegistrationTimeout | OverMax | Failed
                | HeartbeatLost | PoolDeleted => {}
            }
        }
        all
    }

    /// Every target term; like [`every_reason`] for [`doc::TargetTerm`].
    fn every_term() -> Vec<TargetTerm> {
        use TargetTerm::*;
        let all = vec![Min, Schedule, Forecast, Backlog, Max, Budget];
        for t in &all {
            match t {
                Min | Schedule | Forecast | Backlog | Max | Budget => {}
            }
        }
        all
    }

    /// Skip reasons and actions: the test below builds one of each; these matches fail
    /// to compile when core grows a variant the document would lack.
    #[allow(dead_code)]
    fn every_variant_is_built_below(s: &SkipReason, a: &PlanAction) {
        match s {
            SkipReason::Unavailable { .. }
            | SkipReason::OverOwnMax { .. }
            | SkipReason::OverBudget { .. } => {}
        }
        match a {
            PlanAction::Launch { .. } | PlanAction::Terminate { .. } => {}
        }
    }

    #[test]
    fn the_document_describes_the_json_of_plans_forecasts_and_samples() {
        let t = Timestamp::from_unix_secs(1_800_000_000);
        let mut actions = vec![
            PlanAction::Launch {
                launch_config_id: "a".into(),
                zone: Some("z".into()),
                count: 2,
                idempotency_token: "p-1-0".into(),
            },
            PlanAction::Launch {
                launch_config_id: "b".into(),
                zone: None,
                count: 1,
                idempotency_token: "p-1-1".into(),
            },
        ];
        for reason in every_reason() {
            actions.push(PlanAction::Terminate {
                worker: WorkerId::from_string("w"),
                reason,
            });
        }
        let report = |target_set_by| PlanReport {
            at: t,
            policy: ScalingPolicy::Forecast,
            forecast_slots: 3,
            backlog_slots: 1,
            min_slots: 0,
            schedule_slots: 0,
            max_slots: 10,
            budget_slots: Some(4),
            target_slots: 3,
            target_set_by,
            keep_slots: 3,
            current_slots: 1,
            launch_slots: 2,
            launched_last_minute: 0,
            rate_limited: true,
            unmet_slots: 1,
            skipped_offerings: vec![
                SkippedOffering {
                    launch_config_id: "u".into(),
                    reason: SkipReason::Unavailable {
                        until: t,
                        reason: "capacity".into(),
                    },
                },
                SkippedOffering {
                    launch_config_id: "o".into(),
                    reason: SkipReason::OverOwnMax {
                        max_slots: 1,
                        current_slots: 1,
                    },
                },
                SkippedOffering {
                    launch_config_id: "c".into(),
                    reason: SkipReason::OverBudget {
                        current_cost_per_hour: 1.5,
                        instance_price_per_hour: 0.25,
                        max_cost_per_hour: 1.6,
                    },
                },
            ],
        };
        for term in every_term() {
            documented::<doc::Plan>(&Plan {
                actions: actions.clone(),
                report: report(term),
            });
        }
        let mut forecast = Forecast {
            made_at: t,
            policy: ScalingPolicy::Reactive,
            lead_s: 90.5,
            target_slots: 4,
            backlog_slots: 2,
            expected_busy_slots: 3.25,
            points: vec![],
        };
        documented::<doc::Forecast>(&forecast);
        forecast.points.push(ForecastPoint {
            at: t,
            mean: 2.5,
            quantiles: vec![Quantile { p: 0.9, slots: 4.0 }],
        });
        documented::<doc::Forecast>(&forecast);
        documented::<doc::QueueSample>(&QueueSample {
            at: t,
            pending: 1,
            running: 2,
            arrivals: 3,
            completions: 4,
        });
    }
}
