//! Upstream kube-scheduler's `InterPodAffinity` (Kubernetes v1.32) as a
//! Trellis scheduler plugin.
//!
//! A topology domain is a pair (`topologyKey`, the value of that node label);
//! a node without the label is in no domain of that key. A term covers its
//! `namespaces` plus the namespaces its `namespaceSelector` matches (`{}` =
//! every namespace); with neither, the namespace of the pod that owns the
//! term. An absent `labelSelector` matches no pod, `{}` every pod.
//!
//! **Filter**, for each candidate, in upstream's order:
//! 1. every required affinity term of the pod needs, in the node's domain of
//!    its key, an existing pod that matches *all* the pod's required affinity
//!    terms; a node missing one of the keys is refused. If no existing pod in
//!    the cluster matches all the terms and the pod matches them itself (the
//!    first pod of a group), a node carrying every key passes. Refused as
//!    unresolvable, "node(s) didn't match pod affinity rules".
//! 2. a required anti-affinity term of the pod refuses the node if its domain
//!    holds a matching pod (resolvable, "node(s) didn't match pod anti-affinity
//!    rules"); a node without the key is not refused.
//! 3. an existing pod's required anti-affinity term that matches the pod refuses
//!    every node in the existing pod's domain (resolvable, "node(s) didn't
//!    satisfy existing pods anti-affinity rules").
//!
//! **Score**: per domain, plus the weight for each existing pod matching a
//! preferred affinity term of the pod, minus the weight for a preferred
//! anti-affinity term, and plus `hardPodAffinityWeight` for each existing pod
//! whose *required* affinity term matches the pod. A node's raw score is the sum over its domains; then
//! `100 × (s − min) / (max − min)` over the candidates (all 0 when equal).
//!
//! Differences from upstream, all from what the contract carries:
//! - existing pods' *preferred* affinity and anti-affinity terms are not sent
//!   (`placed-pod` has only required terms), so their symmetric score
//!   contribution is missing;
//! - only the labels of the pod's own namespace are known, so a non-empty
//!   `namespaceSelector` in one of the pod's terms covers at most the pod's own
//!   namespace (when its labels match), not other namespaces whose labels
//!   match. Existing pods' namespace selectors are exact: they are matched
//!   against the pod's namespace labels, as upstream.
//! - a label selector with `Gt`/`Lt` (refused by API validation, an error
//!   upstream) matches nothing.
//!
//! Config: `{"hardPodAffinityWeight": 0..=100 (default 1),
//! "ignorePreferredTermsOfExistingPods": bool (default false)}`; with the
//! latter, a pod without preferred terms gets no score from this plugin.
//!
//! Cost: label keys, values and namespaces are interned (reference counted, so
//! pod churn does not grow memory) at `upsert-node`/`assume-pod`; a call walks
//! the existing pods once to build the set of matching domains, then checks
//! each candidate with a few hash lookups.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use trellis_sdk::scheduler::*;
use trellis_sdk::selectors::selector_matches;
use trellis_sdk::{
    LabelSelector, PodAffinity, PodAffinityTerm, SelectorOperator, WeightedPodAffinityTerm,
};

const AFFINITY: &str = "node(s) didn't match pod affinity rules";
const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Stands for a label value of the pod that no stored pod, node or term has.
const UNKNOWN: u32 = u32::MAX;

/// Reference-counted string ids: label keys, values, namespaces.
#[derive(Debug, Default)]
struct Symbols {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    refs: Vec<u32>,
    free: Vec<u32>,
}

impl Symbols {
    fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    fn acquire(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            self.refs[id as usize] += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = s.into();
                self.refs[id as usize] = 1;
                id
            }
            None => {
                self.names.push(s.into());
                self.refs.push(1);
                (self.names.len() - 1) as u32
            }
        };
        self.ids.insert(s.into(), id);
        id
    }

    fn release(&mut self, id: u32) {
        let i = id as usize;
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            let name = std::mem::take(&mut self.names[i]);
            self.ids.remove(&name);
            self.free.push(id);
        }
    }
}

/// How a term's strings become ids: acquired (the term is stored) or looked
/// up (the pod being scheduled; an unknown string is on no stored pod).
trait Resolve {
    fn id(&mut self, s: &str) -> Option<u32>;
}

struct Acquire<'a> {
    syms: &'a mut Symbols,
    owned: &'a mut Vec<u32>,
}

impl Resolve for Acquire<'_> {
    fn id(&mut self, s: &str) -> Option<u32> {
        let id = self.syms.acquire(s);
        self.owned.push(id);
        Some(id)
    }
}

