//! Control-loop benchmark on PostgreSQL with the fake provider:
//! `cargo bench -p reconciler --bench loop`.
//!
//! Three measurements, on throwaway databases on `CAPSTAN_TEST_POSTGRES_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`; the bench exits with a note
//! when it is unreachable):
//!
//! **Pass.** `POOLS` pools (provider `fake`, one launch config, `reactive`), each with
//! `WORKERS` workers (95 % `ready`, busy, heartbeat fresh; 5 % `booting`), every worker
//! backed by an instance in the [`FakeProvider`] (seeded through its `launch` with the
//! workers' ids and tokens, so rows and cloud agree), and queue samples whose demand
//! matches the fleet (running = ready slots, pending = booting slots): the steady state,
//! where a plan has no action. It times [`Service::run_once`] — take and renew the
//! leases, then one round of every pool (get the pool, read new samples, list workers,
//! list the pool's instances at the provider, tick, record plan and forecast), 16 at a
//! time as the service runs them. The first pass warms every controller from the
//! stored history (one hour of samples per pool) and is reported on its own; then
//! `PASSES` steady passes, each after one new sample per pool (not timed), reported as
//! best and median. Queries per pool: the database's `xact_commit + xact_rollback`
//! from `pg_stat_database` around a pass, divided by the pools. Every autocommit
//! statement is one transaction, so this is the statements per pool, except that the
//! plan upsert (a fenced `INSERT … ON CONFLICT` in a transaction) counts once. Backends
//! publish their counters up to 10 s after going idle, so each reading waits 11 s; the
//! reading's own query adds at most one.
//!
//! **Wake latency.** `TRIALS` fresh pools (no workers) on a running [`Service::run`]
//! with a 30 s tick, so only the wake path can launch in time. Per trial: a queue
//! sample with 3 pending tasks stored the way the API's queue push does
//! (`record_queue_samples`), then [`Waker::wake`]; measured from just before the store
//! call to the first `Provider::launch` call for that pool (a wrapper around the fake
//! provider notes its instant). The pools are leased and their controllers warmed by
//! the service's first tick before the first trial; trials are spaced 100–400 ms apart.
//! On PostgreSQL the wake-up travels as a `NOTIFY` the loop listens for, as in
//! production.
//!
//! **Wake latency under load** (part `loaded`): the same trials on the pass database,
//! beside its `POOLS` steady pools, with the service ticking every
//! `CAPSTAN_BENCH_LOADED_TICK_MS` (default 1000), so most wake-ups land while a pass
//! over every pool is running. No pool but the trial pools may launch.
//!
//! Environment:
//! - `CAPSTAN_BENCH_POOLS` (default 1000), `CAPSTAN_BENCH_WORKERS` per pool (default
//!   100), `CAPSTAN_BENCH_PASSES` steady passes (default 5)
//! - `CAPSTAN_BENCH_TRIALS` wake trials (default 20)
//! - `CAPSTAN_BENCH_PARTS`: comma-separated subset of `pass,latency,loaded`
//! - `CAPSTAN_BENCH_LOADED_TICK_MS`: the tick of the `loaded` part (default 1000)
//! - `CAPSTAN_BENCH_STATS_WAIT_SECS`: the wait before reading `pg_stat_database`
//!   (default 11; 0 skips the query counts)

#[path = "../../bench-support/proc_cpu.rs"]
mod proc_cpu;

use proc_cpu::process_cpu;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use capstan_core::{
    LaunchConfig, Offering, PoolId, PoolSpec, ProviderKind, QueueSample, Timestamp,
};
use providers::clock::SystemClock;
use providers::fake::FakeProvider;
use providers::{
    Instance, InstanceRequest, LaunchOutcome, LaunchRequest, ListScope, Provider, ProviderError,
};
use reconciler::{LoopConfig, Metrics, Providers, Service};
use store::Store;
use store::scratch::ScratchDatabase;
use tokio::sync::Notify;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

#[derive(Debug, Clone)]
struct Config {
    pools: usize,
    workers: usize,
    passes: usize,
    trials: usize,
    parts: Vec<String>,
    stats_wait: Duration,
    loaded_tick: Duration,
}

