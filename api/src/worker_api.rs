//! The routes a worker's own agent calls (`capstan agent`): registration, heartbeats
//! and interruption notices.
//!
//! **Registration.** A cloud machine boots with a one-time registration token in its
//! user-data; the store keeps only its SHA-256, written with the launch intent.
//! `POST /v1/workers/register` exchanges it, once and before the pool's
//! `registration_timeout_s` has passed since the launch, for a **worker credential**
//! `capw_<worker id>_<64 hex>`. A static machine registers with its per-machine
//! secret instead; it gets a credential when the loop has leased it to a worker
//! (otherwise 409 `not_leased` with `Retry-After`), and re-registering (an agent
//! restart) replaces the credential. Only the credential's SHA-256 is stored, and every
//! comparison is in constant time.
//!
//! **A credential is good for its own worker's routes only**: the heartbeat and the
//! interruption notice of that worker. Presented anywhere else it is 403; presented for
//! another worker, 403. Once the worker is terminated it only hears `terminate`, and an
//! hour later it is revoked (401).
//!
//! **Heartbeats** carry the busy slots and the tasks finished since the last
//! acknowledged heartbeat (their run times feed the predictor), and answer what the
//! worker should do: `continue`, `drain` (finish your tasks, take no new ones) or
//! `terminate` (the machine is being deleted, or a static machine released). Every
//! change is a compare-and-swap on the worker row's revision, so a heartbeat and the
//! reconcile loop never overwrite each other.
//!
//! **Interruption notices** (EC2 spot `instance-action`, GCE `preempted`) move the
//! worker to `draining` and wake the pool: it no longer counts as capacity, so the very
//! next round launches its replacement while the doomed machine finishes what it can.

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::http::request::Parts;
use capstan_core::secret::{digest_hex, matches_digest};
use capstan_core::{PoolSpec, Timestamp, Worker, WorkerId, WorkerState};
use providers::static_pool::{Assignment, StaticInventory};
use serde::{Deserialize, Serialize};
use store::{RegistrationUse, StoreError, TaskRun};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::request::{JsonBody, decode};
use crate::store_inventory::StoreInventory;

/// Prefix of worker credentials.
pub const CREDENTIAL_PREFIX: &str = "capw_";
/// Longest a static machine that no worker wants waits before registering again; a
/// pool whose workers heartbeat more often is asked back at its heartbeat interval
/// instead, so a leased machine joins about as fast as a heartbeat would notice.
const NOT_LEASED_RETRY_S: u64 = 15;
/// Longest a drained child is given to finish before the agent kills it.
const DRAIN_GRACE_S: u64 = 300;
/// How long after its worker is terminated a credential still hears `terminate` (a
/// machine the cloud has not stopped yet learns why); later it is revoked (401).
const REVOKED_AFTER_MS: i64 = 3_600_000;
/// Most finished tasks one heartbeat may carry.
const MAX_FINISHED_TASKS: usize = 1000;
/// Longest task run accepted, in seconds (30 days).
const MAX_TASK_DURATION_S: f64 = 30.0 * 86_400.0;

/// `POST /v1/workers/register`: a cloud machine's token or a static machine's secret.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Cloud machines: the worker id from the user-data.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// Cloud machines: the registration token from the user-data.
    #[serde(default)]
    pub registration_token: Option<String>,
    /// Static machines: the machine's name.
    #[serde(default)]
    pub machine: Option<String>,
    /// Static machines: the machine's secret.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A registered worker's identity and credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registration {
    /// The worker.
    pub worker_id: String,
    /// Its pool.
    pub pool_id: String,
    /// `capw_<worker id>_<secret>`: present it as `Authorization: Bearer` on this
    /// worker's routes. Shown once; only its SHA-256 is stored.
    pub credential: String,
    /// How often to send a heartbeat.
    pub heartbeat_interval_s: u64,
    /// How long a drained worker's tasks may run before the agent stops them.
    pub drain_grace_s: u64,
}

