//! History that lasts: queue samples and task run times kept raw for weeks and as
//! hourly rollups for a year or more, so a pool-year stays small and the last weeks can
//! be replayed exactly.
//!
//! **Two tiers, never both.** Raw rows (`queue_samples`, `task_runs`) younger than the
//! raw retention are kept exactly as written. [`Store::compact_history`], run by the
//! retention job, *moves* older raw rows into hourly rollups (`queue_rollups`,
//! `task_run_rollups`): one transaction deletes a bounded batch of raw rows (`DELETE ...
//! RETURNING`) and adds them to their hours' rollups. Because the delete and the add
//! commit together, every sample and run is counted exactly once, in raw or in a rollup:
//! a crash mid-way loses nothing and counts nothing twice, a second run finds nothing
//! left to move, and a sample pushed late into an hour already rolled up is added to
//! that hour on the next run. Two replicas may run it at once: on PostgreSQL the batch
//! is taken `FOR UPDATE SKIP LOCKED`, so each raw row goes to one of them, and the
//! rollup rows are updated under their row lock; SQLite has one writer at a time.
//!
//! **Why hourly.** An hour keeps what the forecaster and an operator look for in old
//! history (the daily and weekly shape, the peaks: rollups keep each hour's max as well
//! as its mean) at 8,760 rows per pool-year; finer buckets would multiply the size for
//! detail that the raw weeks already give.
//!
//! **Run times** are rolled up as a count, a sum and a [`RunTimeHistogram`]: 8 buckets
//! per octave of milliseconds, so any quantile read from it is within 4.5 % of the
//! exact one, stored sparse (a few bytes per occupied bucket).
//!
//! **Reading.** [`Store::queue_history`] merges both tiers into at most `max_points`
//! buckets of a round width; [`Store::task_runs`] gives the raw runs (the replay input)
//! and [`Store::task_run_distribution`] the run-time distribution over both tiers.

use std::collections::BTreeMap;

use capstan_core::{PoolId, QueueSample, Timestamp};
use serde::Serialize;

use crate::{BackendKind, Store, StoreError, on_backend, to_u32};

/// Width of one rollup bucket, in milliseconds: an hour (see the module docs).
pub const ROLLUP_WIDTH_MS: i64 = 3_600_000;

/// The longest rollup retention the service accepts, in days (ten years): bounds the
/// configuration and how far back the API lets a caller ask.
pub const MAX_ROLLUP_HISTORY_DAYS: u32 = 3660;

/// Round bucket widths [`Store::queue_history`] chooses from, in seconds; each below an
/// hour divides the hour, each above is a multiple of it, so rollups never straddle a
/// bucket. Past the last, widths are whole weeks.
const WIDTHS_S: [i64; 20] = [
    1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 14_400, 21_600, 43_200,
    86_400, 172_800, 604_800,
];

/// `t` rounded down to the start of its rollup hour.
pub fn rollup_bucket(t: Timestamp) -> Timestamp {
    Timestamp::from_unix_ms(t.unix_ms().div_euclid(ROLLUP_WIDTH_MS) * ROLLUP_WIDTH_MS)
}

/// One bucket of a pool's queue history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// Start of the bucket: a multiple of `width_s` since the epoch, so it may lie
    /// before the `since` asked for.
    pub at: Timestamp,
    /// Width of the bucket in seconds.
    pub width_s: u32,
    /// Samples merged into the bucket.
    pub samples: u64,
    /// Mean of the samples' pending tasks.
    pub pending_mean: f64,
    /// Most pending tasks in one sample.
    pub pending_max: u32,
    /// Mean of the samples' running tasks.
    pub running_mean: f64,
    /// Most running tasks in one sample.
    pub running_max: u32,
    /// Arrivals over the bucket.
    pub arrivals: u64,
    /// Completions over the bucket.
    pub completions: u64,
}

