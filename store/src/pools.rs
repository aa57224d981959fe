//! Pools: specs with generations, compare-and-swap updates, and deletion.

use capstan_core::{PoolId, PoolSpec, ProviderKind, Timestamp};
use serde::Serialize;

use crate::audit::{AuditAction, insert_audit};
use crate::leases::Fence;
use crate::{Store, StoreError, on_backend};

/// Deletes a pool's row and everything that belongs to it (its audit entries stay),
/// inside transaction `$tx`.
macro_rules! delete_pool_rows {
    ($tx:ident, $id:expr) => {
        for table in [
            "queue_samples",
            "pool_errors",
            "workers",
            "pool_status",
            "plan_log",
            "idle_periods",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE pool_id = $1"))
                .bind($id.as_str())
                .execute(&mut *$tx)
                .await?;
        }
        sqlx::query("DELETE FROM pools WHERE id = $1")
            .bind($id.as_str())
            .execute(&mut *$tx)
            .await?;
    };
}

/// A stored pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolRecord {
    /// The operator's declaration.
    pub spec: PoolSpec,
    /// Bumped on every change; the `If-Match` value for the next update.
    pub generation: i64,
    /// When the pool was created.
    pub created_at: Timestamp,
    /// When its spec last changed.
    pub updated_at: Timestamp,
    /// Set once a delete was asked for while workers were live: the pool takes no new
    /// work, its workers drain, and the reconcile loop removes it when none is left.
    pub deleting_since: Option<Timestamp>,
}

/// Which pools [`Store::list_pools_page`] answers.
#[derive(Debug, Clone, Default)]
pub struct PoolFilter {
    /// Only pools of this provider.
    pub provider: Option<ProviderKind>,
    /// Only pools whose id starts with this.
    pub prefix: Option<String>,
    /// Only pools whose id sorts after this (keyset pagination).
    pub after: Option<String>,
}

/// What [`Store::delete_pool`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeleteOutcome {
    /// No live worker was left: the pool is gone.
    Deleted,
    /// Workers are live: the pool is marked deleting (generation bumped) and drains.
    MarkedDeleting(Box<PoolRecord>),
}

const POOL_COLUMNS: &str = "spec, generation, created_at, updated_at, deleting_since";

type PoolRow = (String, i64, i64, i64, Option<i64>);

fn record(row: PoolRow) -> Result<PoolRecord, StoreError> {
    let (spec, generation, created_at, updated_at, deleting_since) = row;
    let spec: PoolSpec =
        serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(format!("pool spec: {e}")))?;
    Ok(PoolRecord {
        spec,
        generation,
        created_at: Timestamp::from_unix_ms(created_at),
        updated_at: Timestamp::from_unix_ms(updated_at),
        deleting_since: deleting_since.map(Timestamp::from_unix_ms),
    })
}

fn spec_json(spec: &PoolSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| StoreError::Corrupt(format!("pool spec: {e}")))
}

