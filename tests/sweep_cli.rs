//! End-to-end tests of `capstan simulate --sweep`: the built binary on a small
//! generated CSV trace, as a user would run it.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;

fn capstan(args: &[&str]) -> Output {
    common::capstan_cli(None, args)
}

fn ok(args: &[&str]) -> String {
    common::stdout_of(args, capstan(args))
}

/// Two days of a small pool in `dir`: about 40 tasks an hour of 2 to 20 minutes, and
/// a burst of 30 five-minute tasks every 6 hours. Returns the file's path.
fn small_trace(dir: &Path) -> PathBuf {
    let mut x: u64 = 2026;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x >> 33
    };
    let mut lines = vec!["submit_s,run_s".to_string()];
    for k in 0..(2 * 24 * 40) {
        lines.push(format!("{},{}", k * 90 + next() % 60, 120 + next() % 1080));
    }
    for burst in 0..8 {
        for _ in 0..30 {
            lines.push(format!("{},300", burst * 6 * 3600 + next() % 60));
        }
    }
    let path = dir.join("jobs.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The small grid every test sweeps: two service levels, two ratios, one idle timeout.
const GRID: [&str; 6] = [
    "--levels",
    "0.95,0.5",
    "--ratios",
    "2,1",
    "--idle-timeouts",
    "600",
];

fn sweep_args<'a>(trace: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["simulate", "--trace", trace, "--sweep"];
    args.extend(GRID);
    args.extend(extra);
    args
}

/// The files in `dir`, by name, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn sweep_prints_a_row_per_setting_with_the_frontier_marked_and_the_target_costs() {
    let dir = tempfile::tempdir().unwrap();
    let trace = small_trace(dir.path());
    let stdout = ok(&sweep_args(trace.to_str().unwrap(), &[]));
    assert!(
        stdout.starts_with("jobs.csv: 2,160 tasks, 0 skipped"),
        "{stdout}"
    );
    let header = stdout
        .lines()
        .find(|l| l.starts_with("| policy"))
        .expect("a table header");
    for column in [
        "setting",
        "ratio to oracle",
        "wait mean (s)",
        "p95 (s)",
        "p99 (s)",
        "frontier",
    ] {
        assert!(header.contains(column), "{column} in {header}");
    }
    // Rows in grid order: levels ascending, then ratios ascending.
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with("| forecast") || l.starts_with("| reactive"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    let settings: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("forecast", "service level 0.5"),
            ("forecast", "service level 0.95"),
            ("reactive", "ratio 1, idle timeout 600 s"),
            ("reactive", "ratio 2, idle timeout 600 s"),
        ]
    );
    // The cheapest setting is on every frontier; a setting beaten on cost and mean
    // wait by another is not on the mean frontier.
    let ratio = |r: &Vec<String>| r[2].parse::<f64>().unwrap();
    let mean = |r: &Vec<String>| r[4].parse::<f64>().unwrap();
    let cheapest = rows
        .iter()
        .min_by(|a, b| ratio(a).total_cmp(&ratio(b)))
        .unwrap();
    assert_eq!(cheapest[8], "mean p95 p99", "{stdout}");
    for r in &rows {
        let beaten = rows.iter().any(|q| {
            ratio(q) <= ratio(r) && mean(q) <= mean(r) && (ratio(q) < ratio(r) || mean(q) < mean(r))
        });
        assert_eq!(!r[8].contains("mean"), beaten, "{r:?} in {stdout}");
    }
    for target in ["p95 <= 30 s", "p95 <= 60 s", "p95 <= 120 s", "mean <= 10 s"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(target)),
            "{target} in {stdout}"
        );
    }
    assert!(
        stdout.contains("forecast dominates reactive")
            || stdout.contains("forecast does not dominate reactive")
    );
    assert!(stdout.contains("4 settings replayed in "), "{stdout}");
}

