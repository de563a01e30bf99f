use super::*;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::controller::kinds::{deployment, pod, replica_set, service};

fn rs_pods() -> Config {
    Config::parse(
        r#"{"owner": {"group": "apps", "version": "v1", "kind": "ReplicaSet"},
            "dependents": [{"group": "", "version": "v1", "kind": "Pod"}]}"#,
    )
    .unwrap()
}

fn deploy_rs() -> Config {
    Config::parse(
        r#"{"owner": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "dependents": [{"group": "apps", "version": "v1", "kind": "ReplicaSet", "hasDependents": true}]}"#,
    )
    .unwrap()
}

fn oref(kind: &str, api_version: &str, name: &str, uid: &str, controller: bool) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
           "controller": controller, "blockOwnerDeletion": controller})
}

fn put_owned(c: &FakeCluster, k: &KindRef, name: &str, refs: Vec<Value>) -> Value {
    c.put(
        k,
        json!({"metadata": {"name": name, "namespace": "ns", "ownerReferences": refs}}),
    )
}

fn put_rs(c: &FakeCluster, name: &str) -> String {
    let rs = c.put(
        &replica_set(),
        json!({"metadata": {"name": name, "namespace": "ns"}}),
    );
    objects::uid(&rs).to_string()
}

fn settle(c: &FakeCluster, cfg: &Config) -> usize {
    c.settle(&cfg.info(), |c, k| reconcile(c, cfg, &k)).unwrap()
}

/// Settle several instances in one cluster until none writes.
fn settle_all(c: &FakeCluster, cfgs: &[&Config]) {
    for _ in 0..20 {
        if cfgs
            .iter()
            .map(|cfg| settle(c, cfg))
            .all(|rounds| rounds == 1)
        {
            return;
        }
    }
    panic!("the instances did not settle");
}

fn pod_names(c: &FakeCluster) -> Vec<String> {
    c.all(&pod())
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect()
}

#[test]
fn config_is_required_and_checked() {
    let bad = [
        "",
        "{}",
        r#"{"owner": {"group": "apps", "version": "v1", "kind": "ReplicaSet"}}"#,
        r#"{"owner": {"group": "apps", "version": "v1", "kind": "ReplicaSet"}, "dependents": []}"#,
        r#"{"owner": {"group": "apps", "kind": "ReplicaSet"}, "dependents": [{"version": "v1", "kind": "Pod"}]}"#,
        r#"{"owner": {"version": "v1", "kind": "Node"}, "dependents": [{"version": "v1", "kind": "Pod", "x": 1}]}"#,
        r#"{"owner": {"version": "v1", "kind": "Node"}, "dependents": [{"version": "v1", "kind": "Pod"}], "extra": 1}"#,
        r#"{"owner": {"version": "v1", "kind": "Node"}, "dependents": [{"version": "v1", "kind": "Pod"}], "recheckInterval": "soon"}"#,
    ];
    for b in bad {
        assert!(
            matches!(
                GarbageCollector::default().configure(b),
                Err(PluginError::InvalidConfig(_))
            ),
            "{b}"
        );
    }

    let mut gc = GarbageCollector::default();
    assert_eq!(GarbageCollector::info().name, "garbagecollector");
    gc.configure(
        r#"{"owner": {"group": "apps", "version": "v1", "kind": "DaemonSet"},
            "dependents": [{"group": "", "version": "v1", "kind": "Pod"},
                           {"group": "apps", "version": "v1", "kind": "ControllerRevision"}],
            "recheckInterval": "2s"}"#,
    )
    .unwrap();
    let info = gc.describe();
    assert_eq!(info.name, "garbagecollector");
    assert_eq!(info.primary.kind, "DaemonSet");
    let watches: Vec<(String, bool)> = info
        .watches
        .iter()
        .map(|w| {
            (
                w.kind.kind.clone(),
                matches!(w.mapping, WatchMapping::Owner),
            )
        })
        .collect();
    assert_eq!(
        watches,
        [
            ("DaemonSet".into(), false),
            ("Pod".into(), true),
            ("ControllerRevision".into(), true)
        ]
    );
}

