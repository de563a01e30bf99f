//! Kubernetes' protobuf request bodies, for the kinds kubectl's `create`
//! generators send that way (`kubectl create namespace|configmap|secret|
//! serviceaccount|service|deployment|job|cronjob|priorityclass`): client-go sends them as protobuf and never
//! falls back to JSON. The envelope is `k8s\0` + `runtime.Unknown{typeMeta =
//! 1, raw = 2}`; `raw` is decoded by a small schema per kind into the same
//! JSON the server stores. Unset fields arrive as empty strings and are
//! dropped.
//!
//! A Deployment's schema covers what `kubectl create deployment` can send
//! (name, labels, replicas, selector, containers with image, command, ports,
//! env and resources, strategy), and so do Job's and CronJob's (`kubectl
//! create job|cronjob`); a Service's covers every spec field but
//! `sessionAffinityConfig`. These are strict: a field the schema does not know
//! is refused with 415, naming the field, rather than dropped.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::registry::Kind;

/// How one field is encoded.
#[derive(Clone, Copy)]
enum Field {
    Str,
    /// A pointer `bool`: `false` is kept.
    Bool,
    /// A plain `bool` (`omitempty`): `false` is dropped.
    BoolOmit,
    /// A pointer integer (`int32`/`int64`): zero is kept.
    Int,
    /// A plain integer (`omitempty`): zero is dropped.
    IntOmit,
    /// `intstr.IntOrString{type = 1, intVal = 2, strVal = 3}`.
    IntOrStr,
    /// `map<string, resource.Quantity{string = 1}>`.
    QuantityMap,
    /// `map<string, string>`.
    StrMap,
    /// `map<string, bytes>`, base64 in JSON.
    BytesMap,
    StrList,
    Msg(&'static [(u64, &'static str, Field)]),
    MsgList(&'static [(u64, &'static str, Field)]),
    /// Present on the wire, not carried over (server-set or unsupported).
    Skip,
}

const META: &[(u64, &str, Field)] = &[
    (1, "name", Field::Str),
    (2, "generateName", Field::Str),
    (3, "namespace", Field::Str),
    (4, "selfLink", Field::Skip),
    (5, "uid", Field::Skip),
    (6, "resourceVersion", Field::Str),
    (7, "generation", Field::Skip),
    (8, "creationTimestamp", Field::Skip),
    (9, "deletionTimestamp", Field::Skip),
    (10, "deletionGracePeriodSeconds", Field::Skip),
    (11, "labels", Field::StrMap),
    (12, "annotations", Field::StrMap),
    (
        13,
        "ownerReferences",
        Field::MsgList(&[
            (5, "apiVersion", Field::Str),
            (1, "kind", Field::Str),
            (3, "name", Field::Str),
            (4, "uid", Field::Str),
            (6, "controller", Field::Bool),
            (7, "blockOwnerDeletion", Field::Bool),
        ]),
    ),
    (14, "finalizers", Field::StrList),
    // clusterName, which older clients still send empty.
    (15, "clusterName", Field::Skip),
];
const NAMESPACE: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "spec", Field::Msg(&[(1, "finalizers", Field::StrList)])),
    (3, "status", Field::Skip),
];
const CONFIGMAP: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "data", Field::StrMap),
    (3, "binaryData", Field::BytesMap),
    (4, "immutable", Field::Bool),
];
const SECRET: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "data", Field::BytesMap),
    (3, "type", Field::Str),
    (4, "stringData", Field::StrMap),
    (5, "immutable", Field::Bool),
];
const SERVICEACCOUNT: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "secrets", Field::Skip),
    (
        3,
        "imagePullSecrets",
        Field::MsgList(&[(1, "name", Field::Str)]),
    ),
    (4, "automountServiceAccountToken", Field::Bool),
];

