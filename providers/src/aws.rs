//! AWS EC2, spot and on-demand, through `aws-sdk-ec2`.
//!
//! # RunInstances, one instance per call
//!
//! Each instance is created with its own `RunInstances` call (`MinCount = MaxCount =
//! 1`) rather than with an EC2 Fleet of type `instant`:
//!
//! - Every capstan instance has its own identity: the worker id goes into its tags and
//!   its user-data with its own registration token. A Fleet launches N copies of one
//!   launch template, so per-instance user-data and tags would need a second,
//!   non-atomic call after the launch, leaving a window in which a crash produces
//!   untagged, unregistrable machines.
//! - Each call carries its instance's idempotency token as `ClientToken`, so a retried
//!   create is idempotent per worker, which is what the store records.
//! - Diversification across instance types, zones and markets is the planner's job:
//!   each launch config is an offering, capacity and quota errors mark it unavailable
//!   for a while, and the plan report says which offering was skipped and why. A Fleet
//!   would make that choice invisibly inside AWS.
//! - Fleets need launch templates, a second resource to create, version and clean up.
//!
//! The cost is N API calls for N instances; capstan launches at most a pool's
//! `max_launches_per_minute` per tick, and the calls stop at the first capacity, quota
//! or throttling error (the rest are reported failed with that error).
//!
//! # Idempotency
//!
//! EC2 honours `ClientToken` for a while; moto ignores it. So a launch runs the
//! sequence every provider shares (see [`crate::launch`]): it (1) looks the tokens up in
//! the [`LaunchLedger`], (2) looks for instances of the pool tagged with the remaining
//! workers' ids (a crash between a create and its ledger record; one
//! `DescribeInstances` per 200 workers, before the first create), and creates only the
//! instances both left out, recording each new instance afterwards.
//!
//! # Tags, user-data, interruption
//!
//! Instances and their volumes are tagged `capstan:pool`, `capstan:worker`,
//! `capstan:launch-config` (plus the launch config's own `tags`). User-data is the
//! JSON [`UserData`] document. An instance stopped or terminated with a `Server.*`
//! state reason (`Server.SpotInstanceTermination`, `Server.SpotInstanceShutdown`,
//! `Server.InsufficientInstanceCapacity`) was taken back by AWS and is reported as
//! [`InstanceState::Interrupted`]; `Client.*` reasons are someone's request.
//!
//! # Prices
//!
//! On-demand prices come from the launch config. Spot prices come from
//! `DescribeSpotPriceHistory` (Linux/UNIX, latest sample per zone), cached per region,
//! instance type and zone for [`SPOT_PRICE_TTL`].
//!
//! # Credentials, regions, retries
//!
//! [`AwsProvider::from_environment`] uses `aws-config`'s standard chain (environment,
//! shared profile, web identity / IRSA, ECS and EC2 instance roles): production runs
//! on instance roles and IRSA, which only that chain implements, so `aws-config` is a
//! dependency, trimmed to `rt-tokio` + `default-https-client` (no SSO, no
//! credential_process). [`AwsProvider::for_endpoint`] takes an endpoint override and
//! static keys, for emulators. SDK retries are disabled: the reconciler is
//! level-triggered and makes one attempt per action (and moto's unimplemented calls
//! answer HTML 500s an SDK would retry). One provider serves several regions; instance
//! ids are `region/i-…`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceInterruptionBehavior,
    InstanceMarketOptionsRequest, InstanceStateName, InstanceType, MarketType, Placement,
    ResourceType, SpotInstanceType, SpotMarketOptions, Tag, TagSpecification,
};
use base64::Engine as _;
use capstan_core::{LaunchConfig, Market, Offering, PoolId, ProviderKind, Timestamp, WorkerId};
use serde::Deserialize;

