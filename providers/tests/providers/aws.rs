//! The AWS provider through the real `aws-sdk-ec2` client against moto_server, with a
//! fault proxy for the errors and interruptions moto cannot produce.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::types::Filter;
use capstan_core::{LaunchConfig, Market, PoolId};
use providers::aws::AwsProvider;
use providers::{
    ErrorKind, InMemoryLedger, Instance, InstanceState, LaunchRequest, ListScope, Provider,
};

use crate::conformance::{self, Harness};
use providers::emulator::{self, Emulator};
use providers::fault_proxy::{Action, FaultProxy, Rule, ec2_fault};

const REGION: &str = "us-east-1";
/// One of the AMIs moto ships.
const AMI: &str = "ami-03cf127a";

struct Moto {
    proxy: FaultProxy,
    _moto: Emulator,
    moto_endpoint: String,
}

async fn start(test: &str) -> Option<Moto> {
    let exe = emulator::require("CAPSTAN_MOTO_SERVER", "moto_server", test)?;
    let moto = emulator::start_moto(&exe);
    let proxy = FaultProxy::start(&moto.endpoint).await;
    Some(Moto {
        proxy,
        moto_endpoint: moto.endpoint.clone(),
        _moto: moto,
    })
}

fn provider(endpoint: &str, ledger: Arc<InMemoryLedger>) -> AwsProvider {
    AwsProvider::for_endpoint(endpoint, "testing", "testing", vec![REGION.into()], ledger)
}

fn launch_config(market: Market) -> LaunchConfig {
    serde_json::from_value(serde_json::json!({
        "id": "c6i-large",
        "region": REGION,
        "instance_type": "c6i.large",
        "market": market.as_str(),
        "price_per_hour": 0.085,
        "provider_config": {"image_id": AMI, "tags": {"team": "ci"}}
    }))
    .unwrap()
}

struct AwsHarness {
    moto: Moto,
    provider: Arc<AwsProvider>,
}

#[async_trait]
impl Harness for AwsHarness {
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider.clone()
    }

    fn launch_config(&self) -> LaunchConfig {
        launch_config(Market::Spot)
    }

    async fn inject(&self, _pool: &PoolId, kind: ErrorKind, after: u32) -> bool {
        let action = match kind {
            ErrorKind::InsufficientCapacity => ec2_fault(
                500,
                "InsufficientInstanceCapacity",
                "We currently do not have sufficient c6i.large capacity in the Availability Zone you requested (us-east-1a).",
            ),
            ErrorKind::QuotaExceeded => ec2_fault(
                400,
                "VcpuLimitExceeded",
                "You have requested more vCPU capacity than your current vCPU limit of 32 allows.",
            ),
            ErrorKind::Throttled => {
                ec2_fault(503, "RequestLimitExceeded", "Request limit exceeded.")
            }
            _ => return false,
        };
        let mut rule = Rule::on_body("Action=RunInstances", action);
        rule.skip = after;
        self.moto.proxy.add(rule);
        true
    }

    async fn clear_faults(&self) {
        self.moto.proxy.clear();
    }

    /// AWS reclaims a spot instance: terminate it behind capstan's back, and have
    /// DescribeInstances report the state reason AWS gives reclaimed spot instances.
    async fn interrupt(&self, instance: &Instance) -> bool {
        let iid = instance.id.rsplit_once('/').unwrap().1;
        raw_client(&self.moto.moto_endpoint)
            .terminate_instances()
            .instance_ids(iid)
            .send()
            .await
            .unwrap();
        self.moto.proxy.add(Rule::on_body(
            "Action=DescribeInstances",
            Action::Rewrite {
                from: "Client.UserInitiatedShutdown".into(),
                to: "Server.SpotInstanceTermination".into(),
            },
        ));
        true
    }
}

/// An SDK client straight to moto, bypassing capstan: "the cloud" acting by itself.
fn raw_client(endpoint: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::new()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_sdk_ec2::config::Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_ec2::Client::from_conf(conf)
}

fn request(pool: &str, market: Market, tokens: &[&str]) -> LaunchRequest {
    conformance::request(&PoolId::new(pool).unwrap(), &launch_config(market), tokens)
}