const LABEL_SELECTOR: &[(u64, &str, Field)] = &[
    (1, "matchLabels", Field::StrMap),
    (
        2,
        "matchExpressions",
        Field::MsgList(&[
            (1, "key", Field::Str),
            (2, "operator", Field::Str),
            (3, "values", Field::StrList),
        ]),
    ),
];
const CONTAINER: &[(u64, &str, Field)] = &[
    (1, "name", Field::Str),
    (2, "image", Field::Str),
    (3, "command", Field::StrList),
    (4, "args", Field::StrList),
    (5, "workingDir", Field::Str),
    (
        6,
        "ports",
        Field::MsgList(&[
            (1, "name", Field::Str),
            (2, "hostPort", Field::IntOmit),
            (3, "containerPort", Field::Int),
            (4, "protocol", Field::Str),
            (5, "hostIP", Field::Str),
        ]),
    ),
    (
        7,
        "env",
        Field::MsgList(&[(1, "name", Field::Str), (2, "value", Field::Str)]),
    ),
    (
        8,
        "resources",
        Field::Msg(&[
            (1, "limits", Field::QuantityMap),
            (2, "requests", Field::QuantityMap),
        ]),
    ),
    (13, "terminationMessagePath", Field::Str),
    (14, "imagePullPolicy", Field::Str),
    (16, "stdin", Field::BoolOmit),
    (17, "stdinOnce", Field::BoolOmit),
    (18, "tty", Field::BoolOmit),
    (20, "terminationMessagePolicy", Field::Str),
];
const POD_SPEC: &[(u64, &str, Field)] = &[
    (2, "containers", Field::MsgList(CONTAINER)),
    (3, "restartPolicy", Field::Str),
    (4, "terminationGracePeriodSeconds", Field::Int),
    (5, "activeDeadlineSeconds", Field::Int),
    (6, "dnsPolicy", Field::Str),
    (7, "nodeSelector", Field::StrMap),
    (8, "serviceAccountName", Field::Str),
    (9, "serviceAccount", Field::Str),
    (10, "nodeName", Field::Str),
    (11, "hostNetwork", Field::BoolOmit),
    (12, "hostPID", Field::BoolOmit),
    (13, "hostIPC", Field::BoolOmit),
    // The server's default is an empty one, which a copied template (`kubectl
    // create job --from=cronjob/…`) sends back; a field inside is refused.
    (14, "securityContext", Field::Msg(&[])),
    (16, "hostname", Field::Str),
    (17, "subdomain", Field::Str),
    (19, "schedulerName", Field::Str),
    (20, "initContainers", Field::MsgList(CONTAINER)),
    (21, "automountServiceAccountToken", Field::Bool),
    (24, "priorityClassName", Field::Str),
    (25, "priority", Field::Int),
    (27, "shareProcessNamespace", Field::Bool),
    (29, "runtimeClassName", Field::Str),
    (30, "enableServiceLinks", Field::Bool),
    (31, "preemptionPolicy", Field::Str),
    (35, "setHostnameAsFQDN", Field::Bool),
    (37, "hostUsers", Field::Bool),
];
const POD_TEMPLATE: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "spec", Field::Msg(POD_SPEC)),
];
const DEPLOYMENT: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (
        2,
        "spec",
        Field::Msg(&[
            (1, "replicas", Field::Int),
            (2, "selector", Field::Msg(LABEL_SELECTOR)),
            (3, "template", Field::Msg(POD_TEMPLATE)),
            (
                4,
                "strategy",
                Field::Msg(&[
                    (1, "type", Field::Str),
                    (
                        2,
                        "rollingUpdate",
                        Field::Msg(&[
                            (1, "maxUnavailable", Field::IntOrStr),
                            (2, "maxSurge", Field::IntOrStr),
                        ]),
                    ),
                ]),
            ),
            (5, "minReadySeconds", Field::IntOmit),
            (6, "revisionHistoryLimit", Field::Int),
            (7, "paused", Field::BoolOmit),
            (9, "progressDeadlineSeconds", Field::Int),
        ]),
    ),
    (3, "status", Field::Skip),
];

const SERVICE: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (
        2,
        "spec",
        Field::Msg(&[
            (
                1,
                "ports",
                Field::MsgList(&[
                    (1, "name", Field::Str),
                    (2, "protocol", Field::Str),
                    (3, "port", Field::Int),
                    (4, "targetPort", Field::IntOrStr),
                    (5, "nodePort", Field::IntOmit),
                    (6, "appProtocol", Field::Str),
                ]),
            ),
            (2, "selector", Field::StrMap),
            (3, "clusterIP", Field::Str),
            (4, "type", Field::Str),
            (5, "externalIPs", Field::StrList),
            (7, "sessionAffinity", Field::Str),
            (8, "loadBalancerIP", Field::Str),
            (9, "loadBalancerSourceRanges", Field::StrList),
            (10, "externalName", Field::Str),
            (11, "externalTrafficPolicy", Field::Str),
            (12, "healthCheckNodePort", Field::IntOmit),
            (13, "publishNotReadyAddresses", Field::BoolOmit),
            (17, "ipFamilyPolicy", Field::Str),
            (18, "clusterIPs", Field::StrList),
            (19, "ipFamilies", Field::StrList),
            (20, "allocateLoadBalancerNodePorts", Field::Bool),
            (21, "loadBalancerClass", Field::Str),
            (22, "internalTrafficPolicy", Field::Str),
        ]),
    ),
    (3, "status", Field::Skip),
];

