//! A profile's chain: its plugins in order, and one scheduling cycle over
//! them. Filters run in chain order over the surviving candidates, each in one
//! call; scorers then score the feasible nodes in one call each, weighted.
//! Like upstream, a cycle stops looking once it has found enough feasible
//! nodes (`percentageOfNodesToScore`), starting from a node that rotates from
//! one pod to the next so that every node gets its turn.

use std::collections::BTreeMap;

use trellis_plugin_host::scheduler::{
    FilterResult, Node, NodeId, Phases, PlacedPod, PluginInfo, Pod, SchedulerSession,
};
use trellis_plugin_host::CallError;

use crate::explain::{Explanation, FilterNote, ScoreNote};

/// One plugin as the runtime drives it: a Wasm component through a
/// [`SchedulerSession`], or a native implementation (the benchmark compiles
/// the same plugin crates into the host to measure what the sandbox costs).
/// The calls mirror the WIT `scheduler` interface.
pub trait ChainPlugin: Send {
    /// What the plugin says about itself.
    fn info(&self) -> PluginInfo;
    /// Add or replace a node.
    fn upsert_node(&mut self, id: NodeId, node: &Node) -> Result<(), CallError>;
    /// Remove a node and the pods on it.
    fn remove_node(&mut self, id: NodeId) -> Result<(), CallError>;
    /// A pod is bound or assumed on a node.
    fn assume_pod(&mut self, node: NodeId, pod: &PlacedPod) -> Result<(), CallError>;
    /// A pod left a node.
    fn forget_pod(&mut self, node: NodeId, uid: &str) -> Result<(), CallError>;
    /// Filter `candidates`, stopping after `max_feasible` feasible ones (0 = all).
    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError>;
    /// One score in 0..=100 per candidate.
    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, CallError>;
}

/// A Wasm plugin: a session on a loaded component.
pub struct WasmPlugin {
    session: SchedulerSession,
    info: PluginInfo,
}

impl WasmPlugin {
    /// A session on `plugin`.
    pub fn new(plugin: trellis_plugin_host::scheduler::SchedulerPlugin) -> Self {
        let info = plugin.info().clone();
        let slot = std::sync::Arc::new(trellis_plugin_host::PluginSlot::new(plugin));
        Self {
            session: SchedulerSession::new(slot),
            info,
        }
    }
}

impl ChainPlugin for WasmPlugin {
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }
    fn upsert_node(&mut self, id: NodeId, node: &Node) -> Result<(), CallError> {
        self.session.upsert_node(id, node.clone())
    }
    fn remove_node(&mut self, id: NodeId) -> Result<(), CallError> {
        self.session.remove_node(id)
    }
    fn assume_pod(&mut self, node: NodeId, pod: &PlacedPod) -> Result<(), CallError> {
        self.session.assume_pod(node, pod.clone())
    }
    fn forget_pod(&mut self, node: NodeId, uid: &str) -> Result<(), CallError> {
        self.session.forget_pod(node, uid)
    }
    fn filter(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError> {
        self.session.filter(pod, candidates, max_feasible)
    }
    fn score(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, CallError> {
        self.session.score(pod, candidates)
    }
}

/// What to do when a plugin fails (error, trap, deadline, memory cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailurePolicy {
    /// The pod's cycle fails; the pod is retried after a back-off.
    Fail,
    /// The plugin is skipped for this pod, and that is recorded.
    Ignore,
}

impl FailurePolicy {
    /// The spelling in a `SchedulerProfile`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Fail => "Fail",
            FailurePolicy::Ignore => "Ignore",
        }
    }
}

/// One plugin of a chain with its place in it.
pub struct Entry {
    /// The name the profile knows it by (the `Plugin` object's name).
    pub name: String,
    plugin: Box<dyn ChainPlugin>,
    phases: Phases,
    /// Whether it filters (if the plugin can).
    pub filter: bool,
    /// Score weight; 0 means it does not score.
    pub weight: i64,
    /// What a failure of this plugin does.
    pub failure: FailurePolicy,
}

