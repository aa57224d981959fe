//! `POST /v1/webhooks/github` over real HTTP on 127.0.0.1, with octokit's real
//! `workflow_job` payloads from the shared wire samples (read in place from
//! `$CAPSTAN_WIRE_DIR`, default `<workspace>/../shared/wire`), signed here with the
//! test's secret; every case once on SQLite and once on PostgreSQL.
//!
//! Quirks of the samples (wire/SOURCE.md): the queued, in_progress and completed
//! samples share job id 289782451 (repository `Codertocat/Hello-World`, labels
//! `ubuntu-latest`), so they read as one job's life; `queued.with-deployment` has
//! action `queued` but status `waiting`, labels `self-hosted`, `k8s`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use api::webhooks::{SignatureError, WebhookSecret, verify_signature};
use api::{AppState, Clock, Readiness, Wake};
use capstan_core::{PoolId, PoolSpec, QueueSample, Timestamp};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use store::Store;
use store::github_jobs::GithubJobStatus;

const SECRET: &str = "webhook-test-secret";
const T0_S: i64 = 1_800_000_000;
/// octokit's job id in the queued, in_progress and completed samples.
const JOB: i64 = 289_782_451;

fn wire_dir() -> PathBuf {
    std::env::var_os("CAPSTAN_WIRE_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/wire"),
        PathBuf::from,
    )
}

/// The bytes of a wire sample, exactly as stored (the signature covers them).
fn sample(name: &str) -> Vec<u8> {
    let path = wire_dir().join("github").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("wire sample {}: {e}", path.display()))
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[test]
fn githubs_documented_test_vector_verifies() {
    let vector: Value = serde_json::from_slice(&sample("x-hub-signature-256.test-vector.json"))
        .expect("the test vector is JSON");
    let secret = WebhookSecret::new(vector["secret"].as_str().unwrap()).unwrap();
    let payload = vector["payload"].as_str().unwrap().as_bytes();
    let header = vector["header_value"].as_str().unwrap();
    assert_eq!(vector["header_name"], "X-Hub-Signature-256");
    assert_eq!(
        header,
        format!("sha256={}", vector["signature"].as_str().unwrap())
    );
    assert_eq!(verify_signature(&secret, payload, Some(header)), Ok(()));
    // One byte off in the body, or the secret, and it no longer verifies.
    assert_eq!(
        verify_signature(&secret, b"Hello, World?", Some(header)),
        Err(SignatureError::Mismatch)
    );
    let other = WebhookSecret::new("It's a secret to everybody").unwrap();
    assert_eq!(
        verify_signature(&other, payload, Some(header)),
        Err(SignatureError::Mismatch)
    );
}

/// One case's world: the store, a server on a loopback port, the pools woken.
struct Ctx {
    store: Store,
    url: String,
    http: reqwest::Client,
    woken: Arc<Mutex<Vec<PoolId>>>,
    clock: Arc<AtomicI64>,
    server: tokio::task::JoinHandle<()>,
}

