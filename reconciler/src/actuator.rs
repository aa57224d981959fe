//! One round of one pool: observe, predict, plan, record, apply.
//!
//! **The launch path** writes before it calls: for each instance, a `requested`
//! worker row with its idempotency token (fenced: only the lease holder can), then one
//! `Provider::launch` call for the action, then each instance's result on its row
//! (`booting` with the instance id, or retired with the failure). A crash anywhere in
//! between leaves `requested` rows whose tokens and worker ids the provider knows: the
//! next round (this replica after a restart, or another one after the lease moves)
//! lists the pool's instances by capstan's tags and adopts each instance into its row;
//! a row whose instance never shows up within the launch grace is given up, and an
//! instance that shows up later anyway is an orphan the sweep terminates. So no
//! instance is leaked and none is launched twice (the provider answers a repeated
//! token with the instance it already made).
//!
//! **The terminate path** marks the row `terminating` first, then asks the provider,
//! then marks it `terminated`; a `terminating` row whose instance is still alive is
//! asked again next round.
//!
//! **Errors** land in the pool's errors, deduplicated by (launch config, kind,
//! message). Capacity and quota errors (and offerings the provider cannot offer
//! there) make the offering unavailable for the TTL, so the next plan falls back to the
//! next offering. Throttling backs the pool's launches off (doubling up to 5 minutes).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use capstan_core::secret::digest_hex;
use capstan_core::{
    Action, Forecast, LaunchConfig, Plan, PoolId, PoolSpec, QueueSample, TerminateReason,
    Timestamp, Worker, WorkerId, WorkerState,
};
use providers::{
    ErrorKind, Instance, InstanceRequest, InstanceState, LaunchRequest, ListScope, Provider,
    ProviderError,
};
use store::{Fence, IdlePeriod, StoreError};

use crate::controller::PoolController;
use crate::crash;
use crate::hedge::BOOT_MEMORY;
use crate::metrics::{FailureLabels, OfferingLabels, PoolGauges, PoolLabel, ReasonLabels};
use crate::service::Shared;

/// Offsets (seconds) of the forecast points recorded for people: now + lead, then
/// further ahead up to six hours.
const POINT_OFFSETS_S: [f64; 8] = [
    0.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14_400.0, 21_600.0,
];

/// Longest back-off after throttling.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The state a replica keeps for a pool it holds.
#[derive(Debug)]
pub(crate) struct PoolSlot {
    pub(crate) fence: Fence,
    controller: Option<PoolController>,
    last_sample: Option<QueueSample>,
    offerings_at: Option<Instant>,
    /// Workers whose boot time was fed to the controller.
    boots_seen: HashSet<WorkerId>,
    /// Launches wait until then after throttling.
    backoff_until: Option<Instant>,
    backoff: Duration,
    /// Task runs recorded up to then were fed to the controller.
    runs_read_until: Timestamp,
    /// When this replica last recorded the pool's chart point (`store::series`).
    series_at: Option<Timestamp>,
    /// Workers idle at the last round, with the start of their idle period: a period
    /// that ended since fed the controller's idle timeout ([`crate::idle`]).
    idle_seen: HashMap<WorkerId, Timestamp>,
}

impl PoolSlot {
    pub(crate) fn new(fence: Fence) -> Self {
        Self {
            fence,
            controller: None,
            last_sample: None,
            offerings_at: None,
            boots_seen: HashSet::new(),
            backoff_until: None,
            backoff: Duration::ZERO,
            runs_read_until: Timestamp::from_unix_ms(0),
            series_at: None,
            idle_seen: HashMap::new(),
        }
    }
}

/// How a round ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoundEnd {
    /// Keep the pool.
    Continue,
    /// The pool no longer exists (deleted, or removed after draining).
    PoolGone,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// One round of the pool in `slot`. See the module docs.
