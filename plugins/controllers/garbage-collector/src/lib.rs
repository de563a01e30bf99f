//! Upstream's garbage collector (kube-controller-manager's `garbagecollector`):
//! dependents follow their owners by `metadata.ownerReferences`.
//!
//! # One owner kind per instance
//!
//! A reconcile key carries no kind, so one instance collects for ONE owner
//! kind, chosen by its config, and several Plugin objects load this component
//! with different configs (`Deployment → ReplicaSet`, `ReplicaSet → Pod`, …):
//!
//! ```json
//! {"owner": {"group": "apps", "version": "v1", "kind": "ReplicaSet"},
//!  "dependents": [{"group": "", "version": "v1", "kind": "Pod"}],
//!  "recheckInterval": "1s"}
//! ```
//!
//! The instance's primary kind is the owner kind; it watches the owner kind
//! (`Object`) and every dependent kind (`Owner`), so every key is an owner's
//! `(namespace, name)` — namespace "" for a cluster-scoped owner, whose
//! dependents are then looked for in every namespace. The owner may be absent.
//!
//! # What a reconcile does
//!
//! It lists the dependents (of the configured kinds, in the owner's namespace)
//! with an ownerReference to the owner kind and the key's name, whatever the
//! uid, and classifies each of their references as upstream's
//! `attemptToDeleteItem` does:
//! - *dangling*: the referenced object is absent or has another uid (a
//!   recreated owner of the same name);
//! - *waiting*: it is being deleted in the foreground (`foregroundDeletion`);
//! - *solid*: anything else. A reference to another kind than the configured
//!   owner is looked up with `get`; an answer other than found/not found
//!   (`AccessDenied` when the Plugin may not read that kind) counts as solid,
//!   so nothing is ever deleted on a guess.
//!
//! A dependent with a solid owner loses its dangling and waiting references
//! (a merge patch of `metadata.ownerReferences`, pinned to its
//! resourceVersion); one whose owners are all dangling is deleted with the
//! policy its own finalizers ask for (Background unless `orphan` or
//! `foregroundDeletion`); one with a waiting owner is deleted in the
//! foreground when its kind has dependents of its own (`"hasDependents": true`
//! in its config entry, upstream's `dependentsLength() != 0`), else in the
//! background. The flag matters because an object deleted in the foreground
//! keeps its `foregroundDeletion` finalizer until a collector *for its kind*
//! removes it: set it only on kinds that are the owner of another instance.
//!
//! Then, for the owner itself:
//! - being deleted with `orphan`: the references to it are removed from every
//!   dependent, then the `orphan` finalizer from the owner;
//! - being deleted with `foregroundDeletion`: once no dependent with
//!   `blockOwnerDeletion: true` refers to it any more, the finalizer is removed
//!   (an `update` pinned to its resourceVersion; a conflict is an error, so
//!   the key is retried); until then the key is requeued after
//!   `recheckInterval` (default "1s").
//!
//! # Left out
//!
//! Upstream keeps a graph of every object, so it also collects a dependent
//! whose only reference to a missing owner is not its `controller` one even
//! when the owner never existed in its lifetime. Here a dependent is looked
//! at when its owner's key is queued: the owner changes or is deleted, or a
//! dependent whose *controlling* reference names it changes.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::kind;
use trellis_sdk::controller::*;
use trellis_sdk::objects;

/// The finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// The finalizer of orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// One dependent kind of the configured owner.
#[derive(Debug, Clone)]
pub struct Dependent {
    /// The kind.
    pub kind: KindRef,
    /// Objects of this kind have dependents of their own (another instance
    /// collects for this kind): delete them in the foreground when their
    /// owner is deleted in the foreground. Default false.
    pub has_dependents: bool,
}

/// The configuration of one instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// The owner kind collected for (required).
    pub owner: KindRef,
    /// The kinds of its dependents (required, not empty).
    pub dependents: Vec<Dependent>,
    /// `recheckInterval`: how often a foreground deletion waiting for
    /// dependents is looked at again, in milliseconds. Default "1s".
    pub recheck_ms: u64,
}

fn invalid(msg: impl Into<String>) -> PluginError {
    PluginError::InvalidConfig(msg.into())
}

fn only_keys(v: &Map<String, Value>, keys: &[&str], what: &str) -> Result<(), PluginError> {
    match v.keys().find(|k| !keys.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{what}: unknown field {k:?}"))),
        None => Ok(()),
    }
}

