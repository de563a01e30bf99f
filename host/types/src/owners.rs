//! Owner references (`metadata.ownerReferences`), read the same way by the
//! controller runtime (which maps a dependent's change to its owner's key) and
//! by controllers in the guest SDK.
//!
//! ```
//! use serde_json::json;
//! use trellis_types::owners::{controller_ref, controller_name};
//! let pod = json!({"metadata": {"name": "web-x1", "ownerReferences": [
//!     {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "u1", "controller": true}]}});
//! assert_eq!(controller_ref(&pod).unwrap()["uid"], "u1");
//! assert_eq!(controller_name(&pod, "apps", "ReplicaSet"), Some("web"));
//! assert_eq!(controller_name(&pod, "batch", "Job"), None);
//! ```

use serde_json::Value;

/// The `apiVersion` of `group` and `version`: `group/version`, or `version`
/// alone for the core group. The inverse of [`group_of`].
pub fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// The API group of an `apiVersion` ("" for the core group's "v1").
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The owner reference marked `controller: true`, if any.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))
}

/// The name of the object's controlling owner when that owner is of `group`/`kind`.
pub fn controller_name<'a>(obj: &'a Value, group: &str, kind: &str) -> Option<&'a str> {
    let r = controller_ref(obj)?;
    (r["kind"] == kind && group_of(r["apiVersion"].as_str().unwrap_or("")) == group)
        .then(|| r["name"].as_str())
        .flatten()
}

/// Every owner reference of `group`/`kind`, controlling or not.
pub fn owner_names<'a>(obj: &'a Value, group: &str, kind: &str) -> Vec<&'a str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter(|r| {
                    r["kind"] == kind && group_of(r["apiVersion"].as_str().unwrap_or("")) == group
                })
                .filter_map(|r| r["name"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether some owner reference points at the object with `uid`.
pub fn is_owned_by(obj: &Value, uid: &str) -> bool {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn owners_by_group_and_kind() {
        let rs = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Service", "name": "svc", "uid": "s"},
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d", "controller": true},
        ]}});
        assert_eq!(controller_name(&rs, "apps", "Deployment"), Some("web"));
        assert_eq!(
            controller_name(&rs, "", "Service"),
            None,
            "not the controller"
        );
        assert_eq!(owner_names(&rs, "", "Service"), vec!["svc"]);
        assert!(is_owned_by(&rs, "s"));
        assert!(!is_owned_by(&rs, "x"));
        assert_eq!(controller_ref(&json!({})), None);
        assert_eq!(group_of("v1"), "");
        assert_eq!(group_of("batch/v1"), "batch");
        assert_eq!(api_version("", "v1"), "v1");
        assert_eq!(api_version("batch", "v1"), "batch/v1");
    }
}
