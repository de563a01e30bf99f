//! A DaemonSet's ControllerRevision history, as upstream's `daemon/update.go`
//! keeps it (`constructHistory`, `snapshot`, `dedupCurHistories`,
//! `cleanupHistory`, `controlledHistories`), so that `kubectl rollout history`
//! and `kubectl rollout undo` work: each template is stored once, as a
//! revision named `<ds>-<hash>` whose `data` is the strategic merge patch
//! `{"spec": {"template": {..., "$patch": "replace"}}}` that kubectl applies to
//! the DaemonSet to roll back, and whose `controller-revision-hash` label is
//! the hash the daemon pods carry.

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::{controller_revision, daemon_set, pod};
use trellis_sdk::controller::*;
use trellis_sdk::{adoption, objects};

use crate::{internal, template_hash, HASH_LABEL};

/// `spec.revisionHistoryLimit`'s default.
const DEFAULT_HISTORY_LIMIT: i64 = 10;

/// Upstream's `getPatch`: the revision data for the DaemonSet's current template.
pub fn patch(ds: &Value) -> Value {
    let mut template = ds["spec"]["template"].clone();
    if !template.is_object() {
        template = json!({});
    }
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// Upstream's `Match`: the revision stores the DaemonSet's current template.
pub fn matches(ds: &Value, revision: &Value) -> bool {
    revision["data"] == patch(ds)
}

/// The revision's number.
pub fn number(r: &Value) -> i64 {
    r["revision"].as_i64().unwrap_or(0)
}

/// The hash label a revision (and the pods of its template) carries.
pub fn hash_of(r: &Value) -> &str {
    r["metadata"]["labels"][HASH_LABEL].as_str().unwrap_or("")
}

/// Upstream's `controlledHistories`: every revision in the namespace claimed
/// by the DaemonSet (adopting orphans its selector matches, releasing its own
/// that stopped matching).
fn controlled(api: &impl Api, ds: &Value) -> Result<Vec<Value>, PluginError> {
    adoption::claim_selected(api, &controller_revision(), ds, &daemon_set(), |_| true)
        .map_err(internal)
}

/// Upstream's `constructHistory`: the current revision (created, deduplicated
/// or renumbered to the newest as needed) and the old ones.
pub fn construct(api: &impl Api, ds: &Value) -> Result<(Value, Vec<Value>), PluginError> {
    let ns = objects::namespace(ds);
    let mut current = Vec::new();
    let mut old = Vec::new();
    for mut r in controlled(api, ds)? {
        // Revisions written before the label existed are labelled with their name.
        if hash_of(&r).is_empty() {
            if !r["metadata"]["labels"].is_object() {
                r["metadata"]["labels"] = json!({});
            }
            r["metadata"]["labels"][HASH_LABEL] = json!(objects::name(&r));
            r = api
                .update(&controller_revision(), ns, &r)
                .map_err(internal)?;
        }
        if matches(ds, &r) {
            current.push(r);
        } else {
            old.push(r);
        }
    }
    let next = old.iter().map(number).max().unwrap_or(0) + 1;
    let cur = if current.is_empty() {
        snapshot(api, ds, next)?
    } else {
        let cur = dedup(api, ds, current)?;
        if number(&cur) < next {
            let mut renumbered = cur;
            renumbered["revision"] = json!(next);
            api.update(&controller_revision(), ns, &renumbered)
                .map_err(internal)?
        } else {
            cur
        }
    };
    Ok((cur, old))
}

/// Upstream's `snapshot`: create the revision of the current template; on a
/// name taken by another template, bump `status.collisionCount` and fail
/// (the retry hashes with the new count).
fn snapshot(api: &impl Api, ds: &Value, revision: i64) -> Result<Value, PluginError> {
    let ns = objects::namespace(ds);
    let hash = template_hash(ds);
    let name = format!("{}-{hash}", objects::name(ds));
    let mut labels = ds["spec"]["template"]["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels[HASH_LABEL] = json!(hash);
    let mut meta = json!({
        "name": name,
        "namespace": ns,
        "labels": labels,
        "ownerReferences": [objects::controller_owner_ref(ds, &daemon_set())],
    });
    if ds["metadata"]["annotations"].is_object() {
        meta["annotations"] = ds["metadata"]["annotations"].clone();
    }
    let rev = json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": meta,
        "data": patch(ds),
        "revision": revision,
    });
    match api.create(&controller_revision(), ns, &rev) {
        Ok(created) => Ok(created),
        Err(ObjectError::Conflict(_)) => {
            let existing = match api.get(&controller_revision(), ns, &name) {
                Ok(r) => r,
                // Gone meanwhile: the next attempt creates it.
                Err(ObjectError::NotFound) => {
                    return Err(PluginError::Internal(format!(
                        "controller revision {ns}/{name} vanished"
                    )))
                }
                Err(e) => return Err(internal(e)),
            };
            if matches(ds, &existing) && objects::is_controlled_by(&existing, objects::uid(ds)) {
                return Ok(existing);
            }
            let mut fresh = api
                .get(&daemon_set(), ns, objects::name(ds))
                .map_err(internal)?;
            let count = ds["status"]["collisionCount"].as_i64().unwrap_or(0);
            if fresh["status"]["collisionCount"].as_i64().unwrap_or(0) != count {
                return Err(PluginError::Internal(format!(
                    "stale collision count of daemon set {ns}/{}; will retry",
                    objects::name(ds)
                )));
            }
            if !fresh["status"].is_object() {
                fresh["status"] = json!({});
            }
            fresh["status"]["collisionCount"] = json!(count + 1);
            api.update_status(&daemon_set(), ns, &fresh)
                .map_err(internal)?;
            trellis_sdk::log::info(&format!(
                "daemonset {ns}/{}: hash collision on {name}, collisionCount now {}",
                objects::name(ds),
                count + 1
            ));
            Err(PluginError::Internal(format!(
                "controller revision {ns}/{name} already exists with another template"
            )))
        }
        Err(e) => Err(internal(e)),
    }
}

