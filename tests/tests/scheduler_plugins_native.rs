//! The default scheduler plugins compiled natively are the same code as their
//! Wasm components: every fixture of every default plugin
//! (`plugins/scheduler/<name>/fixtures/*.yaml`) runs through both, driven
//! through the runtime's `ChainPlugin` trait, and every answer (plugin info,
//! configure errors, verdicts with reasons, scores, call errors) must be
//! identical. The fixtures' expectations themselves are checked by
//! `scheduler_plugins_a.rs` and `scheduler_plugins_b.rs`; after the cases,
//! half the placed pods are forgotten and a node removed, and the cases run
//! again, so the change calls agree too. This is what lets the scheduler
//! benchmark call the native chain "the same plugins".

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use trellis_plugin_host::scheduler::{k8s, Label, NodeId, Phases, SchedulerPlugin};
use trellis_plugin_host::{CallError, Capability, Grants, LoadError, PluginSpec};
use trellis_scheduler::{ChainPlugin, WasmPlugin};
use trellis_testkit::Fixture;
use trellis_tests::native::{DefaultPlugin, DEFAULT_PLUGINS};
use trellis_tests::*;

/// An answer in a form both sides can be compared in: a fault compares by
/// kind and message, any other error by its text.
fn answer<T: std::fmt::Debug>(r: &Result<T, CallError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(CallError::Plugin(f)) => format!("fault {f:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// Both sides of one fixture, fed the same calls. `same` makes one call on
/// each, asserts the answers are equal, and gives back the Wasm one if it
/// succeeded.
struct Pair {
    wasm: Box<dyn ChainPlugin>,
    native: Box<dyn ChainPlugin>,
    at: String,
    compared: usize,
}

impl Pair {
    fn same<T: std::fmt::Debug>(
        &mut self,
        what: &str,
        call: impl Fn(&mut dyn ChainPlugin) -> Result<T, CallError>,
    ) -> Option<T> {
        let w = call(self.wasm.as_mut());
        let n = call(self.native.as_mut());
        assert_eq!(
            answer(&w),
            answer(&n),
            "{}: {what}: the Wasm component (left) and the native crate (right) differ",
            self.at
        );
        self.compared += 1;
        w.ok()
    }
}

/// Run one fixture through both; returns the number of answers compared.
fn compare_fixture(
    engine: &trellis_plugin_host::PluginEngine,
    p: &DefaultPlugin,
    path: &PathBuf,
) -> usize {
    let at = format!("{} {}", p.crate_name, path.display());
    let fixture = Fixture::load(path).unwrap_or_else(|e| panic!("{e}"));
    let config = match &fixture.config {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    // As the testkit loads it (and as a profile's default plugins are granted).
    let spec = PluginSpec::new(p.crate_name)
        .config(config.clone())
        .grants(Grants::none().with(Capability::Log));
    let wasm = SchedulerPlugin::load(engine, &read_plugin(p.crate_name), spec);
    let native = p.native(&config);
    let (wasm, native) = match (wasm, native) {
        (Ok(w), Ok(n)) => (w, n),
        (Err(LoadError::Call(w)), Err(n)) => {
            assert_eq!(
                answer::<()>(&Err(w)),
                answer::<()>(&Err(n)),
                "{at}: configure"
            );
            return 1;
        }
        (w, n) => panic!(
            "{at}: configure: Wasm {:?}, native {:?}",
            w.map(|_| ()),
            n.map(|_| ())
        ),
    };
    let info = wasm.info().clone();
    assert_eq!(info, native.info(), "{at}: info");
    let mut pair = Pair {
        wasm: Box::new(WasmPlugin::new(wasm)),
        native,
        at,
        compared: 1,
    };

    let mut ids: BTreeMap<String, NodeId> = BTreeMap::new();
    for (i, n) in fixture.nodes.iter().enumerate() {
        let node =
            std::sync::Arc::new(k8s::node(n).unwrap_or_else(|e| panic!("{}: node: {e}", pair.at)));
        ids.insert(node.name.clone(), i as NodeId);
        pair.same(&format!("upsert node {}", node.name), |p| {
            p.upsert_node(i as NodeId, &node)
        });
    }
    let ns_labels = |ns: &str| -> Vec<Label> {
        fixture
            .namespaces
            .get(ns)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| Label {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let pod_of = |v: &Value| {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
        k8s::pod(v, ns_labels(ns)).expect("fixture pod converts")
    };
    let mut placed = Vec::new();
    for v in &fixture.pods {
        let pod = pod_of(v);
        let node = pod
            .node_name
            .as_deref()
            .and_then(|n| ids.get(n).copied())
            .unwrap_or_else(|| panic!("{}: placed pod {} has no known node", pair.at, pod.name));
        let pp = std::sync::Arc::new(k8s::placed_pod(&pod));
        pair.same(&format!("assume pod {}", pp.uid), |p| {
            p.assume_pod(node, &pp)
        });
        placed.push((node, pp.uid.clone()));
    }

    let run_cases = |pair: &mut Pair, ids: &BTreeMap<String, NodeId>, round: &str| {
        for case in &fixture.cases {
            let what = format!("{round}case {:?}", case.name);
            let pod = std::sync::Arc::new(pod_of(&case.pod));
            if pair
                .same(&format!("{what}: prepare"), |p| p.prepare(&pod))
                .is_none()
            {
                continue;
            }
            let candidates: Vec<NodeId> = match &case.candidates {
                // A name that is not a node stands for an id never upserted.
                Some(names) => names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| ids.get(n).copied().unwrap_or(10_000 + i as NodeId))
                    .collect(),
                None => ids.values().copied().collect(),
            };
            let feasible = if info.phases.contains(Phases::FILTER) {
                match pair.same(&format!("{what}: filter"), |p| {
                    p.filter(&candidates, case.max_feasible)
                }) {
                    Some(r) => r.feasible,
                    None => continue,
                }
            } else {
                candidates
            };
            if info.phases.contains(Phases::SCORE) && !feasible.is_empty() {
                pair.same(&format!("{what}: score"), |p| p.score(&feasible));
            }
        }
    };
    run_cases(&mut pair, &ids, "");

    // Change the cluster under both and ask again.
    for (node, uid) in placed.iter().step_by(2) {
        pair.same(&format!("forget pod {uid}"), |p| p.forget_pod(*node, uid));
    }
    if let Some((name, id)) = ids.iter().next_back().map(|(n, i)| (n.clone(), *i)) {
        pair.same(&format!("remove node {name}"), |p| p.remove_node(id));
        ids.remove(&name);
    }
    run_cases(&mut pair, &ids, "after changes: ");
    pair.compared
}

#[test]
fn every_default_plugin_answers_the_same_as_wasm_and_native() {
    let engine = engine();
    let mut summary = Vec::new();
    for p in DEFAULT_PLUGINS {
        let files = scheduler_fixtures(p.crate_name);
        assert!(!files.is_empty(), "{} has no fixtures", p.crate_name);
        let compared: usize = files.iter().map(|f| compare_fixture(&engine, p, f)).sum();
        summary.push(format!(
            "{}: {} fixtures, {compared} answers identical",
            p.crate_name,
            files.len()
        ));
    }
    eprintln!("{}", summary.join("\n"));
}
