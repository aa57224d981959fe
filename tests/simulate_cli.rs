//! End-to-end tests of `capstan simulate`: the built binary, run as a user would.

mod common;

fn capstan(args: &[&str]) -> std::process::Output {
    common::capstan_cli(None, args)
}

fn json_run(args: &[&str]) -> serde_json::Value {
    let stdout = common::stdout_of(args, capstan(args));
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
    assert_eq!(a["policy"], "reactive");
    // Reactive waits for boots, so the oracle (a bound on zero-wait policies) says
    // nothing about its cost; the busy-time bound does (one slot per instance here).
    assert_busy_time_bound(&a, 1);

    let mut b = json_run(&args);
    a.as_object_mut().unwrap().remove("wall_seconds");
    b.as_object_mut().unwrap().remove("wall_seconds");
    assert_eq!(a.to_string(), b.to_string(), "same seed, same JSON");

    let mut c = json_run(&["simulate", "--workload", "diurnal", "--json", "--seed", "8"]);
    c.as_object_mut().unwrap().remove("wall_seconds");
    assert_ne!(a["tasks"], c["tasks"], "another seed, another workload");
}

fn f64_of(v: &serde_json::Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is a number in {v}"))
}

/// Bounds every finished run obeys, whatever its policy and waits: an instance of
/// `slots` slots runs at most `slots` tasks at once, so instance time is at least the
/// total work over `slots`, and so is the oracle's; utilization is a share; and with
/// no interruption each task is busy exactly its run time, so utilization is the work
/// over instance slot time.
fn assert_busy_time_bound(v: &serde_json::Value, slots: u32) {
    let slots = f64::from(slots);
    assert_eq!(v["unfinished"], 0, "{v}");
    let work = f64_of(v, "work_seconds");
    let instance = f64_of(v, "instance_seconds");
    let oracle = f64_of(v, "oracle_instance_seconds");
    let utilization = f64_of(v, "utilization");
    assert!(work > 0.0, "{v}");
    assert!(
        instance >= work / slots,
        "instance {instance} < work {work} / {slots}"
    );
    assert!(
        oracle >= work / slots,
        "oracle {oracle} < work {work} / {slots}"
    );
    assert!(utilization > 0.0 && utilization <= 1.0, "{utilization}");
    if v["interruptions"] == 0 {
        let expected = work / (instance * slots);
        assert!(
            (utilization - expected).abs() <= 1e-9 * expected,
            "utilization {utilization} vs work / instance slot time {expected}"
        );
    }
}

#[test]
fn instance_time_is_at_least_the_work_over_the_slots_per_instance() {
    let v = json_run(&[
        "simulate",
        "--workload",
        "diurnal",
        "--days",
        "7",
        "--slots",
        "4",
        "--json",
    ]);
    assert_busy_time_bound(&v, 4);
    // Four slots per instance: the fleet needs less instance time than the work.
    assert!(
        f64_of(&v, "instance_seconds") < f64_of(&v, "work_seconds"),
        "{v}"
    );
}

#[test]
fn a_run_without_any_wait_costs_at_least_the_oracle() {
    // The oracle bounds what a policy spends for zero wait; it is a theorem only for
    // runs whose longest wait is 0. Boots of 0 s and submits on the 30 s tick grid let
    // reactive start every task the instant it arrives. Four slots per instance, so
    // the oracle (ceil(running / 4) instances at every instant) is stronger than the
    // busy-time bound.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("jobs.csv");
    std::fs::write(
        &csv,
        "submit_s,run_s\n0,100\n0,100\n0,250\n0,40\n0,400\n300,50\n330,700\n330,20\n\
         900,60\n1800,90\n1800,90\n1800,90\n1800,90\n1800,90\n",
    )
    .unwrap();
    let v = json_run(&[
        "simulate",
        "--trace",
        csv.to_str().unwrap(),
        "--boot",
        "0",
        "--slots",
        "4",
        "--idle-timeout",
        "0",
        "--json",
    ]);
    assert_eq!(v["tasks"], 14);
    assert_eq!(v["wait_s"]["max"], 0.0, "the premise: no task waited, {v}");
    // By hand: level 1 (one instance) is needed over [0, 1030) and [1800, 1890),
    // level 2 over [0, 40) (five tasks) and [1800, 1890): 1030 + 90 + 40 + 90 s.
    assert_eq!(f64_of(&v, "oracle_instance_seconds"), 1250.0, "{v}");
    assert!(f64_of(&v, "oracle_instance_seconds") > f64_of(&v, "work_seconds") / 4.0);
    assert!(
        f64_of(&v, "instance_seconds") >= f64_of(&v, "oracle_instance_seconds"),
        "{v}"
    );
    assert!(f64_of(&v, "ratio_to_oracle") >= 1.0, "{v}");
    assert_busy_time_bound(&v, 4);
}

