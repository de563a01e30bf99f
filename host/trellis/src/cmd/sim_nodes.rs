//! `trellis sim nodes --count N`: simulated nodes (like KWOK) that register,
//! heartbeat and run the pods bound to them, until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use trellis_sim::{NodeTemplate, SimNodes};

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    count: usize,
    /// Kubeconfig [default: $KUBECONFIG, else the `trellis up` data dir's].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Name prefix.
    #[arg(long, default_value = "sim-node")]
    prefix: String,
    /// CPU of each node.
    #[arg(long, default_value = "8")]
    cpu: String,
    /// Memory of each node.
    #[arg(long, default_value = "32Gi")]
    memory: String,
    /// Pods per node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Spread over this many zones (topology.kubernetes.io/zone).
    #[arg(long, default_value_t = 3)]
    zones: u32,
    /// Extra label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Taint KEY[=VALUE]:EFFECT (repeatable).
    #[arg(long = "taint")]
    taints: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let kubeconfig = args
        .kubeconfig
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .unwrap_or_else(|| super::cluster::default_data_dir().join("kubeconfig"));
    let labels = args
        .labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--label {l:?} is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let template = NodeTemplate {
        prefix: args.prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        zones: args.zones,
        labels,
        taints: args.taints,
    };
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = trellis_client::Client::from_kubeconfig(&kubeconfig)?;
        let sim = SimNodes::register(&client, &template, args.count).await?;
        sim.heartbeat().await?;
        println!(
            "trellis: {} simulated nodes running ({} ... {})",
            args.count,
            sim.names().first().cloned().unwrap_or_default(),
            sim.names().last().cloned().unwrap_or_default()
        );
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        sim.run(shutdown).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
