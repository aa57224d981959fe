//! Choosing the idle timeout from the boot time and the pool's own idle gaps, for pools
//! whose spec leaves `scaling.idle_timeout_s` out.
//!
//! An idle machine above the forecast target is a ski rental. Keeping it costs its
//! price for as long as it idles; retiring it costs a boot (billed, and a wait) when a
//! task wants it again. With `G` the time an idle machine waits for its next task, a
//! timeout `T` costs, per idle period,
//!
//! ```text
//! C(T)  =  E[min(G, T)]  +  P(G > T) · R  =  ∫₀ᵀ S(u) du  +  S(T) · R
//! ```
//!
//! with `S` the survival of `G` and `R` the price of a regretted retirement, and the
//! timeout is the `T` that minimises it: the rent-or-buy threshold for a known
//! distribution. (An earlier rule took the first age at which keeping a machine one
//! more boot stopped paying; on gaps that mix the seconds between short tasks with a
//! quiet night's hours, a dip in the estimate at one age ended the search there, and the
//! timeout swung between half a boot and four boots.)
//!
//! `R` prices the wait as the forecast's spare prices it. A service level `p` holds a
//! slot while the chance it is wanted is at least `1 − p`: the newsvendor's answer
//! when a slot short costs `p / (1 − p)` times a slot idle, so a task's wait of a boot
//! is worth `p / (1 − p)` boots of machine time. But the task that wanted the retired
//! machine waits only if the spare has no other slot for it, which the forecast sizes
//! to happen with probability `1 − p`; so a regretted retirement costs the boot `L`
//! and, in expectation, `(1 − p) · p / (1 − p) · L = p · L` of wait: `(1 + p) · L` in
//! all (`L` at level 0 and for `reactive`, which promise no wait).
//!
//! The replacement may itself be wasted. The task that wanted a slot takes whichever
//! comes first, the new machine or a slot that a running task frees, and a running
//! task frees its slot within a boot with probability `w = 1 − S_run(L)` (the
//! run-time distribution's share of running tasks that finish within `L`). Then the
//! new machine lands unneeded, is billed for its boot and idles a timeout `T` (the one
//! in use) before it goes. So `R = (1 + p) · L + w · (L + T)`: where tasks outlive a
//! boot (`w ≈ 0`) it is the price above; where they last seconds (`w ≈ 1`) a
//! retirement that is regretted sets off a launch that is itself wasted, and machines
//! are kept longer.
//!
//! `S` is the Kaplan-Meier estimate over the pool's last [`GAP_MEMORY`] idle periods,
//! on a grid of a quarter boot. A period a task ended is an observed gap. A machine
//! retired while idle is followed as a *ghost*: its gap ends when a task next has to
//! wait for a slot — the task it would have taken had it been kept (the most recently
//! idle ghost takes it, as the most recently freed machine would). So the data reaches
//! past the timeout in use, which otherwise censors every gap at itself and lets the
//! timeout creep up a step at a time at best. A ghost no task claims within
//! [`GHOST_HORIZON_S`], or pushed out by [`GAP_MEMORY`] newer ones, is censored at the
//! age it reached. The grid ends where fewer than [`MIN_AT_RISK`] periods are still
//! idle; if `C` is least there, keeping paid as far as the data reaches, and the
//! timeout stays at that age (or the one in use, if longer). When gaps are short (tasks of a few
//! seconds, a busy queue) the machine is kept as long as the data says it pays; when
//! they are long (a quiet night) it goes at once. Before [`MIN_GAPS`] periods are known
//! the timeout is `(1 + p) · L`, the price of a regretted retirement: the deterministic
//! ski-rental rule, never more than twice the cost of the best choice in hindsight.

use std::collections::BTreeSet;

/// Idle periods remembered.
pub const GAP_MEMORY: usize = 512;
/// Idle periods before the data replaces the one-boot rule.
pub const MIN_GAPS: usize = 64;
/// Idle periods at risk below which an age is not judged (a Kaplan-Meier step on fewer
/// would move the estimate by more than 6 %).
const MIN_AT_RISK: usize = 16;
/// New periods between two recomputations.
const RECOMPUTE_EVERY: u32 = 32;
/// The longest timeout chosen: a day.
pub const MAX_IDLE_S: f64 = 86_400.0;
/// How long a retired machine's ghost waits for a task: twice the longest timeout, an
/// age the search never reaches.
pub const GHOST_HORIZON_S: f64 = 2.0 * MAX_IDLE_S;