/// One finished task as stored raw, every column (the replay input).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRunRecord {
    /// The worker that ran it.
    pub worker_id: String,
    /// When it finished.
    pub finished_at: Timestamp,
    /// How long it ran, in milliseconds.
    pub duration_ms: i64,
    /// When the server recorded it.
    pub recorded_at: Timestamp,
}

/// What one [`Store::compact_history`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Raw queue samples moved into rollups.
    pub samples_rolled_up: u64,
    /// Raw task runs moved into rollups.
    pub runs_rolled_up: u64,
    /// Queue and run-time rollups deleted for being older than their retention.
    pub rollups_deleted: u64,
}

/// Buckets per octave of the run-time histogram.
const PER_OCTAVE: f64 = 8.0;
/// Buckets of the run-time histogram: 256 at 8 per octave reach 2^32 ms (49 days).
const BUCKETS: usize = 256;

/// A log-scale histogram of task run times.
///
/// Bucket `i` holds durations `d` (ms) with `floor(8 * log2(max(d, 1))) = i`, so each
/// spans a factor of 2^(1/8) ≈ 1.09; durations from 49.7 days up share the last one.
/// A quantile is answered with its bucket's geometric middle, within 2^(1/16) - 1 ≈
/// 4.4 % of the exact value (below 1 ms, the first bucket, within 1 ms).
///
/// Why not `hdrhistogram`: its V2 encoding carries a 40-byte header per histogram and
/// linear sub-buckets; stored once per pool-hour, these 1–3 bytes per occupied bucket
/// are the whole row. Fixed boundaries also mean any two histograms merge by adding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTimeHistogram {
    counts: Vec<u64>,
}

impl Default for RunTimeHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }
}

impl RunTimeHistogram {
    /// The bucket a duration falls in.
    pub fn bucket_of(duration_ms: i64) -> usize {
        if duration_ms <= 1 {
            return 0;
        }
        let i = ((duration_ms as f64).log2() * PER_OCTAVE).floor();
        (i as usize).min(BUCKETS - 1)
    }

    /// The geometric middle of bucket `i`, in milliseconds.
    fn middle_ms(i: usize) -> f64 {
        ((i as f64 + 0.5) / PER_OCTAVE).exp2()
    }

    /// Counts one run.
    pub fn record(&mut self, duration_ms: i64) {
        self.counts[Self::bucket_of(duration_ms)] += 1;
    }

    /// Adds `other`'s counts to this one's.
    pub fn merge(&mut self, other: &RunTimeHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Runs counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `p`-quantile (0 < p <= 1) in milliseconds: the middle of the bucket holding
    /// the run of rank `ceil(p * count)`. `None` when empty.
    pub fn quantile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((p.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::middle_ms(i));
            }
        }
        Some(Self::middle_ms(BUCKETS - 1))
    }

    /// The stored form: for each non-empty bucket in order, its index (one byte) and
    /// its count (unsigned LEB128).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            // BUCKETS is 256: every index fits a byte.
            out.push(i as u8);
            let mut c = c;
            while c >= 0x80 {
                out.push((c as u8 & 0x7f) | 0x80);
                c >>= 7;
            }
            out.push(c as u8);
        }
        out
    }

    /// Reads [`RunTimeHistogram::encode`]'s form; the error says where it broke off.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut h = Self::default();
        let mut pos = 0;
        while pos < bytes.len() {
            let i = usize::from(bytes[pos]);
            pos += 1;
            let mut c: u64 = 0;
            let mut shift = 0;
            loop {
                let Some(&b) = bytes.get(pos) else {
                    return Err(format!(
                        "run-time histogram: count of bucket {i} cut off at byte {pos}"
                    ));
                };
                pos += 1;
                if shift > 63 {
                    return Err(format!(
                        "run-time histogram: count of bucket {i} longer than 64 bits"
                    ));
                }
                c |= u64::from(b & 0x7f) << shift;
                shift += 7;
                if b & 0x80 == 0 {
                    break;
                }
            }
            h.counts[i] += c;
        }
        Ok(h)
    }
}

