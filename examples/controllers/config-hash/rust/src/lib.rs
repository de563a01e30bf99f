//! An example controller: roll a Deployment out again when a ConfigMap its
//! pods use changes. Kubernetes does not do this by itself (pods read a
//! ConfigMap at start, or see a mounted one change under their feet), so the
//! usual trick is a hash of the configuration in the pod template: when the
//! hash changes, the template changes, the Deployment's generation goes up and
//! the deployment controller rolls out a new ReplicaSet.
//!
//! Only Deployments that opt in are touched: their own `metadata.annotations`
//! carry `trellis.dev/config-hash: "enabled"`. For such a Deployment the
//! controller hashes the `data` and `binaryData` of every ConfigMap its pod
//! template references — `volumes[].configMap`, `volumes[].projected.sources[]
//! .configMap`, and in `containers`/`initContainers` `envFrom[].configMapRef`
//! and `env[].valueFrom.configMapKeyRef` — by name, a missing ConfigMap
//! counting as absent (whether the reference is `optional` or not), and keeps
//! the result in the pod template's annotation `trellis.dev/config-hash`. It
//! records a `Normal` `ConfigChanged` event on the Deployment when it replaces
//! an earlier hash (setting the first one is not a change of configuration),
//! naming the ConfigMaps that changed; to know which, it keeps one hash per
//! ConfigMap in the Deployment's own annotation `trellis.dev/config-hashes`
//! (metadata, not the template, so it rolls nothing).
//!
//! Keys: the primary kind is `apps/v1` Deployment and `v1` ConfigMaps are
//! watched with `WatchMapping::Object`, so a key `(ns, name)` is either a
//! Deployment or a ConfigMap (or both, when they share a name). Reconcile
//! treats it as both: the Deployment `ns/name` if there is one, and every
//! Deployment in `ns` whose pod template references ConfigMap `name`.
//!
//! ```
//! use serde_json::json;
//! let d = json!({"spec": {"template": {"spec": {
//!     "containers": [{"name": "app", "envFrom": [{"configMapRef": {"name": "app-config"}}]}]}}}});
//! assert!(config_hash::referenced_config_maps(&d).contains("app-config"));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use trellis_sdk::controller::kinds::{config_map, deployment};
use trellis_sdk::controller::*;
use trellis_sdk::objects;

/// The annotation: `"enabled"` on a Deployment's metadata opts it in; on its
/// pod template it holds the hash of the referenced ConfigMaps.
pub const ANNOTATION: &str = "trellis.dev/config-hash";

/// On a Deployment's metadata: a JSON object of one hash per ConfigMap, as of
/// the last hash written into the template (to name what changed).
pub const PER_CONFIG_MAP: &str = "trellis.dev/config-hashes";

/// The opt-in value of [`ANNOTATION`] on a Deployment.
pub const ENABLED: &str = "enabled";

/// The component named in the events it records.
const COMPONENT: &str = "config-hash";

/// The controller (no state, no configuration).
#[derive(Default)]
pub struct ConfigHash;

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// The names of the ConfigMaps a Deployment's pod template references, sorted.
pub fn referenced_config_maps(deployment: &Value) -> BTreeSet<String> {
    let spec = &deployment["spec"]["template"]["spec"];
    let mut out = BTreeSet::new();
    let mut add = |v: &Value| {
        if let Some(n) = v.as_str().filter(|n| !n.is_empty()) {
            out.insert(n.to_string());
        }
    };
    for vol in items(&spec["volumes"]) {
        add(&vol["configMap"]["name"]);
        for src in items(&vol["projected"]["sources"]) {
            add(&src["configMap"]["name"]);
        }
    }
    for c in items(&spec["containers"])
        .iter()
        .chain(items(&spec["initContainers"]))
    {
        for e in items(&c["envFrom"]) {
            add(&e["configMapRef"]["name"]);
        }
        for e in items(&c["env"]) {
            add(&e["valueFrom"]["configMapKeyRef"]["name"]);
        }
    }
    out
}

/// An object's entries as `[key, value]` pairs sorted by key, so the hash
/// does not depend on the order the API server (or a JSON map) keeps them in.
fn sorted_entries(v: &Value) -> Value {
    let mut pairs: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs.into_iter().map(|(k, v)| json!([k, v])).collect()
}