/// Grid cells whose period counts are kept up to date as periods come and go (beyond
/// them a recomputation sorts the ring instead).
const HIST_CELLS: usize = 1024;

/// The pool's recent idle periods and the timeout they give.
#[derive(Debug, Clone)]
pub struct IdleGaps {
    /// (seconds idle, whether a task ended it).
    ring: Vec<(f64, bool)>,
    head: usize,
    since_recompute: u32,
    boot_s: f64,
    /// What a regretted retirement costs, in boots: `1 + p`.
    regret_boots: f64,
    /// The chance a replacement lands unneeded: running tasks' share that finish
    /// within a boot.
    replacement_waste: f64,
    timeout_s: f64,
    /// How long a machine left idle is expected to stay idle under `timeout_s`,
    /// `E[min(G, T)] = ∫₀ᵀ S`, in seconds (`timeout_s` itself before the data decides).
    expected_idle_s: f64,
    /// Periods per cell of the Kaplan-Meier grid of step `hist_step` (NaN: not built):
    /// (periods, periods a task ended), kept in step with the ring, so a recomputation
    /// reads the few cells it needs instead of sorting the ring.
    hist: Vec<(u32, u32)>,
    hist_step: f64,
    /// Scratch: the ring sorted by length (when the grid runs past `hist`).
    sorted: Vec<(f64, bool)>,
    /// Machines retired while idle whose gap is still open: (when the idle period
    /// began, in Unix ms; a sequence number that keeps equal starts apart).
    ghosts: BTreeSet<(i64, u64)>,
    ghost_seq: u64,
}

