//! One wasmtime engine per host, its epoch ticker, compiling through the
//! artifact cache, and the role-independent half of loading: checking exports
//! and imports against the role and the grants, then linking only what was
//! granted.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, Store, Trap};

use crate::budget::MemoryCapReached;
use crate::cache::{ArtifactCache, Digest, Provenance};
use crate::state::{HostServices, PluginState};
use crate::{bindings, Budget, CallError, Capability, Grants, LoadError};

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where precompiled artifacts are kept; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// Epoch tick: the granularity of deadlines. Default 1 ms.
    pub epoch_tick: Duration,
    /// Where instances get their memories and tables.
    pub instances: Instances,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(1),
            instances: Instances::default(),
        }
    }
}

/// How the engine allocates instances.
///
/// Admission reviews and reconciles each get a fresh instance, so making one
/// is on the request path. Mapping a fresh linear memory per instance (and
/// unmapping it after, with a TLB shootdown on every core) cost more than
/// the plugin's own work; a pool of slots reserved once and reused, each
/// keeping its copy-on-write image mapped and its recently used pages
/// resident (reset by `memset`), does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    /// A fixed pool of slots, reserved as address space, not memory.
    Pooled {
        /// Component instances alive at once across every plugin of the
        /// engine; an instantiation past it fails with a clear error.
        instances: u32,
    },
    /// Map every instance's memory when it is made, unmap it when dropped.
    OnDemand,
}

impl Default for Instances {
    fn default() -> Self {
        Self::Pooled { instances: 1000 }
    }
}

/// Memory kept resident in a pooled slot between instances. Pages a guest
/// touched below this are reset with `memset` (found by the kernel's
/// pagemap scan where it has one) instead of being unmapped and faulted in
/// again by the next instance.
const KEEP_RESIDENT: usize = 2 << 20;

fn pooling(instances: u32) -> wasmtime::PoolingAllocationConfig {
    let mut p = wasmtime::PoolingAllocationConfig::new();
    p.total_component_instances(instances)
        // A component holds a few core instances (the guest, its adapters);
        // interpreters in a component (Python, JS) hold more.
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(2))
        .max_memories_per_component(16)
        .max_tables_per_component(16)
        // An interpreter's function table (CPython's) is large.
        .table_elements(200_000)
        .max_core_instance_size(8 << 20)
        .max_component_instance_size(8 << 20)
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto);
    p
}

struct Inner {
    engine: Engine,
    cache: ArtifactCache,
    tick: Duration,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The host's wasm engine. Cheap to clone; every plugin of every role shares it.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("tick", &self.inner.tick)
            .finish()
    }
}

/// A compiled component and what it imports and exports.
#[derive(Clone)]
pub struct CompiledComponent {
    pub(crate) component: Component,
    /// sha256 of the wasm bytes.
    pub digest: Digest,
    /// Whether it came from the artifact cache.
    pub provenance: Provenance,
    /// Full names of its imports.
    pub imports: Vec<String>,
    /// Full names of its exports.
    pub exports: Vec<String>,
}

impl std::fmt::Debug for CompiledComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledComponent")
            .field("digest", &self.digest)
            .field("provenance", &self.provenance)
            .field("imports", &self.imports)
            .field("exports", &self.exports)
            .finish()
    }
}

/// What the host must know of a role to load a component as one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RoleInfo {
    pub name: &'static str,
    pub export: &'static str,
    pub allowed: &'static [Capability],
}

/// Every role, for telling a user what a component actually is.
pub(crate) const ROLES: [RoleInfo; 4] = [
    crate::roles::scheduler::ROLE,
    crate::roles::admission::ROLE,
    crate::roles::probe::ROLE,
    crate::roles::controller::ROLE,
];

const TYPES_IMPORT: &str = "trellis:plugin/types@0.4.0";

/// Everything needed to make instances of one loaded plugin.
pub(crate) struct Linked {
    pub pre: InstancePre<PluginState>,
    pub needs_wasi: bool,
}

