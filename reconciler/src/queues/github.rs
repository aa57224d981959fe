//! GitHub Actions: the poll half of a pool whose `queue` is a GitHub repository. The
//! push half is the `workflow_job` webhook (`api::webhooks`); GitHub does not redeliver
//! a delivery that failed, so a poll reconciles the pool's stored job set with what the
//! REST API shows:
//!
//! 1. `GET {api_url}/repos/{owner}/{repo}/actions/runs?status=queued` and
//!    `?status=in_progress` (`per_page=100`, up to [`MAX_RUN_PAGES`] pages each), then
//!    `GET …/actions/runs/{run_id}/jobs?filter=latest` for each run; jobs whose labels
//!    hold all of the pool's are kept (a run in progress also lists its finished jobs:
//!    they complete stored ones whose delivery was lost);
//! 2. every stored job that is not completed and was not in those lists is looked up
//!    alone (`GET …/actions/jobs/{job_id}`): it finished, or was cancelled, while its
//!    delivery went missing. A job GitHub no longer knows (404: the run was deleted) is
//!    closed without a run time;
//! 3. everything found is merged into the store in one transaction
//!    ([`store::Store::apply_github_jobs`]): statuses only move forward, a queue sample
//!    is written when anything changed, completed jobs book their run times.
//!
//! The answer to the poller is the pool's stored levels (queued jobs pending,
//! in-progress jobs running). The sample is the store's, not the poller's: webhooks
//! write samples between polls, so a sample estimated from the poller's own previous
//! level would count their arrivals twice.
//!
//! Requests carry `Authorization: Bearer <token>` when the source names credentials
//! (without, GitHub answers public repositories only, 60 requests an hour),
//! `Accept: application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28` and a
//! `User-Agent` (GitHub refuses requests without one). A rate-limit answer (403 or 429
//! with `x-ratelimit-remaining: 0` or `retry-after`) stops polling until the limit
//! resets (`retry-after` seconds, else `x-ratelimit-reset`, else a minute); until then
//! each poll fails at once with the same message, so the pool shows one error.

use std::collections::BTreeMap;
use std::sync::Mutex;

use capstan_core::queue::backlog_exceeds_idle;
use capstan_core::queue_source::GithubSource;
use capstan_core::{PoolId, Timestamp};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use store::Store;
use store::github_jobs::{GithubJob, GithubJobStatus, job_matches};

use super::poller::{ERROR_KIND, PassReport};
use super::{
    Adapter, AdapterError, Observation, QueueCredentials, Secret, WakeFn, endpoint_name,
    error_text, parse_json, unreachable,
};

/// The REST API version the requests ask for.
pub const API_VERSION: &str = "2022-11-28";
/// Most pages of runs read per status and poll (100 runs a page): a repository with
/// more queued runs than that has more demand than one pool serves anyway.
pub const MAX_RUN_PAGES: u32 = 5;
/// How long polling pauses after a rate-limit answer that says nothing about when the
/// limit resets (GitHub's advice for secondary limits: at least a minute).
const DEFAULT_BACKOFF_S: i64 = 60;
/// Longest back-off obeyed: an hour, GitHub's primary rate-limit window.
const MAX_BACKOFF_S: i64 = 3600;
/// `User-Agent` of the requests.
const USER_AGENT: &str = concat!("capstan/", env!("CARGO_PKG_VERSION"));

/// Polls one repository's Actions jobs for one pool.
#[derive(Debug)]
pub struct GithubAdapter {
    pool_id: PoolId,
    repository: String,
    labels: Vec<String>,
    /// `{api_url}/repos/{owner}/{repo}/actions`.
    actions_url: String,
    token: Option<Secret>,
    http: reqwest::Client,
    store: Store,
    clock: fn() -> Timestamp,
    /// After a rate-limit answer: poll again no sooner than this, and fail with this
    /// error until then.
    backoff: Mutex<Option<(Timestamp, RateLimited)>>,
}

/// The rate-limit answer being waited out.
#[derive(Debug, Clone)]
struct RateLimited {
    endpoint: String,
    status: u16,
    detail: String,
}