impl Ctx {
    async fn new(store: Store, secret: Option<&str>) -> Self {
        let woken = Arc::new(Mutex::new(Vec::new()));
        let clock = Arc::new(AtomicI64::new(T0_S * 1000));
        let (w, c) = (woken.clone(), clock.clone());
        let state = AppState::new(
            store.clone(),
            Readiness::default(),
            Clock::new(move || Timestamp::from_unix_ms(c.load(Ordering::SeqCst))),
        )
        .with_wake(Wake::new(move |id| w.lock().unwrap().push(id.clone())))
        .with_github_webhook_secret(secret.and_then(WebhookSecret::new));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/v1/webhooks/github",
            listener.local_addr().unwrap()
        );
        let app = api::app(state);
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
            )
            .await
            .unwrap();
        });
        for (id, repository, labels) in [
            (
                "gh/linux",
                "Codertocat/Hello-World",
                json!(["ubuntu-latest"]),
            ),
            (
                "gh/gpu",
                "codertocat/hello-world",
                json!(["ubuntu-latest", "gpu"]),
            ),
            (
                "gh/k8s",
                "lineville/elastic-machines-testing",
                json!(["k8s"]),
            ),
        ] {
            let spec: PoolSpec = serde_json::from_value(json!({
                "id": id,
                "provider": "fake",
                "max_capacity": 10,
                "launch_configs": [{"id": "small", "instance_type": "t"}],
                "queue": {"type": "github", "repository": repository, "labels": labels},
            }))
            .unwrap();
            store
                .create_pool(&spec, "test", Timestamp::from_unix_secs(T0_S))
                .await
                .unwrap();
        }
        Self {
            store,
            url,
            http: reqwest::Client::new(),
            woken,
            clock,
            server,
        }
    }

    fn advance_secs(&self, s: i64) {
        self.clock.fetch_add(s * 1000, Ordering::SeqCst);
    }

    /// Posts `body` with the given headers (`None` leaves one out); answers the status
    /// and the JSON body.
    async fn post_with(
        &self,
        body: &[u8],
        event: Option<&str>,
        delivery: Option<&str>,
        signature: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in [
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", delivery),
            ("X-Hub-Signature-256", signature),
        ] {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        let response = req.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A correctly signed `workflow_job` delivery.
    async fn deliver(&self, body: &[u8], delivery: &str) -> (u16, Value) {
        self.post_with(
            body,
            Some("workflow_job"),
            Some(delivery),
            Some(&sign(SECRET, body)),
        )
        .await
    }

    async fn samples(&self, pool: &str) -> Vec<QueueSample> {
        self.store
            .queue_samples(
                &PoolId::new(pool).unwrap(),
                Timestamp::from_unix_secs(0),
                Timestamp::from_unix_secs(T0_S + 86_400),
            )
            .await
            .unwrap()
    }

    /// pending, running, arrivals, completions of `pool`'s newest sample.
    async fn latest(&self, pool: &str) -> (u32, u32, u32, u32) {
        let s = *self.samples(pool).await.last().expect("a sample");
        (s.pending, s.running, s.arrivals, s.completions)
    }

    fn woken(&self) -> Vec<String> {
        let mut w = self.woken.lock().unwrap();
        w.drain(..).map(|id| id.to_string()).collect()
    }

    async fn nothing_stored(&self) {
        for pool in ["gh/linux", "gh/gpu", "gh/k8s"] {
            let id = PoolId::new(pool).unwrap();
            assert!(
                self.store.github_jobs(&id).await.unwrap().is_empty(),
                "{pool}"
            );
            assert!(self.samples(pool).await.is_empty(), "{pool}");
        }
        assert!(self.woken().is_empty());
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn a_jobs_life_moves_the_pools_demand_and_books_its_run_time(cx: Ctx) {
    let linux = PoolId::new("gh/linux").unwrap();
    let (status, body) = cx
        .deliver(&sample("workflow_job.queued.payload.json"), "d-queued")
        .await;
    assert_eq!(status, 200, "{body}");
    // gh/gpu names the same repository (in another case) but also wants `gpu`.
    assert_eq!(body["pools"], json!(["gh/linux"]));
    assert_eq!(body["changed"], json!(["gh/linux"]));
    assert_eq!(cx.latest("gh/linux").await, (1, 0, 1, 0));
    assert_eq!(cx.woken(), ["gh/linux"], "no idle slot for the queued job");
    assert!(cx.samples("gh/gpu").await.is_empty());

    cx.advance_secs(60);
    let (status, body) = cx
        .deliver(
            &sample("workflow_job.in_progress.payload.json"),
            "d-started",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cx.latest("gh/linux").await, (0, 1, 0, 0));
    assert!(cx.woken().is_empty(), "nothing pending: no wake-up");

    cx.advance_secs(200);
    let (status, body) = cx
        .deliver(
            &sample("workflow_job.completed.success.with-organization.payload.json"),
            "d-done",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cx.latest("gh/linux").await, (0, 0, 0, 1));
    let runs = cx
        .store
        .task_runs_recorded(
            &linux,
            Timestamp::from_unix_secs(0),
            Timestamp::from_unix_secs(T0_S + 86_400),
        )
        .await
        .unwrap();
    // completed_at 10:38:16 − started_at 10:34:58 in the sample: 3 min 18 s.
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].1.duration_ms, 198_000);
    assert_eq!(
        runs[0].1.finished_at,
        "2021-08-05T10:38:16Z".parse::<Timestamp>().unwrap()
    );

    // The failure sample of the same job, and a late queued: nothing moves back.
    cx.advance_secs(5);
    for (name, delivery) in [
        (
            "workflow_job.completed.failure.with-organization.payload.json",
            "d-failed",
        ),
        ("workflow_job.queued.payload.json", "d-late-queued"),
    ] {
        let (status, body) = cx.deliver(&sample(name), delivery).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["pools"], json!(["gh/linux"]));
        assert_eq!(body["changed"], json!([]), "{name}");
    }
    assert_eq!(cx.samples("gh/linux").await.len(), 3);
    let jobs = cx.store.github_jobs(&linux).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].job_id, jobs[0].status),
        (JOB, GithubJobStatus::Completed)
    );
}