pub(crate) async fn round(shared: &Shared, slot: &mut PoolSlot) -> Result<RoundEnd, StoreError> {
    let store = &shared.store;
    let fence = slot.fence.clone();
    let id = fence.pool_id.clone();
    let Some(record) = store.get_pool(&id).await? else {
        return Ok(RoundEnd::PoolGone);
    };
    let spec = &record.spec;
    let now = (shared.clock)();

    let mut workers = store.list_workers(&id, false).await?;
    // The controller: new on a new lease, warmed from the stored history.
    if slot.controller.is_none() {
        let (ctl, boots_seen) = warm(shared, spec, now).await?;
        slot.controller = Some(ctl);
        slot.boots_seen = boots_seen;
        slot.runs_read_until = now.plus_secs(-i64::from(shared.cfg.warm_days) * 86_400);
    }
    let Some(ctl) = slot.controller.as_mut() else {
        return Ok(RoundEnd::Continue);
    };
    if let Err(e) = ctl.update_spec(spec) {
        store
            .record_pool_error(&id, None, "invalid_spec", &e.to_string(), now)
            .await?;
        return Ok(RoundEnd::Continue);
    }

    // Observe: new queue samples, the workers, the provider's instances.
    let since = ctl.last_sample_at().map_or(now.plus_secs(-60), |t| {
        Timestamp::from_unix_ms(t.unix_ms() + 1)
    });
    let samples = store
        .queue_samples(&id, since, Timestamp::from_unix_ms(now.unix_ms() + 1))
        .await?;
    ctl.observe_all(&samples);
    if let Some(last) = samples.last() {
        slot.last_sample = Some(*last);
    }
    // Run times of finished tasks, as the workers' heartbeats reported them.
    let runs = store
        .task_runs_recorded(&id, slot.runs_read_until, now)
        .await?;
    for (recorded_at, run) in &runs {
        ctl.observe_run_time(run.duration_ms as f64 / 1000.0);
        slot.runs_read_until = *recorded_at;
    }
    let Some(provider) = shared.providers.get(spec.provider).cloned() else {
        store
            .record_pool_error(
                &id,
                None,
                "provider_not_configured",
                &format!(
                    "provider {} is not configured on this server (see [providers.{}] in the config file)",
                    spec.provider.as_str(),
                    spec.provider.as_str()
                ),
                now,
            )
            .await?;
        return Ok(RoundEnd::Continue);
    };
    let dry_run = shared.cfg.dry_run || spec.scaling.dry_run;
    match call(shared, provider.list(&ListScope::Pool(id.clone()))).await {
        Ok(instances) if !dry_run => {
            let (retry_terminate, requeued) =
                sync(shared, &fence, &mut workers, &instances, now).await?;
            // The tasks an interruption took go back to the queue: the forecast keeps
            // a spare for the next ones (`Predictor::requeue_rate_per_s`).
            if requeued > 0 {
                ctl.observe_requeued(requeued);
            }
            for (worker, instance) in retry_terminate {
                if let Err(e) = call(shared, provider.terminate(&instance)).await {
                    record_error(shared, &id, None, &e, now).await?;
                } else {
                    retire(shared, &fence, &worker, None, now).await?;
                    workers.retain(|w| w.id != worker);
                }
            }
        }
        Ok(_) => {}
        Err(e) => record_error(shared, &id, None, &e, now).await?,
    }
    for w in &workers {
        if let Some(boot) = w.boot_s()
            && slot.boots_seen.insert(w.id.clone())
        {
            ctl.observe_boot(boot);
        }
    }
    // Only workers still listed can come round again.
    let listed: HashSet<&WorkerId> = workers.iter().map(|w| &w.id).collect();
    slot.boots_seen.retain(|id| listed.contains(id));
    // Idle periods that ended since the last round: by a task (the worker is busy or
    // idle since later), or by the worker going away (censored). Known to the round.
    let idle_now: HashMap<WorkerId, Timestamp> = workers
        .iter()
        .filter(|w| w.busy_slots == 0 && w.state.is_live())
        .filter_map(|w| w.idle_since.map(|t| (w.id.clone(), t)))
        .collect();
    let live: HashSet<&WorkerId> = workers
        .iter()
        .filter(|w| w.state.is_live())
        .map(|w| &w.id)
        .collect();
    // A reused worker idled at the level of the pool's busy slots now, its task's
    // included (the most recently freed worker takes the next task).
    let busy: u32 = workers
        .iter()
        .filter(|w| w.state.is_live())
        .map(|w| w.busy_slots)
        .fold(0, u32::saturating_add);
    let ended: Vec<IdlePeriod> = slot
        .idle_seen
        .iter()
        .filter(|(id, since)| idle_now.get(*id) != Some(*since))
        .map(|(id, since)| IdlePeriod {
            worker_id: id.clone(),
            ended_at: now,
            idle_ms: now.unix_ms().saturating_sub(since.unix_ms()).max(0),
            reused: live.contains(id),
            level: live.contains(id).then_some(busy),
        })
        .collect();
    // Stored before the controller learns them, so a replica that takes the pool over
    // replays the same periods ([`warm`]); a failed write changes nothing here and the
    // next round sees the same periods end.
    store.record_idle_periods(&fence, &ended).await?;
    for p in &ended {
        ctl.observe_idle_gap(p.idle_ms as f64 / 1000.0, p.reused, p.ended_at, p.level);
    }
    slot.idle_seen = idle_now;
    // A static pool's offerings are its registered machines, a store read with no
    // cloud call to spare: read them every round, so a machine registered after the
    // pool's first round is leasable now rather than at the next refresh.
    if spec.provider == capstan_core::ProviderKind::Static
        || slot
            .offerings_at
            .is_none_or(|t| t.elapsed() >= shared.cfg.offerings_refresh)
    {
        slot.offerings_at = Some(Instant::now());
        let mut offerings = Vec::new();
        let mut complete = true;
        for lc in &spec.launch_configs {
            match call(shared, provider.offerings(&id, lc)).await {
                Ok(o) => offerings.extend(o),
                Err(e) => {
                    complete = false;
                    record_error(shared, &id, Some(&lc.id), &e, now).await?;
                }
            }
        }
        if complete && !offerings.is_empty() {
            ctl.set_offerings(offerings);
        }
    }

    // Predict and plan.
    let started = Instant::now();
    let (mut forecast, mut plan) = ctl.tick(&workers, now);
    shared
        .metrics
        .plan_duration
        .observe(started.elapsed().as_secs_f64());
    if record.deleting_since.is_some() {
        plan.actions = drain_all(&workers);
    }
    forecast.points =
        ctl.predictor()
            .forecast_points(spec, now, &POINT_OFFSETS_S.map(|o| o + ctl.lead_s()));
    set_gauges(shared, &id, &workers, &plan, &forecast, slot.last_sample);
    store
        .record_plan(&fence, &shared.cfg.owner, &plan, &forecast)
        .await?;
    // The dashboard's chart point, at most one per POINT_INTERVAL_S; a failed write
    // costs a point, never the round.
    if slot
        .series_at
        .is_none_or(|t| now.secs_since(t) >= store::series::POINT_INTERVAL_S as f64)
    {
        // A controller warmed from the stored history has read the latest sample
        // already, so the round saw none: look it up once.
        if slot.last_sample.is_none() {
            let recent = store
                .queue_samples(
                    &id,
                    now.plus_secs(-300),
                    Timestamp::from_unix_ms(now.unix_ms() + 1),
                )
                .await;
            // Like the point itself, not worth failing the round over.
            slot.last_sample = recent.ok().and_then(|r| r.last().copied());
        }
        let point =
            store::PoolPoint::of_round(spec, &workers, &plan, &forecast, slot.last_sample.as_ref());
        match store.record_pool_point(&id, &point).await {
            Ok(()) => slot.series_at = Some(now),
            Err(e) => {
                tracing::warn!(pool = %id, error = %e, "cannot record the pool's chart point")
            }
        }
    }
    if !plan.actions.is_empty() {
        tracing::info!(
            pool = %id,
            target = plan.report.target_slots,
            current = plan.report.current_slots,
            set_by = ?plan.report.target_set_by,
            actions = plan.actions.len(),
            dry_run,
            "plan"
        );
    }
    if dry_run {
        return Ok(RoundEnd::Continue);
    }

    // Apply.
    if record.deleting_since.is_some()
        && workers.iter().all(|w| !w.state.is_live())
        && store.finish_pool_delete(&fence, "reconciler", now).await?
    {
        tracing::info!(pool = %id, "pool drained and removed");
        return Ok(RoundEnd::PoolGone);
    }
    let throttled = slot.backoff_until.is_some_and(|t| Instant::now() < t);
    for action in plan.actions {
        match action {
            Action::Launch {
                launch_config_id,
                zone,
                count,
                idempotency_token,
            } => {
                if throttled {
                    continue;
                }
                let Some(lc) = spec.launch_config(&launch_config_id) else {
                    continue;
                };
                let outcome = launch(
                    shared,
                    &fence,
                    spec,
                    provider.as_ref(),
                    lc,
                    zone,
                    count,
                    &idempotency_token,
                    now,
                )
                .await?;
                let key = offering_key(lc, outcome.zone.as_deref());
                let Some(ctl) = slot.controller.as_mut() else {
                    break;
                };
                match outcome.error {
                    Some(e) if e.marks_offering_unavailable() => {
                        ctl.offering_unavailable(&key, &e.detail().to_string(), now);
                    }
                    Some(e) if e.kind() == ErrorKind::Throttled => {
                        slot.backoff = (slot.backoff * 2)
                            .max(shared.cfg.reconcile_interval)
                            .min(MAX_BACKOFF);
                        slot.backoff_until = Some(Instant::now() + slot.backoff);
                        tracing::warn!(pool = %id, backoff_s = slot.backoff.as_secs(), "throttled; backing off launches");
                        break;
                    }
                    Some(_) => {}
                    None => {
                        ctl.offering_available(&key);
                        slot.backoff = Duration::ZERO;
                    }
                }
            }
            Action::Terminate { worker, reason } => {
                let Some(w) = workers.iter().find(|w| w.id == worker) else {
                    continue;
                };
                terminate(shared, &fence, provider.as_ref(), w, reason, now).await?;
            }
        }
    }
    Ok(RoundEnd::Continue)
}

