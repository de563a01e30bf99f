//! The admission chain through `trellis up` and the real kubectl:
//! LimitRange defaults and limits, ResourceQuota holding under 20 concurrent
//! creates, the example plugin loaded with kubectl, a looping plugin under
//! `Fail` and `Ignore`, and a chain swapped under load failing no request.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::Cluster;

const PATIENCE: Duration = Duration::from_secs(60);

fn chain_ready(c: &Cluster, name: &str) -> bool {
    c.kubectl(&[
        "get",
        "admissionchain",
        name,
        "-o",
        "jsonpath={.status.conditions[0].status}",
    ])
    .1 == "True"
}

/// `kubectl create -f -`; (exit code, stdout + stderr).
fn create(c: &Cluster, manifest: &str) -> (i32, String) {
    let (code, out, err) = c.kubectl_stdin(&["create", "-f", "-"], Some(manifest));
    (code, format!("{out}{err}"))
}

fn pod(ns: &str, name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  containers: [{{name: app, image: nginx, resources: {resources}}}]\n"
    )
}

fn inline_plugin(name: &str, file: &str, role: &str, extra: &str) -> String {
    let wasm = std::fs::read(trellis_testkit::plugin_dir().join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}; run `cargo xtask plugins` first"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(wasm);
    format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  role: {role}\n  source: {{wasm: {b64}}}\n{extra}"
    )
}

#[test]
fn limit_range_defaults_and_refuses_like_upstream() {
    let dir = trellis_testkit::plugin_dir();
    let c = Cluster::start(&["up", "--plugin-dir", dir.to_str().unwrap()], None);
    c.eventually("the default chain is active", PATIENCE, || {
        chain_ready(&c, "default")
    });
    c.ok(&["create", "namespace", "lr"]);
    c.apply(
        "apiVersion: v1\nkind: LimitRange\nmetadata: {name: limits, namespace: lr}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: \"1\"}\n    min: {cpu: 50m}\n    maxLimitRequestRatio: {cpu: \"10\"}\n  - type: Pod\n    max: {memory: 1Gi}\n  - type: PersistentVolumeClaim\n    min: {storage: 1Gi}\n    max: {storage: 10Gi}\n",
    );
    // Defaults: limits from `default`, requests from `defaultRequest`, and
    // memory's request from its default limit.
    let (code, out) = create(&c, &pod("lr", "plain", "{}"));
    assert_eq!(code, 0, "{out}");
    let res = c.ok(&[
        "-n",
        "lr",
        "get",
        "pod",
        "plain",
        "-o",
        "jsonpath={.spec.containers[0].resources}",
    ]);
    let res: serde_json::Value = serde_json::from_str(&res).unwrap();
    assert_eq!(
        res,
        serde_json::json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}})
    );
    let cases = [
        (
            "big",
            "{limits: {cpu: \"2\"}}",
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2",
        ),
        (
            "tiny",
            "{requests: {cpu: 10m}}",
            // The default limit (500m) makes its ratio too high as well: both, as upstream aggregates them.
            "pods \"tiny\" is forbidden: [minimum cpu usage per Container is 50m, but request is 10m, cpu max limit to request ratio per Container is 10, but provided ratio is 50.000000]",
        ),
        (
            "skewed",
            "{requests: {cpu: 60m}, limits: {cpu: 900m}}",
            "pods \"skewed\" is forbidden: cpu max limit to request ratio per Container is 10, but provided ratio is 15.000000",
        ),
        (
            "hungry",
            "{limits: {memory: 2Gi}}",
            "pods \"hungry\" is forbidden: maximum memory usage per Pod is 1Gi, but limit is 2Gi",
        ),
    ];
    for (name, resources, message) in cases {
        let (code, out) = create(&c, &pod("lr", name, resources));
        assert_ne!(code, 0, "{name} was admitted");
        assert!(out.contains(message), "{name}: {out}");
    }
    let (code, out) = create(
        &c,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: huge, namespace: lr}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 20Gi}}\n",
    );
    assert_ne!(code, 0);
    assert!(
        out.contains(
            "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
        ),
        "{out}"
    );
    // The README's example: the team-label chain from examples/manifests.
    let manifests =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests");
    c.ok(&[
        "apply",
        "-f",
        manifests.join("team-label.yaml").to_str().unwrap(),
    ]);
    c.eventually("teams active", PATIENCE, || chain_ready(&c, "teams"));
    c.eventually("the plugin reports it loaded", PATIENCE, || {
        c.kubectl(&[
            "get",
            "plugin",
            "team-label",
            "-o",
            "jsonpath={.status.conditions[0].status}",
        ])
        .1 == "True"
    });
    let table = c.ok(&["get", "admissionchains"]);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["teams", "True", "1"]),
        "{table}"
    );
    let (code, _, err) = c.kubectl(&[
        "apply",
        "-f",
        manifests
            .join("unlabelled-deployment.yaml")
            .to_str()
            .unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("deployments \"web\" is forbidden: Deployment \"web\" needs a \"team\" label"),
        "{err}"
    );

    // Namespaces without a LimitRange are untouched.
    let (code, out) = create(&c, &pod("default", "free", "{}"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "free",
            "-o",
            "jsonpath={.spec.containers[0].resources}"
        ]),
        "{}"
    );
}

