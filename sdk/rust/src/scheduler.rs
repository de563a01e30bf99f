//! Scheduler plugins: implement [`SchedulerPlugin`] and call
//! [`export_scheduler!`](crate::export_scheduler).
//!
//! The host sends node and pod *changes*; the plugin keeps what it needs in a
//! [`NodeTable`], ideally reduced to numbers at upsert time (see [`Interner`]),
//! so that `filter` and `score`, called once per pod for all candidates, only
//! compare integers. [`NodeTable::filter`] and [`NodeTable::map`] are the
//! cheapest per-pod loops over the candidates.
//!
//! Per pod the host first calls [`SchedulerPlugin::prepare`] (upstream's
//! PreFilter and PreScore), where a plugin may say that a phase does not apply
//! to the pod (upstream's `Skip`): the host then does not call it. The pod
//! crosses into the instance once per cycle; the export glue keeps it and
//! passes it to `filter` and `score`.

use std::collections::HashMap;

/// A node as `upsert-node` receives it; the export glue turns it into a [`Node`].
pub use crate::bindings::scheduler::exports::trellis::plugin::scheduler::Node as WireNode;
/// The pod as `prepare` receives it; the export glue turns it into a [`Pod`].
pub use crate::bindings::scheduler::exports::trellis::plugin::scheduler::Pod as WirePod;
pub use crate::bindings::scheduler::exports::trellis::plugin::scheduler::{
    Container, FilterResult, HostPort, NodeFields, NodeId, Phases, PlacedPod, PluginInfo,
    PodFields, PodMeta, Reason,
};
use crate::bindings::types::{NodeAffinity, NodeImage, PodAffinity, TopologySpreadConstraint};
pub use crate::{label_value, Label, PluginError, Resources, Taint, TaintEffect, Toleration};

/// `body` for `k` in `0..UNROLL`, written out: the compiler does not unroll a
/// loop whose body returns errors.
macro_rules! unrolled {
    ($k:ident => $body:expr) => {
        unrolled!(@ $k => $body; 0 1 2 3 4 5 6 7)
    };
    (@ $k:ident => $body:expr; $($i:literal)*) => {
        $({
            let $k = $i;
            $body;
        })*
    };
}

/// A scheduler plugin. One value lives per instance; the host calls
/// `configure` first, then sends changes and, per pod, `prepare` and then
/// `filter`/`score` for the phases that apply.
/// Everything must be rebuildable from `configure` + upserts + assumes: the host
/// may replace the instance at any time and replay them.
pub trait SchedulerPlugin: Default + 'static {
    /// Name, version and phases.
    fn info() -> PluginInfo;

    /// Apply configuration (JSON; `{}` when none).
    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let _ = config;
        Ok(())
    }

    /// A node appeared or changed.
    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError>;

    /// A node is gone (with every pod on it).
    fn remove_node(&mut self, id: NodeId);

    /// A pod is bound or assumed on a node. Sent only if [`Self::info`]
    /// tracks pods (the default; see [`PluginInfo::nodes_only`]).
    fn assume_pod(&mut self, node: NodeId, pod: PlacedPod) -> Result<(), PluginError> {
        let _ = (node, pod);
        Ok(())
    }

    /// A pod left a node.
    fn forget_pod(&mut self, node: NodeId, uid: &str) {
        let _ = (node, uid);
    }

    /// Begin a cycle for `pod`: the phases that apply to it. A phase left out
    /// is skipped (as a filter every candidate passes, as a scorer it adds
    /// nothing), so leave one out only when that is its answer for this pod;
    /// the host may still call it. Also the place for per-pod work that
    /// `filter` and `score` share. The default: every declared phase applies.
    ///
    /// The host skips the call when the pod would be the same as last time
    /// (as far as the parts the plugin reads go) and no node or pod change
    /// came in between; the last answer then stands. So answer from `pod`
    /// and the changes received alone, and let `filter` and `score` leave
    /// what `prepare` kept as it was.
    fn prepare(&mut self, pod: &Pod) -> Result<Phases, PluginError> {
        let _ = pod;
        Ok(Phases::all())
    }

    /// Verdicts for the candidates, stopping after `max_feasible` feasible
    /// nodes (0 = all); `pod` is the one given to the last `prepare`. The
    /// default accepts every candidate.
    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, PluginError> {
        let _ = pod;
        let mut v = Verdicts::new(max_feasible);
        for &id in candidates {
            if v.accept(id) {
                break;
            }
        }
        Ok(v.finish())
    }

    /// One score in 0..=100 per candidate, already normalized. The default
    /// scores every candidate 0.
    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let _ = pod;
        Ok(vec![0; candidates.len()])
    }
}

