//! Turning a forecast count distribution into slots at a service level.
//!
//! Arrivals in a look-ahead window are modelled as Poisson when they are not
//! over-dispersed, and as negative binomial with the same mean and variance
//! `dispersion × mean` when they are (bursty queues are: CI pushes and batch
//! submissions come in clumps). Both distributions come from `statrs`.
//!
//! Two ways to read "service level p":
//!
//! - [`Basis::Windows`]: the window's arrivals fit in the spare slots with probability
//!   p (the plain upper quantile, `statrs`'s inverse CDF);
//! - [`Basis::Tasks`]: a fraction p of *tasks* find a spare slot. A task is uncovered
//!   when it arrives after the spare slots are used up, so the smallest `s` with
//!   `E[(A − s)⁺] ≤ (1 − p) E[A]` is chosen. Bursts weigh as many times as they hold
//!   tasks, which is what wait-time percentiles measure.
//!
//! Both are memoised on the mean and dispersion rounded *up* to about 1.5 % (so the
//! answer is never smaller than the exact one for the unrounded inputs), because the
//! inputs change a little every tick and the statistics are not free.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{Discrete, DiscreteCDF, NegativeBinomial, Poisson};

/// Which outcome the service level is a probability of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The whole window's arrivals are covered with probability p.
    Windows,
    /// A fraction p of tasks are covered.
    Tasks,
}

/// Dispersion at or below this is treated as Poisson.
const POISSON_DISPERSION: f64 = 1.02;
/// Entries kept before the memo is cleared.
const MEMO_CAPACITY: usize = 8192;
/// Steps per doubling of the rounding grid (2^(1/48) ≈ 1.5 % apart).
const GRID_STEPS_PER_OCTAVE: f64 = 48.0;
/// Means below this are rounded on a linear grid of this step instead.
const LINEAR_GRID: f64 = 1.0 / 64.0;

/// Rounds `x > 0` up to the memo grid; returns the grid index and the rounded value.
fn round_up(x: f64) -> (i64, f64) {
    if x <= 1.0 {
        let i = (x / LINEAR_GRID).ceil();
        (i as i64, i * LINEAR_GRID)
    } else {
        let i = (x.log2() * GRID_STEPS_PER_OCTAVE).ceil();
        (1_000_000 + i as i64, (i / GRID_STEPS_PER_OCTAVE).exp2())
    }
}

/// Slots that cover arrivals with mean `mean` and variance `dispersion × mean` at
/// `level`, on the given basis. Exact (no memo); see [`CountQuantiles`] for the cached
/// form.
pub fn spare_slots(mean: f64, dispersion: f64, level: f64, basis: Basis) -> u32 {
    if mean.is_nan() || mean <= 0.0 || level.is_nan() || level <= 0.0 {
        return 0;
    }
    let level = level.min(1.0 - 1e-9);
    let phi = if dispersion.is_finite() {
        dispersion
    } else {
        1.0
    };
    if phi <= POISSON_DISPERSION {
        let Ok(d) = Poisson::new(mean) else { return 0 };
        match basis {
            Basis::Windows => clamp_u32(d.inverse_cdf(level)),
            Basis::Tasks => task_quantile(mean, level, d.pmf(0), |k, pmf| pmf * mean / (k + 1.0)),
        }
    } else {
        // var = mean / p and mean = r (1 - p) / p  =>  p = 1 / phi, r = mean / (phi - 1).
        let p = 1.0 / phi;
        let r = mean / (phi - 1.0);
        let Ok(d) = NegativeBinomial::new(r, p) else {
            return 0;
        };
        match basis {
            Basis::Windows => clamp_u32(d.inverse_cdf(level)),
            Basis::Tasks => task_quantile(mean, level, d.pmf(0), |k, pmf| {
                pmf * (k + r) / (k + 1.0) * (1.0 - p)
            }),
        }
    }
}

fn clamp_u32(k: u64) -> u32 {
    u32::try_from(k).unwrap_or(u32::MAX)
}

/// Smallest `s` with `E[(A − s)⁺] ≤ (1 − level) · mean`, walking the pmf with the
/// recurrence `next(k, pmf(k)) = pmf(k + 1)`.
///
/// `E[(A − s)⁺] = mean − Σ_{k<s} P(A > k)`, so each step subtracts one tail
/// probability.
fn task_quantile(mean: f64, level: f64, pmf0: f64, next: impl Fn(f64, f64) -> f64) -> u32 {
    let allowed = (1.0 - level) * mean;
    let mut loss = mean;
    let mut cdf = 0.0;
    let mut pmf = pmf0;
    let mut s: u32 = 0;
    // The tail sum converges; the cap guards against a pmf that underflows to zero
    // before the CDF reaches 1 (a huge mean).
    while loss > allowed && s < 1_000_000 {
        cdf += pmf;
        let tail = (1.0 - cdf).max(0.0);
        if tail <= 0.0 && pmf == 0.0 {
            break;
        }
        loss -= tail;
        pmf = next(f64::from(s), pmf);
        s += 1;
    }
    s
}

