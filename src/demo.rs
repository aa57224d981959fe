//! `capstan demo`: the real service on a simulated cloud with live demand, the
//! quickest way to see capstan work.
//!
//! In one process, with nothing outside the repository:
//!
//! 1. A temporary directory gets an SQLite file; the store is opened (migrations), two
//!    API clients are made on it directly (a read-only one whose token is printed for
//!    the dashboard and the CLI, and one the demo itself feeds the service with), and
//!    two weeks of each pool's history — queue samples and task runs, from
//!    [`demand`] — are imported in batches.
//! 2. The service starts through [`crate::serve::serve_with`], the very code path of
//!    `capstan serve`, with the demo's [`FakeProvider`] (boot delays drawn per
//!    instance) and a 5-second reconcile tick.
//! 3. The pools are created through the real API (`PUT /v1/pools/...`): the README's
//!    example pool on the fake cloud, the same pool with the reactive policy for
//!    contrast, and a pool of one-slot machines. The dashboard URL and token are
//!    printed.
//! 4. Per pool a [`queue`] fills from the demand as tasks come due and is pushed to
//!    `POST /v1/pools/{id}/queue` every 5 s; a [`fleet`] of simulated workers, one per
//!    running fake instance, registers and heartbeats through the worker API and runs
//!    the tasks; the cloud misbehaves a little ([`fleet::chaos`]). Every 10 s a line per
//!    pool says how it is doing.
//! 5. SIGINT or SIGTERM stops the feeders and machines, shuts the service down as
//!    `serve` does, removes the directory (unless `--keep`) and exits 0.
//!
//! stdout carries what a person reads (the URL and token first, then events and
//! progress); the service's log goes to stderr (`warn` unless `--log-level` says
//! otherwise).

mod demand;
mod fleet;
mod queue;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_core::{PoolSpec, Timestamp};
use providers::clock::SystemClock;
use providers::fake::FakeProvider;
use reqwest::Method;
use serde_json::{Value, json};
use simulations::rng::SimRng;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::demand::{Demand, Shape};
use self::fleet::{Fleet, PoolMachines, Slots};
use self::queue::SharedQueue;
use crate::client::{ApiClient, if_none_match_any, pool_path};
use crate::clock::wall_clock;
use crate::config::{FileConfig, FileLogConfig, Overrides, ServiceConfig, open_store};
use crate::serve::{Hooks, init_logging, serve_with, shutdown_signal};

/// The README's example pool, which the demo runs on the fake cloud.
const EXAMPLE_POOL: &str = include_str!("../examples/pool.yaml");
/// Its spot launch config, which runs out of capacity now and then.
const SPOT_LAUNCH_CONFIG: &str = "c6i-spot";
/// The first burst comes this long after start: time for the forecast's first
/// machines to boot (at most [`BOOT_MAX_S`]) and register.
const FIRST_BURST_S: i64 = 55;
/// Fake boot delays are drawn uniformly from this range, in seconds.
const BOOT_MIN_S: f64 = 10.0;
/// See [`BOOT_MIN_S`].
const BOOT_MAX_S: f64 = 40.0;
/// Seconds between reconcile rounds: the queue samples' interval.
const RECONCILE_S: u64 = 5;
/// Seconds an offering is skipped after a capacity error (the demo shows the
/// fallback and the recovery within a few minutes).
const UNAVAILABLE_S: u64 = 60;
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How long the feeders and machines get to stop before the service shuts down.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Scopes of the printed token: look, never touch.
const VIEWER_SCOPES: [&str; 3] = ["pools:read:*", "workers:read:*", "metrics:read"];
/// Scopes of the demo's own client: create pools, push samples, read workers.
const FEEDER_SCOPES: [&str; 4] = [
    "pools:write:*",
    "pools:read:*",
    "queue:write:*",
    "workers:read:*",
];

