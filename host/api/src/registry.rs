//! Every kind the API serves: where it lives in the URL space and the store,
//! its scope, names and subresources. Discovery, routing, storage, tables and
//! validation all read this one table.

/// One served kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group, "" for core.
    pub group: &'static str,
    /// Version, e.g. "v1".
    pub version: &'static str,
    /// Kind, e.g. "Pod".
    pub kind: &'static str,
    /// Resource name in URLs, e.g. "pods".
    pub plural: &'static str,
    /// Lowercase singular, e.g. "pod".
    pub singular: &'static str,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// `kubectl get` short names.
    pub short_names: &'static [&'static str],
    /// Categories such as "all".
    pub categories: &'static [&'static str],
    /// Has a `status` subresource (status is kept apart from spec writes).
    pub status: bool,
    /// Has a `scale` subresource (`spec.replicas`).
    pub scale: bool,
}

impl Kind {
    /// `v1` or `group/version`, as in `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The list kind, e.g. "PodList".
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Store key prefix of all objects of this kind, ending in '/'.
    pub fn store_prefix(&self) -> String {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{group}/{}/", self.plural)
    }

    /// Store key of one object ("" namespace for cluster-scoped kinds).
    pub fn store_key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.store_prefix())
        } else {
            format!("{}{name}", self.store_prefix())
        }
    }

    /// Store prefix of a namespace's objects (or of all, for "").
    pub fn store_namespace_prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("{}{namespace}/", self.store_prefix())
        } else {
            self.store_prefix()
        }
    }
}

const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    status: bool,
    scale: bool,
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories: &[],
        status,
        scale,
    }
}

const ALL: &[&str] = &["all"];

/// Every served kind, one per row.
#[rustfmt::skip]
pub static KINDS: &[Kind] = &[
    k("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], true, false),
    k("", "v1", "Node", "nodes", "node", false, &["no"], true, false),
    Kind { categories: ALL, ..k("", "v1", "Pod", "pods", "pod", true, &["po"], true, false) },
    Kind { categories: ALL, ..k("", "v1", "Service", "services", "service", true, &["svc"], true, false) },
    k("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], false, false),
    k("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], false, false),
    k("", "v1", "Secret", "secrets", "secret", true, &[], false, false),
    k("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"], false, false),
    k("", "v1", "Event", "events", "event", true, &["ev"], false, false),
    k("", "v1", "ResourceQuota", "resourcequotas", "resourcequota", true, &["quota"], true, false),
    k("", "v1", "LimitRange", "limitranges", "limitrange", true, &["limits"], false, false),
    k("", "v1", "PersistentVolume", "persistentvolumes", "persistentvolume", false, &["pv"], true, false),
    k("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, &["pvc"], true, false),
    Kind { categories: ALL, ..k("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], true, true) },
    Kind { categories: ALL, ..k("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], true, true) },
    Kind { categories: ALL, ..k("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], true, false) },
    Kind { categories: ALL, ..k("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], true, true) },
    k("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, &[], false, false),
    Kind { categories: ALL, ..k("batch", "v1", "Job", "jobs", "job", true, &[], true, false) },
    Kind { categories: ALL, ..k("batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], true, false) },
    k("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, &[], false, false),
    k("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", false, &["pc"], false, false),
    Kind { categories: ALL, ..k("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, &["hpa"], true, false) },
    k("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", true, &[], false, false),
    k("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", true, &[], false, false),
    k("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", false, &[], false, false),
    k("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, &[], false, false),
    k("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, &[], false, false),
    k("trellis.dev", "v1alpha1", "Plugin", "plugins", "plugin", false, &["tp"], true, false),
    k("trellis.dev", "v1alpha1", "SchedulerProfile", "schedulerprofiles", "schedulerprofile", false, &["tsp"], true, false),
    k("trellis.dev", "v1alpha1", "AdmissionChain", "admissionchains", "admissionchain", false, &["tac"], true, false),
];

/// The kind served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The kind named `kind` in `group` (any served version).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// Served `(group, version)` pairs, core first, in a stable order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_lookups() {
        let pod = lookup("", "v1", "pods").unwrap();
        assert_eq!(
            pod.store_key("default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pod.api_version(), "v1");
        let node = by_kind("", "Node").unwrap();
        assert_eq!(node.store_key("", "n1"), "/registry/core/nodes/n1");
        let d = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(d.api_version(), "apps/v1");
        assert!(d.scale && d.status);
        assert_eq!(group_versions()[0], ("", "v1"));
        // Every plural is unique within its group.
        for a in KINDS {
            assert_eq!(
                KINDS
                    .iter()
                    .filter(|b| b.group == a.group && b.plural == a.plural)
                    .count(),
                1
            );
        }
    }
}
