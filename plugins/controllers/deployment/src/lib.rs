//! Upstream's Deployment controller (`pkg/controller/deployment`): each
//! `apps/v1` Deployment rolls its pod template out through ReplicaSets named
//! `<deployment>-<pod-template-hash>`, with the RollingUpdate (maxSurge,
//! maxUnavailable) or Recreate strategy, proportional scaling mid-rollout,
//! pausing, revisions (`deployment.kubernetes.io/revision`, what `kubectl
//! rollout history/undo` read), the revision history limit and the
//! `Progressing`/`Available` conditions that `kubectl rollout status` reads.
//!
//! Keys: every key is a Deployment's `(namespace, name)`, either the
//! Deployment's own change or a ReplicaSet's change mapped through its
//! controlling ownerReference (`WatchMapping::Owner`). Pods are not read: the
//! ReplicaSets' `status` (kept by the ReplicaSet controller) says how many pods
//! run, are ready and are available. Orphan ReplicaSets are adopted at the
//! Deployment's next reconcile.
//!
//! `kubectl rollout undo` needs nothing special: kubectl copies an old
//! ReplicaSet's template into the Deployment, the controller finds that
//! ReplicaSet as the new one (same template ignoring `pod-template-hash`),
//! gives it the next revision (its old number moves to
//! `deployment.kubernetes.io/revision-history`) and scales it up.
//!
//! ```
//! use deployment::{reconcile, Deployments};
//! use serde_json::json;
//! use trellis_sdk::controller::{fake::FakeCluster, kinds, Controller};
//! let c = FakeCluster::new();
//! c.put(&kinds::deployment(), json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {
//!     "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
//!     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}));
//! c.settle(&Deployments::info(), |c, k| reconcile(c, &k)).unwrap();
//! let rs = c.all(&kinds::replica_set());
//! assert_eq!(rs[0]["spec"]["replicas"], 3);
//! assert_eq!(rs[0]["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
//! ```

use std::cmp::Ordering;

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{deployment, replica_set};
use trellis_sdk::controller::*;
use trellis_sdk::{adoption, objects};

/// The `source.component` of the events this controller records.
pub const COMPONENT: &str = "deployment-controller";
/// The label (and selector term) that tells a Deployment's ReplicaSets apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// A ReplicaSet's (and its Deployment's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions of a ReplicaSet brought back by a rollback.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// Upstream's `maxRevHistoryLengthInChars`.
const MAX_REV_HISTORY_CHARS: usize = 2000;
/// `progressDeadlineSeconds` / `revisionHistoryLimit` meaning "none".
const MAX_INT32: i64 = i32::MAX as i64;

// Condition reasons, as upstream's deploymentutil.
const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
const RS_UPDATED: &str = "ReplicaSetUpdated";
const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
const TIMED_OUT: &str = "ProgressDeadlineExceeded";
const PAUSED: &str = "DeploymentPaused";
const RESUMED: &str = "DeploymentResumed";
const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";

/// The controller. It takes no configuration (`{}`).
#[derive(Default)]
pub struct Deployments;

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

fn error_text(e: &ObjectError) -> String {
    match e {
        ObjectError::NotFound => "not found".into(),
        ObjectError::AccessDenied(m)
        | ObjectError::Conflict(m)
        | ObjectError::Invalid(m)
        | ObjectError::Unavailable(m) => m.clone(),
    }
}

// ---- small accessors ------------------------------------------------------

/// `spec.replicas` (the API's default, 1, when missing).
pub fn spec_replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn status_i(o: &Value, field: &str) -> i64 {
    o["status"][field].as_i64().unwrap_or(0)
}

/// A ReplicaSet's revision (`None` when missing or not a number).
pub fn revision(rs: &Value) -> Option<i64> {
    objects::annotation(rs, REVISION).and_then(|r| r.parse().ok())
}

