//! Per-kind rules beyond metadata: workloads, Jobs, Services, ConfigMaps and
//! Secrets, Namespaces, Nodes, Leases, claims and trellis.dev kinds.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::errors::{
    array, bad_json, child, go_map, index, int, key, object, str_or_empty, string, Bad, Errs,
};
use super::pod::{self, Restart};
use super::{meta, names};
use crate::registry::Kind;

/// Upstream's `MaxSecretSize`, also the ConfigMap limit.
const MAX_DATA_BYTES: usize = 1024 * 1024;

pub(crate) fn validate(kind: &Kind, obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let empty = json!({});
    let spec = obj.get("spec").unwrap_or(&empty);
    let old_spec = old.map(|o| o.get("spec").unwrap_or(&empty));
    match (kind.group, kind.kind) {
        ("", "Pod") => {
            pod::validate_spec(spec, "spec", Restart::Any, errs);
            if let Some(old) = old {
                pod::validate_update(obj, old, errs);
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            workload(kind.kind, spec, old_spec, errs)
        }
        ("batch", "Job") => job(spec, old_spec, errs),
        ("batch", "CronJob") => cron_job(spec, errs),
        ("", "Service") => service(spec, errs),
        ("scheduling.k8s.io", "PriorityClass") => priority_class(obj, old, errs),
        ("", "ConfigMap") => {
            let size = data_keys(obj, "data", "binaryData", false, errs)
                + data_keys(obj, "binaryData", "data", true, errs);
            if size > MAX_DATA_BYTES {
                errs.too_long("", MAX_DATA_BYTES);
            }
            immutable_data(obj, old, &["data", "binaryData"], errs);
        }
        ("", "Secret") => secret(obj, old, errs),
        ("", "Namespace") => {
            for f in array(spec, "finalizers") {
                meta::finalizer_name(f.as_str().unwrap_or_default(), "spec.finalizers", errs);
            }
        }
        ("", "Node") => {
            for (i, t) in array(spec, "taints").iter().enumerate() {
                taint(t, &index("spec.taints", i), errs);
            }
        }
        ("", "PersistentVolumeClaim") => claim(spec, "spec", errs),
        ("coordination.k8s.io", "Lease") => {
            if let Some(d) = int(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
                errs.invalid(
                    "spec.leaseDurationSeconds",
                    Bad::Int(d),
                    "must be greater than 0",
                );
            }
            errs.non_negative(spec, "leaseTransitions", "spec.leaseTransitions");
        }
        ("trellis.dev", _) if !obj.get("spec").is_some_and(Value::is_object) => {
            errs.required("spec", "");
        }
        ("trellis.dev", "Plugin") => plugin(spec, errs),
        ("trellis.dev", "SchedulerProfile") => scheduler_profile(spec, errs),
        ("trellis.dev", "AdmissionChain") => admission_chain(spec, errs),
        _ => {}
    }
}

/// Validates a label selector at `path`; returns whether it selects
/// `labels`, or `None` when the selector itself is malformed.
fn selector(sel: &Value, path: &str, errs: &mut Errs) -> Option<bool> {
    let before = errs.len();
    meta::labels(
        object(sel, "matchLabels"),
        &child(path, "matchLabels"),
        errs,
    );
    for (i, e) in array(sel, "matchExpressions").iter().enumerate() {
        let epath = index(&child(path, "matchExpressions"), i);
        let k = str_or_empty(e, "key");
        errs.invalid_each(&child(&epath, "key"), k, names::qualified_name(k));
        let has_values = !array(e, "values").is_empty();
        match str_or_empty(e, "operator") {
            "In" | "NotIn" if !has_values => errs.required(
                &child(&epath, "values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            ),
            "Exists" | "DoesNotExist" if has_values => errs.forbidden(
                &child(&epath, "values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            ),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errs.invalid(
                &child(&epath, "operator"),
                Bad::Str(other),
                "not a valid selector operator",
            ),
        }
    }
    (errs.len() == before).then_some(true)
}

fn selects(sel: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let match_labels = object(sel, "matchLabels")
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    match_labels
        && array(sel, "matchExpressions").iter().all(|e| {
            let value = label(str_or_empty(e, "key"));
            let values: Vec<&str> = array(e, "values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            match str_or_empty(e, "operator") {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => !value.is_some_and(|v| values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

fn is_empty_selector(sel: &Value) -> bool {
    object(sel, "matchLabels").is_none_or(Map::is_empty)
        && array(sel, "matchExpressions").is_empty()
}

/// Selector and template of a controller at `spec`: the selector must be
/// present, non-empty and select the template's labels.
fn selector_and_template(
    kind: &str,
    spec: &Value,
    restart: Restart,
    template_path: &str,
    errs: &mut Errs,
) {
    let sel = spec.get("selector").filter(|s| s.is_object());
    let valid = match sel {
        None => {
            errs.required("spec.selector", "");
            None
        }
        Some(sel) => {
            let ok = selector(sel, "spec.selector", errs);
            if is_empty_selector(sel) {
                errs.invalid(
                    "spec.selector",
                    bad_json(sel),
                    &format!("empty selector is invalid for {}", kind.to_lowercase()),
                );
                None
            } else {
                ok.map(|_| sel)
            }
        }
    };
    template(spec.get("template"), valid, restart, template_path, errs);
}

fn template(
    template: Option<&Value>,
    sel: Option<&Value>,
    restart: Restart,
    path: &str,
    errs: &mut Errs,
) {
    let Some(template) = template.filter(|t| t.is_object()) else {
        errs.required(path, "");
        return;
    };
    let labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object);
    let labels_path = format!("{path}.metadata.labels");
    if let Some(sel) = sel {
        if !selects(sel, labels) {
            errs.invalid(
                &labels_path,
                Bad::Raw(go_map(labels)),
                "`selector` does not match template `labels`",
            );
        }
    }
    meta::labels(labels, &labels_path, errs);
    let empty = Value::Null;
    pod::validate_spec(
        template.get("spec").unwrap_or(&empty),
        &format!("{path}.spec"),
        restart,
        errs,
    );
}

fn immutable(spec: &Value, old_spec: Option<&Value>, field: &str, errs: &mut Errs) {
    if let Some(old_spec) = old_spec {
        let value = spec.get(field).unwrap_or(&Value::Null);
        if old_spec.get(field).unwrap_or(&Value::Null) != value {
            errs.invalid(&child("spec", field), bad_json(value), "field is immutable");
        }
    }
}

fn supported(spec: &Value, field: &str, path: &str, values: &[&str], errs: &mut Errs) {
    if let Some(v) = string(spec, field) {
        if !values.contains(&v) {
            errs.not_supported(&child(path, field), v, values);
        }
    }
}

fn workload(kind: &str, spec: &Value, old_spec: Option<&Value>, errs: &mut Errs) {
    if kind != "DaemonSet" {
        errs.non_negative(spec, "replicas", "spec.replicas");
    }
    errs.non_negative(spec, "minReadySeconds", "spec.minReadySeconds");
    errs.non_negative(spec, "revisionHistoryLimit", "spec.revisionHistoryLimit");
    selector_and_template(kind, spec, Restart::Always, "spec.template", errs);
    if spec
        .pointer("/template/spec/activeDeadlineSeconds")
        .is_some()
    {
        let owner = if kind == "Deployment" {
            "ReplicaSet"
        } else {
            kind
        };
        errs.forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            &format!("activeDeadlineSeconds in {owner} is not Supported"),
        );
    }
    immutable(spec, old_spec, "selector", errs);

    match kind {
        "Deployment" => deployment_strategy(spec, errs),
        "StatefulSet" => {
            supported(
                spec,
                "podManagementPolicy",
                "spec",
                &["OrderedReady", "Parallel"],
                errs,
            );
            if let Some(s) = spec.get("updateStrategy") {
                supported(
                    s,
                    "type",
                    "spec.updateStrategy",
                    &["OnDelete", "RollingUpdate"],
                    errs,
                );
            }
        }
        "DaemonSet" => {
            if let Some(s) = spec.get("updateStrategy") {
                supported(
                    s,
                    "type",
                    "spec.updateStrategy",
                    &["OnDelete", "RollingUpdate"],
                    errs,
                );
            }
        }
        _ => {}
    }
}

fn is_zero_int_or_percent(v: Option<&Value>) -> bool {
    match v {
        None => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse::<i64>() == Ok(0),
        Some(_) => false,
    }
}

fn int_or_percent(v: Option<&Value>, path: &str, errs: &mut Errs) {
    match v {
        Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i < 0) => errs.invalid(
            path,
            bad_json(&Value::Number(n.clone())),
            "must be greater than or equal to 0",
        ),
        Some(Value::String(s)) => {
            let valid = s.strip_suffix('%').and_then(|p| p.parse::<u32>().ok());
            match valid {
                None => errs.invalid(path, Bad::Str(s), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"),
                Some(p) if p > 100 => errs.invalid(path, Bad::Str(s), "must not be greater than 100%"),
                Some(_) => {}
            }
        }
        _ => {}
    }
}

fn deployment_strategy(spec: &Value, errs: &mut Errs) {
    let Some(strategy) = spec.get("strategy") else {
        return;
    };
    let rolling = strategy.get("rollingUpdate");
    match str_or_empty(strategy, "type") {
        "Recreate" if rolling.is_some() => errs.forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ),
        "Recreate" => {}
        "RollingUpdate" => {
            let Some(ru) = rolling else { return };
            let (unavailable, surge) = (ru.get("maxUnavailable"), ru.get("maxSurge"));
            int_or_percent(
                unavailable,
                "spec.strategy.rollingUpdate.maxUnavailable",
                errs,
            );
            int_or_percent(surge, "spec.strategy.rollingUpdate.maxSurge", errs);
            if is_zero_int_or_percent(surge) && is_zero_int_or_percent(unavailable) {
                let shown = unavailable.map_or(Bad::Int(0), bad_json);
                errs.invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    shown,
                    "may not be 0 when `maxSurge` is 0",
                );
            }
        }
        "" => errs.required("spec.strategy.type", ""),
        other => errs.not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"]),
    }
}

fn job(spec: &Value, old_spec: Option<&Value>, errs: &mut Errs) {
    for field in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    ] {
        errs.non_negative(spec, field, &child("spec", field));
    }
    supported(
        spec,
        "completionMode",
        "spec",
        &["NonIndexed", "Indexed"],
        errs,
    );
    if str_or_empty(spec, "completionMode") == "Indexed"
        && spec.get("completions").is_none_or(Value::is_null)
    {
        errs.required("spec.completions", "when completion mode is Indexed");
    }
    selector_and_template("Job", spec, Restart::Job, "spec.template", errs);
    immutable(spec, old_spec, "selector", errs);
}

fn cron_job(spec: &Value, errs: &mut Errs) {
    let schedule = str_or_empty(spec, "schedule");
    if schedule.is_empty() {
        errs.required("spec.schedule", "");
    } else if !schedule.starts_with('@') {
        let fields: Vec<&str> = schedule.split_whitespace().collect();
        if fields.len() != 5 {
            errs.invalid(
                "spec.schedule",
                Bad::Str(schedule),
                &format!(
                    "expected exactly 5 fields, found {}: [{}]",
                    fields.len(),
                    fields.join(" ")
                ),
            );
        }
    }
    match str_or_empty(spec, "concurrencyPolicy") {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.required("spec.concurrencyPolicy", ""),
        other => errs.not_supported(
            "spec.concurrencyPolicy",
            other,
            &["Allow", "Forbid", "Replace"],
        ),
    }
    for field in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        errs.non_negative(spec, field, &child("spec", field));
    }
    let job_spec = spec.pointer("/jobTemplate/spec");
    let path = "spec.jobTemplate.spec.template";
    let sel = job_spec
        .and_then(|s| s.get("selector"))
        .filter(|s| s.is_object() && !is_empty_selector(s));
    template(
        job_spec.and_then(|s| s.get("template")),
        sel,
        Restart::Job,
        path,
        errs,
    );
}

fn service(spec: &Value, errs: &mut Errs) {
    let ty = str_or_empty(spec, "type");
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if ty.is_empty() {
        errs.required("spec.type", "");
    } else if !TYPES.contains(&ty) {
        errs.not_supported("spec.type", ty, TYPES);
    }
    let headless = str_or_empty(spec, "clusterIP") == "None";
    let ports = array(spec, "ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.required("spec.ports", "");
    }
    let mut seen_names: HashSet<&str> = HashSet::new();
    let mut seen_ports: HashSet<(i64, &str)> = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let ppath = index("spec.ports", i);
        let name = str_or_empty(p, "name");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.required(&child(&ppath, "name"), "");
            }
        } else {
            errs.invalid_each(&child(&ppath, "name"), name, names::dns1123_label(name));
            if !seen_names.insert(name) {
                errs.duplicate(&child(&ppath, "name"), Bad::Str(name));
            }
        }
        let port = int(p, "port").unwrap_or(0);
        pod::port_number(errs, &child(&ppath, "port"), port);
        pod::protocol(p, &ppath, errs);
        let proto = str_or_empty(p, "protocol");
        if !seen_ports.insert((port, proto)) {
            errs.duplicate(
                &ppath,
                Bad::Raw(json!({ "port": port, "protocol": proto }).to_string()),
            );
        }
        match p.get("targetPort") {
            Some(Value::Number(n)) => {
                pod::port_number(errs, &child(&ppath, "targetPort"), n.as_i64().unwrap_or(0))
            }
            Some(Value::String(s)) => {
                errs.invalid_each(&child(&ppath, "targetPort"), s, names::port_name(s))
            }
            _ => {}
        }
        if let Some(node_port) = int(p, "nodePort").filter(|n| *n != 0) {
            if ty == "ClusterIP" {
                errs.forbidden(
                    &child(&ppath, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                );
            } else {
                pod::port_number(errs, &child(&ppath, "nodePort"), node_port);
            }
        }
    }
    if ty == "ExternalName" {
        let external = str_or_empty(spec, "externalName");
        if external.is_empty() {
            errs.required("spec.externalName", "");
        } else {
            let trimmed = external.strip_suffix('.').unwrap_or(external);
            errs.invalid_each(
                "spec.externalName",
                external,
                names::dns1123_subdomain(trimmed),
            );
        }
    }
    match str_or_empty(spec, "sessionAffinity") {
        "ClientIP" | "None" => {}
        "" => errs.required("spec.sessionAffinity", ""),
        other => errs.not_supported("spec.sessionAffinity", other, &["ClientIP", "None"]),
    }
    meta::labels(object(spec, "selector"), "spec.selector", errs);
}

