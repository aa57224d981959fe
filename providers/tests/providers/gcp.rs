//! The GCP provider through the real `google-cloud-compute-v1` client against gcplocal
//! (started through capstan's launcher, see `tests/emulators/gcplocal_launcher.py`),
//! with a fault proxy for the errors gcplocal cannot produce.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_core::{LaunchConfig, Market, PoolId};
use providers::gcp::GcpProvider;
use providers::{ErrorKind, InMemoryLedger, Instance, LaunchRequest, ListScope, Provider};

use crate::conformance::{self, Harness};
use providers::emulator::{self, Emulator};
use providers::fault_proxy::{Action, FaultProxy, Rule, http_call};

const PROJECT: &str = "capstan-test";
const ZONE: &str = "us-central1-a";

struct Gce {
    proxy: FaultProxy,
    emulator: Emulator,
}

async fn start(test: &str) -> Option<Gce> {
    let exe = emulator::require("CAPSTAN_GCPLOCAL", "gcplocal", test)?;
    let emulator = emulator::start_gcplocal(&exe);
    let proxy = FaultProxy::start(&emulator.endpoint).await;
    Some(Gce { proxy, emulator })
}

async fn provider(endpoint: &str) -> GcpProvider {
    GcpProvider::for_endpoint(endpoint, PROJECT, Arc::new(InMemoryLedger::new()))
        .await
        .expect("client")
        .with_operation_timeout(Duration::from_secs(10))
}

fn launch_config(market: Market) -> LaunchConfig {
    serde_json::from_value(serde_json::json!({
        "id": "e2-standard-4",
        "region": "us-central1",
        "zone": ZONE,
        "instance_type": "e2-standard-4",
        "market": market.as_str(),
        "price_per_hour": 0.134,
        "provider_config": {
            "image": "projects/debian-cloud/global/images/family/debian-12",
            "labels": {"team": "ci"},
            "metadata": {"startup-script": "#!/bin/sh\necho hi"}
        }
    }))
    .unwrap()
}

/// A Compute Engine HTTP error document.
fn gce_error(code: u16, reason: &str, message: &str) -> Action {
    Action::Respond {
        status: code,
        content_type: "application/json; charset=UTF-8",
        body: serde_json::json!({"error": {
            "code": code, "message": message,
            "errors": [{"message": message, "domain": "usageLimits", "reason": reason}]
        }})
        .to_string(),
    }
}

/// A zone operation, `status` DONE or RUNNING, optionally finished with an error.
fn operation(id: u64, status: &str, error: Option<(&str, &str)>) -> String {
    let mut op = serde_json::json!({
        "kind": "compute#operation",
        "id": id.to_string(),
        "name": format!("operation-{id}"),
        "operationType": "insert",
        "status": status,
        "progress": if status == "DONE" { 100 } else { 0 },
        "zone": format!("projects/{PROJECT}/zones/{ZONE}"),
    });
    if let Some((code, message)) = error {
        op["error"] = serde_json::json!({"errors": [{"code": code, "message": message}]});
        op["httpErrorStatusCode"] = serde_json::json!(503);
        op["httpErrorMessage"] = serde_json::json!("SERVICE UNAVAILABLE");
    }
    op.to_string()
}

fn insert_rule(action: Action) -> Rule {
    Rule::on_path("POST", "/instances?", action)
}

struct GcpHarness {
    gce: Gce,
    provider: Arc<GcpProvider>,
}

