//! Workers: one row per machine. State changes are compare-and-swap on the state and
//! always go through the core state machine, so an illegal move never reaches the
//! database and two writers cannot both move the same worker.

use std::str::FromStr;

use capstan_core::{PoolId, ProviderKind, Timestamp, Worker, WorkerId, WorkerState};

use crate::leases::Fence;
use crate::{Store, StoreError, on_backend, to_u32};

/// A `workers` row as stored (times in Unix milliseconds).
#[derive(sqlx::FromRow)]
pub(crate) struct WorkerRow {
    id: String,
    pool_id: String,
    provider: String,
    launch_config_id: Option<String>,
    instance_id: Option<String>,
    idempotency_token: String,
    state: String,
    capacity: i64,
    busy_slots: i64,
    created_at: i64,
    state_changed_at: i64,
    registered_at: Option<i64>,
    last_heartbeat_at: Option<i64>,
    idle_since: Option<i64>,
    failure: Option<String>,
}

/// A worker row with its compare-and-swap revision.
#[derive(sqlx::FromRow)]
struct RevisionRow {
    revision: i64,
    #[sqlx(flatten)]
    worker: WorkerRow,
}

pub(crate) const COLUMNS: &str = "id, pool_id, provider, launch_config_id, instance_id, idempotency_token, \
     state, capacity, busy_slots, created_at, state_changed_at, registered_at, \
     last_heartbeat_at, idle_since, failure";

pub(crate) fn worker(row: WorkerRow) -> Result<Worker, StoreError> {
    let WorkerRow {
        id,
        pool_id,
        provider,
        launch_config_id,
        instance_id,
        idempotency_token: token,
        state,
        capacity,
        busy_slots: busy,
        created_at: created,
        state_changed_at: changed,
        registered_at: registered,
        last_heartbeat_at: heartbeat,
        idle_since: idle,
        failure,
    } = row;
    let ts = |v: Option<i64>| v.map(Timestamp::from_unix_ms);
    Ok(Worker {
        id: WorkerId::from_string(id),
        pool_id: PoolId::new(pool_id).map_err(|e| StoreError::Corrupt(format!("pool id: {e}")))?,
        provider: ProviderKind::ALL
            .into_iter()
            .find(|p| p.as_str() == provider)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown provider {provider:?}")))?,
        launch_config_id,
        instance_id,
        idempotency_token: token,
        state: WorkerState::from_str(&state).map_err(StoreError::Corrupt)?,
        capacity: to_u32(capacity, "capacity")?,
        busy_slots: to_u32(busy, "busy_slots")?,
        created_at: Timestamp::from_unix_ms(created),
        state_changed_at: Timestamp::from_unix_ms(changed),
        registered_at: ts(registered),
        last_heartbeat_at: ts(heartbeat),
        idle_since: ts(idle),
        failure,
    })
}

impl Store {
    /// Records a new worker (normally in `requested`, before the provider is called).
    /// A second worker with the same id or idempotency token is
    /// [`StoreError::WorkerExists`]: this is what makes a retried launch safe.
    pub async fn insert_worker(&self, w: &Worker) -> Result<(), StoreError> {
        self.insert_worker_inner(None, w, None).await
    }

    /// [`Store::insert_worker`] for the holder of the pool's lease: the intent is
    /// recorded only while `fence` is current ([`StoreError::LeaseLost`] otherwise).
    pub async fn insert_worker_fenced(&self, fence: &Fence, w: &Worker) -> Result<(), StoreError> {
        if fence.pool_id != w.pool_id {
            return Err(StoreError::Corrupt(format!(
                "worker {} is not in pool {}",
                w.id, fence.pool_id
            )));
        }
        self.insert_worker_inner(Some(fence), w, None).await
    }

    /// The launch intent: [`Store::insert_worker_fenced`] together with the SHA-256
    /// (hex) of the registration token the machine will boot with, in one write, so a
    /// machine that exists always has a token it can register with.
    pub async fn insert_launch_intent(
        &self,
        fence: &Fence,
        w: &Worker,
        registration_digest: &str,
    ) -> Result<(), StoreError> {
        if fence.pool_id != w.pool_id {
            return Err(StoreError::Corrupt(format!(
                "worker {} is not in pool {}",
                w.id, fence.pool_id
            )));
        }
        self.insert_worker_inner(Some(fence), w, Some(registration_digest))
            .await
    }

