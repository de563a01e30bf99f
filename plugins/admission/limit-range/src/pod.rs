//! Pods: upstream's `PodMutateLimitFunc` (defaults and the
//! `kubernetes.io/limit-ranger` annotation) and `PodValidateLimitFunc`
//! (Container and Pod items), plus the pod-level sums they use.

use serde_json::Value;

use crate::constraints::{self, aggregate};
use crate::limits::{resource_list, LimitRange, ResourceList};
use crate::patch::Patch;
use crate::quantity::Quantity;

const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The container lists LimitRanger looks at, with the words its annotation
/// uses for them.
const LISTS: [(&str, &str); 2] = [
    ("containers", "container"),
    ("initContainers", "init container"),
];

/// A container's resources as the checks read them.
struct Container {
    requests: ResourceList,
    limits: ResourceList,
    /// A sidecar (`restartPolicy: Always` init container).
    restartable: bool,
}

fn containers(pod: &Value, list: &str) -> Result<Vec<Container>, String> {
    let items = match &pod["spec"][list] {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        _ => return Err(format!("spec.{list} must be a list")),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = format!("spec.{list}[{i}].resources");
            Ok(Container {
                requests: resource_list(&c["resources"]["requests"], &format!("{path}.requests"))?,
                limits: resource_list(&c["resources"]["limits"], &format!("{path}.limits"))?,
                restartable: c["restartPolicy"] == "Always",
            })
        })
        .collect()
}

/// Upstream's `defaultContainerResourceRequirements`: the `default` and
/// `defaultRequest` of the LimitRange's Container items (a later item wins).
fn container_defaults(lr: &LimitRange) -> (ResourceList, ResourceList) {
    let (mut limits, mut requests) = (ResourceList::new(), ResourceList::new());
    for item in lr.limits.iter().filter(|i| i.kind == "Container") {
        requests.extend(item.default_request.iter().map(|(k, v)| (k.clone(), *v)));
        limits.extend(item.default.iter().map(|(k, v)| (k.clone(), *v)));
    }
    (limits, requests)
}

/// Apply one LimitRange's defaults to `pod` (upstream's
/// `mergePodResourceRequirements`): each container and init container gets
/// the default limit and request of every resource it does not set, and the
/// annotation says what was set (replacing one an earlier LimitRange wrote).
pub fn apply_defaults(lr: &LimitRange, pod: &mut Value, patch: &mut Patch) -> Result<(), String> {
    let (default_limits, default_requests) = container_defaults(lr);
    if default_limits.is_empty() && default_requests.is_empty() {
        return Ok(());
    }
    let mut notes: Vec<String> = Vec::new();
    for (list, word) in LISTS {
        let current = containers(pod, list)?;
        for (i, c) in current.iter().enumerate() {
            let index = i.to_string();
            let name = pod["spec"][list][i]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let mut set = |field: &str, defaults: &ResourceList, have: &ResourceList| {
                let mut names = Vec::new();
                for (k, v) in defaults {
                    if !have.contains_key(k) {
                        let path = ["spec", list, &index, "resources", field, k];
                        patch.set(pod, &path, Value::String(v.to_string()));
                        names.push(k.clone());
                    }
                }
                names // sorted: the lists are BTreeMaps, as upstream sorts them
            };
            let limits = set("limits", &default_limits, &c.limits);
            let requests = set("requests", &default_requests, &c.requests);
            if !requests.is_empty() {
                notes.push(format!("{} request for {word} {name}", requests.join(", ")));
            }
            if !limits.is_empty() {
                notes.push(format!("{} limit for {word} {name}", limits.join(", ")));
            }
        }
    }
    if !notes.is_empty() {
        let value = format!("LimitRanger plugin set: {}", notes.join("; "));
        patch.set(
            pod,
            &["metadata", "annotations", ANNOTATION],
            Value::String(value),
        );
    }
    Ok(())
}

/// Upstream's `addResourceList`.
fn add_all(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        match into.get_mut(k) {
            Some(sum) => sum.add(v),
            None => {
                into.insert(k.clone(), *v);
            }
        }
    }
}

/// Upstream's `maxResourceList`.
fn max_all(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        match into.get(k) {
            Some(have) if v.cmp_value(have).is_le() => {}
            _ => {
                into.insert(k.clone(), *v);
            }
        }
    }
}

