//! `capstan machines ...`: the hardware of static pools.
//!
//! An operator registers each machine of a static pool once; capstan mints a secret for
//! it, prints it **once** (on stdout, so a script can capture it and hand it to the
//! machine) and stores only its SHA-256. The machine later authenticates with that
//! secret, compared in constant time.
//!
//! These commands work on the store directly (`--database-url`, the same setting as
//! `serve`), and check that the pool exists and is a `static` pool.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::bail;
use capstan_core::{PoolId, ProviderKind};
use providers::clock::SystemClock;
use providers::static_pool::{Assignment, StaticProvider};
use store::Store;

use crate::config::{DatabaseArg, with_store};
use crate::provider_state::StoreInventory;

/// Static-machine subcommands.
#[derive(Debug, clap::Args)]
pub struct MachinesArgs {
    #[command(flatten)]
    db: DatabaseArg,
    #[command(subcommand)]
    command: MachinesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MachinesCommand {
    /// Register a machine in a static pool; prints its secret once.
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
    /// List the machines of one static pool, or of all.
    List {
        /// Only this pool.
        #[arg(long)]
        pool: Option<String>,
    },
    /// Remove a machine from its pool.
    Remove {
        /// Machine name.
        name: String,
    },
}

/// Runs a machines subcommand.
pub fn run(args: MachinesArgs) -> anyhow::Result<()> {
    let command = args.command;
    with_store(
        args.db,
        |store| async move { dispatch(&store, command).await },
    )
}

fn parse_pool(pool: &str) -> anyhow::Result<PoolId> {
    PoolId::new(pool).map_err(|e| anyhow::anyhow!("--pool: {e}"))
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

async fn dispatch(store: &Store, command: MachinesCommand) -> anyhow::Result<()> {
    let provider = StaticProvider::new(
        Arc::new(StoreInventory(store.clone())),
        Arc::new(SystemClock),
    );
    match command {
        MachinesCommand::Register {
            pool,
            name,
            capacity,
            labels,
        } => {
            let pool = parse_pool(&pool)?;
            let labels = parse_labels(&labels)?;
            let Some(record) = store.get_pool(&pool).await? else {
                bail!("--pool: no pool {pool}; create it first");
            };
            if record.spec.provider != ProviderKind::Static {
                bail!(
                    "--pool: pool {pool} has provider {}; machines can only be registered in a static pool",
                    record.spec.provider
                );
            }
            let (machine, secret) = provider
                .register_machine(pool, &name, capacity, labels)
                .await?;
            eprintln!(
                "registered {} in {} with {} slots; its secret follows, shown this once (only a hash is kept):",
                machine.name, machine.pool_id, machine.capacity
            );
            #[allow(clippy::print_stdout)] // the secret is the command's output
            {
                println!("{}", secret.expose());
            }
        }
        MachinesCommand::List { pool } => {
            let pool = pool.as_deref().map(parse_pool).transpose()?;
            let mut out = String::from("NAME\tPOOL\tSLOTS\tASSIGNMENT\tLABELS\n");
            for m in provider.machines(pool.as_ref()).await? {
                let assignment = match &m.assignment {
                    Assignment::Idle => "idle".to_owned(),
                    Assignment::Wanted { worker_id, .. } => format!("wanted by {worker_id}"),
                    Assignment::Draining { worker_id, .. } => format!("draining for {worker_id}"),
                };
                let labels: Vec<String> =
                    m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    m.name,
                    m.pool_id,
                    m.capacity,
                    assignment,
                    labels.join(",")
                ));
            }
            #[allow(clippy::print_stdout)] // the listing is the command's output
            {
                print!("{out}");
            }
        }
        MachinesCommand::Remove { name } => {
            provider.remove_machine(&name).await?;
            eprintln!("removed {name}");
        }
    }
    Ok(())
}
