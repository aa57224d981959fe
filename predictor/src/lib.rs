//! Demand forecasting and capacity sizing for one pool.
//!
//! Queue history goes in, a [`Forecast`] comes out: the slots the pool should have ready
//! at `now + lead` (lead = launch-to-ready time) and the reactive backlog target. The
//! planner (`reconciler::plan`) takes the larger of the two.
//!
//! A [`Predictor`] is incremental and owned per pool: feed it every [`QueueSample`]
//! with [`Predictor::observe`] and finished tasks' run times with
//! [`Predictor::observe_run_time`], then ask [`Predictor::forecast`] each tick. Both are
//! O(1) amortised and allocate nothing, because the simulator calls them millions of
//! times per replay.
//!
//! - [`reactive`]: the classic estimator (pending and running against existing slots).
//! - The `forecast` policy: an arrival-rate forecast turned into busy slots at
//!   `now + lead`, sized at an upper quantile, never below the reactive target.

pub mod reactive;

use capstan_core::{Forecast, PoolSpec, QueueSample, ScalingPolicy, Timestamp};

pub use reactive::reactive_target;

/// Incremental demand model of one pool.
#[derive(Debug, Clone, Default)]
pub struct Predictor {
    /// The latest sample seen: its `pending` and `running` levels drive the reactive
    /// target.
    last: Option<QueueSample>,
    /// Exponentially weighted arrival rate, tasks per second.
    rate_per_s: f64,
}

/// Weight of history in the arrival-rate average per second of elapsed time (a time
/// constant of about 15 minutes).
const RATE_TIME_CONSTANT_S: f64 = 900.0;

impl Predictor {
    /// A predictor that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one queue sample. Samples must come in time order; one at or before the
    /// previous sample's time only updates the levels.
    pub fn observe(&mut self, sample: &QueueSample) {
        if let Some(prev) = self.last {
            let dt = sample.at.secs_since(prev.at);
            if dt > 0.0 {
                let inst = f64::from(sample.arrivals) / dt;
                let w = (-dt / RATE_TIME_CONSTANT_S).exp();
                self.rate_per_s = w * self.rate_per_s + (1.0 - w) * inst;
            }
        }
        self.last = Some(*sample);
    }

    /// Feeds the run time of one finished task, in seconds.
    pub fn observe_run_time(&mut self, _run_s: f64) {}

    /// The forecast for `spec` at `now`, looking `lead_s` seconds ahead, given the
    /// slots the pool holds now (`existing_slots`: requested, booting and ready).
    pub fn forecast(
        &mut self,
        spec: &PoolSpec,
        now: Timestamp,
        lead_s: f64,
        existing_slots: u32,
    ) -> Forecast {
        let (pending, running) = self.last.map_or((0, 0), |s| (s.pending, s.running));
        let backlog = reactive_target(
            pending,
            running,
            existing_slots,
            spec.scaling.scaling_ratio,
            spec.min_capacity,
            spec.max_capacity,
        );
        let (target, expected) = match spec.scaling.policy {
            ScalingPolicy::Reactive => (backlog, f64::from(backlog)),
            ScalingPolicy::Forecast => {
                let arrivals = self.rate_per_s * lead_s.max(0.0);
                let expected = f64::from(running) + f64::from(pending) + arrivals;
                let q = f64::from(running)
                    + f64::from(pending)
                    + poisson_quantile(arrivals, spec.scaling.service_level);
                (q.min(f64::from(spec.max_capacity)) as u32, expected)
            }
        };
        Forecast {
            made_at: now,
            policy: spec.scaling.policy,
            lead_s,
            target_slots: target.max(backlog),
            backlog_slots: backlog,
            expected_busy_slots: expected,
            points: Vec::new(),
        }
    }
}

/// Smallest k with P(Poisson(mean) <= k) >= p.
fn poisson_quantile(mean: f64, p: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    let mut pmf = (-mean).exp();
    let mut cdf = pmf;
    let mut k = 0.0;
    while cdf < p && k < 1e6 {
        k += 1.0;
        pmf *= mean / k;
        cdf += pmf;
    }
    k
}
