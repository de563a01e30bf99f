//! Shared helpers for Trellis' integration tests: an engine with a persistent
//! artifact cache, the built plugin components, small fixtures, and the
//! default scheduler plugins compiled natively ([`native`]).

pub mod native;

use std::path::PathBuf;
use std::sync::Arc;

use trellis_plugin_host::scheduler::{
    k8s, FilterResult, Node, NodeId, Pod, SchedulerPlugin, SchedulerSession,
};
use trellis_plugin_host::{CallError, EngineConfig, PluginEngine, PluginSlot, PluginSpec};

pub use trellis_testkit::{plugin_dir, read_plugin, repo_root};

/// Where tests keep precompiled artifacts between runs (`build/cache`).
pub fn cache_dir() -> PathBuf {
    repo_root().join("build/cache")
}

/// The fixture files of the default scheduler plugin `crate_name`
/// (`plugins/scheduler/<crate_name>/fixtures/*.yaml`), sorted; never empty.
pub fn scheduler_fixtures(crate_name: &str) -> Vec<PathBuf> {
    let dir = repo_root()
        .join("plugins/scheduler")
        .join(crate_name)
        .join("fixtures");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

/// An engine whose artifact cache persists across test runs.
pub fn engine() -> PluginEngine {
    PluginEngine::new(EngineConfig {
        cache_dir: Some(cache_dir()),
        ..EngineConfig::default()
    })
    .expect("engine")
}

/// A node named `name` with `labels`.
pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    k8s::node(&serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
    .expect("valid node")
}

/// A one-container pod named `name`.
pub fn pod(name: &str) -> Pod {
    k8s::pod(
        &serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "100m"}}}]}
        }),
        vec![],
    )
    .expect("valid pod")
}

/// A session on a new slot holding `plugin`, with `nodes` upserted as ids 0...
pub fn session_with(
    plugin: SchedulerPlugin,
    nodes: &[Node],
) -> (Arc<PluginSlot<SchedulerPlugin>>, SchedulerSession) {
    let slot = Arc::new(PluginSlot::new(plugin));
    let mut s = SchedulerSession::new(slot.clone());
    for (i, n) in nodes.iter().enumerate() {
        s.upsert_node(i as NodeId, n.clone()).expect("upsert");
    }
    (slot, s)
}

/// Load a built scheduler plugin by name.
pub fn load_scheduler(engine: &PluginEngine, name: &str, spec: PluginSpec) -> SchedulerPlugin {
    SchedulerPlugin::load(engine, &read_plugin(name), spec)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// One scheduling cycle's calls for a given pod: `prepare` it, then filter or
/// score, as the scheduler's chain does.
pub trait Cycle {
    /// `prepare(pod)`, then `filter(candidates, max_feasible)`.
    fn filter_pod(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError>;
    /// `prepare(pod)`, then `score(candidates)`.
    fn score_pod(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, CallError>;
}

impl Cycle for SchedulerSession {
    fn filter_pod(
        &mut self,
        pod: &Pod,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError> {
        self.prepare(&Arc::new(pod.clone()))?;
        self.filter(candidates, max_feasible)
    }
    fn score_pod(&mut self, pod: &Pod, candidates: &[NodeId]) -> Result<Vec<u8>, CallError> {
        self.prepare(&Arc::new(pod.clone()))?;
        self.score(candidates)
    }
}
