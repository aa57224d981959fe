//! Short-term clustering: arrivals come in clumps, so recent arrivals predict the next
//! few minutes better than the time of day alone.
//!
//! On the SDSC Blue Horizon trace the mean number of arrivals in the next 150 s is
//! 0.21 after five quiet minutes, 1.0 after 3–4 arrivals in them and 18 after more than
//! 40. The seasonal model knows none of this. So the expected count for a look-ahead
//! window is a learned combination of three features:
//!
//! ```text
//! mean = θ₀ · seasonal forecast for the window
//!      + θ₁ · (arrival rate over the last ~2 minutes) · window
//!      + θ₂ · (arrival rate over the last ~15 minutes) · window
//!      + θ₃ · (arrival rate over the last ~30 seconds) · window
//! ```
//!
//! The ~30 s rate separates a burst that is still arriving from one that has already
//! arrived (whose tasks are then pending or running, not future arrivals). Without it
//! the ~2 minute rate stays high for minutes after a short burst and the spare follows
//! it: on the generated `diurnal` workload (bursts of ~40 tasks within 120 s) that
//! launched dozens of instances after each burst that nothing used.
//!
//! The rates are exponentially decayed counts ([`RecentArrivals`]), O(1) per sample.
//! θ is fitted online by ridge-regularised least squares on every window whose outcome
//! is known ([`WindowRegression`]), with exponential forgetting so it follows a pool
//! whose habits change. Until enough windows have been scored θ = (1, 0, 0): the
//! seasonal forecast alone.

/// Time constant of the short intensity, seconds.
pub const SHORT_TAU_S: f64 = 120.0;
/// Time constant of the long intensity, seconds.
pub const LONG_TAU_S: f64 = 900.0;
/// Time constant of the latest intensity, seconds (about one 30 s tick): it tells a
/// burst still arriving from one that has already arrived.
pub const LATEST_TAU_S: f64 = 30.0;

/// Exponentially decayed arrival counts at three time scales.
#[derive(Debug, Clone, Default)]
pub struct RecentArrivals {
    short: f64,
    long: f64,
    latest: f64,
    /// The last interval length and its decay factors, reused while ticks are regular.
    last_dt_s: f64,
    short_decay: f64,
    long_decay: f64,
    latest_decay: f64,
}

impl RecentArrivals {
    /// Counts that have seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `arrivals` counted over the last `dt_s` seconds, after decaying the older
    /// counts by that much.
    pub fn add(&mut self, dt_s: f64, arrivals: u32) {
        if dt_s > 0.0 {
            if dt_s != self.last_dt_s {
                self.last_dt_s = dt_s;
                self.short_decay = libm::exp(-dt_s / SHORT_TAU_S);
                self.long_decay = libm::exp(-dt_s / LONG_TAU_S);
                self.latest_decay = libm::exp(-dt_s / LATEST_TAU_S);
            }
            self.short *= self.short_decay;
            self.long *= self.long_decay;
            self.latest *= self.latest_decay;
        }
        self.short += f64::from(arrivals);
        self.long += f64::from(arrivals);
        self.latest += f64::from(arrivals);
    }

    /// Arrival rate over the last ~30 s, tasks per second.
    pub fn latest_rate_per_s(&self) -> f64 {
        self.latest / LATEST_TAU_S
    }

    /// Recent arrival rates, tasks per second: (over ~2 minutes, over ~15 minutes).
    pub fn rates_per_s(&self) -> (f64, f64) {
        (self.short / SHORT_TAU_S, self.long / LONG_TAU_S)
    }
}

/// Number of features of the window regression.
pub const FEATURES: usize = 4;
/// Windows after which the fitted coefficients replace the prior.
const MIN_WINDOWS: u64 = 500;
/// Windows between two solves of the normal equations.
const SOLVE_EVERY: u64 = 64;
/// Ridge strength pulling θ toward the prior (1, 0, 0).
const RIDGE: f64 = 1.0;

/// Online ridge regression of window arrival counts on the features.
#[derive(Debug, Clone)]
pub struct WindowRegression {
    forgetting: f64,
    /// Σ λ^k x xᵀ and Σ λ^k x y.
    xtx: [[f64; FEATURES]; FEATURES],
    xty: [f64; FEATURES],
    windows: u64,
    theta: [f64; FEATURES],
}

/// The coefficients used before anything is learned: the seasonal forecast alone.
pub const PRIOR: [f64; FEATURES] = [1.0, 0.0, 0.0, 0.0];

impl WindowRegression {
    /// A regression that forgets with factor `forgetting` per window (1 = never).
    pub fn new(forgetting: f64) -> Self {
        Self {
            forgetting,
            xtx: [[0.0; FEATURES]; FEATURES],
            xty: [0.0; FEATURES],
            windows: 0,
            theta: PRIOR,
        }
    }

