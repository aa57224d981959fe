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
//! - [`recent`]: short-term clustering: recent arrivals, at three time scales, adjust
//!   the seasonal forecast through an online regression.
//! - [`runtime`]: the run-time distribution, which says how many running tasks and
//!   new arrivals still hold a slot `lead` seconds from now.
//! - [`sizing`]: Poisson / negative-binomial quantiles at the service level.
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
//! of `L + tick`. `A` is the expected arrivals: the seasonal forecast adjusted by
//! recent arrivals ([`recent`]). Their distribution is negative binomial with
//! `var = mean + κ · mean²` ([`VarianceModel::Quadratic`], κ learned from every
//! window's outcome; Poisson when κ = 0), and `Q_level` is its quantile on the
//! configured [`sizing::Basis`] (by default the share of *tasks* covered). `S_run`
//! and `S_arr` come from the run-time distribution and give the expected busy slots
//! the forecast reports. The target does not credit completions of running tasks
//! against the spare: a slot frees at a random time in the window while bursts come at
//! its start, and crediting them measured worse on the SDSC trace.
//!
//! The level closes the loop on what matters, the tasks' waits: [`waits`] reads from
//! the queue samples which tasks were still pending `target_wait_s` after they
//! arrived, and the logit of `level` moves by
//! `margin_rate × (late − (1 − service_level) × scored)` (a stochastic-approximation
//! quantile tracker, [`Controller::Level`]). So in the long run about a fraction
//! `service_level` of tasks start within `target_wait_s`, whatever the model gets
//! wrong, while the spare keeps the shape the model gives it over the day and through
//! bursts. ([`Controller::Margin`] moves an additive margin in slots instead.)
//!
//! The planner launches toward the larger of this target and the reactive backlog
//! target, and scales in only through idle timeouts, never below this target.
//!
//! For the `reactive` policy the target is what the backlog needs now, running plus
//! pending × ratio, and launches follow the reactive estimator.

pub mod accuracy;
pub mod reactive;
pub mod recent;
pub mod runtime;
pub mod seasonal;
pub mod sizing;
pub mod waits;

use capstan_core::{
    Forecast, ForecastPoint, PoolSpec, Quantile, QueueSample, ScalingPolicy, Timestamp,
};

pub use accuracy::{AccuracyReport, AccuracyTracker};
pub use reactive::reactive_target;
pub use recent::{RecentArrivals, WindowRegression};
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
    /// How window variance grows with the mean.
    pub variance: VarianceModel,
    /// What the wait feedback adjusts.
    pub controller: Controller,
    /// Learning rate of the wait feedback, per late task: slots for
    /// [`Controller::Margin`], logit units of the level for [`Controller::Level`].
    pub margin_rate: f64,
    /// Weight of each scored window in the learned variance.
    pub dispersion_rate: f64,
    /// Whether recent arrivals adjust the seasonal forecast ([`recent`]).
    pub short_term: bool,
    /// Forgetting factor of the short-term regression, per scored window.
    pub regression_forgetting: f64,
}

impl Default for PredictorConfig {
    fn default() -> Self {
        Self {
            seasonal: SeasonalConfig::default(),
            basis: Basis::Tasks,
            run_time_half_life: 20_000,
            variance: VarianceModel::Quadratic,
            controller: Controller::Level,
            margin_rate: 0.01,
            dispersion_rate: 0.000_05,
            short_term: true,
            regression_forgetting: 0.999_99,
        }
    }
}

/// How the variance of a window's arrivals depends on its mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VarianceModel {
    /// `var = φ · mean` (quasi-Poisson; negative binomial with a fixed success
    /// probability).
    Linear,
    /// `var = mean + κ · mean²` (negative binomial with a fixed shape): busier windows
    /// are burstier, as in queues fed by people and pipelines.
    Quadratic,
}

/// What the feedback from tasks' waits adjusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Controller {
    /// An additive margin, in slots, on top of the quantile at the service level.
    Margin,
    /// The quantile level itself: the spare keeps the shape the model gives it over
    /// the day and through bursts, and only its level moves.
    Level,
}

