//! Test a plugin without a cluster: run a scheduler plugin component against a
//! fixture of ordinary Kubernetes manifests and compare its verdicts and
//! scores with what the fixture expects. Backs `trellis plugin test`.
//!
//! A fixture (YAML):
//!
//! ```yaml
//! config: {preferredZones: [zone-a, zone-b]}   # handed to `configure`
//! nodes:                                        # Node objects, ids in this order
//!   - metadata: {name: n1, labels: {topology.kubernetes.io/zone: zone-a}}
//! pods: []                                      # Pods already on nodes (spec.nodeName)
//! cases:
//!   - name: prefers zone-a
//!     pod: {metadata: {name: web}, spec: {containers: [{name: c, image: nginx}]}}
//!     maxFeasible: 0                            # optional
//!     candidates: [n1]                          # optional, default all nodes in order
//!     expect:
//!       feasible: [n1]
//!       rejected: {}                            # node -> reason
//!       scores: {n1: 100}
//!       skipped: []                             # phases `prepare` skips
//! ```
//!
//! Each case runs one cycle: `prepare`, then `filter` and `score` as the
//! plugin declares them. A phase `prepare` skips is called all the same, and
//! fails the case unless it answers as the skip promises (no refusal; the same
//! score for every node). As in a cluster, `prepare` carries only the parts of
//! the pod the plugin names in `plugin-info.pod-fields`, so a fixture fails when
//! the plugin reads a part it did not name.
//!
//! A fixture may instead expect `configure` to fail: `expectConfigError: true`
//! (give `config` as a string to pass JSON text verbatim, e.g. with a duplicated key).
//!
//! ```no_run
//! use trellis_testkit::{Fixture, run_scheduler_fixture};
//! use trellis_plugin_host::{EngineConfig, PluginEngine};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = PluginEngine::new(EngineConfig::default())?;
//! let wasm = std::fs::read("build/plugins/zone-maintenance.wasm")?;
//! let fixture = Fixture::load("examples/zone-maintenance/fixtures/basic.yaml")?;
//! let report = run_scheduler_fixture(&engine, &wasm, &fixture)?;
//! assert!(report.passed(), "{report}");
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use trellis_plugin_host::scheduler::{k8s, NodeId, Phases, SchedulerPlugin, SchedulerSession};
use trellis_plugin_host::{
    CallError, Capability, FaultKind, Grants, LoadError, PluginEngine, PluginSlot, PluginSpec,
};

/// Why a fixture could not be run (as opposed to a case failing).
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// Reading the fixture failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The fixture is not valid YAML of the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The plugin did not load.
    #[error("plugin does not load: {0}")]
    Load(#[from] LoadError),
    /// Sending the fixture's nodes or pods to the plugin failed.
    #[error("setting up the fixture failed: {0}")]
    Setup(String),
}

/// What one case expects. Every field is optional; an absent one is not checked.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Expect {
    /// Feasible nodes, in order.
    pub feasible: Option<Vec<String>>,
    /// Rejected nodes and the reason message of each.
    pub rejected: Option<BTreeMap<String, String>>,
    /// Score of each feasible node.
    pub scores: Option<BTreeMap<String, u8>>,
    /// The call fails with this plugin-error kind (`invalid-input`, ...).
    pub error: Option<String>,
    /// The phases `prepare` skips for this pod (`filter`, `score`); `[]`
    /// for none.
    pub skipped: Option<Vec<String>>,
}

/// One pod to schedule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    /// Shown in reports.
    pub name: String,
    /// The Pod object.
    pub pod: Value,
    /// Stop after this many feasible nodes (0 = all).
    #[serde(default)]
    pub max_feasible: u32,
    /// Candidate node names, in order (default: every node). A name that is
    /// not a node stands for an id the plugin never saw.
    pub candidates: Option<Vec<String>>,
    /// What to check.
    #[serde(default)]
    pub expect: Expect,
}

