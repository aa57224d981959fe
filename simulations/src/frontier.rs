//! The cost–wait frontier of a pool: one trace replayed under many settings of its
//! scaling policy, so an operator reads off what a wait target costs on their own
//! trace ("p95 <= 60 s costs 1.2x the oracle").
//!
//! - [`sweep_grid`] lists the settings: `forecast` at a range of service levels, and
//!   `reactive` at every scaling ratio × idle timeout.
//! - [`run_sweep`] replays the trace once per setting, in parallel (one thread per
//!   core: each replay is independent and single-threaded), and returns a
//!   [`SweepPoint`] per setting in grid order. Every point uses the base config's
//!   seed, so a sweep is as deterministic as one replay.
//! - [`pareto_frontier`] keeps the points no other point beats on both cost
//!   (`ratio_to_oracle`) and a wait measure (mean, p95 or p99).
//! - [`dominates_reactive`] checks the claim of issue 11: every reactive point is
//!   matched by a forecast point no more expensive with a lower mean wait and a p95 no
//!   higher.
//! - [`cheapest_meeting`] and [`answers`] answer "what does p95 <= 60 s cost?".
//! - [`frontier_svg`] draws the points and each policy's frontier as a standalone SVG.
//!
//! Everything here is pure except [`run_sweep`], which runs the engine.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use capstan_core::ScalingPolicy;
use serde::{Deserialize, Serialize};

use crate::engine::{REACTIVE_IDLE_TIMEOUT_S, Report, SimConfig, SimError, simulate};
use crate::plot::{
    AXIS_COLOR, CAPTION_CHAR_W, Frame, Swatch, duration_label, escape, number, run_color,
    wait_axis, wrap,
};
use crate::trace::Trace;

/// The service levels `forecast` is swept over by default: every 0.05 from 0.6, where
/// its cost crosses reactive's on most workloads, denser near 1, where it rises
/// fastest, and 0 (no spare beyond what the model expects) and 0.3 below. 0.995 and
/// 0.999 reach the costs of reactive's dearest settings (a scaling ratio of 4 costs
/// 2–5× the oracle where boots vary), so the two frontiers span the same range.
pub const DEFAULT_LEVELS: [f64; 17] = [
    0.0, 0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999,
];
/// The scaling ratios `reactive` is swept over by default.
pub const DEFAULT_RATIOS: [f64; 3] = [1.0, 2.0, 4.0];
/// The idle timeouts `reactive` is swept over by default, as multiples of the pool's
/// (of [`REACTIVE_IDLE_TIMEOUT_S`] where the pool leaves it to capstan).
pub const DEFAULT_IDLE_FACTORS: [f64; 3] = [0.5, 1.0, 2.0];

/// The setting of one point of a sweep: the knobs its policy has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Knobs {
    /// `forecast` at this service level, with the pool's idle timeout (chosen by
    /// capstan from the boot time and the observed idle gaps where the pool leaves it
    /// out).
    Forecast {
        /// The forecast quantile, in [0, 1).
        service_level: f64,
    },
    /// `reactive` with this scaling ratio and idle timeout.
    Reactive {
        /// Slots asked per waiting task.
        ratio: f64,
        /// Seconds a worker may idle before it is terminated.
        idle_timeout_s: u64,
    },
}

impl Knobs {
    /// The policy these knobs belong to.
    pub fn policy(&self) -> ScalingPolicy {
        match self {
            Self::Forecast { .. } => ScalingPolicy::Forecast,
            Self::Reactive { .. } => ScalingPolicy::Reactive,
        }
    }

    /// The knobs in words: `service level 0.95`, `ratio 2, idle timeout 600 s`.
    pub fn describe(&self) -> String {
        match *self {
            Self::Forecast { service_level } => format!("service level {service_level}"),
            Self::Reactive {
                ratio,
                idle_timeout_s,
            } => format!("ratio {ratio}, idle timeout {idle_timeout_s} s"),
        }
    }

    /// A short label for a chart: `0.95`, `2/600s`.
    pub fn short(&self) -> String {
        match *self {
            Self::Forecast { service_level } => format!("{service_level}"),
            Self::Reactive {
                ratio,
                idle_timeout_s,
            } => format!("{ratio}/{idle_timeout_s}s"),
        }
    }

    /// `base` with these knobs (and no time series: a sweep keeps only the totals).
    /// `reactive` points always set their idle timeout; `forecast` points keep
    /// `base`'s, set or not.
    pub fn config(&self, base: &SimConfig) -> SimConfig {
        let mut c = base.clone();
        c.series_points = 0;
        c.spec.scaling.policy = self.policy();
        match *self {
            Self::Forecast { service_level } => {
                c.spec.scaling.service_level = service_level;
            }
            Self::Reactive {
                ratio,
                idle_timeout_s,
            } => {
                c.spec.scaling.scaling_ratio = ratio;
                c.spec.scaling.idle_timeout_s = Some(idle_timeout_s);
            }
        }
        c
    }
}

