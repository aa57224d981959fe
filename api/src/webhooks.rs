//! `POST /v1/webhooks/github`: GitHub Actions `workflow_job` webhooks, the push half of
//! a pool whose `queue` is a GitHub repository (the poll half, which catches deliveries
//! GitHub never resends, is `reconciler::queues::github`).
//!
//! No bearer token: the signature is the authentication. GitHub signs each delivery's
//! raw body with the shared secret (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`);
//! the server recomputes it with `github_webhook_secret` from its config and compares in
//! constant time ([`verify_signature`]). The order of checks, each answering before the
//! next runs:
//! 1. no secret configured: 404 (the receiver is off);
//! 2. body over 1 MiB: 413 (`workflow_job` bodies are a few KiB);
//! 3. missing, malformed or wrong signature: 401 saying which;
//! 4. `X-GitHub-Event` other than `workflow_job` (`ping`, ...): 200, ignored;
//! 5. missing `X-GitHub-Delivery`, invalid JSON or a missing field: 400 naming it;
//! 6. a delivery id already processed: 409, nothing changes (a replay, or GitHub's
//!    "redeliver" button pressed twice).
//!
//! The job goes to every pool (not being deleted) whose source names the payload's
//! `repository.full_name` and whose labels are all among `workflow_job.labels`
//! ([`store::github_jobs::job_matches`]). The store merges it, writes a queue sample
//! for each pool that changed and books a completed job's run time
//! ([`store::github_jobs`]); a pool whose new backlog outgrows its idle slots is woken
//! ([`crate::Wake`]). A delivery matching no pool is still remembered and answered 200.

use std::fmt;

use axum::Json;
use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use capstan_core::{PoolId, QueueSource, Timestamp};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use store::github_jobs::{GithubDelivery, GithubJob, GithubJobStatus, job_matches};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::queue::backlog_exceeds_idle;
use crate::request::MAX_BODY_BYTES;

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The header naming the event.
pub const EVENT_HEADER: &str = "x-github-event";
/// The header carrying the delivery's unique id (a GUID).
pub const DELIVERY_HEADER: &str = "x-github-delivery";
/// Longest delivery id accepted (GitHub's are 36-character GUIDs).
const MAX_DELIVERY_ID_LEN: usize = 100;

/// The secret shared with GitHub's webhook settings. `Debug` never shows it, and it
/// is never logged; only [`verify_signature`] reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// Wraps `secret`; `None` when it is empty or only spaces (GitHub would sign with
    /// no key, which authenticates nothing).
    pub fn new(secret: impl Into<String>) -> Option<Self> {
        let secret = secret.into();
        (!secret.trim().is_empty()).then_some(Self(secret))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for WebhookSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).ok_or_else(|| {
            serde::de::Error::custom(
                "expected the webhook secret set in GitHub's webhook settings, got an empty string",
            )
        })
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error(
        "missing X-Hub-Signature-256 header: set the webhook's secret in GitHub so it signs deliveries"
    )]
    Missing,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("malformed X-Hub-Signature-256 header: expected sha256=<64 hex digits>, {0}")]
    Malformed(String),
    /// A well-formed signature that does not match the body under the configured
    /// secret.
    #[error(
        "X-Hub-Signature-256 does not match the body: the webhook's secret in GitHub differs \
         from github_webhook_secret, or the body was altered"
    )]
    Mismatch,
}

/// Checks `header` (the value of `X-Hub-Signature-256`) against the HMAC-SHA256 of
/// `body` under `secret`, comparing the digests in constant time (`hmac`'s
/// `verify_slice`, on `subtle`).
pub fn verify_signature(
    secret: &WebhookSecret,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let hex_digest = header.strip_prefix("sha256=").ok_or_else(|| {
        SignatureError::Malformed(format!(
            "got a value starting {:?}",
            header.chars().take(7).collect::<String>()
        ))
    })?;
    let given = hex::decode(hex_digest)
        .ok()
        .filter(|d| d.len() == 32)
        .ok_or_else(|| {
            SignatureError::Malformed(format!(
                "got {} characters after sha256= that are not 64 hex digits",
                hex_digest.len()
            ))
        })?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes())
        .map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// The parts of a `workflow_job` event capstan reads; other fields are ignored.
#[derive(Debug, Deserialize)]
pub struct WorkflowJobEvent {
    /// `queued`, `waiting`, `in_progress` or `completed`.
    pub action: String,
    /// The job.
    pub workflow_job: WorkflowJob,
    /// The repository it runs in.
    pub repository: Repository,
}

