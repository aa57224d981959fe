//! `/v1/pools`: create, read, list, edit and delete pools, plus their errors and audit
//! log.
//!
//! This is the one write path for pools: the CLI's `pools apply` is a client of these
//! routes. Rules:
//! - A spec is validated by the same decoder spec files use ([`PoolSpec::from_value`]):
//!   every problem is reported at once as `{field, message}` (422 `invalid_spec`).
//! - A pool's generation is its ETag. A write to an existing pool must name the
//!   generation it was based on in `If-Match` (missing: 428; stale: 412 with the current
//!   generation); the store applies it as a compare-and-swap, so of two concurrent
//!   writers based on one generation exactly one wins. `If-None-Match: *` makes a PUT
//!   create-only. A PUT or PATCH that changes nothing bumps nothing.
//! - A delete removes a pool with no live worker; otherwise it marks the pool deleting
//!   (202): it takes no more edits, and the reconcile loop drains its workers and then
//!   removes it.
//! - A create or a change (not an unchanged PUT), and marking a pool deleting, wake the
//!   reconcile loop for the pool ([`crate::Wake`]): it plans the pool at once instead
//!   of at its next tick.

// utoipa's `params(QueryStruct)` expansion names the struct by its full path.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capstan_core::{FieldError, PoolId, PoolSpec, ProviderKind, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{DeleteOutcome, PoolFilter, PoolRecord, Store};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::request::{
    JsonBody, Preconditions, Query, continuation, etag, page_limit, resume_after,
};

/// Whether a pool takes work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolStatus {
    /// In service.
    Active,
    /// A delete was asked for; its workers drain, then it is removed.
    Deleting,
}

/// A pool as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PoolView {
    /// The pool's id.
    pub id: PoolId,
    /// The spec with every default filled in.
    pub spec: PoolSpec,
    /// Bumped on every change; the ETag, and the `If-Match` value of the next write.
    pub generation: i64,
    /// When the pool was created.
    pub created: Timestamp,
    /// When it last changed.
    pub updated: Timestamp,
    /// `active`, or `deleting` while its workers drain.
    pub status: PoolStatus,
    /// When a delete was asked for, if it was.
    pub deleting_since: Option<Timestamp>,
}

impl From<PoolRecord> for PoolView {
    fn from(r: PoolRecord) -> Self {
        Self {
            id: r.spec.id.clone(),
            status: if r.deleting_since.is_some() {
                PoolStatus::Deleting
            } else {
                PoolStatus::Active
            },
            deleting_since: r.deleting_since,
            generation: r.generation,
            created: r.created_at,
            updated: r.updated_at,
            spec: r.spec,
        }
    }
}

/// A page of pools.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolPage {
    /// The pools, ordered by id.
    pub items: Vec<PoolView>,
    /// Pass as `continuation` for the next page; null on the last page.
    pub continuation: Option<String>,
}

/// One recorded problem of a pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolErrorView {
    /// Classification, e.g. `insufficient_capacity`.
    pub kind: String,
    /// The launch config it is about, if any.
    pub launch_config_id: Option<String>,
    /// The provider's or capstan's message.
    pub message: String,
    /// How often it happened.
    pub count: i64,
    /// First occurrence.
    pub first_seen: Timestamp,
    /// Latest occurrence.
    pub last_seen: Timestamp,
}

/// A pool's errors.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolErrorList {
    /// Most recent first.
    pub items: Vec<PoolErrorView>,
}

/// One change of a pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    /// Increasing id.
    pub id: i64,
    /// When it was committed.
    pub at: Timestamp,
    /// Who made it: `client:<name>:<id>`, or `cli:<user>` from before the API.
    pub actor: String,
    /// `create`, `update`, `delete` or `delete_requested`.
    pub action: String,
    /// Generation before; null for a create.
    pub old_generation: Option<i64>,
    /// Generation after; null for a delete.
    pub new_generation: Option<i64>,
}

/// A page of audit entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEntryView>,
    /// Pass as `continuation` for older entries; null when there are none.
    pub continuation: Option<String>,
}

/// The pool id of a `/v1/pools/{pool_id}...` path, validated (400 when it is not one).
#[derive(Debug, Clone)]
pub struct PoolPath(pub PoolId);

