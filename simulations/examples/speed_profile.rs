//! Replays SDSC (`CAPSTAN_TRACE`) with one policy a few times, for profiling:
//! `speed_profile forecast 3`.

use capstan_core::ScalingPolicy;
use simulations::engine::{SimConfig, simulate};
use simulations::trace::{ReadOptions, read_trace};

fn main() {
    let mut args = std::env::args().skip(1);
    let policy = match args.next().as_deref() {
        Some("reactive") => ScalingPolicy::Reactive,
        _ => ScalingPolicy::Forecast,
    };
    let runs: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let path = std::env::var_os("CAPSTAN_TRACE").expect("CAPSTAN_TRACE names the trace");
    let trace = read_trace(path.as_ref(), ReadOptions::default()).expect("trace reads");
    let config = SimConfig::default_setting(policy, 1);
    let mut best = f64::INFINITY;
    for _ in 0..runs {
        let before = cpu_seconds();
        simulate(&trace, &config, &mut |_| {}).expect("simulation runs");
        best = best.min(cpu_seconds() - before);
    }
    println!("best cpu {best:.3} s");
}

/// User plus system CPU time of this process so far, in seconds (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields[i].parse::<f64>().expect("clock ticks");
    (tick(11) + tick(12)) / 100.0
}