/// One finished task.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishedTask {
    /// When it finished (RFC 3339); a retried heartbeat resending it is harmless.
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Timestamp,
    /// How long it ran, in seconds (0 to 30 days).
    pub duration_s: f64,
}

/// `POST /v1/workers/{worker_id}/heartbeat`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Task slots running a task now (at most the worker's capacity).
    pub busy_slots: u32,
    /// Tasks finished since the last acknowledged heartbeat (at most 1000).
    #[serde(default)]
    pub finished_tasks: Vec<FinishedTask>,
}

/// What the worker should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerAction {
    /// Keep taking tasks.
    Continue,
    /// Finish the running tasks, take no new ones.
    Drain,
    /// Stop: the machine is being deleted (a static machine: released).
    Terminate,
}

/// The answer to a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// What to do now.
    pub action: WorkerAction,
    /// When to send the next heartbeat.
    pub heartbeat_interval_s: u64,
}

/// Where an interruption notice came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeSource {
    /// EC2 instance metadata `spot/instance-action`.
    Ec2,
    /// GCE metadata `instance/preempted`.
    Gce,
}

/// What the cloud will do to the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeAction {
    /// EC2 will terminate it.
    Terminate,
    /// EC2 will stop it.
    Stop,
    /// EC2 will hibernate it.
    Hibernate,
    /// GCE preempted it.
    Preempted,
}

/// `POST /v1/workers/{worker_id}/interruption`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Interruption {
    /// Which metadata service said so.
    pub source: NoticeSource,
    /// What will happen.
    pub action: NoticeAction,
    /// When, if the notice says (RFC 3339).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub at: Option<Timestamp>,
}

/// The answer to an interruption notice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InterruptionAnswer {
    /// Always `drain`: finish what can finish; the replacement is being launched.
    pub action: WorkerAction,
}

/// Splits `capw_<worker id>_<64 hex>`.
fn split_credential(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(CREDENTIAL_PREFIX)?.rsplit_once('_')?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && secret.len() == 64
        && secret.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then_some((id, secret))
}

/// Whether an `Authorization` value carries a worker credential (the operator API
/// answers those with 403).
pub fn is_worker_credential(token: &str) -> bool {
    token.starts_with(CREDENTIAL_PREFIX)
}

/// A fresh credential for worker `id` and the digest of its secret.
fn mint_credential(id: &WorkerId) -> Result<(String, String), ApiError> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| ApiError::internal(&e))?;
    let secret = hex::encode(secret);
    Ok((
        format!("{CREDENTIAL_PREFIX}{}_{secret}", id.as_str()),
        digest_hex(&secret),
    ))
}

/// The worker a request's credential belongs to (checked against the stored digest).
#[derive(Debug, Clone)]
pub struct WorkerCaller {
    /// The worker, as stored when the request arrived.
    pub worker: Worker,
}

impl FromRequestParts<AppState> for WorkerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let needs = "this route needs the worker's credential: Authorization: Bearer capw_<worker id>_<secret>, \
                     as answered by POST /v1/workers/register";
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(needs));
        };
        let token = match value.to_str().unwrap_or("").split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(ApiError::unauthorized(needs)),
        };
        if token.starts_with("cap_") {
            return Err(ApiError::forbidden(
                "worker credential".into(),
                "an operator API token cannot act as a worker; this route takes the worker's own credential",
            ));
        }
        let Some((id, secret)) = split_credential(token) else {
            return Err(ApiError::unauthorized(
                "malformed worker credential: expected capw_<worker id>_<64 hex>",
            ));
        };
        let id = WorkerId::from_string(id);
        let found = state.store.worker_with_secrets(&id).await?;
        let Some((worker, _)) = found.filter(|(_, s)| {
            s.credential_digest
                .as_deref()
                .is_some_and(|d| matches_digest(secret, d))
        }) else {
            return Err(ApiError::unauthorized(format!(
                "the credential for worker {id} is not valid"
            )));
        };
        if worker.state == WorkerState::Terminated
            && state.now().unix_ms() - worker.state_changed_at.unix_ms() > REVOKED_AFTER_MS
        {
            return Err(ApiError::unauthorized(format!(
                "worker {id} was terminated at {}; its credential is revoked",
                worker.state_changed_at
            )));
        }
        Ok(WorkerCaller { worker })
    }
}