/// Flags of `capstan demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Address to listen on; port 0 picks a free port (the printed URL says which).
    #[arg(long, default_value = crate::config::DEFAULT_LISTEN, value_name = "ADDR")]
    listen: String,
    /// Seed of every draw: demand, boot delays, the cloud's misbehaviour.
    #[arg(long, default_value_t = 1, value_name = "N")]
    seed: u64,
    /// Keep the temporary directory (its SQLite file) on exit and print its path.
    #[arg(long)]
    keep: bool,
    /// The service's log filter on stderr, e.g. `info` [default: warn].
    #[arg(long, env = "CAPSTAN_LOG", value_name = "FILTER")]
    log_level: Option<String>,
}

/// One demo pool: its spec as sent to the API, and its demand.
#[derive(Debug, Clone)]
struct DemoPool {
    id: String,
    /// What the progress line and the start-up text say it is.
    about: &'static str,
    spec: Value,
    shape: Shape,
    /// Pools with the same demand seed see the same tasks.
    demand_seed: u64,
    /// Seconds after [`FIRST_BURST_S`] its bursts start.
    burst_offset_s: i64,
    /// Whether its history's task runs are imported. The reactive policy sizes from
    /// the backlog alone and never reads run times; leaving its ~56,000 runs out keeps
    /// the import within its budget (2 s).
    import_runs: bool,
}

/// Bursts of about 12 tasks every 2 minutes in the rush, 45 s tasks: a few 4-slot
/// machines. Every bucket's trickle stays well above 0 (see `demand::daily_factor`).
const LARGE: Shape = Shape {
    burst_tasks: 12.0,
    burst_every_s: 120,
    trickle: [12.0, 10.0, 20.0],
    run_median_s: 45.0,
    run_sigma: 0.5,
};
/// Short lint jobs on one-slot machines.
const QUICK: Shape = Shape {
    burst_tasks: 5.0,
    burst_every_s: 120,
    trickle: [6.0, 5.0, 16.0],
    run_median_s: 20.0,
    run_sigma: 0.6,
};

/// The README's example pool as the demo runs it. Changed, and nothing else: the
/// provider (`fake`); the idle timeout (45 s instead of 600) and the heartbeat timeout
/// (20 s, so heartbeats come every 5 s) so that a minute shows a whole cycle; the
/// office-hours floor (4 slots instead of 40, which would hold ten idle machines and
/// hide the forecast during the day in Berlin).
fn example_pool() -> anyhow::Result<Value> {
    let mut spec: Value =
        serde_norway::from_str(EXAMPLE_POOL).context("examples/pool.yaml is not YAML")?;
    let mut set = |pointer: &str, value: Value| -> anyhow::Result<()> {
        let slot = spec.pointer_mut(pointer).with_context(|| {
            format!("examples/pool.yaml has no {pointer} for the demo to adjust")
        })?;
        *slot = value;
        Ok(())
    };
    set("/provider", json!("fake"))?;
    set("/scaling/idle_timeout_s", json!(45))?;
    set("/lifecycle/heartbeat_timeout_s", json!(20))?;
    set("/schedules/0/min_capacity", json!(4))?;
    Ok(spec)
}

fn demo_pools(seed: u64) -> anyhow::Result<Vec<DemoPool>> {
    let large = example_pool()?;
    let mut reactive = large.clone();
    reactive["id"] = json!("ci/linux-reactive");
    reactive["description"] =
        json!("The example pool with the reactive policy, fed the same demand: for contrast");
    reactive["scaling"]["policy"] = json!("reactive");
    let quick = json!({
        "id": "lint/quick",
        "description": "One-slot machines for short lint jobs",
        "provider": "fake",
        "max_capacity": 40,
        "launch_configs": [
            {"id": "t3-small-spot", "instance_type": "t3.small", "market": "spot",
             "capacity": 1, "priority": 0, "price_per_hour": 0.0063},
            {"id": "t3-small-on-demand", "instance_type": "t3.small", "market": "on_demand",
             "capacity": 1, "priority": 10, "price_per_hour": 0.0208}
        ],
        "scaling": {"policy": "forecast", "target_wait_s": 30, "idle_timeout_s": 45},
        "lifecycle": {"heartbeat_timeout_s": 20}
    });
    Ok(vec![
        DemoPool {
            id: "ci/linux-large".into(),
            about: "the README's example pool, forecast policy",
            spec: large,
            shape: LARGE,
            demand_seed: seed,
            burst_offset_s: 0,
            import_runs: true,
        },
        DemoPool {
            id: "ci/linux-reactive".into(),
            about: "the same pool and demand, reactive policy",
            spec: reactive,
            shape: LARGE,
            demand_seed: seed,
            burst_offset_s: 0,
            import_runs: false,
        },
        DemoPool {
            id: "lint/quick".into(),
            about: "one-slot machines, forecast policy",
            spec: quick,
            shape: QUICK,
            demand_seed: seed.wrapping_add(1),
            burst_offset_s: 60,
            import_runs: true,
        },
    ])
}

