//! `capstan`: the command-line entry point.
//!
//! A thin layer: it parses arguments, loads configuration and wires the library crates
//! together. `serve` runs the long-lived control plane; `demo` runs it in-process on a
//! simulated cloud with live demand; `simulate` replays job traces offline against the
//! same predictor and planner. The operator commands (`pools`,
//! `workers`, `machines`, `clients`) are clients of the server's HTTP API
//! ([`client`]), except `pools validate` (offline) and `clients create
//! --database-url` (store-direct, to bootstrap the first admin).

mod agent;
mod client;
mod clients;
mod clock;
mod config;
mod demo;
mod machines;
mod output;
mod pools;
mod providers;
mod serve;
mod simulate;
mod workers;

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
    /// Work with pools: validate spec files offline; apply, show and delete them
    /// through the server.
    Pools(pools::PoolsArgs),
    /// Look at a pool's workers and drain them, through the server.
    Workers(workers::WorkersArgs),
    /// Register and list the machines of static (operator-owned) pools, through the
    /// server.
    Machines(machines::MachinesArgs),
    /// Manage API clients and their tokens, through the server (or on the store
    /// directly to bootstrap the first admin).
    Clients(clients::ClientsArgs),
    /// Run on a worker machine: register with capstan, heartbeat, run the real worker
    /// as a child (`capstan agent --bootstrap ec2 -- generic-worker run ...`).
    Agent(agent::AgentArgs),
    /// Replay a job trace against a scaling policy and compare with the oracle bound.
    Simulate(Box<simulate::SimulateArgs>),
    /// Run capstan on a simulated cloud with live demand: the quickest way to see it
    /// work.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Pools(args) => pools::run(args),
        Command::Workers(args) => workers::run(args),
        Command::Machines(args) => machines::run(args),
        Command::Clients(args) => clients::run(args),
        Command::Simulate(args) => simulate::run(*args).map(|()| ExitCode::SUCCESS),
        Command::Agent(args) => agent::run(args),
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
