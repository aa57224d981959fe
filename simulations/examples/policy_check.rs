//! One screen on a policy change: for every case of the workload suite (and SDSC when
//! `CAPSTAN_TRACE` names it), the default sweep of `forecast` and `reactive`, with
//! whether forecast's frontier dominates reactive's, the cost at level 0, the default
//! (0.95) and 0.99, and whether the cost rises with the level.
//!
//! Judge a model change on a development seed (the default, 7), never on seed 1 or
//! SDSC, which docs/policy.md reports:
//!
//! ```sh
//! cargo run --release -p simulations --example policy_check                  # base setting, seed 7
//! cargo run --release -p simulations --example policy_check -- --setting spot --seed 3
//! cargo run --release -p simulations --example policy_check -- --setting all --shape short-tasks
//! # before and after a change: keep the points, then compare the frontiers
//! cargo run --release -p simulations --example policy_check -- --save /tmp/before.json
//! cargo run --release -p simulations --example policy_check -- --against /tmp/before.json
//! ```
//!
//! `--markdown` prints the rows of docs/policy.md's tables instead, and `--svg-dir DIR`
//! writes each case's frontier chart there (`DIR/<shape>.svg`, `DIR/sdsc.svg`), as
//! `capstan simulate --sweep --svg` draws it:
//!
//! ```sh
//! CAPSTAN_TRACE=../shared/traces/SDSC-BLUE-2000-4.2-cln.swf.gz \
//!   cargo run --release -p simulations --example policy_check -- --seed 1 --markdown --svg-dir docs/frontiers
//! ```
//!
//! With `--against`, each case also says how many of the earlier forecast points a new
//! one dominates (no dearer, a lower mean, a p95 no higher) and how many new points an
//! earlier one dominates: a change is better where the first count rises and the
//! second is 0.

use std::collections::BTreeMap;

use capstan_core::ScalingPolicy;
use simulations::engine::SimConfig;
use simulations::frontier::{
    GridChoice, Knobs, SweepPoint, WaitMetric, beats, cheapest_meeting, dominates_reactive,
    frontier_svg, run_sweep, sweep_grid,
};
use simulations::suite::{SETTINGS, Scale, suite_cases};
use simulations::trace::{ReadOptions, read_trace};

