//! Generated workloads, so that tests, examples and the README need no external file.
//!
//! [`WorkloadSpec::generate`] draws a seeded non-homogeneous Poisson stream of task
//! arrivals whose rate follows a daily cycle (a triangle wave, quietest at 04:00 and
//! busiest at 14:00 UTC) and a weekly one (weekends at a fraction of weekdays), plus
//! bursts (a cluster of tasks within a short window, at Poisson instants), with
//! log-normal run times. Arrivals are drawn by thinning: candidates at the peak rate,
//! each kept with probability rate(t) / peak rate.
//!
//! On top of the cycles, the whole load (regular arrivals and bursts alike) can change
//! with the calendar: a **step** (multiplied by `step_factor` from day `step_day` on)
//! and a **quiet period** (days `quiet_start_day..quiet_end_day` at `quiet_factor`).
//! A burst's size is either Poisson (`burst_mean_tasks`, the `diurnal` workload's
//! bursts) or heavy-tailed ([`BurstSizes::LogUniform`]: compound arrivals of 10 to 200
//! tasks). The defaults of the newer fields ([`WorkloadSpec::diurnal`]) leave the older
//! ones' draws exactly as they were. The workload suite of [`crate::suite`] is built
//! from these parameters.
//!
//! All draws come from [`crate::rng::SimRng`], so a seed gives the same trace on every
//! platform. Times are whole seconds. The generated trace starts on a Monday at 00:00
//! UTC (2026-01-05), so its cycles line up with the calendar.

use capstan_core::Timestamp;

use crate::rng::SimRng;
use crate::trace::{Task, Trace};

/// Monday 2026-01-05 00:00:00 UTC.
pub const WORKLOAD_ORIGIN: Timestamp = Timestamp::from_unix_secs(1_767_571_200);

const DAY_S: f64 = 86_400.0;

/// How many tasks a burst brings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BurstSizes {
    /// Poisson with mean [`WorkloadSpec::burst_mean_tasks`].
    Poisson,
    /// Compound arrivals: a whole number between `min` and `max` (inclusive) with
    /// probability proportional to `1 / size` (the discrete log-uniform law: each
    /// factor of two in size is about as likely, so clusters of 10 and of 200 both
    /// occur, and most of the tasks come in the larger clusters).
    /// [`WorkloadSpec::burst_mean_tasks`] is not used.
    LogUniform {
        /// Smallest cluster (>= 1).
        min: u32,
        /// Largest cluster (>= `min`, <= 100,000).
        max: u32,
    },
}

impl BurstSizes {
    /// Mean burst size; `poisson_mean` is [`WorkloadSpec::burst_mean_tasks`].
    pub fn mean(&self, poisson_mean: f64) -> f64 {
        match *self {
            Self::Poisson => poisson_mean,
            Self::LogUniform { min, max } => {
                let (mut h, mut n) = (0.0, 0.0);
                for k in min.max(1)..=max {
                    h += 1.0 / f64::from(k);
                    n += 1.0;
                }
                if h > 0.0 { n / h } else { 0.0 }
            }
        }
    }
}

/// Draws burst sizes from a [`BurstSizes`] law with arithmetic only (a cumulative
/// table searched by bisection), so the draws are the same on every platform.
struct BurstSizeSampler {
    law: BurstSizes,
    poisson_mean: f64,
    /// For `LogUniform`: cumulative weights of `min..=max`.
    cumulative: Vec<f64>,
}

impl BurstSizeSampler {
    fn new(law: BurstSizes, poisson_mean: f64) -> Self {
        let cumulative = match law {
            BurstSizes::Poisson => Vec::new(),
            BurstSizes::LogUniform { min, max } => {
                let mut acc = 0.0;
                (min..=max)
                    .map(|k| {
                        acc += 1.0 / f64::from(k);
                        acc
                    })
                    .collect()
            }
        };
        Self {
            law,
            poisson_mean,
            cumulative,
        }
    }

