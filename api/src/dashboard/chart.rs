//! `GET /pools/<id>/chart.json?window=1h|1d|1w`: what a pool's chart draws, in the
//! column layout uPlot takes (one array of times, one array per series).
//!
//! The series come from the pool's recorded points ([`store::series`]) and its queue
//! history ([`store::history`], for pending and running), downsampled to at most
//! [`MAX_POINTS`] buckets of a round width: peaks are drawn from each bucket's maximum
//! (pending, running, target, the forecast's top), stacked capacity and the forecast's
//! mean from its mean (means of the states add up to the mean total). Marks
//! are the launches and terminations of the plans that acted (`plan_log`), summed per
//! bucket of the same width.
//!
//! Times are Unix **seconds** (uPlot's default time scale); a bucket sits at its
//! start.

use std::collections::BTreeMap;

use capstan_core::{Action as PlanAction, PoolId, Timestamp};
use serde::{Deserialize, Serialize};
use store::SeriesBucket;
use store::history::HistoryPoint;

use crate::AppState;
use crate::error::ApiError;

/// Most buckets per chart: about one per horizontal pixel pair of a wide screen.
/// Above 720 so that a window of 720 round buckets (a day in 2-minute ones) still
/// fits when its end falls on a bucket boundary and opens a 721st: an hour comes as
/// 5-second buckets, a day as 2-minute ones, a week as 15-minute ones.
pub const MAX_POINTS: u32 = 800;
/// Most plan-log entries read for one chart's marks (pages of [`LOG_PAGE`]).
const MAX_LOG_ENTRIES: usize = 20_000;
const LOG_PAGE: u32 = 1000;

/// A chart's time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Window {
    /// The last hour.
    #[serde(rename = "1h")]
    Hour,
    /// The last day.
    #[serde(rename = "1d")]
    Day,
    /// The last week.
    #[serde(rename = "1w")]
    Week,
}

impl Window {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "1h" => Ok(Self::Hour),
            "1d" => Ok(Self::Day),
            "1w" => Ok(Self::Week),
            other => Err(ApiError::bad_request(format!(
                "window: expected 1h, 1d or 1w, got {other:?}"
            ))),
        }
    }

    fn secs(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
            Self::Week => 604_800,
        }
    }
}

/// Query of the chart route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartQuery {
    /// `1h` (default), `1d` or `1w`.
    window: Option<String>,
}

/// Launches and terminations in one bucket.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Mark {
    /// Start of the bucket, Unix seconds.
    pub at: i64,
    /// Instances the plans launched.
    pub launched: u32,
    /// Workers the plans terminated.
    pub terminated: u32,
}

/// The chart's data. Each series has one value per `x`, `null` where the bucket has
/// none (before the pool's points were recorded, say, only the queue is known).
#[derive(Debug, Serialize)]
pub struct ChartData {
    /// The pool.
    pub pool_id: String,
    /// The window drawn.
    pub window: Window,
    /// Start of the window, Unix seconds.
    pub since: i64,
    /// End of the window (now), Unix seconds.
    pub until: i64,
    /// Width of the narrowest bucket in seconds (0 when there is no point); history
    /// older than the raw retention comes in hour-wide buckets.
    pub width_s: u32,
    /// Bucket starts, Unix seconds, oldest first.
    pub x: Vec<i64>,
    /// Most tasks waiting: the queue history's maximum (the pool's points' where no
    /// sample was kept).
    pub pending: Vec<Option<f64>>,
    /// Most tasks running, likewise.
    pub running: Vec<Option<f64>>,
    /// Highest target of the plans.
    pub target: Vec<Option<f64>>,
    /// Mean of the forecast's expected busy slots.
    pub forecast_mean: Vec<Option<f64>>,
    /// Highest slots needed at the service level.
    pub forecast_upper: Vec<Option<f64>>,
    /// Mean slots in `requested`.
    pub requested: Vec<Option<f64>>,
    /// Mean slots in `booting`.
    pub booting: Vec<Option<f64>>,
    /// Mean idle ready slots.
    pub ready_idle: Vec<Option<f64>>,
    /// Mean busy ready slots.
    pub ready_busy: Vec<Option<f64>>,
    /// Mean slots in `draining`.
    pub draining: Vec<Option<f64>>,
    /// Mean cost per hour.
    pub cost_per_hour: Vec<Option<f64>>,
    /// Launches and terminations per bucket, only buckets with some.
    pub marks: Vec<Mark>,
}

