//! API errors, answered as Kubernetes `Status` objects with upstream's codes,
//! reasons and wording, so kubectl and client libraries react as they would to
//! a real API server.

use serde_json::{json, Value};
use trellis_store::StoreError;

use crate::registry::Kind;

/// One failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. "NotFound".
    pub reason: &'static str,
    /// `Status.message`: what is wrong and, where it helps, what to do.
    pub message: String,
    /// `Status.details`, when there is an object to name.
    pub details: Option<Value>,
}

fn details(kind: &Kind, name: &str) -> Value {
    json!({"name": name, "group": kind.group, "kind": kind.plural})
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn resource(kind: &Kind) -> String {
        if kind.group.is_empty() {
            kind.plural.to_string()
        } else {
            format!("{}.{}", kind.plural, kind.group)
        }
    }

    /// 404 for an object.
    pub fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", Self::resource(kind)),
        )
        .with_details(details(kind, name))
    }

    /// 404 for a path that serves nothing.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }

    /// 409 on create of an existing object.
    pub fn already_exists(kind: &Kind, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", Self::resource(kind)),
        )
        .with_details(details(kind, name))
    }

    /// 409 on a stale `resourceVersion`.
    pub fn conflict(kind: &Kind, name: &str) -> Self {
        Self::conflict_because(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 for a write that lost a race, saying which.
    pub fn conflict_because(kind: &Kind, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                Self::resource(kind)
            ),
        )
        .with_details(details(kind, name))
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 with causes (`[{field, reason, message}]`).
    pub fn invalid(kind: &Kind, name: &str, message: impl Into<String>, causes: Value) -> Self {
        let mut d = details(kind, name);
        d["kind"] = json!(kind.kind);
        d["causes"] = causes;
        Self::new(422, "Invalid", message).with_details(d)
    }

    /// 410 for a resource version that compaction discarded.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 405.
    pub fn method_not_allowed(method: &str, what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!(
                "the server does not allow this method on the requested resource ({method} {what})"
            ),
        )
    }

    /// 406.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 415.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"))
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Map a store error for an operation on `kind`/`name`.
    pub fn from_store(e: StoreError, kind: &Kind, name: &str) -> Self {
        match e {
            StoreError::Conflict { .. } => Self::conflict(kind, name),
            StoreError::AlreadyExists { .. } => Self::already_exists(kind, name),
            StoreError::NotFound { .. } => Self::not_found(kind, name),
            StoreError::Compacted {
                requested_revision,
                compact_revision,
            } => Self::gone(format!(
                "too old resource version: {requested_revision} ({compact_revision})"
            )),
            StoreError::ValueTooLarge { size, limit, .. } => Self::new(
                413,
                "RequestEntityTooLarge",
                format!("object is {size} bytes, over the store's limit of {limit} bytes"),
            ),
            StoreError::Unavailable { .. } => {
                Self::unavailable(format!("the store is unavailable: {e}"))
            }
            other => Self::internal(other.to_string()),
        }
    }
}