impl PluginEngine {
    /// Make the engine and start its epoch ticker.
    pub fn new(config: EngineConfig) -> Result<Self, LoadError> {
        let mut wc = Config::new();
        wc.wasm_component_model(true);
        wc.epoch_interruption(true);
        // Keep guest recursion well inside the host thread's stack.
        wc.max_wasm_stack(1 << 20);
        // For profiling plugins with `perf`: guest functions get names in
        // /tmp/perf-PID.map.
        if std::env::var_os("TRELLIS_WASM_PERFMAP").is_some() {
            wc.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if let Instances::Pooled { instances } = config.instances {
            wc.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pooling(
                instances,
            )));
        }
        let engine = Engine::new(&wc).map_err(|e| LoadError::Engine {
            reason: format!("{e:#}"),
        })?;
        let cache = ArtifactCache::new(&engine, config.cache_dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let tick = config.epoch_tick.max(Duration::from_micros(100));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Engine {
                    reason: format!("cannot start the epoch thread: {e}"),
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                cache,
                tick,
                stop,
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compile (or load from the cache) a component. CPU-heavy for a large
    /// component on a cache miss: call it off any request path.
    pub fn compile(&self, wasm: &[u8]) -> Result<CompiledComponent, LoadError> {
        check_component_header(wasm)?;
        let digest = Digest::of(wasm);
        let (component, provenance) = self.inner.cache.load(self.engine(), wasm, &digest)?;
        let ty = component.component_type();
        let imports = ty
            .imports(self.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        let exports = ty
            .exports(self.engine())
            .map(|(n, _)| n.to_string())
            .collect();
        Ok(CompiledComponent {
            component,
            digest,
            provenance,
            imports,
            exports,
        })
    }

    /// Check a compiled component against a role and grants, then link exactly
    /// the granted capabilities (and WASI, deny-all, if it imports WASI).
    pub(crate) fn link(
        &self,
        compiled: &CompiledComponent,
        role: RoleInfo,
        grants: &Grants,
    ) -> Result<Linked, LoadError> {
        if !compiled.exports.iter().any(|e| e == role.export) {
            let found = match ROLES
                .iter()
                .find(|r| compiled.exports.iter().any(|e| e == r.export))
            {
                Some(r) => format!(", it is a {} plugin (exports `{}`)", r.name, r.export),
                None if compiled.exports.is_empty() => ", it exports nothing".to_string(),
                None => format!(
                    ", it exports {}{}",
                    compiled.exports.join(", "),
                    other_contract(&compiled.exports)
                ),
            };
            return Err(LoadError::WrongRole {
                expected: role.name,
                missing: role.export,
                found,
            });
        }
        for cap in &grants.capabilities {
            if !role.allowed.contains(cap) {
                return Err(LoadError::GrantNotAllowed {
                    role: role.name,
                    capability: cap.interface(),
                });
            }
        }
        let mut needs_wasi = false;
        for import in &compiled.imports {
            if import.starts_with("wasi:") {
                needs_wasi = true;
            } else if import == TYPES_IMPORT {
            } else if let Some(cap) = Capability::from_import(import) {
                if !grants.has(cap) {
                    let hint = if role.allowed.contains(&cap) {
                        format!(
                            "; grant `{}` in the plugin's grants to load it",
                            cap.interface()
                        )
                    } else {
                        format!("; a {} plugin can never be granted it", role.name)
                    };
                    return Err(LoadError::NotGranted {
                        import: import.clone(),
                        hint,
                    });
                }
            } else {
                return Err(LoadError::NotGranted {
                    import: import.clone(),
                    hint: "; the host provides no such interface".into(),
                });
            }
        }
        let mut linker = Linker::<PluginState>::new(self.engine());
        let link_err = |e: wasmtime::Error| LoadError::Link {
            reason: format!("{e:#}"),
        };
        bindings::types::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(link_err)?;
        for cap in &grants.capabilities {
            match cap {
                Capability::Log => {
                    bindings::log::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                }
                Capability::ObjectsRead => {
                    bindings::objects_read::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                }
                Capability::ObjectsWrite => {
                    bindings::objects_write::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                }
                Capability::PodNetwork => {
                    bindings::pod_network::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                }
                Capability::PodExec => {
                    bindings::pod_exec::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
                }
            }
            .map_err(link_err)?;
        }
        if needs_wasi {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        }
        let pre = linker
            .instantiate_pre(&compiled.component)
            .map_err(link_err)?;
        Ok(Linked { pre, needs_wasi })
    }

    /// A new store for one plugin instance, with its memory cap and WASI context.
    pub(crate) fn store(
        &self,
        plugin: &Arc<str>,
        grants: &Arc<Grants>,
        services: &HostServices,
        budget: &Budget,
        needs_wasi: bool,
    ) -> Store<PluginState> {
        let state = PluginState::new(
            plugin.clone(),
            grants.clone(),
            services.clone(),
            budget.memory_bytes,
            needs_wasi,
        );
        let mut store = Store::new(self.engine(), state);
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
    }

    /// Run `f` (one call into the guest, or an instantiation) under `budget`'s
    /// deadline, turning traps into typed errors.
    pub(crate) fn guarded<R>(
        &self,
        store: &mut Store<PluginState>,
        budget: &Budget,
        f: impl FnOnce(&mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let tick = self.inner.tick.as_nanos().max(1);
        // +1: the current tick may be about to end.
        let ticks = budget.deadline.as_nanos().div_ceil(tick) as u64 + 1;
        store.set_epoch_deadline(ticks);
        store.data_mut().log_lines = 0;
        // No clock read here: a call is a few hundred nanoseconds, and the
        // deadline is counted in epoch ticks anyway.
        f(store).map_err(|e| classify(e, budget))
    }
}

/// For a component built against another version of the contract, a hint
/// that says so (empty otherwise).
pub(crate) fn other_contract(exports: &[String]) -> String {
    let version = exports.iter().find_map(|e| {
        let (interface, version) = e.strip_prefix("trellis:plugin/")?.rsplit_once('@')?;
        (!interface.is_empty() && version != crate::grants::CONTRACT_VERSION).then_some(version)
    });
    match version {
        Some(v) => format!(
            " (built for contract trellis:plugin@{v}; this host speaks {}: rebuild it \
             against wit/trellis-plugin-{})",
            crate::grants::CONTRACT_VERSION,
            crate::grants::CONTRACT_VERSION
        ),
        None => String::new(),
    }
}

/// Refuse what is clearly not a component before any decoding: wrong magic,
/// or a core module (version 1, layer 0) rather than a component (layer 1).
pub(crate) fn check_component_header(wasm: &[u8]) -> Result<(), LoadError> {
    if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
        return Err(LoadError::Invalid {
            reason: "the file does not start with the wasm magic bytes".into(),
        });
    }
    if wasm[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::Invalid {
            reason: "this is a core wasm module, not a component; encode it with \
                     `wit-component` (cargo xtask plugins does) first"
                .into(),
        });
    }
    Ok(())
}

fn classify(e: wasmtime::Error, budget: &Budget) -> CallError {
    if let Some(full) = e
        .chain()
        .find_map(|c| c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>())
    {
        return CallError::Instantiate {
            reason: format!(
                "the engine's instance pool is full ({full}): every slot holds a live plugin instance; try again when calls finish"
            ),
        };
    }
    if e.chain()
        .any(|c| c.downcast_ref::<MemoryCapReached>().is_some())
    {
        return CallError::MemoryExceeded {
            cap_bytes: budget.memory_bytes,
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => {
            tracing::debug!(deadline = ?budget.deadline, "plugin call interrupted at its deadline");
            CallError::DeadlineExceeded {
                deadline: budget.deadline,
            }
        }
        _ => CallError::Trapped {
            reason: format!("{e:#}"),
        },
    }
}
