//! [`Backoff`]: exponential retry delays with jitter, for the agent's retries
//! (heartbeats and registration while the server is unreachable, reporting an
//! interruption, restarting a worker that keeps exiting).
//!
//! Written here rather than taken from a retry crate because the agent never retries
//! a closure in a loop: the heartbeat is one branch of a `select!` that also watches
//! the child, the busy file and signals, so all it needs is "how long until the next
//! attempt", which is this type. The delay doubles from `initial` up to `max`; each
//! delay is drawn uniformly from its upper half ("equal jitter"), so a fleet that lost
//! the server at the same moment does not come back in lock step, yet no delay is
//! shorter than half the nominal one. The random source is an argument so tests can
//! seed it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Retry delays: `initial`, then doubling up to `max`, each with jitter.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The nominal delay of the next attempt, before jitter.
    next: Duration,
    rng: StdRng,
}

impl Backoff {
    /// Delays from `initial` to `max`, jittered from the operating system's entropy.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self::with_rng(initial, max, StdRng::from_entropy())
    }

    /// Delays from `initial` to `max`, jittered from `rng`.
    pub fn with_rng(initial: Duration, max: Duration, rng: StdRng) -> Self {
        Self {
            initial,
            max,
            next: initial,
            rng,
        }
    }

    /// The delay before the next attempt; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = nominal / 2;
        half + half.mul_f64(self.rng.r#gen::<f64>())
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(30),
            StdRng::seed_from_u64(7),
        )
    }

    #[test]
    fn delays_double_within_their_jitter_band_and_stop_at_the_cap() {
        let mut b = backoff();
        let nominal = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for n in nominal {
            let d = b.next_delay().as_secs_f64();
            assert!(
                d >= n / 2.0 && d <= n,
                "delay {d} outside [{}, {n}]",
                n / 2.0
            );
        }
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut b = backoff();
        for _ in 0..6 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut b = backoff();
        let first: Vec<Duration> = (0..20)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        assert!(first.iter().any(|d| *d != first[0]), "{first:?}");
    }
}
