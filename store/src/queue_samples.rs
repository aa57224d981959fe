//! The demand time series: queue samples per pool, with retention.

use capstan_core::{PoolId, QueueSample, Timestamp};

use crate::{Store, StoreError, on_backend, to_u32};

impl Store {
    /// Stores samples for `pool`, all or none. A sample at an instant already stored
    /// replaces it, so re-pushing a batch after a timeout is harmless.
    pub async fn record_queue_samples(
        &self,
        pool_id: &PoolId,
        samples: &[QueueSample],
    ) -> Result<(), StoreError> {
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            for s in samples {
                sqlx::query(
                    "INSERT INTO queue_samples (pool_id, at, pending, running, arrivals, completions)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (pool_id, at) DO UPDATE SET pending = excluded.pending,
                       running = excluded.running, arrivals = excluded.arrivals,
                       completions = excluded.completions",
                )
                .bind(pool_id.as_str())
                .bind(s.at.unix_ms())
                .bind(i64::from(s.pending))
                .bind(i64::from(s.running))
                .bind(i64::from(s.arrivals))
                .bind(i64::from(s.completions))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// `pool`'s samples with `since <= at < until`, oldest first.
    pub async fn queue_samples(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<QueueSample>, StoreError> {
        let rows: Vec<(i64, i64, i64, i64, i64)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT at, pending, running, arrivals, completions FROM queue_samples
                 WHERE pool_id = $1 AND at >= $2 AND at < $3 ORDER BY at",
            )
            .bind(pool_id.as_str())
            .bind(since.unix_ms())
            .bind(until.unix_ms())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(at, pending, running, arrivals, completions)| {
                Ok(QueueSample {
                    at: Timestamp::from_unix_ms(at),
                    pending: to_u32(pending, "pending")?,
                    running: to_u32(running, "running")?,
                    arrivals: to_u32(arrivals, "arrivals")?,
                    completions: to_u32(completions, "completions")?,
                })
            })
            .collect()
    }

    /// Retention: deletes every pool's samples older than `before`; returns how many.
    pub async fn prune_queue_samples(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            sqlx::query("DELETE FROM queue_samples WHERE at < $1")
                .bind(before.unix_ms())
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
