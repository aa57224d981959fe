//! Where a pool's demand comes from when capstan fetches it instead of being pushed:
//! the `queue:` field of a pool spec.
//!
//! A [`QueueSource`] names one task queue in a system people already run (a
//! Taskcluster task queue, a Buildkite agent queue, a Prometheus query, a GitHub
//! repository's Actions jobs) and how often to ask it. Secrets are never part of a
//! spec: `credentials` is the *name* of an entry in the server's configuration
//! (`[queue_credentials.<name>]`), which holds the tokens. The adapters that talk to
//! the sources live in the reconciler (`reconciler::queues`); the rules for every
//! field live with the rest of the spec's rules in [`crate::validate`].

use serde::{Deserialize, Serialize};

/// Default seconds between polls of a Taskcluster, Buildkite or Prometheus source.
pub const DEFAULT_POLL_INTERVAL_S: u64 = 15;
/// Default seconds between polls of a GitHub repository: the REST API allows 5,000
/// requests an hour per token, and webhooks carry the changes in between.
pub const DEFAULT_GITHUB_POLL_INTERVAL_S: u64 = 60;
/// Shortest poll interval allowed, in seconds.
pub const MIN_POLL_INTERVAL_S: u64 = 5;
/// Longest poll interval allowed, in seconds.
pub const MAX_POLL_INTERVAL_S: u64 = 3600;
/// Buildkite's agent API base URL, where `/metrics` is served.
pub const DEFAULT_BUILDKITE_ENDPOINT: &str = "https://agent.buildkite.com/v3";
/// GitHub's REST API base URL.
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// A task queue capstan polls for a pool's pending and running tasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum QueueSource {
    /// A Taskcluster task queue: `GET <root_url>/api/queue/v1/task-queues/<id>/counts`.
    Taskcluster(TaskclusterSource),
    /// A Buildkite organization's agent metrics: `GET <endpoint>/metrics`.
    Buildkite(BuildkiteSource),
    /// A Prometheus instant query: `GET <url>/api/v1/query`.
    Prometheus(PrometheusSource),
    /// GitHub Actions `workflow_job`s of one repository (webhooks, plus polling to
    /// catch missed deliveries).
    Github(GithubSource),
}

/// A Taskcluster task queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskclusterSource {
    /// The deployment's root URL, e.g. `https://community-tc.services.mozilla.com`.
    pub root_url: String,
    /// `<provisionerId>/<workerType>`, e.g. `proj-misc/ci`: 1..=38 of `A-Z a-z 0-9 - _`,
    /// a `/`, then 1..=38 of `a-z 0-9 -` starting with a letter and not ending in `-`
    /// (Taskcluster's own pattern).
    pub task_queue_id: String,
    /// Name of a `[queue_credentials.<name>]` entry with `client_id` and
    /// `access_token`; requests are then signed with Hawk. Default: none (the counts
    /// are read anonymously, which deployments may allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// Seconds between polls, 5..=3600. Default: 15.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_s: u64,
}

/// A Buildkite organization's agent queue(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BuildkiteSource {
    /// The agent queue (the `queue=` agent tag) whose jobs count. Default: none, i.e.
    /// the organization's totals over every queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Name of a `[queue_credentials.<name>]` entry with `agent_token` (the metrics API
    /// authenticates with an agent token). Required.
    pub credentials: String,
    /// Agent API base URL. Default: `https://agent.buildkite.com/v3`.
    #[serde(default = "default_buildkite_endpoint")]
    pub endpoint: String,
    /// Seconds between polls, 5..=3600; Buildkite's
    /// `Buildkite-Agent-Metrics-Poll-Duration` answer header can only lengthen it.
    /// Default: 15.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_s: u64,
}

