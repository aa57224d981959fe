//! `capstan agent` end to end: the real binary against the metadata stub
//! (`common::metadata_stub`) and a small worker-API server written here that follows
//! the worker API contract and records every call.
//!
//! The server answers heartbeats every second and gives a short drain grace, so each
//! test runs in a few seconds. Agents log to files in the test's temporary directory
//! (printed when a wait times out); their children are `sh -c` scripts that leave
//! marker files behind.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::metadata_stub::MetadataStub;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------
// The worker-API server.

/// One heartbeat the server accepted.
#[derive(Debug, Clone)]
struct Heartbeat {
    worker_id: String,
    busy_slots: u64,
    finished_tasks: Vec<Value>,
    at: Instant,
}

#[derive(Debug)]
struct Known {
    pool_id: String,
    token: String,
    used: bool,
}

#[derive(Debug, Default)]
struct Contract {
    /// Cloud workers: id → their registration token.
    workers: HashMap<String, Known>,
    /// Static machines: name → secret.
    machines: HashMap<String, String>,
    /// How many more times a static machine's registration answers `not_leased`.
    not_leased: u32,
    /// worker id → its credential.
    credentials: HashMap<String, String>,
    revoked: HashSet<String>,
    registers: Vec<(Value, u16, Instant)>,
    heartbeats: Vec<Heartbeat>,
    /// Heartbeats refused (wrong credential, revoked): (worker id, status).
    refused: Vec<(String, u16)>,
    interruptions: Vec<(String, Value)>,
    /// What heartbeats answer.
    action: String,
    drain_grace_s: u64,
}

type Shared = Arc<Mutex<Contract>>;

/// Every worker's capacity: a heartbeat with more busy slots is 422, as on the server.
const CAPACITY: u64 = 4;

/// The server, on its own thread and runtime; stopping it drops every connection.
struct ContractServer {
    port: u16,
    state: Shared,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl ContractServer {
    fn start() -> Self {
        let state = Shared::new(Mutex::new(Contract {
            action: "continue".into(),
            drain_grace_s: 2,
            ..Contract::default()
        }));
        let mut server = Self {
            port: common::free_port(),
            state,
            running: None,
        };
        server.restart();
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves (again) on the same port.
    fn restart(&mut self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let app = Router::new()
            .route("/v1/workers/register", post(register))
            .route("/v1/workers/{id}/heartbeat", post(heartbeat))
            .route("/v1/workers/{id}/interruption", post(interruption))
            .with_state(self.state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
                let _ = stopped.await;
            });
            // Dropping the runtime drops the listener and every open connection.
        });
        self.running = Some((stop, thread));
    }

    /// Stops answering, like a crashed server.
    fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            thread.join().unwrap();
        }
    }

    fn add_worker(&self, worker_id: &str, pool_id: &str, token: &str) {
        self.state.lock().unwrap().workers.insert(
            worker_id.into(),
            Known {
                pool_id: pool_id.into(),
                token: token.into(),
                used: false,
            },
        );
    }

    fn with<T>(&self, f: impl FnOnce(&mut Contract) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    fn heartbeats(&self) -> Vec<Heartbeat> {
        self.with(|c| c.heartbeats.clone())
    }

    /// Every finished task reported, deduplicated by `finished_at` like the server.
    fn finished_tasks(&self) -> Vec<(String, f64)> {
        let mut seen = HashSet::new();
        let mut tasks = Vec::new();
        for hb in self.heartbeats() {
            for task in hb.finished_tasks {
                let at = task["finished_at"].as_str().unwrap().to_owned();
                if seen.insert(at.clone()) {
                    tasks.push((at, task["duration_s"].as_f64().unwrap()));
                }
            }
        }
        tasks
    }
}

impl Drop for ContractServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "message": message})),
    )
        .into_response()
}

async fn register(State(state): State<Shared>, body: String) -> Response {
    let mut c = state.lock().unwrap();
    let body: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "not JSON",
            );
        }
    };
    let answer = register_answer(&mut c, &body);
    let status = answer.status().as_u16();
    c.registers.push((body, status, Instant::now()));
    answer
}

