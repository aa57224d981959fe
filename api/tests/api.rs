//! The operator API in-process (`tower::ServiceExt::oneshot`), every case once on SQLite
//! and once on PostgreSQL.
//!
//! Every case is an `async fn(Ctx)`; `store::on_both_backends!` turns it into a
//! `sqlite::*` and a `postgres::*` test. PostgreSQL cases each get a fresh database from
//! `store::scratch`, dropped even when the case panics (skipped with a printed reason
//! when PostgreSQL is unreachable, failed under `CI=true`).

use std::future::Future;
use std::sync::{Arc, Mutex};

use api::{AppState, Clock, MetricsSource, Readiness, Wake};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use capstan_core::{
    Forecast, ForecastPoint, Plan, PlanReport, PoolId, ProviderKind, Quantile, QueueSample,
    ScalingPolicy, TargetTerm, TerminateReason, Timestamp, Worker, WorkerId, WorkerState,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use store::{BackendKind, Store};
use tower::ServiceExt;

const NOW_S: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_unix_secs(NOW_S)
}

/// One case's world: the store, the app and an admin token holding `*`.
struct Ctx {
    store: Store,
    state: AppState,
    admin: String,
}

/// An answer: status, headers, JSON body (Null when empty).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts the status, showing the body when it is another.
    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{:#}", self.body);
        self
    }

    /// The fields named by the problems of a 422.
    fn problem_fields(&self) -> Vec<&str> {
        self.body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["field"].as_str().unwrap())
            .collect()
    }

    /// Asserts the status and that the body is the one error shape.
    fn error(&self, status: StatusCode, code: &str) -> &Self {
        self.expect(status);
        assert_eq!(self.body["error"], code, "{:#}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
        self
    }

    /// Asserts a 403 naming `scope` as the one missing.
    fn forbidden(&self, scope: &str) -> &Self {
        self.error(StatusCode::FORBIDDEN, "forbidden");
        assert_eq!(self.body["missing_scope"], scope, "{:#}", self.body);
        self
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
        let state = AppState::new(store.clone(), Readiness::default(), Clock::new(now));
        Self {
            store,
            state,
            admin,
        }
    }

    /// Sends a request; answers the status, headers and raw body.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = api::app(self.state.clone())
            .oneshot(req.body(body.unwrap_or_else(Body::empty)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, bytes)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> Answer {
        let (status, headers, bytes) = self.send_raw(method, path, token, headers, body).await;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        self.send(Method::GET, path, Some(token), &[], None).await
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(
            method,
            path,
            Some(token),
            &all,
            Some(Body::from(body.to_string())),
        )
        .await
    }

    async fn put(&self, path: &str, token: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
        self.json(Method::PUT, path, token, headers, body).await
    }

    async fn patch(
        &self,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> Answer {
        self.json(Method::PATCH, path, token, headers, body).await
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        self.json(Method::POST, path, token, &[], body).await
    }

    async fn delete(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(Method::DELETE, path, Some(token), headers, None)
            .await
    }

    /// `POST /v1/workers/{worker}/drain`.
    async fn drain(&self, worker: &str, token: &str) -> Answer {
        let path = format!("/v1/workers/{worker}/drain");
        self.send(Method::POST, &path, Some(token), &[], None).await
    }

    /// Pushes queue samples to `pool` (as it goes in the path).
    async fn push(&self, pool: &str, token: &str, samples: Value) -> Answer {
        let path = format!("/v1/pools/{pool}/queue");
        self.post(&path, token, &json!({ "samples": samples }))
            .await
    }

    /// Pushes queue samples to `pool` as the admin, and insists they are stored.
    async fn pushed(&self, pool: &str, samples: Value) -> Answer {
        let a = self.push(pool, &self.admin, samples).await;
        a.expect(StatusCode::ACCEPTED);
        a
    }

    async fn insert_worker(&self, worker: &Worker) {
        self.store.insert_worker(worker).await.unwrap();
    }

    /// `token` asks to create a client `name` holding `scopes`.
    async fn create_client(&self, token: &str, name: &str, scopes: &[&str]) -> Answer {
        let body = json!({"name": name, "scopes": scopes});
        self.post("/v1/clients", token, &body).await
    }

    /// A client holding `scopes`, created by the admin through the API.
    async fn client(&self, name: &str, scopes: &[&str]) -> String {
        let a = self.create_client(&self.admin, name, scopes).await;
        a.expect(StatusCode::CREATED);
        a.body["token"].as_str().unwrap().to_owned()
    }
}

fn spec(max: u32) -> Value {
    json!({
        "provider": "fake",
        "max_capacity": max,
        "launch_configs": [{"id": "small", "instance_type": "t"}],
    })
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
    pools_are_created_read_replaced_patched_and_deleted,
    writes_to_existing_pools_need_the_current_generation,
    concurrent_puts_with_one_generation_have_one_winner,
    bad_requests_get_one_error_shape_and_change_nothing,
    invalid_specs_report_every_problem_with_its_field,
    lists_filter_paginate_and_show_only_readable_pools,
    tokens_are_checked_on_every_route,
    scoped_clients_are_refused_outside_their_pools,
    clients_grant_only_what_they_hold_and_revocation_is_immediate,
    workers_are_listed_read_and_drained,
    deleting_a_pool_with_live_workers_drains_it_first,
    errors_and_audit_are_served,
    static_machines_are_registered_listed_and_removed,
    queue_samples_are_stored_with_estimated_arrivals,
    bad_queue_batches_name_every_field_and_store_nothing,
    queue_pushes_and_pool_edits_wake_the_loop,
    plans_and_forecasts_are_served_once_the_loop_records_them,
    metrics_need_their_scope_and_serve_the_source,
    nul_bytes_never_reach_the_database,
    workers_register_once_and_their_credential_only_opens_their_own_routes,
);

async fn pools_are_created_read_replaced_patched_and_deleted(c: Ctx) {
    // Created by PUT on the path as a user types it, slash and all.
    let a = c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    a.expect(StatusCode::CREATED);
    assert_eq!(a.header("etag"), "\"1\"");
    assert_eq!(a.header("location"), "/v1/pools/ci/linux");
    assert_eq!(a.header("cache-control"), "no-store");
    assert_eq!(a.body["id"], "ci/linux");
    assert_eq!(a.body["generation"], 1);
    assert_eq!(a.body["status"], "active");
    // Defaults are filled in; an unset idle timeout stays out (capstan chooses it).
    assert_eq!(a.body["spec"]["scaling"]["max_launches_per_minute"], 20);
    assert!(
        a.body["spec"]["scaling"].get("idle_timeout_s").is_none(),
        "{}",
        a.body
    );
    assert_eq!(a.body["created"], "2027-01-15T08:00:00.000Z");

    // The encoded form names the same pool.
    let got = c.get("/v1/pools/ci%2Flinux", &c.admin).await;
    assert_eq!((got.status, got.header("etag")), (StatusCode::OK, "\"1\""));
    assert_eq!(got.body, a.body);
    let not_modified = c
        .send(
            Method::GET,
            "/v1/pools/ci/linux",
            Some(&c.admin),
            &[("if-none-match", "\"1\"")],
            None,
        )
        .await;
    not_modified.expect(StatusCode::NOT_MODIFIED);

    // Replace with If-Match.
    let a = c
        .put(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"1\"")],
            &spec(20),
        )
        .await;
    assert_eq!(
        (a.status, a.header("etag")),
        (StatusCode::OK, "\"2\""),
        "{:#}",
        a.body
    );
    assert_eq!(a.body["spec"]["max_capacity"], 20);
    // The same spec again changes nothing: no new generation, no audit entry.
    let a = c
        .put(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"2\"")],
            &spec(20),
        )
        .await;
    assert_eq!(
        (a.status, a.body["generation"].as_i64()),
        (StatusCode::OK, Some(2))
    );

    // Merge patch: objects merge, null removes (back to the default).
    let a = c
        .send(
            Method::PATCH,
            "/v1/pools/ci/linux",
            Some(&c.admin),
            &[
                ("content-type", "application/merge-patch+json"),
                ("if-match", "\"2\""),
            ],
            Some(Body::from(
                json!({"scaling": {"idle_timeout_s": 900}, "description": "builders"}).to_string(),
            )),
        )
        .await;
    a.expect(StatusCode::OK);
    assert_eq!(a.body["generation"], 3);
    assert_eq!(a.body["spec"]["scaling"]["idle_timeout_s"], 900);
    assert_eq!(
        a.body["spec"]["scaling"]["policy"], "reactive",
        "untouched fields stay"
    );
    assert_eq!(a.body["spec"]["max_capacity"], 20);
    let a = c
        .patch(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"3\"")],
            &json!({"description": null}),
        )
        .await;
    assert_eq!(a.body["spec"]["description"], "", "{:#}", a.body);

    // Delete with If-Match: gone.
    let a = c
        .delete("/v1/pools/ci/linux", &c.admin, &[("if-match", "\"4\"")])
        .await;
    a.expect(StatusCode::NO_CONTENT);
    c.get("/v1/pools/ci/linux", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let actions: Vec<_> = c
        .store
        .audit_log(Some(&PoolId::new("ci/linux").unwrap()), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.actor))
        .collect();
    // create, update, patch, patch, delete; the unchanged PUT wrote nothing.
    assert_eq!(actions.len(), 5, "{actions:?}");
}

