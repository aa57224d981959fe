//! The discrete-event engine: replays a trace against the real pool controller.
//!
//! A virtual clock (integer milliseconds) jumps from event to event:
//!
//! - **arrivals** come from the trace, in submit order, into a FIFO queue;
//! - **completions** free a slot (and feed the run time to the predictor);
//! - **boots** finish: the worker registers (`booting → ready`) and takes tasks;
//! - **interruptions** take a spot instance away; its tasks go back to the front of
//!   the queue and start over. Each task start draws the instance's time to
//!   interruption anew from the task and attempt (the same law; common random numbers
//!   across policies, see `Engine::redraw_interruption`). A task interrupted
//!   [`MAX_ATTEMPTS`] times is given up, as a queue's retry limit gives it up;
//! - **ticks**, every `tick_s` (30 s by default): the pool's [`QueueSample`] for the
//!   interval goes to [`PoolController::observe`], and [`PoolController::tick`] — the
//!   very observe → predict → plan code the service runs (predictor, offering health,
//!   launch log, measured lead time), never a reimplementation — forecasts and decides
//!   launches and terminations, which are applied at once. A launch may fail with
//!   insufficient capacity, which goes to [`PoolController::offering_unavailable`] and
//!   so skips the offering for the cloud model's `unavailable_ttl_s`; completions feed
//!   [`PoolController::observe_run_time`], boots [`PoolController::observe_boot`].
//!
//! Queued tasks start as soon as a slot is free, not only on ticks: the planner decides
//! capacity, the queue hands out tasks. A task goes to a ready worker that already runs
//! something if one has a free slot (packing), else to the most recently freed one, so
//! that long-idle workers reach their idle timeout.
//!
//! Instances are billed per second from launch to termination (or interruption), at
//! least the offering's billing minimum. The run ends when the last task completes;
//! workers still alive then are terminated at that instant.
//!
//! **Determinism.** Everything random comes from [`SimRng`] streams forked from the
//! seed; events at the same instant are ordered by kind (completions, interruptions,
//! boots, arrivals, then the tick) and then by instance and task number. So a seed gives
//! the same report, byte for byte, on every run.
//!
//! **Speed.** The workers are one `Vec<core::Worker>` handed to the planner as a slice
//! and updated in place; per-instance simulator data sits in a parallel `Vec`. A tick
//! allocates nothing unless the plan has actions. Counters (`pending`, `running`,
//! capacity slots, free ready slots) are maintained incrementally, and heartbeats are
//! refreshed once per heartbeat timeout rather than on every tick, so a quiet tick
//! costs little more than the controller's tick (predictor and planner).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use capstan_core::id::push_decimal;
use capstan_core::{
    Action, LaunchConfig, Market, PoolId, PoolSpec, ProviderKind, QueueSample, Scaling,
    ScalingPolicy, SpecErrors, Timestamp, Worker, WorkerId, WorkerState,
};
use predictor::{AccuracyReport, AccuracyTracker};
use reconciler::{PlanError, Planner, PoolController};
use serde::{Deserialize, Serialize};

use crate::cloud::{CloudError, CloudModel, OfferingModel};
use crate::oracle::oracle_instance_ms;
use crate::rng::SimRng;
use crate::trace::Trace;

/// Everything a run needs besides the trace.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The pool being simulated (its scaling policy picks the predictor).
    pub spec: PoolSpec,
    /// The simulated cloud.
    pub cloud: CloudModel,
    /// Reconcile interval in seconds (>= 1).
    pub tick_s: u64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Buckets of the time series to keep for plots and reports (0 for none): the
    /// span of the trace is cut into this many buckets, none shorter than a tick.
    pub series_points: usize,
}

impl SimConfig {
    /// The setting the README's numbers are measured in: [`default_pool`] with
    /// `policy`, the default cloud (constant boot 120 s, per-second billing without a
    /// minimum, no interruptions or failures) and a 30 s tick. `reactive` keeps the
    /// documented baseline's idle timeout of 600 s; `forecast` leaves it unset, so the
    /// controller chooses it from the boot time and the observed idle gaps.
    pub fn default_setting(policy: ScalingPolicy, seed: u64) -> Self {
        let idle_timeout_s = match policy {
            ScalingPolicy::Reactive => Some(REACTIVE_IDLE_TIMEOUT_S),
            ScalingPolicy::Forecast => None,
        };
        Self {
            spec: default_pool(policy, 1, idle_timeout_s),
            cloud: CloudModel::default(),
            tick_s: 30,
            seed,
            series_points: 0,
        }
    }
}

/// The idle timeout of the documented `reactive` baseline, in seconds (the value
/// [`SimConfig::default_setting`] gives `reactive`).
pub const REACTIVE_IDLE_TIMEOUT_S: u64 = 600;

/// The pool simulated when none is given: one on-demand launch config `on-demand` of
/// `slots` slots at 1.0 per instance-hour (so `cost` reads as instance-hours), no
/// floor, a ceiling of 100,000 slots, reactive ratio 1, the given idle timeout (`None`:
/// chosen by capstan from the boot time and the observed idle gaps), and a
/// launch-rate limit of 10,000 per minute (high enough never to bind, so the baseline
/// measures the policy, not the limit).
pub fn default_pool(policy: ScalingPolicy, slots: u32, idle_timeout_s: Option<u64>) -> PoolSpec {
    PoolSpec {
        id: PoolId::new("sim").expect("valid id"),
        description: "capstan simulate default pool".into(),
        provider: ProviderKind::Fake,
        min_capacity: 0,
        max_capacity: 100_000,
        launch_configs: vec![LaunchConfig {
            id: "on-demand".into(),
            region: "sim".into(),
            zone: None,
            instance_type: format!("sim-{slots}-slot"),
            market: Market::OnDemand,
            capacity: slots,
            priority: 0,
            max_capacity: None,
            price_per_hour: Some(1.0),
            provider_config: Default::default(),
        }],
        scaling: Scaling {
            policy,
            scaling_ratio: 1.0,
            idle_timeout_s,
            max_launches_per_minute: 10_000,
            ..Scaling::default()
        },
        lifecycle: Default::default(),
        schedules: Vec::new(),
        budget: None,
        queue: None,
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The pool spec is invalid.
    #[error("pool spec: {0}")]
    Spec(#[from] SpecErrors),
    /// The cloud model is invalid or does not fit the pool.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// The planner could not be built for the spec.
    #[error("planner: {0}")]
    Plan(#[from] PlanError),
    /// The pool has no launch config, so nothing can ever run.
    #[error("pool spec: launch_configs: the simulated pool needs at least one launch config")]
    NoLaunchConfig,
    /// The tick is zero.
    #[error("tick: must be >= 1 second, got 0")]
    ZeroTick,
}

/// Task wait statistics, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WaitStats {
    /// Mean wait.
    pub mean: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Longest wait.
    pub max: f64,
}

/// What a run measured. Serializes to the JSON that `capstan simulate --json` prints,
/// and reads back from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The scaling policy simulated.
    pub policy: ScalingPolicy,
    /// Tasks replayed.
    pub tasks: u64,
    /// Jobs of the trace skipped for a missing or non-positive run time.
    pub skipped: u64,
    /// Malformed lines skipped (with `--skip-bad-lines`).
    pub bad_lines: u64,
    /// Tasks that never finished: the run stalled (no capacity for 7 days), or they
    /// were given up after [`MAX_ATTEMPTS`] interrupted attempts (`abandoned`).
    pub unfinished: u64,
    /// Of the unfinished tasks, those given up after [`MAX_ATTEMPTS`] interrupted
    /// attempts (absent from reports written before it was counted: 0).
    #[serde(default)]
    pub abandoned: u64,
    /// Sum of the tasks' run times, in seconds.
    pub work_seconds: f64,
    /// Billed instance time, in seconds.
    pub instance_seconds: f64,
    /// Billed cost, in the prices' currency.
    pub cost: f64,
    /// The oracle's instance time for the preferred offering's slots and boot time.
    pub oracle_instance_seconds: f64,
    /// `instance_seconds / oracle_instance_seconds`.
    pub ratio_to_oracle: f64,
    /// How long tasks waited for a slot (summed over restarts after interruptions).
    pub wait_s: WaitStats,
    /// Busy slot time over instance slot time.
    pub utilization: f64,
    /// Instances launched.
    pub launches: u64,
    /// Instance launches that failed (insufficient capacity).
    pub launch_failures: u64,
    /// Instances terminated by the planner.
    pub terminations: u64,
    /// Spot instances taken away.
    pub interruptions: u64,
    /// Reconcile ticks run.
    pub ticks: u64,
    /// How well the forecasts predicted demand (running + waiting tasks) at
    /// `now + lead`: MAE and MASE of `expected_busy_slots` against seasonal naive (the
    /// demand a week earlier), pinball loss and coverage of `target_slots` as the
    /// upper quantile at the service level. `null` for runs shorter than a week.
    pub forecast_accuracy: Option<AccuracyReport>,
    /// Simulated time from the first submit to the last completion, in seconds.
    pub sim_seconds: f64,
    /// Wall-clock time of the run, in seconds (the one field that varies between runs).
    pub wall_seconds: f64,
}

/// One bucket of the downsampled time series.
///
/// The levels (`demand`, `capacity`, `queue`, `booting`) are the maxima over the
/// bucket's ticks and its first instant, so short peaks stay visible however coarse
/// the bucket; `cost` is a running total; the waits describe the tasks that started in
/// the bucket. The engine keeps these per bucket in O(1) per event, so collecting a
/// series costs the replay next to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start of the bucket, seconds after the first submit.
    pub t_s: f64,
    /// Tasks running or waiting.
    pub demand: u32,
    /// Slots of requested, booting and ready workers.
    pub capacity: u32,
    /// Tasks waiting.
    pub queue: u32,
    /// Instances launched and not yet ready.
    pub booting: u32,
    /// Cost accrued by the end of the bucket: the billed cost of the instances gone
    /// plus the time so far of the live ones (a billing minimum is added when an
    /// instance goes, as it is billed). The last point's is the report's `cost`.
    pub cost: f64,
    /// Tasks that started in the bucket (a restart after an interruption counts again).
    pub starts: u32,
    /// Mean wait of those starts in seconds (since the task was queued or requeued);
    /// 0 when none started.
    pub wait_mean_s: f64,
    /// Longest wait of those starts in seconds; 0 when none started.
    pub wait_max_s: f64,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The measurements.
    pub report: Report,
    /// Demand, capacity, queue, cost and waits over time, downsampled (empty unless
    /// [`SimConfig::series_points`] asked for it).
    pub series: Vec<SeriesPoint>,
}

