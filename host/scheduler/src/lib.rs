//! The scheduler runtime. It keeps a node and pod cache fed by watches, gives
//! every node a dense id, and sends each change to every plugin of the
//! profile (the plugins keep their own node tables). For each pod that is
//! unscheduled and names the profile in `spec.schedulerName`, it runs the
//! chain: filters in order over the remaining candidates, then scorers,
//! weighted. It binds the pod to the best node through `pods/binding` and
//! records a `Scheduled` event. When no node fits, it records
//! `FailedScheduling` worded like upstream ("0/3 nodes are available: ...")
//! and retries the pod when the cluster changes.
//!
//! ```no_run
//! # async fn demo(client: trellis_client::Client, plugin: trellis_plugin_host::scheduler::SchedulerPlugin) {
//! use trellis_scheduler::{Profile, ProfilePlugin, Scheduler};
//! let profile = Profile::new("default-scheduler").with(ProfilePlugin::new(plugin, 1));
//! Scheduler::new(client, profile).run(std::future::pending()).await.unwrap();
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{json, Value};
use trellis_client::{Client, ClientError, ListParams, Resource};
use trellis_plugin_host::scheduler::{k8s, NodeId, Phases, SchedulerPlugin, SchedulerSession};
use trellis_plugin_host::{CallError, PluginSlot};

/// What to do when a plugin fails (error, trap, deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The pod's cycle fails; it is retried later.
    Fail,
    /// The plugin is skipped for this pod.
    Ignore,
}

/// One plugin of a profile.
pub struct ProfilePlugin {
    slot: Arc<PluginSlot<SchedulerPlugin>>,
    weight: i64,
    failure: FailurePolicy,
}

impl ProfilePlugin {
    /// A loaded plugin with a score weight (upstream's default weights: TaintToleration 3,
    /// NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2, the others 1).
    pub fn new(plugin: SchedulerPlugin, weight: i64) -> Self {
        Self {
            slot: Arc::new(PluginSlot::new(plugin)),
            weight,
            failure: FailurePolicy::Fail,
        }
    }

    /// Set the failure policy.
    pub fn failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// The slot, for hot swaps.
    pub fn slot(&self) -> &Arc<PluginSlot<SchedulerPlugin>> {
        &self.slot
    }
}

/// A scheduling profile: the `spec.schedulerName` it serves and its chain.
pub struct Profile {
    name: String,
    plugins: Vec<ProfilePlugin>,
}

impl Profile {
    /// An empty profile for `scheduler_name`.
    pub fn new(scheduler_name: &str) -> Self {
        Self {
            name: scheduler_name.into(),
            plugins: Vec::new(),
        }
    }

