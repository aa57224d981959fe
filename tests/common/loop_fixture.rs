//! What the control-loop tests share: a PostgreSQL scratch database, the EC2 emulator
//! behind a fault proxy, an admin token, and `capstan serve` processes with a short
//! tick whose logs go to files (printed when a test fails).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use capstan_core::PoolId;
use providers::aws::AwsProvider;
use providers::emulator::{self, Emulator};
use providers::fault_proxy::FaultProxy;
use providers::gcp::GcpProvider;
use providers::{InMemoryLedger, Instance, ListScope, Provider};
use serde_json::Value;
use store::scratch::ScratchDatabase;

use super::{Service, free_port};

/// The AMI moto knows.
pub const AMI: &str = "ami-03cf127a";

/// The GCP project the GCE emulator serves.
pub const GCP_PROJECT: &str = "capstan-test";

/// Which cloud emulator the service talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// EC2 through moto.
    Aws,
    /// Compute Engine through gcplocal.
    Gcp,
}

/// A database, the emulator, a proxy in front of it, and an admin token.
pub struct Fixture {
    /// Scratch directory: config file and server logs.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database (dropped with the fixture).
    pub db: ScratchDatabase,
    /// The emulator (moto or gcplocal).
    pub emulator: Emulator,
    /// Which one.
    pub kind: Cloud,
    /// The proxy the service talks to.
    pub proxy: FaultProxy,
    /// An API token with scope `*`.
    pub token: String,
    /// An SDK client on the emulator, for checking what exists there.
    pub cloud: Arc<dyn Provider>,
}

