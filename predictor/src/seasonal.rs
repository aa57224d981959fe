//! Arrival-rate forecasting with daily and weekly seasonality.
//!
//! Arrivals are counted in fixed buckets (default 15 minutes, aligned to the Unix
//! epoch, so bucket positions are UTC times of day and days of week). The model is a
//! multiplicative double-seasonal Holt-Winters without trend (Taylor, 2003):
//!
//! ```text
//! forecast(b)  = level · daily[b mod D] · weekly[b mod W]
//! level'       = α · y / (daily · weekly)        + (1 − α) · level
//! daily'       = δ · y / (level' · weekly)       + (1 − δ) · daily
//! weekly'      = ω · y / (level' · daily')       + (1 − ω) · weekly
//! ```
//!
//! with D buckets per day and W per week. `weekly` holds what is left after the daily
//! profile (weekday against weekend). Both profiles are renormalised to mean 1 once per
//! period, the scale moving into `level`, so they cannot drift.
//!
//! While history is short the model is not trusted: during the first `warmup_weeks`
//! it forecasts **seasonal naive** (the same bucket one week ago, or one day ago in the
//! first week, or the mean so far in the first day). The model is initialised from the
//! first full week (level = weekly mean, daily profile = mean per time of day, weekly
//! profile = mean per day of week) and then updated every bucket.
//!
//! Bursty queues would drag the level and profiles around, so the value the model
//! learns from is capped at `forecast + 5 σ` (σ² = dispersion · forecast); the
//! dispersion itself is learned from the raw values. Forecast accuracy (MASE against
//! seasonal naive, pinball loss and coverage of the 5–95 % interval) is tracked on each
//! closed bucket once the model is in use.
//!
//! All state is fixed-size after construction; a sample costs O(1) amortised.

use capstan_core::Timestamp;

use crate::accuracy::{AccuracyReport, AccuracyTracker};
use crate::sizing::{Basis, CountQuantiles};

/// Seconds in a day.
const DAY_S: u32 = 86_400;
/// Days in a week.
const WEEK_DAYS: usize = 7;
/// Lowest value a profile entry may take (relative to a mean of 1): a time of day that
/// has been quiet so far still forecasts a little, and divisions stay finite.
const MIN_INDEX: f64 = 0.02;
/// Highest value a profile entry may take.
const MAX_INDEX: f64 = 50.0;
/// Learning rate of the per-bucket dispersion.
const DISPERSION_RATE: f64 = 0.01;
/// Cap on learned values, in standard deviations above the forecast.
const WINSOR_SIGMAS: f64 = 5.0;

/// Settings of the seasonal model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeasonalConfig {
    /// Bucket width in seconds; must divide a day.
    pub bucket_s: u32,
    /// Level smoothing α.
    pub alpha: f64,
    /// Daily-profile smoothing δ.
    pub delta: f64,
    /// Weekly-profile smoothing ω.
    pub omega: f64,
    /// Weeks of history before the model replaces seasonal naive (at least 1).
    pub warmup_weeks: u32,
}

impl Default for SeasonalConfig {
    fn default() -> Self {
        Self {
            bucket_s: 900,
            alpha: 0.02,
            delta: 0.05,
            omega: 0.05,
            warmup_weeks: 2,
        }
    }
}

/// Why a seasonal configuration is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SeasonalConfigError {
    /// The bucket width is zero or does not divide a day.
    #[error("bucket_s: must divide 86400 (a day) evenly, got {0}")]
    Bucket(u32),
    /// A smoothing factor is outside (0, 1].
    #[error("{name}: must be in (0, 1], got {value}")]
    Smoothing {
        /// Which factor.
        name: &'static str,
        /// Its value.
        value: f64,
    },
}

