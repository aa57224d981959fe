//! The store's behaviour, run once against SQLite and once against PostgreSQL.
//!
//! Every case is an `async fn(Store)`; `store::on_both_backends!` turns it into a
//! `sqlite::*` and a `postgres::*` test. The PostgreSQL tests each get a fresh database from
//! `store::scratch` (skipped with a printed reason when PostgreSQL is unreachable,
//! failed under `CI=true`).

use capstan_core::{
    PoolId, PoolSpec, ProviderKind, QueueSample, Timestamp, Worker, WorkerId, WorkerState,
};
use store::{
    AuditAction, ClientRecord, DeleteOutcome, IdlePeriod, LedgerRow, PoolFilter, StaticMachineRow,
    Store, StoreError,
};

const SPEC: &str = "id: ci/linux\nprovider: fake\nmax_capacity: 10\nlaunch_configs: [{id: small, instance_type: t}]\n";

fn spec() -> PoolSpec {
    PoolSpec::from_yaml(SPEC).unwrap()
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(1_700_000_000 + secs)
}

use store::scratch::{with_postgres, with_sqlite};

store::on_both_backends!(
    pools_are_created_read_and_listed,
    updates_are_compare_and_swap_on_the_generation,
    concurrent_updates_with_one_generation_have_one_winner,
    deletes_check_generation_and_live_workers,
    workers_follow_the_state_machine,
    concurrent_transitions_of_one_worker_have_one_winner,
    queue_samples_upsert_range_and_prune,
    pool_errors_are_deduplicated,
    leases_exclude_other_replicas_until_expiry,
    lease_fences_only_go_up_and_concurrent_takers_split_the_pools,
    launch_ledger_keeps_the_first_record_per_token,
    static_machines_update_by_compare_and_set,
    pool_pages_filter_by_provider_and_prefix,
    worker_pages_filter_by_state,
    audit_pages_go_back_in_time,
    clients_are_stored_revoked_and_touched,
    plans_are_recorded_fenced_and_deleted_pools_finish,
    recently_registered_workers_are_the_last_registrations_terminated_ones_included,
    idle_periods_are_kept_once_in_order_pruned_and_go_with_their_pool,
);

async fn pool_pages_filter_by_provider_and_prefix(store: Store) {
    for (id, provider) in [
        ("ci/a", "fake"),
        ("ci/b", "static"),
        ("ci_x", "fake"),
        ("prod/a", "fake"),
        ("ci/c", "fake"),
    ] {
        let spec = PoolSpec::from_yaml(&format!(
            "id: {id}\nprovider: {provider}\nmax_capacity: 4\nlaunch_configs: [{{id: s, instance_type: t}}]\n"
        ))
        .unwrap();
        store.create_pool(&spec, "a", t(0)).await.unwrap();
    }
    let ids = |page: Vec<store::PoolRecord>| -> Vec<String> {
        page.into_iter().map(|p| p.spec.id.to_string()).collect()
    };
    // `_` is a LIKE wildcard; the prefix filter must not treat it as one.
    let filter = PoolFilter {
        prefix: Some("ci/".into()),
        ..PoolFilter::default()
    };
    let first = store.list_pools_page(&filter, 2).await.unwrap();
    assert_eq!(ids(first.clone()), ["ci/a", "ci/b"]);
    let after = PoolFilter {
        after: Some("ci/b".into()),
        ..filter.clone()
    };
    assert_eq!(
        ids(store.list_pools_page(&after, 2).await.unwrap()),
        ["ci/c"]
    );
    let fake_ci = PoolFilter {
        provider: Some(ProviderKind::Fake),
        prefix: Some("ci".into()),
        after: None,
    };
    assert_eq!(
        ids(store.list_pools_page(&fake_ci, 10).await.unwrap()),
        ["ci/a", "ci/c", "ci_x"]
    );
    // An edit that changes the provider moves the pool between filters.
    let mut moved = store
        .get_pool(&PoolId::new("ci/a").unwrap())
        .await
        .unwrap()
        .unwrap()
        .spec;
    moved.provider = ProviderKind::Static;
    moved.launch_configs.clear();
    store
        .update_pool(&moved.id, 1, &moved, "a", t(1))
        .await
        .unwrap();
    assert_eq!(
        ids(store.list_pools_page(&fake_ci, 10).await.unwrap()),
        ["ci/c", "ci_x"]
    );
}

