//! Bursts as their own model: compound arrivals.
//!
//! Queues fill in two ways: a background of independent arrivals (one push, one job),
//! and clusters (a pipeline fanning out, a batch submission, a merge train) that bring
//! tens or hundreds of tasks at once. Modelling both as one over-dispersed count
//! inflates the spare of every quiet window for the sake of rare bursts; ignoring the
//! clusters leaves every burst to the reactive backlog. So the arrivals of a look-ahead
//! window are modelled as
//!
//! ```text
//! A = Poisson(background) + Σ_{i=1}^{N} S_i + R,   N ~ Poisson(cluster rate × window)
//! ```
//!
//! with cluster sizes `S_i` drawn from the pool's own recent clusters and `R` the rest
//! of a cluster that is arriving right now (`S − seen`, given `S ≥ seen`). Its
//! distribution is computed exactly with Panjer's recursion for the compound Poisson
//! part, convolved with `R`.
//!
//! **Which samples are a cluster.** A queue sample whose arrivals exceed the
//! [`DETECTION_LEVEL`] quantile of a Poisson count with the seasonal model's expected
//! arrivals for the sample is bursty; consecutive bursty samples are one cluster, and its
//! size is their arrivals. At 99.9 % a Poisson background raises a false cluster about
//! once in a thousand samples (eight hours of 30 s samples), so clusters are what the
//! background cannot explain, at any rate: one extra task in a quiet hour, forty in a
//! busy one.
//!
//! **Memory.** The last [`CLUSTER_MEMORY`] cluster sizes make the size distribution (256
//! sizes put a dozen above its 95 % quantile), re-read at most once a day of samples,
//! since habits that make clusters change slowly; the cluster rate is a count faded
//! over a week, the seasonal model's own period.

use crate::sizing::{self, Basis, Walk};

/// Quantile of the background's Poisson count above which a sample is bursty.
pub const DETECTION_LEVEL: f64 = 0.999;
/// Cluster sizes remembered.
pub const CLUSTER_MEMORY: usize = 256;
/// Time constant of the faded cluster rate, seconds (a week).
pub const RATE_TAU_S: f64 = 7.0 * 86_400.0;
/// Seconds between two re-reads of the size distribution (a day).
const REFRESH_S: f64 = 86_400.0;
/// Above this many expected clusters-or-arrivals per window the count is sized by a
/// negative binomial with the compound distribution's mean and variance (the exact
/// recursion's first term would underflow, and the normal limit is accurate there).
const EXACT_MAX_RATE: f64 = 500.0;
/// Slots of the memo table.
const MEMO_SLOTS: usize = 4096;

/// The clusters of one pool's arrivals: detection, size distribution, rate.
#[derive(Debug, Clone)]
pub struct Clusters {
    /// Ring of the latest cluster sizes.
    ring: Vec<u32>,
    ring_head: usize,
    /// The size distribution in use: (size, probability), sizes ascending.
    sizes: Vec<(u32, f64)>,
    mean_size: f64,
    /// Bumped whenever `sizes` changes (keys the memo).
    version: u64,
    /// Clusters closed since `sizes` was last read, and seconds since then.
    pending_clusters: u32,
    since_refresh_s: f64,
    /// Arrivals of the cluster in progress (0: none).
    open: u32,
    /// Faded cluster count and faded time, for the rate.
    faded_clusters: f64,
    faded_time_s: f64,
    last_dt_s: f64,
    decay: f64,
    memo: Vec<Option<(MemoKey, u32)>>,
    /// The last answer of [`Clusters::spare`]: consecutive ticks mostly ask the same,
    /// often with the very same inputs.
    last: Option<(MemoKey, u32)>,
    last_raw: Option<(RawKey, u32)>,
    /// The last mean the detection's quantile was taken for, and the quantile.
    detection_memo: Option<(u64, u32)>,
}

