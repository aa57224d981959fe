//! `POST /v1/pools/{pool_id}/simulate` in-process, every case on SQLite and on
//! PostgreSQL: a what-if replays two weeks of a pool's generated diurnal history (a
//! queue sample a minute, every task run) with its current spec and a candidate, and
//! answers both; it writes nothing, and refuses bad requests with the field at fault.

use std::future::Future;
use std::sync::{Arc, Mutex};

use api::{AppState, Clock, Readiness, Wake};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use capstan_core::{PoolId, ProviderKind, Timestamp, Worker, WorkerId, WorkerState};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use simulations::history_replay::recorded_history;
use simulations::workload::WorkloadSpec;
use store::Store;
use store::history::TaskRunRecord;
use tower::ServiceExt;

const NOW_S: i64 = 1_800_000_000;
const POOL: &str = "ci/linux";
const PATH: &str = "/v1/pools/ci/linux/simulate";

fn now() -> Timestamp {
    Timestamp::from_unix_secs(NOW_S)
}

struct Ctx {
    store: Store,
    state: AppState,
    admin: String,
    woken: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{:#}", self.body);
        self
    }

    fn error(&self, status: StatusCode, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.body["error"], code, "{:#}", self.body);
        self
    }

    fn problem_fields(&self) -> Vec<&str> {
        self.body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["field"].as_str().unwrap())
            .collect()
    }

    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap()
    }
}

impl Ctx {
    async fn new(store: Store) -> Self {
        let (_, admin) = api::clients::bootstrap_client(
            &store,
            "admin",
            &["*".to_owned()],
            None,
            "bootstrap:test",
            now(),
        )
        .await
        .unwrap();
        let woken = Arc::new(Mutex::new(Vec::new()));
        let log = woken.clone();
        let state = AppState::new(store.clone(), Readiness::default(), Clock::new(now)).with_wake(
            Wake::new(move |id: &PoolId| log.lock().unwrap().push(id.to_string())),
        );
        Self {
            store,
            state,
            admin,
            woken,
        }
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<&Value>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let response = api::app(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn simulate(&self, token: &str, body: &Value) -> Answer {
        self.send(Method::POST, PATH, token, Some(body)).await
    }

    /// A client holding `scopes`.
    async fn client(&self, name: &str, scopes: &[&str]) -> String {
        let a = self
            .send(
                Method::POST,
                "/v1/clients",
                &self.admin,
                Some(&json!({"name": name, "scopes": scopes})),
            )
            .await;
        a.expect(StatusCode::CREATED);
        a.body["token"].as_str().unwrap().to_owned()
    }

    /// Creates the pool with `spec` through the API.
    async fn create_pool(&self, spec: &Value) {
        self.send(
            Method::PUT,
            &format!("/v1/pools/{POOL}"),
            &self.admin,
            Some(spec),
        )
        .await
        .expect(StatusCode::CREATED);
    }

    /// Everything a what-if must leave as it was: the pool's row, audit log, workers,
    /// errors, plan status, queue samples and task runs, and the loop's wake-ups.
    async fn dump(&self) -> String {
        let id = PoolId::new(POOL).unwrap();
        let s = &self.store;
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{}\n{}\n{:?}",
            s.get_pool(&id).await.unwrap(),
            s.audit_log_page(Some(&id), None, 1000).await.unwrap(),
            s.list_workers(&id, true).await.unwrap(),
            s.list_pool_errors(&id).await.unwrap(),
            s.pool_status(&id).await.unwrap(),
            s.queue_samples(&id, Timestamp::EPOCH, now().plus_secs(86_400))
                .await
                .unwrap()
                .len(),
            s.task_runs(&id, Timestamp::EPOCH, now().plus_secs(86_400))
                .await
                .unwrap()
                .len(),
            self.woken.lock().unwrap(),
        )
    }
}

async fn with_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    store::scratch::with_sqlite(|store| async move { case(Ctx::new(store).await).await }).await
}

async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    store::scratch::with_postgres(|store| async move { case(Ctx::new(store).await).await }).await
}

