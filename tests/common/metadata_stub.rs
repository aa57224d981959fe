//! A stand-in for the clouds' instance metadata services, for tests that run
//! `capstan agent`: one loopback HTTP server serving many instances, each under its
//! own prefix, so every agent gets its own `--metadata-url`.
//!
//! ```ignore
//! let stub = MetadataStub::start();
//! stub.add_instance("i-0abc", &user_data_json);
//! // capstan agent --bootstrap ec2 --metadata-url <stub.base_url("i-0abc")> -- …
//! stub.set_spot_action("i-0abc", r#"{"action":"terminate","time":"2026-11-30T10:00:00Z"}"#);
//! ```
//!
//! Under `base_url(id)` = `http://127.0.0.1:PORT/i/<id>` each instance answers both
//! clouds' paths, strict where the real services are strict:
//!
//! - EC2 IMDSv2: `PUT /latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds`
//!   between 1 and 21600 (400 otherwise) and returns a session token valid that many
//!   seconds. Every `GET` needs a valid `X-aws-ec2-metadata-token` (401 without one,
//!   or with an unknown or expired one). Paths: `/latest/user-data` (404 when the
//!   instance has none), `/latest/meta-data/instance-id`,
//!   `/latest/meta-data/spot/instance-action` (404 until [`MetadataStub::set_spot_action`]).
//! - GCE: every request needs `Metadata-Flavor: Google` (403 without it, or with an
//!   `X-Forwarded-For` header, as on GCE); answers carry `Metadata-Flavor: Google`.
//!   Paths: `/computeMetadata/v1/instance/attributes/capstan-user-data`,
//!   `/computeMetadata/v1/instance/id`, `/computeMetadata/v1/instance/preempted`
//!   (`FALSE` until [`MetadataStub::set_preempted`], then `TRUE`; with
//!   `?wait_for_change=true` the answer waits until the value changes or
//!   `timeout_sec`, default 60, passes).
//!
//! An unknown instance id answers 404. Every request is logged per instance
//! ([`MetadataStub::requests`]) as `"<METHOD> <path> <status>"`. The server runs on its
//! own thread and runtime, so it works from sync and async tests alike, and stops when
//! the stub is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;

/// The longest IMDSv2 token lifetime EC2 grants, in seconds.
const MAX_TOKEN_TTL_S: u64 = 21_600;

#[derive(Debug, Default)]
struct Instance {
    user_data: Option<String>,
    spot_action: Option<String>,
    preempted: bool,
    /// IMDSv2 session tokens and when each expires.
    tokens: HashMap<String, Instant>,
    requests: Vec<String>,
}

#[derive(Debug, Default)]
struct Instances {
    by_id: HashMap<String, Instance>,
    tokens_issued: u64,
}

type Shared = Arc<Mutex<Instances>>;

/// A running metadata stub; stopped on drop.
#[derive(Debug)]
pub struct MetadataStub {
    addr: SocketAddr,
    state: Shared,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetadataStub {
    /// Starts the stub on a free loopback port.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the metadata stub");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("the stub's address");
        let state = Shared::default();
        let app = Router::new()
            .route("/i/{id}/{*path}", any(handle))
            .with_state(state.clone());
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the stub's runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("the metadata stub serves");
            });
        });
        Self {
            addr,
            state,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Adds (or replaces) instance `id` whose user-data (EC2) and `capstan-user-data`
    /// attribute (GCE) is `user_data`, served as given (it need not be valid JSON).
    pub fn add_instance(&self, id: &str, user_data: &str) {
        self.state.lock().unwrap().by_id.insert(
            id.to_owned(),
            Instance {
                user_data: Some(user_data.to_owned()),
                ..Instance::default()
            },
        );
    }

    /// Adds instance `id` with no user-data (its user-data paths answer 404).
    pub fn add_instance_without_user_data(&self, id: &str) {
        self.state
            .lock()
            .unwrap()
            .by_id
            .insert(id.to_owned(), Instance::default());
    }

    /// The metadata base URL of instance `id`: what its agent gets as `--metadata-url`.
    pub fn base_url(&self, id: &str) -> String {
        format!("http://{}/i/{id}", self.addr)
    }

    /// From now on EC2's `spot/instance-action` answers 200 with `json`, e.g.
    /// `{"action":"terminate","time":"2026-11-30T10:00:00Z"}`.
    pub fn set_spot_action(&self, id: &str, json: &str) {
        self.with(id, |i| i.spot_action = Some(json.to_owned()));
    }

    /// From now on GCE's `instance/preempted` answers `TRUE`.
    pub fn set_preempted(&self, id: &str) {
        self.with(id, |i| i.preempted = true);
    }

    /// Invalidates every IMDSv2 token of instance `id`, as if they had expired: the
    /// next `GET` with one answers 401 and the client must `PUT` for a new one.
    pub fn expire_tokens(&self, id: &str) {
        self.with(id, |i| i.tokens.clear());
    }

    /// The requests instance `id` has served, oldest first, as
    /// `"<METHOD> <path> <status>"` (path without the `/i/<id>` prefix and query).
    pub fn requests(&self, id: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .by_id
            .get(id)
            .map(|i| i.requests.clone())
            .unwrap_or_default()
    }

    fn with(&self, id: &str, f: impl FnOnce(&mut Instance)) {
        let mut state = self.state.lock().unwrap();
        let instance = state
            .by_id
            .get_mut(id)
            .unwrap_or_else(|| panic!("metadata stub: no instance {id:?}; add_instance first"));
        f(instance);
    }
}