use crate::Provider;
use crate::error::{ErrorKind, ProviderError};
use crate::instance::{
    Instance, InstanceState, ListScope, TAG_LAUNCH_CONFIG, TAG_POOL, TAG_WORKER,
};
use crate::launch::{
    Creator, InstanceRequest, LaunchOutcome, LaunchRequest, UserData, ec2_client_token, launch_each,
};
use crate::ledger::LaunchLedger;

/// How long a spot price read from `DescribeSpotPriceHistory` is reused.
pub const SPOT_PRICE_TTL: Duration = Duration::from_secs(300);

/// Bound on one API call, including connection setup.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The fields of an AWS launch config's `provider_config`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsLaunchSpec {
    /// AMI to boot (`ami-0abc…`). Required.
    pub image_id: String,
    /// Subnet to launch into; decides the zone. Default: the default VPC's subnet in
    /// the zone EC2 picks (or the offering's zone).
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Security groups (ids). Default: the VPC's default group.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// Instance profile name or ARN giving the worker its own AWS permissions.
    #[serde(default)]
    pub iam_instance_profile: Option<String>,
    /// SSH key pair name.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Extra tags on instances and volumes (cannot override `capstan:*`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Spot only: the most to pay per hour, as a decimal string. Default: the
    /// on-demand price (AWS's default).
    #[serde(default)]
    pub spot_max_price: Option<String>,
}

impl AwsLaunchSpec {
    /// Reads and checks `lc.provider_config`; errors name the field.
    pub fn from_launch_config(lc: &LaunchConfig) -> Result<Self, ProviderError> {
        let spec: Self =
            serde_json::from_value(serde_json::Value::Object(lc.provider_config.clone()))
                .map_err(|e| ProviderError::invalid_field("provider_config", e))?;
        if spec.image_id.trim().is_empty() {
            return Err(ProviderError::invalid_field(
                "provider_config.image_id",
                "must not be empty",
            ));
        }
        if let Some(k) = spec.tags.keys().find(|k| k.starts_with("capstan:")) {
            return Err(ProviderError::invalid_field(
                &format!("provider_config.tags.{k}"),
                "the capstan: prefix is reserved",
            ));
        }
        if lc.region.trim().is_empty() {
            return Err(ProviderError::invalid_field(
                "region",
                "required for aws launch configs",
            ));
        }
        if lc.instance_type.trim().is_empty() {
            return Err(ProviderError::invalid_field(
                "instance_type",
                "must not be empty",
            ));
        }
        Ok(spec)
    }
}

/// (region, instance type, zone) a spot price lookup was made for.
type SpotPriceKey = (String, String, Option<String>);

#[derive(Debug, Clone)]
struct CachedPrices {
    fetched: tokio::time::Instant,
    /// (zone, price per hour), one per zone, latest sample.
    by_zone: Vec<(String, f64)>,
}

/// The EC2 provider. See the module docs.
#[derive(Debug)]
pub struct AwsProvider {
    template: aws_sdk_ec2::config::Builder,
    clients: Mutex<HashMap<String, Client>>,
    regions: Mutex<BTreeSet<String>>,
    ledger: Arc<dyn LaunchLedger>,
    spot_prices: Mutex<HashMap<SpotPriceKey, CachedPrices>>,
}

