//! Upstream's `NodeUnschedulable` filter as a Wasm component: a node with
//! `spec.unschedulable` (cordoned) is refused unless the pod tolerates the
//! taint `node.kubernetes.io/unschedulable:NoSchedule`.

use trellis_sdk::scheduler::*;
use trellis_sdk::taints::tolerates;

/// Upstream's `ErrReasonUnschedulable`.
const ERR_REASON: Refusal = Refusal::unresolvable("node(s) were unschedulable");

/// The taint a pod must tolerate to land on a cordoned node (`v1.TaintNodeUnschedulable`).
const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

/// The plugin: whether each node is unschedulable.
#[derive(Default)]
pub struct NodeUnschedulable {
    nodes: NodeTable<bool>,
    /// How many nodes are unschedulable.
    cordoned: usize,
}

impl SchedulerPlugin for NodeUnschedulable {
    fn info() -> PluginInfo {
        plugin_info(
            "NodeUnschedulable",
            env!("CARGO_PKG_VERSION"),
            Phases::FILTER,
        )
        .nodes_only()
        .reads(PodFields::TOLERATIONS)
        .reads_nodes(NodeFields::empty())
    }

    /// With no node cordoned every node passes: skip the filter.
    fn prepare(&mut self, _pod: &Pod) -> Result<Phases, PluginError> {
        Ok(if self.cordoned > 0 {
            Phases::FILTER
        } else {
            Phases::empty()
        })
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        self.remove_node(id);
        self.cordoned += usize::from(node.unschedulable);
        self.nodes.insert(id, node.unschedulable);
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        if self.nodes.remove(id) == Some(true) {
            self.cordoned -= 1;
        }
    }

    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max: u32,
    ) -> Result<FilterResult, PluginError> {
        let taint = Taint {
            key: TAINT_KEY.to_string(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        };
        let tolerated = pod.tolerations.iter().any(|t| tolerates(t, &taint));
        self.nodes.filter(candidates, max, |&cordoned| {
            (cordoned && !tolerated).then_some(&ERR_REASON)
        })
    }
}

trellis_sdk::export_scheduler!(NodeUnschedulable);