store::on_both_backends!(
    a_lower_service_level_costs_less_waits_longer_and_writes_nothing,
    bad_what_ifs_are_refused_naming_the_field_and_change_nothing,
);

/// What a busy pool's what-if takes through the route, store reads included, measured
/// rather than asserted: `cargo test -p api --test whatif busy -- --ignored
/// --nocapture` (a debug build: an upper bound). Two weeks at 1,100 tasks an hour,
/// about 150 of the pool's 400 slots busy on average.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement; run with --nocapture"]
async fn busy_pool_whatif_timing() {
    async fn case(c: Ctx) {
        c.create_pool(&pool_spec(0.95)).await;
        import_workload(
            &c,
            WorkloadSpec {
                days: 14,
                arrivals_per_hour: 1_100.0,
                burst_mean_tasks: 400.0,
                ..WorkloadSpec::diurnal(1)
            },
        )
        .await;
        let id = PoolId::new(POOL).unwrap();
        let started = std::time::Instant::now();
        let runs = c
            .store
            .task_runs(&id, now().plus_secs(-14 * 86_400), now())
            .await
            .unwrap();
        let read = started.elapsed();
        let started = std::time::Instant::now();
        let a = c.simulate(&c.admin, &json!({"spec": pool_spec(0.5)})).await;
        a.expect(StatusCode::OK);
        eprintln!(
            "{:?}: {} tasks: reading the task runs {read:?}; the what-if {:?} (replays {:.2} s + {:.2} s)",
            c.store.kind(),
            runs.len(),
            started.elapsed(),
            a.body["current"]["report"]["wall_seconds"],
            a.body["candidate"]["report"]["wall_seconds"],
        );
    }
    with_sqlite(case).await;
    with_postgres(case).await;
}

/// The README's example pool on the fake provider: spot first, on-demand behind it,
/// 4 slots an instance, the forecast policy at `service_level`.
fn pool_spec(service_level: f64) -> Value {
    json!({
        "id": POOL,
        "provider": "fake",
        "max_capacity": 400,
        "launch_configs": [
            {"id": "c6i-spot", "instance_type": "c6i.2xlarge", "market": "spot", "capacity": 4,
             "priority": 0, "max_capacity": 200, "price_per_hour": 0.15},
            {"id": "m6i-on-demand", "instance_type": "m6i.2xlarge", "capacity": 4,
             "priority": 10, "price_per_hour": 0.384},
        ],
        "scaling": {"policy": "forecast", "service_level": service_level, "idle_timeout_s": 600},
    })
}

/// Two weeks of generated diurnal history ending now, stored with the store's bulk
/// import: a sample a minute and every task run; and three workers that took 40, 45
/// and 50 s from launch to registration.
async fn import_history(c: &Ctx) {
    import_workload(
        c,
        WorkloadSpec {
            days: 14,
            ..WorkloadSpec::diurnal(11)
        },
    )
    .await;
}

/// `workload`'s history ending now, imported for [`POOL`] (see [`import_history`]).
async fn import_workload(c: &Ctx, workload: WorkloadSpec) {
    let id = PoolId::new(POOL).unwrap();
    let mut trace = workload.generate().unwrap();
    trace.origin = now().plus_secs(-14 * 86_400);
    let (samples, runs) = recorded_history(&trace, 60);
    let samples: Vec<_> = samples.into_iter().filter(|s| s.at < now()).collect();
    let runs: Vec<TaskRunRecord> = runs
        .into_iter()
        .filter(|r| r.finished_at < now())
        .enumerate()
        .map(|(i, r)| TaskRunRecord {
            worker_id: format!("w{}", i % 97),
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            recorded_at: r.finished_at,
        })
        .collect();
    c.store.import_queue_samples(&id, &samples).await.unwrap();
    c.store.import_task_runs(&id, &runs).await.unwrap();
    for (n, boot_s) in [(1, 40), (2, 45), (3, 50)] {
        let created = now().plus_secs(-3600 * n);
        let mut w = Worker::requested(
            WorkerId::from_string(format!("w-{n}")),
            id.clone(),
            ProviderKind::Fake,
            Some("c6i-spot".into()),
            4,
            format!("token-{n}"),
            created,
        );
        w.transition(WorkerState::Booting, created).unwrap();
        w.transition(WorkerState::Ready, created.plus_secs(boot_s))
            .unwrap();
        w.registered_at = Some(created.plus_secs(boot_s));
        c.store.insert_worker(&w).await.unwrap();
    }
    c.store
        .record_pool_error(
            &id,
            Some("c6i-spot"),
            "insufficient_capacity",
            "none left",
            now(),
        )
        .await
        .unwrap();
}

