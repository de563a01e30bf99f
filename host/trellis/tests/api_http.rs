//! What kubectl cannot send: authentication, conflicts, bad input, watches
//! from a resource version. Each answer is a Kubernetes `Status` with the right
//! code, and the server stays healthy after each.

mod common;

use common::Cluster;
use serde_json::{json, Value};

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

fn anonymous_requests_are_refused(c: Cluster) {
    let (code, body) = c.http(
        "GET",
        "/api/v1/namespaces",
        None,
        &[("Authorization", "Bearer wrong")],
    );
    assert_eq!(code, 401, "{body}");
    assert_eq!(status(&body)["reason"], "Unauthorized");
    // No Authorization at all: also 401 (the helper adds the token unless told otherwise).
    let (code, _) = c.http("GET", "/api/v1/namespaces", None, &[("Authorization", "")]);
    assert_eq!(code, 401);
    // Health and version are public, as upstream.
    assert_eq!(
        c.http("GET", "/healthz", None, &[("Authorization", "")]).0,
        200
    );
    let (code, body) = c.http("GET", "/version", None, &[("Authorization", "")]);
    assert_eq!(code, 200);
    assert_eq!(status(&body)["minor"], "32");
}

fn a_stale_update_is_a_409(c: Cluster) {
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
    let (code, body) = c.http(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(cm.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 201, "{body}");
    let created = status(&body);
    let mut v1 = created.clone();
    v1["data"]["a"] = json!("2");
    let (code, body) = c.http(
        "PUT",
        "/api/v1/namespaces/default/configmaps/x",
        Some(v1.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 200, "{body}");
    // The same stale resourceVersion again.
    v1["data"]["a"] = json!("3");
    let (code, body) = c.http(
        "PUT",
        "/api/v1/namespaces/default/configmaps/x",
        Some(v1.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 409, "{body}");
    let s = status(&body);
    assert_eq!(s["reason"], "Conflict");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified"),
        "{s}"
    );
    // A second create is AlreadyExists.
    let (code, body) = c.http(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(cm.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 409);
    assert_eq!(status(&body)["reason"], "AlreadyExists");
}

fn bad_input_gets_the_right_status_and_the_server_stays_healthy(c: Cluster) {
    let post = |path: &str, body: &[u8], ct: &str| {
        c.http("POST", path, Some(body), &[("Content-Type", ct)])
    };
    let cms = "/api/v1/namespaces/default/configmaps";
    let huge = vec![b'a'; 3 * 1024 * 1024 + 10];
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    // A "billion laughs" alias bomb: 9 levels of 9 aliases.
    let mut bomb = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h"]
        .iter()
        .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
    {
        bomb.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let cases: Vec<(&str, u16, (u16, String))> = vec![
        ("over 3 MiB", 413, post(cms, &huge, "application/json")),
        ("malformed JSON", 400, post(cms, b"{\"metadata\": ", "application/json")),
        ("malformed YAML", 400, post(cms, b"metadata: [\n  - a\n b: c", "application/yaml")),
        ("deep nesting", 400, post(cms, deep.as_bytes(), "application/json")),
        ("YAML alias bomb", 400, post(cms, bomb.as_bytes(), "application/yaml")),
        ("not an object", 400, post(cms, b"[1,2]", "application/json")),
        ("unknown content type", 415, post(cms, b"x", "text/plain")),
        ("no name", 422, post(cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}"#, "application/json")),
        ("bad name", 422, post(cms, br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#, "application/json")),
        ("wrong kind", 400, post(cms, br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"}}"#, "application/json")),
        ("pod without containers", 422, post("/api/v1/namespaces/default/pods", br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[]}}"#, "application/json")),
        ("strict unknown field", 422, post(&format!("{cms}?fieldValidation=Strict"), br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"},"dataa":{}}"#, "application/json")),
        ("no such resource", 404, c.http("GET", "/api/v1/widgets", None, &[])),
        ("no such object", 404, c.http("GET", "/api/v1/namespaces/default/configmaps/none", None, &[])),
        ("bad label selector", 400, c.http("GET", "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(", None, &[])),
    ];
    for (what, want, (code, body)) in cases {
        assert_eq!(code, want, "{what}: {body}");
        let s = status(&body);
        assert_eq!(s["kind"], "Status", "{what}: {body}");
        assert_eq!(s["code"], want, "{what}: {body}");
        assert_eq!(
            c.http("GET", "/readyz", None, &[]).0,
            200,
            "unhealthy after {what}"
        );
    }
    // 422s name the field.
    let (_, body) = post(
        "/api/v1/namespaces/default/pods",
        br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[]}}"#,
        "application/json",
    );
    let s = status(&body);
    assert!(
        s["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["field"] == "spec.containers"),
        "{s}"
    );
}

fn list_pages_and_watch_resumes_from_a_resource_version(c: Cluster) {
    for i in 0..7 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}});
        assert_eq!(
            c.http(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                Some(cm.to_string().as_bytes()),
                &[("Content-Type", "application/json")]
            )
            .0,
            201
        );
    }
    let mut names = Vec::new();
    let mut path = "/api/v1/namespaces/default/configmaps?limit=3".to_string();
    loop {
        let page = c.get_json(&path);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        names.extend(
            items
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(token) => {
                path = format!("/api/v1/namespaces/default/configmaps?limit=3&continue={token}")
            }
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
    let rv = c.get_json("/api/v1/namespaces/default/configmaps")["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    c.http(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/cm-0",
        None,
        &[],
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}});
    c.http(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(cm.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    let (code, body) = c.http(
        "GET",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        ),
        None,
        &[],
    );
    assert_eq!(code, 200);
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("DELETED".into(), "cm-0".into()),
            ("ADDED".into(), "late".into())
        ]
    );
}

common::on_both_stores!(
    lifecycle_generate_name_status_binding_and_graceful_deletion,
    anonymous_requests_are_refused,
    a_stale_update_is_a_409,
    bad_input_gets_the_right_status_and_the_server_stays_healthy,
    list_pages_and_watch_resumes_from_a_resource_version,
    a_delete_is_not_refused_for_a_write_racing_it
);

/// A DELETE without a resourceVersion precondition succeeds while other
/// clients keep writing the object (as a kubelet writes a pod's status): the
/// server reads again and retries instead of answering 409. One with a stale
/// precondition still gets the 409.
fn a_delete_is_not_refused_for_a_write_racing_it(c: Cluster) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let pods = "/api/v1/namespaces/default/pods";
    let n = 30;
    for i in 0..n {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("raced-{i}")},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
        assert_eq!(post(&c, pods, &pod).0, 201);
    }
    let rv =
        |i: usize| c.get_json(&format!("{pods}/raced-{i}"))["metadata"]["resourceVersion"].clone();
    let target = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Four writers, back to back, on the pod being deleted.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (c, target, stop) = (&c, &target, &stop);
                s.spawn(move || {
                    let mut writes = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let path =
                            format!("{pods}/raced-{}/status", target.load(Ordering::Relaxed));
                        let body =
                            json!({"status": {"message": format!("writer {w}, write {writes}")}});
                        if send(c, "PATCH", &path, &body, "application/merge-patch+json").0 == 200 {
                            writes += 1;
                        }
                    }
                    writes
                })
            })
            .collect();
        // The writers stop however this ends (a failed assertion included).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let halt = Stop(&stop);
        for i in 0..n {
            let before = rv(i);
            target.store(i, Ordering::Relaxed);
            while rv(i) == before {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if i == 0 {
                let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                    "preconditions": {"resourceVersion": before}});
                let (code, body) = send(
                    &c,
                    "DELETE",
                    &format!("{pods}/raced-0"),
                    &opts,
                    "application/json",
                );
                assert_eq!(code, 409, "a stale precondition is still refused: {body}");
            }
            let opts =
                json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
            let (code, body) = send(
                &c,
                "DELETE",
                &format!("{pods}/raced-{i}"),
                &opts,
                "application/json",
            );
            assert_eq!(code, 200, "deleting raced-{i}: {body}");
            assert_eq!(
                c.http("GET", &format!("{pods}/raced-{i}"), None, &[]).0,
                404
            );
        }
        drop(halt);
        let writes: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
        assert!(writes >= n, "the writers wrote ({writes})");
    });
}

