use serde_json::{json, Value};

use super::*;
use crate::registry;

fn kind(group: &str, name: &str) -> &'static Kind {
    registry::by_kind(group, name).unwrap()
}

/// Wraps `body` in apiVersion/kind/metadata as the server would.
fn object(k: &Kind, name: &str, mut body: Value) -> Value {
    let map = body.as_object_mut().unwrap();
    map.insert("apiVersion".into(), json!(k.api_version()));
    map.insert("kind".into(), json!(k.kind));
    let meta = map.entry("metadata").or_insert(json!({}));
    meta["name"] = json!(name);
    meta["uid"] = json!("0b6c1a52-1111-2222-3333-444455556666");
    if k.namespaced {
        meta["namespace"] = json!("default");
    }
    body
}

fn create(group: &str, name: &str, body: Value) -> Result<Value, ValidationError> {
    let k = kind(group, name);
    let mut obj = object(k, "web", body);
    prepare(k, &mut obj, None, Operation::Create, true).map(|_| obj)
}

fn created(group: &str, name: &str, body: Value) -> Value {
    create(group, name, body).unwrap_or_else(|e| panic!("{e}"))
}

/// The causes of a refused create, as `field: message`.
fn causes(group: &str, name: &str, body: Value) -> Vec<String> {
    match create(group, name, body) {
        Ok(obj) => panic!("accepted: {obj:#}"),
        Err(e) => e.causes().iter().map(ToString::to_string).collect(),
    }
}

fn assert_cause(causes: &[String], expected: &str) {
    assert!(
        causes.iter().any(|c| c == expected),
        "missing {expected:?} in {causes:#?}"
    );
}

fn pod_spec() -> Value {
    json!({ "containers": [{ "name": "web", "image": "nginx:1.27" }] })
}

fn pod(spec: Value) -> Value {
    json!({ "spec": spec })
}

fn deployment(spec: Value) -> Value {
    let mut base = json!({
        "selector": { "matchLabels": { "app": "web" } },
        "template": { "metadata": { "labels": { "app": "web" } }, "spec": pod_spec() },
    });
    merge(&mut base, spec);
    json!({ "spec": base })
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(existing) if v.is_object() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => *b = p,
    }
}

// ---- defaulting ----

#[test]
fn pod_defaults() {
    let obj = created(
        "",
        "Pod",
        pod(json!({
            "containers": [
                {
                    "name": "web",
                    "image": "nginx",
                    "ports": [{ "containerPort": 80 }],
                    "resources": { "limits": { "cpu": "500m", "memory": "128Mi" } },
                    "livenessProbe": { "httpGet": { "port": 80 } },
                },
                { "name": "side", "image": "busybox:1.36" },
            ],
        })),
    );
    let spec = &obj["spec"];
    assert_eq!(spec["restartPolicy"], "Always");
    assert_eq!(spec["dnsPolicy"], "ClusterFirst");
    assert_eq!(spec["schedulerName"], "default-scheduler");
    assert_eq!(spec["terminationGracePeriodSeconds"], 30);
    assert_eq!(spec["securityContext"], json!({}));
    assert_eq!(spec["enableServiceLinks"], true);
    let web = &spec["containers"][0];
    assert_eq!(web["imagePullPolicy"], "Always");
    assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(web["terminationMessagePath"], "/dev/termination-log");
    assert_eq!(web["terminationMessagePolicy"], "File");
    assert_eq!(web["ports"][0]["protocol"], "TCP");
    assert_eq!(
        web["resources"]["requests"],
        json!({ "cpu": "500m", "memory": "128Mi" })
    );
    assert_eq!(spec["containers"][1]["resources"], json!({}));
    let probe = &web["livenessProbe"];
    assert_eq!(
        (
            probe["timeoutSeconds"].clone(),
            probe["periodSeconds"].clone()
        ),
        (json!(1), json!(10))
    );
    assert_eq!(
        (
            probe["successThreshold"].clone(),
            probe["failureThreshold"].clone()
        ),
        (json!(1), json!(3))
    );
    assert_eq!(probe["httpGet"]["scheme"], "HTTP");
    assert_eq!(probe["httpGet"]["path"], "/");
    assert_eq!(obj["status"]["phase"], "Pending");
    assert_eq!(obj["status"]["qosClass"], "Burstable");
}

