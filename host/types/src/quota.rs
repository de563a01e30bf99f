//! ResourceQuota as upstream Kubernetes (v1.32) evaluates it: what an object
//! uses (`pkg/quota/v1/evaluator/core`), which quotas it falls under (scopes),
//! and whether a request fits (the ResourceQuota admission plugin's
//! `CheckRequest`), with upstream's denial messages. No IO: the admission
//! plugin feeds it the request and the namespace's quotas; the quota
//! controller feeds it the namespace's objects to recompute `status.used`.
//!
//! Amounts are integers in base units: CPU in millicores, memory and storage
//! in bytes, everything else (pods, services, extended resources) as a count.
//!
//! ```
//! use serde_json::json;
//! use trellis_types::quota;
//!
//! let pod = json!({"spec": {"containers": [{"name": "c",
//!     "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}]}});
//! let usage = quota::usage("", "pods", &pod);
//! assert_eq!(usage["requests.cpu"], 250);
//! assert_eq!(quota::format("requests.memory", usage["requests.memory"]), "64Mi");
//!
//! let q = json!({"metadata": {"name": "compute"},
//!     "status": {"hard": {"pods": "5"}, "used": {"pods": "5"}}});
//! assert_eq!(
//!     quota::check(&q, &usage).unwrap_err(),
//!     "exceeded quota: compute, requested: pods=1, used: pods=5, limited: pods=5"
//! );
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::quantity::{Quantity, QuantityError};

/// Amounts by quota resource name (`requests.cpu`, `count/pods`, ...), in
/// base units: CPU in millicores, memory and storage in bytes, the rest as
/// counts.
pub type Usage = BTreeMap<String, i64>;

/// The infix of storage-class-scoped PVC resources:
/// `<class>.storageclass.storage.k8s.io/requests.storage`.
pub const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Annotation that, when present, names a claim's storage class (it wins
/// over `spec.storageClassName`, as upstream).
const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// Resources quota admission never looks at (upstream's default ignored set).
const IGNORED: &[(&str, &str)] = &[("", "events")];

/// Resources the pod evaluator tracks by exact name.
const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

/// Resources the service evaluator tracks.
const SERVICE_RESOURCES: &[&str] = &[
    "count/services",
    "services",
    "services.nodeports",
    "services.loadbalancers",
];

/// If a quota limits one of these, every container of a pod must set it
/// (upstream keeps this "mistake" for backward compatibility, for these only).
const POD_VALIDATION_SET: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// Scopes upstream knows.
const STANDARD_SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

/// Upstream's `standardQuotaResources` (plus hugepages): the names a scope is
/// checked against.
const STANDARD_QUOTA_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

/// Compute resources a pod-lifecycle scope may limit (besides `pods`).
const POD_COMPUTE_QUOTA_RESOURCES: &[&str] = &[
    "cpu",
    "memory",
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];

// ---------------------------------------------------------------------------
// Names and amounts

/// The underlying resource of a quota name: `requests.cpu` → `cpu`,
/// `gold.storageclass.storage.k8s.io/requests.storage` → `storage`.
fn base_name(resource: &str) -> &str {
    let r = match resource.find(STORAGE_CLASS_SUFFIX) {
        Some(i) => &resource[i + STORAGE_CLASS_SUFFIX.len()..],
        None => resource,
    };
    r.strip_prefix("requests.")
        .or_else(|| r.strip_prefix("limits."))
        .unwrap_or(r)
}

fn is_milli(resource: &str) -> bool {
    base_name(resource) == "cpu"
}

fn is_bytes(resource: &str) -> bool {
    let b = base_name(resource);
    matches!(b, "memory" | "storage" | "ephemeral-storage") || b.starts_with("hugepages-")
}

/// Parse a quantity for `resource` (a quota name such as `limits.cpu` or a
/// container resource such as `memory`) into base units: millicores for CPU,
/// the integer unit (rounded up) for everything else.
pub fn parse(resource: &str, s: &str) -> Result<i64, QuantityError> {
    let q = Quantity::parse(s)?;
    Ok(if is_milli(resource) {
        q.milli_value()
    } else {
        q.value()
    })
}

/// The canonical quantity for an amount of `resource`, as Kubernetes prints
/// it: `500m` and `2` for CPU, `1Gi` for a multiple of 1024 bytes, `1G` or
/// `1500` otherwise, `1k` for a thousand pods.
pub fn format(resource: &str, amount: i64) -> String {
    if is_milli(resource) {
        return format_decimal(amount as i128, -3);
    }
    let m = amount.unsigned_abs();
    if is_bytes(resource) && m >= 1024 && m.is_multiple_of(1024) {
        let (mut m, mut exp) = (m, 0);
        while m.is_multiple_of(1024) && exp < 60 {
            m /= 1024;
            exp += 10;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp / 10];
        let sign = if amount < 0 { "-" } else { "" };
        return format!("{sign}{m}{suffix}");
    }
    format_decimal(amount as i128, 0)
}

/// `mantissa × 10^exp` with the largest SI suffix that keeps it an integer.
fn format_decimal(mantissa: i128, mut exp: i32) -> String {
    if mantissa == 0 {
        return "0".into();
    }
    let mut m = mantissa.unsigned_abs();
    while m.is_multiple_of(1000) && exp < 18 {
        m /= 1000;
        exp += 3;
    }
    let suffix = match exp {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        18 => "E",
        _ => "",
    };
    let sign = if mantissa < 0 { "-" } else { "" };
    format!("{sign}{m}{suffix}")
}

/// A quantity in JSON: normally a string, but Kubernetes also accepts numbers.
fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A `ResourceList` (`{"cpu": "1", ...}`) in base units; entries that do not
/// parse are left out (the API server validated them).
fn resource_list(v: &Value) -> Usage {
    let mut out = Usage::new();
    if let Some(m) = v.as_object() {
        for (k, q) in m {
            if let Some(amount) = quantity_text(q).and_then(|s| parse(k, &s).ok()) {
                out.insert(k.clone(), amount);
            }
        }
    }
    out
}

fn add_into(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_insert(0);
        *e = e.saturating_add(*v);
    }
}

fn max_into(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_insert(*v);
        if *v > *e {
            *e = *v;
        }
    }
}

/// Upstream's `SubtractWithNonNegativeResult`: `a - b` per resource, never
/// below zero; resources only in `b` appear as zero.
pub fn subtract_non_negative(a: &Usage, b: &Usage) -> Usage {
    let mut out: Usage = a
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.saturating_sub(b.get(k).copied().unwrap_or(0)).max(0),
            )
        })
        .collect();
    for k in b.keys() {
        out.entry(k.clone()).or_insert(0);
    }
    out
}

/// The object-count name of a resource: `count/pods`, `count/deployments.apps`.
pub fn object_count_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        format!("count/{resource}")
    } else {
        format!("count/{resource}.{group}")
    }
}

/// Upstream's `IsNativeResource`: unprefixed, or prefixed with `kubernetes.io/`.
fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

/// Upstream's `IsExtendedResourceName`: a vendor-prefixed resource whose
/// quota name (`requests.<name>`) is a valid qualified name.
fn is_extended_resource_name(name: &str) -> bool {
    !is_native_resource(name)
        && !name.starts_with("requests.")
        && is_qualified_name(&format!("requests.{name}"))
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    name_ok && prefix_ok
}

// ---------------------------------------------------------------------------
// Evaluators: one per group/resource, as upstream's registry

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Evaluator<'a> {
    Pod,
    Service,
    Pvc,
    /// Any other resource: `count/<resource>.<group>`, plus the legacy alias
    /// (`configmaps`, `secrets`, ...) for the core kinds that have one.
    Count {
        group: &'a str,
        resource: &'a str,
    },
}

fn evaluator<'a>(group: &'a str, resource: &'a str) -> Evaluator<'a> {
    match (group, resource) {
        ("", "pods") => Evaluator::Pod,
        ("", "services") => Evaluator::Service,
        ("", "persistentvolumeclaims") => Evaluator::Pvc,
        _ => Evaluator::Count { group, resource },
    }
}

fn legacy_alias(group: &str, resource: &str) -> Option<&'static str> {
    match (group, resource) {
        ("", "configmaps") => Some("configmaps"),
        ("", "secrets") => Some("secrets"),
        ("", "resourcequotas") => Some("resourcequotas"),
        ("", "replicationcontrollers") => Some("replicationcontrollers"),
        _ => None,
    }
}