/// Event kinds, in the order they are processed at one instant.
const EV_COMPLETION: u8 = 0;
const EV_INTERRUPTION: u8 = 1;
const EV_BOOTED: u8 = 2;

/// Spreads (task, attempt) keys over the 64-bit seed space before they seed a task
/// start's interruption draw (an odd multiplier, as in SplitMix64).
const TASK_DRAW_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// (time ms, kind, instance uid, task index, attempt): min-heap by all fields.
type Event = Reverse<(i64, u8, u64, u32, u32)>;

/// Instance `uid` is interrupted `after_s` seconds from `now`, if its draw is still
/// `draw` then (a task start may draw anew: [`Engine::redraw_interruption`]).
fn push_interruption(events: &mut BinaryHeap<Event>, uid: u64, now: i64, after_s: f64, draw: u32) {
    let at = now + (after_s * 1000.0).round() as i64;
    events.push(Reverse((at, EV_INTERRUPTION, uid, 0, draw)));
}

const NO_POS: u32 = u32::MAX;
const STALL_MS: i64 = 7 * 86_400_000;

/// Attempts after which an interrupted task is given up (counted in
/// [`Report::abandoned`]), as a queue's retry limit gives it up. Real queues stop far
/// sooner (Kubernetes Jobs after 6 failures by default, AWS Batch after at most 10
/// attempts); 100 keeps every task that has a fair chance of finishing and ends the
/// replay of one that has none: a 171-hour SDSC job on instances interrupted 0.1 times
/// an hour finishes an attempt once in e^17 ≈ 26 million, so replaying it until it
/// finished would never end.
pub const MAX_ATTEMPTS: u32 = 100;

/// Simulator-side data of one live instance, parallel to its `Worker`.
#[derive(Debug)]
struct Instance {
    uid: u64,
    offering: usize,
    launched_ms: i64,
    /// When it last became without a running task (for LIFO hand-out).
    freed_ms: i64,
    /// Tasks it runs.
    running: Vec<u32>,
    /// Which of its scheduled interruptions counts: each task start draws a new one
    /// (see [`Engine::redraw_interruption`]) and the earlier event is then ignored.
    interruption_draw: u32,
}

/// The state of one run.
struct Engine<'a> {
    trace: &'a Trace,
    spec: &'a PoolSpec,
    /// The pool's controller: predictor, offering health, launch log, lead time.
    controller: PoolController,
    offerings: Vec<OfferingModel>,
    /// Index in `spec.launch_configs` of the offering the planner tries first.
    preferred: usize,
    /// Hourly price of each launch config.
    prices: Vec<f64>,
    rng_launch: SimRng,
    rng_boot: SimRng,
    rng_interrupt: SimRng,
    /// Seeds the interruption draw of each task start (with the task and attempt).
    interrupt_key: u64,

    /// `trace.origin` in ms; task times are relative to the first submit.
    base_ms: i64,
    events: BinaryHeap<Event>,
    next_arrival: usize,
    queue: VecDeque<u32>,
    queued_at: Vec<i64>,
    started_at: Vec<i64>,
    attempt: Vec<u32>,
    wait_ms: Vec<i64>,

    workers: Vec<Worker>,
    instances: Vec<Instance>,
    /// Position in `workers` of each instance uid ever launched, `NO_POS` once gone.
    pos_of: Vec<u32>,

    running_tasks: u32,
    capacity_slots: u32,
    /// Instances in `Booting`.
    booting: u32,
    free_ready_slots: u32,
    arrivals_since_tick: u32,
    completions_since_tick: u32,
    completed: u64,
    /// Tasks given up after [`MAX_ATTEMPTS`] interrupted attempts.
    abandoned: u64,
    /// The run is over and the remaining instances are being terminated.
    ending: bool,
    last_progress_ms: i64,
    /// The pool's `lifecycle.heartbeat_timeout_s` in ms, and when the ready workers'
    /// heartbeats were last refreshed (see [`Engine::tick`]).
    heartbeat_timeout_ms: i64,
    heartbeats_refreshed_ms: Option<i64>,

    busy_slot_ms: i128,
    instance_ms: i128,
    instance_slot_ms: i128,
    cost: f64,
    /// Per offering, live instances and the sum of their launch times, so the cost
    /// accrued so far is known at any instant in O(offerings) (see
    /// [`Engine::accrued_cost`]).
    live_instances: Vec<i64>,
    live_launched_ms: Vec<i128>,
    launches: u64,
    launch_failures: u64,
    terminations: u64,
    interruptions: u64,
    ticks: u64,

    /// Series bucket length (0: no series), the end of the current (last) bucket in
    /// trace time (`i64::MAX` without a series), and the waits of the tasks started in
    /// it so far: sum, longest (ms) and count.
    series_bucket_ms: i64,
    series_next_ms: i64,
    series: Vec<SeriesPoint>,
    bucket_wait_sum_ms: i128,
    bucket_wait_max_ms: i64,
    bucket_starts: u32,
    scoring: ForecastScoring,
    /// Buffers of gone instances (strings of their workers, task lists), reused by
    /// launches: a replay launches and retires hundreds of thousands.
    spare_strings: Vec<String>,
    spare_running: Vec<Vec<u32>>,
    /// Bumped whenever anything about `workers` changes (the controller re-surveys the
    /// fleet only then, or when a timeout runs out).
    fleet_version: u64,
}