struct Lookup<'a>(&'a Symbols);

impl Resolve for Lookup<'_> {
    fn id(&mut self, s: &str) -> Option<u32> {
        self.0.get(s)
    }
}

/// A multiply-fold hash for (key, value) pairs packed in a `u64`.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        let x = u128::from(self.0 ^ n) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (x as u64) ^ ((x >> 64) as u64);
    }
}

type PairSet = HashSet<u64, BuildHasherDefault<PairHasher>>;
type PairMap = HashMap<u64, i64, BuildHasherDefault<PairHasher>>;

/// A topology domain: label key and value ids.
fn pair(key: u32, value: u32) -> u64 {
    (u64::from(key) << 32) | u64::from(value)
}

/// Interned labels, (key, value).
type Labels = Vec<(u32, u32)>;

fn value_of(labels: &[(u32, u32)], key: Option<u32>) -> Option<u32> {
    let key = key?;
    labels.iter().find(|l| l.0 == key).map(|l| l.1)
}

/// The domain of `key` on a node, if it has the label.
fn domain(labels: &[(u32, u32)], key: Option<u32>) -> Option<u64> {
    let v = value_of(labels, key)?;
    Some(pair(key?, v))
}

#[derive(Debug, Clone, Copy)]
enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug)]
struct Req {
    /// `None`: a key no stored pod has.
    key: Option<u32>,
    op: Op,
    /// Known values only.
    values: Vec<u32>,
}

/// A compiled label selector; `None` matches nothing (upstream's
/// `labels.Nothing()` for an absent selector).
#[derive(Debug)]
struct Sel(Option<Vec<Req>>);

impl Sel {
    fn compile(sel: Option<&LabelSelector>, r: &mut impl Resolve) -> Self {
        let Some(sel) = sel else { return Sel(None) };
        let mut reqs = Vec::with_capacity(sel.match_labels.len() + sel.match_expressions.len());
        for l in &sel.match_labels {
            reqs.push(Req {
                key: r.id(&l.key),
                op: Op::In,
                values: r.id(&l.value).into_iter().collect(),
            });
        }
        for e in &sel.match_expressions {
            let op = match e.operator {
                SelectorOperator::In => Op::In,
                SelectorOperator::NotIn => Op::NotIn,
                SelectorOperator::Exists => Op::Exists,
                SelectorOperator::DoesNotExist => Op::DoesNotExist,
                SelectorOperator::Gt | SelectorOperator::Lt => return Sel(None),
            };
            reqs.push(Req {
                key: r.id(&e.key),
                op,
                values: e.values.iter().filter_map(|v| r.id(v)).collect(),
            });
        }
        Sel(Some(reqs))
    }

    fn matches(&self, labels: &[(u32, u32)]) -> bool {
        let Some(reqs) = &self.0 else { return false };
        reqs.iter().all(|q| {
            let v = value_of(labels, q.key);
            match q.op {
                Op::In => v.is_some_and(|v| q.values.contains(&v)),
                Op::NotIn => v.is_none_or(|v| !q.values.contains(&v)),
                Op::Exists => v.is_some(),
                Op::DoesNotExist => v.is_none(),
            }
        })
    }
}

fn is_empty(sel: &LabelSelector) -> bool {
    sel.match_labels.is_empty() && sel.match_expressions.is_empty()
}

/// A compiled pod (anti-)affinity term.
#[derive(Debug)]
struct Term {
    sel: Sel,
    /// Covers every namespace (`namespaceSelector: {}`).
    all_namespaces: bool,
    namespaces: Vec<u32>,
    /// A stored term's non-empty namespace selector, matched against the
    /// labels of the pod being scheduled's namespace.
    namespace_selector: Option<LabelSelector>,
    key: Option<u32>,
}

impl Term {
    /// `pod_ns_labels`: for the pod being scheduled, its namespace's labels
    /// (a namespace selector is resolved now, against its own namespace
    /// only); `None` for a stored pod's term.
    fn compile(
        t: &PodAffinityTerm,
        own_ns: &str,
        pod_ns_labels: Option<&[Label]>,
        r: &mut impl Resolve,
    ) -> Self {
        let mut term = Term {
            sel: Sel::compile(t.label_selector.as_ref(), r),
            all_namespaces: false,
            namespaces: t.namespaces.iter().filter_map(|n| r.id(n)).collect(),
            namespace_selector: None,
            key: r.id(&t.topology_key),
        };
        match &t.namespace_selector {
            None if t.namespaces.is_empty() => term.namespaces.extend(r.id(own_ns)),
            None => {}
            Some(s) if is_empty(s) => term.all_namespaces = true,
            Some(s) => match pod_ns_labels {
                Some(labels) => {
                    if selector_matches(s, labels) {
                        term.namespaces.extend(r.id(own_ns));
                    }
                }
                None => term.namespace_selector = Some(s.clone()),
            },
        }
        term
    }

