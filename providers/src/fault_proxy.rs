//! A small HTTP proxy on 127.0.0.1 between an SDK client and an emulator, for the
//! failures emulators cannot produce: capacity, quota and throttling errors, auth
//! failures, and cloud-side interruptions.
//!
//! Requests are forwarded unchanged (headers included, so signatures and `Host`
//! survive) unless a [`Rule`] matches: then the proxy either answers with a canned
//! response in the cloud's own error format, or forwards and rewrites the response
//! body. Every request is logged, so tests can check what the SDK actually sent
//! (`ClientToken`, `requestId`, tags, labels).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What a matching rule does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Answer without forwarding.
    Respond {
        /// HTTP status.
        status: u16,
        /// `Content-Type`.
        content_type: &'static str,
        /// Body.
        body: String,
    },
    /// Forward, then replace `from` with `to` in the response body.
    Rewrite {
        /// Text to find.
        from: String,
        /// Replacement.
        to: String,
    },
}

/// EC2's query-protocol error document.
pub fn ec2_error(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>capstan-fault</RequestID></Response>"
    )
}

/// Answer with an EC2 error: HTTP `status`, error `code` and `message`.
pub fn ec2_fault(status: u16, code: &str, message: &str) -> Action {
    Action::Respond {
        status,
        content_type: "text/xml;charset=UTF-8",
        body: ec2_error(code, message),
    }
}

/// When to act and how.
#[derive(Debug, Clone)]
pub struct Rule {
    /// HTTP method to match (`POST`); `None` matches any.
    pub method: Option<&'static str>,
    /// Text the path-and-query must contain.
    pub path_contains: Option<String>,
    /// Text the request body must contain (`Action=RunInstances`).
    pub body_contains: Option<String>,
    /// Matching requests to let through untouched before acting.
    pub skip: u32,
    /// Matching requests to act on; `None`: until cleared.
    pub times: Option<u32>,
    /// What to do.
    pub action: Action,
}

impl Rule {
    /// A rule answering requests whose body contains `body` with `action`, forever.
    pub fn on_body(body: &str, action: Action) -> Self {
        Self {
            method: None,
            path_contains: None,
            body_contains: Some(body.to_owned()),
            skip: 0,
            times: None,
            action,
        }
    }

    /// A rule for `method` requests whose path contains `path`, forever.
    pub fn on_path(method: &'static str, path: &str, action: Action) -> Self {
        Self {
            method: Some(method),
            path_contains: Some(path.to_owned()),
            body_contains: None,
            skip: 0,
            times: None,
            action,
        }
    }

    fn matches(&self, method: &str, path: &str, body: &str) -> bool {
        self.method.is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self
                .body_contains
                .as_deref()
                .is_none_or(|b| body.contains(b))
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Body (lossy UTF-8).
    pub body: String,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

/// The running proxy; stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`: point the SDK here.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Upstream = Client<HttpConnector, Full<Bytes>>;

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:<port>`).
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let client = client.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        handle(req, st.clone(), client.clone(), upstream.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            endpoint,
            state,
            task,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule (rules are tried in the order added).
    pub fn add(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().rules.clear();
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// Requests seen whose body or path contains `text`.
    pub fn count(&self, text: &str) -> usize {
        self.lock()
            .seen
            .iter()
            .filter(|s| s.body.contains(text) || s.path.contains(text))
            .count()
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: Upstream,
    upstream: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let method = parts.method.as_str().to_owned();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let text = String::from_utf8_lossy(&body).into_owned();
    let action = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            body: text.clone(),
        });
        let mut chosen = None;
        for rule in st.rules.iter_mut() {
            if !rule.matches(&method, &path, &text) || rule.times == Some(0) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                break;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            chosen = Some(rule.action.clone());
            break;
        }
        chosen
    };
    if let Some(Action::Respond {
        status,
        content_type,
        body,
    }) = &action
    {
        return Ok(Response::builder()
            .status(*status)
            .header("content-type", *content_type)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap_or_default());
    }
    let uri = format!("{upstream}{path}");
    let mut fwd = Request::builder().method(parts.method.clone()).uri(uri);
    for (k, v) in parts.headers.iter() {
        fwd = fwd.header(k, v);
    }
    let fwd = match fwd.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(e.to_string())),
    };
    let resp = match client.request(fwd).await {
        Ok(r) => r,
        Err(e) => return Ok(bad_gateway(e.to_string())),
    };
    let (mut rparts, rbody) = resp.into_parts();
    let mut bytes = rbody
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if let Some(Action::Rewrite { from, to }) = &action {
        let s = String::from_utf8_lossy(&bytes).replace(from.as_str(), to);
        bytes = Bytes::from(s);
    }
    rparts.headers.remove("content-length");
    rparts.headers.remove("transfer-encoding");
    Ok(Response::from_parts(rparts, Full::new(bytes)))
}

fn bad_gateway(msg: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(502)
        .body(Full::new(Bytes::from(msg)))
        .unwrap_or_default()
}

/// A raw HTTP call (for test-only emulator routes and reading raw resources).
pub async fn http_call(method: &str, url: &str, body: &str) -> (u16, String) {
    let client: Upstream = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = client.request(req).await.expect("http call");
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
