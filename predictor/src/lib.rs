//! Demand forecasting and capacity sizing for one pool.
//!
//! Queue history goes in, a [`Forecast`] comes out: the slots the pool should have at
//! `now + lead` (lead = launch-to-ready time) and the reactive backlog target. The
//! planner (`reconciler::plan`) takes the larger of the two.
//!
//! A [`Predictor`] is incremental and owned per pool: feed it every [`QueueSample`]
//! with [`Predictor::observe`] and finished tasks' run times with
//! [`Predictor::observe_run_time`], then ask [`Predictor::forecast`] each tick. All
//! three are O(1) amortised and allocate nothing in steady state, because the
//! simulator calls them millions of times per replay.
//!
//! Modules:
//!
//! - [`reactive`]: the classic estimator (pending and running against existing slots).
//! - [`seasonal`]: arrival-rate forecasting with daily and weekly seasonality
//!   (double-seasonal Holt-Winters, seasonal naive while history is short).
//! - [`clusters`]: bursts as their own model (compound arrivals: a Poisson background
//!   plus clusters whose rate and sizes are the pool's own).
//! - [`runtime`]: the run-time distribution, which says how many running tasks and
//!   new arrivals still hold a slot `lead` seconds from now.
//! - [`sizing`]: Poisson / negative-binomial quantiles at the service level.
//! - [`waits`]: which tasks waited longer than the pool's `target_wait_s`, read from
//!   the queue samples.
//! - [`accuracy`]: MASE against seasonal naive, pinball loss, interval coverage.
//!
//! # The `forecast` policy
//!
//! With `p` pending and `r` running tasks at the latest sample, `tick` the sampling
//! interval and `L` the lead:
//!
//! ```text
//! expected busy(now+L) = p + r · S_run(L) + A(now, now+L) · S_arr(L)
//! target               = ceil(p + r + spare)
//! spare                = Q_level(arrivals in (now, now + L + tick])
//! ```
//!
//! Launches decided now are ready at `now + L`; until then arrivals take the spare
//! slots that exist, and whatever they take is replaced by the launch decided at the
//! next tick, ready one tick and one lead later. So the spare must carry the arrivals
//! of `L + tick`. Their distribution is compound ([`clusters`]): a Poisson background
//! whose mean is the seasonal forecast less the clusters' expected share, new clusters
//! at the pool's cluster rate with its own cluster sizes, and the rest of a cluster
//! that is arriving now. `Q_level` is its quantile on the configured [`sizing::Basis`]
//! (by default the share of *tasks* covered). `S_run` and `S_arr` come from the
//! run-time distribution and give the expected busy slots the forecast reports. The
//! target does not credit completions of running tasks against the spare: a slot frees
//! at a random time in the window while bursts come at its start.
//!
//! The level closes the loop on what matters, the tasks' waits: [`waits`] reads from
//! the queue samples which tasks were still pending `target_wait_s` after they
//! arrived, and the logit of `level` moves by `rate × (late − (1 − service_level) ×
//! scored)` (a stochastic-approximation quantile tracker), within
//! [`LEVEL_BAND`] of the operator's level. So about a fraction `service_level` of
//! tasks start within `target_wait_s` where the model is wrong by less than the band,
//! and a lower service level always means a lower level: the knob keeps working down
//! to 0, where the spare is zero and the policy is the reactive one. The rate makes
//! a week of tasks late at twice the allowed share move the odds of the level by `e`
//! ([`Predictor::feedback_rate`]).
//!
//! The planner launches toward the larger of this target and the reactive backlog
//! target, and scales in only through idle timeouts, never below this target.
//!
//! For the `reactive` policy the target is what the backlog needs now, running plus
//! pending × ratio, and launches follow the reactive estimator.

pub mod accuracy;
pub mod clusters;
pub mod held;
pub mod reactive;
pub mod runtime;
pub mod seasonal;
pub mod sizing;
pub mod waits;

use capstan_core::{
    Forecast, ForecastPoint, PoolSpec, Quantile, QueueSample, ScalingPolicy, Timestamp,
};

