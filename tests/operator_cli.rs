//! End to end: the operator subcommands as clients of a real `capstan serve` — on a
//! free port, over a temporary SQLite file — from bootstrapping the first admin on the
//! store directly to applying pools with diffs and generations, static machines,
//! scoped and revoked tokens, and the client's own configuration.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Service, free_port};

use serde_json::Value;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The binary with a clean environment: no CAPSTAN_* variable and no client config
/// file from the person running the tests.
fn bare(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capstan"));
    cmd.current_dir(dir)
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("USER", "tester");
    for (k, _) in std::env::vars() {
        if k.starts_with("CAPSTAN_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// A `capstan serve` on a free port over `capstan.db` in `dir`, healthy; killed on drop.
fn start_server(dir: &Path) -> Service {
    let port = free_port();
    let mut cmd = bare(dir);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", "sqlite://capstan.db"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    Service::spawn_healthy(cmd, port)
}

/// One operator's shell: a directory, a server, a token.
struct Operator<'a> {
    dir: &'a Path,
    server: String,
    token: Option<String>,
}

impl Operator<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = bare(self.dir);
        cmd.args(args).env("CAPSTAN_SERVER", &self.server);
        if let Some(t) = &self.token {
            cmd.env("CAPSTAN_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        if let Some(t) = &self.token {
            assert!(
                !text(&out.stdout).contains(t.as_str()) && !text(&out.stderr).contains(t.as_str()),
                "the token was printed by {args:?}"
            );
        }
        out
    }

    /// Runs and insists on exit status 0.
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

    /// Runs and insists on failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "{args:?} succeeded: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: ") || err.contains("\nerror: "),
            "{err}"
        );
        err
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
    }

    fn as_token(&self, token: &str) -> Operator<'_> {
        Operator {
            dir: self.dir,
            server: self.server.clone(),
            token: Some(token.to_owned()),
        }
    }
}

/// `clients create --database-url`: the first admin, on the store directly.
fn bootstrap_admin(dir: &Path) -> String {
    let out = bare(dir)
        .args(["clients", "create", "--name", "admin", "--scope", "*"])
        .args(["--database-url", "sqlite://capstan.db"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("cap_"), "{token:?}");
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "the token alone on stdout"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("bootstrap") && err.contains("shown this once"),
        "{err}"
    );
    token
}

/// A fresh world: a temporary directory, the first admin bootstrapped there on the
/// store directly, and a `capstan serve` over that store.
struct Session {
    dir: tempfile::TempDir,
    server: Service,
    admin_token: String,
}

impl Session {
    fn start() -> Session {
        let dir = tempfile::tempdir().unwrap();
        let admin_token = bootstrap_admin(dir.path());
        let server = start_server(dir.path());
        Session {
            dir,
            server,
            admin_token,
        }
    }

    /// The admin's shell.
    fn admin(&self) -> Operator<'_> {
        Operator {
            dir: self.dir.path(),
            server: self.server.url(),
            token: Some(self.admin_token.clone()),
        }
    }
}

/// `cap_<id>_<secret>` → id.
fn client_id(token: &str) -> &str {
    token.split('_').nth(1).unwrap()
}

fn write(dir: &Path, name: &str, content: &str) {
    std::fs::write(dir.join(name), content).unwrap();
}

const CI_POOL: &str =
    "id: ci/linux\nprovider: fake\nmax_capacity: 8\nlaunch_configs: [{id: a, instance_type: t}]\n";

