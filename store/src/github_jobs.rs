//! GitHub Actions workflow jobs per pool: the state behind a pool whose `queue` is a
//! GitHub repository, fed by `workflow_job` webhooks (`api::webhooks`) and by polling
//! the REST API (`reconciler::queues::github`), which catches deliveries GitHub never
//! resends.
//!
//! Every change goes through one transaction per pool that:
//! 1. takes the pool's row in `github_pool_cursors` (a row lock on PostgreSQL; SQLite
//!    has one writer anyway), so two deliveries for one pool never interleave;
//! 2. merges each incoming job with its stored row ([`merge`], a pure function): a
//!    job's status only moves forward (waiting < queued < in_progress < completed),
//!    so a late or replayed event never undoes a newer one;
//! 3. books a completed job's run time (`completed_at − started_at`) into `task_runs`
//!    as worker `github-job:<id>`;
//! 4. when anything changed, writes a queue sample: pending = queued jobs, running =
//!    in-progress jobs, arrivals and completions = jobs first counted as queued /
//!    completed since the pool's previous GitHub sample.
//!
//! A webhook delivery adds one step in front, in the same transaction: its
//! `X-GitHub-Delivery` id is inserted into `github_deliveries`, and when it is already
//! there the delivery is a replay and nothing changes ([`GithubDelivery::Duplicate`]).

use capstan_core::{PoolId, QueueSample, Timestamp};

use crate::{Store, StoreError, on_backend, to_u32};

/// Where a workflow job stands. Ordered: a stored job only moves to a later status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GithubJobStatus {
    /// Not runnable yet: GitHub's `requested`, `pending` (a concurrency group) or
    /// `waiting` (a deployment protection rule). Not pending demand: no runner can take
    /// it until it is queued.
    Waiting,
    /// Waiting for a runner: pending demand.
    Queued,
    /// A runner is running it.
    InProgress,
    /// Finished, whatever the conclusion.
    Completed,
}

impl GithubJobStatus {
    /// The word stored in `github_jobs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }

    /// Reads GitHub's `workflow_job.status` (`requested`, `pending` and `waiting` all
    /// map to [`Self::Waiting`]); `None` for a word GitHub does not document.
    pub fn from_github(status: &str) -> Option<Self> {
        match status {
            "requested" | "pending" | "waiting" => Some(Self::Waiting),
            "queued" => Some(Self::Queued),
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }

    fn from_stored(s: &str) -> Result<Self, StoreError> {
        match s {
            "waiting" => Ok(Self::Waiting),
            "queued" => Ok(Self::Queued),
            "in_progress" => Ok(Self::InProgress),
            "completed" => Ok(Self::Completed),
            other => Err(StoreError::Corrupt(format!(
                "github_jobs.status = {other:?}, expected waiting, queued, in_progress or completed"
            ))),
        }
    }
}

/// One workflow job as GitHub reports it (a webhook's `workflow_job`, or an element of
/// the REST API's `jobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubJob {
    /// `id`.
    pub job_id: i64,
    /// `run_id`: the workflow run the job belongs to.
    pub run_id: i64,
    /// `status`.
    pub status: GithubJobStatus,
    /// `conclusion` (`success`, `failure`, `cancelled`, `skipped`, ...), once completed.
    pub conclusion: Option<String>,
    /// `created_at`: when the job was queued.
    pub created_at: Timestamp,
    /// `started_at`.
    pub started_at: Option<Timestamp>,
    /// `completed_at`.
    pub completed_at: Option<Timestamp>,
}

impl GithubJob {
    /// How long the job ran, in milliseconds, when it is a completed run whose length
    /// says something about the pool's tasks: not for `cancelled` or `skipped` jobs
    /// (they stopped early or never ran), nor without both times, nor when the clock
    /// values are reversed.
    pub fn run_time_ms(&self) -> Option<i64> {
        if self.status != GithubJobStatus::Completed
            || matches!(self.conclusion.as_deref(), Some("cancelled" | "skipped"))
        {
            return None;
        }
        let ms = self.completed_at?.unix_ms() - self.started_at?.unix_ms();
        (ms >= 0).then_some(ms)
    }
}