/// The order of `sorted`: by length, then censored before reused.
fn period_cmp(a: &(f64, bool), b: &(f64, bool)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// The upper edge of cell `k` of the grid, computed as the grid is walked.
fn cell_end(k: usize, step: f64) -> f64 {
    let from = k as f64 * step;
    from + step
}

/// The first cell whose upper edge is above `x` (>= 0): the cell in which the grid's
/// walk passes `x`. `HIST_CELLS` for any cell at or beyond it.
fn cell_of(x: f64, step: f64) -> usize {
    let guess = x / step;
    if guess >= (HIST_CELLS + 2) as f64 {
        return HIST_CELLS;
    }
    let mut k = guess as usize;
    while k > 0 && x < cell_end(k - 1, step) {
        k -= 1;
    }
    while x >= cell_end(k, step) {
        k += 1;
    }
    k.min(HIST_CELLS)
}

impl IdleGaps {
    /// No idle period known yet, machines booting in `boot_s` seconds.
    pub fn new(boot_s: f64) -> Self {
        let boot_s = sane_boot(boot_s);
        Self {
            ring: Vec::with_capacity(GAP_MEMORY),
            head: 0,
            since_recompute: 0,
            boot_s,
            regret_boots: 1.0,
            replacement_waste: 0.0,
            timeout_s: boot_s,
            expected_idle_s: boot_s,
            hist: Vec::new(),
            hist_step: f64::NAN,
            sorted: Vec::new(),
            ghosts: BTreeSet::new(),
            ghost_seq: 0,
        }
    }

    /// The boot time changed (it is measured as machines register).
    pub fn set_boot_s(&mut self, boot_s: f64) {
        let boot_s = sane_boot(boot_s);
        if (boot_s - self.boot_s).abs() > 1e-9 {
            self.boot_s = boot_s;
            self.reset_prior();
        }
    }

    /// The service level whose price of a wait a regretted retirement pays (0, the
    /// default, for a pool that promises none: money only).
    pub fn set_service_level(&mut self, level: f64) {
        let regret_boots = 1.0 + unit_share(level);
        if regret_boots.to_bits() != self.regret_boots.to_bits() {
            self.regret_boots = regret_boots;
            self.reset_prior();
            if self.ring.len() >= MIN_GAPS {
                self.recompute();
            }
        }
    }

    /// The share `w` of running tasks that finish within a boot (`1 − S_run(L)`): the
    /// chance a replacement launched for a task lands after a freed slot took it. Read
    /// at the next recomputation.
    pub fn set_replacement_waste(&mut self, share: f64) {
        self.replacement_waste = unit_share(share);
    }

    /// Before the data decides: the price of a regretted retirement.
    fn reset_prior(&mut self) {
        if self.ring.len() < MIN_GAPS {
            self.timeout_s = (self.boot_s * self.regret_boots).min(MAX_IDLE_S);
            self.expected_idle_s = self.timeout_s;
        }
    }

    /// One idle period of `idle_s` seconds ended: by a task (`reused`), or by the
    /// machine going away (censored).
    pub fn observe(&mut self, idle_s: f64, reused: bool) {
        if !idle_s.is_finite() || idle_s < 0.0 {
            return;
        }
        if self.ring.len() < GAP_MEMORY {
            self.ring.push((idle_s, reused));
        } else {
            let old = std::mem::replace(&mut self.ring[self.head], (idle_s, reused));
            self.head = (self.head + 1) % GAP_MEMORY;
            self.count(old, false);
        }
        self.count((idle_s, reused), true);
        self.since_recompute += 1;
        if self.ring.len() >= MIN_GAPS && self.since_recompute >= RECOMPUTE_EVERY {
            self.since_recompute = 0;
            self.recompute();
        }
    }

    /// A machine that had idled `idle_s` seconds went away at `at_ms` (Unix ms)
    /// without a task: its gap stays open, as a ghost, until a task waits for a slot
    /// it would have filled ([`IdleGaps::tasks_waited`]).
    pub fn retired(&mut self, idle_s: f64, at_ms: i64) {
        if !idle_s.is_finite() || idle_s < 0.0 {
            return;
        }
        let since_ms = at_ms.saturating_sub((idle_s * 1000.0).round() as i64);
        self.ghost_seq += 1;
        self.ghosts.insert((since_ms, self.ghost_seq));
        while self.ghosts.len() > GAP_MEMORY {
            if let Some((since, _)) = self.ghosts.pop_first() {
                self.observe(age_s(since, at_ms), false);
            }
        }
        self.expire_ghosts(at_ms);
    }

    /// `waited` tasks found no free slot at `at_ms` (Unix ms): the most recently idle
    /// ghosts would have taken them, so their gaps end here. Also censors the ghosts
    /// older than [`GHOST_HORIZON_S`]. Called with every queue sample.
    pub fn tasks_waited(&mut self, waited: u32, at_ms: i64) {
        self.expire_ghosts(at_ms);
        for _ in 0..waited {
            let Some((since, _)) = self.ghosts.pop_last() else {
                break;
            };
            self.observe(age_s(since, at_ms), true);
        }
    }

    fn expire_ghosts(&mut self, at_ms: i64) {
        while let Some(&(since, _)) = self.ghosts.first() {
            let age = age_s(since, at_ms);
            if age <= GHOST_HORIZON_S {
                break;
            }
            self.ghosts.pop_first();
            self.observe(age, false);
        }
    }

    /// Retired machines whose gap is still open.
    pub fn ghosts(&self) -> usize {
        self.ghosts.len()
    }

    /// Adds a period to its cell's counts, or takes it out.
    fn count(&mut self, (idle_s, reused): (f64, bool), add: bool) {
        if self.hist_step.is_nan() {
            return;
        }
        let k = cell_of(idle_s, self.hist_step);
        if let Some(cell) = self.hist.get_mut(k) {
            let r = u32::from(reused);
            if add {
                cell.0 += 1;
                cell.1 += r;
            } else {
                cell.0 -= 1;
                cell.1 -= r;
            }
        }
    }

    /// The idle timeout to use, in seconds.
    pub fn timeout_s(&self) -> f64 {
        self.timeout_s
    }

    /// How long a machine left idle now is expected to idle before a task takes it or
    /// the timeout retires it, `E[min(G, T)]`, in seconds: what an extra machine that
    /// lands unneeded costs beyond its boot. The timeout itself before the data decides.
    pub fn expected_idle_s(&self) -> f64 {
        self.expected_idle_s
    }

    /// What a regretted retirement costs, in seconds of machine time: the boot and
    /// the wait the service level prices, `(1 + p) · L`, and the replacement that
    /// lands unneeded, `w · (L + T)` (see the module docs).
    pub fn regret_s(&self) -> f64 {
        let l = self.boot_s;
        l * self.regret_boots + self.replacement_waste * (l + self.timeout_s)
    }

    /// What a retirement regretted at a held level costs, in seconds of machine time
    /// ([`predictor::held`]): [`IdleGaps::regret_s`], whose `p · L` of wait counts on
    /// the spare to serve the task with probability `p`, plus the rest of the wait's
    /// price for the share `w` of climbs the spare cannot serve (its machines land
    /// after a freed slot took the task): there the wait of a boot costs the full
    /// newsvendor price `p / (1 − p) · L`, so `w · (p / (1 − p) − p) · L` more.
    pub fn held_regret_s(&self) -> f64 {
        let p = (self.regret_boots - 1.0).clamp(0.0, crate::hedge::MAX_LEVEL);
        self.regret_s() + self.replacement_waste * self.boot_s * p * p / (1.0 - p)
    }

    /// Idle periods known.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether no idle period is known.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    fn recompute(&mut self) {
        (self.timeout_s, self.expected_idle_s) = self.chosen(false);
    }

    /// The timeout the idle periods give now, and the idle time it leaves a machine,
    /// `∫₀ᵀ S`. The grid's cells are read from `hist`
    /// (rebuilt when the step changed) unless `sorted_only` or the walk goes past it,
    /// then from the ring sorted: the two give the same cells, so the same answer.
    fn chosen(&mut self, sorted_only: bool) -> (f64, f64) {
        let l = self.boot_s;
        let regret = self.regret_s();
        let step = (l / 4.0).max(1.0);
        if !sorted_only && self.hist_step.to_bits() != step.to_bits() {
            self.hist_step = step;
            self.hist.clear();
            self.hist.resize(HIST_CELLS, (0, 0));
            for i in 0..self.ring.len() {
                self.count(self.ring[i], true);
            }
        }
        let n = self.ring.len();
        let from_hist = if sorted_only {
            None
        } else {
            let hist = &self.hist;
            search(n, step, regret, |k, _to| {
                hist.get(k).map(|&(c, r)| (c as usize, r as usize))
            })
        };
        let walk = match from_hist {
            Some(found) => found,
            None => {
                let mut sorted = std::mem::take(&mut self.sorted);
                sorted.clear();
                sorted.extend_from_slice(&self.ring);
                sorted.sort_unstable_by(period_cmp);
                let mut i = 0; // first period not yet passed
                let found = search(n, step, regret, |_k, to| {
                    let (mut passed, mut ended) = (0, 0);
                    while i < sorted.len() && sorted[i].0 < to {
                        passed += 1;
                        ended += usize::from(sorted[i].1);
                        i += 1;
                    }
                    Some((passed, ended))
                });
                self.sorted = sorted;
                found.expect("the sorted ring covers every cell")
            }
        };
        match walk.timeout {
            Some(t) => (t, walk.idle_at_best),
            None => {
                // Keeping paid as far as the data reaches: keep that long, or as long
                // as now; past the data a machine still idle idles on.
                let data_ends = walk.points.saturating_sub(1) as f64 * step;
                let t = data_ends.max(self.timeout_s).min(MAX_IDLE_S);
                (
                    t,
                    walk.idle_at_end + walk.s_at_end * (t - data_ends).max(0.0),
                )
            }
        }
    }
}

