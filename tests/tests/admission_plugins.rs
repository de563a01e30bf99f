//! The admission plugins as built components, through the plugin host:
//! `limit-range` (upstream's LimitRanger) against LimitRange fixtures served
//! by a fake `objects-read`, and the `team-label` example.
//!
//! Expected objects and messages are written from upstream's code
//! (plugin/pkg/admission/limitranger, Kubernetes v1.32: `SetDefaults_LimitRangeItem`,
//! `mergePodResourceRequirements`, `minConstraint`, `maxConstraint`,
//! `maxRequestConstraint`, `limitRequestRatioConstraint`, `podRequests`,
//! `utilerrors.NewAggregate`) and `resource.Quantity.String()`'s canonical
//! form. Where upstream's order is random (Go map iteration over resource
//! names, lister order of LimitRanges), the plugin goes in sorted order and
//! the cases pin that.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use trellis_plugin_host::admission::{AdmissionPlugin, AdmissionResponse};
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{
    CallError, FaultKind, Grants, HostServices, LoadError, ObjectSource, PluginSpec,
};
use trellis_tests::*;

/// LimitRanges by namespace; records each list call.
#[derive(Default)]
struct FakeObjects {
    limit_ranges: Mutex<BTreeMap<String, Vec<Value>>>,
    fail: Mutex<Option<ObjectError>>,
    lists: Mutex<Vec<(String, String, String)>>,
}

impl FakeObjects {
    fn set(&self, namespace: &str, items: Vec<Value>) {
        let mut all = self.limit_ranges.lock().unwrap();
        all.clear();
        all.insert(namespace.to_string(), items);
    }
}

impl ObjectSource for FakeObjects {
    fn get(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::NotFound)
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<String>, ObjectError> {
        self.lists.lock().unwrap().push((
            format!("{}/{}/{}", kind.group, kind.version, kind.kind),
            namespace.to_string(),
            label_selector.to_string(),
        ));
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        assert_eq!(kind.kind, "LimitRange", "the plugin reads only LimitRanges");
        Ok(self
            .limit_ranges
            .lock()
            .unwrap()
            .get(namespace)
            .map(|items| items.iter().map(Value::to_string).collect())
            .unwrap_or_default())
    }
}

fn load_limit_range(objects: Arc<FakeObjects>) -> AdmissionPlugin {
    let spec = PluginSpec::new("LimitRanger")
        .grants(Grants::none().read("", "LimitRange"))
        .services(HostServices {
            objects: Some(objects),
            ..HostServices::default()
        });
    AdmissionPlugin::load(&engine(), &read_plugin("limit-range"), spec)
        .unwrap_or_else(|e| panic!("loading limit-range: {e}"))
}

fn limit_range(name: &str, limits: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"limits": limits},
    })
}

fn review(kind: &str, operation: &str, object: Value, old: Value) -> Value {
    let (plural, namespace) = match kind {
        "Pod" => ("pods", "default"),
        _ => ("persistentvolumeclaims", "default"),
    };
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace)
        .to_string();
    json!({
        "uid": "0c1f2e3d-0000-4000-8000-000000000001",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "resource": {"group": "", "version": "v1", "resource": plural},
        "subResource": "",
        "name": object["metadata"]["name"],
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old,
        "dryRun": false,
        "options": {},
    })
}

fn pod_create(pod: Value) -> Value {
    review("Pod", "CREATE", pod, Value::Null)
}

/// A pod named `web` in `default` with these containers.
fn pod(containers: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": containers},
    })
}

fn container(name: &str, resources: Value) -> Value {
    let mut c = json!({"name": name, "image": "busybox"});
    if !resources.is_null() {
        c["resources"] = resources;
    }
    c
}

fn claim(storage: Option<&str>) -> Value {
    let mut resources = json!({});
    if let Some(s) = storage {
        resources["requests"] = json!({"storage": s});
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": resources},
    })
}

