use super::*;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::controller::kinds::{config_map, deployment, pod, secret};

/// A namespace the API server is deleting. The fake takes any write to an
/// object with a deletionTimestamp and no `metadata.finalizers` for its last
/// one and removes it; it knows nothing of `spec.finalizers`, so a metadata
/// finalizer keeps the namespace and the tests read `spec.finalizers`.
fn terminating(c: &FakeCluster, name: &str) {
    c.put(
        &namespace(),
        json!({"metadata": {"name": name, "deletionTimestamp": "2023-11-14T22:13:20Z",
        "finalizers": [HOLD]},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}}),
    );
}

const HOLD: &str = "example.com/test-hold";

fn finalized(c: &FakeCluster, name: &str) -> bool {
    c.object(&namespace(), "", name).expect("the namespace")["spec"]["finalizers"] == json!([])
}

fn key(name: &str) -> ObjectKey {
    ObjectKey {
        namespace: String::new(),
        name: name.into(),
    }
}

fn condition(c: &FakeCluster, ns: &str, type_: &str) -> Value {
    let ns = c.object(&namespace(), "", ns).expect("the namespace");
    ns["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or_else(|| panic!("no {type_} in {ns}"))
}

#[test]
fn config_defaults_and_checks() {
    let cfg = Config::parse("{}").unwrap();
    assert_eq!(cfg.recheck_ms, 1000);
    assert_eq!(cfg.kinds.len(), 21);
    assert!(cfg
        .kinds
        .iter()
        .any(|k| k.kind.group == "autoscaling" && k.kind.version == "v2"));
    let cfg = Config::parse(
        r#"{"kinds": [{"version": "v1", "kind": "Pod"}, {"group": "example.com", "version": "v1", "kind": "Widget"}],
            "recheckInterval": "250ms"}"#,
    )
    .unwrap();
    assert_eq!(cfg.recheck_ms, 250);
    assert_eq!(cfg.kinds[0].plural, "pods");
    assert_eq!(cfg.kinds[1].plural, "widgets");
    for bad in [
        r#"{"x": 1}"#,
        r#"{"kinds": [{"kind": "Pod"}]}"#,
        r#"{"recheckInterval": "later"}"#,
        "[]",
    ] {
        assert!(
            matches!(Config::parse(bad), Err(PluginError::InvalidConfig(_))),
            "{bad}"
        );
    }
    let info = NamespaceController::info();
    assert_eq!(
        (info.name.as_str(), info.primary.kind.as_str()),
        ("namespace", "Namespace")
    );
}

#[test]
fn namespaces_not_being_deleted_are_left_alone() {
    let c = FakeCluster::new();
    let cfg = Config::default();
    c.put(
        &namespace(),
        json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"}}),
    );
    c.put(
        &config_map(),
        json!({"metadata": {"name": "x", "namespace": "a"}}),
    );
    assert!(matches!(
        reconcile(&c, &cfg, &key("a")),
        Ok(Action::AwaitChange)
    ));
    assert!(matches!(
        reconcile(&c, &cfg, &key("gone")),
        Ok(Action::AwaitChange)
    ));
    assert!(c.writes().is_empty());
}