/// What the walk over the Kaplan-Meier grid found.
struct Walk {
    /// The age at which `C` is least, `None` when that is where the data ends.
    timeout: Option<f64>,
    /// The grid's length in points.
    points: usize,
    /// `∫₀ᵀ S` at the least `C`.
    idle_at_best: f64,
    /// `∫ S` and `S` at the grid's last point.
    idle_at_end: f64,
    s_at_end: f64,
}

/// The search for the timeout on the Kaplan-Meier grid, given the periods the walk
/// passes in cell `k` (upper edge `to`) and how many of them a task ended; `None`
/// if `cell` cannot say. `regret` is what a retirement costs when the machine is wanted
/// again. Finds the age at which `C(T) = ∫₀ᵀ S + S(T) · regret` is least.
fn search(
    n: usize,
    step: f64,
    regret: f64,
    mut cell: impl FnMut(usize, f64) -> Option<(usize, usize)>,
) -> Option<Walk> {
    // Kaplan-Meier survival on the grid 0, step, 2·step, ... while enough periods
    // are at risk: `s` = P(G > k·step) at point `k`; with it `C` at each point, the idle time
    // by the trapezoid rule, keeping the first least. `C(j) >= ∫₀ʲ S`, which only
    // grows, so once that reaches the least `C` of an earlier point no later point
    // can be less, and the grid stops there: the answer of building it all, without
    // walking a long tail of rare gaps.
    let mut points = 1; // the grid so far: 0, step, ..., (points − 1)·step
    let mut idle = 0.0;
    let mut best = (regret, 0, 0.0); // C(0) = S(0) · regret, at point 0, no idle
    let mut passed = 0; // periods passed
    let mut s = 1.0;
    loop {
        let k = points - 1;
        if best.1 < k && idle >= best.0 {
            break;
        }
        let to = cell_end(k, step);
        let at_risk = n - passed;
        if at_risk < MIN_AT_RISK || to > MAX_IDLE_S + step {
            break;
        }
        let (count, ended) = cell(k, to)?;
        passed += count;
        let before = s;
        s *= 1.0 - ended as f64 / at_risk as f64;
        points += 1;
        idle += 0.5 * (before + s) * step;
        let cost = idle + s * regret;
        if cost < best.0 - 1e-12 {
            best = (cost, k + 1, idle);
        }
    }
    Some(Walk {
        timeout: (best.1 + 1 < points).then_some(best.1 as f64 * step),
        points,
        idle_at_best: best.2,
        idle_at_end: idle,
        s_at_end: s,
    })
}

