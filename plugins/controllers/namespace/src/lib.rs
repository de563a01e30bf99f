//! Upstream's namespace controller (kube-controller-manager's `namespace`, the
//! "namespace lifecycle" deleter): a namespace being deleted is emptied, then
//! released.
//!
//! The API server gives each new namespace `spec.finalizers: ["kubernetes"]`
//! and, on DELETE, sets `deletionTimestamp` and `status.phase: Terminating`
//! but keeps the object while a finalizer is left. Keys are namespaces
//! (`("", name)`: the primary kind is `v1 Namespace`, cluster-scoped; nothing
//! else is watched, as upstream). For a namespace with a deletionTimestamp
//! that still holds the `kubernetes` finalizer, a reconcile:
//!
//! 1. deletes every object in it of every kind in `kinds` that is not already
//!    being deleted (propagation `Background`), then lists again and counts
//!    what remains, by kind and by finalizer (pods stay for their grace
//!    period, objects with finalizers until those are removed);
//! 2. writes the namespace's status as upstream's `namespaceConditionUpdater`
//!    does — `phase: Terminating` and the conditions
//!    `NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`,
//!    `NamespaceDeletionContentFailure`, `NamespaceContentRemaining` and
//!    `NamespaceFinalizersRemaining`, each `False` with its "ok" reason unless
//!    something failed or remains — only when it changed;
//! 3. when a kind could not be listed or deleted (`AccessDenied`,
//!    `Unavailable`, …) returns an error, so the key is retried with back-off:
//!    like upstream it blocks, and says why in `NamespaceDeletionContentFailure`;
//!    when objects remain, requeues after `recheckInterval`;
//! 4. when nothing remains, `update`s the namespace with `kubernetes` removed
//!    from `spec.finalizers` (the API server removes it once no finalizer is left).
//!
//! Config (JSON, every key optional):
//! - `kinds`: the namespaced kinds to empty, as `{"group", "version", "kind",
//!   "plural"}` (`plural` defaults to the served plural for a kind below, else
//!   the lowercase kind + "s"); default [`default_kinds`], the namespaced kinds
//!   the Trellis API serves.
//! - `recheckInterval`: a Go duration, default "1s".

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{kind, namespace};
use trellis_sdk::controller::*;
use trellis_sdk::objects;

/// The finalizer the API server puts in a namespace's `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";

/// A kind to empty from terminating namespaces.
#[derive(Debug, Clone)]
pub struct ContentKind {
    /// Group, version, kind.
    pub kind: KindRef,
    /// The resource name in URLs and in condition messages, e.g. "pods".
    pub plural: String,
}

/// `(group, version, kind, plural)` of every namespaced kind the API serves
/// (`host/api/src/registry.rs`), workloads first so that they do not replace
/// the pods deleted after them.
#[rustfmt::skip]
const SERVED: &[(&str, &str, &str, &str)] = &[
    ("batch", "v1", "CronJob", "cronjobs"),
    ("batch", "v1", "Job", "jobs"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("", "v1", "Endpoints", "endpoints"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ("", "v1", "ConfigMap", "configmaps"),
    ("", "v1", "Secret", "secrets"),
    ("", "v1", "ServiceAccount", "serviceaccounts"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ("", "v1", "LimitRange", "limitranges"),
    ("", "v1", "ResourceQuota", "resourcequotas"),
    ("coordination.k8s.io", "v1", "Lease", "leases"),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    ("", "v1", "Event", "events"),
];

/// The default `kinds`: every namespaced kind the Trellis API serves.
pub fn default_kinds() -> Vec<ContentKind> {
    SERVED
        .iter()
        .map(|(g, v, k, p)| ContentKind {
            kind: kind(g, v, k),
            plural: (*p).into(),
        })
        .collect()
}

/// The configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `kinds`; default [`default_kinds`].
    pub kinds: Vec<ContentKind>,
    /// `recheckInterval` in milliseconds; default "1s".
    pub recheck_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            kinds: default_kinds(),
            recheck_ms: 1000,
        }
    }
}

fn invalid(msg: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(msg.into())
}

fn only_keys(v: &Map<String, Value>, keys: &[&str], what: &str) -> Result<(), PluginError> {
    match v.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{what}: unknown field {k:?}"))),
        None => Ok(()),
    }
}

