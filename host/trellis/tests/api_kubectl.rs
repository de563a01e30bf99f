//! The API server through the real kubectl, as a user drives it.

mod common;

use std::time::Duration;

use common::Cluster;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web, tier: front}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
"#;

fn system_namespaces_exist_and_tables_print(c: Cluster) {
    let out = c.ok(&["get", "namespaces"]);
    assert!(out.starts_with("NAME"), "{out}");
    for ns in ["default", "kube-system"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(ns) && l.contains("Active")),
            "{out}"
        );
    }
    let out = c.ok(&["get", "ns", "default", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(out, "Active");
}

fn apply_creates_then_configures(c: Cluster) {
    let out = c.apply(DEPLOYMENT);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    let out = c.apply(
        &DEPLOYMENT
            .replace("replicas: 2", "replicas: 3")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    let out = c.apply(
        &DEPLOYMENT
            .replace("replicas: 2", "replicas: 3")
            .replace("nginx:1.25", "nginx:1.26"),
    );
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let d = c.object("deployment", "web");
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(d["metadata"]["generation"], 2);
    // Defaulting as upstream.
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    let yaml = c.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("image: nginx:1.26"),
        "{yaml}"
    );
}

fn get_with_label_and_field_selectors(c: Cluster) {
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        c.ok(&[
            "create",
            "configmap",
            name,
            &format!("--from-literal=k={name}"),
        ]);
        c.ok(&["label", "configmap", name, &format!("app={app}")]);
    }
    let out = c.ok(&["get", "cm", "-l", "app=web", "-o", "name"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["configmap/a", "configmap/b"]
    );
    let out = c.ok(&["get", "cm", "-l", "app in (db)", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/c");
    let out = c.ok(&[
        "get",
        "cm",
        "--field-selector",
        "metadata.name=b",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "configmap/b");
    let (code, _, err) = c.kubectl(&["get", "cm", "--field-selector", "data.k=a"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("\"data.k\" is not a known field selector"),
        "{err}"
    );
}

fn patch_label_annotate_scale(c: Cluster) {
    c.apply(DEPLOYMENT);
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ]);
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    c.ok(&[
        "patch",
        "deployment",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    c.ok(&["label", "deployment", "web", "team=blue"]);
    c.ok(&["annotate", "deployment", "web", "owner=alice"]);
    let d = c.object("deployment", "web");
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(
        containers.len(),
        1,
        "strategic merge keeps one container by name"
    );
    assert_eq!(containers[0]["image"], "nginx:1.27");
    assert_eq!(containers[0]["ports"][0]["containerPort"], 80);
    assert_eq!(d["metadata"]["labels"]["patched"], "merge");
    assert_eq!(d["metadata"]["labels"]["team"], "blue");
    assert_eq!(d["metadata"]["annotations"]["owner"], "alice");
    assert_eq!(d["spec"]["replicas"], 4);
    let out = c.ok(&["scale", "deployment", "web", "--replicas", "7"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(
        c.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "7"
    );
}

fn describe_shows_an_object(c: Cluster) {
    c.apply(DEPLOYMENT);
    let out = c.ok(&["describe", "deployment", "web"]);
    assert!(out.contains("Name:") && out.contains("web"), "{out}");
    assert!(out.contains("nginx:1.25"), "{out}");
}

fn delete_by_name_label_and_all(c: Cluster) {
    for n in ["a", "b", "c", "d"] {
        c.ok(&["create", "configmap", n]);
    }
    c.ok(&["label", "cm", "b", "drop=yes"]);
    let out = c.ok(&["delete", "configmap", "a"]);
    assert!(out.contains("configmap \"a\" deleted"), "{out}");
    c.ok(&["delete", "cm", "-l", "drop=yes"]);
    let left = c.ok(&["get", "cm", "-o", "name"]);
    assert_eq!(
        left.lines().collect::<Vec<_>>(),
        vec!["configmap/c", "configmap/d"]
    );
    c.ok(&["delete", "cm", "--all"]);
    let (code, out, err) = c.kubectl(&["get", "cm"]);
    assert_eq!(code, 0);
    assert!(
        out.is_empty() && err.contains("No resources found"),
        "{out}{err}"
    );
    let (code, _, err) = c.kubectl(&["get", "cm", "a"]);
    assert_ne!(code, 0);
    assert!(err.contains("configmaps \"a\" not found"), "{err}");
}

fn deleting_a_namespace_deletes_its_content(c: Cluster) {
    c.ok(&["create", "namespace", "team-a"]);
    c.ok(&["create", "configmap", "cfg", "-n", "team-a"]);
    c.apply(&DEPLOYMENT.replace("name: web", "name: web\n  namespace: team-a"));
    c.ok(&[
        "delete",
        "namespace",
        "team-a",
        "--wait=true",
        "--timeout=30s",
    ]);
    c.eventually("namespace gone", Duration::from_secs(30), || {
        c.kubectl(&["get", "ns", "team-a"]).0 != 0
    });
    let body = c.get_json("/api/v1/namespaces/team-a/configmaps");
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
    let body = c.get_json("/apis/apps/v1/namespaces/team-a/deployments");
    assert_eq!(body["items"].as_array().unwrap().len(), 0);
    // Creating in a namespace that does not exist is refused.
    let (code, _, err) = c.kubectl(&["create", "configmap", "x", "-n", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("namespaces \"nope\" not found"), "{err}");
}

fn api_resources_and_explain(c: Cluster) {
    let out = c.ok(&["api-resources"]);
    for needle in [
        "pods",
        "deployments",
        "leases",
        "endpointslices",
        "plugins",
        "schedulerprofiles",
        "admissionchains",
        "horizontalpodautoscalers",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(needle)),
            "{needle} missing:\n{out}"
        );
    }
    let out = c.ok(&["explain", "deployment.spec.replicas"]);
    assert!(out.contains("replicas") && out.contains("integer"), "{out}");
    let out = c.ok(&["explain", "pods"]);
    assert!(out.contains("KIND:") && out.contains("Pod"), "{out}");
}

fn watch_prints_changes(c: Cluster) {
    c.ok(&["create", "configmap", "w1"]);
    let mut child = std::process::Command::new(common::kubectl_binary())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .args(["get", "configmaps", "-w", "--request-timeout=0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    c.ok(&["create", "configmap", "w2"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with("w1")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("w2")), "{text}");
}

#[test]
fn stops_cleanly_on_sigterm() {
    let mut c = Cluster::up();
    c.ok(&["create", "configmap", "kept"]);
    assert!(c.stop(), "trellis did not exit cleanly:\n{}", c.output());
    assert!(c.output().contains("trellis: stopped"), "{}", c.output());
    // State survives a restart on the same data dir.
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir().unwrap());
    let c2 = Cluster::start(&["up"], Some(dir));
    assert_eq!(
        c2.ok(&["get", "cm", "kept", "-o", "name"]).trim(),
        "configmap/kept"
    );
}

common::on_both_stores!(
    every_kind_applies_reads_and_deletes,
    system_namespaces_exist_and_tables_print,
    apply_creates_then_configures,
    get_with_label_and_field_selectors,
    patch_label_annotate_scale,
    describe_shows_an_object,
    delete_by_name_label_and_all,
    deleting_a_namespace_deletes_its_content,
    api_resources_and_explain,
    watch_prints_changes,
    create_deployment_sends_protobuf_and_gets_upstreams_object,
    create_service_and_expose_send_protobuf,
    create_job_and_cronjob_send_protobuf,
    services_get_cluster_ips_and_node_ports,
    priority_classes_set_pods_priority
);

/// `--service-cluster-ip-range` and `--service-node-port-range` bound what
/// Services get: every address and port once, then a clear refusal; a
/// delete gives one back.
#[test]
fn a_small_service_range_fills_up_then_frees() {
    let c = Cluster::start(
        &[
            "up",
            "--service-cluster-ip-range=10.0.0.0/29",
            "--service-node-port-range=30000-30002",
        ],
        None,
    );
    // 6 usable addresses, the first the kubernetes Service's.
    assert_eq!(
        c.object("service", "kubernetes")["spec"]["clusterIP"],
        "10.0.0.1"
    );
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..5 {
        let name = format!("s{i}");
        c.ok(&["create", "service", "clusterip", &name, "--tcp=80:80"]);
        ips.insert(
            c.object("service", &name)["spec"]["clusterIP"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let expected: std::collections::BTreeSet<String> =
        (2..=6).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(ips, expected);
    let (code, _, err) = c.kubectl(&["create", "service", "clusterip", "full", "--tcp=80:80"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("failed to allocate a serviceIP: range is full (10.0.0.0/29)"),
        "{err}"
    );
    c.ok(&["delete", "service", "s3"]);
    c.ok(&["create", "service", "clusterip", "full", "--tcp=80:80"]);
    assert_eq!(
        c.object("service", "full")["spec"]["clusterIP"],
        c.object("service", "full")["spec"]["clusterIPs"][0]
    );

    // Three node ports: one service with two ports, one with one, then none
    // left (the addresses they need come from two services deleted).
    c.ok(&["delete", "service", "s0", "s1"]);
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: two, namespace: default}\nspec:\n  type: NodePort\n  ports: [{name: a, port: 80}, {name: b, port: 81}]\n",
    );
    let (code, _, err) = c.kubectl(&["create", "service", "nodeport", "np", "--tcp=80:80"]);
    assert_eq!(code, 0, "{err}");
    let mut ports: Vec<u64> = c.object("service", "two")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .chain(
            c.object("service", "np")["spec"]["ports"]
                .as_array()
                .unwrap(),
        )
        .map(|p| p["nodePort"].as_u64().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, [30000, 30001, 30002]);
    c.ok(&["delete", "service", "s2"]);
    let (code, _, err) = c.kubectl(&["create", "service", "nodeport", "np2", "--tcp=80:80"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("failed to allocate a nodePort: range is full (30000-30002)"),
        "{err}"
    );
}

/// PriorityClasses as upstream serves them, and a pod's priority from its
/// class, the global default's, or 0, as the Priority admission sets it.
fn priority_classes_set_pods_priority(c: Cluster) {
    let table = c.ok(&["get", "priorityclasses"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("system-node-critical") && l.contains("2000001000")),
        "{table}"
    );
    assert!(table.contains("system-cluster-critical"), "{table}");
    let pod = |name: &str, extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{extra}  containers: [{{name: c, image: busybox}}]\n"
        )
    };
    let priority = |name: &str| {
        c.ok(&[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.spec.priority} {.spec.priorityClassName} {.spec.preemptionPolicy}",
        ])
    };
    c.apply(&pod("plain", ""));
    assert_eq!(priority("plain"), "0  PreemptLowerPriority");

    c.ok(&[
        "create",
        "priorityclass",
        "high",
        "--value=1000",
        "--description=batch",
        "--preemption-policy=Never",
    ]);
    let high = c.object("priorityclass", "high");
    assert_eq!(high["value"], 1000, "{high}");
    assert_eq!(high["preemptionPolicy"], "Never", "{high}");
    c.apply(&pod("urgent", "  priorityClassName: high\n"));
    assert_eq!(priority("urgent"), "1000 high Never");

    c.ok(&[
        "create",
        "priorityclass",
        "normal",
        "--value=10",
        "--global-default",
    ]);
    c.apply(&pod("defaulted", ""));
    assert_eq!(priority("defaulted"), "10 normal PreemptLowerPriority");

    let refused = |manifest: String, expected: &str| {
        let (code, out, err) = c.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest));
        assert_ne!(code, 0, "accepted: {out}");
        assert!(err.contains(expected), "{err}");
    };
    refused(
        pod("lost", "  priorityClassName: nope\n"),
        "pods \"lost\" is forbidden: no PriorityClass with name nope was found",
    );
    refused(
        pod("forged", "  priority: 7\n"),
        "the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 10",
    );
    let (code, _, err) = c.kubectl(&["create", "priorityclass", "system-mine", "--value=5"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("priority class names with 'system-' prefix are reserved"),
        "{err}"
    );
    let (code, _, err) = c.kubectl(&["create", "priorityclass", "huge", "--value=2000000000"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("maximum allowed value of a user defined priority is 1000000000"),
        "{err}"
    );
    let (code, _, err) = c.kubectl(&["patch", "priorityclass", "high", "-p", r#"{"value":5}"#]);
    assert_ne!(code, 0);
    assert!(
        err.contains("value: Invalid value: 5: field is immutable"),
        "{err}"
    );
}

/// Services get a cluster IP from 10.96.0.0/12 and node ports from
/// 30000-32767 as from kube-apiserver: each at most once, kept across
/// updates, freed on delete; `default/kubernetes` has the first address.
fn services_get_cluster_ips_and_node_ports(c: Cluster) {
    let spec = |name: &str| c.object("service", name)["spec"].clone();
    let fails = |args: &[&str], expected: &str| {
        let (code, out, err) = c.kubectl(args);
        assert_ne!(code, 0, "{args:?} succeeded: {out}");
        assert!(err.contains(expected), "{args:?}: {err}");
    };
    let in_range = |ip: &str| {
        let ip: std::net::Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("{ip:?}"));
        u32::from(ip) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20
    };

    let k = c.object("service", "kubernetes");
    assert_eq!(k["spec"]["clusterIP"], "10.96.0.1", "{k}");
    assert_eq!(k["spec"]["ports"][0]["port"], 443, "{k}");
    let ep = c.object("endpoints", "kubernetes");
    let kubeconfig = std::fs::read_to_string(c.kubeconfig()).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap_or_else(|| panic!("no server in {kubeconfig}"));
    let port: u16 = server.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], port, "{ep}");
    let table = c.ok(&["get", "svc", "kubernetes"]);
    assert!(
        table.contains("10.96.0.1") && table.contains("443/TCP"),
        "{table}"
    );

    c.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let s = spec("web");
    let ip = s["clusterIP"].as_str().unwrap().to_string();
    assert!(in_range(&ip) && ip != "10.96.0.1", "{s}");
    assert_eq!(s["clusterIPs"], serde_json::json!([ip]), "{s}");
    assert!(c.ok(&["get", "svc", "web"]).contains(&ip));

    // Asked for by hand: once, in the range.
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "fixed",
        "--tcp=80:80",
        "--clusterip=10.96.0.10",
    ]);
    assert_eq!(spec("fixed")["clusterIP"], "10.96.0.10");
    fails(
        &[
            "create",
            "service",
            "clusterip",
            "dup",
            "--tcp=80:80",
            "--clusterip=10.96.0.10",
        ],
        "failed to allocate IP 10.96.0.10: provided IP is already allocated",
    );
    fails(
        &[
            "create",
            "service",
            "clusterip",
            "far",
            "--tcp=80:80",
            "--clusterip=10.200.0.10",
        ],
        "provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12",
    );
    // Deleting frees it.
    c.ok(&["delete", "service", "fixed"]);
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "again",
        "--tcp=80:80",
        "--clusterip=10.96.0.10",
    ]);

    // Headless and ExternalName get none.
    c.ok(&[
        "create",
        "service",
        "clusterip",
        "headless",
        "--tcp=80:80",
        "--clusterip=None",
    ]);
    assert_eq!(spec("headless")["clusterIP"], "None");
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ]);
    assert!(spec("ext").get("clusterIP").is_none());

    // Node ports.
    c.ok(&["create", "service", "nodeport", "np", "--tcp=8080:80"]);
    let np = spec("np");
    let node_port = np["ports"][0]["nodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{np}");
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "fixed-np",
        "--tcp=80:80",
        "--node-port=30080",
    ]);
    fails(
        &[
            "create",
            "service",
            "nodeport",
            "dup-np",
            "--tcp=80:80",
            "--node-port=30080",
        ],
        "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
    );
    fails(
        &[
            "create",
            "service",
            "nodeport",
            "low-np",
            "--tcp=80:80",
            "--node-port=3000",
        ],
        "provided port is not in the valid range. The range of valid ports is 30000-32767",
    );

    // Updates: the cluster IP never changes; what an update leaves out is kept.
    fails(
        &[
            "patch",
            "service",
            "web",
            "-p",
            r#"{"spec":{"clusterIP":"10.96.0.99"}}"#,
        ],
        "may not change once set",
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: np}}\nspec:\n  type: NodePort\n  \
         selector: {{app: np}}\n  ports: [{{port: 8080, targetPort: 80}}]\n"
    );
    let (code, out, err) = c.kubectl_stdin(&["replace", "-f", "-"], Some(&manifest));
    assert_eq!(code, 0, "{out}{err}");
    let np2 = spec("np");
    assert_eq!(np2["clusterIP"], np["clusterIP"], "{np2}");
    assert_eq!(np2["ports"][0]["nodePort"], node_port, "{np2}");
    // A type without node ports drops them, and frees them.
    c.ok(&[
        "patch",
        "service",
        "fixed-np",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert!(spec("fixed-np")["ports"][0].get("nodePort").is_none());
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "reuse-np",
        "--tcp=80:80",
        "--node-port=30080",
    ]);

    // Ten creates racing for one address: exactly one gets it.
    let results: Vec<i32> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let c = &c;
                s.spawn(move || {
                    let name = format!("race-{i}");
                    c.kubectl(&[
                        "create",
                        "service",
                        "clusterip",
                        &name,
                        "--tcp=80:80",
                        "--clusterip=10.96.0.20",
                    ])
                    .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        results.iter().filter(|c| **c == 0).count(),
        1,
        "{results:?}"
    );
    let ips: Vec<String> = c
        .ok(&[
            "get",
            "services",
            "-o",
            "jsonpath={range .items[*]}{.spec.clusterIP}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|l| !l.is_empty() && *l != "None")
        .map(str::to_string)
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ips.iter().collect();
    assert_eq!(
        distinct.len(),
        ips.len(),
        "a cluster IP given twice: {ips:?}"
    );
}

/// `kubectl create job|cronjob` send protobuf too; `--from=cronjob/NAME`
/// adds an owner reference.
fn create_job_and_cronjob_send_protobuf(c: Cluster) {
    c.ok(&[
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    let j = c.object("job", "once");
    let pod = &j["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never", "{j}");
    assert_eq!(
        pod["containers"][0]["command"],
        serde_json::json!(["echo", "hi"]),
        "{j}"
    );
    c.ok(&[
        "create",
        "cronjob",
        "tick",
        "--image=busybox",
        "--schedule=*/5 * * * *",
        "--",
        "echo",
        "tick",
    ]);
    let cj = c.object("cronjob", "tick");
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *", "{cj}");
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"], "OnFailure",
        "{cj}"
    );
    c.ok(&["create", "job", "manual", "--from=cronjob/tick"]);
    let m = c.object("job", "manual");
    let owner = &m["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "CronJob", "{m}");
    assert_eq!(owner["name"], "tick", "{m}");
    assert_eq!(owner["uid"], cj["metadata"]["uid"], "{m}");
    assert_eq!(owner["apiVersion"], "batch/v1", "{m}");
    assert_eq!(owner["controller"], true, "{m}");
}

/// `kubectl create service` and `kubectl expose` send the Service as
/// protobuf too.
fn create_service_and_expose_send_protobuf(c: Cluster) {
    let spec = |name: &str| c.object("service", name)["spec"].clone();
    c.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let s = spec("web");
    assert_eq!(s["type"], "ClusterIP", "{s}");
    assert_eq!(s["selector"]["app"], "web", "{s}");
    assert_eq!(
        s["ports"],
        serde_json::json!([{"name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080}]),
        "{s}"
    );
    c.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=8080:http",
        "--node-port=30080",
    ]);
    let s = spec("np");
    assert_eq!(s["type"], "NodePort", "{s}");
    assert_eq!(s["ports"][0]["targetPort"], "http", "{s}");
    assert_eq!(s["ports"][0]["nodePort"], 30080, "{s}");
    c.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name=example.com",
    ]);
    assert_eq!(spec("ext")["externalName"], "example.com");
    c.ok(&["create", "deployment", "app", "--image=busybox"]);
    c.ok(&[
        "expose",
        "deployment",
        "app",
        "--port=80",
        "--target-port=8080",
    ]);
    let s = spec("app");
    assert_eq!(s["selector"]["app"], "app", "{s}");
    assert_eq!(s["ports"][0]["targetPort"], 8080, "{s}");
}

/// `kubectl create deployment` sends its object as protobuf (client-go never
/// falls back to JSON): the server decodes it into the object upstream
/// stores, defaults included.
fn create_deployment_sends_protobuf_and_gets_upstreams_object(c: Cluster) {
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--port=8080",
        "--",
        "sleep",
        "3600",
    ]);
    let d = c.object("deployment", "web");
    assert_eq!(d["metadata"]["labels"]["app"], "web", "{d}");
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d}");
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate", "{d}");
    let t = &d["spec"]["template"];
    assert_eq!(t["metadata"]["labels"]["app"], "web", "{d}");
    let c0 = &t["spec"]["containers"][0];
    assert_eq!(c0["name"], "busybox", "{d}");
    assert_eq!(c0["image"], "busybox", "{d}");
    assert_eq!(c0["command"], serde_json::json!(["sleep", "3600"]), "{d}");
    assert_eq!(
        c0["ports"],
        serde_json::json!([{"containerPort": 8080, "protocol": "TCP"}]),
        "{d}"
    );
    assert_eq!(t["spec"]["restartPolicy"], "Always", "{d}");
    // Several images: one container each, named after the image.
    c.ok(&[
        "create",
        "deployment",
        "two",
        "--image=busybox",
        "--image=nginx",
    ]);
    let names = c.ok(&[
        "get",
        "deployment",
        "two",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert_eq!(names.trim(), "busybox nginx");
}

/// (resource for kubectl, name, namespace or "") of every object in
/// examples/manifests/every-kind.yaml.
const EVERY_KIND: &[(&str, &str, &str)] = &[
    ("namespace", "tour", ""),
    ("node", "tour-node", ""),
    ("pod", "web", "tour"),
    ("service", "web", "tour"),
    ("endpoints", "web", "tour"),
    ("configmap", "settings", "tour"),
    ("secret", "creds", "tour"),
    ("serviceaccount", "robot", "tour"),
    ("event", "web.1", "tour"),
    ("resourcequota", "quota", "tour"),
    ("limitrange", "limits", "tour"),
    ("persistentvolume", "tour-pv", ""),
    ("persistentvolumeclaim", "data", "tour"),
    ("deployment.apps", "web", "tour"),
    ("replicaset.apps", "web-rs", "tour"),
    ("daemonset.apps", "agent", "tour"),
    ("statefulset.apps", "db", "tour"),
    ("job.batch", "once", "tour"),
    ("cronjob.batch", "nightly", "tour"),
    ("lease.coordination.k8s.io", "leader", "tour"),
    ("priorityclass.scheduling.k8s.io", "tour-high", ""),
    ("horizontalpodautoscaler.autoscaling", "web", "tour"),
    ("role.rbac.authorization.k8s.io", "reader", "tour"),
    ("rolebinding.rbac.authorization.k8s.io", "reader", "tour"),
    ("clusterrole.rbac.authorization.k8s.io", "tour-reader", ""),
    (
        "clusterrolebinding.rbac.authorization.k8s.io",
        "tour-reader",
        "",
    ),
    ("endpointslice.discovery.k8s.io", "web-abc", "tour"),
    ("plugin.trellis.dev", "zone-maintenance", ""),
    ("schedulerprofile.trellis.dev", "tour-scheduler", ""),
    ("admissionchain.trellis.dev", "tour-chain", ""),
];

fn every_kind_applies_reads_and_deletes(c: Cluster) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/manifests/every-kind.yaml");
    let manifest = std::fs::read_to_string(&path).unwrap();
    let out = c.apply(&manifest);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" created")).count(),
        EVERY_KIND.len(),
        "{out}"
    );
    for (resource, name, ns) in EVERY_KIND {
        let mut args = vec!["get", resource, name];
        if !ns.is_empty() {
            args.extend(["-n", ns]);
        }
        let table = c.ok(&args);
        assert!(
            table.starts_with("NAME") || table.starts_with("LAST SEEN"),
            "{resource}: {table}"
        );
        // Events print no NAME column, as upstream.
        assert!(
            *resource == "event" || table.contains(name),
            "{resource}: {table}"
        );
        args.extend(["-o", "json"]);
        let obj: serde_json::Value = serde_json::from_str(&c.ok(&args)).unwrap();
        assert_eq!(obj["metadata"]["name"], *name, "{resource}");
        assert!(
            obj["metadata"]["uid"].is_string() && obj["metadata"]["resourceVersion"].is_string(),
            "{resource}: {obj}"
        );
    }
    // Defaulting and conversions visible in stored objects.
    let secret: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "secret", "creds", "-n", "tour", "-o", "json"]))
            .unwrap();
    assert_eq!(
        secret["data"]["password"], "aHVudGVyMg==",
        "stringData is merged into data"
    );
    let svc: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "svc", "web", "-n", "tour", "-o", "json"])).unwrap();
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
    // Applying the same manifest again changes nothing, except the Secret:
    // stringData is folded into data, so kubectl sees it as new each time,
    // exactly as with upstream.
    let out = c.apply(&manifest);
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" unchanged")).count(),
        EVERY_KIND.len() - 1,
        "{out}"
    );
    assert!(out.contains("secret/creds configured"), "{out}");
    // Deleting the namespace removes its content first, so the rest may be gone already.
    let (code, out, err) = c.kubectl_stdin(
        &["delete", "-f", "-", "--wait=false", "--ignore-not-found"],
        Some(&manifest),
    );
    assert_eq!(code, 0, "{out}{err}");
    for (resource, name, ns) in EVERY_KIND.iter().filter(|(_, _, ns)| ns.is_empty()) {
        if *resource == "namespace" {
            continue;
        }
        let _ = ns;
        c.eventually(
            &format!("{resource} {name} deleted"),
            Duration::from_secs(20),
            || c.kubectl(&["get", resource, name]).0 != 0,
        );
    }
    c.eventually("namespace tour deleted", Duration::from_secs(30), || {
        c.kubectl(&["get", "ns", "tour"]).0 != 0
    });
}
