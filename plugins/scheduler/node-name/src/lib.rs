//! Upstream's `NodeName` filter as a Wasm component: when a pod sets
//! `spec.nodeName`, only the node of that name is feasible.
//!
//! Node names are interned at upsert time, so the per-pod loop compares one
//! integer per candidate.

use trellis_sdk::scheduler::*;

/// Upstream's `ErrReason`.
const ERR_REASON: Refusal = Refusal::unresolvable("node(s) didn't match the requested node name");

/// The plugin: the interned name of every node.
#[derive(Default)]
pub struct NodeName {
    names: Interner,
    nodes: NodeTable<u32>,
}

impl SchedulerPlugin for NodeName {
    fn info() -> PluginInfo {
        plugin_info("NodeName", env!("CARGO_PKG_VERSION"), Phases::FILTER)
            .nodes_only()
            .reads(PodFields::NODE_NAME)
            .reads_nodes(NodeFields::empty())
    }

    /// Upstream's PreFilter: nothing to check for a pod without `nodeName`.
    fn prepare(&mut self, pod: &Pod) -> Result<Phases, PluginError> {
        Ok(if pod.node_name.is_some() {
            Phases::FILTER
        } else {
            Phases::empty()
        })
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let name = self.names.intern(&node.name);
        self.nodes.insert(id, name);
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        self.nodes.remove(id);
    }

    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max: u32,
    ) -> Result<FilterResult, PluginError> {
        // `None`: no restriction. `Some(None)`: a name no node ever had.
        let wanted = pod.node_name.as_deref().map(|n| self.names.get(n));
        self.nodes.filter(candidates, max, |&name| match wanted {
            Some(w) if w != Some(name) => Some(&ERR_REASON),
            _ => None,
        })
    }
}

trellis_sdk::export_scheduler!(NodeName);