impl<S: Send + Sync> FromRequestParts<S> for PoolPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        PoolId::new(raw.clone())
            .map(PoolPath)
            .map_err(|e| ApiError::bad_request(format!("pool id {raw:?} in the path {e}")))
    }
}

/// The `pool_id` path parameter as the OpenAPI document describes it (the handlers read
/// it with [`PoolPath`], which applies the full rules, reserved last segments included).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PoolIdParam {
    /// Pool id; its `/` may be sent as is or as %2F.
    #[param(
        pattern = "^[a-z0-9_-]+(/[a-z0-9_-]+)*$",
        min_length = 1,
        max_length = 64
    )]
    pub pool_id: String,
}

/// Builds a spec for pool `id` from a request body: the body's `id` may be left out and
/// must match the path when given; everything else is checked by the spec validator.
pub fn spec_from_body(id: &PoolId, mut body: Value) -> Result<PoolSpec, ApiError> {
    let Some(object) = body.as_object_mut() else {
        return Err(ApiError::invalid(
            "invalid_spec",
            vec![FieldError {
                field: String::new(),
                message: "expected a JSON object: a pool spec".into(),
            }],
        ));
    };
    // A body naming another pool is one problem among the others: the rest of the
    // spec is checked as if it named the path's pool, so every problem is reported.
    let mut problems = Vec::new();
    if let Some(Value::String(given)) = object.get("id")
        && given != id.as_str()
    {
        problems.push(FieldError {
            field: "id".into(),
            message: format!(
                "must equal the pool id in the path ({id}), got {given:?}; a pool's id never changes"
            ),
        });
    }
    if problems.len() == 1 || !object.contains_key("id") {
        object.insert("id".into(), Value::String(id.to_string()));
    }
    match PoolSpec::from_value(body) {
        Ok(spec) if problems.is_empty() => Ok(spec),
        Ok(_) => Err(ApiError::invalid("invalid_spec", problems)),
        Err(errors) => {
            problems.extend(errors.0);
            Err(ApiError::invalid("invalid_spec", problems))
        }
    }
}

/// What a PUT did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The pool is new.
    Created,
    /// The spec was replaced.
    Replaced,
    /// The spec was already this; nothing was written.
    Unchanged,
}

/// The generation a write (or delete) is based on: `If-Match` must be present (428)
/// and name the current generation (412).
fn matched_generation(current: &PoolRecord, pre: &Preconditions) -> Result<i64, ApiError> {
    let id = &current.spec.id;
    let Some(named) = &pre.if_match else {
        return Err(ApiError::precondition_required(format!(
            "pool {id} exists (generation {}); send If-Match: \"{}\" with the generation your change is based on",
            current.generation, current.generation
        )));
    };
    if !named.contains(&current.generation) {
        let named: Vec<String> = named.iter().map(i64::to_string).collect();
        return Err(ApiError::precondition_failed(
            Some(current.generation),
            format!(
                "pool {id} changed: If-Match names generation {}, current is {}; nothing applied, read it again",
                named.join(", "),
                current.generation
            ),
        ));
    }
    Ok(current.generation)
}

/// The generation an edit is based on: [`matched_generation`], and the pool must not be
/// being deleted (409).
fn based_on(current: &PoolRecord, pre: &Preconditions) -> Result<i64, ApiError> {
    let generation = matched_generation(current, pre)?;
    if current.deleting_since.is_some() {
        return Err(ApiError::from(store::StoreError::PoolDeleting(
            current.spec.id.to_string(),
        )));
    }
    Ok(generation)
}

/// Writes `spec` over `current` if it differs, as a compare-and-swap on `expected`.
async fn replace(
    store: &Store,
    current: PoolRecord,
    expected: i64,
    spec: PoolSpec,
    actor: &str,
    now: Timestamp,
) -> Result<(PutOutcome, PoolRecord), ApiError> {
    if spec == current.spec {
        return Ok((PutOutcome::Unchanged, current));
    }
    let record = store
        .update_pool(&spec.id, expected, &spec, actor, now)
        .await?;
    Ok((PutOutcome::Replaced, record))
}