fn register_answer(c: &mut Contract, body: &Value) -> Response {
    let (worker_id, pool_id) = if let Some(machine) = body["machine"].as_str() {
        if c.machines.get(machine).map(String::as_str) != body["secret"].as_str() {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown machine or wrong secret",
            );
        }
        if c.not_leased > 0 {
            c.not_leased -= 1;
            let mut response = error(
                StatusCode::CONFLICT,
                "not_leased",
                "no worker wants this machine",
            );
            response
                .headers_mut()
                .insert("Retry-After", "1".parse().unwrap());
            return response;
        }
        (format!("w-{machine}"), "static/rack".to_owned())
    } else {
        let (Some(id), Some(token)) = (
            body["worker_id"].as_str(),
            body["registration_token"].as_str(),
        ) else {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "worker_id and registration_token",
            );
        };
        let Some(known) = c.workers.get_mut(id).filter(|k| k.token == token) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "unknown worker or wrong token",
            );
        };
        if known.used {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                "registration token already used",
            );
        }
        known.used = true;
        (id.to_owned(), known.pool_id.clone())
    };
    let credential = format!("capw_{worker_id}_{}", "c".repeat(64));
    c.credentials.insert(worker_id.clone(), credential.clone());
    axum::Json(json!({
        "worker_id": worker_id,
        "pool_id": pool_id,
        "credential": credential,
        "heartbeat_interval_s": 1,
        "drain_grace_s": c.drain_grace_s,
    }))
    .into_response()
}

/// Checks the bearer: 401 for a revoked worker, 403 for someone else's credential.
fn authorize(c: &Contract, id: &str, headers: &HeaderMap) -> Result<(), StatusCode> {
    if c.revoked.contains(id) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (presented, c.credentials.get(id)) {
        (Some(p), Some(expected)) if p == expected => Ok(()),
        (None, _) => Err(StatusCode::UNAUTHORIZED),
        _ => Err(StatusCode::FORBIDDEN),
    }
}

async fn heartbeat(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut c = state.lock().unwrap();
    if body["busy_slots"].as_u64() > Some(CAPACITY) {
        c.refused.push((id, 422));
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "busy_slots: at most the worker's capacity (4)",
        );
    }
    if let Err(status) = authorize(&c, &id, &headers) {
        let message = format!("worker {id}: credential revoked or not this worker's");
        c.refused.push((id, status.as_u16()));
        return error(status, "unauthorized", &message);
    }
    c.heartbeats.push(Heartbeat {
        worker_id: id,
        busy_slots: body["busy_slots"].as_u64().unwrap(),
        finished_tasks: body["finished_tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        at: Instant::now(),
    });
    axum::Json(json!({"action": c.action, "heartbeat_interval_s": 1})).into_response()
}

async fn interruption(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut c = state.lock().unwrap();
    if let Err(status) = authorize(&c, &id, &headers) {
        return error(status, "unauthorized", "not this worker");
    }
    c.interruptions.push((id, body));
    (StatusCode::ACCEPTED, axum::Json(json!({"action": "drain"}))).into_response()
}

// ---------------------------------------------------------------------------------
// The agent process.

