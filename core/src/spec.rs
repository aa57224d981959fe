//! The pool specification: what an operator declares about a pool.
//!
//! A [`PoolSpec`] is written by a person in YAML or JSON and read with
//! [`PoolSpec::from_yaml`] / [`PoolSpec::from_json`], which validate it (see
//! [`crate::validate`]). Every optional field has a default chosen for CI fleets and
//! documented on the field; the README's pool-spec reference repeats them.
//!
//! Capacity is counted in **task slots** throughout: a launch config whose instances
//! each run 4 tasks at a time has `capacity: 4`, and `min_capacity: 8` asks for at least
//! 8 slots, i.e. two such instances.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::PoolId;
use crate::queue_source::QueueSource;

/// A pool: a set of interchangeable workers fed by one task queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Operator-chosen id (`ci/linux-large`): 1..=64 of `a-z 0-9 - _ /`.
    pub id: PoolId,
    /// Free text for people. Default: empty.
    #[serde(default)]
    pub description: String,
    /// Which provider plugin runs this pool's machines.
    pub provider: ProviderKind,
    /// Slots kept running even with no demand. Default: 0.
    #[serde(default)]
    pub min_capacity: u32,
    /// Slots never exceeded, whatever the demand. Required: a pool without a ceiling is
    /// a blank cheque.
    pub max_capacity: u32,
    /// The ways this pool can get a machine, tried by priority then price per slot.
    /// At least one for cloud providers (`aws`, `gcp`, `fake`).
    #[serde(default)]
    pub launch_configs: Vec<LaunchConfig>,
    /// How demand turns into capacity.
    #[serde(default)]
    pub scaling: Scaling,
    /// Time limits on a worker's life.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// Calendar windows that raise the capacity floor (e.g. office hours).
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// Spending ceiling. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The task queue capstan polls for this pool's demand (Taskcluster, Buildkite,
    /// Prometheus, GitHub Actions). Default: none (samples are pushed to the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSource>,
}

/// The provider plugins capstan ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// AWS EC2, spot and on-demand.
    Aws,
    /// Google Compute Engine, spot and standard.
    Gcp,
    /// Hardware that registers itself; "launch" marks a machine wanted.
    Static,
    /// In-memory, deterministic; for tests and simulations.
    Fake,
}

impl ProviderKind {
    /// Every kind, in the order they are documented.
    pub const ALL: [ProviderKind; 4] = [Self::Aws, Self::Gcp, Self::Static, Self::Fake];

    /// The name used in specs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Static => "static",
            Self::Fake => "fake",
        }
    }

    /// Whether machines are created on demand (so a launch config is required).
    pub fn launches_machines(self) -> bool {
        !matches!(self, Self::Static)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Spot (interruptible, cheaper) or on-demand capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Market {
    /// Interruptible capacity: EC2 spot, GCE SPOT provisioning model.
    Spot,
    /// Regular capacity: EC2 on-demand, GCE STANDARD.
    OnDemand,
}

impl Market {
    /// The name used in specs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spot => "spot",
            Self::OnDemand => "on_demand",
        }
    }
}

/// One way of getting a machine for a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// Unique within the pool; same character rules as pool ids.
    pub id: String,
    /// Cloud region (`us-east-1`, `europe-west4`). Required for `aws` and `gcp`.
    #[serde(default)]
    pub region: String,
    /// Availability zone. Required for `gcp` (instances are zonal); optional for `aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Machine type (`c6i.2xlarge`, `n2-standard-8`).
    pub instance_type: String,
    /// Spot or on-demand. Default: `on_demand`.
    #[serde(default = "default_market")]
    pub market: Market,
    /// Task slots per instance. Default: 1.
    #[serde(default = "default_slots")]
    pub capacity: u32,
    /// Lower is tried first. Default: 0.
    #[serde(default)]
    pub priority: i32,
    /// Slots this config may hold at most (its own cap inside the pool's). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_capacity: Option<u32>,
    /// Price of one instance per hour, in the operator's currency. For spot the
    /// provider's current price is used when known. Default: none (unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_hour: Option<f64>,
    /// Provider-specific fields (image, subnet, security groups, labels, ...), passed
    /// to the provider plugin, which validates them. Default: empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub provider_config: serde_json::Map<String, serde_json::Value>,
}

