//! The observed distribution of task run times, and what it says about the next
//! `lead` seconds.
//!
//! The forecast needs two numbers from it for a look-ahead of `L` seconds:
//!
//! - the fraction of tasks arriving uniformly over `(now, now + L]` that still run at
//!   `now + L`: `E[min(R, L)] / L`;
//! - the fraction of tasks running now that still run at `now + L`. Without the age of
//!   each running task, the stationary (renewal) answer is used: a running task's
//!   remaining time has survival `∫_L^∞ S(u) du / E[R]`, i.e.
//!   `(E[R] − E[min(R, L)]) / E[R]`.
//!
//! Run times are kept in a histogram with 80 logarithmic bins from 1 s (ratio 1.25, up
//! to about 1.4 years), each bin remembering the sum of its values so means are exact
//! and only the spread inside a bin is approximated (uniform). Old observations fade
//! (counts halve every `half_life` observations) so a pool whose tasks change is
//! followed. Bin edges are found by binary search over edges built by repeated
//! multiplication, so results do not depend on the platform's `ln`.

/// Number of finite bins.
const BINS: usize = 80;
/// Upper edge of the first bin, seconds.
const FIRST_EDGE_S: f64 = 1.0;
/// Ratio between consecutive bin edges.
const EDGE_RATIO: f64 = 1.25;
/// Observations between two applications of the fading factor.
const FADE_EVERY: u32 = 256;
/// Observations between two recomputations of the cached look-ahead fractions.
const RECOMPUTE_EVERY: u64 = 64;

/// Histogram of task run times with cached look-ahead fractions.
#[derive(Debug, Clone)]
pub struct RunTimeDistribution {
    /// Upper edges of the finite bins; bin `i` is `[edge[i-1], edge[i])`, bin 0 starts at
    /// 0, and the last slot of `count`/`sum` is the overflow bin.
    edges: [f64; BINS],
    count: [f64; BINS + 1],
    sum: [f64; BINS + 1],
    total_count: f64,
    total_sum: f64,
    fade: f64,
    since_fade: u32,
    observations: u64,
    /// The last two look-aheads asked for (the forecast asks for two each tick: the
    /// lead, and the lead plus a tick); the older one is replaced.
    cache: [Option<LookAhead>; 2],
}

/// Cached fractions for one look-ahead.
#[derive(Debug, Clone, Copy, PartialEq)]
struct LookAhead {
    lead_s: f64,
    at_observation: u64,
    fractions: Survival,
}

/// The two fractions the forecast uses, for one look-ahead `L`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Survival {
    /// Fraction of tasks arriving uniformly over the next `L` seconds still running at
    /// the end.
    pub of_arrivals: f64,
    /// Fraction of tasks running now still running in `L` seconds.
    pub of_running: f64,
}

impl Survival {
    /// What is assumed with no observations: every task runs past the look-ahead.
    pub const ALL: Survival = Survival {
        of_arrivals: 1.0,
        of_running: 1.0,
    };
}

impl RunTimeDistribution {
    /// An empty distribution whose counts halve every `half_life` observations
    /// (0 = never fade).
    pub fn new(half_life: u32) -> Self {
        let mut edges = [0.0; BINS];
        let mut e = FIRST_EDGE_S;
        for edge in &mut edges {
            *edge = e;
            e *= EDGE_RATIO;
        }
        let fade = if half_life == 0 {
            1.0
        } else {
            libm::pow(0.5, f64::from(FADE_EVERY) / f64::from(half_life))
        };
        Self {
            edges,
            count: [0.0; BINS + 1],
            sum: [0.0; BINS + 1],
            total_count: 0.0,
            total_sum: 0.0,
            fade,
            since_fade: 0,
            observations: 0,
            cache: [None, None],
        }
    }