/// What one setting measured: its knobs and the report's cost and waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    /// The scaling policy.
    pub policy: ScalingPolicy,
    /// Its setting.
    pub knobs: Knobs,
    /// Instance time over the oracle's (the cost axis of the frontier).
    pub ratio_to_oracle: f64,
    /// Billed instance time, in hours.
    pub instance_hours: f64,
    /// Billed cost, in the prices' currency.
    pub cost: f64,
    /// Mean wait of a task for a slot, in seconds.
    pub wait_mean_s: f64,
    /// Median wait, in seconds.
    pub wait_p50_s: f64,
    /// 95th percentile wait, in seconds.
    pub wait_p95_s: f64,
    /// 99th percentile wait, in seconds.
    pub wait_p99_s: f64,
    /// Longest wait, in seconds.
    pub wait_max_s: f64,
    /// Busy slot time over instance slot time.
    pub utilization: f64,
    /// Instances launched.
    pub launches: u64,
    /// Tasks that never finished (the run stalled, or they were given up after
    /// [`crate::engine::MAX_ATTEMPTS`] interrupted attempts).
    pub unfinished: u64,
}

impl SweepPoint {
    /// The point of a run with `knobs` that reported `r`.
    pub fn new(knobs: Knobs, r: &Report) -> Self {
        Self {
            policy: knobs.policy(),
            knobs,
            ratio_to_oracle: r.ratio_to_oracle,
            instance_hours: r.instance_seconds / 3600.0,
            cost: r.cost,
            wait_mean_s: r.wait_s.mean,
            wait_p50_s: r.wait_s.p50,
            wait_p95_s: r.wait_s.p95,
            wait_p99_s: r.wait_s.p99,
            wait_max_s: r.wait_s.max,
            utilization: r.utilization,
            launches: r.launches,
            unfinished: r.unfinished,
        }
    }

    /// `forecast service level 0.95 (1.240x, mean 5.1 s, p95 45.0 s)`.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({:.3}x, mean {:.1} s, p95 {:.1} s)",
            self.policy.as_str(),
            self.knobs.describe(),
            self.ratio_to_oracle,
            self.wait_mean_s,
            self.wait_p95_s
        )
    }
}

/// A wait measure the frontier is drawn against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitMetric {
    /// Mean wait.
    Mean,
    /// 95th percentile wait.
    P95,
    /// 99th percentile wait.
    P99,
}

impl WaitMetric {
    /// Every measure, in order.
    pub const ALL: [Self; 3] = [Self::Mean, Self::P95, Self::P99];

    /// `mean`, `p95`, `p99`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::P95 => "p95",
            Self::P99 => "p99",
        }
    }

    /// The measure of `p`, in seconds.
    pub fn of(self, p: &SweepPoint) -> f64 {
        match self {
            Self::Mean => p.wait_mean_s,
            Self::P95 => p.wait_p95_s,
            Self::P99 => p.wait_p99_s,
        }
    }
}

/// Values given for a grid, each replacing its default when set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GridChoice {
    /// Service levels for `forecast`, each in [0, 1) (default [`DEFAULT_LEVELS`]).
    pub levels: Option<Vec<f64>>,
    /// Scaling ratios for `reactive`, each in (0, 100] (default [`DEFAULT_RATIOS`]).
    pub ratios: Option<Vec<f64>>,
    /// Idle timeouts for `reactive` in seconds (default [`DEFAULT_IDLE_FACTORS`] times
    /// the pool's, or times [`REACTIVE_IDLE_TIMEOUT_S`] where the pool has none).
    pub idle_timeouts_s: Option<Vec<u64>>,
}

/// A value of a [`GridChoice`] out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct GridError {
    /// `levels`, `ratios` or `idle_timeouts`.
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub message: String,
}

/// The settings to sweep: `forecast` at every level (ascending), then `reactive` at
/// every ratio (ascending) × idle timeout (ascending). Duplicates are dropped. The
/// default idle timeouts are half, once and twice `pool_idle_timeout_s` (rounded to a
/// second), or of [`REACTIVE_IDLE_TIMEOUT_S`] when the pool leaves it to capstan:
/// `reactive` points always run with an explicit idle timeout.
pub fn sweep_grid(
    choice: &GridChoice,
    pool_idle_timeout_s: Option<u64>,
) -> Result<Vec<Knobs>, GridError> {
    let centre = pool_idle_timeout_s.unwrap_or(REACTIVE_IDLE_TIMEOUT_S);
    let err = |field, message: String| GridError { field, message };
    let mut levels = choice.levels.clone().unwrap_or(DEFAULT_LEVELS.to_vec());
    if levels.is_empty() {
        return Err(err("levels", "give at least one service level".into()));
    }
    if let Some(bad) = levels.iter().find(|l| !(**l >= 0.0 && **l < 1.0)) {
        return Err(err(
            "levels",
            format!("a service level must be in [0, 1), got {bad}"),
        ));
    }
    let mut ratios = choice.ratios.clone().unwrap_or(DEFAULT_RATIOS.to_vec());
    if ratios.is_empty() {
        return Err(err("ratios", "give at least one scaling ratio".into()));
    }
    if let Some(bad) = ratios.iter().find(|r| !(**r > 0.0 && **r <= 100.0)) {
        return Err(err(
            "ratios",
            format!("a scaling ratio must be > 0 and <= 100, got {bad}"),
        ));
    }
    let mut idles = choice.idle_timeouts_s.clone().unwrap_or_else(|| {
        DEFAULT_IDLE_FACTORS
            .iter()
            .map(|f| (centre as f64 * f).round() as u64)
            .collect()
    });
    if idles.is_empty() {
        return Err(err(
            "idle_timeouts",
            "give at least one idle timeout".into(),
        ));
    }
    levels.sort_by(f64::total_cmp);
    levels.dedup();
    ratios.sort_by(f64::total_cmp);
    ratios.dedup();
    idles.sort_unstable();
    idles.dedup();
    let mut grid: Vec<Knobs> = levels
        .into_iter()
        .map(|service_level| Knobs::Forecast { service_level })
        .collect();
    for &ratio in &ratios {
        for &idle_timeout_s in &idles {
            grid.push(Knobs::Reactive {
                ratio,
                idle_timeout_s,
            });
        }
    }
    Ok(grid)
}

