//! Who is calling, and may they do this.
//!
//! **Tokens.** An API client holds a bearer token `cap_<id>_<secret>`: `<id>` is 16 hex
//! characters naming the client row, `<secret>` 64 hex characters (32 random bytes).
//! The token is shown once, when the client is created; the store keeps only the
//! SHA-256 of the secret, and a presented secret's digest is compared with it in
//! constant time. Unknown id, wrong secret, expiry and revocation are all 401 with
//! `WWW-Authenticate: Bearer`; the message says which (the id is not a secret). The
//! token itself is never logged.
//!
//! **Scopes.** A scope names an action and a pool-id pattern: `pools:read:ci/*`. A
//! pattern is a pool id, or a prefix followed by `*` matching any suffix (`ci/*`
//! matches `ci/linux` and `ci/arm/large`; `*` alone matches every pool).
//! Two scopes name no pool: `clients:admin` manages API clients, and `metrics:read`
//! reads `GET /metrics`. `*` allows everything. A client can only create (or revoke) a
//! client whose every scope one of its own scopes covers: scope A covers B when A is
//! `*`, when both are `clients:admin` (or both `metrics:read`), or when they name the
//! same action and every pool B matches A matches too.
//!
//! **Last use** is written at most once a minute per client and replica, off the
//! request path, so authentication costs one primary-key read.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use capstan_core::secret::{digest_hex, matches_digest};
use capstan_core::{PoolId, Timestamp};
use store::ClientRecord;

use crate::AppState;
use crate::error::ApiError;

/// How often `last_used` is written per client and replica, in milliseconds.
const LAST_USED_WRITE_INTERVAL_MS: i64 = 60_000;

/// Something a scope can allow on a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read pool specs, errors, audit entries and machines.
    PoolsRead,
    /// Create and change pools; register and remove static machines.
    PoolsWrite,
    /// Delete pools.
    PoolsDelete,
    /// Read workers.
    WorkersRead,
    /// Drain workers.
    WorkersDrain,
    /// Push queue samples.
    QueueWrite,
}

impl Action {
    /// Every action, in documentation order.
    pub const ALL: [Action; 6] = [
        Self::PoolsRead,
        Self::PoolsWrite,
        Self::PoolsDelete,
        Self::WorkersRead,
        Self::WorkersDrain,
        Self::QueueWrite,
    ];

    /// `resource:verb`, as written in scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PoolsRead => "pools:read",
            Self::PoolsWrite => "pools:write",
            Self::PoolsDelete => "pools:delete",
            Self::WorkersRead => "workers:read",
            Self::WorkersDrain => "workers:drain",
            Self::QueueWrite => "queue:write",
        }
    }
}

/// Which pools a scope is about: an exact id, or a prefix (written with a trailing `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPattern {
    text: String,
    prefix: bool,
}

impl PoolPattern {
    /// Whether pool `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        if self.prefix {
            id.starts_with(&self.text)
        } else {
            id == self.text
        }
    }

    /// Whether every pool `other` matches, this matches too.
    pub fn covers(&self, other: &PoolPattern) -> bool {
        if self.prefix {
            other.text.starts_with(&self.text)
        } else {
            !other.prefix && other.text == self.text
        }
    }
}

impl fmt::Display for PoolPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        if self.prefix {
            f.write_str("*")?;
        }
        Ok(())
    }
}

/// One permission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*`: everything.
    All,
    /// `clients:admin`: create, list and revoke API clients.
    ClientsAdmin,
    /// `metrics:read`: read the Prometheus metrics at `/metrics`.
    MetricsRead,
    /// `<action>:<pattern>`.
    Pool(Action, PoolPattern),
}

impl Scope {
    /// The scope a route needs to do `action` on pool `id`.
    pub fn on_pool(action: Action, id: &str) -> Scope {
        Scope::Pool(
            action,
            PoolPattern {
                text: id.to_owned(),
                prefix: false,
            },
        )
    }

    /// Whether holding `self` grants everything `other` grants.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (Scope::ClientsAdmin, Scope::ClientsAdmin) => true,
            (Scope::MetricsRead, Scope::MetricsRead) => true,
            (Scope::Pool(a, p), Scope::Pool(b, q)) => a == b && p.covers(q),
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::ClientsAdmin => f.write_str("clients:admin"),
            Scope::MetricsRead => f.write_str("metrics:read"),
            Scope::Pool(action, pattern) => write!(f, "{}:{pattern}", action.as_str()),
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Scope::All);
        }
        if s == "clients:admin" {
            return Ok(Scope::ClientsAdmin);
        }
        if s == "metrics:read" {
            return Ok(Scope::MetricsRead);
        }
        let expected = || {
            let actions: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            format!(
                "expected \"*\", \"clients:admin\", \"metrics:read\" or ACTION:POOLS with ACTION one of {} and \
                 POOLS a pool id or a prefix ending in '*' (e.g. pools:write:ci/*), got {s:?}",
                actions.join(", ")
            )
        };
        let (action, pattern) = Action::ALL
            .iter()
            .find_map(|a| {
                s.strip_prefix(a.as_str())
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|p| (*a, p))
            })
            .ok_or_else(expected)?;
        let pattern = match pattern.strip_suffix('*') {
            Some(prefix) => {
                let ok = prefix.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '/')
                }) && prefix.len() < capstan_core::id::MAX_ID_LEN;
                if !ok {
                    return Err(format!(
                        "the pattern of {s:?} must be a pool-id prefix (a-z 0-9 - _ /) before its '*'"
                    ));
                }
                PoolPattern {
                    text: prefix.to_owned(),
                    prefix: true,
                }
            }
            None => {
                PoolId::new(pattern).map_err(|e| format!("the pool id in {s:?} {e}"))?;
                PoolPattern {
                    text: pattern.to_owned(),
                    prefix: false,
                }
            }
        };
        Ok(Scope::Pool(action, pattern))
    }
}

