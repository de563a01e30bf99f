//! Upstream kube-scheduler's `PodTopologySpread` as a Trellis scheduler
//! plugin, for the pod's own `topologySpreadConstraints` (cluster-level
//! default constraints are not applied).
//!
//! Matching pods (same namespace, the constraint's label selector) are counted
//! per topology domain (the value of the node label `topologyKey`) over the
//! nodes that carry every topology key of the pod's constraints of that kind
//! and match the pod's `nodeSelector` and required node affinity (upstream's
//! default `nodeAffinityPolicy: Honor`; taints are ignored, as upstream's
//! default `nodeTaintsPolicy: Ignore`).
//!
//! **Filter** (`DoNotSchedule` constraints): a node without the topology key
//! is refused as unresolvable; a node where `count in its domain + (1 if the
//! pod matches the selector) - global minimum > maxSkew` is refused as
//! resolvable. With fewer domains than `minDomains` the global minimum is 0.
//!
//! **Score** (`ScheduleAnyway` constraints): per node, the sum over
//! constraints of `count × ln(domains + 2) + (maxSkew - 1)`, rounded; domains
//! counted among the scored candidates (for `kubernetes.io/hostname`, the
//! number of candidates, and the count is the node's own pods). Normalized as
//! upstream: `100 × (max + min - s) / max` (100 for all when `max` is 0);
//! candidates missing a topology key get 0.
//!
//! Config: `{}`, or `{"defaultingType": "List", "defaultConstraints": []}`;
//! default constraints are refused since they need the pod's owners.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use trellis_sdk::scheduler::*;
use trellis_sdk::selectors::{node_selector_matches, node_selector_term_matches, selector_matches};
use trellis_sdk::{LabelSelector, TopologySpreadConstraint, UnsatisfiableAction};

const NOT_MATCH: Refusal =
    Refusal::resolvable("node(s) didn't match pod topology spread constraints");
const MISSING_LABEL: Refusal = Refusal::unresolvable(
    "node(s) didn't match pod topology spread constraints (missing required label)",
);
const HOSTNAME: &str = "kubernetes.io/hostname";

/// A pod placed on a node, as far as spreading cares.
#[derive(Debug, Clone)]
struct Placed {
    uid: String,
    namespace: String,
    labels: Vec<Label>,
}

#[derive(Debug, Clone, Default)]
struct NodeInfo {
    name: String,
    labels: Vec<Label>,
    /// `labels` as interned (key, value) ids: the per-candidate loops look a
    /// topology domain up by number.
    ids: Vec<(u32, u32)>,
    pods: Vec<Placed>,
}

impl NodeInfo {
    /// The value id of the label with key id `key`.
    fn value(&self, key: Option<u32>) -> Option<u32> {
        let key = key?;
        self.ids.iter().find(|&&(k, _)| k == key).map(|&(_, v)| v)
    }

    /// Whether the node has a label of every key id in `keys`.
    fn has_all(&self, keys: &[Option<u32>]) -> bool {
        keys.iter().all(|&k| self.value(k).is_some())
    }
}

/// The plugin.
#[derive(Default)]
pub struct PodTopologySpread {
    nodes: NodeTable<NodeInfo>,
    /// Which node each placed pod is on, for `forget-pod` and replacement.
    pod_nodes: HashMap<String, NodeId>,
    /// Domain counts for the constraints pods have asked about, kept
    /// current as pods come and go, so that pods sharing constraints (the
    /// replicas of one workload) do not each recount every node and pod.
    cache: HashMap<String, Counts>,
    /// Label keys and values as numbers. Ids are never reused, so it only
    /// grows, by the distinct label strings the nodes ever had.
    interner: Interner,
}

/// Most sets of constraints kept counted at once.
const CACHE_ENTRIES: usize = 64;

/// Matching pods per domain, per constraint, over the eligible nodes.
struct Counts {
    namespace: String,
    selectors: Vec<Option<LabelSelector>>,
    /// Per constraint: domain (the label value's id) -> matching pods.
    counts: Vec<HashMap<u32, i64>>,
    /// Eligible nodes and their domain per constraint.
    domains: HashMap<NodeId, Vec<u32>>,
}

impl Counts {
    /// A pod arrived on (`delta` 1) or left (-1) node `id`.
    fn apply(&mut self, id: NodeId, namespace: &str, labels: &[Label], delta: i64) {
        if namespace != self.namespace {
            return;
        }
        let Some(domains) = self.domains.get(&id) else {
            return;
        };
        for (i, sel) in self.selectors.iter().enumerate() {
            if count_matching_one(sel.as_ref(), namespace, namespace, labels) {
                *self.counts[i].entry(domains[i]).or_insert(0) += delta;
            }
        }
    }
}

