use super::*;
use trellis_sdk::controller::fake::FakeCluster;

fn settle_with(c: &FakeCluster, config: &Config) {
    c.settle(&EndpointSliceController::info(), |c, k| {
        reconcile(c, config, &k)
    })
    .unwrap();
}

fn settle(c: &FakeCluster) {
    settle_with(c, &Config::default());
}

fn world() -> FakeCluster {
    let c = FakeCluster::new();
    c.put(
        &node(),
        json!({"metadata": {"name": "n1", "labels": {LABEL_ZONE: "zone-a"}}}),
    );
    c.put(
        &service(),
        json!({"metadata": {"name": "web", "namespace": "default", "labels": {"team": "a"}},
               "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4"],
                        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}}),
    );
    c
}

fn run_pod(c: &FakeCluster, name: &str, ip: &str, ready: bool) {
    c.put(
        &pod(),
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [
                   {"name": "http", "containerPort": 8080}]}]},
               "status": {"phase": "Running", "podIP": ip,
                          "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                          "lastTransitionTime": "2024-01-01T00:00:00Z"}]}}),
    );
}

/// Reconcile the Service's own key (settling 250 pod keys is slow in a debug build).
fn sync(c: &FakeCluster) {
    let key = ObjectKey {
        namespace: "default".into(),
        name: "web".into(),
    };
    reconcile(c, &Config::default(), &key).unwrap();
}

fn slices(c: &FakeCluster) -> Vec<Value> {
    c.all(&endpoint_slice())
}

fn by_pod(slice: &Value) -> BTreeMap<String, Value> {
    endpoints_of(slice)
        .into_iter()
        .map(|e| (e["targetRef"]["name"].as_str().unwrap().to_string(), e))
        .collect()
}

#[test]
fn one_slice_with_conditions_ports_and_owner() {
    let c = world();
    run_pod(&c, "web-0", "10.0.0.1", true);
    run_pod(&c, "web-1", "10.0.0.2", false);
    run_pod(&c, "web-2", "10.0.0.3", true);
    c.patch(
        &pod(),
        "default",
        "web-2",
        json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
    );
    settle(&c);
    let all = slices(&c);
    assert_eq!(all.len(), 1, "{all:#?}");
    let s = &all[0];
    assert!(objects::name(s).starts_with("web-"));
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(
        s["metadata"]["labels"],
        json!({
        "team": "a", LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: CONTROLLER_NAME})
    );
    let svc = c.object(&service(), "default", "web").unwrap();
    assert_eq!(
        s["metadata"]["ownerReferences"],
        json!([{
        "apiVersion": "v1", "kind": "Service", "name": "web", "uid": objects::uid(&svc),
        "controller": true, "blockOwnerDeletion": true}])
    );
    assert_eq!(
        s["ports"],
        json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        s["metadata"]["annotations"][ANNOTATION_TRIGGER_TIME],
        "2024-01-01T00:00:00Z"
    );
    let eps = by_pod(s);
    assert_eq!(
        eps["web-0"],
        json!({
        "addresses": ["10.0.0.1"],
        "conditions": {"ready": true, "serving": true, "terminating": false},
        "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0",
                      "uid": objects::uid(&c.object(&pod(), "default", "web-0").unwrap())},
        "nodeName": "n1", "zone": "zone-a"})
    );
    assert_eq!(
        eps["web-1"]["conditions"],
        json!({"ready": false, "serving": false, "terminating": false})
    );
    assert_eq!(
        eps["web-2"]["conditions"],
        json!({"ready": false, "serving": true, "terminating": true})
    );

    // nothing changed: nothing written
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());

    // a pod turns ready: the slice is updated in place
    let name = objects::name(s).to_string();
    run_pod(&c, "web-1", "10.0.0.2", true);
    settle(&c);
    assert_eq!(c.writes().len(), 1, "{:?}", c.writes());
    assert_eq!(c.writes()[0].verb, "update");
    let s = c.object(&endpoint_slice(), "default", &name).unwrap();
    assert_eq!(by_pod(&s)["web-1"]["conditions"]["ready"], true);
}

