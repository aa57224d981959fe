//! Loopback load benchmark of the operator API: `cargo bench -p api --bench load`.
//!
//! For each backend (SQLite in a temp file; a throwaway PostgreSQL database on
//! `CAPSTAN_TEST_POSTGRES_URL`, skipped with a note when unreachable) it serves
//! [`api::app`] on `127.0.0.1:0` in this process, bootstraps a `*` token, creates
//! `POOLS` pools, and then drives an **open-loop** load at a fixed target rate over
//! keep-alive HTTP/1.1 connections, one case per route:
//!
//! - `get`: `GET /v1/pools/{id}`, round-robin over the pools;
//! - `put`: `PUT /v1/pools/{id}` replacing the spec with `If-Match`, alternating
//!   `max_capacity` so every write is a real change. Each pool's generation is tracked
//!   by whichever request holds that pool's lock, so no write is refused as stale;
//! - `heartbeat`: `POST /v1/workers/{id}/heartbeat` as `capstan agent` sends them,
//!   each with its worker's own credential, round-robin over `WORKERS` workers. Each
//!   worker's `busy_slots` alternates 0/1 from one heartbeat to its next (half the
//!   workers are busy at any time), and one heartbeat in ten carries one finished task
//!   with a finish time no other heartbeat uses, so a task run is written too. An
//!   answer other than `"action": "continue"` counts as an error.
//!
//! Set-up of the `heartbeat` case (unmeasured): one more pool, `bench/heartbeat`; the
//! bench takes its lease and writes `WORKERS` launch intents directly on the store
//! (each with the SHA-256 of a random registration token), as the reconcile loop does
//! before it launches a machine; then every worker registers through the real
//! `POST /v1/workers/register` (at most `INFLIGHT` at once), which answers its
//! `capw_<worker id>_<secret>` credential and moves it to `ready`. The registration
//! rate is printed on stderr. There is no reconcile loop, so the workers stay `ready`.
//!
//! Requests are scheduled at `start + i / rate`. Latency is measured from that
//! *scheduled* time, not from when the request was actually sent, so a stalled server
//! (or a stalled load generator) shows up as latency instead of being hidden
//! (coordinated omission). The number of requests in flight is bounded; a request
//! whose turn comes while the bound is reached is not sent and is counted as
//! `dropped` — a non-zero count means the server did not keep up with the target rate,
//! and the percentiles then describe only the requests that were sent.
//!
//! The service time (from actual send to the last byte of the response) is reported
//! beside, as `svc p50` / `svc p99`, to separate server latency from load-generator lag.
//!
//! Process CPU (server and load generator together: they share this process) and the
//! whole machine's busy share (which includes PostgreSQL's backends) are reported per
//! case. The load generator and the server share the machine's cores, so absolute
//! numbers are pessimistic compared with a server on its own host.
//!
//! Environment:
//! - `CAPSTAN_BENCH_RATE`: GET target rate, requests/s (default 2000)
//! - `CAPSTAN_BENCH_PUT_RATE`: PUT target rate (default 500 on SQLite, 1000 on PostgreSQL)
//! - `CAPSTAN_BENCH_HEARTBEAT_RATE`: heartbeat target rate (default 250 on SQLite,
//!   667 on PostgreSQL: 10,000 workers heartbeating every 15 s)
//! - `CAPSTAN_BENCH_SECS`: measured seconds per case (default 10), after
//!   `CAPSTAN_BENCH_WARMUP_SECS` (default 2) of unrecorded warm-up at the same rate
//! - `CAPSTAN_BENCH_INFLIGHT`: most requests in flight (default 64)
//! - `CAPSTAN_BENCH_POOLS`: pools created (default 100)
//! - `CAPSTAN_BENCH_WORKERS`: workers registered for the `heartbeat` case (default 1000)
//! - `CAPSTAN_BENCH_BACKENDS`: comma-separated subset of `sqlite,postgres`
//! - `CAPSTAN_BENCH_ROUTES`: comma-separated subset of `get,put,heartbeat` (default all)
//! - `CAPSTAN_BENCH_SERVER_THREADS`: when set, the server gets its own runtime with
//!   this many worker threads (default: one runtime shared with the load generator)

#[path = "../../bench-support/proc_cpu.rs"]
mod proc_cpu;

