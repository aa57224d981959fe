//! What the worker API keeps: registration-token and credential digests on the worker
//! row, and the run times of finished tasks.
//!
//! Only SHA-256 digests are stored. A registration is exchanged once: the write that
//! stores the credential digest is a compare-and-swap on the row's revision that also
//! requires the token unused, so two machines presenting one token cannot both get a
//! credential.

use capstan_core::{PoolId, Timestamp, Worker, WorkerId};

use crate::workers::{COLUMNS, WorkerRow, worker};
use crate::{Store, StoreError, on_backend};

/// The secrets of a worker, as digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSecrets {
    /// SHA-256 (hex) of the registration token in the machine's user-data.
    pub registration_digest: Option<String>,
    /// When the token was exchanged for a credential.
    pub registration_used_at: Option<Timestamp>,
    /// SHA-256 (hex) of the worker credential's secret.
    pub credential_digest: Option<String>,
}

/// How a registration may be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationUse {
    /// A cloud machine's one-time token: refused once used.
    Once,
    /// A static machine authenticated by its own long-lived secret: each
    /// registration replaces the previous credential (the agent restarted).
    Renew,
}

/// One finished task as reported by a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskRun {
    /// When it finished.
    pub finished_at: Timestamp,
    /// How long it ran, in milliseconds.
    pub duration_ms: i64,
}

/// A worker row with its secrets and revision.
#[derive(sqlx::FromRow)]
struct SecretRow {
    revision: i64,
    registration_digest: Option<String>,
    registration_used_at: Option<i64>,
    credential_digest: Option<String>,
    #[sqlx(flatten)]
    worker: WorkerRow,
}

impl Store {
    /// Worker `id` with its secrets, if it exists.
    pub async fn worker_with_secrets(
        &self,
        id: &WorkerId,
    ) -> Result<Option<(Worker, WorkerSecrets)>, StoreError> {
        Ok(self.secret_row(id).await?.map(|(w, s, _)| (w, s)))
    }

    async fn secret_row(
        &self,
        id: &WorkerId,
    ) -> Result<Option<(Worker, WorkerSecrets, i64)>, StoreError> {
        let row: Option<SecretRow> = on_backend!(self, pool => {
            sqlx::query_as(&format!(
                "SELECT revision, registration_digest, registration_used_at, credential_digest,
                        {COLUMNS} FROM workers WHERE id = $1"
            ))
            .bind(id.as_str())
            .fetch_optional(pool)
            .await?
        });
        row.map(|r| {
            let secrets = WorkerSecrets {
                registration_digest: r.registration_digest,
                registration_used_at: r.registration_used_at.map(Timestamp::from_unix_ms),
                credential_digest: r.credential_digest,
            };
            worker(r.worker).map(|w| (w, secrets, r.revision))
        })
        .transpose()
    }

    /// Completes a registration: applies `change` to the worker (its move to `ready`)
    /// and stores `credential_digest`, in one compare-and-swap on the row's revision.
    /// With [`RegistrationUse::Once`] the write also requires the token unused and
    /// fails with [`StoreError::RegistrationUsed`] otherwise. `change` sees the worker
    /// as it is now and may refuse.
    pub async fn complete_registration<F>(
        &self,
        id: &WorkerId,
        credential_digest: &str,
        usage: RegistrationUse,
        now: Timestamp,
        mut change: F,
    ) -> Result<Worker, StoreError>
    where
        F: FnMut(&mut Worker) -> Result<(), StoreError>,
    {
        let unused = match usage {
            RegistrationUse::Once => "AND registration_used_at IS NULL",
            RegistrationUse::Renew => "",
        };
        let sql = format!(
            "UPDATE workers SET state = $1, state_changed_at = $2, registered_at = $3,
               last_heartbeat_at = $4, idle_since = $5, busy_slots = $6,
               registration_used_at = $7, credential_digest = $8, revision = revision + 1
             WHERE id = $9 AND revision = $10 {unused}"
        );
        for _ in 0..5 {
            let Some((before, secrets, revision)) = self.secret_row(id).await? else {
                return Err(StoreError::WorkerNotFound(id.to_string()));
            };
            if usage == RegistrationUse::Once && secrets.registration_used_at.is_some() {
                return Err(StoreError::RegistrationUsed(id.to_string()));
            }
            let mut after = before.clone();
            change(&mut after)?;
            let written = on_backend!(self, pool => {
                sqlx::query(&sql)
                    .bind(after.state.as_str())
                    .bind(after.state_changed_at.unix_ms())
                    .bind(after.registered_at.map(Timestamp::unix_ms))
                    .bind(after.last_heartbeat_at.map(Timestamp::unix_ms))
                    .bind(after.idle_since.map(Timestamp::unix_ms))
                    .bind(i64::from(after.busy_slots))
                    .bind(now.unix_ms())
                    .bind(credential_digest)
                    .bind(id.as_str())
                    .bind(revision)
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

    /// Stores the finished tasks of worker `worker_id` of `pool_id`, recorded at
    /// `now`. A task already stored (same worker and finish time: a retried
    /// heartbeat) is skipped.
    pub async fn record_task_runs(
        &self,
        pool_id: &PoolId,
        worker_id: &str,
        runs: &[TaskRun],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            for r in runs {
                sqlx::query(
                    "INSERT INTO task_runs (pool_id, worker_id, finished_at, duration_ms, recorded_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(pool_id.as_str())
                .bind(worker_id)
                .bind(r.finished_at.unix_ms())
                .bind(r.duration_ms)
                .bind(now.unix_ms())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// `pool_id`'s task runs recorded after `after` (exclusive) and at or before
    /// `until`, in the order they were recorded, with their recording time: the loop
    /// reads each one once.
    pub async fn task_runs_recorded(
        &self,
        pool_id: &PoolId,
        after: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(Timestamp, TaskRun)>, StoreError> {
        let rows: Vec<(i64, i64, i64)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT recorded_at, finished_at, duration_ms FROM task_runs
                 WHERE pool_id = $1 AND recorded_at > $2 AND recorded_at <= $3
                 ORDER BY recorded_at, finished_at",
            )
            .bind(pool_id.as_str())
            .bind(after.unix_ms())
            .bind(until.unix_ms())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(rec, fin, dur)| {
                (
                    Timestamp::from_unix_ms(rec),
                    TaskRun {
                        finished_at: Timestamp::from_unix_ms(fin),
                        duration_ms: dur,
                    },
                )
            })
            .collect())
    }
}