const JOB_SPEC: &[(u64, &str, Field)] = &[
    (1, "parallelism", Field::Int),
    (2, "completions", Field::Int),
    (3, "activeDeadlineSeconds", Field::Int),
    (4, "selector", Field::Msg(LABEL_SELECTOR)),
    (5, "manualSelector", Field::Bool),
    (6, "template", Field::Msg(POD_TEMPLATE)),
    (7, "backoffLimit", Field::Int),
    (8, "ttlSecondsAfterFinished", Field::Int),
    (9, "completionMode", Field::Str),
    (10, "suspend", Field::Bool),
];
const JOB: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "spec", Field::Msg(JOB_SPEC)),
    (3, "status", Field::Skip),
];
const CRONJOB: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (
        2,
        "spec",
        Field::Msg(&[
            (1, "schedule", Field::Str),
            (2, "startingDeadlineSeconds", Field::Int),
            (3, "concurrencyPolicy", Field::Str),
            (4, "suspend", Field::Bool),
            (
                5,
                "jobTemplate",
                Field::Msg(&[
                    (1, "metadata", Field::Msg(META)),
                    (2, "spec", Field::Msg(JOB_SPEC)),
                ]),
            ),
            (6, "successfulJobsHistoryLimit", Field::Int),
            (7, "failedJobsHistoryLimit", Field::Int),
            (8, "timeZone", Field::Str),
        ]),
    ),
    (3, "status", Field::Skip),
];

const PRIORITY_CLASS: &[(u64, &str, Field)] = &[
    (1, "metadata", Field::Msg(META)),
    (2, "value", Field::Int),
    (3, "globalDefault", Field::BoolOmit),
    (4, "description", Field::Str),
    (5, "preemptionPolicy", Field::Str),
];

/// The schema of `kind`'s protobuf body, and whether it is strict (a field
/// it does not list is refused instead of ignored).
fn schema(kind: &Kind) -> Option<(&'static [(u64, &'static str, Field)], bool)> {
    match (kind.group, kind.kind) {
        ("", "Namespace") => Some((NAMESPACE, false)),
        ("", "ConfigMap") => Some((CONFIGMAP, false)),
        ("", "Secret") => Some((SECRET, false)),
        ("", "ServiceAccount") => Some((SERVICEACCOUNT, false)),
        ("apps", "Deployment") => Some((DEPLOYMENT, true)),
        ("", "Service") => Some((SERVICE, true)),
        ("batch", "Job") => Some((JOB, true)),
        ("batch", "CronJob") => Some((CRONJOB, true)),
        ("scheduling.k8s.io", "PriorityClass") => Some((PRIORITY_CLASS, true)),
        _ => None,
    }
}

struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

fn malformed() -> ApiError {
    ApiError::bad_request("the protobuf body of the request is malformed")
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ApiError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.i).ok_or_else(malformed)?;
            self.i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed())
    }

    /// Next field: (number, wire type, payload for length-delimited, value for varint).
    fn next(&mut self) -> Result<Option<(u64, &'a [u8], u64)>, ApiError> {
        if self.i >= self.b.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        match key & 7 {
            0 => Ok(Some((key >> 3, &[][..], self.varint()?))),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| malformed())?;
                let end = self
                    .i
                    .checked_add(len)
                    .filter(|e| *e <= self.b.len())
                    .ok_or_else(malformed)?;
                let s = &self.b[self.i..end];
                self.i = end;
                Ok(Some((key >> 3, s, 0)))
            }
            1 => {
                self.i += 8;
                Ok(Some((key >> 3, &[][..], 0)))
            }
            5 => {
                self.i += 4;
                Ok(Some((key >> 3, &[][..], 0)))
            }
            _ => Err(malformed()),
        }
    }
}

fn text(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec())
        .map_err(|_| ApiError::bad_request("a protobuf string field is not UTF-8"))
}

