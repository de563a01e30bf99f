//! Where a pod may run, on JSON objects: tolerations against taints and the
//! required node affinity (`nodeSelector` and `nodeSelectorTerms`), with
//! upstream's semantics. The typed [`crate::taints`] and [`crate::selectors`]
//! do the same for the scheduler's records.

use serde_json::{json, Map, Value};

/// `metav1.ObjectNameField`: the one field a `matchFields` requirement may name.
pub const NODE_NAME_FIELD: &str = "metadata.name";

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// Upstream's `Toleration.ToleratesTaint`: the same effect (any when the
/// toleration names none), the same key (any when it names none), and the
/// value equal for `Equal` (or no operator); `Exists` ignores the value.
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = text(toleration, "effect");
    if !effect.is_empty() && effect != text(taint, "effect") {
        return false;
    }
    let key = text(toleration, "key");
    if !key.is_empty() && key != text(taint, "key") {
        return false;
    }
    match text(toleration, "operator") {
        "" | "Equal" => text(toleration, "value") == text(taint, "value"),
        "Exists" => true,
        _ => false,
    }
}

/// Whether some taint of the node (`spec.taints`) with one of `effects` is
/// tolerated by none of `tolerations`.
pub fn has_untolerated(node: &Value, tolerations: &[Value], effects: &[&str]) -> bool {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| effects.contains(&text(t, "effect")))
        .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn label<'a>(labels: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    labels.get(key).and_then(Value::as_str)
}

/// One `NodeSelectorRequirement` against a set of labels (or fields): `In`,
/// `NotIn`, `Exists`, `DoesNotExist`, and `Gt`/`Lt` on integers (a value
/// that is not one never matches); an unknown operator matches nothing.
pub fn requirement_matches(req: &Value, labels: &Map<String, Value>) -> bool {
    let value = label(labels, text(req, "key"));
    let values: Vec<&str> = req["values"]
        .as_array()
        .map(|vs| vs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match text(req, "operator") {
        "In" => value.is_some_and(|v| values.contains(&v)),
        "NotIn" => value.is_none_or(|v| !values.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values.as_slice()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if op == "Gt" => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
        _ => false,
    }
}

/// One `NodeSelectorTerm` against a node's labels and name: every
/// `matchExpressions` and `matchFields` requirement holds; an empty term
/// matches nothing, as upstream.
pub fn term_matches(term: &Value, labels: &Map<String, Value>, node_name: &str) -> bool {
    let exprs = term["matchExpressions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let fields_req = term["matchFields"].as_array().cloned().unwrap_or_default();
    if exprs.is_empty() && fields_req.is_empty() {
        return false;
    }
    let mut fields = Map::new();
    fields.insert(NODE_NAME_FIELD.into(), json!(node_name));
    exprs.iter().all(|r| requirement_matches(r, labels))
        && fields_req.iter().all(|r| requirement_matches(r, &fields))
}

/// Upstream's `GetRequiredNodeAffinity(pod).Match(node)`: the pod spec's
/// `nodeSelector` and its required node affinity (any of the terms) match
/// the node.
pub fn fits_node_affinity(spec: &Value, node: &Value) -> bool {
    let labels = crate::objects::labels(node);
    let node_name = crate::objects::name(node);
    if let Some(sel) = spec["nodeSelector"].as_object() {
        if !sel.iter().all(|(k, v)| label(&labels, k) == v.as_str()) {
            return false;
        }
    }
    let required =
        &spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    if required.is_null() {
        return true;
    }
    required["nodeSelectorTerms"]
        .as_array()
        .is_some_and(|terms| terms.iter().any(|t| term_matches(t, &labels, node_name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_against_taints() {
        let taint = json!({"key": "k", "value": "v", "effect": "NoExecute"});
        assert!(tolerates(&json!({"key": "k", "value": "v"}), &taint));
        assert!(tolerates(
            &json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}),
            &taint
        ));
        assert!(tolerates(&json!({"operator": "Exists"}), &taint));
        assert!(!tolerates(&json!({"key": "k", "value": "w"}), &taint));
        assert!(!tolerates(&json!({"key": "k", "operator": "Gt"}), &taint));
        assert!(!tolerates(
            &json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"}),
            &taint
        ));
        let node =
            json!({"spec": {"taints": [taint, {"key": "soft", "effect": "PreferNoSchedule"}]}});
        assert!(has_untolerated(&node, &[], &["NoExecute"]));
        assert!(!has_untolerated(&node, &[], &["NoSchedule"]));
        assert!(!has_untolerated(
            &node,
            &[json!({"key": "k", "operator": "Exists"})],
            &["NoSchedule", "NoExecute"]
        ));
    }

    #[test]
    fn node_affinity() {
        let n = json!({"metadata": {"name": "n1", "labels": {"disk": "ssd", "gen": "5"}}});
        assert!(fits_node_affinity(&json!({}), &n));
        assert!(fits_node_affinity(
            &json!({"nodeSelector": {"disk": "ssd"}}),
            &n
        ));
        assert!(!fits_node_affinity(
            &json!({"nodeSelector": {"disk": "hdd"}}),
            &n
        ));
        let aff = |term: Value| {
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                {"nodeSelectorTerms": [term]}}}})
        };
        let expr = |key: &str, op: &str, values: Value| {
            aff(json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]}))
        };
        assert!(fits_node_affinity(&expr("gen", "Gt", json!(["4"])), &n));
        assert!(!fits_node_affinity(&expr("gen", "Lt", json!(["4"])), &n));
        assert!(!fits_node_affinity(&expr("disk", "Gt", json!(["4"])), &n));
        assert!(!fits_node_affinity(
            &expr("disk", "NotIn", json!(["ssd"])),
            &n
        ));
        assert!(fits_node_affinity(
            &expr("zone", "DoesNotExist", json!([])),
            &n
        ));
        assert!(fits_node_affinity(
            &aff(
                json!({"matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": ["n1"]}]})
            ),
            &n
        ));
        assert!(!fits_node_affinity(
            &aff(
                json!({"matchFields": [{"key": NODE_NAME_FIELD, "operator": "In", "values": ["n2"]}]})
            ),
            &n
        ));
        assert!(!fits_node_affinity(&aff(json!({})), &n));
    }
}