/// The class of an EC2 error code (`http_status` decides for codes not listed).
///
/// `Unsupported` is what `RunInstances` answers when the instance type is not offered
/// in the requested zone ("Your requested instance type (t2.micro) is not supported in
/// your requested Availability Zone (sa-east-1b)"; EC2's error-code list gives a zone
/// with constraints on the instance type as its example). The offering cannot be had
/// there, so it classifies like capacity: the reconciler marks the offering
/// unavailable and falls back to the next one instead of reporting the launch config
/// broken and stopping the pool, and the next create of the same launch is not
/// attempted. The code stays `Unsupported` in the detail. `UnsupportedOperation` (an
/// instance type the AMI does not support, an operation the instance cannot do) and
/// `InvalidParameterCombination` are mistakes in the launch config and stay
/// [`ErrorKind::InvalidConfig`].
pub fn classify_code(code: &str, http_status: Option<u16>) -> ErrorKind {
    match code {
        "InsufficientInstanceCapacity"
        | "InsufficientHostCapacity"
        | "InsufficientReservedInstanceCapacity"
        | "InsufficientCapacity"
        | "InsufficientFreeAddressesInSubnet"
        | "SpotMaxPriceTooLow"
        | "Unavailable"
        | "Unsupported" => ErrorKind::InsufficientCapacity,
        "MaxSpotInstanceCountExceeded"
        | "InstanceLimitExceeded"
        | "VcpuLimitExceeded"
        | "MaxSpotFleetRequestCountExceeded"
        | "ResourceLimitExceeded"
        | "VolumeLimitExceeded"
        | "AddressLimitExceeded" => ErrorKind::QuotaExceeded,
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequests" => {
            ErrorKind::Throttled
        }
        "AuthFailure"
        | "UnauthorizedOperation"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "OptInRequired"
        | "Blocked"
        | "PendingVerification"
        | "ExpiredToken"
        | "RequestExpired"
        | "MissingAuthenticationToken"
        | "AccessDenied" => ErrorKind::Unauthorized,
        "InvalidInstanceID.NotFound" => ErrorKind::NotFound,
        "UnsupportedOperation"
        | "InvalidParameterValue"
        | "InvalidParameterCombination"
        | "InvalidParameter"
        | "MissingParameter"
        | "InvalidInstanceType"
        | "InvalidUserData.Malformed"
        | "InvalidInstanceID.Malformed" => ErrorKind::InvalidConfig,
        c if c.starts_with("InvalidAMIID.")
            || c.starts_with("InvalidSubnetID.")
            || c.starts_with("InvalidGroup.")
            || c.starts_with("InvalidKeyPair.")
            || c.starts_with("InvalidSecurityGroupID.") =>
        {
            ErrorKind::InvalidConfig
        }
        _ => match http_status {
            Some(401 | 403) => ErrorKind::Unauthorized,
            Some(429) => ErrorKind::Throttled,
            _ => ErrorKind::Transient,
        },
    }
}

/// Classifies an SDK error, keeping EC2's code and message.
fn classify<E>(err: SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (err.code(), &err) {
        (Some(code), _) => {
            let message = err.message().unwrap_or_default().to_owned();
            ProviderError::new(classify_code(code, status), code, message)
        }
        (None, SdkError::ServiceError(_) | SdkError::ResponseError(_)) => {
            let code = status.map_or_else(|| "UnknownError".to_owned(), |s| format!("HTTP {s}"));
            ProviderError::new(
                classify_code("", status),
                code,
                DisplayErrorContext(&err).to_string(),
            )
        }
        (None, SdkError::TimeoutError(_)) => ProviderError::new(
            ErrorKind::Transient,
            "Timeout",
            DisplayErrorContext(&err).to_string(),
        ),
        (None, SdkError::DispatchFailure(d)) => {
            // Identity resolution fails before anything is sent: that is a credentials
            // problem (no chain found any, or they were rejected by STS), not the
            // network's.
            let text = DisplayErrorContext(&err).to_string();
            let network = d
                .as_connector_error()
                .is_some_and(|c| c.is_io() || c.is_timeout());
            if !network && (text.contains("identity") || text.contains("credentials")) {
                ProviderError::new(ErrorKind::Unauthorized, "NoCredentials", text)
            } else {
                ProviderError::new(ErrorKind::Transient, "DispatchFailure", text)
            }
        }
        (None, _) => ProviderError::new(
            ErrorKind::InvalidConfig,
            "ConstructionFailure",
            DisplayErrorContext(&err).to_string(),
        ),
    }
}

fn tag_map(tags: &[Tag]) -> BTreeMap<&str, &str> {
    tags.iter()
        .filter_map(|t| Some((t.key()?, t.value()?)))
        .collect()
}

