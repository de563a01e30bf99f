//! `trellis up` schedules with upstream's default plugins as Wasm components:
//! pods with nodeSelector, tolerations, node affinity, pod anti-affinity,
//! topology spread and resource requests land where upstream would put them, and a pod that fits nowhere gets a
//! FailedScheduling event worded like upstream's.

mod common;

use std::time::Duration;

use common::Cluster;

fn node_of(c: &Cluster, pod: &str) -> String {
    c.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
        .1
}

fn failed_message(c: &Cluster, pod: &str) -> String {
    c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={pod},reason=FailedScheduling"),
        "-o",
        "jsonpath={.items[0].message}",
    ])
    .1
}

#[test]
fn the_default_profile_places_pods_like_upstream() {
    let plugins = trellis_testkit::plugin_dir();
    assert!(
        plugins.join("node-affinity.wasm").exists(),
        "run `cargo xtask plugins` first"
    );
    let c = Cluster::start(&["up", "--plugin-dir", plugins.to_str().unwrap()], None);
    c.eventually(
        "the default profile is active",
        Duration::from_secs(60),
        || {
            c.kubectl(&[
                "get",
                "schedulerprofile",
                "default-scheduler",
                "-o",
                "jsonpath={.status.conditions[0].status}",
            ])
            .1 == "True"
        },
    );
    let active = c.ok(&[
        "get",
        "schedulerprofile",
        "default-scheduler",
        "-o",
        "jsonpath={.status.conditions[0].message}",
    ]);
    for needed in [
        "node-name",
        "taint-toleration",
        "node-affinity",
        "node-resources-fit",
        "pod-topology-spread",
    ] {
        assert!(active.contains(needed), "{needed} missing: {active}");
    }
    let _cpu = c.spawn(&["sim", "nodes", "--count", "3", "--zones", "3", "--cpu", "4"]);
    let _gpu = c.spawn(&[
        "sim",
        "nodes",
        "--prefix",
        "gpu",
        "--count",
        "1",
        "--zones",
        "0",
        "--label",
        "accelerator=gpu",
        "--taint",
        "gpu=true:NoSchedule",
    ]);
    c.eventually("4 nodes", Duration::from_secs(30), || {
        c.kubectl(&["get", "nodes", "--no-headers"])
            .1
            .lines()
            .count()
            == 4
    });

    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wants-gpu}\nspec:\n  nodeSelector: {accelerator: gpu}\n  containers: [{name: app, image: cuda}]\n",
    );
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: gpu-ok}\nspec:\n  nodeSelector: {accelerator: gpu}\n  tolerations: [{key: gpu, operator: Equal, value: \"true\", effect: NoSchedule}]\n  containers: [{name: app, image: cuda}]\n",
    );
    c.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: plain}\nspec:\n  containers: [{name: app, image: nginx}]\n");
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: zone-one}\nspec:\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms: [{matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [zone-1]}]}]\n  containers: [{name: app, image: nginx}]\n",
    );
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: huge}\nspec:\n  containers: [{name: app, image: nginx, resources: {requests: {cpu: \"64\"}}}]\n",
    );

    c.eventually("gpu-ok on the gpu node", Duration::from_secs(30), || {
        node_of(&c, "gpu-ok") == "gpu-00001"
    });
    c.eventually("plain placed", Duration::from_secs(30), || {
        node_of(&c, "plain").starts_with("sim-node-")
    });
    c.eventually("zone-one in zone-1", Duration::from_secs(30), || {
        node_of(&c, "zone-one") == "sim-node-00002"
    });
    c.eventually("wants-gpu refused", Duration::from_secs(30), || {
        !failed_message(&c, "wants-gpu").is_empty()
    });
    assert_eq!(
        failed_message(&c, "wants-gpu"),
        "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 3 node(s) didn't match Pod's node affinity/selector."
    );
    c.eventually("huge refused", Duration::from_secs(30), || {
        !failed_message(&c, "huge").is_empty()
    });
    assert_eq!(
        failed_message(&c, "huge"),
        "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 3 Insufficient cpu."
    );
    assert_eq!(node_of(&c, "wants-gpu"), "");

    // Required anti-affinity on the hostname: one `web` pod per node; the
    // fourth fits nowhere (the gpu node is tainted).
    for i in 1..=4 {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-{i}, labels: {{app: web}}}}\nspec:\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - labelSelector: {{matchLabels: {{app: web}}}}\n        topologyKey: kubernetes.io/hostname\n  containers: [{{name: app, image: nginx}}]\n"
        ));
    }
    let mut web_nodes: Vec<String> = Vec::new();
    for i in 1..=3 {
        c.eventually(&format!("web-{i} placed"), Duration::from_secs(30), || {
            !node_of(&c, &format!("web-{i}")).is_empty()
        });
        web_nodes.push(node_of(&c, &format!("web-{i}")));
    }
    web_nodes.sort();
    assert_eq!(
        web_nodes,
        ["sim-node-00001", "sim-node-00002", "sim-node-00003"],
        "anti-affinity spreads one web pod per node"
    );
    c.eventually("web-4 refused", Duration::from_secs(30), || {
        !failed_message(&c, "web-4").is_empty()
    });
    assert_eq!(
        failed_message(&c, "web-4"),
        "0/4 nodes are available: 1 node(s) had untolerated taint {gpu: true}, 3 node(s) didn't match pod anti-affinity rules."
    );

    // Topology spread over zones with maxSkew 1: six pods, two per zone,
    // although they prefer zone-0 (node affinity) and would all go there
    // without the constraint.
    for i in 1..=6 {
        c.apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: spread-{i}, labels: {{app: spread}}}}\nspec:\n  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n      - weight: 100\n        preference: {{matchExpressions: [{{key: topology.kubernetes.io/zone, operator: In, values: [zone-0]}}]}}\n  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    labelSelector: {{matchLabels: {{app: spread}}}}\n  containers: [{{name: app, image: nginx, resources: {{requests: {{cpu: 100m}}}}}}]\n"
        ));
        c.eventually(
            &format!("spread-{i} placed"),
            Duration::from_secs(30),
            || !node_of(&c, &format!("spread-{i}")).is_empty(),
        );
    }
    let mut per_node = std::collections::BTreeMap::new();
    for i in 1..=6 {
        *per_node
            .entry(node_of(&c, &format!("spread-{i}")))
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_node.into_iter().collect::<Vec<_>>(),
        [
            ("sim-node-00001".to_string(), 2),
            ("sim-node-00002".to_string(), 2),
            ("sim-node-00003".to_string(), 2)
        ],
        "two spread pods per zone"
    );

    let described = c.ok(&["describe", "pod", "huge"]);
    assert!(
        described.contains("FailedScheduling") && described.contains("3 Insufficient cpu"),
        "{described}"
    );
}
