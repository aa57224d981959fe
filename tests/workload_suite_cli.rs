//! `capstan simulate` and the workload suite (docs/workloads.md): every shape is a
//! `--workload`, `--days` changes the length, and a suite case replays from the command
//! line exactly as `simulations::suite` runs it.

use capstan_core::ScalingPolicy;
use simulations::engine::simulate;
use simulations::suite::{Scale, shape_names, suite_cases};

mod common;

fn capstan(args: &[&str]) -> std::process::Output {
    // The settings' cloud files are named relative to the repository root.
    common::capstan_cli(Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))), args)
}

fn json_run(args: &[&str]) -> serde_json::Value {
    let stdout = common::stdout_of(args, capstan(args));
    let mut v: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    v.as_object_mut()
        .expect("one object")
        .remove("wall_seconds");
    v
}

fn stderr_of_failure(args: &[&str]) -> String {
    let out = capstan(args);
    assert!(!out.status.success(), "capstan {args:?} should fail");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    String::from_utf8(out.stderr).expect("utf-8")
}

#[test]
fn every_shape_is_a_workload_and_days_sets_its_length() {
    for name in shape_names() {
        // One day, or just past the shape's step or the start of its quiet month.
        let days = match name {
            "step-change" => 9.0,
            "quiet-month" => 29.0,
            _ => 1.0,
        };
        let d = format!("{days}");
        let r = json_run(&["simulate", "--workload", name, "--days", &d, "--json"]);
        let tasks = r["tasks"].as_u64().unwrap();
        let sim_days = r["sim_seconds"].as_f64().unwrap() / 86_400.0;
        assert!(tasks as f64 > 50.0 * days, "{name}: {r}");
        // The days of submits, plus the last tasks' run times.
        assert!(
            sim_days > days - 0.2 && sim_days < days + 1.0,
            "{name}: {sim_days} days"
        );
    }
    let two = json_run(&["simulate", "--workload", "small", "--days", "2", "--json"]);
    let one = json_run(&["simulate", "--workload", "small", "--days", "1", "--json"]);
    assert!(
        two["tasks"].as_u64().unwrap() > one["tasks"].as_u64().unwrap(),
        "{one} {two}"
    );
}

#[test]
fn an_unknown_workload_lists_every_shape() {
    let err = stderr_of_failure(&["simulate", "--workload", "nope"]);
    assert!(err.contains("'nope'"), "{err}");
    for name in shape_names() {
        assert!(err.contains(name), "{name} missing from: {err}");
    }
}

#[test]
fn days_is_for_workloads_and_must_leave_room_for_the_shape() {
    let err = stderr_of_failure(&["simulate", "--trace", "x.swf", "--days", "3"]);
    assert!(err.contains("--days") && err.contains("--trace"), "{err}");
    let err = stderr_of_failure(&["simulate", "--workload", "step-change", "--days", "5"]);
    assert_eq!(
        err.trim(),
        "error: --workload step-change --days 5: workload.step_day: must be < days when step_factor is not 1, got 8"
    );
    let err = stderr_of_failure(&["simulate", "--workload", "diurnal", "--days", "0"]);
    assert!(err.contains("workload.days: must be >= 1, got 0"), "{err}");
}

#[test]
fn a_suite_case_replays_from_its_command_line_exactly() {
    // Small cases the CLI can generate, in a setting with a cloud file and one with a
    // flag; forecast, so the cloud's boot and interruption draws matter.
    let wanted = [
        "compound-bursts/spot",
        "weekly/lognormal-boot",
        "step-change/4-slot",
    ];
    let cases: Vec<_> = suite_cases(Scale::Small)
        .into_iter()
        .filter(|c| wanted.contains(&c.name().as_str()))
        .collect();
    assert_eq!(cases.len(), wanted.len());
    for case in cases {
        let seed = 4;
        let command = case.command(seed).expect("the CLI generates this case");
        let mut args: Vec<&str> = command.split(' ').skip(1).collect();
        args.extend(["--policy", "forecast", "--json"]);
        let cli = json_run(&args);

        let trace = case.trace(seed).unwrap();
        let report = simulate(
            &trace,
            &case.config(ScalingPolicy::Forecast, seed),
            &mut |_| {},
        )
        .unwrap()
        .report;
        // Through the same text as the CLI's, so floats parse the same way.
        let mut lib: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        lib.as_object_mut().unwrap().remove("wall_seconds");
        assert_eq!(cli, lib, "{}: {command}", case.name());
        if case.setting.name == "spot" {
            assert!(report.interruptions > 0, "{report:?}");
        }
    }
}
