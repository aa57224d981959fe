//! The running control loop: every pool this replica holds a lease on is observed,
//! predicted, planned and acted on, every tick and at once when woken.
//!
//! Shape of one replica:
//!
//! - **Leases.** A task renews and takes leases every quarter of the lease TTL
//!   ([`store::Store::acquire_leases`]), each written to expire three quarters of the
//!   TTL later: a holder can miss two renewals, and a replica that dies loses its pools
//!   to another within one TTL (its lease runs out within ¾ TTL, the other replica
//!   looks within ¼ TTL). The pools held, with their fences, are what the ticks work
//!   on; a pool newly taken gets a round at once, with a fresh [`PoolController`]
//!   warmed from the stored queue history. Clean shutdown releases every lease.
//! - **Ticks.** Every `reconcile_interval` (and for one pool when [`Waker::wake`] is
//!   called: a pool edit, a queue sample showing more pending tasks than idle slots),
//!   each held pool whose previous round has finished gets a round, at most
//!   `concurrency` at a time. A pool stuck on a slow cloud call only skips its own
//!   ticks; every provider call has a timeout.
//! - **A round** ([`actuator`](crate::actuator)): read the spec, the new queue
//!   samples and the workers; list the pool's instances by capstan's tags and reconcile
//!   the rows with them (adopt launches a crash left unrecorded, retire instances the
//!   cloud took back); `tick` the controller; record the plan and forecast (fenced);
//!   apply the actions unless the pool or the service is in dry-run.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_core::{PoolId, ProviderKind, Timestamp};
use providers::Provider;
use store::{Fence, Store, StoreError};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::actuator::{self, PoolSlot};
use crate::metrics::Metrics;

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// This replica's name in leases (unique per process).
    pub owner: String,
    /// Time between ticks.
    pub reconcile_interval: Duration,
    /// How long a lease lasts unless renewed; a dead replica's pools move to another
    /// within this.
    pub lease_ttl: Duration,
    /// Pools reconciled at the same time, at most.
    pub concurrency: usize,
    /// Limit on each provider call.
    pub call_timeout: Duration,
    /// How long an offering is skipped after a capacity or quota error.
    pub unavailable_ttl: Duration,
    /// How long a `requested` worker may go without its instance showing up in the
    /// provider's list before it is given up (a crash between the intent and the
    /// create call, or a create that failed without an answer).
    pub launch_grace: Duration,
    /// Record plans, act on nothing (every pool).
    pub dry_run: bool,
    /// Days of queue history a new controller is warmed with.
    pub warm_days: u32,
    /// Launch-to-ready time assumed before a pool has measured one, in seconds.
    pub boot_estimate_s: f64,
    /// How often each pool's offerings (prices, zones) are asked of the provider.
    pub offerings_refresh: Duration,
    /// The API address written into each machine's user-data, so `capstan agent`
    /// finds the service without configuration. None: the agent needs `--server`.
    pub public_url: Option<String>,
}

impl LoopConfig {
    /// The defaults: 30 s ticks, 90 s leases, 16 pools at a time, 30 s per call,
    /// offerings unavailable for 3 min, launches confirmed within 3 min, two weeks of
    /// warm-up history, 120 s boots until measured, offerings refreshed every 5 min.
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            reconcile_interval: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(90),
            concurrency: 16,
            call_timeout: Duration::from_secs(30),
            unavailable_ttl: Duration::from_secs(180),
            launch_grace: Duration::from_secs(180),
            dry_run: false,
            warm_days: 14,
            boot_estimate_s: crate::controller::DEFAULT_BOOT_S,
            offerings_refresh: Duration::from_secs(300),
            public_url: None,
        }
    }
}

/// The provider plugins the loop can use, by kind.
#[derive(Debug, Clone, Default)]
pub struct Providers(HashMap<ProviderKind, Arc<dyn Provider>>);

impl Providers {
    /// No provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the plugin for its kind.
    pub fn insert(&mut self, provider: Arc<dyn Provider>) {
        self.0.insert(provider.kind(), provider);
    }

    /// The plugin for `kind`, if configured.
    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn Provider>> {
        self.0.get(&kind)
    }

