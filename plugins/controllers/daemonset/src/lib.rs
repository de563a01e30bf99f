//! Upstream's DaemonSet controller (`pkg/controller/daemon`): one daemon pod on
//! every node a DaemonSet's template fits, placed by the default scheduler
//! through a `metadata.name In [node]` node affinity, replaced by rolling
//! update (`maxUnavailable`, `maxSurge`) or on delete, with the status
//! `kubectl rollout status ds/NAME` reads and the ControllerRevision history
//! `kubectl rollout history` and `kubectl rollout undo` use (see `history`).
//!
//! Keys: the primary is `apps/v1 DaemonSet`; Pods and ControllerRevisions are
//! watched with the `Owner` mapping and Nodes with the `Object` mapping. A key
//! with a namespace is a DaemonSet (its own change or one of its pods' or
//! revisions'); a key `("", node)` comes
//! from a Node and means "a node changed": every DaemonSet is reconciled.
//!
//! ```
//! use trellis_sdk::controller::{fake::FakeCluster, kinds, Controller};
//! use serde_json::json;
//! let c = FakeCluster::new();
//! c.put(&kinds::node(), json!({"metadata": {"name": "n1"}}));
//! c.put(&kinds::daemon_set(), json!({"metadata": {"name": "agent", "namespace": "kube-system"},
//!     "spec": {"selector": {"matchLabels": {"app": "agent"}},
//!              "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": []}}}}));
//! c.settle(&daemonset::DaemonSets::info(), |c, k| daemonset::reconcile(c, &k)).unwrap();
//! assert_eq!(c.all(&kinds::pod()).len(), 1);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::{controller_revision, daemon_set, node, pod};
use trellis_sdk::controller::*;
use trellis_sdk::{adoption, objects};

pub mod history;
pub mod predicates;
mod update;

use predicates::{node_should_run, target_node};

/// The events' source component, as upstream's.
const COMPONENT: &str = "daemonset-controller";
/// `apps.DefaultDaemonSetUniqueLabelKey`: the template hash on each pod.
pub const HASH_LABEL: &str = "controller-revision-hash";
/// `extensions.DaemonSetTemplateGenerationKey`.
pub const GENERATION_LABEL: &str = "pod-template-generation";
/// Where the API server keeps the template generation of apps/v1 DaemonSets.
const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The controller (no configuration).
#[derive(Default)]
pub struct DaemonSets;

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

/// The sooner of two actions.
fn sooner(a: Action, b: Action) -> Action {
    match (a, b) {
        (Action::RequeueAfter(x), Action::RequeueAfter(y)) => Action::RequeueAfter(x.min(y)),
        (Action::RequeueAfter(x), _) | (_, Action::RequeueAfter(x)) => Action::RequeueAfter(x),
        _ => Action::AwaitChange,
    }
}

/// Reconcile one key (see the crate documentation for what keys mean).
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    if key.namespace.is_empty() {
        let sets = api.list(&daemon_set(), "", "").map_err(internal)?;
        let mut action = Action::AwaitChange;
        let mut first_err = None;
        for ds in &sets {
            match sync(api, ds) {
                Ok(a) => action = sooner(action, a),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        return first_err.map_or(Ok(action), Err);
    }
    match api.get(&daemon_set(), &key.namespace, &key.name) {
        Ok(ds) => sync(api, &ds),
        Err(ObjectError::NotFound) => Ok(Action::AwaitChange),
        Err(e) => Err(internal(e)),
    }
}

fn event(api: &impl Api, ds: &Value, type_: &str, reason: &str, message: &str) {
    record_event(api, ds, &daemon_set(), type_, reason, message, COMPONENT);
}

/// The hash that names a new revision of the current template (upstream
/// hashes the template and the collision count into its ControllerRevision's
/// name); pods carry the hash label of the current revision (`history`).
pub fn template_hash(ds: &Value) -> String {
    match ds["status"]["collisionCount"].as_i64().unwrap_or(0) {
        0 => objects::hash_string(&ds["spec"]["template"]),
        n => objects::hash_string(&json!([ds["spec"]["template"], n])),
    }
}

/// The template generation the API server keeps in an annotation, if any.
fn template_generation(ds: &Value) -> Option<i64> {
    objects::annotation(ds, TEMPLATE_GENERATION_ANNOTATION)?
        .parse()
        .ok()
}

/// Upstream's `IsPodUpdated`: the pod carries the current hash or template generation.
pub(crate) fn is_pod_updated(pod: &Value, hash: &str, ds: &Value) -> bool {
    let labels = &pod["metadata"]["labels"];
    let hash_matches = !hash.is_empty() && labels[HASH_LABEL] == hash;
    let gen_matches =
        template_generation(ds).is_some_and(|g| labels[GENERATION_LABEL] == g.to_string().as_str());
    hash_matches || gen_matches
}

pub(crate) fn min_ready_seconds(ds: &Value) -> i64 {
    ds["spec"]["minReadySeconds"].as_i64().unwrap_or(0)
}

fn selector_is_empty(selector: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.is_empty())
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(|e| e.is_empty())
}

