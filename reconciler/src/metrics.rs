//! The loop's Prometheus metrics (`prometheus-client`), served by the API at
//! `/metrics`.
//!
//! Per pool (label `pool`), set every tick by the replica holding the pool's lease:
//! `capstan_pool_desired_slots`, `capstan_pool_slots{state=existing|booting|idle|busy}`,
//! `capstan_pool_pending_tasks`, `capstan_pool_forecast_slots`. Counters of what the
//! loop did: `capstan_launches_total{pool,offering}`,
//! `capstan_launch_failures_total{pool,offering,kind}`,
//! `capstan_terminations_total{pool,reason}`, `capstan_interruptions_total{pool}`,
//! `capstan_orphans_terminated_total{provider}`. Timings:
//! `capstan_plan_duration_seconds`, `capstan_tick_duration_seconds`. And
//! `capstan_leases_held`. A pool this replica stops holding has its gauges removed, so
//! two replicas never both report one pool.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set of per-pool series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabel {
    /// The pool id.
    pub pool: String,
}

/// Label set of per-pool capacity by state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SlotLabels {
    /// The pool id.
    pub pool: String,
    /// `existing`, `booting`, `idle` or `busy`.
    pub state: String,
}

/// Label set of launches.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OfferingLabels {
    /// The pool id.
    pub pool: String,
    /// The offering (launch config id, `/zone` when pinned by the provider).
    pub offering: String,
}

/// Label set of launch failures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The pool id.
    pub pool: String,
    /// The offering.
    pub offering: String,
    /// The classified error (`insufficient_capacity`, `quota_exceeded`, ...).
    pub kind: String,
}

/// Label set of terminations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The pool id.
    pub pool: String,
    /// Why (`idle_timeout`, `registration_timeout`, ...).
    pub reason: String,
}

/// Label set of per-provider series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    /// The provider kind.
    pub provider: String,
}

