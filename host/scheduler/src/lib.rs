//! The scheduler runtime. It keeps a node, namespace and pod cache fed by
//! watches, gives every node a dense id, and sends each change to every
//! plugin of every profile (the plugins keep their own node tables). Each pod
//! that is unscheduled and names a profile in `spec.schedulerName` goes
//! through that profile's chain ([`chain`]); the pod is assumed on the chosen
//! node at once and bound through `pods/binding` in the background, with the
//! decision ([`explain`]) as an annotation and a `Scheduled` event. When no
//! node fits it records `FailedScheduling` worded like upstream ("0/3 nodes
//! are available: ..."), sets the `PodScheduled=False` condition, and retries
//! with back-off once the cluster changes ([`queue`]).
//!
//! Profiles are either given in code ([`Scheduler::profile`]) or read from
//! `SchedulerProfile` and `Plugin` objects ([`Scheduler::watch_profiles`]),
//! in which case a changed profile or plugin is loaded off the scheduling
//! path and swapped in between two pods.
//!
//! ```no_run
//! # async fn demo(client: trellis_client::Client, plugin: trellis_plugin_host::scheduler::SchedulerPlugin) {
//! use trellis_scheduler::{Entry, Profile, Scheduler};
//! let profile = Profile::new("default-scheduler").with(Entry::wasm(plugin, 1));
//! Scheduler::new(client).profile(profile).run(std::future::pending()).await.unwrap();
//! # }
//! ```

pub mod chain;
pub mod explain;
pub mod profiles;
mod queue;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use trellis_client::{Client, ClientError, ListParams, Patch, Resource};
use trellis_plugin_host::scheduler::{k8s, Label, Node, NodeId, PlacedPod};

pub use chain::{ChainPlugin, Entry, FailurePolicy, Profile, WasmPlugin};
pub use trellis_plugin_host::PluginSource;

use chain::Outcome;
use explain::Explanation;
use queue::Queue;

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The API server failed in a way retrying does not fix.
    #[error("scheduler: {0}")]
    Client(#[from] ClientError),
}

/// Tunables; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// First back-off of a pod that did not fit (upstream: 1 s).
    pub initial_backoff: Duration,
    /// Longest back-off (upstream: 10 s).
    pub max_backoff: Duration,
    /// A pod that did not fit is retried after this long even without a
    /// cluster change (upstream: 5 min).
    pub unschedulable_flush: Duration,
    /// Bindings in flight at once.
    pub parallel_bindings: usize,
    /// Whether to write the explanation annotation and events. The
    /// benchmark can turn the extra writes off to compare with upstream,
    /// which writes neither.
    pub record: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_flush: Duration::from_secs(300),
            parallel_bindings: 32,
            record: true,
        }
    }
}

/// Counters and per-pod latencies, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Metrics {
    scheduled: std::sync::atomic::AtomicU64,
    unschedulable: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    /// Per bound pod: from leaving the queue to the binding acknowledged.
    attempts: Mutex<Vec<Duration>>,
}