    fn covers(&self, ns: Option<u32>, ns_labels: &[Label]) -> bool {
        self.all_namespaces
            || ns.is_some_and(|n| self.namespaces.contains(&n))
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| selector_matches(s, ns_labels))
    }

    /// A term of the pod being scheduled against a stored pod.
    fn matches_placed(&self, p: &Placed) -> bool {
        self.covers(Some(p.ns), &[]) && self.sel.matches(&p.labels)
    }

    /// A stored pod's term against the pod being scheduled.
    fn matches_incoming(&self, q: &Incoming) -> bool {
        self.covers(q.ns, q.ns_labels) && self.sel.matches(&q.labels)
    }
}

/// Upstream's `AffinityTerm.Matches` of the pod against one of its own terms,
/// on strings (its labels may be unknown to the symbol table).
fn matches_own_term(pod: &Pod, t: &PodAffinityTerm) -> bool {
    let ns = match &t.namespace_selector {
        None => t.namespaces.is_empty() || t.namespaces.contains(&pod.namespace),
        Some(s) => {
            t.namespaces.contains(&pod.namespace) || selector_matches(s, &pod.namespace_labels)
        }
    };
    ns && t
        .label_selector
        .as_ref()
        .is_some_and(|s| valid_operators(s) && selector_matches(s, &pod.labels))
}

fn valid_operators(s: &LabelSelector) -> bool {
    s.match_expressions
        .iter()
        .all(|e| !matches!(e.operator, SelectorOperator::Gt | SelectorOperator::Lt))
}

/// The pod being scheduled, resolved against the symbol table.
struct Incoming<'a> {
    ns: Option<u32>,
    /// Labels whose key some stored term names; unknown values are [`UNKNOWN`].
    labels: Labels,
    ns_labels: &'a [Label],
}

impl<'a> Incoming<'a> {
    fn new(syms: &Symbols, pod: &'a Pod) -> Self {
        Incoming {
            ns: syms.get(&pod.namespace),
            labels: pod
                .labels
                .iter()
                .filter_map(|l| Some((syms.get(&l.key)?, syms.get(&l.value).unwrap_or(UNKNOWN))))
                .collect(),
            ns_labels: &pod.namespace_labels,
        }
    }
}

/// A pod placed on a node.
#[derive(Debug)]
struct Placed {
    uid: String,
    ns: u32,
    labels: Labels,
    required_anti_affinity: Vec<Term>,
    required_affinity: Vec<Term>,
    /// Every symbol acquired for this pod, released when it goes.
    owned: Vec<u32>,
}

#[derive(Debug, Default)]
struct NodeInfo {
    labels: Labels,
    pods: Vec<Placed>,
    /// Pods with required anti-affinity / required affinity terms.
    with_anti_affinity: u32,
    with_affinity: u32,
}

/// The plugin.
#[derive(Debug)]
pub struct InterPodAffinity {
    hard_pod_affinity_weight: i64,
    ignore_preferred_terms_of_existing_pods: bool,
    syms: Symbols,
    nodes: NodeTable<NodeInfo>,
    /// Which node each placed pod is on, for `forget-pod` and replacement.
    pod_nodes: HashMap<String, NodeId>,
    /// Placed pods with required affinity (the sum of the nodes'
    /// `with_affinity`).
    pods_with_affinity: u32,
    /// The nodes holding a pod with required anti-affinity, in id order: the
    /// only ones a pod's PreFilter has to look at for them.
    anti_affinity_nodes: BTreeSet<NodeId>,
    /// Upstream's PreFilter state for the prepared pod: the domains of
    /// placed pods whose required anti-affinity matches it, and their keys.
    /// Computed once per cycle, read by every `filter` call of the cycle.
    existing: (PairSet, Vec<u32>),
}

impl Default for InterPodAffinity {
    fn default() -> Self {
        Self {
            hard_pod_affinity_weight: 1,
            ignore_preferred_terms_of_existing_pods: false,
            syms: Symbols::default(),
            nodes: NodeTable::default(),
            pod_nodes: HashMap::new(),
            pods_with_affinity: 0,
            anti_affinity_nodes: BTreeSet::new(),
            existing: Default::default(),
        }
    }
}

