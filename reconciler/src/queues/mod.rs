//! Queue adapters: capstan asks the task queues people already run how many tasks
//! wait and run, and turns the answers into [`QueueSample`]s.
//!
//! A pool whose spec has a `queue:` ([`QueueSource`]) is polled by the replica holding
//! its reconcile lease ([`poller::QueuePoller`]); each source type has one
//! [`Adapter`]:
//!
//! - [`taskcluster`]: `GET <root>/api/queue/v1/task-queues/<id>/counts`
//!   (`pendingTasks`, `claimedTasks`), Hawk-signed when credentials are configured.
//! - [`buildkite`]: `GET <endpoint>/metrics` with an agent token; honours the
//!   `Buildkite-Agent-Metrics-Poll-Duration` answer header.
//! - [`prometheus`]: an instant query per level (`/api/v1/query`).
//!
//! Secrets never appear in a pool spec: a source names an entry of the server's
//! `[queue_credentials.<name>]` table ([`QueueCredentials`]), whose values are
//! [`Secret`]s that print as `<redacted>`.
//!
//! An adapter's answer is an [`Observation`] (two levels and an optional "do not ask
//! again before" hint); its failures are [`AdapterError`]s whose messages say what
//! the source answered (HTTP status and the source's own error text, "not JSON",
//! "missing field pendingTasks"), since they are shown to operators as pool errors.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use capstan_core::queue::estimate_arrivals;
use capstan_core::{QueueSample, QueueSource, Timestamp};
use serde::Deserialize;

pub mod buildkite;
pub mod github;
pub mod poller;
pub mod prometheus;
pub mod taskcluster;

pub use poller::{PollerConfig, QueuePoller, WakeFn};

pub use capstan_core::secret::Secret;

/// One `[queue_credentials.<name>]` entry. Which keys a source needs depends on its
/// type: Taskcluster `client_id` + `access_token`, Buildkite `agent_token`,
/// Prometheus and GitHub `token`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueCredential {
    /// Taskcluster client id (not secret; it names the client in Hawk headers).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Taskcluster access token: the Hawk key.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Buildkite agent token.
    #[serde(default)]
    pub agent_token: Option<Secret>,
    /// Bearer token (Prometheus) or GitHub token.
    #[serde(default)]
    pub token: Option<Secret>,
}

/// The server's `[queue_credentials]` table, by entry name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct QueueCredentials(pub BTreeMap<String, QueueCredential>);

impl QueueCredentials {
    /// The entry `name`, or an error saying it is missing from the config.
    pub fn entry(&self, name: &str) -> Result<&QueueCredential, AdapterError> {
        self.0.get(name).ok_or_else(|| AdapterError::Credentials {
            name: name.to_owned(),
            problem: "no such entry in the server's [queue_credentials] config".to_owned(),
        })
    }

    /// The entry `name`'s `key`, or an error naming what is missing.
    pub fn secret<'a>(
        &'a self,
        name: &str,
        key: &str,
        pick: impl FnOnce(&'a QueueCredential) -> Option<&'a Secret>,
    ) -> Result<&'a Secret, AdapterError> {
        pick(self.entry(name)?).ok_or_else(|| AdapterError::Credentials {
            name: name.to_owned(),
            problem: format!("the entry has no `{key}`"),
        })
    }
}

/// What a source said about its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Tasks waiting for a worker.
    pub pending: u32,
    /// Tasks being run.
    pub running: u32,
    /// The source asked not to be polled again sooner than this (Buildkite's
    /// poll-duration header); the poller waits the longer of this and the pool's
    /// `poll_interval_s`.
    pub next_poll_after: Option<Duration>,
}

impl Observation {
    /// The queue sample for this observation at `at`. Sources report levels only, so
    /// `completions` is 0 and `arrivals` is estimated from the growth since
    /// `previous_level` (pending + running of the pool's previous sample) exactly as
    /// for pushed samples ([`estimate_arrivals`]).
    pub fn sample(&self, at: Timestamp, previous_level: Option<u32>) -> QueueSample {
        let level = self.pending.saturating_add(self.running);
        QueueSample {
            at,
            pending: self.pending,
            running: self.running,
            arrivals: estimate_arrivals(level, previous_level, 0),
            completions: 0,
        }
    }
}