/// Checks the keys of `field` (a ConfigMap or Secret data map) and returns
/// the data's size in bytes.
fn data_keys(obj: &Value, field: &str, other: &str, base64: bool, errs: &mut Errs) -> usize {
    let mut size = 0;
    for (k, v) in object(obj, field).into_iter().flatten() {
        let path = key(field, k);
        errs.invalid_each(&path, k, names::config_map_key(k));
        if object(obj, other).is_some_and(|o| o.contains_key(k)) && field == "data" {
            errs.invalid(
                &path,
                Bad::Str(k),
                &format!("duplicate of key present in {other}"),
            );
        }
        let text = v.as_str().unwrap_or_default();
        size += if base64 {
            decoded_len(text)
        } else {
            text.len()
        };
    }
    size
}

/// The decoded size of base64 text (already checked by decoding).
fn decoded_len(text: &str) -> usize {
    let padding = text.bytes().rev().take_while(|b| *b == b'=').count();
    (text.len() / 4 * 3).saturating_sub(padding)
}

/// A PriorityClass: `system-` names and values above one billion are the
/// system classes' own; value and preemption policy never change.
fn priority_class(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    use crate::priority::{HIGHEST_USER_PRIORITY, SYSTEM_CLASSES};
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let value = int(obj, "value");
    let system = SYSTEM_CLASSES
        .iter()
        .any(|(n, v, _)| *n == name && value == Some(*v));
    if !system {
        if name.starts_with("system-") {
            errs.invalid(
                "metadata.name",
                Bad::Str(name),
                "priority class names with 'system-' prefix are reserved",
            );
        }
        if value.is_some_and(|v| v > HIGHEST_USER_PRIORITY) {
            errs.forbidden(
                "value",
                &format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"
                ),
            );
        }
    }
    match obj.get("value") {
        None => errs.required("value", ""),
        Some(v) if v.as_i64().and_then(|v| i32::try_from(v).ok()).is_none() => {
            errs.invalid("value", bad_json(v), "must be a 32-bit integer")
        }
        _ => {}
    }
    match str_or_empty(obj, "preemptionPolicy") {
        "PreemptLowerPriority" | "Never" => {}
        other => errs.not_supported(
            "preemptionPolicy",
            other,
            &["Never", "PreemptLowerPriority"],
        ),
    }
    if let Some(old) = old {
        for field in ["value", "preemptionPolicy"] {
            if obj.get(field) != old.get(field) {
                let v = obj.get(field).unwrap_or(&Value::Null);
                errs.invalid(field, bad_json(v), "field is immutable");
            }
        }
    }
}

