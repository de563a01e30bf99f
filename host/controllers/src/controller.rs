//! One running controller: the version in its slot, its work queue, the
//! informer handlers that feed the queue, and the workers that drain it.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::task::JoinHandle;
use trellis_plugin_host::controller::{
    Action, ControllerInfo, ControllerPlugin, ObjectKey, WatchMapping,
};
use trellis_plugin_host::PluginSlot;
use trellis_types::owners::controller_name;

use crate::cache::{api_version, Cache, CacheError, GroupKind, Informer};
use crate::queue::{Backoff, WorkQueue};

/// A reconcile key: namespace ("" for cluster-scoped) and name.
pub type Key = (String, String);

/// What a controller has done, for its status.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reconcile calls made.
    pub reconciles: AtomicU64,
    /// Reconciles that failed (plugin error, trap, deadline).
    pub errors: AtomicU64,
    /// Reconciles that asked to be called again later.
    pub requeues: AtomicU64,
    /// Versions swapped in after the first.
    pub swaps: AtomicU64,
    /// The last failure, with its key.
    pub last_error: Mutex<Option<String>>,
    /// When the last reconcile ended (Unix seconds; 0: never). Formatted
    /// only when the status is written, not on every reconcile.
    pub last_reconcile: AtomicI64,
}

/// One version of a controller `Plugin`: what the runtime compares to skip
/// reloading, and what its status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The object's spec version (`spec_version`: uid/generation).
    pub spec: String,
    /// Its `metadata.generation` (the status's `observedGeneration`).
    pub generation: i64,
    /// Digest of the component.
    pub digest: String,
}

/// A controller the runtime runs.
pub struct Running {
    /// The `Plugin` object's name.
    pub name: String,
    /// The version reconciles use.
    pub slot: Arc<PluginSlot<ControllerPlugin>>,
    /// Keys waiting (kept across swaps).
    pub queue: Arc<WorkQueue<Key>>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Which version of the `Plugin` runs now.
    pub version: Version,
    /// Worker tasks (set when the controller starts; a new version keeps them).
    pub workers: usize,
    /// When the version running now started (RFC 3339).
    pub since: String,
    info: ControllerInfo,
    handlers: Vec<(Arc<Informer>, u64)>,
    tasks: Vec<JoinHandle<()>>,
}

/// The keys a change of `obj` (of `kind`) queues for a controller with
/// `info`, whose primary kind is namespaced or not.
pub fn keys_for(
    info: &ControllerInfo,
    primary_namespaced: bool,
    kind: &GroupKind,
    obj: &Value,
) -> Vec<Key> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let own = (ns.to_string(), name.to_string());
    let primary = GroupKind::of(&info.primary);
    let mut keys = Vec::new();
    if *kind == primary {
        keys.push(own.clone());
    }
    for w in info
        .watches
        .iter()
        .filter(|w| GroupKind::of(&w.kind) == *kind)
    {
        match w.mapping {
            WatchMapping::Object => keys.push(own.clone()),
            WatchMapping::Owner => {
                if let Some(owner) = controller_name(obj, &primary.group, &primary.kind) {
                    let ns = if primary_namespaced { ns } else { "" };
                    keys.push((ns.to_string(), owner.to_string()));
                }
            }
        }
    }
    keys.dedup();
    keys
}

/// Describe a controller's kinds for its status: `Deployment.apps/v1` etc.
pub fn describe(info: &ControllerInfo) -> Value {
    let name = |k: &trellis_plugin_host::wit::KindRef| format!("{} {}", api_version(k), k.kind);
    json!({
        "primary": name(&info.primary),
        "watches": info.watches.iter().map(|w| format!("{} ({})", name(&w.kind), match w.mapping {
            WatchMapping::Object => "object",
            WatchMapping::Owner => "owner",
        })).collect::<Vec<_>>(),
    })
}

fn same_kinds(a: &ControllerInfo, b: &ControllerInfo) -> bool {
    describe(a) == describe(b)
}

impl Running {
    /// Start `plugin`: informers for its kinds, then `workers` workers.
    pub async fn start(
        name: &str,
        plugin: ControllerPlugin,
        cache: &Arc<Cache>,
        workers: usize,
        backoff: Backoff,
        version: Version,
    ) -> Result<Self, CacheError> {
        let info = plugin.info().clone();
        let mut running = Self {
            name: name.to_string(),
            slot: Arc::new(PluginSlot::new(plugin)),
            queue: Arc::new(WorkQueue::new(backoff)),
            stats: Arc::default(),
            version,
            workers,
            since: trellis_client::now_rfc3339(),
            info: info.clone(),
            handlers: Vec::new(),
            tasks: Vec::new(),
        };
        running.subscribe(cache, &info).await?;
        for _ in 0..workers.max(1) {
            running.tasks.push(tokio::spawn(work(
                running.name.clone(),
                running.queue.clone(),
                running.slot.clone(),
                running.stats.clone(),
            )));
        }
        Ok(running)
    }