fn kind_of(v: &Value, what: &str, extra: &[&str]) -> Result<KindRef, PluginError> {
    let m = v.as_object().ok_or_else(|| {
        invalid(format!(
            "{what}: expected {{\"group\", \"version\", \"kind\"}}"
        ))
    })?;
    let mut allowed = vec!["group", "version", "kind"];
    allowed.extend_from_slice(extra);
    only_keys(m, &allowed, what)?;
    let field = |k: &str, required: bool| -> Result<String, PluginError> {
        match m.get(k) {
            None | Some(Value::Null) if !required => Ok(String::new()),
            Some(Value::String(s)) if !(required && s.is_empty()) => Ok(s.clone()),
            _ => Err(invalid(format!("{what}.{k}: Required value"))),
        }
    };
    Ok(kind(
        &field("group", false)?,
        &field("version", true)?,
        &field("kind", true)?,
    ))
}

impl Config {
    /// Parse and check the JSON config.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let v: Value = serde_json::from_str(if text.trim().is_empty() { "{}" } else { text })
            .map_err(|e| invalid(format!("not JSON: {e}")))?;
        let m = v
            .as_object()
            .ok_or_else(|| invalid("expected a JSON object"))?;
        only_keys(m, &["owner", "dependents", "recheckInterval"], "config")?;
        let owner = kind_of(
            m.get("owner")
                .ok_or_else(|| invalid("owner: Required value"))?,
            "owner",
            &[],
        )?;
        let deps = m
            .get("dependents")
            .and_then(Value::as_array)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| invalid("dependents: Required value: at least one kind"))?;
        let mut dependents = Vec::new();
        for (i, d) in deps.iter().enumerate() {
            let what = format!("dependents[{i}]");
            let kind = kind_of(d, &what, &["hasDependents"])?;
            let has_dependents = match d.get("hasDependents") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(invalid(format!("{what}.hasDependents: expected a boolean")))
                }
            };
            dependents.push(Dependent {
                kind,
                has_dependents,
            });
        }
        let recheck_ms = match m.get("recheckInterval") {
            None | Some(Value::Null) => 1000,
            Some(Value::String(s)) => {
                objects::duration_ms(s).map_err(|e| invalid(format!("recheckInterval: {e}")))?
            }
            Some(_) => {
                return Err(invalid(
                    "recheckInterval: expected a duration such as \"1s\"",
                ))
            }
        };
        Ok(Self {
            owner,
            dependents,
            recheck_ms,
        })
    }

    /// What an instance with this config reconciles and watches.
    pub fn info(&self) -> ControllerInfo {
        let mut watches = vec![Watch {
            kind: self.owner.clone(),
            mapping: WatchMapping::Object,
        }];
        watches.extend(self.dependents.iter().map(|d| Watch {
            kind: d.kind.clone(),
            mapping: WatchMapping::Owner,
        }));
        ControllerInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: self.owner.clone(),
            watches,
        }
    }
}

/// The controller's name, as kube-controller-manager's `--controllers` calls it.
pub const NAME: &str = "garbagecollector";

fn internal(what: &str, e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{what}: {e:?}"))
}

/// What a reference points at, as far as this reconcile can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefState {
    /// Alive (or unknowable: never deleted on a guess).
    Solid,
    /// Absent, or another object of the same name.
    Dangling,
    /// Being deleted in the foreground, waiting for its dependents.
    Waiting,
}

#[derive(Debug, Clone)]
enum Lookup {
    Absent,
    Present(Value),
    Unknown,
}

/// Owner look-ups of one reconcile, each made once.
struct Owners<'a, A: Api> {
    api: &'a A,
    cfg: &'a Config,
    cluster_scoped_owner: bool,
    seen: BTreeMap<(String, String, String, String), Lookup>,
}

fn ref_group_kind(r: &Value) -> (&str, &str) {
    let av = r["apiVersion"].as_str().unwrap_or("");
    (objects::group_of(av), r["kind"].as_str().unwrap_or(""))
}

fn refers_to(r: &Value, owner: &KindRef, name: &str) -> bool {
    ref_group_kind(r) == (owner.group.as_str(), owner.kind.as_str()) && r["name"] == name
}

fn owner_refs(obj: &Value) -> Vec<Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