/// Upstream's `InterPodAffinityArgs`, validated as `ValidateInterPodAffinityArgs`.
fn parse_config(text: &str) -> Result<(i64, bool), String> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("invalid InterPodAffinity configuration: {e}"))?;
    let obj = v.as_object().ok_or_else(|| {
        "invalid InterPodAffinity configuration: expected an object such as {\"hardPodAffinityWeight\": 1}".to_string()
    })?;
    let (mut weight, mut ignore) = (1, false);
    for (k, val) in obj {
        match k.as_str() {
            "hardPodAffinityWeight" => {
                let w = val.as_i64().ok_or_else(|| {
                    format!("hardPodAffinityWeight: Invalid value: {val}: must be an integer")
                })?;
                if !(0..=100).contains(&w) {
                    return Err(format!(
                        "hardPodAffinityWeight: Invalid value: {w}: not in valid range [0-100]"
                    ));
                }
                weight = w;
            }
            "ignorePreferredTermsOfExistingPods" => {
                ignore = val.as_bool().ok_or_else(|| {
                    format!("ignorePreferredTermsOfExistingPods: Invalid value: {val}: must be a boolean")
                })?;
            }
            other => {
                return Err(format!(
                    "{other}: unknown field; supported fields are hardPodAffinityWeight and ignorePreferredTermsOfExistingPods"
                ))
            }
        }
    }
    Ok((weight, ignore))
}

fn required(a: &Option<PodAffinity>) -> &[PodAffinityTerm] {
    a.as_ref().map_or(&[], |a| a.required.as_slice())
}

fn preferred(a: &Option<PodAffinity>) -> &[WeightedPodAffinityTerm] {
    a.as_ref().map_or(&[], |a| a.preferred.as_slice())
}

/// Push `key` unless present (the few distinct topology keys of a call).
fn add_key(keys: &mut Vec<u32>, key: u64) {
    let k = (key >> 32) as u32;
    if !keys.contains(&k) {
        keys.push(k);
    }
}

/// Whether a node is in one of `domains`, whose distinct keys are `keys`.
fn in_domains(labels: &[(u32, u32)], keys: &[u32], domains: &PairSet) -> bool {
    keys.iter()
        .any(|&k| domain(labels, Some(k)).is_some_and(|d| domains.contains(&d)))
}

impl InterPodAffinity {
    fn forget(&mut self, uid: &str) {
        let Some(id) = self.pod_nodes.remove(uid) else {
            return;
        };
        let Ok(n) = self.nodes.get_mut(id) else {
            return;
        };
        if let Some(i) = n.pods.iter().position(|p| p.uid == uid) {
            let p = n.pods.swap_remove(i);
            n.with_anti_affinity -= u32::from(!p.required_anti_affinity.is_empty());
            n.with_affinity -= u32::from(!p.required_affinity.is_empty());
            self.pods_with_affinity -= u32::from(!p.required_affinity.is_empty());
            if n.with_anti_affinity == 0 {
                self.anti_affinity_nodes.remove(&id);
            }
            for s in p.owned {
                self.syms.release(s);
            }
        }
    }

    /// Domains of existing pods whose required anti-affinity matches the pod
    /// (upstream's `existingAntiAffinityCounts`), and their distinct keys.
    fn existing_anti_affinity(&self, q: &Incoming) -> (PairSet, Vec<u32>) {
        let mut domains = PairSet::default();
        let mut keys = Vec::new();
        for &id in &self.anti_affinity_nodes {
            let Ok(node) = self.nodes.get(id) else {
                continue;
            };
            for p in &node.pods {
                for t in &p.required_anti_affinity {
                    let Some(d) = domain(&node.labels, t.key) else {
                        continue;
                    };
                    if !domains.contains(&d) && t.matches_incoming(q) {
                        domains.insert(d);
                        add_key(&mut keys, d);
                    }
                }
            }
        }
        (domains, keys)
    }