/// The launch configs of `spec`: slots and market, by id.
fn launch_configs(spec: &Value) -> anyhow::Result<HashMap<String, Slots>> {
    let parsed = PoolSpec::from_json(&spec.to_string())
        .map_err(|e| anyhow::anyhow!("demo pool {}: {e}", spec["id"]))?;
    Ok(parsed
        .launch_configs
        .iter()
        .map(|lc| {
            (
                lc.id.clone(),
                Slots {
                    capacity: lc.capacity,
                    market: lc.market,
                },
            )
        })
        .collect())
}

/// Prints one line for a person: the time, then `text`.
pub(crate) fn say(text: &str) {
    let now = wall_clock().to_datetime().format("%H:%M:%S");
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is no reason to stop the demo.
    let _ = writeln!(out, "{now}  {text}");
    let _ = out.flush();
}

/// Runs the demo until SIGINT or SIGTERM.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let listen: SocketAddr = args.listen.parse().map_err(|_| {
        anyhow::anyhow!(
            "--listen: expected an IP address and port such as 127.0.0.1:8080 (port 0 picks one), got {:?}",
            args.listen
        )
    })?;
    if listen.ip().is_unspecified() && listen.port() == 0 {
        bail!(
            "--listen: the demo's machines call the service at its address; with {} give a port, or use 127.0.0.1:0",
            listen.ip()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("capstan-demo-")
        .tempdir()
        .context("cannot create the demo's temporary directory")?;
    let db = dir.path().join("capstan-demo.db");
    let file = FileConfig {
        database_url: Some(format!("sqlite://{}", db.display())),
        // On 0.0.0.0 the service writes no URL into user-data; the machines are here.
        public_url: listen
            .ip()
            .is_unspecified()
            .then(|| format!("http://127.0.0.1:{}", listen.port())),
        reconcile_interval_s: Some(RECONCILE_S),
        // Leases are renewed every quarter of this: a new pool is taken within 5 s.
        lease_ttl_s: Some(4 * RECONCILE_S),
        offering_unavailable_ttl_s: Some(UNAVAILABLE_S),
        boot_estimate_s: Some(f64::midpoint(BOOT_MIN_S, BOOT_MAX_S)),
        log: FileLogConfig {
            format: None,
            level: Some("warn".into()),
        },
        ..FileConfig::default()
    };
    let config = ServiceConfig::resolve(
        file,
        Overrides {
            listen: Some(args.listen.clone()),
            log_level: args.log_level.clone(),
            ..Overrides::default()
        },
    )?;
    init_logging(&config)?;
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(demo(config, &args, dir.path()));
    let path = dir.path().display().to_string();
    if args.keep {
        let kept = dir.keep();
        say(&format!("kept the demo's data in {}", kept.display()));
    } else {
        dir.close()
            .with_context(|| format!("cannot remove the demo's directory {path}"))?;
        if result.is_ok() {
            say(&format!("capstan demo stopped; removed {path}"));
        }
    }
    result
}

/// Tokens of the two clients the demo makes on the store.
struct Tokens {
    viewer: String,
    feeder: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens(<redacted>)")
    }
}