impl RateLimited {
    fn error(&self) -> AdapterError {
        AdapterError::Status {
            endpoint: self.endpoint.clone(),
            status: self.status,
            detail: self.detail.clone(),
        }
    }
}

/// A request's failure: an adapter error, or a rate limit to wait out.
enum Failure {
    Adapter(AdapterError),
    RateLimited {
        until: Timestamp,
        answer: RateLimited,
    },
}

impl From<AdapterError> for Failure {
    fn from(e: AdapterError) -> Self {
        Self::Adapter(e)
    }
}

/// `GET …/actions/runs`.
#[derive(Debug, Deserialize)]
struct RunsPage {
    workflow_runs: Vec<Run>,
}

/// One workflow run; only its id is read.
#[derive(Debug, Deserialize)]
struct Run {
    id: i64,
}

/// `GET …/actions/runs/{run_id}/jobs`.
#[derive(Debug, Deserialize)]
struct JobsPage {
    jobs: Vec<Job>,
}

/// One job as the REST API shows it.
#[derive(Debug, Deserialize)]
struct Job {
    id: i64,
    run_id: i64,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    created_at: Timestamp,
    #[serde(default)]
    started_at: Option<Timestamp>,
    #[serde(default)]
    completed_at: Option<Timestamp>,
    #[serde(default)]
    labels: Vec<String>,
}

impl Job {
    /// The job as the store keeps it, or why its status is not one GitHub documents.
    fn to_store(&self, endpoint: &str) -> Result<GithubJob, AdapterError> {
        let status =
            GithubJobStatus::from_github(&self.status).ok_or_else(|| AdapterError::BadAnswer {
                endpoint: endpoint.to_owned(),
                detail: format!(
                    "job {}: status {:?} is none of requested, pending, waiting, queued, \
                     in_progress, completed",
                    self.id, self.status
                ),
            })?;
        Ok(GithubJob {
            job_id: self.id,
            run_id: self.run_id,
            status,
            conclusion: self.conclusion.clone(),
            created_at: self.created_at,
            started_at: self.started_at,
            completed_at: self.completed_at,
        })
    }
}

impl GithubAdapter {
    /// An adapter polling `source` for pool `pool_id`, merging into `store`; the
    /// source's `credentials` entry, when named, must hold `token`.
    pub fn new(
        pool_id: PoolId,
        source: &GithubSource,
        credentials: &QueueCredentials,
        http: reqwest::Client,
        store: Store,
        clock: fn() -> Timestamp,
    ) -> Result<Self, AdapterError> {
        let token = match &source.credentials {
            Some(name) => Some(
                credentials
                    .secret(name, "token", |e| e.token.as_ref())?
                    .clone(),
            ),
            None => None,
        };
        Ok(Self {
            actions_url: format!(
                "{}/repos/{}/actions",
                source.api_url.trim_end_matches('/'),
                source.repository
            ),
            pool_id,
            repository: source.repository.clone(),
            labels: source.labels.clone(),
            token,
            http,
            store,
            clock,
            backoff: Mutex::new(None),
        })
    }