impl Config {
    /// Parse and check the JSON config (`{}` gives the defaults).
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let v: Value = serde_json::from_str(if text.trim().is_empty() { "{}" } else { text })
            .map_err(|e| invalid(format!("not JSON: {e}")))?;
        let m = v
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object"))?;
        only_keys(m, &["kinds", "recheckInterval"], "config")?;
        let mut cfg = Config::default();
        if let Some(ks) = m.get("kinds").filter(|k| !k.is_null()) {
            let ks = ks
                .as_array()
                .ok_or_else(|| invalid("kinds: expected a list"))?;
            cfg.kinds = ks
                .iter()
                .enumerate()
                .map(|(i, k)| content_kind(k, i))
                .collect::<Result<_, _>>()?;
        }
        match m.get("recheckInterval") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                cfg.recheck_ms =
                    objects::duration_ms(s).map_err(|e| invalid(format!("recheckInterval: {e}")))?
            }
            Some(_) => {
                return Err(invalid(
                    "recheckInterval: expected a duration such as \"1s\"",
                ))
            }
        }
        Ok(cfg)
    }
}

fn content_kind(v: &Value, i: usize) -> Result<ContentKind, PluginError> {
    let what = format!("kinds[{i}]");
    let m = v.as_object().ok_or_else(|| {
        invalid(format!(
            "{what}: expected {{\"group\", \"version\", \"kind\"}}"
        ))
    })?;
    only_keys(m, &["group", "version", "kind", "plural"], &what)?;
    let field = |k: &str, required: bool| -> Result<String, PluginError> {
        match m.get(k) {
            None | Some(Value::Null) if !required => Ok(String::new()),
            Some(Value::String(s)) if !(required && s.is_empty()) => Ok(s.clone()),
            _ => Err(invalid(format!("{what}.{k}: Required value"))),
        }
    };
    let (group, version, k) = (
        field("group", false)?,
        field("version", true)?,
        field("kind", true)?,
    );
    let mut plural = field("plural", false)?;
    if plural.is_empty() {
        plural = SERVED
            .iter()
            .find(|(g, _, kk, _)| *g == group && *kk == k)
            .map_or_else(|| format!("{}s", k.to_lowercase()), |s| s.3.to_string());
    }
    Ok(ContentKind {
        kind: kind(&group, &version, &k),
        plural,
    })
}

/// The condition types, in upstream's order.
const CONDITIONS: &[(&str, &str, &str)] = &[
    (
        "NamespaceDeletionDiscoveryFailure",
        "ResourcesDiscovered",
        "All resources successfully discovered",
    ),
    (
        "NamespaceDeletionGroupVersionParsingFailure",
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    (
        "NamespaceDeletionContentFailure",
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    (
        "NamespaceContentRemaining",
        "ContentRemoved",
        "All content successfully removed",
    ),
    (
        "NamespaceFinalizersRemaining",
        "ContentHasNoFinalizers",
        "All content-preserving finalizers finished",
    ),
];

fn error_text(e: &ObjectError) -> String {
    match e {
        ObjectError::NotFound => "not found".into(),
        ObjectError::AccessDenied(m)
        | ObjectError::Conflict(m)
        | ObjectError::Invalid(m)
        | ObjectError::Unavailable(m) => m.clone(),
    }
}

/// What deleting the content found.
#[derive(Debug, Default)]
struct Content {
    /// "plural.group" → objects left.
    remaining: BTreeMap<String, usize>,
    /// finalizer → objects left that carry it.
    finalizers: BTreeMap<String, usize>,
    /// What could not be listed or deleted.
    errors: Vec<String>,
}

fn delete_content(api: &impl Api, cfg: &Config, ns: &str) -> Content {
    let mut out = Content::default();
    for ck in &cfg.kinds {
        let resource = format!("{}.{}", ck.plural, ck.kind.group);
        let items = match api.list(&ck.kind, ns, "") {
            Ok(items) => items,
            Err(e) => {
                out.errors
                    .push(format!("failed to list {resource}: {}", error_text(&e)));
                continue;
            }
        };
        if items.is_empty() {
            continue;
        }
        for item in items.iter().filter(|i| !objects::is_deleting(i)) {
            let name = objects::name(item);
            match api.delete(&ck.kind, ns, name, "Background") {
                Ok(()) | Err(ObjectError::NotFound) => {}
                Err(e) => out.errors.push(format!(
                    "failed to delete {resource} {name}: {}",
                    error_text(&e)
                )),
            }
        }
        // Count what the deletes left, as upstream lists again after its DeleteCollection.
        let left = api.list(&ck.kind, ns, "").unwrap_or(items);
        if left.is_empty() {
            continue;
        }
        out.remaining.insert(resource, left.len());
        for item in &left {
            for f in item["metadata"]["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(f) = f.as_str() {
                    *out.finalizers.entry(f.to_string()).or_default() += 1;
                }
            }
        }
    }
    out
}

/// The new conditions: upstream's `namespaceConditionUpdater.Update`, which
/// keeps an old condition (and its lastTransitionTime) when its status,
/// reason and message are the same.
fn conditions(old: &Value, content: &Content, now: &str) -> Value {
    let mut failing: BTreeMap<&str, (String, String)> = BTreeMap::new();
    if !content.errors.is_empty() {
        failing.insert(
            "NamespaceDeletionContentFailure",
            (
                "ContentDeletionFailed".into(),
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    content.errors.len(),
                    content.errors.join(", ")
                ),
            ),
        );
    }
    if !content.remaining.is_empty() {
        let mut parts: Vec<String> = content
            .remaining
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        parts.sort();
        failing.insert(
            "NamespaceContentRemaining",
            (
                "SomeResourcesRemain".into(),
                format!("Some resources are remaining: {}", parts.join(", ")),
            ),
        );
    }
    if !content.finalizers.is_empty() {
        let mut parts: Vec<String> = content
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        parts.sort();
        failing.insert(
            "NamespaceFinalizersRemaining",
            (
                "SomeFinalizersRemain".into(),
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    parts.join(", ")
                ),
            ),
        );
    }
    let old = old["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for (type_, ok_reason, ok_message) in CONDITIONS {
        let (status, reason, message) = match failing.get(type_) {
            Some((r, m)) => ("True", r.as_str(), m.as_str()),
            None => ("False", *ok_reason, *ok_message),
        };
        let same = old
            .iter()
            .find(|c| c["type"] == *type_)
            .filter(|c| c["status"] == status && c["reason"] == reason && c["message"] == message);
        out.push(same.cloned().unwrap_or_else(|| {
            json!({"type": type_, "status": status, "lastTransitionTime": now,
                   "reason": reason, "message": message})
        }));
    }
    Value::Array(out)
}

