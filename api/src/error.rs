//! The one mapping from failures to HTTP responses.
//!
//! Every error the API answers has the body [`ErrorBody`]: a stable machine-readable
//! `error` code, a sentence for people, and extra fields where they help the client act
//! (`problems` for invalid input, `missing_scope` for a 403, `current_generation` for a
//! 412). Client mistakes say exactly what was wrong; store and other internal failures
//! are logged with their cause and answered with a generic 500 (or 503 while the
//! database does not answer), so nothing internal leaks.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use capstan_core::FieldError;
use serde::Serialize;
use store::StoreError;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `bad_request`, `invalid_json`, `unauthorized`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `not_leased`,
    /// `precondition_failed`, `payload_too_large`, `unsupported_media_type`,
    /// `invalid_spec`, `invalid_request`, `no_launch_configs`, `no_history`,
    /// `precondition_required`, `timeout`, `busy`, `unavailable`, `internal`.
    pub error: String,
    /// What went wrong and what is expected, for people.
    pub message: String,
    /// For 422: every problem found, each naming its field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<FieldError>>,
    /// For 403: the scope the request needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_scope: Option<String>,
    /// For 412: the pool's generation now (null when the pool does not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_generation: Option<Option<i64>>,
}

/// A failed request: status plus [`ErrorBody`].
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    // Boxed: handlers return `Result<_, ApiError>`, and the error stays small.
    body: Box<ErrorBody>,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ErrorBody {
                error: code.to_owned(),
                message: message.into(),
                problems: None,
                missing_scope: None,
                current_generation: None,
            }),
            retry_after_s: None,
        }
    }

    /// 400: a query parameter, header or path segment is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 409 `not_leased`: a static machine registered but no worker wants it now;
    /// `Retry-After` says when to ask again.
    pub fn not_leased(retry_after_s: u64, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::CONFLICT, "not_leased", message);
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 400: the body is not JSON.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// 401: no token, or one that is unknown, wrong, expired or revoked.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token is valid but lacks `scope`.
    pub fn forbidden(scope: String, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "forbidden", message);
        e.body.missing_scope = Some(scope);
        e
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 409: the request is well-formed but the resource's state refuses it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 412: `If-Match` / `If-None-Match` did not hold; `current` is the generation now.
    pub fn precondition_failed(current: Option<i64>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        );
        e.body.current_generation = Some(current);
        e
    }

    /// 428: a write to an existing pool without `If-Match`.
    pub fn precondition_required(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            message,
        )
    }

    /// 413.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// 415.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        )
    }

    /// 422 with every problem; `code` is `invalid_spec` for pool specs and
    /// `invalid_request` for other bodies.
    pub fn invalid(code: &str, problems: Vec<FieldError>) -> Self {
        let message = match problems.len() {
            1 => format!("1 problem: {}", problems[0]),
            n => format!("{n} problems; see `problems`"),
        };
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message);
        e.body.problems = Some(problems);
        e
    }

    /// 422 about one field of a request body.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::invalid(
            "invalid_request",
            vec![FieldError {
                field: field.into(),
                message: message.into(),
            }],
        )
    }

    /// 422 with a code of its own and no field list: the request is well-formed but
    /// what it asks about cannot be answered (`no_history`: a what-if on a pool without
    /// the history to replay).
    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// 503 `busy`: the server runs as much of this kind of work as it takes; retry
    /// after `retry_after_s` seconds (sent as `Retry-After`).
    pub fn busy(retry_after_s: u64, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message);
        e.retry_after_s = Some(retry_after_s);
        e
    }

    /// 503: the request took longer than the server allows.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
    }

    /// 500: logged here with its cause; the client learns nothing internal.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error answering a request");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body.
    pub fn body(&self) -> &ErrorBody {
        &self.body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(*self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"capstan\""),
            );
        }
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

/// SQLSTATE 22021, `character_not_in_repertoire`: PostgreSQL's answer to text holding
/// a NUL byte.
const POSTGRES_CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PoolNotFound(id) => Self::not_found(format!("no pool {id}")),
            StoreError::PoolExists(id) => Self::precondition_failed(
                None,
                format!("pool {id} was created concurrently; read it and retry with If-Match"),
            ),
            StoreError::GenerationConflict {
                id,
                expected,
                current,
            } => Self::precondition_failed(
                Some(current),
                format!(
                    "pool {id} changed: If-Match names generation {expected}, current is {current}; nothing applied"
                ),
            ),
            StoreError::PoolDeleting(id) => Self::conflict(format!(
                "pool {id} is being deleted (its workers drain); it takes no more changes"
            )),
            StoreError::WorkerNotFound(id) => Self::not_found(format!("no worker {id}")),
            StoreError::ClientNotFound(id) => Self::not_found(format!("no client {id}")),
            e @ (StoreError::WorkerExists(_)
            | StoreError::RegistrationUsed(_)
            | StoreError::Transition(_)
            | StoreError::WorkerConflict(_)) => Self::conflict(e.to_string()),
            // PostgreSQL text cannot hold NUL: a request carrying one (a path segment,
            // a query parameter, a continuation) is the client's mistake.
            StoreError::Database(sqlx::Error::Database(e))
                if e.code().as_deref() == Some(POSTGRES_CHARACTER_NOT_IN_REPERTOIRE) =>
            {
                Self::bad_request(
                    "the request holds a NUL character (\\u0000, %00), which no name, id or \
                     token contains; remove it",
                )
            }
            StoreError::Database(sqlx_error @ (sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))) => {
                tracing::error!(error = %sqlx_error, "store unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the store is not answering; retry shortly",
                )
            }
            other => Self::internal(&other),
        }
    }
}

/// Fallback for routes that do not exist: 404 as JSON.
pub async fn no_such_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

/// Fallback for a known route with the wrong method: 405 as JSON.
pub async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::method_not_allowed(format!("{} does not answer {method}", uri.path()))
}
