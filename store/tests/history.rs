//! History that lasts: raw queue samples and task runs moved into hourly rollups by
//! `Store::compact_history`, and read back through `queue_history`, `task_runs` and
//! `task_run_distribution`.
//!
//! Every expected figure is computed here, directly from the generated rows (a sum per
//! hour, an exact quantile from the sorted durations), never copied from a run. The
//! year-long case runs on SQLite only (its size is the point); the rest runs on both
//! backends.

use std::collections::BTreeMap;

use capstan_core::{PoolId, QueueSample, Timestamp};
use store::Store;
use store::history::{Compaction, HistoryPoint, TaskRunRecord, rollup_bucket};
use store::scratch::{with_postgres, with_sqlite};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
/// Not on an hour boundary, so the cut-offs' rounding to the hour is exercised.
const START: i64 = 1_700_000_000_000;

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

/// splitmix64: deterministic, well-spread values for synthetic history.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One sample every `every_ms` from START for `span_ms`: a daily wave plus noise.
fn samples(span_ms: i64, every_ms: i64, salt: u64) -> Vec<QueueSample> {
    (0..span_ms / every_ms)
        .map(|i| {
            let at = START + i * every_ms;
            let h = mix(i as u64 ^ salt);
            let daily = ((at % DAY) as f64 / DAY as f64 * std::f64::consts::TAU).sin();
            QueueSample {
                at: ts(at),
                pending: (20.0 + 15.0 * daily) as u32 + (h % 17) as u32,
                running: (h >> 8) as u32 % 40,
                arrivals: (h >> 16) as u32 % 12,
                completions: (h >> 24) as u32 % 12,
            }
        })
        .collect()
}

/// One run every `every_ms`, by 7 workers, lasting 1 s to ~17 min (log-uniform),
/// recorded half a second after it finished.
fn runs(span_ms: i64, every_ms: i64) -> Vec<TaskRunRecord> {
    (0..span_ms / every_ms)
        .map(|i| {
            let finished = START + i * every_ms + 1_234;
            let u = (mix(i as u64 + 77) >> 11) as f64 / (1u64 << 53) as f64;
            TaskRunRecord {
                worker_id: format!("worker-{}", i % 7),
                finished_at: ts(finished),
                duration_ms: 10f64.powf(3.0 + 3.0 * u) as i64,
                recorded_at: ts(finished + 500),
            }
        })
        .collect()
}

/// What the hourly rollups must hold for `samples`: per hour, by direct summing.
fn hourly(samples: &[QueueSample]) -> Vec<HistoryPoint> {
    let mut hours: BTreeMap<i64, Vec<&QueueSample>> = BTreeMap::new();
    for s in samples {
        hours
            .entry(s.at.unix_ms().div_euclid(HOUR) * HOUR)
            .or_default()
            .push(s);
    }
    hours
        .into_iter()
        .map(|(at, ss)| {
            let n = ss.len() as f64;
            let pending: i64 = ss.iter().map(|s| i64::from(s.pending)).sum();
            let running: i64 = ss.iter().map(|s| i64::from(s.running)).sum();
            HistoryPoint {
                at: ts(at),
                width_s: 3600,
                samples: ss.len() as u64,
                pending_mean: pending as f64 / n,
                pending_max: ss.iter().map(|s| s.pending).max().unwrap(),
                running_mean: running as f64 / n,
                running_max: ss.iter().map(|s| s.running).max().unwrap(),
                arrivals: ss.iter().map(|s| u64::from(s.arrivals)).sum(),
                completions: ss.iter().map(|s| u64::from(s.completions)).sum(),
            }
        })
        .collect()
}

/// The raw runs that must survive a compaction at `cut` (an hour start): those that
/// finished, or were recorded, at or after it.
fn kept_runs(runs: &[TaskRunRecord], cut: i64) -> Vec<TaskRunRecord> {
    let mut kept: Vec<_> = runs
        .iter()
        .filter(|r| r.finished_at.unix_ms() >= cut || r.recorded_at.unix_ms() >= cut)
        .cloned()
        .collect();
    kept.sort_by(|a, b| (a.finished_at, &a.worker_id).cmp(&(b.finished_at, &b.worker_id)));
    kept
}

/// Checks a distribution against the exact figures of `durations`.
fn check_distribution(got: &store::history::RunTimeDistribution, durations: &[i64]) {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    assert_eq!(got.count, sorted.len() as u64);
    assert_eq!(got.sum_ms, sorted.iter().sum::<i64>());
    for p in [0.5, 0.9, 0.99] {
        let rank = ((p * sorted.len() as f64).ceil() as usize).max(1);
        let exact = sorted[rank - 1] as f64;
        let q = got.quantile_ms(p).unwrap();
        assert!((q / exact - 1.0).abs() <= 0.045, "p{p}: {q} vs {exact}");
    }
}