impl Evaluator<'_> {
    /// Upstream's `MatchingResources` for one name.
    fn tracks(&self, name: &str) -> bool {
        match self {
            Evaluator::Pod => {
                POD_RESOURCES.contains(&name)
                    || name.starts_with("hugepages-")
                    || name.starts_with("requests.hugepages-")
                    || (!is_native_resource(name) && name.starts_with("requests."))
            }
            Evaluator::Service => SERVICE_RESOURCES.contains(&name),
            Evaluator::Pvc => {
                matches!(
                    name,
                    "count/persistentvolumeclaims" | "persistentvolumeclaims" | "requests.storage"
                ) || name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"))
                    || name.ends_with(&format!("{STORAGE_CLASS_SUFFIX}requests.storage"))
            }
            Evaluator::Count { group, resource } => {
                name == object_count_name(group, resource)
                    || legacy_alias(group, resource) == Some(name)
            }
        }
    }

    fn matching<'n>(&self, names: impl IntoIterator<Item = &'n String>) -> BTreeSet<String> {
        names
            .into_iter()
            .filter(|n| self.tracks(n))
            .cloned()
            .collect()
    }

    /// Upstream's `Handles`: which operations can change this kind's usage.
    /// Pod updates are handled as upstream does with in-place resize: only a
    /// growth in some resource is charged.
    fn handles(&self, operation: &str) -> bool {
        match self {
            Evaluator::Pod | Evaluator::Service | Evaluator::Pvc => {
                matches!(operation, "CREATE" | "UPDATE")
            }
            Evaluator::Count { .. } => operation == "CREATE",
        }
    }

    fn matches_scope(&self, req: &ScopeRequirement, obj: &Value) -> bool {
        match self {
            Evaluator::Pod => pod_matches_scope(req, obj),
            // Upstream's `MatchesNoScopeFunc`: a scoped quota never covers
            // anything but pods.
            _ => false,
        }
    }

    fn usage(&self, obj: &Value, now_unix: Option<i64>) -> Usage {
        match self {
            Evaluator::Pod => pod_usage(obj, now_unix),
            Evaluator::Service => service_usage(obj),
            Evaluator::Pvc => pvc_usage(obj),
            Evaluator::Count { group, resource } => {
                let mut u = Usage::from([(object_count_name(group, resource), 1)]);
                if let Some(alias) = legacy_alias(group, resource) {
                    u.insert(alias.into(), 1);
                }
                u
            }
        }
    }
}

/// The names among `names` that objects of `group`/`resource` count towards
/// (upstream's `MatchingResources`), e.g. for pods `requests.cpu` and
/// `count/pods` but not `services`.
pub fn matching_resources<'a>(
    group: &str,
    resource: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> BTreeSet<String> {
    let ev = evaluator(group, resource);
    names
        .into_iter()
        .filter(|n| ev.tracks(n))
        .map(str::to_string)
        .collect()
}

/// Which kind's objects count towards a quota resource name, as
/// `(group, resource)`: `requests.cpu` → pods, `services.nodeports` →
/// services, `gold.storageclass.storage.k8s.io/requests.storage` → PVCs,
/// `count/deployments.apps` → `("apps", "deployments")`. `None` for a name no
/// evaluator tracks. The quota controller lists these kinds.
pub fn tracked_by(name: &str) -> Option<(String, String)> {
    for (g, r) in [
        ("", "pods"),
        ("", "services"),
        ("", "persistentvolumeclaims"),
        ("", "configmaps"),
        ("", "secrets"),
        ("", "resourcequotas"),
        ("", "replicationcontrollers"),
    ] {
        if evaluator(g, r).tracks(name) {
            return Some((g.into(), r.into()));
        }
    }
    let rest = name.strip_prefix("count/").filter(|r| !r.is_empty())?;
    Some(match rest.split_once('.') {
        Some((r, g)) => (g.into(), r.into()),
        None => (String::new(), rest.into()),
    })
}

// ---------------------------------------------------------------------------
// Usage

/// What one object uses, by quota resource name (upstream's `Usage`). Pods:
/// `count/pods` always, and unless terminal `pods`, `cpu`/`requests.cpu`,
/// `memory`/`requests.memory`, `ephemeral-storage`/`requests.ephemeral-storage`,
/// `limits.*`, `hugepages-*`, extended `requests.<name>`, computed as
/// max(init containers, sum of containers and sidecars) plus overhead.
/// Services: `services`, `services.nodeports`, `services.loadbalancers`.
/// PVCs: `persistentvolumeclaims`, `requests.storage` and their
/// storage-class forms. Any kind: `count/<resource>[.<group>]`.
pub fn usage(group: &str, resource: &str, obj: &Value) -> Usage {
    usage_at(group, resource, obj, None)
}

/// [`usage`], also applying upstream's rule that a pod deleted longer ago than
/// its grace period no longer counts, at `now_unix` (seconds since the epoch;
/// `None` skips that rule, as admission of a new object may).
pub fn usage_at(group: &str, resource: &str, obj: &Value, now_unix: Option<i64>) -> Usage {
    evaluator(group, resource).usage(obj, now_unix)
}

struct Container {
    name: String,
    requests: Usage,
    limits: Usage,
    restartable: bool,
}

/// A pod's containers of one list, with requests defaulted from limits as the
/// API server's defaulting does (so the result is the same whether or not
/// the object was defaulted already).
fn containers(spec: &Value, field: &str) -> Vec<Container> {
    let Some(list) = spec[field].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|c| {
            let limits = resource_list(&c["resources"]["limits"]);
            let mut requests = resource_list(&c["resources"]["requests"]);
            for (k, v) in &limits {
                requests.entry(k.clone()).or_insert(*v);
            }
            Container {
                name: c["name"].as_str().unwrap_or_default().to_string(),
                requests,
                limits,
                restartable: c["restartPolicy"].as_str() == Some("Always"),
            }
        })
        .collect()
}

/// Upstream's `AggregateContainerRequests`/`AggregateContainerLimits`: the
/// sum of the containers and restartable init containers (sidecars), or the
/// largest init container (plus the sidecars started before it), whichever
/// is larger per resource.
fn aggregate(spec: &Value, pick: impl Fn(&Container) -> &Usage) -> Usage {
    let mut total = Usage::new();
    for c in containers(spec, "containers") {
        add_into(&mut total, pick(&c));
    }
    let mut sidecars = Usage::new();
    let mut init_max = Usage::new();
    for c in containers(spec, "initContainers") {
        let use_now = if c.restartable {
            add_into(&mut total, pick(&c));
            add_into(&mut sidecars, pick(&c));
            sidecars.clone()
        } else {
            let mut u = pick(&c).clone();
            add_into(&mut u, &sidecars);
            u
        };
        max_into(&mut init_max, &use_now);
    }
    max_into(&mut total, &init_max);
    total
}

fn pod_requests(pod: &Value) -> Usage {
    let spec = &pod["spec"];
    let mut r = aggregate(spec, |c| &c.requests);
    add_into(&mut r, &resource_list(&spec["overhead"]));
    r
}

fn pod_limits(pod: &Value) -> Usage {
    let spec = &pod["spec"];
    let mut l = aggregate(spec, |c| &c.limits);
    // Overhead is added only to limits that are set: an unset limit stays unbounded.
    for (k, v) in resource_list(&spec["overhead"]) {
        if let Some(e) = l.get_mut(&k) {
            *e = e.saturating_add(v);
        }
    }
    l
}

/// Upstream's `podComputeUsageHelper`: quota names from requests and limits.
fn pod_compute_usage(requests: &Usage, limits: &Usage) -> Usage {
    let mut out = Usage::from([("pods".to_string(), 1)]);
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(v) = requests.get(r) {
            out.insert(r.into(), *v);
            out.insert(format!("requests.{r}"), *v);
        }
        if let Some(v) = limits.get(r) {
            out.insert(format!("limits.{r}"), *v);
        }
    }
    for (k, v) in requests {
        if k.starts_with("hugepages-") {
            out.insert(k.clone(), *v);
            out.insert(format!("requests.{k}"), *v);
        }
        if is_extended_resource_name(k) {
            out.insert(format!("requests.{k}"), *v);
        }
    }
    out
}

