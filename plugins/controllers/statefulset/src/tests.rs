use super::*;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::controller::kinds::{controller_revision, event};

const NS: &str = "default";

fn settle(c: &FakeCluster) {
    c.settle(&StatefulSets::info(), |c, k| reconcile(c, &k))
        .unwrap();
}

fn web(c: &FakeCluster, replicas: i64, spec_extra: Value) -> Value {
    let mut set = json!({
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                         "spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}},
        },
    });
    trellis_sdk::controller::fake::merge(&mut set["spec"], &spec_extra);
    c.put(&stateful_set(), set)
}

fn patch_set(c: &FakeCluster, patch: Value) {
    c.patch(&stateful_set(), NS, "web", patch);
}

fn set_template_image(c: &FakeCluster, image: &str, generation: i64) {
    patch_set(
        c,
        json!({"metadata": {"generation": generation},
               "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": image}]}}}}),
    );
}

/// Play kubelet: the pod is Running and Ready (or not) as of now.
fn set_ready(c: &FakeCluster, name: &str, ready: bool) {
    c.patch(
        &pod(),
        NS,
        name,
        json!({"status": {"phase": "Running", "conditions": [{"type": "Ready",
            "status": if ready { "True" } else { "False" },
            "lastTransitionTime": objects::rfc3339(c.now())}]}}),
    );
}

fn pod_names(c: &FakeCluster) -> Vec<String> {
    c.all(&pod())
        .iter()
        .filter(|p| !objects::is_deleting(p))
        .map(|p| objects::name(p).to_string())
        .collect()
}

/// The Pod and claim writes, as "verb Kind name".
fn pod_writes(c: &FakeCluster) -> Vec<String> {
    c.writes()
        .iter()
        .filter(|w| w.kind == "Pod" || w.kind == "PersistentVolumeClaim")
        .map(|w| format!("{} {} {}", w.verb, w.kind, w.name))
        .collect()
}

fn status(c: &FakeCluster) -> Value {
    c.object(&stateful_set(), NS, "web").unwrap()["status"].clone()
}

