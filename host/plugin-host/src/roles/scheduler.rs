//! Scheduler plugins: a typed loader, and a [`SchedulerSession`] that owns one
//! instance per worker, mirrors the state sent to it and replays that state
//! (and the pod of the cycle under way) into a fresh instance after a hot swap
//! or a trap.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::Store;

use crate::bindings::scheduler::{SchedulerPlugin as Bindings, SchedulerPluginPre};
use crate::engine::{CompiledComponent, PluginEngine, RoleInfo};
use crate::roles::{fault, Common, PluginSpec};
use crate::slot::PluginSlot;
use crate::state::PluginState;
use crate::{CallError, Capability, LoadError};

/// A node as `upsert-node` carries it (see [`Node::for_plugin`]).
pub use crate::bindings::scheduler::exports::trellis::plugin::scheduler::Node as WireNode;
/// The pod as `prepare` carries it (see [`Pod::for_plugin`]).
pub use crate::bindings::scheduler::exports::trellis::plugin::scheduler::Pod as WirePod;
pub use crate::bindings::scheduler::exports::trellis::plugin::scheduler::{
    Container, FilterResult, HostPort, NodeFields, NodeId, Phases, PlacedPod, PluginInfo,
    PodFields, PodMeta, Reason,
};
pub use crate::bindings::types::{
    Label, LabelSelector, NodeAffinity, NodeImage, NodeSelectorTerm, PodAffinity, PodAffinityTerm,
    PreferredSchedulingTerm, Requirement, Resources, SelectorOperator, Taint, TaintEffect,
    Toleration, TolerationOperator, TopologySpreadConstraint, UnsatisfiableAction,
    WeightedPodAffinityTerm,
};

pub(crate) const ROLE: RoleInfo = RoleInfo {
    name: "scheduler",
    export: "trellis:plugin/scheduler@0.4.0",
    allowed: &[Capability::Log],
};

/// Most candidates one call may carry (the WIT limit).
pub const MAX_CANDIDATES: usize = 65_536;

