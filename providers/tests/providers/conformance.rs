//! The provider conformance suite, written once and run against every provider.
//!
//! A [`Harness`] wraps one provider with the means to provoke what the cloud does by
//! itself (capacity, quota and throttling errors, interruptions). [`run`] then checks
//! the trait's contracts: offerings, launch, tags, list by pool and for the account,
//! describe, terminate twice, idempotent launch with the same token, error
//! classification and partial launches.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use capstan_core::{LaunchConfig, PoolId, WorkerId};
use providers::{
    ErrorKind, Instance, InstanceRequest, InstanceState, LaunchOutcome, LaunchRequest, ListScope,
    Provider,
};

/// One provider plus the knobs the suite needs.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The provider under test.
    fn provider(&self) -> Arc<dyn Provider>;
    /// A launch config that launches successfully.
    fn launch_config(&self) -> LaunchConfig;
    /// Makes launches fail with `kind` after `after` more successful creates, until
    /// [`Harness::clear_faults`]. Returns false if this provider cannot fail that way.
    async fn inject(&self, pool: &PoolId, kind: ErrorKind, after: u32) -> bool;
    /// Undoes [`Harness::inject`].
    async fn clear_faults(&self);
    /// Has the cloud take `instance` back. Returns false if this provider has no such
    /// thing.
    async fn interrupt(&self, instance: &Instance) -> bool;
}

/// A launch of one instance per token, for worker `w-<token>` with registration token
/// `reg-<token>`; shared by every provider's tests.
pub(crate) fn request(pool: &PoolId, lc: &LaunchConfig, tokens: &[&str]) -> LaunchRequest {
    LaunchRequest {
        api_url: None,
        pool_id: pool.clone(),
        launch_config: lc.clone(),
        zone: None,
        instances: tokens
            .iter()
            .map(|t| InstanceRequest {
                worker_id: WorkerId::from_string(format!("w-{t}")),
                idempotency_token: (*t).to_owned(),
                registration_token: format!("reg-{t}"),
            })
            .collect(),
    }
}

fn ids(out: &LaunchOutcome) -> Vec<String> {
    out.launched.iter().map(|i| i.id.clone()).collect()
}

