//! Probes, unauthenticated on purpose: they carry no credentials and the answers reveal
//! nothing but "up" or "down".
//!
//! - `GET /healthz`: liveness *and* store health: 200 when the database answers a
//!   query within two seconds, 503 otherwise.
//! - `GET /readyz`: 200 while the service accepts work; 503 before start-up finished and
//!   once shutdown began (so a load balancer drains it first), or when the store does
//!   not answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use store::Store;
use utoipa::ToSchema;

use crate::AppState;

/// How long a health probe waits for the database.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Body of the probe responses.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok` or `unavailable`.
    status: &'static str,
    /// Why not ok.
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

/// Liveness and store health
#[utoipa::path(
    get, path = "/healthz", tag = "probes",
    responses(
        (status = 200, description = "Up, and the store answers", body = Probe),
        (status = 503, description = "The store does not answer", body = Probe),
    )
)]
pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if store_answers(&state.store).await {
        probe(StatusCode::OK, None)
    } else {
        probe(StatusCode::SERVICE_UNAVAILABLE, Some("store not answering"))
    }
}

/// Readiness
#[utoipa::path(
    get, path = "/readyz", tag = "probes",
    responses(
        (status = 200, description = "Taking traffic", body = Probe),
        (status = 503, description = "Starting, shutting down, or the store does not answer", body = Probe),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    if !state.readiness.get() {
        return probe(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("starting or shutting down"),
        );
    }
    healthz(State(state)).await
}
