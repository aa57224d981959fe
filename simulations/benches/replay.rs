//! Replay benchmark: the whole SDSC Blue Horizon trace (974 days, 232k tasks, 2.8M
//! ticks) through the engine with each policy, in the default setting.
//!
//! `cargo bench -p simulations` (a plain harness-less binary: one warm-up run, then
//! the best and median of five timed runs per policy). The trace comes from
//! `CAPSTAN_TRACE`, else `../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz` relative to
//! the workspace root; the trace read itself is timed separately. Besides wall time it
//! prints the process's CPU time per run (from `/proc/self/stat`, Linux only), which
//! other jobs on a busy machine do not inflate.

use std::time::Instant;

use capstan_core::ScalingPolicy;
use simulations::engine::{SimConfig, simulate};
use simulations::trace::{ReadOptions, read_trace, sdsc_trace_path};

fn main() {
    let path = sdsc_trace_path();
    if !path.exists() {
        eprintln!(
            "skipping: trace not found at {} (set CAPSTAN_TRACE)",
            path.display()
        );
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut read_times = Vec::new();
    let mut trace = None;
    for _ in 0..runs {
        let t = Instant::now();
        trace = Some(read_trace(&path, ReadOptions::default()).expect("trace reads"));
        read_times.push(t.elapsed().as_secs_f64());
    }
    let trace = trace.expect("at least one run");
    report("read trace", &mut read_times);
    for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
        let config = SimConfig::default_setting(policy, 1);
        let warm = simulate(&trace, &config, &mut |_| {}).expect("simulation runs");
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let before = cpu_seconds();
            let out = simulate(&trace, &config, &mut |_| {}).expect("simulation runs");
            times.push(out.report.wall_seconds);
            if let (Some(b), Some(a)) = (before, cpu_seconds()) {
                cpu.push(a - b);
            }
        }
        report(&format!("replay {}", policy.as_str()), &mut times);
        if !cpu.is_empty() {
            report("    cpu time", &mut cpu);
        }
        let r = &warm.report;
        println!(
            "    {} tasks, {} ticks, ratio_to_oracle {:.4}, wait mean {:.1} s p95 {:.1} s",
            r.tasks, r.ticks, r.ratio_to_oracle, r.wait_s.mean, r.wait_s.p95
        );
    }
}

fn report(name: &str, times: &mut [f64]) {
    times.sort_by(f64::total_cmp);
    println!(
        "{name:<18} best {:.3} s  median {:.3} s  ({} runs)",
        times[0],
        times[times.len() / 2],
        times.len()
    );
}

/// User plus system CPU time of this process so far, in seconds (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks per second: 100 on every Linux configuration capstan targets.
    Some((utime + stime) / 100.0)
}
