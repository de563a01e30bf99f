//! What `trellis up` and `trellis server` share: the data directory (token
//! file, kubeconfig), the listener, the API server, and a clean stop on Ctrl-C
//! or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use trellis_api::auth::TokenAuthenticator;
use trellis_api::{ApiConfig, ApiServer};
use trellis_store::Store;

/// The default data directory: `$XDG_DATA_HOME/trellis` or `~/.local/share/trellis`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("trellis")
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The admin token: read from `DIR/tokens.csv`, made on first start.
fn admin_token(dir: &Path) -> anyhow::Result<(String, TokenAuthenticator)> {
    let file = dir.join("tokens.csv");
    if !file.exists() {
        let token = uuid::Uuid::new_v4().simple().to_string();
        write_private(&file, &format!("{token},admin,admin,\"system:masters\"\n"))?;
    }
    let auth = TokenAuthenticator::from_file(&file)?;
    let text = std::fs::read_to_string(&file)?;
    let token = text
        .lines()
        .find(|l| l.contains(",admin,"))
        .and_then(|l| l.split(',').next())
        .context("tokens.csv has no admin token")?
        .to_string();
    Ok((token, auth))
}

fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: trellis\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: trellis\n  context:\n    cluster: trellis\n    user: admin\n    namespace: default\ncurrent-context: trellis\n"
    )
}

/// Upstream's default scheduler plugins, in chain order, with their score weights.
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("node-name", 0),
    ("node-unschedulable", 0),
    ("taint-toleration", 3),
    ("node-affinity", 2),
    ("node-resources-fit", 1),
    ("node-resources-balanced-allocation", 1),
    ("pod-topology-spread", 2),
    ("inter-pod-affinity", 2),
    ("image-locality", 1),
];

/// Where built plugin components are: `TRELLIS_PLUGIN_DIR`, else `build/plugins`.
pub fn default_plugin_dir() -> PathBuf {
    std::env::var_os("TRELLIS_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("build/plugins"))
}

/// Make sure a `Plugin` object exists for each default plugin found in `dir`
/// and that the `default-scheduler` profile exists; objects already there
/// (perhaps edited by the operator) are left alone.
async fn bootstrap_profiles(client: &trellis_client::Client, dir: &Path) -> anyhow::Result<()> {
    use serde_json::json;
    let plugins = trellis_client::Resource::new("trellis.dev", "v1alpha1", "plugins", false);
    let profiles =
        trellis_client::Resource::new("trellis.dev", "v1alpha1", "schedulerprofiles", false);
    let mut entries = Vec::new();
    for (name, weight) in DEFAULT_PLUGINS {
        if !dir.join(format!("{name}.wasm")).exists() {
            tracing::warn!(plugin = name, dir = %dir.display(), "default scheduler plugin not built; the default profile runs without it (run `cargo xtask plugins`)");
            continue;
        }
        let obj = json!({
            "apiVersion": "trellis.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": name, "labels": {"trellis.dev/default": "true"}},
            "spec": {"role": "scheduler", "source": {"builtin": name}},
        });
        create_if_absent(client, &plugins, &obj).await?;
        entries.push(json!({"name": name, "weight": weight}));
    }
    let profile = json!({
        "apiVersion": "trellis.dev/v1alpha1", "kind": "SchedulerProfile",
        "metadata": {"name": "default-scheduler"},
        "spec": {"percentageOfNodesToScore": 0, "plugins": entries},
    });
    create_if_absent(client, &profiles, &profile).await?;
    println!(
        "trellis: scheduler profile default-scheduler: {} default plugins from {}",
        entries.len(),
        dir.display()
    );
    Ok(())
}

