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
//!   quantiles: the band), and the pool's queue history of the last `history_s`
//!   seconds (default 6 h, at most the longest rollup retention) in at most
//!   `max_points` buckets (default 720), to draw both on one time axis. The history
//!   comes from raw samples where they are kept and hourly rollups before
//!   ([`store::history`]).
//!
//! The core types are served as they are, and described in the OpenAPI document by
//! their own schemas (core's `openapi` feature).

// utoipa's `params(QueryStruct)` expansion names the struct by its full path.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::State;
use capstan_core::{Action as PlanAction, Forecast, Plan, PoolId, Timestamp};
use serde::{Deserialize, Serialize};
use store::{PoolStatus, Store};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::pools::{PoolIdParam, PoolPath, existing};
use crate::queue::MAX_FUTURE_S;
use crate::request::Query;

/// How far back `recent_actions` reaches, in seconds.
const RECENT_S: i64 = 3600;
/// Most entries of `recent_actions`.
const RECENT_MAX: usize = 50;
/// Page size when reading the plan log forward to find its newest entries.
const LOG_PAGE: u32 = 200;
/// Default `history_s` of the forecast route: 6 hours.
const DEFAULT_HISTORY_S: u32 = 21_600;
/// Longest `history_s`: the longest rollup retention the service accepts (ten years).
const MAX_HISTORY_S: u32 = store::history::MAX_ROLLUP_HISTORY_DAYS * 86_400;
/// Default `max_points`: 6 hours at one point a minute, a chart's width.
const DEFAULT_MAX_POINTS: u32 = 720;
/// Most `max_points`: bounds the answer to a few hundred kilobytes.
const MAX_POINTS: u32 = 10_000;

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
    pub forecast: Forecast,
    /// The pool's queue history of the last `history_s` seconds in at most
    /// `max_points` buckets, oldest first; empty buckets are left out.
    pub history: Vec<HistoryPoint>,
}

/// One bucket of queue history: the samples taken in `[at, at + width_s)`.
///
/// `pending` and `running` are the bucket's maxima, so a bucket holding one sample
/// reads as that sample; the means are beside them.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPoint {
    /// Start of the bucket, a multiple of `width_s` since the epoch (so the first may
    /// start before the period asked for).
    pub at: Timestamp,
    /// Width of the bucket in seconds: round (1 s to 1 h, whole hours, whole weeks),
    /// the narrowest that fits the period in `max_points`; an hour at least where the
    /// history is older than the raw retention.
    #[schema(minimum = 1)]
    pub width_s: u32,
    /// Samples in the bucket.
    #[schema(minimum = 1)]
    pub samples: u64,
    /// Most tasks waiting at one sample.
    #[schema(minimum = 0)]
    pub pending: u32,
    /// Mean of the samples' waiting tasks.
    #[schema(minimum = 0)]
    pub pending_mean: f64,
    /// Most tasks running at one sample.
    #[schema(minimum = 0)]
    pub running: u32,
    /// Mean of the samples' running tasks.
    #[schema(minimum = 0)]
    pub running_mean: f64,
    /// Tasks that entered the queue over the bucket.
    #[schema(minimum = 0)]
    pub arrivals: u64,
    /// Tasks that finished over the bucket.
    #[schema(minimum = 0)]
    pub completions: u64,
}

impl From<store::history::HistoryPoint> for HistoryPoint {
    fn from(p: store::history::HistoryPoint) -> Self {
        Self {
            at: p.at,
            width_s: p.width_s,
            samples: p.samples,
            pending: p.pending_max,
            pending_mean: p.pending_mean,
            running: p.running_max,
            running_mean: p.running_mean,
            arrivals: p.arrivals,
            completions: p.completions,
        }
    }
}

/// Query of the forecast route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ForecastQuery {
    /// Seconds of queue history to include, 1 to 316224000 (ten years, the longest
    /// rollup retention); default 21600 (6 h). What is kept reaches back
    /// `rollup_history_days`.
    #[param(minimum = 1, maximum = 316_224_000)]
    history_s: Option<u32>,
    /// Most buckets of history, 1 to 10000; default 720.
    #[param(minimum = 1, maximum = 10_000)]
    max_points: Option<u32>,
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
pub(crate) async fn recent_plans(
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
/// the pool's queue history of the last `history_s` seconds (up to ten years; what is
/// kept reaches back `rollup_history_days`, default 400).
///
/// The history comes downsampled to at most `max_points` buckets (default 720) of a
/// round width, the narrowest that fits: 6 hours come as one-minute buckets, a year
/// as days. Each bucket gives its maxima (`pending`, `running`), means and totals.
/// Samples are kept raw for `raw_history_days` (default 35) and as hourly rollups
/// before, so older history is never finer than an hour. Needs
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
        Some(s) if (1..=MAX_HISTORY_S).contains(&s) => s,
        Some(s) => {
            return Err(ApiError::bad_request(format!(
                "history_s: must be between 1 and {MAX_HISTORY_S} seconds (ten years), got {s}"
            )));
        }
    };
    let max_points = match q.max_points {
        None => DEFAULT_MAX_POINTS,
        Some(n) if (1..=MAX_POINTS).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "max_points: must be between 1 and {MAX_POINTS}, got {n}"
            )));
        }
    };
    let status = status_of(&state.store, &id).await?;
    let now = state.now();
    // Pushed samples may be up to a minute ahead of this clock.
    let history = state
        .store
        .queue_history(
            &id,
            now.plus_secs(-i64::from(history_s)),
            now.plus_secs(MAX_FUTURE_S + 1),
            max_points,
        )
        .await?
        .into_iter()
        .map(HistoryPoint::from)
        .collect();
    Ok(Json(ForecastView {
        pool_id: id,
        made_at: status.forecast.made_at,
        forecast: status.forecast,
        history,
    }))
}
