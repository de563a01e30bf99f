//! Upstream's NodeResourcesFit, NodeResourcesBalancedAllocation,
//! PodTopologySpread and InterPodAffinity, built as Wasm components, against every fixture in
//! their folders (`plugins/scheduler/<name>/fixtures/*.yaml`), plus the
//! configurations each must refuse.

use serde_json::json;
use trellis_testkit::{run_scheduler_fixture, Fixture};
use trellis_tests::*;

/// Run every fixture of `plugin` through its built component; returns the
/// number of cases run.
fn run_all(plugin: &str) -> usize {
    let engine = engine();
    let wasm = read_plugin(plugin);
    let files = scheduler_fixtures(plugin);
    assert!(!files.is_empty(), "{plugin} has no fixtures");
    let mut cases = 0;
    for path in &files {
        let fixture = Fixture::load(path).unwrap();
        assert!(
            fixture.cases.len() >= 3,
            "{} has {} cases, want at least 3",
            path.display(),
            fixture.cases.len()
        );
        let report = run_scheduler_fixture(&engine, &wasm, &fixture)
            .unwrap_or_else(|e| panic!("{plugin} on {}: {e}", path.display()));
        assert!(
            report.passed(),
            "{plugin} fails {}:\n{report}",
            path.display()
        );
        cases += report.cases.len();
    }
    cases
}

/// `config` must make `configure` fail with `invalid-config`.
fn refuses(plugin: &str, config: serde_json::Value) {
    let engine = engine();
    let wasm = read_plugin(plugin);
    let fixture = Fixture {
        description: String::new(),
        config: config.clone(),
        expect_config_error: true,
        namespaces: Default::default(),
        nodes: vec![],
        pods: vec![],
        cases: vec![],
    };
    let report = run_scheduler_fixture(&engine, &wasm, &fixture).unwrap();
    assert!(
        report.passed() && report.config_error.is_some(),
        "{plugin} accepted {config}:\n{report}"
    );
}

#[test]
fn node_resources_fit_passes_its_fixtures() {
    assert!(run_all("node-resources-fit") >= 15);
}

#[test]
fn node_resources_fit_refuses_bad_configs() {
    let p = "node-resources-fit";
    refuses(p, json!({"scoringStrategy": {"type": "Balanced"}}));
    refuses(
        p,
        json!({"scoringStrategy": {"type": "RequestedToCapacityRatio"}}),
    );
    refuses(
        p,
        json!({"scoringStrategy": {"type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 0}]}}),
    );
    refuses(
        p,
        json!({"scoringStrategy": {"type": "LeastAllocated", "resources": [{"name": "cpu", "weight": 101}]}}),
    );
    refuses(
        p,
        json!({"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu", "weight": 1}, {"name": "cpu", "weight": 2}]}}),
    );
    refuses(p, json!({"ignoredResourceGroups": ["example.com/gpu"]}));
    refuses(p, json!({"scoringStrategy": {"resources": []}}));
    refuses(p, json!({"unknown": true}));
    refuses(p, json!([]));
}

#[test]
fn node_resources_balanced_allocation_passes_its_fixtures() {
    assert!(run_all("node-resources-balanced-allocation") >= 9);
}

#[test]
fn node_resources_balanced_allocation_refuses_bad_configs() {
    let p = "node-resources-balanced-allocation";
    refuses(p, json!({"resources": [{"name": "cpu", "weight": 2}]}));
    refuses(p, json!({"resources": [{"name": "cpu"}, {"name": "cpu"}]}));
    refuses(p, json!({"resources": [{"weight": 1}]}));
    refuses(p, json!({"scoringStrategy": {}}));
}

#[test]
fn pod_topology_spread_passes_its_fixtures() {
    assert!(run_all("pod-topology-spread") >= 12);
}

#[test]
fn pod_topology_spread_refuses_bad_configs() {
    let p = "pod-topology-spread";
    refuses(
        p,
        json!({"defaultConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]}),
    );
    refuses(p, json!({"defaultingType": "System"}));
    refuses(p, json!({"unknown": 1}));
    refuses(p, json!("not json"));
}

#[test]
fn inter_pod_affinity_passes_its_fixtures() {
    assert!(run_all("inter-pod-affinity") >= 30);
}

#[test]
fn inter_pod_affinity_refuses_bad_configs() {
    let p = "inter-pod-affinity";
    refuses(p, json!({"hardPodAffinityWeight": 101}));
    refuses(p, json!({"hardPodAffinityWeight": -1}));
    refuses(p, json!({"hardPodAffinityWeight": "1"}));
    refuses(p, json!({"ignorePreferredTermsOfExistingPods": "yes"}));
    refuses(p, json!({"unknown": 1}));
    refuses(p, json!([]));
}
