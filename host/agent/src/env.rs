//! A container's environment, computed the way kubelet does.
//!
//! [`container_env`] gives the variables a container starts with: the image's
//! `ENV` first (as the container runtime merges it), then `envFrom`, then
//! `env`, later definitions replacing earlier ones in place. `$(VAR)`
//! references in `env[].value`, in `command`/`args` ([`expand`]) and in
//! `subPathExpr` follow kubelet's expansion rules. ConfigMaps and Secrets come
//! from a [`Sources`] the agent implements over its API client.
//!
//! The field and resource selectors here are shared with the downward API
//! volumes in [`crate::volumes`].
//!
//! ```no_run
//! # async fn demo(pod: &serde_json::Value, sources: &dyn trellis_agent::env::Sources) {
//! use trellis_agent::env::{container_env, expand, NodeInfo};
//! let node = NodeInfo { name: "n1".into(), host_ips: vec!["10.0.0.2".into()],
//!     pod_ips: vec!["10.88.0.5".into()], ..NodeInfo::default() };
//! let container = &pod["spec"]["containers"][0];
//! let env = container_env(pod, container, &node, &["PATH=/bin".into()], sources).await.unwrap();
//! let argv0 = expand("$(GREETING) world", &env);
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;

use base64::Engine as _;
use serde_json::Value;
use trellis_types::quantity::{Quantity, QuantityError};

/// A boxed, sendable future, as [`Sources`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where ConfigMaps and Secrets come from (the agent's API client or cache).
///
/// Object-safe: the functions here take `&dyn Sources`. `Ok(None)` means the
/// object does not exist (kubelet's NotFound, which `optional` references
/// tolerate); `Err` is any other failure, reported even for optional
/// references.
pub trait Sources: Send + Sync {
    /// The ConfigMap `namespace/name` as the API returns it.
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, String>>;

    /// The Secret `namespace/name` as the API returns it (`data` base64).
    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, String>>;
}

/// What the agent knows about its node and the pod's sandbox, for the
/// downward API and resource defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name (the pod's `spec.nodeName` is used for the field).
    pub name: String,
    /// The node's IPs, preferred family first: `status.hostIP` is the first,
    /// `status.hostIPs` all of them. Empty: taken from the pod's status.
    pub host_ips: Vec<String>,
    /// This pod's sandbox IPs, preferred family first (kubelet uses the
    /// sandbox's, as the status is not written yet when containers start).
    /// Empty: taken from the pod's status.
    pub pod_ips: Vec<String>,
    /// Allocatable CPU in millicores: the `limits.cpu` of containers without one.
    pub allocatable_cpu_millis: i64,
    /// Allocatable memory in bytes: the `limits.memory` of containers
    /// without one, and the size bound of memory-backed volumes.
    pub allocatable_memory_bytes: i64,
    /// Allocatable ephemeral storage in bytes: the `limits.ephemeral-storage`
    /// of containers without one.
    pub allocatable_ephemeral_storage_bytes: i64,
}

/// Why a container's environment (or a downward API value) cannot be made.
/// Display is kubelet's message; the agent shows it as the container's
/// `CreateContainerConfigError`.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A referenced ConfigMap does not exist and the reference is not optional.
    #[error("configmap {name:?} not found")]
    ConfigMapNotFound {
        /// The ConfigMap's name.
        name: String,
    },
    /// A referenced Secret does not exist and the reference is not optional.
    #[error("secret {name:?} not found")]
    SecretNotFound {
        /// The Secret's name.
        name: String,
    },
    /// A ConfigMap exists but lacks the referenced key.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        /// The missing key.
        key: String,
        /// The ConfigMap's namespace.
        namespace: String,
        /// The ConfigMap's name.
        name: String,
    },
    /// A Secret exists but lacks the referenced key.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        /// The missing key.
        key: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// Fetching a ConfigMap or Secret failed for another reason than absence.
    #[error("couldn't get {kind} {namespace}/{name}: {message}")]
    Source {
        /// `configmap` or `secret`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// What the source said.
        message: String,
    },
    /// A Secret's `data` (or a ConfigMap's `binaryData`) value is not base64.
    #[error("{kind} {namespace}/{name} has invalid base64 data for key {key}")]
    InvalidData {
        /// `secret` or `configmap`.
        kind: &'static str,
        /// The object's namespace.
        namespace: String,
        /// The object's name.
        name: String,
        /// The key whose value is broken.
        key: String,
    },
    /// A `fieldRef` names a field the downward API does not offer, or a bad subscript.
    #[error("{0}")]
    FieldPath(String),
    /// The node's IP is asked for but the agent does not know it.
    #[error("cannot get the node's IP for {0}: the node has no address")]
    NoHostIp(String),
    /// A `resourceFieldRef` names a resource the downward API does not offer.
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    /// A `resourceFieldRef` names a container the pod does not have.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A resource quantity or divisor does not parse.
    #[error("invalid quantity for {what}: {error}")]
    Quantity {
        /// Which value (e.g. `limits.memory of container app`).
        what: String,
        /// The parse error (part of the message, as kubelet's are).
        error: QuantityError,
    },
    /// An `env` entry has no name.
    #[error("an env entry of container {0:?} has no name")]
    MissingName(String),
}