/// Creates or replaces pool `id` with the spec in `body`, under `pre`.
pub async fn put(
    store: &Store,
    actor: &str,
    id: &PoolId,
    body: Value,
    pre: &Preconditions,
    now: Timestamp,
) -> Result<(PutOutcome, PoolRecord), ApiError> {
    let spec = spec_from_body(id, body)?;
    match store.get_pool(id).await? {
        Some(current) if pre.if_none_match_any => Err(ApiError::precondition_failed(
            Some(current.generation),
            format!(
                "pool {id} already exists (generation {}); If-None-Match: * creates only",
                current.generation
            ),
        )),
        Some(current) => {
            let expected = based_on(&current, pre)?;
            replace(store, current, expected, spec, actor, now).await
        }
        None if pre.if_match.is_some() => Err(ApiError::precondition_failed(
            None,
            format!(
                "pool {id} does not exist, so If-Match cannot hold; create it without If-Match"
            ),
        )),
        None => {
            let record = store.create_pool(&spec, actor, now).await?;
            Ok((PutOutcome::Created, record))
        }
    }
}

/// Applies a JSON merge patch (RFC 7396) to pool `id`'s spec, under `pre`.
pub async fn patch(
    store: &Store,
    actor: &str,
    id: &PoolId,
    merge_patch: &Value,
    pre: &Preconditions,
    now: Timestamp,
) -> Result<(PutOutcome, PoolRecord), ApiError> {
    let current = existing(store, id).await?;
    let expected = based_on(&current, pre)?;
    let mut document = serde_json::to_value(&current.spec).map_err(|e| ApiError::internal(&e))?;
    json_patch::merge(&mut document, merge_patch);
    let spec = spec_from_body(id, document)?;
    replace(store, current, expected, spec, actor, now).await
}

/// Deletes pool `id` (or marks it deleting while workers are live), under `pre`.
pub async fn delete(
    store: &Store,
    actor: &str,
    id: &PoolId,
    pre: &Preconditions,
    now: Timestamp,
) -> Result<DeleteOutcome, ApiError> {
    let current = existing(store, id).await?;
    let expected = matched_generation(&current, pre)?;
    Ok(store.delete_pool(id, expected, actor, now).await?)
}

/// Pool `id`'s record, or 404.
pub(crate) async fn existing(store: &Store, id: &PoolId) -> Result<PoolRecord, ApiError> {
    store
        .get_pool(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no pool {id}")))
}

fn with_etag(status: StatusCode, record: PoolRecord) -> Response {
    let tag = etag(record.generation);
    let mut response = (status, Json(PoolView::from(record))).into_response();
    response.headers_mut().insert(header::ETAG, tag);
    response
}

/// Query of `GET /v1/pools`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPoolsQuery {
    /// Only pools of this provider.
    provider: Option<ProviderKind>,
    /// Only pools whose id starts with this (e.g. `ci/`).
    prefix: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    continuation: Option<String>,
}

/// Most store pages one list request reads while skipping pools the caller may not
/// read; past that it answers a short page with a continuation.
const MAX_SCAN_BATCHES: usize = 10;

