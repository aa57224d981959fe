//! Pool ids in paths.
//!
//! Pool ids hold `/` (`ci/linux-large`), and an operator types them as they are:
//! `curl .../v1/pools/ci/linux-large/workers`. The router matches one segment per
//! parameter, so before routing [`encode_pool_id`] rewrites the pool-id part of a
//! `/v1/pools/...` path into one percent-encoded segment
//! (`/v1/pools/ci%2Flinux-large/workers`); the `Path` extractor decodes it back. An id
//! sent already encoded passes through unchanged.
//!
//! Which part is the id: everything after `/v1/pools/`, except a last segment that
//! names a sub-resource (`workers`, `errors`, ...). Pool ids may not end in such a
//! segment ([`capstan_core::id::RESERVED_LAST_SEGMENTS`]), so the split is never
//! ambiguous.

use axum::extract::Request;
use axum::http::Uri;
use capstan_core::id::RESERVED_LAST_SEGMENTS;

const POOLS: &str = "/v1/pools/";

/// The path with the pool id made one segment (unchanged when it already is one, or
/// when the path is not under `/v1/pools/`).
pub fn rewrite(path: &str) -> Option<String> {
    let rest = path.strip_prefix(POOLS)?;
    if !rest.contains('/') || rest.ends_with('/') {
        return None;
    }
    let (id, suffix) = match rest.rsplit_once('/') {
        Some((id, last)) if RESERVED_LAST_SEGMENTS.contains(&last) => (id, Some(last)),
        _ => (rest, None),
    };
    if !id.contains('/') {
        return None;
    }
    let mut out = format!("{POOLS}{}", id.replace('/', "%2F"));
    if let Some(suffix) = suffix {
        out.push('/');
        out.push_str(suffix);
    }
    Some(out)
}

/// Rewrites the request's URI as [`rewrite`] says (query string kept).
pub fn encode_pool_id(mut req: Request) -> Request {
    let uri = req.uri();
    if let Some(path) = rewrite(uri.path()) {
        let path_and_query = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = uri.clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(new) = Uri::from_parts(parts) {
                *req.uri_mut() = new;
            }
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn pool_ids_become_one_segment() {
        assert_eq!(
            rewrite("/v1/pools/ci/linux-large").as_deref(),
            Some("/v1/pools/ci%2Flinux-large")
        );
        assert_eq!(
            rewrite("/v1/pools/ci/linux/large/workers").as_deref(),
            Some("/v1/pools/ci%2Flinux%2Flarge/workers")
        );
        for sub in ["queue", "plan", "forecast", "metrics"] {
            assert_eq!(
                rewrite(&format!("/v1/pools/ci/linux/{sub}")),
                Some(format!("/v1/pools/ci%2Flinux/{sub}"))
            );
            assert_eq!(rewrite(&format!("/v1/pools/{sub}/{sub}")), None);
        }
        // One-segment ids, sub-resources of them, and encoded ids need nothing.
        assert_eq!(rewrite("/v1/pools/linux"), None);
        assert_eq!(rewrite("/v1/pools/linux/workers"), None);
        assert_eq!(rewrite("/v1/pools/ci%2Flinux/errors"), None);
        assert_eq!(rewrite("/v1/pools"), None);
        assert_eq!(rewrite("/v1/workers/w1/drain"), None);
        // A trailing slash is not an id; the router answers 404.
        assert_eq!(rewrite("/v1/pools/ci/"), None);
    }
}
