//! The demand signal of a pool.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// What a pool's task queue looked like over one sampling interval ending at `at`.
///
/// `pending` and `running` are levels at `at`; `arrivals` and `completions` are counts
/// over the interval since the previous sample. Samples are pushed through the API or
/// pulled by queue adapters, stored per pool, and are the predictor's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueSample {
    /// End of the interval.
    pub at: Timestamp,
    /// Tasks waiting for a slot at `at`.
    pub pending: u32,
    /// Tasks running at `at`.
    pub running: u32,
    /// Tasks that entered the queue during the interval.
    // Optional when read but always written, and the API only sends samples: required
    // in the document.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub arrivals: u32,
    /// Tasks that finished during the interval.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub completions: u32,
}
