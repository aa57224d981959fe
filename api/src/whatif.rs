//! `POST /v1/pools/{pool_id}/simulate`: what-if on a pool's own history.
//!
//! The pool's recorded queue samples and task runs of the last `days` days become one
//! trace ([`simulations::history_replay`]), which is replayed twice through
//! [`simulations::engine::simulate`] — the same predictor and planner code the
//! reconcile loop runs — once with the pool's current spec and once with the candidate
//! in the body, and both results come back side by side: cost, instance-hours, waits,
//! launches, the ratio to the oracle, and their series over time.
//!
//! A what-if only reads: the pool, its samples, task runs and workers. It writes
//! nothing (no generation, audit entry, worker or error changes) and never wakes the
//! reconcile loop; it needs `pools:read:<pool_id>`.
//!
//! - **The candidate** is validated exactly like a `PUT` (422 `invalid_spec` with every
//!   problem, its field under `spec.`); its `id` may be left out and must otherwise be
//!   the pool's. `provider` and `provider_config` do not matter: both replays run in
//!   the simulated cloud, so a candidate written for another provider is fine.
//! - **The setting.** Machines boot in the median launch-to-registration time of the
//!   pool's own workers (the simulator's 120 s when none registered yet); the simulated
//!   cloud neither fails launches nor interrupts spot machines; ticks are 30 s, the
//!   loop's default; prices are the launch configs' `price_per_hour` (0 when unset).
//! - **The answer** says what the replay assumed (`input.notes`): where arrivals and
//!   run times came from, the boot time, gaps in the history.
//! - **Cost.** Replays are CPU-bound: they run on blocking threads, the two of one
//!   what-if in parallel, and at most [`MAX_CONCURRENT_WHATIFS`] what-if runs at once
//!   per replica; another is answered 503 `busy` with `Retry-After`. A replay holds at
//!   most [`simulations::history_replay::MAX_REPLAY_TASKS`] tasks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use capstan_core::{FieldError, PoolId, PoolSpec, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use simulations::cloud::{BootTime, CloudModel};
use simulations::engine::{Outcome, Report, SeriesPoint, SimConfig, SimError, simulate};
use simulations::history_replay::{HistoryError, HistoryWindow, RecordedRun, trace_from_history};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::pools::{PoolIdParam, PoolPath, existing, spec_from_body};
use crate::request::{JsonBody, decode};

/// Default `days`.
pub const DEFAULT_DAYS: u32 = 14;
/// Most `days`: the raw history kept by default (`raw_history_days`), replayed exactly.
pub const MAX_DAYS: u32 = 35;
/// Default `seed`.
pub const DEFAULT_SEED: u64 = 1;
/// What-ifs one replica runs at once: each runs its two replays in parallel, which
/// takes this 2-core machine's both cores.
pub const MAX_CONCURRENT_WHATIFS: usize = 1;
/// Seconds a client refused for being busy is told to wait.
const BUSY_RETRY_AFTER_S: u64 = 5;
/// Reconcile interval of the replays: the loop's default.
const TICK_S: u64 = 30;
/// Points of each series (a 14-day window comes in 20-minute buckets).
const SERIES_POINTS: usize = 1000;

/// The what-ifs running on this replica: [`MAX_CONCURRENT_WHATIFS`] slots.
#[derive(Debug, Clone)]
pub struct WhatIfSlots(Arc<Semaphore>);

impl Default for WhatIfSlots {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_CONCURRENT_WHATIFS)))
    }
}

impl WhatIfSlots {
    /// A free slot, held until the returned permit is dropped; `None` when all are taken.
    pub fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.0).try_acquire_owned().ok()
    }
}

/// The body of a what-if.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    /// The candidate spec, validated like a `PUT` of the pool; `id` may be left out.
    #[schema(value_type = PoolSpec)]
    pub spec: Value,
    /// Days of history to replay, ending now: 1 to 35 (default 14).
    #[schema(minimum = 1, maximum = 35)]
    pub days: Option<i64>,
    /// Seed of the replay's random draws (arrival instants, run times); default 1.
    pub seed: Option<u64>,
}

