use super::*;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::controller::kinds::event;

fn now(c: &FakeCluster) -> String {
    objects::rfc3339(c.now())
}

/// The agent's heartbeat: Lease renewed and conditions posted.
fn heartbeat(c: &FakeCluster, name: &str, ready: &str) {
    let t = now(c);
    let cond = |ty: &str, status: &str| {
        json!({"type": ty, "status": status, "reason": "Kubelet", "message": "",
               "lastHeartbeatTime": t, "lastTransitionTime": "2024-01-01T00:00:00Z"})
    };
    let conds = json!([
        cond("MemoryPressure", "False"),
        cond("DiskPressure", "False"),
        cond("PIDPressure", "False"),
        cond("Ready", ready)
    ]);
    match c.object(&node(), "", name) {
        Some(_) => {
            c.patch(&node(), "", name, json!({"status": {"conditions": conds}}));
        }
        None => {
            c.put(
                &node(),
                json!({"metadata": {"name": name}, "spec": {}, "status": {"conditions": conds}}),
            );
        }
    }
    c.put(&lease(), json!({"metadata": {"name": name, "namespace": LEASE_NAMESPACE},
                           "spec": {"holderIdentity": name, "renewTime": t.replace('Z', ".000000Z")}}));
}

fn run_pod(c: &FakeCluster, name: &str, node_name: &str, tolerations: Value) {
    c.put(
        &pod(),
        json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node_name, "tolerations": tolerations, "containers": [{"name": "c"}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now(c)},
            {"type": "ContainersReady", "status": "True"}]}}),
    );
}

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn node_of(c: &FakeCluster, name: &str) -> Value {
    c.object(&node(), "", name).unwrap()
}

