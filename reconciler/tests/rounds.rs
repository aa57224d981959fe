//! The loop's rounds on the fake provider and an in-memory SQLite store, with a clock
//! the tests move: dry-run, launches and replacements of interrupted instances,
//! adoption of launches a crash left unrecorded, fallback after capacity errors,
//! deletion by draining, and the orphan sweep.
//!
//! Each test runs on tokio's current-thread runtime, so every task the service spawns
//! runs on the test's thread and reads the test's own clock.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::{PoolId, PoolSpec, QueueSample, Timestamp, Worker, WorkerId, WorkerState};
use providers::clock::Clock;
use providers::fake::{FakeProvider, FaultTarget};
use providers::{ErrorKind, InstanceRequest, LaunchRequest, ListScope, Provider};
use reconciler::{LoopConfig, Metrics, Providers, Service};
use store::{DeleteOutcome, IdlePeriod, Store};

thread_local! {
    static NOW_MS: Cell<i64> = const { Cell::new(1_700_000_000_000) };
}

fn now() -> Timestamp {
    NOW_MS.with(|c| Timestamp::from_unix_ms(c.get()))
}

fn advance(secs: i64) {
    NOW_MS.with(|c| c.set(c.get() + secs * 1000));
}

#[derive(Debug)]
struct TestClock;

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        now()
    }
}

struct Rig {
    store: Store,
    fake: Arc<FakeProvider>,
    service: Service,
}

const OWNER: &str = "test-replica";

async fn rig(spec_yaml: &str) -> (Rig, PoolSpec) {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let fake = Arc::new(FakeProvider::new(Arc::new(TestClock)));
    let mut providers = Providers::new();
    providers.insert(fake.clone() as Arc<dyn Provider>);
    let mut cfg = LoopConfig::new(OWNER);
    cfg.launch_grace = Duration::from_secs(60);
    let (service, _waker) = Service::new(store.clone(), providers, cfg, Metrics::new(), now);
    let spec = PoolSpec::from_yaml(spec_yaml).unwrap();
    store.create_pool(&spec, "test", now()).await.unwrap();
    (
        Rig {
            store,
            fake,
            service,
        },
        spec,
    )
}

const POOL: &str = "id: ci/rounds\nprovider: fake\nmax_capacity: 10\nlaunch_configs:\n  - {id: a, instance_type: small, priority: 0}\n  - {id: b, instance_type: large, priority: 1}\nscaling: {max_launches_per_minute: 100}\n";

impl Rig {
    async fn push(&self, pool: &PoolId, pending: u32) {
        self.store
            .record_queue_samples(
                pool,
                &[QueueSample {
                    at: now(),
                    pending,
                    running: 0,
                    arrivals: pending,
                    completions: 0,
                }],
            )
            .await
            .unwrap();
    }

    async fn live(&self, pool: &PoolId) -> Vec<Worker> {
        self.store.list_workers(pool, false).await.unwrap()
    }

    async fn alive(&self, pool: &PoolId) -> usize {
        self.fake
            .list(&ListScope::Pool(pool.clone()))
            .await
            .unwrap()
            .iter()
            .filter(|i| i.state.is_alive())
            .count()
    }

    async fn worker(&self, id: &str) -> Worker {
        self.store
            .get_worker(&WorkerId::from_string(id))
            .await
            .unwrap()
            .unwrap()
    }

    /// Launches one instance straight through the fake (as a crashed replica's call,
    /// or a stray launch, would have); answers its instance id.
    async fn launch_directly(&self, spec: &PoolSpec, worker: &str, token: &str) -> String {
        let request = LaunchRequest {
            api_url: None,
            pool_id: spec.id.clone(),
            launch_config: spec.launch_config("a").unwrap().clone(),
            zone: None,
            instances: vec![InstanceRequest {
                worker_id: WorkerId::from_string(worker),
                idempotency_token: token.into(),
                registration_token: "secret".into(),
            }],
        };
        self.fake.launch(&request).await.unwrap().launched[0]
            .id
            .clone()
    }

    async fn round(&self) {
        advance(1);
        self.service.run_once().await.unwrap();
    }
}