/// Once `immutable` is set, data may not change and the flag stays set.
fn immutable_data(obj: &Value, old: Option<&Value>, fields: &[&str], errs: &mut Errs) {
    let Some(old) = old.filter(|o| o.get("immutable") == Some(&Value::Bool(true))) else {
        return;
    };
    const DETAIL: &str = "field is immutable when `immutable` is set";
    if obj.get("immutable") != Some(&Value::Bool(true)) {
        errs.forbidden("immutable", DETAIL);
    }
    for field in fields {
        if obj.get(*field) != old.get(*field) {
            errs.forbidden(field, DETAIL);
        }
    }
}

fn secret(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let size = data_keys(obj, "data", "", true, errs);
    if size > MAX_DATA_BYTES {
        errs.too_long("data", MAX_DATA_BYTES);
    }
    let data = object(obj, "data");
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let ty = str_or_empty(obj, "type");
    let required: &[&str] = match ty {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        _ => &[],
    };
    for k in required.iter().filter(|k| !has(k)) {
        errs.required(&key("data", k), "");
    }
    if ty == "kubernetes.io/service-account-token"
        && obj
            .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
            .is_none()
    {
        errs.required(
            "metadata.annotations[kubernetes.io/service-account.name]",
            "",
        );
    }
    if let Some(old) = old {
        let old_ty = str_or_empty(old, "type");
        if old_ty != ty {
            errs.invalid("type", Bad::Str(ty), "field is immutable");
        }
    }
    immutable_data(obj, old, &["data"], errs);
}

