//! PriorityClasses (`scheduling.k8s.io/v1`) and pods' priority, as
//! kube-apiserver's built-in `Priority` admission sets it.
//!
//! - The two system classes always exist: `system-cluster-critical`
//!   (2000000000) and `system-node-critical` (2000001000).
//! - A pod created with `priorityClassName` gets that class's `value` as
//!   `spec.priority` and its `preemptionPolicy`; a class that does not exist
//!   is refused (403). Without one it gets the global default class (the
//!   lowest-valued, should several claim it), else priority 0.
//! - A pod may not set `priority` or `preemptionPolicy` to anything else
//!   (403, in upstream's words).

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::registry::{self, Kind};
use crate::storage::Objects;

/// Upstream's `PreemptLowerPriority`, every class's default.
pub const PREEMPT_LOWER: &str = "PreemptLowerPriority";

/// The classes that always exist: name, value, description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

/// The highest value a class not among [`SYSTEM_CLASSES`] may have.
pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;

fn classes() -> &'static Kind {
    registry::by_kind("scheduling.k8s.io", "PriorityClass").expect("served")
}

/// The system classes as objects of their kind, to create when absent.
pub(crate) fn system_classes() -> impl Iterator<Item = (&'static Kind, Value)> {
    SYSTEM_CLASSES.iter().map(|(name, value, description)| {
        let class = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value, "globalDefault": false, "description": description,
            "preemptionPolicy": PREEMPT_LOWER,
        });
        (classes(), class)
    })
}

/// Set a new pod's `spec.priority` and `spec.preemptionPolicy` from its
/// class (see the module's documentation).
pub(crate) async fn admit_pod(objects: &Objects, pod: &mut Value) -> Result<(), ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
    let forbidden =
        |why: String| ApiError::forbidden(format!("pods \"{name}\" is forbidden: {why}"));
    let Some(spec) = pod.get_mut("spec").filter(|s| s.is_object()) else {
        return Ok(());
    };
    let asked = spec["priorityClassName"].as_str().unwrap_or("").to_string();
    let class = if asked.is_empty() {
        let all = objects.list(classes(), "", &Default::default()).await?;
        all.items
            .into_iter()
            .filter(|c| c["globalDefault"] == true)
            .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
    } else {
        match objects.get(classes(), "", &asked).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => {
                return Err(forbidden(format!(
                    "no PriorityClass with name {asked} was found"
                )))
            }
            Err(e) => return Err(e),
        }
    };
    let (priority, policy) = match &class {
        Some(c) => (
            c["value"].as_i64().unwrap_or(0),
            c["preemptionPolicy"]
                .as_str()
                .unwrap_or(PREEMPT_LOWER)
                .to_string(),
        ),
        None => (0, PREEMPT_LOWER.to_string()),
    };
    if let Some(given) = spec["priority"].as_i64().filter(|p| *p != priority) {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(given) = spec["preemptionPolicy"].as_str().filter(|p| *p != policy) {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(c) = &class {
        spec["priorityClassName"] = c["metadata"]["name"].clone();
    }
    spec["priority"] = json!(priority);
    spec["preemptionPolicy"] = json!(policy);
    Ok(())
}
