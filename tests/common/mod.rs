//! What the end-to-end tests share: free ports, a real HTTP client, and a `capstan
//! serve` child process that is waited on until healthy and killed on drop.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The wall clock as a [`capstan_core::Timestamp`].
pub fn wall_now() -> capstan_core::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    capstan_core::Timestamp::from_unix_ms(i64::try_from(ms).unwrap())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET http://127.0.0.1:{port}{path}` with reqwest; (status, body), or None when
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}{path}"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    })
}

/// An HTTP call to the server at `base` with bearer `token`: (status, the JSON body, or
/// the text as a JSON string when it is not JSON).
pub async fn call_api(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(10));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Polls `check` every 250 ms until it answers `Some` or `within` passes; panics with
/// `what` and `logs()` on timeout.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    within: Duration,
    logs: impl Fn() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}\n{}", logs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last 60 lines of every `*.log` in `dir` (by name; access lines left out, they
/// are the tests' own polling), for failure messages.
pub fn log_tails(dir: &std::path::Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .filter(|l| !l.contains("capstan::access"))
            .take(60)
            .collect();
        out.push_str(&format!(
            "--- {} (last 60 lines but access lines)\n",
            p.display()
        ));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// A running `capstan serve`; killed (and reaped) on drop.
#[derive(Debug)]
pub struct Service {
    /// The process.
    pub child: Child,
    /// Its port.
    pub port: u16,
}

impl Service {
    /// Spawns `cmd` (a `capstan serve` listening on `port`) and waits until `/healthz`
    /// answers 200; panics with the server's stderr if it exits first.
    pub fn spawn_healthy(mut cmd: Command, port: u16) -> Service {
        let mut service = Service {
            child: cmd.spawn().unwrap(),
            port,
        };
        service.wait_healthy();
        service
    }

    /// Waits until `/healthz` answers 200 (30 s at most).
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((200, body)) = http_get(self.port, "/healthz") {
                assert!(body.contains("\"status\":\"ok\""), "{body}");
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut stderr) = self.child.stderr.take() {
                    stderr.read_to_string(&mut err).unwrap();
                }
                panic!("capstan serve exited with {status}: {err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("capstan serve did not answer /healthz within 30 s");
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
pub mod loop_fixture;
pub mod metadata_stub;

/// The built `capstan` run with `args`, in `dir` when given (else the test's own working
/// directory).
pub fn capstan_cli(dir: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    cmd.output().expect("capstan runs")
}

/// The stdout of a run that must succeed; a failed one fails the test with its stderr.
pub fn stdout_of(args: &[&str], out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "capstan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