#[async_trait]
impl Harness for GcpHarness {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }

    fn launch_config(&self) -> LaunchConfig {
        launch_config(Market::Spot)
    }

    async fn inject(&self, _pool: &PoolId, kind: ErrorKind, after: u32) -> bool {
        let action = match kind {
            // Stockouts arrive as a finished operation carrying the error.
            ErrorKind::InsufficientCapacity => Action::Respond {
                status: 200,
                content_type: "application/json",
                body: operation(
                    7001,
                    "DONE",
                    Some((
                        "ZONE_RESOURCE_POOL_EXHAUSTED",
                        "The zone 'projects/capstan-test/zones/us-central1-a' does not have enough resources available to fulfill the request.",
                    )),
                ),
            },
            ErrorKind::QuotaExceeded => gce_error(
                403,
                "quotaExceeded",
                "Quota 'CPUS' exceeded.  Limit: 24.0 in region us-central1.",
            ),
            ErrorKind::Throttled => gce_error(403, "rateLimitExceeded", "Rate Limit Exceeded"),
            _ => return false,
        };
        let mut rule = insert_rule(action);
        rule.skip = after;
        self.gce.proxy.add(rule);
        true
    }

    async fn clear_faults(&self) {
        self.gce.proxy.clear();
    }

    /// GCE preempts a SPOT VM (test-only route of the launcher).
    async fn interrupt(&self, instance: &Instance) -> bool {
        let (zone, name) = instance.id.split_once('/').unwrap();
        let (status, body) = http_call(
            "POST",
            &format!(
                "{}/_capstan/preempt/{PROJECT}/{zone}/{name}",
                self.gce.emulator.endpoint
            ),
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        true
    }
}

fn request(pool: &str, market: Market, tokens: &[&str]) -> LaunchRequest {
    conformance::request(&PoolId::new(pool).unwrap(), &launch_config(market), tokens)
}

#[tokio::test]
async fn gcp_passes_the_conformance_suite_against_gcplocal() {
    let Some(gce) = start("gcp_passes_the_conformance_suite_against_gcplocal").await else {
        return;
    };
    let provider = Arc::new(provider(&gce.proxy.endpoint).await);
    let h = GcpHarness { gce, provider };
    conformance::run("gcp", &h).await;
    let inserts: Vec<_> = h
        .gce
        .proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.contains("/instances?"))
        .collect();
    assert!(!inserts.is_empty());
    assert!(
        inserts.iter().all(|s| s.path.contains("requestId=")),
        "requestId on every insert"
    );
}