impl SeasonalConfig {
    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<(), SeasonalConfigError> {
        if self.bucket_s == 0 || !DAY_S.is_multiple_of(self.bucket_s) {
            return Err(SeasonalConfigError::Bucket(self.bucket_s));
        }
        for (name, value) in [
            ("alpha", self.alpha),
            ("delta", self.delta),
            ("omega", self.omega),
        ] {
            if value.is_nan() || value <= 0.0 || value > 1.0 {
                return Err(SeasonalConfigError::Smoothing { name, value });
            }
        }
        Ok(())
    }
}

/// The double-seasonal arrival-rate model of one pool.
#[derive(Debug, Clone)]
pub struct SeasonalRate {
    cfg: SeasonalConfig,
    bucket_ms: i64,
    /// Buckets per day and per week.
    d_len: usize,
    w_len: usize,
    /// The bucket being filled and its count so far.
    current: Option<i64>,
    current_count: f64,
    /// Closed buckets' counts by week position: `history[b mod W]` is the latest
    /// closed bucket with that position.
    history: Vec<f64>,
    closed: u64,
    closed_sum: f64,
    model: Option<Model>,
    /// Variance-to-mean ratio of bucket counts around the forecast.
    dispersion: f64,
    accuracy: AccuracyTracker,
    quantiles: CountQuantiles,
    /// Bumped whenever `add` changes what a bucket's forecast depends on (the bucket
    /// being filled, the closed buckets, the model), and the last two bucket forecasts
    /// with the generation they were made in: the predictor asks for the same bucket
    /// several times a tick.
    generation: u64,
    bucket_memo: [Option<(i64, u64, f64)>; 2],
    memo_next: usize,
    /// The start (ms) and index of the last bucket `bucket_index` found.
    last_bucket: Option<(i64, i64)>,
}

#[derive(Debug, Clone)]
struct Model {
    level: f64,
    daily: Vec<f64>,
    weekly: Vec<f64>,
}

impl Model {
    fn forecast(&self, b: i64, d_len: usize, w_len: usize) -> f64 {
        self.level * self.daily[pos(b, d_len)] * self.weekly[pos(b, w_len)]
    }
}

fn pos(b: i64, len: usize) -> usize {
    b.rem_euclid(len as i64) as usize
}

