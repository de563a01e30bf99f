//! Kubernetes PATCH semantics as pure functions over `serde_json::Value`: JSON
//! patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch for
//! the built-in kinds. The server reads the body, picks the [`PatchType`] from
//! the content type, calls [`apply`] and turns a [`PatchError`] into a
//! `Status` with [`PatchError::status_code`]; checking that `apiVersion`,
//! `kind` and the name did not change is the server's job, not this module's.
//!
//! Every function here recurses only as deep as the patch document (or, for
//! comparisons, the shallower of two values), and documents parsed by
//! `serde_json` are at most 128 levels deep, so no input can exhaust the stack.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::registry::{self, Kind};

/// Upstream's `maxJSONPatchOperations`: a JSON patch with more operations is
/// refused with 413 before any of them is applied.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// Kinds of this group are Trellis' own; like upstream CRDs they have no
/// patch-strategy tags, so strategic merge patch is refused for them.
const TRELLIS_GROUP: &str = "trellis.dev";

/// How long a value may be when quoted back in an error message.
const MAX_QUOTED_VALUE: usize = 120;

/// The three patch formats of a Kubernetes PATCH request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 6902 JSON patch, `application/json-patch+json`.
    Json,
    /// RFC 7386 JSON merge patch, `application/merge-patch+json`.
    Merge,
    /// Kubernetes strategic merge patch,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
}

impl PatchType {
    /// The patch type of a request's `Content-Type`, ignoring parameters such
    /// as `; charset=utf-8`; `None` for any other media type (the server
    /// answers 415).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        // Media types are case-insensitive (RFC 9110 §8.3.1).
        [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge]
            .into_iter()
            .find(|ty| essence.eq_ignore_ascii_case(ty.content_type()))
    }

    /// The media type of this patch format.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }

    /// The name used in error messages.
    fn noun(self) -> &'static str {
        match self {
            PatchType::Json => "json",
            PatchType::Merge => "merge",
            PatchType::StrategicMerge => "strategic merge",
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The request body is not JSON at all (400).
    #[error("patch body is not valid JSON (line {line}, column {column})")]
    InvalidJson {
        /// Line of the first error, from 1.
        line: usize,
        /// Column of the first error, from 1.
        column: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The body is JSON but not a valid patch of its type: a JSON patch that
    /// is not an array of operations, an unknown `op`, a missing `path`,
    /// `from` or `value`, a malformed JSON pointer, a patch that is not an
    /// object, or a strategic merge directive that cannot be followed (400).
    #[error("invalid {patch_type} patch: {reason}")]
    Malformed {
        /// "json", "merge" or "strategic merge".
        patch_type: &'static str,
        /// What is wrong and where.
        reason: String,
    },
    /// A JSON patch with more than [`MAX_JSON_PATCH_OPERATIONS`] operations
    /// (413).
    #[error("json patch has {count} operations, more than the limit of {max}: split it into several requests")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A JSON patch operation names a location that does not exist in the
    /// object as patched so far (422).
    #[error("json patch operations[{index}] ({op}): path {path:?} does not exist")]
    PathNotFound {
        /// Position of the operation in the patch, from 0.
        index: usize,
        /// The operation, e.g. "remove".
        op: &'static str,
        /// The JSON pointer that was not found.
        path: String,
    },
    /// A JSON patch operation cannot be applied where it points: an array
    /// index past the end, a parent that is a scalar, a move into its own
    /// child, removing the whole document (422).
    #[error("json patch operations[{index}] ({op}) cannot be applied at {path:?}: {reason}")]
    InvalidTarget {
        /// Position of the operation in the patch, from 0.
        index: usize,
        /// The operation, e.g. "add".
        op: &'static str,
        /// The JSON pointer of the target.
        path: String,
        /// Why it cannot be applied there.
        reason: String,
    },
    /// A JSON patch `test` operation found a different value (422); the
    /// object is unchanged.
    #[error(
        "json patch operations[{index}] (test) failed: the value at {path:?} is not {expected}"
    )]
    TestFailed {
        /// Position of the operation in the patch, from 0.
        index: usize,
        /// The JSON pointer tested.
        path: String,
        /// The expected value as compact JSON, shortened if long.
        expected: String,
    },
    /// Strategic merge patch was asked for a kind that has no patch
    /// strategies, as upstream refuses it for custom resources (415).
    #[error("strategic merge patch is not supported for {kind}: use application/merge-patch+json or application/json-patch+json")]
    Unsupported {
        /// The kind, e.g. "Plugin".
        kind: String,
    },
}

impl PatchError {
    /// The HTTP status the API server answers with: 400 for a malformed
    /// patch, 413 for too many operations, 415 for an unsupported patch type
    /// and 422 for a JSON patch that does not fit the object (as upstream,
    /// which answers 422 for every failed JSON patch operation).
    pub fn status_code(&self) -> u16 {
        match self {
            PatchError::InvalidJson { .. } | PatchError::Malformed { .. } => 400,
            PatchError::TooManyOperations { .. } => 413,
            PatchError::Unsupported { .. } => 415,
            PatchError::PathNotFound { .. }
            | PatchError::InvalidTarget { .. }
            | PatchError::TestFailed { .. } => 422,
        }
    }
}

/// Applies the patch body `patch` of type `ty` to `original`, an object of
/// `kind`, and returns the patched object. `original` is left untouched,
/// whatever the outcome.
pub fn apply(
    kind: &Kind,
    original: &Value,
    patch: &[u8],
    ty: PatchType,
) -> Result<Value, PatchError> {
    // Refused before the body is read, as upstream decides by content type.
    if ty == PatchType::StrategicMerge && kind.group == TRELLIS_GROUP {
        return Err(unsupported(kind.kind));
    }
    let patch: Value = serde_json::from_slice(patch).map_err(|source| PatchError::InvalidJson {
        line: source.line(),
        column: source.column(),
        source,
    })?;
    match ty {
        PatchType::Json => json_patch(original, &patch),
        PatchType::Merge => {
            // RFC 7386 lets a non-object patch replace the target, but the
            // target is always an object here, so that is a mistake.
            if !patch.is_object() {
                return Err(malformed(
                    PatchType::Merge,
                    format!("the patch must be a JSON object, not {}", type_name(&patch)),
                ));
            }
            Ok(merge_patch(original, &patch))
        }
        PatchType::StrategicMerge => strategic_merge_patch(kind.kind, original, &patch),
    }
}

// ---------------------------------------------------------------------------
// JSON patch (RFC 6902)

/// Applies the RFC 6902 operations `ops` (a JSON array) to `doc`. The
/// operations apply in order and all or nothing: on error `doc` is unchanged
/// and no partial result is returned.
pub fn json_patch(doc: &Value, ops: &Value) -> Result<Value, PatchError> {
    let ops = parse_operations(ops)?;
    let mut out = doc.clone();
    for (index, op) in ops.iter().enumerate() {
        op.apply(index, &mut out)?;
    }
    Ok(out)
}

/// One parsed JSON patch operation.
struct Operation<'a> {
    path_raw: &'a str,
    path: Vec<String>,
    action: Action<'a>,
}

enum Action<'a> {
    Add(&'a Value),
    Remove,
    Replace(&'a Value),
    Move {
        from_raw: &'a str,
        from: Vec<String>,
    },
    Copy {
        from_raw: &'a str,
        from: Vec<String>,
    },
    Test(&'a Value),
}

impl Action<'_> {
    fn name(&self) -> &'static str {
        match self {
            Action::Add(_) => "add",
            Action::Remove => "remove",
            Action::Replace(_) => "replace",
            Action::Move { .. } => "move",
            Action::Copy { .. } => "copy",
            Action::Test(_) => "test",
        }
    }
}

