//! Edits to the request's object, recorded as an RFC 6902 JSON patch while
//! they are applied to a working copy (later LimitRanges and the validation
//! see the defaulted object, as upstream's in-place mutation does).

use serde_json::{json, Value};

/// RFC 6901: `~` → `~0`, `/` → `~1`.
pub fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The patch recorded so far.
#[derive(Debug, Default)]
pub struct Patch {
    ops: Vec<Value>,
}

impl Patch {
    /// Set `path` (unescaped segments; numbers index existing arrays) to
    /// `value` in `doc`, creating missing or null objects on the way, and
    /// record each step as an `add`.
    pub fn set(&mut self, doc: &mut Value, path: &[&str], value: Value) {
        let mut cur = doc;
        let mut pointer = String::new();
        for (i, seg) in path.iter().enumerate() {
            pointer.push('/');
            pointer.push_str(&escape(seg));
            let last = i + 1 == path.len();
            if let Value::Array(items) = cur {
                let index: usize = seg.parse().expect("array index into an existing item");
                cur = &mut items[index];
                continue;
            }
            if !cur.is_object() {
                // Only reachable for a non-object root; callers pass objects.
                *cur = json!({});
            }
            let map = cur.as_object_mut().expect("made an object above");
            if last {
                map.insert(seg.to_string(), value.clone());
                self.ops
                    .push(json!({"op": "add", "path": pointer, "value": value}));
                return;
            }
            let child = map.entry(seg.to_string()).or_insert(Value::Null);
            if !(child.is_object() || child.is_array()) {
                *child = json!({});
                self.ops
                    .push(json!({"op": "add", "path": pointer.clone(), "value": {}}));
            }
            cur = child;
        }
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The patch as JSON text.
    pub fn to_json(&self) -> String {
        Value::Array(self.ops.clone()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_and_escapes_keys() {
        let mut doc = json!({"spec": {"containers": [{"name": "a"}]}, "metadata": {}});
        let mut p = Patch::default();
        p.set(
            &mut doc,
            &[
                "spec",
                "containers",
                "0",
                "resources",
                "limits",
                "nvidia.com/gpu",
            ],
            json!("1"),
        );
        p.set(
            &mut doc,
            &["metadata", "annotations", "kubernetes.io/limit-ranger"],
            json!("x"),
        );
        assert_eq!(
            p.to_json(),
            json!([
                {"op": "add", "path": "/spec/containers/0/resources", "value": {}},
                {"op": "add", "path": "/spec/containers/0/resources/limits", "value": {}},
                {"op": "add", "path": "/spec/containers/0/resources/limits/nvidia.com~1gpu", "value": "1"},
                {"op": "add", "path": "/metadata/annotations", "value": {}},
                {"op": "add", "path": "/metadata/annotations/kubernetes.io~1limit-ranger", "value": "x"},
            ])
            .to_string()
        );
        assert_eq!(
            doc["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            "1"
        );
    }
}
