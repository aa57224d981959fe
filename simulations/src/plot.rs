//! SVG plots of a run: demand, capacity and queue over time.
//!
//! The engine keeps a downsampled series (the maximum of each bucket, so short peaks
//! stay visible); [`write_svg`] draws one or several runs of the same trace on one
//! chart: demand once (it is the trace's), then capacity and queue per run. Only the
//! SVG backend is used, so no font or image library is needed.

use std::path::Path;

use plotters::prelude::*;

use crate::engine::SeriesPoint;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    /// The output file.
    pub path: String,
    /// What the drawing backend said.
    pub message: String,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `runs` (label, series) into an SVG file at `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    runs: &[(&str, &[SeriesPoint])],
) -> Result<(), PlotError> {
    draw(path, title, runs).map_err(|message| PlotError {
        path: path.display().to_string(),
        message,
    })
}

fn draw(path: &Path, title: &str, runs: &[(&str, &[SeriesPoint])]) -> Result<(), String> {
    let e = |err: DrawingAreaErrorKind<_>| err.to_string();
    let max_t = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.t_s))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let max_y = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.demand.max(p.capacity).max(p.queue)))
        .max()
        .unwrap_or(1)
        .max(1);
    // Days for long runs, hours for short ones.
    let (unit, scale) = if max_t > 3.0 * 86_400.0 {
        ("days", 86_400.0)
    } else {
        ("hours", 3600.0)
    };
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_t / scale, 0.0..f64::from(max_y) * 1.05)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(format!("time ({unit})"))
        .y_desc("slots / tasks")
        .disable_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(e)?;
    let mut color = 0;
    let mut line = |chart: &mut ChartContext<_, _>,
                    label: String,
                    points: Vec<(f64, f64)>|
     -> Result<(), String> {
        let c = COLORS[color % COLORS.len()];
        color += 1;
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(1)))
            .map_err(e)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        Ok(())
    };
    if let Some((_, first)) = runs.first() {
        let pts = first
            .iter()
            .map(|p| (p.t_s / scale, f64::from(p.demand)))
            .collect();
        line(&mut chart, "demand (running + waiting)".into(), pts)?;
    }
    for (label, series) in runs {
        let cap = series
            .iter()
            .map(|p| (p.t_s / scale, f64::from(p.capacity)))
            .collect();
        line(&mut chart, format!("capacity, {label}"), cap)?;
        let queue = series
            .iter()
            .map(|p| (p.t_s / scale, f64::from(p.queue)))
            .collect();
        line(&mut chart, format!("queue, {label}"), queue)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_series_labelled() {
        let series: Vec<SeriesPoint> = (0..100)
            .map(|i| SeriesPoint {
                t_s: f64::from(i) * 600.0,
                demand: i % 7,
                capacity: i % 9,
                queue: i % 3,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.svg");
        write_svg(
            &path,
            "test",
            &[("reactive", &series), ("forecast", &series)],
        )
        .unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50]);
        for label in ["demand", "capacity, reactive", "queue, forecast"] {
            assert!(svg.contains(label), "missing {label}");
        }
    }
}