#[test]
fn background_deletion_collects_the_dependents_of_a_gone_owner() {
    let c = FakeCluster::new();
    let cfg = rs_pods();
    let uid = put_rs(&c, "web");
    for p in ["web-1", "web-2"] {
        put_owned(
            &c,
            &pod(),
            p,
            vec![oref("ReplicaSet", "apps/v1", "web", &uid, true)],
        );
    }
    put_owned(&c, &pod(), "bare", vec![]);
    // a pod of another owner kind with the same name is not ours
    put_owned(
        &c,
        &pod(),
        "job-1",
        vec![oref("Job", "batch/v1", "web", "j", true)],
    );
    settle(&c, &cfg);
    assert!(
        c.writes().is_empty(),
        "a live owner keeps its dependents: {:?}",
        c.writes()
    );

    c.remove(&replica_set(), "ns", "web");
    settle(&c, &cfg);
    assert_eq!(pod_names(&c), ["bare", "job-1"]);
    let w = c.writes();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|w| w.verb == "delete" && w.kind == "Pod"));
}

#[test]
fn foreground_deletion_runs_down_a_chain_of_two_instances() {
    let c = FakeCluster::new();
    let (a, b) = (deploy_rs(), rs_pods());
    let d = c.put(
        &deployment(),
        json!({"metadata": {"name": "web", "namespace": "ns"}}),
    );
    put_owned(
        &c,
        &replica_set(),
        "web-1",
        vec![oref("Deployment", "apps/v1", "web", objects::uid(&d), true)],
    );
    let rs_uid = objects::uid(&c.object(&replica_set(), "ns", "web-1").unwrap()).to_string();
    for p in ["web-1-a", "web-1-b"] {
        c.put(
            &pod(),
            json!({"metadata": {"name": p, "namespace": "ns",
            "finalizers": ["example.com/hold"],
            "ownerReferences": [oref("ReplicaSet", "apps/v1", "web-1", &rs_uid, true)]}}),
        );
    }
    // a dependent that does not block its owner's deletion
    put_owned(
        &c,
        &pod(),
        "web-1-c",
        vec![json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web-1", "uid": rs_uid, "controller": false})],
    );
    settle_all(&c, &[&a, &b]);
    assert!(c.writes().is_empty());

    c.delete(&deployment(), "ns", "web", "Foreground").unwrap();
    settle_all(&c, &[&a, &b]);
    // the ReplicaSet went in the foreground too, and both wait for the pods
    let rs = c
        .object(&replica_set(), "ns", "web-1")
        .expect("the RS waits for its pods");
    assert!(
        objects::is_deleting(&rs) && objects::has_finalizer(&rs, FOREGROUND),
        "{rs}"
    );
    let d = c
        .object(&deployment(), "ns", "web")
        .expect("the Deployment waits for its RS");
    assert!(objects::has_finalizer(&d, FOREGROUND));
    let pods = c.all(&pod());
    assert_eq!(
        pods.len(),
        2,
        "the non-blocking pod is gone, the others terminate"
    );
    assert!(pods.iter().all(objects::is_deleting));
    let key = ObjectKey {
        namespace: "ns".into(),
        name: "web".into(),
    };
    assert!(matches!(
        reconcile(&c, &a, &key),
        Ok(Action::RequeueAfter(1000))
    ));

    // the pods finish terminating
    for p in ["web-1-a", "web-1-b"] {
        c.remove(&pod(), "ns", p);
    }
    settle_all(&c, &[&a, &b]);
    assert!(c.object(&replica_set(), "ns", "web-1").is_none());
    assert!(c.object(&deployment(), "ns", "web").is_none());
}

#[test]
fn foreground_owner_without_blocking_dependents_goes_at_once() {
    let c = FakeCluster::new();
    let cfg = rs_pods();
    let uid = put_rs(&c, "web");
    put_owned(
        &c,
        &pod(),
        "web-1",
        vec![json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "web", "uid": uid})],
    );
    c.delete(&replica_set(), "ns", "web", "Foreground").unwrap();
    let key = ObjectKey {
        namespace: "ns".into(),
        name: "web".into(),
    };
    assert!(matches!(reconcile(&c, &cfg, &key), Ok(Action::AwaitChange)));
    assert!(c.object(&replica_set(), "ns", "web").is_none());
    assert!(pod_names(&c).is_empty());
}