async fn writes_to_existing_pools_need_the_current_generation(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    // No If-Match on an existing pool: 428, for PUT, PATCH and DELETE.
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(11))
        .await
        .error(StatusCode::PRECONDITION_REQUIRED, "precondition_required");
    c.patch(
        "/v1/pools/ci/linux",
        &c.admin,
        &[],
        &json!({"max_capacity": 11}),
    )
    .await
    .error(StatusCode::PRECONDITION_REQUIRED, "precondition_required");
    c.delete("/v1/pools/ci/linux", &c.admin, &[])
        .await
        .error(StatusCode::PRECONDITION_REQUIRED, "precondition_required");
    // Another operator moves it to generation 2 ...
    c.put(
        "/v1/pools/ci/linux",
        &c.admin,
        &[("if-match", "\"1\"")],
        &spec(12),
    )
    .await;
    // ... so an edit based on generation 1 is refused, naming both.
    let a = c
        .put(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"1\"")],
            &spec(13),
        )
        .await;
    a.error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(a.body["current_generation"], 2);
    let message = a.body["message"].as_str().unwrap();
    assert!(
        message.contains("generation 1") && message.contains("current is 2"),
        "{message}"
    );
    for method in [Method::PATCH, Method::DELETE] {
        let a = c
            .json(
                method,
                "/v1/pools/ci/linux",
                &c.admin,
                &[("if-match", "\"1\"")],
                &json!({}),
            )
            .await;
        a.error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
        assert_eq!(a.body["current_generation"], 2);
    }
    // Create-only.
    let a = c
        .put(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-none-match", "*")],
            &spec(14),
        )
        .await;
    a.error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(a.body["current_generation"], 2);
    let a = c
        .put(
            "/v1/pools/ci/new",
            &c.admin,
            &[("if-none-match", "*")],
            &spec(14),
        )
        .await;
    a.expect(StatusCode::CREATED);
    // If-Match on a pool that does not exist cannot hold.
    let a = c
        .put(
            "/v1/pools/ci/ghost",
            &c.admin,
            &[("if-match", "\"1\"")],
            &spec(14),
        )
        .await;
    a.error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert!(a.body["current_generation"].is_null());
    // "*" would overwrite blindly: refused.
    c.put(
        "/v1/pools/ci/linux",
        &c.admin,
        &[("if-match", "*")],
        &spec(15),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    c.put(
        "/v1/pools/ci/linux",
        &c.admin,
        &[("if-match", "2")],
        &spec(15),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    // Nothing of the refused edits landed.
    let got = c.get("/v1/pools/ci/linux", &c.admin).await;
    assert_eq!(
        (
            got.body["generation"].as_i64(),
            got.body["spec"]["max_capacity"].as_i64()
        ),
        (Some(2), Some(12))
    );
}

async fn concurrent_puts_with_one_generation_have_one_winner(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.put(
                "/v1/pools/ci/linux",
                &c.admin,
                &[("if-match", "\"1\"")],
                &spec(20 + i),
            )
            .await
            .status
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    let wins = codes.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = codes
        .iter()
        .filter(|s| **s == StatusCode::PRECONDITION_FAILED)
        .count();
    assert_eq!((wins, refused), (1, 7), "{codes:?}");
    let updates = c
        .store
        .audit_log(Some(&PoolId::new("ci/linux").unwrap()), 100)
        .await
        .unwrap()
        .len();
    assert_eq!(updates, 2, "one create and exactly one update");
}

async fn bad_requests_get_one_error_shape_and_change_nothing(c: Ctx) {
    let send = |ct: &'static str, body: Vec<u8>| {
        let c = &c;
        async move {
            c.send(
                Method::PUT,
                "/v1/pools/ci/linux",
                Some(&c.admin),
                &[("content-type", ct)],
                Some(Body::from(body)),
            )
            .await
        }
    };
    send("application/json", b"{\"provider\": ".to_vec())
        .await
        .error(StatusCode::BAD_REQUEST, "invalid_json");
    send("text/yaml", b"provider: fake".to_vec())
        .await
        .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let mut huge = b"{\"description\": \"".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 1 << 20));
    huge.extend(b"\"}");
    send("application/json", huge)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    c.send(
        Method::PUT,
        "/v1/pools/ci/linux",
        Some(&c.admin),
        &[],
        Some(Body::from(spec(1).to_string())),
    )
    .await
    .error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // Routes that do not exist, and methods a route does not answer, as JSON.
    c.get("/v1/nothing", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    c.send(Method::POST, "/v1/pools", Some(&c.admin), &[], None)
        .await
        .error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    // A pool id that is not one.
    c.get("/v1/pools/CI", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    c.get("/v1/pools/ci/", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    // Query parameters are checked.
    c.get("/v1/pools?limit=0", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    c.get("/v1/pools?provider=azure", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    c.get("/v1/pools?bogus=1", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    c.get("/v1/pools?continuation=forged", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    // Pools that do not exist, for every route that needs one.
    c.patch(
        "/v1/pools/ci/ghost",
        &c.admin,
        &[("if-match", "\"1\"")],
        &json!({}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    c.delete("/v1/pools/ci/ghost", &c.admin, &[("if-match", "\"1\"")])
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    c.post(
        "/v1/pools/ci/ghost/machines",
        &c.admin,
        &json!({"name": "m", "capacity": 1}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    c.get("/v1/pools/ci/ghost/machines", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    // Other bodies and queries are as strict.
    c.send(
        Method::POST,
        "/v1/clients",
        Some(&c.admin),
        &[("content-type", "application/json")],
        Some(Body::from("{\"name\":")),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "invalid_json");
    c.get("/v1/pools/ci/ghost/audit?continuation=forged", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    c.get("/v1/pools/ci/ghost/workers?limit=5000", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    // Nothing was created by any of it.
    assert!(c.store.list_pools().await.unwrap().is_empty());
    assert_eq!(c.store.list_clients().await.unwrap().len(), 1);
}

async fn invalid_specs_report_every_problem_with_its_field(c: Ctx) {
    let bad = json!({
        "provider": "fake",
        "min_capacity": 50,
        "max_capacity": 10,
        "launch_configs": [{"id": "a", "instance_type": "t", "capacity": 0}],
        "scaling": {"service_level": 1.5},
        "max_capcity": 3,
    });
    let a = c.put("/v1/pools/ci/linux", &c.admin, &[], &bad).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    let fields = a.problem_fields();
    for f in [
        "min_capacity",
        "launch_configs[0].capacity",
        "scaling.service_level",
        "max_capcity",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    // The body's id must be the path's.
    let mut other = spec(4);
    other["id"] = json!("ci/other");
    let a = c.put("/v1/pools/ci/linux", &c.admin, &[], &other).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert_eq!(a.body["problems"][0]["field"], "id");
    // A patch that breaks the spec is refused whole.
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    let a = c
        .patch(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"1\"")],
            &json!({"min_capacity": 99, "id": "x/y"}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec");
    assert_eq!(
        a.body["problems"].as_array().unwrap().len(),
        2,
        "{:#}",
        a.body
    );
    assert_eq!(
        c.get("/v1/pools/ci/linux", &c.admin).await.body["generation"],
        1
    );
    // A reserved last segment is refused with the reason.
    let a = c.put("/v1/pools/ci/audit", &c.admin, &[], &spec(1)).await;
    assert_ne!(a.status, StatusCode::CREATED);
}

async fn lists_filter_paginate_and_show_only_readable_pools(c: Ctx) {
    for (id, provider) in [
        ("ci/a", "fake"),
        ("ci/b", "static"),
        ("ci/c", "fake"),
        ("prod/a", "fake"),
        ("prod/b", "fake"),
    ] {
        let mut s = spec(4);
        s["provider"] = json!(provider);
        if provider == "static" {
            s["launch_configs"] = json!([]);
        }
        let a = c.put(&format!("/v1/pools/{id}"), &c.admin, &[], &s).await;
        a.expect(StatusCode::CREATED);
    }
    let ids = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    // Pages of two, followed to the end.
    let mut seen = Vec::new();
    let mut path = "/v1/pools?limit=2".to_owned();
    loop {
        let a = c.get(&path, &c.admin).await;
        a.expect(StatusCode::OK);
        seen.extend(ids(&a));
        match a.body["continuation"].as_str() {
            Some(token) => path = format!("/v1/pools?limit=2&continuation={token}"),
            None => break,
        }
    }
    assert_eq!(seen, ["ci/a", "ci/b", "ci/c", "prod/a", "prod/b"]);
    assert_eq!(
        ids(&c.get("/v1/pools?provider=static", &c.admin).await),
        ["ci/b"]
    );
    assert_eq!(
        ids(&c
            .get("/v1/pools?prefix=prod/&provider=fake", &c.admin)
            .await),
        ["prod/a", "prod/b"]
    );
    // A client that may read ci/* sees only those, even in pages that skip others.
    let ci_reader = c.client("ci-reader", &["pools:read:ci/*"]).await;
    assert_eq!(
        ids(&c.get("/v1/pools", &ci_reader).await),
        ["ci/a", "ci/b", "ci/c"]
    );
    let prod_b = c.client("prod-b", &["pools:read:prod/b"]).await;
    let a = c.get("/v1/pools?limit=1", &prod_b).await;
    assert_eq!(ids(&a), ["prod/b"]);
    // Without any pools:read scope, listing is refused.
    let writer = c.client("writer", &["pools:write:*"]).await;
    let a = c.get("/v1/pools", &writer).await;
    a.forbidden("pools:read:*");
}

async fn tokens_are_checked_on_every_route(c: Ctx) {
    // Every route of the OpenAPI document that names the bearer scheme (all of /v1,
    // and /metrics), with its parameters filled in.
    let doc = serde_json::to_value(api::openapi::document()).unwrap();
    let nobody = c.client("nobody", &["queue:write:zzz"]).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let secured = item
            .as_object()
            .unwrap()
            .values()
            .all(|op| op["security"].as_array().is_some_and(|s| !s.is_empty()));
        if !secured {
            // Probes, and routes whose body carries its own proof: a registration token
            // or machine secret, a webhook signature.
            assert!(
                [
                    "/healthz",
                    "/readyz",
                    "/v1/workers/register",
                    "/v1/webhooks/github"
                ]
                .contains(&path.as_str()),
                "{path} is open"
            );
            continue;
        }
        let worker_route = item.as_object().unwrap().values().all(|op| {
            op["security"]
                .as_array()
                .is_some_and(|s| s.iter().all(|r| r.get("worker").is_some()))
        });
        let concrete = path
            .replace("{pool_id}", "ci/linux")
            .replace("{worker_id}", "w1")
            .replace("{name}", "m1")
            .replace("{client_id}", "0123456789abcdef");
        for method in item.as_object().unwrap().keys() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = json!({});
            let headers = [("content-type", "application/json")];
            // No token.
            let a = c
                .send(
                    method.clone(),
                    &concrete,
                    None,
                    &headers,
                    Some(Body::from(body.to_string())),
                )
                .await;
            a.error(StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                a.header("www-authenticate"),
                "Bearer realm=\"capstan\"",
                "{method} {path}"
            );
            if worker_route {
                // A worker's own routes take only its credential: operator tokens,
                // valid or not, are refused.
                for token in [c.admin.as_str(), "cap_garbage", nobody.as_str()] {
                    let a = c
                        .send(
                            method.clone(),
                            &concrete,
                            Some(token),
                            &headers,
                            Some(Body::from(body.to_string())),
                        )
                        .await;
                    a.error(StatusCode::FORBIDDEN, "forbidden");
                }
                let a = c
                    .send(
                        method.clone(),
                        &concrete,
                        Some(&format!("capw_w1_{}", "0".repeat(64))),
                        &headers,
                        Some(Body::from(body.to_string())),
                    )
                    .await;
                a.error(StatusCode::UNAUTHORIZED, "unauthorized");
                checked += 1;
                continue;
            }
            // A token that is not one, and one with a wrong secret.
            let flipped = if c.admin.ends_with('0') { "1" } else { "0" };
            let wrong_secret = format!("{}{flipped}", &c.admin[..c.admin.len() - 1]);
            for bad in ["cap_garbage", wrong_secret.as_str()] {
                let a = c
                    .send(
                        method.clone(),
                        &concrete,
                        Some(bad),
                        &headers,
                        Some(Body::from(body.to_string())),
                    )
                    .await;
                a.error(StatusCode::UNAUTHORIZED, "unauthorized");
            }
            // A valid token without the scope: 403 naming it (routes that find the
            // pool of a worker or machine first answer 404 for one that does not exist).
            let a = c
                .send(
                    method.clone(),
                    &concrete,
                    Some(&nobody),
                    &headers,
                    Some(Body::from(body.to_string())),
                )
                .await;
            if path.starts_with("/v1/workers/") || path.starts_with("/v1/machines/") {
                a.error(StatusCode::NOT_FOUND, "not_found");
            } else {
                a.error(StatusCode::FORBIDDEN, "forbidden");
                assert!(
                    a.body["missing_scope"].as_str().is_some(),
                    "{method} {path}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} routes checked");
}

async fn scoped_clients_are_refused_outside_their_pools(c: Ctx) {
    let ci = c
        .client("ci-writer", &["pools:write:ci/*", "pools:read:ci/*"])
        .await;
    let a = c.put("/v1/pools/ci/linux", &ci, &[], &spec(3)).await;
    a.expect(StatusCode::CREATED);
    assert!(a.body["id"] == "ci/linux");
    let a = c.put("/v1/pools/prod/x", &ci, &[], &spec(3)).await;
    a.forbidden("pools:write:prod/x");
    assert!(
        c.store
            .get_pool(&PoolId::new("prod/x").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // Deleting needs its own scope.
    let a = c
        .delete("/v1/pools/ci/linux", &ci, &[("if-match", "\"1\"")])
        .await;
    a.forbidden("pools:delete:ci/linux");
    // Creating clients needs clients:admin ...
    c.create_client(&ci, "x", &["pools:write:*"])
        .await
        .forbidden("clients:admin");
    // The audit names the client.
    let entry = &c.get("/v1/pools/ci/linux/audit", &ci).await.body["items"][0];
    assert!(
        entry["actor"]
            .as_str()
            .unwrap()
            .starts_with("client:ci-writer:"),
        "{entry}"
    );
}

async fn clients_grant_only_what_they_hold_and_revocation_is_immediate(c: Ctx) {
    let lead = c
        .client(
            "ci-lead",
            &["clients:admin", "pools:write:ci/*", "pools:read:ci/*"],
        )
        .await;
    // ... and even with it, a client only grants what it holds.
    c.create_client(&lead, "x", &["pools:write:*"])
        .await
        .forbidden("pools:write:*");
    let a = c
        .post(
            "/v1/clients",
            &lead,
            &json!({"name": "bot", "scopes": ["pools:read:ci/linux"], "expires_in_s": 3600}),
        )
        .await;
    a.expect(StatusCode::CREATED);
    let bot = a.body["token"].as_str().unwrap().to_owned();
    let bot_id = a.body["client"]["id"].as_str().unwrap().to_owned();
    assert!(bot.starts_with(&format!("cap_{bot_id}_")));
    assert_eq!(a.body["client"]["expires"], "2027-01-15T09:00:00.000Z");
    // Bad requests name every bad field.
    let a = c
        .post(
            "/v1/clients",
            &c.admin,
            &json!({"name": "", "scopes": ["pools:fly:x", "*"], "expires_in_s": 5}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let fields = a.problem_fields();
    assert_eq!(fields, ["name", "scopes[0]", "expires_in_s"]);
    let a = c
        .post(
            "/v1/clients",
            &c.admin,
            &json!({"name": "x", "scopes": ["*"], "admin": true}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    // The list never shows a secret or its hash.
    let a = c.get("/v1/clients", &c.admin).await;
    a.expect(StatusCode::OK);
    let text = a.body.to_string();
    assert!(!text.contains(&bot[22..]), "secret leaked");
    assert!(!text.contains("sha256"), "hash leaked");
    assert_eq!(a.body["items"].as_array().unwrap().len(), 3);
    // The bot works; the lead cannot revoke the admin (it holds more) but can revoke the bot.
    assert_eq!(c.get("/v1/pools", &bot).await.status, StatusCode::OK);
    let admin_id = &c.admin[4..20];
    let a = c
        .delete(&format!("/v1/clients/{admin_id}"), &lead, &[])
        .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    let a = c.delete(&format!("/v1/clients/{bot_id}"), &lead, &[]).await;
    a.expect(StatusCode::NO_CONTENT);
    let a = c.get("/v1/pools", &bot).await;
    a.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(a.body["message"].as_str().unwrap().contains("revoked"));
    c.delete("/v1/clients/ffffffffffffffff", &c.admin, &[])
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    // Last use is recorded (off the request path).
    let mut used = None;
    for _ in 0..50 {
        used = c
            .store
            .get_client(&bot_id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at;
        if used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(used, Some(now()));
    // An expired token is refused.
    let (_, expired) = api::clients::bootstrap_client(
        &c.store,
        "old",
        &["*".into()],
        Some(60),
        "t",
        now().plus_secs(-120),
    )
    .await
    .unwrap();
    let a = c.get("/v1/pools", &expired).await;
    a.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(a.body["message"].as_str().unwrap().contains("expired"));
}

fn worker(id: &str, pool: &str) -> Worker {
    Worker::requested(
        WorkerId::from_string(id),
        PoolId::new(pool).unwrap(),
        ProviderKind::Fake,
        Some("small".into()),
        1,
        format!("tok-{id}"),
        now(),
    )
}

async fn workers_are_listed_read_and_drained(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    for id in ["w1", "w2", "w3"] {
        c.insert_worker(&worker(id, "ci/linux")).await;
    }
    for (id, states) in [
        ("w1", &[WorkerState::Booting, WorkerState::Ready][..]),
        ("w2", &[WorkerState::Booting][..]),
    ] {
        for s in states {
            c.store
                .transition_worker(&WorkerId::from_string(id), *s, now())
                .await
                .unwrap();
        }
    }
    let ids = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        ids(&c.get("/v1/pools/ci/linux/workers", &c.admin).await),
        ["w1", "w2", "w3"]
    );
    assert_eq!(
        ids(&c
            .get("/v1/pools/ci/linux/workers?state=ready,booting", &c.admin)
            .await),
        ["w1", "w2"]
    );
    let a = c.get("/v1/pools/ci/linux/workers?limit=2", &c.admin).await;
    let next = a.body["continuation"].as_str().unwrap();
    assert_eq!(
        ids(&c
            .get(
                &format!("/v1/pools/ci/linux/workers?limit=2&continuation={next}"),
                &c.admin
            )
            .await),
        ["w3"]
    );
    c.get("/v1/pools/ci/linux/workers?state=sleeping", &c.admin)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    c.get("/v1/pools/ci/none/workers", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    let a = c.get("/v1/workers/w1", &c.admin).await;
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    c.get("/v1/workers/nope", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");

    // Reading is not draining.
    let reader = c.client("reader", &["workers:read:ci/*"]).await;
    assert_eq!(
        c.get("/v1/workers/w1", &reader).await.status,
        StatusCode::OK
    );
    let a = c.drain("w1", &reader).await;
    a.forbidden("workers:drain:ci/linux");
    let a = c.drain("w1", &c.admin).await;
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (StatusCode::OK, Some("draining"))
    );
    let a = c.drain("w1", &c.admin).await;
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (StatusCode::OK, Some("draining")),
        "drain is idempotent"
    );
    let a = c.drain("w2", &c.admin).await;
    a.error(StatusCode::CONFLICT, "conflict");
    assert!(a.body["message"].as_str().unwrap().contains("booting"));
}

async fn deleting_a_pool_with_live_workers_drains_it_first(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    c.insert_worker(&worker("w1", "ci/linux")).await;
    let a = c
        .delete("/v1/pools/ci/linux", &c.admin, &[("if-match", "\"1\"")])
        .await;
    a.expect(StatusCode::ACCEPTED);
    assert_eq!(
        (a.body["status"].as_str(), a.body["generation"].as_i64()),
        (Some("deleting"), Some(2))
    );
    c.put(
        "/v1/pools/ci/linux",
        &c.admin,
        &[("if-match", "\"2\"")],
        &spec(3),
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    let got = c.get("/v1/pools/ci/linux", &c.admin).await;
    assert_eq!(got.body["status"], "deleting");
    // Asking again is harmless.
    let a = c
        .delete("/v1/pools/ci/linux", &c.admin, &[("if-match", "\"2\"")])
        .await;
    a.expect(StatusCode::ACCEPTED);
}

async fn errors_and_audit_are_served(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    for g in 1..4 {
        c.put(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", &format!("\"{g}\""))],
            &spec(10 + g),
        )
        .await;
    }
    let id = PoolId::new("ci/linux").unwrap();
    for _ in 0..3 {
        c.store
            .record_pool_error(
                &id,
                Some("small"),
                "insufficient_capacity",
                "no t left",
                now(),
            )
            .await
            .unwrap();
    }
    let a = c.get("/v1/pools/ci/linux/errors", &c.admin).await;
    a.expect(StatusCode::OK);
    assert_eq!(a.body["items"][0]["count"], 3);
    assert_eq!(a.body["items"][0]["launch_config_id"], "small");
    let a = c.get("/v1/pools/ci/linux/audit?limit=3", &c.admin).await;
    let gens: Vec<i64> = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["new_generation"].as_i64().unwrap())
        .collect();
    assert_eq!(gens, [4, 3, 2]);
    let next = a.body["continuation"].as_str().unwrap();
    let a = c
        .get(
            &format!("/v1/pools/ci/linux/audit?limit=3&continuation={next}"),
            &c.admin,
        )
        .await;
    assert_eq!(a.body["items"][0]["action"], "create");
    assert!(a.body["continuation"].is_null());
    c.get("/v1/pools/ci/none/errors", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    c.get("/v1/pools/ci/none/audit", &c.admin)
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

async fn static_machines_are_registered_listed_and_removed(c: Ctx) {
    let a = c
        .put(
            "/v1/pools/lab/macs",
            &c.admin,
            &[],
            &json!({"provider": "static", "max_capacity": 8}),
        )
        .await;
    a.expect(StatusCode::CREATED);
    let a = c
        .post(
            "/v1/pools/lab/macs/machines",
            &c.admin,
            &json!({"name": "mac-01", "capacity": 2, "labels": {"arch": "arm64"}}),
        )
        .await;
    a.expect(StatusCode::CREATED);
    let secret = a.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("csm_"));
    let a = c.get("/v1/pools/lab/macs/machines", &c.admin).await;
    assert_eq!(a.body["items"][0]["name"], "mac-01");
    assert_eq!(a.body["items"][0]["assignment"], "idle");
    assert!(!a.body.to_string().contains(&secret[4..]));
    // The same name again, a zero capacity, a cloud pool: refused.
    let again = json!({"name": "mac-01", "capacity": 2});
    c.post("/v1/pools/lab/macs/machines", &c.admin, &again)
        .await
        .error(StatusCode::CONFLICT, "conflict");
    let a = c
        .post(
            "/v1/pools/lab/macs/machines",
            &c.admin,
            &json!({"name": "mac-02", "capacity": 0}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(a.body["problems"][0]["field"], "capacity");
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    c.post(
        "/v1/pools/ci/linux/machines",
        &c.admin,
        &json!({"name": "m", "capacity": 1}),
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    // Removing needs pools:write on the machine's pool.
    let other = c.client("other", &["pools:write:ci/*"]).await;
    let a = c.delete("/v1/machines/mac-01", &other, &[]).await;
    a.forbidden("pools:write:lab/macs");
    let a = c.delete("/v1/machines/mac-01", &c.admin, &[]).await;
    a.expect(StatusCode::NO_CONTENT);
    c.delete("/v1/machines/mac-01", &c.admin, &[])
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

/// A wake hook that records the pools it was called for.
fn recording_wake() -> (Wake, Arc<Mutex<Vec<String>>>) {
    let woken = Arc::new(Mutex::new(Vec::new()));
    let log = woken.clone();
    (
        Wake::new(move |id: &PoolId| log.lock().unwrap().push(id.to_string())),
        woken,
    )
}

/// Takes what the hook recorded so far.
fn take(woken: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(&mut *woken.lock().unwrap())
}

fn at(secs_from_now: i64) -> String {
    now().plus_secs(secs_from_now).to_string()
}

async fn stored_samples(c: &Ctx, pool: &str) -> Vec<QueueSample> {
    c.store
        .queue_samples(
            &PoolId::new(pool).unwrap(),
            now().plus_secs(-40 * 86_400),
            now().plus_secs(3600),
        )
        .await
        .unwrap()
}

async fn queue_samples_are_stored_with_estimated_arrivals(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    let a = c
        .pushed(
            "ci/linux",
            json!([
                {"at": at(-30), "pending": 4, "running": 2, "arrivals": 7, "completions": 1},
                {"at": at(-20), "pending": 9, "running": 2, "completions": 3},
                {"at": at(-10), "pending": 1, "running": 2},
            ]),
        )
        .await;
    assert_eq!(a.body, json!({"accepted": 3}));
    // Arrivals: given; grew 5 plus 3 completions; shrank with no completions.
    let got = stored_samples(&c, "ci/linux").await;
    let rows: Vec<(i64, u32, u32, u32, u32)> = got
        .iter()
        .map(|s| {
            (
                s.at.secs_since(now()) as i64,
                s.pending,
                s.running,
                s.arrivals,
                s.completions,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(-30, 4, 2, 7, 1), (-20, 9, 2, 8, 3), (-10, 1, 2, 0, 0)]
    );
    // The next batch differences against the latest stored sample; `at` defaults to
    // now. The pool id may be sent encoded too.
    c.pushed(
        "ci%2Flinux",
        json!([{"pending": 6, "running": 2, "completions": 2}]),
    )
    .await;
    let got = stored_samples(&c, "ci/linux").await;
    assert_eq!(
        got.last().unwrap(),
        &QueueSample {
            at: now(),
            pending: 6,
            running: 2,
            arrivals: 7,
            completions: 2
        }
    );
    // Re-pushing an instant replaces it.
    c.pushed(
        "ci/linux",
        json!([{"at": at(0), "pending": 6, "running": 2, "arrivals": 1}]),
    )
    .await;
    let got = stored_samples(&c, "ci/linux").await;
    assert_eq!((got.len(), got[3].arrivals), (4, 1));
    // A pool's first sample without arrivals counts its completions only.
    c.put("/v1/pools/queue", &c.admin, &[], &spec(10)).await;
    c.pushed(
        "queue",
        json!([{"pending": 50, "running": 0, "completions": 4}]),
    )
    .await;
    assert_eq!(stored_samples(&c, "queue").await[0].arrivals, 4);
    assert_eq!(stored_samples(&c, "ci/linux").await.len(), 4);

    // The scope is queue:write on the pool; pools:write is not it.
    let writer = c.client("writer", &["pools:write:*", "pools:read:*"]).await;
    let a = c
        .push("ci/linux", &writer, json!([{"pending": 1, "running": 0}]))
        .await;
    a.forbidden("queue:write:ci/linux");
    let pusher = c.client("pusher", &["queue:write:ci/*"]).await;
    let a = c
        .push(
            "ci/linux",
            &pusher,
            json!([{"at": at(5), "pending": 1, "running": 0}]),
        )
        .await;
    a.expect(StatusCode::ACCEPTED);
    // No such pool: 404; a pool being deleted: 409.
    c.push("ci/none", &c.admin, json!([{"pending": 1, "running": 0}]))
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
    c.insert_worker(&worker("w1", "ci/linux")).await;
    let a = c
        .delete("/v1/pools/ci/linux", &c.admin, &[("if-match", "\"1\"")])
        .await;
    a.expect(StatusCode::ACCEPTED);
    c.push(
        "ci/linux",
        &c.admin,
        json!([{"at": at(10), "pending": 1, "running": 0}]),
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    assert_eq!(stored_samples(&c, "ci/linux").await.len(), 5);
}

async fn bad_queue_batches_name_every_field_and_store_nothing(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    let a = c
        .push(
            "ci/linux",
            &c.admin,
            json!([
                {"at": at(-50), "pending": 1, "running": 0},
                {"at": at(61), "pending": 1, "running": 0},
                {"at": at(-35 * 86_400 - 1), "pending": 1, "running": 0},
                {"at": at(-40), "pending": 1_000_001, "running": 0, "arrivals": 1_000_001, "completions": 1_000_001},
                {"at": at(-30), "pending": 1, "running": 1_000_001},
                {"at": at(-30), "pending": 1, "running": 0},
                {"at": "noon", "pending": 1, "running": 0},
                {"pending": -1, "running": 0},
                {"pending": 1, "running": 0, "queued": 3},
                {"running": 0},
                {"pending": 1, "running": 0},
                {"pending": 1, "running": 0},
            ]),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let fields = a.problem_fields();
    assert_eq!(
        fields,
        [
            "samples[1].at",
            "samples[2].at",
            "samples[2].at",
            "samples[3].pending",
            "samples[3].arrivals",
            "samples[3].completions",
            "samples[4].running",
            "samples[5].at",
            "samples[6].at",
            "samples[7].pending",
            "samples[8].queued",
            "samples[9]",
            "samples[11].at",
        ],
        "{:#}",
        a.body
    );
    let message = |i: usize| a.body["problems"][i]["message"].as_str().unwrap();
    assert!(message(0).contains("at most 60 s ahead"), "{}", message(0));
    assert!(message(1).contains("35 days"), "{}", message(1));
    assert!(message(3).contains("at most 1000000"), "{}", message(3));
    assert!(
        message(7).contains("later than samples[4].at"),
        "{}",
        message(7)
    );
    assert!(message(10).contains("queued"), "{}", message(10));
    assert!(message(11).contains("pending"), "{}", message(11));
    assert!(message(12).contains("only the newest"), "{}", message(12));
    // One bad sample among good ones: nothing stored.
    let a = c
        .push(
            "ci/linux",
            &c.admin,
            json!([
                {"at": at(-20), "pending": 1, "running": 0},
                {"at": at(-10), "pending": 1, "running": "two"},
            ]),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(a.body["problems"][0]["field"], "samples[1].running");
    assert!(stored_samples(&c, "ci/linux").await.is_empty());
    // The batch itself: empty, too long, not a list, unknown keys, not JSON.
    for (body, field) in [
        (json!({"samples": []}), "samples"),
        (json!({"samples": {"pending": 1}}), "samples"),
        (json!({"samples": [], "pool": "x"}), "pool"),
        (json!({}), ""),
    ] {
        let a = c.post("/v1/pools/ci/linux/queue", &c.admin, &body).await;
        a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        assert_eq!(a.body["problems"][0]["field"], field, "{body}");
    }
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"at": at(i - 2000), "pending": 0, "running": 0}))
        .collect();
    let a = c.push("ci/linux", &c.admin, json!(many)).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(
        a.body["message"].as_str().unwrap().contains("1 to 1000"),
        "{:#}",
        a.body
    );
    let a = c
        .send(
            Method::POST,
            "/v1/pools/ci/linux/queue",
            Some(&c.admin),
            &[("content-type", "application/json")],
            Some(Body::from("{\"samples\": [")),
        )
        .await;
    a.error(StatusCode::BAD_REQUEST, "invalid_json");
    let a = c
        .send(
            Method::POST,
            "/v1/pools/ci/linux/queue",
            Some(&c.admin),
            &[("content-type", "text/plain")],
            Some(Body::from("pending=1")),
        )
        .await;
    a.error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    // 1000 samples are fine.
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"at": at(i - 2000), "pending": 0, "running": 0}))
        .collect();
    let a = c.push("ci/linux", &c.admin, json!(many)).await;
    assert_eq!(a.body, json!({"accepted": 1000}));
}

async fn queue_pushes_and_pool_edits_wake_the_loop(mut c: Ctx) {
    let (wake, woken) = recording_wake();
    c.state = c.state.clone().with_wake(wake);
    // Creating and changing a pool wakes it; an unchanged PUT does not.
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    assert_eq!(take(&woken), ["ci/linux"]);
    c.put(
        "/v1/pools/ci/linux",
        &c.admin,
        &[("if-match", "\"1\"")],
        &spec(10),
    )
    .await;
    assert!(take(&woken).is_empty());
    let a = c
        .patch(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"1\"")],
            &json!({"max_capacity": 12}),
        )
        .await;
    a.expect(StatusCode::OK);
    assert_eq!(take(&woken), ["ci/linux"]);

    // No workers: any pending task outnumbers the idle slots.
    let sample =
        |pending: u32, secs: i64| json!([{"at": at(secs), "pending": pending, "running": 0}]);
    let pool = "ci/linux";
    c.pushed(pool, sample(0, -100)).await;
    assert!(take(&woken).is_empty(), "nothing pending");
    c.pushed(pool, sample(1, -90)).await;
    assert_eq!(take(&woken), ["ci/linux"]);

    // Ready workers with 4 + 2 slots, 1 busy: 5 idle. A booting one does not count.
    for (id, capacity, busy, state) in [
        ("w1", 4, 1, WorkerState::Ready),
        ("w2", 2, 0, WorkerState::Ready),
        ("w3", 8, 0, WorkerState::Booting),
    ] {
        let mut w = worker(id, "ci/linux");
        w.capacity = capacity;
        w.busy_slots = busy;
        w.state = state;
        c.insert_worker(&w).await;
    }
    c.pushed(pool, sample(5, -80)).await;
    assert!(take(&woken).is_empty(), "5 pending fit 5 idle slots");
    c.pushed(pool, sample(6, -70)).await;
    assert_eq!(take(&woken), ["ci/linux"]);
    // Only the newest sample of a batch counts.
    c.pushed(
        pool,
        json!([
            {"at": at(-60), "pending": 100, "running": 0},
            {"at": at(-50), "pending": 2, "running": 0},
        ]),
    )
    .await;
    assert!(take(&woken).is_empty());
    // A refused batch wakes nothing.
    c.push(pool, &c.admin, sample(100, 3600))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert!(take(&woken).is_empty());
    // Marking the pool deleting wakes it (its workers drain).
    let a = c
        .delete("/v1/pools/ci/linux", &c.admin, &[("if-match", "\"2\"")])
        .await;
    a.expect(StatusCode::ACCEPTED);
    assert_eq!(take(&woken), ["ci/linux"]);
}

fn a_plan(secs_from_now: i64, actions: bool) -> Plan {
    let mut plan_actions = Vec::new();
    if actions {
        plan_actions.push(capstan_core::Action::Launch {
            launch_config_id: "small".into(),
            zone: None,
            count: 2,
            idempotency_token: format!("ci/linux-{secs_from_now}-0"),
        });
        plan_actions.push(capstan_core::Action::Terminate {
            worker: WorkerId::from_string("w-old"),
            reason: TerminateReason::MaxLifetime,
        });
    }
    Plan {
        actions: plan_actions,
        report: PlanReport {
            at: now().plus_secs(secs_from_now),
            policy: ScalingPolicy::Forecast,
            forecast_slots: 5,
            backlog_slots: 3,
            boot_hedge_slots: 0,
            min_slots: 0,
            schedule_slots: 0,
            max_slots: 10,
            budget_slots: None,
            target_slots: 5,
            target_set_by: TargetTerm::Forecast,
            keep_slots: 5,
            held_slots: 0,
            idle_timeout_s: Some(600.0),
            idle_timeout_chosen: false,
            current_slots: 3,
            launch_slots: if actions { 2 } else { 0 },
            launched_last_minute: 0,
            rate_limited: false,
            unmet_slots: 0,
            skipped_offerings: vec![],
        },
    }
}

fn a_forecast(secs_from_now: i64) -> Forecast {
    let made_at = now().plus_secs(secs_from_now);
    Forecast {
        made_at,
        policy: ScalingPolicy::Forecast,
        lead_s: 120.0,
        target_slots: 5,
        backlog_slots: 3,
        expected_busy_slots: 4.2,
        points: (1..=3)
            .map(|i| ForecastPoint {
                at: made_at.plus_secs(60 * i),
                mean: 4.0 + i as f64,
                quantiles: vec![
                    Quantile {
                        p: 0.5,
                        slots: 4.0 + i as f64,
                    },
                    Quantile {
                        p: 0.9,
                        slots: 6.0 + i as f64,
                    },
                ],
            })
            .collect(),
    }
}

async fn plans_and_forecasts_are_served_once_the_loop_records_them(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    // Not planned yet: 404 saying so; no pool: 404 saying that.
    for route in ["plan", "forecast"] {
        let a = c
            .get(&format!("/v1/pools/ci/linux/{route}"), &c.admin)
            .await;
        a.error(StatusCode::NOT_FOUND, "not_found");
        assert!(
            a.body["message"]
                .as_str()
                .unwrap()
                .contains("pool ci/linux has not been planned yet"),
            "{:#}",
            a.body
        );
        let a = c.get(&format!("/v1/pools/ci/none/{route}"), &c.admin).await;
        a.error(StatusCode::NOT_FOUND, "not_found");
        assert_eq!(a.body["message"], "no pool ci/none");
    }

    // The loop (a replica holding the lease) records plans.
    let leases = c.store.acquire_leases("r", 60_000).await.unwrap();
    let fence = &leases
        .iter()
        .find(|l| l.fence.pool_id.as_str() == "ci/linux")
        .unwrap()
        .fence;
    for (secs, acted) in [(-7200, true), (-1800, true), (-600, false), (-10, true)] {
        c.store
            .record_plan(fence, "r", &a_plan(secs, acted), &a_forecast(secs))
            .await
            .unwrap();
    }
    let latest = a_plan(-10, true);

    let a = c.get("/v1/pools/ci/linux/plan", &c.admin).await;
    a.expect(StatusCode::OK);
    assert_eq!(a.body["pool_id"], "ci/linux");
    assert_eq!(a.body["at"], at(-10));
    assert_eq!(a.body["owner"], "r");
    assert_eq!(a.body["plan"], serde_json::to_value(&latest).unwrap());
    assert_eq!(a.body["summary"], latest.summary());
    let summary = a.body["summary"].as_str().unwrap();
    assert!(
        summary.contains("target 5 slots, set by the forecast")
            && summary.contains("launching 2 slots: 2 × small")
            && summary.contains("terminating 1: max_lifetime w-old"),
        "{summary}"
    );
    // The plans that acted in the last hour, newest first.
    let recent = a.body["recent_actions"].as_array().unwrap();
    let times: Vec<&str> = recent.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert_eq!(times, [at(-10), at(-1800)]);
    assert_eq!(recent[0]["actions"][0]["type"], "launch");
    assert_eq!(recent[0]["actions"][1]["reason"], "max_lifetime");
    assert!(recent[1]["summary"].as_str().unwrap().contains("launching"));

    // The forecast, its band, and the queue history (default 6 h).
    let id = PoolId::new("ci/linux").unwrap();
    let sample = |secs: i64, pending| QueueSample {
        at: now().plus_secs(secs),
        pending,
        running: 1,
        arrivals: 1,
        completions: 1,
    };
    c.store
        .record_queue_samples(
            &id,
            &[
                sample(-7 * 3600, 1),
                sample(-3600, 2),
                sample(-30, 3),
                sample(30, 4),
            ],
        )
        .await
        .unwrap();
    let a = c.get("/v1/pools/ci/linux/forecast", &c.admin).await;
    a.expect(StatusCode::OK);
    assert_eq!(a.body["made_at"], at(-10));
    assert_eq!(
        a.body["forecast"],
        serde_json::to_value(a_forecast(-10)).unwrap()
    );
    assert_eq!(a.body["forecast"]["points"][2]["quantiles"][1]["p"], 0.9);
    let pending = |a: &Answer| -> Vec<u64> {
        a.body["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["pending"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(pending(&a), [2, 3, 4]);
    let a = c
        .get("/v1/pools/ci/linux/forecast?history_s=60", &c.admin)
        .await;
    assert_eq!(pending(&a), [3, 4]);
    let a = c
        .get("/v1/pools/ci/linux/forecast?history_s=3024000", &c.admin)
        .await;
    // 35 days in the default 720 points: 2-hour buckets (1 hour would take 841). Now
    // is a multiple of 2 h, so the samples an hour and 30 s ago share [now - 2 h, now)
    // and the bucket shows their maximum.
    assert_eq!(pending(&a), [1, 3, 4]);
    assert_eq!(a.body["history"][1]["width_s"], 7200);
    assert_eq!(a.body["history"][1]["samples"], 2);
    assert_eq!(a.body["history"][1]["pending_mean"], 2.5);
    // Downsampled: 35 days in at most 2 points. Widths are whole weeks past 7 days;
    // 14, 21 and 28 days need 3 or 4 epoch-aligned buckets to cover the period, 35
    // days (3,024,000 s) 2, and all four samples fall in the one starting at 595 ×
    // 3,024,000 s = now - 720,000 s.
    let a = c
        .get(
            "/v1/pools/ci/linux/forecast?history_s=3024000&max_points=2",
            &c.admin,
        )
        .await;
    a.expect(StatusCode::OK);
    assert_eq!(
        a.body["history"],
        serde_json::json!([{
            "at": at(-720_000),
            "width_s": 3_024_000,
            "samples": 4,
            "pending": 4,
            "pending_mean": 2.5,
            "running": 1,
            "running_mean": 1.0,
            "arrivals": 4,
            "completions": 4,
        }])
    );
    // History may reach back as far as rollups are kept (up to ten years).
    c.get("/v1/pools/ci/linux/forecast?history_s=316224000", &c.admin)
        .await
        .expect(StatusCode::OK);
    for bad in [
        "history_s=0",
        "history_s=316224001",
        "history_s=6h",
        "max_points=0",
        "max_points=10001",
        "since=1",
    ] {
        c.get(&format!("/v1/pools/ci/linux/forecast?{bad}"), &c.admin)
            .await
            .error(StatusCode::BAD_REQUEST, "bad_request");
    }
    let a = c
        .get("/v1/pools/ci/linux/forecast?max_points=0", &c.admin)
        .await;
    assert_eq!(
        a.body["message"],
        "max_points: must be between 1 and 10000, got 0"
    );

    // Reading needs pools:read on the pool.
    let other = c.client("other", &["pools:read:prod/*"]).await;
    for route in ["plan", "forecast"] {
        let a = c.get(&format!("/v1/pools/ci/linux/{route}"), &other).await;
        a.forbidden("pools:read:ci/linux");
    }
    let reader = c.client("reader", &["pools:read:ci/*"]).await;
    assert_eq!(
        c.get("/v1/pools/ci/linux/plan", &reader).await.status,
        StatusCode::OK
    );
}

async fn metrics_need_their_scope_and_serve_the_source(mut c: Ctx) {
    // Without a source the body is empty.
    let (status, headers, body) = c
        .send_raw(Method::GET, "/metrics", Some(&c.admin), &[], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(body.is_empty());

    let text = "# TYPE capstan_ticks counter\ncapstan_ticks_total 3\n# EOF\n";
    c.state = c
        .state
        .clone()
        .with_metrics(MetricsSource::new(move || text.to_owned()));
    c.send(Method::GET, "/metrics", None, &[], None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let reader = c.client("reader", &["pools:read:*"]).await;
    let a = c.get("/metrics", &reader).await;
    a.forbidden("metrics:read");
    let scraper = c.client("prometheus", &["metrics:read"]).await;
    for token in [&scraper, &c.admin] {
        let (status, headers, body) = c
            .send_raw(Method::GET, "/metrics", Some(token), &[], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(body, text);
    }
    // The scope is listed as it is, and only a holder hands it on.
    let a = c.get("/v1/clients", &c.admin).await;
    assert!(
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|cl| cl["scopes"] == json!(["metrics:read"])),
        "{:#}",
        a.body
    );
    let admin_only = c.client("admins", &["clients:admin"]).await;
    c.create_client(&admin_only, "x", &["metrics:read"])
        .await
        .forbidden("metrics:read");
}

/// PostgreSQL refuses text holding a NUL byte; a request carrying one is a client
/// mistake (400 there), never a 500. (Found by the fuzz run: `?prefix=%2B%00`.)
async fn nul_bytes_never_reach_the_database(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    let forged = |after: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"v": 1, "after": after}).to_string())
    };
    let nul = forged("ci\u{0}");
    let mut bad = Vec::new();
    for (method, path) in [
        (Method::GET, "/v1/pools?prefix=ci%00".to_owned()),
        (Method::GET, format!("/v1/pools?continuation={nul}")),
        (
            Method::GET,
            format!("/v1/pools/ci/linux/audit?continuation={nul}"),
        ),
        (
            Method::GET,
            format!("/v1/pools/ci/linux/workers?continuation={nul}"),
        ),
        (Method::GET, "/v1/workers/w%00".to_owned()),
        (Method::POST, "/v1/workers/w%00/drain".to_owned()),
        (Method::DELETE, "/v1/machines/m%00".to_owned()),
        (Method::DELETE, "/v1/clients/0123456789abcde%00".to_owned()),
        (Method::GET, "/v1/pools/ci%00/plan".to_owned()),
    ] {
        let a = c
            .send(method.clone(), &path, Some(&c.admin), &[], None)
            .await;
        // SQLite stores NUL, so a lookup there just finds nothing.
        if a.status.is_server_error()
            || (c.store.kind() == BackendKind::Postgres && !a.status.is_client_error())
        {
            bad.push(format!("{method} {path}: {} {}", a.status, a.body));
        }
    }
    for body in [
        json!({"name": "m\u{0}", "capacity": 1}),
        json!({"name": "m", "capacity": 1, "labels": {"a\u{0}": "b\u{0}"}}),
    ] {
        c.put(
            "/v1/pools/lab/macs",
            &c.admin,
            &[],
            &json!({"provider": "static", "max_capacity": 8}),
        )
        .await;
        let a = c.post("/v1/pools/lab/macs/machines", &c.admin, &body).await;
        if a.status.is_server_error() {
            bad.push(format!("{body}: {} {}", a.status, a.body));
        }
    }
    let a = c
        .put(
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"1\"")],
            &json!({"provider": "fake", "max_capacity": 10, "description": "a\u{0}b",
                     "launch_configs": [{"id": "small", "instance_type": "t\u{0}"}]}),
        )
        .await;
    if a.status.is_server_error() {
        bad.push(format!("PUT with NUL in the spec: {} {}", a.status, a.body));
    }
    assert!(bad.is_empty(), "{bad:#?}");
}

/// Records the launch intent of worker `id` of `pool` created `age_s` ago, booting
/// with registration token `token`.
async fn launched(c: &Ctx, pool: &str, id: &str, token: &str, age_s: i64) {
    let leases = c.store.acquire_leases("test", 600_000).await.unwrap();
    let fence = match leases.iter().find(|l| l.fence.pool_id.as_str() == pool) {
        Some(l) => l.fence.clone(),
        None => {
            // Already held from an earlier call: re-acquiring renews and returns it.
            c.store
                .acquire_leases("test", 600_000)
                .await
                .unwrap()
                .into_iter()
                .find(|l| l.fence.pool_id.as_str() == pool)
                .expect("the test holds the lease")
                .fence
        }
    };
    let mut w = worker(id, pool);
    w.created_at = now().plus_secs(-age_s);
    w.state_changed_at = w.created_at;
    c.store
        .insert_launch_intent(&fence, &w, &capstan_core::secret::digest_hex(token))
        .await
        .unwrap();
}

async fn register(c: &Ctx, body: Value) -> Answer {
    c.send(
        Method::POST,
        "/v1/workers/register",
        None,
        &[("content-type", "application/json")],
        Some(Body::from(body.to_string())),
    )
    .await
}

async fn workers_register_once_and_their_credential_only_opens_their_own_routes(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10))
        .await
        .expect(StatusCode::CREATED);
    c.put("/v1/pools/ci/other", &c.admin, &[], &spec(10))
        .await
        .expect(StatusCode::CREATED);
    launched(&c, "ci/linux", "w-1", "token-one", 10).await;
    launched(&c, "ci/linux", "w-2", "token-two", 10).await;
    // Older than the pool's registration timeout (900 s by default).
    launched(&c, "ci/linux", "w-old", "token-old", 901).await;

    // Wrong token, unknown worker, expired token, malformed bodies.
    register(
        &c,
        json!({"worker_id": "w-1", "registration_token": "token-two"}),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    register(
        &c,
        json!({"worker_id": "w-9", "registration_token": "token-one"}),
    )
    .await
    .error(StatusCode::UNAUTHORIZED, "unauthorized");
    let a = register(
        &c,
        json!({"worker_id": "w-old", "registration_token": "token-old"}),
    )
    .await;
    a.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        a.body["message"].as_str().unwrap().contains("expired"),
        "{:#}",
        a.body
    );
    for bad in [
        json!({"worker_id": "w-1"}),
        json!({"worker_id": "w-1", "registration_token": "token-one", "machine": "m"}),
        json!({"worker_id": "w-1", "registration_token": 7}),
        json!({"worker_id": "w-1", "registration_token": "token-one", "extra": 1}),
    ] {
        register(&c, bad)
            .await
            .expect(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let w1 = c
        .store
        .get_worker(&WorkerId::from_string("w-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        w1.state,
        WorkerState::Requested,
        "bad registrations change nothing"
    );

    // The right token: ready, with a credential; the same token again is refused.
    let a = register(
        &c,
        json!({"worker_id": "w-1", "registration_token": "token-one"}),
    )
    .await;
    a.expect(StatusCode::OK);
    assert_eq!(a.body["pool_id"], "ci/linux");
    assert_eq!(
        a.body["heartbeat_interval_s"], 60,
        "a quarter of the 300 s heartbeat timeout, at most 60"
    );
    let cred1 = a.body["credential"].as_str().unwrap().to_owned();
    assert!(cred1.starts_with("capw_w-1_"), "{cred1}");
    let a = register(
        &c,
        json!({"worker_id": "w-1", "registration_token": "token-one"}),
    )
    .await;
    a.error(StatusCode::CONFLICT, "conflict");
    assert!(
        a.body["message"].as_str().unwrap().contains("already used"),
        "{:#}",
        a.body
    );
    let w1 = c
        .store
        .get_worker(&WorkerId::from_string("w-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w1.state, WorkerState::Ready);
    assert_eq!(w1.registered_at, Some(now()));
    let cred2 = register(
        &c,
        json!({"worker_id": "w-2", "registration_token": "token-two"}),
    )
    .await
    .body["credential"]
        .as_str()
        .unwrap()
        .to_owned();

    // Heartbeats: busy slots and finished tasks.
    let hb = |cred: String, worker: &'static str, body: Value| {
        let c = &c;
        async move {
            c.json(
                Method::POST,
                &format!("/v1/workers/{worker}/heartbeat"),
                &cred,
                &[],
                &body,
            )
            .await
        }
    };
    let finished = json!([{"finished_at": "2027-01-15T08:00:00.250Z", "duration_s": 12.5}]);
    let a = hb(
        cred1.clone(),
        "w-1",
        json!({"busy_slots": 1, "finished_tasks": finished}),
    )
    .await;
    a.expect(StatusCode::OK);
    assert_eq!(a.body["action"], "continue");
    // Resent after a lost answer: the task is stored once.
    hb(
        cred1.clone(),
        "w-1",
        json!({"busy_slots": 1, "finished_tasks": finished}),
    )
    .await
    .expect(StatusCode::OK);
    let w1 = c
        .store
        .get_worker(&WorkerId::from_string("w-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((w1.busy_slots, w1.idle_since), (1, None));
    let runs = c
        .store
        .task_runs_recorded(
            &PoolId::new("ci/linux").unwrap(),
            Timestamp::from_unix_ms(0),
            now(),
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].1.duration_ms, 12_500);
    let a = hb(cred1.clone(), "w-1", json!({"busy_slots": 2})).await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(a.problem_fields(), ["busy_slots"]);
    let a = hb(
        cred1.clone(),
        "w-1",
        json!({"busy_slots": 0, "finished_tasks": [{"finished_at": "2027-01-15T08:00:00Z", "duration_s": -1}]}),
    )
    .await;
    assert_eq!(a.problem_fields(), ["finished_tasks[0].duration_s"]);

    // A credential opens its own worker's routes and nothing else.
    hb(cred1.clone(), "w-2", json!({"busy_slots": 0}))
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    c.json(
        Method::POST,
        "/v1/workers/w-2/interruption",
        &cred1,
        &[],
        &json!({"source": "ec2", "action": "terminate"}),
    )
    .await
    .error(StatusCode::FORBIDDEN, "forbidden");
    for path in [
        "/v1/pools",
        "/v1/pools/ci/linux",
        "/v1/pools/ci/linux/workers",
        "/v1/workers/w-1",
        "/v1/workers/w-2",
        "/metrics",
    ] {
        c.get(path, &cred1)
            .await
            .error(StatusCode::FORBIDDEN, "forbidden");
    }
    c.put("/v1/pools/ci/other", &cred1, &[], &spec(3))
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    c.drain("w-2", &cred1)
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    c.push("ci/linux", &cred1, json!([{"pending": 5}]))
        .await
        .error(StatusCode::FORBIDDEN, "forbidden");
    let w2 = c
        .store
        .get_worker(&WorkerId::from_string("w-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w2.state, WorkerState::Ready, "nothing changed for w-2");

    // An operator drain reaches the worker through its heartbeat answer.
    c.drain("w-1", &c.admin).await.expect(StatusCode::OK);
    let a = hb(cred1.clone(), "w-1", json!({"busy_slots": 1})).await;
    assert_eq!(a.body["action"], "drain");

    // An interruption notice: draining, with the notice recorded for the operator.
    let a = c
        .json(
            Method::POST,
            "/v1/workers/w-2/interruption",
            &cred2,
            &[],
            &json!({"source": "ec2", "action": "terminate", "at": "2027-01-15T08:02:00Z"}),
        )
        .await;
    a.expect(StatusCode::ACCEPTED);
    assert_eq!(a.body["action"], "drain");
    let w2 = c
        .store
        .get_worker(&WorkerId::from_string("w-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w2.state, WorkerState::Draining);
    assert!(
        w2.failure
            .as_deref()
            .unwrap()
            .contains("interruption notice from EC2"),
        "{w2:?}"
    );

    // Terminating, then terminated: told to stop; an hour after termination the
    // credential is revoked.
    for to in [WorkerState::Terminating, WorkerState::Terminated] {
        c.store
            .transition_worker(&WorkerId::from_string("w-1"), to, now())
            .await
            .unwrap();
        let a = hb(cred1.clone(), "w-1", json!({"busy_slots": 0})).await;
        a.expect(StatusCode::OK);
        assert_eq!(a.body["action"], "terminate");
    }
    c.store
        .modify_worker(&WorkerId::from_string("w-1"), |w| {
            w.state_changed_at = now().plus_secs(-3601);
            Ok(())
        })
        .await
        .unwrap();
    let a = hb(cred1.clone(), "w-1", json!({"busy_slots": 0})).await;
    a.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(
        a.body["message"].as_str().unwrap().contains("revoked"),
        "{:#}",
        a.body
    );
    // A credential with one digit changed is no credential.
    let flipped = if cred2.ends_with('0') { "1" } else { "0" };
    let forged = format!("{}{flipped}", &cred2[..cred2.len() - 1]);
    hb(forged, "w-2", json!({"busy_slots": 0}))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
}