/// Build a [`PluginInfo`] for a plugin that tracks pods (see
/// [`PluginInfo::nodes_only`] for one that does not) and reads the whole pod
/// (see [`PluginInfo::reads`]).
pub fn plugin_info(name: &str, version: &str, phases: Phases) -> PluginInfo {
    PluginInfo {
        name: name.to_string(),
        version: version.to_string(),
        phases,
        tracks_pods: true,
        pod_fields: PodFields::all(),
        node_fields: NodeFields::all(),
    }
}

impl PluginInfo {
    /// The plugin looks only at nodes and the pod being scheduled: the host
    /// sends it no `assume_pod`/`forget_pod`, a call saved per plugin per
    /// scheduled pod.
    pub fn nodes_only(mut self) -> Self {
        self.tracks_pods = false;
        self
    }

    /// The plugin reads only these parts of the pod; the others reach
    /// [`SchedulerPlugin::prepare`], `filter` and `score` empty. Each part
    /// left out saves copying it into the instance on every cycle (a call
    /// into the allocator per string and per list). Name every part read:
    /// the test kit's fixtures run with exactly these.
    pub fn reads(mut self, fields: PodFields) -> Self {
        self.pod_fields = fields;
        self
    }

    /// The plugin reads only these parts of a node (besides its name and
    /// `unschedulable`, always sent); the others reach
    /// [`SchedulerPlugin::upsert_node`] empty. As with [`PluginInfo::reads`],
    /// each part left out saves copying it into the instance, here once per
    /// node and node change.
    pub fn reads_nodes(mut self, fields: NodeFields) -> Self {
        self.node_fields = fields;
        self
    }
}

/// A node. Only the parts the plugin reads (see [`PluginInfo::reads_nodes`])
/// are filled; the others are empty.
#[derive(Debug, Clone)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels` ([`NodeFields::LABELS`]).
    pub labels: Vec<Label>,
    /// `spec.taints` ([`NodeFields::TAINTS`]).
    pub taints: Vec<Taint>,
    /// `status.allocatable` ([`NodeFields::ALLOCATABLE`]; zero otherwise).
    pub allocatable: Resources,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// `status.images` ([`NodeFields::IMAGES`]).
    pub images: Vec<NodeImage>,
}

impl From<WireNode> for Node {
    fn from(n: WireNode) -> Self {
        Node {
            name: n.name,
            labels: n.labels.unwrap_or_default(),
            taints: n.taints.unwrap_or_default(),
            allocatable: n.allocatable.unwrap_or_else(zero_resources),
            unschedulable: n.unschedulable,
            images: n.images.unwrap_or_default(),
        }
    }
}

