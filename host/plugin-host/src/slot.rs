//! Atomic hot swap. A slot holds the current version of a loaded plugin; a
//! caller takes an `Arc` of it for the whole call, so a call in flight finishes
//! on the version it started with while new calls see the new one. Only a
//! fully loaded (compiled, linked, configured) plugin can be put in a slot, so
//! a broken version never replaces a running one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// One version of a plugin, stamped with a process-unique generation.
#[derive(Debug)]
pub struct Versioned<P> {
    /// Increases with every version put in any slot.
    pub generation: u64,
    /// The loaded plugin.
    pub plugin: P,
}

/// The current version of one plugin.
#[derive(Debug)]
pub struct PluginSlot<P> {
    current: ArcSwap<Versioned<P>>,
}

impl<P> PluginSlot<P> {
    /// A slot holding `plugin`.
    pub fn new(plugin: P) -> Self {
        Self {
            current: ArcSwap::from_pointee(Self::stamp(plugin)),
        }
    }

    fn stamp(plugin: P) -> Versioned<P> {
        Versioned {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            plugin,
        }
    }

    /// The version new calls use.
    pub fn current(&self) -> Arc<Versioned<P>> {
        self.current.load_full()
    }

    /// The current generation, without taking a reference.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
    }

    /// Replace the plugin; returns the old version (still alive while calls use it).
    pub fn swap(&self, plugin: P) -> Arc<Versioned<P>> {
        self.current.swap(Arc::new(Self::stamp(plugin)))
    }
}
