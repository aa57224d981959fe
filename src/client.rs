//! The operator commands' connection to a running `capstan serve`: where the server is,
//! which token to present, and turning HTTP answers into results or readable errors.
//!
//! Settings come from `--server` / `CAPSTAN_SERVER` and `--token` / `CAPSTAN_TOKEN`,
//! which beat the client config file (`--client-config` / `CAPSTAN_CLIENT_CONFIG`, by
//! default `$XDG_CONFIG_HOME/capstan/client.toml` or `~/.config/capstan/client.toml`
//! when it exists; TOML keys `server` and `token`, unknown keys are errors naming the
//! key). The token is never printed or logged: it lives in a [`Secret`] whose `Debug`
//! is redacted and goes out only as the `Authorization` header, which reqwest marks
//! sensitive.
//!
//! Every request runs on a current-thread tokio runtime with a 30 s timeout. A non-2xx
//! answer becomes a [`ServerError`]: its `Display` is the server's `message` followed
//! by one `  <field>: <message>` line per entry of `problems`, so `main` prints
//! `error: <message>` and the problems under it. Callers that react to a status (404
//! on a lookup, 412 on a write) find it with [`server_error`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// Where the server is when nothing says otherwise: `capstan serve`'s default address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A bearer token. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The token itself, for the `Authorization` header only.
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_owned()))
    }
}

/// The connection flags shared by every command that talks to the server.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// URL of the capstan server [default: http://127.0.0.1:8080, or `server` in the
    /// client config file].
    #[arg(
        long,
        env = "CAPSTAN_SERVER",
        value_name = "URL",
        global = true,
        help_heading = "Server connection"
    )]
    pub server: Option<String>,
    /// API token (`cap_...`) sent as a bearer token [default: `token` in the client
    /// config file].
    #[arg(
        long,
        env = "CAPSTAN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        global = true,
        help_heading = "Server connection"
    )]
    pub token: Option<Secret>,
    /// Client config file (TOML: `server`, `token`) [default:
    /// $XDG_CONFIG_HOME/capstan/client.toml or ~/.config/capstan/client.toml, if it
    /// exists]. Flags and environment variables beat it.
    #[arg(
        long,
        env = "CAPSTAN_CLIENT_CONFIG",
        value_name = "FILE",
        global = true,
        help_heading = "Server connection"
    )]
    pub client_config: Option<PathBuf>,
}

/// The contents of the client config file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<Secret>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(s.trim().to_owned()))
    }
}

/// The default client config path, if `$XDG_CONFIG_HOME` or `$HOME` is set.
fn default_client_config() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("capstan").join("client.toml"))
}

impl ClientFile {
    /// Reads and parses `path`; warns when a file holding a token is readable by
    /// group or others.
    fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read client config file {}", path.display()))?;
        // The message and line only: toml's full error quotes the offending line,
        // which may hold the token.
        let file: Self = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            match line {
                Some(line) => anyhow::anyhow!(
                    "client config file {}, line {line}: {}",
                    path.display(),
                    e.message()
                ),
                None => anyhow::anyhow!("client config file {}: {}", path.display(), e.message()),
            }
        })?;
        if file.token.is_some() {
            warn_if_shared(path);
        }
        Ok(file)
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o044 != 0 {
            eprintln!(
                "warning: {} holds an API token but is readable by group or others (mode {mode:o}); run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

impl ClientArgs {
    /// Merges flags/environment with the config file and builds the client.
    pub fn connect(self) -> anyhow::Result<ApiClient> {
        let file = match &self.client_config {
            Some(path) => ClientFile::load(path)?,
            None => match default_client_config().filter(|p| p.exists()) {
                Some(path) => ClientFile::load(&path)?,
                None => ClientFile::default(),
            },
        };
        let server = self
            .server
            .filter(|s| !s.trim().is_empty())
            .or(file.server)
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = self
            .token
            .filter(|t| !t.0.is_empty())
            .or(file.token.filter(|t| !t.0.is_empty()));
        ApiClient::new(&server, token)
    }

    /// Runs `f` with a connected client on a small current-thread runtime.
    pub fn run<T, F, Fut>(self, f: F) -> anyhow::Result<T>
    where
        F: FnOnce(ApiClient) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let client = self.connect()?;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(f(client))
    }
}

/// A 2xx or 304 answer.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The parsed JSON body; `Null` when empty.
    pub body: Value,
}

