//! Throwaway PostgreSQL databases for tests (feature `test-support`).
//!
//! Tests that need PostgreSQL create a fresh database per test on the server named by
//! `CAPSTAN_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and drop it afterwards. When that server cannot be reached they are skipped with a
//! printed reason — except under `CI=true`, where a missing PostgreSQL must fail the
//! run loudly instead of letting it pass on SQLite alone.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, PgConnection};

/// The admin URL tests create databases on.
pub fn admin_url() -> String {
    std::env::var("CAPSTAN_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database created for one test; [`ScratchDatabase::drop_now`] removes it.
#[derive(Debug)]
pub struct ScratchDatabase {
    admin: PgConnection,
    name: String,
    /// URL of the new database.
    pub url: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl ScratchDatabase {
    /// Creates a fresh, empty database, or returns `None` (after printing why) when
    /// PostgreSQL is unreachable outside CI.
    ///
    /// # Panics
    /// When PostgreSQL is unreachable under `CI=true`, or refuses to create the
    /// database.
    pub async fn create() -> Option<Self> {
        let admin_url = admin_url();
        let mut admin = match PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "SKIPPED: PostgreSQL at {} unreachable ({e}); set CAPSTAN_TEST_POSTGRES_URL",
                    crate::redact_url(&admin_url)
                );
                return None;
            }
            Err(e) => panic!(
                "PostgreSQL at {} unreachable under CI=true: {e}",
                crate::redact_url(&admin_url)
            ),
        };
        let name = format!(
            "capstan_test_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            if let Err(e) = sqlx::query(&sql).execute(&mut admin).await {
                panic!("{sql}: {e}");
            }
        }
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }

    /// Drops the database (closing any connection still open on it).
    ///
    /// # Panics
    /// When PostgreSQL refuses.
    pub async fn drop_now(mut self) {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        if let Err(e) = sqlx::query(&sql).execute(&mut self.admin).await {
            panic!("{sql}: {e}");
        }
    }
}
