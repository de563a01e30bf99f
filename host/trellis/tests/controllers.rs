//! The default controllers end to end, as Wasm components in `trellis up`'s
//! controller runtime, with kubectl over simulated nodes: Deployments roll
//! out within their budget, undo, scale and cascade; DaemonSets, StatefulSets
//! and namespaces behave; a silent node loses its pods; a controller swapped
//! mid-rollout finishes it; the example controller hot-loads and unloads.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Background, Cluster};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(60);

/// `trellis up` with the built plugins (scheduler, admission, controllers)
/// and `n` simulated nodes.
fn cluster(nodes: usize) -> (Cluster, Background) {
    let plugins = trellis_testkit::plugin_dir();
    let c = Cluster::start(&["up", "--plugin-dir", plugins.to_str().unwrap()], None);
    let sim = c.spawn(&["sim", "nodes", "--count", &nodes.to_string()]);
    c.eventually("nodes Ready", PATIENCE, || {
        let out = c.kubectl(&["get", "nodes", "--no-headers"]).1;
        out.lines().filter(|l| l.contains(" Ready ")).count() == nodes
    });
    c.eventually("the default controllers run", PATIENCE, || {
        c.kubectl(&[
            "get",
            "plugin",
            "deployment",
            "-o",
            "jsonpath={.status.conditions[0].status}",
        ])
        .1 == "True"
    });
    (c, sim)
}

fn json(c: &Cluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&c.ok(&all)).unwrap()
}