/// One entry of an error's `problems` list.
#[derive(Debug, Clone, Deserialize)]
pub struct Problem {
    /// Path of the field, e.g. `launch_configs[1].capacity`; may be empty.
    #[serde(default)]
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// A non-2xx answer from the server.
#[derive(Debug)]
pub struct ServerError {
    /// The status code.
    pub status: StatusCode,
    /// The server's message for people.
    pub message: String,
    /// `problems` of a 422, empty otherwise.
    pub problems: Vec<Problem>,
    /// The whole body, for extra fields such as `current_generation`.
    pub body: Value,
    /// Whether the request carried a token (for the hint under a 401).
    pub sent_token: bool,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(scope) = self.body.get("missing_scope").and_then(Value::as_str)
            && !self.message.contains(scope)
        {
            write!(f, " (missing scope {scope})")?;
        }
        for p in &self.problems {
            if p.field.is_empty() {
                write!(f, "\n  {}", p.message)?;
            } else {
                write!(f, "\n  {}: {}", p.field, p.message)?;
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            if self.sent_token {
                write!(
                    f,
                    "\n  (HTTP 401: the server refused the token; check --token / CAPSTAN_TOKEN)"
                )?;
            } else {
                write!(
                    f,
                    "\n  (HTTP 401: no token given; set --token, CAPSTAN_TOKEN or `token` in the client config file)"
                )?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

impl ServerError {
    fn from_response(status: StatusCode, text: &str, sent_token: bool) -> Self {
        let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let message = match body.get("message").and_then(Value::as_str) {
            Some(m) if !m.is_empty() => m.to_owned(),
            _ => {
                let snippet: String = text.trim().chars().take(200).collect();
                if snippet.is_empty() {
                    format!("the server answered {status}")
                } else {
                    format!("the server answered {status}: {snippet}")
                }
            }
        };
        let problems = body
            .get("problems")
            .cloned()
            .and_then(|p| serde_json::from_value(p).ok())
            .unwrap_or_default();
        Self {
            status,
            message,
            problems,
            body,
            sent_token,
        }
    }

    /// `current_generation` of a 412 (None when absent or null).
    pub fn current_generation(&self) -> Option<i64> {
        self.body.get("current_generation").and_then(Value::as_i64)
    }
}

/// The server's error behind `e`, if `e` is one.
pub fn server_error(e: &anyhow::Error) -> Option<&ServerError> {
    e.downcast_ref::<ServerError>()
}

/// Whether `e` is a server answer with this status.
pub fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    server_error(e).is_some_and(|s| s.status == status)
}

/// A client of one capstan server.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

/// An extra request header: `If-Match`, `If-None-Match`.
pub type Header = (HeaderName, String);

impl ApiClient {
    /// A client for the server at `server` (http:// or https://).
    pub fn new(server: &str, token: Option<Secret>) -> anyhow::Result<Self> {
        let base = server.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server: expected a URL such as http://127.0.0.1:8080, got {server:?}");
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("capstan/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { http, base, token })
    }

    /// Sends one request; `path` starts with `/` and is already encoded (see
    /// [`pool_path`] and [`segment`]). Non-2xx answers become [`ServerError`]s.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[Header],
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        self.send_within(method, path, query, headers, body, REQUEST_TIMEOUT)
            .await
    }

    /// [`ApiClient::send`] allowing the request `timeout` instead of 30 s: for routes
    /// that work for long (a what-if), so the server's own 503 `timeout` answer, after
    /// its 30 s, arrives before the client gives up.
    pub async fn send_within(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        headers: &[Header],
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).timeout(timeout);
        if !query.is_empty() {
            req = req.query(query);
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                name.clone(),
                HeaderValue::from_str(value)
                    .with_context(|| format!("bad {name} header value {value:?}"))?,
            );
        }
        req = req.headers(map);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(&method, path, &e, timeout))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| self.transport_error(&method, path, &e, timeout))?;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            let body = if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).with_context(|| {
                    format!(
                        "{method} {path}: the server answered {status} with a body that is not JSON"
                    )
                })?
            };
            Ok(Reply { status, body })
        } else {
            Err(ServerError::from_response(status, &text, self.token.is_some()).into())
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        Ok(self.send(Method::GET, path, query, &[], None).await?.body)
    }

    /// GET a paged list, following `continuation` until it is null; returns all items.
    pub async fn get_all(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let mut q = query.to_vec();
            if let Some(c) = &continuation {
                q.push(("continuation", c.clone()));
            }
            let page = self.get(path, &q).await?;
            match page.get("items") {
                Some(Value::Array(page_items)) => items.extend(page_items.iter().cloned()),
                _ => bail!("GET {path}: the answer has no `items` list"),
            }
            match page.get("continuation") {
                Some(Value::String(c)) if continuation.as_deref() != Some(c.as_str()) => {
                    continuation = Some(c.clone());
                }
                Some(Value::String(_)) => {
                    bail!("GET {path}: the server repeated a continuation token")
                }
                _ => return Ok(items),
            }
        }
    }

    fn transport_error(
        &self,
        method: &Method,
        path: &str,
        e: &reqwest::Error,
        timeout: Duration,
    ) -> anyhow::Error {
        let refused = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused {
            anyhow::anyhow!(
                "cannot reach the capstan server at {}: connection refused (is `capstan serve` running there? set --server or CAPSTAN_SERVER)",
                self.base
            )
        } else if e.is_timeout() {
            anyhow::anyhow!(
                "{method} {path}: the capstan server at {} did not answer within {} s",
                self.base,
                timeout.as_secs()
            )
        } else if e.is_connect() {
            anyhow::anyhow!(
                "cannot reach the capstan server at {}: {}",
                self.base,
                error_chain(e)
            )
        } else {
            anyhow::anyhow!("{method} {path} at {}: {}", self.base, error_chain(e))
        }
    }
}