/// The container's full environment: the image's `ENV` (`K=V` strings),
/// then [`pod_env`]'s variables, which replace image variables of the same
/// name in place and are appended otherwise.
pub async fn container_env(
    pod: &Value,
    container: &Value,
    node: &NodeInfo,
    image_env: &[String],
    sources: &dyn Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let own = pod_env(pod, container, node, sources).await?;
    let mut env = OrderedEnv::default();
    for entry in image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        env.set(k, v.to_string());
    }
    for (k, v) in own {
        env.set(&k, v);
    }
    Ok(env.into_vec())
}

/// The variables the pod spec gives a container (`envFrom`, then `env`),
/// without the image's. kubelet expands `command`, `args` and `subPathExpr`
/// against these only, so pass this to [`expand`] for exact kubelet
/// behaviour (a `$(PATH)` set only by the image stays as written).
pub async fn pod_env(
    pod: &Value,
    container: &Value,
    node: &NodeInfo,
    sources: &dyn Sources,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut lookup = Lookup::new(sources, namespace_of(pod));
    let mut env = OrderedEnv::default();

    for from in array(&container["envFrom"]) {
        let prefix = from["prefix"].as_str().unwrap_or("");
        if let Some(r) = from.get("configMapRef").filter(|r| r.is_object()) {
            let name = r["name"].as_str().unwrap_or("");
            let Some(cm) = lookup.config_map(name).await? else {
                if optional(r) {
                    continue;
                }
                return Err(EnvError::ConfigMapNotFound { name: name.into() });
            };
            for (k, v) in object(&cm["data"]) {
                let key = format!("{prefix}{k}");
                if is_env_var_name(&key) {
                    env.set(&key, v.as_str().unwrap_or("").to_string());
                } else {
                    tracing::debug!(
                        key,
                        configmap = name,
                        "skipping key that is not a valid env name"
                    );
                }
            }
        } else if let Some(r) = from.get("secretRef").filter(|r| r.is_object()) {
            let name = r["name"].as_str().unwrap_or("");
            let Some(secret) = lookup.secret(name).await? else {
                if optional(r) {
                    continue;
                }
                return Err(EnvError::SecretNotFound { name: name.into() });
            };
            for (k, v) in secret {
                let key = format!("{prefix}{k}");
                if is_env_var_name(&key) {
                    env.set(&key, String::from_utf8_lossy(&v).into_owned());
                } else {
                    tracing::debug!(
                        key,
                        secret = name,
                        "skipping key that is not a valid env name"
                    );
                }
            }
        }
    }

    let cname = container["name"].as_str().unwrap_or("");
    for var in array(&container["env"]) {
        let Some(name) = var["name"].as_str() else {
            return Err(EnvError::MissingName(cname.into()));
        };
        let literal = var["value"].as_str().unwrap_or("");
        let value_from = var.get("valueFrom").filter(|v| v.is_object());
        let value = if !literal.is_empty() {
            expand_with(literal, |k| env.get(k))
        } else if let Some(from) = value_from {
            if let Some(r) = from.get("fieldRef").filter(|r| r.is_object()) {
                field_value(pod, node, r["fieldPath"].as_str().unwrap_or(""), true)?
            } else if let Some(r) = from.get("resourceFieldRef").filter(|r| r.is_object()) {
                let target = match r["containerName"].as_str().filter(|n| !n.is_empty()) {
                    Some(other) => find_container(pod, other)?,
                    None => container,
                };
                resource_value(pod, target, node, r)?
            } else if let Some(r) = from.get("configMapKeyRef").filter(|r| r.is_object()) {
                let cm_name = r["name"].as_str().unwrap_or("");
                let key = r["key"].as_str().unwrap_or("");
                let Some(cm) = lookup.config_map(cm_name).await? else {
                    if optional(r) {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound {
                        name: cm_name.into(),
                    });
                };
                match cm["data"].get(key).and_then(Value::as_str) {
                    Some(v) => v.to_string(),
                    None if optional(r) => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: key.into(),
                            namespace: lookup.namespace.clone(),
                            name: cm_name.into(),
                        })
                    }
                }
            } else if let Some(r) = from.get("secretKeyRef").filter(|r| r.is_object()) {
                let s_name = r["name"].as_str().unwrap_or("");
                let key = r["key"].as_str().unwrap_or("");
                let Some(secret) = lookup.secret(s_name).await? else {
                    if optional(r) {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound {
                        name: s_name.into(),
                    });
                };
                match secret.get(key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional(r) => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: key.into(),
                            namespace: lookup.namespace.clone(),
                            name: s_name.into(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(name, value);
    }
    Ok(env.into_vec())
}

/// Expand `$(VAR)` references in `s` against `env` (the last definition of a
/// name wins), as kubelet does for `command` and `args`: unknown references
/// stay as written, `$$` is an escaped `$` (so `$$(X)` gives `$(X)`), and a
/// `$` not starting a reference is kept.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    expand_with(s, |k| map.get(k).copied())
}