impl Config {
    fn from_env() -> Self {
        Self {
            pools: env_or("CAPSTAN_BENCH_POOLS", 1000),
            workers: env_or("CAPSTAN_BENCH_WORKERS", 100),
            passes: env_or("CAPSTAN_BENCH_PASSES", 5).max(1),
            trials: env_or("CAPSTAN_BENCH_TRIALS", 20).max(1),
            parts: std::env::var("CAPSTAN_BENCH_PARTS")
                .unwrap_or_else(|_| "pass,latency,loaded".into())
                .split(',')
                .map(|s| s.trim().to_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            stats_wait: Duration::from_secs(env_or("CAPSTAN_BENCH_STATS_WAIT_SECS", 11)),
            loaded_tick: Duration::from_millis(env_or("CAPSTAN_BENCH_LOADED_TICK_MS", 1000)),
        }
    }
}

fn now_ts() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_ms(ms)
}

fn spec(id: &str, max_capacity: usize) -> PoolSpec {
    PoolSpec::from_yaml(&format!(
        "id: {id}\nprovider: fake\nmax_capacity: {max_capacity}\n\
         launch_configs:\n  - id: small\n    instance_type: fake.small\n    price_per_hour: 0.1\n\
         scaling:\n  policy: reactive\n\
         lifecycle:\n  registration_timeout_s: 3600\n  heartbeat_timeout_s: 3600\n"
    ))
    .expect("bench spec is valid")
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    (busy, busy + field(3) + field(4))
}

/// Wall time, process CPU and machine busy share of one measured stretch.
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: Duration,
    cpu: Duration,
    machine_busy: f64,
}

struct Meter {
    started: Instant,
    cpu: Duration,
    jiffies: (u64, u64),
}

impl Meter {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            cpu: process_cpu(),
            jiffies: machine_jiffies(),
        }
    }

    fn stop(self) -> Measured {
        let wall = self.started.elapsed();
        let (b, t) = machine_jiffies();
        let (busy, total) = (
            b.saturating_sub(self.jiffies.0) as f64,
            t.saturating_sub(self.jiffies.1) as f64,
        );
        Measured {
            wall,
            cpu: process_cpu().saturating_sub(self.cpu),
            machine_busy: if total > 0.0 { busy / total } else { 0.0 },
        }
    }
}

/// A direct connection for seeding and statistics (not the store's pool).
async fn admin(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("PostgreSQL connects")
}

/// Transactions committed and rolled back in the current database, as published.
async fn xacts(db: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await
    .expect("pg_stat_database");
    n
}

/// [`FakeProvider`] noting the instant of the first `launch` call of each pool.
#[derive(Debug)]
struct FirstLaunch {
    inner: Arc<FakeProvider>,
    first: Mutex<HashMap<PoolId, Instant>>,
    launched: Notify,
}

impl FirstLaunch {
    fn new(inner: Arc<FakeProvider>) -> Self {
        Self {
            inner,
            first: Mutex::new(HashMap::new()),
            launched: Notify::new(),
        }
    }

    fn first(&self, pool: &PoolId) -> Option<Instant> {
        self.first.lock().unwrap().get(pool).copied()
    }

    fn launches(&self) -> usize {
        self.first.lock().unwrap().len()
    }

    /// The first launch instant of `pool`, waiting up to `limit` for it.
    async fn wait(&self, pool: &PoolId, limit: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.launched.notified();
            if let Some(t) = self.first(pool) {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.first(pool);
            }
        }
    }
}

#[async_trait]
impl Provider for FirstLaunch {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError> {
        let now = Instant::now();
        self.first
            .lock()
            .unwrap()
            .entry(request.pool_id.clone())
            .or_insert(now);
        self.launched.notify_waiters();
        self.inner.launch(request).await
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        self.inner.terminate(instance_id).await
    }

    async fn describe(&self, instance_id: &str) -> Result<Instance, ProviderError> {
        self.inner.describe(instance_id).await
    }

