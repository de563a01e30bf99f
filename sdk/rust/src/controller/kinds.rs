//! The kinds the default controllers read and write.

use crate::KindRef;

/// A kind by group, version and kind.
pub fn kind(group: &str, version: &str, kind: &str) -> KindRef {
    KindRef {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
    }
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $f:ident => $g:literal, $v:literal, $k:literal;)*) => {
        $($(#[$doc])* pub fn $f() -> KindRef { kind($g, $v, $k) })*
    };
}

kinds! {
    /// `v1` Pod.
    pod => "", "v1", "Pod";
    /// `v1` Node.
    node => "", "v1", "Node";
    /// `v1` Namespace.
    namespace => "", "v1", "Namespace";
    /// `v1` Service.
    service => "", "v1", "Service";
    /// `v1` Endpoints.
    endpoints => "", "v1", "Endpoints";
    /// `v1` ServiceAccount.
    service_account => "", "v1", "ServiceAccount";
    /// `v1` PersistentVolumeClaim.
    persistent_volume_claim => "", "v1", "PersistentVolumeClaim";
    /// `v1` ConfigMap.
    config_map => "", "v1", "ConfigMap";
    /// `v1` Secret.
    secret => "", "v1", "Secret";
    /// `v1` Event.
    event => "", "v1", "Event";
    /// `apps/v1` Deployment.
    deployment => "apps", "v1", "Deployment";
    /// `apps/v1` ReplicaSet.
    replica_set => "apps", "v1", "ReplicaSet";
    /// `apps/v1` DaemonSet.
    daemon_set => "apps", "v1", "DaemonSet";
    /// `apps/v1` StatefulSet.
    stateful_set => "apps", "v1", "StatefulSet";
    /// `apps/v1` ControllerRevision.
    controller_revision => "apps", "v1", "ControllerRevision";
    /// `batch/v1` Job.
    job => "batch", "v1", "Job";
    /// `batch/v1` CronJob.
    cron_job => "batch", "v1", "CronJob";
    /// `discovery.k8s.io/v1` EndpointSlice.
    endpoint_slice => "discovery.k8s.io", "v1", "EndpointSlice";
    /// `coordination.k8s.io/v1` Lease.
    lease => "coordination.k8s.io", "v1", "Lease";
}

/// `apiVersion` of a kind: `group/version`, or `version` for the core group.
pub fn api_version(k: &KindRef) -> String {
    trellis_types::owners::api_version(&k.group, &k.version)
}
