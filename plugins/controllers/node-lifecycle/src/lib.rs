//! Upstream's node lifecycle controller (`pkg/controller/nodelifecycle`) with
//! its taint eviction controller (`pkg/controller/tainteviction`):
//!
//! - A node whose last heartbeat — the newer of its Lease's `renewTime` in
//!   `kube-node-lease` and its Ready condition's `lastHeartbeatTime` (its
//!   creation when it never posted Ready, with `nodeStartupGracePeriod`) — is
//!   older than `nodeMonitorGracePeriod` gets every condition (Ready,
//!   MemoryPressure, DiskPressure, PIDPressure) set to `Unknown` with reason
//!   `NodeStatusUnknown` (missing ones added with `NodeStatusNeverUpdated`),
//!   a `NodeNotReady` event when Ready was True, and its pods' Ready
//!   condition set to False (upstream's `MarkPodsNotReady`).
//! - Taints follow the conditions as upstream's two tainting passes do:
//!   `NoSchedule` taints for Ready False/Unknown (`not-ready`/`unreachable`),
//!   memory, disk and PID pressure, network unavailable and
//!   `spec.unschedulable`; a `NoExecute` `not-ready` or `unreachable` taint
//!   (with `timeAdded`) while Ready is False or Unknown, removed when it is
//!   True again. As upstream, when no node in the cluster is Ready ("master
//!   disruption": it is more likely the control plane that lost the nodes),
//!   `NoExecute` taints are removed and none are added.
//! - Pods on a node with `NoExecute` taints are evicted as the taint
//!   eviction controller does; see [`eviction`].
//!
//! Keys: the primary kind is `v1 Node` (cluster-scoped: `("", node)`); Leases
//! are watched with `Object` mapping (`("kube-node-lease", node)`: the node of
//! that name) and so are Pods (`(ns, pod)` in any other namespace: that pod
//! alone is checked against its node's `NoExecute` taints). A node that is not
//! Ready is looked at again every `nodeMonitorPeriod`, a Ready one when its
//! grace period would run out, and any node at its pods' next eviction time.
//!
//! Cost: the pods of a node are found by listing the pods of all namespaces
//! from the cache and filtering on `spec.nodeName` (the cache has no field
//! index), only while the node is silent or has `NoExecute` taints; the
//! master-disruption check lists the Nodes, only while this node is not Ready.
//!
//! Not done as upstream: no eviction rate limits per zone
//! (`--node-eviction-rate`, `--unhealthy-zone-threshold`); heartbeat ages
//! come from the timestamps the agent wrote, not from when this controller
//! saw them change, so the agents' clocks must be roughly right.

pub mod config;
pub mod eviction;

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::{lease, node, pod};
use trellis_sdk::controller::*;
use trellis_sdk::objects;

pub use config::Config;

/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `v1.TaintNodeNotReady`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// `v1.TaintNodeUnreachable`.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The component named in node events (upstream's).
pub const NODE_COMPONENT: &str = "node-controller";

/// The conditions upstream sets to Unknown (not NetworkUnavailable: that one
/// is the network plugin's).
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// Upstream's `nodeConditionToTaintKeyStatusMap`.
const CONDITION_TAINTS: [(&str, &str, &str); 6] = [
    ("Ready", "False", TAINT_NOT_READY),
    ("Ready", "Unknown", TAINT_UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];
/// `v1.TaintNodeUnschedulable`.
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The controller.
#[derive(Default)]
pub struct NodeLifecycle {
    config: Config,
}

pub(crate) fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

fn not_found_is_none(r: Result<Value, ObjectError>) -> Result<Option<Value>, PluginError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ObjectError::NotFound) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

fn condition<'a>(node: &'a Value, ty: &str) -> Option<&'a Value> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn time_of(v: &Value) -> Option<i64> {
    v.as_str().and_then(objects::parse_rfc3339)
}

