//! Each pool's recent history for people: one [`PoolPoint`] per reconcile round,
//! what the dashboard's pool chart draws.
//!
//! **What a point holds.** Capacity by worker state, the slots running a task, the
//! plan's target, the forecast (its mean and the slots needed at the pool's service
//! level: the band), the latest queue sample and the cost per hour. Capacity is counted
//! in task *slots* (a worker offering 4 slots adds 4), the unit of targets and
//! forecasts, so the states stack against the target on one axis.
//!
//! **Who writes.** The replica planning a pool, after it records the round's plan, at
//! most one point per pool every [`POINT_INTERVAL_S`]; a point at an instant already
//! stored is kept, not replaced (a replica taking a pool over cannot rewrite history).
//! The retention job deletes points older than the raw history retention
//! ([`Store::prune_pool_series`]).
//!
//! **Reading.** [`Store::pool_series`] downsamples a period into at most `max_points`
//! epoch-aligned buckets of a round width, the same widths
//! [`Store::queue_history`] uses, with each column's mean and maximum per bucket: a
//! chart draws peaks (pending, target) from the maxima and stacked capacity from the
//! means (the means of the states add up to the mean total).

use std::collections::BTreeMap;

use capstan_core::{Forecast, Plan, PoolId, PoolSpec, QueueSample, Timestamp, Worker, WorkerState};
use serde::Serialize;
use sqlx::Row;

use crate::history::bucket_width_ms;
use crate::{Store, StoreError, on_backend, to_u32};

/// The shortest time between two points of one pool, in seconds: a week of points is
/// then at most 60,480 rows per pool, and an hour's chart still has 360 of them.
pub const POINT_INTERVAL_S: i64 = 10;

/// A pool's capacity by worker state, in slots, and what its machines cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PoolCapacity {
    /// Slots of workers whose launch is recorded but not yet accepted (`requested`).
    pub requested: u32,
    /// Slots of machines that exist and have not registered (`booting`).
    pub booting: u32,
    /// Slots of `ready` workers running nothing.
    pub ready_idle: u32,
    /// Slots of `ready` workers running a task.
    pub ready_busy: u32,
    /// Slots of workers finishing their tasks before they go (`draining`).
    pub draining: u32,
    /// Slots running a task, on `ready` and `draining` workers.
    pub busy_slots: u32,
    /// Price per hour of the machines that exist (every live worker past `requested`:
    /// booting, ready, draining, terminating, and failed ones not yet terminated), from
    /// their launch configs' `price_per_hour`; a launch config without a price adds 0.
    pub cost_per_hour: f64,
    /// Live workers whose launch config names no price, so `cost_per_hour` leaves
    /// them out (the dashboard says the cost is a lower bound).
    pub unpriced_instances: u32,
}

impl PoolCapacity {
    /// Counts `workers` of a pool with spec `spec`.
    pub fn of(spec: &PoolSpec, workers: &[Worker]) -> Self {
        let mut c = Self::default();
        for w in workers {
            let busy = w.busy_slots.min(w.capacity);
            match w.state {
                WorkerState::Requested => c.requested += w.capacity,
                WorkerState::Booting => c.booting += w.capacity,
                WorkerState::Ready => {
                    c.ready_busy += busy;
                    c.ready_idle += w.capacity - busy;
                    c.busy_slots += busy;
                }
                WorkerState::Draining => {
                    c.draining += w.capacity;
                    c.busy_slots += busy;
                }
                WorkerState::Terminating | WorkerState::Failed | WorkerState::Terminated => {}
            }
            if w.state.is_live() && w.state != WorkerState::Requested {
                let price = w
                    .launch_config_id
                    .as_deref()
                    .and_then(|lc| spec.launch_config(lc))
                    .and_then(|lc| lc.price_per_hour);
                match price {
                    Some(p) => c.cost_per_hour += p,
                    // Static machines (no launch config) cost nothing capstan knows of.
                    None if w.launch_config_id.is_some() => c.unpriced_instances += 1,
                    None => {}
                }
            }
        }
        c
    }
}

