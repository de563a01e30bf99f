//! Upstream's ReplicaSet controller (`pkg/controller/replicaset`): each
//! `apps/v1` ReplicaSet keeps `spec.replicas` (default 1) active pods made
//! from `spec.template`, adopts orphan pods its selector matches, releases the
//! pods it controls that no longer match, and reports `status` (`replicas`,
//! `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas`,
//! `observedGeneration`, the `ReplicaFailure` condition).
//!
//! Keys: every key is a ReplicaSet's `(namespace, name)`, either the
//! ReplicaSet's own change or a Pod's change mapped through its controlling
//! ownerReference (`WatchMapping::Owner`). An orphan pod's change queues
//! nothing (the runtime has no "every ReplicaSet selecting this pod" mapping);
//! orphans are adopted at the ReplicaSet's next reconcile.
//!
//! ```
//! use replicaset::{reconcile, Config};
//! use serde_json::json;
//! use trellis_sdk::controller::{fake::FakeCluster, kinds::{pod, replica_set}, Controller};
//! let c = FakeCluster::new();
//! c.put(&replica_set(), json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
//!     "replicas": 2, "selector": {"matchLabels": {"app": "web"}},
//!     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}));
//! let info = replicaset::ReplicaSets::info();
//! c.settle(&info, |c, k| reconcile(c, &Config::default(), &k)).unwrap();
//! assert_eq!(c.all(&pod()).len(), 2);
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{pod, replica_set};
use trellis_sdk::controller::*;
use trellis_sdk::{adoption, objects};

/// The `source.component` of the events this controller records.
pub const COMPONENT: &str = "replicaset-controller";
/// Pods with a lower cost are deleted first (upstream's PodDeletionCost).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Configuration (JSON keys in camelCase; unknown keys are rejected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `burstReplicas`: at most this many pods created or deleted per
    /// reconcile (upstream's `BurstReplicas`, default 500).
    pub burst_replicas: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            burst_replicas: 500,
        }
    }
}

impl Config {
    /// Parse the JSON given to `configure`.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let bad = |m: String| PluginError::InvalidConfig(m);
        let v: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?
        };
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the configuration must be a JSON object".into()))?;
        let mut cfg = Self::default();
        for (k, val) in obj {
            match k.as_str() {
                "burstReplicas" => {
                    cfg.burst_replicas = val
                        .as_u64()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("burstReplicas must be a positive integer".into()))?
                        as usize
                }
                other => return Err(bad(format!("unknown configuration key {other:?}"))),
            }
        }
        Ok(cfg)
    }
}

/// The controller.
#[derive(Default)]
pub struct ReplicaSets {
    config: Config,
}

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

/// The message of an API error, as upstream prints it in events and conditions.
pub fn error_text(e: &ObjectError) -> String {
    match e {
        ObjectError::NotFound => "not found".into(),
        ObjectError::AccessDenied(m)
        | ObjectError::Conflict(m)
        | ObjectError::Invalid(m)
        | ObjectError::Unavailable(m) => m.clone(),
    }
}

fn namespace_terminating(e: &ObjectError) -> bool {
    matches!(e, ObjectError::AccessDenied(m) | ObjectError::Invalid(m) | ObjectError::Unavailable(m)
        if m.contains("being terminated"))
}

fn event(api: &impl Api, rs: &Value, type_: &str, reason: &str, message: &str) {
    record_event(api, rs, &replica_set(), type_, reason, message, COMPONENT);
}

