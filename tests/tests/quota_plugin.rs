//! The ResourceQuota admission plugin as a built component, through the plugin
//! host, against upstream semantics (Kubernetes v1.32: the ResourceQuota
//! admission plugin and `pkg/quota/v1/evaluator/core`). A fake object source
//! serves `ResourceQuota` fixtures; a fake sink records the `update-status`
//! charges the plugin stages.

// `&[q.clone()]` reads better than `slice::from_ref(&q)` in these tables.
#![allow(clippy::cloned_ref_to_slice_refs)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use trellis_plugin_host::admission::{AdmissionPlugin, AdmissionResponse};
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{
    CallError, FaultKind, Grants, HostServices, LoadError, ObjectSink, ObjectSource, PluginSpec,
};
use trellis_tests::*;

const NS: &str = "team-a";

/// Quotas by namespace, and what the plugin did with them.
#[derive(Default)]
struct Cluster {
    quotas: Mutex<Vec<Value>>,
    lists: Mutex<Vec<(String, String)>>,
    charges: Mutex<Vec<(KindRef, String, Value)>>,
}

impl Cluster {
    fn reset(&self, quotas: Vec<Value>) {
        *self.quotas.lock().unwrap() = quotas;
        self.lists.lock().unwrap().clear();
        self.charges.lock().unwrap().clear();
    }

    fn charged(&self) -> Vec<Value> {
        self.charges
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, q)| q.clone())
            .collect()
    }
}

impl ObjectSource for Cluster {
    fn get(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::NotFound)
    }

    fn list(&self, kind: &KindRef, ns: &str, selector: &str) -> Result<Vec<String>, ObjectError> {
        self.lists
            .lock()
            .unwrap()
            .push((kind.kind.clone(), ns.to_string()));
        assert_eq!(
            (kind.group.as_str(), kind.kind.as_str(), selector),
            ("", "ResourceQuota", "")
        );
        Ok(self
            .quotas
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q["metadata"]["namespace"] == ns)
            .map(|q| q.to_string())
            .collect())
    }
}

impl ObjectSink for Cluster {
    fn create(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied("not in admission".into()))
    }
    fn update(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied("not in admission".into()))
    }
    fn update_status(&self, kind: &KindRef, ns: &str, object: &str) -> Result<String, ObjectError> {
        let v: Value =
            serde_json::from_str(object).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        self.charges
            .lock()
            .unwrap()
            .push((kind.clone(), ns.to_string(), v));
        Ok(object.to_string())
    }
    fn merge_patch(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied("not in admission".into()))
    }
    fn delete(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<(), ObjectError> {
        Err(ObjectError::AccessDenied("not in admission".into()))
    }
}

fn grants() -> Grants {
    Grants::none()
        .read("", "ResourceQuota")
        .write("", "ResourceQuota")
}

struct Harness {
    plugin: AdmissionPlugin,
    cluster: Arc<Cluster>,
}

impl Harness {
    fn new() -> Self {
        let cluster = Arc::new(Cluster::default());
        let spec = PluginSpec::new("ResourceQuota")
            .grants(grants())
            .services(HostServices {
                objects: Some(cluster.clone()),
                writer: Some(cluster.clone()),
                exec: None,
            });
        let plugin = AdmissionPlugin::load(&engine(), &read_plugin("resource-quota"), spec)
            .expect("loading resource-quota");
        Self { plugin, cluster }
    }

    /// Review `request` against `quotas`; the response and the charged quotas.
    fn review(&self, quotas: &[Value], request: &Value) -> (AdmissionResponse, Vec<Value>) {
        self.cluster.reset(quotas.to_vec());
        let r = self
            .plugin
            .review(&request.to_string())
            .unwrap_or_else(|e| panic!("review failed: {e}"));
        (r, self.cluster.charged())
    }

