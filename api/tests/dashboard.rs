//! The web dashboard in-process (`tower::ServiceExt::oneshot`), every case once on
//! SQLite and once on PostgreSQL: signing in and out, what the cookie opens (the
//! dashboard, never `/v1`), scope filtering, the chart's data, escaping, the embedded
//! assets and the security headers. The browser test drives the same pages through
//! Chromium against `capstan demo`.

use std::future::Future;

use api::{AppState, Clock, Readiness};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use capstan_core::{
    Action, Forecast, Plan, PlanReport, PoolId, ProviderKind, QueueSample, ScalingPolicy,
    SkipReason, SkippedOffering, TargetTerm, TerminateReason, Timestamp, Worker, WorkerId,
    WorkerState,
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use store::{PoolCapacity, PoolPoint, Store};
use tower::ServiceExt;

const NOW_S: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_unix_secs(NOW_S)
}

/// One case's world: the store, the app's state and an admin token holding `*`.
struct Ctx {
    store: Store,
    state: AppState,
    admin: String,
}

/// An answer: status, headers and the body as text.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn expect(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// Asserts a redirect (303) to `to`.
    fn redirects_to(&self, to: &str) -> &Self {
        self.expect(StatusCode::SEE_OTHER);
        assert_eq!(self.header("location"), to);
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

    async fn send(&self, req: Request<Body>) -> Answer {
        let response = api::app(self.state.clone()).oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// `GET path` carrying `token` in the session cookie (none: no cookie).
    async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header(header::COOKIE, format!("theme=dark; capstan_session={t}"));
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    /// `POST /signin` with the form body `form`, and extra headers.
    async fn sign_in_form(&self, form: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = Request::post("/signin")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(form.to_owned())).unwrap())
            .await
    }

    async fn sign_in(&self, token: &str) -> Answer {
        self.sign_in_form(&format!("token={token}"), &[]).await
    }

    /// An operator API call with a bearer token.
    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.admin));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.send(req.body(body).unwrap()).await
    }

    /// A client holding `scopes`, created through the API; answers its token.
    async fn client(&self, name: &str, scopes: &[&str]) -> String {
        let a = self
            .api(
                Method::POST,
                "/v1/clients",
                Some(json!({"name": name, "scopes": scopes})),
            )
            .await;
        a.expect(StatusCode::CREATED);
        a.json()["token"].as_str().unwrap().to_owned()
    }

    /// Creates pool `id` with `extra` merged into a small fake-provider spec.
    async fn pool(&self, id: &str, extra: Value) {
        let mut spec = json!({
            "provider": "fake",
            "max_capacity": 20,
            "launch_configs": [{"id": "small", "instance_type": "t", "capacity": 2, "price_per_hour": 0.25}],
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        self.api(Method::PUT, &format!("/v1/pools/{id}"), Some(spec))
            .await
            .expect(StatusCode::CREATED);
    }

    async fn worker(&self, pool: &str, id: &str, state: WorkerState, busy: u32) {
        let mut w = Worker::requested(
            WorkerId::from_string(id),
            PoolId::new(pool).unwrap(),
            ProviderKind::Fake,
            Some("small".into()),
            2,
            format!("tok-{id}"),
            now().plus_secs(-600),
        );
        w.state = state;
        w.busy_slots = busy;
        w.instance_id = Some(format!("i-{id}"));
        self.store.insert_worker(&w).await.unwrap();
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
    signing_in_sets_a_strict_http_only_cookie_and_signing_out_clears_it,
    wrong_tokens_get_the_form_back_with_the_reason_and_no_cookie,
    without_a_valid_cookie_pages_redirect_and_data_answers_401,
    revoking_the_client_ends_its_session,
    the_cookie_never_opens_the_api,
    clients_see_only_the_pools_their_read_scopes_match,
    a_client_without_read_scopes_gets_an_explanation,
    pages_show_capacity_plan_workers_errors_and_badges,
    the_chart_serves_recorded_points_and_plan_marks,
    hostile_text_is_escaped_everywhere_it_is_shown,
    assets_are_embedded_with_their_types_caching_and_licences,
    pages_carry_the_security_headers_and_no_inline_script,
);

/// The `Set-Cookie` of an answer.
fn cookie(a: &Answer) -> &str {
    a.header("set-cookie")
}

async fn signing_in_sets_a_strict_http_only_cookie_and_signing_out_clears_it(c: Ctx) {
    let form = c.get("/signin", None).await;
    form.expect(StatusCode::OK);
    assert!(
        form.body
            .contains(r#"<form id="signin" method="post" action="/signin">"#)
    );
    assert!(form.body.contains(r#"name="token" type="password""#));
    assert!(!form.body.contains("signin-error"));

    let a = c.sign_in(&c.admin).await;
    a.redirects_to("/");
    let set = cookie(&a);
    assert!(
        set.starts_with(&format!("capstan_session={};", c.admin)),
        "{set}"
    );
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set.split("; ").any(|f| f == flag), "{flag} missing: {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    // Behind a TLS-terminating proxy the cookie is Secure.
    let a = c
        .sign_in_form(
            &format!("token={}", c.admin),
            &[("x-forwarded-proto", "https")],
        )
        .await;
    assert!(cookie(&a).ends_with("; Secure"), "{}", cookie(&a));

    // Signed in: the pools page names the client; the sign-in form sends it home.
    let home = c.get("/", Some(&c.admin)).await;
    home.expect(StatusCode::OK);
    assert!(
        home.body.contains(r#"<span id="whoami">admin</span>"#),
        "{}",
        home.body
    );
    c.get("/signin", Some(&c.admin)).await.redirects_to("/");

    // Signing out clears the cookie.
    let out = c
        .send(Request::post("/signout").body(Body::empty()).unwrap())
        .await;
    out.redirects_to("/signin");
    assert!(cookie(&out).starts_with("capstan_session=;"));
    assert!(cookie(&out).contains("Max-Age=0"));

    // Another site's page cannot sign a browser in or out.
    let a = c
        .sign_in_form(
            &format!("token={}", c.admin),
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    a.expect(StatusCode::FORBIDDEN);
    assert_eq!(cookie(&a), "");
    let a = c
        .send(
            Request::post("/signout")
                .header("sec-fetch-site", "cross-site")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    a.expect(StatusCode::FORBIDDEN);
    assert_eq!(cookie(&a), "");
}

async fn wrong_tokens_get_the_form_back_with_the_reason_and_no_cookie(c: Ctx) {
    // The admin's token with another secret: the right shape, the wrong digest.
    let (id, secret) = c
        .admin
        .strip_prefix("cap_")
        .unwrap()
        .split_once('_')
        .unwrap();
    let flipped = if secret.starts_with('0') { "1" } else { "0" };
    let wrong = format!("cap_{id}_{flipped}{}", &secret[1..]);
    let worker = format!("capw_{}_{}", "w1", "0".repeat(64));
    for (form, says) in [
        (
            format!("token={wrong}"),
            format!("token for client {id} is not valid"),
        ),
        ("token=".to_owned(), "token: enter an API token".to_owned()),
        ("token=cap_nothing".to_owned(), "malformed token".to_owned()),
        (format!("token={worker}"), "worker credential".to_owned()),
    ] {
        let a = c.sign_in_form(&form, &[]).await;
        a.expect(StatusCode::UNAUTHORIZED);
        assert_eq!(cookie(&a), "", "{form}");
        let error = a
            .body
            .split(r#"<p id="signin-error" class="error" role="alert">"#)
            .nth(1)
            .unwrap_or_else(|| panic!("no #signin-error for {form}: {}", a.body));
        assert!(error.starts_with("token: "), "{error}");
        assert!(error.contains(&says), "{form}: {error}");
        // The form is there to try again.
        assert!(a.body.contains(r#"<form id="signin""#));
    }
    // No token field at all.
    let a = c.sign_in_form("secret=x", &[]).await;
    a.expect(StatusCode::BAD_REQUEST);
    assert!(a.body.contains("expected a form field named token"));
    assert_eq!(cookie(&a), "");
}

async fn without_a_valid_cookie_pages_redirect_and_data_answers_401(c: Ctx) {
    c.pool("ci/a", json!({})).await;
    for page in ["/", "/pools/ci/a"] {
        c.get(page, None).await.redirects_to("/signin");
        // A cookie that holds no valid token is cleared on the way.
        let a = c.get(page, Some("cap_0123456789abcdef_00")).await;
        a.redirects_to("/signin?ended=1");
        assert!(cookie(&a).contains("Max-Age=0"));
    }
    for data in [
        "/pools.html",
        "/pools/ci/a/panels.html",
        "/pools/ci/a/chart.json",
    ] {
        let a = c.get(data, None).await;
        a.expect(StatusCode::UNAUTHORIZED);
        assert_eq!(a.header("hx-redirect"), "/signin?ended=1", "{data}");
        assert_eq!(a.json()["error"], "unauthorized");
    }
    // The sign-in page explains an ended session.
    let a = c.get("/signin?ended=1", None).await;
    assert!(a.body.contains("Your session ended"));
}

async fn revoking_the_client_ends_its_session(c: Ctx) {
    c.pool("ci/a", json!({})).await;
    let token = c.client("viewer", &["pools:read:*"]).await;
    c.sign_in(&token).await.redirects_to("/");
    c.get("/", Some(&token)).await.expect(StatusCode::OK);
    let id = token
        .strip_prefix("cap_")
        .unwrap()
        .split('_')
        .next()
        .unwrap();
    c.api(Method::DELETE, &format!("/v1/clients/{id}"), None)
        .await
        .expect(StatusCode::NO_CONTENT);
    // The very next request is signed out.
    let a = c.get("/", Some(&token)).await;
    a.redirects_to("/signin?ended=1");
    c.get("/pools/ci/a/chart.json", Some(&token))
        .await
        .expect(StatusCode::UNAUTHORIZED);
    // And it cannot sign in again.
    let a = c.sign_in(&token).await;
    a.expect(StatusCode::UNAUTHORIZED);
    assert!(a.body.contains("was revoked at"), "{}", a.body);
}

async fn the_cookie_never_opens_the_api(c: Ctx) {
    c.pool("ci/a", json!({})).await;
    for path in ["/v1/pools", "/v1/pools/ci/a", "/v1/pools/ci/a/plan"] {
        let a = c.get(path, Some(&c.admin)).await;
        a.expect(StatusCode::UNAUTHORIZED);
        assert!(
            a.json()["message"]
                .as_str()
                .unwrap()
                .contains("Authorization: Bearer"),
            "{path}: {}",
            a.body
        );
    }
}

async fn clients_see_only_the_pools_their_read_scopes_match(c: Ctx) {
    for id in ["ci/a", "ci/b", "prod/x"] {
        c.pool(id, json!({})).await;
    }
    let ci = c.client("ci-reader", &["pools:read:ci/*"]).await;
    for path in ["/", "/pools.html"] {
        let a = c.get(path, Some(&ci)).await;
        a.expect(StatusCode::OK);
        assert!(a.body.contains(r#"<tr data-pool-id="ci/a">"#), "{path}");
        assert!(
            a.body
                .contains(r#"<a class="pool-link" href="/pools/ci/b">ci/b</a>"#)
        );
        assert!(!a.body.contains("prod/x"), "{path}: {}", a.body);
    }
    // Another pool: 403 on the page and its data, whether or not it exists.
    for path in [
        "/pools/prod/x",
        "/pools/prod/x/panels.html",
        "/pools/prod/x/chart.json",
        "/pools/prod/none/chart.json",
    ] {
        let a = c.get(path, Some(&ci)).await;
        a.expect(StatusCode::FORBIDDEN);
        assert!(a.body.contains("pools:read:prod/"), "{path}: {}", a.body);
        assert!(!a.body.contains("data-pool-id"));
    }
    // Its own pools open, typed with their slash or encoded; unknown ones are 404.
    for path in ["/pools/ci/a", "/pools/ci%2Fa"] {
        let a = c.get(path, Some(&ci)).await;
        a.expect(StatusCode::OK);
        assert!(
            a.body
                .contains(r#"<div id="chart" data-src="/pools/ci/a/chart.json">"#)
        );
        // Without workers:read the workers table says why it is empty.
        assert!(a.body.contains("lacks workers:read:ci/a"), "{}", a.body);
    }
    c.get("/pools/ci/a/chart.json", Some(&ci))
        .await
        .expect(StatusCode::OK);
    c.get("/pools", Some(&ci)).await.redirects_to("/");
    c.get("/pools/ci/none", Some(&ci))
        .await
        .expect(StatusCode::NOT_FOUND);
    c.get("/pools/ci/none/chart.json", Some(&ci))
        .await
        .expect(StatusCode::NOT_FOUND);
}

async fn a_client_without_read_scopes_gets_an_explanation(c: Ctx) {
    c.pool("ci/a", json!({})).await;
    let pusher = c.client("pusher", &["queue:write:ci/*"]).await;
    c.sign_in(&pusher).await.redirects_to("/");
    let a = c.get("/", Some(&pusher)).await;
    a.expect(StatusCode::OK);
    assert!(a.body.contains("Nothing to show"));
    assert!(a.body.contains(r#"<span id="whoami">pusher</span>"#));
    assert!(a.body.contains("queue:write:ci/*"), "its scopes are shown");
    assert!(!a.body.contains("ci/a"), "{}", a.body);
    assert!(!a.body.contains(r#"id="pools""#));
    c.get("/pools/ci/a", Some(&pusher))
        .await
        .expect(StatusCode::FORBIDDEN);
}

fn plan(secs: i64, launch: u32, terminate: &[&str]) -> Plan {
    let mut actions = Vec::new();
    if launch > 0 {
        actions.push(Action::Launch {
            launch_config_id: "small".into(),
            zone: None,
            count: launch,
            idempotency_token: format!("tok-{secs}"),
        });
    }
    for w in terminate {
        actions.push(Action::Terminate {
            worker: WorkerId::from_string(*w),
            reason: TerminateReason::IdleTimeout,
        });
    }
    Plan {
        actions,
        report: PlanReport {
            at: now().plus_secs(secs),
            policy: ScalingPolicy::Forecast,
            forecast_slots: 6,
            backlog_slots: 4,
            boot_hedge_slots: 0,
            min_slots: 0,
            schedule_slots: 0,
            max_slots: 20,
            budget_slots: None,
            target_slots: 6,
            target_set_by: TargetTerm::Forecast,
            keep_slots: 6,
            held_slots: 0,
            idle_timeout_s: Some(600.0),
            idle_timeout_chosen: false,
            current_slots: 4,
            launch_slots: launch * 2,
            launched_last_minute: 0,
            rate_limited: false,
            unmet_slots: 0,
            skipped_offerings: vec![],
        },
    }
}

fn forecast(secs: i64) -> Forecast {
    Forecast {
        made_at: now().plus_secs(secs),
        policy: ScalingPolicy::Forecast,
        lead_s: 120.0,
        target_slots: 6,
        backlog_slots: 4,
        expected_busy_slots: 4.5,
        points: vec![],
    }
}

/// Records `plans` for `pool` as the loop does, holding its lease.
async fn record_plans(c: &Ctx, pool: &str, plans: &[Plan]) {
    let leases = c.store.acquire_leases("replica-1", 60_000).await.unwrap();
    let fence = &leases
        .iter()
        .find(|l| l.fence.pool_id.as_str() == pool)
        .unwrap()
        .fence;
    for p in plans {
        let secs = p.report.at.secs_since(now()) as i64;
        c.store
            .record_plan(fence, "replica-1", p, &forecast(secs))
            .await
            .unwrap();
    }
}

async fn pages_show_capacity_plan_workers_errors_and_badges(c: Ctx) {
    c.pool("ci/a", json!({"description": "Linux builds"})).await;
    c.pool("ci/dry", json!({"scaling": {"dry_run": true}}))
        .await;
    c.worker("ci/a", "w-ready", WorkerState::Ready, 1).await;
    c.worker("ci/a", "w-boot", WorkerState::Booting, 0).await;
    c.worker("ci/a", "w-drain", WorkerState::Draining, 1).await;
    let id = PoolId::new("ci/a").unwrap();
    c.store
        .record_queue_samples(
            &id,
            &[QueueSample {
                at: now().plus_secs(-20),
                pending: 7,
                running: 2,
                arrivals: 1,
                completions: 0,
            }],
        )
        .await
        .unwrap();
    c.store
        .record_pool_error(
            &id,
            Some("small"),
            "insufficient_capacity",
            "no t left",
            now().plus_secs(-60),
        )
        .await
        .unwrap();
    c.store
        .record_pool_error(&id, None, "old_problem", "long ago", now().plus_secs(-7200))
        .await
        .unwrap();
    let mut latest = plan(-30, 2, &[]);
    latest.report.skipped_offerings = vec![SkippedOffering {
        launch_config_id: "spot-c6i".into(),
        reason: SkipReason::Unavailable {
            until: now().plus_secs(180),
            reason: "insufficient capacity".into(),
        },
    }];
    record_plans(&c, "ci/a", &[latest]).await;

    let home = c.get("/", Some(&c.admin)).await;
    home.expect(StatusCode::OK);
    let row = home
        .body
        .split(r#"<tr data-pool-id="ci/a">"#)
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    let cells: Vec<&str> = row
        .split("<td")
        .skip(2)
        .map(|td| td.split('>').nth(1).unwrap().split('<').next().unwrap())
        .collect();
    // Requested, booting, ready idle, ready busy, draining (slots of 2-slot workers),
    // pending, target, cost (3 machines × 0.25), errors of the last hour.
    assert_eq!(
        cells,
        ["0", "2", "1", "1", "2", "7", "6", "0.75/h", "1"],
        "{row}"
    );
    assert!(row.contains("Linux builds"));
    assert!(!row.contains("dry run"));
    let dry = home
        .body
        .split(r#"<tr data-pool-id="ci/dry">"#)
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    assert!(dry.contains(r#"class="badge dry-run""#), "{dry}");
    // A pool never planned and never sampled shows dashes, not zeros.
    assert!(dry.contains("<td>—</td><td>—</td>"), "{dry}");

    // The service-wide dry run marks every pool.
    let state = c.state.clone().with_dry_run(true);
    let a = api::app(state)
        .oneshot(
            Request::get("/")
                .header(header::COOKIE, format!("capstan_session={}", c.admin))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let body =
        String::from_utf8(a.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert_eq!(
        body.matches(r#"class="badge dry-run""#).count(),
        2,
        "{body}"
    );
    assert!(body.contains("The service runs in dry-run mode"));

    // The pool's page and its polled panels hold the contract's ids.
    let page = c.get("/pools/ci/a", Some(&c.admin)).await;
    page.expect(StatusCode::OK);
    for needle in [
        r#"<div id="chart" data-src="/pools/ci/a/chart.json">"#,
        r#"<button type="button" data-window="1h""#,
        r#"<button type="button" data-window="1d""#,
        r#"<button type="button" data-window="1w""#,
        r#"hx-get="/pools/ci/a/panels.html""#,
    ] {
        assert!(page.body.contains(needle), "{needle} missing");
    }
    let panels = c.get("/pools/ci/a/panels.html", Some(&c.admin)).await;
    panels.expect(StatusCode::OK);
    for body in [&page.body, &panels.body] {
        for needle in [
            r#"<section id="plan-report">"#,
            r#"<table id="workers">"#,
            r#"<tr data-worker-id="w-ready" class="state-ready">"#,
            r#"<tr data-worker-id="w-drain" class="state-draining">"#,
            r#"<table id="errors">"#,
            "no t left",
            // The plan in words, and the forecast behind it.
            "Target 6 slots. The forecast policy forecasts now + 120 s",
            "4.5 busy slots expected, 6 needed at the 95% service level",
            "launching 4 slots: 2 × small",
            // The idle timeout the plan applied, and who set it.
            "Idle workers above 6 slots go after 600 s idle: set by <code>scaling.idle_timeout_s</code>.",
            // Times as clocks (the test's now is 08:00:00 UTC).
            "<li>spot-c6i skipped: insufficient capacity, until 08:03:00 UTC</li>",
            "by replica-1",
        ] {
            assert!(body.contains(needle), "{needle} missing: {body}");
        }
    }
    assert!(!panels.body.contains("<html"), "a fragment, not a page");
}

async fn the_chart_serves_recorded_points_and_plan_marks(c: Ctx) {
    c.pool("ci/a", json!({})).await;
    let id = PoolId::new("ci/a").unwrap();
    // A point every 10 s over the last 10 minutes, and one two hours ago.
    let point = |secs: i64, pending: u32| PoolPoint {
        at: now().plus_secs(secs),
        capacity: PoolCapacity {
            requested: 0,
            booting: 2,
            ready_idle: 3,
            ready_busy: 5,
            draining: 1,
            busy_slots: 6,
            cost_per_hour: 1.5,
            unpriced_instances: 0,
        },
        target_slots: 12,
        forecast_mean: 7.5,
        forecast_upper: 10.0,
        pending,
        running: 6,
    };
    for k in 0..60 {
        let secs = -600 + k * 10;
        c.store
            .record_pool_point(&id, &point(secs, k as u32))
            .await
            .unwrap();
    }
    c.store
        .record_pool_point(&id, &point(-7200, 99))
        .await
        .unwrap();
    record_plans(
        &c,
        "ci/a",
        &[
            plan(-300, 3, &[]),
            plan(-120, 0, &["w1", "w2"]),
            plan(-60, 0, &[]),   // acted on nothing: no mark
            plan(-5000, 1, &[]), // before the hour
        ],
    )
    .await;

    // The queue history: one sample where no point was recorded (the queue is known
    // before the loop ran), one inside a point's bucket (the queue's sample wins).
    let sample = |secs: i64, pending: u32, running: u32| QueueSample {
        at: now().plus_secs(secs),
        pending,
        running,
        arrivals: 0,
        completions: 0,
    };
    c.store
        .record_queue_samples(&id, &[sample(-3000, 42, 3), sample(-300, 77, 8)])
        .await
        .unwrap();

    let a = c.get("/pools/ci/a/chart.json", Some(&c.admin)).await;
    a.expect(StatusCode::OK);
    assert!(a.header("content-type").starts_with("application/json"));
    let d = a.json();
    assert_eq!(d["pool_id"], "ci/a");
    assert_eq!(d["window"], "1h");
    assert_eq!(d["until"], NOW_S);
    assert_eq!(d["since"], NOW_S - 3600);
    // The hour in 5 s buckets: the lone sample's bucket, then one point per bucket for
    // the last ten minutes; not the point from two hours ago.
    assert_eq!(d["width_s"], 5);
    let x: Vec<i64> = serde_json::from_value(d["x"].clone()).unwrap();
    let mut expected = vec![NOW_S - 3000];
    expected.extend((0..60).map(|k| NOW_S - 600 + k * 10));
    assert_eq!(x, expected);
    let column =
        |name: &str| -> Vec<Option<f64>> { serde_json::from_value(d[name].clone()).unwrap() };
    let mut pending = vec![Some(42.0)];
    pending.extend((0..60).map(|k| Some(if k == 30 { 77.0 } else { f64::from(k) })));
    assert_eq!(column("pending"), pending);
    let mut running = vec![Some(3.0)];
    running.extend((0..60).map(|k| Some(if k == 30 { 8.0 } else { 6.0 })));
    assert_eq!(column("running"), running);
    for (series, value) in [
        ("target", 12.0),
        ("forecast_mean", 7.5),
        ("forecast_upper", 10.0),
        ("requested", 0.0),
        ("booting", 2.0),
        ("ready_idle", 3.0),
        ("ready_busy", 5.0),
        ("draining", 1.0),
        ("cost_per_hour", 1.5),
    ] {
        // Null where only the queue is known.
        let mut want = vec![None];
        want.extend(vec![Some(value); 60]);
        assert_eq!(column(series), want, "{series}");
    }
    // Marks: the launch of 3 and the two terminations, in their buckets.
    assert_eq!(
        d["marks"],
        json!([
            {"at": NOW_S - 300, "launched": 3, "terminated": 0},
            {"at": NOW_S - 120, "launched": 0, "terminated": 2},
        ])
    );

    // A day: 2-minute buckets; the point of two hours ago is in, and the ten minutes
    // fold into 5 buckets whose pending is the bucket's maximum (the queue's where it
    // has a sample: 77 at -300 s).
    let d = c
        .get("/pools/ci/a/chart.json?window=1d", Some(&c.admin))
        .await
        .json();
    assert_eq!(d["window"], "1d");
    assert_eq!(d["width_s"], 120);
    let pending: Vec<f64> = serde_json::from_value(d["pending"].clone()).unwrap();
    assert_eq!(pending, [99.0, 42.0, 11.0, 23.0, 77.0, 47.0, 59.0]);
    assert_eq!(d["marks"].as_array().unwrap().len(), 3);

    // A bad window names the parameter and what it takes; an unknown one too.
    for bad in ["?window=2h", "?window=", "?span=1h"] {
        let a = c
            .get(&format!("/pools/ci/a/chart.json{bad}"), Some(&c.admin))
            .await;
        a.expect(StatusCode::BAD_REQUEST);
        let message = a.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains("window") || message.contains("span"),
            "{message}"
        );
    }
    // A pool with no points: empty arrays, not an error.
    c.pool("ci/empty", json!({})).await;
    let d = c
        .get("/pools/ci/empty/chart.json?window=1w", Some(&c.admin))
        .await
        .json();
    assert_eq!(d["x"], json!([]));
    assert_eq!(d["width_s"], 0);
}

async fn hostile_text_is_escaped_everywhere_it_is_shown(c: Ctx) {
    let hostile = r#"<script>alert("x")</script><img src=x onerror='alert(1)'>"#;
    c.pool("ci/a", json!({"description": hostile})).await;
    let id = PoolId::new("ci/a").unwrap();
    c.store
        .record_pool_error(&id, Some("small"), "<b>kind</b>", hostile, now())
        .await
        .unwrap();
    let name = c.client("<i>eve</i>", &["pools:read:*"]).await;
    for path in ["/", "/pools.html", "/pools/ci/a", "/pools/ci/a/panels.html"] {
        let a = c.get(path, Some(&name)).await;
        a.expect(StatusCode::OK);
        assert!(!a.body.contains("<script>alert"), "{path}");
        assert!(!a.body.contains("<img"), "{path}");
        assert!(!a.body.contains("<b>kind"), "{path}");
        assert!(!a.body.contains("<i>eve"), "{path}");
    }
    let page = c.get("/pools/ci/a", Some(&name)).await;
    assert!(page.body.contains(
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=&#39;alert(1)&#39;&gt;"
    ));
    assert!(page.body.contains("&lt;i&gt;eve&lt;/i&gt;"));
    assert!(page.body.contains("&lt;b&gt;kind&lt;/b&gt;"));
}

async fn assets_are_embedded_with_their_types_caching_and_licences(c: Ctx) {
    for (name, content_type, needle) in [
        ("htmx.min.js", "text/javascript; charset=utf-8", "htmx"),
        (
            "uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            "uPlot",
        ),
        ("uPlot.min.css", "text/css; charset=utf-8", ".uplot"),
        (
            "dashboard.js",
            "text/javascript; charset=utf-8",
            "data-last-at",
        ),
        ("dashboard.css", "text/css; charset=utf-8", "#chart"),
        (
            "htmx.LICENSE",
            "text/plain; charset=utf-8",
            "Zero-Clause BSD",
        ),
        (
            "uPlot.LICENSE",
            "text/plain; charset=utf-8",
            "The MIT License",
        ),
    ] {
        // No cookie needed: the files hold nothing private.
        let a = c.get(&format!("/assets/{name}?v=whatever"), None).await;
        a.expect(StatusCode::OK);
        assert_eq!(a.header("content-type"), content_type, "{name}");
        assert_eq!(
            a.header("cache-control"),
            "public, max-age=31536000, immutable",
            "{name}"
        );
        assert!(a.body.contains(needle), "{name}");
    }
    c.get("/assets/nothing.js", None)
        .await
        .expect(StatusCode::NOT_FOUND);
    c.get("/assets/..%2FCargo.toml", None)
        .await
        .expect(StatusCode::NOT_FOUND);
    // Pages link them by a digest of their bytes.
    let page = c.get("/signin", None).await;
    for name in [
        "htmx.min.js",
        "uPlot.iife.min.js",
        "dashboard.js",
        "dashboard.css",
    ] {
        let needle = format!("/assets/{name}?v=");
        let at = page
            .body
            .find(&needle)
            .unwrap_or_else(|| panic!("{name} not linked"));
        let digest: String = page.body[at + needle.len()..].chars().take(16).collect();
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit()), "{digest}");
    }
}

async fn pages_carry_the_security_headers_and_no_inline_script(c: Ctx) {
    c.pool("ci/a", json!({})).await;
    for (path, token) in [
        ("/signin", None),
        ("/", Some(c.admin.as_str())),
        ("/pools/ci/a", Some(c.admin.as_str())),
        ("/pools/ci/a/chart.json", Some(c.admin.as_str())),
    ] {
        let a = c.get(path, token).await;
        a.expect(StatusCode::OK);
        let csp = a.header("content-security-policy");
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(a.header("x-frame-options"), "DENY", "{path}");
        assert_eq!(a.header("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(a.header("x-content-type-options"), "nosniff", "{path}");
        // Pages hold data: never cached.
        assert_eq!(a.header("cache-control"), "no-store", "{path}");
        // Every script is a file of our own; no inline handler or style.
        for tag in a.body.split("<script").skip(1) {
            assert!(
                tag.trim_start().starts_with("src=\"/assets/"),
                "{path}: {tag}"
            );
            assert!(tag.starts_with(&tag[..tag.find('>').unwrap()]));
        }
        assert!(!a.body.contains(" onclick="), "{path}");
        assert!(!a.body.contains(" style="), "{path}");
        assert!(!a.body.contains("<style"), "{path}");
    }
}