/// 20 concurrent creates against `pods: 5` in namespace `q`: exactly 5 in.
fn quota_race(c: &Cluster) {
    c.eventually("the default chain is active", PATIENCE, || {
        chain_ready(c, "default")
    });
    c.ok(&["create", "namespace", "q"]);
    quota_in(
        c,
        "q",
        "five",
        "  hard: {pods: \"5\", requests.cpu: \"1\"}\n",
    );
    let results: Vec<(i32, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let c = &c;
                s.spawn(move || create(c, &pod("q", &format!("p{i}"), "{requests: {cpu: 10m}}")))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let admitted = results.iter().filter(|(code, _)| *code == 0).count();
    assert_eq!(admitted, 5, "{results:#?}");
    for (code, out) in results.iter().filter(|(code, _)| *code != 0) {
        assert!(
            out.contains("is forbidden: exceeded quota: five, requested: pods=1, used: pods=5, limited: pods=5"),
            "{code}: {out}"
        );
    }
    assert_eq!(
        c.ok(&["-n", "q", "get", "pods", "--no-headers"])
            .lines()
            .count(),
        5
    );
    assert_eq!(
        c.ok(&[
            "-n",
            "q",
            "get",
            "resourcequota",
            "five",
            "-o",
            "jsonpath={.status.used.pods}"
        ]),
        "5"
    );
}

#[test]
fn resource_quota_holds_on_etcd() {
    let dir = trellis_testkit::plugin_dir();
    if let Some(c) = Cluster::on_etcd_with(&["--plugin-dir", dir.to_str().unwrap()]) {
        quota_race(&c);
    }
}

#[test]
fn resource_quota_holds_under_concurrent_creates() {
    let dir = trellis_testkit::plugin_dir();
    let c = Cluster::start(&["up", "--plugin-dir", dir.to_str().unwrap()], None);
    quota_race(&c);
    // Deleting pods frees their share once the quota controller recomputes.
    // (Which five were admitted is up to the race, so take any two.)
    let admitted: Vec<String> = c
        .ok(&["-n", "q", "get", "pods", "-o", "name"])
        .lines()
        .map(String::from)
        .collect();
    let mut delete = vec!["-n", "q", "delete", "--grace-period=0", "--force"];
    delete.extend(admitted.iter().take(2).map(String::as_str));
    c.ok(&delete);
    c.eventually("usage recomputed", PATIENCE, || {
        let used = c
            .kubectl(&[
                "-n",
                "q",
                "get",
                "resourcequota",
                "five",
                "-o",
                "jsonpath={.status.used.pods}",
            ])
            .1;
        used == "3"
    });
    // CPU requests are charged too.
    let (code, out) = create(&c, &pod("q", "cpu-hog", "{requests: {cpu: \"2\"}}"));
    assert_ne!(code, 0);
    assert!(
        out.contains("exceeded quota: five, requested: requests.cpu=2"),
        "{out}"
    );

    // Object counts, services, claims and storage, with kubectl manifests.
    c.ok(&["create", "namespace", "objs"]);
    quota_in(
        &c,
        "objs",
        "objs",
        "  hard: {configmaps: \"1\", services: \"2\", services.nodeports: \"0\", persistentvolumeclaims: \"2\", requests.storage: 5Gi, count/deployments.apps: \"1\"}\n",
    );
    let cm = |n: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, namespace: objs}}\n")
    };
    let svc = |n: &str, ty: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {n}, namespace: objs}}\nspec: {{type: {ty}, ports: [{{port: 80}}], selector: {{app: x}}}}\n")
    };
    let pvc = |n: &str, size: &str| {
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {n}, namespace: objs}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: {size}}}}}}}\n")
    };
    let deploy = |n: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {n}, namespace: objs}}\nspec:\n  selector: {{matchLabels: {{app: {n}}}}}\n  template:\n    metadata: {{labels: {{app: {n}}}}}\n    spec: {{containers: [{{name: app, image: nginx}}]}}\n")
    };
    let cases: Vec<(String, bool, &str)> = vec![
        (cm("one"), true, ""),
        (cm("two"), false, "exceeded quota: objs, requested: configmaps=1, used: configmaps=1, limited: configmaps=1"),
        (svc("plain", "ClusterIP"), true, ""),
        (svc("exposed", "NodePort"), false, "services.nodeports=1"),
        (pvc("small", "1Gi"), true, ""),
        (pvc("big", "10Gi"), false, "requests.storage=10Gi"),
        (deploy("first"), true, ""),
        (deploy("second"), false, "count/deployments.apps=1"),
    ];
    for (manifest, ok, message) in cases {
        let (code, out) = create(&c, &manifest);
        assert_eq!(code == 0, ok, "{manifest}{out}");
        assert!(out.contains(message), "{out}");
    }

    // Scopes: a BestEffort quota counts only pods without requests or limits.
    c.ok(&["create", "namespace", "scoped"]);
    quota_in(
        &c,
        "scoped",
        "besteffort",
        "  hard: {pods: \"1\"}\n  scopes: [BestEffort]\n",
    );
    assert_eq!(create(&c, &pod("scoped", "be-1", "{}")).0, 0);
    let (code, out) = create(&c, &pod("scoped", "be-2", "{}"));
    assert_ne!(code, 0);
    assert!(out.contains("exceeded quota: besteffort"), "{out}");
    let (code, out) = create(&c, &pod("scoped", "burstable", "{requests: {cpu: 10m}}"));
    assert_eq!(
        code, 0,
        "a pod with requests is outside the BestEffort scope: {out}"
    );
}

