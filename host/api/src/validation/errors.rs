//! Building causes with upstream's messages (`field.Error.ErrorBody`), and
//! small helpers to read and name JSON fields.

use serde_json::{Map, Value};

use super::{Cause, CauseReason};

/// A bad value as upstream prints it: strings quoted, numbers bare, other
/// values in a Go-like rendering the caller provides.
pub(crate) enum Bad<'a> {
    Str(&'a str),
    Int(i64),
    Raw(String),
}

impl Bad<'_> {
    fn render(&self) -> String {
        match self {
            Bad::Str(s) => format!("{s:?}"),
            Bad::Int(i) => i.to_string(),
            Bad::Raw(s) => s.clone(),
        }
    }
}

/// Renders a JSON value for an "Invalid value" message.
pub(crate) fn bad_json(value: &Value) -> Bad<'_> {
    match value {
        Value::String(s) => Bad::Str(s),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bad::Int(i),
            None => Bad::Raw(n.to_string()),
        },
        Value::Null => Bad::Raw("null".into()),
        other => Bad::Raw(other.to_string()),
    }
}

/// Renders a string map as Go's `%#v` does, which upstream prints for
/// label mismatches.
pub(crate) fn go_map(map: Option<&Map<String, Value>>) -> String {
    let Some(map) = map.filter(|m| !m.is_empty()) else {
        return "map[string]string(nil)".into();
    };
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let body: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k:?}:{:?}", v.as_str().unwrap_or_default()))
        .collect();
    format!("map[string]string{{{}}}", body.join(", "))
}

/// Collects causes in the order found.
#[derive(Default)]
pub(crate) struct Errs(Vec<Cause>);

impl Errs {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn into_causes(self) -> Vec<Cause> {
        self.0
    }

    fn push(&mut self, field: &str, reason: CauseReason, message: String) {
        self.0.push(Cause {
            reason,
            message,
            field: field.to_string(),
        });
    }

    fn with_detail(head: String, detail: &str) -> String {
        if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        }
    }

    pub(crate) fn required(&mut self, field: &str, detail: &str) {
        let msg = Self::with_detail("Required value".into(), detail);
        self.push(field, CauseReason::Required, msg);
    }

    pub(crate) fn invalid(&mut self, field: &str, value: Bad<'_>, detail: &str) {
        let msg = Self::with_detail(format!("Invalid value: {}", value.render()), detail);
        self.push(field, CauseReason::Invalid, msg);
    }

    pub(crate) fn type_invalid(&mut self, field: &str, got: &str, want: &str) {
        let shown = if field.is_empty() { "body" } else { field };
        let msg =
            format!("Invalid value: {got:?}: {shown} in body must be of type {want}: {got:?}");
        self.push(field, CauseReason::TypeInvalid, msg);
    }

    pub(crate) fn not_supported(&mut self, field: &str, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        let msg = format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        );
        self.push(field, CauseReason::NotSupported, msg);
    }

    pub(crate) fn duplicate(&mut self, field: &str, value: Bad<'_>) {
        let msg = format!("Duplicate value: {}", value.render());
        self.push(field, CauseReason::Duplicate, msg);
    }

    pub(crate) fn not_found(&mut self, field: &str, value: Bad<'_>) {
        let msg = format!("Not found: {}", value.render());
        self.push(field, CauseReason::NotFound, msg);
    }

    pub(crate) fn forbidden(&mut self, field: &str, detail: &str) {
        let msg = Self::with_detail("Forbidden".into(), detail);
        self.push(field, CauseReason::Forbidden, msg);
    }

    pub(crate) fn too_long(&mut self, field: &str, max_bytes: usize) {
        let msg = format!("Too long: may not be more than {max_bytes} bytes");
        self.push(field, CauseReason::TooLong, msg);
    }

    /// A decoding problem that has no field path.
    pub(crate) fn whole_object(&mut self, message: String) {
        self.push("", CauseReason::Invalid, message);
    }

    /// `Invalid value` for each message of a name check.
    pub(crate) fn invalid_each(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for msg in msgs {
            self.invalid(field, Bad::Str(value), &msg);
        }
    }

    /// Upstream's `ValidateNonnegativeField`.
    pub(crate) fn non_negative(&mut self, obj: &Value, key: &str, field: &str) {
        if let Some(v) = int(obj, key).filter(|v| *v < 0) {
            self.invalid(field, Bad::Int(v), "must be greater than or equal to 0");
        }
    }
}

/// `parent.child`, or `child` at the root.
pub(crate) fn child(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// `parent[i]`.
pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// `parent[key]`, upstream's rendering of map keys in paths.
pub(crate) fn key(parent: &str, key: &str) -> String {
    format!("{parent}[{key}]")
}

pub(crate) fn string<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

/// A string field, "" when absent (Go's zero value).
pub(crate) fn str_or_empty<'a>(obj: &'a Value, key: &str) -> &'a str {
    string(obj, key).unwrap_or_default()
}

pub(crate) fn int(obj: &Value, key: &str) -> Option<i64> {
    obj.get(key).and_then(Value::as_i64)
}

pub(crate) fn array<'a>(obj: &'a Value, key: &str) -> &'a [Value] {
    obj.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

pub(crate) fn object<'a>(obj: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    obj.get(key).and_then(Value::as_object)
}