    /// Review and expect an admission with exactly these charges (quota name →
    /// `status.used`), each the quota as read with only `status.used` changed.
    fn admits(&self, quotas: &[Value], request: &Value, want: &[(&str, Value)]) {
        let (r, charged) = self.review(quotas, request);
        assert!(r.allowed, "denied: {}", r.message);
        assert_eq!((r.code, r.patch.as_str()), (0, ""));
        let got: Vec<(String, Value)> = charged
            .iter()
            .map(|q| {
                (
                    q["metadata"]["name"].as_str().unwrap().to_string(),
                    q["status"]["used"].clone(),
                )
            })
            .collect();
        let want: Vec<(String, Value)> = want
            .iter()
            .map(|(n, u)| (n.to_string(), u.clone()))
            .collect();
        assert_eq!(got, want, "charges for {}", request["object"]);
        for q in &charged {
            let original = quotas
                .iter()
                .find(|o| o["metadata"]["name"] == q["metadata"]["name"])
                .unwrap();
            let mut expected = original.clone();
            expected["status"]["used"] = q["status"]["used"].clone();
            assert_eq!(q, &expected, "only status.used may change");
            assert_eq!(
                q["metadata"]["resourceVersion"],
                original["metadata"]["resourceVersion"]
            );
        }
        for (kind, ns, _) in self.cluster.charges.lock().unwrap().iter() {
            assert_eq!(
                (
                    kind.group.as_str(),
                    kind.version.as_str(),
                    kind.kind.as_str()
                ),
                ("", "v1", "ResourceQuota")
            );
            assert_eq!(ns, NS);
        }
    }

    /// Review and expect a 403 with exactly `message`, and no charge.
    fn denies(&self, quotas: &[Value], request: &Value, message: &str) {
        let (r, charged) = self.review(quotas, request);
        assert!(!r.allowed, "admitted {}", request["object"]);
        assert_eq!(r.code, 403);
        assert_eq!(r.message, message);
        assert!(charged.is_empty(), "a denial charged {charged:?}");
    }
}

fn quota(name: &str, hard: Value, used: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": "41", "uid": format!("uid-{name}")},
        "spec": {"hard": hard.clone()},
        "status": {"hard": hard, "used": used}
    })
}

fn scoped(name: &str, hard: Value, used: Value, scopes: Value, selector: Value) -> Value {
    let mut q = quota(name, hard, used);
    q["spec"]["scopes"] = scopes;
    q["spec"]["scopeSelector"] = json!({"matchExpressions": selector});
    q
}

fn kind_of(resource: &str) -> &'static str {
    match resource {
        "pods" => "Pod",
        "services" => "Service",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "configmaps" => "ConfigMap",
        "secrets" => "Secret",
        "deployments" => "Deployment",
        "jobs" => "Job",
        "widgets" => "Widget",
        _ => "Object",
    }
}

fn request(op: &str, group: &str, resource: &str, object: Value) -> Value {
    json!({
        "uid": "0b9a1c3e",
        "kind": {"group": group, "version": "v1", "kind": kind_of(resource)},
        "resource": {"group": group, "version": "v1", "resource": resource},
        "subResource": "",
        "name": object["metadata"]["name"],
        "namespace": NS,
        "operation": op,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": null,
        "dryRun": false,
        "options": {}
    })
}

fn create(group: &str, resource: &str, object: Value) -> Value {
    request("CREATE", group, resource, object)
}

fn pod(name: &str, requests: Value, limits: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "app", "image": "busybox",
            "resources": {"requests": requests, "limits": limits}}]}
    })
}

fn named(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": NS}})
}