/// Apply the ResourceQuota `name` in `ns` with `spec` (its YAML lines under
/// `spec:`) and wait until the quota controller has computed its usage.
fn quota_in(c: &Cluster, ns: &str, name: &str, spec: &str) {
    c.apply(&format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    ));
    c.eventually(&format!("{ns}/{name} usage known"), PATIENCE, || {
        !c.kubectl(&[
            "-n",
            ns,
            "get",
            "resourcequota",
            name,
            "-o",
            "jsonpath={.status.used}",
        ])
        .1
        .is_empty()
    });
}

/// Create each manifest in order; `Ok` admits, `Err(m)` is refused with a
/// message containing `m`.
fn expect_creates(c: &Cluster, cases: &[(String, Result<(), &str>)]) {
    for (manifest, want) in cases {
        let (code, out) = create(c, manifest);
        match want {
            Ok(()) => assert_eq!(code, 0, "{manifest}{out}"),
            Err(m) => {
                assert_ne!(code, 0, "admitted:\n{manifest}");
                assert!(out.contains(m), "{manifest}{out}");
            }
        }
    }
}

#[test]
fn quota_resources_and_scopes_through_kubectl() {
    let dir = trellis_testkit::plugin_dir();
    let c = Cluster::start(&["up", "--plugin-dir", dir.to_str().unwrap()], None);
    c.eventually("the default chain is active", PATIENCE, || {
        chain_ready(&c, "default")
    });
    let pod_spec = |ns: &str, name: &str, spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
        )
    };
    let app = |resources: &str| {
        format!("  containers: [{{name: app, image: nginx, resources: {resources}}}]\n")
    };

    // Memory requests, CPU and memory limits, and secrets.
    c.ok(&["create", "namespace", "res"]);
    quota_in(
        &c,
        "res",
        "compute",
        "  hard: {requests.memory: 100Mi, limits.cpu: \"1\", limits.memory: 200Mi, secrets: \"1\"}\n",
    );
    let secret = |n: &str| {
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {n}, namespace: res}}\nstringData: {{k: v}}\n")
    };
    expect_creates(
        &c,
        &[
            (pod_spec("res", "fits", &app("{requests: {memory: 64Mi}, limits: {cpu: 500m, memory: 128Mi}}")), Ok(())),
            (pod_spec("res", "mem", &app("{requests: {memory: 64Mi}, limits: {cpu: 100m, memory: 64Mi}}")),
             Err("exceeded quota: compute, requested: requests.memory=64Mi, used: requests.memory=64Mi, limited: requests.memory=100Mi")),
            (pod_spec("res", "cpu", &app("{requests: {memory: 10Mi}, limits: {cpu: 600m, memory: 10Mi}}")),
             Err("limits.cpu=600m")),
            (pod_spec("res", "lim", &app("{requests: {memory: 10Mi}, limits: {cpu: 100m, memory: 100Mi}}")),
             Err("limits.memory=100Mi")),
            (pod_spec("res", "bare", &app("{}")),
             Err("failed quota: compute: must specify limits.cpu for: app; limits.memory for: app; requests.memory for: app")),
            (secret("one"), Ok(())),
            (secret("two"), Err("exceeded quota: compute, requested: secrets=1, used: secrets=1, limited: secrets=1")),
        ],
    );

    // Terminating (activeDeadlineSeconds set) and NotTerminating pods.
    c.ok(&["create", "namespace", "terms"]);
    quota_in(
        &c,
        "terms",
        "terminating",
        "  hard: {pods: \"1\"}\n  scopes: [Terminating]\n",
    );
    quota_in(
        &c,
        "terms",
        "longrunning",
        "  hard: {pods: \"1\"}\n  scopes: [NotTerminating]\n",
    );
    let deadline = |name: &str| {
        pod_spec(
            "terms",
            name,
            &format!("  activeDeadlineSeconds: 600\n{}", app("{}")),
        )
    };
    expect_creates(
        &c,
        &[
            (deadline("job-1"), Ok(())),
            (deadline("job-2"), Err("exceeded quota: terminating")),
            (pod_spec("terms", "svc-1", &app("{}")), Ok(())),
            (
                pod_spec("terms", "svc-2", &app("{}")),
                Err("exceeded quota: longrunning"),
            ),
        ],
    );

    // NotBestEffort, and a PriorityClass scope selector.
    c.ok(&["create", "namespace", "prio"]);
    // As upstream, a pod may only name a PriorityClass that exists.
    c.ok(&["create", "priorityclass", "high", "--value=1000"]);
    quota_in(
        &c,
        "prio",
        "burst",
        "  hard: {pods: \"1\"}\n  scopes: [NotBestEffort]\n",
    );
    quota_in(
        &c,
        "prio",
        "high",
        "  hard: {pods: \"1\"}\n  scopeSelector:\n    matchExpressions: [{scopeName: PriorityClass, operator: In, values: [high]}]\n",
    );
    let high = |name: &str| {
        pod_spec(
            "prio",
            name,
            &format!("  priorityClassName: high\n{}", app("{}")),
        )
    };
    expect_creates(
        &c,
        &[
            (
                pod_spec("prio", "b-1", &app("{requests: {cpu: 10m}}")),
                Ok(()),
            ),
            (
                pod_spec("prio", "b-2", &app("{requests: {cpu: 10m}}")),
                Err("exceeded quota: burst"),
            ),
            (pod_spec("prio", "be", &app("{}")), Ok(())),
            (high("h-1"), Ok(())),
            (high("h-2"), Err("exceeded quota: high")),
        ],
    );
}