    /// Add a plugin at the end of the chain.
    pub fn with(mut self, plugin: ProfilePlugin) -> Self {
        self.plugins.push(plugin);
        self
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The API server failed in a way retrying does not fix.
    #[error("scheduler: {0}")]
    Client(#[from] ClientError),
}

struct Member {
    session: SchedulerSession,
    weight: i64,
    failure: FailurePolicy,
    phases: Phases,
    name: String,
}

/// The runtime.
pub struct Scheduler {
    client: Client,
    name: String,
    members: Vec<Member>,
    node_ids: HashMap<String, NodeId>,
    node_names: Vec<Option<String>>,
    /// Bound pods: uid -> node id.
    bound: HashMap<String, NodeId>,
    queue: VecDeque<Value>,
    unschedulable: BTreeMap<String, Value>,
}

fn nodes() -> Resource {
    Resource::new("", "v1", "nodes", false)
}
fn pods() -> Resource {
    Resource::new("", "v1", "pods", true)
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

impl Scheduler {
    /// A scheduler for `profile`.
    pub fn new(client: Client, profile: Profile) -> Self {
        let members = profile
            .plugins
            .into_iter()
            .map(|p| {
                let cur = p.slot.current();
                let info = cur.plugin.info().clone();
                Member {
                    session: SchedulerSession::new(p.slot.clone()),
                    weight: p.weight,
                    failure: p.failure,
                    phases: info.phases,
                    name: info.name,
                }
            })
            .collect();
        Self {
            client,
            name: profile.name,
            members,
            node_ids: HashMap::new(),
            node_names: Vec::new(),
            bound: HashMap::new(),
            queue: VecDeque::new(),
            unschedulable: BTreeMap::new(),
        }
    }

    fn upsert_node(&mut self, obj: &Value) {
        let Ok(node) = k8s::node(obj) else {
            tracing::warn!(node = %obj["metadata"]["name"], "node cannot be converted; skipped");
            return;
        };
        let id = match self.node_ids.get(&node.name) {
            Some(id) => *id,
            None => {
                let id = match self.node_names.iter().position(Option::is_none) {
                    Some(free) => free as NodeId,
                    None => {
                        self.node_names.push(None);
                        (self.node_names.len() - 1) as NodeId
                    }
                };
                self.node_ids.insert(node.name.clone(), id);
                self.node_names[id as usize] = Some(node.name.clone());
                id
            }
        };
        for m in &mut self.members {
            if let Err(e) = m.session.upsert_node(id, node.clone()) {
                tracing::warn!(plugin = %m.name, error = %e, "plugin refused a node");
            }
        }
    }

    fn remove_node(&mut self, name: &str) {
        if let Some(id) = self.node_ids.remove(name) {
            self.node_names[id as usize] = None;
            self.bound.retain(|_, n| *n != id);
            for m in &mut self.members {
                let _ = m.session.remove_node(id);
            }
        }
    }

    fn observe_pod(&mut self, kind: &str, obj: &Value) {
        let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let node = obj["spec"]["nodeName"].as_str().filter(|n| !n.is_empty());
        let gone = kind == "DELETED"
            || matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        if gone {
            if let Some(id) = self.bound.remove(&uid) {
                for m in &mut self.members {
                    let _ = m.session.forget_pod(id, &uid);
                }
            }
            self.unschedulable.remove(&pod_key(obj));
            return;
        }
        match node {
            Some(n) => {
                if self.bound.contains_key(&uid) {
                    return;
                }
                let (Some(id), Ok(p)) = (self.node_ids.get(n).copied(), k8s::pod(obj, vec![]))
                else {
                    return;
                };
                let placed = k8s::placed_pod(&p);
                for m in &mut self.members {
                    let _ = m.session.assume_pod(id, placed.clone());
                }
                self.bound.insert(uid, id);
            }
            None => {
                let ours = obj["spec"]["schedulerName"]
                    .as_str()
                    .unwrap_or("default-scheduler")
                    == self.name;
                if ours
                    && obj["metadata"]["deletionTimestamp"].is_null()
                    && !self.unschedulable.contains_key(&pod_key(obj))
                {
                    self.queue.retain(|q| pod_key(q) != pod_key(obj));
                    self.queue.push_back(obj.clone());
                }
            }
        }
    }

    /// The cluster changed: pods that did not fit may fit now.
    fn retry_unschedulable(&mut self) {
        let pending: Vec<Value> = std::mem::take(&mut self.unschedulable)
            .into_values()
            .collect();
        self.queue.extend(pending);
    }

    /// Record an event on `pod`. Borrows only the client and the name across
    /// the await, so the scheduler itself need not be `Sync`.
    async fn event(
        client: &Client,
        component: &str,
        pod: &Value,
        ty: &str,
        reason: &str,
        message: &str,
    ) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let now = trellis_client::now_rfc3339();
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name, "uid": pod["metadata"]["uid"]},
            "reason": reason, "message": message, "type": ty, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": component}, "reportingComponent": component,
        });
        if let Err(e) = client.create(&events(), ns, &ev).await {
            tracing::warn!(error = %e, "cannot record an event");
        }
    }

    /// Run the chain for one pod: Ok(Some(node)) to bind, Ok(None) when nothing fits
    /// (with the FailedScheduling message), Err when a plugin with `fail` policy failed.
    fn decide(&mut self, pod: &Value) -> Result<Result<String, String>, String> {
        let p = k8s::pod(pod, vec![]).map_err(|e| format!("pod cannot be read: {e}"))?;
        // Ids are dense and `node_names` is indexed by id: already in id order.
        let mut candidates: Vec<NodeId> = self
            .node_names
            .iter()
            .enumerate()
            .filter_map(|(id, n)| n.as_ref().map(|_| id as NodeId))
            .collect();
        let total = candidates.len();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for m in &mut self.members {
            if !m.phases.contains(Phases::FILTER) || candidates.is_empty() {
                continue;
            }
            match m.session.filter(&p, &candidates, 0) {
                Ok(r) => {
                    for x in &r.rejected {
                        *reasons
                            .entry(r.reasons[x.reason as usize].message.clone())
                            .or_default() += 1;
                    }
                    candidates = r.feasible;
                }
                Err(e) => match m.failure {
                    FailurePolicy::Ignore => {
                        tracing::warn!(plugin = %m.name, error = %e, "filter failed; ignored by policy")
                    }
                    FailurePolicy::Fail => return Err(fail_message(&m.name, &e)),
                },
            }
        }
        if candidates.is_empty() {
            let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            return Ok(Err(format!(
                "0/{total} nodes are available: {}.",
                parts.join(", ")
            )));
        }
        let mut totals = vec![0i64; candidates.len()];
        for m in &mut self.members {
            if !m.phases.contains(Phases::SCORE) || m.weight == 0 {
                continue;
            }
            match m.session.score(&p, &candidates) {
                Ok(s) => {
                    for (t, s) in totals.iter_mut().zip(s) {
                        *t += i64::from(s) * m.weight;
                    }
                }
                Err(e) => match m.failure {
                    FailurePolicy::Ignore => {
                        tracing::warn!(plugin = %m.name, error = %e, "score failed; ignored by policy")
                    }
                    FailurePolicy::Fail => return Err(fail_message(&m.name, &e)),
                },
            }
        }
        let best = totals
            .iter()
            .enumerate()
            .max_by_key(|(i, t)| (**t, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let id = candidates[best];
        Ok(Ok(self.node_names[id as usize].clone().unwrap_or_default()))
    }

    async fn schedule_one(&mut self, pod: Value) {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        match self.decide(&pod) {
            Ok(Ok(node)) => {
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name}, "target": {"kind": "Node", "name": node}});
                match self
                    .client
                    .create_subresource(&pods(), &ns, &name, "binding", &binding)
                    .await
                {
                    Ok(_) => {
                        let mut bound = pod.clone();
                        bound["spec"]["nodeName"] = json!(node);
                        self.observe_pod("MODIFIED", &bound);
                        Self::event(
                            &self.client,
                            &self.name,
                            &pod,
                            "Normal",
                            "Scheduled",
                            &format!("Successfully assigned {ns}/{name} to {node}"),
                        )
                        .await;
                    }
                    Err(e) if e.is_conflict() || e.is_not_found() => {}
                    Err(e) => tracing::warn!(pod = %name, error = %e, "binding failed"),
                }
            }
            Ok(Err(message)) | Err(message) => {
                Self::event(
                    &self.client,
                    &self.name,
                    &pod,
                    "Warning",
                    "FailedScheduling",
                    &message,
                )
                .await;
                self.unschedulable.insert(pod_key(&pod), pod);
            }
        }
    }

    /// Schedule until `shutdown` resolves. An error (the API server went away)
    /// keeps the caches; calling `run` again lists afresh.
    pub async fn run(
        &mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SchedulerError> {
        tokio::pin!(shutdown);
        'relist: loop {
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
            let mut node_watch = self
                .client
                .watch(
                    &nodes(),
                    "",
                    &ListParams::default(),
                    node_list.resource_version(),
                )
                .await?;
            let mut pod_watch = self
                .client
                .watch(
                    &pods(),
                    "",
                    &ListParams::default(),
                    pod_list.resource_version(),
                )
                .await?;
            loop {
                while let Some(pod) = self.queue.pop_front() {
                    self.schedule_one(pod).await;
                }
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    ev = node_watch.next() => match ev {
                        Ok(Some(ev)) if ev.kind == "DELETED" => {
                            self.remove_node(ev.object["metadata"]["name"].as_str().unwrap_or(""));
                        }
                        Ok(Some(ev)) if ev.kind == "ADDED" || ev.kind == "MODIFIED" => {
                            self.upsert_node(&ev.object);
                            self.retry_unschedulable();
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
                                self.retry_unschedulable();
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

fn fail_message(plugin: &str, e: &CallError) -> String {
    format!("running plugin {plugin:?} failed: {e}")
}
