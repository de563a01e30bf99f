//! Upstream's `NodeAffinity` plugin as a Wasm component.
//!
//! - Filter: the pod's `nodeSelector` (every pair) and its required node
//!   affinity (terms ORed; each term ANDs its expressions and fields; a term
//!   with no requirement, or one that does not parse, matches nothing; no terms
//!   means no requirement). Refused nodes get upstream's
//!   `node(s) didn't match Pod's node affinity/selector`. As upstream's
//!   PreFilter, required terms that each pin `metadata.name` to disjoint sets
//!   refuse every node with `pod affinity terms conflict`.
//! - Score: the sum of the weights of the preferred terms a node matches,
//!   normalized so the best node gets 100 (all zero stays zero).
//! - Config (optional), upstream's `NodeAffinityArgs`:
//!   `{"addedAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
//!   {"nodeSelectorTerms": [...]}, "preferredDuringSchedulingIgnoredDuringExecution":
//!   [{"weight": 1, "preference": {...}}]}}` — applied to every pod; a node
//!   outside the added required affinity is refused with
//!   `node(s) didn't match scheduler-enforced node affinity`.
//!
//! Label keys, values and node names are interned at upsert time (with label
//! values that are integers parsed once for `Gt`/`Lt`); each pod's selectors
//! are compiled to ids once, so the per-node loop compares integers.

use std::collections::HashSet;

use serde::Deserialize;
use trellis_sdk::scheduler::*;
use trellis_sdk::{NodeSelectorTerm, PreferredSchedulingTerm, Requirement, SelectorOperator};

/// Upstream's `ErrReasonPod`.
const ERR_REASON_POD: Refusal =
    Refusal::unresolvable("node(s) didn't match Pod's node affinity/selector");
/// Upstream's `errReasonEnforced`.
const ERR_REASON_ENFORCED: Refusal =
    Refusal::unresolvable("node(s) didn't match scheduler-enforced node affinity");
/// Upstream's `errReasonConflict`.
const ERR_REASON_CONFLICT: Refusal = Refusal::unresolvable("pod affinity terms conflict");
/// The only node field a `matchFields` requirement can name.
const NAME_FIELD: &str = "metadata.name";

/// A node label reduced to ids.
#[derive(Debug, Clone, Copy)]
struct NodeLabel {
    key: u32,
    value: u32,
    /// The value as a base-10 integer, for `Gt`/`Lt`.
    number: Option<i64>,
}

/// What the plugin keeps per node.
#[derive(Debug, Clone)]
struct NodeFacts {
    name: u32,
    /// Sorted by key id.
    labels: Vec<NodeLabel>,
}

impl NodeFacts {
    #[inline]
    fn label(&self, key: u32) -> Option<&NodeLabel> {
        self.labels
            .binary_search_by_key(&key, |l| l.key)
            .ok()
            .map(|i| &self.labels[i])
    }
}

/// A label requirement compiled to ids. Values that were never interned are
/// dropped: no node label can have them.
#[derive(Debug, Clone)]
enum Op {
    In(Vec<u32>),
    NotIn(Vec<u32>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone)]
struct Expr {
    /// `None`: no node has ever had this key.
    key: Option<u32>,
    op: Op,
}

impl Expr {
    #[inline]
    fn matches(&self, node: &NodeFacts) -> bool {
        let label = self.key.and_then(|k| node.label(k));
        match &self.op {
            Op::In(vs) => label.is_some_and(|l| vs.contains(&l.value)),
            Op::NotIn(vs) => label.is_none_or(|l| !vs.contains(&l.value)),
            Op::Exists => label.is_some(),
            Op::DoesNotExist => label.is_none(),
            Op::Gt(b) => label.and_then(|l| l.number).is_some_and(|v| v > *b),
            Op::Lt(b) => label.and_then(|l| l.number).is_some_and(|v| v < *b),
        }
    }
}

/// A `matchFields` requirement compiled against the node's name.
#[derive(Debug, Clone, Copy)]
enum Field {
    NameIs(Option<u32>),
    NameIsNot(Option<u32>),
    /// A field other than `metadata.name`: upstream sees it as "" on every node.
    Const(bool),
}

impl Field {
    #[inline]
    fn matches(self, node: &NodeFacts) -> bool {
        match self {
            Field::NameIs(n) => n == Some(node.name),
            Field::NameIsNot(n) => n != Some(node.name),
            Field::Const(b) => b,
        }
    }
}

