//! The oracle: a lower bound on what any scaling policy must spend for zero wait.
//!
//! Setting: one offering whose instances have `c` slots, boot for a constant `L`
//! seconds and are billed per second from launch to termination. If every task starts
//! at its submit time, `N(t)` tasks run at time `t` and at least `M(t) = ceil(N(t)/c)`
//! instances must be ready. The cheapest fleet that always has them:
//!
//! - pays `∫ M(t) dt` for the ready time itself, and
//! - each time `M` rises to level `k` or above, instance number `k` must already be
//!   there. If level `k` was never active before, it had to be launched `L` earlier:
//!   `+L`. Otherwise level `k` was last active until `M` dropped below `k` at time `d`;
//!   the instance could have been kept over the gap (cost `t - d`) or terminated and
//!   relaunched (cost `L`): `+min(t - d, L)`.
//!
//! Levels are independent (instance `k` serves level `k`), so the sum over levels is
//! exact: no policy that knows the future does better, and one that launches exactly
//! `L` before each rise (or keeps the instance over short gaps) achieves it.
//!
//! [`oracle_instance_ms`] computes this in one sweep over the sorted start and end
//! events, `O(n log n)` for the sort and `O(n)` after it (each event moves `N` by one,
//! so `M` by at most one level). Events at the same instant are applied together before
//! `M` is read, so a task ending exactly when another starts keeps its instance.

use crate::trace::Task;

/// Instance-milliseconds the oracle spends on `tasks` with `slots` slots per instance
/// and a boot time of `boot_ms`. Exact integer arithmetic.
///
/// # Panics
/// If `slots` is 0.
pub fn oracle_instance_ms(tasks: &[Task], slots: u32, boot_ms: i64) -> i128 {
    assert!(slots > 0, "an instance has at least one slot");
    let slots = i64::from(slots);
    // Start events as +1, end events as -1, sorted by time.
    let mut events: Vec<(i64, i32)> = Vec::with_capacity(tasks.len() * 2);
    for t in tasks {
        events.push((t.submit_ms, 1));
        events.push((t.submit_ms + t.run_ms, -1));
    }
    events.sort_unstable();

    // last_drop[k - 1]: when level k last went inactive; None if never active.
    let mut last_drop: Vec<Option<i64>> = Vec::new();
    let mut running: i64 = 0;
    let mut level: usize = 0;
    let mut last_t: i64 = events.first().map_or(0, |e| e.0);
    let mut total: i128 = 0;
    let mut i = 0;
    while i < events.len() {
        let now = events[i].0;
        total += (level as i128) * i128::from(now - last_t);
        last_t = now;
        while i < events.len() && events[i].0 == now {
            running += i64::from(events[i].1);
            i += 1;
        }
        let new_level = ((running + slots - 1) / slots) as usize;
        if new_level > level {
            if last_drop.len() < new_level {
                last_drop.resize(new_level, None);
            }
            for drop in &last_drop[level..new_level] {
                total += i128::from(match drop {
                    None => boot_ms,
                    Some(d) => (now - d).min(boot_ms),
                });
            }
        } else {
            for drop in &mut last_drop[new_level..level] {
                *drop = Some(now);
            }
        }
        level = new_level;
    }
    total
}

/// [`oracle_instance_ms`] in seconds.
pub fn oracle_instance_seconds(tasks: &[Task], slots: u32, boot_s: f64) -> f64 {
    oracle_instance_ms(tasks, slots, (boot_s * 1000.0).round() as i64) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(submit_s: i64, run_s: i64) -> Task {
        Task {
            submit_ms: submit_s * 1000,
            run_ms: run_s * 1000,
        }
    }

    fn oracle_s(tasks: &[Task], slots: u32, boot_s: i64) -> i128 {
        let ms = oracle_instance_ms(tasks, slots, boot_s * 1000);
        assert_eq!(ms % 1000, 0);
        ms / 1000
    }

    #[test]
    fn empty_trace_costs_nothing() {
        assert_eq!(oracle_s(&[], 1, 120), 0);
    }

    #[test]
    fn one_task_costs_its_run_time_plus_one_boot() {
        // M = 1 on [0, 100): ∫M = 100; level 1 first rises at 0: +120. Total 220.
        assert_eq!(oracle_s(&[task(0, 100)], 1, 120), 220);
    }

    #[test]
    fn short_gap_keeps_the_instance_long_gap_relaunches() {
        // Level 1 active [0,100) and [150,250): ∫M = 200.
        // First rise: +120. Second rise after a 50 s gap: +min(50, 120) = 50. Total 370.
        assert_eq!(oracle_s(&[task(0, 100), task(150, 100)], 1, 120), 370);
        // Gap of 500 s: +min(500, 120) = 120 → 200 + 120 + 120 = 440.
        assert_eq!(oracle_s(&[task(0, 100), task(600, 100)], 1, 120), 440);
    }

    #[test]
    fn back_to_back_tasks_share_an_instance() {
        // Task 2 starts exactly when task 1 ends: N stays 1, no drop, no second boot.
        // ∫M = 200, one boot = 120 → 320.
        assert_eq!(oracle_s(&[task(0, 100), task(100, 100)], 1, 120), 320);
    }

    #[test]
    fn overlapping_tasks_raise_levels_independently() {
        // A [0,100), B [50,150), C [120,170), c = 1.
        // N: 1 on [0,50), 2 on [50,100), 1 on [100,120), 2 on [120,150), 1 on [150,170).
        // ∫M = 50 + 100 + 20 + 60 + 20 = 250.
        // Level 1: rises at 0 (+120), never drops until 170.
        // Level 2: rises at 50 (+120), drops at 100, rises at 120 (+min(20,120) = 20).
        // Total 250 + 120 + 120 + 20 = 510.
        assert_eq!(
            oracle_s(&[task(0, 100), task(50, 100), task(120, 50)], 1, 120),
            510
        );
    }

    #[test]
    fn slots_pack_tasks_onto_instances() {
        // Same tasks, c = 2: M = ceil(N/2) = 1 on all of [0,170): ∫M = 170; +120 → 290.
        assert_eq!(
            oracle_s(&[task(0, 100), task(50, 100), task(120, 50)], 2, 120),
            290
        );
        // Three simultaneous tasks, c = 2: M = 2 on [0,10): ∫M = 20, two boots = 240.
        assert_eq!(
            oracle_s(&[task(0, 10), task(0, 10), task(0, 10)], 2, 120),
            260
        );
    }

    #[test]
    fn jump_of_several_levels_at_once_and_zero_boot() {
        // Three tasks at t=0 for 10 s, then three at t=30 for 10 s, c = 1, L = 120.
        // ∫M = 3*10 + 3*10 = 60. First rise: 3 * 120 = 360. Second rise: all three
        // levels dropped at 10, gap 20: 3 * 20 = 60. Total 480.
        let tasks = [
            task(0, 10),
            task(0, 10),
            task(0, 10),
            task(30, 10),
            task(30, 10),
            task(30, 10),
        ];
        assert_eq!(oracle_s(&tasks, 1, 120), 480);
        // With L = 0 the oracle is just the busy time.
        assert_eq!(oracle_s(&tasks, 1, 0), 60);
    }

    #[test]
    fn unsorted_input_gives_the_same_answer() {
        let a = [task(0, 100), task(50, 100), task(120, 50)];
        let b = [task(120, 50), task(0, 100), task(50, 100)];
        assert_eq!(oracle_s(&a, 1, 120), oracle_s(&b, 1, 120));
    }
}