/// The inputs of one [`Clusters::spare`] question, bit for bit, and the state it read.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RawKey {
    inputs: [u64; 4],
    basis: Basis,
    version: u64,
    open: u32,
}

/// What a memoised spare depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MemoKey {
    background: u64,
    clusters: u64,
    open: u32,
    version: u64,
    level: u64,
    thin: u64,
    basis: Basis,
}

impl Default for Clusters {
    fn default() -> Self {
        Self::new()
    }
}

impl Clusters {
    /// A model that has seen nothing: no clusters, so windows are plain Poisson.
    pub fn new() -> Self {
        Self {
            ring: Vec::with_capacity(CLUSTER_MEMORY),
            ring_head: 0,
            sizes: Vec::new(),
            mean_size: 0.0,
            version: 0,
            pending_clusters: 0,
            since_refresh_s: 0.0,
            open: 0,
            faded_clusters: 0.0,
            faded_time_s: 0.0,
            last_dt_s: 0.0,
            decay: 1.0,
            memo: vec![None; MEMO_SLOTS],
            last: None,
            last_raw: None,
            detection_memo: None,
        }
    }

    /// Takes one sample: `arrivals` over the last `dt_s` seconds, when the background
    /// was expected to bring `expected`.
    pub fn observe(&mut self, dt_s: f64, arrivals: u32, expected: f64) {
        if dt_s > 0.0 {
            if dt_s != self.last_dt_s {
                self.last_dt_s = dt_s;
                self.decay = libm::exp(-dt_s / RATE_TAU_S);
            }
            self.faded_clusters *= self.decay;
            self.faded_time_s = self.faded_time_s * self.decay + dt_s;
            self.since_refresh_s += dt_s;
        }
        if arrivals > 0 && arrivals > self.detection_quantile(expected.max(0.0)) {
            self.open = self.open.saturating_add(arrivals);
        } else if self.open > 0 {
            self.close();
        }
        if self.pending_clusters > 0 && (self.since_refresh_s >= REFRESH_S || self.sizes.is_empty())
        {
            self.refresh();
        }
    }

    /// `poisson_upper(mean, DETECTION_LEVEL)`, remembered for the last mean: the
    /// background's expected arrivals per sample stay put within a seasonal bucket.
    fn detection_quantile(&mut self, mean: f64) -> u32 {
        match self.detection_memo {
            Some((m, k)) if m == mean.to_bits() => k,
            _ => {
                let k = poisson_upper(mean, DETECTION_LEVEL);
                self.detection_memo = Some((mean.to_bits(), k));
                k
            }
        }
    }

    fn close(&mut self) {
        let size = std::mem::take(&mut self.open);
        if self.ring.len() < CLUSTER_MEMORY {
            self.ring.push(size);
        } else {
            self.ring[self.ring_head] = size;
            self.ring_head = (self.ring_head + 1) % CLUSTER_MEMORY;
        }
        self.faded_clusters += 1.0;
        self.pending_clusters += 1;
    }

    fn refresh(&mut self) {
        let mut sorted = self.ring.clone();
        sorted.sort_unstable();
        let n = sorted.len() as f64;
        self.sizes.clear();
        for s in sorted {
            match self.sizes.last_mut() {
                Some((size, p)) if *size == s => *p += 1.0 / n,
                _ => self.sizes.push((s, 1.0 / n)),
            }
        }
        self.mean_size = self.sizes.iter().map(|(s, p)| f64::from(*s) * p).sum();
        self.version += 1;
        self.pending_clusters = 0;
        self.since_refresh_s = 0.0;
    }

    /// Clusters per second, faded over a week (0 before the first).
    pub fn rate_per_s(&self) -> f64 {
        if self.faded_time_s > 0.0 && !self.sizes.is_empty() {
            self.faded_clusters / self.faded_time_s
        } else {
            0.0
        }
    }

