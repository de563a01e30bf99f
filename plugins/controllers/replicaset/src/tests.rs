use super::*;
use std::cell::Cell;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::KindRef;

fn rs_obj(name: &str, replicas: i64) -> Value {
    json!({"metadata": {"name": name, "namespace": "default"}, "spec": {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name, "tier": "fe"}, "annotations": {"a": "b"}},
                     "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
}

fn settle(c: &FakeCluster) {
    c.settle(&ReplicaSets::info(), |c, k| {
        reconcile(c, &Config::default(), &k)
    })
    .unwrap();
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn pods_of(c: &FakeCluster, rs: &str) -> Vec<Value> {
    let uid = objects::uid(&c.object(&replica_set(), "default", rs).unwrap()).to_string();
    c.all(&pod())
        .into_iter()
        .filter(|p| objects::is_controlled_by(p, &uid))
        .collect()
}

fn events(c: &FakeCluster) -> Vec<(String, String)> {
    c.all(&kinds::event())
        .iter()
        .map(|e| {
            (
                e["reason"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn make_ready(c: &FakeCluster, name: &str, node: &str, since: i64) {
    c.patch(&pod(), "default", name, json!({"spec": {"nodeName": node}, "status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": objects::rfc3339(since)}]}}));
}

#[test]
fn creates_pods_from_the_template_and_reports_status() {
    let c = FakeCluster::new();
    c.put(&replica_set(), rs_obj("web", 3));
    settle(&c);
    let pods = pods_of(&c, "web");
    assert_eq!(pods.len(), 3);
    let p = &pods[0];
    assert!(objects::name(p).starts_with("web-"));
    assert_eq!(p["metadata"]["generateName"], "web-");
    assert_eq!(p["metadata"]["namespace"], "default");
    assert_eq!(p["metadata"]["labels"]["app"], "web");
    assert_eq!(p["metadata"]["annotations"]["a"], "b");
    assert_eq!(p["spec"]["containers"][0]["image"], "nginx");
    let r = &p["metadata"]["ownerReferences"][0];
    assert_eq!(
        (r["kind"].as_str(), r["apiVersion"].as_str()),
        (Some("ReplicaSet"), Some("apps/v1"))
    );
    assert_eq!(
        (r["controller"].as_bool(), r["blockOwnerDeletion"].as_bool()),
        (Some(true), Some(true))
    );
    let ev = events(&c);
    assert_eq!(
        ev.iter().filter(|(r, _)| r == "SuccessfulCreate").count(),
        3
    );
    assert!(ev.contains(&(
        "SuccessfulCreate".into(),
        format!("Created pod: {}", objects::name(p))
    )));
    let rs = c.object(&replica_set(), "default", "web").unwrap();
    assert_eq!(rs["status"]["replicas"], 3);
    assert_eq!(rs["status"]["fullyLabeledReplicas"], 3);
    assert_eq!(rs["status"]["observedGeneration"], 1);
    assert!(rs["status"]["readyReplicas"].is_null());
    // idempotent: nothing more to write
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
}

#[test]
fn ready_and_available_with_min_ready_seconds_requeues() {
    let c = FakeCluster::new();
    let mut o = rs_obj("web", 2);
    o["spec"]["minReadySeconds"] = json!(10);
    c.put(&replica_set(), o);
    settle(&c);
    let now = c.now();
    for p in pods_of(&c, "web") {
        make_ready(&c, objects::name(&p), "n1", now);
    }
    c.advance(4_000);
    let a = reconcile(&c, &Config::default(), &key("web")).unwrap();
    assert!(matches!(a, Action::RequeueAfter(6_000)), "{a:?}");
    let st = c.object(&replica_set(), "default", "web").unwrap()["status"].clone();
    assert_eq!(
        (
            st["readyReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(2), None)
    );
    c.advance(6_000);
    assert!(matches!(
        reconcile(&c, &Config::default(), &key("web")).unwrap(),
        Action::AwaitChange
    ));
    let st = c.object(&replica_set(), "default", "web").unwrap()["status"].clone();
    assert_eq!(st["availableReplicas"], 2);
    // a pod relabelled by hand still matching the selector is not fully labelled
    let p = pods_of(&c, "web")[0].clone();
    c.patch(
        &pod(),
        "default",
        objects::name(&p),
        json!({"metadata": {"labels": {"tier": null}}}),
    );
    settle(&c);
    assert_eq!(
        c.object(&replica_set(), "default", "web").unwrap()["status"]["fullyLabeledReplicas"],
        1
    );
}

#[test]
fn inactive_pods_are_replaced_and_not_counted() {
    let c = FakeCluster::new();
    c.put(&replica_set(), rs_obj("web", 2));
    settle(&c);
    let pods = pods_of(&c, "web");
    c.patch(
        &pod(),
        "default",
        objects::name(&pods[0]),
        json!({"status": {"phase": "Failed"}}),
    );
    c.patch(
        &pod(),
        "default",
        objects::name(&pods[1]),
        json!({"metadata": {"deletionTimestamp": objects::rfc3339(c.now()), "finalizers": ["x"]}}),
    );
    settle(&c);
    let active: Vec<_> = pods_of(&c, "web")
        .into_iter()
        .filter(objects::pod_is_active)
        .collect();
    assert_eq!(active.len(), 2);
    assert_eq!(pods_of(&c, "web").len(), 4);
    assert_eq!(
        c.object(&replica_set(), "default", "web").unwrap()["status"]["replicas"],
        2
    );
}

#[test]
fn scale_down_deletes_in_upstream_order() {
    let c = FakeCluster::new();
    c.put(&replica_set(), rs_obj("web", 7));
    settle(&c);
    let names: Vec<String> = pods_of(&c, "web")
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect();
    let now = c.now();
    // 0: unassigned; 1: assigned pending; 2: running not ready;
    // 3: ready 10 s; 4: ready 1000 s with restarts; 5: ready 1000 s; 6: ready 100000 s
    c.patch(
        &pod(),
        "default",
        &names[1],
        json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Pending"}}),
    );
    c.patch(
        &pod(),
        "default",
        &names[2],
        json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}),
    );
    make_ready(&c, &names[3], "n1", now - 10);
    make_ready(&c, &names[4], "n1", now - 1000);
    c.patch(
        &pod(),
        "default",
        &names[4],
        json!({"status": {"containerStatuses": [{"name": "c", "restartCount": 4}]}}),
    );
    make_ready(&c, &names[5], "n1", now - 1000);
    make_ready(&c, &names[6], "n1", now - 100_000);
    let mut order = Vec::new();
    for n in (0..7).rev() {
        c.patch(
            &replica_set(),
            "default",
            "web",
            json!({"spec": {"replicas": n}}),
        );
        let before: BTreeSet<String> = c
            .all(&pod())
            .iter()
            .map(|p| objects::name(p).to_string())
            .collect();
        settle(&c);
        let after: BTreeSet<String> = c
            .all(&pod())
            .iter()
            .map(|p| objects::name(p).to_string())
            .collect();
        let gone: Vec<&String> = before.difference(&after).collect();
        assert_eq!(gone.len(), 1, "scale to {n}");
        order.push(gone[0].clone());
    }
    assert_eq!(order, names);
    assert!(events(&c).contains(&(
        "SuccessfulDelete".into(),
        format!("Deleted pod: {}", names[0])
    )));
}

#[test]
fn deletion_ranks_newer_and_doubled_up_and_cheaper_first() {
    let now_ms = 1_700_000_000_000;
    let now = now_ms / 1000;
    let p = |name: &str, node: &str, created: i64, extra: Value| {
        let mut v = json!({"metadata": {"name": name, "uid": name, "creationTimestamp": objects::rfc3339(created)},
            "spec": {"nodeName": node}, "status": {"phase": "Running"}});
        trellis_sdk::controller::fake::merge(&mut v, &extra);
        v
    };
    let pods = vec![
        p("old", "n1", now - 100_000, json!({})),
        p("new", "n2", now - 10, json!({})),
    ];
    assert_eq!(
        objects::name(pods_to_delete(&pods, &pods, 1, now_ms)[0]),
        "new"
    );
    // doubled up on n1 beats newer on n2
    let pods = vec![
        p("a", "n1", now - 100_000, json!({})),
        p("b", "n1", now - 100_000, json!({})),
        p("new", "n2", now - 10, json!({})),
    ];
    assert_eq!(
        objects::name(pods_to_delete(&pods, &pods, 1, now_ms)[0]),
        "a"
    );
    // the deletion cost wins over everything after readiness
    let pods = vec![
        p(
            "a",
            "n1",
            now - 100_000,
            json!({"metadata": {"annotations": {POD_DELETION_COST: "-5"}}}),
        ),
        p("new", "n2", now - 10, json!({})),
    ];
    assert_eq!(
        objects::name(pods_to_delete(&pods, &pods, 1, now_ms)[0]),
        "a"
    );
}

#[test]
fn adopts_orphans_and_releases_mismatches() {
    let c = FakeCluster::new();
    let orphan = |name: &str, app: &str| {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
               "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    };
    c.put(&pod(), orphan("o1", "web"));
    c.put(&pod(), orphan("o2", "db"));
    let mut taken = orphan("t1", "web");
    taken["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "other", "uid": "someone-else", "controller": true}]);
    c.put(&pod(), taken);
    c.put(&replica_set(), rs_obj("web", 2));
    settle(&c);
    let mine: BTreeSet<String> = pods_of(&c, "web")
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect();
    assert!(mine.contains("o1"));
    assert!(!mine.contains("o2") && !mine.contains("t1"));
    assert_eq!(mine.len(), 2, "one adopted, one created");
    assert_eq!(
        c.object(&pod(), "default", "o1").unwrap()["metadata"]["ownerReferences"][0]
            ["blockOwnerDeletion"],
        true
    );
    // a controlled pod relabelled out of the selector is released and replaced
    let gone = mine.iter().find(|n| *n != "o1").unwrap().clone();
    c.patch(
        &pod(),
        "default",
        &gone,
        json!({"metadata": {"labels": {"app": "debug"}}}),
    );
    // the pod's change maps to the ReplicaSet through its owner reference
    settle(&c);
    assert!(
        c.object(&pod(), "default", &gone).unwrap()["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(pods_of(&c, "web").len(), 2);
}

#[test]
fn a_deleting_replicaset_adopts_creates_and_releases_nothing() {
    let c = FakeCluster::new();
    let mut o = rs_obj("web", 2);
    o["metadata"]["deletionTimestamp"] = json!(objects::rfc3339(c.now()));
    o["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
    c.put(&replica_set(), o);
    c.put(
        &pod(),
        json!({"metadata": {"name": "o1", "namespace": "default", "labels": {"app": "web"}}}),
    );
    settle(&c);
    assert_eq!(c.all(&pod()).len(), 1);
    assert!(c.object(&pod(), "default", "o1").unwrap()["metadata"]["ownerReferences"].is_null());
    assert!(
        c.writes().iter().all(|w| w.kind == "ReplicaSet"),
        "{:?}",
        c.writes()
    );
}

/// The fake cluster, refusing pod creates while `fail` is set.
struct Failing {
    c: FakeCluster,
    fail: Cell<bool>,
}

impl Api for Failing {
    fn get(&self, k: &KindRef, ns: &str, n: &str) -> Result<Value, ObjectError> {
        self.c.get(k, ns, n)
    }
    fn list(&self, k: &KindRef, ns: &str, s: &str) -> Result<Vec<Value>, ObjectError> {
        self.c.list(k, ns, s)
    }
    fn create(&self, k: &KindRef, ns: &str, o: &Value) -> Result<Value, ObjectError> {
        if k.kind == "Pod" && self.fail.get() {
            return Err(ObjectError::AccessDenied(
                "pods \"web-x\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1".into(),
            ));
        }
        self.c.create(k, ns, o)
    }
    fn update(&self, k: &KindRef, ns: &str, o: &Value) -> Result<Value, ObjectError> {
        self.c.update(k, ns, o)
    }
    fn update_status(&self, k: &KindRef, ns: &str, o: &Value) -> Result<Value, ObjectError> {
        self.c.update_status(k, ns, o)
    }
    fn merge_patch(&self, k: &KindRef, ns: &str, n: &str, p: &Value) -> Result<Value, ObjectError> {
        self.c.merge_patch(k, ns, n, p)
    }
    fn delete(&self, k: &KindRef, ns: &str, n: &str, p: &str) -> Result<(), ObjectError> {
        self.c.delete(k, ns, n, p)
    }
    fn now_millis(&self) -> i64 {
        self.c.now_millis()
    }
}

#[test]
fn failed_creates_set_replica_failure_and_stop_the_slow_start() {
    let f = Failing {
        c: FakeCluster::new(),
        fail: Cell::new(true),
    };
    f.c.put(&replica_set(), rs_obj("web", 5));
    assert!(reconcile(&f, &Config::default(), &key("web")).is_err());
    let creates = f.c.writes().iter().filter(|w| w.kind == "Event").count();
    assert_eq!(creates, 1, "the first batch of one failed: no more tries");
    let ev = events(&f.c);
    assert_eq!(ev[0].0, "FailedCreate");
    assert!(
        ev[0]
            .1
            .starts_with("Error creating: pods \"web-x\" is forbidden"),
        "{}",
        ev[0].1
    );
    let st = f.c.object(&replica_set(), "default", "web").unwrap()["status"].clone();
    assert_eq!(st["conditions"][0]["type"], "ReplicaFailure");
    assert_eq!(st["conditions"][0]["reason"], "FailedCreate");
    assert_eq!(st["conditions"][0]["status"], "True");
    f.fail.set(false);
    assert!(reconcile(&f, &Config::default(), &key("web")).is_ok());
    let rs = f.c.object(&replica_set(), "default", "web").unwrap();
    assert!(rs["status"]["conditions"].is_null());
    assert_eq!(f.c.all(&pod()).len(), 5);
    // the status counts the pods seen before the creates, as upstream's
    reconcile(&f, &Config::default(), &key("web")).unwrap();
    assert_eq!(
        f.c.object(&replica_set(), "default", "web").unwrap()["status"]["replicas"],
        5
    );
}

#[test]
fn burst_limits_creates_per_reconcile() {
    let c = FakeCluster::new();
    c.put(&replica_set(), rs_obj("web", 5));
    let cfg = Config::parse(r#"{"burstReplicas": 2}"#).unwrap();
    reconcile(&c, &cfg, &key("web")).unwrap();
    assert_eq!(c.all(&pod()).len(), 2);
    assert!(Config::parse(r#"{"burst": 2}"#).is_err());
    assert_eq!(Config::parse("{}").unwrap(), Config::default());
}

#[test]
fn spec_changes_bump_observed_generation_and_missing_is_quiet() {
    let c = FakeCluster::new();
    c.put(&replica_set(), rs_obj("web", 1));
    settle(&c);
    let mut rs = c.object(&replica_set(), "default", "web").unwrap();
    rs["spec"]["replicas"] = json!(2);
    c.update(&replica_set(), "default", &rs).unwrap();
    settle(&c);
    let rs = c.object(&replica_set(), "default", "web").unwrap();
    assert_eq!(rs["status"]["observedGeneration"], 2);
    assert_eq!(rs["status"]["replicas"], 2);
    assert!(matches!(
        reconcile(&c, &Config::default(), &key("nope")).unwrap(),
        Action::AwaitChange
    ));
}
