//! Periodic jobs, scheduled with `tokio-cron-scheduler`: the orphan sweep per
//! provider, and retention of queue history, idle periods, pool errors and the plan log.
//!
//! **Orphan sweep.** Every instance carrying capstan's tags that no live worker row
//! owns (no row with its worker id, or the row is terminated, or its pool is gone) is
//! an orphan: the leftover of a launch whose intent was given up, or of a store
//! restored from an old backup. An instance whose worker row is live but not yet
//! linked to it is left to the pool's lease holder, whose next round adopts it. An
//! orphan is terminated once it has been seen for the grace period (so an instance
//! whose row is being written right now is never touched), and recorded as a pool
//! error. The sweep is idempotent, so every replica may run it.
//!
//! **Retention.** Hourly (and once at start-up), on every replica: raw queue samples
//! and task runs older than `raw_history_days` are moved into hourly rollups, rollups
//! older than `rollup_history_days` deleted ([`store::Store::compact_history`]: bounded
//! batches, each one transaction, safe to run concurrently and after a crash), idle
//! periods and chart points older than `raw_history_days` and old pool errors,
//! plan-log entries, GitHub delivery ids and finished GitHub jobs deleted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_core::{PoolId, Timestamp, WorkerState};
use providers::{ListScope, Provider};
use store::Store;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use crate::metrics::{Metrics, ProviderLabel};
use crate::service::Providers;

/// When and how the periodic jobs run.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Cron schedule (with seconds) of the orphan sweep. Default: every minute.
    pub orphan_sweep_cron: String,
    /// An orphan is terminated once seen for this long. Default: 10 minutes.
    pub orphan_grace: Duration,
    /// Cron schedule of the retention job. Default: hourly.
    pub retention_cron: String,
    /// Raw queue samples and task runs are kept this long (the weeks a what-if
    /// replays exactly); older ones are moved into hourly rollups.
    pub raw_history_days: u32,
    /// Hourly rollups are kept this long.
    pub rollup_history_days: u32,
    /// Pool errors last seen longer ago than this are deleted.
    pub error_retention_days: u32,
    /// Plan-log entries older than this are deleted.
    pub plan_log_retention_days: u32,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            orphan_sweep_cron: "0 * * * * *".into(),
            orphan_grace: Duration::from_secs(600),
            retention_cron: "0 17 * * * *".into(),
            raw_history_days: 35,
            rollup_history_days: 400,
            error_retention_days: 14,
            plan_log_retention_days: 7,
        }
    }
}

/// Orphans seen by the sweep: (provider, instance) → first seen.
type Seen = Arc<Mutex<HashMap<(String, String), Instant>>>;

/// Starts the jobs; the returned scheduler runs them until `shutdown` is called on it.
pub async fn start(
    store: Store,
    providers: Providers,
    metrics: Metrics,
    cfg: JobsConfig,
    clock: fn() -> Timestamp,
) -> Result<JobScheduler, JobSchedulerError> {
    let sched = JobScheduler::new().await?;
    let seen: Seen = Arc::default();
    {
        let (store, providers, metrics, seen) = (
            store.clone(),
            providers.clone(),
            metrics.clone(),
            seen.clone(),
        );
        let grace = cfg.orphan_grace;
        sched
            .add(Job::new_async(cfg.orphan_sweep_cron.as_str(), move |_, _| {
                let (store, providers, metrics, seen) =
                    (store.clone(), providers.clone(), metrics.clone(), seen.clone());
                Box::pin(async move {
                    for p in providers.all() {
                        if let Err(e) = sweep(&store, p.as_ref(), &metrics, &seen, grace, clock()).await {
                            tracing::warn!(provider = p.kind().as_str(), error = %e, "orphan sweep failed");
                        }
                    }
                })
            })?)
            .await?;
    }
    {
        let store = store.clone();
        let days = RetentionDays::of(&cfg);
        sched
            .add(Job::new_async(cfg.retention_cron.as_str(), move |_, _| {
                let store = store.clone();
                Box::pin(async move { retention(&store, days, clock()).await })
            })?)
            .await?;
    }
    // Retention also runs once at start-up.
    let (store2, days) = (store.clone(), RetentionDays::of(&cfg));
    tokio::spawn(async move { retention(&store2, days, clock()).await });
    sched.start().await?;
    Ok(sched)
}

/// Raw rows moved into rollups (or rollups deleted) per transaction: a few
/// milliseconds of write lock each, so the job never stalls the loop's writes.
pub const HISTORY_BATCH: u32 = 5000;

/// The retention periods, in days.
#[derive(Debug, Clone, Copy)]
struct RetentionDays {
    raw: u32,
    rollups: u32,
    errors: u32,
    plans: u32,
}

impl RetentionDays {
    fn of(cfg: &JobsConfig) -> Self {
        Self {
            raw: cfg.raw_history_days,
            rollups: cfg.rollup_history_days,
            errors: cfg.error_retention_days,
            plans: cfg.plan_log_retention_days,
        }
    }
}

