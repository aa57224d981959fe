//! Workers end to end, the way they run in production: `capstan serve` on PostgreSQL
//! with the EC2 emulator (moto, through the real SDK), and for each instance it
//! launches a real `capstan agent` on this host reading that instance's user-data
//! through an IMDSv2 stub, registering over HTTP and running a child worker.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::Service;
use common::loop_fixture::{AMI, Cloud, Fixture, bare, pool_path};
use common::metadata_stub::MetadataStub;
use serde_json::{Value, json};

/// A reactive EC2 pool whose workers heartbeat every 2 s (timeout 8 s) and are retired
/// after 3 s idle.
fn pool(id: &str) -> Value {
    json!({
        "id": id,
        "provider": "aws",
        "max_capacity": 10,
        "launch_configs": [
            {"id": "small", "region": "us-east-1", "instance_type": "t3.micro",
             "market": "spot", "provider_config": {"image_id": AMI}}
        ],
        "scaling": {"policy": "reactive", "idle_timeout_s": 3, "max_launches_per_minute": 100},
        "lifecycle": {"registration_timeout_s": 120, "heartbeat_timeout_s": 8}
    })
}

/// The user-data moto holds for `instance` (DescribeInstanceAttribute over plain
/// HTTP).
async fn user_data(endpoint: &str, instance: &str) -> String {
    let body = reqwest::Client::new()
        .post(endpoint)
        // moto picks the service from the credential scope; it checks no signature.
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261130/us-east-1/ec2/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .form(&[
            ("Action", "DescribeInstanceAttribute"),
            ("Version", "2016-11-15"),
            ("InstanceId", short(instance)),
            ("Attribute", "userData"),
        ])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let start = body
        .find("<userData>")
        .unwrap_or_else(|| panic!("no userData in the answer: {body}"));
    let value = &body[start..];
    let b64 = value
        .split("<value>")
        .nth(1)
        .and_then(|v| v.split("</value>").next())
        .unwrap_or_else(|| panic!("no user-data value in {body}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// The EC2 id of a provider instance id (those carry their region: `us-east-1/i-…`).
fn short(instance: &str) -> &str {
    instance.rsplit('/').next().unwrap_or(instance)
}

/// One `capstan agent` process for one instance.
struct Agent {
    child: Child,
    instance: String,
    busy_file: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `capstan agent --bootstrap ec2` for `instance` (its metadata at the stub),
/// running a child that marks itself busy (1 slot in its busy file) until the file
/// `release` appears in `dir`, then idle, then exits.
fn agent(dir: &Path, stub: &MetadataStub, instance: &str) -> Agent {
    let instance = short(instance);
    let busy_file = dir.join(format!("busy-{instance}"));
    let log = std::fs::File::create(dir.join(format!("agent-{instance}.log"))).unwrap();
    // On SIGTERM (a drain) the child stays busy 3 s more, so a drained worker is
    // still there when the test looks for it next to its replacement.
    let script = "trap 'sleep 3; echo 0 > \"$0\"; exit 0' TERM; echo 1 > \"$0\"; \
                  while [ ! -e release ]; do sleep 0.2; done; echo 0 > \"$0\"";
    let child = bare(dir)
        .args(["agent", "--bootstrap", "ec2", "--once"])
        .args(["--metadata-url", &stub.base_url(instance)])
        .arg("--busy-file")
        .arg(&busy_file)
        .args(["--interruption-poll-s", "0.5"])
        .args(["--", "sh", "-c", script])
        .arg(&busy_file)
        .env("CAPSTAN_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Agent {
        child,
        instance: instance.to_owned(),
        busy_file,
    }
}

/// Every agent log, for failure messages.
fn agent_logs(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("agent-") {
            out.push_str(&format!("--- {name}\n"));
            out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    out
}

async fn push(f: &Fixture, svc: &Service, id: &str, pending: u32, running: u32) {
    let (status, body) = f
        .call(
            svc,
            "POST",
            &pool_path(id, "/queue"),
            Some(json!({"samples": [{"pending": pending, "running": running}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// The pool's workers as the API lists them (every state but terminated).
async fn workers(f: &Fixture, svc: &Service, id: &str) -> Vec<Value> {
    let (status, body) = f.call(svc, "GET", &pool_path(id, "/workers"), None).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Instance ids of the pool alive in the emulator, sorted.
async fn alive_ids(f: &Fixture, id: &str) -> Vec<String> {
    let mut ids: Vec<String> = f.alive(id).await.into_iter().map(|i| i.id).collect();
    ids.sort();
    ids
}

/// Waits for `child` to exit (up to `within`); its exit code.
fn exit_code(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Demand pushed, three instances launched; each one's agent registers with its own
/// user-data and runs a busy child. A registration token used twice is refused. Demand
/// falls to zero, the children finish, the idle workers are retired after the idle
/// timeout, every agent is told to terminate and exits 0, and nothing is left in the
/// emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_workers_register_run_and_are_retired_when_idle() {
    let test = "ec2_workers_register_run_and_are_retired_when_idle";
    let Some(f) = Fixture::start_on(test, Cloud::Aws).await else {
        return;
    };
    let stub = MetadataStub::start();
    f.config("");
    let svc = f.serve("a", &[]);
    let id = "ci/agents";
    let (status, body) = f
        .call(&svc, "PUT", &pool_path(id, ""), Some(pool(id)))
        .await;
    assert_eq!(status, 201, "{body}");
    push(&f, &svc, id, 3, 0).await;
    let instances = f
        .wait_for("3 instances running", Duration::from_secs(30), || async {
            let ids = alive_ids(&f, id).await;
            (ids.len() == 3).then_some(ids)
        })
        .await;

    // Each instance's user-data names the service, its worker and a token.
    let mut agents = Vec::new();
    let mut first_user_data = Value::Null;
    for instance in &instances {
        let ud = user_data(&f.emulator.endpoint, instance).await;
        let parsed: Value = serde_json::from_str(&ud).unwrap();
        assert_eq!(parsed["api_url"], svc.url(), "{ud}");
        assert_eq!(parsed["pool_id"], id);
        if first_user_data.is_null() {
            first_user_data = parsed;
        }
        stub.add_instance(short(instance), &ud);
        agents.push(agent(f.dir.path(), &stub, instance));
    }
    let dir = f.dir.path();
    f.wait_for(
        "3 ready workers, each with a busy slot",
        Duration::from_secs(30),
        || async {
            let ws = workers(&f, &svc, id).await;
            let busy = ws
                .iter()
                .filter(|w| w["state"] == "ready" && w["busy_slots"] == 1)
                .count();
            (busy == 3).then_some(())
        },
    )
    .await;
    assert!(
        agents.iter().all(|a| a.busy_file.exists()),
        "{}",
        agent_logs(dir)
    );
    for a in &agents {
        let reads = stub.requests(short(&a.instance));
        assert!(
            reads
                .iter()
                .any(|r| r.starts_with("PUT /latest/api/token 200")),
            "{reads:?}"
        );
        assert!(
            reads
                .iter()
                .any(|r| r.starts_with("GET /latest/user-data 200")),
            "{reads:?}"
        );
    }

    // The token in the user-data was used by the agent: a second use is refused.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/workers/register", svc.url()))
        .json(&json!({
            "worker_id": first_user_data["worker_id"],
            "registration_token": first_user_data["registration_token"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );

    // The queue says the tasks run; nothing new is launched for them.
    push(&f, &svc, id, 0, 3).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(alive_ids(&f, id).await, instances, "busy workers stay");

    // Demand falls to zero and the children finish: idle, retired, agents told.
    push(&f, &svc, id, 0, 0).await;
    std::fs::write(dir.join("release"), "").unwrap();
    f.wait_for(
        "every instance terminated in the emulator",
        Duration::from_secs(60),
        || async { alive_ids(&f, id).await.is_empty().then_some(()) },
    )
    .await;
    for a in &mut agents {
        let code = exit_code(&mut a.child, Duration::from_secs(20));
        assert_eq!(
            code,
            Some(0),
            "agent of {} did not exit 0 after terminate\n{}",
            a.instance,
            agent_logs(dir)
        );
    }
    let store = f.store().await;
    let pool_id = capstan_core::PoolId::new(id).unwrap();
    let all = store.list_workers(&pool_id, true).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all.iter()
            .all(|w| w.state == capstan_core::WorkerState::Terminated && w.registered_at.is_some()),
        "{all:?}"
    );
    let plans = std::fs::read_to_string(f.log_path("a")).unwrap();
    assert!(plans.contains("idle_timeout"), "{}", f.logs());
    // The children's run times reached the store, one per child.
    let runs = store
        .task_runs_recorded(
            &pool_id,
            capstan_core::Timestamp::from_unix_ms(0),
            common::wall_now(),
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 3, "{runs:?}\n{}", agent_logs(dir));
    assert!(runs.iter().all(|(_, r)| r.duration_ms >= 4_000), "{runs:?}");
    assert!(f.alive_anywhere().await.is_empty());
}

/// A spot interruption notice served by the metadata stub: the agent reports it, and
/// the service launches the replacement while the interrupted instance still runs;
/// the drained worker is terminated once its child has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_interruption_notice_launches_the_replacement_before_the_instance_is_gone() {
    let test = "ec2_interruption_notice_launches_the_replacement_before_the_instance_is_gone";
    let Some(f) = Fixture::start_on(test, Cloud::Aws).await else {
        return;
    };
    let stub = MetadataStub::start();
    f.config("");
    let svc = f.serve("a", &[]);
    let id = "ci/spot";
    let (status, body) = f
        .call(&svc, "PUT", &pool_path(id, ""), Some(pool(id)))
        .await;
    assert_eq!(status, 201, "{body}");
    push(&f, &svc, id, 1, 0).await;
    let first = f
        .wait_for("one instance running", Duration::from_secs(30), || async {
            let ids = alive_ids(&f, id).await;
            (ids.len() == 1).then(|| ids[0].clone())
        })
        .await;
    stub.add_instance(
        short(&first),
        &user_data(&f.emulator.endpoint, &first).await,
    );
    let dir = f.dir.path();
    let mut a = agent(dir, &stub, &first);
    f.wait_for("the worker busy", Duration::from_secs(30), || async {
        let ws = workers(&f, &svc, id).await;
        ws.iter()
            .any(|w| w["state"] == "ready" && w["busy_slots"] == 1)
            .then_some(())
    })
    .await;
    push(&f, &svc, id, 0, 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(alive_ids(&f, id).await, vec![first.clone()]);

    // Two minutes' notice.
    let at = chrono_like_in_two_minutes();
    stub.set_spot_action(
        short(&first),
        &format!(r#"{{"action": "terminate", "time": "{at}"}}"#),
    );
    let noticed = Instant::now();
    let both = f
        .wait_for(
            "the replacement launched next to the interrupted instance",
            Duration::from_secs(20),
            || async {
                let ids = alive_ids(&f, id).await;
                (ids.len() == 2).then_some(ids)
            },
        )
        .await;
    assert!(both.contains(&first), "{both:?}");
    let launched_in = noticed.elapsed();
    let ws = workers(&f, &svc, id).await;
    let interrupted = ws
        .iter()
        .find(|w| w["instance_id"] == first.as_str())
        .unwrap_or_else(|| panic!("{ws:#?}"));
    assert_eq!(interrupted["state"], "draining", "{interrupted:#}");
    assert!(
        interrupted["failure"]
            .as_str()
            .unwrap()
            .contains("interruption notice from EC2"),
        "{interrupted:#}"
    );
    eprintln!("replacement launched {launched_in:?} after the notice was served");

    // The agent relays the drain to its child (SIGTERM); the drained worker goes.
    f.wait_for(
        "the interrupted instance terminated",
        Duration::from_secs(60),
        || async { (!alive_ids(&f, id).await.contains(&first)).then_some(()) },
    )
    .await;
    assert_eq!(
        exit_code(&mut a.child, Duration::from_secs(20)),
        Some(0),
        "{}",
        agent_logs(dir)
    );
    let log = std::fs::read_to_string(f.log_path("a")).unwrap();
    assert!(log.contains("drained"), "{}", f.logs());
    let notices: Vec<String> = stub
        .requests(short(&first))
        .into_iter()
        .filter(|r| r.starts_with("GET /latest/meta-data/spot/instance-action 200"))
        .collect();
    assert!(!notices.is_empty());

    // Clean-up: deleting the pool drains the rest.
    let resp = reqwest::Client::new()
        .delete(format!("{}{}", svc.url(), pool_path(id, "")))
        .bearer_auth(&f.token)
        .header("if-match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    f.wait_for(
        "nothing left in the emulator",
        Duration::from_secs(60),
        || async { f.alive_anywhere().await.is_empty().then_some(()) },
    )
    .await;
}

/// An RFC 3339 time two minutes from now (UTC, whole seconds).
fn chrono_like_in_two_minutes() -> String {
    let t = common::wall_now().plus_secs(120);
    t.to_string()
}