/// Builds the chart of pool `id` (already checked readable) for `query`.
///
/// Two sources on one time axis: the pool's points ([`store::series`]: capacity,
/// target, forecast, cost) and its queue history (pending and running, kept for weeks
/// and as hourly rollups beyond, so the chart has the demand even from before the
/// points were recorded). Both are bucketed by the same rule over the same period, so
/// their buckets line up and merge by start.
pub async fn chart(
    state: &AppState,
    id: &PoolId,
    query: ChartQuery,
) -> Result<ChartData, ApiError> {
    let window = match query.window.as_deref() {
        None => Window::Hour,
        Some(w) => Window::parse(w)?,
    };
    let now = state.now();
    let since = now.plus_secs(-window.secs());
    let until = now.plus_secs(1);
    let series = state
        .store
        .pool_series(id, since, until, MAX_POINTS)
        .await?;
    let queue = state
        .store
        .queue_history(id, since, until, MAX_POINTS)
        .await?;
    let width_s = series
        .iter()
        .map(|b| b.width_s)
        .chain(queue.iter().map(|q| q.width_s))
        .min()
        .unwrap_or(0);
    let mut cells: BTreeMap<i64, (Option<&SeriesBucket>, Option<&HistoryPoint>)> = BTreeMap::new();
    for b in &series {
        cells.entry(b.at.unix_ms()).or_default().0 = Some(b);
    }
    for q in &queue {
        cells.entry(q.at.unix_ms()).or_default().1 = Some(q);
    }
    let n = cells.len();
    let mut data = ChartData {
        pool_id: id.to_string(),
        window,
        since: since.unix_ms().div_euclid(1000),
        until: now.unix_ms().div_euclid(1000),
        width_s,
        x: Vec::with_capacity(n),
        pending: Vec::with_capacity(n),
        running: Vec::with_capacity(n),
        target: Vec::with_capacity(n),
        forecast_mean: Vec::with_capacity(n),
        forecast_upper: Vec::with_capacity(n),
        requested: Vec::with_capacity(n),
        booting: Vec::with_capacity(n),
        ready_idle: Vec::with_capacity(n),
        ready_busy: Vec::with_capacity(n),
        draining: Vec::with_capacity(n),
        cost_per_hour: Vec::with_capacity(n),
        marks: Vec::new(),
    };
    for (at, (b, q)) in cells {
        data.x.push(at.div_euclid(1000));
        data.pending.push(
            q.map(|q| f64::from(q.pending_max))
                .or(b.map(|b| b.max.pending)),
        );
        data.running.push(
            q.map(|q| f64::from(q.running_max))
                .or(b.map(|b| b.max.running)),
        );
        data.target.push(b.map(|b| b.max.target_slots));
        data.forecast_mean.push(b.map(|b| b.mean.forecast_mean));
        data.forecast_upper.push(b.map(|b| b.max.forecast_upper));
        data.requested.push(b.map(|b| b.mean.requested));
        data.booting.push(b.map(|b| b.mean.booting));
        data.ready_idle.push(b.map(|b| b.mean.ready_idle));
        data.ready_busy.push(b.map(|b| b.mean.ready_busy));
        data.draining.push(b.map(|b| b.mean.draining));
        data.cost_per_hour.push(b.map(|b| b.mean.cost_per_hour));
    }
    // Marks in buckets of the series' width (a minute when there is no point yet).
    let width_ms = i64::from(if width_s == 0 { 60 } else { width_s }) * 1000;
    let mut marks: BTreeMap<i64, (u32, u32)> = BTreeMap::new();
    let mut from = since;
    let mut read = 0;
    while read < MAX_LOG_ENTRIES {
        let page = state.store.plan_log(id, from, LOG_PAGE).await?;
        read += page.len();
        let full = page.len() == LOG_PAGE as usize;
        for entry in &page {
            if entry.at >= until {
                continue;
            }
            let cell = entry.at.unix_ms().div_euclid(width_ms) * width_ms;
            let m = marks.entry(cell).or_default();
            for a in &entry.plan.actions {
                match a {
                    PlanAction::Launch { count, .. } => m.0 += count,
                    PlanAction::Terminate { .. } => m.1 += 1,
                }
            }
        }
        match page.last() {
            Some(last) if full => from = Timestamp::from_unix_ms(last.at.unix_ms() + 1),
            _ => break,
        }
    }
    data.marks = marks
        .into_iter()
        .filter(|(_, (l, t))| l + t > 0)
        .map(|(cell, (launched, terminated))| Mark {
            at: cell.div_euclid(1000),
            launched,
            terminated,
        })
        .collect();
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_named_and_anything_else_is_refused() {
        assert_eq!(Window::parse("1h").unwrap().secs(), 3600);
        assert_eq!(Window::parse("1d").unwrap().secs(), 86_400);
        assert_eq!(Window::parse("1w").unwrap().secs(), 604_800);
        for bad in ["", "1H", "2h", "1m", "week"] {
            let e = Window::parse(bad).unwrap_err();
            assert!(
                e.body()
                    .message
                    .starts_with("window: expected 1h, 1d or 1w"),
                "{bad}"
            );
        }
    }
}