/// A fresh controller for `spec`, warmed with its stored queue history and the boot
/// times of its most recently registered workers (terminated ones included, so the
/// slow-boot hedge does not start from nothing), and the ids of those workers.
async fn warm(
    shared: &Shared,
    spec: &PoolSpec,
    now: Timestamp,
) -> Result<(PoolController, HashSet<WorkerId>), StoreError> {
    let recent: Vec<(WorkerId, f64)> = shared
        .store
        .recently_registered(&spec.id, BOOT_MEMORY as u32)
        .await?
        .into_iter()
        .filter_map(|w| Some((w.id.clone(), w.boot_s()?)))
        .collect();
    let mut boots: Vec<f64> = recent.iter().map(|(_, b)| *b).collect();
    boots.sort_by(f64::total_cmp);
    let boot_s = boots
        .get(boots.len() / 2)
        .copied()
        .unwrap_or(shared.cfg.boot_estimate_s);
    let mut ctl = match PoolController::new(spec, boot_s) {
        Ok(c) => c,
        Err(e) => {
            // Validation keeps bad schedules out; a spec that still fails gets a
            // controller without schedules so demand is still served.
            let mut plain = spec.clone();
            plain.schedules.clear();
            tracing::warn!(pool = %spec.id, error = %e, "spec does not plan; ignoring its schedules");
            PoolController::new(&plain, boot_s).map_err(|e| StoreError::Corrupt(e.to_string()))?
        }
    }
    .with_unavailable_ttl_s(shared.cfg.unavailable_ttl.as_secs() as i64);
    let since = now.plus_secs(-i64::from(shared.cfg.warm_days) * 86_400);
    let until = Timestamp::from_unix_ms(now.unix_ms() + 1);
    let history = shared.store.queue_samples(&spec.id, since, until).await?;
    let idle = shared.store.idle_periods(&spec.id, since, until).await?;
    replay(&mut ctl, &history, &idle);
    let mut seen = HashSet::with_capacity(recent.len());
    for (id, boot) in recent {
        ctl.observe_boot(boot);
        seen.insert(id);
    }
    tracing::info!(
        pool = %spec.id,
        samples = history.len(),
        idle_periods = idle.len(),
        boots = seen.len(),
        boot_s,
        idle_timeout_s = ctl.chosen_idle_timeout_s(),
        "controller warmed from stored history"
    );
    Ok((ctl, seen))
}

