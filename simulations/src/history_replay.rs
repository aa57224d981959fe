//! A pool's own history as a trace: the input of a what-if
//! (`POST /v1/pools/{pool_id}/simulate`), which replays what a pool's queue really saw
//! through [`crate::engine::simulate`] under its current spec and a candidate one.
//!
//! The store keeps, per pool, queue samples (`at`, `pending`, `running`, `arrivals`,
//! `completions`: each sample counts what happened since the previous one) and task
//! runs (`finished_at`, run time). [`trace_from_history`] turns the ones of a window
//! into a [`Trace`], purely and deterministically (one seed gives one trace):
//!
//! - **When tasks arrived.** Sample `i` covers `[at(i-1), at(i))` (the first one the
//!   typical sampling interval before it); its arrivals are placed uniformly at random
//!   within that interval. The sample only says how many arrived in it, so this is the
//!   least the replay can assume.
//! - **How many arrived.** Pushed samples carry arrivals (given, or estimated by the
//!   server from the growth of pending + running plus completions). Polled queue sources
//!   report levels only: their samples carry no completions, and their arrivals count
//!   only the growth of the queue, missing every task that arrived while another
//!   finished. So when no sample of the window carries a completion but task runs were
//!   recorded, arrivals are derived per interval from conservation, `max(0, rise of
//!   pending + running + task runs finished in it)`, and never fewer than recorded.
//! - **How long each task runs.** A run time drawn (uniformly) from the task runs that
//!   finished in the same clock hour as the arrival, so the replay keeps the daily
//!   shape of run times; from the whole window's runs when that hour has none. With no
//!   task run recorded at all, every task runs the mean that Little's law gives, the
//!   time-weighted mean of `running` over the completion rate (the arrival rate when
//!   the samples carry no completions).
//!
//! Every such choice is said in [`Replay::notes`], in words an operator reads next to
//! the result. A window without samples, without any demand, or without any way to
//! tell run times is an error saying what is missing and how to get it.
//!
//! [`recorded_history`] goes the other way: the samples and task runs a pool would
//! have recorded had every task of a trace started at its submit time. Tests and demos
//! use it to give a pool a history.

use std::collections::HashMap;

use capstan_core::{QueueSample, Timestamp};

use crate::report::group;
use crate::rng::SimRng;
use crate::trace::{Task, Trace};

/// Most tasks one replay may hold: a busy pool's five weeks (~60 arrivals a minute)
/// replay in seconds; beyond, the memory (about 50 bytes a task per replay) and the
/// time grow past what one request should take.
pub const MAX_REPLAY_TASKS: u64 = 3_000_000;

/// Sampling interval assumed for the first sample of a window when there is only one
/// sample to tell it, in milliseconds: a minute, the usual push and poll cadence.
const DEFAULT_INTERVAL_MS: i64 = 60_000;

/// A gap between samples longer than this (ms) is reported in the notes: the source
/// was silent, and the arrivals after it are spread over the whole gap.
const LONG_GAP_MS: i64 = 3_600_000;

/// One hour in milliseconds: the width of the run-time buckets.
const HOUR_MS: i64 = 3_600_000;

/// One finished task, as recorded by the pool's workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedRun {
    /// When it finished.
    pub finished_at: Timestamp,
    /// How long it ran, in milliseconds.
    pub duration_ms: i64,
}

/// A window of a pool's history to replay.
#[derive(Debug, Clone, Copy)]
pub struct HistoryWindow<'a> {
    /// Start of the window (inclusive): the trace's origin.
    pub from: Timestamp,
    /// End of the window (exclusive).
    pub until: Timestamp,
    /// Queue samples, any order; ones outside the window are ignored.
    pub samples: &'a [QueueSample],
    /// Task runs, any order; ones that finished outside the window are ignored.
    pub runs: &'a [RecordedRun],
    /// Seed of the arrival instants and run-time draws.
    pub seed: u64,
}

/// Where the replay's arrival counts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrivalSource {
    /// The samples' `arrivals`, as recorded.
    Recorded,
    /// Derived from the rise of pending + running plus the task runs finished in each
    /// interval (the samples carry no completions: a polled source).
    Derived,
}

impl ArrivalSource {
    /// `recorded` or `derived`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recorded => "recorded",
            Self::Derived => "derived",
        }
    }
}

