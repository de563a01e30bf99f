//! The node agent: registers its Node, heartbeats a Lease, and runs the pods
//! bound to it as real OCI containers, one shim process per pod
//! (`trellis_runtime::shim`), with a network namespace on the node's bridge
//! (`trellis_network`), root filesystems from the local image store
//! (`trellis_image`), volumes and environment as kubelet makes them, and
//! probes run by probe plugins. It serves logs and exec to the API server.
//!
//! Layout of the data directory: `images/` (the image store, shared with
//! `trellis image`), `pods/<uid>/` (one per pod: `pod.json`, `logs/`,
//! `volumes/`, `containers/<id>/` root filesystems, staged by the agent and
//! mounted by the pod's shim in its own mount namespace, so that the node's
//! mount table does not grow with its containers), and `run/`, a tmpfs the
//! agent mounts for what lives only as long as the containers:
//! `run/pods/<uid>/` holds the pod's shim (socket, state, libcontainer's
//! state), `bundles/<id>/`, `etc-hosts` and `resolv.conf`; `run/network/`
//! the pods' addresses and network namespace files (as `/run/netns` holds
//! iproute2's). These files come and go with every pod; on a tmpfs they cost
//! no disk inode allocation (which, on ext4 without a journal, scans past
//! every recently freed inode) and vanish on reboot with the containers and
//! namespaces they describe. What must stay on disk spreads out instead:
//! `pods/` is a top directory for ext4's allocator (`chattr +T`), so each
//! pod's tree lands away from the trees of the pods just removed.

pub mod env;
mod events;
mod node;
mod pod;
pub mod prober;
pub mod server;
mod services;
mod sources;
pub mod volumes;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use trellis_client::Client;
use trellis_plugin_host::PluginSource;

pub use node::Capacity;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where images, network state and pods live.
    pub data_dir: PathBuf,
    /// The node's address: the Node's InternalIP, where the agent serves logs
    /// and exec, and the host IP of its pods.
    pub node_ip: Ipv4Addr,
    /// Port of the logs/exec server (kubelet's 10250; 0 picks a free one).
    pub port: u16,
    /// The pods' bridge.
    pub bridge: String,
    /// The node's pod CIDR (the first address is the bridge's).
    pub pod_cidr: String,
    /// Extra Node labels.
    pub labels: Vec<(String, String)>,
    /// Pods this node takes.
    pub max_pods: u64,
    /// The program and arguments of a shim: the agent runs it with
    /// `--factory` appended, and forks pods' shims from that (see
    /// `trellis_runtime::shim::ShimFactory`), or with `--dir DIR` when no
    /// factory runs: `trellis-shim` beside this executable, or else this
    /// executable and `["shim"]`.
    pub shim_command: (PathBuf, Vec<String>),
    /// First crash back-off (kubelet: 10 s); it doubles per restart.
    pub backoff_base: Duration,
    /// Longest crash back-off (kubelet: 5 min).
    pub backoff_max: Duration,
    /// How often the Lease and Node conditions are posted (kubelet: 10 s).
    pub heartbeat: Duration,
    /// How often containers' states are relisted (kubelet's PLEG: 1 s).
    pub relist: Duration,
    /// Registries pulled from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Bearer token the API server must present to the logs/exec server.
    pub server_token: Option<String>,
}

impl AgentConfig {
    /// kubelet's defaults for `node_name` with data under `data_dir`.
    pub fn new(node_name: &str, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_name: node_name.to_string(),
            data_dir: data_dir.into(),
            node_ip: Ipv4Addr::LOCALHOST,
            port: 10250,
            bridge: "trellis0".into(),
            pod_cidr: "10.88.0.0/24".into(),
            labels: Vec::new(),
            max_pods: 110,
            shim_command: default_shim_command(),
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            heartbeat: Duration::from_secs(10),
            relist: Duration::from_secs(1),
            insecure_registries: Vec::new(),
            server_token: None,
        }
    }
}

