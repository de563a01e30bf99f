use super::*;
use trellis_sdk::controller::fake::FakeCluster;

const NS: &str = "default";

/// A Job as the API server stores it: defaulted spec, selector and labels.
fn put_job(c: &FakeCluster, name: &str, spec: Value) -> Value {
    let uid = format!("uid-{name}");
    let mut spec = spec;
    let defaults = json!({"parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
                          "suspend": false, "podReplacementPolicy": "TerminatingOrFailed"});
    if spec.get("completions").is_none() && spec.get("parallelism").is_none() {
        spec["completions"] = json!(1);
    }
    for (k, v) in defaults.as_object().unwrap() {
        if spec.get(k).is_none() {
            spec[k] = v.clone();
        }
    }
    if spec.get("template").is_none() {
        spec["template"] = json!({"spec": {"restartPolicy": "Never",
            "containers": [{"name": "pi", "image": "perl", "command": ["perl", "-e", "1"]}]}});
    }
    spec["template"]["metadata"]["labels"] = json!({
        "batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
        "controller-uid": uid, "job-name": name});
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    c.put(
        &job(),
        json!({"metadata": {"name": name, "namespace": NS, "uid": uid}, "spec": spec}),
    )
}

fn settle_with(c: &FakeCluster, cfg: &Config) {
    c.settle(&JobController::info(), |c, k| reconcile(c, cfg, &k))
        .unwrap();
}

fn settle(c: &FakeCluster) {
    settle_with(c, &Config::default());
}

/// Reconcile once; the requeue delay, if any.
fn run(c: &FakeCluster, name: &str) -> Option<u64> {
    match reconcile(
        c,
        &Config::default(),
        &ObjectKey {
            namespace: NS.into(),
            name: name.into(),
        },
    )
    .unwrap()
    {
        Action::RequeueAfter(ms) => Some(ms),
        Action::AwaitChange => None,
    }
}

fn pods(c: &FakeCluster) -> Vec<Value> {
    c.all(&pod())
}

fn active(c: &FakeCluster) -> Vec<Value> {
    pods(c).into_iter().filter(objects::pod_is_active).collect()
}

fn phase(c: &FakeCluster, p: &Value, phase: &str) {
    let at = rfc3339(c.now());
    c.patch(&pod(), NS, objects::name(p), json!({"status": {"phase": phase, "containerStatuses": [
        {"name": "pi", "restartCount": 0, "state": {"terminated": {"finishedAt": at, "exitCode": i32::from(phase == "Failed")}}}]}}));
}

fn status(c: &FakeCluster, name: &str) -> Value {
    c.object(&job(), NS, name).unwrap()["status"].clone()
}

