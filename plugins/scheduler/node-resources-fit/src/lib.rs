//! Upstream kube-scheduler's `NodeResourcesFit` as a Trellis scheduler plugin.
//!
//! **Filter**: a node is refused when it cannot hold one more pod (`Too many
//! pods`) or when the pod's requests (max of init containers vs sum of
//! containers, plus overhead) exceed what is left of its allocatable cpu,
//! memory, ephemeral-storage or a scalar resource (`Insufficient <name>`). A
//! resource the pod does not request is not checked. Upstream reports every
//! insufficient resource; the contract carries one reason per node, so this
//! plugin reports the first in upstream's order: pods, cpu, memory,
//! ephemeral-storage, then scalar resources in the order the pod lists them.
//! All these reasons are resolvable: preemption could free the room.
//!
//! **Score**: `LeastAllocated` (default) or `MostAllocated` over the
//! configured resources (default cpu and memory, weight 1 each), as upstream:
//! for cpu and memory, a pod or container that requests nothing counts as
//! 100m cpu and 200Mi memory.
//!
//! ```json
//! {"scoringStrategy": {"type": "MostAllocated",
//!   "resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]},
//!  "ignoredResources": ["example.com/foo"], "ignoredResourceGroups": ["example.org"]}
//! ```
//!
//! Per node the plugin keeps only numbers (allocatable, requested sums with
//! and without the non-zero defaults, pod count), updated by `assume-pod` and
//! `forget-pod`, so `filter` and `score` are a few integer comparisons per
//! candidate.

use std::collections::HashMap;

use serde::Deserialize;
use trellis_sdk::resources::{
    is_extended_resource as is_extended, is_scalar_resource as is_scalar, kind_of, Amounts,
    ResourceKind as Kind,
};
use trellis_sdk::scheduler::*;

/// Upstream's `DefaultMilliCPURequest`: what a container without a cpu
/// request counts as when scoring.
const DEFAULT_MILLI_CPU: i64 = 100;
/// Upstream's `DefaultMemoryRequest` (200Mi).
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;
/// Upstream's `MaxNodeScore`.
const MAX_SCORE: i64 = 100;

const TOO_MANY_PODS: &str = "Too many pods";
const INSUFFICIENT_CPU: &str = "Insufficient cpu";
const INSUFFICIENT_MEMORY: &str = "Insufficient memory";
const INSUFFICIENT_STORAGE: &str = "Insufficient ephemeral-storage";

/// What one placed pod adds to its node.
#[derive(Debug, Clone)]
struct Usage {
    node: NodeId,
    milli_cpu: i64,
    memory: i64,
    storage: i64,
    scalar: Vec<(usize, i64)>,
    /// Cpu and memory with upstream's non-zero defaults, for scoring.
    nonzero_cpu: i64,
    nonzero_memory: i64,
}

/// Per-node numbers.
#[derive(Debug, Clone, Default)]
struct NodeState {
    allocatable: Amounts,
    allowed_pods: i64,
    requested: Amounts,
    nonzero_cpu: i64,
    nonzero_memory: i64,
    pods: i64,
}

impl NodeState {
    fn apply(&mut self, u: &Usage, sign: i64) {
        self.requested.milli_cpu += sign * u.milli_cpu;
        self.requested.memory += sign * u.memory;
        self.requested.storage += sign * u.storage;
        for &(id, v) in &u.scalar {
            self.requested.add_scalar(id, sign * v);
        }
        self.nonzero_cpu += sign * u.nonzero_cpu;
        self.nonzero_memory += sign * u.nonzero_memory;
        self.pods += sign;
    }
}

/// Scoring strategies this plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    LeastAllocated,
    MostAllocated,
}