    /// Records one finished task's run time in seconds. Negative or non-finite values
    /// are ignored.
    pub fn observe(&mut self, run_s: f64) {
        if !run_s.is_finite() || run_s < 0.0 {
            return;
        }
        let bin = self.edges.partition_point(|e| *e <= run_s);
        self.count[bin] += 1.0;
        self.sum[bin] += run_s;
        self.total_count += 1.0;
        self.total_sum += run_s;
        self.observations += 1;
        self.since_fade += 1;
        if self.since_fade >= FADE_EVERY && self.fade < 1.0 {
            self.since_fade = 0;
            for (c, s) in self.count.iter_mut().zip(self.sum.iter_mut()) {
                *c *= self.fade;
                *s *= self.fade;
            }
            self.total_count *= self.fade;
            self.total_sum *= self.fade;
        }
    }

    /// Finished tasks observed (before fading).
    pub fn observations(&self) -> u64 {
        self.observations
    }

    /// Mean run time in seconds, if anything was observed.
    pub fn mean_s(&self) -> Option<f64> {
        (self.total_count > 0.0).then(|| self.total_sum / self.total_count)
    }

    /// `E[min(R, x)]`, seconds.
    pub fn mean_min(&self, x: f64) -> f64 {
        if self.total_count <= 0.0 {
            return x.max(0.0);
        }
        let x = x.max(0.0);
        let mut acc = 0.0;
        for (lower, upper, c, sum) in self.bins() {
            if c > 0.0 {
                if upper <= x {
                    acc += sum;
                } else if lower >= x {
                    acc += c * x;
                } else {
                    // x inside this finite bin: values spread uniformly over it.
                    let width = upper - lower;
                    acc += c * ((x * x - lower * lower) / 2.0 + x * (upper - x)) / width;
                }
            }
        }
        acc / self.total_count
    }

