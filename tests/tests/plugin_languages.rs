//! The zone-maintenance example exists in Rust, C, Python and JavaScript. All
//! four must pass every fixture and give identical verdicts, reasons and
//! scores — proof that the contract, not a language's bindings, decides.

use trellis_testkit::{run_scheduler_fixture, Fixture};
use trellis_tests::*;

const LANGUAGES: [&str; 4] = [
    "zone-maintenance",
    "zone-maintenance-c",
    "zone-maintenance-python",
    "zone-maintenance-js",
];

#[test]
fn the_four_implementations_agree_on_every_fixture() {
    let engine = engine();
    let components: Vec<(&str, Vec<u8>)> = LANGUAGES.iter().map(|l| (*l, read_plugin(l))).collect();
    let dir = repo_root().join("examples/zone-maintenance/fixtures");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 5, "fixtures missing in {}", dir.display());
    let mut cases = 0;
    for path in &fixtures {
        let fixture = Fixture::load(path).unwrap();
        let mut reference: Option<(String, serde_json::Value)> = None;
        for (lang, wasm) in &components {
            let report = run_scheduler_fixture(&engine, wasm, &fixture)
                .unwrap_or_else(|e| panic!("{lang} on {}: {e}", path.display()));
            assert!(
                report.passed(),
                "{lang} fails {}:\n{report}",
                path.display()
            );
            // Error messages may be worded per language; everything else must match.
            let outcome = serde_json::json!({
                "config_error": report.config_error.is_some(),
                "plugin": report.plugin,
                "cases": report.cases.iter().map(|c| &c.outcome).collect::<Vec<_>>(),
            });
            match &reference {
                None => reference = Some((lang.to_string(), outcome)),
                Some((ref_lang, expected)) => assert_eq!(
                    &outcome,
                    expected,
                    "{lang} disagrees with {ref_lang} on {}",
                    path.display()
                ),
            }
            cases += report.cases.len() + usize::from(report.config_error.is_some());
        }
    }
    // 7 scheduling cases and 5 refused configurations, in four languages.
    assert!(cases >= 4 * 12, "only {cases} checks ran");
}

#[test]
fn only_components_that_import_wasi_get_it() {
    let py =
        trellis_plugin_host::inspect::inspect(&read_plugin("zone-maintenance-python")).unwrap();
    assert!(py.uses_wasi(), "componentize-py output imports WASI");
    assert!(py.capabilities().is_empty());
    for lang in [
        "zone-maintenance",
        "zone-maintenance-c",
        "zone-maintenance-js",
    ] {
        let i = trellis_plugin_host::inspect::inspect(&read_plugin(lang)).unwrap();
        assert!(
            !i.uses_wasi(),
            "{lang} should import no WASI: {:?}",
            i.imports
        );
        assert_eq!(i.role, "scheduler");
    }
}
