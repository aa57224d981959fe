//! `capstan pools ...`: working with pool specs.
//!
//! `validate` checks spec files offline, with exactly the rules the service applies,
//! and prints every problem (one line each, prefixed by the file name) so an operator
//! can fix a spec before it ever reaches the API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use capstan_core::PoolSpec;

/// Pool subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PoolsCommand {
    /// Check pool spec files (YAML or JSON) and print every problem found.
    Validate {
        /// Spec files to check.
        #[arg(short = 'f', long = "file", value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs a pool subcommand.
pub fn run(command: PoolsCommand) -> anyhow::Result<()> {
    match command {
        PoolsCommand::Validate { files } => validate(&files),
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<()> {
    let mut bad = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let parsed = if file.extension().is_some_and(|e| e == "json") {
            PoolSpec::from_json(&text)
        } else {
            PoolSpec::from_yaml(&text)
        };
        match parsed {
            Ok(spec) => eprintln!("{}: ok (pool {})", file.display(), spec.id),
            Err(errors) => {
                bad += 1;
                for e in &errors.0 {
                    eprintln!("{}: {e}", file.display());
                }
            }
        }
    }
    if bad > 0 {
        bail!("{bad} of {} spec files have problems", files.len());
    }
    Ok(())
}
