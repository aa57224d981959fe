//! `capstan`: the command-line entry point.
//!
//! A thin layer: it parses arguments, loads configuration and wires the library crates
//! together. `serve` runs the long-lived control plane; `simulate` replays job traces
//! offline against the same predictor and planner.

mod clock;
mod config;
mod machines;
mod pools;
mod serve;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Cloud-agnostic provisioner control plane for fleets of task workers.
#[derive(Debug, Parser)]
#[command(name = "capstan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane service (API, reconciler) until SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Work with pool specs.
    #[command(subcommand)]
    Pools(pools::PoolsCommand),
    /// Register and list the machines of static (operator-owned) pools.
    Machines(machines::MachinesArgs),
    /// Replay a job trace against a scaling policy and compare with the oracle bound.
    Simulate(simulate::SimulateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Pools(command) => pools::run(command),
        Command::Machines(args) => machines::run(args),
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