/// What a set of hard constraints is counted under: namespace, each
/// constraint's key and selector, and the pod's node eligibility rules.
fn cache_key(pod: &Pod, constraints: &[&TopologySpreadConstraint]) -> String {
    let required = pod.node_affinity.as_ref().map(|a| &a.required);
    format!(
        "{}|{:?}|{:?}|{:?}",
        pod.namespace,
        constraints
            .iter()
            .map(|c| (&c.topology_key, &c.label_selector))
            .collect::<Vec<_>>(),
        pod.node_selector,
        required,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Config {
    #[serde(default)]
    default_constraints: Vec<serde_json::Value>,
    defaulting_type: Option<String>,
}

/// Whether `sel` (upstream's parsed selector) matches `labels`: an absent
/// selector matches nothing.
fn sel_matches(sel: Option<&LabelSelector>, labels: &[Label]) -> bool {
    sel.is_some_and(|s| selector_matches(s, labels))
}

/// Upstream's `countPodsMatchSelector`: an absent or empty selector counts
/// nothing; only pods of the pod's namespace count.
fn count_matching(pods: &[Placed], sel: Option<&LabelSelector>, ns: &str) -> i64 {
    let Some(sel) = sel else { return 0 };
    if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        return 0;
    }
    pods.iter()
        .filter(|p| p.namespace == ns && selector_matches(sel, &p.labels))
        .count() as i64
}

/// Whether one placed pod counts under `sel` for a pod of namespace `ns`
/// (the rule of [`count_matching`]).
fn count_matching_one(
    sel: Option<&LabelSelector>,
    ns: &str,
    pod_ns: &str,
    labels: &[Label],
) -> bool {
    let Some(sel) = sel else { return false };
    if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        return false;
    }
    pod_ns == ns && selector_matches(sel, labels)
}

/// The pod's `nodeSelector` and required node affinity (upstream's
/// `GetRequiredNodeAffinity(pod).Match(node)`).
fn required_affinity_matches(pod: &Pod, node: &NodeInfo) -> bool {
    if !node_selector_matches(&pod.node_selector, &node.labels) {
        return false;
    }
    match &pod.node_affinity {
        Some(a) if !a.required.is_empty() => a
            .required
            .iter()
            .any(|t| node_selector_term_matches(t, &node.labels, &node.name)),
        _ => true,
    }
}

impl PodTopologySpread {
    /// The key id of each constraint's `topologyKey` (none: no node ever had
    /// that label).
    fn key_ids(&self, constraints: &[&TopologySpreadConstraint]) -> Vec<Option<u32>> {
        constraints
            .iter()
            .map(|c| self.interner.get(&c.topology_key))
            .collect()
    }

    fn forget(&mut self, uid: &str) {
        if let Some(id) = self.pod_nodes.remove(uid) {
            if let Ok(n) = self.nodes.get_mut(id) {
                if let Some(i) = n.pods.iter().position(|p| p.uid == uid) {
                    let gone = n.pods.swap_remove(i);
                    for c in self.cache.values_mut() {
                        c.apply(id, &gone.namespace, &gone.labels, -1);
                    }
                }
            }
        }
    }

    /// Count `constraints` (all of one kind) from scratch: every eligible
    /// node and every pod on it.
    fn build_counts(&self, pod: &Pod, constraints: &[&TopologySpreadConstraint]) -> Counts {
        let keys = self.key_ids(constraints);
        let mut counts: Vec<HashMap<u32, i64>> = vec![HashMap::new(); constraints.len()];
        let mut domains = HashMap::new();
        for (id, node) in self.nodes.iter() {
            if !node.has_all(&keys) || !required_affinity_matches(pod, node) {
                continue;
            }
            let mut mine = Vec::with_capacity(constraints.len());
            for (i, c) in constraints.iter().enumerate() {
                let value = node.value(keys[i]).expect("has every key");
                let n = count_matching(&node.pods, c.label_selector.as_ref(), &pod.namespace);
                *counts[i].entry(value).or_insert(0) += n;
                mine.push(value);
            }
            domains.insert(id, mine);
        }
        Counts {
            namespace: pod.namespace.clone(),
            selectors: constraints
                .iter()
                .map(|c| c.label_selector.clone())
                .collect(),
            counts,
            domains,
        }
    }

