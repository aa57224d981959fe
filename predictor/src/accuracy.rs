//! Forecast accuracy: how good is a forecast, in numbers an operator can compare.
//!
//! - **MASE** (mean absolute scaled error): the forecast's mean absolute error divided
//!   by the seasonal-naive forecast's ("same time last week") on the same points.
//!   Below 1 the model beats seasonal naive; 1 is no better.
//! - **Pinball loss** at level τ: the loss an upper quantile forecast is judged by;
//!   under-forecasting costs τ per unit, over-forecasting 1 − τ.
//! - **Interval coverage**: the fraction of actual values inside the forecast interval;
//!   for a well-calibrated 90 % interval, about 0.9.
//!
//! The slice functions evaluate a finished series; [`AccuracyTracker`] keeps the same
//! numbers online in O(1) per point, which is how the predictor reports its own
//! accuracy without storing history.

use serde::{Deserialize, Serialize};

/// Mean absolute scaled error of `forecast` against `actual`, scaled by the error of
/// the seasonal-naive forecast `naive` on the same points. `None` when the slices are
/// empty, of different lengths, or the naive forecast makes no error at all.
pub fn mase(actual: &[f64], forecast: &[f64], naive: &[f64]) -> Option<f64> {
    if actual.is_empty() || actual.len() != forecast.len() || actual.len() != naive.len() {
        return None;
    }
    let model: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(a, f)| (a - f).abs())
        .sum();
    let base: f64 = actual.iter().zip(naive).map(|(a, n)| (a - n).abs()).sum();
    (base > 0.0).then(|| model / base)
}

/// Pinball (quantile) loss of one quantile forecast `q` at level `tau` for outcome `y`.
pub fn pinball(y: f64, q: f64, tau: f64) -> f64 {
    if y >= q {
        tau * (y - q)
    } else {
        (1.0 - tau) * (q - y)
    }
}

/// Mean pinball loss over a series. `None` when empty or of different lengths.
pub fn mean_pinball(actual: &[f64], quantile: &[f64], tau: f64) -> Option<f64> {
    if actual.is_empty() || actual.len() != quantile.len() {
        return None;
    }
    let sum: f64 = actual
        .iter()
        .zip(quantile)
        .map(|(y, q)| pinball(*y, *q, tau))
        .sum();
    Some(sum / actual.len() as f64)
}

/// Fraction of `actual` values inside `[lower, upper]` (both ends included). `None`
/// when empty or of different lengths.
pub fn interval_coverage(actual: &[f64], lower: &[f64], upper: &[f64]) -> Option<f64> {
    if actual.is_empty() || actual.len() != lower.len() || actual.len() != upper.len() {
        return None;
    }
    let inside = actual
        .iter()
        .zip(lower.iter().zip(upper))
        .filter(|(y, (lo, hi))| *lo <= *y && *y <= *hi)
        .count();
    Some(inside as f64 / actual.len() as f64)
}

/// Online accumulator of MASE, pinball loss and interval coverage.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccuracyTracker {
    points: u64,
    abs_error: f64,
    naive_abs_error: f64,
    pinball_sum: f64,
    covered: u64,
}

/// What an [`AccuracyTracker`] has measured so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// Points evaluated.
    pub points: u64,
    /// Mean absolute error of the point forecast.
    pub mae: f64,
    /// MASE against seasonal naive; `None` while naive has made no error.
    pub mase: Option<f64>,
    /// Mean pinball loss of the upper quantile.
    pub pinball: f64,
    /// Fraction of points inside the forecast interval.
    pub coverage: f64,
}