async fn pool_ids(p: &dyn Provider, pool: &PoolId) -> BTreeSet<String> {
    p.list(&ListScope::Pool(pool.clone()))
        .await
        .expect("list pool")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// Launches with every instance expected to fail with `kind`; checks the outcome.
async fn expect_failure(
    p: &dyn Provider,
    pool: &PoolId,
    lc: &LaunchConfig,
    tokens: &[&str],
    kind: ErrorKind,
) {
    let out = p.launch(&request(pool, lc, tokens)).await.expect("launch");
    assert!(out.launched.is_empty(), "{kind}: launched {:?}", ids(&out));
    assert_eq!(
        out.failed.len(),
        tokens.len(),
        "{kind}: every instance accounted for"
    );
    for f in &out.failed {
        assert_eq!(f.error.kind(), kind, "{kind}: {}", f.error);
        assert!(!f.error.code().is_empty(), "{kind}: provider code kept");
    }
    assert!(!out.is_partial());
}

/// The suite. `name` keeps pools of different runs apart.
pub async fn run(name: &str, h: &dyn Harness) {
    let p = h.provider();
    let p = p.as_ref();
    let pool = PoolId::new(format!("conformance/{name}")).unwrap();
    let other = PoolId::new(format!("conformance/{name}-other")).unwrap();
    let lc = h.launch_config();

    // Offerings describe the launch config.
    let offerings = p.offerings(&pool, &lc).await.expect("offerings");
    assert!(!offerings.is_empty(), "at least one offering");
    for o in &offerings {
        assert_eq!(o.provider, p.kind());
        assert_eq!(o.launch_config_id, lc.id);
        assert_eq!(o.market, lc.market);
    }

    // Launch two, tagged with pool, worker and launch config.
    let out = p
        .launch(&request(&pool, &lc, &["a1", "a2"]))
        .await
        .expect("launch");
    assert!(out.is_complete(), "launch failed: {:?}", out.failed);
    assert_eq!(out.launched.len(), 2);
    for (inst, t) in out.launched.iter().zip(["a1", "a2"]) {
        assert_eq!(inst.pool_id.as_ref(), Some(&pool), "{inst:?}");
        assert_eq!(
            inst.worker_id,
            Some(WorkerId::from_string(format!("w-{t}")))
        );
        assert_eq!(inst.launch_config_id.as_deref(), Some(lc.id.as_str()));
        assert!(inst.state.is_alive(), "{inst:?}");
    }
    let first = ids(&out);
    assert_ne!(first[0], first[1]);

    // The same tokens again: the same instances, nothing new.
    let again = p
        .launch(&request(&pool, &lc, &["a1", "a2"]))
        .await
        .expect("relaunch");
    assert!(again.is_complete());
    assert_eq!(ids(&again), first, "a repeated token must not create");
    let listed = pool_ids(p, &pool).await;
    assert_eq!(listed, first.iter().cloned().collect(), "list by pool");

    // Listing: by pool, another pool, the whole account.
    assert!(pool_ids(p, &other).await.is_empty(), "other pool is empty");
    let all: BTreeSet<String> = p
        .list(&ListScope::All)
        .await
        .expect("list all")
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert!(first.iter().all(|id| all.contains(id)), "list all: {all:?}");

    // Describe.
    let d = p.describe(&first[0]).await.expect("describe");
    assert_eq!(d.id, first[0]);
    assert_eq!(d.worker_id, Some(WorkerId::from_string("w-a1")));
    assert!(d.state.is_alive(), "{d:?}");
    let e = p
        .describe(&format!("{}-nonexistent", first[0]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // Terminate twice; an unknown id is fine too.
    p.terminate(&first[0]).await.expect("terminate");
    p.terminate(&first[0]).await.expect("terminate again");
    p.terminate(&format!("{}-nonexistent", first[0]))
        .await
        .expect("terminate unknown");
    match p.describe(&first[0]).await {
        Ok(i) => assert!(i.state.is_gone(), "after terminate: {i:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound, "{e}"),
    }
    // A terminated instance's token still does not create.
    let after = p
        .launch(&request(&pool, &lc, &["a1"]))
        .await
        .expect("relaunch a1");
    assert!(after.launched.iter().all(|i| i.id == first[0]), "{after:?}");
    assert!(pool_ids(p, &pool).await.len() <= 2);

    // Error classification.
    for (kind, tokens) in [
        (ErrorKind::InsufficientCapacity, ["c1", "c2"]),
        (ErrorKind::QuotaExceeded, ["q1", "q2"]),
        (ErrorKind::Throttled, ["t1", "t2"]),
    ] {
        if h.inject(&pool, kind, 0).await {
            expect_failure(p, &pool, &lc, &tokens, kind).await;
            h.clear_faults().await;
        } else {
            eprintln!("{name}: cannot produce {kind}; skipped that case");
        }
    }

    // Partial success: asked for 3, capacity for 1.
    assert!(h.inject(&pool, ErrorKind::InsufficientCapacity, 1).await);
    let partial = p
        .launch(&request(&pool, &lc, &["p1", "p2", "p3"]))
        .await
        .expect("launch");
    h.clear_faults().await;
    assert!(partial.is_partial(), "{partial:?}");
    assert_eq!(partial.launched.len(), 1);
    assert_eq!(partial.failed.len(), 2);
    assert_eq!(partial.requested(), 3);
    assert_eq!(
        partial.launched[0].worker_id,
        Some(WorkerId::from_string("w-p1"))
    );
    assert_eq!(
        partial.first_error().map(|e| e.kind()),
        Some(ErrorKind::InsufficientCapacity)
    );

    // Interruption.
    let victim = p
        .launch(&request(&pool, &lc, &["i1"]))
        .await
        .expect("launch");
    let victim = victim.launched.first().expect("launched").clone();
    if h.interrupt(&victim).await {
        let d = p.describe(&victim.id).await.expect("describe interrupted");
        assert_eq!(d.state, InstanceState::Interrupted, "{d:?}");
        assert!(d.state_reason.is_some(), "the reason is kept: {d:?}");
    } else {
        eprintln!("{name}: no interruptions on this provider; skipped that case");
    }

    // Clean up, so the account-wide list of the next suite starts empty of ours.
    for id in pool_ids(p, &pool).await {
        p.terminate(&id).await.expect("cleanup");
    }
}