pub use accuracy::{AccuracyReport, AccuracyTracker};
pub use clusters::Clusters;
pub use held::held_slots;
pub use reactive::reactive_target;
pub use runtime::{RunTimeDistribution, Survival};
pub use seasonal::{SeasonalConfig, SeasonalConfigError, SeasonalRate};
pub use sizing::{Basis, CountQuantiles};
pub use waits::WaitTracker;

/// Settings of a [`Predictor`]. The defaults are the ones measured in the README.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictorConfig {
    /// The arrival-rate model.
    pub seasonal: SeasonalConfig,
    /// What the service level is a probability of.
    pub basis: Basis,
    /// Finished tasks after which an old run time weighs half (0 = never fade).
    pub run_time_half_life: u32,
    /// Whether the wait feedback moves the level (off: the spare is sized at the
    /// service level itself).
    pub feedback: bool,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        Self {
            seasonal: SeasonalConfig::default(),
            basis: Basis::Windows,
            run_time_half_life: 20_000,
            feedback: true,
        }
    }
}

/// Why a predictor configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictorError {
    /// The seasonal model's settings are invalid.
    #[error("seasonal.{0}")]
    Seasonal(#[from] SeasonalConfigError),
}

/// How far, in logit units, the wait feedback may move the level from the operator's
/// service level: a factor e² ≈ 7.4 on the odds of a late task either way. Within it
/// the feedback corrects a model that is wrong by that much; beyond it the operator's
/// number stands, so that every service level keeps its own range of spares and the
/// knob orders them.
pub const LEVEL_BAND: f64 = 2.0;
/// A day, in seconds.
const DAY_S: f64 = 86_400.0;
/// A week, in seconds: the memory of the task count behind the feedback rate.
const WEEK_S: f64 = 7.0 * 86_400.0;
/// Tasks a day assumed at least (the feedback rate's floor on a quiet pool: its
/// level moves by at most 1/15 per late task at the default service level).
const MIN_TASKS_PER_DAY: f64 = 300.0;
/// Running task-seconds before the interruption rate is read: an hour of one running
/// task, so one interruption early on does not set a rate of one a second.
const MIN_REQUEUE_EXPOSURE_S: f64 = 3600.0;
/// The level is quantised to steps of this many logit units so the quantile memo
/// keeps hitting while it drifts.
const LEVEL_STEP: f64 = 0.05;

/// Incremental demand model of one pool.
#[derive(Debug, Clone)]
pub struct Predictor {
    cfg: PredictorConfig,
    /// The latest sample: its `pending` and `running` levels drive the targets.
    last: Option<QueueSample>,
    /// Seconds between the last two samples: the planner's tick.
    tick_s: f64,
    seasonal: SeasonalRate,
    clusters: Clusters,
    run_times: RunTimeDistribution,
    waits: WaitTracker,
    /// The operator's service level and acceptable wait.
    level: f64,
    target_wait_ms: i64,
    /// Logit of the quantile level in use, within `LEVEL_BAND` of `level`'s.
    level_logit: f64,
    /// Arrivals and time faded over a week (the feedback rate's task count).
    week_arrivals: f64,
    week_time_s: f64,
    week_decay: (f64, f64),
    /// Tasks sent back to the queue by an interruption, and the running tasks'
    /// seconds, faded over a week: their ratio is the rate at which a running task is
    /// interrupted.
    week_requeued: f64,
    week_running_s: f64,
    /// The first sample's time: clusters are told from the background once a day of
    /// history says what the background is.
    first_at: Option<Timestamp>,
    /// The last `model_level()` and `level^f` computed, keyed by their inputs' bits:
    /// both inputs change rarely (with the feedback's steps and every 64 finished
    /// tasks), so the forecast skips an `exp` and a `pow` on almost every tick.
    level_memo: Option<(u64, f64)>,
    /// `logit(level)`: the centre of the feedback's band.
    level_centre: f64,
    pow_memo: Option<(u64, u64, f64)>,
    /// The last [`Predictor::held_slots`], keyed by the bits of the rate, the boot time
    /// and the regret, and by the run-time observations in steps of 64.
    held_memo: Option<((u64, u64, u64, u64), u32)>,
}

impl Default for Predictor {
    fn default() -> Self {
        Self::new()
    }
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    libm::log(p / (1.0 - p))
}

fn logistic(x: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-x))
}