/// Every metric the loop keeps; cheap to clone (handles on shared atomics).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Target slots of the latest plan.
    pub desired: Family<PoolLabel, Gauge>,
    /// Slots by state.
    pub slots: Family<SlotLabels, Gauge>,
    /// Pending tasks in the latest queue sample.
    pub pending: Family<PoolLabel, Gauge>,
    /// The forecast's target slots.
    pub forecast: Family<PoolLabel, Gauge>,
    /// Instances launched.
    pub launches: Family<OfferingLabels, Counter>,
    /// Instances that failed to launch.
    pub launch_failures: Family<FailureLabels, Counter>,
    /// Workers terminated by the loop.
    pub terminations: Family<ReasonLabels, Counter>,
    /// Instances the cloud took back.
    pub interruptions: Family<PoolLabel, Counter>,
    /// Orphan instances terminated by the sweep.
    pub orphans: Family<ProviderLabel, Counter>,
    /// Time to make one plan (observe + predict + plan, no I/O).
    pub plan_duration: Histogram,
    /// Time of one reconcile pass over every pool held.
    pub tick_duration: Histogram,
    /// Pools whose lease this replica holds.
    pub leases_held: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics in their own registry.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let desired = Family::<PoolLabel, Gauge>::default();
        let slots = Family::<SlotLabels, Gauge>::default();
        let pending = Family::<PoolLabel, Gauge>::default();
        let forecast = Family::<PoolLabel, Gauge>::default();
        let launches = Family::<OfferingLabels, Counter>::default();
        let launch_failures = Family::<FailureLabels, Counter>::default();
        let terminations = Family::<ReasonLabels, Counter>::default();
        let interruptions = Family::<PoolLabel, Counter>::default();
        let orphans = Family::<ProviderLabel, Counter>::default();
        let plan_duration = Histogram::new(exponential_buckets(1e-5, 4.0, 10));
        let tick_duration = Histogram::new(exponential_buckets(1e-3, 2.5, 12));
        let leases_held = Gauge::default();
        r.register(
            "capstan_pool_desired_slots",
            "Target slots of the pool's latest plan",
            desired.clone(),
        );
        r.register(
            "capstan_pool_slots",
            "Slots of the pool's workers by state (existing = requested, booting and ready)",
            slots.clone(),
        );
        r.register(
            "capstan_pool_pending_tasks",
            "Tasks waiting in the pool's latest queue sample",
            pending.clone(),
        );
        r.register(
            "capstan_pool_forecast_slots",
            "Slots the forecast says the pool needs at now plus the launch lead time",
            forecast.clone(),
        );
        r.register(
            "capstan_launches",
            "Instances launched, by pool and offering",
            launches.clone(),
        );
        r.register(
            "capstan_launch_failures",
            "Instances that failed to launch, by pool, offering and error kind",
            launch_failures.clone(),
        );
        r.register(
            "capstan_terminations",
            "Workers terminated by the loop, by pool and reason",
            terminations.clone(),
        );
        r.register(
            "capstan_interruptions",
            "Instances the cloud took back (spot reclaimed, preempted)",
            interruptions.clone(),
        );
        r.register(
            "capstan_orphans_terminated",
            "Instances tagged as capstan's that no worker owned, terminated by the sweep",
            orphans.clone(),
        );
        r.register(
            "capstan_plan_duration_seconds",
            "Time to observe, predict and plan one pool (no I/O)",
            plan_duration.clone(),
        );
        r.register(
            "capstan_tick_duration_seconds",
            "Time of one reconcile pass over every pool this replica holds",
            tick_duration.clone(),
        );
        r.register(
            "capstan_leases_held",
            "Pools whose reconcile lease this replica holds",
            leases_held.clone(),
        );
        Self {
            registry: Arc::new(r),
            desired,
            slots,
            pending,
            forecast,
            launches,
            launch_failures,
            terminations,
            interruptions,
            orphans,
            plan_duration,
            tick_duration,
            leases_held,
        }
    }

    /// The exposition in the OpenMetrics text format (ending in `# EOF`).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The exposition in the Prometheus text format 0.0.4, which every Prometheus and
    /// `promtool check metrics` read: the OpenMetrics text with counters' families
    /// named like their `_total` samples and without the `# EOF` marker.
    pub fn render(&self) -> String {
        to_prometheus_text(&self.render_openmetrics())
    }

    /// Sets the pool's gauges from one tick.
    pub fn set_pool(&self, pool: &str, g: &PoolGauges) {
        let l = PoolLabel { pool: pool.into() };
        self.desired.get_or_create(&l).set(i64::from(g.desired));
        self.pending.get_or_create(&l).set(i64::from(g.pending));
        self.forecast.get_or_create(&l).set(i64::from(g.forecast));
        for (state, v) in [
            ("existing", g.existing),
            ("booting", g.booting),
            ("idle", g.idle),
            ("busy", g.busy),
        ] {
            self.slots
                .get_or_create(&SlotLabels {
                    pool: pool.into(),
                    state: state.into(),
                })
                .set(i64::from(v));
        }
    }

    /// Removes the pool's gauges (this replica no longer holds it, or it is gone).
    pub fn forget_pool(&self, pool: &str) {
        let l = PoolLabel { pool: pool.into() };
        self.desired.remove(&l);
        self.pending.remove(&l);
        self.forecast.remove(&l);
        for state in ["existing", "booting", "idle", "busy"] {
            self.slots.remove(&SlotLabels {
                pool: pool.into(),
                state: state.into(),
            });
        }
    }
}

/// One pool's gauge values at a tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolGauges {
    /// Target slots.
    pub desired: u32,
    /// Requested, booting and ready slots.
    pub existing: u32,
    /// Requested and booting slots.
    pub booting: u32,
    /// Free slots of ready workers.
    pub idle: u32,
    /// Busy slots.
    pub busy: u32,
    /// Pending tasks.
    pub pending: u32,
    /// The forecast's target slots.
    pub forecast: u32,
}

/// OpenMetrics text → Prometheus text 0.0.4 (see [`Metrics::render`]).
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_prometheus_text() {
        let m = Metrics::new();
        m.launches
            .get_or_create(&OfferingLabels {
                pool: "ci/a".into(),
                offering: "od".into(),
            })
            .inc();
        m.set_pool(
            "ci/a",
            &PoolGauges {
                desired: 3,
                ..PoolGauges::default()
            },
        );
        let text = m.render();
        assert!(
            text.contains("# TYPE capstan_launches_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP capstan_launches_total Instances launched"),
            "{text}"
        );
        assert!(
            text.contains("capstan_launches_total{pool=\"ci/a\",offering=\"od\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("capstan_pool_desired_slots{pool=\"ci/a\"} 3\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        m.forget_pool("ci/a");
        assert!(!m.render().contains("capstan_pool_desired_slots{"));
    }
}