/// Feeds stored queue samples and idle periods to `ctl` in the order the rounds fed
/// them: by time, a round's samples (at or before its time) before the idle periods
/// it saw end, so a worker retired idle is claimed, as a ghost, by the later samples
/// whose tasks found no free slot, as it was when it ran ([`crate::idle`]).
fn replay(ctl: &mut PoolController, samples: &[QueueSample], idle: &[IdlePeriod]) {
    let mut samples = samples.iter().peekable();
    for p in idle {
        while let Some(s) = samples.next_if(|s| s.at <= p.ended_at) {
            ctl.observe(s);
        }
        ctl.observe_idle_gap(p.idle_ms as f64 / 1000.0, p.reused, p.ended_at, p.level);
    }
    ctl.observe_all(samples);
}

/// A provider call bounded by the call timeout (a timeout is a transient error).
async fn call<T>(
    shared: &Shared,
    f: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    match tokio::time::timeout(shared.cfg.call_timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(ProviderError::new(
            ErrorKind::Transient,
            "capstan.Timeout",
            format!(
                "the provider did not answer within {} s",
                shared.cfg.call_timeout.as_secs()
            ),
        )),
    }
}

/// Records a provider error in the pool's errors (deduplicated).
async fn record_error(
    shared: &Shared,
    pool: &PoolId,
    launch_config: Option<&str>,
    e: &ProviderError,
    now: Timestamp,
) -> Result<(), StoreError> {
    shared
        .store
        .record_pool_error(
            pool,
            launch_config,
            e.kind_str(),
            &e.detail().to_string(),
            now,
        )
        .await
}

