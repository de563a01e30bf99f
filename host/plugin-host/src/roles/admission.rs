//! Admission plugins: a fresh instance reviews each request, so no state leaks
//! from one request to the next.

use crate::bindings::admission::{AdmissionPlugin as Bindings, AdmissionPluginPre};
use crate::engine::{CompiledComponent, PluginEngine, RoleInfo};
use crate::roles::{fault, Common, PluginSpec};
use crate::state::PluginState;
use crate::{CallError, Capability, LoadError};

pub use crate::bindings::admission::exports::trellis::plugin::admission::AdmissionResponse;

pub(crate) const ROLE: RoleInfo = RoleInfo {
    name: "admission",
    export: "trellis:plugin/admission@0.4.0",
    allowed: &[
        Capability::Log,
        Capability::ObjectsRead,
        Capability::ObjectsWrite,
    ],
};

/// A loaded admission plugin.
pub struct AdmissionPlugin {
    common: Common,
    pre: AdmissionPluginPre<PluginState>,
}

impl std::fmt::Debug for AdmissionPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionPlugin")
            .field("name", &self.common.name)
            .finish()
    }
}

impl AdmissionPlugin {
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
        let (common, pre) = super::prepare(engine, compiled, spec, ROLE, AdmissionPluginPre::new)?;
        let plugin = Self { common, pre };
        plugin.instance().map_err(LoadError::Call)?;
        Ok(plugin)
    }

    fn instance(&self) -> Result<(wasmtime::Store<PluginState>, Bindings), CallError> {
        let c = &self.common;
        let mut store = c.store();
        let b = c.guarded(&mut store, |s| self.pre.instantiate(s))?;
        let api = b.trellis_plugin_admission();
        c.guarded(&mut store, |s| api.call_configure(s, &c.config))?
            .map_err(fault)?;
        Ok((store, b))
    }

    /// Review one `AdmissionRequest` (JSON).
    pub fn review(&self, request: &str) -> Result<AdmissionResponse, CallError> {
        let (mut store, b) = self.instance()?;
        let api = b.trellis_plugin_admission();
        let r = self
            .common
            .guarded(&mut store, |s| api.call_review(s, request))?
            .map_err(fault)?;
        if !r.allowed && !matches!(r.code, 0 | 403 | 422) {
            return Err(CallError::Contract {
                reason: format!("denial code {} is neither 403 nor 422", r.code),
            });
        }
        Ok(r)
    }
}