/// Converts an EC2 instance; `region` prefixes the id.
fn to_instance(region: &str, i: &aws_sdk_ec2::types::Instance) -> Instance {
    let tags = tag_map(i.tags());
    let reason = i.state_reason().map(|r| {
        let code = r.code().unwrap_or_default();
        let msg = r.message().unwrap_or_default();
        if msg.is_empty() || msg == code {
            code.to_owned()
        } else {
            format!("{code}: {msg}")
        }
    });
    let by_cloud = i
        .state_reason()
        .and_then(|r| r.code())
        .is_some_and(|c| c.starts_with("Server."));
    let state = match i.state().and_then(|s| s.name()) {
        Some(InstanceStateName::Pending) => InstanceState::Pending,
        Some(InstanceStateName::Running) => InstanceState::Running,
        Some(
            InstanceStateName::ShuttingDown
            | InstanceStateName::Terminated
            | InstanceStateName::Stopping
            | InstanceStateName::Stopped,
        ) if by_cloud => InstanceState::Interrupted,
        Some(InstanceStateName::ShuttingDown) => InstanceState::ShuttingDown,
        Some(InstanceStateName::Terminated) => InstanceState::Terminated,
        Some(InstanceStateName::Stopping | InstanceStateName::Stopped) => InstanceState::Stopped,
        // An unknown future state: treat as still booting, the next tick will see more.
        _ => InstanceState::Pending,
    };
    let market = match i.instance_lifecycle() {
        Some(aws_sdk_ec2::types::InstanceLifecycleType::Spot) => Market::Spot,
        _ => Market::OnDemand,
    };
    Instance {
        id: format!("{region}/{}", i.instance_id().unwrap_or_default()),
        pool_id: tags.get(TAG_POOL).and_then(|p| PoolId::new(*p).ok()),
        worker_id: tags.get(TAG_WORKER).map(|w| WorkerId::from_string(*w)),
        launch_config_id: tags.get(TAG_LAUNCH_CONFIG).map(|s| (*s).to_owned()),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .map(str::to_owned),
        market,
        state,
        state_reason: reason,
        launched_at: i
            .launch_time()
            .and_then(|t| t.to_millis().ok())
            .map(Timestamp::from_unix_ms),
    }
}

fn split_id(id: &str) -> Option<(&str, &str)> {
    let (region, iid) = id.split_once('/')?;
    (!region.is_empty() && iid.starts_with("i-")).then_some((region, iid))
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::NotFound,
        "InvalidInstanceID.NotFound",
        format!("the instance ID '{id}' does not exist"),
    )
}

impl AwsProvider {
    /// A provider using `aws-config`'s standard credential chain; `regions` are the
    /// regions the orphan sweep lists (regions of launch configs are added as they are
    /// seen).
    pub async fn from_environment(regions: Vec<String>, ledger: Arc<dyn LaunchLedger>) -> Self {
        Self::from_environment_at(regions, None, ledger).await
    }