/// What a review must come to.
enum Expect {
    /// Allowed without a patch.
    Unchanged,
    /// Allowed; the patch turns the request's object into this one.
    Becomes(Value),
    /// Denied with 403 and exactly this message.
    Denied(&'static str),
}

/// `object` with `edit` applied to a copy.
fn with(object: &Value, edit: impl FnOnce(&mut Value)) -> Value {
    let mut o = object.clone();
    edit(&mut o);
    o
}

fn check(name: &str, response: &AdmissionResponse, request: &Value, expect: &Expect) {
    match expect {
        Expect::Unchanged => {
            assert!(response.allowed, "{name}: denied: {}", response.message);
            assert_eq!(response.patch, "", "{name}: unexpected patch");
        }
        Expect::Becomes(want) => {
            assert!(response.allowed, "{name}: denied: {}", response.message);
            assert!(!response.patch.is_empty(), "{name}: no patch");
            let ops: Value = serde_json::from_str(&response.patch)
                .unwrap_or_else(|e| panic!("{name}: patch is not JSON: {e}"));
            // Applied the way the API server applies plugin patches.
            let got = trellis_api::patch::json_patch(&request["object"], &ops)
                .unwrap_or_else(|e| panic!("{name}: patch does not apply: {e}"));
            assert_eq!(&got, want, "{name}: patched object differs");
        }
        Expect::Denied(message) => {
            assert!(!response.allowed, "{name}: allowed, expected a denial");
            assert_eq!(response.code, 403, "{name}");
            assert_eq!(response.message, *message, "{name}");
        }
    }
}

/// Set the annotation LimitRanger writes (the pod has no other).
fn annotate(pod: &mut Value, value: &str) {
    pod["metadata"]["annotations"] = json!({"kubernetes.io/limit-ranger": value});
}

struct Case {
    name: &'static str,
    limit_ranges: Vec<Value>,
    request: Value,
    expect: Expect,
}

fn cases() -> Vec<Case> {
    let bare = pod(json!([container("app", Value::Null)]));
    let defaults_lr = limit_range(
        "defaults",
        json!([{"type": "Container",
                "default": {"cpu": "500m", "memory": "512Mi"},
                "defaultRequest": {"cpu": "100m", "memory": "256Mi"}}]),
    );
    let container_max = |max: Value| limit_range("max", json!([{"type": "Container", "max": max}]));
    let pod_item = |item: Value| {
        let mut i = item;
        i["type"] = json!("Pod");
        limit_range("pod", json!([i]))
    };
    let claim_lr = limit_range(
        "storage",
        json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]),
    );
    let res = |limits: Value, requests: Value| json!({"limits": limits, "requests": requests});

    vec![
        // --- no LimitRange, or nothing that applies ---
        Case {
            name: "no LimitRange: allowed unchanged",
            limit_ranges: vec![],
            request: pod_create(bare.clone()),
            expect: Expect::Unchanged,
        },
        Case {
            name: "a PersistentVolumeClaim item does not touch pods",
            limit_ranges: vec![claim_lr.clone()],
            request: pod_create(bare.clone()),
            expect: Expect::Unchanged,
        },
        // --- default and defaultRequest ---
        Case {
            name: "default and defaultRequest fill a container without resources",
            limit_ranges: vec![defaults_lr.clone()],
            request: pod_create(bare.clone()),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] = res(
                    json!({"cpu": "500m", "memory": "512Mi"}),
                    json!({"cpu": "100m", "memory": "256Mi"}),
                );
                annotate(p, "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app");
            })),
        },
        Case {
            name: "only the resources a container leaves unset are defaulted",
            limit_ranges: vec![defaults_lr.clone()],
            request: pod_create(pod(json!([container(
                "app",
                res(json!({"cpu": "300m"}), json!({"cpu": "300m"}))
            )]))),
            expect: Expect::Becomes(with(
                &pod(json!([container("app", res(json!({"cpu": "300m"}), json!({"cpu": "300m"})))])),
                |p| {
                    p["spec"]["containers"][0]["resources"] = res(
                        json!({"cpu": "300m", "memory": "512Mi"}),
                        json!({"cpu": "300m", "memory": "256Mi"}),
                    );
                    annotate(p, "LimitRanger plugin set: memory request for container app; memory limit for container app");
                },
            )),
        },
        Case {
            name: "a container with limits but no requests object gets the requests object",
            limit_ranges: vec![defaults_lr.clone()],
            request: pod_create(pod(json!([container(
                "app",
                json!({"limits": {"cpu": "200m", "memory": "512Mi"}})
            )]))),
            expect: Expect::Becomes(with(
                &pod(json!([container("app", json!({"limits": {"cpu": "200m", "memory": "512Mi"}}))])),
                |p| {
                    p["spec"]["containers"][0]["resources"]["requests"] =
                        json!({"cpu": "100m", "memory": "256Mi"});
                    annotate(p, "LimitRanger plugin set: cpu, memory request for container app");
                },
            )),
        },
        Case {
            name: "defaultRequest defaults to default",
            limit_ranges: vec![limit_range("d", json!([{"type": "Container", "default": {"cpu": "1"}}]))],
            request: pod_create(bare.clone()),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] = res(json!({"cpu": "1"}), json!({"cpu": "1"}));
                annotate(p, "LimitRanger plugin set: cpu request for container app; cpu limit for container app");
            })),
        },
        Case {
            name: "default defaults to max (and so does defaultRequest)",
            limit_ranges: vec![container_max(json!({"cpu": "2"}))],
            request: pod_create(bare.clone()),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] = res(json!({"cpu": "2"}), json!({"cpu": "2"}));
                annotate(p, "LimitRanger plugin set: cpu request for container app; cpu limit for container app");
            })),
        },
        Case {
            name: "defaultRequest defaults to min when there is no default",
            limit_ranges: vec![limit_range(
                "m",
                json!([{"type": "Container", "min": {"cpu": "100m"}, "default": {"memory": "1Gi"}}]),
            )],
            request: pod_create(bare.clone()),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] =
                    res(json!({"memory": "1Gi"}), json!({"cpu": "100m", "memory": "1Gi"}));
                annotate(p, "LimitRanger plugin set: cpu, memory request for container app; memory limit for container app");
            })),
        },
        Case {
            name: "extended resource names are escaped in the patch",
            limit_ranges: vec![limit_range(
                "gpu",
                json!([{"type": "Container", "default": {"nvidia.com/gpu": "1"}}]),
            )],
            request: pod_create(pod(json!([container("app", json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}))]))),
            expect: Expect::Becomes(with(
                &pod(json!([container("app", json!({"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}))])),
                |p| {
                    p["spec"]["containers"][0]["resources"] = res(
                        json!({"cpu": "1", "nvidia.com/gpu": "1"}),
                        json!({"cpu": "1", "nvidia.com/gpu": "1"}),
                    );
                    annotate(p, "LimitRanger plugin set: nvidia.com/gpu request for container app; nvidia.com/gpu limit for container app");
                },
            )),
        },
        Case {
            name: "init containers are defaulted too, after the containers",
            limit_ranges: vec![limit_range("d", json!([{"type": "Container", "default": {"cpu": "200m"}}]))],
            request: pod_create(with(&bare, |p| {
                p["spec"]["initContainers"] = json!([container("setup", Value::Null)])
            })),
            expect: Expect::Becomes(with(&bare, |p| {
                let r = res(json!({"cpu": "200m"}), json!({"cpu": "200m"}));
                p["spec"]["containers"][0]["resources"] = r.clone();
                p["spec"]["initContainers"] = json!([container("setup", r)]);
                annotate(p, "LimitRanger plugin set: cpu request for container app; cpu limit for container app; cpu request for init container setup; cpu limit for init container setup");
            })),
        },
        Case {
            name: "existing annotations are kept",
            limit_ranges: vec![limit_range("d", json!([{"type": "Container", "default": {"cpu": "1"}}]))],
            request: pod_create(with(&bare, |p| {
                p["metadata"]["annotations"] = json!({"team": "payments"})
            })),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] = res(json!({"cpu": "1"}), json!({"cpu": "1"}));
                p["metadata"]["annotations"] = json!({
                    "team": "payments",
                    "kubernetes.io/limit-ranger": "LimitRanger plugin set: cpu request for container app; cpu limit for container app",
                });
            })),
        },
        Case {
            // Upstream stores quantities canonically: "0.5" is "500m", "1024Mi" is "1Gi".
            name: "defaults are written in canonical form",
            limit_ranges: vec![limit_range(
                "d",
                json!([{"type": "Container", "default": {"cpu": "0.5", "memory": "1024Mi"}}]),
            )],
            request: pod_create(bare.clone()),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] = res(
                    json!({"cpu": "500m", "memory": "1Gi"}),
                    json!({"cpu": "500m", "memory": "1Gi"}),
                );
                annotate(p, "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app");
            })),
        },
        // --- Container max / min ---
        Case {
            name: "Container max: limit above it",
            limit_ranges: vec![container_max(json!({"cpu": "1"}))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "2"}), json!({"cpu": "500m"})))]))),
            expect: Expect::Denied("maximum cpu usage per Container is 1, but limit is 2"),
        },
        Case {
            name: "Container max: request above it",
            limit_ranges: vec![container_max(json!({"cpu": "1"}))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "1"}), json!({"cpu": "1500m"})))]))),
            expect: Expect::Denied("maximum cpu usage per Container is 1, but request is 1500m"),
        },
        Case {
            name: "Container max: at the max is allowed",
            limit_ranges: vec![container_max(json!({"cpu": "1", "memory": "1Gi"}))],
            request: pod_create(pod(json!([container(
                "app",
                res(json!({"cpu": "1000m", "memory": "1Gi"}), json!({"cpu": "1", "memory": "1073741824"}))
            )]))),
            expect: Expect::Unchanged,
        },
        Case {
            name: "Container max: the limit printed as upstream prints it",
            limit_ranges: vec![container_max(json!({"cpu": "1000m"}))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "1.5"}), json!({"cpu": "1"})))]))),
            expect: Expect::Denied("maximum cpu usage per Container is 1, but limit is 1500m"),
        },
        Case {
            name: "Container max: several resources aggregate in name order",
            limit_ranges: vec![container_max(json!({"memory": "1Gi", "cpu": "1"}))],
            request: pod_create(pod(json!([container(
                "app",
                res(json!({"cpu": "2", "memory": "2Gi"}), json!({"cpu": "1", "memory": "1Gi"}))
            )]))),
            expect: Expect::Denied("[maximum cpu usage per Container is 1, but limit is 2, maximum memory usage per Container is 1Gi, but limit is 2Gi]"),
        },
        Case {
            name: "Container max: the same violation in two containers is reported once",
            limit_ranges: vec![container_max(json!({"cpu": "1"}))],
            request: pod_create(pod(json!([
                container("a", res(json!({"cpu": "2"}), json!({"cpu": "1"}))),
                container("b", res(json!({"cpu": "2"}), json!({"cpu": "1"}))),
            ]))),
            expect: Expect::Denied("maximum cpu usage per Container is 1, but limit is 2"),
        },
        Case {
            name: "Container max applies to init containers",
            limit_ranges: vec![container_max(json!({"memory": "256Mi"}))],
            request: pod_create(with(
                &pod(json!([container("app", res(json!({"memory": "128Mi"}), json!({"memory": "128Mi"})))])),
                |p| p["spec"]["initContainers"] = json!([container("setup", res(json!({"memory": "512Mi"}), json!({"memory": "512Mi"})))]),
            )),
            expect: Expect::Denied("maximum memory usage per Container is 256Mi, but limit is 512Mi"),
        },
        Case {
            name: "Container min: request below it",
            limit_ranges: vec![limit_range("min", json!([{"type": "Container", "min": {"cpu": "100m"}}]))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "50m"}), json!({"cpu": "50m"})))]))),
            expect: Expect::Denied("minimum cpu usage per Container is 100m, but request is 50m"),
        },
        Case {
            name: "Container min: limit below it",
            limit_ranges: vec![limit_range("min", json!([{"type": "Container", "min": {"cpu": "100m"}}]))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "50m"}), json!({"cpu": "200m"})))]))),
            expect: Expect::Denied("minimum cpu usage per Container is 100m, but limit is 50m"),
        },
        Case {
            name: "defaults count in the Pod totals they are checked against",
            limit_ranges: vec![limit_range(
                "both",
                json!([{"type": "Container", "default": {"memory": "512Mi"}},
                       {"type": "Pod", "max": {"memory": "1Gi"}}]),
            )],
            request: pod_create(pod(json!([
                container("a", Value::Null),
                container("b", Value::Null),
                container("c", Value::Null),
            ]))),
            expect: Expect::Denied("maximum memory usage per Pod is 1Gi, but limit is 1536Mi"),
        },
        // --- maxLimitRequestRatio ---
        Case {
            name: "Container ratio above the max",
            limit_ranges: vec![limit_range("ratio", json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "1"}), json!({"cpu": "250m"})))]))),
            expect: Expect::Denied("cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"),
        },
        Case {
            name: "Container ratio: a fraction prints with six decimals",
            limit_ranges: vec![limit_range("ratio", json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "3"}}]))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "1"}), json!({"cpu": "300m"})))]))),
            expect: Expect::Denied("cpu max limit to request ratio per Container is 3, but provided ratio is 3.333333"),
        },
        Case {
            name: "Container ratio at the max is allowed",
            limit_ranges: vec![limit_range("ratio", json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}]))],
            request: pod_create(pod(json!([container("app", res(json!({"cpu": "1"}), json!({"cpu": "500m"})))]))),
            expect: Expect::Unchanged,
        },
        Case {
            name: "Container ratio without a request",
            limit_ranges: vec![limit_range("ratio", json!([{"type": "Container", "maxLimitRequestRatio": {"memory": "2"}}]))],
            request: pod_create(pod(json!([container("app", json!({"limits": {"memory": "1Gi"}}))]))),
            expect: Expect::Denied("memory max limit to request ratio per Container is 2, but no request is specified or request is 0"),
        },
        Case {
            name: "Container ratio without a limit",
            limit_ranges: vec![limit_range("ratio", json!([{"type": "Container", "maxLimitRequestRatio": {"memory": "2"}}]))],
            request: pod_create(pod(json!([container("app", json!({"requests": {"memory": "1Gi"}}))]))),
            expect: Expect::Denied("memory max limit to request ratio per Container is 2, but no limit is specified or limit is 0"),
        },
        // --- Pod items: sums over the containers ---
        Case {
            name: "Pod max: the containers' limits add up",
            limit_ranges: vec![pod_item(json!({"max": {"memory": "1Gi"}}))],
            request: pod_create(pod(json!([
                container("a", res(json!({"memory": "1Gi"}), json!({"memory": "512Mi"}))),
                container("b", res(json!({"memory": "1Gi"}), json!({"memory": "512Mi"}))),
            ]))),
            expect: Expect::Denied("maximum memory usage per Pod is 1Gi, but limit is 2Gi"),
        },
        Case {
            name: "Pod max: a container without a limit",
            limit_ranges: vec![pod_item(json!({"max": {"memory": "1Gi"}}))],
            request: pod_create(pod(json!([container("a", json!({"requests": {"memory": "128Mi"}}))]))),
            expect: Expect::Denied("maximum memory usage per Pod is 1Gi.  No limit is specified"),
        },
        Case {
            name: "Pod max: the largest init container counts when it exceeds the containers",
            limit_ranges: vec![pod_item(json!({"max": {"cpu": "2"}}))],
            request: pod_create(with(
                &pod(json!([container("app", res(json!({"cpu": "1"}), json!({"cpu": "1"})))])),
                |p| p["spec"]["initContainers"] = json!([container("setup", res(json!({"cpu": "3"}), json!({"cpu": "3"})))]),
            )),
            expect: Expect::Denied("maximum cpu usage per Pod is 2, but limit is 3"),
        },
        Case {
            name: "Pod max: a sidecar adds to the containers",
            limit_ranges: vec![pod_item(json!({"max": {"cpu": "2"}}))],
            request: pod_create(with(
                &pod(json!([container("app", res(json!({"cpu": "1500m"}), json!({"cpu": "1"})))])),
                |p| {
                    let mut sidecar = container("proxy", res(json!({"cpu": "1"}), json!({"cpu": "500m"})));
                    sidecar["restartPolicy"] = json!("Always");
                    p["spec"]["initContainers"] = json!([sidecar]);
                },
            )),
            expect: Expect::Denied("maximum cpu usage per Pod is 2, but limit is 2500m"),
        },
        Case {
            name: "Pod min: the containers' requests add up and still fall short",
            limit_ranges: vec![pod_item(json!({"min": {"cpu": "1"}}))],
            request: pod_create(pod(json!([
                container("a", res(json!({"cpu": "250m"}), json!({"cpu": "250m"}))),
                container("b", res(json!({"cpu": "250m"}), json!({"cpu": "250m"}))),
            ]))),
            expect: Expect::Denied("minimum cpu usage per Pod is 1, but request is 500m"),
        },
        Case {
            name: "Pod min: a container without a request",
            limit_ranges: vec![pod_item(json!({"min": {"memory": "100Mi"}}))],
            request: pod_create(pod(json!([container("a", json!({"requests": {"cpu": "100m"}}))]))),
            expect: Expect::Denied("minimum memory usage per Pod is 100Mi.  No request is specified"),
        },
        Case {
            name: "Pod min: the sum is enough",
            limit_ranges: vec![pod_item(json!({"min": {"cpu": "500m"}}))],
            request: pod_create(pod(json!([
                container("a", res(json!({"cpu": "250m"}), json!({"cpu": "250m"}))),
                container("b", res(json!({"cpu": "250m"}), json!({"cpu": "250m"}))),
            ]))),
            expect: Expect::Unchanged,
        },
        Case {
            name: "Pod ratio over the pod's totals",
            limit_ranges: vec![pod_item(json!({"maxLimitRequestRatio": {"memory": "2"}}))],
            request: pod_create(pod(json!([
                container("a", res(json!({"memory": "1Gi"}), json!({"memory": "256Mi"}))),
                container("b", res(json!({"memory": "1Gi"}), json!({"memory": "256Mi"}))),
            ]))),
            expect: Expect::Denied("memory max limit to request ratio per Pod is 2, but provided ratio is 4.000000"),
        },
        // --- several LimitRanges ---
        Case {
            name: "several LimitRanges: each fills what is still unset; the last annotation stays",
            limit_ranges: vec![
                limit_range("b-second", json!([{"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}}])),
                limit_range("a-first", json!([{"type": "Container", "default": {"cpu": "100m"}}])),
            ],
            request: pod_create(bare.clone()),
            expect: Expect::Becomes(with(&bare, |p| {
                p["spec"]["containers"][0]["resources"] = res(
                    json!({"cpu": "100m", "memory": "128Mi"}),
                    json!({"cpu": "100m", "memory": "128Mi"}),
                );
                annotate(p, "LimitRanger plugin set: memory request for container app; memory limit for container app");
            })),
        },
        Case {
            name: "several LimitRanges: the first one violated gives the message",
            limit_ranges: vec![
                limit_range("a-cpu", json!([{"type": "Container", "max": {"cpu": "1"}}])),
                limit_range("b-memory", json!([{"type": "Container", "max": {"memory": "1Gi"}}])),
            ],
            request: pod_create(pod(json!([container(
                "app",
                res(json!({"cpu": "2", "memory": "2Gi"}), json!({"cpu": "1", "memory": "1Gi"}))
            )]))),
            expect: Expect::Denied("maximum cpu usage per Container is 1, but limit is 2"),
        },
        Case {
            name: "one LimitRange with Container and Pod items reports both",
            limit_ranges: vec![limit_range(
                "mixed",
                json!([{"type": "Container", "max": {"cpu": "1"}}, {"type": "Pod", "max": {"cpu": "1500m"}}]),
            )],
            request: pod_create(pod(json!([
                container("a", res(json!({"cpu": "1"}), json!({"cpu": "1"}))),
                container("b", res(json!({"cpu": "2"}), json!({"cpu": "1"}))),
            ]))),
            expect: Expect::Denied("[maximum cpu usage per Container is 1, but limit is 2, maximum cpu usage per Pod is 1500m, but limit is 3]"),
        },
        // --- which requests ---
        Case {
            name: "pod updates are not checked (containers cannot change)",
            limit_ranges: vec![container_max(json!({"cpu": "1"}))],
            request: review(
                "Pod",
                "UPDATE",
                pod(json!([container("app", res(json!({"cpu": "2"}), json!({"cpu": "2"})))])),
                pod(json!([container("app", res(json!({"cpu": "2"}), json!({"cpu": "2"})))])),
            ),
            expect: Expect::Unchanged,
        },
        Case {
            name: "subresources are not checked",
            limit_ranges: vec![container_max(json!({"cpu": "1"}))],
            request: with(
                &pod_create(pod(json!([container("app", res(json!({"cpu": "2"}), json!({"cpu": "2"})))]))),
                |r| r["subResource"] = json!("status"),
            ),
            expect: Expect::Unchanged,
        },
        Case {
            name: "another namespace's LimitRanges do not apply",
            limit_ranges: vec![container_max(json!({"cpu": "1"}))],
            request: pod_create(with(
                &pod(json!([container("app", res(json!({"cpu": "2"}), json!({"cpu": "2"})))])),
                |p| p["metadata"]["namespace"] = json!("other"),
            )),
            expect: Expect::Unchanged,
        },
        // --- PersistentVolumeClaims ---
        Case {
            name: "PVC above max",
            limit_ranges: vec![claim_lr.clone()],
            request: review("PersistentVolumeClaim", "CREATE", claim(Some("20Gi")), Value::Null),
            expect: Expect::Denied("maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"),
        },
        Case {
            name: "PVC below min",
            limit_ranges: vec![claim_lr.clone()],
            request: review("PersistentVolumeClaim", "CREATE", claim(Some("500Mi")), Value::Null),
            expect: Expect::Denied("minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"),
        },
        Case {
            name: "PVC within range, and never defaulted",
            limit_ranges: vec![claim_lr.clone()],
            request: review("PersistentVolumeClaim", "CREATE", claim(Some("5Gi")), Value::Null),
            expect: Expect::Unchanged,
        },
        Case {
            name: "PVC without a request fails min and max",
            limit_ranges: vec![claim_lr.clone()],
            request: review("PersistentVolumeClaim", "CREATE", claim(None), Value::Null),
            expect: Expect::Denied("[minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified, maximum storage usage per PersistentVolumeClaim is 10Gi.  No request is specified]"),
        },
        Case {
            name: "PVC updates are checked (a resize above max)",
            limit_ranges: vec![claim_lr.clone()],
            request: review("PersistentVolumeClaim", "UPDATE", claim(Some("11Gi")), claim(Some("5Gi"))),
            expect: Expect::Denied("maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 11Gi"),
        },
        Case {
            name: "PVC being deleted is not checked",
            limit_ranges: vec![claim_lr.clone()],
            request: review(
                "PersistentVolumeClaim",
                "UPDATE",
                claim(Some("11Gi")),
                with(&claim(Some("11Gi")), |c| {
                    c["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z")
                }),
            ),
            expect: Expect::Unchanged,
        },
        Case {
            name: "Container items do not apply to PVCs",
            limit_ranges: vec![container_max(json!({"storage": "1Gi"}))],
            request: review("PersistentVolumeClaim", "CREATE", claim(Some("5Gi")), Value::Null),
            expect: Expect::Unchanged,
        },
    ]
}

#[test]
fn limit_range_applies_upstreams_defaults_and_limits() {
    let objects = Arc::new(FakeObjects::default());
    let plugin = load_limit_range(objects.clone());
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        objects.set("default", case.limit_ranges.clone());
        let response = plugin
            .review(&case.request.to_string())
            .unwrap_or_else(|e| panic!("{}: review failed: {e}", case.name));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check(case.name, &response, &case.request, &case.expect)
        }));
        if let Err(e) = outcome {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(msg);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn limit_range_lists_limitranges_of_the_request_namespace_only_when_needed() {
    let objects = Arc::new(FakeObjects::default());
    let plugin = load_limit_range(objects.clone());
    let bare = pod(json!([container("app", Value::Null)]));
    plugin
        .review(&pod_create(bare.clone()).to_string())
        .unwrap();
    // A pod update, a Service and a delete are let through without a read.
    plugin
        .review(&review("Pod", "UPDATE", bare.clone(), bare.clone()).to_string())
        .unwrap();
    let mut svc = pod_create(json!({"metadata": {"name": "s", "namespace": "default"}}));
    svc["kind"]["kind"] = json!("Service");
    plugin.review(&svc.to_string()).unwrap();
    plugin
        .review(&review("Pod", "DELETE", Value::Null, bare).to_string())
        .unwrap();
    assert_eq!(
        *objects.lists.lock().unwrap(),
        vec![(
            "/v1/LimitRange".to_string(),
            "default".to_string(),
            String::new()
        )]
    );
}

#[test]
fn limit_range_needs_its_read_grant_and_reports_read_failures() {
    let err = AdmissionPlugin::load(
        &engine(),
        &read_plugin("limit-range"),
        PluginSpec::new("LimitRanger"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoadError::NotGranted { import, .. } if import == "trellis:plugin/objects-read@0.4.0"),
        "{err:?}"
    );

    let objects = Arc::new(FakeObjects::default());
    *objects.fail.lock().unwrap() = Some(ObjectError::Unavailable("store is down".into()));
    let plugin = load_limit_range(objects);
    let bare = pod(json!([container("app", Value::Null)]));
    match plugin.review(&pod_create(bare).to_string()) {
        Err(CallError::Plugin(f)) => {
            assert_eq!(f.kind, FaultKind::Internal);
            assert!(f.message.contains("store is down"), "{}", f.message);
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }

    let err = AdmissionPlugin::load(
        &engine(),
        &read_plugin("limit-range"),
        PluginSpec::new("LimitRanger")
            .config(r#"{"max": 1}"#)
            .grants(Grants::none().read("", "LimitRange")),
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoadError::Call(CallError::Plugin(f)) if f.kind == FaultKind::InvalidConfig),
        "{err:?}"
    );
}

// --- team-label -----------------------------------------------------------

fn load_team_label(config: &str) -> Result<AdmissionPlugin, LoadError> {
    AdmissionPlugin::load(
        &engine(),
        &read_plugin("team-label"),
        PluginSpec::new("team-label").config(config),
    )
}

fn deployment(labels: Value, annotations: Value) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    });
    if !labels.is_null() {
        d["metadata"]["labels"] = labels;
    }
    if !annotations.is_null() {
        d["metadata"]["annotations"] = annotations;
    }
    d
}