#[test]
fn user_plugins_load_with_kubectl_and_failures_follow_policy() {
    let dir = trellis_testkit::plugin_dir();
    let c = Cluster::start(&["up", "--plugin-dir", dir.to_str().unwrap()], None);
    c.eventually("the default chain is active", PATIENCE, || {
        chain_ready(&c, "default")
    });

    // The example plugin from examples/, uploaded inline.
    c.apply(&inline_plugin(
        "team-label",
        "team-label.wasm",
        "admission",
        "",
    ));
    c.apply(
        "apiVersion: trellis.dev/v1alpha1\nkind: AdmissionChain\nmetadata: {name: teams}\nspec:\n  plugins:\n  - name: team-label\n    type: Mutating\n    rules: [{apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}]\n",
    );
    c.eventually("teams active", PATIENCE, || chain_ready(&c, "teams"));
    let deploy = |name: &str, labels: &str| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: default, labels: {labels}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: app, image: nginx}}]}}\n")
    };
    let (code, out) = create(&c, &deploy("anon", "{}"));
    assert_ne!(code, 0);
    assert!(
        out.contains("deployments \"anon\" is forbidden:") && out.contains("team"),
        "{out}"
    );
    let (code, out) = create(&c, &deploy("owned", "{team: web}"));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        c.ok(&[
            "get",
            "deployment",
            "owned",
            "-o",
            "jsonpath={.metadata.annotations.owner}"
        ]),
        "admin"
    );

    // A plugin that loops on objects named "spin".
    c.apply(&format!(
        "apiVersion: trellis.dev/v1alpha1\nkind: Plugin\nmetadata: {{name: spinner}}\nspec:\n  role: admission\n  source: {{builtin: test-reader}}\n  config: {{loopOn: spin}}\n  grants: {{capabilities: [objects-read]}}\n"
    ));
    let spin_chain = |policy: &str| {
        format!("apiVersion: trellis.dev/v1alpha1\nkind: AdmissionChain\nmetadata: {{name: spin}}\nspec:\n  plugins:\n  - name: spinner\n    deadline: 50ms\n    failurePolicy: {policy}\n    rules: [{{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}}]\n")
    };
    c.apply(&spin_chain("Fail"));
    c.eventually("spin active", PATIENCE, || chain_ready(&c, "spin"));
    let cm = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\n")
    };
    let started = std::time::Instant::now();
    let (code, out) = create(&c, &cm("spin"));
    assert_ne!(code, 0);
    assert!(
        out.contains("failed calling admission plugin \"spinner\"")
            && out.contains("exceeded its deadline of 50ms"),
        "{out}"
    );
    assert!(started.elapsed() < PATIENCE);
    let (code, out) = create(&c, &cm("calm"));
    assert_eq!(code, 0, "other objects pass: {out}");
    c.apply(&spin_chain("Ignore"));
    c.eventually("spin under Ignore lets it through", PATIENCE, || {
        let (code, _) = create(&c, &cm("spin"));
        code == 0
    });
    let (code, metrics) = c.http("GET", "/metrics", None, &[]);
    assert_eq!(code, 200);
    assert!(
        metrics.contains("trellis_admission_plugin_ignored_failures_total{plugin=\"spinner\"} 1"),
        "{metrics}"
    );
    let audit = std::fs::read_to_string(c.dir.path().join("audit.log")).unwrap();
    assert!(
        audit.contains("trellis.dev/admission-ignored-spinner")
            && audit.contains("exceeded its deadline"),
        "{audit}"
    );

    // Swapping a chain while requests flow fails none of them.
    c.ok(&["delete", "admissionchain", "spin"]);
    let failures = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut failures = Vec::new();
            for i in 0..60 {
                let (code, out) = create(&c, &cm(&format!("load-{i}")));
                if code != 0 {
                    failures.push(out);
                }
            }
            failures
        });
        for i in 0..6 {
            let label = if i % 2 == 0 { "team" } else { "squad" };
            c.apply(&format!(
                "apiVersion: trellis.dev/v1alpha1\nkind: AdmissionChain\nmetadata: {{name: teams}}\nspec:\n  plugins:\n  - name: team-label\n    type: Mutating\n    config: {{label: {label}}}\n    rules: [{{apiGroups: [apps], apiVersions: [v1], operations: [CREATE], resources: [deployments]}}]\n  - name: team-label\n    type: Mutating\n    config: {{label: {label}}}\n    rules: [{{apiGroups: [\"\"], apiVersions: [v1], operations: [CREATE], resources: [secrets]}}]\n"
            ));
            std::thread::sleep(Duration::from_millis(150));
        }
        writer.join().unwrap()
    });
    assert!(failures.is_empty(), "{failures:#?}");
}