/// Expand `$(VAR)` with `lookup`; `None` leaves the reference as written.
pub(crate) fn expand_with<'v>(s: &str, lookup: impl Fn(&str) -> Option<&'v str>) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&s[checkpoint..cursor]);
            let rest = &s[cursor + 1..];
            match bytes[cursor + 1] {
                b'$' => {
                    out.push('$');
                    cursor += 2;
                }
                b'(' => match rest[1..].find(')') {
                    Some(end) => {
                        let name = &rest[1..1 + end];
                        match lookup(name) {
                            Some(v) => out.push_str(v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        cursor += 1 + 1 + end + 1;
                    }
                    None => {
                        out.push_str("$(");
                        cursor += 2;
                    }
                },
                _ => {
                    // A lone `$`: kept, and the next character is copied as is.
                    out.push('$');
                    cursor += 1;
                }
            }
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&s[checkpoint..]);
    out
}

/// Whether `name` is a valid environment variable name by Kubernetes' rule
/// (`[-._a-zA-Z][-._a-zA-Z0-9]*`, and not `.`, `..` or starting with `..`).
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    (first.is_ascii_alphabetic() || matches!(first, '-' | '.' | '_'))
        && chars.all(ok)
        && name != "."
        && !name.starts_with("..")
}

/// Variables in first-definition order; a redefinition replaces in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, key: &str, value: String) {
        match self.index.get(key) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(key.to_string(), self.vars.len());
                self.vars.push((key.to_string(), value));
            }
        }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.index.get(key).map(|&i| self.vars[i].1.as_str())
    }

    fn into_vec(self) -> Vec<(String, String)> {
        self.vars
    }
}

/// ConfigMaps and Secrets fetched once per computation, as kubelet caches
/// them per call.
pub(crate) struct Lookup<'s> {
    sources: &'s dyn Sources,
    pub(crate) namespace: String,
    config_maps: HashMap<String, Option<Value>>,
    secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
}

