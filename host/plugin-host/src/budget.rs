//! Per-call budgets: a wall-clock deadline enforced by epoch interruption and a
//! memory cap enforced by a [`wasmtime::ResourceLimiter`].

use std::time::Duration;

/// What one plugin call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Wall-clock time per call. Default 100 ms.
    pub deadline: Duration,
    /// Linear memory (all memories of the instance together), in bytes.
    /// Default 64 MiB.
    pub memory_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            deadline: Duration::from_millis(100),
            memory_bytes: 64 << 20,
        }
    }
}

/// The error a refused `memory.grow` raises, so that the trap can be told apart
/// from any other and reported as [`crate::CallError::MemoryExceeded`].
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap} bytes reached (wanted {desired})")]
pub(crate) struct MemoryCapReached {
    pub cap: usize,
    pub desired: usize,
}

/// Caps linear memory and tables of one store. Going past the memory cap traps
/// at once with [`MemoryCapReached`] rather than returning -1 from
/// `memory.grow`: guests that check for -1 would only abort later with a less
/// useful trap.
pub(crate) struct Limiter {
    memory_cap: usize,
    used: usize,
}

impl Limiter {
    pub fn new(memory_cap: usize) -> Self {
        Self {
            memory_cap,
            used: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used - current.min(self.used) + desired;
        if total > self.memory_cap {
            return Err(MemoryCapReached {
                cap: self.memory_cap,
                desired: total,
            }
            .into());
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        16
    }
}