fn taint(t: &Value, path: &str, errs: &mut Errs) {
    let k = str_or_empty(t, "key");
    if k.is_empty() {
        errs.required(&child(path, "key"), "");
    } else {
        errs.invalid_each(&child(path, "key"), k, names::qualified_name(k));
    }
    let value = str_or_empty(t, "value");
    errs.invalid_each(&child(path, "value"), value, names::label_value(value));
    const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
    match str_or_empty(t, "effect") {
        "" => errs.required(&child(path, "effect"), ""),
        e if !EFFECTS.contains(&e) => errs.not_supported(&child(path, "effect"), e, EFFECTS),
        _ => {}
    }
}

fn claim(spec: &Value, path: &str, errs: &mut Errs) {
    const MODES: &[&str] = &[
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOnce",
        "ReadWriteOncePod",
    ];
    let modes = array(spec, "accessModes");
    if modes.is_empty() {
        errs.required(
            &child(path, "accessModes"),
            "at least 1 access mode is required",
        );
    }
    for m in modes {
        let m = m.as_str().unwrap_or_default();
        if !MODES.contains(&m) {
            errs.not_supported(&child(path, "accessModes"), m, MODES);
        }
    }
    if spec.pointer("/resources/requests/storage").is_none() {
        errs.required(&key(&child(path, "resources"), "storage"), "");
    }
}