/// A node selector term with at least one requirement.
#[derive(Debug, Clone)]
struct Term {
    exprs: Vec<Expr>,
    fields: Vec<Field>,
}

impl Term {
    #[inline]
    fn matches(&self, node: &NodeFacts) -> bool {
        self.exprs.iter().all(|e| e.matches(node)) && self.fields.iter().all(|f| f.matches(node))
    }
}

/// An operator as written in a manifest.
fn op_name(op: SelectorOperator) -> &'static str {
    match op {
        SelectorOperator::In => "In",
        SelectorOperator::NotIn => "NotIn",
        SelectorOperator::Exists => "Exists",
        SelectorOperator::DoesNotExist => "DoesNotExist",
        SelectorOperator::Gt => "Gt",
        SelectorOperator::Lt => "Lt",
    }
}

/// Why a requirement does not parse, in upstream's terms.
fn check_requirement(r: &Requirement, field: bool) -> Result<(), String> {
    use SelectorOperator as S;
    let n = r.values.len();
    let ok = match (field, r.operator) {
        (true, S::In | S::NotIn) => n == 1,
        (true, _) => {
            return Err(format!(
                "{:?} is not a valid node field selector operator",
                r.operator
            ))
        }
        (false, S::In | S::NotIn) => n > 0,
        (false, S::Exists | S::DoesNotExist) => n == 0,
        (false, S::Gt | S::Lt) => n == 1 && r.values[0].parse::<i64>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "key {:?}: invalid values {:?} for operator {:?}",
            r.key,
            r.values,
            op_name(r.operator)
        ))
    }
}

/// Whether a term has no requirement at all (it then selects nothing and is
/// skipped, as upstream).
fn is_empty_term(t: &NodeSelectorTerm) -> bool {
    t.match_expressions.is_empty() && t.match_fields.is_empty()
}

/// Every requirement of a term parses.
fn check_term(t: &NodeSelectorTerm) -> Result<(), String> {
    t.match_expressions
        .iter()
        .try_for_each(|r| check_requirement(r, false))?;
    t.match_fields
        .iter()
        .try_for_each(|r| check_requirement(r, true))
}

/// Upstream's PreFilter shortcut: when every required term pins
/// `metadata.name` (`In`), the union of those names is the only place the pod
/// can go; an empty union is a conflict.
fn name_conflict(terms: &[NodeSelectorTerm]) -> bool {
    if terms.is_empty() {
        return false;
    }
    let mut union: HashSet<&str> = HashSet::new();
    for t in terms {
        let mut names: Option<HashSet<&str>> = None;
        for r in &t.match_fields {
            if r.key == NAME_FIELD && r.operator == SelectorOperator::In {
                let s: HashSet<&str> = r.values.iter().map(String::as_str).collect();
                names = Some(match names {
                    None => s,
                    Some(n) => n.intersection(&s).copied().collect(),
                });
            }
        }
        match names {
            None => return false,
            Some(n) => union.extend(n),
        }
    }
    union.is_empty()
}

/// The plugin.
#[derive(Default)]
pub struct NodeAffinity {
    strings: Interner,
    nodes: NodeTable<NodeFacts>,
    /// `addedAffinity.requiredDuringSchedulingIgnoredDuringExecution` terms.
    added_required: Option<Vec<NodeSelectorTerm>>,
    /// `addedAffinity.preferredDuringSchedulingIgnoredDuringExecution`.
    added_preferred: Vec<PreferredSchedulingTerm>,
}

impl NodeAffinity {
    fn compile_requirement(&self, r: &Requirement) -> Expr {
        let ids = || {
            r.values
                .iter()
                .filter_map(|v| self.strings.get(v))
                .collect::<Vec<_>>()
        };
        let bound = || r.values.first().and_then(|v| v.parse().ok()).unwrap_or(0);
        Expr {
            key: self.strings.get(&r.key),
            op: match r.operator {
                SelectorOperator::In => Op::In(ids()),
                SelectorOperator::NotIn => Op::NotIn(ids()),
                SelectorOperator::Exists => Op::Exists,
                SelectorOperator::DoesNotExist => Op::DoesNotExist,
                SelectorOperator::Gt => Op::Gt(bound()),
                SelectorOperator::Lt => Op::Lt(bound()),
            },
        }
    }

    fn compile_field(&self, r: &Requirement) -> Field {
        let value = &r.values[0];
        let is = r.operator == SelectorOperator::In;
        if r.key == NAME_FIELD {
            let id = self.strings.get(value);
            if is {
                Field::NameIs(id)
            } else {
                Field::NameIsNot(id)
            }
        } else {
            Field::Const(value.is_empty() == is)
        }
    }