/// `podByCreationTimestampAndPhase`: scheduled pods first, then the oldest, then by name.
pub(crate) fn sort_pods(pods: &mut [Value]) {
    let key = |p: &Value| {
        (
            p["spec"]["nodeName"].as_str().is_none_or(str::is_empty),
            p["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(objects::parse_rfc3339)
                .unwrap_or(i64::MAX),
            objects::name(p).to_string(),
        )
    };
    pods.sort_by_key(key);
}

/// Upstream's `ClaimPods`: the DaemonSet's pods, adopting orphans its selector
/// matches and releasing owned pods it no longer matches.
fn claim_pods(api: &impl Api, ds: &Value) -> Result<Vec<Value>, PluginError> {
    adoption::claim_selected(api, &pod(), ds, &daemon_set(), |_| true).map_err(internal)
}

/// The DaemonSet's pods as the status sees them again after writes (no claims).
fn owned_pods(api: &impl Api, ds: &Value) -> Result<Vec<Value>, PluginError> {
    let uid = objects::uid(ds);
    Ok(api
        .list(&pod(), objects::namespace(ds), "")
        .map_err(internal)?
        .into_iter()
        .filter(|p| objects::is_controlled_by(p, uid))
        .filter(|p| objects::object_matches(&ds["spec"]["selector"], p).unwrap_or(false))
        .collect())
}

/// Upstream's `getNodesToDaemonPods`: pods by the node they are (or will be)
/// on, leaving out terminal pods already being deleted and pods with no node.
pub(crate) fn pods_by_node(pods: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in pods {
        if !objects::pod_is_active(p) && objects::is_deleting(p) {
            continue;
        }
        if let Some(n) = target_node(p) {
            out.entry(n).or_default().push(p.clone());
        }
    }
    out
}

fn sync(api: &impl Api, ds: &Value) -> Result<Action, PluginError> {
    if objects::is_deleting(ds) {
        return Ok(Action::AwaitChange);
    }
    let selector = &ds["spec"]["selector"];
    if selector_is_empty(selector) {
        event(
            api,
            ds,
            "Warning",
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.",
        );
        return Ok(Action::AwaitChange);
    }
    if let Err(e) = objects::selector_matches(selector, &Default::default()) {
        trellis_sdk::log::warn(&format!(
            "daemonset {}/{}: invalid selector: {e}",
            objects::namespace(ds),
            objects::name(ds)
        ));
        return Ok(Action::AwaitChange);
    }
    let (cur, old) = history::construct(api, ds)?;
    let hash = history::hash_of(&cur).to_string();
    let nodes = api.list(&node(), "", "").map_err(internal)?;
    let pods = claim_pods(api, ds)?;
    let by_node = pods_by_node(&pods);
    let mut writes = manage(api, ds, &nodes, &by_node, &hash)?;
    // As upstream waits for its expectations, roll only once the core loop
    // has nothing left to do: its writes bring this DaemonSet back.
    if writes == 0 && strategy_type(ds) == "RollingUpdate" {
        writes += update::rolling_update(api, ds, &nodes, by_node.clone(), &hash)?;
    }
    history::cleanup(api, ds, old, &pods)?;
    let by_node = if writes > 0 {
        pods_by_node(&owned_pods(api, ds)?)
    } else {
        by_node
    };
    update_status(api, ds, &nodes, &by_node, &hash)
}

pub(crate) fn strategy_type(ds: &Value) -> &str {
    ds["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
}

/// Upstream's `manage` (with `podsShouldBeOnNode`): create missing daemon
/// pods, delete failed, excess and misplaced ones. Returns the writes made.
fn manage(
    api: &impl Api,
    ds: &Value,
    nodes: &[Value],
    by_node: &BTreeMap<String, Vec<Value>>,
    hash: &str,
) -> Result<usize, PluginError> {
    let spec = &ds["spec"]["template"]["spec"];
    let surge = update::allows_surge(ds);
    let now = api.now();
    let mut create: Vec<String> = Vec::new();
    let mut delete: Vec<String> = Vec::new();
    for n in nodes {
        let name = objects::name(n);
        let (should_run, should_continue) = node_should_run(n, spec);
        let pods = by_node.get(name);
        match pods {
            None if should_run => create.push(name.to_string()),
            Some(pods) if should_continue => {
                let mut running = Vec::new();
                for p in pods.iter().filter(|p| !objects::is_deleting(p)) {
                    match objects::pod_phase(p) {
                        "Failed" => {
                            // Upstream backs off here with an in-memory
                            // per-node timer; a stateless plugin cannot.
                            event(
                                api,
                                ds,
                                "Warning",
                                "FailedDaemonPod",
                                &format!(
                                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                                    objects::namespace(p),
                                    objects::name(p)
                                ),
                            );
                            delete.push(objects::name(p).to_string());
                        }
                        "Succeeded" => delete.push(objects::name(p).to_string()),
                        _ => running.push(p.clone()),
                    }
                }
                sort_pods(&mut running);
                if !surge {
                    delete.extend(running.iter().skip(1).map(|p| objects::name(p).to_string()));
                    continue;
                }
                if running.len() <= 1 {
                    if running.is_empty() && should_run {
                        create.push(name.to_string());
                    }
                    continue;
                }
                // Surging: keep the oldest updated pod, and the oldest old one
                // only while it is ready and the new one is not yet available.
                let (mut oldest_new, mut oldest_old) = (None, None);
                for p in &running {
                    let slot = if is_pod_updated(p, hash, ds) {
                        &mut oldest_new
                    } else {
                        &mut oldest_old
                    };
                    if slot.is_none() {
                        *slot = Some(p);
                    } else {
                        delete.push(objects::name(p).to_string());
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                    if !objects::pod_is_ready(old)
                        || objects::pod_is_available(new, min_ready_seconds(ds), now)
                    {
                        delete.push(objects::name(old).to_string());
                    }
                }
            }
            Some(pods) if !should_continue => delete.extend(
                pods.iter()
                    .filter(|p| !objects::is_deleting(p))
                    .map(|p| objects::name(p).to_string()),
            ),
            _ => {}
        }
    }
    // Pods meant for nodes that are gone: never scheduled, nothing else removes them.
    let names: BTreeSet<&str> = nodes.iter().map(objects::name).collect();
    for (n, pods) in by_node {
        if !names.contains(n.as_str()) {
            delete.extend(
                pods.iter()
                    .filter(|p| !objects::is_deleting(p))
                    .map(|p| objects::name(p).to_string()),
            );
        }
    }
    sync_nodes(api, ds, &delete, &create, hash)
}

/// A new daemon pod for `node`: upstream's `CreatePodTemplate` plus the node affinity.
pub fn new_pod(ds: &Value, node_name: &str, hash: &str) -> Value {
    let ns = objects::namespace(ds);
    let mut p = objects::pod_from_template(
        &ds["spec"]["template"],
        ns,
        objects::controller_owner_ref(ds, &daemon_set()),
    );
    p["metadata"]["generateName"] = json!(format!("{}-", objects::name(ds)));
    let generation = template_generation(ds).unwrap_or_else(|| objects::generation(ds));
    p["metadata"]["labels"][HASH_LABEL] = json!(hash);
    p["metadata"]["labels"][GENERATION_LABEL] = json!(generation.to_string());
    predicates::add_daemon_tolerations(&mut p["spec"]);
    p["spec"]["affinity"] = predicates::pin_to_node(&p["spec"]["affinity"], node_name);
    p
}

/// Upstream's `syncNodes`: delete then create, with the pod control's events.
pub(crate) fn sync_nodes(
    api: &impl Api,
    ds: &Value,
    delete: &[String],
    create: &[String],
    hash: &str,
) -> Result<usize, PluginError> {
    let ns = objects::namespace(ds);
    let mut writes = 0;
    let mut seen = BTreeSet::new();
    for name in delete.iter().filter(|n| seen.insert(n.as_str())) {
        match api.delete(&pod(), ns, name, "") {
            Ok(()) => {
                writes += 1;
                event(
                    api,
                    ds,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                );
            }
            Err(ObjectError::NotFound) => {}
            Err(e) => {
                event(
                    api,
                    ds,
                    "Warning",
                    "FailedDelete",
                    &format!("Error deleting: {e:?}"),
                );
                return Err(internal(e));
            }
        }
    }
    for node_name in create {
        match api.create(&pod(), ns, &new_pod(ds, node_name, hash)) {
            Ok(created) => {
                writes += 1;
                event(
                    api,
                    ds,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", objects::name(&created)),
                );
            }
            Err(ObjectError::Conflict(_)) => {}
            Err(e) => {
                event(
                    api,
                    ds,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {e:?}"),
                );
                return Err(internal(e));
            }
        }
    }
    Ok(writes)
}

/// Upstream's `updateDaemonSetStatus`; requeues while ready pods wait out `minReadySeconds`.
fn update_status(
    api: &impl Api,
    ds: &Value,
    nodes: &[Value],
    by_node: &BTreeMap<String, Vec<Value>>,
    hash: &str,
) -> Result<Action, PluginError> {
    let spec = &ds["spec"]["template"]["spec"];
    let now_ms = api.now_millis();
    let now = now_ms.div_euclid(1000);
    let min_ready = min_ready_seconds(ds);
    let (mut desired, mut current, mut misscheduled, mut ready, mut available, mut updated) =
        (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    let mut wake: Option<i64> = None;
    for n in nodes {
        let (should_run, _) = node_should_run(n, spec);
        let pods = by_node.get(objects::name(n)).filter(|p| !p.is_empty());
        if !should_run {
            misscheduled += i64::from(pods.is_some());
            continue;
        }
        desired += 1;
        let Some(pods) = pods else { continue };
        current += 1;
        let mut pods = pods.clone();
        sort_pods(&mut pods);
        let p = &pods[0];
        if objects::pod_is_ready(p) {
            ready += 1;
            if objects::pod_is_available(p, min_ready, now) {
                available += 1;
            } else if let Some(since) = objects::pod_ready_since(p) {
                let at = (since + min_ready) * 1000;
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        updated += i64::from(is_pod_updated(p, hash, ds));
    }
    let mut status = ds["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    for (k, v) in [
        ("desiredNumberScheduled", desired),
        ("currentNumberScheduled", current),
        ("numberMisscheduled", misscheduled),
        ("numberReady", ready),
        ("numberAvailable", available),
        ("numberUnavailable", desired - available),
        ("updatedNumberScheduled", updated),
        ("observedGeneration", objects::generation(ds)),
    ] {
        status[k] = json!(v);
    }
    if status != ds["status"] {
        let mut next = ds.clone();
        next["status"] = status.clone();
        match api.update_status(&daemon_set(), objects::namespace(ds), &next) {
            Ok(_) => {}
            Err(ObjectError::Conflict(_)) => {
                // Upstream retries once on a fresh copy.
                let mut fresh = api
                    .get(&daemon_set(), objects::namespace(ds), objects::name(ds))
                    .map_err(internal)?;
                if objects::uid(&fresh) != objects::uid(ds) {
                    return Ok(Action::AwaitChange);
                }
                fresh["status"] = status;
                api.update_status(&daemon_set(), objects::namespace(ds), &fresh)
                    .map_err(internal)?;
            }
            Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(match wake {
        Some(at) => Action::RequeueAfter((at - now_ms).max(1) as u64),
        None => Action::AwaitChange,
    })
}

impl Controller for DaemonSets {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "daemonset".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: daemon_set(),
            watches: vec![
                Watch {
                    kind: pod(),
                    mapping: WatchMapping::Owner,
                },
                Watch {
                    kind: controller_revision(),
                    mapping: WatchMapping::Owner,
                },
                Watch {
                    kind: node(),
                    mapping: WatchMapping::Object,
                },
            ],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        trellis_sdk::config::none(config, "daemonset")
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(DaemonSets);

#[cfg(test)]
mod tests;
