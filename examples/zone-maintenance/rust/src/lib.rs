//! Example scheduler plugin (see ../README.md for the exact behaviour, shared
//! with the Python, JavaScript and C versions): refuse nodes labelled
//! `maintenance=true`; score nodes whose zone is in `preferredZones` higher,
//! the earlier in the list the higher.
//!
//! Node records are reduced to two small numbers at upsert time, so the per-pod
//! loops touch no strings.

use trellis_sdk::scheduler::*;

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const MAINTENANCE: Refusal = Refusal::unresolvable("node(s) under maintenance");

/// What the plugin keeps per node.
#[derive(Debug, Clone, Copy)]
struct NodeFacts {
    maintenance: bool,
    /// Score already computed from the zone rank.
    score: u8,
}

/// The plugin.
#[derive(Default)]
pub struct ZoneMaintenance {
    preferred: Vec<String>,
    nodes: NodeTable<NodeFacts>,
}

impl ZoneMaintenance {
    fn zone_score(&self, labels: &[Label]) -> u8 {
        let n = self.preferred.len();
        match label_value(labels, ZONE_LABEL)
            .and_then(|z| self.preferred.iter().position(|p| p == z))
        {
            Some(i) => (100 - (i * 100) / n) as u8,
            None => 0,
        }
    }
}

/// The documented configuration, and nothing else: unknown or duplicate
/// fields and wrong types are refused (as the other languages do).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(rename = "preferredZones", default)]
    preferred_zones: Vec<String>,
}

fn parse_config(config: &str) -> Result<Vec<String>, PluginError> {
    serde_json::from_str::<Config>(config)
        .map(|c| c.preferred_zones)
        .map_err(|e| {
            PluginError::InvalidConfig(format!(
                "invalid configuration, expected {{\"preferredZones\": [\"zone\", ...]}}: {e}"
            ))
        })
}

impl SchedulerPlugin for ZoneMaintenance {
    fn info() -> PluginInfo {
        // Verdicts and scores depend on nodes only: the host sends no pods.
        plugin_info("ZoneMaintenance", "0.4.0", Phases::FILTER | Phases::SCORE)
            .nodes_only()
            .reads(PodFields::empty())
            .reads_nodes(NodeFields::LABELS)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.preferred = parse_config(config)?;
        Ok(())
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let facts = NodeFacts {
            maintenance: label_value(&node.labels, "maintenance") == Some("true"),
            score: self.zone_score(&node.labels),
        };
        self.nodes.insert(id, facts);
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        self.nodes.remove(id);
    }

    fn filter(
        &mut self,
        _pod: &Pod,
        candidates: &[NodeId],
        max: u32,
    ) -> Result<FilterResult, PluginError> {
        self.nodes
            .filter(candidates, max, |n| n.maintenance.then_some(&MAINTENANCE))
    }

    fn score(&mut self, _pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        self.nodes.map(candidates, |n| n.score)
    }
}

trellis_sdk::export_scheduler!(ZoneMaintenance);