    /// Every configured plugin.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.0.values()
    }

    /// The kinds configured, sorted.
    pub fn kinds(&self) -> Vec<ProviderKind> {
        let mut k: Vec<_> = self.0.keys().copied().collect();
        k.sort_by_key(|k| k.as_str());
        k
    }
}

/// Wakes the loop for one pool (a pool edit, a queue sample that needs capacity).
///
/// On PostgreSQL the wake-up goes to every replica through `NOTIFY`, so the one
/// holding the pool's lease reconciles it at once whichever replica took the request;
/// on SQLite it goes straight to this process's loop.
#[derive(Debug, Clone)]
pub struct Waker {
    local: mpsc::UnboundedSender<PoolId>,
    store: Store,
}

impl Waker {
    /// Asks for a round of `pool` now (ignored by replicas not holding it).
    pub fn wake(&self, pool: &PoolId) {
        if self.store.kind() == store::BackendKind::Postgres {
            let (store, pool, local) = (self.store.clone(), pool.clone(), self.local.clone());
            tokio::spawn(async move {
                if let Err(e) = store.notify_wake(&pool).await {
                    tracing::warn!(pool = %pool, error = %e, "could not notify other replicas; waking this one");
                    let _ = local.send(pool);
                }
            });
        } else {
            let _ = self.local.send(pool.clone());
        }
    }
}

/// What the loop shares between its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Store,
    pub(crate) providers: Providers,
    pub(crate) cfg: LoopConfig,
    pub(crate) metrics: Metrics,
    pub(crate) clock: fn() -> Timestamp,
    /// Pools held, by id: the fence and the pool's controller state (locked while a
    /// round runs).
    pools: Mutex<HashMap<PoolId, Arc<tokio::sync::Mutex<PoolSlot>>>>,
    rounds: Semaphore,
    /// This loop's wake-ups (a pool newly leased gets a round at once).
    wake_tx: mpsc::UnboundedSender<PoolId>,
    /// When a wake-up for a pool not held last triggered an early lease acquisition.
    early_acquire: Mutex<Option<Instant>>,
    /// Pools woken while their round was running: they get another round right after.
    woken_during_round: Mutex<HashSet<PoolId>>,
}

/// The control loop of one replica.
#[derive(Debug)]
pub struct Service {
    shared: Arc<Shared>,
    wake_rx: mpsc::UnboundedReceiver<PoolId>,
    wake_tx: mpsc::UnboundedSender<PoolId>,
}

impl Service {
    /// A loop over `store` acting through `providers`, reading the time from `clock`.
    /// Returns the loop and the [`Waker`] the API calls.
    pub fn new(
        store: Store,
        providers: Providers,
        cfg: LoopConfig,
        metrics: Metrics,
        clock: fn() -> Timestamp,
    ) -> (Self, Waker) {
        let (tx, rx) = mpsc::unbounded_channel();
        let rounds = Semaphore::new(cfg.concurrency.max(1));
        let waker = Waker {
            local: tx.clone(),
            store: store.clone(),
        };
        (
            Self {
                shared: Arc::new(Shared {
                    store,
                    providers,
                    cfg,
                    metrics,
                    clock,
                    pools: Mutex::new(HashMap::new()),
                    rounds,
                    wake_tx: tx.clone(),
                    early_acquire: Mutex::new(None),
                    woken_during_round: Mutex::new(HashSet::new()),
                }),
                wake_rx: rx,
                wake_tx: tx,
            },
            waker,
        )
    }