#[test]
fn orphan_deletion_keeps_dependents_and_drops_the_reference() {
    let c = FakeCluster::new();
    let cfg = rs_pods();
    let uid = put_rs(&c, "web");
    let other = put_rs(&c, "other");
    put_owned(
        &c,
        &pod(),
        "web-1",
        vec![oref("ReplicaSet", "apps/v1", "web", &uid, true)],
    );
    put_owned(
        &c,
        &pod(),
        "web-2",
        vec![
            oref("ReplicaSet", "apps/v1", "web", &uid, true),
            oref("ReplicaSet", "apps/v1", "other", &other, false),
        ],
    );
    c.delete(&replica_set(), "ns", "web", "Orphan").unwrap();
    settle(&c, &cfg);
    assert!(
        c.object(&replica_set(), "ns", "web").is_none(),
        "the orphan finalizer is removed"
    );
    assert_eq!(pod_names(&c), ["web-1", "web-2"]);
    let p1 = c.object(&pod(), "ns", "web-1").unwrap();
    assert!(p1["metadata"].get("ownerReferences").is_none(), "{p1}");
    let p2 = c.object(&pod(), "ns", "web-2").unwrap();
    assert_eq!(
        p2["metadata"]["ownerReferences"],
        json!([oref("ReplicaSet", "apps/v1", "other", &other, false)])
    );
}

#[test]
fn a_stale_uid_is_a_dangling_reference() {
    let c = FakeCluster::new();
    let cfg = rs_pods();
    let uid = put_rs(&c, "web");
    put_owned(
        &c,
        &pod(),
        "old",
        vec![oref(
            "ReplicaSet",
            "apps/v1",
            "web",
            "uid-of-an-earlier-web",
            true,
        )],
    );
    put_owned(
        &c,
        &pod(),
        "new",
        vec![oref("ReplicaSet", "apps/v1", "web", &uid, true)],
    );
    settle(&c, &cfg);
    assert_eq!(pod_names(&c), ["new"]);
    assert_eq!(c.writes().len(), 1);
}

/// An Api that may not read Services, as a Plugin without that grant.
struct NoServices<'a>(&'a FakeCluster);

impl Api for NoServices<'_> {
    fn get(&self, k: &KindRef, ns: &str, name: &str) -> Result<Value, ObjectError> {
        if k.kind == "Service" {
            return Err(ObjectError::AccessDenied(
                "no read grant for Service".into(),
            ));
        }
        self.0.get(k, ns, name)
    }
    fn list(&self, k: &KindRef, ns: &str, sel: &str) -> Result<Vec<Value>, ObjectError> {
        self.0.list(k, ns, sel)
    }
    fn create(&self, k: &KindRef, ns: &str, o: &Value) -> Result<Value, ObjectError> {
        self.0.create(k, ns, o)
    }
    fn update(&self, k: &KindRef, ns: &str, o: &Value) -> Result<Value, ObjectError> {
        self.0.update(k, ns, o)
    }
    fn update_status(&self, k: &KindRef, ns: &str, o: &Value) -> Result<Value, ObjectError> {
        self.0.update_status(k, ns, o)
    }
    fn merge_patch(&self, k: &KindRef, ns: &str, n: &str, p: &Value) -> Result<Value, ObjectError> {
        self.0.merge_patch(k, ns, n, p)
    }
    fn delete(&self, k: &KindRef, ns: &str, n: &str, p: &str) -> Result<(), ObjectError> {
        self.0.delete(k, ns, n, p)
    }
    fn now_millis(&self) -> i64 {
        self.0.now_millis()
    }
}

