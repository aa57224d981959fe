//! Reading requests strictly: JSON bodies, query strings, preconditions, pagination.
//!
//! - [`JsonBody`] accepts only `application/json` (or `+json`) bodies up to the
//!   router's limit (1 MiB): another content type is 415, a larger body 413, malformed
//!   JSON 400 with line and column. [`decode`] then builds a typed value, rejecting
//!   unknown fields, with a 422 that names the field.
//! - [`Query`] is axum's query extractor with its errors turned into JSON 400s.
//! - [`Preconditions`] reads `If-Match` / `If-None-Match`: pools carry their generation
//!   as a strong ETag (`"3"`), and every write to an existing pool must name the
//!   generation it was based on.
//! - [`Page`] and [`Continuation`]: `limit` plus an opaque token that resumes after the
//!   last item of the previous page.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use capstan_core::FieldError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ApiError;

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A JSON request body, parsed but not yet typed.
#[derive(Debug)]
pub struct JsonBody(pub Value);

/// Whether `content_type` is JSON (`application/json`, `application/merge-patch+json`,
/// any `+json`), ignoring parameters such as `charset`.
fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !is_json(&content_type) {
            return Err(ApiError::unsupported_media_type(
                if content_type.is_empty() {
                    "the body must be JSON: set Content-Type: application/json".to_owned()
                } else {
                    format!(
                        "the body must be JSON (Content-Type: application/json), got {content_type:?}"
                    )
                },
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::payload_too_large(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes (1 MiB), or could not be read"
            )),
            other => ApiError::bad_request(other.body_text()),
        })?;
        if bytes.is_empty() {
            return Err(ApiError::invalid_json(
                "the body is empty; expected a JSON document",
            ));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid_json(format!("the body is not valid JSON: {e}")))
    }
}

impl JsonBody {
    /// Reads the body of `req` (for handlers that check the caller's scope before
    /// looking at the body).
    pub async fn read(req: Request) -> Result<Self, ApiError> {
        Self::from_request(req, &()).await
    }
}

/// Builds a `T` from a JSON value; a wrong or unknown field is a 422 naming it.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    decode_at(value, "").map_err(|e| ApiError::invalid("invalid_request", vec![e]))
}

/// Builds a `T` from the JSON value found at `path` of a body (`samples[3]`), so that
/// a caller decoding the elements of a list one by one can report a problem in each;
/// the problem's field is `path` joined with the path inside the value.
pub fn decode_at<T: DeserializeOwned>(value: Value, path: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let field = match (path.is_empty(), inner == ".") {
            (_, true) => path.to_owned(),
            (true, false) => inner,
            (false, false) => format!("{path}.{inner}"),
        };
        FieldError {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// axum's `Query`, answering a bad query string with a JSON 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// `If-Match` / `If-None-Match` as they apply to a pool's generation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Preconditions {
    /// Generations named by `If-Match` (any of them may match).
    pub if_match: Option<Vec<i64>>,
    /// `If-None-Match: *`: only if the pool does not exist.
    pub if_none_match_any: bool,
    /// Generations named by `If-None-Match` (for a conditional GET).
    pub if_none_match: Vec<i64>,
}

/// Parses a list of entity tags holding generations: `"3"`, `W/"3"`, `"3", "4"`.
fn generations(header_name: &str, value: &str) -> Result<Vec<i64>, ApiError> {
    value
        .split(',')
        .map(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            tag.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{header_name}: expected the pool's generation as an entity tag such as \"3\" (with the quotes), got {value:?}"
                    ))
                })
        })
        .collect()
}

impl Preconditions {
    /// Reads the two headers; a malformed one is a 400 naming it.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
            headers
                .get(&name)
                .map(|v| {
                    v.to_str().map(str::to_owned).map_err(|_| {
                        ApiError::bad_request(format!("{name}: not a valid header value"))
                    })
                })
                .transpose()
        };
        let mut out = Preconditions::default();
        if let Some(v) = text(header::IF_MATCH)? {
            if v.trim() == "*" {
                return Err(ApiError::bad_request(
                    "If-Match: \"*\" would overwrite changes you have not seen; name the generation you read, e.g. If-Match: \"3\"",
                ));
            }
            out.if_match = Some(generations("If-Match", &v)?);
        }
        if let Some(v) = text(header::IF_NONE_MATCH)? {
            if v.trim() == "*" {
                out.if_none_match_any = true;
            } else {
                out.if_none_match = generations("If-None-Match", &v)?;
            }
        }
        Ok(out)
    }
}

/// The `ETag` header value for a generation.
pub fn etag(generation: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{generation}\""))
        .expect("digits and quotes are a valid header")
}

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1000;

/// The position after the last item of a page, sealed into an opaque token so clients
/// do not build their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ContinuationToken {
    /// Format version.
    v: u8,
    /// The key of the last item returned.
    after: String,
}

/// Turns the key of the last item of a page into the `continuation` the client sends
/// back for the next page.
pub fn continuation(after: &str) -> String {
    let token = ContinuationToken {
        v: 1,
        after: after.to_owned(),
    };
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
}

/// Reads a `continuation` back into the key to resume after (an empty one is no
/// continuation: the first page).
pub fn resume_after(token: &str) -> Result<Option<String>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ApiError::bad_request(
            "continuation: not a token this server issued; pass the `continuation` of the previous page unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let token: ContinuationToken = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if token.v != 1 {
        return Err(bad());
    }
    Ok(Some(token.after))
}

/// Checks a `limit` query parameter.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit: must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entity_tags_name_generations() {
        assert_eq!(generations("If-Match", "\"3\"").unwrap(), [3]);
        assert_eq!(generations("If-Match", "W/\"3\", \"4\"").unwrap(), [3, 4]);
        for bad in ["3", "\"x\"", "", "\"3"] {
            let e = generations("If-Match", bad).unwrap_err();
            assert!(e.body().message.starts_with("If-Match:"), "{bad:?}");
        }
    }

    #[test]
    fn continuations_round_trip_and_refuse_forgeries() {
        assert_eq!(
            resume_after(&continuation("ci/linux")).unwrap().as_deref(),
            Some("ci/linux")
        );
        assert_eq!(resume_after("").unwrap(), None);
        assert!(resume_after("not-a-token").is_err());
        assert!(resume_after(&URL_SAFE_NO_PAD.encode(b"{\"v\":2,\"after\":\"x\"}")).is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
        assert!(!is_json("application/jsonx"));
    }
}
