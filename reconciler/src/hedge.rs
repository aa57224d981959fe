//! Launching a few more machines than waiting tasks when boot times vary.
//!
//! A task that waits for a launch waits for a boot, and with `m` machines launched for
//! `k` waiting tasks the tasks take the first `k` machines to come up: the more
//! launched, the faster the slowest of those `k`. Where boots take the same time
//! every time an extra machine saves nothing; where they vary (a log-normal boot, a
//! slow image pull now and then) the `k`-th fastest of `m > k` boots can come well
//! before the slowest of `k`, which is what a `reactive` pool with a `scaling_ratio`
//! above 1 buys, blindly.
//!
//! With the quantile function `Q` of the pool's measured boots, the `k` fastest of `m`
//! boots sum to about `W(m) = m · ∫₀^{k/m} Q(u) du` (the fastest `k/m` share of the
//! distribution, `m` times). One more machine saves `W(m) − W(m + 1)` seconds of wait
//! and costs, if it lands unneeded, its boot and the time it then idles before a task
//! takes it or the idle timeout retires it: `E[B] + I` seconds of machine time, with
//! `I = E[min(G, T)]` read from the pool's idle gaps `G` where capstan chose the
//! timeout `T` ([`crate::idle`]; in a burst the next tasks often take it), and `I = T`
//! where the spec sets the timeout. A service level `p` prices a second of a task's wait at
//! `p / (1 − p)` seconds of a slot (the newsvendor's ratio the spare and the idle
//! timeout use, [`crate::idle`]). The saving is real only if the waiting task is not
//! served first by a slot a running task frees; the caller passes the chance `s` that
//! the slots of running tasks are still taken when the machine lands (`S_run(L)`, the
//! run-time distribution's share of running tasks that outlive a boot). So machines
//! are added while
//!
//! ```text
//! s · p / (1 − p) · (W(m) − W(m + 1))  >=  E[B] + I
//! ```
//!
//! (the slots of a machine cancel: a machine of `c` slots saves `c` tasks' waits and
//! costs `c` slots). At level 0, for `reactive` and for boots that never vary, no
//! machine is added, so those pools launch exactly what they launched before. Nothing
//! is added before [`MIN_BOOTS`] boots are measured.

/// Boots remembered.
pub const BOOT_MEMORY: usize = 256;
/// Boots measured before the spread of boot times is trusted.
pub const MIN_BOOTS: usize = 16;
/// The highest service level priced (`p / (1 − p)` = 999 there), so a level of 1
/// does not price a wait infinitely.
pub(crate) const MAX_LEVEL: f64 = 0.999;

/// The pool's recent boot times and the extra launches they call for.
#[derive(Debug, Clone, Default)]
pub struct BootSpread {
    ring: Vec<f64>,
    head: usize,
    /// The ring sorted, and its prefix sums (`prefix[j]` = sum of the `j` fastest);
    /// rebuilt when a boot came since.
    sorted: Vec<f64>,
    prefix: Vec<f64>,
    stale: bool,
}

impl BootSpread {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One measured launch-to-ready time, in seconds.
    pub fn observe(&mut self, boot_s: f64) {
        if !boot_s.is_finite() || boot_s < 0.0 {
            return;
        }
        if self.ring.len() < BOOT_MEMORY {
            self.ring.push(boot_s);
        } else {
            self.ring[self.head] = boot_s;
            self.head = (self.head + 1) % BOOT_MEMORY;
        }
        self.stale = true;
    }

    /// Boots remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no boot is measured yet.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Machines to launch beyond the `k` that waiting tasks need, at service level
    /// `level`, when running tasks' slots are still taken a boot from now with
    /// probability `still_busy`, and a machine that lands unneeded idles `idle_s`
    /// before a task takes it or it goes.
    pub fn extra(&mut self, k: u32, level: f64, still_busy: f64, idle_s: f64) -> u32 {
        if k == 0 || self.ring.len() < MIN_BOOTS || level.is_nan() || level <= 0.0 {
            return 0;
        }
        self.refresh();
        let n = self.sorted.len();
        if self.sorted[0] == self.sorted[n - 1] {
            return 0; // Boots that never vary: an extra machine saves nothing.
        }
        let level = level.min(MAX_LEVEL);
        let price = level / (1.0 - level) * still_busy.clamp(0.0, 1.0);
        let mean = self.prefix[n] / n as f64;
        let cost = mean + idle_s.max(0.0);
        let k = f64::from(k);
        let mut m = k;
        let mut w = self.fastest_sum(k, m);
        // W(m) falls towards k times the fastest boot, by less with each machine, so
        // the first machine that does not pay ends the search; at most k + n extra.
        let most = k + n as f64;
        while m < most {
            let next = self.fastest_sum(k, m + 1.0);
            if price * (w - next) < cost {
                break;
            }
            m += 1.0;
            w = next;
        }
        (m - k) as u32
    }

    fn refresh(&mut self) {
        if !self.stale && self.sorted.len() == self.ring.len() {
            return;
        }
        self.sorted.clear();
        self.sorted.extend_from_slice(&self.ring);
        self.sorted.sort_unstable_by(f64::total_cmp);
        self.prefix.clear();
        self.prefix.push(0.0);
        let mut sum = 0.0;
        for &b in &self.sorted {
            sum += b;
            self.prefix.push(sum);
        }
        self.stale = false;
    }

