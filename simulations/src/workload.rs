//! Generated workloads, so that tests, examples and the README need no external file.
//!
//! [`WorkloadSpec::generate`] draws a seeded non-homogeneous Poisson stream of task
//! arrivals whose rate follows a daily cycle (a triangle wave, quietest at 04:00 and
//! busiest at 14:00 UTC) and a weekly one (weekends at a fraction of weekdays), plus
//! bursts (a Poisson number of tasks within a short window, at Poisson instants), with
//! log-normal run times. Arrivals are drawn by thinning: candidates at the peak rate,
//! each kept with probability rate(t) / peak rate.
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
    /// A weekend day's rate as a fraction of a weekday's, in (0, 1].
    pub weekend_factor: f64,
    /// Mean number of bursts per day (0 for none).
    pub bursts_per_day: f64,
    /// Mean number of tasks in a burst.
    pub burst_mean_tasks: f64,
    /// A burst's tasks arrive uniformly within this many seconds.
    pub burst_window_s: f64,
    /// Median task run time in seconds.
    pub run_median_s: f64,
    /// Shape of the log-normal run time (standard deviation of its log).
    pub run_sigma: f64,
    /// Run times are capped here, in seconds.
    pub run_max_s: f64,
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
        }
    }

    /// The workload named `name` (only `diurnal` so far).
    pub fn named(name: &str, seed: u64) -> Option<Self> {
        (name == "diurnal").then(|| Self::diurnal(seed))
    }

    /// Checks every parameter, naming the first one out of range.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let checks: [(&'static str, f64, bool, &'static str); 9] = [
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
        base * self.daily_factor(t_s) * self.weekly_factor(t_s)
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
        self.arrivals_per_hour / 3600.0 * daily_max * weekly_max
    }

    /// Draws the trace.
    pub fn generate(&self) -> Result<Trace, WorkloadError> {
        self.validate()?;
        let mut root = SimRng::new(self.seed);
        let mut arrivals_rng = root.fork(1);
        let mut burst_rng = root.fork(2);
        let mut run_rng = root.fork(3);
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
        if self.bursts_per_day > 0.0 && self.burst_mean_tasks > 0.0 {
            let mut t = 0.0;
            loop {
                t += burst_rng.exponential(DAY_S / self.bursts_per_day);
                if t >= end_s {
                    break;
                }
                for _ in 0..burst_rng.poisson(self.burst_mean_tasks) {
                    let at = t + burst_rng.uniform() * self.burst_window_s;
                    if at < end_s {
                        submits.push(at);
                    }
                }
            }
        }
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
        Ok(Trace::from_tasks(WORKLOAD_ORIGIN, tasks))
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
}
