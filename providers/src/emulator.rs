//! Starting and stopping the cloud emulators the tests talk to.
//!
//! Each emulator runs as a child process bound to 127.0.0.1 on a free port and is
//! killed when its [`Emulator`] is dropped (also when a test panics). Executables are
//! found through `CAPSTAN_MOTO_SERVER` / `CAPSTAN_GCPLOCAL`, then `PATH`, then the
//! workspace's `.venv/bin` (where `.ci/install-emulators` puts them). A missing
//! emulator skips the test with a printed reason, except under `CI=true`, where it
//! fails the test.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running emulator; killed on drop.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (where `.venv` lives).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Finds executable `name`, or explains why it is missing.
fn find(env_var: &str, name: &str) -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} is not a file", p.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let venv = workspace_root().join(".venv").join("bin");
    std::env::split_paths(&path)
        .chain(std::iter::once(venv))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("{name} not found ({env_var} unset, not on PATH, no .venv/bin/{name}); run .ci/install-emulators")
        })
}

/// The executable, or `None` after printing why the test is skipped. Under `CI=true`
/// a missing emulator panics instead: CI must run every test.
pub fn require(env_var: &str, name: &str, test: &str) -> Option<PathBuf> {
    match find(env_var, name) {
        Ok(p) => Some(p),
        Err(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {why} (CI=true: emulator tests may not be skipped)")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

fn wait_for_port(child: &mut Child, port: u16, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited early with {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("port {port} not open after {within:?}"))
}

/// Starts `moto_server` on a free port.
pub fn start_moto(exe: &Path) -> Emulator {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", exe.display()));
        match wait_for_port(&mut child, port, Duration::from_secs(30)) {
            Ok(()) => {
                return Emulator {
                    child,
                    endpoint: format!("http://127.0.0.1:{port}"),
                };
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                last = e;
            }
        }
    }
    panic!("moto_server did not start: {last}")
}

/// The Python interpreter a console script (such as `gcplocal`) runs with, read from
/// its `#!` line.
fn script_interpreter(script: &Path) -> PathBuf {
    let text = std::fs::read_to_string(script)
        .unwrap_or_else(|e| panic!("reading {}: {e}", script.display()));
    let first = text.lines().next().unwrap_or_default();
    let interp = first
        .strip_prefix("#!")
        .unwrap_or_else(|| panic!("{} has no #! line", script.display()))
        .split_whitespace()
        .next()
        .unwrap_or_default();
    PathBuf::from(interp)
}

/// Starts gcplocal through capstan's launcher (`tests/emulators/gcplocal_launcher.py`,
/// which adapts it to the real API; see that file) with the interpreter gcplocal is
/// installed for.
pub fn start_gcplocal(gcplocal: &Path) -> Emulator {
    let python = script_interpreter(gcplocal);
    let launcher = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("emulators")
        .join("gcplocal_launcher.py");
    let mut child = Command::new(&python)
        .arg(&launcher)
        .arg("0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", python.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(p) = line.strip_prefix("LISTENING ") {
                let _ = tx.send(p.trim().parse::<u16>().ok());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(port)) => Emulator {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        },
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gcplocal launcher did not report its port: {other:?}")
        }
    }
}
