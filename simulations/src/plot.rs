//! Charts of simulation runs as plain SVG: the same drawing serves the HTML report
//! ([`crate::report`]) and the standalone `--plot` file ([`svg_document`]).
//!
//! A reader compares policies, so every run gets its own panels and they share
//! scales:
//!
//! - **whole run**, one panel per run: demand (grey area), capacity (the run's colour)
//!   and queue (red area) over the whole span, on one y scale for all runs;
//! - **busiest day**, beside it: the same over the day with the highest peak demand
//!   ([`busiest_day`]), bucket by bucket, with instances booting, so bursts and
//!   overshoot are visible;
//! - **cost**: the cumulative cost of every run in one panel;
//! - **wait**: the mean wait of the tasks started in each column on a log scale, with
//!   each run's p95 as a dashed line.
//!
//! Long series are reduced to one bin per pixel column (levels keep their maxima,
//! waits their start-weighted mean), so a 974-day trace draws about as many path
//! points as a one-day one and the page stays small. The SVG is written by hand
//! rather than with a plotting crate: the charts are a few paths, ticks and labels,
//! and writing them directly keeps the output byte-for-byte deterministic, free of
//! fonts and external references, and styled with presentation attributes so it
//! looks the same inline in HTML, opened as a file, or embedded as an image.
//!
//! Every chart is `<svg class="chart" data-kind=".." data-series="N">` and each drawn
//! series in it is one `<path class="series">` with a non-empty `d`; `N` is their
//! count (reference lines such as the p95 are `class="ref"` and not counted).

use std::fmt::Write as _;
use std::ops::Range;

use crate::engine::SeriesPoint;
use crate::report::ReportRun;

/// Seconds in a day.
const DAY_S: f64 = 86_400.0;

/// Ticks of a wait axis on a log scale.
const WAIT_TICKS: [(f64, &str); 9] = [
    (0.1, "0.1 s"),
    (1.0, "1 s"),
    (10.0, "10 s"),
    (60.0, "1 min"),
    (600.0, "10 min"),
    (3600.0, "1 h"),
    (36_000.0, "10 h"),
    (DAY_S, "1 day"),
    (10.0 * DAY_S, "10 days"),
];

/// A logarithmic wait axis from `floor`: its top, the first tick at or above both
/// `highest` and `at_least` (or `highest` past the last tick), and its ticks.
pub(crate) fn wait_axis(floor: f64, highest: f64, at_least: f64) -> (f64, Vec<(f64, String)>) {
    let top = WAIT_TICKS
        .iter()
        .map(|t| t.0)
        .find(|t| *t >= highest && *t >= at_least)
        .unwrap_or(highest);
    let ticks = WAIT_TICKS
        .iter()
        .filter(|t| t.0 >= floor && t.0 <= top)
        .map(|&(v, label)| (v, label.to_string()))
        .collect();
    (top, ticks)
}

/// The colour of each run, in order (no red: red is the queue's).
const RUN_COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
];
const DEMAND_FILL: &str = "#bdbdbd";
const QUEUE_COLOR: &str = "#d62728";
const BOOTING_COLOR: &str = "#444444";
pub(crate) const GRID_COLOR: &str = "#e6e6e6";
pub(crate) const AXIS_COLOR: &str = "#888888";

/// Chart sizes in pixels: the whole-run panel and the day beside it fill one row, cost
/// and wait another.
const WHOLE_W: f64 = 760.0;
const DAY_W: f64 = 420.0;
const LEVEL_H: f64 = 260.0;
const BOTTOM_W: f64 = 590.0;
const BOTTOM_H: f64 = 280.0;
const GAP: f64 = 16.0;
const MARGIN_LEFT: f64 = 60.0;
const MARGIN_RIGHT: f64 = 16.0;
const MARGIN_TOP: f64 = 44.0;
const MARGIN_BOTTOM: f64 = 38.0;

/// The colour of run number `i`.
pub(crate) fn run_color(i: usize) -> &'static str {
    RUN_COLORS[i % RUN_COLORS.len()]
}

/// The day shown in detail beside the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusiestDay {
    /// Days after the first submit: the day covers `[index, index + 1)` days.
    pub index: u64,
    /// Its peak demand (tasks running or waiting), the highest of any day in any run.
    pub peak_demand: u32,
}