/// The answer without the one field that differs between equal runs.
fn without_wall_time(mut body: Value) -> Value {
    for run in ["current", "candidate"] {
        body[run]["report"]
            .as_object_mut()
            .unwrap()
            .remove("wall_seconds");
    }
    body
}

async fn a_lower_service_level_costs_less_waits_longer_and_writes_nothing(c: Ctx) {
    c.create_pool(&pool_spec(0.95)).await;
    import_history(&c).await;
    let before = c.dump().await;
    let reader = c.client("reader", &["pools:read:ci/*"]).await;
    // The candidate written for another provider: provider and provider_config do not
    // matter to a what-if.
    let mut candidate = pool_spec(0.5);
    candidate["provider"] = json!("aws");
    for lc in candidate["launch_configs"].as_array_mut().unwrap() {
        lc["region"] = json!("us-east-1");
        lc["provider_config"] = json!({"image": "ami-0123456789abcdef0"});
    }
    candidate.as_object_mut().unwrap().remove("id");
    let body = json!({"spec": candidate, "days": 14, "seed": 3});
    let started = std::time::Instant::now();
    let a = c.simulate(&reader, &body).await;
    let took = started.elapsed();
    a.expect(StatusCode::OK);
    let b = &a.body;
    eprintln!("what-if took {took:?}; input {:#}", b["input"]);
    assert_eq!(b["pool_id"], POOL);
    assert_eq!(
        (b["days"].as_u64(), b["seed"].as_u64()),
        (Some(14), Some(3))
    );
    assert_eq!(b["until"], now().to_string());
    assert_eq!(b["from"], now().plus_secs(-14 * 86_400).to_string());
    let input = &b["input"];
    assert!(input["samples"].as_u64().unwrap() > 20_000, "{input}");
    assert!(input["arrivals"].as_u64().unwrap() > 5_000, "{input}");
    assert_eq!(input["task_runs"], input["arrivals"], "{input}");
    assert_eq!(input["boot_s"], 45.0);
    assert_eq!(input["boot_from"], "workers");
    assert_eq!(input["arrivals_from"], "recorded");
    assert_eq!(input["run_times_from"], "task_runs");
    let notes = input["notes"].to_string();
    assert!(notes.contains("median launch-to-registration"), "{notes}");
    assert!(notes.contains("provider (aws) differs"), "{notes}");
    let (cur, cand) = (&b["current"]["report"], &b["candidate"]["report"]);
    eprintln!(
        "current: cost {} p95 {} launches {}; candidate: cost {} p95 {} launches {}",
        cur["cost"],
        cur["wait_s"]["p95"],
        cur["launches"],
        cand["cost"],
        cand["wait_s"]["p95"],
        cand["launches"]
    );
    for r in [cur, cand] {
        assert_eq!(r["tasks"], input["arrivals"]);
        assert_eq!(r["unfinished"], 0);
        assert_eq!(r["policy"], "forecast");
        assert!(r["ratio_to_oracle"].as_f64().unwrap() >= 1.0, "{r}");
    }
    assert!(
        cand["cost"].as_f64().unwrap() < cur["cost"].as_f64().unwrap(),
        "a lower service level must cost less: {cand} vs {cur}"
    );
    assert!(
        cand["wait_s"]["p95"].as_f64().unwrap() > cur["wait_s"]["p95"].as_f64().unwrap(),
        "a lower service level must wait longer: {cand} vs {cur}"
    );
    for run in ["current", "candidate"] {
        let series = b[run]["series"].as_array().unwrap();
        assert!(
            series.len() > 100 && series.len() <= 1001,
            "{}",
            series.len()
        );
        assert!(series.iter().any(|p| p["capacity"].as_u64() > Some(0)));
    }

    // The same seed gives the same answer; another seed another.
    let again = c.simulate(&c.admin, &body).await;
    again.expect(StatusCode::OK);
    assert_eq!(
        without_wall_time(again.body.clone()),
        without_wall_time(a.body.clone())
    );
    let other = c
        .simulate(&c.admin, &json!({"spec": pool_spec(0.5), "seed": 4}))
        .await;
    other.expect(StatusCode::OK);
    assert_eq!(other.body["days"], 14, "the default");
    assert_ne!(
        other.body["candidate"]["report"]["wait_s"],
        a.body["candidate"]["report"]["wait_s"]
    );

    // Nothing was written, and the loop was not woken (the dump holds its wake-ups).
    assert_eq!(c.dump().await, before);
}