    async fn list(&self, scope: &ListScope) -> Result<Vec<Instance>, ProviderError> {
        self.inner.list(scope).await
    }

    async fn offerings(
        &self,
        pool: &PoolId,
        config: &LaunchConfig,
    ) -> Result<Vec<Offering>, ProviderError> {
        self.inner.offerings(pool, config).await
    }
}

fn providers(p: Arc<dyn Provider>) -> Providers {
    let mut all = Providers::new();
    all.insert(p);
    all
}

fn pool_id(prefix: &str, i: usize) -> PoolId {
    PoolId::new(format!("{prefix}/p{i:05}")).expect("valid pool id")
}

/// Worker rows to insert in bulk (column arrays for `UNNEST`).
#[derive(Default)]
struct WorkerRows {
    id: Vec<String>,
    pool_id: Vec<String>,
    instance_id: Vec<String>,
    token: Vec<String>,
    state: Vec<&'static str>,
    busy: Vec<i64>,
    created: Vec<i64>,
    registered: Vec<Option<i64>>,
    heartbeat: Vec<Option<i64>>,
}

impl WorkerRows {
    async fn insert(&mut self, db: &sqlx::PgPool) {
        if self.id.is_empty() {
            return;
        }
        sqlx::query(
            "INSERT INTO workers (id, pool_id, provider, launch_config_id, instance_id,
               idempotency_token, state, capacity, busy_slots, created_at, state_changed_at,
               registered_at, last_heartbeat_at, idle_since, failure)
             SELECT id, pool_id, 'fake', 'small', instance_id, token, state, 1, busy, created,
               COALESCE(registered, created), registered, heartbeat, NULL, NULL
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
               $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
               AS t(id, pool_id, instance_id, token, state, busy, created, registered, heartbeat)",
        )
        .bind(&self.id)
        .bind(&self.pool_id)
        .bind(&self.instance_id)
        .bind(&self.token)
        .bind(&self.state)
        .bind(&self.busy)
        .bind(&self.created)
        .bind(&self.registered)
        .bind(&self.heartbeat)
        .execute(db)
        .await
        .expect("workers inserted");
        *self = Self::default();
    }
}

/// One queue sample for every pool at `at` (bulk, outside the store).
async fn sample_all(db: &sqlx::PgPool, pools: &[PoolId], at: i64, pending: i64, running: i64) {
    let ids: Vec<&str> = pools.iter().map(PoolId::as_str).collect();
    sqlx::query(
        "INSERT INTO queue_samples (pool_id, at, pending, running, arrivals, completions)
         SELECT id, $2, $3, $4, 0, 0 FROM UNNEST($1::text[]) AS t(id)",
    )
    .bind(&ids)
    .bind(at)
    .bind(pending)
    .bind(running)
    .execute(db)
    .await
    .expect("samples inserted");
}

#[derive(Debug)]
struct PassReport {
    /// Wake latency with these pools ticking beside (part `loaded`).
    loaded: Option<LatencyReport>,
    pools: usize,
    workers: usize,
    instances: usize,
    seed: Duration,
    first: Measured,
    steady: Vec<Measured>,
    first_xacts: Option<i64>,
    steady_xacts: Option<i64>,
    actions: i64,
    errors: i64,
}