/// What a what-if replayed and assumed.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhatIfInput {
    /// Queue samples replayed.
    pub samples: u64,
    /// Tasks replayed (arrivals in the window).
    pub arrivals: u64,
    /// Task runs the run times were drawn from (0: Little's law).
    pub task_runs: u64,
    /// Launch-to-ready time of the simulated machines, in seconds.
    pub boot_s: f64,
    /// `workers` (the median of the pool's own) or `default` (none registered yet).
    pub boot_from: String,
    /// `recorded` (the samples' arrivals) or `derived` (rise of pending + running plus
    /// finished task runs: the samples carry no completions).
    pub arrivals_from: String,
    /// `task_runs` or `littles_law` (no task run recorded).
    pub run_times_from: String,
    /// What was assumed, in words.
    pub notes: Vec<String>,
}

/// One replay's result.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhatIfRun {
    /// What the replay measured, as `capstan simulate --json` prints it: `cost`,
    /// `instance_seconds`, `wait_s` (`mean`, `p50`, `p95`, `p99`, `max`), `launches`,
    /// `terminations`, `utilization`, `oracle_instance_seconds`, `ratio_to_oracle`, ...
    /// (`wall_seconds` is the one field that differs between equal runs).
    #[schema(value_type = Object)]
    pub report: Report,
    /// Demand, capacity and queue over time (at most 1000 points; `t_s` counts from the
    /// first arrival), maxima over each point's bucket.
    #[schema(value_type = Vec<Object>)]
    pub series: Vec<SeriesPoint>,
}

impl From<Outcome> for WhatIfRun {
    fn from(o: Outcome) -> Self {
        Self {
            report: o.report,
            series: o.series,
        }
    }
}

/// The answer of a what-if: the current spec and the candidate on the same history.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhatIfView {
    /// The pool.
    pub pool_id: PoolId,
    /// Start of the history replayed.
    pub from: Timestamp,
    /// End of the history replayed (the time of the request).
    pub until: Timestamp,
    /// Days replayed.
    pub days: u32,
    /// Seed of the replay.
    pub seed: u64,
    /// What was replayed and assumed.
    pub input: WhatIfInput,
    /// The pool as it is.
    pub current: WhatIfRun,
    /// The pool with the candidate spec.
    pub candidate: WhatIfRun,
}

/// The candidate of `body.spec` for pool `id`, validated like a PUT; problems name
/// their field under `spec.`.
fn candidate_spec(id: &PoolId, spec: Value) -> Result<PoolSpec, ApiError> {
    spec_from_body(id, spec).map_err(|e| {
        let problems = e
            .body()
            .problems
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| FieldError {
                field: if p.field.is_empty() {
                    "spec".to_owned()
                } else {
                    format!("spec.{}", p.field)
                },
                message: p.message,
            })
            .collect();
        ApiError::invalid("invalid_spec", problems)
    })
}

/// The median launch-to-registration time of `workers`, in seconds, if any registered.
fn measured_boot_s(workers: &[capstan_core::Worker]) -> Option<(f64, usize)> {
    let mut boots: Vec<f64> = workers
        .iter()
        .filter_map(|w| Some(w.registered_at?.secs_since(w.created_at)))
        .filter(|s| s.is_finite() && *s >= 0.0)
        .collect();
    boots.sort_by(f64::total_cmp);
    boots.get(boots.len() / 2).map(|&b| (b, boots.len()))
}

/// Notes about the specs that the numbers depend on.
fn spec_notes(current: &PoolSpec, candidate: &PoolSpec) -> Vec<String> {
    let mut notes = Vec::new();
    if current.provider != candidate.provider {
        notes.push(format!(
            "the candidate's provider ({}) differs from the pool's ({}): provider and \
             provider_config do not change a what-if, which runs in the simulated cloud",
            candidate.provider, current.provider
        ));
    }
    for (which, spec) in [("current", current), ("candidate", candidate)] {
        let unpriced: Vec<&str> = spec
            .launch_configs
            .iter()
            .filter(|lc| lc.price_per_hour.is_none())
            .map(|lc| lc.id.as_str())
            .collect();
        if !unpriced.is_empty() {
            notes.push(format!(
                "{which} spec: launch configs without price_per_hour cost 0 here ({})",
                unpriced.join(", ")
            ));
        }
    }
    notes
}

/// A simulation failure: a schedule the planner cannot compile is the candidate's
/// problem (422); anything else is internal.
fn sim_error(e: SimError, which: &str) -> ApiError {
    match e {
        SimError::Plan(e) if which == "candidate" => ApiError::invalid(
            "invalid_spec",
            vec![FieldError {
                field: "spec.schedules".into(),
                message: e.to_string(),
            }],
        ),
        other => ApiError::internal(&format!("what-if, {which} spec: {other}")),
    }
}

