//! The pure planner: (spec, workers, forecast, offering health, now) → [`Plan`].
//!
//! No I/O, no clock, no randomness: the same inputs give the same plan, which is what
//! lets the simulator replay history through exactly this code and lets tests check
//! its invariants with proptest.
//!
//! How a plan is made:
//!
//! 1. **Clean-up terminations.** Failed workers, workers that never registered within
//!    `registration_timeout_s`, registered workers whose heartbeat is older than
//!    `heartbeat_timeout_s`, idle workers older than `max_lifetime_s`, and draining
//!    workers whose heartbeat since the drain reports no busy slot are terminated
//!    whatever the target. They stop counting as capacity.
//! 2. **Target.** `max(forecast target, backlog target)`, raised to the pool's floor
//!    (`min_capacity`, open schedule windows), cut to `max_capacity`. The report names
//!    the term that decided it.
//! 3. **Launches** for the gap between target and current slots: offerings by priority
//!    then price per slot, skipping unavailable ones, ones at their own cap and ones
//!    that would break the budget (slots up to the floor ignore the budget: the floor
//!    is a commitment), never taking the pool over `max_capacity`, and never launching
//!    more instances than `max_launches_per_minute` allows given the [`LaunchLog`].
//! 4. **Scale-in** only through idle timeouts: ready workers idle for at least
//!    the idle timeout (the spec's `idle_timeout_s`, or where the spec leaves it out
//!    the one set with [`Planner::set_auto_idle_timeout_s`], [`DEFAULT_AUTO_IDLE_S`]
//!    until then), longest idle first, while the pool stays at or above the
//!    *keep level*: the forecast's `target_slots` (what is needed, spare included)
//!    raised to the floor. The backlog term never holds workers, since the reactive
//!    estimator counts every existing slot as wanted. A busy worker is never terminated for idleness. Over `max_capacity`,
//!    idle and not-yet-ready workers are terminated (never busy ones), whole
//!    instances at a time: where the floor is not a multiple of the instance size
//!    this can undershoot it, and the ceiling wins.
//!
//! Idempotency tokens are `{pool}-{now_ms}-{sequence}`: deterministic, so `plan` stays
//! pure, and unique per launch action, since a pool is planned once per instant.

use capstan_core::id::push_decimal;
use capstan_core::schedule::CompiledSchedule;
use capstan_core::{
    Action, Forecast, LaunchLog, Offering, OfferingHealth, Plan, PlanReport, PoolSpec, SkipReason,
    SkippedOffering, TargetTerm, TerminateReason, Timestamp, Worker, WorkerState,
};

/// The idle timeout, in seconds, a planner applies to a pool whose spec leaves
/// `idle_timeout_s` out, until its owner chooses one with
/// [`Planner::set_auto_idle_timeout_s`]: one boot time, the controller's default
/// launch-to-ready time ([`crate::controller::DEFAULT_BOOT_S`]). Before anything is
/// known about the pool's idle gaps, keeping an idle worker as long as a replacement
/// would take to boot is the choice that never costs more than twice the best one.
pub const DEFAULT_AUTO_IDLE_S: f64 = 120.0;