/// `workflow_job` of the event.
#[derive(Debug, Deserialize)]
pub struct WorkflowJob {
    /// The job's id.
    pub id: i64,
    /// Its workflow run's id.
    pub run_id: i64,
    /// `queued`, `waiting`, `in_progress`, `completed` (GitHub may also send
    /// `requested` or `pending`). This, not `action`, says where the job is: a
    /// `queued` action can carry `waiting` for a job held by a deployment rule.
    pub status: String,
    /// `success`, `failure`, `cancelled`, `skipped`, ... once completed.
    #[serde(default)]
    pub conclusion: Option<String>,
    /// The job's `runs-on` labels.
    pub labels: Vec<String>,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When it started.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When it completed.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
}

/// `repository` of the event.
#[derive(Debug, Deserialize)]
pub struct Repository {
    /// `owner/name`.
    pub full_name: String,
}

impl WorkflowJobEvent {
    /// Reads a delivery's body; errors name the field (`workflow_job.id`).
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let event: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                ApiError::invalid_json(format!("the body is not valid JSON: {inner}"))
            } else {
                let message = inner.to_string();
                // serde says "missing field `id`" at the parent's path: name the field.
                match message
                    .strip_prefix("missing field `")
                    .and_then(|rest| rest.split_once('`'))
                {
                    Some((name, _)) if path == "." => {
                        ApiError::bad_request(format!("field {name}: missing"))
                    }
                    Some((name, _)) => {
                        ApiError::bad_request(format!("field {path}.{name}: missing"))
                    }
                    None => ApiError::bad_request(format!("field {path}: {message}")),
                }
            }
        })?;
        Ok(event)
    }

    /// The job as the store keeps it; an undocumented status is a 400 naming
    /// `workflow_job.status`.
    pub fn job(&self) -> Result<GithubJob, ApiError> {
        let j = &self.workflow_job;
        let status = GithubJobStatus::from_github(&j.status).ok_or_else(|| {
            ApiError::bad_request(format!(
                "field workflow_job.status: expected requested, pending, waiting, queued, \
                 in_progress or completed, got {:?}",
                j.status
            ))
        })?;
        Ok(GithubJob {
            job_id: j.id,
            run_id: j.run_id,
            status,
            conclusion: j.conclusion.clone(),
            created_at: j.created_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
        })
    }
}

/// The answer to a delivery GitHub sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// `X-GitHub-Event`.
    pub event: String,
    /// `X-GitHub-Delivery`, when sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Why nothing was done, for an event capstan does not read (`ping`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
    /// The pools the job is for (empty when it matched none).
    #[schema(value_type = Vec<String>)]
    pub pools: Vec<PoolId>,
    /// The pools whose jobs changed (a new job, or a later status).
    #[schema(value_type = Vec<String>)]
    pub changed: Vec<PoolId>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("header {name}: not visible ASCII")))
        })
        .transpose()
}

