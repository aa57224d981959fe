//! `capstan pools ...`: working with pool specs.
//!
//! `validate` checks spec files offline, with exactly the rules the service applies,
//! and prints every problem (one line each, prefixed by the file name) so an operator
//! can fix a spec before it ever reaches the API. Every other subcommand talks to the
//! server (see [`crate::client`]).
//!
//! `plan` and `forecast` show what the reconcile loop decided for a pool and the
//! forecast behind it; `push-queue` pushes one queue sample (for demos and tests: real
//! queues push batches to `POST /v1/pools/{id}/queue`).
//!
//! `simulate` is a what-if: the server replays the pool's recorded history with its
//! current spec and the candidate in a file (`POST /v1/pools/{id}/simulate`), and this
//! prints both side by side with the change, or writes them as an HTML report.
//!
//! `apply` validates every file locally first and applies nothing if any has a
//! problem. For each spec it reads the pool, prints a unified diff between the stored
//! spec and the file (both rendered as YAML with every default spelled out, so only
//! real differences show) and then writes it as a compare-and-swap: `If-Match` with the
//! generation it read (or the one pinned with `--if-generation`), or `If-None-Match: *`
//! for a new pool. It therefore never overwrites a change it did not show.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use capstan_core::PoolSpec;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use similar::TextDiff;

use crate::client::{
    ApiClient, ClientArgs, if_match, if_none_match_any, is_status, parse_duration, pool_path,
    server_error,
};
use crate::output::{self, OutputArg, PendingFile, cell, item_list, items, show, table};
use simulations::engine::{Report, SeriesPoint};
use simulations::report::{ReportPage, ReportRun, group, html_report};

/// `capstan pools`: the connection flags and a subcommand.
#[derive(Debug, clap::Args)]
pub struct PoolsArgs {
    #[command(flatten)]
    conn: ClientArgs,
    #[command(subcommand)]
    command: PoolsCommand,
}

