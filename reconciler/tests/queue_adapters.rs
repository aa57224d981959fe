//! Queue adapters against local HTTP servers on 127.0.0.1 that answer with the real
//! payloads in the shared wire directory (`$CAPSTAN_WIRE_DIR`, else
//! `<workspace>/../shared/wire`; see its SOURCE.md for where each file comes from),
//! including the sources' error answers; and the poller on SQLite with a source that
//! fails: one deduplicated pool error, the last demand kept until the bound, then the
//! workers' busy slots.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use capstan_core::queue_source::{BuildkiteSource, PrometheusSource, TaskclusterSource};
use capstan_core::{PoolId, PoolSpec, QueueSource, Timestamp, Worker, WorkerId, WorkerState};
use hmac::{Hmac, Mac};
use reconciler::queues::buildkite::BuildkiteAdapter;
use reconciler::queues::prometheus::PrometheusAdapter;
use reconciler::queues::taskcluster::TaskclusterAdapter;
use reconciler::queues::{
    Adapter, Observation, PollerConfig, QueueCredential, QueueCredentials, QueuePoller, Secret,
};
use sha2::Sha256;
use store::Store;

// ---------------------------------------------------------------------------------
// The wire files and a canned-answer server.

fn wire_dir() -> PathBuf {
    match std::env::var_os("CAPSTAN_WIRE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/wire"),
    }
}

fn wire(name: &str) -> String {
    let path = wire_dir().join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("wire file {} (set CAPSTAN_WIRE_DIR): {e}", path.display()))
}

/// One canned answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn answer(status: u16, body: impl Into<String>) -> Answer {
    Answer {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
    }
}

/// A request the server saw.
#[derive(Clone, Debug)]
struct Seen {
    path_and_query: String,
    headers: HeaderMap,
}