/// Upstream's in-tree admission plugins, as Wasm plugins, with their grants
/// and rules: LimitRange defaults and checks pods and claims; ResourceQuota
/// checks and charges every create and update.
fn default_admission() -> (Vec<serde_json::Value>, serde_json::Value) {
    use serde_json::json;
    let plugins = vec![
        json!({
            "apiVersion": "trellis.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "limit-range", "labels": {"trellis.dev/default": "true"}},
            "spec": {"role": "admission", "source": {"builtin": "limit-range"},
                     "grants": {"capabilities": ["objects-read"], "read": [{"group": "", "kind": "LimitRange"}]}},
        }),
        json!({
            "apiVersion": "trellis.dev/v1alpha1", "kind": "Plugin",
            "metadata": {"name": "resource-quota", "labels": {"trellis.dev/default": "true"}},
            "spec": {"role": "admission", "source": {"builtin": "resource-quota"},
                     "grants": {"capabilities": ["objects-read", "objects-write"],
                                "read": [{"group": "", "kind": "ResourceQuota"}],
                                "write": [{"group": "", "kind": "ResourceQuota"}]}},
        }),
    ];
    let chain = json!({
        "apiVersion": "trellis.dev/v1alpha1", "kind": "AdmissionChain",
        "metadata": {"name": "default"},
        "spec": {"plugins": [
            {"name": "limit-range", "type": "Mutating", "failurePolicy": "Fail", "deadline": "1s",
             "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                        "resources": ["pods", "persistentvolumeclaims"]}]},
            {"name": "resource-quota", "type": "Validating", "failurePolicy": "Fail", "deadline": "1s",
             "rules": [{"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                        "resources": ["*"]}]},
        ]},
    });
    (plugins, chain)
}

/// Create the default admission plugins and chain when absent (and built).
async fn bootstrap_admission(client: &trellis_client::Client, dir: &Path) -> anyhow::Result<()> {
    let plugins = trellis_client::Resource::new("trellis.dev", "v1alpha1", "plugins", false);
    let chains = trellis_client::Resource::new("trellis.dev", "v1alpha1", "admissionchains", false);
    let (objs, chain) = default_admission();
    for p in &objs {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        if !dir.join(format!("{name}.wasm")).exists() {
            tracing::warn!(plugin = name, "default admission plugin not built; no default admission chain (run `cargo xtask plugins`)");
            return Ok(());
        }
    }
    for p in &objs {
        create_if_absent(client, &plugins, p).await?;
    }
    create_if_absent(client, &chains, &chain).await
}

async fn create_if_absent(
    client: &trellis_client::Client,
    res: &trellis_client::Resource,
    obj: &serde_json::Value,
) -> anyhow::Result<()> {
    match client.create(res, "", obj).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(409) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "creating {} {}: {e}",
            obj["kind"].as_str().unwrap_or_default(),
            obj["metadata"]["name"].as_str().unwrap_or_default()
        )),
    }
}

/// Create the default controllers' `Plugin` objects that are missing (those
/// whose component is built).
async fn bootstrap_controllers(client: &trellis_client::Client, dir: &Path) -> anyhow::Result<()> {
    let plugins = trellis_client::Resource::new("trellis.dev", "v1alpha1", "plugins", false);
    let mut n = 0;
    for p in trellis_controllers::defaults::default_controllers() {
        let component = trellis_controllers::defaults::component_of(&p);
        if !dir.join(format!("{component}.wasm")).exists() {
            tracing::warn!(
                component,
                "default controller not built (run `cargo xtask plugins`)"
            );
            continue;
        }
        create_if_absent(client, &plugins, &p).await?;
        n += 1;
    }
    println!(
        "trellis: controllers: {n} default controllers from {}",
        dir.display()
    );
    Ok(())
}

/// Run the controller runtime until `stop` says so, with the default
/// controllers created if absent. Reconnects when the API server goes away.
pub async fn run_controllers(
    kubeconfig: PathBuf,
    plugin_dir: PathBuf,
    source: trellis_plugin_host::PluginSource,
    options: trellis_controllers::Options,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = trellis_client::Client::from_kubeconfig(&kubeconfig)?;
    bootstrap_controllers(&client, &plugin_dir).await?;
    loop {
        let manager = trellis_controllers::ControllerManager::with_options(
            client.clone(),
            source.clone(),
            options.clone(),
        );
        match manager.run(stopped(&stop)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if stopped_before_retry("the controller runtime", e, &stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Completes when `stop` says so.
fn stopped(stop: &tokio::sync::watch::Receiver<bool>) -> impl std::future::Future<Output = ()> {
    let mut rx = stop.clone();
    async move {
        let _ = rx.changed().await;
    }
}

/// A runtime lost the API server: log it and wait a second before it tries
/// again; true when `stop` came meanwhile.
async fn stopped_before_retry(
    what: &str,
    error: impl std::fmt::Display,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> bool {
    tracing::warn!(error = %error, "{what} lost the API server; retrying");
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => false,
    }
}

/// Run the scheduler against the API server until `stop` says so: the
/// default profile and plugins are created if absent, then every
/// `SchedulerProfile` is served. Reconnects when the API server goes away.
async fn run_scheduler(
    kubeconfig: PathBuf,
    plugin_dir: PathBuf,
    source: trellis_plugin_host::PluginSource,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let client = trellis_client::Client::from_kubeconfig(&kubeconfig)?;
    bootstrap_profiles(&client, &plugin_dir).await?;
    bootstrap_admission(&client, &plugin_dir).await?;
    let mut sched = trellis_scheduler::Scheduler::new(client).watch_profiles(source);
    loop {
        match sched.run(stopped(&stop)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if stopped_before_retry("the scheduler", e, &stop).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Wait for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!("trellis: stopping");
}

/// Run the API server over `store` until Ctrl-C or SIGTERM; with a plugin
/// folder, with the admission chain too (and the default one created).
pub async fn run(
    store: Arc<dyn Store>,
    data_dir: &Path,
    listen: SocketAddr,
    what: &str,
    plugin_dir: Option<&Path>,
    services: &ServiceFlags,
) -> anyhow::Result<()> {
    run_with(
        store,
        data_dir,
        listen,
        what,
        plugin_dir,
        services,
        Runtimes::default(),
    )
    .await
}

/// kube-apiserver's flags for Services' cluster IPs and node ports.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceFlags {
    /// Where Services' cluster IPs come from: an IPv4 CIDR, a mask of 12 to 30 bits (the first address is the `kubernetes` Service's).
    #[arg(long, default_value = trellis_api::services::DEFAULT_SERVICE_CIDR)]
    service_cluster_ip_range: String,
    /// Where NodePort and LoadBalancer Services' node ports come from: FIRST-LAST.
    #[arg(long, default_value = trellis_api::services::DEFAULT_NODE_PORTS)]
    service_node_port_range: String,
}

impl ServiceFlags {
    fn ranges(&self) -> anyhow::Result<trellis_api::services::ServiceRanges> {
        trellis_api::services::ServiceRanges::new(
            &self.service_cluster_ip_range,
            &self.service_node_port_range,
        )
        .map_err(anyhow::Error::msg)
    }
}

/// Where clients in the cluster reach a server listening on `addr` (the
/// `kubernetes` Service's endpoint): its address, or for a wildcard one the
/// address the host's default route leaves from, as kube-apiserver's
/// `--advertise-address` defaults.
fn advertised(addr: SocketAddr) -> SocketAddr {
    if !addr.ip().is_unspecified() {
        return addr;
    }
    let outbound = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|()| s))
        .and_then(|s| s.local_addr());
    let ip = outbound
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
    SocketAddr::new(ip, addr.port())
}

/// What runs beside the API server.
#[derive(Default)]
pub struct Runtimes {
    /// The scheduler (needs the plugin folder).
    pub scheduler: bool,
    /// The controller runtime with the default controllers (needs the plugin folder).
    pub controllers: bool,
    /// A node agent (as root) with this configuration.
    pub agent: Option<trellis_agent::AgentConfig>,
}

/// Run the API server and, given a plugin folder, the scheduler and the
/// controller runtime beside it, and the node agent when given its
/// configuration, until Ctrl-C or SIGTERM.
pub async fn run_with(
    store: Arc<dyn Store>,
    data_dir: &Path,
    listen: SocketAddr,
    what: &str,
    plugin_dir: Option<&Path>,
    services: &ServiceFlags,
    runtimes: Runtimes,
) -> anyhow::Result<()> {
    let ranges = services.ranges()?;
    let Runtimes {
        scheduler: with_scheduler,
        controllers: with_controllers,
        agent,
    } = runtimes;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let (token, auth) = admin_token(data_dir)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let pki = trellis_api::pki::ensure(&data_dir.join("pki"), &[addr.ip().to_string()])?;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    let server_url = format!("https://{host}:{}", addr.port());
    let kubeconfig_path = data_dir.join("kubeconfig");
    write_private(
        &kubeconfig_path,
        &kubeconfig(&server_url, &pki.ca_pem, &token),
    )?;
    // One engine and one component cache for every runtime that loads
    // plugins from the cluster.
    let source = match plugin_dir {
        Some(dir) => {
            let engine =
                trellis_plugin_host::PluginEngine::new(trellis_plugin_host::EngineConfig {
                    cache_dir: Some(data_dir.join("artifacts")),
                    ..Default::default()
                })?;
            Some(trellis_plugin_host::PluginSource::new(
                engine,
                Some(dir.to_path_buf()),
            ))
        }
        None => None,
    };
    let mut config = ApiConfig::new(auth)
        .audit_log(data_dir.join("audit.log"))
        .advertise(advertised(addr))
        .service_ranges(ranges);
    // The API server proves itself to the node agent with a shared secret
    // when it proxies logs and exec.
    let mut agent = agent;
    if let Some(cfg) = agent.as_mut() {
        let secret = uuid::Uuid::new_v4().simple().to_string();
        cfg.server_token = Some(secret.clone());
        config = config.node_agent_token(secret);
    }
    if let Some(source) = &source {
        config = config.plugins(source.clone());
    }
    // With the controllers, the namespace controller empties deleted namespaces.
    if with_controllers && plugin_dir.is_some_and(|d| d.join("namespace.wasm").exists()) {
        config = config.external_namespace_controller();
    }
    let server = ApiServer::new(store, config)
        .await
        .map_err(|e| anyhow::anyhow!("starting the API server: {e}"))?;
    println!("trellis: {what} listening on {server_url}");
    println!(
        "trellis: kubeconfig written to {}",
        kubeconfig_path.display()
    );
    println!();
    println!("  export KUBECONFIG={}", kubeconfig_path.display());
    println!("  kubectl get namespaces");
    println!();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let (Some(dir), false) = (plugin_dir, with_scheduler) {
        // Only the API server here: still create the default admission chain.
        let client = trellis_client::Client::from_kubeconfig(&kubeconfig_path)?;
        let dir = dir.to_path_buf();
        tokio::spawn(async move {
            if let Err(e) = bootstrap_admission(&client, &dir).await {
                eprintln!("trellis: cannot create the default admission chain: {e:#}");
            }
        });
    }
    let scheduler = plugin_dir.filter(|_| with_scheduler).map(|dir| {
        let task = run_scheduler(
            kubeconfig_path.clone(),
            dir.to_path_buf(),
            source.clone().expect("made with the plugin dir"),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("trellis: the scheduler stopped: {e:#}");
            }
        })
    });
    let controllers = plugin_dir.filter(|_| with_controllers).map(|dir| {
        let task = run_controllers(
            kubeconfig_path.clone(),
            dir.to_path_buf(),
            source.clone().expect("made with the plugin dir"),
            trellis_controllers::Options::default(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = task.await {
                eprintln!("trellis: the controller runtime stopped: {e:#}");
            }
        })
    });
    let agent = match (agent, &source) {
        (Some(cfg), Some(source)) if super::agent::is_root() => {
            let client = trellis_client::Client::from_kubeconfig(&kubeconfig_path)?;
            let task = super::agent::run_agent(client, cfg, source.clone(), stopped(&stop_rx));
            Some(tokio::spawn(async move {
                if let Err(e) = task.await {
                    eprintln!("trellis: the node agent stopped: {e:#}");
                }
            }))
        }
        (Some(_), _) => {
            eprintln!(
                "trellis: not root: running without a node agent (pods are scheduled but not run)"
            );
            None
        }
        _ => None,
    };
    println!("Press Ctrl-C to stop.");
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    server
        .serve(listener, Some(pki.server_config), stopped(&stop_rx))
        .await?;
    if let Some(s) = scheduler {
        let _ = s.await;
    }
    if let Some(c) = controllers {
        let _ = c.await;
    }
    if let Some(a) = agent {
        let _ = a.await;
    }
    println!("trellis: stopped");
    Ok(())
}
