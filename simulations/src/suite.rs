//! The workload suite: generated, seeded workloads of different shapes, each replayed
//! in several cloud settings, so that no single trace decides whether a policy is good.
//!
//! A **shape** ([`Shape`], [`SHAPES`]) is a [`WorkloadSpec`]: a pool size, a run-time
//! mix, an arrival pattern. A **setting** ([`Setting`], [`SETTINGS`]) is the pool and
//! the simulated cloud: instance size, boot-time distribution, interruptions. A
//! **case** ([`Case`], [`suite_cases`]) is one shape in one setting. Every case
//! replays with either policy; the seed fixes the workload and every draw of the cloud.
//!
//! [`Scale::Full`] is the documented suite (`docs/workloads.md`): four weeks per shape
//! (ten weeks for `quiet-month`), as `capstan simulate --workload NAME` generates it.
//! [`Scale::Small`] is a short version for tests: 10 to 15 days (a week of history and
//! some days after it), and the `large` shape at a third of its rate. Every small case
//! with both policies replays in 15-25 s of a debug build on one core (two thirds of
//! it `large`; `every_small_case_runs_with_both_policies` below prints the time).
//!
//! Each setting is reachable from the CLI: `base` is `capstan simulate`'s default,
//! `4-slot` adds `--slots 4`, and the cloud models of `lognormal-boot` and `spot` ship
//! as `examples/cloud/*.yaml` (a test checks the files parse to the very models built
//! here). [`Case::command`] prints the command line that replays a case.

use capstan_core::ScalingPolicy;

use crate::cloud::{BootTime, CloudModel, OfferingModel};
use crate::engine::{SimConfig, default_pool};
use crate::trace::Trace;
use crate::workload::{BurstSizes, WorkloadError, WorkloadSpec};

/// Which version of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The documented suite: four weeks per shape (`quiet-month`: ten).
    Full,
    /// The version for tests: 10 to 15 days, `large` at a third of its rate.
    Small,
}

/// A workload shape of the suite.
#[derive(Debug)]
pub struct Shape {
    /// Its name, as `capstan simulate --workload` takes it.
    pub name: &'static str,
    /// What it models and why it is in the suite, in a sentence.
    pub doc: &'static str,
    /// The full-size workload for a seed.
    pub build: fn(u64) -> WorkloadSpec,
    /// Turns the full-size workload into the small one.
    pub shrink: fn(&mut WorkloadSpec),
}

impl Shape {
    /// The workload of this shape at `scale` for `seed`.
    pub fn spec(&self, seed: u64, scale: Scale) -> WorkloadSpec {
        let mut spec = (self.build)(seed);
        if scale == Scale::Small {
            (self.shrink)(&mut spec);
        }
        spec
    }
}

/// A pool and cloud setting of the suite.
#[derive(Debug)]
pub struct Setting {
    /// Its name.
    pub name: &'static str,
    /// What it changes and why, in a sentence.
    pub doc: &'static str,
    /// The `capstan simulate` arguments that give this setting, word by word (paths
    /// relative to the repository root).
    pub cli_args: &'static [&'static str],
    /// The simulation config for a policy and seed.
    pub config: fn(ScalingPolicy, u64) -> SimConfig,
}

/// One shape in one setting.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// The workload shape.
    pub shape: &'static Shape,
    /// The pool and cloud.
    pub setting: &'static Setting,
    /// Full or small.
    pub scale: Scale,
}

impl Case {
    /// `shape/setting`, e.g. `compound-bursts/spot`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.shape.name, self.setting.name)
    }

    /// The workload for `seed`.
    pub fn workload(&self, seed: u64) -> WorkloadSpec {
        self.shape.spec(seed, self.scale)
    }

    /// The generated trace for `seed`.
    pub fn trace(&self, seed: u64) -> Result<Trace, WorkloadError> {
        self.workload(seed).generate()
    }

    /// The simulation config for `policy` and `seed`.
    pub fn config(&self, policy: ScalingPolicy, seed: u64) -> SimConfig {
        (self.setting.config)(policy, seed)
    }

    /// The `capstan simulate` command that replays this case with `seed` (add
    /// `--policy` or `--compare`), or `None` when the CLI cannot generate its workload
    /// (a small case that differs from the full shape by more than its length).
    pub fn command(&self, seed: u64) -> Option<String> {
        let spec = self.workload(seed);
        let full = self.shape.spec(seed, Scale::Full);
        let mut words = vec![
            "capstan simulate --workload".to_string(),
            self.shape.name.to_string(),
            format!("--seed {seed}"),
        ];
        // (The setting's flags are appended below.)
        if spec.days != full.days {
            let mut resized = full;
            resized.days = spec.days;
            if resized != spec {
                return None;
            }
            words.push(format!("--days {}", spec.days));
        }
        words.extend(self.setting.cli_args.iter().map(|s| s.to_string()));
        Some(words.join(" "))
    }
}

