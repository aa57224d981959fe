//! End to end: `capstan pools simulate` against a real `capstan serve` (a free port, a
//! temporary SQLite file) whose pool has two weeks of generated diurnal history, loaded
//! with the store's bulk import: the README's example pool (on the fake provider)
//! against `examples/pool-lower-service-level.yaml` (written for AWS, which a what-if
//! accepts), as a table, as JSON and as an HTML report; and the refusals.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};

use capstan_core::PoolId;
use common::loop_fixture::{bare, bootstrap_admin};
use common::{Service, free_port, wall_now};
use serde_json::Value;
use simulations::history_replay::recorded_history;
use simulations::workload::WorkloadSpec;
use store::history::TaskRunRecord;

const POOL: &str = "ci/linux-large";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Two weeks of diurnal history for [`POOL`], ending now: a sample a minute, every
/// task run.
fn import_history(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("sqlite://{}", dir.join("capstan.db").display());
        let store = store::Store::connect(&url).await.unwrap();
        let now = wall_now();
        let mut trace = WorkloadSpec {
            days: 14,
            ..WorkloadSpec::diurnal(21)
        }
        .generate()
        .unwrap();
        trace.origin = now.plus_secs(-14 * 86_400);
        let (samples, runs) = recorded_history(&trace, 60);
        let samples: Vec<_> = samples.into_iter().filter(|s| s.at < now).collect();
        let runs: Vec<TaskRunRecord> = runs
            .into_iter()
            .filter(|r| r.finished_at < now)
            .enumerate()
            .map(|(i, r)| TaskRunRecord {
                worker_id: format!("w{}", i % 97),
                finished_at: r.finished_at,
                duration_ms: r.duration_ms,
                recorded_at: r.finished_at,
            })
            .collect();
        let id = PoolId::new(POOL).unwrap();
        store.import_queue_samples(&id, &samples).await.unwrap();
        store.import_task_runs(&id, &runs).await.unwrap();
        store.close().await;
    });
}

struct Session {
    dir: tempfile::TempDir,
    server: Service,
    token: String,
}

impl Session {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let token = bootstrap_admin(dir.path(), "sqlite://capstan.db");
        import_history(dir.path());
        let port = free_port();
        let mut cmd = bare(dir.path());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", "sqlite://capstan.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let server = Service::spawn_healthy(cmd, port);
        Self { dir, server, token }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = bare(self.dir.path())
            .args(args)
            .env("CAPSTAN_SERVER", self.server.url())
            .env("CAPSTAN_TOKEN", &self.token)
            .output()
            .unwrap();
        assert!(
            !text(&out.stdout).contains(&self.token) && !text(&out.stderr).contains(&self.token),
            "the token was printed by {args:?}"
        );
        out
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}",
            text(&out.stdout)
        );
        text(&out.stderr)
    }
}