/// The hashes of the named ConfigMaps in `namespace`: of all of them (for
/// the pod template) and of each (by name). Each covers `data` and
/// `binaryData`; a missing ConfigMap counts as absent.
pub fn config_hashes(
    api: &impl Api,
    namespace: &str,
    names: &BTreeSet<String>,
) -> Result<(String, BTreeMap<String, String>), PluginError> {
    let mut parts = Vec::new();
    let mut each = BTreeMap::new();
    for name in names {
        let part = match api.get(&config_map(), namespace, name) {
            Ok(cm) => json!({
                "name": name,
                "data": sorted_entries(&cm["data"]),
                "binaryData": sorted_entries(&cm["binaryData"]),
            }),
            Err(ObjectError::NotFound) => json!({"name": name, "absent": true}),
            Err(e) => return Err(internal(e)),
        };
        each.insert(name.clone(), objects::hash_string(&part));
        parts.push(part);
    }
    Ok((objects::hash_string(&Value::Array(parts)), each))
}

/// Whether a Deployment asked for config hashing.
pub fn opted_in(deployment: &Value) -> bool {
    objects::annotation(deployment, ANNOTATION) == Some(ENABLED)
}

/// Bring every Deployment the key may name up to date.
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    // Both kinds are namespaced; an empty namespace would list every one.
    if key.namespace.is_empty() {
        return Ok(Action::AwaitChange);
    }
    for d in api
        .list(&deployment(), &key.namespace, "")
        .map_err(internal)?
    {
        let refs = referenced_config_maps(&d);
        if objects::name(&d) == key.name || refs.contains(&key.name) {
            sync(api, &d, &refs)?;
        }
    }
    Ok(Action::AwaitChange)
}

/// Put the current hash into one Deployment's pod template when it opted in.
fn sync(api: &impl Api, d: &Value, refs: &BTreeSet<String>) -> Result<(), PluginError> {
    // Without references there is nothing to follow, and a first hash would
    // roll the Deployment for nothing.
    if !opted_in(d) || objects::is_deleting(d) || refs.is_empty() {
        return Ok(());
    }
    let (ns, name) = (objects::namespace(d), objects::name(d));
    let (want, each) = config_hashes(api, ns, refs)?;
    let have = d["spec"]["template"]["metadata"]["annotations"][ANNOTATION]
        .as_str()
        .filter(|h| !h.is_empty());
    if have == Some(want.as_str()) {
        return Ok(());
    }
    let patch = json!({
        "metadata": {"annotations": {PER_CONFIG_MAP: json!(each).to_string()}},
        "spec": {"template": {"metadata": {"annotations": {ANNOTATION: want}}}},
    });
    let patched = match api.merge_patch(&deployment(), ns, name, &patch) {
        Ok(p) => p,
        // Deleted since the cache saw it: nothing left to roll.
        Err(ObjectError::NotFound) => return Ok(()),
        Err(e) => return Err(internal(e)),
    };
    if have.is_none() {
        trellis_sdk::log::debug(&format!("deployment {ns}/{name}: config hash {want}"));
        return Ok(());
    }
    // Name the ConfigMaps whose own hash moved (or that are newly referenced);
    // all of them when there is no earlier record to compare with.
    let before: BTreeMap<String, String> = objects::annotation(d, PER_CONFIG_MAP)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let mut changed: Vec<&str> = each
        .iter()
        .filter(|(n, h)| before.get(*n) != Some(*h))
        .map(|(n, _)| n.as_str())
        .collect();
    if changed.is_empty() {
        changed = refs.iter().map(String::as_str).collect();
    }
    let message = match changed.as_slice() {
        [one] => format!("ConfigMap {one} changed: rolling out"),
        many => format!("ConfigMaps {} changed: rolling out", many.join(", ")),
    };
    trellis_sdk::log::info(&format!("deployment {ns}/{name}: {message}"));
    record_event(
        api,
        &patched,
        &deployment(),
        "Normal",
        "ConfigChanged",
        &message,
        COMPONENT,
    );
    Ok(())
}

