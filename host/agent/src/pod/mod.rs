//! Pods on this node: one worker task per pod (`worker.rs`) that starts its
//! sandbox and containers (`pod_start.rs`), follows them, restarts them per
//! policy, writes the pod's status (`status.rs`) and finishes a deletion
//! (`pod_kill.rs`). The [`Manager`] watches the pods bound to this node,
//! re-adopts the pods already running from an earlier agent, and removes the
//! leftovers of pods that are gone.

mod pod_kill;
pub(crate) use pod_kill::release_pod;
mod pod_start;
mod status;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use trellis_client::{Client, ListParams, Resource, WatchEvent};
use trellis_image::ImageStore;
use trellis_network::PodNetwork;
use trellis_plugin_host::PluginSource;
use trellis_runtime::shim::{ShimClient, ShimFactory};

use crate::events::Events;
use crate::node::Capacity;
use crate::prober::ProbePlugins;
use crate::{AgentConfig, AgentError};

pub(crate) fn pods() -> Resource {
    Resource::new("", "v1", "pods", true)
}

/// What the server and the probes need to find a pod's containers.
#[derive(Debug)]
pub(crate) struct PodRecord {
    pub uid: String,
    /// `pods/<uid>` in the data directory: what outlives containers.
    pub dir: PathBuf,
    /// `run/pods/<uid>`: the shim, bundles, `etc-hosts`, `resolv.conf`.
    pub run: PathBuf,
    pub shim: ShimClient,
    /// Container name → its runs.
    pub containers: Mutex<HashMap<String, Runs>>,
}

/// A container's current and previous run, by shim container id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Runs {
    pub current: Option<String>,
    pub running: bool,
    pub previous: Option<String>,
}

impl PodRecord {
    /// The CRI log file of container `name`'s run `id`.
    pub fn log_path(&self, name: &str, id: &str) -> PathBuf {
        let n = id.rsplit('.').next().unwrap_or("0");
        self.dir.join("logs").join(name).join(format!("{n}.log"))
    }
}

/// Pods by namespace and name, for the logs/exec server and pod-exec.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pods: Mutex<HashMap<(String, String), Arc<PodRecord>>>,
}

impl Registry {
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<PodRecord>> {
        let pods = self.pods.lock().expect("registry lock");
        pods.get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn insert(&self, namespace: &str, name: &str, rec: Arc<PodRecord>) {
        let mut pods = self.pods.lock().expect("registry lock");
        pods.insert((namespace.to_string(), name.to_string()), rec);
    }

    fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let mut pods = self.pods.lock().expect("registry lock");
        let key = (namespace.to_string(), name.to_string());
        if pods.get(&key).is_some_and(|r| r.uid == uid) {
            pods.remove(&key);
        }
    }
}

/// Everything the pod workers share.
pub(crate) struct Ctx {
    pub client: Client,
    pub cfg: AgentConfig,
    pub images: ImageStore,
    pub network: Arc<PodNetwork>,
    pub capacity: Capacity,
    pub probes: ProbePlugins,
    pub registry: Arc<Registry>,
    pub events: Events,
    /// Serialises pulls of one image.
    pub pulls: tokio::sync::Mutex<()>,
    /// Admits pods to the CPU-bound part of a start (shim, network, root
    /// filesystem, container creation) a few at a time, in arrival order.
    /// When many pods arrive at once, running every start in parallel only
    /// shares the CPUs among them, so every pod finishes near the end of the
    /// burst; admitting as many as there are CPUs lets the first ones run
    /// early and the burst take no longer.
    /// A pod holds its permit from its sandbox through its containers'
    /// starts in one pass (see `Worker::admit`).
    pub starts: Arc<tokio::sync::Semaphore>,
    /// Starts the pods' shims (one factory process, started on first use).
    pub shims: Arc<ShimFactory>,
}

impl Ctx {
    pub fn new(
        client: Client,
        cfg: AgentConfig,
        images: ImageStore,
        network: PodNetwork,
        capacity: Capacity,
        plugins: PluginSource,
    ) -> Result<Arc<Self>, AgentError> {
        let registry = Arc::new(Registry::default());
        let exec = Arc::new(crate::services::PodExec(registry.clone()));
        let probes =
            ProbePlugins::new(plugins, exec).map_err(|e| AgentError::Probes(e.to_string()))?;
        let probes =
            probes.with_plugin_objects(Arc::new(crate::sources::PluginObjectsApi(client.clone())));
        let all_starts = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
        let starts = Arc::new(tokio::sync::Semaphore::new(all_starts));
        let events = Events::new(client.clone(), &cfg.node_name, starts.clone(), all_starts);
        let shims = Arc::new(ShimFactory::new(&cfg.shim_command.0, &cfg.shim_command.1));
        Ok(Arc::new(Self {
            client,
            cfg,
            images,
            network: Arc::new(network),
            capacity,
            probes,
            registry,
            events,
            pulls: tokio::sync::Mutex::new(()),
            starts,
            shims,
        }))
    }

    /// The Node's `status.images`.
    pub fn node_images(&self) -> Value {
        let list = self.images.list().unwrap_or_default();
        Value::Array(list.iter().map(crate::node_image).collect())
    }

