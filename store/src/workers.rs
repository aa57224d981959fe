//! Workers: one row per machine. State changes are compare-and-swap on the state and
//! always go through the core state machine, so an illegal move never reaches the
//! database and two writers cannot both move the same worker.

use std::str::FromStr;

use capstan_core::{PoolId, ProviderKind, Timestamp, Worker, WorkerId, WorkerState};

use crate::{Store, StoreError, on_backend, to_u32};

type WorkerRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

const COLUMNS: &str = "id, pool_id, provider, launch_config_id, instance_id, idempotency_token, \
     state, capacity, busy_slots, created_at, state_changed_at, registered_at, \
     last_heartbeat_at, idle_since, failure";

fn worker(row: WorkerRow) -> Result<Worker, StoreError> {
    let (
        id,
        pool_id,
        provider,
        launch_config_id,
        instance_id,
        token,
        state,
        capacity,
        busy,
        created,
        changed,
        registered,
        heartbeat,
        idle,
        failure,
    ) = row;
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
        let inserted = on_backend!(self, pool => {
            sqlx::query(&format!(
                "INSERT INTO workers ({COLUMNS}) VALUES
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
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
            .execute(pool)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
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

    /// Reads worker `id`, applies `change` (which may call
    /// [`Worker::transition`] and edit fields), and writes it back only if nobody
    /// changed the worker's state meanwhile; retries a few times on a concurrent
    /// change. An error from `change` aborts and changes nothing.
    pub async fn modify_worker<F>(&self, id: &WorkerId, mut change: F) -> Result<Worker, StoreError>
    where
        F: FnMut(&mut Worker) -> Result<(), StoreError>,
    {
        for _ in 0..5 {
            let Some(before) = self.get_worker(id).await? else {
                return Err(StoreError::WorkerNotFound(id.to_string()));
            };
            let mut after = before.clone();
            change(&mut after)?;
            if after.id != before.id || after.pool_id != before.pool_id {
                return Err(StoreError::Corrupt(
                    "a worker's id and pool never change".into(),
                ));
            }
            let written = on_backend!(self, pool => {
                sqlx::query(
                    "UPDATE workers SET instance_id = $1, state = $2, busy_slots = $3,
                       state_changed_at = $4, registered_at = $5, last_heartbeat_at = $6,
                       idle_since = $7, failure = $8
                     WHERE id = $9 AND state = $10 AND state_changed_at = $11",
                )
                .bind(after.instance_id.as_deref())
                .bind(after.state.as_str())
                .bind(i64::from(after.busy_slots))
                .bind(after.state_changed_at.unix_ms())
                .bind(after.registered_at.map(Timestamp::unix_ms))
                .bind(after.last_heartbeat_at.map(Timestamp::unix_ms))
                .bind(after.idle_since.map(Timestamp::unix_ms))
                .bind(after.failure.as_deref())
                .bind(id.as_str())
                .bind(before.state.as_str())
                .bind(before.state_changed_at.unix_ms())
                .execute(pool)
                .await?
                .rows_affected()
            });
            if written == 1 {
                return Ok(after);
            }
        }
        Err(StoreError::WorkerConflict(id.to_string()))
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