    /// The kinds of the version running now.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    async fn subscribe(
        &mut self,
        cache: &Arc<Cache>,
        info: &ControllerInfo,
    ) -> Result<(), CacheError> {
        let primary = cache.ensure(&info.primary).await?;
        let primary_namespaced = primary.resource.namespaced;
        let mut kinds = vec![info.primary.clone()];
        for w in &info.watches {
            if !kinds
                .iter()
                .any(|k| GroupKind::of(k) == GroupKind::of(&w.kind))
            {
                kinds.push(w.kind.clone());
            }
        }
        let mut informers = Vec::new();
        for k in &kinds {
            informers.push(cache.ensure(k).await?);
        }
        for informer in informers {
            let queue = self.queue.clone();
            let info = info.clone();
            let kind = informer.kind.clone();
            let id =
                informer.add_handler(Arc::new(move |old: Option<&Value>, new: Option<&Value>| {
                    for obj in old.into_iter().chain(new) {
                        for key in keys_for(&info, primary_namespaced, &kind, obj) {
                            queue.add(key);
                        }
                    }
                }));
            self.handlers.push((informer, id));
        }
        Ok(())
    }

    fn unsubscribe(&mut self) {
        for (informer, id) in self.handlers.drain(..) {
            informer.remove_handler(id);
        }
    }

    /// Put a new version in: calls in flight finish on the old one; the queue
    /// and its keys stay. New kinds re-subscribe (every object of them is
    /// queued); otherwise every primary object is queued again so that the
    /// new version looks at everything once.
    pub async fn swap(
        &mut self,
        plugin: ControllerPlugin,
        cache: &Arc<Cache>,
        version: Version,
    ) -> Result<(), CacheError> {
        let info = plugin.info().clone();
        if !same_kinds(&info, &self.info) {
            // Make sure the new kinds are served before letting go of the old ones.
            for k in std::iter::once(&info.primary).chain(info.watches.iter().map(|w| &w.kind)) {
                cache.ensure(k).await?;
            }
            self.unsubscribe();
            self.subscribe(cache, &info).await?;
        } else if let Some(primary) = cache.informer(&GroupKind::of(&info.primary)) {
            let namespaced = primary.resource.namespaced;
            for o in primary.list("", |_| true) {
                for key in keys_for(&info, namespaced, &primary.kind, &o) {
                    self.queue.add(key);
                }
            }
        }
        self.slot.swap(plugin);
        self.info = info;
        self.version = version;
        self.since = trellis_client::now_rfc3339();
        self.stats.swaps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stop: no more keys, workers end after their call in flight.
    pub fn stop(mut self) {
        self.unsubscribe();
        self.queue.shut_down();
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

/// One worker: take a key, reconcile it on a blocking thread with the
/// current version, act on the answer.
async fn work(
    name: String,
    queue: Arc<WorkQueue<Key>>,
    slot: Arc<PluginSlot<ControllerPlugin>>,
    stats: Arc<Stats>,
) {
    while let Some(key) = queue.pop().await {
        let version = slot.current();
        let k = ObjectKey {
            namespace: key.0.clone(),
            name: key.1.clone(),
        };
        let result = tokio::task::spawn_blocking(move || version.plugin.reconcile(&k)).await;
        stats.reconciles.fetch_add(1, Ordering::Relaxed);
        stats.last_reconcile.store(unix_now(), Ordering::Relaxed);
        let failure = match result {
            Ok(Ok(Action::AwaitChange)) => {
                queue.forget(&key);
                None
            }
            Ok(Ok(Action::RequeueAfter(ms))) => {
                queue.forget(&key);
                stats.requeues.fetch_add(1, Ordering::Relaxed);
                queue.add_after(key.clone(), std::time::Duration::from_millis(ms));
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(format!("the reconcile task failed: {e}")),
        };
        if let Some(message) = failure {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            let delay = queue.add_rate_limited(key.clone());
            let at = if key.0.is_empty() {
                key.1.clone()
            } else {
                format!("{}/{}", key.0, key.1)
            };
            tracing::warn!(controller = %name, key = %at, retry_in = ?delay, "reconcile failed: {message}");
            *stats.last_error.lock().expect("stats lock") = Some(format!("{at}: {message}"));
        }
        queue.done(&key);
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_plugin_host::controller::{KindRef, Watch};

    fn k(group: &str, kind: &str) -> KindRef {
        KindRef {
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn keys_follow_the_watch_mapping() {
        let info = ControllerInfo {
            name: "rs".into(),
            version: "1".into(),
            primary: k("apps", "ReplicaSet"),
            watches: vec![
                Watch {
                    kind: k("", "Pod"),
                    mapping: WatchMapping::Owner,
                },
                Watch {
                    kind: k("", "Node"),
                    mapping: WatchMapping::Object,
                },
            ],
        };
        let gk = |g: &str, kind: &str| GroupKind {
            group: g.into(),
            kind: kind.into(),
        };
        let pod = json!({"metadata": {"namespace": "ns", "name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "controller": true}]}});
        assert_eq!(
            keys_for(&info, true, &gk("", "Pod"), &pod),
            vec![("ns".into(), "web".into())]
        );
        let orphan = json!({"metadata": {"namespace": "ns", "name": "x"}});
        assert!(keys_for(&info, true, &gk("", "Pod"), &orphan).is_empty());
        let rs = json!({"metadata": {"namespace": "ns", "name": "web"}});
        assert_eq!(
            keys_for(&info, true, &gk("apps", "ReplicaSet"), &rs),
            vec![("ns".into(), "web".into())]
        );
        let node = json!({"metadata": {"name": "n1"}});
        assert_eq!(
            keys_for(&info, true, &gk("", "Node"), &node),
            vec![("".into(), "n1".into())]
        );
        // A cluster-scoped primary: the owner key has no namespace.
        let info = ControllerInfo {
            primary: k("", "Node"),
            ..info
        };
        let pod = json!({"metadata": {"namespace": "ns", "name": "p", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Node", "name": "n1", "controller": true}]}});
        let info = ControllerInfo {
            watches: vec![Watch {
                kind: k("", "Pod"),
                mapping: WatchMapping::Owner,
            }],
            ..info
        };
        assert_eq!(
            keys_for(&info, false, &gk("", "Pod"), &pod),
            vec![("".into(), "n1".into())]
        );
    }
}