/// Why a planner could not be built for a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A schedule did not compile (the spec skipped validation).
    #[error("schedules[{index}]: {message}")]
    BadSchedule {
        /// Position of the schedule in the spec.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// A pool spec prepared for planning: schedules compiled and offerings ranked once, so
/// each tick's [`Planner::plan`] does no parsing or sorting.
#[derive(Debug, Clone)]
pub struct Planner {
    spec: PoolSpec,
    schedules: Vec<CompiledSchedule>,
    /// Offerings in preference order.
    offerings: Vec<Offering>,
    /// Each offering's health key ([`Offering::key`]), parallel to `offerings`.
    keys: Vec<String>,
    /// Lifecycle limits in milliseconds, converted once.
    registration_timeout_ms: i64,
    heartbeat_timeout_ms: i64,
    max_lifetime_ms: Option<i64>,
    /// The idle timeout applied when the spec leaves `idle_timeout_s` out, in seconds.
    auto_idle_timeout_s: f64,
    /// The idle timeout in force, in whole milliseconds (follows the spec and
    /// `auto_idle_timeout_s`).
    idle_timeout_ms: i64,
    /// Slots held idle for tasks shorter than a boot ([`Planner::set_held_slots`]).
    held_slots: u32,
}

/// Plans one tick for `spec` (compiling its schedules on the way). Callers that plan
/// the same spec repeatedly should build a [`Planner`] once instead.
pub fn plan(
    spec: &PoolSpec,
    workers: &[Worker],
    forecast: &Forecast,
    health: &OfferingHealth,
    now: Timestamp,
    launches: &LaunchLog,
) -> Result<Plan, PlanError> {
    Ok(Planner::new(spec)?.plan(workers, forecast, health, now, launches))
}

/// Whether `w` has been idle for at least the pool's idle timeout at `now`.
fn idle_expired(w: &Worker, idle_timeout_ms: i64, now: Timestamp) -> Option<Timestamp> {
    if w.state != WorkerState::Ready || w.busy_slots > 0 {
        return None;
    }
    let since = w.idle_since?;
    (now.unix_ms() - since.unix_ms() >= idle_timeout_ms).then_some(since)
}

/// Seconds (finite, >= 0) to whole milliseconds, saturating.
fn f64_secs_to_ms(s: f64) -> i64 {
    // `as` saturates at i64::MAX for huge values.
    (s * 1000.0).round() as i64
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

impl Planner {
    /// Prepares `spec` for planning.
    pub fn new(spec: &PoolSpec) -> Result<Self, PlanError> {
        let schedules = spec
            .schedules
            .iter()
            .enumerate()
            .map(|(index, s)| {
                CompiledSchedule::new(s)
                    .map_err(|message| PlanError::BadSchedule { index, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let offerings: Vec<Offering> = spec
            .launch_configs
            .iter()
            .map(|lc| Offering::from_launch_config(spec.provider, lc))
            .collect();
        let life = &spec.lifecycle;
        let mut planner = Self {
            spec: spec.clone(),
            schedules,
            offerings: Vec::new(),
            keys: Vec::new(),
            registration_timeout_ms: secs_to_ms(life.registration_timeout_s),
            heartbeat_timeout_ms: secs_to_ms(life.heartbeat_timeout_s),
            max_lifetime_ms: life.max_lifetime_s.map(secs_to_ms),
            auto_idle_timeout_s: DEFAULT_AUTO_IDLE_S,
            idle_timeout_ms: 0,
            held_slots: 0,
        };
        planner.idle_timeout_ms = planner.compute_idle_timeout_ms();
        planner.set_offerings(offerings);
        Ok(planner)
    }

    /// Replaces the offerings with what the provider reports for the pool's launch
    /// configs (current spot prices, one offering per zone where a launch config
    /// leaves the zone open). Offerings of launch configs the spec does not have are
    /// ignored; the order is recomputed.
    pub fn set_offerings(&mut self, mut offerings: Vec<Offering>) {
        offerings.retain(|o| self.spec.launch_config(&o.launch_config_id).is_some());
        offerings.sort_by(Offering::preference_cmp);
        self.keys = offerings
            .iter()
            .map(|o| {
                let lc_zone = self
                    .spec
                    .launch_config(&o.launch_config_id)
                    .and_then(|lc| lc.zone.as_deref());
                o.key(lc_zone)
            })
            .collect();
        self.offerings = offerings;
    }

    /// Sets the idle timeout, in seconds, applied while the spec leaves
    /// `idle_timeout_s` out (capstan chooses it: from the boot time and the observed
    /// idle gaps). An explicit `idle_timeout_s` in the spec always wins. A value that is
    /// not a finite number >= 0 is ignored, keeping the previous one.
    pub fn set_auto_idle_timeout_s(&mut self, s: f64) {
        if s.is_finite() && s >= 0.0 && s.to_bits() != self.auto_idle_timeout_s.to_bits() {
            self.auto_idle_timeout_s = s;
            self.idle_timeout_ms = self.compute_idle_timeout_ms();
        }
    }

    /// Sets the level up to which idle slots are held whatever the timeout (the
    /// controller's [`predictor::held`] level, for the forecast policy): the keep level
    /// is at least this many slots, up to `max_capacity`. Held, never launched for.
    pub fn set_held_slots(&mut self, slots: u32) {
        self.held_slots = slots;
    }

    /// The level set with [`Planner::set_held_slots`].
    pub fn held_slots(&self) -> u32 {
        self.held_slots
    }

    /// The idle timeout the next plan applies, in seconds: the spec's
    /// `idle_timeout_s` when set, else the chosen one
    /// ([`Planner::set_auto_idle_timeout_s`], [`DEFAULT_AUTO_IDLE_S`] until then).
    pub fn idle_timeout_s(&self) -> f64 {
        match self.spec.scaling.idle_timeout_s {
            Some(s) => s as f64,
            None => self.auto_idle_timeout_s,
        }
    }

    /// Whether the idle timeout is chosen by capstan (the spec leaves it out).
    pub fn idle_timeout_chosen(&self) -> bool {
        self.spec.scaling.idle_timeout_s.is_none()
    }

    /// The spec this planner plans for.
    pub fn spec(&self) -> &PoolSpec {
        &self.spec
    }

    /// The pool's offerings in the order the planner tries them.
    pub fn offerings(&self) -> &[Offering] {
        &self.offerings
    }

    /// The highest floor among schedule windows open at `now` (0 if none).
    pub fn schedule_floor(&self, now: Timestamp) -> u32 {
        self.schedules
            .iter()
            .filter(|s| s.is_open(now))
            .map(|s| s.min_capacity)
            .max()
            .unwrap_or(0)
    }

    fn price_of(&self, launch_config_id: Option<&str>) -> f64 {
        launch_config_id
            .and_then(|id| self.offerings.iter().find(|o| o.launch_config_id == id))
            .and_then(|o| o.price_per_hour)
            .unwrap_or(0.0)
    }

    /// Slots of `workers` that count as capacity at `now`: requested, booting and
    /// ready workers, except the ones this tick's clean-up terminates (registration
    /// or heartbeat timeout, maximum lifetime). This is what the predictor's backlog
    /// term must see as existing, or a pool whose workers all time out would keep
    /// relaunching for demand that is gone.
    pub fn counted_slots(&self, workers: &[Worker], now: Timestamp) -> u32 {
        self.survey(workers, now).counted_slots
    }

    /// [`Planner::counted_slots`], whether any worker the plan looks at (live, not
    /// terminating) must be cleaned up, and, when none must, what the plan's own pass
    /// over the fleet would find (slots, whether one is past the idle timeout now in
    /// force), so [`Planner::plan_surveyed`] at the same instant skips that pass.
    pub fn survey(&self, workers: &[Worker], now: Timestamp) -> Survey {
        self.survey_until(workers, now).0
    }

    /// [`Planner::survey`], and the first instant (ms) at which it may change while
    /// the workers stay as they are: a heartbeat, idle timeout, maximum lifetime or
    /// registration timeout running out (`i64::MAX` if none can).
    pub fn survey_until(&self, workers: &[Worker], now: Timestamp) -> (Survey, i64) {
        let idle_timeout_ms = self.idle_timeout_ms();
        let mut slots: u64 = 0;
        let mut current_slots: u32 = 0;
        let mut any_cleanup = false;
        let mut any_idle_expired = false;
        let mut min_idle_capacity = u32::MAX;
        let now_ms = now.unix_ms();
        let mut until = i64::MAX;
        // `now - start >= span` starts to hold at `start + span`: note it if to come.
        let mut flips_at = |start: Timestamp, span: i64| {
            let at = start.unix_ms().saturating_add(span);
            if at > now_ms {
                until = until.min(at);
            }
        };
        for w in workers {
            if w.state == WorkerState::Ready {
                let idle = w.busy_slots == 0;
                if let Some(hb) = w.last_heartbeat_at {
                    flips_at(hb, self.heartbeat_timeout_ms);
                }
                if idle {
                    if let Some(max) = self.max_lifetime_ms {
                        flips_at(w.created_at, max);
                    }
                    if let Some(since) = w.idle_since {
                        flips_at(since, idle_timeout_ms);
                    }
                }
                // The usual worker, with `cleanup_reason` and `idle_expired` spelt out
                // for the ready state (heartbeat lost; idle past the maximum lifetime).
                let heartbeat_lost = w
                    .last_heartbeat_at
                    .is_some_and(|hb| now_ms - hb.unix_ms() >= self.heartbeat_timeout_ms);
                if heartbeat_lost
                    || (idle
                        && self
                            .max_lifetime_ms
                            .is_some_and(|max| now_ms - w.created_at.unix_ms() >= max))
                {
                    any_cleanup = true;
                    continue;
                }
                slots += u64::from(w.capacity);
                current_slots = current_slots.saturating_add(w.capacity);
                if idle
                    && w.idle_since
                        .is_some_and(|since| now_ms - since.unix_ms() >= idle_timeout_ms)
                {
                    any_idle_expired = true;
                    min_idle_capacity = min_idle_capacity.min(w.capacity);
                }
                continue;
            }
            match w.state {
                WorkerState::Draining => {
                    if let Some(hb) = w.last_heartbeat_at {
                        flips_at(hb, self.heartbeat_timeout_ms);
                    }
                    if let Some(max) = self.max_lifetime_ms {
                        flips_at(w.created_at, max);
                    }
                }
                WorkerState::Requested | WorkerState::Booting => {
                    flips_at(w.created_at, self.registration_timeout_ms);
                }
                _ => {}
            }
            if !w.state.is_live() || w.state == WorkerState::Terminating {
                continue;
            }
            if self.cleanup_reason(w, now).is_some() {
                any_cleanup = true;
            } else if w.state.counts_as_capacity() {
                slots += u64::from(w.capacity);
                current_slots = current_slots.saturating_add(w.capacity);
                if idle_expired(w, idle_timeout_ms, now).is_some() {
                    any_idle_expired = true;
                    min_idle_capacity = min_idle_capacity.min(w.capacity);
                }
            }
        }
        let survey = Survey {
            counted_slots: u32::try_from(slots).unwrap_or(u32::MAX),
            any_cleanup,
            current_slots,
            any_idle_expired,
            min_idle_capacity,
            idle_timeout_ms,
        };
        (survey, until)
    }

    /// The idle timeout a survey taken now checks against, in milliseconds.
    pub fn survey_idle_timeout_ms(&self) -> i64 {
        self.idle_timeout_ms
    }

    /// The idle timeout in force, in whole milliseconds.
    fn idle_timeout_ms(&self) -> i64 {
        self.idle_timeout_ms
    }

    fn compute_idle_timeout_ms(&self) -> i64 {
        match self.spec.scaling.idle_timeout_s {
            Some(s) => secs_to_ms(s),
            None => f64_secs_to_ms(self.idle_timeout_s()),
        }
    }

    /// Why `w` must go regardless of demand, if it must.
    #[inline]
    fn cleanup_reason(&self, w: &Worker, now: Timestamp) -> Option<TerminateReason> {
        let now_ms = now.unix_ms();
        let age_ms = now_ms - w.created_at.unix_ms();
        match w.state {
            WorkerState::Failed => Some(TerminateReason::Failed),
            WorkerState::Requested | WorkerState::Booting
                if w.registered_at.is_none() && age_ms >= self.registration_timeout_ms =>
            {
                Some(TerminateReason::RegistrationTimeout)
            }
            WorkerState::Ready | WorkerState::Draining
                if w.last_heartbeat_at
                    .is_some_and(|hb| now_ms - hb.unix_ms() >= self.heartbeat_timeout_ms) =>
            {
                Some(TerminateReason::HeartbeatLost)
            }
            WorkerState::Ready | WorkerState::Draining
                if w.busy_slots == 0 && self.max_lifetime_ms.is_some_and(|max| age_ms >= max) =>
            {
                Some(TerminateReason::MaxLifetime)
            }
            // Drained: a heartbeat since the drain began says nothing runs any more.
            WorkerState::Draining
                if w.busy_slots == 0
                    && w.last_heartbeat_at
                        .is_some_and(|hb| hb >= w.state_changed_at) =>
            {
                Some(TerminateReason::Drained)
            }
            _ => None,
        }
    }

    /// Plans one tick. See the module docs for the rules.
    pub fn plan(
        &self,
        workers: &[Worker],
        forecast: &Forecast,
        health: &OfferingHealth,
        now: Timestamp,
        launches: &LaunchLog,
    ) -> Plan {
        let survey = Survey {
            counted_slots: 0,
            any_cleanup: true,
            current_slots: 0,
            any_idle_expired: false,
            min_idle_capacity: 0,
            idle_timeout_ms: 0,
        };
        self.plan_surveyed(workers, forecast, health, now, launches, survey)
    }

    /// [`Planner::plan`] given the [`Planner::survey`] of the same `workers` at the same
    /// `now` (the same plan, with one pass over the fleet fewer when nothing needs
    /// cleaning up).
    pub fn plan_surveyed(
        &self,
        workers: &[Worker],
        forecast: &Forecast,
        health: &OfferingHealth,
        now: Timestamp,
        launches: &LaunchLog,
        survey: Survey,
    ) -> Plan {
        let check_cleanup = survey.any_cleanup;
        let cleanup_reason = |w: &Worker| {
            if check_cleanup {
                self.cleanup_reason(w, now)
            } else {
                None
            }
        };
        let spec = &self.spec;
        let mut actions = Vec::new();

        // 1. Clean-up, and what remains as capacity.
        let mut current_slots: u32 = 0;
        let mut current_cost = 0.0;
        let mut any_idle_expired = false;
        let idle_timeout_s = self.idle_timeout_s();
        let idle_timeout_ms = self.idle_timeout_ms();
        // The survey's pass stands for this one when it found nothing to clean up, used
        // this idle timeout, and no budget needs the fleet's price.
        let surveyed =
            !check_cleanup && survey.idle_timeout_ms == idle_timeout_ms && spec.budget.is_none();
        if surveyed {
            current_slots = survey.current_slots;
            any_idle_expired = survey.any_idle_expired;
        }
        for w in workers.iter().filter(|_| !surveyed) {
            if !w.state.is_live() || w.state == WorkerState::Terminating {
                continue;
            }
            if let Some(reason) = cleanup_reason(w) {
                actions.push(Action::Terminate {
                    worker: w.id.clone(),
                    reason,
                });
                continue;
            }
            if w.state.counts_as_capacity() {
                current_slots = current_slots.saturating_add(w.capacity);
                if spec.budget.is_some() {
                    current_cost += self.price_of(w.launch_config_id.as_deref());
                }
                any_idle_expired |= idle_expired(w, idle_timeout_ms, now).is_some();
            }
        }

        // 2. Target.
        let schedule_slots = self.schedule_floor(now);
        let forecast_slots = forecast.target_slots;
        let backlog_slots = forecast.backlog_slots;
        let (mut target, mut set_by) = if backlog_slots > forecast_slots {
            (backlog_slots, TargetTerm::Backlog)
        } else {
            (forecast_slots, TargetTerm::Forecast)
        };
        let floor = spec.min_capacity.max(schedule_slots);
        if floor > target {
            target = floor;
            set_by = if schedule_slots > spec.min_capacity {
                TargetTerm::Schedule
            } else {
                TargetTerm::Min
            };
        }
        if target > spec.max_capacity {
            target = spec.max_capacity;
            set_by = TargetTerm::Max;
        }
        let floor = floor.min(spec.max_capacity);
        let held = self.held_slots.min(spec.max_capacity);
        // Idle timeouts stop here: the need, and the warm slots the spec holds above it.
        let keep = forecast_slots
            .saturating_add(spec.scaling.warm_slots)
            .max(floor)
            .max(held)
            .min(spec.max_capacity);

        // 3. Launches.
        let launched_last_minute = launches.launched_in_window(now);
        let mut launches_left = spec
            .scaling
            .max_launches_per_minute
            .saturating_sub(launched_last_minute);
        let mut rate_limited = false;
        let mut budget_limited = false;
        let mut launch_slots: u32 = 0;
        let mut skipped_offerings = Vec::new();
        let mut need = target.saturating_sub(current_slots);
        let mut seq = 0u32;
        if need > 0 {
            for (o, key) in self.offerings.iter().zip(&self.keys) {
                if need == 0 {
                    break;
                }
                if let Some(u) = health.unavailable(key, now) {
                    skipped_offerings.push(SkippedOffering {
                        launch_config_id: key.clone(),
                        reason: SkipReason::Unavailable {
                            until: u.until,
                            reason: u.reason.clone(),
                        },
                    });
                    continue;
                }
                let held = match o.max_slots {
                    Some(_) => offering_slots(workers, &o.launch_config_id),
                    None => 0,
                };
                let own_room = match o.max_slots {
                    Some(max) if held >= max => {
                        skipped_offerings.push(SkippedOffering {
                            launch_config_id: o.launch_config_id.clone(),
                            reason: SkipReason::OverOwnMax {
                                max_slots: max,
                                current_slots: held,
                            },
                        });
                        continue;
                    }
                    Some(max) => (max - held) / o.slots,
                    None => u32::MAX,
                };
                let pool_room = spec
                    .max_capacity
                    .saturating_sub(current_slots + launch_slots)
                    / o.slots;
                let wanted = need.div_ceil(o.slots);
                let mut n = wanted.min(own_room).min(pool_room);
                if n > launches_left {
                    n = launches_left;
                    rate_limited = true;
                }
                // Budget: each instance beyond the floor must fit under the ceiling.
                if let (Some(budget), Some(price)) = (&spec.budget, o.price_per_hour) {
                    let mut fits = 0;
                    let mut cost = current_cost;
                    while fits < n {
                        let within_floor = current_slots + launch_slots + fits * o.slots < floor;
                        if !within_floor && cost + price > budget.max_cost_per_hour + 1e-9 {
                            break;
                        }
                        cost += price;
                        fits += 1;
                    }
                    if fits < n {
                        budget_limited = true;
                        skipped_offerings.push(SkippedOffering {
                            launch_config_id: o.launch_config_id.clone(),
                            reason: SkipReason::OverBudget {
                                current_cost_per_hour: cost,
                                instance_price_per_hour: price,
                                max_cost_per_hour: budget.max_cost_per_hour,
                            },
                        });
                        n = fits;
                    }
                    current_cost = cost;
                } else if let Some(price) = o.price_per_hour {
                    current_cost += price * f64::from(n);
                }
                if n == 0 {
                    continue;
                }
                actions.push(Action::Launch {
                    launch_config_id: o.launch_config_id.clone(),
                    zone: o.zone.clone(),
                    count: n,
                    idempotency_token: token(spec.id.as_str(), now.unix_ms(), seq),
                });
                seq += 1;
                launches_left -= n;
                let slots = n * o.slots;
                launch_slots += slots;
                need = need.saturating_sub(slots);
            }
        }
        let unmet_slots = need;
        let budget_slots = spec
            .budget
            .as_ref()
            .filter(|_| budget_limited)
            .map(|_| current_slots + launch_slots);
        if budget_limited && set_by != TargetTerm::Max {
            set_by = TargetTerm::Budget;
        }

        // 4. Scale-in: idle timeouts above the target; then anything over max.
        let after_launch = current_slots + launch_slots;
        if after_launch > spec.max_capacity || (any_idle_expired && current_slots > keep) {
            let mut remaining = current_slots;
            // No idle worker can go if even the smallest leaves the pool below the
            // keep level (the survey knows the smallest): skip gathering them.
            let idle_can_go =
                !surveyed || current_slots.saturating_sub(survey.min_idle_capacity) >= keep;
            let mut idle: Vec<(Timestamp, &Worker)> = if idle_can_go {
                workers
                    .iter()
                    .filter(|w| cleanup_reason(w).is_none())
                    .filter_map(|w| idle_expired(w, idle_timeout_ms, now).map(|t| (t, w)))
                    .collect()
            } else {
                Vec::new()
            };
            idle.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
            for (_, w) in &idle {
                if remaining.saturating_sub(w.capacity) < keep {
                    continue;
                }
                remaining -= w.capacity;
                actions.push(Action::Terminate {
                    worker: w.id.clone(),
                    reason: TerminateReason::IdleTimeout,
                });
            }
            if remaining > spec.max_capacity {
                // Idle ready workers first (any idle time), then not-yet-ready ones,
                // newest first; never a busy one.
                let mut spare: Vec<&Worker> = workers
                    .iter()
                    .filter(|w| w.state.counts_as_capacity() && w.busy_slots == 0)
                    .filter(|w| cleanup_reason(w).is_none())
                    .filter(|w| idle_expired(w, idle_timeout_ms, now).is_none())
                    .collect();
                spare.sort_by(|a, b| {
                    (a.state != WorkerState::Ready)
                        .cmp(&(b.state != WorkerState::Ready))
                        .then_with(|| b.created_at.cmp(&a.created_at))
                        .then_with(|| a.id.cmp(&b.id))
                });
                for w in spare {
                    if remaining <= spec.max_capacity {
                        break;
                    }
                    remaining -= w.capacity;
                    actions.push(Action::Terminate {
                        worker: w.id.clone(),
                        reason: TerminateReason::OverMax,
                    });
                }
            }
        }

        Plan {
            actions,
            report: PlanReport {
                at: now,
                policy: forecast.policy,
                forecast_slots,
                backlog_slots,
                boot_hedge_slots: 0,
                min_slots: spec.min_capacity,
                schedule_slots,
                max_slots: spec.max_capacity,
                budget_slots,
                target_slots: target,
                target_set_by: set_by,
                keep_slots: keep,
                held_slots: held,
                idle_timeout_s: Some(idle_timeout_s),
                idle_timeout_chosen: self.idle_timeout_chosen(),
                current_slots,
                launch_slots,
                launched_last_minute,
                rate_limited,
                unmet_slots,
                skipped_offerings,
            },
        }
    }
}

/// `{pool}-{now_ms}-{seq}`, as `format!` writes it, without the formatting machinery
/// (one per launch action, many per replay).
fn token(pool: &str, now_ms: i64, seq: u32) -> String {
    let mut s = String::with_capacity(pool.len() + 32);
    s.push_str(pool);
    s.push('-');
    if now_ms < 0 {
        s.push('-');
    }
    push_decimal(&mut s, now_ms.unsigned_abs());
    s.push('-');
    push_decimal(&mut s, u64::from(seq));
    s
}

/// What [`Planner::survey`] found in the fleet at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Survey {
    /// [`Planner::counted_slots`].
    pub counted_slots: u32,
    /// Whether a live, not terminating worker must be cleaned up.
    pub any_cleanup: bool,
    /// Slots of the workers that count as capacity and need no clean-up (the sum
    /// saturating at `u32::MAX` step by step, as the plan adds them).
    pub current_slots: u32,
    /// Whether one of those is past the idle timeout in force.
    pub any_idle_expired: bool,
    /// The smallest capacity among those past it (`u32::MAX` if none is).
    pub min_idle_capacity: u32,
    /// That idle timeout, in milliseconds.
    pub idle_timeout_ms: i64,
}

/// Slots that workers of one launch config hold (requested, booting, ready).
fn offering_slots(workers: &[Worker], launch_config_id: &str) -> u32 {
    workers
        .iter()
        .filter(|w| w.state.counts_as_capacity())
        .filter(|w| w.launch_config_id.as_deref() == Some(launch_config_id))
        .map(|w| w.capacity)
        .sum()
}

#[cfg(test)]
mod tests {
    use capstan_core::{PoolId, ScalingPolicy, WorkerId};

    use super::*;

    const SPEC: &str = "
id: ci/small
provider: aws
min_capacity: 2
max_capacity: 20
launch_configs:
  - id: spot
    region: r
    instance_type: t
    market: spot
    capacity: 2
    priority: 0
    max_capacity: 4
    price_per_hour: 0.2
  - id: od-cheap-per-slot
    region: r
    instance_type: t
    capacity: 4
    priority: 10
    price_per_hour: 0.4
  - id: od-dear-per-slot
    region: r
    instance_type: t
    capacity: 1
    priority: 10
    price_per_hour: 0.2
scaling:
  idle_timeout_s: 600
  max_launches_per_minute: 5
";

    fn spec() -> PoolSpec {
        PoolSpec::from_yaml(SPEC).unwrap()
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_secs(s)
    }

    fn forecast(target: u32, backlog: u32) -> Forecast {
        Forecast {
            made_at: t(10_000),
            policy: ScalingPolicy::Forecast,
            lead_s: 120.0,
            target_slots: target,
            backlog_slots: backlog,
            expected_busy_slots: f64::from(target),
            points: Vec::new(),
        }
    }

    fn ready(id: &str, lc: &str, slots: u32, busy: u32, idle_since: Option<i64>) -> Worker {
        let mut w = Worker::requested(
            WorkerId::from_string(id),
            PoolId::new("ci/small").unwrap(),
            capstan_core::ProviderKind::Aws,
            Some(lc.into()),
            slots,
            format!("tok-{id}"),
            t(0),
        );
        w.state = WorkerState::Ready;
        w.registered_at = Some(t(100));
        w.last_heartbeat_at = Some(t(9_990));
        w.busy_slots = busy;
        w.idle_since = idle_since.map(t);
        w
    }

    #[test]
    fn launches_by_priority_then_price_per_slot_within_own_caps() {
        let p = Planner::new(&spec()).unwrap();
        let plan = p.plan(
            &[],
            &forecast(11, 0),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        // spot: capped at 4 slots = 2 instances; then the 4-slot on-demand (0.1/slot)
        // before the 1-slot one (0.2/slot): 7 slots left -> 2 instances (8 slots).
        assert_eq!(
            plan.actions,
            vec![
                Action::Launch {
                    launch_config_id: "spot".into(),
                    zone: None,
                    count: 2,
                    idempotency_token: "ci/small-10000000-0".into(),
                },
                Action::Launch {
                    launch_config_id: "od-cheap-per-slot".into(),
                    zone: None,
                    count: 2,
                    idempotency_token: "ci/small-10000000-1".into(),
                },
            ]
        );
        assert_eq!(plan.report.target_set_by, TargetTerm::Forecast);
        assert_eq!(plan.report.launch_slots, 12);
        assert_eq!(plan.report.unmet_slots, 0);
    }

    #[test]
    fn a_draining_worker_goes_once_a_heartbeat_since_the_drain_reports_it_idle() {
        let p = Planner::new(&spec()).unwrap();
        let draining = |id: &str, busy: u32, heartbeat: i64| {
            let mut w = ready(id, "spot", 2, busy, None);
            w.state = WorkerState::Draining;
            w.state_changed_at = t(9_980);
            w.last_heartbeat_at = Some(t(heartbeat));
            w
        };
        let workers = [
            // Idle, and said so after the drain began: terminated.
            draining("w-idle", 0, 9_990),
            // Still busy: kept.
            draining("w-busy", 1, 9_990),
            // Idle as of a heartbeat from before the drain (it may have taken a task
            // since): kept until it reports again.
            draining("w-stale", 0, 9_970),
        ];
        let plan = p.plan(
            &workers,
            &forecast(0, 0),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        let terminated: Vec<(&str, TerminateReason)> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Terminate { worker, reason } => Some((worker.as_str(), *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(terminated, vec![("w-idle", TerminateReason::Drained)]);
        // Draining workers are not capacity: the floor of 2 slots is launched anew.
        assert_eq!(plan.report.current_slots, 0);
    }

    #[test]
    fn unhealthy_and_capped_offerings_are_skipped_with_reasons() {
        let p = Planner::new(&spec()).unwrap();
        let mut health = OfferingHealth::new();
        health.mark_unavailable(
            "od-cheap-per-slot",
            t(10_060),
            "InsufficientInstanceCapacity",
        );
        let workers = [
            ready("w1", "spot", 2, 2, None),
            ready("w2", "spot", 2, 2, None),
        ];
        let plan = p.plan(
            &workers,
            &forecast(6, 0),
            &health,
            t(10_000),
            &LaunchLog::new(),
        );
        assert_eq!(
            plan.report.skipped_offerings,
            vec![
                SkippedOffering {
                    launch_config_id: "spot".into(),
                    reason: SkipReason::OverOwnMax {
                        max_slots: 4,
                        current_slots: 4
                    },
                },
                SkippedOffering {
                    launch_config_id: "od-cheap-per-slot".into(),
                    reason: SkipReason::Unavailable {
                        until: t(10_060),
                        reason: "InsufficientInstanceCapacity".into()
                    },
                },
            ]
        );
        assert_eq!(plan.launch_count(), 2);
        assert!(
            matches!(&plan.actions[0], Action::Launch { launch_config_id, .. } if launch_config_id == "od-dear-per-slot")
        );
    }

    #[test]
    fn rate_limit_counts_launches_of_the_last_minute() {
        let p = Planner::new(&spec()).unwrap();
        let mut log = LaunchLog::new();
        log.record(t(9_950), 4);
        let plan = p.plan(
            &[],
            &forecast(20, 0),
            &OfferingHealth::new(),
            t(10_000),
            &log,
        );
        assert_eq!(plan.launch_count(), 1);
        assert!(plan.report.rate_limited);
        assert_eq!(plan.report.launched_last_minute, 4);
    }

    #[test]
    fn idle_workers_go_only_past_the_timeout_and_above_the_target() {
        let p = Planner::new(&spec()).unwrap();
        let workers = [
            ready("long-idle", "od-dear-per-slot", 1, 0, Some(1_000)),
            ready("idle-2", "od-dear-per-slot", 1, 0, Some(9_000)),
            ready("fresh-idle", "od-dear-per-slot", 1, 0, Some(9_900)),
            ready("busy", "od-dear-per-slot", 1, 1, None),
        ];
        let plan = p.plan(
            &workers,
            &forecast(0, 0),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        // min_capacity 2 keeps two of the four; the longest idle goes first.
        assert_eq!(
            plan.actions,
            vec![
                Action::Terminate {
                    worker: WorkerId::from_string("long-idle"),
                    reason: TerminateReason::IdleTimeout
                },
                Action::Terminate {
                    worker: WorkerId::from_string("idle-2"),
                    reason: TerminateReason::IdleTimeout
                },
            ]
        );
        assert_eq!(plan.report.target_set_by, TargetTerm::Min);
    }

    /// Workers idle 1000 s, 300 s and 60 s at t(10_000), nothing busy, no floor, the
    /// forecast needing `need` slots: the ones the plan retires, and its report.
    fn idle_for(p: &Planner, need: u32) -> (Vec<String>, PlanReport) {
        let workers = [
            ready("idle-1000", "od-dear-per-slot", 1, 0, Some(9_000)),
            ready("idle-300", "od-dear-per-slot", 1, 0, Some(9_700)),
            ready("idle-60", "od-dear-per-slot", 1, 0, Some(9_940)),
        ];
        let plan = p.plan(
            &workers,
            &forecast(need, 0),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        let gone = plan
            .actions
            .iter()
            .map(|a| match a {
                Action::Terminate {
                    worker,
                    reason: TerminateReason::IdleTimeout,
                } => worker.as_str().to_owned(),
                other => panic!("only idle terminations expected, got {other:?}"),
            })
            .collect();
        (gone, plan.report)
    }

    #[test]
    fn an_unset_idle_timeout_uses_the_chosen_one() {
        let mut spec = spec();
        spec.min_capacity = 0;
        spec.scaling.idle_timeout_s = None;
        let mut p = Planner::new(&spec).unwrap();
        // Before anything is chosen: one default boot time (120 s).
        assert_eq!(p.idle_timeout_s(), DEFAULT_AUTO_IDLE_S);
        let (gone, report) = idle_for(&p, 0);
        assert_eq!(gone, ["idle-1000", "idle-300"]);
        assert_eq!(report.idle_timeout_s, Some(120.0));
        assert!(report.idle_timeout_chosen);

        p.set_auto_idle_timeout_s(500.0);
        assert_eq!(p.idle_timeout_s(), 500.0);
        let (gone, report) = idle_for(&p, 0);
        assert_eq!(gone, ["idle-1000"]);
        assert_eq!(report.idle_timeout_s, Some(500.0));

        p.set_auto_idle_timeout_s(30.0);
        // Not a timeout: ignored, 30 s stays.
        p.set_auto_idle_timeout_s(f64::NAN);
        p.set_auto_idle_timeout_s(-1.0);
        p.set_auto_idle_timeout_s(f64::INFINITY);
        assert_eq!(p.idle_timeout_s(), 30.0);
        let (gone, report) = idle_for(&p, 0);
        assert_eq!(gone, ["idle-1000", "idle-300", "idle-60"]);
        assert_eq!(report.idle_timeout_s, Some(30.0));
    }

    #[test]
    fn warm_slots_stand_above_the_need_and_the_oldest_idle_go_first() {
        let mut spec = spec();
        spec.min_capacity = 0;
        spec.scaling.idle_timeout_s = Some(30);
        for (warm, need, expected) in [
            (0, 0, &["idle-1000", "idle-300", "idle-60"][..]),
            (1, 0, &["idle-1000", "idle-300"][..]),
            (2, 0, &["idle-1000"][..]),
            (1, 1, &["idle-1000"][..]),
            (3, 0, &[][..]),
        ] {
            spec.scaling.warm_slots = warm;
            let p = Planner::new(&spec).unwrap();
            let (gone, report) = idle_for(&p, need);
            assert_eq!(gone, expected, "warm {warm}, need {need}");
            assert_eq!(report.keep_slots, need + warm);
            // Held, not launched for: the target stays the need.
            assert_eq!(report.target_slots, need);
        }
    }

    #[test]
    fn held_slots_raise_the_keep_level_to_them_and_are_not_launched_for() {
        let mut spec = spec();
        spec.min_capacity = 0;
        spec.scaling.idle_timeout_s = Some(30);
        let mut p = Planner::new(&spec).unwrap();
        assert_eq!(p.held_slots(), 0);
        for (held, need, expected) in [
            (0, 0, &["idle-1000", "idle-300", "idle-60"][..]),
            (2, 0, &["idle-1000"][..]),
            // A level, not slots on top: a need of 1 under a held level of 2 keeps 2.
            (2, 1, &["idle-1000"][..]),
            (1, 2, &["idle-1000"][..]),
            (5, 0, &[][..]),
        ] {
            p.set_held_slots(held);
            let (gone, report) = idle_for(&p, need);
            assert_eq!(gone, expected, "held {held}, need {need}");
            assert_eq!(report.keep_slots, held.max(need));
            assert_eq!(report.held_slots, held);
            assert_eq!(report.target_slots, need);
        }
        // Never above the pool's max.
        spec.max_capacity = 1;
        let mut p = Planner::new(&spec).unwrap();
        p.set_held_slots(5);
        let (gone, report) = idle_for(&p, 0);
        assert_eq!(
            (gone.len(), report.keep_slots, report.held_slots),
            (2, 1, 1)
        );
    }

    #[test]
    fn an_explicit_idle_timeout_ignores_the_chosen_one() {
        let mut spec = spec();
        spec.min_capacity = 0;
        spec.scaling.idle_timeout_s = Some(250);
        let mut p = Planner::new(&spec).unwrap();
        for chosen in [30.0, 5_000.0] {
            p.set_auto_idle_timeout_s(chosen);
            assert_eq!(p.idle_timeout_s(), 250.0);
            let (gone, report) = idle_for(&p, 0);
            assert_eq!(gone, ["idle-1000", "idle-300"], "chosen {chosen} s");
            assert_eq!(report.idle_timeout_s, Some(250.0));
            assert!(!report.idle_timeout_chosen);
        }
    }

    #[test]
    fn the_default_chosen_idle_timeout_is_one_default_boot() {
        assert_eq!(DEFAULT_AUTO_IDLE_S, crate::controller::DEFAULT_BOOT_S);
    }

    #[test]
    fn lifecycle_limits_terminate_whatever_the_demand() {
        let mut spec = spec();
        spec.lifecycle.max_lifetime_s = Some(5_000);
        let p = Planner::new(&spec).unwrap();
        let mut never_registered = ready("never", "spot", 2, 0, None);
        never_registered.state = WorkerState::Booting;
        never_registered.registered_at = None;
        never_registered.created_at = t(10_000 - 900);
        let mut silent = ready("silent", "spot", 2, 1, None);
        silent.last_heartbeat_at = Some(t(10_000 - 300));
        let mut failed = ready("failed", "od-dear-per-slot", 1, 0, None);
        failed.state = WorkerState::Failed;
        let old_busy = ready("old-busy", "od-dear-per-slot", 1, 1, None);
        let old_idle = ready("old-idle", "od-dear-per-slot", 1, 0, Some(9_999));
        let workers = [never_registered, silent, failed, old_busy, old_idle];
        let plan = p.plan(
            &workers,
            &forecast(50, 50),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        let terminated: Vec<_> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Terminate { worker, reason } => Some((worker.as_str(), *reason)),
                Action::Launch { .. } => None,
            })
            .collect();
        assert_eq!(
            terminated,
            [
                ("never", TerminateReason::RegistrationTimeout),
                ("silent", TerminateReason::HeartbeatLost),
                ("failed", TerminateReason::Failed),
                ("old-idle", TerminateReason::MaxLifetime),
            ]
        );
        // Only the busy old worker still counts; demand is capped at max (20).
        assert_eq!(plan.report.current_slots, 1);
        assert_eq!(plan.report.target_set_by, TargetTerm::Max);
    }

    #[test]
    fn budget_caps_launches_above_the_floor_and_says_so() {
        let mut spec = spec();
        spec.budget = Some(capstan_core::Budget {
            max_cost_per_hour: 0.5,
        });
        let p = Planner::new(&spec).unwrap();
        let plan = p.plan(
            &[],
            &forecast(10, 0),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        // Two spot instances (0.4/h) fit; a 4-slot on-demand (0.4/h) would not.
        assert_eq!(plan.launch_count(), 2);
        assert_eq!(plan.report.target_set_by, TargetTerm::Budget);
        assert_eq!(plan.report.budget_slots, Some(4));
        assert!(
            plan.report
                .skipped_offerings
                .iter()
                .any(|s| matches!(s.reason, SkipReason::OverBudget { .. }))
        );
    }

    #[test]
    fn schedule_floor_raises_the_target() {
        let mut spec = spec();
        spec.schedules.push(capstan_core::Schedule {
            cron: "0 0 * * *".into(),
            timezone: "UTC".into(),
            duration_s: 86_400,
            min_capacity: 6,
        });
        let p = Planner::new(&spec).unwrap();
        let plan = p.plan(
            &[],
            &forecast(1, 3),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        assert_eq!(plan.report.schedule_slots, 6);
        assert_eq!(plan.report.target_slots, 6);
        assert_eq!(plan.report.target_set_by, TargetTerm::Schedule);
    }

    #[test]
    fn bad_schedule_is_an_error_naming_its_index() {
        let mut spec = spec();
        spec.schedules.push(capstan_core::Schedule {
            cron: "nope".into(),
            timezone: "UTC".into(),
            duration_s: 1,
            min_capacity: 1,
        });
        let err = Planner::new(&spec).unwrap_err();
        assert!(err.to_string().starts_with("schedules[0]: "), "{err}");
    }

    #[test]
    fn provider_offerings_bring_zones_and_prices_and_fall_back_zone_by_zone() {
        let mut p = Planner::new(&spec()).unwrap();
        let base = Offering::from_launch_config(
            capstan_core::ProviderKind::Aws,
            spec().launch_config("od-cheap-per-slot").unwrap(),
        );
        // The provider offers the zone-less launch config in two zones; b is cheaper
        // now. Offerings of launch configs the spec does not have are ignored.
        let zoned = |zone: &str, price: f64| Offering {
            zone: Some(zone.into()),
            price_per_hour: Some(price),
            ..base.clone()
        };
        let stranger = Offering {
            launch_config_id: "not-in-spec".into(),
            price_per_hour: Some(0.0),
            priority: -100,
            ..base.clone()
        };
        p.set_offerings(vec![zoned("r-a", 0.4), zoned("r-b", 0.3), stranger]);
        assert_eq!(p.offerings().len(), 2);
        let plan = p.plan(
            &[],
            &forecast(8, 0),
            &OfferingHealth::new(),
            t(10_000),
            &LaunchLog::new(),
        );
        assert_eq!(
            plan.actions,
            vec![Action::Launch {
                launch_config_id: "od-cheap-per-slot".into(),
                zone: Some("r-b".into()),
                count: 2,
                idempotency_token: "ci/small-10000000-0".into(),
            }]
        );
        // A capacity error in r-b marks only that zone: the next plan uses r-a.
        let mut health = OfferingHealth::new();
        health.mark_unavailable(
            "od-cheap-per-slot/r-b",
            t(10_180),
            "InsufficientInstanceCapacity",
        );
        let plan = p.plan(&[], &forecast(8, 0), &health, t(10_030), &LaunchLog::new());
        assert!(
            matches!(&plan.actions[..], [Action::Launch { zone: Some(z), count: 2, .. }] if z == "r-a"),
            "{plan:?}"
        );
        assert_eq!(
            plan.report.skipped_offerings[0].launch_config_id,
            "od-cheap-per-slot/r-b"
        );
    }

    #[test]
    fn tokens_read_as_format_writes_them() {
        for (ms, seq) in [
            (0, 0),
            (1_700_000_000_123, 7),
            (-5_000, 12),
            (i64::MIN, u32::MAX),
        ] {
            assert_eq!(token("ci/small", ms, seq), format!("ci/small-{ms}-{seq}"));
        }
    }

    #[test]
    fn a_survey_without_clean_ups_plans_as_plan_does() {
        let spec = PoolSpec::from_yaml(SPEC).unwrap();
        let planner = Planner::new(&spec).unwrap();
        let now = Timestamp::from_unix_secs(100_000);
        let mut workers: Vec<Worker> = (0..4)
            .map(|i| {
                let mut w = Worker::requested(
                    WorkerId::from_string(format!("w{i}")),
                    spec.id.clone(),
                    spec.provider,
                    Some("spot".into()),
                    2,
                    format!("t{i}"),
                    now.plus_secs(-3_600),
                );
                w.state = WorkerState::Ready;
                w.registered_at = Some(now.plus_secs(-3_500));
                w.last_heartbeat_at = Some(now.plus_secs(-5));
                w.idle_since = Some(now.plus_secs(-3_000));
                w
            })
            .collect();
        let forecast = Forecast {
            made_at: now,
            policy: ScalingPolicy::Forecast,
            lead_s: 120.0,
            target_slots: 3,
            backlog_slots: 0,
            expected_busy_slots: 3.0,
            points: Vec::new(),
        };
        let (health, log) = (OfferingHealth::new(), LaunchLog::new());
        let survey = planner.survey(&workers, now);
        assert_eq!(survey.counted_slots, 8);
        assert!(!survey.any_cleanup);
        let plan = planner.plan(&workers, &forecast, &health, now, &log);
        assert!(!plan.actions.is_empty(), "idle workers above the target go");
        assert_eq!(
            planner.plan_surveyed(&workers, &forecast, &health, now, &log, survey),
            plan
        );
        // A worker whose heartbeat is lost: the survey says so and does not count it.
        workers[1].last_heartbeat_at = Some(now.plus_secs(-86_400));
        let survey = planner.survey(&workers, now);
        assert_eq!(survey.counted_slots, 6);
        assert!(survey.any_cleanup);
        assert_eq!(
            planner.plan_surveyed(&workers, &forecast, &health, now, &log, survey),
            planner.plan(&workers, &forecast, &health, now, &log)
        );
    }
}