fn default_market() -> Market {
    Market::OnDemand
}

fn default_slots() -> u32 {
    1
}

/// The predictor a pool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ScalingPolicy {
    /// Pending plus running tasks times a ratio: reacts once tasks wait.
    Reactive,
    /// Forecasts arrivals (daily and weekly seasonality) and launches ahead of demand.
    Forecast,
}

impl ScalingPolicy {
    /// The name used in specs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reactive => "reactive",
            Self::Forecast => "forecast",
        }
    }
}

/// How demand turns into capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Scaling {
    /// Predictor. Default: `reactive`.
    pub policy: ScalingPolicy,
    /// Acceptable time a task waits for a slot, in seconds. Default: 60.
    pub target_wait_s: u64,
    /// Share of tasks that should start within `target_wait_s`, in [0, 1): the
    /// forecast policy sizes its spare slots at this quantile (0: no spare, sized as
    /// `reactive`). Default: 0.95.
    pub service_level: f64,
    /// Multiplier on the backlog the reactive estimator answers (1 = one slot per
    /// waiting task). Default: 1.0.
    pub scaling_ratio: f64,
    /// A worker idle this long is terminated (above the pool's floor), in seconds.
    /// Default: not set, and capstan chooses it: from the pool's boot time, the idle
    /// gaps it observes between tasks, its tasks' run times (a replacement launched for
    /// a task that a freed slot takes first is wasted) and, for `forecast`, the service
    /// level (a worker retired and wanted again costs a boot and a wait); before there
    /// is data, one boot time (`forecast`: 1 + service_level boot times). Set it to a
    /// whole number of seconds to fix it (0 terminates a worker as soon as it is idle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_s: Option<u64>,
    /// Idle slots the idle timeout leaves standing above the pool's need (the forecast's
    /// target, below which idle timeouts never cut: for `reactive` the running tasks
    /// and the backlog), in slots. They are not launched for: they are the workers
    /// that would otherwise be retired, kept warm for the next tasks. For tasks shorter
    /// than a boot a launch is mostly boot, and a couple of slots held with a short
    /// idle timeout cost less than a long timeout for the same waits
    /// (docs/policy.md). At most `max_capacity`. Default: 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub warm_slots: u32,
    /// Launch rate limit for the pool, instances per minute. Default: 20.
    pub max_launches_per_minute: u32,
    /// Plan and record, but never launch or terminate anything: for trying a policy
    /// on a live pool's demand. Default: false.
    pub dry_run: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            policy: ScalingPolicy::Reactive,
            target_wait_s: 60,
            service_level: 0.95,
            scaling_ratio: 1.0,
            idle_timeout_s: None,
            warm_slots: 0,
            max_launches_per_minute: 20,
            dry_run: false,
        }
    }
}

/// Time limits on a worker's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Lifecycle {
    /// A launched machine that has not registered within this many seconds is
    /// terminated as failed. Default: 900.
    pub registration_timeout_s: u64,
    /// A registered worker silent for this many seconds is considered lost.
    /// Default: 300.
    pub heartbeat_timeout_s: u64,
    /// Workers are recycled (drained, then terminated) after this many seconds.
    /// Default: none (no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_lifetime_s: Option<u64>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            registration_timeout_s: 900,
            heartbeat_timeout_s: 300,
            max_lifetime_s: None,
        }
    }
}

/// A calendar window during which the pool keeps at least `min_capacity` slots.
///
/// The window opens at each firing of `cron` (evaluated in `timezone`) and stays open
/// for `duration_s` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Five-field cron expression (minute hour day-of-month month day-of-week), or six
    /// with leading seconds.
    pub cron: String,
    /// IANA time zone the expression is read in. Default: `UTC`.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// How long each window stays open, in seconds.
    pub duration_s: u64,
    /// Floor on slots while the window is open.
    pub min_capacity: u32,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// Spending ceiling for a pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The pool's instances together never cost more than this per hour.
    pub max_cost_per_hour: f64,
}

impl PoolSpec {
    /// The launch config with this id.
    pub fn launch_config(&self, id: &str) -> Option<&LaunchConfig> {
        self.launch_configs.iter().find(|lc| lc.id == id)
    }
}