#[test]
fn more_than_max_endpoints_spread_over_slices_and_shrink_in_place() {
    let c = world();
    for i in 0..250 {
        run_pod(
            &c,
            &format!("web-{i:03}"),
            &format!("10.0.{}.{}", i / 200, i % 200 + 1),
            true,
        );
    }
    sync(&c);
    let mut sizes: Vec<usize> = slices(&c).iter().map(|s| endpoints_of(s).len()).collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
    let names: BTreeSet<String> = slices(&c)
        .iter()
        .map(|s| objects::name(s).to_string())
        .collect();
    let pods: BTreeSet<String> = slices(&c)
        .iter()
        .flat_map(|s| by_pod(s).into_keys())
        .collect();
    assert_eq!(pods.len(), 250);

    // 30 pods go: their slices shrink in place, none is created
    for i in 0..30 {
        c.remove(&pod(), "default", &format!("web-{i:03}"));
    }
    c.clear_writes();
    sync(&c);
    assert!(
        c.writes().iter().all(|w| w.verb == "update"),
        "{:?}",
        c.writes()
    );
    c.clear_writes();
    sync(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    let after: BTreeSet<String> = slices(&c)
        .iter()
        .map(|s| objects::name(s).to_string())
        .collect();
    assert_eq!(after, names);
    assert_eq!(
        slices(&c)
            .iter()
            .map(|s| endpoints_of(s).len())
            .sum::<usize>(),
        220
    );

    // 20 new pods fit into the free room: still three slices
    for i in 300..320 {
        run_pod(
            &c,
            &format!("web-{i:03}"),
            &format!("10.0.3.{}", i - 299),
            true,
        );
    }
    sync(&c);
    assert_eq!(slices(&c).len(), 3);
    assert!(slices(&c).iter().all(|s| endpoints_of(s).len() <= 100));
    assert_eq!(
        slices(&c)
            .iter()
            .map(|s| endpoints_of(s).len())
            .sum::<usize>(),
        240
    );
}

#[test]
fn smaller_slices_by_config() {
    let config = Config::parse(r#"{"maxEndpointsPerSlice": 2}"#).unwrap();
    let c = world();
    for i in 0..5 {
        run_pod(&c, &format!("web-{i}"), &format!("10.0.0.{}", i + 1), true);
    }
    settle_with(&c, &config);
    assert_eq!(slices(&c).len(), 3);
    assert!(Config::parse(r#"{"maxEndpointsPerSlice": 0}"#).is_err());
    assert!(Config::parse(r#"{"other": 1}"#).is_err());
    assert_eq!(Config::parse("{}").unwrap(), Config::default());
}

#[test]
fn placeholder_then_filled_in_place_and_pod_deletion() {
    let c = world();
    settle(&c);
    let all = slices(&c);
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["endpoints"], json!([]));
    assert_eq!(all[0]["ports"], json!([]));
    let name = objects::name(&all[0]).to_string();

    run_pod(&c, "web-0", "10.0.0.1", true);
    run_pod(&c, "web-1", "10.0.0.2", true);
    c.clear_writes();
    settle(&c);
    assert!(
        c.writes().iter().all(|w| w.verb == "update"),
        "{:?}",
        c.writes()
    );
    let s = c.object(&endpoint_slice(), "default", &name).unwrap();
    assert_eq!(by_pod(&s).len(), 2);
    assert_eq!(s["ports"][0]["port"], 8080);

    // the key of a deleted pod alone finds the Service through the slice
    c.remove(&pod(), "default", "web-0");
    reconcile(
        &c,
        &Config::default(),
        &ObjectKey {
            namespace: "default".into(),
            name: "web-0".into(),
        },
    )
    .unwrap();
    let s = c.object(&endpoint_slice(), "default", &name).unwrap();
    assert_eq!(by_pod(&s).into_keys().collect::<Vec<_>>(), ["web-1"]);

    // the last one goes: back to a placeholder (ports change: a new port set)
    c.remove(&pod(), "default", "web-1");
    settle(&c);
    let all = slices(&c);
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["endpoints"], json!([]));
}

#[test]
fn label_changes_and_foreign_slices() {
    let c = world();
    run_pod(&c, "web-0", "10.0.0.1", true);
    // a slice of an older Service of the same name
    c.put(&endpoint_slice(), json!({"metadata": {"name": "web-old", "namespace": "default",
        "labels": {LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: CONTROLLER_NAME},
        "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web", "uid": "gone", "controller": true}]},
        "addressType": "IPv4", "endpoints": [], "ports": []}));
    // someone else's slice for it: not ours to touch
    c.put(
        &endpoint_slice(),
        json!({"metadata": {"name": "web-custom", "namespace": "default",
        "labels": {LABEL_SERVICE_NAME: "web", LABEL_MANAGED_BY: "someone-else"}},
        "addressType": "IPv4", "endpoints": [], "ports": []}),
    );
    settle(&c);
    assert!(c.object(&endpoint_slice(), "default", "web-old").is_none());
    assert!(c
        .object(&endpoint_slice(), "default", "web-custom")
        .is_some());
    assert_eq!(slices(&c).len(), 2);
    c.patch(
        &service(),
        "default",
        "web",
        json!({"metadata": {"labels": {"team": "b"}}}),
    );
    c.clear_writes();
    settle(&c);
    assert_eq!(c.writes().len(), 1, "{:?}", c.writes());
    let ours = slices(&c)
        .into_iter()
        .find(|s| s["metadata"]["labels"][LABEL_MANAGED_BY] == CONTROLLER_NAME)
        .unwrap();
    assert_eq!(ours["metadata"]["labels"]["team"], "b");
}

#[test]
fn pods_on_missing_nodes_are_skipped_and_retried() {
    let c = world();
    run_pod(&c, "web-0", "10.0.0.1", true);
    c.patch(
        &pod(),
        "default",
        "web-0",
        json!({"spec": {"nodeName": "gone"}}),
    );
    let r = reconcile(
        &c,
        &Config::default(),
        &ObjectKey {
            namespace: "default".into(),
            name: "web".into(),
        },
    );
    assert!(matches!(r, Err(PluginError::Internal(_))));
    assert_eq!(slices(&c).len(), 1);
    assert_eq!(slices(&c)[0]["endpoints"], json!([]));
}
