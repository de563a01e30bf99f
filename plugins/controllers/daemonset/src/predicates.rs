//! Whether a node should run a DaemonSet's pod: upstream's `NodeShouldRunDaemonPod`
//! (node selector, required node affinity, and NoSchedule/NoExecute taints
//! against the template's tolerations plus the ones every daemon pod gets),
//! and the node affinity the controller pins each pod to its node with.
//! Matching itself is the SDK's `placement`.

use serde_json::{json, Value};
use trellis_sdk::placement::{fits_node_affinity, has_untolerated, NODE_NAME_FIELD};

/// The tolerations upstream's `AddOrUpdateDaemonPodTolerations` gives every
/// daemon pod (network-unavailable only to host-network pods).
pub fn default_tolerations(host_network: bool) -> Vec<Value> {
    let mut out = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        out.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    out.into_iter()
        .map(|(key, effect)| json!({"key": key, "operator": "Exists", "effect": effect}))
        .collect()
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Upstream's `MatchToleration`: the same key, operator, value and effect
/// (operator "" counts as Equal).
fn same_toleration(a: &Value, b: &Value) -> bool {
    let op = |t: &Value| match text(t, "operator") {
        "" => "Equal".to_string(),
        o => o.to_string(),
    };
    text(a, "key") == text(b, "key")
        && op(a) == op(b)
        && text(a, "value") == text(b, "value")
        && text(a, "effect") == text(b, "effect")
}

/// Add the default daemon tolerations to a pod spec (upstream's
/// `AddOrUpdateDaemonPodTolerations`), keeping the ones it already has.
pub fn add_daemon_tolerations(spec: &mut Value) {
    let host_network = spec["hostNetwork"].as_bool() == Some(true);
    let mut tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for d in default_tolerations(host_network) {
        if !tols.iter().any(|t| same_toleration(t, &d)) {
            tols.push(d);
        }
    }
    spec["tolerations"] = Value::Array(tols);
}

/// Upstream's `NodeShouldRunDaemonPod`: `(should_run, should_continue_running)`.
/// A pod should run where the template's node selector and required affinity
/// match and every NoSchedule/NoExecute taint is tolerated; an existing one
/// keeps running unless a NoExecute taint is not tolerated.
pub fn node_should_run(node: &Value, template_spec: &Value) -> (bool, bool) {
    if !fits_node_affinity(template_spec, node) {
        return (false, false);
    }
    let mut spec = template_spec.clone();
    add_daemon_tolerations(&mut spec);
    let tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
    let fits_taints = !has_untolerated(node, &tols, &["NoSchedule", "NoExecute"]);
    let keeps_running = !has_untolerated(node, &tols, &["NoExecute"]);
    (fits_taints, keeps_running)
}

/// Upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node
/// affinity becomes exactly one term, `metadata.name In [node]`, so that the
/// scheduler places the pod on that node; preferred terms and pod (anti-)affinity stay.
pub fn pin_to_node(affinity: &Value, node_name: &str) -> Value {
    let terms = json!([{"matchFields": [
        {"key": NODE_NAME_FIELD, "operator": "In", "values": [node_name]}]}]);
    let mut out = if affinity.is_object() {
        affinity.clone()
    } else {
        json!({})
    };
    if !out["nodeAffinity"].is_object() {
        out["nodeAffinity"] = json!({});
    }
    let na = &mut out["nodeAffinity"];
    if !na["requiredDuringSchedulingIgnoredDuringExecution"].is_object() {
        na["requiredDuringSchedulingIgnoredDuringExecution"] = json!({});
    }
    na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] = terms;
    out
}

/// Upstream's `GetTargetNodeName`: `spec.nodeName` once scheduled, else the
/// node its required affinity pins it to (`metadata.name In [one value]`).
pub fn target_node(pod: &Value) -> Option<String> {
    if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
        .as_array()?;
    for term in terms {
        for f in term["matchFields"].as_array().into_iter().flatten() {
            if f["key"] == NODE_NAME_FIELD && f["operator"] == "In" {
                return match f["values"].as_array().map(Vec::as_slice) {
                    Some([v]) => v.as_str().map(String::from),
                    _ => None,
                };
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, taints: Value) -> Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn taints_and_default_tolerations() {
        let spec = json!({});
        let t = |key: &str, effect: &str| node(json!({}), json!([{"key": key, "effect": effect}]));
        assert_eq!(
            node_should_run(&t("node.kubernetes.io/unschedulable", "NoSchedule"), &spec),
            (true, true)
        );
        assert_eq!(
            node_should_run(&t("node.kubernetes.io/not-ready", "NoExecute"), &spec),
            (true, true)
        );
        assert_eq!(
            node_should_run(&t("dedicated", "NoSchedule"), &spec),
            (false, true)
        );
        assert_eq!(
            node_should_run(&t("dedicated", "NoExecute"), &spec),
            (false, false)
        );
        assert_eq!(
            node_should_run(&t("dedicated", "PreferNoSchedule"), &spec),
            (true, true)
        );
        assert_eq!(
            node_should_run(
                &t("node.kubernetes.io/network-unavailable", "NoSchedule"),
                &spec
            ),
            (false, true)
        );
        assert_eq!(
            node_should_run(
                &t("node.kubernetes.io/network-unavailable", "NoSchedule"),
                &json!({"hostNetwork": true})
            ),
            (true, true)
        );
        let tolerant = json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "", "effect": "NoSchedule"}]});
        assert_eq!(
            node_should_run(&t("dedicated", "NoSchedule"), &tolerant),
            (true, true)
        );
        let mut s = json!({"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}]});
        add_daemon_tolerations(&mut s);
        assert_eq!(s["tolerations"].as_array().unwrap().len(), 6);
    }

    #[test]
    fn pinning_replaces_required_terms_only() {
        let aff = json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "a", "operator": "Exists"}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]}});
        let p = pin_to_node(&aff, "n2");
        let pod = json!({"spec": {"affinity": p}});
        assert_eq!(target_node(&pod).as_deref(), Some("n2"));
        assert_eq!(
            p["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert!(p["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
        assert_eq!(
            target_node(&json!({"spec": {"affinity": pin_to_node(&Value::Null, "x")}})).as_deref(),
            Some("x")
        );
        assert_eq!(
            target_node(&json!({"spec": {"nodeName": "n9", "affinity": p}})).as_deref(),
            Some("n9")
        );
        assert_eq!(target_node(&json!({"spec": {}})), None);
    }
}