/// Once compaction has discarded the history a watch asks for, the watch
/// answers with an ERROR event carrying a 410 Status, as upstream.
#[test]
fn a_watch_from_a_compacted_version_gets_410() {
    let Some(c) = Cluster::on_etcd() else { return };
    let cm = |n: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}}).to_string()
    };
    c.http(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        Some(cm("old").as_bytes()),
        &[("Content-Type", "application/json")],
    );
    let rv: i64 = c.get_json("/api/v1/namespaces/default/configmaps")["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    for i in 0..3 {
        c.http(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            Some(cm(&format!("new-{i}")).as_bytes()),
            &[("Content-Type", "application/json")],
        );
    }
    let now: i64 = c.get_json("/api/v1/namespaces/default/configmaps")["metadata"]
        ["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    c.compact_etcd(now);
    let (code, body) = c.http(
        "GET",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=2"
        ),
        None,
        &[],
    );
    assert_eq!(code, 200);
    let first: Value = serde_json::from_str(body.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(first["type"], "ERROR", "{body}");
    assert_eq!(first["object"]["code"], 410, "{body}");
    assert_eq!(first["object"]["reason"], "Expired", "{body}");
    // A list at a compacted version is a 410 too.
    let (code, body) = c.http(
        "GET",
        &format!(
            "/api/v1/namespaces/default/configmaps?resourceVersion={rv}&resourceVersionMatch=Exact"
        ),
        None,
        &[],
    );
    assert_eq!(code, 410, "{body}");
}

