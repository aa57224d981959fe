//! capstan's HTTP interface (axum): the operator API under `/v1`, its OpenAPI document,
//! and the probes.
//!
//! [`app`] builds the whole service from an [`AppState`]; handlers are thin: they
//! check the caller's scope, call into the store or core, and map failures to one
//! error body in one place ([`error`]). Tests drive the app in-process with
//! `tower::ServiceExt::oneshot`; the binary binds it to a socket.
//!
//! Modules, in the order a request meets them:
//! - [`paths`]: pool ids hold `/` (`ci/linux-large`), so before routing the part of a
//!   `/v1/pools/...` path that is the pool id is percent-encoded into one segment; a
//!   user types the id as it is, and `%2F` works too.
//! - [`auth`]: bearer tokens `cap_<id>_<secret>`, scopes with pool-id patterns, the
//!   [`auth::Caller`] extractor every `/v1` handler takes.
//! - [`request`]: strict JSON bodies (415, 413, 400, 422 with field paths), query
//!   strings, `If-Match` preconditions on pool generations, pagination tokens.
//! - [`pools`], [`workers`], [`machines`], [`clients`]: one module per resource, each
//!   with its handlers, its request and response types, and the rules of its writes
//!   (the binary's CLI is a client of these routes, so the rules live here once).
//! - [`probes`]: `/healthz` and `/readyz`, unauthenticated.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers' annotations,
//!   served at `/openapi.json` with Swagger UI at `/docs` (assets vendored at build
//!   time, nothing fetched at run time); `api/openapi.json` is the committed copy a
//!   test keeps in step.
//!
//! Hardening applies to every route: a request timeout (503 `timeout`), a 1 MiB body
//! limit, JSON-only bodies with unknown fields rejected, JSON 404 and 405 answers, and
//! `Cache-Control: no-store` on everything (responses may carry tokens).

pub mod auth;
pub mod clients;
pub mod error;
pub mod machines;
pub mod openapi;
pub mod paths;
pub mod pools;
pub mod probes;
pub mod request;
pub mod store_inventory;
pub mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capstan_core::Timestamp;
use store::Store;
use tower::Layer;
use tower::util::{MapRequest, MapRequestLayer};

pub use error::{ApiError, ErrorBody};

/// Default limit on how long one request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the service takes traffic; flipped by the binary at start-up and shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready (`true`) or draining (`false`).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the service is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Where handlers read the time: the binary passes the wall clock, tests a fixed one.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> Timestamp + Send + Sync>);

impl Clock {
    /// A clock reading `f`.
    pub fn new(f: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Start-up / shutdown flag for `/readyz`.
    pub readiness: Readiness,
    /// The time.
    pub clock: Clock,
    /// Limit on one request's duration.
    pub request_timeout: Duration,
    /// When each client's last use was last recorded.
    pub last_used: auth::LastUsed,
}

impl AppState {
    /// State over `store`, reading time from `clock`, with default limits.
    pub fn new(store: Store, readiness: Readiness, clock: Clock) -> Self {
        Self {
            store,
            readiness,
            clock,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            last_used: auth::LastUsed::default(),
        }
    }

    /// Now.
    pub fn now(&self) -> Timestamp {
        (self.clock.0)()
    }
}

/// The routes, without the pool-path rewriting of [`app`].
pub fn router(state: AppState) -> Router {
    let (routes, doc) = openapi::routes().split_for_parts();
    routes
        .merge(openapi::docs_ui(doc))
        .fallback(error::no_such_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_and_label,
        ))
        .layer(DefaultBodyLimit::max(request::MAX_BODY_BYTES))
        .with_state(state)
}

/// The service: [`router`] behind the rewriting of pool ids in paths
/// ([`paths::encode_pool_id`]), which must run before routing.
pub type App = MapRequest<Router, fn(Request) -> Request>;

/// Builds the service.
pub fn app(state: AppState) -> App {
    MapRequestLayer::new(paths::encode_pool_id as fn(Request) -> Request).layer(router(state))
}

/// Every response: bounded in time, never cached, and logged at debug level (method,
/// path, status, duration: never a header, so never a token).
async fn limit_and_label(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let started = tokio::time::Instant::now();
    let mut response = match tokio::time::timeout(state.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout(format!(
            "the request took longer than {} s; nothing may have been applied, read before retrying",
            state.request_timeout.as_secs()
        ))
        .into_response(),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    tracing::debug!(
        target: "capstan::access",
        %method,
        %path,
        status = response.status().as_u16(),
        ms = started.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    response
}
