//! Scheduler profiles and plugins as API objects, changed with kubectl while
//! `trellis up` keeps running: a custom plugin from `examples/` added to the
//! default profile changes placements; a plugin's new config is swapped in
//! while pods keep being scheduled; an invalid profile is refused (422 for a
//! malformed one, a `Ready=False` condition for one naming a missing plugin)
//! and the old chain keeps running; a plugin that loops forever is skipped
//! under `Ignore` and fails the pod's cycle under `Fail`; every decision is
//! explained on the pod.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::Cluster;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

fn node_of(c: &Cluster, ns: &str, pod: &str) -> String {
    c.kubectl(&[
        "-n",
        ns,
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.spec.nodeName}",
    ])
    .1
}

fn ready(c: &Cluster, kind: &str, name: &str) -> (String, String) {
    let out = c
        .kubectl(&[
            "get",
            kind,
            name,
            "-o",
            "jsonpath={.status.conditions[0].status}|{.status.conditions[0].message}",
        ])
        .1;
    let (s, m) = out.split_once('|').unwrap_or(("", ""));
    (s.to_string(), m.to_string())
}

fn event(c: &Cluster, ns: &str, pod: &str, reason: &str) -> String {
    c.kubectl(&[
        "-n",
        ns,
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason={reason}"),
        "-o",
        "jsonpath={.items[0].message}",
    ])
    .1
}

fn explanation(c: &Cluster, ns: &str, pod: &str) -> Value {
    let text = c.ok(&[
        "-n",
        ns,
        "get",
        "pod",
        pod,
        "-o",
        r"jsonpath={.metadata.annotations.scheduler\.trellis\.dev/explanation}",
    ]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("explanation of {pod}: {e}: {text:?}"))
}

fn pod(ns: &str, name: &str, scheduler: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  schedulerName: {scheduler}\n  containers: [{{name: app, image: nginx}}]\n"
    )
}

/// zone-2 holds sim-node-00003 and sim-node-00006; zone-0 00001 and 00004.
fn zone_of(node: &str) -> &'static str {
    match node {
        "sim-node-00001" | "sim-node-00004" => "zone-0",
        "sim-node-00002" | "sim-node-00005" => "zone-1",
        "sim-node-00003" | "sim-node-00006" => "zone-2",
        _ => "none",
    }
}

fn zone_plugin(wasm_b64: &str, zone: &str) -> String {
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: zone-maintenance}}\nspec:\n  role: scheduler\n  source: {{wasm: {wasm_b64}}}\n  config: {{preferredZones: [{zone}]}}\n"
    )
}