/// Memoised [`spare_slots`]: inputs are rounded up to a grid about 1.5 % fine, so
/// consecutive ticks with nearly equal means hit the memo.
#[derive(Debug, Clone, Default)]
pub struct CountQuantiles {
    memo: HashMap<(i64, i64, u64, Basis), u32>,
    last: Option<((i64, i64, u64, Basis), u32)>,
}

impl CountQuantiles {
    /// An empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`spare_slots`] at `mean` and `dispersion` rounded up to the grid.
    pub fn spare_slots(&mut self, mean: f64, dispersion: f64, level: f64, basis: Basis) -> u32 {
        if mean.is_nan() || mean <= 0.0 {
            return 0;
        }
        let (mi, m) = round_up(mean);
        let (di, d) = if dispersion > POISSON_DISPERSION {
            round_up(dispersion)
        } else {
            (0, 1.0)
        };
        let key = (mi, di, level.to_bits(), basis);
        if let Some((k, v)) = self.last
            && k == key
        {
            return v;
        }
        let v = match self.memo.get(&key) {
            Some(v) => *v,
            None => {
                if self.memo.len() >= MEMO_CAPACITY {
                    self.memo.clear();
                }
                let v = spare_slots(m, d, level, basis);
                self.memo.insert(key, v);
                v
            }
        };
        self.last = Some((key, v));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_window_quantile_matches_the_table() {
        // Poisson(2): P(<=4) = 0.947, P(<=5) = 0.983.
        assert_eq!(spare_slots(2.0, 1.0, 0.95, Basis::Windows), 5);
        assert_eq!(spare_slots(2.0, 1.0, 0.90, Basis::Windows), 4);
        assert_eq!(spare_slots(0.0, 1.0, 0.95, Basis::Windows), 0);
    }

    #[test]
    fn task_basis_hand_computed_for_poisson_one() {
        // Poisson(1): P(A>0) = 0.6321, P(A>1) = 0.2642, P(A>2) = 0.0803.
        // E[(A-s)+]: s=1 -> 0.3679, s=2 -> 0.1036, s=3 -> 0.0233.
        // Level 0.9 allows 0.1: s = 3. Level 0.85 allows 0.15: s = 2.
        assert_eq!(spare_slots(1.0, 1.0, 0.9, Basis::Tasks), 3);
        assert_eq!(spare_slots(1.0, 1.0, 0.85, Basis::Tasks), 2);
    }

    #[test]
    fn over_dispersion_asks_for_more_slots() {
        let poisson = spare_slots(3.0, 1.0, 0.95, Basis::Windows);
        let nb = spare_slots(3.0, 4.0, 0.95, Basis::Windows);
        assert!(nb > poisson, "{nb} vs {poisson}");
        let nb_tasks = spare_slots(3.0, 4.0, 0.95, Basis::Tasks);
        assert!(nb_tasks >= nb, "{nb_tasks} vs {nb}");
    }

    #[test]
    fn negative_binomial_task_basis_matches_brute_force() {
        let (mean, phi, level) = (2.5, 3.0, 0.9);
        let p = 1.0 / phi;
        let r = mean / (phi - 1.0);
        let d = NegativeBinomial::new(r, p).unwrap();
        let loss = |s: u64| -> f64 { (s..2000).map(|k| (k - s) as f64 * d.pmf(k)).sum() };
        let expect = (0..).find(|s| loss(*s) <= (1.0 - level) * mean).unwrap();
        assert_eq!(
            u64::from(spare_slots(mean, phi, level, Basis::Tasks)),
            expect
        );
    }

    #[test]
    fn memo_rounds_up_never_down() {
        let mut q = CountQuantiles::new();
        for i in 1..400 {
            let mean = f64::from(i) * 0.037;
            for basis in [Basis::Windows, Basis::Tasks] {
                let exact = spare_slots(mean, 2.0, 0.95, basis);
                let memo = q.spare_slots(mean, 2.0, 0.95, basis);
                assert!(memo >= exact, "mean {mean}: {memo} < {exact}");
                assert!(memo <= exact + 1, "mean {mean}: {memo} >> {exact}");
            }
        }
    }
}