async fn pass_bench(cfg: &Config, url: &str) -> PassReport {
    let seed_started = Instant::now();
    let store = Store::connect(url).await.expect("store opens");
    let db = admin(url).await;
    let now = now_ts();
    let ready_per_pool = cfg.workers - cfg.workers / 20;
    let ids: Vec<PoolId> = (0..cfg.pools).map(|i| pool_id("bench", i)).collect();
    let fake = Arc::new(FakeProvider::new(Arc::new(SystemClock)));
    let recorder = Arc::new(FirstLaunch::new(fake.clone()));
    let mut rows = WorkerRows::default();
    let mut instances = 0;
    for (p, id) in ids.iter().enumerate() {
        let spec = spec(id.as_str(), cfg.workers * 2);
        store
            .create_pool(&spec, "bench", now.plus_secs(-7200))
            .await
            .expect("pool created");
        let request = LaunchRequest {
            api_url: None,
            pool_id: id.clone(),
            launch_config: spec.launch_configs[0].clone(),
            zone: None,
            instances: (0..cfg.workers)
                .map(|w| InstanceRequest {
                    worker_id: capstan_core::WorkerId::from_string(format!("w-{p:05}-{w:04}")),
                    idempotency_token: format!("bench-{p:05}-{w:04}"),
                    registration_token: format!("reg-{p:05}-{w:04}"),
                })
                .collect(),
        };
        let outcome = fake.launch(&request).await.expect("fake launches");
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        for (w, (inst, req)) in outcome.launched.iter().zip(&request.instances).enumerate() {
            let ready = w < ready_per_pool;
            let created = if ready {
                now.plus_secs(-1800)
            } else {
                now.plus_secs(-30)
            };
            rows.id.push(req.worker_id.to_string());
            rows.pool_id.push(id.to_string());
            rows.instance_id.push(inst.id.clone());
            rows.token.push(req.idempotency_token.clone());
            rows.state.push(if ready { "ready" } else { "booting" });
            rows.busy.push(i64::from(ready));
            rows.created.push(created.unix_ms());
            rows.registered
                .push(ready.then(|| created.plus_secs(90).unix_ms()));
            rows.heartbeat.push(ready.then(|| now.unix_ms()));
            instances += 1;
        }
        if rows.id.len() >= 10_000 {
            rows.insert(&db).await;
        }
    }
    rows.insert(&db).await;
    // One hour of history at 30 s, the newest a second ago: demand matches the fleet
    // (running = ready slots, pending = booting slots).
    let (pending, running) = ((cfg.workers - ready_per_pool) as i64, ready_per_pool as i64);
    for k in (0..120).rev() {
        let at = now.unix_ms() - 1000 - k * 30_000;
        sample_all(&db, &ids, at, pending, running).await;
    }
    sqlx::query("VACUUM ANALYZE")
        .execute(&db)
        .await
        .expect("vacuum");
    let seed = seed_started.elapsed();
    eprintln!(
        "pass: seeded {} pools, {} workers, {} instances in {:.1} s",
        ids.len(),
        ids.len() * cfg.workers,
        instances,
        seed.as_secs_f64()
    );

    let (service, _waker) = Service::new(
        store.clone(),
        providers(recorder.clone()),
        LoopConfig::new("bench"),
        Metrics::new(),
        now_ts,
    );
    let counted = !cfg.stats_wait.is_zero();
    let settle = || async {
        if counted {
            tokio::time::sleep(cfg.stats_wait).await;
        }
    };
    let plans_before = plan_log(&db).await;

    settle().await;
    let x0 = xacts(&db).await;
    let meter = Meter::start();
    let held = service.run_once().await.expect("first pass");
    let first = meter.stop();
    assert_eq!(held, ids.len(), "every pool leased");
    settle().await;
    let x1 = xacts(&db).await;
    eprintln!("pass: first (warm-up) {:.3} s", first.wall.as_secs_f64());

    let mut steady = Vec::new();
    let mut steady_xacts = None;
    for n in 0..cfg.passes {
        // A new sample per pool since the last pass, as pushed every interval.
        sample_all(&db, &ids, now_ts().unix_ms() - 500, pending, running).await;
        let last = n + 1 == cfg.passes;
        if last {
            settle().await;
        }
        let x0 = xacts(&db).await;
        let meter = Meter::start();
        service.run_once().await.expect("steady pass");
        let m = meter.stop();
        if last {
            settle().await;
            steady_xacts = Some(xacts(&db).await - x0);
        }
        eprintln!("pass: steady {} {:.3} s", n + 1, m.wall.as_secs_f64());
        steady.push(m);
    }
    let actions = plan_log(&db).await - plans_before;
    let (errors,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pool_errors")
        .fetch_one(&db)
        .await
        .expect("pool errors");
    drop(service);
    let loaded = if cfg.parts.iter().any(|p| p == "loaded") {
        eprintln!(
            "loaded: {} wake-ups beside the {} pools, ticks every {} ms",
            cfg.trials,
            ids.len(),
            cfg.loaded_tick.as_millis()
        );
        Some(
            wake_trials(
                &store,
                &recorder,
                "bench",
                cfg.loaded_tick,
                cfg.trials,
                ids.len(),
            )
            .await,
        )
    } else {
        None
    };
    db.close().await;
    store.close().await;
    PassReport {
        loaded,
        pools: ids.len(),
        workers: ids.len() * cfg.workers,
        instances,
        seed,
        first,
        steady,
        first_xacts: counted.then_some(x1 - x0),
        steady_xacts: steady_xacts.filter(|_| counted),
        actions,
        errors,
    }
}

async fn plan_log(db: &sqlx::PgPool) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM plan_log")
        .fetch_one(db)
        .await
        .expect("plan log");
    n
}