fn is_rolling(d: &Value) -> bool {
    d["spec"]["strategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn progress_deadline(d: &Value) -> Option<i64> {
    let s = d["spec"]["progressDeadlineSeconds"].as_i64().unwrap_or(600);
    (s != MAX_INT32).then_some(s)
}

fn history_limit(d: &Value) -> Option<i64> {
    let l = d["spec"]["revisionHistoryLimit"].as_i64().unwrap_or(10);
    (l != MAX_INT32).then_some(l)
}

fn creation(o: &Value) -> i64 {
    o["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(objects::parse_rfc3339)
        .unwrap_or(0)
}

/// Upstream's `ReplicaSetsByCreationTimestamp`: older first, then by name.
fn by_creation(a: &Value, b: &Value) -> Ordering {
    creation(a)
        .cmp(&creation(b))
        .then_with(|| objects::name(a).cmp(objects::name(b)))
}

/// Upstream's `GetScaledValueFromIntOrPercent` for an intstr (default 25%).
pub fn scaled_value(v: &Value, total: i64, round_up: bool) -> i64 {
    match v {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => match s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<i64>().ok())
        {
            Some(p) if round_up => (p * total + 99).div_euclid(100),
            Some(p) => (p * total).div_euclid(100),
            None => s.parse().unwrap_or(0),
        },
        _ => (25 * total + if round_up { 99 } else { 0 }).div_euclid(100),
    }
}

/// Upstream's `ResolveFenceposts`: (maxSurge, maxUnavailable), with
/// maxUnavailable 1 when both resolve to 0.
pub fn fenceposts(d: &Value) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let desired = spec_replicas(d);
    let surge = scaled_value(&ru["maxSurge"], desired, true);
    let mut unavailable = scaled_value(&ru["maxUnavailable"], desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// Upstream's `MaxSurge` (0 for Recreate).
pub fn max_surge(d: &Value) -> i64 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// Upstream's `MaxUnavailable` (0 for Recreate or 0 replicas).
pub fn max_unavailable(d: &Value) -> i64 {
    let desired = spec_replicas(d);
    if !is_rolling(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

fn sum(rss: &[&Value], f: impl Fn(&Value) -> i64) -> i64 {
    rss.iter().map(|r| f(r)).sum()
}

/// Pods a ReplicaSet may count as available: its status, but never more than
/// its spec (pods beyond a just-lowered spec are about to go).
fn available(rs: &Value) -> i64 {
    status_i(rs, "availableReplicas").min(spec_replicas(rs))
}

// ---- templates, hashes, annotations ---------------------------------------

fn template_without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(m) = t["metadata"].as_object_mut() {
        m.remove("creationTimestamp");
        if let Some(l) = m.get_mut("labels").and_then(Value::as_object_mut) {
            l.remove(POD_TEMPLATE_HASH);
        }
        if m.get("labels")
            .is_some_and(|l| l.as_object().is_none_or(|l| l.is_empty()))
        {
            m.remove("labels");
        }
        if m.is_empty() {
            t.as_object_mut().map(|o| o.remove("metadata"));
        }
    }
    t
}

/// Upstream's `EqualIgnoreHash`: the templates are equal but for `pod-template-hash`.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

/// Upstream's `ComputeHash`: a hash of the template and the collision count.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    match collision_count {
        None => objects::hash_string(template),
        Some(n) => objects::hash_string(&json!([template, n])),
    }
}

fn annotations_mut(o: &mut Value) -> &mut Map<String, Value> {
    if !o["metadata"]["annotations"].is_object() {
        o["metadata"]["annotations"] = json!({});
    }
    o["metadata"]["annotations"]
        .as_object_mut()
        .expect("an object")
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// Upstream's `SetNewReplicaSetAnnotations`: copy the Deployment's
/// annotations, raise the revision to `new_revision` (keeping the old one in
/// the history), and on a new ReplicaSet set the replicas annotations.
fn set_new_rs_annotations(d: &Value, rs: &mut Value, new_revision: i64, exists: bool) -> bool {
    let mut changed = false;
    let ann = annotations_mut(rs);
    for (k, v) in d["metadata"]["annotations"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if skip_copy(k) || ann.get(k) == Some(v) {
            continue;
        }
        ann.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = ann
        .get(REVISION)
        .and_then(Value::as_str)
        .map(str::to_string);
    let old_int = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse::<i64>() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_int < new_revision {
        ann.insert(REVISION.into(), json!(new_revision.to_string()));
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = ann
                .get(REVISION_HISTORY)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if history.is_empty() {
                ann.insert(REVISION_HISTORY.into(), json!(old));
            } else {
                let mut revs: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < revs.len() {
                    total -= revs[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    revs = revs.split_off(start);
                    revs.push(&old);
                    ann.insert(REVISION_HISTORY.into(), json!(revs.join(",")));
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, spec_replicas(d), spec_replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

fn replicas_annotations_need_update(rs: &Value, desired: i64, max: i64) -> bool {
    objects::annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str())
        || objects::annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

fn set_replicas_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let changed = replicas_annotations_need_update(rs, desired, max);
    let ann = annotations_mut(rs);
    ann.insert(DESIRED_REPLICAS.into(), json!(desired.to_string()));
    ann.insert(MAX_REPLICAS.into(), json!(max.to_string()));
    changed
}

// ---- conditions -------------------------------------------------------------

fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn new_condition(type_: &str, status: &str, reason: &str, message: &str, now: i64) -> Value {
    let t = objects::rfc3339(now);
    json!({"type": type_, "status": status, "lastUpdateTime": t, "lastTransitionTime": t,
           "reason": reason, "message": message})
}

fn remove_condition(status: &mut Value, type_: &str) {
    if let Some(cs) = status["conditions"].as_array_mut() {
        cs.retain(|c| c["type"] != type_);
    }
}

/// Upstream's `SetDeploymentCondition`: no change when status and reason are
/// the same; the transition time kept when only the reason changes.
fn set_condition(status: &mut Value, mut cond: Value) {
    let type_ = cond["type"].as_str().unwrap_or("").to_string();
    if let Some(cur) = condition(status, &type_) {
        if cur["status"] == cond["status"] && cur["reason"] == cond["reason"] {
            return;
        }
        if cur["status"] == cond["status"] {
            cond["lastTransitionTime"] = cur["lastTransitionTime"].clone();
        }
    }
    remove_condition(status, &type_);
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    status["conditions"]
        .as_array_mut()
        .expect("an array")
        .push(cond);
}

/// Upstream's `DeploymentComplete`.
fn deployment_complete(d: &Value, status: &Value) -> bool {
    let want = spec_replicas(d);
    status["updatedReplicas"].as_i64().unwrap_or(0) == want
        && status["replicas"].as_i64().unwrap_or(0) == want
        && status["availableReplicas"].as_i64().unwrap_or(0) == want
        && status["observedGeneration"].as_i64().unwrap_or(0) >= objects::generation(d)
}

/// Upstream's `DeploymentProgressing`: more updated, ready or available
/// replicas, or fewer old ones, than the last status says.
fn deployment_progressing(d: &Value, new: &Value) -> bool {
    let old = &d["status"];
    let g = |s: &Value, f: &str| s[f].as_i64().unwrap_or(0);
    let old_old = g(old, "replicas") - g(old, "updatedReplicas");
    let new_old = g(new, "replicas") - g(new, "updatedReplicas");
    g(new, "updatedReplicas") > g(old, "updatedReplicas")
        || new_old < old_old
        || g(new, "readyReplicas") > g(old, "readyReplicas")
        || g(new, "availableReplicas") > g(old, "availableReplicas")
}

/// Upstream's `DeploymentTimedOut`.
fn deployment_timed_out(d: &Value, new: &Value, now: i64) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(c) = condition(new, "Progressing") else {
        return false;
    };
    match c["reason"].as_str() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c["lastUpdateTime"]
            .as_str()
            .and_then(objects::parse_rfc3339)
            .is_some_and(|from| from + deadline < now),
    }
}

// ---- the sync ---------------------------------------------------------------

/// One reconcile of one Deployment: `d` is always its latest stored version.
struct Sync<'a, A: Api> {
    api: &'a A,
    d: Value,
    now: i64,
}

/// Reconcile one Deployment.
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    let d = match api.get(&deployment(), &key.namespace, &key.name) {
        Ok(o) => o,
        Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
        Err(e) => return Err(internal(e)),
    };
    let mut s = Sync {
        api,
        d,
        now: api.now(),
    };
    s.run()?;
    Ok(s.requeue_stuck()
        .map_or(Action::AwaitChange, Action::RequeueAfter))
}

impl<A: Api> Sync<'_, A> {
    fn ns(&self) -> String {
        objects::namespace(&self.d).to_string()
    }

    fn event(&self, type_: &str, reason: &str, message: &str) {
        record_event(
            self.api,
            &self.d,
            &deployment(),
            type_,
            reason,
            message,
            COMPONENT,
        );
    }

    /// Upstream's `syncDeployment`.
    fn run(&mut self) -> Result<(), PluginError> {
        let selector = &self.d["spec"]["selector"];
        let selects_all = selector["matchLabels"]
            .as_object()
            .is_none_or(|m| m.is_empty())
            && selector["matchExpressions"]
                .as_array()
                .is_none_or(|e| e.is_empty());
        if selects_all {
            self.event(
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            );
            if status_i(&self.d, "observedGeneration") < objects::generation(&self.d) {
                let mut st = self.d["status"].clone();
                st["observedGeneration"] = json!(objects::generation(&self.d));
                self.write_status(st)?;
            }
            return Ok(());
        }
        if let Err(e) = objects::selector_matches(selector, &Map::new()) {
            trellis_sdk::log::warn(&format!(
                "deployment {}/{}: invalid selector: {e}",
                self.ns(),
                objects::name(&self.d)
            ));
            return Ok(());
        }
        let rs_list = self.claim_replica_sets()?;
        if objects::is_deleting(&self.d) {
            let (new_rs, old) = self.get_all(rs_list)?;
            return self.sync_status(new_rs.as_ref(), &old);
        }
        self.check_paused_conditions()?;
        let (new_rs, old) = self.get_all(rs_list)?;
        if self.d["spec"]["paused"].as_bool() == Some(true) {
            return self.sync(new_rs, old);
        }
        let desired = spec_replicas(&self.d);
        let scaling = new_rs.iter().chain(old.iter()).any(|rs| {
            spec_replicas(rs) > 0
                && objects::annotation(rs, DESIRED_REPLICAS)
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v != desired)
        });
        if scaling {
            return self.sync(new_rs, old);
        }
        if is_rolling(&self.d) {
            self.rollout_rolling(new_rs, old)
        } else {
            self.rollout_recreate(new_rs, old)
        }
    }

    fn write_status(&mut self, status: Value) -> Result<(), PluginError> {
        let mut d = self.d.clone();
        d["status"] = status;
        match self.api.update_status(&deployment(), &self.ns(), &d) {
            Ok(updated) => {
                self.d = updated;
                Ok(())
            }
            Err(e) => Err(internal(e)),
        }
    }

    /// Upstream's `ClaimReplicaSets`: ReplicaSets this Deployment controls
    /// and selects, after adopting matching orphans and releasing the ones
    /// that stopped matching (neither while the Deployment is being deleted).
    fn claim_replica_sets(&self) -> Result<Vec<Value>, PluginError> {
        adoption::claim_selected(self.api, &replica_set(), &self.d, &deployment(), |_| true)
            .map_err(internal)
    }

    /// Upstream's `checkPausedConditions`.
    fn check_paused_conditions(&mut self) -> Result<(), PluginError> {
        if progress_deadline(&self.d).is_none() {
            return Ok(());
        }
        let cond = condition(&self.d["status"], "Progressing");
        if cond.is_some_and(|c| c["reason"] == TIMED_OUT) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c["reason"] == PAUSED);
        let paused = self.d["spec"]["paused"].as_bool() == Some(true);
        let new = if paused && !paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                PAUSED,
                "Deployment is paused",
                self.now,
            )
        } else if !paused && paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                RESUMED,
                "Deployment is resumed",
                self.now,
            )
        } else {
            return Ok(());
        };
        let mut st = self.d["status"].clone();
        set_condition(&mut st, new);
        self.write_status(st)
    }

    /// Upstream's `FindNewReplicaSet`: the oldest ReplicaSet whose template
    /// equals the Deployment's, ignoring `pod-template-hash`.
    fn find_new(&self, rs_list: &[Value]) -> Option<usize> {
        let mut idx: Vec<usize> = (0..rs_list.len()).collect();
        idx.sort_by(|a, b| by_creation(&rs_list[*a], &rs_list[*b]));
        let t = &self.d["spec"]["template"];
        idx.into_iter()
            .find(|i| equal_ignore_hash(&rs_list[*i]["spec"]["template"], t))
    }

    fn set_deployment_revision(&mut self, rev: &str) -> Result<(), PluginError> {
        if objects::annotation(&self.d, REVISION) == Some(rev) {
            return Ok(());
        }
        // The revision is metadata: the status subresource would not keep it.
        let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
        self.d = self
            .api
            .merge_patch(&deployment(), &self.ns(), objects::name(&self.d), &patch)
            .map_err(internal)?;
        Ok(())
    }

    /// Upstream's `getAllReplicaSetsAndSyncRevision` without creating: the
    /// new ReplicaSet (its annotations and minReadySeconds brought up to
    /// date, the Deployment's revision synced) and all the old ones.
    fn get_all(
        &mut self,
        mut rs_list: Vec<Value>,
    ) -> Result<(Option<Value>, Vec<Value>), PluginError> {
        let Some(i) = self.find_new(&rs_list) else {
            return Ok((None, rs_list));
        };
        let existing = rs_list.remove(i);
        let old = rs_list;
        let new_revision = old.iter().filter_map(revision).max().unwrap_or(0) + 1;
        let mut copy = existing.clone();
        let annotations_updated = set_new_rs_annotations(&self.d, &mut copy, new_revision, true);
        let min_ready = self.d["spec"]["minReadySeconds"].as_i64().unwrap_or(0);
        if annotations_updated || copy["spec"]["minReadySeconds"].as_i64().unwrap_or(0) != min_ready
        {
            copy["spec"]["minReadySeconds"] = json!(min_ready);
            let updated = self
                .api
                .update(&replica_set(), &self.ns(), &copy)
                .map_err(internal)?;
            return Ok((Some(updated), old));
        }
        let rev = objects::annotation(&copy, REVISION)
            .unwrap_or("")
            .to_string();
        self.set_deployment_revision(&rev)?;
        if progress_deadline(&self.d).is_some()
            && condition(&self.d["status"], "Progressing").is_none()
        {
            let msg = format!("Found new replica set \"{}\"", objects::name(&copy));
            let mut st = self.d["status"].clone();
            set_condition(
                &mut st,
                new_condition("Progressing", "True", FOUND_NEW_RS, &msg, self.now),
            );
            self.write_status(st)?;
        }
        Ok((Some(copy), old))
    }

    /// Upstream's `getNewReplicaSet` when none exists: create it.
    fn create_new(&mut self, old: &[Value]) -> Result<Value, PluginError> {
        let d = self.d.clone();
        let ns = self.ns();
        let new_revision = old.iter().filter_map(revision).max().unwrap_or(0) + 1;
        let collision = d["status"]["collisionCount"].as_i64();
        let hash = template_hash(&d["spec"]["template"], collision);
        let mut template = d["spec"]["template"].clone();
        template["metadata"]["labels"][POD_TEMPLATE_HASH] = json!(hash);
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"][POD_TEMPLATE_HASH] = json!(hash);
        let name = format!("{}-{hash}", objects::name(&d));
        let mut rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns,
                "ownerReferences": [objects::controller_owner_ref(&d, &deployment())],
                "labels": template["metadata"]["labels"]},
            "spec": {"replicas": 0, "minReadySeconds": d["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
                "selector": selector, "template": template},
        });
        let mut all: Vec<&Value> = old.iter().collect();
        all.push(&rs);
        let replicas = new_rs_new_replicas(&d, &all, &rs);
        rs["spec"]["replicas"] = json!(replicas);
        set_new_rs_annotations(&d, &mut rs, new_revision, false);
        let mut already_exists = false;
        let created = match self.api.create(&replica_set(), &ns, &rs) {
            Ok(c) => c,
            Err(ObjectError::Conflict(m)) => {
                // A slow cache, or a hash collision with someone else's ReplicaSet.
                let found = self.api.get(&replica_set(), &ns, &name).map_err(internal)?;
                if objects::is_controlled_by(&found, objects::uid(&d))
                    && equal_ignore_hash(&d["spec"]["template"], &found["spec"]["template"])
                {
                    already_exists = true;
                    found
                } else {
                    let mut st = self.d["status"].clone();
                    st["collisionCount"] = json!(collision.unwrap_or(0) + 1);
                    self.write_status(st)?;
                    return Err(PluginError::Internal(format!(
                        "hash collision on replica set {name:?}: {m}"
                    )));
                }
            }
            Err(e) if error_text(&e).contains("being terminated") => return Err(internal(e)),
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{name}\": {}",
                    error_text(&e)
                );
                if progress_deadline(&d).is_some() {
                    let mut st = self.d["status"].clone();
                    set_condition(
                        &mut st,
                        new_condition("Progressing", "False", FAILED_RS_CREATE, &msg, self.now),
                    );
                    let _ = self.write_status(st);
                }
                self.event("Warning", FAILED_RS_CREATE, &msg);
                return Err(internal(e));
            }
        };
        if !already_exists && replicas > 0 {
            self.event(
                "Normal",
                "ScalingReplicaSet",
                &format!(
                    "Scaled up replica set {} to {replicas}",
                    objects::name(&created)
                ),
            );
        }
        self.set_deployment_revision(&new_revision.to_string())?;
        if !already_exists && progress_deadline(&self.d).is_some() {
            let msg = format!("Created new replica set \"{}\"", objects::name(&created));
            let mut st = self.d["status"].clone();
            set_condition(
                &mut st,
                new_condition("Progressing", "True", NEW_RS_CREATED, &msg, self.now),
            );
            self.write_status(st)?;
        }
        Ok(created)
    }

    /// Upstream's `scaleReplicaSet`: set the size and the replicas
    /// annotations; `rs` becomes the stored version. True when the size changed.
    fn scale_rs(&self, rs: &mut Value, new_scale: i64, op: &str) -> Result<bool, PluginError> {
        let old_scale = spec_replicas(rs);
        let size_needs = old_scale != new_scale;
        let desired = spec_replicas(&self.d);
        let max = desired + max_surge(&self.d);
        if !size_needs && !replicas_annotations_need_update(rs, desired, max) {
            return Ok(false);
        }
        let mut copy = rs.clone();
        copy["spec"]["replicas"] = json!(new_scale);
        set_replicas_annotations(&mut copy, desired, max);
        *rs = self
            .api
            .update(&replica_set(), &self.ns(), &copy)
            .map_err(internal)?;
        if size_needs {
            self.event(
                "Normal",
                "ScalingReplicaSet",
                &format!(
                    "Scaled {op} replica set {} to {new_scale} from {old_scale}",
                    objects::name(rs)
                ),
            );
        }
        Ok(size_needs)
    }

    /// Upstream's `scaleReplicaSetAndRecordEvent`.
    fn scale_and_record(&self, rs: &mut Value, new_scale: i64) -> Result<bool, PluginError> {
        let cur = spec_replicas(rs);
        if cur == new_scale {
            return Ok(false);
        }
        self.scale_rs(rs, new_scale, if cur < new_scale { "up" } else { "down" })
    }

    /// Upstream's `sync`: scaling (and history cleanup when paused) only.
    fn sync(&mut self, mut new_rs: Option<Value>, mut old: Vec<Value>) -> Result<(), PluginError> {
        self.scale(new_rs.as_mut(), &mut old)?;
        if self.d["spec"]["paused"].as_bool() == Some(true) {
            self.cleanup(&old)?;
        }
        self.sync_status(new_rs.as_ref(), &old)
    }

    /// Upstream's `scale`: bring the total to the Deployment's size, in
    /// proportion to each active ReplicaSet's size during a rolling update.
    fn scale(&self, new_rs: Option<&mut Value>, old: &mut [Value]) -> Result<(), PluginError> {
        let desired = spec_replicas(&self.d);
        // FindActiveOrLatest
        let mut refs: Vec<&mut Value> = old.iter_mut().collect();
        refs.sort_by(|a, b| by_creation(b, a));
        let mut all: Vec<&mut Value> = Vec::new();
        let new_index = if let Some(n) = new_rs {
            all.push(n);
            Some(0)
        } else {
            None
        };
        all.extend(refs);
        let active: Vec<usize> = (0..all.len())
            .filter(|i| spec_replicas(all[*i]) > 0)
            .collect();
        let target = match active.len() {
            0 if !all.is_empty() => Some(0), // the new one, or the newest old one
            1 => Some(active[0]),
            _ => None,
        };
        if let Some(i) = target {
            if spec_replicas(all[i]) != desired {
                self.scale_and_record(all[i], desired)?;
            }
            return Ok(());
        }
        // IsSaturated: the new ReplicaSet has everything; old ones go to 0.
        if let Some(n) = new_index {
            let rs = &all[n];
            let saturated = spec_replicas(rs) == desired
                && objects::annotation(rs, DESIRED_REPLICAS).and_then(|v| v.parse::<i64>().ok())
                    == Some(desired)
                && status_i(rs, "availableReplicas") == desired;
            if saturated {
                for (i, rs) in all.iter_mut().enumerate() {
                    if i != n && spec_replicas(rs) > 0 {
                        self.scale_and_record(rs, 0)?;
                    }
                }
                return Ok(());
            }
        }
        if !is_rolling(&self.d) {
            return Ok(());
        }
        let mut active: Vec<&mut Value> =
            all.into_iter().filter(|rs| spec_replicas(rs) > 0).collect();
        let total: i64 = active.iter().map(|rs| spec_replicas(rs)).sum();
        let allowed = if desired > 0 {
            desired + max_surge(&self.d)
        } else {
            0
        };
        let to_add = allowed - total;
        let op = match to_add.cmp(&0) {
            Ordering::Greater => {
                // ReplicaSetsBySizeNewer: larger first, then newer first
                active.sort_by(|a, b| {
                    spec_replicas(b)
                        .cmp(&spec_replicas(a))
                        .then_with(|| by_creation(b, a))
                });
                "up"
            }
            Ordering::Less => {
                // ReplicaSetsBySizeOlder: larger first, then older first
                active.sort_by(|a, b| {
                    spec_replicas(b)
                        .cmp(&spec_replicas(a))
                        .then_with(|| by_creation(a, b))
                });
                "down"
            }
            Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes = Vec::with_capacity(active.len());
        for rs in &active {
            if to_add != 0 {
                let p = proportion(rs, &self.d, to_add, added);
                sizes.push(spec_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(spec_replicas(rs));
            }
        }
        for (i, rs) in active.into_iter().enumerate() {
            if i == 0 && to_add != 0 {
                sizes[0] = (sizes[0] + to_add - added).max(0);
            }
            self.scale_rs(rs, sizes[i], op)?;
        }
        Ok(())
    }

    /// Upstream's `rolloutRolling`.
    fn rollout_rolling(
        &mut self,
        new_rs: Option<Value>,
        mut old: Vec<Value>,
    ) -> Result<(), PluginError> {
        let mut new_rs = match new_rs {
            Some(n) => n,
            None => self.create_new(&old)?,
        };
        // reconcileNewReplicaSet
        let desired = spec_replicas(&self.d);
        let cur = spec_replicas(&new_rs);
        let scaled_up = if cur == desired {
            false
        } else if cur > desired {
            self.scale_and_record(&mut new_rs, desired)?
        } else {
            let mut all: Vec<&Value> = old.iter().collect();
            all.push(&new_rs);
            let n = new_rs_new_replicas(&self.d, &all, &new_rs);
            self.scale_and_record(&mut new_rs, n)?
        };
        if scaled_up {
            return self.sync_rollout_status(Some(&new_rs), &old);
        }
        if self.reconcile_old(&mut old, &new_rs)? {
            return self.sync_rollout_status(Some(&new_rs), &old);
        }
        if deployment_complete(&self.d, &self.d["status"]) {
            self.cleanup(&old)?;
        }
        self.sync_rollout_status(Some(&new_rs), &old)
    }

    /// Upstream's `reconcileOldReplicaSets`.
    fn reconcile_old(&self, old: &mut [Value], new_rs: &Value) -> Result<bool, PluginError> {
        let mut active: Vec<&mut Value> = old.iter_mut().filter(|r| spec_replicas(r) > 0).collect();
        let old_pods: i64 = active.iter().map(|r| spec_replicas(r)).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + spec_replicas(new_rs);
        let min_available = spec_replicas(&self.d) - max_unavailable(&self.d);
        let new_unavailable = spec_replicas(new_rs) - available(new_rs);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        active.sort_by(|a, b| by_creation(a, b));
        // cleanupUnhealthyReplicas: unavailable old pods go first, they cost nothing.
        let mut cleaned = 0;
        for rs in active.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let (spec, avail) = (spec_replicas(rs), available(rs));
            if spec == 0 || spec <= avail {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(spec - avail);
            self.scale_and_record(rs, spec - n)?;
            cleaned += n;
        }
        // scaleDownOldReplicaSetsForRollingUpdate
        let available_pods: i64 =
            active.iter().map(|r| available(r)).sum::<i64>() + available(new_rs);
        let mut scaled = 0;
        if available_pods > min_available {
            let to_scale = available_pods - min_available;
            for rs in active.iter_mut() {
                if scaled >= to_scale {
                    break;
                }
                let spec = spec_replicas(rs);
                if spec == 0 {
                    continue;
                }
                let n = spec.min(to_scale - scaled);
                self.scale_and_record(rs, spec - n)?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream's `rolloutRecreate`.
    fn rollout_recreate(
        &mut self,
        new_rs: Option<Value>,
        mut old: Vec<Value>,
    ) -> Result<(), PluginError> {
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|r| spec_replicas(r) > 0) {
            scaled_down |= self.scale_and_record(rs, 0)?;
        }
        if scaled_down {
            return self.sync_rollout_status(new_rs.as_ref(), &old);
        }
        // oldPodsRunning, from the old ReplicaSets' status.
        if old.iter().any(|r| status_i(r, "replicas") > 0) {
            return self.sync_rollout_status(new_rs.as_ref(), &old);
        }
        let mut new_rs = match new_rs {
            Some(n) => n,
            None => self.create_new(&old)?,
        };
        let desired = spec_replicas(&self.d);
        self.scale_and_record(&mut new_rs, desired)?;
        if deployment_complete(&self.d, &self.d["status"]) {
            self.cleanup(&old)?;
        }
        self.sync_rollout_status(Some(&new_rs), &old)
    }

    /// Upstream's `cleanupDeployment`: delete the oldest old ReplicaSets
    /// beyond `revisionHistoryLimit` that have no pods left.
    fn cleanup(&self, old: &[Value]) -> Result<(), PluginError> {
        let Some(limit) = history_limit(&self.d) else {
            return Ok(());
        };
        let mut alive: Vec<&Value> = old.iter().filter(|r| !objects::is_deleting(r)).collect();
        let diff = alive.len() as i64 - limit;
        if diff <= 0 {
            return Ok(());
        }
        // ReplicaSetsByRevision: lower revision first, then older first.
        alive.sort_by(|a, b| {
            revision(a)
                .unwrap_or(0)
                .cmp(&revision(b).unwrap_or(0))
                .then_with(|| by_creation(a, b))
        });
        for rs in alive.into_iter().take(diff as usize) {
            if status_i(rs, "replicas") != 0
                || spec_replicas(rs) != 0
                || objects::generation(rs) > status_i(rs, "observedGeneration")
            {
                continue;
            }
            match self
                .api
                .delete(&replica_set(), &self.ns(), objects::name(rs), "Background")
            {
                Ok(()) | Err(ObjectError::NotFound) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(())
    }

    /// Upstream's `calculateStatus`.
    fn calculate_status(&self, new_rs: Option<&Value>, old: &[Value]) -> Value {
        let all: Vec<&Value> = old.iter().chain(new_rs).collect();
        let available_n = sum(&all, |r| status_i(r, "availableReplicas"));
        let total = sum(&all, spec_replicas);
        let mut st = self.d["status"].as_object().cloned().unwrap_or_default();
        for (k, v) in [
            ("observedGeneration", objects::generation(&self.d)),
            ("replicas", sum(&all, |r| status_i(r, "replicas"))),
            (
                "updatedReplicas",
                new_rs.map_or(0, |r| status_i(r, "replicas")),
            ),
            ("readyReplicas", sum(&all, |r| status_i(r, "readyReplicas"))),
            ("availableReplicas", available_n),
            ("unavailableReplicas", (total - available_n).max(0)),
        ] {
            if v == 0 {
                st.remove(k);
            } else {
                st.insert(k.into(), json!(v));
            }
        }
        let mut st = Value::Object(st);
        let cond = if available_n >= spec_replicas(&self.d) - max_unavailable(&self.d) {
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                self.now,
            )
        } else {
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                self.now,
            )
        };
        set_condition(&mut st, cond);
        st
    }

    /// Upstream's `syncDeploymentStatus`.
    fn sync_status(&mut self, new_rs: Option<&Value>, old: &[Value]) -> Result<(), PluginError> {
        let st = self.calculate_status(new_rs, old);
        if objects::omit_empty(&st) != objects::omit_empty(&self.d["status"]) {
            self.write_status(st)?;
        }
        Ok(())
    }

    /// Upstream's `syncRolloutStatus`: the status plus the `Progressing`
    /// condition and the ReplicaSets' `ReplicaFailure`.
    fn sync_rollout_status(
        &mut self,
        new_rs: Option<&Value>,
        old: &[Value],
    ) -> Result<(), PluginError> {
        let mut st = self.calculate_status(new_rs, old);
        let deadline = progress_deadline(&self.d);
        if deadline.is_none() {
            remove_condition(&mut st, "Progressing");
        }
        let cur = condition(&self.d["status"], "Progressing").cloned();
        let complete_already = st["replicas"] == st["updatedReplicas"]
            && cur
                .as_ref()
                .is_some_and(|c| c["reason"] == NEW_RS_AVAILABLE);
        if deadline.is_some() && !complete_already {
            let dname = objects::name(&self.d);
            let what = |verb: &str| match new_rs {
                Some(rs) => format!("ReplicaSet \"{}\" {verb}.", objects::name(rs)),
                None => format!("Deployment \"{dname}\" {verb}."),
            };
            if deployment_complete(&self.d, &st) {
                let c = new_condition(
                    "Progressing",
                    "True",
                    NEW_RS_AVAILABLE,
                    &what("has successfully progressed"),
                    self.now,
                );
                set_condition(&mut st, c);
            } else if deployment_progressing(&self.d, &st) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    RS_UPDATED,
                    &what("is progressing"),
                    self.now,
                );
                if let Some(cur) = &cur {
                    if cur["status"] == "True" {
                        c["lastTransitionTime"] = cur["lastTransitionTime"].clone();
                    }
                    remove_condition(&mut st, "Progressing");
                }
                set_condition(&mut st, c);
            } else if deployment_timed_out(&self.d, &st, self.now) {
                let c = new_condition(
                    "Progressing",
                    "False",
                    TIMED_OUT,
                    &what("has timed out progressing"),
                    self.now,
                );
                set_condition(&mut st, c);
            }
        }
        // getReplicaFailures: the new ReplicaSet's first, else any old one's.
        let failure = new_rs
            .into_iter()
            .chain(old.iter())
            .find_map(|rs| condition(&rs["status"], "ReplicaFailure").cloned());
        match failure {
            Some(c) => {
                let mut dc = json!({"type": "ReplicaFailure", "status": c["status"], "reason": c["reason"],
                    "message": c["message"], "lastUpdateTime": c["lastTransitionTime"],
                    "lastTransitionTime": c["lastTransitionTime"]});
                if dc["reason"].is_null() {
                    dc.as_object_mut().map(|o| o.remove("reason"));
                }
                set_condition(&mut st, dc);
            }
            None => remove_condition(&mut st, "ReplicaFailure"),
        }
        if objects::omit_empty(&st) != objects::omit_empty(&self.d["status"]) {
            self.write_status(st)?;
        }
        Ok(())
    }

    /// Upstream's `requeueStuckDeployment`: when to look again for a
    /// progress deadline, in milliseconds.
    fn requeue_stuck(&self) -> Option<u64> {
        let deadline = progress_deadline(&self.d)?;
        if self.d["spec"]["paused"].as_bool() == Some(true) || objects::is_deleting(&self.d) {
            return None;
        }
        let cur = condition(&self.d["status"], "Progressing")?;
        if deployment_complete(&self.d, &self.d["status"]) || cur["reason"] == TIMED_OUT {
            return None;
        }
        let last = cur["lastUpdateTime"]
            .as_str()
            .and_then(objects::parse_rfc3339)?;
        let after = (last + deadline) * 1000 - self.api.now_millis();
        // a second more, as upstream, so the check lands after the deadline
        Some(if after < 1000 {
            1000
        } else {
            (after + 1000) as u64
        })
    }
}

/// Upstream's `NewRSNewReplicas`: the new ReplicaSet's size in the next step.
fn new_rs_new_replicas(d: &Value, all: &[&Value], new_rs: &Value) -> i64 {
    let desired = spec_replicas(d);
    if !is_rolling(d) {
        return desired;
    }
    let surge = scaled_value(
        &d["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        desired,
        true,
    );
    let current = sum(all, spec_replicas);
    let max_total = desired + surge;
    let cur = spec_replicas(new_rs);
    if current >= max_total {
        return cur;
    }
    cur + (max_total - current).min(desired - cur)
}

/// Upstream's `GetProportion`/`getReplicaSetFraction`.
fn proportion(rs: &Value, d: &Value, to_add: i64, added: i64) -> i64 {
    let size = spec_replicas(rs);
    if size == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if spec_replicas(d) == 0 {
        -size
    } else {
        let max = spec_replicas(d) + max_surge(d);
        let before = objects::annotation(rs, MAX_REPLICAS)
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|v| *v != 0)
            .unwrap_or_else(|| status_i(d, "replicas"));
        if before == 0 {
            0
        } else {
            ((size * max) as f64 / before as f64).round() as i64 - size
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

impl Controller for Deployments {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "deployment".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: deployment(),
            watches: vec![Watch {
                kind: replica_set(),
                mapping: WatchMapping::Owner,
            }],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        trellis_sdk::config::none(config, "deployment")
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(Deployments);

#[cfg(test)]
mod tests;
