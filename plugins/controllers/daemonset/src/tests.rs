use super::*;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::controller::kinds::event;

const NS: &str = "kube-system";

fn settle(c: &FakeCluster) {
    c.settle(&DaemonSets::info(), |c, k| reconcile(c, &k))
        .unwrap();
}

fn add_node(c: &FakeCluster, name: &str, labels: Value, taints: Value) {
    c.put(
        &node(),
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
    );
}

fn daemonset(c: &FakeCluster, spec_extra: Value) -> Value {
    let mut ds = json!({
        "metadata": {"name": "agent", "namespace": NS},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "a", "image": "agent:1"}]}},
        },
    });
    trellis_sdk::controller::fake::merge(&mut ds["spec"], &spec_extra);
    c.put(&daemon_set(), ds)
}

/// Live (not deleting) daemon pods by target node.
fn pods_on(c: &FakeCluster) -> BTreeMap<String, Vec<Value>> {
    let live: Vec<Value> = c
        .all(&pod())
        .into_iter()
        .filter(|p| !objects::is_deleting(p))
        .collect();
    pods_by_node(&live)
}

fn nodes_with_pods(c: &FakeCluster) -> Vec<String> {
    pods_on(c).keys().cloned().collect()
}

/// Play scheduler and kubelet: bind every pod to its target node and make it Running and Ready.
fn run_all(c: &FakeCluster) {
    for p in c.all(&pod()) {
        if p["status"]["phase"] == "Running" {
            continue;
        }
        let n = target_node(&p).unwrap();
        c.patch(
            &pod(),
            NS,
            objects::name(&p),
            json!({"spec": {"nodeName": n}, "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": objects::rfc3339(c.now())}]}}),
        );
    }
}

fn status(c: &FakeCluster) -> Value {
    c.object(&daemon_set(), NS, "agent").unwrap()["status"].clone()
}

fn bump_template(c: &FakeCluster, image: &str, generation: i64) {
    c.patch(
        &daemon_set(),
        NS,
        "agent",
        json!({"metadata": {"generation": generation},
               "spec": {"template": {"spec": {"containers": [{"name": "a", "image": image}]}}}}),
    );
}

fn deletes(c: &FakeCluster) -> usize {
    c.writes()
        .iter()
        .filter(|w| w.verb == "delete" && w.kind == "Pod")
        .count()
}