/// Where the replay's run times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunTimeSource {
    /// Drawn from the recorded task runs.
    TaskRuns,
    /// One run time for every task, from Little's law on the samples.
    LittlesLaw,
}

impl RunTimeSource {
    /// `task_runs` or `littles_law`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskRuns => "task_runs",
            Self::LittlesLaw => "littles_law",
        }
    }
}

/// A history turned into a trace.
#[derive(Debug, Clone)]
pub struct Replay {
    /// The tasks, anchored at the window's start.
    pub trace: Trace,
    /// Samples of the window used.
    pub samples: u64,
    /// Task runs of the window used (with a positive run time).
    pub task_runs: u64,
    /// Where arrival counts came from.
    pub arrivals_from: ArrivalSource,
    /// Where run times came from.
    pub run_times_from: RunTimeSource,
    /// What was assumed, in words, for the operator reading the result.
    pub notes: Vec<String>,
}

/// Why a window cannot be replayed. Each message says what is missing and how to get
/// it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HistoryError {
    /// No queue sample in the window.
    #[error(
        "no queue samples between {from} and {until}: a what-if replays the pool's recorded \
         queue; push samples (POST /v1/pools/{{pool_id}}/queue, or `capstan pools push-queue`) \
         or give the pool a `queue` source, then ask again"
    )]
    NoSamples {
        /// Start of the window.
        from: Timestamp,
        /// End of the window.
        until: Timestamp,
    },
    /// Samples, but no task arrived or finished in them and no task run was recorded.
    #[error(
        "the {samples} queue samples of the window show no arrivals and no completions, and \
         no task runs were recorded: there is no demand to replay; push samples with \
         `arrivals` and `completions`, or let workers report finished tasks (capstan agent)"
    )]
    NoDemand {
        /// Samples in the window.
        samples: u64,
    },
    /// No task run recorded and no task ever running, so run times cannot be told.
    #[error(
        "no task runs were recorded and `running` is 0 in all {samples} samples of the \
         window, so how long tasks run cannot be told; let workers report finished tasks \
         (capstan agent heartbeats) or push samples with `running`"
    )]
    NoRunTimes {
        /// Samples in the window.
        samples: u64,
    },
    /// More arrivals than one replay may hold.
    #[error(
        "the window holds {tasks} task arrivals, more than the {max} one what-if replays; \
         ask for fewer days"
    )]
    TooManyTasks {
        /// Arrivals in the window.
        tasks: u64,
        /// [`MAX_REPLAY_TASKS`].
        max: u64,
    },
}