/// Why a pointer could not be followed, before it is tied to an operation.
enum Miss {
    NotFound,
    Invalid(String),
}

/// Checks the whole patch before applying any of it, so that a malformed
/// operation late in the patch is a 400 rather than a 422 from an earlier one.
fn parse_operations(ops: &Value) -> Result<Vec<Operation<'_>>, PatchError> {
    let Value::Array(items) = ops else {
        return Err(malformed(
            PatchType::Json,
            format!(
                "the patch must be a JSON array of operations, not {}",
                type_name(ops)
            ),
        ));
    };
    if items.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: items.len(),
            max: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_operation(index, item))
        .collect()
}

fn parse_operation(index: usize, item: &Value) -> Result<Operation<'_>, PatchError> {
    let bad = |reason: String| malformed(PatchType::Json, format!("operations[{index}] {reason}"));
    let Value::Object(fields) = item else {
        return Err(bad(format!("is {}, not an object", type_name(item))));
    };
    let string_field = |name: &str| -> Result<&str, PatchError> {
        match fields.get(name) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(other) => Err(bad(format!(
                "has a {name:?} that is {}, not a string",
                type_name(other)
            ))),
            None => Err(bad(format!("has no {name:?}"))),
        }
    };
    // An explicit `"value": null` is a value; only a missing member is an error.
    let value = || {
        fields
            .get("value")
            .ok_or_else(|| bad("has no \"value\"".to_owned()))
    };
    let pointer = |raw: &str| parse_pointer(raw).map_err(&bad);

    let op = string_field("op")?;
    let path_raw = string_field("path")?;
    let path = pointer(path_raw)?;
    let action = match op {
        "add" => Action::Add(value()?),
        "remove" => Action::Remove,
        "replace" => Action::Replace(value()?),
        "test" => Action::Test(value()?),
        "move" | "copy" => {
            let from_raw = string_field("from")?;
            let from = pointer(from_raw)?;
            if op == "move" {
                Action::Move { from_raw, from }
            } else {
                Action::Copy { from_raw, from }
            }
        }
        other => {
            return Err(bad(format!(
                "has unknown op {other:?}: expected add, remove, replace, move, copy or test"
            )))
        }
    };
    Ok(Operation {
        path_raw,
        path,
        action,
    })
}

impl Operation<'_> {
    fn apply(&self, index: usize, doc: &mut Value) -> Result<(), PatchError> {
        let op = self.action.name();
        let fail = |at: &str, miss: Miss| match miss {
            Miss::NotFound => PatchError::PathNotFound {
                index,
                op,
                path: at.to_owned(),
            },
            Miss::Invalid(reason) => PatchError::InvalidTarget {
                index,
                op,
                path: at.to_owned(),
                reason,
            },
        };
        match &self.action {
            Action::Add(value) => {
                add_at(doc, &self.path, (*value).clone()).map_err(|m| fail(self.path_raw, m))
            }
            Action::Remove => remove_at(doc, &self.path)
                .map(drop)
                .map_err(|m| fail(self.path_raw, m)),
            Action::Replace(value) => match resolve_mut(doc, &self.path) {
                Some(target) => {
                    *target = (*value).clone();
                    Ok(())
                }
                None => Err(fail(self.path_raw, Miss::NotFound)),
            },
            Action::Move { from_raw, from } => {
                if from == &self.path {
                    // RFC 6902 §4.4: a no-op, but `from` must still exist.
                    return match resolve(doc, from) {
                        Some(_) => Ok(()),
                        None => Err(fail(from_raw, Miss::NotFound)),
                    };
                }
                if self.path.starts_with(from) {
                    return Err(fail(
                        self.path_raw,
                        Miss::Invalid(format!(
                            "cannot move {from_raw:?} into one of its own children"
                        )),
                    ));
                }
                let value = remove_at(doc, from).map_err(|m| fail(from_raw, m))?;
                add_at(doc, &self.path, value).map_err(|m| fail(self.path_raw, m))
            }
            Action::Copy { from_raw, from } => {
                let value = resolve(doc, from)
                    .cloned()
                    .ok_or_else(|| fail(from_raw, Miss::NotFound))?;
                add_at(doc, &self.path, value).map_err(|m| fail(self.path_raw, m))
            }
            Action::Test(expected) => match resolve(doc, &self.path) {
                Some(actual) if json_equal(actual, expected) => Ok(()),
                Some(_) => Err(PatchError::TestFailed {
                    index,
                    path: self.path_raw.to_owned(),
                    expected: quote(expected),
                }),
                None => Err(fail(self.path_raw, Miss::NotFound)),
            },
        }
    }
}

/// Splits an RFC 6901 JSON pointer into unescaped reference tokens.
fn parse_pointer(raw: &str) -> Result<Vec<String>, String> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(format!(
            "has path {raw:?}, which is not a JSON pointer: it must be empty or start with '/'"
        ));
    };
    rest.split('/')
        .map(|token| {
            if !token.contains('~') {
                return Ok(token.to_owned());
            }
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                // Each escape is read once, left to right, so "~01" is "~1".
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "has path {raw:?} with a bad escape: '~' must be followed by '0' or '1'"
                        ))
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

/// An RFC 6901 array index: decimal digits without leading zeros. "-" (the
/// element after the last) is handled by `add` only.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if digits && (token == "0" || !token.starts_with('0')) {
        token.parse().ok()
    } else {
        None
    }
}

fn resolve<'v>(doc: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    tokens.iter().try_fold(doc, |cur, token| match cur {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
        _ => None,
    })
}

fn resolve_mut<'v>(doc: &'v mut Value, tokens: &[String]) -> Option<&'v mut Value> {
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(map) => map.get_mut(token)?,
            Value::Array(items) => items.get_mut(array_index(token)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn add_at(doc: &mut Value, tokens: &[String], value: Value) -> Result<(), Miss> {
    let Some((last, parent)) = tokens.split_last() else {
        *doc = value;
        return Ok(());
    };
    match resolve_mut(doc, parent).ok_or(Miss::NotFound)? {
        Value::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(items) if last == "-" => {
            items.push(value);
            Ok(())
        }
        Value::Array(items) => {
            let i = array_index(last)
                .ok_or_else(|| Miss::Invalid(format!("{last:?} is not an array index")))?;
            if i > items.len() {
                return Err(Miss::Invalid(format!(
                    "index {i} is past the end of an array of length {}",
                    items.len()
                )));
            }
            items.insert(i, value);
            Ok(())
        }
        other => Err(Miss::Invalid(format!(
            "the parent is {}, not an object or array",
            type_name(other)
        ))),
    }
}

fn remove_at(doc: &mut Value, tokens: &[String]) -> Result<Value, Miss> {
    let Some((last, parent)) = tokens.split_last() else {
        return Err(Miss::Invalid(
            "the whole document cannot be removed".to_owned(),
        ));
    };
    match resolve_mut(doc, parent).ok_or(Miss::NotFound)? {
        Value::Object(map) => map.remove(last.as_str()).ok_or(Miss::NotFound),
        Value::Array(items) => match array_index(last) {
            Some(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(Miss::NotFound),
        },
        _ => Err(Miss::NotFound),
    }
}

/// Equality as RFC 6902 §4.6 defines it for `test`: numbers compare by value,
/// so `1` equals `1.0`; objects compare regardless of member order.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            // Integers compare exactly; f64 only when one side is a float,
            // so large integers are not rounded into equality.
            x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equal(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, x)| y.get(k).is_some_and(|y| json_equal(x, y)))
        }
        _ => a == b,
    }
}

