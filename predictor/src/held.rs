//! Slots held idle for tasks shorter than a boot.
//!
//! A task that runs for less than a machine takes to boot cannot be served by a launch:
//! the machine lands after the task is done, on a slot another task freed or not at
//! all. For such tasks capacity has to be *held*, not launched ahead. Which slots are
//! worth holding is a ski rental per level: the slot at level `ℓ` (the `ℓ`-th slot
//! counted from the busiest) is wanted each time the number of busy slots climbs to
//! `ℓ`. Holding it idle costs its price for the share of time fewer than `ℓ` slots are
//! busy; retiring it costs a regretted retirement `R` (the replacement's boot, the wait
//! it causes as the service level prices it, and the replacement landing unneeded)
//! each time the demand climbs back. So the level is worth holding when it is wanted at
//! least once per `R` seconds of its idle time:
//!
//! ```text
//! rate of climbs to ℓ · R  ≥  P(busy < ℓ)
//! ```
//!
//! With Poisson arrivals at rate `λ` and run times of mean `E[S]`, the busy slots are
//! Poisson with mean `m = λ · E[S]` (the M/G/∞ queue), and the demand climbs to `ℓ`
//! at rate `λ · P(busy = ℓ − 1)`. The Poisson's `P(N = k) / P(N ≤ k)` falls as `k`
//! grows (the distribution is log-concave), so the levels worth holding are `1 ..= c`
//! for one `c`, found by walking up from level 1.
//!
//! The predictor applies it to the pool's tasks shorter than a boot (their arrival
//! rate and mean run time); tasks that outlive a boot are the forecast's, whose
//! launches land while they still have work. A held level stands above nothing else:
//! the planner keeps at least `c` slots while the forecast asks for fewer.

/// The highest level `c` worth holding for arrivals at `rate_per_s` of tasks that run
/// `mean_run_s` on average, when a regretted retirement costs `regret_s` seconds of
/// machine time: each of the levels `1 ..= c` sees the demand climb to it at least once
/// per `regret_s` of its idle time. 0 when an input is not a finite positive number.
pub fn held_slots(rate_per_s: f64, mean_run_s: f64, regret_s: f64) -> u32 {
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !(positive(rate_per_s) && positive(mean_run_s) && positive(regret_s)) {
        return 0;
    }
    let m = rate_per_s * mean_run_s;
    let ln_m = libm::log(m);
    // ln(λ · R): the climb rate's factor and the regret, in logs so that a large mean
    // (e^−m underflows past m ≈ 745) stays exact.
    let ln_gain = libm::log(rate_per_s) + libm::log(regret_s);
    // ln P(N = k) and ln P(N ≤ k), from k = 0.
    let mut ln_pmf = -m;
    let mut ln_cdf = -m;
    // Far above the mean the condition fails for any finite gain; the bound only
    // keeps the walk finite for inputs that overflow.
    let limit = m + 40.0 * libm::sqrt(m) + 1_000.0;
    let mut k = 0u32;
    while f64::from(k) < limit {
        // Level k + 1: climbs from k busy, idle while at most k are busy.
        if ln_gain + ln_pmf < ln_cdf {
            return k;
        }
        k += 1;
        ln_pmf += ln_m - libm::log(f64::from(k));
        let (hi, lo) = if ln_cdf >= ln_pmf {
            (ln_cdf, ln_pmf)
        } else {
            (ln_pmf, ln_cdf)
        };
        ln_cdf = hi + libm::log1p(libm::exp(lo - hi));
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_levels_held_are_the_hand_computed_ones() {
        // 130 tasks an hour of 10 s, a retirement regretted at 270 s: m = 0.3611,
        // P(N=0) = 0.6969, P(N=1) = 0.2517, P(N=2) = 0.0454. Level 1 climbs at
        // λ·P(N=0) = 0.0252/s, × 270 = 6.79 >= 0.697; level 2 at λ·P(N=1), × 270 =
        // 2.45 >= P(N<=1) = 0.949; level 3 at λ·P(N=2), × 270 = 0.443 < 0.994.
        assert_eq!(held_slots(130.0 / 3600.0, 10.0, 270.0), 2);
        // Level 1 is held when λ · P(N=0) · R >= P(N=0), that is R >= 1 / λ = 27.7 s.
        assert_eq!(held_slots(130.0 / 3600.0, 10.0, 27.0), 0);
        assert_eq!(held_slots(130.0 / 3600.0, 10.0, 28.0), 1);
        // The idle share is the whole P(N <= k), not its largest term: one task of 10 s
        // every 30 s, R = 600 s, level 3 climbs at λ · P(N=2) · R = 0.796, above
        // P(N=0) = 0.717 but below P(N<=2) = 0.995, so it is not held.
        assert_eq!(held_slots(1.0 / 30.0, 10.0, 600.0), 2);
    }

    #[test]
    fn more_regret_or_more_arrivals_hold_more_and_bad_input_holds_nothing() {
        let mut last = 0;
        for regret in [50.0, 100.0, 300.0, 1_000.0, 3_000.0, 10_000.0] {
            let c = held_slots(0.05, 20.0, regret);
            assert!(c >= last, "{regret}: {c} < {last}");
            last = c;
        }
        assert!(last > held_slots(0.05, 20.0, 50.0));
        let mut last = 0;
        for rate in [0.001, 0.01, 0.1, 1.0, 10.0] {
            let c = held_slots(rate, 20.0, 300.0);
            assert!(c >= last, "{rate}: {c} < {last}");
            last = c;
        }
        for (rate, mean, regret) in [
            (0.0, 10.0, 100.0),
            (0.1, 0.0, 100.0),
            (0.1, 10.0, 0.0),
            (f64::NAN, 10.0, 100.0),
            (0.1, f64::INFINITY, 100.0),
            (-1.0, 10.0, 100.0),
        ] {
            assert_eq!(held_slots(rate, mean, regret), 0, "{rate} {mean} {regret}");
        }
    }

    #[test]
    fn a_large_mean_is_held_above_it_without_underflow() {
        // m = 10,000: e^−m is 0 in f64, the logs are not.
        let c = held_slots(10.0, 1_000.0, 120.0);
        assert!(c > 10_000 && c < 10_500, "{c}");
    }
}
