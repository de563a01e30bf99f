//! Controllers: a fresh instance runs each reconcile; reads go through the
//! host's cache and writes through the API server, within the grants.

use crate::bindings::controller::{Controller as Bindings, ControllerPre};
use crate::engine::{CompiledComponent, PluginEngine, RoleInfo};
use crate::roles::{fault, Common, PluginSpec};
use crate::state::PluginState;
use crate::{CallError, Capability, LoadError};

pub use crate::bindings::controller::exports::trellis::plugin::reconciler::{
    Action, ControllerInfo, ObjectKey, Watch, WatchMapping,
};
pub use crate::bindings::types::KindRef;

pub(crate) const ROLE: RoleInfo = RoleInfo {
    name: "controller",
    export: "trellis:plugin/reconciler@0.3.0",
    allowed: &[
        Capability::Log,
        Capability::ObjectsRead,
        Capability::ObjectsWrite,
    ],
};

/// A loaded controller.
pub struct ControllerPlugin {
    common: Common,
    pre: ControllerPre<PluginState>,
    info: ControllerInfo,
}

impl std::fmt::Debug for ControllerPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerPlugin")
            .field("name", &self.common.name)
            .field("info", &self.info)
            .finish()
    }
}

impl ControllerPlugin {
    /// Compile, check, link and validate the configuration.
    pub fn load(engine: &PluginEngine, wasm: &[u8], spec: PluginSpec) -> Result<Self, LoadError> {
        Self::from_compiled(engine, &engine.compile(wasm)?, spec)
    }

    /// Load from an already compiled component.
    pub fn from_compiled(
        engine: &PluginEngine,
        compiled: &CompiledComponent,
        spec: PluginSpec,
    ) -> Result<Self, LoadError> {
        let (common, pre) = super::prepare(engine, compiled, spec, ROLE, ControllerPre::new)?;
        let mut plugin = Self {
            common,
            pre,
            info: ControllerInfo {
                name: String::new(),
                version: String::new(),
                primary: KindRef {
                    group: String::new(),
                    version: String::new(),
                    kind: String::new(),
                },
                watches: Vec::new(),
            },
        };
        let (mut store, b) = plugin.instance().map_err(LoadError::Call)?;
        let api = b.trellis_plugin_reconciler();
        plugin.info = plugin
            .common
            .guarded(&mut store, |s| api.call_info(s))
            .map_err(LoadError::Call)?;
        Ok(plugin)
    }

    /// What the controller reconciles and watches.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    fn instance(&self) -> Result<(wasmtime::Store<PluginState>, Bindings), CallError> {
        let c = &self.common;
        let mut store = c.store();
        let b = c.guarded(&mut store, |s| self.pre.instantiate(s))?;
        let api = b.trellis_plugin_reconciler();
        c.guarded(&mut store, |s| api.call_configure(s, &c.config))?
            .map_err(fault)?;
        Ok((store, b))
    }

    /// Reconcile one key.
    pub fn reconcile(&self, key: &ObjectKey) -> Result<Action, CallError> {
        let (mut store, b) = self.instance()?;
        let api = b.trellis_plugin_reconciler();
        self.common
            .guarded(&mut store, |s| api.call_reconcile(s, key))?
            .map_err(|e| fault(e).into())
    }
}
