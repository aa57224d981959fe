//! One pool's controller: the state that lives between ticks and the one `tick` that
//! turns it into a plan.
//!
//! A [`PoolController`] holds everything the planner and predictor need beyond what
//! the store already has: the [`Predictor`] (fed with queue samples and task run
//! times), the [`OfferingHealth`] (offerings that recently failed with capacity or
//! quota errors), the [`LaunchLog`] (for the per-minute launch limit), and the measured
//! launch-to-ready time the forecast looks ahead by. [`PoolController::tick`] is
//! observe → predict → plan in one call.
//!
//! The service (`service`), the trace-replay simulator and the benches all drive pools
//! through this type, so the simulator judges exactly the code that runs in
//! production: only where the samples come from and how actions are applied differ.

use capstan_core::{
    Forecast, LaunchLog, Offering, OfferingHealth, Plan, PoolSpec, QueueSample, ScalingPolicy,
    Timestamp, Worker,
};
use predictor::Predictor;

use crate::hedge::BootSpread;
use crate::idle::IdleGaps;
use crate::planning::{PlanError, Planner, Survey};

/// Launch-to-ready time assumed before a pool has seen a machine boot, in seconds.
pub const DEFAULT_BOOT_S: f64 = 120.0;

/// How much one measured boot moves the lead-time estimate (an exponential moving
/// average: the last ~10 boots dominate).
const BOOT_EWMA_WEIGHT: f64 = 0.1;

/// How long an offering stays skipped after a capacity or quota error, by default.
pub const DEFAULT_UNAVAILABLE_TTL_S: i64 = 180;

/// The per-pool state between ticks. See the module docs.
#[derive(Debug, Clone)]
pub struct PoolController {
    planner: Planner,
    predictor: Predictor,
    health: OfferingHealth,
    launches: LaunchLog,
    lead_s: f64,
    unavailable_ttl_s: i64,
    last_sample_at: Option<Timestamp>,
    idle: IdleGaps,
    boots: BootSpread,
    survey_cache: Option<SurveyCache>,
}

/// A survey of a fleet version, valid from `at_ms` until (not at) `until_ms`.
#[derive(Debug, Clone, Copy)]
struct SurveyCache {
    fleet_version: u64,
    at_ms: i64,
    until_ms: i64,
    survey: Survey,
}

/// The service level a pool promises: its spec's for `forecast`, none (0) for
/// `reactive`, which sizes to the backlog alone. It prices the wait a retired machine
/// causes when it is wanted again ([`crate::idle`]).
fn promised_level(spec: &PoolSpec) -> f64 {
    match spec.scaling.policy {
        ScalingPolicy::Forecast => spec.scaling.service_level,
        ScalingPolicy::Reactive => 0.0,
    }
}

impl PoolController {
    /// A controller for `spec` that has seen nothing, expecting machines to take
    /// `boot_s` seconds from launch to ready until it measures otherwise.
    pub fn new(spec: &PoolSpec, boot_s: f64) -> Result<Self, PlanError> {
        let lead_s = if boot_s.is_finite() && boot_s >= 0.0 {
            boot_s
        } else {
            DEFAULT_BOOT_S
        };
        let mut idle = IdleGaps::new(lead_s);
        idle.set_service_level(promised_level(spec));
        Ok(Self {
            idle,
            planner: Planner::new(spec)?,
            predictor: Predictor::for_spec(spec),
            health: OfferingHealth::new(),
            launches: LaunchLog::new(),
            lead_s,
            unavailable_ttl_s: DEFAULT_UNAVAILABLE_TTL_S,
            last_sample_at: None,
            boots: BootSpread::new(),
            survey_cache: None,
        })
    }

    /// Sets how long an offering stays skipped after a capacity or quota error.
    pub fn with_unavailable_ttl_s(mut self, ttl_s: i64) -> Self {
        self.unavailable_ttl_s = ttl_s.max(0);
        self
    }

    /// Takes a changed spec, keeping what was learnt (history, health, launches).
    pub fn update_spec(&mut self, spec: &PoolSpec) -> Result<(), PlanError> {
        if spec != self.planner.spec() {
            self.planner = Planner::new(spec)?;
            self.survey_cache = None;
        }
        self.predictor.set_objective(spec);
        self.idle.set_service_level(promised_level(spec));
        Ok(())
    }