impl WorkerCaller {
    /// 403 unless the credential is `path_id`'s.
    fn require_self(&self, path_id: &str) -> Result<(), ApiError> {
        if self.worker.id.as_str() == path_id {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                format!("credential of worker {path_id}"),
                format!(
                    "the credential of worker {} cannot act for worker {path_id}",
                    self.worker.id
                ),
            ))
        }
    }
}

/// How often a worker of `spec` heartbeats: a quarter of its heartbeat timeout, so
/// three lost heartbeats in a row are tolerated; between 1 s and 60 s.
fn heartbeat_interval_s(spec: Option<&PoolSpec>) -> u64 {
    spec.map_or(15, |s| (s.lifecycle.heartbeat_timeout_s / 4).clamp(1, 60))
}

/// The pool spec of `worker`, if its pool still exists.
async fn spec_of(state: &AppState, worker: &Worker) -> Result<Option<PoolSpec>, ApiError> {
    Ok(state.store.get_pool(&worker.pool_id).await?.map(|r| r.spec))
}

fn transition_conflict(id: &WorkerId, e: StoreError) -> ApiError {
    match e {
        StoreError::Transition(t) => ApiError::conflict(format!(
            "worker {id} is {}; only a requested or booting worker can register",
            t.from
        )),
        StoreError::RegistrationUsed(_) => ApiError::conflict(format!(
            "the registration token of worker {id} was already used; a token is single use"
        )),
        other => other.into(),
    }
}

/// Moves a freshly registered worker to `ready` (through `booting` if its launch was
/// not yet recorded as accepted), or leaves a ready one as it is (a static machine
/// re-registering after an agent restart).
fn to_ready(w: &mut Worker, now: Timestamp) -> Result<(), StoreError> {
    if w.state == WorkerState::Requested {
        w.transition(WorkerState::Booting, now)?;
    }
    if w.state != WorkerState::Ready && w.state != WorkerState::Draining {
        w.transition(WorkerState::Ready, now)?;
    }
    w.last_heartbeat_at = Some(now);
    Ok(())
}

/// Register a worker
///
/// Exchanges a cloud machine's one-time registration token (from its user-data) or a
/// static machine's secret for the worker's credential. No API token: the token or
/// secret is the authentication.
#[utoipa::path(
    post, path = "/v1/workers/register", tag = "worker agent",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered; the credential is shown once", body = Registration),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 401, description = "Unknown worker or machine, wrong token or secret, or the token expired", body = ErrorBody),
        (status = 409, description = "The token was already used, the worker is past registering, or (`not_leased`, with Retry-After) no worker wants this static machine now", body = ErrorBody),
        (status = 422, description = "Neither worker_id + registration_token nor machine + secret", body = ErrorBody),
    ),
)]
pub async fn register(
    State(state): State<AppState>,
    JsonBody(body): JsonBody,
) -> Result<Json<Registration>, ApiError> {
    let req: RegisterRequest = decode(body)?;
    match req {
        RegisterRequest {
            worker_id: Some(id),
            registration_token: Some(token),
            machine: None,
            secret: None,
        } => register_cloud(&state, &id, &token).await,
        RegisterRequest {
            worker_id: None,
            registration_token: None,
            machine: Some(name),
            secret: Some(secret),
        } => register_static(&state, &name, &secret).await,
        _ => Err(ApiError::invalid_field(
            "body",
            "expected either worker_id and registration_token (a cloud machine's user-data) \
             or machine and secret (a static machine), and nothing else",
        )),
    }
    .map(Json)
}