async fn bad_what_ifs_are_refused_naming_the_field_and_change_nothing(c: Ctx) {
    c.create_pool(&pool_spec(0.95)).await;
    let before = c.dump().await;
    let good = pool_spec(0.5);

    // An invalid candidate: the PUT validator's problems, under `spec.`.
    let mut bad = good.clone();
    bad["min_capacity"] = json!(500);
    bad["launch_configs"][0]["capacity"] = json!(0);
    bad["max_capcity"] = json!(1);
    let a = c.simulate(&c.admin, &json!({"spec": bad})).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    let fields = a.problem_fields();
    for f in [
        "spec.min_capacity",
        "spec.launch_configs[0].capacity",
        "spec.max_capcity",
    ] {
        assert!(fields.contains(&f), "{fields:?}");
    }
    // Another pool's id.
    let mut other = good.clone();
    other["id"] = json!("ci/other");
    let a = c.simulate(&c.admin, &json!({"spec": other})).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert_eq!(a.problem_fields(), ["spec.id"]);
    // Days out of range.
    for days in [0, 36, -1] {
        let a = c
            .simulate(&c.admin, &json!({"spec": good, "days": days}))
            .await;
        a.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            a.message().starts_with("days: must be between 1 and 35"),
            "{}",
            a.message()
        );
    }
    // Strict JSON: unknown and mistyped fields, a missing spec.
    let a = c
        .simulate(&c.admin, &json!({"spec": good, "dayz": 3}))
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(a.message().contains("dayz"), "{}", a.message());
    let a = c
        .simulate(&c.admin, &json!({"spec": good, "seed": "one"}))
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(a.problem_fields(), ["seed"]);
    let a = c.simulate(&c.admin, &json!({"days": 3})).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(a.message().contains("spec"), "{}", a.message());

    // No history: what is missing and how to get it.
    let a = c.simulate(&c.admin, &json!({"spec": good})).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "no_history");
    assert!(a.message().contains("no queue samples"), "{}", a.message());
    assert!(a.message().contains("push samples"), "{}", a.message());

    // Another what-if running: 503 busy with Retry-After, nothing read.
    let held = c.state.whatifs.try_take().unwrap();
    let a = c.simulate(&c.admin, &json!({"spec": good})).await;
    a.error(StatusCode::SERVICE_UNAVAILABLE, "busy");
    assert_eq!(a.headers.get(header::RETRY_AFTER).unwrap(), "5");
    drop(held);

    // Unknown pool; a token without pools:read on the pool (even with write).
    let a = c
        .send(
            Method::POST,
            "/v1/pools/ci/nope/simulate",
            &c.admin,
            Some(&json!({"spec": good})),
        )
        .await;
    a.error(StatusCode::NOT_FOUND, "not_found");
    let writer = c
        .client("writer", &["pools:write:ci/*", "pools:read:lab/*"])
        .await;
    let a = c.simulate(&writer, &json!({"spec": good})).await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(a.body["missing_scope"], "pools:read:ci/linux");

    // The pool and everything of it is as it was.
    assert_eq!(c.dump().await, before);
}