    /// Mean size of the clusters in the distribution in use (0 before the first).
    pub fn mean_size(&self) -> f64 {
        self.mean_size
    }

    /// Arrivals of the cluster in progress (0 when the latest sample was not bursty).
    pub fn open(&self) -> u32 {
        self.open
    }

    /// The size distribution in use: (size, probability), ascending.
    pub fn sizes(&self) -> &[(u32, f64)] {
        &self.sizes
    }

    /// Spare slots that cover a window's arrivals at `level` on `basis`: a Poisson
    /// background with mean `background`, `clusters` new clusters expected, and the rest
    /// of the open cluster. Memoised on the means rounded up (about 1.1 % apart), so
    /// the answer is never below the exact one.
    pub fn spare(
        &mut self,
        background: f64,
        clusters: f64,
        thin: f64,
        level: f64,
        basis: Basis,
    ) -> u32 {
        if level.is_nan() || level <= 0.0 {
            return 0;
        }
        // The same question as last time (the window's mean stays put while its ends
        // are in the same seasonal buckets): the same answer, before any rounding.
        let raw = RawKey {
            inputs: [
                background.to_bits(),
                clusters.to_bits(),
                thin.to_bits(),
                level.to_bits(),
            ],
            basis,
            version: self.version,
            open: self.open,
        };
        if let Some((k, v)) = self.last_raw
            && k == raw
        {
            return v;
        }
        let v = self.spare_keyed(background, clusters, thin, level, basis);
        self.last_raw = Some((raw, v));
        v
    }

