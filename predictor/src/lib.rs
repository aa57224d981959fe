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
//! - [`recent`]: short-term clustering: recent arrivals, at two time scales, adjust
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
//! busy(now+L)  = p + r · S_run(L) + A(now, now+L) · S_arr(L)        (expected)
//! target       = ceil(p + r · S_run(L) + spare)
//! spare        = Q_level(arrivals in (now, now + L + tick]) + margin
//! ```
//!
//! Launches decided now are ready at `now + L`; until then arrivals take the spare
//! slots that exist, and whatever they take is replaced by the launch decided at the
//! next tick, ready one tick after that. So the capacity asked for at `now + L` must
//! hold the tasks still running then, the arrivals of the next `L`, and those of one
//! more tick.
//! `Q_level` is the negative-binomial (or Poisson) quantile at the pool's
//! `service_level`, on the [`sizing::Basis`] configured (by default the fraction of
//! *tasks* covered). `margin` is learned online: each window's realised arrivals are
//! compared with the spare that was planned for them, and the margin moves so that the
//! uncovered share of tasks tends to `1 − service_level` (a stochastic-approximation
//! quantile tracker; it goes negative when the model is too cautious). The window's
//! dispersion is learned from the same comparisons. The planner launches toward the
//! larger of this target and the reactive backlog target, and scales in only through
//! idle timeouts, never below this target.
//!
//! For the `reactive` policy the target is what the backlog needs now, running plus
//! pending × ratio, and launches follow the reactive estimator.

pub mod accuracy;
pub mod reactive;
pub mod recent;
pub mod runtime;
pub mod seasonal;
pub mod sizing;

use capstan_core::{
    Forecast, ForecastPoint, PoolSpec, Quantile, QueueSample, ScalingPolicy, Timestamp,
};

pub use accuracy::{AccuracyReport, AccuracyTracker};
pub use reactive::reactive_target;
pub use recent::{RecentArrivals, WindowRegression};
pub use runtime::{RunTimeDistribution, Survival};
pub use seasonal::{SeasonalConfig, SeasonalConfigError, SeasonalRate};
pub use sizing::{Basis, CountQuantiles};

/// Settings of a [`Predictor`]. The defaults are the ones measured in the README.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictorConfig {
    /// The arrival-rate model.
    pub seasonal: SeasonalConfig,
    /// What the service level is a probability of.
    pub basis: Basis,
    /// Finished tasks after which an old run time weighs half (0 = never fade).
    pub run_time_half_life: u32,
    /// Learning rate of the online margin, in slots per uncovered task.
    pub margin_rate: f64,
    /// Learning rate of the window dispersion.
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
            margin_rate: 0.02,
            dispersion_rate: 0.005,
            short_term: true,
            regression_forgetting: 0.999_99,
        }
    }
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
    level: f64,
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
    window_dispersion: f64,
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
            window_dispersion: 1.0,
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
            let step = match self.cfg.basis {
                Basis::Tasks => uncovered - (1.0 - w.level) * realised,
                Basis::Windows => f64::from(u8::from(uncovered > 0.0)) - (1.0 - w.level),
            };
            self.margin += self.cfg.margin_rate * step;
            self.regression.learn(&w.features, realised);
            let mean = w.mean.max(0.05);
            let z = (realised - w.mean) * (realised - w.mean) / mean;
            let r = self.cfg.dispersion_rate;
            // The average itself is kept unclamped (clamping each step would bias it
            // toward the bound); readers clamp.
            self.window_dispersion = ((1.0 - r) * self.window_dispersion + r * z).min(1e4);
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

    /// Dispersion used for sizing: learned from windows once enough have passed,
    /// the seasonal model's per-bucket one before.
    pub fn dispersion(&self) -> f64 {
        if self.windows_scored >= MIN_WINDOWS_FOR_DISPERSION {
            self.window_dispersion.max(1.0)
        } else {
            self.seasonal.dispersion()
        }
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

    /// Coefficients of the short-term regression (seasonal, ~2 min rate, ~15 min rate).
    pub fn short_term_coefficients(&self) -> [f64; recent::FEATURES] {
        self.regression.theta()
    }

    /// Expected arrivals in `(now, now + window_ms]`, with the features behind it.
    fn window_mean(&self, now: Timestamp, window_ms: i64) -> (f64, [f64; recent::FEATURES]) {
        let end = Timestamp::from_unix_ms(now.unix_ms() + window_ms);
        let seasonal = self.seasonal.expected_arrivals(now, end);
        let (short, long) = self.recent.rates_per_s();
        let w = window_ms as f64 / 1000.0;
        let x = [seasonal, short * w, long * w];
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
        let surv = self.run_times.survival(lead_s);
        let lead_ms = (lead_s * 1000.0) as i64;
        let carried = f64::from(pending) + f64::from(running) * surv.of_running;
        forecast.expected_busy_slots =
            carried + self.window_mean(now, lead_ms).0 * surv.of_arrivals;

        let window_ms = lead_ms + (self.tick_s * 1000.0) as i64;
        let due = Timestamp::from_unix_ms(now.unix_ms() + window_ms);
        let (mean, features) = self.window_mean(now, window_ms);
        let q =
            f64::from(
                self.quantiles
                    .spare_slots(mean, self.dispersion(), level, self.cfg.basis),
            );
        // The margin cannot make the spare negative, and is kept within a range
        // where one burst cannot wind it up without bound.
        self.margin = self.margin.clamp(-q, 4.0 * q + 8.0);
        let spare = (q + self.margin).max(0.0);
        if self.last_window_ms.is_none_or(|t| now.unix_ms() > t) {
            self.last_window_ms = Some(now.unix_ms());
            self.open_window(OpenWindow {
                due_ms: due.unix_ms(),
                features,
                arrivals_before: self.arrivals,
                mean,
                spare,
                level,
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
        let phi = self.dispersion();
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
                                phi,
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
        // The window is 120 + 30 = 150 s: exactly 5 arrivals every time. Of the 10
        // running tasks (300 s each), 10 × (300 − 120) / 300 = 6 still run at now + 120.
        // The margin learns that 95 % task coverage lets 0.25 of 5 tasks go uncovered,
        // so the spare settles near 4.75 and the target at ceil(6 + 4.75) = 11.
        assert_eq!(f.target_slots, 11, "{f:?}");
        let (_, windows, tasks) = p.spare_coverage().unwrap();
        assert!(windows < 0.5, "{windows}");
        assert!((tasks - 0.95).abs() < 0.01, "{tasks}");
        assert!(f.target_slots > f.backlog_slots);
        assert!(f.demand_slots() == f.target_slots);
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
