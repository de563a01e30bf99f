//! Upstream's taint eviction controller (the "NoExecute taint manager"):
//! pods on a node with a `NoExecute` taint they do not tolerate are deleted
//! at once; pods tolerating it for `tolerationSeconds` are deleted when that
//! time has passed; pods tolerating it without a limit stay.
//!
//! Upstream keeps a timer per pod started when it first sees the pod and the
//! taint together. Here nothing is remembered between reconciles, so the
//! timer starts at the later of the taint's `timeAdded` (the pod's
//! creation when the taint has none) and the pod's creation.

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::pod;
use trellis_sdk::controller::*;
use trellis_sdk::objects;
use trellis_sdk::placement::tolerates;

use crate::{internal, TAINT_NOT_READY, TAINT_UNREACHABLE};

/// The component named in eviction events (upstream's since 1.29).
pub const EVICTION_COMPONENT: &str = "taint-eviction-controller";

/// The pod's tolerations plus those upstream's DefaultTolerationSeconds
/// admission would have added: not-ready and unreachable `NoExecute` for
/// `seconds`, each unless the pod already tolerates that taint key.
pub fn effective_tolerations(pod: &Value, seconds: i64) -> Vec<Value> {
    let mut tols: Vec<Value> = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let covers = |tols: &[Value], key: &str| {
        tols.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        })
    };
    for key in [TAINT_NOT_READY, TAINT_UNREACHABLE] {
        if !covers(&tols, key) {
            tols.push(
                json!({"key": key, "operator": "Exists", "effect": "NoExecute",
                             "tolerationSeconds": seconds}),
            );
        }
    }
    tols
}

/// When the pod must go (Unix ms): `Some(t)` with `t <= now` for at once,
/// `None` when every `NoExecute` taint is tolerated forever.
pub fn eviction_time(pod: &Value, taints: &[Value], default_seconds: i64) -> Option<i64> {
    let tols = effective_tolerations(pod, default_seconds);
    let created =
        objects::parse_rfc3339(pod["metadata"]["creationTimestamp"].as_str().unwrap_or(""))
            .unwrap_or(0);
    let mut at: Option<i64> = None;
    for taint in taints.iter().filter(|t| t["effect"] == "NoExecute") {
        // upstream's GetMatchingTolerations: the first toleration that matches
        let deadline = match tols.iter().find(|t| tolerates(t, taint)) {
            None => i64::MIN,
            Some(t) => match t["tolerationSeconds"].as_i64() {
                None => continue,
                Some(s) => {
                    let added = taint["timeAdded"]
                        .as_str()
                        .and_then(objects::parse_rfc3339)
                        .unwrap_or(created);
                    (added.max(created) + s.max(0)) * 1000
                }
            },
        };
        at = Some(at.map_or(deadline, |a| a.min(deadline)));
    }
    at
}

/// Evict the pod when its time has come; otherwise the ms until it will.
/// Pods already being deleted are left alone.
pub fn evict_if_due(
    api: &impl Api,
    pod_obj: &Value,
    taints: &[Value],
    default_seconds: i64,
) -> Result<Option<i64>, PluginError> {
    if objects::is_deleting(pod_obj) {
        return Ok(None);
    }
    let Some(at) = eviction_time(pod_obj, taints, default_seconds) else {
        return Ok(None);
    };
    let now = api.now_millis();
    if at > now {
        return Ok(Some(at - now));
    }
    let (ns, name) = (objects::namespace(pod_obj), objects::name(pod_obj));
    record_event(
        api,
        pod_obj,
        &pod(),
        "Normal",
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{name}"),
        EVICTION_COMPONENT,
    );
    // upstream's addConditionAndDeletePod
    let conds = pod_obj["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !conds
        .iter()
        .any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True")
    {
        let mut p = pod_obj.clone();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "DisruptionTarget")
            .collect();
        conds.push(json!({
            "type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": objects::rfc3339(api.now()),
        }));
        p["status"]["conditions"] = json!(conds);
        match api.update_status(&pod(), ns, &p) {
            Ok(_) => {}
            Err(ObjectError::NotFound) => return Ok(None),
            Err(e) => return Err(internal(e)),
        }
    }
    match api.delete(&pod(), ns, name, "") {
        Ok(()) | Err(ObjectError::NotFound) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tolerations() {
        let none = json!({"spec": {}});
        assert_eq!(effective_tolerations(&none, 300).len(), 2);
        let all = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(effective_tolerations(&all, 300).len(), 1);
        let one = json!({"spec": {"tolerations": [{"key": TAINT_UNREACHABLE, "operator": "Exists",
                                                   "effect": "NoExecute", "tolerationSeconds": 5}]}});
        let tols = effective_tolerations(&one, 300);
        assert_eq!(tols.len(), 2);
        assert_eq!(tols[1]["key"], TAINT_NOT_READY);
    }

    #[test]
    fn eviction_times() {
        let pod = json!({"metadata": {"creationTimestamp": objects::rfc3339(1000)}, "spec": {}});
        let unreachable = json!({"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": objects::rfc3339(2000)});
        assert_eq!(
            eviction_time(&pod, std::slice::from_ref(&unreachable), 300),
            Some(2_300_000)
        );
        let other = json!({"key": "maintenance", "effect": "NoExecute"});
        assert_eq!(
            eviction_time(&pod, &[unreachable.clone(), other], 300),
            Some(i64::MIN)
        );
        let forever = json!({"metadata": {}, "spec": {"tolerations": [{"operator": "Exists"}]}});
        assert_eq!(
            eviction_time(&forever, std::slice::from_ref(&unreachable), 300),
            None
        );
        // a pod that came after the taint counts from its creation
        let late = json!({"metadata": {"creationTimestamp": objects::rfc3339(5000)}, "spec": {}});
        assert_eq!(eviction_time(&late, &[unreachable], 300), Some(5_300_000));
        let no_execute_free = json!({"key": "x", "effect": "NoSchedule"});
        assert_eq!(eviction_time(&pod, &[no_execute_free], 300), None);
    }
}
