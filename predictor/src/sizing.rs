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
//! Both are memoised on the mean and dispersion rounded *up* (so the answer is never
//! smaller than the exact one for the unrounded inputs), because the
//! inputs change a little every tick.

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
/// Slots of the memo table.
const MEMO_SLOTS: usize = 4096;
/// Mantissa bits kept by the memo grid: 2^6 = 64 steps per doubling, about 1.1 % apart.
const GRID_MANTISSA_BITS: u32 = 6;

/// Rounds finite `x > 0` up to the memo grid (the float's exponent and its top
/// mantissa bits, so no logarithm is needed); returns the grid key and the rounded
/// value, which is never below `x`.
pub(crate) fn round_up(x: f64) -> (u64, f64) {
    let shift = 52 - GRID_MANTISSA_BITS;
    let bits = x.to_bits();
    let key = bits >> shift;
    if key << shift == bits {
        (key, x)
    } else {
        (key + 1, f64::from_bits((key + 1) << shift))
    }
}

/// Slots that cover arrivals with mean `mean` and variance `dispersion × mean` at
/// `level`, on the given basis. Exact (no memo); see [`CountQuantiles`] for the cached
/// form.
///
/// The distributions are `statrs`'s; the quantiles are found by walking the pmf from
/// `pmf(0)` with the distribution's recurrence, O(answer) and much cheaper than a
/// bisection over the CDF. Where `pmf(0)` underflows (a mean in the hundreds of
/// thousands) `statrs`'s own inverse CDF is used, for both bases.
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
        let pmf0 = d.pmf(0);
        if pmf0 <= 0.0 {
            return clamp_u32(d.inverse_cdf(level));
        }
        walk(mean, level, basis, pmf0, |k, pmf| pmf * mean / (k + 1.0))
    } else {
        // var = mean / p and mean = r (1 - p) / p  =>  p = 1 / phi, r = mean / (phi - 1).
        let p = 1.0 / phi;
        let r = mean / (phi - 1.0);
        let Ok(d) = NegativeBinomial::new(r, p) else {
            return 0;
        };
        let pmf0 = d.pmf(0);
        if pmf0 <= 0.0 {
            return clamp_u32(d.inverse_cdf(level));
        }
        walk(mean, level, basis, pmf0, |k, pmf| {
            pmf * (k + r) / (k + 1.0) * (1.0 - p)
        })
    }
}

fn clamp_u32(k: u64) -> u32 {
    u32::try_from(k).unwrap_or(u32::MAX)
}

/// The stopping rule of every walk up a count's pmf here, one term at a time:
///
/// - windows: the smallest `s` with `P(A ≤ s) ≥ level` (a tail that underflows to zero
///   past the mean ends the walk too);
/// - tasks: the smallest `s` with `E[(A − s)⁺] ≤ (1 − level) · mean`. Since
///   `E[(A − s)⁺] = mean − Σ_{k<s} P(A > k)`, each step subtracts one tail probability.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    basis: Basis,
    level: f64,
    mean: f64,
    allowed: f64,
    loss: f64,
    cdf: f64,
}

impl Walk {
    /// A walk for a count with this mean, stopping at `level` on `basis`.
    pub(crate) fn new(mean: f64, level: f64, basis: Basis) -> Self {
        Self {
            basis,
            level,
            mean,
            allowed: (1.0 - level) * mean,
            loss: mean,
            cdf: 0.0,
        }
    }

    /// Takes `P(A = s)` for the next `s` (0, 1, ...): whether `s` is the answer.
    pub(crate) fn stops_at(&mut self, s: u32, pmf: f64) -> bool {
        match self.basis {
            Basis::Windows => {
                self.cdf += pmf;
                self.cdf >= self.level || (pmf == 0.0 && f64::from(s) > self.mean && self.cdf > 0.0)
            }
            Basis::Tasks => {
                if self.loss <= self.allowed {
                    return true;
                }
                self.cdf += pmf;
                let tail = (1.0 - self.cdf).max(0.0);
                if tail <= 0.0 && pmf == 0.0 {
                    return true;
                }
                self.loss -= tail;
                false
            }
        }
    }
}