/// Step 1: clients and history on the store, before the service opens it.
async fn prepare_store(
    url: &str,
    pools: &[(DemoPool, Demand)],
    start: Timestamp,
    days: i64,
) -> anyhow::Result<Tokens> {
    let began = Instant::now();
    let histories: Vec<_> = pools.iter().map(|(_, d)| d.history(start, days)).collect();
    let generated = began.elapsed();
    let began = Instant::now();
    let store = open_store(Some(url)).await?;
    let migrated = began.elapsed();
    let client = |name: &'static str, scopes: &[&str]| {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let store = store.clone();
        async move {
            api::clients::bootstrap_client(&store, name, &scopes, None, "demo", start)
                .await
                .map(|(_, token)| token)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the demo's {name} client: {}",
                        e.body().message
                    )
                })
        }
    };
    let viewer = client("demo-viewer", &VIEWER_SCOPES).await?;
    let feeder = client("demo-feeder", &FEEDER_SCOPES).await?;
    // Pool after pool: SQLite takes one writer at a time (importing concurrently
    // measured slower).
    let began = Instant::now();
    let (mut samples, mut runs) = (0, 0);
    for ((pool, _), history) in pools.iter().zip(&histories) {
        let id = capstan_core::PoolId::new(&pool.id).map_err(|e| anyhow::anyhow!("{e}"))?;
        store.import_queue_samples(&id, &history.samples).await?;
        samples += history.samples.len();
        if pool.import_runs {
            store.import_task_runs(&id, &history.runs).await?;
            runs += history.runs.len();
        }
    }
    let imported = began.elapsed();
    store.close().await;
    say(&format!(
        "{days} days of history for {} pools ({samples} queue samples, {runs} task runs): \
         generated in {:.2} s, store migrated in {:.2} s, imported in {:.2} s",
        pools.len(),
        generated.as_secs_f64(),
        migrated.as_secs_f64(),
        imported.as_secs_f64()
    ));
    Ok(Tokens { viewer, feeder })
}