fn entry(b: &[u8]) -> Result<(String, &[u8]), ApiError> {
    let mut r = Reader { b, i: 0 };
    let (mut k, mut v) = (String::new(), &[][..]);
    while let Some((n, payload, _)) = r.next()? {
        match n {
            1 => k = text(payload)?,
            2 => v = payload,
            _ => {}
        }
    }
    Ok((k, v))
}

/// Where a message sits in the object, for errors (`spec.template.spec`).
struct At<'a> {
    path: &'a str,
    kind: &'a Kind,
    strict: bool,
}

fn message(
    b: &[u8],
    schema: &[(u64, &str, Field)],
    depth: usize,
    at: &At,
) -> Result<Map<String, Value>, ApiError> {
    if depth > 16 {
        return Err(malformed());
    }
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    while let Some((n, payload, int)) = r.next()? {
        let Some((_, name, field)) = schema.iter().find(|(f, _, _)| *f == n) else {
            if at.strict {
                return Err(ApiError::unsupported_media_type(&format!(
                    "application/vnd.kubernetes.protobuf for {} with protobuf field {n} of {} set, which this server does not decode; send {} as JSON or YAML, e.g. with `kubectl apply -f`",
                    at.kind.kind,
                    if at.path.is_empty() { "the object" } else { at.path },
                    at.kind.plural
                )));
            }
            continue;
        };
        let name = name.to_string();
        let child = |name: &str| {
            if at.path.is_empty() {
                name.to_string()
            } else {
                format!("{}.{name}", at.path)
            }
        };
        match field {
            Field::Skip => {}
            Field::BoolOmit => {
                if int != 0 {
                    out.insert(name, json!(true));
                }
            }
            Field::Int => {
                out.insert(name, json!(int as i64));
            }
            Field::IntOmit => {
                if int != 0 {
                    out.insert(name, json!(int as i64));
                }
            }
            Field::IntOrStr => {
                let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
                let mut v = Reader { b: payload, i: 0 };
                while let Some((m, p, x)) = v.next()? {
                    match m {
                        1 => ty = x,
                        2 => i = x as i64,
                        3 => s = text(p)?,
                        _ => {}
                    }
                }
                out.insert(name, if ty == 1 { json!(s) } else { json!(i) });
            }
            Field::QuantityMap => {
                let (k, q) = entry(payload)?;
                let (_, amount) = entry(q)?;
                out.entry(name).or_insert_with(|| json!({}))[k] = json!(text(amount)?);
            }
            Field::Str => {
                let s = text(payload)?;
                if !s.is_empty() {
                    out.insert(name, json!(s));
                }
            }
            Field::Bool => {
                out.insert(name, json!(int != 0));
            }
            Field::StrMap => {
                let (k, v) = entry(payload)?;
                out.entry(name).or_insert_with(|| json!({}))[k] = json!(text(v)?);
            }
            Field::BytesMap => {
                let (k, v) = entry(payload)?;
                out.entry(name).or_insert_with(|| json!({}))[k] =
                    json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            Field::StrList => {
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(json!(text(payload)?));
                }
            }
            Field::Msg(s) => {
                let path = child(&name);
                let sub = At { path: &path, ..*at };
                let m = message(payload, s, depth + 1, &sub)?;
                if !m.is_empty() {
                    out.insert(name, Value::Object(m));
                }
            }
            Field::MsgList(s) => {
                let path = child(&name);
                let sub = At { path: &path, ..*at };
                let m = message(payload, s, depth + 1, &sub)?;
                if let Value::Array(a) = out.entry(name).or_insert_with(|| json!([])) {
                    a.push(Value::Object(m));
                }
            }
        }
    }
    Ok(out)
}

