//! `trellis server --store etcd://HOST:PORT[,...] --data-dir DIR --listen ADDR:PORT
//! [--plugin-dir DIR]`: the API server on etcd (or on the embedded store with
//! `--store embedded`), with the admission chain when given built plugins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use trellis_store::Store;

/// Arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `etcd://HOST:PORT[,HOST:PORT...]` or `embedded`.
    #[arg(long)]
    store: String,
    /// Where the token file and the kubeconfig live (and the embedded store).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the API server (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Built plugin components: run admission chains (`source.builtin`
    /// names a component here) and create the default chain if absent.
    #[arg(long)]
    plugin_dir: Option<PathBuf>,
    #[command(flatten)]
    services: super::cluster::ServiceFlags,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let store: Arc<dyn Store> = if args.store == "embedded" {
            Arc::new(trellis_store::EmbeddedStore::open(args.data_dir.join("store")).await?)
        } else if let Some(list) = args.store.strip_prefix("etcd://") {
            let endpoints: Vec<String> = list
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| format!("http://{e}"))
                .collect();
            if endpoints.is_empty() {
                bail!("--store etcd:// needs at least one HOST:PORT");
            }
            Arc::new(
                trellis_store::EtcdStore::connect(&endpoints)
                    .await
                    .with_context(|| format!("connecting to etcd at {list}"))?,
            )
        } else {
            bail!(
                "--store must be etcd://HOST:PORT[,...] or embedded, not {:?}",
                args.store
            );
        };
        super::cluster::run(
            store,
            &args.data_dir,
            args.listen,
            "API server",
            args.plugin_dir.as_deref(),
            &args.services,
        )
        .await
    })?;
    Ok(ExitCode::SUCCESS)
}
