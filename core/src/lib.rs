//! Domain types of capstan, shared by every other crate.
//!
//! Nothing here does I/O or knows about tokio: these are the words the rest of the
//! system speaks.
//!
//! - [`spec`]: the operator's declaration of a pool ([`PoolSpec`]) with its launch
//!   configurations, scaling policy, lifecycle limits, schedules and budget, plus the
//!   documented defaults for everything optional.
//! - [`validate`]: turning untrusted YAML or JSON into a [`PoolSpec`], reporting *every*
//!   problem at once, each with the path of the field it is about
//!   (`launch_configs[2].capacity: must be >= 1`). Unknown fields are errors.
//! - [`worker`]: a [`Worker`] (one machine of a pool) and its explicit state machine;
//!   an illegal transition is an error, never a silent overwrite.
//! - [`queue`]: [`QueueSample`], the demand signal of a pool.
//! - [`queue_source`]: [`QueueSource`], the `queue:` field of a spec: which task queue
//!   (Taskcluster, Buildkite, Prometheus, GitHub Actions) capstan polls for demand.
//! - [`offering`]: [`Offering`] (a launch config as something to buy) and
//!   [`OfferingHealth`] (which ones recently failed, until when).
//! - [`forecast`]: [`Forecast`], the predictor's answer: slots needed at `now + lead`.
//! - [`plan`]: [`Plan`], the planner's answer: [`Action`]s plus a [`PlanReport`].
//! - [`time`]: [`Timestamp`], the one clock type. Decision code takes "now" as an
//!   argument, so the simulator and tests drive it.
//! - [`id`]: validated identifiers.
//! - [`secret`]: secrets at rest, as SHA-256 digests compared in constant time.

pub mod forecast;
pub mod id;
pub mod offering;
pub mod plan;
pub mod queue;
pub mod queue_source;
pub mod schedule;
pub mod secret;
pub mod spec;
pub mod time;
pub mod validate;
pub mod worker;

pub use forecast::{Forecast, ForecastPoint, Quantile};
pub use id::{IdError, PoolId, WorkerId};
pub use offering::{Offering, OfferingHealth, Unavailability};
pub use plan::{
    Action, LaunchLog, Plan, PlanReport, SkipReason, SkippedOffering, TargetTerm, TerminateReason,
};
pub use queue::QueueSample;
pub use queue_source::QueueSource;
pub use spec::{
    Budget, LaunchConfig, Lifecycle, Market, PoolSpec, ProviderKind, Scaling, ScalingPolicy,
    Schedule,
};
pub use time::Timestamp;
pub use validate::{FieldError, SpecErrors};
pub use worker::{TransitionError, Worker, WorkerState};