// ---------------------------------------------------------------------------
// JSON merge patch (RFC 7386)

/// Applies an RFC 7386 merge patch: members of an object patch are merged
/// recursively, `null` deletes a member, and any other patch (an array, a
/// scalar) replaces the target.
pub fn merge_patch(doc: &Value, patch: &Value) -> Value {
    let mut out = doc.clone();
    merge_into(&mut out, patch);
    out
}

fn merge_into(target: &mut Value, patch: &Value) {
    let Value::Object(members) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in members {
            if value.is_null() {
                target.remove(key.as_str());
            } else {
                merge_into(target.entry(key.as_str()).or_insert(Value::Null), value);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Strategic merge patch

/// How a list field is merged by strategic merge patch; a field with no
/// strategy is replaced whole, as in a merge patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// `patchStrategy: merge` with `patchMergeKey`: elements are objects
    /// matched by this field.
    Key(&'static str),
    /// `patchStrategy: merge` on a list of scalars: merged as a set.
    Set,
}

/// Applies a strategic merge patch to `doc`, an object of `kind` (e.g.
/// "Deployment"). Lists with a patch merge key are merged element by element
/// and lists of scalars with a merge strategy as sets; every other list is
/// replaced, and the rest is a merge patch. Supports the directives `$patch`
/// (`replace`, `delete`, `merge`), `$retainKeys`,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.
///
/// A kind that is not in the registry has no merge keys, so the patch acts as
/// a merge patch (with the directives still applied); a Trellis kind is
/// refused with [`PatchError::Unsupported`], as upstream refuses custom
/// resources.
pub fn strategic_merge_patch(kind: &str, doc: &Value, patch: &Value) -> Result<Value, PatchError> {
    let known = registry::KINDS.iter().find(|k| k.kind == kind);
    if known.is_some_and(|k| k.group == TRELLIS_GROUP) {
        return Err(unsupported(kind));
    }
    let Value::Object(patch) = patch else {
        return Err(smp_error(format!(
            "the patch must be a JSON object, not {}",
            type_name(patch)
        )));
    };
    let smp = Smp {
        kind,
        known: known.is_some(),
    };
    let mut out = match doc {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    match smp.merge_map(&mut Vec::new(), &mut out, patch)? {
        Outcome::Keep => Ok(Value::Object(out)),
        // Upstream answers a top-level `$patch: delete` with an empty object.
        Outcome::Delete => Ok(Value::Object(Map::new())),
    }
}

/// What becomes of a map after a strategic merge.
enum Outcome {
    Keep,
    /// The patch said `$patch: delete`.
    Delete,
}

struct Smp<'k> {
    kind: &'k str,
    /// Kinds outside the registry have no merge keys at all.
    known: bool,
}

impl Smp<'_> {
    fn strategy(&self, path: &[&str]) -> Option<Strategy> {
        if self.known {
            merge_key(self.kind, path)
        } else {
            None
        }
    }

    /// Merges `patch` into `target`, the map at `path`.
    fn merge_map<'p>(
        &self,
        path: &mut Vec<&'p str>,
        target: &mut Map<String, Value>,
        patch: &'p Map<String, Value>,
    ) -> Result<Outcome, PatchError> {
        match directive(patch, path)? {
            Some("delete") => return Ok(Outcome::Delete),
            // Merging into an empty map keeps the patch's fields and still
            // strips nulls and nested directives from them.
            Some("replace") => target.clear(),
            _ => {}
        }
        if let Some(keys) = patch.get("$retainKeys") {
            let keys = string_list(keys).ok_or_else(|| {
                smp_error(format!(
                    "$retainKeys at {} must be a list of field names",
                    at(path)
                ))
            })?;
            target.retain(|k, _| keys.contains(k.as_str()));
        }

        let mut deletions = Vec::new();
        let mut orders = Vec::new();
        for (key, value) in patch {
            if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
                deletions.push((field, value));
            } else if let Some(field) = key.strip_prefix("$setElementOrder/") {
                orders.push((field, value));
            } else if key == "$patch" || key == "$retainKeys" {
                // Followed above.
            } else if key.starts_with('$') {
                // No Kubernetes field starts with '$': this is a directive
                // we do not know, and storing it would be worse than refusing.
                return Err(smp_error(format!(
                    "unknown directive {key:?} at {}",
                    at(path)
                )));
            } else if value.is_null() {
                target.remove(key.as_str());
            } else {
                path.push(key);
                let merged = self.merge_field(path, target, key, value);
                path.pop();
                merged?;
            }
        }

        // After the merge, so that a field both added to and deleted from in
        // one patch ends up without the deleted values.
        for (field, values) in deletions {
            let Value::Array(values) = values else {
                return Err(smp_error(format!(
                    "$deleteFromPrimitiveList/{field} at {} must be a list",
                    at(path)
                )));
            };
            if let Some(Value::Array(items)) = target.get_mut(field) {
                let doomed: HashSet<String> = values.iter().filter_map(scalar_key).collect();
                items.retain(|item| scalar_key(item).is_none_or(|k| !doomed.contains(&k)));
            }
        }
        for (field, order) in orders {
            let Value::Array(order) = order else {
                return Err(smp_error(format!(
                    "$setElementOrder/{field} at {} must be a list",
                    at(path)
                )));
            };
            path.push(field);
            let strategy = self.strategy(path);
            path.pop();
            if let Some(Value::Array(items)) = target.get_mut(field) {
                set_element_order(items, order, strategy);
            }
        }
        Ok(Outcome::Keep)
    }

    /// Merges the patch value of `key` (whose path is `path`, ending in
    /// `key`) into `target[key]`.
    fn merge_field<'p>(
        &self,
        path: &mut Vec<&'p str>,
        target: &mut Map<String, Value>,
        key: &str,
        patch: &'p Value,
    ) -> Result<(), PatchError> {
        match (target.get_mut(key), patch) {
            (Some(Value::Object(existing)), Value::Object(patch)) => {
                if let Outcome::Delete = self.merge_map(path, existing, patch)? {
                    target.remove(key);
                }
            }
            (Some(Value::Array(existing)), Value::Array(patch)) => {
                self.merge_list(path, existing, patch)?;
            }
            // Absent, a scalar, or a different type: the patch value wins.
            _ => match self.fresh(path, patch)? {
                Some(value) => {
                    target.insert(key.to_owned(), value);
                }
                None => {
                    target.remove(key);
                }
            },
        }
        Ok(())
    }

    /// The patch value as it applies to nothing: directives followed and
    /// nulls dropped. `None` when it deletes itself.
    fn fresh<'p>(
        &self,
        path: &mut Vec<&'p str>,
        patch: &'p Value,
    ) -> Result<Option<Value>, PatchError> {
        Ok(match patch {
            Value::Object(patch) => {
                let mut map = Map::new();
                match self.merge_map(path, &mut map, patch)? {
                    Outcome::Keep => Some(Value::Object(map)),
                    Outcome::Delete => None,
                }
            }
            Value::Array(patch) => {
                let mut items = Vec::new();
                self.merge_list(path, &mut items, patch)?;
                Some(Value::Array(items))
            }
            scalar => Some(scalar.clone()),
        })
    }

    /// Merges the patch list into `target`, the list at `path`.
    fn merge_list<'p>(
        &self,
        path: &mut Vec<&'p str>,
        target: &mut Vec<Value>,
        patch: &'p [Value],
    ) -> Result<(), PatchError> {
        let strategy = self.strategy(path);
        let merge_key = match strategy {
            Some(Strategy::Key(k)) => Some(k),
            _ => None,
        };
        // `{"$patch": "replace"}` as an element replaces the list with the
        // other elements. With a merge key present it replaces just that
        // element instead (merge_map handles it), which upstream does not
        // distinguish but is what such an element plainly asks for.
        let is_list_replace = |item: &Value| match item {
            Value::Object(m) => {
                m.get("$patch").and_then(Value::as_str) == Some("replace")
                    && merge_key.is_none_or(|k| !m.contains_key(k))
            }
            _ => false,
        };
        let patch: Vec<&'p Value> = if patch.iter().any(is_list_replace) {
            target.clear();
            patch.iter().filter(|item| !is_list_replace(item)).collect()
        } else {
            patch.iter().collect()
        };

        let Some(strategy) = strategy else {
            *target = patch.into_iter().cloned().collect();
            return Ok(());
        };
        let objects = target
            .iter()
            .chain(patch.iter().copied())
            .any(Value::is_object);
        match (strategy, objects) {
            // Upstream merges scalar lists as sets whatever their merge key.
            (_, false) => {
                let mut seen: HashSet<String> = target.iter().filter_map(scalar_key).collect();
                for item in patch {
                    if scalar_key(item).is_none_or(|k| seen.insert(k)) {
                        target.push(item.clone());
                    }
                }
                Ok(())
            }
            (Strategy::Set, true) => Err(smp_error(format!(
                "{} is a list of values merged as a set, so its elements cannot be objects",
                at(path)
            ))),
            (Strategy::Key(key), true) => self.merge_keyed(path, target, &patch, key),
        }
    }

    /// Merges a list of objects by `key`: deletions first (as upstream), then
    /// each element into the one with the same key, or appended.
    fn merge_keyed<'p>(
        &self,
        path: &mut Vec<&'p str>,
        target: &mut Vec<Value>,
        patch: &[&'p Value],
        key: &str,
    ) -> Result<(), PatchError> {
        let mut elements = Vec::with_capacity(patch.len());
        let mut doomed = HashSet::new();
        for item in patch {
            let Value::Object(element) = *item else {
                return Err(smp_error(format!(
                    "elements of {} must be objects with a {key:?} field, not {}",
                    at(path),
                    type_name(item)
                )));
            };
            let id = element.get(key).and_then(scalar_key).ok_or_else(|| {
                smp_error(format!(
                    "an element of {} has no merge key {key:?}: {}",
                    at(path),
                    quote(item)
                ))
            })?;
            match directive(element, path)? {
                Some("delete") => {
                    doomed.insert(id);
                }
                _ => elements.push((id, element)),
            }
        }
        if !doomed.is_empty() {
            target.retain(|item| element_key(item, key).is_none_or(|id| !doomed.contains(&id)));
        }

        let mut index: HashMap<String, usize> = HashMap::new();
        for (i, item) in target.iter().enumerate() {
            if let Some(id) = element_key(item, key) {
                index.entry(id).or_insert(i);
            }
        }
        let mut removed = Vec::new();
        for (id, element) in elements {
            match index.get(&id) {
                Some(&i) => {
                    // Only objects are indexed.
                    if let Value::Object(existing) = &mut target[i] {
                        if let Outcome::Delete = self.merge_map(path, existing, element)? {
                            removed.push(i);
                        }
                    }
                }
                None => {
                    let mut map = Map::new();
                    if let Outcome::Keep = self.merge_map(path, &mut map, element)? {
                        index.insert(id, target.len());
                        target.push(Value::Object(map));
                    }
                }
            }
        }
        if !removed.is_empty() {
            let removed: HashSet<usize> = removed.into_iter().collect();
            let mut i = 0;
            target.retain(|_| {
                i += 1;
                !removed.contains(&(i - 1))
            });
        }
        Ok(())
    }
}