impl<'a, A: Api> Owners<'a, A> {
    fn new(api: &'a A, cfg: &'a Config, key: &ObjectKey, owner: &Option<Value>) -> Self {
        let mut s = Self {
            api,
            cfg,
            cluster_scoped_owner: key.namespace.is_empty(),
            seen: BTreeMap::new(),
        };
        let k = s.cache_key(&cfg.owner.group, &cfg.owner.kind, &key.namespace, &key.name);
        let l = owner.clone().map_or(Lookup::Absent, Lookup::Present);
        s.seen.insert(k, l);
        s
    }

    fn is_owner_kind(&self, group: &str, kind: &str) -> bool {
        group == self.cfg.owner.group && kind == self.cfg.owner.kind
    }

    fn cache_key(
        &self,
        group: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> (String, String, String, String) {
        let ns = if self.is_owner_kind(group, kind) && self.cluster_scoped_owner {
            ""
        } else {
            ns
        };
        (group.into(), kind.into(), ns.into(), name.into())
    }

    fn state(&mut self, dep_ns: &str, r: &Value) -> Result<RefState, PluginError> {
        let av = r["apiVersion"].as_str().unwrap_or("");
        let (group, k) = ref_group_kind(r);
        let name = r["name"].as_str().unwrap_or("");
        let key = self.cache_key(group, k, dep_ns, name);
        let lookup = match self.seen.get(&key) {
            Some(l) => l.clone(),
            None => {
                let version = av.rsplit('/').next().unwrap_or("");
                let l = match self.api.get(&kind(group, version, k), &key.2, name) {
                    Ok(o) => Lookup::Present(o),
                    Err(ObjectError::NotFound) => Lookup::Absent,
                    Err(e) if self.is_owner_kind(group, k) => {
                        return Err(internal(&format!("get {k} {name}"), e))
                    }
                    Err(e) => {
                        trellis_sdk::log::debug(&format!(
                            "owner {k} {name} counts as alive: {e:?}"
                        ));
                        Lookup::Unknown
                    }
                };
                self.seen.insert(key, l.clone());
                l
            }
        };
        Ok(match lookup {
            Lookup::Absent => RefState::Dangling,
            Lookup::Unknown => RefState::Solid,
            Lookup::Present(o) if objects::uid(&o) != r["uid"].as_str().unwrap_or("") => {
                RefState::Dangling
            }
            Lookup::Present(o)
                if objects::is_deleting(&o) && objects::has_finalizer(&o, FOREGROUND) =>
            {
                RefState::Waiting
            }
            Lookup::Present(_) => RefState::Solid,
        })
    }
}

/// Replace a dependent's ownerReferences with `keep` (pinned to its resourceVersion).
fn set_owner_refs(
    api: &impl Api,
    kind: &KindRef,
    dep: &Value,
    keep: Vec<Value>,
) -> Result<(), PluginError> {
    let refs = if keep.is_empty() {
        Value::Null
    } else {
        Value::Array(keep)
    };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": dep["metadata"]["resourceVersion"],
    }});
    match api.merge_patch(kind, objects::namespace(dep), objects::name(dep), &patch) {
        Ok(_) | Err(ObjectError::NotFound) => Ok(()),
        Err(e) => Err(internal(
            &format!("patch {} {}", kind.kind, objects::name(dep)),
            e,
        )),
    }
}

fn delete(api: &impl Api, kind: &KindRef, dep: &Value, policy: &str) -> Result<(), PluginError> {
    trellis_sdk::log::debug(&format!(
        "deleting {} {}/{} ({policy})",
        kind.kind,
        objects::namespace(dep),
        objects::name(dep)
    ));
    match api.delete(kind, objects::namespace(dep), objects::name(dep), policy) {
        Ok(()) | Err(ObjectError::NotFound) => Ok(()),
        Err(e) => Err(internal(
            &format!("delete {} {}", kind.kind, objects::name(dep)),
            e,
        )),
    }
}

/// Remove `finalizer` from the owner (pinned to its resourceVersion).
fn remove_finalizer(
    api: &impl Api,
    cfg: &Config,
    key: &ObjectKey,
    owner: &Value,
    finalizer: &str,
) -> Result<(), PluginError> {
    let mut new = owner.clone();
    let rest: Vec<Value> = owner["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    let m = new["metadata"]
        .as_object_mut()
        .expect("an object has metadata");
    if rest.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), Value::Array(rest));
    }
    match api.update(&cfg.owner, &key.namespace, &new) {
        Ok(_) | Err(ObjectError::NotFound) => Ok(()),
        Err(e) => Err(internal(
            &format!("remove {finalizer} from {} {}", cfg.owner.kind, key.name),
            e,
        )),
    }
}