/// Upstream's `dedupCurHistories`: keep the newest of several revisions of
/// the current template, move the pods labelled with the others' hashes to
/// its hash, and delete the others.
fn dedup(api: &impl Api, ds: &Value, mut current: Vec<Value>) -> Result<Value, PluginError> {
    let ns = objects::namespace(ds);
    // The last of the highest numbers, as upstream's `>=` scan keeps.
    let mut keep_at = 0;
    for (i, r) in current.iter().enumerate() {
        if number(r) >= number(&current[keep_at]) {
            keep_at = i;
        }
    }
    let keep = current.swap_remove(keep_at);
    if current.is_empty() {
        return Ok(keep);
    }
    let keep_hash = hash_of(&keep).to_string();
    let pods = crate::claim_pods(api, ds)?;
    for dup in &current {
        let dup_hash = hash_of(dup);
        for p in &pods {
            // Upstream relabels every pod whose hash differs from the kept
            // one; pods of older templates would then pass for updated, so
            // only the duplicate's pods are moved here.
            if p["metadata"]["labels"][HASH_LABEL] != dup_hash || dup_hash == keep_hash {
                continue;
            }
            match api.merge_patch(
                &pod(),
                ns,
                objects::name(p),
                &json!({"metadata": {"labels": {HASH_LABEL: keep_hash}}}),
            ) {
                Ok(_) | Err(ObjectError::NotFound) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        match api.delete(&controller_revision(), ns, objects::name(dup), "") {
            Ok(()) | Err(ObjectError::NotFound) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(keep)
}

/// Upstream's `cleanupHistory`: beyond `spec.revisionHistoryLimit` (default
/// 10) old revisions, delete the oldest whose hash no pod of the DaemonSet
/// (deleting ones included) carries. Returns the deletes made.
pub fn cleanup(
    api: &impl Api,
    ds: &Value,
    mut old: Vec<Value>,
    pods: &[Value],
) -> Result<usize, PluginError> {
    let keep = ds["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(DEFAULT_HISTORY_LIMIT)
        .max(0);
    let mut to_kill = old.len() as i64 - keep;
    if to_kill <= 0 {
        return Ok(0);
    }
    let live: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["metadata"]["labels"][HASH_LABEL].as_str())
        .filter(|h| !h.is_empty())
        .collect();
    old.sort_by_key(|r| (number(r), objects::name(r).to_string()));
    let mut deleted = 0;
    for r in &old {
        if to_kill <= 0 {
            break;
        }
        if live.contains(&hash_of(r)) {
            continue;
        }
        match api.delete(
            &controller_revision(),
            objects::namespace(ds),
            objects::name(r),
            "",
        ) {
            Ok(()) => deleted += 1,
            Err(ObjectError::NotFound) => {}
            Err(e) => return Err(internal(e)),
        }
        to_kill -= 1;
    }
    Ok(deleted)
}