/// Largest inline component (`spec.source.wasm`, decoded), so that the
/// object stays under the store's 1.5 MiB value limit.
const MAX_INLINE_WASM: usize = 1024 * 1024;

const ROLES: &[&str] = &["scheduler", "admission", "probe", "controller"];
const CAPABILITIES: &[&str] = &[
    "log",
    "objects-read",
    "objects-write",
    "pod-network",
    "pod-exec",
];

fn plugin(spec: &Value, errs: &mut Errs) {
    match string(spec, "role") {
        None => errs.required("spec.role", ""),
        Some(r) if !ROLES.contains(&r) => errs.not_supported("spec.role", r, ROLES),
        _ => {}
    }
    let src = spec.get("source").filter(|s| s.is_object());
    match src {
        None => errs.required("spec.source", "one of builtin or wasm"),
        Some(src) => match (string(src, "builtin"), string(src, "wasm")) {
            (Some(_), Some(_)) | (None, None) => errs.invalid(
                "spec.source",
                bad_json(src),
                "exactly one of builtin or wasm must be set",
            ),
            (Some(b), None) => {
                for m in names::dns1123_label(b) {
                    errs.invalid("spec.source.builtin", Bad::Str(b), &m);
                }
            }
            (None, Some(w)) => {
                use base64::Engine as _;
                match base64::engine::general_purpose::STANDARD.decode(w.trim()) {
                    Err(e) => errs.invalid(
                        "spec.source.wasm",
                        Bad::Raw("<component>".into()),
                        &format!("must be base64: {e}"),
                    ),
                    Ok(b) if b.len() > MAX_INLINE_WASM => {
                        errs.too_long("spec.source.wasm", MAX_INLINE_WASM)
                    }
                    Ok(_) => {}
                }
            }
        },
    }
    if let Some(pin) = string(spec, "sha256") {
        let hex = pin.strip_prefix("sha256:").unwrap_or(pin);
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            errs.invalid(
                "spec.sha256",
                Bad::Str(pin),
                "must be 64 hexadecimal digits",
            );
        }
    }
    if spec
        .get("config")
        .is_some_and(|c| !c.is_object() && !c.is_null())
    {
        errs.type_invalid("spec.config", "string", "object");
    }
    let grants = spec.get("grants").unwrap_or(&Value::Null);
    for (i, c) in array(grants, "capabilities").iter().enumerate() {
        let c = c.as_str().unwrap_or_default();
        if !CAPABILITIES.contains(&c) {
            errs.not_supported(&index("spec.grants.capabilities", i), c, CAPABILITIES);
        }
    }
    for field in ["read", "write"] {
        for (i, k) in array(grants, field).iter().enumerate() {
            let at = index(&format!("spec.grants.{field}"), i);
            if string(k, "kind").is_none() {
                errs.required(&child(&at, "kind"), "");
            }
            if string(k, "group").is_none() {
                errs.required(
                    &child(&at, "group"),
                    "\"\" for the core group, \"*\" for any",
                );
            }
        }
    }
}

