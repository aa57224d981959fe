//! Buildkite: the agent API's organization metrics, `GET <endpoint>/metrics` with
//! `Authorization: Token <agent token>` (what `buildkite-agent-metrics` reads).
//!
//! The answer has `jobs` totals (`scheduled`, `running`, `waiting`, `total`) and a
//! `queues` map with the same counts per agent queue; a queue with no jobs is absent
//! from the map (0), and an organization with no jobs at all may answer `"jobs": {}`.
//!
//! **pending = `scheduled`, running = `running`; `waiting` is not counted.** Buildkite
//! calls a job *scheduled* when it is ready for an agent, and *waiting* while it sits
//! behind a `wait` step or a dependency: no agent can take it yet, so capacity
//! launched for it would idle until its turn. This is what Buildkite's own
//! `buildkite-agent-scaler` does by default (its `INCLUDE_WAITING` is off). The docs'
//! sample (`scheduled: 5, waiting: 0`) cannot tell the two apart; the definitions do.
//!
//! The `Buildkite-Agent-Metrics-Poll-Duration` answer header (whole seconds) asks
//! clients to poll no more often; it becomes [`Observation::next_poll_after`]. A value
//! that does not parse is logged and ignored, like Buildkite's own collectors do.

use std::time::Duration;

use capstan_core::queue_source::BuildkiteSource;
use serde_json::Value;

use super::{
    Adapter, AdapterError, Observation, QueueCredentials, Secret, count_field, endpoint_name,
    fetch, parse_json,
};

/// The header in which Buildkite asks for a slower poll, in whole seconds.
pub const POLL_DURATION_HEADER: &str = "Buildkite-Agent-Metrics-Poll-Duration";

/// Longest wait the header is obeyed for: a day. A larger value is more likely a bug
/// than a wish, and a pool must not go unpolled for longer.
const MAX_POLL_DURATION_S: u64 = 86_400;

/// Polls one Buildkite organization's metrics, for one queue or all.
#[derive(Debug)]
pub struct BuildkiteAdapter {
    url: String,
    endpoint: String,
    queue: Option<String>,
    token: Secret,
    http: reqwest::Client,
}

impl BuildkiteAdapter {
    /// An adapter for `source`; its `credentials` entry must hold `agent_token`.
    pub fn new(
        source: &BuildkiteSource,
        credentials: &QueueCredentials,
        http: reqwest::Client,
    ) -> Result<Self, AdapterError> {
        let token = credentials
            .secret(&source.credentials, "agent_token", |e| {
                e.agent_token.as_ref()
            })?
            .clone();
        let url = format!("{}/metrics", source.endpoint.trim_end_matches('/'));
        Ok(Self {
            endpoint: endpoint_name(&url),
            url,
            queue: source.queue.clone(),
            token,
            http,
        })
    }
}

#[async_trait::async_trait]
impl Adapter for BuildkiteAdapter {
    async fn poll(&self) -> Result<Observation, AdapterError> {
        let request = self.http.get(&self.url).header(
            reqwest::header::AUTHORIZATION,
            format!("Token {}", self.token.expose()),
        );
        let (headers, body) = fetch(&self.endpoint, request).await?;
        let answer = parse_json(&self.endpoint, &body)?;
        let jobs = answer.get("jobs").ok_or_else(|| AdapterError::BadAnswer {
            endpoint: self.endpoint.clone(),
            detail: "missing field jobs".to_owned(),
        })?;
        let (counts, path) = match &self.queue {
            None => (jobs, "jobs.".to_owned()),
            Some(q) => match jobs.get("queues").and_then(|m| m.get(q)) {
                Some(counts) => (counts, format!("jobs.queues.{q}.")),
                None => (&Value::Null, String::new()),
            },
        };
        Ok(Observation {
            pending: count_or_zero(&self.endpoint, counts, &path, "scheduled")?,
            running: count_or_zero(&self.endpoint, counts, &path, "running")?,
            next_poll_after: poll_duration(&headers),
        })
    }
}

/// A count that Buildkite leaves out when it is zero (`"jobs": {}`, a queue without
/// jobs); present but not a whole number is an error.
fn count_or_zero(
    endpoint: &str,
    counts: &Value,
    path: &str,
    name: &str,
) -> Result<u32, AdapterError> {
    match counts.get(name) {
        None | Some(Value::Null) => Ok(0),
        Some(_) => count_field(endpoint, counts, path, name),
    }
}

/// The poll duration Buildkite asked for, if it sent one that parses.
fn poll_duration(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(POLL_DURATION_HEADER)?;
    match value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        Some(secs) => Some(Duration::from_secs(secs.min(MAX_POLL_DURATION_S))),
        None => {
            tracing::warn!(header = POLL_DURATION_HEADER, value = ?value, "ignoring a poll duration that is not whole seconds");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_duration_is_whole_seconds_or_ignored() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(poll_duration(&h), None);
        h.insert(POLL_DURATION_HEADER, "60".parse().unwrap());
        assert_eq!(poll_duration(&h), Some(Duration::from_secs(60)));
        h.insert(POLL_DURATION_HEADER, "1.5".parse().unwrap());
        assert_eq!(poll_duration(&h), None);
        h.insert(POLL_DURATION_HEADER, "-3".parse().unwrap());
        assert_eq!(poll_duration(&h), None);
        h.insert(POLL_DURATION_HEADER, "99999999999".parse().unwrap());
        assert_eq!(
            poll_duration(&h),
            Some(Duration::from_secs(MAX_POLL_DURATION_S))
        );
    }
}
