//! Cost of one policy tick: [`PoolController::observe`] + [`PoolController::tick`]
//! (forecast, offering health, plan, launch log), the calls the service and the
//! simulator make for a pool on every tick (every simulated 30 s in the simulator).
//!
//! `cargo bench -p reconciler --bench tick` (a harness-less binary). It replays
//! 2,805,339 ticks (the SDSC Blue Horizon trace's 974 days) of a generated bursty
//! queue for each policy and prints the best of three runs and the time per tick.
//! Plans are applied to a minimal fleet (launches become ready after 4 ticks and feed
//! their 120 s boot to [`PoolController::observe_boot`], terminations remove the
//! worker, tasks take the first free slots, a tick with completions feeds a 1,500 s
//! run time to [`PoolController::observe_run_time`]), so the planner sees a realistic
//! fleet; the fleet bookkeeping is included in the time.

use std::hint::black_box;
use std::time::Instant;

use capstan_core::{
    Action, PoolId, PoolSpec, ProviderKind, QueueSample, ScalingPolicy, Timestamp, Worker,
    WorkerId, WorkerState,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reconciler::PoolController;

const TICKS: i64 = 2_805_339;
const TICK_S: i64 = 30;
/// Launch-to-ready time of the bench fleet (4 ticks), also the controller's initial lead.
const BOOT_S: f64 = 120.0;

fn spec(policy: ScalingPolicy) -> PoolSpec {
    let mut s = PoolSpec::from_yaml(
        "id: bench\nprovider: fake\nmax_capacity: 100000\nlaunch_configs:\n  - id: od\n    instance_type: t\n    price_per_hour: 1.0\nscaling:\n  max_launches_per_minute: 10000\n",
    )
    .expect("bench spec is valid");
    s.scaling.policy = policy;
    s
}

fn worker(id: u64, now: Timestamp) -> Worker {
    let mut w = Worker::requested(
        WorkerId::from_string(format!("w-{id}")),
        PoolId::new("bench").expect("valid id"),
        ProviderKind::Fake,
        Some("od".into()),
        1,
        format!("t-{id}"),
        now,
    );
    w.state = WorkerState::Booting;
    w
}

fn run(policy: ScalingPolicy) -> (f64, u64, usize) {
    let mut controller = PoolController::new(&spec(policy), BOOT_S).expect("controller builds");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t0 = Timestamp::from_unix_secs(1_700_000_000);
    let mut workers: Vec<Worker> = Vec::new();
    let mut next_id = 0u64;
    let (mut pending, mut running) = (0u32, 0u32);
    let mut actions = 0u64;
    let mut peak = 0;
    let started = Instant::now();
    for i in 1..=TICKS {
        let now = t0.plus_secs(i * TICK_S);
        // About 0.1 arrivals per tick with occasional bursts, as on the trace.
        let mut arrivals = u32::from(rng.gen_bool(0.08));
        if rng.gen_bool(0.002) {
            arrivals += rng.gen_range(5..40);
        }
        let completions = (0..running).filter(|_| rng.gen_bool(0.02)).count() as u32;
        running -= completions;
        for w in &mut workers {
            if w.state == WorkerState::Booting {
                let boot_s = now.secs_since(w.created_at);
                if boot_s >= BOOT_S {
                    w.state = WorkerState::Ready;
                    w.registered_at = Some(now);
                    controller.observe_boot(boot_s);
                }
            }
        }
        let ready = workers
            .iter()
            .filter(|w| w.state == WorkerState::Ready)
            .count() as u32;
        pending += arrivals;
        let start = pending.min(ready.saturating_sub(running));
        pending -= start;
        running += start;
        let mut busy_left = running;
        for w in &mut workers {
            if w.state != WorkerState::Ready {
                continue;
            }
            let busy = busy_left > 0;
            busy_left = busy_left.saturating_sub(1);
            w.busy_slots = u32::from(busy);
            w.idle_since = if busy {
                None
            } else {
                w.idle_since.or(Some(now))
            };
            w.last_heartbeat_at = Some(now);
        }
        controller.observe(&QueueSample {
            at: now,
            pending,
            running,
            arrivals,
            completions,
        });
        if completions > 0 {
            controller.observe_run_time(1500.0);
        }
        let (_, plan) = controller.tick(&workers, now);
        actions += plan.actions.len() as u64;
        for a in black_box(plan).actions {
            match a {
                Action::Launch { count, .. } => {
                    for _ in 0..count {
                        workers.push(worker(next_id, now));
                        next_id += 1;
                    }
                }
                Action::Terminate { worker, .. } => workers.retain(|w| w.id != worker),
            }
        }
        peak = peak.max(workers.len());
    }
    (started.elapsed().as_secs_f64(), actions, peak)
}

fn main() {
    for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
        let mut best = f64::INFINITY;
        let (mut actions, mut peak) = (0, 0);
        for _ in 0..3 {
            let (secs, a, p) = run(policy);
            best = best.min(secs);
            (actions, peak) = (a, p);
        }
        println!(
            "{:<9} {TICKS} ticks: best {best:.3} s, {:.0} ns per tick (observe + forecast + plan + fleet update); {actions} actions, fleet peak {peak}",
            policy.as_str(),
            best * 1e9 / TICKS as f64
        );
    }
}