#[test]
fn runs_on_every_eligible_node_only() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({"disk": "ssd"}), json!([]));
    add_node(
        &c,
        "n2",
        json!({"disk": "ssd"}),
        json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
    );
    add_node(&c, "n3", json!({"disk": "hdd"}), json!([]));
    add_node(
        &c,
        "n4",
        json!({"disk": "ssd"}),
        json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
               {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
    );
    add_node(
        &c,
        "n5",
        json!({"disk": "ssd"}),
        json!([{"key": "gpu", "effect": "NoSchedule"}]),
    );
    let ds = daemonset(
        &c,
        json!({"template": {"spec": {"nodeSelector": {"disk": "ssd"},
                                      "tolerations": [{"key": "gpu", "operator": "Exists"}]}}}),
    );
    settle(&c);
    assert_eq!(nodes_with_pods(&c), ["n1", "n4", "n5"]);
    let p = &pods_on(&c)["n1"][0];
    assert!(objects::name(p).starts_with("agent-"));
    assert!(
        p["spec"]["nodeName"].is_null(),
        "the scheduler places daemon pods"
    );
    assert_eq!(
        p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]})
    );
    assert_eq!(
        p["metadata"]["labels"][HASH_LABEL],
        template_hash(&ds).as_str()
    );
    assert_eq!(p["metadata"]["labels"][GENERATION_LABEL], "1");
    assert_eq!(p["metadata"]["labels"]["app"], "agent");
    assert!(objects::is_controlled_by(p, objects::uid(&ds)));
    let tols = p["spec"]["tolerations"].as_array().unwrap();
    assert_eq!(
        tols.len(),
        7,
        "the template's toleration and six defaults: {tols:?}"
    );
    let st = status(&c);
    assert_eq!(st["desiredNumberScheduled"], 3);
    assert_eq!(st["currentNumberScheduled"], 3);
    assert_eq!(st["numberReady"], 0);
    assert_eq!(st["numberUnavailable"], 3);
    assert_eq!(st["updatedNumberScheduled"], 3);
    assert_eq!(st["observedGeneration"], 1);
    let created = c
        .all(&event())
        .iter()
        .filter(|e| e["reason"] == "SuccessfulCreate")
        .count();
    assert_eq!(created, 3);

    // The kubelet runs them; status follows and then nothing more is written.
    run_all(&c);
    settle(&c);
    let st = status(&c);
    assert_eq!(
        (st["numberReady"].clone(), st["numberAvailable"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(st["numberUnavailable"], 0);
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
}

#[test]
fn follows_nodes_coming_and_going() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    daemonset(&c, json!({}));
    settle(&c);
    run_all(&c);
    assert_eq!(nodes_with_pods(&c), ["n1"]);

    add_node(&c, "n2", json!({}), json!([]));
    settle(&c);
    assert_eq!(nodes_with_pods(&c), ["n1", "n2"]);
    run_all(&c);

    // A NoExecute taint the pod does not tolerate evicts it; NoSchedule would not.
    add_node(
        &c,
        "n2",
        json!({}),
        json!([{"key": "maint", "effect": "NoSchedule"}]),
    );
    settle(&c);
    assert_eq!(nodes_with_pods(&c), ["n1", "n2"]);
    assert_eq!(status(&c)["desiredNumberScheduled"], 1);
    assert_eq!(status(&c)["numberMisscheduled"], 1);
    add_node(
        &c,
        "n2",
        json!({}),
        json!([{"key": "maint", "effect": "NoExecute"}]),
    );
    settle(&c);
    assert_eq!(nodes_with_pods(&c), ["n1"]);

    // A node that disappears loses its pod (an unscheduled one here).
    add_node(&c, "n3", json!({}), json!([]));
    settle(&c);
    assert_eq!(nodes_with_pods(&c), ["n1", "n3"]);
    c.remove(&node(), "", "n3");
    settle(&c);
    assert_eq!(nodes_with_pods(&c), ["n1"]);
    let st = status(&c);
    assert_eq!(st["desiredNumberScheduled"], 1);
    assert_eq!(st["currentNumberScheduled"], 1);
    assert_eq!(st["numberMisscheduled"], 0);
}

#[test]
fn failed_and_excess_pods_are_replaced() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    let ds = daemonset(&c, json!({}));
    settle(&c);
    run_all(&c);
    let first = pods_on(&c)["n1"][0].clone();
    // A second daemon pod on the node (an older controller's): the newer goes.
    c.advance(5_000);
    let mut extra = new_pod(&ds, "n1", &template_hash(&ds));
    extra["metadata"]["name"] = json!("agent-extra");
    c.put(&pod(), extra);
    settle(&c);
    assert_eq!(pods_on(&c)["n1"].len(), 1);
    assert_eq!(objects::name(&pods_on(&c)["n1"][0]), objects::name(&first));

    c.patch(
        &pod(),
        NS,
        objects::name(&first),
        json!({"status": {"phase": "Failed"}}),
    );
    settle(&c);
    let now = &pods_on(&c)["n1"];
    assert_eq!(now.len(), 1);
    assert_ne!(objects::name(&now[0]), objects::name(&first));
    assert!(c
        .all(&event())
        .iter()
        .any(|e| e["reason"] == "FailedDaemonPod"));
}

#[test]
fn adopts_orphans_and_leaves_deleting_sets_alone() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    let ds = daemonset(&c, json!({}));
    let mut orphan = new_pod(&ds, "n1", &template_hash(&ds));
    orphan["metadata"]["name"] = json!("agent-old");
    orphan["metadata"]["ownerReferences"] = json!([]);
    c.put(&pod(), orphan);
    settle(&c);
    let pods = c.all(&pod());
    assert_eq!(pods.len(), 1);
    assert!(objects::is_controlled_by(&pods[0], objects::uid(&ds)));

    c.patch(
        &daemon_set(),
        NS,
        "agent",
        json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
    );
    add_node(&c, "n2", json!({}), json!([]));
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
}

