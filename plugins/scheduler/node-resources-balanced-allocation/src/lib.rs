//! Upstream kube-scheduler's `NodeResourcesBalancedAllocation` as a Trellis
//! scheduler plugin (score only).
//!
//! For each configured resource (default cpu and memory) the fraction
//! `(requested on the node + the pod's request) / allocatable` is taken,
//! capped at 1; the score is `(1 - std) * 100` truncated, where `std` is the
//! standard deviation of the fractions (for two resources `|f1 - f2| / 2`).
//! As upstream today, the sums use the pods' actual requests (no 100m/200Mi
//! defaults), a resource a node has none of is left out, a scalar resource
//! the pod does not request is left out, and a pod that requests none of the
//! configured resources (best effort) is not scored: every node gets 0.
//!
//! Config (optional): `{"resources": [{"name": "cpu", "weight": 1}, ...]}`;
//! as upstream, a weight must be 1 (0 or absent means 1) and is otherwise
//! unused.

use std::collections::HashMap;

use serde::Deserialize;
use trellis_sdk::resources::{
    is_scalar_resource as is_scalar, kind_of, Amounts, ResourceKind as Kind,
};
use trellis_sdk::scheduler::*;

/// Upstream's `MaxNodeScore`.
const MAX_SCORE: f64 = 100.0;

/// What one placed pod adds to its node.
#[derive(Debug, Clone)]
struct Usage {
    node: NodeId,
    milli_cpu: i64,
    memory: i64,
    storage: i64,
    scalar: Vec<(usize, i64)>,
}

#[derive(Debug, Clone, Default)]
struct NodeState {
    allocatable: Amounts,
    requested: Amounts,
}