#[tokio::test]
async fn dry_run_pools_record_plans_and_act_on_nothing() {
    let yaml = POOL.replace(
        "scaling: {max_launches_per_minute: 100}",
        "scaling: {max_launches_per_minute: 100, dry_run: true}",
    );
    let (r, spec) = rig(&yaml).await;
    r.push(&spec.id, 3).await;
    r.round().await;
    let status = r.store.pool_status(&spec.id).await.unwrap().unwrap();
    assert_eq!(status.plan.launch_count(), 3, "{:?}", status.plan);
    assert_eq!(status.owner, OWNER);
    assert!(r.live(&spec.id).await.is_empty());
    assert_eq!(r.alive(&spec.id).await, 0);
}

#[tokio::test]
async fn a_backlog_launches_and_an_interrupted_instance_is_replaced_in_the_same_round() {
    let (r, spec) = rig(POOL).await;
    r.push(&spec.id, 2).await;
    r.round().await;
    let workers = r.live(&spec.id).await;
    assert_eq!(workers.len(), 2);
    assert!(
        workers
            .iter()
            .all(|w| w.state == WorkerState::Booting && w.instance_id.is_some())
    );
    assert_eq!(r.alive(&spec.id).await, 2);

    let victim = workers[0].clone();
    assert!(r.fake.interrupt(victim.instance_id.as_deref().unwrap()));
    r.round().await;
    let gone = r.store.get_worker(&victim.id).await.unwrap().unwrap();
    assert_eq!(gone.state, WorkerState::Terminated);
    assert!(
        gone.failure
            .as_deref()
            .unwrap_or("")
            .starts_with("interrupted"),
        "{gone:?}"
    );
    let live = r.live(&spec.id).await;
    assert_eq!(live.len(), 2, "replaced at once: {live:?}");
    assert!(live.iter().all(|w| w.id != victim.id));
    assert_eq!(r.alive(&spec.id).await, 2);
}

#[tokio::test]
async fn launches_a_crash_left_unrecorded_are_adopted_and_missing_ones_given_up() {
    let (r, spec) = rig(POOL).await;
    let fence = r.store.acquire_leases(OWNER, 90_000).await.unwrap()[0]
        .fence
        .clone();
    // Two intents were written; the create call happened for the first only, then the
    // process died before recording anything.
    let intent = |n: u32| {
        Worker::requested(
            WorkerId::from_string(format!("w-crash-{n}")),
            spec.id.clone(),
            spec.provider,
            Some("a".into()),
            1,
            format!("ci/rounds-1-0-{n}"),
            now(),
        )
    };
    for n in 0..2 {
        r.store
            .insert_worker_fenced(&fence, &intent(n))
            .await
            .unwrap();
    }
    let instance = r
        .launch_directly(&spec, "w-crash-0", "ci/rounds-1-0-0")
        .await;
    // Demand is 2: the requested rows count as capacity, so nothing new launches.
    r.push(&spec.id, 2).await;
    r.round().await;
    let adopted = r.worker("w-crash-0").await;
    assert_eq!(adopted.state, WorkerState::Booting);
    assert_eq!(adopted.instance_id.as_deref(), Some(instance.as_str()));
    let pending = r.worker("w-crash-1").await;
    assert_eq!(
        pending.state,
        WorkerState::Requested,
        "within the launch grace"
    );
    assert_eq!(r.alive(&spec.id).await, 1, "nothing launched twice");
    // Past the grace, the intent whose instance never appeared is given up and the
    // plan launches its replacement.
    advance(61);
    r.round().await;
    let given_up = r.worker("w-crash-1").await;
    assert_eq!(given_up.state, WorkerState::Terminated);
    assert!(
        given_up
            .failure
            .as_deref()
            .unwrap_or("")
            .starts_with("launch not confirmed"),
        "{given_up:?}"
    );
    assert_eq!(r.alive(&spec.id).await, 2);
}