    /// A term compiled to ids: `Ok(None)` when it selects nothing (empty),
    /// `Err` when a requirement does not parse.
    fn compile_term(&self, t: &NodeSelectorTerm) -> Result<Option<Term>, String> {
        if is_empty_term(t) {
            return Ok(None);
        }
        check_term(t)?;
        Ok(Some(Term {
            exprs: t
                .match_expressions
                .iter()
                .map(|r| self.compile_requirement(r))
                .collect(),
            fields: t
                .match_fields
                .iter()
                .map(|r| self.compile_field(r))
                .collect(),
        }))
    }

    /// Required terms as upstream's lazy-error node selector: terms that are
    /// empty or do not parse never match.
    fn compile_required(&self, terms: &[NodeSelectorTerm]) -> Vec<Term> {
        terms
            .iter()
            .filter_map(|t| self.compile_term(t).ok().flatten())
            .collect()
    }

    /// `nodeSelector` as (key, value) ids; `None` if some pair names a string
    /// no node ever had (nothing can match).
    fn compile_selector(&self, selector: &[Label]) -> Option<Vec<(u32, u32)>> {
        selector
            .iter()
            .map(|l| Some((self.strings.get(&l.key)?, self.strings.get(&l.value)?)))
            .collect()
    }

    /// Preferred terms with their weights; terms of weight 0 or without a
    /// requirement are skipped, a term that does not parse is an error.
    fn compile_preferred(
        &self,
        terms: &[PreferredSchedulingTerm],
        out: &mut Vec<(i64, Term)>,
    ) -> Result<(), String> {
        for (i, p) in terms.iter().enumerate() {
            if p.weight == 0 {
                continue;
            }
            if let Some(t) = self
                .compile_term(&p.preference)
                .map_err(|e| format!("preferredSchedulingTerms[{i}]: {e}"))?
            {
                out.push((i64::from(p.weight), t));
            }
        }
        Ok(())
    }
}