#[test]
fn deployment_defaults() {
    let obj = created("apps", "Deployment", deployment(json!({})));
    let spec = &obj["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["strategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" } })
    );
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(spec["progressDeadlineSeconds"], 600);
    assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );

    let recreate = created(
        "apps",
        "Deployment",
        deployment(json!({ "strategy": { "type": "Recreate" } })),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({ "type": "Recreate" }));
}

#[test]
fn other_workload_defaults() {
    let sts = created(
        "apps",
        "StatefulSet",
        deployment(json!({ "serviceName": "web" })),
    );
    assert_eq!(sts["spec"]["replicas"], 1);
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        sts["spec"]["updateStrategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "partition": 0 } })
    );
    assert_eq!(sts["spec"]["revisionHistoryLimit"], 10);

    let ds = created("apps", "DaemonSet", deployment(json!({})));
    assert_eq!(
        ds["spec"]["updateStrategy"],
        json!({ "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 1, "maxSurge": 0 } })
    );
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);

    let rs = created("apps", "ReplicaSet", deployment(json!({})));
    assert_eq!(rs["spec"]["replicas"], 1);

    let cj = created(
        "batch",
        "CronJob",
        json!({ "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": { "spec": { "template": { "spec": {
                "restartPolicy": "OnFailure",
                "containers": [{ "name": "c", "image": "busybox" }],
            } } } },
        } }),
    );
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    assert_eq!(
        cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
        "ClusterFirst"
    );
}

#[test]
fn job_defaults_and_selector() {
    let obj = created(
        "batch",
        "Job",
        json!({ "spec": { "template": { "spec": {
            "restartPolicy": "Never",
            "containers": [{ "name": "pi", "image": "perl:5.34" }],
        } } } }),
    );
    let spec = &obj["spec"];
    assert_eq!(spec["completions"], 1);
    assert_eq!(spec["parallelism"], 1);
    assert_eq!(spec["backoffLimit"], 6);
    assert_eq!(spec["completionMode"], "NonIndexed");
    assert_eq!(spec["suspend"], false);
    let uid = "0b6c1a52-1111-2222-3333-444455556666";
    assert_eq!(
        spec["selector"],
        json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } })
    );
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(labels["controller-uid"], uid);
    assert_eq!(labels["batch.kubernetes.io/job-name"], "web");
    assert_eq!(labels["job-name"], "web");
    // No restartPolicy default for Jobs' pods.
    assert!(spec["template"]["spec"].get("restartPolicy").is_some());

    let parallel = created(
        "batch",
        "Job",
        json!({ "spec": { "parallelism": 3, "template": { "spec": {
            "restartPolicy": "OnFailure",
            "containers": [{ "name": "pi", "image": "perl:5.34" }],
        } } } }),
    );
    assert_eq!(parallel["spec"]["parallelism"], 3);
    assert!(parallel["spec"].get("completions").is_none());
}

