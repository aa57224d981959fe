//! Google Compute Engine, SPOT and STANDARD, through `google-cloud-compute-v1`.
//!
//! - **Create**: one `instances.insert` per instance with `requestId` (a UUID derived
//!   from the idempotency token), provisioning model `SPOT` (with
//!   `instanceTerminationAction: DELETE`, so a preempted VM does not linger as a
//!   stopped disk bill) or `STANDARD`. The zone operation is waited on with a bound
//!   ([`GcpProvider::with_operation_timeout`]); a finished operation that carries an
//!   error comes back from the SDK as `Ok`, so `op.error` is checked and classified
//!   (`ZONE_RESOURCE_POOL_EXHAUSTED` → capacity, `QUOTA_EXCEEDED` → quota, …).
//! - **Names** are derived from the worker id (`capstan-<worker>`, or a digest when the
//!   id does not fit GCE's name rules), so a create after a crash finds the instance
//!   by name instead of making a second one. Before that, the launch sequence every
//!   provider shares ([`crate::launch`]) consults the [`LaunchLedger`].
//! - **Labels** `capstan-pool`, `capstan-worker`, `capstan-launch-config` carry
//!   capstan's ids for filtering. GCE label values allow only `[a-z0-9_-]` and 63
//!   characters, so values are escaped by [`label_value`] (`ci/linux` →
//!   `ci_2flinux`); the exact ids also go into metadata items of the same names, which
//!   is what [`Instance`] reads back. The JSON [`UserData`] (with the registration
//!   token) is the metadata item `capstan-user-data`.
//! - **List** uses `instances.aggregatedList` with a label filter, so the orphan sweep
//!   covers every zone of the project in one paged call.
//! - **Interruption**: a SPOT VM that is stopping or stopped was preempted (capstan
//!   only ever deletes) and is reported [`InstanceState::Interrupted`]; with the DELETE
//!   action it then disappears and describes as not found.
//!
//! Instance ids are `zone/name`. Credentials come from Application Default
//! Credentials in production ([`GcpProvider::new`]); [`GcpProvider::for_endpoint`]
//! uses anonymous credentials against an emulator. SDK retries are disabled: one
//! attempt per action, as everywhere in capstan.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use capstan_core::{LaunchConfig, Market, Offering, PoolId, ProviderKind, Timestamp, WorkerId};
use google_cloud_compute_v1::client::Instances;
use google_cloud_compute_v1::model::{
    self, AccessConfig, AttachedDisk, AttachedDiskInitializeParams, Metadata, NetworkInterface,
    Scheduling, ServiceAccount, Tags,
};
use google_cloud_gax::error::rpc::StatusDetails;
use google_cloud_lro::Poller as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Provider;
use crate::error::{ErrorKind, ProviderError};
use crate::instance::{Instance, InstanceState, ListScope};
use crate::launch::{
    Creator, InstanceRequest, LaunchOutcome, LaunchRequest, UserData, gce_request_id, launch_each,
};
use crate::ledger::LaunchLedger;

/// Label (and metadata key) naming the pool.
pub const LABEL_POOL: &str = "capstan-pool";
/// Label (and metadata key) naming the worker.
pub const LABEL_WORKER: &str = "capstan-worker";
/// Label (and metadata key) naming the launch config.
pub const LABEL_LAUNCH_CONFIG: &str = "capstan-launch-config";
/// Metadata key holding the JSON [`UserData`].
pub const METADATA_USER_DATA: &str = "capstan-user-data";

