//! The command line.

mod agent;
mod cluster;
mod controllers;
mod image;
mod plugin_inspect;
mod plugin_test;
mod server;
mod shim;
mod sim_nodes;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Trellis: a Kubernetes-compatible orchestrator whose policy runs as Wasm components.
#[derive(Debug, Parser)]
#[command(name = "trellis", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a single-node cluster on the embedded store.
    Up(up::Args),
    /// Run the node agent: register this machine as a Node and run its pods.
    Agent(agent::Args),
    /// Run the API server on etcd (or the embedded store).
    Server(server::Args),
    /// Run the controller runtime against an API server.
    Controllers(controllers::Args),
    /// The node's image store: import, pull, push, list, remove.
    Image(image::Args),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// The per-pod container shim (started by the agent).
    #[command(hide = true)]
    Shim(shim::Args),
    /// Simulated cluster members.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Debug, Subcommand)]
enum SimCommand {
    /// Simulated nodes (like KWOK) that heartbeat and run the pods bound to them.
    Nodes(sim_nodes::Args),
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Print a component's role, contract version, exports and imports.
    Inspect(plugin_inspect::Args),
    /// Run a scheduler plugin against fixtures, without a cluster.
    Test(plugin_test::Args),
}

/// Run the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(a) => up::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Server(a) => server::run(a),
        Command::Controllers(a) => controllers::run(a),
        Command::Sim(SimCommand::Nodes(a)) => sim_nodes::run(a),
        Command::Shim(a) => shim::run(a),
        Command::Image(a) => image::run(a),
        Command::Plugin(PluginCommand::Inspect(a)) => plugin_inspect::run(a),
        Command::Plugin(PluginCommand::Test(a)) => plugin_test::run(a),
    }
}