/// The health key of an offering launched with `zone`.
fn offering_key(lc: &LaunchConfig, zone: Option<&str>) -> String {
    match (zone, &lc.zone) {
        (Some(z), None) => format!("{}/{z}", lc.id),
        _ => lc.id.clone(),
    }
}

/// The plan of a pool being deleted: idle workers go, busy ones drain first.
fn drain_all(workers: &[Worker]) -> Vec<Action> {
    workers
        .iter()
        .filter(|w| w.state.is_live() && w.state != WorkerState::Terminating)
        .filter(|w| w.busy_slots == 0 || w.state != WorkerState::Ready)
        .map(|w| Action::Terminate {
            worker: w.id.clone(),
            reason: TerminateReason::PoolDeleted,
        })
        .collect()
}

fn set_gauges(
    shared: &Shared,
    id: &PoolId,
    workers: &[Worker],
    plan: &Plan,
    forecast: &Forecast,
    last: Option<QueueSample>,
) {
    let mut g = PoolGauges {
        desired: plan.report.target_slots,
        forecast: forecast.target_slots,
        pending: last.map_or(0, |s| s.pending),
        ..PoolGauges::default()
    };
    for w in workers {
        if w.state.counts_as_capacity() {
            g.existing += w.capacity;
        }
        match w.state {
            WorkerState::Requested | WorkerState::Booting => g.booting += w.capacity,
            WorkerState::Ready | WorkerState::Draining => {
                g.busy += w.busy_slots;
                if w.state == WorkerState::Ready {
                    g.idle += w.capacity.saturating_sub(w.busy_slots);
                }
            }
            _ => {}
        }
    }
    shared.metrics.set_pool(id.as_str(), &g);
}

/// Links worker `id` to `instance` and moves it from `requested` to `booting`: the
/// record after a launch, and the adoption of a launch a crash left unrecorded.
async fn record_instance(
    shared: &Shared,
    fence: &Fence,
    id: &WorkerId,
    instance: &str,
    now: Timestamp,
) -> Result<Worker, StoreError> {
    shared
        .store
        .modify_worker_fenced(fence, id, |w| {
            w.instance_id = Some(instance.to_owned());
            if w.state == WorkerState::Requested {
                w.transition(WorkerState::Booting, now)?;
            }
            Ok(())
        })
        .await
}

