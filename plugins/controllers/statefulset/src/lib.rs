//! Upstream's StatefulSet controller (`pkg/controller/statefulset`): pods with
//! stable names `<set>-<ordinal>`, hostnames and claims, created in order
//! (each only once its predecessors are Running and Ready) and deleted in
//! reverse, or all at once with `podManagementPolicy: Parallel`; revisions
//! as ControllerRevisions; rolling updates from the highest ordinal down to
//! the partition, or on delete; and the status `kubectl rollout status` reads.
//!
//! Keys: the primary is `apps/v1 StatefulSet` and Pods are watched with the
//! `Owner` mapping, so every key `(namespace, name)` names a StatefulSet.
//!
//! ```
//! use trellis_sdk::controller::{fake::FakeCluster, kinds, Controller};
//! use serde_json::json;
//! let c = FakeCluster::new();
//! c.put(&kinds::stateful_set(), json!({"metadata": {"name": "web", "namespace": "default"},
//!     "spec": {"replicas": 2, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
//!              "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}));
//! c.settle(&statefulset::StatefulSets::info(), |c, k| statefulset::reconcile(c, &k)).unwrap();
//! // web-1 waits until web-0 is Running and Ready.
//! assert!(c.object(&kinds::pod(), "default", "web-0").is_some());
//! assert!(c.object(&kinds::pod(), "default", "web-1").is_none());
//! ```

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::{persistent_volume_claim, pod, stateful_set};
use trellis_sdk::controller::*;
use trellis_sdk::{adoption, objects};

pub mod identity;
pub mod revisions;

use identity::{ordinal, REVISION_LABEL};

/// The events' source component, as upstream's.
const COMPONENT: &str = "statefulset-controller";

/// The controller (no configuration).
#[derive(Default)]
pub struct StatefulSets;

pub(crate) fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

/// Reconcile the StatefulSet a key names.
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    match api.get(&stateful_set(), &key.namespace, &key.name) {
        Ok(set) => sync(api, &set),
        Err(ObjectError::NotFound) => Ok(Action::AwaitChange),
        Err(e) => Err(internal(e)),
    }
}

fn event(api: &impl Api, set: &Value, type_: &str, reason: &str, message: &str) {
    record_event(api, set, &stateful_set(), type_, reason, message, COMPONENT);
}

/// `recordPodEvent`.
fn pod_event(api: &impl Api, set: &Value, verb: &str, pod: &str, err: Option<&ObjectError>) {
    let title = format!("{}{}", verb[..1].to_uppercase(), &verb[1..]);
    let set_name = objects::name(set);
    match err {
        None => event(
            api,
            set,
            "Normal",
            &format!("Successful{title}"),
            &format!("{verb} Pod {pod} in StatefulSet {set_name} successful"),
        ),
        Some(e) => event(
            api,
            set,
            "Warning",
            &format!("Failed{title}"),
            &format!("{verb} Pod {pod} in StatefulSet {set_name} failed error: {e:?}"),
        ),
    }
}

fn phase(p: &Value) -> &str {
    objects::pod_phase(p)
}

fn running_and_ready(p: &Value) -> bool {
    phase(p) == "Running" && objects::pod_is_ready(p)
}

/// `isHealthy`.
fn healthy(p: &Value) -> bool {
    running_and_ready(p) && !objects::is_deleting(p)
}

fn revision_of(p: &Value) -> &str {
    p["metadata"]["labels"][REVISION_LABEL]
        .as_str()
        .unwrap_or("")
}

/// A replica slot: a pod from the API, or one still to be created.
struct Slot {
    pod: Value,
    exists: bool,
}

/// The counts upstream's `updateStatus` computes.
#[derive(Default, Debug, Clone, Copy)]
struct Counts {
    replicas: i64,
    ready: i64,
    available: i64,
    current: i64,
    updated: i64,
}

/// What one pass over the set decided, for the status and the requeue.
struct Pass<'a> {
    /// The API's clock (ms).
    clock: &'a dyn Fn() -> i64,
    set: &'a Value,
    current: Value,
    update: Value,
    min_ready: i64,
    /// When (ms) a ready pod becomes available.
    wake: Option<i64>,
}

