//! The controller runtime, modelled on kube-runtime: every `Plugin` object
//! (`trellis.dev/v1alpha1`) with `spec.role: controller` is a running
//! controller. Its component names a primary kind and the kinds it watches;
//! the runtime keeps one informer per kind in a shared cache, maps each change
//! to reconcile keys in the controller's work queue (never the same key twice
//! at once; failures back off, requeue-after delays), and calls `reconcile`
//! on a fresh instance of the version in the controller's slot. Reads go to
//! the cache; writes go through the API server as `system:controller:NAME`,
//! within the `Plugin`'s grants.
//!
//! Applying a new version of a `Plugin` swaps it in (calls in flight finish
//! on the old one; queued keys stay); one that fails to load leaves the
//! running version alone and says why in the `Plugin`'s `Ready` condition;
//! deleting the `Plugin` stops the controller. Each controller's state —
//! kinds, queue depth, reconciles, errors, the last error — is in its
//! `Plugin`'s `status.controller`, refreshed every few seconds.
//!
//! ```yaml
//! apiVersion: trellis.dev/v1alpha1
//! kind: Plugin
//! metadata: {name: replicaset}
//! spec:
//!   role: controller
//!   source: {builtin: replicaset}      # or {wasm: <base64 component>}
//!   config: {}                         # handed to `configure`
//!   workers: 4                         # keys reconciled at once (default 4; read at start)
//!   deadline: 10s                      # per reconcile (default 10s)
//!   memoryLimit: 64Mi
//!   grants:
//!     capabilities: [log, objects-read, objects-write]
//!     read: [{group: apps, kind: ReplicaSet}, {group: "", kind: Pod}]
//!     write: [{group: "", kind: Pod}, {group: apps, kind: ReplicaSet}]
//! ```

#![warn(missing_docs)]

pub mod cache;
pub mod controller;
pub mod defaults;
pub mod objects;
pub mod queue;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use trellis_client::{Client, Patch, Resource};
use trellis_plugin_host::controller::ControllerPlugin;
use trellis_plugin_host::wit::KindRef;
use trellis_plugin_host::{entry_budget, spec_version, HostServices, PluginSource};

use crate::cache::Cache;
use crate::controller::{describe, Running, Version};
use crate::objects::{ApiWriter, CacheReader};
use crate::queue::Backoff;

/// Tunables of the runtime.
#[derive(Debug, Clone)]
pub struct Options {
    /// Workers per controller when its `Plugin` names none.
    pub workers: usize,
    /// Back-off of failed reconciles.
    pub backoff: Backoff,
    /// How often controllers' state is written to their `Plugin` status.
    pub status_interval: Duration,
    /// Per-reconcile deadline when the `Plugin` names none.
    pub deadline: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 4,
            backoff: Backoff::default(),
            status_interval: Duration::from_secs(2),
            deadline: Duration::from_secs(10),
        }
    }
}

fn plugin_kind() -> KindRef {
    KindRef {
        group: "trellis.dev".into(),
        version: "v1alpha1".into(),
        kind: "Plugin".into(),
    }
}

fn plugins_res() -> Resource {
    Resource::new("trellis.dev", "v1alpha1", "plugins", false)
}

/// The identity a controller writes as.
pub fn controller_user(plugin: &str) -> String {
    format!("system:controller:{plugin}")
}

/// Runs every controller `Plugin`.
pub struct ControllerManager {
    client: Client,
    source: PluginSource,
    options: Options,
    cache: Arc<Cache>,
    running: BTreeMap<String, Running>,
    /// Last status written per plugin, to write only changes.
    written: BTreeMap<String, Value>,
}

impl ControllerManager {
    /// A manager reading and writing through `client` (which must be allowed
    /// to impersonate), loading components from `source`.
    pub fn new(client: Client, source: PluginSource) -> Self {
        Self::with_options(client, source, Options::default())
    }

    /// A manager with `options`.
    pub fn with_options(client: Client, source: PluginSource, options: Options) -> Self {
        Self {
            cache: Cache::new(client.clone()),
            client,
            source,
            options,
            running: BTreeMap::new(),
            written: BTreeMap::new(),
        }
    }

