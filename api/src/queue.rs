//! `POST /v1/pools/{pool_id}/queue`: pushing a pool's queue samples, the demand signal
//! the predictor learns from.
//!
//! A batch holds 1 to 1000 samples, oldest first. Rules, every problem reported at once
//! with its field path (422 `invalid_request`), and nothing stored unless the whole
//! batch is valid:
//! - `at` (RFC 3339) defaults to the server's now; it may be at most 60 s in the future
//!   (clock skew) and at most 35 days old (the retention of samples);
//! - `at` strictly increases within a batch;
//! - `pending`, `running`, `arrivals` and `completions` are at most 1,000,000.
//!
//! A missing `completions` is 0. A missing `arrivals` is estimated from the levels:
//! `max(0, (pending + running) − (previous pending + running)) + completions`, where
//! the previous sample is the one before it in the batch, or else the pool's latest
//! stored sample before it (looked for in the 15 minutes before; with none, the
//! estimate is `completions`: a first sample's backlog arrived at unknown times, and
//! booking it all into one interval would fake a burst). A sample at an instant
//! already stored replaces it, so re-pushing a batch after a timeout is harmless.
//!
//! After storing, when the newest sample has more pending tasks than the pool's idle
//! ready slots (capacity minus busy slots over its `ready` workers), the reconcile loop
//! is woken for the pool ([`crate::Wake`]) instead of waiting for its next tick.

// utoipa's `params(QueryStruct)` expansion names the struct by its full path.
#![allow(unused_qualifications)]

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use capstan_core::{FieldError, PoolId, QueueSample, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::{Store, StoreError};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Action, Caller};
use crate::error::{ApiError, ErrorBody};
use crate::pools::{PoolIdParam, PoolPath, existing};
use crate::request::{JsonBody, decode, decode_at};

/// Most samples in one push.
pub const MAX_SAMPLES: usize = 1000;
/// Largest count a sample may carry (`pending`, `running`, `arrivals`, `completions`).
pub const MAX_COUNT: u64 = 1_000_000;
/// How far into the future a sample's `at` may be, in seconds (clock skew).
pub const MAX_FUTURE_S: i64 = 60;
/// How old a sample's `at` may be, in seconds: 35 days, the samples' retention.
pub const MAX_AGE_S: i64 = 35 * 86_400;
/// How far back the latest stored sample is looked for when estimating `arrivals`.
const PREVIOUS_LOOKBACK_S: i64 = 15 * 60;
/// Most problems one 422 lists (a bad batch of 1000 could have thousands).
const MAX_PROBLEMS: usize = 100;

/// Body of a queue push.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePush {
    /// 1 to 1000 samples, oldest first, `at` strictly increasing.
    #[schema(value_type = Vec<QueueSampleIn>, min_items = 1, max_items = 1000)]
    pub samples: Vec<Value>,
}

/// One sample as pushed: the queue at `at`, and what happened since the previous one.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueSampleIn {
    /// End of the interval (RFC 3339); default: the server's now. At most 60 s ahead
    /// of the server's clock and at most 35 days old.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// Tasks waiting for a slot at `at`.
    #[schema(maximum = 1_000_000)]
    pub pending: u64,
    /// Tasks running at `at`.
    #[schema(maximum = 1_000_000)]
    pub running: u64,
    /// Tasks that entered the queue since the previous sample; default: estimated as
    /// the growth of pending + running since the previous sample, plus `completions`.
    #[serde(default)]
    #[schema(maximum = 1_000_000)]
    pub arrivals: Option<u64>,
    /// Tasks that finished since the previous sample; default 0.
    #[serde(default)]
    #[schema(maximum = 1_000_000)]
    pub completions: Option<u64>,
}

/// What a push stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueAccepted {
    /// Samples stored.
    pub accepted: usize,
}