/// A what-if on the pool's own history
///
/// Replays the pool's recorded queue samples and task run times of the last `days`
/// days (1 to 35, default 14) through the simulator — the same predictor and planner
/// the reconcile loop runs — with the pool's current spec and with the candidate
/// `spec`, and answers both side by side: cost, instance-hours, wait mean, p95 and
/// p99, launches, the ratio to the oracle, and series over time. `input.notes` says
/// what the replay assumed (arrivals, run times, boot time).
///
/// The candidate is validated like a `PUT` (problems name `spec.<field>`); its `id`
/// may be left out. `provider` and `provider_config` do not change the result (the
/// replay runs in a simulated cloud), so a candidate for another provider is
/// accepted. Nothing is written: the live pool, its workers, audit log and errors are
/// untouched. One what-if runs at a time per replica; another meanwhile is 503 with
/// `Retry-After`. Needs `pools:read:<pool_id>`.
#[utoipa::path(
    post, path = "/v1/pools/{pool_id}/simulate", tag = "pools",
    params(PoolIdParam),
    request_body(content = SimulateRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Both replays, side by side", body = WhatIfView),
        (status = 400, description = "Malformed JSON, bad pool id, or `days` out of 1..=35", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing pools:read:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 422, description = "Invalid candidate (`invalid_spec`, fields under `spec.`), a bad body field (`invalid_request`), or a history that cannot be replayed (`no_history`: what is missing and how to get it)", body = ErrorBody),
        (status = 503, description = "Another what-if is running (`busy`, with Retry-After), or the request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn simulate_pool(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    req: Request,
) -> Result<Json<WhatIfView>, ApiError> {
    caller.require(Action::PoolsRead, id.as_str())?;
    let JsonBody(body) = JsonBody::read(req).await?;
    let request: SimulateRequest = decode(body)?;
    let days = match request.days {
        None => DEFAULT_DAYS,
        Some(d) if (1..=i64::from(MAX_DAYS)).contains(&d) => d as u32,
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "days: must be between 1 and {MAX_DAYS} (the raw history kept by default), got {d}"
            )));
        }
    };
    let seed = request.seed.unwrap_or(DEFAULT_SEED);
    let current = existing(&state.store, &id).await?.spec;
    let candidate = candidate_spec(&id, request.spec)?;
    if current.launch_configs.is_empty() {
        return Err(ApiError::unprocessable(
            "no_launch_configs",
            format!(
                "pool {id} has no launch configs (provider {}): its capacity is its machines, \
                 which a what-if does not launch",
                current.provider
            ),
        ));
    }
    if candidate.launch_configs.is_empty() {
        return Err(ApiError::invalid(
            "invalid_spec",
            vec![FieldError {
                field: "spec.launch_configs".into(),
                message: "a what-if needs at least one launch config to launch machines from"
                    .into(),
            }],
        ));
    }
    // Taken before reading the history, so that refused what-ifs cost nothing and the
    // history of only one is in memory at a time.
    let permit = state.whatifs.try_take().ok_or_else(|| {
        ApiError::busy(
            BUSY_RETRY_AFTER_S,
            format!(
                "another what-if is running on this replica (at most {MAX_CONCURRENT_WHATIFS} at \
                 once); retry in {BUSY_RETRY_AFTER_S} s"
            ),
        )
    })?;
    let until = state.now();
    let from = until.plus_secs(-i64::from(days) * 86_400);
    let samples = state.store.queue_samples(&id, from, until).await?;
    let runs: Vec<RecordedRun> = state
        .store
        .task_runs(&id, from, until)
        .await?
        .into_iter()
        .map(|r| RecordedRun {
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
        })
        .collect();
    let workers = state.store.list_workers(&id, true).await?;
    let (boot_s, boot_note, boot_from) = match measured_boot_s(&workers) {
        Some((b, n)) => (
            b,
            format!(
                "machines boot in {b:.1} s, the median launch-to-registration time of the \
                 pool's {n} registered workers"
            ),
            "workers",
        ),
        None => {
            let b = simulations::cloud::OfferingModel::default()
                .boot
                .typical_s();
            (
                b,
                format!(
                    "machines boot in {b} s, the simulator's default: no worker of the pool \
                     has registered yet"
                ),
                "default",
            )
        }
    };
    let notes_after = spec_notes(&current, &candidate);
    let pool_id = id.clone();
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let replay = trace_from_history(&HistoryWindow {
            from,
            until,
            samples: &samples,
            runs: &runs,
            seed,
        })
        .map_err(|e| history_error(&pool_id, days, &e))?;
        let config = |spec: PoolSpec| {
            let mut cloud = CloudModel::default();
            cloud.defaults.boot = BootTime::Constant(boot_s);
            SimConfig {
                spec,
                cloud,
                tick_s: TICK_S,
                seed,
                series_points: SERIES_POINTS,
            }
        };
        let (current_config, candidate_config) = (config(current), config(candidate));
        let trace = &replay.trace;
        let (current, candidate) = std::thread::scope(|s| {
            let other = s.spawn(|| simulate(trace, &candidate_config, &mut |_| {}));
            let current = simulate(trace, &current_config, &mut |_| {});
            (current, other.join())
        });
        let current = current.map_err(|e| sim_error(e, "current"))?;
        let candidate = candidate
            .map_err(|_| ApiError::internal(&"what-if: the candidate's replay panicked"))?
            .map_err(|e| sim_error(e, "candidate"))?;
        let mut notes = replay.notes.clone();
        notes.push(boot_note);
        notes.extend(notes_after);
        Ok::<_, ApiError>(WhatIfView {
            pool_id,
            from,
            until,
            days,
            seed,
            input: WhatIfInput {
                samples: replay.samples,
                arrivals: replay.trace.tasks.len() as u64,
                task_runs: replay.task_runs,
                boot_s,
                boot_from: boot_from.to_owned(),
                arrivals_from: replay.arrivals_from.as_str().to_owned(),
                run_times_from: replay.run_times_from.as_str().to_owned(),
                notes,
            },
            current: current.into(),
            candidate: candidate.into(),
        })
    });
    let view = work
        .await
        .map_err(|e| ApiError::internal(&format!("what-if task: {e}")))??;
    Ok(Json(view))
}