    /// The shared cache.
    pub fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Run until `shutdown` completes.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let plugins = self
            .cache
            .ensure(&plugin_kind())
            .await
            .map_err(|e| format!("cannot watch Plugin objects: {e}"))?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Option<Value>)>();
        let id = plugins.add_handler(Arc::new(move |old: Option<&Value>, new: Option<&Value>| {
            let name = new
                .or(old)
                .and_then(|o| o["metadata"]["name"].as_str())
                .unwrap_or_default()
                .to_string();
            let _ = tx.send((name, new.cloned()));
        }));
        let mut tick = tokio::time::interval(self.options.status_interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some((name, obj)) = rx.recv() => self.apply(&name, obj).await,
                _ = tick.tick() => self.report().await,
            }
        }
        plugins.remove_handler(id);
        for (_, r) in std::mem::take(&mut self.running) {
            r.stop();
        }
        Ok(())
    }

    /// A `Plugin` object changed (None: deleted).
    async fn apply(&mut self, name: &str, obj: Option<Value>) {
        let obj = obj.filter(|o| o["spec"]["role"] == "controller");
        let Some(obj) = obj else {
            if let Some(r) = self.running.remove(name) {
                tracing::info!(controller = name, "controller stopped: its Plugin is gone");
                r.stop();
                self.written.remove(name);
            }
            return;
        };
        let spec = spec_version(&obj);
        if self
            .running
            .get(name)
            .is_some_and(|r| r.version.spec == spec)
        {
            return;
        }
        let loaded = self.load(name, &obj).await;
        let (plugin, digest) = match loaded {
            Ok(p) => p,
            Err(message) => {
                let keeps = self.running.contains_key(name);
                tracing::warn!(controller = name, "cannot load: {message}");
                self.set_condition(
                    name,
                    &obj,
                    "False",
                    "LoadFailed",
                    &if keeps {
                        format!("{message}; the previous version keeps running")
                    } else {
                        message
                    },
                )
                .await;
                return;
            }
        };
        let version = Version {
            spec,
            generation: obj["metadata"]["generation"].as_i64().unwrap_or(0),
            digest,
        };
        let workers = obj["spec"]["workers"]
            .as_u64()
            .map_or(self.options.workers, |w| w.clamp(1, 64) as usize);
        let outcome = match self.running.get_mut(name) {
            Some(r) => r
                .swap(plugin, &self.cache, version)
                .await
                .map(|()| "Swapped"),
            None => Running::start(
                name,
                plugin,
                &self.cache,
                workers,
                self.options.backoff,
                version,
            )
            .await
            .map(|r| {
                self.running.insert(name.to_string(), r);
                "Started"
            }),
        };
        match outcome {
            Ok(what) => {
                tracing::info!(controller = name, "controller {}", what.to_lowercase());
                self.written.remove(name);
                self.report_one(name).await;
            }
            Err(e) => {
                self.set_condition(name, &obj, "False", "LoadFailed", &e.to_string())
                    .await
            }
        }
    }

    /// Compile and instantiate a `Plugin`'s component off the async threads.
    async fn load(&self, name: &str, obj: &Value) -> Result<(ControllerPlugin, String), String> {
        let mut budget = entry_budget(&obj["spec"]).map_err(|m| format!("spec.{m}"))?;
        if obj["spec"]["deadline"].is_null() {
            budget.deadline = self.options.deadline;
        }
        let rt = tokio::runtime::Handle::current();
        let services = HostServices {
            objects: Some(Arc::new(CacheReader::new(self.cache.clone(), rt.clone()))),
            writer: Some(Arc::new(ApiWriter::new(
                self.client.impersonating(&controller_user(name)),
                self.cache.clone(),
                rt,
            ))),
            exec: None,
        };
        let source = self.source.clone();
        let obj = obj.clone();
        tokio::task::spawn_blocking(move || {
            let r = source.compile(&obj, "controller")?;
            let spec = r.spec(None, budget).services(services);
            let plugin = ControllerPlugin::from_compiled(source.engine(), &r.component, spec)
                .map_err(|e| e.to_string())?;
            Ok((plugin, r.component.digest.to_string()))
        })
        .await
        .map_err(|e| format!("loading failed: {e}"))?
    }

    async fn set_condition(
        &mut self,
        name: &str,
        obj: &Value,
        status: &str,
        reason: &str,
        message: &str,
    ) {
        let status = json!({
            "observedGeneration": obj["metadata"]["generation"],
            "conditions": [{
                "type": "Ready", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": trellis_client::now_rfc3339(),
            }],
        });
        self.write_status(name, status).await;
    }

    async fn write_status(&mut self, name: &str, status: Value) {
        let mut comparable = status.clone();
        if let Some(c) = comparable["conditions"][0].as_object_mut() {
            c.remove("lastTransitionTime");
        }
        if comparable["controller"].is_object() {
            comparable["controller"]
                .as_object_mut()
                .expect("an object")
                .remove("lastReconcileTime");
        }
        if self.written.get(name) == Some(&comparable) {
            return;
        }
        match self
            .client
            .patch(
                &plugins_res(),
                "",
                name,
                "status",
                Patch::Merge,
                &json!({"status": status}),
            )
            .await
        {
            Ok(_) => {
                self.written.insert(name.to_string(), comparable);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                tracing::debug!(controller = name, error = %e, "cannot write the Plugin status")
            }
        }
    }

    async fn report(&mut self) {
        let names: Vec<String> = self.running.keys().cloned().collect();
        for n in names {
            self.report_one(&n).await;
        }
    }

    /// Write one controller's state into its `Plugin` status if it changed.
    async fn report_one(&mut self, name: &str) {
        let Some(r) = self.running.get(name) else {
            return;
        };
        let s = &r.stats;
        let info = r.info();
        let mut controller = describe(info);
        let c = controller.as_object_mut().expect("an object");
        for (k, v) in [
            ("name", json!(info.name)),
            ("version", json!(info.version)),
            ("digest", json!(r.version.digest)),
            ("workers", json!(r.workers)),
            ("queued", json!(r.queue.len())),
            ("delayed", json!(r.queue.delayed())),
            ("inFlight", json!(r.queue.in_flight())),
            ("reconciles", json!(s.reconciles.load(Ordering::Relaxed))),
            ("errors", json!(s.errors.load(Ordering::Relaxed))),
            ("requeues", json!(s.requeues.load(Ordering::Relaxed))),
            ("swaps", json!(s.swaps.load(Ordering::Relaxed))),
            (
                "lastError",
                json!(s.last_error.lock().expect("stats lock").clone()),
            ),
            (
                "lastReconcileTime",
                match s.last_reconcile.load(Ordering::Relaxed) {
                    0 => Value::Null,
                    t => json!(trellis_types::time::rfc3339(t)),
                },
            ),
        ] {
            c.insert(k.into(), v);
        }
        let status = json!({
            "observedGeneration": r.version.generation,
            "digest": r.version.digest,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Running",
                "message": format!("controller {} {} is running", info.name, info.version),
                "lastTransitionTime": r.since,
            }],
            "controller": controller,
        });
        self.write_status(name, status).await;
    }
}