/// Marks a worker gone: `terminating` (if not yet) then `terminated`, with `failure`
/// when it did not end by capstan's choice.
async fn retire(
    shared: &Shared,
    fence: &Fence,
    id: &WorkerId,
    failure: Option<String>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let r = shared
        .store
        .modify_worker_fenced(fence, id, |w| {
            if w.state == WorkerState::Terminated {
                return Ok(());
            }
            if w.state != WorkerState::Terminating {
                w.transition(WorkerState::Terminating, now)?;
            }
            w.transition(WorkerState::Terminated, now)?;
            if failure.is_some() && w.failure.is_none() {
                w.failure = failure.clone();
            }
            Ok(())
        })
        .await;
    match r {
        Ok(_) | Err(StoreError::WorkerNotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reconciles the worker rows with the provider's instances (see the module docs);
/// `workers` is updated in place. Answers the `terminating` workers whose instance is
/// still alive (their terminate call is repeated), and the busy slots of the workers
/// found interrupted (their tasks go back to the queue).
async fn sync(
    shared: &Shared,
    fence: &Fence,
    workers: &mut Vec<Worker>,
    instances: &[Instance],
    now: Timestamp,
) -> Result<(Vec<(WorkerId, String)>, u32), StoreError> {
    let by_id: HashMap<&str, &Instance> = instances.iter().map(|i| (i.id.as_str(), i)).collect();
    let by_worker: HashMap<&WorkerId, &Instance> = instances
        .iter()
        .filter_map(|i| Some((i.worker_id.as_ref()?, i)))
        .collect();
    let grace_ms = millis(shared.cfg.launch_grace);
    let mut retry = Vec::new();
    let mut gone = Vec::new();
    let mut requeued = 0u32;
    for w in workers.iter_mut() {
        let inst = w
            .instance_id
            .as_deref()
            .and_then(|i| by_id.get(i))
            .or_else(|| by_worker.get(&w.id))
            .copied();
        let age_ms = now.unix_ms() - w.state_changed_at.unix_ms();
        match (w.state, inst) {
            (WorkerState::Requested, Some(i)) if i.state.is_alive() => {
                *w = record_instance(shared, fence, &w.id, &i.id, now).await?;
                tracing::info!(pool = %fence.pool_id, worker = %w.id, instance = %i.id, "adopted an instance whose launch was not recorded");
            }
            (WorkerState::Requested, Some(i)) => {
                gone.push((
                    w.id.clone(),
                    Some(format!(
                        "instance {} ended before its launch was recorded ({})",
                        i.id, i.state
                    )),
                ));
            }
            (WorkerState::Requested, None) if age_ms >= grace_ms => {
                gone.push((
                    w.id.clone(),
                    Some(format!(
                        "launch not confirmed: no instance with this worker's tag appeared within {} s",
                        grace_ms / 1000
                    )),
                ));
            }
            (WorkerState::Booting | WorkerState::Ready | WorkerState::Draining, Some(i))
                if i.state == InstanceState::Interrupted =>
            {
                shared
                    .metrics
                    .interruptions
                    .get_or_create(&PoolLabel {
                        pool: fence.pool_id.to_string(),
                    })
                    .inc();
                tracing::warn!(pool = %fence.pool_id, worker = %w.id, instance = %i.id, reason = ?i.state_reason, "instance interrupted by the provider; replacing it");
                requeued = requeued.saturating_add(w.busy_slots);
                gone.push((
                    w.id.clone(),
                    Some(format!(
                        "interrupted: {}",
                        i.state_reason
                            .as_deref()
                            .unwrap_or("taken back by the provider")
                    )),
                ));
            }
            (WorkerState::Booting | WorkerState::Ready | WorkerState::Draining, Some(i))
                if i.state.is_gone() || i.state == InstanceState::Stopped =>
            {
                gone.push((
                    w.id.clone(),
                    Some(format!("instance {} is {} (not by capstan)", i.id, i.state)),
                ));
            }
            (WorkerState::Booting | WorkerState::Ready | WorkerState::Draining, None)
                if age_ms >= grace_ms =>
            {
                gone.push((
                    w.id.clone(),
                    Some("the instance no longer exists at the provider".to_owned()),
                ));
            }
            (WorkerState::Terminating, Some(i))
                if !i.state.is_gone() && i.state != InstanceState::Stopped =>
            {
                retry.push((w.id.clone(), i.id.clone()));
            }
            (WorkerState::Terminating, _) => gone.push((w.id.clone(), None)),
            _ => {}
        }
    }
    for (id, failure) in &gone {
        retire(shared, fence, id, failure.clone(), now).await?;
    }
    let gone: HashSet<WorkerId> = gone.into_iter().map(|(id, _)| id).collect();
    workers.retain(|w| !gone.contains(&w.id));
    Ok((retry, requeued))
}

/// What a launch action did.
struct LaunchResult {
    zone: Option<String>,
    error: Option<ProviderError>,
}

/// Random hex from the OS.
fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    if getrandom::getrandom(&mut b).is_err() {
        // No OS randomness: fall back to the clock (ids stay unique per process).
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{t:x}");
    }
    hex::encode(b)
}

/// The launch path (see the module docs).
#[allow(clippy::too_many_arguments)]
async fn launch(
    shared: &Shared,
    fence: &Fence,
    spec: &PoolSpec,
    provider: &dyn Provider,
    lc: &LaunchConfig,
    zone: Option<String>,
    count: u32,
    token: &str,
    now: Timestamp,
) -> Result<LaunchResult, StoreError> {
    let pool = &fence.pool_id;
    let key = offering_key(lc, zone.as_deref());
    let mut instances = Vec::new();
    for i in 0..count {
        let worker_id = WorkerId::from_string(format!("w-{}", random_hex(8)));
        let request = InstanceRequest {
            worker_id: worker_id.clone(),
            idempotency_token: format!("{token}-{i}"),
            registration_token: random_hex(32),
        };
        let registration_digest = digest_hex(&request.registration_token);
        let w = Worker::requested(
            worker_id,
            pool.clone(),
            spec.provider,
            Some(lc.id.clone()),
            lc.capacity,
            request.idempotency_token.clone(),
            now,
        );
        match shared
            .store
            .insert_launch_intent(fence, &w, &registration_digest)
            .await
        {
            Ok(()) => instances.push(request),
            // The same token was recorded by an earlier attempt: that row is adopted
            // or given up by the sync, never launched again from here.
            Err(StoreError::WorkerExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if instances.is_empty() {
        return Ok(LaunchResult { zone, error: None });
    }
    crash::point("launch:intent-recorded");
    let request = LaunchRequest {
        api_url: shared.cfg.public_url.clone(),
        pool_id: pool.clone(),
        launch_config: lc.clone(),
        zone: zone.clone(),
        instances,
    };
    let outcome = call(shared, provider.launch(&request)).await;
    crash::point("launch:provider-returned");
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // Nothing was attempted (invalid request), or no answer: a timeout leaves
            // the rows requested, to be adopted or given up by the sync.
            record_error(shared, pool, Some(&lc.id), &e, now).await?;
            count_failure(shared, pool, &key, &e, request.instances.len());
            if e.kind() != ErrorKind::Transient {
                for i in &request.instances {
                    retire(
                        shared,
                        fence,
                        &i.worker_id,
                        Some(format!("launch failed: {e}")),
                        now,
                    )
                    .await?;
                }
            }
            return Ok(LaunchResult {
                zone,
                error: Some(e),
            });
        }
    };
    for (n, inst) in outcome.launched.iter().enumerate() {
        let Some(worker) = inst
            .worker_id
            .clone()
            .or_else(|| request.instances.get(n).map(|r| r.worker_id.clone()))
        else {
            continue;
        };
        record_instance(shared, fence, &worker, &inst.id, now).await?;
        if n == 0 {
            crash::point("launch:first-recorded");
        }
        shared
            .metrics
            .launches
            .get_or_create(&OfferingLabels {
                pool: pool.to_string(),
                offering: key.clone(),
            })
            .inc();
        tracing::info!(pool = %pool, worker = %worker, offering = %key, instance = %inst.id, market = lc.market.as_str(), "launched");
    }
    let first_error = outcome.first_error().cloned();
    for f in &outcome.failed {
        count_failure(shared, pool, &key, &f.error, 1);
        tracing::warn!(pool = %pool, worker = %f.worker_id, offering = %key, error = %f.error, "launch failed");
        if f.error.kind() == ErrorKind::Transient {
            continue; // May exist after all: adopted or given up by the sync.
        }
        retire(
            shared,
            fence,
            &f.worker_id,
            Some(format!("launch failed: {}", f.error)),
            now,
        )
        .await?;
    }
    if let Some(e) = &first_error {
        record_error(shared, pool, Some(&lc.id), e, now).await?;
    }
    Ok(LaunchResult {
        zone,
        error: first_error,
    })
}

fn count_failure(shared: &Shared, pool: &PoolId, key: &str, e: &ProviderError, n: usize) {
    shared
        .metrics
        .launch_failures
        .get_or_create(&FailureLabels {
            pool: pool.to_string(),
            offering: key.to_owned(),
            kind: e.kind_str().to_owned(),
        })
        .inc_by(n as u64);
}

/// The terminate path (see the module docs).
async fn terminate(
    shared: &Shared,
    fence: &Fence,
    provider: &dyn Provider,
    w: &Worker,
    reason: TerminateReason,
    now: Timestamp,
) -> Result<(), StoreError> {
    let pool = &fence.pool_id;
    let count = |shared: &Shared| {
        shared
            .metrics
            .terminations
            .get_or_create(&ReasonLabels {
                pool: pool.to_string(),
                reason: reason.as_str().to_owned(),
            })
            .inc();
    };
    let Some(instance) = w.instance_id.clone() else {
        // No instance was ever recorded. If the create call did happen after all, the
        // instance is an orphan for the sweep.
        retire(
            shared,
            fence,
            &w.id,
            Some(format!("terminated before launch ({reason})")),
            now,
        )
        .await?;
        count(shared);
        tracing::info!(pool = %pool, worker = %w.id, reason = %reason, "terminated (no instance)");
        return Ok(());
    };
    shared
        .store
        .modify_worker_fenced(fence, &w.id, |w| {
            if w.state != WorkerState::Terminating {
                w.transition(WorkerState::Terminating, now)?;
            }
            Ok(())
        })
        .await?;
    crash::point("terminate:marked");
    let result = call(shared, provider.terminate(&instance)).await;
    crash::point("terminate:provider-returned");
    match result {
        Ok(()) => {
            retire(shared, fence, &w.id, None, now).await?;
            count(shared);
            tracing::info!(pool = %pool, worker = %w.id, instance = %instance, offering = w.launch_config_id.as_deref().unwrap_or(""), reason = %reason, "terminated");
        }
        Err(e) => {
            tracing::warn!(pool = %pool, worker = %w.id, instance = %instance, error = %e, "terminate failed; retried next round");
            record_error(shared, pool, w.launch_config_id.as_deref(), &e, now).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_lets_later_samples_claim_a_worker_retired_idle() {
        let spec = PoolSpec::from_yaml(
            "id: p\nprovider: fake\nmax_capacity: 5\nlaunch_configs: [{id: a, instance_type: t}]\n",
        )
        .unwrap();
        let at = Timestamp::from_unix_secs;
        let sample = |t: i64, pending: u32| QueueSample {
            at: at(t),
            pending,
            running: 0,
            arrivals: pending,
            completions: 0,
        };
        // A worker idle since 510 s went away at 1,010 s; at 1,030 s a task waited.
        // Replayed in the rounds' order the task claims its gap (520 s, reused); fed
        // after every sample it would stay a ghost.
        let samples = [sample(1_000, 0), sample(1_030, 1)];
        let idle = [IdlePeriod {
            worker_id: WorkerId::from_string("w"),
            ended_at: at(1_010),
            idle_ms: 500_000,
            reused: false,
            level: None,
        }];
        let mut ctl = PoolController::new(&spec, 120.0).unwrap();
        replay(&mut ctl, &samples, &idle);
        assert_eq!((ctl.idle_gaps().len(), ctl.idle_gaps().ghosts()), (1, 0));
        assert_eq!(ctl.last_sample_at(), Some(at(1_030)));
        // A period at a sample's time comes after it, as in the round that saw both.
        let mut ctl = PoolController::new(&spec, 120.0).unwrap();
        replay(
            &mut ctl,
            &samples[1..],
            &[IdlePeriod {
                ended_at: at(1_030),
                ..idle[0].clone()
            }],
        );
        assert_eq!((ctl.idle_gaps().len(), ctl.idle_gaps().ghosts()), (0, 1));
    }
}