/// Upstream's `QuotaV1Pod`: terminal pods, and pods whose deletion grace
/// period has passed, no longer use compute quota.
fn pod_counts(pod: &Value, now_unix: Option<i64>) -> bool {
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Failed" | "Succeeded")
    ) {
        return false;
    }
    let meta = &pod["metadata"];
    if let (Some(now), Some(deleted), Some(grace)) = (
        now_unix,
        meta["deletionTimestamp"].as_str().and_then(parse_rfc3339),
        meta["deletionGracePeriodSeconds"].as_i64(),
    ) {
        if now > deleted.saturating_add(grace) {
            return false;
        }
    }
    true
}

fn pod_usage(pod: &Value, now_unix: Option<i64>) -> Usage {
    let mut u = Usage::from([("count/pods".to_string(), 1)]);
    if pod_counts(pod, now_unix) {
        add_into(
            &mut u,
            &pod_compute_usage(&pod_requests(pod), &pod_limits(pod)),
        );
    }
    u
}

fn service_usage(svc: &Value) -> Usage {
    let spec = &svc["spec"];
    let ports = spec["ports"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let (mut node_ports, mut load_balancers) = (0, 0);
    match spec["type"].as_str() {
        Some("NodePort") => node_ports = ports.len() as i64,
        Some("LoadBalancer") => {
            // With node-port allocation off only explicitly requested ports count.
            node_ports = if spec["allocateLoadBalancerNodePorts"].as_bool() == Some(false) {
                ports
                    .iter()
                    .filter(|p| p["nodePort"].as_i64().unwrap_or(0) != 0)
                    .count() as i64
            } else {
                ports.len() as i64
            };
            load_balancers = 1;
        }
        _ => {}
    }
    Usage::from([
        ("count/services".to_string(), 1),
        ("services".to_string(), 1),
        ("services.loadbalancers".to_string(), load_balancers),
        ("services.nodeports".to_string(), node_ports),
    ])
}

fn pvc_usage(pvc: &Value) -> Usage {
    let mut u = Usage::from([
        ("persistentvolumeclaims".to_string(), 1),
        ("count/persistentvolumeclaims".to_string(), 1),
    ]);
    let class = match &pvc["metadata"]["annotations"][BETA_STORAGE_CLASS_ANNOTATION] {
        Value::String(s) => s.as_str(),
        _ => pvc["spec"]["storageClassName"].as_str().unwrap_or_default(),
    };
    if !class.is_empty() {
        u.insert(
            format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
            1,
        );
    }
    let storage = |v: &Value| quantity_text(v).and_then(|s| parse("storage", &s).ok());
    let mut requested = storage(&pvc["spec"]["resources"]["requests"]["storage"]);
    // RecoverVolumeExpansionFailure (on by default in 1.32): while a resize is
    // in flight or failed, the larger allocated size is charged.
    if let (Some(r), Some(allocated)) = (
        requested,
        storage(&pvc["status"]["allocatedResources"]["storage"]),
    ) {
        requested = Some(r.max(allocated));
    }
    if let Some(r) = requested {
        u.insert("requests.storage".into(), r);
        if !class.is_empty() {
            u.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), r);
        }
    }
    u
}

/// Seconds since the epoch of an RFC 3339 timestamp (`2024-05-01T10:00:00Z`,
/// fractions and offsets allowed).
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days-from-civil.
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

// ---------------------------------------------------------------------------
// Scopes

