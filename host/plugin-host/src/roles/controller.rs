//! Controllers: reads go through the host's cache and writes through the API
//! server, within the grants.
//!
//! An instance is kept between reconciles, as a controller process is: a
//! reconcile takes an idle instance (or makes one: instantiate, `configure`)
//! and gives it back when the call returned, with an answer or a
//! `plugin-error`. An instance that trapped, ran out of time or of memory is
//! dropped; the next reconcile gets a fresh one. Making a fresh instance per
//! reconcile cost about as much as the reconcile itself, and every change to
//! a watched object is a reconcile (each pod update, for the endpoints
//! controllers).

use std::sync::Mutex;

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
    export: "trellis:plugin/reconciler@0.4.0",
    allowed: &[
        Capability::Log,
        Capability::ObjectsRead,
        Capability::ObjectsWrite,
    ],
};

/// A configured instance.
struct Live {
    store: wasmtime::Store<PluginState>,
    bindings: Bindings,
}

/// A loaded controller.
pub struct ControllerPlugin {
    common: Common,
    pre: ControllerPre<PluginState>,
    info: ControllerInfo,
    idle: Mutex<Vec<Live>>,
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
            idle: Mutex::new(Vec::new()),
        };
        let mut live = plugin.instance().map_err(LoadError::Call)?;
        let api = live.bindings.trellis_plugin_reconciler();
        plugin.info = plugin
            .common
            .guarded(&mut live.store, |s| api.call_info(s))
            .map_err(LoadError::Call)?;
        plugin.park(live);
        Ok(plugin)
    }

    /// What the controller reconciles and watches.
    pub fn info(&self) -> &ControllerInfo {
        &self.info
    }

    fn instance(&self) -> Result<Live, CallError> {
        let c = &self.common;
        let mut store = c.store();
        let bindings = c.guarded(&mut store, |s| self.pre.instantiate(s))?;
        let api = bindings.trellis_plugin_reconciler();
        c.guarded(&mut store, |s| api.call_configure(s, &c.config))?
            .map_err(fault)?;
        Ok(Live { store, bindings })
    }

    /// Keep `live` for a later reconcile. A reconcile makes an instance only
    /// when none is idle, so no more are kept than reconciles ever ran at
    /// once (the runtime's workers, 4 by default).
    fn park(&self, live: Live) {
        self.idle.lock().expect("idle instances lock").push(live);
    }

    /// Reconcile one key, on an idle instance when there is one.
    pub fn reconcile(&self, key: &ObjectKey) -> Result<Action, CallError> {
        let idle = self.idle.lock().expect("idle instances lock").pop();
        let mut live = match idle {
            Some(live) => live,
            None => self.instance()?,
        };
        let api = live.bindings.trellis_plugin_reconciler();
        // A trap, deadline or memory error ends here, and drops the instance.
        let answer = self
            .common
            .guarded(&mut live.store, |s| api.call_reconcile(s, key))?;
        self.park(live);
        answer.map_err(|e| fault(e).into())
    }
}