/// `trellis-shim` beside the running executable when it is there (the
/// small program: each shim and each container's set-up processes are forks
/// of it), else `trellis shim`.
fn default_shim_command() -> (PathBuf, Vec<String>) {
    let exe = std::env::current_exe().unwrap_or_else(|_| "trellis".into());
    let small = exe.with_file_name("trellis-shim");
    if small.is_file() {
        (small, Vec::new())
    } else {
        (exe, vec!["shim".into()])
    }
}

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The image store could not be opened.
    #[error("image store: {0}")]
    Images(#[from] trellis_image::ImageError),
    /// The pod network could not be set up.
    #[error("pod network: {0}")]
    Network(#[from] trellis_network::NetworkError),
    /// The default probe plugins could not be loaded.
    #[error("probe plugins: {0}")]
    Probes(String),
    /// The API server refused or could not be reached.
    #[error("API server: {0}")]
    Api(#[from] trellis_client::ClientError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// A running agent.
pub struct Agent {
    ctx: Arc<pod::Ctx>,
    listener: tokio::net::TcpListener,
}

impl Agent {
    /// Open the image store and the network, load the probe plugins from
    /// `plugins` (builtin `probe-http-get`, `probe-tcp-socket`, `probe-exec`),
    /// bind the server and register the Node.
    pub async fn start(
        client: Client,
        cfg: AgentConfig,
        plugins: PluginSource,
    ) -> Result<Self, AgentError> {
        let pods = pods_dir(&cfg.data_dir);
        std::fs::create_dir_all(&pods)
            .map_err(|e| AgentError::Other(format!("{}: {e}", cfg.data_dir.display())))?;
        spread_subdirectories(&pods);
        mount_run_dir(&run_dir(&cfg.data_dir))?;
        let images = trellis_image::ImageStore::open(&cfg.data_dir.join("images"))?;
        let net_cfg = trellis_network::NetworkConfig {
            bridge: cfg.bridge.clone(),
            pod_cidr: cfg.pod_cidr.clone(),
            state_dir: network_dir(&cfg.data_dir),
            mtu: None,
        };
        let network =
            tokio::task::spawn_blocking(move || trellis_network::PodNetwork::open(net_cfg))
                .await
                .map_err(|e| AgentError::Other(e.to_string()))??;
        let listener = tokio::net::TcpListener::bind((cfg.node_ip, cfg.port))
            .await
            .map_err(|e| AgentError::Other(format!("binding {}:{}: {e}", cfg.node_ip, cfg.port)))?;
        let mut cfg = cfg;
        cfg.port = listener
            .local_addr()
            .map_err(|e| AgentError::Other(e.to_string()))?
            .port();
        let capacity = Capacity::of_machine(&cfg.data_dir, cfg.max_pods);
        let ctx = pod::Ctx::new(client.clone(), cfg, images, network, capacity, plugins)?;
        node::register(
            &client,
            &node::node_object(&ctx.cfg, &ctx.capacity, ctx.node_images()),
        )
        .await?;
        Ok(Self { ctx, listener })
    }

    /// The port the logs/exec server listens on.
    pub fn port(&self) -> u16 {
        self.ctx.cfg.port
    }

    /// Heartbeat, serve and run pods until `shutdown` resolves. Containers
    /// keep running when the agent stops; the next agent re-adopts them.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let ctx = self.ctx.clone();
        let hb_ctx = ctx.clone();
        let heartbeat = tokio::spawn(node::heartbeat(
            ctx.client.clone(),
            ctx.cfg.node_name.clone(),
            ctx.cfg.heartbeat,
            move || hb_ctx.node_images(),
        ));
        let services: Arc<dyn server::NodeServices> = Arc::new(services::Services(ctx.clone()));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            self.listener,
            services,
            ctx.cfg.server_token.clone(),
            async move {
                let _ = stop_rx.await;
            },
        ));
        let result = tokio::select! {
            r = pod::Manager::new(ctx.clone()).run() => r,
            _ = shutdown => Ok(()),
        };
        heartbeat.abort();
        let _ = stop_tx.send(());
        let _ = server.await;
        result
    }
}

/// The name of the Node's image list entry for `image`.
pub(crate) fn node_image(image: &trellis_image::Image) -> Value {
    let mut names = image.repo_digests();
    names.extend(image.references.iter().cloned());
    serde_json::json!({"names": names, "sizeBytes": image.size})
}

/// The tmpfs of the pods' runtime state under `data_dir` (see the crate's
/// documentation).
pub(crate) fn run_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("run")
}

/// Where each pod has its directory (`pods/<uid>`).
pub(crate) fn pods_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("pods")
}

/// The pod network's state: addresses and namespace files (`run/network`).
fn network_dir(data_dir: &Path) -> PathBuf {
    run_dir(data_dir).join("network")
}

/// Where each pod has its runtime-state directory (`run/pods/<uid>`).
pub(crate) fn run_pods_dir(data_dir: &Path) -> PathBuf {
    run_dir(data_dir).join("pods")
}

