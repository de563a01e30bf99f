//! Trellis' bottom layer: types and rules with no IO and no async, shared by the
//! host crates and by Wasm guests (the SDK re-exports it), so both sides read a
//! Kubernetes quantity the same way, and the ResourceQuota admission plugin and
//! the quota controller count usage by the same rules ([`quota`]).
//!
//! ```
//! use trellis_types::quantity::{parse_bytes, parse_cpu_milli};
//! assert_eq!(parse_cpu_milli("250m").unwrap(), 250);
//! assert_eq!(parse_bytes("1Gi").unwrap(), 1 << 30);
//! ```

#![warn(missing_docs)]

pub mod duration;
pub mod mountinfo;
pub mod owners;
pub mod quantity;
pub mod quota;
pub mod time;
