//! The control loop end to end, the way an operator runs it: `capstan serve` on
//! PostgreSQL with the EC2 emulator (moto, through the real `aws-sdk-ec2` client) or
//! the Compute Engine emulator (gcplocal, through `google-cloud-compute-v1`) behind a
//! fault proxy, driven over plain HTTP.

mod common;

use std::time::Duration;

use common::Service;
use common::loop_fixture::{Cloud, Fixture, GCP_PROJECT, ec2_pool, gce_pool, pool_path};
use providers::Instance;
use providers::fault_proxy::{Action, Rule, ec2_fault, http_call};
use serde_json::{Value, json};

/// A pool created through the API, queue samples pushed: instances run in the
/// emulator within two ticks, from the second launch config since the first one has
/// no capacity (one deduplicated pool error says so); with no worker registering they
/// are terminated after the registration timeout and nothing is left in the emulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_launches_for_a_backlog_falls_back_and_retires_unregistered_instances() {
    let test = "ec2_launches_for_a_backlog_falls_back_and_retires_unregistered_instances";
    let Some(f) = Fixture::start_on(test, Cloud::Aws).await else {
        return;
    };
    f.proxy.add(Rule::on_body(
        "InstanceType=c5.large",
        ec2_fault(
            500,
            "InsufficientInstanceCapacity",
            "We currently do not have sufficient c5.large capacity in the Availability Zone you requested (us-east-1a).",
        ),
    ));
    f.config("");
    let svc = f.serve("a", &[]);
    let id = "ci/e2e";
    let running = launch_with_fallback(&f, &svc, id, ec2_pool(id, 12)).await;
    assert!(
        running.iter().all(|i| i.instance_type == "t3.micro"),
        "{running:?}"
    );
    retire_unregistered(&f, &svc, id).await;

    // The metrics saw it all.
    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", svc.url()))
        .bearer_auth(&f.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let metrics = resp.text().await.unwrap();
    assert!(
        metrics.contains(r#"capstan_launches_total{pool="ci/e2e",offering="fallback"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kind="insufficient_capacity""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"reason="registration_timeout""#),
        "{metrics}"
    );
    promtool_check(&metrics);
}

/// The same on Compute Engine (gcplocal, through the real `google-cloud-compute-v1`
/// client): the preferred zone is exhausted, the fallback launches; a preempted SPOT
/// VM is replaced at once; unregistered VMs are deleted after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gce_launches_falls_back_replaces_preempted_vms_and_retires_unregistered_ones() {
    let test = "gce_launches_falls_back_replaces_preempted_vms_and_retires_unregistered_ones";
    let Some(f) = Fixture::start_on(test, Cloud::Gcp).await else {
        return;
    };
    // Stockouts arrive as a finished insert operation carrying the error.
    let stockout = serde_json::json!({
        "kind": "compute#operation", "id": "7001", "name": "operation-7001",
        "operationType": "insert", "status": "DONE", "progress": 100,
        "zone": format!("projects/{GCP_PROJECT}/zones/us-central1-b"),
        "error": {"errors": [{"code": "ZONE_RESOURCE_POOL_EXHAUSTED",
            "message": "The zone 'projects/capstan-test/zones/us-central1-b' does not have enough resources available to fulfill the request."}]},
        "httpErrorStatusCode": 503, "httpErrorMessage": "SERVICE UNAVAILABLE"
    });
    f.proxy.add(Rule::on_path(
        "POST",
        "zones/us-central1-b/instances?",
        Action::Respond {
            status: 200,
            content_type: "application/json",
            body: stockout.to_string(),
        },
    ));
    f.config("");
    let svc = f.serve("a", &[]);
    let id = "ci/gce";
    let running = launch_with_fallback(&f, &svc, id, gce_pool(id, 25)).await;
    assert!(
        running
            .iter()
            .all(|i| i.zone.as_deref() == Some("us-central1-a")),
        "{running:?}"
    );

    // GCE preempts one: the loop sees it at its next round and launches a replacement.
    let victim = running[0].id.clone();
    let (zone, name) = victim.split_once('/').unwrap();
    let (status, body) = http_call(
        "POST",
        &format!(
            "{}/_capstan/preempt/{GCP_PROJECT}/{zone}/{name}",
            f.emulator.endpoint
        ),
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let preempted = std::time::Instant::now();
    f.wait_for(
        "a replacement for the preempted VM",
        Duration::from_secs(10),
        || async {
            let alive = f.alive(id).await;
            (alive.len() == 3 && alive.iter().all(|i| i.id != victim)).then_some(())
        },
    )
    .await;
    assert!(
        preempted.elapsed() < Duration::from_secs(8),
        "took {:?}",
        preempted.elapsed()
    );
    retire_unregistered(&f, &svc, id).await;
}

/// Creates the pool, pushes a backlog of 3, and waits for 3 instances of the
/// `fallback` launch config (the `preferred` one fails for capacity); checks the one
/// deduplicated pool error and the plan. Answers the instances.
async fn launch_with_fallback(f: &Fixture, svc: &Service, id: &str, spec: Value) -> Vec<Instance> {
    let (status, body) = f.call(svc, "PUT", &pool_path(id, ""), Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    let pushed = std::time::Instant::now();
    let (status, body) = f
        .call(
            svc,
            "POST",
            &pool_path(id, "/queue"),
            Some(json!({"samples": [{"pending": 3, "running": 0}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let running = f
        .wait_for(
            "3 instances in the emulator",
            Duration::from_secs(10),
            || async {
                let alive = f.alive(id).await;
                (alive.len() >= 3).then_some(alive)
            },
        )
        .await;
    // Two ticks of 2 s, plus the emulator's own time.
    assert!(
        pushed.elapsed() < Duration::from_secs(8),
        "took {:?}",
        pushed.elapsed()
    );
    assert_eq!(running.len(), 3, "{running:?}");
    assert!(
        running
            .iter()
            .all(|i| i.launch_config_id.as_deref() == Some("fallback")),
        "{running:?}"
    );

    let (status, errors) = f.call(svc, "GET", &pool_path(id, "/errors"), None).await;
    assert_eq!(status, 200, "{errors}");
    let errors = errors["items"].as_array().cloned().unwrap_or_default();
    let capacity: Vec<_> = errors
        .iter()
        .filter(|e| e["kind"] == "insufficient_capacity")
        .collect();
    assert_eq!(capacity.len(), 1, "one deduplicated entry: {errors:?}");
    assert_eq!(capacity[0]["launch_config_id"], "preferred");

    let (status, plan) = f.call(svc, "GET", &pool_path(id, "/plan"), None).await;
    assert_eq!(status, 200, "{plan}");
    running
}

/// Demand goes away and nobody registers: the registration timeout retires every
/// instance and nothing is left in the emulator.
async fn retire_unregistered(f: &Fixture, svc: &Service, id: &str) {
    let (status, _) = f
        .call(
            svc,
            "POST",
            &pool_path(id, "/queue"),
            Some(json!({"samples": [{"pending": 0, "running": 0}]})),
        )
        .await;
    assert_eq!(status, 202);
    f.wait_for(
        "every instance terminated",
        Duration::from_secs(60),
        || async { f.alive_anywhere().await.is_empty().then_some(()) },
    )
    .await;
    // The actuator terminates the instance before it marks the row terminated.
    let workers = f
        .wait_for(
            "three workers marked terminated",
            Duration::from_secs(30),
            || async {
                let (_, workers) = f
                    .call(
                        svc,
                        "GET",
                        &pool_path(id, "/workers?state=terminated"),
                        None,
                    )
                    .await;
                let workers = workers["items"].as_array().cloned().unwrap_or_default();
                (workers.len() >= 3).then_some(workers)
            },
        )
        .await;
    assert!(
        workers.iter().any(|w| w["failure"].is_null()),
        "terminated by capstan's choice: {workers:?}"
    );
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts the exposition;
/// skipped with a message when promtool is missing, failed under `CI=true`.
fn promtool_check(metrics: &str) {
    use std::io::Write;
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "promtool missing under CI=true"
        );
        eprintln!("SKIPPED promtool check: promtool not found (apt install prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With the default 30 s tick and 90 s lease, a pool created through the API and fed
/// a backlog is planned and launched within a second or two: the wake-up makes the
/// replica take the new pool's lease at once and reconcile it (SQLite, fake cloud).
#[test]
fn a_new_pool_with_a_backlog_launches_at_once_not_at_the_next_tick() {
    let dir = tempfile::tempdir().unwrap();
    let token = common::loop_fixture::bootstrap_admin(dir.path(), "sqlite://capstan.db");
    let port = common::free_port();
    let mut cmd = common::loop_fixture::bare(dir.path());
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", "sqlite://capstan.db"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap());
    let svc = Service::spawn_healthy(cmd, port);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let call = |method: &str, path: &str, body: Value| {
            client
                .request(method.parse().unwrap(), format!("{}{path}", svc.url()))
                .bearer_auth(&token)
                .json(&body)
                .send()
        };
        let spec = json!({"id": "ci/now", "provider": "fake", "max_capacity": 8,
            "launch_configs": [{"id": "od", "instance_type": "small"}]});
        let r = call("PUT", "/v1/pools/ci/now", spec).await.unwrap();
        assert_eq!(r.status(), 201);
        let pushed = std::time::Instant::now();
        let r = call(
            "POST",
            "/v1/pools/ci/now/queue",
            json!({"samples": [{"pending": 2, "running": 0}]}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 202);
        loop {
            let r = client
                .get(format!("{}/v1/pools/ci/now/workers", svc.url()))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let body: Value = r.json().await.unwrap();
            if body["items"].as_array().is_some_and(|w| w.len() == 2) {
                break;
            }
            assert!(
                pushed.elapsed() < Duration::from_secs(5),
                "no launch within 5 s of the sample: {body}\n{}",
                std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("sample to 2 workers: {:?}", pushed.elapsed());
    });
}
