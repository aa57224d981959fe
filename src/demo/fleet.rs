//! The demo's machines: one simulated worker per running fake instance, speaking the
//! real worker API over HTTP with the same client `capstan agent` uses
//! ([`crate::agent::worker_api`]), and a little seeded misbehaviour of the cloud.
//!
//! **A machine** reads its instance's user-data (worker id, one-time registration
//! token, API URL), registers, then loops: every [`WORK_STEP`] it finishes the tasks
//! whose run time has passed and, unless draining, takes tasks from its pool's queue
//! into its free slots (as a CI worker pulls from its queue); at the interval the
//! server gives it heartbeats with its busy slots and finished tasks (finish time and
//! run time). `drain` stops it taking tasks; `terminate`, a revoked credential or its
//! instance disappearing ends it, and tasks it was running go back to the queue.
//!
//! **The cloud misbehaves** ([`chaos`]): now and then the spot launch config is out of
//! capacity for one launch ([`FakeProvider::inject_for_launch_config`]), and every few
//! minutes a spot machine gets an interruption notice: it reports it
//! (`POST /v1/workers/{id}/interruption`, as the agent does on EC2's notice), and
//! [`RECLAIM_AFTER`] later the cloud takes the instance ([`FakeProvider::interrupt`]).
//! Boot delays vary per instance (set up by the caller with
//! [`FakeProvider::set_boot_delay_draw`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::Market;
use capstan_core::secret::Secret;
use providers::fake::FakeProvider;
use providers::{ErrorKind, InstanceState, ListScope, Provider};
use simulations::rng::SimRng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::queue::{SharedQueue, Task};
use super::say;
use crate::agent::bootstrap::Identity;
use crate::agent::metadata::Notice;
use crate::agent::slots::TaskOutbox;
use crate::agent::worker_api::{Action, ApiError, Registration, WorkerApi};
use crate::clock::wall_clock;

/// How often a machine finishes and takes tasks.
const WORK_STEP: Duration = Duration::from_millis(250);
/// How often the fake cloud is looked at for machines that started or went away.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// From a spot interruption notice to the cloud taking the machine (EC2 gives two
/// minutes; the demo is in a hurry).
const RECLAIM_AFTER: Duration = Duration::from_secs(20);
/// Registration attempts before a machine gives up (the server unreachable).
const REGISTER_ATTEMPTS: u32 = 10;

/// What the demo knows about one launch config of a pool.
#[derive(Debug, Clone, Copy)]
pub struct Slots {
    /// Task slots per machine.
    pub capacity: u32,
    /// Spot or on-demand.
    pub market: Market,
}

/// One pool as the machines see it.
#[derive(Debug, Clone)]
pub struct PoolMachines {
    /// Its queue.
    pub queue: SharedQueue,
    /// Its launch configs, by id.
    pub launch_configs: HashMap<String, Slots>,
}

#[derive(Debug)]
struct Machine {
    pool: String,
    spot: bool,
    registered: Arc<AtomicBool>,
    notice: mpsc::Sender<()>,
    gone: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The simulated machines of every pool.
#[derive(Debug, Clone)]
pub struct Fleet {
    fake: Arc<FakeProvider>,
    pools: Arc<HashMap<String, PoolMachines>>,
    machines: Arc<Mutex<HashMap<String, Machine>>>,
}

impl Fleet {
    /// Machines for the instances of `pools` in `fake`.
    pub fn new(fake: Arc<FakeProvider>, pools: HashMap<String, PoolMachines>) -> Self {
        Self {
            fake,
            pools: Arc::new(pools),
            machines: Arc::default(),
        }
    }

