//! `/v1/pools/{pool_id}/workers` and `/v1/workers/{worker_id}`: the machines of a pool
//! as the store knows them, and draining one.
//!
//! A drain moves a `ready` worker to `draining` through the core state machine (a
//! compare-and-swap in the store, so it never overwrites a concurrent change); it
//! finishes its tasks and takes no new ones. Draining a draining worker changes
//! nothing; a worker in another state cannot be drained (409).

// utoipa's `params(QueryStruct)` expansion names the struct by its full path.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::{Path, State};
use capstan_core::{Worker, WorkerId, WorkerState};
use serde::{Deserialize, Serialize};
use store::StoreError;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::pools::{PoolIdParam, PoolPath, existing};
use crate::request::{Query, continuation, page_limit, resume_after};

/// A page of workers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerPage {
    /// Ordered by id.
    pub items: Vec<Worker>,
    /// Pass as `continuation` for the next page; null on the last page.
    pub continuation: Option<String>,
}

/// Query of the pool's workers route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkersQuery {
    /// Only workers in these states, comma-separated (`ready,booting`). Default: every
    /// state but `terminated`.
    state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    continuation: Option<String>,
}

fn parse_states(text: Option<&str>) -> Result<Vec<WorkerState>, ApiError> {
    match text {
        None => Ok(WorkerState::ALL
            .into_iter()
            .filter(|s| *s != WorkerState::Terminated)
            .collect()),
        Some(text) => text
            .split(',')
            .map(|s| {
                s.trim().parse().map_err(|_| {
                    let names: Vec<&str> = WorkerState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::bad_request(format!(
                        "state: expected a comma-separated list of {}, got {s:?}",
                        names.join(", ")
                    ))
                })
            })
            .collect(),
    }
}

/// A pool's workers
///
/// Needs `workers:read:<pool_id>`.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}/workers", tag = "workers",
    params(PoolIdParam, WorkersQuery),
    responses(
        (status = 200, description = "A page of workers", body = WorkerPage),
        (status = 400, description = "Bad pool id or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing workers:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_workers(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    Query(q): Query<WorkersQuery>,
) -> Result<Json<WorkerPage>, ApiError> {
    caller.require(Action::WorkersRead, id.as_str())?;
    let states = parse_states(q.state.as_deref())?;
    let limit = page_limit(q.limit)?;
    let after = q
        .continuation
        .as_deref()
        .map(resume_after)
        .transpose()?
        .flatten();
    existing(&state.store, &id).await?;
    let items = state
        .store
        .list_workers_page(&id, &states, after.as_deref(), limit)
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|w| continuation(w.id.as_str())))
        .flatten();
    Ok(Json(WorkerPage {
        items,
        continuation: next,
    }))
}

async fn worker_for(
    state: &AppState,
    caller: &Caller,
    action: Action,
    id: &str,
) -> Result<Worker, ApiError> {
    // No id holds NUL, and PostgreSQL cannot even look one up.
    let found = if id.contains('\0') {
        None
    } else {
        state.store.get_worker(&WorkerId::from_string(id)).await?
    };
    let worker = found.ok_or_else(|| ApiError::not_found(format!("no worker {id}")))?;
    caller.require(action, worker.pool_id.as_str())?;
    Ok(worker)
}

/// Read a worker
///
/// Needs `workers:read:<its pool>`.
#[utoipa::path(
    get, path = "/v1/workers/{worker_id}", tag = "workers",
    params(("worker_id" = String, Path, description = "The worker's id")),
    responses(
        (status = 200, description = "The worker", body = Worker),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing workers:read:<its pool>", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_worker(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Worker>, ApiError> {
    Ok(Json(
        worker_for(&state, &caller, Action::WorkersRead, &id).await?,
    ))
}

/// Drain a worker
///
/// A ready worker stops taking tasks and finishes the ones it runs; the reconcile loop
/// terminates it once it is idle. Needs `workers:drain:<its pool>`.
#[utoipa::path(
    post, path = "/v1/workers/{worker_id}/drain", tag = "workers",
    params(("worker_id" = String, Path, description = "The worker's id")),
    responses(
        (status = 200, description = "The worker, now draining", body = Worker),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing workers:drain:<its pool>", body = ErrorBody),
        (status = 404, description = "No such worker", body = ErrorBody),
        (status = 409, description = "The worker is not ready (booting, terminating, ...)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn drain_worker(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Worker>, ApiError> {
    worker_for(&state, &caller, Action::WorkersDrain, &id).await?;
    let now = state.now();
    let worker = state
        .store
        .modify_worker(&WorkerId::from_string(&id), |w| match w.state {
            WorkerState::Draining => Ok(()),
            WorkerState::Ready => Ok(w.transition(WorkerState::Draining, now)?),
            other => Err(StoreError::Transition(capstan_core::TransitionError {
                worker: w.id.clone(),
                from: other,
                to: WorkerState::Draining,
            })),
        })
        .await
        .map_err(|e| match e {
            StoreError::Transition(t) => ApiError::conflict(format!(
                "worker {id} is {}; only a ready worker can be drained",
                t.from
            )),
            other => other.into(),
        })?;
    Ok(Json(worker))
}
