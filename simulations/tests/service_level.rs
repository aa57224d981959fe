//! The service level governs the forecast policy on every workload of the small suite
//! (issue 11): lowering it never raises the cost, and at 0 the policy is `reactive`,
//! run for run. Replays every small shape in the base setting at four levels plus
//! reactive, in parallel (about a minute in a debug build on 2 cores).

use capstan_core::ScalingPolicy;
use simulations::frontier::{Knobs, run_sweep};
use simulations::suite::{SETTINGS, SHAPES, Scale, suite_cases};

const LEVELS: [f64; 4] = [0.0, 0.5, 0.9, 0.95];

#[test]
fn lowering_the_service_level_lowers_the_cost_down_to_reactive_on_every_shape() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let base = &SETTINGS[0];
    assert_eq!(base.name, "base");
    let cases: Vec<_> = suite_cases(Scale::Small)
        .into_iter()
        .filter(|c| c.setting.name == "base")
        .collect();
    assert_eq!(cases.len(), SHAPES.len());
    let mut failures = Vec::new();
    for case in cases {
        let trace = case.trace(1).expect("the small suite generates");
        let config = case.config(ScalingPolicy::Forecast, 1);
        let mut grid: Vec<Knobs> = LEVELS
            .iter()
            .map(|&service_level| Knobs::Forecast { service_level })
            .collect();
        grid.push(Knobs::Reactive {
            ratio: config.spec.scaling.scaling_ratio,
            idle_timeout_s: config
                .spec
                .scaling
                .idle_timeout_s
                .expect("the suite's settings fix the idle timeout"),
        });
        let points = run_sweep(&trace, &config, &grid, threads, &|_, _| {}).expect("replays");
        let costs: Vec<f64> = points.iter().map(|p| p.cost).collect();
        let (forecast, reactive) = costs.split_at(LEVELS.len());
        if !forecast.windows(2).all(|w| w[0] <= w[1]) {
            failures.push(format!(
                "{}: cost by level {LEVELS:?} is {forecast:?}, not rising",
                case.name()
            ));
        }
        // Level 0 keeps no spare: the same launches, the same bill as reactive.
        if forecast[0] != reactive[0] || points[0].launches != points[LEVELS.len()].launches {
            failures.push(format!(
                "{}: forecast at 0 costs {} with {} launches, reactive {} with {}",
                case.name(),
                forecast[0],
                points[0].launches,
                reactive[0],
                points[LEVELS.len()].launches
            ));
        }
        // And the knob does something: the top level buys shorter waits.
        if points[LEVELS.len() - 1].wait_mean_s >= points[0].wait_mean_s
            && points[0].wait_mean_s > 0.0
        {
            failures.push(format!(
                "{}: mean wait {} s at 0.95 against {} s at 0",
                case.name(),
                points[LEVELS.len() - 1].wait_mean_s,
                points[0].wait_mean_s
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
