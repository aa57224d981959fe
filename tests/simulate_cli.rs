//! End-to-end tests of `capstan simulate`: the built binary, run as a user would.

use std::process::Command;

fn capstan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capstan"))
        .args(args)
        .output()
        .expect("capstan runs")
}

fn json_run(args: &[&str]) -> serde_json::Value {
    let out = capstan(args);
    assert!(
        out.status.success(),
        "capstan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object: {stdout}"
    );
    serde_json::from_str(&stdout).expect("stdout is JSON")
}

#[test]
fn simulate_json_has_every_field_and_is_deterministic() {
    let args = ["simulate", "--workload", "diurnal", "--json", "--seed", "7"];
    let mut a = json_run(&args);
    for field in [
        "tasks",
        "skipped",
        "work_seconds",
        "instance_seconds",
        "cost",
        "oracle_instance_seconds",
        "ratio_to_oracle",
        "utilization",
        "launches",
        "terminations",
        "interruptions",
        "sim_seconds",
        "wall_seconds",
    ] {
        assert!(
            a.get(field).is_some_and(|v| v.is_number()),
            "{field} in {a}"
        );
    }
    for field in ["mean", "p50", "p95", "p99", "max"] {
        assert!(a["wait_s"][field].is_number(), "wait_s.{field} in {a}");
    }
    assert!(a["tasks"].as_u64().unwrap() > 20_000);
    assert!(a["ratio_to_oracle"].as_f64().unwrap() >= 1.0);
    assert_eq!(a["policy"], "reactive");

    let mut b = json_run(&args);
    a.as_object_mut().unwrap().remove("wall_seconds");
    b.as_object_mut().unwrap().remove("wall_seconds");
    assert_eq!(a.to_string(), b.to_string(), "same seed, same JSON");

    let mut c = json_run(&["simulate", "--workload", "diurnal", "--json", "--seed", "8"]);
    c.as_object_mut().unwrap().remove("wall_seconds");
    assert_ne!(a["tasks"], c["tasks"], "another seed, another workload");
}

#[test]
fn simulate_compare_prints_a_table_with_both_policies_and_writes_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let out = capstan(&[
        "simulate",
        "--workload",
        "diurnal",
        "--compare",
        "reactive,forecast",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let header = table
        .lines()
        .find(|l| l.contains("reactive"))
        .expect("header row");
    assert!(header.contains("forecast"), "{table}");
    for row in ["ratio to oracle", "wait p95 (s)", "instance-hours"] {
        assert!(table.contains(row), "{row} missing in\n{table}");
    }
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

#[test]
fn simulate_reports_a_malformed_trace_line_and_honours_skip_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("jobs.csv");
    std::fs::write(&csv, "submit_s,run_s\n0,60\n30,oops\n90,60\n").unwrap();
    let out = capstan(&["simulate", "--trace", csv.to_str().unwrap(), "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: field 2 (run_s)"), "{err}");

    let v = json_run(&[
        "simulate",
        "--trace",
        csv.to_str().unwrap(),
        "--skip-bad-lines",
        "--json",
    ]);
    assert_eq!(v["tasks"], 2);
    assert_eq!(v["bad_lines"], 1);
}

#[test]
fn simulate_rejects_a_bad_cloud_model_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cloud = dir.path().join("cloud.yaml");
    std::fs::write(&cloud, "launch_failure_probability: 1.5\n").unwrap();
    let out = capstan(&[
        "simulate",
        "--workload",
        "diurnal",
        "--cloud",
        cloud.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("launch_failure_probability: must be in [0, 1], got 1.5"),
        "{err}"
    );
}