#[test]
fn service_defaults() {
    let obj = created(
        "",
        "Service",
        json!({ "spec": { "selector": { "app": "web" }, "ports": [
            { "name": "web", "port": 80 },
            { "name": "x", "port": 81, "targetPort": "http" },
        ] } }),
    );
    let spec = &obj["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(spec["ports"][1]["targetPort"], "http");
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
}

#[test]
fn service_with_two_ports_needs_names() {
    let c = causes(
        "",
        "Service",
        json!({ "spec": { "ports": [{ "port": 80 }, { "port": 81 }] } }),
    );
    assert_eq!(
        c,
        [
            "spec.ports[0].name: Required value",
            "spec.ports[1].name: Required value"
        ]
    );
}

#[test]
fn namespace_and_storage_defaults() {
    let ns = created("", "Namespace", json!({}));
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");

    let secret = created("", "Secret", json!({ "stringData": { "user": "admin" } }));
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["user"], "YWRtaW4=");
    assert!(secret.get("stringData").is_none());

    let pvc = created(
        "",
        "PersistentVolumeClaim",
        json!({ "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "1Gi" } } } }),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    let pv = created(
        "",
        "PersistentVolume",
        json!({ "spec": { "capacity": { "storage": "1Gi" }, "hostPath": { "path": "/data" } } }),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
}

// ---- validation ----

#[test]
fn display_single_and_many_causes() {
    let err = create("", "Pod", pod(json!({ "containers": [{ "name": "web" }] }))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Pod \"web\" is invalid: spec.containers[0].image: Required value"
    );
    assert_eq!(err.code(), 422);
    assert_eq!(err.reason(), "Invalid");

    let err = create(
        "apps",
        "Deployment",
        deployment(json!({ "replicas": -1, "template": { "spec": { "containers": [{ "name": "web", "image": "" }] } } })),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Deployment.apps \"web\" is invalid: [spec.replicas: Invalid value: -1: must be greater than or equal to 0, \
         spec.template.spec.containers[0].image: Required value]"
    );
    let ValidationError::Invalid {
        kind,
        group,
        name,
        causes,
    } = &err
    else {
        panic!()
    };
    assert_eq!(
        (kind.as_str(), group.as_str(), name.as_str()),
        ("Deployment", "apps", "web")
    );
    assert_eq!(
        serde_json::to_value(&causes[0]).unwrap(),
        json!({ "reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0", "field": "spec.replicas" })
    );
}

#[test]
fn pod_needs_containers() {
    assert_eq!(
        causes("", "Pod", pod(json!({}))),
        ["spec.containers: Required value"]
    );
    assert_eq!(
        causes("", "Pod", json!({})),
        ["spec.containers: Required value"]
    );
}

#[test]
fn container_names() {
    let c = causes(
        "",
        "Pod",
        pod(json!({ "containers": [
            { "name": "web", "image": "a" },
            { "name": "web", "image": "b" },
            { "name": "Web_1", "image": "c" },
            { "image": "d" },
        ] })),
    );
    assert_cause(&c, "spec.containers[1].name: Duplicate value: \"web\"");
    assert_cause(
        &c,
        "spec.containers[2].name: Invalid value: \"Web_1\": a lowercase RFC 1123 label must consist of lower case \
         alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or \
         '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
    );
    assert_cause(&c, "spec.containers[3].name: Required value");
    assert_eq!(c.len(), 3);
}

#[test]
fn container_ports_and_policies() {
    let c = causes(
        "",
        "Pod",
        pod(json!({
            "restartPolicy": "Sometimes",
            "containers": [{
                "name": "web",
                "image": "nginx",
                "imagePullPolicy": "Maybe",
                "ports": [
                    { "containerPort": 70000 },
                    { "containerPort": 0, "protocol": "ICMP", "name": "http" },
                    { "containerPort": 81, "name": "http" },
                ],
            }],
        })),
    );
    assert_cause(&c, "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive");
    assert_cause(
        &c,
        "spec.containers[0].ports[1].containerPort: Required value",
    );
    assert_cause(
        &c,
        "spec.containers[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    );
    assert_cause(
        &c,
        "spec.containers[0].ports[2].name: Duplicate value: \"http\"",
    );
    assert_cause(
        &c,
        "spec.containers[0].imagePullPolicy: Unsupported value: \"Maybe\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
    );
    assert_cause(
        &c,
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
    );
}

#[test]
fn resources() {
    let c = causes(
        "",
        "Pod",
        pod(json!({ "containers": [{
            "name": "web",
            "image": "nginx",
            "resources": {
                "limits": { "cpu": "1", "memory": "lots" },
                "requests": { "cpu": "1500m", "memory": "64Mi", "gpu": "1" },
            },
        }] })),
    );
    assert_eq!(
        c,
        [
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular \
             expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource type or fully qualified",
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"1500m\": must be less than or equal to cpu limit of 1",
        ]
    );

    // Numeric quantities are accepted, as upstream's decoder does.
    let obj = created(
        "",
        "Pod",
        pod(
            json!({ "containers": [{ "name": "web", "image": "nginx", "resources": { "limits": { "cpu": 0.5 } } }] }),
        ),
    );
    assert_eq!(
        obj["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "0.5"
    );
}

#[test]
fn volumes() {
    let c = causes(
        "",
        "Pod",
        pod(json!({
            "volumes": [{ "name": "data", "emptyDir": {} }, { "name": "data", "emptyDir": {} }],
            "containers": [{
                "name": "web",
                "image": "nginx",
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }, { "name": "cache", "mountPath": "/cache" }],
            }],
        })),
    );
    assert_eq!(
        c,
        [
            "spec.volumes[1].name: Duplicate value: \"data\"",
            "spec.containers[0].volumeMounts[1].name: Not found: \"cache\"",
        ]
    );
}

#[test]
fn pod_updates() {
    let k = kind("", "Pod");
    let mut old = object(k, "web", pod(pod_spec()));
    prepare(k, &mut old, None, Operation::Create, true).unwrap();

    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    new["metadata"]["labels"] = json!({ "tier": "front" });
    prepare(k, &mut new, Some(&old), Operation::Update, true).unwrap();

    let mut new = old.clone();
    new["spec"]["restartPolicy"] = json!("Never");
    let err = prepare(k, &mut new, Some(&old), Operation::Update, true).unwrap_err();
    let cause = &err.causes()[0];
    assert_eq!(cause.field, "spec");
    assert_eq!(cause.reason, CauseReason::Forbidden);
    assert!(
        cause.message.starts_with(
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`"
        ),
        "{}",
        cause.message
    );
    assert!(cause.message.contains("spec.restartPolicy"));

    let mut with_deadline = old.clone();
    with_deadline["spec"]["activeDeadlineSeconds"] = json!(30);
    let mut new = with_deadline.clone();
    new["spec"]["activeDeadlineSeconds"] = json!(60);
    let err = prepare(k, &mut new, Some(&with_deadline), Operation::Update, true).unwrap_err();
    assert_eq!(
        err.causes()[0].to_string(),
        "spec.activeDeadlineSeconds: Invalid value: 60: must be less than or equal to previous value"
    );

    let mut new = old.clone();
    new["spec"]["tolerations"] = json!([{ "key": "k", "operator": "Exists" }]);
    prepare(k, &mut new, Some(&old), Operation::Update, true).unwrap();
}

#[test]
fn workload_selectors() {
    let c = causes(
        "apps",
        "Deployment",
        json!({ "spec": { "template": { "metadata": { "labels": { "app": "web" } }, "spec": pod_spec() } } }),
    );
    assert_eq!(c, ["spec.selector: Required value"]);

    let c = causes(
        "apps",
        "Deployment",
        deployment(json!({ "selector": { "matchLabels": { "app": "api" } } })),
    );
    assert_eq!(
        c,
        ["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`"]
    );

    let c = causes(
        "apps",
        "ReplicaSet",
        deployment(
            json!({ "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "x" }] } } }),
        ),
    );
    assert_eq!(
        c,
        [
            "spec.template.spec.containers[0].image: Required value",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ]
    );

    // matchExpressions select too.
    created(
        "apps",
        "DaemonSet",
        deployment(
            json!({ "selector": { "matchLabels": null, "matchExpressions": [
            { "key": "app", "operator": "In", "values": ["web", "api"] },
            { "key": "tier", "operator": "DoesNotExist" },
        ] } }),
        ),
    );

    let k = kind("apps", "Deployment");
    let mut old = object(k, "web", deployment(json!({})));
    prepare(k, &mut old, None, Operation::Create, true).unwrap();
    let mut new = old.clone();
    new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
    new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let err = prepare(k, &mut new, Some(&old), Operation::Update, true).unwrap_err();
    assert_eq!(err.causes()[0].field, "spec.selector");
    assert!(err.causes()[0].message.ends_with("field is immutable"));
}

#[test]
fn deployment_strategy() {
    let c = causes(
        "apps",
        "Deployment",
        deployment(
            json!({ "strategy": { "rollingUpdate": { "maxSurge": 0, "maxUnavailable": "0%" } } }),
        ),
    );
    assert_eq!(
        c,
        ["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"]
    );
}

#[test]
fn job_restart_policy() {
    let job = |policy: Value| {
        let mut spec = json!({ "containers": [{ "name": "pi", "image": "perl" }] });
        if !policy.is_null() {
            spec["restartPolicy"] = policy;
        }
        json!({ "spec": { "template": { "spec": spec } } })
    };
    assert_eq!(
        causes("batch", "Job", job(json!("Always"))),
        ["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
    );
    assert_eq!(
        causes("batch", "Job", job(Value::Null)),
        ["spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\""]
    );
    let c = causes(
        "batch",
        "CronJob",
        json!({ "spec": { "schedule": "bad", "jobTemplate": { "spec": { "template": { "spec": {
            "containers": [{ "name": "pi", "image": "perl" }],
        } } } } } }),
    );
    assert_eq!(
        c,
        [
            "spec.schedule: Invalid value: \"bad\": expected exactly 5 fields, found 1: [bad]",
            "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ]
    );
}

#[test]
fn service_rules() {
    assert_eq!(
        causes("", "Service", json!({ "spec": {} })),
        ["spec.ports: Required value"]
    );
    created("", "Service", json!({ "spec": { "clusterIP": "None" } }));
    created(
        "",
        "Service",
        json!({ "spec": { "type": "ExternalName", "externalName": "example.com" } }),
    );

    let c = causes(
        "",
        "Service",
        json!({ "spec": { "type": "Magic", "ports": [
            { "name": "http", "port": 0 },
            { "name": "http", "port": 81, "targetPort": 70000 },
        ] } }),
    );
    assert_eq!(
        c,
        [
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[1].name: Duplicate value: \"http\"",
            "spec.ports[1].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ]
    );
}

#[test]
fn names_per_kind() {
    let k = kind("", "Service");
    let mut obj = object(k, "1web", json!({ "spec": { "ports": [{ "port": 80 }] } }));
    let err = prepare(k, &mut obj, None, Operation::Create, true).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Service \"1web\" is invalid: metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower \
         case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric \
         character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
    );

    let ns = kind("", "Namespace");
    assert!(validate_name(ns, "my.ns")
        .unwrap_err()
        .contains("RFC 1123 label"));
    assert!(validate_name(kind("", "ConfigMap"), "my.cm").is_ok());
    assert!(validate_name(kind("", "Pod"), "Web")
        .unwrap_err()
        .contains("RFC 1123 subdomain"));
    assert_eq!(
        validate_name(kind("", "Pod"), &"a".repeat(254)).unwrap_err(),
        "must be no more than 253 characters"
    );
    assert_eq!(
        validate_name(
            kind("rbac.authorization.k8s.io", "ClusterRole"),
            "system:a/b"
        ),
        Err("may not contain '/'".into())
    );
    assert!(validate_name(
        kind("rbac.authorization.k8s.io", "ClusterRole"),
        "system:controller"
    )
    .is_ok());

    let k = kind("", "ConfigMap");
    let mut obj = object(k, "", json!({}));
    let err = prepare(k, &mut obj, None, Operation::Create, true).unwrap_err();
    assert_eq!(
        err.causes()[0].to_string(),
        "metadata.name: Required value: name or generateName is required"
    );
}

#[test]
fn labels_and_annotations() {
    let c = causes(
        "",
        "ConfigMap",
        json!({ "metadata": {
            "labels": { "app": "web!", "a/b/c": "x" },
            "annotations": { "big": "x".repeat(256 * 1024) },
        } }),
    );
    assert_cause(
        &c,
        "metadata.labels: Invalid value: \"web!\": a valid label must be an empty string or consist of alphanumeric \
         characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
         'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    );
    assert!(c.iter().any(|m| m
        .starts_with("metadata.labels: Invalid value: \"a/b/c\": a qualified name must consist")));
    assert_cause(
        &c,
        "metadata.annotations: Too long: may not be more than 262144 bytes",
    );
    assert_eq!(c.len(), 3);
}

#[test]
fn config_maps_and_secrets() {
    let c = causes(
        "",
        "ConfigMap",
        json!({ "data": { "ok.key": "1", "bad key": "2" }, "binaryData": { "ok.key": "AA==" } }),
    );
    assert_eq!(
        c,
        [
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, \
             '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            "data[ok.key]: Invalid value: \"ok.key\": duplicate of key present in binaryData",
        ]
    );
    let c = causes(
        "",
        "ConfigMap",
        json!({ "data": { "a": "x".repeat(1024 * 1024 + 1) } }),
    );
    assert_eq!(c, ["Too long: may not be more than 1048576 bytes"]);

    let c = causes(
        "",
        "Secret",
        json!({ "type": "kubernetes.io/tls", "data": { "tls.crt": "AA==" } }),
    );
    assert_eq!(c, ["data[tls.key]: Required value"]);
    // Data must be base64, as the typed decode enforces.
    let c = causes("", "Secret", json!({ "data": { "a": "not base64!" } }));
    assert_eq!(c.len(), 1);
    assert!(
        c[0].starts_with("Secret in version \"v1\" cannot be handled as a Secret"),
        "{c:?}"
    );

    let k = kind("", "ConfigMap");
    let mut old = object(k, "web", json!({ "immutable": true, "data": { "a": "1" } }));
    prepare(k, &mut old, None, Operation::Create, true).unwrap();
    let mut new = old.clone();
    new["data"]["a"] = json!("2");
    let err = prepare(k, &mut new, Some(&old), Operation::Update, true).unwrap_err();
    assert_eq!(
        err.causes()[0].to_string(),
        "data: Forbidden: field is immutable when `immutable` is set"
    );
}

#[test]
fn nodes_leases_claims() {
    let c = causes(
        "",
        "Node",
        json!({ "spec": { "taints": [{ "key": "k", "effect": "Sometimes" }] } }),
    );
    assert_eq!(
        c,
        ["spec.taints[0].effect: Unsupported value: \"Sometimes\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""]
    );
    let c = causes(
        "coordination.k8s.io",
        "Lease",
        json!({ "spec": { "leaseDurationSeconds": 0 } }),
    );
    assert_eq!(
        c,
        ["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );
    let c = causes("", "PersistentVolumeClaim", json!({ "spec": {} }));
    assert_eq!(
        c,
        [
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value",
        ]
    );
}

// ---- decoding ----

#[test]
fn strict_unknown_fields_with_nested_paths() {
    let body = deployment(json!({
        "paused": false,
        "foo": 1,
        "template": { "spec": { "containers": [{ "name": "web", "image": "nginx", "imagee": "typo" }] } },
    }));
    let err = create("apps", "Deployment", body.clone()).unwrap_err();
    assert_eq!(
        err,
        ValidationError::StrictDecoding {
            fields: vec![
                "spec.foo".into(),
                "spec.template.spec.containers[0].imagee".into()
            ]
        }
    );
    assert_eq!(
        err.to_string(),
        "strict decoding error: unknown field \"spec.foo\", unknown field \"spec.template.spec.containers[0].imagee\""
    );
    assert_eq!(err.code(), 400);

    // Without Strict the fields are dropped with warnings.
    let k = kind("apps", "Deployment");
    let mut obj = object(k, "web", body);
    let warnings = prepare(k, &mut obj, None, Operation::Create, false).unwrap();
    assert_eq!(
        warnings,
        [
            "unknown field \"spec.foo\"",
            "unknown field \"spec.template.spec.containers[0].imagee\""
        ]
    );
    assert!(obj["spec"].get("foo").is_none());
    assert!(obj["spec"]["template"]["spec"]["containers"][0]
        .get("imagee")
        .is_none());
    assert_eq!(obj["spec"]["paused"], false);
}

#[test]
fn type_errors_name_the_field() {
    let c = causes(
        "apps",
        "Deployment",
        deployment(json!({ "replicas": "three" })),
    );
    assert_eq!(
        c,
        ["spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""]
    );
    let err = create(
        "",
        "Pod",
        pod(json!({ "containers": [{ "name": "web", "image": "nginx", "ports": [{ "containerPort": "80" }] }] })),
    )
    .unwrap_err();
    assert_eq!(
        err.causes()[0].field,
        "spec.containers[0].ports[0].containerPort"
    );
    assert_eq!(err.causes()[0].reason, CauseReason::TypeInvalid);

    let c = causes("", "Pod", pod(json!({ "containers": { "name": "web" } })));
    assert_eq!(
        c,
        ["spec.containers: Invalid value: \"object\": spec.containers in body must be of type array: \"object\""]
    );

    // Null members are dropped, as Go decodes them to zero values.
    let obj = created(
        "",
        "Pod",
        pod(json!({ "nodeName": null, "containers": [{ "name": "web", "image": "nginx" }] })),
    );
    assert!(obj["spec"].get("nodeName").is_none());
}

#[test]
fn trellis_kinds() {
    let c = causes("trellis.dev", "Plugin", json!({}));
    assert_eq!(c, ["spec: Required value"]);
    let obj = created(
        "trellis.dev",
        "Plugin",
        json!({ "spec": { "role": "scheduler", "source": { "builtin": "node-name" }, "anything": { "goes": [1] } } }),
    );
    assert_eq!(obj["spec"]["anything"]["goes"][0], 1);
    let c = causes(
        "trellis.dev",
        "Plugin",
        json!({ "spec": {
        "role": "sidecar", "source": { "builtin": "a", "wasm": "AA==" }, "sha256": "abc",
        "grants": { "capabilities": ["net"], "read": [{ "kind": "Pod" }] }
    } }),
    );
    assert_eq!(
        c,
        [
            "spec.role: Unsupported value: \"sidecar\": supported values: \"scheduler\", \"admission\", \"probe\", \"controller\"",
            "spec.source: Invalid value: {\"builtin\":\"a\",\"wasm\":\"AA==\"}: exactly one of builtin or wasm must be set",
            "spec.sha256: Invalid value: \"abc\": must be 64 hexadecimal digits",
            "spec.grants.capabilities[0]: Unsupported value: \"net\": supported values: \"log\", \"objects-read\", \"objects-write\", \"pod-network\", \"pod-exec\"",
            "spec.grants.read[0].group: Required value: \"\" for the core group, \"*\" for any",
        ]
    );
    let c = causes(
        "trellis.dev",
        "SchedulerProfile",
        json!({ "spec": {
        "percentageOfNodesToScore": 101,
        "plugins": [
            { "name": "fit", "weight": 101, "deadline": "5", "memoryLimit": "1Ki", "failurePolicy": "Retry" },
            { "name": "fit", "filter": "yes" },
            { "weight": 1 },
        ]
    } }),
    );
    assert_eq!(
        c,
        [
            "spec.percentageOfNodesToScore: Invalid value: 101: must be between 0 and 100 (0 means adaptive)",
            "spec.plugins[0].weight: Invalid value: 101: must be between 0 and 100 (0: does not score)",
            "spec.plugins[0].deadline: Invalid value: \"5\": invalid duration \"5\": expected e.g. \"100ms\", \"2s\" or \"1m30s\"",
            "spec.plugins[0].memoryLimit: Invalid value: \"1Ki\": must be between 1Mi and 4Gi",
            "spec.plugins[0].failurePolicy: Unsupported value: \"Retry\": supported values: \"Fail\", \"Ignore\"",
            "spec.plugins[1].name: Duplicate value: \"fit\"",
            "spec.plugins[1].filter: Invalid value: \"string\": spec.plugins[1].filter in body must be of type boolean: \"string\"",
            "spec.plugins[2].name: Required value: the name of a Plugin object",
        ]
    );
    let c = causes(
        "trellis.dev",
        "SchedulerProfile",
        json!({ "spec": { "plugins": [] } }),
    );
    assert_eq!(
        c,
        ["spec.plugins: Required value: a profile needs at least one plugin"]
    );
    let err = create("trellis.dev", "Plugin", json!({ "spec": {}, "extra": 1 })).unwrap_err();
    assert_eq!(
        err.to_string(),
        "strict decoding error: unknown field \"extra\""
    );
}