#[tokio::test]
async fn gcp_instances_carry_labels_metadata_and_spot_scheduling() {
    let Some(gce) = start("gcp_instances_carry_labels_metadata_and_spot_scheduling").await else {
        return;
    };
    let p = provider(&gce.proxy.endpoint).await;
    let out = p
        .launch(&request("ci/linux", Market::Spot, &["s1"]))
        .await
        .unwrap();
    assert!(out.is_complete(), "{:?}", out.failed);
    let inst = &out.launched[0];
    assert_eq!(inst.id, format!("{ZONE}/capstan-w-s1"));
    assert_eq!(inst.market, Market::Spot);
    assert_eq!(inst.instance_type, "e2-standard-4");
    assert_eq!(inst.pool_id, Some(PoolId::new("ci/linux").unwrap()));

    let (status, raw) = http_call(
        "GET",
        &format!(
            "{}/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/capstan-w-s1",
            gce.emulator.endpoint
        ),
        "",
    )
    .await;
    assert_eq!(status, 200);
    let raw: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(raw["labels"]["capstan-pool"], "ci_2flinux");
    assert_eq!(raw["labels"]["capstan-worker"], "w-s1");
    assert_eq!(raw["labels"]["capstan-launch-config"], "e2-standard-4");
    assert_eq!(raw["labels"]["team"], "ci");
    assert_eq!(raw["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(raw["scheduling"]["instanceTerminationAction"], "DELETE");
    let items = raw["metadata"]["items"].as_array().unwrap();
    let item = |k: &str| {
        items
            .iter()
            .find(|i| i["key"] == k)
            .and_then(|i| i["value"].as_str())
            .map(str::to_owned)
    };
    assert_eq!(item("capstan-pool").as_deref(), Some("ci/linux"));
    assert_eq!(
        item("startup-script").as_deref(),
        Some("#!/bin/sh\necho hi")
    );
    let ud: serde_json::Value = serde_json::from_str(&item("capstan-user-data").unwrap()).unwrap();
    assert_eq!(ud["registration_token"], "reg-s1");
    assert_eq!(ud["worker_id"], "w-s1");

    let od = p
        .launch(&request("ci/linux", Market::OnDemand, &["s2"]))
        .await
        .unwrap();
    assert_eq!(od.launched[0].market, Market::OnDemand);
}

#[tokio::test]
async fn gcp_operation_errors_found_by_polling_are_classified() {
    let Some(gce) = start("gcp_operation_errors_found_by_polling_are_classified").await else {
        return;
    };
    let p = provider(&gce.proxy.endpoint).await;
    gce.proxy.add(insert_rule(Action::Respond {
        status: 200,
        content_type: "application/json",
        body: operation(8001, "RUNNING", None),
    }));
    gce.proxy.add(Rule::on_path(
        "GET",
        "/operations/operation-8001",
        Action::Respond {
            status: 200,
            content_type: "application/json",
            body: operation(
                8001,
                "DONE",
                Some(("QUOTA_EXCEEDED", "Quota 'SSD_TOTAL_GB' exceeded.")),
            ),
        },
    ));
    let out = p
        .launch(&request("ci/linux", Market::Spot, &["o1"]))
        .await
        .unwrap();
    let e = out.first_error().unwrap();
    assert_eq!(e.kind(), ErrorKind::QuotaExceeded, "{e}");
    assert_eq!(e.code(), "QUOTA_EXCEEDED");
    assert_eq!(e.message(), "Quota 'SSD_TOTAL_GB' exceeded.");
    assert_eq!(gce.proxy.count("/operations/operation-8001"), 1);
}

#[tokio::test]
async fn gcp_operation_waits_are_bounded() {
    let Some(gce) = start("gcp_operation_waits_are_bounded").await else {
        return;
    };
    let p = GcpProvider::for_endpoint(
        &gce.proxy.endpoint,
        PROJECT,
        Arc::new(InMemoryLedger::new()),
    )
    .await
    .unwrap()
    .with_operation_timeout(Duration::from_millis(800));
    gce.proxy.add(insert_rule(Action::Respond {
        status: 200,
        content_type: "application/json",
        body: operation(9001, "RUNNING", None),
    }));
    gce.proxy.add(Rule::on_path(
        "GET",
        "/operations/operation-9001",
        Action::Respond {
            status: 200,
            content_type: "application/json",
            body: operation(9001, "RUNNING", None),
        },
    ));
    let out = p
        .launch(&request("ci/linux", Market::Spot, &["b1"]))
        .await
        .unwrap();
    let e = out.first_error().unwrap();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert_eq!(e.code(), "OperationTimeout");
}

#[tokio::test]
async fn gcp_lists_by_pool_label_across_zones() {
    let Some(gce) = start("gcp_lists_by_pool_label_across_zones").await else {
        return;
    };
    let p = provider(&gce.proxy.endpoint).await;
    let mut b = request("ci/b", Market::OnDemand, &["b1"]);
    b.zone = Some("europe-west4-a".into());
    p.launch(&request("ci/a", Market::OnDemand, &["a1"]))
        .await
        .unwrap();
    p.launch(&b).await.unwrap();
    let a = p
        .list(&ListScope::Pool(PoolId::new("ci/a").unwrap()))
        .await
        .unwrap();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].zone.as_deref(), Some(ZONE));
    let all = p.list(&ListScope::All).await.unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(all.iter().any(|i| i.id == "europe-west4-a/capstan-w-b1"));
}

#[tokio::test]
async fn gcp_rejects_launch_configs_without_zone_or_image() {
    let Some(gce) = start("gcp_rejects_launch_configs_without_zone_or_image").await else {
        return;
    };
    let p = provider(&gce.proxy.endpoint).await;
    let mut r = request("ci/a", Market::OnDemand, &["z"]);
    r.launch_config.zone = None;
    let e = p.launch(&r).await.unwrap_err();
    assert_eq!(e.message(), "zone: required for gcp launch configs");
    let mut r = request("ci/a", Market::OnDemand, &["z"]);
    r.launch_config.provider_config.remove("image");
    let e = p.launch(&r).await.unwrap_err();
    assert!(e.message().contains("image"), "{e}");
    assert_eq!(gce.proxy.seen().len(), 0, "nothing sent");
}