/// A fixture file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fixture {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The plugin's configuration: any JSON value (default `{}`), or a string
    /// holding the JSON text verbatim.
    #[serde(default = "empty_object")]
    pub config: Value,
    /// `configure` must fail with `invalid-config`.
    #[serde(default)]
    pub expect_config_error: bool,
    /// Namespace labels, by namespace name.
    #[serde(default)]
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Node objects; node ids follow this order.
    #[serde(default)]
    pub nodes: Vec<Value>,
    /// Pods already placed (with `spec.nodeName`).
    #[serde(default)]
    pub pods: Vec<Value>,
    /// Pods to schedule.
    #[serde(default)]
    pub cases: Vec<Case>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Fixture {
    /// Read a fixture file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TestkitError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TestkitError::Read {
            path: path.into(),
            source,
        })?;
        serde_yaml::from_str(&text).map_err(|e| TestkitError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }
}

/// What the plugin answered for one case, in node names.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Feasible nodes in the order returned.
    pub feasible: Vec<String>,
    /// Rejections in the order returned: node, reason message, unresolvable.
    pub rejected: Vec<(String, String, bool)>,
    /// Scores of the feasible nodes, in order.
    pub scores: Vec<(String, u8)>,
    /// The error, if the call failed: the fault kind, or the host error.
    pub error: Option<String>,
    /// Phases `prepare` said do not apply to the pod ("filter", "score").
    /// They are called all the same, and must answer as the skip promised.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<&'static str>,
}

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseReport {
    /// The case name.
    pub name: String,
    /// What the plugin answered.
    pub outcome: Outcome,
    /// Mismatches with the expectation; empty = passed.
    pub failures: Vec<String>,
}

/// A fixture's result.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The plugin's `info` name.
    pub plugin: String,
    /// Whether `configure` failed, and its message.
    pub config_error: Option<String>,
    /// Fixture-level failures (e.g. an expected config error that did not happen).
    pub failures: Vec<String>,
    /// Per case.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Whether everything matched.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.cases.iter().all(|c| c.failures.is_empty())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for failure in &self.failures {
            writeln!(f, "FAIL {failure}")?;
        }
        if let Some(e) = &self.config_error {
            writeln!(f, "configure failed (as expected): {e}")?;
        }
        for c in &self.cases {
            if c.failures.is_empty() {
                writeln!(f, "ok   {}", c.name)?;
            } else {
                writeln!(f, "FAIL {}", c.name)?;
                for m in &c.failures {
                    writeln!(f, "       {m}")?;
                }
            }
        }
        // An expected configure failure is one check of its own.
        let checks = self.cases.len() + usize::from(self.config_error.is_some());
        let failed = self.cases.iter().filter(|c| !c.failures.is_empty()).count()
            + usize::from(!self.failures.is_empty());
        write!(
            f,
            "{} passed, {} failed",
            checks.saturating_sub(failed),
            failed
        )
    }
}

fn fault_name(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::InvalidConfig => "invalid-config",
        FaultKind::InvalidInput => "invalid-input",
        FaultKind::AccessDenied => "access-denied",
        FaultKind::Internal => "internal",
    }
}

fn error_name(e: &CallError) -> String {
    match e {
        CallError::Plugin(f) => fault_name(f.kind).to_string(),
        other => other.to_string(),
    }
}

