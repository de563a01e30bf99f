//! The probe plugins a node runs: the defaults (`httpGet`, `tcpSocket`,
//! `exec`), compiled once from the builtin plugin directory, and custom probe
//! plugins named by `Plugin` objects, resolved through the same
//! [`PluginSource`] (source, `sha256` pin, grants) the scheduler uses.
//!
//! A plugin's call deadline is the probe's `timeoutSeconds` plus a margin,
//! so one instance is kept per (component, deadline).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use trellis_plugin_host::probe::ProbePlugin;
use trellis_plugin_host::{
    entry_budget, spec_version, Budget, Capability, CompiledComponent, ContainerExec, Grants,
    HostServices, PluginSource,
};

/// How long a probe plugin call may run past the probe's own timeout: the
/// host's network and exec calls give up at the timeout, and the guest needs a
/// moment to answer after them.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(1);

/// A default probe plugin: one per Kubernetes probe handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DefaultProbe {
    /// `httpGet`.
    HttpGet,
    /// `tcpSocket`.
    TcpSocket,
    /// `exec`.
    Exec,
}

impl DefaultProbe {
    /// Every default probe plugin.
    pub const ALL: [DefaultProbe; 3] = [
        DefaultProbe::HttpGet,
        DefaultProbe::TcpSocket,
        DefaultProbe::Exec,
    ];

    /// The builtin component's name: `<builtin dir>/<name>.wasm`.
    pub fn builtin(self) -> &'static str {
        match self {
            DefaultProbe::HttpGet => "probe-http-get",
            DefaultProbe::TcpSocket => "probe-tcp-socket",
            DefaultProbe::Exec => "probe-exec",
        }
    }

    /// The Kubernetes handler field it serves.
    pub fn handler(self) -> &'static str {
        match self {
            DefaultProbe::HttpGet => "httpGet",
            DefaultProbe::TcpSocket => "tcpSocket",
            DefaultProbe::Exec => "exec",
        }
    }

    /// The only capability it is granted.
    fn capability(self) -> Capability {
        match self {
            DefaultProbe::Exec => Capability::PodExec,
            _ => Capability::PodNetwork,
        }
    }
}

/// Why the probe plugins could not be set up or one could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ProbePluginError {
    /// A default probe plugin could not be read, compiled or linked.
    #[error("default probe plugin {name} (for {handler} probes): {reason}; build the plugins with `cargo xtask plugins` or point the agent at the folder holding {name}.wasm")]
    Default {
        /// Its builtin name.
        name: &'static str,
        /// The handler it serves.
        handler: &'static str,
        /// What failed.
        reason: String,
    },
    /// A custom probe plugin was named but the agent has no way to read
    /// `Plugin` objects.
    #[error("probe plugin {0:?}: this agent cannot read Plugin objects, so it runs only the default probe plugins")]
    NoPluginObjects(String),
    /// The `Plugin` object could not be read.
    #[error("probe plugin {name:?}: cannot read its Plugin object: {reason}")]
    Lookup {
        /// The plugin's name.
        name: String,
        /// What the lookup said.
        reason: String,
    },
    /// The `Plugin` object's component could not be resolved, compiled or
    /// loaded as a probe plugin (wrong role, pin mismatch, grant refused).
    #[error("probe plugin {name:?}: {reason}")]
    Load {
        /// The plugin's name.
        name: String,
        /// What failed.
        reason: String,
    },
}

/// Reads `Plugin` objects (`trellis.dev/v1alpha1`, cluster-scoped) by name,
/// for custom probe plugins. The agent's API client implements it.
pub trait PluginObjects: Send + Sync + 'static {
    /// The `Plugin` object named `name`, or why it cannot be had.
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>>;
}

