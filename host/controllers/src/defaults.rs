//! The default controllers as `Plugin` objects: upstream's
//! kube-controller-manager set, each a component from `plugins/controllers`,
//! with the grants it needs and nothing more. `trellis up` creates the ones
//! that are missing; an operator may edit, swap or delete them like any other.

use serde_json::{json, Value};

/// One kind in a grant list.
fn k(group: &str, kind: &str) -> Value {
    json!({"group": group, "kind": kind})
}

fn event() -> Value {
    k("", "Event")
}

/// A controller `Plugin` object for builtin `component`.
fn plugin(
    name: &str,
    component: &str,
    config: Value,
    read: Vec<Value>,
    write: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "trellis.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": name, "labels": {"trellis.dev/default": "true"}},
        "spec": {
            "role": "controller",
            "source": {"builtin": component},
            "config": config,
            "grants": {
                "capabilities": ["log", "objects-read", "objects-write"],
                "read": read,
                "write": write,
            },
        },
    })
}

/// A dependent kind of a garbage collector instance; `owns` when it is
/// itself the owner kind of another instance (so a foreground deletion
/// reaches down through it).
type Dependent<'a> = (&'a str, &'a str, &'a str, bool);

/// A garbage collector instance for one owner kind and its dependents.
fn gc(owner: (&str, &str, &str), dependents: &[Dependent<'_>]) -> Value {
    let (og, ov, ok) = owner;
    let name = format!("garbage-collector-{}", ok.to_lowercase());
    let mut read = vec![k(og, ok)];
    let mut write = vec![k(og, ok)];
    for (g, _, kind, _) in dependents {
        read.push(k(g, kind));
        write.push(k(g, kind));
    }
    let config = json!({
        "owner": {"group": og, "version": ov, "kind": ok},
        "dependents": dependents
            .iter()
            .map(|(g, v, kind, owns)| json!({"group": g, "version": v, "kind": kind, "hasDependents": owns}))
            .collect::<Vec<_>>(),
    });
    plugin(&name, "garbage-collector", config, read, write)
}

/// The component each default controller needs (`build/plugins/NAME.wasm`).
pub fn component_of(plugin: &Value) -> &str {
    plugin["spec"]["source"]["builtin"]
        .as_str()
        .unwrap_or_default()
}

/// One worker, for a controller whose keys name objects of several kinds (a
/// pod's key makes the endpoints controllers sync its Services, a node's key
/// makes the DaemonSet controller sync every DaemonSet): then two keys never
/// write the same object at once and lose to each other's conflicts.
fn one_worker(mut p: Value) -> Value {
    p["spec"]["workers"] = json!(1);
    p
}

/// Every default controller, in start order.
pub fn default_controllers() -> Vec<Value> {
    let pod = || k("", "Pod");
    vec![
        plugin(
            "serviceaccount",
            "service-account",
            json!({}),
            vec![k("", "Namespace"), k("", "ServiceAccount")],
            vec![k("", "ServiceAccount")],
        ),
        plugin(
            "namespace",
            "namespace",
            json!({}),
            vec![k("*", "*")],
            vec![k("*", "*")],
        ),
        plugin(
            "replicaset",
            "replicaset",
            json!({}),
            vec![k("apps", "ReplicaSet"), pod()],
            vec![k("apps", "ReplicaSet"), pod(), event()],
        ),
        plugin(
            "deployment",
            "deployment",
            json!({}),
            vec![k("apps", "Deployment"), k("apps", "ReplicaSet"), pod()],
            vec![k("apps", "Deployment"), k("apps", "ReplicaSet"), event()],
        ),
        one_worker(plugin(
            "daemonset",
            "daemonset",
            json!({}),
            vec![
                k("apps", "DaemonSet"),
                pod(),
                k("", "Node"),
                k("apps", "ControllerRevision"),
            ],
            vec![
                k("apps", "DaemonSet"),
                pod(),
                k("apps", "ControllerRevision"),
                event(),
            ],
        )),
        plugin(
            "statefulset",
            "statefulset",
            json!({}),
            vec![
                k("apps", "StatefulSet"),
                pod(),
                k("", "PersistentVolumeClaim"),
                k("apps", "ControllerRevision"),
            ],
            vec![
                k("apps", "StatefulSet"),
                pod(),
                k("", "PersistentVolumeClaim"),
                k("apps", "ControllerRevision"),
                event(),
            ],
        ),
        plugin(
            "job",
            "job",
            json!({}),
            vec![k("batch", "Job"), pod()],
            vec![k("batch", "Job"), pod(), event()],
        ),
        plugin(
            "cronjob",
            "cronjob",
            json!({}),
            vec![k("batch", "CronJob"), k("batch", "Job")],
            vec![k("batch", "CronJob"), k("batch", "Job"), event()],
        ),
        one_worker(plugin(
            "endpoints",
            "endpoints",
            json!({}),
            vec![k("", "Service"), pod(), k("", "Endpoints")],
            vec![k("", "Endpoints"), event()],
        )),
        one_worker(plugin(
            "endpointslice",
            "endpointslice",
            json!({}),
            vec![
                k("", "Service"),
                pod(),
                k("", "Node"),
                k("discovery.k8s.io", "EndpointSlice"),
            ],
            vec![k("discovery.k8s.io", "EndpointSlice"), event()],
        )),
        plugin(
            "node-lifecycle",
            "node-lifecycle",
            json!({}),
            vec![k("", "Node"), k("coordination.k8s.io", "Lease"), pod()],
            vec![k("", "Node"), pod(), event()],
        ),
        gc(
            ("apps", "v1", "Deployment"),
            &[("apps", "v1", "ReplicaSet", true)],
        ),
        gc(("apps", "v1", "ReplicaSet"), &[("", "v1", "Pod", false)]),
        gc(
            ("apps", "v1", "StatefulSet"),
            &[
                ("", "v1", "Pod", false),
                ("apps", "v1", "ControllerRevision", false),
            ],
        ),
        gc(
            ("apps", "v1", "DaemonSet"),
            &[
                ("", "v1", "Pod", false),
                ("apps", "v1", "ControllerRevision", false),
            ],
        ),
        gc(("batch", "v1", "Job"), &[("", "v1", "Pod", false)]),
        gc(("batch", "v1", "CronJob"), &[("batch", "v1", "Job", true)]),
        gc(
            ("", "v1", "Service"),
            &[("discovery.k8s.io", "v1", "EndpointSlice", false)],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_well_formed() {
        let all = default_controllers();
        let mut names: Vec<&str> = all
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap())
            .collect();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "unique names");
        for p in &all {
            trellis_plugin_host::Grants::from_json(&p["spec"]["grants"]).unwrap();
            assert!(!component_of(p).is_empty());
        }
        assert!(names.contains(&"garbage-collector-replicaset"));
    }
}
