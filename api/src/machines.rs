//! `/v1/pools/{pool_id}/machines` and `/v1/machines/{name}`: the hardware of static
//! pools.
//!
//! An operator registers each machine of a static pool once; capstan mints a secret
//! for it, answers it **once** and keeps only its SHA-256 (the machine later presents
//! it and it is compared in constant time). Registering and removing machines is
//! editing the pool: it needs `pools:write:<pool>`; listing needs `pools:read:<pool>`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use capstan_core::{PoolId, ProviderKind, Timestamp};
use providers::clock::Clock as ProviderClock;
use providers::static_pool::{
    Assignment, InventoryError, StaticError, StaticMachine, StaticProvider,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::pools::{PoolIdParam, PoolPath, existing};
use crate::request::{JsonBody, decode};
use crate::store_inventory::StoreInventory;

/// What a static machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MachineAssignment {
    /// Free to be leased.
    Idle,
    /// Leased by a worker.
    Wanted,
    /// Asked to finish its tasks and then be free again.
    Draining,
}

/// A static machine as the API shows it (never its secret or its hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MachineView {
    /// Unique over all static pools.
    pub name: String,
    /// Its pool.
    pub pool_id: PoolId,
    /// Task slots it offers.
    pub capacity: u32,
    /// Labels launch configs select on.
    pub labels: BTreeMap<String, String>,
    /// Idle, wanted or draining.
    pub assignment: MachineAssignment,
    /// The worker it serves, when leased.
    pub worker_id: Option<String>,
    /// When it was registered.
    pub registered_at: Timestamp,
}

impl From<StaticMachine> for MachineView {
    fn from(m: StaticMachine) -> Self {
        let (assignment, worker_id) = match m.assignment {
            Assignment::Idle => (MachineAssignment::Idle, None),
            Assignment::Wanted { worker_id, .. } => {
                (MachineAssignment::Wanted, Some(worker_id.to_string()))
            }
            Assignment::Draining { worker_id, .. } => {
                (MachineAssignment::Draining, Some(worker_id.to_string()))
            }
        };
        Self {
            name: m.name,
            pool_id: m.pool_id,
            capacity: m.capacity,
            labels: m.labels,
            assignment,
            worker_id,
            registered_at: m.registered_at,
        }
    }
}

/// Body of a registration.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterMachine {
    /// Unique over all static pools: 1-63 of a-z 0-9 - _ .
    #[schema(pattern = "^[a-z0-9._-]{1,63}$")]
    pub name: String,
    /// Task slots it offers (>= 1).
    #[schema(minimum = 1)]
    pub capacity: u32,
    /// Labels launch configs may select on.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A registered machine and its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisteredMachine {
    /// The machine.
    pub machine: MachineView,
    /// Its secret, shown this once; hand it to the machine.
    pub secret: String,
}

/// Machines of a pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct MachineList {
    /// Ordered by name.
    pub items: Vec<MachineView>,
}

#[derive(Debug)]
struct StateClock(crate::Clock);

impl ProviderClock for StateClock {
    fn now(&self) -> Timestamp {
        (self.0.0)()
    }
}

pub(crate) fn provider(state: &AppState) -> StaticProvider {
    StaticProvider::new(
        Arc::new(StoreInventory(state.store.clone())),
        Arc::new(StateClock(state.clock.clone())),
    )
}

pub(crate) fn static_error(e: StaticError) -> ApiError {
    match e {
        StaticError::InvalidField { field, problem } => ApiError::invalid_field(field, problem),
        StaticError::UnknownMachine(name) => ApiError::not_found(format!("no machine {name:?}")),
        StaticError::Inventory(InventoryError::AlreadyExists(name)) => ApiError::conflict(format!(
            "a machine named {name:?} is already registered (names are unique over all static pools)"
        )),
        other => ApiError::internal(&other),
    }
}

/// Register a static machine
///
/// Adds a machine to a static pool and answers its secret, once. Needs
/// `pools:write:<pool_id>`.
#[utoipa::path(
    post, path = "/v1/pools/{pool_id}/machines", tag = "machines",
    params(PoolIdParam),
    request_body(content = RegisterMachine, content_type = "application/json"),
    responses(
        (status = 201, description = "Registered; the secret is in the body, shown once", body = RegisteredMachine),
        (status = 400, description = "Malformed JSON or bad pool id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:write:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "Not a static pool, or the name is taken", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn register_machine(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Action::PoolsWrite, id.as_str())?;
    let JsonBody(body) = JsonBody::read(req).await?;
    let body: RegisterMachine = decode(body)?;
    let pool = existing(&state.store, &id).await?;
    if pool.spec.provider != ProviderKind::Static {
        return Err(ApiError::conflict(format!(
            "pool {id} has provider {}; machines can only be registered in a static pool",
            pool.spec.provider
        )));
    }
    let (machine, secret) = provider(&state)
        .register_machine(id, &body.name, body.capacity, body.labels)
        .await
        .map_err(static_error)?;
    tracing::info!(machine = %machine.name, pool = %machine.pool_id, actor = %caller.actor(), "static machine registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisteredMachine {
            machine: machine.into(),
            secret: secret.expose().to_owned(),
        }),
    )
        .into_response())
}

/// A static pool's machines
///
/// Needs `pools:read:<pool_id>`.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}/machines", tag = "machines",
    params(PoolIdParam),
    responses(
        (status = 200, description = "The pool's machines", body = MachineList),
        (status = 400, description = "Bad pool id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_machines(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
) -> Result<Json<MachineList>, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    existing(&state.store, &id).await?;
    let machines = provider(&state)
        .machines(Some(&id))
        .await
        .map_err(static_error)?;
    Ok(Json(MachineList {
        items: machines.into_iter().map(MachineView::from).collect(),
    }))
}

/// Remove a static machine
///
/// Needs `pools:write:<its pool>`.
#[utoipa::path(
    delete, path = "/v1/machines/{name}", tag = "machines",
    params(("name" = String, Path, description = "The machine's name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:write:<its pool>", body = ErrorBody),
        (status = 404, description = "No such machine", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn remove_machine(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let provider = provider(&state);
    // No name holds NUL, and PostgreSQL cannot even look one up.
    let found = if name.contains('\0') {
        None
    } else {
        state.store.static_machine(&name).await?
    };
    let machine = found.ok_or_else(|| ApiError::not_found(format!("no machine {name:?}")))?;
    caller.require(Action::PoolsWrite, &machine.pool_id)?;
    provider.remove_machine(&name).await.map_err(static_error)?;
    tracing::info!(machine = %name, actor = %caller.actor(), "static machine removed");
    Ok(StatusCode::NO_CONTENT)
}
