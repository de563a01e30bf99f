//! The per-pod shim: one small single-threaded process per pod (`trellis shim
//! --dir POD_DIR`) that makes the libcontainer calls, stays the parent of the
//! pod's containers, reaps them, records how they ended and writes their
//! output to CRI log files. The agent talks to it over `POD_DIR/shim.sock`,
//! one JSON request and one JSON answer per connection, so an agent restart
//! touches no container: the new agent reconnects and reads [`ContainerState`]
//! back.
//!
//! The agent starts shims through a factory process that forks them
//! (`factory.rs`); `trellis-shim --dir DIR` starts one directly.
//!
//! Before its first container the shim takes a mount namespace of its own
//! (see `mounts.rs`), where it mounts its pod's root filesystems.
//!
//! Files in the pod directory: `shim.sock`, `shim.pid`, `shim.log` (the shim's
//! own messages), `run/` (libcontainer's state), `shim-state.json` (what the
//! shim knows about each container, rewritten on every change).

mod client;
mod factory;
mod mounts;
mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use client::{ExecResult, ShimClient, ShimError};
pub use factory::{run_factory, ShimFactory};
pub use server::run as run_shim;

/// Socket file name inside the pod directory.
pub const SOCKET: &str = "shim.sock";

/// A request to the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Request {
    /// Is the shim alive? Answers [`Response::Ok`].
    Ping,
    /// Create and start a container from `bundle` (its `config.json`),
    /// writing its output to `log` (created, appended to).
    Run {
        /// Container id, unique in the pod (e.g. `web.0`).
        id: String,
        /// The OCI bundle directory.
        bundle: PathBuf,
        /// The CRI log file.
        log: PathBuf,
        /// A container directory the image store staged
        /// (`ImageStore::stage_rootfs`): the shim mounts its root filesystem
        /// (the bundle's root) in its own mount namespace, and unmounts it
        /// with the container. None: the bundle's root is ready as it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rootfs: Option<PathBuf>,
    },
    /// Send `signal` (a number) to the container's init process.
    Kill {
        /// Container id.
        id: String,
        /// Signal number (15 = SIGTERM, 9 = SIGKILL).
        signal: i32,
    },
    /// Forget an exited container and remove its cgroup and state; a running
    /// one is killed first.
    Delete {
        /// Container id.
        id: String,
    },
    /// Every container the shim knows.
    State,
    /// Run a command in a running container and wait for it.
    Exec {
        /// Container id.
        id: String,
        /// Command and arguments.
        args: Vec<String>,
        /// Bytes for the command's stdin (closed after).
        #[serde(default)]
        stdin: Vec<u8>,
        /// Killed after this long.
        timeout_ms: u64,
    },
    /// Exit once no container runs (the pod is gone).
    Shutdown,
}

/// The shim's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Response {
    /// Done.
    Ok,
    /// The container runs.
    Started {
        /// Its state right after start.
        state: ContainerState,
    },
    /// Every container.
    State {
        /// In the order they were created.
        containers: Vec<ContainerState>,
    },
    /// An exec finished.
    Exec {
        /// What it wrote (bounded to [`EXEC_OUTPUT_LIMIT`] each).
        stdout: Vec<u8>,
        /// Standard error.
        stderr: Vec<u8>,
        /// Exit code (128 + signal when killed).
        exit_code: i32,
        /// It ran out of time and was killed.
        timed_out: bool,
    },
    /// The request failed.
    Error {
        /// Why, for a person.
        message: String,
    },
}

/// Output kept per exec stream.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Its process runs.
    Running,
    /// It ended.
    Exited,
}

/// What the shim knows about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Init process id (in the node's pid namespace).
    pub pid: i32,
    /// Running or exited.
    pub status: Status,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
    /// Exit code; 128 + signal when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// The log file.
    pub log: PathBuf,
}