/// Answers by path, or by path and the `query` parameter (Prometheus) when an answer
/// is registered for that pair; records every request.
#[derive(Clone, Default)]
struct Canned {
    answers: Arc<Mutex<HashMap<String, Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Canned {
    fn set(&self, key: &str, a: Answer) {
        self.answers.lock().unwrap().insert(key.to_owned(), a);
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve(canned: Canned) -> String {
    let state = canned.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let state = state.clone();
        async move {
            let uri = req.uri().clone();
            state.seen.lock().unwrap().push(Seen {
                path_and_query: uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: req.headers().clone(),
            });
            let promql = uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("query="))
                    .map(|v| {
                        // Form encoding: `+` is a space.
                        let v = v.replace('+', " ");
                        percent_decode(&v)
                    })
            });
            let answers = state.answers.lock().unwrap();
            let found = promql
                .and_then(|q| answers.get(&format!("{}|{q}", uri.path())))
                .or_else(|| answers.get(uri.path()))
                .cloned();
            let a = found.unwrap_or_else(|| answer(404, r#"{"message":"no such route"}"#));
            let mut r = Response::builder().status(StatusCode::from_u16(a.status).unwrap());
            for (k, v) in a.headers {
                r = r.header(k, v);
            }
            r.body(Body::from(a.body)).unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn credentials(entries: &[(&str, QueueCredential)]) -> QueueCredentials {
    QueueCredentials(
        entries
            .iter()
            .map(|(n, c)| ((*n).to_owned(), c.clone()))
            .collect(),
    )
}

fn wall_clock() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    Timestamp::from_unix_ms(i64::try_from(ms).unwrap())
}

fn levels(o: &Observation) -> (u32, u32) {
    (o.pending, o.running)
}

// ---------------------------------------------------------------------------------
// Taskcluster.

const TC_PATH: &str = "/api/queue/v1/task-queues/some/queue/counts";

fn taskcluster(root: &str, creds: Option<&str>) -> TaskclusterSource {
    TaskclusterSource {
        root_url: root.to_owned(),
        task_queue_id: "some/queue".into(),
        credentials: creds.map(str::to_owned),
        poll_interval_s: 15,
    }
}

#[tokio::test]
async fn taskcluster_counts_are_pending_and_claimed_tasks() {
    let canned = Canned::default();
    let root = serve(canned.clone()).await;
    canned.set(
        TC_PATH,
        answer(
            200,
            wire("taskcluster/task-queue-counts-response.example.CONSTRUCTED.json"),
        ),
    );
    let a = TaskclusterAdapter::new(
        &taskcluster(&root, None),
        &QueueCredentials::default(),
        http(),
        wall_clock,
    )
    .unwrap();
    // The example: pendingTasks 2, claimedTasks 0.
    assert_eq!(levels(&a.poll().await.unwrap()), (2, 0));
    let seen = canned.last();
    assert_eq!(seen.path_and_query, TC_PATH);
    assert!(
        seen.headers.get("authorization").is_none(),
        "anonymous without credentials"
    );

    // Counts that differ, so pending and running cannot be swapped unnoticed.
    let mut v: serde_json::Value = serde_json::from_str(&wire(
        "taskcluster/task-queue-counts-response.example.CONSTRUCTED.json",
    ))
    .unwrap();
    v["pendingTasks"] = 7.into();
    v["claimedTasks"] = 3.into();
    canned.set(TC_PATH, answer(200, v.to_string()));
    assert_eq!(levels(&a.poll().await.unwrap()), (7, 3));
}

#[tokio::test]
async fn taskcluster_errors_say_what_the_queue_answered() {
    let canned = Canned::default();
    let root = serve(canned.clone()).await;
    let a = TaskclusterAdapter::new(
        &taskcluster(&root, None),
        &QueueCredentials::default(),
        http(),
        wall_clock,
    )
    .unwrap();

    // Taskcluster's error body: {code, message}.
    canned.set(
        TC_PATH,
        answer(
            500,
            r#"{"code":"InternalServerError","message":"Internal Server Error, incidentId 1"}"#,
        ),
    );
    let e = a.poll().await.unwrap_err().to_string();
    assert!(e.contains("HTTP 500"), "{e}");
    assert!(
        e.contains("InternalServerError: Internal Server Error"),
        "{e}"
    );
    assert!(e.contains(&format!("GET {root}{TC_PATH}")), "{e}");

    // The real example with one required key taken out.
    let mut v: serde_json::Value = serde_json::from_str(&wire(
        "taskcluster/task-queue-counts-response.example.CONSTRUCTED.json",
    ))
    .unwrap();
    v.as_object_mut().unwrap().remove("pendingTasks");
    canned.set(TC_PATH, answer(200, v.to_string()));
    let e = a.poll().await.unwrap_err().to_string();
    assert!(e.ends_with("missing field pendingTasks"), "{e}");

    v["pendingTasks"] = (-1).into();
    canned.set(TC_PATH, answer(200, v.to_string()));
    let e = a.poll().await.unwrap_err().to_string();
    assert!(
        e.contains("pendingTasks: expected a whole number >= 0"),
        "{e}"
    );

    canned.set(TC_PATH, answer(200, "<html>maintenance</html>"));
    let e = a.poll().await.unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");
    assert!(e.contains("<html>maintenance"), "{e}");

    // Nobody listening.
    let gone = TaskclusterAdapter::new(
        &taskcluster("http://127.0.0.1:9", None),
        &QueueCredentials::default(),
        http(),
        wall_clock,
    )
    .unwrap();
    let e = gone.poll().await.unwrap_err().to_string();
    assert!(e.contains("no answer"), "{e}");
}

/// Verifies a Hawk header the way a Hawk server does: rebuild the normalized string
/// from the request and compare MACs. Written from the Hawk spec, independently of the
/// adapter's code.
fn verify_hawk(
    header: &str,
    key: &str,
    method: &str,
    path_and_query: &str,
    host: &str,
    port: u16,
) -> (String, i64) {
    let rest = header.strip_prefix("Hawk ").expect("a Hawk header");
    let mut attrs = HashMap::new();
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').unwrap();
        attrs.insert(k.to_owned(), v.trim_matches('"').to_owned());
    }
    let normalized = format!(
        "hawk.1.header\n{}\n{}\n{method}\n{path_and_query}\n{host}\n{port}\n\n\n",
        attrs["ts"], attrs["nonce"]
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(normalized.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(attrs["mac"], expected, "MAC of {normalized:?}");
    (attrs["id"].clone(), attrs["ts"].parse().unwrap())
}

#[tokio::test]
async fn taskcluster_requests_are_hawk_signed_with_the_configured_credentials() {
    let canned = Canned::default();
    let root = serve(canned.clone()).await;
    canned.set(
        TC_PATH,
        answer(
            200,
            wire("taskcluster/task-queue-counts-response.example.CONSTRUCTED.json"),
        ),
    );
    let creds = credentials(&[(
        "tc",
        QueueCredential {
            client_id: Some("project/capstan".into()),
            access_token: Some(Secret::new("tc-access-token-0123456789")),
            ..Default::default()
        },
    )]);
    let a = TaskclusterAdapter::new(&taskcluster(&root, Some("tc")), &creds, http(), wall_clock)
        .unwrap();
    assert!(!format!("{a:?}").contains("tc-access-token"), "{a:?}");
    a.poll().await.unwrap();
    a.poll().await.unwrap();
    let seen = canned.seen.lock().unwrap().clone();
    let port: u16 = root.rsplit(':').next().unwrap().parse().unwrap();
    let mut nonces = Vec::new();
    for s in &seen {
        let header = s.headers["authorization"].to_str().unwrap();
        let (id, ts) = verify_hawk(
            header,
            "tc-access-token-0123456789",
            "GET",
            &s.path_and_query,
            "127.0.0.1",
            port,
        );
        assert_eq!(id, "project/capstan");
        let now = wall_clock().unix_ms() / 1000;
        assert!((now - ts).abs() < 60, "ts {ts} vs now {now}");
        nonces.push(header.split("nonce=\"").nth(1).unwrap().to_owned());
    }
    assert_ne!(nonces[0], nonces[1], "a fresh nonce per request");

    // The wrong key does not verify: the check above can fail.
    let header = seen[0].headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned();
    let wrong = std::panic::catch_unwind(|| {
        verify_hawk(&header, "another-key", "GET", TC_PATH, "127.0.0.1", port)
    });
    assert!(wrong.is_err());

    // An entry without the access token is an error before any request.
    let half = credentials(&[(
        "tc",
        QueueCredential {
            client_id: Some("project/capstan".into()),
            ..Default::default()
        },
    )]);
    let e = TaskclusterAdapter::new(&taskcluster(&root, Some("tc")), &half, http(), wall_clock)
        .unwrap_err()
        .to_string();
    assert!(e.contains("access_token"), "{e}");
    let e = TaskclusterAdapter::new(&taskcluster(&root, Some("nope")), &half, http(), wall_clock)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"nope\""), "{e}");
}

// ---------------------------------------------------------------------------------
// Buildkite.

fn buildkite(endpoint: &str, queue: Option<&str>) -> (BuildkiteSource, QueueCredentials) {
    (
        BuildkiteSource {
            queue: queue.map(str::to_owned),
            credentials: "bk".into(),
            endpoint: format!("{endpoint}/v3"),
            poll_interval_s: 15,
        },
        credentials(&[(
            "bk",
            QueueCredential {
                agent_token: Some(Secret::new("bk-agent-token")),
                ..Default::default()
            },
        )]),
    )
}

async fn buildkite_levels(
    canned: &Canned,
    base: &str,
    file: &str,
    queue: Option<&str>,
) -> (u32, u32) {
    canned.set("/v3/metrics", answer(200, wire(file)));
    let (source, creds) = buildkite(base, queue);
    let a = BuildkiteAdapter::new(&source, &creds, http()).unwrap();
    levels(&a.poll().await.unwrap())
}

#[tokio::test]
async fn buildkite_pending_is_scheduled_jobs_for_the_queue_or_all() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    let docs = "buildkite/metrics.buildkite-docs.agent_api-metrics.json";
    assert_eq!(buildkite_levels(&canned, &base, docs, None).await, (5, 0));
    assert_eq!(
        buildkite_levels(&canned, &base, docs, Some("default")).await,
        (5, 0)
    );
    let seen = canned.last();
    assert_eq!(seen.path_and_query, "/v3/metrics");
    assert_eq!(seen.headers["authorization"], "Token bk-agent-token");

    let some =
        "buildkite/metrics.collector_test.TestCollectorWithSomeJobsAndAgentsForAllQueues.json";
    assert_eq!(buildkite_levels(&canned, &base, some, None).await, (3, 1));
    assert_eq!(
        buildkite_levels(&canned, &base, some, Some("default")).await,
        (2, 1)
    );
    // `deploy` has jobs but no agents entry.
    assert_eq!(
        buildkite_levels(&canned, &base, some, Some("deploy")).await,
        (1, 0)
    );
    // A queue with no jobs is absent from the map.
    assert_eq!(
        buildkite_levels(&canned, &base, some, Some("gpu")).await,
        (0, 0)
    );

    let none = "buildkite/metrics.collector_test.TestCollectorWithNoJobsForAllQueues.json";
    assert_eq!(buildkite_levels(&canned, &base, none, None).await, (0, 0));
    assert_eq!(
        buildkite_levels(&canned, &base, none, Some("default")).await,
        (0, 0)
    );
    let empty = "buildkite/metrics.collector_test.TestCollectorWithEmptyResponseForAllQueues.json";
    assert_eq!(buildkite_levels(&canned, &base, empty, None).await, (0, 0));
}

#[tokio::test]
async fn buildkite_waiting_jobs_are_not_pending() {
    // The docs' sample with jobs behind a wait step: they cannot run yet.
    let mut v: serde_json::Value = serde_json::from_str(&wire(
        "buildkite/metrics.buildkite-docs.agent_api-metrics.json",
    ))
    .unwrap();
    v["jobs"]["waiting"] = 4.into();
    v["jobs"]["queues"]["default"]["waiting"] = 4.into();
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    canned.set("/v3/metrics", answer(200, v.to_string()));
    let (source, creds) = buildkite(&base, Some("default"));
    let a = BuildkiteAdapter::new(&source, &creds, http()).unwrap();
    assert_eq!(levels(&a.poll().await.unwrap()), (5, 0));
}

#[tokio::test]
async fn buildkite_errors_and_the_poll_duration_header() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    let (source, creds) = buildkite(&base, None);
    let a = BuildkiteAdapter::new(&source, &creds, http()).unwrap();