/// Turns a window of a pool's history into a trace; see the module docs.
pub fn trace_from_history(window: &HistoryWindow<'_>) -> Result<Replay, HistoryError> {
    let (from, until) = (window.from.unix_ms(), window.until.unix_ms());
    let mut samples: Vec<QueueSample> = window
        .samples
        .iter()
        .filter(|s| (from..until).contains(&s.at.unix_ms()))
        .copied()
        .collect();
    samples.sort_by_key(|s| s.at);
    samples.dedup_by_key(|s| s.at);
    let mut runs: Vec<RecordedRun> = window
        .runs
        .iter()
        .filter(|r| (from..until).contains(&r.finished_at.unix_ms()) && r.duration_ms > 0)
        .copied()
        .collect();
    runs.sort_by_key(|r| (r.finished_at, r.duration_ms));
    let Some(first) = samples.first() else {
        return Err(HistoryError::NoSamples {
            from: window.from,
            until: window.until,
        });
    };
    let n = samples.len() as u64;
    let mut notes = Vec::new();

    // Intervals: [start_i, end_i) with end_i = at_i.
    let mut gaps: Vec<i64> = samples
        .windows(2)
        .map(|w| w[1].at.unix_ms() - w[0].at.unix_ms())
        .collect();
    let long_gaps = gaps.iter().filter(|&&g| g > LONG_GAP_MS).count();
    let longest_gap = gaps.iter().copied().max().unwrap_or(0);
    gaps.sort_unstable();
    let typical = gaps
        .get(gaps.len() / 2)
        .copied()
        .unwrap_or(DEFAULT_INTERVAL_MS);
    let first_start = (first.at.unix_ms() - typical).max(from);
    let starts: Vec<i64> = std::iter::once(first_start)
        .chain(samples.iter().map(|s| s.at.unix_ms()))
        .take(samples.len())
        .collect();

    // Task runs finished in each interval.
    let mut finished = vec![0u64; samples.len()];
    let mut r = runs.partition_point(|r| r.finished_at.unix_ms() < first_start);
    for (i, s) in samples.iter().enumerate() {
        let end = s.at.unix_ms();
        while r < runs.len() && runs[r].finished_at.unix_ms() < end {
            finished[i] += 1;
            r += 1;
        }
    }

    // How many arrived in each interval.
    let completions_reported = samples.iter().any(|s| s.completions > 0);
    let arrivals_from = if completions_reported || runs.is_empty() {
        ArrivalSource::Recorded
    } else {
        ArrivalSource::Derived
    };
    let arrivals: Vec<u64> = match arrivals_from {
        ArrivalSource::Recorded => samples.iter().map(|s| u64::from(s.arrivals)).collect(),
        ArrivalSource::Derived => samples
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let level = i64::from(s.pending) + i64::from(s.running);
                // The first sample's previous level is unknown: count its finished runs.
                let rise = match i.checked_sub(1) {
                    Some(p) => {
                        level - (i64::from(samples[p].pending) + i64::from(samples[p].running))
                    }
                    None => 0,
                };
                let derived = (rise + finished[i] as i64).max(0) as u64;
                derived.max(u64::from(s.arrivals))
            })
            .collect(),
    };
    let total: u64 = arrivals.iter().sum();
    if total == 0 {
        return Err(HistoryError::NoDemand { samples: n });
    }
    if total > MAX_REPLAY_TASKS {
        return Err(HistoryError::TooManyTasks {
            tasks: total,
            max: MAX_REPLAY_TASKS,
        });
    }
    let span_ms = samples.last().map_or(0, |s| s.at.unix_ms()) - first_start;
    notes.push(match arrivals_from {
        ArrivalSource::Recorded => format!(
            "{} arrivals as the {} queue samples recorded them, each placed at random \
             within its sample's interval (typically {} s)",
            group(total as f64, 0),
            group(n as f64, 0),
            secs(typical)
        ),
        ArrivalSource::Derived => format!(
            "the {} queue samples carry no completions (a polled queue source reports levels \
             only), so arrivals were derived per interval as the rise of pending + running \
             plus the task runs that finished in it: {} arrivals, each placed at random \
             within its interval (typically {} s)",
            group(n as f64, 0),
            group(total as f64, 0),
            secs(typical)
        ),
    });
    if first.at.unix_ms() - from > 2 * typical.max(LONG_GAP_MS) {
        notes.push(format!(
            "the history starts at {}: {:.1} of the {:.1} days asked for are replayed",
            first.at,
            span_ms as f64 / 86_400_000.0,
            (until - from) as f64 / 86_400_000.0
        ));
    }
    if long_gaps > 0 {
        notes.push(format!(
            "{long_gaps} gaps of more than an hour between samples (the longest {:.1} h): the \
             arrivals after a gap are spread over all of it",
            longest_gap as f64 / HOUR_MS as f64
        ));
    }

    let mut root = SimRng::new(window.seed);
    let mut rng_arrivals = root.fork(1);
    let mut rng_runs = root.fork(2);
    let mut submits: Vec<i64> = Vec::with_capacity(total as usize);
    for (i, s) in samples.iter().enumerate() {
        let (start, end) = (starts[i], s.at.unix_ms());
        let width = (end - start).max(1) as u64;
        for _ in 0..arrivals[i] {
            submits.push(start - from + rng_arrivals.below(width) as i64);
        }
    }
    submits.sort_unstable();

    let (run_times_from, tasks) = if runs.is_empty() {
        let run_ms = littles_law_run_ms(&samples, &starts, total, completions_reported)
            .ok_or(HistoryError::NoRunTimes { samples: n })?;
        notes.push(format!(
            "no task runs were recorded in the window, so every task runs {} s: Little's law \
             on the samples (mean running over the {} rate); let workers report finished \
             tasks (capstan agent) to replay the real run times",
            secs(run_ms),
            if completions_reported {
                "completion"
            } else {
                "arrival"
            }
        ));
        let tasks = submits
            .iter()
            .map(|&submit_ms| Task { submit_ms, run_ms })
            .collect();
        (RunTimeSource::LittlesLaw, tasks)
    } else {
        // Runs are sorted by finish time, so each hour's runs are one range.
        let mut by_hour: HashMap<i64, (usize, usize)> = HashMap::new();
        for (k, run) in runs.iter().enumerate() {
            let hour = run.finished_at.unix_ms().div_euclid(HOUR_MS);
            by_hour.entry(hour).or_insert((k, k)).1 = k + 1;
        }
        let mut same_hour = 0u64;
        let tasks: Vec<Task> = submits
            .iter()
            .map(|&submit_ms| {
                let hour = (from + submit_ms).div_euclid(HOUR_MS);
                let k = match by_hour.get(&hour) {
                    Some(&(lo, hi)) => {
                        same_hour += 1;
                        lo + rng_runs.below((hi - lo) as u64) as usize
                    }
                    None => rng_runs.below(runs.len() as u64) as usize,
                };
                Task {
                    submit_ms,
                    run_ms: runs[k].duration_ms,
                }
            })
            .collect();
        notes.push(format!(
            "run times drawn from the {} task runs of the window: from those that finished \
             in the same hour as the arrival for {:.1} % of the tasks, else from the whole \
             window's",
            group(runs.len() as f64, 0),
            same_hour as f64 * 100.0 / total as f64
        ));
        (RunTimeSource::TaskRuns, tasks)
    };
    Ok(Replay {
        trace: Trace::from_tasks(window.from, tasks),
        samples: n,
        task_runs: runs.len() as u64,
        arrivals_from,
        run_times_from,
        notes,
    })
}

