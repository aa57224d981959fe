//! `/v1/clients`: API clients and their tokens.
//!
//! Creating a client mints its token `cap_<id>_<secret>`, answered once; the store
//! keeps only the secret's SHA-256. A caller with `clients:admin` may create, list and
//! revoke clients, but only create or revoke one whose every scope its own scopes
//! cover: nobody hands out (or takes away) more than they hold. The first admin is made
//! on the store directly with [`bootstrap_client`] (`capstan clients create
//! --database-url ...`), since no token exists yet to call the API with.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use capstan_core::{FieldError, Timestamp};
use serde::{Deserialize, Serialize};
use store::{ClientRecord, Store};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, Scope, mint_token, parse_scopes};
use crate::error::{ApiError, ErrorBody};
use crate::request::{JsonBody, decode};

/// Longest client name, in characters.
const MAX_NAME_LEN: usize = 64;
/// Most scopes one client may hold.
const MAX_SCOPES: usize = 64;
/// Shortest expiry, in seconds: shorter tokens would expire before they are handed on.
const MIN_EXPIRY_S: u64 = 60;
/// Longest expiry, in seconds (ten years); leave it out for no expiry.
const MAX_EXPIRY_S: u64 = 10 * 365 * 86_400;

/// Whether a client's token is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientStatus {
    /// Accepted.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// An API client as the API shows it (never its secret or its hash).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClientView {
    /// The `<id>` of its token.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// When it was created.
    pub created: Timestamp,
    /// Who created it.
    pub created_by: String,
    /// When its token expires; null: never.
    pub expires: Option<Timestamp>,
    /// When it was revoked, if it was.
    pub revoked: Option<Timestamp>,
    /// Its latest authenticated request (recorded about once a minute).
    pub last_used: Option<Timestamp>,
    /// Active, expired or revoked.
    pub status: ClientStatus,
}

impl ClientView {
    fn new(r: ClientRecord, now: Timestamp) -> Self {
        let status = if r.revoked_at.is_some() {
            ClientStatus::Revoked
        } else if r.expires_at.is_some_and(|at| at <= now) {
            ClientStatus::Expired
        } else {
            ClientStatus::Active
        };
        Self {
            id: r.id,
            name: r.name,
            scopes: r.scopes,
            created: r.created_at,
            created_by: r.created_by,
            expires: r.expires_at,
            revoked: r.revoked_at,
            last_used: r.last_used_at,
            status,
        }
    }
}

/// Body of `POST /v1/clients`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    /// For people and audit entries: 1-64 printable characters.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub name: String,
    /// At least one scope, e.g. `pools:write:ci/*`, `clients:admin`, `*`.
    #[schema(min_items = 1, max_items = 64)]
    pub scopes: Vec<String>,
    /// Seconds until the token expires (60 s to 10 years); leave out for no expiry.
    #[serde(default)]
    #[schema(minimum = 60, maximum = 315_360_000)]
    pub expires_in_s: Option<u64>,
}

/// A new client and its token.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedClient {
    /// The client.
    pub client: ClientView,
    /// Its bearer token, shown this once.
    pub token: String,
}

/// Clients.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    /// Oldest first, revoked ones included.
    pub items: Vec<ClientView>,
}

/// Checks a creation request, every problem at once; answers the parsed scopes.
fn check(req: &CreateClient) -> Result<Vec<Scope>, ApiError> {
    let mut problems = Vec::new();
    let mut problem = |field: String, message: String| problems.push(FieldError { field, message });
    let name_len = req.name.chars().count();
    if req.name.trim().is_empty()
        || name_len > MAX_NAME_LEN
        || req.name.chars().any(char::is_control)
    {
        problem(
            "name".into(),
            format!(
                "must be 1-{MAX_NAME_LEN} printable characters, got {:?}",
                req.name
            ),
        );
    }
    if req.scopes.is_empty() || req.scopes.len() > MAX_SCOPES {
        problem(
            "scopes".into(),
            format!("must hold 1-{MAX_SCOPES} scopes, got {}", req.scopes.len()),
        );
    }
    let mut scopes = Vec::new();
    for (i, s) in req.scopes.iter().enumerate() {
        match s.parse::<Scope>() {
            Ok(scope) => scopes.push(scope),
            Err(e) => problem(format!("scopes[{i}]"), e),
        }
    }
    if let Some(s) = req.expires_in_s
        && !(MIN_EXPIRY_S..=MAX_EXPIRY_S).contains(&s)
    {
        problem(
            "expires_in_s".into(),
            format!(
                "must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S} seconds (or left out for no expiry), got {s}"
            ),
        );
    }
    if problems.is_empty() {
        Ok(scopes)
    } else {
        Err(ApiError::invalid("invalid_request", problems))
    }
}

