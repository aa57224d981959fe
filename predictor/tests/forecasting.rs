//! The predictor against workloads with known structure, generated here with a seeded
//! RNG (no dependency on the simulator):
//!
//! - it recovers the daily and weekly cycle of a Poisson workload whose rate follows
//!   office hours and quiet weekends, and beats seasonal naive doing it;
//! - the quantile sizing is monotone and minimal (property tests).

use capstan_core::{PoolSpec, QueueSample, ScalingPolicy, Timestamp};
use predictor::sizing::{Basis, spare_slots};
use predictor::{LEVEL_BAND, Predictor, SeasonalConfig, SeasonalRate};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Monday 2024-01-01 00:00 UTC.
const MONDAY: i64 = 1_704_067_200;
const TICK_S: i64 = 60;

/// True arrival rate, tasks per second: office hours peaking at 13:00 UTC over a
/// 0.2 floor, weekends at 30 %.
fn true_rate(t: i64) -> f64 {
    let since = t - MONDAY;
    let hour = (since.rem_euclid(86_400)) as f64 / 3600.0;
    let day = since.rem_euclid(7 * 86_400) / 86_400;
    let office = if (8.0..18.0).contains(&hour) {
        (std::f64::consts::PI * (hour - 8.0) / 10.0).sin()
    } else {
        0.0
    };
    let weekly = if day >= 5 { 0.3 } else { 1.0 };
    (0.2 + 0.8 * office) * weekly * (2.0 / 60.0)
}

/// A Poisson draw by inversion (means here are small).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u32 {
    let mut k = 0;
    let mut p = (-mean).exp();
    let mut cdf = p;
    let u: f64 = rng.r#gen();
    while u > cdf && k < 10_000 {
        k += 1;
        p *= mean / f64::from(k);
        cdf += p;
    }
    k
}

fn spec() -> PoolSpec {
    let mut s = PoolSpec::from_yaml(
        "id: gen\nprovider: fake\nmax_capacity: 1000\nlaunch_configs:\n  - id: a\n    instance_type: t\n",
    )
    .unwrap();
    s.scaling.policy = ScalingPolicy::Forecast;
    s
}

/// Feeds `weeks` of generated arrivals (every task runs one tick, none waits).
fn train(weeks: i64, seed: u64) -> Predictor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut p = Predictor::new();
    let spec = spec();
    let mut running = 0;
    for i in 1..=(weeks * 7 * 86_400 / TICK_S) {
        let t = MONDAY + i * TICK_S;
        let arrivals = poisson(&mut rng, true_rate(t - TICK_S / 2) * TICK_S as f64);
        p.observe(&QueueSample {
            at: Timestamp::from_unix_secs(t),
            pending: 0,
            running: arrivals,
            arrivals,
            completions: running,
        });
        running = arrivals;
        p.forecast(&spec, Timestamp::from_unix_secs(t), 120.0, arrivals);
    }
    p
}

#[test]
fn recovers_the_daily_and_weekly_cycle_of_a_generated_workload() {
    let weeks = 6;
    let p = train(weeks, 7);
    assert!(p.seasonal().model_in_use());
    // Forecast the whole next week hour by hour against the true rate.
    let start = MONDAY + weeks * 7 * 86_400;
    let (mut sum_err, mut sum_true) = (0.0, 0.0);
    let (mut weekday, mut weekend) = (0.0, 0.0);
    let mut peak = (0.0, 0);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for h in 0..(7 * 24) {
        let t = start + h * 3600 + 1800;
        let want = true_rate(t);
        let got = p.expected_arrival_rate(Timestamp::from_unix_secs(t));
        sum_err += (got - want).abs();
        sum_true += want;
        if h < 5 * 24 {
            weekday += got;
        } else {
            weekend += got;
        }
        if h < 24 && got > peak.0 {
            peak = (got, h);
        }
        xs.push(got);
        ys.push(want);
    }
    let relative_error = sum_err / sum_true;
    assert!(
        relative_error < 0.15,
        "mean relative error {relative_error}"
    );
    let ratio = (weekend / 2.0) / (weekday / 5.0);
    assert!((ratio - 0.3).abs() < 0.05, "weekend/weekday {ratio}");
    // The true peak is 13:00; the learned one lies within an hour of it.
    assert!((12..=14).contains(&peak.1), "peak at {}:00", peak.1);
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let cov: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let vy: f64 = ys.iter().map(|y| (y - my) * (y - my)).sum();
    let corr = cov / (vx * vy).sqrt();
    assert!(corr > 0.97, "correlation {corr}");
    // Smoothing beats "same bucket last week" on noisy counts.
    let acc = p.seasonal().accuracy().unwrap();
    eprintln!(
        "relative error {relative_error:.3}, weekend/weekday {ratio:.3}, peak {}:00, \
         correlation {corr:.4}, {acc:?}",
        peak.1
    );
    assert!(acc.mase.unwrap() < 0.9, "{acc:?}");
    assert!(acc.coverage > 0.8, "{acc:?}");
}