#[derive(Debug, Clone)]
struct ScoreResource {
    kind: Kind,
    weight: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    ignored_resources: Vec<String>,
    #[serde(default)]
    ignored_resource_groups: Vec<String>,
    scoring_strategy: Option<StrategyConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyConfig {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceSpec {
    name: String,
    weight: i64,
}

/// The plugin.
pub struct NodeResourcesFit {
    strategy: Strategy,
    resources: Vec<ScoreResource>,
    ignored_resources: Vec<String>,
    ignored_groups: Vec<String>,
    scalar_names: Interner,
    nodes: NodeTable<NodeState>,
    pods: HashMap<String, Usage>,
}

impl Default for NodeResourcesFit {
    fn default() -> Self {
        Self {
            strategy: Strategy::LeastAllocated,
            resources: default_resources(),
            ignored_resources: Vec::new(),
            ignored_groups: Vec::new(),
            scalar_names: Interner::default(),
            nodes: NodeTable::default(),
            pods: HashMap::new(),
        }
    }
}

fn default_resources() -> Vec<ScoreResource> {
    vec![
        ScoreResource {
            kind: Kind::Cpu,
            weight: 1,
        },
        ScoreResource {
            kind: Kind::Memory,
            weight: 1,
        },
    ]
}

fn invalid(msg: String) -> PluginError {
    PluginError::InvalidConfig(msg)
}

/// Requests of the pod being scheduled, for scoring: cpu and memory with
/// upstream's non-zero defaults applied per container (a request of 0 counts
/// as missing), then max(sum of containers, each init container) + overhead.
fn nonzero_requests(pod: &Pod) -> (i64, i64) {
    let nz = |r: &Resources| {
        (
            if r.milli_cpu == 0 {
                DEFAULT_MILLI_CPU
            } else {
                r.milli_cpu
            },
            if r.memory == 0 {
                DEFAULT_MEMORY
            } else {
                r.memory
            },
        )
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &pod.containers {
        let (c, m) = nz(&c.requests);
        cpu += c;
        mem += m;
    }
    for c in &pod.init_containers {
        let (c, m) = nz(&c.requests);
        cpu = cpu.max(c);
        mem = mem.max(m);
    }
    (cpu + pod.overhead.milli_cpu, mem + pod.overhead.memory)
}

#[inline]
fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_SCORE / capacity
}

#[inline]
fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    // Requests may exceed capacity because of the non-zero defaults.
    requested.min(capacity) * MAX_SCORE / capacity
}

/// One scalar resource the pod asks for, prepared once per filter call.
struct ScalarWant {
    id: Option<usize>,
    amount: i64,
    reason: String,
}

impl NodeResourcesFit {
    fn ignored(&self, name: &str) -> bool {
        if !is_extended(name) {
            return false;
        }
        let group = name.split('/').next().unwrap_or_default();
        self.ignored_resources.iter().any(|r| r == name)
            || self.ignored_groups.iter().any(|g| g == group)
    }

    fn usage(&mut self, node: NodeId, r: &Resources) -> Usage {
        let scalar = r
            .scalar
            .iter()
            .filter(|(n, _)| is_scalar(n))
            .map(|(n, v)| (self.scalar_names.intern(n) as usize, *v))
            .collect();
        Usage {
            node,
            milli_cpu: r.milli_cpu,
            memory: r.memory,
            storage: r.ephemeral_storage,
            scalar,
            nonzero_cpu: if r.milli_cpu == 0 {
                DEFAULT_MILLI_CPU
            } else {
                r.milli_cpu
            },
            nonzero_memory: if r.memory == 0 {
                DEFAULT_MEMORY
            } else {
                r.memory
            },
        }
    }

    fn forget(&mut self, uid: &str) {
        if let Some(u) = self.pods.remove(uid) {
            if let Ok(n) = self.nodes.get_mut(u.node) {
                n.apply(&u, -1);
            }
        }
    }
}

impl SchedulerPlugin for NodeResourcesFit {
    fn info() -> PluginInfo {
        plugin_info("NodeResourcesFit", "0.1.0", Phases::FILTER | Phases::SCORE)
            .reads(PodFields::CONTAINERS)
            .reads_nodes(NodeFields::ALLOCATABLE)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let c: Config = serde_json::from_str(config)
            .map_err(|e| invalid(format!("invalid NodeResourcesFit configuration: {e}")))?;
        if let Some(s) = c.scoring_strategy {
            self.strategy = match s.kind.as_str() {
                "LeastAllocated" => Strategy::LeastAllocated,
                "MostAllocated" => Strategy::MostAllocated,
                other => {
                    return Err(invalid(format!(
                        "scoringStrategy.type: Unsupported value: {other:?}: supported values: \"LeastAllocated\", \"MostAllocated\""
                    )))
                }
            };
            if !s.resources.is_empty() {
                let mut resources = Vec::with_capacity(s.resources.len());
                for (i, r) in s.resources.iter().enumerate() {
                    if !(1..=100).contains(&r.weight) {
                        return Err(invalid(format!(
                            "scoringStrategy.resources[{i}].weight: Invalid value: {}: resource weight of {} not in valid range [1, 100]",
                            r.weight, r.name
                        )));
                    }
                    if s.resources[..i].iter().any(|x| x.name == r.name) {
                        return Err(invalid(format!(
                            "scoringStrategy.resources[{i}].name: Duplicate value: {:?}",
                            r.name
                        )));
                    }
                    resources.push(ScoreResource {
                        kind: kind_of(&r.name),
                        weight: r.weight,
                    });
                }
                self.resources = resources;
            }
        }
        for (i, g) in c.ignored_resource_groups.iter().enumerate() {
            if g.contains('/') {
                return Err(invalid(format!(
                    "ignoredResourceGroups[{i}]: Invalid value: {g:?}: resource group name can't contain '/'"
                )));
            }
        }
        self.ignored_resources = c.ignored_resources;
        self.ignored_groups = c.ignored_resource_groups;
        Ok(())
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let a = &node.allocatable;
        let allocatable = Amounts::from_resources(a, &mut self.scalar_names);
        // A replaced node keeps the pods assumed on it.
        match self.nodes.get_mut(id) {
            Ok(n) => {
                n.allocatable = allocatable;
                n.allowed_pods = a.pods;
            }
            Err(_) => self.nodes.insert(
                id,
                NodeState {
                    allocatable,
                    allowed_pods: a.pods,
                    ..NodeState::default()
                },
            ),
        }
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        if self.nodes.remove(id).is_some() {
            self.pods.retain(|_, u| u.node != id);
        }
    }

