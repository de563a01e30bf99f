//! The Trellis guest SDK: write a scheduler plugin, an admission plugin, a
//! probe or a controller in Rust, build it to a Wasm component (`cargo xtask
//! plugins`) and load it into Trellis.
//!
//! Each role is one trait and one export macro:
//!
//! ```ignore
//! use trellis_sdk::scheduler::*;
//!
//! #[derive(Default)]
//! struct OnlyLinux { linux: NodeTable<bool> }
//!
//! impl SchedulerPlugin for OnlyLinux {
//!     fn info() -> PluginInfo { plugin_info("OnlyLinux", "0.1.0", Phases::FILTER).nodes_only() }
//!     fn upsert_node(&mut self, id: NodeId, node: Node) -> Result<(), PluginError> {
//!         let linux = label_value(&node.labels, "kubernetes.io/os") == Some("linux");
//!         self.linux.insert(id, linux);
//!         Ok(())
//!     }
//!     fn remove_node(&mut self, id: NodeId) { self.linux.remove(id); }
//!     fn filter(&mut self, _pod: &Pod, candidates: &[NodeId], max: u32) -> Result<FilterResult, PluginError> {
//!         self.linux.filter(candidates, max, |&linux| (!linux).then_some(&NOT_LINUX))
//!     }
//! }
//! const NOT_LINUX: Refusal = Refusal::unresolvable("node(s) are not Linux");
//! trellis_sdk::export_scheduler!(OnlyLinux);
//! ```
//!
//! The same crate compiles natively too (the export macros expand to nothing
//! outside wasm), so plugin logic can be unit-tested and benchmarked with
//! plain `cargo test`.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings;

pub mod admission;
pub mod adoption;
pub mod config;
pub mod controller;
pub use trellis_types::duration;
pub mod log;
pub mod objects;
pub mod placement;
pub mod probe;
pub mod resources;
pub use trellis_types::quantity;
pub mod scheduler;
pub mod selectors;
pub mod services;
pub mod taints;

pub use bindings::types::{
    KindRef, Label, LabelSelector, LogLevel, NodeAffinity, NodeImage, NodeSelectorTerm,
    ObjectError, PluginError, PodAffinity, PodAffinityTerm, PreferredSchedulingTerm, Requirement,
    Resources, SelectorOperator, Taint, TaintEffect, Toleration, TolerationOperator,
    TopologySpreadConstraint, UnsatisfiableAction, WeightedPodAffinityTerm,
};

/// The value of label `key`, if present.
pub fn label_value<'a>(labels: &'a [Label], key: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.as_str())
}

/// A single-threaded cell for a plugin's state, used by the export macros.
/// Wasm guests run one call at a time and a component instance cannot be
/// re-entered, so a `&mut` handed out here is never aliased.
#[doc(hidden)]
pub struct __State<T>(core::cell::UnsafeCell<Option<T>>);

// SAFETY: see the type's documentation; the cell is only touched by the
// single thread of a wasm instance.
unsafe impl<T> Sync for __State<T> {}

impl<T: Default> __State<T> {
    #[doc(hidden)]
    pub const fn new() -> Self {
        Self(core::cell::UnsafeCell::new(None))
    }

    #[doc(hidden)]
    #[allow(clippy::mut_from_ref)]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: single-threaded and not re-entrant (see above).
        let slot = unsafe { &mut *self.0.get() };
        f(slot.get_or_insert_with(T::default))
    }
}

impl<T: Default> Default for __State<T> {
    fn default() -> Self {
        Self::new()
    }
}
