//! `trellis agent --kubeconfig FILE [--server URL] --node-name NAME`: the node
//! agent, which registers this machine as a Node and runs the pods bound to
//! it as real containers. Needs root. `trellis up` runs one too.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// The agent's settings, shared by `trellis agent` and `trellis up`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentFlags {
    /// The Node's name [default: this machine's hostname].
    #[arg(long)]
    pub node_name: Option<String>,
    /// The node's address: its InternalIP, where the API server reaches the
    /// agent for logs and exec.
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: Ipv4Addr,
    /// Port of the agent's logs/exec server (0 picks a free one).
    #[arg(long, default_value_t = 10250)]
    pub agent_port: u16,
    /// The pods' bridge.
    #[arg(long, default_value = "trellis0")]
    pub bridge: String,
    /// The node's pod CIDR; the bridge takes its first address.
    #[arg(long, default_value = "10.88.0.0/24")]
    pub pod_cidr: String,
    /// First crash back-off (doubles per restart up to --backoff-max), e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// Longest crash back-off, e.g. 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// Registries to pull from over plain HTTP (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    trellis_types::duration::parse(s)
}

impl AgentFlags {
    /// The agent's configuration with data under `data_dir`.
    pub fn config(&self, data_dir: &Path) -> trellis_agent::AgentConfig {
        let name = self.node_name.clone().unwrap_or_else(hostname);
        let mut cfg = trellis_agent::AgentConfig::new(&name, data_dir);
        cfg.node_ip = self.node_ip;
        cfg.port = self.agent_port;
        cfg.bridge = self.bridge.clone();
        cfg.pod_cidr = self.pod_cidr.clone();
        cfg.backoff_base = self.backoff_base;
        cfg.backoff_max = self.backoff_max;
        cfg.insecure_registries = self.insecure_registries.clone();
        cfg
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "trellis-node".into())
}

/// Arguments of `trellis agent`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credentials for the API server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The API server's URL [default: the kubeconfig's].
    #[arg(long)]
    server: Option<String>,
    /// Where images, network state and pods live (`trellis image` uses the
    /// same folder) [default: ~/.local/share/trellis].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where the probe plugin components are [default: $TRELLIS_PLUGIN_DIR, else build/plugins].
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    #[command(flatten)]
    flags: AgentFlags,
}

/// Run the agent until Ctrl-C or SIGTERM; containers keep running.
pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let data_dir = a.data_dir.unwrap_or_else(super::cluster::default_data_dir);
    let plugins = a
        .plugin_dir
        .unwrap_or_else(super::cluster::default_plugin_dir);
    let mut kc = trellis_client::Kubeconfig::load(&a.kubeconfig)?;
    if let Some(s) = a.server {
        kc.server = s;
    }
    let client = trellis_client::Client::new(&kc)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let engine = trellis_plugin_host::PluginEngine::new(trellis_plugin_host::EngineConfig {
            cache_dir: Some(data_dir.join("artifacts")),
            ..Default::default()
        })?;
        let source = trellis_plugin_host::PluginSource::new(engine, Some(plugins));
        run_agent(client, a.flags.config(&data_dir), source, async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Start the agent and run it until `stop`.
pub async fn run_agent(
    client: trellis_client::Client,
    cfg: trellis_agent::AgentConfig,
    source: trellis_plugin_host::PluginSource,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if !is_root() {
        anyhow::bail!("the node agent runs containers and needs root");
    }
    let name = cfg.node_name.clone();
    let agent = trellis_agent::Agent::start(client, cfg, source)
        .await
        .context("starting the node agent")?;
    println!(
        "trellis: node {name} registered; agent serving on port {}",
        agent.port()
    );
    agent.run(stop).await?;
    Ok(())
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
