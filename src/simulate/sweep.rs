//! `capstan simulate --sweep`: the trace replayed over a grid of policy settings in
//! parallel, printed as the cost–wait frontier (a table with the frontier points
//! marked and what common wait targets cost, one JSON object with `--json`, and an
//! SVG with `--svg`). The work is [`simulations::frontier`]; this turns flags into a
//! grid and prints.

use std::time::{Duration, Instant};

use anyhow::bail;
use capstan_core::ScalingPolicy;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use simulations::engine::SimConfig;
use simulations::frontier::{
    Answer, GridChoice, SweepPoint, WaitMetric, answers, dominates_reactive, frontier_svg,
    pareto_frontier, run_sweep, sweep_grid,
};
use simulations::report::group;
use simulations::trace::Trace;

use super::{SimulateArgs, base_config, load_trace};
use crate::output::PendingFile;

/// Runs `capstan simulate --sweep`.
pub(super) fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    // Flags first, then the output file, then the (possibly long) load and replays.
    if args.threads == Some(0) {
        bail!("--threads: must be >= 1, got 0");
    }
    let mut base = base_config(args)?;
    let choice = GridChoice {
        levels: (!args.levels.is_empty()).then(|| args.levels.clone()),
        ratios: (!args.ratios.is_empty()).then(|| args.ratios.clone()),
        idle_timeouts_s: (!args.idle_timeouts.is_empty()).then(|| args.idle_timeouts.clone()),
    };
    let grid = sweep_grid(&choice, base.spec.scaling.idle_timeout_s)
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.message))?;
    let svg_out = args
        .svg
        .as_deref()
        .map(|p| PendingFile::create(p, "--svg"))
        .transpose()?;
    let (trace, source) = load_trace(args)?;
    base.series_points = 0;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });

    // The bar starts hidden and appears on stderr once the sweep has taken a second.
    let bar = (!args.json).then(|| {
        let bar =
            ProgressBar::with_draw_target(Some(grid.len() as u64), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("    sweep [{bar:40}] {pos}/{len} points {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let started = Instant::now();
    let shown = std::sync::atomic::AtomicBool::new(false);
    let progress = |done: usize, _total: usize| {
        if let Some(bar) = &bar {
            if started.elapsed() > Duration::from_secs(1)
                && !shown.swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
            bar.set_position(done as u64);
        }
    };
    let points = run_sweep(&trace, &base, &grid, threads, &progress)?;
    let elapsed = started.elapsed();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }

    let title = format!("capstan simulate --sweep: {source}");
    if let Some(out) = svg_out {
        out.commit(frontier_svg(&title, &points).as_bytes())?;
    }
    let (forecast, reactive) = by_policy(&points);
    let dominance = dominates_reactive(&forecast, &reactive);
    if args.json {
        let frontiers = |pts: &[SweepPoint], index: &dyn Fn(usize) -> usize| Frontiers {
            mean: pareto_frontier(pts, WaitMetric::Mean)
                .into_iter()
                .map(index)
                .collect(),
            p95: pareto_frontier(pts, WaitMetric::P95)
                .into_iter()
                .map(index)
                .collect(),
            p99: pareto_frontier(pts, WaitMetric::P99)
                .into_iter()
                .map(index)
                .collect(),
        };
        let of_policy = |policy: ScalingPolicy| {
            let at: Vec<usize> = (0..points.len())
                .filter(|&i| points[i].policy == policy)
                .collect();
            let mine: Vec<SweepPoint> = at.iter().map(|&i| points[i].clone()).collect();
            frontiers(&mine, &|i| at[i])
        };
        let body = SweepJson {
            source: &source,
            seed: base.seed,
            tasks: trace.tasks.len(),
            points: &points,
            frontiers: frontiers(&points, &|i| i),
            policy_frontiers: PolicyFrontiers {
                forecast: of_policy(ScalingPolicy::Forecast),
                reactive: of_policy(ScalingPolicy::Reactive),
            },
            answers: answers(&points),
            forecast_dominates_reactive: dominance.is_ok(),
            undominated_reactive: dominance.err().unwrap_or_default(),
        };
        println!("{}", serde_json::to_string(&body)?);
    } else {
        print!(
            "{}",
            table(
                &source,
                &trace,
                &base,
                &points,
                dominance.err().unwrap_or_default()
            )
        );
        println!(
            "{} settings replayed in {:.1} s on {} thread(s)",
            points.len(),
            elapsed.as_secs_f64(),
            threads.clamp(1, points.len().max(1))
        );
        if let Some(path) = &args.svg {
            println!("svg written to {}", path.display());
        }
    }
    Ok(())
}

/// What `--json` prints: one object, its fields in this order.
#[derive(Serialize)]
struct SweepJson<'a> {
    /// The trace's file name or the workload's name and seed.
    source: &'a str,
    seed: u64,
    /// Tasks replayed.
    tasks: usize,
    /// A point per setting, in grid order.
    points: &'a [SweepPoint],
    /// Indices in `points` of the frontier of all points, by cost.
    frontiers: Frontiers,
    /// The same, of each policy's points alone.
    policy_frontiers: PolicyFrontiers,
    /// What each wait target costs.
    answers: Vec<Answer>,
    forecast_dominates_reactive: bool,
    /// The reactive points no forecast point dominates, in words.
    undominated_reactive: Vec<String>,
}

/// Frontier point indices for each wait measure.
#[derive(Serialize)]
struct Frontiers {
    mean: Vec<usize>,
    p95: Vec<usize>,
    p99: Vec<usize>,
}

#[derive(Serialize)]
struct PolicyFrontiers {
    forecast: Frontiers,
    reactive: Frontiers,
}

/// The forecast points and the reactive points.
fn by_policy(points: &[SweepPoint]) -> (Vec<SweepPoint>, Vec<SweepPoint>) {
    points
        .iter()
        .cloned()
        .partition(|p| p.policy == ScalingPolicy::Forecast)
}

/// The readable output: what was replayed, a row per setting with the frontiers it is
/// on, what the wait targets cost, and whether forecast dominates reactive.
fn table(
    source: &str,
    trace: &Trace,
    config: &SimConfig,
    points: &[SweepPoint],
    undominated: Vec<String>,
) -> String {
    let lc = &config.spec.launch_configs[0];
    let mut out = format!(
        "{source}: {} tasks, {} skipped, {} bad lines, {:.1} days\npool {}: {} slot(s) per instance, tick {} s, forecast's idle timeout {}, seed {}\n\n",
        group(trace.tasks.len() as f64, 0),
        group(trace.skipped as f64, 0),
        group(trace.bad_lines as f64, 0),
        trace.span_ms() as f64 / 86_400_000.0,
        config.spec.id,
        lc.capacity,
        config.tick_s,
        super::idle_timeout_words(config.spec.scaling.idle_timeout_s),
        config.seed,
    );
    let on: Vec<Vec<usize>> = WaitMetric::ALL
        .iter()
        .map(|&m| pareto_frontier(points, m))
        .collect();
    let mut t = crate::output::table(&[
        "policy",
        "setting",
        "ratio to oracle",
        "cost",
        "wait mean (s)",
        "p95 (s)",
        "p99 (s)",
        "launches",
        "frontier",
    ]);
    for (i, p) in points.iter().enumerate() {
        let marks: Vec<&str> = WaitMetric::ALL
            .iter()
            .zip(&on)
            .filter(|(_, on)| on.contains(&i))
            .map(|(m, _)| m.name())
            .collect();
        t.add_row(vec![
            p.policy.as_str().to_string(),
            p.knobs.describe(),
            format!("{:.3}", p.ratio_to_oracle),
            group(p.cost, 1),
            format!("{:.1}", p.wait_mean_s),
            format!("{:.1}", p.wait_p95_s),
            format!("{:.1}", p.wait_p99_s),
            group(p.launches as f64, 0),
            marks.join(" "),
        ]);
    }
    out.push_str(&t.to_string());
    out.push_str(
        "\nfrontier: no other setting is as cheap and as quick on that wait and better on one.\n",
    );
    for a in answers(points) {
        out.push_str(&a.sentence);
        out.push('\n');
    }
    let reactive = points
        .iter()
        .filter(|p| p.policy == ScalingPolicy::Reactive)
        .count();
    if reactive > 0 && points.len() > reactive {
        if undominated.is_empty() {
            out.push_str("forecast dominates reactive: each reactive setting has a forecast one no dearer with a lower mean wait and a p95 no higher\n");
        } else {
            out.push_str(&format!(
                "forecast does not dominate reactive ({} of {reactive} reactive settings):\n",
                undominated.len()
            ));
            for line in undominated {
                out.push_str(&format!("  - {line}\n"));
            }
        }
    }
    out
}