/// Collect for the owner `key` names; see the crate documentation.
pub fn reconcile(api: &impl Api, cfg: &Config, key: &ObjectKey) -> Result<Action, PluginError> {
    let owner = match api.get(&cfg.owner, &key.namespace, &key.name) {
        Ok(o) => Some(o),
        Err(ObjectError::NotFound) => None,
        Err(e) => return Err(internal(&format!("get {} {}", cfg.owner.kind, key.name), e)),
    };
    let mut deps = Vec::new();
    for d in &cfg.dependents {
        let items = api
            .list(&d.kind, &key.namespace, "")
            .map_err(|e| internal(&format!("list {}", d.kind.kind), e))?;
        deps.extend(
            items
                .into_iter()
                .filter(|o| {
                    owner_refs(o)
                        .iter()
                        .any(|r| refers_to(r, &cfg.owner, &key.name))
                })
                .map(|o| (d, o)),
        );
    }
    let owner_uid = owner.as_ref().map(|o| objects::uid(o).to_string());
    let is_ours = |r: &Value| {
        refers_to(r, &cfg.owner, &key.name) && owner_uid.as_deref().is_some_and(|u| r["uid"] == u)
    };
    let deleting_with = |f: &str| {
        owner
            .as_ref()
            .is_some_and(|o| objects::is_deleting(o) && objects::has_finalizer(o, f))
    };

    if deleting_with(ORPHAN) {
        let owner = owner.as_ref().expect("deleting, so present");
        for (d, dep) in &deps {
            let refs = owner_refs(dep);
            if refs.iter().any(is_ours) {
                let keep = refs.into_iter().filter(|r| !is_ours(r)).collect();
                set_owner_refs(api, &d.kind, dep, keep)?;
            }
        }
        remove_finalizer(api, cfg, key, owner, ORPHAN)?;
        return Ok(Action::AwaitChange);
    }

    let mut owners = Owners::new(api, cfg, key, &owner);
    let mut blocking = 0usize;
    for (d, dep) in &deps {
        let refs = owner_refs(dep);
        if refs
            .iter()
            .any(|r| is_ours(r) && r["blockOwnerDeletion"] == true)
        {
            blocking += 1;
        }
        let mut solid = false;
        let mut waiting = false;
        let mut keep = Vec::new();
        for r in &refs {
            match owners.state(objects::namespace(dep), r)? {
                RefState::Solid => {
                    solid = true;
                    keep.push(r.clone());
                }
                RefState::Dangling => {}
                RefState::Waiting => waiting = true,
            }
        }
        if solid {
            if keep.len() != refs.len() {
                set_owner_refs(api, &d.kind, dep, keep)?;
            }
        } else if objects::is_deleting(dep) {
            // Already on its way; a second DELETE would change nothing.
        } else if waiting {
            let policy = if d.has_dependents {
                "Foreground"
            } else {
                "Background"
            };
            delete(api, &d.kind, dep, policy)?;
        } else {
            let policy = if objects::has_finalizer(dep, ORPHAN) {
                "Orphan"
            } else if objects::has_finalizer(dep, FOREGROUND) {
                "Foreground"
            } else {
                "Background"
            };
            delete(api, &d.kind, dep, policy)?;
        }
    }

    if deleting_with(FOREGROUND) {
        if blocking > 0 {
            return Ok(Action::RequeueAfter(cfg.recheck_ms));
        }
        let owner = owner.as_ref().expect("deleting, so present");
        remove_finalizer(api, cfg, key, owner, FOREGROUND)?;
    }
    Ok(Action::AwaitChange)
}

/// The controller: one configured owner kind.
#[derive(Default)]
pub struct GarbageCollector {
    config: Option<Config>,
}

impl Controller for GarbageCollector {
    /// A placeholder: the kinds come from the config (see [`Controller::describe`]).
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: kind("", "", ""),
            watches: Vec::new(),
        }
    }

    fn describe(&self) -> ControllerInfo {
        self.config.as_ref().map_or_else(Self::info, Config::info)
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Some(Config::parse(config)?);
        Ok(())
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        let cfg = self
            .config
            .as_ref()
            .ok_or_else(|| invalid("not configured: the garbage collector needs an owner kind"))?;
        reconcile(&Host, cfg, &key)
    }
}

trellis_sdk::export_controller!(GarbageCollector);

#[cfg(test)]
mod tests;