use proc_cpu::process_cpu;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use capstan_core::secret::digest_hex;
use capstan_core::{PoolId, ProviderKind, Timestamp, Worker, WorkerId};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Mutex, Semaphore};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[derive(Debug, Clone)]
struct Config {
    get_rate: f64,
    put_rate: Option<f64>,
    heartbeat_rate: Option<f64>,
    secs: f64,
    warmup_secs: f64,
    inflight: usize,
    pools: usize,
    workers: usize,
    backends: Vec<String>,
    routes: Vec<String>,
    server_threads: Option<usize>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Config {
    fn from_env() -> Self {
        Self {
            get_rate: env_or("CAPSTAN_BENCH_RATE", 2000.0),
            put_rate: std::env::var("CAPSTAN_BENCH_PUT_RATE")
                .ok()
                .map(|v| v.parse().expect("CAPSTAN_BENCH_PUT_RATE")),
            heartbeat_rate: std::env::var("CAPSTAN_BENCH_HEARTBEAT_RATE")
                .ok()
                .map(|v| v.parse().expect("CAPSTAN_BENCH_HEARTBEAT_RATE")),
            secs: env_or("CAPSTAN_BENCH_SECS", 10.0),
            warmup_secs: env_or("CAPSTAN_BENCH_WARMUP_SECS", 2.0),
            inflight: env_or("CAPSTAN_BENCH_INFLIGHT", 64),
            pools: env_or("CAPSTAN_BENCH_POOLS", 100),
            workers: env_or("CAPSTAN_BENCH_WORKERS", 1000),
            backends: env_list("CAPSTAN_BENCH_BACKENDS", "sqlite,postgres"),
            routes: env_list("CAPSTAN_BENCH_ROUTES", "get,put,heartbeat"),
            server_threads: std::env::var("CAPSTAN_BENCH_SERVER_THREADS")
                .ok()
                .map(|v| v.parse().expect("CAPSTAN_BENCH_SERVER_THREADS")),
        }
    }
}

/// What one case measured.
#[derive(Debug)]
struct CaseResult {
    backend: &'static str,
    route: &'static str,
    target_rate: f64,
    /// Requests scheduled in the measured window.
    scheduled: u64,
    /// Of those, answered (any status).
    completed: u64,
    /// Of those, not sent because the in-flight bound was reached.
    dropped: u64,
    /// Non-2xx answers.
    non_2xx: u64,
    /// Connection or protocol failures (no answer).
    transport_errors: u64,
    /// From the window's start to the last measured answer.
    elapsed: Duration,
    /// Latency from the scheduled send time, microseconds.
    latency: Histogram<u64>,
    /// Latency from the actual send time, microseconds.
    service: Histogram<u64>,
    /// Process CPU (user + system) during the measured window.
    cpu: Duration,
    /// Share of the whole machine busy during the measured window.
    machine_busy: f64,
    /// One example of a failure, for the report.
    first_error: Option<String>,
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal; iowait may run backwards, so
    // busy is summed from the fields that do not.
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    (busy, busy + field(3) + field(4))
}

fn now_ts() -> Timestamp {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_ms(ms)
}

fn pool_id(i: usize) -> String {
    // A slash, as real pool ids have, exercises the path rewriting too.
    format!("bench/pool-{i:03}")
}

fn spec_body(max_capacity: u32) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "provider": "fake",
            "max_capacity": max_capacity,
            "launch_configs": [{"id": "a", "instance_type": "t"}],
        })
        .to_string(),
    )
}

/// One pool as a writer sees it.
#[derive(Debug)]
struct PoolState {
    generation: i64,
    max_capacity: u32,
}

/// One registered worker, as its agent would address the server.
#[derive(Debug)]
struct BenchWorker {
    /// `http://…/v1/workers/{id}/heartbeat`.
    uri: String,
    /// `Bearer capw_<worker id>_<secret>`.
    bearer: String,
}

/// A running server and what the load needs to reach it.
struct Target {
    addr: SocketAddr,
    bearer: String,
    store: store::Store,
    pools: Vec<Arc<Mutex<PoolState>>>,
    /// Registered workers; empty unless the `heartbeat` case runs.
    workers: Vec<BenchWorker>,
    /// Finished tasks are reported as finished at this time plus the heartbeat's
    /// index in milliseconds, so no two share a finish time.
    finished_base_ms: i64,
}

