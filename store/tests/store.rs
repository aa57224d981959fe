//! The store's behaviour, run once against SQLite and once against PostgreSQL.
//!
//! Every case is an `async fn(Store)`; the `both!` macro turns it into a `sqlite_*`
//! and a `postgres_*` test. The PostgreSQL tests each get a fresh database from
//! `store::scratch` (skipped with a printed reason when PostgreSQL is unreachable,
//! failed under `CI=true`).

use std::future::Future;

use capstan_core::{
    PoolId, PoolSpec, ProviderKind, QueueSample, Timestamp, Worker, WorkerId, WorkerState,
};
use store::{AuditAction, LedgerRow, StaticMachineRow, Store, StoreError};

const SPEC: &str = "id: ci/linux\nprovider: fake\nmax_capacity: 10\nlaunch_configs: [{id: small, instance_type: t}]\n";

fn spec() -> PoolSpec {
    PoolSpec::from_yaml(SPEC).unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(1_700_000_000 + secs)
}

async fn with_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("capstan.db").display());
    let store = Store::connect(&url).await.unwrap();
    case(store.clone()).await;
    store.close().await;
}

async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = store::scratch::ScratchDatabase::create().await else {
        return;
    };
    let store = Store::connect(&db.url).await.unwrap();
    case(store.clone()).await;
    store.close().await;
    db.drop_now().await;
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::with_sqlite(super::$case).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::with_postgres(super::$case).await
                }
            )*
        }
    };
}

both!(
    pools_are_created_read_and_listed,
    updates_are_compare_and_swap_on_the_generation,
    concurrent_updates_with_one_generation_have_one_winner,
    deletes_check_generation_and_live_workers,
    workers_follow_the_state_machine,
    concurrent_transitions_of_one_worker_have_one_winner,
    queue_samples_upsert_range_and_prune,
    pool_errors_are_deduplicated,
    leases_exclude_other_replicas_until_expiry,
    launch_ledger_keeps_the_first_record_per_token,
    static_machines_update_by_compare_and_set,
);