impl Predictor {
    /// A predictor with the default settings that has seen nothing, for the default
    /// service level (0.95 within 60 s) until [`Predictor::set_objective`] says
    /// otherwise.
    pub fn new() -> Self {
        match Self::with_config(PredictorConfig::default()) {
            Ok(p) => p,
            // The defaults are valid; a test below holds them to that.
            Err(e) => unreachable!("default predictor config is invalid: {e}"),
        }
    }

    /// A predictor with these settings, or the first one that is invalid.
    pub fn with_config(cfg: PredictorConfig) -> Result<Self, PredictorError> {
        Ok(Self {
            cfg,
            last: None,
            tick_s: 0.0,
            seasonal: SeasonalRate::new(cfg.seasonal)?,
            clusters: Clusters::new(),
            run_times: RunTimeDistribution::new(cfg.run_time_half_life),
            waits: WaitTracker::new(),
            level: 0.95,
            target_wait_ms: 60_000,
            level_logit: logit(0.95),
            level_centre: logit(0.95),
            week_arrivals: 0.0,
            week_time_s: 0.0,
            week_requeued: 0.0,
            week_running_s: 0.0,
            week_decay: (0.0, 1.0),
            first_at: None,
            level_memo: None,
            pow_memo: None,
            held_memo: None,
        })
    }

    /// A predictor for `spec`'s service level and acceptable wait.
    pub fn for_spec(spec: &PoolSpec) -> Self {
        let mut p = Self::new();
        p.set_objective(spec);
        p
    }

    /// Takes the service level and acceptable wait of `spec` (called when the spec
    /// changes). A changed service level restarts the level at it; history stays.
    pub fn set_objective(&mut self, spec: &PoolSpec) {
        let level = spec.scaling.service_level.clamp(0.0, 1.0 - 1e-9);
        if level != self.level {
            self.level = level;
            self.level_logit = logit(level);
            self.level_centre = self.level_logit;
        }
        self.target_wait_ms = secs_to_ms(spec.scaling.target_wait_s);
    }

    /// The settings.
    pub fn config(&self) -> &PredictorConfig {
        &self.cfg
    }

    /// Feeds one queue sample. Samples must come in time order; a sample at or before
    /// the previous one's time updates the levels and counts only.
    pub fn observe(&mut self, sample: &QueueSample) {
        let mut dt = 0.0;
        let mut expected = 0.0;
        if let Some(prev) = self.last {
            dt = sample.at.secs_since(prev.at).max(0.0);
            if dt > 0.0 {
                self.tick_s = dt;
                expected = self.seasonal.expected_arrivals_memo(prev.at, sample.at);
                if dt != self.week_decay.0 {
                    self.week_decay = (dt, libm::exp(-dt / WEEK_S));
                }
                self.week_arrivals *= self.week_decay.1;
                self.week_time_s = self.week_time_s * self.week_decay.1 + dt;
                self.week_requeued *= self.week_decay.1;
                self.week_running_s =
                    self.week_running_s * self.week_decay.1 + f64::from(prev.running) * dt;
            }
        }
        self.week_arrivals += f64::from(sample.arrivals);
        let first = *self.first_at.get_or_insert(sample.at);
        if sample.at.secs_since(first) >= DAY_S {
            self.clusters.observe(dt, sample.arrivals, expected);
        }
        self.seasonal.add(sample.at, sample.arrivals);
        self.last = Some(*sample);
        let scored = self.waits.observe(sample, self.target_wait_ms);
        if scored.tasks > 0 && self.cfg.feedback && self.level > 0.0 {
            let step = scored.late as f64 - (1.0 - self.level) * scored.tasks as f64;
            let centre = self.level_centre;
            self.level_logit = (self.level_logit + self.feedback_rate() * step)
                .clamp(centre - LEVEL_BAND, centre + LEVEL_BAND);
        }
    }

    /// Logit units the level moves per late task: `1 / ((1 − service_level) × tasks
    /// a week)`, so that a week in which twice the allowed share of tasks is late moves
    /// the odds of the level by `e`, however busy the pool. Tasks a week are counted
    /// faded over a week, at least [`MIN_TASKS_PER_WEEK`].
    pub fn feedback_rate(&self) -> f64 {
        let per_week = if self.week_time_s > 0.0 {
            self.week_arrivals / self.week_time_s.max(3600.0) * WEEK_S
        } else {
            0.0
        };
        1.0 / ((1.0 - self.level).max(1e-3) * (per_week / 7.0).max(MIN_TASKS_PER_DAY))
    }