#[tokio::test]
async fn aws_passes_the_conformance_suite_against_moto() {
    let Some(moto) = start("aws_passes_the_conformance_suite_against_moto").await else {
        return;
    };
    let provider = Arc::new(provider(
        &moto.proxy.endpoint,
        Arc::new(InMemoryLedger::new()),
    ));
    let h = AwsHarness { moto, provider };
    conformance::run("aws", &h).await;
    // Every create carried a ClientToken.
    let runs: Vec<_> = h
        .moto
        .proxy
        .seen()
        .into_iter()
        .filter(|s| s.body.contains("Action=RunInstances"))
        .collect();
    assert!(!runs.is_empty());
    assert!(
        runs.iter().all(|s| s.body.contains("ClientToken=")),
        "ClientToken on every create"
    );
}

#[tokio::test]
async fn aws_instances_carry_tags_user_data_and_the_spot_market() {
    let Some(moto) = start("aws_instances_carry_tags_user_data_and_the_spot_market").await else {
        return;
    };
    let p = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    let out = p
        .launch(&request("ci/linux", Market::Spot, &["t1"]))
        .await
        .unwrap();
    assert!(out.is_complete(), "{:?}", out.failed);
    let inst = &out.launched[0];
    assert_eq!(inst.market, Market::Spot);
    assert_eq!(inst.instance_type, "c6i.large");
    assert!(inst.id.starts_with("us-east-1/i-"), "{}", inst.id);

    let iid = inst.id.rsplit_once('/').unwrap().1;
    let raw = raw_client(&moto.moto_endpoint);
    let d = raw
        .describe_instances()
        .instance_ids(iid)
        .send()
        .await
        .unwrap();
    let i = &d.reservations()[0].instances()[0];
    let tag = |k: &str| {
        i.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_owned)
    };
    assert_eq!(tag("capstan:pool").as_deref(), Some("ci/linux"));
    assert_eq!(tag("capstan:worker").as_deref(), Some("w-t1"));
    assert_eq!(tag("capstan:launch-config").as_deref(), Some("c6i-large"));
    assert_eq!(tag("team").as_deref(), Some("ci"));

    let ud = raw
        .describe_instance_attribute()
        .instance_id(iid)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let encoded = ud.user_data().and_then(|v| v.value()).unwrap();
    use base64::Engine as _;
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["pool_id"], "ci/linux");
    assert_eq!(json["worker_id"], "w-t1");
    assert_eq!(json["registration_token"], "reg-t1");

    let run = moto
        .proxy
        .seen()
        .into_iter()
        .find(|s| s.body.contains("Action=RunInstances"))
        .unwrap();
    assert!(run.body.contains("ClientToken=t1"), "{}", run.body);
    assert!(
        run.body.contains("InstanceMarketOptions.MarketType=spot"),
        "{}",
        run.body
    );
}

#[tokio::test]
async fn aws_finds_an_instance_created_before_a_crash_by_its_worker_tag() {
    let Some(moto) = start("aws_finds_an_instance_created_before_a_crash_by_its_worker_tag").await
    else {
        return;
    };
    let before = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    let first = before
        .launch(&request("ci/linux", Market::OnDemand, &["k1"]))
        .await
        .unwrap();
    // A new process: the in-memory ledger is gone, moto ignores ClientToken.
    let after = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    let second = after
        .launch(&request("ci/linux", Market::OnDemand, &["k1"]))
        .await
        .unwrap();
    assert_eq!(second.launched[0].id, first.launched[0].id);
    let all = after
        .list(&ListScope::Pool(PoolId::new("ci/linux").unwrap()))
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "no second instance: {all:?}");
    assert_eq!(moto.proxy.count("Action=RunInstances"), 1);
}