/// Reorders `items` as `order` lists them, when every element is listed;
/// otherwise leaves them, as the order of unlisted elements is unknowable.
fn set_element_order(items: &mut [Value], order: &[Value], strategy: Option<Strategy>) {
    let key = match strategy {
        Some(Strategy::Key(k)) => Some(k),
        _ => None,
    };
    let id = |v: &Value| match (key, v) {
        (Some(k), Value::Object(_)) => element_key(v, k),
        _ => scalar_key(v),
    };
    let mut position = HashMap::new();
    for (i, entry) in order.iter().enumerate() {
        if let Some(id) = id(entry) {
            position.entry(id).or_insert(i);
        }
    }
    let ranks: Option<Vec<usize>> = items
        .iter()
        .map(|item| id(item).and_then(|id| position.get(&id).copied()))
        .collect();
    if let Some(ranks) = ranks {
        let mut ranked: Vec<(usize, Value)> = ranks
            .into_iter()
            .zip(items.iter_mut().map(std::mem::take))
            .collect();
        ranked.sort_by_key(|(rank, _)| *rank);
        for (slot, (_, item)) in items.iter_mut().zip(ranked) {
            *slot = item;
        }
    }
}

/// The `$patch` directive of a map, if any.
fn directive<'p>(
    map: &'p Map<String, Value>,
    path: &[&str],
) -> Result<Option<&'p str>, PatchError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(d)) if matches!(d.as_str(), "replace" | "delete" | "merge") => {
            Ok(Some(d))
        }
        Some(other) => Err(smp_error(format!(
            "$patch at {} is {}: expected \"replace\", \"delete\" or \"merge\"",
            at(path),
            quote(other)
        ))),
    }
}

/// The identity of a scalar for set membership and merge-key matching; equal
/// numbers (`80`, `80.0`) share one. `None` for objects and arrays.
fn scalar_key(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => "z".to_owned(),
        Value::Bool(b) => format!("b{b}"),
        Value::String(s) => format!("s{s}"),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => format!("n{i}"),
            (None, Some(u), _) => format!("n{u}"),
            // Below 2^53 an integral f64 is exact, so it can meet an integer.
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                format!("n{}", f as i64)
            }
            (None, None, f) => format!("f{}", f.unwrap_or(f64::NAN)),
        },
        Value::Array(_) | Value::Object(_) => return None,
    })
}

fn element_key(item: &Value, key: &str) -> Option<String> {
    item.as_object()?.get(key).and_then(scalar_key)
}

fn string_list(v: &Value) -> Option<HashSet<&str>> {
    v.as_array()?.iter().map(Value::as_str).collect()
}

