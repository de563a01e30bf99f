//! Defaulting and validation of objects before they are stored, as the
//! Kubernetes API server does: decode against the kind's schema (unknown
//! fields and type errors), fill in upstream's defaults, then check the
//! rules upstream checks, with its field paths and messages, so that
//! clients and users see the errors they already know.
//!
//! ```
//! use trellis_api::registry;
//! use trellis_api::validation::{prepare, Operation};
//!
//! let pod = registry::by_kind("", "Pod").unwrap();
//! let mut obj = serde_json::json!({
//!     "apiVersion": "v1", "kind": "Pod",
//!     "metadata": { "name": "web", "namespace": "default" },
//!     "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }] },
//! });
//! let warnings = prepare(pod, &mut obj, None, Operation::Create, true).unwrap();
//! assert!(warnings.is_empty());
//! assert_eq!(obj["spec"]["restartPolicy"], "Always");
//! ```

mod defaults;
mod errors;
mod meta;
pub(crate) mod names;
mod objects;
mod pod;
mod quantity;
mod schema;

use serde::Serialize;
use serde_json::Value;

use crate::registry::Kind;

pub use names::validate_name;

/// Whether an object is being created or replaces a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new object (POST, or PUT/apply creating one).
    Create,
    /// A replacement of a stored object (PUT, PATCH).
    Update,
}

/// Upstream's `metav1.CauseType` for field errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CauseReason {
    /// A required field is missing or empty.
    #[serde(rename = "FieldValueRequired")]
    Required,
    /// A value is malformed or out of range.
    #[serde(rename = "FieldValueInvalid")]
    Invalid,
    /// A value is not one of an enumeration.
    #[serde(rename = "FieldValueNotSupported")]
    NotSupported,
    /// A value that must be unique is repeated.
    #[serde(rename = "FieldValueDuplicate")]
    Duplicate,
    /// A value is longer than allowed.
    #[serde(rename = "FieldValueTooLong")]
    TooLong,
    /// A field may not be set or changed.
    #[serde(rename = "FieldValueForbidden")]
    Forbidden,
    /// A value refers to something that does not exist.
    #[serde(rename = "FieldValueNotFound")]
    NotFound,
    /// A value has the wrong JSON type.
    #[serde(rename = "FieldValueTypeInvalid")]
    TypeInvalid,
}

/// One problem with one field, as upstream's `metav1.StatusCause`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// Upstream's cause type.
    pub reason: CauseReason,
    /// The message without the field, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.containers[0].image`; "" for the whole object.
    pub field: String,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Why an object may not be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The object breaks one or more rules: a 422 `Invalid` status whose
    /// details carry `group`, `kind`, `name` and `causes`.
    #[error("{} {:?} is invalid: {}", qualified(.group, .kind), .name, join(.causes))]
    Invalid {
        /// The kind, e.g. "Deployment".
        kind: String,
        /// The kind's API group, "" for core.
        group: String,
        /// The object's name.
        name: String,
        /// Every problem found, in the order found.
        causes: Vec<Cause>,
    },
    /// Unknown fields were sent with `fieldValidation=Strict`: a 400
    /// `BadRequest`, as upstream's strict decoding error.
    #[error("strict decoding error: {}", unknown_fields(.fields))]
    StrictDecoding {
        /// Full paths of the unknown fields, e.g. `spec.containers[0].imagee`.
        fields: Vec<String>,
    },
}

impl ValidationError {
    /// The HTTP status code of the error's `Status`.
    pub fn code(&self) -> u16 {
        match self {
            ValidationError::Invalid { .. } => 422,
            ValidationError::StrictDecoding { .. } => 400,
        }
    }

    /// The `Status` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ValidationError::Invalid { .. } => "Invalid",
            ValidationError::StrictDecoding { .. } => "BadRequest",
        }
    }

    /// The field causes (empty for strict decoding errors, as upstream).
    pub fn causes(&self) -> &[Cause] {
        match self {
            ValidationError::Invalid { causes, .. } => causes,
            ValidationError::StrictDecoding { .. } => &[],
        }
    }
}

fn qualified(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    }
}

/// Upstream's aggregate format: one error bare, several in brackets, and
/// repeated messages only once.
fn join(causes: &[Cause]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for cause in causes {
        let text = cause.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    if seen.len() == 1 {
        seen.remove(0)
    } else {
        format!("[{}]", seen.join(", "))
    }
}

fn unknown_fields(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Defaults and validates `obj` of `kind` in place before it is stored.
///
/// The server calls this after it has set apiVersion, kind, namespace, uid
/// and timestamps (and resolved generateName). `old` is the stored object on
/// [`Operation::Update`]. With `strict`, unknown fields are an error;
/// otherwise they are dropped and reported as warnings (upstream's default,
/// `fieldValidation=Warn`). Returns the warnings.
pub fn prepare(
    kind: &Kind,
    obj: &mut Value,
    old: Option<&Value>,
    op: Operation,
    strict: bool,
) -> Result<Vec<String>, ValidationError> {
    let invalid = |obj: &Value, causes: Vec<Cause>| ValidationError::Invalid {
        kind: kind.kind.to_string(),
        group: kind.group.to_string(),
        name: obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        causes,
    };

    let decoded = schema::check(kind, obj);
    if !decoded.causes.is_empty() {
        return Err(invalid(obj, decoded.causes));
    }
    if strict && !decoded.unknown.is_empty() {
        return Err(ValidationError::StrictDecoding {
            fields: decoded.unknown,
        });
    }
    let warnings: Vec<String> = decoded
        .unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();

    let old = old.filter(|_| op == Operation::Update);
    defaults::apply(kind, obj, op);

    let mut errs = errors::Errs::default();
    meta::validate(kind, obj, old, &mut errs);
    objects::validate(kind, obj, old, &mut errs);
    if errs.is_empty() {
        Ok(warnings)
    } else {
        Err(invalid(obj, errs.into_causes()))
    }
}

#[cfg(test)]
mod tests;
