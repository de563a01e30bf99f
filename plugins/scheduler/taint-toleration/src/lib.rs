//! Upstream's `TaintToleration` plugin as a Wasm component.
//!
//! - Filter: a node is refused when it has a `NoSchedule` or `NoExecute` taint
//!   that none of the pod's tolerations tolerates; the reason names the first
//!   such taint in the node's order, as upstream: `node(s) had untolerated
//!   taint {key: value}`.
//! - Score: the number of `PreferNoSchedule` taints not tolerated by the pod's
//!   tolerations whose effect is `PreferNoSchedule` or empty, normalized
//!   reversed (fewest → 100; all zero → every node 100).
//!
//! Taint keys and values are interned at upsert time and each pod's
//! tolerations are compiled to ids once, so the per-node loop compares integers.

use trellis_sdk::scheduler::*;
use trellis_sdk::TolerationOperator;

/// A taint reduced to ids.
#[derive(Debug, Clone, Copy)]
struct TaintIds {
    key: u32,
    value: u32,
}

/// A `NoSchedule`/`NoExecute` taint, with its refusal message built once.
#[derive(Debug, Clone)]
struct HardTaint {
    ids: TaintIds,
    effect: TaintEffect,
    reason: String,
}

/// What the plugin keeps per node.
#[derive(Debug, Clone, Default)]
struct NodeTaints {
    /// `NoSchedule` and `NoExecute` taints, in the node's order.
    hard: Vec<HardTaint>,
    /// `PreferNoSchedule` taints.
    soft: Vec<TaintIds>,
}

/// How a compiled toleration matches an interned string.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Match {
    Any,
    Id(u32),
    /// The string was never interned: no taint can have it.
    Never,
}

impl Match {
    #[inline]
    fn matches(self, id: u32) -> bool {
        match self {
            Match::Any => true,
            Match::Id(x) => x == id,
            Match::Never => false,
        }
    }
}

/// A pod toleration compiled against the interner (same rules as
/// `trellis_sdk::taints::tolerates`, upstream's `ToleratesTaint`).
#[derive(Debug, Clone, Copy)]
struct CompiledToleration {
    key: Match,
    value: Match,
    effect: Option<TaintEffect>,
}

impl CompiledToleration {
    #[inline]
    fn tolerates(&self, t: TaintIds, effect: TaintEffect) -> bool {
        self.effect.is_none_or(|e| e == effect)
            && self.key.matches(t.key)
            && self.value.matches(t.value)
    }
}

/// The plugin.
#[derive(Default)]
pub struct TaintToleration {
    strings: Interner,
    nodes: NodeTable<NodeTaints>,
    /// Nodes with a NoSchedule/NoExecute taint, and with a PreferNoSchedule one.
    hard_tainted: usize,
    soft_tainted: usize,
}

impl TaintToleration {
    fn compile(&self, tolerations: &[Toleration]) -> Vec<CompiledToleration> {
        let id = |s: &str| self.strings.get(s).map_or(Match::Never, Match::Id);
        tolerations
            .iter()
            .map(|t| CompiledToleration {
                key: if t.key.is_empty() {
                    Match::Any
                } else {
                    id(&t.key)
                },
                value: match t.operator {
                    TolerationOperator::Exists => Match::Any,
                    TolerationOperator::Equal => id(&t.value),
                },
                effect: t.effect,
            })
            .collect()
    }
}

impl SchedulerPlugin for TaintToleration {
    fn info() -> PluginInfo {
        plugin_info(
            "TaintToleration",
            env!("CARGO_PKG_VERSION"),
            Phases::FILTER | Phases::SCORE,
        )
        .nodes_only()
        .reads(PodFields::TOLERATIONS)
        .reads_nodes(NodeFields::TAINTS)
    }

    /// With no node tainted so, every node passes (filter) or scores the
    /// same (score): skip the phase.
    fn prepare(&mut self, _pod: &Pod) -> Result<Phases, PluginError> {
        let mut phases = Phases::empty();
        if self.hard_tainted > 0 {
            phases |= Phases::FILTER;
        }
        if self.soft_tainted > 0 {
            phases |= Phases::SCORE;
        }
        Ok(phases)
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let mut facts = NodeTaints::default();
        for t in &node.taints {
            let ids = TaintIds {
                key: self.strings.intern(&t.key),
                value: self.strings.intern(&t.value),
            };
            match t.effect {
                TaintEffect::PreferNoSchedule => facts.soft.push(ids),
                effect => facts.hard.push(HardTaint {
                    ids,
                    effect,
                    reason: format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value),
                }),
            }
        }
        self.remove_node(id);
        self.hard_tainted += usize::from(!facts.hard.is_empty());
        self.soft_tainted += usize::from(!facts.soft.is_empty());
        self.nodes.insert(id, facts);
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        if let Some(old) = self.nodes.remove(id) {
            self.hard_tainted -= usize::from(!old.hard.is_empty());
            self.soft_tainted -= usize::from(!old.soft.is_empty());
        }
    }

    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max: u32,
    ) -> Result<FilterResult, PluginError> {
        let tols = self.compile(&pod.tolerations);
        let mut v = Verdicts::with_capacity(max, candidates.len());
        for &id in candidates {
            let node = self.nodes.get(id)?;
            let untolerated = node
                .hard
                .iter()
                .find(|t| !tols.iter().any(|tol| tol.tolerates(t.ids, t.effect)));
            match untolerated {
                Some(t) => v.reject(id, &t.reason, true),
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
        // Upstream's getAllTolerationPreferNoSchedule: an empty effect means
        // every effect, PreferNoSchedule included.
        let tols: Vec<CompiledToleration> = self
            .compile(&pod.tolerations)
            .into_iter()
            .filter(|t| t.effect.is_none_or(|e| e == TaintEffect::PreferNoSchedule))
            .collect();
        let raw = self.nodes.map(candidates, |node| {
            node.soft
                .iter()
                .filter(|&&t| {
                    !tols
                        .iter()
                        .any(|tol| tol.tolerates(t, TaintEffect::PreferNoSchedule))
                })
                .count() as i64
        })?;
        Ok(normalize(&raw, true))
    }
}

trellis_sdk::export_scheduler!(TaintToleration);