    /// Domains holding a pod that matches every required affinity term of the
    /// pod (`affinityCounts`), and domains holding a pod that matches one of
    /// its required anti-affinity terms (`antiAffinityCounts`).
    fn incoming_domains(&self, affinity: &[Term], anti: &[Term]) -> (PairSet, PairSet) {
        let mut aff_found = PairSet::default();
        let mut anti_found = PairSet::default();
        // Per node, reused: the node's domain of each term still to be found.
        let mut aff_domains: Vec<u64> = Vec::with_capacity(affinity.len());
        let mut anti_todo: Vec<(usize, u64)> = Vec::with_capacity(anti.len());
        for (_, node) in self.nodes.iter() {
            if node.pods.is_empty() {
                continue;
            }
            aff_domains.clear();
            aff_domains.extend(affinity.iter().filter_map(|t| domain(&node.labels, t.key)));
            let mut need_aff = aff_domains.iter().any(|d| !aff_found.contains(d));
            anti_todo.clear();
            anti_todo.extend(anti.iter().enumerate().filter_map(|(i, t)| {
                domain(&node.labels, t.key)
                    .filter(|d| !anti_found.contains(d))
                    .map(|d| (i, d))
            }));
            for p in &node.pods {
                if !need_aff && anti_todo.is_empty() {
                    break;
                }
                if need_aff && affinity.iter().all(|t| t.matches_placed(p)) {
                    aff_found.extend(aff_domains.iter().copied());
                    need_aff = false;
                }
                anti_todo.retain(|&(i, d)| {
                    if anti_found.contains(&d) {
                        return false;
                    }
                    if anti[i].matches_placed(p) {
                        anti_found.insert(d);
                        return false;
                    }
                    true
                });
            }
        }
        (aff_found, anti_found)
    }
}

impl SchedulerPlugin for InterPodAffinity {
    fn info() -> PluginInfo {
        plugin_info(
            "InterPodAffinity",
            env!("CARGO_PKG_VERSION"),
            Phases::FILTER | Phases::SCORE,
        )
        .reads(PodFields::META | PodFields::POD_AFFINITY)
        .reads_nodes(NodeFields::LABELS)
    }

    /// Upstream's PreFilter and PreScore skip. The filter applies to a pod
    /// with required terms of its own, or that some placed pod's required
    /// anti-affinity matches. The score applies to a pod with preferred terms,
    /// or, unless configured to ignore them, when some placed pod has required
    /// affinity (counted with `hardPodAffinityWeight`); otherwise every node
    /// would score 0.
    fn prepare(&mut self, pod: &Pod) -> Result<Phases, PluginError> {
        let mut phases = Phases::empty();
        self.existing = self.existing_anti_affinity(&Incoming::new(&self.syms, pod));
        if !self.existing.0.is_empty()
            || !required(&pod.pod_affinity).is_empty()
            || !required(&pod.pod_anti_affinity).is_empty()
        {
            phases |= Phases::FILTER;
        }
        let has_preferred = !preferred(&pod.pod_affinity).is_empty()
            || !preferred(&pod.pod_anti_affinity).is_empty();
        if has_preferred
            || (!self.ignore_preferred_terms_of_existing_pods
                && self.hard_pod_affinity_weight > 0
                && self.pods_with_affinity > 0)
        {
            phases |= Phases::SCORE;
        }
        Ok(phases)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let (weight, ignore) = parse_config(config).map_err(PluginError::InvalidConfig)?;
        self.hard_pod_affinity_weight = weight;
        self.ignore_preferred_terms_of_existing_pods = ignore;
        Ok(())
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let labels: Labels = node
            .labels
            .iter()
            .map(|l| (self.syms.acquire(&l.key), self.syms.acquire(&l.value)))
            .collect();
        match self.nodes.get_mut(id) {
            // A replaced node keeps the pods assumed on it.
            Ok(n) => {
                for (k, v) in std::mem::replace(&mut n.labels, labels) {
                    self.syms.release(k);
                    self.syms.release(v);
                }
            }
            Err(_) => self.nodes.insert(
                id,
                NodeInfo {
                    labels,
                    ..NodeInfo::default()
                },
            ),
        }
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        let Some(n) = self.nodes.remove(id) else {
            return;
        };
        self.anti_affinity_nodes.remove(&id);
        for (k, v) in n.labels {
            self.syms.release(k);
            self.syms.release(v);
        }
        for p in n.pods {
            self.pod_nodes.remove(&p.uid);
            self.pods_with_affinity -= u32::from(!p.required_affinity.is_empty());
            for s in p.owned {
                self.syms.release(s);
            }
        }
    }

