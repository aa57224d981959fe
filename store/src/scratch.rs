//! Throwaway PostgreSQL databases for tests (feature `test-support`).
//!
//! Tests that need PostgreSQL create a fresh database per test on the server named by
//! `CAPSTAN_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and drop it afterwards — also when the test panics, since [`ScratchDatabase`] drops
//! its database in `Drop`. When that server cannot be reached they are skipped with a
//! printed reason — except under `CI=true`, where a missing PostgreSQL must fail the
//! run loudly instead of letting it pass on SQLite alone.

use std::future::Future;
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
    admin: Option<PgConnection>,
    admin_url: String,
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
        Some(Self {
            admin: Some(admin),
            admin_url,
            name,
            url,
        })
    }

    /// Drops the database (closing any connection still open on it).
    ///
    /// # Panics
    /// When PostgreSQL refuses.
    pub async fn drop_now(mut self) {
        let sql = format!("DROP DATABASE {} WITH (FORCE)", self.name);
        if let Some(mut admin) = self.admin.take()
            && let Err(e) = sqlx::query(&sql).execute(&mut admin).await
        {
            panic!("{sql}: {e}");
        }
    }
}

impl Drop for ScratchDatabase {
    /// A test that panicked (or forgot [`ScratchDatabase::drop_now`]) still leaves no
    /// database behind: drop it from a helper thread with its own runtime, since `Drop`
    /// cannot await and may run inside the test's runtime.
    fn drop(&mut self) {
        if self.admin.take().is_none() {
            return;
        }
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop scratch database {}", self.name);
        }
    }
}

/// Runs `case` on a store over a fresh SQLite file, then closes it.
pub async fn with_sqlite<F, Fut>(case: F)
where
    F: FnOnce(crate::Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("capstan.db").display());
    let store = crate::Store::connect(&url).await.expect("SQLite opens");
    case(store.clone()).await;
    store.close().await;
}

/// Runs `case` on a store over a fresh PostgreSQL database (see
/// [`ScratchDatabase::create`] for when it is skipped), then drops the database.
pub async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(crate::Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = ScratchDatabase::create().await else {
        return;
    };
    let store = crate::Store::connect(&db.url)
        .await
        .expect("PostgreSQL scratch database opens");
    case(store.clone()).await;
    store.close().await;
    db.drop_now().await;
}

/// Turns each `async fn case(..)` named into a `sqlite::case` and a `postgres::case`
/// test, run through the `with_sqlite` and `with_postgres` in scope of the calling
/// module (this module's, or wrappers that build more than a store).
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::with_sqlite(super::$case).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::with_postgres(super::$case).await
                }
            )*
        }
    };
}