    /// The coefficients in use.
    pub fn theta(&self) -> [f64; FEATURES] {
        self.theta
    }

    /// Expected count for features `x` (never negative).
    pub fn predict(&self, x: &[f64; FEATURES]) -> f64 {
        let m: f64 = self.theta.iter().zip(x).map(|(t, v)| t * v).sum();
        m.max(0.0)
    }

    /// Learns from one window: features `x`, realised count `y`.
    pub fn learn(&mut self, x: &[f64; FEATURES], y: f64) {
        let l = self.forgetting;
        for i in 0..FEATURES {
            self.xty[i] = l * self.xty[i] + x[i] * y;
            for j in 0..FEATURES {
                self.xtx[i][j] = l * self.xtx[i][j] + x[i] * x[j];
            }
        }
        self.windows += 1;
        if self.windows >= MIN_WINDOWS && self.windows.is_multiple_of(SOLVE_EVERY) {
            let mut a = self.xtx;
            let mut b = self.xty;
            for i in 0..FEATURES {
                a[i][i] += RIDGE;
                b[i] += RIDGE * PRIOR[i];
            }
            if let Some(theta) = solve(a, b) {
                self.theta = theta;
            }
        }
    }
}

/// Solves `a · x = b` by Gaussian elimination with partial pivoting; `None` if `a` is
/// singular.
fn solve(mut a: [[f64; FEATURES]; FEATURES], mut b: [f64; FEATURES]) -> Option<[f64; FEATURES]> {
    for col in 0..FEATURES {
        let pivot = (col..FEATURES).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..FEATURES {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (cell, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *cell -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; FEATURES];
    for row in (0..FEATURES).rev() {
        let s: f64 = (row + 1..FEATURES).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decayed_counts_follow_their_time_constants() {
        let mut r = RecentArrivals::new();
        r.add(0.0, 120);
        // After one short time constant the short count is down to 1/e.
        r.add(SHORT_TAU_S, 0);
        let (short, long) = r.rates_per_s();
        assert!((short * SHORT_TAU_S - 120.0 / std::f64::consts::E).abs() < 1e-9);
        let expect_long = 120.0 * libm::exp(-SHORT_TAU_S / LONG_TAU_S);
        assert!((long * LONG_TAU_S - expect_long).abs() < 1e-9);
        // The latest count has forgotten the burst four time constants later.
        let latest = r.latest_rate_per_s() * LATEST_TAU_S;
        assert!((latest - 120.0 * libm::exp(-SHORT_TAU_S / LATEST_TAU_S)).abs() < 1e-9);
        assert!(latest < 120.0 * 0.02, "{latest}");
    }

    #[test]
    fn solve_recovers_a_known_solution() {
        let a = [
            [4.0, 1.0, 0.0, 0.0],
            [1.0, 3.0, 1.0, 0.0],
            [0.0, 1.0, 2.0, 1.0],
            [0.0, 0.0, 1.0, 5.0],
        ];
        let x = [1.0, -2.0, 3.0, 0.5];
        let b = [4.0 - 2.0, 1.0 - 6.0 + 3.0, -2.0 + 6.0 + 0.5, 3.0 + 2.5];
        let got = solve(a, b).unwrap();
        for i in 0..FEATURES {
            assert!((got[i] - x[i]).abs() < 1e-12, "{got:?}");
        }
        assert_eq!(solve([[0.0; FEATURES]; FEATURES], [1.0; FEATURES]), None);
    }

    #[test]
    fn regression_learns_the_coefficients_of_a_linear_process() {
        let mut reg = WindowRegression::new(1.0);
        assert_eq!(reg.theta(), PRIOR);
        // y = 0.5 s + 2 r1 + 0.25 r2 + 1.5 r3 exactly, on varied features.
        for i in 0..5000u32 {
            let x = [
                1.0 + f64::from(i % 7),
                f64::from(i % 5) * 0.3,
                f64::from(i % 11) * 0.2,
                f64::from(i % 13) * 0.1,
            ];
            let y = 0.5 * x[0] + 2.0 * x[1] + 0.25 * x[2] + 1.5 * x[3];
            reg.learn(&x, y);
        }
        let t = reg.theta();
        assert!((t[0] - 0.5).abs() < 0.01, "{t:?}");
        assert!((t[1] - 2.0).abs() < 0.01, "{t:?}");
        assert!((t[2] - 0.25).abs() < 0.01, "{t:?}");
        assert!((t[3] - 1.5).abs() < 0.01, "{t:?}");
        assert!(reg.predict(&[0.0, -10.0, 0.0, 0.0]) == 0.0);
    }
}