/// The day with the highest peak demand over all runs (the earliest of equals), or
/// `None` when no run's series reaches past its first day (then the whole run is
/// already a one-day view).
pub fn busiest_day(runs: &[ReportRun]) -> Option<BusiestDay> {
    let reaches_past_a_day = runs
        .iter()
        .any(|r| r.series.last().is_some_and(|p| p.t_s >= DAY_S));
    if !reaches_past_a_day {
        return None;
    }
    let mut best: Option<BusiestDay> = None;
    for run in runs {
        for p in &run.series {
            let index = (p.t_s.max(0.0) / DAY_S).floor() as u64;
            let better = match best {
                None => true,
                Some(b) => {
                    p.demand > b.peak_demand || (p.demand == b.peak_demand && index < b.index)
                }
            };
            if better {
                best = Some(BusiestDay {
                    index,
                    peak_demand: p.demand,
                });
            }
        }
    }
    best
}

/// One chart and the sentence under it.
pub(crate) struct Figure {
    pub chart: Chart,
    pub caption: String,
}

/// Every figure of a set of runs, in reading order.
pub(crate) struct Figures {
    /// Per run: its whole-run panel and, when the runs span more than a day, its
    /// busiest-day panel.
    pub runs: Vec<(Figure, Option<Figure>)>,
    /// Cumulative cost of every run.
    pub cost: Figure,
    /// Mean wait of every run.
    pub wait: Figure,
}

/// Builds the figures of `runs` (any number, including runs without a series).
pub(crate) fn figures(runs: &[ReportRun]) -> Figures {
    let span = Span::of(runs);
    let level_max = nice_ceil(
        runs.iter()
            .flat_map(|r| r.series.iter())
            .map(|p| p.demand.max(p.capacity).max(p.queue))
            .max()
            .unwrap_or(0)
            .max(1) as f64,
    );
    let day = busiest_day(runs);
    let per_run = runs
        .iter()
        .enumerate()
        .map(|(i, run)| {
            let whole = whole_run_figure(run, i, &span, level_max);
            let detail = day.map(|d| day_figure(run, i, d, level_max));
            (whole, detail)
        })
        .collect();
    Figures {
        runs: per_run,
        cost: cost_figure(runs, &span),
        wait: wait_figure(runs, &span),
    }
}

/// A standalone SVG file of `runs`: the title, then per run its whole-run panel with
/// the busiest day beside it, then cost and wait side by side, each with its caption.
pub fn svg_document(title: &str, runs: &[ReportRun]) -> String {
    let figs = figures(runs);
    let width = WHOLE_W + GAP + DAY_W + 2.0 * GAP;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<text x="{GAP}" y="26" font-size="17" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let mut y = 40.0;
    // Places `fig` at (x, y) with its caption wrapped under it; returns the height used.
    let place = |body: &mut String, fig: &Figure, x: f64, y: f64| -> f64 {
        body.push_str(&fig.chart.svg(Some((x, y))));
        let chars = (fig.chart.width / CAPTION_CHAR_W) as usize;
        let lines = wrap(&fig.caption, chars);
        for (k, line) in lines.iter().enumerate() {
            let _ = write!(
                body,
                r##"<text x="{x}" y="{:.0}" fill="#333333">{}</text>"##,
                y + fig.chart.height + 12.0 + 14.0 * k as f64,
                escape(line)
            );
        }
        fig.chart.height + 14.0 * lines.len() as f64 + 12.0
    };
    for (whole, detail) in &figs.runs {
        let mut used = place(&mut body, whole, GAP, y);
        if let Some(detail) = detail {
            used = used.max(place(&mut body, detail, GAP + WHOLE_W + GAP, y));
        }
        y += used;
    }
    let used = place(&mut body, &figs.cost, GAP, y);
    y += used.max(place(&mut body, &figs.wait, GAP + BOTTOM_W + GAP, y));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{y:.0}" viewBox="0 0 {width:.0} {y:.0}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#ffffff"/>{body}</svg>
"##
    )
}

/// About the width of a caption character at 11 px, for wrapping in plain SVG.
pub(crate) const CAPTION_CHAR_W: f64 = 5.9;

/// `text` cut into lines of at most `width` characters at spaces.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A drawn chart: the inside of an `<svg>` element and what it needs to be one.
pub(crate) struct Chart {
    kind: &'static str,
    pub width: f64,
    pub height: f64,
    /// What the chart shows, for `<title>` (screen readers, tooltips).
    title: String,
    body: String,
    series: usize,
}

