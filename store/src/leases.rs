//! Reconcile leases with fencing tokens: at most one replica reconciles a pool.
//!
//! A replica takes every pool whose lease is free or expired, and renews the ones it
//! holds, in one statement ([`Store::acquire_leases`]). Expiry is judged on the
//! **database's clock**, so replicas with skewed clocks still agree. Each change of
//! hands bumps the pool's `lease_fence`; the holder passes its [`Fence`] to every write
//! it makes (worker intents and changes, plans, the final removal of a deleted pool),
//! and the write only happens while the fence is still current. A replica that was
//! paused past its lease and wakes up mid-tick therefore cannot write anything: its
//! writes fail with [`StoreError::LeaseLost`].
//!
//! On PostgreSQL the fence check takes a share lock on the pool row for the duration
//! of the write, so a takeover (which updates that row) waits for an in-flight write
//! to commit and the new holder reads it. SQLite has one writer at a time and serves
//! one replica.

use capstan_core::{PoolId, Timestamp};

use crate::{Backend, Store, StoreError, on_backend};

/// Proof of holding a pool's lease, checked by every write the holder makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    /// The pool.
    pub pool_id: PoolId,
    /// The lease's fencing token: bumped each time the lease changes hands.
    pub token: i64,
}

/// A lease held after [`Store::acquire_leases`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The pool and fencing token.
    pub fence: Fence,
    /// When it expires unless renewed (database clock).
    pub expires_at: Timestamp,
}

impl Store {
    /// The query that answers a row when pool `$1` still has fence `$2`
    /// ([`Store::fence_sql`]), for a check on its own or first in a transaction.
    pub(crate) fn fence_held_sql(&self) -> String {
        format!("SELECT 1 WHERE {}", self.fence_sql(1, 2))
    }

    /// The database clock in Unix milliseconds, as an SQL expression.
    pub(crate) fn db_now_sql(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Backend::Postgres(_) => "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)",
        }
    }

    /// The SQL condition "pool `$pool` still has fence `$token`" (with a share lock on
    /// PostgreSQL, see the module docs); `pool` and `token` are placeholder numbers.
    pub(crate) fn fence_sql(&self, pool: u32, token: u32) -> String {
        let lock = match self.backend {
            Backend::Sqlite(_) => "",
            Backend::Postgres(_) => " FOR SHARE",
        };
        format!(
            "EXISTS (SELECT 1 FROM pools WHERE id = ${pool} AND lease_fence = ${token} \
             AND lease_owner IS NOT NULL{lock})"
        )
    }

    /// The database's clock now.
    pub async fn db_now(&self) -> Result<Timestamp, StoreError> {
        let sql = format!("SELECT {}", self.db_now_sql());
        let (ms,): (i64,) = on_backend!(self, pool => {
            sqlx::query_as(&sql).fetch_one(pool).await?
        });
        Ok(Timestamp::from_unix_ms(ms))
    }

    /// Takes every pool whose lease is free or expired and renews every lease `owner`
    /// holds, until `ttl_ms` from now on the database clock; answers all the leases
    /// `owner` holds afterwards. A lease that changes hands gets a new fence.
    pub async fn acquire_leases(&self, owner: &str, ttl_ms: i64) -> Result<Vec<Lease>, StoreError> {
        let now = self.db_now_sql();
        let sql = format!(
            "UPDATE pools SET
               lease_fence = CASE WHEN lease_owner = $1 AND lease_expires_at > {now}
                                  THEN lease_fence ELSE lease_fence + 1 END,
               lease_owner = $1,
               lease_expires_at = {now} + $2
             WHERE lease_owner IS NULL OR lease_owner = $1 OR lease_expires_at <= {now}
             RETURNING id, lease_fence, lease_expires_at"
        );
        let rows: Vec<(String, i64, i64)> = on_backend!(self, pool => {
            sqlx::query_as(&sql).bind(owner).bind(ttl_ms).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(|(id, token, expires)| {
                Ok(Lease {
                    fence: Fence {
                        pool_id: PoolId::new(id)
                            .map_err(|e| StoreError::Corrupt(format!("pool id: {e}")))?,
                        token,
                    },
                    expires_at: Timestamp::from_unix_ms(expires),
                })
            })
            .collect()
    }

    /// Gives up every lease `owner` holds (clean shutdown), so another replica takes
    /// the pools at once instead of after the TTL. Answers how many were released.
    pub async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            sqlx::query(
                "UPDATE pools SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
            )
            .bind(owner)
            .execute(pool)
            .await?
            .rows_affected()
        }))
    }

    /// Who holds each pool's lease now: (pool, owner, fence), leases expired on the
    /// database clock excluded. For metrics and tests.
    pub async fn lease_holders(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = format!(
            "SELECT id, lease_owner, lease_fence FROM pools
             WHERE lease_owner IS NOT NULL AND lease_expires_at > {} ORDER BY id",
            self.db_now_sql()
        );
        Ok(on_backend!(self, pool => {
            sqlx::query_as(&sql).fetch_all(pool).await?
        }))
    }

    /// Errors with [`StoreError::LeaseLost`] unless `fence` is still current.
    pub async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        let sql = self.fence_held_sql();
        let row: Option<(i32,)> = on_backend!(self, pool => {
            sqlx::query_as(&sql)
                .bind(fence.pool_id.as_str())
                .bind(fence.token)
                .fetch_optional(pool)
                .await?
        });
        match row {
            Some(_) => Ok(()),
            None => Err(StoreError::LeaseLost(fence.pool_id.to_string())),
        }
    }
}

/// The PostgreSQL channel wake-ups travel on between replicas.
const WAKE_CHANNEL: &str = "capstan_wake";

/// Wake-ups from every replica (PostgreSQL `LISTEN`); see [`Store::wake_listener`].
#[derive(Debug)]
pub struct WakeListener(sqlx::postgres::PgListener);

impl WakeListener {
    /// The next pool some replica asked to be reconciled now. Reconnects by itself
    /// after a dropped connection (wake-ups sent meanwhile are lost; the tick catches
    /// up).
    pub async fn recv(&mut self) -> Result<PoolId, StoreError> {
        loop {
            let n = self.0.recv().await?;
            if let Ok(id) = PoolId::new(n.payload()) {
                return Ok(id);
            }
        }
    }
}

impl Store {
    /// Asks whichever replica holds `pool` to reconcile it now: a PostgreSQL
    /// `NOTIFY` every replica hears. On SQLite (one replica) it does nothing; the
    /// caller wakes its own loop.
    pub async fn notify_wake(&self, pool: &PoolId) -> Result<(), StoreError> {
        if let Backend::Postgres(p) = &self.backend {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WAKE_CHANNEL)
                .bind(pool.as_str())
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// Listens for [`Store::notify_wake`] from every replica; `None` on SQLite.
    pub async fn wake_listener(&self) -> Result<Option<WakeListener>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(p) => {
                let mut l = sqlx::postgres::PgListener::connect_with(p).await?;
                l.listen(WAKE_CHANNEL).await?;
                Ok(Some(WakeListener(l)))
            }
        }
    }
}