#[test]
fn pools_apply_shows_diffs_and_never_overwrites_a_change_it_did_not_see() {
    let session = Session::start();
    let d = session.dir.path();
    let op = session.admin();

    // Create: the diff is all additions, defaults spelled out.
    write(d, "p.yaml", CI_POOL);
    let out = op.ok(&["pools", "apply", "-f", "p.yaml"]);
    let diff = text(&out.stdout);
    assert!(diff.contains("--- ci/linux (new pool)"), "{diff}");
    assert!(diff.contains("+++ p.yaml"), "{diff}");
    assert!(diff.contains("+id: ci/linux"), "{diff}");
    assert!(diff.contains("+min_capacity: 0"), "{diff}");
    assert!(
        text(&out.stderr).contains("pool ci/linux created (generation 1)"),
        "{}",
        text(&out.stderr)
    );

    // The same file again: nothing to write.
    let out = op.ok(&["pools", "apply", "-f", "p.yaml"]);
    assert!(
        text(&out.stderr).contains("pool ci/linux unchanged (generation 1)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "", "no diff when unchanged");

    // An edit: the diff shows exactly the changed line.
    write(
        d,
        "p.yaml",
        &CI_POOL.replace("max_capacity: 8", "max_capacity: 12"),
    );
    let out = op.ok(&["pools", "apply", "-f", "p.yaml"]);
    let diff = text(&out.stdout);
    assert!(diff.contains("--- ci/linux (generation 1)"), "{diff}");
    assert!(diff.contains("-max_capacity: 8\n"), "{diff}");
    assert!(diff.contains("+max_capacity: 12\n"), "{diff}");
    assert_eq!(
        diff.lines()
            .filter(|l| (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---"))
            .count(),
        2,
        "{diff}"
    );
    assert!(
        text(&out.stderr).contains("pool ci/linux updated (generation 2)"),
        "{}",
        text(&out.stderr)
    );

    // --dry-run: the diff, exit 2, nothing written; exit 0 when nothing would change.
    let out = op.ok(&["pools", "apply", "-f", "p.yaml", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    write(
        d,
        "p.yaml",
        &CI_POOL.replace("max_capacity: 8", "max_capacity: 16"),
    );
    let out = op.run(&["pools", "apply", "-f", "p.yaml", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("+max_capacity: 16"));
    assert!(text(&out.stderr).contains("would be updated"));
    let view = op.json(&["pools", "get", "ci/linux"]);
    assert_eq!(view["generation"], 2);
    assert_eq!(view["spec"]["max_capacity"], 12);

    // An operator who read generation 1 cannot overwrite generation 2.
    let err = op.fails(&["pools", "apply", "-f", "p.yaml", "--if-generation", "1"]);
    assert!(
        err.contains("pool ci/linux changed since generation 1 (current is 2); nothing applied"),
        "{err}"
    );
    assert!(err.contains("capstan pools get ci/linux"), "{err}");
    // ... and --if-generation pins one pool only.
    write(d, "q.yaml", &CI_POOL.replace("ci/linux", "ci/other"));
    let err = op.fails(&[
        "pools",
        "apply",
        "-f",
        "p.yaml",
        "-f",
        "q.yaml",
        "--if-generation",
        "2",
    ]);
    assert!(err.contains("single -f"), "{err}");

    // A bad file among good ones: every problem printed, nothing applied.
    write(
        d,
        "bad.yaml",
        "id: ci/bad\nprovider: static\nmax_capacity: -1\n",
    );
    let err = op.fails(&["pools", "apply", "-f", "q.yaml", "-f", "bad.yaml"]);
    assert!(
        err.contains("bad.yaml: max_capacity: expected a whole number"),
        "{err}"
    );
    assert!(
        err.contains("1 of 2 spec files have problems; nothing applied"),
        "{err}"
    );
    let err = op.fails(&["pools", "get", "ci/other"]);
    assert!(err.contains("ci/other"), "{err}");

    // Reading: json is the server's PoolView, yaml the same, the table has the columns.
    write(
        d,
        "lab.yaml",
        "id: lab/macs\nprovider: static\nmax_capacity: 4\n",
    );
    op.ok(&["pools", "apply", "-f", "lab.yaml", "-f", "q.yaml"]);
    let view = op.json(&["pools", "get", "ci/linux"]);
    assert_eq!(view["id"], "ci/linux");
    assert_eq!(view["status"], "active");
    assert_eq!(view["spec"]["provider"], "fake");
    let yaml = text(&op.ok(&["pools", "get", "ci/linux", "-o", "yaml"]).stdout);
    assert!(yaml.contains("id: ci/linux\n"), "{yaml}");
    assert!(yaml.contains("generation: 2\n"), "{yaml}");
    assert!(yaml.contains("  max_capacity: 12\n"), "{yaml}");
    let table = text(&op.ok(&["pools", "get", "ci/linux"]).stdout);
    let header = table.lines().next().unwrap();
    for col in [
        "ID",
        "PROVIDER",
        "MIN",
        "MAX",
        "GENERATION",
        "STATUS",
        "UPDATED",
    ] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains("| ci/linux | fake "), "{table}");

    let list = op.json(&["pools", "list"]);
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ci/linux", "ci/other", "lab/macs"]);
    let list = op.json(&["pools", "list", "--prefix", "ci/", "--provider", "fake"]);
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    let list = op.json(&["pools", "list", "--provider", "static"]);
    assert_eq!(list["items"][0]["id"], "lab/macs", "{list}");
    let table = text(&op.ok(&["pools", "list"]).stdout);
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    let yaml = text(&op.ok(&["pools", "list", "-o", "yaml"]).stdout);
    assert!(yaml.starts_with("items:\n"), "{yaml}");

    // History and errors.
    let audit = op.json(&["pools", "audit", "ci/linux"]);
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"create") && actions.contains(&"update"),
        "{audit}"
    );
    let errors = op.json(&["pools", "errors", "ci/linux"]);
    assert!(errors["items"].is_array(), "{errors}");
    let workers = op.json(&[
        "workers",
        "list",
        "--pool",
        "ci/linux",
        "--state",
        "ready,booting",
    ]);
    assert!(workers["items"].is_array(), "{workers}");
    op.fails(&["workers", "get", "no-such-worker"]);

    // Delete: a stale generation is refused naming both, the current one works.
    let err = op.fails(&["pools", "delete", "ci/other", "--if-generation", "7"]);
    assert!(
        err.contains("changed since generation 7 (current is 1)"),
        "{err}"
    );
    let out = op.ok(&["pools", "delete", "ci/other"]);
    assert!(
        text(&out.stderr).contains("pool ci/other deleted")
            || text(&out.stderr).contains("pool ci/other is being deleted"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn machines_scopes_and_revoked_tokens() {
    let session = Session::start();
    let d = session.dir.path();
    let admin = session.admin();
    write(
        d,
        "lab.yaml",
        "id: lab/macs\nprovider: static\nmax_capacity: 8\n",
    );
    write(d, "ci.yaml", CI_POOL);
    admin.ok(&["pools", "apply", "-f", "lab.yaml", "-f", "ci.yaml"]);

    // Static machines: the secret alone on stdout, once.
    let out = admin.ok(&[
        "machines",
        "register",
        "--pool",
        "lab/macs",
        "--name",
        "mac-1",
        "--capacity",
        "2",
        "--label",
        "arch=arm64",
    ]);
    let secret = text(&out.stdout).trim().to_owned();
    assert!(secret.len() >= 32, "secret {secret:?}");
    assert_eq!(text(&out.stdout).lines().count(), 1);
    assert!(
        text(&out.stderr).contains("shown this once"),
        "{}",
        text(&out.stderr)
    );
    let err = admin.fails(&[
        "machines",
        "register",
        "--pool",
        "lab/macs",
        "--name",
        "mac-1",
        "--capacity",
        "2",
    ]);
    assert!(err.contains("mac-1"), "{err}");
    let err = admin.fails(&[
        "machines",
        "register",
        "--pool",
        "ci/linux",
        "--name",
        "x",
        "--capacity",
        "1",
    ]);
    assert!(err.contains("static"), "{err}");
    let err = admin.fails(&[
        "machines",
        "register",
        "--pool",
        "lab/macs",
        "--name",
        "m2",
        "--capacity",
        "1",
        "--label",
        "oops",
    ]);
    assert!(err.contains("--label: expected KEY=VALUE"), "{err}");
    let machines = admin.json(&["machines", "list", "--pool", "lab/macs"]);
    assert_eq!(machines["items"][0]["name"], "mac-1", "{machines}");
    assert_eq!(
        machines["items"][0]["labels"]["arch"], "arm64",
        "{machines}"
    );
    assert!(
        !machines.to_string().contains(&secret),
        "the secret is never listed"
    );
    let table = text(&admin.ok(&["machines", "list", "--pool", "lab/macs"]).stdout);
    assert!(
        table.contains("mac-1") && table.contains("arch=arm64"),
        "{table}"
    );
    admin.ok(&["machines", "remove", "mac-1"]);
    admin.fails(&["machines", "remove", "mac-1"]);
    let machines = admin.json(&["machines", "list", "--pool", "lab/macs"]);
    assert_eq!(machines["items"], serde_json::json!([]));

    // A CI bot that may only write ci/* pools, created through the API.
    let out = admin.ok(&[
        "clients",
        "create",
        "--name",
        "ci-bot",
        "--scope",
        "pools:write:ci/*",
        "--expires-in",
        "30d",
    ]);
    let bot_token = text(&out.stdout).trim().to_owned();
    assert!(bot_token.starts_with("cap_"), "{bot_token:?}");
    let bot = admin.as_token(&bot_token);
    write(d, "prod.yaml", &CI_POOL.replace("ci/linux", "prod/x"));
    let err = bot.fails(&["pools", "apply", "-f", "prod.yaml"]);
    assert!(err.contains("pools:write:prod/x"), "{err}");
    // It cannot read, but may still create in its own prefix (no diff to show).
    write(d, "new.yaml", &CI_POOL.replace("ci/linux", "ci/new"));
    let out = bot.ok(&["pools", "apply", "-f", "new.yaml"]);
    assert!(
        text(&out.stderr).contains("pool ci/new created (generation 1)"),
        "{}",
        text(&out.stderr)
    );
    let err = bot.fails(&[
        "clients",
        "create",
        "--name",
        "x",
        "--scope",
        "pools:write:*",
    ]);
    assert!(err.contains("clients:admin"), "{err}");

    // A client admin still grants only what it holds.
    let out = admin.ok(&[
        "clients",
        "create",
        "--name",
        "ci-admin",
        "--scope",
        "clients:admin",
        "--scope",
        "pools:write:ci/*",
    ]);
    let ci_admin = admin.as_token(text(&out.stdout).trim());
    let err = ci_admin.fails(&[
        "clients",
        "create",
        "--name",
        "x",
        "--scope",
        "pools:write:*",
    ]);
    assert!(err.contains("pools:write:*"), "{err}");

    // Listing and revoking.
    let clients = admin.json(&["clients", "list"]);
    let names: Vec<&str> = clients["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for name in ["admin", "ci-bot", "ci-admin"] {
        assert!(names.contains(&name), "{clients}");
    }
    assert!(
        !clients.to_string().contains(&bot_token[20..]),
        "no secret listed"
    );
    let table = text(&admin.ok(&["clients", "list"]).stdout);
    assert!(table.contains("bootstrap:tester"), "{table}");
    let out = admin.ok(&["clients", "revoke", client_id(&bot_token)]);
    assert!(
        text(&out.stderr).contains("revoked"),
        "{}",
        text(&out.stderr)
    );
    let err = bot.fails(&["pools", "list"]);
    assert!(err.contains("HTTP 401") && err.contains("revoked"), "{err}");

    // Deleting the static pool.
    let out = admin.ok(&["pools", "delete", "lab/macs"]);
    assert!(
        text(&out.stderr).contains("pool lab/macs deleted"),
        "{}",
        text(&out.stderr)
    );
    admin.fails(&["pools", "get", "lab/macs"]);
}

#[test]
fn client_settings_come_from_flags_environment_and_a_private_file() {
    let session = Session::start();
    let d = session.dir.path();
    let (token, server) = (session.admin_token.clone(), &session.server);

    // Nobody listening: the message names the server.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = bare(d)
        .args(["pools", "list", "--server", &dead])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach the capstan server at {dead}"))
            && err.contains("connection refused"),
        "{err}"
    );

    // No token: a 401 that says what to do.
    let out = bare(d)
        .args(["pools", "list", "--server", &server.url()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("HTTP 401"),
        "{}",
        text(&out.stderr)
    );

    // The file: used when no flag or variable says otherwise, with a warning when
    // others may read the token in it.
    let file = d.join("client.toml");
    write(
        d,
        "client.toml",
        &format!("server = \"{}\"\ntoken = \"{token}\"\n", server.url()),
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = bare(d)
        .args([
            "pools",
            "list",
            "-o",
            "json",
            "--client-config",
            "client.toml",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    #[cfg(unix)]
    assert!(
        text(&out.stderr).contains("readable by group or others"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains(&token));

    // The default location, private: no warning.
    let config_dir = d.join("xdg").join("capstan");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::copy(&file, config_dir.join("client.toml")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            config_dir.join("client.toml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    let out = bare(d)
        .env("XDG_CONFIG_HOME", d.join("xdg"))
        .args(["pools", "list"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");

    // Flags beat the file.
    let out = bare(d)
        .env("XDG_CONFIG_HOME", d.join("xdg"))
        .args(["pools", "list", "--server", &dead])
        .output()
        .unwrap();
    assert!(text(&out.stderr).contains(&dead), "{}", text(&out.stderr));

    // Unknown keys are named.
    write(d, "typo.toml", "sever = \"http://x\"\n");
    let out = bare(d)
        .args(["pools", "list", "--client-config", "typo.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("typo.toml") && err.contains("sever"), "{err}");
}

#[test]
fn pools_validate_needs_no_server() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.yaml", CI_POOL);
    write(
        dir.path(),
        "bad.yaml",
        "id: lab/macs\nprovider: static\nmax_capacity: -1\n",
    );
    let out = bare(dir.path())
        .args([
            "pools",
            "validate",
            "-f",
            "p.yaml",
            "--server",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("p.yaml: ok (pool ci/linux)"));
    let out = bare(dir.path())
        .args(["pools", "validate", "-f", "bad.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("bad.yaml: max_capacity: expected a whole number"),
        "{}",
        text(&out.stderr)
    );
}

/// Runs `f` on the server's store (`capstan.db` in `dir`) directly, as another process
/// sharing it would, and closes it.
fn with_store<T>(dir: &Path, f: impl AsyncFnOnce(&store::Store) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", dir.join("capstan.db").display());
        let store = store::Store::connect(&url).await.unwrap();
        let out = f(&store).await;
        store.close().await;
        out
    })
}

/// Puts a `ready` worker running `busy_slots` tasks into the pool straight into the
/// store, as the reconciler would once a machine registered.
fn insert_ready_worker(dir: &Path, pool: &str, id: &str, busy_slots: u32) {
    use capstan_core::worker::{Worker, WorkerState};
    use capstan_core::{PoolId, Timestamp, WorkerId};
    with_store(dir, async |store| {
        let now = Timestamp::from_unix_ms(1_800_000_000_000);
        let mut w = Worker::requested(
            WorkerId::from_string(id),
            PoolId::new(pool).unwrap(),
            capstan_core::spec::ProviderKind::Fake,
            Some("a".to_owned()),
            4,
            format!("token-{id}"),
            now,
        );
        w.state = WorkerState::Ready;
        w.registered_at = Some(now);
        w.busy_slots = busy_slots;
        store.insert_worker(&w).await.unwrap();
    });
}

#[test]
fn workers_are_listed_and_drained_and_a_pool_with_live_workers_drains_before_deletion() {
    let session = Session::start();
    let d = session.dir.path();
    let op = session.admin();
    write(d, "ci.yaml", CI_POOL);
    op.ok(&["pools", "apply", "-f", "ci.yaml"]);
    insert_ready_worker(d, "ci/linux", "w-0001", 0);
    // Busy, so the deleting pool keeps a live worker however soon the loop (which the
    // delete wakes) retires the idle one.
    insert_ready_worker(d, "ci/linux", "w-0002", 1);

    let workers = op.json(&["workers", "list", "--pool", "ci/linux"]);
    assert_eq!(workers["items"].as_array().unwrap().len(), 2, "{workers}");
    let workers = op.json(&[
        "workers", "list", "--pool", "ci/linux", "--state", "booting",
    ]);
    assert_eq!(workers["items"], serde_json::json!([]), "{workers}");
    let table = text(&op.ok(&["workers", "list", "--pool", "ci/linux"]).stdout);
    assert!(
        table.contains("| w-0001 ") && table.contains("| ready "),
        "{table}"
    );
    let w = op.json(&["workers", "get", "w-0001"]);
    assert_eq!(w["state"], "ready", "{w}");

    let out = op.ok(&["workers", "drain", "w-0001"]);
    assert!(
        text(&out.stderr).contains("worker w-0001 is draining"),
        "{}",
        text(&out.stderr)
    );
    let w = op.json(&["workers", "get", "w-0001"]);
    assert_eq!(w["state"], "draining", "{w}");
    let workers = op.json(&[
        "workers",
        "list",
        "--pool",
        "ci/linux",
        "--state",
        "ready,draining",
    ]);
    assert_eq!(workers["items"].as_array().unwrap().len(), 2, "{workers}");

    let out = op.ok(&["pools", "delete", "ci/linux"]);
    assert!(
        text(&out.stderr)
            .contains("pool ci/linux is being deleted: its 2 live workers drain first"),
        "{}",
        text(&out.stderr)
    );
    let view = op.json(&["pools", "get", "ci/linux"]);
    assert_eq!(view["status"], "deleting", "{view}");
    // A deleting pool takes no more edits.
    write(
        d,
        "ci.yaml",
        &CI_POOL.replace("max_capacity: 8", "max_capacity: 9"),
    );
    op.fails(&["pools", "apply", "-f", "ci.yaml"]);
}

/// Records a plan and a forecast for `pool` on the store directly, as a replica of the
/// reconcile loop would (used only when the server's own loop has not planned it);
/// false when the server's loop holds the pool's lease (and so plans it itself).
fn record_plan_directly(dir: &Path, pool: &str) -> bool {
    use capstan_core::{
        Action, Forecast, ForecastPoint, Plan, PlanReport, Quantile, ScalingPolicy, TargetTerm,
    };
    with_store(dir, async |store| {
        let leases = store.acquire_leases("cli-test", 60_000).await.unwrap();
        let Some(lease) = leases.iter().find(|l| l.fence.pool_id.as_str() == pool) else {
            store.release_leases("cli-test").await.unwrap();
            return false;
        };
        let now = store.db_now().await.unwrap();
        let plan = Plan {
            actions: vec![Action::Launch {
                launch_config_id: "a".into(),
                zone: None,
                count: 2,
                idempotency_token: format!("{pool}-{}-0", now.unix_ms()),
            }],
            report: PlanReport {
                at: now,
                policy: ScalingPolicy::Reactive,
                forecast_slots: 7,
                backlog_slots: 7,
                boot_hedge_slots: 0,
                min_slots: 0,
                schedule_slots: 0,
                max_slots: 8,
                budget_slots: None,
                target_slots: 7,
                target_set_by: TargetTerm::Forecast,
                keep_slots: 7,
                held_slots: 0,
                idle_timeout_s: Some(600.0),
                idle_timeout_chosen: false,
                current_slots: 5,
                launch_slots: 2,
                launched_last_minute: 0,
                rate_limited: false,
                unmet_slots: 0,
                skipped_offerings: vec![],
            },
        };
        let forecast = Forecast {
            made_at: now,
            policy: ScalingPolicy::Reactive,
            lead_s: 60.0,
            target_slots: 7,
            backlog_slots: 7,
            expected_busy_slots: 7.0,
            points: vec![ForecastPoint {
                at: now.plus_secs(300),
                mean: 6.5,
                quantiles: vec![Quantile { p: 0.9, slots: 9.0 }],
            }],
        };
        store
            .record_plan(&lease.fence, "cli-test", &plan, &forecast)
            .await
            .unwrap();
        store.release_leases("cli-test").await.unwrap();
        true
    })
}

#[test]
fn queue_samples_are_pushed_and_plans_and_forecasts_shown() {
    let session = Session::start();
    let d = session.dir.path();
    let op = session.admin();
    write(d, "ci.yaml", CI_POOL);
    op.ok(&["pools", "apply", "-f", "ci.yaml"]);

    // One sample, taken now.
    let out = op.ok(&[
        "pools",
        "push-queue",
        "ci/linux",
        "--pending",
        "5",
        "--running",
        "2",
        "--completions",
        "1",
    ]);
    assert!(
        text(&out.stderr).contains("pool ci/linux: queue sample pushed (5 pending, 2 running)"),
        "{}",
        text(&out.stderr)
    );
    // Pushing needs queue:write on the pool; an unknown pool is an error.
    let out = op.ok(&[
        "clients",
        "create",
        "--name",
        "reader",
        "--scope",
        "pools:read:ci/*",
    ]);
    let reader_token = text(&out.stdout).trim().to_owned();
    let reader = op.as_token(&reader_token);
    let refused_push = |op: &Operator<'_>, pool| {
        op.fails(&[
            "pools",
            "push-queue",
            pool,
            "--pending",
            "1",
            "--running",
            "0",
        ])
    };
    let err = refused_push(&reader, "ci/linux");
    assert!(err.contains("queue:write:ci/linux"), "{err}");
    let err = refused_push(&op, "ci/none");
    assert!(err.contains("no pool ci/none"), "{err}");

    // The plan: the server's loop plans the pool once it holds its lease (at once when
    // woken by the push, or at its next round for a pool newer than its last one); when
    // the lease is free the plan is recorded on the store here instead, as a replica
    // would.
    let planned = |op: &Operator<'_>| {
        let out = op.run(&["pools", "plan", "ci/linux", "-o", "json"]);
        let err = text(&out.stderr);
        assert!(
            out.status.success() || err.contains("pool ci/linux has not been planned yet"),
            "{err}"
        );
        out.status.success()
    };
    let mut ok = false;
    for attempt in 0..160 {
        if planned(&op) || (attempt == 12 && record_plan_directly(d, "ci/linux")) {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(ok, "pool ci/linux was never planned");
    let plan = reader.json(&["pools", "plan", "ci/linux"]);
    assert_eq!(plan["pool_id"], "ci/linux", "{plan}");
    let summary = plan["summary"].as_str().unwrap();
    assert!(summary.contains("policy: target"), "{summary}");
    let table = text(&reader.ok(&["pools", "plan", "ci/linux"]).stdout);
    assert!(table.starts_with("pool ci/linux, planned at "), "{table}");
    assert!(table.contains(summary), "{table}");
    if !plan["plan"]["actions"].as_array().unwrap().is_empty() {
        assert!(table.contains("| ACTION "), "{table}");
    }
    let yaml = text(
        &reader
            .ok(&["pools", "plan", "ci/linux", "-o", "yaml"])
            .stdout,
    );
    assert!(yaml.contains("pool_id: ci/linux\n"), "{yaml}");

    // The forecast and the sample pushed above.
    let forecast = reader.json(&["pools", "forecast", "ci/linux", "--history", "1h"]);
    assert!(forecast["forecast"]["target_slots"].is_u64(), "{forecast}");
    let history = forecast["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{forecast}");
    assert_eq!(
        (&history[0]["pending"], &history[0]["running"]),
        (&serde_json::json!(5), &serde_json::json!(2))
    );
    let table = text(&reader.ok(&["pools", "forecast", "ci/linux"]).stdout);
    assert!(
        table.starts_with("pool ci/linux, forecast made at "),
        "{table}"
    );
    assert!(
        table.contains("queue history: 1 sample from ")
            && table.contains("latest: 5 pending, 2 running"),
        "{table}"
    );
    if !forecast["forecast"]["points"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(
            table.contains("| AT ") && table.contains("| MEAN "),
            "{table}"
        );
    }
    let err = reader.fails(&["pools", "forecast", "ci/linux", "--history", "3661d"]);
    assert!(err.contains("history_s"), "{err}");
    let err = reader.fails(&["pools", "forecast", "ci/linux", "--history", "6"]);
    assert!(err.contains("unit"), "{err}");
    let err = op.fails(&["pools", "forecast", "lab/none"]);
    assert!(err.contains("no pool lab/none"), "{err}");
}
