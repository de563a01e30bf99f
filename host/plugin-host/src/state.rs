//! What each wasmtime `Store` carries: the plugin's identity, grants, budget
//! limiter, the host services its capabilities reach, and a WASI context only
//! for components that import WASI.

use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::types::{KindRef, ObjectError};
use crate::budget::Limiter;
use crate::Grants;

/// Reads API objects for `objects-read`. The API server provides it (reading
/// through its cache); the test kit provides one backed by fixtures.
pub trait ObjectSource: Send + Sync {
    /// One object's JSON.
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<String, ObjectError>;
    /// Objects of a kind in a namespace ("" = all) matching a label selector ("" = all).
    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<String>, ObjectError>;
}

/// Writes API objects for `objects-write`, under the plugin's identity.
pub trait ObjectSink: Send + Sync {
    /// Create; returns the stored object.
    fn create(&self, kind: &KindRef, namespace: &str, object: &str) -> Result<String, ObjectError>;
    /// Replace; returns the stored object.
    fn update(&self, kind: &KindRef, namespace: &str, object: &str) -> Result<String, ObjectError>;
    /// Replace the status subresource.
    fn update_status(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &str,
    ) -> Result<String, ObjectError>;
    /// JSON merge patch.
    fn merge_patch(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        patch: &str,
    ) -> Result<String, ObjectError>;
    /// Delete with a propagation policy.
    fn delete(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        propagation: &str,
    ) -> Result<(), ObjectError>;
}

/// Output of a command run in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code.
    pub exit_code: i32,
    /// Interleaved stdout and stderr, at most 10 KiB.
    pub output: Vec<u8>,
}

/// Why an exec failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The container is not running.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The timeout passed.
    #[error("timed out")]
    Timeout,
    /// Could not start.
    #[error("{0}")]
    Failed(String),
}

/// Runs commands in a pod's containers for `pod-exec`. The node agent provides it.
pub trait ContainerExec: Send + Sync {
    /// Run `command` in `container` of the pod `namespace/pod`.
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, ExecError>;
}

/// The services behind granted capabilities. A capability that is granted but
/// has no service answers `unavailable` / `failed`.
#[derive(Clone, Default)]
pub struct HostServices {
    /// Behind `objects-read`.
    pub objects: Option<Arc<dyn ObjectSource>>,
    /// Behind `objects-write`.
    pub writer: Option<Arc<dyn ObjectSink>>,
    /// Behind `pod-exec`.
    pub exec: Option<Arc<dyn ContainerExec>>,
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices")
            .field("objects", &self.objects.is_some())
            .field("writer", &self.writer.is_some())
            .field("exec", &self.exec.is_some())
            .finish()
    }
}

/// The one pod a probe plugin may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodScope {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// The pod's IP: the only address `pod-network` connects to.
    pub ip: IpAddr,
    /// The pod's containers: the only ones `pod-exec` runs in.
    pub containers: Vec<String>,
}

pub(crate) struct WasiState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiState {
    /// No preopens, no environment, no arguments, no network, no stdio.
    fn deny_all() -> Self {
        Self {
            ctx: wasmtime_wasi::WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
        }
    }
}

/// Data of one plugin `Store`.
pub(crate) struct PluginState {
    pub plugin: Arc<str>,
    pub grants: Arc<Grants>,
    pub services: HostServices,
    pub limiter: Limiter,
    pub pod: Option<PodScope>,
    pub log_lines: u32,
    wasi: Option<WasiState>,
}

impl PluginState {
    pub fn new(
        plugin: Arc<str>,
        grants: Arc<Grants>,
        services: HostServices,
        memory_cap: usize,
        needs_wasi: bool,
    ) -> Self {
        Self {
            plugin,
            grants,
            services,
            limiter: Limiter::new(memory_cap),
            pod: None,
            log_lines: 0,
            wasi: needs_wasi.then(WasiState::deny_all),
        }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // WASI is linked only for components that import it, and those get a
        // context when their store is made (`needs_wasi`).
        let wasi = self.wasi.get_or_insert_with(WasiState::deny_all);
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut wasi.table,
        }
    }
}
