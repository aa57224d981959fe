//! `capstan simulate`: replay a job trace (or a generated workload) against the real
//! predictor and planner, and compare the result with the oracle bound.
//!
//! All the work happens in the `simulations` crate; this module turns flags into a
//! [`SimConfig`], runs one simulation per policy (several in parallel threads with
//! `--compare`), and prints a table (with a progress bar on stderr for long runs) or
//! one JSON object, and on request writes the charts as an SVG file (`--plot`) or an
//! HTML report with the table and the charts (`--report`). Output files are written
//! whole or not at all: into a temporary file beside the target, renamed over it.
//!
//! `--sweep` replays the trace over a grid of settings instead and prints the cost-wait
//! frontier (the `sweep` submodule).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use capstan_core::{PoolSpec, ScalingPolicy};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use simulations::cloud::{BootTime, CloudModel};
use simulations::engine::{Outcome, Report, SimConfig, default_pool, simulate};
use simulations::plot::svg_document;
use simulations::report::{ReportPage, ReportRun, group, html_report, unfinished_why};
use simulations::trace::{ReadOptions, Trace, TraceFormat, read_trace};
use simulations::workload::WorkloadSpec;

use crate::output::PendingFile;

mod sweep;

/// Replay a job trace against a pool's scaling policy and report cost and waits.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Job trace to replay: Standard Workload Format or `submit_s,run_s` CSV, plain or
    /// gzip.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present = "workload",
        conflicts_with = "workload"
    )]
    trace: Option<PathBuf>,
    /// Replay a generated workload instead of a trace: a shape of the workload suite
    /// (docs/workloads.md).
    #[arg(
        long,
        value_name = "NAME",
        value_parser = clap::builder::PossibleValuesParser::new(simulations::suite::shape_names())
    )]
    workload: Option<String>,
    /// Length of the generated workload in days (overrides the shape's).
    #[arg(long, value_name = "N", conflicts_with = "trace")]
    days: Option<u32>,
    /// Trace format; by default from the file name (.swf, .csv, optionally .gz).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Count and skip malformed trace lines instead of failing.
    #[arg(long)]
    skip_bad_lines: bool,
    /// Pool spec (YAML); by default one on-demand launch config of 1 slot.
    #[arg(long, value_name = "FILE")]
    pool: Option<PathBuf>,
    /// Simulated cloud (YAML: boot times, billing, interruptions, launch failures).
    #[arg(long, value_name = "FILE")]
    cloud: Option<PathBuf>,
    /// Scaling policy; by default the pool's (reactive for the default pool).
    #[arg(long, value_enum, conflicts_with = "sweep")]
    policy: Option<PolicyArg>,
    /// Run several policies on the same trace side by side, e.g. `reactive,forecast`.
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with_all = ["policy", "sweep"])]
    compare: Vec<PolicyArg>,
    /// Seed of every random draw (workload, boot times, failures, interruptions).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Reconcile interval in seconds.
    #[arg(long, value_name = "S", default_value_t = 30)]
    tick: u64,
    /// Constant boot time in seconds for every launch config (overrides --cloud).
    #[arg(long, value_name = "S")]
    boot: Option<f64>,
    /// Task slots per instance for every launch config (overrides --pool).
    #[arg(long, value_name = "N")]
    slots: Option<u32>,
    /// Idle timeout in seconds, for every policy (overrides --pool). Without it and
    /// --pool, reactive runs with 600 s and forecast's is chosen from the boot time and
    /// the observed idle gaps.
    #[arg(long, value_name = "S")]
    idle_timeout: Option<u64>,
    /// Idle slots held above the pool's need instead of retired (`scaling.warm_slots`),
    /// for every policy (overrides --pool); at most the pool's max_capacity.
    #[arg(long, value_name = "N")]
    warm_slots: Option<u32>,
    /// Reactive scaling ratio (overrides --pool).
    #[arg(long, value_name = "R", conflicts_with = "sweep")]
    ratio: Option<f64>,
    /// Forecast service level in (0, 1) (overrides --pool).
    #[arg(long, value_name = "P", conflicts_with = "sweep")]
    service_level: Option<f64>,
    /// Write the charts (one panel per policy with its busiest day, cost and wait over
    /// time) to this SVG file.
    #[arg(long, value_name = "FILE", conflicts_with = "sweep")]
    plot: Option<PathBuf>,
    /// Write a self-contained HTML report (comparison table and charts) to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "sweep")]
    report: Option<PathBuf>,
    /// Sweep the settings instead of one run: forecast at a range of service levels
    /// and reactive at each ratio and idle timeout, in parallel; prints the cost-wait
    /// frontier and what p95 and mean wait targets cost.
    #[arg(long)]
    sweep: bool,
    /// Service levels of the sweep, each in [0, 1) (default 0,0.3,0.5,0.6,0.65,0.7,
    /// 0.75,0.8,0.85,0.9,0.93,0.95,0.97,0.98,0.99,0.995,0.999).
    #[arg(
        long,
        value_name = "P,..",
        allow_negative_numbers = true,
        value_delimiter = ',',
        requires = "sweep"
    )]
    levels: Vec<f64>,
    /// Reactive scaling ratios of the sweep, each > 0 (default 1,2,4).
    #[arg(
        long,
        value_name = "R,..",
        allow_negative_numbers = true,
        value_delimiter = ',',
        requires = "sweep"
    )]
    ratios: Vec<f64>,
    /// Reactive idle timeouts of the sweep in seconds (default half, once and twice
    /// the pool's).
    #[arg(
        long,
        value_name = "S,..",
        allow_negative_numbers = true,
        value_delimiter = ',',
        requires = "sweep"
    )]
    idle_timeouts: Vec<u64>,
    /// Replays run at once in the sweep (default: one per core).
    #[arg(long, value_name = "N", requires = "sweep")]
    threads: Option<usize>,
    /// Write the sweep's frontier chart to this SVG file.
    #[arg(long, value_name = "FILE", requires = "sweep")]
    svg: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FormatArg {
    Swf,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PolicyArg {
    Reactive,
    Forecast,
}

impl From<PolicyArg> for ScalingPolicy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Reactive => ScalingPolicy::Reactive,
            PolicyArg::Forecast => ScalingPolicy::Forecast,
        }
    }
}