impl AccuracyTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one point: the outcome `actual`, the point forecast `mean`, the
    /// seasonal-naive forecast `naive`, the interval `[lower, upper]` and the upper
    /// quantile's level `tau` (the pinball loss is taken on `upper`).
    pub fn record(&mut self, actual: f64, mean: f64, naive: f64, lower: f64, upper: f64, tau: f64) {
        self.points += 1;
        self.abs_error += (actual - mean).abs();
        self.naive_abs_error += (actual - naive).abs();
        self.pinball_sum += pinball(actual, upper, tau);
        if lower <= actual && actual <= upper {
            self.covered += 1;
        }
    }

    /// The numbers so far; `None` before the first point.
    pub fn report(&self) -> Option<AccuracyReport> {
        if self.points == 0 {
            return None;
        }
        let n = self.points as f64;
        Some(AccuracyReport {
            points: self.points,
            mae: self.abs_error / n,
            mase: (self.naive_abs_error > 0.0).then(|| self.abs_error / self.naive_abs_error),
            pinball: self.pinball_sum / n,
            coverage: self.covered as f64 / n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mase_is_model_error_over_naive_error() {
        // Model errors: |3-2| + |5-5| + |4-6| = 3. Naive errors: |3-1| + |5-2| + |4-4| = 5.
        let m = mase(&[3.0, 5.0, 4.0], &[2.0, 5.0, 6.0], &[1.0, 2.0, 4.0]).unwrap();
        assert!((m - 0.6).abs() < 1e-12, "{m}");
        assert_eq!(mase(&[1.0], &[1.0], &[1.0]), None);
        assert_eq!(mase(&[], &[], &[]), None);
        assert_eq!(mase(&[1.0], &[1.0, 2.0], &[1.0]), None);
    }

    #[test]
    fn pinball_charges_tau_below_and_one_minus_tau_above() {
        // Outcome 10 above quantile 8 at τ = 0.9: 0.9 × 2 = 1.8.
        assert!((pinball(10.0, 8.0, 0.9) - 1.8).abs() < 1e-12);
        // Outcome 6 below quantile 8: 0.1 × 2 = 0.2.
        assert!((pinball(6.0, 8.0, 0.9) - 0.2).abs() < 1e-12);
        assert_eq!(pinball(8.0, 8.0, 0.9), 0.0);
        // Mean of 1.8, 0.2 and 0: 2/3.
        let m = mean_pinball(&[10.0, 6.0, 8.0], &[8.0, 8.0, 8.0], 0.9).unwrap();
        assert!((m - 2.0 / 3.0).abs() < 1e-12, "{m}");
    }

    #[test]
    fn coverage_counts_points_inside_including_the_ends() {
        let c = interval_coverage(
            &[1.0, 5.0, 9.0, 3.0],
            &[0.0, 5.0, 0.0, 4.0],
            &[2.0, 6.0, 8.0, 7.0],
        )
        .unwrap();
        assert_eq!(c, 0.5);
    }

    #[test]
    fn tracker_agrees_with_the_slice_functions() {
        let actual = [3.0, 5.0, 4.0, 10.0];
        let mean = [2.0, 5.0, 6.0, 7.0];
        let naive = [1.0, 2.0, 4.0, 4.0];
        let lower = [1.0, 4.0, 3.0, 5.0];
        let upper = [4.0, 6.0, 8.0, 9.0];
        let mut t = AccuracyTracker::new();
        assert!(t.report().is_none());
        for i in 0..4 {
            t.record(actual[i], mean[i], naive[i], lower[i], upper[i], 0.9);
        }
        let r = t.report().unwrap();
        assert_eq!(r.points, 4);
        // Model |e| = 1+0+2+3 = 6, naive |e| = 2+3+0+6 = 11.
        assert!((r.mase.unwrap() - 6.0 / 11.0).abs() < 1e-12);
        assert_eq!(r.mase, mase(&actual, &mean, &naive));
        assert!((r.mae - 1.5).abs() < 1e-12);
        // Only the last point (10 above 9) is outside.
        assert_eq!(r.coverage, 0.75);
        assert_eq!(Some(r.coverage), interval_coverage(&actual, &lower, &upper));
        // Pinball: 0.1×1 + 0.1×1 + 0.1×4 + 0.9×1 = 1.5, mean 0.375.
        assert!((r.pinball - 0.375).abs() < 1e-12, "{}", r.pinball);
    }
}