impl Pass<'_> {
    fn now(&self) -> i64 {
        (self.clock)().div_euclid(1000)
    }

    fn available(&mut self, p: &Value) -> bool {
        if objects::pod_is_available(p, self.min_ready, self.now()) {
            return true;
        }
        if objects::pod_is_ready(p) {
            if let Some(since) = objects::pod_ready_since(p) {
                let at = (since + self.min_ready) * 1000;
                self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
            }
        }
        false
    }

    /// `newVersionedStatefulSetPod`: below the partition at the current
    /// revision, else at the update revision.
    fn new_pod(&self, ord: i64) -> Value {
        let set = self.set;
        let strategy = &set["spec"]["updateStrategy"];
        let rolling = strategy["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate";
        let partition = strategy["rollingUpdate"]["partition"].as_i64().unwrap_or(0);
        let rev = if rolling && ord < start_ordinal(set) + partition {
            &self.current
        } else {
            &self.update
        };
        identity::new_pod(set, &revisions::template(rev), ord, objects::name(rev))
    }

    fn counts(&mut self, slots: &[Slot], condemned: &[Value]) -> Counts {
        let mut c = Counts::default();
        let (cur, upd) = (
            objects::name(&self.current).to_string(),
            objects::name(&self.update).to_string(),
        );
        let pods = slots
            .iter()
            .filter(|s| s.exists)
            .map(|s| &s.pod)
            .chain(condemned.iter());
        for p in pods {
            c.replicas += 1;
            if running_and_ready(p) {
                c.ready += 1;
                if self.available(p) {
                    c.available += 1;
                }
            }
            if !objects::is_deleting(p) {
                c.current += i64::from(revision_of(p) == cur);
                c.updated += i64::from(revision_of(p) == upd);
            }
        }
        c
    }
}

fn start_ordinal(set: &Value) -> i64 {
    set["spec"]["ordinals"]["start"].as_i64().unwrap_or(0)
}

/// Upstream's `ClaimPods` with `isMemberOf`: adopt orphans, release strays.
fn claim_pods(api: &impl Api, set: &Value) -> Result<Vec<Value>, PluginError> {
    adoption::claim_selected(api, &pod(), set, &stateful_set(), |p| {
        identity::is_member_of(set, p)
    })
    .map_err(internal)
}