fn image(c: &FakeCluster, name: &str) -> String {
    c.object(&pod(), NS, name).unwrap()["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Create `n` pods in order, each made ready.
fn bring_up(c: &FakeCluster, n: usize) {
    for i in 0..n {
        settle(c);
        set_ready(c, &format!("web-{i}"), true);
    }
    settle(c);
}

#[test]
fn creates_in_order_with_claims_waiting_for_readiness() {
    let c = FakeCluster::new();
    let set = web(
        &c,
        3,
        json!({"volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"disk": "fast"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}),
    );
    settle(&c);
    assert_eq!(
        pod_writes(&c),
        ["create PersistentVolumeClaim www-web-0", "create Pod web-0"]
    );
    assert_eq!(pod_names(&c), ["web-0"]);
    let p = c.object(&pod(), NS, "web-0").unwrap();
    assert_eq!(p["spec"]["hostname"], "web-0");
    assert_eq!(p["spec"]["subdomain"], "nginx");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-0"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "0");
    assert_eq!(p["metadata"]["labels"]["app"], "nginx");
    assert!(objects::is_controlled_by(&p, objects::uid(&set)));
    assert_eq!(
        p["spec"]["volumes"],
        json!([{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-0"}}])
    );
    let pvc = c
        .object(&persistent_volume_claim(), NS, "www-web-0")
        .unwrap();
    assert_eq!(
        pvc["metadata"]["labels"],
        json!({"disk": "fast", "app": "nginx"})
    );
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "1Gi");
    let revs = c.all(&controller_revision());
    assert_eq!(revs.len(), 1);
    let rev = objects::name(&revs[0]).to_string();
    assert!(rev.starts_with("web-"));
    assert_eq!(
        p["metadata"]["labels"]["controller-revision-hash"],
        rev.as_str()
    );
    assert!(c
        .all(&event())
        .iter()
        .any(|e| e["reason"] == "SuccessfulCreate"
            && e["message"] == "create Pod web-0 in StatefulSet web successful"));
    assert!(c
        .all(&event())
        .iter()
        .any(|e| e["message"] == "create Claim www-web-0 Pod web-0 in StatefulSet web success"));

    // Running but not Ready: web-1 waits.
    c.clear_writes();
    set_ready(&c, "web-0", false);
    settle(&c);
    assert!(pod_writes(&c).is_empty());
    set_ready(&c, "web-0", true);
    settle(&c);
    assert_eq!(
        pod_writes(&c),
        ["create PersistentVolumeClaim www-web-1", "create Pod web-1"]
    );
    set_ready(&c, "web-1", true);
    settle(&c);
    set_ready(&c, "web-2", true);
    settle(&c);
    assert_eq!(
        pod_writes(&c),
        [
            "create PersistentVolumeClaim www-web-1",
            "create Pod web-1",
            "create PersistentVolumeClaim www-web-2",
            "create Pod web-2"
        ]
    );
    let st = status(&c);
    assert_eq!(st["replicas"], 3);
    assert_eq!(st["readyReplicas"], 3);
    assert_eq!(st["availableReplicas"], 3);
    assert_eq!(st["currentReplicas"], 3);
    assert_eq!(st["updatedReplicas"], 3);
    assert_eq!(st["currentRevision"], rev.as_str());
    assert_eq!(st["updateRevision"], rev.as_str());
    assert_eq!(st["observedGeneration"], 1);
    assert_eq!(st["collisionCount"], 0);
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());

    // Claims are kept when the set scales down.
    patch_set(&c, json!({"spec": {"replicas": 0}}));
    settle(&c);
    assert!(pod_names(&c).is_empty());
    assert_eq!(c.all(&persistent_volume_claim()).len(), 3);
}

#[test]
fn scales_down_in_reverse_one_at_a_time() {
    let c = FakeCluster::new();
    web(&c, 3, json!({}));
    bring_up(&c, 3);
    assert_eq!(pod_names(&c), ["web-0", "web-1", "web-2"]);

    // A lower ordinal not Ready blocks the scale-down.
    set_ready(&c, "web-0", false);
    patch_set(
        &c,
        json!({"metadata": {"generation": 2}, "spec": {"replicas": 1}}),
    );
    c.clear_writes();
    settle(&c);
    assert!(pod_writes(&c).is_empty(), "{:?}", pod_writes(&c));

    // web-2 terminates gracefully (a finalizer holds it): web-1 waits for it.
    c.patch(
        &pod(),
        NS,
        "web-2",
        json!({"metadata": {"finalizers": ["test/hold"]}}),
    );
    set_ready(&c, "web-0", true);
    settle(&c);
    assert_eq!(pod_writes(&c), ["delete Pod web-2"]);
    assert!(c.object(&pod(), NS, "web-1").is_some());
    c.remove(&pod(), NS, "web-2");
    settle(&c);
    assert_eq!(pod_writes(&c), ["delete Pod web-2", "delete Pod web-1"]);
    assert_eq!(pod_names(&c), ["web-0"]);
    assert!(c
        .all(&event())
        .iter()
        .any(|e| e["reason"] == "SuccessfulDelete"
            && e["message"] == "delete Pod web-1 in StatefulSet web successful"));
    assert_eq!(status(&c)["replicas"], 1);
}

#[test]
fn parallel_creates_and_deletes_at_once() {
    let c = FakeCluster::new();
    web(&c, 3, json!({"podManagementPolicy": "Parallel"}));
    settle(&c);
    assert_eq!(
        pod_writes(&c),
        ["create Pod web-0", "create Pod web-1", "create Pod web-2"]
    );
    assert_eq!(status(&c)["replicas"], 3);
    assert_eq!(status(&c)["readyReplicas"], 0);
    c.clear_writes();
    patch_set(&c, json!({"spec": {"replicas": 1}}));
    settle(&c);
    assert_eq!(pod_writes(&c), ["delete Pod web-2", "delete Pod web-1"]);
}

#[test]
fn failed_or_deleted_pods_are_recreated() {
    let c = FakeCluster::new();
    web(&c, 2, json!({}));
    bring_up(&c, 2);
    let uid = objects::uid(&c.object(&pod(), NS, "web-1").unwrap()).to_string();
    c.patch(&pod(), NS, "web-1", json!({"status": {"phase": "Failed"}}));
    c.clear_writes();
    settle(&c);
    assert_eq!(pod_writes(&c), ["delete Pod web-1", "create Pod web-1"]);
    assert_ne!(objects::uid(&c.object(&pod(), NS, "web-1").unwrap()), uid);
    assert!(c
        .all(&event())
        .iter()
        .any(|e| e["reason"] == "RecreatingFailedPod"));

    // Someone deletes web-0 and it terminates gracefully: recreated once gone.
    c.patch(
        &pod(),
        NS,
        "web-0",
        json!({"metadata": {"deletionTimestamp": objects::rfc3339(c.now()), "finalizers": ["x"]}}),
    );
    c.clear_writes();
    settle(&c);
    assert!(pod_writes(&c).is_empty());
    c.remove(&pod(), NS, "web-0");
    settle(&c);
    assert_eq!(pod_writes(&c), ["create Pod web-0"]);
}

#[test]
fn rolling_update_respects_partition_from_the_top() {
    let c = FakeCluster::new();
    web(&c, 3, json!({}));
    bring_up(&c, 3);
    let old_rev = status(&c)["currentRevision"].as_str().unwrap().to_string();

    patch_set(
        &c,
        json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}}),
    );
    set_template_image(&c, "nginx:2", 2);
    c.clear_writes();
    settle(&c);
    // web-2 replaced first, and web-1 waits for it to be Running and Ready.
    assert_eq!(pod_writes(&c), ["delete Pod web-2", "create Pod web-2"]);
    assert_eq!(image(&c, "web-2"), "nginx:2");
    let st = status(&c);
    let new_rev = st["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(new_rev, old_rev);
    assert_eq!(st["currentRevision"], old_rev.as_str());
    assert_eq!(st["updatedReplicas"], 1);
    assert_eq!(st["observedGeneration"], 2);
    set_ready(&c, "web-2", true);
    settle(&c);
    assert_eq!(
        pod_writes(&c),
        [
            "delete Pod web-2",
            "create Pod web-2",
            "delete Pod web-1",
            "create Pod web-1"
        ]
    );
    set_ready(&c, "web-1", true);
    settle(&c);
    // web-0 is below the partition: kept at the current revision.
    assert_eq!(image(&c, "web-0"), "nginx:1");
    let st = status(&c);
    assert_eq!(
        (st["currentReplicas"].clone(), st["updatedReplicas"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(st["currentRevision"], old_rev.as_str());

    // Deleted below the partition: recreated at the current revision.
    c.remove(&pod(), NS, "web-0");
    settle(&c);
    assert_eq!(image(&c, "web-0"), "nginx:1");
    set_ready(&c, "web-0", true);

    // Partition 0 finishes the rollout; the current revision follows.
    patch_set(
        &c,
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    );
    settle(&c);
    assert_eq!(image(&c, "web-0"), "nginx:2");
    set_ready(&c, "web-0", true);
    settle(&c);
    let st = status(&c);
    assert_eq!(st["currentRevision"], new_rev.as_str());
    assert_eq!(st["currentReplicas"], 3);
    assert_eq!(st["updatedReplicas"], 3);
    assert_eq!(c.all(&controller_revision()).len(), 2);

    // Rolling back to the first template reuses (renumbers) its revision.
    set_template_image(&c, "nginx:1", 3);
    settle(&c);
    assert_eq!(status(&c)["updateRevision"], old_rev.as_str());
    let revs = c.all(&controller_revision());
    assert_eq!(revs.len(), 2);
    let old = revs.iter().find(|r| objects::name(r) == old_rev).unwrap();
    assert_eq!(old["revision"], 3);
}

#[test]
fn on_delete_waits_for_the_user() {
    let c = FakeCluster::new();
    web(&c, 2, json!({"updateStrategy": {"type": "OnDelete"}}));
    bring_up(&c, 2);
    set_template_image(&c, "nginx:2", 2);
    c.clear_writes();
    settle(&c);
    assert!(pod_writes(&c).is_empty());
    assert_eq!(status(&c)["updatedReplicas"], 0);
    c.remove(&pod(), NS, "web-1");
    settle(&c);
    assert_eq!(image(&c, "web-1"), "nginx:2");
    assert_eq!(image(&c, "web-0"), "nginx:1");
}

#[test]
fn min_ready_seconds_gates_the_next_pod() {
    let c = FakeCluster::new();
    web(&c, 2, json!({"minReadySeconds": 30}));
    settle(&c);
    set_ready(&c, "web-0", true);
    settle(&c);
    assert_eq!(pod_names(&c), ["web-0"]);
    let key = ObjectKey {
        namespace: NS.into(),
        name: "web".into(),
    };
    assert!(matches!(
        reconcile(&c, &key).unwrap(),
        Action::RequeueAfter(30_000)
    ));
    assert_eq!(status(&c)["readyReplicas"], 1);
    assert_eq!(status(&c)["availableReplicas"], 0);
    c.advance(30_000);
    settle(&c);
    assert_eq!(pod_names(&c), ["web-0", "web-1"]);
    assert_eq!(status(&c)["availableReplicas"], 1);
}

#[test]
fn adopts_members_and_history_is_truncated() {
    let c = FakeCluster::new();
    let set = web(&c, 1, json!({"revisionHistoryLimit": 1}));
    let mut orphan = identity::new_pod(&set, &set["spec"]["template"], 0, "web-x");
    orphan["metadata"]["ownerReferences"] = json!([]);
    c.put(&pod(), orphan);
    // Not a member by name: left alone.
    c.put(
        &pod(),
        json!({"metadata": {"name": "other", "namespace": NS, "labels": {"app": "nginx"}}}),
    );
    settle(&c);
    let p = c.object(&pod(), NS, "web-0").unwrap();
    assert!(objects::is_controlled_by(&p, objects::uid(&set)));
    assert!(objects::controller_ref(&c.object(&pod(), NS, "other").unwrap()).is_none());

    // Three templates in turn, each rolled out: at most one unused revision stays.
    for (i, img) in ["nginx:2", "nginx:3", "nginx:4"].iter().enumerate() {
        set_ready(&c, "web-0", true);
        set_template_image(&c, img, 2 + i as i64);
        settle(&c);
        set_ready(&c, "web-0", true);
        settle(&c);
    }
    assert_eq!(image(&c, "web-0"), "nginx:4");
    assert_eq!(c.all(&controller_revision()).len(), 2);
}

#[test]
fn configuration_takes_no_keys() {
    let mut s = StatefulSets;
    assert!(s.configure("{}").is_ok());
    assert!(matches!(
        s.configure(r#"{"x": 1}"#),
        Err(PluginError::InvalidConfig(_))
    ));
}
