//! Upstream's defaulting (`SetDefaults_*` plus the create-time parts of the
//! registry strategies) for the common fields, so stored objects look like
//! the ones a Kubernetes API server returns and controllers can rely on them.

use serde_json::{json, Map, Value};

use super::quantity;
use super::Operation;
use crate::registry::Kind;

/// Inserts `value` at `key` unless a value is already there.
fn default(obj: &mut Value, key: &str, value: Value) {
    if let Value::Object(map) = obj {
        map.entry(key).or_insert(value);
    }
}

/// The object at `key`, created empty when absent; `None` when `obj` is not
/// an object or the field holds something else.
fn ensure<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let map = obj.as_object_mut()?;
    let field = map.entry(key).or_insert_with(|| json!({}));
    field.is_object().then_some(field)
}

/// The existing value at `key`.
fn get<'a>(obj: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    obj.as_object_mut()?.get_mut(key)
}

/// The existing array at `key`'s items.
fn items<'a>(obj: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    get(obj, key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

/// Defaults `obj` of `kind` in place.
pub(crate) fn apply(kind: &Kind, obj: &mut Value, op: Operation) {
    let create = op == Operation::Create;
    match (kind.group, kind.kind) {
        ("", "Pod") => {
            // The spec is a struct upstream: present, and defaulted, even when not sent.
            if let Some(spec) = ensure(obj, "spec") {
                pod_spec(spec, true);
                for key in ["initContainers", "containers"] {
                    for c in items(spec, key) {
                        requests_from_limits(c);
                    }
                }
            }
            if create {
                let qos = get(obj, "spec")
                    .map(|s| qos_class(s))
                    .unwrap_or("BestEffort");
                if let Some(status) = ensure(obj, "status") {
                    default(status, "phase", json!("Pending"));
                    default(status, "qosClass", json!(qos));
                }
            }
        }
        ("", "Service") => {
            if let Some(spec) = get(obj, "spec") {
                service_spec(spec);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        ("", "Namespace") => {
            if create {
                if let Some(spec) = ensure(obj, "spec") {
                    default(spec, "finalizers", json!([]));
                    if let Some(list) = get(spec, "finalizers").and_then(Value::as_array_mut) {
                        if !list.iter().any(|f| f == "kubernetes") {
                            list.push(json!("kubernetes"));
                        }
                    }
                }
            }
            if let Some(status) = ensure(obj, "status") {
                default(status, "phase", json!("Active"));
            }
        }
        ("", "Secret") => {
            default(obj, "type", json!("Opaque"));
            merge_string_data(obj);
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = get(obj, "spec") {
                default(spec, "volumeMode", json!("Filesystem"));
            }
            if create {
                if let Some(status) = ensure(obj, "status") {
                    default(status, "phase", json!("Pending"));
                }
            }
        }
        ("", "PersistentVolume") => {
            if let Some(spec) = get(obj, "spec") {
                default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
                default(spec, "volumeMode", json!("Filesystem"));
            }
            if create {
                if let Some(status) = ensure(obj, "status") {
                    default(status, "phase", json!("Pending"));
                }
            }
        }
        ("apps", "Deployment") => {
            let Some(spec) = get(obj, "spec") else { return };
            default(spec, "replicas", json!(1));
            if let Some(strategy) = ensure(spec, "strategy") {
                default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate" {
                    if let Some(ru) = ensure(strategy, "rollingUpdate") {
                        default(ru, "maxUnavailable", json!("25%"));
                        default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            pod_template(spec, true);
        }
        ("apps", "ReplicaSet") => {
            let Some(spec) = get(obj, "spec") else { return };
            default(spec, "replicas", json!(1));
            pod_template(spec, true);
        }
        ("apps", "DaemonSet") => {
            let Some(spec) = get(obj, "spec") else { return };
            if let Some(strategy) = ensure(spec, "updateStrategy") {
                default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate" {
                    if let Some(ru) = ensure(strategy, "rollingUpdate") {
                        default(ru, "maxUnavailable", json!(1));
                        default(ru, "maxSurge", json!(0));
                    }
                }
            }
            default(spec, "revisionHistoryLimit", json!(10));
            pod_template(spec, true);
        }
        ("apps", "StatefulSet") => {
            let Some(spec) = get(obj, "spec") else { return };
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            if let Some(strategy) = ensure(spec, "updateStrategy") {
                default(strategy, "type", json!("RollingUpdate"));
                if strategy["type"] == "RollingUpdate" {
                    if let Some(ru) = ensure(strategy, "rollingUpdate") {
                        default(ru, "partition", json!(0));
                    }
                }
            }
            default(spec, "revisionHistoryLimit", json!(10));
            if let Some(policy) = ensure(spec, "persistentVolumeClaimRetentionPolicy") {
                default(policy, "whenDeleted", json!("Retain"));
                default(policy, "whenScaled", json!("Retain"));
            }
            for claim in items(spec, "volumeClaimTemplates") {
                if let Some(claim_spec) = get(claim, "spec") {
                    default(claim_spec, "volumeMode", json!("Filesystem"));
                }
            }
            pod_template(spec, true);
        }
        ("batch", "Job") => job(obj, create),
        ("batch", "CronJob") => {
            let Some(spec) = get(obj, "spec") else { return };
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(job_spec) = get(spec, "jobTemplate").and_then(|t| get(t, "spec")) {
                pod_template(job_spec, false);
            }
        }
        _ => {}
    }
}

fn job(obj: &mut Value, create: bool) {
    let template_labels = obj.pointer("/spec/template/metadata/labels").cloned();
    let Some(spec) = get(obj, "spec") else { return };
    let has = |spec: &Value, k: &str| spec.get(k).is_some();
    if !has(spec, "completions") && !has(spec, "parallelism") {
        default(spec, "completions", json!(1));
    }
    default(spec, "parallelism", json!(1));
    let backoff = if has(spec, "backoffLimitPerIndex") {
        i64::from(i32::MAX)
    } else {
        6
    };
    default(spec, "backoffLimit", json!(backoff));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let replacement = if has(spec, "podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    default(spec, "podReplacementPolicy", json!(replacement));
    pod_template(spec, false);

    // Upstream copies the template's labels to an unlabeled Job.
    if let (Some(labels), Some(meta)) = (template_labels, ensure(obj, "metadata")) {
        let empty = meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
        if empty && labels.is_object() {
            meta["labels"] = labels;
        }
    }
    if create && obj.pointer("/spec/manualSelector") != Some(&Value::Bool(true)) {
        generate_job_selector(obj);
    }
}

/// Labels the template with the Job's name and uid and selects on the uid,
/// so a Job's pods can never be claimed by another Job (upstream's
/// `generateSelector`).
fn generate_job_selector(obj: &mut Value) {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(json!(""));
    let uid = obj.pointer("/metadata/uid").cloned().unwrap_or(json!(""));
    let Some(spec) = get(obj, "spec") else { return };
    if let Some(labels) = ensure(spec, "template")
        .and_then(|t| ensure(t, "metadata"))
        .and_then(|m| ensure(m, "labels"))
    {
        default(labels, "batch.kubernetes.io/controller-uid", uid.clone());
        default(labels, "batch.kubernetes.io/job-name", name.clone());
        default(labels, "controller-uid", uid.clone());
        default(labels, "job-name", name);
    }
    if let Some(match_labels) = ensure(spec, "selector").and_then(|s| ensure(s, "matchLabels")) {
        default(match_labels, "batch.kubernetes.io/controller-uid", uid);
    }
}

/// Defaults `spec.template.spec` of a workload.
fn pod_template(spec: &mut Value, restart_always: bool) {
    if let Some(pod) = get(spec, "template").and_then(|t| get(t, "spec")) {
        pod_spec(pod, restart_always);
    }
}

fn pod_spec(spec: &mut Value, restart_always: bool) {
    if !spec.is_object() {
        return;
    }
    if restart_always {
        default(spec, "restartPolicy", json!("Always"));
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "securityContext", json!({}));
    default(spec, "enableServiceLinks", json!(true));
    let host_network = spec.get("hostNetwork") == Some(&Value::Bool(true));
    for c in items(spec, "initContainers") {
        container(c, host_network);
    }
    for c in items(spec, "containers") {
        container(c, host_network);
    }
    for v in items(spec, "volumes") {
        volume(v);
    }
}

/// The tag of an image reference: after the last ':' of the last path
/// component, ignoring a digest; "latest" when there is neither.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_some() => "",
        None => "latest",
    }
}

fn container(c: &mut Value, host_network: bool) {
    if !c.is_object() {
        return;
    }
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let policy = if image_tag(image) == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    };
    default(c, "imagePullPolicy", json!(policy));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    for port in items(c, "ports") {
        default(port, "protocol", json!("TCP"));
        if host_network {
            if let Some(p) = port.get("containerPort").cloned() {
                default(port, "hostPort", p);
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = get(c, probe).filter(|p| p.is_object()) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
            if let Some(http) = get(p, "httpGet") {
                default(http, "path", json!("/"));
                default(http, "scheme", json!("HTTP"));
            }
        }
    }
    for env in items(c, "env") {
        if let Some(field_ref) = get(env, "valueFrom").and_then(|v| get(v, "fieldRef")) {
            default(field_ref, "apiVersion", json!("v1"));
        }
    }
}

const VOLUME_SOURCES_WITH_MODE: &[&str] = &["configMap", "secret", "projected", "downwardAPI"];

fn volume(v: &mut Value) {
    let Some(map) = v.as_object_mut() else { return };
    // A volume without a source is an emptyDir upstream.
    if map.keys().all(|k| k == "name") {
        map.insert("emptyDir".into(), json!({}));
    }
    for source in VOLUME_SOURCES_WITH_MODE {
        if let Some(s) = map.get_mut(*source) {
            default(s, "defaultMode", json!(420));
        }
    }
}

/// `stringData` is write-only: upstream folds it into `data` (winning over
/// the same key there) when decoding.
fn merge_string_data(obj: &mut Value) {
    let Some(Value::Object(strings)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return;
    };
    if let Some(data) = ensure(obj, "data").and_then(Value::as_object_mut) {
        for (k, v) in strings {
            data.insert(k, json!(base64(v.as_str().unwrap_or_default().as_bytes())));
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Upstream's `SetDefaults_Pod`: a limit without a request requests the limit.
fn requests_from_limits(c: &mut Value) {
    let Some(resources) = get(c, "resources") else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if let Some(requests) = ensure(resources, "requests") {
        for (name, value) in limits {
            default(requests, &name, value);
        }
    }
}

/// Upstream's QoS class from cpu and memory requests and limits.
fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    let containers = ["initContainers", "containers"]
        .into_iter()
        .flat_map(|k| spec.get(k).and_then(Value::as_array).into_iter().flatten());
    for c in containers {
        let resources = c.get("resources");
        let get_q = |kind: &str, r: &str| {
            resources
                .and_then(|res| res.get(kind))
                .and_then(|m| m.get(r))
                .and_then(Value::as_str)
                .and_then(quantity::parse)
        };
        for r in ["cpu", "memory"] {
            let zero = quantity::parse("0");
            let request = get_q("requests", r).filter(|q| Some(*q) != zero);
            let limit = get_q("limits", r).filter(|q| Some(*q) != zero);
            any |= request.is_some() || limit.is_some();
            if limit.is_none() || request.is_some_and(|q| Some(q) != limit) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn service_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    let ty = spec["type"].as_str().unwrap_or_default().to_string();
    if ty != "ExternalName" {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
        // A single-stack IPv4 cluster, as the pod network is.
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
        default(spec, "ipFamilies", json!(["IPv4"]));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec["sessionAffinity"] == "ClientIP" {
        if let Some(client_ip) =
            ensure(spec, "sessionAffinityConfig").and_then(|c| ensure(c, "clientIP"))
        {
            default(client_ip, "timeoutSeconds", json!(10800));
        }
    }
    for port in items(spec, "ports") {
        default(port, "protocol", json!("TCP"));
        let target_unset = match port.get("targetPort") {
            None => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if target_unset {
            if let (Some(p), Some(map)) = (port.get("port").cloned(), port.as_object_mut()) {
                map.insert("targetPort".into(), p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), "latest");
        assert_eq!(image_tag("nginx:latest"), "latest");
        assert_eq!(image_tag("nginx:1.27"), "1.27");
        assert_eq!(image_tag("localhost:5000/nginx"), "latest");
        assert_eq!(image_tag("localhost:5000/nginx:1"), "1");
        assert_eq!(image_tag("nginx@sha256:abc"), "");
    }

    #[test]
    fn base64_encodes() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ=");
    }

    #[test]
    fn qos() {
        let spec = |res: Value| json!({ "containers": [{ "name": "a", "resources": res }] });
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        let both = json!({ "cpu": "1", "memory": "1Gi" });
        assert_eq!(
            qos_class(&spec(json!({ "limits": both, "requests": both }))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(json!({ "requests": { "cpu": "1" } }))),
            "Burstable"
        );
    }
}