/// Upstream's `podRequests` / `podLimits`: the sum over containers and
/// sidecars, or the largest init container (plus the sidecars started before
/// it) when that is larger.
fn pod_total(
    main: &[Container],
    init: &[Container],
    of: impl Fn(&Container) -> &ResourceList,
) -> ResourceList {
    let mut total = ResourceList::new();
    for c in main {
        add_all(&mut total, of(c));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in init {
        if c.restartable {
            add_all(&mut total, of(c));
            add_all(&mut sidecars, of(c));
            max_all(&mut init_peak, &sidecars);
        } else {
            let mut during = ResourceList::new();
            add_all(&mut during, of(c));
            add_all(&mut during, &sidecars);
            max_all(&mut init_peak, &during);
        }
    }
    max_all(&mut total, &init_peak);
    total
}

/// Run `check` for every resource an item enforces, keeping the messages.
fn check_all(
    enforced: &ResourceList,
    check: impl Fn(&str, &Quantity) -> Result<(), String>,
    errs: &mut Vec<String>,
) {
    for (name, q) in enforced {
        if let Err(e) = check(name, q) {
            errs.push(e);
        }
    }
}

/// Upstream's `PodValidateLimitFunc` for one LimitRange: the aggregated
/// message of every violation, or `None`.
pub fn validate(lr: &LimitRange, pod: &Value) -> Result<Option<String>, String> {
    let main = containers(pod, "containers")?;
    let init = containers(pod, "initContainers")?;
    let mut errs = Vec::new();
    for item in &lr.limits {
        let kind = item.kind.as_str();
        match kind {
            "Container" => {
                for c in main.iter().chain(init.iter()) {
                    let (req, lim) = (&c.requests, &c.limits);
                    check_all(
                        &item.min,
                        |n, q| constraints::min(kind, n, q, req, lim),
                        &mut errs,
                    );
                    check_all(
                        &item.max,
                        |n, q| constraints::max(kind, n, q, req, lim),
                        &mut errs,
                    );
                    check_all(
                        &item.max_limit_request_ratio,
                        |n, q| constraints::ratio(kind, n, q, req, lim),
                        &mut errs,
                    );
                }
            }
            "Pod" => {
                let req = pod_total(&main, &init, |c| &c.requests);
                let lim = pod_total(&main, &init, |c| &c.limits);
                check_all(
                    &item.min,
                    |n, q| constraints::min(kind, n, q, &req, &lim),
                    &mut errs,
                );
                check_all(
                    &item.max,
                    |n, q| constraints::max(kind, n, q, &req, &lim),
                    &mut errs,
                );
                check_all(
                    &item.max_limit_request_ratio,
                    |n, q| constraints::ratio(kind, n, q, &req, &lim),
                    &mut errs,
                );
            }
            _ => {}
        }
    }
    Ok(aggregate(&errs))
}

/// Upstream's `PersistentVolumeClaimValidateLimitFunc` for one LimitRange:
/// `min` and `max` against `spec.resources.requests` only.
pub fn validate_claim(lr: &LimitRange, pvc: &Value) -> Result<Option<String>, String> {
    let requests = resource_list(
        &pvc["spec"]["resources"]["requests"],
        "spec.resources.requests",
    )?;
    let none = ResourceList::new();
    let mut errs = Vec::new();
    for item in lr
        .limits
        .iter()
        .filter(|i| i.kind == "PersistentVolumeClaim")
    {
        let kind = item.kind.as_str();
        check_all(
            &item.min,
            |n, q| constraints::min(kind, n, q, &requests, &none),
            &mut errs,
        );
        check_all(
            &item.max,
            |n, q| constraints::max_request(kind, n, q, &requests),
            &mut errs,
        );
    }
    Ok(aggregate(&errs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn total(pod: Value) -> String {
        let main = containers(&pod, "containers").unwrap();
        let init = containers(&pod, "initContainers").unwrap();
        pod_total(&main, &init, |c| &c.requests)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn c(cpu: &str) -> Value {
        json!({"name": "x", "resources": {"requests": {"cpu": cpu}}})
    }

    #[test]
    fn pod_totals_follow_upstream() {
        // Containers add up.
        assert_eq!(
            total(json!({"spec": {"containers": [c("500m"), c("500m")]}})),
            "cpu=1"
        );
        // A larger init container sets the total.
        assert_eq!(
            total(json!({"spec": {"containers": [c("500m")], "initContainers": [c("2")]}})),
            "cpu=2"
        );
        // Sidecars add to the containers and to the init containers after them.
        let mut sidecar = c("1");
        sidecar["restartPolicy"] = json!("Always");
        assert_eq!(
            total(
                json!({"spec": {"containers": [c("500m")], "initContainers": [sidecar, c("1")]}})
            ),
            "cpu=2"
        );
    }
}
