//! One self-contained HTML page comparing simulation runs: `capstan simulate
//! --report` and the what-if of a pool both write it.
//!
//! The page holds a comparison table (cost, instance-hours, ratio to the oracle,
//! waits, launches, interruptions, utilisation, forecast coverage; the best value of
//! each column marked) and the charts of [`crate::plot`]: each run's own panel over the
//! whole span with its busiest day beside it, then cost and wait over time. Everything
//! is inline — CSS in a `<style>` element, charts as inline SVG, no script, no font,
//! no image, no link to anything — so the page reads the same opened from a file, as
//! an e-mail attachment, or where scripts are blocked. Every string that comes from
//! outside (titles, labels, the context paragraph) is escaped.

use std::fmt::Write as _;

use crate::engine::{MAX_ATTEMPTS, Report, SeriesPoint};
use crate::plot::{Figure, escape, figures, run_color};

/// One run on the page: what it is called, what it measured and its series.
#[derive(Debug, Clone)]
pub struct ReportRun {
    /// The run's name on the page (a policy, or "current" / "candidate").
    pub label: String,
    /// Its measurements.
    pub report: Report,
    /// Its time series (see [`SeriesPoint`]); may be empty, then it has no chart lines.
    pub series: Vec<SeriesPoint>,
}

/// What one page shows.
#[derive(Debug, Clone, Copy)]
pub struct ReportPage<'a> {
    /// The page's title and heading.
    pub title: &'a str,
    /// One paragraph under the title: the trace or workload, the pool, the command.
    pub context: &'a str,
    /// The runs, in the order they are shown.
    pub runs: &'a [ReportRun],
}

/// Which way a column is better.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
    /// Not ranked (forecast coverage is right at the service level, not at an end).
    Neither,
}

/// One column of the comparison table.
struct Column {
    name: &'static str,
    better: Better,
    /// Decimals shown; values equal at this precision are equally best.
    decimals: usize,
    value: fn(&Report) -> Option<f64>,
    /// Shown after the number (`%`).
    suffix: &'static str,
}

fn columns(runs: &[ReportRun]) -> Vec<Column> {
    let mut columns = vec![
        Column {
            name: "cost",
            better: Better::Lower,
            decimals: 2,
            value: |r| Some(r.cost),
            suffix: "",
        },
        Column {
            name: "instance-hours",
            better: Better::Lower,
            decimals: 1,
            value: |r| Some(r.instance_seconds / 3600.0),
            suffix: "",
        },
        Column {
            name: "ratio to oracle",
            better: Better::Lower,
            decimals: 3,
            value: |r| Some(r.ratio_to_oracle),
            suffix: "",
        },
        Column {
            name: "wait mean (s)",
            better: Better::Lower,
            decimals: 1,
            value: |r| Some(r.wait_s.mean),
            suffix: "",
        },
        Column {
            name: "wait p95 (s)",
            better: Better::Lower,
            decimals: 1,
            value: |r| Some(r.wait_s.p95),
            suffix: "",
        },
        Column {
            name: "wait p99 (s)",
            better: Better::Lower,
            decimals: 1,
            value: |r| Some(r.wait_s.p99),
            suffix: "",
        },
        Column {
            name: "launches",
            better: Better::Lower,
            decimals: 0,
            value: |r| Some(r.launches as f64),
            suffix: "",
        },
        Column {
            name: "interruptions",
            better: Better::Lower,
            decimals: 0,
            value: |r| Some(r.interruptions as f64),
            suffix: "",
        },
        Column {
            name: "utilisation",
            better: Better::Higher,
            decimals: 1,
            value: |r| Some(r.utilization * 100.0),
            suffix: "%",
        },
    ];
    if runs.iter().any(|r| r.report.forecast_accuracy.is_some()) {
        columns.push(Column {
            name: "forecast coverage",
            better: Better::Neither,
            decimals: 1,
            value: |r| r.forecast_accuracy.map(|a| a.coverage * 100.0),
            suffix: "%",
        });
    }
    columns
}