/// The merge strategy of the list at `path` (field names from the object's
/// root, list positions left out) in an object of `kind`, from the
/// `patchStrategy`/`patchMergeKey` tags of k8s.io/api. `None` means the list
/// is replaced whole, as for every list without tags (upstream's `atomic`
/// lists such as tolerations, taints and envFrom).
fn merge_key(kind: &str, path: &[&str]) -> Option<Strategy> {
    if let [root @ .., "metadata", field] = path {
        if object_meta_roots(kind).contains(&root) {
            return object_meta(field);
        }
    }
    if let Some(rest) = pod_spec_root(kind).and_then(|root| path.strip_prefix(root)) {
        return pod_spec(rest);
    }
    use Strategy::{Key, Set};
    match (kind, path) {
        ("Pod", ["status", "conditions"]) => Some(Key("type")),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => Some(Key("ip")),
        ("Pod", ["status", "resourceClaimStatuses"]) => Some(Key("name")),
        ("Node", ["spec", "podCIDRs"]) => Some(Set),
        ("Node", ["status", "conditions" | "addresses"]) => Some(Key("type")),
        ("Service", ["spec", "ports"]) => Some(Key("port")),
        ("ServiceAccount", ["secrets"]) => Some(Key("name")),
        (
            "Deployment"
            | "ReplicaSet"
            | "DaemonSet"
            | "StatefulSet"
            | "Job"
            | "Service"
            | "Namespace"
            | "PersistentVolumeClaim"
            | "HorizontalPodAutoscaler",
            ["status", "conditions"],
        ) => Some(Key("type")),
        _ => None,
    }
}

/// Where an `ObjectMeta` sits in an object of `kind`: its own, and those of
/// the pod and job templates it embeds.
fn object_meta_roots(kind: &str) -> &'static [&'static [&'static str]] {
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
            &[&[], &["spec", "template"]]
        }
        "CronJob" => &[
            &[],
            &["spec", "jobTemplate"],
            &["spec", "jobTemplate", "spec", "template"],
        ],
        _ => &[&[]],
    }
}

fn object_meta(field: &str) -> Option<Strategy> {
    match field {
        "finalizers" => Some(Strategy::Set),
        "ownerReferences" => Some(Strategy::Key("uid")),
        _ => None,
    }
}

/// Where the `PodSpec` sits in an object of `kind`.
fn pod_spec_root(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&["spec"]),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" => {
            Some(&["spec", "template", "spec"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template", "spec"]),
        _ => None,
    }
}