/// Replays `trace` once per setting of `grid` on `threads` threads (at least 1, at
/// most one per point), each with `base` changed by its knobs and `base`'s seed.
/// `progress(done, total)` is called from the worker threads as each point finishes.
/// Returns the points in grid order, or the error of the first failing setting in
/// grid order (the others stop at their next point).
pub fn run_sweep(
    trace: &Trace,
    base: &SimConfig,
    grid: &[Knobs],
    threads: usize,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<SweepPoint>, SimError> {
    let total = grid.len();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let threads = threads.clamp(1, total.max(1));
    let mut results: Vec<(usize, Result<SweepPoint, SimError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(knobs) = grid.get(i) else { break };
                        let result = simulate(trace, &knobs.config(base), &mut |_| {})
                            .map(|o| SweepPoint::new(*knobs, &o.report));
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        mine.push((i, result));
                        progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("sweep thread panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Indices of the points of `points` on the frontier for `metric`: those no other
/// point beats, that is, none is as cheap (`ratio_to_oracle` <=) and as quick
/// (`metric` <=) and better on one of the two. Sorted by cost, then by the metric.
/// Equal points are all kept.
pub fn pareto_frontier(points: &[SweepPoint], metric: WaitMetric) -> Vec<usize> {
    let key = |p: &SweepPoint| (p.ratio_to_oracle, metric.of(p));
    let mut on: Vec<usize> = (0..points.len())
        .filter(|&i| {
            let (c, w) = key(&points[i]);
            !points.iter().any(|q| {
                let (qc, qw) = key(q);
                qc <= c && qw <= w && (qc < c || qw < w)
            })
        })
        .collect();
    on.sort_by(|&a, &b| {
        let (ka, kb) = (key(&points[a]), key(&points[b]));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    on
}

/// Whether `a` beats `b` in the sense of issue 11's dominance: no more expensive
/// (`ratio_to_oracle` <=), a lower mean wait and a p95 no higher.
pub fn beats(a: &SweepPoint, b: &SweepPoint) -> bool {
    a.ratio_to_oracle <= b.ratio_to_oracle
        && a.wait_mean_s < b.wait_mean_s
        && a.wait_p95_s <= b.wait_p95_s
}

/// Checks that `forecast` dominates `reactive`: for each reactive point there is a
/// forecast point no more expensive (`ratio_to_oracle` <=) with a lower mean wait
/// and a p95 no higher. The error says, for each reactive point without one, what it
/// is and the forecast point nearest to dominating it.
pub fn dominates_reactive(
    forecast: &[SweepPoint],
    reactive: &[SweepPoint],
) -> Result<(), Vec<String>> {
    let failures: Vec<String> = reactive
        .iter()
        .filter(|r| !forecast.iter().any(|f| beats(f, r)))
        .map(|r| {
            let affordable = forecast
                .iter()
                .filter(|f| f.ratio_to_oracle <= r.ratio_to_oracle)
                .min_by(|a, b| a.wait_mean_s.total_cmp(&b.wait_mean_s));
            let nearest = match affordable {
                Some(f) => format!("the quickest at that cost is {}", f.describe()),
                None => match forecast
                    .iter()
                    .min_by(|a, b| a.ratio_to_oracle.total_cmp(&b.ratio_to_oracle))
                {
                    Some(f) => format!("every forecast point costs more, the cheapest is {}", f.describe()),
                    None => "there is no forecast point".to_string(),
                },
            };
            format!(
                "{} is not dominated: no forecast point at <= {:.3}x has a mean under {:.1} s and a p95 <= {:.1} s; {nearest}",
                r.describe(),
                r.ratio_to_oracle,
                r.wait_mean_s,
                r.wait_p95_s
            )
        })
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures)
    }
}

/// Index of the cheapest point (lowest `ratio_to_oracle`; then the lowest `metric`,
/// then the first) whose `metric` is at most `max_s` seconds, if any.
pub fn cheapest_meeting(points: &[SweepPoint], metric: WaitMetric, max_s: f64) -> Option<usize> {
    (0..points.len())
        .filter(|&i| metric.of(&points[i]) <= max_s)
        .min_by(|&a, &b| {
            let (pa, pb) = (&points[a], &points[b]);
            pa.ratio_to_oracle
                .total_cmp(&pb.ratio_to_oracle)
                .then(metric.of(pa).total_cmp(&metric.of(pb)))
        })
}

/// The wait targets [`answers`] prices: p95 within 30 s, 60 s and 2 minutes, and a
/// mean within 10 s.
pub const TARGETS: [(WaitMetric, f64); 4] = [
    (WaitMetric::P95, 30.0),
    (WaitMetric::P95, 60.0),
    (WaitMetric::P95, 120.0),
    (WaitMetric::Mean, 10.0),
];

/// What a wait target costs in a sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The measure bounded.
    pub metric: WaitMetric,
    /// Its bound, in seconds.
    pub max_s: f64,
    /// Index of the cheapest point meeting it ([`cheapest_meeting`]), if any.
    pub point: Option<usize>,
    /// Its ratio to the oracle, if any point meets it.
    pub ratio_to_oracle: Option<f64>,
    /// The answer in words: `p95 <= 60 s costs 1.24x the oracle (forecast service
    /// level 0.95: mean 5.1 s, p95 45.0 s)`.
    pub sentence: String,
}

/// What each of [`TARGETS`] costs among `points`.
pub fn answers(points: &[SweepPoint]) -> Vec<Answer> {
    TARGETS
        .iter()
        .map(|&(metric, max_s)| answer(points, metric, max_s))
        .collect()
}

/// What keeping `metric` within `max_s` costs among `points`.
pub fn answer(points: &[SweepPoint], metric: WaitMetric, max_s: f64) -> Answer {
    let point = cheapest_meeting(points, metric, max_s);
    let target = format!("{} <= {} s", metric.name(), number(max_s));
    let sentence = match point {
        Some(i) => {
            let p = &points[i];
            format!(
                "{target} costs {:.2}x the oracle ({} {}: mean {:.1} s, p95 {:.1} s)",
                p.ratio_to_oracle,
                p.policy.as_str(),
                p.knobs.describe(),
                p.wait_mean_s,
                p.wait_p95_s
            )
        }
        None => match points
            .iter()
            .min_by(|a, b| metric.of(a).total_cmp(&metric.of(b)))
        {
            Some(best) => format!(
                "{target}: no point of the sweep meets it (the lowest {} is {:.1} s, {} {} at {:.2}x)",
                metric.name(),
                metric.of(best),
                best.policy.as_str(),
                best.knobs.describe(),
                best.ratio_to_oracle
            ),
            None => format!("{target}: no point was run"),
        },
    };
    Answer {
        metric,
        max_s,
        point,
        ratio_to_oracle: point.map(|i| points[i].ratio_to_oracle),
        sentence,
    }
}

/// Chart size of one panel of [`frontier_svg`], in pixels.
const PANEL_W: f64 = 600.0;
const PANEL_H: f64 = 420.0;
const GAP: f64 = 16.0;
/// Waits below this are drawn at it (the y axis is logarithmic).
const WAIT_FLOOR_S: f64 = 0.1;
/// The colour of a policy: the colours `capstan simulate --compare reactive,forecast`
/// gives them.
fn policy_color(policy: ScalingPolicy) -> &'static str {
    match policy {
        ScalingPolicy::Reactive => run_color(0),
        ScalingPolicy::Forecast => run_color(1),
    }
}

/// A standalone SVG of a sweep (no scripts, no external references): two panels, the
/// mean wait and the p95 wait (log scale) against the ratio to the oracle. Each
/// point is a dot in its policy's colour labelled with its knob (the service level;
/// ratio/idle timeout for reactive), filled when it is on its policy's frontier, and
/// each policy's frontier is joined by a line.
pub fn frontier_svg(title: &str, points: &[SweepPoint]) -> String {
    let panels = [WaitMetric::Mean, WaitMetric::P95].map(|m| frontier_panel(points, m));
    let width = 2.0 * PANEL_W + 3.0 * GAP;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<text x="{GAP}" y="26" font-size="17" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let y = 40.0;
    for (k, chart) in panels.iter().enumerate() {
        body.push_str(&chart.svg(Some((GAP + k as f64 * (PANEL_W + GAP), y))));
    }
    let caption = format!(
        "Each dot is one replay of the trace: blue reactive (labelled ratio/idle timeout), orange forecast (labelled with its service level). Filled dots and lines: each policy's frontier, the settings no other setting of that policy beats on both cost and wait. x: instance time over the oracle's (the least any policy could spend with no wait); waits under {WAIT_FLOOR_S} s are drawn at {WAIT_FLOOR_S} s."
    );
    let lines = wrap(&caption, (width / CAPTION_CHAR_W) as usize - 6);
    let mut height = y + PANEL_H + 12.0;
    for line in &lines {
        let _ = write!(
            body,
            r##"<text x="{GAP}" y="{height:.0}" fill="#333333">{}</text>"##,
            escape(line)
        );
        height += 14.0;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#ffffff"/>{body}</svg>
"##
    )
}

/// Round ticks over `[lo, hi]` of the cost axis, at most about eight.
fn ratio_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let step = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|s| (hi - lo) / s <= 8.0)
        .unwrap_or(20.0);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn frontier_panel(points: &[SweepPoint], metric: WaitMetric) -> crate::plot::Chart {
    let (mut lo, mut hi) = points
        .iter()
        .map(|p| p.ratio_to_oracle)
        .filter(|r| r.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        });
    if lo > hi {
        (lo, hi) = (1.0, 2.0);
    }
    let pad = ((hi - lo) * 0.06).max(0.02);
    let (lo, hi) = (lo - pad, hi + pad);
    let longest = points
        .iter()
        .map(|p| metric.of(p))
        .filter(|w| w.is_finite())
        .fold(WAIT_FLOOR_S, f64::max);
    let (top, ticks) = wait_axis(WAIT_FLOOR_S, longest * 1.3, 10.0);
    let mut f = Frame::new(PANEL_W, PANEL_H, (lo, hi), (WAIT_FLOOR_S, top), true);
    f.title(&format!("{} wait against cost", metric.name()));
    f.y_axis(&ticks, &format!("{} wait (log scale)", metric.name()));
    let x_ticks: Vec<(f64, String)> = ratio_ticks(lo, hi)
        .into_iter()
        .map(|v| (v, format!("{}x", number(v))))
        .collect();
    // The oracle's cost, where it is in view.
    if (lo..=hi).contains(&1.0) {
        let px = f.x.px(1.0);
        let _ = write!(
            f.body,
            r#"<path class="ref" d="M{px:.1} {:.1}V{:.1}" stroke="{AXIS_COLOR}" stroke-width="1" stroke-dasharray="4 3" fill="none"/><text x="{:.1}" y="{:.1}" fill="{AXIS_COLOR}">oracle</text>"#,
            f.y.px(WAIT_FLOOR_S),
            f.y.px(top),
            px + 3.0,
            f.y.px(top) + 10.0
        );
    }
    for policy in [ScalingPolicy::Reactive, ScalingPolicy::Forecast] {
        let color = policy_color(policy);
        let mine: Vec<SweepPoint> = points
            .iter()
            .filter(|p| p.policy == policy)
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let frontier = pareto_frontier(&mine, metric);
        let mut d = String::new();
        for (k, &i) in frontier.iter().enumerate() {
            let (x, y) = (f.x.px(mine[i].ratio_to_oracle), f.y.px(metric.of(&mine[i])));
            let _ = write!(d, "{}{x:.1} {y:.1}", if k == 0 { "M" } else { "L" });
        }
        f.series(
            &d,
            &format!(r#"fill="none" stroke="{color}" stroke-width="1.6""#),
        );
        // Forecast labels above their dots, reactive ones below, so the two policies'
        // labels do not overlap where their points meet.
        let label_dy = match policy {
            ScalingPolicy::Forecast => -4.0,
            ScalingPolicy::Reactive => 11.0,
        };
        for (i, p) in mine.iter().enumerate() {
            let (x, y) = (f.x.px(p.ratio_to_oracle), f.y.px(metric.of(p)));
            let fill = if frontier.contains(&i) {
                color
            } else {
                "#ffffff"
            };
            let _ = write!(
                f.body,
                r#"<circle class="point" data-policy="{}" cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{fill}" stroke="{color}" stroke-width="1.5"><title>{}</title></circle><text x="{:.1}" y="{:.1}" font-size="9" fill="{color}">{}</text>"#,
                policy.as_str(),
                escape(&format!(
                    "{}: {} wait {}",
                    p.describe(),
                    metric.name(),
                    duration_label(metric.of(p))
                )),
                x + 5.0,
                label_dy + y,
                escape(&p.knobs.short())
            );
        }
        let legend = match policy {
            ScalingPolicy::Reactive => "reactive (ratio/idle timeout)",
            ScalingPolicy::Forecast => "forecast (service level)",
        };
        f.legend(Swatch::Line(color), legend);
    }
    f.x_axis(&x_ticks, "cost: instance time over the oracle's");
    f.into_chart(
        "frontier",
        format!(
            "{} wait against cost, every setting of the sweep",
            metric.name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SimConfig;
    use crate::trace::Task;
    use capstan_core::Timestamp;

    fn point(knobs: Knobs, ratio: f64, mean: f64, p95: f64) -> SweepPoint {
        SweepPoint {
            policy: knobs.policy(),
            knobs,
            ratio_to_oracle: ratio,
            instance_hours: ratio * 100.0,
            cost: ratio * 100.0,
            wait_mean_s: mean,
            wait_p50_s: mean / 2.0,
            wait_p95_s: p95,
            wait_p99_s: p95 * 2.0,
            wait_max_s: p95 * 4.0,
            utilization: 1.0 / ratio,
            launches: 10,
            unfinished: 0,
        }
    }

    fn f(level: f64, ratio: f64, mean: f64, p95: f64) -> SweepPoint {
        point(
            Knobs::Forecast {
                service_level: level,
            },
            ratio,
            mean,
            p95,
        )
    }

    fn r(ratio_knob: f64, ratio: f64, mean: f64, p95: f64) -> SweepPoint {
        point(
            Knobs::Reactive {
                ratio: ratio_knob,
                idle_timeout_s: 600,
            },
            ratio,
            mean,
            p95,
        )
    }

    #[test]
    fn the_frontier_keeps_exactly_the_undominated_points_sorted_by_cost() {
        let points = [
            f(0.9, 1.20, 10.0, 60.0), // 0: on (the cheapest)
            f(0.95, 1.30, 5.0, 40.0), // 1: on
            f(0.97, 1.35, 6.0, 30.0), // 2: mean: beaten by 1; p95: on
            r(1.0, 1.25, 12.0, 90.0), // 3: beaten by 0 on both
            r(2.0, 1.40, 5.0, 40.0),  // 4: the waits of 1, dearer
            f(0.99, 1.50, 1.0, 20.0), // 5: on
            f(0.98, 1.50, 1.0, 20.0), // 6: equal to 5: both kept
        ];
        assert_eq!(pareto_frontier(&points, WaitMetric::Mean), vec![0, 1, 5, 6]);
        assert_eq!(
            pareto_frontier(&points, WaitMetric::P95),
            vec![0, 1, 2, 5, 6]
        );
        // p99 here is twice p95: the same frontier.
        assert_eq!(
            pareto_frontier(&points, WaitMetric::P99),
            vec![0, 1, 2, 5, 6]
        );
        assert_eq!(pareto_frontier(&[], WaitMetric::Mean), Vec::<usize>::new());
        // A point only cheaper, not quicker, is on it too.
        let two = [f(0.9, 1.0, 50.0, 50.0), f(0.95, 2.0, 10.0, 10.0)];
        assert_eq!(pareto_frontier(&two, WaitMetric::Mean), vec![0, 1]);
    }

    #[test]
    fn forecast_dominates_reactive_only_with_a_cheaper_quicker_point_for_each() {
        let forecast = [f(0.5, 1.10, 8.0, 50.0), f(0.95, 1.30, 3.0, 30.0)];
        let reactive = [r(1.0, 1.15, 9.0, 50.0), r(2.0, 1.40, 4.0, 35.0)];
        assert_eq!(dominates_reactive(&forecast, &reactive), Ok(()));

        // Equal mean is not lower; a p95 above is not "no higher"; dearer does not count.
        let reactive = [
            r(1.0, 1.15, 8.0, 50.0),
            r(2.0, 1.35, 4.0, 29.0),
            r(4.0, 1.05, 20.0, 100.0),
        ];
        let errors = dominates_reactive(&forecast, &reactive).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].starts_with("reactive ratio 1, idle timeout 600 s (1.150x, mean 8.0 s, p95 50.0 s) is not dominated: no forecast point at <= 1.150x has a mean under 8.0 s and a p95 <= 50.0 s"),
            "{}",
            errors[0]
        );
        assert!(
            errors[0].ends_with("the quickest at that cost is forecast service level 0.5 (1.100x, mean 8.0 s, p95 50.0 s)"),
            "{}",
            errors[0]
        );
        assert!(errors[1].contains("reactive ratio 2,"), "{}", errors[1]);
        assert!(
            errors[2].ends_with("every forecast point costs more, the cheapest is forecast service level 0.5 (1.100x, mean 8.0 s, p95 50.0 s)"),
            "{}",
            errors[2]
        );
        // No reactive point: nothing to dominate.
        assert_eq!(dominates_reactive(&forecast, &[]), Ok(()));
        assert!(
            dominates_reactive(&[], &reactive[..1]).unwrap_err()[0]
                .ends_with("there is no forecast point")
        );
    }

    #[test]
    fn the_cheapest_point_meeting_a_target_answers_in_words() {
        let points = [
            r(1.0, 1.06, 20.0, 150.0),
            f(0.5, 1.12, 16.0, 120.0),
            f(0.95, 1.24, 6.0, 58.0),
            f(0.99, 1.40, 2.0, 25.0),
            r(4.0, 1.30, 9.0, 60.0),
        ];
        assert_eq!(cheapest_meeting(&points, WaitMetric::P95, 60.0), Some(2));
        assert_eq!(cheapest_meeting(&points, WaitMetric::P95, 57.0), Some(3));
        assert_eq!(cheapest_meeting(&points, WaitMetric::P95, 120.0), Some(1));
        assert_eq!(cheapest_meeting(&points, WaitMetric::P95, 10.0), None);
        assert_eq!(cheapest_meeting(&points, WaitMetric::Mean, 10.0), Some(2));
        let a = answers(&points);
        assert_eq!(a.len(), 4);
        assert_eq!(a[1].point, Some(2));
        assert_eq!(
            a[1].sentence,
            "p95 <= 60 s costs 1.24x the oracle (forecast service level 0.95: mean 6.0 s, p95 58.0 s)"
        );
        assert_eq!(a[0].point, Some(3));
        let none = answer(&points, WaitMetric::P95, 10.0);
        assert_eq!(none.ratio_to_oracle, None);
        assert_eq!(
            none.sentence,
            "p95 <= 10 s: no point of the sweep meets it (the lowest p95 is 25.0 s, forecast service level 0.99 at 1.40x)"
        );
    }

    #[test]
    fn the_grid_is_the_documented_default_in_order_and_checks_its_values() {
        let grid = sweep_grid(&GridChoice::default(), Some(600)).unwrap();
        assert_eq!(grid.len(), 17 + 9);
        let levels: Vec<f64> = grid
            .iter()
            .filter_map(|k| match k {
                Knobs::Forecast { service_level } => Some(*service_level),
                Knobs::Reactive { .. } => None,
            })
            .collect();
        assert_eq!(levels, DEFAULT_LEVELS);
        assert_eq!(
            grid[17..],
            [
                (1.0, 300),
                (1.0, 600),
                (1.0, 1200),
                (2.0, 300),
                (2.0, 600),
                (2.0, 1200),
                (4.0, 300),
                (4.0, 600),
                (4.0, 1200)
            ]
            .map(|(ratio, idle_timeout_s)| Knobs::Reactive {
                ratio,
                idle_timeout_s
            })
        );
        assert_eq!(grid, sweep_grid(&GridChoice::default(), Some(600)).unwrap());
        // A pool that leaves the idle timeout to capstan centres reactive on 600 s.
        assert_eq!(grid, sweep_grid(&GridChoice::default(), None).unwrap());
        let around_100 = sweep_grid(&GridChoice::default(), Some(100)).unwrap();
        assert_eq!(
            around_100[17..20],
            [50, 100, 200].map(|idle_timeout_s| Knobs::Reactive {
                ratio: 1.0,
                idle_timeout_s
            })
        );

        // Given values are sorted and deduplicated.
        let choice = GridChoice {
            levels: Some(vec![0.9, 0.5, 0.9]),
            ratios: Some(vec![2.0]),
            idle_timeouts_s: Some(vec![60, 30]),
        };
        assert_eq!(
            sweep_grid(&choice, Some(600)).unwrap(),
            vec![
                Knobs::Forecast { service_level: 0.5 },
                Knobs::Forecast { service_level: 0.9 },
                Knobs::Reactive {
                    ratio: 2.0,
                    idle_timeout_s: 30
                },
                Knobs::Reactive {
                    ratio: 2.0,
                    idle_timeout_s: 60
                },
            ]
        );
        let bad = |choice: GridChoice| sweep_grid(&choice, Some(600)).unwrap_err().to_string();
        assert_eq!(
            bad(GridChoice {
                levels: Some(vec![0.5, 1.0]),
                ..Default::default()
            }),
            "levels: a service level must be in [0, 1), got 1"
        );
        assert_eq!(
            bad(GridChoice {
                levels: Some(vec![-0.1]),
                ..Default::default()
            }),
            "levels: a service level must be in [0, 1), got -0.1"
        );
        assert_eq!(
            bad(GridChoice {
                ratios: Some(vec![0.0]),
                ..Default::default()
            }),
            "ratios: a scaling ratio must be > 0 and <= 100, got 0"
        );
        assert_eq!(
            bad(GridChoice {
                ratios: Some(vec![f64::NAN]),
                ..Default::default()
            }),
            "ratios: a scaling ratio must be > 0 and <= 100, got NaN"
        );
        assert_eq!(
            bad(GridChoice {
                idle_timeouts_s: Some(vec![]),
                ..Default::default()
            }),
            "idle_timeouts: give at least one idle timeout"
        );
    }

    /// Two days of a small pool: 40 tasks an hour of 2–20 minutes, with a burst of 30
    /// every 6 hours.
    fn small_trace() -> Trace {
        let mut tasks = Vec::new();
        let mut x: u64 = 12345;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for k in 0..(2 * 24 * 40) {
            let submit_ms = k * 90_000 + (next() % 60_000) as i64;
            tasks.push(Task {
                submit_ms,
                run_ms: 120_000 + (next() % 1_080_000) as i64,
            });
        }
        for burst in 0..8 {
            for _ in 0..30 {
                tasks.push(Task {
                    submit_ms: burst * 6 * 3_600_000 + (next() % 60_000) as i64,
                    run_ms: 300_000,
                });
            }
        }
        Trace::from_tasks(Timestamp::from_unix_secs(1_767_571_200), tasks)
    }

    #[test]
    fn a_sweep_is_deterministic_in_grid_order_whatever_the_threads() {
        let trace = small_trace();
        let base = SimConfig::default_setting(ScalingPolicy::Reactive, 3);
        let choice = GridChoice {
            levels: Some(vec![0.0, 0.5, 0.95]),
            ratios: Some(vec![1.0, 4.0]),
            idle_timeouts_s: Some(vec![600]),
        };
        let grid = sweep_grid(&choice, base.spec.scaling.idle_timeout_s).unwrap();
        let calls = AtomicUsize::new(0);
        let seen_total = AtomicUsize::new(0);
        let progress = |done: usize, total: usize| {
            calls.fetch_add(1, Ordering::Relaxed);
            assert!(done >= 1 && done <= total);
            seen_total.store(total, Ordering::Relaxed);
        };
        let one = run_sweep(&trace, &base, &grid, 1, &progress).unwrap();
        let two = run_sweep(&trace, &base, &grid, 2, &progress).unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 2 * grid.len());
        assert_eq!(seen_total.load(Ordering::Relaxed), grid.len());
        assert_eq!(one, two);
        assert_eq!(one.iter().map(|p| p.knobs).collect::<Vec<_>>(), grid);
        // Each point is that setting's own replay.
        let alone = simulate(&trace, &grid[4].config(&base), &mut |_| {}).unwrap();
        assert_eq!(one[4], SweepPoint::new(grid[4], &alone.report));
        assert_eq!(one[4].policy, ScalingPolicy::Reactive);
        // The settings differ, and so do their results.
        assert_ne!(one[0].ratio_to_oracle, one[2].ratio_to_oracle);
        assert_ne!(one[3].wait_mean_s, one[4].wait_mean_s);
        // JSON round trip keeps the knobs apart.
        let json = serde_json::to_string(&one).unwrap();
        assert!(json.contains(r#""knobs":{"service_level":0.5}"#), "{json}");
        assert!(
            json.contains(r#""knobs":{"ratio":4.0,"idle_timeout_s":600}"#),
            "{json}"
        );
        // (serde_json may round a float's last bit on reading: compare the knobs.)
        let back: Vec<SweepPoint> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.iter().map(|p| (p.policy, p.knobs)).collect::<Vec<_>>(),
            one.iter().map(|p| (p.policy, p.knobs)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn reactive_knobs_set_the_idle_timeout_and_forecast_knobs_keep_the_pools() {
        let base = SimConfig::default_setting(ScalingPolicy::Forecast, 3);
        assert_eq!(base.spec.scaling.idle_timeout_s, None);
        let forecast = Knobs::Forecast { service_level: 0.0 }.config(&base);
        assert_eq!(forecast.spec.scaling.idle_timeout_s, None);
        // Level 0 runs as 0 itself: the spec accepts it.
        assert_eq!(forecast.spec.scaling.service_level, 0.0);
        forecast.spec.validate().unwrap();
        let reactive = Knobs::Reactive {
            ratio: 2.0,
            idle_timeout_s: 300,
        }
        .config(&base);
        assert_eq!(reactive.spec.scaling.policy, ScalingPolicy::Reactive);
        assert_eq!(reactive.spec.scaling.idle_timeout_s, Some(300));
        assert_eq!(reactive.spec.scaling.scaling_ratio, 2.0);
        let mut fixed = base.clone();
        fixed.spec.scaling.idle_timeout_s = Some(900);
        let forecast = Knobs::Forecast { service_level: 0.9 }.config(&fixed);
        assert_eq!(forecast.spec.scaling.idle_timeout_s, Some(900));
    }

    #[test]
    fn a_failing_setting_fails_the_sweep() {
        let trace = small_trace();
        let mut base = SimConfig::default_setting(ScalingPolicy::Reactive, 3);
        base.spec.launch_configs.clear();
        let grid = [Knobs::Forecast { service_level: 0.9 }];
        let err = run_sweep(&trace, &base, &grid, 2, &|_, _| {}).unwrap_err();
        assert!(err.to_string().contains("launch_configs"), "{err}");
    }

    #[test]
    fn the_svg_is_standalone_with_both_policies_and_their_frontiers() {
        let points = [
            r(1.0, 1.06, 20.0, 150.0),
            r(2.0, 1.10, 18.0, 140.0),
            f(0.5, 1.12, 16.0, 120.0),
            f(0.95, 1.24, 0.05, 58.0),
            f(0.99, 1.40, 2.0, 25.0),
        ];
        let svg = frontier_svg("capstan simulate --sweep: workload <diurnal>", &points);
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());
        assert_eq!(svg.matches(r#"data-kind="frontier""#).count(), 2);
        assert!(svg.contains("workload &lt;diurnal&gt;"));
        assert!(!svg.contains("<script"));
        for policy in ["reactive", "forecast"] {
            assert_eq!(
                svg.matches(&format!(r#"data-policy="{policy}""#)).count(),
                2 * points
                    .iter()
                    .filter(|p| p.policy.as_str() == policy)
                    .count(),
                "{policy}: a dot per point per panel"
            );
        }
        // Two frontier lines per panel.
        assert!(svg.contains(r#"data-series="2""#));
        assert!(!svg.contains(r#"data-series="1""#));
        // The knobs label the dots.
        assert!(svg.contains(">0.95</text>") && svg.contains(">2/600s</text>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // One policy only: still a chart, with one line.
        let only = frontier_svg("t", &points[2..]);
        assert!(only.contains(r#"data-series="1""#) && !only.contains(r#"data-policy="reactive""#));
    }
}
