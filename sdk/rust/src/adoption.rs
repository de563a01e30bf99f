//! Upstream's `ControllerRefManager.ClaimObject` for workload controllers:
//! an owner (ReplicaSet, DaemonSet, StatefulSet, Deployment, ...) takes the
//! objects it selects, adopting matching orphans and releasing the ones it
//! controls that stopped matching.

use serde_json::{json, Value};

use crate::controller::Api;
use crate::objects;
use crate::{KindRef, ObjectError};

/// The `candidates` (objects of `kind`, listed from `owner`'s namespace) that
/// `owner` (of `owner_kind`) controls after claiming, as upstream decides it:
/// - controlled by another owner: left alone;
/// - controlled by `owner` and `matches`: kept;
/// - controlled by `owner` but not matching: released (its owner reference
///   removed), unless `owner` is being deleted;
/// - an orphan that `matches`, is not being deleted, is in `owner`'s
///   namespace, while `owner` is not being deleted: adopted (a controller
///   owner reference added) and kept.
///
/// Patches carry the candidate's `resourceVersion`, so a stale candidate is a
/// `Conflict`; a candidate gone meanwhile (`NotFound`) is skipped.
pub fn claim(
    api: &impl Api,
    kind: &KindRef,
    owner: &Value,
    owner_kind: &KindRef,
    candidates: impl IntoIterator<Item = Value>,
    matches: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>, ObjectError> {
    let uid = objects::uid(owner);
    let ns = objects::namespace(owner);
    let deleting = objects::is_deleting(owner);
    let mut claimed = Vec::new();
    for obj in candidates {
        let refs = || {
            obj["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        };
        let refs = match objects::controller_ref(&obj) {
            Some(r) if r["uid"] != uid => continue,
            Some(_) if matches(&obj) => {
                claimed.push(obj);
                continue;
            }
            Some(_) if deleting => continue,
            Some(_) => {
                let kept: Vec<Value> = refs().into_iter().filter(|r| r["uid"] != uid).collect();
                match patch_owners(api, kind, &obj, kept) {
                    Ok(_) | Err(ObjectError::NotFound) => continue,
                    Err(e) => return Err(e),
                }
            }
            None => {
                if deleting
                    || !matches(&obj)
                    || objects::is_deleting(&obj)
                    || (!ns.is_empty() && objects::namespace(&obj) != ns)
                {
                    continue;
                }
                let mut all = refs();
                all.push(objects::controller_owner_ref(owner, owner_kind));
                all
            }
        };
        match patch_owners(api, kind, &obj, refs) {
            Ok(adopted) => claimed.push(adopted),
            Err(ObjectError::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(claimed)
}

/// Whether `owner`'s `spec.selector` selects `obj` (an invalid selector
/// selects nothing): the `matches` of [`claim`] for a workload owner.
pub fn selected_by(owner: &Value) -> impl Fn(&Value) -> bool + '_ {
    move |obj| objects::object_matches(&owner["spec"]["selector"], obj).unwrap_or(false)
}

/// [`claim`] over every object of `kind` in `owner`'s namespace, matched by
/// `owner`'s selector and `also` (upstream's `ClaimPods`,
/// `ClaimReplicaSets`, `controlledHistories`).
pub fn claim_selected(
    api: &impl Api,
    kind: &KindRef,
    owner: &Value,
    owner_kind: &KindRef,
    also: impl Fn(&Value) -> bool,
) -> Result<Vec<Value>, ObjectError> {
    let all = api.list(kind, objects::namespace(owner), "")?;
    let selects = selected_by(owner);
    claim(api, kind, owner, owner_kind, all, |o| selects(o) && also(o))
}

fn patch_owners(
    api: &impl Api,
    kind: &KindRef,
    obj: &Value,
    refs: Vec<Value>,
) -> Result<Value, ObjectError> {
    let patch = json!({"metadata": {"ownerReferences": refs,
                                    "resourceVersion": obj["metadata"]["resourceVersion"]}});
    api.merge_patch(kind, objects::namespace(obj), objects::name(obj), &patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fake::FakeCluster;
    use crate::controller::kinds::{pod, replica_set};

    fn setup(owner_deleting: bool) -> (FakeCluster, Value) {
        let c = FakeCluster::new();
        let mut rs = json!({"metadata": {"name": "rs", "namespace": "ns"},
                            "spec": {"selector": {"matchLabels": {"app": "a"}}}});
        if owner_deleting {
            rs["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        }
        let rs = c.put(&replica_set(), rs);
        let owned = json!([objects::controller_owner_ref(&rs, &replica_set())]);
        let other = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x",
                            "uid": "other", "controller": true}]);
        for (name, app, refs, gone) in [
            ("mine", "a", owned.clone(), false),
            ("stray", "b", owned, false),
            ("orphan", "a", json!([]), false),
            ("orphan-b", "b", json!([]), false),
            ("orphan-deleting", "a", json!([]), true),
            ("theirs", "a", other, false),
        ] {
            let mut p = json!({"metadata": {"name": name, "namespace": "ns",
                               "labels": {"app": app}, "ownerReferences": refs}});
            if gone {
                p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            }
            c.put(&pod(), p);
        }
        (c, rs)
    }

    fn run(c: &FakeCluster, rs: &Value) -> Vec<String> {
        let sel = rs["spec"]["selector"].clone();
        let pods = c.list(&pod(), "ns", "").unwrap();
        let mut got: Vec<String> = claim(c, &pod(), rs, &replica_set(), pods, |p| {
            objects::object_matches(&sel, p).unwrap_or(false)
        })
        .unwrap()
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect();
        got.sort();
        got
    }

    #[test]
    fn adopts_orphans_and_releases_strays() {
        let (c, rs) = setup(false);
        assert_eq!(run(&c, &rs), ["mine", "orphan"]);
        let uid = objects::uid(&rs);
        let owner = |n: &str| c.object(&pod(), "ns", n).unwrap();
        assert!(objects::is_controlled_by(&owner("orphan"), uid));
        assert!(objects::controller_ref(&owner("stray")).is_none());
        assert!(objects::controller_ref(&owner("orphan-b")).is_none());
        assert!(objects::controller_ref(&owner("orphan-deleting")).is_none());
        assert!(!objects::is_controlled_by(&owner("theirs"), uid));
    }

    #[test]
    fn an_owner_being_deleted_neither_adopts_nor_releases() {
        let (c, rs) = setup(true);
        assert_eq!(run(&c, &rs), ["mine"]);
        assert!(c.writes().is_empty());
    }
}