/// The binary without the developer's CAPSTAN_* environment.
pub fn bare(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, _) in std::env::vars() {
        if k.starts_with("CAPSTAN_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `capstan clients create --name admin --scope '*' --database-url URL` in `dir`:
/// the first admin's token, created on the store directly.
pub fn bootstrap_admin(dir: &Path, database_url: &str) -> String {
    let out = bare(dir)
        .args(["clients", "create", "--name", "admin", "--scope", "*"])
        .args(["--database-url", database_url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(token.starts_with("cap_"), "{token:?}");
    token
}

impl Fixture {
    /// Everything up, or `None` (skipped, with the reason printed) outside CI when
    /// moto or PostgreSQL is missing.
    pub async fn start(test: &str) -> Option<Fixture> {
        Self::start_on(test, Cloud::Aws).await
    }

    /// [`Fixture::start`] on the given cloud's emulator.
    pub async fn start_on(test: &str, kind: Cloud) -> Option<Fixture> {
        let exe = match kind {
            Cloud::Aws => emulator::require("CAPSTAN_MOTO_SERVER", "moto_server", test)?,
            Cloud::Gcp => emulator::require("CAPSTAN_GCPLOCAL", "gcplocal", test)?,
        };
        let db = ScratchDatabase::create().await?;
        let emulator = match kind {
            Cloud::Aws => emulator::start_moto(&exe),
            Cloud::Gcp => emulator::start_gcplocal(&exe),
        };
        let proxy = FaultProxy::start(&emulator.endpoint).await;
        let dir = tempfile::tempdir().unwrap();
        let token = bootstrap_admin(dir.path(), &db.url);
        let cloud: Arc<dyn Provider> = match kind {
            Cloud::Aws => Arc::new(AwsProvider::for_endpoint(
                &emulator.endpoint,
                "testing",
                "testing",
                vec!["us-east-1".into()],
                Arc::new(InMemoryLedger::new()),
            )),
            Cloud::Gcp => Arc::new(
                GcpProvider::for_endpoint(
                    &emulator.endpoint,
                    GCP_PROJECT,
                    Arc::new(InMemoryLedger::new()),
                )
                .await
                .expect("GCE client"),
            ),
        };
        Some(Fixture {
            dir,
            db,
            emulator,
            kind,
            proxy,
            token,
            cloud,
        })
    }

    /// Writes the service's config file (2 s ticks, 6 s leases) plus `extra` lines.
    pub fn config(&self, extra: &str) -> PathBuf {
        let path = self.dir.path().join("capstan.toml");
        std::fs::write(
            &path,
            format!(
                "reconcile_interval_s = 2\nlease_ttl_s = 6\nlaunch_grace_s = 20\nboot_estimate_s = 5\n\
                 provider_call_timeout_s = 10\norphan_sweep_cron = \"*/3 * * * * *\"\norphan_grace_s = 6\n\
                 {extra}\n{}",
                self.provider_section()
            ),
        )
        .unwrap();
        path
    }

    /// Writes config file `file` in the scratch directory: the keys of
    /// [`Fixture::config`], each replaced by its value in `keys` when given there
    /// (values in TOML syntax: `("replica_name", "\"a\"")`), plus the other keys of
    /// `keys`. For tests that need other ticks or several replicas' configs.
    pub fn config_with(&self, file: &str, keys: &[(&str, &str)]) -> PathBuf {
        let defaults = [
            ("reconcile_interval_s", "2"),
            ("lease_ttl_s", "6"),
            ("launch_grace_s", "20"),
            ("boot_estimate_s", "5"),
            ("provider_call_timeout_s", "10"),
            ("orphan_sweep_cron", "\"*/3 * * * * *\""),
            ("orphan_grace_s", "6"),
        ];
        let mut text = String::new();
        for (k, v) in defaults {
            let v = keys.iter().find(|(key, _)| *key == k).map_or(v, |(_, v)| v);
            text.push_str(&format!("{k} = {v}\n"));
        }
        for (k, v) in keys {
            if !defaults.iter().any(|(d, _)| d == k) {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        text.push_str(&self.provider_section());
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The `[providers.*]` table for the fixture's emulator (through the proxy).
    fn provider_section(&self) -> String {
        match self.kind {
            Cloud::Aws => format!(
                "[providers.aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n",
                self.proxy.endpoint
            ),
            Cloud::Gcp => format!(
                "[providers.gcp]\nproject = \"{GCP_PROJECT}\"\nendpoint = \"{}\"\n",
                self.proxy.endpoint
            ),
        }
    }

    /// Starts `capstan serve` named `name` (its log goes to `<dir>/<name>.log`),
    /// healthy; `env` adds variables (a crash point).
    pub fn serve(&self, name: &str, env: &[(&str, String)]) -> Service {
        self.serve_with(name, &self.dir.path().join("capstan.toml"), env)
    }

    /// [`Fixture::serve`] with config file `config`.
    pub fn serve_with(&self, name: &str, config: &Path, env: &[(&str, String)]) -> Service {
        let (cmd, port) = self.serve_command(name, config, env);
        // The health check runs its own runtime: off the test's.
        std::thread::spawn(move || Service::spawn_healthy(cmd, port))
            .join()
            .unwrap_or_else(|_| {
                panic!(
                    "capstan serve {name} did not become healthy\n{}",
                    self.logs()
                )
            })
    }

    /// Spawns `capstan serve` named `name` with config file `config` and returns at
    /// once, without waiting for it to be healthy: for a process that may die early
    /// (a crash point reached in its first round).
    pub fn spawn_serve(&self, name: &str, config: &Path, env: &[(&str, String)]) -> Service {
        let (mut cmd, port) = self.serve_command(name, config, env);
        Service {
            child: cmd.spawn().unwrap(),
            port,
        }
    }

    /// The `capstan serve` command on the fixture's database, on a free port, logging
    /// to `<dir>/<name>.log`.
    fn serve_command(&self, name: &str, config: &Path, env: &[(&str, String)]) -> (Command, u16) {
        let port = free_port();
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        let mut cmd = bare(self.dir.path());
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", &self.db.url])
            .arg("--config")
            .arg(config)
            .env("CAPSTAN_LOG", "info,capstan=debug")
            // Plain text logs: read by people in failure messages and by tests.
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        (cmd, port)
    }

    /// A store client on the fixture's database, for checking and driving what the
    /// service reads.
    pub async fn store(&self) -> store::Store {
        store::Store::connect(&self.db.url).await.unwrap()
    }

    /// Where replica `name` logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// Every log written so far, for failure messages.
    pub fn logs(&self) -> String {
        super::log_tails(self.dir.path())
    }

    /// An HTTP call with the admin token; (status, JSON body or Null).
    pub async fn call(
        &self,
        svc: &Service,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        super::call_api(&svc.url(), &self.token, method, path, body).await
    }

    /// Instances of `pool` alive in the emulator.
    pub async fn alive(&self, pool: &str) -> Vec<Instance> {
        let scope = ListScope::Pool(PoolId::new(pool).unwrap());
        self.cloud
            .list(&scope)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.state.is_alive())
            .collect()
    }

    /// Every capstan-tagged instance alive in the emulator.
    pub async fn alive_anywhere(&self) -> Vec<Instance> {
        self.cloud
            .list(&ListScope::All)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.state.is_alive())
            .collect()
    }

    /// Polls `check` every 250 ms until it answers `Some` or `within` passes; panics
    /// with `what` and the logs on timeout.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, within: Duration, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        super::poll_until(what, within, || self.logs(), check).await
    }
}

/// A pool spec on EC2 with two launch configs: `preferred` (c5.large) and `fallback`
/// (t3.micro), reactive, workers that must register within `registration_s`.
pub fn ec2_pool(id: &str, registration_s: u64) -> Value {
    serde_json::json!({
        "id": id,
        "provider": "aws",
        "max_capacity": 10,
        "launch_configs": [
            {"id": "preferred", "region": "us-east-1", "instance_type": "c5.large", "priority": 0,
             "provider_config": {"image_id": AMI}},
            {"id": "fallback", "region": "us-east-1", "instance_type": "t3.micro", "priority": 1,
             "provider_config": {"image_id": AMI}}
        ],
        "scaling": {"policy": "reactive", "max_launches_per_minute": 100},
        "lifecycle": {"registration_timeout_s": registration_s}
    })
}

/// The URL path of a pool (ids keep their slashes).
pub fn pool_path(id: &str, rest: &str) -> String {
    format!("/v1/pools/{id}{rest}")
}

/// A pool spec on Compute Engine with two launch configs: `preferred`
/// (e2-standard-4 SPOT in us-central1-b) and `fallback` (e2-standard-2 in
/// us-central1-a), reactive, workers that must register within `registration_s`.
pub fn gce_pool(id: &str, registration_s: u64) -> Value {
    let image = "projects/debian-cloud/global/images/family/debian-12";
    serde_json::json!({
        "id": id,
        "provider": "gcp",
        "max_capacity": 10,
        "launch_configs": [
            {"id": "preferred", "region": "us-central1", "zone": "us-central1-b",
             "instance_type": "e2-standard-4", "market": "spot", "priority": 0,
             "provider_config": {"image": image}},
            {"id": "fallback", "region": "us-central1", "zone": "us-central1-a",
             "instance_type": "e2-standard-2", "market": "spot", "priority": 1,
             "provider_config": {"image": image}}
        ],
        "scaling": {"policy": "reactive", "max_launches_per_minute": 100},
        "lifecycle": {"registration_timeout_s": registration_s}
    })
}
