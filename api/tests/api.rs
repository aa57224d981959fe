//! The operator API in-process (`tower::ServiceExt::oneshot`), every case once on SQLite
//! and once on PostgreSQL.
//!
//! Every case is an `async fn(Ctx)`; `store::on_both_backends!` turns it into a
//! `sqlite::*` and a `postgres::*` test. PostgreSQL cases each get a fresh database from
//! `store::scratch`, dropped even when the case panics (skipped with a printed reason
//! when PostgreSQL is unreachable, failed under `CI=true`).

use std::future::Future;

use api::{AppState, Clock, Readiness};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use capstan_core::{PoolId, ProviderKind, Timestamp, Worker, WorkerId, WorkerState};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use store::Store;
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

    /// Asserts the status and that the body is the one error shape.
    fn error(&self, status: StatusCode, code: &str) -> &Self {
        assert_eq!(self.status, status, "{:#}", self.body);
        assert_eq!(self.body["error"], code, "{:#}", self.body);
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()));
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

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Body>,
    ) -> Answer {
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

    /// A client holding `scopes`, created by the admin through the API.
    async fn client(&self, name: &str, scopes: &[&str]) -> String {
        let a = self
            .json(
                Method::POST,
                "/v1/clients",
                &self.admin,
                &[],
                &json!({"name": name, "scopes": scopes}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{:#}", a.body);
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
);

async fn pools_are_created_read_replaced_patched_and_deleted(c: Ctx) {
    // Created by PUT on the path as a user types it, slash and all.
    let a = c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:#}", a.body);
    assert_eq!(a.header("etag"), "\"1\"");
    assert_eq!(a.header("location"), "/v1/pools/ci/linux");
    assert_eq!(a.header("cache-control"), "no-store");
    assert_eq!(a.body["id"], "ci/linux");
    assert_eq!(a.body["generation"], 1);
    assert_eq!(a.body["status"], "active");
    // Defaults are filled in.
    assert_eq!(a.body["spec"]["scaling"]["idle_timeout_s"], 600);
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
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

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
    assert_eq!(a.status, StatusCode::OK, "{:#}", a.body);
    assert_eq!(a.body["generation"], 3);
    assert_eq!(a.body["spec"]["scaling"]["idle_timeout_s"], 900);
    assert_eq!(
        a.body["spec"]["scaling"]["policy"], "reactive",
        "untouched fields stay"
    );
    assert_eq!(a.body["spec"]["max_capacity"], 20);
    let a = c
        .json(
            Method::PATCH,
            "/v1/pools/ci/linux",
            &c.admin,
            &[("if-match", "\"3\"")],
            &json!({"description": null}),
        )
        .await;
    assert_eq!(a.body["spec"]["description"], "", "{:#}", a.body);

    // Delete with If-Match: gone.
    let a = c
        .send(
            Method::DELETE,
            "/v1/pools/ci/linux",
            Some(&c.admin),
            &[("if-match", "\"4\"")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:#}", a.body);
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
    c.json(
        Method::PATCH,
        "/v1/pools/ci/linux",
        &c.admin,
        &[],
        &json!({"max_capacity": 11}),
    )
    .await
    .error(StatusCode::PRECONDITION_REQUIRED, "precondition_required");
    c.send(
        Method::DELETE,
        "/v1/pools/ci/linux",
        Some(&c.admin),
        &[],
        None,
    )
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
    assert_eq!(a.status, StatusCode::CREATED);
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
    let c = std::sync::Arc::new(c);
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
    c.json(
        Method::PATCH,
        "/v1/pools/ci/ghost",
        &c.admin,
        &[("if-match", "\"1\"")],
        &json!({}),
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    c.send(
        Method::DELETE,
        "/v1/pools/ci/ghost",
        Some(&c.admin),
        &[("if-match", "\"1\"")],
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
    c.json(
        Method::POST,
        "/v1/pools/ci/ghost/machines",
        &c.admin,
        &[],
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
    let fields: Vec<&str> = a.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
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
        .json(
            Method::PATCH,
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
        assert_eq!(a.status, StatusCode::CREATED, "{:#}", a.body);
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
        assert_eq!(a.status, StatusCode::OK);
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
    a.error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(a.body["missing_scope"], "pools:read:*");
}

async fn tokens_are_checked_on_every_route(c: Ctx) {
    // Every route of the OpenAPI document under /v1, with its parameters filled in.
    let doc = serde_json::to_value(api::openapi::document()).unwrap();
    let nobody = c.client("nobody", &["queue:write:zzz"]).await;
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
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
    assert!(checked >= 14, "only {checked} routes checked");
}

async fn scoped_clients_are_refused_outside_their_pools(c: Ctx) {
    let ci = c
        .client("ci-writer", &["pools:write:ci/*", "pools:read:ci/*"])
        .await;
    let a = c.put("/v1/pools/ci/linux", &ci, &[], &spec(3)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(a.body["id"] == "ci/linux");
    let a = c.put("/v1/pools/prod/x", &ci, &[], &spec(3)).await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(a.body["missing_scope"], "pools:write:prod/x");
    assert!(
        c.store
            .get_pool(&PoolId::new("prod/x").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    // Deleting needs its own scope.
    let a = c
        .send(
            Method::DELETE,
            "/v1/pools/ci/linux",
            Some(&ci),
            &[("if-match", "\"1\"")],
            None,
        )
        .await;
    assert_eq!(a.body["missing_scope"], "pools:delete:ci/linux");
    // Creating clients needs clients:admin ...
    let a = c
        .json(
            Method::POST,
            "/v1/clients",
            &ci,
            &[],
            &json!({"name": "x", "scopes": ["pools:write:*"]}),
        )
        .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(a.body["missing_scope"], "clients:admin");
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
    let a = c
        .json(
            Method::POST,
            "/v1/clients",
            &lead,
            &[],
            &json!({"name": "x", "scopes": ["pools:write:*"]}),
        )
        .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(a.body["missing_scope"], "pools:write:*");
    let a = c
        .json(
            Method::POST,
            "/v1/clients",
            &lead,
            &[],
            &json!({"name": "bot", "scopes": ["pools:read:ci/linux"], "expires_in_s": 3600}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:#}", a.body);
    let bot = a.body["token"].as_str().unwrap().to_owned();
    let bot_id = a.body["client"]["id"].as_str().unwrap().to_owned();
    assert!(bot.starts_with(&format!("cap_{bot_id}_")));
    assert_eq!(a.body["client"]["expires"], "2027-01-15T09:00:00.000Z");
    // Bad requests name every bad field.
    let a = c
        .json(
            Method::POST,
            "/v1/clients",
            &c.admin,
            &[],
            &json!({"name": "", "scopes": ["pools:fly:x", "*"], "expires_in_s": 5}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let fields: Vec<&str> = a.body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "scopes[0]", "expires_in_s"]);
    let a = c
        .json(
            Method::POST,
            "/v1/clients",
            &c.admin,
            &[],
            &json!({"name": "x", "scopes": ["*"], "admin": true}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    // The list never shows a secret or its hash.
    let a = c.get("/v1/clients", &c.admin).await;
    assert_eq!(a.status, StatusCode::OK);
    let text = a.body.to_string();
    assert!(!text.contains(&bot[22..]), "secret leaked");
    assert!(!text.contains("sha256"), "hash leaked");
    assert_eq!(a.body["items"].as_array().unwrap().len(), 3);
    // The bot works; the lead cannot revoke the admin (it holds more) but can revoke the bot.
    assert_eq!(c.get("/v1/pools", &bot).await.status, StatusCode::OK);
    let admin_id = &c.admin[4..20];
    let a = c
        .send(
            Method::DELETE,
            &format!("/v1/clients/{admin_id}"),
            Some(&lead),
            &[],
            None,
        )
        .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    let a = c
        .send(
            Method::DELETE,
            &format!("/v1/clients/{bot_id}"),
            Some(&lead),
            &[],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:#}", a.body);
    let a = c.get("/v1/pools", &bot).await;
    a.error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(a.body["message"].as_str().unwrap().contains("revoked"));
    c.send(
        Method::DELETE,
        "/v1/clients/ffffffffffffffff",
        Some(&c.admin),
        &[],
        None,
    )
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
        c.store
            .insert_worker(&worker(id, "ci/linux"))
            .await
            .unwrap();
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
    let a = c
        .send(
            Method::POST,
            "/v1/workers/w1/drain",
            Some(&reader),
            &[],
            None,
        )
        .await;
    a.error(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(a.body["missing_scope"], "workers:drain:ci/linux");
    let a = c
        .send(
            Method::POST,
            "/v1/workers/w1/drain",
            Some(&c.admin),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (StatusCode::OK, Some("draining"))
    );
    let a = c
        .send(
            Method::POST,
            "/v1/workers/w1/drain",
            Some(&c.admin),
            &[],
            None,
        )
        .await;
    assert_eq!(
        (a.status, a.body["state"].as_str()),
        (StatusCode::OK, Some("draining")),
        "drain is idempotent"
    );
    let a = c
        .send(
            Method::POST,
            "/v1/workers/w2/drain",
            Some(&c.admin),
            &[],
            None,
        )
        .await;
    a.error(StatusCode::CONFLICT, "conflict");
    assert!(a.body["message"].as_str().unwrap().contains("booting"));
}

async fn deleting_a_pool_with_live_workers_drains_it_first(c: Ctx) {
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    c.store
        .insert_worker(&worker("w1", "ci/linux"))
        .await
        .unwrap();
    let a = c
        .send(
            Method::DELETE,
            "/v1/pools/ci/linux",
            Some(&c.admin),
            &[("if-match", "\"1\"")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:#}", a.body);
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
        .send(
            Method::DELETE,
            "/v1/pools/ci/linux",
            Some(&c.admin),
            &[("if-match", "\"2\"")],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
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
    assert_eq!(a.status, StatusCode::OK);
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
    assert_eq!(a.status, StatusCode::CREATED, "{:#}", a.body);
    let a = c
        .json(
            Method::POST,
            "/v1/pools/lab/macs/machines",
            &c.admin,
            &[],
            &json!({"name": "mac-01", "capacity": 2, "labels": {"arch": "arm64"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{:#}", a.body);
    let secret = a.body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("csm_"));
    let a = c.get("/v1/pools/lab/macs/machines", &c.admin).await;
    assert_eq!(a.body["items"][0]["name"], "mac-01");
    assert_eq!(a.body["items"][0]["assignment"], "idle");
    assert!(!a.body.to_string().contains(&secret[4..]));
    // The same name again, a zero capacity, a cloud pool: refused.
    let again = json!({"name": "mac-01", "capacity": 2});
    c.json(
        Method::POST,
        "/v1/pools/lab/macs/machines",
        &c.admin,
        &[],
        &again,
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    let a = c
        .json(
            Method::POST,
            "/v1/pools/lab/macs/machines",
            &c.admin,
            &[],
            &json!({"name": "mac-02", "capacity": 0}),
        )
        .await;
    a.error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(a.body["problems"][0]["field"], "capacity");
    c.put("/v1/pools/ci/linux", &c.admin, &[], &spec(10)).await;
    c.json(
        Method::POST,
        "/v1/pools/ci/linux/machines",
        &c.admin,
        &[],
        &json!({"name": "m", "capacity": 1}),
    )
    .await
    .error(StatusCode::CONFLICT, "conflict");
    // Removing needs pools:write on the machine's pool.
    let other = c.client("other", &["pools:write:ci/*"]).await;
    let a = c
        .send(
            Method::DELETE,
            "/v1/machines/mac-01",
            Some(&other),
            &[],
            None,
        )
        .await;
    assert_eq!(a.body["missing_scope"], "pools:write:lab/macs");
    let a = c
        .send(
            Method::DELETE,
            "/v1/machines/mac-01",
            Some(&c.admin),
            &[],
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    c.send(
        Method::DELETE,
        "/v1/machines/mac-01",
        Some(&c.admin),
        &[],
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND, "not_found");
}
