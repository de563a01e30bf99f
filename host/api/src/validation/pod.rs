//! Upstream's `ValidatePodSpec` (for pods and every pod template) and the
//! pod update rules.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::errors::{array, child, index, int, key, object, str_or_empty, string, Bad, Errs};
use super::{meta, names, quantity};

/// What restart policies a pod spec may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    /// Pods: Always, OnFailure or Never.
    Any,
    /// Jobs' templates: OnFailure or Never, and no default.
    Job,
    /// Templates of long-running workloads: Always only.
    Always,
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const STANDARD_CONTAINER_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// Ports, as upstream's `ValidatePortNumOrName` for numbers.
pub(crate) fn port_number(errs: &mut Errs, path: &str, port: i64) {
    if !(1..=65535).contains(&port) {
        errs.invalid(
            path,
            Bad::Int(port),
            "must be between 1 and 65535, inclusive",
        );
    }
}

/// A pod spec at `path` (`spec`, `spec.template.spec`, ...).
pub(crate) fn validate_spec(spec: &Value, path: &str, restart: Restart, errs: &mut Errs) {
    let empty = json!({});
    let spec = if spec.is_object() { spec } else { &empty };

    let mut volumes: HashSet<&str> = HashSet::new();
    for (i, v) in array(spec, "volumes").iter().enumerate() {
        let vpath = index(&child(path, "volumes"), i);
        let name = str_or_empty(v, "name");
        if name.is_empty() {
            errs.required(&child(&vpath, "name"), "");
        } else {
            errs.invalid_each(&child(&vpath, "name"), name, names::dns1123_label(name));
            if !volumes.insert(name) {
                errs.duplicate(&child(&vpath, "name"), Bad::Str(name));
            }
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().filter(|k| *k != "name").collect())
            .unwrap_or_default();
        if sources.is_empty() {
            errs.required(&vpath, "must specify a volume type");
        }
        for extra in sources.iter().skip(1) {
            errs.forbidden(
                &child(&vpath, extra),
                "may not specify more than 1 volume type",
            );
        }
    }

    let mut container_names: HashSet<&str> = HashSet::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in array(spec, list).iter().enumerate() {
            container(
                c,
                &index(&child(path, list), i),
                &volumes,
                &mut container_names,
                errs,
            );
        }
    }
    if array(spec, "containers").is_empty() {
        errs.required(&child(path, "containers"), "");
    }

    let restart_path = child(path, "restartPolicy");
    let policy = str_or_empty(spec, "restartPolicy");
    match restart {
        Restart::Job if policy.is_empty() => {
            errs.required(&restart_path, "valid values: \"OnFailure\", \"Never\"")
        }
        Restart::Job if !JOB_RESTART_POLICIES.contains(&policy) => {
            errs.not_supported(&restart_path, policy, JOB_RESTART_POLICIES)
        }
        Restart::Job => {}
        _ if policy.is_empty() => errs.required(&restart_path, ""),
        _ if !RESTART_POLICIES.contains(&policy) => {
            errs.not_supported(&restart_path, policy, RESTART_POLICIES)
        }
        Restart::Always if policy != "Always" => {
            errs.not_supported(&restart_path, policy, &["Always"])
        }
        _ => {}
    }

    let dns = str_or_empty(spec, "dnsPolicy");
    if dns.is_empty() {
        errs.required(&child(path, "dnsPolicy"), "");
    } else if !DNS_POLICIES.contains(&dns) {
        errs.not_supported(&child(path, "dnsPolicy"), dns, DNS_POLICIES);
    }

    if let Some(deadline) = int(spec, "activeDeadlineSeconds") {
        if !(1..=i64::from(i32::MAX)).contains(&deadline) {
            errs.invalid(
                &child(path, "activeDeadlineSeconds"),
                Bad::Int(deadline),
                "must be between 1 and 2147483647, inclusive",
            );
        }
    }
    errs.non_negative(
        spec,
        "terminationGracePeriodSeconds",
        &child(path, "terminationGracePeriodSeconds"),
    );
    meta::labels(
        object(spec, "nodeSelector"),
        &child(path, "nodeSelector"),
        errs,
    );
    for field in ["hostname", "subdomain"] {
        if let Some(v) = string(spec, field).filter(|v| !v.is_empty()) {
            errs.invalid_each(&child(path, field), v, names::dns1123_label(v));
        }
    }
    if let Some(sa) = string(spec, "serviceAccountName").filter(|v| !v.is_empty()) {
        errs.invalid_each(
            &child(path, "serviceAccountName"),
            sa,
            names::dns1123_subdomain(sa),
        );
    }
    for (i, t) in array(spec, "tolerations").iter().enumerate() {
        toleration(t, &index(&child(path, "tolerations"), i), errs);
    }
}