fn main() {
    let mut seed = 7;
    let mut setting = "base".to_string();
    let mut only_shape: Option<String> = None;
    let mut scale = Scale::Full;
    let mut save: Option<String> = None;
    let mut against: Option<String> = None;
    let mut markdown = false;
    let mut svg_dir: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => {
                seed = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| usage("--seed needs a whole number"))
            }
            "--setting" => {
                setting = args
                    .next()
                    .unwrap_or_else(|| usage("--setting needs a name"))
            }
            "--shape" => {
                only_shape = Some(args.next().unwrap_or_else(|| usage("--shape needs a name")))
            }
            "--small" => scale = Scale::Small,
            "--markdown" => markdown = true,
            "--svg-dir" => {
                svg_dir = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--svg-dir needs a directory")),
                )
            }
            "--save" => save = Some(args.next().unwrap_or_else(|| usage("--save needs a file"))),
            "--against" => {
                against = Some(
                    args.next()
                        .unwrap_or_else(|| usage("--against needs a file")),
                )
            }
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let grid = sweep_grid(&GridChoice::default(), None).expect("the default grid");
    // (name, the source as `capstan simulate` titles it, trace, config)
    let mut runs: Vec<(String, String, simulations::trace::Trace, SimConfig)> = suite_cases(scale)
        .into_iter()
        .filter(|c| setting == "all" || c.setting.name == setting)
        .filter(|c| only_shape.as_deref().is_none_or(|s| s == c.shape.name))
        .map(|c| {
            let trace = c.trace(seed).expect("the suite generates");
            let name = if setting == "all" {
                c.name()
            } else {
                c.shape.name.to_string()
            };
            let source = format!("workload {} (seed {seed})", c.shape.name);
            (name, source, trace, c.config(ScalingPolicy::Forecast, seed))
        })
        .collect();
    if let Some(path) = std::env::var_os("CAPSTAN_TRACE")
        && only_shape.as_deref().is_none_or(|s| s == "sdsc")
    {
        let trace = read_trace(path.as_ref(), ReadOptions::default()).expect("the trace reads");
        let source = std::path::Path::new(&path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The trace in every selected setting, named as the suite's cases are.
        for s in SETTINGS
            .iter()
            .filter(|s| setting == "all" || s.name == setting)
        {
            let name = if setting == "all" {
                format!("sdsc/{}", s.name)
            } else {
                "sdsc".to_string()
            };
            runs.push((
                name,
                source.clone(),
                trace.clone(),
                (s.config)(ScalingPolicy::Forecast, seed),
            ));
        }
    }
    if markdown {
        println!(
            "| workload | reactive (ratio 1, 600 s) | forecast 0 | forecast 0.8 | forecast 0.95 (default) | forecast 0.99 | p95 ≤ 60 s costs | mean ≤ 10 s costs | dominates reactive |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
    } else {
        println!(
            "{:<28} {:>9} {:>22} {:>22} {:>22} {:>22}  rising  dominates",
            "case", "launches", "reactive 1/600", "forecast 0", "forecast 0.95", "forecast 0.99"
        );
    }
    let before: BTreeMap<String, Vec<SweepPoint>> = against.map_or_else(BTreeMap::new, |f| {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| usage(&format!("{f}: {e}")));
        serde_json::from_str(&text).unwrap_or_else(|e| usage(&format!("{f}: {e}")))
    });
    let mut kept = BTreeMap::new();
    let (mut dominated, mut rising) = (0, 0);
    for (name, source, trace, config) in &runs {
        let points = run_sweep(trace, config, &grid, threads, &|_, _| {}).expect("replays");
        if let Some(dir) = &svg_dir {
            let title = format!("capstan simulate --sweep: {source}");
            let path = format!("{dir}/{}.svg", name.replace('/', "-"));
            std::fs::write(&path, frontier_svg(&title, &points))
                .unwrap_or_else(|e| usage(&format!("{path}: {e}")));
        }
        let (forecast, reactive): (Vec<SweepPoint>, Vec<SweepPoint>) = points
            .into_iter()
            .partition(|p| p.policy == ScalingPolicy::Forecast);
        let at = |level: f64| {
            forecast
                .iter()
                .find(|p| {
                    p.knobs
                        == Knobs::Forecast {
                            service_level: level,
                        }
                })
                .expect("the level is on the default grid")
        };
        let reactive_default = reactive
            .iter()
            .find(|p| {
                p.knobs
                    == Knobs::Reactive {
                        ratio: 1.0,
                        idle_timeout_s: 600,
                    }
            })
            .expect("reactive 1/600 is on the default grid");
        let cell = |p: &SweepPoint| {
            format!(
                "{:.3}x {:>5.1}s {:>4.0}s",
                p.ratio_to_oracle, p.wait_mean_s, p.wait_p95_s
            )
        };
        let costs_rise = forecast
            .windows(2)
            .all(|w| w[0].ratio_to_oracle <= w[1].ratio_to_oracle);
        let verdict = match dominates_reactive(&forecast, &reactive) {
            Ok(()) => {
                dominated += 1;
                "yes".to_string()
            }
            Err(why) => {
                if only_shape.is_some() {
                    for line in &why {
                        println!("  {line}");
                    }
                    for p in &forecast {
                        println!("  {}", p.describe());
                    }
                }
                format!("no ({} of {})", reactive.len() - why.len(), reactive.len())
            }
        };
        rising += usize::from(costs_rise);
        if markdown {
            let md = |p: &SweepPoint| {
                format!(
                    "{:.3}× / {:.1} s / {:.0} s",
                    p.ratio_to_oracle, p.wait_mean_s, p.wait_p95_s
                )
            };
            let costs =
                |metric: WaitMetric, max_s: f64| match cheapest_meeting(&forecast, metric, max_s) {
                    Some(i) => format!(
                        "{:.2}× (forecast {})",
                        forecast[i].ratio_to_oracle,
                        forecast[i].knobs.short()
                    ),
                    None => "not reached".to_string(),
                };
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} | {} |",
                md(reactive_default),
                md(at(0.0)),
                md(at(0.8)),
                md(at(0.95)),
                md(at(0.99)),
                costs(WaitMetric::P95, 60.0),
                costs(WaitMetric::Mean, 10.0),
                verdict
            );
            kept.insert(name.clone(), [forecast, reactive].concat());
            continue;
        }
        println!(
            "{name:<28} {:>9} {:>22} {:>22} {:>22} {:>22}  {:<6}  {verdict}",
            at(0.95).launches,
            cell(reactive_default),
            cell(at(0.0)),
            cell(at(0.95)),
            cell(at(0.99)),
            if costs_rise { "yes" } else { "NO" },
        );
        if let Some(old) = before.get(name) {
            let old: Vec<&SweepPoint> = old
                .iter()
                .filter(|p| p.policy == ScalingPolicy::Forecast)
                .collect();
            let improved = old
                .iter()
                .filter(|o| forecast.iter().any(|n| beats(n, o)))
                .count();
            let worse = forecast
                .iter()
                .filter(|n| old.iter().any(|o| beats(o, n)))
                .count();
            println!(
                "{:<28} against before: {improved} of {} earlier points beaten, {worse} of {} new points beaten by an earlier one",
                "",
                old.len(),
                forecast.len()
            );
        }
        kept.insert(name.clone(), [forecast, reactive].concat());
    }
    if let Some(f) = save {
        let json = serde_json::to_string(&kept).expect("points serialise");
        std::fs::write(&f, json).unwrap_or_else(|e| usage(&format!("{f}: {e}")));
    }
    if markdown {
        return;
    }
    println!(
        "seed {seed}: forecast dominates reactive on {dominated} of {}, cost rises with the level on {rising}",
        runs.len()
    );
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: policy_check [--seed N] [--setting base|4-slot|lognormal-boot|spot|all] [--shape NAME] [--small]"
    );
    std::process::exit(2)
}
