use super::*;
use trellis_sdk::controller::fake::FakeCluster;

fn settle(c: &FakeCluster) {
    c.settle(&EndpointsController::info(), |c, k| reconcile(c, &k))
        .unwrap();
}

fn web_service(c: &FakeCluster) {
    c.put(
        &service(),
        json!({"metadata": {"name": "web", "namespace": "default", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                                  {"name": "metrics", "port": 9090, "targetPort": 9090}]}}),
    );
}

fn run_pod(c: &FakeCluster, name: &str, ip: &str, ready: bool, container_port: i64) {
    c.put(
        &pod(),
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                   {"name": "http", "containerPort": container_port, "protocol": "TCP"}]}]},
               "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                          "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                          "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}),
    );
}

fn ips(subset: &Value, field: &str) -> Vec<String> {
    subset[field]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["ip"].as_str().unwrap().to_string())
        .collect()
}

fn ep(c: &FakeCluster) -> Value {
    c.object(&endpoints(), "default", "web")
        .expect("the Endpoints")
}

#[test]
fn ready_and_not_ready_pods_with_named_target_ports() {
    let c = FakeCluster::new();
    web_service(&c);
    run_pod(&c, "web-1", "10.0.0.2", true, 8080);
    run_pod(&c, "web-0", "10.0.0.1", true, 8080);
    run_pod(&c, "web-2", "10.0.0.3", false, 8080);
    // serves `http` on another port: its own subset
    run_pod(&c, "web-3", "10.0.0.4", true, 8081);
    // no IP yet, terminal, or not selected: left out
    c.put(
        &pod(),
        json!({"metadata": {"name": "web-4", "namespace": "default", "labels": {"app": "web"}},
                         "status": {"phase": "Pending"}}),
    );
    c.put(
        &pod(),
        json!({"metadata": {"name": "web-5", "namespace": "default", "labels": {"app": "web"}},
                         "status": {"phase": "Succeeded", "podIP": "10.0.0.6"}}),
    );
    c.put(
        &pod(),
        json!({"metadata": {"name": "db", "namespace": "default", "labels": {"app": "db"}},
                         "status": {"phase": "Running", "podIP": "10.0.0.7"}}),
    );
    settle(&c);
    let e = ep(&c);
    assert_eq!(e["metadata"]["labels"]["team"], "a");
    assert_eq!(e["metadata"]["labels"][LABEL_MANAGED_BY], CONTROLLER_NAME);
    assert!(e["metadata"]["ownerReferences"].is_null());
    assert_eq!(
        e["metadata"]["annotations"][ANNOTATION_TRIGGER_TIME],
        "2024-01-01T00:00:00Z"
    );
    let subsets = e["subsets"].as_array().unwrap();
    // {web-0, web-1 ready; web-2 not} on 8080 alone; {all four} on 9090; {web-3} on 8081
    assert_eq!(subsets.len(), 3, "{subsets:#?}");
    let on = |port: i64| {
        subsets
            .iter()
            .find(|s| {
                s["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == port)
            })
            .unwrap_or_else(|| panic!("a subset on {port}: {subsets:#?}"))
    };
    let http = on(8080);
    assert_eq!(ips(http, "addresses"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(ips(http, "notReadyAddresses"), ["10.0.0.3"]);
    assert_eq!(
        http["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(ips(on(8081), "addresses"), ["10.0.0.4"]);
    let metrics = on(9090);
    assert_eq!(
        ips(metrics, "addresses"),
        ["10.0.0.1", "10.0.0.2", "10.0.0.4"]
    );
    assert_eq!(ips(metrics, "notReadyAddresses"), ["10.0.0.3"]);
    let a = &http["addresses"][0];
    assert_eq!(a["nodeName"], "n1");
    assert_eq!(a["targetRef"]["kind"], "Pod");
    assert_eq!(a["targetRef"]["name"], "web-0");
    assert_eq!(a["targetRef"]["namespace"], "default");
    assert_eq!(
        a["targetRef"]["uid"],
        objects::uid(&c.object(&pod(), "default", "web-0").unwrap())
    );

    // level-triggered: nothing changed, nothing written
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());

    // the pod turns ready: one update
    run_pod(&c, "web-2", "10.0.0.3", true, 8080);
    settle(&c);
    assert_eq!(c.writes().len(), 1, "{:?}", c.writes());
    assert_eq!(
        ips(&ep(&c)["subsets"][0], "notReadyAddresses"),
        Vec::<String>::new()
    );
}

#[test]
fn publish_not_ready_addresses_and_terminating_pods() {
    let c = FakeCluster::new();
    web_service(&c);
    c.patch(
        &service(),
        "default",
        "web",
        json!({"spec": {"publishNotReadyAddresses": true}}),
    );
    run_pod(&c, "web-0", "10.0.0.1", false, 8080);
    settle(&c);
    assert_eq!(ips(&ep(&c)["subsets"][0], "addresses"), ["10.0.0.1"]);
    // without publishNotReadyAddresses a pod being deleted leaves
    c.patch(
        &service(),
        "default",
        "web",
        json!({"spec": {"publishNotReadyAddresses": null}}),
    );
    c.patch(
        &pod(),
        "default",
        "web-0",
        json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
    );
    settle(&c);
    assert!(ep(&c)["subsets"].is_null(), "{:#}", ep(&c));
}

#[test]
fn pod_deletion_and_relabel_remove_the_address() {
    let c = FakeCluster::new();
    web_service(&c);
    run_pod(&c, "web-0", "10.0.0.1", true, 8080);
    run_pod(&c, "web-1", "10.0.0.2", true, 8080);
    settle(&c);
    c.remove(&pod(), "default", "web-0");
    // the key of the deleted pod alone must find the Service
    reconcile(
        &c,
        &ObjectKey {
            namespace: "default".into(),
            name: "web-0".into(),
        },
    )
    .unwrap();
    let all: Vec<String> = ep(&c)["subsets"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| ips(s, "addresses"))
        .collect();
    // one subset: both pods served both ports
    assert_eq!(all, ["10.0.0.2"]);
    assert_eq!(ep(&c)["subsets"][0]["ports"].as_array().unwrap().len(), 2);
    // relabelled out of the selector: found through the Endpoints
    c.patch(
        &pod(),
        "default",
        "web-1",
        json!({"metadata": {"labels": {"app": "other"}}}),
    );
    reconcile(
        &c,
        &ObjectKey {
            namespace: "default".into(),
            name: "web-1".into(),
        },
    )
    .unwrap();
    assert!(ep(&c)["subsets"].is_null());
}

#[test]
fn service_deletion_removes_endpoints() {
    let c = FakeCluster::new();
    web_service(&c);
    run_pod(&c, "web-0", "10.0.0.1", true, 8080);
    // someone's own Endpoints without a Service: never touched
    c.put(
        &endpoints(),
        json!({"metadata": {"name": "external", "namespace": "default"},
                               "subsets": [{"addresses": [{"ip": "192.168.1.1"}]}]}),
    );
    settle(&c);
    assert!(c.object(&endpoints(), "default", "web").is_some());
    c.remove(&service(), "default", "web");
    settle(&c);
    assert!(c.object(&endpoints(), "default", "web").is_none());
    assert!(c.object(&endpoints(), "default", "external").is_some());
}

#[test]
fn services_without_selector_or_external_name_are_left_alone() {
    let c = FakeCluster::new();
    c.put(
        &service(),
        json!({"metadata": {"name": "manual", "namespace": "default"},
                             "spec": {"ports": [{"port": 80}]}}),
    );
    c.put(&endpoints(), json!({"metadata": {"name": "manual", "namespace": "default"},
                               "subsets": [{"addresses": [{"ip": "192.168.1.1"}], "ports": [{"port": 80}]}]}));
    c.put(
        &service(),
        json!({"metadata": {"name": "ext", "namespace": "default"},
                             "spec": {"type": "ExternalName", "externalName": "example.com",
                                      "selector": {"app": "web"}}}),
    );
    run_pod(&c, "web-0", "10.0.0.1", true, 8080);
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    assert!(c.object(&endpoints(), "default", "ext").is_none());
}

#[test]
fn headless_service_without_ports_and_hostnames() {
    let c = FakeCluster::new();
    c.put(
        &service(),
        json!({"metadata": {"name": "db", "namespace": "default"},
                             "spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
    );
    c.put(
        &pod(),
        json!({"metadata": {"name": "db-0", "namespace": "default", "labels": {"app": "db"}},
                         "spec": {"hostname": "db-0", "subdomain": "db", "nodeName": "n1"},
                         "status": {"phase": "Running", "podIP": "10.0.0.9",
                                    "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    settle(&c);
    let e = c.object(&endpoints(), "default", "db").unwrap();
    assert_eq!(e["metadata"]["labels"][LABEL_HEADLESS], "");
    assert_eq!(
        e["subsets"],
        json!([{"addresses": [{
        "ip": "10.0.0.9", "hostname": "db-0", "nodeName": "n1",
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "db-0",
                      "uid": objects::uid(&c.object(&pod(), "default", "db-0").unwrap())}}]}])
    );
}

#[test]
fn service_label_change_updates_endpoints() {
    let c = FakeCluster::new();
    web_service(&c);
    settle(&c);
    assert!(ep(&c)["subsets"].is_null());
    c.clear_writes();
    c.patch(
        &service(),
        "default",
        "web",
        json!({"metadata": {"labels": {"team": "b"}}}),
    );
    settle(&c);
    assert_eq!(ep(&c)["metadata"]["labels"]["team"], "b");
    assert_eq!(c.writes().len(), 1);
}
