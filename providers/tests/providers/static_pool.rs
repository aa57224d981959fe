//! The static-pool provider: conformance plus leases, draining and label selection.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use capstan_core::{LaunchConfig, PoolId, Timestamp, WorkerId};
use providers::clock::ManualClock;
use providers::static_pool::{InMemoryInventory, StaticProvider};
use providers::{ErrorKind, Instance, InstanceState, LaunchRequest, Provider};

use crate::conformance::{self, Harness};

struct StaticHarness {
    provider: Arc<StaticProvider>,
    fillers: Mutex<Vec<String>>,
    batches: AtomicUsize,
}

fn launch_config() -> LaunchConfig {
    serde_json::from_value(serde_json::json!({
        "id": "rack", "instance_type": "static", "capacity": 4
    }))
    .unwrap()
}

fn request(pool: &PoolId, lc: LaunchConfig, tokens: &[&str]) -> LaunchRequest {
    conformance::request(pool, &lc, tokens)
}

#[async_trait]
impl Harness for StaticHarness {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }

    fn launch_config(&self) -> LaunchConfig {
        launch_config()
    }

    /// Static pools run out of capacity when every machine is leased: lease all idle
    /// machines but `after` to filler workers.
    async fn inject(&self, pool: &PoolId, kind: ErrorKind, after: u32) -> bool {
        if kind != ErrorKind::InsufficientCapacity {
            return false;
        }
        let idle = self
            .provider
            .machines(Some(pool))
            .await
            .unwrap()
            .iter()
            .filter(|m| m.assignment == providers::static_pool::Assignment::Idle)
            .count();
        let n = idle.saturating_sub(after as usize);
        let batch = self.batches.fetch_add(1, Ordering::SeqCst);
        let tokens: Vec<String> = (0..n).map(|i| format!("filler-{batch}-{i}")).collect();
        let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let out = self
            .provider
            .launch(&request(pool, launch_config(), &refs))
            .await
            .unwrap();
        assert!(out.is_complete());
        self.fillers
            .lock()
            .unwrap()
            .extend(out.launched.into_iter().map(|i| i.id));
        true
    }

    async fn clear_faults(&self) {
        let fillers: Vec<String> = std::mem::take(&mut *self.fillers.lock().unwrap());
        for id in fillers {
            self.provider.terminate(&id).await.unwrap();
            let name = id.rsplit_once('@').unwrap().0;
            self.provider.machine_drained(name).await.unwrap();
        }
    }

    async fn interrupt(&self, _instance: &Instance) -> bool {
        false
    }
}

async fn provider_with(pool: &PoolId, machines: &[(&str, &[(&str, &str)])]) -> StaticProvider {
    let p = StaticProvider::new(
        Arc::new(InMemoryInventory::new()),
        Arc::new(ManualClock::new(Timestamp::from_unix_secs(5_000))),
    );
    for (name, labels) in machines {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        p.register_machine(pool.clone(), name, 4, labels)
            .await
            .unwrap();
    }
    p
}

#[tokio::test]
async fn static_passes_the_conformance_suite() {
    let pool = PoolId::new("conformance/static").unwrap();
    let names = ["m1", "m2", "m3", "m4", "m5", "m6"];
    let machines: Vec<(&str, &[(&str, &str)])> = names.iter().map(|n| (*n, &[][..])).collect();
    let h = StaticHarness {
        provider: Arc::new(provider_with(&pool, &machines).await),
        fillers: Mutex::new(Vec::new()),
        batches: AtomicUsize::new(0),
    };
    conformance::run("static", &h).await;
}

#[tokio::test]
async fn a_drained_machine_is_leased_again_under_a_new_instance_id() {
    let pool = PoolId::new("hw").unwrap();
    let p = provider_with(&pool, &[("m1", &[])]).await;
    let first = p
        .launch(&request(&pool, launch_config(), &["a"]))
        .await
        .unwrap();
    let id1 = first.launched[0].id.clone();
    assert_eq!(id1, "m1@1");
    assert_eq!(first.launched[0].state, InstanceState::Running);

    p.terminate(&id1).await.unwrap();
    assert_eq!(
        p.describe(&id1).await.unwrap().state,
        InstanceState::ShuttingDown
    );
    // Still draining: no capacity for another worker.
    let busy = p
        .launch(&request(&pool, launch_config(), &["b"]))
        .await
        .unwrap();
    assert_eq!(busy.failed[0].error.code(), "static.NoIdleMachine");

    p.machine_drained("m1").await.unwrap();
    let second = p
        .launch(&request(&pool, launch_config(), &["c"]))
        .await
        .unwrap();
    assert_eq!(second.launched[0].id, "m1@2");
    assert_eq!(
        p.describe("m1@1").await.unwrap().state,
        InstanceState::Terminated
    );
    assert_eq!(
        p.describe("m1@2").await.unwrap().worker_id,
        Some(WorkerId::from_string("w-c"))
    );
    assert_eq!(
        p.describe("m1@3").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn launch_configs_select_machines_by_label() {
    let pool = PoolId::new("hw").unwrap();
    let p = provider_with(
        &pool,
        &[("cpu1", &[("kind", "cpu")]), ("gpu1", &[("kind", "gpu")])],
    )
    .await;
    let mut lc = launch_config();
    lc.provider_config =
        serde_json::from_value(serde_json::json!({"labels": {"kind": "gpu"}})).unwrap();
    let out = p
        .launch(&request(&pool, lc.clone(), &["g1", "g2"]))
        .await
        .unwrap();
    assert_eq!(out.launched.len(), 1);
    assert_eq!(out.launched[0].id, "gpu1@1");
    assert_eq!(out.failed[0].error.kind(), ErrorKind::InsufficientCapacity);
    assert_eq!(p.offerings(&pool, &lc).await.unwrap()[0].max_slots, Some(4));

    lc.provider_config = serde_json::from_value(serde_json::json!({"labels": ["gpu"]})).unwrap();
    let e = p.launch(&request(&pool, lc, &["x"])).await.unwrap_err();
    assert!(e.message().starts_with("provider_config.labels:"), "{e}");
}

#[tokio::test]
async fn machines_of_another_pool_are_never_leased() {
    let a = PoolId::new("hw/a").unwrap();
    let b = PoolId::new("hw/b").unwrap();
    let p = provider_with(&a, &[("m1", &[])]).await;
    let out = p
        .launch(&request(&b, launch_config(), &["x"]))
        .await
        .unwrap();
    assert_eq!(out.failed.len(), 1);
    assert!(p.list(&providers::ListScope::All).await.unwrap().is_empty());
}