fn scheduler_profile(spec: &Value, errs: &mut Errs) {
    if let Some(p) = int(spec, "percentageOfNodesToScore").filter(|p| !(0..=100).contains(p)) {
        errs.invalid(
            "spec.percentageOfNodesToScore",
            Bad::Int(p),
            "must be between 0 and 100 (0 means adaptive)",
        );
    }
    let plugins = array(spec, "plugins");
    if plugins.is_empty() {
        errs.required("spec.plugins", "a profile needs at least one plugin");
    }
    let mut seen = HashSet::new();
    for (i, e) in plugins.iter().enumerate() {
        let at = index("spec.plugins", i);
        match string(e, "name") {
            None => errs.required(&child(&at, "name"), "the name of a Plugin object"),
            Some(n) => {
                for m in names::dns1123_subdomain(n) {
                    errs.invalid(&child(&at, "name"), Bad::Str(n), &m);
                }
                if !seen.insert(n) {
                    errs.duplicate(&child(&at, "name"), Bad::Str(n));
                }
            }
        }
        if let Some(w) = int(e, "weight").filter(|w| !(0..=100).contains(w)) {
            errs.invalid(
                &child(&at, "weight"),
                Bad::Int(w),
                "must be between 0 and 100 (0: does not score)",
            );
        }
        budget_fields(e, &at, errs);
        if e.get("filter").is_some_and(|f| !f.is_boolean()) {
            errs.type_invalid(&child(&at, "filter"), "string", "boolean");
        }
    }
}

