//! The shared cache: one informer per kind (list, then watch from the list's
//! resourceVersion, resuming after a dropped watch and listing again after
//! `410 Gone`), however many controllers read or watch that kind. Handlers
//! hear every change with the object's old and new state; a handler added
//! to a synced informer first hears every object it holds. Writes made
//! through the runtime go into the cache at once (when newer than what it
//! holds), so a controller's next reconcile sees its own writes even before
//! the watch brings them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use trellis_client::{Client, ListParams, Resource};
use trellis_plugin_host::wit::KindRef;

/// A kind as the cache names it: group and kind (any served version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKind {
    /// API group ("" for core).
    pub group: String,
    /// Kind.
    pub kind: String,
}

impl GroupKind {
    /// Of a contract `kind-ref`.
    pub fn of(k: &KindRef) -> Self {
        Self {
            group: k.group.clone(),
            kind: k.kind.clone(),
        }
    }
}

impl std::fmt::Display for GroupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// One change: the object before (None when added) and after (None when deleted).
pub type Handler = Arc<dyn Fn(Option<&Value>, Option<&Value>) + Send + Sync>;

type ObjKey = (String, String);

fn key_of(obj: &Value) -> ObjKey {
    (
        obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        obj["metadata"]["name"].as_str().unwrap_or("").to_string(),
    )
}