/// Buffers of each kind kept for reuse.
const RECYCLE_MAX: usize = 256;

/// Scores each tick's forecast when its instant comes, against the demand then and
/// against seasonal naive (the demand one week of ticks earlier).
#[derive(Debug)]
struct ForecastScoring {
    tracker: AccuracyTracker,
    /// Forecasts not yet due: (due tick, expected busy slots, target slots).
    due: VecDeque<(u64, f64, f64)>,
    /// Demand at each of the last `week_ticks` ticks, by tick number modulo its length.
    week: Vec<u32>,
    tick_ms: i64,
    tau: f64,
    /// The last lead seen and its length in ticks (the lead changes only with boots, so
    /// the division is mostly skipped).
    lead: (f64, u64),
    /// The last tick recorded and its slot in `week`.
    slot: (u64, u64),
}

impl ForecastScoring {
    fn new(tick_ms: i64, service_level: f64) -> Self {
        let week_ticks = (7 * 86_400_000 / tick_ms).max(1) as usize;
        Self {
            tracker: AccuracyTracker::new(),
            due: VecDeque::new(),
            week: vec![0; week_ticks],
            tick_ms,
            tau: service_level,
            lead: (f64::NAN, 1),
            slot: (u64::MAX, 0),
        }
    }

    /// Tick number `tick` (counted from 1) saw `demand`; the forecast made now looks
    /// `lead_s` ahead.
    fn record(&mut self, tick: u64, demand: u32, lead_s: f64, expected: f64, target: f64) {
        let len = self.week.len() as u64;
        // `tick % len`, kept up as ticks come one by one (a division fewer per tick).
        if self.slot.0.wrapping_add(1) == tick {
            self.slot.1 = if self.slot.1 + 1 == len {
                0
            } else {
                self.slot.1 + 1
            };
        } else {
            self.slot.1 = tick % len;
        }
        self.slot.0 = tick;
        let slot = self.slot.1 as usize;
        let naive = (tick > len).then(|| f64::from(self.week[slot]));
        while let Some(&(at, mean, upper)) = self.due.front() {
            if at > tick {
                break;
            }
            self.due.pop_front();
            if let Some(naive) = naive {
                self.tracker
                    .record(f64::from(demand), mean, naive, 0.0, upper, self.tau);
            }
        }
        self.week[slot] = demand;
        if lead_s.to_bits() != self.lead.0.to_bits() {
            let ticks = ((lead_s * 1000.0) / self.tick_ms as f64).ceil().max(1.0) as u64;
            self.lead = (lead_s, ticks);
        }
        self.due.push_back((tick + self.lead.1, expected, target));
    }
}

/// Runs `trace` under `config`. `progress` is called now and then with the fraction
/// of tasks completed (for progress bars); pass `&mut |_| {}` to ignore it.
pub fn simulate(
    trace: &Trace,
    config: &SimConfig,
    progress: &mut dyn FnMut(f64),
) -> Result<Outcome, SimError> {
    let started = std::time::Instant::now();
    config.spec.validate()?;
    if config.spec.launch_configs.is_empty() {
        return Err(SimError::NoLaunchConfig);
    }
    if config.tick_s == 0 {
        return Err(SimError::ZeroTick);
    }
    let offerings = config.cloud.resolve(&config.spec)?;
    // The controller looks ahead by the preferred offering's typical boot time until
    // it has measured boots.
    let preferred = preferred_offering(&Planner::new(&config.spec)?, &config.spec);
    let controller = PoolController::new(&config.spec, offerings[preferred].boot.typical_s())?
        .with_unavailable_ttl_s(whole_seconds_ttl(config.cloud.unavailable_ttl_s));
    let mut engine = Engine::new(trace, config, controller, preferred, offerings);
    engine.run(config.tick_s as i64 * 1000, progress);
    let mut outcome = engine.finish(config);
    outcome.report.wall_seconds = started.elapsed().as_secs_f64();
    Ok(outcome)
}

impl<'a> Engine<'a> {
    fn new(
        trace: &'a Trace,
        config: &'a SimConfig,
        controller: PoolController,
        preferred: usize,
        offerings: Vec<OfferingModel>,
    ) -> Self {
        let n = trace.tasks.len();
        let mut root = SimRng::new(config.seed);
        let prices = offerings
            .iter()
            .map(|o| o.price_per_hour.unwrap_or(0.0))
            .collect();
        let span = trace.span_ms();
        let series_bucket_ms = if config.series_points == 0 || n == 0 {
            0
        } else {
            (span / config.series_points as i64).max(config.tick_s as i64 * 1000)
        };
        // The series starts with bucket 0 at the first submit (ticks before it count
        // into bucket 0).
        let (series_next_ms, series) = if series_bucket_ms == 0 {
            (i64::MAX, Vec::new())
        } else {
            let first = trace.tasks[0].submit_ms;
            let mut series = Vec::with_capacity(config.series_points.min(1 << 20) + 1);
            series.push(SeriesPoint {
                t_s: 0.0,
                demand: 0,
                capacity: 0,
                queue: 0,
                booting: 0,
                cost: 0.0,
                starts: 0,
                wait_mean_s: 0.0,
                wait_max_s: 0.0,
            });
            (first + series_bucket_ms, series)
        };
        let n_offerings = offerings.len();
        Self {
            trace,
            spec: &config.spec,
            controller,
            offerings,
            preferred,
            prices,
            rng_launch: root.fork(1),
            rng_boot: root.fork(2),
            rng_interrupt: root.fork(3),
            interrupt_key: root.fork(4).next_u64(),
            base_ms: trace.origin.unix_ms(),
            events: BinaryHeap::new(),
            next_arrival: 0,
            queue: VecDeque::new(),
            queued_at: vec![0; n],
            started_at: vec![0; n],
            attempt: vec![0; n],
            wait_ms: vec![0; n],
            workers: Vec::new(),
            instances: Vec::new(),
            pos_of: Vec::new(),
            running_tasks: 0,
            capacity_slots: 0,
            booting: 0,
            free_ready_slots: 0,
            arrivals_since_tick: 0,
            completions_since_tick: 0,
            completed: 0,
            abandoned: 0,
            ending: false,
            last_progress_ms: 0,
            heartbeat_timeout_ms: i64::try_from(config.spec.lifecycle.heartbeat_timeout_s)
                .unwrap_or(i64::MAX / 1000)
                .saturating_mul(1000),
            heartbeats_refreshed_ms: None,
            busy_slot_ms: 0,
            instance_ms: 0,
            instance_slot_ms: 0,
            cost: 0.0,
            live_instances: vec![0; n_offerings],
            live_launched_ms: vec![0; n_offerings],
            launches: 0,
            launch_failures: 0,
            terminations: 0,
            interruptions: 0,
            ticks: 0,
            series_bucket_ms,
            series_next_ms,
            series,
            bucket_wait_sum_ms: 0,
            bucket_wait_max_ms: 0,
            bucket_starts: 0,
            spare_strings: Vec::new(),
            spare_running: Vec::new(),
            fleet_version: 0,
            scoring: ForecastScoring::new(
                config.tick_s as i64 * 1000,
                config.spec.scaling.service_level,
            ),
        }
    }

    fn now_ts(&self, t_ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(self.base_ms + t_ms)
    }