async fn retention(store: &Store, days: RetentionDays, now: Timestamp) {
    let cutoff = |days: u32| now.plus_secs(-i64::from(days) * 86_400);
    match store
        .compact_history(cutoff(days.raw), cutoff(days.rollups), HISTORY_BATCH)
        .await
    {
        Ok(done) => tracing::info!(
            samples_rolled_up = done.samples_rolled_up,
            runs_rolled_up = done.runs_rolled_up,
            rollups_deleted = done.rollups_deleted,
            raw_days = days.raw,
            rollup_days = days.rollups,
            "history retention"
        ),
        Err(e) => tracing::warn!(error = %e, "history retention failed"),
    }
    match store.prune_pool_series(cutoff(days.raw)).await {
        Ok(n) => tracing::info!(deleted = n, days = days.raw, "pool chart-point retention"),
        Err(e) => tracing::warn!(error = %e, "pool chart-point retention failed"),
    }
    match store.prune_idle_periods(cutoff(days.raw)).await {
        Ok(n) => tracing::info!(deleted = n, days = days.raw, "idle-period retention"),
        Err(e) => tracing::warn!(error = %e, "idle-period retention failed"),
    }
    match store.prune_pool_errors(cutoff(days.errors)).await {
        Ok(n) => tracing::info!(deleted = n, days = days.errors, "pool-error retention"),
        Err(e) => tracing::warn!(error = %e, "pool-error retention failed"),
    }
    match store.prune_plan_log(cutoff(days.plans)).await {
        Ok(n) => tracing::info!(deleted = n, days = days.plans, "plan-log retention"),
        Err(e) => tracing::warn!(error = %e, "plan-log retention failed"),
    }
    match store.prune_github(cutoff(GITHUB_DELIVERY_DAYS)).await {
        Ok(n) => tracing::info!(
            deleted = n,
            days = GITHUB_DELIVERY_DAYS,
            "GitHub delivery and finished-job retention"
        ),
        Err(e) => tracing::warn!(error = %e, "GitHub retention failed"),
    }
}

/// Days GitHub delivery ids (replay protection) and finished jobs are kept. GitHub
/// redelivers only deliveries of the past 3 days, so a week covers every replay.
const GITHUB_DELIVERY_DAYS: u32 = 7;

/// One sweep of one provider (see the module docs). Answers the instances
/// terminated.
pub async fn sweep(
    store: &Store,
    provider: &dyn Provider,
    metrics: &Metrics,
    seen: &Mutex<HashMap<(String, String), Instant>>,
    grace: Duration,
    now: Timestamp,
) -> Result<usize, String> {
    let kind = provider.kind().as_str().to_owned();
    let instances = provider
        .list(&ListScope::All)
        .await
        .map_err(|e| e.to_string())?;
    let mut orphans = Vec::new();
    for inst in instances.iter().filter(|i| i.state.is_alive()) {
        let owned = match &inst.worker_id {
            Some(wid) => match store.get_worker(wid).await.map_err(|e| e.to_string())? {
                Some(w) => {
                    w.state != WorkerState::Terminated
                        && w.instance_id.as_deref().is_none_or(|i| i == inst.id)
                }
                None => false,
            },
            None => false,
        };
        if !owned {
            orphans.push(inst);
        }
    }
    let current: Vec<(String, String)> = orphans
        .iter()
        .map(|i| (kind.clone(), i.id.clone()))
        .collect();
    let due: Vec<_> = {
        let mut first_seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        first_seen.retain(|k, _| k.0 != kind || current.contains(k));
        orphans
            .into_iter()
            .filter(|i| {
                let at = *first_seen
                    .entry((kind.clone(), i.id.clone()))
                    .or_insert_with(Instant::now);
                at.elapsed() >= grace
            })
            .cloned()
            .collect()
    };
    let mut terminated = 0;
    for inst in due {
        match provider.terminate(&inst.id).await {
            Ok(()) => {
                terminated += 1;
                metrics
                    .orphans
                    .get_or_create(&ProviderLabel {
                        provider: kind.clone(),
                    })
                    .inc();
                tracing::warn!(provider = %kind, instance = %inst.id, pool = ?inst.pool_id, worker = ?inst.worker_id, "orphan instance terminated");
                if let Some(pool) = &inst.pool_id {
                    record_orphan(store, pool, &inst.id, now).await;
                }
            }
            Err(e) => {
                tracing::warn!(provider = %kind, instance = %inst.id, error = %e, "could not terminate an orphan instance")
            }
        }
    }
    Ok(terminated)
}

async fn record_orphan(store: &Store, pool: &PoolId, instance: &str, now: Timestamp) {
    let message = format!(
        "instance {instance} carried this pool's tags but no live worker owned it; terminated by the orphan sweep"
    );
    if let Err(e) = store
        .record_pool_error(pool, None, "orphan_terminated", &message, now)
        .await
    {
        tracing::warn!(pool = %pool, error = %e, "could not record the orphan");
    }
}