/// `spec.replicas` (the API's default, 1, when missing).
pub fn spec_replicas(rs: &Value) -> i64 {
    rs["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// Reconcile one ReplicaSet.
pub fn reconcile(api: &impl Api, cfg: &Config, key: &ObjectKey) -> Result<Action, PluginError> {
    let ns = key.namespace.as_str();
    let rs = match api.get(&replica_set(), ns, &key.name) {
        Ok(o) => o,
        Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
        Err(e) => return Err(internal(e)),
    };
    let selector = &rs["spec"]["selector"];
    if let Err(e) = objects::selector_matches(selector, &Map::new()) {
        // Upstream logs and drops the key: nothing changes until the spec does.
        trellis_sdk::log::warn(&format!(
            "replicaset {ns}/{}: invalid selector: {e}",
            key.name
        ));
        return Ok(Action::AwaitChange);
    }
    let deleting = objects::is_deleting(&rs);
    let all_pods = api.list(&pod(), ns, "").map_err(internal)?;
    let active: Vec<&Value> = all_pods
        .iter()
        .filter(|p| objects::pod_is_active(p))
        .collect();
    let pods = claim_pods(api, &rs, &active)?;

    let now_ms = api.now_millis();
    let diff = pods.len() as i64 - spec_replicas(&rs);
    let manage_err = if deleting {
        None
    } else {
        manage_replicas(api, cfg, &rs, &pods, &all_pods, now_ms)?
    };

    let status = calculate_status(&rs, &pods, manage_err.as_deref(), diff, api.now());
    if objects::omit_empty(&rs["status"]) != objects::omit_empty(&status) {
        let mut updated = rs.clone();
        updated["status"] = status;
        match api.update_status(&replica_set(), ns, &updated) {
            Ok(_) | Err(ObjectError::NotFound) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    if let Some(m) = manage_err {
        // Upstream returns the error: the key is retried with back-off.
        return Err(PluginError::Internal(m));
    }
    Ok(next_available(&rs, &pods, now_ms).map_or(Action::AwaitChange, Action::RequeueAfter))
}

/// Upstream's `ClaimPods`: the active pods this ReplicaSet controls and its
/// selector matches, after adopting matching orphans and releasing its pods
/// that no longer match (neither while the ReplicaSet is being deleted).
fn claim_pods(api: &impl Api, rs: &Value, active: &[&Value]) -> Result<Vec<Value>, PluginError> {
    let candidates = active.iter().map(|p| (*p).clone());
    adoption::claim(
        api,
        &pod(),
        rs,
        &replica_set(),
        candidates,
        adoption::selected_by(rs),
    )
    .map_err(internal)
}

/// A new pod from the ReplicaSet's template (upstream's `GetPodFromTemplate`).
pub fn pod_for(rs: &Value) -> Value {
    let mut p = objects::pod_from_template(
        &rs["spec"]["template"],
        objects::namespace(rs),
        objects::controller_owner_ref(rs, &replica_set()),
    );
    p["metadata"]["generateName"] = json!(format!("{}-", objects::name(rs)));
    p
}

/// Upstream's `manageReplicas`: create or delete pods to reach
/// `spec.replicas`. Returns the error that stopped it, for the
/// `ReplicaFailure` condition.
fn manage_replicas(
    api: &impl Api,
    cfg: &Config,
    rs: &Value,
    pods: &[Value],
    all_pods: &[Value],
    now_ms: i64,
) -> Result<Option<String>, PluginError> {
    let ns = objects::namespace(rs);
    let diff = pods.len() as i64 - spec_replicas(rs);
    if diff < 0 {
        let want = ((-diff) as usize).min(cfg.burst_replicas);
        let template = pod_for(rs);
        // slowStartBatch: batches of 1, 2, 4, ...; stop after a batch with a failure.
        let mut done = 0;
        let mut batch = 1;
        let mut first_err = None;
        while done < want {
            let size = batch.min(want - done);
            for _ in 0..size {
                match api.create(&pod(), ns, &template) {
                    Ok(created) => event(
                        api,
                        rs,
                        "Normal",
                        "SuccessfulCreate",
                        &format!("Created pod: {}", objects::name(&created)),
                    ),
                    // All later creates would fail too; upstream ignores it.
                    Err(e) if namespace_terminating(&e) => return Ok(None),
                    Err(e) => {
                        let m = error_text(&e);
                        event(
                            api,
                            rs,
                            "Warning",
                            "FailedCreate",
                            &format!("Error creating: {m}"),
                        );
                        first_err.get_or_insert(m);
                    }
                }
            }
            done += size;
            if first_err.is_some() {
                break;
            }
            batch *= 2;
        }
        return Ok(first_err);
    }
    if diff > 0 {
        let n = (diff as usize).min(cfg.burst_replicas);
        let related = related_pods(api, rs, pods, all_pods)?;
        let mut first_err = None;
        for p in pods_to_delete(pods, &related, n, now_ms) {
            match api.delete(&pod(), ns, objects::name(p), "") {
                Ok(()) => event(
                    api,
                    rs,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", objects::name(p)),
                ),
                Err(ObjectError::NotFound) => {}
                Err(e) => {
                    let m = error_text(&e);
                    event(
                        api,
                        rs,
                        "Warning",
                        "FailedDelete",
                        &format!("Error deleting: {m}"),
                    );
                    first_err.get_or_insert(m);
                }
            }
        }
        return Ok(first_err);
    }
    Ok(None)
}

/// Upstream's `getIndirectlyRelatedPods`: the pods of every ReplicaSet with the
/// same controller (a Deployment's ReplicaSets), used to rank co-located pods.
fn related_pods(
    api: &impl Api,
    rs: &Value,
    pods: &[Value],
    all_pods: &[Value],
) -> Result<Vec<Value>, PluginError> {
    let Some(owner) = objects::controller_ref(rs).and_then(|r| r["uid"].as_str()) else {
        return Ok(pods.to_vec());
    };
    let mut uids: BTreeSet<String> = api
        .list(&replica_set(), objects::namespace(rs), "")
        .map_err(internal)?
        .iter()
        .filter(|o| objects::is_controlled_by(o, owner))
        .map(|o| objects::uid(o).to_string())
        .collect();
    uids.insert(objects::uid(rs).to_string());
    Ok(all_pods
        .iter()
        .filter(|p| {
            objects::controller_ref(p)
                .and_then(|r| r["uid"].as_str())
                .is_some_and(|u| uids.contains(u))
        })
        .cloned()
        .collect())
}

fn phase_ordinal(p: &Value) -> i32 {
    match objects::pod_phase(p) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0, // Pending, and any other phase as Go's map miss
    }
}

/// `floor(log2(now - t))` in nanoseconds as upstream's `logarithmicRankDiff`
/// (-1 for no positive age); `None` for a missing time.
fn log_bucket(t: Option<i64>, now_ms: i64) -> Option<i64> {
    let t = t?;
    let d_ns = (now_ms - t * 1000) as f64 * 1e6;
    Some(if d_ns > 0.0 { d_ns.log2() as i64 } else { -1 })
}

fn max_restarts(p: &Value) -> (i64, i64) {
    let max = |key: &str, only: &dyn Fn(&Value) -> bool| {
        p["status"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| only(s))
            .filter_map(|s| s["restartCount"].as_i64())
            .max()
            .unwrap_or(0)
    };
    let sidecars: BTreeSet<&str> = p["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .filter_map(|c| c["name"].as_str())
        .collect();
    let regular = max("containerStatuses", &|_| true);
    let sidecar = max("initContainerStatuses", &|s| {
        s["name"].as_str().is_some_and(|n| sidecars.contains(n))
    });
    (regular, sidecar)
}

/// The sort key of upstream's `ActivePodsWithRanks` (with the default
/// `PodDeletionCost` and `LogarithmicScaleDown` gates), smallest deleted
/// first: unassigned < assigned, Pending < Unknown < Running, not ready <
/// ready, lower deletion cost, more co-located related pods, ready for less
/// time (log2 buckets), more restarts, newer (log2 buckets), then uid.
/// Written as a key so the order is total (upstream's `Less` is not quite).
#[allow(clippy::type_complexity)]
fn deletion_key(
    p: &Value,
    rank: i64,
    now_ms: i64,
) -> (
    bool,
    i32,
    bool,
    i64,
    Reverse<i64>,
    Option<i64>,
    Reverse<(i64, i64)>,
    Option<i64>,
    String,
) {
    let ready = objects::pod_is_ready(p);
    let cost = objects::annotation(p, POD_DELETION_COST)
        .and_then(|c| c.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let ready_bucket = if ready {
        log_bucket(objects::pod_ready_since(p), now_ms)
    } else {
        None
    };
    let created = p["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(objects::parse_rfc3339);
    (
        !p["spec"]["nodeName"].as_str().unwrap_or("").is_empty(),
        phase_ordinal(p),
        ready,
        i64::from(cost),
        Reverse(rank),
        ready_bucket,
        Reverse(max_restarts(p)),
        log_bucket(created, now_ms),
        objects::uid(p).to_string(),
    )
}

/// Upstream's `getPodsToDelete`: the first `n` pods in deletion order.
pub fn pods_to_delete<'a>(
    pods: &'a [Value],
    related: &[Value],
    n: usize,
    now_ms: i64,
) -> Vec<&'a Value> {
    let mut out: Vec<&Value> = pods.iter().collect();
    if n < pods.len() {
        let mut on_node: BTreeMap<&str, i64> = BTreeMap::new();
        for p in related.iter().filter(|p| objects::pod_is_active(p)) {
            *on_node
                .entry(p["spec"]["nodeName"].as_str().unwrap_or(""))
                .or_default() += 1;
        }
        out.sort_by_cached_key(|p| {
            let rank = on_node
                .get(p["spec"]["nodeName"].as_str().unwrap_or(""))
                .copied()
                .unwrap_or(0);
            deletion_key(p, rank, now_ms)
        });
    }
    out.truncate(n);
    out
}

/// Upstream's `calculateStatus` plus `observedGeneration`, serialized as Go
/// would (zero counts other than `replicas` omitted).
fn calculate_status(
    rs: &Value,
    pods: &[Value],
    manage_err: Option<&str>,
    diff: i64,
    now: i64,
) -> Value {
    let template_labels = rs["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    let (mut fully, mut ready, mut available) = (0, 0, 0);
    for p in pods {
        let labels = objects::labels(p);
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully += 1;
        }
        if objects::pod_is_ready(p) {
            ready += 1;
            if objects::pod_is_available(p, min_ready, now) {
                available += 1;
            }
        }
    }
    let mut status = rs["status"].as_object().cloned().unwrap_or_default();
    status.insert("replicas".into(), json!(pods.len()));
    for (k, v) in [
        ("fullyLabeledReplicas", fully),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("observedGeneration", objects::generation(rs)),
    ] {
        if v == 0 {
            status.remove(k);
        } else {
            status.insert(k.into(), json!(v));
        }
    }
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match manage_err {
        Some(m) if !has_failure => {
            let reason = if diff < 0 {
                "FailedCreate"
            } else if diff > 0 {
                "FailedDelete"
            } else {
                ""
            };
            conditions.push(json!({"type": "ReplicaFailure", "status": "True",
                "lastTransitionTime": objects::rfc3339(now), "reason": reason, "message": m}));
        }
        None if has_failure => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        _ => {}
    }
    if conditions.is_empty() {
        status.remove("conditions");
    } else {
        status.insert("conditions".into(), json!(conditions));
    }
    Value::Object(status)
}

/// Milliseconds until the next ready pod becomes available (minReadySeconds).
fn next_available(rs: &Value, pods: &[Value], now_ms: i64) -> Option<u64> {
    let min_ready = rs["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
    if min_ready <= 0 {
        return None;
    }
    pods.iter()
        .filter(|p| {
            objects::pod_is_ready(p)
                && !objects::pod_is_available(p, min_ready, now_ms.div_euclid(1000))
        })
        .filter_map(objects::pod_ready_since)
        .map(|t| ((t + min_ready) * 1000 - now_ms).max(1) as u64)
        .min()
}

impl Controller for ReplicaSets {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "replicaset".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: replica_set(),
            watches: vec![Watch {
                kind: pod(),
                mapping: WatchMapping::Owner,
            }],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Config::parse(config)?;
        Ok(())
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &self.config, &key)
    }
}

trellis_sdk::export_controller!(ReplicaSets);

#[cfg(test)]
mod tests;