    fn assume_pod(&mut self, node: NodeId, pod: PlacedPod) -> Result<(), PluginError> {
        self.nodes.get(node)?;
        self.forget(&pod.uid);
        let usage = self.usage(node, &pod.requests);
        self.nodes.get_mut(node)?.apply(&usage, 1);
        self.pods.insert(pod.uid, usage);
        Ok(())
    }

    fn forget_pod(&mut self, _node: NodeId, uid: &str) {
        self.forget(uid);
    }

    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, PluginError> {
        let want = pod_requests(pod);
        let scalars: Vec<ScalarWant> = want
            .scalar
            .iter()
            .filter(|(n, v)| *v != 0 && is_scalar(n) && !self.ignored(n))
            .map(|(n, v)| ScalarWant {
                id: self.scalar_names.get(n).map(|i| i as usize),
                amount: *v,
                reason: format!("Insufficient {n}"),
            })
            .collect();
        let mut v = Verdicts::with_capacity(max_feasible, candidates.len());
        for &id in candidates {
            let n = self.nodes.get(id)?;
            let (alloc, used) = (&n.allocatable, &n.requested);
            let reason = if n.pods + 1 > n.allowed_pods {
                Some(TOO_MANY_PODS)
            } else if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - used.milli_cpu {
                Some(INSUFFICIENT_CPU)
            } else if want.memory > 0 && want.memory > alloc.memory - used.memory {
                Some(INSUFFICIENT_MEMORY)
            } else if want.ephemeral_storage > 0
                && want.ephemeral_storage > alloc.storage - used.storage
            {
                Some(INSUFFICIENT_STORAGE)
            } else {
                scalars
                    .iter()
                    .find(|s| {
                        let (a, u) = match s.id {
                            Some(i) => (alloc.scalar(i), used.scalar(i)),
                            None => (0, 0),
                        };
                        s.amount > a - u
                    })
                    .map(|s| s.reason.as_str())
            };
            match reason {
                Some(r) => v.reject(id, r, false),
                None => {
                    if v.accept(id) {
                        break;
                    }
                }
            }
        }
        Ok(v.finish())
    }

    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let actual = pod_requests(pod);
        let (nz_cpu, nz_mem) = nonzero_requests(pod);
        // (kind, scalar id, weight, the pod's own request), resolved once per pod.
        let plan: Vec<(&Kind, Option<usize>, i64, i64)> = self
            .resources
            .iter()
            .filter_map(|r| {
                let (sid, req) = match &r.kind {
                    Kind::Cpu => (None, nz_cpu),
                    Kind::Memory => (None, nz_mem),
                    Kind::Storage => (None, actual.ephemeral_storage),
                    Kind::Scalar(name) => {
                        let req = actual
                            .scalar
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(0, |(_, v)| *v);
                        // Upstream skips an extended resource the pod does not request.
                        if req == 0 {
                            return None;
                        }
                        (self.scalar_names.get(name).map(|i| i as usize), req)
                    }
                    Kind::Ignored => return None,
                };
                Some((&r.kind, sid, r.weight, req))
            })
            .collect();
        let strategy = self.strategy;
        self.nodes.map(candidates, |n| {
            let (mut total, mut weights) = (0i64, 0i64);
            for &(kind, sid, weight, req) in &plan {
                let (alloc, requested) = match kind {
                    Kind::Cpu => (n.allocatable.milli_cpu, n.nonzero_cpu + req),
                    Kind::Memory => (n.allocatable.memory, n.nonzero_memory + req),
                    Kind::Storage => (n.allocatable.storage, n.requested.storage + req),
                    Kind::Scalar(_) => match sid {
                        Some(i) => (n.allocatable.scalar(i), n.requested.scalar(i) + req),
                        None => (0, 0),
                    },
                    Kind::Ignored => (0, 0),
                };
                if alloc == 0 {
                    continue;
                }
                let s = match strategy {
                    Strategy::LeastAllocated => least_requested(requested, alloc),
                    Strategy::MostAllocated => most_requested(requested, alloc),
                };
                total += s * weight;
                weights += weight;
            }
            let score = if weights == 0 { 0 } else { total / weights };
            score.clamp(0, MAX_SCORE) as u8
        })
    }
}

trellis_sdk::export_scheduler!(NodeResourcesFit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_formulas() {
        assert_eq!(least_requested(3000, 4000), 25);
        assert_eq!(least_requested(5000, 4000), 0);
        assert_eq!(most_requested(3000, 4000), 75);
        assert_eq!(most_requested(5000, 4000), 100);
        assert_eq!(most_requested(1, 0), 0);
    }

    #[test]
    fn scalar_names_follow_upstream() {
        assert!(is_scalar("nvidia.com/gpu"));
        assert!(is_scalar("hugepages-2Mi"));
        assert!(is_scalar("kubernetes.io/foo"));
        assert!(!is_scalar("foo"));
        assert!(!is_extended("kubernetes.io/foo"));
    }
}