/// Creates a client: validates `req`, mints its token, stores the client. `granter`
/// is the creating caller, whose scopes must cover every requested scope; `None` for
/// the bootstrap on the store directly.
pub async fn create(
    store: &Store,
    req: CreateClient,
    granter: Option<&Caller>,
    created_by: &str,
    now: Timestamp,
) -> Result<(ClientView, String), ApiError> {
    let scopes = check(&req)?;
    if let Some(caller) = granter
        && let Some(beyond) = scopes.iter().find(|s| !caller.holds(s))
    {
        return Err(ApiError::forbidden(
            beyond.to_string(),
            format!(
                "client {} cannot grant {beyond}: a client only grants scopes its own cover",
                caller.name
            ),
        ));
    }
    // Ids are 64 random bits; a clash is astronomically rare, but costs only a retry.
    for _ in 0..3 {
        let minted = mint_token()?;
        let record = ClientRecord {
            id: minted.id,
            name: req.name.trim().to_owned(),
            secret_sha256: minted.secret_sha256,
            scopes: scopes.iter().map(Scope::to_string).collect(),
            created_at: now,
            created_by: created_by.to_owned(),
            expires_at: req
                .expires_in_s
                .map(|s| now.plus_secs(i64::try_from(s).unwrap_or(i64::MAX / 1000))),
            revoked_at: None,
            last_used_at: None,
        };
        if store.insert_client(&record).await? {
            tracing::info!(client = %record.id, name = %record.name, scopes = ?record.scopes, %created_by, "API client created");
            return Ok((ClientView::new(record, now), minted.token));
        }
    }
    Err(ApiError::internal(
        &"three random client ids in a row were taken",
    ))
}

/// Creates a client on the store directly, for the first admin (`capstan clients
/// create --database-url ...`). Same checks as the API, with nobody to grant from.
pub async fn bootstrap_client(
    store: &Store,
    name: &str,
    scopes: &[String],
    expires_in_s: Option<u64>,
    created_by: &str,
    now: Timestamp,
) -> Result<(ClientView, String), ApiError> {
    let req = CreateClient {
        name: name.to_owned(),
        scopes: scopes.to_vec(),
        expires_in_s,
    };
    create(store, req, None, created_by, now).await
}

/// Create a client
///
/// Answers the client and its token; the token is shown this once. Needs
/// `clients:admin`, and every requested scope must be covered by the caller's own.
#[utoipa::path(
    post, path = "/v1/clients", tag = "clients",
    request_body(content = CreateClient, content_type = "application/json"),
    responses(
        (status = 201, description = "Created; the token is in the body, shown once", body = CreatedClient),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing clients:admin, or a requested scope the caller does not hold", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 422, description = "A field is invalid", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_client(
    State(state): State<AppState>,
    caller: Caller,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require_scope(&Scope::ClientsAdmin)?;
    let JsonBody(body) = JsonBody::read(req).await?;
    let body: CreateClient = decode(body)?;
    let (client, token) = create(
        &state.store,
        body,
        Some(&caller),
        &caller.actor(),
        state.now(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(CreatedClient { client, token })).into_response())
}

/// List clients
///
/// Every client, revoked ones included; never a secret. Needs `clients:admin`.
#[utoipa::path(
    get, path = "/v1/clients", tag = "clients",
    responses(
        (status = 200, description = "The clients", body = ClientList),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing clients:admin", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_clients(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ClientList>, ApiError> {
    caller.require_scope(&Scope::ClientsAdmin)?;
    let now = state.now();
    let items = state
        .store
        .list_clients()
        .await?
        .into_iter()
        .map(|r| ClientView::new(r, now))
        .collect();
    Ok(Json(ClientList { items }))
}

/// Revoke a client
///
/// Its token is refused from now on. Needs `clients:admin`, and the caller's scopes
/// must cover the revoked client's.
#[utoipa::path(
    delete, path = "/v1/clients/{client_id}", tag = "clients",
    params(("client_id" = String, Path, description = "The client's id (the <id> of cap_<id>_<secret>)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing clients:admin, or the client holds scopes the caller does not", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_client(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_scope(&Scope::ClientsAdmin)?;
    // No id holds NUL, and PostgreSQL cannot even look one up.
    let found = if id.contains('\0') {
        None
    } else {
        state.store.get_client(&id).await?
    };
    let Some(target) = found else {
        return Err(ApiError::not_found(format!("no client {id}")));
    };
    if target.id != caller.id
        && let Some(beyond) = parse_scopes(&target)?.iter().find(|s| !caller.holds(s))
    {
        return Err(ApiError::forbidden(
            beyond.to_string(),
            format!(
                "client {} cannot revoke client {} ({id}): it holds {beyond}, which {} does not",
                caller.name, target.name, caller.name
            ),
        ));
    }
    state.store.revoke_client(&id, state.now()).await?;
    tracing::info!(client = %id, actor = %caller.actor(), "API client revoked");
    Ok(StatusCode::NO_CONTENT)
}