fn toleration(t: &Value, path: &str, errs: &mut Errs) {
    let operator = str_or_empty(t, "operator");
    let value = str_or_empty(t, "value");
    match operator {
        "" | "Equal" => {}
        "Exists" if !value.is_empty() => errs.invalid(
            &child(path, "operator"),
            Bad::Str(value),
            "value must be empty when `operator` is 'Exists'",
        ),
        "Exists" => {}
        other => errs.not_supported(&child(path, "operator"), other, &["Equal", "Exists"]),
    }
    let effect = str_or_empty(t, "effect");
    if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
        errs.not_supported(&child(path, "effect"), effect, TAINT_EFFECTS);
    }
    let k = str_or_empty(t, "key");
    if !k.is_empty() {
        errs.invalid_each(&child(path, "key"), k, names::qualified_name(k));
    }
}

fn container<'a>(
    c: &'a Value,
    path: &str,
    volumes: &HashSet<&str>,
    seen: &mut HashSet<&'a str>,
    errs: &mut Errs,
) {
    let name = str_or_empty(c, "name");
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.required(&name_path, "");
    } else {
        errs.invalid_each(&name_path, name, names::dns1123_label(name));
        if !seen.insert(name) {
            errs.duplicate(&name_path, Bad::Str(name));
        }
    }

    let image = str_or_empty(c, "image");
    if image.is_empty() {
        errs.required(&child(path, "image"), "");
    } else if image.trim() != image {
        errs.invalid(
            &child(path, "image"),
            Bad::Str(image),
            "must not have leading or trailing whitespace",
        );
    }

    let pull = str_or_empty(c, "imagePullPolicy");
    if pull.is_empty() {
        errs.required(&child(path, "imagePullPolicy"), "");
    } else if !PULL_POLICIES.contains(&pull) {
        errs.not_supported(&child(path, "imagePullPolicy"), pull, PULL_POLICIES);
    }

    let tmp = str_or_empty(c, "terminationMessagePolicy");
    if tmp.is_empty() {
        errs.required(
            &child(path, "terminationMessagePolicy"),
            "must be 'File' or 'FallbackToLogsOnError'",
        );
    } else if tmp != "File" && tmp != "FallbackToLogsOnError" {
        errs.not_supported(
            &child(path, "terminationMessagePolicy"),
            tmp,
            &["File", "FallbackToLogsOnError"],
        );
    }

    let mut port_names: HashSet<&str> = HashSet::new();
    for (i, p) in array(c, "ports").iter().enumerate() {
        let ppath = index(&child(path, "ports"), i);
        match int(p, "containerPort").unwrap_or(0) {
            0 => errs.required(&child(&ppath, "containerPort"), ""),
            n => port_number(errs, &child(&ppath, "containerPort"), n),
        }
        if let Some(host) = int(p, "hostPort").filter(|h| *h != 0) {
            port_number(errs, &child(&ppath, "hostPort"), host);
        }
        protocol(p, &ppath, errs);
        let pname = str_or_empty(p, "name");
        if !pname.is_empty() {
            errs.invalid_each(&child(&ppath, "name"), pname, names::port_name(pname));
            if !port_names.insert(pname) {
                errs.duplicate(&child(&ppath, "name"), Bad::Str(pname));
            }
        }
    }

    for (i, e) in array(c, "env").iter().enumerate() {
        let epath = index(&child(path, "env"), i);
        let ename = str_or_empty(e, "name");
        if ename.is_empty() {
            errs.required(&child(&epath, "name"), "");
        } else if ename.contains('=') || !ename.bytes().all(|b| (32..=126).contains(&b)) {
            errs.invalid(
                &child(&epath, "name"),
                Bad::Str(ename),
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
    }

    let mut mount_paths: HashSet<&str> = HashSet::new();
    for (i, m) in array(c, "volumeMounts").iter().enumerate() {
        let mpath = index(&child(path, "volumeMounts"), i);
        let vname = str_or_empty(m, "name");
        if vname.is_empty() {
            errs.required(&child(&mpath, "name"), "");
        } else if !volumes.contains(vname) {
            errs.not_found(&child(&mpath, "name"), Bad::Str(vname));
        }
        let mount = str_or_empty(m, "mountPath");
        if mount.is_empty() {
            errs.required(&child(&mpath, "mountPath"), "");
        } else if !mount_paths.insert(mount) {
            errs.invalid(
                &child(&mpath, "mountPath"),
                Bad::Str(mount),
                "must be unique",
            );
        }
    }

    if let Some(resources) = c.get("resources") {
        resource_requirements(resources, &child(path, "resources"), errs);
    }
}

/// `protocol` of a container or service port.
pub(crate) fn protocol(port: &Value, path: &str, errs: &mut Errs) {
    let proto = str_or_empty(port, "protocol");
    if proto.is_empty() {
        errs.required(&child(path, "protocol"), "");
    } else if !PROTOCOLS.contains(&proto) {
        errs.not_supported(&child(path, "protocol"), proto, PROTOCOLS);
    }
}

fn quantity_map<'a>(
    map: Option<&'a Map<String, Value>>,
    path: &str,
    errs: &mut Errs,
) -> Vec<(&'a str, &'a str, Option<quantity::Quantity>)> {
    let mut out = Vec::new();
    for (name, value) in map.into_iter().flatten() {
        let qpath = key(path, name);
        let text = value.as_str().unwrap_or_default();
        let standard =
            STANDARD_CONTAINER_RESOURCES.contains(&name.as_str()) || name.starts_with("hugepages-");
        if !standard && !name.contains('/') {
            errs.invalid(
                &qpath,
                Bad::Str(name),
                "must be a standard resource type or fully qualified",
            );
        }
        let parsed = quantity::parse(text);
        match parsed {
            None => errs.invalid(&qpath, Bad::Str(text), quantity::QUANTITY_ERROR),
            Some(q) if q.is_negative() => {
                errs.invalid(&qpath, Bad::Str(text), "must be greater than or equal to 0")
            }
            Some(_) => {}
        }
        out.push((name.as_str(), text, parsed));
    }
    out
}

