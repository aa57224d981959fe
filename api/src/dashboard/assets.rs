//! The dashboard's static files, embedded in the binary at build time (nothing is
//! fetched at run time, no Node runs in `cargo build`): htmx 2 and uPlot 1 as their
//! packages ship them (minified, with their licences beside them), and the
//! dashboard's own script, style sheet and icon.
//!
//! Pages link each file as `/assets/<name>?v=<digest>`, the digest being the start of
//! the SHA-256 of its bytes, so a file's URL changes whenever its bytes do: the
//! answers carry `Cache-Control: public, max-age=31536000, immutable` (a year) and an
//! upgraded server is never hidden behind a stale cache.
//!
//! Updating a vendored file: `cd /tmp && npm pack htmx.org@2 uplot@1`, unpack, and copy
//! `dist/htmx.min.js`, `dist/uPlot.iife.min.js`, `dist/uPlot.min.css` and each
//! package's `LICENSE` over the files here.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// Every file served under `/assets/`.
static ASSETS: [Asset; 8] = [
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/htmx.min.js"),
    },
    Asset {
        name: "htmx.LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("assets/htmx.LICENSE"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("assets/uPlot.LICENSE"),
    },
    Asset {
        name: "dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/dashboard.js"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        bytes: include_bytes!("assets/favicon.svg"),
    },
    Asset {
        name: "dashboard.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/dashboard.css"),
    },
];

/// Each asset's URL with its digest, computed once.
static URLS: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = hex::encode(Sha256::digest(a.bytes));
            (a.name, format!("/assets/{}?v={}", a.name, &digest[..16]))
        })
        .collect()
});

/// The URL pages link asset `name` by (see the module docs).
///
/// # Panics
/// When `name` is not an embedded asset: a typo in the dashboard's own code, caught by
/// every test that renders a page.
pub fn url(name: &str) -> &'static str {
    URLS.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, u)| u.as_str())
        .unwrap_or_else(|| panic!("no embedded asset {name}"))
}

/// `GET /assets/{name}`: the file, with its content type and a year's caching.
pub async fn serve(Path(name): Path<String>) -> Result<Response, ApiError> {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return Err(ApiError::not_found(format!("no asset {name}")));
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(response)
}