#[test]
fn profiles_and_plugins_change_with_kubectl_while_scheduling_goes_on() {
    let plugins = trellis_testkit::plugin_dir();
    let wasm = std::fs::read(plugins.join("zone-maintenance.wasm"))
        .expect("run `cargo xtask plugins` first");
    let wasm_b64 = base64::engine::general_purpose::STANDARD.encode(&wasm);
    let c = Cluster::start(&["up", "--plugin-dir", plugins.to_str().unwrap()], None);
    c.eventually("default-scheduler Ready", PATIENCE, || {
        ready(&c, "schedulerprofile", "default-scheduler").0 == "True"
    });
    let listed = c.ok(&["get", "plugins"]);
    assert!(listed.contains("node-resources-fit"), "{listed}");
    assert_eq!(
        ready(&c, "plugin", "inter-pod-affinity").0,
        "True",
        "default plugins report they loaded"
    );
    let _sim = c.spawn(&["sim", "nodes", "--count", "6", "--zones", "3"]);
    c.eventually("6 nodes", PATIENCE, || {
        c.kubectl(&["get", "nodes", "--no-headers"])
            .1
            .lines()
            .count()
            == 6
    });
    c.ok(&["create", "namespace", "loops"]);

    // A malformed profile never gets in: 422 with the field named.
    let (code, _, err) = c.kubectl_stdin(
        &["apply", "-f", "-"],
        Some("apiVersion: trellis.dev/v1alpha1\nkind: SchedulerProfile\nmetadata: {name: broken}\nspec:\n  plugins: [{name: node-name, failurePolicy: Retry}]\n"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("spec.plugins[0].failurePolicy: Unsupported value: \"Retry\""),
        "{err}"
    );

    // The custom plugin, uploaded inline, joins the default profile with a
    // weight that dominates: pods go to its preferred zone.
    c.apply(&zone_plugin(&wasm_b64, "zone-2"));
    c.eventually("zone-maintenance loaded", PATIENCE, || {
        ready(&c, "plugin", "zone-maintenance").0 == "True"
    });
    let digest = c.ok(&[
        "get",
        "plugin",
        "zone-maintenance",
        "-o",
        "jsonpath={.status.digest}",
    ]);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    c.ok(&[
        "patch",
        "schedulerprofile",
        "default-scheduler",
        "--type",
        "json",
        "-p",
        r#"[{"op": "add", "path": "/spec/plugins/-", "value": {"name": "zone-maintenance", "weight": 100}}]"#,
    ]);
    c.eventually("the profile runs zone-maintenance", PATIENCE, || {
        let (s, m) = ready(&c, "schedulerprofile", "default-scheduler");
        s == "True" && m.contains("zone-maintenance")
    });
    for p in ["z1", "z2", "z3"] {
        c.apply(&pod("default", p, "default-scheduler"));
    }
    for p in ["z1", "z2", "z3"] {
        c.eventually(&format!("{p} placed"), PATIENCE, || {
            !node_of(&c, "default", p).is_empty()
        });
        assert_eq!(zone_of(&node_of(&c, "default", p)), "zone-2", "{p}");
    }
    let why = explanation(&c, "default", "z1");
    assert_eq!(why["result"], "Scheduled");
    assert_eq!(why["profile"], "default-scheduler");
    assert_eq!(why["nodes"], 6);
    let zone_scores = why["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["plugin"] == "zone-maintenance")
        .unwrap_or_else(|| panic!("no zone-maintenance scores: {why}"));
    assert_eq!(zone_scores["weight"], 100);
    assert_eq!(zone_scores["top"][0]["score"], 100, "{why}");
    assert_eq!(
        zone_of(zone_scores["top"][0]["node"].as_str().unwrap()),
        "zone-2"
    );

    // A new config for the plugin while pods keep coming: every pod is
    // scheduled, by the old version or the new, and the later ones follow
    // the new config.
    for i in 0..10 {
        c.apply(&pod("default", &format!("s{i}"), "default-scheduler"));
    }
    c.apply(&zone_plugin(&wasm_b64, "zone-0"));
    for i in 10..20 {
        c.apply(&pod("default", &format!("s{i}"), "default-scheduler"));
    }
    c.eventually("the new config is active", PATIENCE, || {
        c.ok(&[
            "get",
            "plugin",
            "zone-maintenance",
            "-o",
            "jsonpath={.status.observedGeneration}",
        ]) == c.ok(&[
            "get",
            "plugin",
            "zone-maintenance",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
    });
    for i in 0..20 {
        let p = format!("s{i}");
        c.eventually(&format!("{p} placed"), PATIENCE, || {
            !node_of(&c, "default", &p).is_empty()
        });
        let zone = zone_of(&node_of(&c, "default", &p));
        assert!(zone == "zone-2" || zone == "zone-0", "{p} in {zone}");
    }
    let mut attempt = 0;
    c.eventually(
        "pods after the swap follow the new config",
        PATIENCE,
        || {
            attempt += 1;
            let name = format!("after-{attempt}");
            c.apply(&pod("default", &name, "default-scheduler"));
            let mut node = String::new();
            for _ in 0..50 {
                node = node_of(&c, "default", &name);
                if !node.is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            zone_of(&node) == "zone-0"
        },
    );

    // A profile naming a plugin that does not exist is refused by a
    // condition; the chain already running keeps going (zone-0 preference).
    c.ok(&[
        "patch",
        "schedulerprofile",
        "default-scheduler",
        "--type",
        "json",
        "-p",
        r#"[{"op": "add", "path": "/spec/plugins/-", "value": {"name": "no-such-plugin"}}]"#,
    ]);
    c.eventually("the broken profile is reported", PATIENCE, || {
        let (s, m) = ready(&c, "schedulerprofile", "default-scheduler");
        s == "False" && m.contains("plugin \"no-such-plugin\": no Plugin object of that name")
    });
    c.apply(&pod("default", "after-broken", "default-scheduler"));
    c.eventually("after-broken placed", PATIENCE, || {
        !node_of(&c, "default", "after-broken").is_empty()
    });
    assert_eq!(zone_of(&node_of(&c, "default", "after-broken")), "zone-0");

    // A plugin that loops forever on pods named "bad".
    c.apply(
        "apiVersion: trellis.dev/v1alpha1\nkind: Plugin\nmetadata: {name: looper}\nspec:\n  role: scheduler\n  source: {builtin: test-misbehave}\n  config: {mode: loop}\n  grants: {capabilities: [log]}\n",
    );
    for (name, policy) in [("loop-ignore", "Ignore"), ("loop-fail", "Fail")] {
        c.apply(&format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: SchedulerProfile\nmetadata: {{name: {name}}}\nspec:\n  plugins:\n  - {{name: node-unschedulable}}\n  - {{name: looper, deadline: 50ms, failurePolicy: {policy}}}\n  - {{name: node-resources-fit}}\n"
        ));
    }
    for name in ["loop-ignore", "loop-fail"] {
        c.eventually(&format!("{name} Ready"), PATIENCE, || {
            ready(&c, "schedulerprofile", name).0 == "True"
        });
    }
    c.apply(&pod("default", "bad", "loop-ignore"));
    c.apply(&pod("loops", "bad", "loop-fail"));
    c.eventually("under Ignore the pod is scheduled", PATIENCE, || {
        !node_of(&c, "default", "bad").is_empty()
    });
    c.eventually("the skipped plugin is an event", PATIENCE, || {
        event(&c, "default", "bad", "PluginIgnored").contains("exceeded its deadline of 50ms")
    });
    let why = explanation(&c, "default", "bad");
    assert_eq!(why["skipped"][0]["plugin"], "looper", "{why}");
    c.eventually("under Fail the pod gets a clear event", PATIENCE, || {
        let m = event(&c, "loops", "bad", "FailedScheduling");
        m.contains("running plugin \"looper\" failed")
            && m.contains("exceeded its deadline of 50ms")
    });
    assert_eq!(node_of(&c, "loops", "bad"), "");
    let why = explanation(&c, "loops", "bad");
    assert_eq!(why["result"], "Error");
    assert_eq!(why["failed"]["plugin"], "looper");
    let cond = c.ok(&[
        "-n",
        "loops",
        "get",
        "pod",
        "bad",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    assert_eq!(cond, "False");
    // Other pods of the failing profile still schedule: the loop is per pod.
    c.apply(&pod("loops", "good", "loop-fail"));
    c.eventually("a good pod under loop-fail", PATIENCE, || {
        !node_of(&c, "loops", "good").is_empty()
    });
    let described = c.ok(&["-n", "loops", "describe", "pod", "bad"]);
    assert!(described.contains("FailedScheduling"), "{described}");

    // The README's example profile.
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/manifests/zone-profile.yaml");
    c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    c.eventually("zones Ready", PATIENCE, || {
        ready(&c, "schedulerprofile", "zones").0 == "True"
    });
    c.eventually("zoned placed", PATIENCE, || {
        !node_of(&c, "default", "zoned").is_empty()
    });
    assert_eq!(zone_of(&node_of(&c, "default", "zoned")), "zone-1");
    // A pod naming a profile that does not exist waits, and is scheduled
    // once that profile is created.
    c.apply(&pod("default", "early", "later"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(node_of(&c, "default", "early"), "");
    c.apply(
        "apiVersion: trellis.dev/v1alpha1\nkind: SchedulerProfile\nmetadata: {name: later}\nspec:\n  plugins: [{name: node-resources-fit}]\n",
    );
    c.eventually("early placed by the new profile", PATIENCE, || {
        !node_of(&c, "default", "early").is_empty()
    });
    let table = c.ok(&["get", "schedulerprofiles"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..3] == ["zones", "True", "5"]),
        "{table}"
    );
}
