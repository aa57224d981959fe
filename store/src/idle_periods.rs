//! The idle periods of a pool's workers, so the idle timeout capstan chooses from them
//! (`reconciler::idle`) survives a take-over: the round that sees a period end records
//! it, and a replica that takes the pool replays the periods with the queue history.

use capstan_core::{PoolId, Timestamp, WorkerId};

use crate::{Fence, Store, StoreError, on_backend};

/// One idle period of a worker that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdlePeriod {
    /// The worker that idled.
    pub worker_id: WorkerId,
    /// When the round saw the period end.
    pub ended_at: Timestamp,
    /// How long the worker had been idle then, in milliseconds (never negative).
    pub idle_ms: i64,
    /// Whether a task ended it (else the worker went away while idle).
    pub reused: bool,
    /// The pool's busy slots once the task took it, if known: the level the worker
    /// idled at.
    pub level: Option<u32>,
}

impl Store {
    /// Stores the ended idle periods of the pool `fence` holds, all or none, if the
    /// fence is still current (else [`StoreError::LeaseLost`] and nothing is stored: a
    /// replica that lost the pool must not add periods the new holder also sees). A
    /// period already stored (same worker, same end) is kept as it is, so recording a
    /// batch twice is harmless.
    pub async fn record_idle_periods(
        &self,
        fence: &Fence,
        periods: &[IdlePeriod],
    ) -> Result<(), StoreError> {
        if periods.is_empty() {
            return Ok(());
        }
        let pool_id = &fence.pool_id;
        let held = self.fence_held_sql();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let current: Option<(i32,)> = sqlx::query_as(&held)
                .bind(pool_id.as_str())
                .bind(fence.token)
                .fetch_optional(&mut *tx)
                .await?;
            if current.is_none() {
                return Err(StoreError::LeaseLost(pool_id.to_string()));
            }
            for p in periods {
                sqlx::query(
                    "INSERT INTO idle_periods (pool_id, worker_id, ended_at, idle_ms, reused, level)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (pool_id, ended_at, worker_id) DO NOTHING",
                )
                .bind(pool_id.as_str())
                .bind(p.worker_id.as_str())
                .bind(p.ended_at.unix_ms())
                .bind(p.idle_ms.max(0))
                .bind(i64::from(p.reused))
                .bind(p.level.map(i64::from))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// `pool`'s idle periods that ended at `since <= ended_at < until`, oldest first
    /// (ties by worker id).
    pub async fn idle_periods(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<IdlePeriod>, StoreError> {
        let rows: Vec<(String, i64, i64, i64, Option<i64>)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT worker_id, ended_at, idle_ms, reused, level FROM idle_periods
                 WHERE pool_id = $1 AND ended_at >= $2 AND ended_at < $3
                 ORDER BY ended_at, worker_id",
            )
            .bind(pool_id.as_str())
            .bind(since.unix_ms())
            .bind(until.unix_ms())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(worker, ended, idle_ms, reused, level)| IdlePeriod {
                worker_id: WorkerId::from_string(worker),
                ended_at: Timestamp::from_unix_ms(ended),
                idle_ms: idle_ms.max(0),
                reused: reused != 0,
                level: level.and_then(|l| u32::try_from(l).ok()),
            })
            .collect())
    }

    /// Retention: deletes every pool's idle periods that ended before `before`;
    /// returns how many.
    pub async fn prune_idle_periods(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            sqlx::query("DELETE FROM idle_periods WHERE ended_at < $1")
                .bind(before.unix_ms())
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
