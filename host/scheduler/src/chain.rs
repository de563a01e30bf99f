//! A profile's chain: its plugins in order, and one scheduling cycle over
//! them. Every plugin first gets the pod (`prepare`, upstream's PreFilter and
//! PreScore) and says which of its phases apply to it; filters then run in
//! chain order over the surviving candidates, each in one call; scorers then
//! score the feasible nodes in one call each, weighted.
//! Like upstream, a cycle stops looking once it has found enough feasible
//! nodes (`percentageOfNodesToScore`), starting from a node that rotates from
//! one pod to the next so that every node gets its turn.

use std::collections::BTreeMap;
use std::sync::Arc;

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
    fn upsert_node(&mut self, id: NodeId, node: &Arc<Node>) -> Result<(), CallError>;
    /// Remove a node and the pods on it.
    fn remove_node(&mut self, id: NodeId) -> Result<(), CallError>;
    /// A pod is bound or assumed on a node. Called for every plugin; one
    /// that does not track pods ignores it.
    fn assume_pod(&mut self, node: NodeId, pod: &Arc<PlacedPod>) -> Result<(), CallError>;
    /// A pod left a node.
    fn forget_pod(&mut self, node: NodeId, uid: &str) -> Result<(), CallError>;
    /// Begin a cycle for `pod`: which of the plugin's phases apply to it.
    fn prepare(&mut self, pod: &Arc<Pod>) -> Result<Phases, CallError>;
    /// Filter `candidates` for the prepared pod, stopping after
    /// `max_feasible` feasible ones (0 = all).
    fn filter(
        &mut self,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError>;
    /// One score in 0..=100 per candidate, for the prepared pod.
    fn score(&mut self, candidates: &[NodeId]) -> Result<Vec<u8>, CallError>;
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
    fn upsert_node(&mut self, id: NodeId, node: &Arc<Node>) -> Result<(), CallError> {
        self.session.upsert_node(id, node.clone())
    }
    fn remove_node(&mut self, id: NodeId) -> Result<(), CallError> {
        self.session.remove_node(id)
    }
    fn assume_pod(&mut self, node: NodeId, pod: &Arc<PlacedPod>) -> Result<(), CallError> {
        self.session.assume_pod(node, pod.clone())
    }
    fn forget_pod(&mut self, node: NodeId, uid: &str) -> Result<(), CallError> {
        self.session.forget_pod(node, uid)
    }
    fn prepare(&mut self, pod: &Arc<Pod>) -> Result<Phases, CallError> {
        self.session.prepare(pod)
    }
    fn filter(
        &mut self,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError> {
        self.session.filter(candidates, max_feasible)
    }
    fn score(&mut self, candidates: &[NodeId]) -> Result<Vec<u8>, CallError> {
        self.session.score(candidates)
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

    /// The phases the entry runs in this profile.
    fn runs(&self) -> Phases {
        let mut p = Phases::empty();
        if self.filters() {
            p |= Phases::FILTER;
        }
        if self.scores() {
            p |= Phases::SCORE;
        }
        p
    }

    /// Apply the failure policy to an error of this entry's plugin: under
    /// `Ignore` it is recorded and the cycle goes on (`Ok`); under `Fail` the
    /// cycle fails with the returned message.
    fn failed(&self, err: &CallError, why: &mut Explanation) -> Result<(), String> {
        match self.failure {
            FailurePolicy::Ignore => {
                why.skipped(&self.name, err);
                Ok(())
            }
            FailurePolicy::Fail => {
                why.failed(&self.name, err);
                Err(fail_message(&self.name, err))
            }
        }
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
    pub(crate) fn upsert_node(&mut self, id: NodeId, node: &Arc<Node>) {
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

    pub(crate) fn assume_pod(&mut self, id: NodeId, pod: &Arc<PlacedPod>) {
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

    /// Hand `pod` to every plugin that filters or scores in this profile:
    /// the phases that run for it, per entry, or the failure message of a
    /// plugin under `Fail`. A plugin under `Ignore` that fails is skipped.
    fn prepare(&mut self, pod: &Arc<Pod>, why: &mut Explanation) -> Result<Vec<Phases>, String> {
        let mut active = Vec::with_capacity(self.entries.len());
        for e in &mut self.entries {
            let wanted = e.runs();
            let phases = if wanted == Phases::empty() {
                wanted
            } else {
                match e.plugin.prepare(pod) {
                    Ok(phases) => phases & wanted,
                    Err(err) => {
                        e.failed(&err, why)?;
                        Phases::empty()
                    }
                }
            };
            active.push(phases);
        }
        Ok(active)
    }

    /// One scheduling cycle for `pod` over the live node ids `nodes` (in id
    /// order). Fills `why` with what each plugin said.
    pub(crate) fn decide(
        &mut self,
        pod: &Arc<Pod>,
        nodes: &[NodeId],
        why: &mut Explanation,
    ) -> Outcome {
        let total = nodes.len();
        why.nodes = total;
        if total == 0 {
            return Outcome::Unschedulable("0/0 nodes are available: no nodes registered.".into());
        }
        let active = match self.prepare(pod, why) {
            Ok(a) => a,
            Err(message) => return Outcome::Error(message),
        };
        let filters = |i: usize| active[i].contains(Phases::FILTER);
        let want = self.feasible_to_find(total);
        let start = self.next_start % total;
        // Rotated order: the k-th node examined is `at(k)`, from `start`
        // wrapping around.
        let at = |k: usize| nodes[(start + k) % total];
        let mut feasible: Vec<NodeId> = Vec::new();
        let mut examined = 0;
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let last_filter = (0..self.entries.len()).rev().find(|&i| filters(i));
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
            let mut window: Vec<NodeId> = (examined..end).map(at).collect();
            let mut consumed = end - examined;
            for (i, e) in self.entries.iter_mut().enumerate() {
                if !filters(i) || window.is_empty() {
                    continue;
                }
                // Only the last filter may stop early: what it lets through is final.
                let limit = if Some(i) == last_filter && want < total {
                    need as u32
                } else {
                    0
                };
                match e.plugin.filter(&window, limit) {
                    Ok(r) => {
                        let seen = r.feasible.len() + r.rejected.len();
                        if let Some(first_unseen) = window.get(seen).filter(|_| limit > 0) {
                            // The plugin stopped early, with enough feasible
                            // nodes: the next pod starts at the first node it
                            // did not examine.
                            consumed = (examined..end)
                                .position(|k| at(k) == *first_unseen)
                                .unwrap_or(consumed);
                        }
                        let note = FilterNote::from_result(&e.name, &r);
                        for (msg, n) in note.counts() {
                            *reasons.entry(msg.to_string()).or_default() += n;
                        }
                        why.filter(note);
                        window = r.feasible;
                    }
                    Err(err) => {
                        if let Err(message) = e.failed(&err, why) {
                            return Outcome::Error(message);
                        }
                    }
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
            for (e, phases) in self.entries.iter_mut().zip(&active) {
                if !phases.contains(Phases::SCORE) {
                    continue;
                }
                match e.plugin.score(&feasible) {
                    Ok(s) => {
                        why.score(ScoreNote::new(&e.name, e.weight, &feasible, &s));
                        for (t, s) in totals.iter_mut().zip(s) {
                            *t += i64::from(s) * e.weight;
                        }
                    }
                    Err(err) => {
                        if let Err(message) = e.failed(&err, why) {
                            return Outcome::Error(message);
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_plugin_host::scheduler::Reason;
    use trellis_plugin_host::PluginFault;

    /// Refuses odd node ids; scores a node by its id; counts what it saw.
    struct Odd {
        phases: Phases,
        /// What `prepare` answers.
        applies: Phases,
        seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        broken: bool,
    }

    fn odd(phases: Phases) -> (Box<Odd>, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let p = Odd {
            phases,
            applies: phases,
            seen: seen.clone(),
            broken: false,
        };
        (Box::new(p), seen)
    }

    impl ChainPlugin for Odd {
        fn info(&self) -> PluginInfo {
            PluginInfo {
                name: "Odd".into(),
                version: "0".into(),
                phases: self.phases,
                tracks_pods: false,
                pod_fields: trellis_plugin_host::scheduler::PodFields::empty(),
                node_fields: trellis_plugin_host::scheduler::NodeFields::empty(),
            }
        }
        fn upsert_node(&mut self, _: NodeId, _: &Arc<Node>) -> Result<(), CallError> {
            Ok(())
        }
        fn remove_node(&mut self, _: NodeId) -> Result<(), CallError> {
            Ok(())
        }
        fn assume_pod(&mut self, _: NodeId, _: &Arc<PlacedPod>) -> Result<(), CallError> {
            Ok(())
        }
        fn forget_pod(&mut self, _: NodeId, _: &str) -> Result<(), CallError> {
            Ok(())
        }
        fn prepare(&mut self, _: &Arc<Pod>) -> Result<Phases, CallError> {
            Ok(self.applies)
        }
        fn filter(&mut self, candidates: &[NodeId], max: u32) -> Result<FilterResult, CallError> {
            if self.broken {
                return Err(CallError::Plugin(PluginFault {
                    kind: trellis_plugin_host::FaultKind::Internal,
                    message: "broken".into(),
                }));
            }
            let mut r = FilterResult {
                feasible: vec![],
                rejected: vec![],
                rejected_reasons: vec![],
                reasons: vec![Reason {
                    message: "node(s) were odd".into(),
                    unresolvable: false,
                }],
            };
            for &n in candidates {
                if max > 0 && r.feasible.len() == max as usize {
                    break;
                }
                self.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n % 2 == 1 {
                    r.rejected.push(n);
                    r.rejected_reasons.push(0);
                } else {
                    r.feasible.push(n);
                }
            }
            Ok(r)
        }
        fn score(&mut self, candidates: &[NodeId]) -> Result<Vec<u8>, CallError> {
            Ok(candidates.iter().map(|n| (*n % 101) as u8).collect())
        }
    }

    fn pod() -> Arc<Pod> {
        let json = serde_json::json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        Arc::new(trellis_plugin_host::scheduler::k8s::pod(&json, vec![]).unwrap())
    }

    #[test]
    fn small_clusters_are_examined_whole_and_the_best_node_wins() {
        let (p, seen) = odd(Phases::FILTER | Phases::SCORE);
        let mut profile = Profile::new("t").with(Entry::new("odd", p, 1));
        let nodes: Vec<NodeId> = (0..50).collect();
        let mut why = Explanation::default();
        let Outcome::Fits(n) = profile.decide(&pod(), &nodes, &mut why) else {
            panic!("no fit")
        };
        assert_eq!(n, 48, "highest even id scores best");
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 50);
        assert_eq!((why.examined, why.feasible), (50, 25));
    }

    #[test]
    fn large_clusters_are_sampled_from_a_rotating_start() {
        let (p, seen) = odd(Phases::FILTER);
        let mut profile = Profile::new("t").with(Entry::new("odd", p, 1));
        let nodes: Vec<NodeId> = (0..5000).collect();
        // Upstream: 5000 nodes -> 50 - 5000/125 = 10 % -> 500 feasible wanted.
        assert_eq!(profile.feasible_to_find(5000), 500);
        assert_eq!(profile.feasible_to_find(99), 99);
        assert_eq!(profile.feasible_to_find(200), 100);
        let mut why = Explanation::default();
        assert!(matches!(
            profile.decide(&pod(), &nodes, &mut why),
            Outcome::Fits(_)
        ));
        assert_eq!(why.feasible, 500);
        assert!(why.examined < 1100, "examined {}", why.examined);
        let first = seen.swap(0, std::sync::atomic::Ordering::Relaxed);
        assert!(first < 1100);
        // The next pod starts where the last stopped.
        let start = profile.next_start;
        assert_eq!(start, why.examined);
        let mut why = Explanation::default();
        profile.decide(&pod(), &nodes, &mut why);
        assert_eq!(profile.next_start, (start + why.examined) % 5000);
        // A fixed percentage of 100 examines everything.
        let mut profile = Profile::new("t")
            .with(Entry::new("odd", odd(Phases::FILTER).0, 1))
            .percentage_of_nodes_to_score(100);
        let mut why = Explanation::default();
        profile.decide(&pod(), &nodes, &mut why);
        assert_eq!((why.examined, why.feasible), (5000, 2500));
    }

    #[test]
    fn failure_policy_decides_what_a_broken_plugin_does() {
        let nodes: Vec<NodeId> = (0..10).collect();
        let broken = || {
            let (mut p, _) = odd(Phases::FILTER);
            p.broken = true;
            p
        };
        let mut profile = Profile::new("t")
            .with(Entry::new("broken", broken(), 1).failure(FailurePolicy::Ignore))
            .with(Entry::new("odd", odd(Phases::FILTER).0, 1));
        let mut why = Explanation::default();
        assert!(matches!(
            profile.decide(&pod(), &nodes, &mut why),
            Outcome::Fits(_)
        ));
        assert_eq!(why.skipped_plugins()[0].0, "broken");
        let mut profile = Profile::new("t").with(Entry::new("broken", broken(), 1));
        let mut why = Explanation::default();
        let Outcome::Error(m) = profile.decide(&pod(), &nodes, &mut why) else {
            panic!("should fail")
        };
        assert!(m.starts_with("running plugin \"broken\" failed"), "{m}");
        assert!(why.has_failed());
    }

    #[test]
    fn phases_prepare_skips_are_not_called() {
        let (mut p, seen) = odd(Phases::FILTER | Phases::SCORE);
        p.applies = Phases::SCORE;
        // A skipped filter lets every node through; the score still decides.
        let mut profile = Profile::new("t").with(Entry::new("odd", p, 1));
        let nodes: Vec<NodeId> = (0..10).collect();
        let mut why = Explanation::default();
        let Outcome::Fits(n) = profile.decide(&pod(), &nodes, &mut why) else {
            panic!("no fit")
        };
        assert_eq!(
            n, 9,
            "odd ids pass a skipped filter; the highest id scores best"
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert_eq!(why.feasible, 10);
        // Skipping both: the first node examined wins the tie.
        let (mut p, _) = odd(Phases::FILTER | Phases::SCORE);
        p.applies = Phases::empty();
        let mut profile = Profile::new("t").with(Entry::new("odd", p, 1));
        let mut why = Explanation::default();
        let Outcome::Fits(n) = profile.decide(&pod(), &nodes, &mut why) else {
            panic!("no fit")
        };
        assert_eq!(n, 0);
    }

    #[test]
    fn nothing_fits_is_worded_like_upstream() {
        let mut profile = Profile::new("t").with(Entry::new("odd", odd(Phases::FILTER).0, 1));
        let mut why = Explanation::default();
        let Outcome::Unschedulable(m) = profile.decide(&pod(), &[1, 3, 5], &mut why) else {
            panic!("should not fit")
        };
        assert_eq!(m, "0/3 nodes are available: 3 node(s) were odd.");
    }
}