/// Every shape, in the order of the documentation.
pub const SHAPES: [Shape; 10] = [
    Shape {
        name: "small",
        doc: "a pool of a few machines (~5 tasks/h): every launch counts and the history is thin",
        build: small,
        shrink: ten_days,
    },
    Shape {
        name: "medium",
        doc: "a team's pool (~30 tasks/h) with a mild cycle and few bursts",
        build: medium,
        shrink: ten_days,
    },
    Shape {
        name: "large",
        doc: "an organisation's batch pool (~3,000 tasks/h): hundreds of instances, little relative noise",
        build: large,
        shrink: large_small,
    },
    Shape {
        name: "short-tasks",
        doc: "tasks of ~10 s, far shorter than a boot: capacity that arrives late is wasted",
        build: short_tasks,
        shrink: ten_days,
    },
    Shape {
        name: "heavy-tail",
        doc: "run times with a heavy tail (p99 ~100x the median): a few tasks hold instances for hours",
        build: heavy_tail,
        shrink: ten_days,
    },
    Shape {
        name: "compound-bursts",
        doc: "clusters of 10-200 tasks within a minute, almost half the load: the bursts are the demand",
        build: compound_bursts,
        shrink: ten_days,
    },
    Shape {
        name: "weekly",
        doc: "a strong weekly cycle (weekends at 10%) on a 6x daily one: the season is the signal",
        build: weekly,
        shrink: two_weeks,
    },
    Shape {
        name: "step-change",
        doc: "the load triples from day 8 on: the history stops describing the future",
        build: step_change,
        shrink: twelve_days,
    },
    Shape {
        name: "quiet-month",
        doc: "a month at 10% of the load between busy weeks: the history of the quiet month misleads when the load returns",
        build: quiet_month,
        shrink: quiet_month_small,
    },
    Shape {
        name: "diurnal",
        doc: "the original generated workload: CI-like load, 4x daily and 0.4x weekend cycles, two bursts of ~40 a day",
        build: WorkloadSpec::diurnal,
        shrink: ten_days,
    },
];

/// Every setting, in the order of the documentation.
pub const SETTINGS: [Setting; 4] = [
    Setting {
        name: "base",
        doc: "1 slot per instance, constant 120 s boot: `capstan simulate`'s default",
        cli_args: &[],
        config: base,
    },
    Setting {
        name: "4-slot",
        doc: "instances of 4 slots: a launch buys capacity for several tasks, an idle slot costs a quarter",
        cli_args: &["--slots", "4"],
        config: four_slot,
    },
    Setting {
        name: "lognormal-boot",
        doc: "boot time log-normal with median 120 s and sigma 0.5 (p95 ~270 s): the lead time is uncertain",
        cli_args: &["--cloud", "examples/cloud/lognormal-boot.yaml"],
        config: lognormal_boot,
    },
    Setting {
        name: "spot",
        doc: "spot interruptions at 0.1 per instance-hour (a mean life of 10 h): capacity disappears and tasks restart",
        cli_args: &["--cloud", "examples/cloud/spot.yaml"],
        config: spot,
    },
];

/// The shape named `name`.
pub fn shape(name: &str) -> Option<&'static Shape> {
    SHAPES.iter().find(|s| s.name == name)
}

/// The names of the shapes, for `--workload`.
pub fn shape_names() -> impl Iterator<Item = &'static str> {
    SHAPES.iter().map(|s| s.name)
}

/// The setting named `name`.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

/// Every shape in every setting: 40 cases, shape by shape.
pub fn suite_cases(scale: Scale) -> Vec<Case> {
    SHAPES
        .iter()
        .flat_map(|shape| {
            SETTINGS.iter().map(move |setting| Case {
                shape,
                setting,
                scale,
            })
        })
        .collect()
}

// ---- Shapes ----

