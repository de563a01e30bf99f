//! Resource names and per-node amounts as upstream's scheduler counts them,
//! shared by the resource plugins (NodeResourcesFit, BalancedAllocation).

/// Upstream's `IsExtendedResourceName`, without the qualified-name check
/// (the API server already validated the name).
pub fn is_extended_resource(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Upstream's `IsScalarResourceName` (extended, hugepages, prefixed native,
/// attachable volumes): only these are tracked as scalar resources.
pub fn is_scalar_resource(name: &str) -> bool {
    is_extended_resource(name)
        || name.starts_with("hugepages-")
        || name.contains("kubernetes.io/")
        || name.starts_with("attachable-volumes-")
}

/// Which amount a resource name reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceKind {
    /// `cpu`.
    Cpu,
    /// `memory`.
    Memory,
    /// `ephemeral-storage`.
    Storage,
    /// A scalar resource, by name.
    Scalar(String),
    /// A name upstream never scores (e.g. `pods`, or not a scalar resource name).
    Ignored,
}

/// The kind of a resource name.
pub fn kind_of(name: &str) -> ResourceKind {
    match name {
        "cpu" => ResourceKind::Cpu,
        "memory" => ResourceKind::Memory,
        "ephemeral-storage" => ResourceKind::Storage,
        n if is_scalar_resource(n) => ResourceKind::Scalar(n.to_string()),
        _ => ResourceKind::Ignored,
    }
}

/// Amounts of one node or pod; scalar resources by an interned name id.
#[derive(Debug, Clone, Default)]
pub struct Amounts {
    /// Millicores.
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Ephemeral storage, bytes.
    pub storage: i64,
    scalar: Vec<i64>,
}

impl Amounts {
    /// Cpu, memory and ephemeral storage; no scalar resources yet.
    pub fn new(milli_cpu: i64, memory: i64, storage: i64) -> Self {
        Self {
            milli_cpu,
            memory,
            storage,
            scalar: Vec::new(),
        }
    }

    /// A node's (or pod's) amounts, with scalar resources interned into `names`;
    /// names that are not scalar resources are not tracked, as upstream.
    pub fn from_resources(r: &crate::Resources, names: &mut crate::scheduler::Interner) -> Self {
        let mut a = Self::new(r.milli_cpu, r.memory, r.ephemeral_storage);
        for (name, v) in &r.scalar {
            if is_scalar_resource(name) {
                a.add_scalar(names.intern(name) as usize, *v);
            }
        }
        a
    }

    /// The scalar resource with interned id `id` (0 when absent).
    #[inline]
    pub fn scalar(&self, id: usize) -> i64 {
        self.scalar.get(id).copied().unwrap_or(0)
    }

    /// Add `v` (may be negative) to scalar resource `id`.
    pub fn add_scalar(&mut self, id: usize, v: i64) {
        if self.scalar.len() <= id {
            self.scalar.resize(id + 1, 0);
        }
        self.scalar[id] += v;
    }

    /// The amount a kind reads (`sid`: the interned id of a scalar's name).
    #[inline]
    pub fn get(&self, kind: &ResourceKind, sid: Option<usize>) -> i64 {
        match kind {
            ResourceKind::Cpu => self.milli_cpu,
            ResourceKind::Memory => self.memory,
            ResourceKind::Storage => self.storage,
            ResourceKind::Scalar(_) => sid.map_or(0, |i| self.scalar(i)),
            ResourceKind::Ignored => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_names_follow_upstream() {
        assert!(is_scalar_resource("nvidia.com/gpu"));
        assert!(is_scalar_resource("hugepages-2Mi"));
        assert!(is_scalar_resource("kubernetes.io/foo"));
        assert!(!is_scalar_resource("foo"));
        assert!(!is_extended_resource("requests.nvidia.com/gpu"));
        assert_eq!(kind_of("pods"), ResourceKind::Ignored);
    }

    #[test]
    fn amounts_track_scalars_by_id() {
        let mut a = Amounts::default();
        a.add_scalar(3, 2);
        a.add_scalar(3, -1);
        assert_eq!(a.scalar(3), 1);
        assert_eq!(a.get(&ResourceKind::Scalar("x".into()), Some(3)), 1);
        assert_eq!(a.scalar(9), 0);
    }
}
