//! `PodNetwork::setup`: give a pod its namespace, veth and address.

use std::os::fd::AsRawFd;
use std::time::Instant;

use crate::error::NetworkError;
use crate::netns::{self, Netns};
use crate::rtnl::Rtnl;
use crate::{host_rtnl, validate_uid, PodNet, PodNetwork, POD_INTERFACE};

impl PodNetwork {
    /// Sets up the network of pod `pod_uid` and returns it: an address
    /// (persisted; never shared with another pod), a persistent namespace
    /// with `lo` up, and a veth pair between the bridge and the pod's `eth0`
    /// holding the address and a default route via the gateway.
    ///
    /// Idempotent: for a pod that is set up it returns the same [`PodNet`]
    /// after checking it; a pod set up partly (an interrupted call, a veth
    /// deleted by hand, a namespace lost to a reboot) keeps its address and
    /// gets the rest made anew. Calls for different pods run in parallel.
    /// A failed first setup releases what it took.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidPodUid`], [`NetworkError::AddressesExhausted`],
    /// and I/O, namespace or netlink errors.
    pub fn setup(&self, pod_uid: &str) -> Result<PodNet, NetworkError> {
        validate_uid(pod_uid)?;
        let _busy = self.busy.acquire(pod_uid);
        let span = tracing::info_span!("pod_network_setup", pod_uid, bridge = %self.config.bridge);
        let _entered = span.enter();
        let started = Instant::now();

        let (allocation, fresh) = self.state.update(&self.config.bridge, &self.cidr, |s| {
            s.allocate(pod_uid, &self.config.bridge, &self.cidr)
        })?;
        let pod = self.pod_net(pod_uid, &allocation);
        match self.plumb(&pod) {
            Ok(reused) => {
                tracing::debug!(
                    ip = %pod.ip,
                    host_veth = %pod.host_veth,
                    reused,
                    elapsed_us = started.elapsed().as_micros() as u64,
                    "pod network ready"
                );
                Ok(pod)
            }
            Err(e) => {
                if fresh {
                    if let Err(cleanup) = self.teardown_locked(pod_uid) {
                        tracing::warn!(error = %cleanup, "cleaning up after a failed setup");
                    }
                }
                Err(e)
            }
        }
    }

    /// Builds what `pod` needs; `true` when everything was in place already.
    fn plumb(&self, pod: &PodNet) -> Result<bool, NetworkError> {
        let mut host = host_rtnl()?;
        let bridge = self.bridge_index(&mut host)?;
        let mut ns = if netns::is_mounted(&pod.netns) {
            let mut ns = netns::open(&pod.netns)?;
            if is_complete(&mut host, &mut ns, pod, bridge)? {
                return Ok(true);
            }
            tracing::info!(netns = %pod.netns.display(), "repairing an incomplete pod network");
            ns
        } else {
            // An empty placeholder left by an interrupted setup or a reboot.
            netns::remove(&pod.netns)?;
            netns::create(&pod.netns)?
        };

        let host_veth = &pod.host_veth;
        let nl = |action: String| move |e| NetworkError::netlink(action, e);
        host.delete_link(host_veth)
            .map_err(nl(format!("delete stale {host_veth}")))?;
        ns.rtnl.delete_link(POD_INTERFACE).map_err(nl(format!(
            "delete stale {POD_INTERFACE} in {}",
            pod.netns.display()
        )))?;
        host.create_veth(
            host_veth,
            bridge,
            POD_INTERFACE,
            ns.file.as_raw_fd(),
            self.config.mtu,
        )
        .map_err(nl(format!(
            "create veth {host_veth} on {} with peer {POD_INTERFACE} in {}",
            self.config.bridge,
            pod.netns.display()
        )))?;
        let eth0 = ns
            .rtnl
            .link(POD_INTERFACE)
            .and_then(|l| l.ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENODEV)))
            .map_err(nl(format!(
                "look up {POD_INTERFACE} in {}",
                pod.netns.display()
            )))?;
        // The address before up, so the gratuitous ARP sent on up
        // (arp_notify) carries it; the route after up, as it needs the
        // connected route.
        ns.rtnl
            .add_address(eth0.index, pod.ip, pod.prefix_len, self.cidr.broadcast())
            .map_err(nl(format!(
                "add {}/{} to {POD_INTERFACE}",
                pod.ip, pod.prefix_len
            )))?;
        ns.rtnl.set_up(eth0.index).map_err(nl(format!(
            "set {POD_INTERFACE} up in {}",
            pod.netns.display()
        )))?;
        ns.rtnl
            .add_default_route(pod.gateway, eth0.index)
            .map_err(nl(format!("add default route via {}", pod.gateway)))?;
        Ok(false)
    }

    /// The bridge's index, recreating the bridge if it was deleted or
    /// brought down meanwhile.
    fn bridge_index(&self, host: &mut Rtnl) -> Result<u32, NetworkError> {
        match host.link(&self.config.bridge) {
            Ok(Some(link)) if link.up && link.kind == "bridge" => Ok(link.index),
            Ok(_) => self.ensure_bridge(host),
            Err(e) => Err(NetworkError::netlink(
                format!("look up bridge {}", self.config.bridge),
                e,
            )),
        }
    }
}

/// Whether the pod's interfaces, address and route are all in place.
fn is_complete(
    host: &mut Rtnl,
    ns: &mut Netns,
    pod: &PodNet,
    bridge: u32,
) -> Result<bool, NetworkError> {
    let check = |action: &str| {
        let action = format!("{action} (checking {})", pod.netns.display());
        move |e| NetworkError::netlink(action, e)
    };
    let veth = host
        .link(&pod.host_veth)
        .map_err(check("look up host veth"))?;
    if !veth.is_some_and(|v| v.up && v.controller == Some(bridge)) {
        return Ok(false);
    }
    let lo = ns.rtnl.link("lo").map_err(check("look up lo"))?;
    let eth0 = ns.rtnl.link(POD_INTERFACE).map_err(check("look up eth0"))?;
    let (Some(lo), Some(eth0)) = (lo, eth0) else {
        return Ok(false);
    };
    if !lo.up || !eth0.up {
        return Ok(false);
    }
    let addresses = ns
        .rtnl
        .addresses(eth0.index)
        .map_err(check("list addresses"))?;
    if !addresses.contains(&(pod.ip, pod.prefix_len)) {
        return Ok(false);
    }
    let routes = ns.rtnl.routes().map_err(check("list routes"))?;
    Ok(routes
        .iter()
        .any(|r| r.prefix_len == 0 && r.gateway == Some(pod.gateway) && r.oif == Some(eth0.index)))
}
