//! End to end: the operator subcommands that work on the store directly —
//! `pools apply/list` and `machines register/list/remove` — on a real SQLite file.

use std::path::Path;
use std::process::{Command, Output};

fn capstan(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .current_dir(dir)
        .env_remove("CAPSTAN_DATABASE_URL")
        .env("CAPSTAN_DATABASE_URL", "sqlite://ops.db")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn pools_apply_creates_updates_and_refuses_stale_generations() {
    let dir = tempfile::tempdir().unwrap();
    let spec = "id: lab/macs\nprovider: static\nmax_capacity: 8\n";
    std::fs::write(dir.path().join("p.yaml"), spec).unwrap();
    let out = capstan(dir.path(), &["pools", "apply", "-f", "p.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pool lab/macs created (generation 1)"));

    let out = capstan(dir.path(), &["pools", "apply", "-f", "p.yaml"]);
    assert!(
        text(&out.stderr).contains("unchanged (generation 1)"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(dir.path().join("p.yaml"), spec.replace("8", "12")).unwrap();
    let out = capstan(dir.path(), &["pools", "apply", "-f", "p.yaml"]);
    assert!(
        text(&out.stderr).contains("updated (generation 2)"),
        "{}",
        text(&out.stderr)
    );

    // An operator who read generation 1 cannot overwrite generation 2.
    std::fs::write(dir.path().join("p.yaml"), spec.replace("8", "99")).unwrap();
    let out = capstan(
        dir.path(),
        &["pools", "apply", "-f", "p.yaml", "--if-generation", "1"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("expected generation 1, current is 2"),
        "{}",
        text(&out.stderr)
    );

    // A bad spec applies nothing.
    std::fs::write(
        dir.path().join("p.yaml"),
        "id: lab/macs\nprovider: static\nmax_capacity: -1\n",
    )
    .unwrap();
    let out = capstan(dir.path(), &["pools", "apply", "-f", "p.yaml"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("p.yaml: max_capacity: expected a whole number"),
        "{}",
        text(&out.stderr)
    );

    let out = capstan(dir.path(), &["pools", "list"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("lab/macs\tstatic\t0\t12\t2\t"),
        "{listing}"
    );
}

#[test]
fn machines_register_shows_the_secret_once_and_stores_only_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("macs.yaml"),
        "id: lab/macs\nprovider: static\nmax_capacity: 8\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cloud.yaml"),
        "id: ci/cloud\nprovider: fake\nmax_capacity: 8\nlaunch_configs: [{id: a, instance_type: t}]\n",
    )
    .unwrap();
    for f in ["macs.yaml", "cloud.yaml"] {
        assert!(
            capstan(dir.path(), &["pools", "apply", "-f", f])
                .status
                .success()
        );
    }

    let out = capstan(
        dir.path(),
        &[
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
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let secret = text(&out.stdout).trim().to_owned();
    assert!(secret.len() >= 32, "secret {secret:?}");
    assert!(text(&out.stderr).contains("shown this once"));

    let db = std::fs::read(dir.path().join("ops.db")).unwrap();
    let wal = std::fs::read(dir.path().join("ops.db-wal")).unwrap_or_default();
    let contains = |hay: &[u8]| hay.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(
        !contains(&db) && !contains(&wal),
        "the plain secret reached the database file"
    );

    let out = capstan(
        dir.path(),
        &[
            "machines",
            "register",
            "--pool",
            "lab/macs",
            "--name",
            "mac-1",
            "--capacity",
            "2",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already registered"),
        "{}",
        text(&out.stderr)
    );

    let out = capstan(
        dir.path(),
        &[
            "machines",
            "register",
            "--pool",
            "ci/cloud",
            "--name",
            "x",
            "--capacity",
            "1",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has provider fake"),
        "{}",
        text(&out.stderr)
    );

    let out = capstan(
        dir.path(),
        &[
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
        ],
    );
    assert!(
        text(&out.stderr).contains("--label: expected KEY=VALUE"),
        "{}",
        text(&out.stderr)
    );

    // The store flag is accepted after the subcommand too.
    let out = capstan(
        dir.path(),
        &[
            "machines",
            "list",
            "--pool",
            "lab/macs",
            "--database-url",
            "sqlite://ops.db",
        ],
    );
    assert_eq!(
        text(&out.stdout),
        "NAME\tPOOL\tSLOTS\tASSIGNMENT\tLABELS\nmac-1\tlab/macs\t2\tidle\tarch=arm64\n"
    );
    assert!(
        capstan(dir.path(), &["machines", "remove", "mac-1"])
            .status
            .success()
    );
    let out = capstan(dir.path(), &["machines", "remove", "mac-1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no static machine named \"mac-1\""),
        "{}",
        text(&out.stderr)
    );
}
