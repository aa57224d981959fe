//! Pool errors shown to operators, deduplicated: a launch config failing the same way
//! every tick is one row with a count, not thousands of rows.

use capstan_core::{PoolId, Timestamp};
use serde::Serialize;

use crate::{Store, StoreError, on_backend};

/// One distinct problem of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolError {
    /// The pool.
    pub pool_id: String,
    /// The launch config it is about, if any.
    pub launch_config_id: Option<String>,
    /// Classification, e.g. `insufficient_capacity`.
    pub kind: String,
    /// The provider's or capstan's message.
    pub message: String,
    /// How often it happened.
    pub count: i64,
    /// First occurrence.
    pub first_seen: Timestamp,
    /// Latest occurrence.
    pub last_seen: Timestamp,
}

impl Store {
    /// Records an occurrence: a new row, or the same (pool, launch config, kind,
    /// message) row with its count bumped and `last_seen` moved to `now`.
    pub async fn record_pool_error(
        &self,
        pool_id: &PoolId,
        launch_config_id: Option<&str>,
        kind: &str,
        message: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        on_backend!(self, pool => {
            sqlx::query(
                "INSERT INTO pool_errors (pool_id, launch_config_id, kind, message, count, first_seen, last_seen)
                 VALUES ($1, $2, $3, $4, 1, $5, $5)
                 ON CONFLICT (pool_id, launch_config_id, kind, message)
                 DO UPDATE SET count = pool_errors.count + 1,
                   last_seen = CASE WHEN excluded.last_seen > pool_errors.last_seen
                                    THEN excluded.last_seen ELSE pool_errors.last_seen END",
            )
            .bind(pool_id.as_str())
            .bind(launch_config_id.unwrap_or(""))
            .bind(kind)
            .bind(message)
            .bind(now.unix_ms())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// `pool`'s errors, most recent first.
    pub async fn list_pool_errors(&self, pool_id: &PoolId) -> Result<Vec<PoolError>, StoreError> {
        let rows: Vec<(String, String, String, String, i64, i64, i64)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT pool_id, launch_config_id, kind, message, count, first_seen, last_seen
                 FROM pool_errors WHERE pool_id = $1 ORDER BY last_seen DESC, kind, message",
            )
            .bind(pool_id.as_str())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(pool_id, lc, kind, message, count, first, last)| PoolError {
                    pool_id,
                    launch_config_id: (!lc.is_empty()).then_some(lc),
                    kind,
                    message,
                    count,
                    first_seen: Timestamp::from_unix_ms(first),
                    last_seen: Timestamp::from_unix_ms(last),
                },
            )
            .collect())
    }
}