    fn assume_pod(&mut self, node: NodeId, pod: PlacedPod) -> Result<(), PluginError> {
        self.nodes.get(node)?;
        self.forget(&pod.uid);
        let mut owned = Vec::new();
        let mut r = Acquire {
            syms: &mut self.syms,
            owned: &mut owned,
        };
        let ns = r.id(&pod.namespace).unwrap_or(UNKNOWN);
        let labels: Labels = pod
            .labels
            .iter()
            .map(|l| {
                let k = r.id(&l.key).unwrap_or(UNKNOWN);
                (k, r.id(&l.value).unwrap_or(UNKNOWN))
            })
            .collect();
        let required_anti_affinity: Vec<Term> = pod
            .required_anti_affinity
            .iter()
            .map(|t| Term::compile(t, &pod.namespace, None, &mut r))
            .collect();
        let required_affinity: Vec<Term> = pod
            .required_affinity
            .iter()
            .map(|t| Term::compile(t, &pod.namespace, None, &mut r))
            .collect();
        let n = self.nodes.get_mut(node)?;
        n.with_anti_affinity += u32::from(!required_anti_affinity.is_empty());
        n.with_affinity += u32::from(!required_affinity.is_empty());
        self.pods_with_affinity += u32::from(!required_affinity.is_empty());
        if !required_anti_affinity.is_empty() {
            self.anti_affinity_nodes.insert(node);
        }
        n.pods.push(Placed {
            uid: pod.uid.clone(),
            ns,
            labels,
            required_anti_affinity,
            required_affinity,
            owned,
        });
        self.pod_nodes.insert(pod.uid, node);
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
        let mut v = Verdicts::with_capacity(max_feasible, candidates.len());
        let (existing, existing_keys) = &self.existing;
        let affinity_terms = required(&pod.pod_affinity);
        let anti_terms = required(&pod.pod_anti_affinity);
        if existing.is_empty() && affinity_terms.is_empty() && anti_terms.is_empty() {
            // Upstream's PreFilter returns Skip.
            for &id in candidates {
                self.nodes.get(id)?;
                if v.accept(id) {
                    break;
                }
            }
            return Ok(v.finish());
        }
        let mut r = Lookup(&self.syms);
        let ns_labels = Some(pod.namespace_labels.as_slice());
        let affinity: Vec<Term> = affinity_terms
            .iter()
            .map(|t| Term::compile(t, &pod.namespace, ns_labels, &mut r))
            .collect();
        let anti: Vec<Term> = anti_terms
            .iter()
            .map(|t| Term::compile(t, &pod.namespace, ns_labels, &mut r))
            .collect();
        let (aff_found, anti_found) = if affinity.is_empty() && anti.is_empty() {
            Default::default()
        } else {
            self.incoming_domains(&affinity, &anti)
        };
        // The first pod of a group that selects itself may start it.
        let first_of_group = aff_found.is_empty()
            && !affinity_terms.is_empty()
            && affinity_terms.iter().all(|t| matches_own_term(pod, t));
        for &id in candidates {
            let labels = &self.nodes.get(id)?.labels;
            let mut has_all_keys = true;
            let mut pods_exist = true;
            for t in &affinity {
                match domain(labels, t.key) {
                    None => {
                        has_all_keys = false;
                        break;
                    }
                    Some(d) => pods_exist &= aff_found.contains(&d),
                }
            }
            if !has_all_keys || !(pods_exist || first_of_group) {
                v.reject(id, AFFINITY, true);
            } else if !anti_found.is_empty()
                && anti
                    .iter()
                    .any(|t| domain(labels, t.key).is_some_and(|d| anti_found.contains(&d)))
            {
                v.reject(id, ANTI_AFFINITY, false);
            } else if !existing.is_empty() && in_domains(labels, existing_keys, existing) {
                v.reject(id, EXISTING_ANTI_AFFINITY, false);
            } else if v.accept(id) {
                break;
            }
        }
        Ok(v.finish())
    }

    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let zeros = |nodes: &NodeTable<NodeInfo>| -> Result<Vec<u8>, PluginError> {
            for &id in candidates {
                nodes.get(id)?;
            }
            Ok(vec![0; candidates.len()])
        };
        let pref_affinity = preferred(&pod.pod_affinity);
        let pref_anti = preferred(&pod.pod_anti_affinity);
        let has_preferred = !pref_affinity.is_empty() || !pref_anti.is_empty();
        let hard = self.hard_pod_affinity_weight;
        if !has_preferred && (self.ignore_preferred_terms_of_existing_pods || hard == 0) {
            // Upstream's PreScore returns Skip (or finds nothing to count).
            return zeros(&self.nodes);
        }
        let mut r = Lookup(&self.syms);
        let ns_labels = Some(pod.namespace_labels.as_slice());
        let weighted: Vec<(i64, Term)> = pref_affinity
            .iter()
            .map(|w| (i64::from(w.weight), w))
            .chain(pref_anti.iter().map(|w| (-i64::from(w.weight), w)))
            .map(|(weight, w)| {
                (
                    weight,
                    Term::compile(&w.term, &pod.namespace, ns_labels, &mut r),
                )
            })
            .collect();
        let q = Incoming::new(&self.syms, pod);
        let mut topology = PairMap::default();
        let mut keys = Vec::new();
        let mut node_domains: Vec<Option<u64>> = Vec::with_capacity(weighted.len());
        for (_, node) in self.nodes.iter() {
            if node.pods.is_empty() || node.labels.is_empty() {
                continue;
            }
            if !has_preferred && node.with_affinity == 0 {
                continue;
            }
            node_domains.clear();
            node_domains.extend(weighted.iter().map(|(_, t)| domain(&node.labels, t.key)));
            for p in &node.pods {
                for ((weight, t), d) in weighted.iter().zip(&node_domains) {
                    if let Some(d) = *d {
                        if t.matches_placed(p) {
                            *topology.entry(d).or_insert(0) += weight;
                            add_key(&mut keys, d);
                        }
                    }
                }
                if hard > 0 {
                    for t in &p.required_affinity {
                        if let Some(d) = domain(&node.labels, t.key) {
                            if t.matches_incoming(&q) {
                                *topology.entry(d).or_insert(0) += hard;
                                add_key(&mut keys, d);
                            }
                        }
                    }
                }
            }
        }
        if topology.is_empty() {
            return zeros(&self.nodes);
        }
        let mut raw = Vec::with_capacity(candidates.len());
        for &id in candidates {
            let labels = &self.nodes.get(id)?.labels;
            let s: i64 = keys
                .iter()
                .filter_map(|&k| domain(labels, Some(k)))
                .filter_map(|d| topology.get(&d))
                .sum();
            raw.push(s);
        }
        let min = raw.iter().copied().min().unwrap_or(0);
        let max = raw.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        Ok(raw
            .iter()
            .map(|&s| {
                if diff > 0 {
                    // Upstream's float arithmetic, truncated.
                    (100.0 * ((s - min) as f64 / diff as f64)) as u8
                } else {
                    0
                }
            })
            .collect())
    }
}

