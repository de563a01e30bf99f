//! Upstream's **LimitRanger** admission plugin (Kubernetes v1.32,
//! `plugin/pkg/admission/limitranger`) as one mutating Trellis admission
//! plugin: it applies the namespace's LimitRange defaults, then validates the
//! defaulted object, as upstream's `Admit` and `Validate` do in turn.
//!
//! - **Which requests**: pod CREATE, and PersistentVolumeClaim CREATE and
//!   UPDATE (upstream skips pod updates: containers cannot change). Never a
//!   subresource, nor an object whose old version is being deleted.
//! - **Reads** every LimitRange of the request's namespace through
//!   `objects-read` (grant `read: [{group: "", kind: "LimitRange"}]`), in name
//!   order, and applies `SetDefaults_LimitRangeItem` to each Container item
//!   (`default` ← `max`, `defaultRequest` ← `default`, then ← `min`).
//! - **Defaults** (pods): each container and init container gets the Container
//!   items' `default` as limits and `defaultRequest` as requests for every
//!   resource it does not set, and the pod the annotation
//!   `kubernetes.io/limit-ranger: "LimitRanger plugin set: cpu, memory request
//!   for container app; cpu limit for container app"`. Answered as a JSON
//!   patch; values in upstream's canonical form.
//! - **Validates**: Container items (`min`, `max`, `maxLimitRequestRatio` per
//!   container and init container), Pod items (the same on the pod's totals,
//!   sidecars and init containers counted as upstream's `podRequests`), and
//!   PersistentVolumeClaim items (`min`, `max` on `spec.resources.requests`).
//!   The first LimitRange with a violation denies with 403 and upstream's
//!   messages, aggregated as upstream does (`[a, b]` for several), e.g.
//!   `maximum cpu usage per Container is 1, but limit is 2`.
//!
//! Where upstream ranges over Go maps (resource names), this plugin goes in
//! sorted order, so a message listing several violations is stable.
//!
//! ```json
//! {"name": "LimitRanger", "mutating": true,
//!  "rules": [{"operations": ["CREATE", "UPDATE"], "groups": [""], "kinds": ["Pod", "PersistentVolumeClaim"]}],
//!  "grants": {"read": [{"group": "", "kind": "LimitRange"}]}}
//! ```

pub mod constraints;
pub mod limits;
pub mod patch;
pub mod pod;
pub mod quantity;

use serde_json::Value;
use trellis_sdk::admission::*;
use trellis_sdk::{KindRef, ObjectError};

pub use limits::LimitRange;

/// What a request is to LimitRanger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A pod being created: defaults, then validation.
    Pod,
    /// A PVC being created or updated: validation only.
    Claim,
}

/// Upstream's `SupportsAttributes` and its deletion check: which requests
/// the plugin looks at, `None` for the ones it lets through untouched.
pub fn target(request: &Value) -> Option<Target> {
    if !request["subResource"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return None;
    }
    if !request["kind"]["group"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        return None;
    }
    let op = request["operation"].as_str().unwrap_or_default();
    if !request["oldObject"]["metadata"]["deletionTimestamp"].is_null() {
        return None;
    }
    match (request["kind"]["kind"].as_str(), op) {
        (Some("Pod"), "CREATE") => Some(Target::Pod),
        (Some("PersistentVolumeClaim"), "CREATE" | "UPDATE") => Some(Target::Claim),
        _ => None,
    }
}

/// The outcome of a review, before it becomes a response.
#[derive(Debug, Default)]
pub struct Verdict {
    /// RFC 6902 patch (JSON text), empty when nothing was defaulted.
    pub patch: String,
    /// The denial message, if any LimitRange is violated.
    pub denied: Option<String>,
}

/// Review `request` against `limit_ranges` (already read and defaulted):
/// the whole plugin without the host call, so it can be tested natively.
pub fn admit(request: &Value, limit_ranges: &[LimitRange]) -> Result<Verdict, PluginError> {
    let invalid = |e: String| PluginError::InvalidInput(e);
    let mut verdict = Verdict::default();
    let Some(target) = target(request) else {
        return Ok(verdict);
    };
    let mut object = request["object"].clone();
    if !object.is_object() {
        return Err(invalid("the request has no object".into()));
    }
    match target {
        Target::Pod => {
            let mut patch = patch::Patch::default();
            for lr in limit_ranges {
                pod::apply_defaults(lr, &mut object, &mut patch).map_err(invalid)?;
            }
            for lr in limit_ranges {
                if let Some(m) = pod::validate(lr, &object).map_err(invalid)? {
                    verdict.denied = Some(m);
                    return Ok(verdict);
                }
            }
            if !patch.is_empty() {
                verdict.patch = patch.to_json();
            }
        }
        Target::Claim => {
            for lr in limit_ranges {
                if let Some(m) = pod::validate_claim(lr, &object).map_err(invalid)? {
                    verdict.denied = Some(m);
                    return Ok(verdict);
                }
            }
        }
    }
    Ok(verdict)
}

/// Parse and default the LimitRanges a list returned, in name order.
pub fn limit_ranges(objects: &[String]) -> Result<Vec<LimitRange>, PluginError> {
    let mut out = objects
        .iter()
        .map(|text| {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| PluginError::Internal(format!("a LimitRange is not JSON: {e}")))?;
            LimitRange::from_json(&v).map_err(PluginError::Internal)
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read_limit_ranges(namespace: &str) -> Result<Vec<LimitRange>, PluginError> {
    let kind = KindRef {
        group: String::new(),
        version: "v1".into(),
        kind: "LimitRange".into(),
    };
    let objects = objects::list(&kind, namespace, "").map_err(|e| match e {
        ObjectError::AccessDenied(m) => PluginError::AccessDenied(m),
        other => PluginError::Internal(format!("listing LimitRanges in {namespace:?}: {other:?}")),
    })?;
    limit_ranges(&objects)
}

/// The plugin.
#[derive(Default)]
pub struct LimitRanger;

impl AdmissionPlugin for LimitRanger {
    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let config = config.trim();
        if config.is_empty() {
            return Ok(());
        }
        match serde_json::from_str::<Value>(config) {
            Ok(Value::Object(m)) if m.is_empty() => Ok(()),
            Ok(Value::Object(m)) => Err(PluginError::InvalidConfig(format!(
                "LimitRanger takes no configuration; unknown field {:?}",
                m.keys().next().cloned().unwrap_or_default()
            ))),
            _ => Err(PluginError::InvalidConfig(
                "LimitRanger takes no configuration: pass {}".into(),
            )),
        }
    }

    fn review(&mut self, request: &str) -> Result<AdmissionResponse, PluginError> {
        let request: Value = serde_json::from_str(request)
            .map_err(|e| PluginError::InvalidInput(format!("request is not JSON: {e}")))?;
        if target(&request).is_none() {
            return Ok(allow());
        }
        let namespace = request["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or_else(|| request["object"]["metadata"]["namespace"].as_str())
            .unwrap_or_default();
        if namespace.is_empty() {
            return Ok(allow());
        }
        let verdict = admit(&request, &read_limit_ranges(namespace)?)?;
        Ok(match verdict.denied {
            Some(message) => deny(message),
            None if verdict.patch.is_empty() => allow(),
            None => patch(verdict.patch),
        })
    }
}

trellis_sdk::export_admission!(LimitRanger);