/// Little's law: mean running (time-weighted over the intervals) over throughput
/// (completions, else arrivals, per millisecond of the sampled span), in whole
/// milliseconds; `None` when it cannot be told.
fn littles_law_run_ms(
    samples: &[QueueSample],
    starts: &[i64],
    arrivals: u64,
    completions_reported: bool,
) -> Option<i64> {
    let mut weighted = 0.0;
    let mut span = 0.0;
    for (s, &start) in samples.iter().zip(starts) {
        let width = (s.at.unix_ms() - start).max(0) as f64;
        weighted += f64::from(s.running) * width;
        span += width;
    }
    let done = if completions_reported {
        samples.iter().map(|s| u64::from(s.completions)).sum()
    } else {
        arrivals
    };
    if span <= 0.0 || done == 0 || weighted <= 0.0 {
        return None;
    }
    let mean_running = weighted / span;
    let throughput_per_ms = done as f64 / span;
    let run_ms = (mean_running / throughput_per_ms).round();
    (run_ms.is_finite() && run_ms >= 1.0).then_some(run_ms as i64)
}

/// Milliseconds as seconds for a note: whole when whole, else one decimal.
fn secs(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

/// The queue samples (one every `interval_s` seconds, the first `interval_s` after the
/// trace's origin, until every task has finished) and task runs a pool would have
/// recorded had every task of `trace` started at its submit time: nothing pending,
/// `running` the tasks started and not finished at the sample, `arrivals` and
/// `completions` counted over `[at - interval, at)`.
///
/// # Panics
/// When `interval_s` is 0.
pub fn recorded_history(trace: &Trace, interval_s: u32) -> (Vec<QueueSample>, Vec<RecordedRun>) {
    assert!(interval_s > 0, "interval_s must be > 0");
    let step = i64::from(interval_s) * 1000;
    let origin = trace.origin.unix_ms();
    let end = trace
        .tasks
        .iter()
        .map(|t| t.submit_ms + t.run_ms)
        .max()
        .unwrap_or(0);
    let bins = (end.div_euclid(step) + 1).max(0) as usize;
    let mut arrivals = vec![0u32; bins];
    let mut completions = vec![0u32; bins];
    let mut runs = Vec::with_capacity(trace.tasks.len());
    for t in &trace.tasks {
        if t.submit_ms >= 0 {
            arrivals[(t.submit_ms / step) as usize] += 1;
        }
        let done = t.submit_ms + t.run_ms;
        if done >= 0 {
            completions[(done / step) as usize] += 1;
        }
        runs.push(RecordedRun {
            finished_at: Timestamp::from_unix_ms(origin + done),
            duration_ms: t.run_ms,
        });
    }
    runs.sort_by_key(|r| (r.finished_at, r.duration_ms));
    let mut running: i64 = 0;
    let samples = (0..bins)
        .map(|k| {
            running += i64::from(arrivals[k]) - i64::from(completions[k]);
            QueueSample {
                at: Timestamp::from_unix_ms(origin + (k as i64 + 1) * step),
                pending: 0,
                running: u32::try_from(running.max(0)).unwrap_or(u32::MAX),
                arrivals: arrivals[k],
                completions: completions[k],
            }
        })
        .collect();
    (samples, runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadSpec;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_secs(1_800_000_000 + s)
    }

    fn sample(
        at_s: i64,
        pending: u32,
        running: u32,
        arrivals: u32,
        completions: u32,
    ) -> QueueSample {
        QueueSample {
            at: t(at_s),
            pending,
            running,
            arrivals,
            completions,
        }
    }

    fn window<'a>(samples: &'a [QueueSample], runs: &'a [RecordedRun]) -> HistoryWindow<'a> {
        HistoryWindow {
            from: t(0),
            until: t(86_400),
            samples,
            runs,
            seed: 1,
        }
    }

    /// Arrivals per `step_ms` bin of a trace's submits.
    fn per_bin(trace: &Trace, step_ms: i64, bins: usize) -> Vec<u32> {
        let mut out = vec![0; bins];
        for task in &trace.tasks {
            out[(task.submit_ms / step_ms) as usize] += 1;
        }
        out
    }

    #[test]
    fn recorded_arrivals_land_in_their_own_interval() {
        // Samples at 60, 120, 180 s: 3 arrivals in [0, 60), none in [60, 120), 2 in
        // [120, 180). Runs of 10 s and 20 s finished in the first hour.
        let samples = [
            sample(60, 0, 3, 3, 0),
            sample(120, 0, 1, 0, 2),
            sample(180, 0, 2, 2, 1),
        ];
        let runs = [
            RecordedRun {
                finished_at: t(70),
                duration_ms: 10_000,
            },
            RecordedRun {
                finished_at: t(100),
                duration_ms: 20_000,
            },
        ];
        let replay = trace_from_history(&window(&samples, &runs)).unwrap();
        assert_eq!(replay.arrivals_from, ArrivalSource::Recorded);
        assert_eq!(replay.run_times_from, RunTimeSource::TaskRuns);
        assert_eq!(per_bin(&replay.trace, 60_000, 3), [3, 0, 2]);
        assert!(
            replay
                .trace
                .tasks
                .iter()
                .all(|t| t.run_ms == 10_000 || t.run_ms == 20_000)
        );
        assert_eq!((replay.samples, replay.task_runs), (3, 2));
        assert_eq!(replay.trace.origin, t(0));
    }

    #[test]
    fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
        let trace = WorkloadSpec {
            days: 2,
            ..WorkloadSpec::diurnal(3)
        }
        .generate()
        .unwrap();
        let (samples, runs) = recorded_history(&trace, 60);
        let w = HistoryWindow {
            from: trace.origin,
            until: trace.origin.plus_secs(3 * 86_400),
            samples: &samples,
            runs: &runs,
            seed: 7,
        };
        let a = trace_from_history(&w).unwrap();
        let b = trace_from_history(&w).unwrap();
        assert_eq!(a.trace, b.trace);
        assert_eq!(a.notes, b.notes);
        let c = trace_from_history(&HistoryWindow { seed: 8, ..w }).unwrap();
        assert_ne!(a.trace.tasks, c.trace.tasks);
        assert_eq!(a.trace.tasks.len(), c.trace.tasks.len());
    }

    #[test]
    fn a_recorded_history_replays_its_arrivals_and_run_times() {
        let trace = WorkloadSpec {
            days: 3,
            ..WorkloadSpec::diurnal(5)
        }
        .generate()
        .unwrap();
        let (samples, runs) = recorded_history(&trace, 60);
        assert_eq!(runs.len(), trace.tasks.len());
        let replay = trace_from_history(&HistoryWindow {
            from: trace.origin,
            until: trace.origin.plus_secs(4 * 86_400),
            samples: &samples,
            runs: &runs,
            seed: 1,
        })
        .unwrap();
        // Every task arrives in the same minute as in the original.
        let bins = samples.len();
        assert_eq!(
            per_bin(&replay.trace, 60_000, bins),
            per_bin(&trace, 60_000, bins)
        );
        // Run times come from the same hour's runs: the total work stays close.
        let (got, want) = (replay.trace.work_seconds(), trace.work_seconds());
        assert!((got / want - 1.0).abs() < 0.1, "work {got} vs {want}");
        assert!(replay.notes[1].contains("same hour"), "{:?}", replay.notes);
    }

    #[test]
    fn levels_only_samples_derive_arrivals_from_the_rise_plus_finished_runs() {
        // What a polled queue source stores: no completions, arrivals = growth only.
        let trace = WorkloadSpec {
            days: 2,
            ..WorkloadSpec::diurnal(9)
        }
        .generate()
        .unwrap();
        let (mut samples, runs) = recorded_history(&trace, 60);
        let mut previous = None;
        for s in &mut samples {
            let level = s.pending + s.running;
            s.arrivals = capstan_core::queue::estimate_arrivals(level, previous, 0);
            s.completions = 0;
            previous = Some(level);
        }
        let w = HistoryWindow {
            from: trace.origin,
            until: trace.origin.plus_secs(3 * 86_400),
            samples: &samples,
            runs: &runs,
            seed: 1,
        };
        let replay = trace_from_history(&w).unwrap();
        assert_eq!(replay.arrivals_from, ArrivalSource::Derived);
        assert!(replay.notes[0].contains("derived"), "{:?}", replay.notes);
        // Conservation makes every interval exact but the first, whose previous level
        // is unknown (its tasks still running are missed).
        let bins = samples.len();
        let (got, want) = (
            per_bin(&replay.trace, 60_000, bins),
            per_bin(&trace, 60_000, bins),
        );
        assert_eq!(got[1..], want[1..]);
        assert_eq!(want[0] - got[0], samples[0].running);
        // The growth alone (what was stored) misses every task that arrived while
        // another finished.
        let stored: u64 = samples.iter().map(|s| u64::from(s.arrivals)).sum();
        let total = trace.tasks.len() as u64;
        assert!(stored * 10 < total * 8, "{stored} of {total}");
    }

    #[test]
    fn without_task_runs_every_task_runs_the_littles_law_mean() {
        // 2 running on average, one completion a minute: 120 s.
        let samples: Vec<QueueSample> = (1..=60).map(|m| sample(60 * m, 0, 2, 1, 1)).collect();
        let replay = trace_from_history(&window(&samples, &[])).unwrap();
        assert_eq!(replay.run_times_from, RunTimeSource::LittlesLaw);
        assert_eq!(replay.trace.tasks.len(), 60);
        assert!(replay.trace.tasks.iter().all(|t| t.run_ms == 120_000));
        assert!(
            replay
                .notes
                .iter()
                .any(|n| n.contains("every task runs 120 s")),
            "{:?}",
            replay.notes
        );
    }

    #[test]
    fn windows_without_what_a_replay_needs_say_what_is_missing() {
        let err = trace_from_history(&window(&[], &[])).unwrap_err();
        assert!(matches!(err, HistoryError::NoSamples { .. }));
        assert!(err.to_string().contains("push samples"), "{err}");
        // Samples outside the window do not count.
        let late = [sample(90_000, 0, 1, 1, 1)];
        assert!(matches!(
            trace_from_history(&window(&late, &[])),
            Err(HistoryError::NoSamples { .. })
        ));
        let idle = [sample(60, 0, 0, 0, 0), sample(120, 0, 0, 0, 0)];
        let err = trace_from_history(&window(&idle, &[])).unwrap_err();
        assert_eq!(err, HistoryError::NoDemand { samples: 2 });
        let never_running = [sample(60, 5, 0, 5, 0), sample(120, 9, 0, 4, 0)];
        let err = trace_from_history(&window(&never_running, &[])).unwrap_err();
        assert_eq!(err, HistoryError::NoRunTimes { samples: 2 });
        assert!(err.to_string().contains("capstan agent"), "{err}");
    }

    #[test]
    fn a_late_start_and_long_gaps_are_noted() {
        let samples = [
            sample(40_000, 0, 1, 1, 0),
            sample(40_060, 0, 1, 1, 1),
            sample(50_000, 0, 1, 3, 1),
        ];
        let runs = [RecordedRun {
            finished_at: t(40_030),
            duration_ms: 5_000,
        }];
        let replay = trace_from_history(&window(&samples, &runs)).unwrap();
        let notes = replay.notes.join("\n");
        assert!(notes.contains("the history starts at"), "{notes}");
        assert!(notes.contains("1 gaps of more than an hour"), "{notes}");
        // The 3 arrivals after the gap fall anywhere in it.
        let after: Vec<i64> = replay.trace.tasks[2..]
            .iter()
            .map(|t| t.submit_ms)
            .collect();
        assert!(after.iter().all(|&s| (40_060_000..50_000_000).contains(&s)));
    }

    #[test]
    fn too_many_arrivals_are_refused() {
        let samples = [sample(60, 0, 1, u32::MAX, 1)];
        let err = trace_from_history(&window(&samples, &[])).unwrap_err();
        assert!(matches!(err, HistoryError::TooManyTasks { .. }), "{err}");
        assert!(err.to_string().contains("fewer days"), "{err}");
    }

    /// What a what-if of a busy pool costs, measured rather than asserted (timing
    /// depends on the machine): `cargo test -p simulations --release --lib
    /// busy_pool -- --ignored --nocapture`. Two weeks of the diurnal workload at 1,100
    /// tasks an hour (about 150 of the example pool's 400 slots busy on average),
    /// history recorded a sample a minute, then what the route does after reading the
    /// store: the trace, and the current (service level 0.95) and candidate (0.5)
    /// replays in parallel.
    #[test]
    #[ignore = "a measurement; run in release with --nocapture"]
    fn busy_pool_whatif_timing() {
        use crate::engine::{SimConfig, simulate};
        let generated = WorkloadSpec {
            days: 14,
            arrivals_per_hour: 1_100.0,
            burst_mean_tasks: 400.0,
            ..WorkloadSpec::diurnal(1)
        }
        .generate()
        .unwrap();
        let (samples, runs) = recorded_history(&generated, 60);
        let spec = |service_level: f64| {
            let mut spec: capstan_core::PoolSpec = capstan_core::PoolSpec::from_yaml(
                &std::fs::read_to_string(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../examples/pool.yaml"
                ))
                .unwrap(),
            )
            .unwrap();
            spec.scaling.service_level = service_level;
            spec
        };
        let started = std::time::Instant::now();
        let replay = trace_from_history(&HistoryWindow {
            from: generated.origin,
            until: generated.origin.plus_secs(15 * 86_400),
            samples: &samples,
            runs: &runs,
            seed: 1,
        })
        .unwrap();
        let traced = started.elapsed();
        let config = |spec| SimConfig {
            spec,
            cloud: Default::default(),
            tick_s: 30,
            seed: 1,
            series_points: 1000,
        };
        let (current, candidate) = (config(spec(0.95)), config(spec(0.5)));
        let trace = &replay.trace;
        let (a, b) = std::thread::scope(|s| {
            let b = s.spawn(|| simulate(trace, &candidate, &mut |_| {}).unwrap());
            (
                simulate(trace, &current, &mut |_| {}).unwrap(),
                b.join().unwrap(),
            )
        });
        eprintln!(
            "{} tasks, {} samples, {} runs: trace {traced:?}, both replays {:?} \
             (current {:.2} s, candidate {:.2} s); cost {:.2} vs {:.2}, p95 {} vs {} s",
            trace.tasks.len(),
            samples.len(),
            runs.len(),
            started.elapsed() - traced,
            a.report.wall_seconds,
            b.report.wall_seconds,
            a.report.cost,
            b.report.cost,
            a.report.wait_s.p95,
            b.report.wait_s.p95,
        );
    }

    #[test]
    fn recorded_history_counts_levels_and_flows_per_interval() {
        // Tasks: [10 s, +100 s) and [70 s, +20 s); samples at 60, 120.
        let trace = Trace::from_tasks(
            t(0),
            vec![
                Task {
                    submit_ms: 10_000,
                    run_ms: 100_000,
                },
                Task {
                    submit_ms: 70_000,
                    run_ms: 20_000,
                },
            ],
        );
        let (samples, runs) = recorded_history(&trace, 60);
        let got: Vec<(i64, u32, u32, u32)> = samples
            .iter()
            .map(|s| {
                (
                    s.at.unix_ms() - t(0).unix_ms(),
                    s.running,
                    s.arrivals,
                    s.completions,
                )
            })
            .collect();
        assert_eq!(got, [(60_000, 1, 1, 0), (120_000, 0, 1, 2)]);
        assert_eq!(runs[0].finished_at, t(90));
        assert_eq!(runs[1].finished_at, t(110));
    }
}
