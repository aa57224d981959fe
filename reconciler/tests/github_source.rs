//! The GitHub Actions source's poll half against a local server on 127.0.0.1 speaking
//! the REST API's shapes (runs list, a run's jobs, a single job), whose jobs are the
//! `workflow_job` objects of octokit's real webhook payloads (the REST API's job has
//! the same shape) read in place from the shared wire directory (`$CAPSTAN_WIRE_DIR`,
//! else `<workspace>/../shared/wire`).
//!
//! What it guards: a `completed` delivery that never came is caught by the poll (the
//! run time is booked, the sample counts the completion); a `queued` delivery that
//! never came is caught too, and jobs without the pool's labels are left out; the
//! request headers GitHub asks for; a rate-limit answer stops polling until the limit
//! resets and shows as a pool error through the poller, which leaves the webhook-fed
//! demand alone.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use capstan_core::queue_source::GithubSource;
use capstan_core::{PoolId, PoolSpec, Timestamp};
use reconciler::queues::github::GithubAdapter;
use reconciler::queues::poller::ERROR_KIND;
use reconciler::queues::{
    Adapter, AdapterError, PollerConfig, QueueCredential, QueueCredentials, QueuePoller, Secret,
};
use serde_json::{Value, json};
use store::Store;
use store::github_jobs::{GithubDelivery, GithubJob, GithubJobStatus};

const REPO: &str = "Codertocat/Hello-World";
/// octokit's job id in the queued, in_progress and completed samples, and its run.
const JOB: i64 = 289_782_451;
const RUN: i64 = 2_202_229_078;
const OWNER: &str = "github-poller-test";

fn wire_dir() -> PathBuf {
    match std::env::var_os("CAPSTAN_WIRE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/wire"),
    }
}

/// The `workflow_job` object of a wire sample.
fn wire_job(name: &str) -> Value {
    let path = wire_dir().join("github").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("wire file {} (set CAPSTAN_WIRE_DIR): {e}", path.display()));
    let payload: Value = serde_json::from_str(&text).unwrap();
    payload["workflow_job"].clone()
}

/// The job as a webhook would have stored it.
fn stored_job(job: &Value) -> GithubJob {
    let time = |k: &str| job[k].as_str().map(|s| s.parse::<Timestamp>().unwrap());
    GithubJob {
        job_id: job["id"].as_i64().unwrap(),
        run_id: job["run_id"].as_i64().unwrap(),
        status: GithubJobStatus::from_github(job["status"].as_str().unwrap()).unwrap(),
        conclusion: job["conclusion"].as_str().map(str::to_owned),
        created_at: time("created_at").unwrap(),
        started_at: time("started_at"),
        completed_at: time("completed_at"),
    }
}

thread_local! {
    static NOW_MS: Cell<i64> = const { Cell::new(1_800_000_000_000) };
}

fn now() -> Timestamp {
    NOW_MS.with(|c| Timestamp::from_unix_ms(c.get()))
}

fn advance(secs: i64) {
    NOW_MS.with(|c| c.set(c.get() + secs * 1000));
}