    async fn insert_worker_inner(
        &self,
        fence: Option<&Fence>,
        w: &Worker,
        registration_digest: Option<&str>,
    ) -> Result<(), StoreError> {
        let condition = match fence {
            Some(_) => self.fence_sql(16, 17),
            None => "$16 IS NULL AND $17 IS NULL".to_owned(),
        };
        let inserted = on_backend!(self, pool => {
            sqlx::query(&format!(
                "INSERT INTO workers ({COLUMNS}, registration_digest) SELECT
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $18
                 WHERE {condition}
                 ON CONFLICT DO NOTHING"
            ))
            .bind(w.id.as_str())
            .bind(w.pool_id.as_str())
            .bind(w.provider.as_str())
            .bind(w.launch_config_id.as_deref())
            .bind(w.instance_id.as_deref())
            .bind(&w.idempotency_token)
            .bind(w.state.as_str())
            .bind(i64::from(w.capacity))
            .bind(i64::from(w.busy_slots))
            .bind(w.created_at.unix_ms())
            .bind(w.state_changed_at.unix_ms())
            .bind(w.registered_at.map(Timestamp::unix_ms))
            .bind(w.last_heartbeat_at.map(Timestamp::unix_ms))
            .bind(w.idle_since.map(Timestamp::unix_ms))
            .bind(w.failure.as_deref())
            .bind(fence.map(|f| f.pool_id.as_str()))
            .bind(fence.map(|f| f.token))
            .bind(registration_digest)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            if let Some(f) = fence {
                self.check_fence(f).await?;
            }
            return Err(StoreError::WorkerExists(w.id.to_string()));
        }
        Ok(())
    }

    /// The worker with this id, if any.
    pub async fn get_worker(&self, id: &WorkerId) -> Result<Option<Worker>, StoreError> {
        let row: Option<WorkerRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM workers WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(worker).transpose()
    }

    /// The worker launched with this idempotency token, if any (crash recovery: the
    /// intent row tells whether a create call may already have happened).
    pub async fn worker_by_token(&self, token: &str) -> Result<Option<Worker>, StoreError> {
        let row: Option<WorkerRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM workers WHERE idempotency_token = $1"))
                .bind(token)
                .fetch_optional(pool)
                .await?
        });
        row.map(worker).transpose()
    }

    /// The pool's `limit` most recently registered workers, terminated ones included,
    /// oldest registration first: the boots ([`Worker::boot_s`]) a controller that
    /// takes the pool over measures its boot time by.
    pub async fn recently_registered(
        &self,
        pool_id: &PoolId,
        limit: u32,
    ) -> Result<Vec<Worker>, StoreError> {
        let rows: Vec<WorkerRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM workers
                 WHERE pool_id = $1 AND registered_at IS NOT NULL
                 ORDER BY registered_at DESC, id DESC LIMIT $2"
            ))
            .bind(pool_id.as_str())
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().rev().map(worker).collect()
    }

    /// A pool's workers ordered by creation; terminated ones only when asked for.
    pub async fn list_workers(
        &self,
        pool_id: &PoolId,
        include_terminated: bool,
    ) -> Result<Vec<Worker>, StoreError> {
        let rows: Vec<WorkerRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM workers WHERE pool_id = $1 AND ($2 OR state <> 'terminated')
                 ORDER BY created_at, id"
            ))
            .bind(pool_id.as_str())
            .bind(include_terminated)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(worker).collect()
    }

    /// At most `limit` of a pool's workers in the given states (every state when
    /// `states` is empty), ordered by id, after worker `after` when given (keyset
    /// pagination: a full page may be followed by more).
    pub async fn list_workers_page(
        &self,
        pool_id: &PoolId,
        states: &[WorkerState],
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Worker>, StoreError> {
        // States come from a closed enum, so they are spelled into the SQL as literals.
        let state_filter = if states.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
            format!("AND state IN ({})", names.join(", "))
        };
        let rows: Vec<WorkerRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM workers
                 WHERE pool_id = $1 {state_filter} AND ($2 IS NULL OR id > $2)
                 ORDER BY id LIMIT $3"
            ))
            .bind(pool_id.as_str())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(worker).collect()
    }

    /// Applies `change` to worker `id` as a compare-and-swap on the row's revision,
    /// retrying on a concurrent change (up to 5 times): the change is computed from the
    /// worker as it is now, so a heartbeat and the reconcile loop never overwrite each
    /// other. `change` may refuse with an error, which is returned as is.
    pub async fn modify_worker<F>(&self, id: &WorkerId, change: F) -> Result<Worker, StoreError>
    where
        F: FnMut(&mut Worker) -> Result<(), StoreError>,
    {
        self.modify_worker_inner(None, id, change).await
    }

    /// [`Store::modify_worker`] for the holder of the pool's lease: the write only
    /// happens while `fence` is current ([`StoreError::LeaseLost`] otherwise).
    pub async fn modify_worker_fenced<F>(
        &self,
        fence: &Fence,
        id: &WorkerId,
        change: F,
    ) -> Result<Worker, StoreError>
    where
        F: FnMut(&mut Worker) -> Result<(), StoreError>,
    {
        self.modify_worker_inner(Some(fence), id, change).await
    }

    async fn modify_worker_inner<F>(
        &self,
        fence: Option<&Fence>,
        id: &WorkerId,
        mut change: F,
    ) -> Result<Worker, StoreError>
    where
        F: FnMut(&mut Worker) -> Result<(), StoreError>,
    {
        let condition = match fence {
            Some(_) => format!("AND {}", self.fence_sql(12, 13)),
            None => "AND $12 IS NULL AND $13 IS NULL".to_owned(),
        };
        let sql = format!(
            "UPDATE workers SET instance_id = $1, state = $2, busy_slots = $3,
               state_changed_at = $4, registered_at = $5, last_heartbeat_at = $6,
               idle_since = $7, failure = $8, revision = revision + 1
             WHERE id = $9 AND revision = $10 AND pool_id = $11 {condition}"
        );
        for _ in 0..5 {
            let Some((before, revision)) = self.get_worker_revision(id).await? else {
                return Err(StoreError::WorkerNotFound(id.to_string()));
            };
            if let Some(f) = fence
                && f.pool_id != before.pool_id
            {
                return Err(StoreError::Corrupt(format!(
                    "worker {id} is not in pool {}",
                    f.pool_id
                )));
            }
            let mut after = before.clone();
            change(&mut after)?;
            if after.id != before.id || after.pool_id != before.pool_id {
                return Err(StoreError::Corrupt(
                    "a worker's id and pool never change".into(),
                ));
            }
            let written = on_backend!(self, pool => {
                sqlx::query(&sql)
                .bind(after.instance_id.as_deref())
                .bind(after.state.as_str())
                .bind(i64::from(after.busy_slots))
                .bind(after.state_changed_at.unix_ms())
                .bind(after.registered_at.map(Timestamp::unix_ms))
                .bind(after.last_heartbeat_at.map(Timestamp::unix_ms))
                .bind(after.idle_since.map(Timestamp::unix_ms))
                .bind(after.failure.as_deref())
                .bind(id.as_str())
                .bind(revision)
                .bind(before.pool_id.as_str())
                .bind(fence.map(|f| f.pool_id.as_str()))
                .bind(fence.map(|f| f.token))
                .execute(pool)
                .await?
                .rows_affected()
            });
            if written == 1 {
                return Ok(after);
            }
            if let Some(f) = fence {
                self.check_fence(f).await?;
            }
        }
        Err(StoreError::WorkerConflict(id.to_string()))
    }

    /// A worker with its row revision.
    async fn get_worker_revision(
        &self,
        id: &WorkerId,
    ) -> Result<Option<(Worker, i64)>, StoreError> {
        let row: Option<RevisionRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!("SELECT revision, {COLUMNS} FROM workers WHERE id = $1"))
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| worker(r.worker).map(|w| (w, r.revision)))
            .transpose()
    }

    /// Moves worker `id` to `to` at `now` through the state machine.
    pub async fn transition_worker(
        &self,
        id: &WorkerId,
        to: WorkerState,
        now: Timestamp,
    ) -> Result<Worker, StoreError> {
        self.modify_worker(id, |w| Ok(w.transition(to, now)?)).await
    }
}