    canned.set(
        "/v3/metrics",
        answer(
            401,
            wire("buildkite/error-401.scaler_buildkite_test.TestUnauthorizedResponse.json"),
        ),
    );
    let e = a.poll().await.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 401: Eeep! You forgot to pass an agent registration token"),
        "{e}"
    );
    assert!(!e.contains("bk-agent-token"), "{e}");

    // The per-queue endpoint's answer has no `jobs` at all: not a /metrics answer.
    canned.set(
        "/v3/metrics",
        answer(
            200,
            wire("buildkite/metrics-queue.scaler_buildkite_test.TestHappy.json"),
        ),
    );
    let e = a.poll().await.unwrap_err().to_string();
    assert!(e.ends_with("missing field jobs"), "{e}");

    let docs = wire("buildkite/metrics.buildkite-docs.agent_api-metrics.json");
    let mut with_header = answer(200, docs.clone());
    with_header
        .headers
        .push(("Buildkite-Agent-Metrics-Poll-Duration", "60".into()));
    canned.set("/v3/metrics", with_header);
    let o = a.poll().await.unwrap();
    assert_eq!(o.next_poll_after, Some(Duration::from_secs(60)));
    assert_eq!(levels(&o), (5, 0));

    let mut garbled = answer(200, docs.clone());
    garbled
        .headers
        .push(("Buildkite-Agent-Metrics-Poll-Duration", "soon".into()));
    canned.set("/v3/metrics", garbled);
    assert_eq!(a.poll().await.unwrap().next_poll_after, None);

    let e = BuildkiteAdapter::new(&source, &QueueCredentials::default(), http())
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"bk\""), "{e}");
}

