//! Converging a pool's fleet toward the capacity it needs.
//!
//! - [`planning`]: the pure planner. [`plan`] (or a [`Planner`] built once per spec)
//!   turns the pool spec, the observed workers, the predictor's forecast, offering
//!   health and the clock value into a [`capstan_core::Plan`]: actions plus a report
//!   saying why. No I/O and no async runtime, so the simulator and property tests call
//!   exactly the code production runs.
//! - [`controller`]: [`PoolController`], one pool's state between ticks (predictor,
//!   offering health, launch log, measured lead time) and its one `tick`, shared by the
//!   service, the simulator and the benches.
//!
//! The modules below need the default `service` feature; without it the crate is the
//! pure planner and controller (what the simulator uses).
//!
//! - [`service`]: the running loop of one replica: fenced leases, ticks and wake-ups,
//!   bounded concurrency ([`Service`], [`LoopConfig`], [`Providers`]).
//! - `actuator`: one round of one pool — observe the store and the provider, reconcile
//!   rows with instances, tick, record, apply with intents written before every
//!   provider call.
//! - [`jobs`]: periodic jobs on `tokio-cron-scheduler` (orphan sweep, retention).
//! - [`metrics`]: the Prometheus metrics.
//! - [`ledger`]: the providers' launch ledger over the store.
//! - [`crash`]: named crash points for the crash-safety tests.
//! - [`queues`]: queue adapters (Taskcluster, Buildkite, Prometheus) and the poller
//!   that turns a pool's `queue:` source into queue samples.

#[cfg(feature = "service")]
mod actuator;
pub mod controller;
#[cfg(feature = "service")]
pub mod crash;
pub mod hedge;
pub mod idle;
#[cfg(feature = "service")]
pub mod jobs;
#[cfg(feature = "service")]
pub mod ledger;
#[cfg(feature = "service")]
pub mod metrics;
pub mod planning;
#[cfg(feature = "service")]
pub mod queues;
#[cfg(feature = "service")]
pub mod service;

pub use controller::PoolController;
#[cfg(feature = "service")]
pub use metrics::Metrics;
pub use planning::{PlanError, Planner, plan};
#[cfg(feature = "service")]
pub use service::{LoopConfig, Providers, Service, Waker};