/// The page for `page.runs` (deterministic: the same runs give the same bytes).
pub fn html_report(page: &ReportPage<'_>) -> String {
    let runs = page.runs;
    let mut html = String::with_capacity(64 * 1024);
    let title = escape(page.title);
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p class="context">{}</p>
"#,
        escape(page.context)
    );
    if runs.is_empty() {
        html.push_str("<p>No runs to show.</p>\n</body>\n</html>\n");
        return html;
    }
    html.push_str("<h2>Comparison</h2>\n");
    html.push_str(&table(runs));
    html.push_str(&notes(runs));

    let figs = figures(runs);
    html.push_str(
        "<h2>Demand, capacity and queue</h2>\n<p class=\"note\">Each run in its own panel, \
         all on one scale. Grey: demand (tasks running or waiting); line: capacity (slots of \
         booting and ready instances); red: the queue. Capacity above demand is paid for \
         and idle; red is tasks waiting.</p>\n",
    );
    for (whole, day) in &figs.runs {
        html.push_str("<div class=\"row\">\n");
        for fig in std::iter::once(whole).chain(day) {
            html.push_str(&figure(fig));
        }
        html.push_str("</div>\n");
    }
    html.push_str("<h2>Cost and wait over time</h2>\n<div class=\"row\">\n");
    for fig in [&figs.cost, &figs.wait] {
        html.push_str(&figure(fig));
    }
    html.push_str("</div>\n</body>\n</html>\n");
    html
}