    /// Make sure the domain counts of `constraints` (all of one kind) for
    /// `pod` are in the cache: kept from an earlier pod with the same
    /// constraints and node eligibility rules, or counted now. Their key.
    fn ensure_counts(&mut self, pod: &Pod, constraints: &[&TopologySpreadConstraint]) -> String {
        let key = cache_key(pod, constraints);
        if !self.cache.contains_key(&key) {
            if self.cache.len() >= CACHE_ENTRIES {
                self.cache.clear();
            }
            let built = self.build_counts(pod, constraints);
            self.cache.insert(key.clone(), built);
        }
        key
    }
}

impl SchedulerPlugin for PodTopologySpread {
    fn info() -> PluginInfo {
        plugin_info("PodTopologySpread", "0.1.0", Phases::FILTER | Phases::SCORE)
            .reads(PodFields::META | PodFields::NODE_SELECTION | PodFields::TOPOLOGY_SPREAD)
            .reads_nodes(NodeFields::LABELS)
    }

    /// Upstream's PreFilter and PreScore skip: the filter applies only to a
    /// pod with a `DoNotSchedule` constraint, the score only to one with a
    /// `ScheduleAnyway` constraint (there are no cluster default constraints).
    fn prepare(&mut self, pod: &Pod) -> Result<Phases, PluginError> {
        let mut phases = Phases::empty();
        for c in &pod.topology_spread_constraints {
            phases |= match c.when_unsatisfiable {
                UnsatisfiableAction::DoNotSchedule => Phases::FILTER,
                UnsatisfiableAction::ScheduleAnyway if !self.nodes.is_empty() => Phases::SCORE,
                UnsatisfiableAction::ScheduleAnyway => Phases::empty(),
            };
        }
        Ok(phases)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let c: Config = serde_json::from_str(config).map_err(|e| {
            PluginError::InvalidConfig(format!("invalid PodTopologySpread configuration: {e}"))
        })?;
        if !c.default_constraints.is_empty() {
            return Err(PluginError::InvalidConfig(
                "defaultConstraints: cluster-level default constraints are not supported; only the pod's own topologySpreadConstraints apply".into(),
            ));
        }
        match c.defaulting_type.as_deref() {
            None | Some("List") => Ok(()),
            Some(other) => Err(PluginError::InvalidConfig(format!(
                "defaultingType: Unsupported value: {other:?}: supported values: \"List\" (system defaulting is not supported)"
            ))),
        }
    }

    fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
        let ids = node
            .labels
            .iter()
            .map(|l| (self.interner.intern(&l.key), self.interner.intern(&l.value)))
            .collect();
        match self.nodes.get_mut(id) {
            // A replaced node keeps the pods assumed on it.
            Ok(n) => {
                // Equal ids are equal labels.
                if n.name != node.name || n.ids != ids {
                    self.cache.clear();
                }
                n.name = node.name;
                n.labels = node.labels;
                n.ids = ids;
            }
            Err(_) => {
                self.cache.clear();
                self.nodes.insert(
                    id,
                    NodeInfo {
                        name: node.name,
                        labels: node.labels,
                        ids,
                        pods: Vec::new(),
                    },
                )
            }
        }
        Ok(())
    }

    fn remove_node(&mut self, id: NodeId) {
        self.cache.clear();
        if let Some(n) = self.nodes.remove(id) {
            for p in &n.pods {
                self.pod_nodes.remove(&p.uid);
            }
        }
    }

    fn assume_pod(&mut self, node: NodeId, pod: PlacedPod) -> Result<(), PluginError> {
        self.nodes.get(node)?;
        self.forget(&pod.uid);
        self.pod_nodes.insert(pod.uid.clone(), node);
        for c in self.cache.values_mut() {
            c.apply(node, &pod.namespace, &pod.labels, 1);
        }
        self.nodes.get_mut(node)?.pods.push(Placed {
            uid: pod.uid,
            namespace: pod.namespace,
            labels: pod.labels,
        });
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
        let hard: Vec<&TopologySpreadConstraint> = pod
            .topology_spread_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == UnsatisfiableAction::DoNotSchedule)
            .collect();
        if hard.is_empty() {
            return self.nodes.filter(candidates, max_feasible, |_| None);
        }
        let key = self.ensure_counts(pod, &hard);
        let counts = &self.cache[&key].counts;
        // (global minimum, 1 if the pod matches its own selector) per constraint.
        let prepared: Vec<(i64, i64)> = hard
            .iter()
            .zip(counts)
            .map(|(c, m)| {
                let min_domains = c.min_domains.unwrap_or(1) as usize;
                let min = if m.len() < min_domains {
                    0
                } else {
                    m.values().copied().min().unwrap_or(0)
                };
                let own = i64::from(sel_matches(c.label_selector.as_ref(), &pod.labels));
                (min, own)
            })
            .collect();
        let keys = self.key_ids(&hard);
        self.nodes.filter(candidates, max_feasible, |node| {
            for (i, c) in hard.iter().enumerate() {
                let Some(value) = node.value(keys[i]) else {
                    return Some(&MISSING_LABEL);
                };
                let (min, own) = prepared[i];
                let matching = counts[i].get(&value).copied().unwrap_or(0);
                if matching + own - min > i64::from(c.max_skew) {
                    return Some(&NOT_MATCH);
                }
            }
            None
        })
    }

    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, PluginError> {
        let soft: Vec<&TopologySpreadConstraint> = pod
            .topology_spread_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == UnsatisfiableAction::ScheduleAnyway)
            .collect();
        let mut scores = Vec::with_capacity(candidates.len());
        if soft.is_empty() || self.nodes.is_empty() {
            // Upstream skips the plugin: no score from it.
            for &id in candidates {
                self.nodes.get(id)?;
                scores.push(0);
            }
            return Ok(scores);
        }
        // Matching pods per domain over every eligible node, counted once
        // for the pods that share these constraints (hostname constraints
        // count each node's own pods below).
        let key = self.ensure_counts(pod, &soft);
        let counts = &self.cache[&key].counts;
        // Domains present among the scored candidates, and which are ignored.
        let mut ignored = Vec::with_capacity(candidates.len());
        let keys = self.key_ids(&soft);
        let mut present: Vec<HashSet<u32>> = vec![HashSet::new(); soft.len()];
        for &id in candidates {
            let node = self.nodes.get(id)?;
            let skip = !node.has_all(&keys);
            ignored.push(skip);
            if skip {
                continue;
            }
            for (i, c) in soft.iter().enumerate() {
                if c.topology_key != HOSTNAME {
                    present[i].insert(node.value(keys[i]).expect("has every key"));
                }
            }
        }
        let scored = ignored.iter().filter(|s| !**s).count();
        let weights: Vec<f64> = soft
            .iter()
            .zip(&present)
            .map(|(c, m)| {
                let size = if c.topology_key == HOSTNAME {
                    scored
                } else {
                    m.len()
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let mut raw = Vec::with_capacity(candidates.len());
        for (k, &id) in candidates.iter().enumerate() {
            if ignored[k] {
                raw.push(-1i64);
                continue;
            }
            let node = self.nodes.get(id)?;
            let mut s = 0.0f64;
            for (i, c) in soft.iter().enumerate() {
                let cnt = if c.topology_key == HOSTNAME {
                    count_matching(&node.pods, c.label_selector.as_ref(), &pod.namespace)
                } else {
                    let value = node.value(keys[i]).expect("has every key");
                    counts[i].get(&value).copied().unwrap_or(0)
                };
                s += cnt as f64 * weights[i] + f64::from(c.max_skew - 1);
            }
            raw.push(s.round() as i64);
        }
        let (mut min, mut max) = (i64::MAX, 0i64);
        for (k, &s) in raw.iter().enumerate() {
            if !ignored[k] {
                min = min.min(s);
                max = max.max(s);
            }
        }
        for (k, &s) in raw.iter().enumerate() {
            let n = if ignored[k] {
                0
            } else if max == 0 {
                100
            } else {
                100 * (max + min - s) / max
            };
            scores.push(n.clamp(0, 100) as u8);
        }
        Ok(scores)
    }
}

trellis_sdk::export_scheduler!(PodTopologySpread);

#[cfg(test)]
mod tests {
    use super::*;

    fn label(k: &str, v: &str) -> Label {
        Label {
            key: k.into(),
            value: v.into(),
        }
    }

    fn node(i: u32) -> Node {
        Node {
            name: format!("n{i}"),
            labels: vec![
                label("zone", &format!("z{}", i % 3)),
                label(HOSTNAME, &format!("n{i}")),
            ],
            taints: vec![],
            allocatable: zero_resources(),
            unschedulable: false,
            images: vec![],
        }
    }

    fn placed(uid: &str, app: &str, ns: &str) -> PlacedPod {
        PlacedPod {
            uid: uid.into(),
            namespace: ns.into(),
            labels: vec![label("app", app)],
            requests: zero_resources(),
            host_ports: vec![],
            required_anti_affinity: vec![],
            required_affinity: vec![],
        }
    }

    fn spread(app: &str, key: &str) -> Pod {
        Pod {
            name: "p".into(),
            namespace: "default".into(),
            uid: "p".into(),
            labels: vec![label("app", app)],
            namespace_labels: vec![],
            node_name: None,
            node_selector: vec![],
            node_affinity: None,
            pod_affinity: None,
            pod_anti_affinity: None,
            tolerations: vec![],
            topology_spread_constraints: vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: key.into(),
                when_unsatisfiable: UnsatisfiableAction::DoNotSchedule,
                label_selector: Some(LabelSelector {
                    match_labels: vec![label("app", app)],
                    match_expressions: vec![],
                }),
                min_domains: None,
            }],
            containers: vec![],
            init_containers: vec![],
            overhead: zero_resources(),
            priority: 0,
        }
    }

    /// The verdicts of `p` equal those of a fresh instance fed the same
    /// nodes and pods (which counts from scratch).
    fn same_as_fresh(p: &mut PodTopologySpread, pods: &[(NodeId, PlacedPod)], nodes: &[NodeId]) {
        let mut fresh = PodTopologySpread::default();
        for &id in nodes {
            fresh
                .upsert_node(
                    id,
                    Node {
                        name: p.nodes.get(id).unwrap().name.clone(),
                        labels: p.nodes.get(id).unwrap().labels.clone(),
                        ..node(id)
                    },
                )
                .unwrap();
        }
        for (id, pod) in pods {
            fresh.assume_pod(*id, pod.clone()).unwrap();
        }
        for q in [
            spread("web", "zone"),
            spread("web", HOSTNAME),
            spread("db", "zone"),
        ] {
            let a = p.filter(&q, nodes, 0).unwrap();
            let b = fresh.filter(&q, nodes, 0).unwrap();
            assert_eq!(a.feasible, b.feasible, "feasible for {:?}", q.labels);
            assert_eq!(a.rejected.len(), b.rejected.len());
            // The same constraint as a preference: the same counts score.
            let mut soft = q.clone();
            soft.topology_spread_constraints[0].when_unsatisfiable =
                UnsatisfiableAction::ScheduleAnyway;
            let key = &soft.topology_spread_constraints[0].topology_key;
            assert_eq!(
                p.score(&soft, nodes).unwrap(),
                fresh.score(&soft, nodes).unwrap(),
                "scores for {:?} spread over {key}",
                soft.labels
            );
        }
    }

    #[test]
    fn cached_counts_follow_every_change() {
        let mut p = PodTopologySpread::default();
        let mut nodes: Vec<NodeId> = (0..6).collect();
        for &id in &nodes {
            p.upsert_node(id, node(id)).unwrap();
        }
        let mut pods: Vec<(NodeId, PlacedPod)> = Vec::new();
        same_as_fresh(&mut p, &pods, &nodes);
        // Pods arrive (counted into the cache built above).
        for (i, (id, app, ns)) in [
            (0, "web", "default"),
            (0, "web", "default"),
            (3, "web", "default"),
            (1, "db", "default"),
            (2, "web", "other"),
        ]
        .into_iter()
        .enumerate()
        {
            let pod = placed(&format!("u{i}"), app, ns);
            p.assume_pod(id, pod.clone()).unwrap();
            pods.push((id, pod));
            same_as_fresh(&mut p, &pods, &nodes);
        }
        // Filter and score share an entry per distinct constraint set.
        assert_eq!(p.cache.len(), 3, "one entry per distinct constraint set");
        // A pod moves (same uid), one leaves.
        let moved = placed("u0", "web", "default");
        p.assume_pod(4, moved.clone()).unwrap();
        pods[0] = (4, moved);
        p.forget_pod(0, "u1");
        pods.remove(1);
        same_as_fresh(&mut p, &pods, &nodes);
        // A heartbeat with the same labels keeps the cache; a relabel drops it.
        p.upsert_node(5, node(5)).unwrap();
        assert_eq!(p.cache.len(), 3);
        let mut relabelled = node(5);
        relabelled.labels[0] = label("zone", "z0");
        p.upsert_node(5, relabelled).unwrap();
        assert!(p.cache.is_empty());
        same_as_fresh(&mut p, &pods, &nodes);
        // A node leaves with its pods.
        p.remove_node(3);
        pods.retain(|(id, _)| *id != 3);
        nodes.retain(|id| *id != 3);
        same_as_fresh(&mut p, &pods, &nodes);
    }
}