    /// The pod's directory: what outlives its containers.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        crate::pods_dir(&self.cfg.data_dir).join(uid)
    }

    /// The pod's runtime-state directory (see the crate's documentation).
    pub fn pod_run_dir(&self, uid: &str) -> PathBuf {
        crate::run_pods_dir(&self.cfg.data_dir).join(uid)
    }
}

/// Watches this node's pods and keeps one worker per pod.
pub(crate) struct Manager {
    ctx: Arc<Ctx>,
    workers: HashMap<String, watch::Sender<Option<Value>>>,
}

impl Manager {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            workers: HashMap::new(),
        }
    }

    /// List, adopt, then watch until the API goes away for good.
    pub async fn run(mut self) -> Result<(), AgentError> {
        let selector = format!("spec.nodeName={}", self.ctx.cfg.node_name);
        loop {
            let list = match self
                .ctx
                .client
                .list(&pods(), "", &ListParams::default().fields(&selector))
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list pods; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut seen = std::collections::HashSet::new();
            for pod in list.items() {
                seen.insert(uid_of(pod).to_string());
                self.dispatch(pod.clone());
            }
            self.remove_leftovers(&seen).await;
            let rv = list.resource_version().to_string();
            let mut stream = match self
                .ctx
                .client
                .watch(&pods(), "", &ListParams::default().fields(&selector), &rv)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch pods; relisting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                match stream.next().await {
                    Ok(Some(WatchEvent { kind, object })) => match kind.as_str() {
                        "ADDED" | "MODIFIED" => self.dispatch(object),
                        "DELETED" => self.deleted(object),
                        "ERROR" => break,
                        _ => {}
                    },
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    fn dispatch(&mut self, pod: Value) {
        let uid = uid_of(&pod).to_string();
        self.workers.retain(|_, tx| !tx.is_closed());
        if let Some(tx) = self.workers.get(&uid) {
            // As kubelet: a change of the status alone (mostly this agent's
            // own writes) does not wake the worker; it reads the newest copy
            // at its next pass.
            tx.send_if_modified(|old| {
                let wake = old
                    .as_ref()
                    .is_none_or(|old| differs_beyond_status(old, &pod));
                *old = Some(pod);
                wake
            });
            return;
        }
        let finished = matches!(
            pod["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        );
        if finished
            && !self.ctx.pod_dir(&uid).exists()
            && pod["metadata"]["deletionTimestamp"].is_null()
        {
            // A finished pod this agent no longer runs anything for.
            return;
        }
        let (tx, rx) = watch::channel(Some(pod));
        self.workers.insert(uid, tx);
        tokio::spawn(worker::run(self.ctx.clone(), rx));
    }

    /// The pod object is gone (force deletion): stop everything now.
    fn deleted(&mut self, pod: Value) {
        let uid = uid_of(&pod).to_string();
        if let Some(tx) = self.workers.get(&uid) {
            tx.send_replace(None);
        } else if self.ctx.pod_dir(&uid).exists() {
            tokio::spawn(pod_kill::remove_leftover(self.ctx.clone(), uid));
        }
    }

    /// Pod directories of pods that no longer exist (deleted while no agent
    /// ran): kill their containers and remove them.
    async fn remove_leftovers(&mut self, live: &std::collections::HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(crate::pods_dir(&self.ctx.cfg.data_dir)) else {
            return;
        };
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().to_string();
            if !live.contains(&uid) && !self.workers.contains_key(&uid) {
                tokio::spawn(pod_kill::remove_leftover(self.ctx.clone(), uid));
            }
        }
    }
}

/// Whether two copies of a pod differ in more than their status and the
/// bookkeeping every write changes (kubelet's podsDifferSemantically looks
/// at the spec, labels, annotations and deletion fields).
fn differs_beyond_status(a: &Value, b: &Value) -> bool {
    fn meta(pod: &Value) -> impl Iterator<Item = (&String, &Value)> {
        const BOOKKEEPING: [&str; 2] = ["resourceVersion", "managedFields"];
        pod["metadata"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()))
    }
    a["spec"] != b["spec"] || !meta(a).eq(meta(b))
}

pub(crate) fn uid_of(pod: &Value) -> &str {
    pod["metadata"]["uid"].as_str().unwrap_or_default()
}

pub(crate) fn ns_name(pod: &Value) -> (String, String) {
    (
        pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_change_beyond_the_status_wakes_a_worker() {
        let pod = json!({
            "metadata": {"name": "p", "resourceVersion": "7", "labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Pending"},
        });
        let mut written = pod.clone();
        written["metadata"]["resourceVersion"] = json!("8");
        written["metadata"]["managedFields"] = json!([{"manager": "trellis-agent"}]);
        written["status"] = json!({"phase": "Running"});
        assert!(!differs_beyond_status(&pod, &written));
        let mut deleting = written.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-11-24T16:00:00Z");
        assert!(differs_beyond_status(&written, &deleting));
        let mut relabelled = written.clone();
        relabelled["metadata"]["labels"]["app"] = json!("b");
        assert!(differs_beyond_status(&written, &relabelled));
        let mut resized = written.clone();
        resized["spec"]["containers"][0]["image"] = json!("busybox");
        assert!(differs_beyond_status(&written, &resized));
    }
}
