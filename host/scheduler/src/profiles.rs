//! Profiles from the cluster: `SchedulerProfile` objects name `Plugin`
//! objects (both `trellis.dev/v1alpha1`, cluster-scoped). A task watches
//! both; when a profile or a plugin it names changes, it loads the chain off
//! the scheduling path and hands it to the scheduler, which swaps it in
//! between two pods. A profile that cannot be built (a plugin missing, not a
//! scheduler plugin, failing to compile, refusing its config) is reported in
//! its `Ready` condition and the chain already running stays.
//!
//! ```yaml
//! apiVersion: trellis.dev/v1alpha1
//! kind: Plugin
//! metadata: {name: zone-maintenance}
//! spec:
//!   role: scheduler
//!   source: {builtin: zone-maintenance}   # or {wasm: <base64 component>}
//!   sha256: "…"                           # optional pin
//!   config: {preferredZones: [zone-a]}    # default config
//!   grants: {capabilities: [log]}
//! ---
//! apiVersion: trellis.dev/v1alpha1
//! kind: SchedulerProfile
//! metadata: {name: default-scheduler}      # = spec.schedulerName of its pods
//! spec:
//!   percentageOfNodesToScore: 0            # 0 = adaptive, as upstream
//!   plugins:                               # filters run in this order
//!   - name: node-resources-fit             # a Plugin object
//!     weight: 1                            # score weight, 0 = do not score
//!     filter: true                         # default true
//!     config: {scoringStrategy: {type: MostAllocated}}
//!     deadline: 100ms
//!     memoryLimit: 64Mi
//!     failurePolicy: Fail                  # or Ignore
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use trellis_client::{Client, ClientError, ListParams, Patch, Resource};
use trellis_plugin_host::scheduler::SchedulerPlugin;
use trellis_plugin_host::{entry_budget, spec_version, status_unchanged, Budget, PluginSource};

use crate::chain::{Entry, FailurePolicy, Profile, WasmPlugin};
use crate::ProfileUpdate;

fn plugins_res() -> Resource {
    Resource::new("trellis.dev", "v1alpha1", "plugins", false)
}
fn profiles_res() -> Resource {
    Resource::new("trellis.dev", "v1alpha1", "schedulerprofiles", false)
}

/// One profile entry as written in the object.
struct EntrySpec {
    name: String,
    filter: bool,
    weight: i64,
    config: Option<Value>,
    budget: Budget,
    failure: FailurePolicy,
}

