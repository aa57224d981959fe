//! `capstan machines ...`: the hardware of static pools, through the server (see
//! [`crate::client`]).
//!
//! An operator registers each machine of a static pool once; the server mints a
//! secret for it, which this command prints **once** on stdout (so a script can
//! capture it and hand it to the machine) with the explanation on stderr. The server
//! keeps only its hash, and owns the rules: the pool must exist and be `static`, names
//! are unique across static pools.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{ClientArgs, pool_path, segment};
use crate::output::{self, OutputArg, cell, items, table};

/// `capstan machines`: the connection flags and a subcommand.
#[derive(Debug, clap::Args)]
pub struct MachinesArgs {
    #[command(flatten)]
    conn: ClientArgs,
    #[command(subcommand)]
    command: MachinesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MachinesCommand {
    /// Register a machine in a static pool on the server; prints its secret once.
    Register {
        /// The static pool.
        #[arg(long)]
        pool: String,
        /// Machine name, unique across static pools (1-63 of a-z 0-9 - _ .).
        #[arg(long)]
        name: String,
        /// Task slots the machine offers.
        #[arg(long)]
        capacity: u32,
        /// A label launch configs can select on, as KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
    },
    /// List the machines of a static pool, from the server.
    List {
        /// The static pool.
        #[arg(long)]
        pool: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Remove a machine from its pool, on the server.
    Remove {
        /// Machine name.
        name: String,
    },
}

/// Runs a machines subcommand.
pub fn run(args: MachinesArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn;
    // Checked before connecting, so a typo costs no round trip.
    if let MachinesCommand::Register { labels, .. } = &args.command {
        parse_labels(labels)?;
    }
    conn.run(|client| async move {
        match args.command {
            MachinesCommand::Register {
                pool,
                name,
                capacity,
                labels,
            } => {
                let body = json!({
                    "name": name,
                    "capacity": capacity,
                    "labels": parse_labels(&labels)?,
                });
                let reply = client
                    .send(
                        Method::POST,
                        &format!("{}/machines", pool_path(&pool)?),
                        &[],
                        &[],
                        Some(&body),
                    )
                    .await?;
                let machine = reply.body.get("machine").unwrap_or(&Value::Null);
                let Some(secret) = reply.body.get("secret").and_then(Value::as_str) else {
                    bail!("the server registered {name} but sent no secret");
                };
                eprintln!(
                    "registered {} in {} with {} slots; its secret follows, shown this once (only a hash is kept):",
                    cell(machine, "name"),
                    cell(machine, "pool_id"),
                    cell(machine, "capacity")
                );
                #[allow(clippy::print_stdout)] // the secret is the command's output
                {
                    println!("{secret}");
                }
            }
            MachinesCommand::List { pool, output } => {
                let body = client
                    .get(&format!("{}/machines", pool_path(&pool)?), &[])
                    .await?;
                output::print(output.format, &body, |b| {
                    let mut t = table(&["NAME", "POOL", "SLOTS", "ASSIGNMENT", "WORKER", "LABELS"]);
                    for m in items(b) {
                        let labels: Vec<String> = m
                            .get("labels")
                            .and_then(Value::as_object)
                            .map(|l| {
                                l.iter()
                                    .map(|(k, v)| format!("{k}={}", output::show(v)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        t.add_row(vec![
                            cell(m, "name"),
                            cell(m, "pool_id"),
                            cell(m, "capacity"),
                            cell(m, "assignment"),
                            cell(m, "worker_id"),
                            labels.join(","),
                        ]);
                    }
                    t
                })?;
            }
            MachinesCommand::Remove { name } => {
                let path = format!("/v1/machines/{}", segment("machine name", &name)?);
                client.send(Method::DELETE, &path, &[], &[], None).await?;
                eprintln!("removed {name}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => bail!("--label: expected KEY=VALUE, got {l:?}"),
        })
        .collect()
}