/// `small`: about 5 tasks an hour (a 3x daily and 0.5x weekend cycle, a burst of ~8
/// tasks every other day), run times of 10 minutes median. Models a pool that a few
/// machines serve. In the suite because a policy tuned on thousands of tasks can fail
/// here: the predictor sees a handful of arrivals per interval, Poisson noise is as
/// large as the signal, and each needless launch is a large share of the cost.
pub fn small(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        arrivals_per_hour: 5.0,
        daily_peak_to_trough: 3.0,
        weekend_factor: 0.5,
        bursts_per_day: 0.5,
        burst_mean_tasks: 8.0,
        burst_window_s: 120.0,
        run_median_s: 600.0,
        run_sigma: 1.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `medium`: about 30 tasks an hour with a mild cycle (2.5x daily, 0.6x weekend), one
/// burst of ~20 tasks a day spread over 5 minutes, run times of 10 minutes median with
/// a wider spread (sigma 1.2, capped at 12 h). Models a team's build or batch pool.
/// In the suite as the middle of the size range with a weak season, unlike `diurnal`'s
/// strong one: the forecast's seasonal memory helps less.
pub fn medium(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        arrivals_per_hour: 30.0,
        daily_peak_to_trough: 2.5,
        weekend_factor: 0.6,
        bursts_per_day: 1.0,
        burst_mean_tasks: 20.0,
        burst_window_s: 300.0,
        run_median_s: 600.0,
        run_sigma: 1.2,
        run_max_s: 12.0 * 3600.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `large`: about 3,000 tasks an hour (3x daily, 0.5x weekend), four bursts of ~300
/// tasks a day, run times of 5 minutes median: hundreds of busy instances at the peak.
/// Models an organisation's shared batch pool. In the suite because relative noise is
/// small there, so the cost of a policy is its systematic over- or under-provisioning,
/// and because per-tick work grows with the pool (the scale the engine must handle).
pub fn large(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        arrivals_per_hour: 3000.0,
        daily_peak_to_trough: 3.0,
        weekend_factor: 0.5,
        bursts_per_day: 4.0,
        burst_mean_tasks: 300.0,
        burst_window_s: 300.0,
        run_median_s: 300.0,
        run_sigma: 1.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `short-tasks`: about 130 tasks an hour (the `diurnal` cycles, two bursts of ~40 a
/// day) that run for a median of 10 s (sigma 0.8, so 95% are under 40 s). Models
/// tests, lint jobs, small functions. In the suite because a task is far shorter than
/// the 120 s boot: an instance launched for a queued task arrives after an existing
/// one could have run it, so waiting is cheap and launching is expensive, and the
/// idle timeout dominates the cost. (On such traces forecast's cost floor sits highest.)
pub fn short_tasks(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        arrivals_per_hour: 130.0,
        run_median_s: 10.0,
        run_sigma: 0.8,
        run_max_s: 3600.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `heavy-tail`: the `diurnal` arrivals with run times log-normal of median 2 minutes
/// and sigma 2 (p99 about 100x the median, mean about 7x), capped at 24 h. Models
/// HPC-like mixes where most jobs are short and a few run for hours (SDSC's run times
/// look like this). In the suite because the mean run time misleads: demand in slots
/// is dominated by rare long tasks, and capacity freed by a long task arrives at
/// unpredictable times.
pub fn heavy_tail(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        run_median_s: 120.0,
        run_sigma: 2.0,
        run_max_s: 24.0 * 3600.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `compound-bursts`: 20 tasks an hour of regular arrivals (2x daily, 0.5x weekend)
/// plus six clusters a day of 10 to 200 tasks each (discrete log-uniform sizes, mean
/// ~63) arriving within 60 s: about 44% of all tasks come in clusters. Models
/// fan-out: a merge triggering a test matrix, a user submitting a parameter sweep.
/// In the suite because the bursts are the demand: a model that spreads their variance
/// over every interval over-provisions the quiet hours and still misses the clusters.
pub fn compound_bursts(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        arrivals_per_hour: 20.0,
        daily_peak_to_trough: 2.0,
        weekend_factor: 0.5,
        bursts_per_day: 6.0,
        burst_sizes: BurstSizes::LogUniform { min: 10, max: 200 },
        burst_window_s: 60.0,
        run_median_s: 300.0,
        run_sigma: 1.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `weekly`: about 30 tasks an hour with a 6x daily cycle and weekends at 10% of a
/// weekday, one burst of ~30 a day. Models an office-hours workload (interactive
/// jobs, CI of a single-time-zone team). In the suite because the season is the
/// signal: a forecast that knows last week beats one that knows the last hour, and
/// Monday morning follows two near-empty days.
pub fn weekly(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        arrivals_per_hour: 30.0,
        daily_peak_to_trough: 6.0,
        weekend_factor: 0.1,
        bursts_per_day: 1.0,
        burst_mean_tasks: 30.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `step-change`: `diurnal`, whose whole load (arrivals and bursts) triples from day 8
/// (a Tuesday) on. Models a team joining the pool, a new pipeline. In the suite
/// because after the step the history understates the load: a week-old season
/// predicts a third of the demand until the forecast adapts.
pub fn step_change(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        step_day: 8,
        step_factor: 3.0,
        ..WorkloadSpec::diurnal(seed)
    }
}

/// `quiet-month`: `diurnal` for ten weeks and two days (72 days) with days 28 to 57
/// (30 days) at 10% of the load: four busy weeks, a quiet month (a holiday, a
/// migration), and two busy weeks after. In the suite because when the load returns
/// the recent history (and last week's season) says "quiet": a forecast that trusts
/// it under-provisions, and while it is quiet, a floor learned from the busy weeks
/// wastes money.
pub fn quiet_month(seed: u64) -> WorkloadSpec {
    WorkloadSpec {
        days: 72,
        quiet_start_day: 28,
        quiet_end_day: 58,
        quiet_factor: 0.1,
        ..WorkloadSpec::diurnal(seed)
    }
}

fn ten_days(spec: &mut WorkloadSpec) {
    spec.days = 10;
}

fn twelve_days(spec: &mut WorkloadSpec) {
    spec.days = 12;
}

fn two_weeks(spec: &mut WorkloadSpec) {
    spec.days = 14;
}

/// Ten days at a third of the rate and burst size (~1,000 tasks an hour), so the
/// small suite stays quick in a debug build.
fn large_small(spec: &mut WorkloadSpec) {
    spec.days = 10;
    spec.arrivals_per_hour /= 3.0;
    spec.burst_mean_tasks /= 3.0;
}

/// 15 days: a week of history, a quiet period of four days (a Monday to a Thursday)
/// and four busy days after.
fn quiet_month_small(spec: &mut WorkloadSpec) {
    spec.days = 15;
    spec.quiet_start_day = 7;
    spec.quiet_end_day = 11;
}

// ---- Settings ----

/// Interruptions per instance-hour of the `spot` setting: a mean instance life of
/// 10 h. Harsher than most spot pools see (AWS's Spot Instance Advisor puts most
/// instance types below 5% a month), so interruptions happen hundreds of times within
/// a few weeks of simulated time. Not harsher still: at 0.25 an hour (a 4 h life) the
/// `heavy-tail` shape's multi-hour tasks restart so often that both policies spend
/// about 12x the oracle, which measures the restarts, not the policy.
pub const SPOT_INTERRUPTIONS_PER_HOUR: f64 = 0.1;

/// Every setting's pool is `capstan simulate`'s default for the policy: `reactive`
/// with its classic 600 s idle timeout, `forecast` with the one capstan chooses from
/// the boot time and the idle gaps (the spec sets none).
fn config(policy: ScalingPolicy, seed: u64, slots: u32, cloud: CloudModel) -> SimConfig {
    let default = SimConfig::default_setting(policy, seed);
    SimConfig {
        spec: default_pool(policy, slots, default.spec.scaling.idle_timeout_s),
        cloud,
        ..default
    }
}

fn base(policy: ScalingPolicy, seed: u64) -> SimConfig {
    config(policy, seed, 1, CloudModel::default())
}

fn four_slot(policy: ScalingPolicy, seed: u64) -> SimConfig {
    config(policy, seed, 4, CloudModel::default())
}

fn lognormal_boot(policy: ScalingPolicy, seed: u64) -> SimConfig {
    config(policy, seed, 1, lognormal_boot_cloud())
}

fn spot(policy: ScalingPolicy, seed: u64) -> SimConfig {
    config(policy, seed, 1, spot_cloud())
}

/// The cloud of the `lognormal-boot` setting (`examples/cloud/lognormal-boot.yaml`):
/// boot log-normal with median 120 s, sigma 0.5, capped at 1,200 s.
pub fn lognormal_boot_cloud() -> CloudModel {
    CloudModel {
        defaults: OfferingModel {
            boot: BootTime::LogNormal {
                median_s: 120.0,
                sigma: 0.5,
                max_s: 1200.0,
            },
            ..OfferingModel::default()
        },
        ..CloudModel::default()
    }
}

/// The cloud of the `spot` setting (`examples/cloud/spot.yaml`): the default pool's
/// launch config interrupted [`SPOT_INTERRUPTIONS_PER_HOUR`] times per instance-hour
/// (exponential time to interruption).
pub fn spot_cloud() -> CloudModel {
    let id = default_pool(ScalingPolicy::Reactive, 1, None).launch_configs[0]
        .id
        .clone();
    let mut cloud = CloudModel::default();
    cloud.overrides.insert(
        id,
        OfferingModel {
            interruptions_per_hour: SPOT_INTERRUPTIONS_PER_HOUR,
            ..OfferingModel::default()
        },
    );
    cloud
}

// ---- Measurements ----

/// What a generated trace looks like, for the table in `docs/workloads.md` and the
/// tests that hold the shapes to their descriptions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceStats {
    /// Tasks in the trace.
    pub tasks: u64,
    /// Length of the workload in days.
    pub days: u32,
    /// Tasks per hour over the whole length.
    pub mean_per_hour: f64,
    /// Tasks submitted in the busiest clock hour.
    pub peak_hour: u64,
    /// Share of the tasks that came from bursts.
    pub burst_share: f64,
    /// Median run time, seconds (nearest rank).
    pub run_p50_s: f64,
    /// 99th percentile of run time, seconds (nearest rank).
    pub run_p99_s: f64,
}

/// Measures a generated workload of `days` days.
pub fn measure(generated: &crate::workload::Generated, days: u32) -> TraceStats {
    let tasks = &generated.trace.tasks;
    let hours = days as usize * 24;
    let mut per_hour = vec![0u64; hours + 1];
    for t in tasks {
        let h = (t.submit_ms / 3_600_000) as usize;
        per_hour[h.min(hours)] += 1;
    }
    let mut runs: Vec<i64> = tasks.iter().map(|t| t.run_ms).collect();
    runs.sort_unstable();
    let rank = |q: f64| -> f64 {
        if runs.is_empty() {
            return 0.0;
        }
        let i = ((q * runs.len() as f64).ceil() as usize).clamp(1, runs.len()) - 1;
        runs[i] as f64 / 1000.0
    };
    let n = tasks.len() as u64;
    TraceStats {
        tasks: n,
        days,
        mean_per_hour: n as f64 / (f64::from(days) * 24.0),
        peak_hour: per_hour.iter().copied().max().unwrap_or(0),
        burst_share: if n == 0 {
            0.0
        } else {
            generated.burst_tasks as f64 / n as f64
        },
        run_p50_s: rank(0.5),
        run_p99_s: rank(0.99),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::engine::simulate;
    use crate::workload::Generated;

    const DAY_MS: i64 = 86_400_000;

    fn generated(name: &str, scale: Scale, seed: u64) -> (WorkloadSpec, Generated) {
        let spec = shape(name).expect("a shape").spec(seed, scale);
        let g = spec.generate_detailed().expect("valid spec");
        (spec, g)
    }

    /// Tasks submitted on each day.
    fn per_day(g: &Generated, days: u32) -> Vec<f64> {
        let mut v = vec![0.0; days as usize];
        for t in &g.trace.tasks {
            v[(t.submit_ms / DAY_MS) as usize] += 1.0;
        }
        v
    }

    fn sum(v: &[f64]) -> f64 {
        v.iter().sum()
    }

    #[test]
    fn the_suite_is_every_shape_in_every_setting_with_unique_names() {
        let cases = suite_cases(Scale::Full);
        assert_eq!(cases.len(), SHAPES.len() * SETTINGS.len());
        let names: BTreeSet<String> = cases.iter().map(Case::name).collect();
        assert_eq!(names.len(), cases.len());
        assert!(names.contains("compound-bursts/spot"), "{names:?}");
        let shapes: Vec<&str> = shape_names().collect();
        assert_eq!(
            shapes,
            [
                "small",
                "medium",
                "large",
                "short-tasks",
                "heavy-tail",
                "compound-bursts",
                "weekly",
                "step-change",
                "quiet-month",
                "diurnal"
            ]
        );
        // `diurnal` in the suite is the workload it always was.
        assert_eq!(
            shape("diurnal").unwrap().spec(4, Scale::Full),
            WorkloadSpec::diurnal(4)
        );
        assert_eq!(WorkloadSpec::named("step-change", 3), Some(step_change(3)));
        assert!(WorkloadSpec::named("nope", 3).is_none());
    }

    #[test]
    fn every_shape_validates_at_both_scales_and_lasts_as_documented() {
        for s in &SHAPES {
            let full = s.spec(1, Scale::Full);
            let small = s.spec(1, Scale::Small);
            full.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            small
                .validate()
                .unwrap_or_else(|e| panic!("{} small: {e}", s.name));
            let want = if s.name == "quiet-month" { 72 } else { 28 };
            assert_eq!(full.days, want, "{}", s.name);
            assert!(
                (10..=15).contains(&small.days),
                "{}: {}",
                s.name,
                small.days
            );
        }
    }

    #[test]
    fn each_shape_is_deterministic_per_seed() {
        for s in &SHAPES {
            let a = s.spec(5, Scale::Small).generate().unwrap();
            let b = s.spec(5, Scale::Small).generate().unwrap();
            let c = s.spec(6, Scale::Small).generate().unwrap();
            assert!(!a.tasks.is_empty(), "{}", s.name);
            assert_eq!(a, b, "{}: same seed, same trace", s.name);
            assert_ne!(a.tasks, c.tasks, "{}: another seed, another trace", s.name);
        }
    }

    #[test]
    fn rates_match_the_documented_sizes() {
        // (shape, documented tasks per hour including bursts, relative tolerance).
        let cases = [
            ("small", 5.0, 0.15),
            ("medium", 30.0, 0.1),
            ("large", 3000.0, 0.05),
            ("short-tasks", 130.0, 0.1),
            ("diurnal", 30.0, 0.15),
        ];
        for (name, per_hour, tol) in cases {
            let (spec, g) = generated(name, Scale::Full, 2);
            let st = measure(&g, spec.days);
            assert!(
                (st.mean_per_hour - per_hour).abs() / per_hour < tol,
                "{name}: {} tasks/h, documented ~{per_hour}",
                st.mean_per_hour
            );
        }
        // Every shape, both scales: the count is the spec's expected volume (its rate
        // integrated over its days plus its bursts) within sampling noise. (A 10-day
        // trace starting on a Monday has more weekdays than the weekly mean.)
        for s in &SHAPES {
            for scale in [Scale::Full, Scale::Small] {
                let spec = s.spec(2, scale);
                let g = spec.generate_detailed().unwrap();
                let mut expected = 0.0;
                for minute in 0..spec.days * 24 * 60 {
                    let t = f64::from(minute) * 60.0 + 30.0;
                    expected += 60.0 * spec.rate_at(t)
                        + spec.bursts_per_day / 1440.0
                            * spec.load_factor(t)
                            * spec.burst_sizes.mean(spec.burst_mean_tasks);
                }
                let n = g.trace.tasks.len() as f64;
                assert!(
                    (n - expected).abs() < 0.05 * expected + 3.0 * expected.sqrt(),
                    "{} {scale:?}: {n} tasks, expected {expected}",
                    s.name
                );
            }
        }
        // The small suite's `large` is a third of the full one.
        let small = shape("large").unwrap().spec(2, Scale::Small);
        assert_eq!(small.arrivals_per_hour, 1000.0);
    }

    #[test]
    fn compound_bursts_come_in_clusters_of_10_to_200() {
        let (spec, g) = generated("compound-bursts", Scale::Full, 3);
        let sizes: Vec<u64> = g.bursts.iter().map(|b| b.1).collect();
        // Six a day for 28 days, give or take Poisson noise.
        assert!((140..=200).contains(&sizes.len()), "{}", sizes.len());
        assert!(sizes.iter().all(|s| (10..=200).contains(s)), "{sizes:?}");
        // Heavy-tailed: both ends of the range occur, and the median is near the
        // log-uniform law's (sqrt(10 * 200) ~ 45), far below the midpoint 105.
        let mut sorted = sizes.clone();
        sorted.sort_unstable();
        assert!(
            sorted[0] <= 13 && sorted[sorted.len() - 1] >= 170,
            "{sorted:?}"
        );
        let median = sorted[sorted.len() / 2];
        assert!((35..=60).contains(&median), "median {median}");
        // In the trace: the tasks in each burst's minute are the cluster (plus the odd
        // regular arrival or overlapping burst).
        let submits: Vec<i64> = g.trace.tasks.iter().map(|t| t.submit_ms).collect();
        let counts: Vec<usize> = g
            .bursts
            .iter()
            .map(|&(t, _)| {
                let from = (t.floor() as i64) * 1000;
                let to = ((t + spec.burst_window_s).floor() as i64 + 1) * 1000;
                submits.partition_point(|&s| s < to) - submits.partition_point(|&s| s < from)
            })
            .collect();
        let in_range = counts.iter().filter(|&&c| (10..=205).contains(&c)).count();
        assert!(
            in_range as f64 >= 0.95 * counts.len() as f64,
            "{in_range} of {}: {counts:?}",
            counts.len()
        );
        let st = measure(&g, spec.days);
        assert!((0.38..0.5).contains(&st.burst_share), "{st:?}");
    }

    #[test]
    fn step_change_triples_the_load() {
        let (spec, g) = generated("step-change", Scale::Full, 4);
        let d = per_day(&g, spec.days);
        // Same weekdays on both sides: days 1..8 (Tue..Mon) before, 15..22 after.
        let ratio = sum(&d[15..22]) / sum(&d[1..8]);
        assert!((ratio - 3.0).abs() < 0.3, "{ratio}: {d:?}");
        // The day before the step is not yet stepped up, the step day is.
        assert!(d[8] > 2.0 * d[1], "{d:?}");
        // The small version keeps its step on day 8 with four days after it.
        let (small, g) = generated("step-change", Scale::Small, 4);
        assert_eq!((small.days, small.step_day), (12, 8));
        let d = per_day(&g, small.days);
        let ratio = sum(&d[8..12]) / sum(&d[1..5]);
        assert!((ratio - 3.0).abs() < 0.45, "{ratio}: {d:?}");
    }

    #[test]
    fn quiet_month_is_a_tenth_of_the_load_between_busy_weeks() {
        let (spec, g) = generated("quiet-month", Scale::Full, 5);
        let d = per_day(&g, spec.days);
        // Four whole weeks before (days 0..28), four whole weeks inside (28..56), and
        // two after (58..72, a Wednesday-to-Tuesday fortnight: same weekday mix).
        let before = sum(&d[..28]) / 4.0;
        let quiet = sum(&d[28..56]) / 4.0;
        let after = sum(&d[58..72]) / 2.0;
        assert!((quiet / before - 0.1).abs() < 0.02, "{quiet} / {before}");
        assert!((after / before - 1.0).abs() < 0.1, "{after} / {before}");
        assert!(d[57] < 0.3 * d[58 + 7 - 1], "{d:?}");
        let (small, g) = generated("quiet-month", Scale::Small, 5);
        let d = per_day(&g, small.days);
        // Monday..Thursday quiet (days 7..11) against the first week's (0..4).
        let ratio = sum(&d[7..11]) / sum(&d[..4]);
        assert!((ratio - 0.1).abs() < 0.05, "{ratio}: {d:?}");
        assert!(sum(&d[11..15]) > 5.0 * sum(&d[7..11]), "{d:?}");
    }

    #[test]
    fn run_time_shapes_match_their_descriptions() {
        let (spec, g) = generated("short-tasks", Scale::Full, 6);
        let st = measure(&g, spec.days);
        assert!((9.0..=11.0).contains(&st.run_p50_s), "{st:?}");
        assert!(st.run_p99_s < 120.0, "{st:?}");
        let (spec, g) = generated("heavy-tail", Scale::Full, 6);
        let st = measure(&g, spec.days);
        // Log-normal sigma 2: p99 / p50 = exp(2 * 2.326) ~ 105.
        assert!((110.0..=130.0).contains(&st.run_p50_s), "{st:?}");
        assert!(st.run_p99_s / st.run_p50_s > 70.0, "{st:?}");
        let (_, g) = generated("diurnal", Scale::Full, 6);
        let d = measure(&g, 28);
        assert!(
            d.run_p99_s / d.run_p50_s < 15.0,
            "diurnal is not heavy-tailed: {d:?}"
        );
    }

    #[test]
    fn weekly_has_empty_weekends_and_a_steep_day() {
        let (spec, g) = generated("weekly", Scale::Full, 7);
        let d = per_day(&g, spec.days);
        let (mut weekday, mut weekend) = (0.0, 0.0);
        for (i, n) in d.iter().enumerate() {
            if i % 7 >= 5 {
                weekend += n / 8.0;
            } else {
                weekday += n / 20.0;
            }
        }
        // Bursts (one of ~30 a day, every day) lift the weekend above 10%.
        assert!(
            (0.1..0.2).contains(&(weekend / weekday)),
            "{weekend} / {weekday}"
        );
        let mut by_hour = [0.0f64; 24];
        for t in &g.trace.tasks {
            by_hour[((t.submit_ms / 3_600_000) % 24) as usize] += 1.0;
        }
        let ratio = by_hour[14] / by_hour[4];
        assert!((4.0..8.0).contains(&ratio), "{ratio}: {by_hour:?}");
    }

    #[test]
    fn settings_yaml_files_are_the_settings() {
        let yaml = |name: &str| {
            let path = format!(
                "{}/../examples/cloud/{name}.yaml",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            CloudModel::from_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        assert_eq!(yaml("lognormal-boot"), lognormal_boot_cloud());
        assert_eq!(yaml("spot"), spot_cloud());
        assert_ne!(lognormal_boot_cloud(), CloudModel::default());
        // Each setting's config is the CLI's: default pool, the named cloud.
        let p = ScalingPolicy::Forecast;
        let cloud_of = |name: &str| (setting(name).unwrap().config)(p, 9).cloud;
        assert_eq!(cloud_of("base"), CloudModel::default());
        assert_eq!(cloud_of("lognormal-boot"), yaml("lognormal-boot"));
        assert_eq!(cloud_of("spot"), yaml("spot"));
        let four = (setting("4-slot").unwrap().config)(p, 9);
        assert_eq!(four.spec.launch_configs[0].capacity, 4);
        assert_eq!(four.spec.scaling.policy, p);
        assert_eq!(four.seed, 9);
        let resolved = spot_cloud().resolve(&four.spec).unwrap();
        assert_eq!(
            resolved[0].interruptions_per_hour,
            SPOT_INTERRUPTIONS_PER_HOUR
        );
    }

    #[test]
    fn commands_reproduce_the_cases_the_cli_can_generate() {
        let find = |name: &str, scale| {
            suite_cases(scale)
                .into_iter()
                .find(|c| c.name() == name)
                .unwrap()
        };
        assert_eq!(
            find("compound-bursts/spot", Scale::Full)
                .command(3)
                .as_deref(),
            Some(
                "capstan simulate --workload compound-bursts --seed 3 --cloud examples/cloud/spot.yaml"
            )
        );
        assert_eq!(
            find("step-change/4-slot", Scale::Small)
                .command(1)
                .as_deref(),
            Some("capstan simulate --workload step-change --seed 1 --days 12 --slots 4")
        );
        // The small `large` runs at a third of the rate, the small `quiet-month` has its
        // quiet days moved: no flag gives them.
        assert_eq!(find("large/base", Scale::Small).command(1), None);
        assert_eq!(find("quiet-month/base", Scale::Small).command(1), None);
    }

    #[test]
    fn every_small_case_runs_with_both_policies() {
        let started = std::time::Instant::now();
        for case in suite_cases(Scale::Small) {
            let trace = case.trace(1).unwrap();
            for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
                let r = simulate(&trace, &case.config(policy, 1), &mut |_| {})
                    .unwrap_or_else(|e| panic!("{}: {e}", case.name()))
                    .report;
                let name = format!("{} {}", case.name(), policy.as_str());
                assert_eq!(r.policy, policy, "{name}");
                assert_eq!(r.tasks, trace.tasks.len() as u64, "{name}");
                assert_eq!(r.unfinished, 0, "{name}");
                assert!(
                    r.ratio_to_oracle.is_finite() && r.ratio_to_oracle > 0.5,
                    "{name}: {r:?}"
                );
                assert!(
                    r.wait_s.mean >= 0.0 && r.wait_s.p95 <= r.wait_s.max,
                    "{name}: {r:?}"
                );
                assert!(r.utilization > 0.0 && r.utilization <= 1.0, "{name}: {r:?}");
                assert_eq!(
                    r.interruptions > 0,
                    case.setting.name == "spot",
                    "{name}: {} interruptions",
                    r.interruptions
                );
            }
        }
        eprintln!(
            "small suite, both policies: {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}