fn pool() -> PoolId {
    PoolId::new("ci/linux").unwrap()
}

fn far() -> Timestamp {
    ts(START + 800 * DAY)
}

/// SQLite's file size after VACUUM: `page_count * page_size`.
async fn vacuumed_size(path: &std::path::Path) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("VACUUM").execute(&mut c).await.unwrap();
    let (pages,): (i64,) = sqlx::query_as("PRAGMA page_count")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let (size,): (i64,) = sqlx::query_as("PRAGMA page_size")
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    pages * size
}

/// A pool-year on disk: one queue sample a minute and one task run every three
/// minutes (175,200 a year), after the default retention (35 days raw, 400 days of
/// hourly rollups). Measured at 6.2 MiB (57 MB with the whole year raw); the 35 raw
/// days (~50,400 samples and ~16,800 runs with their indexes) are most of it, the
/// 8,424 rolled-up hours the rest. The budget leaves a quarter for SQLite
/// versions and page fill; the second assertion keeps it well under a fifth of raw.
const POOL_YEAR_BUDGET: i64 = 8 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_year_keeps_five_weeks_raw_and_hours_before_in_a_small_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capstan.db");
    let url = format!("sqlite://{}", path.display());
    let year = 365 * DAY;
    let all_samples = samples(year, MINUTE, 1);
    let all_runs = runs(year, 3 * MINUTE);
    let store = Store::connect(&url).await.unwrap();
    store
        .import_queue_samples(&pool(), &all_samples)
        .await
        .unwrap();
    store.import_task_runs(&pool(), &all_runs).await.unwrap();
    store.close().await;
    let raw_year = vacuumed_size(&path).await;

    let now = ts(START + year);
    let cut = rollup_bucket(now.plus_secs(-35 * 86_400)).unix_ms();
    let store = Store::connect(&url).await.unwrap();
    let done = store
        .compact_history(
            now.plus_secs(-35 * 86_400),
            now.plus_secs(-400 * 86_400),
            5000,
        )
        .await
        .unwrap();
    let (old, recent): (Vec<_>, Vec<_>) = all_samples.iter().partition(|s| s.at.unix_ms() < cut);
    let kept = kept_runs(&all_runs, cut);
    assert_eq!(done.samples_rolled_up, old.len() as u64);
    assert_eq!(done.runs_rolled_up, (all_runs.len() - kept.len()) as u64);
    assert_eq!(done.rollups_deleted, 0);

    // The raw weeks are exactly what was written.
    let raw = store.queue_samples(&pool(), ts(0), far()).await.unwrap();
    assert_eq!(raw.len(), recent.len());
    assert!(raw.iter().zip(&recent).all(|(a, b)| a == *b));
    assert!(raw.len() >= 35 * 1440);
    assert_eq!(store.task_runs(&pool(), ts(0), far()).await.unwrap(), kept);

    // Before them, one point per hour with the sums and maxima of its samples.
    let old: Vec<QueueSample> = old.into_iter().copied().collect();
    let expected = hourly(&old);
    let got = store
        .queue_history(&pool(), ts(START), ts(cut), 10_000)
        .await
        .unwrap();
    assert_eq!(got.len(), expected.len());
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e);
    }
    // The whole year in 720 points: daily, both tiers, nothing lost or doubled.
    let year_view = store
        .queue_history(&pool(), ts(START), now, 720)
        .await
        .unwrap();
    assert!(year_view.len() <= 720 && year_view.iter().all(|p| p.width_s == 86_400));
    assert_eq!(
        year_view.iter().map(|p| p.arrivals).sum::<u64>(),
        all_samples
            .iter()
            .map(|s| u64::from(s.arrivals))
            .sum::<u64>()
    );
    assert_eq!(
        year_view.iter().map(|p| p.pending_max).max(),
        all_samples.iter().map(|s| s.pending).max()
    );
    // The run-time distribution survives the move.
    let durations: Vec<i64> = all_runs.iter().map(|r| r.duration_ms).collect();
    let dist = store
        .task_run_distribution(&pool(), ts(START), now)
        .await
        .unwrap();
    check_distribution(&dist, &durations);

    // A second run finds nothing to do and changes nothing.
    let again = store
        .compact_history(
            now.plus_secs(-35 * 86_400),
            now.plus_secs(-400 * 86_400),
            5000,
        )
        .await
        .unwrap();
    assert_eq!(again, Compaction::default());
    assert_eq!(
        store
            .queue_history(&pool(), ts(START), ts(cut), 10_000)
            .await
            .unwrap(),
        got
    );
    assert_eq!(
        store.queue_samples(&pool(), ts(0), far()).await.unwrap(),
        raw
    );
    assert_eq!(
        store
            .task_run_distribution(&pool(), ts(START), now)
            .await
            .unwrap(),
        dist
    );
    store.close().await;

    let kept_year = vacuumed_size(&path).await;
    println!(
        "pool-year on SQLite: {raw_year} bytes all raw, {kept_year} bytes with 35 days raw and hourly rollups"
    );
    assert!(
        kept_year < POOL_YEAR_BUDGET,
        "a pool-year takes {kept_year} bytes, over the {POOL_YEAR_BUDGET} budget"
    );
    assert!(kept_year * 5 < raw_year, "{kept_year} vs raw {raw_year}");
}