/// A sample that passed the rules; `arrivals` is `None` until estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedSample {
    /// Its instant (the server's now when it was left out).
    pub at: Timestamp,
    /// Pending tasks.
    pub pending: u32,
    /// Running tasks.
    pub running: u32,
    /// Arrivals, when given.
    pub arrivals: Option<u32>,
    /// Completions (0 when left out).
    pub completions: u32,
}

impl CheckedSample {
    fn level(&self) -> u32 {
        self.pending + self.running
    }
}

/// Checks a push body against the rules at `now`: every problem at once, each naming
/// its field (`samples[3].at`).
pub fn check(body: Value, now: Timestamp) -> Result<Vec<CheckedSample>, ApiError> {
    let push: QueuePush = decode(body)?;
    if push.samples.is_empty() || push.samples.len() > MAX_SAMPLES {
        return Err(ApiError::invalid_field(
            "samples",
            format!(
                "must hold 1 to {MAX_SAMPLES} samples, got {}",
                push.samples.len()
            ),
        ));
    }
    let mut problems = Vec::new();
    let mut checked = Vec::with_capacity(push.samples.len());
    // The previous sample's `at` and whether it was given, for the order rule.
    let mut previous: Option<(Timestamp, bool)> = None;
    for (i, value) in push.samples.into_iter().enumerate() {
        let path = format!("samples[{i}]");
        let sample: QueueSampleIn = match decode_at(value, &path) {
            Ok(s) => s,
            Err(problem) => {
                problems.push(problem);
                previous = None;
                continue;
            }
        };
        let mut count = |name: &str, value: u64| -> u32 {
            if value > MAX_COUNT {
                problems.push(FieldError {
                    field: format!("{path}.{name}"),
                    message: format!("must be at most {MAX_COUNT}, got {value}"),
                });
            }
            u32::try_from(value.min(MAX_COUNT)).unwrap_or(u32::MAX)
        };
        let pending = count("pending", sample.pending);
        let running = count("running", sample.running);
        let arrivals = sample.arrivals.map(|a| count("arrivals", a));
        let completions = count("completions", sample.completions.unwrap_or(0));
        let at = sample.at.unwrap_or(now);
        let at_field = format!("{path}.at");
        let latest = now.plus_secs(MAX_FUTURE_S);
        let earliest = now.plus_secs(-MAX_AGE_S);
        if at > latest {
            problems.push(FieldError {
                field: at_field.clone(),
                message: format!(
                    "must be at most {MAX_FUTURE_S} s ahead of the server's clock ({now}), got {at}"
                ),
            });
        } else if at < earliest {
            problems.push(FieldError {
                field: at_field.clone(),
                message: format!("must be at most 35 days old (not before {earliest}), got {at}"),
            });
        }
        if let Some((before, given)) = previous
            && at <= before
        {
            let before_name = format!("samples[{}].at", i - 1);
            let before_text = if given {
                format!("{before_name} ({before})")
            } else {
                format!("{before_name} (left out, so the server's now, {before})")
            };
            let message = if sample.at.is_some() {
                format!(
                    "must be later than {before_text}: samples go oldest first, each at its own instant; got {at}"
                )
            } else {
                format!(
                    "left out, so the server's now ({at}), which is not later than {before_text}: \
                     only the newest sample may leave `at` out"
                )
            };
            problems.push(FieldError {
                field: at_field,
                message,
            });
        }
        previous = Some((at, sample.at.is_some()));
        checked.push(CheckedSample {
            at,
            pending,
            running,
            arrivals,
            completions,
        });
    }
    if problems.is_empty() {
        return Ok(checked);
    }
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
        problems.push(FieldError {
            field: "samples".into(),
            message: format!("... and {more} more problems not listed"),
        });
    }
    Err(ApiError::invalid("invalid_request", problems))
}

/// Fills in missing `arrivals` (see the module docs); `previous_level` is pending +
/// running of the stored sample before the first one, if there is one.
pub fn estimate_arrivals(
    checked: &[CheckedSample],
    previous_level: Option<u32>,
) -> Vec<QueueSample> {
    let mut previous = previous_level;
    checked
        .iter()
        .map(|s| {
            let arrivals = s.arrivals.unwrap_or_else(|| {
                capstan_core::queue::estimate_arrivals(s.level(), previous, s.completions)
            });
            previous = Some(s.level());
            QueueSample {
                at: s.at,
                pending: s.pending,
                running: s.running,
                arrivals,
                completions: s.completions,
            }
        })
        .collect()
}