async fn pools_are_created_read_and_listed(store: Store) {
    store.ping().await.unwrap();
    let rec = store.create_pool(&spec(), "alice", t(0)).await.unwrap();
    assert_eq!(rec.generation, 1);
    let got = store.get_pool(&spec().id).await.unwrap().unwrap();
    assert_eq!(got, rec);
    assert!(matches!(
        store.create_pool(&spec(), "bob", t(1)).await,
        Err(StoreError::PoolExists(id)) if id == "ci/linux"
    ));
    let mut other = spec();
    other.id = PoolId::new("ci/arm").unwrap();
    store.create_pool(&other, "alice", t(2)).await.unwrap();
    let ids: Vec<String> = store
        .list_pools()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.spec.id.to_string())
        .collect();
    assert_eq!(ids, ["ci/arm", "ci/linux"]);
    assert!(
        store
            .get_pool(&PoolId::new("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // The failed duplicate create left no audit entry.
    assert_eq!(store.audit_log(None, 100).await.unwrap().len(), 2);
}

async fn updates_are_compare_and_swap_on_the_generation(store: Store) {
    let id = spec().id;
    store.create_pool(&spec(), "alice", t(0)).await.unwrap();
    let mut next = spec();
    next.max_capacity = 20;
    let rec = store
        .update_pool(&id, 1, &next, "alice", t(5))
        .await
        .unwrap();
    assert_eq!(
        (rec.generation, rec.created_at, rec.updated_at),
        (2, t(0), t(5))
    );

    let mut stale = spec();
    stale.max_capacity = 99;
    match store.update_pool(&id, 1, &stale, "bob", t(6)).await {
        Err(StoreError::GenerationConflict {
            expected: 1,
            current: 2,
            ..
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let stored = store.get_pool(&id).await.unwrap().unwrap();
    assert_eq!(
        stored.spec.max_capacity, 20,
        "a lost update must change nothing"
    );
    assert_eq!(stored.generation, 2);

    assert!(matches!(
        store
            .update_pool(&PoolId::new("ghost").unwrap(), 1, &next, "a", t(7))
            .await,
        Err(StoreError::PoolNotFound(_)) | Err(StoreError::Corrupt(_))
    ));
    let audit = store.audit_log(Some(&id), 10).await.unwrap();
    let summary: Vec<_> = audit
        .iter()
        .map(|e| {
            (
                e.action,
                e.actor.as_str(),
                e.old_generation,
                e.new_generation,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (AuditAction::Update, "alice", Some(1), Some(2)),
            (AuditAction::Create, "alice", None, Some(1)),
        ]
    );
}

async fn concurrent_updates_with_one_generation_have_one_winner(store: Store) {
    let id = spec().id;
    store.create_pool(&spec(), "setup", t(0)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8u32 {
        let store = store.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = spec();
            s.max_capacity = 100 + i;
            store
                .update_pool(&id, 1, &s, &format!("operator-{i}"), t(10))
                .await
        }));
    }
    let mut wins = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(rec) => {
                wins += 1;
                assert_eq!(rec.generation, 2);
            }
            Err(StoreError::GenerationConflict {
                expected: 1,
                current: 2,
                ..
            }) => conflicts += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 7));
    let updates: Vec<_> = store
        .audit_log(Some(&id), 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == AuditAction::Update)
        .collect();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let stored = store.get_pool(&id).await.unwrap().unwrap();
    assert_eq!(stored.generation, 2);
    assert_eq!(
        updates[0].actor,
        format!("operator-{}", stored.spec.max_capacity - 100)
    );
}

fn worker(id: &str, token: &str) -> Worker {
    Worker::requested(
        WorkerId::from_string(id),
        spec().id,
        ProviderKind::Fake,
        Some("small".into()),
        2,
        token.into(),
        t(0),
    )
}

async fn deletes_check_generation_and_live_workers(store: Store) {
    let id = spec().id;
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    store
        .record_queue_samples(
            &id,
            &[QueueSample {
                at: t(1),
                pending: 1,
                running: 0,
                arrivals: 1,
                completions: 0,
            }],
        )
        .await
        .unwrap();
    assert!(matches!(
        store.delete_pool(&id, 7, "a", t(1)).await,
        Err(StoreError::GenerationConflict {
            expected: 7,
            current: 1,
            ..
        })
    ));
    store.insert_worker(&worker("w1", "tok1")).await.unwrap();
    assert!(matches!(
        store.delete_pool(&id, 1, "a", t(2)).await,
        Err(StoreError::PoolHasLiveWorkers { live: 1, .. })
    ));
    store
        .transition_worker(&WorkerId::from_string("w1"), WorkerState::Failed, t(3))
        .await
        .unwrap();
    store
        .transition_worker(&WorkerId::from_string("w1"), WorkerState::Terminated, t(4))
        .await
        .unwrap();
    store.delete_pool(&id, 1, "a", t(5)).await.unwrap();
    assert!(store.get_pool(&id).await.unwrap().is_none());
    assert!(
        store
            .queue_samples(&id, t(0), t(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_worker(&WorkerId::from_string("w1"))
            .await
            .unwrap()
            .is_none()
    );
    let actions: Vec<_> = store
        .audit_log(Some(&id), 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, [AuditAction::Delete, AuditAction::Create]);
    assert!(matches!(
        store.delete_pool(&id, 1, "a", t(6)).await,
        Err(StoreError::PoolNotFound(_))
    ));
}

async fn workers_follow_the_state_machine(store: Store) {
    let w = worker("w1", "tok1");
    store.insert_worker(&w).await.unwrap();
    assert_eq!(store.get_worker(&w.id).await.unwrap().unwrap(), w);
    assert!(matches!(
        store.insert_worker(&worker("w1", "tok2")).await,
        Err(StoreError::WorkerExists(_))
    ));
    assert!(matches!(
        store.insert_worker(&worker("w2", "tok1")).await,
        Err(StoreError::WorkerExists(_))
    ));
    assert_eq!(
        store.worker_by_token("tok1").await.unwrap().unwrap().id,
        w.id
    );

    // Illegal move: an error, and the row is unchanged.
    assert!(matches!(
        store
            .transition_worker(&w.id, WorkerState::Ready, t(1))
            .await,
        Err(StoreError::Transition(_))
    ));
    assert_eq!(store.get_worker(&w.id).await.unwrap().unwrap(), w);

    let booted = store
        .modify_worker(&w.id, |w| {
            w.transition(WorkerState::Booting, t(2))?;
            w.instance_id = Some("i-0abc".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(booted.instance_id.as_deref(), Some("i-0abc"));
    let ready = store
        .transition_worker(&w.id, WorkerState::Ready, t(3))
        .await
        .unwrap();
    assert_eq!(ready.registered_at, Some(t(3)));
    assert_eq!(store.get_worker(&w.id).await.unwrap().unwrap(), ready);
    for (s, at) in [
        (WorkerState::Draining, 4),
        (WorkerState::Terminating, 5),
        (WorkerState::Terminated, 6),
    ] {
        store.transition_worker(&w.id, s, t(at)).await.unwrap();
    }
    store.insert_worker(&worker("w2", "tok2")).await.unwrap();
    let live: Vec<_> = store
        .list_workers(&spec().id, false)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.id.to_string())
        .collect();
    assert_eq!(live, ["w2"]);
    assert_eq!(store.list_workers(&spec().id, true).await.unwrap().len(), 2);
    assert!(matches!(
        store
            .transition_worker(&WorkerId::from_string("nope"), WorkerState::Booting, t(7))
            .await,
        Err(StoreError::WorkerNotFound(_))
    ));
}

async fn concurrent_transitions_of_one_worker_have_one_winner(store: Store) {
    let w = worker("w1", "tok1");
    store.insert_worker(&w).await.unwrap();
    store
        .transition_worker(&w.id, WorkerState::Booting, t(1))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = store.clone();
        let id = w.id.clone();
        tasks.push(tokio::spawn(async move {
            store
                .transition_worker(&id, WorkerState::Ready, t(10 + i))
                .await
        }));
    }
    let mut oks = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => oks += 1,
            Err(StoreError::Transition(e)) => assert_eq!(e.from, WorkerState::Ready),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(oks, 1);
}

async fn queue_samples_upsert_range_and_prune(store: Store) {
    let id = spec().id;
    let s = |at, pending| QueueSample {
        at: t(at),
        pending,
        running: 3,
        arrivals: 2,
        completions: 1,
    };
    store
        .record_queue_samples(&id, &[s(0, 1), s(60, 2), s(120, 3)])
        .await
        .unwrap();
    store.record_queue_samples(&id, &[s(60, 20)]).await.unwrap();
    let got = store.queue_samples(&id, t(0), t(121)).await.unwrap();
    assert_eq!(
        got.iter().map(|s| s.pending).collect::<Vec<_>>(),
        [1, 20, 3]
    );
    assert_eq!(
        store.queue_samples(&id, t(60), t(120)).await.unwrap(),
        [s(60, 20)]
    );
    assert_eq!(store.prune_queue_samples(t(60)).await.unwrap(), 1);
    assert_eq!(
        store.queue_samples(&id, t(0), t(1000)).await.unwrap().len(),
        2
    );
}

async fn pool_errors_are_deduplicated(store: Store) {
    let id = spec().id;
    for at in [1, 2, 3] {
        store
            .record_pool_error(
                &id,
                Some("small"),
                "insufficient_capacity",
                "no c6i in us-east-1a",
                t(at),
            )
            .await
            .unwrap();
    }
    store
        .record_pool_error(
            &id,
            None,
            "insufficient_capacity",
            "no c6i in us-east-1a",
            t(4),
        )
        .await
        .unwrap();
    store
        .record_pool_error(&id, Some("small"), "quota_exceeded", "vCPU limit", t(2))
        .await
        .unwrap();
    let errors = store.list_pool_errors(&id).await.unwrap();
    assert_eq!(errors.len(), 3, "{errors:?}");
    let cap = errors
        .iter()
        .find(|e| {
            e.kind == "insufficient_capacity" && e.launch_config_id.as_deref() == Some("small")
        })
        .unwrap();
    assert_eq!((cap.count, cap.first_seen, cap.last_seen), (3, t(1), t(3)));
    assert_eq!(errors[0].launch_config_id, None, "newest first");
}

async fn leases_exclude_other_replicas_until_expiry(store: Store) {
    let id = spec().id;
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    assert!(
        store
            .try_acquire_lease(&id, "replica-a", t(0), 30_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_acquire_lease(&id, "replica-b", t(10), 30_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .try_acquire_lease(&id, "replica-a", t(20), 30_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_acquire_lease(&id, "replica-b", t(49), 30_000)
            .await
            .unwrap()
    );
    assert!(
        store
            .try_acquire_lease(&id, "replica-b", t(50), 30_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_acquire_lease(&id, "replica-a", t(51), 30_000)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn sqlite_file_is_created_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub-less.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await.unwrap();
    assert!(path.exists());
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    store.close().await;
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.list_pools().await.unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn bad_urls_are_rejected_without_leaking_passwords() {
    let err = Store::connect("mysql://capstan:hunter2@db/capstan")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("expected sqlite://PATH"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

async fn launch_ledger_keeps_the_first_record_per_token(store: Store) {
    let row = |instance: &str| LedgerRow {
        provider: "aws".into(),
        instance_id: instance.into(),
        worker_id: "w1".into(),
    };
    assert_eq!(store.ledger_lookup("aws", "tok").await.unwrap(), None);
    store.ledger_record("tok", &row("i-1"), t(0)).await.unwrap();
    store.ledger_record("tok", &row("i-2"), t(1)).await.unwrap();
    assert_eq!(
        store.ledger_lookup("aws", "tok").await.unwrap(),
        Some(row("i-1"))
    );
    assert_eq!(store.ledger_lookup("gcp", "tok").await.unwrap(), None);
}

async fn static_machines_update_by_compare_and_set(store: Store) {
    let m = |name: &str, pool: &str, rev: i64| StaticMachineRow {
        name: name.into(),
        pool_id: pool.into(),
        revision: rev,
        machine: format!("{{\"rev\":{rev}}}"),
    };
    assert!(
        store
            .insert_static_machine(&m("mac-1", "lab/macs", 0))
            .await
            .unwrap()
    );
    assert!(
        !store
            .insert_static_machine(&m("mac-1", "other", 0))
            .await
            .unwrap()
    );
    store
        .insert_static_machine(&m("mac-2", "lab/macs", 0))
        .await
        .unwrap();
    store
        .insert_static_machine(&m("pc-1", "lab/pcs", 0))
        .await
        .unwrap();
    assert!(
        store
            .update_static_machine(&m("mac-1", "lab/macs", 1), 0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .update_static_machine(&m("mac-1", "lab/macs", 1), 0)
            .await
            .unwrap(),
        "a stale revision must not win"
    );
    assert_eq!(
        store.static_machine("mac-1").await.unwrap(),
        Some(m("mac-1", "lab/macs", 1))
    );
    let pool = PoolId::new("lab/macs").unwrap();
    let names: Vec<String> = store
        .list_static_machines(Some(&pool))
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["mac-1", "mac-2"]);
    assert_eq!(store.list_static_machines(None).await.unwrap().len(), 3);
    assert!(store.remove_static_machine("mac-2").await.unwrap());
    assert!(!store.remove_static_machine("mac-2").await.unwrap());
}
