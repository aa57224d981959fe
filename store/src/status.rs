//! Each pool's latest plan and forecast, and the log of plans that acted.
//!
//! The replica holding a pool's lease writes them every tick (fenced); the API, the
//! dashboard and the other replicas read them.

use capstan_core::{Forecast, Plan, PoolId, Timestamp};
use serde::Serialize;

use crate::leases::Fence;
use crate::{Store, StoreError, on_backend};

/// A pool's latest plan and the forecast behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolStatus {
    /// The pool.
    pub pool_id: String,
    /// When the plan was made.
    pub at: Timestamp,
    /// The replica that made it.
    pub owner: String,
    /// Its lease fence.
    pub fence: i64,
    /// The plan (actions and report).
    pub plan: Plan,
    /// The forecast, with points further ahead and their band.
    pub forecast: Forecast,
}

/// A plan that had actions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanLogEntry {
    /// When it was made.
    pub at: Timestamp,
    /// The replica that made it.
    pub owner: String,
    /// Its lease fence.
    pub fence: i64,
    /// The plan.
    pub plan: Plan,
}

fn json<T: Serialize>(v: &T, what: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn parse<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

impl Store {
    /// Records the pool's latest plan and forecast (and, when the plan has actions, an
    /// entry in the plan log), in one transaction, while `fence` is current.
    pub async fn record_plan(
        &self,
        fence: &Fence,
        owner: &str,
        plan: &Plan,
        forecast: &Forecast,
    ) -> Result<(), StoreError> {
        let plan_json = json(plan, "plan")?;
        let forecast_json = json(forecast, "forecast")?;
        let at = plan.report.at.unix_ms();
        let upsert = format!(
            "INSERT INTO pool_status (pool_id, at, owner, fence, plan, forecast)
             SELECT $1, $2, $3, $4, $5, $6 WHERE {}
             ON CONFLICT (pool_id) DO UPDATE SET at = excluded.at, owner = excluded.owner,
               fence = excluded.fence, plan = excluded.plan, forecast = excluded.forecast",
            self.fence_sql(1, 4)
        );
        let written = on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(&upsert)
                .bind(fence.pool_id.as_str())
                .bind(at)
                .bind(owner)
                .bind(fence.token)
                .bind(&plan_json)
                .bind(&forecast_json)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 && !plan.actions.is_empty() {
                sqlx::query(
                    "INSERT INTO plan_log (pool_id, at, owner, fence, plan) VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING",
                )
                .bind(fence.pool_id.as_str())
                .bind(at)
                .bind(owner)
                .bind(fence.token)
                .bind(&plan_json)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            n
        });
        if written == 0 {
            return Err(StoreError::LeaseLost(fence.pool_id.to_string()));
        }
        Ok(())
    }

    /// The pool's latest plan and forecast, if it was ever planned.
    pub async fn pool_status(&self, pool_id: &PoolId) -> Result<Option<PoolStatus>, StoreError> {
        let row: Option<(String, i64, String, i64, String, String)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT pool_id, at, owner, fence, plan, forecast FROM pool_status WHERE pool_id = $1",
            )
            .bind(pool_id.as_str())
            .fetch_optional(pool)
            .await?
        });
        row.map(|(pool_id, at, owner, fence, plan, forecast)| {
            Ok(PoolStatus {
                pool_id,
                at: Timestamp::from_unix_ms(at),
                owner,
                fence,
                plan: parse(&plan, "plan")?,
                forecast: parse(&forecast, "forecast")?,
            })
        })
        .transpose()
    }

    /// Plans with actions for the pool made at or after `since`, oldest first, at most
    /// `limit`.
    pub async fn plan_log(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        limit: u32,
    ) -> Result<Vec<PlanLogEntry>, StoreError> {
        let rows: Vec<(i64, String, i64, String)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT at, owner, fence, plan FROM plan_log WHERE pool_id = $1 AND at >= $2
                 ORDER BY at, owner LIMIT $3",
            )
            .bind(pool_id.as_str())
            .bind(since.unix_ms())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(at, owner, fence, plan)| {
                Ok(PlanLogEntry {
                    at: Timestamp::from_unix_ms(at),
                    owner,
                    fence,
                    plan: parse(&plan, "plan")?,
                })
            })
            .collect()
    }

    /// Deletes plan-log entries older than `before`; answers how many.
    pub async fn prune_plan_log(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            sqlx::query("DELETE FROM plan_log WHERE at < $1")
                .bind(before.unix_ms())
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Deletes pool errors last seen before `before`; answers how many.
    pub async fn prune_pool_errors(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            sqlx::query("DELETE FROM pool_errors WHERE last_seen < $1")
                .bind(before.unix_ms())
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}
