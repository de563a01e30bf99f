//! OpenAPI v3 documents for the served kinds, enough for `kubectl apply`
//! (which looks up each resource's PATCH operation and its parameters) and
//! `kubectl explain` (which prints the schemas' descriptions).
//!
//! The schemas come from k8s-openapi's schemars implementations, which
//! already carry upstream's names (`io.k8s.api.apps.v1.Deployment`) and
//! descriptions. They are generated once for every kind and shared with
//! [`crate::validation`], which walks them to find unknown fields and type
//! errors.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::registry::{self, Kind};

/// Where component schemas live; every `$ref` starts with this.
pub(crate) const REF_PREFIX: &str = "#/components/schemas/";

/// Upstream's version string reported in the documents' `info`.
const INFO_VERSION: &str = "v1.33.0";

/// A kind backed by a k8s-openapi type.
pub(crate) struct Builtin {
    group: &'static str,
    kind: &'static str,
    schema_name: fn() -> String,
    add: fn(&mut SchemaGenerator) -> Schema,
    decode: fn(&Value) -> Result<(), serde_json::Error>,
}

impl Builtin {
    /// The component name of the kind's schema, e.g. `io.k8s.api.core.v1.Pod`.
    pub(crate) fn schema_name(&self) -> String {
        (self.schema_name)()
    }

    /// Decodes `obj` into the k8s-openapi type, to catch what the schema
    /// walk cannot see (malformed timestamps, bad base64, ...).
    pub(crate) fn decode(&self, obj: &Value) -> Result<(), serde_json::Error> {
        (self.decode)(obj)
    }
}

fn name_of<T: JsonSchema>() -> String {
    T::schema_name().into_owned()
}

fn add_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn decode_of<T: DeserializeOwned>(obj: &Value) -> Result<(), serde_json::Error> {
    T::deserialize(obj).map(|_| ())
}

macro_rules! builtins {
    ($(($group:literal, $kind:literal, $ty:ty)),* $(,)?) => {
        &[$(Builtin {
            group: $group,
            kind: $kind,
            schema_name: name_of::<$ty>,
            add: add_of::<$ty>,
            decode: decode_of::<$ty>,
        }),*]
    };
}

use k8s_openapi::api::{apps, autoscaling, batch, coordination, core, discovery, rbac, scheduling};

static BUILTINS: &[Builtin] = builtins![
    ("", "Namespace", core::v1::Namespace),
    ("", "Node", core::v1::Node),
    ("", "Pod", core::v1::Pod),
    ("", "Service", core::v1::Service),
    ("", "Endpoints", core::v1::Endpoints),
    ("", "ConfigMap", core::v1::ConfigMap),
    ("", "Secret", core::v1::Secret),
    ("", "ServiceAccount", core::v1::ServiceAccount),
    ("", "Event", core::v1::Event),
    ("", "ResourceQuota", core::v1::ResourceQuota),
    ("", "LimitRange", core::v1::LimitRange),
    ("", "PersistentVolume", core::v1::PersistentVolume),
    ("", "PersistentVolumeClaim", core::v1::PersistentVolumeClaim),
    ("apps", "Deployment", apps::v1::Deployment),
    ("apps", "ReplicaSet", apps::v1::ReplicaSet),
    ("apps", "DaemonSet", apps::v1::DaemonSet),
    ("apps", "StatefulSet", apps::v1::StatefulSet),
    ("apps", "ControllerRevision", apps::v1::ControllerRevision),
    ("batch", "Job", batch::v1::Job),
    ("batch", "CronJob", batch::v1::CronJob),
    ("coordination.k8s.io", "Lease", coordination::v1::Lease),
    (
        "scheduling.k8s.io",
        "PriorityClass",
        scheduling::v1::PriorityClass
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        autoscaling::v2::HorizontalPodAutoscaler
    ),
    ("rbac.authorization.k8s.io", "Role", rbac::v1::Role),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        rbac::v1::RoleBinding
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRole",
        rbac::v1::ClusterRole
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        rbac::v1::ClusterRoleBinding
    ),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        discovery::v1::EndpointSlice
    ),
];

/// The k8s-openapi type behind `kind`, if it has one (trellis.dev kinds do not).
pub(crate) fn builtin(kind: &Kind) -> Option<&'static Builtin> {
    BUILTINS
        .iter()
        .find(|b| b.group == kind.group && b.kind == kind.kind)
}

