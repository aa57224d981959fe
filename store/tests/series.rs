//! The dashboard's pool series: points recorded per reconcile round, read back
//! downsampled (means and maxima per bucket), the newest point, and retention.
//!
//! Expected figures are computed here from the generated points (a mean and a maximum
//! per ten-minute bucket), never copied from a run. Every case runs on both backends.

use capstan_core::{PoolId, Timestamp};
use store::scratch::{with_postgres, with_sqlite};
use store::{PoolCapacity, PoolPoint, Store};

const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;
/// On a ten-minute boundary, so the buckets of a 10-minute width start at points.
const START: i64 = 1_800_000_000_000 - (1_800_000_000_000 % (10 * MINUTE));

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

fn pool(id: &str) -> PoolId {
    PoolId::new(id).unwrap()
}

/// Point `i` (every 10 s from START): every column a different function of `i`.
fn point(i: i64) -> PoolPoint {
    let u = |k: i64| u32::try_from((i * k + 7) % 23).unwrap();
    PoolPoint {
        at: ts(START + i * 10 * SECOND),
        capacity: PoolCapacity {
            requested: u(1),
            booting: u(2),
            ready_idle: u(3),
            ready_busy: u(5),
            draining: u(7),
            busy_slots: u(11),
            cost_per_hour: i as f64 * 0.25,
            unpriced_instances: 0,
        },
        target_slots: u(13),
        forecast_mean: i as f64 / 3.0,
        forecast_upper: i as f64 / 2.0,
        pending: u(17),
        running: u(19),
    }
}

/// The columns of a point in table order, as floats.
fn columns(p: &PoolPoint) -> [f64; 12] {
    let c = &p.capacity;
    [
        c.requested.into(),
        c.booting.into(),
        c.ready_idle.into(),
        c.ready_busy.into(),
        c.draining.into(),
        c.busy_slots.into(),
        p.target_slots.into(),
        p.forecast_mean,
        p.forecast_upper,
        p.pending.into(),
        p.running.into(),
        c.cost_per_hour,
    ]
}

fn values(v: &store::series::SeriesValues) -> [f64; 12] {
    [
        v.requested,
        v.booting,
        v.ready_idle,
        v.ready_busy,
        v.draining,
        v.busy_slots,
        v.target_slots,
        v.forecast_mean,
        v.forecast_upper,
        v.pending,
        v.running,
        v.cost_per_hour,
    ]
}

fn close(a: &[f64; 12], b: &[f64; 12], what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() < 1e-9, "{what}: column {i}: {x} vs {y}");
    }
}

async fn points_come_back_whole_or_as_means_and_maxima(store: Store) {
    let ci = pool("ci/linux");
    // An hour of points, and one of another pool that must never show up.
    let points: Vec<PoolPoint> = (0..360).map(point).collect();
    for p in &points {
        store.record_pool_point(&ci, p).await.unwrap();
    }
    store
        .record_pool_point(&pool("other"), &point(5))
        .await
        .unwrap();
    let (since, until) = (ts(START), ts(START + 60 * MINUTE));

    // Room for every point (360 buckets of 10 s): each holds exactly one, read back as
    // written.
    let all = store.pool_series(&ci, since, until, 360).await.unwrap();
    assert_eq!(all.len(), 360);
    for (b, p) in all.iter().zip(&points) {
        assert_eq!(b.at, p.at);
        assert_eq!((b.points, b.width_s), (1, 10));
        close(&values(&b.mean), &columns(p), "single mean");
        close(&values(&b.max), &columns(p), "single max");
    }

    // Six points: 10-minute buckets of 60 points each.
    let six = store.pool_series(&ci, since, until, 6).await.unwrap();
    assert_eq!(six.len(), 6);
    for (k, b) in six.iter().enumerate() {
        let members = &points[k * 60..(k + 1) * 60];
        assert_eq!(b.at, ts(START + k as i64 * 10 * MINUTE));
        assert_eq!((b.points, b.width_s), (60, 600));
        let mut mean = [0.0; 12];
        let mut max = [f64::MIN; 12];
        for p in members {
            for (i, v) in columns(p).into_iter().enumerate() {
                mean[i] += v / 60.0;
                max[i] = max[i].max(v);
            }
        }
        close(&values(&b.mean), &mean, "bucket mean");
        close(&values(&b.max), &max, "bucket max");
    }

    // The period is half-open, and an empty or inverted one is empty.
    let tail = store
        .pool_series(&ci, ts(START + 59 * MINUTE), until, 720)
        .await
        .unwrap();
    assert_eq!(tail.len(), 6);
    assert!(
        store
            .pool_series(&ci, until, since, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The newest point, read back whole.
    let latest = store.latest_pool_point(&ci).await.unwrap().unwrap();
    assert_eq!(latest, points[359]);
    assert_eq!(store.latest_pool_point(&pool("none")).await.unwrap(), None);
}

async fn a_second_point_at_a_stored_instant_is_not_taken(store: Store) {
    let ci = pool("ci/linux");
    store.record_pool_point(&ci, &point(0)).await.unwrap();
    let mut other = point(0);
    other.pending = 999;
    store.record_pool_point(&ci, &other).await.unwrap();
    let got = store
        .pool_series(&ci, ts(START), ts(START + MINUTE), 60)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].points, 1);
    assert_eq!(got[0].max.pending, f64::from(point(0).pending));
}

async fn retention_deletes_only_older_points_of_every_pool(store: Store) {
    let (a, b) = (pool("a"), pool("b"));
    for i in 0..30 {
        store.record_pool_point(&a, &point(i)).await.unwrap();
        store.record_pool_point(&b, &point(i)).await.unwrap();
    }
    // Points 0..=9 lie before START + 100 s.
    let deleted = store
        .prune_pool_series(ts(START + 100 * SECOND))
        .await
        .unwrap();
    assert_eq!(deleted, 20);
    for p in [&a, &b] {
        let left = store
            .pool_series(p, ts(START), ts(START + 10 * MINUTE), 720)
            .await
            .unwrap();
        assert_eq!(left.len(), 20);
        assert_eq!(left[0].at, ts(START + 100 * SECOND));
    }
    assert_eq!(store.prune_pool_series(ts(START)).await.unwrap(), 0);
}

store::on_both_backends!(
    points_come_back_whole_or_as_means_and_maxima,
    a_second_point_at_a_stored_instant_is_not_taken,
    retention_deletes_only_older_points_of_every_pool,
);