/// What every chain entry may set: deadline, memory cap, failure policy,
/// config.
fn budget_fields(e: &Value, at: &str, errs: &mut Errs) {
    if let Some(d) = string(e, "deadline") {
        match trellis_types::duration::parse(d) {
            Err(m) => errs.invalid(&child(at, "deadline"), Bad::Str(d), &m),
            Ok(t)
                if t < std::time::Duration::from_millis(1)
                    || t > std::time::Duration::from_secs(10) =>
            {
                errs.invalid(
                    &child(at, "deadline"),
                    Bad::Str(d),
                    "must be between 1ms and 10s",
                )
            }
            Ok(_) => {}
        }
    }
    if let Some(m) = string(e, "memoryLimit") {
        match trellis_types::quantity::parse_bytes(m) {
            Err(err) => errs.invalid(&child(at, "memoryLimit"), Bad::Str(m), &err.to_string()),
            Ok(b) if !((1 << 20)..=(4i64 << 30)).contains(&b) => errs.invalid(
                &child(at, "memoryLimit"),
                Bad::Str(m),
                "must be between 1Mi and 4Gi",
            ),
            Ok(_) => {}
        }
    }
    if let Some(f) = string(e, "failurePolicy") {
        if !["Fail", "Ignore"].contains(&f) {
            errs.not_supported(&child(at, "failurePolicy"), f, &["Fail", "Ignore"]);
        }
    }
    if e.get("config")
        .is_some_and(|c| !c.is_object() && !c.is_null())
    {
        errs.type_invalid(&child(at, "config"), "string", "object");
    }
}

fn admission_chain(spec: &Value, errs: &mut Errs) {
    let plugins = array(spec, "plugins");
    if plugins.is_empty() {
        errs.required("spec.plugins", "a chain needs at least one plugin");
    }
    const OPS: &[&str] = &["CREATE", "UPDATE", "DELETE", "*"];
    for (i, e) in plugins.iter().enumerate() {
        let at = index("spec.plugins", i);
        match string(e, "name") {
            None => errs.required(&child(&at, "name"), "the name of a Plugin object"),
            Some(n) => {
                for m in names::dns1123_subdomain(n) {
                    errs.invalid(&child(&at, "name"), Bad::Str(n), &m);
                }
            }
        }
        if let Some(t) = string(e, "type") {
            if !["Mutating", "Validating"].contains(&t) {
                errs.not_supported(&child(&at, "type"), t, &["Mutating", "Validating"]);
            }
        }
        let rules = array(e, "rules");
        if rules.is_empty() {
            errs.required(&child(&at, "rules"), "which requests the plugin sees");
        }
        for (j, r) in rules.iter().enumerate() {
            let rat = index(&child(&at, "rules"), j);
            for field in ["apiGroups", "operations", "resources"] {
                if array(r, field).is_empty() {
                    errs.required(&child(&rat, field), "");
                }
            }
            for (k, op) in array(r, "operations").iter().enumerate() {
                let op = op.as_str().unwrap_or_default();
                if !OPS.contains(&op) {
                    errs.not_supported(&index(&child(&rat, "operations"), k), op, OPS);
                }
            }
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if let Some(v) = e.get(sel).filter(|v| !v.is_null()) {
                selector(v, &child(&at, sel), errs);
            }
        }
        budget_fields(e, &at, errs);
    }
}