    /// The spec planned for.
    pub fn spec(&self) -> &PoolSpec {
        self.planner.spec()
    }

    /// The planner (offerings in the order tried).
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// The demand model.
    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// Offerings recently unavailable.
    pub fn health(&self) -> &OfferingHealth {
        &self.health
    }

    /// The launch-to-ready time forecasts look ahead by, in seconds.
    pub fn lead_s(&self) -> f64 {
        self.lead_s
    }

    /// The time of the newest queue sample observed.
    pub fn last_sample_at(&self) -> Option<Timestamp> {
        self.last_sample_at
    }

    /// Replaces the offerings with the provider's view (prices, zones).
    pub fn set_offerings(&mut self, offerings: Vec<Offering>) {
        self.planner.set_offerings(offerings);
    }

    /// Feeds one queue sample. Samples at or before the newest one seen are ignored, so
    /// a caller may hand over overlapping batches (a store read since the last tick).
    pub fn observe(&mut self, sample: &QueueSample) {
        if self.last_sample_at.is_some_and(|t| sample.at <= t) {
            return;
        }
        self.last_sample_at = Some(sample.at);
        self.predictor.observe(sample);
        // Tasks that came since the last sample and still wait found no free slot:
        // a machine retired while idle would have taken one ([`crate::idle`]).
        self.idle
            .tasks_waited(sample.pending.min(sample.arrivals), sample.at.unix_ms());
    }