/// One scope a quota selects by: from `spec.scopes` (operator `Exists`) or
/// from `spec.scopeSelector.matchExpressions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequirement {
    /// `Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`,
    /// `PriorityClass` or `CrossNamespacePodAffinity`.
    pub scope_name: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn` (priority class names).
    pub values: Vec<String>,
}

/// A quota's scopes: `spec.scopes` then `spec.scopeSelector.matchExpressions`.
pub fn scope_selectors(quota: &Value) -> Vec<ScopeRequirement> {
    let spec = &quota["spec"];
    let mut out: Vec<ScopeRequirement> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| ScopeRequirement {
            scope_name: s.into(),
            operator: "Exists".into(),
            values: Vec::new(),
        })
        .collect();
    for e in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(ScopeRequirement {
            scope_name: e["scopeName"].as_str().unwrap_or_default().into(),
            operator: e["operator"].as_str().unwrap_or_default().into(),
            values: e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        });
    }
    out
}

fn is_terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0)
}

/// Upstream's QoS class `BestEffort`: no container (init containers
/// included) requests or limits any CPU or memory. A recorded
/// `status.qosClass` wins, as in upstream's `GetPodQOS`.
fn is_best_effort(pod: &Value) -> bool {
    if let Some(q) = pod["status"]["qosClass"].as_str().filter(|q| !q.is_empty()) {
        return q == "BestEffort";
    }
    let spec = &pod["spec"];
    !["containers", "initContainers"].iter().any(|field| {
        spec[*field].as_array().into_iter().flatten().any(|c| {
            ["requests", "limits"].iter().any(|kind| {
                let list = resource_list(&c["resources"][*kind]);
                ["cpu", "memory"]
                    .iter()
                    .any(|r| list.get(*r).is_some_and(|v| *v > 0))
            })
        })
    })
}

fn uses_cross_namespace_pod_affinity(pod: &Value) -> bool {
    let aff = &pod["spec"]["affinity"];
    let cross = |t: &Value| {
        t["namespaces"].as_array().is_some_and(|n| !n.is_empty())
            || !t["namespaceSelector"].is_null()
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = &aff[*kind];
        a["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .any(cross)
            || a["preferredDuringSchedulingIgnoredDuringExecution"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|w| cross(&w["podAffinityTerm"]))
    })
}

fn pod_matches_scope(req: &ScopeRequirement, pod: &Value) -> bool {
    match req.scope_name.as_str() {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            // A label selector over {"PriorityClass": name}, the key absent
            // when the pod names no class.
            let class = pod["spec"]["priorityClassName"]
                .as_str()
                .unwrap_or_default();
            let listed = req.values.iter().any(|v| v == class);
            match req.operator.as_str() {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => !class.is_empty() && listed,
                "NotIn" => class.is_empty() || !listed,
                // Validation refuses other operators; upstream errors, we do not match.
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => uses_cross_namespace_pod_affinity(pod),
        _ => false,
    }
}

/// Whether an object of `group`/`resource` falls under every scope of the
/// quota (a quota without scopes covers everything). Only pods can match a
/// scoped quota, as upstream.
pub fn matches_scopes(quota: &Value, group: &str, resource: &str, obj: &Value) -> bool {
    let ev = evaluator(group, resource);
    scope_selectors(quota)
        .iter()
        .all(|s| ev.matches_scope(s, obj))
}

/// Upstream's `Evaluator.Matches`: the quota's scopes cover the object and
/// the quota limits at least one resource objects of this kind count towards.
pub fn matches(quota: &Value, group: &str, resource: &str, obj: &Value) -> bool {
    let hard = hard(quota);
    !matching_resources(group, resource, hard.keys().map(String::as_str)).is_empty()
        && matches_scopes(quota, group, resource, obj)
}

/// Whether `scope` may limit `resource` (upstream's
/// `IsResourceQuotaScopeValidForResource`): `BestEffort` only `pods`; the
/// other pod scopes `pods` and CPU/memory requests and limits. Names that are
/// not standard quota resources (e.g. `count/pods`) are allowed with any scope.
pub fn scope_allows(scope: &str, resource: &str) -> bool {
    let standard = STANDARD_QUOTA_RESOURCES.contains(&resource)
        || resource.starts_with("hugepages-")
        || resource.starts_with("requests.hugepages-");
    if !standard {
        return true;
    }
    match scope {
        "Terminating"
        | "NotTerminating"
        | "NotBestEffort"
        | "PriorityClass"
        | "CrossNamespacePodAffinity" => {
            resource == "pods" || POD_COMPUTE_QUOTA_RESOURCES.contains(&resource)
        }
        "BestEffort" => resource == "pods",
        _ => true,
    }
}

/// Upstream's validation of a quota spec's `scopes` and `scopeSelector`, as
/// `path: message` lines (empty when valid).
pub fn validate_scopes(spec: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let hard: Vec<&str> = spec["hard"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let check_pairs = |set: &BTreeSet<&str>, path: &str, errs: &mut Vec<String>| {
        for (a, b) in [
            ("BestEffort", "NotBestEffort"),
            ("Terminating", "NotTerminating"),
        ] {
            if set.contains(a) && set.contains(b) {
                errs.push(format!("{path}: conflicting scopes"));
            }
        }
    };
    let mut scopes = BTreeSet::new();
    for s in spec["scopes"].as_array().into_iter().flatten() {
        let s = s.as_str().unwrap_or_default();
        if !STANDARD_SCOPES.contains(&s) {
            errs.push("spec.scopes: unsupported scope".into());
        }
        for k in &hard {
            if !scope_allows(s, k) {
                errs.push("spec.scopes: unsupported scope applied to resource".into());
            }
        }
        scopes.insert(s);
    }
    check_pairs(&scopes, "spec.scopes", &mut errs);
    let mut selected = BTreeSet::new();
    for e in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = e["scopeName"].as_str().unwrap_or_default();
        let op = e["operator"].as_str().unwrap_or_default();
        let values = e["values"].as_array().map(Vec::len).unwrap_or(0);
        if !STANDARD_SCOPES.contains(&name) {
            errs.push("spec.scopeSelector.scopeName: unsupported scope".into());
        }
        for k in &hard {
            if !scope_allows(name, k) {
                errs.push("spec.scopeSelector: unsupported scope applied to resource".into());
            }
        }
        if name != "PriorityClass" && STANDARD_SCOPES.contains(&name) && op != "Exists" {
            errs.push("spec.scopeSelector.operator: must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity".into());
        }
        match op {
            "In" | "NotIn" if values == 0 => errs.push("spec.scopeSelector.values: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector".into()),
            "Exists" | "DoesNotExist" if values != 0 => errs.push("spec.scopeSelector.values: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector".into()),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => errs.push("spec.scopeSelector.operator: not a valid selector operator".into()),
        }
        selected.insert(name);
    }
    check_pairs(&selected, "spec.scopeSelector", &mut errs);
    errs
}

// ---------------------------------------------------------------------------
// Checking and charging

fn name_of(quota: &Value) -> &str {
    quota["metadata"]["name"].as_str().unwrap_or_default()
}

/// The quota's limits: `status.hard` (the controller's copy of `spec.hard`,
/// which upstream admission reads), or `spec.hard` while the controller has
/// not filled in the status yet. Upstream ignores such a quota until then;
/// here it refuses with "status unknown" instead, so a new quota holds from
/// its first request.
pub fn hard(quota: &Value) -> Usage {
    match &quota["status"]["hard"] {
        v @ Value::Object(_) => resource_list(v),
        _ => resource_list(&quota["spec"]["hard"]),
    }
}

/// The quota's `status.used`.
pub fn used(quota: &Value) -> Usage {
    resource_list(&quota["status"]["used"])
}

fn pretty(list: &Usage, keys: &[&String]) -> String {
    keys.iter()
        .filter_map(|k| list.get(*k).map(|v| format!("{k}={}", format(k, *v))))
        .collect::<Vec<_>>()
        .join(",")
}

/// Check that charging `delta` keeps the quota within its limits. Only
/// resources the quota limits are charged, zeros are ignored. Returns the new
/// `status.used`, or upstream's denial message:
/// `exceeded quota: NAME, requested: R=V, used: R=V, limited: R=V` (resources
/// sorted, comma-joined), or `status unknown for quota: NAME, resources: R`
/// when `status.used` lacks a resource to charge.
pub fn check(quota: &Value, delta: &Usage) -> Result<Usage, String> {
    let name = name_of(quota);
    let hard = hard(quota);
    let used = used(quota);
    let requested: Usage = delta
        .iter()
        .filter(|(k, v)| **v != 0 && hard.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let unknown: Vec<&str> = requested
        .keys()
        .filter(|k| !used.contains_key(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            unknown.join(",")
        ));
    }
    let mut new_used = used.clone();
    add_into(&mut new_used, &requested);
    let exceeded: Vec<&String> = requested
        .keys()
        .filter(|k| new_used[*k] > hard[*k])
        .collect();
    if !exceeded.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&requested, &exceeded),
            pretty(&used, &exceeded),
            pretty(&hard, &exceeded),
        ));
    }
    Ok(new_used)
}

/// The quota JSON with `status.used` set to `new_used` where it differs
/// (canonical quantities); everything else, `metadata.resourceVersion`
/// included, as it was, so the write is a compare-and-swap on what was read.
pub fn charge(quota: &Value, new_used: &Usage) -> Value {
    let old = used(quota);
    let mut q = quota.clone();
    if !q["status"].is_object() {
        q["status"] = Value::Object(Default::default());
    }
    if !q["status"]["used"].is_object() {
        q["status"]["used"] = Value::Object(Default::default());
    }
    for (k, v) in new_used {
        if old.get(k) != Some(v) {
            q["status"]["used"][k] = Value::String(format(k, *v));
        }
    }
    q
}

/// Upstream's `Constraints`: when a quota limits CPU or memory, every
/// container must state it. `restricted` are the quota resources this kind
/// counts towards (see [`matching_resources`]). The error reads
/// `must specify limits.cpu for: app,init; memory for: app`.
pub fn constraints(
    group: &str,
    resource: &str,
    obj: &Value,
    restricted: &BTreeSet<String>,
) -> Result<(), String> {
    if evaluator(group, resource) != Evaluator::Pod {
        return Ok(());
    }
    let required: Vec<&str> = POD_VALIDATION_SET
        .iter()
        .copied()
        .filter(|r| restricted.contains(*r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let spec = &obj["spec"];
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for c in containers(spec, "containers")
        .into_iter()
        .chain(containers(spec, "initContainers"))
    {
        let has = pod_compute_usage(&c.requests, &c.limits);
        for r in &required {
            if !has.contains_key(*r) {
                missing.entry(r).or_default().insert(c.name.clone());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, cs)| {
            format!(
                "{r} for: {}",
                cs.iter().cloned().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

fn request_str<'a>(request: &'a Value, path: &[&str]) -> &'a str {
    let mut v = request;
    for p in path {
        v = &v[*p];
    }
    v.as_str().unwrap_or_default()
}

/// Whether quota admission looks at an `AdmissionRequest` at all: a CREATE
/// (or, for pods, services and PVCs, an UPDATE) of a namespaced object, not of
/// a subresource and not of an ignored kind (events). When false, the
/// namespace's quotas need not even be read.
pub fn applies(request: &Value) -> bool {
    let (group, resource) = (
        request_str(request, &["resource", "group"]),
        request_str(request, &["resource", "resource"]),
    );
    if !request_str(request, &["subResource"]).is_empty()
        || request_str(request, &["namespace"]).is_empty()
        || (group.is_empty() && resource == "namespaces")
        || IGNORED.contains(&(group, resource))
    {
        return false;
    }
    evaluator(group, resource).handles(request_str(request, &["operation"]))
}

/// Upstream's `CheckRequest` for one `AdmissionRequest` (JSON) against the
/// namespace's quotas: `Ok` with the quotas to charge (each as read, with
/// `status.used` raised by what the object adds; empty when nothing is
/// charged), or `Err` with the denial message. Quotas are considered in name
/// order. On UPDATE only growth is charged, and only to quotas that already
/// covered the old object.
pub fn admit(request: &Value, quotas: &[Value]) -> Result<Vec<Value>, String> {
    if !applies(request) {
        return Ok(Vec::new());
    }
    let group = request_str(request, &["resource", "group"]);
    let resource = request_str(request, &["resource", "resource"]);
    let ev = evaluator(group, resource);
    let obj = &request["object"];

    let mut sorted: Vec<&Value> = quotas.iter().collect();
    sorted.sort_by(|a, b| name_of(a).cmp(name_of(b)));
    let mut interesting = Vec::new();
    for q in sorted {
        let restricted = ev.matching(hard(q).keys());
        if restricted.is_empty() || !matches_scopes(q, group, resource, obj) {
            continue;
        }
        constraints(group, resource, obj, &restricted)
            .map_err(|e| format!("failed quota: {}: {e}", name_of(q)))?;
        let used = used(q);
        if restricted.iter().any(|r| !used.contains_key(r)) {
            return Err(format!(
                "status unknown for quota: {}, resources: {}",
                name_of(q),
                restricted.iter().cloned().collect::<Vec<_>>().join(",")
            ));
        }
        interesting.push(q);
    }

    let input = ev.usage(obj, None);
    let negative: Vec<&str> = input
        .iter()
        .filter(|(_, v)| **v < 0)
        .map(|(k, _)| k.as_str())
        .collect();
    if !negative.is_empty() {
        return Err(format!(
            "quota usage is negative for resource(s): {}",
            negative.join(",")
        ));
    }
    if interesting.is_empty() {
        return Ok(Vec::new());
    }

    let mut deltas: Vec<(&Value, Usage)> =
        interesting.iter().map(|q| (*q, input.clone())).collect();
    if request_str(request, &["operation"]) == "UPDATE" {
        let old = &request["oldObject"];
        if old.is_null() {
            return Err(
                "unable to get previous usage since prior version of object was not found".into(),
            );
        }
        // Without a resourceVersion this may be a create-on-update: charge in full.
        if !request_str(old, &["metadata", "resourceVersion"]).is_empty() {
            let delta = subtract_non_negative(&input, &ev.usage(old, None));
            for (q, d) in &mut deltas {
                if matches(q, group, resource, old) {
                    *d = delta.clone();
                }
            }
        }
    }

    let mut charged = Vec::new();
    for (q, mut delta) in deltas {
        delta.retain(|_, v| *v != 0);
        if delta.is_empty() {
            continue;
        }
        let new_used = check(q, &delta)?;
        if new_used != used(q) {
            charged.push(charge(q, &new_used));
        }
    }
    Ok(charged)
}

/// What a quota's `status.used` should be, recomputed from every object in
/// its namespace (`(group, resource, object)`; objects of kinds the quota does
/// not track are skipped), as upstream's quota controller does: each limited
/// resource some kind tracks starts at zero (see [`tracked_by`]); objects
/// outside the quota's scopes do not count; `now_unix` applies the pod
/// deletion grace rule (see [`usage_at`]).
pub fn calculate_used<'a>(
    quota: &Value,
    objects: impl IntoIterator<Item = (&'a str, &'a str, &'a Value)>,
    now_unix: Option<i64>,
) -> Usage {
    let hard = hard(quota);
    let mut used: Usage = hard
        .keys()
        .filter(|k| tracked_by(k).is_some())
        .map(|k| (k.clone(), 0))
        .collect();
    for (group, resource, obj) in objects {
        let ev = evaluator(group, resource);
        if ev.matching(hard.keys()).is_empty() || !matches_scopes(quota, group, resource, obj) {
            continue;
        }
        for (k, v) in ev.usage(obj, now_unix) {
            if hard.contains_key(&k) {
                let e = used.entry(k).or_insert(0);
                *e = e.saturating_add(v);
            }
        }
    }
    used
}

#[cfg(test)]
#[allow(clippy::cloned_ref_to_slice_refs)] // `&[q.clone()]` reads better in tables
mod tests {
    use super::*;
    use serde_json::json;

    fn u(pairs: &[(&str, i64)]) -> Usage {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn container(name: &str, requests: Value, limits: Value) -> Value {
        json!({"name": name, "image": "busybox", "resources": {"requests": requests, "limits": limits}})
    }

    fn pod(containers: Vec<Value>) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": containers}})
    }

    fn quota(name: &str, hard: Value, used: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": "7"},
            "spec": {"hard": hard.clone()},
            "status": {"hard": hard, "used": used}
        })
    }

    #[test]
    fn parses_and_formats_canonically() {
        let cases = [
            ("cpu", "500m", 500, "500m"),
            ("requests.cpu", "2", 2000, "2"),
            ("limits.cpu", "1.5", 1500, "1500m"),
            ("cpu", "2000", 2_000_000, "2k"),
            ("cpu", "0", 0, "0"),
            ("memory", "1Gi", 1 << 30, "1Gi"),
            ("requests.memory", "1536Mi", 1536 << 20, "1536Mi"),
            ("limits.memory", "1G", 1_000_000_000, "1G"),
            ("memory", "1500", 1500, "1500"),
            ("memory", "512", 512, "512"),
            ("memory", "1024", 1024, "1Ki"),
            ("requests.storage", "10Gi", 10 << 30, "10Gi"),
            (
                "gold.storageclass.storage.k8s.io/requests.storage",
                "5Gi",
                5 << 30,
                "5Gi",
            ),
            ("requests.ephemeral-storage", "2Gi", 2 << 30, "2Gi"),
            ("hugepages-2Mi", "4Mi", 4 << 20, "4Mi"),
            ("pods", "5", 5, "5"),
            ("pods", "1000", 1000, "1k"),
            ("pods", "1024", 1024, "1024"),
            ("count/deployments.apps", "3", 3, "3"),
            ("requests.nvidia.com/gpu", "2", 2, "2"),
            ("memory", "1m", 1, "1"),
        ];
        for (resource, text, amount, canonical) in cases {
            assert_eq!(parse(resource, text).unwrap(), amount, "{resource}={text}");
            assert_eq!(format(resource, amount), canonical, "{resource}={amount}");
        }
        assert_eq!(format("cpu", -500), "-500m");
        assert_eq!(format("memory", -(1 << 20)), "-1Mi");
        assert!(parse("cpu", "lots").is_err());
    }

    #[test]
    fn pod_usage_sums_containers_and_takes_the_largest_init_container() {
        let cases: Vec<(&str, Value, Usage)> = vec![
            (
                "one container",
                pod(vec![container(
                    "a",
                    json!({"cpu": "250m", "memory": "64Mi"}),
                    json!({"cpu": "500m", "memory": "128Mi"}),
                )]),
                u(&[
                    ("count/pods", 1),
                    ("pods", 1),
                    ("cpu", 250),
                    ("requests.cpu", 250),
                    ("limits.cpu", 500),
                    ("memory", 64 << 20),
                    ("requests.memory", 64 << 20),
                    ("limits.memory", 128 << 20),
                ]),
            ),
            (
                "best effort",
                pod(vec![json!({"name": "a", "image": "x"})]),
                u(&[("count/pods", 1), ("pods", 1)]),
            ),
            (
                "two containers add up, a limit only on one is summed as upstream",
                pod(vec![
                    container("a", json!({"cpu": "100m"}), json!({"cpu": "200m"})),
                    container("b", json!({"cpu": "300m"}), json!({})),
                ]),
                u(&[
                    ("count/pods", 1),
                    ("pods", 1),
                    ("cpu", 400),
                    ("requests.cpu", 400),
                    ("limits.cpu", 200),
                ]),
            ),
            (
                "requests default to limits",
                pod(vec![container(
                    "a",
                    json!({}),
                    json!({"cpu": "1", "memory": "1Gi"}),
                )]),
                u(&[
                    ("count/pods", 1),
                    ("pods", 1),
                    ("cpu", 1000),
                    ("requests.cpu", 1000),
                    ("limits.cpu", 1000),
                    ("memory", 1 << 30),
                    ("requests.memory", 1 << 30),
                    ("limits.memory", 1 << 30),
                ]),
            ),
            (
                "ephemeral storage, hugepages and extended resources",
                pod(vec![container(
                    "a",
                    json!({"ephemeral-storage": "1Gi", "hugepages-2Mi": "4Mi", "nvidia.com/gpu": "2"}),
                    json!({"ephemeral-storage": "2Gi", "hugepages-2Mi": "4Mi", "nvidia.com/gpu": "2"}),
                )]),
                u(&[
                    ("count/pods", 1),
                    ("pods", 1),
                    ("ephemeral-storage", 1 << 30),
                    ("requests.ephemeral-storage", 1 << 30),
                    ("limits.ephemeral-storage", 2 << 30),
                    ("hugepages-2Mi", 4 << 20),
                    ("requests.hugepages-2Mi", 4 << 20),
                    ("requests.nvidia.com/gpu", 2),
                ]),
            ),
        ];
        for (name, obj, want) in cases {
            assert_eq!(usage("", "pods", &obj), want, "{name}");
        }

        // Init containers: max(init, sum(containers)) per resource; sidecars
        // (restartPolicy Always) add to the containers and to later inits.
        let mut p = pod(vec![
            container("a", json!({"cpu": "100m", "memory": "100Mi"}), json!({})),
            container("b", json!({"cpu": "100m", "memory": "100Mi"}), json!({})),
        ]);
        p["spec"]["initContainers"] = json!([container(
            "big-cpu",
            json!({"cpu": "500m", "memory": "10Mi"}),
            json!({})
        ),]);
        let got = usage("", "pods", &p);
        assert_eq!(got["requests.cpu"], 500);
        assert_eq!(got["requests.memory"], 200 << 20);

        p["spec"]["initContainers"] = json!([
            {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "50m"}}},
            container("init", json!({"cpu": "250m"}), json!({})),
        ]);
        let got = usage("", "pods", &p);
        // containers 200m + sidecar 50m = 250m; init 250m + sidecar 50m = 300m.
        assert_eq!(got["requests.cpu"], 300);

        // Overhead adds to every request and to limits that are set.
        let mut p = pod(vec![container(
            "a",
            json!({"cpu": "100m"}),
            json!({"cpu": "200m"}),
        )]);
        p["spec"]["overhead"] = json!({"cpu": "10m", "memory": "20Mi"});
        let got = usage("", "pods", &p);
        assert_eq!(got["requests.cpu"], 110);
        assert_eq!(got["limits.cpu"], 210);
        assert_eq!(got["requests.memory"], 20 << 20);
        assert!(!got.contains_key("limits.memory"));
    }

    #[test]
    fn terminal_and_long_deleted_pods_count_only_as_objects() {
        let base = pod(vec![container("a", json!({"cpu": "1"}), json!({}))]);
        for phase in ["Succeeded", "Failed"] {
            let mut p = base.clone();
            p["status"] = json!({"phase": phase});
            assert_eq!(usage("", "pods", &p), u(&[("count/pods", 1)]), "{phase}");
        }
        let mut p = base.clone();
        p["status"] = json!({"phase": "Running"});
        assert_eq!(usage("", "pods", &p)["pods"], 1);

        let mut p = base.clone();
        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:00:00Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let t = parse_rfc3339("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(t, 1_714_557_600);
        assert_eq!(usage_at("", "pods", &p, Some(t + 30))["pods"], 1);
        assert_eq!(
            usage_at("", "pods", &p, Some(t + 31)),
            u(&[("count/pods", 1)])
        );
        assert_eq!(usage("", "pods", &p)["pods"], 1);
        assert_eq!(
            parse_rfc3339("2024-05-01T12:00:00.5+02:00"),
            Some(1_714_557_600)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn service_pvc_and_object_count_usage() {
        let svc = |spec: Value| json!({"metadata": {"name": "s"}, "spec": spec});
        let cases: Vec<(&str, &str, Value, Usage)> = vec![
            (
                "",
                "services",
                svc(json!({"type": "ClusterIP", "ports": [{"port": 80}]})),
                u(&[
                    ("count/services", 1),
                    ("services", 1),
                    ("services.loadbalancers", 0),
                    ("services.nodeports", 0),
                ]),
            ),
            (
                "",
                "services",
                svc(json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]})),
                u(&[
                    ("count/services", 1),
                    ("services", 1),
                    ("services.loadbalancers", 0),
                    ("services.nodeports", 2),
                ]),
            ),
            (
                "",
                "services",
                svc(json!({"type": "LoadBalancer", "ports": [{"port": 80}]})),
                u(&[
                    ("count/services", 1),
                    ("services", 1),
                    ("services.loadbalancers", 1),
                    ("services.nodeports", 1),
                ]),
            ),
            (
                "",
                "services",
                svc(
                    json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
                    "ports": [{"port": 80, "nodePort": 30080}, {"port": 81}]}),
                ),
                u(&[
                    ("count/services", 1),
                    ("services", 1),
                    ("services.loadbalancers", 1),
                    ("services.nodeports", 1),
                ]),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "10Gi"}}}}),
                u(&[
                    ("count/persistentvolumeclaims", 1),
                    ("persistentvolumeclaims", 1),
                    ("requests.storage", 10 << 30),
                    ("gold.storageclass.storage.k8s.io/persistentvolumeclaims", 1),
                    (
                        "gold.storageclass.storage.k8s.io/requests.storage",
                        10 << 30,
                    ),
                ]),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "silver"}},
                    "spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}},
                    "status": {"allocatedResources": {"storage": "2Gi"}}}),
                u(&[
                    ("count/persistentvolumeclaims", 1),
                    ("persistentvolumeclaims", 1),
                    ("requests.storage", 2 << 30),
                    (
                        "silver.storageclass.storage.k8s.io/persistentvolumeclaims",
                        1,
                    ),
                    (
                        "silver.storageclass.storage.k8s.io/requests.storage",
                        2 << 30,
                    ),
                ]),
            ),
            (
                "",
                "persistentvolumeclaims",
                json!({"spec": {}}),
                u(&[
                    ("count/persistentvolumeclaims", 1),
                    ("persistentvolumeclaims", 1),
                ]),
            ),
            (
                "",
                "configmaps",
                json!({}),
                u(&[("configmaps", 1), ("count/configmaps", 1)]),
            ),
            (
                "",
                "secrets",
                json!({}),
                u(&[("count/secrets", 1), ("secrets", 1)]),
            ),
            (
                "apps",
                "deployments",
                json!({}),
                u(&[("count/deployments.apps", 1)]),
            ),
            ("batch", "jobs", json!({}), u(&[("count/jobs.batch", 1)])),
            (
                "",
                "serviceaccounts",
                json!({}),
                u(&[("count/serviceaccounts", 1)]),
            ),
        ];
        for (group, resource, obj, want) in cases {
            assert_eq!(
                usage(group, resource, &obj),
                want,
                "{group}/{resource} {obj}"
            );
        }
    }

    #[test]
    fn matching_resources_per_kind() {
        let names = [
            "pods",
            "count/pods",
            "requests.cpu",
            "limits.memory",
            "requests.nvidia.com/gpu",
            "requests.hugepages-2Mi",
            "requests.storage",
            "services",
            "services.nodeports",
            "configmaps",
            "count/configmaps",
            "count/deployments.apps",
            "gold.storageclass.storage.k8s.io/requests.storage",
            "gold.storageclass.storage.k8s.io/persistentvolumeclaims",
            "persistentvolumeclaims",
            "requests.foo",
        ];
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let cases: [(&str, &str, &[&str]); 5] = [
            (
                "",
                "pods",
                &[
                    "pods",
                    "count/pods",
                    "requests.cpu",
                    "limits.memory",
                    "requests.nvidia.com/gpu",
                    "requests.hugepages-2Mi",
                ],
            ),
            ("", "services", &["services", "services.nodeports"]),
            (
                "",
                "persistentvolumeclaims",
                &[
                    "requests.storage",
                    "gold.storageclass.storage.k8s.io/requests.storage",
                    "gold.storageclass.storage.k8s.io/persistentvolumeclaims",
                    "persistentvolumeclaims",
                ],
            ),
            ("", "configmaps", &["configmaps", "count/configmaps"]),
            ("apps", "deployments", &["count/deployments.apps"]),
        ];
        for (g, r, want) in cases {
            assert_eq!(matching_resources(g, r, names), set(want), "{g}/{r}");
        }
    }

    #[test]
    fn tracked_by_names_the_kind_to_list() {
        let cases = [
            ("pods", Some(("", "pods"))),
            ("requests.cpu", Some(("", "pods"))),
            ("count/pods", Some(("", "pods"))),
            ("requests.example.com/foo", Some(("", "pods"))),
            ("services.loadbalancers", Some(("", "services"))),
            ("requests.storage", Some(("", "persistentvolumeclaims"))),
            (
                "gold.storageclass.storage.k8s.io/requests.storage",
                Some(("", "persistentvolumeclaims")),
            ),
            ("secrets", Some(("", "secrets"))),
            ("count/deployments.apps", Some(("apps", "deployments"))),
            (
                "count/widgets.example.com",
                Some(("example.com", "widgets")),
            ),
            ("count/serviceaccounts", Some(("", "serviceaccounts"))),
            ("requests.foo", None),
            ("count/", None),
        ];
        for (name, want) in cases {
            assert_eq!(
                tracked_by(name),
                want.map(|(g, r)| (g.to_string(), r.to_string())),
                "{name}"
            );
        }
    }

    fn scoped(scopes: Value, selector: Value) -> Value {
        json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "1"}, "scopes": scopes,
            "scopeSelector": {"matchExpressions": selector}}})
    }

    #[test]
    fn scopes_match_as_upstream() {
        let best_effort = pod(vec![json!({"name": "a"})]);
        let burstable = pod(vec![container("a", json!({"cpu": "1"}), json!({}))]);
        let mut terminating = best_effort.clone();
        terminating["spec"]["activeDeadlineSeconds"] = json!(60);
        let mut high = burstable.clone();
        high["spec"]["priorityClassName"] = json!("high");
        let mut cross = best_effort.clone();
        cross["spec"]["affinity"] = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "zone", "namespaceSelector": {}}}]}});
        let mut qos_recorded = burstable.clone();
        qos_recorded["status"] = json!({"qosClass": "BestEffort"});
        let mut zero_request = pod(vec![container("a", json!({"cpu": "0"}), json!({}))]);
        zero_request["metadata"]["name"] = json!("zero");

        let pc = |op: &str, values: Value| {
            scoped(
                json!([]),
                json!([{"scopeName": "PriorityClass", "operator": op, "values": values}]),
            )
        };
        let cases: Vec<(&str, Value, &Value, bool)> = vec![
            ("no scopes", scoped(json!([]), json!([])), &burstable, true),
            (
                "Terminating",
                scoped(json!(["Terminating"]), json!([])),
                &terminating,
                true,
            ),
            (
                "Terminating",
                scoped(json!(["Terminating"]), json!([])),
                &best_effort,
                false,
            ),
            (
                "NotTerminating",
                scoped(json!(["NotTerminating"]), json!([])),
                &best_effort,
                true,
            ),
            (
                "NotTerminating",
                scoped(json!(["NotTerminating"]), json!([])),
                &terminating,
                false,
            ),
            (
                "BestEffort",
                scoped(json!(["BestEffort"]), json!([])),
                &best_effort,
                true,
            ),
            (
                "BestEffort",
                scoped(json!(["BestEffort"]), json!([])),
                &burstable,
                false,
            ),
            (
                "BestEffort zero request",
                scoped(json!(["BestEffort"]), json!([])),
                &zero_request,
                true,
            ),
            (
                "BestEffort recorded",
                scoped(json!(["BestEffort"]), json!([])),
                &qos_recorded,
                true,
            ),
            (
                "NotBestEffort",
                scoped(json!(["NotBestEffort"]), json!([])),
                &burstable,
                true,
            ),
            (
                "NotBestEffort",
                scoped(json!(["NotBestEffort"]), json!([])),
                &best_effort,
                false,
            ),
            (
                "both",
                scoped(json!(["NotBestEffort", "Terminating"]), json!([])),
                &burstable,
                false,
            ),
            (
                "selector form",
                scoped(
                    json!([]),
                    json!([{"scopeName": "BestEffort", "operator": "Exists"}]),
                ),
                &best_effort,
                true,
            ),
            ("PC In", pc("In", json!(["high", "mid"])), &high, true),
            ("PC In other", pc("In", json!(["low"])), &high, false),
            ("PC In none", pc("In", json!(["high"])), &burstable, false),
            ("PC NotIn", pc("NotIn", json!(["high"])), &high, false),
            ("PC NotIn other", pc("NotIn", json!(["low"])), &high, true),
            (
                "PC NotIn none",
                pc("NotIn", json!(["low"])),
                &burstable,
                true,
            ),
            ("PC Exists", pc("Exists", json!([])), &high, true),
            ("PC Exists none", pc("Exists", json!([])), &burstable, false),
            (
                "PC DoesNotExist",
                pc("DoesNotExist", json!([])),
                &burstable,
                true,
            ),
            (
                "PC DoesNotExist set",
                pc("DoesNotExist", json!([])),
                &high,
                false,
            ),
            ("PC bad operator", pc("Near", json!(["high"])), &high, false),
            (
                "CrossNamespacePodAffinity",
                scoped(json!(["CrossNamespacePodAffinity"]), json!([])),
                &cross,
                true,
            ),
            (
                "CrossNamespacePodAffinity none",
                scoped(json!(["CrossNamespacePodAffinity"]), json!([])),
                &best_effort,
                false,
            ),
        ];
        for (name, q, p, want) in cases {
            assert_eq!(matches_scopes(&q, "", "pods", p), want, "{name}");
        }
        // Scoped quotas never cover other kinds; unscoped ones do.
        let svc = json!({"spec": {"type": "ClusterIP"}});
        assert!(!matches_scopes(
            &scoped(json!(["NotBestEffort"]), json!([])),
            "",
            "services",
            &svc
        ));
        assert!(matches_scopes(
            &scoped(json!([]), json!([])),
            "",
            "services",
            &svc
        ));
    }

    #[test]
    fn scopes_limit_only_what_upstream_allows() {
        let cases = [
            ("BestEffort", "pods", true),
            ("BestEffort", "requests.cpu", false),
            ("BestEffort", "services", false),
            ("BestEffort", "count/pods", true),
            ("NotBestEffort", "limits.memory", true),
            ("NotBestEffort", "requests.ephemeral-storage", false),
            ("Terminating", "cpu", true),
            ("NotTerminating", "secrets", false),
            ("PriorityClass", "requests.memory", true),
            ("PriorityClass", "hugepages-2Mi", false),
            ("CrossNamespacePodAffinity", "pods", true),
        ];
        for (scope, resource, want) in cases {
            assert_eq!(scope_allows(scope, resource), want, "{scope} {resource}");
        }
        assert!(
            validate_scopes(&json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"]})).is_empty()
        );
        assert_eq!(
            validate_scopes(&json!({"hard": {"cpu": "1"}, "scopes": ["BestEffort"]})),
            ["spec.scopes: unsupported scope applied to resource"]
        );
        assert_eq!(
            validate_scopes(
                &json!({"hard": {"pods": "1"}, "scopes": ["Terminating", "NotTerminating"]})
            ),
            ["spec.scopes: conflicting scopes"]
        );
        assert_eq!(
            validate_scopes(&json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In"}]}})),
            ["spec.scopeSelector.values: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"]
        );
        assert_eq!(
            validate_scopes(
                &json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                {"scopeName": "BestEffort", "operator": "DoesNotExist"}]}})
            )
            .len(),
            1
        );
    }

    #[test]
    fn check_charges_or_refuses_with_upstream_text() {
        let q = quota(
            "compute",
            json!({"pods": "5", "requests.cpu": "1", "limits.memory": "1Gi"}),
            json!({"pods": "4", "requests.cpu": "500m", "limits.memory": "512Mi"}),
        );
        // Fits: everything limited is charged, the rest ignored.
        let got = check(
            &q,
            &u(&[
                ("pods", 1),
                ("requests.cpu", 500),
                ("count/pods", 1),
                ("limits.memory", 0),
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            u(&[
                ("pods", 5),
                ("requests.cpu", 1000),
                ("limits.memory", 512 << 20)
            ])
        );
        let charged = charge(&q, &got);
        assert_eq!(
            charged["status"]["used"],
            json!({"pods": "5", "requests.cpu": "1", "limits.memory": "512Mi"})
        );
        assert_eq!(charged["metadata"]["resourceVersion"], "7");
        assert_eq!(charged["spec"], q["spec"]);

        let cases: Vec<(Usage, &str)> = vec![
            (
                u(&[("pods", 2)]),
                "exceeded quota: compute, requested: pods=2, used: pods=4, limited: pods=5",
            ),
            (
                u(&[("pods", 2), ("requests.cpu", 600), ("limits.memory", 1 << 20)]),
                "exceeded quota: compute, requested: pods=2,requests.cpu=600m, used: pods=4,requests.cpu=500m, limited: pods=5,requests.cpu=1",
            ),
            (
                u(&[("limits.memory", 513 << 20)]),
                "exceeded quota: compute, requested: limits.memory=513Mi, used: limits.memory=512Mi, limited: limits.memory=1Gi",
            ),
        ];
        for (delta, want) in cases {
            assert_eq!(check(&q, &delta).unwrap_err(), want);
        }

        let unknown = quota(
            "q",
            json!({"pods": "5", "services": "2"}),
            json!({"pods": "1"}),
        );
        assert_eq!(
            check(&unknown, &u(&[("services", 1)])).unwrap_err(),
            "status unknown for quota: q, resources: services"
        );
        // Nothing limited is requested: nothing changes.
        assert_eq!(
            check(&unknown, &u(&[("secrets", 1)])).unwrap(),
            used(&unknown)
        );
    }

    #[test]
    fn hard_falls_back_to_spec_until_the_status_is_filled() {
        let q = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "3"}}});
        assert_eq!(hard(&q), u(&[("pods", 3)]));
        let q = json!({"spec": {"hard": {"pods": "3"}}, "status": {"hard": {"pods": "2"}}});
        assert_eq!(hard(&q), u(&[("pods", 2)]));
        assert_eq!(
            check(
                &json!({"metadata": {"name": "new"}, "spec": {"hard": {"pods": "3"}}}),
                &u(&[("pods", 1)])
            )
            .unwrap_err(),
            "status unknown for quota: new, resources: pods"
        );
    }

    fn request(op: &str, resource: &str, obj: Value) -> Value {
        json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "X"},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "name": "x", "namespace": "ns", "operation": op, "object": obj,
            "oldObject": null, "dryRun": false})
    }

    #[test]
    fn admit_follows_check_request() {
        let p = pod(vec![container(
            "app",
            json!({"cpu": "100m", "memory": "64Mi"}),
            json!({"cpu": "200m", "memory": "128Mi"}),
        )]);
        let req = request("CREATE", "pods", p.clone());
        let compute = quota(
            "compute",
            json!({"pods": "5", "requests.cpu": "1", "limits.cpu": "2", "services": "1"}),
            json!({"pods": "1", "requests.cpu": "100m", "limits.cpu": "200m", "services": "0"}),
        );
        let objects = quota(
            "objects",
            json!({"configmaps": "1"}),
            json!({"configmaps": "0"}),
        );
        let charged = admit(&req, &[objects.clone(), compute.clone()]).unwrap();
        assert_eq!(charged.len(), 1);
        assert_eq!(
            charged[0]["status"]["used"],
            json!({"pods": "2", "requests.cpu": "200m", "limits.cpu": "400m", "services": "0"})
        );

        // No quota, no charge; a namespace without quotas admits everything.
        assert_eq!(
            admit(&req, &[objects.clone()]).unwrap(),
            Vec::<Value>::new()
        );
        assert_eq!(admit(&req, &[]).unwrap(), Vec::<Value>::new());

        // Constraints: a quota on limits.cpu needs every container to set it.
        let bare = pod(vec![
            container("app", json!({"cpu": "100m"}), json!({})),
            json!({"name": "side"}),
        ]);
        assert_eq!(
            admit(&request("CREATE", "pods", bare), &[compute.clone()]).unwrap_err(),
            "failed quota: compute: must specify limits.cpu for: app,side; requests.cpu for: side"
        );

        // Status unknown lists every resource the quota restricts for the kind.
        let fresh = json!({"metadata": {"name": "fresh"}, "spec": {"hard": {"pods": "2", "count/pods": "3", "secrets": "1"}}});
        assert_eq!(
            admit(&req, &[fresh]).unwrap_err(),
            "status unknown for quota: fresh, resources: count/pods,pods"
        );

        // The first quota (by name) that would be exceeded refuses.
        let full = quota(
            "a-full",
            json!({"count/pods": "1"}),
            json!({"count/pods": "1"}),
        );
        assert_eq!(
            admit(&req, &[compute.clone(), full]).unwrap_err(),
            "exceeded quota: a-full, requested: count/pods=1, used: count/pods=1, limited: count/pods=1"
        );

        // Negative requests never pass.
        let negative = pod(vec![container("app", json!({"cpu": "-1"}), json!({}))]);
        assert_eq!(
            admit(&request("CREATE", "pods", negative), &[]).unwrap_err(),
            "quota usage is negative for resource(s): cpu,requests.cpu"
        );
    }

    #[test]
    fn admit_skips_what_upstream_skips() {
        let q = quota(
            "q",
            json!({"count/events": "0", "pods": "0"}),
            json!({"count/events": "0", "pods": "0"}),
        );
        let p = pod(vec![]);
        let mut status = request("UPDATE", "pods", p.clone());
        status["subResource"] = json!("status");
        let mut cluster = request("CREATE", "pods", p.clone());
        cluster["namespace"] = json!("");
        let skipped = [
            request("DELETE", "pods", p.clone()),
            status,
            cluster,
            request("CREATE", "events", json!({})),
            request("UPDATE", "configmaps", json!({})),
        ];
        for r in skipped {
            assert!(!applies(&r), "{r}");
            assert_eq!(admit(&r, &[q.clone()]).unwrap(), Vec::<Value>::new());
        }
        assert!(admit(&request("CREATE", "pods", p), &[q]).is_err());
    }

    #[test]
    fn updates_charge_only_growth() {
        let q = quota(
            "storage",
            json!({"requests.storage": "10Gi", "persistentvolumeclaims": "5", "services.nodeports": "2", "services": "5"}),
            json!({"requests.storage": "4Gi", "persistentvolumeclaims": "1", "services.nodeports": "0", "services": "1"}),
        );
        let pvc = |size: &str| {
            json!({"metadata": {"name": "data", "resourceVersion": "3"},
                "spec": {"resources": {"requests": {"storage": size}}}})
        };
        let mut req = request("UPDATE", "persistentvolumeclaims", pvc("6Gi"));
        req["oldObject"] = pvc("4Gi");
        let charged = admit(&req, &[q.clone()]).unwrap();
        assert_eq!(
            charged[0]["status"]["used"],
            json!({"requests.storage": "6Gi", "persistentvolumeclaims": "1", "services.nodeports": "0", "services": "1"})
        );
        // Shrinking, or no change, charges nothing.
        req["object"] = pvc("2Gi");
        assert_eq!(admit(&req, &[q.clone()]).unwrap(), Vec::<Value>::new());
        // Growing past the limit refuses.
        req["object"] = pvc("11Gi");
        assert_eq!(
            admit(&req, &[q.clone()]).unwrap_err(),
            "exceeded quota: storage, requested: requests.storage=7Gi, used: requests.storage=4Gi, limited: requests.storage=10Gi"
        );
        // No old object: refused; an old object without resourceVersion: charged in full.
        req["object"] = pvc("6Gi");
        req["oldObject"] = Value::Null;
        assert_eq!(
            admit(&req, &[q.clone()]).unwrap_err(),
            "unable to get previous usage since prior version of object was not found"
        );
        let mut fresh = pvc("4Gi");
        fresh["metadata"]["resourceVersion"] = json!("");
        req["oldObject"] = fresh;
        assert_eq!(
            admit(&req, &[q.clone()]).unwrap()[0]["status"]["used"]["persistentvolumeclaims"],
            "2"
        );

        // A service turning into a NodePort charges its node ports only.
        let svc = |t: &str| {
            json!({"metadata": {"name": "web", "resourceVersion": "9"},
                "spec": {"type": t, "ports": [{"port": 80}]}})
        };
        let mut req = request("UPDATE", "services", svc("NodePort"));
        req["oldObject"] = svc("ClusterIP");
        let charged = admit(&req, &[q.clone()]).unwrap();
        assert_eq!(charged[0]["status"]["used"]["services.nodeports"], "1");
        assert_eq!(charged[0]["status"]["used"]["services"], "1");

        // A pod update that raises its requests (in-place resize) charges the growth.
        let compute = quota(
            "compute",
            json!({"requests.cpu": "1"}),
            json!({"requests.cpu": "500m"}),
        );
        let mut old = pod(vec![container("a", json!({"cpu": "200m"}), json!({}))]);
        old["metadata"]["resourceVersion"] = json!("1");
        let mut new = old.clone();
        new["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("300m");
        let mut req = request("UPDATE", "pods", new);
        req["oldObject"] = old;
        assert_eq!(
            admit(&req, &[compute]).unwrap()[0]["status"]["used"]["requests.cpu"],
            "600m"
        );
    }

    #[test]
    fn calculate_used_recomputes_status() {
        let q = json!({"metadata": {"name": "q"},
            "spec": {"hard": {"pods": "10", "requests.cpu": "4", "services": "3", "count/deployments.apps": "2", "foo": "1"},
                "scopes": []}});
        let running = pod(vec![container("a", json!({"cpu": "250m"}), json!({}))]);
        let mut done = running.clone();
        done["status"] = json!({"phase": "Succeeded"});
        let svc = json!({"spec": {"type": "ClusterIP"}});
        let dep = json!({});
        let objects = vec![
            ("", "pods", &running),
            ("", "pods", &running),
            ("", "pods", &done),
            ("", "services", &svc),
            ("apps", "deployments", &dep),
            ("", "configmaps", &dep),
        ];
        assert_eq!(
            calculate_used(&q, objects.clone(), None),
            u(&[
                ("pods", 2),
                ("requests.cpu", 500),
                ("services", 1),
                ("count/deployments.apps", 1)
            ])
        );
        let mut best_effort = q.clone();
        best_effort["spec"]["scopes"] = json!(["NotBestEffort"]);
        assert_eq!(
            calculate_used(&best_effort, objects, None),
            u(&[
                ("pods", 2),
                ("requests.cpu", 500),
                ("services", 0),
                ("count/deployments.apps", 0)
            ])
        );
    }
}
