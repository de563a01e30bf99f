//! `trellis up [--data-dir DIR] [--listen ADDR:PORT]`: a single-node cluster on
//! the embedded store: the API server, the scheduler and, as root, the node
//! agent and the controller runtime with the default controllers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where state, the token file and the kubeconfig live [default: ~/.local/share/trellis].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the API server (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Where the plugin components are [default: $TRELLIS_PLUGIN_DIR, else build/plugins].
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Do not run the node agent (a control plane without a node).
    #[arg(long)]
    no_agent: bool,
    /// Do not run the controller runtime (run `trellis controllers` beside it instead).
    #[arg(long)]
    no_controllers: bool,
    #[command(flatten)]
    agent: super::agent::AgentFlags,
    #[command(flatten)]
    services: super::cluster::ServiceFlags,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args
        .data_dir
        .unwrap_or_else(super::cluster::default_data_dir);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store = trellis_store::EmbeddedStore::open(dir.join("store"))
            .await
            .with_context(|| format!("opening the store in {}", dir.join("store").display()))?;
        let plugins = args
            .plugin_dir
            .unwrap_or_else(super::cluster::default_plugin_dir);
        super::cluster::run_with(
            Arc::new(store),
            &dir,
            args.listen,
            "cluster (embedded store)",
            Some(&plugins),
            &args.services,
            super::cluster::Runtimes {
                scheduler: true,
                controllers: !args.no_controllers,
                agent: (!args.no_agent).then(|| args.agent.config(&dir)),
            },
        )
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