/// A Prometheus (or compatible: Thanos, Mimir, VictoriaMetrics) instant query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PrometheusSource {
    /// Base URL of the server, e.g. `http://prometheus:9090`.
    pub url: String,
    /// PromQL whose value is the number of pending tasks; several series are summed,
    /// no series is 0.
    pub pending_query: String,
    /// PromQL whose value is the number of running tasks. Default: none (running 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_query: Option<String>,
    /// Name of a `[queue_credentials.<name>]` entry with `token`, sent as a bearer
    /// token. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// Seconds between polls, 5..=3600. Default: 15.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_s: u64,
}

/// GitHub Actions jobs of one repository that this pool's runners take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct GithubSource {
    /// `owner/name`.
    pub repository: String,
    /// A job is this pool's when its `runs-on` labels include every one of these.
    /// At least one.
    pub labels: Vec<String>,
    /// REST API base URL (GitHub Enterprise Server: `https://HOST/api/v3`). Default:
    /// `https://api.github.com`.
    #[serde(default = "default_github_api_url")]
    pub api_url: String,
    /// Name of a `[queue_credentials.<name>]` entry with `token`, used for polling.
    /// Default: none (anonymous, public repositories only, 60 requests an hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<String>,
    /// Seconds between polls, 5..=3600. Default: 60.
    #[serde(default = "default_github_poll_interval")]
    pub poll_interval_s: u64,
}

fn default_poll_interval() -> u64 {
    DEFAULT_POLL_INTERVAL_S
}

fn default_github_poll_interval() -> u64 {
    DEFAULT_GITHUB_POLL_INTERVAL_S
}

fn default_buildkite_endpoint() -> String {
    DEFAULT_BUILDKITE_ENDPOINT.to_owned()
}

fn default_github_api_url() -> String {
    DEFAULT_GITHUB_API_URL.to_owned()
}

impl QueueSource {
    /// The `type` written in specs: `taskcluster`, `buildkite`, `prometheus`, `github`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Taskcluster(_) => "taskcluster",
            Self::Buildkite(_) => "buildkite",
            Self::Prometheus(_) => "prometheus",
            Self::Github(_) => "github",
        }
    }

    /// Seconds between polls, as configured.
    pub fn poll_interval_s(&self) -> u64 {
        match self {
            Self::Taskcluster(s) => s.poll_interval_s,
            Self::Buildkite(s) => s.poll_interval_s,
            Self::Prometheus(s) => s.poll_interval_s,
            Self::Github(s) => s.poll_interval_s,
        }
    }

    /// The name of the credentials entry the source uses, if any.
    pub fn credentials(&self) -> Option<&str> {
        match self {
            Self::Taskcluster(s) => s.credentials.as_deref(),
            Self::Buildkite(s) => Some(&s.credentials),
            Self::Prometheus(s) => s.credentials.as_deref(),
            Self::Github(s) => s.credentials.as_deref(),
        }
    }
}

/// Checks Taskcluster's task-queue id pattern,
/// `^[a-zA-Z0-9-_]{1,38}/[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`, by hand (one pattern does
/// not justify a regex engine in the core crate).
pub fn check_task_queue_id(id: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected <provisionerId>/<workerType>: 1 to 38 of A-Z a-z 0-9 - _, \
        a '/', then 1 to 38 of a-z 0-9 - starting with a letter and not ending in '-'";
    let Some((provisioner, worker_type)) = id.split_once('/') else {
        return Err(format!("{EXPECTED}; got {id:?} (no '/')"));
    };
    let provisioner_ok = (1..=38).contains(&provisioner.len())
        && provisioner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let bytes = worker_type.as_bytes();
    let worker_type_ok = (1..=38).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.last() != Some(&b'-');
    if provisioner_ok && worker_type_ok {
        Ok(())
    } else {
        Err(format!("{EXPECTED}; got {id:?}"))
    }
}