/// When the node was last heard of (Unix s) and the grace period that applies.
fn last_heartbeat(node: &Value, lease_obj: Option<&Value>, config: &Config) -> (i64, i64) {
    let renew = lease_obj.and_then(|l| time_of(&l["spec"]["renewTime"]));
    let created = time_of(&node["metadata"]["creationTimestamp"]).unwrap_or(0);
    match condition(node, "Ready") {
        None => (
            renew.unwrap_or(0).max(created),
            config.node_startup_grace_period_ms,
        ),
        Some(c) => {
            let hb = time_of(&c["lastHeartbeatTime"])
                .into_iter()
                .chain(renew)
                .max();
            (hb.unwrap_or(created), config.node_monitor_grace_period_ms)
        }
    }
}

/// The node's Ready status as this controller sees it: "Unknown" when the
/// node has been silent past its grace period.
fn effective_ready(
    node: &Value,
    lease_obj: Option<&Value>,
    config: &Config,
    now_ms: i64,
) -> String {
    let (hb, grace) = last_heartbeat(node, lease_obj, config);
    if now_ms > hb * 1000 + grace {
        return "Unknown".into();
    }
    condition(node, "Ready")
        .and_then(|c| c["status"].as_str())
        .unwrap_or("Unknown")
        .to_string()
}