/// Receive a GitHub `workflow_job` webhook
///
/// The delivery's signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body under
/// the server's `github_webhook_secret`) is its authentication: no bearer token. A
/// `workflow_job` event updates the job in every pool whose `queue` is this GitHub
/// repository with all of its labels among the job's, writes their queue samples and
/// books completed jobs' run times; other events (`ping`) are answered and ignored.
/// Each `X-GitHub-Delivery` id is processed once: a replay answers 409 and changes
/// nothing.
#[utoipa::path(
    post, path = "/v1/webhooks/github", tag = "webhooks",
    params(
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body>"),
        ("X-GitHub-Event" = String, Header, description = "workflow_job; others are ignored"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's unique id"),
    ),
    request_body(content = Object, content_type = "application/json",
        description = "GitHub's workflow_job event payload"),
    responses(
        (status = 200, description = "Applied, or ignored (not a workflow_job event)", body = WebhookReceipt),
        (status = 400, description = "Invalid JSON, a missing field or header", body = ErrorBody),
        (status = 401, description = "Missing, malformed or wrong signature", body = ErrorBody),
        (status = 404, description = "No github_webhook_secret configured: the receiver is off", body = ErrorBody),
        (status = 409, description = "This delivery id was already processed; nothing changed", body = ErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ErrorBody),
    )
)]
pub async fn github_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Request,
) -> Result<Json<WebhookReceipt>, ApiError> {
    let Some(secret) = &state.github_webhook_secret else {
        return Err(ApiError::not_found(
            "GitHub webhooks are off on this server: set github_webhook_secret in its config \
             to the secret of the repository's webhook",
        ));
    };
    let body = to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::payload_too_large(format!(
                "the body is larger than {MAX_BODY_BYTES} bytes (1 MiB), or could not be read"
            ))
        })?;
    verify_signature(secret, &body, header(&headers, SIGNATURE_HEADER)?)
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    let event = header(&headers, EVENT_HEADER)?
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Event header"))?
        .to_owned();
    let delivery = header(&headers, DELIVERY_HEADER)?.map(str::to_owned);
    if event != "workflow_job" {
        return Ok(Json(WebhookReceipt {
            ignored: Some(format!(
                "event {event:?} carries no jobs; only workflow_job is read"
            )),
            event,
            delivery,
            pools: Vec::new(),
            changed: Vec::new(),
        }));
    }
    let delivery = delivery
        .filter(|d| !d.is_empty())
        .ok_or_else(|| ApiError::bad_request("missing X-GitHub-Delivery header"))?;
    if delivery.len() > MAX_DELIVERY_ID_LEN {
        return Err(ApiError::bad_request(format!(
            "header X-GitHub-Delivery: expected a GUID of at most {MAX_DELIVERY_ID_LEN} characters, got {}",
            delivery.len()
        )));
    }
    let payload = WorkflowJobEvent::parse(&body)?;
    let job = payload.job()?;
    let pools: Vec<PoolId> = state
        .store
        .list_pools()
        .await?
        .into_iter()
        .filter(|p| p.deleting_since.is_none())
        .filter(|p| match &p.spec.queue {
            Some(QueueSource::Github(source)) => job_matches(
                &source.repository,
                &source.labels,
                &payload.repository.full_name,
                &payload.workflow_job.labels,
            ),
            _ => false,
        })
        .map(|p| p.spec.id)
        .collect();
    let now = state.now();
    let updates = match state
        .store
        .apply_github_delivery(&delivery, &pools, &job, now)
        .await?
    {
        GithubDelivery::Duplicate => {
            return Err(ApiError::conflict(format!(
                "delivery {delivery} already processed; nothing changed"
            )));
        }
        GithubDelivery::Applied(updates) => updates,
    };
    let mut changed = Vec::new();
    for update in updates {
        if let Some(sample) = update.sample {
            if backlog_exceeds_idle(&state.store, &update.pool_id, sample.pending).await? {
                state.wake.wake(&update.pool_id);
            }
            changed.push(update.pool_id);
        }
    }
    tracing::debug!(
        %delivery,
        job = job.job_id,
        status = job.status.as_str(),
        action = %payload.action,
        pools = pools.len(),
        changed = changed.len(),
        "github workflow_job delivery"
    );
    Ok(Json(WebhookReceipt {
        event,
        delivery: Some(delivery),
        ignored: None,
        pools,
        changed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_say_what_is_wrong() {
        let secret = WebhookSecret::new("s3cret").unwrap();
        let body = br#"{"action":"queued"}"#;
        let good = sign("s3cret", body);
        assert_eq!(verify_signature(&secret, body, Some(&good)), Ok(()));
        assert_eq!(
            verify_signature(&secret, body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_signature(&secret, b"{\"action\":\"queued\" }", Some(&good)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(&secret, body, Some(&sign("other", body))),
            Err(SignatureError::Mismatch)
        );
        for malformed in [
            good.replacen("sha256=", "sha1=", 1),
            good[..good.len() - 2].to_owned(),
            good.replacen('a', "z", 1),
            "sha256=".to_owned(),
        ] {
            assert!(
                matches!(
                    verify_signature(&secret, body, Some(&malformed)),
                    Err(SignatureError::Malformed(_))
                ),
                "{malformed}"
            );
        }
    }

    #[test]
    fn the_secret_never_shows() {
        let secret = WebhookSecret::new("s3cret").unwrap();
        assert!(!format!("{secret:?}").contains("s3cret"));
        assert_eq!(WebhookSecret::new("  "), None);
        assert!(serde_json::from_str::<WebhookSecret>("\"\"").is_err());
    }

    #[test]
    fn payload_errors_name_the_field() {
        let e = WorkflowJobEvent::parse(br#"{"action":"queued","workflow_job":{"run_id":1}}"#)
            .unwrap_err();
        assert_eq!(e.body().message, "field workflow_job.id: missing");
        let e = WorkflowJobEvent::parse(br#"{"repository":{"full_name":"a/b"}}"#).unwrap_err();
        assert_eq!(e.body().message, "field action: missing");
        let e = WorkflowJobEvent::parse(b"{not json").unwrap_err();
        assert_eq!(e.body().error, "invalid_json");
    }
}