/// A stored job of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubJobRecord {
    /// The job's id.
    pub job_id: i64,
    /// Its workflow run.
    pub run_id: i64,
    /// Its status.
    pub status: GithubJobStatus,
    /// GitHub's `created_at`.
    pub queued_at: Timestamp,
    /// GitHub's `started_at`.
    pub started_at: Option<Timestamp>,
    /// GitHub's `completed_at`.
    pub completed_at: Option<Timestamp>,
    /// When the row last changed (the server's clock).
    pub updated_at: Timestamp,
}

/// What one change did to one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubPoolUpdate {
    /// The pool.
    pub pool_id: PoolId,
    /// How many of the incoming jobs changed the pool's rows (a status moved forward
    /// or a new job was stored).
    pub changed: usize,
    /// The queue sample written, when anything changed.
    pub sample: Option<QueueSample>,
}

/// The outcome of a webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubDelivery {
    /// First time this delivery id was seen: applied to each pool given.
    Applied(Vec<GithubPoolUpdate>),
    /// The delivery id was already processed: nothing changed.
    Duplicate,
}

/// The stored part of a job that [`merge`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredJob {
    /// Stored status.
    pub status: GithubJobStatus,
    /// Stored `started_at`.
    pub started_at: Option<Timestamp>,
    /// Stored `completed_at`.
    pub completed_at: Option<Timestamp>,
    /// When the job first counted as queued (or later), server clock.
    pub arrival_recorded_at: Option<Timestamp>,
    /// When the job was seen completed, server clock.
    pub completion_recorded_at: Option<Timestamp>,
}

/// The row [`merge`] decides to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergedJob {
    /// New status.
    pub status: GithubJobStatus,
    /// `started_at` (the incoming one, else the stored one).
    pub started_at: Option<Timestamp>,
    /// `completed_at` (the incoming one, else the stored one).
    pub completed_at: Option<Timestamp>,
    /// Set to `at` when the job now counts as queued or later for the first time.
    pub arrival_recorded_at: Option<Timestamp>,
    /// Set to `at` when the job is now completed for the first time.
    pub completion_recorded_at: Option<Timestamp>,
    /// Whether this completion's run time goes into `task_runs`.
    pub book_run_time: bool,
}

/// Merges `incoming` into the stored row (`None`: a job not stored yet) at server time
/// `at`: `None` when nothing changes, i.e. the incoming status is not later than the
/// stored one. A job first seen in a later state also counts as arrived (it was queued
/// once; the delivery that said so was missed).
pub fn merge(stored: Option<StoredJob>, incoming: &GithubJob, at: Timestamp) -> Option<MergedJob> {
    if let Some(s) = stored
        && incoming.status <= s.status
    {
        return None;
    }
    let arrived = incoming.status >= GithubJobStatus::Queued;
    let completed = incoming.status == GithubJobStatus::Completed;
    let keep = |f: fn(&StoredJob) -> Option<Timestamp>| stored.as_ref().and_then(f);
    Some(MergedJob {
        status: incoming.status,
        started_at: incoming.started_at.or(keep(|s| s.started_at)),
        completed_at: incoming.completed_at.or(keep(|s| s.completed_at)),
        arrival_recorded_at: keep(|s| s.arrival_recorded_at).or(arrived.then_some(at)),
        completion_recorded_at: keep(|s| s.completion_recorded_at).or(completed.then_some(at)),
        book_run_time: completed,
    })
}