#[test]
fn sweep_json_is_one_deterministic_object_with_points_frontiers_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let trace = small_trace(dir.path());
    let trace = trace.to_str().unwrap();
    let one = ok(&sweep_args(trace, &["--json", "--threads", "1"]));
    assert_eq!(one.trim().lines().count(), 1, "one JSON object: {one}");
    let two = ok(&sweep_args(trace, &["--json", "--threads", "2"]));
    assert_eq!(one, two, "the same points whatever the threads");
    let v: Value = serde_json::from_str(&one).unwrap();

    assert_eq!(v["source"], "jobs.csv");
    assert_eq!(v["tasks"], 2160);
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    let knobs: Vec<&Value> = points.iter().map(|p| &p["knobs"]).collect();
    assert_eq!(
        knobs,
        [
            &serde_json::json!({"service_level": 0.5}),
            &serde_json::json!({"service_level": 0.95}),
            &serde_json::json!({"ratio": 1.0, "idle_timeout_s": 600}),
            &serde_json::json!({"ratio": 2.0, "idle_timeout_s": 600}),
        ]
    );
    for (p, policy) in points
        .iter()
        .zip(["forecast", "forecast", "reactive", "reactive"])
    {
        assert_eq!(p["policy"], policy);
        for field in [
            "ratio_to_oracle",
            "cost",
            "wait_mean_s",
            "wait_p95_s",
            "wait_p99_s",
            "launches",
        ] {
            assert!(p[field].is_number(), "{field} in {p}");
        }
        assert!(p["wait_p95_s"].as_f64() <= p["wait_p99_s"].as_f64(), "{p}");
        assert!(p["launches"].as_u64().unwrap() > 0, "{p}");
    }
    let ratio = |i: usize| points[i]["ratio_to_oracle"].as_f64().unwrap();
    let wait = |i: usize, m: &str| {
        let field = if m == "mean" {
            "wait_mean_s".to_string()
        } else {
            format!("wait_{m}_s")
        };
        points[i][&field].as_f64().unwrap()
    };
    // Each frontier: exactly the points no other point beats, sorted by cost.
    for m in ["mean", "p95", "p99"] {
        let on: Vec<usize> = v["frontiers"][m]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as usize)
            .collect();
        let expected: Vec<usize> = (0..4)
            .filter(|&i| {
                !(0..4).any(|j| {
                    ratio(j) <= ratio(i)
                        && wait(j, m) <= wait(i, m)
                        && (ratio(j) < ratio(i) || wait(j, m) < wait(i, m))
                })
            })
            .collect();
        let mut sorted = on.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "{m} frontier in {v}");
        assert!(
            on.windows(2).all(|w| ratio(w[0]) <= ratio(w[1])),
            "{m}: {on:?}"
        );
        for policy in ["forecast", "reactive"] {
            for i in v["policy_frontiers"][policy][m].as_array().unwrap() {
                assert_eq!(points[i.as_u64().unwrap() as usize]["policy"], policy);
            }
        }
    }
    // Each answer is the cheapest point meeting its target.
    let answers = v["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 4);
    for a in answers {
        let (m, max) = (a["metric"].as_str().unwrap(), a["max_s"].as_f64().unwrap());
        let cheapest = (0..4).filter(|&i| wait(i, m) <= max).min_by(|&i, &j| {
            ratio(i)
                .total_cmp(&ratio(j))
                .then(wait(i, m).total_cmp(&wait(j, m)))
        });
        assert_eq!(a["point"].as_u64().map(|i| i as usize), cheapest, "{a}");
        let sentence = a["sentence"].as_str().unwrap();
        match cheapest {
            Some(i) => assert!(
                sentence.contains(&format!("costs {:.2}x the oracle", ratio(i))),
                "{sentence}"
            ),
            None => assert!(
                sentence.contains("no point of the sweep meets it"),
                "{sentence}"
            ),
        }
    }
    let undominated = v["undominated_reactive"].as_array().unwrap();
    assert_eq!(
        v["forecast_dominates_reactive"].as_bool().unwrap(),
        undominated.is_empty()
    );
}

#[test]
fn sweep_writes_the_svg_whole_and_only_the_svg() {
    let dir = tempfile::tempdir().unwrap();
    let trace = small_trace(dir.path());
    let svg = dir.path().join("frontier.svg");
    let stdout = ok(&sweep_args(
        trace.to_str().unwrap(),
        &["--svg", svg.to_str().unwrap()],
    ));
    assert!(stdout.contains(&format!("svg written to {}", svg.display())));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains("capstan simulate --sweep: jobs.csv"));
    // Two panels (mean and p95), a dot per setting in each.
    assert_eq!(text.matches("data-kind=\"frontier\"").count(), 2);
    assert_eq!(text.matches("data-policy=\"forecast\"").count(), 4);
    assert_eq!(text.matches("data-policy=\"reactive\"").count(), 4);
    assert!(!text.contains("<script"));
    assert_eq!(files(dir.path()), ["frontier.svg", "jobs.csv"]);
}

#[test]
fn bad_sweep_values_fail_with_a_clear_message_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let trace = small_trace(dir.path());
    let trace = trace.to_str().unwrap();
    let svg = dir.path().join("out.svg");
    let svg = svg.to_str().unwrap();
    let cases: [(&[&str], &str); 9] = [
        (
            &["--levels", "0.5,1"],
            "--levels: a service level must be in [0, 1), got 1",
        ),
        (
            &["--levels", "-0.1"],
            "--levels: a service level must be in [0, 1), got -0.1",
        ),
        (
            &["--ratios", "0"],
            "--ratios: a scaling ratio must be > 0 and <= 100, got 0",
        ),
        (
            &["--ratios", "-2"],
            "--ratios: a scaling ratio must be > 0 and <= 100, got -2",
        ),
        (&["--ratios", "two"], "invalid value 'two' for '--ratios"),
        (&["--threads", "0"], "--threads: must be >= 1, got 0"),
        (
            &["--policy", "forecast"],
            "'--sweep' cannot be used with '--policy",
        ),
        (
            &["--compare", "reactive,forecast"],
            "'--sweep' cannot be used with '--compare",
        ),
        (
            &["--report", "r.html"],
            "'--sweep' cannot be used with '--report",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["simulate", "--trace", trace, "--sweep", "--svg", svg];
        args.extend(extra);
        let out = capstan(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert_eq!(files(dir.path()), ["jobs.csv"], "{extra:?} left a file");
    }
    // The grid flags need --sweep.
    let out = capstan(&["simulate", "--trace", trace, "--levels", "0.5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sweep"));
    // An SVG path that cannot be written fails before the replays.
    let missing = dir.path().join("no-such-dir").join("out.svg");
    let out = capstan(&[
        "simulate",
        "--trace",
        trace,
        "--sweep",
        "--svg",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--svg: cannot write"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(dir.path()), ["jobs.csv"]);
}
