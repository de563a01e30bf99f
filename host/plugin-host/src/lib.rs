//! The Trellis plugin host: one wasmtime engine, components compiled off the
//! request path and cached on disk, typed loaders per role, per-call budgets
//! (deadline and memory cap), deny-by-default capabilities and atomic hot swap.
//!
//! ```no_run
//! use std::sync::Arc;
//! use trellis_plugin_host::{EngineConfig, PluginEngine, PluginSlot, PluginSpec};
//! use trellis_plugin_host::scheduler::{SchedulerPlugin, SchedulerSession};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = PluginEngine::new(EngineConfig::default())?;
//! let wasm = std::fs::read("build/plugins/node-name.wasm")?;
//! let plugin = SchedulerPlugin::load(&engine, &wasm, PluginSpec::new("NodeName"))?;
//! let slot = Arc::new(PluginSlot::new(plugin));
//! let mut session = SchedulerSession::new(slot.clone()); // one per worker thread
//! # let _ = &mut session;
//! // session.upsert_node(..), session.filter(..), slot.swap(new_version) ...
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod bindings;
mod budget;
mod cache;
mod engine;
mod error;
mod grants;
mod host;
pub mod inspect;
mod roles;
mod slot;
mod source;
mod state;

pub use budget::Budget;
pub use cache::{Digest, Provenance};
pub use engine::{CompiledComponent, EngineConfig, Instances, PluginEngine};
pub use error::{CallError, FaultKind, LoadError, PluginFault};
pub use grants::{Capability, Grants, KindGrant, CONTRACT_VERSION};
pub use roles::PluginSpec;
pub use slot::{PluginSlot, Versioned};
pub use source::{entry_budget, spec_version, status_unchanged, PluginSource, Resolved};
pub use state::{
    ContainerExec, ExecError, ExecOutput, HostServices, ObjectSink, ObjectSource, PodScope,
};

/// Scheduler plugins.
pub mod scheduler {
    pub use crate::roles::scheduler::*;
    /// Kubernetes Node and Pod JSON to the contract's records.
    pub mod k8s {
        pub use crate::roles::k8s::*;
    }
}
/// Admission plugins.
pub mod admission {
    pub use crate::roles::admission::*;
}
/// Probe plugins.
pub mod probe {
    pub use crate::roles::probe::*;
}
/// Controllers.
pub mod controller {
    pub use crate::roles::controller::*;
}
/// Shared WIT records and errors of the host capabilities.
pub mod wit {
    pub use crate::bindings::types::{KindRef, LogLevel, ObjectError, PluginError};
}
