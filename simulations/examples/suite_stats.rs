//! Measures every shape of the workload suite and prints the table of
//! `docs/workloads.md` (Markdown).
//!
//! ```sh
//! cargo run -p simulations --example suite_stats            # full suite, seed 1
//! cargo run -p simulations --example suite_stats -- --small --seed 3
//! ```

use simulations::report::group;
use simulations::suite::{SETTINGS, SHAPES, Scale, measure};

fn main() {
    let mut scale = Scale::Full;
    let mut seed = 1;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--small" => scale = Scale::Small,
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage("--seed needs a whole number"));
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    println!(
        "| shape | days | tasks | mean /h | peak hour /h | in bursts | run p50 (s) | run p99 (s) | p99/p50 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for shape in &SHAPES {
        let spec = shape.spec(seed, scale);
        let generated = spec
            .generate_detailed()
            .unwrap_or_else(|e| panic!("{}: {e}", shape.name));
        let s = measure(&generated, spec.days);
        println!(
            "| `{}` | {} | {} | {:.1} | {} | {:.1}% | {:.0} | {:.0} | {:.0} |",
            shape.name,
            s.days,
            group(s.tasks as f64, 0),
            s.mean_per_hour,
            group(s.peak_hour as f64, 0),
            s.burst_share * 100.0,
            s.run_p50_s,
            s.run_p99_s,
            s.run_p99_s / s.run_p50_s,
        );
    }
    println!();
    println!("| setting | flags | what it changes |");
    println!("|---|---|---|");
    for setting in &SETTINGS {
        let flags = if setting.cli_args.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", setting.cli_args.join(" "))
        };
        println!("| `{}` | {flags} | {} |", setting.name, setting.doc);
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("suite_stats: {problem}\nusage: suite_stats [--small] [--seed N]");
    std::process::exit(2);
}