impl Controller for ConfigHash {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "config-hash".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: deployment(),
            watches: vec![Watch {
                kind: config_map(),
                mapping: WatchMapping::Object,
            }],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let v: Value = serde_json::from_str(if config.trim().is_empty() {
            "{}"
        } else {
            config
        })
        .map_err(|e| PluginError::InvalidConfig(format!("invalid JSON: {e}")))?;
        match v.as_object() {
            Some(m) if m.is_empty() => Ok(()),
            Some(m) => Err(PluginError::InvalidConfig(format!(
                "unknown key {:?}: the config-hash controller takes no configuration",
                m.keys().next().expect("not empty")
            ))),
            None => Err(PluginError::InvalidConfig(
                "the configuration must be a JSON object".into(),
            )),
        }
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(ConfigHash);

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_sdk::controller::fake::FakeCluster;
    use trellis_sdk::controller::kinds::event;

    fn settle(c: &FakeCluster) {
        c.settle(&ConfigHash::info(), |c, k| reconcile(c, &k))
            .unwrap();
    }

    fn cm(c: &FakeCluster, name: &str, data: Value) {
        c.put(
            &config_map(),
            json!({"metadata": {"name": name, "namespace": "default"}, "data": data}),
        );
    }

    /// A Deployment whose pod spec is `pod`; opted in unless `enabled` is false.
    fn deploy(c: &FakeCluster, name: &str, enabled: bool, pod: Value) {
        let mut d = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod},
            },
        });
        if enabled {
            d["metadata"]["annotations"] = json!({ANNOTATION: ENABLED});
        }
        c.put(&deployment(), d);
    }

    fn volume_pod(cm: &str) -> Value {
        json!({"containers": [{"name": "app", "image": "nginx",
                               "volumeMounts": [{"name": "cfg", "mountPath": "/etc/app"}]}],
               "volumes": [{"name": "cfg", "configMap": {"name": cm}}]})
    }

    fn hash(c: &FakeCluster, name: &str) -> Option<String> {
        c.object(&deployment(), "default", name)?["spec"]["template"]["metadata"]["annotations"]
            [ANNOTATION]
            .as_str()
            .map(str::to_string)
    }

    fn generation(c: &FakeCluster, name: &str) -> i64 {
        objects::generation(&c.object(&deployment(), "default", name).unwrap())
    }

    fn events(c: &FakeCluster) -> Vec<(String, String, String)> {
        c.all(&event())
            .iter()
            .map(|e| {
                (
                    e["involvedObject"]["name"].as_str().unwrap().to_string(),
                    e["reason"].as_str().unwrap().to_string(),
                    e["message"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn first_hash_is_set_without_an_event() {
        let c = FakeCluster::new();
        cm(&c, "app-config", json!({"color": "blue"}));
        deploy(&c, "web", true, volume_pod("app-config"));
        settle(&c);
        let h = hash(&c, "web").expect("hash set");
        assert_eq!(generation(&c, "web"), 2);
        let d = c.object(&deployment(), "default", "web").unwrap();
        let each: Value =
            serde_json::from_str(objects::annotation(&d, PER_CONFIG_MAP).unwrap()).unwrap();
        assert!(each["app-config"].is_string(), "{each}");
        assert!(events(&c).is_empty(), "{:?}", events(&c));
        let w = c.writes();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!((w[0].verb, w[0].kind.as_str()), ("patch", "Deployment"));
        // idempotent
        c.clear_writes();
        settle(&c);
        assert!(c.writes().is_empty(), "{:?}", c.writes());
        assert_eq!(hash(&c, "web").unwrap(), h);
    }

    #[test]
    fn changed_data_rolls_with_an_event() {
        let c = FakeCluster::new();
        cm(&c, "app-config", json!({"color": "blue"}));
        deploy(&c, "web", true, volume_pod("app-config"));
        settle(&c);
        let first = hash(&c, "web").unwrap();
        c.patch(
            &config_map(),
            "default",
            "app-config",
            json!({"data": {"color": "green"}}),
        );
        settle(&c);
        let second = hash(&c, "web").unwrap();
        assert_ne!(first, second);
        assert_eq!(generation(&c, "web"), 3);
        assert_eq!(
            events(&c),
            vec![(
                "web".into(),
                "ConfigChanged".into(),
                "ConfigMap app-config changed: rolling out".into()
            )]
        );
        // binaryData counts too
        c.patch(
            &config_map(),
            "default",
            "app-config",
            json!({"binaryData": {"logo": "AAEC"}}),
        );
        settle(&c);
        assert_ne!(hash(&c, "web").unwrap(), second);
        // changing it back restores the first hash: the hash is of the content
        c.put(
            &config_map(),
            json!({"metadata": {"name": "app-config", "namespace": "default"},
                   "data": {"color": "blue"}}),
        );
        settle(&c);
        assert_eq!(hash(&c, "web").unwrap(), first);
    }

    #[test]
    fn unrelated_config_map_writes_nothing() {
        let c = FakeCluster::new();
        cm(&c, "app-config", json!({"color": "blue"}));
        deploy(&c, "web", true, volume_pod("app-config"));
        settle(&c);
        c.clear_writes();
        cm(&c, "other", json!({"x": "1"}));
        settle(&c);
        c.patch(
            &config_map(),
            "default",
            "other",
            json!({"data": {"x": "2"}}),
        );
        settle(&c);
        assert!(c.writes().is_empty(), "{:?}", c.writes());
        // the same name in another namespace is another ConfigMap
        c.put(
            &config_map(),
            json!({"metadata": {"name": "app-config", "namespace": "other"}, "data": {"a": "b"}}),
        );
        settle(&c);
        assert!(c.writes().is_empty(), "{:?}", c.writes());
    }

    #[test]
    fn deployments_that_do_not_opt_in_are_untouched() {
        let c = FakeCluster::new();
        cm(&c, "app-config", json!({"color": "blue"}));
        deploy(&c, "plain", false, volume_pod("app-config"));
        c.patch(
            &deployment(),
            "default",
            "plain",
            json!({"metadata": {"annotations": {ANNOTATION: "disabled"}}}),
        );
        settle(&c);
        c.patch(
            &config_map(),
            "default",
            "app-config",
            json!({"data": {"color": "green"}}),
        );
        settle(&c);
        assert!(c.writes().is_empty(), "{:?}", c.writes());
        assert_eq!(hash(&c, "plain"), None);
        assert_eq!(generation(&c, "plain"), 1);
        // opting in later sets the first hash
        c.patch(
            &deployment(),
            "default",
            "plain",
            json!({"metadata": {"annotations": {ANNOTATION: ENABLED}}}),
        );
        settle(&c);
        assert!(hash(&c, "plain").is_some());
        assert!(events(&c).is_empty());
    }

    #[test]
    fn every_kind_of_reference_is_followed() {
        let c = FakeCluster::new();
        cm(&c, "shared", json!({"k": "1"}));
        deploy(
            &c,
            "env-from",
            true,
            json!({"containers": [{"name": "app", "image": "nginx",
                                   "envFrom": [{"configMapRef": {"name": "shared"}}]}]}),
        );
        deploy(
            &c,
            "key-ref",
            true,
            json!({"containers": [{"name": "app", "image": "nginx",
                                   "env": [{"name": "K", "value": "x"},
                                           {"name": "K2", "valueFrom": {"configMapKeyRef": {"name": "shared", "key": "k"}}}]}]}),
        );
        deploy(
            &c,
            "init",
            true,
            json!({"initContainers": [{"name": "init", "image": "busybox",
                                       "envFrom": [{"configMapRef": {"name": "shared", "optional": true}}]}],
                   "containers": [{"name": "app", "image": "nginx"}]}),
        );
        deploy(
            &c,
            "projected",
            true,
            json!({"containers": [{"name": "app", "image": "nginx"}],
                   "volumes": [{"name": "all", "projected": {"sources": [
                       {"secret": {"name": "s"}}, {"configMap": {"name": "shared"}}]}}]}),
        );
        deploy(&c, "volume", true, volume_pod("shared"));
        deploy(
            &c,
            "none",
            true,
            json!({"containers": [{"name": "app", "image": "nginx"}]}),
        );
        settle(&c);
        let names = ["env-from", "key-ref", "init", "projected", "volume"];
        let first: Vec<String> = names.iter().map(|n| hash(&c, n).unwrap()).collect();
        // same content, same hash
        assert!(first.iter().all(|h| *h == first[0]), "{first:?}");
        assert_eq!(hash(&c, "none"), None);
        c.patch(
            &config_map(),
            "default",
            "shared",
            json!({"data": {"k": "2"}}),
        );
        settle(&c);
        for (n, h) in names.iter().zip(&first) {
            assert_ne!(hash(&c, n).as_ref(), Some(h), "{n}");
        }
        assert_eq!(events(&c).len(), names.len(), "{:?}", events(&c));
        assert_eq!(hash(&c, "none"), None);
    }

    #[test]
    fn references_are_collected_from_every_field() {
        let d = json!({"spec": {"template": {"spec": {
            "volumes": [{"name": "a", "configMap": {"name": "vol"}},
                        {"name": "b", "projected": {"sources": [{"configMap": {"name": "proj"}}]}},
                        {"name": "c", "secret": {"secretName": "not-a-cm"}}],
            "initContainers": [{"name": "i", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "init-key", "key": "x"}}}]}],
            "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "from"}},
                                                     {"secretRef": {"name": "secret"}}]}],
        }}}});
        let got: Vec<String> = referenced_config_maps(&d).into_iter().collect();
        assert_eq!(got, ["from", "init-key", "proj", "vol"]);
    }

    #[test]
    fn deleted_and_missing_config_maps_hash_as_absent() {
        let c = FakeCluster::new();
        cm(&c, "app-config", json!({"color": "blue"}));
        deploy(&c, "web", true, volume_pod("app-config"));
        settle(&c);
        let present = hash(&c, "web").unwrap();
        c.remove(&config_map(), "default", "app-config");
        settle(&c);
        let absent = hash(&c, "web").unwrap();
        assert_ne!(present, absent);
        assert_eq!(events(&c).len(), 1);
        // an empty ConfigMap is not an absent one
        cm(&c, "app-config", json!({}));
        settle(&c);
        assert_ne!(hash(&c, "web").unwrap(), absent);

        // a Deployment created before its ConfigMap (optional or not)
        deploy(&c, "early", true, volume_pod("later"));
        settle(&c);
        assert!(hash(&c, "early").is_some());
        assert!(!events(&c).iter().any(|e| e.0 == "early"));
        cm(&c, "later", json!({"color": "blue"}));
        settle(&c);
        assert_ne!(hash(&c, "early").unwrap(), absent);
        assert!(events(&c)
            .iter()
            .any(|e| e.0 == "early" && e.2 == "ConfigMap later changed: rolling out"));
    }

    /// The messages of the events recorded since the last call (removed).
    fn take_messages(c: &FakeCluster) -> Vec<String> {
        let mut out = Vec::new();
        for e in c.all(&event()) {
            out.push(e["message"].as_str().unwrap().to_string());
            c.remove(&event(), objects::namespace(&e), objects::name(&e));
        }
        out
    }

    #[test]
    fn a_template_edit_that_changes_references_names_them() {
        let c = FakeCluster::new();
        cm(&c, "a", json!({"v": "1"}));
        cm(&c, "b", json!({"v": "2"}));
        deploy(&c, "web", true, volume_pod("a"));
        settle(&c);
        c.patch(
            &deployment(),
            "default",
            "web",
            json!({"spec": {"template": {"spec": {"volumes": [
                {"name": "cfg", "configMap": {"name": "b"}},
                {"name": "cfg2", "configMap": {"name": "a"}}]}}}}),
        );
        settle(&c);
        assert_eq!(take_messages(&c), ["ConfigMap b changed: rolling out"]);
        // both change at once: both named
        c.patch(&config_map(), "default", "a", json!({"data": {"v": "3"}}));
        c.patch(&config_map(), "default", "b", json!({"data": {"v": "4"}}));
        settle(&c);
        assert_eq!(take_messages(&c), ["ConfigMaps a, b changed: rolling out"]);
        // without a record of the old hashes, every referenced one is named
        c.patch(
            &deployment(),
            "default",
            "web",
            json!({"metadata": {"annotations": {PER_CONFIG_MAP: null}}}),
        );
        c.patch(&config_map(), "default", "a", json!({"data": {"v": "5"}}));
        settle(&c);
        assert_eq!(take_messages(&c), ["ConfigMaps a, b changed: rolling out"]);
    }

    #[test]
    fn configuration_is_refused() {
        let mut p = ConfigHash;
        assert!(p.configure("").is_ok());
        assert!(p.configure("{}").is_ok());
        assert!(matches!(
            p.configure(r#"{"annotation": "x"}"#),
            Err(PluginError::InvalidConfig(_))
        ));
        assert!(matches!(
            p.configure("[]"),
            Err(PluginError::InvalidConfig(_))
        ));
    }
}