/// Why a poll gave no observation. Messages are shown to operators as pool errors and
/// deduplicated by text, so they hold what the source said but nothing that changes
/// from one poll to the next (no timestamps, no nonces).
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The request did not get an answer (connection refused, timeout, TLS).
    #[error("{endpoint}: no answer: {detail}")]
    Unreachable {
        /// Method and URL (without the query string).
        endpoint: String,
        /// What went wrong, innermost cause last.
        detail: String,
    },
    /// The source answered with an error status.
    #[error("{endpoint}: HTTP {status}: {detail}")]
    Status {
        /// Method and URL (without the query string).
        endpoint: String,
        /// The HTTP status code.
        status: u16,
        /// The source's own error text (its JSON `message`/`error`), or the start of
        /// the body.
        detail: String,
    },
    /// The answer was not JSON, or not the documented shape.
    #[error("{endpoint}: {detail}")]
    BadAnswer {
        /// Method and URL (without the query string).
        endpoint: String,
        /// What was wrong, e.g. `not JSON: ...` or `missing field pendingTasks`.
        detail: String,
    },
    /// The credentials entry a source names is missing or incomplete.
    #[error("credentials {name:?}: {problem}")]
    Credentials {
        /// The entry's name.
        name: String,
        /// What is missing.
        problem: String,
    },
    /// This build has no adapter for the source type.
    #[error("{0} sources are not polled by this build")]
    Unsupported(&'static str),
}

/// One source's client. Implementations hold the validated source, the credentials
/// they need and a shared HTTP client with a timeout; `poll` makes one attempt (the
/// poller decides when to try again).
#[async_trait::async_trait]
pub trait Adapter: Send + Sync + fmt::Debug {
    /// Asks the source for its current pending and running counts.
    async fn poll(&self) -> Result<Observation, AdapterError>;
}

/// Builds the adapter for `source`, with its credentials looked up in `credentials`
/// (a missing entry is an error now, not at the first poll), reading the time from
/// `clock` where the wire protocol needs it (Hawk timestamps).
pub fn adapter_for(
    source: &QueueSource,
    credentials: &QueueCredentials,
    http: reqwest::Client,
    clock: fn() -> Timestamp,
) -> Result<Arc<dyn Adapter>, AdapterError> {
    Ok(match source {
        QueueSource::Taskcluster(s) => Arc::new(taskcluster::TaskclusterAdapter::new(
            s,
            credentials,
            http,
            clock,
        )?),
        QueueSource::Buildkite(s) => {
            Arc::new(buildkite::BuildkiteAdapter::new(s, credentials, http)?)
        }
        QueueSource::Prometheus(s) => {
            Arc::new(prometheus::PrometheusAdapter::new(s, credentials, http)?)
        }
        QueueSource::Github(_) => return Err(AdapterError::Unsupported("github")),
    })
}

/// `GET <url>` as shown in errors: the query string (which may be long PromQL) is
/// left out.
fn endpoint_name(url: &str) -> String {
    format!("GET {}", url.split('?').next().unwrap_or(url))
}

/// The error of a request that got no answer, with the innermost cause (reqwest's own
/// message repeats the URL and its query).
fn unreachable(endpoint: &str, e: &reqwest::Error) -> AdapterError {
    let detail = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            causes.push(s.to_string());
            source = s.source();
        }
        if causes.is_empty() {
            e.to_string()
        } else {
            causes.join(": ")
        }
    };
    AdapterError::Unreachable {
        endpoint: endpoint.to_owned(),
        detail,
    }
}

/// Most characters of a body quoted in an error.
const MAX_QUOTED: usize = 200;

