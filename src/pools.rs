//! `capstan pools ...`: working with pool specs.
//!
//! `validate` checks spec files offline, with exactly the rules the service applies,
//! and prints every problem (one line each, prefixed by the file name) so an operator
//! can fix a spec before it ever reaches the API. `apply` and `list` work on the store
//! directly (`--database-url`, the same setting as `serve`); `apply` is a
//! compare-and-swap on the pool's generation, so it never overwrites a change it did
//! not see.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use capstan_core::PoolSpec;
use store::{Store, StoreError};

use crate::clock::wall_clock;
use crate::config::{DatabaseArg, with_store};

/// Pool subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PoolsCommand {
    /// Check pool spec files (YAML or JSON) and print every problem found.
    Validate {
        /// Spec files to check.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Create a pool from a spec file, or update it if it exists.
    Apply {
        /// The spec (YAML or JSON).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
        /// Update only if the stored generation is still N (default: the generation
        /// read just before the write).
        #[arg(long, value_name = "N")]
        if_generation: Option<i64>,
        #[command(flatten)]
        db: DatabaseArg,
    },
    /// List pools with their generations.
    List {
        #[command(flatten)]
        db: DatabaseArg,
    },
}

/// Runs a pool subcommand.
pub fn run(command: PoolsCommand) -> anyhow::Result<()> {
    match command {
        PoolsCommand::Validate { files } => validate(&files),
        PoolsCommand::Apply {
            file,
            if_generation,
            db,
        } => with_store(db, |store| async move {
            apply(&store, &file, if_generation).await
        }),
        PoolsCommand::List { db } => with_store(db, |store| async move {
            let mut out = String::from("POOL\tPROVIDER\tMIN\tMAX\tGENERATION\tUPDATED\n");
            for p in store.list_pools().await? {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\n",
                    p.spec.id,
                    p.spec.provider,
                    p.spec.min_capacity,
                    p.spec.max_capacity,
                    p.generation,
                    p.updated_at
                ));
            }
            #[allow(clippy::print_stdout)] // the listing is the command's output
            {
                print!("{out}");
            }
            Ok(())
        }),
    }
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

async fn apply(store: &Store, file: &Path, if_generation: Option<i64>) -> anyhow::Result<()> {
    let spec = match read_spec(file)? {
        Ok(spec) => spec,
        Err(n) => bail!("{}: {n} problems; nothing applied", file.display()),
    };
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    let now = wall_clock();
    match store.get_pool(&spec.id).await? {
        None => {
            if let Some(g) = if_generation {
                bail!("--if-generation {g}: pool {} does not exist", spec.id);
            }
            let rec = store.create_pool(&spec, &actor, now).await?;
            eprintln!("pool {} created (generation {})", spec.id, rec.generation);
        }
        Some(current) if current.spec == spec => {
            eprintln!(
                "pool {} unchanged (generation {})",
                spec.id, current.generation
            );
        }
        Some(current) => {
            let expected = if_generation.unwrap_or(current.generation);
            match store
                .update_pool(&spec.id, expected, &spec, &actor, now)
                .await
            {
                Ok(rec) => eprintln!("pool {} updated (generation {})", spec.id, rec.generation),
                Err(e @ StoreError::GenerationConflict { .. }) => {
                    bail!("{e}; nothing applied: read the pool again and re-apply")
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
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
