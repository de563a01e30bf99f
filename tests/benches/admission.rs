//! Admission review benchmark: the cost of one review through the plugin host,
//! per plugin, with the objects a review reads served from memory (no API
//! server, no store). It shows what a review costs the API server apart
//! from storage and HTTP: `cargo bench -p trellis --bench admission` measures
//! the whole request.
//!
//! - `team-label`: a mutating plugin with almost no work (reads nothing), so
//!   its figure is the floor: a fresh instance, `configure`, one call.
//! - `limit-range`: lists the namespace's LimitRanges, defaults and checks a
//!   pod, answers a JSON patch.
//! - `resource-quota`: lists the namespace's quotas, charges a pod, stages
//!   the quota's new status.
//!
//! Each plugin is measured in two engines in one run, interleaved: instances
//! from the pool (the default) and instances mapped on demand (the baseline).
//!
//! Run: `cargo bench -p trellis-tests --bench admission` (after `cargo xtask plugins`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_plugin_host::admission::AdmissionPlugin;
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{
    EngineConfig, Grants, HostServices, Instances, ObjectSink, ObjectSource, PluginEngine,
    PluginSpec,
};

const ROUNDS: usize = 2_000;

/// Serves one LimitRange and one ResourceQuota in namespace `bench`; takes
/// any staged status.
struct Objects {
    limit_range: String,
    quota: String,
}

impl ObjectSource for Objects {
    fn get(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::NotFound)
    }
    fn list(&self, kind: &KindRef, _: &str, _: &str) -> Result<Vec<String>, ObjectError> {
        Ok(match kind.kind.as_str() {
            "LimitRange" => vec![self.limit_range.clone()],
            "ResourceQuota" => vec![self.quota.clone()],
            _ => vec![],
        })
    }
}

impl ObjectSink for Objects {
    fn create(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied("only status".into()))
    }
    fn update(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied("only status".into()))
    }
    fn update_status(&self, _: &KindRef, _: &str, object: &str) -> Result<String, ObjectError> {
        Ok(object.to_string())
    }
    fn merge_patch(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied("only status".into()))
    }
    fn delete(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<(), ObjectError> {
        Err(ObjectError::AccessDenied("only status".into()))
    }
}

fn objects() -> Arc<Objects> {
    let limit_range = json!({"apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "limits", "namespace": "bench", "resourceVersion": "5"},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m", "memory": "64Mi"},
                             "max": {"cpu": "2"}, "min": {"cpu": "10m"}}]}});
    let hard = json!({"pods": "100000", "requests.cpu": "100000", "limits.memory": "10000Gi",
                      "count/deployments.apps": "100000"});
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "quota", "namespace": "bench", "resourceVersion": "7"},
        "spec": {"hard": hard},
        "status": {"hard": hard, "used": {"pods": "10", "requests.cpu": "1", "limits.memory": "640Mi",
                                          "count/deployments.apps": "3"}}});
    Arc::new(Objects {
        limit_range: limit_range.to_string(),
        quota: quota.to_string(),
    })
}

/// An AdmissionRequest for a pod create as the API server builds it;
/// `resources` as the container's (after limit-range, for resource-quota).
fn pod_review(resources: Value) -> String {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p-1", "namespace": "bench", "labels": {"app": "bench"},
                     "uid": "5a1f8a53-0b6e-4a44-8d7c-2d3b1c9c8f10", "creationTimestamp": "2026-11-23T20:00:00Z"},
        "spec": {"schedulerName": "default-scheduler", "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "terminationGracePeriodSeconds": 30, "enableServiceLinks": true,
                 "containers": [{"name": "app", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent",
                                 "terminationMessagePath": "/dev/termination-log",
                                 "terminationMessagePolicy": "File", "resources": resources}]},
        "status": {"phase": "Pending"}});
    review("", "v1", "Pod", "pods", pod)
}

fn deployment_review() -> String {
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d-1", "namespace": "bench", "labels": {"team": "bench"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d-1"}},
                 "template": {"metadata": {"labels": {"app": "d-1"}},
                              "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}});
    review("apps", "v1", "Deployment", "deployments", d)
}

fn review(group: &str, version: &str, kind: &str, resource: &str, object: Value) -> String {
    json!({"uid": "0d7f8e0e-1e34-4b43-a0c7-0a3a39a3c4a2",
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "subResource": "", "name": object["metadata"]["name"], "namespace": "bench",
        "operation": "CREATE", "userInfo": {"username": "admin", "groups": ["system:masters"]},
        "object": object, "oldObject": null, "dryRun": false, "options": {}})
    .to_string()
}

fn load(engine: &PluginEngine, name: &str, grants: Grants) -> AdmissionPlugin {
    let o = objects();
    let spec = PluginSpec::new(name).grants(grants).services(HostServices {
        objects: Some(o.clone()),
        writer: Some(o),
        exec: None,
    });
    AdmissionPlugin::load(engine, &trellis_tests::read_plugin(name), spec)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

fn median_p99(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

/// The three plugins, each with the request it reviews.
fn plugins(engine: &PluginEngine) -> Vec<(&'static str, AdmissionPlugin, String)> {
    vec![
        (
            "team-label",
            load(engine, "team-label", Grants::none()),
            deployment_review(),
        ),
        (
            "limit-range",
            load(engine, "limit-range", Grants::none().read("", "LimitRange")),
            pod_review(json!({})),
        ),
        (
            "resource-quota",
            load(
                engine,
                "resource-quota",
                Grants::none()
                    .read("", "ResourceQuota")
                    .write("", "ResourceQuota"),
            ),
            pod_review(json!({"limits": {"cpu": "100m", "memory": "64Mi"},
                              "requests": {"cpu": "100m", "memory": "64Mi"}})),
        ),
    ]
}

fn main() {
    let engine = |instances| {
        PluginEngine::new(EngineConfig {
            cache_dir: Some(trellis_tests::cache_dir()),
            instances,
            ..EngineConfig::default()
        })
        .expect("engine")
    };
    let pooled = engine(Instances::default());
    let on_demand = engine(Instances::OnDemand);
    let mut all: Vec<_> = plugins(&pooled)
        .into_iter()
        .map(|(n, p, r)| (format!("{n}, pooled"), p, r))
        .collect();
    all.extend(
        plugins(&on_demand)
            .into_iter()
            .map(|(n, p, r)| (format!("{n}, on demand"), p, r)),
    );
    for (name, p, req) in &all {
        let r = p.review(req).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            r.allowed,
            "{name} denied the benchmark's request: {}",
            r.message
        );
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); all.len()];
    // Interleaved, so each plugin sees the same machine.
    for _ in 0..ROUNDS {
        for (i, (_, p, req)) in all.iter().enumerate() {
            let t = Instant::now();
            let r = p.review(req);
            times[i].push(t.elapsed());
            assert!(r.is_ok());
        }
    }
    println!("admission review through the plugin host, {ROUNDS} reviews each, interleaved\n");
    println!(
        "{:<28} {:>10} {:>10}",
        "plugin, instances", "p50 µs", "p99 µs"
    );
    for ((name, _, _), t) in all.iter().zip(times) {
        let (p50, p99) = median_p99(t);
        println!("{name:<28} {p50:>10.1} {p99:>10.1}");
    }
}
