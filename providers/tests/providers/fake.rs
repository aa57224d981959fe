//! The fake provider: conformance plus its knobs.

use std::sync::Arc;

use async_trait::async_trait;
use capstan_core::{LaunchConfig, PoolId, Timestamp, WorkerId};
use providers::clock::ManualClock;
use providers::fake::{FakeProvider, FaultTarget};
use providers::{
    ErrorKind, Instance, InstanceRequest, InstanceState, LaunchRequest, ListScope, Provider,
};

use crate::conformance::{self, Harness};

struct FakeHarness {
    fake: Arc<FakeProvider>,
}

fn launch_config() -> LaunchConfig {
    serde_json::from_value(serde_json::json!({
        "id": "small", "region": "fake-1", "instance_type": "fake.small",
        "market": "spot", "capacity": 2, "price_per_hour": 0.1
    }))
    .unwrap()
}

#[async_trait]
impl Harness for FakeHarness {
    fn provider(&self) -> Arc<dyn Provider> {
        self.fake.clone()
    }

    fn launch_config(&self) -> LaunchConfig {
        launch_config()
    }

    async fn inject(&self, _pool: &PoolId, kind: ErrorKind, after: u32) -> bool {
        let live = self.fake.live_count() as u32;
        match kind {
            ErrorKind::InsufficientCapacity => self.fake.set_capacity(Some(live + after)),
            ErrorKind::QuotaExceeded => self.fake.set_quota(Some(live + after)),
            ErrorKind::Throttled if after == 0 => {
                self.fake
                    .inject(FaultTarget::Launch, ErrorKind::Throttled, 1)
            }
            _ => return false,
        }
        true
    }

    async fn clear_faults(&self) {
        self.fake.set_capacity(None);
        self.fake.set_quota(None);
        self.fake.clear_faults();
    }

    async fn interrupt(&self, instance: &Instance) -> bool {
        self.fake.interrupt(&instance.id)
    }
}

#[tokio::test]
async fn fake_passes_the_conformance_suite() {
    let h = FakeHarness {
        fake: Arc::new(FakeProvider::new(Arc::new(ManualClock::new(
            Timestamp::from_unix_secs(1_000),
        )))),
    };
    conformance::run("fake", &h).await;
}

fn one(token: &str) -> LaunchRequest {
    LaunchRequest {
        api_url: None,
        pool_id: PoolId::new("p").unwrap(),
        launch_config: launch_config(),
        zone: Some("fake-1a".into()),
        instances: vec![InstanceRequest {
            worker_id: WorkerId::from_string(format!("w-{token}")),
            idempotency_token: token.into(),
            registration_token: "secret".into(),
        }],
    }
}

#[tokio::test]
async fn fake_boots_after_the_configured_delay_on_its_clock() {
    let clock = ManualClock::new(Timestamp::from_unix_secs(0));
    let fake = FakeProvider::new(Arc::new(clock.clone()));
    fake.set_boot_delay_secs(90);
    let out = fake.launch(&one("a")).await.unwrap();
    let id = out.launched[0].id.clone();
    assert_eq!(out.launched[0].state, InstanceState::Pending);
    assert_eq!(out.launched[0].zone.as_deref(), Some("fake-1a"));
    clock.advance_secs(89);
    assert_eq!(
        fake.describe(&id).await.unwrap().state,
        InstanceState::Pending
    );
    clock.advance_secs(1);
    assert_eq!(
        fake.describe(&id).await.unwrap().state,
        InstanceState::Running
    );
    let ud = fake.user_data(&id).unwrap();
    assert_eq!(ud.worker_id, "w-a");
    assert_eq!(ud.registration_token, "secret");
}