fn rv_of(obj: &Value) -> u64 {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The objects of one kind, kept current by a list and a watch.
pub struct Informer {
    /// Where the kind is served.
    pub resource: Resource,
    /// Which kind.
    pub kind: GroupKind,
    objects: RwLock<BTreeMap<ObjKey, Arc<Value>>>,
    /// The revision at which recently deleted objects went, so that a
    /// write's late answer does not bring one back.
    tombstones: Mutex<HashMap<ObjKey, u64>>,
    handlers: Mutex<Vec<(u64, Handler)>>,
    synced: watch::Sender<bool>,
}

static HANDLER_IDS: AtomicU64 = AtomicU64::new(1);

impl Informer {
    fn new(resource: Resource, kind: GroupKind) -> Self {
        Self {
            resource,
            kind,
            objects: RwLock::default(),
            tombstones: Mutex::default(),
            handlers: Mutex::default(),
            synced: watch::channel(false).0,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ObjKey, Arc<Value>>> {
        self.objects.read().expect("cache lock")
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Value>> {
        let ns = if self.resource.namespaced {
            namespace
        } else {
            ""
        };
        self.read()
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects in `namespace` ("" = all) for which `keep` holds.
    pub fn list(&self, namespace: &str, keep: impl Fn(&Value) -> bool) -> Vec<Arc<Value>> {
        let objects = self.read();
        let in_ns: Box<dyn Iterator<Item = (&ObjKey, &Arc<Value>)>> =
            if namespace.is_empty() || !self.resource.namespaced {
                Box::new(objects.iter())
            } else {
                let from = (namespace.to_string(), String::new());
                Box::new(
                    objects
                        .range(from..)
                        .take_while(|((ns, _), _)| ns == namespace),
                )
            };
        in_ns
            .filter(|(_, o)| keep(o))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// How many objects it holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has arrived.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Wait for the first list, at most `timeout`.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.synced.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Hear every change (and, once synced, every object held now, as added).
    /// Returns an id for [`Informer::remove_handler`].
    pub fn add_handler(&self, handler: Handler) -> u64 {
        let id = HANDLER_IDS.fetch_add(1, Ordering::Relaxed);
        // Hold the handler lock while replaying, so no change slips between
        // the replay and the registration.
        let mut handlers = self.handlers.lock().expect("handlers lock");
        if self.is_synced() {
            for o in self.read().values() {
                handler(None, Some(o));
            }
        }
        handlers.push((id, handler));
        id
    }

    /// Stop telling handler `id`.
    pub fn remove_handler(&self, id: u64) {
        self.handlers
            .lock()
            .expect("handlers lock")
            .retain(|(i, _)| *i != id);
    }

    fn notify(&self, old: Option<&Value>, new: Option<&Value>) {
        for (_, h) in self.handlers.lock().expect("handlers lock").iter() {
            h(old, new);
        }
    }

    /// Put a newer state of an object in (a write's answer, or a watch
    /// event); an older state than the one held is not stored. Handlers hear
    /// every watch event (`tell`) even when a write's answer already put that
    /// state in: the cache is ahead of the watch, but controllers watching
    /// the kind must still hear of the change.
    fn upsert(&self, obj: Value, tell: bool) {
        let key = key_of(&obj);
        {
            let mut tombstones = self.tombstones.lock().expect("tombstones lock");
            match tombstones.get(&key) {
                // The answer of a write the watch has already seen deleted.
                Some(gone) if *gone >= rv_of(&obj) => return,
                Some(_) => {
                    tombstones.remove(&key);
                }
                None => {}
            }
        }
        let obj = Arc::new(obj);
        let old = {
            let mut objects = self.objects.write().expect("cache lock");
            match objects.get(&key) {
                Some(cur) if rv_of(cur) >= rv_of(&obj) => {
                    if !tell {
                        return;
                    }
                    Some(cur.clone())
                }
                _ => objects.insert(key, obj.clone()),
            }
        };
        if tell {
            self.notify(old.as_deref(), Some(&obj));
        }
    }

    fn delete(&self, obj: &Value, tell: bool) {
        let key = key_of(obj);
        if tell {
            let mut tombstones = self.tombstones.lock().expect("tombstones lock");
            if tombstones.len() >= 100_000 {
                tombstones.clear();
            }
            tombstones.insert(key.clone(), rv_of(obj));
        }
        let old = {
            let mut objects = self.objects.write().expect("cache lock");
            match objects.get(&key) {
                // A newer object of the same name was made since: keep it
                // (handlers still hear of the deletion).
                Some(cur) if rv_of(cur) > rv_of(obj) && rv_of(obj) > 0 => None,
                Some(_) => objects.remove(&key),
                None => None,
            }
        };
        if tell {
            self.notify(old.as_deref().or(Some(obj)), None);
        }
    }

    /// Replace everything with a fresh list; handlers hear the differences.
    fn replace(&self, items: Vec<Value>) {
        let fresh: BTreeMap<ObjKey, Arc<Value>> = items
            .into_iter()
            .map(|o| (key_of(&o), Arc::new(o)))
            .collect();
        self.tombstones.lock().expect("tombstones lock").clear();
        let old = std::mem::replace(
            &mut *self.objects.write().expect("cache lock"),
            fresh.clone(),
        );
        for (k, o) in &fresh {
            match old.get(k) {
                Some(prev) if rv_of(prev) == rv_of(o) => {}
                prev => self.notify(prev.map(|p| &**p), Some(o)),
            }
        }
        for (k, o) in &old {
            if !fresh.contains_key(k) {
                self.notify(Some(o), None);
            }
        }
        self.synced.send_replace(true);
    }

    /// List and watch until the process ends; errors are retried.
    async fn run(self: Arc<Self>, client: Client) {
        let mut rv = String::new();
        loop {
            if rv.is_empty() {
                match client
                    .list(&self.resource, "", &ListParams::default())
                    .await
                {
                    Ok(list) => {
                        rv = list.resource_version().to_string();
                        // List items carry no type; handlers and readers want it.
                        let api_version = Value::from(trellis_types::owners::api_version(
                            &self.resource.group,
                            &self.resource.version,
                        ));
                        let kind = Value::from(self.kind.kind.as_str());
                        let items = list
                            .items()
                            .iter()
                            .cloned()
                            .map(|mut o| {
                                o["apiVersion"] = api_version.clone();
                                o["kind"] = kind.clone();
                                o
                            })
                            .collect();
                        self.replace(items);
                    }
                    Err(e) => {
                        tracing::warn!(kind = %self.kind, error = %e, "informer cannot list; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let mut stream = match client
                .watch(&self.resource, "", &ListParams::default(), &rv)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    if e.is_gone() {
                        rv.clear();
                    } else {
                        tracing::warn!(kind = %self.kind, error = %e, "informer cannot watch; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            };
            loop {
                match stream.next().await {
                    Ok(Some(ev)) => {
                        if let Some(r) = ev.object["metadata"]["resourceVersion"].as_str() {
                            rv = r.to_string();
                        }
                        match ev.kind.as_str() {
                            "ADDED" | "MODIFIED" => self.upsert(ev.object, true),
                            "DELETED" => self.delete(&ev.object, true),
                            _ => {}
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if e.is_gone() {
                            rv.clear();
                        } else {
                            tracing::debug!(kind = %self.kind, error = %e, "watch ended; resuming");
                        }
                        break;
                    }
                }
            }
        }
    }
}

/// Why a kind cannot be cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheError {
    /// The API server serves no such kind.
    UnknownKind(String),
    /// Discovery failed.
    Unavailable(String),
}

impl std::fmt::Display for CacheError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownKind(m) | Self::Unavailable(m) => f.write_str(m),
        }
    }
}

/// Every informer, started on first use, shared by every controller.
pub struct Cache {
    client: Client,
    informers: Mutex<HashMap<GroupKind, Arc<Informer>>>,
    discovery: tokio::sync::Mutex<HashMap<(String, String), Value>>,
}

impl Cache {
    /// A cache reading through `client`.
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            informers: Mutex::default(),
            discovery: tokio::sync::Mutex::default(),
        })
    }

    /// The informer of a kind, if one runs.
    pub fn informer(&self, kind: &GroupKind) -> Option<Arc<Informer>> {
        self.informers
            .lock()
            .expect("informers lock")
            .get(kind)
            .cloned()
    }

    /// How many objects the cache holds, over all kinds.
    pub fn len(&self) -> usize {
        self.informers
            .lock()
            .expect("informers lock")
            .values()
            .map(|i| i.len())
            .sum()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where `group/version` serves `kind` (API discovery, cached).
    pub async fn resource(&self, kind: &KindRef) -> Result<Resource, CacheError> {
        let gv = (kind.group.clone(), kind.version.clone());
        let mut docs = self.discovery.lock().await;
        if !docs.contains_key(&gv) {
            let path = if kind.group.is_empty() {
                format!("/api/{}", kind.version)
            } else {
                format!("/apis/{}/{}", kind.group, kind.version)
            };
            let doc = match self.client.get_path(&path).await {
                Ok(d) => d,
                Err(e) if e.is_not_found() => {
                    return Err(CacheError::UnknownKind(format!(
                        "the API server does not serve {}",
                        api_version(kind)
                    )))
                }
                Err(e) => return Err(CacheError::Unavailable(format!("discovery of {path}: {e}"))),
            };
            docs.insert(gv.clone(), doc);
        }
        docs[&gv]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| {
                r["kind"] == kind.kind.as_str() && !r["name"].as_str().unwrap_or("/").contains('/')
            })
            .map(|r| {
                Resource::new(
                    &kind.group,
                    &kind.version,
                    r["name"].as_str().unwrap_or_default(),
                    r["namespaced"].as_bool().unwrap_or(false),
                )
            })
            .ok_or_else(|| {
                CacheError::UnknownKind(format!(
                    "the API server serves no kind {} in {}",
                    kind.kind,
                    api_version(kind)
                ))
            })
    }

    /// The informer of a kind, started (list and watch) if none runs yet.
    pub async fn ensure(self: &Arc<Self>, kind: &KindRef) -> Result<Arc<Informer>, CacheError> {
        let gk = GroupKind::of(kind);
        if let Some(i) = self.informer(&gk) {
            return Ok(i);
        }
        let resource = self.resource(kind).await?;
        let mut informers = self.informers.lock().expect("informers lock");
        if let Some(i) = informers.get(&gk) {
            return Ok(i.clone());
        }
        let informer = Arc::new(Informer::new(resource, gk.clone()));
        informers.insert(gk, informer.clone());
        tokio::spawn(informer.clone().run(self.client.clone()));
        Ok(informer)
    }

    /// A write's answer: put it in the cache if the kind is cached and it is newer.
    pub fn observe(&self, kind: &KindRef, obj: &Value) {
        if let Some(i) = self.informer(&GroupKind::of(kind)) {
            if obj["metadata"]["name"].is_string() {
                i.upsert(obj.clone(), false);
            }
        }
    }

    /// A delete went through and removed the object: drop it now (the
    /// watch's DELETED event tells handlers).
    pub fn forget(&self, kind: &KindRef, namespace: &str, name: &str) {
        if let Some(i) = self.informer(&GroupKind::of(kind)) {
            let stub = serde_json::json!({"metadata": {"namespace": namespace, "name": name}});
            i.delete(&stub, false);
        }
    }
}

/// `group/version`, or `version` for core.
pub fn api_version(k: &KindRef) -> String {
    trellis_types::owners::api_version(&k.group, &k.version)
}