#[test]
fn multiple_owners() {
    let c = FakeCluster::new();
    let cfg = rs_pods();
    let a = put_rs(&c, "a");
    let b = put_rs(&c, "b");
    let svc = c.put(
        &service(),
        json!({"metadata": {"name": "svc", "namespace": "ns"}}),
    );
    let rs_a = oref("ReplicaSet", "apps/v1", "a", &a, true);
    let rs_b = oref("ReplicaSet", "apps/v1", "b", &b, false);
    let svc_ref = oref("Service", "v1", "svc", objects::uid(&svc), false);
    let gone_svc = oref("Service", "v1", "gone", "x", false);
    put_owned(&c, &pod(), "ab", vec![rs_a.clone(), rs_b.clone()]);
    put_owned(&c, &pod(), "a-svc", vec![rs_a.clone(), svc_ref.clone()]);
    put_owned(&c, &pod(), "a-gone", vec![rs_a.clone(), gone_svc.clone()]);
    put_owned(
        &c,
        &pod(),
        "a-unreadable",
        vec![rs_a.clone(), gone_svc.clone()],
    );
    c.remove(&replica_set(), "ns", "a");

    // Without a read grant for Services, a Service owner counts as alive.
    let key = ObjectKey {
        namespace: "ns".into(),
        name: "a".into(),
    };
    let denied = NoServices(&c);
    reconcile(&denied, &cfg, &key).unwrap();
    assert_eq!(pod_names(&c), ["a-gone", "a-svc", "a-unreadable", "ab"]);
    for p in c.all(&pod()) {
        assert!(
            !objects::is_owned_by(&p, &a),
            "the dangling reference is patched out: {p}"
        );
    }
    // With read access, a Service owner that is gone is dangling too.
    c.put(
        &pod(),
        json!({"metadata": {"name": "a-gone", "namespace": "ns",
        "ownerReferences": [rs_a.clone(), gone_svc.clone()]}}),
    );
    reconcile(&c, &cfg, &key).unwrap();
    assert!(c.object(&pod(), "ns", "a-gone").is_none());
    assert_eq!(
        c.object(&pod(), "ns", "ab").unwrap()["metadata"]["ownerReferences"],
        json!([rs_b])
    );
    assert_eq!(
        c.object(&pod(), "ns", "a-svc").unwrap()["metadata"]["ownerReferences"],
        json!([svc_ref])
    );

    // The last owner goes: the dependent goes with it.
    c.remove(&replica_set(), "ns", "b");
    settle(&c, &cfg);
    assert!(c.object(&pod(), "ns", "ab").is_none());
    assert!(c.object(&pod(), "ns", "a-svc").is_some());
}

#[test]
fn cluster_scoped_owners_collect_in_every_namespace() {
    let c = FakeCluster::new();
    let cfg = Config::parse(
        r#"{"owner": {"version": "v1", "kind": "Node"},
            "dependents": [{"version": "v1", "kind": "Pod"}]}"#,
    )
    .unwrap();
    let node = c.put(
        &trellis_sdk::controller::kinds::node(),
        json!({"metadata": {"name": "n1"}}),
    );
    let r = oref("Node", "v1", "n1", objects::uid(&node), false);
    for ns in ["a", "b"] {
        c.put(
            &pod(),
            json!({"metadata": {"name": "p", "namespace": ns, "ownerReferences": [r]}}),
        );
    }
    let key = ObjectKey {
        namespace: String::new(),
        name: "n1".into(),
    };
    reconcile(&c, &cfg, &key).unwrap();
    assert_eq!(c.all(&pod()).len(), 2);
    c.remove(&trellis_sdk::controller::kinds::node(), "", "n1");
    reconcile(&c, &cfg, &key).unwrap();
    assert!(c.all(&pod()).is_empty());
}