#[tokio::test]
async fn fake_forgets_terminated_instances_after_an_hour() {
    let clock = ManualClock::new(Timestamp::from_unix_secs(0));
    let fake = FakeProvider::new(Arc::new(clock.clone()));
    let id = fake.launch(&one("a")).await.unwrap().launched[0].id.clone();
    fake.terminate(&id).await.unwrap();
    clock.advance_secs(3599);
    assert_eq!(
        fake.describe(&id).await.unwrap().state,
        InstanceState::Terminated
    );
    clock.advance_secs(1);
    assert_eq!(
        fake.describe(&id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn fake_throttling_applies_to_any_call_when_asked() {
    let fake = FakeProvider::new(Arc::new(ManualClock::default()));
    fake.inject(FaultTarget::AnyCall, ErrorKind::Throttled, 2);
    let e = fake.list(&ListScope::All).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Throttled);
    assert_eq!(e.code(), "fake.RequestLimitExceeded");
    assert!(fake.describe("fake-1").await.is_err());
    assert!(fake.list(&ListScope::All).await.unwrap().is_empty());
    assert_eq!(fake.calls(), 3);
}

#[tokio::test]
async fn fake_spot_offerings_use_the_configured_spot_price() {
    let fake = FakeProvider::new(Arc::new(ManualClock::default()));
    fake.set_spot_price("fake.small", 0.03);
    let o = fake
        .offerings(&PoolId::new("p").unwrap(), &launch_config())
        .await
        .unwrap();
    assert_eq!(o[0].price_per_hour, Some(0.03));
    assert_eq!(o[0].slots, 2);
}

/// Listing one pool answers that pool's instances only (from its index, not a scan):
/// booting ones turn running on time, ended ones stay listed until forgotten, and an
/// instance interrupted while booting stays interrupted.
#[tokio::test]
async fn fake_lists_one_pool_as_its_instances_change() {
    let clock = ManualClock::new(Timestamp::from_unix_secs(0));
    let fake = FakeProvider::new(Arc::new(clock.clone()));
    fake.set_boot_delay_secs(60);
    let in_pool = |pool: &str, token: &str| LaunchRequest {
        api_url: None,
        pool_id: PoolId::new(pool).unwrap(),
        ..one(token)
    };
    let a1 = fake.launch(&in_pool("a", "a1")).await.unwrap().launched[0].clone();
    let a2 = fake.launch(&in_pool("a", "a2")).await.unwrap().launched[0].clone();
    let b1 = fake.launch(&in_pool("b", "b1")).await.unwrap().launched[0].clone();
    let list = |pool: &str| {
        let scope = ListScope::Pool(PoolId::new(pool).unwrap());
        let fake = &fake;
        async move {
            let mut l: Vec<(String, InstanceState)> = fake
                .list(&scope)
                .await
                .unwrap()
                .into_iter()
                .map(|i| (i.id, i.state))
                .collect();
            l.sort_by(|x, y| x.0.cmp(&y.0));
            l
        }
    };
    assert_eq!(
        list("a").await,
        [
            (a1.id.clone(), InstanceState::Pending),
            (a2.id.clone(), InstanceState::Pending)
        ]
    );
    assert_eq!(list("b").await, [(b1.id.clone(), InstanceState::Pending)]);
    assert!(list("c").await.is_empty());

    assert!(fake.interrupt(&a2.id));
    clock.advance_secs(60);
    fake.terminate(&b1.id).await.unwrap();
    assert_eq!(
        list("a").await,
        [
            (a1.id.clone(), InstanceState::Running),
            (a2.id.clone(), InstanceState::Interrupted)
        ]
    );
    assert_eq!(
        list("b").await,
        [(b1.id.clone(), InstanceState::Terminated)]
    );

    // a2 ended at 0 s and b1 at 60 s: each is forgotten an hour later.
    clock.advance_secs(3540);
    assert_eq!(list("a").await, [(a1.id.clone(), InstanceState::Running)]);
    assert_eq!(
        list("b").await,
        [(b1.id.clone(), InstanceState::Terminated)]
    );
    clock.advance_secs(60);
    assert!(list("b").await.is_empty());
    assert_eq!(fake.list(&ListScope::All).await.unwrap().len(), 1);
}