#[test]
fn simulate_compare_prints_a_table_with_both_policies_and_writes_a_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let args = [
        "simulate",
        "--workload",
        "diurnal",
        "--compare",
        "reactive,forecast",
        "--plot",
        svg.to_str().unwrap(),
    ];
    let table = common::stdout_of(&args, capstan(&args));
    let header = table
        .lines()
        .find(|l| l.contains("reactive"))
        .expect("header row");
    assert!(header.contains("forecast"), "{table}");
    for row in ["ratio to oracle", "wait p95 (s)", "instance-hours"] {
        assert!(table.contains(row), "{row} missing in\n{table}");
    }
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"));
    // One panel per policy with its busiest day beside it, cost and wait beneath.
    assert_eq!(svg.matches(r#"data-kind="whole""#).count(), 2);
    assert_eq!(svg.matches(r#"data-kind="day""#).count(), 2);
    assert_eq!(svg.matches(r#"data-kind="cost""#).count(), 1);
    assert_eq!(svg.matches(r#"data-kind="wait""#).count(), 1);
}

#[test]
fn simulate_report_writes_one_page_with_a_panel_per_policy_the_same_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let args = [
        "simulate",
        "--workload",
        "diurnal",
        "--compare",
        "reactive,forecast",
        "--report",
        html.to_str().unwrap(),
    ];
    let stdout = common::stdout_of(&args, capstan(&args));
    assert!(
        stdout.contains(&format!("report written to {}", html.display())),
        "{stdout}"
    );
    let first = std::fs::read_to_string(&html).unwrap();
    assert!(first.starts_with("<!DOCTYPE html>"));
    assert_eq!(first.matches(r#"data-kind="whole""#).count(), 2);
    assert_eq!(first.matches(r#"data-kind="day""#).count(), 2);
    assert_eq!(first.matches(r#"data-kind="cost""#).count(), 1);
    assert_eq!(first.matches(r#"data-kind="wait""#).count(), 1);
    for needle in ["http://", "https://", "src=", "<script"] {
        assert!(!first.contains(needle), "{needle} in the report");
    }
    // The table's ratio to oracle is the one the JSON reports.
    let json = json_run(&[
        "simulate",
        "--workload",
        "diurnal",
        "--compare",
        "reactive,forecast",
        "--json",
    ]);
    for policy in ["reactive", "forecast"] {
        let ratio = format!("{:.3}", json[policy]["ratio_to_oracle"].as_f64().unwrap());
        let row = first
            .lines()
            .find(|l| l.starts_with("<tr>") && l.contains(&format!("{policy}</td>")))
            .unwrap_or_else(|| panic!("no {policy} row"));
        assert!(row.contains(&format!(">{ratio}</td>")), "{ratio} in {row}");
    }
    // The context names the command that made the page.
    assert!(first.contains("Command: capstan simulate --workload diurnal"));

    let again = capstan(&args);
    assert!(again.status.success());
    let second = std::fs::read_to_string(&html).unwrap();
    assert!(first == second, "two runs, two different reports");
    // Only the report is left in the directory: no temporary file.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // One policy, one panel.
    let single = dir.path().join("single.html");
    let out = capstan(&[
        "simulate",
        "--workload",
        "diurnal",
        "--policy",
        "forecast",
        "--json",
        "--report",
        single.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let page = std::fs::read_to_string(&single).unwrap();
    assert_eq!(page.matches(r#"data-kind="whole""#).count(), 1);
    assert!(page.contains("forecast: the whole run"));
}

#[test]
fn simulate_report_to_an_unwritable_path_fails_naming_it_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let bad = file.join("report.html");
    let out = capstan(&[
        "simulate",
        "--workload",
        "diurnal",
        "--report",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("--report: cannot write {}", bad.display())),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "no table for a run that failed");

    // A run that fails after the report file was claimed keeps the old report and
    // leaves no temporary file.
    let html = dir.path().join("report.html");
    std::fs::write(&html, "the old report").unwrap();
    let missing = dir.path().join("missing.csv");
    let out = capstan(&[
        "simulate",
        "--trace",
        missing.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&html).unwrap(), "the old report");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["not-a-dir", "report.html"]);

    // One file cannot be both the plot and the report.
    let out = capstan(&[
        "simulate",
        "--workload",
        "diurnal",
        "--plot",
        html.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--plot and --report: give two different files"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&html).unwrap(), "the old report");
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

#[test]
fn the_setting_line_names_each_policys_idle_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("jobs.csv");
    std::fs::write(&csv, "submit_s,run_s\n0,100\n600,50\n5000,80\n").unwrap();
    let pool_line = |extra: &[&str]| {
        let mut args = vec!["simulate", "--trace", csv.to_str().unwrap()];
        args.extend_from_slice(extra);
        let stdout = common::stdout_of(&args, capstan(&args));
        stdout
            .lines()
            .find(|l| l.starts_with("pool sim:"))
            .unwrap_or_else(|| panic!("no pool line in\n{stdout}"))
            .to_owned()
    };
    // The default pool: reactive's documented 600 s, forecast's chosen.
    assert!(pool_line(&[]).contains(", idle timeout 600 s, "));
    assert!(
        pool_line(&["--policy", "forecast"])
            .contains(", idle timeout chosen (boot time and idle gaps), ")
    );
    let both = pool_line(&["--compare", "reactive,forecast"]);
    assert!(
        both.contains(", idle timeout reactive 600 s, forecast chosen (boot time and idle gaps), "),
        "{both}"
    );
    // --idle-timeout fixes it for every policy.
    let fixed = pool_line(&["--compare", "reactive,forecast", "--idle-timeout", "300"]);
    assert!(fixed.contains(", idle timeout 300 s, "), "{fixed}");
    // A pool spec's own setting, or its absence, holds for every policy.
    let pool = dir.path().join("pool.yaml");
    std::fs::write(
        &pool,
        "id: sim\nprovider: fake\nmax_capacity: 100\nlaunch_configs: [{id: on-demand, instance_type: t, price_per_hour: 1.0}]\n",
    )
    .unwrap();
    let unset = pool_line(&[
        "--pool",
        pool.to_str().unwrap(),
        "--compare",
        "reactive,forecast",
    ]);
    assert!(
        unset.contains(", idle timeout chosen (boot time and idle gaps), "),
        "{unset}"
    );
}

#[test]
fn service_level_zero_is_the_reactive_run_and_one_is_refused() {
    let base = [
        "simulate",
        "--workload",
        "diurnal",
        "--days",
        "3",
        "--idle-timeout",
        "600",
        "--json",
    ];
    let reactive = json_run(&[&base[..], &["--policy", "reactive"]].concat());
    let zero = json_run(&[&base[..], &["--policy", "forecast", "--service-level", "0"]].concat());
    for field in ["instance_seconds", "launches", "terminations"] {
        assert_eq!(zero[field], reactive[field], "{field}");
    }
    assert_eq!(zero["wait_s"], reactive["wait_s"]);
    let out = capstan(&[&base[..], &["--policy", "forecast", "--service-level", "1"]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--service-level: must be in [0, 1) (0: no spare), got 1"),
        "{stderr}"
    );
}

#[test]
fn warm_slots_hold_short_task_workers_and_are_checked_against_the_pool() {
    // Tasks of seconds and boots of two minutes: a retired worker is relaunched for
    // the next burst and the launch is mostly boot. Two slots held above the need,
    // with the rest retired after 30 s, launch less, cost less and wait less.
    let run = |warm: &str| {
        json_run(&[
            "simulate",
            "--workload",
            "short-tasks",
            "--days",
            "7",
            "--seed",
            "7",
            "--policy",
            "reactive",
            "--idle-timeout",
            "30",
            "--warm-slots",
            warm,
            "--json",
        ])
    };
    let (cold, warm) = (run("0"), run("2"));
    assert!(
        warm["launches"].as_u64().unwrap() < cold["launches"].as_u64().unwrap(),
        "{warm} vs {cold}"
    );
    assert!(
        f64_of(&warm, "cost") < f64_of(&cold, "cost"),
        "{warm} vs {cold}"
    );
    assert!(
        warm["wait_s"]["mean"].as_f64().unwrap() < cold["wait_s"]["mean"].as_f64().unwrap(),
        "{warm} vs {cold}"
    );

    let table = common::stdout_of(
        &[],
        capstan(&[
            "simulate",
            "--workload",
            "short-tasks",
            "--days",
            "7",
            "--warm-slots",
            "2",
        ]),
    );
    assert!(table.contains("2 warm slot(s) held"), "{table}");

    let out = capstan(&[
        "simulate",
        "--workload",
        "short-tasks",
        "--warm-slots",
        "100001",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--warm-slots: must be <= the pool's max_capacity (100000), got 100001"),
        "{err}"
    );
}

#[test]
fn a_task_that_spot_interruptions_never_let_finish_is_given_up_and_said() {
    // A 300-hour task on instances interrupted 0.1 times an hour finishes an attempt
    // once in e^30: the replay gives it up after its 100th attempt, says so, and ends.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("jobs.csv");
    std::fs::write(&csv, "submit_s,run_s\n0,600\n60,1080000\n120,600\n").unwrap();
    let args = [
        "simulate",
        "--trace",
        csv.to_str().unwrap(),
        "--cloud",
        "examples/cloud/spot.yaml",
        "--policy",
        "reactive",
    ];
    let stdout = common::stdout_of(&args, capstan(&args));
    assert!(
        stdout.contains(
            "reactive: 1 tasks never finished (1 given up after 100 interrupted attempts)"
        ),
        "{stdout}"
    );
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let v = json_run(&json_args);
    assert_eq!(
        (v["unfinished"].as_u64(), v["abandoned"].as_u64()),
        (Some(1), Some(1))
    );
}