/// Series bucket for `--plot` and `--report`: five minutes shows a burst in the
/// one-day detail (288 buckets a day), and the charts reduce the whole span to one bin
/// per pixel column, so the files stay small however long the trace.
const SERIES_BUCKET_S: i64 = 300;
/// At most this many buckets (SDSC's 974 days need 280,512), so a decade-long trace
/// does not hold millions of points; longer traces get longer buckets.
const MAX_SERIES_POINTS: i64 = 400_000;

/// Runs `capstan simulate`.
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.sweep {
        return sweep::run(&args);
    }
    if args.plot.is_some() && args.plot == args.report {
        bail!(
            "--plot and --report: give two different files, not both {}",
            args.report.as_ref().expect("some").display()
        );
    }
    // Claim the output files first: a path that cannot be written fails now, not
    // after a long replay.
    let plot_out = args
        .plot
        .as_deref()
        .map(|p| PendingFile::create(p, "--plot"))
        .transpose()?;
    let report_out = args
        .report
        .as_deref()
        .map(|p| PendingFile::create(p, "--report"))
        .transpose()?;
    let (trace, source) = load_trace(&args)?;
    let mut base = base_config(&args)?;
    if plot_out.is_some() || report_out.is_some() {
        let span_s = trace.span_ms() / 1000;
        base.series_points = (span_s / SERIES_BUCKET_S + 1).clamp(1, MAX_SERIES_POINTS) as usize;
    }
    let policies: Vec<ScalingPolicy> = if args.compare.is_empty() {
        vec![
            args.policy
                .map_or(base.spec.scaling.policy, ScalingPolicy::from),
        ]
    } else {
        let mut v: Vec<ScalingPolicy> = Vec::new();
        for p in args.compare.iter().map(|&p| ScalingPolicy::from(p)) {
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v
    };
    let configs: Vec<SimConfig> = policies
        .iter()
        .map(|&policy| policy_config(&args, &base, policy))
        .collect();

    // Bars start hidden and appear on stderr once a run has taken a second.
    let bars = (!args.json).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::hidden()));
    let bars_shown = AtomicBool::new(false);
    let started = Instant::now();
    let outcomes = std::thread::scope(|scope| {
        let handles: Vec<_> = configs
            .iter()
            .map(|config| {
                let bar = bars.as_ref().map(|multi| {
                    let bar = multi.add(ProgressBar::new(1000));
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>9} [{bar:40}] {percent:>3}% {elapsed}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(config.spec.scaling.policy.as_str());
                    (multi.clone(), bar)
                });
                let (trace, bars_shown) = (&trace, &bars_shown);
                scope.spawn(move || {
                    let mut on_progress = |fraction: f64| {
                        if let Some((multi, bar)) = &bar {
                            if started.elapsed() > Duration::from_secs(1)
                                && !bars_shown.swap(true, Ordering::Relaxed)
                            {
                                multi.set_draw_target(ProgressDrawTarget::stderr());
                            }
                            bar.set_position((fraction * 1000.0) as u64);
                        }
                    };
                    let outcome = simulate(trace, config, &mut on_progress);
                    if let Some((_, bar)) = &bar {
                        bar.finish_and_clear();
                    }
                    outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("simulation thread panicked"))
            .collect::<Result<Vec<Outcome>, _>>()
    })?;

    let reports: Vec<&Report> = outcomes.iter().map(|o| &o.report).collect();
    if plot_out.is_some() || report_out.is_some() {
        let title = format!("capstan simulate: {source}");
        let runs: Vec<ReportRun> = outcomes
            .iter()
            .map(|o| ReportRun {
                label: o.report.policy.as_str().to_string(),
                report: o.report.clone(),
                series: o.series.clone(),
            })
            .collect();
        if let Some(out) = plot_out {
            out.commit(svg_document(&title, &runs).as_bytes())?;
        }
        if let Some(out) = report_out {
            let [trace_line, pool_line] = setting(&source, &configs, reports[0]);
            let context = format!(
                "{trace_line}; {pool_line}. {}Command: {}",
                if reports[0].forecast_accuracy.is_none()
                    && policies.contains(&ScalingPolicy::Forecast)
                {
                    "Forecast accuracy needs a run of more than a week. "
                } else {
                    ""
                },
                command_line()
            );
            let page = ReportPage {
                title: &title,
                context: &context,
                runs: &runs,
            };
            out.commit(html_report(&page).as_bytes())?;
        }
    }
    if args.json {
        let json = if args.compare.is_empty() {
            serde_json::to_string(reports[0])?
        } else {
            // One object keyed by policy; each report keeps its field order.
            let fields = reports
                .iter()
                .map(|r| {
                    Ok(format!(
                        "\"{}\":{}",
                        r.policy.as_str(),
                        serde_json::to_string(r)?
                    ))
                })
                .collect::<Result<Vec<_>, serde_json::Error>>()?;
            format!("{{{}}}", fields.join(","))
        };
        println!("{json}");
    } else {
        print!("{}", table(&source, &configs, &reports));
        if let Some(path) = &args.plot {
            println!("plot written to {}", path.display());
        }
        if let Some(path) = &args.report {
            println!("report written to {}", path.display());
        }
    }
    Ok(())
}

fn load_trace(args: &SimulateArgs) -> anyhow::Result<(Trace, String)> {
    if let Some(name) = &args.workload {
        let mut spec = WorkloadSpec::named(name, args.seed)
            .with_context(|| format!("--workload: unknown workload {name:?}"))?;
        if let Some(days) = args.days {
            spec.days = days;
        }
        let trace = spec.generate().with_context(|| match args.days {
            Some(days) => format!("--workload {name} --days {days}"),
            None => format!("--workload {name}"),
        })?;
        return Ok((trace, format!("workload {name} (seed {})", args.seed)));
    }
    let Some(path) = &args.trace else {
        bail!("give --trace PATH or --workload NAME");
    };
    let options = ReadOptions {
        format: args.format.map(|f| match f {
            FormatArg::Swf => TraceFormat::Swf,
            FormatArg::Csv => TraceFormat::Csv,
        }),
        skip_bad_lines: args.skip_bad_lines,
    };
    let trace =
        read_trace(path, options).with_context(|| format!("reading trace {}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok((trace, name))
}

fn base_config(args: &SimulateArgs) -> anyhow::Result<SimConfig> {
    let mut spec = match &args.pool {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading pool spec {}", path.display()))?;
            PoolSpec::from_yaml(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?
        }
        // Each policy's own idle timeout is set per run ([`policy_config`]); the sweep
        // reads this one as forecast's (chosen) and centres reactive on 600 s.
        None => default_pool(ScalingPolicy::Reactive, 1, None),
    };
    let mut cloud = match &args.cloud {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading cloud model {}", path.display()))?;
            CloudModel::from_yaml(&text).with_context(|| path.display().to_string())?
        }
        None => CloudModel::default(),
    };
    if let Some(slots) = args.slots {
        if slots == 0 {
            bail!("--slots: must be >= 1, got 0");
        }
        for lc in &mut spec.launch_configs {
            lc.capacity = slots;
        }
    }
    if let Some(idle) = args.idle_timeout {
        spec.scaling.idle_timeout_s = Some(idle);
    }
    if let Some(warm) = args.warm_slots {
        if warm > spec.max_capacity {
            bail!(
                "--warm-slots: must be <= the pool's max_capacity ({}), got {warm}",
                spec.max_capacity
            );
        }
        spec.scaling.warm_slots = warm;
    }
    if let Some(ratio) = args.ratio {
        if !(ratio.is_finite() && ratio > 0.0) {
            bail!("--ratio: must be a positive number, got {ratio}");
        }
        spec.scaling.scaling_ratio = ratio;
    }
    if let Some(level) = args.service_level {
        if !(0.0..1.0).contains(&level) {
            bail!("--service-level: must be in [0, 1) (0: no spare), got {level}");
        }
        spec.scaling.service_level = level;
    }
    if let Some(boot) = args.boot {
        if !(boot.is_finite() && boot >= 0.0) {
            bail!("--boot: must be a number of seconds >= 0, got {boot}");
        }
        cloud.defaults.boot = BootTime::Constant(boot);
        for m in cloud.overrides.values_mut() {
            m.boot = BootTime::Constant(boot);
        }
    }
    if args.tick == 0 {
        bail!("--tick: must be >= 1 second, got 0");
    }
    Ok(SimConfig {
        spec,
        cloud,
        tick_s: args.tick,
        seed: args.seed,
        series_points: 0,
    })
}

/// `base` run under `policy`. Where neither --pool nor --idle-timeout gives the idle
/// timeout, each policy gets its default setting's
/// ([`SimConfig::default_setting`]): 600 s for reactive, chosen for forecast.
fn policy_config(args: &SimulateArgs, base: &SimConfig, policy: ScalingPolicy) -> SimConfig {
    let mut c = base.clone();
    c.spec.scaling.policy = policy;
    if args.pool.is_none() && args.idle_timeout.is_none() {
        c.spec.scaling.idle_timeout_s = SimConfig::default_setting(policy, c.seed)
            .spec
            .scaling
            .idle_timeout_s;
    }
    c
}

/// An idle timeout in words: `600 s`, or `chosen (boot time and idle gaps)` when the
/// spec leaves it to capstan.
fn idle_timeout_words(idle_timeout_s: Option<u64>) -> String {
    match idle_timeout_s {
        Some(s) => format!("{s} s"),
        None => "chosen (boot time and idle gaps)".into(),
    }
}

/// The command as typed, for the report: `capstan` and the arguments, quoted where a
/// shell would need it.
fn command_line() -> String {
    let mut words = vec!["capstan".to_string()];
    for arg in std::env::args_os().skip(1) {
        let arg = arg.to_string_lossy();
        let plain = !arg.is_empty()
            && arg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./,=:+@%".contains(c));
        words.push(if plain {
            arg.into_owned()
        } else {
            format!("'{}'", arg.replace('\'', "'\\''"))
        });
    }
    words.join(" ")
}

/// What was simulated: a line on the trace and a line on the pool setting of
/// `configs` (one per policy; they differ in policy and perhaps idle timeout only).
fn setting(source: &str, configs: &[SimConfig], r0: &Report) -> [String; 2] {
    let config = &configs[0];
    let idle = if configs
        .iter()
        .all(|c| c.spec.scaling.idle_timeout_s == config.spec.scaling.idle_timeout_s)
    {
        idle_timeout_words(config.spec.scaling.idle_timeout_s)
    } else {
        configs
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.spec.scaling.policy.as_str(),
                    idle_timeout_words(c.spec.scaling.idle_timeout_s)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let idle = match config.spec.scaling.warm_slots {
        0 => idle,
        warm => format!("{idle}, {warm} warm slot(s) held"),
    };
    let lc = &config.spec.launch_configs[0];
    let boot = config
        .cloud
        .overrides
        .get(&lc.id)
        .unwrap_or(&config.cloud.defaults)
        .boot
        .clone();
    [
        format!(
            "{source}: {} tasks, {} skipped, {} bad lines, {:.1} days simulated",
            group(r0.tasks as f64, 0),
            group(r0.skipped as f64, 0),
            group(r0.bad_lines as f64, 0),
            r0.sim_seconds / 86_400.0,
        ),
        format!(
            "pool {}: {} launch config(s), {} slot(s) per instance, boot {boot}, tick {} s, idle timeout {idle}, seed {}",
            config.spec.id,
            config.spec.launch_configs.len(),
            lc.capacity,
            config.tick_s,
            config.seed,
        ),
    ]
}

/// How one table cell is computed from a report.
type Cell = fn(&Report) -> String;

/// The readable table: one row per measure, one column per policy.
fn table(source: &str, configs: &[SimConfig], reports: &[&Report]) -> String {
    let [trace_line, pool_line] = setting(source, configs, reports[0]);
    let mut out = format!("{trace_line}\n{pool_line}\n\n");
    let rows: Vec<(&str, Cell)> = vec![
        ("instance-hours", |r| group(r.instance_seconds / 3600.0, 1)),
        ("oracle instance-hours", |r| {
            group(r.oracle_instance_seconds / 3600.0, 1)
        }),
        ("ratio to oracle", |r| format!("{:.3}", r.ratio_to_oracle)),
        ("cost", |r| group(r.cost, 2)),
        ("wait mean (s)", |r| format!("{:.1}", r.wait_s.mean)),
        ("wait p50 (s)", |r| format!("{:.1}", r.wait_s.p50)),
        ("wait p95 (s)", |r| format!("{:.1}", r.wait_s.p95)),
        ("wait p99 (s)", |r| format!("{:.1}", r.wait_s.p99)),
        ("wait max (s)", |r| format!("{:.1}", r.wait_s.max)),
        ("utilization", |r| format!("{:.1}%", r.utilization * 100.0)),
        ("launches", |r| group(r.launches as f64, 0)),
        ("launch failures", |r| group(r.launch_failures as f64, 0)),
        ("terminations", |r| group(r.terminations as f64, 0)),
        ("interruptions", |r| group(r.interruptions as f64, 0)),
        ("unfinished tasks", |r| group(r.unfinished as f64, 0)),
        ("ticks", |r| group(r.ticks as f64, 0)),
        ("forecast MAE (slots)", |r| {
            r.forecast_accuracy
                .map_or("-".into(), |a| format!("{:.2}", a.mae))
        }),
        ("forecast MASE", |r| {
            r.forecast_accuracy
                .and_then(|a| a.mase)
                .map_or("-".into(), |m| format!("{m:.3}"))
        }),
        ("forecast pinball loss", |r| {
            r.forecast_accuracy
                .map_or("-".into(), |a| format!("{:.3}", a.pinball))
        }),
        ("forecast coverage", |r| {
            r.forecast_accuracy
                .map_or("-".into(), |a| format!("{:.1}%", a.coverage * 100.0))
        }),
        ("wall time (s)", |r| format!("{:.2}", r.wall_seconds)),
    ];
    out.push_str(&format!("{:<24}", ""));
    for r in reports {
        out.push_str(&format!("{:>14}", r.policy.as_str()));
    }
    out.push('\n');
    for (name, cell) in rows {
        out.push_str(&format!("{name:<24}"));
        for r in reports {
            out.push_str(&format!("{:>14}", cell(r)));
        }
        out.push('\n');
    }
    for r in reports.iter().filter(|r| r.unfinished > 0) {
        out.push_str(&format!(
            "{}: {} tasks never finished ({})\n",
            r.policy.as_str(),
            group(r.unfinished as f64, 0),
            unfinished_why(r)
        ));
    }
    out
}