/// A freshly minted token and what the store keeps of it.
#[derive(Debug)]
pub struct MintedToken {
    /// The client id (`<id>` of the token).
    pub id: String,
    /// The whole token, `cap_<id>_<secret>`: shown once, never stored.
    pub token: String,
    /// Hex SHA-256 of the secret, for the store.
    pub secret_sha256: String,
}

/// Mints a new client id and secret from the operating system's random source.
pub fn mint_token() -> Result<MintedToken, ApiError> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)
        .and_then(|()| getrandom::getrandom(&mut secret))
        .map_err(|e| ApiError::internal(&e))?;
    let id = hex::encode(id);
    let secret = hex::encode(secret);
    Ok(MintedToken {
        token: format!("cap_{id}_{secret}"),
        secret_sha256: digest_hex(&secret),
        id,
    })
}

/// Splits `cap_<id>_<secret>` into id and secret, checking their shape.
fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix("cap_")?.split_once('_')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(id, 16) && hex(secret, 64)).then_some((id, secret))
}

/// When each client's `last_used` was last written by this replica.
#[derive(Debug, Clone, Default)]
pub struct LastUsed(Arc<Mutex<HashMap<String, i64>>>);

impl LastUsed {
    /// Whether `id`'s last use should be written now (and notes that it will be).
    fn due(&self, id: &str, now: Timestamp) -> bool {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(id) {
            Some(&at) if now.unix_ms() - at < LAST_USED_WRITE_INTERVAL_MS => false,
            _ => {
                map.insert(id.to_owned(), now.unix_ms());
                true
            }
        }
    }
}

/// The authenticated client of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// The actor written to audit entries: `client:<name>:<id>`.
    pub fn actor(&self) -> String {
        format!("client:{}:{}", self.name, self.id)
    }

    /// Whether some held scope covers `scope`.
    pub fn holds(&self, scope: &Scope) -> bool {
        self.scopes.iter().any(|s| s.covers(scope))
    }

    /// Whether the caller may do `action` on pool `id`.
    pub fn may(&self, action: Action, id: &str) -> bool {
        self.holds(&Scope::on_pool(action, id))
    }

    /// 403 unless the caller may do `action` on pool `id`.
    pub fn require(&self, action: Action, id: &str) -> Result<(), ApiError> {
        self.require_scope(&Scope::on_pool(action, id))
    }

    /// 403 naming `scope` unless the caller holds it.
    pub fn require_scope(&self, scope: &Scope) -> Result<(), ApiError> {
        if self.holds(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                scope.to_string(),
                format!(
                    "client {} lacks the scope {scope} this request needs",
                    self.name
                ),
            ))
        }
    }

    /// Whether the caller holds some scope for `action` on at least one pool.
    pub fn may_any(&self, action: Action) -> bool {
        self.scopes
            .iter()
            .any(|s| matches!(s, Scope::All) || matches!(s, Scope::Pool(a, _) if *a == action))
    }
}

/// Parses stored scope strings; a stored scope that no longer parses is an internal
/// error (scopes are validated when a client is created).
pub fn parse_scopes(record: &ClientRecord) -> Result<Vec<Scope>, ApiError> {
    record
        .scopes
        .iter()
        .map(|s| {
            s.parse().map_err(|e: String| {
                ApiError::internal(&format!(
                    "client {}: stored scope unreadable: {e}",
                    record.id
                ))
            })
        })
        .collect()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "this route needs an API token: Authorization: Bearer cap_<id>_<secret>",
            ));
        };
        let value = value.to_str().unwrap_or("");
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::unauthorized(
                    "the Authorization header must be \"Bearer cap_<id>_<secret>\"",
                ));
            }
        };
        authenticate(state, token).await
    }
}

