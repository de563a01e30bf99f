//! `Plugin` objects (`trellis.dev/v1alpha1`) to components: where the bytes
//! come from (`spec.source.builtin` in a folder of shipped components, or
//! `spec.source.wasm` inline as base64), the optional `sha256` pin, the
//! grants, and a compile cache by digest so a component used by several
//! chains compiles once. Shared by every runtime that loads plugins from the
//! cluster (the scheduler's profiles, the API server's admission chains).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::{CompiledComponent, Digest, Grants, PluginEngine};

/// Where `Plugin` objects' components come from.
#[derive(Clone)]
pub struct PluginSource {
    engine: PluginEngine,
    builtin_dir: Option<PathBuf>,
    compiled: Arc<Mutex<HashMap<String, CompiledComponent>>>,
}

impl PluginSource {
    /// Components through `engine`; `source.builtin: NAME` reads
    /// `builtin_dir/NAME.wasm`.
    pub fn new(engine: PluginEngine, builtin_dir: Option<PathBuf>) -> Self {
        Self {
            engine,
            builtin_dir,
            compiled: Arc::default(),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// The component bytes a `Plugin` object names, checked against its
    /// `sha256` pin.
    pub fn wasm(&self, plugin: &Value) -> Result<Vec<u8>, String> {
        let spec = &plugin["spec"];
        let src = &spec["source"];
        let bytes = if let Some(name) = src["builtin"].as_str() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(format!("source.builtin {name:?} is not a plugin name"));
            }
            let dir = self
                .builtin_dir
                .as_ref()
                .ok_or("this server has no builtin plugin directory")?;
            let path = dir.join(format!("{name}.wasm"));
            std::fs::read(&path).map_err(|e| {
                format!(
                    "builtin plugin {name:?}: cannot read {}: {e}",
                    path.display()
                )
            })?
        } else if let Some(b64) = src["wasm"].as_str() {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("source.wasm is not base64: {e}"))?
        } else {
            return Err("spec.source needs builtin or wasm".into());
        };
        if let Some(pin) = spec["sha256"].as_str() {
            let got = Digest::of(&bytes).to_string();
            let want = pin.strip_prefix("sha256:").unwrap_or(pin);
            if got.strip_prefix("sha256:") != Some(want) {
                return Err(format!(
                    "the component's digest is {got}, not the pinned sha256:{want}"
                ));
            }
        }
        Ok(bytes)
    }

    /// Compile a `Plugin` object's component (once per digest), checking its
    /// role; returns it with the grants and default config the object sets.
    pub fn compile(&self, plugin: &Value, role: &str) -> Result<Resolved, String> {
        let name = plugin["metadata"]["name"].as_str().unwrap_or_default();
        let has = plugin["spec"]["role"].as_str().unwrap_or_default();
        if has != role {
            return Err(format!("plugin {name:?} has role {has:?}, not {role:?}"));
        }
        let wasm = self.wasm(plugin)?;
        let digest = Digest::of(&wasm).to_string();
        let cached = self
            .compiled
            .lock()
            .expect("cache lock")
            .get(&digest)
            .cloned();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = self.engine.compile(&wasm).map_err(|e| e.to_string())?;
                self.compiled
                    .lock()
                    .expect("cache lock")
                    .insert(digest, c.clone());
                c
            }
        };
        Ok(Resolved {
            name: name.to_string(),
            grants: Grants::from_json(&plugin["spec"]["grants"])?,
            config: plugin["spec"]
                .get("config")
                .filter(|c| !c.is_null())
                .cloned(),
            component,
        })
    }
}

/// A compiled `Plugin` object, ready to load with a role's loader.
pub struct Resolved {
    /// The object's name.
    pub name: String,
    /// Its grants.
    pub grants: Grants,
    /// Its default config (`spec.config`), if any.
    pub config: Option<Value>,
    /// The compiled component.
    pub component: CompiledComponent,
}

impl Resolved {
    /// A spec for the loader: `config` if given, else the object's own.
    pub fn spec(&self, config: Option<&Value>, budget: crate::Budget) -> crate::PluginSpec {
        let config = config
            .or(self.config.as_ref())
            .map(Value::to_string)
            .unwrap_or_else(|| "{}".into());
        crate::PluginSpec::new(&self.name)
            .config(config)
            .budget(budget)
            .grants(self.grants.clone())
    }
}

/// The budget a chain entry (`SchedulerProfile` or `AdmissionChain`
/// `spec.plugins[i]`) sets: `deadline` (Go duration) and `memoryLimit`
/// (quantity), each defaulting to [`crate::Budget::default`]. An error names
/// the field, for the caller to prefix with the entry's path.
pub fn entry_budget(entry: &Value) -> Result<crate::Budget, String> {
    let mut budget = crate::Budget::default();
    if let Some(d) = entry["deadline"].as_str() {
        budget.deadline =
            trellis_types::duration::parse(d).map_err(|m| format!("deadline: {m}"))?;
    }
    if let Some(m) = entry["memoryLimit"].as_str() {
        budget.memory_bytes = trellis_types::quantity::parse_bytes(m)
            .map_err(|err| format!("memoryLimit: {err}"))? as usize;
    }
    Ok(budget)
}

/// What an object's spec is: its uid and generation, so that a runtime
/// reloads a plugin or a chain only when its spec changed (status writes do
/// not bump the generation).
pub fn spec_version(obj: &Value) -> String {
    format!(
        "{}/{}",
        obj["metadata"]["uid"].as_str().unwrap_or(""),
        obj["metadata"]["generation"].as_i64().unwrap_or(0)
    )
}

/// Whether an object's `status` already says what `new` would (same
/// `observedGeneration`, same `Ready` status and message), so a runtime
/// skips writing it: its own status writes come back through its watch, and
/// rewriting an unchanged status (only the transition time new) would loop.
pub fn status_unchanged(current: &Value, new: &Value) -> bool {
    current["observedGeneration"] == new["observedGeneration"]
        && current["conditions"][0]["status"] == new["conditions"][0]["status"]
        && current["conditions"][0]["message"] == new["conditions"][0]["message"]
}