impl Store {
    /// Stores a new pool at generation 1. The spec must already be validated.
    pub async fn create_pool(
        &self,
        spec: &PoolSpec,
        actor: &str,
        now: Timestamp,
    ) -> Result<PoolRecord, StoreError> {
        let json = spec_json(spec)?;
        let id = spec.id.as_str();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO pools (id, spec, provider, generation, created_at, updated_at)
                 VALUES ($1, $2, $3, 1, $4, $4) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(&json)
            .bind(spec.provider.as_str())
            .bind(now.unix_ms())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::PoolExists(id.to_owned()));
            }
            insert_audit!(tx, now, actor, AuditAction::Create, id, None::<i64>, Some(1_i64));
            tx.commit().await?;
        });
        Ok(PoolRecord {
            spec: spec.clone(),
            generation: 1,
            created_at: now,
            updated_at: now,
            deleting_since: None,
        })
    }

    /// The pool with this id, if any.
    pub async fn get_pool(&self, id: &PoolId) -> Result<Option<PoolRecord>, StoreError> {
        let row: Option<PoolRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT {POOL_COLUMNS} FROM pools WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(record).transpose()
    }

    /// Every pool, ordered by id.
    pub async fn list_pools(&self) -> Result<Vec<PoolRecord>, StoreError> {
        let rows: Vec<PoolRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT {POOL_COLUMNS} FROM pools ORDER BY id"))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(record).collect()
    }

    /// At most `limit` pools matching `filter`, ordered by id. A full page may be
    /// followed by more: ask again with `after` set to the last id.
    pub async fn list_pools_page(
        &self,
        filter: &PoolFilter,
        limit: u32,
    ) -> Result<Vec<PoolRecord>, StoreError> {
        // `substr(id, 1, length(prefix)) = prefix` instead of LIKE: pool ids may hold
        // `_`, a LIKE wildcard, and both databases read this the same way.
        let rows: Vec<PoolRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT {POOL_COLUMNS} FROM pools
                 WHERE ($1 IS NULL OR provider = $1)
                   AND ($2 IS NULL OR substr(id, 1, length($2)) = $2)
                   AND ($3 IS NULL OR id > $3)
                 ORDER BY id LIMIT $4"
            ))
            .bind(filter.provider.map(ProviderKind::as_str))
            .bind(filter.prefix.as_deref())
            .bind(filter.after.as_deref())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(record).collect()
    }

    /// Replaces the spec of pool `id` if its generation is still `expected_generation`
    /// (compare-and-swap), bumping the generation and writing one audit entry in the
    /// same transaction. A moved generation is [`StoreError::GenerationConflict`] and
    /// changes nothing.
    pub async fn update_pool(
        &self,
        id: &PoolId,
        expected_generation: i64,
        spec: &PoolSpec,
        actor: &str,
        now: Timestamp,
    ) -> Result<PoolRecord, StoreError> {
        if spec.id != *id {
            return Err(StoreError::Corrupt(format!(
                "spec id {} does not match pool {id}",
                spec.id
            )));
        }
        let json = spec_json(spec)?;
        let created: i64 = on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            // The conditional UPDATE is the first statement, so on SQLite the
            // transaction takes the write lock at once (no read-then-upgrade deadlock)
            // and on PostgreSQL a concurrent writer re-checks the generation after the
            // row lock is released.
            let row: Option<(i64,)> = sqlx::query_as(
                "UPDATE pools SET spec = $1, provider = $5, generation = generation + 1, updated_at = $2
                 WHERE id = $3 AND generation = $4 AND deleting_since IS NULL RETURNING created_at",
            )
            .bind(&json)
            .bind(now.unix_ms())
            .bind(id.as_str())
            .bind(expected_generation)
            .bind(spec.provider.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some((created,)) = row else {
                let current: Option<(i64, Option<i64>)> =
                    sqlx::query_as("SELECT generation, deleting_since FROM pools WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_optional(&mut *tx)
                        .await?;
                return Err(match current {
                    None => StoreError::PoolNotFound(id.to_string()),
                    Some((current, _)) if current != expected_generation => StoreError::GenerationConflict {
                        id: id.to_string(),
                        expected: expected_generation,
                        current,
                    },
                    Some(_) => StoreError::PoolDeleting(id.to_string()),
                });
            };
            insert_audit!(
                tx, now, actor, AuditAction::Update, id.as_str(),
                Some(expected_generation), Some(expected_generation + 1)
            );
            tx.commit().await?;
            created
        });
        Ok(PoolRecord {
            spec: spec.clone(),
            generation: expected_generation + 1,
            created_at: Timestamp::from_unix_ms(created),
            updated_at: now,
            deleting_since: None,
        })
    }

    /// Deletes pool `id` if its generation is still `expected_generation`: removed at
    /// once when no live worker remains (its queue samples, errors and terminated
    /// workers go with it; its audit entries stay), otherwise marked deleting with the
    /// generation bumped, so it takes no edits and the reconcile loop drains its workers
    /// and removes it. Either way one audit entry is written in the same transaction.
    pub async fn delete_pool(
        &self,
        id: &PoolId,
        expected_generation: i64,
        actor: &str,
        now: Timestamp,
    ) -> Result<DeleteOutcome, StoreError> {
        let outcome = on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            // A write first, so the transaction holds the row (PostgreSQL) or the
            // database (SQLite) before it counts workers.
            let current: Option<PoolRow> = sqlx::query_as(&format!(
                "UPDATE pools SET updated_at = updated_at WHERE id = $1 RETURNING {POOL_COLUMNS}"
            ))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let current = match current {
                None => return Err(StoreError::PoolNotFound(id.to_string())),
                Some(row) => record(row)?,
            };
            if current.generation != expected_generation {
                return Err(StoreError::GenerationConflict {
                    id: id.to_string(),
                    expected: expected_generation,
                    current: current.generation,
                });
            }
            let (live,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM workers WHERE pool_id = $1 AND state <> 'terminated'",
            )
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let outcome = if live > 0 {
                let since = current.deleting_since.unwrap_or(now);
                sqlx::query(
                    "UPDATE pools SET generation = generation + 1, updated_at = $1, deleting_since = $2
                     WHERE id = $3",
                )
                .bind(now.unix_ms())
                .bind(since.unix_ms())
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                insert_audit!(
                    tx, now, actor, AuditAction::DeleteRequested, id.as_str(),
                    Some(expected_generation), Some(expected_generation + 1)
                );
                DeleteOutcome::MarkedDeleting(Box::new(PoolRecord {
                    generation: expected_generation + 1,
                    updated_at: now,
                    deleting_since: Some(since),
                    ..current
                }))
            } else {
                delete_pool_rows!(tx, id);
                insert_audit!(
                    tx, now, actor, AuditAction::Delete, id.as_str(),
                    Some(expected_generation), None::<i64>
                );
                DeleteOutcome::Deleted
            };
            tx.commit().await?;
            outcome
        });
        Ok(outcome)
    }

    /// Removes pool `fence.pool_id`, marked deleting, once none of its workers is live:
    /// its rows go as in [`Store::delete_pool`] and one audit entry (by `actor`) is
    /// written. Answers whether the pool was removed; `false` while workers are live.
    /// Only the lease holder may do it ([`StoreError::LeaseLost`] otherwise).
    pub async fn finish_pool_delete(
        &self,
        fence: &Fence,
        actor: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let id = &fence.pool_id;
        let check =
            "UPDATE pools SET updated_at = updated_at WHERE id = $1 AND deleting_since IS NOT NULL
             AND lease_fence = $2 RETURNING generation";
        let removed = on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let generation: Option<(i64,)> = sqlx::query_as(check)
                .bind(id.as_str())
                .bind(fence.token)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((generation,)) = generation else {
                drop(tx);
                self.check_fence(fence).await?;
                return Ok(false);
            };
            let (live,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM workers WHERE pool_id = $1 AND state <> 'terminated'",
            )
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
            if live > 0 {
                false
            } else {
                delete_pool_rows!(tx, id);
                insert_audit!(
                    tx, now, actor, AuditAction::Delete, id.as_str(),
                    Some(generation), None::<i64>
                );
                tx.commit().await?;
                true
            }
        });
        Ok(removed)
    }
}
