//! Describe a component without compiling it: its role, contract version,
//! exports (with their functions) and imports. Backs `trellis plugin inspect`.

use std::fmt;

use wit_component::DecodedWasm;
use wit_parser::{Resolve, WorldItem, WorldKey};

use crate::engine::ROLES;
use crate::{Capability, Digest, LoadError};

/// One import or export of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Full name, e.g. `trellis:plugin/scheduler@0.4.0`.
    pub name: String,
    /// Its functions, in WIT order.
    pub functions: Vec<String>,
}

/// What a component is, as far as Trellis cares.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// Role: "scheduler", "admission", "probe" or "controller".
    pub role: &'static str,
    /// Contract version of the role's export.
    pub contract: String,
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Size in bytes.
    pub size: usize,
    /// Exports.
    pub exports: Vec<Item>,
    /// Imports.
    pub imports: Vec<Item>,
}

impl Inspection {
    /// Whether it imports any WASI interface (and so gets a deny-all WASI context).
    pub fn uses_wasi(&self) -> bool {
        self.imports.iter().any(|i| i.name.starts_with("wasi:"))
    }

    /// The capabilities it needs granted.
    pub fn capabilities(&self) -> Vec<Capability> {
        self.imports
            .iter()
            .filter_map(|i| Capability::from_import(&i.name))
            .collect()
    }
}

/// Inspect wasm bytes. Errors: [`LoadError::Invalid`] for anything that is not a
/// component, [`LoadError::WrongRole`] for a component exporting no Trellis role.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, LoadError> {
    crate::engine::check_component_header(bytes)?;
    let decoded = wit_component::decode(bytes).map_err(|e| LoadError::Invalid {
        reason: format!("{e:#}"),
    })?;
    let (resolve, world) = match decoded {
        DecodedWasm::Component(resolve, world) => (resolve, world),
        DecodedWasm::WitPackage(..) => {
            return Err(LoadError::Invalid {
                reason: "this is a WIT package, not a component".into(),
            })
        }
    };
    let w = &resolve.worlds[world];
    let exports: Vec<Item> = w
        .exports
        .iter()
        .map(|(k, v)| item(&resolve, k, v))
        .collect();
    let imports: Vec<Item> = w
        .imports
        .iter()
        .filter(|(_, v)| !matches!(v, WorldItem::Type { .. }))
        .map(|(k, v)| item(&resolve, k, v))
        .collect();
    let role = ROLES
        .iter()
        .find(|r| exports.iter().any(|e| e.name == r.export))
        .ok_or_else(|| {
            let trellis: Vec<_> = exports
                .iter()
                .filter(|e| e.name.starts_with("trellis:"))
                .map(|e| e.name.clone())
                .collect();
            LoadError::WrongRole {
                expected: "Trellis",
                missing: "trellis:plugin/{scheduler,admission,probe,reconciler}@0.4.0",
                found: if trellis.is_empty() {
                    format!(
                        ", it exports {}",
                        if exports.is_empty() {
                            "nothing".to_string()
                        } else {
                            exports
                                .iter()
                                .map(|e| e.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    )
                } else {
                    let hint = crate::engine::other_contract(&trellis);
                    format!(
                        ", it exports {}{}",
                        trellis.join(", "),
                        if hint.is_empty() {
                            " (another contract version?)".to_string()
                        } else {
                            hint
                        }
                    )
                },
            }
        })?;
    let contract = role
        .export
        .rsplit_once('@')
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    Ok(Inspection {
        role: role.name,
        contract,
        digest: Digest::of(bytes),
        size: bytes.len(),
        exports,
        imports,
    })
}

fn item(resolve: &Resolve, key: &WorldKey, value: &WorldItem) -> Item {
    match value {
        WorldItem::Interface { id, .. } => Item {
            name: resolve
                .id_of(*id)
                .unwrap_or_else(|| resolve.name_world_key(key)),
            functions: resolve.interfaces[*id].functions.keys().cloned().collect(),
        },
        WorldItem::Function(f) => Item {
            name: f.name.clone(),
            functions: vec![f.name.clone()],
        },
        WorldItem::Type { .. } => Item {
            name: resolve.name_world_key(key),
            functions: Vec::new(),
        },
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "role:      {}", self.role)?;
        writeln!(f, "contract:  trellis:plugin@{}", self.contract)?;
        writeln!(f, "digest:    {}", self.digest)?;
        writeln!(f, "size:      {} bytes", self.size)?;
        writeln!(f, "exports:")?;
        for e in &self.exports {
            writeln!(f, "  {} ({})", e.name, e.functions.join(", "))?;
        }
        writeln!(f, "imports:")?;
        if self.imports.is_empty() {
            writeln!(f, "  (none)")?;
        }
        for i in &self.imports {
            let note = match Capability::from_import(&i.name) {
                Some(_) => "  [capability: must be granted]",
                None if i.name.starts_with("wasi:") => "  [WASI: linked with a deny-all context]",
                None => "",
            };
            writeln!(f, "  {}{}", i.name, note)?;
        }
        Ok(())
    }
}