    /// One full pass without the loop: takes and renews leases, then runs one round of
    /// every pool held and waits for all of them. Answers how many pools were held.
    /// For benchmarks and tools; `run` is the service.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let ttl_ms = self.shared.written_ttl_ms();
        let leases = self
            .shared
            .store
            .acquire_leases(&self.shared.cfg.owner, ttl_ms)
            .await?;
        self.shared.install_leases(leases);
        let ids = self.shared.held();
        let n = ids.len();
        pass(self.shared.clone(), ids, true).await;
        Ok(n)
    }

    /// Runs until `shutdown` resolves, then waits for rounds in flight (each bounded by
    /// the call timeouts) and releases every lease.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let shared = self.shared.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        match shared
            .store
            .acquire_leases(&shared.cfg.owner, shared.written_ttl_ms())
            .await
        {
            Ok(leases) => shared.install_leases(leases),
            Err(e) => tracing::warn!(error = %e, "lease acquisition failed; retrying"),
        }
        let leases = tokio::spawn(lease_loop(shared.clone(), stop_rx.clone()));
        let listener = tokio::spawn(listen_for_wakes(
            shared.store.clone(),
            self.wake_tx.clone(),
            stop_rx.clone(),
        ));
        tokio::pin!(shutdown);
        let mut ticks = tokio::time::interval(shared.cfg.reconcile_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut in_flight = tokio::task::JoinSet::new();
        tracing::info!(
            owner = %shared.cfg.owner,
            interval_s = shared.cfg.reconcile_interval.as_secs_f64(),
            lease_ttl_s = shared.cfg.lease_ttl.as_secs_f64(),
            dry_run = shared.cfg.dry_run,
            providers = ?shared.providers.kinds(),
            "reconcile loop started"
        );
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticks.tick() => {
                    let ids: Vec<PoolId> = shared.held();
                    in_flight.spawn(pass(shared.clone(), ids, true));
                }
                Some(pool) = self.wake_rx.recv() => {
                    let mut ids = HashSet::from([pool]);
                    while let Ok(more) = self.wake_rx.try_recv() {
                        ids.insert(more);
                    }
                    let held: HashSet<PoolId> = shared.held().into_iter().collect();
                    let (ids, unknown): (Vec<PoolId>, Vec<PoolId>) =
                        ids.into_iter().partition(|p| held.contains(p));
                    if !unknown.is_empty() && shared.may_acquire_early() {
                        // A new pool (or one whose holder died): take its lease now
                        // rather than at the next renewal; a pool taken is woken.
                        let shared = shared.clone();
                        in_flight.spawn(async move {
                            match shared.store.acquire_leases(&shared.cfg.owner, shared.written_ttl_ms()).await {
                                Ok(leases) => shared.install_leases(leases),
                                Err(e) => tracing::warn!(error = %e, "lease acquisition failed; retrying at the next renewal"),
                            }
                        });
                    }
                    if !ids.is_empty() {
                        tracing::debug!(pools = ?ids, "woken");
                        in_flight.spawn(pass(shared.clone(), ids, false));
                    }
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        let _ = stop_tx.send(true);
        tracing::info!("reconcile loop stopping; waiting for rounds in flight");
        while in_flight.join_next().await.is_some() {}
        let _ = leases.await;
        listener.abort();
        match shared.store.release_leases(&shared.cfg.owner).await {
            Ok(n) => tracing::info!(released = n, "leases released"),
            Err(e) => {
                tracing::warn!(error = %e, "could not release leases; they expire by themselves")
            }
        }
    }
}

impl Shared {
    /// The expiry written with each lease: three quarters of the TTL (see the module
    /// docs).
    fn written_ttl_ms(&self) -> i64 {
        i64::try_from(self.cfg.lease_ttl.as_millis() * 3 / 4).unwrap_or(i64::MAX)
    }

    /// Whether a wake-up for a pool not held may take leases now: at most once a
    /// second, since on PostgreSQL every replica hears every wake-up.
    fn may_acquire_early(&self) -> bool {
        let mut last = self.early_acquire.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The pools held now.
    fn held(&self) -> Vec<PoolId> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<PoolId> = pools.keys().cloned().collect();
        ids.sort();
        ids
    }

    fn slot(&self, id: &PoolId) -> Option<Arc<tokio::sync::Mutex<PoolSlot>>> {
        let pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.get(id).cloned()
    }