/// What the fake GitHub serves, and what it was asked.
#[derive(Default)]
struct Github {
    /// Run ids by run status (`queued`, `in_progress`).
    runs: BTreeMap<String, Vec<i64>>,
    /// Jobs by run id.
    jobs: BTreeMap<i64, Vec<Value>>,
    /// Jobs by id, for `GET /actions/jobs/{id}` (404 when absent).
    single: BTreeMap<i64, Value>,
    /// When set, every request answers this rate-limit refusal: status and headers.
    limited: Option<(u16, Vec<(&'static str, String)>)>,
    /// Requests seen: path and query, and headers.
    seen: Vec<(String, HeaderMap)>,
}

type Shared = Arc<Mutex<Github>>;

fn json_response(status: u16, headers: &[(&'static str, String)], body: Value) -> Response {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Body::from(body.to_string())).unwrap()
}

async fn handle(gh: Shared, req: Request) -> Response {
    let uri = req.uri().clone();
    let mut g = gh.lock().unwrap();
    g.seen.push((uri.to_string(), req.headers().clone()));
    if let Some((status, headers)) = &g.limited {
        return json_response(
            *status,
            headers,
            json!({"message": "API rate limit exceeded for installation ID 1.",
                   "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}),
        );
    }
    let query: BTreeMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let prefix = format!("/repos/{REPO}/actions/");
    let Some(rest) = uri.path().strip_prefix(&prefix) else {
        return json_response(404, &[], json!({"message": "Not Found"}));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["runs"] => {
            let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let ids = g
                .runs
                .get(query.get("status").map_or("", String::as_str))
                .cloned()
                .unwrap_or_default();
            let runs: Vec<Value> = if page == 1 {
                ids.iter()
                    .map(|id| json!({"id": id, "name": "CI", "status": query["status"]}))
                    .collect()
            } else {
                Vec::new()
            };
            json_response(
                200,
                &[],
                json!({"total_count": ids.len(), "workflow_runs": runs}),
            )
        }
        ["runs", run, "jobs"] => {
            assert_eq!(query.get("filter").map(String::as_str), Some("latest"));
            let jobs = run
                .parse::<i64>()
                .ok()
                .and_then(|r| g.jobs.get(&r).cloned())
                .unwrap_or_default();
            json_response(200, &[], json!({"total_count": jobs.len(), "jobs": jobs}))
        }
        ["jobs", id] => match id.parse::<i64>().ok().and_then(|i| g.single.get(&i)) {
            Some(job) => json_response(200, &[], job.clone()),
            None => json_response(404, &[], json!({"message": "Not Found"})),
        },
        _ => json_response(404, &[], json!({"message": "Not Found"})),
    }
}

/// Serves `gh` on a loopback port; answers the API base URL.
async fn serve(gh: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |req: Request| handle(gh.clone(), req));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn source(api_url: &str, credentials: Option<&str>) -> GithubSource {
    GithubSource {
        repository: REPO.to_owned(),
        labels: vec!["ubuntu-latest".to_owned()],
        api_url: api_url.to_owned(),
        credentials: credentials.map(str::to_owned),
        poll_interval_s: 60,
    }
}

fn credentials() -> QueueCredentials {
    let mut c = QueueCredentials::default();
    c.0.insert(
        "gh".to_owned(),
        QueueCredential {
            token: Some(Secret::new("ghs_test-token")),
            ..QueueCredential::default()
        },
    );
    c
}

async fn store_with_pool(pool: &PoolId, api_url: &str) -> Store {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let spec: PoolSpec = serde_json::from_value(json!({
        "id": pool.as_str(),
        "provider": "fake",
        "max_capacity": 10,
        "launch_configs": [{"id": "small", "instance_type": "t"}],
        "queue": {"type": "github", "repository": REPO, "labels": ["ubuntu-latest"],
                  "api_url": api_url, "credentials": "gh"},
    }))
    .unwrap();
    store.create_pool(&spec, "test", now()).await.unwrap();
    store
}

fn adapter(store: &Store, pool: &PoolId, base: &str, creds: Option<&str>) -> GithubAdapter {
    GithubAdapter::new(
        pool.clone(),
        &source(base, creds),
        &credentials(),
        reqwest::Client::new(),
        store.clone(),
        now,
    )
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_missed_completed_delivery_is_caught_by_the_poll() {
    let gh = Shared::default();
    let base = serve(gh.clone()).await;
    let pool = PoolId::new("gh/linux").unwrap();
    let store = store_with_pool(&pool, &base).await;
    // Webhooks said queued, then in_progress; the completed delivery was lost.
    for (name, delivery) in [
        ("workflow_job.queued.payload.json", "d-1"),
        ("workflow_job.in_progress.payload.json", "d-2"),
    ] {
        let got = store
            .apply_github_delivery(
                delivery,
                std::slice::from_ref(&pool),
                &stored_job(&wire_job(name)),
                now(),
            )
            .await
            .unwrap();
        assert!(matches!(got, GithubDelivery::Applied(_)), "{got:?}");
        advance(1);
    }
    // GitHub lists no open run any more; the job alone says it completed.
    gh.lock().unwrap().single.insert(
        JOB,
        wire_job("workflow_job.completed.success.with-organization.payload.json"),
    );
    advance(60);
    let seen = adapter(&store, &pool, &base, Some("gh"))
        .poll()
        .await
        .unwrap();
    assert_eq!((seen.pending, seen.running), (0, 0));
    let jobs = store.github_jobs(&pool).await.unwrap();
    assert_eq!(jobs[0].status, GithubJobStatus::Completed);
    let runs = store
        .task_runs_recorded(&pool, Timestamp::from_unix_secs(0), now())
        .await
        .unwrap();
    // completed_at 10:38:16 − started_at 10:34:58 in the sample.
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1.duration_ms, 198_000);
    let samples = store
        .queue_samples(&pool, Timestamp::from_unix_secs(0), now().plus_secs(1))
        .await
        .unwrap();
    let last = samples.last().unwrap();
    assert_eq!(
        (last.at, last.pending, last.running, last.completions),
        (now(), 0, 0, 1)
    );

    // What was asked, and how.
    {
        let g = gh.lock().unwrap();
        let paths: Vec<&str> = g.seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/repos/Codertocat/Hello-World/actions/runs?status=queued&per_page=100&page=1",
                "/repos/Codertocat/Hello-World/actions/runs?status=in_progress&per_page=100&page=1",
                "/repos/Codertocat/Hello-World/actions/jobs/289782451",
            ]
        );
        for (path, headers) in &g.seen {
            let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
            assert_eq!(h("authorization"), "Bearer ghs_test-token", "{path}");
            assert_eq!(h("accept"), "application/vnd.github+json", "{path}");
            assert_eq!(h("x-github-api-version"), "2022-11-28", "{path}");
            assert!(h("user-agent").starts_with("capstan/"), "{path}");
        }
    }
    // Nothing changed since: a second poll writes no sample.
    advance(60);
    adapter(&store, &pool, &base, Some("gh"))
        .poll()
        .await
        .unwrap();
    let again = store
        .queue_samples(&pool, Timestamp::from_unix_secs(0), now().plus_secs(1))
        .await
        .unwrap();
    assert_eq!(again.len(), samples.len());
}

#[tokio::test(flavor = "current_thread")]
async fn a_missed_queued_delivery_is_caught_and_other_labels_are_left_out() {
    let gh = Shared::default();
    let base = serve(gh.clone()).await;
    let pool = PoolId::new("gh/linux").unwrap();
    let store = store_with_pool(&pool, &base).await;
    let queued = wire_job("workflow_job.queued.payload.json");
    let mut windows = queued.clone();
    windows["id"] = json!(JOB + 1);
    windows["labels"] = json!(["windows-latest"]);
    let mut running = wire_job("workflow_job.in_progress.payload.json");
    running["id"] = json!(JOB + 2);
    {
        let mut g = gh.lock().unwrap();
        g.runs.insert("queued".into(), vec![RUN]);
        g.runs.insert("in_progress".into(), vec![RUN + 1]);
        g.jobs.insert(RUN, vec![queued, windows]);
        g.jobs.insert(RUN + 1, vec![running]);
    }
    let seen = adapter(&store, &pool, &base, None).poll().await.unwrap();
    assert_eq!((seen.pending, seen.running), (1, 1));
    let jobs = store.github_jobs(&pool).await.unwrap();
    let ids: Vec<(i64, GithubJobStatus)> = jobs.iter().map(|j| (j.job_id, j.status)).collect();
    assert_eq!(
        ids,
        [
            (JOB, GithubJobStatus::Queued),
            (JOB + 2, GithubJobStatus::InProgress)
        ]
    );
    let samples = store
        .queue_samples(&pool, Timestamp::from_unix_secs(0), now().plus_secs(1))
        .await
        .unwrap();
    let s = samples.last().unwrap();
    assert_eq!((s.pending, s.running, s.arrivals), (1, 1, 2));
    // Without credentials, no Authorization header (public repositories).
    let g = gh.lock().unwrap();
    assert!(g.seen.iter().all(|(_, h)| h.get("authorization").is_none()));
    assert_eq!(g.seen.len(), 4, "two run lists and two runs' jobs");
}

#[tokio::test(flavor = "current_thread")]
async fn a_rate_limit_stops_polling_until_it_resets_and_shows_as_a_pool_error() {
    let gh = Shared::default();
    let base = serve(gh.clone()).await;
    let pool = PoolId::new("gh/linux").unwrap();
    let store = store_with_pool(&pool, &base).await;
    // A webhook-fed queued job: the demand the pool has before the polls.
    store
        .apply_github_delivery(
            "d-1",
            std::slice::from_ref(&pool),
            &stored_job(&wire_job("workflow_job.queued.payload.json")),
            now(),
        )
        .await
        .unwrap();
    let reset_s = now().unix_ms() / 1000 + 120;
    gh.lock().unwrap().limited = Some((
        403,
        vec![
            ("x-ratelimit-limit", "5000".into()),
            ("x-ratelimit-remaining", "0".into()),
            ("x-ratelimit-reset", reset_s.to_string()),
        ],
    ));
    store.acquire_leases(OWNER, 600_000).await.unwrap();
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let mut poller = QueuePoller::new(
        store.clone(),
        credentials(),
        PollerConfig::new(OWNER),
        now,
        Arc::new(move |_: &PoolId| {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();

    advance(1);
    let report = poller.pass().await.unwrap();
    assert!(report.polled.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let message = &report.failed[0].1;
    assert!(message.starts_with("github source: GET "), "{message}");
    assert!(message.contains("HTTP 403"), "{message}");
    assert!(message.contains("API rate limit exceeded"), "{message}");
    assert!(message.contains("rate limited"), "{message}");
    assert_eq!(
        gh.lock().unwrap().seen.len(),
        1,
        "the first refusal stops the poll"
    );
    // The webhook-fed demand stays: no fallback sample over it.
    let samples = store
        .queue_samples(&pool, Timestamp::from_unix_secs(0), now().plus_secs(1))
        .await
        .unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].pending, 1);

    // Polls before the reset fail at once with the same error, without asking
    // GitHub: one pool error, counted.
    advance(60);
    let report = poller.pass().await.unwrap();
    assert_eq!(report.failed.len(), 1);
    assert_eq!(gh.lock().unwrap().seen.len(), 1);
    let errors = store.list_pool_errors(&pool).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].kind.as_str(), errors[0].count), (ERROR_KIND, 2));

    // After the reset, polling resumes; the queued job is still queued at GitHub, so
    // the pool keeps its demand and its backlog wakes the loop.
    gh.lock().unwrap().limited = None;
    {
        let mut g = gh.lock().unwrap();
        g.runs.insert("queued".into(), vec![RUN]);
        g.jobs
            .insert(RUN, vec![wire_job("workflow_job.queued.payload.json")]);
    }
    advance(60);
    let report = poller.pass().await.unwrap();
    assert_eq!(report.polled, std::slice::from_ref(&pool), "{report:?}");
    assert!(gh.lock().unwrap().seen.len() > 1);
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn a_secondary_limit_honours_retry_after_and_a_missing_token_is_named() {
    let gh = Shared::default();
    let base = serve(gh.clone()).await;
    let pool = PoolId::new("gh/linux").unwrap();
    let store = store_with_pool(&pool, &base).await;
    gh.lock().unwrap().limited = Some((429, vec![("retry-after", "30".into())]));
    let a = adapter(&store, &pool, &base, Some("gh"));
    let e = a.poll().await.unwrap_err();
    assert!(
        matches!(&e, AdapterError::Status { status: 429, .. }),
        "{e}"
    );
    advance(29);
    assert_eq!(a.poll().await.unwrap_err().to_string(), e.to_string());
    assert_eq!(gh.lock().unwrap().seen.len(), 1);
    advance(1);
    gh.lock().unwrap().limited = None;
    assert!(a.poll().await.is_ok());

    // A plain 403 (a token without access) is reported, not waited out.
    gh.lock().unwrap().limited = Some((403, vec![]));
    let before = gh.lock().unwrap().seen.len();
    assert!(a.poll().await.is_err());
    assert!(a.poll().await.is_err());
    assert_eq!(gh.lock().unwrap().seen.len(), before + 2);

    let missing = GithubAdapter::new(
        pool.clone(),
        &source(&base, Some("nope")),
        &credentials(),
        reqwest::Client::new(),
        store.clone(),
        now,
    )
    .unwrap_err();
    assert!(missing.to_string().contains("\"nope\""), "{missing}");
}