/// Upstream's `NodeAffinityArgs`, in JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    added_affinity: Option<AddedAffinity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddedAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution", default)]
    required: Option<NodeSelectorJson>,
    #[serde(rename = "preferredDuringSchedulingIgnoredDuringExecution", default)]
    preferred: Vec<PreferredJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NodeSelectorJson {
    node_selector_terms: Vec<TermJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TermJson {
    #[serde(default)]
    match_expressions: Vec<RequirementJson>,
    #[serde(default)]
    match_fields: Vec<RequirementJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequirementJson {
    key: String,
    operator: OperatorJson,
    #[serde(default)]
    values: Vec<String>,
}

#[derive(Deserialize)]
enum OperatorJson {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreferredJson {
    weight: i32,
    preference: TermJson,
}

impl TermJson {
    fn into_term(self) -> NodeSelectorTerm {
        let reqs = |v: Vec<RequirementJson>| {
            v.into_iter()
                .map(|r| Requirement {
                    key: r.key,
                    operator: match r.operator {
                        OperatorJson::In => SelectorOperator::In,
                        OperatorJson::NotIn => SelectorOperator::NotIn,
                        OperatorJson::Exists => SelectorOperator::Exists,
                        OperatorJson::DoesNotExist => SelectorOperator::DoesNotExist,
                        OperatorJson::Gt => SelectorOperator::Gt,
                        OperatorJson::Lt => SelectorOperator::Lt,
                    },
                    values: r.values,
                })
                .collect()
        };
        NodeSelectorTerm {
            match_expressions: reqs(self.match_expressions),
            match_fields: reqs(self.match_fields),
        }
    }
}

/// Parse and validate the configuration as upstream's `New` does.
fn parse_config(
    config: &str,
) -> Result<(Option<Vec<NodeSelectorTerm>>, Vec<PreferredSchedulingTerm>), String> {
    let c: Config = serde_json::from_str(config).map_err(|e| {
        format!("invalid configuration, expected {{\"addedAffinity\": {{...}}}}: {e}")
    })?;
    let Some(added) = c.added_affinity else {
        return Ok((None, Vec::new()));
    };
    let required = match added.required {
        None => None,
        Some(ns) => {
            let path = "addedAffinity.requiredDuringSchedulingIgnoredDuringExecution";
            if ns.node_selector_terms.is_empty() {
                return Err(format!(
                    "{path}.nodeSelectorTerms: must have at least one node selector term"
                ));
            }
            let terms: Vec<NodeSelectorTerm> = ns
                .node_selector_terms
                .into_iter()
                .map(TermJson::into_term)
                .collect();
            for (i, t) in terms.iter().enumerate() {
                check_term(t).map_err(|e| format!("{path}.nodeSelectorTerms[{i}]: {e}"))?;
            }
            Some(terms)
        }
    };
    let mut preferred = Vec::with_capacity(added.preferred.len());
    for (i, p) in added.preferred.into_iter().enumerate() {
        let path = format!("addedAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
        if !(1..=100).contains(&p.weight) {
            return Err(format!("{path}.weight: must be in the range 1-100"));
        }
        let term = p.preference.into_term();
        check_term(&term).map_err(|e| format!("{path}.preference: {e}"))?;
        preferred.push(PreferredSchedulingTerm {
            weight: p.weight,
            preference: term,
        });
    }
    Ok((required, preferred))
}

impl SchedulerPlugin for NodeAffinity {
    fn info() -> PluginInfo {
        plugin_info(
            "NodeAffinity",
            env!("CARGO_PKG_VERSION"),
            Phases::FILTER | Phases::SCORE,
        )
        .nodes_only()
        .reads(PodFields::NODE_SELECTION)
        .reads_nodes(NodeFields::LABELS)
    }

    /// Upstream's PreFilter and PreScore skip: nothing required (no node
    /// selector, no required terms, none added by configuration) lets every
    /// node through; nothing preferred scores every node 0.
    fn prepare(&mut self, pod: &Pod) -> Result<Phases, PluginError> {
        let affinity = pod.node_affinity.as_ref();
        let mut phases = Phases::empty();
        if self.added_required.is_some()
            || !pod.node_selector.is_empty()
            || affinity.is_some_and(|a| !a.required.is_empty())
        {
            phases |= Phases::FILTER;
        }
        if !self.added_preferred.is_empty() || affinity.is_some_and(|a| !a.preferred.is_empty()) {
            phases |= Phases::SCORE;
        }
        Ok(phases)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let (required, preferred) = parse_config(config).map_err(PluginError::InvalidConfig)?;
        self.added_required = required;
        self.added_preferred = preferred;
        Ok(())
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let mut labels: Vec<NodeLabel> = node
            .labels
            .iter()
            .map(|l| NodeLabel {
                key: self.strings.intern(&l.key),
                value: self.strings.intern(&l.value),
                number: l.value.parse().ok(),
            })
            .collect();
        labels.sort_by_key(|l| l.key);
        let name = self.strings.intern(&node.name);
        self.nodes.insert(id, NodeFacts { name, labels });
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
        let required: &[NodeSelectorTerm] = pod
            .node_affinity
            .as_ref()
            .map_or(&[], |a| a.required.as_slice());
        if name_conflict(required) {
            // Upstream fails the pod in PreFilter: no node is examined.
            return self
                .nodes
                .filter(candidates, max, |_| Some(&ERR_REASON_CONFLICT));
        }
        let added = self
            .added_required
            .as_deref()
            .map(|t| self.compile_required(t));
        let selector = self.compile_selector(&pod.node_selector);
        let terms = (!required.is_empty()).then(|| self.compile_required(required));
        self.nodes.filter(candidates, max, |node| {
            if added
                .as_ref()
                .is_some_and(|a| !a.iter().any(|t| t.matches(node)))
            {
                return Some(&ERR_REASON_ENFORCED);
            }
            let selector_ok = selector.as_ref().is_some_and(|s| {
                s.iter()
                    .all(|&(k, val)| node.label(k).is_some_and(|l| l.value == val))
            });
            let fits = selector_ok
                && terms
                    .as_ref()
                    .is_none_or(|ts| ts.iter().any(|t| t.matches(node)));
            (!fits).then_some(&ERR_REASON_POD)
        })
    }

    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let mut terms = Vec::new();
        self.compile_preferred(&self.added_preferred, &mut terms)
            .map_err(PluginError::Internal)?;
        if let Some(a) = &pod.node_affinity {
            self.compile_preferred(&a.preferred, &mut terms)
                .map_err(PluginError::InvalidInput)?;
        }
        let raw = self.nodes.map(candidates, |node| {
            terms
                .iter()
                .filter(|(_, t)| t.matches(node))
                .map(|(w, _)| w)
                .sum::<i64>()
        })?;
        Ok(normalize(&raw, false))
    }
}

trellis_sdk::export_scheduler!(NodeAffinity);