    /// Tasks that an interruption took from their instance and sent back to the queue.
    pub fn observe_requeued(&mut self, tasks: u32) {
        self.week_requeued += f64::from(tasks);
    }

    /// Interruptions per running task per second, over the last week (faded); 0 before
    /// an hour of running tasks is seen.
    pub fn requeue_rate_per_s(&self) -> f64 {
        if self.week_requeued > 0.0 && self.week_running_s >= MIN_REQUEUE_EXPOSURE_S {
            self.week_requeued / self.week_running_s
        } else {
            0.0
        }
    }

    /// Feeds the run time of one finished task, in seconds.
    pub fn observe_run_time(&mut self, run_s: f64) {
        self.run_times.observe(run_s);
    }

    /// Fraction of tasks that waited longer than the pool's `target_wait_s`, as read
    /// from the queue samples; `None` before any task was scored.
    pub fn late_fraction(&self) -> Option<f64> {
        self.waits.late_fraction()
    }

    /// The quantile level the spare is sized at now: the service level as the wait
    /// feedback has moved it.
    pub fn model_level(&self) -> f64 {
        if self.level <= 0.0 {
            0.0
        } else {
            logistic((self.level_logit / LEVEL_STEP).round() * LEVEL_STEP)
        }
    }

    /// [`Predictor::model_level`], remembered for the last `level_logit`.
    fn model_level_memo(&mut self) -> f64 {
        if self.level <= 0.0 {
            return 0.0;
        }
        let key = self.level_logit.to_bits();
        match self.level_memo {
            Some((k, v)) if k == key => v,
            _ => {
                let v = self.model_level();
                self.level_memo = Some((key, v));
                v
            }
        }
    }

    /// The arrival-rate model.
    pub fn seasonal(&self) -> &SeasonalRate {
        &self.seasonal
    }

    /// The cluster model.
    pub fn clusters(&self) -> &Clusters {
        &self.clusters
    }

    /// The run-time distribution.
    pub fn run_times(&self) -> &RunTimeDistribution {
        &self.run_times
    }

    /// The run-time distribution's look-ahead fractions for `lead_s` seconds (cached
    /// as the forecast caches them).
    pub fn survival(&mut self, lead_s: f64) -> Survival {
        self.run_times.survival(lead_s)
    }

    /// The slots worth holding idle at `now` for the tasks shorter than a boot of
    /// `boot_s` seconds, when a regretted retirement costs `regret_s` seconds of machine
    /// time ([`held`]): from the arrival rate expected now and those tasks' share and
    /// mean run time. Remembered until an input changes (the run times are read again
    /// every 64 finished tasks).
    pub fn held_slots(&mut self, now: Timestamp, boot_s: f64, regret_s: f64) -> u32 {
        let rate = self.seasonal.rate_per_s_memo(now);
        let key = (
            rate.to_bits(),
            boot_s.to_bits(),
            regret_s.to_bits(),
            self.run_times.observations() >> 6,
        );
        match self.held_memo {
            Some((k, v)) if k == key => v,
            _ => {
                let (share, mean) = self.run_times.shorter_than(boot_s);
                let v = held_slots(rate * share, mean, regret_s);
                self.held_memo = Some((key, v));
                v
            }
        }
    }

    /// Expected arrivals in `(now, now + window_s]`.
    fn window_mean(&self, now: Timestamp, window_s: f64) -> f64 {
        self.seasonal
            .expected_arrivals(now, window_end(now, window_s))
    }

    /// Expected arrival rate at `at`, tasks per second.
    pub fn expected_arrival_rate(&self, at: Timestamp) -> f64 {
        self.seasonal.rate_per_s(at)
    }

