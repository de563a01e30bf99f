//! `trellis sim nodes`: simulated nodes register Ready, heartbeat their
//! Leases, run the pods bound to them and finish graceful deletions.

mod common;

use std::time::Duration;

use common::Cluster;

#[test]
fn simulated_nodes_register_heartbeat_and_run_bound_pods() {
    let c = Cluster::up();
    let _sim = c.spawn(&[
        "sim",
        "nodes",
        "--count",
        "3",
        "--taint",
        "dedicated=sim:PreferNoSchedule",
        "--label",
        "pool=blue",
    ]);
    c.eventually("3 simulated nodes Ready", Duration::from_secs(30), || {
        let out = c.kubectl(&["get", "nodes", "--no-headers"]).1;
        out.lines().filter(|l| l.contains(" Ready ")).count() == 3
    });
    let node: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "node", "sim-node-00002", "-o", "json"])).unwrap();
    assert_eq!(node["metadata"]["labels"]["pool"], "blue");
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "zone-1"
    );
    assert_eq!(node["status"]["allocatable"]["cpu"], "8");
    assert_eq!(node["spec"]["taints"][0]["effect"], "PreferNoSchedule");
    c.eventually("a lease per node", Duration::from_secs(30), || {
        c.kubectl(&["get", "leases", "-n", "kube-node-lease", "--no-headers"])
            .1
            .lines()
            .count()
            == 3
    });

    // A pod bound to a simulated node runs there.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  nodeName: sim-node-00001\n  containers: [{name: app, image: nginx}]\n");
    c.eventually("pod Running", Duration::from_secs(30), || {
        c.kubectl(&["get", "pod", "web", "-o", "jsonpath={.status.phase}"])
            .1
            == "Running"
    });
    let table = c.ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(
        table.contains("1/1") && table.contains("Running") && table.contains("sim-node-00001"),
        "{table}"
    );
    // A pod on no simulated node is left alone.
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: elsewhere}\nspec:\n  nodeName: real-node\n  containers: [{name: app, image: nginx}]\n");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        c.ok(&["get", "pod", "elsewhere", "-o", "jsonpath={.status.phase}"]),
        "Pending"
    );
    // Graceful deletion completes as a kubelet would complete it.
    c.ok(&["delete", "pod", "web", "--wait=true", "--timeout=30s"]);
    assert_ne!(c.kubectl(&["get", "pod", "web"]).0, 0);
}