trellis_sdk::export_scheduler!(InterPodAffinity);

#[cfg(test)]
mod tests {
    use super::*;

    /// One cycle's filter, as the host runs it: `prepare`, then `filter`.
    fn filter(
        p: &mut InterPodAffinity,
        pod: &Pod,
        candidates: &[NodeId],
    ) -> Result<FilterResult, PluginError> {
        p.prepare(pod)?;
        p.filter(pod, candidates, 0)
    }

    #[test]
    fn symbols_are_reused_after_release() {
        let mut s = Symbols::default();
        let a = s.acquire("a");
        assert_eq!(s.acquire("a"), a);
        s.release(a);
        assert_eq!(s.get("a"), Some(a));
        s.release(a);
        assert_eq!(s.get("a"), None);
        let b = s.acquire("b");
        assert_eq!(b, a);
        assert_eq!(s.get("b"), Some(b));
    }

    #[test]
    fn config_is_validated() {
        assert_eq!(parse_config("{}"), Ok((1, false)));
        assert_eq!(
            parse_config(
                r#"{"hardPodAffinityWeight": 0, "ignorePreferredTermsOfExistingPods": true}"#
            ),
            Ok((0, true))
        );
        for bad in [
            r#"{"hardPodAffinityWeight": 101}"#,
            r#"{"hardPodAffinityWeight": -1}"#,
            r#"{"hardPodAffinityWeight": "1"}"#,
            r#"{"ignorePreferredTermsOfExistingPods": 1}"#,
        ] {
            let e = parse_config(bad).unwrap_err();
            assert!(
                e.starts_with("hardPodAffinityWeight") || e.starts_with("ignorePreferred"),
                "{e}"
            );
        }
        assert!(parse_config(r#"{"x": 1}"#).unwrap_err().starts_with("x:"));
        assert!(parse_config("[]").is_err());
    }

    fn label(k: &str, v: &str) -> Label {
        Label {
            key: k.into(),
            value: v.into(),
        }
    }

    fn node(zone: &str) -> Node {
        Node {
            name: zone.into(),
            labels: vec![label("zone", zone)],
            taints: vec![],
            allocatable: zero_resources(),
            unschedulable: false,
            images: vec![],
        }
    }

    fn term(app: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: vec![label("app", app)],
                match_expressions: vec![],
            }),
            namespaces: vec![],
            namespace_selector: None,
            topology_key: "zone".into(),
        }
    }

    fn placed(uid: &str, app: &str, anti: Vec<PodAffinityTerm>) -> PlacedPod {
        PlacedPod {
            uid: uid.into(),
            namespace: "default".into(),
            labels: vec![label("app", app)],
            requests: zero_resources(),
            host_ports: vec![],
            required_anti_affinity: anti,
            required_affinity: vec![],
        }
    }

    fn pod(app: &str, affinity: Option<PodAffinity>, anti: Option<PodAffinity>) -> Pod {
        Pod {
            name: "p".into(),
            namespace: "default".into(),
            uid: "p".into(),
            labels: vec![label("app", app)],
            namespace_labels: vec![],
            node_name: None,
            node_selector: vec![],
            node_affinity: None,
            pod_affinity: affinity,
            pod_anti_affinity: anti,
            tolerations: vec![],
            topology_spread_constraints: vec![],
            containers: vec![],
            init_containers: vec![],
            overhead: zero_resources(),
            priority: 0,
        }
    }

    fn hard(t: PodAffinityTerm) -> Option<PodAffinity> {
        Some(PodAffinity {
            required: vec![t],
            preferred: vec![],
        })
    }

    #[test]
    fn forgetting_pods_releases_their_symbols_and_domains() {
        let mut p = InterPodAffinity::default();
        p.upsert_node(0, node("a")).unwrap();
        p.upsert_node(1, node("b")).unwrap();
        p.assume_pod(0, placed("x", "db", vec![term("web")]))
            .unwrap();
        // Replacing the same uid moves it.
        p.assume_pod(1, placed("x", "db", vec![term("web")]))
            .unwrap();
        let web = pod("web", None, None);
        let r = filter(&mut p, &web, &[0, 1]).unwrap();
        assert_eq!(r.feasible, vec![0]);
        assert_eq!(r.reasons[0].message, EXISTING_ANTI_AFFINITY);
        p.forget_pod(1, "x");
        assert_eq!(p.syms.get("db"), None);
        assert_eq!(p.syms.get("web"), None);
        let r = filter(&mut p, &web, &[0, 1]).unwrap();
        assert_eq!(r.feasible, vec![0, 1]);
        p.remove_node(1);
        assert!(filter(&mut p, &web, &[1]).is_err());
    }

    #[test]
    fn affinity_follows_the_group_and_anti_affinity_avoids_it() {
        let mut p = InterPodAffinity::default();
        for (i, z) in ["a", "b", "c"].iter().enumerate() {
            p.upsert_node(i as NodeId, node(z)).unwrap();
        }
        // First pod of a group: nobody matches yet, the pod matches itself.
        let r = filter(&mut p, &pod("web", hard(term("web")), None), &[0, 1, 2]).unwrap();
        assert_eq!(r.feasible, vec![0, 1, 2]);
        p.assume_pod(1, placed("w", "web", vec![])).unwrap();
        let r = filter(&mut p, &pod("web", hard(term("web")), None), &[0, 1, 2]).unwrap();
        assert_eq!(r.feasible, vec![1]);
        assert!(r.reasons[0].unresolvable);
        let r = filter(&mut p, &pod("web", None, hard(term("web"))), &[0, 1, 2]).unwrap();
        assert_eq!(r.feasible, vec![0, 2]);
        assert!(!r.reasons[0].unresolvable);
    }

    #[test]
    fn score_is_min_max_normalized() {
        let mut p = InterPodAffinity::default();
        for (i, z) in ["a", "b", "c"].iter().enumerate() {
            p.upsert_node(i as NodeId, node(z)).unwrap();
        }
        p.assume_pod(0, placed("1", "web", vec![])).unwrap();
        p.assume_pod(0, placed("2", "web", vec![])).unwrap();
        p.assume_pod(1, placed("3", "web", vec![])).unwrap();
        let pref = Some(PodAffinity {
            required: vec![],
            preferred: vec![WeightedPodAffinityTerm {
                weight: 10,
                term: term("web"),
            }],
        });
        // Raw 20, 10, 0.
        assert_eq!(
            p.score(&pod("x", pref, None), &[0, 1, 2]).unwrap(),
            vec![100, 50, 0]
        );
        assert_eq!(
            p.score(&pod("x", None, None), &[0, 1, 2]).unwrap(),
            vec![0, 0, 0]
        );
    }
}