#[test]
fn every_pod_resource_is_charged() {
    let h = Harness::new();
    let hard = json!({
        "pods": "10", "count/pods": "10",
        "cpu": "4", "requests.cpu": "4", "limits.cpu": "8",
        "memory": "8Gi", "requests.memory": "8Gi", "limits.memory": "16Gi",
        "requests.ephemeral-storage": "10Gi", "limits.ephemeral-storage": "20Gi",
        "requests.nvidia.com/gpu": "4", "requests.hugepages-2Mi": "1Gi",
        "services": "5"
    });
    let used = json!({
        "pods": "1", "count/pods": "1",
        "cpu": "500m", "requests.cpu": "500m", "limits.cpu": "1",
        "memory": "1Gi", "requests.memory": "1Gi", "limits.memory": "2Gi",
        "requests.ephemeral-storage": "0", "limits.ephemeral-storage": "0",
        "requests.nvidia.com/gpu": "0", "requests.hugepages-2Mi": "0",
        "services": "2"
    });
    let p = pod(
        "web",
        json!({"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi",
            "nvidia.com/gpu": "1", "hugepages-2Mi": "4Mi"}),
        json!({"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "2Gi",
            "nvidia.com/gpu": "1", "hugepages-2Mi": "4Mi"}),
    );
    h.admits(
        &[quota("compute", hard, used)],
        &create("", "pods", p),
        &[(
            "compute",
            json!({
                "pods": "2", "count/pods": "2",
                "cpu": "750m", "requests.cpu": "750m", "limits.cpu": "1500m",
                "memory": "1280Mi", "requests.memory": "1280Mi", "limits.memory": "2560Mi",
                "requests.ephemeral-storage": "1Gi", "limits.ephemeral-storage": "2Gi",
                "requests.nvidia.com/gpu": "1", "requests.hugepages-2Mi": "4Mi",
                "services": "2"
            }),
        )],
    );

    // Each resource alone, full: refused with upstream's text.
    let p = pod(
        "web",
        json!({"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi", "nvidia.com/gpu": "1"}),
        json!({"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "2Gi", "nvidia.com/gpu": "1"}),
    );
    let cases = [
        ("pods", "5", "pods=1", "pods=5"),
        ("count/pods", "5", "count/pods=1", "count/pods=5"),
        ("cpu", "1", "cpu=250m", "cpu=1"),
        (
            "requests.cpu",
            "900m",
            "requests.cpu=250m",
            "requests.cpu=900m",
        ),
        ("limits.cpu", "2", "limits.cpu=500m", "limits.cpu=2"),
        ("memory", "1Gi", "memory=256Mi", "memory=1Gi"),
        (
            "requests.memory",
            "1000Mi",
            "requests.memory=256Mi",
            "requests.memory=1000Mi",
        ),
        (
            "limits.memory",
            "1G",
            "limits.memory=512Mi",
            "limits.memory=1G",
        ),
        (
            "requests.ephemeral-storage",
            "10Gi",
            "requests.ephemeral-storage=1Gi",
            "requests.ephemeral-storage=10Gi",
        ),
        (
            "limits.ephemeral-storage",
            "1Gi",
            "limits.ephemeral-storage=2Gi",
            "limits.ephemeral-storage=1Gi",
        ),
        (
            "requests.nvidia.com/gpu",
            "2",
            "requests.nvidia.com/gpu=1",
            "requests.nvidia.com/gpu=2",
        ),
    ];
    for (resource, full, requested, limit) in cases {
        let q = quota("q", json!({resource: full}), json!({resource: full}));
        h.denies(
            &[q],
            &create("", "pods", p.clone()),
            &format!("exceeded quota: q, requested: {requested}, used: {limit}, limited: {limit}"),
        );
    }
}

#[test]
fn pods_count_init_containers_sidecars_and_overhead_as_upstream() {
    let h = Harness::new();
    let q = quota(
        "compute",
        json!({"requests.cpu": "10", "limits.cpu": "10", "requests.memory": "10Gi", "limits.memory": "10Gi"}),
        json!({"requests.cpu": "0", "limits.cpu": "0", "requests.memory": "0", "limits.memory": "0"}),
    );
    let c = |name: &str, cpu: &str, mem: &str| {
        json!({"name": name, "image": "busybox", "resources": {
            "requests": {"cpu": cpu, "memory": mem}, "limits": {"cpu": cpu, "memory": mem}}})
    };
    let mut p = pod("web", json!({}), json!({}));
    p["spec"]["containers"] = json!([c("a", "100m", "100Mi"), c("b", "100m", "100Mi")]);
    let mut sidecar = c("proxy", "50m", "50Mi");
    sidecar["restartPolicy"] = json!("Always");
    p["spec"]["initContainers"] = json!([sidecar, c("migrate", "500m", "10Mi")]);
    p["spec"]["overhead"] = json!({"cpu": "10m", "memory": "1Mi"});
    // cpu: max(100+100+50, 500+50) + 10 = 560m; memory: max(250, 60) + 1 = 251Mi.
    h.admits(
        &[q.clone()],
        &create("", "pods", p),
        &[(
            "compute",
            json!({"requests.cpu": "560m", "limits.cpu": "560m", "requests.memory": "251Mi", "limits.memory": "251Mi"}),
        )],
    );

    // Requests default to limits when only limits are given.
    h.admits(
        &[q.clone()],
        &create("", "pods", pod("lim", json!({}), json!({"cpu": "1", "memory": "1Gi"}))),
        &[(
            "compute",
            json!({"requests.cpu": "1", "limits.cpu": "1", "requests.memory": "1Gi", "limits.memory": "1Gi"}),
        )],
    );

    // A quota on cpu or memory needs every container to state it (upstream's
    // backward-compatible "must specify").
    let mut p = pod("web", json!({"cpu": "100m"}), json!({}));
    p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
    h.denies(
        &[q],
        &create("", "pods", p),
        "failed quota: compute: must specify limits.cpu for: app,init; limits.memory for: app,init; requests.cpu for: init; requests.memory for: app,init",
    );
}

#[test]
fn services_storage_and_object_counts() {
    let h = Harness::new();
    let svc = |name: &str, spec: Value| json!({"metadata": {"name": name, "namespace": NS}, "spec": spec});
    let q = quota(
        "net",
        json!({"services": "3", "services.loadbalancers": "1", "services.nodeports": "2", "count/services": "3"}),
        json!({"services": "1", "services.loadbalancers": "0", "services.nodeports": "0", "count/services": "1"}),
    );
    h.admits(
        &[q.clone()],
        &create("", "services", svc("lb", json!({"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}))),
        &[(
            "net",
            json!({"services": "2", "services.loadbalancers": "1", "services.nodeports": "2", "count/services": "2"}),
        )],
    );
    h.admits(
        &[q.clone()],
        &create("", "services", svc("plain", json!({"type": "ClusterIP", "ports": [{"port": 80}]}))),
        &[(
            "net",
            json!({"services": "2", "services.loadbalancers": "0", "services.nodeports": "0", "count/services": "2"}),
        )],
    );
    h.denies(
        &[q.clone()],
        &create("", "services", svc("np", json!({"type": "NodePort", "ports": [{"port": 1}, {"port": 2}, {"port": 3}]}))),
        "exceeded quota: net, requested: services.nodeports=3, used: services.nodeports=0, limited: services.nodeports=2",
    );
    let full_lb = quota(
        "net",
        json!({"services.loadbalancers": "1"}),
        json!({"services.loadbalancers": "1"}),
    );
    h.denies(
        &[full_lb],
        &create("", "services", svc("lb", json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{"port": 80}]}))),
        "exceeded quota: net, requested: services.loadbalancers=1, used: services.loadbalancers=1, limited: services.loadbalancers=1",
    );

    let storage = quota(
        "storage",
        json!({"persistentvolumeclaims": "5", "requests.storage": "100Gi",
            "gold.storageclass.storage.k8s.io/requests.storage": "20Gi",
            "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "2"}),
        json!({"persistentvolumeclaims": "1", "requests.storage": "10Gi",
            "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
            "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1"}),
    );
    let pvc = |class: &str, size: &str| {
        json!({"metadata": {"name": "data", "namespace": NS, "resourceVersion": "5"},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": size}}}})
    };
    h.admits(
        &[storage.clone()],
        &create("", "persistentvolumeclaims", pvc("gold", "5Gi")),
        &[(
            "storage",
            json!({"persistentvolumeclaims": "2", "requests.storage": "15Gi",
                "gold.storageclass.storage.k8s.io/requests.storage": "15Gi",
                "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "2"}),
        )],
    );
    h.admits(
        &[storage.clone()],
        &create("", "persistentvolumeclaims", pvc("standard", "50Gi")),
        &[(
            "storage",
            json!({"persistentvolumeclaims": "2", "requests.storage": "60Gi",
                "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
                "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1"}),
        )],
    );
    h.denies(
        &[storage.clone()],
        &create("", "persistentvolumeclaims", pvc("gold", "11Gi")),
        "exceeded quota: storage, requested: gold.storageclass.storage.k8s.io/requests.storage=11Gi, used: gold.storageclass.storage.k8s.io/requests.storage=10Gi, limited: gold.storageclass.storage.k8s.io/requests.storage=20Gi",
    );
    // Growing a claim is charged the difference; shrinking or relabelling is free.
    let mut grow = request(
        "UPDATE",
        "",
        "persistentvolumeclaims",
        pvc("standard", "30Gi"),
    );
    grow["oldObject"] = pvc("standard", "20Gi");
    h.admits(
        &[storage.clone()],
        &grow,
        &[(
            "storage",
            json!({"persistentvolumeclaims": "1", "requests.storage": "20Gi",
                "gold.storageclass.storage.k8s.io/requests.storage": "10Gi",
                "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1"}),
        )],
    );
    grow["object"] = pvc("standard", "20Gi");
    h.admits(&[storage.clone()], &grow, &[]);
    grow["object"] = pvc("standard", "111Gi");
    h.denies(
        &[storage],
        &grow,
        "exceeded quota: storage, requested: requests.storage=91Gi, used: requests.storage=10Gi, limited: requests.storage=100Gi",
    );

    let objects = quota(
        "objects",
        json!({"configmaps": "10", "secrets": "1", "count/configmaps": "10",
            "count/deployments.apps": "2", "count/jobs.batch": "1", "count/widgets.example.com": "3"}),
        json!({"configmaps": "4", "secrets": "1", "count/configmaps": "4",
            "count/deployments.apps": "0", "count/jobs.batch": "1", "count/widgets.example.com": "2"}),
    );
    let used = |changes: Value| {
        let mut u = objects["status"]["used"].clone();
        for (k, v) in changes.as_object().unwrap() {
            u[k] = v.clone();
        }
        u
    };
    h.admits(
        &[objects.clone()],
        &create("", "configmaps", named("settings")),
        &[(
            "objects",
            used(json!({"configmaps": "5", "count/configmaps": "5"})),
        )],
    );
    h.admits(
        &[objects.clone()],
        &create("apps", "deployments", named("web")),
        &[("objects", used(json!({"count/deployments.apps": "1"})))],
    );
    h.admits(
        &[objects.clone()],
        &create("example.com", "widgets", named("w")),
        &[("objects", used(json!({"count/widgets.example.com": "3"})))],
    );
    h.denies(
        &[objects.clone()],
        &create("", "secrets", named("token")),
        "exceeded quota: objects, requested: secrets=1, used: secrets=1, limited: secrets=1",
    );
    h.denies(
        &[objects.clone()],
        &create("batch", "jobs", named("once")),
        "exceeded quota: objects, requested: count/jobs.batch=1, used: count/jobs.batch=1, limited: count/jobs.batch=1",
    );
    // Kinds the quota does not limit pass untouched.
    h.admits(
        &[objects],
        &create("", "serviceaccounts", named("bot")),
        &[],
    );
}

#[test]
fn scopes_select_which_quotas_a_pod_counts_against() {
    let h = Harness::new();
    let pods = |name: &str, scopes: Value, selector: Value| {
        scoped(
            name,
            json!({"pods": "10"}),
            json!({"pods": "0"}),
            scopes,
            selector,
        )
    };
    let pc = |op: &str, values: Value| json!([{"scopeName": "PriorityClass", "operator": op, "values": values}]);
    let quotas = [
        pods("best-effort", json!(["BestEffort"]), json!([])),
        pods("not-best-effort", json!(["NotBestEffort"]), json!([])),
        pods("terminating", json!(["Terminating"]), json!([])),
        pods(
            "not-terminating",
            json!([]),
            json!([{"scopeName": "NotTerminating", "operator": "Exists"}]),
        ),
        pods("high", json!([]), pc("In", json!(["high"]))),
        pods("not-high", json!([]), pc("NotIn", json!(["high"]))),
        pods("any-class", json!([]), pc("Exists", json!([]))),
        pods("no-class", json!([]), pc("DoesNotExist", json!([]))),
        pods(
            "high-batch",
            json!(["Terminating"]),
            pc("In", json!(["high"])),
        ),
        pods("cross-ns", json!(["CrossNamespacePodAffinity"]), json!([])),
    ];
    let best_effort = pod("be", json!({}), json!({}));
    let burstable = pod("burst", json!({"cpu": "100m"}), json!({}));
    let mut high_job = burstable.clone();
    high_job["spec"]["priorityClassName"] = json!("high");
    high_job["spec"]["activeDeadlineSeconds"] = json!(600);
    let mut low = best_effort.clone();
    low["spec"]["priorityClassName"] = json!("low");
    let mut cross = burstable.clone();
    cross["spec"]["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"topologyKey": "kubernetes.io/hostname", "labelSelector": {}, "namespaces": ["other"]}]}});
    let cases: [(&str, &Value, &[&str]); 5] = [
        (
            "best effort",
            &best_effort,
            &["best-effort", "no-class", "not-high", "not-terminating"],
        ),
        (
            "burstable",
            &burstable,
            &["no-class", "not-best-effort", "not-high", "not-terminating"],
        ),
        (
            "high-priority job",
            &high_job,
            &[
                "any-class",
                "high",
                "high-batch",
                "not-best-effort",
                "terminating",
            ],
        ),
        (
            "low priority",
            &low,
            &["any-class", "best-effort", "not-high", "not-terminating"],
        ),
        (
            "cross-namespace affinity",
            &cross,
            &[
                "cross-ns",
                "no-class",
                "not-best-effort",
                "not-high",
                "not-terminating",
            ],
        ),
    ];
    for (name, p, want) in cases {
        let (r, charged) = h.review(&quotas, &create("", "pods", p.clone()));
        assert!(r.allowed, "{name}: {}", r.message);
        let got: BTreeSet<&str> = charged
            .iter()
            .map(|q| q["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(got, want.iter().copied().collect(), "{name}");
        for q in &charged {
            assert_eq!(q["status"]["used"], json!({"pods": "1"}), "{name}");
        }
    }

    // A scoped quota never covers other kinds.
    let svc_quota = scoped(
        "svc",
        json!({"count/services": "0"}),
        json!({"count/services": "0"}),
        json!(["NotBestEffort"]),
        json!([]),
    );
    h.admits(
        &[svc_quota],
        &create(
            "",
            "services",
            json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}),
        ),
        &[],
    );
    // A full BestEffort quota refuses only best-effort pods.
    let full = scoped(
        "be",
        json!({"pods": "2"}),
        json!({"pods": "2"}),
        json!(["BestEffort"]),
        json!([]),
    );
    h.denies(
        &[full.clone()],
        &create("", "pods", best_effort),
        "exceeded quota: be, requested: pods=1, used: pods=2, limited: pods=2",
    );
    h.admits(&[full], &create("", "pods", burstable), &[]);
}

#[test]
fn denials_and_charges_across_several_quotas() {
    let h = Harness::new();
    let p = pod(
        "web",
        json!({"cpu": "500m", "memory": "128Mi"}),
        json!({"cpu": "1", "memory": "256Mi"}),
    );
    let a = quota("a-pods", json!({"pods": "5"}), json!({"pods": "4"}));
    let b = quota(
        "b-cpu",
        json!({"requests.cpu": "2", "limits.cpu": "2"}),
        json!({"requests.cpu": "1", "limits.cpu": "1"}),
    );
    let c = quota("c-other-ns", json!({"pods": "0"}), json!({"pods": "0"}));
    let mut c = c;
    c["metadata"]["namespace"] = json!("elsewhere");
    // Every covering quota is charged, in name order; other namespaces do not count.
    h.admits(
        &[b.clone(), c.clone(), a.clone()],
        &create("", "pods", p.clone()),
        &[
            ("a-pods", json!({"pods": "5"})),
            ("b-cpu", json!({"requests.cpu": "1500m", "limits.cpu": "2"})),
        ],
    );
    assert_eq!(
        *h.cluster.lists.lock().unwrap(),
        [("ResourceQuota".to_string(), NS.to_string())]
    );

    // One full quota refuses the whole request; several exceeded resources are listed sorted.
    let full = quota(
        "b-cpu",
        json!({"requests.cpu": "1", "limits.cpu": "1"}),
        json!({"requests.cpu": "800m", "limits.cpu": "1"}),
    );
    h.denies(
        &[a.clone(), full],
        &create("", "pods", p.clone()),
        "exceeded quota: b-cpu, requested: limits.cpu=1,requests.cpu=500m, used: limits.cpu=1,requests.cpu=800m, limited: limits.cpu=1,requests.cpu=1",
    );
    let a_full = quota("a-pods", json!({"pods": "4"}), json!({"pods": "4"}));
    h.denies(
        &[b.clone(), a_full],
        &create("", "pods", p.clone()),
        "exceeded quota: a-pods, requested: pods=1, used: pods=4, limited: pods=4",
    );

    // status.used missing a limited resource: status unknown (upstream lists
    // every resource of the quota this kind counts towards).
    let unknown = quota(
        "fresh",
        json!({"pods": "5", "requests.cpu": "2", "secrets": "3"}),
        json!({"pods": "0"}),
    );
    h.denies(
        &[unknown],
        &create("", "pods", p.clone()),
        "status unknown for quota: fresh, resources: pods,requests.cpu",
    );
    // A quota the controller has not synced yet (no status at all) holds too.
    let mut new = quota("new", json!({"pods": "5"}), json!({}));
    new.as_object_mut().unwrap().remove("status");
    h.denies(
        &[new],
        &create("", "pods", p.clone()),
        "status unknown for quota: new, resources: pods",
    );
}

#[test]
fn dry_run_checks_without_charging_and_delete_does_nothing() {
    let h = Harness::new();
    let q = quota("pods", json!({"pods": "2"}), json!({"pods": "1"}));
    let mut dry = create("", "pods", pod("web", json!({}), json!({})));
    dry["dryRun"] = json!(true);
    h.admits(&[q.clone()], &dry, &[]);
    assert_eq!(
        h.cluster.lists.lock().unwrap().len(),
        1,
        "dry run still reads quotas"
    );
    let full = quota("pods", json!({"pods": "1"}), json!({"pods": "1"}));
    h.denies(
        &[full.clone()],
        &dry,
        "exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1",
    );

    // DELETE, subresources and updates of count-only kinds neither read nor charge.
    let mut delete = request("DELETE", "", "pods", Value::Null);
    delete["oldObject"] = pod("web", json!({}), json!({}));
    let mut status = request("UPDATE", "", "pods", pod("web", json!({}), json!({})));
    status["subResource"] = json!("status");
    status["oldObject"] = pod("web", json!({}), json!({}));
    let mut cm = request("UPDATE", "", "configmaps", named("settings"));
    cm["oldObject"] = named("settings");
    let events = create("", "events", named("e"));
    for r in [delete, status, cm, events] {
        h.admits(&[full.clone()], &r, &[]);
        assert!(
            h.cluster.lists.lock().unwrap().is_empty(),
            "{} read quotas",
            r["operation"]
        );
    }
}

#[test]
fn the_plugin_needs_both_grants() {
    let wasm = read_plugin("resource-quota");
    for grants in [
        Grants::none().read("", "ResourceQuota"),
        Grants::none().write("", "ResourceQuota"),
    ] {
        let err = AdmissionPlugin::load(
            &engine(),
            &wasm,
            PluginSpec::new("ResourceQuota").grants(grants),
        )
        .unwrap_err();
        assert!(matches!(err, LoadError::NotGranted { .. }), "{err}");
    }
    // Granted the capability but not the kind: the list is refused, which is a
    // plugin error (the chain's failure policy applies), never a silent allow.
    let cluster = Arc::new(Cluster::default());
    let spec = PluginSpec::new("ResourceQuota")
        .grants(
            Grants::none()
                .read("", "ConfigMap")
                .write("", "ResourceQuota"),
        )
        .services(HostServices {
            objects: Some(cluster.clone()),
            writer: Some(cluster),
            exec: None,
        });
    let plugin = AdmissionPlugin::load(&engine(), &wasm, spec).unwrap();
    let err = plugin
        .review(&create("", "pods", pod("web", json!({}), json!({}))).to_string())
        .unwrap_err();
    let CallError::Plugin(fault) = err else {
        panic!("expected a plugin error, got {err}");
    };
    assert_eq!(fault.kind, FaultKind::Internal);
    assert_eq!(
        fault.message,
        "listing ResourceQuota in team-a: access denied: plugin ResourceQuota may not read v1/ResourceQuota"
    );
}
