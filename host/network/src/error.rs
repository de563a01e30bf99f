//! Errors of the pod network.

use std::io;
use std::path::PathBuf;

/// What went wrong while opening the pod network or setting a pod up or down.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The [`NetworkConfig`](crate::NetworkConfig) cannot be used as given.
    #[error("invalid network config: {reason}")]
    InvalidConfig {
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The pod UID cannot name files and interfaces (empty, too long, or with
    /// characters other than ASCII letters, digits, `-`, `_` and `.`).
    #[error("invalid pod uid {uid:?}: use 1 to 128 ASCII letters, digits, '-', '_' or '.'")]
    InvalidPodUid {
        /// The rejected UID.
        uid: String,
    },

    /// Every pod address of the pod CIDR is allocated.
    #[error("no free address in pod CIDR {pod_cidr}: all {capacity} pod addresses are in use; tear down a pod or give the node a larger CIDR")]
    AddressesExhausted {
        /// The node's pod CIDR.
        pod_cidr: String,
        /// How many pod addresses the CIDR has (its hosts minus the gateway).
        capacity: u32,
    },

    /// Another interface already routes (part of) the pod CIDR, so pod
    /// traffic would not reach the bridge.
    #[error("pod CIDR {pod_cidr} overlaps route {route} on interface {interface}; pick a CIDR no other interface of this node uses")]
    CidrConflict {
        /// The node's pod CIDR.
        pod_cidr: String,
        /// The conflicting route, as `address/prefix`.
        route: String,
        /// The interface the conflicting route points at.
        interface: String,
    },

    /// The persisted state was written for another bridge or pod CIDR and
    /// still holds pods.
    #[error("state in {state_dir} belongs to bridge {state_bridge} with pod CIDR {state_cidr} and still holds {pods} pod(s); tear them down with the old config or use another state_dir")]
    StateMismatch {
        /// The state directory.
        state_dir: PathBuf,
        /// The bridge recorded in the state.
        state_bridge: String,
        /// The pod CIDR recorded in the state.
        state_cidr: String,
        /// How many pods the state still holds.
        pods: usize,
    },

    /// The persisted state cannot be parsed.
    #[error("corrupt network state file {path}; it can be removed only if no pod network namespace of this node is in use")]
    StateCorrupt {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// A file or directory of the state could not be read, written or locked.
    #[error("{action} {path}")]
    Io {
        /// What was being done, e.g. `write state file`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A network namespace could not be created, entered, mounted or removed.
    #[error("{action} network namespace {path}")]
    Namespace {
        /// What was being done, e.g. `create`.
        action: &'static str,
        /// The namespace's file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The kernel refused a netlink request (for example `EPERM` without
    /// `CAP_NET_ADMIN`).
    #[error("netlink: {action}")]
    Netlink {
        /// The request, e.g. `create veth trv0a1b2c3d4e5f`.
        action: String,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// An interface exists with the bridge's name but is not a bridge.
    #[error("interface {name} exists but is not a bridge (kind {kind}); delete it or configure another bridge name")]
    NotABridge {
        /// The interface name.
        name: String,
        /// The interface's kind as the kernel reports it.
        kind: String,
    },
}

impl NetworkError {
    pub(crate) fn netlink(action: impl Into<String>, source: io::Error) -> Self {
        NetworkError::Netlink {
            action: action.into(),
            source,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetworkError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn namespace(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> Self {
        NetworkError::Namespace {
            action,
            path: path.into(),
            source,
        }
    }
}
