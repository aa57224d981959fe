//! The demo's demand: one seeded model that writes the two weeks of history and
//! then feeds the live queue, so the forecast has learned exactly what comes next.
//!
//! **Why it is laid out like this.** The predictor counts arrivals in buckets of the
//! clock (`predictor::SeasonalConfig::default().bucket_s`, 15 minutes, epoch-aligned)
//! and forecasts a bucket from the same bucket a week (or a day) earlier; inside a
//! bucket it spreads the count evenly. Anything it is to foresee must therefore repeat
//! at the same bucket of the clock. The demo compresses a working day into an hour of
//! four buckets — two of **rush** (a burst of tasks every [`Shape::burst_every_s`]), a
//! **busy** one (every other burst, smaller) and a **quiet** one (a trickle) — and
//! lines the cycle up so that the first rush bucket is the one the demo starts in. The
//! first live burst (a minute after start) so falls in a rush bucket however late in
//! its bucket the demo started. History carries the same cycle for two weeks, so from
//! its first round the forecast expects the rush while the live queue is still empty:
//! capacity rises before the first burst comes. An hour later the next rush is
//! foreseen the same way, its capacity launched as the forecast's window reaches it.
//!
//! The background trickle follows a mild daily curve of the real clock (busiest at
//! 14:00 UTC, 70 % of that at 02:00), which gives the 1-day and 1-week charts a shape.
//!
//! Everything here is pure and seeded: a bucket's trickle and a burst's tasks are drawn
//! from their own seeded streams, so any range of time gives the same tasks whichever
//! way it is asked for.

use capstan_core::{QueueSample, Timestamp};
use simulations::rng::SimRng;
use store::history::TaskRunRecord;

/// Seconds in a day.
const DAY_S: i64 = 86_400;
/// The cycle: rush, rush, busy, quiet (one bucket each).
pub const CYCLE_BUCKETS: i64 = 4;
/// A burst's tasks arrive within this many seconds of its start.
pub const BURST_SPREAD_S: f64 = 8.0;
/// Longest a history task waited for a slot, in seconds, when the fleet kept up.
const HISTORY_MAX_WAIT_S: f64 = 15.0;
/// Share of history tasks that waited 2–3 minutes: the fleet met a 95 % service level
/// and no better. (A history where every task started at once drives the predictor's
/// wait feedback, which warms into an additive margin, to its floor of −8 slots, and
/// the forecast pool would start with no spare at all.)
const HISTORY_LATE_SHARE: f64 = 0.05;
/// Seconds between two history queue samples.
pub const HISTORY_SAMPLE_S: i64 = 60;

/// One pool's demand parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Tasks of a rush burst (a pipeline's jobs: drawn within ±20 % of this); a busy
    /// bucket's bursts are 60 % of it.
    pub burst_tasks: f64,
    /// Seconds between bursts.
    pub burst_every_s: i64,
    /// Trickle arrivals per bucket at the busiest time of day, by phase (rush, busy,
    /// quiet).
    pub trickle: [f64; 3],
    /// Median task run time, seconds (log-normal).
    pub run_median_s: f64,
    /// Shape of the log-normal run time.
    pub run_sigma: f64,
}

/// Where a bucket is in the hourly cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A burst every `burst_every_s`.
    Rush,
    /// Every other burst, at 60 %.
    Busy,
    /// Only the trickle.
    Quiet,
}

/// One task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// When it enters the queue, Unix ms.
    pub at_ms: i64,
    /// How long it runs once it has a slot, seconds.
    pub run_s: f64,
    /// How long it waited in the history (the live queue measures its own).
    pub history_wait_s: f64,
    /// The start (Unix ms) of the burst it belongs to; none for the trickle.
    pub burst: Option<i64>,
}

/// The demand of one pool. See the module docs.
#[derive(Debug, Clone)]
pub struct Demand {
    seed: u64,
    shape: Shape,
    bucket_ms: i64,
    /// The first bucket of a rush.
    rush_bucket: i64,
    /// Bursts start at `first_burst_ms + k · burst_every_s` for every integer `k`.
    first_burst_ms: i64,
}

impl Demand {
    /// The demand of a demo starting at `start` whose first live burst comes at
    /// `first_burst`, in buckets of `bucket_s` seconds.
    pub fn new(
        seed: u64,
        shape: Shape,
        bucket_s: u32,
        start: Timestamp,
        first_burst: Timestamp,
    ) -> Self {
        let bucket_ms = i64::from(bucket_s.max(1)) * 1000;
        Self {
            seed,
            shape,
            bucket_ms,
            rush_bucket: start.unix_ms().div_euclid(bucket_ms),
            first_burst_ms: first_burst.unix_ms(),
        }
    }