/// A running `capstan agent`; stopped (SIGTERM, then SIGKILL) and reaped on drop.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn spawn(dir: &Path, args: &[&str], command: &[&str]) -> Self {
        let log = dir.join(format!("agent-{}.log", common::free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.arg("agent")
            .args(args)
            .current_dir(dir)
            .env("CAPSTAN_LOG", "info,capstan=debug")
            .env_remove("CAPSTAN_SERVER")
            .env_remove("CAPSTAN_METADATA_URL")
            .env_remove("CAPSTAN_BUSY_FILE")
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("agent.stdout")).unwrap())
            .stderr(File::create(&log).unwrap());
        if !command.is_empty() {
            cmd.arg("--").args(command);
        }
        Self {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit within {timeout:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.is_running() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`; panics with `what` and the agent's
/// log after `timeout`.
fn wait_for<T>(
    agent: &Agent,
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; the agent's log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const TOKEN: &str = "5f0c3a9e1b7d4c2a8e6f0b3d5a7c9e1f2b4d6a8c0e2f4a6b8d0c2e4f6a8b0c2d";

fn user_data(worker_id: &str, api_url: Option<&str>) -> String {
    let mut data =
        json!({"pool_id": "ci/linux", "worker_id": worker_id, "registration_token": TOKEN});
    if let Some(url) = api_url {
        data["api_url"] = json!(url);
    }
    data.to_string()
}

fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The agent's first accepted heartbeat.
fn first_heartbeat(server: &ContractServer, agent: &Agent, worker_id: &str) -> Heartbeat {
    wait_for(agent, Duration::from_secs(10), "a heartbeat", || {
        server
            .heartbeats()
            .into_iter()
            .find(|h| h.worker_id == worker_id)
    })
}

fn credential_of(server: &ContractServer, worker_id: &str) -> String {
    server.with(|c| c.credentials[worker_id].clone())
}

// ---------------------------------------------------------------------------------
// Bootstrap and registration.

#[test]
fn registers_from_ec2_user_data_read_through_imdsv2() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.add_worker("w-ec2", "ci/linux", TOKEN);
    let stub = MetadataStub::start();
    stub.add_instance("i-0ec2", &user_data("w-ec2", Some(&server.url())));

    let agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            "ec2",
            "--metadata-url",
            &stub.base_url("i-0ec2"),
        ],
        &[],
    );
    let hb = first_heartbeat(&server, &agent, "w-ec2");
    assert_eq!(hb.busy_slots, 0, "no child, no busy file: idle");
    let registers = server.with(|c| c.registers.clone());
    assert_eq!(registers.len(), 1);
    assert_eq!(
        registers[0].0,
        json!({"worker_id": "w-ec2", "registration_token": TOKEN})
    );
    assert_eq!(
        server.with(|c| c.refused.len()),
        0,
        "heartbeats carry the credential"
    );
    let requests = stub.requests("i-0ec2");
    assert_eq!(
        requests[..2],
        ["PUT /latest/api/token 200", "GET /latest/user-data 200"],
        "{requests:?}"
    );
    let log = agent.log();
    assert!(log.contains("registered"), "{log}");
    assert!(
        !log.contains(TOKEN),
        "the registration token reached the log:\n{log}"
    );
    assert!(
        !log.contains(&credential_of(&server, "w-ec2")),
        "the credential reached the log:\n{log}"
    );
}

#[test]
fn registers_from_gce_metadata_and_the_server_flag_beats_a_missing_api_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.add_worker("w-gce", "ci/linux", TOKEN);
    let stub = MetadataStub::start();
    stub.add_instance("gce-1", &user_data("w-gce", None));

    let agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            "gce",
            "--metadata-url",
            &stub.base_url("gce-1"),
            "--server",
            &server.url(),
        ],
        &[],
    );
    first_heartbeat(&server, &agent, "w-gce");
    let requests = stub.requests("gce-1");
    assert_eq!(
        requests[0], "GET /computeMetadata/v1/instance/attributes/capstan-user-data 200",
        "{requests:?}"
    );
}

#[test]
fn registers_a_static_machine_from_a_toml_file_waiting_out_not_leased() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.with(|c| {
        c.machines
            .insert("rack1-07".into(), "machine-secret-1234".into());
        c.not_leased = 1;
    });
    let file = dir.path().join("agent.toml");
    std::fs::write(
        &file,
        format!(
            "server = \"{}\"\nmachine = \"rack1-07\"\nsecret = \"machine-secret-1234\"\n",
            server.url()
        ),
    )
    .unwrap();

    let agent = Agent::spawn(
        dir.path(),
        &["--bootstrap", &format!("file:{}", file.display())],
        &[],
    );
    first_heartbeat(&server, &agent, "w-rack1-07");
    let registers = server.with(|c| c.registers.clone());
    assert_eq!(registers.len(), 2, "{registers:?}");
    assert_eq!(registers[0].1, 409);
    assert_eq!(
        registers[1].0,
        json!({"machine": "rack1-07", "secret": "machine-secret-1234"})
    );
    let waited = registers[1].2 - registers[0].2;
    assert!(
        waited >= Duration::from_millis(900),
        "Retry-After: 1 honoured, waited {waited:?}"
    );
    assert!(!agent.log().contains("machine-secret-1234"));
}

#[test]
fn a_released_static_machine_registers_again_instead_of_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.with(|c| {
        c.machines
            .insert("rack1-08".into(), "machine-secret-5678".into());
        c.action = "terminate".into();
    });
    let file = dir.path().join("agent.json");
    std::fs::write(
        &file,
        json!({"server": server.url(), "machine": "rack1-08", "secret": "machine-secret-5678"})
            .to_string(),
    )
    .unwrap();
    let mut agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            &format!("file:{}", file.display()),
            "--shutdown-command",
            "touch shutdown-ran",
        ],
        &[],
    );
    wait_for(
        &agent,
        Duration::from_secs(10),
        "a second registration",
        || {
            let granted = server.with(|c| c.registers.iter().filter(|r| r.1 == 200).count());
            (granted >= 2).then_some(())
        },
    );
    server.with(|c| c.action = "continue".into());
    assert!(agent.is_running(), "{}", agent.log());
    assert!(
        !dir.path().join("shutdown-ran").exists(),
        "a released static machine is not shut down"
    );
}

#[test]
fn registers_from_cloud_user_data_saved_in_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.add_worker("w-file", "ci/linux", TOKEN);
    let file = dir.path().join("user-data.json");
    std::fs::write(&file, user_data("w-file", Some(&server.url()))).unwrap();
    let agent = Agent::spawn(
        dir.path(),
        &["--bootstrap", &format!("file:{}", file.display())],
        &[],
    );
    first_heartbeat(&server, &agent, "w-file");
}

#[test]
fn a_bad_bootstrap_names_the_field_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let stub = MetadataStub::start();
    stub.add_instance(
        "i-bad",
        &json!({"worker_id": "w-1", "api_url": server.url()}).to_string(),
    );
    let mut agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            "ec2",
            "--metadata-url",
            &stub.base_url("i-bad"),
        ],
        &[],
    );
    assert!(!agent.wait_exit(Duration::from_secs(10)).success());
    let log = agent.log();
    assert!(
        log.contains("EC2 user-data: missing field `registration_token`"),
        "{log}"
    );

    stub.add_instance("i-script", "#!/bin/sh\necho not capstan");
    let mut agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            "gce",
            "--metadata-url",
            &stub.base_url("i-script"),
        ],
        &[],
    );
    assert!(!agent.wait_exit(Duration::from_secs(10)).success());
    assert!(agent.log().contains("not JSON"), "{}", agent.log());

    let file = dir.path().join("static.toml");
    std::fs::write(&file, "machine = \"m\"\nsecret = \"s\"\n").unwrap();
    let mut agent = Agent::spawn(
        dir.path(),
        &["--bootstrap", &format!("file:{}", file.display())],
        &[],
    );
    assert!(!agent.wait_exit(Duration::from_secs(10)).success());
    assert!(agent.log().contains("--server"), "{}", agent.log());
    assert!(
        server.with(|c| c.registers.is_empty()),
        "a bad bootstrap never registers"
    );
}

// ---------------------------------------------------------------------------------
// Busy slots and finished tasks.

/// Starts a cloud agent for `worker_id` with a bootstrap file and `args`.
fn cloud_agent(
    dir: &Path,
    server: &ContractServer,
    worker_id: &str,
    args: &[&str],
    command: &[&str],
) -> Agent {
    server.add_worker(worker_id, "ci/linux", TOKEN);
    let file = dir.join(format!("{worker_id}.json"));
    std::fs::write(&file, user_data(worker_id, Some(&server.url()))).unwrap();
    let bootstrap = format!("file:{}", file.display());
    let mut all = vec!["--bootstrap", bootstrap.as_str()];
    all.extend_from_slice(args);
    Agent::spawn(dir, &all, command)
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn busy_file_counts_are_reported_and_freed_slots_finish_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let busy = dir.path().join("busy");
    let agent = cloud_agent(
        dir.path(),
        &server,
        "w-busy",
        &["--busy-file", busy.to_str().unwrap()],
        &["sleep", "30"],
    );
    first_heartbeat(&server, &agent, "w-busy");
    // One slot busy from t1, a second from t2 = t1+1.2 s; both free at t3 = t2+1.5 s:
    // the tasks took t3-t1 (~2.7 s) and t3-t2 (~1.5 s), measured here. Each phase
    // outlasts the 1 s heartbeat interval, so each count is reported.
    write_atomically(&busy, "1\n");
    let t1 = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    write_atomically(&busy, "2\n");
    let t2 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    write_atomically(&busy, "0");
    let t3 = Instant::now();
    let tasks = wait_for(&agent, Duration::from_secs(5), "two finished tasks", || {
        let tasks = server.finished_tasks();
        (tasks.len() >= 2).then_some(tasks)
    });
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    wait_for(&agent, Duration::from_secs(5), "an idle heartbeat", || {
        server
            .heartbeats()
            .into_iter()
            .find(|h| h.at > t3 && h.busy_slots == 0)
    });
    // Oldest slot first; the agent reads the file every 250 ms, so each duration is
    // off by less than that, plus scheduling slack on a loaded machine.
    let (first, second) = (tasks[0].1, tasks[1].1);
    let (expect_first, expect_second) = ((t3 - t1).as_secs_f64(), (t3 - t2).as_secs_f64());
    assert!(
        (first - expect_first).abs() < 0.8,
        "first task took {first} s, expected {expect_first}"
    );
    assert!(
        (second - expect_second).abs() < 0.8,
        "second task took {second} s, expected {expect_second}"
    );
    assert_ne!(tasks[0].0, tasks[1].0, "finished_at is unique");
    let heartbeats = server.heartbeats();
    assert!(
        heartbeats.iter().any(|h| h.busy_slots == 2),
        "two busy slots were reported"
    );
    let saw_one = server.heartbeats().iter().any(|h| h.busy_slots == 1);
    assert!(saw_one, "the single busy slot was reported");
}

#[test]
fn a_rejected_heartbeat_is_logged_and_retried_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let busy = dir.path().join("busy");
    write_atomically(&busy, "9");
    let mut agent = cloud_agent(
        dir.path(),
        &server,
        "w-over",
        &["--busy-file", busy.to_str().unwrap()],
        &["sleep", "30"],
    );
    wait_for(
        &agent,
        Duration::from_secs(10),
        "a rejected heartbeat",
        || server.with(|c| c.refused.iter().any(|r| r.1 == 422).then_some(())),
    );
    assert!(agent.is_running(), "a 422 is not fatal: {}", agent.log());
    write_atomically(&busy, "3");
    // Accepted heartbeats before the 9 was read may say 0; the one after the fix says 3.
    let hb = wait_for(
        &agent,
        Duration::from_secs(10),
        "an accepted heartbeat with 3 busy slots",
        || {
            server
                .heartbeats()
                .into_iter()
                .find(|h| h.worker_id == "w-over" && h.busy_slots == 3)
        },
    );
    assert_eq!(hb.busy_slots, 3);
    assert!(
        agent.log().contains("rejected the heartbeat"),
        "{}",
        agent.log()
    );
}

#[test]
fn a_running_child_is_one_busy_slot_and_one_task_and_once_leaves_it_idle() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let script = "echo \"$CAPSTAN_WORKER_ID $CAPSTAN_POOL_ID\" >> runs; sleep 2";
    let mut agent = cloud_agent(
        dir.path(),
        &server,
        "w-child",
        &["--once"],
        &strs(&sh(script)),
    );
    let hb = first_heartbeat(&server, &agent, "w-child");
    assert_eq!(hb.busy_slots, 1, "busy while the child runs");
    let tasks = wait_for(&agent, Duration::from_secs(8), "the child's task", || {
        let tasks = server.finished_tasks();
        (!tasks.is_empty()).then_some(tasks)
    });
    let took = tasks[0].1;
    assert!(
        (1.8..6.0).contains(&took),
        "the run took {took} s, expected ~2"
    );
    // Idle heartbeats go on; the child is not started again.
    let reported = Instant::now();
    wait_for(
        &agent,
        Duration::from_secs(5),
        "two idle heartbeats",
        || {
            let idle = server
                .heartbeats()
                .iter()
                .filter(|h| h.at > reported && h.busy_slots == 0)
                .count();
            (idle >= 2).then_some(())
        },
    );
    assert!(agent.is_running());
    let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
    assert_eq!(
        runs, "w-child ci/linux\n",
        "one run, with the worker's environment"
    );
    assert_eq!(server.finished_tasks().len(), 1);
}

#[test]
fn a_child_that_exits_on_its_own_is_restarted_without_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let agent = cloud_agent(
        dir.path(),
        &server,
        "w-again",
        &[],
        &strs(&sh("echo run >> runs; sleep 0.3")),
    );
    first_heartbeat(&server, &agent, "w-again");
    let runs = dir.path().join("runs");
    wait_for(&agent, Duration::from_secs(8), "a second run", || {
        let text = std::fs::read_to_string(&runs).unwrap_or_default();
        (text.lines().count() >= 2).then_some(())
    });
    assert!(!agent.log().is_empty());
}

// ---------------------------------------------------------------------------------
// Drain, terminate, signals.

/// A child that records its pid, and on SIGTERM writes `marker` and then either
/// exits (`graceful`) or carries on (so only SIGKILL stops it).
fn trapping_child(graceful: bool) -> Vec<String> {
    let on_term = if graceful {
        "echo term > marker; exit 0"
    } else {
        "echo term > marker"
    };
    sh(&format!(
        "trap '{on_term}' TERM; echo $$ > pid; while true; do sleep 0.1; done"
    ))
}

#[test]
fn drain_relays_sigterm_then_sigkill_after_the_grace_and_keeps_heartbeating() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let mut agent = cloud_agent(
        dir.path(),
        &server,
        "w-drain",
        &[],
        &strs(&trapping_child(false)),
    );
    first_heartbeat(&server, &agent, "w-drain");
    let pid_file = dir.path().join("pid");
    let pid: i32 = wait_for(&agent, Duration::from_secs(5), "the child's pid", || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    });
    server.with(|c| c.action = "drain".into());
    let drained = Instant::now();
    let marker = dir.path().join("marker");
    wait_for(
        &agent,
        Duration::from_secs(5),
        "the child to get SIGTERM",
        || marker.exists().then_some(()),
    );
    // The child ignores SIGTERM: it is busy until SIGKILL at the 2 s grace.
    let idle = wait_for(&agent, Duration::from_secs(8), "an idle heartbeat", || {
        server
            .heartbeats()
            .into_iter()
            .find(|h| h.at > drained && h.busy_slots == 0)
    });
    let after = idle.at - drained;
    assert!(
        after >= Duration::from_millis(1900),
        "idle {after:?} after the drain: killed before the grace"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the child is gone"
    );
    assert!(
        server.finished_tasks().is_empty(),
        "a killed run is no finished task"
    );
    // Drained, it keeps heartbeating until told to terminate.
    let seen = server.heartbeats().len();
    wait_for(
        &agent,
        Duration::from_secs(5),
        "heartbeats while drained",
        || (server.heartbeats().len() >= seen + 2).then_some(()),
    );
    assert!(agent.is_running());
    assert!(agent.log().contains("SIGKILL"), "{}", agent.log());
}

#[test]
fn terminate_stops_the_child_runs_the_shutdown_command_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let mut agent = cloud_agent(
        dir.path(),
        &server,
        "w-term",
        &[
            "--shutdown-command",
            "echo \"$CAPSTAN_WORKER_ID\" > shutdown-ran",
        ],
        &strs(&trapping_child(true)),
    );
    first_heartbeat(&server, &agent, "w-term");
    wait_for(&agent, Duration::from_secs(5), "the child to start", || {
        dir.path().join("pid").exists().then_some(())
    });
    server.with(|c| c.action = "terminate".into());
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", agent.log());
    assert!(dir.path().join("marker").exists(), "the child got SIGTERM");
    let ran = std::fs::read_to_string(dir.path().join("shutdown-ran")).unwrap();
    assert_eq!(ran.trim(), "w-term");
}

#[test]
fn sigterm_to_the_agent_stops_the_child_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let mut agent = cloud_agent(
        dir.path(),
        &server,
        "w-sig",
        &[],
        &strs(&trapping_child(true)),
    );
    first_heartbeat(&server, &agent, "w-sig");
    wait_for(&agent, Duration::from_secs(5), "the child to start", || {
        dir.path().join("pid").exists().then_some(())
    });
    kill(agent.pid(), Signal::SIGTERM).unwrap();
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", agent.log());
    assert!(dir.path().join("marker").exists(), "the child got SIGTERM");
}

// ---------------------------------------------------------------------------------
// Failures.

#[test]
fn a_revoked_credential_stops_the_agent_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    let mut agent = cloud_agent(dir.path(), &server, "w-revoked", &[], &["sleep", "30"]);
    first_heartbeat(&server, &agent, "w-revoked");
    server.with(|c| c.revoked.insert("w-revoked".into()));
    let status = agent.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{status}");
    let log = agent.log();
    assert!(
        log.contains("capstan revoked this worker's credential"),
        "{log}"
    );
}

#[test]
fn reconnects_after_the_server_comes_back_and_delivers_held_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ContractServer::start();
    let agent = cloud_agent(dir.path(), &server, "w-lost", &["--once"], &["sleep", "2"]);
    first_heartbeat(&server, &agent, "w-lost");
    server.stop();
    let stopped = Instant::now();
    // The child finishes while the server is down; its task must wait.
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    let back = wait_for(
        &agent,
        Duration::from_secs(15),
        "a heartbeat after the restart",
        || {
            server
                .heartbeats()
                .into_iter()
                .find(|h| h.at > stopped && !h.finished_tasks.is_empty())
        },
    );
    let took = back.finished_tasks[0]["duration_s"].as_f64().unwrap();
    assert!((1.8..6.0).contains(&took), "the run took {took} s");
    // The server records the heartbeat before its reply reaches the agent, which logs
    // the reconnection only once it has read that reply.
    wait_for(
        &agent,
        Duration::from_secs(5),
        "the reconnection log line",
        || agent.log().contains("reconnected").then_some(()),
    );
    let log = agent.log();
    assert!(log.contains("lost the connection to capstan"), "{log}");
}

// ---------------------------------------------------------------------------------
// Interruption notices.

#[test]
fn an_ec2_spot_notice_is_reported_once_even_after_the_imds_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.add_worker("w-spot", "ci/linux", TOKEN);
    let stub = MetadataStub::start();
    stub.add_instance("i-spot", &user_data("w-spot", Some(&server.url())));
    let agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            "ec2",
            "--metadata-url",
            &stub.base_url("i-spot"),
            "--interruption-poll-s",
            "0.3",
        ],
        &strs(&trapping_child(true)),
    );
    first_heartbeat(&server, &agent, "w-spot");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        server.with(|c| c.interruptions.is_empty()),
        "no notice, no report"
    );
    stub.expire_tokens("i-spot");
    stub.set_spot_action(
        "i-spot",
        r#"{"action": "terminate", "time": "2026-11-30T10:00:00Z"}"#,
    );
    wait_for(
        &agent,
        Duration::from_secs(5),
        "the interruption report",
        || server.with(|c| (!c.interruptions.is_empty()).then_some(())),
    );
    std::thread::sleep(Duration::from_secs(2));
    let reports = server.with(|c| c.interruptions.clone());
    assert_eq!(reports.len(), 1, "reported exactly once: {reports:?}");
    assert_eq!(reports[0].0, "w-spot");
    assert_eq!(
        reports[0].1,
        json!({"source": "ec2", "action": "terminate", "at": "2026-11-30T10:00:00Z"})
    );
    let requests = stub.requests("i-spot");
    let refused = requests
        .iter()
        .position(|r| r == "GET /latest/meta-data/spot/instance-action 401")
        .expect("the expired token was refused");
    assert_eq!(
        requests[refused + 1],
        "PUT /latest/api/token 200",
        "{requests:?}"
    );
    // capstan answered drain: the child was told to stop.
    assert!(dir.path().join("marker").exists(), "the child got SIGTERM");
}

#[test]
fn a_gce_preemption_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ContractServer::start();
    server.add_worker("w-pre", "ci/linux", TOKEN);
    let stub = MetadataStub::start();
    stub.add_instance("gce-pre", &user_data("w-pre", Some(&server.url())));
    let agent = Agent::spawn(
        dir.path(),
        &[
            "--bootstrap",
            "gce",
            "--metadata-url",
            &stub.base_url("gce-pre"),
            "--interruption-poll-s",
            "0.3",
        ],
        &[],
    );
    first_heartbeat(&server, &agent, "w-pre");
    stub.set_preempted("gce-pre");
    wait_for(
        &agent,
        Duration::from_secs(5),
        "the interruption report",
        || server.with(|c| (!c.interruptions.is_empty()).then_some(())),
    );
    std::thread::sleep(Duration::from_secs(2));
    let reports = server.with(|c| c.interruptions.clone());
    assert_eq!(reports.len(), 1, "reported exactly once: {reports:?}");
    assert_eq!(
        reports[0].1,
        json!({"source": "gce", "action": "preempted", "at": null})
    );
    assert!(
        stub.requests("gce-pre")
            .contains(&"GET /computeMetadata/v1/instance/preempted 200".to_owned())
    );
}

// ---------------------------------------------------------------------------------
// The stub itself behaves like the real services where the agent depends on it.

#[test]
fn the_metadata_stub_is_as_strict_as_the_real_services() {
    let stub = MetadataStub::start();
    stub.add_instance("i-1", "{}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = stub.base_url("i-1");
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let status = |r: reqwest::Response| r.status().as_u16();
        // IMDSv2: no token, no data; the token needs its TTL header.
        let r = http
            .get(format!("{base}/latest/user-data"))
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 401);
        let r = http
            .put(format!("{base}/latest/api/token"))
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 400);
        let token = http
            .put(format!("{base}/latest/api/token"))
            .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let get = |path: &str| {
            http.get(format!("{base}{path}"))
                .header("X-aws-ec2-metadata-token", &token)
                .send()
        };
        assert_eq!(
            get("/latest/user-data")
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
            "{}"
        );
        assert_eq!(
            status(get("/latest/meta-data/spot/instance-action").await.unwrap()),
            404
        );
        stub.expire_tokens("i-1");
        assert_eq!(status(get("/latest/user-data").await.unwrap()), 401);
        // GCE: the flavor header is required.
        let path = format!("{base}/computeMetadata/v1/instance/preempted");
        assert_eq!(status(http.get(&path).send().await.unwrap()), 403);
        let r = http
            .get(&path)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["metadata-flavor"], "Google");
        assert_eq!(r.text().await.unwrap(), "FALSE");
        // wait_for_change returns once the value changes.
        let waiting = http
            .get(format!("{path}?wait_for_change=true&timeout_sec=5"))
            .header("Metadata-Flavor", "Google")
            .send();
        let flip = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stub.set_preempted("i-1");
        };
        let (answer, ()) = tokio::join!(waiting, flip);
        assert_eq!(answer.unwrap().text().await.unwrap(), "TRUE");
        // Unknown instances are 404.
        let other = stub.base_url("i-none");
        let r = http
            .get(format!("{other}/computeMetadata/v1/instance/preempted"))
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .unwrap();
        assert_eq!(status(r), 404);
    });
}
