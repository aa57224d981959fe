//! Prints every report (minus `wall_seconds`) and a digest of the series of a fixed
//! set of replays, one line each, so a performance change can be checked to leave
//! every number byte-identical: SDSC (when the trace is found), the generated diurnal
//! and `short-tasks` workloads, and the small suite in every setting, both policies.
//!
//! ```sh
//! cargo run --release -p simulations --example speed_reports > before.txt
//! # ...change the code...
//! cargo run --release -p simulations --example speed_reports | diff before.txt -
//! ```

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use capstan_core::ScalingPolicy;
use simulations::engine::{SimConfig, simulate};
use simulations::suite::{Scale, short_tasks, suite_cases};
use simulations::trace::{ReadOptions, Trace, read_trace, sdsc_trace_path};
use simulations::workload::WorkloadSpec;

/// A named trace and the config of each policy for it.
type Run = (String, Trace, Box<dyn Fn(ScalingPolicy) -> SimConfig>);

const POLICIES: [ScalingPolicy; 2] = [ScalingPolicy::Reactive, ScalingPolicy::Forecast];

fn main() {
    let mut runs: Vec<Run> = Vec::new();
    let path = sdsc_trace_path();
    let skip_sdsc = std::env::args().any(|a| a == "--no-sdsc");
    if path.exists() && !skip_sdsc {
        let trace = read_trace(&path, ReadOptions::default()).expect("trace reads");
        runs.push((
            "sdsc".into(),
            trace,
            Box::new(|p| with_series(SimConfig::default_setting(p, 1))),
        ));
    }
    let diurnal = WorkloadSpec::diurnal(1)
        .generate()
        .expect("diurnal generates");
    runs.push((
        "diurnal".into(),
        diurnal,
        Box::new(|p| with_series(SimConfig::default_setting(p, 1))),
    ));
    let short = short_tasks(1).generate().expect("short-tasks generates");
    runs.push((
        "short-tasks".into(),
        short,
        Box::new(|p| with_series(SimConfig::default_setting(p, 1))),
    ));
    for case in suite_cases(Scale::Small) {
        let trace = case.trace(3).expect("case generates");
        runs.push((
            format!("small {}", case.name()),
            trace,
            Box::new(move |p| with_series(case.config(p, 3))),
        ));
    }
    for (name, trace, config) in &runs {
        for policy in POLICIES {
            let out = simulate(trace, &config(policy), &mut |_| {}).expect("simulation runs");
            let mut report = out.report;
            report.wall_seconds = 0.0;
            let series = serde_json::to_string(&out.series).expect("series serializes");
            let mut h = DefaultHasher::new();
            series.hash(&mut h);
            println!(
                "{name} {} {} series {:016x}",
                policy.as_str(),
                serde_json::to_string(&report).expect("report serializes"),
                h.finish()
            );
        }
    }
}

fn with_series(mut config: SimConfig) -> SimConfig {
    config.series_points = 400;
    config
}