fn parse_etag(headers: &hyper::HeaderMap) -> Option<i64> {
    headers
        .get(ETAG)?
        .to_str()
        .ok()?
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> Result<(StatusCode, hyper::HeaderMap, Bytes), String> {
    let response = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    Ok((parts.status, parts.headers, body))
}

/// Starts the app on a loopback port, bootstraps a token and creates the pools.
async fn start_server(
    url: &str,
    pools: usize,
    client: &HttpClient,
    server_rt: Option<&tokio::runtime::Handle>,
) -> Target {
    let store = store::Store::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connect {}: {e}", store::redact_url(url)));
    let (_, token) = api::clients::bootstrap_client(
        &store,
        "bench",
        &["*".to_string()],
        None,
        "bench",
        now_ts(),
    )
    .await
    .expect("bootstrap a client");
    let state = api::AppState::new(
        store.clone(),
        api::Readiness::default(),
        api::Clock::new(now_ts),
    );
    state.readiness.set(true);
    let app = api::app(state);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    let serve = async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .await
        .expect("serve");
    };
    match server_rt {
        Some(rt) => drop(rt.spawn(serve)),
        None => drop(tokio::spawn(serve)),
    }

    let bearer = format!("Bearer {token}");
    let mut states = Vec::with_capacity(pools);
    for i in 0..pools {
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("http://{addr}/v1/pools/{}", pool_id(i)))
            .header(AUTHORIZATION, &bearer)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(spec_body(10)))
            .expect("request");
        let (status, headers, body) = send(client, req).await.expect("create a pool");
        assert_eq!(
            status,
            StatusCode::CREATED,
            "creating {}: {}",
            pool_id(i),
            String::from_utf8_lossy(&body)
        );
        let generation = parse_etag(&headers).expect("ETag on a created pool");
        states.push(Arc::new(Mutex::new(PoolState {
            generation,
            max_capacity: 10,
        })));
    }
    Target {
        addr,
        bearer,
        store,
        pools: states,
        workers: Vec::new(),
        // An hour back, so no finish time is ahead of the server's clock.
        finished_base_ms: now_ts().unix_ms() - 3_600_000,
    }
}

/// The pool the `heartbeat` case's workers belong to.
const HEARTBEAT_POOL: &str = "bench/heartbeat";

fn worker_id(i: usize) -> String {
    format!("w-bench-{i:05}")
}

/// A fresh random registration token (64 hex).
fn registration_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).expect("random registration token");
    hex::encode(bytes)
}