async fn demo(config: ServiceConfig, args: &DemoArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    // Ctrl-C stops the demo cleanly from the start, not only once it is running.
    let signalled = shutdown_signal();
    let start = wall_clock();
    let first_burst = start.plus_secs(FIRST_BURST_S);
    let bucket_s = predictor::SeasonalConfig::default().bucket_s;
    let pools: Vec<(DemoPool, Demand)> = demo_pools(args.seed)?
        .into_iter()
        .map(|p| {
            let d = Demand::new(
                p.demand_seed,
                p.shape,
                bucket_s,
                start,
                first_burst.plus_secs(p.burst_offset_s),
            );
            (p, d)
        })
        .collect();
    let days = i64::from(config.reconcile.warm_days);
    let tokens = prepare_store(&config.database_url, &pools, start, days).await?;

    // Step 2: the service, with the demo's fake cloud.
    let fake = Arc::new(FakeProvider::new(Arc::new(SystemClock)));
    let mut boot_rng = SimRng::new(args.seed ^ 0xB007);
    fake.set_boot_delay_draw(move || {
        (BOOT_MIN_S + boot_rng.uniform() * (BOOT_MAX_S - BOOT_MIN_S)).round() as i64
    });
    let (ready_tx, ready_rx) = oneshot::channel();
    let (down_tx, down_rx) = oneshot::channel::<()>();
    let mut service = tokio::spawn(serve_with(
        config,
        Hooks {
            fake: Some(fake.clone()),
            ready: Some(ready_tx),
            shutdown: Some(Box::pin(async move {
                let _ = down_rx.await;
            })),
        },
    ));
    let started = tokio::select! {
        addr = ready_rx => Ok(addr),
        ended = &mut service => Err(ended),
    };
    let local = match started {
        Ok(Ok(addr)) => addr,
        // The service dropped its hook: it is ending with an error.
        Ok(Err(_)) => return Err(start_failure(service.await)),
        Err(ended) => return Err(start_failure(ended)),
    };
    let host = if local.ip().is_unspecified() {
        format!("127.0.0.1:{}", local.port())
    } else {
        local.to_string()
    };
    let base = format!("http://{host}");

    // Step 3: the pools, through the API.
    let api = ApiClient::new(&base, Some(tokens.feeder.parse()?))?;
    let mut machines = HashMap::new();
    let mut queues = Vec::new();
    for (pool, _) in &pools {
        api.send(
            Method::PUT,
            &pool_path(&pool.id)?,
            &[],
            &[if_none_match_any()],
            Some(&pool.spec),
        )
        .await
        .with_context(|| format!("cannot create demo pool {}", pool.id))?;
        let queue = SharedQueue::default();
        machines.insert(
            pool.id.clone(),
            PoolMachines {
                queue: queue.clone(),
                launch_configs: launch_configs(&pool.spec)?,
            },
        );
        queues.push((pool.id.clone(), queue));
    }
    print_welcome(&base, &tokens.viewer, dir, args.keep, &pools, first_burst);

    // Step 4: demand, workers, misbehaviour, progress.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for ((pool, demand), (_, queue)) in pools.iter().zip(&queues) {
        tasks.spawn(queue::drive(
            pool.id.clone(),
            demand.clone(),
            queue.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(queue::feed(
            pool.id.clone(),
            queue.clone(),
            api.clone(),
            stop_rx.clone(),
        ));
    }
    let fleet = Fleet::new(fake.clone(), machines);
    tasks.spawn(fleet.clone().watch(stop_rx.clone()));
    tasks.spawn(fleet::chaos(
        fleet,
        SPOT_LAUNCH_CONFIG.to_owned(),
        args.seed,
        stop_rx.clone(),
    ));
    tasks.spawn(progress(api.clone(), queues, stop_rx.clone()));

    // Step 5: until a signal (or the service failing).
    let ended_early = tokio::select! {
        () = signalled => None,
        ended = &mut service => Some(ended),
    };
    say("stopping: feeders and machines first, then the service");
    let _ = stop_tx.send(true);
    let stopped = tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("demo: feeders or machines did not stop in time; aborting them");
        tasks.abort_all();
    }
    let _ = down_tx.send(());
    let ended = match ended_early {
        Some(ended) => ended,
        None => service.await,
    };
    match ended {
        Ok(result) => result,
        Err(e) => Err(anyhow::anyhow!("the service task failed: {e}")),
    }
}

/// Why the service ended before it was ready.
fn start_failure(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok(Err(e)) => e,
        Ok(Ok(())) => anyhow::anyhow!("the service stopped before it was ready"),
        Err(e) => anyhow::anyhow!("the service task failed: {e}"),
    }
}

fn print_welcome(
    base: &str,
    viewer: &str,
    dir: &std::path::Path,
    keep: bool,
    pools: &[(DemoPool, Demand)],
    first_burst: Timestamp,
) {
    let mut out = std::io::stdout().lock();
    let kept = if keep {
        "kept on exit"
    } else {
        "removed on exit; --keep keeps it"
    };
    let mut text = format!(
        "\ncapstan demo: the real service on a simulated cloud with live demand\n\n  \
         dashboard  {base}/\n  \
         token      {viewer}\n             \
         (read-only: {}; sign in with it on the dashboard)\n  \
         CLI        capstan pools list --server {base} --token {viewer}\n  \
         data       {} ({kept})\n\npools:\n",
        VIEWER_SCOPES.join(", "),
        dir.display()
    );
    for (p, d) in pools {
        let (rush, _) = d.first_rush_ms();
        let rush = Timestamp::from_unix_ms(rush).to_datetime().format("%H:%M");
        text.push_str(&format!(
            "  {:<18} {} (rush from {rush} UTC for 30 minutes, then hourly)\n",
            p.id, p.about
        ));
    }
    text.push_str(&format!(
        "\nThe first burst arrives at {} UTC. The forecast has seen two weeks of the same rush \
         in its history and launches before it; the reactive pool waits for the tasks.\n\
         Ctrl-C stops the demo and removes its data.\n",
        first_burst.to_datetime().format("%H:%M:%S")
    ));
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Every [`PROGRESS_EVERY`], one line per pool: its queue and its fleet.
async fn progress(
    api: ApiClient,
    queues: Vec<(String, SharedQueue)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tick.tick() => {}
        }
        for (id, queue) in &queues {
            let (pending, running) = queue.lock().levels();
            let fleet = match pool_path(id) {
                Ok(path) => api
                    .get(&format!("{path}/workers"), &[("limit", "1000".into())])
                    .await
                    .map(|body| FleetCounts::of(&body)),
                Err(e) => Err(e),
            };
            let fleet = match fleet {
                Ok(f) => format!(
                    "capacity {:>3} slots ({} ready, {} booting)  {} workers",
                    f.slots, f.ready_slots, f.booting_slots, f.workers
                ),
                Err(e) => format!("workers unknown: {e:#}"),
            };
            say(&format!(
                "{id:<18} pending {pending:>3}  running {running:>3}  {fleet}"
            ));
        }
    }
}