#[test]
fn rolling_update_is_bounded_by_max_unavailable() {
    let c = FakeCluster::new();
    for n in ["n1", "n2", "n3", "n4"] {
        add_node(&c, n, json!({}), json!([]));
    }
    daemonset(&c, json!({}));
    settle(&c);
    run_all(&c);
    settle(&c);
    assert_eq!(status(&c)["numberAvailable"], 4);

    bump_template(&c, "agent:2", 2);
    let new_hash = template_hash(&c.object(&daemon_set(), NS, "agent").unwrap());
    let updated = |c: &FakeCluster| {
        pods_on(c)
            .values()
            .flatten()
            .filter(|p| p["metadata"]["labels"][HASH_LABEL] == new_hash.as_str())
            .count()
    };
    for round in 1..=4 {
        c.clear_writes();
        settle(&c);
        // One old pod deleted, its replacement created, and nothing more
        // while the replacement is not yet available.
        assert_eq!(deletes(&c), 1, "round {round}: {:?}", c.writes());
        assert_eq!(updated(&c), round);
        assert_eq!(pods_on(&c).len(), 4);
        let st = status(&c);
        assert_eq!(st["updatedNumberScheduled"], round);
        assert_eq!(st["numberUnavailable"], 1);
        assert_eq!(st["observedGeneration"], 2);
        run_all(&c);
    }
    c.clear_writes();
    settle(&c);
    assert_eq!(deletes(&c), 0);
    assert_eq!(status(&c)["numberAvailable"], 4);
    assert_eq!(status(&c)["updatedNumberScheduled"], 4);
}