#[test]
fn a_different_seed_recovers_the_same_cycle() {
    // Guards against a test that passes by luck of one seed.
    for seed in [1, 2, 3] {
        let p = train(4, seed);
        let weekday_peak = p.expected_arrival_rate(Timestamp::from_unix_secs(
            MONDAY + 4 * 7 * 86_400 + 13 * 3600,
        ));
        let weekday_night = p.expected_arrival_rate(Timestamp::from_unix_secs(
            MONDAY + 4 * 7 * 86_400 + 3 * 3600,
        ));
        assert!(
            weekday_peak > 3.0 * weekday_night,
            "seed {seed}: peak {weekday_peak} night {weekday_night}"
        );
    }
}

#[test]
fn seasonal_naive_is_used_until_the_warm_up_ends() {
    let mut m = SeasonalRate::new(SeasonalConfig::default()).unwrap();
    for i in 1..=(7 * 96) {
        m.add(Timestamp::from_unix_secs(MONDAY + i * 900), 3);
    }
    assert!(!m.model_in_use());
    for i in (7 * 96 + 1)..=(14 * 96 + 1) {
        m.add(Timestamp::from_unix_secs(MONDAY + i * 900), 3);
    }
    assert!(m.model_in_use());
    let r = m.rate_per_s(Timestamp::from_unix_secs(MONDAY + 15 * 86_400));
    assert!((r * 900.0 - 3.0).abs() < 0.05, "{r}");
}

/// E[(A − s)⁺] by brute force for the distribution `spare_slots` uses.
fn expected_excess(mean: f64, phi: f64, s: u32) -> f64 {
    use statrs::distribution::{Discrete, NegativeBinomial, Poisson};
    let pmf = |k: u64| -> f64 {
        if phi <= 1.02 {
            Poisson::new(mean).unwrap().pmf(k)
        } else {
            NegativeBinomial::new(mean / (phi - 1.0), 1.0 / phi)
                .unwrap()
                .pmf(k)
        }
    };
    (u64::from(s)..u64::from(s) + 400)
        .map(|k| (k - u64::from(s)) as f64 * pmf(k))
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn spare_grows_with_mean_and_level(
        mean in 0.01f64..30.0,
        extra in 0.0f64..10.0,
        phi in 1.0f64..8.0,
        level in 0.5f64..0.99,
        more in 0.0f64..0.009,
    ) {
        for basis in [Basis::Windows, Basis::Tasks] {
            let base = spare_slots(mean, phi, level, basis);
            prop_assert!(spare_slots(mean + extra, phi, level, basis) >= base);
            prop_assert!(spare_slots(mean, phi, level + more, basis) >= base);
        }
    }

    #[test]
    fn task_basis_is_the_smallest_spare_meeting_the_level(
        mean in 0.05f64..12.0,
        phi in 1.0f64..5.0,
        level in 0.5f64..0.98,
    ) {
        let s = spare_slots(mean, phi, level, Basis::Tasks);
        let allowed = (1.0 - level) * mean;
        prop_assert!(expected_excess(mean, phi, s) <= allowed + 1e-9);
        if s > 0 {
            prop_assert!(expected_excess(mean, phi, s - 1) > allowed - 1e-9);
        }
    }
}

