//! Issue 11's claims about the forecast policy, checked on what docs/policy.md reports:
//! every workload of the suite at full size in the base setting, seed 1, and the SDSC
//! trace when it is at hand (`CAPSTAN_TRACE`, else `../shared/traces/...` beside the
//! repository; skipped with a note otherwise).
//!
//! - The service level governs: lowering it never raises the cost, at 0 it costs no
//!   more than `reactive`, and with `reactive`'s idle timeout it *is* `reactive`, run
//!   for run — in all four settings of the suite (base, log-normal boot and spot
//!   strictly; with 4-slot instances, where a level's spare rounds to whole
//!   instances, a level may cost at most [`ROUNDING_SWAP`] less than the one below).
//! - Forecast's frontier dominates reactive's: for every point of the default reactive
//!   grid there is a point of the default forecast grid no dearer, with a lower mean
//!   wait and a p95 no higher — on every workload. (`NOT_DOMINATED` lists the
//!   exceptions, none now; the test fails if a listed one becomes dominated, so the
//!   list stays true.)
//!
//! Full-size replays take minutes unoptimised, so these tests are ignored by a plain
//! `cargo test`; `scripts/test.sh` runs them with
//! `cargo test --release -p simulations --test suite_claims -- --ignored` (about two
//! minutes on 2 cores).

use capstan_core::ScalingPolicy;
use simulations::engine::SimConfig;
use simulations::frontier::{
    GridChoice, Knobs, SweepPoint, dominates_reactive, run_sweep, sweep_grid,
};
use simulations::suite::{SHAPES, Scale, suite_cases};
use simulations::trace::{ReadOptions, Trace, read_trace, sdsc_trace_path};

/// Workloads on which forecast's frontier does not dominate reactive's: none since
/// tasks shorter than a boot get held slots (`short-tasks` was the one before).
const NOT_DOMINATED: [&str; 0] = [];

/// With 4-slot instances, how much cheaper than the level below a level may be: the
/// largest swap measured at seed 1 over all 17 levels is 0.91 % (`heavy-tail`, 0 and
/// 0.3), at the unseen seeds 21 and 22 0.78 %, at the development seed 7 1.01 %
/// (docs/policy.md).
const ROUNDING_SWAP: f64 = 0.01;

/// Every workload checked: the suite's shapes (full size, seed 1) in `settings`, and
/// SDSC in the default setting when the trace is at hand. Base-setting cases are
/// named by their shape, the others `shape/setting`.
fn workloads(settings: &[&str]) -> Vec<(String, Trace, SimConfig)> {
    let mut out: Vec<(String, Trace, SimConfig)> = suite_cases(Scale::Full)
        .into_iter()
        .filter(|c| settings.contains(&c.setting.name))
        .map(|c| {
            let trace = c.trace(1).expect("the suite generates");
            let name = if c.setting.name == "base" {
                c.shape.name.to_owned()
            } else {
                c.name()
            };
            (name, trace, c.config(ScalingPolicy::Forecast, 1))
        })
        .collect();
    assert_eq!(out.len(), SHAPES.len() * settings.len());
    let path = sdsc_trace_path();
    if path.exists() {
        let trace = read_trace(&path, ReadOptions::default()).expect("the trace reads");
        out.push((
            "sdsc".into(),
            trace,
            SimConfig::default_setting(ScalingPolicy::Forecast, 1),
        ));
    } else {
        eprintln!(
            "SDSC not checked: no trace at {} (set CAPSTAN_TRACE)",
            path.display()
        );
    }
    out
}

fn sweep(trace: &Trace, config: &SimConfig, grid: &[Knobs], idle: Option<u64>) -> Vec<SweepPoint> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut config = config.clone();
    config.spec.scaling.idle_timeout_s = idle;
    run_sweep(trace, &config, grid, threads, &|_, _| {}).expect("replays")
}

#[test]
#[ignore = "full-size replays: scripts/test.sh runs them with --release"]
fn lowering_the_service_level_lowers_the_cost_down_to_reactive() {
    const LEVELS: [f64; 6] = [0.0, 0.3, 0.5, 0.8, 0.9, 0.95];
    let mut grid: Vec<Knobs> = LEVELS
        .iter()
        .map(|&service_level| Knobs::Forecast { service_level })
        .collect();
    grid.push(Knobs::Reactive {
        ratio: 1.0,
        idle_timeout_s: 600,
    });
    let n = LEVELS.len();
    let mut failures = Vec::new();
    for (name, trace, config) in workloads(&["base", "lognormal-boot", "spot", "4-slot"]) {
        // The forecast policy as it ships: the idle timeout chosen by capstan.
        let points = sweep(&trace, &config, &grid, None);
        let costs: Vec<f64> = points.iter().map(|p| p.cost).collect();
        let (forecast, reactive) = costs.split_at(n);
        let swap = if name.ends_with("/4-slot") {
            ROUNDING_SWAP
        } else {
            0.0
        };
        if !forecast.windows(2).all(|w| w[0] <= w[1] * (1.0 + swap)) {
            failures.push(format!(
                "{name}: cost by level {:?} is {:?}, not rising",
                LEVELS, forecast
            ));
        }
        if forecast[0] > reactive[0] {
            failures.push(format!(
                "{name}: forecast at 0 costs {}, more than reactive's {}",
                forecast[0], reactive[0]
            ));
        }
        if points[n - 1].wait_mean_s >= points[0].wait_mean_s {
            failures.push(format!(
                "{name}: mean wait {} s at 0.95 against {} s at 0",
                points[n - 1].wait_mean_s,
                points[0].wait_mean_s
            ));
        }
        // With reactive's idle timeout, level 0 keeps no spare beyond the backlog:
        // the same launches, the same bill as reactive.
        let same = sweep(&trace, &config, &[grid[0], grid[n]], Some(600));
        if same[0].cost != same[1].cost || same[0].launches != same[1].launches {
            failures.push(format!(
                "{name}: forecast at 0 with a 600 s idle timeout costs {} with {} launches, reactive {} with {}",
                same[0].cost, same[0].launches, same[1].cost, same[1].launches
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
#[ignore = "full-size replays: scripts/test.sh runs them with --release"]
fn forecast_dominates_reactive_on_the_suite_and_sdsc() {
    let grid = sweep_grid(&GridChoice::default(), None).expect("the default grid");
    let mut failures = Vec::new();
    let mut dominated_where_not_claimed = Vec::new();
    for (name, trace, config) in workloads(&["base"]) {
        let points = sweep(&trace, &config, &grid, None);
        let (forecast, reactive): (Vec<SweepPoint>, Vec<SweepPoint>) = points
            .into_iter()
            .partition(|p| p.policy == ScalingPolicy::Forecast);
        match (
            NOT_DOMINATED.contains(&name.as_str()),
            dominates_reactive(&forecast, &reactive),
        ) {
            (false, Err(why)) => failures.push(format!("{name}: {why:#?}")),
            (true, Ok(())) => dominated_where_not_claimed.push(name),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        dominated_where_not_claimed.is_empty(),
        "dominated now, drop from NOT_DOMINATED: {dominated_where_not_claimed:?}"
    );
}