#[test]
fn rolling_update_with_percent_and_min_ready_seconds() {
    let c = FakeCluster::new();
    for n in ["n1", "n2", "n3", "n4"] {
        add_node(&c, n, json!({}), json!([]));
    }
    daemonset(
        &c,
        json!({"minReadySeconds": 10,
               "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}}),
    );
    settle(&c);
    run_all(&c);
    settle(&c);
    assert_eq!(status(&c)["numberReady"], 4);
    assert_eq!(status(&c)["numberAvailable"], 0);
    assert!(matches!(
        reconcile(
            &c,
            &ObjectKey {
                namespace: NS.into(),
                name: "agent".into()
            }
        )
        .unwrap(),
        Action::RequeueAfter(10_000)
    ));
    c.advance(10_000);
    settle(&c);
    assert_eq!(status(&c)["numberAvailable"], 4);

    bump_template(&c, "agent:2", 2);
    c.clear_writes();
    settle(&c);
    assert_eq!(deletes(&c), 2, "{:?}", c.writes());
    // Ready but not yet available for 10 s: no further deletions.
    run_all(&c);
    c.clear_writes();
    settle(&c);
    assert_eq!(deletes(&c), 0);
    c.advance(10_000);
    settle(&c);
    assert_eq!(deletes(&c), 2);
}

#[test]
fn on_delete_leaves_old_pods() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    daemonset(&c, json!({"updateStrategy": {"type": "OnDelete"}}));
    settle(&c);
    run_all(&c);
    bump_template(&c, "agent:2", 2);
    c.clear_writes();
    settle(&c);
    assert_eq!(deletes(&c), 0);
    assert_eq!(status(&c)["updatedNumberScheduled"], 0);
    // Deleted by the user: the replacement is new.
    let old = pods_on(&c)["n1"][0].clone();
    c.remove(&pod(), NS, objects::name(&old));
    settle(&c);
    assert_eq!(status(&c)["updatedNumberScheduled"], 1);
}

#[test]
fn surge_creates_before_deleting() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    add_node(&c, "n2", json!({}), json!([]));
    daemonset(
        &c,
        json!({"updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}),
    );
    settle(&c);
    run_all(&c);
    bump_template(&c, "agent:2", 2);
    c.clear_writes();
    settle(&c);
    assert_eq!(deletes(&c), 0);
    let on = pods_on(&c);
    assert_eq!(
        on.values().map(Vec::len).sum::<usize>(),
        3,
        "one surge pod: {on:?}"
    );
    // The new pod becomes available: its old pod goes, the next node surges.
    run_all(&c);
    c.clear_writes();
    settle(&c);
    assert_eq!(deletes(&c), 1);
    assert_eq!(pods_on(&c).values().map(Vec::len).sum::<usize>(), 3);
    run_all(&c);
    settle(&c);
    assert_eq!(pods_on(&c).values().map(Vec::len).sum::<usize>(), 2);
    assert_eq!(status(&c)["updatedNumberScheduled"], 2);
    assert_eq!(status(&c)["numberAvailable"], 2);
}

#[test]
fn configuration_takes_no_keys() {
    let mut d = DaemonSets;
    assert!(d.configure("{}").is_ok());
    assert!(d.configure("").is_ok());
    assert!(matches!(
        d.configure(r#"{"x": 1}"#),
        Err(PluginError::InvalidConfig(_))
    ));
}

fn revisions(c: &FakeCluster) -> Vec<Value> {
    let mut revs = c.all(&controller_revision());
    revs.sort_by_key(history::number);
    revs
}

/// Settle and play the kubelet until every live pod carries `hash`.
fn roll_to(c: &FakeCluster, hash: &str) {
    for _ in 0..10 {
        settle(c);
        run_all(c);
        let pods = pods_on(c);
        if pods
            .values()
            .flatten()
            .all(|p| p["metadata"]["labels"][HASH_LABEL] == hash)
        {
            settle(c);
            return;
        }
    }
    panic!("pods did not roll to {hash}: {:?}", pods_on(c));
}

fn revision_creates(c: &FakeCluster) -> usize {
    c.writes()
        .iter()
        .filter(|w| w.verb == "create" && w.kind == "ControllerRevision")
        .count()
}

#[test]
fn revisions_record_the_templates_and_follow_undo() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    add_node(&c, "n2", json!({}), json!([]));
    let ds = daemonset(&c, json!({}));
    settle(&c);
    let revs = revisions(&c);
    assert_eq!(revs.len(), 1);
    let r1 = revs[0].clone();
    let h1 = template_hash(&ds);
    assert_eq!(objects::name(&r1), format!("agent-{h1}"));
    assert_eq!(objects::namespace(&r1), NS);
    assert_eq!(r1["revision"], 1);
    assert_eq!(
        r1["metadata"]["labels"],
        json!({"app": "agent", HASH_LABEL: h1})
    );
    assert_eq!(
        r1["data"],
        json!({"spec": {"template": {"$patch": "replace",
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"containers": [{"name": "a", "image": "agent:1"}]}}}})
    );
    let owner = &r1["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "DaemonSet");
    assert_eq!(owner["apiVersion"], "apps/v1");
    assert_eq!(owner["name"], "agent");
    assert_eq!(owner["uid"], objects::uid(&ds));
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert!(pods_on(&c)
        .values()
        .flatten()
        .all(|p| p["metadata"]["labels"][HASH_LABEL] == h1.as_str()));
    run_all(&c);

    // A new template: revision 2, and the pods roll to its hash.
    bump_template(&c, "agent:2", 2);
    settle(&c);
    let revs = revisions(&c);
    assert_eq!(revs.len(), 2);
    let r2 = revs[1].clone();
    assert_eq!(r2["revision"], 2);
    let h2 = history::hash_of(&r2).to_string();
    assert_ne!(h1, h2);
    assert_eq!(objects::name(&r2), format!("agent-{h2}"));
    assert_eq!(
        r2["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "agent:2"
    );
    roll_to(&c, &h2);
    assert_eq!(status(&c)["updatedNumberScheduled"], 2);
    assert_eq!(revisions(&c).len(), 2);

    // `kubectl rollout undo --to-revision=1`: the DaemonSet's template becomes
    // revision 1's again; that revision is renumbered 3, no new one is made.
    let mut template = r1["data"]["spec"]["template"].clone();
    template.as_object_mut().unwrap().remove("$patch");
    let mut cur = c.object(&daemon_set(), NS, "agent").unwrap();
    cur["spec"]["template"] = template;
    cur["metadata"]["generation"] = json!(3);
    c.put(&daemon_set(), cur);
    c.clear_writes();
    roll_to(&c, &h1);
    assert_eq!(revision_creates(&c), 0);
    let revs = revisions(&c);
    assert_eq!(revs.len(), 2);
    assert_eq!(objects::name(&revs[1]), objects::name(&r1));
    assert_eq!(revs[1]["revision"], 3);
    assert_eq!(revs[0]["revision"], 2);
    assert_eq!(status(&c)["updatedNumberScheduled"], 2);
}

#[test]
fn history_limit_keeps_revisions_of_live_pods() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    daemonset(
        &c,
        json!({"revisionHistoryLimit": 1, "updateStrategy": {"type": "OnDelete"}}),
    );
    settle(&c);
    run_all(&c);
    let h1 = history::hash_of(&revisions(&c)[0]).to_string();
    for (i, image) in ["agent:2", "agent:3", "agent:4", "agent:5"]
        .into_iter()
        .enumerate()
    {
        bump_template(&c, image, i as i64 + 2);
        settle(&c);
    }
    // Revision 1 stays for the old pod still running it; 2 to 4 are trimmed.
    let revs = revisions(&c);
    let numbers: Vec<i64> = revs.iter().map(history::number).collect();
    assert_eq!(numbers, [1, 5]);
    assert_eq!(history::hash_of(&revs[0]), h1);
    assert_eq!(
        revs[1]["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "agent:5"
    );
    // Once the pod is replaced nothing needs revision 1 beyond the limit...
    let old = pods_on(&c)["n1"][0].clone();
    c.remove(&pod(), NS, objects::name(&old));
    settle(&c);
    assert_eq!(
        revisions(&c).len(),
        2,
        "one old revision is within the limit"
    );
    // ...and with a limit of 0 it goes.
    c.patch(
        &daemon_set(),
        NS,
        "agent",
        json!({"spec": {"revisionHistoryLimit": 0}}),
    );
    settle(&c);
    let numbers: Vec<i64> = revisions(&c).iter().map(history::number).collect();
    assert_eq!(numbers, [5]);
}

#[test]
fn default_history_limit_is_ten() {
    let c = FakeCluster::new();
    daemonset(&c, json!({}));
    settle(&c);
    for g in 2..=14 {
        bump_template(&c, &format!("agent:{g}"), g);
        settle(&c);
    }
    let numbers: Vec<i64> = revisions(&c).iter().map(history::number).collect();
    assert_eq!(numbers, (4..=14).collect::<Vec<_>>());
}

#[test]
fn name_collision_bumps_collision_count() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    let ds = daemonset(&c, json!({}));
    let taken = format!("agent-{}", template_hash(&ds));
    c.put(
        &controller_revision(),
        json!({"metadata": {"name": taken, "namespace": NS, "labels": {"other": "x"}},
               "data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 1}),
    );
    assert!(reconcile(
        &c,
        &ObjectKey {
            namespace: NS.into(),
            name: "agent".into()
        }
    )
    .is_err());
    assert_eq!(status(&c)["collisionCount"], 1);
    settle(&c);
    let ds = c.object(&daemon_set(), NS, "agent").unwrap();
    let hash = template_hash(&ds);
    assert_ne!(format!("agent-{hash}"), taken);
    let ours = c
        .object(&controller_revision(), NS, &format!("agent-{hash}"))
        .unwrap();
    assert_eq!(ours["revision"], 1);
    assert_eq!(history::hash_of(&ours), hash);
    assert_eq!(
        pods_on(&c)["n1"][0]["metadata"]["labels"][HASH_LABEL],
        hash.as_str()
    );
    assert_eq!(status(&c)["collisionCount"], 1);
}

#[test]
fn duplicate_revisions_are_merged_into_the_newest() {
    let c = FakeCluster::new();
    add_node(&c, "n1", json!({}), json!([]));
    let ds = daemonset(&c, json!({}));
    settle(&c);
    let r1 = revisions(&c)[0].clone();
    // A second revision of the same template (as a collision leaves behind),
    // newer, which the pod does not carry.
    let mut dup = r1.clone();
    dup["metadata"] = json!({"name": "agent-dup", "namespace": NS,
        "labels": {"app": "agent", HASH_LABEL: "dup"},
        "ownerReferences": [objects::controller_owner_ref(&ds, &daemon_set())]});
    dup["revision"] = json!(2);
    c.put(&controller_revision(), dup);
    settle(&c);
    let revs = revisions(&c);
    assert_eq!(revs.len(), 1);
    assert_eq!(objects::name(&revs[0]), "agent-dup");
    assert_eq!(
        pods_on(&c)["n1"][0]["metadata"]["labels"][HASH_LABEL],
        "dup"
    );
    assert!(c
        .object(&controller_revision(), NS, objects::name(&r1))
        .is_none());
}
