//! Persistence for capstan, over SQLite (the embedded default) and PostgreSQL
//! (production, several replicas).
//!
//! One concrete [`Store`] type serves both backends: each method's SQL is written once
//! in the dialect both understand (`$1` placeholders, `ON CONFLICT`, `RETURNING`) and
//! the `on_backend!` macro expands it against whichever pool is open. The queries are
//! runtime strings, not compile-time checked (`sqlx::query!` would need a live database
//! of each kind at build time); what checks them is the one test suite
//! (`tests/store.rs`) that runs every operation against both databases. Schema changes
//! are migrations under `migrations/{sqlite,postgres}/`, applied at start-up.
//!
//! Tables:
//! - `pools`: the spec as JSON plus a `generation` bumped on every change. Updates are
//!   compare-and-swap on the generation ([`Store::update_pool`]), so two operators
//!   cannot silently overwrite each other. Lease columns let one replica at a time
//!   reconcile a pool, with a fencing token checked on every write the holder makes
//!   ([`Store::acquire_leases`], [`Fence`]).
//! - `workers`: one row per machine, with its state; state changes are
//!   compare-and-swap on the state and go through [`capstan_core::Worker::transition`].
//! - `queue_samples`: the demand time series per pool, with retention.
//! - `pool_status` and `plan_log`: each pool's latest plan and forecast (what the API
//!   and the dashboard show, whichever replica planned), and the plans that acted.
//! - `pool_series`: one point per pool and reconcile round (capacity by state, target,
//!   forecast, queue, cost), what the dashboard's chart draws ([`series`]).
//! - `pool_errors`: deduplicated (same pool, launch config, kind and message bump a
//!   count and the last-seen time).
//! - `audit_log`: who changed which pool when, with old and new generations.
//! - `api_clients`: API clients with their scopes, expiry, revocation and last use;
//!   only a SHA-256 of each bearer token's secret is kept ([`clients`]).
//! - `launch_ledger` and `static_machines`: what the provider plugins persist (which
//!   idempotency token created which instance; operator-owned machines, with only a
//!   hash of each machine's secret), see [`providers_state`].
//!
//! All times are stored as Unix milliseconds; callers pass `now` in, so tests and the
//! simulator control the clock.

mod audit;
pub mod clients;
pub mod github_jobs;
pub mod history;
mod idle_periods;
mod leases;
mod pool_errors;
mod pools;
pub mod providers_state;
mod queue_samples;
#[cfg(feature = "test-support")]
pub mod scratch;
pub mod series;
mod status;
mod worker_auth;
mod workers;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use audit::{AuditAction, AuditEntry};
pub use clients::ClientRecord;
pub use idle_periods::IdlePeriod;
pub use leases::{Fence, Lease, WakeListener};
pub use pool_errors::PoolError;
pub use pools::{DeleteOutcome, PoolFilter, PoolRecord};
pub use providers_state::{LedgerRow, StaticMachineRow};
pub use series::{PoolCapacity, PoolPoint, SeriesBucket};
pub use status::{PlanLogEntry, PoolStatus};
pub use worker_auth::{RegistrationUse, TaskRun, WorkerSecrets};

/// Expands `$body` once per backend with `$pool` bound to that backend's connection
/// pool, so one piece of SQL serves SQLite and PostgreSQL (the Rust around it is
/// compiled for both; the SQL itself is checked by running the tests on both).
macro_rules! on_backend {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_backend;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres://`, or does not parse.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No pool has this id.
    #[error("pool {0} not found")]
    PoolNotFound(String),
    /// `create_pool` with an id already taken.
    #[error("pool {0} already exists")]
    PoolExists(String),
    /// The pool changed since the caller read it.
    #[error(
        "pool {id} was changed concurrently: expected generation {expected}, current is {current}"
    )]
    GenerationConflict {
        /// The pool.
        id: String,
        /// The generation the caller based its change on.
        expected: i64,
        /// The generation in the store.
        current: i64,
    },
    /// The pool is being deleted (its workers drain); it takes no more edits.
    #[error("pool {0} is being deleted; it takes no more changes")]
    PoolDeleting(String),
    /// No API client has this id.
    #[error("client {0} not found")]
    ClientNotFound(String),
    /// The caller no longer holds the pool's reconcile lease (another replica took
    /// it): nothing was written.
    #[error("lost the reconcile lease on pool {0}: another replica holds it now")]
    LeaseLost(String),
    /// No worker has this id.
    #[error("worker {0} not found")]
    WorkerNotFound(String),
    /// A worker with this id or idempotency token is already recorded.
    #[error("worker {0} already exists (same id or idempotency token)")]
    WorkerExists(String),
    /// The worker's state changed under the caller, or the move is illegal.
    #[error(transparent)]
    Transition(#[from] capstan_core::TransitionError),
    /// A one-time registration token was already exchanged for a credential.
    #[error("worker {0} already registered: its registration token was already used")]
    RegistrationUsed(String),
    /// The worker changed concurrently too often to apply the change.
    #[error("worker {0} was changed concurrently; retry")]
    WorkerConflict(String),
    /// A row could not be turned back into a domain value.
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// An SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle on the database; cheap to clone (it wraps a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Opens the database at `url` and applies pending migrations.
    ///
    /// `sqlite://PATH` creates the file if missing and uses write-ahead logging;
    /// `sqlite::memory:` is a private in-memory database; `postgres://...` connects to
    /// a server (the database must exist).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let backend = if url.starts_with("sqlite:") {
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| invalid(e.to_string()))?
                .create_if_missing(true)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let options = if memory {
                options
            } else {
                options.journal_mode(SqliteJournalMode::Wal)
            };
            // An in-memory database exists per connection: keep exactly one.
            let pool = SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { 8 })
                .min_connections(if memory { 1 } else { 0 })
                .idle_timeout(if memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .max_lifetime(if memory {
                    None
                } else {
                    Some(Duration::from_secs(1800))
                })
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| invalid(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Backend::Postgres(pool)
        } else {
            return Err(invalid(
                "expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB".into(),
            ));
        };
        Ok(Self { backend })
    }

    /// Which database this is.
    pub fn kind(&self) -> BackendKind {
        match self.backend {
            Backend::Sqlite(_) => BackendKind::Sqlite,
            Backend::Postgres(_) => BackendKind::Postgres,
        }
    }

    /// Round-trips a trivial query: `Ok` when the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    /// Waits for in-flight queries and closes every connection.
    pub async fn close(&self) {
        on_backend!(self, pool => pool.close().await)
    }
}

/// `url` with the password (if any) replaced by `***`, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// Converts a stored count back to `u32`, reporting corrupt rows instead of wrapping.
fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} = {v} is out of range")))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact_url("postgres://capstan:s3cret@db:5432/capstan"),
            "postgres://capstan:***@db:5432/capstan"
        );
        assert_eq!(
            redact_url("postgres://capstan@db/capstan"),
            "postgres://capstan@db/capstan"
        );
        assert_eq!(redact_url("sqlite://capstan.db"), "sqlite://capstan.db");
    }
}
