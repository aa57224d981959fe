//! Signing in to the dashboard with an API token.
//!
//! **The cookie holds the token itself**: `POST /signin` checks the token exactly as a
//! `/v1` request's is ([`auth::authenticate`]: shape, SHA-256 digest compared in
//! constant time, revocation, expiry), then sets `capstan_session=<token>` with
//! `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page sends it),
//! `Path=/`, `Max-Age` of [`SESSION_MAX_AGE_S`] and `Secure` when the request came over
//! HTTPS (directly, or `X-Forwarded-Proto: https` from a proxy). Every dashboard
//! request checks the token again, so revoking the client (or its expiry) ends the
//! session at once, and the server keeps no session state of its own. Why not a
//! separate session id: it would need a table, its own expiry and revocation, and
//! would still have to follow the client's; the token in an HttpOnly cookie is as
//! exposed as the token in the operator's own shell history, and no more.
//!
//! **Only the dashboard reads the cookie.** The `/v1` routes authenticate through
//! [`auth::Caller`], which reads the `Authorization` header alone, so the API stays
//! bearer-only and a browser's cookie can never call it (no CSRF on the API).
//!
//! Worker credentials (`capw_…`) cannot sign in. A cross-site form post (the browser's
//! `Sec-Fetch-Site: cross-site`) to `/signin` or `/signout` is refused.

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::html::{Esc, page};
use crate::AppState;
use crate::auth::{self, Caller};
use crate::error::ApiError;

/// The cookie's name.
pub const COOKIE: &str = "capstan_session";

/// How long a browser keeps the cookie: 12 hours, a working day. The client's own
/// expiry and revocation end a session sooner.
pub const SESSION_MAX_AGE_S: u32 = 12 * 3600;

/// The session token a request carries, if any.
pub fn token_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Why a request is not signed in.
#[derive(Debug)]
pub struct NotSignedIn {
    /// Whether it carried a cookie (expired, revoked or bad): the answer clears it.
    had_cookie: bool,
}

impl NotSignedIn {
    /// The answer for a page: to the sign-in form.
    pub fn redirect(&self) -> Response {
        let target = if self.had_cookie {
            "/signin?ended=1"
        } else {
            "/signin"
        };
        let mut r = Redirect::to(target).into_response();
        if self.had_cookie {
            r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
        }
        r
    }

    /// The answer for a fragment or the chart data: 401, and `HX-Redirect` so htmx
    /// takes the browser to the sign-in form.
    pub fn unauthorized(&self) -> Response {
        let mut r = ApiError::unauthorized(
            "sign in to the dashboard first: POST /signin with an API token",
        )
        .into_response();
        r.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/signin?ended=1"));
        r
    }
}

/// The client signed in on this request, checked now.
pub async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Caller, NotSignedIn> {
    let Some(token) = token_of(headers) else {
        return Err(NotSignedIn { had_cookie: false });
    };
    auth::authenticate(state, token)
        .await
        .map_err(|_| NotSignedIn { had_cookie: true })
}

fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| {
            p.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("https")
        })
        || headers
            .get("forwarded")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"))
}

fn set_cookie(token: &str, secure: bool) -> Result<HeaderValue, ApiError> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_MAX_AGE_S}{secure}"
    ))
    .map_err(|e| ApiError::internal(&e))
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("capstan_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Whether the browser says the request comes from another site's page.
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// The sign-in page, with `error` (plain text) under the form when given.
fn form(error: Option<&str>, notice: Option<&str>) -> String {
    let notice = notice
        .map(|n| format!("<p class=\"notice\">{}</p>", Esc(n)))
        .unwrap_or_default();
    let error = error
        .map(|e| {
            format!(
                "<p id=\"signin-error\" class=\"error\" role=\"alert\">{}</p>",
                Esc(e)
            )
        })
        .unwrap_or_default();
    page(
        "Sign in",
        None,
        &format!(
            "<section class=\"signin\"><h1>Sign in</h1>{notice}\
             <form id=\"signin\" method=\"post\" action=\"/signin\">\
             <label for=\"token\">API token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"current-password\" \
             placeholder=\"cap_…\" required autofocus>\
             <button type=\"submit\">Sign in</button></form>{error}\
             <p class=\"hint\">Use an API client's token (<code>cap_&lt;id&gt;_&lt;secret&gt;</code>, from \
             <code>capstan clients create</code>). The dashboard shows what the client's read scopes \
             (<code>pools:read:…</code>, <code>workers:read:…</code>) allow, and keeps the token in an \
             HttpOnly cookie for {} hours; revoking the client signs it out.</p></section>",
            SESSION_MAX_AGE_S / 3600
        ),
    )
}

/// `GET /signin`: the form (or, already signed in, the pools page).
pub async fn signin_page(State(state): State<AppState>, headers: HeaderMap, uri: Uri) -> Response {
    if viewer(&state, &headers).await.is_ok() {
        return Redirect::to("/").into_response();
    }
    // `?ended=1`: a session just ended (revoked, expired, timed out).
    let ended = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "ended=1"));
    let notice = ended.then_some(
        "Your session ended (the client was revoked or expired, or the cookie timed out). Sign in again.",
    );
    super::html_response(StatusCode::OK, form(None, notice))
}

/// The sign-in form's body.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    /// The API token.
    token: String,
}

/// `POST /signin`: checks the token, sets the cookie, redirects to `/`. A bad token
/// answers the form again (401) with the reason in `#signin-error` and sets nothing.
pub async fn signin(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    if cross_site(&headers) {
        return super::html_response(
            StatusCode::FORBIDDEN,
            form(Some("sign-in from another site's page is refused"), None),
        );
    }
    let refuse =
        |message: &str| super::html_response(StatusCode::UNAUTHORIZED, form(Some(message), None));
    let token = match &body {
        Ok(Form(f)) => f.token.trim(),
        Err(_) => {
            return super::html_response(
                StatusCode::BAD_REQUEST,
                form(
                    Some(
                        "token: expected a form field named token (application/x-www-form-urlencoded)",
                    ),
                    None,
                ),
            );
        }
    };
    if token.is_empty() {
        return refuse("token: enter an API token, cap_<id>_<secret>");
    }
    if crate::worker_api::is_worker_credential(token) {
        return refuse(
            "token: this is a worker credential (capw_…), which cannot sign in; use an API client's token (cap_…)",
        );
    }
    match auth::authenticate(&state, token).await {
        Ok(_) => match set_cookie(token, is_https(&headers)) {
            Ok(cookie) => {
                let mut r = Redirect::to("/").into_response();
                r.headers_mut().insert(header::SET_COOKIE, cookie);
                r
            }
            Err(e) => e.into_response(),
        },
        Err(e) if e.status() == StatusCode::UNAUTHORIZED || e.status() == StatusCode::FORBIDDEN => {
            refuse(&format!("token: {}", e.body().message))
        }
        Err(e) => e.into_response(),
    }
}

/// `POST /signout`: clears the cookie, back to the form.
pub async fn signout(headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return super::html_response(
            StatusCode::FORBIDDEN,
            form(Some("sign-out from another site's page is refused"), None),
        );
    }
    let mut r = Redirect::to("/signin").into_response();
    r.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h), None);
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; capstan_session=cap_x_y; b=2"),
        );
        assert_eq!(token_of(&h), Some("cap_x_y"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("xcapstan_session=no"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("capstan_session="));
        assert_eq!(token_of(&h), None);
    }
}
