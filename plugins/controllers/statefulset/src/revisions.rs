//! ControllerRevisions of a StatefulSet (upstream's `controller_history.go` and
//! `getStatefulSetRevisions`): each distinct template is stored as a revision
//! named `<set>-<hash>` whose data is the patch `{"spec": {"template": ...}}`,
//! so that pods below a partition can be recreated at the current revision.

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::controller_revision;
use trellis_sdk::controller::*;
use trellis_sdk::objects;

use crate::internal;

/// `history.ControllerRevisionHashLabel`.
pub const HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// `getPatch`: the revision data for the set's current template.
pub fn patch(set: &Value) -> Value {
    let mut template = set["spec"]["template"].clone();
    if !template.is_object() {
        template = json!({});
    }
    template["$patch"] = json!("replace");
    json!({"spec": {"template": template}})
}

/// `ApplyRevision`: the pod template a revision stores.
pub fn template(revision: &Value) -> Value {
    let mut t = revision["data"]["spec"]["template"].clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

fn number(r: &Value) -> i64 {
    r["revision"].as_i64().unwrap_or(0)
}

/// The set's revisions (controlled by it), oldest first (`SortControllerRevisions`).
pub fn list(api: &impl Api, set: &Value) -> Result<Vec<Value>, PluginError> {
    let uid = objects::uid(set);
    let mut out: Vec<Value> = api
        .list(&controller_revision(), objects::namespace(set), "")
        .map_err(internal)?
        .into_iter()
        .filter(|r| objects::is_controlled_by(r, uid))
        .collect();
    out.sort_by_key(|r| {
        (
            number(r),
            r["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            objects::name(r).to_string(),
        )
    });
    Ok(out)
}

fn revision_hash(data: &Value, collision_count: i64) -> String {
    objects::hash_string(&json!([data, collision_count]))
}

/// `getStatefulSetRevisions`: `(current, update, collision_count)`, creating
/// the update revision (or renumbering an equal older one, a rollback) as needed.
pub fn current_and_update(
    api: &impl Api,
    set: &Value,
    revisions: &[Value],
) -> Result<(Value, Value, i64), PluginError> {
    let ns = objects::namespace(set);
    let mut collision_count = set["status"]["collisionCount"].as_i64().unwrap_or(0);
    let data = patch(set);
    let next = revisions.last().map_or(1, |r| number(r) + 1);
    let equal = revisions.iter().rev().find(|r| r["data"] == data);
    let update = match equal {
        Some(eq) if objects::name(eq) == objects::name(revisions.last().expect("non-empty")) => {
            eq.clone()
        }
        Some(eq) => {
            let mut renumbered = eq.clone();
            renumbered["revision"] = json!(next);
            api.update(&controller_revision(), ns, &renumbered)
                .map_err(internal)?
        }
        None => loop {
            let hash = revision_hash(&data, collision_count);
            let mut labels = set["spec"]["template"]["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[HASH_LABEL] = json!(hash);
            let rev = json!({
                "apiVersion": "apps/v1", "kind": "ControllerRevision",
                "metadata": {
                    "name": format!("{}-{hash}", objects::name(set)),
                    "namespace": ns,
                    "labels": labels,
                    "ownerReferences": [objects::controller_owner_ref(set, &trellis_sdk::controller::kinds::stateful_set())],
                },
                "data": data, "revision": next,
            });
            match api.create(&controller_revision(), ns, &rev) {
                Ok(created) => break created,
                Err(ObjectError::Conflict(_)) => {
                    let existing = api
                        .get(&controller_revision(), ns, objects::name(&rev))
                        .map_err(internal)?;
                    if objects::is_controlled_by(&existing, objects::uid(set))
                        && existing["data"] == data
                    {
                        break existing;
                    }
                    collision_count += 1;
                }
                Err(e) => return Err(internal(e)),
            }
        },
    };
    let current_name = set["status"]["currentRevision"].as_str().unwrap_or("");
    let current = revisions
        .iter()
        .find(|r| !current_name.is_empty() && objects::name(r) == current_name)
        .cloned()
        .unwrap_or_else(|| update.clone());
    Ok((current, update, collision_count))
}

/// `truncateHistory`: delete the oldest revisions no pod, nor the current or
/// update revision, uses, beyond `revisionHistoryLimit` (default 10).
pub fn truncate(
    api: &impl Api,
    set: &Value,
    revisions: &[Value],
    live: &[&str],
) -> Result<(), PluginError> {
    let limit = set["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    let history: Vec<&Value> = revisions
        .iter()
        .filter(|r| !live.contains(&objects::name(r)))
        .collect();
    if history.len() <= limit {
        return Ok(());
    }
    for r in &history[..history.len() - limit] {
        match api.delete(
            &controller_revision(),
            objects::namespace(set),
            objects::name(r),
            "",
        ) {
            Ok(()) | Err(ObjectError::NotFound) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(())
}