/// Walks the pmf with the recurrence `next(k, pmf(k)) = pmf(k + 1)` from `pmf0 > 0`
/// and stops at the answer for `basis` ([`Walk`]).
fn walk(mean: f64, level: f64, basis: Basis, pmf0: f64, next: impl Fn(f64, f64) -> f64) -> u32 {
    let mut walk = Walk::new(mean, level, basis);
    let mut pmf = pmf0;
    let mut s: u32 = 0;
    // The cap guards against a CDF that stops short of the level through rounding.
    while s < 10_000_000 {
        if walk.stops_at(s, pmf) {
            return s;
        }
        pmf = next(f64::from(s), pmf);
        s += 1;
    }
    s
}

/// Memoised [`spare_slots`]: the mean is rounded up to a grid about 1.1 % fine and
/// the dispersion to one about 9 % fine (it moves a little every tick and matters
/// less), so consecutive ticks hit the memo. The memo is a fixed direct-mapped table:
/// a lookup is a multiply, a mask and a compare, and nothing is allocated after
/// construction.
#[derive(Debug, Clone)]
pub struct CountQuantiles {
    table: Vec<Option<(MemoKey, u32)>>,
}

/// (mean grid key, dispersion grid key, level bits, basis).
type MemoKey = (u64, u64, u64, Basis);

/// Mantissa bits kept for the dispersion: 2^3 = 8 steps per doubling.
const DISPERSION_MANTISSA_BITS: u32 = 3;

impl Default for CountQuantiles {
    fn default() -> Self {
        Self::new()
    }
}

impl CountQuantiles {
    /// An empty memo.
    pub fn new() -> Self {
        Self {
            table: vec![None; MEMO_SLOTS],
        }
    }

    /// [`spare_slots`] at `mean` and `dispersion` rounded up to the grid.
    pub fn spare_slots(&mut self, mean: f64, dispersion: f64, level: f64, basis: Basis) -> u32 {
        if !mean.is_finite() || mean <= 0.0 {
            return spare_slots(mean, dispersion, level, basis);
        }
        let (mi, m) = round_up(mean);
        let (di, d) = if dispersion.is_finite() && dispersion > POISSON_DISPERSION {
            round_up_coarse(dispersion)
        } else {
            (0, 1.0)
        };
        let key = (mi, di, level.to_bits(), basis);
        let mix = mi
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
            .wrapping_add(di.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
            .wrapping_add(level.to_bits())
            .wrapping_add(basis as u64);
        let slot = (mix.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize % MEMO_SLOTS;
        if let Some((k, v)) = self.table[slot]
            && k == key
        {
            return v;
        }
        let v = spare_slots(m, d, level, basis);
        self.table[slot] = Some((key, v));
        v
    }
}

/// Like [`round_up`] on the coarser dispersion grid.
fn round_up_coarse(x: f64) -> (u64, f64) {
    let shift = 52 - DISPERSION_MANTISSA_BITS;
    let bits = x.to_bits();
    let key = bits >> shift;
    if key << shift == bits {
        (key, x)
    } else {
        (key + 1, f64::from_bits((key + 1) << shift))
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
    fn windows_basis_agrees_with_statrs_inverse_cdf() {
        for i in 1..200 {
            let mean = f64::from(i) * 0.173;
            let p = Poisson::new(mean).unwrap();
            assert_eq!(
                u64::from(spare_slots(mean, 1.0, 0.95, Basis::Windows)),
                p.inverse_cdf(0.95),
                "Poisson({mean})"
            );
            let (phi, level) = (1.0 + f64::from(i % 9), 0.9);
            let nb = NegativeBinomial::new(mean / (phi - 1.0).max(1e-9), 1.0 / phi).unwrap();
            if phi > POISSON_DISPERSION {
                assert_eq!(
                    u64::from(spare_slots(mean, phi, level, Basis::Windows)),
                    nb.inverse_cdf(level),
                    "NB({mean}, {phi})"
                );
            }
        }
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
