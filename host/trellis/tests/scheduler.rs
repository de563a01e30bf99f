//! The scheduler runtime end to end: simulated nodes, a Wasm plugin chain,
//! bindings, Scheduled and FailedScheduling events, retry when the cluster
//! changes.

mod common;

use std::time::Duration;

use common::Cluster;
use trellis_plugin_host::scheduler::SchedulerPlugin;
use trellis_plugin_host::{EngineConfig, PluginEngine, PluginSpec};
use trellis_scheduler::{Entry, Profile, Scheduler};

fn pod(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: app, image: nginx}}]\n")
}

#[test]
fn pods_land_where_the_chain_says_and_unschedulable_pods_get_an_event() {
    let c = Cluster::up();
    let _sim = c.spawn(&["sim", "nodes", "--count", "6", "--zones", "3"]);
    c.eventually("6 nodes", Duration::from_secs(30), || {
        c.kubectl(&["get", "nodes", "--no-headers"])
            .1
            .lines()
            .count()
            == 6
    });
    // zone-2 holds sim-node-00003 and sim-node-00006; the latter is under maintenance.
    c.ok(&["label", "node", "sim-node-00006", "maintenance=true"]);

    let wasm = std::fs::read(trellis_testkit::plugin_dir().join("zone-maintenance.wasm"))
        .expect("cargo xtask plugins first");
    let kubeconfig = c.kubeconfig();
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let runner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let engine = PluginEngine::new(EngineConfig::default()).unwrap();
                let spec = PluginSpec::new("zones").config(r#"{"preferredZones": ["zone-2"]}"#);
                let plugin = SchedulerPlugin::load(&engine, &wasm, spec).unwrap();
                let client = trellis_client::Client::from_kubeconfig(&kubeconfig).unwrap();
                let profile = Profile::new("default-scheduler").with(Entry::wasm(plugin, 1));
                Scheduler::new(client)
                    .profile(profile)
                    .run(stop.notified())
                    .await
                    .unwrap();
            });
        })
    };

    for p in ["a", "b", "c"] {
        c.apply(&pod(p));
    }
    for p in ["a", "b", "c"] {
        c.eventually(&format!("{p} bound"), Duration::from_secs(30), || {
            c.kubectl(&["get", "pod", p, "-o", "jsonpath={.spec.nodeName}"])
                .1
                == "sim-node-00003"
        });
        c.eventually(&format!("{p} Running"), Duration::from_secs(30), || {
            c.kubectl(&["get", "pod", p, "-o", "jsonpath={.status.phase}"])
                .1
                == "Running"
        });
    }
    let described = c.ok(&["describe", "pod", "a"]);
    assert!(
        described.contains("Scheduled")
            && described.contains("Successfully assigned default/a to sim-node-00003"),
        "{described}"
    );

    // Every node under maintenance: nothing fits, and the event says why, as upstream words it.
    for n in 1..=5 {
        c.ok(&[
            "label",
            "node",
            &format!("sim-node-{n:05}"),
            "maintenance=true",
        ]);
    }
    c.apply(&pod("stuck"));
    c.eventually("FailedScheduling event", Duration::from_secs(30), || {
        c.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=stuck,reason=FailedScheduling",
            "-o",
            "jsonpath={.items[0].message}",
        ])
        .1 == "0/6 nodes are available: 6 node(s) under maintenance."
    });
    assert_eq!(
        c.ok(&["get", "pod", "stuck", "-o", "jsonpath={.spec.nodeName}"]),
        ""
    );
    // A node comes back: the pod is retried and lands there.
    c.ok(&["label", "node", "sim-node-00001", "maintenance-"]);
    c.eventually(
        "stuck pod scheduled after the cluster changed",
        Duration::from_secs(30),
        || {
            c.kubectl(&["get", "pod", "stuck", "-o", "jsonpath={.spec.nodeName}"])
                .1
                == "sim-node-00001"
        },
    );
    stop.notify_one();
    runner.join().unwrap();
}