impl NodeState {
    fn apply(&mut self, u: &Usage, sign: i64) {
        self.requested.milli_cpu += sign * u.milli_cpu;
        self.requested.memory += sign * u.memory;
        self.requested.storage += sign * u.storage;
        for &(id, v) in &u.scalar {
            self.requested.add_scalar(id, sign * v);
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    resources: Vec<ResourceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceSpec {
    name: String,
    #[serde(default)]
    weight: i64,
}

/// The plugin.
pub struct BalancedAllocation {
    resources: Vec<Kind>,
    scalar_names: Interner,
    nodes: NodeTable<NodeState>,
    pods: HashMap<String, Usage>,
}

impl Default for BalancedAllocation {
    fn default() -> Self {
        Self {
            resources: vec![Kind::Cpu, Kind::Memory],
            scalar_names: Interner::default(),
            nodes: NodeTable::default(),
            pods: HashMap::new(),
        }
    }
}

/// Upstream's `balancedResourceScorer` over the fractions of the resources a
/// node has: `(1 - std) * 100`, truncated toward zero as Go's `int64(..)`.
fn balanced_score(fractions: &[f64]) -> i64 {
    let std = match fractions.len() {
        0 | 1 => 0.0,
        2 => ((fractions[0] - fractions[1]) / 2.0).abs(),
        n => {
            let mean = fractions.iter().sum::<f64>() / n as f64;
            let sum: f64 = fractions.iter().map(|f| (f - mean) * (f - mean)).sum();
            (sum / n as f64).sqrt()
        }
    };
    ((1.0 - std) * MAX_SCORE) as i64
}

impl BalancedAllocation {
    fn forget(&mut self, uid: &str) {
        if let Some(u) = self.pods.remove(uid) {
            if let Ok(n) = self.nodes.get_mut(u.node) {
                n.apply(&u, -1);
            }
        }
    }
}

impl SchedulerPlugin for BalancedAllocation {
    fn info() -> PluginInfo {
        plugin_info("NodeResourcesBalancedAllocation", "0.1.0", Phases::SCORE)
            .reads(PodFields::CONTAINERS)
            .reads_nodes(NodeFields::ALLOCATABLE)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let c: Config = serde_json::from_str(config).map_err(|e| {
            PluginError::InvalidConfig(format!(
                "invalid NodeResourcesBalancedAllocation configuration: {e}"
            ))
        })?;
        if c.resources.is_empty() {
            return Ok(());
        }
        let mut resources = Vec::with_capacity(c.resources.len());
        for (i, r) in c.resources.iter().enumerate() {
            if c.resources[..i].iter().any(|x| x.name == r.name) {
                return Err(PluginError::InvalidConfig(format!(
                    "resources[{i}].name: Duplicate value: {:?}",
                    r.name
                )));
            }
            if r.weight != 0 && r.weight != 1 {
                return Err(PluginError::InvalidConfig(format!(
                    "resources[{i}].weight: Invalid value: {}: must be 1",
                    r.weight
                )));
            }
            resources.push(kind_of(&r.name));
        }
        self.resources = resources;
        Ok(())
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let a = &node.allocatable;
        let allocatable = Amounts::from_resources(a, &mut self.scalar_names);
        // A replaced node keeps the pods assumed on it.
        match self.nodes.get_mut(id) {
            Ok(n) => n.allocatable = allocatable,
            Err(_) => self.nodes.insert(
                id,
                NodeState {
                    allocatable,
                    requested: Amounts::default(),
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
        let r = &pod.requests;
        let scalar = r
            .scalar
            .iter()
            .filter(|(n, _)| is_scalar(n))
            .map(|(n, v)| (self.scalar_names.intern(n) as usize, *v))
            .collect();
        let usage = Usage {
            node,
            milli_cpu: r.milli_cpu,
            memory: r.memory,
            storage: r.ephemeral_storage,
            scalar,
        };
        self.nodes.get_mut(node)?.apply(&usage, 1);
        self.pods.insert(pod.uid, usage);
        Ok(())
    }

    fn forget_pod(&mut self, _node: NodeId, uid: &str) {
        self.forget(uid);
    }

    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let want = pod_requests(pod);
        // (kind, scalar id, the pod's request) per configured resource.
        let plan: Vec<(&Kind, Option<usize>, i64)> = self
            .resources
            .iter()
            .map(|k| match k {
                Kind::Cpu => (k, None, want.milli_cpu),
                Kind::Memory => (k, None, want.memory),
                Kind::Storage => (k, None, want.ephemeral_storage),
                Kind::Scalar(name) => {
                    let req = want
                        .scalar
                        .iter()
                        .find(|(n, _)| n == name)
                        .map_or(0, |(_, v)| *v);
                    (k, self.scalar_names.get(name).map(|i| i as usize), req)
                }
                Kind::Ignored => (k, None, 0),
            })
            .collect();
        // Best effort: upstream skips the plugin, which scores every node 0.
        if plan.iter().all(|&(_, _, req)| req == 0) {
            return self.nodes.map(candidates, |_| 0);
        }
        let mut fractions = Vec::with_capacity(plan.len());
        self.nodes.map(candidates, |n| {
            fractions.clear();
            for &(kind, sid, req) in &plan {
                if matches!(kind, Kind::Ignored) || (matches!(kind, Kind::Scalar(_)) && req == 0) {
                    continue;
                }
                let alloc = n.allocatable.get(kind, sid);
                if alloc == 0 {
                    continue;
                }
                let requested = n.requested.get(kind, sid) + req;
                fractions.push((requested as f64 / alloc as f64).min(1.0));
            }
            balanced_score(&fractions).clamp(0, 100) as u8
        })
    }
}

trellis_sdk::export_scheduler!(BalancedAllocation);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_deviation_score() {
        assert_eq!(balanced_score(&[0.5, 0.5]), 100);
        assert_eq!(balanced_score(&[0.25, 0.75]), 75);
        assert_eq!(balanced_score(&[1.0, 0.0]), 50);
        assert_eq!(balanced_score(&[0.3]), 100);
        // mean 0.5, variance (0.25+0+0.25)/3: std ~0.408 -> 59.
        assert_eq!(balanced_score(&[0.0, 0.5, 1.0]), 59);
    }
}