    /// [`Clusters::spare`] past its check of the last question.
    fn spare_keyed(
        &mut self,
        background: f64,
        clusters: f64,
        thin: f64,
        level: f64,
        basis: Basis,
    ) -> u32 {
        // Thinning rounded up to 1/64 (never below the exact answer's).
        let thin = if thin.is_finite() {
            crate::ceil(thin.clamp(0.0, 1.0) * 64.0) / 64.0
        } else {
            1.0
        };
        let level = level.min(1.0 - 1e-9);
        let (bk, bg) = round_up(background);
        let (ck, cl) = if self.sizes.is_empty() {
            (0, 0.0)
        } else {
            round_up(clusters)
        };
        let open = if self.sizes.is_empty() { 0 } else { self.open };
        let key = MemoKey {
            background: bk,
            clusters: ck,
            open,
            version: self.version,
            level: level.to_bits(),
            thin: thin.to_bits(),
            basis,
        };
        if let Some((k, v)) = self.last
            && k == key
        {
            return v;
        }
        let mix = bk
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(17)
            .wrapping_add(ck.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
            .wrapping_add(u64::from(open).wrapping_mul(0x1656_67B1_9E37_79F9))
            .wrapping_add(self.version)
            .wrapping_add(level.to_bits())
            .wrapping_add(thin.to_bits().rotate_left(7))
            .wrapping_add(basis as u64);
        let slot = (mix.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize % MEMO_SLOTS;
        if let Some((k, v)) = self.memo[slot]
            && k == key
        {
            self.last = Some((key, v));
            return v;
        }
        let v = self.exact_spare(bg, cl, open, thin, level, basis);
        self.memo[slot] = Some((key, v));
        self.last = Some((key, v));
        v
    }

    /// [`Clusters::spare`] without the memo or the rounding.
    pub fn exact_spare(
        &self,
        background: f64,
        clusters: f64,
        open: u32,
        thin: f64,
        level: f64,
        basis: Basis,
    ) -> u32 {
        let background = if background.is_finite() {
            background.max(0.0)
        } else {
            0.0
        };
        let clusters = if clusters.is_finite() && !self.sizes.is_empty() {
            clusters.max(0.0)
        } else {
            0.0
        };
        let tail_of_open = || -> f64 {
            self.sizes
                .iter()
                .filter(|(s, _)| *s >= open)
                .map(|(_, p)| p)
                .sum()
        };
        // No clusters expected and none under way (what the forecast asks on almost
        // every tick): the window's count is Poisson(background). The same arithmetic
        // as the general recursion below, whose extra terms would all be zero, without
        // building its tables.
        if clusters == 0.0 && (open == 0 || tail_of_open() <= 0.0) {
            return poisson_spare(background, level, basis);
        }
        // The rest of the open cluster: S - open given S >= open.
        let rest: Vec<(u32, f64)> = if open > 0 {
            let tail: f64 = self
                .sizes
                .iter()
                .filter(|(s, _)| *s >= open)
                .map(|(_, p)| p)
                .sum();
            if tail > 0.0 {
                self.sizes
                    .iter()
                    .filter(|(s, _)| *s >= open)
                    .map(|(s, p)| (thinned(s - open, thin), p / tail))
                    .collect()
            } else {
                vec![(0, 1.0)]
            }
        } else {
            vec![(0, 1.0)]
        };
        let rest_mean: f64 = rest.iter().map(|(m, p)| f64::from(*m) * p).sum();
        let rest_sq: f64 = rest.iter().map(|(m, p)| f64::from(*m).powi(2) * p).sum();
        let cluster_mean: f64 = clusters
            * self
                .sizes
                .iter()
                .map(|(s, p)| f64::from(thinned(*s, thin)) * p)
                .sum::<f64>();
        let cluster_sq: f64 = clusters
            * self
                .sizes
                .iter()
                .map(|(s, p)| f64::from(thinned(*s, thin)).powi(2) * p)
                .sum::<f64>();
        let mean = background + cluster_mean + rest_mean;
        if mean <= 0.0 {
            return 0;
        }
        let rate = background + clusters;
        if rate > EXACT_MAX_RATE {
            let var = background + cluster_sq + (rest_sq - rest_mean * rest_mean);
            return sizing::spare_slots(mean, (var / mean).max(1.0), level, basis);
        }
        // Panjer: g(k) = (1/k) Σ_j j a_j g(k - j), g(0) = e^{-rate}, with a_1 the
        // background plus the clusters of size 1, a_s the clusters of size s; `weights`
        // holds (j, j a_j), sizes ascending.
        let mut weights: Vec<(u32, f64)> = Vec::with_capacity(self.sizes.len() + 1);
        weights.push((1, background));
        for &(s, p) in &self.sizes {
            let s = thinned(s, thin);
            if s == 0 {
                continue;
            } else if s == 1 {
                weights[0].1 += clusters * p;
            } else if s > 1 {
                weights.push((s, clusters * p * f64::from(s)));
            }
        }
        let mut g = vec![libm::exp(-rate)];
        let mut walk = Walk::new(mean, level, basis);
        let mut s: u32 = 0;
        while s < 10_000_000 {
            // t(s) = Σ_m rest(m) g(s - m), extending g as needed.
            while g.len() <= s as usize {
                let k = g.len();
                let mut acc = 0.0;
                for &(j, w) in &weights {
                    let j = j as usize;
                    if j > k {
                        break;
                    }
                    acc += w * g[k - j];
                }
                g.push(acc / k as f64);
            }
            let t: f64 = rest
                .iter()
                .filter(|(m, _)| *m <= s)
                .map(|(m, p)| p * g[(s - m) as usize])
                .sum();
            if walk.stops_at(s, t) {
                return s;
            }
            s += 1;
        }
        s
    }
}

/// [`Clusters::exact_spare`] for a plain Poisson count with mean `background` (no
/// clusters, nothing of a cluster to come): its recursion with the cluster terms, all
/// zero, left out, so the answer is the same to the bit.
fn poisson_spare(background: f64, level: f64, basis: Basis) -> u32 {
    // The general path's mean, rate and variance add zeros to `background` (>= 0),
    // which leaves it as it is.
    let mean = background;
    if mean <= 0.0 {
        return 0;
    }
    if background > EXACT_MAX_RATE {
        return sizing::spare_slots(mean, (background / mean).max(1.0), level, basis);
    }
    let rate = background;
    // g(k) = background · g(k − 1) / k, g(0) = e^{-rate}; t(s) = g(s).
    let mut g = libm::exp(-rate);
    let mut walk = Walk::new(mean, level, basis);
    let mut s: u32 = 0;
    while s < 10_000_000 {
        if s > 0 {
            g = background * g / f64::from(s);
        }
        if walk.stops_at(s, g) {
            return s;
        }
        s += 1;
    }
    s
}

/// `n` tasks of which a share `thin` hold a slot at the window's end (rounded).
fn thinned(n: u32, thin: f64) -> u32 {
    if thin >= 1.0 {
        n
    } else {
        (f64::from(n) * thin.max(0.0)).round() as u32
    }
}

/// The smallest `k` with `P(Poisson(mean) <= k) >= level`.
pub fn poisson_upper(mean: f64, level: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > EXACT_MAX_RATE {
        // Normal limit with continuity correction; z(0.999) = 3.0902.
        return (mean + 3.0902 * libm::sqrt(mean) + 0.5).ceil() as u32;
    }
    let mut pmf = libm::exp(-mean);
    let mut cdf = pmf;
    let mut k = 0u32;
    while cdf < level && k < 1_000_000 {
        k += 1;
        pmf *= mean / f64::from(k);
        cdf += pmf;
    }
    k
}

/// [`sizing::round_up`] (64 steps per doubling, never below `x`) for any `x`:
/// a non-positive or non-finite one is key 0, value 0.
fn round_up(x: f64) -> (u64, f64) {
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return (0, 0.0);
    }
    sizing::round_up(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poisson_pmf(mean: f64, k: u32) -> f64 {
        let mut p = libm::exp(-mean);
        for i in 1..=k {
            p *= mean / f64::from(i);
        }
        p
    }

    #[test]
    fn without_clusters_it_is_the_poisson_quantile() {
        let c = Clusters::new();
        // Poisson(2): P(<=4) = 0.947, P(<=5) = 0.983.
        assert_eq!(c.exact_spare(2.0, 0.0, 0, 1.0, 0.95, Basis::Windows), 5);
        assert_eq!(c.exact_spare(2.0, 0.0, 0, 1.0, 0.90, Basis::Windows), 4);
        // Tasks basis, Poisson(1): E[(A-s)+] is 0.3679, 0.1036, 0.0233 for s = 1, 2, 3.
        assert_eq!(c.exact_spare(1.0, 0.0, 0, 1.0, 0.9, Basis::Tasks), 3);
        assert_eq!(c.exact_spare(1.0, 0.0, 0, 1.0, 0.85, Basis::Tasks), 2);
        // A window that most likely brings nothing needs no spare at a low level.
        assert_eq!(c.exact_spare(0.1, 0.0, 0, 1.0, 0.5, Basis::Windows), 0);
        assert_eq!(c.exact_spare(2.0, 0.0, 0, 1.0, 0.0, Basis::Windows), 0);
    }

    /// Feeds quiet samples, then `n` clusters of `size` in one sample each.
    fn with_clusters(sizes: &[u32]) -> Clusters {
        let mut c = Clusters::new();
        for &s in sizes {
            c.observe(30.0, s, 0.01);
            c.observe(30.0, 0, 0.01);
        }
        // A day passes, so the distribution is re-read.
        for _ in 0..2880 {
            c.observe(30.0, 0, 0.01);
        }
        c
    }

    #[test]
    fn clusters_are_detected_sized_and_counted() {
        let c = with_clusters(&[40, 40, 10, 10]);
        assert_eq!(c.sizes(), &[(10, 0.5), (40, 0.5)]);
        assert!((c.mean_size() - 25.0).abs() < 1e-12);
        // Four clusters, then a day: both the count and the time fade over a week.
        let fade = libm::exp(-86_400.0 / RATE_TAU_S);
        let expect = 4.0 * fade / (RATE_TAU_S * (1.0 - fade)) * 86_400.0;
        let per_day = c.rate_per_s() * 86_400.0;
        assert!(
            (per_day / expect - 1.0).abs() < 0.01,
            "{per_day} vs {expect}"
        );
        assert!((3.5..4.0).contains(&per_day), "{per_day}");
        // A single arrival when 0.01 are expected is a cluster of one; one arrival when
        // two are expected is background.
        let mut d = Clusters::new();
        d.observe(30.0, 1, 2.0);
        assert_eq!(d.open(), 0);
        // Poisson(2)'s 99.9 % quantile is 8: 9 is bursty, 8 is not.
        d.observe(30.0, 9, 2.0);
        d.observe(30.0, 12, 2.0);
        assert_eq!(d.open(), 21);
        d.observe(30.0, 8, 2.0);
        assert_eq!((d.open(), d.sizes()), (0, &[(21, 1.0)][..]));
    }

    #[test]
    fn compound_pmf_matches_brute_force() {
        // Background Poisson(1.5), clusters of 3 (p 0.5) or 8 (p 0.5), 0.4 expected.
        let c = with_clusters(&[3, 8]);
        let (bg, lam) = (1.5, 0.4);
        // Brute force: sum over the number of clusters of each size.
        let mut pmf = vec![0.0; 200];
        for n3 in 0..30u32 {
            for n8 in 0..30u32 {
                let p = poisson_pmf(lam * 0.5, n3) * poisson_pmf(lam * 0.5, n8);
                for b in 0..60u32 {
                    let k = (b + 3 * n3 + 8 * n8) as usize;
                    if k < pmf.len() {
                        pmf[k] += p * poisson_pmf(bg, b);
                    }
                }
            }
        }
        let mean = bg + lam * 5.5;
        for level in [0.5, 0.8, 0.9, 0.95, 0.99] {
            let mut cdf = 0.0;
            let windows = (0..).find(|&k| {
                cdf += pmf[k];
                cdf >= level
            });
            assert_eq!(
                Some(c.exact_spare(bg, lam, 0, 1.0, level, Basis::Windows) as usize),
                windows,
                "level {level}"
            );
            let loss = |s: usize| -> f64 {
                pmf.iter()
                    .enumerate()
                    .map(|(k, p)| k.saturating_sub(s) as f64 * p)
                    .sum()
            };
            let tasks = (0..).find(|&s| loss(s) <= (1.0 - level) * mean);
            assert_eq!(
                Some(c.exact_spare(bg, lam, 0, 1.0, level, Basis::Tasks) as usize),
                tasks,
                "level {level}"
            );
        }
    }

    #[test]
    fn an_open_cluster_asks_for_its_expected_rest() {
        let mut c = with_clusters(&[40; 10]);
        // Ten tasks of a cluster seen, every cluster so far had 40: thirty more come.
        c.observe(30.0, 10, 0.01);
        assert_eq!(c.open(), 10);
        assert_eq!(c.spare(0.0, 0.0, 1.0, 0.9, Basis::Windows), 30);
        // Once it is past every size seen, nothing more is expected of it.
        c.observe(30.0, 40, 0.01);
        assert_eq!(c.spare(0.0, 0.0, 1.0, 0.9, Basis::Windows), 0);
    }

    #[test]
    fn rare_bursts_do_not_raise_the_windows_quantile_but_raise_the_tasks_one() {
        let c = with_clusters(&[40; 10]);
        let plain = c.exact_spare(2.0, 0.0, 0, 1.0, 0.95, Basis::Windows);
        // A burst in one window of 300: below the 5 % the windows basis leaves out.
        assert_eq!(
            c.exact_spare(2.0, 1.0 / 300.0, 0, 1.0, 0.95, Basis::Windows),
            plain
        );
        // On the tasks basis the burst's 40 tasks weigh: 40/300 = 0.13 of 2.13 tasks.
        let tasks = c.exact_spare(2.0, 1.0 / 300.0, 0, 1.0, 0.95, Basis::Tasks);
        assert!(
            tasks > c.exact_spare(2.0, 0.0, 0, 1.0, 0.95, Basis::Tasks),
            "{tasks}"
        );
    }

    #[test]
    fn memo_rounds_up_never_down_and_the_level_orders_the_answer() {
        let mut c = with_clusters(&[5, 12, 30]);
        for i in 1..300 {
            let bg = f64::from(i) * 0.05;
            let cl = f64::from(i % 7) * 0.02;
            for basis in [Basis::Windows, Basis::Tasks] {
                let exact = c.exact_spare(bg, cl, 0, 1.0, 0.95, basis);
                let memo = c.spare(bg, cl, 1.0, 0.95, basis);
                assert!(memo >= exact, "{bg} {cl}: {memo} < {exact}");
                assert!(memo <= exact + 2, "{bg} {cl}: {memo} >> {exact}");
                let lower = c.exact_spare(bg, cl, 0, 1.0, 0.6, basis);
                assert!(lower <= exact, "{bg} {cl}: {lower} > {exact}");
            }
        }
    }

    #[test]
    fn the_poisson_shortcut_answers_as_the_full_recursion() {
        // Every cluster has 40 tasks and one is 40 tasks in: its rest is 0 for sure, so
        // with no new clusters expected the full recursion (taken because a cluster is
        // open) sizes a plain Poisson count, which the shortcut (no cluster open) must
        // size to the same slot, on both bases, across the exact/negative-binomial
        // switch at 500 and at quantiles near and far from 1.
        let mut c = with_clusters(&[40, 40]);
        c.observe(30.0, 40, 0.01);
        assert_eq!(c.open(), 40);
        let mut sizes_seen = std::collections::BTreeSet::new();
        for i in 0..400 {
            let bg = 0.013 * f64::from(i) * f64::from(i) + 0.001;
            for level in [0.3, 0.9, 0.95, 0.999_9] {
                for basis in [Basis::Windows, Basis::Tasks] {
                    let full = c.exact_spare(bg, 0.0, 40, 1.0, level, basis);
                    let short = c.exact_spare(bg, 0.0, 0, 1.0, level, basis);
                    assert_eq!(full, short, "{bg} {level} {basis:?}");
                    sizes_seen.insert(short);
                }
            }
        }
        assert!(sizes_seen.len() > 100, "{}", sizes_seen.len());
        // The windows basis is the Poisson quantile itself.
        assert_eq!(c.exact_spare(25.0, 0.0, 0, 1.0, 0.999, Basis::Windows), 42);
    }

    #[test]
    fn the_remembered_detection_quantile_is_the_quantile() {
        let mut c = Clusters::new();
        for i in 0..2000u32 {
            // Means that repeat, change and come back, across the normal limit at 500.
            let mean = f64::from((i / 3) % 40) * 0.37 + f64::from(i % 2) * 480.0;
            assert_eq!(
                c.detection_quantile(mean),
                poisson_upper(mean, DETECTION_LEVEL),
                "{mean}"
            );
        }
    }

    #[test]
    fn poisson_upper_matches_the_cdf() {
        assert_eq!(poisson_upper(0.0, 0.999), 0);
        // Poisson(0.01): P(0) = 0.99005 < 0.999, P(<=1) = 0.99995.
        assert_eq!(poisson_upper(0.01, 0.999), 1);
        // Poisson(0.0005): P(0) = 0.9995.
        assert_eq!(poisson_upper(0.0005, 0.999), 0);
        // Poisson(25): the 99.9 % quantile is 42.
        assert_eq!(poisson_upper(25.0, 0.999), 42);
    }
}