/// Decode a protobuf request body for `kind` into JSON.
pub fn decode(kind: &Kind, body: &[u8]) -> Result<Value, ApiError> {
    let Some((schema, strict)) = schema(kind) else {
        return Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {} (protobuf bodies are accepted for Namespace, ConfigMap, Secret, ServiceAccount, Service, Deployment, Job and CronJob; send {} as JSON or YAML, e.g. with `kubectl apply -f`)",
            kind.kind, kind.plural
        )));
    };
    let raw = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| ApiError::bad_request("a protobuf body must start with the k8s\\0 magic"))?;
    let mut r = Reader { b: raw, i: 0 };
    let (mut api_version, mut kind_name, mut object) = (String::new(), String::new(), None);
    while let Some((n, payload, _)) = r.next()? {
        match n {
            1 => {
                let mut t = Reader { b: payload, i: 0 };
                while let Some((m, p, _)) = t.next()? {
                    match m {
                        1 => api_version = text(p)?,
                        2 => kind_name = text(p)?,
                        _ => {}
                    }
                }
            }
            2 => {
                let at = At {
                    path: "",
                    kind,
                    strict,
                };
                object = Some(message(payload, schema, 0, &at)?)
            }
            _ => {}
        }
    }
    let mut obj = object.ok_or_else(malformed)?;
    obj.insert(
        "apiVersion".into(),
        json!(if api_version.is_empty() {
            kind.api_version()
        } else {
            api_version
        }),
    );
    obj.insert(
        "kind".into(),
        json!(if kind_name.is_empty() {
            kind.kind.to_string()
        } else {
            kind_name
        }),
    );
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut x: u64, out: &mut Vec<u8>) {
        while x >= 0x80 {
            out.push((x as u8 & 0x7f) | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        varint(n << 3 | 2, &mut v);
        varint(payload.len() as u64, &mut v);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_secret_as_kubectl_sends_it() {
        let meta = [
            field(1, b"s1"),
            field(2, b""),
            field(3, b"ns1"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let secret = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
            field(3, b"Opaque"),
        ]
        .concat();
        let unknown = [
            field(1, &[field(1, b"v1"), field(2, b"Secret")].concat()),
            field(2, &secret),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), unknown].concat();
        let kind = crate::registry::by_kind("", "Secret").unwrap();
        let v = decode(kind, &body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1", "namespace": "ns1", "labels": {"app": "web"}}, "data": {"k": "dg=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn refuses_garbage_and_unsupported_kinds() {
        let cm = crate::registry::by_kind("", "ConfigMap").unwrap();
        assert_eq!(decode(cm, b"nope").unwrap_err().code, 400);
        assert_eq!(decode(cm, b"k8s\0\x12\xff").unwrap_err().code, 400);
        let d = crate::registry::by_kind("apps", "StatefulSet").unwrap();
        let e = decode(d, b"k8s\0").unwrap_err();
        assert_eq!(e.code, 415);
        assert!(e.message.contains("kubectl apply -f"), "{}", e.message);
    }

    fn varint_field(n: u64, x: u64) -> Vec<u8> {
        let mut v = Vec::new();
        varint(n << 3, &mut v);
        varint(x, &mut v);
        v
    }

    fn deployment(pod_spec: &[u8]) -> Vec<u8> {
        let container = [
            field(1, b"web"),
            field(2, b"busybox"),
            field(3, b"sleep"),
            field(3, b"60"),
            field(6, &varint_field(3, 80)),
            field(8, b""),
            field(13, b""),
            varint_field(16, 0),
        ]
        .concat();
        let labels = field(11, &[field(1, b"app"), field(2, b"web")].concat());
        let spec = [
            varint_field(1, 2),
            field(2, &field(1, &[field(1, b"app"), field(2, b"web")].concat())),
            field(
                3,
                &[
                    field(1, &labels),
                    field(2, &[field(2, &container), pod_spec.to_vec()].concat()),
                ]
                .concat(),
            ),
            field(4, b""),
            varint_field(5, 0),
            varint_field(7, 0),
        ]
        .concat();
        let object = [
            field(1, &[field(1, b"web"), labels.clone()].concat()),
            field(2, &spec),
            field(3, b""),
        ]
        .concat();
        let unknown = [
            field(1, &[field(1, b"apps/v1"), field(2, b"Deployment")].concat()),
            field(2, &object),
        ]
        .concat();
        [b"k8s\0".to_vec(), unknown].concat()
    }

    #[test]
    fn decodes_a_deployment_as_kubectl_create_sends_it() {
        let d = crate::registry::by_kind("apps", "Deployment").unwrap();
        let v = decode(d, &deployment(&field(3, b"Always"))).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "busybox",
                            "command": ["sleep", "60"], "ports": [{"containerPort": 80}]}],
                            "restartPolicy": "Always"}}}})
        );
    }

    #[test]
    fn a_deployment_field_the_schema_lacks_is_refused_not_dropped() {
        // PodSpec field 1: volumes.
        let d = crate::registry::by_kind("apps", "Deployment").unwrap();
        let e = decode(d, &deployment(&field(1, &field(1, b"data")))).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(
            e.message.contains("protobuf field 1 of spec.template.spec"),
            "{}",
            e.message
        );
    }
}