impl Metrics {
    /// Pods bound.
    pub fn scheduled(&self) -> u64 {
        self.scheduled.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Cycles that found no node.
    pub fn unschedulable(&self) -> u64 {
        self.unschedulable
            .load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Cycles a plugin failed under `Fail`, and failed bindings.
    pub fn errors(&self) -> u64 {
        self.errors.load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Per bound pod, the time from leaving the queue to the binding
    /// acknowledged (upstream's scheduling attempt duration), in order.
    pub fn attempt_latencies(&self) -> Vec<Duration> {
        self.attempts.lock().expect("metrics lock").clone()
    }
    fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A profile change from the profile source, applied between two pods.
pub(crate) enum ProfileUpdate {
    Install(Profile),
    Remove(String),
}

/// What a background binding reports back.
struct Bound {
    key: String,
    uid: String,
    node: NodeId,
    pod: Value,
    result: Result<(), ClientError>,
}

/// The node, namespace and pod cache.
#[derive(Default)]
struct Cache {
    node_ids: HashMap<String, NodeId>,
    /// Indexed by id; `None` for a free id.
    nodes: Vec<Option<Arc<Node>>>,
    /// Bound or assumed pods: uid -> (node, what plugins know of it).
    bound: HashMap<String, (NodeId, Arc<PlacedPod>)>,
    namespace_labels: HashMap<String, Vec<Label>>,
    /// The ids of `nodes` that hold a node, in id order: every pod's
    /// candidates, kept as nodes come and go rather than rebuilt per pod.
    live: Vec<NodeId>,
}

impl Cache {
    fn node_name(&self, id: NodeId) -> String {
        self.nodes
            .get(id as usize)
            .and_then(|n| n.as_ref())
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("<node {id}>"))
    }
}

/// The runtime.
pub struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    profiles: BTreeMap<String, Profile>,
    source: Option<PluginSource>,
    updates: Option<mpsc::Receiver<ProfileUpdate>>,
    cache: Cache,
    queue: Queue,
    metrics: Arc<Metrics>,
    bindings: Arc<Semaphore>,
    bound_tx: mpsc::UnboundedSender<Bound>,
    bound_rx: mpsc::UnboundedReceiver<Bound>,
    /// When each queued pod left the queue, for the attempt latency.
    started: HashMap<String, Instant>,
    /// Pods naming a profile that does not exist, by key.
    orphans: HashMap<String, Value>,
}

fn nodes() -> Resource {
    Resource::new("", "v1", "nodes", false)
}
fn pods() -> Resource {
    Resource::new("", "v1", "pods", true)
}
fn namespaces() -> Resource {
    Resource::new("", "v1", "namespaces", false)
}
fn events() -> Resource {
    Resource::new("", "v1", "events", true)
}

fn pod_key(p: &Value) -> String {
    format!(
        "{}/{}",
        p["metadata"]["namespace"].as_str().unwrap_or(""),
        p["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn labels_of(obj: &Value) -> Vec<Label> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| Label {
                    key: k.clone(),
                    value: v.as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Scheduler {
    /// A scheduler with no profile yet.
    pub fn new(client: Client) -> Self {
        let config = SchedulerConfig::default();
        let (bound_tx, bound_rx) = mpsc::unbounded_channel();
        Self {
            client,
            bindings: Arc::new(Semaphore::new(config.parallel_bindings)),
            queue: Queue::new(&config),
            config,
            profiles: BTreeMap::new(),
            source: None,
            updates: None,
            cache: Cache::default(),
            metrics: Arc::default(),
            bound_tx,
            bound_rx,
            started: HashMap::new(),
            orphans: HashMap::new(),
        }
    }

    /// Set the tunables.
    pub fn config(mut self, config: SchedulerConfig) -> Self {
        self.bindings = Arc::new(Semaphore::new(config.parallel_bindings.max(1)));
        self.queue = Queue::new(&config);
        self.config = config;
        self
    }

    /// Serve a profile given in code.
    pub fn profile(mut self, profile: Profile) -> Self {
        self.profiles.insert(profile.name.clone(), profile);
        self
    }

    /// Serve the `SchedulerProfile` objects of the cluster, loading the
    /// `Plugin` objects they name from `source`.
    pub fn watch_profiles(mut self, source: PluginSource) -> Self {
        self.source = Some(source);
        self
    }

    /// Counters and latencies.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn upsert_node(&mut self, obj: &Value) {
        let Ok(node) = k8s::node(obj) else {
            tracing::warn!(node = %obj["metadata"]["name"], "node cannot be converted; skipped");
            return;
        };
        let c = &mut self.cache;
        let id = match c.node_ids.get(&node.name) {
            // A status write (a heartbeat, conditions) that leaves what
            // scheduling sees unchanged tells the plugins nothing.
            Some(id) if c.nodes[*id as usize].as_deref() == Some(&node) => return,
            Some(id) => *id,
            None => {
                let id = match c.nodes.iter().position(Option::is_none) {
                    Some(free) => free,
                    None => {
                        c.nodes.push(None);
                        c.nodes.len() - 1
                    }
                } as NodeId;
                c.node_ids.insert(node.name.clone(), id);
                let at = c.live.partition_point(|l| *l < id);
                c.live.insert(at, id);
                id
            }
        };
        // One copy for the cache and every plugin session's replay.
        let node = Arc::new(node);
        for p in self.profiles.values_mut() {
            p.upsert_node(id, &node);
        }
        self.cache.nodes[id as usize] = Some(node);
    }

    fn remove_node(&mut self, name: &str) {
        if let Some(id) = self.cache.node_ids.remove(name) {
            self.cache.nodes[id as usize] = None;
            self.cache.live.retain(|l| *l != id);
            self.cache.bound.retain(|_, (n, _)| *n != id);
            for p in self.profiles.values_mut() {
                p.remove_node(id);
            }
        }
    }

    fn assume(&mut self, id: NodeId, placed: PlacedPod) {
        let placed = Arc::new(placed);
        for p in self.profiles.values_mut() {
            p.assume_pod(id, &placed);
        }
        self.cache.bound.insert(placed.uid.clone(), (id, placed));
    }

    fn forget(&mut self, uid: &str) {
        if let Some((id, _)) = self.cache.bound.remove(uid) {
            for p in self.profiles.values_mut() {
                p.forget_pod(id, uid);
            }
        }
    }

    fn convert_pod(&self, obj: &Value) -> Result<trellis_plugin_host::scheduler::Pod, String> {
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
        let labels = self
            .cache
            .namespace_labels
            .get(ns)
            .cloned()
            .unwrap_or_default();
        k8s::pod(obj, labels).map_err(|e| format!("pod cannot be read: {e}"))
    }

    fn observe_pod(&mut self, kind: &str, obj: &Value) {
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let node = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
        let key = pod_key(obj);
        let gone = kind == "DELETED"
            || matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        if gone {
            self.forget(&uid);
            self.queue.remove(&key);
            self.orphans.remove(&key);
            return;
        }
        match node {
            Some(n) => {
                self.queue.remove(&key);
                self.orphans.remove(&key);
                let Some(id) = self.cache.node_ids.get(n).copied() else {
                    return;
                };
                match self.cache.bound.get(&uid) {
                    Some((at, _)) if *at == id => return,
                    Some(_) => self.forget(&uid), // bound elsewhere than we assumed
                    None => {}
                }
                if let Ok(p) = self.convert_pod(obj) {
                    self.assume(id, k8s::placed_pod(&p));
                }
            }
            None => {
                let name = obj["spec"]["schedulerName"]
                    .as_str()
                    .unwrap_or("default-scheduler");
                let ours = self.source.is_some() || self.profiles.contains_key(name);
                if ours
                    && obj["metadata"]["deletionTimestamp"].is_null()
                    && !self.cache.bound.contains_key(&uid)
                {
                    self.queue.add(key, obj.clone());
                }
            }
        }
    }

    fn observe_namespace(&mut self, kind: &str, obj: &Value) {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if kind == "DELETED" {
            self.cache.namespace_labels.remove(&name);
        } else {
            self.cache.namespace_labels.insert(name, labels_of(obj));
        }
    }

    fn install(&mut self, update: ProfileUpdate) {
        match update {
            ProfileUpdate::Install(mut profile) => {
                // The new chain learns the cluster before its first pod.
                for (id, node) in self.cache.nodes.iter().enumerate() {
                    if let Some(node) = node {
                        profile.upsert_node(id as NodeId, node);
                    }
                }
                for (id, placed) in self.cache.bound.values() {
                    profile.assume_pod(*id, placed);
                }
                tracing::info!(profile = %profile.name, plugins = profile.entries.len(), "profile installed");
                let waiting: Vec<String> = self
                    .orphans
                    .iter()
                    .filter(|(_, p)| {
                        p["spec"]["schedulerName"]
                            .as_str()
                            .unwrap_or("default-scheduler")
                            == profile.name
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in waiting {
                    if let Some(p) = self.orphans.remove(&k) {
                        self.queue.add(k, p);
                    }
                }
                self.profiles.insert(profile.name.clone(), profile);
            }
            ProfileUpdate::Remove(name) => {
                tracing::info!(profile = %name, "profile removed");
                self.profiles.remove(&name);
            }
        }
        self.queue.cluster_changed();
    }

    /// Record an event on `pod`, in the background.
    fn event(&self, pod: &Value, ty: &str, reason: &str, message: String) {
        if !self.config.record {
            return;
        }
        let client = self.client.clone();
        let ev = event_object(pod, ty, reason, &message);
        tokio::spawn(async move {
            let ns = ev["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            if let Err(e) = client.create(&events(), &ns, &ev).await {
                tracing::warn!(error = %e, "cannot record an event");
            }
        });
    }

    /// One cycle for `pod`: decide, then assume and bind in the background,
    /// or record why it cannot be placed.
    async fn schedule_one(&mut self, pod: Value) {
        let key = pod_key(&pod);
        let started = Instant::now();
        let name = pod["spec"]["schedulerName"]
            .as_str()
            .unwrap_or("default-scheduler")
            .to_string();
        if !self.profiles.contains_key(&name) {
            // No such profile (yet): set aside until one by that name is
            // installed, as upstream leaves pods of other schedulers alone;
            // cluster changes do not wake them.
            self.orphans.insert(key, pod);
            return;
        }
        let converted = match self.convert_pod(&pod) {
            Ok(p) => Arc::new(p),
            Err(message) => {
                self.event(&pod, "Warning", "FailedScheduling", message);
                self.queue.park(key, pod);
                return;
            }
        };
        let profile = self.profiles.get_mut(&name).expect("checked above");
        let mut why = Explanation::default();
        let outcome = profile.decide(&converted, &self.cache.live, &mut why);
        for (plugin, error) in why.skipped_plugins() {
            self.event(
                &pod,
                "Warning",
                "PluginIgnored",
                format!("plugin {plugin:?} failed and was skipped (failurePolicy Ignore): {error}"),
            );
        }
        let names = |id| self.cache.node_name(id);
        match outcome {
            Outcome::Fits(id) => {
                let node = names(id);
                // Rendered only when it is written.
                let text = if self.config.record {
                    why.render(&name, "Scheduled", &format!("assigned to {node}"), names)
                } else {
                    String::new()
                };
                self.assume(id, k8s::placed_pod(&converted));
                self.started.insert(key.clone(), started);
                self.bind(key, pod, id, node, text).await;
            }
            Outcome::Unschedulable(message) | Outcome::Error(message) => {
                let error = why.has_failed();
                let text = if self.config.record {
                    why.render(
                        &name,
                        if error { "Error" } else { "Unschedulable" },
                        &message,
                        names,
                    )
                } else {
                    String::new()
                };
                if error {
                    Metrics::bump(&self.metrics.errors);
                } else {
                    Metrics::bump(&self.metrics.unschedulable);
                }
                self.record_unschedulable(&pod, message, text);
                self.queue.backoff(key, pod, error);
            }
        }
    }

    /// Write the binding (with the explanation) in the background.
    async fn bind(&mut self, key: String, pod: Value, id: NodeId, node: String, text: String) {
        let permit = self
            .bindings
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        let client = self.client.clone();
        let tx = self.bound_tx.clone();
        let record = self.config.record;
        tokio::spawn(async move {
            let ns = pod["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
            let mut binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "uid": pod["metadata"]["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            if record {
                binding["metadata"]["annotations"] = json!({ explain::ANNOTATION: text });
            }
            let result = client
                .create_subresource(&pods(), &ns, &name, "binding", &binding)
                .await
                .map(|_| ());
            // The Scheduled event is written after the binding is let go
            // and reported: it holds up neither the next binding nor the
            // queue's bookkeeping.
            drop(permit);
            let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
            let event = (result.is_ok() && record).then(|| {
                event_object(
                    &pod,
                    "Normal",
                    "Scheduled",
                    &format!("Successfully assigned {ns}/{name} to {node}"),
                )
            });
            let _ = tx.send(Bound {
                key,
                uid,
                node: id,
                pod,
                result,
            });
            if let Some(ev) = event {
                if let Err(e) = client.create(&events(), &ns, &ev).await {
                    tracing::warn!(error = %e, "cannot record an event");
                }
            }
        });
    }

    fn binding_done(&mut self, b: Bound) {
        let started = self.started.remove(&b.key);
        match b.result {
            Ok(()) => {
                Metrics::bump(&self.metrics.scheduled);
                if let Some(t) = started {
                    let mut v = self.metrics.attempts.lock().expect("metrics lock");
                    if v.len() < 1_000_000 {
                        v.push(t.elapsed());
                    }
                }
                self.queue.forget_attempts(&b.key);
            }
            Err(e) if e.is_not_found() => self.forget(&b.uid),
            Err(e) if e.is_conflict() => {
                // Bound by someone else, or being deleted: the watch tells
                // where it is; until then it is not ours.
                if matches!(self.cache.bound.get(&b.uid), Some((n, _)) if *n == b.node) {
                    self.forget(&b.uid);
                }
            }
            Err(e) => {
                tracing::warn!(pod = %b.key, error = %e, "binding failed; retrying after a back-off");
                Metrics::bump(&self.metrics.errors);
                self.forget(&b.uid);
                self.queue.backoff(b.key, b.pod, true);
            }
        }
    }

    /// The event, the `PodScheduled=False` condition and the explanation of
    /// a pod that did not get a node, written in the background.
    fn record_unschedulable(&self, pod: &Value, message: String, text: String) {
        if !self.config.record {
            return;
        }
        self.event(pod, "Warning", "FailedScheduling", message.clone());
        let client = self.client.clone();
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        tokio::spawn(async move {
            let cond = json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastProbeTime": null,
                "lastTransitionTime": trellis_client::now_rfc3339(),
            }]}});
            let ann = json!({"metadata": {"annotations": { explain::ANNOTATION: text }}});
            for (sub, body) in [("status", cond), ("", ann)] {
                if let Err(e) = client
                    .patch(&pods(), &ns, &name, sub, Patch::Strategic, &body)
                    .await
                {
                    if !e.is_not_found() {
                        tracing::warn!(pod = %name, error = %e, "cannot record why the pod is unschedulable");
                    }
                }
            }
        });
    }

    /// Schedule until `shutdown` resolves. An error (the API server went away)
    /// keeps the caches; calling `run` again lists afresh.
    pub async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        tokio::pin!(shutdown);
        if self.updates.is_none() {
            if let Some(source) = self.source.clone() {
                let (tx, rx) = mpsc::channel(16);
                self.updates = Some(rx);
                tokio::spawn(profiles::run(self.client.clone(), source, tx));
            }
        }
        'relist: loop {
            let ns_list = self
                .client
                .list(&namespaces(), "", &ListParams::default())
                .await?;
            for n in ns_list.items() {
                self.observe_namespace("ADDED", n);
            }
            let node_list = self
                .client
                .list(&nodes(), "", &ListParams::default())
                .await?;
            for n in node_list.items() {
                self.upsert_node(n);
            }
            let pod_list = self
                .client
                .list(&pods(), "", &ListParams::default())
                .await?;
            for p in pod_list.items() {
                self.observe_pod("ADDED", p);
            }
            let all = ListParams::default();
            let mut ns_watch = self
                .client
                .watch(&namespaces(), "", &all, ns_list.resource_version())
                .await?;
            let mut node_watch = self
                .client
                .watch(&nodes(), "", &all, node_list.resource_version())
                .await?;
            let mut pod_watch = self
                .client
                .watch(&pods(), "", &all, pod_list.resource_version())
                .await?;
            loop {
                // Apply what has arrived before taking the next pod, so a
                // pod is never placed against a stale picture of a change
                // already seen.
                while let Ok(b) = self.bound_rx.try_recv() {
                    self.binding_done(b);
                }
                let mut arrived = Vec::new();
                if let Some(rx) = self.updates.as_mut() {
                    while let Ok(u) = rx.try_recv() {
                        arrived.push(u);
                    }
                }
                for u in arrived {
                    self.install(u);
                }
                if let Some(pod) = self.queue.pop() {
                    self.schedule_one(pod).await;
                    // Let watches and bindings in between pods.
                    tokio::task::yield_now().await;
                    if self.queue.has_ready() {
                        continue;
                    }
                }
                let wake = self.queue.next_wake();
                let updates = async {
                    match self.updates.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep_until(wake.into()) => {}
                    u = updates => if let Some(u) = u { self.install(u) },
                    b = self.bound_rx.recv() => if let Some(b) = b { self.binding_done(b) },
                    ev = ns_watch.next() => match ev {
                        Ok(Some(ev)) if ev.kind != "BOOKMARK" => self.observe_namespace(&ev.kind, &ev.object),
                        Ok(Some(_)) => {}
                        Ok(None) => continue 'relist,
                        Err(e) if e.is_gone() => continue 'relist,
                        Err(e) => return Err(e.into()),
                    },
                    ev = node_watch.next() => match ev {
                        Ok(Some(ev)) if ev.kind == "DELETED" => {
                            self.remove_node(ev.object["metadata"]["name"].as_str().unwrap_or(""));
                        }
                        Ok(Some(ev)) if ev.kind == "ADDED" || ev.kind == "MODIFIED" => {
                            self.upsert_node(&ev.object);
                            self.queue.cluster_changed();
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => continue 'relist,
                        Err(e) if e.is_gone() => continue 'relist,
                        Err(e) => return Err(e.into()),
                    },
                    ev = pod_watch.next() => match ev {
                        Ok(Some(ev)) if ev.kind != "BOOKMARK" => {
                            let freed = ev.kind == "DELETED";
                            self.observe_pod(&ev.kind, &ev.object);
                            if freed {
                                self.queue.cluster_changed();
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => continue 'relist,
                        Err(e) if e.is_gone() => continue 'relist,
                        Err(e) => return Err(e.into()),
                    },
                }
            }
        }
    }
}

fn event_object(pod: &Value, ty: &str, reason: &str, message: &str) -> Value {
    trellis_client::event_object(pod, ty, reason, message, "default-scheduler", None, None)
}