    fn sample(&self, rng: &mut SimRng) -> u64 {
        match self.law {
            BurstSizes::Poisson => rng.poisson(self.poisson_mean),
            BurstSizes::LogUniform { min, .. } => {
                let total = *self.cumulative.last().expect("min <= max");
                let u = rng.uniform() * total;
                let i = self.cumulative.partition_point(|&c| c <= u);
                u64::from(min) + i.min(self.cumulative.len() - 1) as u64
            }
        }
    }
}

/// A generated trace with what the generator knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The trace, as [`WorkloadSpec::generate`] returns it.
    pub trace: Trace,
    /// Each burst: when it started (seconds after the origin) and how many tasks it
    /// drew (those past the end of the trace are dropped from the trace, not from this
    /// count).
    pub bursts: Vec<(f64, u64)>,
    /// Tasks of the trace that came from bursts.
    pub burst_tasks: u64,
}

/// The shape of a generated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// Seed of every draw.
    pub seed: u64,
    /// Length of the trace in days.
    pub days: u32,
    /// Mean arrival rate over a whole week, excluding bursts, in tasks per hour.
    pub arrivals_per_hour: f64,
    /// Busiest hour's rate over the quietest hour's (>= 1).
    pub daily_peak_to_trough: f64,
    /// A weekend day's rate as a fraction of a weekday's, in (0, 1]: the strength of
    /// the weekly cycle (1 for none).
    pub weekend_factor: f64,
    /// Mean number of bursts per day (0 for none).
    pub bursts_per_day: f64,
    /// Mean number of tasks in a burst (with [`BurstSizes::Poisson`]).
    pub burst_mean_tasks: f64,
    /// The law of a burst's size.
    pub burst_sizes: BurstSizes,
    /// A burst's tasks arrive uniformly within this many seconds.
    pub burst_window_s: f64,
    /// Median task run time in seconds.
    pub run_median_s: f64,
    /// Shape of the log-normal run time (standard deviation of its log).
    pub run_sigma: f64,
    /// Run times are capped here, in seconds.
    pub run_max_s: f64,
    /// From day `step_day` on (counted from 0), the load (regular arrivals and bursts)
    /// is multiplied by `step_factor`.
    pub step_day: u32,
    /// The step's multiplier, > 0 (1 for no step).
    pub step_factor: f64,
    /// First day (counted from 0) of the quiet period.
    pub quiet_start_day: u32,
    /// Day after the quiet period (equal to `quiet_start_day` for none).
    pub quiet_end_day: u32,
    /// The load during the quiet period as a fraction of the usual, in [0, 1].
    pub quiet_factor: f64,
}

/// A parameter of a [`WorkloadSpec`] out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("workload.{field}: must be {expected}, got {value}")]
pub struct WorkloadError {
    /// The parameter.
    pub field: &'static str,
    /// Its allowed range.
    pub expected: &'static str,
    /// The value given.
    pub value: f64,
}

impl WorkloadSpec {
    /// The `diurnal` workload: four weeks of CI-like load, 30 tasks an hour on average
    /// with a 4x daily and 0.4x weekend cycle, two bursts of ~40 tasks a day, and
    /// run times with a median of 5 minutes and a long tail.
    pub fn diurnal(seed: u64) -> Self {
        Self {
            seed,
            days: 28,
            arrivals_per_hour: 30.0,
            daily_peak_to_trough: 4.0,
            weekend_factor: 0.4,
            bursts_per_day: 2.0,
            burst_mean_tasks: 40.0,
            burst_window_s: 120.0,
            run_median_s: 300.0,
            run_sigma: 1.0,
            run_max_s: 6.0 * 3600.0,
            burst_sizes: BurstSizes::Poisson,
            step_day: 0,
            step_factor: 1.0,
            quiet_start_day: 0,
            quiet_end_day: 0,
            quiet_factor: 1.0,
        }
    }

    /// The workload named `name`: a shape of the workload suite
    /// ([`crate::suite::SHAPES`], `diurnal` among them), full size.
    pub fn named(name: &str, seed: u64) -> Option<Self> {
        crate::suite::shape(name).map(|s| s.spec(seed, crate::suite::Scale::Full))
    }

    fn has_step(&self) -> bool {
        self.step_factor != 1.0
    }

    fn has_quiet(&self) -> bool {
        self.quiet_end_day > self.quiet_start_day
    }

