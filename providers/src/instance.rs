//! What a provider reports about a machine: [`Instance`] and its [`InstanceState`],
//! plus the names of the tags capstan puts on every machine it creates.
//!
//! An instance is identified by the provider's own id (EC2 `i-0abc…`, GCE
//! `zone/name`, static `machine@lease`); capstan's ids (pool, worker, launch config)
//! travel as tags or labels, so a sweep can find every machine capstan made even when
//! the store lost track of it.

use std::fmt;

use capstan_core::{Market, PoolId, Timestamp, WorkerId};
use serde::{Deserialize, Serialize};

/// Tag naming the pool an instance serves (AWS tag key; GCE uses `capstan-pool`).
pub const TAG_POOL: &str = "capstan:pool";
/// Tag naming the worker id capstan minted for the instance.
pub const TAG_WORKER: &str = "capstan:worker";
/// Tag naming the launch config the instance came from.
pub const TAG_LAUNCH_CONFIG: &str = "capstan:launch-config";

/// Where a machine is in the provider's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Accepted, not running yet (booting, provisioning, staging).
    Pending,
    /// Running (for a static machine: wanted and expected to take work).
    Running,
    /// Stopped or stopping on a person's request; capstan itself never stops machines.
    Stopped,
    /// Being deleted (for a static machine: asked to drain).
    ShuttingDown,
    /// Deleted on request (capstan's or a person's).
    Terminated,
    /// Stopped or deleted by the cloud: spot reclaimed, GCE preemption, host failure.
    /// The reconciler replaces it and marks the offering.
    Interrupted,
}

impl InstanceState {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting_down",
            Self::Terminated => "terminated",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the machine is (or is about to be) doing work.
    pub fn is_alive(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }

    /// Whether the machine is gone or going: terminated, interrupted or shutting down.
    pub fn is_gone(self) -> bool {
        matches!(
            self,
            Self::ShuttingDown | Self::Terminated | Self::Interrupted
        )
    }
}

impl fmt::Display for InstanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One machine as a provider sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// The provider's id: what `describe` and `terminate` take.
    pub id: String,
    /// From the pool tag; `None` when the tag is missing or not a valid pool id.
    pub pool_id: Option<PoolId>,
    /// From the worker tag.
    pub worker_id: Option<WorkerId>,
    /// From the launch-config tag.
    pub launch_config_id: Option<String>,
    /// Machine type (`c6i.large`, `n2-standard-4`, `static`).
    pub instance_type: String,
    /// Availability zone, when the provider has zones.
    pub zone: Option<String>,
    /// Spot or on-demand.
    pub market: Market,
    /// Where it is in its life.
    pub state: InstanceState,
    /// The provider's reason for the state, verbatim, when it gave one
    /// (`Server.SpotInstanceTermination: …`, `preempted`).
    pub state_reason: Option<String>,
    /// When the provider launched it.
    pub launched_at: Option<Timestamp>,
}

/// Which instances `list` returns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListScope {
    /// Instances tagged with this pool.
    Pool(PoolId),
    /// Every instance carrying capstan's pool tag in the account or project: the input
    /// of the orphan sweep.
    All,
}

impl ListScope {
    /// Whether an instance tagged with `pool` is in scope.
    pub fn includes(&self, pool: Option<&PoolId>) -> bool {
        match self {
            Self::All => pool.is_some(),
            Self::Pool(p) => pool == Some(p),
        }
    }
}