/// Why a predictor configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PredictorError {
    /// The seasonal model's settings are invalid.
    #[error("seasonal.{0}")]
    Seasonal(#[from] SeasonalConfigError),
    /// A learning rate is outside [0, 1].
    #[error("{name}: must be in [0, 1], got {value}")]
    Rate {
        /// Which rate.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

/// Windows whose outcome is awaited at most (older ones are dropped unscored).
const MAX_OPEN_WINDOWS: usize = 64;
/// Weight of each forecast in the typical quantile (about a day of 30 s ticks).
const TYPICAL_Q_RATE: f64 = 1.0 / 2880.0;
/// A window's arrivals count at most this many times `1 + mean` above their mean in
/// the learned overdispersion κ (measured on the `diurnal` workload and the SDSC trace:
/// 4 to 16 trade diurnal instance-hours against p95 wait; 8 keeps both p95s).
const EXCESS_CLIP: f64 = 8.0;
/// Realised windows before the learned window dispersion replaces the bucket one.
const MIN_WINDOWS_FOR_DISPERSION: u64 = 200;

/// A spare-slot decision waiting for its window to pass, to be scored.
#[derive(Debug, Clone, Copy, Default)]
struct OpenWindow {
    due_ms: i64,
    features: [f64; recent::FEATURES],
    arrivals_before: u64,
    mean: f64,
    spare: f64,
}

/// Incremental demand model of one pool.
#[derive(Debug, Clone)]
pub struct Predictor {
    cfg: PredictorConfig,
    /// The latest sample: its `pending` and `running` levels drive the targets.
    last: Option<QueueSample>,
    /// Seconds between the last two samples: the planner's tick.
    tick_s: f64,
    /// Arrivals ever observed.
    arrivals: u64,
    seasonal: SeasonalRate,
    recent: RecentArrivals,
    regression: WindowRegression,
    run_times: RunTimeDistribution,
    quantiles: CountQuantiles,
    margin: f64,
    /// Logit of the quantile level in use ([`Controller::Level`]); set at the first
    /// forecast from the pool's service level.
    level_logit: Option<f64>,
    waits: WaitTracker,
    /// Service level and acceptable wait of the last forecast, for scoring waits.
    level: f64,
    target_wait_ms: i64,
    /// Slowly moving average of the model quantile, which scales the margin's bounds.
    typical_q: f64,
    window_dispersion: f64,
    /// Averages behind the quadratic variance model: (c − μ)² − μ and μ².
    excess_variance: f64,
    mean_squared: f64,
    windows_scored: u64,
    tasks_scored: f64,
    tasks_uncovered: f64,
    windows_covered: u64,
    open: [OpenWindow; MAX_OPEN_WINDOWS],
    open_head: usize,
    open_len: usize,
    last_window_ms: Option<i64>,
}

impl Default for Predictor {
    fn default() -> Self {
        Self::new()
    }
}

impl Predictor {
    /// A predictor with the default settings that has seen nothing.
    pub fn new() -> Self {
        match Self::with_config(PredictorConfig::default()) {
            Ok(p) => p,
            // The defaults are valid; a test below holds them to that.
            Err(e) => unreachable!("default predictor config is invalid: {e}"),
        }
    }

    /// A predictor with these settings, or the first one that is invalid.
    pub fn with_config(cfg: PredictorConfig) -> Result<Self, PredictorError> {
        for (name, value) in [
            ("margin_rate", cfg.margin_rate),
            ("dispersion_rate", cfg.dispersion_rate),
            ("regression_forgetting", cfg.regression_forgetting),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(PredictorError::Rate { name, value });
            }
        }
        Ok(Self {
            cfg,
            last: None,
            tick_s: 0.0,
            arrivals: 0,
            seasonal: SeasonalRate::new(cfg.seasonal)?,
            recent: RecentArrivals::new(),
            regression: WindowRegression::new(cfg.regression_forgetting),
            run_times: RunTimeDistribution::new(cfg.run_time_half_life),
            quantiles: CountQuantiles::new(),
            margin: 0.0,
            level_logit: None,
            waits: WaitTracker::new(),
            level: 0.95,
            target_wait_ms: 60_000,
            typical_q: 0.0,
            window_dispersion: 1.0,
            excess_variance: 0.0,
            mean_squared: 0.0,
            windows_scored: 0,
            tasks_scored: 0.0,
            tasks_uncovered: 0.0,
            windows_covered: 0,
            open: [OpenWindow::default(); MAX_OPEN_WINDOWS],
            open_head: 0,
            open_len: 0,
            last_window_ms: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &PredictorConfig {
        &self.cfg
    }

    /// Feeds one queue sample. Samples must come in time order; a sample at or before
    /// the previous one's time updates the levels and counts only.
    pub fn observe(&mut self, sample: &QueueSample) {
        let mut dt = 0.0;
        if let Some(prev) = self.last {
            dt = sample.at.secs_since(prev.at).max(0.0);
            if dt > 0.0 {
                self.tick_s = dt;
            }
        }
        self.recent.add(dt, sample.arrivals);
        self.arrivals += u64::from(sample.arrivals);
        self.seasonal.add(sample.at, sample.arrivals);
        self.last = Some(*sample);
        self.score_windows(sample.at);
        let scored = self.waits.observe(sample, self.target_wait_ms);
        if scored.tasks > 0 {
            let step = scored.late as f64 - (1.0 - self.level) * scored.tasks as f64;
            match (self.cfg.controller, &mut self.level_logit) {
                (Controller::Level, Some(logit)) => {
                    *logit = (*logit + self.cfg.margin_rate * step).clamp(-4.0, 8.0);
                }
                _ => self.margin += self.cfg.margin_rate * step,
            }
        }
    }

    /// Feeds the run time of one finished task, in seconds.
    pub fn observe_run_time(&mut self, run_s: f64) {
        self.run_times.observe(run_s);
    }

    /// Scores every open window that has passed by `now` and learns from it.
    fn score_windows(&mut self, now: Timestamp) {
        while self.open_len > 0 {
            let w = self.open[self.open_head];
            if w.due_ms > now.unix_ms() {
                break;
            }
            self.open_head = (self.open_head + 1) % MAX_OPEN_WINDOWS;
            self.open_len -= 1;
            let realised = (self.arrivals - w.arrivals_before) as f64;
            let uncovered = (realised - w.spare).max(0.0);
            self.windows_scored += 1;
            self.tasks_scored += realised;
            self.tasks_uncovered += uncovered;
            if uncovered == 0.0 {
                self.windows_covered += 1;
            }
            self.regression.learn(&w.features, realised);
            let mean = w.mean.max(0.05);
            let z = (realised - w.mean) * (realised - w.mean) / mean;
            let r = self.cfg.dispersion_rate;
            // The average itself is kept unclamped (clamping each step would bias it
            // toward the bound); readers clamp.
            self.window_dispersion = ((1.0 - r) * self.window_dispersion + r * z).min(1e4);
            // A window far above its mean (a burst nobody could foresee) counts as
            // EXCESS_CLIP · (1 + mean) above it in κ: unclipped, two bursts a day set
            // κ for every quiet window and kept a wide spare all day.
            let surprise = (realised - w.mean).min(EXCESS_CLIP * (1.0 + w.mean));
            let excess = surprise * surprise - w.mean;
            self.excess_variance = (1.0 - r) * self.excess_variance + r * excess;
            self.mean_squared = (1.0 - r) * self.mean_squared + r * w.mean * w.mean;
        }
    }

    fn open_window(&mut self, w: OpenWindow) {
        if self.open_len == MAX_OPEN_WINDOWS {
            self.open_head = (self.open_head + 1) % MAX_OPEN_WINDOWS;
            self.open_len -= 1;
        }
        let slot = (self.open_head + self.open_len) % MAX_OPEN_WINDOWS;
        self.open[slot] = w;
        self.open_len += 1;
    }

    /// Variance-to-mean ratio used for sizing a window whose expected arrivals are
    /// `mean`: learned from windows once enough have passed (constant, or growing with
    /// the mean under [`VarianceModel::Quadratic`]), the seasonal model's per-bucket
    /// one before.
    pub fn dispersion_at(&self, mean: f64) -> f64 {
        if self.windows_scored < MIN_WINDOWS_FOR_DISPERSION {
            return self.seasonal.dispersion();
        }
        match self.cfg.variance {
            VarianceModel::Linear => self.window_dispersion.max(1.0),
            VarianceModel::Quadratic => 1.0 + self.overdispersion() * mean.max(0.0),
        }
    }

    /// κ of the quadratic variance model `var = mean + κ · mean²` (0 = Poisson).
    pub fn overdispersion(&self) -> f64 {
        if self.mean_squared > 0.0 {
            (self.excess_variance / self.mean_squared).clamp(0.0, 1e3)
        } else {
            0.0
        }
    }

    /// Fraction of tasks that waited longer than the pool's `target_wait_s`, as read
    /// from the queue samples; `None` before any task was scored.
    pub fn late_fraction(&self) -> Option<f64> {
        self.waits.late_fraction()
    }

    /// The quantile level the spare is sized at now: the service level, or with
    /// [`Controller::Level`] the level the wait feedback has moved it to.
    pub fn model_level(&self) -> Option<f64> {
        self.level_logit.map(|l| 1.0 / (1.0 + (-l).exp()))
    }

    /// The learned margin, in slots (may be negative).
    pub fn margin(&self) -> f64 {
        self.margin
    }

    /// The arrival-rate model.
    pub fn seasonal(&self) -> &SeasonalRate {
        &self.seasonal
    }

    /// The run-time distribution.
    pub fn run_times(&self) -> &RunTimeDistribution {
        &self.run_times
    }

    /// Coefficients of the short-term regression (seasonal, ~2 min rate, ~15 min rate,
    /// ~30 s rate).
    pub fn short_term_coefficients(&self) -> [f64; recent::FEATURES] {
        self.regression.theta()
    }

    /// Expected arrivals in `(now, now + window_ms]`, with the features behind it.
    fn window_mean(&self, now: Timestamp, window_ms: i64) -> (f64, [f64; recent::FEATURES]) {
        let end = Timestamp::from_unix_ms(now.unix_ms() + window_ms);
        let seasonal = self.seasonal.expected_arrivals(now, end);
        let (short, long) = self.recent.rates_per_s();
        let w = window_ms as f64 / 1000.0;
        let latest = self.recent.latest_rate_per_s();
        let x = [seasonal, short * w, long * w, latest * w];
        let mean = if self.cfg.short_term {
            self.regression.predict(&x)
        } else {
            seasonal
        };
        (mean, x)
    }

    /// Expected arrival rate at `at`, tasks per second.
    pub fn expected_arrival_rate(&self, at: Timestamp) -> f64 {
        self.seasonal.rate_per_s(at)
    }

    /// How the spare-slot decisions have fared: (windows scored, fraction of windows
    /// fully covered, fraction of tasks covered). `None` before the first.
    pub fn spare_coverage(&self) -> Option<(u64, f64, f64)> {
        (self.windows_scored > 0).then(|| {
            let tasks = if self.tasks_scored > 0.0 {
                1.0 - self.tasks_uncovered / self.tasks_scored
            } else {
                1.0
            };
            (
                self.windows_scored,
                self.windows_covered as f64 / self.windows_scored as f64,
                tasks,
            )
        })
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
        let needed = f64::from(running) + (f64::from(pending) * ratio).ceil();
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
        let level = spec.scaling.service_level.clamp(0.0, 1.0 - 1e-9);
        self.level = level;
        self.target_wait_ms = secs_to_ms(spec.scaling.target_wait_s);
        let surv = self.run_times.survival(lead_s);
        let lead_ms = (lead_s * 1000.0) as i64;
        forecast.expected_busy_slots = f64::from(pending)
            + f64::from(running) * surv.of_running
            + self.window_mean(now, lead_ms).0 * surv.of_arrivals;
        // Slots freed by completions are not credited against the spare: they free up
        // at random times in the window, while bursts come at its start.
        let carried = f64::from(pending) + f64::from(running);

        let window_ms = lead_ms + (self.tick_s * 1000.0) as i64;
        let due = Timestamp::from_unix_ms(now.unix_ms() + window_ms);
        let (mean, features) = self.window_mean(now, window_ms);
        let model_level = match self.cfg.controller {
            Controller::Margin => level,
            Controller::Level => {
                let logit = *self
                    .level_logit
                    .get_or_insert_with(|| (level / (1.0 - level)).ln());
                // Quantised to 0.05 logit steps so the quantile memo keeps hitting.
                let logit = (logit * 20.0).round() / 20.0;
                1.0 / (1.0 + (-logit).exp())
            }
        };
        let q = f64::from(self.quantiles.spare_slots(
            mean,
            self.dispersion_at(mean),
            model_level,
            self.cfg.basis,
        ));
        // The margin is bounded relative to the typical quantile, so one burst cannot
        // wind it up without bound and a quiet night does not erase it; it never
        // makes the spare negative.
        self.typical_q += TYPICAL_Q_RATE * (q - self.typical_q);
        let bound = 4.0 * self.typical_q + 8.0;
        self.margin = self.margin.clamp(-bound, bound);
        let spare = (q + self.margin).max(0.0);
        if self.last_window_ms.is_none_or(|t| now.unix_ms() > t) {
            self.last_window_ms = Some(now.unix_ms());
            self.open_window(OpenWindow {
                due_ms: due.unix_ms(),
                features,
                arrivals_before: self.arrivals,
                mean,
                spare,
            });
        }
        forecast.target_slots = clamp_slots(
            (carried + spare).ceil(),
            spec.min_capacity,
            spec.max_capacity,
        );
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
                let arrivals = self.seasonal.expected_arrivals(now, at);
                let quantiles = levels
                    .iter()
                    .map(|&p| Quantile {
                        p,
                        slots: carried
                            + f64::from(sizing::spare_slots(
                                arrivals * surv.of_arrivals,
                                self.dispersion_at(arrivals * surv.of_arrivals),
                                p,
                                Basis::Windows,
                            )),
                    })
                    .collect();
                ForecastPoint {
                    at,
                    mean: carried + arrivals * surv.of_arrivals,
                    quantiles,
                }
            })
            .collect()
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

/// `x` (a whole number of slots, possibly huge) as slots within `[min, max]`.
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
    fn default_config_is_valid() {
        assert!(Predictor::with_config(PredictorConfig::default()).is_ok());
        let err = Predictor::with_config(PredictorConfig {
            margin_rate: 2.0,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "margin_rate: must be in [0, 1], got 2");
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

    #[test]
    fn forecast_policy_keeps_spare_slots_for_steady_arrivals() {
        let spec = spec(ScalingPolicy::Forecast);
        let mut p = Predictor::new();
        // Two days of 1 arrival per 30 s tick, 10 running, nothing pending.
        let mut last = None;
        for i in 1..=(2 * 2880) {
            p.observe(&sample(i * 30, 0, 10, 1));
            for _ in 0..1 {
                p.observe_run_time(300.0);
            }
            last = Some(p.forecast(&spec, Timestamp::from_unix_secs(i * 30), 120.0, 10));
        }
        let f = last.unwrap();
        // The window is 120 + 30 = 150 s: 5 arrivals every time, and every task starts
        // at once (nothing is ever pending), so the margin only ever shrinks: the
        // spare is below the model's 95 % quantile of Poisson(5) (10) but the target
        // still holds the 10 running tasks.
        assert!(p.margin() < 0.0, "{}", p.margin());
        assert!((10..20).contains(&f.target_slots), "{f:?}");
        assert_eq!(p.late_fraction(), Some(0.0));
        assert!(f.demand_slots() == f.target_slots.max(f.backlog_slots));
        // Expected busy at now+120: 10 × (300-120)/300 + 4 arrivals.
        assert!((f.expected_busy_slots - 10.0).abs() < 0.5, "{f:?}");
        let points = p.forecast_points(&spec, Timestamp::from_unix_secs(2 * 86400), &[60.0, 600.0]);
        assert_eq!(points.len(), 2);
        assert!(points[1].mean > points[0].mean - 1e-9);
        assert!(
            points[0]
                .quantiles
                .windows(2)
                .all(|w| w[0].slots <= w[1].slots)
        );
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