#[tokio::test]
async fn a_capacity_error_falls_back_to_the_next_offering_and_is_recorded_once() {
    let (r, spec) = rig(POOL).await;
    r.fake
        .inject(FaultTarget::Launch, ErrorKind::InsufficientCapacity, 1);
    r.push(&spec.id, 2).await;
    r.round().await;
    assert_eq!(r.alive(&spec.id).await, 0);
    r.round().await;
    let live = r.live(&spec.id).await;
    assert_eq!(live.len(), 2);
    assert!(
        live.iter()
            .all(|w| w.launch_config_id.as_deref() == Some("b")),
        "{live:?}"
    );
    let status = r.store.pool_status(&spec.id).await.unwrap().unwrap();
    assert!(
        status
            .plan
            .report
            .skipped_offerings
            .iter()
            .any(|s| s.launch_config_id == "a"),
        "the plan says why a is skipped: {:?}",
        status.plan.report
    );
    r.round().await;
    let errors = r.store.list_pool_errors(&spec.id).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, "insufficient_capacity");
    assert_eq!(errors[0].launch_config_id.as_deref(), Some("a"));
}

#[tokio::test]
async fn a_deleted_pool_is_drained_then_removed() {
    let (r, spec) = rig(POOL).await;
    r.push(&spec.id, 2).await;
    r.round().await;
    assert_eq!(r.alive(&spec.id).await, 2);
    let generation = r
        .store
        .get_pool(&spec.id)
        .await
        .unwrap()
        .unwrap()
        .generation;
    let outcome = r
        .store
        .delete_pool(&spec.id, generation, "op", now())
        .await
        .unwrap();
    assert!(matches!(outcome, DeleteOutcome::MarkedDeleting(_)));
    r.round().await;
    assert_eq!(r.alive(&spec.id).await, 0);
    r.round().await;
    assert!(r.store.get_pool(&spec.id).await.unwrap().is_none());
}

#[tokio::test]
async fn the_orphan_sweep_terminates_unowned_instances_after_the_grace_only() {
    let (r, spec) = rig(POOL).await;
    r.push(&spec.id, 1).await;
    r.round().await;
    let owned = r.live(&spec.id).await[0].clone();
    let orphan = r.launch_directly(&spec, "w-nobody", "lost-token").await;
    let metrics = Metrics::new();
    let seen = Mutex::new(HashMap::new());
    let grace = Duration::from_millis(200);
    let first = reconciler::jobs::sweep(&r.store, r.fake.as_ref(), &metrics, &seen, grace, now())
        .await
        .unwrap();
    assert_eq!(first, 0, "seen once: within the grace");
    tokio::time::sleep(grace).await;
    let second = reconciler::jobs::sweep(&r.store, r.fake.as_ref(), &metrics, &seen, grace, now())
        .await
        .unwrap();
    assert_eq!(second, 1);
    let left: Vec<_> = r
        .fake
        .list(&ListScope::All)
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.state.is_alive())
        .map(|i| i.id)
        .collect();
    assert_eq!(left, vec![owned.instance_id.clone().unwrap()]);
    assert!(!left.contains(&orphan));
    let errors = r.store.list_pool_errors(&spec.id).await.unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e.kind == "orphan_terminated" && e.message.contains(&orphan)),
        "{errors:?}"
    );
}

#[tokio::test]
async fn throttling_backs_launches_off_without_marking_the_offering() {
    let (r, spec) = rig(POOL).await;
    r.fake.inject(FaultTarget::Launch, ErrorKind::Throttled, 1);
    r.push(&spec.id, 2).await;
    r.round().await;
    assert_eq!(r.alive(&spec.id).await, 0);
    // The next round comes well within the back-off (at least one tick, 30 s here):
    // the plan still wants the instances but nothing is launched.
    r.round().await;
    assert_eq!(r.alive(&spec.id).await, 0, "backing off");
    let status = r.store.pool_status(&spec.id).await.unwrap().unwrap();
    assert!(status.plan.launch_count() > 0);
    assert!(
        status.plan.report.skipped_offerings.is_empty(),
        "throttling is not a capacity problem of the offering: {:?}",
        status.plan.report.skipped_offerings
    );
    let errors = r.store.list_pool_errors(&spec.id).await.unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].kind, "throttled");
}

