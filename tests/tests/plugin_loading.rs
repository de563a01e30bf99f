//! What may load and what may not: garbage, core modules, wrong roles and
//! ungranted imports each fail with an error that names the problem; grants are
//! also checked inside host functions; artifacts are cached on disk.

use std::sync::Arc;

use trellis_plugin_host::admission::AdmissionPlugin;
use trellis_plugin_host::scheduler::SchedulerPlugin;
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{
    Capability, EngineConfig, Grants, HostServices, LoadError, ObjectSource, PluginEngine,
    PluginSlot, PluginSpec, Provenance,
};
use trellis_tests::*;

#[test]
fn garbage_and_core_modules_are_refused() {
    let engine = engine();
    let cases: [(&[u8], &str); 3] = [
        (b"this is not wasm at all", "magic bytes"),
        (b"\0asm\x01\0\0\0", "core wasm module"),
        (
            b"\0asm\x0d\0\x01\0garbage-after-header",
            "not a valid WebAssembly component",
        ),
    ];
    for (bytes, needle) in cases {
        let err = SchedulerPlugin::load(&engine, bytes, PluginSpec::new("x")).unwrap_err();
        assert!(matches!(err, LoadError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn an_ungranted_import_fails_to_load_naming_the_import() {
    let engine = engine();
    let err = SchedulerPlugin::load(
        &engine,
        &read_plugin("test-misbehave"),
        PluginSpec::new("m"),
    )
    .unwrap_err();
    match &err {
        LoadError::NotGranted { import, .. } => assert_eq!(import, "trellis:plugin/log@0.4.0"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("grant `log`"), "{err}");
    // Granted, it loads.
    let spec = PluginSpec::new("m").grants(Grants::none().with(Capability::Log));
    SchedulerPlugin::load(&engine, &read_plugin("test-misbehave"), spec).unwrap();
}

#[test]
fn a_role_cannot_be_granted_what_it_may_never_have() {
    let engine = engine();
    let spec = PluginSpec::new("z").grants(Grants::none().write("", "Pod"));
    let err = SchedulerPlugin::load(&engine, &read_plugin("zone-maintenance"), spec).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::GrantNotAllowed {
                role: "scheduler",
                capability: "objects-write"
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_component_of_the_wrong_role_is_refused() {
    let engine = engine();
    let err = AdmissionPlugin::load(
        &engine,
        &read_plugin("zone-maintenance"),
        PluginSpec::new("z"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::WrongRole {
                expected: "admission",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("it is a scheduler plugin"),
        "{err}"
    );
    let err = SchedulerPlugin::load(&engine, &read_plugin("test-reader"), PluginSpec::new("r"))
        .unwrap_err();
    assert!(
        err.to_string().contains("it is a admission plugin")
            || err.to_string().contains("it is an admission plugin"),
        "{err}"
    );
}

#[test]
fn bad_configuration_refuses_the_load() {
    let engine = engine();
    let spec = PluginSpec::new("z").config(r#"{"preferredZones": 3}"#);
    let err = SchedulerPlugin::load(&engine, &read_plugin("zone-maintenance"), spec).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(r#"invalid configuration, expected {"preferredZones""#)
            && msg.contains("expected a sequence"),
        "{msg}"
    );
}

#[test]
fn a_broken_version_never_replaces_the_running_one() {
    let engine = engine();
    let good = load_scheduler(&engine, "zone-maintenance", PluginSpec::new("z"));
    let slot = Arc::new(PluginSlot::new(good));
    let before = slot.generation();
    // Loading is what can fail, and a slot only accepts a loaded plugin, so a
    // failed load leaves the slot as it was.
    for bad in [&b"garbage"[..], &read_plugin("test-reader")[..]] {
        if let Ok(p) = SchedulerPlugin::load(&engine, bad, PluginSpec::new("z")) {
            slot.swap(p);
        }
    }
    assert_eq!(slot.generation(), before);
}

struct Fixtures;
impl ObjectSource for Fixtures {
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<String, ObjectError> {
        match (kind.kind.as_str(), namespace, name) {
            ("Pod", "default", "web") => Ok(r#"{"kind":"Pod","metadata":{"name":"web"}}"#.into()),
            ("Secret", "default", "token") => {
                Ok(r#"{"kind":"Secret","data":{"t":"c2VjcmV0"}}"#.into())
            }
            _ => Err(ObjectError::NotFound),
        }
    }
    fn list(&self, _: &KindRef, _: &str, _: &str) -> Result<Vec<String>, ObjectError> {
        Ok(vec![])
    }
}

#[test]
fn host_functions_answer_access_denied_outside_the_grants() {
    let engine = engine();
    let spec = PluginSpec::new("reader")
        .grants(Grants::none().read("", "Pod"))
        .services(HostServices {
            objects: Some(Arc::new(Fixtures)),
            ..HostServices::default()
        });
    let reader = AdmissionPlugin::load(&engine, &read_plugin("test-reader"), spec).unwrap();
    let read = |kind: &str, name: &str| {
        let req = serde_json::json!({"read": {"group": "", "version": "v1", "kind": kind, "namespace": "default", "name": name}});
        reader
            .review(&req.to_string())
            .expect("review returns, never traps")
            .message
    };
    assert_eq!(
        read("Pod", "web"),
        r#"ok: {"kind":"Pod","metadata":{"name":"web"}}"#
    );
    assert_eq!(read("Pod", "nope"), "error: not-found");
    let denied = read("Secret", "token");
    assert!(denied.starts_with("error: access-denied: "), "{denied}");
    assert!(denied.contains("may not read v1/Secret"), "{denied}");
    // A denial from the plugin itself is an answer, not an error.
    let r = reader.review(r#"{"deny": true}"#).unwrap();
    assert!(!r.allowed);
    assert_eq!(r.code, 403);
}

#[test]
fn artifacts_are_cached_on_disk_and_a_bad_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = read_plugin("zone-maintenance");
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let first = PluginEngine::new(config.clone())
        .unwrap()
        .compile(&wasm)
        .unwrap();
    assert_eq!(first.provenance, Provenance::Compiled);
    let second = PluginEngine::new(config.clone())
        .unwrap()
        .compile(&wasm)
        .unwrap();
    assert_eq!(second.provenance, Provenance::Cached);
    assert_eq!(first.digest, second.digest);
    let _ = &second;
    let files: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(
        name.starts_with(&first.digest.0) && name.ends_with(".cwasm"),
        "{name}"
    );
    // A corrupted artifact is replaced, never trusted. (Artifacts are mmapped:
    // the cache never rewrites a file in place, and neither does this test.)
    let (digest, imports) = (first.digest.clone(), first.imports.clone());
    drop((first, second));
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::write(&files[0], b"corrupt").unwrap();
    let third = PluginEngine::new(config).unwrap().compile(&wasm).unwrap();
    assert_eq!(third.provenance, Provenance::Compiled);
    assert_eq!(third.imports, imports);
    assert_eq!(third.digest, digest);
}

#[test]
fn inspect_describes_components_and_refuses_non_plugins() {
    let i = trellis_plugin_host::inspect::inspect(&read_plugin("test-misbehave")).unwrap();
    assert_eq!(i.role, "scheduler");
    assert_eq!(i.contract, "0.4.0");
    assert_eq!(i.capabilities(), vec![Capability::Log]);
    assert!(!i.uses_wasi());
    let text = i.to_string();
    assert!(text.contains("trellis:plugin/scheduler@0.4.0 (info, configure, upsert-node, remove-node, assume-pod, forget-pod, prepare, filter, score)"), "{text}");
    let i = trellis_plugin_host::inspect::inspect(&read_plugin("test-reader")).unwrap();
    assert_eq!(i.role, "admission");
    assert!(trellis_plugin_host::inspect::inspect(b"\0asm\x01\0\0\0").is_err());
}

/// Components built for older contracts (the C zone-maintenance example as it
/// was built for 0.1.0, 0.2.0 and 0.3.0, kept in `tests/fixtures`) are refused
/// with a message that names both versions and what to do.
#[test]
fn a_component_for_an_older_contract_is_refused_with_a_hint() {
    let engine = engine();
    for old in ["0.1.0", "0.2.0", "0.3.0"] {
        let wasm = std::fs::read(repo_root().join(format!(
            "tests/fixtures/zone-maintenance-c-contract-{old}.wasm"
        )))
        .unwrap();
        let err = SchedulerPlugin::load(&engine, &wasm, PluginSpec::new("old")).unwrap_err();
        assert!(
            matches!(
                err,
                LoadError::WrongRole {
                    expected: "scheduler",
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("trellis:plugin/scheduler@{old}"))
                && msg.contains(&format!(
                    "built for contract trellis:plugin@{old}; this host speaks 0.4.0"
                ))
                && msg.contains("rebuild it against wit/trellis-plugin-0.4.0"),
            "{msg}"
        );
        let err = trellis_plugin_host::inspect::inspect(&wasm)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("built for contract trellis:plugin@{old}")),
            "{err}"
        );
    }
}