impl Entry {
    /// A plugin that filters (if it can) and scores with `weight` (if it can),
    /// with failure policy `Fail`.
    pub fn new(name: impl Into<String>, plugin: Box<dyn ChainPlugin>, weight: i64) -> Self {
        let phases = plugin.info().phases;
        Self {
            name: name.into(),
            plugin,
            phases,
            filter: true,
            weight,
            failure: FailurePolicy::Fail,
        }
    }

    /// A Wasm plugin, named after the plugin itself.
    pub fn wasm(plugin: trellis_plugin_host::scheduler::SchedulerPlugin, weight: i64) -> Self {
        let name = plugin.name().to_string();
        Self::new(name, Box::new(WasmPlugin::new(plugin)), weight)
    }

    /// Set the failure policy.
    pub fn failure(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// Whether the entry filters.
    pub fn filters(&self) -> bool {
        self.filter && self.phases.contains(Phases::FILTER)
    }

    /// Whether the entry scores.
    pub fn scores(&self) -> bool {
        self.weight > 0 && self.phases.contains(Phases::SCORE)
    }
}

/// A scheduling profile: the `spec.schedulerName` it serves and its chain.
pub struct Profile {
    pub(crate) name: String,
    pub(crate) entries: Vec<Entry>,
    /// 0 = upstream's adaptive percentage; 1..=100 a fixed one.
    pub(crate) percentage: u32,
    next_start: usize,
}

impl Profile {
    /// An empty profile for `scheduler_name`.
    pub fn new(scheduler_name: &str) -> Self {
        Self {
            name: scheduler_name.into(),
            entries: Vec::new(),
            percentage: 0,
            next_start: 0,
        }
    }

    /// Add a plugin at the end of the chain.
    pub fn with(mut self, entry: Entry) -> Self {
        self.entries.push(entry);
        self
    }

    /// Set `percentageOfNodesToScore` (0 = adaptive, as upstream).
    pub fn percentage_of_nodes_to_score(mut self, percentage: u32) -> Self {
        self.percentage = percentage.min(100);
        self
    }

    /// The scheduler name it serves.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The entries, in chain order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Tell every plugin about a node. A plugin that refuses it is logged.
    pub(crate) fn upsert_node(&mut self, id: NodeId, node: &Node) {
        for e in &mut self.entries {
            if let Err(err) = e.plugin.upsert_node(id, node) {
                tracing::warn!(profile = %self.name, plugin = %e.name, node = %node.name, error = %err, "plugin refused a node");
            }
        }
    }

    pub(crate) fn remove_node(&mut self, id: NodeId) {
        for e in &mut self.entries {
            let _ = e.plugin.remove_node(id);
        }
    }

    pub(crate) fn assume_pod(&mut self, id: NodeId, pod: &PlacedPod) {
        for e in &mut self.entries {
            if let Err(err) = e.plugin.assume_pod(id, pod) {
                tracing::warn!(profile = %self.name, plugin = %e.name, pod = %pod.uid, error = %err, "plugin refused a pod");
            }
        }
    }

    pub(crate) fn forget_pod(&mut self, id: NodeId, uid: &str) {
        for e in &mut self.entries {
            let _ = e.plugin.forget_pod(id, uid);
        }
    }

    /// How many feasible nodes to look for among `n` (upstream's
    /// `numFeasibleNodesToFind`).
    pub(crate) fn feasible_to_find(&self, n: usize) -> usize {
        const MIN_FEASIBLE: usize = 100;
        if n < MIN_FEASIBLE || self.percentage >= 100 {
            return n;
        }
        let pct = if self.percentage == 0 {
            (50 - (n / 125) as i64).max(5) as usize
        } else {
            self.percentage as usize
        };
        (n * pct / 100).max(MIN_FEASIBLE)
    }