    /// The bucket holding `t_ms`.
    pub fn bucket_of(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.bucket_ms)
    }

    /// Where bucket `b` is in the cycle.
    pub fn phase(&self, b: i64) -> Phase {
        match (b - self.rush_bucket).rem_euclid(CYCLE_BUCKETS) {
            0 | 1 => Phase::Rush,
            2 => Phase::Busy,
            _ => Phase::Quiet,
        }
    }

    /// The rush the demo starts in, as `[start, end)` Unix ms.
    pub fn first_rush_ms(&self) -> (i64, i64) {
        let start = self.rush_bucket * self.bucket_ms;
        (start, start + 2 * self.bucket_ms)
    }

    /// The tasks arriving in `[from_ms, to_ms)`, in time order.
    pub fn arrivals(&self, from_ms: i64, to_ms: i64) -> Vec<Arrival> {
        let mut out = Vec::new();
        if to_ms <= from_ms {
            return out;
        }
        // The trickle, bucket by bucket.
        for b in self.bucket_of(from_ms)..=self.bucket_of(to_ms - 1) {
            let phase = self.phase(b);
            let start = b * self.bucket_ms;
            let mean =
                self.shape.trickle[phase as usize] * daily_factor(start + self.bucket_ms / 2);
            let mut rng = self.stream(1, b);
            for _ in 0..rng.poisson(mean) {
                let at_ms = start + (rng.uniform() * self.bucket_ms as f64) as i64;
                let a = self.task(&mut rng, at_ms, None);
                if (from_ms..to_ms).contains(&a.at_ms) {
                    out.push(a);
                }
            }
        }
        // The bursts that may reach into the range.
        let every_ms = self.shape.burst_every_s.max(1) * 1000;
        let spread_ms = (BURST_SPREAD_S * 1000.0) as i64;
        let first_k = (from_ms - spread_ms - self.first_burst_ms).div_euclid(every_ms);
        let last_k = (to_ms - self.first_burst_ms).div_euclid(every_ms);
        for k in first_k..=last_k {
            let t = self.first_burst_ms + k * every_ms;
            let mean = match self.phase(self.bucket_of(t)) {
                Phase::Rush => self.shape.burst_tasks,
                Phase::Busy if k.rem_euclid(2) == 0 => 0.6 * self.shape.burst_tasks,
                _ => continue,
            };
            let mut rng = self.stream(2, k);
            let size = (mean * (0.8 + 0.4 * rng.uniform())).round() as u64;
            for _ in 0..size {
                let at_ms = t + (rng.uniform() * BURST_SPREAD_S * 1000.0) as i64;
                let a = self.task(&mut rng, at_ms, Some(t));
                if (from_ms..to_ms).contains(&a.at_ms) {
                    out.push(a);
                }
            }
        }
        out.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.run_s.total_cmp(&b.run_s)));
        out
    }

    fn task(&self, rng: &mut SimRng, at_ms: i64, burst: Option<i64>) -> Arrival {
        let run_s = rng
            .log_normal(self.shape.run_median_s, self.shape.run_sigma)
            .clamp(2.0, 20.0 * self.shape.run_median_s);
        Arrival {
            at_ms,
            run_s,
            history_wait_s: if rng.uniform() < HISTORY_LATE_SHARE {
                120.0 + 60.0 * rng.uniform()
            } else {
                rng.uniform() * HISTORY_MAX_WAIT_S
            },
            burst,
        }
    }

    /// The seeded stream of draws for one bucket's trickle (`kind` 1) or one burst
    /// (`kind` 2).
    fn stream(&self, kind: u64, index: i64) -> SimRng {
        let mixed = self
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(kind.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
            .wrapping_add((index as u64).wrapping_mul(0x1656_67B1_9E37_79F9));
        SimRng::new(mixed)
    }

    /// What the live queue receives in `[from_ms, to_ms)`: nothing before the first
    /// burst (the queue starts empty and quiet), then every task.
    pub fn live(&self, from_ms: i64, to_ms: i64) -> Vec<Arrival> {
        self.arrivals(from_ms.max(self.first_burst_ms), to_ms)
    }

    /// Two weeks (`days`) of history before `start`: queue samples every
    /// [`HISTORY_SAMPLE_S`] and the run of every task finished by `start`. The bucket
    /// `start` falls in gets its trickle only, no burst: its rush is the one the live
    /// queue is about to see.
    pub fn history(&self, start: Timestamp, days: i64) -> History {
        let end_ms = start.unix_ms();
        let begin_ms = end_ms - days * DAY_S * 1000;
        let current_bucket_ms = self.bucket_of(end_ms) * self.bucket_ms;
        let tasks: Vec<Arrival> = self
            .arrivals(begin_ms, end_ms)
            .into_iter()
            .filter(|a| !(a.burst.is_some() && a.at_ms >= current_bucket_ms))
            .collect();
        let mut arrived: Vec<i64> = tasks.iter().map(|a| a.at_ms).collect();
        let mut started: Vec<i64> = tasks
            .iter()
            .map(|a| a.at_ms + (a.history_wait_s * 1000.0) as i64)
            .collect();
        let mut finished: Vec<i64> = tasks
            .iter()
            .map(|a| a.at_ms + ((a.history_wait_s + a.run_s) * 1000.0) as i64)
            .collect();
        arrived.sort_unstable();
        started.sort_unstable();
        finished.sort_unstable();
        let count = |v: &[i64], t: i64| v.partition_point(|&x| x <= t) as i64;
        let step_ms = HISTORY_SAMPLE_S * 1000;
        let mut samples = Vec::new();
        let mut t = (begin_ms.div_euclid(step_ms) + 1) * step_ms;
        while t < end_ms {
            let (a, s, f) = (count(&arrived, t), count(&started, t), count(&finished, t));
            let (a0, f0) = (count(&arrived, t - step_ms), count(&finished, t - step_ms));
            samples.push(QueueSample {
                at: Timestamp::from_unix_ms(t),
                pending: (a - s).max(0) as u32,
                running: (s - f).max(0) as u32,
                arrivals: (a - a0) as u32,
                completions: (f - f0) as u32,
            });
            t += step_ms;
        }
        let runs = tasks
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let finished_ms = a.at_ms + ((a.history_wait_s + a.run_s) * 1000.0) as i64;
                (finished_ms < end_ms).then(|| TaskRunRecord {
                    // Spread over machines the history's fleet might have had; a
                    // (worker, finished_at) pair is the run's key.
                    worker_id: format!("history-{:03}", i % 400),
                    finished_at: Timestamp::from_unix_ms(finished_ms),
                    duration_ms: (a.run_s * 1000.0) as i64,
                    recorded_at: Timestamp::from_unix_ms(finished_ms),
                })
            })
            .collect();
        History { samples, runs }
    }
}