/// The repository's example files.
fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn pools_simulate_compares_the_current_spec_with_a_candidate_on_the_pools_history() {
    let s = Session::start();
    let d = s.dir.path();
    // The README's example pool, on the fake provider.
    let pool = std::fs::read_to_string(example("pool.yaml"))
        .unwrap()
        .replace("provider: aws", "provider: fake");
    std::fs::write(d.join("pool.yaml"), pool).unwrap();
    s.ok(&["pools", "apply", "-f", "pool.yaml"]);
    let candidate = example("pool-lower-service-level.yaml");

    // The table: every metric of both, the change, and how the history was replayed.
    let started = std::time::Instant::now();
    let out = s.ok(&["pools", "simulate", POOL, "-f", &candidate, "--days", "14"]);
    eprintln!("pools simulate took {:?}", started.elapsed());
    let table = text(&out.stdout);
    eprintln!("{table}");
    assert!(
        table.starts_with(&format!("pool {POOL}: 14 days of history")),
        "{table}"
    );
    for row in [
        "| METRIC",
        "| cost ",
        "| instance-hours",
        "| ratio to oracle",
        "| wait mean (s)",
        "| wait p95 (s)",
        "| wait p99 (s)",
        "| launches",
        "how the history was replayed:",
        "arrivals as the",
        "run times drawn from",
        "provider (aws) differs",
    ] {
        assert!(table.contains(row), "{row:?} missing:\n{table}");
    }
    assert!(table.contains('%'), "{table}");

    // JSON, and the HTML report beside it.
    let out = s.ok(&[
        "pools",
        "simulate",
        POOL,
        "-f",
        &candidate,
        "--seed",
        "2",
        "--report",
        "whatif.html",
        "-o",
        "json",
    ]);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (body["days"].as_u64(), body["seed"].as_u64()),
        (Some(14), Some(2))
    );
    let (cur, cand) = (&body["current"]["report"], &body["candidate"]["report"]);
    assert!(
        cand["cost"].as_f64() < cur["cost"].as_f64(),
        "{cand} vs {cur}"
    );
    assert!(
        cand["wait_s"]["p95"].as_f64() > cur["wait_s"]["p95"].as_f64(),
        "{cand} vs {cur}"
    );
    assert!(text(&out.stderr).contains("report written to whatif.html"));
    let html = std::fs::read_to_string(d.join("whatif.html")).unwrap();
    assert!(
        html.contains("What-if for pool ci/linux-large"),
        "{html:.300}"
    );
    assert!(html.contains("candidate ("), "{html:.300}");
    assert!(html.matches("<svg").count() >= 2, "charts drawn");
    assert!(!html.contains("<script src"), "self-contained");

    // Refusals: another pool's candidate, out-of-range days, an invalid file, a pool
    // without history. Each says what is wrong.
    std::fs::write(
        d.join("other.yaml"),
        "id: ci/other\nprovider: fake\nmax_capacity: 8\nlaunch_configs: [{id: a, instance_type: t}]\n",
    )
    .unwrap();
    let err = s.fails(&["pools", "simulate", POOL, "-f", "other.yaml"]);
    assert!(
        err.contains("id ci/other is not pool ci/linux-large"),
        "{err}"
    );
    let err = s.fails(&["pools", "simulate", POOL, "-f", &candidate, "--days", "36"]);
    assert!(err.contains("--days"), "{err}");
    std::fs::write(
        d.join("bad.yaml"),
        "id: ci/linux-large\nprovider: fake\nmax_capacity: 8\nmin_capacity: 9\nlaunch_configs: [{id: a, instance_type: t}]\n",
    )
    .unwrap();
    let err = s.fails(&["pools", "simulate", POOL, "-f", "bad.yaml"]);
    assert!(err.contains("bad.yaml: min_capacity: must be <="), "{err}");
    std::fs::write(
        d.join("empty.yaml"),
        "id: ci/empty\nprovider: fake\nmax_capacity: 8\nlaunch_configs: [{id: a, instance_type: t}]\n",
    )
    .unwrap();
    s.ok(&["pools", "apply", "-f", "empty.yaml"]);
    let err = s.fails(&["pools", "simulate", "ci/empty", "-f", "empty.yaml"]);
    assert!(
        err.starts_with("error: pool ci/empty, the last 14 days: no queue samples"),
        "{err}"
    );
    assert!(!d.join("whatif.html.tmp").exists());
}

#[test]
fn an_unwritable_report_path_fails_before_the_replays_and_a_failed_call_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = example("pool-lower-service-level.yaml");
    // Nothing listens on port 1: had the command called the server first, it would
    // say so instead of naming the report's path.
    let run = |report: &str| {
        bare(dir.path())
            .args([
                "pools", "simulate", POOL, "-f", &candidate, "--report", report,
            ])
            .args(["--server", "http://127.0.0.1:1", "--token", "cap_x_y"])
            .output()
            .unwrap()
    };
    let out = run("/etc/passwd/report.html");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--report: cannot write /etc/passwd/report.html"),
        "{err}"
    );

    let report = dir.path().join("report.html");
    let out = run(report.to_str().unwrap());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.iter()
            .all(|name| !name.to_string_lossy().contains("report.html")),
        "the failed what-if left {left:?}"
    );
}