impl SeasonalRate {
    /// An empty model. Fails on settings [`SeasonalConfig::validate`] rejects.
    pub fn new(cfg: SeasonalConfig) -> Result<Self, SeasonalConfigError> {
        cfg.validate()?;
        let d_len = (DAY_S / cfg.bucket_s) as usize;
        let w_len = d_len * WEEK_DAYS;
        Ok(Self {
            cfg,
            bucket_ms: i64::from(cfg.bucket_s) * 1000,
            d_len,
            w_len,
            current: None,
            current_count: 0.0,
            history: vec![0.0; w_len],
            closed: 0,
            closed_sum: 0.0,
            model: None,
            dispersion: 1.0,
            accuracy: AccuracyTracker::new(),
            quantiles: CountQuantiles::new(),
            generation: 0,
            bucket_memo: [None; 2],
            memo_next: 0,
            last_bucket: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &SeasonalConfig {
        &self.cfg
    }

    fn bucket_of(&self, t: Timestamp) -> i64 {
        t.unix_ms().div_euclid(self.bucket_ms)
    }

    /// Adds `arrivals` counted over an interval ending at `at`. Intervals must come in
    /// time order; the count goes to the bucket holding the instant just before `at`.
    pub fn add(&mut self, at: Timestamp, arrivals: u32) {
        let b = self.bucket_index(at.unix_ms() - 1);
        if self.current != Some(b) {
            self.generation += 1;
        }
        let cur = *self.current.get_or_insert(b);
        if b > cur {
            self.close(cur, self.current_count);
            // Buckets with no sample at all count as empty, up to a week of them.
            let gap = (b - cur - 1).min(self.w_len as i64);
            for skipped in (b - gap)..b {
                self.close(skipped, 0.0);
            }
            self.current = Some(b);
            self.current_count = 0.0;
        }
        self.current_count += f64::from(arrivals);
    }

    fn in_use(&self) -> bool {
        self.model.is_some() && self.closed >= u64::from(self.cfg.warmup_weeks) * self.w_len as u64
    }

    /// Seasonal naive forecast for bucket `b` (not yet closed), if history allows.
    fn naive(&self, b: i64) -> Option<f64> {
        let last = self.current.map_or(b - 1, |c| c - 1).min(b - 1);
        if self.closed >= self.w_len as u64 {
            // The latest closed bucket at b's week position.
            Some(self.history[pos(b, self.w_len)])
        } else if self.closed >= self.d_len as u64 {
            let d = self.d_len as i64;
            let k = (b - last + d - 1) / d;
            Some(self.history[pos(b - k.max(1) * d, self.w_len)])
        } else {
            None
        }
    }

    /// Expected arrivals in bucket `b` (the current one or a later one).
    pub fn bucket_forecast(&self, b: i64) -> f64 {
        if self.in_use()
            && let Some(m) = &self.model
        {
            return m.forecast(b, self.d_len, self.w_len);
        }
        if let Some(n) = self.naive(b) {
            return n;
        }
        if self.closed > 0 {
            self.closed_sum / self.closed as f64
        } else {
            0.0
        }
    }

    /// Expected arrivals in `[from, to)`, prorating partly covered buckets.
    pub fn expected_arrivals(&self, from: Timestamp, to: Timestamp) -> f64 {
        let (from, to) = (from.unix_ms(), to.unix_ms());
        if to <= from {
            return 0.0;
        }
        let mut total = 0.0;
        let mut b = from.div_euclid(self.bucket_ms);
        loop {
            let start = b * self.bucket_ms;
            let end = start + self.bucket_ms;
            let covered = (end.min(to) - start.max(from)) as f64 / self.bucket_ms as f64;
            total += self.bucket_forecast(b) * covered;
            if end >= to {
                return total;
            }
            b += 1;
        }
    }

    /// `t_ms.div_euclid(bucket_ms)`, remembering the last bucket's span: the predictor
    /// asks about the same bucket several times a tick.
    fn bucket_index(&mut self, t_ms: i64) -> i64 {
        if let Some((start, b)) = self.last_bucket
            && (start..start.saturating_add(self.bucket_ms)).contains(&t_ms)
        {
            return b;
        }
        let b = t_ms.div_euclid(self.bucket_ms);
        self.last_bucket = b.checked_mul(self.bucket_ms).map(|start| (start, b));
        b
    }

    /// [`SeasonalRate::bucket_forecast`], remembered for the last two buckets asked
    /// until `add` changes what it depends on.
    fn bucket_forecast_memo(&mut self, b: i64) -> f64 {
        for &(mb, generation, v) in self.bucket_memo.iter().flatten() {
            if mb == b && generation == self.generation {
                return v;
            }
        }
        let v = self.bucket_forecast(b);
        self.bucket_memo[self.memo_next] = Some((b, self.generation, v));
        self.memo_next ^= 1;
        v
    }

    /// [`SeasonalRate::expected_arrivals`] through the bucket memo (the same sum).
    pub fn expected_arrivals_memo(&mut self, from: Timestamp, to: Timestamp) -> f64 {
        let (from, to) = (from.unix_ms(), to.unix_ms());
        if to <= from {
            return 0.0;
        }
        let mut total = 0.0;
        let mut b = self.bucket_index(from);
        loop {
            let start = b * self.bucket_ms;
            let end = start + self.bucket_ms;
            let covered = (end.min(to) - start.max(from)) as f64 / self.bucket_ms as f64;
            total += self.bucket_forecast_memo(b) * covered;
            if end >= to {
                return total;
            }
            b += 1;
        }
    }

    /// `(expected_arrivals(from, to_a), expected_arrivals(from, to_b))` in one walk
    /// over the buckets (each bucket's forecast computed once), the same sums to the
    /// bit.
    pub fn expected_arrivals_pair(
        &mut self,
        from: Timestamp,
        to_a: Timestamp,
        to_b: Timestamp,
    ) -> (f64, f64) {
        let (from, to_a, to_b) = (from.unix_ms(), to_a.unix_ms(), to_b.unix_ms());
        let (mut open_a, mut open_b) = (to_a > from, to_b > from);
        let (mut total_a, mut total_b) = (0.0, 0.0);
        let mut b = self.bucket_index(from);
        while open_a || open_b {
            let start = b * self.bucket_ms;
            let end = start + self.bucket_ms;
            let forecast = self.bucket_forecast_memo(b);
            for (open, to, total) in [
                (&mut open_a, to_a, &mut total_a),
                (&mut open_b, to_b, &mut total_b),
            ] {
                if *open {
                    let covered = (end.min(to) - start.max(from)) as f64 / self.bucket_ms as f64;
                    *total += forecast * covered;
                    if end >= to {
                        *open = false;
                    }
                }
            }
            b += 1;
        }
        (total_a, total_b)
    }

    /// Expected arrival rate at `at`, tasks per second.
    pub fn rate_per_s(&self, at: Timestamp) -> f64 {
        self.bucket_forecast(self.bucket_of(at)) / f64::from(self.cfg.bucket_s)
    }

    /// [`SeasonalRate::rate_per_s`], from the bucket forecasts remembered for the tick.
    pub fn rate_per_s_memo(&mut self, at: Timestamp) -> f64 {
        let b = self.bucket_index(at.unix_ms());
        self.bucket_forecast_memo(b) / f64::from(self.cfg.bucket_s)
    }

    /// Variance-to-mean ratio of bucket counts around the forecast (1 = Poisson).
    pub fn dispersion(&self) -> f64 {
        self.dispersion.max(1.0)
    }

    /// Whether the Holt-Winters model (rather than seasonal naive) makes the forecasts.
    pub fn model_in_use(&self) -> bool {
        self.in_use()
    }

    /// Accuracy of the model's one-bucket-ahead forecasts since it came into use.
    pub fn accuracy(&self) -> Option<AccuracyReport> {
        self.accuracy.report()
    }

    /// The daily profile (mean 1), once the model is initialised: entry `i` is the
    /// relative arrival rate in the `i`-th bucket of a UTC day.
    pub fn daily_profile(&self) -> Option<&[f64]> {
        self.model.as_ref().map(|m| m.daily.as_slice())
    }

    /// The weekly profile (mean 1) on top of the daily one, once initialised, indexed
    /// by bucket position within the epoch-aligned week (the week starts on a
    /// Thursday, like the Unix epoch).
    pub fn weekly_profile(&self) -> Option<&[f64]> {
        self.model.as_ref().map(|m| m.weekly.as_slice())
    }

    fn close(&mut self, b: i64, y: f64) {
        let forecast = self.bucket_forecast(b);
        let naive = self.naive(b);
        if self.in_use() {
            let phi = self.dispersion();
            let lower = f64::from(lower_quantile(forecast, phi));
            let upper = f64::from(
                self.quantiles
                    .spare_slots(forecast, phi, 0.95, Basis::Windows),
            );
            self.accuracy
                .record(y, forecast, naive.unwrap_or(forecast), lower, upper, 0.95);
        }
        if self.model.is_some() {
            let f = forecast.max(1e-3);
            let z = (y - f) * (y - f) / f;
            // Kept unclamped below (clamping each step would bias the average).
            self.dispersion =
                ((1.0 - DISPERSION_RATE) * self.dispersion + DISPERSION_RATE * z).min(1e4);
            let cap = f + WINSOR_SIGMAS * libm::sqrt(self.dispersion() * f.max(1.0));
            self.update(b, y.min(cap));
        }
        self.history[pos(b, self.w_len)] = y;
        self.closed += 1;
        self.closed_sum += y;
        if self.model.is_none() && self.closed >= self.w_len as u64 {
            self.model = self.initial_model();
        }
        let w_len = self.w_len as i64;
        if let Some(m) = &mut self.model {
            if pos(b, self.d_len) == self.d_len - 1 {
                renormalise(&mut m.daily, &mut m.level);
            }
            if b.rem_euclid(w_len) == w_len - 1 {
                renormalise(&mut m.weekly, &mut m.level);
            }
        }
    }

    fn update(&mut self, b: i64, y: f64) {
        let (pd, pw) = (pos(b, self.d_len), pos(b, self.w_len));
        let (a, d, o) = (self.cfg.alpha, self.cfg.delta, self.cfg.omega);
        let Some(m) = &mut self.model else { return };
        let (di, wi) = (m.daily[pd], m.weekly[pw]);
        let level = (a * y / (di * wi) + (1.0 - a) * m.level).max(1e-6);
        let daily = (d * y / (level * wi) + (1.0 - d) * di).clamp(MIN_INDEX, MAX_INDEX);
        let weekly = (o * y / (level * daily) + (1.0 - o) * wi).clamp(MIN_INDEX, MAX_INDEX);
        m.level = level;
        m.daily[pd] = daily;
        m.weekly[pw] = weekly;
    }

    /// The model fitted to the first full week in `history`; none if it held no
    /// arrivals (nothing to learn a shape from yet).
    fn initial_model(&self) -> Option<Model> {
        let mean = self.history.iter().sum::<f64>() / self.w_len as f64;
        if mean <= 0.0 {
            return None;
        }
        let mut daily = vec![0.0; self.d_len];
        for (i, y) in self.history.iter().enumerate() {
            daily[i % self.d_len] += y / WEEK_DAYS as f64;
        }
        for v in &mut daily {
            *v = (*v / mean).clamp(MIN_INDEX, MAX_INDEX);
        }
        let mut weekly = vec![0.0; self.w_len];
        for day in 0..WEEK_DAYS {
            let range = day * self.d_len..(day + 1) * self.d_len;
            let day_mean = self.history[range.clone()].iter().sum::<f64>() / self.d_len as f64;
            for v in &mut weekly[range] {
                *v = (day_mean / mean).clamp(MIN_INDEX, MAX_INDEX);
            }
        }
        let mut level = mean;
        renormalise(&mut daily, &mut level);
        renormalise(&mut weekly, &mut level);
        Some(Model {
            level,
            daily,
            weekly,
        })
    }
}

/// Scales `profile` to mean 1, moving the factor into `level`.
fn renormalise(profile: &mut [f64], level: &mut f64) {
    let mean = profile.iter().sum::<f64>() / profile.len() as f64;
    if mean > 0.0 {
        for v in profile.iter_mut() {
            *v /= mean;
        }
        *level *= mean;
    }
}

/// The 5 % quantile of a count with this mean and dispersion (normal approximation,
/// which is all an interval's lower end needs).
fn lower_quantile(mean: f64, dispersion: f64) -> u32 {
    let q = mean - 1.645 * libm::sqrt(dispersion * mean);
    if q <= 0.0 { 0 } else { q.floor() as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(h: i64) -> Timestamp {
        Timestamp::from_unix_secs(h * 3600)
    }

    #[test]
    fn rejects_a_bucket_that_does_not_divide_a_day() {
        let err = SeasonalRate::new(SeasonalConfig {
            bucket_s: 7000,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "bucket_s: must divide 86400 (a day) evenly, got 7000"
        );
        let err = SeasonalRate::new(SeasonalConfig {
            alpha: 0.0,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("alpha:"), "{err}");
    }

    #[test]
    fn falls_back_to_mean_then_daily_then_weekly_naive() {
        let cfg = SeasonalConfig {
            bucket_s: 3600,
            ..Default::default()
        };
        let mut m = SeasonalRate::new(cfg).unwrap();
        assert_eq!(m.bucket_forecast(0), 0.0);
        // Hour h of the first day gets h arrivals, sampled at the end of each hour.
        for h in 0..24 {
            m.add(hour(h + 1), h as u32);
        }
        // Still inside the first day (hour 23 is open): mean of closed hours 0..=22.
        assert_eq!(m.bucket_forecast(23), (0..23).sum::<i64>() as f64 / 23.0);
        m.add(hour(25), 100);
        // A day of history: hour 24 + 5 is forecast as hour 5 of the first day.
        assert_eq!(m.bucket_forecast(24 + 5), 5.0);
        assert!(!m.model_in_use());
    }

    #[test]
    fn the_pair_of_windows_sums_as_each_window_alone() {
        let mut s = SeasonalRate::new(SeasonalConfig::default()).unwrap();
        for h in 0..400 {
            s.add(hour(h), (h * 37 % 11) as u32);
        }
        let from = Timestamp::from_unix_ms(hour(400).unix_ms() + 123_456);
        for (a, b) in [
            (0, 0),
            (1, 150_000),
            (120_000, 150_000),
            (900_000, 30),
            (5_000_000, 2_700_001),
        ] {
            let (ta, tb) = (
                Timestamp::from_unix_ms(from.unix_ms() + a),
                Timestamp::from_unix_ms(from.unix_ms() + b),
            );
            let pair = s.expected_arrivals_pair(from, ta, tb);
            assert_eq!(
                pair.0.to_bits(),
                s.expected_arrivals(from, ta).to_bits(),
                "{a}"
            );
            assert_eq!(
                pair.1.to_bits(),
                s.expected_arrivals(from, tb).to_bits(),
                "{b}"
            );
        }
        assert!(s.expected_arrivals_pair(from, from, hour(410)).1 > 0.0);
    }

    #[test]
    fn the_remembered_bucket_is_the_division() {
        let mut s = SeasonalRate::new(SeasonalConfig::default()).unwrap();
        for t in [
            0,
            1,
            899_999,
            900_000,
            899_999,
            -1,
            -900_000,
            -900_001,
            1_700_000_000_000,
            1_700_000_000_001,
            i64::MAX,
            i64::MAX - 1,
            i64::MIN,
            i64::MIN + 1,
            5,
        ] {
            assert_eq!(s.bucket_index(t), t.div_euclid(900_000), "{t}");
        }
    }

    #[test]
    fn the_bucket_memo_follows_every_add() {
        // Ask through the memo before and after each add (which may fill, close or
        // skip buckets, and starts the model after a week): always the fresh answer.
        let mut s = SeasonalRate::new(SeasonalConfig::default()).unwrap();
        let mut checked = 0;
        for step in 0..30_000i64 {
            let at = Timestamp::from_unix_secs(1_000_000 + step * 97 + (step / 500) * 3_000);
            let to = Timestamp::from_unix_ms(at.unix_ms() + 150_000);
            let fresh = s.expected_arrivals(at, to);
            assert_eq!(
                s.expected_arrivals_memo(at, to).to_bits(),
                fresh.to_bits(),
                "{step}"
            );
            s.add(at, ((step * 31) % 7) as u32);
            let fresh = s.expected_arrivals(at, to);
            assert_eq!(
                s.expected_arrivals_memo(at, to).to_bits(),
                fresh.to_bits(),
                "{step}"
            );
            checked += usize::from(fresh > 0.0);
        }
        assert!(s.model_in_use());
        assert!(checked > 20_000, "{checked}");
    }

    #[test]
    fn expected_arrivals_prorates_partial_buckets() {
        let cfg = SeasonalConfig {
            bucket_s: 3600,
            ..Default::default()
        };
        let mut m = SeasonalRate::new(cfg).unwrap();
        for h in 0..2 {
            m.add(hour(h + 1), 10);
        }
        m.add(hour(2).plus_secs(60), 0);
        // Mean so far: 10 per hour. Half an hour ahead: 5.
        let from = hour(3);
        let e = m.expected_arrivals(from, from.plus_secs(1800));
        assert!((e - 5.0).abs() < 1e-9, "{e}");
        // Across a bucket boundary.
        let e = m.expected_arrivals(from.plus_secs(3000), from.plus_secs(4200));
        assert!((e - 10.0 * 1200.0 / 3600.0).abs() < 1e-9, "{e}");
    }
}