store::on_both_backends!(
    rollups_count_every_sample_once_across_batches_and_late_pushes,
    concurrent_compactions_move_each_row_once,
    rollups_expire_after_their_retention,
    history_mixes_hourly_rollups_and_finer_raw_buckets,
);

async fn rollups_count_every_sample_once_across_batches_and_late_pushes(store: Store) {
    let all = samples(3 * DAY, 5 * MINUTE, 2);
    let all_runs = runs(3 * DAY, 10 * MINUTE);
    store.import_queue_samples(&pool(), &all).await.unwrap();
    store.import_task_runs(&pool(), &all_runs).await.unwrap();
    let raw_before = ts(START + 2 * DAY + 1_234);
    let cut = rollup_bucket(raw_before).unix_ms();
    // Batches of 50 split hours across transactions: the merges must add up.
    let done = store.compact_history(raw_before, ts(0), 50).await.unwrap();
    let old: Vec<QueueSample> = all
        .iter()
        .filter(|s| s.at.unix_ms() < cut)
        .copied()
        .collect();
    assert_eq!(done.samples_rolled_up, old.len() as u64);
    let got = store
        .queue_history(&pool(), ts(START), ts(cut), 1000)
        .await
        .unwrap();
    assert_eq!(got, hourly(&old));
    assert_eq!(
        store.queue_samples(&pool(), ts(0), far()).await.unwrap(),
        all.iter()
            .filter(|s| s.at.unix_ms() >= cut)
            .copied()
            .collect::<Vec<_>>()
    );
    let kept = kept_runs(&all_runs, cut);
    assert_eq!(store.task_runs(&pool(), ts(0), far()).await.unwrap(), kept);
    let durations: Vec<i64> = all_runs.iter().map(|r| r.duration_ms).collect();
    check_distribution(
        &store
            .task_run_distribution(&pool(), ts(START), far())
            .await
            .unwrap(),
        &durations,
    );
    let rolled: Vec<i64> = all_runs
        .iter()
        .filter(|r| !kept.contains(r))
        .map(|r| r.duration_ms)
        .collect();
    check_distribution(
        &store
            .task_run_distribution(&pool(), ts(START), ts(cut))
            .await
            .unwrap(),
        &rolled,
    );

    // A sample pushed late into an hour already rolled up joins that hour.
    let late = QueueSample {
        at: ts(START + DAY + 7),
        pending: 999,
        running: 1,
        arrivals: 5,
        completions: 0,
    };
    store.record_queue_samples(&pool(), &[late]).await.unwrap();
    let again = store.compact_history(raw_before, ts(0), 50).await.unwrap();
    assert_eq!(again.samples_rolled_up, 1);
    let mut with_late = old.clone();
    with_late.push(late);
    assert_eq!(
        store
            .queue_history(&pool(), ts(START), ts(cut), 1000)
            .await
            .unwrap(),
        hourly(&with_late)
    );
    assert_eq!(
        store.compact_history(raw_before, ts(0), 50).await.unwrap(),
        Compaction::default()
    );
}