    fn run(&mut self, tick_ms: i64, progress: &mut dyn FnMut(f64)) {
        let tasks = &self.trace.tasks;
        let n = tasks.len() as u64;
        if n == 0 {
            return;
        }
        // Ticks sit on a grid of the tick interval in absolute time, starting at or
        // before the first submit.
        let first = tasks[0].submit_ms;
        let mut next_tick = (self.base_ms + first).div_euclid(tick_ms) * tick_ms - self.base_ms;
        self.last_progress_ms = first;
        let report_every = (n / 200).max(1);
        let mut next_report = report_every;
        while self.completed + self.abandoned < n {
            let ev_t = self.events.peek().map_or(i64::MAX, |e| e.0.0);
            let arr_t = tasks
                .get(self.next_arrival)
                .map_or(i64::MAX, |t| t.submit_ms);
            if ev_t <= arr_t && ev_t <= next_tick {
                let Reverse((t, kind, uid, task, attempt)) =
                    self.events.pop().expect("peeked event");
                self.roll_series(t);
                match kind {
                    EV_COMPLETION => self.complete(t, uid, task, attempt),
                    EV_INTERRUPTION => self.interrupt(t, uid, attempt),
                    _ => self.booted(t, uid),
                }
            } else if arr_t <= next_tick {
                self.roll_series(arr_t);
                let i = self.next_arrival;
                self.next_arrival += 1;
                self.arrivals_since_tick += 1;
                self.queued_at[i] = arr_t;
                self.queue.push_back(i as u32);
                self.dispatch(arr_t);
            } else {
                if !self.queue.is_empty() && next_tick - self.last_progress_ms > STALL_MS {
                    break;
                }
                self.roll_series(next_tick);
                self.tick(next_tick);
                next_tick += tick_ms;
            }
            if self.completed >= next_report {
                next_report += report_every;
                progress(self.completed as f64 / n as f64);
            }
        }
        let end = self.last_progress_ms.max(next_tick - tick_ms);
        let end = if self.completed + self.abandoned == n {
            self.last_progress_ms
        } else {
            end
        };
        self.roll_series(end);
        self.ending = true;
        while !self.workers.is_empty() {
            self.remove_instance(self.workers.len() - 1, end);
        }
        self.last_progress_ms = end;
        progress(1.0);
    }

    /// Hands queued tasks to free slots of ready workers.
    fn dispatch(&mut self, now: i64) {
        while self.free_ready_slots > 0 && !self.queue.is_empty() {
            // Pack onto a worker that already runs something, else the most recently
            // freed; ties by launch order.
            let mut best: Option<usize> = None;
            for (i, w) in self.workers.iter().enumerate() {
                if w.state != WorkerState::Ready || w.busy_slots >= w.capacity {
                    continue;
                }
                best = match best {
                    None => Some(i),
                    Some(b) => {
                        let (bw, bi) = (&self.workers[b], &self.instances[b]);
                        let key = (
                            w.busy_slots,
                            self.instances[i].freed_ms,
                            Reverse(self.instances[i].uid),
                        );
                        let best_key = (bw.busy_slots, bi.freed_ms, Reverse(bi.uid));
                        if key > best_key { Some(i) } else { Some(b) }
                    }
                };
            }
            let Some(pos) = best else {
                debug_assert!(false, "free_ready_slots out of sync");
                return;
            };
            let task = self.queue.pop_front().expect("queue not empty");
            self.start(pos, task, now);
        }
    }

    fn start(&mut self, pos: usize, task: u32, now: i64) {
        let i = task as usize;
        let waited = now - self.queued_at[i];
        self.wait_ms[i] += waited;
        self.bucket_wait_sum_ms += i128::from(waited);
        self.bucket_wait_max_ms = self.bucket_wait_max_ms.max(waited);
        self.bucket_starts += 1;
        self.started_at[i] = now;
        self.end_idle_period(pos, now, true);
        self.fleet_version += 1;
        let w = &mut self.workers[pos];
        w.busy_slots += 1;
        w.idle_since = None;
        let inst = &mut self.instances[pos];
        inst.running.push(task);
        self.free_ready_slots -= 1;
        self.running_tasks += 1;
        self.last_progress_ms = now;
        let run = self.trace.tasks[i].run_ms;
        let uid = inst.uid;
        self.events.push(Reverse((
            now + run,
            EV_COMPLETION,
            uid,
            task,
            self.attempt[i],
        )));
        self.redraw_interruption(pos, task, now);
    }

    /// A task starts on the spot instance at `pos`: the instance's time to interruption
    /// is drawn anew, from a stream fixed by the seed, the task and its attempt.
    ///
    /// Time to interruption is exponential, so what is left of it at any instant the
    /// run chooses without looking ahead (here: a task start) is again exponential with
    /// the same rate and independent of the past, and replacing it by a fresh draw leaves
    /// the law of the whole replay unchanged. What the redraw buys is common random
    /// numbers across policies: a task's attempt meets the same interruption draw
    /// whichever policy's machine runs it, so two service levels differ in cost by
    /// what they decide, not by which long task the luck of one run cut short.
    fn redraw_interruption(&mut self, pos: usize, task: u32, now: i64) {
        let inst = &mut self.instances[pos];
        let rate = self.offerings[inst.offering].interruptions_per_hour;
        if rate <= 0.0 {
            return;
        }
        let key = u64::from(task) << 32 | u64::from(self.attempt[task as usize]);
        let mut rng = SimRng::new(self.interrupt_key ^ key.wrapping_mul(TASK_DRAW_MIX));
        let after_s = rng.exponential(3600.0 / rate);
        inst.interruption_draw = inst.interruption_draw.wrapping_add(1);
        push_interruption(
            &mut self.events,
            inst.uid,
            now,
            after_s,
            inst.interruption_draw,
        );
    }

    fn complete(&mut self, now: i64, uid: u64, task: u32, attempt: u32) {
        let i = task as usize;
        let pos = self.pos_of[uid as usize];
        if self.attempt[i] != attempt || pos == NO_POS {
            return; // The task was interrupted and restarted since.
        }
        let pos = pos as usize;
        let run = self.trace.tasks[i].run_ms;
        let inst = &mut self.instances[pos];
        let k = inst
            .running
            .iter()
            .position(|&t| t == task)
            .expect("running");
        inst.running.swap_remove(k);
        self.fleet_version += 1;
        let w = &mut self.workers[pos];
        w.busy_slots -= 1;
        if w.busy_slots == 0 {
            w.idle_since = Some(Timestamp::from_unix_ms(self.base_ms + now));
            inst.freed_ms = now;
        }
        if w.state == WorkerState::Ready {
            self.free_ready_slots += 1;
        }
        self.running_tasks -= 1;
        self.busy_slot_ms += i128::from(run);
        self.completed += 1;
        self.completions_since_tick += 1;
        self.last_progress_ms = now;
        self.controller.observe_run_time(run as f64 / 1000.0);
        self.dispatch(now);
    }

    fn booted(&mut self, now: i64, uid: u64) {
        let pos = self.pos_of[uid as usize];
        if pos == NO_POS {
            return;
        }
        let pos = pos as usize;
        let ts = self.now_ts(now);
        self.fleet_version += 1;
        let w = &mut self.workers[pos];
        if w.state != WorkerState::Booting || w.transition(WorkerState::Ready, ts).is_err() {
            return;
        }
        self.booting -= 1;
        self.free_ready_slots += w.capacity;
        // The measured launch-to-ready time moves the controller's lead.
        let boot_s = (now - self.instances[pos].launched_ms) as f64 / 1000.0;
        self.controller.observe_boot(boot_s);
        self.instances[pos].freed_ms = now;
        self.dispatch(now);
    }

    fn interrupt(&mut self, now: i64, uid: u64, draw: u32) {
        let pos = self.pos_of[uid as usize];
        if pos == NO_POS || self.instances[pos as usize].interruption_draw != draw {
            return; // Gone, or a task start has drawn its interruption anew since.
        }
        self.interruptions += 1;
        self.remove_instance(pos as usize, now);
        self.dispatch(now);
    }