async fn register_cloud(state: &AppState, id: &str, token: &str) -> Result<Registration, ApiError> {
    let unknown = || ApiError::unauthorized(format!("no worker {id:?} awaits registration"));
    if id.contains('\0') || id.len() > 64 {
        return Err(unknown());
    }
    let id = WorkerId::from_string(id);
    let Some((worker, secrets)) = state.store.worker_with_secrets(&id).await? else {
        return Err(unknown());
    };
    let Some(digest) = secrets.registration_digest.as_deref() else {
        return Err(unknown());
    };
    if !matches_digest(token, digest) {
        return Err(ApiError::unauthorized(format!(
            "the registration token for worker {id} is not valid"
        )));
    }
    if let Some(at) = secrets.registration_used_at {
        return Err(ApiError::conflict(format!(
            "the registration token of worker {id} was already used at {at}; a token is single use"
        )));
    }
    let spec = spec_of(state, &worker).await?;
    let now = state.now();
    if let Some(spec) = &spec {
        let expires = worker
            .created_at
            .plus_secs(spec.lifecycle.registration_timeout_s as i64);
        if now >= expires {
            return Err(ApiError::unauthorized(format!(
                "the registration token of worker {id} expired at {expires} \
                 (the pool's registration_timeout_s is {})",
                spec.lifecycle.registration_timeout_s
            )));
        }
    } else {
        return Err(unknown());
    }
    let registration = complete(state, &id, RegistrationUse::Once, spec.as_ref(), now).await?;
    tracing::info!(pool = %registration.pool_id, worker = %id, "worker registered");
    Ok(registration)
}

/// Mints worker `id`'s credential, moves the worker to `ready` with the credential's
/// digest in one compare-and-swap ([`Store::complete_registration`]), and wakes its
/// pool: the part cloud and static registrations share.
///
/// [`Store::complete_registration`]: store::Store::complete_registration
async fn complete(
    state: &AppState,
    id: &WorkerId,
    usage: RegistrationUse,
    spec: Option<&PoolSpec>,
    now: Timestamp,
) -> Result<Registration, ApiError> {
    let (credential, credential_digest) = mint_credential(id)?;
    let worker = state
        .store
        .complete_registration(id, &credential_digest, usage, now, |w| to_ready(w, now))
        .await
        .map_err(|e| transition_conflict(id, e))?;
    state.wake.wake(&worker.pool_id);
    Ok(Registration {
        worker_id: id.to_string(),
        pool_id: worker.pool_id.to_string(),
        credential,
        heartbeat_interval_s: heartbeat_interval_s(spec),
        drain_grace_s: DRAIN_GRACE_S,
    })
}

async fn register_static(
    state: &AppState,
    name: &str,
    secret: &str,
) -> Result<Registration, ApiError> {
    let provider = crate::machines::provider(state);
    let bad = || {
        ApiError::unauthorized(format!(
            "machine {name:?} is unknown or its secret is wrong"
        ))
    };
    if name.contains('\0') || name.len() > 64 {
        return Err(bad());
    }
    if !provider
        .verify_secret(name, secret)
        .await
        .map_err(crate::machines::static_error)?
    {
        return Err(bad());
    }
    let inventory = StoreInventory(state.store.clone());
    let machine = inventory
        .get(name)
        .await
        .map_err(|e| crate::machines::static_error(e.into()))?
        .ok_or_else(bad)?;
    let pool_spec = state
        .store
        .get_pool(&machine.pool_id)
        .await?
        .map(|r| r.spec);
    let retry_after_s = NOT_LEASED_RETRY_S.min(heartbeat_interval_s(pool_spec.as_ref()));
    let not_leased = || {
        ApiError::not_leased(
            retry_after_s,
            format!(
                "no worker of pool {} wants machine {name:?} now; register again later",
                machine.pool_id
            ),
        )
    };
    let worker_id = match &machine.assignment {
        Assignment::Idle => return Err(not_leased()),
        Assignment::Draining { worker_id, .. } => {
            // The agent is back asking for work: whatever it ran has finished. Once the
            // loop has let go of the worker, the machine is free again.
            let gone = state.store.get_worker(worker_id).await?.is_none_or(|w| {
                matches!(
                    w.state,
                    WorkerState::Terminating | WorkerState::Terminated | WorkerState::Failed
                )
            });
            if gone {
                provider
                    .machine_drained(name)
                    .await
                    .map_err(crate::machines::static_error)?;
                tracing::info!(machine = name, worker = %worker_id, "static machine drained and free again");
            }
            return Err(not_leased());
        }
        Assignment::Wanted { worker_id, .. } => worker_id.clone(),
    };
    let Some(worker) = state.store.get_worker(&worker_id).await? else {
        return Err(not_leased());
    };
    let spec = spec_of(state, &worker).await?;
    let now = state.now();
    let registration = complete(
        state,
        &worker_id,
        RegistrationUse::Renew,
        spec.as_ref(),
        now,
    )
    .await?;
    tracing::info!(pool = %registration.pool_id, worker = %worker_id, machine = name, "static machine registered");
    Ok(registration)
}