    /// Checks every parameter, naming the first one out of range.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let (size_min, size_max) = match self.burst_sizes {
            BurstSizes::Poisson => (1, 1),
            BurstSizes::LogUniform { min, max } => (min, max),
        };
        let checks: [(&'static str, f64, bool, &'static str); 17] = [
            ("days", f64::from(self.days), self.days >= 1, ">= 1"),
            (
                "arrivals_per_hour",
                self.arrivals_per_hour,
                self.arrivals_per_hour > 0.0,
                "> 0",
            ),
            (
                "daily_peak_to_trough",
                self.daily_peak_to_trough,
                self.daily_peak_to_trough >= 1.0,
                ">= 1",
            ),
            (
                "weekend_factor",
                self.weekend_factor,
                self.weekend_factor > 0.0 && self.weekend_factor <= 1.0,
                "in (0, 1]",
            ),
            (
                "bursts_per_day",
                self.bursts_per_day,
                self.bursts_per_day >= 0.0,
                ">= 0",
            ),
            (
                "burst_mean_tasks",
                self.burst_mean_tasks,
                self.burst_mean_tasks >= 0.0,
                ">= 0",
            ),
            (
                "burst_window_s",
                self.burst_window_s,
                self.burst_window_s >= 0.0,
                ">= 0",
            ),
            (
                "run_median_s",
                self.run_median_s,
                self.run_median_s >= 1.0 && self.run_median_s <= self.run_max_s,
                ">= 1 and <= run_max_s",
            ),
            ("run_sigma", self.run_sigma, self.run_sigma >= 0.0, ">= 0"),
            (
                "run_max_s",
                self.run_max_s,
                self.run_max_s >= 1.0 && self.run_max_s.is_finite(),
                ">= 1 and finite",
            ),
            (
                "burst_sizes.min",
                f64::from(size_min),
                size_min >= 1,
                ">= 1",
            ),
            (
                "burst_sizes.max",
                f64::from(size_max),
                size_max >= size_min && size_max <= 100_000,
                ">= burst_sizes.min and <= 100000",
            ),
            (
                "step_factor",
                self.step_factor,
                self.step_factor > 0.0 && self.step_factor.is_finite(),
                "> 0 and finite (1 for no step)",
            ),
            (
                "step_day",
                f64::from(self.step_day),
                !self.has_step() || self.step_day < self.days,
                "< days when step_factor is not 1",
            ),
            (
                "quiet_factor",
                self.quiet_factor,
                (0.0..=1.0).contains(&self.quiet_factor),
                "in [0, 1]",
            ),
            (
                "quiet_end_day",
                f64::from(self.quiet_end_day),
                self.quiet_end_day >= self.quiet_start_day,
                ">= quiet_start_day",
            ),
            (
                "quiet_start_day",
                f64::from(self.quiet_start_day),
                !self.has_quiet() || self.quiet_start_day < self.days,
                "< days when there is a quiet period",
            ),
        ];
        for (field, value, ok, expected) in checks {
            if !ok || value.is_nan() {
                return Err(WorkloadError {
                    field,
                    expected,
                    value,
                });
            }
        }
        Ok(())
    }

    /// Expected arrival rate (tasks per second, bursts excluded) `t_s` seconds after
    /// the origin.
    pub fn rate_at(&self, t_s: f64) -> f64 {
        let base = self.arrivals_per_hour / 3600.0;
        base * self.daily_factor(t_s) * self.weekly_factor(t_s) * self.load_factor(t_s)
    }

    /// The step and quiet-period multiplier of the whole load (regular arrivals and
    /// bursts) `t_s` seconds after the origin: 1 without either.
    pub fn load_factor(&self, t_s: f64) -> f64 {
        let day = (t_s / DAY_S).floor();
        let mut f = 1.0;
        if self.has_step() && day >= f64::from(self.step_day) {
            f *= self.step_factor;
        }
        if day >= f64::from(self.quiet_start_day) && day < f64::from(self.quiet_end_day) {
            f *= self.quiet_factor;
        }
        f
    }

    /// The largest [`WorkloadSpec::load_factor`].
    fn max_load_factor(&self) -> f64 {
        if self.has_step() {
            self.step_factor.max(1.0)
        } else {
            1.0
        }
    }

    /// Daily multiplier, mean 1 over a day: a triangle wave from 04:00 (trough) to
    /// 14:00 (peak).
    fn daily_factor(&self, t_s: f64) -> f64 {
        let hour = (t_s % DAY_S) / 3600.0;
        // Hours since the trough, 0..24; rising for 10 hours, falling for 14.
        let since = (hour - 4.0).rem_euclid(24.0);
        let shape = if since <= 10.0 {
            since / 10.0
        } else {
            1.0 - (since - 10.0) / 14.0
        };
        let r = self.daily_peak_to_trough;
        (1.0 + (r - 1.0) * shape) / (1.0 + (r - 1.0) * 0.5)
    }

    /// Weekly multiplier, mean 1 over a week (day 0 is a Monday).
    fn weekly_factor(&self, t_s: f64) -> f64 {
        let day = (t_s / DAY_S).floor() as i64 % 7;
        let weight = if day >= 5 { self.weekend_factor } else { 1.0 };
        weight * 7.0 / (5.0 + 2.0 * self.weekend_factor)
    }

    fn peak_rate(&self) -> f64 {
        let r = self.daily_peak_to_trough;
        let daily_max = r / (1.0 + (r - 1.0) * 0.5);
        let weekly_max = 7.0 / (5.0 + 2.0 * self.weekend_factor);
        self.arrivals_per_hour / 3600.0 * daily_max * weekly_max * self.max_load_factor()
    }

    /// Draws the trace.
    pub fn generate(&self) -> Result<Trace, WorkloadError> {
        self.generate_detailed().map(|g| g.trace)
    }

    /// Draws the trace (the same as [`WorkloadSpec::generate`]) and says which tasks
    /// came from bursts.
    pub fn generate_detailed(&self) -> Result<Generated, WorkloadError> {
        self.validate()?;
        let mut root = SimRng::new(self.seed);
        let mut arrivals_rng = root.fork(1);
        let mut burst_rng = root.fork(2);
        let mut run_rng = root.fork(3);
        // Its own stream, so that a load without step or quiet period draws exactly
        // what it drew before these existed.
        let mut burst_keep_rng = root.fork(4);
        let end_s = f64::from(self.days) * DAY_S;
        let mut submits: Vec<f64> = Vec::new();

        let peak = self.peak_rate();
        let mut t = 0.0;
        loop {
            t += arrivals_rng.exponential(1.0 / peak);
            if t >= end_s {
                break;
            }
            if arrivals_rng.uniform() * peak < self.rate_at(t) {
                submits.push(t);
            }
        }
        let regular = submits.len();
        let mut bursts = Vec::new();
        let sizes = BurstSizeSampler::new(self.burst_sizes, self.burst_mean_tasks);
        if self.bursts_per_day > 0.0 && self.burst_sizes.mean(self.burst_mean_tasks) > 0.0 {
            let max_load = self.max_load_factor();
            let mut t = 0.0;
            loop {
                t += burst_rng.exponential(DAY_S / (self.bursts_per_day * max_load));
                if t >= end_s {
                    break;
                }
                if burst_keep_rng.uniform() * max_load >= self.load_factor(t) {
                    continue;
                }
                let n = sizes.sample(&mut burst_rng);
                bursts.push((t, n));
                for _ in 0..n {
                    let at = t + burst_rng.uniform() * self.burst_window_s;
                    if at < end_s {
                        submits.push(at);
                    }
                }
            }
        }
        let burst_tasks = (submits.len() - regular) as u64;
        submits.sort_by(f64::total_cmp);
        let tasks = submits
            .into_iter()
            .map(|s| {
                let run = run_rng
                    .log_normal(self.run_median_s, self.run_sigma)
                    .clamp(1.0, self.run_max_s);
                Task {
                    submit_ms: s.floor() as i64 * 1000,
                    run_ms: run.round() as i64 * 1000,
                }
            })
            .collect();
        Ok(Generated {
            trace: Trace::from_tasks(WORKLOAD_ORIGIN, tasks),
            bursts,
            burst_tasks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let a = WorkloadSpec::diurnal(1).generate().unwrap();
        let b = WorkloadSpec::diurnal(1).generate().unwrap();
        let c = WorkloadSpec::diurnal(2).generate().unwrap();
        assert_eq!(a, b);
        assert_ne!(a.tasks, c.tasks);
    }

    #[test]
    fn volume_matches_the_rates() {
        let spec = WorkloadSpec::diurnal(3);
        let t = spec.generate().unwrap();
        // 28 days * 24 h * 30/h = 20,160 regular arrivals, plus 56 bursts * 40 = 2,240.
        let expected = 28.0 * 24.0 * 30.0 + 28.0 * 2.0 * 40.0;
        let n = t.tasks.len() as f64;
        assert!((n - expected).abs() / expected < 0.05, "{n} vs {expected}");
        assert!(t.tasks.windows(2).all(|w| w[0].submit_ms <= w[1].submit_ms));
        assert!(
            t.tasks
                .iter()
                .all(|t| t.run_ms >= 1000 && t.submit_ms % 1000 == 0)
        );
    }

    #[test]
    fn daily_and_weekly_cycles_show_in_the_counts() {
        let mut spec = WorkloadSpec::diurnal(4);
        spec.bursts_per_day = 0.0;
        let t = spec.generate().unwrap();
        let mut by_hour = [0u32; 24];
        let mut by_day = [0u32; 7];
        for task in &t.tasks {
            let s = task.submit_ms / 1000;
            by_hour[((s / 3600) % 24) as usize] += 1;
            by_day[((s / 86_400) % 7) as usize] += 1;
        }
        // Rate at 14:00 over rate at 04:00 is 4; allow sampling noise.
        let ratio = f64::from(by_hour[14]) / f64::from(by_hour[4]);
        assert!((3.0..5.3).contains(&ratio), "{ratio} {by_hour:?}");
        let weekday = f64::from(by_day[..5].iter().sum::<u32>()) / 5.0;
        let weekend = f64::from(by_day[5..].iter().sum::<u32>()) / 2.0;
        assert!((weekend / weekday - 0.4).abs() < 0.05, "{by_day:?}");
    }

    #[test]
    fn factors_average_to_one() {
        let spec = WorkloadSpec::diurnal(0);
        let week = 7.0 * DAY_S;
        let steps = 7 * 24 * 60;
        let mean = (0..steps)
            .map(|i| spec.rate_at(f64::from(i) * week / f64::from(steps)))
            .sum::<f64>()
            / f64::from(steps);
        assert!((mean * 3600.0 - 30.0).abs() < 0.01, "{}", mean * 3600.0);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let mut spec = WorkloadSpec::diurnal(0);
        spec.weekend_factor = 0.0;
        let err = spec.generate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "workload.weekend_factor: must be in (0, 1], got 0"
        );
    }

    #[test]
    fn bad_new_parameters_name_the_field_and_its_range() {
        type Edit = fn(&mut WorkloadSpec);
        let cases: [(Edit, &str); 9] = [
            (
                |s| s.step_factor = 0.0,
                "workload.step_factor: must be > 0 and finite (1 for no step), got 0",
            ),
            (
                |s| {
                    s.step_factor = 2.0;
                    s.step_day = 28;
                },
                "workload.step_day: must be < days when step_factor is not 1, got 28",
            ),
            (
                |s| s.quiet_factor = 1.5,
                "workload.quiet_factor: must be in [0, 1], got 1.5",
            ),
            (
                |s| {
                    s.quiet_start_day = 5;
                    s.quiet_end_day = 4;
                },
                "workload.quiet_end_day: must be >= quiet_start_day, got 4",
            ),
            (
                |s| {
                    s.quiet_start_day = 30;
                    s.quiet_end_day = 40;
                },
                "workload.quiet_start_day: must be < days when there is a quiet period, got 30",
            ),
            (
                |s| s.burst_sizes = BurstSizes::LogUniform { min: 0, max: 5 },
                "workload.burst_sizes.min: must be >= 1, got 0",
            ),
            (
                |s| s.burst_sizes = BurstSizes::LogUniform { min: 10, max: 9 },
                "workload.burst_sizes.max: must be >= burst_sizes.min and <= 100000, got 9",
            ),
            (
                |s| s.run_max_s = f64::INFINITY,
                "workload.run_max_s: must be >= 1 and finite, got inf",
            ),
            (|s| s.days = 0, "workload.days: must be >= 1, got 0"),
        ];
        for (edit, expected) in cases {
            let mut spec = WorkloadSpec::diurnal(0);
            edit(&mut spec);
            assert_eq!(spec.validate().unwrap_err().to_string(), expected);
        }
        // A step of 1 anywhere and an empty quiet period past the end are no events.
        let mut spec = WorkloadSpec::diurnal(0);
        spec.step_day = 99;
        spec.quiet_start_day = 99;
        spec.quiet_end_day = 99;
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn log_uniform_burst_sizes_put_equal_mass_on_each_doubling() {
        let law = BurstSizes::LogUniform { min: 10, max: 200 };
        let sampler = BurstSizeSampler::new(law, 0.0);
        let mut rng = SimRng::new(3);
        let n = 100_000;
        let draws: Vec<u64> = (0..n).map(|_| sampler.sample(&mut rng)).collect();
        assert!(draws.iter().all(|d| (10..=200).contains(d)));
        assert!(draws.contains(&10) && draws.contains(&200));
        let share = |lo: u64, hi: u64| {
            draws.iter().filter(|&&d| (lo..=hi).contains(&d)).count() as f64 / f64::from(n)
        };
        // P(k) = (1/k) / H with H = sum of 1/k over 10..=200 (~3.05): each doubling
        // holds about ln 2 / H ~ 0.23 of the mass.
        let h: f64 = (10..=200).map(|k| 1.0 / f64::from(k)).sum();
        let expect = |lo: u32, hi: u32| (lo..=hi).map(|k| 1.0 / f64::from(k)).sum::<f64>() / h;
        for (lo, hi) in [(10, 19), (20, 39), (50, 99), (100, 199)] {
            let (got, want) = (share(u64::from(lo), u64::from(hi)), expect(lo, hi));
            assert!((got - want).abs() < 0.006, "{lo}..={hi}: {got} vs {want}");
        }
        let mean = draws.iter().sum::<u64>() as f64 / f64::from(n);
        assert!(
            (mean - law.mean(0.0)).abs() < 0.6,
            "{mean} vs {}",
            law.mean(0.0)
        );
        assert!((law.mean(0.0) - 62.64).abs() < 0.01, "{}", law.mean(0.0));
        assert_eq!(BurstSizes::Poisson.mean(40.0), 40.0);
    }

    #[test]
    fn step_and_quiet_period_scale_the_whole_load_by_day() {
        let spec = WorkloadSpec {
            step_day: 3,
            step_factor: 2.5,
            quiet_start_day: 5,
            quiet_end_day: 7,
            quiet_factor: 0.2,
            ..WorkloadSpec::diurnal(0)
        };
        let at = |day: f64| spec.load_factor(day * DAY_S);
        assert_eq!(
            [
                at(0.0),
                at(2.99),
                at(3.0),
                at(4.5),
                at(5.0),
                at(6.99),
                at(7.0)
            ],
            [1.0, 1.0, 2.5, 2.5, 0.5, 0.5, 2.5]
        );
        let plain = WorkloadSpec::diurnal(0);
        let t = 3.5 * DAY_S + 7_000.0;
        assert_eq!(spec.rate_at(t), 2.5 * plain.rate_at(t));
        // Bursts follow the load too: a quiet period at 0 has neither kind of arrival.
        let silent = WorkloadSpec {
            days: 14,
            bursts_per_day: 20.0,
            quiet_start_day: 7,
            quiet_end_day: 14,
            quiet_factor: 0.0,
            ..WorkloadSpec::diurnal(1)
        };
        let g = silent.generate_detailed().unwrap();
        assert!(g.burst_tasks > 1000, "{}", g.burst_tasks);
        let last = g.trace.tasks.last().unwrap().submit_ms;
        assert!(last < 7 * 86_400_000 + 120_000, "{last}");
    }
}
