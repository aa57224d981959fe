//! The worker API's part of the store, on SQLite and PostgreSQL: registration tokens
//! are exchanged once, static machines renew, task runs are deduplicated.

use capstan_core::{PoolSpec, ProviderKind, Timestamp, Worker, WorkerId, WorkerState};
use store::scratch::{with_postgres, with_sqlite};
use store::{RegistrationUse, Store, StoreError, TaskRun};

store::on_both_backends!(register_once_then_refuse);

fn t(ms: i64) -> Timestamp {
    Timestamp::from_unix_ms(ms)
}

async fn setup(store: &Store) -> store::Fence {
    let spec = PoolSpec::from_yaml(
        "id: p\nprovider: fake\nmax_capacity: 4\nlaunch_configs:\n  - {id: a, region: r, instance_type: t, capacity: 1}\n",
    )
    .expect("spec");
    store
        .create_pool(&spec, "test", t(0))
        .await
        .expect("create");
    let leases = store.acquire_leases("me", 60_000).await.expect("lease");
    leases[0].fence.clone()
}

async fn register_once_then_refuse(store: Store) {
    let fence = setup(&store).await;
    let id = WorkerId::from_string("w-1");
    let w = Worker::requested(
        id.clone(),
        fence.pool_id.clone(),
        ProviderKind::Fake,
        Some("a".into()),
        1,
        "tok".into(),
        t(1),
    );
    store
        .insert_launch_intent(&fence, &w, "digest")
        .await
        .expect("intent");
    let (_, s) = store.worker_with_secrets(&id).await.unwrap().unwrap();
    assert_eq!(s.registration_digest.as_deref(), Some("digest"));
    assert_eq!(s.registration_used_at, None);
    let to_ready = |w: &mut Worker| {
        w.transition(WorkerState::Booting, t(2))?;
        w.transition(WorkerState::Ready, t(2))?;
        Ok(())
    };
    let w = store
        .complete_registration(&id, "cred", RegistrationUse::Once, t(2), to_ready)
        .await
        .expect("first registration");
    assert_eq!(w.state, WorkerState::Ready);
    let again = store
        .complete_registration(&id, "cred2", RegistrationUse::Once, t(3), to_ready)
        .await;
    assert!(
        matches!(again, Err(StoreError::RegistrationUsed(_))),
        "{again:?}"
    );
    let (w, s) = store.worker_with_secrets(&id).await.unwrap().unwrap();
    assert_eq!(s.credential_digest.as_deref(), Some("cred"));
    assert_eq!(s.registration_used_at, Some(t(2)));
    assert_eq!(w.registered_at, Some(t(2)));
    // Renewal (static machines) replaces the credential.
    store
        .complete_registration(&id, "cred3", RegistrationUse::Renew, t(4), |_| Ok(()))
        .await
        .expect("renew");
    let (_, s) = store.worker_with_secrets(&id).await.unwrap().unwrap();
    assert_eq!(s.credential_digest.as_deref(), Some("cred3"));

    let runs = [
        TaskRun {
            finished_at: t(10),
            duration_ms: 500,
        },
        TaskRun {
            finished_at: t(11),
            duration_ms: 700,
        },
    ];
    store
        .record_task_runs(&fence.pool_id, "w-1", &runs, t(20))
        .await
        .unwrap();
    // A retried heartbeat resends the first task: it is not counted twice.
    store
        .record_task_runs(&fence.pool_id, "w-1", &runs[..1], t(30))
        .await
        .unwrap();
    let got = store
        .task_runs_recorded(&fence.pool_id, t(0), t(100))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, runs[0]);
    assert!(
        store
            .task_runs_recorded(&fence.pool_id, t(20), t(100))
            .await
            .unwrap()
            .is_empty()
    );
}