async fn concurrent_compactions_move_each_row_once(store: Store) {
    let pools: Vec<PoolId> = (0..3)
        .map(|i| PoolId::new(format!("pool-{i}")).unwrap())
        .collect();
    let all = samples(2 * DAY, 2 * MINUTE, 3);
    let all_runs = runs(2 * DAY, 4 * MINUTE);
    // Worker ids are unique across pools (task runs are keyed by worker and time).
    let runs_of = |p: &PoolId| -> Vec<TaskRunRecord> {
        all_runs
            .iter()
            .map(|r| TaskRunRecord {
                worker_id: format!("{p}-{}", r.worker_id),
                ..r.clone()
            })
            .collect()
    };
    for p in &pools {
        store.import_queue_samples(p, &all).await.unwrap();
        store.import_task_runs(p, &runs_of(p)).await.unwrap();
    }
    let raw_before = ts(START + DAY + 5 * MINUTE);
    let cut = rollup_bucket(raw_before).unix_ms();
    let (a, b) = tokio::join!(
        store.compact_history(raw_before, ts(0), 25),
        store.compact_history(raw_before, ts(0), 25),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let old: Vec<QueueSample> = all
        .iter()
        .filter(|s| s.at.unix_ms() < cut)
        .copied()
        .collect();
    let kept = kept_runs(&all_runs, cut);
    assert_eq!(
        a.samples_rolled_up + b.samples_rolled_up,
        3 * old.len() as u64
    );
    assert_eq!(
        a.runs_rolled_up + b.runs_rolled_up,
        3 * (all_runs.len() - kept.len()) as u64
    );
    let durations: Vec<i64> = all_runs.iter().map(|r| r.duration_ms).collect();
    for p in &pools {
        assert_eq!(
            store
                .queue_history(p, ts(START), ts(cut), 1000)
                .await
                .unwrap(),
            hourly(&old),
            "{p}"
        );
        assert_eq!(
            store.task_runs(p, ts(0), far()).await.unwrap(),
            kept_runs(&runs_of(p), cut)
        );
        check_distribution(
            &store
                .task_run_distribution(p, ts(START), far())
                .await
                .unwrap(),
            &durations,
        );
    }
}

async fn rollups_expire_after_their_retention(store: Store) {
    let all = samples(2 * DAY, 10 * MINUTE, 4);
    let all_runs = runs(2 * DAY, 30 * MINUTE);
    store.import_queue_samples(&pool(), &all).await.unwrap();
    store.import_task_runs(&pool(), &all_runs).await.unwrap();
    let end = ts(START + 2 * DAY);
    store.compact_history(end, ts(0), 1000).await.unwrap();
    let hours = hourly(&all).len() as u64;
    let run_hours = all_runs
        .iter()
        .map(|r| r.finished_at.unix_ms().div_euclid(HOUR))
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    // Rollups of hours before the one holding START + 1 day go, in batches of 7.
    let rollup_before = ts(START + DAY);
    let rollup_cut = rollup_bucket(rollup_before).unix_ms();
    let done = store.compact_history(end, rollup_before, 7).await.unwrap();
    let gone = hourly(&all)
        .iter()
        .filter(|p| p.at.unix_ms() < rollup_cut)
        .count() as u64;
    let runs_gone = all_runs
        .iter()
        .map(|r| r.finished_at.unix_ms().div_euclid(HOUR) * HOUR)
        .filter(|&h| h < rollup_cut)
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    assert_eq!(done.rollups_deleted, gone + runs_gone);
    let left = store
        .queue_history(&pool(), ts(START - DAY), end, 10_000)
        .await
        .unwrap();
    assert_eq!(left.len() as u64, hours - gone);
    assert_eq!(left[0].at.unix_ms(), rollup_cut);
    let dist = store
        .task_run_distribution(&pool(), ts(0), far())
        .await
        .unwrap();
    assert_eq!(
        dist.count,
        all_runs
            .iter()
            .filter(|r| r.finished_at.unix_ms() >= rollup_cut)
            .count() as u64
    );
    assert!(run_hours > runs_gone);
}

async fn history_mixes_hourly_rollups_and_finer_raw_buckets(store: Store) {
    let all = samples(6 * HOUR, MINUTE, 5);
    store.import_queue_samples(&pool(), &all).await.unwrap();
    let raw_before = ts(START + 3 * HOUR);
    let cut = rollup_bucket(raw_before).unix_ms();
    store.compact_history(raw_before, ts(0), 100).await.unwrap();
    // 6 hours in at most 100 points: 5-minute buckets where raw, hours before.
    let since = ts(START);
    let until = ts(START + 6 * HOUR);
    let got = store
        .queue_history(&pool(), since, until, 100)
        .await
        .unwrap();
    assert!(got.len() <= 100, "{}", got.len());
    let (rolled, raw): (Vec<_>, Vec<_>) = got.iter().partition(|p| p.at.unix_ms() < cut);
    assert!(rolled.iter().all(|p| p.width_s == 3600));
    assert!(raw.iter().all(|p| p.width_s == 300));
    let expected_rolled = hourly(
        &all.iter()
            .filter(|s| s.at.unix_ms() < cut)
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        rolled.into_iter().cloned().collect::<Vec<_>>(),
        expected_rolled
    );
    // Each raw bucket: the samples of its five minutes.
    for p in raw {
        let inside: Vec<_> = all
            .iter()
            .filter(|s| s.at >= p.at && s.at.unix_ms() < p.at.unix_ms() + 300_000)
            .collect();
        assert_eq!(p.samples, inside.len() as u64);
        assert_eq!(
            p.pending_max,
            inside.iter().map(|s| s.pending).max().unwrap()
        );
        assert_eq!(
            p.arrivals,
            inside.iter().map(|s| u64::from(s.arrivals)).sum::<u64>()
        );
    }
    assert_eq!(got.iter().map(|p| p.samples).sum::<u64>(), all.len() as u64);
    // An empty or reversed range has no points.
    assert!(
        store
            .queue_history(&pool(), until, since, 100)
            .await
            .unwrap()
            .is_empty()
    );
}