#[test]
fn a_terminating_namespace_is_emptied_then_finalized() {
    let c = FakeCluster::new();
    let cfg = Config::default();
    terminating(&c, "t");
    c.put(
        &namespace(),
        json!({"metadata": {"name": "other"}, "spec": {"finalizers": ["kubernetes"]}}),
    );
    for p in ["a", "b"] {
        // pods that terminate for a while: a finalizer keeps them in the fake
        c.put(
            &pod(),
            json!({"metadata": {"name": p, "namespace": "t", "finalizers": ["example.com/hold"]},
            "spec": {"nodeName": "n1"}}),
        );
    }
    c.put(
        &config_map(),
        json!({"metadata": {"name": "cm", "namespace": "t"}}),
    );
    c.put(
        &secret(),
        json!({"metadata": {"name": "s", "namespace": "t"}}),
    );
    c.put(
        &deployment(),
        json!({"metadata": {"name": "web", "namespace": "t"}}),
    );
    c.put(
        &config_map(),
        json!({"metadata": {"name": "cm", "namespace": "other"}}),
    );

    assert!(matches!(
        reconcile(&c, &cfg, &key("t")),
        Ok(Action::RequeueAfter(1000))
    ));
    assert!(c
        .all(&config_map())
        .iter()
        .all(|cm| objects::namespace(cm) == "other"));
    assert!(c.all(&secret()).is_empty() && c.all(&deployment()).is_empty());
    let pods = c.all(&pod());
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(objects::is_deleting));
    let remaining = condition(&c, "t", "NamespaceContentRemaining");
    assert_eq!(remaining["status"], "True");
    assert_eq!(remaining["reason"], "SomeResourcesRemain");
    assert_eq!(
        remaining["message"],
        "Some resources are remaining: pods. has 2 resource instances"
    );
    let fin = condition(&c, "t", "NamespaceFinalizersRemaining");
    assert_eq!(fin["message"], "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances");
    let disc = condition(&c, "t", "NamespaceDeletionDiscoveryFailure");
    assert_eq!(
        (disc["status"].as_str(), disc["reason"].as_str()),
        (Some("False"), Some("ResourcesDiscovered"))
    );
    assert_eq!(
        condition(&c, "t", "NamespaceDeletionContentFailure")["status"],
        "False"
    );
    let ns = c.object(&namespace(), "", "t").unwrap();
    let types: Vec<&str> = ns["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "NamespaceDeletionDiscoveryFailure",
            "NamespaceDeletionGroupVersionParsingFailure",
            "NamespaceDeletionContentFailure",
            "NamespaceContentRemaining",
            "NamespaceFinalizersRemaining",
        ]
    );

    // Nothing changed: no write (no second delete of the terminating pods, no status).
    c.clear_writes();
    c.advance(1000);
    assert!(matches!(
        reconcile(&c, &cfg, &key("t")),
        Ok(Action::RequeueAfter(1000))
    ));
    assert!(c.writes().is_empty(), "{:?}", c.writes());

    // One pod is gone: the message changes.
    c.remove(&pod(), "t", "a");
    reconcile(&c, &cfg, &key("t")).unwrap();
    assert_eq!(
        condition(&c, "t", "NamespaceContentRemaining")["message"],
        "Some resources are remaining: pods. has 1 resource instances"
    );

    // The last one: all conditions go False, then the finalizer is removed and the namespace goes.
    c.remove(&pod(), "t", "b");
    c.clear_writes();
    c.settle(&NamespaceController::info(), |c, k| reconcile(c, &cfg, &k))
        .unwrap();
    let verbs: Vec<&str> = c.writes().iter().map(|w| w.verb).collect();
    assert_eq!(verbs, ["update-status", "update"]);
    assert!(finalized(&c, "t"));
    assert!(c.object(&namespace(), "", "other").is_some());
    assert!(c.object(&config_map(), "other", "cm").is_some());
}

#[test]
fn finalized_but_held_namespaces_are_left_alone() {
    let c = FakeCluster::new();
    c.put(&namespace(), json!({"metadata": {"name": "t", "deletionTimestamp": "2023-11-14T22:13:20Z",
        "finalizers": ["example.com/other"]}, "spec": {"finalizers": []}, "status": {"phase": "Terminating"}}));
    c.put(
        &config_map(),
        json!({"metadata": {"name": "cm", "namespace": "t"}}),
    );
    assert!(matches!(
        reconcile(&c, &Config::default(), &key("t")),
        Ok(Action::AwaitChange)
    ));
    assert!(c.writes().is_empty());
}

/// An Api that may not list Secrets, as a Plugin without that grant.
struct NoSecrets<'a>(&'a FakeCluster);

impl Api for NoSecrets<'_> {
    fn get(&self, k: &KindRef, ns: &str, name: &str) -> Result<Value, ObjectError> {
        self.0.get(k, ns, name)
    }
    fn list(&self, k: &KindRef, ns: &str, sel: &str) -> Result<Vec<Value>, ObjectError> {
        if k.kind == "Secret" {
            return Err(ObjectError::AccessDenied("no read grant for Secret".into()));
        }
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
fn a_kind_that_cannot_be_listed_blocks_and_is_reported() {
    let c = FakeCluster::new();
    let cfg = Config::parse(r#"{"kinds": [{"version": "v1", "kind": "ConfigMap"}, {"version": "v1", "kind": "Secret"}]}"#).unwrap();
    terminating(&c, "t");
    c.put(
        &config_map(),
        json!({"metadata": {"name": "cm", "namespace": "t"}}),
    );
    let api = NoSecrets(&c);
    assert!(matches!(
        reconcile(&api, &cfg, &key("t")),
        Err(PluginError::Internal(_))
    ));
    assert!(
        c.all(&config_map()).is_empty(),
        "the other kinds are still emptied"
    );
    let failure = condition(&c, "t", "NamespaceDeletionContentFailure");
    assert_eq!(failure["status"], "True");
    assert_eq!(failure["reason"], "ContentDeletionFailed");
    assert_eq!(
        failure["message"],
        "Failed to delete all resource types, 1 remaining: failed to list secrets.: no read grant for Secret"
    );
    let ns = c
        .object(&namespace(), "", "t")
        .expect("blocked, not finalized");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    // the same failure again writes nothing
    c.clear_writes();
    assert!(reconcile(&api, &cfg, &key("t")).is_err());
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    // with the grant, it finishes
    reconcile(&c, &cfg, &key("t")).unwrap();
    assert!(finalized(&c, "t"));
}
