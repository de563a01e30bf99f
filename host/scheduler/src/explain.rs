//! Why a pod went where it went: each plugin's verdicts (refusals counted by
//! reason, with the first few nodes named) and its top scores, kept small
//! enough to ride on the pod as one annotation
//! ([`ANNOTATION`], at most [`MAX_BYTES`]).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use trellis_plugin_host::scheduler::{FilterResult, NodeId};
use trellis_plugin_host::CallError;

/// The pod annotation that holds the last scheduling decision, as JSON.
pub const ANNOTATION: &str = "scheduler.trellis.dev/explanation";

/// Upper bound of the rendered explanation in bytes.
pub const MAX_BYTES: usize = 4096;

/// Nodes named per refusal reason.
const NODES_PER_REASON: usize = 3;
/// Best nodes named per scorer and for the weighted total.
const TOP: usize = 3;

/// What one filter refused in a cycle.
pub(crate) struct FilterNote {
    plugin: String,
    /// reason -> (count, first few nodes)
    reasons: BTreeMap<String, (usize, Vec<NodeId>)>,
}

impl FilterNote {
    /// Summarise one filter answer without a per-node string copy.
    pub(crate) fn from_result(plugin: &str, r: &FilterResult) -> Self {
        let mut per: Vec<(usize, Vec<NodeId>)> = vec![(0, Vec::new()); r.reasons.len()];
        for (node, reason) in r.rejections() {
            let (n, nodes) = &mut per[reason as usize];
            *n += 1;
            if nodes.len() < NODES_PER_REASON {
                nodes.push(node);
            }
        }
        let mut reasons = BTreeMap::new();
        for (reason, (n, nodes)) in r.reasons.iter().zip(per) {
            if n > 0 {
                merge(&mut reasons, &reason.message, n, nodes);
            }
        }
        Self {
            plugin: plugin.into(),
            reasons,
        }
    }

    /// Each reason and how many nodes it refused.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.reasons.iter().map(|(r, (n, _))| (r.as_str(), *n))
    }
}

fn merge(
    into: &mut BTreeMap<String, (usize, Vec<NodeId>)>,
    reason: &str,
    n: usize,
    nodes: Vec<NodeId>,
) {
    let slot = into.entry(reason.to_string()).or_default();
    slot.0 += n;
    for id in nodes {
        if slot.1.len() < NODES_PER_REASON {
            slot.1.push(id);
        }
    }
}

/// One scorer's best nodes in a cycle.
pub(crate) struct ScoreNote {
    plugin: String,
    weight: i64,
    top: Vec<(NodeId, i64)>,
}

impl ScoreNote {
    pub(crate) fn new(plugin: &str, weight: i64, nodes: &[NodeId], scores: &[u8]) -> Self {
        Self {
            plugin: plugin.into(),
            weight,
            top: top(nodes, scores.iter().map(|s| i64::from(*s))),
        }
    }
}

/// The `TOP` highest (node, score) pairs, ties to the earlier node.
fn top(nodes: &[NodeId], scores: impl Iterator<Item = i64>) -> Vec<(NodeId, i64)> {
    let mut best: Vec<(usize, NodeId, i64)> = Vec::with_capacity(TOP + 1);
    for (i, (n, s)) in nodes.iter().zip(scores).enumerate() {
        if best.len() == TOP && best[TOP - 1].2 >= s {
            continue;
        }
        let at = best.iter().position(|b| b.2 < s).unwrap_or(best.len());
        best.insert(at, (i, *n, s));
        best.truncate(TOP);
    }
    best.into_iter().map(|(_, n, s)| (n, s)).collect()
}

/// Everything one cycle recorded.
#[derive(Default)]
pub struct Explanation {
    pub(crate) nodes: usize,
    pub(crate) examined: usize,
    pub(crate) feasible: usize,
    filters: Vec<FilterNote>,
    scores: Vec<ScoreNote>,
    skipped: Vec<(String, String)>,
    failed: Option<(String, String)>,
    totals: Vec<(NodeId, i64)>,
}

impl Explanation {
    pub(crate) fn filter(&mut self, note: FilterNote) {
        match self.filters.iter_mut().find(|f| f.plugin == note.plugin) {
            Some(f) => {
                for (r, (n, nodes)) in note.reasons {
                    merge(&mut f.reasons, &r, n, nodes);
                }
            }
            None => self.filters.push(note),
        }
    }

    pub(crate) fn score(&mut self, note: ScoreNote) {
        self.scores.push(note);
    }

    pub(crate) fn skipped(&mut self, plugin: &str, e: &CallError) {
        tracing::warn!(plugin, error = %e, "plugin failed; skipped by its failure policy");
        self.skipped.push((plugin.into(), e.to_string()));
    }

