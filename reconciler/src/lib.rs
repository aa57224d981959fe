//! Converging a pool's fleet toward the capacity it needs.
//!
//! - [`planning`]: the pure planner. [`plan`] (or a [`Planner`] built once per spec)
//!   turns the pool spec, the observed workers, the predictor's forecast, offering
//!   health and the clock value into a [`capstan_core::Plan`]: actions plus a report
//!   saying why. No I/O and no async runtime, so the simulator and property tests call
//!   exactly the code production runs.
//!
//! The actuator (the async loop that observes, plans, applies through providers and
//! records) builds on this module and lives beside it.

pub mod controller;
pub mod planning;

pub use controller::PoolController;
pub use planning::{PlanError, Planner, plan};