async fn worker_pages_filter_by_state(store: Store) {
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    for i in 0..5 {
        store
            .insert_worker(&worker(&format!("w{i}"), &format!("tok{i}")))
            .await
            .unwrap();
    }
    for i in [1, 3] {
        store
            .transition_worker(
                &WorkerId::from_string(format!("w{i}")),
                WorkerState::Booting,
                t(1),
            )
            .await
            .unwrap();
    }
    let ids =
        |ws: Vec<Worker>| -> Vec<String> { ws.into_iter().map(|w| w.id.to_string()).collect() };
    let id = spec().id;
    assert_eq!(
        ids(store
            .list_workers_page(&id, &[WorkerState::Booting], None, 10)
            .await
            .unwrap()),
        ["w1", "w3"]
    );
    assert_eq!(
        ids(store
            .list_workers_page(&id, &[], Some("w1"), 2)
            .await
            .unwrap()),
        ["w2", "w3"]
    );
    assert_eq!(
        ids(store
            .list_workers_page(
                &id,
                &[WorkerState::Requested, WorkerState::Booting],
                Some("w2"),
                10
            )
            .await
            .unwrap()),
        ["w3", "w4"]
    );
}

async fn audit_pages_go_back_in_time(store: Store) {
    let id = spec().id;
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    for g in 1..5 {
        let mut next = spec();
        next.max_capacity = 10 + u32::try_from(g).unwrap();
        store.update_pool(&id, g, &next, "a", t(g)).await.unwrap();
    }
    let newest = store.audit_log_page(Some(&id), None, 2).await.unwrap();
    let gens: Vec<_> = newest.iter().map(|e| e.new_generation).collect();
    assert_eq!(gens, [Some(5), Some(4)]);
    let older = store
        .audit_log_page(Some(&id), Some(newest[1].id), 10)
        .await
        .unwrap();
    let gens: Vec<_> = older.iter().map(|e| e.new_generation).collect();
    assert_eq!(gens, [Some(3), Some(2), Some(1)]);
}