    /// [`AwsProvider::from_environment`], talking to `endpoint_url` when given (an
    /// emulator, a VPC endpoint) with the same credential chain.
    pub async fn from_environment_at(
        regions: Vec<String>,
        endpoint_url: Option<&str>,
        ledger: Arc<dyn LaunchLedger>,
    ) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::v2026_01_12());
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            )
            .load()
            .await;
        Self::with_config(aws_sdk_ec2::config::Builder::from(&shared), regions, ledger)
    }

    /// A provider talking to `endpoint_url` (an emulator such as moto) with static
    /// keys. Retries are disabled and the behavior version is pinned.
    pub fn for_endpoint(
        endpoint_url: &str,
        access_key_id: &str,
        secret_access_key: &str,
        regions: Vec<String>,
        ledger: Arc<dyn LaunchLedger>,
    ) -> Self {
        let template = aws_sdk_ec2::config::Builder::new()
            .behavior_version(BehaviorVersion::v2026_01_12())
            .endpoint_url(endpoint_url)
            .credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "capstan-static",
            ))
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        Self::with_config(template, regions, ledger)
    }

    /// A provider from an SDK config template; each region's client is the template
    /// with that region set.
    pub fn with_config(
        template: aws_sdk_ec2::config::Builder,
        regions: Vec<String>,
        ledger: Arc<dyn LaunchLedger>,
    ) -> Self {
        Self {
            template,
            clients: Mutex::new(HashMap::new()),
            regions: Mutex::new(regions.into_iter().collect()),
            ledger,
            spot_prices: Mutex::new(HashMap::new()),
        }
    }

    /// The EC2 client for `region` (created on first use).
    pub fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(region) {
            return c.clone();
        }
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(region.to_owned());
        let conf = self
            .template
            .clone()
            .region(Region::new(region.to_owned()))
            .build();
        let c = Client::from_conf(conf);
        clients.insert(region.to_owned(), c.clone());
        c
    }

    fn known_regions(&self) -> Vec<String> {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    async fn describe_filtered(
        &self,
        region: &str,
        filters: Vec<Filter>,
    ) -> Result<Vec<Instance>, ProviderError> {
        let client = self.client(region);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let resp = client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(classify)?;
            for r in resp.reservations() {
                out.extend(r.instances().iter().map(|i| to_instance(region, i)));
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn run_one(
        &self,
        client: &Client,
        request: &LaunchRequest,
        spec: &AwsLaunchSpec,
        i: &InstanceRequest,
    ) -> Result<Instance, ProviderError> {
        let lc = &request.launch_config;
        let mut tags: Vec<Tag> = spec
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        tags.push(
            Tag::builder()
                .key(TAG_POOL)
                .value(request.pool_id.as_str())
                .build(),
        );
        tags.push(
            Tag::builder()
                .key(TAG_WORKER)
                .value(i.worker_id.as_str())
                .build(),
        );
        tags.push(Tag::builder().key(TAG_LAUNCH_CONFIG).value(&lc.id).build());
        let tag_spec = |rt: ResourceType| {
            TagSpecification::builder()
                .resource_type(rt)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let user_data = base64::engine::general_purpose::STANDARD
            .encode(UserData::for_instance(request, i).to_json());
        let mut call = client
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(lc.instance_type.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(ec2_client_token(&i.idempotency_token))
            .user_data(user_data)
            .tag_specifications(tag_spec(ResourceType::Instance))
            .tag_specifications(tag_spec(ResourceType::Volume))
            .set_subnet_id(spec.subnet_id.clone())
            .set_key_name(spec.key_name.clone());
        if !spec.security_group_ids.is_empty() {
            call = call.set_security_group_ids(Some(spec.security_group_ids.clone()));
        }
        if let Some(p) = &spec.iam_instance_profile {
            let profile = if p.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(p).build()
            } else {
                IamInstanceProfileSpecification::builder().name(p).build()
            };
            call = call.iam_instance_profile(profile);
        }
        if let Some(zone) = request.zone() {
            call = call.placement(Placement::builder().availability_zone(zone).build());
        }
        if lc.market == Market::Spot {
            call = call.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .set_max_price(spec.spot_max_price.clone())
                            .build(),
                    )
                    .build(),
            );
        }
        let resp = call.send().await.map_err(classify)?;
        let inst = resp.instances().first().ok_or_else(|| {
            ProviderError::new(
                ErrorKind::Transient,
                "EmptyResponse",
                "RunInstances answered without an instance",
            )
        })?;
        Ok(to_instance(&lc.region, inst))
    }

    async fn spot_prices(
        &self,
        region: &str,
        instance_type: &str,
        zone: Option<&str>,
    ) -> Result<Vec<(String, f64)>, ProviderError> {
        let key: SpotPriceKey = (
            region.to_owned(),
            instance_type.to_owned(),
            zone.map(str::to_owned),
        );
        if let Some(c) = self
            .spot_prices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && c.fetched.elapsed() < SPOT_PRICE_TTL
        {
            return Ok(c.by_zone.clone());
        }
        let resp = self
            .client(region)
            .describe_spot_price_history()
            .instance_types(InstanceType::from(instance_type))
            .product_descriptions("Linux/UNIX")
            .set_availability_zone(zone.map(str::to_owned))
            .start_time(aws_sdk_ec2::primitives::DateTime::from(
                std::time::SystemTime::now(),
            ))
            .send()
            .await
            .map_err(classify)?;
        // Latest sample per zone.
        let mut latest: BTreeMap<String, (i64, f64)> = BTreeMap::new();
        for p in resp.spot_price_history() {
            let (Some(z), Some(price)) = (
                p.availability_zone(),
                p.spot_price().and_then(|s| s.parse::<f64>().ok()),
            ) else {
                continue;
            };
            let at = p.timestamp().map_or(0, |t| t.secs());
            let e = latest.entry(z.to_owned()).or_insert((at, price));
            if at > e.0 {
                *e = (at, price);
            }
        }
        let by_zone: Vec<(String, f64)> = latest.into_iter().map(|(z, (_, p))| (z, p)).collect();
        self.spot_prices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key,
                CachedPrices {
                    fetched: tokio::time::Instant::now(),
                    by_zone: by_zone.clone(),
                },
            );
        Ok(by_zone)
    }
}

