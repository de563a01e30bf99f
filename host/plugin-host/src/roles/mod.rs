//! One module per plugin role: its WIT world, typed loader and typed calls.

pub mod admission;
pub mod controller;
pub mod k8s;
pub mod probe;
pub mod scheduler;

use std::sync::Arc;

use wasmtime::Store;

use crate::cache::Digest;
use crate::engine::PluginEngine;
use crate::state::{HostServices, PluginState};
use crate::{Budget, Grants};

/// How to load one plugin: its name, configuration, budget, grants and the
/// services its capabilities reach.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Name used in logs, errors and metrics.
    pub name: String,
    /// Configuration handed to the plugin's `configure` (JSON; `{}` for none).
    pub config: String,
    /// Per-call deadline and memory cap.
    pub budget: Budget,
    /// Capabilities and kinds granted.
    pub grants: Grants,
    /// Services behind the granted capabilities.
    pub services: HostServices,
}

impl PluginSpec {
    /// A spec with no config, the default budget and no grants.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            config: "{}".into(),
            budget: Budget::default(),
            grants: Grants::none(),
            services: HostServices::default(),
        }
    }

    /// Set the configuration JSON.
    pub fn config(mut self, config: impl Into<String>) -> Self {
        self.config = config.into();
        self
    }

    /// Set the budget.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Set the grants.
    pub fn grants(mut self, grants: Grants) -> Self {
        self.grants = grants;
        self
    }

    /// Set the host services.
    pub fn services(mut self, services: HostServices) -> Self {
        self.services = services;
        self
    }
}

/// What every loaded plugin keeps, whatever its role.
#[derive(Clone)]
pub(crate) struct Common {
    pub engine: PluginEngine,
    pub name: Arc<str>,
    pub config: String,
    pub budget: Budget,
    pub grants: Arc<Grants>,
    pub services: HostServices,
    pub digest: Digest,
    pub needs_wasi: bool,
}

impl Common {
    pub fn new(engine: &PluginEngine, spec: PluginSpec, digest: Digest, needs_wasi: bool) -> Self {
        Self {
            engine: engine.clone(),
            name: spec.name.into(),
            config: spec.config,
            budget: spec.budget,
            grants: Arc::new(spec.grants),
            services: spec.services,
            digest,
            needs_wasi,
        }
    }

    pub fn store(&self) -> Store<PluginState> {
        self.engine.store(
            &self.name,
            &self.grants,
            &self.services,
            &self.budget,
            self.needs_wasi,
        )
    }

    pub fn guarded<R>(
        &self,
        store: &mut Store<PluginState>,
        f: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, crate::CallError> {
        self.engine.guarded(store, &self.budget, f)
    }
}

/// Check a compiled component against `role` and the spec's grants, link what
/// was granted, and wrap the result in the world's typed `*Pre`.
pub(crate) fn prepare<P>(
    engine: &PluginEngine,
    compiled: &crate::CompiledComponent,
    spec: PluginSpec,
    role: crate::engine::RoleInfo,
    typed: impl FnOnce(wasmtime::component::InstancePre<PluginState>) -> wasmtime::Result<P>,
) -> Result<(Common, P), crate::LoadError> {
    let linked = engine.link(compiled, role, &spec.grants)?;
    let pre = typed(linked.pre).map_err(|e| crate::LoadError::Link {
        reason: format!("{e:#}"),
    })?;
    Ok((
        Common::new(engine, spec, compiled.digest.clone(), linked.needs_wasi),
        pre,
    ))
}

/// Turn a WIT `plugin-error` into the host's typed fault.
pub(crate) fn fault(e: crate::bindings::types::PluginError) -> crate::PluginFault {
    use crate::bindings::types::PluginError as E;
    use crate::FaultKind as K;
    let (kind, message) = match e {
        E::InvalidConfig(m) => (K::InvalidConfig, m),
        E::InvalidInput(m) => (K::InvalidInput, m),
        E::AccessDenied(m) => (K::AccessDenied, m),
        E::Internal(m) => (K::Internal, m),
    };
    crate::PluginFault { kind, message }
}