/// Whether a job of `job_repository` (`owner/name`) asking for `job_labels` (its
/// `runs-on`) is for a pool whose source names `repository` and `labels`: the same
/// repository, and every one of the pool's labels among the job's. GitHub compares
/// both case-insensitively, and so does this.
pub fn job_matches(
    repository: &str,
    labels: &[String],
    job_repository: &str,
    job_labels: &[String],
) -> bool {
    repository.eq_ignore_ascii_case(job_repository)
        && labels.iter().all(|want| {
            job_labels
                .iter()
                .any(|have| have.eq_ignore_ascii_case(want))
        })
}

/// The `task_runs.worker_id` a GitHub job's run time is booked under.
pub fn github_job_worker_id(job_id: i64) -> String {
    format!("github-job:{job_id}")
}

type StoredRow = (String, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Applies `jobs` to one pool inside the open transaction `$tx` (the body is the same
/// for both backends; see [`crate::on_backend`]). Evaluates to
/// `Result<GithubPoolUpdate, StoreError>`.
macro_rules! apply_to_pool {
    ($tx:expr, $pool_id:expr, $jobs:expr, $now:expr) => {
        async {
            let pool_id: &PoolId = $pool_id;
            let tx = $tx;
            // Step 1: lock the pool's cursor row; its value starts the sample interval.
            let (cursor,): (i64,) = sqlx::query_as(
                "INSERT INTO github_pool_cursors (pool_id, sampled_at) VALUES ($1, 0)
                 ON CONFLICT (pool_id) DO UPDATE SET sampled_at = github_pool_cursors.sampled_at
                 RETURNING sampled_at",
            )
            .bind(pool_id.as_str())
            .fetch_one(&mut **tx)
            .await?;
            // Samples are keyed by instant: keep each after the previous one, so two
            // changes within a millisecond write two samples instead of one replacing
            // the other's arrivals.
            let at = Timestamp::from_unix_ms($now.unix_ms().max(cursor + 1));
            let mut changed = 0usize;
            for job in $jobs {
                let job: &GithubJob = job;
                let row: Option<StoredRow> = sqlx::query_as(
                    "SELECT status, started_at, completed_at, arrival_recorded_at,
                            completion_recorded_at
                     FROM github_jobs WHERE pool_id = $1 AND job_id = $2",
                )
                .bind(pool_id.as_str())
                .bind(job.job_id)
                .fetch_optional(&mut **tx)
                .await?;
                let stored = match row {
                    Some((status, started, completed, arrival, completion)) => Some(StoredJob {
                        status: GithubJobStatus::from_stored(&status)?,
                        started_at: started.map(Timestamp::from_unix_ms),
                        completed_at: completed.map(Timestamp::from_unix_ms),
                        arrival_recorded_at: arrival.map(Timestamp::from_unix_ms),
                        completion_recorded_at: completion.map(Timestamp::from_unix_ms),
                    }),
                    None => None,
                };
                let Some(merged) = merge(stored, job, at) else {
                    continue;
                };
                changed += 1;
                sqlx::query(
                    "INSERT INTO github_jobs (pool_id, job_id, run_id, status, queued_at,
                       started_at, completed_at, arrival_recorded_at, completion_recorded_at,
                       updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (pool_id, job_id) DO UPDATE SET status = excluded.status,
                       started_at = excluded.started_at, completed_at = excluded.completed_at,
                       arrival_recorded_at = excluded.arrival_recorded_at,
                       completion_recorded_at = excluded.completion_recorded_at,
                       updated_at = excluded.updated_at",
                )
                .bind(pool_id.as_str())
                .bind(job.job_id)
                .bind(job.run_id)
                .bind(merged.status.as_str())
                .bind(job.created_at.unix_ms())
                .bind(merged.started_at.map(Timestamp::unix_ms))
                .bind(merged.completed_at.map(Timestamp::unix_ms))
                .bind(merged.arrival_recorded_at.map(Timestamp::unix_ms))
                .bind(merged.completion_recorded_at.map(Timestamp::unix_ms))
                .bind(at.unix_ms())
                .execute(&mut **tx)
                .await?;
                let run = GithubJob {
                    started_at: merged.started_at,
                    completed_at: merged.completed_at,
                    ..job.clone()
                };
                if merged.book_run_time
                    && let (Some(ms), Some(finished)) = (run.run_time_ms(), run.completed_at)
                {
                    // A retried booking (or the same job matching a second pool) hits
                    // the primary key and changes nothing.
                    sqlx::query(
                        "INSERT INTO task_runs (pool_id, worker_id, finished_at, duration_ms, recorded_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (worker_id, finished_at) DO NOTHING",
                    )
                    .bind(pool_id.as_str())
                    .bind(github_job_worker_id(job.job_id))
                    .bind(finished.unix_ms())
                    .bind(ms)
                    .bind(at.unix_ms())
                    .execute(&mut **tx)
                    .await?;
                }
            }
            if changed == 0 {
                return Ok::<_, StoreError>(GithubPoolUpdate {
                    pool_id: pool_id.clone(),
                    changed,
                    sample: None,
                });
            }
            let (pending, running, arrivals, completions): (i64, i64, i64, i64) = sqlx::query_as(
                "SELECT
                   COALESCE(SUM(CASE WHEN status = 'queued' THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN status = 'in_progress' THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN arrival_recorded_at > $2
                                      AND arrival_recorded_at <= $3 THEN 1 ELSE 0 END), 0),
                   COALESCE(SUM(CASE WHEN completion_recorded_at > $2
                                      AND completion_recorded_at <= $3 THEN 1 ELSE 0 END), 0)
                 FROM github_jobs WHERE pool_id = $1",
            )
            .bind(pool_id.as_str())
            .bind(cursor)
            .bind(at.unix_ms())
            .fetch_one(&mut **tx)
            .await?;
            let sample = QueueSample {
                at,
                pending: to_u32(pending, "github pending jobs")?,
                running: to_u32(running, "github running jobs")?,
                arrivals: to_u32(arrivals, "github job arrivals")?,
                completions: to_u32(completions, "github job completions")?,
            };
            sqlx::query(
                "INSERT INTO queue_samples (pool_id, at, pending, running, arrivals, completions)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (pool_id, at) DO UPDATE SET pending = excluded.pending,
                   running = excluded.running, arrivals = excluded.arrivals,
                   completions = excluded.completions",
            )
            .bind(pool_id.as_str())
            .bind(at.unix_ms())
            .bind(pending)
            .bind(running)
            .bind(arrivals)
            .bind(completions)
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE github_pool_cursors SET sampled_at = $2 WHERE pool_id = $1")
                .bind(pool_id.as_str())
                .bind(at.unix_ms())
                .execute(&mut **tx)
                .await?;
            Ok(GithubPoolUpdate {
                pool_id: pool_id.clone(),
                changed,
                sample: Some(sample),
            })
        }
    };
}

impl Store {
    /// Applies a `workflow_job` webhook delivery: remembers `delivery_id` and merges
    /// `job` into each of `pools` (the pools whose source matches the job), all in one
    /// transaction. A delivery id seen before is [`GithubDelivery::Duplicate`] and
    /// changes nothing; a delivery matching no pool is still remembered.
    pub async fn apply_github_delivery(
        &self,
        delivery_id: &str,
        pools: &[PoolId],
        job: &GithubJob,
        now: Timestamp,
    ) -> Result<GithubDelivery, StoreError> {
        // Pools are locked in id order, so two deliveries never wait on each other in
        // a cycle.
        let mut pools = pools.to_vec();
        pools.sort();
        pools.dedup();
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO github_deliveries (delivery_id, received_at) VALUES ($1, $2)
                 ON CONFLICT (delivery_id) DO NOTHING",
            )
            .bind(delivery_id)
            .bind(now.unix_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(GithubDelivery::Duplicate);
            }
            let mut updates = Vec::with_capacity(pools.len());
            for pool_id in &pools {
                updates.push(apply_to_pool!(&mut tx, pool_id, std::slice::from_ref(job), now).await?);
            }
            tx.commit().await?;
            Ok(GithubDelivery::Applied(updates))
        })
    }

    /// Merges `jobs` (what polling GitHub found) into `pool_id`'s jobs in one
    /// transaction, writing one queue sample when anything changed.
    pub async fn apply_github_jobs(
        &self,
        pool_id: &PoolId,
        jobs: &[GithubJob],
        now: Timestamp,
    ) -> Result<GithubPoolUpdate, StoreError> {
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let update = apply_to_pool!(&mut tx, pool_id, jobs, now).await?;
            tx.commit().await?;
            Ok(update)
        })
    }

    /// `pool_id`'s jobs that are not completed (waiting, queued or in progress),
    /// by job id.
    pub async fn open_github_jobs(
        &self,
        pool_id: &PoolId,
    ) -> Result<Vec<GithubJobRecord>, StoreError> {
        self.github_jobs_where(pool_id, "status <> 'completed'")
            .await
    }

    /// All of `pool_id`'s stored jobs, by job id.
    pub async fn github_jobs(&self, pool_id: &PoolId) -> Result<Vec<GithubJobRecord>, StoreError> {
        self.github_jobs_where(pool_id, "1 = 1").await
    }

    async fn github_jobs_where(
        &self,
        pool_id: &PoolId,
        condition: &'static str,
    ) -> Result<Vec<GithubJobRecord>, StoreError> {
        let sql = format!(
            "SELECT job_id, run_id, status, queued_at, started_at, completed_at, updated_at
             FROM github_jobs WHERE pool_id = $1 AND {condition} ORDER BY job_id"
        );
        type Row = (i64, i64, String, i64, Option<i64>, Option<i64>, i64);
        let rows: Vec<Row> = on_backend!(self, pool => {
            sqlx::query_as(&sql).bind(pool_id.as_str()).fetch_all(pool).await?
        });
        rows.into_iter()
            .map(
                |(job_id, run_id, status, queued, started, completed, updated)| {
                    Ok(GithubJobRecord {
                        job_id,
                        run_id,
                        status: GithubJobStatus::from_stored(&status)?,
                        queued_at: Timestamp::from_unix_ms(queued),
                        started_at: started.map(Timestamp::from_unix_ms),
                        completed_at: completed.map(Timestamp::from_unix_ms),
                        updated_at: Timestamp::from_unix_ms(updated),
                    })
                },
            )
            .collect()
    }

    /// Retention: forgets delivery ids received before `before` (a replay older than
    /// that is applied again, and merging makes it harmless unless the job's rows are
    /// gone too) and completed jobs last changed before `before` (their run times are
    /// in `task_runs`). Returns how many rows went.
    pub async fn prune_github(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let deliveries = sqlx::query("DELETE FROM github_deliveries WHERE received_at < $1")
                .bind(before.unix_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let jobs = sqlx::query(
                "DELETE FROM github_jobs WHERE status = 'completed' AND updated_at < $1",
            )
            .bind(before.unix_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            deliveries + jobs
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

    fn job(status: GithubJobStatus) -> GithubJob {
        GithubJob {
            job_id: 7,
            run_id: 1,
            status,
            conclusion: (status == GithubJobStatus::Completed).then(|| "success".into()),
            created_at: T0,
            started_at: (status >= GithubJobStatus::InProgress).then_some(T0.plus_secs(60)),
            completed_at: (status == GithubJobStatus::Completed).then_some(T0.plus_secs(258)),
        }
    }

    fn stored(m: MergedJob) -> StoredJob {
        StoredJob {
            status: m.status,
            started_at: m.started_at,
            completed_at: m.completed_at,
            arrival_recorded_at: m.arrival_recorded_at,
            completion_recorded_at: m.completion_recorded_at,
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        use GithubJobStatus::*;
        let at = T0.plus_secs(1);
        let queued = merge(None, &job(Queued), at).unwrap();
        assert_eq!(queued.arrival_recorded_at, Some(at));
        assert_eq!(queued.completion_recorded_at, None);
        let done = merge(Some(stored(queued)), &job(Completed), at.plus_secs(5)).unwrap();
        // The arrival keeps its first recorded time; the completion gets this one.
        assert_eq!(done.arrival_recorded_at, Some(at));
        assert_eq!(done.completion_recorded_at, Some(at.plus_secs(5)));
        assert!(done.book_run_time);
        for late in [Waiting, Queued, InProgress, Completed] {
            assert_eq!(merge(Some(stored(done)), &job(late), at.plus_secs(9)), None);
        }
        assert_eq!(merge(Some(stored(queued)), &job(Queued), at), None);
    }

    #[test]
    fn waiting_jobs_have_not_arrived_until_queued() {
        use GithubJobStatus::*;
        let waiting = merge(None, &job(Waiting), T0).unwrap();
        assert_eq!(waiting.arrival_recorded_at, None);
        let queued = merge(Some(stored(waiting)), &job(Queued), T0.plus_secs(3)).unwrap();
        assert_eq!(queued.arrival_recorded_at, Some(T0.plus_secs(3)));
    }

    #[test]
    fn a_job_first_seen_completed_arrived_and_finished_at_once() {
        let m = merge(None, &job(GithubJobStatus::Completed), T0).unwrap();
        assert_eq!(m.arrival_recorded_at, Some(T0));
        assert_eq!(m.completion_recorded_at, Some(T0));
    }

    #[test]
    fn run_times_skip_cancelled_and_skipped_jobs() {
        let done = job(GithubJobStatus::Completed);
        assert_eq!(done.run_time_ms(), Some(198_000));
        for conclusion in ["cancelled", "skipped"] {
            let j = GithubJob {
                conclusion: Some(conclusion.into()),
                ..done.clone()
            };
            assert_eq!(j.run_time_ms(), None, "{conclusion}");
        }
        let reversed = GithubJob {
            started_at: done.completed_at.map(|t| t.plus_secs(1)),
            ..done.clone()
        };
        assert_eq!(reversed.run_time_ms(), None);
        assert_eq!(job(GithubJobStatus::InProgress).run_time_ms(), None);
    }

    #[test]
    fn jobs_match_the_repository_and_every_pool_label() {
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pool = labels(&["self-hosted", "k8s"]);
        let repo = "octo-org/octo-repo";
        assert!(job_matches(
            repo,
            &pool,
            "Octo-Org/Octo-Repo",
            &labels(&["K8s", "self-hosted", "x64"])
        ));
        assert!(!job_matches(repo, &pool, repo, &labels(&["self-hosted"])));
        assert!(!job_matches(repo, &pool, "octo-org/other", &pool));
        assert!(job_matches(repo, &[], repo, &[]));
    }

    #[test]
    fn github_statuses_parse() {
        for (word, status) in [
            ("requested", GithubJobStatus::Waiting),
            ("pending", GithubJobStatus::Waiting),
            ("waiting", GithubJobStatus::Waiting),
            ("queued", GithubJobStatus::Queued),
            ("in_progress", GithubJobStatus::InProgress),
            ("completed", GithubJobStatus::Completed),
        ] {
            assert_eq!(GithubJobStatus::from_github(word), Some(status));
            assert_eq!(
                GithubJobStatus::from_stored(status.as_str()).unwrap(),
                status
            );
        }
        assert_eq!(GithubJobStatus::from_github("done"), None);
    }

    /// Against both databases: what the store keeps for a job's life and a replay.
    mod on_store {
        use super::*;
        use crate::scratch::{with_postgres, with_sqlite};

        fn pool(name: &str) -> PoolId {
            PoolId::new(name).unwrap()
        }

        async fn task_runs(store: &Store, pool_id: &PoolId) -> Vec<(String, i64, i64)> {
            on_backend!(store, p => {
                sqlx::query_as(
                    "SELECT worker_id, finished_at, duration_ms FROM task_runs
                     WHERE pool_id = $1 ORDER BY finished_at",
                )
                .bind(pool_id.as_str())
                .fetch_all(p)
                .await
                .unwrap()
            })
        }

        async fn a_jobs_life_becomes_samples_and_a_run_time(store: Store) {
            use GithubJobStatus::*;
            let (a, b) = (pool("gh/a"), pool("gh/b"));
            let both = [b.clone(), a.clone()];
            let queued = store
                .apply_github_delivery("d1", &both, &job(Queued), T0)
                .await
                .unwrap();
            let GithubDelivery::Applied(updates) = queued else {
                panic!("{queued:?}")
            };
            // Sorted by pool id, one sample each: 1 pending, 1 arrival.
            assert_eq!(updates.len(), 2);
            assert_eq!(updates[0].pool_id, a);
            let s = updates[0].sample.unwrap();
            assert_eq!(
                (s.at, s.pending, s.running, s.arrivals, s.completions),
                (T0, 1, 0, 1, 0)
            );

            // The same delivery again changes nothing, even with a newer status.
            let replay = store
                .apply_github_delivery("d1", &both, &job(Completed), T0.plus_secs(1))
                .await
                .unwrap();
            assert_eq!(replay, GithubDelivery::Duplicate);
            assert_eq!(store.open_github_jobs(&a).await.unwrap().len(), 1);

            let running = store
                .apply_github_jobs(&a, &[job(InProgress)], T0.plus_secs(60))
                .await
                .unwrap();
            let s = running.sample.unwrap();
            assert_eq!(
                (s.pending, s.running, s.arrivals, s.completions),
                (0, 1, 0, 0)
            );

            // Two changes in the same millisecond: two samples, the second after it.
            let done = store
                .apply_github_jobs(&a, &[job(Completed)], T0.plus_secs(60))
                .await
                .unwrap();
            let s = done.sample.unwrap();
            assert_eq!(
                s.at,
                Timestamp::from_unix_ms(T0.plus_secs(60).unix_ms() + 1)
            );
            assert_eq!(
                (s.pending, s.running, s.arrivals, s.completions),
                (0, 0, 0, 1)
            );
            assert_eq!(
                task_runs(&store, &a).await,
                [(
                    "github-job:7".to_owned(),
                    T0.plus_secs(258).unix_ms(),
                    198_000
                )]
            );
            // Late and repeated events change nothing and write no sample.
            let late = store
                .apply_github_jobs(&a, &[job(Queued), job(Completed)], T0.plus_secs(90))
                .await
                .unwrap();
            assert_eq!((late.changed, late.sample), (0, None));
            let samples = store
                .queue_samples(&a, T0, T0.plus_secs(3600))
                .await
                .unwrap();
            assert_eq!(samples.len(), 3);
            assert!(store.open_github_jobs(&a).await.unwrap().is_empty());
            // Pool b still has its queued job: pools are independent.
            assert_eq!(store.open_github_jobs(&b).await.unwrap()[0].status, Queued);

            // Retention forgets the delivery and the completed job, not the open one.
            assert_eq!(store.prune_github(T0.plus_secs(30)).await.unwrap(), 1);
            assert_eq!(store.prune_github(T0.plus_secs(3600)).await.unwrap(), 1);
            assert!(store.github_jobs(&a).await.unwrap().is_empty());
            assert_eq!(store.github_jobs(&b).await.unwrap().len(), 1);
            let again = store
                .apply_github_delivery("d1", &[], &job(Queued), T0.plus_secs(3600))
                .await
                .unwrap();
            assert_eq!(again, GithubDelivery::Applied(vec![]));
        }

        crate::on_both_backends!(a_jobs_life_becomes_samples_and_a_run_time);
    }
}