fn deployment_review(operation: &str, object: Value, old: Value) -> Value {
    json!({
        "uid": "0c1f2e3d-0000-4000-8000-000000000002",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "subResource": "",
        "name": "web",
        "namespace": "default",
        "operation": operation,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": object,
        "oldObject": old,
        "dryRun": false,
        "options": {},
    })
}

#[test]
fn team_label_requires_the_label_and_adds_the_owner() {
    let plugin = load_team_label("{}").unwrap();
    let labelled = json!({"app": "web", "team": "payments"});
    let cases = vec![
        (
            "no labels at all: denied",
            deployment_review("CREATE", deployment(Value::Null, Value::Null), Value::Null),
            Expect::Denied(r#"Deployment "web" needs a "team" label: add metadata.labels.team"#),
        ),
        (
            "other labels only: denied",
            deployment_review(
                "CREATE",
                deployment(json!({"app": "web"}), Value::Null),
                Value::Null,
            ),
            Expect::Denied(r#"Deployment "web" needs a "team" label: add metadata.labels.team"#),
        ),
        (
            "an update that drops the label: denied",
            deployment_review(
                "UPDATE",
                deployment(json!({"app": "web"}), json!({"owner": "alice"})),
                deployment(labelled.clone(), json!({"owner": "alice"})),
            ),
            Expect::Denied(r#"Deployment "web" needs a "team" label: add metadata.labels.team"#),
        ),
        (
            "no annotations: the owner annotation is added",
            deployment_review(
                "CREATE",
                deployment(labelled.clone(), Value::Null),
                Value::Null,
            ),
            Expect::Becomes(deployment(labelled.clone(), json!({"owner": "alice"}))),
        ),
        (
            "other annotations: the owner joins them",
            deployment_review(
                "CREATE",
                deployment(labelled.clone(), json!({"note": "x"})),
                Value::Null,
            ),
            Expect::Becomes(deployment(
                labelled.clone(),
                json!({"note": "x", "owner": "alice"}),
            )),
        ),
        (
            "an owner already set is left alone",
            deployment_review(
                "CREATE",
                deployment(labelled.clone(), json!({"owner": "bob"})),
                Value::Null,
            ),
            Expect::Unchanged,
        ),
        (
            "an update that drops the owner gets the old owner back",
            deployment_review(
                "UPDATE",
                deployment(labelled.clone(), Value::Null),
                deployment(labelled.clone(), json!({"owner": "bob"})),
            ),
            Expect::Becomes(deployment(labelled.clone(), json!({"owner": "bob"}))),
        ),
        (
            "a delete is untouched",
            deployment_review("DELETE", Value::Null, deployment(Value::Null, Value::Null)),
            Expect::Unchanged,
        ),
        (
            "the scale subresource is untouched",
            with(
                &deployment_review(
                    "UPDATE",
                    json!({"kind": "Scale", "metadata": {"name": "web"}}),
                    Value::Null,
                ),
                |r| r["subResource"] = json!("scale"),
            ),
            Expect::Unchanged,
        ),
    ];
    for (name, request, expect) in &cases {
        let response = plugin.review(&request.to_string()).unwrap();
        check(name, &response, request, expect);
    }

    // Other kinds are none of its business, labelled or not.
    for (group, kind) in [("", "Pod"), ("apps", "StatefulSet"), ("", "ConfigMap")] {
        let mut r = deployment_review("CREATE", deployment(Value::Null, Value::Null), Value::Null);
        r["kind"] = json!({"group": group, "version": "v1", "kind": kind});
        let response = plugin.review(&r.to_string()).unwrap();
        check(kind, &response, &r, &Expect::Unchanged);
    }
}

#[test]
fn team_label_configuration_renames_the_label_and_annotation() {
    let plugin =
        load_team_label(r#"{"label": "squad", "annotation": "example.com/owner"}"#).unwrap();
    let r = deployment_review(
        "CREATE",
        deployment(json!({"team": "payments"}), Value::Null),
        Value::Null,
    );
    check(
        "renamed label",
        &plugin.review(&r.to_string()).unwrap(),
        &r,
        &Expect::Denied(r#"Deployment "web" needs a "squad" label: add metadata.labels.squad"#),
    );
    let r = deployment_review(
        "CREATE",
        deployment(json!({"squad": "a"}), json!({})),
        Value::Null,
    );
    let response = plugin.review(&r.to_string()).unwrap();
    assert_eq!(
        response.patch,
        r#"[{"op":"add","path":"/metadata/annotations/example.com~1owner","value":"alice"}]"#
    );
    check(
        "renamed annotation",
        &response,
        &r,
        &Expect::Becomes(deployment(
            json!({"squad": "a"}),
            json!({"example.com/owner": "alice"}),
        )),
    );

    for bad in [r#"{"lable": "team"}"#, r#"{"label": ""}"#, "[]"] {
        let err = load_team_label(bad).unwrap_err();
        assert!(
            matches!(&err, LoadError::Call(CallError::Plugin(f)) if f.kind == FaultKind::InvalidConfig),
            "{bad}: {err:?}"
        );
    }
}
