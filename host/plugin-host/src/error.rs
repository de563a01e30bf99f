//! Errors of loading and calling plugins.

use std::time::Duration;

/// Why a component could not be loaded. A component that fails to load never
/// replaces a running one.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The bytes are not a WebAssembly component (a core module, garbage, or a
    /// component wasmtime refuses).
    #[error("not a valid WebAssembly component: {reason}")]
    Invalid {
        /// What wasmtime or the decoder said.
        reason: String,
    },
    /// The component does not export what its role needs.
    #[error("component is not a {expected} plugin: it does not export `{missing}`{found}")]
    WrongRole {
        /// The role it was loaded as.
        expected: &'static str,
        /// The export that is missing.
        missing: &'static str,
        /// What it exports instead, already formatted (", it exports ...").
        found: String,
    },
    /// The component imports a capability its grants do not include.
    #[error("component imports `{import}`, which is not granted to this plugin{hint}")]
    NotGranted {
        /// The import's full name.
        import: String,
        /// A hint on how to grant it, or that the role cannot have it.
        hint: String,
    },
    /// The grants name a capability the role may never have.
    #[error("a {role} plugin cannot be granted `{capability}`")]
    GrantNotAllowed {
        /// The role.
        role: &'static str,
        /// The capability.
        capability: &'static str,
    },
    /// Linking or instantiating failed (for example an import the host does not provide).
    #[error("component cannot be instantiated: {reason}")]
    Link {
        /// What wasmtime said.
        reason: String,
    },
    /// The plugin's `configure` or `info` call failed during loading.
    #[error("plugin failed during load: {0}")]
    Call(#[source] CallError),
    /// Reading or writing the artifact cache failed.
    #[error("artifact cache at {path}: {source}")]
    Cache {
        /// The file or folder.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The engine could not be created.
    #[error("cannot create the wasm engine: {reason}")]
    Engine {
        /// What wasmtime said.
        reason: String,
    },
}

/// Why one call into a plugin failed. The chain decides what to do with it
/// through the plugin's failure policy; the host itself is never harmed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The call ran past its wall-clock deadline and was interrupted.
    #[error("plugin exceeded its deadline of {deadline:?}")]
    DeadlineExceeded {
        /// The budget it had.
        deadline: Duration,
    },
    /// The plugin tried to grow its memory past its cap and was stopped.
    #[error("plugin exceeded its memory cap of {cap_bytes} bytes")]
    MemoryExceeded {
        /// The cap in bytes.
        cap_bytes: usize,
    },
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access).
    #[error("plugin trapped: {reason}")]
    Trapped {
        /// The trap and, when known, where.
        reason: String,
    },
    /// The plugin returned one of its expected errors.
    #[error("plugin returned an error: {0}")]
    Plugin(#[from] PluginFault),
    /// The plugin answered something the contract forbids (for example a score
    /// list of the wrong length).
    #[error("plugin broke its contract: {reason}")]
    Contract {
        /// What was wrong.
        reason: String,
    },
    /// A fresh instance could not be made (instantiation or its `configure` failed).
    #[error("cannot start a plugin instance: {reason}")]
    Instantiate {
        /// What failed.
        reason: String,
    },
}

impl CallError {
    /// True when the instance that made this call must be discarded: after a
    /// trap a component instance cannot be entered again.
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, CallError::Plugin(_) | CallError::Contract { .. })
    }
}

/// The kinds of `plugin-error` a plugin may return (the WIT variant of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `invalid-config`.
    InvalidConfig,
    /// `invalid-input`.
    InvalidInput,
    /// `access-denied`.
    AccessDenied,
    /// `internal`.
    Internal,
}

/// An expected error returned by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct PluginFault {
    /// Which variant.
    pub kind: FaultKind,
    /// The plugin's message.
    pub message: String,
}