/// The source's own words from an error body: its JSON `message` or `error` (with
/// `errorType`/`code` in front when present), else the start of the body.
fn error_text(body: &str) -> String {
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(body) {
        let text = ["message", "error"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()));
        let kind = ["errorType", "code"]
            .iter()
            .find_map(|k| map.get(*k).and_then(|v| v.as_str()));
        match (kind, text) {
            (Some(k), Some(t)) => return format!("{k}: {t}"),
            (None, Some(t)) => return t.to_owned(),
            _ => {}
        }
    }
    let body = body.trim();
    if body.is_empty() {
        "(empty body)".to_owned()
    } else {
        quote(body)
    }
}

/// `text` cut to [`MAX_QUOTED`] characters.
fn quote(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_QUOTED).collect();
    if text.chars().count() > MAX_QUOTED {
        out.push('…');
    }
    out
}

/// Sends `request` and answers the body of a 2xx response along with its headers;
/// any other status is an [`AdapterError::Status`] with the source's error text.
async fn fetch(
    endpoint: &str,
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::header::HeaderMap, String), AdapterError> {
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .text()
        .await
        .map_err(|e| unreachable(endpoint, &e))?;
    if !status.is_success() {
        return Err(AdapterError::Status {
            endpoint: endpoint.to_owned(),
            status: status.as_u16(),
            detail: error_text(&body),
        });
    }
    Ok((headers, body))
}

/// Parses a JSON body, or says it is not JSON.
fn parse_json(endpoint: &str, body: &str) -> Result<serde_json::Value, AdapterError> {
    serde_json::from_str(body).map_err(|e| AdapterError::BadAnswer {
        endpoint: endpoint.to_owned(),
        detail: format!("not JSON ({e}): {}", quote(body.trim())),
    })
}

/// A non-negative whole-number field of a JSON object, or why not.
fn count_field(
    endpoint: &str,
    object: &serde_json::Value,
    path: &str,
    name: &str,
) -> Result<u32, AdapterError> {
    let bad = |detail: String| AdapterError::BadAnswer {
        endpoint: endpoint.to_owned(),
        detail,
    };
    match object.get(name) {
        None | Some(serde_json::Value::Null) => Err(bad(format!("missing field {path}{name}"))),
        Some(v) => v
            .as_u64()
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            .ok_or_else(|| {
                bad(format!(
                    "field {path}{name}: expected a whole number >= 0, got {v}"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c: QueueCredentials = serde_json::from_value(serde_json::json!({
            "tc": {"client_id": "me", "access_token": "hunter2"}
        }))
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("me"), "{shown}");
        let token = c.secret("tc", "access_token", |e| e.access_token.as_ref());
        assert_eq!(token.unwrap().expose(), "hunter2");
        let missing = c.secret("tc", "agent_token", |e| e.agent_token.as_ref());
        assert!(missing.unwrap_err().to_string().contains("agent_token"));
        assert!(c.entry("bk").unwrap_err().to_string().contains("\"bk\""));
    }

    #[test]
    fn error_text_prefers_the_sources_own_words() {
        assert_eq!(
            error_text(r#"{"message": "Eeep! You forgot to pass an agent registration token"}"#),
            "Eeep! You forgot to pass an agent registration token"
        );
        assert_eq!(
            error_text(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            "bad_data: parse error"
        );
        assert_eq!(error_text("  "), "(empty body)");
        assert_eq!(error_text(&"x".repeat(500)).chars().count(), MAX_QUOTED + 1);
    }

    #[test]
    fn observations_estimate_arrivals_from_the_previous_level() {
        let o = Observation {
            pending: 7,
            running: 3,
            next_poll_after: None,
        };
        let at = Timestamp::from_unix_secs(1_800_000_000);
        assert_eq!(o.sample(at, Some(4)).arrivals, 6);
        assert_eq!(o.sample(at, Some(20)).arrivals, 0);
        assert_eq!(o.sample(at, None).arrivals, 0);
        assert_eq!(
            (o.sample(at, None).pending, o.sample(at, None).running),
            (7, 3)
        );
    }
}