impl PluginObjects for trellis_client::Client {
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send + 'a>> {
        Box::pin(async move {
            let plugins =
                trellis_client::Resource::new("trellis.dev", "v1alpha1", "plugins", false);
            trellis_client::Client::get(self, &plugins, "", name)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// A component ready to be loaded with a deadline.
#[derive(Clone)]
pub(crate) struct Component {
    /// For logs and errors: the builtin or `Plugin` object name.
    pub name: String,
    /// Cache key: the name and, for `Plugin` objects, the spec version.
    key: String,
    grants: Grants,
    compiled: CompiledComponent,
    /// The `Plugin` object's `spec.config`, sent when a probe gives none.
    pub config: Option<Value>,
    /// Memory cap from the probe annotation's `memoryLimit`, else the default.
    memory_bytes: usize,
}

/// The probe plugins of one node: the defaults, loaded once, and custom ones
/// resolved on demand. Cheap to clone.
#[derive(Clone)]
pub struct ProbePlugins {
    inner: Arc<Inner>,
}

struct Inner {
    source: PluginSource,
    services: HostServices,
    defaults: HashMap<DefaultProbe, Component>,
    objects: Option<Arc<dyn PluginObjects>>,
    /// Compiled custom components by `Plugin` name, with their spec version.
    custom: Mutex<HashMap<String, Component>>,
    /// Loaded instances by (component key, deadline).
    loaded: Mutex<HashMap<(String, Duration), Arc<ProbePlugin>>>,
}

impl std::fmt::Debug for ProbePlugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbePlugins")
            .field("custom", &self.inner.objects.is_some())
            .finish()
    }
}

impl ProbePlugins {
    /// Compile and check the default probe plugins (`probe-http-get`,
    /// `probe-tcp-socket`, `probe-exec`) from `source`'s builtin directory.
    /// `exec` runs `exec` probes' commands in the pod's containers. CPU-heavy
    /// on a cold compile cache: call it off the async runtime's workers.
    ///
    /// Errors: [`ProbePluginError::Default`] naming the plugin that is missing
    /// or broken.
    pub fn new(
        source: PluginSource,
        exec: Arc<dyn ContainerExec>,
    ) -> Result<Self, ProbePluginError> {
        let services = HostServices {
            exec: Some(exec),
            ..HostServices::default()
        };
        let mut defaults = HashMap::new();
        for d in DefaultProbe::ALL {
            let object = json!({
                "metadata": {"name": d.builtin()},
                "spec": {"role": "probe", "source": {"builtin": d.builtin()},
                         "grants": {"capabilities": [d.capability().interface()]}},
            });
            let fail = |reason: String| ProbePluginError::Default {
                name: d.builtin(),
                handler: d.handler(),
                reason,
            };
            let r = source.compile(&object, "probe").map_err(fail)?;
            let component = Component {
                name: d.builtin().to_string(),
                key: format!("builtin:{}", d.builtin()),
                grants: r.grants,
                compiled: r.component,
                config: None,
                memory_bytes: Budget::default().memory_bytes,
            };
            // Link it once now, so a broken default fails here and not at the
            // first probe.
            load(&source, &services, &component, Duration::from_secs(1))
                .map_err(|e| fail(e.to_string()))?;
            defaults.insert(d, component);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                services,
                defaults,
                objects: None,
                custom: Mutex::default(),
                loaded: Mutex::default(),
            }),
        })
    }

    /// Allow custom probe plugins: probes whose `probe.trellis.dev/...`
    /// annotation names a `Plugin` object are resolved through `objects`.
    /// Without it such probes report that the agent cannot read Plugin
    /// objects.
    pub fn with_plugin_objects(self, objects: Arc<dyn PluginObjects>) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                source: i.source.clone(),
                services: i.services.clone(),
                defaults: i.defaults.clone(),
                objects: Some(objects),
                custom: Mutex::default(),
                loaded: Mutex::new(i.loaded.lock().expect("probe plugin cache").clone()),
            }),
        }
    }

    /// The component of a default probe plugin.
    pub(crate) fn default_component(&self, d: DefaultProbe) -> &Component {
        &self.inner.defaults[&d]
    }

    /// Resolve the `Plugin` object `name` (role probe) to a compiled
    /// component; recompiles only when its spec changed. `entry` is the probe
    /// annotation, for its `memoryLimit`.
    pub(crate) async fn custom_component(
        &self,
        name: &str,
        entry: &Value,
    ) -> Result<Component, ProbePluginError> {
        let objects = self
            .inner
            .objects
            .clone()
            .ok_or_else(|| ProbePluginError::NoPluginObjects(name.to_string()))?;
        let object = objects
            .get(name)
            .await
            .map_err(|reason| ProbePluginError::Lookup {
                name: name.to_string(),
                reason,
            })?;
        let load_error = |reason: String| ProbePluginError::Load {
            name: name.to_string(),
            reason,
        };
        let memory_bytes = entry_budget(entry)
            .map_err(|m| load_error(format!("in its probe annotation, {m}")))?
            .memory_bytes;
        let key = format!("plugin:{name}@{}", spec_version(&object));
        let cached = self
            .inner
            .custom
            .lock()
            .expect("probe plugin cache")
            .get(name)
            .cloned();
        let mut component = match cached.filter(|c| c.key == key) {
            Some(c) => c,
            None => {
                let source = self.inner.source.clone();
                let r = tokio::task::spawn_blocking(move || source.compile(&object, "probe"))
                    .await
                    .map_err(|e| load_error(format!("compiling failed: {e}")))?
                    .map_err(load_error)?;
                let c = Component {
                    name: name.to_string(),
                    key: key.clone(),
                    grants: r.grants,
                    compiled: r.component,
                    config: r.config,
                    memory_bytes: Budget::default().memory_bytes,
                };
                let mut custom = self.inner.custom.lock().expect("probe plugin cache");
                custom.insert(name.to_string(), c.clone());
                // Instances of older versions of this plugin are never used again.
                let prefix = format!("plugin:{name}@");
                self.inner
                    .loaded
                    .lock()
                    .expect("probe plugin cache")
                    .retain(|(k, _), _| !k.starts_with(&prefix) || *k == key);
                c
            }
        };
        component.memory_bytes = memory_bytes;
        Ok(component)
    }

    /// The loaded plugin for `component` with a call deadline of `timeout` +
    /// [`DEADLINE_MARGIN`]; loads it (link and one instantiation, cheap) on
    /// first use. Call it on a blocking thread.
    pub(crate) fn instance(
        &self,
        component: &Component,
        timeout: Duration,
    ) -> Result<Arc<ProbePlugin>, ProbePluginError> {
        let deadline = timeout + DEADLINE_MARGIN;
        let key = (
            format!("{}#{}", component.key, component.memory_bytes),
            deadline,
        );
        if let Some(p) = self
            .inner
            .loaded
            .lock()
            .expect("probe plugin cache")
            .get(&key)
        {
            return Ok(p.clone());
        }
        let plugin = Arc::new(
            load(
                &self.inner.source,
                &self.inner.services,
                component,
                deadline,
            )
            .map_err(|e| ProbePluginError::Load {
                name: component.name.clone(),
                reason: e.to_string(),
            })?,
        );
        self.inner
            .loaded
            .lock()
            .expect("probe plugin cache")
            .insert(key, plugin.clone());
        Ok(plugin)
    }
}

fn load(
    source: &PluginSource,
    services: &HostServices,
    c: &Component,
    deadline: Duration,
) -> Result<ProbePlugin, trellis_plugin_host::LoadError> {
    let budget = Budget {
        deadline,
        memory_bytes: c.memory_bytes,
    };
    let spec = trellis_plugin_host::PluginSpec::new(&c.name)
        .budget(budget)
        .grants(c.grants.clone())
        .services(services.clone());
    ProbePlugin::from_compiled(source.engine(), &c.compiled, spec)
}