/// One pool at one reconcile round.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolPoint {
    /// When the round planned.
    pub at: Timestamp,
    /// Capacity by state and cost, before the round's actions.
    pub capacity: PoolCapacity,
    /// The plan's target (slots).
    pub target_slots: u32,
    /// Expected busy slots at `at + lead` (the forecast's mean).
    pub forecast_mean: f64,
    /// Slots needed at `at + lead` at the pool's service level (the band's top).
    pub forecast_upper: f64,
    /// Tasks waiting, from the latest queue sample (0 when none yet).
    pub pending: u32,
    /// Tasks running, from the latest queue sample (0 when none yet).
    pub running: u32,
}

impl PoolPoint {
    /// The point of a round that planned `plan` from `forecast` over `workers`, with
    /// `sample` the pool's latest queue sample.
    pub fn of_round(
        spec: &PoolSpec,
        workers: &[Worker],
        plan: &Plan,
        forecast: &Forecast,
        sample: Option<&QueueSample>,
    ) -> Self {
        Self {
            at: plan.report.at,
            capacity: PoolCapacity::of(spec, workers),
            target_slots: plan.report.target_slots,
            forecast_mean: forecast.expected_busy_slots,
            forecast_upper: f64::from(forecast.target_slots),
            pending: sample.map_or(0, |s| s.pending),
            running: sample.map_or(0, |s| s.running),
        }
    }
}

/// The columns of `pool_series` after `pool_id` and `at`, in table order; whether each
/// is an integer (else a float).
const COLUMNS: [(&str, bool); 12] = [
    ("requested", true),
    ("booting", true),
    ("ready_idle", true),
    ("ready_busy", true),
    ("draining", true),
    ("busy_slots", true),
    ("target_slots", true),
    ("forecast_mean", false),
    ("forecast_upper", false),
    ("pending", true),
    ("running", true),
    ("cost_per_hour", false),
];

/// One value per column of a point, as floats (a bucket's mean or maximum).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SeriesValues {
    /// Slots in `requested`.
    pub requested: f64,
    /// Slots in `booting`.
    pub booting: f64,
    /// Idle `ready` slots.
    pub ready_idle: f64,
    /// Busy `ready` slots.
    pub ready_busy: f64,
    /// Slots in `draining`.
    pub draining: f64,
    /// Slots running a task.
    pub busy_slots: f64,
    /// The plan's target.
    pub target_slots: f64,
    /// The forecast's mean.
    pub forecast_mean: f64,
    /// The forecast's top at the service level.
    pub forecast_upper: f64,
    /// Tasks waiting.
    pub pending: f64,
    /// Tasks running.
    pub running: f64,
    /// Cost per hour.
    pub cost_per_hour: f64,
}

impl SeriesValues {
    fn from_array(v: [f64; 12]) -> Self {
        Self {
            requested: v[0],
            booting: v[1],
            ready_idle: v[2],
            ready_busy: v[3],
            draining: v[4],
            busy_slots: v[5],
            target_slots: v[6],
            forecast_mean: v[7],
            forecast_upper: v[8],
            pending: v[9],
            running: v[10],
            cost_per_hour: v[11],
        }
    }
}

/// The points of one bucket of a pool's series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesBucket {
    /// Start of the bucket, a multiple of `width_s` since the epoch (so it may lie
    /// before the `since` asked for).
    pub at: Timestamp,
    /// Width of the bucket in seconds.
    pub width_s: u32,
    /// Points in the bucket.
    pub points: u64,
    /// Each column's mean over the points.
    pub mean: SeriesValues,
    /// Each column's maximum over the points.
    pub max: SeriesValues,
}