/// Mark `dir` as the top of unrelated directory trees (`chattr +T`), so that
/// ext4 places each new subdirectory, and with it what is made inside, in a
/// block group of its own choosing rather than beside its siblings. Where
/// the filesystem has no such flag, nothing changes.
///
/// Each pod's directory is such a tree, made and removed with the pod. Near
/// one another, the inodes of pods just removed sit in front of every new
/// one, and ext4 without a journal scans past each inode freed in the last
/// minute before it takes an older one: with pods coming and going, every
/// inode a pod makes (its directories, logs, root filesystem layers) then
/// costs a scan of the last minute's pods.
fn spread_subdirectories(dir: &Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(d) = std::fs::File::open(dir) else {
        return;
    };
    let marked = ioctl_getflags(&d).and_then(|flags| {
        if flags.contains(IFlags::TOPDIR) {
            Ok(())
        } else {
            ioctl_setflags(&d, flags | IFlags::TOPDIR)
        }
    });
    if let Err(e) = marked {
        tracing::debug!(dir = %dir.display(), error = %e, "cannot mark the pods' directory as a top directory");
    }
}

/// Mount the runtime-state tmpfs on `dir` unless it is mounted (an agent
/// restarting finds its shims there). Where mounting is not allowed (no
/// root), the directory is used as it is.
fn mount_run_dir(dir: &Path) -> Result<(), AgentError> {
    use rustix::mount::{mount, MountFlags};
    let failed = |e: std::io::Error| AgentError::Other(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(failed)?;
    if trellis_image::is_mount_point(dir).map_err(failed)? {
        return Ok(());
    }
    let flags = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    if let Err(e) = mount("tmpfs", dir, "tmpfs", flags, c"size=64m,mode=0700") {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot mount the runtime-state tmpfs; runtime state stays on disk");
    }
    Ok(())
}

/// The uids of the pods an agent keeps anything of under `data_dir` (a pod
/// directory or a runtime-state directory). Removing those directories is
/// the last step of a pod's teardown, so none left means every deleted pod
/// is torn down.
pub fn pods_with_state(data_dir: &Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    let mut uids = std::collections::BTreeSet::new();
    for parent in [pods_dir(data_dir), run_pods_dir(data_dir)] {
        if let Ok(entries) = std::fs::read_dir(parent) {
            uids.extend(entries.flatten().map(|e| e.file_name()));
        }
    }
    uids
}

/// Remove everything an agent left on this node under `cfg.data_dir`: each
/// pod's containers, shim, root filesystems, volumes and network namespace,
/// then the bridge. Blocking. For `trellis agent --reset` and for tests,
/// which must not leave containers behind.
pub fn reset(cfg: &AgentConfig) -> Result<(), AgentError> {
    let images = trellis_image::ImageStore::open(&cfg.data_dir.join("images"))?;
    let run = run_dir(&cfg.data_dir);
    let (pods, run_pods) = (pods_dir(&cfg.data_dir), run_pods_dir(&cfg.data_dir));
    for uid in pods_with_state(&cfg.data_dir) {
        let dir = pods.join(&uid);
        pod::release_pod(&images, &dir, &run_pods.join(&uid));
        std::fs::remove_dir_all(&dir).ok();
    }
    // The network before the tmpfs its state lives on.
    let net = trellis_network::PodNetwork::open(trellis_network::NetworkConfig {
        bridge: cfg.bridge.clone(),
        pod_cidr: cfg.pod_cidr.clone(),
        state_dir: network_dir(&cfg.data_dir),
        mtu: None,
    })?;
    net.destroy()?;
    if trellis_image::is_mount_point(&run).unwrap_or(false) {
        rustix::mount::unmount(&run, rustix::mount::UnmountFlags::DETACH).ok();
    }
    std::fs::remove_dir_all(&run).ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pods_directory_spreads_its_subdirectories() {
        let tmp = tempfile::tempdir().unwrap();
        let pods = tmp.path().join("pods");
        std::fs::create_dir(&pods).unwrap();
        let flags = || rustix::fs::ioctl_getflags(std::fs::File::open(&pods).unwrap());
        let Ok(before) = flags() else {
            // CI's disk is ext4, which has the flag.
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{} has no inode flags",
                tmp.path().display()
            );
            spread_subdirectories(&pods);
            return;
        };
        assert!(!before.contains(rustix::fs::IFlags::TOPDIR));
        spread_subdirectories(&pods);
        let after = flags().unwrap();
        assert!(after.contains(rustix::fs::IFlags::TOPDIR), "{after:?}");
        assert_eq!(after - rustix::fs::IFlags::TOPDIR, before);
        // Twice is the same.
        spread_subdirectories(&pods);
        assert_eq!(flags().unwrap(), after);
    }
}
