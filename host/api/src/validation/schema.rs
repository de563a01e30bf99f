//! Decoding against the kind's schema: walking the object and the schema
//! together gives type errors and unknown fields with full paths, which a
//! plain serde decode (line and column only) cannot.

use serde_json::Value;

use super::errors::{child, index, key, Errs};
use super::Cause;
use crate::openapi::{self, REF_PREFIX};
use crate::registry::Kind;

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// The outcome of decoding.
pub(crate) struct Decoded {
    /// Type errors; the object must be refused.
    pub(crate) causes: Vec<Cause>,
    /// Paths of unknown fields, already removed from the object.
    pub(crate) unknown: Vec<String>,
}

/// Checks `obj` against `kind`'s schema, dropping unknown fields and null
/// members of structs (Go decodes null as the zero value, which is then
/// omitted), and turning numeric quantities into strings.
pub(crate) fn check(kind: &Kind, obj: &mut Value) -> Decoded {
    let mut errs = Errs::default();
    let mut unknown = Vec::new();
    let defs = openapi::definitions();
    let name = openapi::schema_name(kind);
    if !obj.is_object() {
        errs.type_invalid("", type_name(obj), "object");
    } else if let Some(schema) = defs.get(&name) {
        walk(obj, schema, "", &mut errs, &mut unknown);
    }

    // The schema walk cannot see formats the types enforce (timestamps,
    // base64 data); decoding catches those. It needs the apiVersion and kind
    // the server sets, so objects without them are left to the server.
    let typed = obj.get("apiVersion").and_then(Value::as_str) == Some(&kind.api_version())
        && obj.get("kind").and_then(Value::as_str) == Some(kind.kind);
    if let Some(builtin) = openapi::builtin(kind).filter(|_| errs.is_empty() && typed) {
        if let Err(e) = builtin.decode(obj) {
            let msg = format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                kind.kind, kind.version, kind.kind
            );
            errs.whole_object(msg);
        }
    }
    Decoded {
        causes: errs.into_causes(),
        unknown,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Follows `$ref` and single-element `allOf` (how a reference with a
/// description is written) to the schema that describes the value;
/// returns it with the last referenced name.
fn resolve(mut schema: &'static Value) -> (&'static Value, Option<&'static str>) {
    let defs = openapi::definitions();
    let mut name = None;
    for _ in 0..16 {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let Some(target) = r
                .strip_prefix(REF_PREFIX)
                .and_then(|n| defs.get_key_value(n))
            else {
                break;
            };
            name = Some(target.0.as_str());
            schema = target.1;
        } else if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            schema = only;
        } else {
            break;
        }
    }
    (schema, name)
}

fn walk(
    v: &mut Value,
    schema: &'static Value,
    path: &str,
    errs: &mut Errs,
    unknown: &mut Vec<String>,
) {
    if v.is_null() {
        return;
    }
    let (schema, name) = resolve(schema);
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        match v {
            Value::Number(n) if name == Some(QUANTITY) => *v = Value::String(n.to_string()),
            Value::String(_) => {}
            Value::Number(n) if !n.is_f64() => {}
            other => errs.type_invalid(path, type_name(other), "string"),
        }
        return;
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let want = schema.get("type").and_then(Value::as_str);
    match (want, v) {
        (Some("object"), Value::Object(map)) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let field = child(path, &k);
                    if map[&k].is_null() {
                        map.remove(&k);
                        continue;
                    }
                    match props.get(&k) {
                        Some(sub) => {
                            if let Some(value) = map.get_mut(&k) {
                                walk(value, sub, &field, errs, unknown);
                            }
                        }
                        None if preserve => {}
                        None => {
                            unknown.push(field);
                            map.remove(&k);
                        }
                    }
                }
            } else if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (k, item) in map.iter_mut() {
                    walk(item, sub, &key(path, k), errs, unknown);
                }
            }
        }
        (Some("array"), Value::Array(items)) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, sub, &index(path, i), errs, unknown);
                }
            }
        }
        (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("number"), Value::Number(_)) => {}
        (Some("integer"), Value::Number(n)) if !n.is_f64() => {}
        (Some(want), other) => errs.type_invalid(path, type_name(other), want),
        (None, _) => {}
    }
}