/// Default bound on waiting for a zone operation.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The fields of a GCP launch config's `provider_config`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcpLaunchSpec {
    /// Boot image (`projects/debian-cloud/global/images/family/debian-12`). Required.
    pub image: String,
    /// VPC network. Default: `global/networks/default`.
    #[serde(default)]
    pub network: Option<String>,
    /// Subnetwork (`regions/europe-west4/subnetworks/ci`). Default: the network's.
    #[serde(default)]
    pub subnetwork: Option<String>,
    /// Give the VM an external IP. Default: false (use Cloud NAT).
    #[serde(default)]
    pub external_ip: bool,
    /// Service account email the VM runs as. Default: none.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Boot disk size in GB. Default: the image's.
    #[serde(default)]
    pub disk_size_gb: Option<i64>,
    /// Boot disk type (`pd-balanced`). Default: GCE's.
    #[serde(default)]
    pub disk_type: Option<String>,
    /// Extra labels (keys and values must follow GCE label rules; `capstan-*` is
    /// reserved).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Extra metadata items (`startup-script`, …; `capstan-*` is reserved).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Network tags (firewall targets).
    #[serde(default)]
    pub network_tags: Vec<String>,
}

fn is_label_text(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl GcpLaunchSpec {
    /// Reads and checks `lc.provider_config`; errors name the field.
    pub fn from_launch_config(lc: &LaunchConfig) -> Result<Self, ProviderError> {
        let spec: Self =
            serde_json::from_value(serde_json::Value::Object(lc.provider_config.clone()))
                .map_err(|e| ProviderError::invalid_field("provider_config", e))?;
        if spec.image.trim().is_empty() {
            return Err(ProviderError::invalid_field(
                "provider_config.image",
                "must not be empty",
            ));
        }
        for (k, v) in &spec.labels {
            if k.starts_with("capstan-") {
                return Err(ProviderError::invalid_field(
                    &format!("provider_config.labels.{k}"),
                    "the capstan- prefix is reserved",
                ));
            }
            if k.is_empty()
                || !k.starts_with(|c: char| c.is_ascii_lowercase())
                || !is_label_text(k)
                || !is_label_text(v)
            {
                return Err(ProviderError::invalid_field(
                    &format!("provider_config.labels.{k}"),
                    "GCE labels are lowercase letters, digits, '-' and '_', at most 63 characters, keys starting with a letter",
                ));
            }
        }
        if let Some(k) = spec.metadata.keys().find(|k| k.starts_with("capstan-")) {
            return Err(ProviderError::invalid_field(
                &format!("provider_config.metadata.{k}"),
                "the capstan- prefix is reserved",
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

/// Escapes `s` into a GCE label value: `[a-z0-9-]` pass through, every other byte
/// becomes `_` and two hex digits (`/` → `_2f`, `_` → `_5f`), so distinct ids give
/// distinct values. A result longer than 63 characters is replaced by `h-` and a
/// SHA-256 prefix (still distinct in practice, no longer reversible; the exact id is
/// in the metadata).
pub fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' {
            out.push(b as char);
        } else {
            out.push('_');
            out.push_str(&hex::encode([b]));
        }
    }
    if out.len() > 63 {
        format!("h-{}", &hex::encode(Sha256::digest(s.as_bytes()))[..61])
    } else {
        out
    }
}

/// The GCE instance name for a worker: `capstan-<worker id>` when that follows GCE's
/// name rules (`[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63), else `capstan-` and a
/// SHA-256 prefix of the id. Deterministic, so a repeated create collides with the
/// first instead of duplicating it.
pub fn instance_name(worker: &WorkerId) -> String {
    let w = worker.as_str();
    let plain = format!("capstan-{w}");
    let ok = plain.len() <= 63
        && !w.is_empty()
        && w.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !w.ends_with('-');
    if ok {
        plain
    } else {
        format!(
            "capstan-{}",
            &hex::encode(Sha256::digest(w.as_bytes()))[..32]
        )
    }
}

/// The class of a GCE error: `reason` is an operation error code
/// (`ZONE_RESOURCE_POOL_EXHAUSTED`) or an HTTP error reason (`quotaExceeded`).
pub fn classify_reason(reason: &str, http_status: Option<u16>) -> ErrorKind {
    match reason {
        "ZONE_RESOURCE_POOL_EXHAUSTED"
        | "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"
        | "RESOURCE_POOL_EXHAUSTED"
        | "STOCKOUT"
        | "resourcePoolExhausted" => ErrorKind::InsufficientCapacity,
        "QUOTA_EXCEEDED" | "quotaExceeded" | "QUOTA_LIMIT_EXCEEDED" => ErrorKind::QuotaExceeded,
        "rateLimitExceeded"
        | "userRateLimitExceeded"
        | "RATE_LIMIT_EXCEEDED"
        | "RESOURCE_OPERATION_RATE_EXCEEDED"
        | "operationRateExceeded" => ErrorKind::Throttled,
        "notFound" | "RESOURCE_NOT_FOUND" => ErrorKind::NotFound,
        "forbidden"
        | "insufficientPermissions"
        | "accessNotConfigured"
        | "authError"
        | "PERMISSION_DENIED"
        | "UNAUTHENTICATED" => ErrorKind::Unauthorized,
        "invalid"
        | "badRequest"
        | "invalidParameter"
        | "required"
        | "INVALID_FIELD_VALUE"
        | "UNSUPPORTED_OPERATION"
        | "INVALID_USAGE"
        | "RESOURCE_ALREADY_EXISTS"
        | "alreadyExists" => ErrorKind::InvalidConfig,
        _ => match http_status {
            Some(400) => ErrorKind::InvalidConfig,
            Some(401 | 403) => ErrorKind::Unauthorized,
            Some(404) => ErrorKind::NotFound,
            Some(429) => ErrorKind::Throttled,
            _ => ErrorKind::Transient,
        },
    }
}

/// Classifies an SDK error, keeping GCE's reason and message.
fn classify(err: google_cloud_compute_v1::Error) -> ProviderError {
    let http = err.http_status_code();
    if let Some(status) = err.status() {
        let reason = status
            .details
            .iter()
            .find_map(|d| match d {
                StatusDetails::ErrorInfo(i) if !i.reason.is_empty() => Some(i.reason.clone()),
                _ => None,
            })
            .unwrap_or_else(|| status.code.name().to_owned());
        // The status code names resource exhaustion when the reason list does not.
        let kind = match classify_reason(&reason, http) {
            ErrorKind::Transient if http == Some(429) => ErrorKind::Throttled,
            k => k,
        };
        return ProviderError::new(kind, reason, status.message.clone());
    }
    if err.is_timeout() {
        return ProviderError::new(ErrorKind::Transient, "Timeout", err.to_string());
    }
    if err.is_authentication() {
        return ProviderError::new(ErrorKind::Unauthorized, "Authentication", err.to_string());
    }
    let code = http.map_or_else(|| "Transport".to_owned(), |s| format!("HTTP {s}"));
    ProviderError::new(classify_reason("", http), code, err.to_string())
}

/// The error a finished operation carries, if any.
fn operation_error(op: &model::Operation) -> Option<ProviderError> {
    if let Some(e) = op.error.as_ref().and_then(|e| e.errors.first()) {
        let code = e.code.clone().unwrap_or_default();
        let message = e.message.clone().unwrap_or_default();
        let http = op
            .http_error_status_code
            .and_then(|c| u16::try_from(c).ok());
        return Some(ProviderError::new(
            classify_reason(&code, http),
            code,
            message,
        ));
    }
    let status = op.http_error_status_code.filter(|c| *c >= 400)?;
    let http = u16::try_from(status).ok();
    Some(ProviderError::new(
        classify_reason("", http),
        format!("HTTP {status}"),
        op.http_error_message.clone().unwrap_or_default(),
    ))
}

/// The last segment of a GCE URL or path (`…/zones/us-central1-a` → `us-central1-a`).
fn last_segment(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

fn split_id(id: &str) -> Option<(&str, &str)> {
    let (zone, name) = id.split_once('/')?;
    (!zone.is_empty() && !name.is_empty() && !name.contains('/')).then_some((zone, name))
}

fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

fn to_instance(i: &model::Instance) -> Instance {
    let meta: HashMap<&str, &str> = i
        .metadata
        .iter()
        .flat_map(|m| m.items.iter())
        .filter_map(|it| Some((it.key.as_deref()?, it.value.as_deref()?)))
        .collect();
    let tagged = |key: &str| -> Option<String> {
        meta.get(key).map(|s| (*s).to_owned()).or_else(|| {
            // Fall back to the label when metadata was stripped (unescaped ids only).
            i.labels
                .get(key)
                .filter(|v| !v.contains('_') && !v.starts_with("h-"))
                .cloned()
        })
    };
    let spot = i.scheduling.as_ref().is_some_and(|s| {
        s.provisioning_model == Some(model::scheduling::ProvisioningModel::Spot)
            || s.preemptible == Some(true)
    });
    use model::instance::Status as S;
    let state = match &i.status {
        Some(S::Provisioning | S::Staging | S::Pending | S::Repairing) => InstanceState::Pending,
        Some(S::Running) => InstanceState::Running,
        Some(
            S::Stopping
            | S::PendingStop
            | S::Stopped
            | S::Terminated
            | S::Suspending
            | S::Suspended,
        ) if spot => InstanceState::Interrupted,
        Some(
            S::Stopping
            | S::PendingStop
            | S::Stopped
            | S::Terminated
            | S::Suspending
            | S::Suspended,
        ) => InstanceState::Stopped,
        Some(S::Deprovisioning) => InstanceState::ShuttingDown,
        _ => InstanceState::Pending,
    };
    let zone = i
        .zone
        .as_deref()
        .map(last_segment)
        .unwrap_or_default()
        .to_owned();
    let name = i.name.clone().unwrap_or_default();
    Instance {
        id: format!("{zone}/{name}"),
        pool_id: tagged(LABEL_POOL).and_then(|p| PoolId::new(p).ok()),
        worker_id: tagged(LABEL_WORKER).map(WorkerId::from_string),
        launch_config_id: tagged(LABEL_LAUNCH_CONFIG),
        instance_type: i
            .machine_type
            .as_deref()
            .map(last_segment)
            .unwrap_or_default()
            .to_owned(),
        zone: (!zone.is_empty()).then_some(zone),
        market: if spot { Market::Spot } else { Market::OnDemand },
        state,
        state_reason: i
            .status_message
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| (state == InstanceState::Interrupted).then(|| "preempted".to_owned())),
        launched_at: i.creation_timestamp.as_deref().and_then(parse_rfc3339),
    }
}

fn not_found(id: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::NotFound,
        "notFound",
        format!("the resource '{id}' was not found"),
    )
}

/// The Compute Engine provider. See the module docs.
#[derive(Debug, Clone)]
pub struct GcpProvider {
    client: Instances,
    project: String,
    ledger: Arc<dyn LaunchLedger>,
    operation_timeout: Duration,
}

/// The SDK client could not be built (bad endpoint, no credentials found).
#[derive(Debug, thiserror::Error)]
#[error("building the Compute Engine client: {0}")]
pub struct ClientBuildError(String);

impl GcpProvider {
    /// A provider for `project` using Application Default Credentials.
    pub async fn new(
        project: &str,
        ledger: Arc<dyn LaunchLedger>,
    ) -> Result<Self, ClientBuildError> {
        let client = Instances::builder()
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
            .with_polling_backoff_policy(polling_backoff())
            .build()
            .await
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self::with_client(client, project, ledger))
    }

    /// A provider talking to `endpoint` (an emulator on 127.0.0.1) with anonymous
    /// credentials.
    pub async fn for_endpoint(
        endpoint: &str,
        project: &str,
        ledger: Arc<dyn LaunchLedger>,
    ) -> Result<Self, ClientBuildError> {
        let client = Instances::builder()
            .with_endpoint(endpoint)
            .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
            .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
            .with_polling_backoff_policy(polling_backoff())
            .build()
            .await
            .map_err(|e| ClientBuildError(e.to_string()))?;
        Ok(Self::with_client(client, project, ledger))
    }

    /// A provider from an SDK client built elsewhere.
    pub fn with_client(client: Instances, project: &str, ledger: Arc<dyn LaunchLedger>) -> Self {
        Self {
            client,
            project: project.to_owned(),
            ledger,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
        }
    }

    /// Bounds the wait on each insert's zone operation.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    async fn get(&self, zone: &str, name: &str) -> Result<Instance, ProviderError> {
        self.client
            .get()
            .set_project(&self.project)
            .set_zone(zone)
            .set_instance(name)
            .send()
            .await
            .map(|i| to_instance(&i))
            .map_err(classify)
    }

    fn body(
        &self,
        request: &LaunchRequest,
        spec: &GcpLaunchSpec,
        zone: &str,
        i: &InstanceRequest,
    ) -> model::Instance {
        let lc = &request.launch_config;
        let mut labels: BTreeMap<String, String> = spec.labels.clone();
        labels.insert(LABEL_POOL.into(), label_value(request.pool_id.as_str()));
        labels.insert(LABEL_WORKER.into(), label_value(i.worker_id.as_str()));
        labels.insert(LABEL_LAUNCH_CONFIG.into(), label_value(&lc.id));
        let mut items: Vec<model::metadata::Items> = spec
            .metadata
            .iter()
            .map(|(k, v)| model::metadata::Items::new().set_key(k).set_value(v))
            .collect();
        for (k, v) in [
            (LABEL_POOL, request.pool_id.as_str().to_owned()),
            (LABEL_WORKER, i.worker_id.as_str().to_owned()),
            (LABEL_LAUNCH_CONFIG, lc.id.clone()),
            (
                METADATA_USER_DATA,
                UserData::for_instance(request, i).to_json(),
            ),
        ] {
            items.push(model::metadata::Items::new().set_key(k).set_value(v));
        }
        let scheduling = match lc.market {
            Market::Spot => Scheduling::new()
                .set_provisioning_model(model::scheduling::ProvisioningModel::Spot)
                .set_instance_termination_action(
                    model::scheduling::InstanceTerminationAction::Delete,
                )
                .set_automatic_restart(false)
                .set_on_host_maintenance(model::scheduling::OnHostMaintenance::Terminate),
            Market::OnDemand => Scheduling::new()
                .set_provisioning_model(model::scheduling::ProvisioningModel::Standard),
        };
        let mut init = AttachedDiskInitializeParams::new().set_source_image(&spec.image);
        if let Some(gb) = spec.disk_size_gb {
            init = init.set_disk_size_gb(gb);
        }
        if let Some(t) = &spec.disk_type {
            init = init.set_disk_type(format!("zones/{zone}/diskTypes/{t}"));
        }
        let mut nic = NetworkInterface::new().set_network(
            spec.network
                .clone()
                .unwrap_or_else(|| "global/networks/default".into()),
        );
        if let Some(s) = &spec.subnetwork {
            nic = nic.set_subnetwork(s);
        }
        if spec.external_ip {
            nic = nic.set_access_configs([AccessConfig::new()
                .set_name("External NAT")
                .set_type(model::access_config::Type::OneToOneNat)]);
        }
        let mut body = model::Instance::new()
            .set_name(instance_name(&i.worker_id))
            .set_machine_type(format!("zones/{zone}/machineTypes/{}", lc.instance_type))
            .set_labels(labels)
            .set_metadata(Metadata::new().set_items(items))
            .set_scheduling(scheduling)
            .set_disks([AttachedDisk::new()
                .set_boot(true)
                .set_auto_delete(true)
                .set_initialize_params(init)])
            .set_network_interfaces([nic]);
        if let Some(sa) = &spec.service_account {
            body = body.set_service_accounts([ServiceAccount::new()
                .set_email(sa)
                .set_scopes(["https://www.googleapis.com/auth/cloud-platform"])]);
        }
        if !spec.network_tags.is_empty() {
            body = body.set_tags(Tags::new().set_items(spec.network_tags.clone()));
        }
        body
    }

    /// Creates one instance and waits (bounded) for its operation.
    async fn insert_one(
        &self,
        request: &LaunchRequest,
        spec: &GcpLaunchSpec,
        zone: &str,
        i: &InstanceRequest,
    ) -> Result<Instance, ProviderError> {
        let name = instance_name(&i.worker_id);
        // Created before a crash lost the record? The name is deterministic.
        match self.get(zone, &name).await {
            Ok(inst) if inst.worker_id.as_ref() == Some(&i.worker_id) => return Ok(inst),
            Ok(_) => {
                return Err(ProviderError::new(
                    ErrorKind::InvalidConfig,
                    "alreadyExists",
                    format!("instance {zone}/{name} exists but belongs to another worker"),
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let poll = self
            .client
            .insert()
            .set_project(&self.project)
            .set_zone(zone)
            .set_request_id(gce_request_id(&i.idempotency_token))
            .set_body(self.body(request, spec, zone, i))
            .poller()
            .until_done();
        match tokio::time::timeout(self.operation_timeout, poll).await {
            Ok(Ok(op)) => {
                if let Some(e) = operation_error(&op) {
                    return Err(e);
                }
                self.get(zone, &name).await
            }
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => {
                // Still running: the instance may well appear. Report it if it exists
                // already; a later launch with the same token finds it by name.
                match self.get(zone, &name).await {
                    Ok(inst) => Ok(inst),
                    Err(_) => Err(ProviderError::new(
                        ErrorKind::Transient,
                        "OperationTimeout",
                        format!(
                            "insert of {zone}/{name} not done after {:?}",
                            self.operation_timeout
                        ),
                    )),
                }
            }
        }
    }
}

fn polling_backoff() -> google_cloud_gax::exponential_backoff::ExponentialBackoff {
    google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
        .with_initial_delay(Duration::from_millis(250))
        .with_maximum_delay(Duration::from_secs(5))
        .with_scaling(2.0)
        .clamp()
}

/// [`GcpProvider`]'s part of one launch: `instances.insert` per instance. Each create
/// first looks the instance up by the name derived from its worker id, so
/// `find_by_worker` keeps its default (nothing found up front).
#[derive(Debug)]
struct GcpCreator<'a> {
    provider: &'a GcpProvider,
    spec: GcpLaunchSpec,
    zone: String,
}

#[async_trait]
impl Creator for GcpCreator<'_> {
    async fn create_one(
        &self,
        request: &LaunchRequest,
        instance: &InstanceRequest,
    ) -> Result<Instance, ProviderError> {
        self.provider
            .insert_one(request, &self.spec, &self.zone, instance)
            .await
    }
}

#[async_trait]
impl Provider for GcpProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gcp
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError> {
        let spec = GcpLaunchSpec::from_launch_config(&request.launch_config)?;
        let zone = request
            .zone()
            .filter(|z| !z.is_empty())
            .ok_or_else(|| ProviderError::invalid_field("zone", "required for gcp launch configs"))?
            .to_owned();
        let creator = GcpCreator {
            provider: self,
            spec,
            zone,
        };
        launch_each(self, Some(self.ledger.as_ref()), request, &creator).await
    }

    async fn terminate(&self, instance_id: &str) -> Result<(), ProviderError> {
        let Some((zone, name)) = split_id(instance_id) else {
            return Ok(());
        };
        match self
            .client
            .delete()
            .set_project(&self.project)
            .set_zone(zone)
            .set_instance(name)
            .send()
            .await
        {
            Ok(op) => match operation_error(&op) {
                Some(e) if e.kind() != ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
            Err(e) => match classify(e) {
                e if e.kind() == ErrorKind::NotFound => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn describe(&self, instance_id: &str) -> Result<Instance, ProviderError> {
        let (zone, name) = split_id(instance_id).ok_or_else(|| not_found(instance_id))?;
        self.get(zone, name).await
    }

    async fn list(&self, scope: &ListScope) -> Result<Vec<Instance>, ProviderError> {
        let filter = match scope {
            ListScope::Pool(p) => format!("labels.{LABEL_POOL} = \"{}\"", label_value(p.as_str())),
            ListScope::All => format!("labels.{LABEL_POOL}:*"),
        };
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let resp = self
                .client
                .aggregated_list()
                .set_project(&self.project)
                .set_filter(&filter)
                .set_or_clear_page_token(page.take())
                .send()
                .await
                .map_err(classify)?;
            let mut scopes: Vec<_> = resp.items.iter().collect();
            scopes.sort_by(|a, b| a.0.cmp(b.0));
            for (_, scoped) in scopes {
                out.extend(
                    scoped
                        .instances
                        .iter()
                        .map(to_instance)
                        .filter(|i| scope.includes(i.pool_id.as_ref())),
                );
            }
            match resp.next_page_token {
                Some(t) if !t.is_empty() => page = Some(t),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn offerings(
        &self,
        _pool: &PoolId,
        config: &LaunchConfig,
    ) -> Result<Vec<Offering>, ProviderError> {
        GcpLaunchSpec::from_launch_config(config)?;
        if config.zone.as_deref().is_none_or(str::is_empty) {
            return Err(ProviderError::invalid_field(
                "zone",
                "required for gcp launch configs",
            ));
        }
        // GCE publishes no price API without billing-catalog access; the launch
        // config's price is what the planner compares.
        Ok(vec![Offering::from_launch_config(
            ProviderKind::Gcp,
            config,
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_follow_gce_rules_and_stay_distinct() {
        assert_eq!(label_value("ci/linux-large"), "ci_2flinux-large");
        assert_eq!(label_value("ci_x"), "ci_5fx");
        assert_ne!(label_value("a/b"), label_value("a_b"));
        let long = label_value(&"a/".repeat(32));
        assert!(long.len() <= 63 && long.starts_with("h-"), "{long}");
        for v in [label_value("ci/linux-large"), long] {
            assert!(is_label_text(&v), "{v}");
        }
    }

    #[test]
    fn instance_names_follow_gce_rules() {
        assert_eq!(
            instance_name(&WorkerId::from_string("w-123")),
            "capstan-w-123"
        );
        let n = instance_name(&WorkerId::from_string("W_1/x"));
        assert!(n.starts_with("capstan-") && n.len() <= 63, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert_eq!(n, instance_name(&WorkerId::from_string("W_1/x")));
    }

    #[test]
    fn gce_reasons_classify_as_documented() {
        use ErrorKind::*;
        for (r, k) in [
            ("ZONE_RESOURCE_POOL_EXHAUSTED", InsufficientCapacity),
            (
                "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
                InsufficientCapacity,
            ),
            ("QUOTA_EXCEEDED", QuotaExceeded),
            ("quotaExceeded", QuotaExceeded),
            ("rateLimitExceeded", Throttled),
            ("notFound", NotFound),
            ("forbidden", Unauthorized),
            ("invalid", InvalidConfig),
        ] {
            assert_eq!(classify_reason(r, None), k, "{r}");
        }
        assert_eq!(classify_reason("whatever", Some(503)), Transient);
        assert_eq!(classify_reason("whatever", Some(429)), Throttled);
    }

    #[test]
    fn gce_timestamps_parse_with_any_offset() {
        assert_eq!(
            parse_rfc3339("2026-11-28T05:53:00.000-00:00"),
            Some(Timestamp::from_unix_secs(1_795_845_180))
        );
        assert_eq!(
            parse_rfc3339("2026-11-27T21:53:00.000-08:00"),
            Some(Timestamp::from_unix_secs(1_795_845_180))
        );
    }

    #[test]
    fn a_finished_operation_with_an_error_is_an_error() {
        let op = model::Operation::new()
            .set_status(model::operation::Status::Done)
            .set_error(
                model::operation::Error::new().set_errors([model::operation::error::Errors::new()
                    .set_code("ZONE_RESOURCE_POOL_EXHAUSTED")
                    .set_message("The zone does not have enough resources")]),
            );
        let e = operation_error(&op).unwrap();
        assert_eq!(e.kind(), ErrorKind::InsufficientCapacity);
        assert_eq!(e.code(), "ZONE_RESOURCE_POOL_EXHAUSTED");
        assert!(
            operation_error(&model::Operation::new().set_status(model::operation::Status::Done))
                .is_none()
        );
    }
}
