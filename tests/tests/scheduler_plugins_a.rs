//! Upstream default scheduler plugins, part A (NodeName, NodeUnschedulable,
//! TaintToleration, NodeAffinity, ImageLocality): every fixture in each
//! plugin's `fixtures/` folder runs through the built Wasm component.

use trellis_testkit::{run_scheduler_fixture, Fixture};
use trellis_tests::*;

/// Run every fixture of `plugins/scheduler/<crate_name>` through
/// `build/plugins/<crate_name>.wasm` and check the plugin's `info` name.
fn run_all(crate_name: &str, info_name: &str) {
    let engine = engine();
    let wasm = read_plugin(crate_name);
    let fixtures = scheduler_fixtures(crate_name);
    let mut checks = 0;
    for path in &fixtures {
        let fixture = Fixture::load(path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            fixture.expect_config_error || fixture.cases.len() >= 3,
            "{} has {} cases; a fixture needs at least 3 (or expects a config error)",
            path.display(),
            fixture.cases.len()
        );
        let report = run_scheduler_fixture(&engine, &wasm, &fixture)
            .unwrap_or_else(|e| panic!("{crate_name} on {}: {e}", path.display()));
        assert!(
            report.passed(),
            "{crate_name} fails {}:\n{report}",
            path.display()
        );
        if !fixture.expect_config_error {
            assert_eq!(report.plugin, info_name, "{}", path.display());
        }
        checks += report.cases.len() + usize::from(report.config_error.is_some());
    }
    eprintln!(
        "{crate_name}: {} fixtures, {checks} checks passed",
        fixtures.len()
    );
}

#[test]
fn node_name() {
    run_all("node-name", "NodeName");
}

#[test]
fn node_unschedulable() {
    run_all("node-unschedulable", "NodeUnschedulable");
}

#[test]
fn taint_toleration() {
    run_all("taint-toleration", "TaintToleration");
}

#[test]
fn node_affinity() {
    run_all("node-affinity", "NodeAffinity");
}

#[test]
fn image_locality() {
    run_all("image-locality", "ImageLocality");
}