impl<'s> Lookup<'s> {
    pub(crate) fn new(sources: &'s dyn Sources, namespace: &str) -> Self {
        Self {
            sources,
            namespace: namespace.to_string(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// The ConfigMap, or `None` if it does not exist.
    pub(crate) async fn config_map(&mut self, name: &str) -> Result<Option<Value>, EnvError> {
        if let Some(cm) = self.config_maps.get(name) {
            return Ok(cm.clone());
        }
        let cm = self
            .sources
            .config_map(&self.namespace, name)
            .await
            .map_err(|message| EnvError::Source {
                kind: "configmap",
                namespace: self.namespace.clone(),
                name: name.into(),
                message,
            })?;
        self.config_maps.insert(name.to_string(), cm.clone());
        Ok(cm)
    }

    /// The ConfigMap's `data` and decoded `binaryData` together, or `None`
    /// if it does not exist.
    pub(crate) async fn config_map_files(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, EnvError> {
        let Some(cm) = self.config_map(name).await? else {
            return Ok(None);
        };
        let mut files: BTreeMap<String, Vec<u8>> = object(&cm["data"])
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").as_bytes().to_vec()))
            .collect();
        for (k, v) in object(&cm["binaryData"]) {
            if files.contains_key(k) {
                continue;
            }
            let bytes = decode_base64(v).ok_or_else(|| EnvError::InvalidData {
                kind: "configmap",
                namespace: self.namespace.clone(),
                name: name.into(),
                key: k.clone(),
            })?;
            files.insert(k.clone(), bytes);
        }
        Ok(Some(files))
    }

    /// The Secret's decoded `data`, or `None` if it does not exist.
    pub(crate) async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, EnvError> {
        if let Some(s) = self.secrets.get(name) {
            return Ok(s.clone());
        }
        let secret = self
            .sources
            .secret(&self.namespace, name)
            .await
            .map_err(|message| EnvError::Source {
                kind: "secret",
                namespace: self.namespace.clone(),
                name: name.into(),
                message,
            })?;
        let decoded = match secret {
            None => None,
            Some(secret) => {
                let mut data = BTreeMap::new();
                for (k, v) in object(&secret["data"]) {
                    let bytes = decode_base64(v).ok_or_else(|| EnvError::InvalidData {
                        kind: "secret",
                        namespace: self.namespace.clone(),
                        name: name.into(),
                        key: k.clone(),
                    })?;
                    data.insert(k.clone(), bytes);
                }
                Some(data)
            }
        };
        self.secrets.insert(name.to_string(), decoded.clone());
        Ok(decoded)
    }
}

fn decode_base64(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// The value of a downward API `fieldRef`. `env` allows the fields only
/// environment variables may use (spec.*, status.*); volumes pass `false`
/// and get kubelet's `unsupported fieldPath` for them.
pub(crate) fn field_value(
    pod: &Value,
    node: &NodeInfo,
    path: &str,
    env: bool,
) -> Result<String, EnvError> {
    let meta = &pod["metadata"];
    if let Some((field, key)) = split_subscript(path) {
        let map = match field {
            "metadata.annotations" => &meta["annotations"],
            "metadata.labels" => &meta["labels"],
            _ => {
                return Err(EnvError::FieldPath(format!(
                    "fieldPath {path:?} does not support subscript"
                )))
            }
        };
        if let Err(why) = check_qualified_name(&key.to_lowercase()) {
            return Err(EnvError::FieldPath(format!(
                "invalid key subscript in {path}: {why}"
            )));
        }
        return Ok(map[key].as_str().unwrap_or("").to_string());
    }
    let status = &pod["status"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    match path {
        "metadata.name" => Ok(s(&meta["name"])),
        "metadata.namespace" => Ok(namespace_of(pod).to_string()),
        "metadata.uid" => Ok(s(&meta["uid"])),
        "metadata.labels" => Ok(format_map(&meta["labels"])),
        "metadata.annotations" => Ok(format_map(&meta["annotations"])),
        "spec.nodeName" if env => Ok(s(&pod["spec"]["nodeName"])),
        "spec.serviceAccountName" if env => Ok(s(&pod["spec"]["serviceAccountName"])),
        "status.hostIP" | "status.hostIPs" if env => {
            let ips = if node.host_ips.is_empty() {
                status_ips(status, "hostIP", "hostIPs")
            } else {
                node.host_ips.clone()
            };
            if ips.is_empty() {
                return Err(EnvError::NoHostIp(path.into()));
            }
            Ok(if path == "status.hostIP" {
                ips[0].clone()
            } else {
                ips.join(",")
            })
        }
        "status.podIP" | "status.podIPs" if env => {
            let ips = if node.pod_ips.is_empty() {
                status_ips(status, "podIP", "podIPs")
            } else {
                node.pod_ips.clone()
            };
            Ok(if path == "status.podIP" {
                ips.first().cloned().unwrap_or_default()
            } else {
                ips.join(",")
            })
        }
        _ => Err(EnvError::FieldPath(format!(
            "unsupported fieldPath: {path}"
        ))),
    }
}

fn status_ips(status: &Value, single: &str, plural: &str) -> Vec<String> {
    let many: Vec<String> = array(&status[plural])
        .filter_map(|e| e["ip"].as_str().map(str::to_string))
        .collect();
    if !many.is_empty() {
        return many;
    }
    status[single]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_string()])
        .unwrap_or_default()
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (field, key) = inner.split_once("['")?;
    (!field.is_empty()).then_some((field, key))
}

/// Kubernetes' qualified name rule for label and annotation keys.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err("prefix part must be a lowercase RFC 1123 subdomain".into());
        }
    }
    let ok_inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let b = name.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Err("name part must be non-empty and at most 63 characters".into());
    }
    if !b[0].is_ascii_alphanumeric()
        || !b[b.len() - 1].is_ascii_alphanumeric()
        || !b.iter().all(|&c| ok_inner(c))
    {
        return Err("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    Ok(())
}

/// kubelet's `FormatMap`: `key="value"` lines sorted by key, values quoted
/// as Go's `%q` does, without a trailing newline.
fn format_map(map: &Value) -> String {
    let mut entries: Vec<(&String, &str)> = object(map)
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    entries.sort();
    entries
        .iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The container named `name` among the pod's containers and init containers.
pub(crate) fn find_container<'p>(pod: &'p Value, name: &str) -> Result<&'p Value, EnvError> {
    array(&pod["spec"]["containers"])
        .chain(array(&pod["spec"]["initContainers"]))
        .find(|c| c["name"].as_str() == Some(name))
        .ok_or_else(|| EnvError::ContainerNotFound(name.into()))
}

/// The value of a `resourceFieldRef` (`resource`, `divisor`) for `container`,
/// rounded up as kubelet does. Unset limits default to the pod-level limit
/// or else the node's allocatable; unset requests to the limit set in the
/// spec (the API's defaulting), else 0.
pub(crate) fn resource_value(
    pod: &Value,
    container: &Value,
    node: &NodeInfo,
    field: &Value,
) -> Result<String, EnvError> {
    let resource = field["resource"].as_str().unwrap_or("");
    let Some((kind, name)) = resource.split_once('.') else {
        return Err(EnvError::UnsupportedResource(resource.into()));
    };
    let is_hugepages = name.starts_with("hugepages-");
    if !matches!(kind, "limits" | "requests")
        || !(matches!(name, "cpu" | "memory" | "ephemeral-storage") || is_hugepages)
    {
        return Err(EnvError::UnsupportedResource(resource.into()));
    }
    let cname = container["name"].as_str().unwrap_or("");
    let what = || format!("{resource} of container {cname}");
    let parse = |v: &Value, what: String| -> Result<Option<Quantity>, EnvError> {
        match quantity_text(v) {
            None => Ok(None),
            Some(s) => Quantity::parse(&s)
                .map(Some)
                .map_err(|error| EnvError::Quantity { what, error }),
        }
    };
    let res = &container["resources"];
    let mut q = parse(&res[kind][name], what())?;
    if q.is_none() && kind == "requests" {
        q = parse(&res["limits"][name], what())?;
    }
    if q.is_none() && kind == "limits" {
        q = parse(
            &pod["spec"]["resources"]["limits"][name],
            format!("pod-level limits.{name}"),
        )?;
    }
    let divisor = parse(&field["divisor"], format!("the divisor of {resource}"))?;
    if name == "cpu" {
        let millis = match q {
            Some(q) => q.milli_value(),
            None if kind == "limits" => node.allocatable_cpu_millis,
            None => 0,
        };
        let div = divisor
            .map(|d| d.milli_value())
            .filter(|&d| d != 0)
            .unwrap_or(1000);
        return Ok(ceil_div(millis, div).to_string());
    }
    let units = match q {
        Some(q) => q.value(),
        None if kind == "limits" => match name {
            "memory" => node.allocatable_memory_bytes,
            "ephemeral-storage" => node.allocatable_ephemeral_storage_bytes,
            _ => 0,
        },
        None => 0,
    };
    let div = divisor.map(|d| d.value()).filter(|&d| d != 0).unwrap_or(1);
    Ok(ceil_div(units, div).to_string())
}

/// A quantity as JSON: normally a string, tolerated as a number.
pub(crate) fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    let (a, b) = (a as i128, b as i128);
    let q = a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0);
    q.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The pod's namespace (`default` when the object carries none).
