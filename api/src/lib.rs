//! capstan's HTTP interface (axum).
//!
//! [`router`] builds the whole service from an [`AppState`]; handlers are thin: they
//! call into the store or core and map the result to a response in one place. Tests
//! drive the router in-process with `tower::ServiceExt::oneshot`; the binary binds it
//! to a socket.
//!
//! Routes so far:
//! - `GET /healthz` — liveness *and* store health: 200 when the database answers a
//!   query within two seconds, 503 otherwise.
//! - `GET /readyz` — 200 while the service accepts work; 503 before start-up finished
//!   and once shutdown began (so a load balancer drains it first), or when the store
//!   does not answer.
//!
//! Both are unauthenticated on purpose: probes carry no credentials and the answers
//! reveal nothing but "up" or "down".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use store::Store;

/// How long a health probe waits for the database.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Start-up / shutdown flag for `/readyz`.
    pub readiness: Readiness,
}

/// The service's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Body of the probe responses.
#[derive(Debug, Serialize)]
struct Probe {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

fn probe(code: StatusCode, reason: Option<&'static str>) -> (StatusCode, Json<Probe>) {
    let status = if code.is_success() {
        "ok"
    } else {
        "unavailable"
    };
    (code, Json(Probe { status, reason }))
}

async fn store_answers(store: &Store) -> bool {
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health probe: store error");
            false
        }
        Err(_) => {
            tracing::warn!("health probe: store did not answer within {STORE_PROBE_TIMEOUT:?}");
            false
        }
    }
}

async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if store_answers(&state.store).await {
        probe(StatusCode::OK, None)
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, Some("store not answering"))
    }
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if !state.readiness.get() {
        return probe(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("starting or shutting down"),
        );
    }
    healthz(State(state)).await
}
