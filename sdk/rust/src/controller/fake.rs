//! An in-memory cluster for native unit tests of controllers: objects by
//! kind, resourceVersions, uids, `generateName`, generations, finalizers and
//! a settable clock, plus [`FakeCluster::settle`], which reconciles every key
//! a controller's watches map to until nothing changes. It does what the API
//! server does, not what other controllers do: no garbage collection, no
//! scheduling, no kubelet (tests set pod status themselves with [`FakeCluster::put`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::api::Api;
use super::{Action, ControllerInfo, ObjectKey, WatchMapping};
use crate::objects::{self, rfc3339};
use crate::{KindRef, ObjectError, PluginError};

type Key = (String, String, String); // (group/Kind, namespace, name)

fn kind_key(k: &KindRef) -> String {
    format!("{}/{}", k.group, k.kind)
}

/// One write a controller made, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// create, update, update-status, patch, delete.
    pub verb: &'static str,
    /// The kind's name, e.g. "Pod".
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// An in-memory cluster; see the module documentation.
#[derive(Debug)]
pub struct FakeCluster {
    objects: RefCell<BTreeMap<Key, Value>>,
    rv: Cell<u64>,
    now_ms: Cell<i64>,
    writes: RefCell<Vec<Write>>,
    /// Keys deleted since the last settle round (their owners must hear of it).
    deleted: RefCell<Vec<(String, Value)>>,
    cluster_scoped: BTreeSet<&'static str>,
}

impl Default for FakeCluster {
    fn default() -> Self {
        Self::new()
    }
}

fn not_found() -> ObjectError {
    ObjectError::NotFound
}

