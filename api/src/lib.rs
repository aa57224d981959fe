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
//! - [`queue`]: pushing a pool's queue samples (the demand signal), and waking the
//!   reconcile loop when the backlog outgrows the idle slots.
//! - [`plans`]: what the reconcile loop decided for a pool (its latest plan, in JSON
//!   and in words, with the recent plans that acted) and the forecast behind it.
//! - [`whatif`]: what-if on a pool's own history: its recorded queue and run times
//!   replayed through the simulator with the current spec and a candidate, side by
//!   side (reads only; CPU-bound replays on blocking threads, one what-if at a time).
//! - [`webhooks`]: `POST /v1/webhooks/github`, GitHub `workflow_job` deliveries,
//!   authenticated by their HMAC signature instead of a bearer token.
//! - [`metrics`]: `/metrics`, Prometheus text, behind `metrics:read`.
//! - [`probes`]: `/healthz` and `/readyz`, unauthenticated.
//! - [`dashboard`]: the web pages at `/` (pools, a pool's chart, plan, workers and
//!   errors), signed in with an API token held in an HttpOnly cookie that only the
//!   dashboard's routes read; not part of the OpenAPI document.
//! - [`openapi`]: the OpenAPI 3.1 document, generated from the handlers' annotations,
//!   served at `/openapi.json` with Swagger UI at `/docs` (assets vendored at build
//!   time, nothing fetched at run time); `api/openapi.json` is the committed copy a
//!   test keeps in step.
//!
//! The binary hands the API two hooks through [`AppState`]: [`Wake`] (plan this pool
//! now) and [`MetricsSource`] (the text of `/metrics`); both default to nothing.
//!
//! Hardening applies to every route: a request timeout (503 `timeout`), a 1 MiB body
//! limit, JSON-only bodies with unknown fields rejected, JSON 404 and 405 answers, and
//! `Cache-Control: no-store` on everything (responses may carry tokens) except what
//! sets its own (the dashboard's fingerprint-free static assets).

pub mod auth;
pub mod clients;
pub mod dashboard;
pub mod error;
pub mod machines;
pub mod metrics;
pub mod openapi;
pub mod paths;
pub mod plans;
pub mod pools;
pub mod probes;
pub mod queue;
pub mod request;
pub mod store_inventory;
pub mod webhooks;
pub mod whatif;
pub mod worker_api;
pub mod workers;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use capstan_core::{PoolId, Timestamp};
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

/// Tells the reconcile loop that a pool wants planning now rather than at its next
/// tick: called after a pool is created, edited or marked deleting, and after a queue
/// push whose newest sample has more pending tasks than the pool's idle ready slots.
/// The binary wires it to its loop; [`Wake::none`] (the default) does nothing. It must
/// not block: it runs on the request path.
#[derive(Clone)]
pub struct Wake(Arc<dyn Fn(&PoolId) + Send + Sync>);

impl Wake {
    /// A hook calling `f` with the pool's id.
    pub fn new(f: impl Fn(&PoolId) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A hook that does nothing.
    pub fn none() -> Self {
        Self::new(|_| {})
    }

    /// Wakes the loop for pool `id`.
    pub fn wake(&self, id: &PoolId) {
        (self.0)(id);
    }
}

impl Default for Wake {
    fn default() -> Self {
        Self::none()
    }
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

/// Renders the process's metrics for `GET /metrics`, in the Prometheus text format
/// the route's content type names (the binary passes its registry's encoder);
/// [`MetricsSource::none`] (the default) renders an empty body.
#[derive(Clone)]
pub struct MetricsSource(Arc<dyn Fn() -> String + Send + Sync>);

impl MetricsSource {
    /// A source rendering with `f`.
    pub fn new(f: impl Fn() -> String + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// A source with no metrics.
    pub fn none() -> Self {
        Self::new(String::new)
    }

    /// The metrics now.
    pub fn render(&self) -> String {
        (self.0)()
    }
}

impl Default for MetricsSource {
    fn default() -> Self {
        Self::none()
    }
}

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
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
    /// Asks the reconcile loop to plan a pool now.
    pub wake: Wake,
    /// What `GET /metrics` serves.
    pub metrics: MetricsSource,
    /// The secret GitHub signs webhook deliveries with; `None` turns
    /// `POST /v1/webhooks/github` off.
    pub github_webhook_secret: Option<webhooks::WebhookSecret>,
    /// What-ifs running on this replica (`POST /v1/pools/{pool_id}/simulate`), bounded
    /// because each takes the CPU for seconds.
    pub whatifs: whatif::WhatIfSlots,
    /// Whether the reconcile loop runs service-wide dry (plans recorded, nothing
    /// applied); the dashboard shows it on every pool.
    pub dry_run: bool,
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
            wake: Wake::none(),
            metrics: MetricsSource::none(),
            github_webhook_secret: None,
            whatifs: whatif::WhatIfSlots::default(),
            dry_run: false,
        }
    }

    /// The same state, waking the reconcile loop through `wake`.
    pub fn with_wake(self, wake: Wake) -> Self {
        Self { wake, ..self }
    }

    /// The same state, serving `metrics` at `GET /metrics`.
    pub fn with_metrics(self, metrics: MetricsSource) -> Self {
        Self { metrics, ..self }
    }

    /// The same state, taking GitHub webhooks signed with `secret` (`None`: off).
    pub fn with_github_webhook_secret(self, secret: Option<webhooks::WebhookSecret>) -> Self {
        Self {
            github_webhook_secret: secret,
            ..self
        }
    }

    /// The same state, telling the dashboard the loop runs dry (`true`) or not.
    pub fn with_dry_run(self, dry_run: bool) -> Self {
        Self { dry_run, ..self }
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
        .merge(dashboard::routes())
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
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
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
