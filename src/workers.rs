//! `capstan workers ...`: looking at a pool's workers and draining one, through the
//! server (see [`crate::client`]).

use std::process::ExitCode;

use reqwest::Method;
use serde_json::Value;

use crate::client::{ClientArgs, pool_path, segment};
use crate::output::{self, OutputArg, cell, item_list, items, table};

/// `capstan workers`: the connection flags and a subcommand.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    conn: ClientArgs,
    #[command(subcommand)]
    command: WorkersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum WorkersCommand {
    /// List the workers of a pool, from the server.
    List {
        /// Pool id.
        #[arg(long)]
        pool: String,
        /// Only workers in these states (requested, booting, ready, draining,
        /// terminating, terminated, failed); comma-separated or repeated.
        #[arg(long, value_delimiter = ',', value_name = "STATE")]
        state: Vec<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one worker, from the server.
    Get {
        /// Worker id.
        id: String,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Ask the server to drain a worker: it finishes its tasks and takes no new ones.
    Drain {
        /// Worker id.
        id: String,
    },
}

/// Runs a workers subcommand.
pub fn run(args: WorkersArgs) -> anyhow::Result<ExitCode> {
    let conn = args.conn;
    conn.run(|client| async move {
        match args.command {
            WorkersCommand::List {
                pool,
                state,
                output,
            } => {
                let mut query = Vec::new();
                if !state.is_empty() {
                    query.push(("state", state.join(",")));
                }
                let all = client
                    .get_all(&format!("{}/workers", pool_path(&pool)?), &query)
                    .await?;
                output::print(output.format, &item_list(all), |b| worker_table(items(b)))?;
            }
            WorkersCommand::Get { id, output } => {
                let w = client
                    .get(&format!("/v1/workers/{}", segment("worker id", &id)?), &[])
                    .await?;
                output::print(output.format, &w, |w| worker_table(std::slice::from_ref(w)))?;
            }
            WorkersCommand::Drain { id } => {
                let path = format!("/v1/workers/{}/drain", segment("worker id", &id)?);
                let reply = client.send(Method::POST, &path, &[], &[], None).await?;
                eprintln!(
                    "worker {id} is {}: it finishes its tasks and takes no new ones",
                    cell(&reply.body, "state")
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn worker_table(workers: &[Value]) -> comfy_table::Table {
    let mut t = table(&[
        "ID",
        "POOL",
        "LAUNCH CONFIG",
        "INSTANCE",
        "STATE",
        "BUSY/SLOTS",
        "STATE SINCE",
        "LAST HEARTBEAT",
        "FAILURE",
    ]);
    for w in workers {
        t.add_row(vec![
            cell(w, "id"),
            cell(w, "pool_id"),
            cell(w, "launch_config_id"),
            cell(w, "instance_id"),
            cell(w, "state"),
            format!("{}/{}", cell(w, "busy_slots"), cell(w, "capacity")),
            cell(w, "state_changed_at"),
            cell(w, "last_heartbeat_at"),
            cell(w, "failure"),
        ]);
    }
    t
}
