//! The audit log: one row per change of a pool, written in the same transaction as
//! the change itself, so the log and the pools table never disagree.

use capstan_core::{PoolId, Timestamp};
use serde::Serialize;

use crate::{Store, StoreError, on_backend};

/// What was done to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// The pool was created.
    Create,
    /// Its spec was replaced.
    Update,
    /// It was deleted.
    Delete,
    /// A delete was asked for while workers were live: it drains, then goes.
    DeleteRequested,
}

impl AuditAction {
    /// The name stored and shown (`create`, `update`, `delete`, `delete_requested`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::DeleteRequested => "delete_requested",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "create" => Ok(Self::Create),
            "update" => Ok(Self::Update),
            "delete" => Ok(Self::Delete),
            "delete_requested" => Ok(Self::DeleteRequested),
            other => Err(StoreError::Corrupt(format!(
                "unknown audit action {other:?}"
            ))),
        }
    }
}

/// One change of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Increasing id; orders entries.
    pub id: i64,
    /// When the change was committed.
    pub at: Timestamp,
    /// Who made it (API client name, `cli`, ...).
    pub actor: String,
    /// What was done.
    pub action: AuditAction,
    /// The pool.
    pub pool_id: String,
    /// Generation before the change; none for a create.
    pub old_generation: Option<i64>,
    /// Generation after the change; none for a delete.
    pub new_generation: Option<i64>,
}

type AuditRow = (i64, i64, String, String, String, Option<i64>, Option<i64>);

impl Store {
    /// The newest `limit` audit entries, newest first; only `pool`'s when given.
    pub async fn audit_log(
        &self,
        pool: Option<&PoolId>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_log_page(pool, None, limit).await
    }

    /// Like [`Store::audit_log`], older than entry `before` when given (keyset
    /// pagination going back in time).
    pub async fn audit_log_page(
        &self,
        pool: Option<&PoolId>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<AuditRow> = on_backend!(self, p => {
            sqlx::query_as(
                "SELECT id, at, actor, action, pool_id, old_generation, new_generation
                 FROM audit_log WHERE ($1 IS NULL OR pool_id = $1) AND ($3 IS NULL OR id < $3)
                 ORDER BY id DESC LIMIT $2",
            )
            .bind(pool.map(PoolId::as_str))
            .bind(i64::from(limit))
            .bind(before)
            .fetch_all(p)
            .await?
        });
        rows.into_iter()
            .map(|(id, at, actor, action, pool_id, old, new)| {
                Ok(AuditEntry {
                    id,
                    at: Timestamp::from_unix_ms(at),
                    actor,
                    action: AuditAction::parse(&action)?,
                    pool_id,
                    old_generation: old,
                    new_generation: new,
                })
            })
            .collect()
    }
}

/// Inserts one audit row inside the caller's transaction.
macro_rules! insert_audit {
    ($tx:expr, $at:expr, $actor:expr, $action:expr, $pool:expr, $old:expr, $new:expr) => {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, pool_id, old_generation, new_generation)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind($at.unix_ms())
        .bind($actor)
        .bind($action.as_str())
        .bind($pool)
        .bind($old)
        .bind($new)
        .execute(&mut *$tx)
        .await?
    };
}
pub(crate) use insert_audit;