    fn machines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Machine>> {
        self.machines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a machine for every instance that is running, and tells machines whose
    /// instance is gone, until `stop`; then waits for every machine to end.
    pub async fn watch(self, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            match self.fake.list(&ListScope::All).await {
                Ok(instances) => {
                    let mut machines = self.machines();
                    machines.retain(|_, m| !m.task.is_finished());
                    for i in instances {
                        if let Some(m) = machines.get(&i.id) {
                            if !i.state.is_alive() {
                                let _ = m.gone.send(true);
                            }
                            continue;
                        }
                        if i.state != InstanceState::Running {
                            continue;
                        }
                        let (Some(pool), Some(lc)) =
                            (i.pool_id.as_ref(), i.launch_config_id.as_ref())
                        else {
                            continue;
                        };
                        let Some(p) = self.pools.get(pool.as_str()) else {
                            continue;
                        };
                        let (Some(slots), Some(user_data)) =
                            (p.launch_configs.get(lc), self.fake.user_data(&i.id))
                        else {
                            continue;
                        };
                        let Some(api_url) = user_data.api_url.clone() else {
                            tracing::warn!(instance = %i.id, "demo: user-data without an API URL; no worker");
                            continue;
                        };
                        let (notice_tx, notice_rx) = mpsc::channel(1);
                        let (gone_tx, gone_rx) = watch::channel(false);
                        let registered = Arc::new(AtomicBool::new(false));
                        let run = MachineRun {
                            instance: i.id.clone(),
                            api_url,
                            identity: Identity::Cloud {
                                worker_id: user_data.worker_id.clone(),
                                registration_token: Secret::new(
                                    user_data.registration_token.clone(),
                                ),
                            },
                            capacity: slots.capacity,
                            queue: p.queue.clone(),
                            registered: registered.clone(),
                        };
                        let task = tokio::spawn(run.run(notice_rx, gone_rx, stop.clone()));
                        machines.insert(
                            i.id.clone(),
                            Machine {
                                pool: pool.as_str().to_owned(),
                                spot: slots.market == Market::Spot,
                                registered,
                                notice: notice_tx,
                                gone: gone_tx,
                                task,
                            },
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "demo: cannot list the fake cloud"),
            }
        }
        let tasks: Vec<JoinHandle<()>> = self.machines().drain().map(|(_, m)| m.task).collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    /// A registered spot machine chosen by `rng`: (instance, pool).
    fn pick_spot(&self, rng: &mut SimRng) -> Option<(String, String)> {
        let machines = self.machines();
        let mut spot: Vec<(&String, &Machine)> = machines
            .iter()
            .filter(|(_, m)| {
                m.spot && m.registered.load(Ordering::Relaxed) && !m.task.is_finished()
            })
            .collect();
        spot.sort_by(|a, b| a.0.cmp(b.0));
        if spot.is_empty() {
            return None;
        }
        let (id, m) = spot[rng.below(spot.len() as u64) as usize];
        let _ = m.notice.try_send(());
        Some((id.clone(), m.pool.clone()))
    }
}

/// What woke a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Stop,
    Gone,
    Notice,
    Step,
}

/// One machine's run. See the module docs.
#[derive(Debug)]
struct MachineRun {
    instance: String,
    api_url: String,
    identity: Identity,
    capacity: u32,
    queue: SharedQueue,
    registered: Arc<AtomicBool>,
}

impl MachineRun {
    async fn run(
        self,
        mut notice: mpsc::Receiver<()>,
        mut gone: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let api = match WorkerApi::new(&self.api_url) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(instance = %self.instance, error = %e, "demo: no HTTP client");
                return;
            }
        };
        let Some(reg) = self.register(&api, &mut stop).await else {
            return;
        };
        self.registered.store(true, Ordering::Relaxed);
        let mut running: Vec<(Instant, Task)> = Vec::new();
        let mut outbox = TaskOutbox::default();
        let mut draining = false;
        let mut interval = reg.heartbeat_interval.max(Duration::from_secs(1));
        let mut next_heartbeat = Instant::now();
        loop {
            let event = tokio::select! {
                _ = stop.wait_for(|s| *s) => Event::Stop,
                _ = gone.wait_for(|g| *g) => Event::Gone,
                Some(()) = notice.recv() => Event::Notice,
                () = tokio::time::sleep(WORK_STEP) => Event::Step,
            };
            match event {
                Event::Stop => return,
                Event::Gone => {
                    self.give_back(&mut running);
                    return;
                }
                Event::Notice => {
                    let at = wall_clock().plus_secs(RECLAIM_AFTER.as_secs() as i64);
                    let n = Notice {
                        source: "ec2",
                        action: "terminate".into(),
                        at: Some(at.to_string()),
                    };
                    match api.interruption(&reg, &n).await {
                        Ok(_) => draining = true,
                        Err(e) => {
                            tracing::warn!(worker = %reg.worker_id, error = %e, "demo: interruption notice not taken")
                        }
                    }
                }
                Event::Step => {}
            }
            let now = Instant::now();
            let before = running.len();
            running.retain(|(done, task)| {
                if *done <= now {
                    outbox.push(wall_clock(), task.run_s);
                    false
                } else {
                    true
                }
            });
            if running.len() < before {
                let mut q = self.queue.lock();
                for _ in running.len()..before {
                    q.finish();
                }
            }
            if !draining {
                let free = self.capacity.saturating_sub(running.len() as u32);
                if free > 0 {
                    for task in self.queue.lock().claim(free) {
                        running.push((now + Duration::from_secs_f64(task.run_s), task));
                    }
                }
            }
            if now < next_heartbeat {
                continue;
            }
            let sent = outbox.pending().len();
            match api
                .heartbeat(&reg, running.len() as u32, outbox.pending())
                .await
            {
                Ok(reply) => {
                    outbox.acknowledge(sent);
                    if let Some(i) = reply.heartbeat_interval {
                        interval = i.max(Duration::from_secs(1));
                    }
                    match reply.action {
                        Action::Continue => {}
                        Action::Drain => draining = true,
                        Action::Terminate => {
                            self.give_back(&mut running);
                            return;
                        }
                    }
                }
                Err(ApiError::Unauthorized { message }) => {
                    tracing::info!(worker = %reg.worker_id, message, "demo: credential revoked; machine stops");
                    self.give_back(&mut running);
                    return;
                }
                Err(e) => {
                    tracing::warn!(worker = %reg.worker_id, error = %e, "demo: heartbeat failed; retrying")
                }
            }
            next_heartbeat = Instant::now() + interval;
        }
    }