    /// One scheduling cycle for `pod` over the live node ids `nodes` (in id
    /// order). Fills `why` with what each plugin said.
    pub(crate) fn decide(&mut self, pod: &Pod, nodes: &[NodeId], why: &mut Explanation) -> Outcome {
        let total = nodes.len();
        why.nodes = total;
        if total == 0 {
            return Outcome::Unschedulable("0/0 nodes are available: no nodes registered.".into());
        }
        let want = self.feasible_to_find(total);
        let start = self.next_start % total;
        // Rotated order: examine from `start`, wrapping around.
        let order: Vec<NodeId> = nodes[start..]
            .iter()
            .chain(&nodes[..start])
            .copied()
            .collect();
        let mut feasible: Vec<NodeId> = Vec::new();
        let mut examined = 0;
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let last_filter = self.entries.iter().rposition(Entry::filters);
        while examined < total && feasible.len() < want {
            let need = want - feasible.len();
            // A window a little larger than what is still needed, since
            // later filters may refuse some of what earlier ones let through.
            let size = if want == total {
                total
            } else {
                (need + need / 4).max(64)
            };
            let end = (examined + size).min(total);
            let mut window: Vec<NodeId> = order[examined..end].to_vec();
            let mut consumed = end - examined;
            for (i, e) in self.entries.iter_mut().enumerate() {
                if !e.filters() || window.is_empty() {
                    continue;
                }
                // Only the last filter may stop early: what it lets through is final.
                let limit = if Some(i) == last_filter && want < total {
                    need as u32
                } else {
                    0
                };
                match e.plugin.filter(pod, &window, limit) {
                    Ok(r) => {
                        let seen = r.feasible.len() + r.rejected.len();
                        if let Some(first_unseen) = window.get(seen).filter(|_| limit > 0) {
                            // The plugin stopped early, with enough feasible
                            // nodes: the next pod starts at the first node it
                            // did not examine.
                            consumed = order[examined..end]
                                .iter()
                                .position(|n| n == first_unseen)
                                .unwrap_or(consumed);
                        }
                        let note = FilterNote::from_result(&e.name, &r);
                        for (msg, n) in note.counts() {
                            *reasons.entry(msg.to_string()).or_default() += n;
                        }
                        why.filter(note);
                        window = r.feasible;
                    }
                    Err(err) => match e.failure {
                        FailurePolicy::Ignore => why.skipped(&e.name, &err),
                        FailurePolicy::Fail => {
                            why.failed(&e.name, &err);
                            return Outcome::Error(fail_message(&e.name, &err));
                        }
                    },
                }
            }
            examined += consumed;
            feasible.extend(window);
        }
        self.next_start = (start + examined) % total;
        why.examined = examined;
        why.feasible = feasible.len();
        if feasible.is_empty() {
            let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            return Outcome::Unschedulable(format!(
                "0/{total} nodes are available: {}.",
                parts.join(", ")
            ));
        }
        let mut totals = vec![0i64; feasible.len()];
        if feasible.len() > 1 {
            for e in &mut self.entries {
                if !e.scores() {
                    continue;
                }
                match e.plugin.score(pod, &feasible) {
                    Ok(s) => {
                        why.score(ScoreNote::new(&e.name, e.weight, &feasible, &s));
                        for (t, s) in totals.iter_mut().zip(s) {
                            *t += i64::from(s) * e.weight;
                        }
                    }
                    Err(err) => match e.failure {
                        FailurePolicy::Ignore => why.skipped(&e.name, &err),
                        FailurePolicy::Fail => {
                            why.failed(&e.name, &err);
                            return Outcome::Error(fail_message(&e.name, &err));
                        }
                    },
                }
            }
        }
        // Highest total wins; ties go to the node examined first.
        let best = totals
            .iter()
            .enumerate()
            .max_by_key(|(i, t)| (**t, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)
            .unwrap_or(0);
        why.totals(&feasible, &totals);
        Outcome::Fits(feasible[best])
    }
}

/// The result of one cycle.
pub(crate) enum Outcome {
    /// Bind to this node.
    Fits(NodeId),
    /// No node fits; the FailedScheduling message.
    Unschedulable(String),
    /// A plugin with policy `Fail` failed; the message.
    Error(String),
}

fn fail_message(plugin: &str, e: &CallError) -> String {
    format!("running plugin {plugin:?} failed: {e}")
}