fn post(c: &Cluster, path: &str, body: &Value) -> (u16, Value) {
    let (code, text) = c.http(
        "POST",
        path,
        Some(body.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn send(c: &Cluster, method: &str, path: &str, body: &Value, ct: &str) -> (u16, Value) {
    let (code, text) = c.http(
        method,
        path,
        Some(body.to_string().as_bytes()),
        &[("Content-Type", ct)],
    );
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn lifecycle_generate_name_status_binding_and_graceful_deletion(c: Cluster) {
    let cms = "/api/v1/namespaces/default/configmaps";
    // generateName, uid and timestamps.
    let (code, made) = post(
        &c,
        cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "gen-"}}),
    );
    assert_eq!(code, 201, "{made}");
    let name = made["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(made["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(made["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    // Finalizers hold a deletion until they are removed.
    let (code, _) = post(
        &c,
        cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    );
    assert_eq!(code, 201);
    let (code, body) = c.http("DELETE", &format!("{cms}/held"), None, &[]);
    assert!(code == 200 || code == 202, "{body}");
    let held = c.get_json(&format!("{cms}/held"));
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let (code, body) = send(
        &c,
        "PATCH",
        &format!("{cms}/held"),
        &json!({"metadata": {"finalizers": null}}),
        "application/merge-patch+json",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        c.http("GET", &format!("{cms}/held"), None, &[]).0,
        404,
        "gone once its finalizers are"
    );

    // propagationPolicy=Orphan marks the object with the orphan finalizer.
    post(
        &c,
        cms,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "orphaning"}}),
    );
    let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"});
    let (code, body) = send(
        &c,
        "DELETE",
        &format!("{cms}/orphaning"),
        &opts,
        "application/json",
    );
    assert!(code == 200 || code == 202, "{body}");
    let o = c.get_json(&format!("{cms}/orphaning"));
    assert_eq!(o["metadata"]["finalizers"], json!(["orphan"]), "{o}");

    // Pods: status only through /status, binding to a node, graceful deletion.
    let pods = "/api/v1/namespaces/default/pods";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Running"}});
    let (code, created) = post(&c, pods, &pod);
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["status"]["phase"], "Pending",
        "status is the server's on create"
    );
    assert_eq!(created["spec"]["terminationGracePeriodSeconds"], 30);
    let mut status = created.clone();
    status["status"]["phase"] = json!("Running");
    status["spec"]["activeDeadlineSeconds"] = json!(5);
    let (code, updated) = send(
        &c,
        "PUT",
        &format!("{pods}/p/status"),
        &status,
        "application/json",
    );
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["status"]["phase"], "Running");
    assert!(
        updated["spec"]["activeDeadlineSeconds"].is_null(),
        "spec does not change through /status"
    );
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    let (code, body) = post(&c, &format!("{pods}/p/binding"), &binding);
    assert_eq!(code, 201, "{body}");
    let bound = c.get_json(&format!("{pods}/p"));
    assert_eq!(bound["spec"]["nodeName"], "n1");
    let (code, body) = post(&c, &format!("{pods}/p/binding"), &binding);
    assert_eq!(code, 409, "a pod binds once: {body}");
    // A bound pod is deleted gracefully: it stays, marked, until its node (or a forced delete) ends it.
    let (code, body) = c.http("DELETE", &format!("{pods}/p"), None, &[]);
    assert!(code == 200 || code == 202, "{body}");
    let terminating = c.get_json(&format!("{pods}/p"));
    assert_eq!(
        terminating["metadata"]["deletionGracePeriodSeconds"], 30,
        "{terminating}"
    );
    let (code, _) = c.http(
        "DELETE",
        &format!("{pods}/p?gracePeriodSeconds=0"),
        None,
        &[],
    );
    assert_eq!(code, 200);
    assert_eq!(c.http("GET", &format!("{pods}/p"), None, &[]).0, 404);
}