#[tokio::test]
async fn aws_error_codes_are_classified_with_code_and_message_kept() {
    let Some(moto) = start("aws_error_codes_are_classified_with_code_and_message_kept").await
    else {
        return;
    };
    let p = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    for (status, code, kind) in [
        (
            500,
            "InsufficientInstanceCapacity",
            ErrorKind::InsufficientCapacity,
        ),
        (
            400,
            "MaxSpotInstanceCountExceeded",
            ErrorKind::QuotaExceeded,
        ),
        (400, "InstanceLimitExceeded", ErrorKind::QuotaExceeded),
        (400, "VcpuLimitExceeded", ErrorKind::QuotaExceeded),
        (503, "RequestLimitExceeded", ErrorKind::Throttled),
        (400, "Unsupported", ErrorKind::InsufficientCapacity),
        (400, "UnsupportedOperation", ErrorKind::InvalidConfig),
        (400, "InvalidAMIID.NotFound", ErrorKind::InvalidConfig),
        (400, "InvalidParameterValue", ErrorKind::InvalidConfig),
        (401, "AuthFailure", ErrorKind::Unauthorized),
        (403, "UnauthorizedOperation", ErrorKind::Unauthorized),
    ] {
        moto.proxy.clear();
        moto.proxy.add(Rule::on_body(
            "Action=RunInstances",
            ec2_fault(status, code, &format!("message for {code}")),
        ));
        let out = p
            .launch(&request("ci/linux", Market::Spot, &[&format!("e-{code}")]))
            .await
            .unwrap();
        let e = out.first_error().unwrap();
        assert_eq!(e.kind(), kind, "{code}");
        assert_eq!(e.code(), code);
        assert_eq!(e.message(), format!("message for {code}"));
    }
    moto.proxy.clear();
    // Describe and list fail the same way.
    moto.proxy.add(Rule::on_body(
        "Action=DescribeInstances",
        ec2_fault(
            401,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        ),
    ));
    let e = p.list(&ListScope::All).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
}

#[tokio::test]
async fn aws_html_500s_are_transient_and_not_retried() {
    let Some(moto) = start("aws_html_500s_are_transient_and_not_retried").await else {
        return;
    };
    let p = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    moto.proxy.add(Rule::on_body(
        "Action=TerminateInstances",
        Action::Respond {
            status: 500,
            content_type: "text/html",
            body: "<!doctype html><title>500 Internal Server Error</title>".into(),
        },
    ));
    let e = p
        .terminate("us-east-1/i-0123456789abcdef0")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    assert_eq!(
        moto.proxy.count("Action=TerminateInstances"),
        1,
        "retries are disabled"
    );
}

#[tokio::test]
async fn aws_user_terminations_are_not_interruptions() {
    let Some(moto) = start("aws_user_terminations_are_not_interruptions").await else {
        return;
    };
    let p = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    let id = p
        .launch(&request("ci/linux", Market::Spot, &["u1"]))
        .await
        .unwrap()
        .launched[0]
        .id
        .clone();
    p.terminate(&id).await.unwrap();
    let d = p.describe(&id).await.unwrap();
    assert_eq!(d.state, InstanceState::Terminated, "{d:?}");
    assert!(d.state_reason.unwrap().starts_with("Client."));
}

#[tokio::test]
async fn aws_spot_offerings_are_priced_from_spot_price_history() {
    let Some(moto) = start("aws_spot_offerings_are_priced_from_spot_price_history").await else {
        return;
    };
    let p = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    let spot = p
        .offerings(&pool(), &launch_config(Market::Spot))
        .await
        .unwrap();
    assert!(!spot.is_empty());
    for o in &spot {
        assert!(
            o.zone.as_deref().is_some_and(|z| z.starts_with(REGION)),
            "{o:?}"
        );
        // moto reports a fixed spot price.
        assert_eq!(o.price_per_hour, Some(0.00001));
    }
    let calls = moto.proxy.count("Action=DescribeSpotPriceHistory");
    p.offerings(&pool(), &launch_config(Market::Spot))
        .await
        .unwrap();
    assert_eq!(
        moto.proxy.count("Action=DescribeSpotPriceHistory"),
        calls,
        "cached"
    );
    let od = p
        .offerings(&pool(), &launch_config(Market::OnDemand))
        .await
        .unwrap();
    assert_eq!(od.len(), 1);
    assert_eq!(od[0].price_per_hour, Some(0.085));
}

#[tokio::test]
async fn aws_lists_only_capstan_tagged_instances() {
    let Some(moto) = start("aws_lists_only_capstan_tagged_instances").await else {
        return;
    };
    let raw = raw_client(&moto.moto_endpoint);
    raw.run_instances()
        .image_id(AMI)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .unwrap();
    let p = provider(&moto.proxy.endpoint, Arc::new(InMemoryLedger::new()));
    assert!(p.list(&ListScope::All).await.unwrap().is_empty());
    p.launch(&request("ci/a", Market::OnDemand, &["x"]))
        .await
        .unwrap();
    let all = p.list(&ListScope::All).await.unwrap();
    assert_eq!(all.len(), 1);
    let filtered = raw
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:capstan:pool")
                .values("ci/a")
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.reservations().len(), 1);
}

fn pool() -> PoolId {
    PoolId::new("ci/linux").unwrap()
}
