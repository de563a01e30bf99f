//! Trellis' container runtime on one node, below the Kubernetes API: it knows
//! containers, not pods' specs.
//!
//! - [`bundle`] turns a [`bundle::ContainerConfig`] (what the agent derived
//!   from a pod) into an OCI bundle (`config.json`).
//! - [`shim`] is the per-pod shim process and its client. The shim is a small
//!   single-threaded `trellis shim` process that makes every libcontainer call
//!   (libcontainer forks with `clone3`, unsafe from a threaded program), stays
//!   the containers' parent, reaps them, records exit codes and OOM kills, and
//!   writes their output to CRI-format log files. The agent talks to it over a
//!   Unix socket and can restart without touching a running container.
//! - [`log`] is the CRI log line format shared by the shim and the log reader.

pub mod bundle;
pub mod log;
pub mod shim;