/// Strategies inside a `PodSpec`, `path` relative to it.
fn pod_spec(path: &[&str]) -> Option<Strategy> {
    use Strategy::Key;
    match path {
        ["containers" | "initContainers" | "ephemeralContainers"] => Some(Key("name")),
        ["containers" | "initContainers" | "ephemeralContainers", field] => match *field {
            "env" => Some(Key("name")),
            "ports" => Some(Key("containerPort")),
            "volumeMounts" => Some(Key("mountPath")),
            "volumeDevices" => Some(Key("devicePath")),
            // envFrom, resizePolicy, args, command: replaced whole.
            _ => None,
        },
        ["volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"] => {
            Some(Key("name"))
        }
        ["hostAliases"] => Some(Key("ip")),
        // Upstream's list-map key is (topologyKey, whenUnsatisfiable), but its
        // patchMergeKey is topologyKey alone.
        ["topologySpreadConstraints"] => Some(Key("topologyKey")),
        // tolerations, readinessGates, affinity terms: atomic upstream.
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn malformed(ty: PatchType, reason: String) -> PatchError {
    PatchError::Malformed {
        patch_type: ty.noun(),
        reason,
    }
}

fn smp_error(reason: String) -> PatchError {
    malformed(PatchType::StrategicMerge, reason)
}

fn unsupported(kind: &str) -> PatchError {
    PatchError::Unsupported {
        kind: kind.to_owned(),
    }
}

/// A field path for messages, e.g. "spec.containers".
fn at(path: &[&str]) -> String {
    if path.is_empty() {
        "the top level".to_owned()
    } else {
        path.join(".")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value as compact JSON for an error message, shortened if long.
fn quote(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > MAX_QUOTED_VALUE {
        let mut end = MAX_QUOTED_VALUE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn kind(group: &str, name: &str) -> &'static Kind {
        registry::by_kind(group, name).unwrap()
    }

    #[test]
    fn content_types() {
        let cases = [
            ("application/json-patch+json", Some(PatchType::Json)),
            ("application/merge-patch+json", Some(PatchType::Merge)),
            (
                "application/strategic-merge-patch+json",
                Some(PatchType::StrategicMerge),
            ),
            (
                "application/merge-patch+json; charset=utf-8",
                Some(PatchType::Merge),
            ),
            (
                " Application/JSON-Patch+JSON ;charset=UTF-8",
                Some(PatchType::Json),
            ),
            ("application/json", None),
            ("application/apply-patch+yaml", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct:?}");
        }
        for ty in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            assert_eq!(PatchType::from_content_type(ty.content_type()), Some(ty));
        }
    }

    /// RFC 6902 appendix A, plus the RFC 6901 pointer examples, "-" append
    /// and the cases upstream's library is known to get right.
    #[test]
    fn json_patch_succeeds() {
        let cases = [
            // A.1 adding an object member
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux"}]),
                json!({"baz": "qux", "foo": "bar"}),
            ),
            // A.2 adding an array element
            (
                json!({"foo": ["bar", "baz"]}),
                json!([{"op": "add", "path": "/foo/1", "value": "qux"}]),
                json!({"foo": ["bar", "qux", "baz"]}),
            ),
            // A.3 removing an object member
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "remove", "path": "/baz"}]),
                json!({"foo": "bar"}),
            ),
            // A.4 removing an array element
            (
                json!({"foo": ["bar", "qux", "baz"]}),
                json!([{"op": "remove", "path": "/foo/1"}]),
                json!({"foo": ["bar", "baz"]}),
            ),
            // A.5 replacing a value
            (
                json!({"baz": "qux", "foo": "bar"}),
                json!([{"op": "replace", "path": "/baz", "value": "boo"}]),
                json!({"baz": "boo", "foo": "bar"}),
            ),
            // A.6 moving a value
            (
                json!({"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}}),
                json!([{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}]),
                json!({"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}}),
            ),
            // A.7 moving an array element
            (
                json!({"foo": ["all", "grass", "cows", "eat"]}),
                json!([{"op": "move", "from": "/foo/1", "path": "/foo/3"}]),
                json!({"foo": ["all", "cows", "eat", "grass"]}),
            ),
            // A.8 testing a value: success
            (
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
                json!([{"op": "test", "path": "/baz", "value": "qux"}, {"op": "test", "path": "/foo/1", "value": 2}]),
                json!({"baz": "qux", "foo": ["a", 2, "c"]}),
            ),
            // A.10 adding a nested member object
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/child", "value": {"grandchild": {}}}]),
                json!({"foo": "bar", "child": {"grandchild": {}}}),
            ),
            // A.11 ignoring unrecognized elements
            (
                json!({"foo": "bar"}),
                json!([{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}]),
                json!({"foo": "bar", "baz": "qux"}),
            ),
            // A.14 ~ escape ordering
            (
                json!({"/": 9, "~1": 10}),
                json!([{"op": "test", "path": "/~01", "value": 10}]),
                json!({"/": 9, "~1": 10}),
            ),
            // A.16 adding an array value
            (
                json!({"foo": ["bar"]}),
                json!([{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}]),
                json!({"foo": ["bar", ["abc", "def"]]}),
            ),
            // RFC 6901 pointers: "/" escapes, "~" escapes, the empty key
            (
                json!({"a/b": 1, "m~n": 8, "": 0}),
                json!([
                    {"op": "replace", "path": "/a~1b", "value": 2},
                    {"op": "replace", "path": "/m~0n", "value": 9},
                    {"op": "replace", "path": "/", "value": 1},
                ]),
                json!({"a/b": 2, "m~n": 9, "": 1}),
            ),
            // copy, and "-" appending after it
            (
                json!({"a": {"b": [1]}}),
                json!([
                    {"op": "copy", "from": "/a/b", "path": "/c"},
                    {"op": "add", "path": "/c/-", "value": 2},
                ]),
                json!({"a": {"b": [1]}, "c": [1, 2]}),
            ),
            // add at the end index, explicit null value, replace the root
            (
                json!({"l": [1]}),
                json!([{"op": "add", "path": "/l/1", "value": null}]),
                json!({"l": [1, null]}),
            ),
            (
                json!({"a": 1}),
                json!([{"op": "replace", "path": "", "value": {"b": 2}}]),
                json!({"b": 2}),
            ),
            // add replaces an existing member
            (
                json!({"a": 1}),
                json!([{"op": "add", "path": "/a", "value": [2]}]),
                json!({"a": [2]}),
            ),
            // numbers compare by value; objects regardless of order
            (
                json!({"n": 1, "o": {"x": 1, "y": [2.0]}}),
                json!([
                    {"op": "test", "path": "/n", "value": 1.0},
                    {"op": "test", "path": "/o", "value": {"y": [2], "x": 1}},
                ]),
                json!({"n": 1, "o": {"x": 1, "y": [2.0]}}),
            ),
            // move to itself is a no-op; an empty patch changes nothing
            (
                json!({"a": 1}),
                json!([{"op": "move", "from": "/a", "path": "/a"}]),
                json!({"a": 1}),
            ),
            (json!({"a": 1}), json!([]), json!({"a": 1})),
            // a Kubernetes-shaped edit
            (
                json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1}}),
                json!([
                    {"op": "test", "path": "/spec/replicas", "value": 1},
                    {"op": "replace", "path": "/spec/replicas", "value": 3},
                    {"op": "add", "path": "/metadata/labels/tier", "value": "front"},
                    {"op": "remove", "path": "/metadata/labels/app"},
                ]),
                json!({"metadata": {"labels": {"tier": "front"}}, "spec": {"replicas": 3}}),
            ),
        ];
        for (i, (doc, ops, want)) in cases.into_iter().enumerate() {
            let got = json_patch(&doc, &ops).unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn json_patch_fails() {
        let doc = json!({"baz": "qux", "foo": "bar", "l": [1, 2], "/": 9, "~1": 10});
        let cases = [
            // A.9 testing a value: error
            (
                json!([{"op": "test", "path": "/baz", "value": "bar"}]),
                422,
                "is not \"bar\"",
            ),
            // A.12 adding to a nonexistent target
            (
                json!([{"op": "add", "path": "/baz/bat", "value": "qux"}]),
                422,
                "not an object or array",
            ),
            (
                json!([{"op": "add", "path": "/nope/bat", "value": "qux"}]),
                422,
                "does not exist",
            ),
            // A.15 comparing strings and numbers
            (
                json!([{"op": "test", "path": "/~01", "value": "10"}]),
                422,
                "is not \"10\"",
            ),
            (
                json!([{"op": "remove", "path": "/missing"}]),
                422,
                "path \"/missing\" does not exist",
            ),
            (
                json!([{"op": "replace", "path": "/l/2", "value": 0}]),
                422,
                "does not exist",
            ),
            (
                json!([{"op": "remove", "path": "/l/-"}]),
                422,
                "does not exist",
            ),
            (
                json!([{"op": "remove", "path": "/l/01"}]),
                422,
                "does not exist",
            ),
            (
                json!([{"op": "add", "path": "/l/3", "value": 0}]),
                422,
                "past the end",
            ),
            (
                json!([{"op": "add", "path": "/l/x", "value": 0}]),
                422,
                "not an array index",
            ),
            (
                json!([{"op": "test", "path": "/missing", "value": 1}]),
                422,
                "does not exist",
            ),
            (
                json!([{"op": "move", "from": "/missing", "path": "/a"}]),
                422,
                "\"/missing\" does not exist",
            ),
            (
                json!([{"op": "copy", "from": "/missing", "path": "/a"}]),
                422,
                "\"/missing\" does not exist",
            ),
            (
                json!([{"op": "move", "from": "/l", "path": "/l/0"}]),
                422,
                "own children",
            ),
            (json!([{"op": "remove", "path": ""}]), 422, "whole document"),
            // malformed documents
            (json!({"op": "add"}), 400, "must be a JSON array"),
            (json!(["add"]), 400, "operations[0] is a string"),
            (
                json!([{"op": "frobnicate", "path": "/a"}]),
                400,
                "unknown op \"frobnicate\"",
            ),
            (json!([{"path": "/a"}]), 400, "has no \"op\""),
            (json!([{"op": "add", "value": 1}]), 400, "has no \"path\""),
            (
                json!([{"op": "add", "path": "/a"}]),
                400,
                "has no \"value\"",
            ),
            (
                json!([{"op": "move", "path": "/a"}]),
                400,
                "has no \"from\"",
            ),
            (
                json!([{"op": "add", "path": 3, "value": 1}]),
                400,
                "not a string",
            ),
            (
                json!([{"op": "add", "path": "a", "value": 1}]),
                400,
                "must be empty or start with '/'",
            ),
            (
                json!([{"op": "add", "path": "/a~2", "value": 1}]),
                400,
                "bad escape",
            ),
            // a malformed operation anywhere refuses the patch before any is tried
            (
                json!([{"op": "remove", "path": "/missing"}, {"op": "nope", "path": "/"}]),
                400,
                "operations[1]",
            ),
        ];
        for (ops, status, message) in cases {
            let err = json_patch(&doc, &ops).expect_err(&ops.to_string());
            assert_eq!(err.status_code(), status, "{ops}: {err}");
            assert!(err.to_string().contains(message), "{ops}: {err}");
        }
    }

    #[test]
    fn json_patch_is_all_or_nothing_and_bounded() {
        let doc = json!({"a": 1});
        let ops = json!([
            {"op": "replace", "path": "/a", "value": 2},
            {"op": "test", "path": "/a", "value": 1},
        ]);
        let err = json_patch(&doc, &ops).unwrap_err();
        assert!(
            matches!(err, PatchError::TestFailed { index: 1, .. }),
            "{err}"
        );
        assert_eq!(doc, json!({"a": 1}));

        let op = json!({"op": "test", "path": "/a", "value": 1});
        let at_limit = Value::Array(vec![op.clone(); MAX_JSON_PATCH_OPERATIONS]);
        assert_eq!(json_patch(&doc, &at_limit).unwrap(), doc);
        let over = Value::Array(vec![op; MAX_JSON_PATCH_OPERATIONS + 1]);
        let err = json_patch(&doc, &over).unwrap_err();
        assert_eq!(err.status_code(), 413, "{err}");
    }

    /// RFC 7386 appendix A.
    #[test]
    fn merge_patch_rfc_examples() {
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a": "b"}), json!(["c"]), json!(["c"])),
            (json!({"a": "foo"}), json!(null), json!(null)),
            (json!({"a": "foo"}), json!("bar"), json!("bar")),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!([1, 2]),
                json!({"a": "b", "c": null}),
                json!({"a": "b"}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (doc, patch, want) in cases {
            assert_eq!(merge_patch(&doc, &patch), want, "{doc} + {patch}");
        }
    }

    fn deployment(containers: Value) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "finalizers": ["a", "b"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": containers}}},
        })
    }

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
    }

    /// Each case: kind, original, patch, expected.
    #[test]
    fn strategic_merge_patch_cases() {
        let two = json!([
            {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "proxy:1"},
        ]);
        let cases = [
            // one container's image changes, the other is kept
            (
                "Pod",
                pod(json!({"containers": two})),
                json!({"spec": {"containers": [{"name": "sidecar", "image": "proxy:2"}]}}),
                pod(json!({"containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "proxy:2"},
                ]})),
            ),
            // env merged by name: one changed, one added, one deleted by null field
            (
                "Pod",
                pod(json!({"containers": two})),
                json!({"spec": {"containers": [{"name": "app", "env": [
                    {"name": "B", "value": "3"},
                    {"name": "C", "value": "4"},
                    {"name": "A", "value": null, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ]}]}}),
                pod(json!({"containers": [
                    {"name": "app", "image": "app:1", "env": [
                        {"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "B", "value": "3"},
                        {"name": "C", "value": "4"},
                    ]},
                    {"name": "sidecar", "image": "proxy:1"},
                ]})),
            ),
            // $patch: delete of a container
            (
                "Pod",
                pod(json!({"containers": two})),
                json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}),
                pod(json!({"containers": [
                    {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                ]})),
            ),
            // $patch: replace of a list
            (
                "Pod",
                pod(json!({"containers": two})),
                json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}),
                pod(json!({"containers": [{"name": "only", "image": "x"}]})),
            ),
            // $patch: replace of a map
            (
                "Pod",
                pod(json!({"containers": [], "securityContext": {"runAsUser": 1, "fsGroup": 2}})),
                json!({"spec": {"securityContext": {"$patch": "replace", "runAsGroup": 3}}}),
                pod(json!({"containers": [], "securityContext": {"runAsGroup": 3}})),
            ),
            // $patch: replace of one element, matched by its key
            (
                "Pod",
                pod(json!({"containers": two})),
                json!({"spec": {"containers": [{"name": "app", "$patch": "replace", "image": "app:2"}]}}),
                pod(
                    json!({"containers": [{"name": "app", "image": "app:2"}, {"name": "sidecar", "image": "proxy:1"}]}),
                ),
            ),
            // $patch: delete of a map
            (
                "Pod",
                pod(json!({"containers": [], "securityContext": {"runAsUser": 1}})),
                json!({"spec": {"securityContext": {"$patch": "delete"}}}),
                pod(json!({"containers": []})),
            ),
            // finalizers merged as a set, keeping order; null deletes a field
            (
                "Deployment",
                deployment(json!([])),
                json!({"metadata": {"finalizers": ["c", "a"]}, "spec": {"replicas": null}}),
                json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "web", "finalizers": ["a", "b", "c"]},
                    "spec": {"template": {"spec": {"containers": []}}},
                }),
            ),
            // $deleteFromPrimitiveList, with an addition in the same patch
            (
                "ConfigMap",
                json!({"metadata": {"finalizers": ["a", "b", "c"]}, "data": {"k": "v"}}),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b", "z"], "finalizers": ["d"]}}),
                json!({"metadata": {"finalizers": ["a", "c", "d"]}, "data": {"k": "v"}}),
            ),
            // tolerations have no merge key upstream: replaced whole
            (
                "Pod",
                pod(
                    json!({"tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}),
                ),
                json!({"spec": {"tolerations": [{"key": "c", "operator": "Exists"}]}}),
                pod(json!({"tolerations": [{"key": "c", "operator": "Exists"}]})),
            ),
            // container ports merged by containerPort
            (
                "Pod",
                pod(
                    json!({"containers": [{"name": "app", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}),
                ),
                json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 443, "name": "https"}, {"containerPort": 9090}]}]}}),
                pod(json!({"containers": [{"name": "app", "ports": [
                    {"containerPort": 80, "name": "http"},
                    {"containerPort": 443, "name": "https"},
                    {"containerPort": 9090},
                ]}]})),
            ),
            // the Deployment's pod template path, with a new container appended
            (
                "Deployment",
                deployment(json!([{"name": "app", "image": "app:1"}])),
                json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "app", "image": "app:2"},
                    {"name": "new", "image": "new:1", "args": null},
                ]}}}}),
                deployment(
                    json!([{"name": "app", "image": "app:2"}, {"name": "new", "image": "new:1"}]),
                ),
            ),
            // the CronJob's pod template path
            (
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}}}}}}),
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}}}),
                json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}, {"name": "b"}]}}}}}}),
            ),
            // a list the table does not know is replaced
            (
                "Pod",
                pod(
                    json!({"containers": [{"name": "app", "args": ["a", "b"]}], "readinessGates": [{"conditionType": "x"}]}),
                ),
                json!({"spec": {"containers": [{"name": "app", "args": ["c"]}], "readinessGates": [{"conditionType": "y"}]}}),
                pod(
                    json!({"containers": [{"name": "app", "args": ["c"]}], "readinessGates": [{"conditionType": "y"}]}),
                ),
            ),
            // $setElementOrder applied when every element is listed
            (
                "Pod",
                pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
                json!({"spec": {
                    "$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "c"}],
                }}),
                pod(json!({"containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}]})),
            ),
            // ... and ignored when one is missing
            (
                "Pod",
                pod(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}], "containers": [{"name": "b", "image": "x"}]}}),
                pod(json!({"containers": [{"name": "a"}, {"name": "b", "image": "x"}]})),
            ),
            // ... on a set-merged list of scalars, as kubectl sends it
            (
                "Pod",
                json!({"metadata": {"finalizers": ["a", "b"]}}),
                json!({"metadata": {
                    "$setElementOrder/finalizers": ["c", "b"],
                    "$deleteFromPrimitiveList/finalizers": ["a"],
                    "finalizers": ["c"],
                }}),
                json!({"metadata": {"finalizers": ["c", "b"]}}),
            ),
            // $retainKeys drops the fields it does not list
            (
                "Deployment",
                json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                json!({"spec": {"strategy": {"type": "Recreate"}}}),
            ),
            // a new field is taken from the patch, with its nulls and directives gone
            (
                "Pod",
                pod(json!({})),
                json!({"spec": {"affinity": {"nodeAffinity": null, "podAffinity": {"$patch": "replace", "x": 1}}, "volumes": [{"$patch": "replace"}, {"name": "v"}]}}),
                pod(json!({"affinity": {"podAffinity": {"x": 1}}, "volumes": [{"name": "v"}]})),
            ),
            // Node taints are atomic upstream; status.conditions merge by type
            (
                "Node",
                json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]}, "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}}),
                json!({"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                json!({"spec": {"taints": [{"key": "b", "effect": "NoSchedule"}]}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}}),
            ),
            // Service ports by port; ownerReferences by uid
            (
                "Service",
                json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}, "spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}),
                json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]}, "spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
                json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a", "controller": true}]}, "spec": {"ports": [{"port": 80, "targetPort": 9090}, {"port": 443}]}}),
            ),
            // EndpointSlice endpoints are replaced
            (
                "EndpointSlice",
                json!({"endpoints": [{"addresses": ["10.0.0.1"]}]}),
                json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}),
                json!({"endpoints": [{"addresses": ["10.0.0.2"]}]}),
            ),
            // a kind outside the registry acts as a merge patch
            (
                "Widget",
                json!({"metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "a", "x": 1}]}}),
                json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "a", "y": 2}]}}),
                json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "a", "y": 2}]}}),
            ),
            // a top-level $patch: delete empties the object, as upstream
            (
                "ConfigMap",
                json!({"data": {"a": "b"}}),
                json!({"$patch": "delete"}),
                json!({}),
            ),
        ];
        for (i, (kind, doc, patch, want)) in cases.into_iter().enumerate() {
            let got = strategic_merge_patch(kind, &doc, &patch)
                .unwrap_or_else(|e| panic!("case {i}: {e}"));
            assert_eq!(got, want, "case {i}");
            // Lists compare in order, so this also checks element order.
            assert_eq!(got.to_string(), want.to_string(), "case {i}");
        }
    }

    #[test]
    fn strategic_merge_patch_errors() {
        let doc = pod(json!({"containers": [{"name": "app"}]}));
        let cases = [
            (json!(["not", "an", "object"]), "must be a JSON object"),
            (
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "no merge key \"name\"",
            ),
            (json!({"spec": {"containers": ["app"]}}), "must be objects"),
            (
                json!({"spec": {"containers": [{"name": "app", "$patch": "explode"}]}}),
                "$patch at spec.containers",
            ),
            (
                json!({"spec": {"$frobnicate": 1}}),
                "unknown directive \"$frobnicate\" at spec",
            ),
            (
                json!({"spec": {"$retainKeys": "containers"}}),
                "$retainKeys at spec",
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "must be a list",
            ),
            (
                json!({"metadata": {"finalizers": [{"name": "x"}]}}),
                "merged as a set",
            ),
        ];
        for (patch, message) in cases {
            let err = strategic_merge_patch("Pod", &doc, &patch).expect_err(&patch.to_string());
            assert_eq!(err.status_code(), 400, "{patch}: {err}");
            assert!(err.to_string().contains(message), "{patch}: {err}");
        }
        let err = strategic_merge_patch("Plugin", &json!({}), &json!({})).unwrap_err();
        assert_eq!(err.status_code(), 415);
    }

    #[test]
    fn apply_dispatches_and_maps_errors() {
        let pods = kind("", "Pod");
        let original = pod(json!({"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}));
        let body = br#"{"spec": {"containers": [{"name": "a", "image": "2"}]}}"#;

        let got = apply(pods, &original, body, PatchType::StrategicMerge).unwrap();
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name": "a", "image": "2"}, {"name": "b"}])
        );
        let got = apply(pods, &original, body, PatchType::Merge).unwrap();
        assert_eq!(
            got["spec"]["containers"],
            json!([{"name": "a", "image": "2"}])
        );
        let got = apply(
            pods,
            &original,
            br#"[{"op": "replace", "path": "/spec/containers/1/name", "value": "c"}]"#,
            PatchType::Json,
        )
        .unwrap();
        assert_eq!(got["spec"]["containers"][1], json!({"name": "c"}));

        let err = apply(pods, &original, b"{\"spec\": ", PatchType::Merge).unwrap_err();
        assert!(
            matches!(err, PatchError::InvalidJson { line: 1, .. }),
            "{err}"
        );
        assert_eq!(err.status_code(), 400);
        assert!(std::error::Error::source(&err).is_some());
        let err = apply(pods, &original, b"[1]", PatchType::Merge).unwrap_err();
        assert_eq!(err.status_code(), 400, "{err}");

        let plugins = kind("trellis.dev", "Plugin");
        let err = apply(plugins, &json!({}), b"{}", PatchType::StrategicMerge).unwrap_err();
        assert_eq!(err.status_code(), 415);
        assert!(
            err.to_string()
                .starts_with("strategic merge patch is not supported for Plugin"),
            "{err}"
        );
        // The other two types work for Trellis kinds.
        let got = apply(
            plugins,
            &json!({"spec": {"a": 1}}),
            br#"{"spec": {"b": 2}}"#,
            PatchType::Merge,
        )
        .unwrap();
        assert_eq!(got, json!({"spec": {"a": 1, "b": 2}}));
    }

    #[test]
    fn merge_key_table() {
        use Strategy::{Key, Set};
        let cases: &[(&str, &[&str], Option<Strategy>)] = &[
            ("Pod", &["metadata", "finalizers"], Some(Set)),
            ("Secret", &["metadata", "ownerReferences"], Some(Key("uid"))),
            ("Pod", &["spec", "containers"], Some(Key("name"))),
            ("Pod", &["spec", "initContainers", "env"], Some(Key("name"))),
            ("Pod", &["spec", "containers", "envFrom"], None),
            (
                "Pod",
                &["spec", "ephemeralContainers", "volumeMounts"],
                Some(Key("mountPath")),
            ),
            (
                "Pod",
                &["spec", "containers", "volumeDevices"],
                Some(Key("devicePath")),
            ),
            ("Pod", &["spec", "volumes"], Some(Key("name"))),
            ("Pod", &["spec", "imagePullSecrets"], Some(Key("name"))),
            ("Pod", &["spec", "hostAliases"], Some(Key("ip"))),
            ("Pod", &["spec", "tolerations"], None),
            (
                "Pod",
                &["spec", "topologySpreadConstraints"],
                Some(Key("topologyKey")),
            ),
            ("Pod", &["status", "conditions"], Some(Key("type"))),
            ("Pod", &["status", "containerStatuses"], None),
            (
                "Deployment",
                &["spec", "template", "spec", "containers", "ports"],
                Some(Key("containerPort")),
            ),
            (
                "Deployment",
                &["spec", "template", "metadata", "finalizers"],
                Some(Set),
            ),
            ("Deployment", &["spec", "containers"], None),
            ("StatefulSet", &["status", "conditions"], Some(Key("type"))),
            (
                "Job",
                &["spec", "template", "spec", "volumes"],
                Some(Key("name")),
            ),
            (
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers",
                ],
                Some(Key("name")),
            ),
            (
                "CronJob",
                &["spec", "jobTemplate", "metadata", "ownerReferences"],
                Some(Key("uid")),
            ),
            ("Node", &["spec", "taints"], None),
            ("Node", &["spec", "podCIDRs"], Some(Set)),
            ("Node", &["status", "addresses"], Some(Key("type"))),
            ("Service", &["spec", "ports"], Some(Key("port"))),
            ("Endpoints", &["subsets"], None),
            ("EndpointSlice", &["endpoints"], None),
            ("ConfigMap", &["spec", "metadata", "finalizers"], None),
        ];
        for (kind, path, want) in cases {
            assert_eq!(merge_key(kind, path), *want, "{kind} {path:?}");
        }
    }

    #[test]
    fn deep_patches_stay_within_the_stack() {
        // As deep as serde_json will parse, in every patch type.
        let depth = 120;
        let open = "{\"a\":".repeat(depth);
        let close = "}".repeat(depth);
        let patch = format!("{open}null{close}");
        let doc: Value = serde_json::from_str(&format!("{open}1{close}")).unwrap();
        let cm = kind("", "ConfigMap");
        for ty in [PatchType::Merge, PatchType::StrategicMerge] {
            apply(cm, &doc, patch.as_bytes(), ty).unwrap();
        }
        let pointer = "/a".repeat(depth);
        let ops = format!(r#"[{{"op": "test", "path": "{pointer}", "value": 1}}]"#);
        assert_eq!(
            apply(cm, &doc, ops.as_bytes(), PatchType::Json).unwrap(),
            doc
        );
        // Deeper than the parser allows is a 400, not a crash.
        let deep = "[".repeat(10_000);
        let err = apply(cm, &doc, deep.as_bytes(), PatchType::Json).unwrap_err();
        assert_eq!(err.status_code(), 400);
    }
}