    async fn register(
        &self,
        api: &WorkerApi,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Registration> {
        for _ in 0..REGISTER_ATTEMPTS {
            match api.register(&self.identity).await {
                Ok(r) => return Some(r),
                Err(e) if e.is_transient() => {
                    tracing::warn!(instance = %self.instance, error = %e, "demo: registration failed; retrying");
                }
                Err(e) => {
                    tracing::warn!(instance = %self.instance, error = %e, "demo: registration refused; machine idles until the loop retires it");
                    return None;
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return None,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        None
    }

    /// The machine is gone: its unfinished tasks go back to the queue.
    fn give_back(&self, running: &mut Vec<(Instant, Task)>) {
        let mut q = self.queue.lock();
        for (_, task) in running.drain(..) {
            q.give_back(task);
        }
    }
}

/// The cloud's misbehaviour, drawn from `seed`, until `stop`: a spot capacity error
/// for launch config `spot_launch_config` every 2–4 minutes (the first within 1–2), a
/// spot interruption every 2.5–4.5 minutes (the first within 1.5–3).
pub async fn chaos(
    fleet: Fleet,
    spot_launch_config: String,
    seed: u64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = SimRng::new(seed ^ 0x00C4_A055);
    let after = |rng: &mut SimRng, lo: f64, hi: f64| {
        Instant::now() + Duration::from_secs_f64(lo + rng.uniform() * (hi - lo))
    };
    let mut capacity_error_at = after(&mut rng, 60.0, 120.0);
    let mut interruption_at = after(&mut rng, 90.0, 180.0);
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let now = Instant::now();
        if now >= capacity_error_at {
            fleet.fake.inject_for_launch_config(
                &spot_launch_config,
                ErrorKind::InsufficientCapacity,
                1,
            );
            say(&format!(
                "the fake cloud runs out of spot capacity: the next {spot_launch_config} launch fails"
            ));
            capacity_error_at = after(&mut rng, 120.0, 240.0);
        }
        if now >= interruption_at {
            if let Some((instance, pool)) = fleet.pick_spot(&mut rng) {
                say(&format!(
                    "spot interruption: {instance} in {pool} is reclaimed in {} s; its worker reports the notice",
                    RECLAIM_AFTER.as_secs()
                ));
                let fake = fleet.fake.clone();
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => {}
                        () = tokio::time::sleep(RECLAIM_AFTER) => {
                            fake.interrupt(&instance);
                        }
                    }
                });
                interruption_at = after(&mut rng, 150.0, 270.0);
            } else {
                interruption_at = after(&mut rng, 10.0, 20.0);
            }
        }
    }
}