    /// Worker `pos`'s idle period, if it is idle, ends at `now`: a task took it
    /// (`reused`) or it goes away. Feeds the idle timeout the controller chooses.
    fn end_idle_period(&mut self, pos: usize, now: i64, reused: bool) {
        let w = &self.workers[pos];
        if w.busy_slots == 0
            && let Some(since) = w.idle_since
        {
            let idle_ms = self.base_ms + now - since.unix_ms();
            let at = self.now_ts(now);
            // Under most-recently-freed dispatch an idle worker keeps its level: the
            // busy slots once a task takes it.
            let level = reused.then(|| self.running_tasks.saturating_add(1));
            self.controller
                .observe_idle_gap(idle_ms as f64 / 1000.0, reused, at, level);
        }
    }

    /// Terminates the instance at `pos` at `now`: its running tasks go back to the
    /// front of the queue (in submit order), it is billed, and it leaves the fleet.
    fn remove_instance(&mut self, pos: usize, now: i64) {
        let mut inst = self.instances.swap_remove(pos);
        self.fleet_version += 1;
        let w = self.workers.swap_remove(pos);
        self.pos_of[inst.uid as usize] = NO_POS;
        if let Some(moved) = self.instances.get(pos) {
            self.pos_of[moved.uid as usize] = pos as u32;
        }
        let mut running = std::mem::take(&mut inst.running);
        running.sort_unstable();
        let mut requeued = 0;
        for &task in running.iter().rev() {
            let i = task as usize;
            self.busy_slot_ms += i128::from(now - self.started_at[i]);
            self.attempt[i] += 1;
            if self.attempt[i] >= MAX_ATTEMPTS && !self.ending {
                // Settled: the run may end here, after every launch so far.
                self.abandoned += 1;
                self.last_progress_ms = now;
                continue;
            }
            self.queued_at[i] = now;
            self.queue.push_front(task);
            requeued += 1;
        }
        if requeued > 0 && !self.ending {
            self.controller.observe_requeued(requeued);
        }
        self.running_tasks -= running.len() as u32;
        if w.state.counts_as_capacity() {
            self.capacity_slots -= w.capacity;
        }
        if w.state == WorkerState::Ready {
            self.free_ready_slots -= w.capacity - w.busy_slots;
        }
        if w.state == WorkerState::Booting {
            self.booting -= 1;
        }
        self.live_instances[inst.offering] -= 1;
        self.live_launched_ms[inst.offering] -= i128::from(inst.launched_ms);
        let model = &self.offerings[inst.offering];
        let lived = now - inst.launched_ms;
        let billed = lived.max((model.billing_minimum_s * 1000.0).round() as i64);
        self.instance_ms += i128::from(billed);
        self.instance_slot_ms += i128::from(lived) * i128::from(w.capacity);
        self.cost += billed as f64 / 3_600_000.0 * self.prices[inst.offering];
        // Keep the buffers of the instance's strings and task list for the next launch.
        if self.spare_running.len() < RECYCLE_MAX {
            running.clear();
            self.spare_running.push(running);
        }
        let Worker {
            id,
            launch_config_id,
            instance_id,
            idempotency_token,
            ..
        } = w;
        for s in [
            Some(id.into_string()),
            launch_config_id,
            instance_id,
            Some(idempotency_token),
        ]
        .into_iter()
        .flatten()
        {
            if self.spare_strings.len() < RECYCLE_MAX {
                self.spare_strings.push(s);
            }
        }
    }

    fn tick(&mut self, now: i64) {
        self.ticks += 1;
        let ts = self.now_ts(now);
        let sample = QueueSample {
            at: ts,
            pending: self.queue.len() as u32,
            running: self.running_tasks,
            arrivals: self.arrivals_since_tick,
            completions: self.completions_since_tick,
        };
        self.arrivals_since_tick = 0;
        self.completions_since_tick = 0;
        self.controller.observe(&sample);
        // Simulated workers never go silent. The planner only asks whether a ready
        // worker's last heartbeat is `heartbeat_timeout_s` old, so refreshing every
        // heartbeat once the last refresh is that old gives the same plans as refreshing
        // on every tick (a worker that became ready since has its registration as its
        // heartbeat), for one pass over the fleet per timeout instead of per tick.
        if self
            .heartbeats_refreshed_ms
            .is_none_or(|at| now - at >= self.heartbeat_timeout_ms)
        {
            self.heartbeats_refreshed_ms = Some(now);
            self.fleet_version += 1;
            for w in &mut self.workers {
                if matches!(w.state, WorkerState::Ready | WorkerState::Draining) {
                    w.last_heartbeat_at = Some(ts);
                }
            }
        }
        let (forecast, plan) =
            self.controller
                .tick_versioned(&self.workers, ts, self.fleet_version);
        if !plan.actions.is_empty() {
            for action in plan.actions {
                match action {
                    Action::Launch {
                        launch_config_id,
                        zone,
                        count,
                        idempotency_token,
                    } => self.launch(
                        now,
                        &launch_config_id,
                        zone.as_deref(),
                        count,
                        &idempotency_token,
                    ),
                    Action::Terminate { worker, .. } => {
                        if let Some(pos) = self.position_of(&worker) {
                            self.end_idle_period(pos, now, false);
                            self.terminations += 1;
                            self.remove_instance(pos, now);
                        }
                    }
                }
            }
            self.dispatch(now);
        }
        self.scoring.record(
            self.ticks,
            sample.pending + sample.running,
            self.controller.lead_s(),
            forecast.expected_busy_slots,
            f64::from(forecast.target_slots),
        );
        self.record_series(sample.pending, sample.running);
    }

    fn launch(
        &mut self,
        now: i64,
        launch_config_id: &str,
        zone: Option<&str>,
        count: u32,
        token: &str,
    ) {
        let Some(offering) = self
            .spec
            .launch_configs
            .iter()
            .position(|lc| lc.id == launch_config_id)
        else {
            return;
        };
        let lc = &self.spec.launch_configs[offering];
        let model = &self.offerings[offering];
        let since_start_s = (now - self.trace.tasks[0].submit_ms) as f64 / 1000.0;
        let in_window = model
            .failure_windows
            .iter()
            .any(|w| since_start_s >= w.start_s && since_start_s < w.end_s);
        let ts = self.now_ts(now);
        let token_prefix = [token, "-"].concat();
        for i in 0..count {
            if in_window || self.rng_launch.chance(model.launch_failure_probability) {
                self.launch_failures += 1;
                let key = health_key(self.controller.planner(), lc, zone);
                self.controller
                    .offering_unavailable(&key, "InsufficientInstanceCapacity", ts);
                continue;
            }
            let uid = self.pos_of.len() as u64;
            let mut w = Worker::requested(
                WorkerId::from_string(numbered(spare(&mut self.spare_strings), "w-", uid)),
                self.spec.id.clone(),
                self.spec.provider,
                Some(copied(spare(&mut self.spare_strings), &lc.id)),
                lc.capacity,
                numbered(spare(&mut self.spare_strings), &token_prefix, u64::from(i)),
                ts,
            );
            w.instance_id = Some(numbered(spare(&mut self.spare_strings), "sim-", uid));
            w.transition(WorkerState::Booting, ts)
                .expect("requested -> booting is legal");
            self.capacity_slots += w.capacity;
            self.booting += 1;
            self.live_instances[offering] += 1;
            self.live_launched_ms[offering] += i128::from(now);
            self.pos_of.push(self.workers.len() as u32);
            self.fleet_version += 1;
            self.workers.push(w);
            self.instances.push(Instance {
                uid,
                offering,
                launched_ms: now,
                freed_ms: now,
                running: self.spare_running.pop().unwrap_or_default(),
                interruption_draw: 0,
            });
            self.launches += 1;
            let boot = model.boot.sample_ms(&mut self.rng_boot);
            self.events
                .push(Reverse((now + boot, EV_BOOTED, uid, 0, 0)));
            let rate = model.interruptions_per_hour;
            if rate > 0.0 {
                let after_s = self.rng_interrupt.exponential(3600.0 / rate);
                push_interruption(&mut self.events, uid, now, after_s, 0);
            }
        }
    }