/// What a worker in `state` is told.
fn action_for(state: WorkerState, pool_exists: bool) -> WorkerAction {
    match state {
        _ if !pool_exists => WorkerAction::Terminate,
        WorkerState::Requested | WorkerState::Booting | WorkerState::Ready => {
            WorkerAction::Continue
        }
        WorkerState::Draining => WorkerAction::Drain,
        WorkerState::Terminating | WorkerState::Terminated | WorkerState::Failed => {
            WorkerAction::Terminate
        }
    }
}

/// Worker heartbeat
///
/// Reports the busy slots and finished tasks; answers what to do. Takes the worker's
/// own credential.
#[utoipa::path(
    post, path = "/v1/workers/{worker_id}/heartbeat", tag = "worker agent",
    params(("worker_id" = String, Path, description = "The worker's id")),
    request_body = Heartbeat,
    responses(
        (status = 200, description = "What the worker should do", body = HeartbeatAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 401, description = "No valid worker credential (revoked once the worker is terminated)", body = ErrorBody),
        (status = 403, description = "The credential is another worker's, or an operator token", body = ErrorBody),
        (status = 422, description = "A field is out of range", body = ErrorBody),
    ),
    security(("worker" = []))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: WorkerCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    caller.require_self(&id)?;
    let hb: Heartbeat = decode(body)?;
    let worker = &caller.worker;
    if hb.busy_slots > worker.capacity {
        return Err(ApiError::invalid_field(
            "busy_slots",
            format!(
                "at most the worker's capacity ({}), got {}",
                worker.capacity, hb.busy_slots
            ),
        ));
    }
    if hb.finished_tasks.len() > MAX_FINISHED_TASKS {
        return Err(ApiError::invalid_field(
            "finished_tasks",
            format!(
                "at most {MAX_FINISHED_TASKS} per heartbeat, got {}",
                hb.finished_tasks.len()
            ),
        ));
    }
    let mut runs = Vec::with_capacity(hb.finished_tasks.len());
    for (i, t) in hb.finished_tasks.iter().enumerate() {
        if !(t.duration_s.is_finite() && (0.0..=MAX_TASK_DURATION_S).contains(&t.duration_s)) {
            return Err(ApiError::invalid_field(
                format!("finished_tasks[{i}].duration_s"),
                format!(
                    "seconds between 0 and {MAX_TASK_DURATION_S}, got {}",
                    t.duration_s
                ),
            ));
        }
        runs.push(TaskRun {
            finished_at: t.finished_at,
            duration_ms: (t.duration_s * 1000.0).round() as i64,
        });
    }
    let spec = spec_of(&state, worker).await?;
    let now = state.now();
    let busy = hb.busy_slots;
    let updated = state
        .store
        .modify_worker(&worker.id, |w| {
            if matches!(w.state, WorkerState::Ready | WorkerState::Draining) {
                w.last_heartbeat_at = Some(now);
                w.busy_slots = busy;
                w.idle_since = match (busy, w.idle_since) {
                    (0, Some(t)) => Some(t),
                    (0, None) => Some(now),
                    _ => None,
                };
            }
            Ok(())
        })
        .await?;
    state
        .store
        .record_task_runs(&worker.pool_id, worker.id.as_str(), &runs, now)
        .await?;
    let action = action_for(updated.state, spec.is_some());
    if updated.state == WorkerState::Draining && busy == 0 {
        // Drained: the loop terminates it now rather than at its next tick.
        state.wake.wake(&updated.pool_id);
    }
    Ok(Json(HeartbeatAnswer {
        action,
        heartbeat_interval_s: heartbeat_interval_s(spec.as_ref()),
    }))
}