    /// `GET url`: the JSON body of a 2xx answer, `None` for a 404 when `allow_missing`.
    async fn get(
        &self,
        url: &str,
        allow_missing: bool,
    ) -> Result<Option<serde_json::Value>, Failure> {
        let endpoint = endpoint_name(url);
        let mut request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(reqwest::header::USER_AGENT, USER_AGENT);
        if let Some(token) = &self.token {
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            );
        }
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&endpoint, &e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .text()
            .await
            .map_err(|e| unreachable(&endpoint, &e))?;
        if (200..300).contains(&status) {
            return Ok(Some(parse_json(&endpoint, &body)?));
        }
        if status == 404 && allow_missing {
            return Ok(None);
        }
        let detail = error_text(&body);
        if let Some(wait_s) = rate_limit_wait(status, &headers, (self.clock)()) {
            return Err(Failure::RateLimited {
                until: (self.clock)().plus_secs(wait_s),
                answer: RateLimited {
                    endpoint,
                    status,
                    detail: format!(
                        "{detail} (rate limited: not polling again until GitHub's limit resets)"
                    ),
                },
            });
        }
        Err(Failure::Adapter(AdapterError::Status {
            endpoint,
            status,
            detail,
        }))
    }

    fn decode<T: serde::de::DeserializeOwned>(
        url: &str,
        value: serde_json::Value,
    ) -> Result<T, AdapterError> {
        serde_json::from_value(value).map_err(|e| AdapterError::BadAnswer {
            endpoint: endpoint_name(url),
            detail: format!("not the documented shape: {e}"),
        })
    }

    /// Steps 1 and 2 of the module docs: every job GitHub shows for this pool, by id.
    async fn jobs_from_github(&self) -> Result<BTreeMap<i64, GithubJob>, Failure> {
        let mut runs = Vec::new();
        for status in ["queued", "in_progress"] {
            for page in 1..=MAX_RUN_PAGES {
                let url = format!(
                    "{}/runs?status={status}&per_page=100&page={page}",
                    self.actions_url
                );
                let Some(body) = self.get(&url, false).await? else {
                    break;
                };
                let page: RunsPage = Self::decode(&url, body)?;
                let full = page.workflow_runs.len() >= 100;
                runs.extend(page.workflow_runs.into_iter().map(|r| r.id));
                if !full {
                    break;
                }
            }
        }
        runs.sort_unstable();
        runs.dedup();
        let mut found = BTreeMap::new();
        for run_id in runs {
            let url = format!(
                "{}/runs/{run_id}/jobs?filter=latest&per_page=100",
                self.actions_url
            );
            // A run deleted between the two requests has no jobs any more.
            let Some(body) = self.get(&url, true).await? else {
                continue;
            };
            let page: JobsPage = Self::decode(&url, body)?;
            for job in page.jobs {
                if job_matches(
                    &self.repository,
                    &self.labels,
                    &self.repository,
                    &job.labels,
                ) {
                    found.insert(job.id, job.to_store(&endpoint_name(&url))?);
                }
            }
        }
        let open = self
            .store
            .open_github_jobs(&self.pool_id)
            .await
            .map_err(store_error)?;
        for stored in open {
            if found.contains_key(&stored.job_id) {
                continue;
            }
            let url = format!("{}/jobs/{}", self.actions_url, stored.job_id);
            let job = match self.get(&url, true).await? {
                Some(body) => Self::decode::<Job>(&url, body)?.to_store(&endpoint_name(&url))?,
                // GitHub no longer knows the job (its run was deleted): close it,
                // without a run time (no conclusion to trust, no completion time).
                None => GithubJob {
                    job_id: stored.job_id,
                    run_id: stored.run_id,
                    status: GithubJobStatus::Completed,
                    conclusion: Some("cancelled".to_owned()),
                    created_at: stored.queued_at,
                    started_at: stored.started_at,
                    completed_at: None,
                },
            };
            found.insert(job.job_id, job);
        }
        Ok(found)
    }
}

/// How long to wait after an answer of `status` with `headers`, when it is a rate
/// limit: 403 or 429 with `retry-after` or `x-ratelimit-remaining: 0`. Waits for
/// `retry-after` seconds, else until `x-ratelimit-reset` (Unix seconds), else
/// [`DEFAULT_BACKOFF_S`]; at least a second and at most [`MAX_BACKOFF_S`].
pub fn rate_limit_wait(status: u16, headers: &HeaderMap, now: Timestamp) -> Option<i64> {
    if status != 403 && status != 429 {
        return None;
    }
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let retry_after = number("retry-after");
    let exhausted = number("x-ratelimit-remaining") == Some(0);
    if retry_after.is_none() && !exhausted {
        return None;
    }
    let wait = retry_after
        .or_else(|| number("x-ratelimit-reset").map(|reset| reset - now.unix_ms() / 1000))
        .unwrap_or(DEFAULT_BACKOFF_S);
    Some(wait.clamp(1, MAX_BACKOFF_S))
}

