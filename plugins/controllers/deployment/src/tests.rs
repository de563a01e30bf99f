use super::*;
use trellis_sdk::controller::fake::FakeCluster;

const NS: &str = "default";

fn dep(replicas: i64, image: &str) -> Value {
    json!({"metadata": {"name": "web", "namespace": NS,
            "annotations": {"team": "a", LAST_APPLIED: "{}"}},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "c", "image": image}]}}}})
}

fn key() -> ObjectKey {
    ObjectKey {
        namespace: NS.into(),
        name: "web".into(),
    }
}

fn d(c: &FakeCluster) -> Value {
    c.object(&deployment(), NS, "web").unwrap()
}

/// The Deployment's ReplicaSets, by revision.
fn rss(c: &FakeCluster) -> Vec<Value> {
    let mut v = c.all(&replica_set());
    v.sort_by_key(|r| revision(r).unwrap_or(0));
    v
}

fn by_image(c: &FakeCluster, image: &str) -> Value {
    c.all(&replica_set())
        .into_iter()
        .find(|r| r["spec"]["template"]["spec"]["containers"][0]["image"] == image)
        .unwrap_or_else(|| panic!("no replica set for {image}"))
}

fn events(c: &FakeCluster) -> Vec<String> {
    c.all(&kinds::event())
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn settle(c: &FakeCluster) {
    c.settle(&Deployments::info(), |c, k| reconcile(c, &k))
        .unwrap();
}

/// Settle, checking the rolling update's bounds after every reconcile:
/// pods that exist are the ReplicaSets' specs, available ones at most what
/// the (test-played) ReplicaSet controller reported, never more than spec.
/// No reconcile may take availability below `desired - unavailable` (or
/// below what it was, when it already was lower: after a scale-up) nor the
/// total above `desired + surge` (or what it was).
fn settle_checked(c: &FakeCluster, desired: i64, surge: i64, unavailable: i64) {
    let counts = |c: &FakeCluster| {
        let all = c.all(&replica_set());
        (
            all.iter().map(spec_replicas).sum::<i64>(),
            all.iter().map(available).sum::<i64>(),
        )
    };
    c.settle(&Deployments::info(), |c, k| {
        let (total0, avail0) = counts(c);
        let r = reconcile(c, &k);
        let (total, avail) = counts(c);
        assert!(
            total <= total0.max(desired + surge),
            "{total} pods > {desired} + {surge}: {}",
            sizes(c)
        );
        assert!(
            avail >= avail0.min(desired - unavailable),
            "{avail} available < {desired} - {unavailable}: {}",
            sizes(c)
        );
        r
    })
    .unwrap();
}

fn sizes(c: &FakeCluster) -> String {
    rss(c)
        .iter()
        .map(|r| {
            format!(
                "{}={}/{}",
                objects::name(r),
                status_i(r, "availableReplicas"),
                spec_replicas(r)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Play the ReplicaSet controller and kubelet: every ReplicaSet's pods exist,
/// and at most `step` more of them become ready and available.
fn progress(c: &FakeCluster, step: i64) {
    for rs in c.all(&replica_set()) {
        let spec = spec_replicas(&rs);
        let avail = status_i(&rs, "availableReplicas").min(spec);
        let now = (avail + step).min(spec);
        c.patch(
            &replica_set(),
            NS,
            objects::name(&rs),
            json!({"status": {
            "replicas": spec, "readyReplicas": now, "availableReplicas": now,
            "observedGeneration": objects::generation(&rs)}}),
        );
    }
}

/// What `kubectl rollout status` prints for the Deployment.
fn rollout_status(c: &FakeCluster) -> String {
    let d = d(c);
    let s = &d["status"];
    let g = |f: &str| s[f].as_i64().unwrap_or(0);
    if objects::generation(&d) > g("observedGeneration") {
        return "Waiting for deployment spec update to be observed...".into();
    }
    if condition(s, "Progressing").is_some_and(|c| c["reason"] == TIMED_OUT) {
        return "error: deployment \"web\" exceeded its progress deadline".into();
    }
    let want = spec_replicas(&d);
    if g("updatedReplicas") < want {
        return format!("Waiting for deployment \"web\" rollout to finish: {} out of {want} new replicas have been updated...", g("updatedReplicas"));
    }
    if g("replicas") > g("updatedReplicas") {
        return format!("Waiting for deployment \"web\" rollout to finish: {} old replicas are pending termination...", g("replicas") - g("updatedReplicas"));
    }
    if g("availableReplicas") < g("updatedReplicas") {
        return format!("Waiting for deployment \"web\" rollout to finish: {} of {} updated replicas are available...", g("availableReplicas"), g("updatedReplicas"));
    }
    "deployment \"web\" successfully rolled out".into()
}

/// Settle and progress until the rollout is done; the statuses seen.
fn roll(c: &FakeCluster, desired: i64, surge: i64, unavailable: i64, step: i64) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..200 {
        settle_checked(c, desired, surge, unavailable);
        let s = rollout_status(c);
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s.contains("successfully rolled out") {
            return seen;
        }
        c.advance(1000);
        progress(c, step);
    }
    panic!("the rollout did not finish: {seen:?} {}", sizes(c));
}

fn set_image(c: &FakeCluster, image: &str) {
    c.advance(5000);
    let mut o = d(c);
    o["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    c.update(&deployment(), NS, &o).unwrap();
}

#[test]
fn a_new_deployment_gets_one_replica_set_and_completes() {
    let c = FakeCluster::new();
    c.put(&deployment(), dep(3, "nginx:1"));
    settle(&c);
    let all = rss(&c);
    assert_eq!(all.len(), 1);
    let rs = &all[0];
    let hash = rs["metadata"]["labels"][POD_TEMPLATE_HASH]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(objects::name(rs), format!("web-{hash}"));
    assert_eq!(
        hash,
        template_hash(&dep(3, "nginx:1")["spec"]["template"], None)
    );
    assert_eq!(
        rs["spec"]["selector"]["matchLabels"][POD_TEMPLATE_HASH],
        hash.as_str()
    );
    assert_eq!(
        rs["spec"]["template"]["metadata"]["labels"][POD_TEMPLATE_HASH],
        hash.as_str()
    );
    assert_eq!(rs["metadata"]["labels"]["app"], "web");
    assert_eq!(rs["spec"]["replicas"], 3);
    let ann = &rs["metadata"]["annotations"];
    assert_eq!(ann[REVISION], "1");
    assert_eq!(ann[DESIRED_REPLICAS], "3");
    assert_eq!(ann[MAX_REPLICAS], "4", "25% of 3 rounded up");
    assert_eq!(ann["team"], "a");
    assert!(ann[LAST_APPLIED].is_null());
    let r = &rs["metadata"]["ownerReferences"][0];
    assert_eq!(
        (r["kind"].as_str(), r["controller"].as_bool()),
        (Some("Deployment"), Some(true))
    );
    assert_eq!(d(&c)["metadata"]["annotations"][REVISION], "1");
    assert_eq!(
        events(&c),
        vec![format!("Scaled up replica set web-{hash} to 3")]
    );
    let cond = condition(&d(&c)["status"], "Progressing").unwrap().clone();
    assert_eq!(cond["reason"], NEW_RS_CREATED);
    assert_eq!(
        cond["message"],
        format!("Created new replica set \"web-{hash}\"")
    );
    assert_eq!(
        condition(&d(&c)["status"], "Available").unwrap()["reason"],
        "MinimumReplicasUnavailable"
    );
    assert_eq!(rollout_status(&c), "Waiting for deployment \"web\" rollout to finish: 0 out of 3 new replicas have been updated...");

    progress(&c, 3);
    settle(&c);
    let st = d(&c)["status"].clone();
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["updatedReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(st["observedGeneration"], 1);
    let p = condition(&st, "Progressing").unwrap();
    assert_eq!(p["reason"], NEW_RS_AVAILABLE);
    assert_eq!(
        p["message"],
        format!("ReplicaSet \"web-{hash}\" has successfully progressed.")
    );
    let a = condition(&st, "Available").unwrap();
    assert_eq!(
        (a["status"].as_str(), a["reason"].as_str()),
        (Some("True"), Some("MinimumReplicasAvailable"))
    );
    assert_eq!(
        rollout_status(&c),
        "deployment \"web\" successfully rolled out"
    );
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
}

#[test]
fn rolling_updates_stay_within_surge_and_unavailability() {
    // (replicas, maxSurge, maxUnavailable, resolved surge, resolved unavailable, pods ready per step)
    let cases = [
        (3, Value::Null, Value::Null, 1, 0, 1),
        (10, json!(3), json!(2), 3, 2, 2),
        (10, json!("50%"), json!("0%"), 5, 0, 3),
        (4, json!(0), json!(1), 0, 1, 1),
        (5, json!("0%"), json!("10%"), 0, 1, 1), // both resolve to 0: maxUnavailable 1
        (1, json!(1), json!(0), 1, 0, 1),
    ];
    for (replicas, ms, mu, surge, unavail, step) in cases {
        let c = FakeCluster::new();
        let mut o = dep(replicas, "nginx:1");
        if !ms.is_null() {
            o["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": ms, "maxUnavailable": mu}});
        }
        c.put(&deployment(), o);
        assert_eq!(max_surge(&d(&c)), surge);
        assert_eq!(max_unavailable(&d(&c)), unavail);
        settle(&c);
        progress(&c, replicas);
        settle(&c);
        set_image(&c, "nginx:2");
        let seen = roll(&c, replicas, surge, unavail, step);
        assert!(
            seen[0].starts_with("Waiting for deployment \"web\" rollout to finish: "),
            "{seen:?}"
        );
        let all = rss(&c);
        assert_eq!(all.len(), 2);
        assert_eq!(spec_replicas(&all[0]), 0);
        assert_eq!(spec_replicas(&all[1]), replicas);
        assert_eq!(all[1]["metadata"]["annotations"][REVISION], "2");
        assert_eq!(d(&c)["metadata"]["annotations"][REVISION], "2");
        let p = condition(&d(&c)["status"], "Progressing").unwrap().clone();
        assert_eq!(p["reason"], NEW_RS_AVAILABLE, "{replicas}");
    }
}

#[test]
fn rollout_status_messages_follow_the_rollout() {
    let c = FakeCluster::new();
    c.put(&deployment(), dep(3, "nginx:1"));
    settle(&c);
    progress(&c, 3);
    settle(&c);
    set_image(&c, "nginx:2");
    let seen = roll(&c, 3, 1, 0, 1);
    assert!(seen.contains(&"Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...".into()), "{seen:?}");
    assert!(seen.contains(&"Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...".into()), "{seen:?}");
    let new = by_image(&c, "nginx:2");
    let old = by_image(&c, "nginx:1");
    let ev = events(&c);
    assert!(
        ev.contains(&format!(
            "Scaled up replica set {} to 1",
            objects::name(&new)
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&format!(
            "Scaled down replica set {} to 2 from 3",
            objects::name(&old)
        )),
        "{ev:?}"
    );
    assert!(
        ev.contains(&format!(
            "Scaled up replica set {} to 2 from 1",
            objects::name(&new)
        )),
        "{ev:?}"
    );
}

#[test]
fn recreate_scales_old_to_zero_and_waits_for_their_pods() {
    let c = FakeCluster::new();
    let mut o = dep(3, "nginx:1");
    o["spec"]["strategy"] = json!({"type": "Recreate"});
    c.put(&deployment(), o);
    settle(&c);
    progress(&c, 3);
    settle(&c);
    set_image(&c, "nginx:2");
    settle(&c);
    let all = rss(&c);
    assert_eq!(all.len(), 1, "no new replica set while old pods run");
    assert_eq!(spec_replicas(&all[0]), 0);
    // the old pods still run: nothing new yet
    settle(&c);
    assert_eq!(rss(&c).len(), 1);
    // the ReplicaSet controller reports them gone
    c.patch(
        &replica_set(),
        NS,
        objects::name(&all[0]),
        json!({"status": {"replicas": 0, "readyReplicas": 0,
        "availableReplicas": 0, "observedGeneration": objects::generation(&all[0])}}),
    );
    settle(&c);
    let new = by_image(&c, "nginx:2");
    assert_eq!(spec_replicas(&new), 3);
    assert_eq!(new["metadata"]["annotations"][REVISION], "2");
    assert_eq!(
        new["metadata"]["annotations"][MAX_REPLICAS], "3",
        "no surge with Recreate"
    );
    progress(&c, 3);
    settle(&c);
    assert_eq!(
        rollout_status(&c),
        "deployment \"web\" successfully rolled out"
    );
}

#[test]
fn undo_brings_back_the_old_replica_set_with_a_new_revision() {
    let c = FakeCluster::new();
    c.put(&deployment(), dep(3, "nginx:1"));
    settle(&c);
    progress(&c, 3);
    settle(&c);
    set_image(&c, "nginx:2");
    roll(&c, 3, 1, 0, 1);
    // kubectl rollout undo: the revision 1 template, minus pod-template-hash
    let rs1 = by_image(&c, "nginx:1");
    let mut template = rs1["spec"]["template"].clone();
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove(POD_TEMPLATE_HASH);
    c.advance(5000);
    let mut o = d(&c);
    o["spec"]["template"] = template;
    c.update(&deployment(), NS, &o).unwrap();
    roll(&c, 3, 1, 0, 1);
    assert_eq!(c.all(&replica_set()).len(), 2, "no new replica set");
    let rs1 = by_image(&c, "nginx:1");
    assert_eq!(rs1["metadata"]["annotations"][REVISION], "3");
    assert_eq!(rs1["metadata"]["annotations"][REVISION_HISTORY], "1");
    assert_eq!(spec_replicas(&rs1), 3);
    assert_eq!(spec_replicas(&by_image(&c, "nginx:2")), 0);
    assert_eq!(d(&c)["metadata"]["annotations"][REVISION], "3");
    // and again to revision 2's template: history grows
    set_image(&c, "nginx:2");
    roll(&c, 3, 1, 0, 1);
    let rs2 = by_image(&c, "nginx:2");
    assert_eq!(rs2["metadata"]["annotations"][REVISION], "4");
    assert_eq!(rs2["metadata"]["annotations"][REVISION_HISTORY], "2");
}

#[test]
fn scaling_a_settled_deployment_and_mid_rollout() {
    let c = FakeCluster::new();
    let mut o = dep(10, "nginx:1");
    o["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    c.put(&deployment(), o);
    settle(&c);
    progress(&c, 10);
    settle(&c);
    // mid-rollout: old 10 -> 8, new 5 (surge 3 + 2 unavailable)
    set_image(&c, "nginx:2");
    settle(&c);
    let (old, new) = (by_image(&c, "nginx:1"), by_image(&c, "nginx:2"));
    assert_eq!(
        (spec_replicas(&old), spec_replicas(&new)),
        (8, 5),
        "{}",
        sizes(&c)
    );
    // scale to 20 (max 23): the 10 more go 8 -> 8 * 23/13 and 5 -> 5 * 23/13, leftovers to the largest
    let mut o = d(&c);
    o["spec"]["replicas"] = json!(20);
    c.update(&deployment(), NS, &o).unwrap();
    c.clear_writes();
    settle(&c);
    let (old, new) = (by_image(&c, "nginx:1"), by_image(&c, "nginx:2"));
    assert_eq!(
        spec_replicas(&old) + spec_replicas(&new),
        23,
        "{}",
        sizes(&c)
    );
    assert_eq!(
        (spec_replicas(&old), spec_replicas(&new)),
        (14, 9),
        "{}",
        sizes(&c)
    );
    assert_eq!(old["metadata"]["annotations"][DESIRED_REPLICAS], "20");
    assert_eq!(new["metadata"]["annotations"][MAX_REPLICAS], "23");
    roll(&c, 20, 3, 2, 4);
    assert_eq!(spec_replicas(&by_image(&c, "nginx:2")), 20);
    // a settled deployment scales its one replica set
    let mut o = d(&c);
    o["spec"]["replicas"] = json!(5);
    c.update(&deployment(), NS, &o).unwrap();
    settle(&c);
    let new = by_image(&c, "nginx:2");
    assert_eq!(spec_replicas(&new), 5);
    assert!(events(&c).contains(&format!(
        "Scaled down replica set {} to 5 from 20",
        objects::name(&new)
    )));
    assert_eq!(
        d(&c)["status"]["replicas"],
        20,
        "until the ReplicaSet controller reports fewer pods"
    );
    progress(&c, 5);
    settle(&c);
    assert_eq!(
        rollout_status(&c),
        "deployment \"web\" successfully rolled out"
    );
}

#[test]
fn history_limit_deletes_the_oldest_empty_replica_sets() {
    let c = FakeCluster::new();
    let mut o = dep(2, "nginx:1");
    o["spec"]["revisionHistoryLimit"] = json!(2);
    c.put(&deployment(), o);
    settle(&c);
    progress(&c, 2);
    for v in 2..=5 {
        set_image(&c, &format!("nginx:{v}"));
        roll(&c, 2, 1, 0, 2);
        progress(&c, 2);
        settle(&c);
    }
    let revs: Vec<i64> = rss(&c).iter().filter_map(revision).collect();
    assert_eq!(revs, vec![3, 4, 5]);
    assert!(c
        .writes()
        .iter()
        .any(|w| w.verb == "delete" && w.kind == "ReplicaSet"));
}

#[test]
fn progress_deadline_times_out_with_the_clock() {
    let c = FakeCluster::new();
    let mut o = dep(2, "nginx:1");
    o["spec"]["progressDeadlineSeconds"] = json!(60);
    c.put(&deployment(), o);
    settle(&c);
    let a = reconcile(&c, &key()).unwrap();
    assert!(matches!(a, Action::RequeueAfter(61_000)), "{a:?}");
    c.advance(30_000);
    assert!(matches!(
        reconcile(&c, &key()).unwrap(),
        Action::RequeueAfter(31_000)
    ));
    c.advance(31_000);
    settle(&c);
    let st = d(&c)["status"].clone();
    let p = condition(&st, "Progressing").unwrap();
    let rs = &rss(&c)[0];
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("False"), Some(TIMED_OUT))
    );
    assert_eq!(
        p["message"],
        format!(
            "ReplicaSet \"{}\" has timed out progressing.",
            objects::name(rs)
        )
    );
    assert!(matches!(
        reconcile(&c, &key()).unwrap(),
        Action::AwaitChange
    ));
    assert!(rollout_status(&c).contains("exceeded its progress deadline"));
    // pods arrive late: the rollout completes after all
    progress(&c, 2);
    settle(&c);
    assert_eq!(
        condition(&d(&c)["status"], "Progressing").unwrap()["reason"],
        NEW_RS_AVAILABLE
    );
}

#[test]
fn progress_resets_the_deadline() {
    let c = FakeCluster::new();
    let mut o = dep(4, "nginx:1");
    o["spec"]["progressDeadlineSeconds"] = json!(60);
    c.put(&deployment(), o);
    settle(&c);
    for _ in 0..3 {
        c.advance(50_000);
        progress(&c, 1);
        settle(&c);
        let p = condition(&d(&c)["status"], "Progressing").unwrap().clone();
        assert_eq!(p["reason"], RS_UPDATED);
        assert_eq!(
            p["message"],
            format!(
                "ReplicaSet \"{}\" is progressing.",
                objects::name(&rss(&c)[0])
            )
        );
    }
}

#[test]
fn paused_deployments_scale_but_do_not_roll_out() {
    let c = FakeCluster::new();
    c.put(&deployment(), dep(3, "nginx:1"));
    settle(&c);
    progress(&c, 3);
    settle(&c);
    let mut o = d(&c);
    o["spec"]["paused"] = json!(true);
    o["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    c.update(&deployment(), NS, &o).unwrap();
    settle(&c);
    assert_eq!(rss(&c).len(), 1);
    let p = condition(&d(&c)["status"], "Progressing").unwrap().clone();
    assert_eq!(
        (
            p["status"].as_str(),
            p["reason"].as_str(),
            p["message"].as_str()
        ),
        (Some("Unknown"), Some(PAUSED), Some("Deployment is paused"))
    );
    let mut o = d(&c);
    o["spec"]["replicas"] = json!(5);
    c.update(&deployment(), NS, &o).unwrap();
    settle(&c);
    assert_eq!(spec_replicas(&rss(&c)[0]), 5);
    assert!(matches!(
        reconcile(&c, &key()).unwrap(),
        Action::AwaitChange
    ));
    progress(&c, 5);
    settle(&c);
    let mut o = d(&c);
    o["spec"]["paused"] = json!(false);
    c.update(&deployment(), NS, &o).unwrap();
    settle(&c);
    assert_eq!(rss(&c).len(), 2);
    roll(&c, 5, 2, 1, 2);
    assert!(events(&c)
        .iter()
        .any(|e| e.starts_with("Scaled up replica set") && e.ends_with("to 5 from 3")));
}

#[test]
fn a_deployment_created_paused_rolls_out_once_resumed() {
    let c = FakeCluster::new();
    let mut o = dep(1, "nginx:1");
    o["spec"]["paused"] = json!(true);
    c.put(&deployment(), o);
    settle(&c);
    assert!(rss(&c).is_empty(), "a paused deployment creates nothing");
    c.patch(&deployment(), NS, "web", json!({"spec": {"paused": false}}));
    reconcile(&c, &key()).unwrap();
    let st = d(&c)["status"].clone();
    // resumed, then the new replica set is created in the same pass
    assert_eq!(
        condition(&st, "Progressing").unwrap()["reason"],
        NEW_RS_CREATED
    );
    assert_eq!(rss(&c).len(), 1);
}

#[test]
fn orphans_are_adopted_and_hash_collisions_counted() {
    let c = FakeCluster::new();
    let o = dep(2, "nginx:1");
    let hash = template_hash(&o["spec"]["template"], None);
    // someone else's replica set holds the name
    c.put(&replica_set(), json!({"metadata": {"name": format!("web-{hash}"), "namespace": NS,
        "labels": {"app": "other"}}, "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "other"}},
        "template": {"metadata": {"labels": {"app": "other"}}, "spec": {}}}}));
    c.put(&deployment(), o);
    assert!(reconcile(&c, &key()).is_err());
    assert_eq!(d(&c)["status"]["collisionCount"], 1);
    reconcile(&c, &key()).unwrap();
    let mine = by_image(&c, "nginx:1");
    assert_eq!(
        objects::name(&mine),
        format!("web-{}", template_hash(&d(&c)["spec"]["template"], Some(1)))
    );
    // an orphan replica set the selector matches is adopted (and scaled down as old)
    c.put(&replica_set(), json!({"metadata": {"name": "stray", "namespace": NS, "labels": {"app": "web"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "old"}]}}}}));
    progress(&c, 2);
    settle(&c);
    let stray = c.object(&replica_set(), NS, "stray").unwrap();
    assert!(objects::is_controlled_by(&stray, objects::uid(&d(&c))));
    assert_eq!(spec_replicas(&stray), 0);
}

#[test]
fn helpers_match_upstream() {
    assert_eq!(scaled_value(&json!("25%"), 3, true), 1);
    assert_eq!(scaled_value(&json!("25%"), 3, false), 0);
    assert_eq!(scaled_value(&json!(2), 3, false), 2);
    assert_eq!(scaled_value(&Value::Null, 10, true), 3);
    assert!(equal_ignore_hash(
        &json!({"metadata": {"labels": {"a": "b", POD_TEMPLATE_HASH: "x"}}, "spec": {"c": 1}}),
        &json!({"metadata": {"labels": {"a": "b"}}, "spec": {"c": 1}})
    ));
    let mut rs = json!({"metadata": {"annotations": {REVISION: "1", REVISION_HISTORY: "0"}}});
    assert!(set_new_rs_annotations(&dep(1, "x"), &mut rs, 5, true));
    assert_eq!(rs["metadata"]["annotations"][REVISION_HISTORY], "0,1");
    assert_eq!(rs["metadata"]["annotations"][REVISION], "5");
    let mut cfg = Deployments;
    assert!(cfg.configure("{}").is_ok());
    assert!(cfg.configure(r#"{"x": 1}"#).is_err());
}
