//! The `trellis plugin` commands as a user runs them.

use std::process::Command;

fn trellis(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run trellis");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

fn plugin(name: &str) -> String {
    let p = trellis_testkit::plugin_dir().join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} missing: run `cargo xtask plugins`",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

#[test]
fn inspect_prints_role_contract_exports_and_imports() {
    let (code, out, _) = trellis(&["plugin", "inspect", &plugin("test-misbehave")]);
    assert_eq!(code, 0);
    assert!(out.contains("role:      scheduler"), "{out}");
    assert!(out.contains("contract:  trellis:plugin@0.4.0"), "{out}");
    assert!(
        out.contains("trellis:plugin/log@0.4.0  [capability: must be granted]"),
        "{out}"
    );
}

#[test]
fn inspect_refuses_what_is_not_a_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for (file, needle) in [(&garbage, "magic bytes"), (&core, "core wasm module")] {
        let (code, out, err) = trellis(&["plugin", "inspect", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains("is not a valid Trellis plugin") && err.contains(needle),
            "{err}"
        );
    }
    let (code, _, err) = trellis(&["plugin", "inspect", "/no/such/file.wasm"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /no/such/file.wasm"), "{err}");
}

#[test]
fn plugin_test_passes_good_fixtures_and_fails_wrong_expectations() {
    let fixtures = root().join("examples/zone-maintenance/fixtures/basic.yaml");
    let (code, out, err) = trellis(&[
        "plugin",
        "test",
        &plugin("zone-maintenance"),
        fixtures.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok   every candidate"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong,
        "nodes: [{metadata: {name: n1, labels: {maintenance: 'true'}}}]\ncases:\n- name: expects the wrong thing\n  pod: {metadata: {name: p}}\n  expect: {feasible: [n1]}\n",
    )
    .unwrap();
    let (code, out, _) = trellis(&[
        "plugin",
        "test",
        &plugin("zone-maintenance"),
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL expects the wrong thing"), "{out}");
    assert!(
        out.contains(r#"feasible: expected ["n1"], got []"#),
        "{out}"
    );
}

/// What `/proc/PID/cmdline` shows, arguments joined by spaces, trailing
/// blanks dropped.
fn command_line(pid: &str) -> String {
    let raw = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap();
    String::from_utf8_lossy(&raw)
        .split('\0')
        .filter(|a| !a.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The agent starts shims through one factory process, which forks them
/// without executing a program each time: they serve, show their own
/// command line, and outlive the factory. A factory that cannot start falls
/// back to executing the shim, whose refusal is reported.
#[test]
fn a_shim_factory_forks_shims_that_outlive_it() {
    use trellis_runtime::shim::{ShimClient, ShimFactory};
    let dir = tempfile::tempdir().unwrap();
    let shim = std::path::Path::new(env!("CARGO_BIN_EXE_trellis-shim"));
    let factory = ShimFactory::new(shim, &[]);
    let clients: Vec<ShimClient> = ["a", "b"]
        .iter()
        .map(|d| ShimClient::new(dir.path().join(d)))
        .collect();
    let mut pids = Vec::new();
    for c in &clients {
        factory.spawn(c).unwrap();
        c.ping().unwrap();
        let pid = std::fs::read_to_string(c.dir().join("shim.pid")).unwrap();
        assert_eq!(
            command_line(&pid),
            format!("trellis-shim --dir {}", c.dir().display())
        );
        pids.push(pid);
    }
    assert_ne!(pids[0], pids[1]);
    // A shim that serves already is found, not started twice.
    factory.spawn(&clients[0]).unwrap();
    assert_eq!(
        std::fs::read_to_string(clients[0].dir().join("shim.pid")).unwrap(),
        pids[0]
    );
    drop(factory);
    for c in &clients {
        c.ping().unwrap();
        c.shutdown().unwrap();
    }

    // No factory (the program refuses `--factory`): the shim is executed,
    // and its refusal comes back.
    let broken = ShimFactory::new(std::path::Path::new("/bin/false"), &[]);
    let err = broken
        .spawn(&ShimClient::new(dir.path().join("c")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("starting the shim for"), "{err}");
}
