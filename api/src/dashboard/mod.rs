//! The web dashboard: server-rendered pages at `/`, for people.
//!
//! Routes (none is in the OpenAPI document; the API is `/v1`):
//! - `GET /signin`, `POST /signin`, `POST /signout`: [`session`]. Signing in checks an
//!   API token and keeps it in an HttpOnly, SameSite=Strict cookie that only these
//!   routes read.
//! - `GET /`: the pools the client may read, one row each: capacity by state,
//!   pending tasks, the plan's target, cost per hour, errors of the last hour, dry-run
//!   and deleting badges. `GET /pools.html` is the table's inside, which htmx polls
//!   every 5 s.
//! - `GET /pools/<id>` (`GET /pools` redirects to `/`): one pool: a uPlot chart, the latest plan in words, workers,
//!   errors. `GET /pools/<id>/panels.html` is what htmx polls; `GET
//!   /pools/<id>/chart.json?window=1h|1d|1w` is what the chart fetches ([`chart`]).
//!   The id goes into the path as it is, slashes and all (`/pools/ci/linux-large`), or
//!   percent-encoded (`/pools/ci%2Flinux-large`); the two suffixes hold a `.`, which no
//!   pool id does, so they never collide with an id.
//! - `GET /assets/<name>`: the embedded scripts and styles ([`assets`]).
//!
//! Without a valid cookie, pages redirect to `/signin`, and fragments and chart data
//! answer 401 (with `HX-Redirect: /signin` for htmx). Every dashboard answer carries
//! `Content-Security-Policy: default-src 'self'` (no inline script or style: the
//! behaviour is in `assets/dashboard.js`), `frame-ancestors 'none'` with
//! `X-Frame-Options: DENY`, and `Referrer-Policy: no-referrer`. Every interpolated
//! string is escaped ([`html::Esc`]).

pub mod assets;
pub mod chart;
pub mod html;
pub mod pages;
pub mod session;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::AppState;
use crate::error::ApiError;
use crate::request::Query;

/// The Content-Security-Policy of every dashboard answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes, with their security headers.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/pools.html", get(pools_fragment))
        .route("/pools", get(|| async { Redirect::to("/") }))
        .route("/pools/{*rest}", get(pool_route))
        .route("/signin", get(session::signin_page).post(session::signin))
        .route("/signout", post(session::signout))
        .route("/assets/{name}", get(assets::serve))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An HTML answer.
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A failure on a page, as a page (the signed-in client's header kept).
fn error_page(e: &ApiError, who: Option<&crate::auth::Caller>) -> Response {
    let title = e.status().canonical_reason().unwrap_or("Error");
    html_response(
        e.status(),
        html::page(
            title,
            who,
            &format!(
                "<section class=\"failure\"><h1>{}</h1><p id=\"error\">{}</p><p><a href=\"/\">Back to the pools</a></p></section>",
                html::Esc(title),
                html::Esc(&e.body().message)
            ),
        ),
    )
}

/// `GET /`.
async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match session::viewer(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.redirect(),
    };
    pages::pools_page(&state, &caller)
        .await
        .unwrap_or_else(|e| error_page(&e, Some(&caller)))
}

/// `GET /pools.html`.
async fn pools_fragment(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let caller = match session::viewer(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return e.unauthorized(),
    };
    match pages::pools_table(&state, &caller).await {
        Ok(table) => html_response(StatusCode::OK, table),
        Err(e) => e.into_response(),
    }
}

/// What a `/pools/...` path asks for.
#[derive(Debug, PartialEq, Eq)]
enum PoolView<'a> {
    Page(&'a str),
    Panels(&'a str),
    Chart(&'a str),
}

fn pool_view(rest: &str) -> PoolView<'_> {
    if let Some(id) = rest.strip_suffix("/chart.json") {
        PoolView::Chart(id)
    } else if let Some(id) = rest.strip_suffix("/panels.html") {
        PoolView::Panels(id)
    } else {
        PoolView::Page(rest)
    }
}

/// `GET /pools/<id>`, `/pools/<id>/panels.html`, `/pools/<id>/chart.json`.
async fn pool_route(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(rest): Path<String>,
    query: Result<Query<chart::ChartQuery>, ApiError>,
) -> Response {
    let view = pool_view(&rest);
    let caller = match session::viewer(&state, &headers).await {
        Ok(c) => c,
        Err(e) => {
            return match view {
                PoolView::Page(_) => e.redirect(),
                _ => e.unauthorized(),
            };
        }
    };
    match view {
        PoolView::Page(id) => {
            let result = async {
                let record = pages::readable_pool(&state, &caller, id).await?;
                pages::pool_page(&state, &caller, &record).await
            }
            .await;
            result.unwrap_or_else(|e| error_page(&e, Some(&caller)))
        }
        PoolView::Panels(id) => {
            let result = async {
                let record = pages::readable_pool(&state, &caller, id).await?;
                pages::pool_panels(&state, &caller, &record).await
            }
            .await;
            match result {
                Ok(html) => html_response(StatusCode::OK, html),
                Err(e) => e.into_response(),
            }
        }
        PoolView::Chart(id) => {
            let result = async {
                let Query(q) = query?;
                let record = pages::readable_pool(&state, &caller, id).await?;
                chart::chart(&state, &record.spec.id, q).await
            }
            .await;
            match result {
                Ok(data) => Json(data).into_response(),
                Err(e) => e.into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_paths_split_into_the_id_and_what_is_asked() {
        assert_eq!(pool_view("ci/linux"), PoolView::Page("ci/linux"));
        assert_eq!(
            pool_view("ci/linux/chart.json"),
            PoolView::Chart("ci/linux")
        );
        assert_eq!(pool_view("a/b/c/panels.html"), PoolView::Panels("a/b/c"));
        // A pool whose last segment merely looks similar is a page.
        assert_eq!(pool_view("ci/chart"), PoolView::Page("ci/chart"));
    }
}