/// Estimates what is missing and stores the batch (all or none); answers the samples
/// as stored.
pub async fn record(
    store: &Store,
    id: &PoolId,
    checked: &[CheckedSample],
) -> Result<Vec<QueueSample>, ApiError> {
    let previous_level = match checked.first() {
        Some(first) if first.arrivals.is_none() => store
            .queue_samples(id, first.at.plus_secs(-PREVIOUS_LOOKBACK_S), first.at)
            .await?
            .last()
            .map(|s| s.pending.saturating_add(s.running)),
        _ => None,
    };
    let samples = estimate_arrivals(checked, previous_level);
    store.record_queue_samples(id, &samples).await?;
    Ok(samples)
}

/// Whether the pool's idle ready slots (capacity − busy slots over `ready` workers)
/// are fewer than `pending` tasks.
pub async fn backlog_exceeds_idle(
    store: &Store,
    id: &PoolId,
    pending: u32,
) -> Result<bool, ApiError> {
    if pending == 0 {
        return Ok(false);
    }
    let workers = store.list_workers(id, false).await?;
    Ok(capstan_core::queue::backlog_exceeds_idle(pending, &workers))
}

/// Push queue samples
///
/// Stores 1 to 1000 samples of the pool's task queue, oldest first: all of them, or
/// none when any is invalid (422 listing every problem with its field). `at` defaults
/// to now (at most 60 s ahead, at most 35 days old, strictly increasing); a missing
/// `arrivals` is estimated from the growth of pending + running plus `completions`; a
/// missing `completions` is 0. When the newest sample has more pending tasks than the
/// pool's idle ready slots, the reconcile loop plans the pool at once. Needs
/// `queue:write:<pool_id>`.
#[utoipa::path(
    post, path = "/v1/pools/{pool_id}/queue", tag = "queue",
    params(PoolIdParam),
    request_body(content = QueuePush, content_type = "application/json"),
    responses(
        (status = 202, description = "Stored", body = QueueAccepted),
        (status = 400, description = "Malformed JSON or bad pool id", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Missing queue:write:<pool_id>", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "The pool is being deleted", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
        (status = 415, description = "Body not JSON", body = ErrorBody),
        (status = 422, description = "Invalid samples: every problem with its field; nothing stored", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn push_queue(
    State(state): State<AppState>,
    caller: Caller,
    PoolPath(id): PoolPath,
    req: Request,
) -> Result<(StatusCode, Json<QueueAccepted>), ApiError> {
    caller.require(Action::QueueWrite, id.as_str())?;
    let JsonBody(body) = JsonBody::read(req).await?;
    let pool = existing(&state.store, &id).await?;
    if pool.deleting_since.is_some() {
        return Err(StoreError::PoolDeleting(id.to_string()).into());
    }
    let checked = check(body, state.now())?;
    let samples = record(&state.store, &id, &checked).await?;
    if let Some(newest) = samples.last()
        && backlog_exceeds_idle(&state.store, &id, newest.pending).await?
    {
        state.wake.wake(&id);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(QueueAccepted {
            accepted: samples.len(),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

    fn problems(body: Value) -> Vec<(String, String)> {
        let e = check(body, NOW).unwrap_err();
        e.body()
            .problems
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect()
    }

    fn fields(body: Value) -> Vec<String> {
        problems(body).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn valid_batches_default_at_and_completions() {
        let got = check(
            json!({"samples": [
                {"at": "2027-01-15T07:59:00Z", "pending": 3, "running": 1, "arrivals": 4},
                {"pending": 5, "running": 2},
            ]}),
            NOW,
        )
        .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].arrivals, Some(4));
        assert_eq!(
            (got[1].at, got[1].arrivals, got[1].completions),
            (NOW, None, 0)
        );
    }

    #[test]
    fn every_problem_names_its_field() {
        let future = NOW.plus_secs(61).to_string();
        let old = NOW.plus_secs(-MAX_AGE_S - 1).to_string();
        let got = fields(json!({"samples": [
            {"at": future, "pending": 1, "running": 0},
            {"at": old, "pending": 1_000_001, "running": 0, "arrivals": 2_000_000, "completions": 1_000_001},
            {"pending": "many", "running": 0},
            {"pending": 1, "running": 0, "colour": "red"},
            {"at": "yesterday", "pending": 1, "running": 0},
            {"pending": 1},
        ]}));
        assert_eq!(
            got,
            [
                "samples[0].at",
                "samples[1].pending",
                "samples[1].arrivals",
                "samples[1].completions",
                "samples[1].at",
                "samples[1].at",
                "samples[2].pending",
                "samples[3].colour",
                "samples[4].at",
                "samples[5]",
            ]
        );
        let all = problems(json!({"samples": [{"pending": 1, "running": 0, "colour": 1}]}));
        assert!(all[0].1.contains("colour"), "{all:?}");
        let missing = problems(json!({"samples": [{"pending": 1}]}));
        assert!(missing[0].1.contains("running"), "{missing:?}");
    }

    #[test]
    fn samples_must_strictly_increase_and_only_the_newest_may_leave_at_out() {
        let t = |s: i64| NOW.plus_secs(s).to_string();
        let got = problems(json!({"samples": [
            {"at": t(-20), "pending": 1, "running": 0},
            {"at": t(-20), "pending": 1, "running": 0},
            {"at": t(-30), "pending": 1, "running": 0},
            {"pending": 1, "running": 0},
            {"pending": 1, "running": 0},
        ]}));
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["samples[1].at", "samples[2].at", "samples[4].at"]);
        assert!(got[0].1.contains("later than samples[0].at"), "{got:?}");
        assert!(
            got[2]
                .1
                .contains("only the newest sample may leave `at` out"),
            "{got:?}"
        );
    }

    #[test]
    fn batch_size_and_shape() {
        assert_eq!(fields(json!({"samples": []})), ["samples"]);
        let many: Vec<Value> = (0..=MAX_SAMPLES)
            .map(|i| json!({"at": NOW.plus_secs(i as i64 - 2000).to_string(), "pending": 0, "running": 0}))
            .collect();
        assert_eq!(fields(json!({ "samples": many })), ["samples"]);
        assert_eq!(fields(json!({"samples": {}})), ["samples"]);
        assert_eq!(fields(json!({"sample": []})), ["sample"]);
        assert_eq!(fields(json!([])), [""]);
    }

    #[test]
    fn long_problem_lists_are_cut() {
        let bad: Vec<Value> = (0..500).map(|_| json!({"pending": -1})).collect();
        let got = fields(json!({ "samples": bad }));
        assert_eq!(got.len(), MAX_PROBLEMS + 1);
        assert_eq!(got.last().unwrap(), "samples");
    }

    #[test]
    fn arrivals_are_estimated_from_growth_plus_completions() {
        let s = |pending, running, arrivals, completions| CheckedSample {
            at: NOW,
            pending,
            running,
            arrivals,
            completions,
        };
        let batch = [
            s(10, 5, None, 2),    // previous level 12: grew 3, plus 2 completions
            s(4, 5, None, 7),     // shrank: only completions
            s(20, 5, Some(1), 0), // given: kept
            s(30, 5, None, 0),    // grew 10 over the given sample
        ];
        let arrivals: Vec<u32> = estimate_arrivals(&batch, Some(12))
            .iter()
            .map(|s| s.arrivals)
            .collect();
        assert_eq!(arrivals, [5, 7, 1, 10]);
        // No previous sample: the first interval counts completions only.
        assert_eq!(estimate_arrivals(&batch[..1], None)[0].arrivals, 2);
    }
}
