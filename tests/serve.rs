//! End to end: the real `capstan serve` binary on a real port, against SQLite and
//! PostgreSQL, configured by flags, environment and a config file, stopped by signals.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{Service, free_port, http_get};

/// Spawns `capstan serve` in `dir` with `args` and `envs` (no CAPSTAN_* variable of the
/// person running the tests leaks in), listening on a free port unless a config file
/// says where; does not wait for it.
fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Service {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.arg("serve")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("CAPSTAN_") {
            cmd.env_remove(k);
        }
    }
    if !args.contains(&"--config") {
        cmd.env("CAPSTAN_LISTEN", format!("127.0.0.1:{port}"));
    }
    cmd.envs(envs.iter().copied());
    Service {
        child: cmd.spawn().unwrap(),
        port,
    }
}

/// Sends `signal`, waits for exit, returns (success, stderr).
fn stop(mut svc: Service, signal: &str) -> (bool, String) {
    let pid = svc.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = std::mem::replace(&mut svc.child, Command::new("true").spawn().unwrap())
        .wait_with_output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serves_health_on_the_sqlite_default_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = start(dir.path(), &[], &[]);
    svc.wait_healthy();
    assert!(
        dir.path().join("capstan.db").exists(),
        "default store file created"
    );
    assert_eq!(http_get(svc.port, "/readyz").unwrap().0, 200);
    assert_eq!(http_get(svc.port, "/nope").unwrap().0, 404);
    let (ok, stderr) = stop(svc, "TERM");
    assert!(ok, "exit status after SIGTERM: {stderr}");
    assert!(stderr.contains("store closed"), "{stderr}");
}

#[test]
fn config_file_sets_listen_database_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("capstan.toml"),
        format!("listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://custom.db\"\n[log]\nformat = \"json\"\n"),
    )
    .unwrap();
    let mut svc = start(dir.path(), &["--config", "capstan.toml"], &[]);
    svc.port = port;
    svc.wait_healthy();
    assert!(dir.path().join("custom.db").exists());
    let (ok, stderr) = stop(svc, "INT");
    assert!(ok, "{stderr}");
    for line in stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
}

#[test]
fn bad_configuration_is_rejected_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "listen = \"127.0.0.1:1\"\ndatabse_url = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["serve", "--config", "bad.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("databse_url"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("capstan.db").exists(),
        "nothing created on bad config"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["serve", "--listen", "nowhere"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected an IP address and port"));
}

#[tokio::test]
async fn serves_health_on_postgresql() {
    let Some(db) = store::scratch::ScratchDatabase::create().await else {
        return;
    };
    let url = db.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let result = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            let mut svc = start(&dir, &["--database-url", &url], &[]);
            svc.wait_healthy();
            let stopped = stop(svc, "TERM");
            (stopped, dir.join("capstan.db").exists())
        }
    })
    .await
    .unwrap();
    db.drop_now().await;
    let ((ok, stderr), sqlite_created) = result;
    assert!(ok, "{stderr}");
    assert!(stderr.contains("Postgres"), "{stderr}");
    assert!(
        !sqlite_created,
        "no SQLite file when PostgreSQL is configured"
    );
}

#[test]
fn pools_validate_prints_every_problem_of_a_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "id: Bad Id\nprovider: aws\nmax_capacity: 5\nmin_capacity: 9\nlaunch_configs: []\nscaling: {service_level: 1}\nextra: 1\n",
    )
    .unwrap();
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pool.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(["pools", "validate", "-f", "bad.yaml", "-f", good])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bad.yaml: "))
        .collect();
    assert_eq!(problems.len(), 5, "{stderr}");
    for field in [
        "id:",
        "min_capacity:",
        "launch_configs:",
        "scaling.service_level:",
        "extra:",
    ] {
        assert!(
            problems.iter().any(|l| l.contains(field)),
            "{field} missing in {stderr}"
        );
    }
    assert!(
        stderr.contains("pool.yaml: ok (pool ci/linux-large)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 of 2 spec files have problems"),
        "{stderr}"
    );
}