/// Pods of a label selector that are not being deleted.
fn live_pods(c: &Cluster, selector: &str) -> Vec<Value> {
    json(c, &["get", "pods", "-l", selector])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

fn is_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// The objects of one resource in the default namespace (as ADDED), then
/// every change, in order, from a watch through the API, collected in the
/// background.
struct Watch {
    events: Arc<Mutex<Vec<(String, Value)>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watch {
    fn pods(c: &Cluster) -> Self {
        Self::start(c, trellis_client::Resource::new("", "v1", "pods", true))
    }

    fn start(c: &Cluster, resource: trellis_client::Resource) -> Self {
        let client = trellis_client::Client::from_kubeconfig(c.kubeconfig()).unwrap();
        let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = events.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let list = client
                    .list(&resource, "default", &Default::default())
                    .await
                    .unwrap();
                // What exists now, as if just added.
                sink.lock().unwrap().extend(
                    list.items()
                        .iter()
                        .map(|p| ("ADDED".to_string(), p.clone())),
                );
                let mut w = client
                    .watch(
                        &resource,
                        "default",
                        &Default::default(),
                        list.resource_version(),
                    )
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                tokio::pin!(rx);
                loop {
                    tokio::select! {
                        _ = &mut rx => return,
                        ev = w.next() => match ev {
                            Ok(Some(ev)) => sink.lock().unwrap().push((ev.kind, ev.object)),
                            _ => return,
                        },
                    }
                }
            });
        });
        ready_rx.recv_timeout(PATIENCE).expect("the watch started");
        Self {
            events,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn events(&self) -> Vec<(String, Value)> {
        self.events.lock().unwrap().clone()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Replay pod events of `selector_label=value`: after each event, how many
/// pods exist (not being deleted) and how many of those are Ready.
fn replay(events: &[(String, Value)], label: (&str, &str)) -> Vec<(usize, usize)> {
    let mut pods: BTreeMap<String, Value> = BTreeMap::new();
    let mut out = Vec::new();
    for (kind, p) in events {
        if p["metadata"]["labels"][label.0] != label.1 {
            continue;
        }
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        if kind == "DELETED" || !p["metadata"]["deletionTimestamp"].is_null() {
            pods.remove(&name);
        } else {
            pods.insert(name, p.clone());
        }
        out.push((pods.len(), pods.values().filter(|p| is_ready(p)).count()));
    }
    out
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox, command: [sleep, '3600']}]
";

fn image_of(c: &Cluster, deploy: &str) -> String {
    c.ok(&[
        "get",
        "deploy",
        deploy,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])
}

#[test]
fn deployment_rolls_out_within_budget_undoes_scales_and_cascades() {
    let (c, _sim) = cluster(3);
    c.apply(WEB);
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let pods = live_pods(&c, "app=web");
    assert_eq!(pods.len(), 4);
    assert!(pods
        .iter()
        .all(|p| p["status"]["phase"] == "Running" && is_ready(p)));
    let rs = json(&c, &["get", "rs", "-l", "app=web"]);
    let first = rs["items"][0].clone();
    assert_eq!(
        first["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        first["metadata"]["ownerReferences"][0]["kind"],
        "Deployment"
    );
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap();
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(pods[0]["metadata"]["labels"]["pod-template-hash"], hash);

    // A new image rolls out. Upstream's maxSurge bounds the ReplicaSets'
    // sizes: the Deployment never asks for more than replicas + maxSurge
    // pods in all (a pod of an old ReplicaSet just scaled down may still
    // run while the new one's is made, in Kubernetes too). A watch of the
    // pods sees never fewer than replicas - maxUnavailable ready ones.
    let watch = Watch::pods(&c);
    let sets = Watch::start(
        &c,
        trellis_client::Resource::new("apps", "v1", "replicasets", true),
    );
    c.ok(&["set", "image", "deploy/web", "c=busybox:2"]);
    let out = c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let events = watch.events();
    let set_events = sets.events();
    drop((watch, sets));
    let mut sizes: BTreeMap<String, i64> = BTreeMap::new();
    let mut asked = Vec::new();
    for (kind, rs) in &set_events {
        let name = rs["metadata"]["name"].as_str().unwrap().to_string();
        if kind == "DELETED" {
            sizes.remove(&name);
        } else {
            sizes.insert(name, rs["spec"]["replicas"].as_i64().unwrap_or(1));
        }
        asked.push(sizes.values().sum::<i64>());
    }
    assert!(asked.len() >= 4, "the watch saw the rollout: {asked:?}");
    assert!(
        asked.iter().all(|&n| n <= 5),
        "at most 4 + maxSurge 1 pods asked for: {asked:?}"
    );
    // From the state when the watch began (the 4 pods listed first) on.
    let seen = replay(&events, ("app", "web"))[3..].to_vec();
    assert!(seen.len() >= 8, "the watch saw the rollout: {seen:?}");
    let min_ready = seen.iter().map(|&(_, ready)| ready).min().unwrap();
    assert!(
        min_ready >= 3,
        "at least 4 - maxUnavailable 1 ready: {seen:?}"
    );
    let pods = live_pods(&c, "app=web");
    assert_eq!(pods.len(), 4);
    assert!(pods
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2"));
    let history = c.ok(&["rollout", "history", "deploy/web"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    // Undo brings the first template back as revision 3.
    c.ok(&["rollout", "undo", "deploy/web"]);
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    assert_eq!(image_of(&c, "web"), "busybox");
    c.eventually("the old ReplicaSet is revision 3", PATIENCE, || {
        let rs = json(
            &c,
            &["get", "rs", first["metadata"]["name"].as_str().unwrap()],
        );
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
            && rs["status"]["readyReplicas"] == 4
    });
    assert_eq!(
        json(&c, &["get", "rs", "-l", "app=web"])["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Scaling up and down.
    c.ok(&["scale", "deploy/web", "--replicas=7"]);
    c.eventually("7 running", PATIENCE, || {
        live_pods(&c, "app=web")
            .iter()
            .filter(|p| is_ready(p))
            .count()
            == 7
    });
    c.ok(&["scale", "deploy/web", "--replicas=2"]);
    c.eventually("2 running", PATIENCE, || {
        live_pods(&c, "app=web").len() == 2
    });
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);

    // Deleting the Deployment removes its ReplicaSets and their pods.
    c.ok(&["delete", "deploy", "web"]);
    c.eventually("ReplicaSets and pods gone", PATIENCE, || {
        c.ok(&["get", "rs,pods", "-l", "app=web", "-o", "name"])
            .trim()
            .is_empty()
    });
}

#[test]
fn daemonset_statefulset_and_namespace_deletion() {
    let (c, _sim) = cluster(3);
    let watch = Watch::pods(&c);
    c.apply(
        "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: busybox, command: [sleep, '3600']}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: c, image: busybox, command: [sleep, '3600']}]
",
    );
    // One daemon pod on every node.
    c.eventually("a daemon pod per node", PATIENCE, || {
        let pods = live_pods(&c, "app=agent");
        let mut nodes: Vec<&str> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .collect();
        nodes.sort();
        nodes.dedup();
        pods.len() == 3 && nodes.len() == 3 && pods.iter().all(is_ready)
    });
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    // Its revisions: a new image rolls out, undo brings the first back.
    c.ok(&["set", "image", "ds/agent", "c=busybox:2"]);
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let history = c.ok(&["rollout", "history", "ds/agent"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    c.ok(&["rollout", "undo", "ds/agent"]);
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    c.eventually("the daemon pods back on the first image", PATIENCE, || {
        let pods = live_pods(&c, "app=agent");
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "busybox" && is_ready(p))
    });
    assert_eq!(
        c.ok(&[
            "get",
            "controllerrevisions",
            "-l",
            "app=agent",
            "-o",
            "name"
        ])
        .lines()
        .count(),
        2,
        "the undo renumbered the first revision rather than adding one"
    );
    // A Service over the daemon pods gets their addresses, as Endpoints and
    // as an EndpointSlice.
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: agent}\nspec:\n  selector: {app: agent}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n");
    let ips: Vec<String> = {
        let mut v: Vec<String> = live_pods(&c, "app=agent")
            .iter()
            .map(|p| p["status"]["podIP"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    c.eventually("Endpoints and an EndpointSlice", PATIENCE, || {
        let ep = json(&c, &["get", "endpoints", "agent"]);
        let mut got: Vec<String> = ep["subsets"][0]["addresses"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a["ip"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        got.sort();
        got.dedup();
        let slices = json(
            &c,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=agent",
            ],
        );
        let slice = &slices["items"][0];
        got == ips
            && ep["subsets"][0]["ports"][0]["port"] == 8080
            && slice["endpoints"].as_array().is_some_and(|e| e.len() == 3)
            && slice["ports"][0]["port"] == 8080
            && slice["metadata"]["ownerReferences"][0]["kind"] == "Service"
    });
    // StatefulSet pods web-0.. in order, each after the one before is Ready.
    c.ok(&["rollout", "status", "sts/db", "--timeout=60s"]);
    let events = watch.events();
    drop(watch);
    let mut created = Vec::new();
    let mut ready_before: BTreeMap<String, bool> = BTreeMap::new();
    let mut ready: BTreeMap<String, bool> = BTreeMap::new();
    for (kind, p) in &events {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        if !name.starts_with("db-") {
            continue;
        }
        if kind == "ADDED" {
            // Ready state of the previous ordinal when this one appeared.
            let ord: usize = name[3..].parse().unwrap();
            let prev_ready = ord == 0
                || ready
                    .get(&format!("db-{}", ord - 1))
                    .copied()
                    .unwrap_or(false);
            ready_before.insert(name.clone(), prev_ready);
            created.push(name.clone());
        }
        ready.insert(name, is_ready(p));
    }
    assert_eq!(created, ["db-0", "db-1", "db-2"], "created in order");
    assert!(
        ready_before.values().all(|r| *r),
        "each after the previous was Ready: {ready_before:?}"
    );
    let pod = json(&c, &["get", "pod", "db-1"]);
    assert_eq!(
        pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-1"
    );
    assert_eq!(pod["spec"]["hostname"], "db-1");
    assert_eq!(pod["spec"]["subdomain"], "db");

    // Deleting a namespace removes what is in it, then the namespace.
    c.ok(&["create", "namespace", "team"]);
    c.eventually("the default ServiceAccount", PATIENCE, || {
        c.kubectl(&["get", "sa", "default", "-n", "team"]).0 == 0
    });
    c.apply(&format!("{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: team}}\ndata: {{a: b}}\n", WEB.replace("name: web}", "name: web, namespace: team}")));
    c.eventually("pods in team", PATIENCE, || {
        c.ok(&["get", "pods", "-n", "team", "-o", "name"])
            .lines()
            .count()
            == 4
    });
    c.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    c.eventually("namespace gone", PATIENCE, || {
        c.kubectl(&["get", "ns", "team"]).0 != 0
    });
    for kind in [
        "pods",
        "configmaps",
        "deployments",
        "replicasets",
        "serviceaccounts",
    ] {
        let out = c.ok(&["get", kind, "-n", "team", "-o", "name"]);
        assert!(out.trim().is_empty(), "{kind} left: {out}");
    }
}

#[test]
fn a_node_that_stops_heartbeating_loses_its_pods() {
    let (c, _sim) = cluster(2);
    c.eventually("node-lifecycle runs", PATIENCE, || {
        !c.kubectl(&[
            "get",
            "plugin",
            "node-lifecycle",
            "-o",
            "jsonpath={.status.controller.digest}",
        ])
        .1
        .is_empty()
    });
    // Short grace periods for the test, applied to the running controller.
    c.ok(&[
        "patch",
        "plugin",
        "node-lifecycle",
        "--type=merge",
        "-p",
        r#"{"spec":{"config":{"nodeMonitorGracePeriod":"15s","defaultTolerationSeconds":1}}}"#,
    ]);
    let doomed = c.spawn(&["sim", "nodes", "--count", "1", "--prefix", "doomed"]);
    c.eventually("the third node is Ready", PATIENCE, || {
        c.kubectl(&["get", "node", "doomed-00001", "--no-headers"])
            .1
            .contains(" Ready ")
    });
    c.eventually("node-lifecycle reconfigured", PATIENCE, || {
        c.ok(&[
            "get",
            "plugin",
            "node-lifecycle",
            "-o",
            "jsonpath={.status.controller.swaps}",
        ]) == "1"
    });
    c.apply(
        "apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 3
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: spread}}}
      containers: [{name: c, image: busybox, command: [sleep, '3600']}]
",
    );
    c.ok(&["rollout", "status", "deploy/spread", "--timeout=60s"]);
    let on = |node: &str| {
        live_pods(&c, "app=spread")
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .count()
    };
    assert_eq!(on("doomed-00001"), 1, "one pod per node");
    drop(doomed);
    c.eventually(
        "the silent node is NotReady and tainted",
        Duration::from_secs(90),
        || {
            let node = json(&c, &["get", "node", "doomed-00001"]);
            let ready = node["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "Ready")
                .unwrap()
                .clone();
            ready["status"] == "Unknown"
                && node["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter().any(|t| {
                        t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
                    })
                })
        },
    );
    c.eventually(
        "its pod moved to the live nodes",
        Duration::from_secs(90),
        || {
            let pods = live_pods(&c, "app=spread");
            pods.len() == 3
                && pods
                    .iter()
                    .all(|p| p["spec"]["nodeName"] != "doomed-00001" && is_ready(p))
        },
    );
}

#[test]
fn swapping_the_deployment_controller_mid_rollout_completes_it() {
    let (c, _sim) = cluster(3);
    let slow = WEB
        .replace("replicas: 4", "replicas: 6\n  minReadySeconds: 1")
        .replace(
            "maxSurge: 1, maxUnavailable: 1",
            "maxSurge: 0, maxUnavailable: 1",
        );
    c.apply(&slow);
    c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    c.ok(&["set", "image", "deploy/web", "c=busybox:2"]);
    c.eventually("the rollout has begun", PATIENCE, || {
        json(&c, &["get", "deploy", "web"])["status"]["updatedReplicas"]
            .as_i64()
            .unwrap_or(0)
            >= 1
    });
    // A new version of the controller, applied as its bytes inline.
    use base64::Engine as _;
    let wasm = std::fs::read(trellis_testkit::plugin_dir().join("deployment.wasm")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(wasm);
    let plugin = json(&c, &["get", "plugin", "deployment"]);
    let grants = serde_json::to_string(&plugin["spec"]["grants"]).unwrap();
    let manifest = format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: deployment}}\nspec:\n  role: controller\n  source: {{wasm: {b64}}}\n  grants: {grants}\n"
    );
    let (code, _, err) = c.kubectl_stdin(&["replace", "-f", "-"], Some(&manifest));
    assert_eq!(code, 0, "{err}");
    let updated = json(&c, &["get", "deploy", "web"])["status"]["updatedReplicas"]
        .as_i64()
        .unwrap_or(0);
    assert!(
        updated < 6,
        "swapped before the rollout ended ({updated} of 6 updated)"
    );
    let out = c.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    c.eventually("the swap is recorded", PATIENCE, || {
        let p = json(&c, &["get", "plugin", "deployment"]);
        p["status"]["controller"]["swaps"] == 1
    });
    let pods = live_pods(&c, "app=web");
    assert_eq!(pods.len(), 6);
    assert!(pods
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "busybox:2"));
}

#[test]
fn a_broken_controller_version_never_replaces_the_running_one() {
    let (c, _sim) = cluster(1);
    let (code, _, err) = c.kubectl_stdin(
        &["replace", "-f", "-"],
        Some("apiVersion: trellis.dev/v1alpha1\nkind: Plugin\nmetadata: {name: replicaset}\nspec:\n  role: controller\n  source: {wasm: AGFzbQEAAAA=}\n"),
    );
    assert_eq!(code, 0, "{err}");
    c.eventually("the Plugin says why", PATIENCE, || {
        let p = json(&c, &["get", "plugin", "replicaset"]);
        p["status"]["conditions"][0]["reason"] == "LoadFailed"
            && p["status"]["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("previous version keeps running"))
    });
    // ReplicaSets still work.
    c.apply(&WEB.replace("replicas: 4", "replicas: 2"));
    c.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
}

#[test]
fn the_example_controller_hot_loads_and_unloads() {
    let (c, _sim) = cluster(1);
    let root = trellis_testkit::repo_root();
    let manifest = root.join("examples/controllers/config-hash/plugin.yaml");
    c.apply(
        "apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {greeting: hello}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
  annotations: {trellis.dev/config-hash: enabled}
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: c
        image: busybox
        command: [sleep, '3600']
        envFrom: [{configMapRef: {name: app-config}}]
",
    );
    c.ok(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    c.ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let hash = || {
        c.ok(&[
            "get",
            "deploy",
            "app",
            "-o",
            "jsonpath={.spec.template.metadata.annotations.trellis\\.dev/config-hash}",
        ])
    };
    c.eventually("the loaded controller stamps the hash", PATIENCE, || {
        !hash().is_empty()
    });
    let first = hash();
    c.ok(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    c.ok(&[
        "patch",
        "configmap",
        "app-config",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"hi"}}"#,
    ]);
    c.eventually("a config change rolls the Deployment", PATIENCE, || {
        let h = hash();
        !h.is_empty() && h != first
    });
    c.ok(&["rollout", "status", "deploy/app", "--timeout=60s"]);
    assert_eq!(
        c.ok(&["get", "rs", "-l", "app=app", "-o", "name"])
            .lines()
            .count(),
        3,
        "one ReplicaSet per template"
    );
    // Unloaded, it no longer acts.
    c.ok(&["delete", "plugin", "config-hash"]);
    std::thread::sleep(Duration::from_secs(1));
    let before = hash();
    c.ok(&[
        "patch",
        "configmap",
        "app-config",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"hey"}}"#,
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hash(), before, "a deleted controller does not run");
}

#[test]
fn a_cron_job_starts_jobs_on_schedule() {
    let (c, _sim) = cluster(1);
    c.apply(
        "apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: '* * * * *'
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: c, image: busybox, command: [sleep, '3600']}]
",
    );
    // The next minute starts a Job named after its scheduled time, whose
    // pods the job controller makes; Forbid keeps it the only one.
    c.eventually("a Job from the schedule", Duration::from_secs(90), || {
        let jobs = json(&c, &["get", "jobs"]);
        jobs["items"].as_array().is_some_and(|j| j.len() == 1)
    });
    let job = json(&c, &["get", "jobs"])["items"][0].clone();
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let minutes: i64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    let scheduled = job["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        trellis_types::time::parse_rfc3339(&scheduled),
        Some(minutes * 60),
        "named after its scheduled minute"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    c.eventually("the CronJob reports it active", PATIENCE, || {
        let cj = json(&c, &["get", "cronjob", "tick"]);
        cj["status"]["active"][0]["name"] == name.as_str()
            && cj["status"]["lastScheduleTime"] == scheduled.as_str()
    });
    c.eventually("its pod runs", PATIENCE, || {
        live_pods(&c, &format!("batch.kubernetes.io/job-name={name}")).len() == 1
    });
}