    /// The forecast for `spec` at `now`, looking `lead_s` seconds ahead, given the
    /// slots the pool holds now (`existing_slots`: requested, booting and ready).
    pub fn forecast(
        &mut self,
        spec: &PoolSpec,
        now: Timestamp,
        lead_s: f64,
        existing_slots: u32,
    ) -> Forecast {
        let (pending, running) = self.last.map_or((0, 0), |s| (s.pending, s.running));
        let lead_s = if lead_s.is_finite() {
            lead_s.max(0.0)
        } else {
            0.0
        };
        let backlog = reactive_target(
            pending,
            running,
            existing_slots,
            spec.scaling.scaling_ratio,
            spec.min_capacity,
            spec.max_capacity,
        );
        // What the backlog needs, whatever the pool holds: the reactive policy's need.
        let ratio = if spec.scaling.scaling_ratio.is_finite() && spec.scaling.scaling_ratio > 0.0 {
            spec.scaling.scaling_ratio
        } else {
            1.0
        };
        let needed = f64::from(running) + ceil(f64::from(pending) * ratio);
        let needed = clamp_slots(needed, spec.min_capacity, spec.max_capacity);
        let mut forecast = Forecast {
            made_at: now,
            policy: spec.scaling.policy,
            lead_s,
            target_slots: needed,
            backlog_slots: backlog,
            expected_busy_slots: f64::from(needed),
            points: Vec::new(),
        };
        if spec.scaling.policy == ScalingPolicy::Reactive {
            return forecast;
        }
        self.set_objective(spec);
        let surv = self.run_times.survival(lead_s);
        let window_s = lead_s + self.tick_s;
        // Both windows start now: one walk over their buckets.
        let (lead_mean, window_mean) = self.seasonal.expected_arrivals_pair(
            now,
            window_end(now, lead_s),
            window_end(now, window_s),
        );
        forecast.expected_busy_slots = f64::from(pending)
            + f64::from(running) * surv.of_running
            + lead_mean * surv.of_arrivals;
        // Slots needed from the moment a launch decided now is ready: the pending tasks,
        // the running ones still running then (the busiest moment for them: after it
        // they only finish), and the spare below. Counting every running task instead
        // holds a slot for each task that will have finished before any launch lands:
        // in a large pool, where as many finish as arrive in a boot time, that was a
        // fifth more machines for nothing (1.21× the oracle against 1.03× on the
        // generated `large` workload at level 0.3).
        let carried = f64::from(pending) + f64::from(running) * surv.of_running;
        let level = if self.cfg.feedback {
            self.model_level_memo()
        } else {
            self.level
        };
        // The spare holds the most slots the window's arrivals hold at once, not
        // every arrival: a 10 s task arriving early in a 150 s window has freed its
        // slot before the last ones come. Those slots are the arrivals of any stretch
        // as long as a task holds a slot within the window (`f = of_arrivals` of the
        // window: their mean is the arrivals still running at its end), and the window
        // holds about `1 / f` such stretches, so the spare is their count's quantile at
        // `level^f`: the level that all `1 / f` stretches fit with probability `level`.
        // Long tasks (f = 1) leave both as they are. No standing spare for clusters
        // that have not begun (see the module docs): the background is all the
        // arrivals expected, and a cluster that has begun brings the rest of it,
        // thinned by `f` too (it arrives over a stretch like the rest: on the
        // generated `short-tasks` workload, unthinned, each burst of 10 s tasks
        // launched its whole size, ready after the burst was done).
        let f = self
            .run_times
            .survival(window_s)
            .of_arrivals
            .clamp(1e-6, 1.0);
        // Running tasks that an interruption sends back to the queue within the window
        // need a slot again, and the slot they held is gone with its instance.
        let requeued = self.requeue_rate_per_s() * window_s * f64::from(running);
        let expected = window_mean * f + requeued;
        let level = if level > 0.0 {
            let (lk, fk) = (level.to_bits(), f.to_bits());
            match self.pow_memo {
                Some((l, g, v)) if l == lk && g == fk => v,
                _ => {
                    let v = libm::pow(level, f);
                    self.pow_memo = Some((lk, fk, v));
                    v
                }
            }
        } else {
            0.0
        };
        let spare = f64::from(self.clusters.spare(expected, 0.0, f, level, self.cfg.basis));
        forecast.target_slots =
            clamp_slots(ceil(carried + spare), spec.min_capacity, spec.max_capacity);
        forecast
    }