/// RFC 7386 merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl FakeCluster {
    /// An empty cluster at time 1,700,000,000 s.
    pub fn new() -> Self {
        Self {
            objects: RefCell::default(),
            rv: Cell::new(1),
            now_ms: Cell::new(1_700_000_000_000),
            writes: RefCell::default(),
            deleted: RefCell::default(),
            cluster_scoped: [
                "/Node",
                "/Namespace",
                "/PersistentVolume",
                "storage.k8s.io/StorageClass",
                "trellis.dev/Plugin",
            ]
            .into_iter()
            .collect(),
        }
    }

    fn key(&self, kind: &KindRef, namespace: &str, name: &str) -> Key {
        let k = kind_key(kind);
        let ns = if self.cluster_scoped.contains(k.as_str()) {
            ""
        } else {
            namespace
        };
        (k, ns.to_string(), name.to_string())
    }

    fn next_rv(&self) -> String {
        let v = self.rv.get() + 1;
        self.rv.set(v);
        v.to_string()
    }

    fn record(&self, verb: &'static str, kind: &KindRef, namespace: &str, name: &str) {
        self.writes.borrow_mut().push(Write {
            verb,
            kind: kind.kind.clone(),
            namespace: namespace.into(),
            name: name.into(),
        });
    }

    /// Move the clock forward.
    pub fn advance(&self, millis: i64) {
        self.now_ms.set(self.now_ms.get() + millis);
    }

    /// Store an object as a test's world would (a user's `kubectl apply`, a
    /// kubelet's status): uid, resourceVersion and timestamps are filled when
    /// missing; no write is recorded.
    pub fn put(&self, kind: &KindRef, obj: Value) -> Value {
        let mut obj = obj;
        let ns = objects::namespace(&obj).to_string();
        let key = self.key(kind, &ns, objects::name(&obj));
        let old = self.objects.borrow().get(&key).cloned();
        let m = obj["metadata"].as_object_mut().expect("metadata");
        let uid = old
            .as_ref()
            .map(|o| objects::uid(o).to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| format!("uid-{}-{}", key.2, self.rv.get()));
        m.entry("uid").or_insert(json!(uid));
        m.entry("creationTimestamp")
            .or_insert(json!(rfc3339(self.now())));
        m.entry("generation").or_insert(json!(1));
        m.insert("resourceVersion".into(), json!(self.next_rv()));
        obj["apiVersion"] = json!(super::kinds::api_version(kind));
        obj["kind"] = json!(kind.kind);
        self.objects.borrow_mut().insert(key, obj.clone());
        obj
    }

    /// Merge-patch an object as the test's world would (no write recorded).
    pub fn patch(&self, kind: &KindRef, namespace: &str, name: &str, patch: Value) -> Value {
        let mut obj = self
            .object(kind, namespace, name)
            .unwrap_or_else(|| panic!("{} {namespace}/{name} does not exist", kind.kind));
        merge(&mut obj, &patch);
        self.put(kind, obj)
    }

    /// Remove an object outright, as the test's world would.
    pub fn remove(&self, kind: &KindRef, namespace: &str, name: &str) -> Option<Value> {
        let gone = self
            .objects
            .borrow_mut()
            .remove(&self.key(kind, namespace, name));
        if let Some(g) = &gone {
            self.deleted.borrow_mut().push((kind_key(kind), g.clone()));
        }
        gone
    }

    /// One object, if present.
    pub fn object(&self, kind: &KindRef, namespace: &str, name: &str) -> Option<Value> {
        self.objects
            .borrow()
            .get(&self.key(kind, namespace, name))
            .cloned()
    }

    /// Every object of a kind (all namespaces), by namespace and name.
    pub fn all(&self, kind: &KindRef) -> Vec<Value> {
        let k = kind_key(kind);
        self.objects
            .borrow()
            .iter()
            .filter(|((kk, _, _), _)| *kk == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Writes made through [`Api`] so far, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.writes.borrow().clone()
    }

    /// Forget the recorded writes.
    pub fn clear_writes(&self) {
        self.writes.borrow_mut().clear();
    }

    fn matches_selector(obj: &Value, selector: &str) -> Result<bool, ObjectError> {
        for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, v, neg) = if let Some((k, v)) = term.split_once("!=") {
                (k, Some(v), true)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, Some(v), false)
            } else if let Some(k) = term.strip_prefix('!') {
                (k, None, true)
            } else if term
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                (term, None, false)
            } else {
                return Err(ObjectError::Invalid(format!(
                    "the fake cluster reads only =, ==, !=, key and !key selectors, not {term:?}"
                )));
            };
            let have = obj["metadata"]["labels"][k.trim()].as_str();
            let ok = match (v, neg) {
                (Some(v), false) => have == Some(v.trim()),
                (Some(v), true) => have != Some(v.trim()),
                (None, false) => have.is_some(),
                (None, true) => have.is_none(),
            };
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn store_write(
        &self,
        verb: &'static str,
        kind: &KindRef,
        namespace: &str,
        mut new: Value,
        old: &Value,
    ) -> Result<Value, ObjectError> {
        let want = new["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !want.is_empty() && want != old["metadata"]["resourceVersion"] {
            return Err(ObjectError::Conflict(format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes to the latest version and try again",
                kind.kind,
                objects::name(old)
            )));
        }
        for k in ["uid", "creationTimestamp", "namespace", "deletionTimestamp"] {
            match old["metadata"].get(k) {
                Some(v) => new["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        let generation = objects::generation(old)
            + i64::from(verb != "update-status" && new.get("spec") != old.get("spec"));
        new["metadata"]["generation"] = json!(generation);
        new["metadata"]["resourceVersion"] = json!(self.next_rv());
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        let name = objects::name(old).to_string();
        self.record(verb, kind, namespace, &name);
        let finalized = objects::is_deleting(&new)
            && new["metadata"]["finalizers"]
                .as_array()
                .is_none_or(|f| f.is_empty());
        if finalized {
            self.remove(kind, namespace, &name);
            return Ok(new);
        }
        self.objects
            .borrow_mut()
            .insert(self.key(kind, namespace, &name), new.clone());
        Ok(new)
    }

    /// Reconcile every key the controller's watches map the cluster's objects
    /// (and the objects deleted since the last round) to, round after round,
    /// until a round writes nothing; returns the number of rounds. Requeues
    /// are ignored (advance the clock and settle again). Fails after 100
    /// rounds, or with the first reconcile error.
    pub fn settle(
        &self,
        info: &ControllerInfo,
        mut reconcile: impl FnMut(&Self, ObjectKey) -> Result<Action, PluginError>,
    ) -> Result<usize, String> {
        for round in 1..=100 {
            let before = self.writes.borrow().len();
            let mut keys = BTreeSet::new();
            let deleted: Vec<(String, Value)> = self.deleted.borrow_mut().drain(..).collect();
            let live: Vec<(String, Value)> = self
                .objects
                .borrow()
                .iter()
                .map(|((k, _, _), v)| (k.clone(), v.clone()))
                .collect();
            for (k, obj) in live.iter().chain(deleted.iter()) {
                keys.extend(self.keys_for(info, k, obj));
            }
            for (namespace, name) in keys {
                reconcile(
                    self,
                    ObjectKey {
                        namespace: namespace.clone(),
                        name: name.clone(),
                    },
                )
                .map_err(|e| format!("reconcile {namespace}/{name}: {e:?}"))?;
            }
            if self.writes.borrow().len() == before && self.deleted.borrow().is_empty() {
                return Ok(round);
            }
        }
        Err("the controller did not settle in 100 rounds".into())
    }

    fn keys_for(&self, info: &ControllerInfo, kind: &str, obj: &Value) -> Vec<(String, String)> {
        let primary = kind_key(&info.primary);
        let primary_ns = |ns: &str| {
            if self.cluster_scoped.contains(primary.as_str()) {
                String::new()
            } else {
                ns.to_string()
            }
        };
        let mut out = Vec::new();
        if kind == primary {
            out.push((
                primary_ns(objects::namespace(obj)),
                objects::name(obj).to_string(),
            ));
        }
        for w in &info.watches {
            if kind_key(&w.kind) != kind {
                continue;
            }
            match w.mapping {
                WatchMapping::Object => out.push((
                    objects::namespace(obj).to_string(),
                    objects::name(obj).to_string(),
                )),
                WatchMapping::Owner => {
                    if let Some(owner) =
                        objects::controller_name(obj, &info.primary.group, &info.primary.kind)
                    {
                        out.push((primary_ns(objects::namespace(obj)), owner.to_string()));
                    }
                }
            }
        }
        out
    }
}

impl Api for FakeCluster {
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<Value, ObjectError> {
        self.object(kind, namespace, name).ok_or_else(not_found)
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ObjectError> {
        let mut out = Vec::new();
        for o in self.all(kind) {
            if (namespace.is_empty() || objects::namespace(&o) == namespace)
                && Self::matches_selector(&o, selector)?
            {
                out.push(o);
            }
        }
        Ok(out)
    }

    fn create(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError> {
        let mut obj = object.clone();
        if !obj["metadata"].is_object() {
            return Err(ObjectError::Invalid("metadata: Required value".into()));
        }
        let mut name = objects::name(&obj).to_string();
        if name.is_empty() {
            let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
                return Err(ObjectError::Invalid(
                    "metadata.name: Required value: name or generateName is required".into(),
                ));
            };
            name = format!("{prefix}{}", objects::hash_string(&json!(self.rv.get())));
            obj["metadata"]["name"] = json!(name);
        }
        let key = self.key(kind, namespace, &name);
        if self.objects.borrow().contains_key(&key) {
            return Err(ObjectError::Conflict(format!(
                "{} {name:?} already exists",
                kind.kind
            )));
        }
        if !key.1.is_empty() {
            obj["metadata"]["namespace"] = json!(namespace);
        }
        if let Some(m) = obj["metadata"].as_object_mut() {
            for k in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "deletionTimestamp",
            ] {
                m.remove(k);
            }
        }
        self.record("create", kind, namespace, &name);
        Ok(self.put(kind, obj))
    }

    fn update(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError> {
        let old = self.get(kind, namespace, objects::name(object))?;
        let mut new = object.clone();
        new["status"] = old["status"].clone();
        self.store_write("update", kind, namespace, new, &old)
    }

    fn update_status(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError> {
        let old = self.get(kind, namespace, objects::name(object))?;
        let mut new = old.clone();
        new["status"] = object["status"].clone();
        new["metadata"]["resourceVersion"] = object["metadata"]["resourceVersion"].clone();
        self.store_write("update-status", kind, namespace, new, &old)
    }

    fn merge_patch(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ObjectError> {
        let old = self.get(kind, namespace, name)?;
        let mut new = old.clone();
        merge(&mut new, patch);
        if patch["metadata"]["resourceVersion"].is_null() {
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        }
        self.store_write("patch", kind, namespace, new, &old)
    }

    fn delete(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        propagation: &str,
    ) -> Result<(), ObjectError> {
        let old = self.get(kind, namespace, name)?;
        self.record("delete", kind, namespace, name);
        let mut finalizers: Vec<Value> = old["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match propagation {
            "Foreground" => finalizers.push(json!("foregroundDeletion")),
            "Orphan" => finalizers.push(json!("orphan")),
            _ => {}
        }
        if finalizers.is_empty() {
            self.remove(kind, namespace, name);
        } else if !objects::is_deleting(&old) {
            let mut new = old;
            new["metadata"]["finalizers"] = json!(finalizers);
            new["metadata"]["deletionTimestamp"] = json!(rfc3339(self.now()));
            self.put(kind, new);
        }
        Ok(())
    }

    fn now_millis(&self) -> i64 {
        self.now_ms.get()
    }
}
