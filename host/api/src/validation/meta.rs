//! Upstream's `ValidateObjectMeta` and `ValidateObjectMetaUpdate`.

use serde_json::{Map, Value};

use super::errors::{child, object, str_or_empty, Bad, Errs};
use super::names;
use crate::registry::Kind;

/// Upstream's `TotalAnnotationSizeLimitB`.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Finalizers every API server knows, allowed without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

pub(crate) fn validate(kind: &Kind, obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let empty = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&empty);
    let name = str_or_empty(meta, "name");
    if name.is_empty() {
        errs.required("metadata.name", "name or generateName is required");
    } else {
        errs.invalid_each("metadata.name", name, names::name_errors(kind, name));
        if kind.group == "batch" && kind.kind == "CronJob" && name.len() > 52 {
            // Jobs it creates append an 11-character suffix to the name.
            errs.invalid(
                "metadata.name",
                Bad::Str(name),
                "must be no more than 52 characters",
            );
        }
    }

    let namespace = str_or_empty(meta, "namespace");
    match (kind.namespaced, namespace.is_empty()) {
        (true, true) => errs.required("metadata.namespace", ""),
        (true, false) => errs.invalid_each(
            "metadata.namespace",
            namespace,
            names::dns1123_label(namespace),
        ),
        (false, false) => errs.forbidden("metadata.namespace", "not allowed on this type"),
        (false, true) => {}
    }

    labels(object(meta, "labels"), "metadata.labels", errs);
    annotations(object(meta, "annotations"), "metadata.annotations", errs);
    for finalizer in meta
        .get("finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        finalizer_name(
            finalizer.as_str().unwrap_or_default(),
            "metadata.finalizers",
            errs,
        );
    }

    if let Some(old_meta) = old.and_then(|o| o.get("metadata")) {
        for field in ["name", "namespace", "uid"] {
            let (new, prev) = (str_or_empty(meta, field), str_or_empty(old_meta, field));
            if !prev.is_empty() && new != prev {
                errs.invalid(
                    &child("metadata", field),
                    Bad::Str(new),
                    "field is immutable",
                );
            }
        }
    }
}

/// Upstream's `ValidateLabels`: qualified-name keys and label values.
pub(crate) fn labels(map: Option<&Map<String, Value>>, path: &str, errs: &mut Errs) {
    for (k, v) in map.into_iter().flatten() {
        errs.invalid_each(path, k, names::qualified_name(k));
        let value = v.as_str().unwrap_or_default();
        errs.invalid_each(path, value, names::label_value(value));
    }
}

/// Upstream's `ValidateAnnotations`: keys are qualified names (any case)
/// and the whole map is at most 256 KiB.
pub(crate) fn annotations(map: Option<&Map<String, Value>>, path: &str, errs: &mut Errs) {
    let mut total = 0;
    for (k, v) in map.into_iter().flatten() {
        errs.invalid_each(path, k, names::qualified_name(&k.to_lowercase()));
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.too_long(path, ANNOTATIONS_MAX_BYTES);
    }
}

/// Upstream's `ValidateFinalizerName` for built-in types.
pub(crate) fn finalizer_name(name: &str, path: &str, errs: &mut Errs) {
    let msgs = names::qualified_name(name);
    let bad = !msgs.is_empty();
    errs.invalid_each(path, name, msgs);
    if !bad && !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        errs.invalid(
            path,
            Bad::Str(name),
            "name is neither a standard finalizer name nor is it fully qualified",
        );
    }
}
