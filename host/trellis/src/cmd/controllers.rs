//! `trellis controllers [--kubeconfig F] [--plugin-dir DIR]`: the controller
//! runtime on its own, against any Trellis API server (as
//! kube-controller-manager runs beside kube-apiserver): creates the default
//! controllers' `Plugin` objects when missing and runs every controller
//! `Plugin` until Ctrl-C or SIGTERM. `trellis up` runs the same in-process.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig of an administrator (it impersonates each controller)
    /// [default: $KUBECONFIG, else the `trellis up` data dir's].
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Where the plugin components are [default: $TRELLIS_PLUGIN_DIR, else build/plugins].
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    /// Where compiled components are cached [default: none, compile on each start].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// How often each controller's state is written to its Plugin status.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    status_interval: std::time::Duration,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    trellis_types::duration::parse(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let kubeconfig = args
        .kubeconfig
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .unwrap_or_else(|| super::cluster::default_data_dir().join("kubeconfig"));
    let plugin_dir = args
        .plugin_dir
        .unwrap_or_else(super::cluster::default_plugin_dir);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let engine = trellis_plugin_host::PluginEngine::new(trellis_plugin_host::EngineConfig {
            cache_dir: args.cache_dir,
            ..Default::default()
        })?;
        let source = trellis_plugin_host::PluginSource::new(engine, Some(plugin_dir.clone()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            super::cluster::wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        println!(
            "trellis: controller runtime against {}",
            kubeconfig.display()
        );
        let options = trellis_controllers::Options {
            status_interval: args.status_interval,
            ..Default::default()
        };
        super::cluster::run_controllers(kubeconfig, plugin_dir, source, options, stop_rx).await
    })?;
    println!("trellis: stopped");
    Ok(ExitCode::SUCCESS)
}