/// Registers one worker through `POST /v1/workers/register`; answers its credential.
async fn register_worker(
    client: &HttpClient,
    addr: SocketAddr,
    id: &str,
    token: &str,
) -> Result<String, String> {
    let body = serde_json::json!({"worker_id": id, "registration_token": token});
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/v1/workers/register"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let (status, _, body) = send(client, req).await?;
    if status != StatusCode::OK {
        return Err(format!(
            "registering {id}: {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("registering {id}: the answer is not JSON: {e}"))?;
    match (v["worker_id"].as_str(), v["credential"].as_str()) {
        (Some(w), Some(c)) if w == id => Ok(c.to_owned()),
        _ => Err(format!(
            "registering {id}: expected worker_id {id:?} and a credential, got {v}"
        )),
    }
}

/// Set-up of the `heartbeat` case: the pool, `count` launch intents written on the
/// store under the pool's lease, and each worker registered through the API.
async fn register_workers(
    target: &Target,
    count: usize,
    inflight: usize,
    client: &HttpClient,
    backend: &str,
) -> Vec<BenchWorker> {
    assert!(count > 0, "CAPSTAN_BENCH_WORKERS must be at least 1");
    let spec = serde_json::json!({
        "provider": "fake",
        "max_capacity": count,
        "launch_configs": [{"id": "a", "instance_type": "t"}],
        // A heartbeat every 15 s, as the agent is told.
        "lifecycle": {"heartbeat_timeout_s": 60},
    });
    let req = Request::builder()
        .method(Method::PUT)
        .uri(format!("http://{}/v1/pools/{HEARTBEAT_POOL}", target.addr))
        .header(AUTHORIZATION, &target.bearer)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(spec.to_string())))
        .expect("request");
    let (status, _, body) = send(client, req).await.expect("create the heartbeat pool");
    assert_eq!(
        status,
        StatusCode::CREATED,
        "creating {HEARTBEAT_POOL}: {}",
        String::from_utf8_lossy(&body)
    );
    let fence = target
        .store
        .acquire_leases("bench", 3_600_000)
        .await
        .expect("acquire the leases")
        .into_iter()
        .find(|l| l.fence.pool_id.as_str() == HEARTBEAT_POOL)
        .expect("the bench holds the heartbeat pool's lease")
        .fence;
    let pool = PoolId::new(HEARTBEAT_POOL).expect("pool id");
    let started = Instant::now();
    let mut tokens = Vec::with_capacity(count);
    for i in 0..count {
        let w = Worker::requested(
            WorkerId::from_string(worker_id(i)),
            pool.clone(),
            ProviderKind::Fake,
            Some("a".into()),
            1,
            format!("bench-launch-{i}"),
            now_ts(),
        );
        let token = registration_token();
        target
            .store
            .insert_launch_intent(&fence, &w, &digest_hex(&token))
            .await
            .unwrap_or_else(|e| panic!("launch intent of {}: {e}", worker_id(i)));
        tokens.push(token);
    }
    eprintln!(
        "{backend}: {count} launch intents written in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(inflight));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let permit = Arc::clone(&limit).acquire_owned().await.expect("semaphore");
        let client = client.clone();
        let addr = target.addr;
        tasks.spawn(async move {
            let id = worker_id(i);
            let credential = register_worker(&client, addr, &id, &token).await;
            drop(permit);
            (i, credential.unwrap_or_else(|e| panic!("{e}")))
        });
    }
    let mut credentials = vec![String::new(); count];
    while let Some(done) = tasks.join_next().await {
        let (i, credential) = done.expect("a registration panicked");
        credentials[i] = credential;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{backend}: {count} workers registered through POST /v1/workers/register in {secs:.2} s \
         ({:.0}/s, at most {inflight} at once)",
        count as f64 / secs
    );
    credentials
        .into_iter()
        .enumerate()
        .map(|(i, credential)| BenchWorker {
            uri: format!(
                "http://{}/v1/workers/{}/heartbeat",
                target.addr,
                worker_id(i)
            ),
            bearer: format!("Bearer {credential}"),
        })
        .collect()
}

/// The body of heartbeat `i`: which worker sends it is `i % workers`.
fn heartbeat_body(i: u64, workers: usize, finished_base_ms: i64) -> Bytes {
    let workers = workers as u64;
    // Worker k's r-th heartbeat: busy when r + k is odd, so each worker alternates and
    // half of them are busy at any time.
    let busy = (i / workers + i % workers) % 2;
    let finished: Vec<serde_json::Value> = if i.is_multiple_of(10) {
        let at = Timestamp::from_unix_ms(finished_base_ms + i64::try_from(i).unwrap_or(0));
        vec![serde_json::json!({"finished_at": at, "duration_s": 30.0 + (i % 600) as f64 / 10.0})]
    } else {
        Vec::new()
    };
    Bytes::from(serde_json::json!({"busy_slots": busy, "finished_tasks": finished}).to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Get,
    Put,
    Heartbeat,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Get => "GET /v1/pools/{id}",
            Route::Put => "PUT /v1/pools/{id}",
            Route::Heartbeat => "POST /v1/workers/{id}/heartbeat",
        }
    }

    /// Its name in `CAPSTAN_BENCH_ROUTES`.
    fn name(self) -> &'static str {
        match self {
            Route::Get => "get",
            Route::Put => "put",
            Route::Heartbeat => "heartbeat",
        }
    }
}

/// Shared tallies of one case.
#[derive(Debug)]
struct Tally {
    latency: std::sync::Mutex<Histogram<u64>>,
    service: std::sync::Mutex<Histogram<u64>>,
    completed: AtomicU64,
    non_2xx: AtomicU64,
    transport_errors: AtomicU64,
    last_done: std::sync::Mutex<Option<Instant>>,
    first_error: std::sync::Mutex<Option<String>>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: std::sync::Mutex::new(histogram()),
            service: std::sync::Mutex::new(histogram()),
            completed: AtomicU64::new(0),
            non_2xx: AtomicU64::new(0),
            transport_errors: AtomicU64::new(0),
            last_done: std::sync::Mutex::new(None),
            first_error: std::sync::Mutex::new(None),
        }
    }

    fn note_error(&self, message: String) {
        let mut first = self.first_error.lock().unwrap();
        if first.is_none() {
            *first = Some(message);
        }
    }
}