/// The run-time distribution of a pool's tasks over a period, from raw runs and
/// rollups.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunTimeDistribution {
    /// Runs counted.
    pub count: u64,
    /// Sum of their durations, in milliseconds (exact).
    pub sum_ms: i64,
    /// Their durations, log-scale.
    pub histogram: RunTimeHistogram,
}

impl RunTimeDistribution {
    /// Mean duration in milliseconds (exact); `None` when no run.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ms as f64 / self.count as f64)
    }

    /// The `p`-quantile in milliseconds, within 4.5 % (see [`RunTimeHistogram`]).
    pub fn quantile_ms(&self, p: f64) -> Option<f64> {
        self.histogram.quantile(p)
    }
}

/// Sums of samples in one bucket, before they become a [`HistoryPoint`].
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    width_ms: i64,
    samples: i64,
    pending_sum: i64,
    pending_max: i64,
    running_sum: i64,
    running_max: i64,
    arrivals: i64,
    completions: i64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.samples += o.samples;
        self.pending_sum += o.pending_sum;
        self.pending_max = self.pending_max.max(o.pending_max);
        self.running_sum += o.running_sum;
        self.running_max = self.running_max.max(o.running_max);
        self.arrivals += o.arrivals;
        self.completions += o.completions;
    }

    fn point(&self, at: i64) -> Result<HistoryPoint, StoreError> {
        let n = self.samples.max(1) as f64;
        let count = |v: i64, what: &str| {
            u64::try_from(v)
                .map_err(|_| StoreError::Corrupt(format!("history {what} = {v} is negative")))
        };
        Ok(HistoryPoint {
            at: Timestamp::from_unix_ms(at),
            width_s: u32::try_from(self.width_ms / 1000).map_err(|_| {
                StoreError::Corrupt(format!("history bucket of {} ms", self.width_ms))
            })?,
            samples: count(self.samples, "samples")?,
            pending_mean: self.pending_sum as f64 / n,
            pending_max: to_u32(self.pending_max, "pending_max")?,
            running_mean: self.running_sum as f64 / n,
            running_max: to_u32(self.running_max, "running_max")?,
            arrivals: count(self.arrivals, "arrivals")?,
            completions: count(self.completions, "completions")?,
        })
    }
}

/// The bucket width in ms [`Store::queue_history`] uses for `[since, until)` so that at
/// most `max_points` epoch-aligned buckets cover it: the first round width that fits.
/// [`Store::pool_series`] buckets with it too, so the dashboard's axes line up.
pub(crate) fn bucket_width_ms(since: i64, until: i64, max_points: u32) -> i64 {
    let cells = |w: i64| (until - 1).div_euclid(w) - since.div_euclid(w) + 1;
    let max = i64::from(max_points.max(1));
    if let Some(&w) = WIDTHS_S.iter().find(|&&w| cells(w * 1000) <= max) {
        return w * 1000;
    }
    let week = 604_800_000;
    let mut w = ((until - since) / max / week).max(1) * week;
    while cells(w) > max {
        w += week;
    }
    w
}

/// Row of the queue aggregates: cell, samples, pending sum and max, running sum and
/// max, arrivals, completions.
type SumsRow = (i64, i64, i64, i64, i64, i64, i64, i64);

fn sums_of(r: SumsRow, width_ms: i64) -> (i64, Sums) {
    (
        r.0,
        Sums {
            width_ms,
            samples: r.1,
            pending_sum: r.2,
            pending_max: r.3,
            running_sum: r.4,
            running_max: r.5,
            arrivals: r.6,
            completions: r.7,
        },
    )
}