/// A small closed loop: the predictor's target becomes capacity one lead (4 ticks)
/// later, capacity shrinks to the target when it is above (idle slots go at once),
/// tasks start at ticks in FIFO order and run 20 ticks; arrivals are Poisson with
/// bursts. Returns the predictor and the share of tasks that were still waiting two
/// ticks after the tick that first saw them, over the whole run and over its last week.
fn closed_loop(service_level: f64, seed: u64, days: i64) -> (Predictor, f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut spec = spec();
    spec.scaling.service_level = service_level;
    let mut p = Predictor::new();
    let tick = 30;
    let lead_ticks = 4;
    let run_ticks = 20;
    let mut queue: std::collections::VecDeque<i64> = Default::default();
    let mut running: Vec<i64> = Vec::new();
    let mut launches: std::collections::VecDeque<(i64, u32)> = Default::default();
    let mut capacity: u32 = 0;
    let (mut started, mut waited_long) = (0u64, 0u64);
    let last_week = (days - 7) * 86_400 / tick;
    let (mut started_late_week, mut waited_late_week) = (0u64, 0u64);
    for i in 1..=(days * 86_400 / tick) {
        let t = MONDAY + i * tick;
        // Bursts: one tick in 200 brings 15 extra tasks.
        let mut arrivals = poisson(&mut rng, true_rate(t) * tick as f64 * 3.0);
        if rng.gen_bool(1.0 / 200.0) {
            arrivals += 15;
        }
        for _ in 0..arrivals {
            queue.push_back(i);
        }
        while launches.front().is_some_and(|(due, _)| *due <= i) {
            capacity += launches.pop_front().unwrap().1;
        }
        let before = running.len();
        running.retain(|s| i - s < run_ticks);
        let completions = (before - running.len()) as u32;
        for _ in 0..completions {
            p.observe_run_time((run_ticks * tick) as f64);
        }
        while (running.len() as u32) < capacity {
            let Some(arrived) = queue.pop_front() else {
                break;
            };
            started += 1;
            // Late as samples can tell: still waiting at the first sample at least
            // 60 s after the middle of the arrival interval (tick i + 2).
            if i - arrived >= 3 {
                waited_long += 1;
            }
            if i > last_week {
                started_late_week += 1;
                waited_late_week += u64::from(i - arrived >= 3);
            }
            running.push(i);
        }
        p.observe(&QueueSample {
            at: Timestamp::from_unix_secs(t),
            pending: queue.len() as u32,
            running: running.len() as u32,
            arrivals,
            completions,
        });
        let in_flight: u32 = launches.iter().map(|(_, n)| n).sum();
        let f = p.forecast(
            &spec,
            Timestamp::from_unix_secs(t),
            (lead_ticks * tick) as f64,
            capacity + in_flight,
        );
        // Launch toward the larger of target and backlog; idle slots above the target
        // go at once (the planner waits for the idle timeout).
        let want = f.demand_slots();
        if want > capacity + in_flight {
            launches.push_back((i + lead_ticks, want - capacity - in_flight));
        } else if f.target_slots < capacity {
            capacity = f.target_slots.max(running.len() as u32);
        }
    }
    (
        p,
        waited_long as f64 / started as f64,
        waited_late_week as f64 / started_late_week as f64,
    )
}

#[test]
fn wait_feedback_holds_the_share_of_late_tasks_at_the_service_level() {
    for (level, seed) in [(0.9, 11), (0.97, 12)] {
        let (p, true_late, last_week) = closed_loop(level, seed, 28);
        let measured = p.late_fraction().unwrap();
        eprintln!(
            "level {level}: late as measured {measured:.4}, truly {true_late:.4}, in the last week {last_week:.4}, model level {:?}",
            p.model_level()
        );
        // The predictor's own count from queue samples matches the truth ...
        assert!(
            (measured - true_late).abs() < 0.01,
            "{measured} vs {true_late}"
        );
        // ... and the feedback holds it near 1 - service level once it has had three
        // weeks to learn (it moves the level by a logit unit for a day of tasks late at
        // twice the allowed share), unless the spare cannot get that thin within the
        // level's band: this loop frees slots as tasks complete, which the spare does
        // not count on, so at 0.9 it covers more than asked and the feedback has pushed
        // the level well below the service level, toward its floor.
        let logit = |p: f64| (p / (1.0 - p)).ln();
        let near = (last_week - (1.0 - level)).abs() < 0.25 * (1.0 - level) + 0.005;
        let lowered =
            last_week < 1.0 - level && logit(p.model_level()) < logit(level) - LEVEL_BAND / 2.0;
        assert!(
            near || lowered,
            "level {level}: {last_week}, model level {}",
            p.model_level()
        );
        assert!(
            last_week < (1.0 - level) * 1.25 + 0.005,
            "level {level}: {last_week}"
        );
    }
}