    /// Each bin as (lower edge, upper edge, count, sum of values), in order; the last,
    /// the overflow bin, has an infinite upper edge.
    fn bins(&self) -> impl Iterator<Item = (f64, f64, f64, f64)> + '_ {
        (0..=BINS).map(move |i| {
            let lower = if i == 0 { 0.0 } else { self.edges[i - 1] };
            let upper = if i < BINS {
                self.edges[i]
            } else {
                f64::INFINITY
            };
            (lower, upper, self.count[i], self.sum[i])
        })
    }

    /// The tasks that run for less than `x` seconds: their share of all tasks and their
    /// mean run time (values spread uniformly inside a bin, as in
    /// [`RunTimeDistribution::mean_min`]). `(0, 0)` before any observation.
    pub fn shorter_than(&self, x: f64) -> (f64, f64) {
        if self.total_count <= 0.0 || x.is_nan() || x <= 0.0 {
            return (0.0, 0.0);
        }
        let (mut count, mut sum) = (0.0, 0.0);
        for (lower, upper, c, bin_sum) in self.bins() {
            if upper <= x {
                count += c;
                sum += bin_sum;
            } else {
                if c > 0.0 && lower < x {
                    let inside = c * (x - lower) / (upper - lower);
                    count += inside;
                    sum += inside * (lower + x) / 2.0;
                }
                break;
            }
        }
        if count <= 0.0 {
            return (0.0, 0.0);
        }
        (count / self.total_count, sum / count)
    }

    /// The look-ahead fractions for `lead_s` seconds, cached: recomputed when the lead
    /// changes or after 64 new observations, so O(1) amortised.
    pub fn survival(&mut self, lead_s: f64) -> Survival {
        if self.total_count <= 0.0 || lead_s <= 0.0 {
            return Survival::ALL;
        }
        for c in self.cache.iter().flatten() {
            if c.lead_s == lead_s && self.observations - c.at_observation < RECOMPUTE_EVERY {
                return c.fractions;
            }
        }
        let fractions = self.compute(lead_s);
        let entry = Some(LookAhead {
            lead_s,
            at_observation: self.observations,
            fractions,
        });
        // Replace the entry for this lead if there is one, else the older entry.
        let slot = match self.cache {
            [Some(a), _] if a.lead_s == lead_s => 0,
            [_, Some(b)] if b.lead_s == lead_s => 1,
            [Some(a), Some(b)] if a.at_observation > b.at_observation => 1,
            [Some(_), None] => 1,
            _ => 0,
        };
        self.cache[slot] = entry;
        fractions
    }

    /// The look-ahead fractions for `lead_s` seconds, computed afresh (O(bins)).
    pub fn compute(&self, lead_s: f64) -> Survival {
        if self.total_count <= 0.0 || lead_s <= 0.0 {
            return Survival::ALL;
        }
        let mean = self.total_sum / self.total_count;
        let mean_min = self.mean_min(lead_s);
        Survival {
            of_arrivals: (mean_min / lead_s).clamp(0.0, 1.0),
            of_running: if mean > 0.0 {
                ((mean - mean_min) / mean).clamp(0.0, 1.0)
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_distribution_assumes_tasks_outlive_the_lead() {
        let mut d = RunTimeDistribution::new(0);
        assert_eq!(d.survival(120.0), Survival::ALL);
        assert_eq!(d.mean_s(), None);
    }

    #[test]
    fn fixed_run_time_gives_the_hand_computed_fractions() {
        // Every task runs exactly 600 s; look ahead 120 s.
        let mut d = RunTimeDistribution::new(0);
        for _ in 0..1000 {
            d.observe(600.0);
        }
        let s = d.survival(120.0);
        // All arrivals in the next 120 s still run at its end.
        assert!((s.of_arrivals - 1.0).abs() < 1e-9, "{s:?}");
        // A running task's age is uniform on [0, 600): it survives 120 s with 480/600.
        // The bin holding 600 spans [~555, ~694) and 120 lies below it, so exact.
        assert!((s.of_running - 0.8).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn short_tasks_mostly_finish_within_the_lead() {
        // Half the tasks run 10 s, half 1000 s; look ahead 100 s.
        let mut d = RunTimeDistribution::new(0);
        for _ in 0..500 {
            d.observe(10.0);
            d.observe(1000.0);
        }
        // E[min(R,100)] = (10 + 100) / 2 = 55: arrivals fraction 0.55.
        // E[R] = 505: running fraction (505 - 55) / 505.
        let s = d.survival(100.0);
        assert!((s.of_arrivals - 0.55).abs() < 1e-9, "{s:?}");
        assert!((s.of_running - 450.0 / 505.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn the_tasks_shorter_than_a_boot_are_counted_with_their_mean() {
        let mut d = RunTimeDistribution::new(0);
        assert_eq!(d.shorter_than(100.0), (0.0, 0.0));
        // A quarter run 10 s, a quarter 20 s, half 1000 s.
        for _ in 0..250 {
            d.observe(10.0);
            d.observe(20.0);
            d.observe(1000.0);
            d.observe(1000.0);
        }
        let (share, mean) = d.shorter_than(100.0);
        assert!((share - 0.5).abs() < 1e-12, "{share}");
        assert!((mean - 15.0).abs() < 1e-9, "{mean}");
        // Everything is shorter than a day; nothing shorter than 5 s.
        let (share, mean) = d.shorter_than(86_400.0);
        assert!((share - 1.0).abs() < 1e-12 && (mean - 507.5).abs() < 1e-9);
        assert_eq!(d.shorter_than(5.0), (0.0, 0.0));
        // A bound inside a bin takes the part of it below the bound, spread uniformly:
        // one value in [0, 1), bound 0.5: half a task, of mean 0.25.
        let mut one = RunTimeDistribution::new(0);
        one.observe(0.7);
        let (share, mean) = one.shorter_than(0.5);
        assert!((share - 0.5).abs() < 1e-12 && (mean - 0.25).abs() < 1e-12);
    }

    #[test]
    fn values_inside_a_bin_are_spread_uniformly() {
        let mut d = RunTimeDistribution::new(0);
        d.observe(0.5); // bin [0, 1)
        // E[min(U(0,1), 0.5)] = ∫_0^.5 u du + 0.5 × 0.5 = 0.125 + 0.25.
        assert!((d.mean_min(0.5) - 0.375).abs() < 1e-12);
    }

    #[test]
    fn fading_follows_a_change_in_run_times() {
        let mut d = RunTimeDistribution::new(1000);
        for _ in 0..20_000 {
            d.observe(10.0);
        }
        for _ in 0..20_000 {
            d.observe(1000.0);
        }
        let mean = d.mean_s().unwrap();
        assert!(mean > 990.0, "{mean}");
    }
}