impl Drop for MetadataStub {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(
    State(state): State<Shared>,
    Path((id, path)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let path = format!("/{path}");
    let (status, body, gce) = if path.starts_with("/computeMetadata/") {
        let (status, body) = gce(&state, &id, &path, &query, &headers).await;
        (status, body, true)
    } else {
        let (status, body) = ec2(&state, &id, &path, &method, &headers);
        (status, body, false)
    };
    if let Some(instance) = state.lock().unwrap().by_id.get_mut(&id) {
        instance
            .requests
            .push(format!("{method} {path} {}", status.as_u16()));
    }
    let mut response = (status, body).into_response();
    if gce {
        response
            .headers_mut()
            .insert("Metadata-Flavor", "Google".parse().unwrap());
    }
    response
}

fn ec2(
    state: &Shared,
    id: &str,
    path: &str,
    method: &Method,
    headers: &HeaderMap,
) -> (StatusCode, String) {
    let mut state = state.lock().unwrap();
    state.tokens_issued += 1;
    let serial = state.tokens_issued;
    let Some(instance) = state.by_id.get_mut(id) else {
        return (StatusCode::NOT_FOUND, "no such instance".into());
    };
    let now = Instant::now();
    if path == "/latest/api/token" {
        if method != Method::PUT {
            return (StatusCode::METHOD_NOT_ALLOWED, String::new());
        }
        let ttl = headers
            .get("X-aws-ec2-metadata-token-ttl-seconds")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(ttl @ 1..=MAX_TOKEN_TTL_S) = ttl else {
            return (StatusCode::BAD_REQUEST, String::new());
        };
        let token = format!("AQAEA{serial:08x}{}", id.len());
        instance
            .tokens
            .insert(token.clone(), now + Duration::from_secs(ttl));
        return (StatusCode::OK, token);
    }
    if method != Method::GET {
        return (StatusCode::METHOD_NOT_ALLOWED, String::new());
    }
    let valid = headers
        .get("X-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|token| instance.tokens.get(token))
        .is_some_and(|expires| *expires > now);
    if !valid {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match path {
        "/latest/user-data" => match &instance.user_data {
            Some(data) => (StatusCode::OK, data.clone()),
            None => (StatusCode::NOT_FOUND, not_found()),
        },
        "/latest/meta-data/instance-id" => (StatusCode::OK, id.to_owned()),
        "/latest/meta-data/spot/instance-action" => match &instance.spot_action {
            Some(action) => (StatusCode::OK, action.clone()),
            None => (StatusCode::NOT_FOUND, not_found()),
        },
        _ => (StatusCode::NOT_FOUND, not_found()),
    }
}

async fn gce(
    state: &Shared,
    id: &str,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> (StatusCode, String) {
    let flavor = headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok());
    if flavor != Some("Google") || headers.contains_key("X-Forwarded-For") {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.".into(),
        );
    }
    let read = |f: &dyn Fn(&Instance) -> (StatusCode, String)| {
        let state = state.lock().unwrap();
        match state.by_id.get(id) {
            Some(instance) => f(instance),
            None => (StatusCode::NOT_FOUND, "no such instance".into()),
        }
    };
    match path {
        "/computeMetadata/v1/instance/attributes/capstan-user-data" => {
            read(&|i| match &i.user_data {
                Some(data) => (StatusCode::OK, data.clone()),
                None => (StatusCode::NOT_FOUND, not_found()),
            })
        }
        "/computeMetadata/v1/instance/id" => read(&|_| (StatusCode::OK, id.to_owned())),
        "/computeMetadata/v1/instance/preempted" => {
            let preempted = |i: &Instance| {
                (
                    StatusCode::OK,
                    if i.preempted { "TRUE" } else { "FALSE" }.to_owned(),
                )
            };
            let first = read(&preempted);
            if query.get("wait_for_change").map(String::as_str) != Some("true")
                || first.0 != StatusCode::OK
            {
                return first;
            }
            let timeout = query
                .get("timeout_sec")
                .and_then(|t| t.parse().ok())
                .unwrap_or(60);
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let now = read(&preempted);
                if now != first || Instant::now() >= deadline {
                    return now;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => (StatusCode::NOT_FOUND, not_found()),
    }
}

fn not_found() -> String {
    "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<title>404 - Not Found</title>".into()
}