async fn clients_are_stored_revoked_and_touched(store: Store) {
    let c = ClientRecord {
        id: "0123456789abcdef".into(),
        name: "ci-bot".into(),
        secret_sha256: "ab".repeat(32),
        scopes: vec!["pools:read:ci/*".into(), "workers:read:ci/*".into()],
        created_at: t(0),
        created_by: "bootstrap:root".into(),
        expires_at: Some(t(3600)),
        revoked_at: None,
        last_used_at: None,
    };
    assert!(store.insert_client(&c).await.unwrap());
    assert!(!store.insert_client(&c).await.unwrap(), "ids are unique");
    assert_eq!(store.get_client(&c.id).await.unwrap().unwrap(), c);
    store.touch_client(&c.id, t(10)).await.unwrap();
    store.touch_client(&c.id, t(5)).await.unwrap();
    let got = store.get_client(&c.id).await.unwrap().unwrap();
    assert_eq!(got.last_used_at, Some(t(10)), "last use never goes back");
    store.revoke_client(&c.id, t(20)).await.unwrap();
    store.revoke_client(&c.id, t(30)).await.unwrap();
    let got = store.get_client(&c.id).await.unwrap().unwrap();
    assert_eq!(got.revoked_at, Some(t(20)), "the first revocation stands");
    assert_eq!(store.list_clients().await.unwrap(), vec![got]);
    assert!(matches!(
        store.revoke_client("nope", t(40)).await,
        Err(StoreError::ClientNotFound(_))
    ));
}

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
    // A live worker: the pool is marked deleting (generation 2) instead of removed,
    // and takes no more edits.
    let marked = match store.delete_pool(&id, 1, "a", t(2)).await.unwrap() {
        DeleteOutcome::MarkedDeleting(rec) => *rec,
        other => panic!("expected a deletion mark, got {other:?}"),
    };
    assert_eq!((marked.generation, marked.deleting_since), (2, Some(t(2))));
    assert_eq!(store.get_pool(&id).await.unwrap().unwrap(), marked);
    assert!(matches!(
        store.update_pool(&id, 2, &spec(), "a", t(2)).await,
        Err(StoreError::PoolDeleting(_))
    ));
    store
        .transition_worker(&WorkerId::from_string("w1"), WorkerState::Failed, t(3))
        .await
        .unwrap();
    store
        .transition_worker(&WorkerId::from_string("w1"), WorkerState::Terminated, t(4))
        .await
        .unwrap();
    assert_eq!(
        store.delete_pool(&id, 2, "a", t(5)).await.unwrap(),
        DeleteOutcome::Deleted
    );
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
    assert_eq!(
        actions,
        [
            AuditAction::Delete,
            AuditAction::DeleteRequested,
            AuditAction::Create
        ]
    );
    assert!(matches!(
        store.delete_pool(&id, 2, "a", t(6)).await,
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

async fn recently_registered_workers_are_the_last_registrations_terminated_ones_included(
    store: Store,
) {
    // Four workers created at 0 s, registered after 30, 10, 20 s and never; the
    // first is terminated since.
    for (i, boot) in [(1, Some(30)), (2, Some(10)), (3, Some(20)), (4, None)] {
        let w = worker(&format!("w{i}"), &format!("tok{i}"));
        store.insert_worker(&w).await.unwrap();
        store
            .transition_worker(&w.id, WorkerState::Booting, t(1))
            .await
            .unwrap();
        if let Some(b) = boot {
            store
                .transition_worker(&w.id, WorkerState::Ready, t(b))
                .await
                .unwrap();
        }
    }
    for (s, at) in [
        (WorkerState::Terminating, 40),
        (WorkerState::Terminated, 41),
    ] {
        store
            .transition_worker(&WorkerId::from_string("w1"), s, t(at))
            .await
            .unwrap();
    }
    let boots = |v: Vec<Worker>| -> Vec<(String, f64)> {
        v.into_iter()
            .map(|w| (w.id.to_string(), w.boot_s().unwrap()))
            .collect()
    };
    // Oldest registration first; the one never registered is not a boot.
    assert_eq!(
        boots(store.recently_registered(&spec().id, 10).await.unwrap()),
        [
            ("w2".into(), 10.0),
            ("w3".into(), 20.0),
            ("w1".into(), 30.0)
        ]
    );
    // The limit keeps the latest.
    assert_eq!(
        boots(store.recently_registered(&spec().id, 2).await.unwrap()),
        [("w3".into(), 20.0), ("w1".into(), 30.0)]
    );
    let other = PoolId::new("ci/other").unwrap();
    assert!(
        store
            .recently_registered(&other, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn idle_periods_are_kept_once_in_order_pruned_and_go_with_their_pool(store: Store) {
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    let id = spec().id;
    let fence = store.acquire_leases("r", 60_000).await.unwrap()[0]
        .fence
        .clone();
    let period = |w: &str, end: i64, idle_ms: i64, reused: bool| IdlePeriod {
        worker_id: WorkerId::from_string(w),
        ended_at: t(end),
        idle_ms,
        reused,
        // Reused periods carry the level they idled at; the others none.
        level: reused.then_some(end as u32 / 10),
    };
    store
        .record_idle_periods(
            &fence,
            &[
                period("w2", 20, 5_000, true),
                period("w1", 20, 90_000, false),
                period("w1", 10, 1_500, true),
            ],
        )
        .await
        .unwrap();
    // Recorded again (a round retried), with a different length: kept as first stored.
    store
        .record_idle_periods(&fence, &[period("w1", 10, 7_000, false)])
        .await
        .unwrap();
    // A replica whose lease has moved on stores nothing.
    let stale = store::Fence {
        pool_id: id.clone(),
        token: fence.token - 1,
    };
    assert!(matches!(
        store
            .record_idle_periods(&stale, &[period("w3", 12, 1_000, true)])
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    let read = |since, until| store.idle_periods(&id, t(since), t(until));
    assert_eq!(
        read(0, 100).await.unwrap(),
        [
            period("w1", 10, 1_500, true),
            period("w1", 20, 90_000, false),
            period("w2", 20, 5_000, true)
        ]
    );
    // The range is half open, on the end.
    assert_eq!(read(11, 20).await.unwrap(), []);
    assert_eq!(read(10, 11).await.unwrap(), [period("w1", 10, 1_500, true)]);
    let other = PoolId::new("ci/other").unwrap();
    assert!(
        store
            .idle_periods(&other, t(0), t(100))
            .await
            .unwrap()
            .is_empty()
    );
    // Retention by time, across pools.
    assert_eq!(store.prune_idle_periods(t(15)).await.unwrap(), 1);
    assert_eq!(read(0, 100).await.unwrap().len(), 2);
    // A pool deleted with no live worker takes its periods along: a new pool with the
    // same id starts with none.
    assert!(matches!(
        store.delete_pool(&id, 1, "a", t(30)).await.unwrap(),
        DeleteOutcome::Deleted
    ));
    store.create_pool(&spec(), "a", t(31)).await.unwrap();
    assert!(read(0, 100).await.unwrap().is_empty());
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
    // Replica a takes the free pool; b finds nothing while a's lease runs.
    let a = store.acquire_leases("replica-a", 3_000).await.unwrap();
    assert_eq!(a.len(), 1);
    let fence_a = a[0].fence.clone();
    assert_eq!(fence_a.pool_id, id);
    assert!(
        store
            .acquire_leases("replica-b", 3_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Renewing keeps the fence.
    let again = store.acquire_leases("replica-a", 3_000).await.unwrap();
    assert_eq!(again[0].fence, fence_a);
    // a's writes go through while it holds the lease.
    let w = worker("w-lease", "tok-lease");
    store.insert_worker_fenced(&fence_a, &w).await.unwrap();
    // Once a's lease expires (database clock), b takes it with a new fence ...
    tokio::time::sleep(std::time::Duration::from_millis(3_200)).await;
    let b = store.acquire_leases("replica-b", 60_000).await.unwrap();
    assert_eq!(b.len(), 1);
    assert!(b[0].fence.token > fence_a.token);
    assert!(
        store
            .acquire_leases("replica-a", 300)
            .await
            .unwrap()
            .is_empty()
    );
    // ... and a, waking up late, can write nothing more.
    let w2 = worker("w-late", "tok-late");
    assert!(matches!(
        store.insert_worker_fenced(&fence_a, &w2).await,
        Err(StoreError::LeaseLost(_))
    ));
    assert!(store.get_worker(&w2.id).await.unwrap().is_none());
    assert!(matches!(
        store
            .modify_worker_fenced(&fence_a, &w.id, |w| Ok(
                w.transition(WorkerState::Booting, t(5))?
            ))
            .await,
        Err(StoreError::LeaseLost(_))
    ));
    assert_eq!(
        store.get_worker(&w.id).await.unwrap().unwrap().state,
        WorkerState::Requested
    );
    store
        .modify_worker_fenced(&b[0].fence, &w.id, |w| {
            Ok(w.transition(WorkerState::Booting, t(5))?)
        })
        .await
        .unwrap();
    assert_eq!(
        store.lease_holders().await.unwrap(),
        vec![(id.to_string(), "replica-b".to_owned(), b[0].fence.token)]
    );
    // A clean shutdown hands the pool over at once.
    assert_eq!(store.release_leases("replica-b").await.unwrap(), 1);
    let a2 = store.acquire_leases("replica-a", 60_000).await.unwrap();
    assert!(a2[0].fence.token > b[0].fence.token);
}

async fn lease_fences_only_go_up_and_concurrent_takers_split_the_pools(store: Store) {
    let ids: Vec<String> = (0..8).map(|i| format!("ci/lease-{i}")).collect();
    for id in &ids {
        let spec = PoolSpec::from_yaml(&format!(
            "id: {id}\nprovider: fake\nmax_capacity: 4\nlaunch_configs: [{{id: s, instance_type: t}}]\n"
        ))
        .unwrap();
        store.create_pool(&spec, "a", t(0)).await.unwrap();
    }
    // Two replicas taking leases at the same time: each pool goes to exactly one.
    let (a, b) = tokio::join!(
        store.acquire_leases("replica-a", 60_000),
        store.acquire_leases("replica-b", 60_000)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let pools = |l: &[store::Lease]| -> Vec<String> {
        l.iter().map(|l| l.fence.pool_id.to_string()).collect()
    };
    let mut all = pools(&a);
    all.extend(pools(&b));
    all.sort();
    assert_eq!(all, ids, "a: {a:?}\nb: {b:?}");
    let holders = store.lease_holders().await.unwrap();
    assert_eq!(holders.len(), ids.len());
    for (pool, owner, fence) in &holders {
        let mine = if owner == "replica-a" { &a } else { &b };
        let lease = mine
            .iter()
            .find(|l| l.fence.pool_id.as_str() == pool)
            .unwrap_or_else(|| panic!("{pool} held by {owner}, who was not told"));
        assert_eq!(lease.fence.token, *fence);
    }
    // Again, concurrently: renewals keep every fence, nothing changes hands.
    let fences = |l: &[store::Lease]| -> Vec<store::Fence> {
        let mut f: Vec<_> = l.iter().map(|l| l.fence.clone()).collect();
        f.sort_by(|x, y| x.pool_id.cmp(&y.pool_id));
        f
    };
    let (a2, b2) = tokio::join!(
        store.acquire_leases("replica-a", 300),
        store.acquire_leases("replica-b", 60_000)
    );
    assert_eq!(fences(&a2.unwrap()), fences(&a));
    assert_eq!(fences(&b2.unwrap()), fences(&b));
    // a's leases lapse (300 ms now). a taking them back gets new fences all the same:
    // a round it started under the old fence must not write, since another replica
    // may have held the pool in between.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let a3 = store.acquire_leases("replica-a", 60_000).await.unwrap();
    assert_eq!(a3.len(), a.len());
    for (old, new) in fences(&a).iter().zip(fences(&a3)) {
        assert_eq!(old.pool_id, new.pool_id);
        assert!(new.token > old.token, "{old:?} -> {new:?}");
        assert!(matches!(
            store.check_fence(old).await,
            Err(StoreError::LeaseLost(_))
        ));
        store.check_fence(&new).await.unwrap();
    }
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

async fn plans_are_recorded_fenced_and_deleted_pools_finish(store: Store) {
    use capstan_core::{Action, Forecast, Plan, PlanReport, ScalingPolicy, TargetTerm};
    let id = spec().id;
    store.create_pool(&spec(), "a", t(0)).await.unwrap();
    let fence = store.acquire_leases("r", 60_000).await.unwrap()[0]
        .fence
        .clone();
    let report = |at| PlanReport {
        at,
        policy: ScalingPolicy::Reactive,
        forecast_slots: 2,
        backlog_slots: 2,
        boot_hedge_slots: 0,
        min_slots: 0,
        schedule_slots: 0,
        max_slots: 10,
        budget_slots: None,
        target_slots: 2,
        target_set_by: TargetTerm::Backlog,
        keep_slots: 2,
        held_slots: 0,
        idle_timeout_s: Some(600.0),
        idle_timeout_chosen: false,
        current_slots: 0,
        launch_slots: 2,
        launched_last_minute: 0,
        rate_limited: false,
        unmet_slots: 0,
        skipped_offerings: vec![],
    };
    let forecast = Forecast {
        made_at: t(1),
        policy: ScalingPolicy::Reactive,
        lead_s: 120.0,
        target_slots: 2,
        backlog_slots: 2,
        expected_busy_slots: 2.0,
        points: vec![],
    };
    let acting = Plan {
        actions: vec![Action::Launch {
            launch_config_id: "small".into(),
            zone: None,
            count: 1,
            idempotency_token: "tok".into(),
        }],
        report: report(t(1)),
    };
    let quiet = Plan {
        actions: vec![],
        report: report(t(2)),
    };
    store
        .record_plan(&fence, "r", &acting, &forecast)
        .await
        .unwrap();
    store
        .record_plan(&fence, "r", &quiet, &forecast)
        .await
        .unwrap();
    let status = store.pool_status(&id).await.unwrap().unwrap();
    assert_eq!(
        (status.at, status.owner.as_str(), status.fence),
        (t(2), "r", fence.token)
    );
    assert_eq!(status.plan, quiet);
    let log = store.plan_log(&id, t(0), 10).await.unwrap();
    assert_eq!(log.len(), 1, "only plans with actions are logged");
    assert_eq!(log[0].plan, acting);
    // A stale fence writes nothing.
    let stale = store::Fence {
        pool_id: id.clone(),
        token: fence.token - 1,
    };
    assert!(matches!(
        store.record_plan(&stale, "r", &acting, &forecast).await,
        Err(StoreError::LeaseLost(_))
    ));
    // Deleting with a live worker marks the pool; the holder removes it once the worker
    // is gone.
    let w = worker("w-del", "tok-del");
    store.insert_worker_fenced(&fence, &w).await.unwrap();
    let generation = store.get_pool(&id).await.unwrap().unwrap().generation;
    assert!(matches!(
        store
            .delete_pool(&id, generation, "op", t(3))
            .await
            .unwrap(),
        DeleteOutcome::MarkedDeleting(_)
    ));
    assert!(
        !store
            .finish_pool_delete(&fence, "reconciler", t(4))
            .await
            .unwrap()
    );
    store
        .transition_worker(&w.id, WorkerState::Terminating, t(5))
        .await
        .unwrap();
    store
        .transition_worker(&w.id, WorkerState::Terminated, t(5))
        .await
        .unwrap();
    assert!(
        store
            .finish_pool_delete(&fence, "reconciler", t(6))
            .await
            .unwrap()
    );
    assert!(store.get_pool(&id).await.unwrap().is_none());
    assert!(store.pool_status(&id).await.unwrap().is_none());
}