/// Interruption notice
///
/// The cloud announced it will take the machine back (EC2 spot instance-action, GCE
/// preemption). The worker stops counting as capacity and the pool is woken, so its
/// replacement is launched before the machine is gone. Takes the worker's own
/// credential.
#[utoipa::path(
    post, path = "/v1/workers/{worker_id}/interruption", tag = "worker agent",
    params(("worker_id" = String, Path, description = "The worker's id")),
    request_body = Interruption,
    responses(
        (status = 202, description = "Noted; drain", body = InterruptionAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 401, description = "No valid worker credential", body = ErrorBody),
        (status = 403, description = "The credential is another worker's, or an operator token", body = ErrorBody),
        (status = 422, description = "A field is wrong", body = ErrorBody),
    ),
    security(("worker" = []))
)]
pub async fn interruption(
    State(state): State<AppState>,
    caller: WorkerCaller,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<InterruptionAnswer>), ApiError> {
    caller.require_self(&id)?;
    let notice: Interruption = decode(body)?;
    let now = state.now();
    let what = format!(
        "interruption notice from {}: {}{}",
        match notice.source {
            NoticeSource::Ec2 => "EC2",
            NoticeSource::Gce => "GCE",
        },
        match notice.action {
            NoticeAction::Terminate => "terminate",
            NoticeAction::Stop => "stop",
            NoticeAction::Hibernate => "hibernate",
            NoticeAction::Preempted => "preempted",
        },
        notice.at.map(|t| format!(" at {t}")).unwrap_or_default()
    );
    let worker = state
        .store
        .modify_worker(&caller.worker.id, |w| {
            if w.state == WorkerState::Ready {
                w.transition(WorkerState::Draining, now)?;
            }
            if w.failure.is_none() {
                w.failure = Some(what.clone());
            }
            Ok(())
        })
        .await?;
    tracing::warn!(pool = %worker.pool_id, worker = %worker.id, notice = %what, "worker reports an interruption notice; replacing it");
    state.wake.wake(&worker.pool_id);
    Ok((
        StatusCode::ACCEPTED,
        Json(InterruptionAnswer {
            action: WorkerAction::Drain,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_split_into_worker_and_secret() {
        let secret = "a".repeat(64);
        assert_eq!(
            split_credential(&format!("capw_w-0123abcd_{secret}")),
            Some(("w-0123abcd", secret.as_str()))
        );
        assert_eq!(split_credential(&format!("cap_w-1_{secret}")), None);
        assert_eq!(split_credential("capw_w-1_short"), None);
        assert_eq!(split_credential(&format!("capw__{secret}")), None);
    }

    #[test]
    fn the_answer_follows_the_worker_state() {
        assert_eq!(action_for(WorkerState::Ready, true), WorkerAction::Continue);
        assert_eq!(action_for(WorkerState::Draining, true), WorkerAction::Drain);
        assert_eq!(
            action_for(WorkerState::Terminating, true),
            WorkerAction::Terminate
        );
        assert_eq!(
            action_for(WorkerState::Ready, false),
            WorkerAction::Terminate
        );
    }
}