/// The pod being scheduled. Only the parts the plugin reads (see
/// [`PluginInfo::reads`]) are filled; the others are empty.
#[derive(Debug, Clone)]
pub struct Pod {
    /// `metadata.name` ([`PodFields::META`]).
    pub name: String,
    /// `metadata.namespace` ([`PodFields::META`]).
    pub namespace: String,
    /// `metadata.uid` ([`PodFields::META`]).
    pub uid: String,
    /// `metadata.labels` ([`PodFields::META`]).
    pub labels: Vec<Label>,
    /// Labels of the pod's namespace, for namespace selectors ([`PodFields::META`]).
    pub namespace_labels: Vec<Label>,
    /// `spec.nodeName` if the user set it ([`PodFields::NODE_NAME`]).
    pub node_name: Option<String>,
    /// `spec.nodeSelector` ([`PodFields::NODE_SELECTION`]).
    pub node_selector: Vec<Label>,
    /// `spec.affinity.nodeAffinity` ([`PodFields::NODE_SELECTION`]).
    pub node_affinity: Option<NodeAffinity>,
    /// `spec.affinity.podAffinity` ([`PodFields::POD_AFFINITY`]).
    pub pod_affinity: Option<PodAffinity>,
    /// `spec.affinity.podAntiAffinity` ([`PodFields::POD_AFFINITY`]).
    pub pod_anti_affinity: Option<PodAffinity>,
    /// `spec.tolerations` ([`PodFields::TOLERATIONS`]).
    pub tolerations: Vec<Toleration>,
    /// `spec.topologySpreadConstraints` ([`PodFields::TOPOLOGY_SPREAD`]).
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// `spec.containers` ([`PodFields::CONTAINERS`]).
    pub containers: Vec<Container>,
    /// `spec.initContainers` ([`PodFields::CONTAINERS`]).
    pub init_containers: Vec<Container>,
    /// `spec.overhead`, zero when absent ([`PodFields::CONTAINERS`]).
    pub overhead: Resources,
    /// `spec.priority`.
    pub priority: i32,
}

impl From<WirePod> for Pod {
    fn from(p: WirePod) -> Self {
        let meta = p.meta.unwrap_or_else(|| PodMeta {
            name: String::new(),
            namespace: String::new(),
            uid: String::new(),
            labels: Vec::new(),
            namespace_labels: Vec::new(),
        });
        Pod {
            name: meta.name,
            namespace: meta.namespace,
            uid: meta.uid,
            labels: meta.labels,
            namespace_labels: meta.namespace_labels,
            node_name: p.node_name,
            node_selector: p.node_selector.unwrap_or_default(),
            node_affinity: p.node_affinity,
            pod_affinity: p.pod_affinity,
            pod_anti_affinity: p.pod_anti_affinity,
            tolerations: p.tolerations.unwrap_or_default(),
            topology_spread_constraints: p.topology_spread_constraints.unwrap_or_default(),
            containers: p.containers.unwrap_or_default(),
            init_containers: p.init_containers.unwrap_or_default(),
            overhead: p.overhead.unwrap_or_else(zero_resources),
            priority: p.priority,
        }
    }
}

#[doc(hidden)]
pub fn __not_prepared() -> PluginError {
    PluginError::InvalidInput("filter or score called before prepare".into())
}

/// Per-node plugin state indexed by the host's dense node ids.
#[derive(Debug, Clone)]
pub struct NodeTable<T> {
    slots: Vec<Option<T>>,
    len: usize,
}

impl<T> Default for NodeTable<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> NodeTable<T> {
    /// Insert or replace the entry of `id`.
    pub fn insert(&mut self, id: NodeId, value: T) {
        let i = id as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        if self.slots[i].replace(value).is_none() {
            self.len += 1;
        }
    }

    /// Remove the entry of `id`, if any.
    pub fn remove(&mut self, id: NodeId) -> Option<T> {
        let v = self.slots.get_mut(id as usize).and_then(Option::take);
        if v.is_some() {
            self.len -= 1;
        }
        v
    }

    /// The entry of `id`, or `invalid-input` naming the unknown id.
    #[inline]
    pub fn get(&self, id: NodeId) -> Result<&T, PluginError> {
        match self.slots.get(id as usize) {
            Some(Some(v)) => Ok(v),
            _ => Err(unknown_node(id)),
        }
    }