/// A node as the scheduler sees it, whole. A plugin's `upsert-node` gets the
/// parts it named in `plugin-info.node-fields` ([`Node::for_plugin`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: Vec<Label>,
    /// `spec.taints`.
    pub taints: Vec<Taint>,
    /// `status.allocatable` (or `status.capacity`).
    pub allocatable: Resources,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.images`.
    pub images: Vec<NodeImage>,
}

impl Node {
    /// What `upsert-node` carries to a plugin that reads `fields`: those
    /// parts, with empty lists left out.
    pub fn for_plugin(&self, fields: NodeFields) -> WireNode {
        WireNode {
            name: self.name.clone(),
            labels: list(fields.contains(NodeFields::LABELS), &self.labels),
            taints: list(fields.contains(NodeFields::TAINTS), &self.taints),
            allocatable: fields
                .contains(NodeFields::ALLOCATABLE)
                .then(|| self.allocatable.clone()),
            unschedulable: self.unschedulable,
            images: list(fields.contains(NodeFields::IMAGES), &self.images),
        }
    }
}

/// `v` if asked for and not empty.
fn list<T: Clone>(on: bool, v: &[T]) -> Option<Vec<T>> {
    (on && !v.is_empty()).then(|| v.to_vec())
}

/// The pod being scheduled, whole. A plugin's `prepare` gets the parts it
/// named in `plugin-info.pod-fields` ([`Pod::for_plugin`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: Vec<Label>,
    /// Labels of the pod's namespace, for namespace selectors.
    pub namespace_labels: Vec<Label>,
    /// `spec.nodeName` if the user set it.
    pub node_name: Option<String>,
    /// `spec.nodeSelector`.
    pub node_selector: Vec<Label>,
    /// `spec.affinity.nodeAffinity`.
    pub node_affinity: Option<NodeAffinity>,
    /// `spec.affinity.podAffinity`.
    pub pod_affinity: Option<PodAffinity>,
    /// `spec.affinity.podAntiAffinity`.
    pub pod_anti_affinity: Option<PodAffinity>,
    /// `spec.tolerations`.
    pub tolerations: Vec<Toleration>,
    /// `spec.topologySpreadConstraints`.
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// `spec.containers`.
    pub containers: Vec<Container>,
    /// `spec.initContainers`.
    pub init_containers: Vec<Container>,
    /// `spec.overhead`, zero when absent.
    pub overhead: Resources,
    /// `spec.priority`.
    pub priority: i32,
}

impl Pod {
    /// What `prepare` carries to a plugin that reads `fields`: those parts,
    /// with empty lists and a zero overhead left out (each list or string
    /// copied in costs a call into the instance's allocator).
    pub fn for_plugin(&self, fields: PodFields) -> WirePod {
        fn opt<T: Clone>(on: bool, v: &Option<T>) -> Option<T> {
            v.as_ref().filter(|_| on).cloned()
        }
        let containers = fields.contains(PodFields::CONTAINERS);
        let selection = fields.contains(PodFields::NODE_SELECTION);
        let affinity = fields.contains(PodFields::POD_AFFINITY);
        WirePod {
            meta: fields.contains(PodFields::META).then(|| PodMeta {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                uid: self.uid.clone(),
                labels: self.labels.clone(),
                namespace_labels: self.namespace_labels.clone(),
            }),
            node_name: opt(fields.contains(PodFields::NODE_NAME), &self.node_name),
            node_selector: list(selection, &self.node_selector),
            node_affinity: opt(selection, &self.node_affinity),
            pod_affinity: opt(affinity, &self.pod_affinity),
            pod_anti_affinity: opt(affinity, &self.pod_anti_affinity),
            tolerations: list(fields.contains(PodFields::TOLERATIONS), &self.tolerations),
            topology_spread_constraints: list(
                fields.contains(PodFields::TOPOLOGY_SPREAD),
                &self.topology_spread_constraints,
            ),
            containers: list(containers, &self.containers),
            init_containers: list(containers, &self.init_containers),
            overhead: (containers && self.overhead != super::k8s::zero())
                .then(|| self.overhead.clone()),
            priority: self.priority,
        }
    }
}

/// A loaded, configured scheduler plugin: put it in a [`PluginSlot`] and give
/// each worker a [`SchedulerSession`] on that slot.
pub struct SchedulerPlugin {
    common: Common,
    pre: SchedulerPluginPre<PluginState>,
    info: PluginInfo,
}

impl std::fmt::Debug for SchedulerPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerPlugin")
            .field("name", &self.common.name)
            .field("info", &self.info)
            .field("digest", &self.common.digest)
            .finish()
    }
}

struct Instance {
    store: Store<PluginState>,
    bindings: Bindings,
}

impl SchedulerPlugin {
    /// Compile (through the cache), check, link and configure a scheduler plugin.
    /// Fails with a [`LoadError`] naming what is wrong; never half-loads.
    pub fn load(engine: &PluginEngine, wasm: &[u8], spec: PluginSpec) -> Result<Self, LoadError> {
        let compiled = engine.compile(wasm)?;
        Self::from_compiled(engine, &compiled, spec)
    }

    /// Load from an already compiled component.
    pub fn from_compiled(
        engine: &PluginEngine,
        compiled: &CompiledComponent,
        spec: PluginSpec,
    ) -> Result<Self, LoadError> {
        let (common, pre) = super::prepare(engine, compiled, spec, ROLE, SchedulerPluginPre::new)?;
        let mut plugin = Self {
            common,
            pre,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                phases: Phases::empty(),
                tracks_pods: true,
                pod_fields: PodFields::all(),
                node_fields: NodeFields::all(),
            },
        };
        // Validate by making one instance: this runs `info` and `configure`.
        let inst = plugin.instantiate().map_err(LoadError::Call)?;
        plugin.info = inst.1;
        Ok(plugin)
    }

    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The name it was loaded under.
    pub fn name(&self) -> &str {
        &self.common.name
    }

    fn instantiate(&self) -> Result<(Instance, PluginInfo), CallError> {
        let c = &self.common;
        let mut store = c.store();
        let bindings = c
            .guarded(&mut store, |s| self.pre.instantiate(s))
            .map_err(|e| match e {
                CallError::Trapped { reason } => CallError::Instantiate { reason },
                other => other,
            })?;
        let api = bindings.trellis_plugin_scheduler();
        let info = c.guarded(&mut store, |s| api.call_info(s))?;
        c.guarded(&mut store, |s| api.call_configure(s, &c.config))?
            .map_err(fault)?;
        Ok((Instance { store, bindings }, info))
    }
}

/// One worker's view of a scheduler plugin slot. Not shared between threads:
/// each worker owns its session (and so its wasm store). Every change sent is
/// also kept here, so a fresh instance (after a swap, a deadline or a trap) is
/// rebuilt with `configure` and a replay of nodes and pods before the next call.
/// Pods are kept whether or not the running version tracks them, since the
/// next version may.
pub struct SchedulerSession {
    slot: Arc<PluginSlot<SchedulerPlugin>>,
    live: Option<Live>,
    nodes: Vec<Option<Arc<Node>>>,
    pods: HashMap<String, (NodeId, Arc<PlacedPod>)>,
    /// The pod of the cycle under way (the last `prepare`).
    cycle: Option<Arc<Pod>>,
    stats: PrepareStats,
}

struct Live {
    generation: u64,
    version: Arc<crate::slot::Versioned<SchedulerPlugin>>,
    instance: Instance,
    /// Whether this instance has been given `cycle` by `prepare`.
    prepared: bool,
    /// The pod the last `prepare` carried into this instance and its answer,
    /// while no change (node or pod) has reached the instance since: a cycle
    /// whose pod would carry the same is not prepared again.
    last_prepare: Option<(WirePod, Phases)>,
}

/// How many `prepare` calls a session made and how many it saved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrepareStats {
    /// Calls into the instance.
    pub sent: u64,
    /// Cycles whose pod would have carried what the instance already held
    /// (and no change came in between), answered from the last call.
    pub reused: u64,
}

impl SchedulerSession {
    /// A session on `slot`; the instance is made on first use.
    pub fn new(slot: Arc<PluginSlot<SchedulerPlugin>>) -> Self {
        Self {
            slot,
            live: None,
            nodes: Vec::new(),
            pods: HashMap::new(),
            cycle: None,
            stats: PrepareStats::default(),
        }
    }

    /// `prepare` calls made and saved so far.
    pub fn prepare_stats(&self) -> PrepareStats {
        self.stats
    }

    /// Generation of the version that served the last call, if any.
    pub fn generation(&self) -> Option<u64> {
        self.live.as_ref().map(|l| l.generation)
    }

    /// Number of nodes known.
    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }

    /// Whether the version serving calls wants `assume-pod`/`forget-pod`.
    fn tracks_pods(&self) -> bool {
        self.live
            .as_ref()
            .is_some_and(|l| l.version.plugin.info.tracks_pods)
    }

    fn ensure_live(&mut self) -> Result<(), CallError> {
        let current = self.slot.generation();
        if matches!(&self.live, Some(l) if l.generation == current) {
            return Ok(());
        }
        self.live = None;
        let version = self.slot.current();
        let plugin = &version.plugin;
        let (mut inst, _) = plugin.instantiate()?;
        let api = inst.bindings.trellis_plugin_scheduler();
        for (id, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                let wire = node.for_plugin(plugin.info.node_fields);
                let r = plugin.common.guarded(&mut inst.store, |s| {
                    api.call_upsert_node(s, id as NodeId, &wire)
                })?;
                if let Err(e) = r {
                    tracing::warn!(plugin = plugin.name(), node = %node.name, error = ?e, "plugin refused a node on replay");
                }
            }
        }
        if plugin.info.tracks_pods {
            for (node, pod) in self.pods.values() {
                let r = plugin
                    .common
                    .guarded(&mut inst.store, |s| api.call_assume_pod(s, *node, pod))?;
                if let Err(e) = r {
                    tracing::warn!(plugin = plugin.name(), pod = %pod.uid, error = ?e, "plugin refused a pod on replay");
                }
            }
        }
        self.live = Some(Live {
            generation: version.generation,
            version: version.clone(),
            instance: inst,
            prepared: false,
            last_prepare: None,
        });
        Ok(())
    }

    /// Send a change (node or pod) to the live instance (making it if
    /// needed). Its state moves, so its last `prepare` answer no longer
    /// stands.
    fn change<R>(
        &mut self,
        f: impl FnOnce(&SchedulerPlugin, &mut Instance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        self.ensure_live()?;
        if let Some(live) = &mut self.live {
            live.last_prepare = None;
        }
        self.run(f)
    }

    /// Run one call on the live instance as it is (no swap check); a call
    /// that poisons the instance drops it, so the next call starts fresh.
    fn run<R>(
        &mut self,
        f: impl FnOnce(&SchedulerPlugin, &mut Instance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let live = self.live.as_mut().expect("a live instance");
        let version = live.version.clone();
        let r = f(&version.plugin, &mut live.instance);
        if let Err(e) = &r {
            if e.poisons_instance() {
                self.live = None;
            }
        }
        r
    }

    /// Add or replace a node.
    pub fn upsert_node(&mut self, id: NodeId, node: impl Into<Arc<Node>>) -> Result<(), CallError> {
        let idx = id as usize;
        if self.nodes.len() <= idx {
            self.nodes.resize_with(idx + 1, || None);
        }
        self.nodes[idx] = Some(node.into());
        if self.live.is_none() {
            return Ok(()); // replayed when the instance is made
        }
        let node = self.nodes[idx].clone().expect("just set");
        self.change(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            let node = node.for_plugin(p.info.node_fields);
            p.common
                .guarded(&mut i.store, |s| api.call_upsert_node(s, id, &node))?
                .map_err(|e| fault(e).into())
        })
    }

    /// Remove a node and the pods on it.
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), CallError> {
        if let Some(slot) = self.nodes.get_mut(id as usize) {
            *slot = None;
        }
        self.pods.retain(|_, (n, _)| *n != id);
        if self.live.is_none() {
            return Ok(());
        }
        self.change(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            p.common
                .guarded(&mut i.store, |s| api.call_remove_node(s, id))
        })
    }

    /// A pod is bound or assumed on a node. The session keeps the pod to
    /// replay into a new instance; a scheduler shares one copy among the
    /// sessions of all its plugins.
    pub fn assume_pod(
        &mut self,
        node: NodeId,
        pod: impl Into<Arc<PlacedPod>>,
    ) -> Result<(), CallError> {
        let pod = pod.into();
        self.pods.insert(pod.uid.clone(), (node, pod.clone()));
        if !self.tracks_pods() {
            return Ok(()); // replayed if a later version tracks pods
        }
        self.change(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            p.common
                .guarded(&mut i.store, |s| api.call_assume_pod(s, node, &pod))?
                .map_err(|e| fault(e).into())
        })
    }

    /// A pod left a node.
    pub fn forget_pod(&mut self, node: NodeId, uid: &str) -> Result<(), CallError> {
        self.pods.remove(uid);
        if !self.tracks_pods() {
            return Ok(());
        }
        self.change(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            p.common
                .guarded(&mut i.store, |s| api.call_forget_pod(s, node, uid))
        })
    }

    /// Begin a cycle for `pod` (see the WIT `prepare`): the phases of the
    /// plugin's that apply to it, within those it declared. The session keeps
    /// the pod, to hand it again to an instance made before the cycle ends.
    pub fn prepare(&mut self, pod: &Arc<Pod>) -> Result<Phases, CallError> {
        self.cycle = Some(pod.clone());
        if let Some(live) = &mut self.live {
            live.prepared = false;
        }
        self.ensure_prepared()
    }

    /// Make sure the live instance holds the cycle's pod; answers its phases.
    fn ensure_prepared(&mut self) -> Result<Phases, CallError> {
        let Some(pod) = self.cycle.clone() else {
            return Err(not_prepared());
        };
        self.ensure_live()?;
        let live = self.live.as_mut().expect("a live instance");
        let wire = pod.for_plugin(live.version.plugin.info.pod_fields);
        // The contract lets the host skip a `prepare` that would carry what
        // the instance already holds, with no change since: the plugin keeps
        // that pod and its answer stands.
        if let Some((last, phases)) = &live.last_prepare {
            if *last == wire {
                let phases = *phases;
                live.prepared = true;
                self.stats.reused += 1;
                return Ok(phases);
            }
        }
        live.last_prepare = None;
        self.stats.sent += 1;
        let phases = self.run(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            p.common
                .guarded(&mut i.store, |s| api.call_prepare(s, &wire))?
                .map(|phases| phases & p.info.phases)
                .map_err(|e| fault(e).into())
        })?;
        if let Some(live) = &mut self.live {
            live.prepared = true;
            live.last_prepare = Some((wire, phases));
        }
        Ok(phases)
    }

    /// Run a per-cycle call on an instance that holds the cycle's pod. A swap
    /// after the check is picked up by the next cycle; this call finishes on
    /// the instance that was prepared.
    fn cycle_call<R>(
        &mut self,
        f: impl FnOnce(&SchedulerPlugin, &mut Instance) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        let current = self.slot.generation();
        if !matches!(&self.live, Some(l) if l.generation == current && l.prepared) {
            self.ensure_prepared()?;
        }
        self.run(f)
    }

    /// Filter candidates for the prepared pod (see the WIT `filter`).
    pub fn filter(
        &mut self,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError> {
        check_candidates(candidates)?;
        let r = self.cycle_call(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            p.common
                .guarded(&mut i.store, |s| {
                    api.call_filter(s, candidates, max_feasible)
                })?
                .map_err(|e| fault(e).into())
        })?;
        check_filter_answer(candidates, &r)?;
        Ok(r)
    }

    /// Score candidates for the prepared pod: one score in 0..=100 per
    /// candidate.
    pub fn score(&mut self, candidates: &[NodeId]) -> Result<Vec<u8>, CallError> {
        check_candidates(candidates)?;
        let r = self.cycle_call(|p, i| {
            let api = i.bindings.trellis_plugin_scheduler();
            p.common
                .guarded(&mut i.store, |s| api.call_score(s, candidates))?
                .map_err(|e| fault(e).into())
        })?;
        check_scores(candidates, &r)?;
        Ok(r)
    }
}

/// The contract's checks on a call and its answers, for any implementation
/// of it (the native plugins of the benchmark make the same ones).
///
/// At most [`MAX_CANDIDATES`] candidates per call.
pub fn check_candidates(candidates: &[NodeId]) -> Result<(), CallError> {
    if candidates.len() > MAX_CANDIDATES {
        return Err(CallError::Contract {
            reason: format!(
                "{} candidates exceed the limit of {MAX_CANDIDATES}",
                candidates.len()
            ),
        });
    }
    Ok(())
}

/// A filter answer names no more nodes than it was given, one reason per
/// refused node, and every reason one that exists.
pub fn check_filter_answer(candidates: &[NodeId], r: &FilterResult) -> Result<(), CallError> {
    let seen = r.feasible.len() + r.rejected.len();
    if seen > candidates.len() {
        return Err(CallError::Contract {
            reason: format!(
                "filter answered {seen} verdicts for {} candidates",
                candidates.len()
            ),
        });
    }
    if r.rejected_reasons.len() != r.rejected.len() {
        return Err(CallError::Contract {
            reason: format!(
                "filter answered {} reasons for {} refused nodes",
                r.rejected_reasons.len(),
                r.rejected.len()
            ),
        });
    }
    // The highest index decides; `max` runs many per instruction.
    let highest = r.rejected_reasons.iter().copied().max();
    if let Some(highest) = highest.filter(|&h| h as usize >= r.reasons.len()) {
        let (node, reason) = r
            .rejections()
            .find(|&(_, i)| i == highest)
            .expect("the highest index is one of them");
        return Err(CallError::Contract {
            reason: format!(
                "rejection of node {node} names reason {reason} of {}",
                r.reasons.len()
            ),
        });
    }
    Ok(())
}

impl FilterResult {
    /// Each refused node with the index of its reason in `reasons`.
    pub fn rejections(&self) -> impl Iterator<Item = (NodeId, u8)> + '_ {
        self.rejected
            .iter()
            .copied()
            .zip(self.rejected_reasons.iter().copied())
    }
}

/// A score answer has one score in 0..=100 per candidate.
pub fn check_scores(candidates: &[NodeId], scores: &[u8]) -> Result<(), CallError> {
    if scores.len() != candidates.len() {
        return Err(CallError::Contract {
            reason: format!(
                "score answered {} scores for {} candidates",
                scores.len(),
                candidates.len()
            ),
        });
    }
    // The highest score decides; `max` runs many scores per instruction, a
    // search for the first one above 100 one by one.
    let highest = scores.iter().copied().max().unwrap_or(0);
    if highest > 100 {
        return Err(CallError::Contract {
            reason: format!("score {highest} is above 100"),
        });
    }
    Ok(())
}

/// `filter` or `score` without a pod prepared for the cycle.
pub fn not_prepared() -> CallError {
    CallError::Contract {
        reason: "filter or score called before prepare".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        super::super::k8s::pod(
            &serde_json::json!({
                "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"}},
                "spec": {
                    "nodeName": "n1",
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "busybox"}]
                }
            }),
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn prepare_carries_only_the_parts_a_plugin_reads_and_no_empty_list() {
        let p = pod();
        let none = p.for_plugin(PodFields::empty());
        assert_eq!(
            none,
            WirePod {
                meta: None,
                node_name: None,
                node_selector: None,
                node_affinity: None,
                pod_affinity: None,
                pod_anti_affinity: None,
                tolerations: None,
                topology_spread_constraints: None,
                containers: None,
                init_containers: None,
                overhead: None,
                priority: 0,
            }
        );

        let w = p.for_plugin(PodFields::NODE_NAME | PodFields::TOLERATIONS);
        assert_eq!(w.node_name.as_deref(), Some("n1"));
        assert_eq!(w.tolerations.as_ref().map(Vec::len), Some(1));
        assert!(w.meta.is_none() && w.containers.is_none());

        let all = p.for_plugin(PodFields::all());
        let meta = all.meta.expect("meta asked for");
        assert_eq!((meta.name.as_str(), meta.namespace.as_str()), ("p", "ns"));
        assert_eq!(meta.labels.len(), 1);
        assert_eq!(all.containers.as_ref().map(Vec::len), Some(1));
        // Empty parts stay out even when asked for: no selector, no affinity,
        // no spread constraints, no init containers, no overhead.
        assert!(all.node_selector.is_none() && all.node_affinity.is_none());
        assert!(all.pod_affinity.is_none() && all.pod_anti_affinity.is_none());
        assert!(all.topology_spread_constraints.is_none());
        assert!(all.init_containers.is_none() && all.overhead.is_none());
    }

    #[test]
    fn a_score_answer_needs_one_score_in_0_to_100_per_candidate() {
        let cands: Vec<NodeId> = (0..40).collect();
        let mut scores = vec![100u8; 40];
        check_scores(&cands, &scores).unwrap();
        scores[33] = 101;
        let err = check_scores(&cands, &scores).unwrap_err();
        assert!(
            matches!(&err, CallError::Contract { reason } if reason == "score 101 is above 100"),
            "{err:?}"
        );
        scores[33] = 0;
        let err = check_scores(&cands, &scores[..39]).unwrap_err();
        assert!(
            matches!(&err, CallError::Contract { reason } if reason.contains("39 scores for 40")),
            "{err:?}"
        );
    }

    #[test]
    fn upsert_node_carries_only_the_parts_a_plugin_reads() {
        let n = super::super::k8s::node(&serde_json::json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"unschedulable": true},
            "status": {"allocatable": {"cpu": "4"}}
        }))
        .unwrap();
        let w = n.for_plugin(NodeFields::empty());
        assert_eq!((w.name.as_str(), w.unschedulable), ("n1", true));
        assert!(w.labels.is_none() && w.taints.is_none());
        assert!(w.allocatable.is_none() && w.images.is_none());
        let w = n.for_plugin(NodeFields::all());
        assert_eq!(w.labels.as_ref().map(Vec::len), Some(1));
        assert_eq!(w.allocatable.map(|a| a.milli_cpu), Some(4000));
        // No taints and no images: left out even when asked for.
        assert!(w.taints.is_none() && w.images.is_none());
    }

    #[test]
    fn a_filter_answer_gives_each_refused_node_a_listed_reason() {
        let answer = |rejected: Vec<NodeId>, rejected_reasons: Vec<u8>| FilterResult {
            feasible: vec![0],
            rejected,
            rejected_reasons,
            reasons: vec![Reason {
                message: "node(s) were odd".into(),
                unresolvable: false,
            }],
        };
        let refused = |r: &FilterResult| match check_filter_answer(&[0, 1, 2], r) {
            Err(CallError::Contract { reason }) => reason,
            other => panic!("{other:?}"),
        };
        check_filter_answer(&[0, 1, 2], &answer(vec![1, 2], vec![0, 0])).unwrap();
        assert_eq!(
            refused(&answer(vec![1, 2], vec![0])),
            "filter answered 1 reasons for 2 refused nodes"
        );
        assert_eq!(
            refused(&answer(vec![1, 2], vec![0, 1])),
            "rejection of node 2 names reason 1 of 1"
        );
        assert_eq!(
            refused(&answer(vec![1, 2, 3], vec![0, 0, 0])),
            "filter answered 4 verdicts for 3 candidates"
        );
    }
}