/// A pool's live workers, counted.
#[derive(Debug, Default, PartialEq, Eq)]
struct FleetCounts {
    workers: u32,
    /// Slots that count as capacity: requested, booting, ready.
    slots: u32,
    ready_slots: u32,
    booting_slots: u32,
}

impl FleetCounts {
    fn of(page: &Value) -> Self {
        let mut c = Self::default();
        for w in page["items"].as_array().into_iter().flatten() {
            let slots = w["capacity"].as_u64().unwrap_or(0) as u32;
            c.workers += 1;
            match w["state"].as_str().unwrap_or("") {
                "ready" => {
                    c.ready_slots += slots;
                    c.slots += slots;
                }
                "requested" | "booting" => {
                    c.booting_slots += slots;
                    c.slots += slots;
                }
                _ => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_core::Market;

    #[test]
    fn the_demo_pools_are_valid_and_the_example_changes_only_where_documented() {
        let pools = demo_pools(1).unwrap();
        let ids: Vec<&str> = pools.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["ci/linux-large", "ci/linux-reactive", "lint/quick"]);
        for p in &pools {
            let spec = PoolSpec::from_json(&p.spec.to_string())
                .unwrap_or_else(|e| panic!("{}: {e}", p.id));
            assert_eq!(spec.provider, capstan_core::ProviderKind::Fake, "{}", p.id);
            assert!(!launch_configs(&p.spec).unwrap().is_empty());
        }
        let original: Value = serde_norway::from_str(EXAMPLE_POOL).unwrap();
        let mut demo = pools[0].spec.clone();
        for (pointer, value) in [
            ("/provider", json!("aws")),
            ("/scaling/idle_timeout_s", json!(600)),
            ("/lifecycle/heartbeat_timeout_s", json!(300)),
            ("/schedules/0/min_capacity", json!(40)),
        ] {
            *demo.pointer_mut(pointer).unwrap() = value;
        }
        assert_eq!(demo, original, "only the documented fields differ");
        let spot = &launch_configs(&pools[0].spec).unwrap()[SPOT_LAUNCH_CONFIG];
        assert_eq!((spot.capacity, spot.market), (4, Market::Spot));
        // The twin differs from the example in id, description and policy only.
        let mut twin = pools[1].spec.clone();
        twin["id"] = pools[0].spec["id"].clone();
        twin["description"] = pools[0].spec["description"].clone();
        twin["scaling"]["policy"] = json!("forecast");
        assert_eq!(twin, pools[0].spec);
        assert_eq!(pools[0].demand_seed, pools[1].demand_seed);
    }

    #[test]
    fn fleet_counts_add_slots_by_state() {
        let page = json!({"items": [
            {"state": "ready", "capacity": 4},
            {"state": "booting", "capacity": 4},
            {"state": "requested", "capacity": 1},
            {"state": "draining", "capacity": 4},
        ]});
        assert_eq!(
            FleetCounts::of(&page),
            FleetCounts {
                workers: 4,
                slots: 9,
                ready_slots: 4,
                booting_slots: 5
            }
        );
    }
}