fn entry_spec(i: usize, e: &Value) -> Result<EntrySpec, String> {
    let at = format!("spec.plugins[{i}]");
    let name = e["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or(format!("{at}.name: Required value"))?
        .to_string();
    let budget = entry_budget(e).map_err(|m| format!("{at}.{m}"))?;
    let failure = match e["failurePolicy"].as_str().unwrap_or("Fail") {
        "Fail" => FailurePolicy::Fail,
        "Ignore" => FailurePolicy::Ignore,
        other => return Err(format!("{at}.failurePolicy: Unsupported value: {other:?}")),
    };
    Ok(EntrySpec {
        name,
        filter: e["filter"].as_bool().unwrap_or(true),
        weight: e["weight"].as_i64().unwrap_or(1),
        config: e.get("config").filter(|c| !c.is_null()).cloned(),
        budget,
        failure,
    })
}

/// Load one plugin object as a scheduler plugin with `config` and `budget`.
fn load(
    source: &PluginSource,
    plugin: &Value,
    config: Option<&Value>,
    budget: Budget,
) -> Result<(SchedulerPlugin, String), String> {
    let r = source.compile(plugin, "scheduler")?;
    let loaded =
        SchedulerPlugin::from_compiled(source.engine(), &r.component, r.spec(config, budget))
            .map_err(|e| e.to_string())?;
    Ok((loaded, r.component.digest.to_string()))
}

fn build(
    source: &PluginSource,
    profile: &Value,
    plugins: &BTreeMap<String, Value>,
) -> Result<Profile, String> {
    let name = profile["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &profile["spec"];
    let pct = spec["percentageOfNodesToScore"].as_u64().unwrap_or(0);
    if pct > 100 {
        return Err("spec.percentageOfNodesToScore: must be between 0 and 100".into());
    }
    let mut out = Profile::new(name).percentage_of_nodes_to_score(pct as u32);
    let entries = spec["plugins"].as_array().cloned().unwrap_or_default();
    for (i, e) in entries.iter().enumerate() {
        let e = entry_spec(i, e)?;
        let obj = plugins
            .get(&e.name)
            .ok_or_else(|| format!("plugin {:?}: no Plugin object of that name", e.name))?;
        let (plugin, _) = load(source, obj, e.config.as_ref(), e.budget)
            .map_err(|m| format!("plugin {:?}: {m}", e.name))?;
        let mut entry =
            Entry::new(e.name, Box::new(WasmPlugin::new(plugin)), e.weight).failure(e.failure);
        entry.filter = e.filter;
        out = out.with(entry);
    }
    Ok(out)
}

fn condition(ok: bool, reason: &str, message: &str) -> Value {
    json!([{
        "type": "Ready",
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": trellis_client::now_rfc3339(),
    }])
}

/// Patch `status` unless it already says the same (our own status writes
/// come back through the watch; comparing keeps that from looping).
async fn set_status(client: &Client, res: &Resource, obj: &Value, mut status: Value) {
    status["observedGeneration"] = obj["metadata"]["generation"].clone();
    if status_unchanged(&obj["status"], &status) {
        return;
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let patch = json!({ "status": status });
    if let Err(e) = client
        .patch(res, "", name, "status", Patch::Merge, &patch)
        .await
    {
        if !e.is_not_found() {
            tracing::warn!(object = name, error = %e, "cannot write status");
        }
    }
}

struct Watcher {
    client: Client,
    source: PluginSource,
    tx: mpsc::Sender<ProfileUpdate>,
    plugins: BTreeMap<String, Value>,
    profiles: BTreeMap<String, Value>,
    /// Profile name -> the versions it was last built from.
    built: HashMap<String, String>,
    /// Plugin name -> version last checked.
    checked: HashMap<String, String>,
}

impl Watcher {
    fn fingerprint(&self, profile: &Value) -> String {
        let mut f = spec_version(profile);
        for e in profile["spec"]["plugins"].as_array().into_iter().flatten() {
            let n = e["name"].as_str().unwrap_or_default();
            f.push(';');
            f.push_str(&self.plugins.get(n).map(spec_version).unwrap_or_default());
        }
        f
    }

    /// Bring every profile and scheduler plugin up to date.
    async fn reconcile(&mut self) -> Result<(), ()> {
        // Plugins: load each new version once, to report whether it works.
        let todo: Vec<Value> = self
            .plugins
            .values()
            .filter(|p| p["spec"]["role"] == "scheduler")
            .filter(|p| {
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                self.checked.get(name) != Some(&spec_version(p))
            })
            .cloned()
            .collect();
        for p in todo {
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let pc = p.clone();
            let result = self
                .blocking(move |s| {
                    load(s, &pc, None, Budget::default())
                        .map(|(pl, digest)| (pl.info().clone(), digest))
                })
                .await;
            let status = match result {
                Ok((info, digest)) => {
                    let mut phases = Vec::new();
                    if info
                        .phases
                        .contains(trellis_plugin_host::scheduler::Phases::FILTER)
                    {
                        phases.push("filter");
                    }
                    if info
                        .phases
                        .contains(trellis_plugin_host::scheduler::Phases::SCORE)
                    {
                        phases.push("score");
                    }
                    json!({
                        "digest": digest,
                        "info": {"name": info.name, "version": info.version, "phases": phases},
                        "conditions": condition(true, "Loaded", "compiled, linked and configured"),
                    })
                }
                Err(m) => json!({"conditions": condition(false, "LoadFailed", &m)}),
            };
            set_status(&self.client, &plugins_res(), &p, status).await;
            self.checked.insert(name, spec_version(&p));
        }
        // Profiles.
        let names: Vec<String> = self.profiles.keys().cloned().collect();
        for name in names {
            let profile = self.profiles[&name].clone();
            let fp = self.fingerprint(&profile);
            if self.built.get(&name) == Some(&fp) {
                continue;
            }
            let plugins = self.plugins.clone();
            let result = self
                .blocking({
                    let profile = profile.clone();
                    move |s| build(s, &profile, &plugins)
                })
                .await;
            match result {
                Ok(chain) => {
                    let list: Vec<&str> = chain.entries().iter().map(|e| e.name.as_str()).collect();
                    let message = format!("chain active: {}", list.join(", "));
                    if self.tx.send(ProfileUpdate::Install(chain)).await.is_err() {
                        return Err(()); // the scheduler stopped
                    }
                    set_status(
                        &self.client,
                        &profiles_res(),
                        &profile,
                        json!({"conditions": condition(true, "Active", &message)}),
                    )
                    .await;
                }
                Err(m) => {
                    tracing::warn!(profile = %name, error = %m, "profile refused; the previous chain keeps running");
                    let message = format!("{m}; the previous chain (if any) keeps running");
                    set_status(
                        &self.client,
                        &profiles_res(),
                        &profile,
                        json!({"conditions": condition(false, "Invalid", &message)}),
                    )
                    .await;
                }
            }
            self.built.insert(name, fp);
        }
        let gone: Vec<String> = self
            .built
            .keys()
            .filter(|n| !self.profiles.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            self.built.remove(&n);
            if self.tx.send(ProfileUpdate::Remove(n)).await.is_err() {
                return Err(());
            }
        }
        Ok(())
    }

    /// Run compile-heavy work on the blocking pool.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&PluginSource) -> R + Send + 'static,
    ) -> R {
        let source = self.source.clone();
        tokio::task::spawn_blocking(move || f(&source))
            .await
            .expect("loading a plugin panicked")
    }
}

async fn list_watch(client: &Client, w: &mut Watcher) -> Result<(), ClientError> {
    let all = ListParams::default();
    let pl = client.list(&plugins_res(), "", &all).await?;
    let pr = client.list(&profiles_res(), "", &all).await?;
    let by_name = |items: &[Value]| -> BTreeMap<String, Value> {
        items
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    o.clone(),
                )
            })
            .collect()
    };
    w.plugins = by_name(pl.items());
    w.profiles = by_name(pr.items());
    if w.reconcile().await.is_err() {
        return Ok(());
    }
    let mut plugin_watch = client
        .watch(&plugins_res(), "", &all, pl.resource_version())
        .await?;
    let mut profile_watch = client
        .watch(&profiles_res(), "", &all, pr.resource_version())
        .await?;
    loop {
        let (ev, plugins) = tokio::select! {
            ev = plugin_watch.next() => (ev?, true),
            ev = profile_watch.next() => (ev?, false),
        };
        let Some(ev) = ev else { return Ok(()) };
        if ev.kind == "BOOKMARK" {
            continue;
        }
        let name = ev.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let map = if plugins {
            &mut w.plugins
        } else {
            &mut w.profiles
        };
        if ev.kind == "DELETED" {
            map.remove(&name);
        } else {
            map.insert(name, ev.object);
        }
        if w.reconcile().await.is_err() {
            return Ok(());
        }
    }
}

/// Watch profiles and plugins until the scheduler goes away.
pub(crate) async fn run(client: Client, source: PluginSource, tx: mpsc::Sender<ProfileUpdate>) {
    let mut w = Watcher {
        client: client.clone(),
        source,
        tx,
        plugins: BTreeMap::new(),
        profiles: BTreeMap::new(),
        built: HashMap::new(),
        checked: HashMap::new(),
    };
    loop {
        if w.tx.is_closed() {
            return;
        }
        if let Err(e) = list_watch(&client, &mut w).await {
            if !e.is_gone() {
                tracing::warn!(error = %e, "watching scheduler profiles failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
