//! Capabilities are WIT imports, denied by default.
//!
//! A plugin's [`Grants`] say which host interfaces are linked for it at all
//! (checked against the component's imports when it loads) and, inside each
//! host function, which kinds it may read or write.

use std::collections::BTreeSet;

/// The contract's package version, as it appears in import and export names.
pub const CONTRACT_VERSION: &str = "0.4.0";

/// A host capability a plugin may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// `trellis:plugin/log`: write log lines.
    Log,
    /// `trellis:plugin/objects-read`: read API objects of granted kinds.
    ObjectsRead,
    /// `trellis:plugin/objects-write`: write API objects of granted kinds.
    ObjectsWrite,
    /// `trellis:plugin/pod-network`: connect to the probed pod's own IP.
    PodNetwork,
    /// `trellis:plugin/pod-exec`: run commands in the probed pod's containers.
    PodExec,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 5] = [
        Capability::Log,
        Capability::ObjectsRead,
        Capability::ObjectsWrite,
        Capability::PodNetwork,
        Capability::PodExec,
    ];

    /// The WIT interface name, without package.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::ObjectsRead => "objects-read",
            Capability::ObjectsWrite => "objects-write",
            Capability::PodNetwork => "pod-network",
            Capability::PodExec => "pod-exec",
        }
    }

    /// The full import name a component uses, e.g. `trellis:plugin/log@0.4.0`.
    pub fn import_name(self) -> String {
        format!("trellis:plugin/{}@{CONTRACT_VERSION}", self.interface())
    }

    /// The capability a full import name refers to, if any.
    pub fn from_import(name: &str) -> Option<Capability> {
        Capability::ALL
            .into_iter()
            .find(|c| c.import_name() == name)
    }
}

/// A kind a plugin may read or write: `group` ("" for core) and `kind`, or `*`
/// in either for any.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KindGrant {
    /// API group, "" for core, "*" for any.
    pub group: String,
    /// Kind, e.g. "Pod", or "*" for any.
    pub kind: String,
}

impl KindGrant {
    /// A grant for one kind.
    pub fn new(group: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            kind: kind.into(),
        }
    }

    fn covers(&self, group: &str, kind: &str) -> bool {
        (self.group == "*" || self.group == group) && (self.kind == "*" || self.kind == kind)
    }
}

/// What one plugin is allowed. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Interfaces linked for the plugin.
    pub capabilities: BTreeSet<Capability>,
    /// Kinds `objects-read` may return.
    pub read: Vec<KindGrant>,
    /// Kinds `objects-write` may change.
    pub write: Vec<KindGrant>,
}

impl Grants {
    /// No capability at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Add a capability.
    pub fn with(mut self, capability: Capability) -> Self {
        self.capabilities.insert(capability);
        self
    }

    /// Allow reading a kind (and link `objects-read`).
    pub fn read(mut self, group: &str, kind: &str) -> Self {
        self.capabilities.insert(Capability::ObjectsRead);
        self.read.push(KindGrant::new(group, kind));
        self
    }

    /// Allow writing a kind (and link `objects-write`).
    pub fn write(mut self, group: &str, kind: &str) -> Self {
        self.capabilities.insert(Capability::ObjectsWrite);
        self.write.push(KindGrant::new(group, kind));
        self
    }

    /// Grants as a `Plugin` object's `spec.grants` spells them:
    /// `{"capabilities": ["log", ...], "read": [{"group": "", "kind": "Pod"}],
    /// "write": [...]}`, every field optional. An unknown capability or a
    /// malformed entry is an error naming it.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let mut g = Self::none();
        if v.is_null() {
            return Ok(g);
        }
        let list = |field: &str| -> Result<Vec<serde_json::Value>, String> {
            match &v[field] {
                serde_json::Value::Null => Ok(vec![]),
                serde_json::Value::Array(a) => Ok(a.clone()),
                _ => Err(format!("grants.{field} must be a list")),
            }
        };
        for c in list("capabilities")? {
            let name = c.as_str().unwrap_or_default();
            let cap = Capability::ALL
                .into_iter()
                .find(|x| x.interface() == name)
                .ok_or_else(|| {
                    format!(
                        "grants.capabilities: unknown capability {name:?} (known: {})",
                        Capability::ALL.map(|c| c.interface()).join(", ")
                    )
                })?;
            g = g.with(cap);
        }
        for (field, write) in [("read", false), ("write", true)] {
            for k in list(field)? {
                let (Some(group), Some(kind)) = (k["group"].as_str(), k["kind"].as_str()) else {
                    return Err(format!("grants.{field}: each entry needs group and kind"));
                };
                g = if write {
                    g.write(group, kind)
                } else {
                    g.read(group, kind)
                };
            }
        }
        Ok(g)
    }

    /// Whether the capability is granted.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Whether reading this kind is granted.
    pub fn may_read(&self, group: &str, kind: &str) -> bool {
        self.has(Capability::ObjectsRead) && self.read.iter().any(|g| g.covers(group, kind))
    }

    /// Whether writing this kind is granted.
    pub fn may_write(&self, group: &str, kind: &str) -> bool {
        self.has(Capability::ObjectsWrite) && self.write.iter().any(|g| g.covers(group, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_from_json() {
        let g = Grants::from_json(&serde_json::json!({
            "capabilities": ["log"], "read": [{"group": "", "kind": "Pod"}]
        }))
        .unwrap();
        assert!(g.has(Capability::Log) && g.may_read("", "Pod") && !g.may_write("", "Pod"));
        let e = Grants::from_json(&serde_json::json!({"capabilities": ["net"]})).unwrap_err();
        assert!(e.contains("unknown capability \"net\""), "{e}");
        assert_eq!(
            Grants::from_json(&serde_json::Value::Null).unwrap(),
            Grants::none()
        );
    }

    #[test]
    fn import_names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(Capability::from_import(&c.import_name()), Some(c));
        }
        assert_eq!(Capability::from_import("trellis:plugin/log@0.1.0"), None);
        assert_eq!(Capability::from_import("wasi:cli/stdout@0.2.0"), None);
    }

    #[test]
    fn kind_grants_are_exact_unless_wildcard() {
        let g = Grants::none().read("", "Pod").read("apps", "*");
        assert!(g.may_read("", "Pod"));
        assert!(!g.may_read("", "Secret"));
        assert!(g.may_read("apps", "Deployment"));
        assert!(!g.may_write("", "Pod"));
        assert!(!Grants::none().may_read("", "Pod"));
    }
}