#[derive(Debug)]
struct LatencyReport {
    /// The service's tick.
    interval: Duration,
    trials: Vec<Duration>,
    /// Trials with no launch call within 40 s.
    missed: usize,
    /// Pools other than the trial pools that launched during the trials (must be 0).
    other_launches: usize,
    /// Steady pools reconciled beside the trial pools.
    background: usize,
}

/// Creates `trials` fresh pools (no workers) next to whatever `store` holds, runs
/// the service with ticks every `interval` and times one wake-up per pool (see the
/// module docs).
async fn wake_trials(
    store: &Store,
    recorder: &Arc<FirstLaunch>,
    owner: &str,
    interval: Duration,
    trials: usize,
    background: usize,
) -> LatencyReport {
    let now = now_ts();
    let ids: Vec<PoolId> = (0..trials).map(|i| pool_id("wake", i)).collect();
    for id in &ids {
        store
            .create_pool(&spec(id.as_str(), 50), "bench", now)
            .await
            .expect("pool created");
    }
    let mut loop_cfg = LoopConfig::new(owner);
    loop_cfg.reconcile_interval = interval;
    let (service, waker) = Service::new(
        store.clone(),
        providers(recorder.clone()),
        loop_cfg,
        Metrics::new(),
        now_ts,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run(async {
        let _ = stop_rx.await;
    }));
    // The first tick (at start) leases every pool and warms its controller.
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &ids {
        while store.pool_status(id).await.expect("status").is_none() {
            assert!(Instant::now() < deadline, "first tick did not plan {id}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let launches_before = recorder.launches();

    let mut measured = Vec::new();
    let mut missed = 0;
    for (i, id) in ids.iter().enumerate() {
        // Spaced 100-400 ms apart (a fixed spread, so runs are comparable).
        tokio::time::sleep(Duration::from_millis(100 + (i as u64 * 137) % 300)).await;
        let sample = QueueSample {
            at: now_ts(),
            pending: 3,
            running: 0,
            arrivals: 3,
            completions: 0,
        };
        let started = Instant::now();
        store
            .record_queue_samples(id, &[sample])
            .await
            .expect("sample stored");
        waker.wake(id);
        match recorder.wait(id, Duration::from_secs(40)).await {
            Some(t) => measured.push(t.saturating_duration_since(started)),
            None => missed += 1,
        }
    }
    let _ = stop_tx.send(());
    running.await.expect("service stops");
    LatencyReport {
        interval,
        trials: measured,
        missed,
        other_launches: recorder.launches() + missed - launches_before - trials,
        background,
    }
}

async fn latency_bench(cfg: &Config, url: &str) -> LatencyReport {
    let store = Store::connect(url).await.expect("store opens");
    let recorder = Arc::new(FirstLaunch::new(Arc::new(FakeProvider::new(Arc::new(
        SystemClock,
    )))));
    let report = wake_trials(
        &store,
        &recorder,
        "bench-wake",
        Duration::from_secs(30),
        cfg.trials,
        0,
    )
    .await;
    store.close().await;
    report
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn print_pass(r: &PassReport) {
    let mut walls: Vec<Duration> = r.steady.iter().map(|m| m.wall).collect();
    walls.sort();
    let best = walls[0];
    let median = quantile(&walls, 0.5);
    let per_pool = |q: Option<i64>| {
        q.map_or("-".to_owned(), |n| {
            format!("{:.2}", n as f64 / r.pools as f64)
        })
    };
    println!();
    println!(
        "reconcile pass: {} pools, {} workers, {} fake instances (seeded in {:.1} s)",
        r.pools,
        r.workers,
        r.instances,
        r.seed.as_secs_f64()
    );
    println!(
        "{:<22} {:>8} {:>8} {:>12} {:>8} {:>7} {:>11}",
        "pass", "wall s", "ms/pool", "cpu s", "mach %", "xacts", "xacts/pool"
    );
    let row = |name: &str, m: &Measured, x: Option<i64>| {
        println!(
            "{:<22} {:>8} {:>8.3} {:>12.2} {:>8.0} {:>7} {:>11}",
            name,
            secs(m.wall),
            m.wall.as_secs_f64() * 1000.0 / r.pools as f64,
            m.cpu.as_secs_f64(),
            m.machine_busy * 100.0,
            x.map_or("-".to_owned(), |n| n.to_string()),
            per_pool(x),
        );
    };
    row("first (warm-up)", &r.first, r.first_xacts);
    for (i, m) in r.steady.iter().enumerate() {
        let x = if i + 1 == r.steady.len() {
            r.steady_xacts
        } else {
            None
        };
        row(&format!("steady {}", i + 1), m, x);
    }
    println!(
        "steady: best {} s, median {} s over {} passes; plans with actions: {}; pool errors: {}",
        secs(best),
        secs(median),
        walls.len(),
        r.actions,
        r.errors
    );
    println!(
        "cpu: this process (loop + fake provider), user + system; mach %: whole machine busy \
         (PostgreSQL and anything else running included); xacts: transactions in the \
         database during the pass (pg_stat_database), 1 per autocommit statement"
    );
}

fn print_latency(r: &LatencyReport) {
    let mut t = r.trials.clone();
    t.sort();
    println!();
    println!(
        "wake latency: queue sample stored -> first launch call, {} trials, {} s tick, \
         {} other pools held",
        t.len() + r.missed,
        r.interval.as_secs_f64(),
        r.background
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "min ms", "p50 ms", "p99 ms", "max ms", "missed", "other"
    );
    println!(
        "{:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        ms(t.first().copied().unwrap_or_default()),
        ms(quantile(&t, 0.5)),
        ms(quantile(&t, 0.99)),
        ms(t.last().copied().unwrap_or_default()),
        r.missed,
        r.other_launches
    );
    println!(
        "missed: no launch call within 40 s; other: launches for pools that had no wake-up \
         (both must be 0)"
    );
}

fn main() {
    let cfg = Config::from_env();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "capstan control-loop bench: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failed = rt.block_on(async {
        let mut pass = None;
        if cfg.parts.iter().any(|p| p == "pass" || p == "loaded") {
            let Some(db) = ScratchDatabase::create().await else {
                eprintln!("pass: skipped (see the note above)");
                return false;
            };
            pass = Some(pass_bench(&cfg, &db.url).await);
            db.drop_now().await;
        }
        let mut quiet = None;
        if cfg.parts.iter().any(|p| p == "latency") {
            let Some(db) = ScratchDatabase::create().await else {
                eprintln!("latency: skipped (see the note above)");
                return false;
            };
            quiet = Some(latency_bench(&cfg, &db.url).await);
            db.drop_now().await;
        }
        if let Some(r) = pass
            .as_ref()
            .filter(|_| cfg.parts.iter().any(|p| p == "pass"))
        {
            print_pass(r);
        }
        let loaded = pass.as_ref().and_then(|r| r.loaded.as_ref());
        let mut failed = false;
        for r in quiet.iter().chain(loaded) {
            print_latency(r);
            failed |= r.missed + r.other_launches > 0;
        }
        failed
    });
    if failed {
        eprintln!("FAILED: a wake-up did not launch");
        std::process::exit(1);
    }
}