/// List strategies kubectl's client-side apply reads from the schema
/// (`patchStrategy`/`patchMergeKey` struct tags upstream). Without them a
/// three-way merge would replace whole lists such as `containers`.
const PATCH_META: &[(&str, &str, Option<&str>, &str)] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        Some("name"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        Some("name"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        Some("name"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        Some("name"),
        "merge,retainKeys",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        Some("name"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        Some("ip"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        Some("topologyKey"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        Some("name"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        Some("name"),
        "merge,retainKeys",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        Some("containerPort"),
        "merge",
    ),
    ("io.k8s.api.core.v1.Container", "env", Some("name"), "merge"),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        Some("mountPath"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        Some("devicePath"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        Some("port"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        Some("name"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        Some("type"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        None,
        "retainKeys",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        Some("type"),
        "merge",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        None,
        "merge",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        Some("uid"),
        "merge",
    ),
];

/// Every component schema of every served kind, keyed by upstream name.
pub(crate) fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(build_definitions)
}

fn build_definitions() -> Map<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for b in BUILTINS {
        (b.add)(&mut generator);
    }
    let mut defs = generator.take_definitions(true);
    for b in BUILTINS {
        let Some(kind) = registry::by_kind(b.group, b.kind) else {
            continue;
        };
        if let Some(Value::Object(schema)) = defs.get_mut(&b.schema_name()) {
            schema.insert("x-kubernetes-group-version-kind".into(), json!([gvk(kind)]));
        }
    }
    for (schema, field, key, strategy) in PATCH_META {
        let Some(prop) = defs
            .get_mut(*schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(key) = key {
            prop.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        prop.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
    }
    for kind in registry::KINDS.iter().filter(|k| builtin(k).is_none()) {
        defs.insert(custom_schema_name(kind), custom_schema(kind));
    }
    defs.insert(
        PATCH_SCHEMA.into(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    defs
}

const PATCH_SCHEMA: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

fn gvk(kind: &Kind) -> Value {
    json!({ "group": kind.group, "version": kind.version, "kind": kind.kind })
}

/// Upstream names CRD schemas by reversed group: `dev.trellis.v1alpha1.Plugin`.
fn custom_schema_name(kind: &Kind) -> String {
    let group: Vec<&str> = kind.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), kind.version, kind.kind)
}

/// trellis.dev kinds get their real schemas with later issues; until then
/// spec and status accept anything.
fn custom_schema(kind: &Kind) -> Value {
    json!({
        "description": format!(
            "{} is a Trellis {} object; its spec and status are not yet described by a schema.",
            kind.kind,
            kind.api_version(),
        ),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "description": "Standard object's metadata.",
                "allOf": [{ "$ref": format!("{REF_PREFIX}{OBJECT_META}") }],
            },
            "spec": {
                "description": format!("Desired state of the {}.", kind.kind),
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            },
            "status": {
                "description": format!("Observed state of the {}.", kind.kind),
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
        "x-kubernetes-group-version-kind": [gvk(kind)],
    })
}

/// The component name of `kind`'s schema.
pub(crate) fn schema_name(kind: &Kind) -> String {
    match builtin(kind) {
        Some(b) => b.schema_name(),
        None => custom_schema_name(kind),
    }
}

/// `api/v1` or `apis/<group>/<version>`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The discovery index kubectl reads first: one entry per served group-version.
pub fn index() -> Value {
    let paths: Map<String, Value> = registry::group_versions()
        .into_iter()
        .map(|(group, version)| {
            let path = gv_path(group, version);
            let url = format!("/openapi/v3/{path}?hash={}", hash(&path));
            (path, json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// The OpenAPI 3.0 document of one group-version (`api/v1`, `apis/apps/v1`),
/// built once; `None` for a path that is not served.
pub fn group_version_doc(path: &str) -> Option<Arc<Value>> {
    docs()
        .get(path.trim_matches('/'))
        .map(|(doc, _)| doc.clone())
}

/// A content hash of the document at `path`, stable for a given build, so
/// clients may cache the document under it; "" for a path that is not served.
pub fn hash(path: &str) -> String {
    docs()
        .get(path.trim_matches('/'))
        .map(|(_, h)| h.clone())
        .unwrap_or_default()
}

type Docs = BTreeMap<String, (Arc<Value>, String)>;

fn docs() -> &'static Docs {
    static DOCS: OnceLock<Docs> = OnceLock::new();
    DOCS.get_or_init(|| {
        registry::group_versions()
            .into_iter()
            .map(|(group, version)| {
                let doc = build_doc(group, version);
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                (
                    gv_path(group, version),
                    (Arc::new(doc), content_hash(&bytes)),
                )
            })
            .collect()
    })
}

/// Two FNV-1a passes with different offsets: no cryptographic strength is
/// needed, only a value that changes when the document does.
fn content_hash(bytes: &[u8]) -> String {
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

fn build_doc(group: &str, version: &str) -> Value {
    let defs = definitions();
    let kinds: Vec<&Kind> = registry::KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();

    // Only the schemas this group-version reaches, as upstream serves them.
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = kinds.iter().map(|k| schema_name(k)).collect();
    queue.push(PATCH_SCHEMA.into());
    while let Some(name) = queue.pop() {
        if !wanted.insert(name.clone()) {
            continue;
        }
        if let Some(schema) = defs.get(&name) {
            collect_refs(schema, &mut queue);
        }
    }
    let schemas: Map<String, Value> = wanted
        .into_iter()
        .filter_map(|name| defs.get(&name).map(|s| (name, s.clone())))
        .collect();

    let mut paths = Map::new();
    for kind in kinds {
        add_paths(kind, &mut paths);
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": INFO_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

fn collect_refs(schema: &Value, out: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn string_param(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "description": description,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

/// Go-style operation ids (`patchAppsV1NamespacedDeployment`), which
/// clients generated from upstream's documents expect.
fn operation_id(verb: &str, kind: &Kind, suffix: &str) -> String {
    let mut id = verb.to_string();
    let group = kind.group.split('.').next().unwrap_or("");
    let group = if group.is_empty() { "core" } else { group };
    for part in [group, kind.version] {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            id.extend(first.to_uppercase());
            id.push_str(chars.as_str());
        }
    }
    if kind.namespaced {
        id.push_str("Namespaced");
    }
    id.push_str(kind.kind);
    id.push_str(suffix);
    id
}

fn add_paths(kind: &Kind, paths: &mut Map<String, Value>) {
    let base = format!("/{}", gv_path(kind.group, kind.version));
    let collection = if kind.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{base}/{}", kind.plural)
    };
    let item = format!("{collection}/{{name}}");
    let kind_ref = json!({ "$ref": format!("{REF_PREFIX}{}", schema_name(kind)) });
    let tag = gv_path(kind.group, kind.version)
        .trim_start_matches("apis/")
        .trim_start_matches("api/")
        .replace(['/', '.'], "_");
    let tag = if kind.group.is_empty() {
        format!("core_{tag}")
    } else {
        tag
    };
    let body = |status: &str| {
        json!({
            status: {
                "description": "OK",
                "content": {
                    "application/json": { "schema": kind_ref.clone() },
                    "application/yaml": { "schema": kind_ref.clone() },
                },
            },
            "401": { "description": "Unauthorized" },
        })
    };
    let write_params = || {
        vec![
            string_param("dryRun", "query", "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"),
            string_param("fieldManager", "query", "fieldManager is a name associated with the actor or entity that is making these changes."),
            string_param("fieldValidation", "query", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn (the default) - Strict"),
        ]
    };
    let gvk = gvk(kind);

    let mut path_params = vec![];
    if kind.namespaced {
        path_params.push(json!({
            "name": "namespace",
            "in": "path",
            "required": true,
            "description": "object name and auth scope, such as for teams and projects",
            "schema": { "type": "string", "uniqueItems": true },
        }));
    }
    let mut item_params = vec![json!({
        "name": "name",
        "in": "path",
        "required": true,
        "description": format!("name of the {}", kind.kind),
        "schema": { "type": "string", "uniqueItems": true },
    })];
    item_params.extend(path_params.iter().cloned());

    let mut patch_params = write_params();
    patch_params.push(json!({
        "name": "force",
        "in": "query",
        "description": "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
        "schema": { "type": "boolean", "uniqueItems": true },
    }));
    let patch_ref = json!({ "$ref": format!("{REF_PREFIX}{PATCH_SCHEMA}") });
    let patch_content: Map<String, Value> = [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ]
    .into_iter()
    .map(|ct| (ct.to_string(), json!({ "schema": patch_ref.clone() })))
    .collect();
    let write_body = json!({
        "content": { "*/*": { "schema": kind_ref.clone() } },
        "required": true,
    });

    paths.insert(
        collection,
        json!({
            "parameters": path_params,
            "get": {
                "description": format!("list or watch objects of kind {}", kind.kind),
                "operationId": operation_id("list", kind, ""),
                "tags": [tag],
                "responses": { "200": { "description": "OK" }, "401": { "description": "Unauthorized" } },
                "x-kubernetes-action": "list",
                "x-kubernetes-group-version-kind": gvk,
            },
            "post": {
                "description": format!("create a {}", kind.kind),
                "operationId": operation_id("create", kind, ""),
                "tags": [tag],
                "parameters": write_params(),
                "requestBody": write_body,
                "responses": body("201"),
                "x-kubernetes-action": "post",
                "x-kubernetes-group-version-kind": gvk,
            },
        }),
    );
    paths.insert(
        item.clone(),
        json!({
            "parameters": item_params,
            "get": {
                "description": format!("read the specified {}", kind.kind),
                "operationId": operation_id("read", kind, ""),
                "tags": [tag],
                "responses": body("200"),
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gvk,
            },
            "put": {
                "description": format!("replace the specified {}", kind.kind),
                "operationId": operation_id("replace", kind, ""),
                "tags": [tag],
                "parameters": write_params(),
                "requestBody": write_body,
                "responses": body("200"),
                "x-kubernetes-action": "put",
                "x-kubernetes-group-version-kind": gvk,
            },
            "patch": {
                "description": format!("partially update the specified {}", kind.kind),
                "operationId": operation_id("patch", kind, ""),
                "tags": [tag],
                "parameters": patch_params,
                "requestBody": { "content": patch_content, "required": true },
                "responses": body("200"),
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            },
            "delete": {
                "description": format!("delete a {}", kind.kind),
                "operationId": operation_id("delete", kind, ""),
                "tags": [tag],
                "responses": { "200": { "description": "OK" }, "401": { "description": "Unauthorized" } },
                "x-kubernetes-action": "delete",
                "x-kubernetes-group-version-kind": gvk,
            },
        }),
    );
    if kind.status {
        paths.insert(
            format!("{item}/status"),
            json!({
                "parameters": item_params,
                "get": {
                    "description": format!("read status of the specified {}", kind.kind),
                    "operationId": operation_id("read", kind, "Status"),
                    "tags": [tag],
                    "responses": body("200"),
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": gvk,
                },
                "patch": {
                    "description": format!("partially update status of the specified {}", kind.kind),
                    "operationId": operation_id("patch", kind, "Status"),
                    "tags": [tag],
                    "parameters": patch_params,
                    "requestBody": { "content": patch_content, "required": true },
                    "responses": body("200"),
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                },
            }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_lists_every_group_version() {
        let index = index();
        let paths = index["paths"].as_object().unwrap();
        for (group, version) in registry::group_versions() {
            let path = gv_path(group, version);
            let url = paths[&path]["serverRelativeURL"].as_str().unwrap();
            assert_eq!(url, format!("/openapi/v3/{path}?hash={}", hash(&path)));
            assert!(group_version_doc(&path).is_some(), "{path}");
        }
        assert_eq!(paths.len(), registry::group_versions().len());
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert!(group_version_doc("apis/nope/v1").is_none());
        assert_eq!(hash("apis/nope/v1"), "");
    }

    #[test]
    fn apps_doc_has_deployment_schema_and_patch() {
        let doc = group_version_doc("apis/apps/v1").unwrap();
        let schemas = &doc["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{ "group": "apps", "version": "v1", "kind": "Deployment" }])
        );
        assert!(deploy["description"]
            .as_str()
            .unwrap()
            .contains("declarative updates"));
        // explain follows references down to field descriptions.
        assert!(
            schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"]["description"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
        assert!(schemas[OBJECT_META].is_object());
        assert!(schemas["io.k8s.api.core.v1.PodSpec"].is_object());
        assert!(schemas.get("io.k8s.api.batch.v1.Job").is_none());

        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            json!({ "group": "apps", "version": "v1", "kind": "Deployment" })
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"fieldValidation"));
        assert!(
            patch["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object()
        );
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");

        // Every reference resolves inside the document.
        let mut refs = vec![];
        collect_refs(&doc, &mut refs);
        for r in refs {
            assert!(schemas.get(&r).is_some(), "dangling {r}");
        }
    }

    #[test]
    fn core_doc_has_patch_strategies_and_cluster_paths() {
        let doc = group_version_doc("api/v1").unwrap();
        let containers =
            &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert!(doc["paths"]["/api/v1/nodes/{name}"]["patch"].is_object());
        assert!(
            doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"].is_object()
        );
        assert_eq!(
            doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]["operationId"],
            "patchCoreV1NamespacedPod"
        );
    }

    #[test]
    fn trellis_kinds_are_permissive() {
        let doc = group_version_doc("apis/trellis.dev/v1alpha1").unwrap();
        let plugin = &doc["components"]["schemas"]["dev.trellis.v1alpha1.Plugin"];
        assert_eq!(
            plugin["properties"]["spec"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert!(plugin["description"].as_str().is_some());
        assert!(doc["components"]["schemas"][OBJECT_META].is_object());
        assert!(doc["paths"]["/apis/trellis.dev/v1alpha1/plugins/{name}"]["patch"].is_object());
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(hash("apis/apps/v1"), hash("/apis/apps/v1/"));
        assert_eq!(hash("apis/apps/v1").len(), 32);
        assert_ne!(hash("apis/apps/v1"), hash("api/v1"));
    }
}
