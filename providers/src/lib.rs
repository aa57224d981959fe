//! The [`Provider`] trait and its implementations: how capstan gets, watches and gives
//! back machines.
//!
//! capstan is cloud-agnostic because of this crate. The reconciler's actuator is the
//! only caller: it records an intent row (with an idempotency token) in the store, then
//! calls [`Provider::launch`]; every tick it observes with [`Provider::list`] and
//! [`Provider::describe`]; it gives machines back with [`Provider::terminate`]; the
//! planner prices launch configs with [`Provider::offerings`]. SDK types never cross
//! the trait: instances are [`Instance`]s and failures are [`ProviderError`]s, classified
//! (capacity, quota, throttling, config, not found, auth, transient) with the
//! provider's own code and message kept for the operator.
//!
//! Modules:
//!
//! - [`error`]: [`ProviderError`], the one classified error type.
//! - [`instance`]: [`Instance`], [`InstanceState`], [`ListScope`] and the tag names.
//! - [`launch`]: [`LaunchRequest`] (N instances, each with its worker id, idempotency
//!   token and registration token) and [`LaunchOutcome`] (launched and failed, so a
//!   partial launch reads as one), and the launch sequence every provider runs
//!   (ledger, crash recovery, one create per instance, stop on capacity, quota or
//!   throttling).
//! - [`ledger`]: [`LaunchLedger`], capstan's own token → instance record, because
//!   clouds honour idempotency tokens only for a while and emulators not at all.
//! - [`aws`]: EC2 spot and on-demand through `aws-sdk-ec2`.
//! - [`gcp`]: Compute Engine SPOT and STANDARD through `google-cloud-compute-v1`.
//! - [`static_pool`]: operator-registered hardware; "launch" marks a machine wanted,
//!   "terminate" asks it to drain.
//! - [`fake`]: an in-memory, deterministic cloud with knobs for boot delay, capacity
//!   errors, quota, throttling and interruptions, for tests and simulations.
//! - [`clock`]: where the in-memory providers read the time.
//!
//! Every implementation passes the same conformance suite (`tests/providers/`): the
//! cloud ones through their real SDK clients against emulators on 127.0.0.1.

use std::fmt;

use async_trait::async_trait;
use capstan_core::{LaunchConfig, Offering, PoolId, ProviderKind};

pub mod aws;
pub mod clock;
#[cfg(feature = "test-support")]
pub mod emulator;
pub mod error;
pub mod fake;
#[cfg(feature = "test-support")]
pub mod fault_proxy;
pub mod gcp;
pub mod instance;
pub mod launch;
pub mod ledger;
pub mod static_pool;

pub use error::{ErrorDetail, ErrorKind, ProviderError};
pub use instance::{Instance, InstanceState, ListScope, TAG_LAUNCH_CONFIG, TAG_POOL, TAG_WORKER};
pub use launch::{InstanceRequest, LaunchFailure, LaunchOutcome, LaunchRequest, UserData};
pub use ledger::{InMemoryLedger, LaunchLedger, LedgerEntry, LedgerError};

/// A source of machines. See the crate docs for how the reconciler uses it.
///
/// Implementations make one attempt per call and do not retry internally (the
/// reconciler is level-triggered: what failed shows up in the next observation).
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// Which plugin this is.
    fn kind(&self) -> ProviderKind;

    /// Launches the instances of `request`.
    ///
    /// Contract:
    /// - Every instance carries the pool, worker and launch-config tags (labels on GCE)
    ///   and boots with [`UserData`] holding the pool id, worker id and registration
    ///   token.
    /// - Idempotent per instance: an instance whose idempotency token already created a
    ///   machine is not created again; the existing machine is returned in `launched`
    ///   (whatever its state now). The same holds after a crash between the create
    ///   call and its record, through the worker tag.
    /// - Partial success is reported as such: every instance of the request is in
    ///   exactly one of `launched` / `failed`. After a capacity, quota or throttling
    ///   error the remaining instances are not attempted and fail with the same error.
    /// - `Err` only when nothing was attempted because the request itself is invalid
    ///   ([`ProviderError::InvalidConfig`] naming the field) or the token record could
    ///   not be read.
    async fn launch(&self, request: &LaunchRequest) -> Result<LaunchOutcome, ProviderError>;

    /// Terminates instance `instance_id` (for a static machine: asks it to drain).
    ///
    /// Contract: `Ok` once deletion is requested or the instance is already gone
    /// (terminating twice, or an id the provider no longer knows, is `Ok`). It does not
    /// wait for the machine to disappear.
    async fn terminate(&self, instance_id: &str) -> Result<(), ProviderError>;

    /// The current state of instance `instance_id`.
    ///
    /// Contract: [`ProviderError::NotFound`] when the provider does not know the id
    /// (never created, or deleted long enough ago to be forgotten). A machine stopped
    /// or deleted by the cloud (spot reclaimed, preempted) is
    /// [`InstanceState::Interrupted`], with the provider's reason in `state_reason`.
    /// (On GCE a SPOT VM being deleted passes through the same STOPPING state as a
    /// preempted one, so callers ignore interruptions of instances they are
    /// terminating themselves.)
    async fn describe(&self, instance_id: &str) -> Result<Instance, ProviderError>;

    /// Every instance carrying capstan's tags in `scope`, including ones shutting down
    /// and recently terminated ones the provider still reports. The orphan sweep lists
    /// [`ListScope::All`] and adopts or terminates what the store does not know.
    async fn list(&self, scope: &ListScope) -> Result<Vec<Instance>, ProviderError>;

    /// The offerings launch config `config` of pool `pool` stands for, with current
    /// prices where the provider publishes them (EC2 spot price history); on-demand
    /// prices come from the launch config. A config without a zone may give one
    /// offering per zone. Static capacity is priced at zero and capped at the pool's
    /// machines.
    async fn offerings(
        &self,
        pool: &PoolId,
        config: &LaunchConfig,
    ) -> Result<Vec<Offering>, ProviderError>;
}