pub(crate) fn namespace_of(pod: &Value) -> &str {
    pod["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
}

pub(crate) fn optional(r: &Value) -> bool {
    r["optional"].as_bool().unwrap_or(false)
}

pub(crate) fn array(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

pub(crate) fn object(v: &Value) -> impl Iterator<Item = (&String, &Value)> {
    v.as_object().into_iter().flatten()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Mutex;

    /// An in-memory [`Sources`]: objects by `namespace/name`, and names
    /// whose lookups fail.
    #[derive(Default)]
    pub(crate) struct FakeSources {
        pub config_maps: Mutex<HashMap<String, Value>>,
        pub secrets: Mutex<HashMap<String, Value>>,
        pub failing: Mutex<Vec<String>>,
        pub calls: Mutex<usize>,
    }

    impl FakeSources {
        pub(crate) fn with_config_map(self, ns: &str, name: &str, data: Value) -> Self {
            self.config_maps.lock().unwrap().insert(
                format!("{ns}/{name}"),
                json!({"metadata": {"name": name, "namespace": ns}, "data": data}),
            );
            self
        }

        /// Adds a Secret with `data` given in plain text (encoded here).
        pub(crate) fn with_secret(self, ns: &str, name: &str, data: &[(&str, &[u8])]) -> Self {
            let data: serde_json::Map<String, Value> = data
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                    )
                })
                .collect();
            self.secrets.lock().unwrap().insert(
                format!("{ns}/{name}"),
                json!({"metadata": {"name": name, "namespace": ns}, "data": data}),
            );
            self
        }

        fn get(
            &self,
            map: &Mutex<HashMap<String, Value>>,
            ns: &str,
            name: &str,
        ) -> Result<Option<Value>, String> {
            *self.calls.lock().unwrap() += 1;
            if self.failing.lock().unwrap().iter().any(|f| f == name) {
                return Err("connection refused".into());
            }
            Ok(map.lock().unwrap().get(&format!("{ns}/{name}")).cloned())
        }
    }

    impl Sources for FakeSources {
        fn config_map<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<Value>, String>> {
            Box::pin(async move { self.get(&self.config_maps, ns, name) })
        }

        fn secret<'a>(
            &'a self,
            ns: &'a str,
            name: &'a str,
        ) -> BoxFuture<'a, Result<Option<Value>, String>> {
            Box::pin(async move { self.get(&self.secrets, ns, name) })
        }
    }

    pub(crate) fn node() -> NodeInfo {
        NodeInfo {
            name: "node-1".into(),
            host_ips: vec!["10.0.0.2".into(), "fd00::2".into()],
            pod_ips: vec!["10.88.0.7".into(), "fd88::7".into()],
            allocatable_cpu_millis: 4000,
            allocatable_memory_bytes: 8 << 30,
            allocatable_ephemeral_storage_bytes: 100 << 30,
        }
    }

    pub(crate) fn pod(containers: Value) -> Value {
        json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-123",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"note": "say \"hi\"\n"}
            },
            "spec": {"nodeName": "node-1", "serviceAccountName": "builder", "containers": containers},
            "status": {"hostIP": "192.0.2.1", "podIP": "192.0.2.9"}
        })
    }

    fn run(pod: &Value, sources: &FakeSources) -> Result<Vec<(String, String)>, EnvError> {
        let c = &pod["spec"]["containers"][0];
        block_on(container_env(pod, c, &node(), &[], sources))
    }

    pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn expansion_follows_kubelet() {
        let env = vec![
            ("A".to_string(), "1".to_string()),
            ("B".to_string(), "x y".to_string()),
        ];
        assert_eq!(expand("$(A)-$(B)", &env), "1-x y");
        assert_eq!(expand("$(UNKNOWN)", &env), "$(UNKNOWN)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$$$(A)", &env), "$1");
        assert_eq!(expand("$$A", &env), "$A");
        assert_eq!(expand("$A $", &env), "$A $");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("a$(A)b$()c", &env), "a1b$()c");
        assert_eq!(expand("é$(A)ü", &env), "é1ü");
    }

    #[test]
    fn env_var_names() {
        for ok in [
            "A",
            "my.env-name",
            "MY_ENV.NAME",
            "MyEnvName1",
            "_x",
            "-a",
            ".a",
        ] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1A", "a b", "a=b", ".", "..", "..a", "ü"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn image_env_then_env_from_then_env_with_expansion() {
        let sources = FakeSources::default()
            .with_config_map(
                "shop",
                "cfg",
                json!({"MODE": "fast", "bad key": "x", "1NUM": "y", "PATH": "/cm"}),
            )
            .with_secret("shop", "creds", &[("PASSWORD", b"s3cret"), ("TOKEN", b"t")]);
        let pod = pod(json!([{
            "name": "app",
            "envFrom": [
                {"configMapRef": {"name": "cfg"}},
                {"secretRef": {"name": "creds"}, "prefix": "DB_"},
                {"configMapRef": {"name": "absent", "optional": true}}
            ],
            "env": [
                {"name": "GREETING", "value": "hello $(MODE) $(NOPE) $$(MODE)"},
                {"name": "MODE", "value": "slow"},
                {"name": "AFTER", "value": "$(MODE)/$(DB_TOKEN)/$(LATER)"},
                {"name": "LATER", "value": "l"},
                {"name": "EMPTY"}
            ]
        }]));
        let c = &pod["spec"]["containers"][0];
        let image = vec![
            "PATH=/usr/bin".to_string(),
            "HOME=/root".to_string(),
            "MODE=image".to_string(),
        ];
        let env = block_on(container_env(&pod, c, &node(), &image, &sources)).unwrap();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "PATH",
                "HOME",
                "MODE",
                "DB_PASSWORD",
                "DB_TOKEN",
                "GREETING",
                "AFTER",
                "LATER",
                "EMPTY"
            ]
        );
        assert_eq!(get(&env, "PATH"), Some("/cm"));
        assert_eq!(get(&env, "HOME"), Some("/root"));
        assert_eq!(get(&env, "MODE"), Some("slow"));
        assert_eq!(get(&env, "DB_PASSWORD"), Some("s3cret"));
        assert_eq!(get(&env, "GREETING"), Some("hello fast $(NOPE) $(MODE)"));
        assert_eq!(get(&env, "AFTER"), Some("slow/t/$(LATER)"));
        assert_eq!(get(&env, "EMPTY"), Some(""));

        // Expansion of command and args sees the pod's variables.
        let own = block_on(pod_env(&pod, c, &node(), &sources)).unwrap();
        assert_eq!(expand("$(HOME)|$(MODE)", &own), "$(HOME)|slow");
    }

    #[test]
    fn key_refs_and_optional() {
        let sources = FakeSources::default()
            .with_config_map("shop", "cfg", json!({"mode": "fast"}))
            .with_secret("shop", "s", &[("pw", b"p")]);
        let pod = pod(json!([{
            "name": "app",
            "env": [
                {"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope", "optional": true}}},
                {"name": "D", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": true}}},
                {"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": true}}},
                {"name": "F", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x", "optional": true}}}
            ]
        }]));
        let env = run(&pod, &sources).unwrap();
        assert_eq!(
            env,
            vec![("A".into(), "fast".into()), ("B".into(), "p".into())]
        );
        // One fetch per object even when referenced several times.
        assert_eq!(*sources.calls.lock().unwrap(), 4);
    }

    #[test]
    fn errors_read_like_kubelet() {
        let sources = FakeSources::default()
            .with_config_map("shop", "cfg", json!({"a": "1"}))
            .with_secret("shop", "s", &[("a", b"1")]);
        sources.failing.lock().unwrap().push("flaky".into());
        let cases = [
            (
                json!({"envFrom": [{"configMapRef": {"name": "nope"}}]}),
                r#"configmap "nope" not found"#,
            ),
            (
                json!({"envFrom": [{"secretRef": {"name": "nope"}}]}),
                r#"secret "nope" not found"#,
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}]}),
                "couldn't find key mode in ConfigMap shop/cfg",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}}]}),
                "couldn't find key pw in Secret shop/s",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}),
                r#"configmap "nope" not found"#,
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}),
                r#"secret "nope" not found"#,
            ),
            (
                json!({"envFrom": [{"configMapRef": {"name": "flaky", "optional": true}}]}),
                "couldn't get configmap shop/flaky: connection refused",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]}),
                "unsupported fieldPath: spec.hostname",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name['x']"}}}]}),
                r#"fieldPath "metadata.name['x']" does not support subscript"#,
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.gpu"}}}]}),
                "unsupported container resource : limits.gpu",
            ),
            (
                json!({"env": [{"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "containerName": "ghost"}}}]}),
                "container ghost not found",
            ),
        ];
        for (mut container, message) in cases {
            container["name"] = json!("app");
            let err = run(&pod(json!([container])), &sources).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
    }

    #[test]
    fn field_refs() {
        let fields = [
            ("metadata.name", "web"),
            ("metadata.namespace", "shop"),
            ("metadata.uid", "u-123"),
            ("metadata.labels['app']", "web"),
            ("metadata.labels['missing']", ""),
            ("metadata.annotations['note']", "say \"hi\"\n"),
            ("spec.nodeName", "node-1"),
            ("spec.serviceAccountName", "builder"),
            ("status.hostIP", "10.0.0.2"),
            ("status.hostIPs", "10.0.0.2,fd00::2"),
            ("status.podIP", "10.88.0.7"),
            ("status.podIPs", "10.88.0.7,fd88::7"),
            ("metadata.labels", "app=\"web\"\ntier=\"front\""),
            ("metadata.annotations", "note=\"say \\\"hi\\\"\\n\""),
        ];
        let env: Vec<Value> = fields
            .iter()
            .enumerate()
            .map(|(i, (f, _))| json!({"name": format!("F{i}"), "valueFrom": {"fieldRef": {"fieldPath": f}}}))
            .collect();
        let pod = pod(json!([{"name": "app", "env": env}]));
        let got = run(&pod, &FakeSources::default()).unwrap();
        for (i, (field, want)) in fields.iter().enumerate() {
            assert_eq!(get(&got, &format!("F{i}")), Some(*want), "{field}");
        }
        // Without the sandbox's IPs the pod's status is used.
        let bare = NodeInfo::default();
        let c = &pod["spec"]["containers"][0];
        let got = block_on(pod_env(&pod, c, &bare, &FakeSources::default())).unwrap();
        assert_eq!(get(&got, "F8"), Some("192.0.2.1"));
        assert_eq!(get(&got, "F10"), Some("192.0.2.9"));
        // Bad subscripts are refused.
        let err = field_value(&pod, &bare, "metadata.labels['a b']", true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid key subscript in metadata.labels['a b']: "),
            "{err}"
        );
        // Volumes get only metadata.
        assert!(field_value(&pod, &bare, "spec.nodeName", false).is_err());
    }

    #[test]
    fn resource_refs_round_up_and_default_to_allocatable() {
        let r = |res: &str, div: Option<&str>| {
            let mut f = json!({"resource": res});
            if let Some(d) = div {
                f["divisor"] = json!(d);
            }
            f
        };
        let cases = [
            (r("limits.cpu", None), "1"), // 500m rounds up to 1
            (r("limits.cpu", Some("1m")), "500"),
            (r("requests.cpu", Some("1m")), "250"),
            (r("limits.memory", None), "134217728"),
            (r("limits.memory", Some("1Mi")), "128"),
            (r("limits.memory", Some("1G")), "1"), // 0.134 GB rounds up
            (r("requests.memory", Some("1Mi")), "128"), // defaults to the limit
            (r("limits.ephemeral-storage", Some("1Gi")), "100"), // allocatable
            (r("requests.ephemeral-storage", None), "0"),
            (
                json!({"resource": "limits.cpu", "containerName": "side", "divisor": "1m"}),
                "4000",
            ),
            (
                json!({"resource": "limits.memory", "containerName": "side"}),
                "8589934592",
            ),
            (
                json!({"resource": "requests.cpu", "containerName": "side", "divisor": "0"}),
                "0",
            ),
        ];
        let env: Vec<Value> = cases
            .iter()
            .enumerate()
            .map(|(i, (f, _))| json!({"name": format!("R{i}"), "valueFrom": {"resourceFieldRef": f}}))
            .collect();
        let pod = pod(json!([
            {"name": "app", "env": env, "resources": {
                "limits": {"cpu": "500m", "memory": "128Mi"},
                "requests": {"cpu": "250m"}}},
            {"name": "side"}
        ]));
        let got = run(&pod, &FakeSources::default()).unwrap();
        for (i, (f, want)) in cases.iter().enumerate() {
            assert_eq!(get(&got, &format!("R{i}")), Some(*want), "{f}");
        }
    }

    #[test]
    fn pod_level_limit_is_the_default() {
        let mut pod = pod(json!([{"name": "app", "env": [
            {"name": "M", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}
        ]}]));
        pod["spec"]["resources"] = json!({"limits": {"memory": "1Gi"}});
        assert_eq!(
            get(&run(&pod, &FakeSources::default()).unwrap(), "M"),
            Some("1024")
        );
    }

    #[test]
    fn binary_config_map_data_and_bad_base64() {
        let sources = FakeSources::default();
        sources.config_maps.lock().unwrap().insert(
            "shop/b".into(),
            json!({"data": {"t": "text"}, "binaryData": {"bin": "AAEC", "broken": "%%%"}}),
        );
        let mut lookup = Lookup::new(&sources, "shop");
        let err = block_on(lookup.config_map_files("b")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configmap shop/b has invalid base64 data for key broken"
        );
        sources.config_maps.lock().unwrap().insert(
            "shop/b".into(),
            json!({"data": {"t": "text"}, "binaryData": {"bin": "AAEC"}}),
        );
        let mut lookup = Lookup::new(&sources, "shop");
        let files = block_on(lookup.config_map_files("b")).unwrap().unwrap();
        assert_eq!(files["bin"], vec![0, 1, 2]);
        assert_eq!(files["t"], b"text");
    }
}