fn internal(what: &str, e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{what}: {e:?}"))
}

/// Empty and release the namespace the key names, if it is being deleted.
pub fn reconcile(api: &impl Api, cfg: &Config, key: &ObjectKey) -> Result<Action, PluginError> {
    let name = if key.namespace.is_empty() {
        &key.name
    } else {
        &key.namespace
    };
    let mut ns = match api.get(&namespace(), "", name) {
        Ok(o) => o,
        Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
        Err(e) => return Err(internal(&format!("get namespace {name}"), e)),
    };
    if !objects::is_deleting(&ns) {
        return Ok(Action::AwaitChange);
    }
    let spec_finalizers: Vec<Value> = ns["spec"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !spec_finalizers.iter().any(|f| f == FINALIZER) {
        // Finalized already; the API server removes it once metadata.finalizers are gone.
        return Ok(Action::AwaitChange);
    }

    let content = delete_content(api, cfg, name);
    let now = objects::rfc3339(api.now());
    let conds = conditions(&ns, &content, &now);
    if ns["status"]["phase"] != "Terminating" || ns["status"]["conditions"] != conds {
        let mut new = ns.clone();
        new["status"]["phase"] = json!("Terminating");
        new["status"]["conditions"] = conds;
        ns = api
            .update_status(&namespace(), "", &new)
            .map_err(|e| internal(&format!("update status of namespace {name}"), e))?;
    }
    if !content.errors.is_empty() {
        return Err(PluginError::Internal(format!(
            "namespace {name}: failed to delete all resource types: {}",
            content.errors.join(", ")
        )));
    }
    if !content.remaining.is_empty() {
        return Ok(Action::RequeueAfter(cfg.recheck_ms));
    }
    let rest: Vec<Value> = spec_finalizers
        .into_iter()
        .filter(|f| f != FINALIZER)
        .collect();
    ns["spec"]["finalizers"] = Value::Array(rest);
    match api.update(&namespace(), "", &ns) {
        Ok(_) | Err(ObjectError::NotFound) => Ok(Action::AwaitChange),
        Err(e) => Err(internal(&format!("finalize namespace {name}"), e)),
    }
}

/// The controller's name, as kube-controller-manager's `--controllers` calls it.
pub const NAME: &str = "namespace";

/// The controller.
#[derive(Default)]
pub struct NamespaceController {
    config: Option<Config>,
}

impl Controller for NamespaceController {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: namespace(),
            watches: Vec::new(),
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Some(Config::parse(config)?);
        Ok(())
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        let default = Config::default();
        reconcile(&Host, self.config.as_ref().unwrap_or(&default), &key)
    }
}

trellis_sdk::export_controller!(NamespaceController);

#[cfg(test)]
mod tests;