// ---------------------------------------------------------------------------------
// Prometheus.

fn prometheus(url: &str, running: Option<&str>, creds: Option<&str>) -> PrometheusSource {
    PrometheusSource {
        url: url.to_owned(),
        pending_query: "sum(ci_jobs_pending)".into(),
        running_query: running.map(str::to_owned),
        credentials: creds.map(str::to_owned),
        poll_interval_s: 15,
    }
}

const Q: &str = "/api/v1/query";

async fn prom_poll(
    canned: &Canned,
    base: &str,
    status: u16,
    body: String,
) -> Result<Observation, String> {
    canned.set(Q, answer(status, body));
    let a = PrometheusAdapter::new(
        &prometheus(base, None, None),
        &QueueCredentials::default(),
        http(),
    )
    .unwrap();
    a.poll().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn prometheus_vectors_are_summed_and_empty_is_zero() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    // Values "1" and "0".
    let docs = prom_poll(
        &canned,
        &base,
        200,
        wire("prometheus/query.vector.docs-api-md.json"),
    )
    .await;
    assert_eq!(levels(&docs.unwrap()), (1, 0));
    // Values "1" and "2".
    let codec = prom_poll(
        &canned,
        &base,
        200,
        wire("prometheus/query.vector.json_codec_test.json"),
    )
    .await;
    assert_eq!(levels(&codec.unwrap()), (3, 0));
    // Values "1" and "1".
    let golden = prom_poll(
        &canned,
        &base,
        200,
        wire("prometheus/query.vector.openapi_3.1_golden.json"),
    )
    .await;
    assert_eq!(levels(&golden.unwrap()), (2, 0));
    let empty = prom_poll(
        &canned,
        &base,
        200,
        wire("prometheus/query.empty-vector.promtool_main_test.json"),
    )
    .await;
    assert_eq!(levels(&empty.unwrap()), (0, 0));
    let seen = canned.last();
    assert_eq!(
        seen.path_and_query,
        "/api/v1/query?query=sum%28ci_jobs_pending%29"
    );
    // A scalar (the documented `[<time>, "<value>"]` result shape).
    let scalar = prom_poll(
        &canned,
        &base,
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[1435781451.781,"4.4"]}}"#
            .into(),
    )
    .await;
    assert_eq!(levels(&scalar.unwrap()), (4, 0));
}