fn sync(api: &impl Api, set: &Value) -> Result<Action, PluginError> {
    if let Err(e) = objects::selector_matches(&set["spec"]["selector"], &Default::default()) {
        trellis_sdk::log::warn(&format!(
            "statefulset {}/{}: invalid selector: {e}",
            objects::namespace(set),
            objects::name(set)
        ));
        return Ok(Action::AwaitChange);
    }
    let history = revisions::list(api, set)?;
    let pods = claim_pods(api, set)?;
    let (current, update, collision_count) = revisions::current_and_update(api, set, &history)?;
    let now = || api.now_millis();
    let mut pass = Pass {
        clock: &now,
        set,
        current,
        update,
        min_ready: set["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
        wake: None,
    };
    let (mut counts, result) = update_stateful_set(api, &mut pass, pods.clone());
    // completeRollingUpdate
    let strategy = set["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate");
    let mut current_name = objects::name(&pass.current).to_string();
    let update_name = objects::name(&pass.update).to_string();
    if strategy == "RollingUpdate"
        && counts.updated == counts.replicas
        && counts.ready == counts.replicas
    {
        counts.current = counts.updated;
        current_name = update_name.clone();
    }
    write_status(
        api,
        set,
        &counts,
        &current_name,
        &update_name,
        collision_count,
    )?;
    let action = result?;
    let mut live: Vec<&str> = vec![current_name.as_str(), update_name.as_str()];
    live.extend(pods.iter().map(revision_of));
    revisions::truncate(api, set, &history, &live)?;
    Ok(match (action, pass.wake) {
        (Action::RequeueAfter(ms), _) => Action::RequeueAfter(ms),
        (_, Some(at)) => Action::RequeueAfter((at - api.now_millis()).max(1) as u64),
        (a, None) => a,
    })
}

fn write_status(
    api: &impl Api,
    set: &Value,
    c: &Counts,
    current: &str,
    update: &str,
    collision_count: i64,
) -> Result<(), PluginError> {
    let mut status = set["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = json!(objects::generation(set));
    status["replicas"] = json!(c.replicas);
    status["readyReplicas"] = json!(c.ready);
    status["currentReplicas"] = json!(c.current);
    status["updatedReplicas"] = json!(c.updated);
    status["availableReplicas"] = json!(c.available);
    status["currentRevision"] = json!(current);
    status["updateRevision"] = json!(update);
    status["collisionCount"] = json!(collision_count);
    if status == set["status"] {
        return Ok(());
    }
    let ns = objects::namespace(set);
    let mut next = set.clone();
    next["status"] = status.clone();
    match api.update_status(&stateful_set(), ns, &next) {
        Ok(_) | Err(ObjectError::NotFound) => Ok(()),
        Err(ObjectError::Conflict(_)) => {
            // Upstream retries on a fresh copy.
            let mut fresh = api
                .get(&stateful_set(), ns, objects::name(set))
                .map_err(internal)?;
            if objects::uid(&fresh) != objects::uid(set) {
                return Ok(());
            }
            fresh["status"] = status;
            api.update_status(&stateful_set(), ns, &fresh)
                .map(|_| ())
                .map_err(internal)
        }
        Err(e) => Err(internal(e)),
    }
}

/// `createPersistentVolumeClaims`: the pod's missing claims.
fn create_claims(api: &impl Api, set: &Value, pod_name: &str, ord: i64) -> Result<(), PluginError> {
    let ns = objects::namespace(set);
    for (_, claim) in identity::claims(set, ord) {
        let name = objects::name(&claim).to_string();
        match api.get(&persistent_volume_claim(), ns, &name) {
            Ok(existing) if objects::is_deleting(&existing) => {
                return Err(PluginError::Internal(format!(
                    "pvc {name} is being deleted"
                )));
            }
            Ok(_) => {}
            Err(ObjectError::NotFound) => {
                let msg = |r: &str| {
                    format!(
                        "create Claim {name} Pod {pod_name} in StatefulSet {} {r}",
                        objects::name(set)
                    )
                };
                match api.create(&persistent_volume_claim(), ns, &claim) {
                    Ok(_) => event(api, set, "Normal", "SuccessfulCreate", &msg("success")),
                    Err(ObjectError::Conflict(_)) => {}
                    Err(e) => {
                        event(
                            api,
                            set,
                            "Warning",
                            "FailedCreate",
                            &msg(&format!("failed error: {e:?}")),
                        );
                        return Err(internal(e));
                    }
                }
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(())
}

fn delete_pod(api: &impl Api, set: &Value, p: &Value) -> Result<(), PluginError> {
    let name = objects::name(p);
    match api.delete(&pod(), objects::namespace(set), name, "") {
        Ok(()) => {
            pod_event(api, set, "delete", name, None);
            Ok(())
        }
        Err(ObjectError::NotFound) => Ok(()),
        Err(e) => {
            pod_event(api, set, "delete", name, Some(&e));
            Err(internal(e))
        }
    }
}

/// `processReplica`: `Ok(true)` when a monotonic pass must stop here.
fn process_replica(
    api: &impl Api,
    pass: &mut Pass,
    slots: &mut [Slot],
    i: usize,
    monotonic: bool,
) -> Result<bool, PluginError> {
    let set = pass.set;
    let ord = start_ordinal(set) + i as i64;
    let slot = &mut slots[i];
    if slot.exists && matches!(phase(&slot.pod), "Failed" | "Succeeded") {
        // Upstream deletes and creates in one pass; the name is only free
        // once the old pod is gone, so the create waits for that.
        if !objects::is_deleting(&slot.pod) {
            let (type_, reason, what) = if phase(&slot.pod) == "Failed" {
                ("Warning", "RecreatingFailedPod", "failed")
            } else {
                ("Normal", "RecreatingTerminatedPod", "terminated")
            };
            event(
                api,
                set,
                type_,
                reason,
                &format!(
                    "StatefulSet {}/{} is recreating {what} Pod {}",
                    objects::namespace(set),
                    objects::name(set),
                    objects::name(&slot.pod)
                ),
            );
            delete_pod(api, set, &slot.pod)?;
        }
        return Ok(true);
    }
    if !slot.exists {
        let name = objects::name(&slot.pod).to_string();
        if let Err(e) = create_claims(api, set, &name, ord) {
            pod_event(
                api,
                set,
                "create",
                &name,
                Some(&ObjectError::Unavailable(format!("{e:?}"))),
            );
            return Err(e);
        }
        match api.create(&pod(), objects::namespace(set), &slot.pod) {
            Ok(created) => {
                pod_event(api, set, "create", &name, None);
                slot.pod = created;
                slot.exists = true;
            }
            // Still in the cache's future: its event brings us back.
            Err(ObjectError::Conflict(_)) => return Ok(true),
            Err(e) => {
                pod_event(api, set, "create", &name, Some(&e));
                return Err(internal(e));
            }
        }
        if monotonic {
            return Ok(true);
        }
    }
    if matches!(phase(&slot.pod), "Pending" | "") && !objects::is_deleting(&slot.pod) {
        create_claims(api, set, objects::name(&slot.pod), ord)?;
    }
    if monotonic
        && (objects::is_deleting(&slot.pod)
            || !running_and_ready(&slot.pod)
            || !pass.available(&slot.pod))
    {
        return Ok(true);
    }
    if identity::identity_matches(set, &slot.pod) {
        return Ok(false);
    }
    // updateIdentity (a live pod's volumes cannot change: storage is only
    // made sure of above).
    let name = objects::name(&slot.pod).to_string();
    let patch = json!({"metadata": {"labels": {
        identity::POD_NAME_LABEL: name, identity::POD_INDEX_LABEL: ord.to_string()}}});
    match api.merge_patch(&pod(), objects::namespace(set), &name, &patch) {
        Ok(p) => {
            pod_event(api, set, "update", &name, None);
            slot.pod = p;
            Ok(false)
        }
        Err(ObjectError::NotFound) => Ok(false),
        Err(e) => {
            pod_event(api, set, "update", &name, Some(&e));
            Err(internal(e))
        }
    }
}

/// `updateStatefulSet`: one pass of creations, deletions and updates; the
/// counts for the status even when the pass fails part way.
fn update_stateful_set(
    api: &impl Api,
    pass: &mut Pass,
    pods: Vec<Value>,
) -> (Counts, Result<Action, PluginError>) {
    let set = pass.set;
    let replicas = set["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let start = start_ordinal(set);
    let mut found: Vec<Option<Value>> = vec![None; replicas as usize];
    let mut condemned = Vec::new();
    for p in pods {
        let ord = ordinal(&p);
        if ord >= start && ord < start + replicas {
            found[(ord - start) as usize] = Some(p);
        } else if ord >= 0 {
            condemned.push(p);
        }
    }
    let mut slots: Vec<Slot> = found
        .into_iter()
        .enumerate()
        .map(|(i, p)| match p {
            Some(pod) => Slot { pod, exists: true },
            None => Slot {
                pod: pass.new_pod(start + i as i64),
                exists: false,
            },
        })
        .collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal(p)));
    let first_unhealthy: Option<String> = slots
        .iter()
        .map(|s| &s.pod)
        .chain(condemned.iter().rev())
        .find(|p| !healthy(p))
        .map(|p| objects::name(p).to_string());

    if objects::is_deleting(set) {
        let c = pass.counts(&slots, &condemned);
        return (c, Ok(Action::AwaitChange));
    }
    let monotonic = set["spec"]["podManagementPolicy"].as_str() != Some("Parallel");

    for i in 0..slots.len() {
        match process_replica(api, pass, &mut slots, i, monotonic) {
            Ok(true) if monotonic => {
                let c = pass.counts(&slots, &condemned);
                return (c, Ok(Action::AwaitChange));
            }
            Ok(_) => {}
            Err(e) => {
                let c = pass.counts(&slots, &condemned);
                return (c, Err(e));
            }
        }
    }

    // processCondemned: highest ordinal first; in order only once every
    // replica is Running and Ready (else the pass ended above).
    for p in &condemned {
        if objects::is_deleting(p) {
            if monotonic {
                break;
            }
            continue;
        }
        let is_first_unhealthy = first_unhealthy.as_deref() == Some(objects::name(p));
        if monotonic && !is_first_unhealthy && (!running_and_ready(p) || !pass.available(p)) {
            break;
        }
        if let Err(e) = delete_pod(api, set, p) {
            let c = pass.counts(&slots, &condemned);
            return (c, Err(e));
        }
        if monotonic {
            break;
        }
    }
    // In order, condemned pods always end the pass: updates wait for scale-down.
    if monotonic && !condemned.is_empty() {
        let c = pass.counts(&slots, &condemned);
        return (c, Ok(Action::AwaitChange));
    }
    let mut c = pass.counts(&slots, &condemned);
    let strategy = set["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate");
    if strategy == "OnDelete" {
        return (c, Ok(Action::AwaitChange));
    }
    // Rolling update: the highest ordinal at or above the partition that is
    // not at the update revision is deleted (and recreated by the next pass),
    // one at a time, each waiting for the one above to be healthy.
    let partition = set["spec"]["updateStrategy"]["rollingUpdate"]["partition"]
        .as_i64()
        .unwrap_or(0)
        .max(0) as usize;
    let update_name = objects::name(&pass.update).to_string();
    for target in (partition..slots.len()).rev() {
        let s = &slots[target];
        if !s.exists {
            break;
        }
        if revision_of(&s.pod) != update_name && !objects::is_deleting(&s.pod) {
            let r = delete_pod(api, set, &s.pod);
            c.current -= 1;
            return (c, r.map(|_| Action::AwaitChange));
        }
        if !healthy(&s.pod) {
            break;
        }
    }
    (c, Ok(Action::AwaitChange))
}

impl Controller for StatefulSets {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "statefulset".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: stateful_set(),
            watches: vec![Watch {
                kind: pod(),
                mapping: WatchMapping::Owner,
            }],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        trellis_sdk::config::none(config, "statefulset")
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(StatefulSets);

#[cfg(test)]
mod tests;