    /// Feeds samples in time order (warming a controller from stored history).
    pub fn observe_all<'a>(&mut self, samples: impl IntoIterator<Item = &'a QueueSample>) {
        for s in samples {
            self.observe(s);
        }
    }

    /// Feeds the run time of one finished task, in seconds.
    pub fn observe_run_time(&mut self, run_s: f64) {
        self.predictor.observe_run_time(run_s);
    }

    /// Tasks that an interruption took from their instance and sent back to the queue.
    pub fn observe_requeued(&mut self, tasks: u32) {
        self.predictor.observe_requeued(tasks);
    }

    /// Feeds one measured launch-to-ready time, in seconds.
    pub fn observe_boot(&mut self, boot_s: f64) {
        if boot_s.is_finite() && boot_s >= 0.0 {
            self.lead_s += BOOT_EWMA_WEIGHT * (boot_s - self.lead_s);
            self.idle.set_boot_s(self.lead_s);
            self.boots.observe(boot_s);
        }
    }

    /// One idle period of a worker ended at `at` after `idle_s` seconds: a task took
    /// it (`reused`), or the worker went away while idle (then its gap stays open until
    /// a task waits for a slot it would have filled). Feeds the idle timeout chosen for
    /// pools that set none ([`crate::idle`]). `level` is the pool's busy slots once
    /// the task took it, if known: the level the worker idled at, as the most recently
    /// freed worker takes the next task; a period at or below the held level then
    /// ([`PoolController::held_slots`]) is left out of the timeout's data.
    pub fn observe_idle_gap(
        &mut self,
        idle_s: f64,
        reused: bool,
        at: Timestamp,
        level: Option<u32>,
    ) {
        let survival = self.predictor.survival(self.lead_s);
        self.idle.set_replacement_waste(1.0 - survival.of_running);
        // A held slot is never retired: its gaps say nothing about the timeout, which
        // applies to the machines above the held level only.
        if reused
            && let Some(level) = level
            && level <= self.held_level(at)
        {
            return;
        }
        if reused {
            self.idle.observe(idle_s, true);
        } else {
            self.idle.retired(idle_s, at.unix_ms());
        }
    }

    /// The idle periods behind the chosen idle timeout.
    #[cfg(test)]
    pub(crate) fn idle_gaps(&self) -> &IdleGaps {
        &self.idle
    }

    /// The idle timeout chosen from the boot time and the idle gaps, in seconds (used
    /// when the spec sets none).
    pub fn chosen_idle_timeout_s(&self) -> f64 {
        self.idle.timeout_s()
    }

    /// An offering failed with a capacity or quota error at `now`: skip it until the
    /// TTL passes, so the next plan falls back to the next offering.
    pub fn offering_unavailable(&mut self, key: &str, reason: &str, now: Timestamp) {
        self.health
            .mark_unavailable(key, now.plus_secs(self.unavailable_ttl_s), reason);
    }

    /// An offering launched fine: forget any earlier unavailability.
    pub fn offering_available(&mut self, key: &str) {
        self.health.mark_available(key);
    }

    /// Observe, predict, plan: the forecast for `now + lead` given `workers`, and the
    /// plan toward it. The plan's launches are counted in the launch log (whether or
    /// not they succeed, as a real rate limit would count attempts).
    pub fn tick(&mut self, workers: &[Worker], now: Timestamp) -> (Forecast, Plan) {
        self.tick_inner(workers, now, None)
    }

    /// [`PoolController::tick`] for a caller that numbers the states of its fleet:
    /// `fleet_version` must change whenever anything about `workers` does. While it
    /// stays, and no worker's heartbeat, idle time or lifetime runs out, the fleet is
    /// not surveyed again (a simulator's ticks mostly find it unchanged).
    pub fn tick_versioned(
        &mut self,
        workers: &[Worker],
        now: Timestamp,
        fleet_version: u64,
    ) -> (Forecast, Plan) {
        self.tick_inner(workers, now, Some(fleet_version))
    }

    /// The held level ([`predictor::held`]) at `now`: for the forecast policy when
    /// capstan chooses the idle timeout (the held level is its answer for the levels
    /// tasks shorter than a boot keep coming back to); none otherwise, so an explicit
    /// `idle_timeout_s` applies to every idle machine, as for `reactive`.
    fn held_level(&mut self, now: Timestamp) -> u32 {
        let spec = self.planner.spec();
        if spec.scaling.policy == ScalingPolicy::Forecast && spec.scaling.idle_timeout_s.is_none() {
            self.predictor
                .held_slots(now, self.lead_s, self.idle.held_regret_s())
        } else {
            0
        }
    }

    /// The slots held idle whatever the idle timeout at the last tick: the levels
    /// worth holding for the pool's tasks shorter than a boot ([`predictor::held`]).
    pub fn held_slots(&self) -> u32 {
        self.planner.held_slots()
    }

    /// Raises the backlog's need by the machines worth launching beyond the waiting
    /// tasks' own when boot times vary ([`crate::hedge`]) and returns the slots added;
    /// they are not kept from idle timeouts. A machine's saving counts with the chance
    /// `S_run(L)` that running tasks still hold their slots when it lands (a slot
    /// freed first serves the task without it). Nothing changes at level 0, for
    /// `reactive`, or for boots that never vary.
    fn hedge_slow_boots(&mut self, forecast: &mut Forecast, existing_slots: u32) -> u32 {
        let waiting = forecast.backlog_slots.saturating_sub(existing_slots);
        if waiting == 0 {
            return 0;
        }
        let still_running = self.predictor.survival(self.lead_s).of_running;
        let spec = self.planner.spec();
        let slots = spec
            .launch_configs
            .iter()
            .map(|lc| lc.capacity.max(1))
            .min()
            .unwrap_or(1);
        let machines = waiting.div_ceil(slots);
        // An extra machine that lands unneeded idles as any idle machine does: until a
        // task takes it or the timeout retires it, which the idle gaps price when
        // capstan chose the timeout (the planner's, set from them this tick).
        let idles_s = if spec.scaling.idle_timeout_s.is_none() {
            self.idle.expected_idle_s()
        } else {
            self.planner.idle_timeout_s()
        };
        let extra = self
            .boots
            .extra(machines, promised_level(spec), still_running, idles_s);
        let before = forecast.backlog_slots;
        forecast.backlog_slots = before
            .saturating_add(extra.saturating_mul(slots))
            .min(spec.max_capacity.max(before));
        forecast.backlog_slots - before
    }

    fn tick_inner(
        &mut self,
        workers: &[Worker],
        now: Timestamp,
        fleet_version: Option<u64>,
    ) -> (Forecast, Plan) {
        // The idle timeout in force first: the survey checks idle workers against it.
        self.planner.set_auto_idle_timeout_s(self.idle.timeout_s());
        let now_ms = now.unix_ms();
        let survey = match (fleet_version, self.survey_cache) {
            (Some(v), Some(c))
                if c.fleet_version == v
                    && c.survey.idle_timeout_ms == self.planner.survey_idle_timeout_ms()
                    && (c.at_ms..c.until_ms).contains(&now_ms) =>
            {
                c.survey
            }
            _ => {
                let (survey, until_ms) = self.planner.survey_until(workers, now);
                self.survey_cache = fleet_version.map(|fleet_version| SurveyCache {
                    fleet_version,
                    at_ms: now_ms,
                    until_ms,
                    survey,
                });
                survey
            }
        };
        let mut forecast =
            self.predictor
                .forecast(self.planner.spec(), now, self.lead_s, survey.counted_slots);
        let hedge_slots = self.hedge_slow_boots(&mut forecast, survey.counted_slots);
        let held = self.held_level(now);
        self.planner.set_held_slots(held);
        if self.health.entries().next().is_some() {
            self.health.forget_expired(now);
        }
        let mut plan = self.planner.plan_surveyed(
            workers,
            &forecast,
            &self.health,
            now,
            &self.launches,
            survey,
        );
        plan.report.boot_hedge_slots = hedge_slots;
        let launched = plan.launch_count();
        if launched > 0 {
            self.launches.record(now, launched);
        }
        (forecast, plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_core::{Action, PoolSpec};

    fn spec() -> PoolSpec {
        PoolSpec::from_yaml(
            "id: c\nprovider: fake\nmax_capacity: 50\nlaunch_configs:\n  - id: a\n    instance_type: t\n    priority: 0\n  - id: b\n    instance_type: t\n    priority: 1\n",
        )
        .unwrap()
    }

    fn sample(at: i64, pending: u32) -> QueueSample {
        QueueSample {
            at: Timestamp::from_unix_secs(at),
            pending,
            running: 0,
            arrivals: pending,
            completions: 0,
        }
    }

    #[test]
    fn a_backlog_launches_and_an_unavailable_offering_falls_back() {
        let mut c = PoolController::new(&spec(), 60.0).unwrap();
        c.observe(&sample(1_000, 3));
        let (_, plan) = c.tick(&[], Timestamp::from_unix_secs(1_000));
        assert!(
            matches!(&plan.actions[..], [Action::Launch { launch_config_id, count: 3, .. }] if launch_config_id == "a")
        );
        c.offering_unavailable(
            "a",
            "InsufficientInstanceCapacity",
            Timestamp::from_unix_secs(1_000),
        );
        let (_, plan) = c.tick(&[], Timestamp::from_unix_secs(1_030));
        assert!(
            matches!(&plan.actions[..], [Action::Launch { launch_config_id, .. }] if launch_config_id == "b"),
            "{plan:?}"
        );
        // After the TTL the preferred offering is tried again.
        let (_, plan) = c.tick(
            &[],
            Timestamp::from_unix_secs(1_000 + DEFAULT_UNAVAILABLE_TTL_S),
        );
        assert!(
            matches!(&plan.actions[..], [Action::Launch { launch_config_id, .. }] if launch_config_id == "a"),
            "{plan:?}"
        );
    }

    #[test]
    fn old_samples_are_ignored_and_boots_move_the_lead() {
        let mut c = PoolController::new(&spec(), 100.0).unwrap();
        c.observe(&sample(2_000, 5));
        c.observe(&sample(1_000, 0));
        assert_eq!(c.last_sample_at(), Some(Timestamp::from_unix_secs(2_000)));
        let (f, _) = c.tick(&[], Timestamp::from_unix_secs(2_000));
        assert_eq!(f.backlog_slots, 5);
        c.observe_boot(200.0);
        assert!((c.lead_s() - 110.0).abs() < 1e-9);
        c.observe_boot(f64::NAN);
        assert!((c.lead_s() - 110.0).abs() < 1e-9);
    }

    #[test]
    fn a_machine_retired_idle_is_claimed_by_the_next_task_that_waits() {
        let mut c = PoolController::new(&spec(), 120.0).unwrap();
        // A worker idle since 700 s goes away at 1,000 s, and one idle 40 s is reused.
        c.observe_idle_gap(300.0, false, Timestamp::from_unix_secs(1_000), None);
        c.observe_idle_gap(40.0, true, Timestamp::from_unix_secs(1_000), None);
        assert_eq!((c.idle.len(), c.idle.ghosts()), (1, 1));
        // Tasks waiting since before the last sample claim nothing (they were counted).
        c.observe(&QueueSample {
            arrivals: 0,
            ..sample(1_030, 4)
        });
        assert_eq!((c.idle.len(), c.idle.ghosts()), (1, 1));
        // A task that came since the last sample and still waits would have taken the
        // retired machine: its gap ends there, 1,000 s after its idle period began.
        c.observe(&QueueSample {
            arrivals: 1,
            ..sample(1_700, 5)
        });
        assert_eq!((c.idle.len(), c.idle.ghosts()), (2, 0));
    }

    /// A controller that has seen two days of one task a 30 s sample, each running
    /// `run_s`, under `policy` with the idle timeout `timeout_s` (None: chosen).
    fn two_days_of(run_s: f64, policy: ScalingPolicy, timeout_s: Option<u64>) -> PoolController {
        let mut spec = spec();
        spec.scaling.policy = policy;
        spec.scaling.idle_timeout_s = timeout_s;
        let mut c = PoolController::new(&spec, 120.0).unwrap();
        for i in 0..2 * 2_880 {
            c.observe(&QueueSample {
                arrivals: 1,
                completions: 1,
                ..sample(i * 30, 0)
            });
            c.observe_run_time(run_s);
        }
        c
    }

    #[test]
    fn tasks_shorter_than_a_boot_get_held_slots_whose_reuses_stay_out_of_the_timeout_data() {
        let now = Timestamp::from_unix_secs(2 * 86_400);
        let mut c = two_days_of(10.0, ScalingPolicy::Forecast, None);
        // One idle period seen: the share of replacements wasted is read with it.
        c.observe_idle_gap(5.0, true, now, None);
        let (f, plan) = c.tick(&[], now);
        // 10 s tasks at 1/30 a second: busy slots Poisson of mean 1/3. A regretted
        // retirement at the default 0.95, before 64 idle periods are known (timeout
        // (1 + p) · L = 234 s), every replacement wasted (w = 1): (1 + p) · L +
        // (L + 234) + L · p² / (1 − p) = 234 + 354 + 2,166 = 2,754 s, so λ · R = 91.8.
        // Level 3 climbs at λ · P(N=2) = 0.0398 λ: × R = 3.65 >= P(N<=2) = 0.9955;
        // level 4 at λ · P(N=3) = 0.0044 λ: × R = 0.41 < 1.
        assert!(
            (c.idle.held_regret_s() - 2_754.0).abs() < 1.0,
            "{}",
            c.idle.held_regret_s()
        );
        assert_eq!(c.held_slots(), 3);
        assert_eq!(plan.report.keep_slots, 3.max(f.target_slots), "{plan:?}");
        // Held, not launched for: launches go to the forecast's target, below it.
        assert!(f.target_slots < 3, "{f:?}");
        assert_eq!(plan.report.launch_slots, f.target_slots, "{plan:?}");

        // A reuse at a held level is a held slot's gap: the timeout never applies there.
        let gaps = c.idle.len();
        c.observe_idle_gap(5.0, true, now, Some(3));
        c.observe_idle_gap(5.0, true, now, Some(1));
        assert_eq!(c.idle.len(), gaps);
        // Above it, or where the level is not known, it is the timeout's data.
        c.observe_idle_gap(5.0, true, now, Some(4));
        c.observe_idle_gap(5.0, true, now, None);
        assert_eq!(c.idle.len(), gaps + 2);

        // Tasks that outlive a boot are the forecast's: nothing held.
        let mut long = two_days_of(3_600.0, ScalingPolicy::Forecast, None);
        long.tick(&[], now);
        assert_eq!(long.held_slots(), 0);
        // An explicit idle timeout applies to every idle machine, and reactive holds
        // nothing: both plan as before.
        for mut other in [
            two_days_of(10.0, ScalingPolicy::Forecast, Some(600)),
            two_days_of(10.0, ScalingPolicy::Reactive, None),
        ] {
            let (f, plan) = other.tick(&[], now);
            assert_eq!(
                (other.held_slots(), plan.report.keep_slots),
                (0, f.target_slots)
            );
            let gaps = other.idle.len();
            other.observe_idle_gap(5.0, true, now, Some(1));
            assert_eq!(other.idle.len(), gaps + 1);
        }
    }

    #[test]
    fn varying_boots_launch_more_than_the_backlog_at_a_service_level_and_fixed_ones_do_not() {
        // Ten tasks wait and nothing runs; the pool has measured 32 boots.
        let launches = |boots: &dyn Fn(u32) -> f64, level: f64| {
            let mut spec = spec();
            spec.scaling.policy = ScalingPolicy::Forecast;
            spec.scaling.service_level = level;
            let mut c = PoolController::new(&spec, 120.0).unwrap();
            for i in 0..32 {
                c.observe_boot(boots(i));
            }
            c.observe(&sample(1_000, 10));
            let (f, plan) = c.tick(&[], Timestamp::from_unix_secs(1_000));
            // The plan says so, in its report and its words.
            assert_eq!(plan.report.boot_hedge_slots, f.backlog_slots - 10);
            assert_eq!(
                plan.summary().contains("hedging slow boots"),
                plan.report.boot_hedge_slots > 0,
                "{}",
                plan.summary()
            );
            (plan.launch_count(), f.backlog_slots)
        };
        // Between 60 s and 370 s, and 120 s every time (the first boot's mean).
        let varying = |i: u32| 60.0 + 10.0 * f64::from(i);
        let fixed = |_: u32| 120.0;
        let (hedged, backlog) = launches(&varying, 0.95);
        assert!(
            hedged > 10 && backlog == hedged,
            "{hedged} launches, backlog {backlog}"
        );
        assert_eq!(launches(&fixed, 0.95), (10, 10));
        assert_eq!(launches(&varying, 0.0), (10, 10), "level 0 is reactive");
        assert!(launches(&varying, 0.99).0 >= hedged);
    }

    /// Worker `w{i}` of one slot on offering `a`, requested at `at`, in `state`.
    fn worker(i: i64, state: capstan_core::WorkerState, at: Timestamp) -> Worker {
        use capstan_core::{PoolId, ProviderKind, WorkerId};
        let mut w = Worker::requested(
            WorkerId::from_string(format!("w{i}")),
            PoolId::new("c").unwrap(),
            ProviderKind::Fake,
            Some("a".into()),
            1,
            format!("t{i}"),
            at,
        );
        w.state = state;
        w
    }

    #[test]
    fn workers_that_time_out_are_not_relaunched_for_gone_demand() {
        use capstan_core::WorkerState;
        let mut c = PoolController::new(&spec(), 60.0).unwrap();
        let t0 = Timestamp::from_unix_secs(10_000);
        let workers: Vec<Worker> = (0..3)
            .map(|i| worker(i, WorkerState::Booting, t0))
            .collect();
        c.observe(&sample(10_000, 3));
        c.observe(&sample(10_010, 0));
        // Past the registration timeout nobody registered, and nothing is pending.
        let now = t0.plus_secs(spec().lifecycle.registration_timeout_s as i64 + 1);
        let (forecast, plan) = c.tick(&workers, now);
        assert_eq!(forecast.backlog_slots, 0);
        assert_eq!(plan.launch_count(), 0, "{plan:?}");
        assert_eq!(plan.actions.len(), 3);
    }

    #[test]
    fn a_versioned_tick_plans_as_a_tick_while_timeouts_run_out() {
        use capstan_core::WorkerState;
        // Idle ready workers whose heartbeats and idle timeouts run out between ticks
        // while the fleet's version stays: the remembered survey must not hide it.
        let t0 = Timestamp::from_unix_secs(50_000);
        let workers: Vec<Worker> = (0..6)
            .map(|i| {
                let mut w = worker(i, WorkerState::Ready, t0);
                w.registered_at = Some(t0);
                w.last_heartbeat_at = Some(t0.plus_secs(i * 40));
                w.idle_since = Some(t0.plus_secs(i * 50));
                w.busy_slots = u32::from(i % 3 == 0);
                if w.busy_slots > 0 {
                    w.idle_since = None;
                }
                w
            })
            .collect();
        let mut plain = PoolController::new(&spec(), 60.0).unwrap();
        let mut versioned = plain.clone();
        let mut changed = 0;
        let mut last = None;
        for k in 0..200 {
            let now = t0.plus_secs(k * 7);
            let s = sample(now.unix_ms() / 1000, u32::from(k % 17 == 0));
            plain.observe(&s);
            versioned.observe(&s);
            let (fa, pa) = plain.tick(&workers, now);
            let (fb, pb) = versioned.tick_versioned(&workers, now, 1);
            assert_eq!((&fa, &pa), (&fb, &pb), "tick {k}");
            if last.as_ref() != Some(&pa.actions) {
                changed += 1;
                last = Some(pa.actions.clone());
            }
        }
        assert!(changed >= 3, "the plans changed {changed} times");
    }
}