impl Store {
    /// Row lock for taking a batch of raw rows: on PostgreSQL concurrent compactions
    /// take disjoint rows; SQLite serialises writers anyway (and has no such clause).
    fn batch_lock(&self) -> &'static str {
        match self.kind() {
            BackendKind::Postgres => " FOR UPDATE SKIP LOCKED",
            BackendKind::Sqlite => "",
        }
    }

    /// Retention of history (see the module docs): moves raw queue samples and task
    /// runs from before the hour holding `raw_before` into hourly rollups, and deletes
    /// rollups of hours before the one holding `rollup_before`. Works in transactions
    /// of at most `batch` rows (at least 1), so it never holds a lock for long. Safe to
    /// run again, concurrently, or after a crash.
    pub async fn compact_history(
        &self,
        raw_before: Timestamp,
        rollup_before: Timestamp,
        batch: u32,
    ) -> Result<Compaction, StoreError> {
        let raw_cut = rollup_bucket(raw_before).unix_ms();
        let rollup_cut = rollup_bucket(rollup_before).unix_ms();
        let batch = i64::from(batch.max(1));
        let mut done = Compaction::default();
        for pool in self.pools_in("queue_samples").await? {
            loop {
                let n = self.roll_up_samples(&pool, raw_cut, batch).await?;
                done.samples_rolled_up += n;
                if n < batch as u64 {
                    break;
                }
            }
        }
        for pool in self.pools_in("task_runs").await? {
            loop {
                let n = self.roll_up_runs(&pool, raw_cut, batch).await?;
                done.runs_rolled_up += n;
                if n < batch as u64 {
                    break;
                }
            }
        }
        for table in ["queue_rollups", "task_run_rollups"] {
            for pool in self.pools_in(table).await? {
                loop {
                    let n = self.prune_rollups(table, &pool, rollup_cut, batch).await?;
                    done.rollups_deleted += n;
                    if n < batch as u64 {
                        break;
                    }
                }
            }
        }
        Ok(done)
    }

    /// The pool ids with rows in `table` (one of the history tables), walked one index
    /// probe per pool rather than by scanning the table.
    async fn pools_in(&self, table: &'static str) -> Result<Vec<String>, StoreError> {
        let sql =
            format!("SELECT pool_id FROM {table} WHERE pool_id > $1 ORDER BY pool_id LIMIT 1");
        let mut pools = Vec::new();
        let mut after = String::new();
        loop {
            let next: Option<(String,)> = on_backend!(self, pool => {
                sqlx::query_as(&sql).bind(&after).fetch_optional(pool).await?
            });
            let Some((id,)) = next else {
                return Ok(pools);
            };
            after.clone_from(&id);
            pools.push(id);
        }
    }

    /// Moves one batch of `pool`'s samples from before `cut` into their rollups;
    /// answers how many.
    async fn roll_up_samples(
        &self,
        pool_id: &str,
        cut: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let take = format!(
            "DELETE FROM queue_samples WHERE pool_id = $1 AND at IN (
               SELECT at FROM queue_samples WHERE pool_id = $1 AND at < $2
               ORDER BY at LIMIT $3{})
             RETURNING at, pending, running, arrivals, completions",
            self.batch_lock()
        );
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(&take)
                .bind(pool_id)
                .bind(cut)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let mut hours: BTreeMap<i64, Sums> = BTreeMap::new();
            for &(at, pending, running, arrivals, completions) in &rows {
                let hour = at.div_euclid(ROLLUP_WIDTH_MS) * ROLLUP_WIDTH_MS;
                hours.entry(hour).or_default().add(&Sums {
                    width_ms: ROLLUP_WIDTH_MS,
                    samples: 1,
                    pending_sum: pending,
                    pending_max: pending,
                    running_sum: running,
                    running_max: running,
                    arrivals,
                    completions,
                });
            }
            for (hour, s) in &hours {
                sqlx::query(
                    "INSERT INTO queue_rollups (pool_id, bucket_start, samples, pending_sum,
                       pending_max, running_sum, running_max, arrivals, completions)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (pool_id, bucket_start) DO UPDATE SET
                       samples = queue_rollups.samples + excluded.samples,
                       pending_sum = queue_rollups.pending_sum + excluded.pending_sum,
                       pending_max = CASE WHEN excluded.pending_max > queue_rollups.pending_max
                         THEN excluded.pending_max ELSE queue_rollups.pending_max END,
                       running_sum = queue_rollups.running_sum + excluded.running_sum,
                       running_max = CASE WHEN excluded.running_max > queue_rollups.running_max
                         THEN excluded.running_max ELSE queue_rollups.running_max END,
                       arrivals = queue_rollups.arrivals + excluded.arrivals,
                       completions = queue_rollups.completions + excluded.completions",
                )
                .bind(pool_id)
                .bind(hour)
                .bind(s.samples)
                .bind(s.pending_sum)
                .bind(s.pending_max)
                .bind(s.running_sum)
                .bind(s.running_max)
                .bind(s.arrivals)
                .bind(s.completions)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        })
    }

    /// Moves one batch of `pool`'s task runs that finished, and were recorded, before
    /// `cut` into their rollups; answers how many. (A run recorded late stays raw until
    /// the loop, which reads runs by recording time, has had it for the raw retention.)
    async fn roll_up_runs(&self, pool_id: &str, cut: i64, batch: i64) -> Result<u64, StoreError> {
        let take = format!(
            "DELETE FROM task_runs WHERE (worker_id, finished_at) IN (
               SELECT worker_id, finished_at FROM task_runs
               WHERE pool_id = $1 AND finished_at < $2 AND recorded_at < $2
               ORDER BY finished_at LIMIT $3{})
             RETURNING finished_at, duration_ms",
            self.batch_lock()
        );
        let lock_row = match self.kind() {
            BackendKind::Postgres => " FOR UPDATE",
            BackendKind::Sqlite => "",
        };
        let read = format!(
            "SELECT runs, duration_sum, histogram FROM task_run_rollups
             WHERE pool_id = $1 AND bucket_start = $2{lock_row}"
        );
        on_backend!(self, pool => {
            let mut tx = pool.begin().await?;
            let rows: Vec<(i64, i64)> = sqlx::query_as(&take)
                .bind(pool_id)
                .bind(cut)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            let mut hours: BTreeMap<i64, (i64, i64, RunTimeHistogram)> = BTreeMap::new();
            for &(finished_at, duration_ms) in &rows {
                let hour = finished_at.div_euclid(ROLLUP_WIDTH_MS) * ROLLUP_WIDTH_MS;
                let h = hours.entry(hour).or_default();
                h.0 += 1;
                h.1 += duration_ms;
                h.2.record(duration_ms);
            }
            // Hours in ascending order: two replicas lock rollup rows in one order.
            for (hour, (runs, sum, hist)) in hours {
                sqlx::query(
                    "INSERT INTO task_run_rollups (pool_id, bucket_start, runs, duration_sum, histogram)
                     VALUES ($1, $2, 0, 0, $3) ON CONFLICT (pool_id, bucket_start) DO NOTHING",
                )
                .bind(pool_id)
                .bind(hour)
                .bind(Vec::<u8>::new())
                .execute(&mut *tx)
                .await?;
                let (old_runs, old_sum, old_hist): (i64, i64, Vec<u8>) = sqlx::query_as(&read)
                    .bind(pool_id)
                    .bind(hour)
                    .fetch_one(&mut *tx)
                    .await?;
                let mut merged = RunTimeHistogram::decode(&old_hist)
                    .map_err(|e| StoreError::Corrupt(format!("pool {pool_id}: {e}")))?;
                merged.merge(&hist);
                sqlx::query(
                    "UPDATE task_run_rollups SET runs = $3, duration_sum = $4, histogram = $5
                     WHERE pool_id = $1 AND bucket_start = $2",
                )
                .bind(pool_id)
                .bind(hour)
                .bind(old_runs + runs)
                .bind(old_sum + sum)
                .bind(merged.encode())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(rows.len() as u64)
        })
    }

    /// Deletes one batch of `pool`'s rollups in `table` from hours before `cut`.
    async fn prune_rollups(
        &self,
        table: &'static str,
        pool_id: &str,
        cut: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {table} WHERE pool_id = $1 AND bucket_start IN (
               SELECT bucket_start FROM {table} WHERE pool_id = $1 AND bucket_start < $2
               ORDER BY bucket_start LIMIT $3)"
        );
        Ok(on_backend!(self, pool => {
            sqlx::query(&sql)
                .bind(pool_id)
                .bind(cut)
                .bind(batch)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// `pool`'s queue history over `[since, until)` in at most `max_points` buckets
    /// (at least 1), oldest first, leaving out empty ones.
    ///
    /// Buckets are epoch-aligned with a round width (1 s up to 1 h, multiples of an hour
    /// beyond, then whole weeks): the narrowest for which `max_points` cover the range.
    /// Raw samples serve where they are kept; before that, hourly rollups, so when the
    /// width is under an hour the rolled-up part comes as hour-wide points. A rollup
    /// hour that overlaps `since` is included whole.
    pub async fn queue_history(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        until: Timestamp,
        max_points: u32,
    ) -> Result<Vec<HistoryPoint>, StoreError> {
        let (since, until) = (since.unix_ms(), until.unix_ms());
        if until <= since {
            return Ok(Vec::new());
        }
        let width = bucket_width_ms(since, until, max_points);
        let rollup_width = width.max(ROLLUP_WIDTH_MS);
        let raw: Vec<SumsRow> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT (at / $4) * $4 AS cell, COUNT(*), CAST(SUM(pending) AS BIGINT),
                        MAX(pending), CAST(SUM(running) AS BIGINT), MAX(running),
                        CAST(SUM(arrivals) AS BIGINT), CAST(SUM(completions) AS BIGINT)
                 FROM queue_samples WHERE pool_id = $1 AND at >= $2 AND at < $3
                 GROUP BY cell ORDER BY cell",
            )
            .bind(pool_id.as_str())
            .bind(since)
            .bind(until)
            .bind(width)
            .fetch_all(pool)
            .await?
        });
        let rolled: Vec<SumsRow> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT (bucket_start / $4) * $4 AS cell, CAST(SUM(samples) AS BIGINT),
                        CAST(SUM(pending_sum) AS BIGINT), MAX(pending_max),
                        CAST(SUM(running_sum) AS BIGINT), MAX(running_max),
                        CAST(SUM(arrivals) AS BIGINT), CAST(SUM(completions) AS BIGINT)
                 FROM queue_rollups WHERE pool_id = $1 AND bucket_start >= $2 AND bucket_start < $3
                 GROUP BY cell ORDER BY cell",
            )
            .bind(pool_id.as_str())
            .bind(since.div_euclid(ROLLUP_WIDTH_MS) * ROLLUP_WIDTH_MS)
            .bind(until)
            .bind(rollup_width)
            .fetch_all(pool)
            .await?
        });
        let mut cells: BTreeMap<i64, Sums> = rolled
            .into_iter()
            .map(|r| sums_of(r, rollup_width))
            .collect();
        for r in raw {
            let (cell, sums) = sums_of(r, width);
            // Under an hour wide, raw samples in an hour that also has a rollup (pushed
            // late, or mid-move) join the hour's point.
            let hour = cell.div_euclid(rollup_width) * rollup_width;
            match cells.get_mut(&hour) {
                Some(into) if into.width_ms == rollup_width => into.add(&sums),
                _ => {
                    cells
                        .entry(cell)
                        .or_insert(Sums {
                            width_ms: width,
                            ..Sums::default()
                        })
                        .add(&sums);
                }
            }
        }
        cells.iter().map(|(&at, s)| s.point(at)).collect()
    }

    /// `pool`'s raw task runs that finished in `[since, until)`, by finish time then
    /// worker, every column as stored (runs already rolled up are not among them).
    pub async fn task_runs(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<TaskRunRecord>, StoreError> {
        let rows: Vec<(String, i64, i64, i64)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT worker_id, finished_at, duration_ms, recorded_at FROM task_runs
                 WHERE pool_id = $1 AND finished_at >= $2 AND finished_at < $3
                 ORDER BY finished_at, worker_id",
            )
            .bind(pool_id.as_str())
            .bind(since.unix_ms())
            .bind(until.unix_ms())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(worker_id, fin, duration_ms, rec)| TaskRunRecord {
                worker_id,
                finished_at: Timestamp::from_unix_ms(fin),
                duration_ms,
                recorded_at: Timestamp::from_unix_ms(rec),
            })
            .collect())
    }

    /// The run-time distribution of `pool`'s tasks that finished in `[since, until)`:
    /// raw runs, plus the rollups of hours overlapping the range (whole).
    pub async fn task_run_distribution(
        &self,
        pool_id: &PoolId,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<RunTimeDistribution, StoreError> {
        let raw: Vec<(i64,)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT duration_ms FROM task_runs
                 WHERE pool_id = $1 AND finished_at >= $2 AND finished_at < $3",
            )
            .bind(pool_id.as_str())
            .bind(since.unix_ms())
            .bind(until.unix_ms())
            .fetch_all(pool)
            .await?
        });
        let rolled: Vec<(i64, i64, Vec<u8>)> = on_backend!(self, pool => {
            sqlx::query_as(
                "SELECT runs, duration_sum, histogram FROM task_run_rollups
                 WHERE pool_id = $1 AND bucket_start >= $2 AND bucket_start < $3",
            )
            .bind(pool_id.as_str())
            .bind(rollup_bucket(since).unix_ms())
            .bind(until.unix_ms())
            .fetch_all(pool)
            .await?
        });
        let mut d = RunTimeDistribution::default();
        for (duration_ms,) in raw {
            d.count += 1;
            d.sum_ms += duration_ms;
            d.histogram.record(duration_ms);
        }
        for (runs, sum, hist) in rolled {
            d.count += u64::try_from(runs)
                .map_err(|_| StoreError::Corrupt(format!("task_run_rollups.runs = {runs}")))?;
            d.sum_ms += sum;
            d.histogram.merge(
                &RunTimeHistogram::decode(&hist)
                    .map_err(|e| StoreError::Corrupt(format!("pool {pool_id}: {e}")))?,
            );
        }
        Ok(d)
    }

    /// Stores many queue samples of `pool` at once (multi-row inserts, a transaction
    /// per 1,000): for imports and replays, where [`Store::record_queue_samples`]'s row
    /// at a time is too slow. Same upsert rule: a sample at a stored instant replaces it.
    pub async fn import_queue_samples(
        &self,
        pool_id: &PoolId,
        samples: &[QueueSample],
    ) -> Result<(), StoreError> {
        for chunk in samples.chunks(1000) {
            on_backend!(self, pool => {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO queue_samples (pool_id, at, pending, running, arrivals, completions) ",
                );
                q.push_values(chunk, |mut b, s| {
                    b.push_bind(pool_id.as_str())
                        .push_bind(s.at.unix_ms())
                        .push_bind(i64::from(s.pending))
                        .push_bind(i64::from(s.running))
                        .push_bind(i64::from(s.arrivals))
                        .push_bind(i64::from(s.completions));
                });
                q.push(
                    " ON CONFLICT (pool_id, at) DO UPDATE SET pending = excluded.pending,
                      running = excluded.running, arrivals = excluded.arrivals,
                      completions = excluded.completions",
                );
                q.build().execute(pool).await?;
            });
        }
        Ok(())
    }

    /// Stores many task runs of `pool` at once, every column as given (for imports and
    /// replays); a run already stored (same worker and finish time) is skipped.
    pub async fn import_task_runs(
        &self,
        pool_id: &PoolId,
        runs: &[TaskRunRecord],
    ) -> Result<(), StoreError> {
        for chunk in runs.chunks(1000) {
            on_backend!(self, pool => {
                let mut q = sqlx::QueryBuilder::new(
                    "INSERT INTO task_runs (pool_id, worker_id, finished_at, duration_ms, recorded_at) ",
                );
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(pool_id.as_str())
                        .push_bind(r.worker_id.as_str())
                        .push_bind(r.finished_at.unix_ms())
                        .push_bind(r.duration_ms)
                        .push_bind(r.recorded_at.unix_ms());
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().execute(pool).await?;
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips_through_its_stored_form() {
        let mut h = RunTimeHistogram::default();
        for (d, times) in [(0, 3), (1_500, 200), (90_000, 1), (i64::MAX, 2)] {
            for _ in 0..times {
                h.record(d);
            }
        }
        let bytes = h.encode();
        // Four occupied buckets: an index byte each, counts 3, 200 (two bytes), 1, 2.
        assert_eq!(bytes.len(), 4 + 5);
        assert_eq!(RunTimeHistogram::decode(&bytes).unwrap(), h);
        assert_eq!(h.count(), 206);
        let err = RunTimeHistogram::decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(err.contains("cut off"), "{err}");
    }

    #[test]
    fn buckets_grow_by_an_eighth_of_an_octave() {
        assert_eq!(RunTimeHistogram::bucket_of(-5), 0);
        assert_eq!(RunTimeHistogram::bucket_of(1), 0);
        assert_eq!(RunTimeHistogram::bucket_of(2), 8);
        assert_eq!(RunTimeHistogram::bucket_of(1024), 80);
        assert_eq!(RunTimeHistogram::bucket_of(1023), 79);
        assert_eq!(RunTimeHistogram::bucket_of(1 << 40), 255);
        let mut last = 0;
        for d in 1..100_000 {
            let b = RunTimeHistogram::bucket_of(d);
            // Never down; from 12 ms on, where a bucket is wider than 1 ms, one at a time.
            assert!(b >= last && (d < 12 || b <= last + 1), "{d}: {last} -> {b}");
            last = b;
        }
    }

    #[test]
    fn quantiles_are_within_four_and_a_half_percent_of_the_exact_ones() {
        // Durations spread over five decades, deterministic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut durations: Vec<i64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                (10f64.powf(2.0 + 5.0 * u)) as i64
            })
            .collect();
        let mut h = RunTimeHistogram::default();
        durations.iter().for_each(|&d| h.record(d));
        durations.sort_unstable();
        for p in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let rank = ((p * durations.len() as f64).ceil() as usize).max(1);
            let exact = durations[rank - 1] as f64;
            let got = h.quantile(p).unwrap();
            assert!(
                (got / exact - 1.0).abs() <= 0.045,
                "p{p}: {got} vs exact {exact}"
            );
        }
        assert_eq!(RunTimeHistogram::default().quantile(0.5), None);
    }

    #[test]
    fn bucket_width_is_round_and_bounds_the_points() {
        let h = 3_600_000;
        // 6 h in 720 points: 30 s does not fit an unaligned range, 1 min does.
        assert_eq!(bucket_width_ms(1_000, 1_000 + 6 * h, 720), 60_000);
        assert_eq!(bucket_width_ms(0, 6 * h, 720), 30_000);
        // A year: 12 h would take 730 points.
        assert_eq!(bucket_width_ms(0, 365 * 24 * h, 720), 86_400_000);
        assert_eq!(bucket_width_ms(0, 3650 * 24 * h, 10), 53 * 604_800_000);
        for (since, until, max) in [(7, 9_999_999_999, 13), (5, 6, 1), (0, 10 * h, 3)] {
            let w = bucket_width_ms(since, until, max);
            let cells = (until - 1) / w - since / w + 1;
            assert!(cells <= i64::from(max), "{since}..{until} / {max}: {w}");
        }
    }
}