    /// Drops a pool this replica no longer holds (lease lost, pool deleted).
    pub(crate) fn forget(&self, id: &PoolId) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if pools.remove(id).is_some() {
            self.metrics.forget_pool(id.as_str());
            self.metrics.leases_held.set(pools.len() as i64);
        }
    }

    /// Takes the leases from one renewal: new pools get a slot (warmed later by their
    /// first round), pools whose fence changed get a fresh one, pools not held any
    /// more are dropped.
    fn install_leases(&self, leases: Vec<store::Lease>) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let held: HashSet<PoolId> = leases.iter().map(|l| l.fence.pool_id.clone()).collect();
        let lost: Vec<PoolId> = pools
            .keys()
            .filter(|k| !held.contains(*k))
            .cloned()
            .collect();
        for id in lost {
            tracing::info!(pool = %id, "lease lost");
            pools.remove(&id);
            self.metrics.forget_pool(id.as_str());
        }
        for lease in leases {
            let id = lease.fence.pool_id.clone();
            let same = pools.get(&id).is_some_and(|s| {
                s.try_lock()
                    .map(|s| s.fence.token == lease.fence.token)
                    // A round is running on it: it keeps its slot; a changed fence
                    // is caught by that round's fenced writes.
                    .unwrap_or(true)
            });
            if !same {
                tracing::info!(pool = %id, fence = lease.fence.token, "lease acquired");
                pools.insert(
                    id.clone(),
                    Arc::new(tokio::sync::Mutex::new(PoolSlot::new(lease.fence))),
                );
                let _ = self.wake_tx.send(id);
            }
        }
        self.metrics.leases_held.set(pools.len() as i64);
    }
}

/// Forwards wake-ups from every replica (PostgreSQL `NOTIFY`) to this loop, until
/// stopped; on SQLite there is nothing to listen to.
async fn listen_for_wakes(
    store: Store,
    tx: mpsc::UnboundedSender<PoolId>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let mut listener = match store.wake_listener().await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for wake-ups; retrying in 5 s");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        loop {
            tokio::select! {
                r = listener.recv() => match r {
                    Ok(pool) => { let _ = tx.send(pool); }
                    Err(e) => {
                        tracing::warn!(error = %e, "wake-up listener failed; reconnecting");
                        break;
                    }
                },
                _ = stop.changed() => return,
            }
        }
    }
}

/// Renews and takes leases every quarter of the TTL until stopped.
async fn lease_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let ttl_ms = shared.written_ttl_ms();
    let mut every = tokio::time::interval(shared.cfg.lease_ttl / 4);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await; // The first renewal happened before the loop started.
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        match shared.store.acquire_leases(&shared.cfg.owner, ttl_ms).await {
            Ok(leases) => shared.install_leases(leases),
            Err(e) => tracing::warn!(error = %e, "lease renewal failed; retrying"),
        }
    }
}

/// One round for each of `ids` whose previous round has finished, at most
/// `concurrency` at once. `full` passes are timed as ticks.
async fn pass(shared: Arc<Shared>, ids: Vec<PoolId>, full: bool) {
    let started = Instant::now();
    let mut rounds = tokio::task::JoinSet::new();
    for id in ids {
        let Some(slot) = shared.slot(&id) else {
            continue;
        };
        let Ok(permit_slot) = slot.try_lock_owned() else {
            if full {
                tracing::debug!(pool = %id, "previous round still running; tick skipped");
            } else {
                // Woken mid-round (an edit, a sample): the news may have come after the
                // round read the store, so it gets another round when this one ends.
                let mut woken = shared
                    .woken_during_round
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                woken.insert(id);
            }
            continue;
        };
        let shared = shared.clone();
        rounds.spawn(async move {
            let Ok(_permit) = shared.rounds.acquire().await else {
                return;
            };
            let mut slot = permit_slot;
            let fence: Fence = slot.fence.clone();
            match actuator::round(&shared, &mut slot).await {
                Ok(actuator::RoundEnd::Continue) => {}
                Ok(actuator::RoundEnd::PoolGone) => shared.forget(&fence.pool_id),
                Err(StoreError::LeaseLost(_)) => {
                    tracing::warn!(pool = %fence.pool_id, "lease lost mid-round; stopped acting on the pool");
                    shared.forget(&fence.pool_id);
                }
                Err(e) => tracing::warn!(pool = %fence.pool_id, error = %e, "round failed; retrying next tick"),
            }
            drop(slot);
            let again = shared
                .woken_during_round
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&fence.pool_id);
            if again {
                let _ = shared.wake_tx.send(fence.pool_id.clone());
            }
        });
    }
    while rounds.join_next().await.is_some() {}
    if full {
        shared
            .metrics
            .tick_duration
            .observe(started.elapsed().as_secs_f64());
    }
}