    /// `W(m) = m · ∫₀^{k/m} Q(u) du` on the empirical quantile function: the `k`
    /// fastest of `m` boots, summed.
    fn fastest_sum(&self, k: f64, m: f64) -> f64 {
        let n = self.sorted.len();
        let t = (k / m).min(1.0) * n as f64; // boots' worth of the sorted list
        let whole = (t.floor() as usize).min(n);
        let part = if whole < n {
            (t - whole as f64) * self.sorted[whole]
        } else {
            0.0
        };
        m * (self.prefix[whole] + part) / n as f64
    }
}

#[cfg(test)]
mod tests {
    use statrs::distribution::{ContinuousCDF, LogNormal};

    use super::*;

    fn spread(boots: impl IntoIterator<Item = f64>) -> BootSpread {
        let mut s = BootSpread::new();
        for b in boots {
            s.observe(b);
        }
        s
    }

    /// 200 boots spread like a log-normal of median 120 s and sigma 0.5 (its
    /// quantiles at the midpoints of 200 equal shares).
    fn lognormal() -> BootSpread {
        let d = LogNormal::new(120f64.ln(), 0.5).unwrap();
        spread((0..200).map(|i| d.inverse_cdf((f64::from(i) + 0.5) / 200.0)))
    }

    #[test]
    fn boots_that_never_vary_add_nothing() {
        let mut s = spread(std::iter::repeat_n(120.0, 64));
        for k in [1, 5, 50] {
            assert_eq!(s.extra(k, 0.99, 1.0, 0.0), 0);
        }
    }

    #[test]
    fn nothing_is_added_at_level_zero_or_before_enough_boots() {
        let mut s = lognormal();
        assert_eq!(s.extra(10, 0.0, 1.0, 300.0), 0);
        let mut few = spread([60.0, 120.0, 400.0]);
        assert_eq!(few.extra(10, 0.99, 1.0, 0.0), 0);
    }

    #[test]
    fn the_sum_of_the_fastest_is_the_whole_sum_when_none_is_spare() {
        let mut s = spread((1..=20).map(f64::from));
        s.refresh();
        // k = m: every boot counts, m times the mean.
        assert!((s.fastest_sum(4.0, 4.0) - 4.0 * 10.5).abs() < 1e-9);
        // k of 2k: the faster half, 2k times its mean over the whole list's share.
        assert!((s.fastest_sum(1.0, 2.0) - 2.0 * (55.0 / 20.0)).abs() < 1e-9);
    }

    #[test]
    fn a_higher_level_and_a_wider_spread_launch_more_a_longer_idle_timeout_less() {
        let mut s = lognormal();
        let levels = [0.5, 0.8, 0.9, 0.95, 0.99];
        let extra: Vec<u32> = levels.iter().map(|&p| s.extra(10, p, 1.0, 300.0)).collect();
        assert!(extra.windows(2).all(|w| w[0] <= w[1]), "{extra:?}");
        assert!(extra[4] > extra[0], "{extra:?}");
        assert!(s.extra(10, 0.95, 1.0, 3600.0) <= s.extra(10, 0.95, 1.0, 60.0));
        // The same boots squeezed to a tenth of their spread around the median.
        let mut narrow = spread(lognormal().ring.iter().map(|b| 120.0 + (b - 120.0) / 10.0));
        assert!(narrow.extra(10, 0.95, 1.0, 300.0) < s.extra(10, 0.95, 1.0, 300.0));
    }

    #[test]
    fn each_extra_machine_pays_for_itself_and_the_next_would_not() {
        let mut s = lognormal();
        let (k, level, idle) = (8u32, 0.95, 300.0);
        let extra = s.extra(k, level, 1.0, idle);
        assert!(
            extra > 0,
            "a log-normal of sigma 0.5 calls for some at 0.95"
        );
        let price = level / (1.0 - level);
        let cost = s.prefix[s.sorted.len()] / s.sorted.len() as f64 + idle;
        let k = f64::from(k);
        let saved = |m: f64| price * (s.fastest_sum(k, m) - s.fastest_sum(k, m + 1.0));
        let m = k + f64::from(extra);
        assert!(saved(m - 1.0) >= cost);
        assert!(saved(m) < cost);
    }

    #[test]
    fn no_machine_is_added_where_running_tasks_free_their_slots_first() {
        let mut s = lognormal();
        assert_eq!(s.extra(10, 0.99, 0.0, 300.0), 0);
        assert!(s.extra(10, 0.99, 0.5, 300.0) <= s.extra(10, 0.99, 1.0, 300.0));
        assert!(s.extra(10, 0.99, 0.5, 300.0) > 0);
    }

    #[test]
    fn old_boots_leave_the_memory() {
        let mut s = spread((0..BOOT_MEMORY).map(|i| 60.0 + i as f64));
        assert!(s.extra(4, 0.99, 1.0, 0.0) > 0);
        for _ in 0..BOOT_MEMORY {
            s.observe(90.0);
        }
        assert_eq!(s.len(), BOOT_MEMORY);
        assert_eq!(s.extra(4, 0.99, 1.0, 0.0), 0);
    }
}
