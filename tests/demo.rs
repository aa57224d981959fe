//! End to end: the real `capstan demo` binary, as a newcomer runs it. It prints the
//! dashboard URL and a read-only token within 10 s; with that token, over plain HTTP,
//! the pools are there, workers register and become ready, queue samples and a
//! forecast accumulate, the plan log shows launches, idle workers are retired; Ctrl-C
//! stops it with exit 0 and its data directory gone. A second run (another seed)
//! checks the point of the demo: the forecast pool has machines ready before the first
//! burst arrives, and the reactive pool fed the same demand launches nothing until it
//! does.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_core::Timestamp;
use common::{call_api, log_tails, poll_until, wall_now};
use serde_json::Value;

/// A running `capstan demo` whose stdout lines are kept with the time they came.
struct Demo {
    child: Child,
    lines: Arc<Mutex<Vec<(Timestamp, String)>>>,
    logs: PathBuf,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// Starts `capstan demo --listen 127.0.0.1:0 --seed SEED` with the service's log
    /// at info on stderr; both streams are also written to `*.log` files for failures.
    fn start(seed: u64) -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().to_path_buf();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
        cmd.args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &seed.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(logs.join("demo-stderr.log")).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("CAPSTAN_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("CAPSTAN_LOG", "info,capstan::access=warn");
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<(Timestamp, String)>>> = Arc::default();
        let (sink, mut copy) = (
            lines.clone(),
            std::fs::File::create(logs.join("demo-stdout.log")).unwrap(),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(copy, "{line}");
                sink.lock().unwrap().push((wall_now(), line));
            }
        });
        Demo {
            child,
            lines,
            logs,
            _dir: dir,
        }
    }

    fn tails(&self) -> String {
        log_tails(&self.logs)
    }

    /// The first stdout line containing `needle`, with when it came.
    fn line(&self, needle: &str) -> Option<(Timestamp, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(needle))
            .cloned()
    }

    /// The value after `label` on its line (`  dashboard  http://...`).
    fn field(&self, label: &str) -> Option<String> {
        let (_, line) = self.line(&format!("  {label} "))?;
        line.split_whitespace().nth(1).map(str::to_owned)
    }

    /// Waits (10 s at most) for the URL, token and data directory lines.
    fn welcome(&self) -> (String, String, PathBuf) {
        let started = Instant::now();
        loop {
            if let (Some(url), Some(token), Some(data)) = (
                self.field("dashboard"),
                self.field("token"),
                self.field("data"),
            ) {
                let took = started.elapsed();
                assert!(took <= Duration::from_secs(10), "took {took:?}");
                return (
                    url.trim_end_matches('/').to_owned(),
                    token,
                    PathBuf::from(data),
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no dashboard URL, token and data line within 10 s\n{}",
                self.tails()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every worker of `pool`, in any state.
async fn workers(url: &str, token: &str, pool: &str) -> Vec<Value> {
    let path = format!(
        "/v1/pools/{pool}/workers?state=requested,booting,ready,draining,terminating,terminated,failed&limit=1000"
    );
    let (status, body) = call_api(url, token, "GET", &path, None).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn at(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// Sends SIGINT; asserts exit 0 within 10 s, the cleanup message and the directory gone.
fn interrupt_and_check_cleanup(mut demo: Demo, data: &Path) {
    let pid = demo.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = demo.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "capstan demo did not exit within 10 s of SIGINT\n{}",
            demo.tails()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit {status}\n{}", demo.tails());
    // The reader thread sees the last lines once the pipe closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while demo.line("capstan demo stopped; removed").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        demo.line("capstan demo stopped; removed").is_some(),
        "{}",
        demo.tails()
    );
    assert!(!data.exists(), "{} is still there", data.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_the_service_on_a_simulated_cloud_and_cleans_up() {
    let demo = Demo::start(1);
    let (url, token, data) = demo.welcome();
    assert!(
        url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"),
        "{url}"
    );
    assert!(token.starts_with("cap_"), "{token}");
    assert!(data.exists(), "{}", data.display());
    let logs = || demo.tails();

    // The printed token reads every pool, and only reads.
    let (status, body) = call_api(&url, &token, "GET", "/v1/pools", None).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    for id in ["ci/linux-large", "ci/linux-reactive", "lint/quick"] {
        assert!(ids.contains(&id), "{id} not in {ids:?}\n{}", logs());
    }
    let sample = serde_json::json!({"samples": [{"pending": 1, "running": 0}]});
    let (status, _) = call_api(
        &url,
        &token,
        "POST",
        "/v1/pools/ci/linux-large/queue",
        Some(sample),
    )
    .await;
    assert_eq!(status, 403, "the printed token cannot push samples");
    let (status, _) = call_api(&url, &token, "DELETE", "/v1/pools/lint/quick", None).await;
    assert_eq!(status, 403, "the printed token cannot delete pools");
    let (status, metrics) = call_api(&url, &token, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "{metrics}");

    // Within a minute: ready workers in the example pool, registered through the API.
    let ready = poll_until(
        "ready workers in ci/linux-large",
        Duration::from_secs(60),
        logs,
        || async {
            let w = workers(&url, &token, "ci/linux-large").await;
            let ready: Vec<Value> = w.into_iter().filter(|w| w["state"] == "ready").collect();
            (!ready.is_empty()).then_some(ready)
        },
    )
    .await;
    assert!(
        ready
            .iter()
            .all(|w| w["registered_at"].is_string() && w["instance_id"].is_string())
    );

    // Queue samples (history and live) and a forecast.
    let started = wall_now();
    poll_until(
        "live queue samples and a forecast",
        Duration::from_secs(30),
        logs,
        || async {
            let (status, f) = call_api(
                &url,
                &token,
                "GET",
                "/v1/pools/ci/linux-large/forecast?history_s=1209600",
                None,
            )
            .await;
            if status != 200 {
                return None;
            }
            let history = f["history"].as_array()?;
            let samples: u64 = history.iter().filter_map(|p| p["samples"].as_u64()).sum();
            let newest = history.iter().filter_map(|p| at(&p["at"])).max()?;
            let points = f["forecast"]["points"].as_array().map_or(0, Vec::len);
            // Two weeks at one sample a minute, and at least one pushed since we looked.
            (samples > 14 * 1400 && newest.unix_ms() > started.unix_ms() - 3_600_000 && points > 0)
                .then_some(())
        },
    )
    .await;

    // The plan log shows launches.
    poll_until(
        "a launch in the plan log",
        Duration::from_secs(30),
        logs,
        || async {
            let (status, plan) =
                call_api(&url, &token, "GET", "/v1/pools/ci/linux-large/plan", None).await;
            let launched = plan["recent_actions"].as_array()?.iter().any(|p| {
                p["actions"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|a| a.to_string().contains("launch")))
            });
            (status == 200 && launched).then_some(())
        },
    )
    .await;

    // Later, an idle worker retired: terminated after its idle timeout. (Within a
    // minute or two of the first burst on a quiet machine; the window is wide for a
    // loaded one, and a timeout shows what each pool did meanwhile.)
    let seen = Mutex::new(String::new());
    poll_until(
        "an idle worker retired",
        Duration::from_secs(300),
        || format!("{}\nlast seen:\n{}", logs(), seen.lock().unwrap()),
        || async {
            let mut state = String::new();
            for pool in ["ci/linux-large", "ci/linux-reactive", "lint/quick"] {
                let (_, plan) =
                    call_api(&url, &token, "GET", &format!("/v1/pools/{pool}/plan"), None).await;
                let idle_terminated = plan["recent_actions"].as_array().is_some_and(|plans| {
                    plans
                        .iter()
                        .any(|p| p["actions"].to_string().contains("idle_timeout"))
                });
                let states: Vec<String> = workers(&url, &token, pool)
                    .await
                    .iter()
                    .map(|w| w["state"].to_string())
                    .collect();
                if idle_terminated && states.iter().any(|s| s == "\"terminated\"") {
                    return Some(());
                }
                state += &format!(
                    "{pool}: workers {states:?}; recent actions {}\n",
                    plan["recent_actions"]
                );
            }
            *seen.lock().unwrap() = state;
            None
        },
    )
    .await;

    interrupt_and_check_cleanup(demo, &data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forecast_pool_has_machines_ready_before_the_first_burst_and_the_reactive_one_none() {
    let demo = Demo::start(7);
    let (url, token, data) = demo.welcome();
    let logs = || demo.tails();
    // The first burst of the example pool (and its reactive twin: the same demand).
    let (burst_at, line) = poll_until("the first burst", Duration::from_secs(90), logs, || async {
        demo.line("tasks arrive in ci/linux-large")
    })
    .await;
    let size: u32 = line
        .split("burst: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no burst size in {line:?}"));

    let forecast_pool = workers(&url, &token, "ci/linux-large").await;
    let slots_when = |list: &[Value], field: &str| -> u64 {
        list.iter()
            .filter(|w| at(&w[field]).is_some_and(|t| t < burst_at))
            .filter_map(|w| w["capacity"].as_u64())
            .sum()
    };
    let launched = slots_when(&forecast_pool, "created_at");
    let ready = slots_when(&forecast_pool, "registered_at");
    let (_, plan) = call_api(&url, &token, "GET", "/v1/pools/ci/linux-large/plan", None).await;
    let before: Vec<String> = plan["recent_actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| at(&p["at"]).is_some_and(|t| t < burst_at))
        .map(|p| p["summary"].as_str().unwrap_or_default().to_owned())
        .collect();
    let context = format!(
        "burst of {size} at {burst_at}: {launched} slots launched, {ready} ready before it; plans before it: {before:#?}\n{}",
        logs()
    );
    // Launched by the forecast, not by a backlog (there was none) and not only by the
    // office-hours floor (4 slots, one machine).
    assert!(
        before.iter().any(|s| s.contains("set by the forecast")),
        "{context}"
    );
    assert!(launched > 4, "{context}");
    // Ready when the burst comes: at least half of it starts at once.
    assert!(ready * 2 >= u64::from(size), "{context}");

    // The reactive twin, fed the same demand, launches nothing for it before it comes:
    // at most its office-hours floor (4 slots, one machine, on weekdays in Berlin).
    let reactive = workers(&url, &token, "ci/linux-reactive").await;
    let early = slots_when(&reactive, "created_at");
    assert!(
        early <= 4,
        "the reactive pool launched {early} slots before any task: {reactive:#?}\n{context}"
    );
    // ... and launches once the burst is there.
    poll_until(
        "the reactive pool launching for the burst",
        Duration::from_secs(30),
        logs,
        || async {
            let w = workers(&url, &token, "ci/linux-reactive").await;
            (!w.is_empty()).then_some(())
        },
    )
    .await;
    interrupt_and_check_cleanup(demo, &data);
}