    /// Busy-slot forecasts at `now + offset` for each offset (seconds), with the
    /// median, the 90 % quantile and the pool's service-level quantile. For people
    /// (API, dashboard): it allocates and is not meant for every tick.
    pub fn forecast_points(
        &self,
        spec: &PoolSpec,
        now: Timestamp,
        offsets_s: &[f64],
    ) -> Vec<ForecastPoint> {
        let (pending, running) = self.last.map_or((0, 0), |s| (s.pending, s.running));
        let mut levels = vec![0.5, 0.9, spec.scaling.service_level.clamp(0.0, 1.0 - 1e-9)];
        levels.sort_by(f64::total_cmp);
        levels.dedup();
        offsets_s
            .iter()
            .map(|&h| {
                let h = h.max(0.0);
                let at = Timestamp::from_unix_ms(now.unix_ms() + (h * 1000.0) as i64);
                let surv = self.run_times.compute(h);
                let carried = f64::from(pending) + f64::from(running) * surv.of_running;
                let arrivals = self.window_mean(now, h) * surv.of_arrivals;
                let quantiles = levels
                    .iter()
                    .map(|&p| Quantile {
                        p,
                        slots: carried
                            + f64::from(self.clusters.exact_spare(
                                arrivals,
                                0.0,
                                self.clusters.open(),
                                surv.of_arrivals,
                                p,
                                Basis::Windows,
                            )),
                    })
                    .collect();
                ForecastPoint {
                    at,
                    mean: carried + arrivals,
                    quantiles,
                }
            })
            .collect()
    }
}