/// A history that cannot be replayed: 422 `no_history`, saying what is missing.
fn history_error(id: &PoolId, days: u32, e: &HistoryError) -> ApiError {
    ApiError::unprocessable(
        "no_history",
        format!("pool {id}, the last {days} days: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use capstan_core::{ProviderKind, Timestamp, Worker, WorkerId};

    #[test]
    fn boot_time_is_the_median_of_registered_workers() {
        let t = |s| Timestamp::from_unix_secs(1_800_000_000 + s);
        let worker = |n: u32, boot: Option<i64>| {
            let mut w = Worker::requested(
                WorkerId::from_string(format!("w{n}")),
                PoolId::new("ci/linux").unwrap(),
                ProviderKind::Fake,
                None,
                1,
                format!("tok{n}"),
                t(0),
            );
            w.registered_at = boot.map(t);
            w
        };
        assert_eq!(measured_boot_s(&[worker(1, None)]), None);
        let workers = [
            worker(1, Some(90)),
            worker(2, None),
            worker(3, Some(30)),
            worker(4, Some(60)),
        ];
        assert_eq!(measured_boot_s(&workers), Some((60.0, 3)));
    }

    #[test]
    fn candidate_problems_name_their_field_under_spec() {
        let id = PoolId::new("ci/linux").unwrap();
        let e = candidate_spec(
            &id,
            serde_json::json!({"id": "other", "provider": "fake", "max_capacity": 1,
                "min_capacity": 5, "launch_configs": [{"id": "a", "instance_type": "t"}]}),
        )
        .unwrap_err();
        let fields: Vec<&str> = e
            .body()
            .problems
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.field.as_str())
            .collect();
        assert_eq!(fields, ["spec.id", "spec.min_capacity"]);
        let e = candidate_spec(&id, serde_json::json!([1])).unwrap_err();
        assert_eq!(e.body().problems.as_ref().unwrap()[0].field, "spec");
        assert!(
            candidate_spec(
                &id,
                serde_json::json!({"provider": "gcp", "max_capacity": 4,
                    "launch_configs": [{"id": "a", "instance_type": "t", "region": "r", "zone": "z"}]})
            )
            .is_ok()
        );
    }
}