/// Checks that `url` is an absolute `http` or `https` URL with a host, no query or
/// fragment (paths are appended to it) and no embedded credentials (secrets belong in
/// `[queue_credentials]`, not in a spec everyone can read).
pub fn check_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("expected an http:// or https:// URL, got {url:?}"))?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("expected a host after the scheme, got {url:?}"));
    }
    if authority.contains('@') {
        return Err(
            "must not hold a user or password: put secrets in [queue_credentials.<name>] \
             and name the entry in `credentials`"
                .to_owned(),
        );
    }
    if url.contains(['?', '#']) {
        return Err(format!(
            "expected a base URL without a query or fragment, got {url:?}"
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("must not contain spaces, got {url:?}"));
    }
    Ok(())
}

/// Checks a credentials entry name: 1..=64 of `A-Z a-z 0-9 - _` (a bare TOML key).
pub fn check_credentials_name(name: &str) -> Result<(), String> {
    if (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(format!(
            "expected the name of a [queue_credentials.<name>] entry in the server's config \
             (1 to 64 of A-Z a-z 0-9 - _), got {name:?}"
        ))
    }
}

/// Checks a GitHub `owner/name` repository.
pub fn check_repository(repo: &str) -> Result<(), String> {
    let ok_part = |p: &str| {
        (1..=100).contains(&p.len())
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(()),
        _ => Err(format!(
            "expected owner/name, e.g. octo-org/octo-repo, got {repo:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_queue_ids_follow_taskclusters_pattern() {
        for good in [
            "some/queue",
            "proj-misc/ci",
            "A_b-9/x",
            "p/a1",
            &format!("{}/{}", "P".repeat(38), "a".repeat(38)),
        ] {
            assert_eq!(check_task_queue_id(good), Ok(()), "{good}");
        }
        for bad in [
            "noslash",
            "/queue",
            "some/",
            "some/Queue",
            "some/1queue",
            "some/queue-",
            "so me/queue",
            "some/que/ue",
            &format!("{}/q", "p".repeat(39)),
            &format!("p/{}", "q".repeat(39)),
        ] {
            assert!(check_task_queue_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base_urls_are_http_without_secrets_or_queries() {
        assert!(check_base_url("https://tc.example.com").is_ok());
        assert!(check_base_url("http://127.0.0.1:9090/prom").is_ok());
        for bad in [
            "tc.example.com",
            "ftp://x",
            "https://",
            "https://u:p@x",
            "http://x/?q=1",
            "http://x/a b",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tag_selects_the_variant_and_defaults_apply() {
        let s: QueueSource = serde_json::from_value(serde_json::json!({
            "type": "buildkite", "credentials": "bk"
        }))
        .unwrap();
        let QueueSource::Buildkite(b) = &s else {
            panic!("{s:?}")
        };
        assert_eq!(b.endpoint, DEFAULT_BUILDKITE_ENDPOINT);
        assert_eq!(s.poll_interval_s(), 15);
        assert_eq!(s.credentials(), Some("bk"));
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(back["type"], "buildkite");
    }

    use crate::PoolSpec;

    const POOL: &str = "id: ci/q\nprovider: static\nmax_capacity: 4\n";

    /// The (field, message) of every problem with `queue` set to `yaml`.
    fn problems(yaml: &str) -> Vec<(String, String)> {
        let text = format!("{POOL}queue: {yaml}\n");
        match PoolSpec::from_yaml(&text) {
            Ok(spec) => panic!("accepted {yaml}: {spec:?}"),
            Err(e) => e.0.into_iter().map(|p| (p.field, p.message)).collect(),
        }
    }

    fn fields(yaml: &str) -> Vec<String> {
        problems(yaml).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn every_variant_is_read_with_its_defaults() {
        let spec = PoolSpec::from_yaml(&format!(
            "{POOL}queue: {{type: taskcluster, root_url: 'https://tc.example.com', task_queue_id: proj-misc/ci}}\n"
        ))
        .unwrap();
        assert_eq!(
            spec.queue,
            Some(QueueSource::Taskcluster(TaskclusterSource {
                root_url: "https://tc.example.com".into(),
                task_queue_id: "proj-misc/ci".into(),
                credentials: None,
                poll_interval_s: 15,
            }))
        );
        let spec = PoolSpec::from_yaml(&format!(
            "{POOL}queue: {{type: github, repository: o/r, labels: [self-hosted]}}\n"
        ))
        .unwrap();
        let Some(QueueSource::Github(g)) = &spec.queue else {
            panic!("{spec:?}")
        };
        assert_eq!(
            (g.api_url.as_str(), g.poll_interval_s),
            (DEFAULT_GITHUB_API_URL, 60)
        );
        // A spec built in code passes the same rules, and survives the store's JSON.
        spec.validate().unwrap();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(PoolSpec::from_json(&json).unwrap(), spec);
        let none = PoolSpec::from_yaml(POOL).unwrap();
        assert_eq!(none.queue, None);
        assert!(!serde_json::to_string(&none).unwrap().contains("queue"));
    }

    #[test]
    fn taskcluster_bad_fields_are_named() {
        let got = problems(
            "{type: taskcluster, root_url: tc.example.com, task_queue_id: Proj/CI, credentials: 'a b', poll_interval_s: 1, colour: red}",
        );
        let named: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            named,
            [
                "queue.root_url",
                "queue.task_queue_id",
                "queue.credentials",
                "queue.poll_interval_s",
                "queue.colour"
            ]
        );
        assert!(got[0].1.contains("http://"), "{got:?}");
        assert!(got[1].1.contains("<provisionerId>/<workerType>"), "{got:?}");
        assert!(got[2].1.contains("queue_credentials"), "{got:?}");
        assert!(got[3].1.contains("between 5 and 3600"), "{got:?}");
        assert!(got[4].1.contains("unknown field"), "{got:?}");
        assert_eq!(
            fields("{type: taskcluster}"),
            ["queue.root_url", "queue.task_queue_id"]
        );
    }

    #[test]
    fn buildkite_bad_fields_are_named() {
        assert_eq!(fields("{type: buildkite}"), ["queue.credentials"]);
        let got = problems(
            "{type: buildkite, queue: '', credentials: bk, endpoint: 'https://x@y', poll_interval_s: 3601, root_url: x}",
        );
        let named: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            named,
            [
                "queue.queue",
                "queue.endpoint",
                "queue.poll_interval_s",
                "queue.root_url"
            ]
        );
        assert!(got[1].1.contains("must not hold a user"), "{got:?}");
    }

    #[test]
    fn prometheus_bad_fields_are_named() {
        assert_eq!(
            fields("{type: prometheus}"),
            ["queue.url", "queue.pending_query"]
        );
        assert_eq!(
            fields(
                "{type: prometheus, url: 'http://p:9090?x=1', pending_query: ' ', running_query: '', poll_interval_s: -1}"
            ),
            [
                "queue.url",
                "queue.pending_query",
                "queue.running_query",
                "queue.poll_interval_s"
            ]
        );
    }

    #[test]
    fn github_bad_fields_are_named() {
        assert_eq!(
            fields("{type: github}"),
            ["queue.repository", "queue.labels"]
        );
        let got = problems(
            "{type: github, repository: just-a-name, labels: [], api_url: 'api.github.com', credentials: ''}",
        );
        let named: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            named,
            [
                "queue.repository",
                "queue.labels",
                "queue.api_url",
                "queue.credentials"
            ]
        );
        assert!(got[1].1.contains("at least one label"), "{got:?}");
        assert_eq!(
            fields("{type: github, repository: o/r, labels: [linux, '']}"),
            ["queue.labels"]
        );
    }

    #[test]
    fn the_type_is_required_and_known() {
        let got = problems("{type: jenkins, url: x}");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, "queue.type");
        assert!(got[0].1.contains("taskcluster, buildkite"), "{got:?}");
        assert_eq!(fields("{url: x}"), ["queue.type"]);
        assert_eq!(fields("[taskcluster]"), ["queue"]);
    }
}