    /// Mutable entry of `id`, or `invalid-input`.
    #[inline]
    pub fn get_mut(&mut self, id: NodeId) -> Result<&mut T, PluginError> {
        match self.slots.get_mut(id as usize) {
            Some(Some(v)) => Ok(v),
            _ => Err(unknown_node(id)),
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// All entries with their ids.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (i as NodeId, v)))
    }

    /// `f` of each candidate's entry, in candidate order (a score per
    /// candidate, say); `invalid-input` for an unknown id.
    ///
    /// The per-pod loop that costs least in a Wasm guest: see [`UNROLL`].
    pub fn map<U: Copy + Default>(
        &self,
        candidates: &[NodeId],
        mut f: impl FnMut(&T) -> U,
    ) -> Result<Vec<U>, PluginError> {
        let mut out = vec![U::default(); candidates.len()];
        let mut ids = candidates.chunks_exact(UNROLL);
        let mut outs = out.chunks_exact_mut(UNROLL);
        for (ids, outs) in ids.by_ref().zip(outs.by_ref()) {
            unrolled!(k => outs[k] = f(self.get(ids[k])?));
        }
        for (&id, o) in ids.remainder().iter().zip(outs.into_remainder()) {
            *o = f(self.get(id)?);
        }
        Ok(out)
    }

    /// Filter verdicts for the candidates: `refuse` answers `None` for a
    /// feasible node's entry and the [`Refusal`] of one it refuses. Stops after
    /// `max_feasible` feasible nodes (0 = never), as [`Verdicts`] does;
    /// `invalid-input` for an unknown id. For refusals whose message is built
    /// per node, use [`Verdicts`].
    ///
    /// The per-pod loop that costs least in a Wasm guest: see [`UNROLL`].
    pub fn filter(
        &self,
        candidates: &[NodeId],
        max_feasible: u32,
        mut refuse: impl FnMut(&T) -> Option<&'static Refusal>,
    ) -> Result<FilterResult, PluginError> {
        let limit = match max_feasible {
            0 => usize::MAX,
            m => m as usize,
        };
        let mut feasible: Vec<NodeId> = Vec::with_capacity(candidates.len().min(limit));
        let mut refused: Vec<(NodeId, &'static Refusal)> = Vec::with_capacity(candidates.len());
        let (mut nf, mut nr) = (0, 0);
        {
            // Written in place: no capacity check and no call to grow a
            // vector inside the loop. Neither can overflow: at most one
            // write per candidate, and no feasible one past `limit`.
            let (fs, rs) = (feasible.spare_capacity_mut(), refused.spare_capacity_mut());
            // One candidate, leaving the scan once `limit` feasible nodes
            // are found. A macro rather than a closure: the compiler keeps
            // the counters in registers then.
            macro_rules! one {
                ($scan:lifetime, $id:expr) => {{
                    let id = $id;
                    match refuse(self.get(id)?) {
                        None => {
                            fs[nf].write(id);
                            nf += 1;
                            if nf == limit {
                                break $scan;
                            }
                        }
                        Some(r) => {
                            rs[nr].write((id, r));
                            nr += 1;
                        }
                    }
                }};
            }
            let mut ids = candidates.chunks_exact(UNROLL);
            'scan: {
                for ids in ids.by_ref() {
                    unrolled!(k => one!('scan, ids[k]));
                }
                for &id in ids.remainder() {
                    one!('scan, id);
                }
            }
        }
        // SAFETY: the scan initialised the first `nf` and `nr` elements (and the
        // elements are `Copy`, so nothing leaks if it returned early).
        unsafe {
            feasible.set_len(nf);
            refused.set_len(nr);
        }
        Ok(with_reasons(feasible, &refused))
    }
}

/// Candidates a per-pod loop of [`NodeTable::map`] and [`NodeTable::filter`]
/// takes at a time. Wasm code checks its deadline on every loop iteration,
/// and Cranelift keeps a loop's counters in memory across that check; over 8
/// candidates per iteration, both are paid once per 8 nodes. Native code
/// gains too, from answers written in place.
pub const UNROLL: usize = 8;
// `unrolled!` writes out this many.
const _: () = assert!(UNROLL == 8);

/// Why [`NodeTable::filter`] refuses a node: upstream's message (e.g.
/// "node(s) had untolerated taint") and whether preemption on that node could
/// not help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The message, counted per node in the pod's FailedScheduling event.
    pub message: &'static str,
    /// Preemption on the node would not help.
    pub unresolvable: bool,
}

impl Refusal {
    /// A refusal that preemption on the node could not lift (a label, a
    /// taint, a name the node does not have).
    pub const fn unresolvable(message: &'static str) -> Self {
        Self {
            message,
            unresolvable: true,
        }
    }

    /// A refusal that preempting pods on the node might lift.
    pub const fn resolvable(message: &'static str) -> Self {
        Self {
            message,
            unresolvable: false,
        }
    }
}

/// The filter answer for `feasible` and `refused`, each refusal's reason
/// listed once.
fn with_reasons(feasible: Vec<NodeId>, refused: &[(NodeId, &'static Refusal)]) -> FilterResult {
    let mut seen: Vec<&'static Refusal> = Vec::new();
    let (rejected, rejected_reasons) = refused
        .iter()
        .map(|&(node, r)| {
            let i = reason_index(&mut seen, |s| std::ptr::eq(*s, r) || *s == r, || r);
            (node, i)
        })
        .unzip();
    let reasons = seen
        .iter()
        .map(|r| Reason {
            message: r.message.to_string(),
            unresolvable: r.unresolvable,
        })
        .collect();
    FilterResult {
        feasible,
        rejected,
        rejected_reasons,
        reasons,
    }
}

/// Most distinct reasons one filter answer may give (the WIT limit).
pub const MAX_REASONS: usize = 64;

/// The index of the listed reason `same` finds; else `new()` is listed last
/// and its index given, or, with [`MAX_REASONS`] listed already, the last
/// one's (the node is then counted under that reason).
fn reason_index<T>(listed: &mut Vec<T>, same: impl Fn(&T) -> bool, new: impl FnOnce() -> T) -> u8 {
    if let Some(i) = listed.iter().position(same) {
        return i as u8;
    }
    if listed.len() < MAX_REASONS {
        listed.push(new());
    }
    (listed.len() - 1) as u8
}

fn unknown_node(id: NodeId) -> PluginError {
    PluginError::InvalidInput(format!("unknown node id {id}"))
}

/// Maps strings (label keys and values) to small integers once, so the per-pod
/// loop compares numbers.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    /// The id of `s`, assigning one if new.
    pub fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(s.to_string(), id);
        id
    }

    /// The id of `s` if it was ever interned.
    pub fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }
}

/// Collects filter verdicts: feasible nodes, rejections with deduplicated
/// reasons, and the `max_feasible` stop.
#[derive(Debug, Clone)]
pub struct Verdicts {
    max: u32,
    out: FilterResult,
}

impl Verdicts {
    /// Stop after `max_feasible` feasible nodes (0 = never).
    pub fn new(max_feasible: u32) -> Self {
        Self::with_capacity(max_feasible, 0)
    }

    /// Like [`Verdicts::new`], sized for `candidates` so the per-pod loop never
    /// reallocates (a reallocation in a guest is a copy and may grow memory).
    pub fn with_capacity(max_feasible: u32, candidates: usize) -> Self {
        let feasible = if max_feasible == 0 {
            candidates
        } else {
            candidates.min(max_feasible as usize)
        };
        Self {
            max: max_feasible,
            out: FilterResult {
                feasible: Vec::with_capacity(feasible),
                rejected: Vec::new(),
                rejected_reasons: Vec::new(),
                reasons: Vec::new(),
            },
        }
    }

    /// Record a feasible node. Returns true when the limit is reached and the
    /// caller should stop examining candidates.
    #[inline]
    pub fn accept(&mut self, id: NodeId) -> bool {
        self.out.feasible.push(id);
        self.max != 0 && self.out.feasible.len() as u32 >= self.max
    }

    /// Record a refused node with its reason (Kubernetes wording, e.g.
    /// "node(s) didn't match Pod's node affinity/selector"). `unresolvable`:
    /// preemption on that node would not help.
    #[inline]
    pub fn reject(&mut self, id: NodeId, reason: &str, unresolvable: bool) {
        let idx = reason_index(
            &mut self.out.reasons,
            |r| r.message == reason && r.unresolvable == unresolvable,
            || Reason {
                message: reason.to_string(),
                unresolvable,
            },
        );
        self.out.rejected.push(id);
        self.out.rejected_reasons.push(idx);
    }

    /// The verdicts.
    pub fn finish(self) -> FilterResult {
        self.out
    }
}

/// Upstream's default normalize step: scale raw scores so the highest becomes
/// 100 (all zero stays zero); with `reverse`, the highest becomes 0.
pub fn normalize(raw: &[i64], reverse: bool) -> Vec<u8> {
    let max = raw.iter().copied().max().unwrap_or(0).max(0);
    raw.iter()
        .map(|&s| {
            let s = s.clamp(0, i64::MAX);
            let n = if max == 0 {
                if reverse {
                    100
                } else {
                    0
                }
            } else {
                let n = s.saturating_mul(100) / max;
                if reverse {
                    100 - n
                } else {
                    n
                }
            };
            n.clamp(0, 100) as u8
        })
        .collect()
}

/// Effective requests of a pod, as upstream's scheduler computes them: the
/// larger of (sum of app containers) and (each init container), plus overhead.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut sum = zero_resources();
    for c in &pod.containers {
        add(&mut sum, &c.requests);
    }
    for c in &pod.init_containers {
        max_in_place(&mut sum, &c.requests);
    }
    add(&mut sum, &pod.overhead);
    sum
}

/// All-zero resources.
pub fn zero_resources() -> Resources {
    Resources {
        milli_cpu: 0,
        memory: 0,
        ephemeral_storage: 0,
        pods: 0,
        scalar: Vec::new(),
    }
}

fn add(into: &mut Resources, r: &Resources) {
    into.milli_cpu += r.milli_cpu;
    into.memory += r.memory;
    into.ephemeral_storage += r.ephemeral_storage;
    into.pods += r.pods;
    for (name, v) in &r.scalar {
        match into.scalar.iter_mut().find(|(n, _)| n == name) {
            Some((_, x)) => *x += v,
            None => into.scalar.push((name.clone(), *v)),
        }
    }
}

fn max_in_place(into: &mut Resources, r: &Resources) {
    into.milli_cpu = into.milli_cpu.max(r.milli_cpu);
    into.memory = into.memory.max(r.memory);
    into.ephemeral_storage = into.ephemeral_storage.max(r.ephemeral_storage);
    into.pods = into.pods.max(r.pods);
    for (name, v) in &r.scalar {
        match into.scalar.iter_mut().find(|(n, _)| n == name) {
            Some((_, x)) => *x = (*x).max(*v),
            None => into.scalar.push((name.clone(), *v)),
        }
    }
}

/// Export a [`SchedulerPlugin`] as the component's `scheduler` interface.
/// Expands to nothing outside wasm, so the crate also builds natively.
#[macro_export]
macro_rules! export_scheduler {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::scheduler::exports::trellis::plugin::scheduler as __w;
            use $crate::scheduler::SchedulerPlugin as _;
            // The plugin, and the pod of the cycle under way.
            static __STATE: $crate::__State<($t, Option<$crate::scheduler::Pod>)> =
                $crate::__State::new();
            struct __Export;
            impl __w::Guest for __Export {
                fn info() -> __w::PluginInfo {
                    <$t>::info()
                }
                fn configure(config: String) -> Result<(), $crate::PluginError> {
                    __STATE.with(|(p, _)| p.configure(&config))
                }
                fn upsert_node(id: __w::NodeId, node: __w::Node) -> Result<(), $crate::PluginError> {
                    let node = $crate::scheduler::Node::from(node);
                    __STATE.with(|(p, _)| p.upsert_node(id, node))
                }
                fn remove_node(id: __w::NodeId) {
                    __STATE.with(|(p, _)| p.remove_node(id))
                }
                fn assume_pod(node: __w::NodeId, pod: __w::PlacedPod) -> Result<(), $crate::PluginError> {
                    __STATE.with(|(p, _)| p.assume_pod(node, pod))
                }
                fn forget_pod(node: __w::NodeId, uid: String) {
                    __STATE.with(|(p, _)| p.forget_pod(node, &uid))
                }
                fn prepare(pod: __w::Pod) -> Result<__w::Phases, $crate::PluginError> {
                    let pod = $crate::scheduler::Pod::from(pod);
                    __STATE.with(|(p, cycle)| {
                        let phases = p.prepare(&pod);
                        *cycle = Some(pod);
                        phases
                    })
                }
                fn filter(
                    candidates: Vec<__w::NodeId>,
                    max_feasible: u32,
                ) -> Result<__w::FilterResult, $crate::PluginError> {
                    __STATE.with(|(p, cycle)| match cycle {
                        Some(pod) => p.filter(pod, &candidates, max_feasible),
                        None => Err($crate::scheduler::__not_prepared()),
                    })
                }
                fn score(candidates: Vec<__w::NodeId>) -> Result<Vec<u8>, $crate::PluginError> {
                    __STATE.with(|(p, cycle)| match cycle {
                        Some(pod) => p.score(pod, &candidates),
                        None => Err($crate::scheduler::__not_prepared()),
                    })
                }
            }
            $crate::bindings::scheduler::__export_scheduler_world!(__Export with_types_in $crate::bindings::scheduler);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_dedupe_reasons_and_stop_at_limit() {
        let mut v = Verdicts::new(2);
        v.reject(0, "a", false);
        assert!(!v.accept(1));
        v.reject(2, "a", false);
        v.reject(3, "b", true);
        assert!(v.accept(4));
        let r = v.finish();
        assert_eq!(r.feasible, vec![1, 4]);
        assert_eq!(r.reasons.len(), 2);
        assert_eq!(r.rejected, vec![0, 2, 3]);
        assert_eq!(r.rejected_reasons, vec![0, 0, 1]);
    }

    #[test]
    fn verdicts_list_at_most_the_contracts_reasons() {
        let mut v = Verdicts::new(0);
        for i in 0..70 {
            v.reject(i, &format!("reason {i}"), false);
        }
        let r = v.finish();
        assert_eq!(r.reasons.len(), MAX_REASONS);
        assert_eq!(r.rejected.len(), 70);
        assert_eq!(r.rejected_reasons[62], 62);
        assert!(r.rejected_reasons[63..].iter().all(|&i| i == 63));
    }

    #[test]
    fn node_table_counts_and_refuses_unknown_ids() {
        let mut t = NodeTable::default();
        t.insert(3, "c");
        t.insert(3, "c2");
        t.insert(0, "a");
        assert_eq!(t.len(), 2);
        assert_eq!(*t.get(3).unwrap(), "c2");
        assert!(matches!(t.get(1), Err(PluginError::InvalidInput(_))));
        assert_eq!(t.remove(3), Some("c2"));
        assert!(t.get(3).is_err());
        assert_eq!(t.len(), 1);
    }

    const FAR: Refusal = Refusal::unresolvable("node(s) too far");
    const FULL: Refusal = Refusal::resolvable("node(s) full");

    /// Each refused node with its reason's index.
    fn rejections(r: &FilterResult) -> impl Iterator<Item = (NodeId, u8)> + '_ {
        r.rejected
            .iter()
            .copied()
            .zip(r.rejected_reasons.iter().copied())
    }