fn events(c: &FakeCluster, reason: &str) -> Vec<String> {
    c.all(&trellis_sdk::controller::kinds::event())
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn cond_types(st: &Value) -> Vec<String> {
    st["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "True")
        .map(|c| c["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn completions_with_parallelism() {
    let c = FakeCluster::new();
    put_job(&c, "pi", json!({"completions": 5, "parallelism": 2}));
    settle(&c);
    let a = active(&c);
    assert_eq!(a.len(), 2);
    let p = &a[0];
    assert!(objects::name(p).starts_with("pi-"));
    assert_eq!(p["metadata"]["generateName"], "pi-");
    assert_eq!(p["metadata"]["labels"]["job-name"], "pi");
    assert_eq!(
        p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
        "uid-pi"
    );
    assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(p["spec"]["containers"][0]["image"], "perl");
    assert!(
        p["spec"]["containers"][0]["env"].is_null(),
        "no index env outside Indexed mode"
    );
    let st = status(&c, "pi");
    assert_eq!(st["active"], 2);
    assert_eq!(st["ready"], 0);
    assert_eq!(st["startTime"], rfc3339(c.now()));
    assert!(st.get("succeeded").is_none());
    assert_eq!(events(&c, "SuccessfulCreate").len(), 2);
    assert!(events(&c, "SuccessfulCreate")[0].starts_with("Created pod: pi-"));

    // a ready pod counts in `ready`
    c.patch(
        &pod(),
        NS,
        objects::name(&a[1]),
        json!({"status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    settle(&c);
    assert_eq!(status(&c, "pi")["ready"], 1);

    // the kubelet finishes pods two by two; never more active than missing
    for round in 0..3 {
        for p in active(&c) {
            phase(&c, &p, "Succeeded");
        }
        c.advance(1000);
        settle(&c);
        let st = status(&c, "pi");
        let done = [2, 4, 5][round];
        assert_eq!(st["succeeded"], done, "round {round}: {st}");
        assert_eq!(active(&c).len() as i64, (5 - done).min(2));
    }
    let st = status(&c, "pi");
    assert_eq!(pods(&c).len(), 5);
    assert_eq!(cond_types(&st), ["SuccessCriteriaMet", "Complete"]);
    let complete = &st["conditions"][1];
    assert_eq!(complete["reason"], "CompletionsReached");
    assert_eq!(
        complete["message"],
        "Reached expected number of succeeded pods"
    );
    assert_eq!(st["completionTime"], rfc3339(c.now()));
    assert!(st.get("active").is_none());
    assert_eq!(events(&c, "Completed"), ["Job completed"]);

    // finished: nothing more happens
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
}

#[test]
fn work_queue_is_done_when_one_succeeded_and_none_is_active() {
    let c = FakeCluster::new();
    put_job(&c, "q", json!({"parallelism": 3}));
    settle(&c);
    let a = active(&c);
    assert_eq!(a.len(), 3);
    phase(&c, &a[0], "Succeeded");
    settle(&c);
    // no replacement after a success, and not done while others run
    assert_eq!(active(&c).len(), 2);
    let st = status(&c, "q");
    assert_eq!(st["succeeded"], 1);
    assert!(cond_types(&st).is_empty());
    phase(&c, &a[1], "Succeeded");
    phase(&c, &a[2], "Failed");
    settle(&c);
    let st = status(&c, "q");
    assert_eq!(cond_types(&st), ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(st["succeeded"], 2);
    assert_eq!(st["failed"], 1);
    assert_eq!(pods(&c).len(), 3);
}

#[test]
fn backoff_limit_with_pod_failure_backoff() {
    let c = FakeCluster::new();
    put_job(&c, "b", json!({"backoffLimit": 2}));
    settle(&c);
    // 1st failure: a replacement after 10 s
    phase(&c, &active(&c)[0], "Failed");
    settle(&c);
    assert!(active(&c).is_empty());
    assert_eq!(status(&c, "b")["failed"], 1);
    assert_eq!(run(&c, "b"), Some(10_000));
    c.advance(9_000);
    settle(&c);
    assert!(active(&c).is_empty());
    c.advance(1_000);
    settle(&c);
    assert_eq!(active(&c).len(), 1);
    // 2nd failure: 20 s
    phase(&c, &active(&c)[0], "Failed");
    settle(&c);
    assert_eq!(run(&c, "b"), Some(20_000));
    c.advance(20_000);
    settle(&c);
    assert_eq!(active(&c).len(), 1);
    // 3rd failure: over the limit of 2
    phase(&c, &active(&c)[0], "Failed");
    settle(&c);
    let st = status(&c, "b");
    assert_eq!(st["failed"], 3);
    assert_eq!(cond_types(&st), ["FailureTarget", "Failed"]);
    assert_eq!(st["conditions"][1]["reason"], "BackoffLimitExceeded");
    assert_eq!(
        st["conditions"][1]["message"],
        "Job has reached the specified backoff limit"
    );
    assert!(st.get("completionTime").is_none());
    assert_eq!(
        events(&c, "BackoffLimitExceeded"),
        ["Job has reached the specified backoff limit"]
    );
    assert_eq!(pods(&c).len(), 3);
}

#[test]
fn a_failed_job_deletes_its_active_pods() {
    let c = FakeCluster::new();
    put_job(
        &c,
        "z",
        json!({"completions": 4, "parallelism": 3, "backoffLimit": 0}),
    );
    settle(&c);
    let a = active(&c);
    assert_eq!(a.len(), 3);
    phase(&c, &a[0], "Failed");
    settle(&c);
    let st = status(&c, "z");
    assert_eq!(cond_types(&st), ["FailureTarget", "Failed"]);
    assert_eq!(st["failed"], 3, "the deleted active pods count as failed");
    assert_eq!(pods(&c).len(), 1);
    assert_eq!(events(&c, "SuccessfulDelete").len(), 2);
}

#[test]
fn the_terminal_condition_waits_for_terminating_pods() {
    let c = FakeCluster::new();
    put_job(
        &c,
        "t",
        json!({"completions": 2, "parallelism": 2, "backoffLimit": 0}),
    );
    settle(&c);
    let a = active(&c);
    // a finalizer keeps the second pod terminating after its deletion
    c.patch(
        &pod(),
        NS,
        objects::name(&a[1]),
        json!({"metadata": {"finalizers": ["example.com/hold"]}}),
    );
    phase(&c, &a[0], "Failed");
    settle(&c);
    let st = status(&c, "t");
    assert_eq!(cond_types(&st), ["FailureTarget"]);
    assert_eq!(st["terminating"], 1);
    assert!(events(&c, "BackoffLimitExceeded").is_empty());
    c.remove(&pod(), NS, objects::name(&a[1]));
    settle(&c);
    let st = status(&c, "t");
    assert_eq!(cond_types(&st), ["FailureTarget", "Failed"]);
    assert_eq!(st["terminating"], 0);
    assert_eq!(events(&c, "BackoffLimitExceeded").len(), 1);
}

#[test]
fn container_restarts_count_with_restart_policy_on_failure() {
    let c = FakeCluster::new();
    put_job(
        &c,
        "r",
        json!({"backoffLimit": 3, "template": {"spec": {"restartPolicy": "OnFailure",
        "containers": [{"name": "c", "image": "busybox"}]}}}),
    );
    settle(&c);
    let p = active(&c)[0].clone();
    let restarts = |n: i64| {
        json!({"status": {"phase": "Running", "containerStatuses": [
        {"name": "c", "restartCount": n, "state": {"running": {}}}]}})
    };
    c.patch(&pod(), NS, objects::name(&p), restarts(2));
    settle(&c);
    assert!(cond_types(&status(&c, "r")).is_empty());
    c.patch(&pod(), NS, objects::name(&p), restarts(3));
    settle(&c);
    let st = status(&c, "r");
    assert_eq!(cond_types(&st), ["FailureTarget", "Failed"]);
    assert_eq!(st["conditions"][1]["reason"], "BackoffLimitExceeded");
    assert!(pods(&c).is_empty(), "the running pod was deleted");
}

#[test]
fn active_deadline() {
    let c = FakeCluster::new();
    put_job(
        &c,
        "d",
        json!({"activeDeadlineSeconds": 60, "parallelism": 2, "completions": 4}),
    );
    settle(&c);
    assert_eq!(active(&c).len(), 2);
    assert_eq!(run(&c, "d"), Some(60_000));
    c.advance(30_500);
    assert_eq!(run(&c, "d"), Some(29_500));
    c.advance(29_500);
    settle(&c);
    let st = status(&c, "d");
    assert_eq!(cond_types(&st), ["FailureTarget", "Failed"]);
    assert_eq!(st["conditions"][1]["reason"], "DeadlineExceeded");
    assert_eq!(
        st["conditions"][1]["message"],
        "Job was active longer than specified deadline"
    );
    assert_eq!(
        events(&c, "DeadlineExceeded"),
        ["Job was active longer than specified deadline"]
    );
    assert!(pods(&c).is_empty());
    assert_eq!(events(&c, "SuccessfulDelete").len(), 2);
}

#[test]
fn suspend_and_resume() {
    let c = FakeCluster::new();
    put_job(
        &c,
        "s",
        json!({"suspend": true, "completions": 3, "parallelism": 3, "activeDeadlineSeconds": 10}),
    );
    settle(&c);
    assert!(pods(&c).is_empty());
    let st = status(&c, "s");
    assert_eq!(cond_types(&st), ["Suspended"]);
    assert_eq!(st["conditions"][0]["reason"], "JobSuspended");
    assert!(st.get("startTime").is_none());
    assert_eq!(events(&c, "Suspended"), ["Job suspended"]);
    // the deadline does not run while suspended
    c.advance(60_000);
    settle(&c);
    assert_eq!(cond_types(&status(&c, "s")), ["Suspended"]);

    c.patch(&job(), NS, "s", json!({"spec": {"suspend": false}}));
    settle(&c);
    assert_eq!(active(&c).len(), 3);
    let st = status(&c, "s");
    assert_eq!(st["conditions"][0]["status"], "False");
    assert_eq!(st["conditions"][0]["reason"], "JobResumed");
    assert_eq!(st["startTime"], rfc3339(c.now()));
    assert_eq!(events(&c, "Resumed"), ["Job resumed"]);

    c.advance(5_000);
    c.patch(&job(), NS, "s", json!({"spec": {"suspend": true}}));
    settle(&c);
    assert!(pods(&c).is_empty());
    let st = status(&c, "s");
    assert_eq!(cond_types(&st), ["Suspended"]);
    assert_eq!(st.get("active"), None);
    assert_eq!(events(&c, "SuccessfulDelete").len(), 3);
}

#[test]
fn indexed_completion() {
    let c = FakeCluster::new();
    put_job(
        &c,
        "ix",
        json!({"completions": 4, "parallelism": 2, "completionMode": "Indexed"}),
    );
    settle(&c);
    let index_of = |p: &Value| {
        p["metadata"]["annotations"][INDEX_KEY]
            .as_str()
            .unwrap()
            .to_string()
    };
    let by_index =
        |c: &FakeCluster, i: &str| active(c).into_iter().find(|p| index_of(p) == i).unwrap();
    let mut idx: Vec<String> = active(&c).iter().map(index_of).collect();
    idx.sort();
    assert_eq!(idx, ["0", "1"]);
    let p1 = by_index(&c, "1");
    assert!(objects::name(&p1).starts_with("ix-1-"));
    assert_eq!(p1["metadata"]["labels"][INDEX_KEY], "1");
    assert_eq!(p1["spec"]["hostname"], "ix-1");
    assert_eq!(
        p1["spec"]["containers"][0]["env"][0]["name"],
        "JOB_COMPLETION_INDEX"
    );
    assert_eq!(
        p1["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );

    phase(&c, &p1, "Succeeded");
    settle(&c);
    let st = status(&c, "ix");
    assert_eq!(st["completedIndexes"], "1");
    assert_eq!(st["succeeded"], 1);
    let mut idx: Vec<String> = active(&c).iter().map(index_of).collect();
    idx.sort();
    assert_eq!(idx, ["0", "2"], "the lowest pending index next");

    // a failed index is retried after the back-off, lowest pending first
    phase(&c, &by_index(&c, "2"), "Succeeded");
    c.advance(1_000);
    phase(&c, &by_index(&c, "0"), "Failed");
    settle(&c);
    assert!(
        active(&c).is_empty(),
        "as upstream, the back-off holds every new pod"
    );
    c.advance(10_000);
    settle(&c);
    let mut idx: Vec<String> = active(&c).iter().map(index_of).collect();
    idx.sort();
    assert_eq!(idx, ["0", "3"]);
    assert_eq!(status(&c, "ix")["completedIndexes"], "1,2");

    // deleting finished pods loses no index
    for p in pods(&c)
        .into_iter()
        .filter(|p| objects::pod_phase(p) == "Succeeded")
    {
        c.remove(&pod(), NS, objects::name(&p));
    }
    phase(&c, &by_index(&c, "0"), "Succeeded");
    phase(&c, &by_index(&c, "3"), "Succeeded");
    settle(&c);
    let st = status(&c, "ix");
    assert_eq!(st["completedIndexes"], "0-3");
    assert_eq!(st["succeeded"], 4);
    assert_eq!(st["failed"], 1);
    assert_eq!(cond_types(&st), ["SuccessCriteriaMet", "Complete"]);
}

#[test]
fn indexed_duplicates_are_deleted() {
    let c = FakeCluster::new();
    let j = put_job(
        &c,
        "dup",
        json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed"}),
    );
    settle(&c);
    // someone made a second pod for index 0
    let mut extra = new_pod(&j, Some(0));
    extra["metadata"]["name"] = json!("dup-0-extra");
    extra["metadata"]["namespace"] = json!(NS);
    c.put(&pod(), extra);
    settle(&c);
    assert_eq!(active(&c).len(), 2);
    assert_eq!(events(&c, "SuccessfulDelete").len(), 1);
}

#[test]
fn ttl_after_finished() {
    let c = FakeCluster::new();
    put_job(&c, "ttl", json!({"ttlSecondsAfterFinished": 100}));
    settle(&c);
    phase(&c, &active(&c)[0], "Succeeded");
    settle(&c);
    assert_eq!(
        cond_types(&status(&c, "ttl")),
        ["SuccessCriteriaMet", "Complete"]
    );
    assert_eq!(run(&c, "ttl"), Some(100_000));
    c.advance(99_000);
    settle(&c);
    assert!(c.object(&job(), NS, "ttl").is_some());
    c.advance(1_000);
    assert_eq!(run(&c, "ttl"), None);
    assert!(c.object(&job(), NS, "ttl").is_none());
    assert!(c
        .writes()
        .iter()
        .any(|w| w.verb == "delete" && w.kind == "Job"));
}

#[test]
fn excess_pods_are_deleted_when_parallelism_drops() {
    let c = FakeCluster::new();
    put_job(&c, "p", json!({"completions": 10, "parallelism": 4}));
    settle(&c);
    assert_eq!(active(&c).len(), 4);
    // one pod is running on a node: the unscheduled ones go first
    let keep = active(&c)[2].clone();
    c.patch(
        &pod(),
        NS,
        objects::name(&keep),
        json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}),
    );
    c.patch(&job(), NS, "p", json!({"spec": {"parallelism": 1}}));
    settle(&c);
    let a = active(&c);
    assert_eq!(a.len(), 1);
    assert_eq!(objects::name(&a[0]), objects::name(&keep));
}

#[test]
fn indexes_and_config() {
    let set: BTreeSet<i64> = [0, 1, 2, 4].into();
    assert_eq!(format_indexes(&set), "0-2,4");
    assert_eq!(format_indexes(&[1, 2].into()), "1,2");
    assert_eq!(format_indexes(&[3, 5, 6, 7, 9].into()), "3,5-7,9");
    assert_eq!(format_indexes(&BTreeSet::new()), "");
    assert_eq!(parse_indexes("0-2,4,6,7"), [0, 1, 2, 4, 6, 7].into());

    assert_eq!(Config::parse("{}").unwrap(), Config::default());
    let cfg =
        Config::parse(r#"{"podFailureBackoff": "1s", "podFailureBackoffMax": "1m30s"}"#).unwrap();
    assert_eq!(
        (cfg.pod_failure_backoff_ms, cfg.pod_failure_backoff_max_ms),
        (1_000, 90_000)
    );
    assert!(Config::parse(r#"{"backoff": "1s"}"#).is_err());
    assert!(Config::parse(r#"{"podFailureBackoff": "ten"}"#).is_err());
    assert!(Config::parse(r#"{"podFailureBackoff": "5"}"#).is_err());
}

#[test]
fn a_short_configured_backoff() {
    let c = FakeCluster::new();
    let cfg = Config::parse(r#"{"podFailureBackoff": "1s"}"#).unwrap();
    put_job(&c, "f", json!({}));
    settle_with(&c, &cfg);
    phase(&c, &active(&c)[0], "Failed");
    c.advance(1_000);
    settle_with(&c, &cfg);
    assert_eq!(active(&c).len(), 1);
}