    /// Position in `workers` of the worker with id `id`: the engine names its workers
    /// `w-{uid}`, so the id says where to look; anything else is searched for.
    fn position_of(&self, id: &WorkerId) -> Option<usize> {
        let by_uid = id
            .as_str()
            .strip_prefix("w-")
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|uid| self.pos_of.get(uid))
            .filter(|&&pos| pos != NO_POS)
            .map(|&pos| pos as usize)
            .filter(|&pos| self.workers[pos].id == *id);
        by_uid.or_else(|| self.workers.iter().position(|w| w.id == *id))
    }

    /// Folds the tick's levels into the current bucket (maxima).
    fn record_series(&mut self, pending: u32, running: u32) {
        let Some(last) = self.series.last_mut() else {
            return;
        };
        last.demand = last.demand.max(pending + running);
        last.capacity = last.capacity.max(self.capacity_slots);
        last.queue = last.queue.max(pending);
        last.booting = last.booting.max(self.booting);
    }

    /// Closes every bucket that ends at or before `now` and opens the one `now` falls
    /// in, starting from the levels at its first instant. Called before anything
    /// happens at `now`, so a closed bucket's cost is the cost accrued at its end.
    #[inline]
    fn roll_series(&mut self, now: i64) {
        while now >= self.series_next_ms {
            let end = self.series_next_ms;
            self.close_bucket(self.accrued_cost(end));
            let t_s = (end - self.trace.tasks[0].submit_ms) as f64 / 1000.0;
            let pending = self.queue.len() as u32;
            self.series.push(SeriesPoint {
                t_s,
                demand: pending + self.running_tasks,
                capacity: self.capacity_slots,
                queue: pending,
                booting: self.booting,
                cost: 0.0,
                starts: 0,
                wait_mean_s: 0.0,
                wait_max_s: 0.0,
            });
            self.series_next_ms += self.series_bucket_ms;
        }
    }

    /// Writes the cost and the waits into the last point and resets the waits.
    fn close_bucket(&mut self, cost: f64) {
        let Some(last) = self.series.last_mut() else {
            return;
        };
        last.cost = cost;
        last.starts = self.bucket_starts;
        if self.bucket_starts > 0 {
            last.wait_mean_s =
                self.bucket_wait_sum_ms as f64 / f64::from(self.bucket_starts) / 1000.0;
            last.wait_max_s = self.bucket_wait_max_ms as f64 / 1000.0;
        }
        self.bucket_wait_sum_ms = 0;
        self.bucket_wait_max_ms = 0;
        self.bucket_starts = 0;
    }

    /// Cost accrued by `at` (no earlier than the last termination): the billed cost
    /// of the instances gone plus `at - launch` of each live one at its price.
    fn accrued_cost(&self, at: i64) -> f64 {
        let mut cost = self.cost;
        for (o, &live) in self.live_instances.iter().enumerate() {
            if live > 0 {
                let ms = i128::from(live) * i128::from(at) - self.live_launched_ms[o];
                cost += ms as f64 / 3_600_000.0 * self.prices[o];
            }
        }
        cost
    }

    fn finish(mut self, config: &SimConfig) -> Outcome {
        // Every instance is gone by now, so the last bucket closes at the report's cost.
        self.close_bucket(self.cost);
        let tasks = &self.trace.tasks;
        let n = tasks.len();
        let lc = &config.spec.launch_configs[self.preferred];
        let boot_ms = (self.offerings[self.preferred].boot.typical_s() * 1000.0).round() as i64;
        let oracle_ms = oracle_instance_ms(tasks, lc.capacity, boot_ms);
        let mut waits = self.wait_ms.clone();
        waits.sort_unstable();
        let pct = |p: f64| -> f64 {
            if waits.is_empty() {
                return 0.0;
            }
            let rank = ((p * waits.len() as f64).ceil() as usize).clamp(1, waits.len());
            waits[rank - 1] as f64 / 1000.0
        };
        let wait_s = WaitStats {
            mean: if n == 0 {
                0.0
            } else {
                waits.iter().map(|&w| w as f64).sum::<f64>() / n as f64 / 1000.0
            },
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            max: waits.last().map_or(0.0, |&w| w as f64 / 1000.0),
        };
        let instance_seconds = self.instance_ms as f64 / 1000.0;
        let oracle_instance_seconds = oracle_ms as f64 / 1000.0;
        let report = Report {
            policy: config.spec.scaling.policy,
            tasks: n as u64,
            skipped: self.trace.skipped,
            bad_lines: self.trace.bad_lines,
            unfinished: n as u64 - self.completed,
            abandoned: self.abandoned,
            work_seconds: self.trace.work_seconds(),
            instance_seconds,
            cost: self.cost,
            oracle_instance_seconds,
            ratio_to_oracle: if oracle_ms > 0 {
                instance_seconds / oracle_instance_seconds
            } else {
                0.0
            },
            wait_s,
            utilization: if self.instance_slot_ms > 0 {
                self.busy_slot_ms as f64 / self.instance_slot_ms as f64
            } else {
                0.0
            },
            launches: self.launches,
            launch_failures: self.launch_failures,
            terminations: self.terminations,
            interruptions: self.interruptions,
            ticks: self.ticks,
            forecast_accuracy: self.scoring.tracker.report(),
            sim_seconds: tasks.first().map_or(0.0, |t| {
                (self.last_progress_ms - t.submit_ms) as f64 / 1000.0
            }),
            wall_seconds: 0.0,
        };
        Outcome {
            report,
            series: self.series,
        }
    }
}