impl Store {
    /// Records `point` for `pool`; a point already stored at the same instant is kept.
    pub async fn record_pool_point(
        &self,
        pool_id: &PoolId,
        point: &PoolPoint,
    ) -> Result<(), StoreError> {
        let c = &point.capacity;
        on_backend!(self, pool => {
            sqlx::query(
                "INSERT INTO pool_series (pool_id, at, requested, booting, ready_idle, ready_busy,
                   draining, busy_slots, target_slots, forecast_mean, forecast_upper, pending,
                   running, cost_per_hour)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (pool_id, at) DO NOTHING",
            )
            .bind(pool_id.as_str())
            .bind(point.at.unix_ms())
            .bind(i64::from(c.requested))
            .bind(i64::from(c.booting))
            .bind(i64::from(c.ready_idle))
            .bind(i64::from(c.ready_busy))
            .bind(i64::from(c.draining))
            .bind(i64::from(c.busy_slots))
            .bind(i64::from(point.target_slots))
            .bind(point.forecast_mean)
            .bind(point.forecast_upper)
            .bind(i64::from(point.pending))
            .bind(i64::from(point.running))
            .bind(c.cost_per_hour)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// `pool`'s newest point, if it has one.
    pub async fn latest_pool_point(
        &self,
        pool_id: &PoolId,
    ) -> Result<Option<PoolPoint>, StoreError> {
        let names: Vec<&str> = COLUMNS.iter().map(|(c, _)| *c).collect();
        let sql = format!(
            "SELECT at, {} FROM pool_series WHERE pool_id = $1 ORDER BY at DESC LIMIT 1",
            names.join(", ")
        );
        let row: Option<(i64, [f64; 12])> = on_backend!(self, pool => {
            match sqlx::query(&sql).bind(pool_id.as_str()).fetch_optional(pool).await? {
                None => None,
                Some(row) => {
                    let mut v = [0.0; 12];
                    for (i, (_, int)) in COLUMNS.iter().enumerate() {
                        v[i] = if *int {
                            row.try_get::<i64, _>(i + 1)? as f64
                        } else {
                            row.try_get::<f64, _>(i + 1)?
                        };
                    }
                    Some((row.try_get::<i64, _>(0)?, v))
                }
            }
        });
        let Some((at, v)) = row else {
            return Ok(None);
        };
        let n = |x: f64, what: &str| to_u32(x as i64, what);
        Ok(Some(PoolPoint {
            at: Timestamp::from_unix_ms(at),
            capacity: PoolCapacity {
                requested: n(v[0], "requested")?,
                booting: n(v[1], "booting")?,
                ready_idle: n(v[2], "ready_idle")?,
                ready_busy: n(v[3], "ready_busy")?,
                draining: n(v[4], "draining")?,
                busy_slots: n(v[5], "busy_slots")?,
                cost_per_hour: v[11],
                unpriced_instances: 0,
            },
            target_slots: n(v[6], "target_slots")?,
            forecast_mean: v[7],
            forecast_upper: v[8],
            pending: n(v[9], "pending")?,
            running: n(v[10], "running")?,
        }))
    }

    /// `pool`'s points over `[since, until)` in at most `max_points` buckets (at least
    /// 1), oldest first, leaving out empty ones. Buckets are epoch-aligned with the
    /// round widths of [`Store::queue_history`]: the narrowest for which `max_points`
    /// cover the period.
    pub async fn pool_series(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        until: Timestamp,
        max_points: u32,
    ) -> Result<Vec<SeriesBucket>, StoreError> {
        let (since, until) = (since.unix_ms(), until.unix_ms());
        if until <= since {
            return Ok(Vec::new());
        }
        let width = bucket_width_ms(since, until, max_points);
        let aggregates: Vec<String> = COLUMNS
            .iter()
            .map(|(c, int)| {
                if *int {
                    format!("CAST(SUM({c}) AS BIGINT), MAX({c})")
                } else {
                    format!("SUM({c}), MAX({c})")
                }
            })
            .collect();
        let sql = format!(
            "SELECT (at / $4) * $4 AS cell, COUNT(*), {}
             FROM pool_series WHERE pool_id = $1 AND at >= $2 AND at < $3
             GROUP BY cell ORDER BY cell",
            aggregates.join(", ")
        );
        // cell -> (points, sums, maxima)
        let mut cells: BTreeMap<i64, (i64, [f64; 12], [f64; 12])> = BTreeMap::new();
        on_backend!(self, pool => {
            let rows = sqlx::query(&sql)
                .bind(pool_id.as_str())
                .bind(since)
                .bind(until)
                .bind(width)
                .fetch_all(pool)
                .await?;
            for row in rows {
                let (mut sums, mut maxima) = ([0.0; 12], [0.0; 12]);
                for (i, (_, int)) in COLUMNS.iter().enumerate() {
                    let (s, m) = (2 + 2 * i, 3 + 2 * i);
                    if *int {
                        sums[i] = row.try_get::<i64, _>(s)? as f64;
                        maxima[i] = row.try_get::<i64, _>(m)? as f64;
                    } else {
                        sums[i] = row.try_get::<f64, _>(s)?;
                        maxima[i] = row.try_get::<f64, _>(m)?;
                    }
                }
                let cell: i64 = row.try_get(0)?;
                let count: i64 = row.try_get(1)?;
                cells.insert(cell, (count, sums, maxima));
            }
        });
        let width_s = u32::try_from(width / 1000)
            .map_err(|_| StoreError::Corrupt(format!("series bucket of {width} ms")))?;
        cells
            .into_iter()
            .map(|(at, (count, sums, maxima))| {
                let points = u64::try_from(count)
                    .map_err(|_| StoreError::Corrupt(format!("series bucket of {count} points")))?;
                let n = points.max(1) as f64;
                Ok(SeriesBucket {
                    at: Timestamp::from_unix_ms(at),
                    width_s,
                    points,
                    mean: SeriesValues::from_array(sums.map(|s| s / n)),
                    max: SeriesValues::from_array(maxima),
                })
            })
            .collect()
    }

    /// Deletes every pool's points from before `before`; answers how many.
    pub async fn prune_pool_series(&self, before: Timestamp) -> Result<u64, StoreError> {
        Ok(on_backend!(self, pool => {
            sqlx::query("DELETE FROM pool_series WHERE at < $1")
                .bind(before.unix_ms())
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

#[cfg(test)]
mod tests {
    use capstan_core::{ProviderKind, WorkerId};

    use super::*;

    fn spec() -> PoolSpec {
        PoolSpec::from_value(serde_json::json!({
            "id": "ci/linux",
            "provider": "fake",
            "max_capacity": 100,
            "launch_configs": [
                {"id": "big", "instance_type": "b", "capacity": 4, "price_per_hour": 0.5},
                {"id": "free", "instance_type": "f", "capacity": 2},
            ],
        }))
        .unwrap()
    }

    fn worker(n: u32, lc: Option<&str>, capacity: u32, state: WorkerState, busy: u32) -> Worker {
        let now = Timestamp::from_unix_secs(1_800_000_000);
        let mut w = Worker::requested(
            WorkerId::from_string(format!("w{n}")),
            PoolId::new("ci/linux").unwrap(),
            ProviderKind::Fake,
            lc.map(str::to_owned),
            capacity,
            format!("t{n}"),
            now,
        );
        w.state = state;
        w.busy_slots = busy;
        w
    }

    #[test]
    fn capacity_counts_slots_by_state_and_prices_machines_that_exist() {
        use WorkerState::*;
        let workers = [
            worker(1, Some("big"), 4, Requested, 0),
            worker(2, Some("big"), 4, Booting, 0),
            worker(3, Some("big"), 4, Ready, 3),
            worker(4, Some("free"), 2, Ready, 0),
            worker(5, Some("big"), 4, Draining, 1),
            worker(6, Some("big"), 4, Terminating, 0),
            worker(7, Some("big"), 4, Terminated, 0),
            worker(8, None, 8, Ready, 8),
        ];
        let c = PoolCapacity::of(&spec(), &workers);
        assert_eq!(
            (
                c.requested,
                c.booting,
                c.ready_idle,
                c.ready_busy,
                c.draining,
                c.busy_slots
            ),
            (4, 4, 1 + 2, 3 + 8, 4, 3 + 1 + 8)
        );
        // Booting, ready, draining and terminating `big` machines: 4 × 0.5. The
        // requested one has no machine yet, the terminated one none any more.
        assert!((c.cost_per_hour - 2.0).abs() < 1e-9, "{}", c.cost_per_hour);
        assert_eq!(c.unpriced_instances, 1);
    }
}