/// Pool subcommands.
#[derive(Debug, clap::Subcommand)]
enum PoolsCommand {
    /// Check pool spec files (YAML or JSON) and print every problem found (offline:
    /// no server needed).
    Validate {
        /// Spec files to check.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Create or update pools from spec files on the server, showing the diff first.
    ///
    /// Every file is validated locally first; if any has a problem, all problems are
    /// printed and nothing is applied. For each pool the difference between the
    /// server's spec and the file is printed as a unified diff on stdout, then the
    /// spec is written only if the pool is still at the generation that was read (or
    /// the one given with --if-generation), so a concurrent change is never
    /// overwritten. A token that may write but not read a pool can still create it,
    /// or replace the generation pinned with --if-generation, without a diff.
    ///
    /// Exit status: 0 on success; 1 on errors; with --dry-run, 0 when nothing would
    /// change and 2 when something would.
    Apply {
        /// Spec file (YAML, or JSON when the name ends in .json); repeatable.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
        /// Print the diff and write nothing; exit 2 if anything would change.
        #[arg(long)]
        dry_run: bool,
        /// Write only if the pool is still at generation N, the one you saw earlier
        /// (e.g. with `capstan pools get`) [default: the generation read just before
        /// the write]. Only with a single -f file: generations are per pool.
        #[arg(long, value_name = "N")]
        if_generation: Option<i64>,
    },
    /// Show one pool, from the server.
    Get {
        /// Pool id, e.g. ci/linux-large.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// List pools, from the server.
    List {
        /// Only pools of this provider (aws, gcp, static, fake).
        #[arg(long)]
        provider: Option<String>,
        /// Only pools whose id starts with this, e.g. ci/.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Delete a pool on the server; a pool with live workers drains them first.
    Delete {
        /// Pool id.
        id: String,
        /// Delete only if the pool is still at generation N [default: the generation
        /// read just before the delete].
        #[arg(long, value_name = "N")]
        if_generation: Option<i64>,
    },
    /// Show a pool's recent provider errors, from the server.
    Errors {
        /// Pool id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show who changed a pool and when, from the server.
    Audit {
        /// Pool id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show the reconcile loop's latest plan for a pool: in words, its actions, and
    /// the plans that acted in the last hour.
    Plan {
        /// Pool id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show the forecast behind a pool's latest plan: its points ahead (mean and
    /// quantiles) and a summary of the recent queue samples.
    Forecast {
        /// Pool id.
        id: String,
        /// How much queue history to fetch: 90m, 6h, 30d (at most 3660d; older than
        /// raw_history_days it comes as hourly rollups).
        #[arg(long, value_name = "DURATION", default_value = "6h", value_parser = parse_duration)]
        history: u64,
        #[command(flatten)]
        output: OutputArg,
    },
    /// What if the pool had another spec? Replays the pool's recorded queue history
    /// and task run times (on the server, in the simulator: nothing live changes) with
    /// its current spec and with the candidate in FILE, and shows both side by side.
    ///
    /// The candidate is validated like `apply` (every problem, offline first); its id
    /// must be the pool's. Its provider and provider_config do not matter: both
    /// replays run in a simulated cloud. Needs pools:read on the pool.
    Simulate {
        /// Pool id, e.g. ci/linux-large.
        id: String,
        /// The candidate spec (YAML, or JSON when the name ends in .json).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Days of history to replay, ending now (1 to 35).
        #[arg(long, value_name = "N", default_value_t = 14,
              value_parser = clap::value_parser!(u32).range(1..=35))]
        days: u32,
        /// Seed of the replay's random draws (arrival instants, run times) [default: 1].
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// Also write the comparison as a self-contained HTML page (table and charts).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Push one queue sample for a pool, taken now (needs queue:write on the pool).
    PushQueue {
        /// Pool id.
        id: String,
        /// Tasks waiting for a slot.
        #[arg(long, value_name = "N")]
        pending: u32,
        /// Tasks running.
        #[arg(long, value_name = "N")]
        running: u32,
        /// Tasks that arrived since the previous sample [default: estimated by the
        /// server from the growth of pending + running, plus completions].
        #[arg(long, value_name = "N")]
        arrivals: Option<u32>,
        /// Tasks that finished since the previous sample [default: 0].
        #[arg(long, value_name = "N")]
        completions: Option<u32>,
    },
}

/// Runs a pool subcommand.
pub fn run(args: PoolsArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn;
    match args.command {
        PoolsCommand::Validate { files } => validate(&files).map(|()| ExitCode::SUCCESS),
        PoolsCommand::Apply {
            files,
            dry_run,
            if_generation,
        } => {
            if if_generation.is_some() && files.len() > 1 {
                bail!(
                    "--if-generation pins the generation of one pool: use it with a single -f file"
                );
            }
            let specs = read_all(&files)?;
            conn.run(|client| async move { apply(&client, &specs, dry_run, if_generation).await })
        }
        PoolsCommand::Get { id, output } => conn.run(|client| async move {
            let view = client.get(&pool_path(&id)?, &[]).await?;
            output::print_as(output.format, &view, view_yaml, |v| {
                pool_table(std::slice::from_ref(v))
            })?;
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::List {
            provider,
            prefix,
            output,
        } => conn.run(|client| async move {
            let mut query = Vec::new();
            if let Some(p) = provider {
                query.push(("provider", p));
            }
            if let Some(p) = prefix {
                query.push(("prefix", p));
            }
            let all = client.get_all("/v1/pools", &query).await?;
            output::print_as(
                output.format,
                &item_list(all),
                |b| {
                    let views = items(b)
                        .iter()
                        .map(view_yaml)
                        .collect::<anyhow::Result<_>>()?;
                    let mut doc = serde_norway::Mapping::new();
                    doc.insert("items".into(), serde_norway::Value::Sequence(views));
                    Ok(serde_norway::Value::Mapping(doc))
                },
                |b| pool_table(items(b)),
            )?;
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::Delete { id, if_generation } => conn.run(|client| async move {
            delete(&client, &id, if_generation).await?;
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::Errors { id, output } => conn.run(|client| async move {
            let body = client
                .get(&format!("{}/errors", pool_path(&id)?), &[])
                .await?;
            output::print(output.format, &body, |b| {
                let mut t = table(&[
                    "KIND",
                    "LAUNCH CONFIG",
                    "COUNT",
                    "FIRST SEEN",
                    "LAST SEEN",
                    "MESSAGE",
                ]);
                for e in items(b) {
                    t.add_row(vec![
                        cell(e, "kind"),
                        cell(e, "launch_config_id"),
                        cell(e, "count"),
                        cell(e, "first_seen"),
                        cell(e, "last_seen"),
                        cell(e, "message"),
                    ]);
                }
                t
            })?;
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::Plan { id, output } => conn.run(|client| async move {
            let body = client
                .get(&format!("{}/plan", pool_path(&id)?), &[])
                .await?;
            output::print_text(output.format, &body, plan_text)?;
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::Forecast {
            id,
            history,
            output,
        } => conn.run(|client| async move {
            let body = client
                .get(
                    &format!("{}/forecast", pool_path(&id)?),
                    &[("history_s", history.to_string())],
                )
                .await?;
            output::print_text(output.format, &body, forecast_text)?;
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::PushQueue {
            id,
            pending,
            running,
            arrivals,
            completions,
        } => conn.run(|client| async move {
            let mut sample = serde_json::json!({"pending": pending, "running": running});
            if let Some(n) = arrivals {
                sample["arrivals"] = n.into();
            }
            if let Some(n) = completions {
                sample["completions"] = n.into();
            }
            client
                .send(
                    Method::POST,
                    &format!("{}/queue", pool_path(&id)?),
                    &[],
                    &[],
                    Some(&serde_json::json!({ "samples": [sample] })),
                )
                .await?;
            eprintln!("pool {id}: queue sample pushed ({pending} pending, {running} running)");
            Ok(ExitCode::SUCCESS)
        }),
        PoolsCommand::Simulate {
            id,
            file,
            days,
            seed,
            report,
            output,
        } => {
            let spec = match read_spec(&file)? {
                Ok(spec) => spec,
                Err(n) => bail!("{}: {n} problems; nothing simulated", file.display()),
            };
            if spec.id.as_str() != id {
                bail!(
                    "{}: id {} is not pool {id}; a what-if compares a candidate for the same pool (change its id, or leave it out of the file)",
                    file.display(),
                    spec.id
                );
            }
            // The report's path is checked before the replays, so a bad one fails at once.
            let report = report
                .map(|path| PendingFile::create(&path, "--report").map(|file| (path, file)))
                .transpose()?;
            conn.run(|client| async move {
                let mut body = serde_json::json!({"spec": spec, "days": days});
                if let Some(seed) = seed {
                    body["seed"] = seed.into();
                }
                // The server replays both specs (seconds for a busy pool): say so on a
                // terminal while it does.
                let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
                    spinner.set_style(style);
                }
                spinner.set_message(format!(
                    "replaying {days} days of {id}'s history with the current and the candidate spec"
                ));
                spinner.enable_steady_tick(Duration::from_millis(120));
                let reply = client
                    .send_within(
                        Method::POST,
                        &format!("{}/simulate", pool_path(&id)?),
                        &[],
                        &[],
                        Some(&body),
                        WHATIF_TIMEOUT,
                    )
                    .await;
                spinner.finish_and_clear();
                let reply = reply?;
                output::print_text(output.format, &reply.body, whatif_text)?;
                if let Some((path, pending)) = report {
                    write_whatif_report(pending, &reply.body, &file)?;
                    eprintln!("report written to {}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        PoolsCommand::Audit { id, output } => conn.run(|client| async move {
            let all = client
                .get_all(&format!("{}/audit", pool_path(&id)?), &[])
                .await?;
            output::print(output.format, &item_list(all), |b| {
                let mut t = table(&["AT", "ACTOR", "ACTION", "GENERATION"]);
                for e in items(b) {
                    t.add_row(vec![
                        cell(e, "at"),
                        cell(e, "actor"),
                        cell(e, "action"),
                        format!(
                            "{} -> {}",
                            cell(e, "old_generation"),
                            cell(e, "new_generation")
                        ),
                    ]);
                }
                t
            })?;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

/// How long `pools simulate` waits for the server: longer than the server's own 30 s
/// request limit, so its answer (the result, or 503 `timeout`) always arrives.
const WHATIF_TIMEOUT: Duration = Duration::from_secs(45);

/// One row of the what-if table: its name, how to read it from a report, and its
/// decimals.
type WhatIfRow = (&'static str, fn(&Value) -> Option<f64>, usize);

/// The rows of `pools simulate`'s table.
const WHATIF_ROWS: [WhatIfRow; 10] = [
    ("cost", |r| r.get("cost")?.as_f64(), 2),
    (
        "instance-hours",
        |r| Some(r.get("instance_seconds")?.as_f64()? / 3600.0),
        1,
    ),
    ("ratio to oracle", |r| r.get("ratio_to_oracle")?.as_f64(), 3),
    ("wait mean (s)", |r| r.pointer("/wait_s/mean")?.as_f64(), 1),
    ("wait p95 (s)", |r| r.pointer("/wait_s/p95")?.as_f64(), 1),
    ("wait p99 (s)", |r| r.pointer("/wait_s/p99")?.as_f64(), 1),
    ("wait max (s)", |r| r.pointer("/wait_s/max")?.as_f64(), 1),
    ("launches", |r| r.get("launches")?.as_f64(), 0),
    ("terminations", |r| r.get("terminations")?.as_f64(), 0),
    (
        "utilization (%)",
        |r| Some(r.get("utilization")?.as_f64()? * 100.0),
        1,
    ),
];

/// `pools simulate`: what was replayed, the comparison table, and the input notes.
fn whatif_text(body: &Value) -> String {
    let input = body.get("input").unwrap_or(&Value::Null);
    let count = |key: &str| group(input.get(key).and_then(Value::as_f64).unwrap_or(0.0), 0);
    let mut out = format!(
        "pool {}: {} days of history ({} to {}), seed {}\nreplayed {} tasks from {} queue samples and {} task runs; machines boot in {} s\n\n",
        cell(body, "pool_id"),
        cell(body, "days"),
        cell(body, "from"),
        cell(body, "until"),
        cell(body, "seed"),
        count("arrivals"),
        count("samples"),
        count("task_runs"),
        number(input.get("boot_s")),
    );
    let current = body.pointer("/current/report").unwrap_or(&Value::Null);
    let candidate = body.pointer("/candidate/report").unwrap_or(&Value::Null);
    let mut t = table(&["METRIC", "CURRENT", "CANDIDATE", "CHANGE"]);
    for (name, read, decimals) in WHATIF_ROWS {
        let (a, b) = (read(current), read(candidate));
        let shown = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |x| group(x, decimals));
        t.add_row(vec![name.to_owned(), shown(a), shown(b), change(a, b)]);
    }
    out.push_str(&t.to_string());
    out.push('\n');
    let notes = input
        .get("notes")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !notes.is_empty() {
        out.push_str("\nhow the history was replayed:\n");
        for n in notes {
            out.push_str(&format!("- {}\n", show(n)));
        }
    }
    out
}

/// The candidate's change over the current value, in percent (`-` when the current
/// value is 0 or missing).
fn change(current: Option<f64>, candidate: Option<f64>) -> String {
    match (current, candidate) {
        (Some(a), Some(b)) if a == b => "0.0%".to_owned(),
        (Some(a), Some(b)) if a != 0.0 => format!("{:+.1}%", (b - a) / a.abs() * 100.0),
        _ => "-".to_owned(),
    }
}

/// Writes the what-if `body` as an HTML report into `pending` (a temporary file beside
/// the target, renamed over it once whole).
fn write_whatif_report(
    pending: PendingFile,
    body: &Value,
    candidate_file: &Path,
) -> anyhow::Result<()> {
    let run = |which: &str, label: &str| -> anyhow::Result<ReportRun> {
        let report: Report = serde_json::from_value(
            body.pointer(&format!("/{which}/report"))
                .cloned()
                .unwrap_or(Value::Null),
        )
        .with_context(|| format!("the server's {which} report cannot be read"))?;
        let series: Vec<SeriesPoint> = serde_json::from_value(
            body.pointer(&format!("/{which}/series"))
                .cloned()
                .unwrap_or(Value::Null),
        )
        .with_context(|| format!("the server's {which} series cannot be read"))?;
        Ok(ReportRun {
            label: label.to_owned(),
            report,
            series,
        })
    };
    let runs = [
        run("current", "current")?,
        run(
            "candidate",
            &format!("candidate ({})", candidate_file.display()),
        )?,
    ];
    let title = format!("What-if for pool {}", cell(body, "pool_id"));
    let notes: Vec<String> = body
        .pointer("/input/notes")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(show)
        .collect();
    let context = format!(
        "The pool's recorded history of {} days ({} to {}, seed {}) replayed with its current spec and with {}. {}",
        cell(body, "days"),
        cell(body, "from"),
        cell(body, "until"),
        cell(body, "seed"),
        candidate_file.display(),
        notes.join("; ")
    );
    let html = html_report(&ReportPage {
        title: &title,
        context: &context,
        runs: &runs,
    });
    pending.commit(html.as_bytes())
}

/// `pools plan`: the summary, then the actions, then the recent plans that acted.
fn plan_text(body: &Value) -> String {
    let mut out = format!(
        "pool {}, planned at {} by {}\n{}\n",
        cell(body, "pool_id"),
        cell(body, "at"),
        cell(body, "owner"),
        cell(body, "summary")
    );
    let actions = body
        .pointer("/plan/actions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !actions.is_empty() {
        out.push('\n');
        out.push_str(&actions_table(actions).to_string());
        out.push('\n');
    }
    let recent = body
        .get("recent_actions")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if !recent.is_empty() {
        out.push_str("\nplans that acted in the last hour, newest first:\n");
        for r in recent {
            out.push_str(&format!("  {}  {}\n", cell(r, "at"), cell(r, "summary")));
        }
    }
    out
}

/// The actions of a plan, one row each.
fn actions_table(actions: &[Value]) -> comfy_table::Table {
    let mut t = table(&["ACTION", "LAUNCH CONFIG / WORKER", "COUNT", "ZONE / REASON"]);
    for a in actions {
        let launch = a.get("type").and_then(Value::as_str) == Some("launch");
        t.add_row(if launch {
            vec![
                cell(a, "type"),
                cell(a, "launch_config_id"),
                cell(a, "count"),
                cell(a, "zone"),
            ]
        } else {
            vec![
                cell(a, "type"),
                cell(a, "worker"),
                "1".to_owned(),
                cell(a, "reason"),
            ]
        });
    }
    t
}

/// `pools forecast`: the forecast's numbers, its points as a table (one column per
/// quantile), and one line about the queue history.
fn forecast_text(body: &Value) -> String {
    let f = body.get("forecast").unwrap_or(&Value::Null);
    let mut out = format!(
        "pool {}, forecast made at {} ({} policy, lead {} s): target {} slots, backlog {} slots, expected busy {}\n",
        cell(body, "pool_id"),
        cell(body, "made_at"),
        cell(f, "policy"),
        number(f.get("lead_s")),
        cell(f, "target_slots"),
        cell(f, "backlog_slots"),
        number(f.get("expected_busy_slots")),
    );
    let points = f
        .get("points")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    if points.is_empty() {
        out.push_str("no points ahead in this forecast\n");
    } else {
        // Quantile levels as in the first point (the predictor uses one set).
        let levels: Vec<String> = points[0]
            .get("quantiles")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|q| cell(q, "p"))
            .collect();
        let mut header = vec!["AT".to_owned(), "MEAN".to_owned()];
        header.extend(levels.iter().map(|p| format!("P={p}")));
        let mut t = table(&header.iter().map(String::as_str).collect::<Vec<_>>());
        for point in points {
            let mut row = vec![cell(point, "at"), number(point.get("mean"))];
            let quantiles = point
                .get("quantiles")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            for p in &levels {
                let q = quantiles.iter().find(|q| &cell(q, "p") == p);
                row.push(number(q.and_then(|q| q.get("slots"))));
            }
            t.add_row(row);
        }
        out.push_str(&t.to_string());
        out.push('\n');
    }
    let history = body
        .get("history")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    // Buckets of history: each counts its samples and shows its maxima.
    let samples: u64 = history
        .iter()
        .map(|p| p.get("samples").and_then(Value::as_u64).unwrap_or(1))
        .sum();
    match (history.first(), history.last()) {
        (Some(first), Some(last)) => out.push_str(&format!(
            "queue history: {} from {} to {}; latest: {} pending, {} running\n",
            match samples {
                1 => "1 sample".to_owned(),
                n => format!("{n} samples"),
            },
            cell(first, "at"),
            cell(last, "at"),
            cell(last, "pending"),
            cell(last, "running"),
        )),
        _ => out.push_str("queue history: no samples in the period\n"),
    }
    out
}

/// A number for a table cell, to two decimals at most (`-` when missing).
fn number(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".to_owned(),
    }
}

/// The pool columns of `get` and `list`.
fn pool_table(pools: &[Value]) -> comfy_table::Table {
    let mut t = table(&[
        "ID",
        "PROVIDER",
        "MIN",
        "MAX",
        "GENERATION",
        "STATUS",
        "UPDATED",
    ]);
    for p in pools {
        let spec = p.get("spec").unwrap_or(&Value::Null);
        t.add_row(vec![
            cell(p, "id"),
            cell(spec, "provider"),
            cell(spec, "min_capacity"),
            cell(spec, "max_capacity"),
            cell(p, "generation"),
            cell(p, "status"),
            cell(p, "updated"),
        ]);
    }
    t
}

/// Reads and validates one spec file; problems are printed, one line each.
fn read_spec(file: &Path) -> anyhow::Result<Result<PoolSpec, usize>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed = if file.extension().is_some_and(|e| e == "json") {
        PoolSpec::from_json(&text)
    } else {
        PoolSpec::from_yaml(&text)
    };
    Ok(parsed.map_err(|errors| {
        for e in &errors.0 {
            eprintln!("{}: {e}", file.display());
        }
        errors.0.len()
    }))
}

/// Reads and validates every file; any problem in any file means none is returned.
fn read_all(files: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, PoolSpec)>> {
    let mut specs = Vec::new();
    let mut bad = 0;
    for file in files {
        match read_spec(file)? {
            Ok(spec) => specs.push((file.clone(), spec)),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        bail!(
            "{bad} of {} spec files have problems; nothing applied",
            files.len()
        );
    }
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for (file, spec) in &specs {
        if let Some(first) = seen.insert(spec.id.as_str(), file) {
            bail!(
                "pool {} is in both {} and {}; nothing applied",
                spec.id,
                first.display(),
                file.display()
            );
        }
    }
    Ok(specs)
}

/// A spec as YAML with every default written out: the form both sides of the diff
/// take.
fn render(spec: &PoolSpec) -> anyhow::Result<String> {
    Ok(serde_norway::to_string(spec)?)
}

/// The server's `spec`, rendered like [`render`]; as plain YAML if this binary cannot
/// read it as a spec (a newer server).
fn render_stored(spec: &Value) -> anyhow::Result<String> {
    match serde_json::from_value::<PoolSpec>(spec.clone()) {
        Ok(s) => render(&s),
        Err(_) => Ok(serde_norway::to_string(spec)?),
    }
}

/// A PoolView as YAML: its fields in a fixed order and the spec in the spec's own
/// field order (as `apply` renders it), so the `spec` part reads like a spec file.
fn view_yaml(view: &Value) -> anyhow::Result<serde_norway::Value> {
    const FIRST: [&str; 6] = [
        "id",
        "generation",
        "status",
        "created",
        "updated",
        "deleting_since",
    ];
    let mut doc = serde_norway::Mapping::new();
    for key in FIRST {
        if let Some(v) = view.get(key) {
            doc.insert(key.into(), serde_norway::to_value(v)?);
        }
    }
    for (key, v) in view.as_object().into_iter().flatten() {
        if !FIRST.contains(&key.as_str()) && key != "spec" {
            doc.insert(key.as_str().into(), serde_norway::to_value(v)?);
        }
    }
    if let Some(spec) = view.get("spec") {
        let spec = match serde_json::from_value::<PoolSpec>(spec.clone()) {
            Ok(s) => serde_norway::to_value(&s)?,
            Err(_) => serde_norway::to_value(spec)?,
        };
        doc.insert("spec".into(), spec);
    }
    Ok(serde_norway::Value::Mapping(doc))
}

fn generation(view: &Value) -> anyhow::Result<i64> {
    view.get("generation")
        .and_then(Value::as_i64)
        .context("the server's pool has no generation")
}

fn stale_message(id: &str, read: i64, current: Option<i64>, what: &str) -> String {
    match current {
        Some(current) => format!(
            "pool {id} changed since generation {read} (current is {current}); nothing {what}: read it again (capstan pools get {id}) and re-apply"
        ),
        None => format!(
            "pool {id} was deleted since generation {read} (current is none); nothing {what}"
        ),
    }
}

async fn apply(
    client: &ApiClient,
    specs: &[(PathBuf, PoolSpec)],
    dry_run: bool,
    if_generation: Option<i64>,
) -> anyhow::Result<ExitCode> {
    let mut would_change = false;
    for (i, (file, spec)) in specs.iter().enumerate() {
        let id = spec.id.as_str();
        let result = apply_one(client, file, spec, dry_run, if_generation).await;
        match result {
            Ok(changed) => would_change |= changed,
            Err(e) => {
                let rest: Vec<String> = specs[i + 1..]
                    .iter()
                    .map(|(f, _)| f.display().to_string())
                    .collect();
                if !rest.is_empty() {
                    eprintln!("not applied (stopped at pool {id}): {}", rest.join(", "));
                }
                return Err(e);
            }
        }
    }
    Ok(if dry_run && would_change {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// What `apply` found on the server before writing.
enum Current {
    /// The pool as the server has it.
    Found(Value),
    /// No such pool.
    Missing,
    /// The token may not read the pool (403 naming `pools:read:<id>`); its write
    /// scope may still allow creating it, or replacing a pinned generation.
    Unreadable(anyhow::Error),
}

/// Diffs and (unless `dry_run`) writes one spec; returns whether it differs.
async fn apply_one(
    client: &ApiClient,
    file: &Path,
    spec: &PoolSpec,
    dry_run: bool,
    if_generation: Option<i64>,
) -> anyhow::Result<bool> {
    let id = spec.id.as_str();
    let current = match client.get(&pool_path(id)?, &[]).await {
        Ok(view) => Current::Found(view),
        Err(e) if is_status(&e, StatusCode::NOT_FOUND) => Current::Missing,
        Err(e) if is_status(&e, StatusCode::FORBIDDEN) => Current::Unreadable(e),
        Err(e) => return Err(e),
    };
    let new = render(spec)?;
    let file_name = file.display().to_string();
    let print_diff = |old: &str, old_name: &str| {
        let diff = TextDiff::from_lines(old, &new);
        #[allow(clippy::print_stdout)] // the diff is the command's output
        {
            print!("{}", diff.unified_diff().header(old_name, &file_name));
        }
    };
    let (precondition, read) = match &current {
        Current::Found(view) => {
            let g = generation(view)?;
            let stored = render_stored(view.get("spec").unwrap_or(&Value::Null))?;
            if stored == new {
                eprintln!("pool {id} unchanged (generation {g})");
                return Ok(false);
            }
            print_diff(&stored, &format!("{id} (generation {g})"));
            let expected = if_generation.unwrap_or(g);
            (if_match(expected), Some(expected))
        }
        Current::Missing => {
            if let Some(g) = if_generation {
                bail!(
                    "pool {id} does not exist, but --if-generation {g} expects it at generation {g}; nothing applied"
                );
            }
            print_diff("", &format!("{id} (new pool)"));
            (if_none_match_any(), None)
        }
        Current::Unreadable(e) => {
            if dry_run {
                bail!("cannot read pool {id} to diff it: {e:#}");
            }
            eprintln!("warning: cannot read pool {id} to diff it ({e:#}); writing without a diff");
            match if_generation {
                Some(g) => (if_match(g), Some(g)),
                None => (if_none_match_any(), None),
            }
        }
    };
    if dry_run {
        let verb = if matches!(current, Current::Found(_)) {
            "updated"
        } else {
            "created"
        };
        eprintln!("pool {id} would be {verb} (dry run: nothing written)");
        return Ok(true);
    }
    let body = serde_json::to_value(spec)?;
    match client
        .send(
            Method::PUT,
            &pool_path(id)?,
            &[],
            &[precondition],
            Some(&body),
        )
        .await
    {
        Ok(reply) => {
            let g = generation(&reply.body)?;
            if reply.status == StatusCode::CREATED {
                eprintln!("pool {id} created (generation {g})");
            } else if read == Some(g) {
                eprintln!("pool {id} unchanged (generation {g})");
                return Ok(false);
            } else {
                eprintln!("pool {id} updated (generation {g})");
            }
            Ok(true)
        }
        Err(e) if is_status(&e, StatusCode::PRECONDITION_FAILED) => {
            let now = server_error(&e).and_then(|s| s.current_generation());
            let now_text = now.map_or_else(|| "unknown".to_owned(), |g| g.to_string());
            match (read, &current) {
                (Some(read), _) => bail!("{}", stale_message(id, read, now, "applied")),
                (None, Current::Unreadable(_)) => bail!(
                    "pool {id} already exists (current is generation {now_text}) and this token cannot read it to diff; nothing applied: to replace generation {now_text} without a diff, re-apply with --if-generation {now_text}"
                ),
                (None, _) => bail!(
                    "pool {id} was created by someone else meanwhile (current is generation {now_text}); nothing applied: read it again (capstan pools get {id}) and re-apply"
                ),
            }
        }
        Err(e) => Err(e),
    }
}

async fn delete(client: &ApiClient, id: &str, if_generation: Option<i64>) -> anyhow::Result<()> {
    let path = pool_path(id)?;
    let view = client.get(&path, &[]).await?;
    let expected = match if_generation {
        Some(g) => g,
        None => generation(&view)?,
    };
    // Counted before the delete: it wakes the reconcile loop, which may retire an
    // idle worker before a count made afterwards.
    let live = live_workers(client, &path).await;
    match client
        .send(Method::DELETE, &path, &[], &[if_match(expected)], None)
        .await
    {
        Ok(reply) if reply.status == StatusCode::ACCEPTED => {
            match live {
                Ok(n) => eprintln!("pool {id} is being deleted: its {n} live workers drain first"),
                Err(_) => eprintln!("pool {id} is being deleted: its live workers drain first"),
            }
            Ok(())
        }
        Ok(_) => {
            eprintln!("pool {id} deleted");
            Ok(())
        }
        Err(e) if is_status(&e, StatusCode::PRECONDITION_FAILED) => {
            let current = server_error(&e).and_then(|s| s.current_generation());
            match current {
                Some(current) => bail!(
                    "pool {id} changed since generation {expected} (current is {current}); nothing deleted: read it again (capstan pools get {id}) and retry"
                ),
                None => bail!("pool {id} no longer exists"),
            }
        }
        Err(e) => Err(e),
    }
}

/// Workers of the pool at `path` that are not terminated.
async fn live_workers(client: &ApiClient, path: &str) -> anyhow::Result<usize> {
    let workers = client.get_all(&format!("{path}/workers"), &[]).await?;
    Ok(workers
        .iter()
        .filter(|w| show(w.get("state").unwrap_or(&Value::Null)) != "terminated")
        .count())
}

fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = 0;
    for file in files {
        match read_spec(file)? {
            Ok(spec) => eprintln!("{}: ok (pool {})", file.display(), spec.id),
            Err(_) => bad += 1,
        }
    }
    if bad > 0 {
        bail!("{bad} of {} spec files have problems", files.len());
    }
    Ok(())
}
