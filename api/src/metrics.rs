//! `GET /metrics`: the process's metrics in the Prometheus text format 0.0.4 (what
//! Prometheus scrapes and `promtool check metrics` reads), rendered by the binary's
//! [`crate::MetricsSource`].
//!
//! Metrics name pools and replicas, so the route is not open like the probes: it needs
//! a bearer token with the scope `metrics:read` (or `*`), as a scraper's
//! `authorization` setting sends it.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::auth::{Caller, Scope};
use crate::error::{ApiError, ErrorBody};

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics
///
/// The process's metrics in the Prometheus text format 0.0.4. Needs `metrics:read`.
#[utoipa::path(
    get, path = "/metrics", tag = "metrics",
    responses(
        (status = 200, description = "The metrics", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing metrics:read", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require_scope(&Scope::MetricsRead)?;
    let mut response = (StatusCode::OK, state.metrics.render()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}