    pub(crate) fn failed(&mut self, plugin: &str, e: &CallError) {
        tracing::warn!(plugin, error = %e, "plugin failed; the cycle fails by its failure policy");
        self.failed = Some((plugin.into(), e.to_string()));
    }

    pub(crate) fn totals(&mut self, nodes: &[NodeId], totals: &[i64]) {
        self.totals = top(nodes, totals.iter().copied());
    }

    /// Whether a plugin under `Fail` failed the cycle.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Plugins that failed and were skipped under `Ignore`, with the error.
    pub fn skipped_plugins(&self) -> &[(String, String)] {
        &self.skipped
    }

    /// Render as JSON with node names from `name`, within [`MAX_BYTES`]:
    /// when too large, the node lists go first, then the scores.
    pub fn render(
        &self,
        profile: &str,
        result: &str,
        message: &str,
        name: impl Fn(NodeId) -> String,
    ) -> String {
        let pairs = |v: &[(NodeId, i64)]| -> Value {
            v.iter()
                .map(|(n, s)| json!({"node": name(*n), "score": s}))
                .collect()
        };
        let mut doc = json!({
            "profile": profile,
            "result": result,
            "message": message,
            "nodes": self.nodes,
            "examined": self.examined,
            "feasible": self.feasible,
            "filters": self.filters.iter().map(|f| json!({
                "plugin": f.plugin,
                "rejected": f.reasons.iter().map(|(r, (n, nodes))| json!({
                    "reason": r,
                    "count": n,
                    "nodes": nodes.iter().map(|n| name(*n)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "scores": self.scores.iter().map(|s| json!({
                "plugin": s.plugin, "weight": s.weight, "top": pairs(&s.top),
            })).collect::<Vec<_>>(),
            "top": pairs(&self.totals),
        });
        if !self.skipped.is_empty() {
            doc["skipped"] = self
                .skipped
                .iter()
                .map(|(p, e)| json!({"plugin": p, "error": e}))
                .collect();
        }
        if let Some((p, e)) = &self.failed {
            doc["failed"] = json!({"plugin": p, "error": e});
        }
        let mut text = doc.to_string();
        if text.len() > MAX_BYTES {
            for f in doc["filters"].as_array_mut().into_iter().flatten() {
                for r in f["rejected"].as_array_mut().into_iter().flatten() {
                    r.as_object_mut().map(|o| o.remove("nodes"));
                }
            }
            doc["scores"] = json!([]);
            doc["truncated"] = json!(true);
            text = doc.to_string();
        }
        if text.len() > MAX_BYTES {
            // Only pathological reason strings get here.
            text = json!({
                "profile": profile, "result": result, "truncated": true,
                "message": message.chars().take(MAX_BYTES / 2).collect::<String>(),
            })
            .to_string();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_plugin_host::scheduler::Reason;

    #[test]
    fn top_keeps_the_best_three_with_ties_to_the_first() {
        let t = top(&[10, 11, 12, 13, 14], [5, 9, 9, 1, 7].into_iter());
        assert_eq!(t, vec![(11, 9), (12, 9), (14, 7)]);
    }

    #[test]
    fn filter_notes_count_by_reason_and_name_few_nodes() {
        let reason = |m: &str| Reason {
            message: m.into(),
            unresolvable: false,
        };
        let r = FilterResult {
            feasible: vec![0],
            rejected: (1..=5).collect(),
            rejected_reasons: (1..=5).map(|n| n % 2).collect(),
            reasons: vec![reason("Insufficient cpu"), reason("Insufficient memory")],
        };
        let note = FilterNote::from_result("fit", &r);
        let counts: Vec<_> = note.counts().collect();
        assert_eq!(
            counts,
            vec![("Insufficient cpu", 2), ("Insufficient memory", 3)]
        );
        let mut why = Explanation::default();
        why.filter(note);
        why.filter(FilterNote::from_result("fit", &r));
        let text = why.render("p", "Unschedulable", "m", |n| format!("n{n}"));
        let v: Value = serde_json::from_str(&text).unwrap();
        let rej = &v["filters"][0]["rejected"];
        assert_eq!(rej[1]["count"], 6);
        assert_eq!(rej[1]["nodes"], json!(["n1", "n3", "n5"]));
    }

    #[test]
    fn render_stays_within_bounds() {
        let mut why = Explanation::default();
        for i in 0..200 {
            let r = FilterResult {
                feasible: vec![],
                rejected: vec![i],
                rejected_reasons: vec![0],
                reasons: vec![Reason {
                    message: format!("reason number {i} with some words"),
                    unresolvable: false,
                }],
            };
            why.filter(FilterNote::from_result(&format!("plugin-{i}"), &r));
        }
        let text = why.render("p", "Unschedulable", "m", |n| format!("node-{n}"));
        assert!(text.len() <= MAX_BYTES, "{} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["truncated"], true);
    }
}