/// Seconds from `since_ms` to `at_ms`, never negative.
fn age_s(since_ms: i64, at_ms: i64) -> f64 {
    at_ms.saturating_sub(since_ms).max(0) as f64 / 1000.0
}

/// `x` as a probability: clamped to [0, 1], 0 when it is not a number.
fn unit_share(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

fn sane_boot(boot_s: f64) -> f64 {
    if boot_s.is_finite() && boot_s > 0.0 {
        boot_s
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `rounds` idle periods of `gap(i)` seconds, 10,000 s apart, as a pool with
    /// the timeout chosen would: a period longer than the timeout is retired at it and
    /// claimed, as a ghost, when its task comes.
    fn run(g: &mut IdleGaps, rounds: usize, gap: impl Fn(usize) -> f64) {
        for i in 0..rounds {
            let start_ms = i as i64 * 10_000_000;
            let at = |s: f64| start_ms + (s * 1000.0) as i64;
            let cap = g.timeout_s();
            let x = gap(i);
            if x < cap {
                g.observe(x, true);
            } else {
                g.retired(cap, at(cap));
                g.tasks_waited(1, at(x));
            }
        }
    }

    #[test]
    fn a_retired_machine_s_gap_ends_when_a_task_next_waits() {
        let mut g = IdleGaps::new(120.0);
        // Idle since 1,000 s, retired at 1,300 s; another idle since 1,100 s, retired
        // at 1,400 s.
        g.retired(300.0, 1_300_000);
        g.retired(300.0, 1_400_000);
        assert_eq!((g.len(), g.ghosts()), (0, 2));
        // A sample with no waiting task claims none.
        g.tasks_waited(0, 1_500_000);
        assert_eq!((g.len(), g.ghosts()), (0, 2));
        // One task waits at 1,600 s: the most recently idle ghost takes it, 500 s
        // into its idle period.
        g.tasks_waited(1, 1_600_000);
        assert_eq!(g.ring, vec![(500.0, true)]);
        // Three more wait: the other ghost takes one, the rest find none.
        g.tasks_waited(3, 1_700_000);
        assert_eq!(g.ring, vec![(500.0, true), (700.0, true)]);
        assert_eq!(g.ghosts(), 0);
    }

    #[test]
    fn an_unclaimed_ghost_is_censored_at_the_horizon_or_when_pushed_out() {
        let mut g = IdleGaps::new(120.0);
        g.retired(60.0, 60_000);
        let horizon_ms = (GHOST_HORIZON_S * 1000.0) as i64;
        g.tasks_waited(0, horizon_ms);
        assert_eq!(g.ghosts(), 1, "at the horizon it still waits");
        g.tasks_waited(0, horizon_ms + 1_000);
        assert_eq!(g.ring, vec![(GHOST_HORIZON_S + 1.0, false)]);
        assert_eq!(g.ghosts(), 0);
        // More ghosts than the memory: the oldest idle period (since 90 s, pushed out
        // at 612 s) is censored at its age.
        let mut g = IdleGaps::new(120.0);
        for i in 0..=GAP_MEMORY as i64 {
            g.retired(10.0, 100_000 + i * 1_000);
        }
        assert_eq!(g.ghosts(), GAP_MEMORY);
        assert_eq!(g.ring, vec![(GAP_MEMORY as f64 + 10.0, false)]);
    }

    #[test]
    fn ghosts_show_what_pays_past_the_timeout_in_use() {
        // Tasks of seconds (every replacement lands unneeded): a regretted retirement
        // costs 60 + 60 + 60 = 180 s against a 60 s boot, and every idle machine is
        // wanted again after 100 to 110 s, past the first timeout (one boot). Followed
        // as ghosts, the first recomputation sees the gaps and keeps machines for them.
        let uniform = |i: usize| 100.0 + 10.0 * ((i as f64 * 0.618_033_988_749_895).fract());
        let mut followed = IdleGaps::new(60.0);
        followed.set_replacement_waste(1.0);
        run(&mut followed, MIN_GAPS, uniform);
        assert!(followed.timeout_s() >= 105.0, "{}", followed.timeout_s());
        // Censored at the timeout (no ghosts), the same periods say only that machines
        // idled a boot: the timeout cannot pass it.
        let mut censored = IdleGaps::new(60.0);
        censored.set_replacement_waste(1.0);
        for i in 0..MIN_GAPS {
            censored.observe(uniform(i).min(60.0), false);
        }
        assert!(censored.timeout_s() <= 60.0, "{}", censored.timeout_s());
    }

    #[test]
    fn a_lull_between_two_kinds_of_gaps_does_not_end_the_wait() {
        // Half the machines are wanted again within 10 s, the rest after 200 s; a
        // regretted retirement costs 228 s (level 0.9, 120 s boot). No machine idle
        // 30 s is wanted within the next boot, but keeping it until 210 s costs 180 s
        // against 228: the timeout covers the second kind.
        let mut g = IdleGaps::new(120.0);
        g.set_service_level(0.9);
        run(&mut g, 2000, |i| if i % 2 == 0 { 5.0 } else { 200.0 });
        assert!(
            (200.0..=240.0).contains(&g.timeout_s()),
            "{}",
            g.timeout_s()
        );
        // Past what a regret costs, the second kind is let go.
        let mut g = IdleGaps::new(120.0);
        g.set_service_level(0.9);
        run(&mut g, 2000, |i| if i % 2 == 0 { 5.0 } else { 600.0 });
        assert!(g.timeout_s() <= 30.0, "{}", g.timeout_s());
    }

    /// Exponential quantiles on a fixed low-discrepancy sequence: deterministic.
    fn exp_gap(mean: f64) -> impl Fn(usize) -> f64 {
        move |i| {
            let u = ((i as f64 + 0.5) * 0.618_033_988_749_895).fract();
            -mean * (1.0 - u).ln()
        }
    }

    #[test]
    fn without_data_it_is_one_boot() {
        let mut g = IdleGaps::new(120.0);
        assert_eq!(g.timeout_s(), 120.0);
        g.set_boot_s(90.0);
        assert_eq!(g.timeout_s(), 90.0);
        g.observe(10.0, true);
        assert_eq!(g.timeout_s(), 90.0);
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn gaps_shorter_than_a_boot_keep_machines_longer() {
        // Exponential gaps with a mean of 30 s against a 60 s boot: C(T) = 30 + 30 ·
        // e^(−T/30) falls at every T, so machines are kept as far as the data reaches,
        // past the first timeout (60 s), to where fewer than 16 of 512 periods are
        // still idle (P(G > 104 s) · 512 < 16).
        let mut g = IdleGaps::new(60.0);
        run(&mut g, 4000, exp_gap(30.0));
        assert!((90.0..=150.0).contains(&g.timeout_s()), "{}", g.timeout_s());
        // Against a 120 s boot the data ends before the first timeout: it stays one boot.
        let mut g = IdleGaps::new(120.0);
        run(&mut g, 4000, exp_gap(30.0));
        assert_eq!(g.timeout_s(), 120.0);
    }

    #[test]
    fn gaps_longer_than_a_boot_retire_machines_at_once() {
        // Mean 1,200 s against a 120 s boot: C(T) rises at every T, keeping never pays.
        let mut g = IdleGaps::new(120.0);
        run(&mut g, 4000, exp_gap(1200.0));
        assert!(g.timeout_s() < 31.0, "{}", g.timeout_s());
    }

    #[test]
    fn the_service_level_prices_the_wait_a_retirement_causes() {
        // Exponential gaps with a mean of 180 s against a 120 s boot: in money alone a
        // machine goes at once (a boot costs less than the idle wait, 120 < 180); at a
        // service level of 0.9 a regretted retirement also costs a task 0.9 boots of
        // wait (1.9 × 120 = 228 > 180), so machines are kept, past the first timeout
        // (one boot and a 0.9 share of a boot: 228 s) as far as the data reaches.
        let mut money = IdleGaps::new(120.0);
        run(&mut money, 4000, exp_gap(180.0));
        assert!(money.timeout_s() < 31.0, "{}", money.timeout_s());
        let mut priced = IdleGaps::new(120.0);
        priced.set_service_level(0.9);
        assert_eq!(
            priced.timeout_s(),
            228.0,
            "before data: the price of a regret"
        );
        run(&mut priced, 4000, exp_gap(180.0));
        assert!(priced.timeout_s() > 228.0, "{}", priced.timeout_s());
        // Back to level 0 the same data says go at once.
        priced.set_service_level(0.0);
        assert!(priced.timeout_s() < 31.0, "{}", priced.timeout_s());
    }

    #[test]
    fn a_replacement_that_lands_unneeded_keeps_machines_longer() {
        // Exponential gaps with a mean of 180 s against a 120 s boot, level 0: in money
        // alone a machine goes at once (120 < 180). Where every running task frees its
        // slot within a boot (tasks of seconds), the launch a regretted retirement sets
        // off lands after a freed slot took the task, and is billed its boot and a
        // timeout more: 120 + (120 + T) > 180, so machines are kept, past the boot.
        let mut seconds = IdleGaps::new(120.0);
        seconds.set_replacement_waste(1.0);
        assert_eq!(seconds.timeout_s(), 120.0, "before data: unchanged");
        run(&mut seconds, 4000, exp_gap(180.0));
        assert!(seconds.timeout_s() > 120.0, "{}", seconds.timeout_s());
        // Where a fifth of the running tasks finish within a boot, 120 + 0.2 · (120 +
        // T) stays below 180 for any timeout under 180 s: it goes at once, as in money
        // alone.
        let mut hours = IdleGaps::new(120.0);
        hours.set_replacement_waste(0.2);
        run(&mut hours, 4000, exp_gap(180.0));
        assert!(hours.timeout_s() < 31.0, "{}", hours.timeout_s());
    }

    #[test]
    fn a_known_reuse_time_is_waited_for_and_no_longer() {
        // Every idle machine is wanted again after 200 to 260 s. Waiting ~230 s for it
        // costs more than a 120 s boot, so it goes at once; with a 600 s boot it is
        // kept until they come, and retired soon after the last of them.
        let uniform = |i: usize| 200.0 + 60.0 * ((i as f64 * 0.618_033_988_749_895).fract());
        let mut short_boot = IdleGaps::new(120.0);
        run(&mut short_boot, 4000, uniform);
        assert!(short_boot.timeout_s() < 120.0, "{}", short_boot.timeout_s());
        let mut long_boot = IdleGaps::new(600.0);
        run(&mut long_boot, 4000, uniform);
        let t = long_boot.timeout_s();
        assert!((260.0..=600.0).contains(&t), "{t}");
    }

    #[test]
    fn a_machine_kept_idles_until_its_task_comes_or_the_timeout() {
        // Gaps of 200 to 260 s: kept for them (600 s boots), a machine left idle idles
        // about their mean, 230 s, not the whole timeout; retired at once (120 s
        // boots), it idles no longer than the timeout. Before the data: the timeout.
        let uniform = |i: usize| 200.0 + 60.0 * ((i as f64 * 0.618_033_988_749_895).fract());
        let mut long_boot = IdleGaps::new(600.0);
        assert_eq!(long_boot.expected_idle_s(), long_boot.timeout_s());
        run(&mut long_boot, 4000, uniform);
        let idle = long_boot.expected_idle_s();
        assert!((215.0..=245.0).contains(&idle), "{idle}");
        assert!(long_boot.timeout_s() >= 260.0, "{}", long_boot.timeout_s());
        let mut short_boot = IdleGaps::new(120.0);
        run(&mut short_boot, 4000, uniform);
        let idle = short_boot.expected_idle_s();
        assert!(idle <= short_boot.timeout_s() + 1e-9, "{idle}");
        // Half the gaps 30 s, half 14 hours: kept past the short ones, the machine
        // idles the short ones out and half the time the whole timeout, which the
        // long ones run past (the least cost lies inside the data).
        let mut mixed = IdleGaps::new(600.0);
        run(
            &mut mixed,
            4000,
            |i| if i % 2 == 0 { 30.0 } else { 50_000.0 },
        );
        let (t, idle) = (mixed.timeout_s(), mixed.expected_idle_s());
        assert!((30.0..50_000.0).contains(&t), "{t}");
        assert!(idle > 0.5 * t && idle < 0.8 * t, "{idle} of {t}");
    }

    #[test]
    fn the_cell_counts_give_what_the_sorted_ring_gives() {
        // Boots from 1 s (a grid step of 1 s, so long gaps run past the counted cells)
        // to 600 s, lengths with repeats and on cell edges, both kinds of ending, well
        // past the ring's size: every recomputation from the counts chooses the same
        // timeout, to the bit, as from the ring sorted.
        for boot in [1.0, 3.0, 120.0, 600.0] {
            let mut g = IdleGaps::new(boot);
            let mut checked = 0;
            for i in 0..3000u32 {
                let idle = match i % 4 {
                    0 => f64::from((i * 7919) % 97) * 2.5,
                    1 => f64::from(i % 13) * (boot / 4.0).max(1.0),
                    2 => f64::from((i * 104_729) % 5000),
                    _ => f64::from(i % 7) * 0.3,
                };
                g.observe(idle, i % 3 != 0);
                if g.ring.len() >= MIN_GAPS && i % 5 == 0 {
                    let counted = g.chosen(false);
                    let sorted = g.chosen(true);
                    assert_eq!(
                        (counted.0.to_bits(), counted.1.to_bits()),
                        (sorted.0.to_bits(), sorted.1.to_bits()),
                        "boot {boot}, after {i}"
                    );
                    checked += 1;
                }
            }
            assert!(checked > 500, "{checked}");
        }
    }

    #[test]
    fn cells_are_where_the_walk_passes_a_length() {
        for step in [1.0, 0.75, 30.0, 150.0, 7.3] {
            for x in [0.0, 0.5, 1.0, 29.999, 30.0, 30.000_001, 299.0, 1e9] {
                let k = cell_of(x, step);
                if k < HIST_CELLS {
                    assert!(x < cell_end(k, step), "{x} {step} {k}");
                    assert!(k == 0 || x >= cell_end(k - 1, step), "{x} {step} {k}");
                } else {
                    assert!(x >= cell_end(HIST_CELLS - 1, step), "{x} {step}");
                }
            }
        }
    }
}