/// The end of a window of `window_s` seconds from `now` (whole milliseconds).
fn window_end(now: Timestamp, window_s: f64) -> Timestamp {
    Timestamp::from_unix_ms(now.unix_ms() + (window_s * 1000.0) as i64)
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// `x` (a whole number of slots, possibly huge) as slots within `[min, max]`.
/// `x.ceil()`, bit for bit, without the libm call for the usual `0 <= x < 2^52`
/// (the forecast takes a few ceilings every tick).
pub(crate) fn ceil(x: f64) -> f64 {
    if x.is_sign_positive() && x < 4_503_599_627_370_496.0 {
        // Truncation is the floor here, and exact.
        let t = x as u64 as f64;
        if t < x { t + 1.0 } else { t }
    } else {
        x.ceil()
    }
}

fn clamp_slots(x: f64, min: u32, max: u32) -> u32 {
    let x = if x >= f64::from(max) {
        max
    } else if x > 0.0 {
        x as u32
    } else {
        0
    };
    x.max(min).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_core::PoolId;

    fn spec(policy: ScalingPolicy) -> PoolSpec {
        let mut s = PoolSpec::from_yaml(
            "id: p\nprovider: fake\nmax_capacity: 100\nlaunch_configs:\n  - id: a\n    instance_type: t\n",
        )
        .unwrap();
        s.scaling.policy = policy;
        assert_eq!(s.id, PoolId::new("p").unwrap());
        s
    }

    fn sample(secs: i64, pending: u32, running: u32, arrivals: u32) -> QueueSample {
        QueueSample {
            at: Timestamp::from_unix_secs(secs),
            pending,
            running,
            arrivals,
            completions: 0,
        }
    }

    #[test]
    fn the_fast_ceiling_is_the_ceiling() {
        let mut xs = vec![
            0.0,
            -0.0,
            1e-300,
            0.5,
            1.0,
            1.000_000_1,
            2.5,
            1e15 + 0.5,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            1e300,
            -0.5,
            -3.2,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ];
        xs.extend((0..10_000).map(|i| f64::from(i) * 0.173_205));
        for x in xs {
            assert_eq!(ceil(x).to_bits(), x.ceil().to_bits(), "{x}");
        }
    }

    #[test]
    fn interrupted_tasks_teach_a_spare_for_the_next_in_proportion_to_the_running() {
        // Two hours of 20 running tasks and nothing arriving: no spare. Then 4 tasks
        // came back from interruptions: 4 in 20 × 2 h of task time is a rate of 1 /
        // 36,000 s, and the forecast keeps slots for the ones the window's running
        // tasks will lose — more with more of them running.
        let mut spec = spec(ScalingPolicy::Forecast);
        spec.max_capacity = 1_000;
        let fed = |requeued: u32, running: u32| {
            let mut p = Predictor::for_spec(&spec);
            for i in 0..=240 {
                p.observe(&sample(1_000_000 + i * 30, 0, 20, 0));
            }
            p.observe_requeued(requeued);
            p.observe(&sample(1_000_000 + 241 * 30, 0, running, 0));
            let at = Timestamp::from_unix_secs(1_000_000 + 241 * 30);
            (
                p.requeue_rate_per_s(),
                p.forecast(&spec, at, 120.0, running).target_slots,
            )
        };
        let (none, calm) = fed(0, 20);
        assert_eq!(none, 0.0);
        let (rate, spared) = fed(4, 20);
        // (faded over a week: within a percent of the plain ratio)
        assert!(
            (rate / (4.0 / (20.0 * 7_230.0)) - 1.0).abs() < 0.01,
            "{rate}"
        );
        assert!(
            spared > calm,
            "{spared} slots against {calm} without interruptions"
        );
        let (_, more) = fed(4, 400);
        let (_, calm_more) = fed(0, 400);
        assert!(
            more - calm_more > spared - calm,
            "{more} - {calm_more} vs {spared} - {calm}"
        );
        // Less than an hour of running tasks says nothing yet.
        let mut p = Predictor::for_spec(&spec);
        p.observe(&sample(0, 0, 1, 0));
        p.observe(&sample(600, 0, 1, 0));
        p.observe_requeued(1);
        assert_eq!(p.requeue_rate_per_s(), 0.0);
    }

    #[test]
    fn default_config_is_valid() {
        assert!(Predictor::with_config(PredictorConfig::default()).is_ok());
        let mut cfg = PredictorConfig::default();
        cfg.seasonal.bucket_s = 7;
        let err = Predictor::with_config(cfg).unwrap_err();
        assert!(err.to_string().starts_with("seasonal."), "{err}");
    }

    #[test]
    fn reactive_policy_answers_the_backlog_only() {
        let mut p = Predictor::new();
        p.observe(&sample(30, 5, 7, 12));
        let f = p.forecast(
            &spec(ScalingPolicy::Reactive),
            Timestamp::from_unix_secs(30),
            120.0,
            10,
        );
        assert_eq!(f.backlog_slots, 12);
        // Needed now: 7 running + 5 pending; the 3 idle slots beyond may time out.
        assert_eq!(f.target_slots, 12);
        p.observe(&sample(60, 0, 7, 0));
        let f = p.forecast(
            &spec(ScalingPolicy::Reactive),
            Timestamp::from_unix_secs(60),
            120.0,
            12,
        );
        assert_eq!((f.target_slots, f.backlog_slots), (7, 12));
        assert_eq!(f.policy, ScalingPolicy::Reactive);
    }

    /// Fifteen days of one arrival per 30 s tick with 10 tasks running and none
    /// pending, run times of 300 s; `late` makes every sample's arrival wait past the
    /// target. (Two weeks of tasks none of which is late move the level's logit by 2,
    /// to the bottom of its band: see `feedback_rate`.)
    fn steady(spec: &PoolSpec, late: bool) -> (Predictor, Forecast) {
        let mut p = Predictor::for_spec(spec);
        let mut last = None;
        for i in 1..=(15 * 2880) {
            // A late pool keeps 3 tasks pending for good (each waits 90 s > 60 s).
            let pending = if late { 3 } else { 0 };
            p.observe(&sample(i * 30, pending, 10, 1));
            p.observe_run_time(300.0);
            last = Some(p.forecast(spec, Timestamp::from_unix_secs(i * 30), 120.0, 10));
        }
        (p, last.unwrap())
    }

    #[test]
    fn forecast_policy_keeps_spare_slots_for_steady_arrivals() {
        let spec = spec(ScalingPolicy::Forecast);
        let (p, f) = steady(&spec, false);
        // Nobody ever waited, so the feedback lowered the level to the bottom of its
        // band, and no more.
        assert_eq!(p.late_fraction(), Some(0.0));
        let floor = logistic(logit(0.95) - LEVEL_BAND);
        assert!(
            (p.model_level() - floor).abs() < 0.01,
            "{}",
            p.model_level()
        );
        // Steady single arrivals are background, not clusters.
        assert_eq!(p.clusters().rate_per_s(), 0.0);
        // The window is 120 + 30 = 150 s: Poisson(5) arrivals, sized on the tasks basis
        // at that level (windows basis, the default) by the independent Poisson code of
        // `sizing`.
        let spare = sizing::spare_slots(5.0, 1.0, p.model_level(), Basis::Windows);
        assert!(spare >= 3, "{spare}");
        // Of the 10 running tasks, 10 × (300 − 120)/300 = 6 still run when a launch
        // decided now is ready.
        assert_eq!(f.target_slots, 6 + spare, "{f:?}");
        assert_eq!(f.backlog_slots, 10, "{f:?}");
        assert_eq!(f.demand_slots(), (6 + spare).max(10), "{f:?}");
        // Expected busy at now+120: 10 × (300-120)/300 + 4 arrivals, all still running.
        assert!((f.expected_busy_slots - 10.0).abs() < 0.5, "{f:?}");

        // The same pool with tasks waiting past the target: the level rises to the top
        // of its band, and the spare with it.
        let (late, g) = steady(&spec, true);
        let ceiling = logistic(logit(0.95) + LEVEL_BAND);
        assert!(
            (late.model_level() - ceiling).abs() < 0.01,
            "{}",
            late.model_level()
        );
        let spare = sizing::spare_slots(5.0, 1.0, late.model_level(), Basis::Windows);
        assert_eq!(g.target_slots, 3 + 6 + spare, "{g:?}");
        assert!(g.target_slots > f.target_slots + 3, "{g:?} vs {f:?}");

        let points =
            p.forecast_points(&spec, Timestamp::from_unix_secs(15 * 86400), &[60.0, 600.0]);
        assert_eq!(points.len(), 2);
        // At +60 s: 8 of the 10 running tasks and 2 arrivals; at +600 s none of them
        // but the 10 arrivals of the last 300 s. The band widens with the horizon.
        assert!((points[0].mean - 10.0).abs() < 0.01, "{points:?}");
        assert!((points[1].mean - 10.0).abs() < 0.01, "{points:?}");
        assert!(
            points[1].quantiles[2].slots > points[0].quantiles[2].slots,
            "{points:?}"
        );
        assert!(
            points[0]
                .quantiles
                .windows(2)
                .all(|w| w[0].slots < w[1].slots),
            "{points:?}"
        );
    }

    #[test]
    fn a_lower_service_level_never_asks_for_more_and_zero_is_reactive() {
        let mut targets = Vec::new();
        for level in [0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99] {
            let mut spec = spec(ScalingPolicy::Forecast);
            spec.scaling.service_level = level;
            let (_, f) = steady(&spec, false);
            targets.push((level, f.target_slots, f.demand_slots()));
        }
        assert!(targets.windows(2).all(|w| w[0].1 <= w[1].1), "{targets:?}");
        assert!(targets[0].1 < targets[6].1, "{targets:?}");
        // At 0 the spare is zero: the target is the 6 running tasks still running when
        // a launch lands, and the pool is sized by the backlog alone, as reactive's
        // (10 running, none pending).
        assert_eq!((targets[0].1, targets[0].2), (6, 10), "{targets:?}");
    }

    #[test]
    fn the_objective_is_known_before_the_first_forecast() {
        // Warm-up feeds history before any forecast: the feedback must already work
        // towards the pool's own level, not a default.
        let mut spec = spec(ScalingPolicy::Forecast);
        spec.scaling.service_level = 0.5;
        let p = Predictor::for_spec(&spec);
        assert_eq!(p.model_level(), 0.5);
        let mut q = Predictor::new();
        assert_eq!(
            q.model_level(),
            logistic((logit(0.95) / LEVEL_STEP).round() * LEVEL_STEP)
        );
        q.set_objective(&spec);
        assert_eq!(q.model_level(), 0.5);
    }

    #[test]
    fn forecast_answers_a_visible_backlog() {
        let spec = spec(ScalingPolicy::Forecast);
        let mut p = Predictor::new();
        p.observe(&sample(30, 40, 0, 40));
        let f = p.forecast(&spec, Timestamp::from_unix_secs(30), 120.0, 0);
        assert_eq!(f.backlog_slots, 40);
        assert!(f.target_slots >= 40);
        assert!(f.demand_slots() >= 40);
    }
}