/// `e` and its sources, joined with `: `. reqwest errors name the URL, never headers.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Percent-encodes one path segment: everything but unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`). `.` and `..` are refused: URL parsing would resolve them.
pub fn segment(what: &str, s: &str) -> anyhow::Result<String> {
    if s.is_empty() || s == "." || s == ".." {
        bail!("{what}: {s:?} is not a valid name");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// `/v1/pools/<id>` with the id's `/` kept raw, as the server accepts; the id is
/// checked locally first, so it never holds anything that needs escaping.
pub fn pool_path(id: &str) -> anyhow::Result<String> {
    let id = capstan_core::PoolId::new(id).map_err(|e| anyhow::anyhow!("pool id {id:?}: {e}"))?;
    Ok(format!("/v1/pools/{id}"))
}

/// `30d`, `12h`, `90m`, `3600s` → seconds (for duration flags).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("expected a number with a unit (30d, 12h, 90m, 3600s), got {s:?}");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(format!("must be more than zero, got {s:?}"));
    }
    n.checked_mul(per)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// An `If-Match` header for a pool generation.
pub fn if_match(generation: i64) -> Header {
    (reqwest::header::IF_MATCH, format!("\"{generation}\""))
}

/// `If-None-Match: *`: create only.
pub fn if_none_match_any() -> Header {
    (reqwest::header::IF_NONE_MATCH, "*".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("6h"), Ok(21_600));
        assert_eq!(parse_duration("35d"), Ok(3_024_000));
        assert_eq!(parse_duration("90m"), Ok(5_400));
        assert_eq!(parse_duration("60s"), Ok(60));
        for bad in ["", "30", "h", "1w", "0s", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_escape_everything_outside_unreserved() {
        assert_eq!(segment("n", "mac-01.lab_x~").unwrap(), "mac-01.lab_x~");
        assert_eq!(segment("n", "a/b c?#%").unwrap(), "a%2Fb%20c%3F%23%25");
        assert!(segment("n", "..").is_err());
        assert!(segment("n", "").is_err());
    }

    #[test]
    fn pool_paths_keep_slashes_and_refuse_bad_ids() {
        assert_eq!(
            pool_path("ci/linux-large").unwrap(),
            "/v1/pools/ci/linux-large"
        );
        assert!(pool_path("../admin").is_err());
        assert!(pool_path("Bad Id").is_err());
    }

    #[test]
    fn server_errors_list_problems_under_the_message() {
        let e = ServerError::from_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"error":"invalid_spec","message":"the spec has 2 problems","problems":[{"field":"max_capacity","message":"must be >= 1"},{"field":"","message":"whole"}]}"#,
            true,
        );
        assert_eq!(
            e.to_string(),
            "the spec has 2 problems\n  max_capacity: must be >= 1\n  whole"
        );
        let e = ServerError::from_response(StatusCode::BAD_GATEWAY, "<html>oops</html>", true);
        assert!(e.to_string().contains("502"), "{e}");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let args = ClientArgs {
            server: None,
            token: Some("cap_0123_secretsecret".parse().unwrap()),
            client_config: None,
        };
        assert!(!format!("{args:?}").contains("secretsecret"));
        let client = ApiClient::new("http://x", args.token).unwrap();
        assert!(!format!("{client:?}").contains("secretsecret"));
    }

    #[test]
    fn config_file_errors_never_quote_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.toml");
        std::fs::write(
            &path,
            "server = \"http://x\"\ntoken = \"cap_secretsecret\" oops\n",
        )
        .unwrap();
        let err = ClientFile::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("secretsecret"), "{err}");
    }

    #[test]
    fn client_files_reject_unknown_keys_by_name() {
        let err =
            toml::from_str::<ClientFile>("server = \"http://x\"\ntokn = \"y\"\n").unwrap_err();
        assert!(err.to_string().contains("tokn"), "{err}");
        let file: ClientFile = toml::from_str("server = \"http://x\"\ntoken = \"t\"\n").unwrap();
        assert_eq!(file.server.as_deref(), Some("http://x"));
    }
}
