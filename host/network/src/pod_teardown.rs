//! `PodNetwork::teardown`: take a pod's network away again.

use crate::error::NetworkError;
use crate::{host_rtnl, netns, validate_uid, PodNetwork};

impl PodNetwork {
    /// Removes the network of pod `pod_uid`: deletes its veth pair, unmounts
    /// and deletes its namespace file and releases its address. Idempotent:
    /// a pod without network is fine.
    ///
    /// Processes still inside the namespace keep it (without a link) until
    /// they exit; stop the pod's containers first.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidPodUid`], and I/O, namespace or netlink errors
    /// (then the address stays allocated and a retry finishes the job).
    pub fn teardown(&self, pod_uid: &str) -> Result<(), NetworkError> {
        validate_uid(pod_uid)?;
        let _busy = self.busy.acquire(pod_uid);
        let span =
            tracing::info_span!("pod_network_teardown", pod_uid, bridge = %self.config.bridge);
        let _entered = span.enter();
        self.teardown_locked(pod_uid)
    }

    /// [`teardown`](Self::teardown) for a caller holding the pod's lock.
    pub(crate) fn teardown_locked(&self, pod_uid: &str) -> Result<(), NetworkError> {
        let state = self.state.read(&self.config.bridge, &self.cidr)?;
        let netns_path = self.netns_dir.join(pod_uid);
        if let Some(allocation) = state.pods.get(pod_uid) {
            // Deleting one end of a veth pair deletes both.
            host_rtnl()?
                .delete_link(&allocation.host_veth)
                .map_err(|e| {
                    NetworkError::netlink(format!("delete veth {}", allocation.host_veth), e)
                })?;
        }
        netns::remove(&netns_path)?;
        self.state.update(&self.config.bridge, &self.cidr, |s| {
            if let Some(released) = s.pods.remove(pod_uid) {
                tracing::debug!(ip = %released.ip, "released pod address");
            }
            Ok(())
        })
    }
}