/// `GET uri` with the bench's token.
fn get_request(uri: &str, target: &Target) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(uri)
        .header(AUTHORIZATION, &target.bearer)
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// One request of a case, measured against its scheduled time `at`.
async fn one_request(
    route: Route,
    client: &HttpClient,
    target: &Target,
    i: u64,
    at: Instant,
    measured: bool,
    tally: &Tally,
) {
    let i_usize = usize::try_from(i).unwrap_or(0);
    let index = i_usize % target.pools.len();
    let pool_uri = || format!("http://{}/v1/pools/{}", target.addr, pool_id(index));
    let (uri, sent, result) = match route {
        Route::Heartbeat => {
            let worker = &target.workers[i_usize % target.workers.len()];
            let req = Request::builder()
                .method(Method::POST)
                .uri(&worker.uri)
                .header(AUTHORIZATION, &worker.bearer)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(heartbeat_body(
                    i,
                    target.workers.len(),
                    target.finished_base_ms,
                )))
                .expect("request");
            let sent = Instant::now();
            (worker.uri.clone(), sent, send(client, req).await)
        }
        Route::Get => {
            let uri = pool_uri();
            let req = get_request(&uri, target);
            let sent = Instant::now();
            (uri, sent, send(client, req).await)
        }
        Route::Put => {
            let uri = pool_uri();
            // Waiting for the pool's lock is part of the latency: it is time after the
            // scheduled send. With pools >> in-flight it is rarely contended.
            let mut pool = target.pools[index].lock().await;
            let next = if pool.max_capacity == 10 { 11 } else { 10 };
            let req = Request::builder()
                .method(Method::PUT)
                .uri(&uri)
                .header(AUTHORIZATION, &target.bearer)
                .header(CONTENT_TYPE, "application/json")
                .header(IF_MATCH, format!("\"{}\"", pool.generation))
                .body(Full::new(spec_body(next)))
                .expect("request");
            let sent = Instant::now();
            let result = send(client, req).await;
            if let Ok((status, headers, _)) = &result {
                if status.is_success() {
                    pool.max_capacity = next;
                    if let Some(g) = parse_etag(headers) {
                        pool.generation = g;
                    }
                } else {
                    // Resynchronise (unmeasured) so one failure does not cascade.
                    if let Ok((s, h, body)) = send(client, get_request(&uri, target)).await
                        && s.is_success()
                    {
                        if let Some(g) = parse_etag(&h) {
                            pool.generation = g;
                        }
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                            && let Some(c) = v["spec"]["max_capacity"].as_u64()
                        {
                            pool.max_capacity = u32::try_from(c).unwrap_or(10);
                        }
                    }
                }
            }
            (uri, sent, result)
        }
    };
    let done = Instant::now();
    if !measured {
        return;
    }
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    match result {
        Ok((status, _, body)) => {
            tally.completed.fetch_add(1, Ordering::Relaxed);
            tally
                .latency
                .lock()
                .unwrap()
                .saturating_record(micros(done - at));
            tally
                .service
                .lock()
                .unwrap()
                .saturating_record(micros(done - sent));
            // A heartbeat must be told to carry on: nothing drains these workers.
            let wrong_answer = route == Route::Heartbeat
                && status.is_success()
                && serde_json::from_slice::<serde_json::Value>(&body)
                    .map_or(true, |v| v["action"] != "continue");
            if !status.is_success() || wrong_answer {
                tally.non_2xx.fetch_add(1, Ordering::Relaxed);
                tally.note_error(format!(
                    "{} {uri} -> {status}: {}",
                    route.label(),
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        Err(e) => {
            tally.transport_errors.fetch_add(1, Ordering::Relaxed);
            tally.note_error(format!("{} {uri}: {e}", route.label()));
        }
    }
    let mut last = tally.last_done.lock().unwrap();
    if last.is_none_or(|l| l < done) {
        *last = Some(done);
    }
}

/// Runs one open-loop case: warm-up, then the measured window.
async fn run_case(
    backend: &'static str,
    route: Route,
    rate: f64,
    cfg: &Config,
    client: &HttpClient,
    target: &Arc<Target>,
) -> CaseResult {
    let tally = Arc::new(Tally::new());
    let inflight = Arc::new(Semaphore::new(cfg.inflight));
    let warm_n = (cfg.warmup_secs * rate).round() as u64;
    let total_n = warm_n + (cfg.secs * rate).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let at = move |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let window_start = at(warm_n);
    // The dispatcher is an OS thread sleeping with the kernel's timer (tens of µs of
    // slack) rather than a task on tokio's timer, whose 1 ms granularity would add up
    // to 1 ms of schedule lag to every measured latency.
    let runtime = tokio::runtime::Handle::current();
    let dispatch = {
        let inflight = Arc::clone(&inflight);
        let client = client.clone();
        let target = Arc::clone(target);
        let tally = Arc::clone(&tally);
        tokio::task::spawn_blocking(move || {
            let mut dropped = 0u64;
            let mut cpu_start = Duration::ZERO;
            let mut machine_start = (0, 0);
            for i in 0..total_n {
                let scheduled = at(i);
                if i == warm_n {
                    cpu_start = process_cpu();
                    machine_start = machine_jiffies();
                }
                let now = Instant::now();
                if now < scheduled {
                    std::thread::sleep(scheduled - now);
                }
                let measured = i >= warm_n;
                match Arc::clone(&inflight).try_acquire_owned() {
                    Ok(permit) => {
                        let client = client.clone();
                        let target = Arc::clone(&target);
                        let tally = Arc::clone(&tally);
                        runtime.spawn(async move {
                            one_request(route, &client, &target, i, scheduled, measured, &tally)
                                .await;
                            drop(permit);
                        });
                    }
                    Err(_) if measured => dropped += 1,
                    Err(_) => {}
                }
            }
            (dropped, cpu_start, machine_start)
        })
    };
    let (dropped, cpu_start, machine_start) = dispatch.await.expect("dispatcher thread");
    // Wait for everything in flight (bounded by the server's own 30 s timeout).
    let all = u32::try_from(cfg.inflight).expect("in-flight bound");
    let _all = tokio::time::timeout(Duration::from_secs(60), inflight.acquire_many(all))
        .await
        .expect("requests in flight did not finish within 60 s")
        .expect("semaphore");
    let cpu = process_cpu().saturating_sub(cpu_start);
    let machine_end = machine_jiffies();
    let busy = machine_end.0.saturating_sub(machine_start.0) as f64;
    let total = machine_end.1.saturating_sub(machine_start.1) as f64;
    let last_done = tally.last_done.lock().unwrap().unwrap_or(window_start);
    // Every request has released its permit, so every tally is in (a task may still
    // hold its clone of the Arc for a moment, hence no `Arc::try_unwrap`).
    CaseResult {
        backend,
        route: route.label(),
        target_rate: rate,
        scheduled: total_n - warm_n,
        completed: tally.completed.load(Ordering::Relaxed),
        dropped,
        non_2xx: tally.non_2xx.load(Ordering::Relaxed),
        transport_errors: tally.transport_errors.load(Ordering::Relaxed),
        elapsed: last_done.saturating_duration_since(window_start),
        latency: tally.latency.lock().unwrap().clone(),
        service: tally.service.lock().unwrap().clone(),
        cpu,
        machine_busy: if total > 0.0 { busy / total } else { 0.0 },
        first_error: tally.first_error.lock().unwrap().clone(),
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_table(results: &[CaseResult]) {
    println!();
    println!(
        "{:<9} {:<31} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7} {:>10} {:>7}",
        "backend",
        "route",
        "target",
        "achieved",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "svc p50",
        "svc p99",
        "errors",
        "dropped",
        "cpu s",
        "cpu µs/req",
        "mach %"
    );
    for r in results {
        let achieved = if r.elapsed.is_zero() {
            0.0
        } else {
            r.completed as f64 / r.elapsed.as_secs_f64()
        };
        let per_req = if r.completed == 0 {
            0.0
        } else {
            r.cpu.as_secs_f64() * 1e6 / r.completed as f64
        };
        println!(
            "{:<9} {:<31} {:>7.0} {:>9.1} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>8} {:>7.2} {:>10.0} {:>7.0}",
            r.backend,
            r.route,
            r.target_rate,
            achieved,
            ms(r.latency.value_at_quantile(0.50)),
            ms(r.latency.value_at_quantile(0.90)),
            ms(r.latency.value_at_quantile(0.99)),
            ms(r.latency.max()),
            ms(r.service.value_at_quantile(0.50)),
            ms(r.service.value_at_quantile(0.99)),
            r.non_2xx + r.transport_errors,
            r.dropped,
            r.cpu.as_secs_f64(),
            per_req,
            r.machine_busy * 100.0,
        );
    }
    println!();
    println!(
        "latency: from each request's scheduled send time to its last response byte (open loop); \
         svc: from the actual send (server + client stack only)"
    );
    println!(
        "errors: non-2xx answers (and heartbeat answers other than continue) + transport \
         failures (must be 0); dropped: not sent because the \
         in-flight bound was reached (server fell behind the target rate)"
    );
    println!(
        "cpu: this process (server + load generator), user + system; mach %: whole machine busy \
         (includes PostgreSQL and anything else running)"
    );
    for r in results {
        if r.non_2xx + r.transport_errors > 0 {
            println!(
                "{} {}: {} non-2xx, {} transport errors; first: {}",
                r.backend,
                r.route,
                r.non_2xx,
                r.transport_errors,
                r.first_error.as_deref().unwrap_or("?")
            );
        }
        if r.completed + r.dropped != r.scheduled {
            println!(
                "{} {}: {} scheduled, {} answered, {} dropped",
                r.backend, r.route, r.scheduled, r.completed, r.dropped
            );
        }
    }
}

/// A backend's default target rates, where the environment sets none.
#[derive(Debug, Clone, Copy)]
struct DefaultRates {
    put: f64,
    heartbeat: f64,
}

async fn run_backend(
    backend: &'static str,
    url: &str,
    cfg: &Config,
    defaults: DefaultRates,
    server_rt: Option<&tokio::runtime::Handle>,
    results: &mut Vec<CaseResult>,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(cfg.inflight)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let mut target = start_server(url, cfg.pools, &client, server_rt).await;
    eprintln!(
        "{backend}: serving on {}, {} pools created",
        target.addr,
        target.pools.len()
    );
    let wanted = |route: Route| cfg.routes.iter().any(|r| r == route.name());
    if wanted(Route::Heartbeat) {
        target.workers =
            register_workers(&target, cfg.workers, cfg.inflight, &client, backend).await;
    }
    let target = Arc::new(target);
    for (route, rate) in [
        (Route::Get, cfg.get_rate),
        (Route::Put, cfg.put_rate.unwrap_or(defaults.put)),
        (
            Route::Heartbeat,
            cfg.heartbeat_rate.unwrap_or(defaults.heartbeat),
        ),
    ] {
        if !wanted(route) {
            continue;
        }
        eprintln!(
            "{backend}: {} at {rate}/s: {} s warm-up + {} s measured, at most {} in flight",
            route.label(),
            cfg.warmup_secs,
            cfg.secs,
            cfg.inflight
        );
        let result = run_case(backend, route, rate, cfg, &client, &target).await;
        eprintln!(
            "{backend}: {}: p99 {} ms, {} errors, {} dropped",
            route.label(),
            ms(result.latency.value_at_quantile(0.99)),
            result.non_2xx + result.transport_errors,
            result.dropped
        );
        results.push(result);
    }
}

fn main() {
    let cfg = Config::from_env();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "capstan API load bench: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let server_rt = cfg.server_threads.map(|n| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .thread_name("server")
            .enable_all()
            .build()
            .expect("server runtime")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results = rt.block_on(async {
        let server = server_rt.as_ref().map(|r| r.handle().clone());
        let mut results = Vec::new();
        if cfg.backends.iter().any(|b| b == "sqlite") {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let defaults = DefaultRates {
                put: 500.0,
                heartbeat: 250.0,
            };
            run_backend(
                "sqlite",
                &url,
                &cfg,
                defaults,
                server.as_ref(),
                &mut results,
            )
            .await;
        }
        if cfg.backends.iter().any(|b| b == "postgres") {
            match store::scratch::ScratchDatabase::create().await {
                Some(db) => {
                    let url = db.url.clone();
                    run_backend(
                        "postgres",
                        &url,
                        &cfg,
                        DefaultRates {
                            put: 1000.0,
                            heartbeat: 667.0,
                        },
                        server.as_ref(),
                        &mut results,
                    )
                    .await;
                    db.drop_now().await;
                }
                None => eprintln!("postgres: skipped (see the note above)"),
            }
        }
        results
    });
    print_table(&results);
    let failed: u64 = results.iter().map(|r| r.non_2xx + r.transport_errors).sum();
    if failed > 0 {
        eprintln!("FAILED: {failed} requests failed");
        std::process::exit(1);
    }
}