impl Chart {
    /// The chart as an `<svg>` element; `at` places it inside a larger SVG.
    pub fn svg(&self, at: Option<(f64, f64)>) -> String {
        let place = at.map_or_else(String::new, |(x, y)| format!(r#" x="{x:.0}" y="{y:.0}""#));
        format!(
            r#"<svg class="chart" data-kind="{}" data-series="{}"{place} width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="sans-serif" font-size="11" role="img"><title>{}</title>{}</svg>"#,
            self.kind,
            self.series,
            escape(&self.title),
            self.body,
            w = self.width,
            h = self.height,
        )
    }
}

/// The time span every whole-run chart shares: from the first submit to the latest
/// end of any run, in days for runs over three days and hours otherwise.
struct Span {
    end_s: f64,
    unit: TimeUnit,
}

impl Span {
    fn of(runs: &[ReportRun]) -> Self {
        let end_s = runs
            .iter()
            .map(|r| {
                let last = r.series.last().map_or(0.0, |p| p.t_s);
                r.report.sim_seconds.max(last)
            })
            .fold(0.0, f64::max)
            .max(1.0);
        let unit = if end_s > 3.0 * DAY_S {
            TimeUnit::Days
        } else {
            TimeUnit::Hours
        };
        Self { end_s, unit }
    }
}

#[derive(Clone, Copy)]
enum TimeUnit {
    Hours,
    Days,
}

impl TimeUnit {
    fn seconds(self) -> f64 {
        match self {
            Self::Hours => 3600.0,
            Self::Days => DAY_S,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hours => "hours",
            Self::Days => "days",
        }
    }
}

/// Bucket length of a series: the distance between its first two points, else
/// `fallback_s`.
fn bucket_s(series: &[SeriesPoint], fallback_s: f64) -> f64 {
    match series {
        [a, b, ..] if b.t_s > a.t_s => b.t_s - a.t_s,
        _ => fallback_s.max(1.0),
    }
}

/// Consecutive points drawn as one step over `[t0, t1)`.
struct Bin {
    t0: f64,
    t1: f64,
    points: Range<usize>,
}

/// The points of `series` starting in `[from, to)`, as at most `max_bins` bins of equal
/// width (each point its own bin when they are few enough). Steps end at `to`.
fn bins(series: &[SeriesPoint], bucket: f64, from: f64, to: f64, max_bins: usize) -> Vec<Bin> {
    let lo = series.partition_point(|p| p.t_s < from);
    let hi = series.partition_point(|p| p.t_s < to);
    let end = |i: usize| (series[i].t_s + bucket).min(to);
    if hi - lo <= max_bins {
        return (lo..hi)
            .map(|i| Bin {
                t0: series[i].t_s,
                t1: end(i),
                points: i..i + 1,
            })
            .collect();
    }
    let width = (to - from) / max_bins as f64;
    let mut out = Vec::with_capacity(max_bins);
    let mut i = lo;
    while i < hi {
        let column = ((series[i].t_s - from) / width).floor();
        let column_end = from + (column + 1.0) * width;
        let j = (i + series[i..hi].partition_point(|p| p.t_s < column_end)).max(i + 1);
        out.push(Bin {
            t0: series[i].t_s,
            t1: end(j - 1),
            points: i..j,
        });
        i = j;
    }
    out
}

/// A linear or log axis mapped onto a pixel range.
#[derive(Clone, Copy)]
pub(crate) struct Scale {
    lo: f64,
    hi: f64,
    /// Pixel of `lo` and of `hi` (y grows downwards, so `lo` is the larger pixel).
    px_lo: f64,
    px_hi: f64,
    log: bool,
}

impl Scale {
    pub(crate) fn px(&self, v: f64) -> f64 {
        let f = if self.log {
            let (lo, hi) = (self.lo.log10(), self.hi.log10());
            (v.max(self.lo).log10() - lo) / (hi - lo)
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        self.px_lo + f.clamp(0.0, 1.0) * (self.px_hi - self.px_lo)
    }
}

/// The frame of one chart: plot area, scales, title, legend and axes.
pub(crate) struct Frame {
    width: f64,
    height: f64,
    pub(crate) x: Scale,
    pub(crate) y: Scale,
    pub(crate) body: String,
    series: usize,
    legend_x: f64,
}

/// How a legend entry is drawn.
pub(crate) enum Swatch<'a> {
    Area(&'a str),
    Line(&'a str),
    Dashed(&'a str),
}

impl Frame {
    pub(crate) fn new(width: f64, height: f64, x: (f64, f64), y: (f64, f64), log_y: bool) -> Self {
        let x = Scale {
            lo: x.0,
            hi: if x.1 > x.0 { x.1 } else { x.0 + 1.0 },
            px_lo: MARGIN_LEFT,
            px_hi: width - MARGIN_RIGHT,
            log: false,
        };
        let y = Scale {
            lo: y.0,
            hi: if y.1 > y.0 { y.1 } else { y.0 + 1.0 },
            px_lo: height - MARGIN_BOTTOM,
            px_hi: MARGIN_TOP,
            log: log_y,
        };
        Self {
            width,
            height,
            x,
            y,
            body: String::new(),
            series: 0,
            legend_x: MARGIN_LEFT,
        }
    }

    pub(crate) fn title(&mut self, text: &str) {
        let _ = write!(
            self.body,
            r#"<text x="{MARGIN_LEFT}" y="15" font-size="13" font-weight="bold">{}</text>"#,
            escape(text)
        );
    }

    pub(crate) fn legend(&mut self, swatch: Swatch<'_>, label: &str) {
        let (x, y) = (self.legend_x, 31.0);
        let _ = match swatch {
            Swatch::Area(color) => write!(
                self.body,
                r#"<rect x="{x}" y="{}" width="14" height="9" fill="{color}" fill-opacity="0.7"/>"#,
                y - 8.0
            ),
            Swatch::Line(color) => write!(
                self.body,
                r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"/>"#,
                y - 4.0,
                x + 14.0,
                y - 4.0
            ),
            Swatch::Dashed(color) => write!(
                self.body,
                r#"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="1.5" stroke-dasharray="4 3"/>"#,
                y - 4.0,
                x + 14.0,
                y - 4.0
            ),
        };
        let label = shorten(label, 48);
        let _ = write!(
            self.body,
            r#"<text x="{}" y="{y}">{}</text>"#,
            x + 18.0,
            escape(&label)
        );
        self.legend_x += 18.0 + 6.2 * label.chars().count() as f64 + 14.0;
    }

    /// Grid lines and labels of the y axis at `ticks`, and its name.
    pub(crate) fn y_axis(&mut self, ticks: &[(f64, String)], name: &str) {
        for (v, label) in ticks {
            let py = self.y.px(*v);
            let _ = write!(
                self.body,
                r#"<line x1="{}" y1="{py:.1}" x2="{}" y2="{py:.1}" stroke="{GRID_COLOR}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                self.x.px_lo,
                self.x.px_hi,
                self.x.px_lo - 5.0,
                py + 4.0,
                escape(label)
            );
        }
        let mid = (self.y.px_lo + self.y.px_hi) / 2.0;
        let _ = write!(
            self.body,
            r#"<text transform="translate(14 {mid:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            escape(name)
        );
    }

    /// Ticks and labels of the x axis at `ticks` (in seconds), and its name.
    pub(crate) fn x_axis(&mut self, ticks: &[(f64, String)], name: &str) {
        let base = self.y.px_lo;
        let _ = write!(
            self.body,
            r#"<line x1="{}" y1="{base}" x2="{}" y2="{base}" stroke="{AXIS_COLOR}"/><line x1="{}" y1="{}" x2="{}" y2="{base}" stroke="{AXIS_COLOR}"/>"#,
            self.x.px_lo, self.x.px_hi, self.x.px_lo, self.y.px_hi, self.x.px_lo
        );
        for (v, label) in ticks {
            let px = self.x.px(*v);
            let _ = write!(
                self.body,
                r#"<line x1="{px:.1}" y1="{base}" x2="{px:.1}" y2="{}" stroke="{AXIS_COLOR}"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
                base + 4.0,
                base + 15.0,
                escape(label)
            );
        }
        let _ = write!(
            self.body,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            (self.x.px_lo + self.x.px_hi) / 2.0,
            self.height - 4.0,
            escape(name)
        );
    }

    /// Adds one drawn series; an empty path draws nothing and is left out.
    pub(crate) fn series(&mut self, d: &str, attributes: &str) {
        if d.is_empty() {
            return;
        }
        self.series += 1;
        let _ = write!(self.body, r#"<path class="series" d="{d}" {attributes}/>"#);
    }

    /// A horizontal reference line (not a series) at `v`.
    fn reference(&mut self, v: f64, color: &str) {
        let py = self.y.px(v);
        let _ = write!(
            self.body,
            r#"<path class="ref" d="M{:.1} {py:.1}H{:.1}" stroke="{color}" stroke-width="1.2" stroke-dasharray="5 4" fill="none"/>"#,
            self.x.px_lo, self.x.px_hi
        );
    }

    /// Steps through `bins` at `value` (a gap where it is `None`).
    fn step_line(&self, bins: &[Bin], value: impl Fn(&Bin) -> Option<f64>) -> String {
        let mut d = String::new();
        let mut pen_down = false;
        for b in bins {
            match value(b) {
                Some(v) => {
                    let (x0, x1, y) = (self.x.px(b.t0), self.x.px(b.t1), self.y.px(v));
                    if pen_down {
                        let _ = write!(d, "V{y:.1}H{x1:.1}");
                    } else {
                        let _ = write!(d, "M{x0:.1} {y:.1}H{x1:.1}");
                    }
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        d
    }

    /// The area under the steps of `value` through `bins`.
    fn step_area(&self, bins: &[Bin], value: impl Fn(&Bin) -> f64) -> String {
        let Some(first) = bins.first() else {
            return String::new();
        };
        let base = self.y.px(self.y.lo);
        let mut d = format!("M{:.1} {base:.1}", self.x.px(first.t0));
        for b in bins {
            let _ = write!(d, "V{:.1}H{:.1}", self.y.px(value(b)), self.x.px(b.t1));
        }
        let _ = write!(d, "V{base:.1}H{:.1}Z", self.x.px(first.t0));
        d
    }

    pub(crate) fn into_chart(self, kind: &'static str, title: String) -> Chart {
        Chart {
            kind,
            width: self.width,
            height: self.height,
            title,
            body: self.body,
            series: self.series,
        }
    }
}

/// Max of `f` over a bin's points.
fn max_of(series: &[SeriesPoint], b: &Bin, f: impl Fn(&SeriesPoint) -> u32) -> f64 {
    f64::from(series[b.points.clone()].iter().map(f).max().unwrap_or(0))
}

/// Draws demand, capacity and queue (and booting when `booting`) of `run` over
/// `[from, to)` into `frame`.
fn draw_levels(frame: &mut Frame, run: &ReportRun, color: &str, bins: &[Bin], booting: bool) {
    let s = &run.series;
    let demand = frame.step_area(bins, |b| max_of(s, b, |p| p.demand));
    frame.series(
        &demand,
        &format!(r#"fill="{DEMAND_FILL}" fill-opacity="0.8""#),
    );
    let queue = frame.step_area(bins, |b| max_of(s, b, |p| p.queue));
    frame.series(
        &queue,
        &format!(r#"fill="{QUEUE_COLOR}" fill-opacity="0.45""#),
    );
    let capacity = frame.step_line(bins, |b| Some(max_of(s, b, |p| p.capacity)));
    frame.series(
        &capacity,
        &format!(r#"fill="none" stroke="{color}" stroke-width="1.5""#),
    );
    if booting {
        let line = frame.step_line(bins, |b| Some(max_of(s, b, |p| p.booting)));
        frame.series(
            &line,
            &format!(
                r#"fill="none" stroke="{BOOTING_COLOR}" stroke-width="1" stroke-dasharray="2 2""#
            ),
        );
    }
    frame.legend(Swatch::Area(DEMAND_FILL), "demand");
    frame.legend(Swatch::Line(color), "capacity");
    frame.legend(Swatch::Area(QUEUE_COLOR), "queue");
    if booting {
        frame.legend(Swatch::Dashed(BOOTING_COLOR), "booting");
    }
}

fn level_ticks(max: f64) -> Vec<(f64, String)> {
    nice_ticks(max)
        .into_iter()
        .map(|v| (v, number(v)))
        .collect()
}

fn time_ticks(span: &Span) -> Vec<(f64, String)> {
    let unit = span.unit.seconds();
    let step = nice_time_step(span.end_s / unit, span.unit);
    (0..)
        .map(|k| f64::from(k) * step)
        .take_while(|v| *v * unit <= span.end_s + 1e-9)
        .map(|v| (v * unit, number(v)))
        .collect()
}

fn plot_width(total: f64) -> usize {
    (total - MARGIN_LEFT - MARGIN_RIGHT) as usize
}

fn whole_run_figure(run: &ReportRun, i: usize, span: &Span, level_max: f64) -> Figure {
    let color = run_color(i);
    let mut f = Frame::new(WHOLE_W, LEVEL_H, (0.0, span.end_s), (0.0, level_max), false);
    f.title(&format!("{}: the whole run", run.label));
    let bucket = bucket_s(&run.series, run.report.sim_seconds);
    let bins = bins(&run.series, bucket, 0.0, span.end_s, plot_width(WHOLE_W));
    f.y_axis(&level_ticks(level_max), "slots / tasks");
    draw_levels(&mut f, run, color, &bins, false);
    f.x_axis(
        &time_ticks(span),
        &format!("{} since the first submit", span.unit.name()),
    );
    let per_column = bins
        .iter()
        .map(|b| b.points.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * bucket;
    let caption = if run.series.is_empty() {
        format!("{}: no series was recorded for this run.", run.label)
    } else {
        format!(
            "{}: the highest level of each {} (all runs on one scale).",
            run.label,
            duration(per_column)
        )
    };
    Figure {
        chart: f.into_chart(
            "whole",
            format!(
                "{}: demand, capacity and queue over the whole run",
                run.label
            ),
        ),
        caption,
    }
}

fn day_figure(run: &ReportRun, i: usize, day: BusiestDay, level_max: f64) -> Figure {
    let color = run_color(i);
    let from = day.index as f64 * DAY_S;
    let mut f = Frame::new(
        DAY_W,
        LEVEL_H,
        (from, from + DAY_S),
        (0.0, level_max),
        false,
    );
    f.title(&format!("{}: day {}, the busiest", run.label, day.index));
    let bucket = bucket_s(&run.series, run.report.sim_seconds);
    let bins = bins(&run.series, bucket, from, from + DAY_S, plot_width(DAY_W));
    f.y_axis(&level_ticks(level_max), "slots / tasks");
    draw_levels(&mut f, run, color, &bins, true);
    let ticks: Vec<(f64, String)> = (0..=8)
        .map(|k| (from + f64::from(k) * 3.0 * 3600.0, format!("{}", k * 3)))
        .collect();
    f.x_axis(&ticks, &format!("hours into day {}", day.index));
    Figure {
        chart: f.into_chart("day", format!("{}: day {} in detail", run.label, day.index)),
        caption: format!(
            "Day {} after the first submit: the day with the highest peak demand ({} tasks), per {}.",
            day.index,
            day.peak_demand,
            duration(bucket)
        ),
    }
}

fn cost_figure(runs: &[ReportRun], span: &Span) -> Figure {
    let max = nice_ceil(
        runs.iter()
            .flat_map(|r| r.series.iter().map(|p| p.cost).chain([r.report.cost]))
            .fold(0.0, f64::max),
    );
    let mut f = Frame::new(BOTTOM_W, BOTTOM_H, (0.0, span.end_s), (0.0, max), false);
    f.title("Cumulative cost");
    f.y_axis(&level_ticks(max), "cost");
    for (i, run) in runs.iter().enumerate() {
        let s = &run.series;
        let bucket = bucket_s(s, run.report.sim_seconds);
        let bins = bins(s, bucket, 0.0, span.end_s, plot_width(BOTTOM_W));
        let mut d = String::new();
        if !bins.is_empty() {
            let _ = write!(d, "M{:.1} {:.1}", f.x.px(0.0), f.y.px(0.0));
            for b in &bins {
                let cost = s[b.points.end - 1].cost;
                let _ = write!(d, "L{:.1} {:.1}", f.x.px(b.t1), f.y.px(cost));
            }
        }
        let color = run_color(i);
        f.series(
            &d,
            &format!(r#"fill="none" stroke="{color}" stroke-width="1.8""#),
        );
        f.legend(
            Swatch::Line(color),
            &format!("{} ({})", run.label, number(run.report.cost)),
        );
    }
    f.x_axis(
        &time_ticks(span),
        &format!("{} since the first submit", span.unit.name()),
    );
    Figure {
        chart: f.into_chart("cost", "Cumulative cost of every run".into()),
        caption: "Cost accrued so far: instances gone as billed, live ones up to the moment (in the prices' currency; the default pool's price of 1 per hour makes it instance-hours).".into(),
    }
}

fn wait_figure(runs: &[ReportRun], span: &Span) -> Figure {
    let highest = runs
        .iter()
        .flat_map(|r| {
            r.series
                .iter()
                .map(|p| p.wait_mean_s)
                .chain([r.report.wait_s.p95])
        })
        .fold(1.0, f64::max);
    let (top, ticks) = wait_axis(1.0, highest, 60.0);
    let mut f = Frame::new(BOTTOM_W, BOTTOM_H, (0.0, span.end_s), (1.0, top), true);
    f.title("Wait of the tasks started");
    f.y_axis(&ticks, "wait (log scale)");
    let mut widest = 0.0_f64;
    for (i, run) in runs.iter().enumerate() {
        let s = &run.series;
        let bucket = bucket_s(s, run.report.sim_seconds);
        // Three pixels a bin: a mean per pixel is noise more than a trend.
        let bins = bins(s, bucket, 0.0, span.end_s, plot_width(BOTTOM_W) / 3);
        widest = widest.max(bins.iter().map(|b| b.t1 - b.t0).fold(0.0, f64::max));
        let d = f.step_line(&bins, |b| {
            let (mut starts, mut sum) = (0u64, 0.0);
            for p in &s[b.points.clone()] {
                starts += u64::from(p.starts);
                sum += p.wait_mean_s * f64::from(p.starts);
            }
            (starts > 0).then(|| sum / starts as f64)
        });
        let color = run_color(i);
        f.series(
            &d,
            &format!(r#"fill="none" stroke="{color}" stroke-width="1.3""#),
        );
        f.reference(run.report.wait_s.p95, color);
        f.legend(
            Swatch::Line(color),
            &format!(
                "{} (p95 {})",
                run.label,
                duration_label(run.report.wait_s.p95)
            ),
        );
    }
    f.legend(Swatch::Dashed(AXIS_COLOR), "p95 of the run");
    f.x_axis(
        &time_ticks(span),
        &format!("{} since the first submit", span.unit.name()),
    );
    Figure {
        chart: f.into_chart("wait", "Mean wait over time of every run".into()),
        caption: format!(
            "Mean wait of the tasks that started in each {} (waits under 1 s drawn at 1 s; gaps: nothing started); dashed: each run's p95 over the whole run.",
            duration(widest.max(1.0))
        ),
    }
}

/// The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 × 10^k) at or above
/// `v`, at least 1: the top of a linear axis, tight enough that the data fills it.
fn nice_ceil(v: f64) -> f64 {
    if !(v.is_finite() && v > 1.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v - 1e-9 * magnitude)
        .unwrap_or(10.0 * magnitude)
}

/// About five round ticks from 0 to `max` (which [`nice_ceil`] made round).
fn nice_ticks(max: f64) -> Vec<f64> {
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw - 1e-9 * magnitude)
        .unwrap_or(10.0 * magnitude)
        .max(if max >= 5.0 { 1.0 } else { 0.0 });
    if step <= 0.0 {
        return vec![0.0, max];
    }
    (0..)
        .map(|k| f64::from(k) * step)
        .take_while(|v| *v <= max + 1e-9 * step)
        .collect()
}

/// A round tick step for an axis of `length` units (hours or days): at most about
/// ten ticks, on steps people count time in.
fn nice_time_step(length: f64, unit: TimeUnit) -> f64 {
    let steps: &[f64] = match unit {
        TimeUnit::Hours => &[1.0, 2.0, 3.0, 6.0, 12.0, 24.0],
        TimeUnit::Days => &[1.0, 2.0, 7.0, 14.0, 28.0, 50.0, 100.0, 200.0, 500.0],
    };
    steps
        .iter()
        .copied()
        .find(|s| length / s <= 10.0)
        .unwrap_or_else(|| nice_ceil(length / 10.0))
}

/// An axis number: `12`, `2.5`, `12k`, `1.5M`.
pub(crate) fn number(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.2}"))
    }
}

/// A wait for a label: `0.4 s`, `86 s`, `14 min`, `2.5 h`.
pub(crate) fn duration_label(s: f64) -> String {
    if s < 10.0 {
        format!("{} s", number((s * 10.0).round() / 10.0))
    } else if s < 600.0 {
        format!("{s:.0} s")
    } else if s < 36_000.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{} h", number((s / 360.0).round() / 10.0))
    }
}

/// A bucket length in words: `5 minutes`, `hour`, `1.4 days` (rounded first, so
/// 299.96 s reads `5 minutes` and 3599.5 s `hour`).
fn duration(s: f64) -> String {
    let say = |v: f64, unit: &str| {
        if v == 1.0 {
            unit.to_string()
        } else {
            format!("{} {unit}s", number(v))
        }
    };
    let minutes = (s / 60.0).round();
    let hours = (s / 360.0).round() / 10.0;
    if s < 119.5 {
        say(s.round(), "second")
    } else if minutes < 60.0 {
        say(minutes, "minute")
    } else if hours < 48.0 {
        say(hours, "hour")
    } else {
        say((s / DAY_S * 10.0).round() / 10.0, "day")
    }
}

/// `s` cut to `max` characters with an ellipsis.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// `s` safe as HTML or XML text and attribute value.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{point, run};

    #[test]
    fn busiest_day_is_the_day_with_the_highest_peak_in_any_run() {
        // Hourly points over four days; run a peaks at 30 on day 1, run b at 40 on day 2
        // and 40 again on day 3 (the earlier day wins a tie).
        let series = |peaks: &[(usize, u32)]| -> Vec<SeriesPoint> {
            (0..96)
                .map(|h| {
                    let demand = peaks.iter().find(|(at, _)| *at == h).map_or(5, |(_, d)| *d);
                    point(h as f64 * 3600.0, demand, 0.0)
                })
                .collect()
        };
        let runs = [
            run("a", series(&[(30, 30)])),
            run("b", series(&[(50, 40), (80, 40)])),
        ];
        assert_eq!(
            busiest_day(&runs),
            Some(BusiestDay {
                index: 2,
                peak_demand: 40
            })
        );
        // A run within its first day has no separate detail.
        let short = [run(
            "a",
            (0..20).map(|h| point(h as f64 * 3600.0, 3, 0.0)).collect(),
        )];
        assert_eq!(busiest_day(&short), None);
        assert_eq!(busiest_day(&[]), None);
    }

    #[test]
    fn long_series_are_binned_to_the_width_keeping_peaks() {
        // 10,000 one-minute points into 100 columns of 100 points; one spike of 99.
        let series: Vec<SeriesPoint> = (0..10_000)
            .map(|i| point(f64::from(i) * 60.0, if i == 4321 { 99 } else { 1 }, 0.0))
            .collect();
        let b = bins(&series, 60.0, 0.0, 600_000.0, 100);
        assert_eq!(b.len(), 100);
        assert!(b.iter().all(|b| b.points.len() == 100));
        assert_eq!(b[43].points, 4300..4400);
        assert_eq!(max_of(&series, &b[43], |p| p.demand), 99.0);
        assert!(b.windows(2).all(|w| w[0].t1 == w[1].t0), "contiguous steps");
        // Few points: one bin each.
        assert_eq!(bins(&series, 60.0, 0.0, 6000.0, 100).len(), 100);
        assert_eq!(bins(&series, 60.0, 60.0, 600.0, 100)[0].points, 1..2);
    }

    #[test]
    fn axis_numbers_are_round() {
        assert_eq!(nice_ceil(812.0), 1000.0);
        assert_eq!(nice_ceil(110.0), 120.0);
        assert_eq!(nice_ceil(180.0), 200.0);
        assert_eq!(nice_ceil(21.0), 25.0);
        assert_eq!(nice_ceil(4000.0), 4000.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ticks(200.0), vec![0.0, 50.0, 100.0, 150.0, 200.0]);
        let small: Vec<String> = nice_ticks(1.0).into_iter().map(number).collect();
        assert_eq!(small, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(nice_time_step(974.0, TimeUnit::Days), 100.0);
        assert_eq!(nice_time_step(28.0, TimeUnit::Days), 7.0);
        assert_eq!(nice_time_step(20.0, TimeUnit::Days), 2.0);
        assert_eq!(nice_time_step(48.0, TimeUnit::Hours), 6.0);
        assert_eq!(nice_time_step(9000.0, TimeUnit::Days), 1000.0);
        assert_eq!(number(280_000.0), "280k");
        assert_eq!(number(2_500_000.0), "2.5M");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(duration(300.0), "5 minutes");
        assert_eq!(duration(299.96), "5 minutes");
        assert_eq!(duration(3599.5), "hour");
        assert_eq!(duration(30.0), "30 seconds");
        assert_eq!(duration(3.0 * DAY_S), "3 days");
        assert_eq!(duration(3600.0), "hour");
        assert_eq!(duration(1.4 * DAY_S), "33.6 hours");
        assert_eq!(duration_label(143.0), "143 s");
        assert_eq!(duration_label(0.44), "0.4 s");
        assert_eq!(duration_label(1800.0), "30 min");
    }

    #[test]
    fn the_svg_document_is_standalone_with_a_panel_per_run() {
        let series: Vec<SeriesPoint> = (0..2000)
            .map(|i| point(f64::from(i) * 600.0, (i % 37) as u32, f64::from(i)))
            .collect();
        let runs = [run("reactive", series.clone()), run("forecast", series)];
        let svg = svg_document("capstan simulate: workload diurnal (seed 1)", &runs);
        assert!(svg.starts_with(r#"<svg xmlns="http://www.w3.org/2000/svg""#));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches(r#"data-kind="whole""#).count(), 2);
        assert_eq!(svg.matches(r#"data-kind="day""#).count(), 2);
        assert_eq!(svg.matches(r#"data-kind="cost""#).count(), 1);
        assert_eq!(svg.matches(r#"data-kind="wait""#).count(), 1);
        for label in [
            "reactive: the whole run",
            "forecast: day ",
            "Cumulative cost",
        ] {
            assert!(svg.contains(label), "missing {label}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
    }
}
