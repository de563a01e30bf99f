//! A stateful pod's identity and storage (upstream's `stateful_set_utils.go`):
//! names `<set>-<ordinal>`, the identity labels, hostname and subdomain, and
//! claims `<template>-<set>-<ordinal>` mounted as volumes named after their templates.

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::stateful_set;
use trellis_sdk::objects;

/// `apps.StatefulSetPodNameLabel`.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// `apps.PodIndexLabel`.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// `apps.StatefulSetRevisionLabel`: the pod's revision name.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// `getParentNameAndOrdinal`: `name` split as `(.*)-([0-9]+)$`.
pub fn parent_and_ordinal(name: &str) -> Option<(&str, i64)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ord.parse().ok()?))
}

/// The pod's ordinal, `-1` when its name has none.
pub fn ordinal(pod: &Value) -> i64 {
    parent_and_ordinal(objects::name(pod)).map_or(-1, |(_, o)| o)
}

/// `isMemberOf`: the pod's name says it belongs to `set`.
pub fn is_member_of(set: &Value, pod: &Value) -> bool {
    parent_and_ordinal(objects::name(pod)).is_some_and(|(p, _)| p == objects::name(set))
}

/// `getPodName`.
pub fn pod_name(set: &Value, ordinal: i64) -> String {
    format!("{}-{ordinal}", objects::name(set))
}

/// `getPersistentVolumeClaimName`.
pub fn claim_name(set: &Value, template: &Value, ordinal: i64) -> String {
    format!(
        "{}-{}-{ordinal}",
        objects::name(template),
        objects::name(set)
    )
}

/// `getPersistentVolumeClaims`: the claims of the pod with `ordinal`, by template name,
/// in template order; labels are the template's plus the set's `matchLabels`.
pub fn claims(set: &Value, ordinal: i64) -> Vec<(String, Value)> {
    let ns = objects::namespace(set);
    let mut out = Vec::new();
    for t in set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut claim = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": t.get("metadata").cloned().unwrap_or_else(|| json!({})),
            "spec": t.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        let m = claim["metadata"].as_object_mut().expect("an object");
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generateName",
            "ownerReferences",
        ] {
            m.remove(k);
        }
        m.insert("name".into(), json!(claim_name(set, t, ordinal)));
        m.insert("namespace".into(), json!(ns));
        for (k, v) in set["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            claim["metadata"]["labels"][k] = v.clone();
        }
        out.push((objects::name(t).to_string(), claim));
    }
    out
}

/// `identityMatches`.
pub fn identity_matches(set: &Value, pod: &Value) -> bool {
    let Some((parent, ord)) = parent_and_ordinal(objects::name(pod)) else {
        return false;
    };
    let labels = &pod["metadata"]["labels"];
    parent == objects::name(set)
        && objects::name(pod) == pod_name(set, ord)
        && objects::namespace(pod) == objects::namespace(set)
        && labels[POD_NAME_LABEL] == objects::name(pod)
        && labels[POD_INDEX_LABEL] == ord.to_string().as_str()
}

/// `storageMatches`: every claim template is mounted from the pod's own claim.
pub fn storage_matches(set: &Value, pod: &Value) -> bool {
    let ord = ordinal(pod);
    if ord < 0 {
        return false;
    }
    let volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    set["spec"]["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|t| {
            volumes.iter().any(|v| {
                v["name"] == objects::name(t)
                    && v["persistentVolumeClaim"]["claimName"] == claim_name(set, t, ord).as_str()
            })
        })
}

/// `newStatefulSetPod` from `template` (a revision's), with `setPodRevision`.
pub fn new_pod(set: &Value, template: &Value, ordinal: i64, revision: &str) -> Value {
    let mut pod = objects::pod_from_template(
        template,
        objects::namespace(set),
        objects::controller_owner_ref(set, &stateful_set()),
    );
    let name = pod_name(set, ordinal);
    pod["metadata"]["name"] = json!(name);
    pod["metadata"]["labels"][POD_NAME_LABEL] = json!(name);
    pod["metadata"]["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
    pod["metadata"]["labels"][REVISION_LABEL] = json!(revision);
    pod["spec"]["hostname"] = json!(name);
    if let Some(svc) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(svc);
    }
    // updateStorage: the claims' volumes first, then the template's others.
    let claims = claims(set, ordinal);
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|(t, c)| json!({"name": t, "persistentVolumeClaim": {"claimName": objects::name(c)}}))
        .collect();
    for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        if !claims.iter().any(|(t, _)| v["name"] == t.as_str()) {
            volumes.push(v.clone());
        }
    }
    if !volumes.is_empty() {
        pod["spec"]["volumes"] = Value::Array(volumes);
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ordinals() {
        assert_eq!(parent_and_ordinal("web-12"), Some(("web", 12)));
        assert_eq!(parent_and_ordinal("my-web-0"), Some(("my-web", 0)));
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        let set = json!({"metadata": {"name": "web", "namespace": "d"}});
        assert!(is_member_of(&set, &json!({"metadata": {"name": "web-3"}})));
        assert!(!is_member_of(
            &set,
            &json!({"metadata": {"name": "webx-3"}})
        ));
    }

    #[test]
    fn pods_get_identity_and_storage() {
        let set = json!({"metadata": {"name": "web", "namespace": "d", "uid": "u"},
            "spec": {"serviceName": "nginx", "selector": {"matchLabels": {"app": "web"}},
                "volumeClaimTemplates": [{"metadata": {"name": "www", "labels": {"tier": "disk"}},
                                          "spec": {"accessModes": ["ReadWriteOnce"]}}]}});
        let template = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"volumes": [{"name": "www", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}});
        let pod = new_pod(&set, &template, 2, "web-abc");
        assert_eq!(pod["metadata"]["name"], "web-2");
        assert_eq!(pod["metadata"]["labels"][POD_NAME_LABEL], "web-2");
        assert_eq!(pod["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "web-abc");
        assert_eq!(pod["metadata"]["labels"]["app"], "web");
        assert_eq!(pod["spec"]["hostname"], "web-2");
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "www", "persistentVolumeClaim": {"claimName": "www-web-2"}},
                   {"name": "cfg", "configMap": {"name": "c"}}])
        );
        assert!(identity_matches(&set, &pod));
        assert!(storage_matches(&set, &pod));
        let c = claims(&set, 2);
        assert_eq!(c[0].1["metadata"]["name"], "www-web-2");
        assert_eq!(
            c[0].1["metadata"]["labels"],
            json!({"tier": "disk", "app": "web"})
        );
    }
}