/// Upstream's `tryUpdateNodeHealth` for a silent node: every condition
/// Unknown. `None` when nothing changes.
fn unknown_conditions(node: &Value, now: i64) -> Option<Vec<Value>> {
    let mut conds: Vec<Value> = node["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut changed = false;
    for ty in CONDITIONS {
        match conds.iter_mut().find(|c| c["type"] == ty) {
            None => {
                conds.push(json!({
                    "type": ty, "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": node["metadata"]["creationTimestamp"],
                    "lastTransitionTime": objects::rfc3339(now),
                }));
                changed = true;
            }
            Some(c) if c["status"] != "Unknown" => {
                c["status"] = json!("Unknown");
                c["reason"] = json!("NodeStatusUnknown");
                c["message"] = json!("Kubelet stopped posting node status.");
                c["lastTransitionTime"] = json!(objects::rfc3339(now));
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed.then_some(conds)
}

/// Whether any node other than `except` is Ready (upstream's zone states:
/// all zones in full disruption means no Ready node at all).
fn another_node_ready(
    api: &impl Api,
    except: &str,
    config: &Config,
    now_ms: i64,
) -> Result<bool, PluginError> {
    for n in api.list(&node(), "", "").map_err(internal)? {
        if objects::name(&n) == except {
            continue;
        }
        if condition(&n, "Ready").is_none_or(|c| c["status"] != "True") {
            continue;
        }
        // Ready as posted; still heard of? (the Lease only when the condition says no)
        if effective_ready(&n, None, config, now_ms) == "True" {
            return Ok(true);
        }
        let l = not_found_is_none(api.get(&lease(), LEASE_NAMESPACE, objects::name(&n)))?;
        if effective_ready(&n, l.as_ref(), config, now_ms) == "True" {
            return Ok(true);
        }
    }
    Ok(false)
}

fn taint_is(t: &Value, key: &str, effect: &str) -> bool {
    t["key"] == key && t["effect"] == effect
}

/// The node's taints after upstream's `doNoScheduleTaintingPass` and
/// `processTaintBaseEviction`; `ready` is the (effective) Ready status, or
/// `None` when the node never posted one (NoExecute taints then stay as
/// they are). Existing taints keep their `timeAdded`.
fn desired_taints(
    node: &Value,
    ready: Option<&str>,
    no_execute_allowed: bool,
    now: i64,
) -> Vec<Value> {
    let mut taints: Vec<Value> = node["spec"]["taints"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // NoSchedule by condition
    let mut want: Vec<&str> = CONDITION_TAINTS
        .iter()
        .filter(|(ty, status, _)| {
            let s = if *ty == "Ready" {
                ready.map(str::to_string)
            } else {
                condition(node, ty)
                    .and_then(|c| c["status"].as_str())
                    .map(str::to_string)
            };
            s.as_deref() == Some(*status)
        })
        .map(|(_, _, key)| *key)
        .collect();
    if node["spec"]["unschedulable"] == true {
        want.push(TAINT_UNSCHEDULABLE);
    }
    let managed =
        |k: &str| k == TAINT_UNSCHEDULABLE || CONDITION_TAINTS.iter().any(|(_, _, key)| *key == k);
    taints.retain(|t| {
        t["effect"] != "NoSchedule"
            || !managed(t["key"].as_str().unwrap_or(""))
            || want.contains(&t["key"].as_str().unwrap_or(""))
    });
    for key in want {
        if !taints.iter().any(|t| taint_is(t, key, "NoSchedule")) {
            taints.push(json!({"key": key, "effect": "NoSchedule"}));
        }
    }
    // NoExecute by Ready
    let Some(ready) = ready else {
        return taints;
    };
    let want_ne = match ready {
        "False" if no_execute_allowed => Some(TAINT_NOT_READY),
        "Unknown" if no_execute_allowed => Some(TAINT_UNREACHABLE),
        _ => None,
    };
    taints.retain(|t| {
        !(t["effect"] == "NoExecute"
            && (t["key"] == TAINT_NOT_READY || t["key"] == TAINT_UNREACHABLE)
            && want_ne.is_none_or(|k| t["key"] != k))
    });
    if let Some(k) = want_ne {
        if !taints.iter().any(|t| taint_is(t, k, "NoExecute")) {
            taints
                .push(json!({"key": k, "effect": "NoExecute", "timeAdded": objects::rfc3339(now)}));
        }
    }
    taints
}

fn pods_on(api: &impl Api, node_name: &str) -> Result<Vec<Value>, PluginError> {
    Ok(api
        .list(&pod(), "", "")
        .map_err(internal)?
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == node_name)
        .collect())
}

/// Upstream's `MarkPodsNotReady` for one pod: its Ready condition False.
/// Returns the pod as it is now (`None` when it is gone).
fn mark_pod_not_ready(api: &impl Api, p: Value, now: i64) -> Result<Option<Value>, PluginError> {
    let conds = p["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !conds
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] != "False")
    {
        return Ok(Some(p));
    }
    let conds: Vec<Value> = conds
        .into_iter()
        .map(|mut c| {
            if c["type"] == "Ready" && c["status"] != "False" {
                c["status"] = json!("False");
                c["lastTransitionTime"] = json!(objects::rfc3339(now));
            }
            c
        })
        .collect();
    let mut p = p;
    p["status"]["conditions"] = json!(conds);
    match api.update_status(&pod(), objects::namespace(&p), &p) {
        Ok(p) => Ok(Some(p)),
        Err(ObjectError::NotFound) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

fn min_requeue(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Reconcile one node.
pub fn reconcile_node(api: &impl Api, config: &Config, name: &str) -> Result<Action, PluginError> {
    let Some(mut n) = not_found_is_none(api.get(&node(), "", name))? else {
        return Ok(Action::AwaitChange);
    };
    let now_ms = api.now_millis();
    let now = now_ms.div_euclid(1000);
    let lease_obj = not_found_is_none(api.get(&lease(), LEASE_NAMESPACE, name))?;
    let (hb, grace) = last_heartbeat(&n, lease_obj.as_ref(), config);
    let deadline_ms = hb * 1000 + grace;
    let silent = now_ms > deadline_ms;
    let mut requeue = None;
    let mut first_err: Option<PluginError> = None;

    if silent {
        let was_ready = condition(&n, "Ready").is_some_and(|c| c["status"] == "True");
        if let Some(conds) = unknown_conditions(&n, now) {
            let mut updated = n.clone();
            updated["status"]["conditions"] = json!(conds);
            n = api.update_status(&node(), "", &updated).map_err(internal)?;
            if was_ready {
                record_event(
                    api,
                    &n,
                    &node(),
                    "Normal",
                    "NodeNotReady",
                    &format!("Node {name} status is now: NodeNotReady"),
                    NODE_COMPONENT,
                );
            }
        }
    } else {
        // looked at again when the grace period would run out
        requeue = Some(deadline_ms - now_ms + 1);
    }

    let ready = condition(&n, "Ready")
        .and_then(|c| c["status"].as_str())
        .map(str::to_string);
    let not_ready = ready.as_deref() != Some("True");
    if not_ready {
        requeue = min_requeue(requeue, Some(config.node_monitor_period_ms));
    }
    let no_execute_allowed = !not_ready || another_node_ready(api, name, config, now_ms)?;
    let taints = desired_taints(&n, ready.as_deref(), no_execute_allowed, now);
    let current: Vec<Value> = n["spec"]["taints"].as_array().cloned().unwrap_or_default();
    if taints != current {
        let mut updated = n.clone();
        if taints.is_empty() {
            if let Some(spec) = updated["spec"].as_object_mut() {
                spec.remove("taints");
            }
        } else {
            updated["spec"]["taints"] = json!(taints);
        }
        api.update(&node(), "", &updated).map_err(internal)?;
    }

    let no_execute: Vec<Value> = taints
        .into_iter()
        .filter(|t| t["effect"] == "NoExecute")
        .collect();
    if silent || !no_execute.is_empty() {
        for p in pods_on(api, name)? {
            let r = (|| {
                let p = if silent {
                    mark_pod_not_ready(api, p, now)?
                } else {
                    Some(p)
                };
                match p {
                    Some(p) if !no_execute.is_empty() => eviction::evict_if_due(
                        api,
                        &p,
                        &no_execute,
                        config.default_toleration_seconds,
                    ),
                    _ => Ok(None),
                }
            })();
            match r {
                Ok(wait) => requeue = min_requeue(requeue, wait),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(match requeue {
        Some(ms) => Action::RequeueAfter(ms.max(1) as u64),
        None => Action::AwaitChange,
    })
}

/// Reconcile one pod: evict it if its node's `NoExecute` taints say so.
pub fn reconcile_pod(
    api: &impl Api,
    config: &Config,
    ns: &str,
    name: &str,
) -> Result<Action, PluginError> {
    let Some(p) = not_found_is_none(api.get(&pod(), ns, name))? else {
        return Ok(Action::AwaitChange);
    };
    let node_name = p["spec"]["nodeName"].as_str().unwrap_or("");
    if node_name.is_empty() {
        return Ok(Action::AwaitChange);
    }
    let Some(n) = not_found_is_none(api.get(&node(), "", node_name))? else {
        return Ok(Action::AwaitChange);
    };
    let no_execute: Vec<Value> = n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoExecute")
        .cloned()
        .collect();
    if no_execute.is_empty() {
        return Ok(Action::AwaitChange);
    }
    Ok(
        match eviction::evict_if_due(api, &p, &no_execute, config.default_toleration_seconds)? {
            Some(ms) => Action::RequeueAfter(ms.max(1) as u64),
            None => Action::AwaitChange,
        },
    )
}

/// Reconcile one key; see the module documentation.
pub fn reconcile(api: &impl Api, config: &Config, key: &ObjectKey) -> Result<Action, PluginError> {
    match key.namespace.as_str() {
        "" | LEASE_NAMESPACE => reconcile_node(api, config, &key.name),
        ns => reconcile_pod(api, config, ns, &key.name),
    }
}

impl Controller for NodeLifecycle {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "nodelifecycle".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: node(),
            watches: vec![
                Watch {
                    kind: lease(),
                    mapping: WatchMapping::Object,
                },
                Watch {
                    kind: pod(),
                    mapping: WatchMapping::Object,
                },
            ],
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

trellis_sdk::export_controller!(NodeLifecycle);

#[cfg(test)]
mod tests;
