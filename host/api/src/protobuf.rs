//! Kubernetes' protobuf request bodies, for the kinds kubectl's `create`
//! generators send that way (`kubectl create namespace|configmap|secret|
//! serviceaccount`): client-go sends them as protobuf and never falls back to
//! JSON. The envelope is `k8s\0` + `runtime.Unknown{typeMeta = 1, raw = 2}`;
//! `raw` is decoded by a small schema per kind into the same JSON the server
//! stores. Unset fields arrive as empty strings and are dropped.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::registry::Kind;

/// How one field is encoded.
#[derive(Clone, Copy)]
enum Field {
    Str,
    Bool,
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
    (14, "finalizers", Field::StrList),
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

fn schema(kind: &Kind) -> Option<&'static [(u64, &'static str, Field)]> {
    match (kind.group, kind.kind) {
        ("", "Namespace") => Some(NAMESPACE),
        ("", "ConfigMap") => Some(CONFIGMAP),
        ("", "Secret") => Some(SECRET),
        ("", "ServiceAccount") => Some(SERVICEACCOUNT),
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

fn message(
    b: &[u8],
    schema: &[(u64, &str, Field)],
    depth: usize,
) -> Result<Map<String, Value>, ApiError> {
    if depth > 16 {
        return Err(malformed());
    }
    let mut out = Map::new();
    let mut r = Reader { b, i: 0 };
    while let Some((n, payload, int)) = r.next()? {
        let Some((_, name, field)) = schema.iter().find(|(f, _, _)| *f == n) else {
            continue;
        };
        let name = name.to_string();
        match field {
            Field::Skip => {}
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
                let m = message(payload, s, depth + 1)?;
                if !m.is_empty() {
                    out.insert(name, Value::Object(m));
                }
            }
            Field::MsgList(s) => {
                let m = message(payload, s, depth + 1)?;
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
    let Some(schema) = schema(kind) else {
        return Err(ApiError::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {} (protobuf bodies are accepted for Namespace, ConfigMap, Secret and ServiceAccount; send {} as JSON or YAML, e.g. with `kubectl apply -f`)",
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
            2 => object = Some(message(payload, schema, 0)?),
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

    fn field(n: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(n << 3 | 2) as u8, payload.len() as u8];
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
        let d = crate::registry::by_kind("apps", "Deployment").unwrap();
        let e = decode(d, b"k8s\0").unwrap_err();
        assert_eq!(e.code, 415);
        assert!(e.message.contains("kubectl apply -f"), "{}", e.message);
    }
}