async fn waiting_jobs_are_not_pending(cx: Ctx) {
    let (status, body) = cx
        .deliver(
            &sample("workflow_job.queued.with-deployment.payload.json"),
            "d-deploy",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pools"], json!(["gh/k8s"]));
    assert_eq!(cx.latest("gh/k8s").await, (0, 0, 0, 0));
    assert!(cx.woken().is_empty());
    let k8s = PoolId::new("gh/k8s").unwrap();
    let jobs = cx.store.github_jobs(&k8s).await.unwrap();
    assert_eq!(jobs[0].status, GithubJobStatus::Waiting);
    // The `waiting` action of the same job changes nothing.
    let (status, body) = cx
        .deliver(&sample("workflow_job.waiting.payload.json"), "d-waiting")
        .await;
    assert_eq!((status, &body["changed"]), (200, &json!([])), "{body}");
    assert_eq!(cx.samples("gh/k8s").await.len(), 1);
}

async fn bad_signatures_are_refused_and_change_nothing(cx: Ctx) {
    let body = sample("workflow_job.queued.payload.json");
    let good = sign(SECRET, &body);
    let wrong_secret = sign("not-the-secret", &body);
    let mut altered = body.clone();
    altered.extend_from_slice(b" ");
    for (signature, payload, expect) in [
        (None, &body, "missing X-Hub-Signature-256"),
        (Some("sha1=abc"), &body, "malformed"),
        (Some(&good[..40]), &body, "malformed"),
        (Some(wrong_secret.as_str()), &body, "does not match"),
        (Some(good.as_str()), &altered, "does not match"),
    ] {
        let (status, answer) = cx
            .post_with(payload, Some("workflow_job"), Some("d-1"), signature)
            .await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"], "unauthorized");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(expect), "{message}");
        assert!(!message.contains(SECRET), "{message}");
    }
    cx.nothing_stored().await;
    // The refused attempts did not use up the delivery id.
    assert_eq!(cx.deliver(&body, "d-1").await.0, 200);
}

async fn a_replayed_delivery_is_refused_and_counted_once(cx: Ctx) {
    let body = sample("workflow_job.queued.payload.json");
    assert_eq!(
        cx.deliver(&body, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .await
            .0,
        200
    );
    cx.advance_secs(10);
    let (status, answer) = cx
        .deliver(&body, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"], "conflict");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("72d3162e-cc78-11e3-81ab-4c9367dc0958 already processed"),
        "{answer}"
    );
    // A replay carrying a newer status changes nothing either.
    let done = sample("workflow_job.completed.success.with-organization.payload.json");
    let (status, _) = cx
        .deliver(&done, "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .await;
    assert_eq!(status, 409);
    let samples = cx.samples("gh/linux").await;
    assert_eq!(samples.len(), 1);
    assert_eq!((samples[0].pending, samples[0].arrivals), (1, 1));
}

async fn other_events_bad_bodies_and_unmatched_jobs(cx: Ctx) {
    // A ping (sent when the webhook is created) is answered and ignored.
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let (status, answer) = cx
        .post_with(
            ping,
            Some("ping"),
            Some("d-ping"),
            Some(&sign(SECRET, ping)),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["ignored"].as_str().unwrap().contains("ping"));

    // Bad bodies are 400s naming what is wrong, and do not use up the delivery id.
    let not_json = b"{\"action\": ";
    let (status, answer) = cx.deliver(not_json, "d-bad").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_json"))
    );
    let mut job: Value =
        serde_json::from_slice(&sample("workflow_job.queued.payload.json")).unwrap();
    job["workflow_job"].as_object_mut().unwrap().remove("id");
    let no_id = serde_json::to_vec(&job).unwrap();
    let (status, answer) = cx.deliver(&no_id, "d-bad").await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["message"], "field workflow_job.id: missing");
    job["workflow_job"]["id"] = json!(JOB);
    job["workflow_job"]["status"] = json!("finished");
    let (status, answer) = cx
        .deliver(&serde_json::to_vec(&job).unwrap(), "d-bad")
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("workflow_job.status")
    );
    let body = sample("workflow_job.queued.payload.json");
    let (status, answer) = cx
        .post_with(
            &body,
            Some("workflow_job"),
            None,
            Some(&sign(SECRET, &body)),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("X-GitHub-Delivery")
    );
    cx.nothing_stored().await;

    // A job no pool asks for: labels that do not cover the pool's, or another
    // repository. Answered, remembered, nothing stored.
    job["workflow_job"]["status"] = json!("queued");
    job["workflow_job"]["labels"] = json!(["windows-latest"]);
    let (status, answer) = cx
        .deliver(&serde_json::to_vec(&job).unwrap(), "d-bad")
        .await;
    assert_eq!((status, &answer["pools"]), (200, &json!([])), "{answer}");
    job["workflow_job"]["labels"] = json!(["ubuntu-latest", "gpu"]);
    job["repository"]["full_name"] = json!("someone/else");
    let (status, answer) = cx
        .deliver(&serde_json::to_vec(&job).unwrap(), "d-other")
        .await;
    assert_eq!((status, &answer["pools"]), (200, &json!([])), "{answer}");
    cx.nothing_stored().await;
    assert_eq!(cx.deliver(&body, "d-bad").await.0, 409);

    // Labels the job has beyond the pool's do not matter; letter case does not either.
    job["repository"]["full_name"] = json!("CODERTOCAT/hello-world");
    job["workflow_job"]["labels"] = json!(["Ubuntu-Latest", "GPU", "x64"]);
    let (status, answer) = cx
        .deliver(&serde_json::to_vec(&job).unwrap(), "d-gpu")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pools"], json!(["gh/gpu", "gh/linux"]));
}

async fn no_secret_configured_turns_the_route_off(cx: Ctx) {
    let body = sample("workflow_job.queued.payload.json");
    let (status, answer) = cx.deliver(&body, "d-1").await;
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("github_webhook_secret"),
        "{answer}"
    );
    cx.nothing_stored().await;
}

async fn with_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    store::scratch::with_sqlite(
        |store| async move { case(Ctx::new(store, Some(SECRET)).await).await },
    )
    .await
}

async fn with_postgres<F, Fut>(case: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    store::scratch::with_postgres(
        |store| async move { case(Ctx::new(store, Some(SECRET)).await).await },
    )
    .await
}

store::on_both_backends!(
    a_jobs_life_moves_the_pools_demand_and_books_its_run_time,
    waiting_jobs_are_not_pending,
    bad_signatures_are_refused_and_change_nothing,
    a_replayed_delivery_is_refused_and_counted_once,
    other_events_bad_bodies_and_unmatched_jobs,
);

#[tokio::test]
async fn without_a_secret_the_receiver_is_off() {
    store::scratch::with_sqlite(|store| async move {
        no_secret_configured_turns_the_route_off(Ctx::new(store, None).await).await
    })
    .await;
}