/// A store failure, shown like an unreachable source (the poll got no answer).
fn store_error(e: store::StoreError) -> AdapterError {
    AdapterError::Unreachable {
        endpoint: "the store".to_owned(),
        detail: e.to_string(),
    }
}

/// What the poller does with a GitHub pool's poll: the adapter already wrote the
/// pool's sample (module docs), and a failed poll leaves the webhook-fed demand as it
/// is, so only the pool error (kind [`ERROR_KIND`]) and the wake-up remain, by the
/// same rule as other sources.
pub(super) async fn record_poll(
    store: &Store,
    wake: &WakeFn,
    id: &PoolId,
    answer: Result<Observation, String>,
    now: Timestamp,
    report: &mut PassReport,
) -> Result<(), store::StoreError> {
    match answer {
        Ok(o) => {
            report.polled.push(id.clone());
            if o.pending > 0
                && backlog_exceeds_idle(o.pending, &store.list_workers(id, false).await?)
            {
                wake(id);
            }
        }
        Err(message) => {
            tracing::warn!(pool = %id, error = %message, "github queue source failed");
            store
                .record_pool_error(id, None, ERROR_KIND, &message, now)
                .await?;
            report.failed.push((id.clone(), message));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Adapter for GithubAdapter {
    async fn poll(&self) -> Result<Observation, AdapterError> {
        let now = (self.clock)();
        {
            let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((until, answer)) = &*backoff
                && now < *until
            {
                return Err(answer.error());
            }
        }
        let found = match self.jobs_from_github().await {
            Ok(found) => found,
            Err(Failure::Adapter(e)) => return Err(e),
            Err(Failure::RateLimited { until, answer }) => {
                let error = answer.error();
                *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = Some((until, answer));
                return Err(error);
            }
        };
        let jobs: Vec<GithubJob> = found.into_values().collect();
        let update = self
            .store
            .apply_github_jobs(&self.pool_id, &jobs, now)
            .await
            .map_err(store_error)?;
        if update.changed > 0 {
            tracing::info!(
                pool = %self.pool_id,
                changed = update.changed,
                "github poll caught job changes the webhooks missed"
            );
        }
        let (mut pending, mut running) = (0u32, 0u32);
        let open = self
            .store
            .open_github_jobs(&self.pool_id)
            .await
            .map_err(store_error)?;
        for job in open {
            match job.status {
                GithubJobStatus::Queued => pending = pending.saturating_add(1),
                GithubJobStatus::InProgress => running = running.saturating_add(1),
                GithubJobStatus::Waiting | GithubJobStatus::Completed => {}
            }
        }
        Ok(Observation {
            pending,
            running,
            next_poll_after: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn rate_limits_are_told_apart_from_other_refusals() {
        // A plain 403 (no access) is not a rate limit.
        assert_eq!(rate_limit_wait(403, &headers(&[]), NOW), None);
        assert_eq!(
            rate_limit_wait(403, &headers(&[("x-ratelimit-remaining", "12")]), NOW),
            None
        );
        assert_eq!(
            rate_limit_wait(500, &headers(&[("retry-after", "5")]), NOW),
            None
        );
        // Primary limit: wait until the reset.
        let reset = (1_800_000_000 + 754).to_string();
        assert_eq!(
            rate_limit_wait(
                403,
                &headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", &reset)
                ]),
                NOW
            ),
            Some(754)
        );
        // Secondary limit: retry-after wins.
        assert_eq!(
            rate_limit_wait(
                429,
                &headers(&[("retry-after", "30"), ("x-ratelimit-reset", &reset)]),
                NOW
            ),
            Some(30)
        );
        // Exhausted without a reset: a minute; a reset in the past: a second.
        assert_eq!(
            rate_limit_wait(403, &headers(&[("x-ratelimit-remaining", "0")]), NOW),
            Some(DEFAULT_BACKOFF_S)
        );
        assert_eq!(
            rate_limit_wait(
                403,
                &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "5")]),
                NOW
            ),
            Some(1)
        );
    }
}