/// Upstream's `ValidateResourceRequirements`: valid quantities, and no
/// request above its limit.
fn resource_requirements(resources: &Value, path: &str, errs: &mut Errs) {
    let limits = quantity_map(object(resources, "limits"), &child(path, "limits"), errs);
    let requests = quantity_map(
        object(resources, "requests"),
        &child(path, "requests"),
        errs,
    );
    for (name, text, request) in requests {
        let limit = limits.iter().find(|l| l.0 == name);
        if let (Some(request), Some((_, limit_text, Some(limit)))) = (request, limit) {
            if request > *limit {
                errs.invalid(
                    &key(&child(path, "requests"), name),
                    Bad::Str(text),
                    &format!("must be less than or equal to {name} limit of {limit_text}"),
                );
            }
        }
    }
}

/// The pod spec fields an update may change, as upstream lists them.
const UPDATABLE: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Upstream's `ValidatePodUpdate` for the spec: everything but a few fields
/// is fixed once a pod exists, because the node already runs it.
pub(crate) fn validate_update(new: &Value, old: &Value, errs: &mut Errs) {
    let empty = json!({});
    let new_spec = new.get("spec").unwrap_or(&empty);
    let old_spec = old.get("spec").unwrap_or(&empty);

    let deadline_path = "spec.activeDeadlineSeconds";
    if let Some(prev) = int(old_spec, "activeDeadlineSeconds") {
        match int(new_spec, "activeDeadlineSeconds") {
            None => errs.invalid(
                deadline_path,
                Bad::Raw("null".into()),
                "must not update from a positive integer to nil value",
            ),
            Some(next) if next > prev => errs.invalid(
                deadline_path,
                Bad::Int(next),
                "must be less than or equal to previous value",
            ),
            Some(_) => {}
        }
    }

    // Copy what may change from the new spec onto the old one; any other
    // difference is forbidden.
    let mut munged = old_spec.clone();
    if let (Some(m), Some(n)) = (munged.as_object_mut(), new_spec.as_object()) {
        for list in ["containers", "initContainers"] {
            let new_list = array(new_spec, list);
            if let Some(Value::Array(items)) = m.get_mut(list) {
                if items.len() == new_list.len() {
                    for (item, next) in items.iter_mut().zip(new_list) {
                        if let (Some(item), Some(image)) = (item.as_object_mut(), next.get("image"))
                        {
                            item.insert("image".into(), image.clone());
                        }
                    }
                }
            }
        }
        copy_field(m, n, "activeDeadlineSeconds");
        let old_tolerations = array(old_spec, "tolerations");
        let new_tolerations = array(new_spec, "tolerations");
        if old_tolerations.iter().all(|t| new_tolerations.contains(t)) {
            copy_field(m, n, "tolerations");
        }
        let old_gates = array(old_spec, "schedulingGates");
        if array(new_spec, "schedulingGates")
            .iter()
            .all(|g| old_gates.contains(g))
        {
            copy_field(m, n, "schedulingGates");
        }
        let grace = (
            int(old_spec, "terminationGracePeriodSeconds"),
            int(new_spec, "terminationGracePeriodSeconds"),
        );
        if matches!(grace, (Some(prev), Some(1)) if prev < 0) {
            copy_field(m, n, "terminationGracePeriodSeconds");
        }
    }
    if &munged != new_spec {
        let mut changed: Vec<&str> = Vec::new();
        let keys = munged
            .as_object()
            .into_iter()
            .chain(new_spec.as_object())
            .flat_map(|m| m.keys());
        for k in keys {
            if munged.get(k) != new_spec.get(k) && !changed.contains(&k.as_str()) {
                changed.push(k);
            }
        }
        let changed: Vec<String> = changed.into_iter().map(|k| format!("spec.{k}")).collect();
        errs.forbidden(
            "spec",
            &format!(
                "pod updates may not change fields other than {UPDATABLE}\nchanged: {}",
                changed.join(", ")
            ),
        );
    }
}

fn copy_field(to: &mut Map<String, Value>, from: &Map<String, Value>, key: &str) {
    match from.get(key) {
        Some(v) => to.insert(key.into(), v.clone()),
        None => to.remove(key),
    };
}