/// Run a scheduler plugin (wasm bytes) against a fixture. The plugin is
/// granted `log` only.
pub fn run_scheduler_fixture(
    engine: &PluginEngine,
    wasm: &[u8],
    fixture: &Fixture,
) -> Result<Report, TestkitError> {
    let spec = PluginSpec::new("under-test")
        .config(match &fixture.config {
            // A string is the JSON text itself, for configs a YAML value
            // cannot express (duplicate keys, malformed JSON).
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .grants(Grants::none().with(Capability::Log));
    let plugin = match SchedulerPlugin::load(engine, wasm, spec) {
        Ok(p) => p,
        Err(LoadError::Call(CallError::Plugin(f))) if f.kind == FaultKind::InvalidConfig => {
            let failures = if fixture.expect_config_error {
                vec![]
            } else {
                vec![format!("configure failed: {}", f.message)]
            };
            return Ok(Report {
                plugin: String::new(),
                config_error: Some(f.message),
                failures,
                cases: vec![],
            });
        }
        Err(e) => return Err(e.into()),
    };
    let info = plugin.info().clone();
    let mut failures = Vec::new();
    if fixture.expect_config_error {
        failures.push("configure succeeded but the fixture expects invalid-config".to_string());
    }
    let slot = Arc::new(PluginSlot::new(plugin));
    let mut session = SchedulerSession::new(slot);
    let setup = |e: &dyn fmt::Display| TestkitError::Setup(e.to_string());

    let mut ids: BTreeMap<String, NodeId> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    for n in &fixture.nodes {
        let node = k8s::node(n).map_err(|e| setup(&e))?;
        let id = names.len() as NodeId;
        ids.insert(node.name.clone(), id);
        names.push(node.name.clone());
        session.upsert_node(id, node).map_err(|e| setup(&e))?;
    }
    let ns_labels = |ns: &str| -> Vec<trellis_plugin_host::scheduler::Label> {
        fixture
            .namespaces
            .get(ns)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| trellis_plugin_host::scheduler::Label {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for p in &fixture.pods {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        let pod = k8s::pod(p, ns_labels(ns)).map_err(|e| setup(&e))?;
        let node = pod
            .node_name
            .as_deref()
            .and_then(|n| ids.get(n))
            .ok_or_else(|| {
                TestkitError::Setup(format!(
                    "placed pod {} names no known spec.nodeName",
                    pod.name
                ))
            })?;
        session
            .assume_pod(*node, k8s::placed_pod(&pod))
            .map_err(|e| setup(&e))?;
    }

    let mut cases = Vec::new();
    for case in &fixture.cases {
        let ns = case.pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let pod = k8s::pod(&case.pod, ns_labels(ns))
            .map_err(|e| setup(&format!("case {}: {e}", case.name)))?;
        let (candidates, cand_names): (Vec<NodeId>, Vec<String>) = match &case.candidates {
            Some(list) => {
                let mut next_unknown = names.len() as NodeId + 1000;
                list.iter()
                    .map(|n| {
                        let id = ids.get(n).copied().unwrap_or_else(|| {
                            next_unknown += 1;
                            next_unknown
                        });
                        (id, n.clone())
                    })
                    .unzip()
            }
            None => ((0..names.len() as NodeId).collect(), names.clone()),
        };
        let outcome = run_cycle(
            &mut session,
            info.phases,
            pod,
            &candidates,
            &cand_names,
            case.max_feasible,
        );
        let mut failures = compare(&case.expect, &outcome);
        failures.extend(broken_skip_promises(&outcome));
        cases.push(CaseReport {
            name: case.name.clone(),
            outcome,
            failures,
        });
    }
    Ok(Report {
        plugin: info.name,
        config_error: None,
        failures,
        cases,
    })
}

/// One case's cycle: `prepare`, then `filter` and `score` as the plugin
/// declares them (a skipped phase too, to check its promise).
fn run_cycle(
    session: &mut SchedulerSession,
    declared: Phases,
    pod: trellis_plugin_host::scheduler::Pod,
    candidates: &[NodeId],
    cand_names: &[String],
    max_feasible: u32,
) -> Outcome {
    let name_of = |id: NodeId| {
        candidates
            .iter()
            .position(|c| *c == id)
            .map(|i| cand_names[i].clone())
            .unwrap_or_else(|| format!("<id {id}>"))
    };
    let mut outcome = Outcome::default();
    let active = match session.prepare(&Arc::new(pod)) {
        Ok(phases) => phases,
        Err(e) => {
            outcome.error = Some(error_name(&e));
            return outcome;
        }
    };
    for (phase, name) in [(Phases::FILTER, "filter"), (Phases::SCORE, "score")] {
        if declared.contains(phase) && !active.contains(phase) {
            outcome.skipped.push(name);
        }
    }
    let feasible_ids = if declared.contains(Phases::FILTER) {
        match session.filter(candidates, max_feasible) {
            Ok(r) => {
                outcome.feasible = r.feasible.iter().map(|&id| name_of(id)).collect();
                outcome.rejected = r
                    .rejections()
                    .map(|(node, reason)| {
                        let reason = &r.reasons[reason as usize];
                        (name_of(node), reason.message.clone(), reason.unresolvable)
                    })
                    .collect();
                r.feasible
            }
            Err(e) => {
                outcome.error = Some(error_name(&e));
                return outcome;
            }
        }
    } else {
        outcome.feasible = cand_names.to_vec();
        candidates.to_vec()
    };
    if declared.contains(Phases::SCORE) && !feasible_ids.is_empty() {
        match session.score(&feasible_ids) {
            Ok(s) => {
                outcome.scores = feasible_ids
                    .iter()
                    .zip(s)
                    .map(|(&id, s)| (name_of(id), s))
                    .collect()
            }
            Err(e) => outcome.error = Some(error_name(&e)),
        }
    }
    outcome
}

/// A phase `prepare` skipped must answer neutrally when called: as a filter,
/// refuse nothing; as a scorer, give every node the same score.
fn broken_skip_promises(got: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    if got.error.is_some() {
        return f;
    }
    if got.skipped.contains(&"filter") {
        if let Some((node, reason, _)) = got.rejected.first() {
            f.push(format!(
                "prepare skipped filter, but filter refused {node} ({reason})"
            ));
        }
    }
    if got.skipped.contains(&"score") {
        if let Some((first, rest)) = got.scores.split_first() {
            if let Some((node, s)) = rest.iter().find(|(_, s)| *s != first.1) {
                f.push(format!(
                    "prepare skipped score, but score gave {} {} and {node} {s}",
                    first.0, first.1
                ));
            }
        }
    }
    f
}

fn compare(expect: &Expect, got: &Outcome) -> Vec<String> {
    let mut f = Vec::new();
    match (&expect.error, &got.error) {
        (Some(want), Some(have)) if want != have => {
            f.push(format!("error: expected {want}, got {have}"))
        }
        (Some(want), None) => f.push(format!("error: expected {want}, the call succeeded")),
        (None, Some(have)) => f.push(format!("unexpected error: {have}")),
        _ => {}
    }
    if let Some(want) = &expect.feasible {
        if want != &got.feasible {
            f.push(format!(
                "feasible: expected {want:?}, got {:?}",
                got.feasible
            ));
        }
    }
    if let Some(want) = &expect.rejected {
        let have: BTreeMap<String, String> = got
            .rejected
            .iter()
            .map(|(n, r, _)| (n.clone(), r.clone()))
            .collect();
        if want != &have {
            f.push(format!("rejected: expected {want:?}, got {have:?}"));
        }
    }
    if let Some(want) = &expect.scores {
        let have: BTreeMap<String, u8> = got.scores.iter().cloned().collect();
        if want != &have {
            f.push(format!("scores: expected {want:?}, got {have:?}"));
        }
    }
    if let Some(want) = &expect.skipped {
        if want
            .iter()
            .map(String::as_str)
            .ne(got.skipped.iter().copied())
        {
            f.push(format!("skipped: expected {want:?}, got {:?}", got.skipped));
        }
    }
    f
}

/// The folder where `cargo xtask plugins` puts components: `TRELLIS_PLUGIN_DIR`
/// or `build/plugins` at the repository root.
pub fn plugin_dir() -> PathBuf {
    std::env::var_os("TRELLIS_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build/plugins"))
}

/// The repository root (from this crate's location at build time).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("sdk/testkit sits two levels below the root")
        .to_path_buf()
}

/// Read a built component by name (e.g. "zone-maintenance"), with a message
/// saying how to build it when it is missing.
pub fn read_plugin(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first with `cargo xtask plugins`",
            path.display()
        )
    })
}
