//! Probe plugins: a fresh instance runs each probe, scoped to one pod, so its
//! network and exec capabilities reach only that pod.

use crate::bindings::probe::{ProbePlugin as Bindings, ProbePluginPre};
use crate::engine::{CompiledComponent, PluginEngine, RoleInfo};
use crate::roles::{fault, Common, PluginSpec};
use crate::state::{PluginState, PodScope};
use crate::{CallError, Capability, LoadError};

pub use crate::bindings::probe::exports::trellis::plugin::probe::{
    ProbeOutcome, ProbeRequest, ProbeResult,
};

pub(crate) const ROLE: RoleInfo = RoleInfo {
    name: "probe",
    export: "trellis:plugin/probe@0.4.0",
    allowed: &[Capability::Log, Capability::PodNetwork, Capability::PodExec],
};

/// A loaded probe plugin.
pub struct ProbePlugin {
    common: Common,
    pre: ProbePluginPre<PluginState>,
}

impl std::fmt::Debug for ProbePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbePlugin")
            .field("name", &self.common.name)
            .finish()
    }
}

impl ProbePlugin {
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
        let (common, pre) = super::prepare(engine, compiled, spec, ROLE, ProbePluginPre::new)?;
        let plugin = Self { common, pre };
        plugin.instance(None).map_err(LoadError::Call)?;
        Ok(plugin)
    }

    fn instance(
        &self,
        pod: Option<PodScope>,
    ) -> Result<(wasmtime::Store<PluginState>, Bindings), CallError> {
        let c = &self.common;
        let mut store = c.store();
        store.data_mut().pod = pod;
        let b = c.guarded(&mut store, |s| self.pre.instantiate(s))?;
        Ok((store, b))
    }

    /// Run one probe against `pod`.
    pub fn check(&self, pod: PodScope, request: &ProbeRequest) -> Result<ProbeResult, CallError> {
        let (mut store, b) = self.instance(Some(pod))?;
        let api = b.trellis_plugin_probe();
        self.common
            .guarded(&mut store, |s| api.call_check(s, request))?
            .map_err(|e| fault(e).into())
    }
}
