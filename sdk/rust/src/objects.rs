//! Kubernetes objects as JSON: metadata accessors, owner references, label
//! selectors (`metav1.LabelSelector`), pod predicates and timestamps, with
//! upstream's semantics, for controllers and admission plugins.

use serde_json::{json, Map, Value};

pub use trellis_types::owners::{
    controller_name, controller_ref, group_of, is_owned_by, owner_names,
};
pub use trellis_types::time::{parse_rfc3339, rfc3339};

/// A Go duration (`"500ms"`, `"1m30s"`, `"0"`; surrounding blanks ignored) in
/// whole milliseconds, rounded to the nearest; see [`crate::duration::parse`].
pub fn duration_ms(s: &str) -> Result<u64, String> {
    let d = crate::duration::parse(s.trim())?;
    Ok(u64::try_from((d.as_nanos() + 500_000) / 1_000_000).unwrap_or(u64::MAX))
}

/// A status (or any object) with null, zero, empty-list and empty-object
/// fields dropped, as Go's `omitempty` writes it: compare two of these to
/// tell whether a status changed, whether or not the stored one kept zeros.
pub fn omit_empty(status: &Value) -> Map<String, Value> {
    status
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| match v {
            Value::Null => false,
            Value::Number(n) => n.as_i64() != Some(0),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

use crate::KindRef;

/// `metadata.name` ("" when missing).
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// `metadata.namespace` ("" when missing).
pub fn namespace(obj: &Value) -> &str {
    obj["metadata"]["namespace"].as_str().unwrap_or("")
}

/// `metadata.uid` ("" when missing).
pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// `metadata.generation` (0 when missing).
pub fn generation(obj: &Value) -> i64 {
    obj["metadata"]["generation"].as_i64().unwrap_or(0)
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    !obj["metadata"]["deletionTimestamp"].is_null()
}

/// `metadata.labels` (empty when missing).
pub fn labels(obj: &Value) -> Map<String, Value> {
    obj["metadata"]["labels"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// One annotation.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj["metadata"]["annotations"][key].as_str()
}

/// Whether `metadata.finalizers` holds `finalizer`.
pub fn has_finalizer(obj: &Value, finalizer: &str) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// An owner reference to `owner` (of kind `kind`), marked as its controller
/// and blocking the owner's foreground deletion, as workload controllers set it.
pub fn controller_owner_ref(owner: &Value, kind: &KindRef) -> Value {
    json!({
        "apiVersion": crate::controller::kinds::api_version(kind),
        "kind": kind.kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether the object's controlling owner is the object with `uid`.
pub fn is_controlled_by(obj: &Value, owner_uid: &str) -> bool {
    controller_ref(obj).is_some_and(|r| r["uid"] == owner_uid)
}

/// Why a `metav1.LabelSelector` could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError(pub String);

impl core::fmt::Display for SelectorError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn label_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Whether a `metav1.LabelSelector` (`matchLabels`, `matchExpressions` with
/// In, NotIn, Exists, DoesNotExist) matches `labels`. An empty selector
/// matches everything; a `null` one nothing (as upstream's
/// `LabelSelectorAsSelector`). An unknown operator is an error.
pub fn selector_matches(
    selector: &Value,
    labels: &Map<String, Value>,
) -> Result<bool, SelectorError> {
    if selector.is_null() {
        return Ok(false);
    }
    let get = |k: &str| labels.get(k).and_then(label_text);
    if let Some(ml) = selector["matchLabels"].as_object() {
        for (k, v) in ml {
            if get(k) != label_text(v) {
                return Ok(false);
            }
        }
    }
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<String> = e["values"]
            .as_array()
            .map(|vs| vs.iter().filter_map(label_text).collect())
            .unwrap_or_default();
        let v = get(key);
        let ok = match e["operator"].as_str().unwrap_or("") {
            "In" => v.is_some_and(|v| values.contains(&v)),
            "NotIn" => v.is_none_or(|v| !values.contains(&v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            other => {
                return Err(SelectorError(format!(
                    "{other:?} is not a valid label selector operator"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether the object's labels match a `metav1.LabelSelector` (see [`selector_matches`]).
pub fn object_matches(selector: &Value, obj: &Value) -> Result<bool, SelectorError> {
    selector_matches(selector, &labels(obj))
}

/// A `metav1.LabelSelector` of only `matchLabels` in the string syntax
/// (`a=b,c=d`) for [`Api::list`](crate::controller::Api::list); `None` when it has
/// expressions (list with "" and filter with [`object_matches`]).
pub fn selector_string(selector: &Value) -> Option<String> {
    if selector["matchExpressions"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    let ml = selector["matchLabels"].as_object()?;
    Some(
        ml.iter()
            .map(|(k, v)| format!("{k}={}", label_text(v).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// A pod's `Ready` condition is `True`.
pub fn pod_is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// When the pod's `Ready` condition last turned `True` (Unix seconds).
pub fn pod_ready_since(pod: &Value) -> Option<i64> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready" && c["status"] == "True")
        .and_then(|c| parse_rfc3339(c["lastTransitionTime"].as_str()?))
}

/// Upstream's `IsPodAvailable`: ready for at least `min_ready_seconds` at `now`.
pub fn pod_is_available(pod: &Value, min_ready_seconds: i64, now: i64) -> bool {
    pod_is_ready(pod)
        && (min_ready_seconds <= 0
            || pod_ready_since(pod).is_some_and(|t| t + min_ready_seconds <= now))
}

/// `status.phase` ("" when missing).
pub fn pod_phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or("")
}

/// Upstream's `IsPodActive`: not Succeeded, not Failed, not being deleted.
pub fn pod_is_active(pod: &Value) -> bool {
    !matches!(pod_phase(pod), "Succeeded" | "Failed") && !is_deleting(pod)
}

/// Object metadata for a new object made from a template: its labels and
/// annotations, the namespace and an owner reference.
pub fn pod_from_template(template: &Value, namespace: &str, owner_ref: Value) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let m = pod["metadata"].as_object_mut().expect("an object");
    for k in [
        "name",
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "generateName",
    ] {
        m.remove(k);
    }
    m.insert("namespace".into(), json!(namespace));
    m.insert("ownerReferences".into(), json!([owner_ref]));
    pod
}

/// Kubernetes' `ComputeHash`-like stable hash of a JSON value (FNV-1a over its
/// canonical text), as a short lowercase alphanumeric string for names and labels.
pub fn hash_string(v: &Value) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in v.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // upstream's SafeEncodeString alphabet: no vowels, no 0, 1, 3
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = String::new();
    let mut n = h;
    loop {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
        if n == 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let l = labels(&json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}}));
        let t = |s: Value| selector_matches(&s, &l).unwrap();
        assert!(t(json!({})));
        assert!(t(json!({"matchLabels": {"app": "web"}})));
        assert!(!t(json!({"matchLabels": {"app": "db"}})));
        assert!(t(
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]})
        ));
        assert!(!t(
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]})
        ));
        assert!(t(
            json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]})
        ));
        assert!(!t(
            json!({"matchExpressions": [{"key": "x", "operator": "Exists"}]})
        ));
        assert!(!t(Value::Null));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "x", "operator": "Gt"}]}),
            &l
        )
        .is_err());
        assert_eq!(
            selector_string(&json!({"matchLabels": {"a": "b", "c": "d"}})).as_deref(),
            Some("a=b,c=d")
        );
    }

    #[test]
    fn pod_availability() {
        let pod = json!({"status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": rfc3339(1000)}]}});
        assert!(pod_is_ready(&pod));
        assert!(pod_is_available(&pod, 0, 1000));
        assert!(!pod_is_available(&pod, 10, 1005));
        assert!(pod_is_available(&pod, 10, 1010));
        assert!(pod_is_active(&pod));
        assert!(!pod_is_active(&json!({"status": {"phase": "Failed"}})));
    }

    #[test]
    fn durations_in_millis() {
        assert_eq!(duration_ms("40s"), Ok(40_000));
        assert_eq!(duration_ms(" 1m0s "), Ok(60_000));
        assert_eq!(duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(duration_ms("1500us"), Ok(2));
        assert_eq!(duration_ms("0"), Ok(0));
        assert!(duration_ms("5").is_err());
        assert!(duration_ms("s").is_err());
        assert!(duration_ms("").is_err());
    }

    #[test]
    fn omitempty() {
        let s = omit_empty(&json!({"replicas": 0, "a": null, "b": [], "c": {}, "d": 1, "e": ""}));
        assert_eq!(Value::Object(s), json!({"d": 1, "e": ""}));
    }

    #[test]
    fn hashes_are_stable_and_differ() {
        let a = hash_string(&json!({"a": 1}));
        assert_eq!(a, hash_string(&json!({"a": 1})));
        assert_ne!(a, hash_string(&json!({"a": 2})));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