/// `fig` as a `<figure>` as wide as its chart (so its caption wraps under it).
fn figure(fig: &Figure) -> String {
    format!(
        "<figure style=\"max-width:{:.0}px\">{}<figcaption>{}</figcaption></figure>\n",
        fig.chart.width,
        fig.chart.svg(None),
        escape(&fig.caption)
    )
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
margin:1.5em auto;max-width:1240px;padding:0 1em;color:#222;line-height:1.4}\
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em}\
.context{color:#444;max-width:70em}.note{color:#555;font-size:.9em;max-width:70em}\
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.5em 0}\
th,td{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:right;white-space:nowrap}\
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #999;\
font-weight:600;white-space:normal;vertical-align:bottom}\
td.best{font-weight:700;background:#e8f4e8}.scroll{overflow-x:auto}\
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.4em;border-radius:2px;\
vertical-align:baseline}.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}\
figure{margin:.4em 0}figcaption{font-size:.85em;color:#444}\
svg.chart{max-width:100%;height:auto;display:block}";

/// The comparison table: one row per run, the best value of each ranked column in
/// bold (when there is more than one run).
fn table(runs: &[ReportRun]) -> String {
    let columns = columns(runs);
    let mut out = String::from("<div class=\"scroll\"><table>\n<thead><tr><th>run</th>");
    for c in &columns {
        let _ = write!(out, "<th>{}</th>", c.name);
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    // The best value of each column, at the precision shown.
    let shown =
        |c: &Column, r: &Report| (c.value)(r).map(|v| (v * 10f64.powi(c.decimals as i32)).round());
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|c| {
            if runs.len() < 2 || c.better == Better::Neither {
                return None;
            }
            let values = runs.iter().filter_map(|r| shown(c, &r.report));
            match c.better {
                Better::Lower => values.reduce(f64::min),
                Better::Higher => values.reduce(f64::max),
                Better::Neither => None,
            }
        })
        .collect();
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(
            out,
            r#"<tr><td><span class="swatch" style="background:{}"></span>{}</td>"#,
            run_color(i),
            escape(&run.label)
        );
        for (c, best) in columns.iter().zip(&best) {
            let cell = (c.value)(&run.report)
                .map_or_else(|| "–".to_string(), |v| group(v, c.decimals) + c.suffix);
            if best.is_some() && shown(c, &run.report) == *best {
                let _ = write!(out, r#"<td class="best" title="best">{cell}</td>"#);
            } else {
                let _ = write!(out, "<td>{cell}</td>");
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    out
}

/// What the table needs said: the oracle, the scale of the run, unfinished tasks.
fn notes(runs: &[ReportRun]) -> String {
    let first = &runs[0].report;
    let mut out = String::from("<p class=\"note\">");
    let _ = write!(
        out,
        "{} tasks over {} days. ",
        group(first.tasks as f64, 0),
        group(first.sim_seconds / 86_400.0, 1)
    );
    let oracles: Vec<f64> = runs
        .iter()
        .map(|r| r.report.oracle_instance_seconds)
        .collect();
    if oracles.iter().all(|o| *o == oracles[0]) {
        let _ = write!(
            out,
            "The oracle, the least instance time any policy could spend with zero wait, is {} \
             instance-hours; the ratio to oracle is each run's instance time over it. ",
            group(oracles[0] / 3600.0, 1)
        );
    } else {
        for run in runs {
            let _ = write!(
                out,
                "Oracle of {}: {} instance-hours. ",
                escape(&run.label),
                group(run.report.oracle_instance_seconds / 3600.0, 1)
            );
        }
    }
    if runs.len() > 1 {
        out.push_str(
            "Bold: the best value of its column (coverage is not ranked: \
             the right coverage is the service level). ",
        );
    }
    for run in runs.iter().filter(|r| r.report.unfinished > 0) {
        let _ = write!(
            out,
            "<strong>{}: {} tasks never finished</strong> ({}). ",
            escape(&run.label),
            group(run.report.unfinished as f64, 0),
            unfinished_why(&run.report)
        );
    }
    out.truncate(out.trim_end().len());
    out.push_str("</p>\n");
    out
}

/// Why a run's unfinished tasks did not finish, in words: given up after
/// [`MAX_ATTEMPTS`] interrupted attempts, or left when the run stalled.
pub fn unfinished_why(r: &Report) -> String {
    let stalled = r.unfinished.saturating_sub(r.abandoned);
    let gave_up = format!(
        "{} given up after {MAX_ATTEMPTS} interrupted attempts",
        group(r.abandoned as f64, 0)
    );
    match (r.abandoned > 0, stalled > 0) {
        (true, false) => gave_up,
        (true, true) => format!(
            "{gave_up}, {} left when no capacity came for 7 days",
            group(stalled as f64, 0)
        ),
        _ => "no capacity for 7 days".to_string(),
    }
}

/// `x` with `decimals` decimals and thousands separated by commas:
/// `group(1234567.891, 1)` is `1,234,567.9`.
pub fn group(x: f64, decimals: usize) -> String {
    let s = format!("{:.*}", decimals, x.abs());
    let (int, frac) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 && s.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use capstan_core::ScalingPolicy;
    use predictor::AccuracyReport;

    use super::*;
    use crate::engine::WaitStats;

    /// A series point at `t_s` with `demand` (capacity one more, queue one less) and
    /// cumulative `cost`.
    pub(crate) fn point(t_s: f64, demand: u32, cost: f64) -> SeriesPoint {
        SeriesPoint {
            t_s,
            demand,
            capacity: demand + 1,
            queue: demand.saturating_sub(1),
            booting: 1,
            cost,
            starts: 2,
            wait_mean_s: f64::from(demand),
            wait_max_s: f64::from(demand) * 2.0,
        }
    }

    fn report(cost: f64, mean: f64, p95: f64, utilization: f64) -> Report {
        Report {
            policy: ScalingPolicy::Reactive,
            tasks: 1000,
            skipped: 0,
            bad_lines: 0,
            unfinished: 0,
            abandoned: 0,
            work_seconds: 3_000_000.0,
            instance_seconds: cost * 3600.0,
            cost,
            oracle_instance_seconds: 3_000_000.0,
            ratio_to_oracle: cost * 3600.0 / 3_000_000.0,
            wait_s: WaitStats {
                mean,
                p50: mean / 2.0,
                p95,
                p99: p95 * 1.5,
                max: p95 * 2.0,
            },
            utilization,
            launches: 1234,
            launch_failures: 0,
            terminations: 1200,
            interruptions: 0,
            ticks: 100,
            forecast_accuracy: None,
            sim_seconds: 4.0 * 86_400.0,
            wall_seconds: 0.0,
        }
    }

    /// A run labelled `label` with `series` and a plain report.
    pub(crate) fn run(label: &str, series: Vec<SeriesPoint>) -> ReportRun {
        ReportRun {
            label: label.into(),
            report: report(1000.0, 10.0, 60.0, 0.8),
            series,
        }
    }

    fn four_days(peak_at_hour: usize) -> Vec<SeriesPoint> {
        (0..96)
            .map(|h| {
                let demand = if h == peak_at_hour {
                    50
                } else {
                    5 + (h % 24) as u32
                };
                point(h as f64 * 3600.0, demand, h as f64 * 10.0)
            })
            .collect()
    }

    fn page(runs: &[ReportRun]) -> String {
        html_report(&ReportPage {
            title: "capstan simulate: workload diurnal",
            context: "Workload diurnal (seed 1); pool sim.",
            runs,
        })
    }

    /// The cells of the table row whose first cell ends with `label`.
    fn row<'a>(html: &'a str, label: &str) -> Vec<&'a str> {
        let line = html
            .lines()
            .find(|l| l.starts_with("<tr><td>") && l.contains(&format!("{label}</td>")))
            .unwrap_or_else(|| panic!("no row {label}"));
        line.split("<td")
            .skip(2)
            .map(|c| c.split("</td>").next().unwrap())
            .collect()
    }

    #[test]
    fn the_table_shows_each_reports_values_and_marks_the_best() {
        let mut cheap = run("reactive", four_days(30));
        cheap.report = report(1234.567, 42.8, 143.0, 0.922);
        let mut quick = run("forecast", four_days(30));
        quick.report = report(2500.0, 8.94, 86.0, 0.825);
        quick.report.launches = 182_940;
        quick.report.forecast_accuracy = Some(AccuracyReport {
            points: 10,
            mae: 1.0,
            mase: Some(0.5),
            pinball: 0.1,
            coverage: 0.9512,
        });
        let html = page(&[cheap, quick]);
        // cost, instance-hours, ratio, mean, p95, p99, launches, interruptions,
        // utilisation, coverage; the best of each ranked column bold.
        assert_eq!(
            row(&html, "reactive"),
            [
                r#" class="best" title="best">1,234.57"#,
                r#" class="best" title="best">1,234.6"#,
                r#" class="best" title="best">1.481"#,
                ">42.8",
                ">143.0",
                ">214.5",
                r#" class="best" title="best">1,234"#,
                r#" class="best" title="best">0"#,
                r#" class="best" title="best">92.2%"#,
                ">–",
            ]
        );
        assert_eq!(
            row(&html, "forecast"),
            [
                ">2,500.00",
                ">2,500.0",
                ">3.000",
                r#" class="best" title="best">8.9"#,
                r#" class="best" title="best">86.0"#,
                r#" class="best" title="best">129.0"#,
                ">182,940",
                r#" class="best" title="best">0"#,
                ">82.5%",
                ">95.1%",
            ]
        );
        assert!(
            html.contains("833.3 instance-hours"),
            "the oracle is stated"
        );
    }

    #[test]
    fn every_run_gets_its_own_panel_and_the_busiest_day_beside_it() {
        let runs = [
            run("reactive", four_days(30)),
            run("forecast", four_days(30)),
            run("other", four_days(31)),
        ];
        let html = page(&runs);
        assert_eq!(html.matches(r#"data-kind="whole""#).count(), 3);
        assert_eq!(html.matches(r#"data-kind="day""#).count(), 3);
        assert_eq!(html.matches(r#"data-kind="cost""#).count(), 1);
        assert_eq!(html.matches(r#"data-kind="wait""#).count(), 1);
        // Hour 30 is on day 1, and the caption says why that day.
        assert_eq!(html.matches("reactive: day 1, the busiest").count(), 1);
        assert!(html.contains(
            "Day 1 after the first submit: the day with the highest peak demand (50 tasks)"
        ));
        // Each chart declares as many series as it draws, none empty: demand, queue,
        // capacity per level panel (and booting in the day), one line per run below.
        for chart in html.split("<svg ").skip(1) {
            let chart = chart.split("</svg>").next().unwrap();
            let declared: usize = chart
                .split("data-series=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .and_then(|n| n.parse().ok())
                .expect("data-series");
            let drawn = chart.matches(r#"<path class="series" d=""#).count();
            assert_eq!(declared, drawn, "{chart}");
            assert!(!chart.contains(r#"<path class="series" d="""#));
            let expected = if chart.contains(r#"data-kind="day""#) {
                4
            } else {
                3
            };
            assert_eq!(drawn, expected, "{chart}");
        }
    }

    #[test]
    fn hostile_labels_and_context_are_escaped() {
        let evil = r#"<script>alert("x")</script>&'"#;
        let runs = [run(evil, four_days(3))];
        let html = html_report(&ReportPage {
            title: evil,
            context: evil,
            runs: &runs,
        });
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains(r#"alert("x")"#));
        assert!(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"));
    }

    #[test]
    fn the_page_loads_nothing_from_anywhere() {
        let runs = [run("reactive", four_days(3)), run("forecast", four_days(3))];
        let html = page(&runs);
        for needle in [
            "http://", "https://", "src=", "href=", "@import", "url(", "<script", "<link",
        ] {
            assert!(!html.contains(needle), "{needle} in the page");
        }
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
    }

    #[test]
    fn runs_without_a_series_still_get_a_table_and_empty_panels() {
        let runs = [run("current", Vec::new()), run("candidate", Vec::new())];
        let html = page(&runs);
        assert!(row(&html, "candidate").len() == 9);
        assert_eq!(html.matches(r#"data-kind="whole""#).count(), 2);
        assert_eq!(html.matches(r#"data-kind="day""#).count(), 0);
        assert!(html.contains("current: no series was recorded"));
        assert!(!html.contains(r#"class="series""#));
        assert!(page(&[]).contains("No runs to show."));
    }

    #[test]
    fn a_report_reads_back_from_its_json() {
        let r = run("x", vec![point(0.0, 3, 1.5)]);
        let json = serde_json::to_string(&r.report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r.report);
        let json = serde_json::to_string(&r.series).unwrap();
        let back: Vec<SeriesPoint> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r.series);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(1_234_567.891, 1), "1,234,567.9");
        assert_eq!(group(999.0, 0), "999");
        assert_eq!(group(-1000.5, 2), "-1,000.50");
        assert_eq!(group(0.0, 1), "0.0");
        assert_eq!(group(-0.01, 1), "0.0");
    }
}