/// A pool's generated history.
#[derive(Debug, Clone)]
pub struct History {
    /// Queue samples, oldest first.
    pub samples: Vec<QueueSample>,
    /// Finished tasks.
    pub runs: Vec<TaskRunRecord>,
}

/// The trickle's daily curve: 1 at 14:00 UTC, 0.7 at 02:00, a cosine between. Mild on
/// purpose: a bucket whose count last week was 0 makes the predictor's seasonal
/// dispersion jump (its forecast is floored at 0.001 arrivals), so no bucket of the
/// demo's history comes near 0.
fn daily_factor(t_ms: i64) -> f64 {
    let hour = t_ms.rem_euclid(DAY_S * 1000) as f64 / 3_600_000.0;
    0.85 + 0.15 * ((hour - 14.0) / 24.0 * std::f64::consts::TAU).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUCKET_S: u32 = 900;

    fn shape() -> Shape {
        Shape {
            burst_tasks: 12.0,
            burst_every_s: 75,
            trickle: [20.0, 16.0, 8.0],
            run_median_s: 40.0,
            run_sigma: 0.5,
        }
    }

    fn demand(start_s: i64) -> Demand {
        let start = Timestamp::from_unix_secs(start_s);
        Demand::new(7, shape(), BUCKET_S, start, start.plus_secs(50))
    }

    #[test]
    fn the_rush_starts_in_the_starting_bucket_and_lasts_two() {
        for into in [100, 850] {
            let d = demand(1_000 * 900 + into);
            assert_eq!(d.first_rush_ms(), (900_000_000, 901_800_000));
            assert_eq!(d.phase(1_000), Phase::Rush);
            assert_eq!(d.phase(1_001), Phase::Rush);
            assert_eq!(d.phase(1_002), Phase::Busy);
            assert_eq!(d.phase(1_003), Phase::Quiet);
            assert_eq!(d.phase(1_004), Phase::Rush);
            assert_eq!(
                d.phase(1_000 - 96),
                Phase::Rush,
                "the same bucket a day earlier"
            );
            // The first burst, 50 s after start, is in the rush however late it began.
            let start_ms = (1_000 * 900 + into) * 1000;
            let first = d.live(start_ms, start_ms + 600_000)[0];
            assert_eq!(d.phase(d.bucket_of(first.at_ms)), Phase::Rush);
        }
    }

    #[test]
    fn any_split_of_a_range_gives_the_same_tasks() {
        let d = demand(5_000 * 900);
        let from = 5_000 * 900 * 1000 - 3_600_000;
        let whole = d.arrivals(from, from + 7_200_000);
        let mut parts = Vec::new();
        for i in 0..72 {
            parts.extend(d.arrivals(from + i * 100_000, from + (i + 1) * 100_000));
        }
        assert_eq!(whole, parts);
        assert!(whole.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn rush_buckets_hold_the_bursts_and_quiet_ones_only_the_trickle() {
        let start = 5_000 * 900;
        let d = demand(start);
        let mut per_phase = [0usize; 3];
        let mut buckets = [0usize; 3];
        let mut bursts_in_quiet = 0;
        // A week of buckets.
        for b in (5_000 - 672)..5_000 {
            let tasks = d.arrivals(b * 900_000, (b + 1) * 900_000);
            per_phase[d.phase(b) as usize] += tasks.len();
            buckets[d.phase(b) as usize] += 1;
            if d.phase(b) == Phase::Quiet {
                bursts_in_quiet += tasks
                    .iter()
                    .filter(|a| a.burst.is_some() && a.at_ms - b * 900_000 > 10_000)
                    .count();
            }
        }
        // Expected per bucket: rush 12 bursts × 12 + trickle 14–20; busy 6 × 7.2 +
        // 11–16; quiet 5.6–8.
        assert_eq!(buckets, [336, 168, 168]);
        let per_bucket = |p: usize| per_phase[p] as f64 / buckets[p] as f64;
        assert!((150.0..170.0).contains(&per_bucket(0)), "{per_phase:?}");
        assert!((50.0..62.0).contains(&per_bucket(1)), "{per_phase:?}");
        assert!((5.0..9.0).contains(&per_bucket(2)), "{per_phase:?}");
        // Only a burst that began in the busy bucket before may spill into a quiet one.
        assert_eq!(bursts_in_quiet, 0);
    }

    #[test]
    fn live_demand_starts_with_the_first_burst() {
        let start = Timestamp::from_unix_secs(5_000 * 900 + 30);
        let d = Demand::new(3, shape(), BUCKET_S, start, start.plus_secs(50));
        let live = d.live(start.unix_ms(), start.unix_ms() + 600_000);
        let first = live.first().unwrap();
        assert!(first.burst.is_some(), "{first:?}");
        assert!(first.at_ms >= start.plus_secs(50).unix_ms());
        assert!(first.at_ms < start.plus_secs(50 + 8).unix_ms());
    }

    #[test]
    fn history_counts_every_task_once_and_leaves_the_current_rush_to_the_live_queue() {
        let start = Timestamp::from_unix_secs(5_000 * 900 + 300);
        let d = Demand::new(9, shape(), BUCKET_S, start, start.plus_secs(50));
        let h = d.history(start, 1);
        let tasks = d.arrivals(start.unix_ms() - 86_400_000, start.unix_ms());
        let current = 5_000 * 900_000;
        let kept = tasks
            .iter()
            .filter(|a| !(a.burst.is_some() && a.at_ms >= current))
            .count();
        assert!(
            kept < tasks.len(),
            "bursts before start in the current bucket are dropped"
        );
        let arrivals: u32 = h.samples.iter().map(|s| s.arrivals).sum();
        // Each sample counts the minute up to it.
        let (first_at, last_at) = (
            h.samples[0].at.unix_ms(),
            h.samples.last().unwrap().at.unix_ms(),
        );
        let covered = tasks
            .iter()
            .filter(|a| !(a.burst.is_some() && a.at_ms >= current))
            .filter(|a| a.at_ms > first_at - 60_000 && a.at_ms <= last_at)
            .count();
        assert_eq!(arrivals as usize, covered);
        assert_eq!(h.samples.len(), 1439);
        assert!(
            h.samples
                .windows(2)
                .all(|w| w[1].at.unix_ms() - w[0].at.unix_ms() == 60_000)
        );
        // Every run finished before start, and the busiest minute's running count is
        // what a fleet serving a burst looks like.
        assert!(h.runs.iter().all(|r| r.finished_at < start));
        assert!(h.runs.len() > kept * 9 / 10);
        assert!(h.samples.iter().map(|s| s.running).max().unwrap() >= 10);
    }

    #[test]
    fn the_daily_curve_peaks_in_the_afternoon() {
        assert!((daily_factor(14 * 3_600_000) - 1.0).abs() < 1e-9);
        assert!((daily_factor(2 * 3_600_000) - 0.7).abs() < 1e-9);
    }
}