#[tokio::test]
async fn prometheus_running_query_and_bearer_token() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    canned.set(
        &format!("{Q}|sum(ci_jobs_pending)"),
        answer(200, wire("prometheus/query.vector.json_codec_test.json")),
    );
    canned.set(
        &format!("{Q}|sum(ci_jobs_running)"),
        answer(200, wire("prometheus/query.vector.docs-api-md.json")),
    );
    let creds = credentials(&[(
        "prom",
        QueueCredential {
            token: Some(Secret::new("prom-token")),
            ..Default::default()
        },
    )]);
    let a = PrometheusAdapter::new(
        &prometheus(&base, Some("sum(ci_jobs_running)"), Some("prom")),
        &creds,
        http(),
    )
    .unwrap();
    assert_eq!(levels(&a.poll().await.unwrap()), (3, 1));
    assert_eq!(canned.count(), 2);
    assert_eq!(canned.last().headers["authorization"], "Bearer prom-token");
}

#[tokio::test]
async fn prometheus_errors_nan_and_infinities_are_errors() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    let e = prom_poll(
        &canned,
        &base,
        200,
        wire("prometheus/query.vector-NaN.CONSTRUCTED.json"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("NaN, not a count"), "{e}");
    let e = prom_poll(
        &canned,
        &base,
        200,
        r#"{"status":"success","data":{"resultType":"scalar","result":[0,"+Inf"]}}"#.into(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("+Inf, not a count"), "{e}");
    // The codec's bare point is not a query result.
    let e = prom_poll(
        &canned,
        &base,
        200,
        wire("prometheus/point.NegInf.json_codec_test.json"),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("field data: expected {resultType, result}"),
        "{e}"
    );

    let e = prom_poll(
        &canned,
        &base,
        400,
        wire("prometheus/error.bad_data.CONSTRUCTED.json"),
    )
    .await
    .unwrap_err();
    assert!(
        e.contains("HTTP 400: bad_data: invalid parameter \"time\""),
        "{e}"
    );
    let e = prom_poll(
        &canned,
        &base,
        503,
        wire("prometheus/error.timeout.api_test.TestRespondError.json"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("HTTP 503: timeout: message"), "{e}");
    let e = prom_poll(
        &canned,
        &base,
        500,
        wire("prometheus/error.internal.openapi_3.1_golden.tsdbNotReady.FROM-YAML.json"),
    )
    .await
    .unwrap_err();
    assert!(e.contains("HTTP 500: internal: TSDB not ready"), "{e}");
    let e = prom_poll(
        &canned,
        &base,
        422,
        r#"{"status":"error","errorType":"execution","error":"expanding series: too many samples"}"#.into(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("HTTP 422: execution: expanding series"), "{e}");
    // A proxy's answer that is no envelope.
    let e = prom_poll(&canned, &base, 502, "Bad Gateway".into())
        .await
        .unwrap_err();
    assert!(e.contains("HTTP 502: Bad Gateway"), "{e}");
    let e = prom_poll(
        &canned,
        &base,
        200,
        r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#.into(),
    )
    .await
    .unwrap_err();
    assert!(e.contains("answered a matrix"), "{e}");
}

// ---------------------------------------------------------------------------------
// The poller.

thread_local! {
    static NOW_MS: Cell<i64> = const { Cell::new(1_800_000_000_000) };
}

fn now() -> Timestamp {
    NOW_MS.with(|c| Timestamp::from_unix_ms(c.get()))
}

fn advance(secs: i64) {
    NOW_MS.with(|c| c.set(c.get() + secs * 1000));
}

const OWNER: &str = "poller-test";

async fn worker(store: &Store, pool: &PoolId, n: u32, state: WorkerState, busy: u32) {
    let mut w = Worker::requested(
        WorkerId::from_string(format!("w-{n}")),
        pool.clone(),
        capstan_core::ProviderKind::Fake,
        Some("a".into()),
        4,
        format!("tok-{n}"),
        now(),
    );
    w.transition(WorkerState::Booting, now()).unwrap();
    w.transition(WorkerState::Ready, now()).unwrap();
    if state == WorkerState::Draining {
        w.transition(WorkerState::Draining, now()).unwrap();
    }
    w.busy_slots = busy;
    store.insert_worker(&w).await.unwrap();
}

async fn latest(store: &Store, pool: &PoolId) -> capstan_core::QueueSample {
    *store
        .queue_samples(pool, now().plus_secs(-3600), now().plus_secs(1))
        .await
        .unwrap()
        .last()
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn poller_keeps_the_last_demand_while_the_source_fails_then_trusts_the_workers() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let spec = PoolSpec::from_yaml(&format!(
        "id: ci/polled\nprovider: fake\nmax_capacity: 20\nlaunch_configs: [{{id: a, instance_type: small, capacity: 4}}]\n\
         queue: {{type: prometheus, url: '{base}', pending_query: pending, running_query: running, poll_interval_s: 15}}\n"
    ))
    .unwrap();
    let pool = spec.id.clone();
    store.create_pool(&spec, "test", now()).await.unwrap();
    // A pool without a source and one held by nobody are not polled.
    let quiet = PoolSpec::from_yaml("id: ci/quiet\nprovider: fake\nmax_capacity: 2\nlaunch_configs: [{id: a, instance_type: small}]\n").unwrap();
    store.create_pool(&quiet, "test", now()).await.unwrap();
    store.acquire_leases(OWNER, 600_000).await.unwrap();

    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = wakes.clone();
    let mut cfg = PollerConfig::new(OWNER);
    cfg.stale_after = Duration::from_secs(600);
    let mut poller = QueuePoller::new(
        store.clone(),
        QueueCredentials::default(),
        cfg,
        now,
        Arc::new(move |_: &PoolId| {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .unwrap();

    let ok = |pending: &str| {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{pending}"]}}]}}}}"#
        )
    };
    canned.set(&format!("{Q}|pending"), answer(200, ok("6")));
    canned.set(&format!("{Q}|running"), answer(200, ok("2")));
    let report = poller.pass().await.unwrap();
    assert_eq!(report.polled, std::slice::from_ref(&pool));
    let s = latest(&store, &pool).await;
    assert_eq!((s.at, s.pending, s.running, s.arrivals), (now(), 6, 2, 0));
    assert_eq!(
        wakes.load(Ordering::SeqCst),
        1,
        "6 pending, no idle slot: woken"
    );

    // Not due yet: nothing polled.
    advance(5);
    let requests = canned.count();
    assert_eq!(poller.pass().await.unwrap(), Default::default());
    assert_eq!(canned.count(), requests);

    // Due again: the queue grew by 3 (arrivals estimated from the levels).
    advance(10);
    canned.set(&format!("{Q}|pending"), answer(200, ok("9")));
    poller.pass().await.unwrap();
    let s = latest(&store, &pool).await;
    assert_eq!((s.pending, s.running, s.arrivals), (9, 2, 3));
    let last_good = now();

    // The source fails: the last demand is kept, one pool error row counts the polls.
    canned.set(
        &format!("{Q}|pending"),
        answer(
            503,
            wire("prometheus/error.timeout.api_test.TestRespondError.json"),
        ),
    );
    worker(&store, &pool, 1, WorkerState::Ready, 3).await;
    worker(&store, &pool, 2, WorkerState::Draining, 1).await;
    let mut failures = 0;
    while now().unix_ms() - last_good.unix_ms() <= 600_000 - 15_000 {
        advance(15);
        let report = poller.pass().await.unwrap();
        assert_eq!(report.failed.len(), 1, "{report:?}");
        failures += 1;
        let s = latest(&store, &pool).await;
        assert_eq!(
            (s.at, s.pending, s.running),
            (now(), 9, 2),
            "kept within the bound"
        );
    }
    assert_eq!(now().unix_ms() - last_good.unix_ms(), 600_000);
    let errors = store.list_pool_errors(&pool).await.unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].kind, "queue_source");
    assert_eq!(errors[0].count, failures);
    assert!(
        errors[0].message.contains("prometheus source:")
            && errors[0].message.contains("HTTP 503: timeout: message"),
        "{errors:?}"
    );

    // Past the bound: pending 0, running = busy slots of ready and draining workers.
    advance(15);
    poller.pass().await.unwrap();
    let s = latest(&store, &pool).await;
    assert_eq!((s.pending, s.running), (0, 4));
    assert!(store.list_pool_errors(&pool).await.unwrap()[0].count == failures + 1);

    // The source recovers, and a spec edit (a new query) applies at the next poll.
    let mut edited = spec.clone();
    let Some(QueueSource::Prometheus(p)) = &mut edited.queue else {
        unreachable!()
    };
    p.pending_query = "pending_v2".into();
    store
        .update_pool(&pool, 1, &edited, "test", now())
        .await
        .unwrap();
    canned.set(&format!("{Q}|pending_v2"), answer(200, ok("11")));
    advance(15);
    poller.pass().await.unwrap();
    let s = latest(&store, &pool).await;
    assert_eq!((s.pending, s.running), (11, 2));

    // The lease goes elsewhere: the pool is no longer polled here.
    store.release_leases(OWNER).await.unwrap();
    advance(15);
    let requests = canned.count();
    assert_eq!(poller.pass().await.unwrap(), Default::default());
    assert_eq!(canned.count(), requests);
}

#[tokio::test(flavor = "current_thread")]
async fn poller_waits_as_long_as_buildkite_asks_and_reports_missing_credentials() {
    let canned = Canned::default();
    let base = serve(canned.clone()).await;
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let spec = PoolSpec::from_yaml(&format!(
        "id: ci/bk\nprovider: fake\nmax_capacity: 20\nlaunch_configs: [{{id: a, instance_type: small}}]\n\
         queue: {{type: buildkite, credentials: bk, endpoint: '{base}/v3', poll_interval_s: 15}}\n"
    ))
    .unwrap();
    store.create_pool(&spec, "test", now()).await.unwrap();
    store.acquire_leases(OWNER, 600_000).await.unwrap();
    let mut with_header = answer(
        200,
        wire("buildkite/metrics.buildkite-docs.agent_api-metrics.json"),
    );
    with_header
        .headers
        .push(("Buildkite-Agent-Metrics-Poll-Duration", "60".into()));
    canned.set("/v3/metrics", with_header);

    // No [queue_credentials.bk]: a pool error naming the entry, no request.
    let mut poller = QueuePoller::new(
        store.clone(),
        QueueCredentials::default(),
        PollerConfig::new(OWNER),
        now,
        Arc::new(|_: &PoolId| {}),
    )
    .unwrap();
    let report = poller.pass().await.unwrap();
    assert!(
        report.failed[0].1.contains("credentials \"bk\""),
        "{report:?}"
    );
    assert_eq!(canned.count(), 0);

    let (_, creds) = buildkite(&base, None);
    let mut poller = QueuePoller::new(
        store.clone(),
        creds,
        PollerConfig::new(OWNER),
        now,
        Arc::new(|_: &PoolId| {}),
    )
    .unwrap();
    advance(15);
    assert_eq!(poller.pass().await.unwrap().polled.len(), 1);
    assert_eq!(canned.count(), 1);
    // 15 s is the pool's interval, but Buildkite asked for 60.
    for _ in 0..3 {
        advance(15);
        poller.pass().await.unwrap();
        assert_eq!(canned.count(), 1);
    }
    advance(15);
    poller.pass().await.unwrap();
    assert_eq!(canned.count(), 2);
}