#[tokio::test]
async fn rounds_record_a_chart_point_at_most_every_ten_seconds() {
    let (r, spec) = rig(POOL).await;
    let points = |r: &Rig| {
        let (store, id) = (r.store.clone(), spec.id.clone());
        async move {
            store
                .pool_series(&id, now().plus_secs(-3600), now().plus_secs(1), 3600)
                .await
                .unwrap()
        }
    };
    r.push(&spec.id, 3).await;
    r.round().await;
    let first = points(&r).await;
    assert_eq!(first.len(), 1);
    // Taken before the round's launches: the queue and the target, no capacity yet.
    assert_eq!(first[0].max.pending, 3.0);
    assert!(first[0].max.target_slots >= 3.0, "{:?}", first[0]);
    assert_eq!(first[0].max.booting + first[0].max.requested, 0.0);

    // The next round, a second later, records nothing.
    r.round().await;
    assert_eq!(points(&r).await.len(), 1);

    // Ten seconds on, the next one does, with the launched machines booting.
    advance(10);
    r.round().await;
    let later = points(&r).await;
    assert_eq!(later.len(), 2, "{later:?}");
    assert_eq!(later[1].max.booting, 3.0, "{:?}", later[1]);
}

#[tokio::test]
async fn a_pool_taken_over_remembers_the_boots_of_its_terminated_workers() {
    // A forecast pool whose machines booted in 60 to 370 s, all terminated since: the
    // replica that takes it reads their boots from the store, so the slow-boot hedge
    // launches beyond the waiting tasks at once instead of after 16 new boots.
    let yaml = "id: ci/boots\nprovider: fake\nmax_capacity: 50\nlaunch_configs:\n  - {id: a, instance_type: small}\nscaling: {policy: forecast, service_level: 0.95, max_launches_per_minute: 100}\n";
    let (r, spec) = rig(yaml).await;
    let created = now().plus_secs(-7_200);
    for i in 0..32 {
        let id = WorkerId::from_string(format!("old-{i}"));
        let mut w = Worker::requested(
            id.clone(),
            spec.id.clone(),
            capstan_core::ProviderKind::Fake,
            Some("a".into()),
            1,
            format!("tok-{i}"),
            created,
        );
        w.transition(WorkerState::Booting, created).unwrap();
        w.transition(WorkerState::Ready, created.plus_secs(60 + 10 * i))
            .unwrap();
        for s in [WorkerState::Terminating, WorkerState::Terminated] {
            w.transition(s, now().plus_secs(-3_600)).unwrap();
        }
        r.store.insert_worker(&w).await.unwrap();
    }
    r.push(&spec.id, 10).await;
    r.round().await;
    let status = r.store.pool_status(&spec.id).await.unwrap().unwrap();
    let report = &status.plan.report;
    assert!(report.boot_hedge_slots > 0, "{report:?}");
    assert_eq!(report.backlog_slots, 10 + report.boot_hedge_slots);
    assert!(r.live(&spec.id).await.len() as u32 >= report.backlog_slots);
}

#[tokio::test]
async fn rounds_record_the_idle_periods_they_see_end() {
    // One worker, ready and idle, takes a task 40 s later: the round that sees it busy
    // stores the period, reused, so a replica taking the pool over can replay it.
    let (r, spec) = rig(POOL).await;
    r.push(&spec.id, 1).await;
    r.round().await;
    let id = r.live(&spec.id).await[0].id.clone();
    r.store
        .transition_worker(&id, WorkerState::Ready, now())
        .await
        .unwrap();
    let idle_from = now();
    r.round().await;
    assert!(
        r.store
            .idle_periods(&spec.id, idle_from, now().plus_secs(1))
            .await
            .unwrap()
            .is_empty()
    );
    advance(40);
    r.store
        .modify_worker(&id, |w| {
            w.busy_slots = 1;
            w.idle_since = None;
            Ok(())
        })
        .await
        .unwrap();
    r.round().await;
    let stored = r
        .store
        .idle_periods(&spec.id, idle_from, now().plus_secs(1))
        .await
        .unwrap();
    assert_eq!(
        stored,
        [IdlePeriod {
            worker_id: id,
            ended_at: now(),
            idle_ms: now().unix_ms() - idle_from.unix_ms(),
            reused: true,
            // The pool's one busy slot: the level the worker idled at.
            level: Some(1),
        }]
    );
}

