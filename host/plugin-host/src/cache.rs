//! Precompiled artifacts on disk, keyed by the wasm's sha256 and the engine's
//! compatibility hash, so a component is compiled once per engine configuration
//! and every later load is a cheap `deserialize_file`.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::LoadError;

/// The sha256 of a wasm binary, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub String);

impl Digest {
    /// Digest of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(hex::encode(Sha256::digest(bytes)))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// How a component was obtained, for benchmarks and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Compiled now (and stored if a cache is configured).
    Compiled,
    /// Loaded from a cached artifact.
    Cached,
}

/// An on-disk cache of `.cwasm` artifacts. `None` folder = no caching.
///
/// Artifacts are mmapped when loaded, so a file is never rewritten in place:
/// a new artifact is written to a temporary file and renamed over the old one,
/// and components still using the old mapping keep their inode.
#[derive(Debug, Clone)]
pub(crate) struct ArtifactCache {
    dir: Option<PathBuf>,
    engine_key: String,
}

impl ArtifactCache {
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Result<Self, LoadError> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).map_err(|source| LoadError::Cache {
                path: dir.clone(),
                source,
            })?;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir,
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    fn path_for(&self, dir: &Path, digest: &Digest) -> PathBuf {
        dir.join(format!("{}-{}.cwasm", digest.0, self.engine_key))
    }

    /// Load the artifact for `bytes`, compiling and storing it when absent or
    /// unusable (written by another wasmtime build, truncated, ...).
    pub fn load(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(Component, Provenance), LoadError> {
        let Some(dir) = &self.dir else {
            return Ok((compile(engine, bytes)?, Provenance::Compiled));
        };
        let path = self.path_for(dir, digest);
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine
            // with the same compatibility hash (it is in the name) into a folder
            // owned by this host; wasmtime still checks its header and refuses a
            // mismatching artifact, in which case we recompile below.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok((c, Provenance::Cached)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached artifact");
                }
            }
        }
        let artifact = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Invalid {
                reason: format!("{e:#}"),
            })?;
        // Unique per writer: threads and processes may compile the same
        // component at once; the last rename wins and every winner is whole.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
        let io = |source| LoadError::Cache {
            path: path.clone(),
            source,
        };
        std::fs::write(&tmp, &artifact).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        // SAFETY: produced just above by this engine.
        let component = unsafe { Component::deserialize(engine, &artifact) }.map_err(|e| {
            LoadError::Invalid {
                reason: format!("{e:#}"),
            }
        })?;
        Ok((component, Provenance::Compiled))
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, bytes).map_err(|e| LoadError::Invalid {
        reason: format!("{e:#}"),
    })
}