/// List pools
///
/// The pools the caller may read (`pools:read:<id>`), ordered by id, a page at a time.
#[utoipa::path(
    get, path = "/v1/pools", tag = "pools",
    params(ListPoolsQuery),
    responses(
        (status = 200, description = "A page of pools", body = PoolPage),
        (status = 400, description = "A bad query parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "No pools:read scope at all", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_pools(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListPoolsQuery>,
) -> Result<Json<PoolPage>, ApiError> {
    if !caller.may_any(Action::PoolsRead) {
        return Err(ApiError::forbidden(
            "pools:read:*".into(),
            format!(
                "client {} holds no pools:read scope; listing needs one (e.g. pools:read:* or pools:read:ci/*)",
                caller.name
            ),
        ));
    }
    let limit = page_limit(q.limit)?;
    let mut filter = PoolFilter {
        provider: q.provider,
        prefix: q.prefix,
        after: q
            .continuation
            .as_deref()
            .map(resume_after)
            .transpose()?
            .flatten(),
    };
    let mut items = Vec::new();
    let mut next = None;
    for _ in 0..MAX_SCAN_BATCHES {
        let batch = state.store.list_pools_page(&filter, limit).await?;
        let full = batch.len() == limit as usize;
        let mut last = None;
        for record in batch {
            last = Some(record.spec.id.to_string());
            if caller.may(Action::PoolsRead, record.spec.id.as_str()) {
                items.push(PoolView::from(record));
                if items.len() == limit as usize {
                    break;
                }
            }
        }
        next = if full { last.clone() } else { None };
        if items.len() == limit as usize || !full {
            break;
        }
        filter.after = last;
    }
    Ok(Json(PoolPage {
        items,
        continuation: next.as_deref().map(continuation),
    }))
}

/// Read a pool
///
/// The spec with its generation (also the `ETag`). With `If-None-Match` naming the
/// current generation the answer is 304 without a body.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}", tag = "pools",
    params(
        PoolIdParam,
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "A generation as an entity tag, e.g. \"3\"", pattern = r#"^(W/)?"[0-9]+"(\s*,\s*(W/)?"[0-9]+")*$"#),
    ),
    responses(
        (status = 200, description = "The pool", body = PoolView, headers(("ETag" = String, description = "The generation, e.g. \"3\""))),
        (status = 304, description = "Not modified since the generation in If-None-Match"),
        (status = 400, description = "Bad pool id or header", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_pool(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    let pre = Preconditions::from_headers(&headers)?;
    let record = existing(&state.store, &id).await?;
    if pre.if_none_match_any || pre.if_none_match.contains(&record.generation) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response
            .headers_mut()
            .insert(header::ETAG, etag(record.generation));
        return Ok(response);
    }
    Ok(with_etag(StatusCode::OK, record))
}

/// Create or replace a pool
///
/// Creates the pool when it does not exist (add `If-None-Match: *` to make sure you
/// never replace one); replaces its spec when it does, which requires `If-Match` with
/// the generation the new spec is based on. The body's `id` may be left out.
#[utoipa::path(
    put, path = "/v1/pools/{pool_id}", tag = "pools",
    params(
        PoolIdParam,
        ("If-Match" = Option<String>, Header, nullable = false, description = "Required to replace: the generation the change is based on, e.g. \"3\"", pattern = r#"^(W/)?"[0-9]+"(\s*,\s*(W/)?"[0-9]+")*$"#),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "`*`: create only", pattern = r#"^\*$"#),
    ),
    request_body(content = PoolSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced (or unchanged)", body = PoolView, headers(("ETag" = String))),
        (status = 201, description = "Created", body = PoolView, headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Malformed JSON, bad pool id or header", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:write:<pool_id>", body = ErrorBody),
        (status = 409, description = "The pool is being deleted", body = ErrorBody),
        (status = 412, description = "Generation moved, or the pool exists under If-None-Match: *", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 422, description = "Invalid spec: every problem with its field", body = ErrorBody),
        (status = 428, description = "The pool exists and If-Match is missing", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_pool(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Action::PoolsWrite, id.as_str())?;
    let pre = Preconditions::from_headers(req.headers())?;
    let JsonBody(body) = JsonBody::read(req).await?;
    let (outcome, record) =
        put(&state.store, &caller.actor(), &id, body, &pre, state.now()).await?;
    if outcome != PutOutcome::Unchanged {
        state.wake.wake(&id);
    }
    if outcome == PutOutcome::Created {
        let mut response = with_etag(StatusCode::CREATED, record);
        if let Ok(location) = format!("/v1/pools/{id}").parse() {
            response.headers_mut().insert(header::LOCATION, location);
        }
        return Ok(response);
    }
    Ok(with_etag(StatusCode::OK, record))
}

/// Edit a pool with a JSON merge patch
///
/// RFC 7396: fields in the body replace the spec's, `null` removes one (back to its
/// default), objects merge, arrays are replaced whole. The result is validated like a
/// whole spec. Requires `If-Match`.
#[utoipa::path(
    patch, path = "/v1/pools/{pool_id}", tag = "pools",
    params(
        PoolIdParam,
        ("If-Match" = String, Header, description = "The generation the patch is based on, e.g. \"3\"", pattern = r#"^(W/)?"[0-9]+"(\s*,\s*(W/)?"[0-9]+")*$"#),
    ),
    request_body(content = Object, content_type = "application/merge-patch+json",
        description = "A JSON merge patch of the spec (application/json is accepted too)"),
    responses(
        (status = 200, description = "Patched", body = PoolView, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON, bad pool id or header", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:write:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "The pool is being deleted", body = ErrorBody),
        (status = 412, description = "Generation moved", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 422, description = "The patched spec is invalid", body = ErrorBody),
        (status = 428, description = "If-Match is missing", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn patch_pool(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require(Action::PoolsWrite, id.as_str())?;
    let pre = Preconditions::from_headers(req.headers())?;
    let JsonBody(body) = JsonBody::read(req).await?;
    let (outcome, record) =
        patch(&state.store, &caller.actor(), &id, &body, &pre, state.now()).await?;
    if outcome != PutOutcome::Unchanged {
        state.wake.wake(&id);
    }
    Ok(with_etag(StatusCode::OK, record))
}

/// Delete a pool
///
/// Removes a pool with no live worker (204). With live workers the pool is marked
/// deleting (202): it takes no more edits, its workers drain, and the reconcile loop
/// removes it. Requires `If-Match`.
#[utoipa::path(
    delete, path = "/v1/pools/{pool_id}", tag = "pools",
    params(
        PoolIdParam,
        ("If-Match" = String, Header, description = "The generation you read, e.g. \"3\"", pattern = r#"^(W/)?"[0-9]+"(\s*,\s*(W/)?"[0-9]+")*$"#),
    ),
    responses(
        (status = 202, description = "Marked deleting; workers drain first", body = PoolView),
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad pool id or header", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:delete:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 412, description = "Generation moved", body = ErrorBody),
        (status = 428, description = "If-Match is missing", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete_pool(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require(Action::PoolsDelete, id.as_str())?;
    let pre = Preconditions::from_headers(&headers)?;
    Ok(
        match delete(&state.store, &caller.actor(), &id, &pre, state.now()).await? {
            DeleteOutcome::Deleted => StatusCode::NO_CONTENT.into_response(),
            DeleteOutcome::MarkedDeleting(record) => {
                state.wake.wake(&id);
                with_etag(StatusCode::ACCEPTED, *record)
            }
        },
    )
}

/// A pool's errors
///
/// Deduplicated: the same launch config failing the same way is one entry with a
/// count and first and last times. Needs `pools:read:<pool_id>`.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}/errors", tag = "pools",
    params(PoolIdParam),
    responses(
        (status = 200, description = "The pool's errors, most recent first", body = PoolErrorList),
        (status = 400, description = "Bad pool id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pool_errors(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
) -> Result<Json<PoolErrorList>, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    existing(&state.store, &id).await?;
    let items = state
        .store
        .list_pool_errors(&id)
        .await?
        .into_iter()
        .map(|e| PoolErrorView {
            kind: e.kind,
            launch_config_id: e.launch_config_id,
            message: e.message,
            count: e.count,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
        })
        .collect();
    Ok(Json(PoolErrorList { items }))
}

/// Query of the audit route.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    continuation: Option<String>,
}

/// A pool's audit log
///
/// Who created, changed or deleted the pool, when, with the generations before and
/// after; newest first. Needs `pools:read:<pool_id>`.
#[utoipa::path(
    get, path = "/v1/pools/{pool_id}/audit", tag = "pools",
    params(PoolIdParam, AuditQuery),
    responses(
        (status = 200, description = "Audit entries, newest first", body = AuditPage),
        (status = 400, description = "Bad pool id or query", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pool_audit(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    let limit = page_limit(q.limit)?;
    let before = match q
        .continuation
        .as_deref()
        .map(resume_after)
        .transpose()?
        .flatten()
    {
        Some(after) => Some(after.parse::<i64>().map_err(|_| {
            ApiError::bad_request("continuation: not a token this server issued for this route")
        })?),
        None => None,
    };
    existing(&state.store, &id).await?;
    let entries = state.store.audit_log_page(Some(&id), before, limit).await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| continuation(&e.id.to_string())))
        .flatten();
    Ok(Json(AuditPage {
        items: entries
            .into_iter()
            .map(|e| AuditEntryView {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action.as_str().to_owned(),
                old_generation: e.old_generation,
                new_generation: e.new_generation,
            })
            .collect(),
        continuation: next,
    }))
}