/// The cloud model's unavailable TTL (seconds, with up to millisecond precision) as
/// the whole seconds [`PoolController::with_unavailable_ttl_s`] takes: the millisecond
/// value rounded up to a second. Failures happen and health is checked only on ticks,
/// which sit on a whole-second grid, so an offering is skipped at exactly the same
/// ticks as with the millisecond deadline (`t + ms > t'` iff `t + ceil(ms / 1000) s >
/// t'` when `t' - t` is whole seconds).
fn whole_seconds_ttl(ttl_s: f64) -> i64 {
    let ms = (ttl_s * 1000.0).round() as i64;
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

/// The key the planner knows the offering of a launch of `lc` in `zone` by (see
/// [`capstan_core::Offering::key`]): the launch config id unless the launch names a
/// zone the launch config leaves open.
fn health_key(planner: &Planner, lc: &LaunchConfig, zone: Option<&str>) -> String {
    planner
        .offerings()
        .iter()
        .find(|o| o.launch_config_id == lc.id && o.zone.as_deref() == zone)
        .map_or_else(|| lc.id.clone(), |o| o.key(lc.zone.as_deref()))
}

/// Index in `spec.launch_configs` of the offering the planner tries first.
fn preferred_offering(planner: &Planner, spec: &PoolSpec) -> usize {
    planner
        .offerings()
        .first()
        .and_then(|o| {
            spec.launch_configs
                .iter()
                .position(|lc| lc.id == o.launch_config_id)
        })
        .unwrap_or(0)
}

/// An empty string, reusing the buffer of a gone worker's when there is one.
fn spare(pool: &mut Vec<String>) -> String {
    pool.pop().unwrap_or_default()
}

/// `text` in `s` (cleared first).
fn copied(mut s: String, text: &str) -> String {
    s.clear();
    s.push_str(text);
    s
}

/// `prefix` followed by `n` in decimal: `format!("{prefix}{n}")` without the
/// formatting machinery (ids and tokens of every launched instance).
fn numbered(mut s: String, prefix: &str, n: u64) -> String {
    s.clear();
    s.push_str(prefix);
    push_decimal(&mut s, n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::{BootTime, FailureWindow};
    use crate::trace::Task;

    fn trace(tasks: &[(i64, i64)]) -> Trace {
        Trace::from_tasks(
            Timestamp::from_unix_secs(1_800_000_000),
            tasks
                .iter()
                .map(|&(s, r)| Task {
                    submit_ms: s * 1000,
                    run_ms: r * 1000,
                })
                .collect(),
        )
    }

    fn run(trace: &Trace, config: &SimConfig) -> Report {
        simulate(trace, config, &mut |_| {}).unwrap().report
    }

    #[test]
    fn one_task_waits_one_boot_and_matches_the_oracle() {
        // Submitted at 0 (on the tick grid): the tick at 0 sees it pending and launches;
        // the boot takes 120 s, the task runs 100 s, the run ends at 220 s.
        // Instance time 220 s = oracle (100 s of work + one 120 s boot).
        let t = trace(&[(0, 100)]);
        let r = run(&t, &SimConfig::default_setting(ScalingPolicy::Reactive, 1));
        assert_eq!(r.tasks, 1);
        assert_eq!(r.wait_s.max, 120.0);
        assert_eq!(r.instance_seconds, 220.0);
        assert_eq!(r.oracle_instance_seconds, 220.0);
        assert_eq!(r.ratio_to_oracle, 1.0);
        assert_eq!(r.cost, 220.0 / 3600.0);
        assert_eq!((r.launches, r.terminations, r.interruptions), (1, 0, 0));
        assert_eq!(r.sim_seconds, 220.0);
        assert!((r.utilization - 100.0 / 220.0).abs() < 1e-12);
    }

    #[test]
    fn a_task_arriving_between_ticks_waits_for_the_next_tick_then_the_boot() {
        // Submitted at 10 s: the next tick is at 30 s, ready at 150 s: wait 140 s.
        let t = trace(&[(10, 50)]);
        let r = run(&t, &SimConfig::default_setting(ScalingPolicy::Reactive, 1));
        assert_eq!(r.wait_s.max, 140.0);
        assert_eq!(r.instance_seconds, 170.0);
    }

    #[test]
    fn billing_minimum_applies_per_instance() {
        let t = trace(&[(0, 100)]);
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 1);
        config.cloud.defaults.billing_minimum_s = 3600.0;
        let r = run(&t, &config);
        assert_eq!(r.instance_seconds, 3600.0);
    }

    #[test]
    fn spot_interruptions_requeue_tasks_and_everything_still_finishes() {
        let t = crate::workload::WorkloadSpec {
            days: 2,
            ..crate::workload::WorkloadSpec::diurnal(5)
        }
        .generate()
        .unwrap();
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 9);
        config.spec.launch_configs[0].market = Market::Spot;
        config.cloud.defaults.interruptions_per_hour = 0.5;
        config.cloud.defaults.boot = BootTime::Uniform {
            min_s: 60.0,
            max_s: 180.0,
        };
        let r = run(&t, &config);
        assert!(r.interruptions > 10, "{r:?}");
        assert_eq!(r.unfinished, 0);
        // Lost work is billed but not counted as the tasks' work.
        assert!(r.instance_seconds > r.work_seconds);
    }

    #[test]
    fn a_task_that_cannot_outlive_the_interruptions_is_given_up_and_the_run_ends() {
        // One interruption an hour: a 200-hour task finishes an attempt once in e^200,
        // an hour-long one in e. The long one is given up after MAX_ATTEMPTS attempts
        // (each cut short by an interruption), the others all finish, and the run ends.
        let t = trace(&[(0, 3600), (60, 200 * 3600), (120, 3600), (7200, 600)]);
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 4);
        config.spec.launch_configs[0].market = Market::Spot;
        config.cloud.defaults.interruptions_per_hour = 1.0;
        let r = run(&t, &config);
        assert_eq!((r.unfinished, r.abandoned), (1, 1), "{r:?}");
        assert!(r.interruptions >= u64::from(MAX_ATTEMPTS), "{r:?}");
        // About MAX_ATTEMPTS hours of attempts (each an exponential hour, plus a boot
        // and a tick to the next), not the 200 hours the task would need uninterrupted,
        // let alone e^200 attempts.
        let hours = r.sim_seconds / 3600.0;
        assert!((50.0..200.0).contains(&hours), "{hours} h simulated");
        let why = crate::report::unfinished_why(&r);
        assert_eq!(why, "1 given up after 100 interrupted attempts");
        // Alone, with boots of a second (an interruption almost never lands on a
        // booting instance), the task is given up at its 100th interruption exactly.
        config.cloud.defaults.boot = BootTime::Constant(1.0);
        let r = run(&trace(&[(0, 200 * 3600)]), &config);
        assert_eq!((r.abandoned, r.interruptions), (1, u64::from(MAX_ATTEMPTS)));
    }

    /// A spot pool of 1-slot instances running hour-long tasks, one every 10 minutes.
    fn spot_hours(policy: ScalingPolicy, idle_timeout_s: u64) -> (Trace, SimConfig) {
        let tasks: Vec<(i64, i64)> = (0..600).map(|i| (i * 600, 3600)).collect();
        let mut config = SimConfig::default_setting(policy, 3);
        config.spec.launch_configs[0].market = Market::Spot;
        config.spec.scaling.idle_timeout_s = Some(idle_timeout_s);
        config.cloud.defaults.interruptions_per_hour = 0.5;
        (trace(&tasks), config)
    }

    #[test]
    fn a_task_attempt_meets_the_same_interruption_whatever_the_policy_launched() {
        // Idle timeouts of 1 minute and 2 hours launch different fleets (different
        // instances, launch counts and bills), but each task's attempts draw their
        // interruptions from the task, so the work lost to interruptions (slot time
        // busy beyond the tasks' own run time) is the same to the millisecond.
        let lost = |idle_timeout_s| {
            let (t, config) = spot_hours(ScalingPolicy::Reactive, idle_timeout_s);
            let r = run(&t, &config);
            assert_eq!(r.unfinished, 0);
            (
                r.utilization * r.instance_seconds - r.work_seconds,
                r.launches,
            )
        };
        let (short, long) = (lost(60), lost(7200));
        assert_ne!(short.1, long.1, "the fleets differ");
        assert!(short.0 > 3600.0, "some work is lost: {short:?}");
        assert!((short.0 - long.0).abs() < 1e-3, "{short:?} vs {long:?}");
    }

    #[test]
    fn redrawing_at_task_starts_keeps_the_interruption_rate() {
        // Exponential time to interruption forgets its past, so drawing it anew at each
        // task start must leave interruptions per instance-hour at the configured rate
        // (0.5): about 390 instance-hours here, so ±15 % is over 4 standard deviations.
        for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
            let (t, config) = spot_hours(policy, 600);
            let r = run(&t, &config);
            let rate = r.interruptions as f64 / (r.instance_seconds / 3600.0);
            assert!(
                (rate - 0.5).abs() < 0.075,
                "{policy:?}: {rate} per hour, {r:?}"
            );
        }
    }

    #[test]
    fn failure_windows_block_launches_and_mark_the_offering_unavailable() {
        // Every launch in the first 1000 s fails; the offering is skipped for 300 s
        // after each failure, so the task starts after the window plus a boot.
        let t = trace(&[(0, 100)]);
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 1);
        config.cloud.defaults.failure_windows = vec![FailureWindow {
            start_s: 0.0,
            end_s: 1000.0,
        }];
        let r = run(&t, &config);
        // Failures at 0, 300 (ttl) and 600, 900; launch at 1200 succeeds; ready 1320.
        assert_eq!(r.launch_failures, 4);
        assert_eq!(r.launches, 1);
        assert_eq!(r.wait_s.max, 1320.0);
    }

    #[test]
    fn long_tasks_keep_their_workers_past_the_heartbeat_timeout() {
        // Heartbeats are refreshed once per timeout, not on every tick: a worker busy
        // for ten timeouts must never look silent to the planner.
        let t = trace(&[(0, 3000), (600, 2400)]);
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 1);
        config.spec.lifecycle.heartbeat_timeout_s = 300;
        let r = run(&t, &config);
        assert_eq!((r.launches, r.terminations), (2, 0), "{r:?}");
        // Launched at 0 and 600 (the tick that sees each task), both done at 3120.
        assert_eq!(r.instance_seconds, 3120.0 + 2520.0);
    }

    #[test]
    fn the_series_follows_one_task_through_boot_wait_and_billing() {
        // Buckets of one 30 s tick (span 100 s / 1000 points, at least a tick). The tick
        // at 0 sees the task and launches; the boot ends at 120 s, where the task starts
        // after 120 s of waiting; it completes at 220 s, in bucket [210, 240).
        let t = trace(&[(0, 100)]);
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 1);
        config.series_points = 1000;
        let out = simulate(&t, &config, &mut |_| {}).unwrap();
        let s = &out.series;
        assert_eq!(s.len(), 8, "{s:?}");
        for (k, p) in s.iter().enumerate() {
            assert_eq!(p.t_s, 30.0 * k as f64);
            assert_eq!((p.demand, p.capacity), (1, 1), "bucket {k}");
            // Waiting and booting until the boot at 120 s; bucket 4 opens with both.
            let before_boot = k <= 4;
            assert_eq!(p.queue, u32::from(before_boot), "bucket {k}");
            assert_eq!(p.booting, u32::from(before_boot), "bucket {k}");
            // One instance at 1.0 per hour from 0 s: cost at the bucket's end.
            let end_s = (30.0 * (k + 1) as f64).min(220.0);
            assert!((p.cost - end_s / 3600.0).abs() < 1e-12, "bucket {k}: {p:?}");
            let (starts, wait) = if k == 4 { (1, 120.0) } else { (0, 0.0) };
            assert_eq!(
                (p.starts, p.wait_mean_s, p.wait_max_s),
                (starts, wait, wait),
                "bucket {k}"
            );
        }
        assert_eq!(s.last().unwrap().cost, out.report.cost);
    }

    #[test]
    fn collecting_a_series_leaves_the_report_unchanged_and_adds_up_to_it() {
        let t = crate::workload::WorkloadSpec {
            days: 3,
            ..crate::workload::WorkloadSpec::diurnal(3)
        }
        .generate()
        .unwrap();
        for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
            let plain = SimConfig::default_setting(policy, 2);
            let with_series = SimConfig {
                series_points: 500,
                ..plain.clone()
            };
            let a = simulate(&t, &plain, &mut |_| {}).unwrap();
            let b = simulate(&t, &with_series, &mut |_| {}).unwrap();
            let c = simulate(&t, &with_series, &mut |_| {}).unwrap();
            let strip = |mut r: Report| {
                r.wall_seconds = 0.0;
                r
            };
            assert!(a.series.is_empty());
            assert_eq!(strip(a.report), strip(b.report.clone()));
            assert_eq!(b.series, c.series, "same seed, same series");
            let (r, s) = (&b.report, &b.series);
            // One bucket per span / 500 (the span is >= 3 days, so well above a tick).
            let bucket = s[1].t_s - s[0].t_s;
            assert!(
                s.windows(2)
                    .all(|w| (w[1].t_s - w[0].t_s - bucket).abs() < 1e-6)
            );
            assert!((s.len() as f64 - r.sim_seconds / bucket).abs() <= 1.0);
            // No interruptions: every task starts once, so the starts and the
            // start-weighted mean wait add up to the report's.
            let starts: u64 = s.iter().map(|p| u64::from(p.starts)).sum();
            assert_eq!(starts, r.tasks);
            let wait_sum: f64 = s.iter().map(|p| p.wait_mean_s * f64::from(p.starts)).sum();
            assert!((wait_sum / r.tasks as f64 - r.wait_s.mean).abs() < 1e-6);
            let max = s.iter().map(|p| p.wait_max_s).fold(0.0, f64::max);
            assert_eq!(max, r.wait_s.max);
            assert!(s.windows(2).all(|w| w[0].cost <= w[1].cost));
            assert_eq!(s.last().unwrap().cost, r.cost);
            assert!(
                s.iter()
                    .all(|p| p.queue <= p.demand && p.booting <= p.capacity)
            );
        }
    }

    #[test]
    fn unavailable_ttls_round_up_to_whole_seconds() {
        for (ttl_s, whole) in [
            (300.0, 300),
            (299.5, 300),
            (30.2, 31),
            (30.0004, 30),
            (0.3, 1),
            (0.0, 0),
        ] {
            assert_eq!(whole_seconds_ttl(ttl_s), whole, "{ttl_s}");
        }
    }

    #[test]
    fn same_seed_gives_identical_reports() {
        let t = crate::workload::WorkloadSpec {
            days: 3,
            ..crate::workload::WorkloadSpec::diurnal(2)
        }
        .generate()
        .unwrap();
        for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
            let mut config = SimConfig::default_setting(policy, 4);
            config.cloud.defaults.launch_failure_probability = 0.05;
            let mut a = run(&t, &config);
            let mut b = run(&t, &config);
            a.wall_seconds = 0.0;
            b.wall_seconds = 0.0;
            assert_eq!(
                serde_json::to_string(&a).unwrap(),
                serde_json::to_string(&b).unwrap()
            );
            assert_eq!(a.unfinished, 0);
            assert!(a.launch_failures > 0);
        }
    }

    #[test]
    fn forecasts_are_scored_when_due_against_last_weeks_demand() {
        // One-day ticks, so a week is 7 ticks; the lead is one tick. Demand at tick k is
        // k; the forecast made at tick k says k + 1 (exact) with an upper quantile of
        // k + 2. Scoring starts at tick 8, when a week-old value exists: the forecast
        // due then (made at tick 7: mean 8, upper 9) has error 0, seasonal naive (tick
        // 1's demand, 1) has error 7, the upper quantile is 1 over: pinball
        // (1 - 0.9) * 1 = 0.1. Ticks 8 and 9 give 2 points.
        let mut s = ForecastScoring::new(86_400_000, 0.9);
        for k in 1..=9u32 {
            s.record(
                u64::from(k),
                k,
                86_400.0,
                f64::from(k + 1),
                f64::from(k + 2),
            );
        }
        let r = s.tracker.report().unwrap();
        assert_eq!(r.points, 2);
        assert_eq!(r.mae, 0.0);
        assert_eq!(r.mase, Some(0.0));
        assert!((r.pinball - 0.1).abs() < 1e-12, "{r:?}");
        assert_eq!(r.coverage, 1.0);
    }

    #[test]
    fn bad_settings_are_errors() {
        let t = trace(&[(0, 1)]);
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 1);
        config.tick_s = 0;
        assert!(matches!(
            simulate(&t, &config, &mut |_| {}),
            Err(SimError::ZeroTick)
        ));
        let mut config = SimConfig::default_setting(ScalingPolicy::Reactive, 1);
        config
            .cloud
            .overrides
            .insert("nope".into(), Default::default());
        let err = simulate(&t, &config, &mut |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cloud model: launch_configs.nope: no launch config with this id in pool sim"
        );
    }

    #[test]
    fn numbered_writes_what_format_writes() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(numbered(String::new(), "w-", n), format!("w-{n}"));
            assert_eq!(numbered("old text".into(), "", n), n.to_string());
        }
        assert_eq!(
            numbered("w-12345678".into(), "sim-1700000000000-0-", 7),
            "sim-1700000000000-0-7"
        );
        assert_eq!(copied("a longer old id".into(), "od"), "od");
    }
}