    /// A filter answer in comparable parts.
    #[allow(clippy::type_complexity)]
    fn parts(r: &FilterResult) -> (Vec<NodeId>, Vec<(NodeId, u8)>, Vec<(String, bool)>) {
        (
            r.feasible.clone(),
            rejections(r).collect(),
            r.reasons
                .iter()
                .map(|x| (x.message.clone(), x.unresolvable))
                .collect(),
        )
    }

    /// Nodes 0..n; node i holds i.
    fn table(n: u32) -> NodeTable<u32> {
        let mut t = NodeTable::default();
        for i in 0..n {
            t.insert(i, i);
        }
        t
    }

    #[test]
    fn node_table_map_answers_in_candidate_order_for_every_length() {
        let t = table(40);
        // Every length around the unrolled chunks, in a shuffled order.
        for n in 0..40u32 {
            let cands: Vec<NodeId> = (0..n).map(|i| (i * 7 + 3) % 40).collect();
            let out = t.map(&cands, |v| (v * 1000) as u64).unwrap();
            let want: Vec<u64> = cands.iter().map(|&i| (i * 1000) as u64).collect();
            assert_eq!(out, want, "{n} candidates");
        }
        let err = t.map(&[1, 2, 3, 4, 5, 6, 7, 8, 99], |v| *v).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("99")),
            "{err:?}"
        );
    }

    #[test]
    fn node_table_filter_agrees_with_verdicts() {
        let t = table(40);
        // Multiples of 3 are too far, multiples of 5 (and not 3) are full.
        let refuse = |v: &u32| match (v % 3, v % 5) {
            (0, _) => Some(&FAR),
            (_, 0) => Some(&FULL),
            _ => None,
        };
        for n in 0..40u32 {
            let cands: Vec<NodeId> = (0..n).map(|i| (i * 7 + 3) % 40).collect();
            for max in [0, 1, 2, 7, 8, 9, 17, 40] {
                let mut v = Verdicts::with_capacity(max, cands.len());
                for &id in &cands {
                    match refuse(t.get(id).unwrap()) {
                        Some(r) => v.reject(id, r.message, r.unresolvable),
                        None if v.accept(id) => break,
                        None => {}
                    }
                }
                let got = t.filter(&cands, max, refuse).unwrap();
                assert_eq!(parts(&got), parts(&v.finish()), "{n} candidates, max {max}");
            }
        }
    }

    #[test]
    fn node_table_filter_lists_each_reason_once_and_refuses_unknown_ids() {
        let t = table(20);
        // An equal refusal at another address is the same reason.
        let far_too = Box::leak(Box::new(FAR));
        let cands: Vec<NodeId> = (0..20).collect();
        let r = t
            .filter(&cands, 0, |&v| match v % 4 {
                0 => Some(&FAR),
                1 => Some(far_too),
                2 => Some(&FULL),
                _ => None,
            })
            .unwrap();
        assert_eq!(r.reasons.len(), 2);
        assert_eq!(r.reasons[0].message, "node(s) too far");
        assert!(r.reasons[0].unresolvable && !r.reasons[1].unresolvable);
        assert_eq!(r.rejected.len(), 15);
        assert!(rejections(&r).all(|(node, reason)| reason == u8::from(node % 4 == 2)));
        assert_eq!(r.feasible, vec![3, 7, 11, 15, 19]);
        let err = t.filter(&[0, 1, 55], 0, |_| None).unwrap_err();
        assert!(
            matches!(&err, PluginError::InvalidInput(m) if m.contains("55")),
            "{err:?}"
        );
    }

    #[test]
    fn normalize_scales_to_100() {
        assert_eq!(normalize(&[0, 5, 10], false), vec![0, 50, 100]);
        assert_eq!(normalize(&[0, 5, 10], true), vec![100, 50, 0]);
        assert_eq!(normalize(&[0, 0], false), vec![0, 0]);
    }

    #[test]
    fn pod_requests_take_init_max_and_overhead() {
        let res = |cpu| Resources {
            milli_cpu: cpu,
            ..zero_resources()
        };
        let c = |cpu| Container {
            name: "c".into(),
            image: "i".into(),
            requests: res(cpu),
            host_ports: vec![],
        };
        let pod = Pod {
            name: "p".into(),
            namespace: "d".into(),
            uid: "u".into(),
            labels: vec![],
            namespace_labels: vec![],
            node_name: None,
            node_selector: vec![],
            node_affinity: None,
            pod_affinity: None,
            pod_anti_affinity: None,
            tolerations: vec![],
            topology_spread_constraints: vec![],
            containers: vec![c(100), c(200)],
            init_containers: vec![c(500), c(50)],
            overhead: res(10),
            priority: 0,
        };
        assert_eq!(pod_requests(&pod).milli_cpu, 510);
    }
}