fn taints(c: &FakeCluster, name: &str) -> Vec<(String, String)> {
    node_of(c, name)["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["effect"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn cond_status(v: &Value, ty: &str) -> String {
    condition(v, ty).map_or("-".into(), |c| c["status"].as_str().unwrap().to_string())
}

fn events(c: &FakeCluster, reason: &str) -> Vec<String> {
    c.all(&event())
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn requeue_ms(a: Action) -> u64 {
    match a {
        Action::RequeueAfter(ms) => ms,
        Action::AwaitChange => panic!("expected a requeue"),
    }
}

/// Two nodes, n2 kept healthy so the cluster is not in master disruption.
fn world() -> (FakeCluster, Config) {
    let c = FakeCluster::new();
    heartbeat(&c, "n1", "True");
    heartbeat(&c, "n2", "True");
    (c, Config::default())
}

#[test]
fn healthy_node_is_left_alone_and_rechecked_at_its_deadline() {
    let (c, config) = world();
    run_pod(&c, "web-1", "n1", json!([]));
    let a = reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    assert_eq!(requeue_ms(a), 40_001);
    // the Lease alone keeps a node alive (kubelet posts status rarely)
    c.advance(30_000);
    c.put(
        &lease(),
        json!({"metadata": {"name": "n1", "namespace": LEASE_NAMESPACE},
                           "spec": {"renewTime": now(&c)}}),
    );
    c.advance(30_000);
    heartbeat(&c, "n2", "True");
    let a = reconcile(&c, &config, &key(LEASE_NAMESPACE, "n1")).unwrap();
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    assert_eq!(requeue_ms(a), 10_001);
}

#[test]
fn heartbeat_timeout_marks_unknown_taints_and_pods_not_ready_then_evicts() {
    let (c, config) = world();
    run_pod(&c, "web-1", "n1", json!([]));
    run_pod(
        &c,
        "tol-60",
        "n1",
        json!([
        {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
    );
    run_pod(
        &c,
        "ds",
        "n1",
        json!([
        {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute"},
        {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
    );
    run_pod(&c, "elsewhere", "n2", json!([]));

    c.advance(41_000);
    heartbeat(&c, "n2", "True");
    let a = reconcile(&c, &config, &key("", "n1")).unwrap();
    assert_eq!(
        requeue_ms(a),
        5_000,
        "looked at every nodeMonitorPeriod while not ready"
    );
    let n1 = node_of(&c, "n1");
    for ty in CONDITIONS {
        let cnd = condition(&n1, ty).unwrap();
        assert_eq!(cnd["status"], "Unknown", "{ty}");
        assert_eq!(cnd["reason"], "NodeStatusUnknown");
        assert_eq!(cnd["message"], "Kubelet stopped posting node status.");
        assert_eq!(cnd["lastTransitionTime"], now(&c));
        assert_eq!(cnd["lastHeartbeatTime"], objects::rfc3339(c.now() - 41));
    }
    assert_eq!(
        taints(&c, "n1"),
        [
            (TAINT_UNREACHABLE.to_string(), "NoSchedule".to_string()),
            (TAINT_UNREACHABLE.to_string(), "NoExecute".to_string())
        ]
    );
    assert_eq!(node_of(&c, "n1")["spec"]["taints"][1]["timeAdded"], now(&c));
    assert!(node_of(&c, "n1")["spec"]["taints"][0]
        .get("timeAdded")
        .is_none());
    assert_eq!(
        events(&c, "NodeNotReady"),
        ["Node n1 status is now: NodeNotReady"]
    );
    for p in ["web-1", "tol-60", "ds"] {
        let p = c.object(&pod(), "default", p).unwrap();
        assert_eq!(cond_status(&p, "Ready"), "False");
        assert_eq!(cond_status(&p, "ContainersReady"), "True");
    }
    assert_eq!(
        cond_status(&c.object(&pod(), "default", "elsewhere").unwrap(), "Ready"),
        "True"
    );

    // again: nothing new to write
    c.clear_writes();
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.writes().is_empty(), "{:?}", c.writes());

    // 60 s later the pod tolerating 60 s goes; the others stay
    c.advance(59_000);
    heartbeat(&c, "n2", "True");
    let a = reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.object(&pod(), "default", "tol-60").is_some());
    assert_eq!(requeue_ms(a), 1_000);
    c.advance(1_000);
    heartbeat(&c, "n2", "True");
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.object(&pod(), "default", "tol-60").is_none());
    assert!(c.object(&pod(), "default", "web-1").is_some());
    assert_eq!(
        events(&c, "TaintManagerEviction"),
        ["Marking for deletion Pod default/tol-60"]
    );
    assert!(c
        .writes()
        .iter()
        .any(|w| w.verb == "update-status" && w.name == "tol-60"));

    // the default 300 s for pods without such tolerations; DaemonSet-like pods stay
    c.advance(239_000);
    heartbeat(&c, "n2", "True");
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.object(&pod(), "default", "web-1").is_some());
    c.advance(1_000);
    heartbeat(&c, "n2", "True");
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.object(&pod(), "default", "web-1").is_none());
    assert!(c.object(&pod(), "default", "ds").is_some());
    assert!(c.object(&pod(), "default", "elsewhere").is_some());

    // the agent is back: the controller's taints go, the conditions are the agent's
    heartbeat(&c, "n1", "True");
    let a = reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(taints(&c, "n1").is_empty(), "{:?}", taints(&c, "n1"));
    assert_eq!(cond_status(&node_of(&c, "n1"), "Ready"), "True");
    assert_eq!(requeue_ms(a), 40_001);
}

#[test]
fn untolerated_no_execute_taint_evicts_at_once() {
    let (c, config) = world();
    run_pod(&c, "plain", "n1", json!([]));
    run_pod(
        &c,
        "tolerant",
        "n1",
        json!([{"key": "maintenance", "operator": "Exists", "effect": "NoExecute"}]),
    );
    run_pod(
        &c,
        "brief",
        "n1",
        json!([{"key": "maintenance", "operator": "Exists", "effect": "NoExecute",
                                       "tolerationSeconds": 30}]),
    );
    c.patch(
        &node(),
        "",
        "n1",
        json!({"spec": {"taints": [
        {"key": "maintenance", "effect": "NoExecute", "timeAdded": now(&c)}]}}),
    );
    // the Pod key alone is enough
    reconcile(&c, &config, &key("default", "plain")).unwrap();
    assert!(c.object(&pod(), "default", "plain").is_none());
    let a = reconcile(&c, &config, &key("default", "brief")).unwrap();
    assert_eq!(requeue_ms(a), 30_000);
    c.advance(30_000);
    heartbeat(&c, "n1", "True");
    heartbeat(&c, "n2", "True");
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.object(&pod(), "default", "brief").is_none());
    assert!(c.object(&pod(), "default", "tolerant").is_some());
    // the user's taint is not the controller's to remove
    assert_eq!(
        taints(&c, "n1"),
        [("maintenance".to_string(), "NoExecute".to_string())]
    );
}

#[test]
fn not_ready_reported_by_the_agent() {
    let (c, config) = world();
    run_pod(&c, "web-1", "n1", json!([]));
    heartbeat(&c, "n1", "False");
    c.patch(&node(), "", "n1", json!({"spec": {"unschedulable": true}}));
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert_eq!(
        taints(&c, "n1"),
        [
            (TAINT_NOT_READY.to_string(), "NoSchedule".to_string()),
            (TAINT_UNSCHEDULABLE.to_string(), "NoSchedule".to_string()),
            (TAINT_NOT_READY.to_string(), "NoExecute".to_string())
        ]
    );
    // no condition writes, no pod marking: the agent is talking
    assert!(
        c.writes()
            .iter()
            .all(|w| w.kind == "Node" && w.verb == "update"),
        "{:?}",
        c.writes()
    );
    assert_eq!(
        cond_status(&c.object(&pod(), "default", "web-1").unwrap(), "Ready"),
        "True"
    );
    // silent now: the NoExecute taint swaps to unreachable
    c.advance(41_000);
    heartbeat(&c, "n2", "True");
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert_eq!(
        taints(&c, "n1"),
        [
            (TAINT_UNSCHEDULABLE.to_string(), "NoSchedule".to_string()),
            (TAINT_UNREACHABLE.to_string(), "NoSchedule".to_string()),
            (TAINT_UNREACHABLE.to_string(), "NoExecute".to_string())
        ]
    );
    assert!(events(&c, "NodeNotReady").is_empty(), "Ready was not True");
}

#[test]
fn no_node_ready_means_no_no_execute_taints() {
    let c = FakeCluster::new();
    let config = Config::default();
    heartbeat(&c, "n1", "True");
    run_pod(&c, "web-1", "n1", json!([]));
    c.advance(41_000);
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert_eq!(cond_status(&node_of(&c, "n1"), "Ready"), "Unknown");
    assert_eq!(
        taints(&c, "n1"),
        [(TAINT_UNREACHABLE.to_string(), "NoSchedule".to_string())]
    );
    assert_eq!(
        cond_status(&c.object(&pod(), "default", "web-1").unwrap(), "Ready"),
        "False"
    );
    c.advance(600_000);
    reconcile(&c, &config, &key("", "n1")).unwrap();
    assert!(c.object(&pod(), "default", "web-1").is_some());
}

#[test]
fn node_that_never_posted_status_gets_the_startup_grace_period() {
    let c = FakeCluster::new();
    let config = Config::parse(r#"{"nodeStartupGracePeriod": "10s"}"#).unwrap();
    c.put(&node(), json!({"metadata": {"name": "n1"}, "spec": {}}));
    let a = reconcile(&c, &config, &key("", "n1")).unwrap();
    assert_eq!(requeue_ms(a), 5_000);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    c.advance(11_000);
    reconcile(&c, &config, &key("", "n1")).unwrap();
    let n1 = node_of(&c, "n1");
    let ready = condition(&n1, "Ready").unwrap();
    assert_eq!(ready["status"], "Unknown");
    assert_eq!(ready["reason"], "NodeStatusNeverUpdated");
    assert_eq!(ready["message"], "Kubelet never posted node status.");
    assert_eq!(
        ready["lastHeartbeatTime"],
        n1["metadata"]["creationTimestamp"]
    );
    assert_eq!(n1["status"]["conditions"].as_array().unwrap().len(), 4);
}

#[test]
fn settles_without_repeated_writes() {
    let (c, config) = world();
    run_pod(&c, "web-1", "n1", json!([]));
    c.advance(41_000);
    heartbeat(&c, "n2", "True");
    c.settle(&NodeLifecycle::info(), |c, k| reconcile(c, &config, &k))
        .unwrap();
    assert_eq!(cond_status(&node_of(&c, "n1"), "Ready"), "Unknown");
    c.clear_writes();
    c.settle(&NodeLifecycle::info(), |c, k| reconcile(c, &config, &k))
        .unwrap();
    assert!(c.writes().is_empty(), "{:?}", c.writes());
}