/// [`AwsProvider`]'s part of one launch: `RunInstances` per instance, worker tags
/// looked up before the first create.
#[derive(Debug)]
struct AwsCreator<'a> {
    provider: &'a AwsProvider,
    client: Client,
    spec: AwsLaunchSpec,
}

#[async_trait]
impl Creator for AwsCreator<'_> {
    /// Instances of the pool tagged with the workers' ids, in one `DescribeInstances`
    /// per 200 workers (EC2's limit of values per filter).
    async fn find_by_worker(
        &self,
        request: &LaunchRequest,
        unrecorded: &[&InstanceRequest],
    ) -> Result<HashMap<WorkerId, Instance>, ProviderError> {
        let workers: Vec<String> = unrecorded
            .iter()
            .map(|i| i.worker_id.as_str().to_owned())
            .collect();
        let mut found: HashMap<WorkerId, Instance> = HashMap::new();
        for chunk in workers.chunks(200) {
            let filters = vec![
                Filter::builder()
                    .name(format!("tag:{TAG_POOL}"))
                    .values(request.pool_id.as_str())
                    .build(),
                Filter::builder()
                    .name(format!("tag:{TAG_WORKER}"))
                    .set_values(Some(chunk.to_vec()))
                    .build(),
            ];
            let region = &request.launch_config.region;
            for inst in self.provider.describe_filtered(region, filters).await? {
                let Some(w) = inst.worker_id.clone() else {
                    continue;
                };
                // Prefer a live instance if a worker somehow has several.
                match found.get(&w) {
                    Some(prev) if prev.state.is_alive() || !inst.state.is_alive() => {}
                    _ => {
                        found.insert(w, inst);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn create_one(
        &self,
        request: &LaunchRequest,
        instance: &InstanceRequest,
    ) -> Result<Instance, ProviderError> {
        self.provider
            .run_one(&self.client, request, &self.spec, instance)
            .await
    }
}

#[async_trait]
impl Provider for AwsProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aws
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError> {
        let lc = &request.launch_config;
        let spec = AwsLaunchSpec::from_launch_config(lc)?;
        let creator = AwsCreator {
            provider: self,
            client: self.client(&lc.region),
            spec,
        };
        launch_each(self, Some(self.ledger.as_ref()), request, &creator).await
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        let Some((region, iid)) = split_id(instance_id) else {
            // Not an id this provider ever returned: nothing of ours to delete.
            return Ok(());
        };
        match self
            .client(region)
            .terminate_instances()
            .instance_ids(iid)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                e if e.kind() == ErrorKind::NotFound => Ok(()),
                e if e.code() == "InvalidInstanceID.Malformed" => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn describe(&self, instance_id: &str) -> Result<Instance, ProviderError> {
        let (region, iid) = split_id(instance_id).ok_or_else(|| not_found(instance_id))?;
        let resp = match self
            .client(region)
            .describe_instances()
            .instance_ids(iid)
            .send()
            .await
        {
            Ok(r) => r,
            // A malformed id names no instance: not found, like an unknown one.
            Err(e) => match classify(e) {
                e if e.code() == "InvalidInstanceID.Malformed" => {
                    return Err(ProviderError::new(
                        ErrorKind::NotFound,
                        e.code(),
                        e.message(),
                    ));
                }
                e => return Err(e),
            },
        };
        resp.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(iid))
            .map(|i| to_instance(region, i))
            .ok_or_else(|| not_found(instance_id))
    }

    async fn list(&self, scope: &ListScope) -> Result<Vec<Instance>, ProviderError> {
        let filter = match scope {
            ListScope::Pool(p) => Filter::builder()
                .name(format!("tag:{TAG_POOL}"))
                .values(p.as_str())
                .build(),
            ListScope::All => Filter::builder().name("tag-key").values(TAG_POOL).build(),
        };
        let mut out = Vec::new();
        for region in self.known_regions() {
            out.extend(
                self.describe_filtered(&region, vec![filter.clone()])
                    .await?
                    .into_iter()
                    .filter(|i| scope.includes(i.pool_id.as_ref())),
            );
        }
        Ok(out)
    }

    async fn offerings(
        &self,
        _pool: &PoolId,
        config: &LaunchConfig,
    ) -> Result<Vec<Offering>, ProviderError> {
        let spec = AwsLaunchSpec::from_launch_config(config)?;
        let base = Offering::from_launch_config(ProviderKind::Aws, config);
        if config.market == Market::OnDemand {
            return Ok(vec![base]);
        }
        let prices = self
            .spot_prices(
                &config.region,
                &config.instance_type,
                config.zone.as_deref(),
            )
            .await?;
        if config.zone.is_some() || spec.subnet_id.is_some() {
            // One zone (pinned, or decided by the subnet): price conservatively at the
            // highest zone price when the zone is not known here.
            let mut o = base;
            o.price_per_hour = prices
                .iter()
                .map(|(_, p)| *p)
                .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))))
                .or(o.price_per_hour);
            return Ok(vec![o]);
        }
        if prices.is_empty() {
            return Ok(vec![base]);
        }
        Ok(prices
            .into_iter()
            .map(|(zone, price)| {
                let mut o = base.clone();
                o.zone = Some(zone);
                o.price_per_hour = Some(price);
                o
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_codes_classify_as_documented() {
        use ErrorKind::*;
        for (code, kind) in [
            ("InsufficientInstanceCapacity", InsufficientCapacity),
            ("MaxSpotInstanceCountExceeded", QuotaExceeded),
            ("InstanceLimitExceeded", QuotaExceeded),
            ("VcpuLimitExceeded", QuotaExceeded),
            ("RequestLimitExceeded", Throttled),
            ("Unsupported", InsufficientCapacity),
            ("UnsupportedOperation", InvalidConfig),
            ("InvalidParameterCombination", InvalidConfig),
            ("InvalidAMIID.NotFound", InvalidConfig),
            ("InvalidAMIID.Malformed", InvalidConfig),
            ("InvalidParameterValue", InvalidConfig),
            ("AuthFailure", Unauthorized),
            ("UnauthorizedOperation", Unauthorized),
            ("InvalidInstanceID.NotFound", NotFound),
            ("InternalError", Transient),
        ] {
            assert_eq!(classify_code(code, Some(400)), kind, "{code}");
        }
        assert_eq!(classify_code("", Some(503)), Transient);
        assert_eq!(classify_code("", Some(403)), Unauthorized);
    }

    #[test]
    fn an_offering_ec2_does_not_have_in_the_zone_falls_back_instead_of_stopping_the_pool() {
        let message = "Your requested instance type (c6i.large) is not supported in your \
                       requested Availability Zone (us-east-1e). Please retry your request \
                       by not specifying an Availability Zone or choosing us-east-1a.";
        let e = ProviderError::new(
            classify_code("Unsupported", Some(400)),
            "Unsupported",
            message,
        );
        assert_eq!(e.kind(), ErrorKind::InsufficientCapacity);
        assert!(e.marks_offering_unavailable(), "{e}");
        assert!(e.stops_launch(), "the next create would fail the same way");
        assert_eq!(
            e.code(),
            "Unsupported",
            "EC2's code is kept for the operator"
        );
        assert_eq!(e.message(), message);
        assert_eq!(e.kind_str(), "insufficient_capacity");
        for code in ["UnsupportedOperation", "InvalidParameterCombination"] {
            let e = ProviderError::new(classify_code(code, Some(400)), code, "");
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{code}");
            assert!(!e.marks_offering_unavailable(), "{code}");
        }
    }

    #[test]
    fn provider_config_errors_name_the_field() {
        let lc = |cfg: serde_json::Value| -> LaunchConfig {
            serde_json::from_value(serde_json::json!({
                "id": "lc", "region": "us-east-1", "instance_type": "c6i.large",
                "provider_config": cfg
            }))
            .unwrap()
        };
        let e = AwsLaunchSpec::from_launch_config(&lc(serde_json::json!({}))).unwrap_err();
        assert!(e.message().contains("image_id"), "{e}");
        let e = AwsLaunchSpec::from_launch_config(&lc(serde_json::json!({
            "image_id": "ami-1", "subnet": "s"
        })))
        .unwrap_err();
        assert!(e.message().contains("subnet"), "{e}");
        let e = AwsLaunchSpec::from_launch_config(&lc(serde_json::json!({
            "image_id": "ami-1", "tags": {"capstan:pool": "x"}
        })))
        .unwrap_err();
        assert!(
            e.message().starts_with("provider_config.tags.capstan:pool"),
            "{e}"
        );
        let ok = AwsLaunchSpec::from_launch_config(&lc(serde_json::json!({
            "image_id": "ami-1", "security_group_ids": ["sg-1"]
        })))
        .unwrap();
        assert_eq!(ok.security_group_ids, ["sg-1"]);
    }

    #[tokio::test]
    async fn missing_credentials_are_unauthorized_not_transient() {
        let conf = aws_sdk_ec2::config::Builder::new()
            .behavior_version(BehaviorVersion::v2026_01_12())
            .endpoint_url("http://127.0.0.1:9")
            .region(Region::new("us-east-1"))
            .retry_config(RetryConfig::disabled())
            .build();
        let client = Client::from_conf(conf);
        let e = classify(client.describe_instances().send().await.unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
        assert_eq!(e.code(), "NoCredentials");
    }

    #[tokio::test]
    async fn connection_failures_are_transient() {
        let p = AwsProvider::for_endpoint(
            "http://127.0.0.1:9",
            "k",
            "s",
            vec!["us-east-1".into()],
            Arc::new(crate::ledger::InMemoryLedger::new()),
        );
        let e = p.list(&ListScope::All).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e}");
    }

    #[test]
    fn instance_ids_carry_the_region() {
        assert_eq!(split_id("us-east-1/i-0abc"), Some(("us-east-1", "i-0abc")));
        assert_eq!(split_id("i-0abc"), None);
        assert_eq!(split_id("us-east-1/x"), None);
    }
}
