//! Static machines end to end, the way an operator runs them: `capstan serve` on
//! PostgreSQL with its reconcile loop, machines registered through the API (each gets
//! its secret once), and on each machine a real `capstan agent --bootstrap file:…`
//! holding that secret, registering over plain HTTP and running a child worker.
//!
//! No cloud emulator: a static pool's "launch" is the loop leasing an idle machine to a
//! new worker, and its "terminate" asks the machine to drain; the agent's next
//! registration frees the machine for the next lease.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Service;
use common::loop_fixture::{bare, bootstrap_admin, pool_path};
use serde_json::{Value, json};
use store::scratch::ScratchDatabase;

/// A database, an admin token and a scratch directory (config, bootstrap files, logs).
struct Fixture {
    dir: tempfile::TempDir,
    db: ScratchDatabase,
    token: String,
}

impl Fixture {
    /// Everything up, or `None` (skipped, with the reason printed) when PostgreSQL is
    /// unreachable outside CI.
    async fn start() -> Option<Fixture> {
        let db = ScratchDatabase::create().await?;
        let dir = tempfile::tempdir().unwrap();
        let token = bootstrap_admin(dir.path(), &db.url);
        Some(Fixture { dir, db, token })
    }

    /// `capstan serve` with 2 s reconcile ticks, healthy; its log goes to
    /// `<dir>/serve.log`.
    fn serve(&self) -> Service {
        let config = self.dir.path().join("capstan.toml");
        std::fs::write(&config, "reconcile_interval_s = 2\n").unwrap();
        let port = common::free_port();
        let log = std::fs::File::create(self.dir.path().join("serve.log")).unwrap();
        let mut cmd = bare(self.dir.path());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &self.db.url])
            .arg("--config")
            .arg(&config)
            .env("CAPSTAN_LOG", "info,capstan=debug,reconciler=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        // The health check runs its own runtime: off the test's.
        std::thread::spawn(move || Service::spawn_healthy(cmd, port))
            .join()
            .unwrap_or_else(|_| panic!("capstan serve did not become healthy\n{}", self.logs()))
    }

    /// Every log in the scratch directory (server and agents), for failure messages.
    fn logs(&self) -> String {
        common::log_tails(self.dir.path())
    }

    /// An HTTP call with the admin token; (status, JSON body or the text).
    async fn call(
        &self,
        svc: &Service,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        common::call_api(&svc.url(), &self.token, method, path, body).await
    }

    /// Polls `check` every 250 ms until it answers `Some` or `within` passes; panics
    /// with `what` and the logs on timeout.
    async fn wait_for<T, F, Fut>(&self, what: &str, within: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        common::poll_until(what, within, || self.logs(), check).await
    }

    /// The pool's machines, ordered by name.
    async fn machines(&self, svc: &Service, pool: &str) -> Vec<Value> {
        let (status, body) = self
            .call(svc, "GET", &pool_path(pool, "/machines"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    /// The pool's workers as the API lists them (every state but terminated).
    async fn workers(&self, svc: &Service, pool: &str) -> Vec<Value> {
        let (status, body) = self
            .call(svc, "GET", &pool_path(pool, "/workers"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().unwrap().clone()
    }

    /// Pushes one queue sample: `pending` tasks waiting, none running.
    async fn push(&self, svc: &Service, pool: &str, pending: u32) {
        let (status, body) = self
            .call(
                svc,
                "POST",
                &pool_path(pool, "/queue"),
                Some(json!({"samples": [{"pending": pending, "running": 0}]})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
}

/// A reactive static pool of at most 2 one-slot workers, heartbeating every 2 s
/// (timeout 8 s), retired after 3 s idle.
fn static_pool(id: &str) -> Value {
    json!({
        "id": id,
        "provider": "static",
        "max_capacity": 2,
        "launch_configs": [{"id": "rack", "instance_type": "static", "capacity": 1}],
        "scaling": {"policy": "reactive", "idle_timeout_s": 3, "max_launches_per_minute": 100},
        "lifecycle": {"heartbeat_timeout_s": 8}
    })
}

/// One `capstan agent` on one static machine; killed on drop.
struct Agent {
    child: Child,
    machine: String,
    log: PathBuf,
    /// The busy file its child writes (1 while working, 0 when done).
    busy_file: PathBuf,
    /// One line per child run: the CAPSTAN_WORKER_ID it was started with.
    runs_file: PathBuf,
}

impl Agent {
    /// Writes `<dir>/<machine>.toml` (`server`, `machine`, `secret`) and starts
    /// `capstan agent --bootstrap file:<it> --once` with a child that records its worker
    /// id, marks one slot busy until the file `release` exists in `dir`, then idle.
    fn spawn(dir: &Path, server: &str, machine: &str, secret: &str) -> Agent {
        let bootstrap = dir.join(format!("{machine}.toml"));
        std::fs::write(
            &bootstrap,
            format!("server = \"{server}\"\nmachine = \"{machine}\"\nsecret = \"{secret}\"\n"),
        )
        .unwrap();
        let busy_file = dir.join(format!("busy-{machine}"));
        let runs_file = dir.join(format!("runs-{machine}"));
        let log = dir.join(format!("agent-{machine}.log"));
        let script = "echo \"$CAPSTAN_WORKER_ID\" >> \"$1\"; echo 1 > \"$0\"; \
                      while [ ! -e release ]; do sleep 0.2; done; echo 0 > \"$0\"";
        let child = agent_command(dir, &bootstrap, &log)
            .arg("--once")
            .arg("--busy-file")
            .arg(&busy_file)
            .args(["--", "sh", "-c", script])
            .arg(&busy_file)
            .arg(&runs_file)
            .spawn()
            .unwrap();
        Agent {
            child,
            machine: machine.to_owned(),
            log,
            busy_file,
            runs_file,
        }
    }

    /// The worker ids its child runs were started with, in order.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.runs_file)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `capstan agent --bootstrap file:<bootstrap>`, logging to `log`.
fn agent_command(dir: &Path, bootstrap: &Path, log: &Path) -> Command {
    let mut cmd = bare(dir);
    cmd.arg("agent")
        .arg("--bootstrap")
        .arg(format!("file:{}", bootstrap.display()))
        .env("CAPSTAN_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    cmd
}

/// `POST /v1/workers/register` with a machine's name and secret (no API token); the
/// status, the `Retry-After` header and the body.
async fn register(svc: &Service, machine: &str, secret: &str) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/workers/register", svc.url()))
        .json(&json!({"machine": machine, "secret": secret}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        status,
        retry_after,
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// What a wrong secret must not change: each machine's assignment and worker, each
/// worker's id, state and registration time.
fn snapshot(machines: &[Value], workers: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = machines
        .iter()
        .map(|m| format!("{} {} {}", m["name"], m["assignment"], m["worker_id"]))
        .collect();
    out.extend(
        workers
            .iter()
            .map(|w| format!("{} {} {}", w["id"], w["state"], w["registered_at"])),
    );
    out
}

/// Two machines registered through the API, one agent each. Idle, their registration
/// is `not_leased` with a Retry-After of the pool's heartbeat interval (2 s). Demand
/// leases both to new workers; the agents register and their children run busy. A
/// wrong secret is 401 and changes nothing. Demand falls to zero and the children
/// finish: the idle workers are retired after the idle timeout, the machines drain back
/// to idle, and the agents keep running, waiting for the next lease. Demand again
/// leases a machine to a new worker, whose agent registers and runs a new child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_machines_are_leased_registered_released_and_leased_anew() {
    let Some(f) = Fixture::start().await else {
        return;
    };
    let svc = f.serve();
    let dir = f.dir.path();
    let id = "lab/rack";
    let (status, body) = f
        .call(&svc, "PUT", &pool_path(id, ""), Some(static_pool(id)))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut secrets = Vec::new();
    for name in ["rack-a", "rack-b"] {
        let (status, body) = f
            .call(
                &svc,
                "POST",
                &pool_path(id, "/machines"),
                Some(json!({"name": name, "capacity": 1})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["machine"]["assignment"], "idle", "{body}");
        secrets.push(body["secret"].as_str().unwrap().to_owned());
    }

    // Idle: the right secret hears not_leased, and when to ask again (the heartbeat
    // interval, 8 s / 4); a wrong one is 401 whatever the machine's state.
    let (status, retry_after, body) = register(&svc, "rack-a", &secrets[0]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("not_leased")),
        "{body}"
    );
    assert_eq!(retry_after.as_deref(), Some("2"), "{body}");
    let (status, _, body) = register(&svc, "rack-a", &secrets[1]).await;
    assert_eq!(status, 401, "{body}");
    // An agent holding a wrong secret gives up at once, saying why.
    let wrong = dir.join("wrong.toml");
    std::fs::write(
        &wrong,
        format!(
            "server = \"{}\"\nmachine = \"rack-b\"\nsecret = \"{}\"\n",
            svc.url(),
            secrets[0]
        ),
    )
    .unwrap();
    let wrong_log = dir.join("agent-wrong.log");
    let status = agent_command(dir, &wrong, &wrong_log).status().unwrap();
    let text = std::fs::read_to_string(&wrong_log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("the machine name or secret is wrong"),
        "{text}"
    );
    assert!(
        !text.contains(&secrets[0]),
        "the secret is never logged: {text}"
    );

    let agents = [
        Agent::spawn(dir, &svc.url(), "rack-a", &secrets[0]),
        Agent::spawn(dir, &svc.url(), "rack-b", &secrets[1]),
    ];
    // Both agents heard not_leased at least once before any demand.
    f.wait_for(
        "both agents waiting for a lease",
        Duration::from_secs(10),
        || async {
            agents
                .iter()
                .all(|a| a.log().contains("waiting for a lease"))
                .then_some(())
        },
    )
    .await;
    assert!(f.workers(&svc, id).await.is_empty());

    // Demand: both machines leased, both agents registered, both children busy.
    f.push(&svc, id, 2).await;
    let first = f
        .wait_for(
            "2 ready workers, each with a busy slot",
            Duration::from_secs(20),
            || async {
                let ws = f.workers(&svc, id).await;
                let busy: Vec<String> = ws
                    .iter()
                    .filter(|w| w["state"] == "ready" && w["busy_slots"] == 1)
                    .map(|w| w["id"].as_str().unwrap().to_owned())
                    .collect();
                (ws.len() == 2 && busy.len() == 2).then_some(busy)
            },
        )
        .await;
    let machines = f.machines(&svc, id).await;
    for (m, a) in machines.iter().zip(&agents) {
        assert_eq!(m["name"], a.machine.as_str());
        assert_eq!(m["assignment"], "wanted", "{machines:#?}");
        let worker = m["worker_id"].as_str().unwrap();
        assert!(first.iter().any(|w| w == worker), "{machines:#?} {first:?}");
        // The agent's child runs as the worker its machine is leased to.
        assert_eq!(a.runs(), vec![worker.to_owned()], "{}", f.logs());
        assert_eq!(std::fs::read_to_string(&a.busy_file).unwrap().trim(), "1");
    }
    assert_ne!(machines[0]["worker_id"], machines[1]["worker_id"]);

    // A wrong secret, or an unknown machine: 401, and nothing changes.
    let before = snapshot(&machines, &f.workers(&svc, id).await);
    for (name, secret) in [
        ("rack-a", secrets[1].as_str()),
        ("rack-z", secrets[0].as_str()),
    ] {
        let (status, _, body) = register(&svc, name, secret).await;
        assert_eq!(status, 401, "{name}: {body}");
        assert!(body.get("credential").is_none(), "{body}");
    }
    let after = snapshot(&f.machines(&svc, id).await, &f.workers(&svc, id).await);
    assert_eq!(before, after);

    // Demand falls to zero and the children finish: retired after the idle timeout,
    // the machines drained back to idle, the agents waiting for the next lease.
    f.push(&svc, id, 0).await;
    std::fs::write(dir.join("release"), "").unwrap();
    f.wait_for(
        "both machines idle and no worker left",
        Duration::from_secs(30),
        || async {
            let idle = f
                .machines(&svc, id)
                .await
                .iter()
                .all(|m| m["assignment"] == "idle" && m["worker_id"].is_null());
            (idle && f.workers(&svc, id).await.is_empty()).then_some(())
        },
    )
    .await;
    // The machine is written idle before the server logs it.
    let serve_log = dir.join("serve.log");
    f.wait_for(
        "the drained machine logged free again",
        Duration::from_secs(10),
        || async {
            let log = std::fs::read_to_string(&serve_log).unwrap_or_default();
            log.contains("static machine drained and free again")
                .then_some(())
        },
    )
    .await;
    let log = std::fs::read_to_string(&serve_log).unwrap();
    assert!(log.contains("idle_timeout"), "{}", f.logs());
    for a in &agents {
        assert!(
            a.log()
                .contains("capstan released this machine; registering again"),
            "{}",
            f.logs()
        );
    }
    let (status, body) = f
        .call(
            &svc,
            "GET",
            &pool_path(id, "/workers?state=terminated"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut retired: Vec<String> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_owned())
        .collect();
    retired.sort();
    let mut expected = first.clone();
    expected.sort();
    assert_eq!(retired, expected);
    // Still running: a released static machine's agent does not exit.
    let mut agents = agents;
    for a in &mut agents {
        assert!(a.child.try_wait().unwrap().is_none(), "{}", f.logs());
    }

    // Demand again: one machine leased anew, to a new worker, whose agent registers
    // again and runs a new child as that worker.
    std::fs::remove_file(dir.join("release")).unwrap();
    f.push(&svc, id, 1).await;
    let second = f
        .wait_for(
            "a new ready worker with a busy slot",
            Duration::from_secs(20),
            || async {
                let ws = f.workers(&svc, id).await;
                ws.iter()
                    .find(|w| w["state"] == "ready" && w["busy_slots"] == 1)
                    .map(|w| w["id"].as_str().unwrap().to_owned())
            },
        )
        .await;
    assert!(!first.contains(&second), "{second} is new: {first:?}");
    let machines = f.machines(&svc, id).await;
    let leased: Vec<&Value> = machines
        .iter()
        .filter(|m| m["assignment"] == "wanted")
        .collect();
    assert_eq!(leased.len(), 1, "{machines:#?}");
    assert_eq!(leased[0]["worker_id"], second.as_str(), "{machines:#?}");
    let agent = agents
        .iter()
        .find(|a| leased[0]["name"] == a.machine.as_str())
        .unwrap();
    assert_eq!(agent.runs().last(), Some(&second), "{}", f.logs());
    assert_eq!(agent.runs().len(), 2, "{}", f.logs());
    assert_eq!(f.workers(&svc, id).await.len(), 1);
    for a in &mut agents {
        assert!(a.child.try_wait().unwrap().is_none(), "{}", f.logs());
    }
}