/// The client holding `token` (`cap_<id>_<secret>`), checked as every request's is:
/// shape, digest in constant time, revocation, expiry; records its last use. A worker
/// credential is refused (403). The `/v1` routes reach it through [`Caller`]'s
/// `Authorization` header; the dashboard through its sign-in cookie.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if crate::worker_api::is_worker_credential(token) {
        return Err(ApiError::forbidden(
            "an operator API token (cap_<id>_<secret>)".into(),
            "a worker credential only works on its own worker's heartbeat and interruption routes",
        ));
    }
    let Some((id, secret)) = split_token(token) else {
        return Err(ApiError::unauthorized(
            "malformed token: expected cap_<16 hex>_<64 hex>",
        ));
    };
    let record = state.store.get_client(id).await?;
    let Some(record) = record.filter(|r| matches_digest(secret, &r.secret_sha256)) else {
        return Err(ApiError::unauthorized(format!(
            "token for client {id} is not valid"
        )));
    };
    let now = state.now();
    if let Some(at) = record.revoked_at {
        return Err(ApiError::unauthorized(format!(
            "client {} ({id}) was revoked at {at}",
            record.name
        )));
    }
    if let Some(at) = record.expires_at.filter(|at| *at <= now) {
        return Err(ApiError::unauthorized(format!(
            "client {} ({id}) expired at {at}",
            record.name
        )));
    }
    if state.last_used.due(id, now) {
        let store = state.store.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.touch_client(&id, now).await {
                tracing::warn!(client = %id, error = %e, "cannot record a client's last use");
            }
        });
    }
    Ok(Caller {
        scopes: parse_scopes(&record)?,
        id: record.id,
        name: record.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        s.parse().unwrap()
    }

    #[test]
    fn scopes_parse_and_print_back() {
        for s in [
            "*",
            "clients:admin",
            "metrics:read",
            "pools:read:*",
            "pools:write:ci/*",
            "workers:drain:ci/linux",
            "queue:write:ci/lin*",
        ] {
            assert_eq!(scope(s).to_string(), s);
        }
        for bad in [
            "",
            "pools",
            "pools:read",
            "pools:read:",
            "pools:admin:x",
            "clients:admin:x",
            "metrics:read:x",
            "metrics:write",
            "pools:read:CI",
            "pools:read:c*i",
            "pools:read:ci//x",
        ] {
            assert!(bad.parse::<Scope>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn patterns_match_by_exact_id_or_prefix() {
        let ci = scope("pools:write:ci/*");
        assert!(ci.covers(&Scope::on_pool(Action::PoolsWrite, "ci/linux")));
        assert!(ci.covers(&Scope::on_pool(Action::PoolsWrite, "ci/arm/large")));
        assert!(!ci.covers(&Scope::on_pool(Action::PoolsWrite, "prod/x")));
        assert!(!ci.covers(&Scope::on_pool(Action::PoolsWrite, "ci")));
        assert!(!ci.covers(&Scope::on_pool(Action::PoolsRead, "ci/linux")));
        let exact = scope("pools:read:ci/linux");
        assert!(exact.covers(&Scope::on_pool(Action::PoolsRead, "ci/linux")));
        assert!(!exact.covers(&Scope::on_pool(Action::PoolsRead, "ci/linux2")));
    }

    #[test]
    fn a_scope_covers_only_what_it_grants() {
        // Delegation: what a client may hand on.
        assert!(scope("*").covers(&scope("clients:admin")));
        assert!(scope("*").covers(&scope("pools:write:*")));
        assert!(!scope("pools:write:ci/*").covers(&scope("pools:write:*")));
        assert!(scope("pools:write:ci/*").covers(&scope("pools:write:ci/linux/*")));
        assert!(scope("pools:write:ci/*").covers(&scope("pools:write:ci/linux")));
        assert!(!scope("pools:write:ci/linux").covers(&scope("pools:write:ci/linux*")));
        assert!(!scope("clients:admin").covers(&scope("*")));
        assert!(!scope("pools:read:*").covers(&scope("*")));
        assert!(!scope("clients:admin").covers(&scope("pools:read:x")));
        assert!(scope("*").covers(&scope("metrics:read")));
        assert!(scope("metrics:read").covers(&scope("metrics:read")));
        assert!(!scope("metrics:read").covers(&scope("clients:admin")));
        assert!(!scope("clients:admin").covers(&scope("metrics:read")));
        assert!(!scope("pools:read:*").covers(&scope("metrics:read")));
    }

    #[test]
    fn tokens_have_one_shape_and_their_secret_is_only_hashed() {
        let minted = mint_token().unwrap();
        let (id, secret) = split_token(&minted.token).unwrap();
        assert_eq!(id, minted.id);
        assert!(!minted.secret_sha256.contains(secret));
        assert!(matches_digest(secret, &minted.secret_sha256));
        let mut wrong = secret.to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!matches_digest(&wrong, &minted.secret_sha256));
        for bad in [
            "",
            "cap_",
            "cap_abc_def",
            &minted.token.replace("cap_", "tok_"),
            &format!("{}0", minted.token),
        ] {
            assert!(split_token(bad).is_none(), "{bad:?}");
        }
    }
}