#[tokio::test]
async fn a_pool_taken_over_keeps_the_idle_timeout_its_idle_periods_chose() {
    // Over the last day every idle worker of the pool waited 50 minutes for its next
    // task: with 120 s boots keeping one never pays, and the idle timeout capstan
    // chooses is 0. The replica that takes the pool replays the stored periods with
    // the queue history and plans with that timeout at once, not with the one-boot
    // rule it starts from without data.
    let (r, spec) = rig(POOL).await;
    let periods: Vec<IdlePeriod> = (0..100)
        .map(|i| IdlePeriod {
            worker_id: WorkerId::from_string(format!("old-{i}")),
            ended_at: now().plus_secs(-36_000 + 300 * i),
            idle_ms: 3_000_000,
            reused: true,
            level: None,
        })
        .collect();
    // Written by the replica that held the pool, which then shut down.
    let old = r.store.acquire_leases("old-replica", 60_000).await.unwrap();
    r.store
        .record_idle_periods(&old[0].fence, &periods)
        .await
        .unwrap();
    r.store.release_leases("old-replica").await.unwrap();
    r.push(&spec.id, 0).await;
    r.round().await;
    let status = r.store.pool_status(&spec.id).await.unwrap().unwrap();
    let report = &status.plan.report;
    assert!(report.idle_timeout_chosen, "{report:?}");
    assert_eq!(report.idle_timeout_s, Some(0.0), "{report:?}");
}

#[tokio::test]
async fn an_interrupted_busy_worker_teaches_the_forecast_to_keep_slots_for_the_next() {
    // Eight tasks run for an hour with nothing arriving. The forecast keeps no spare:
    // no arrival is expected. Then an interruption takes a busy worker's task back to
    // the queue: the round that sees it feeds the controller, which learns that running
    // tasks are interrupted (1 in 8 × an hour of task time) and keeps a spare for the
    // next interruption within the window — forecast slots rise with the same samples.
    let yaml = "id: ci/requeue\nprovider: fake\nmax_capacity: 50\nlaunch_configs:\n  - {id: a, instance_type: small}\nscaling: {policy: forecast, service_level: 0.95, max_launches_per_minute: 100}\n";
    let (r, spec) = rig(yaml).await;
    let sample = |pending: u32| QueueSample {
        at: now(),
        pending,
        running: 8,
        arrivals: 0,
        completions: 0,
    };
    let push = |s: QueueSample| {
        let store = r.store.clone();
        let id = spec.id.clone();
        async move { store.record_queue_samples(&id, &[s]).await.unwrap() }
    };
    for _ in 0..13 {
        push(sample(0)).await;
        r.round().await;
        advance(299);
    }
    let forecast_slots = |status: &store::PoolStatus| status.plan.report.forecast_slots;
    let before = forecast_slots(&r.store.pool_status(&spec.id).await.unwrap().unwrap());
    // A live worker of the pool, busy with one task, is interrupted.
    let victim = r
        .live(&spec.id)
        .await
        .into_iter()
        .find(|w| w.instance_id.is_some())
        .expect("the forecast launched for the running tasks");
    r.store
        .modify_worker(&victim.id, |w| {
            if w.state == WorkerState::Booting {
                w.transition(WorkerState::Ready, now())?;
            }
            w.busy_slots = 1;
            Ok(())
        })
        .await
        .unwrap();
    assert!(r.fake.interrupt(victim.instance_id.as_deref().unwrap()));
    push(sample(0)).await;
    r.round().await;
    let gone = r.worker(victim.id.as_str()).await;
    assert_eq!(gone.state, WorkerState::Terminated);
    let after = forecast_slots(&r.store.pool_status(&spec.id).await.unwrap().unwrap());
    assert!(
        after > before,
        "forecast slots {before} before the interruption, {after} after"
    );
}
