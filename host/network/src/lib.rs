//! The pod network on one node: a Linux bridge, and per pod a persistent
//! network namespace, a veth pair into the bridge and an IPv4 address from
//! the node's pod CIDR.
//!
//! The node agent opens a [`PodNetwork`] once at start and calls
//! [`PodNetwork::setup`] before creating a pod's containers (whose OCI config
//! gets `linux.namespaces: [{type: network, path: <PodNet::netns>}]`) and
//! [`PodNetwork::teardown`] after they are gone. All calls block (netlink
//! round trips, short-lived threads, a file lock); from async code call them
//! through `tokio::task::spawn_blocking`. A `PodNetwork` is `Send + Sync`.
//!
//! ```no_run
//! use trellis_network::{NetworkConfig, PodNetwork};
//!
//! # fn main() -> Result<(), trellis_network::NetworkError> {
//! let network = PodNetwork::open(NetworkConfig {
//!     bridge: "trellis0".into(),
//!     pod_cidr: "10.88.0.0/24".into(),
//!     state_dir: "/var/lib/trellis/network".into(),
//!     mtu: None,
//! })?;
//! let pod = network.setup("6f1c2a9e-0d4b-4c1e-9a8b-3f2d1e0c9b8a")?;
//! println!("netns {} ip {}/{}", pod.netns.display(), pod.ip, pod.prefix_len);
//! network.teardown("6f1c2a9e-0d4b-4c1e-9a8b-3f2d1e0c9b8a")?;
//! # Ok(())
//! # }
//! ```
//!
//! # What is created
//!
//! - The bridge `config.bridge`, up, with the CIDR's first host address
//!   (the pods' gateway) and a fixed MAC address derived from its name.
//! - Per pod: `<state_dir>/netns/<pod uid>`, an `nsfs` bind mount keeping the
//!   namespace alive without processes; `lo` up inside; a veth pair whose
//!   host side `trv<12 hex>` (a hash of bridge and pod UID) is a bridge port
//!   and whose peer is `eth0` in the pod with `<ip>/<prefix>` and a default
//!   route via the gateway.
//! - `<state_dir>/netns` is made a shared mount point of its own, as
//!   iproute2 does with `/run/netns`, so unmounting a namespace file also
//!   drops the copies that mount namespaces created meanwhile hold.
//! - `<state_dir>/allocations.json`: pod UID → address and host veth,
//!   read and written under `flock` on `allocations.lock`, so the agent
//!   re-adopts the same address and namespace after a restart.
//!
//! Addresses are handed out round-robin (after the last one given), so a
//! just-released address is not reused while another is free.
//!
//! # Cost
//!
//! A first setup is one state-file update (no fsync), one namespace
//! (`unshare` + bind mount on a short-lived thread, about 0.5–1 ms) and seven
//! netlink requests (the veth pair is created with its host side up and a
//! bridge port and its peer directly inside the namespace). On the 2-core
//! development machine it took about 2 ms (median of 10, machine otherwise
//! idle), and a repeated setup of a complete pod, which only checks, about
//! 0.5 ms. Under heavy CPU load, and while other namespaces are being
//! destroyed (the kernel tears a namespace down asynchronously, holding the
//! locks setup needs), single setups took 10–30 ms. The integration test
//! `setup_is_idempotent_and_repairs` prints the figures (`--nocapture`).
//!
//! # Kernel settings
//!
//! One sysctl is set, inside each pod namespace only:
//! `net.ipv4.conf.default.arp_notify=1` (so `eth0` inherits it): `eth0`
//! sends a gratuitous ARP when it comes up, and the node and the other pods
//! replace a neighbour entry left by an earlier pod with the same address at
//! once rather than after seconds of failed traffic. Nothing is changed on
//! the node, since nothing more is needed for what this crate promises:
//!
//! - Pods on one bridge talk at layer 2; the node reaches a pod through the
//!   bridge's connected route, with the gateway address as source. Neither
//!   needs `net.ipv4.ip_forward` (only pod traffic to other networks would,
//!   together with NAT, which is not this crate's job).
//! - `rp_filter` (strict or loose, `all` or per interface) passes all of this
//!   traffic: every packet arrives on the interface the reverse route uses.
//!   A per-interface `rp_filter=0` could not relax a stricter `conf.all`
//!   anyway (the kernel uses the maximum of the two).
//! - With `br_netfilter` loaded and `net.bridge.bridge-nf-call-iptables=1`
//!   (what kube-proxy wants), bridged pod-to-pod packets traverse the
//!   iptables/nftables `FORWARD` chain, and a `DROP` policy there (Docker
//!   sets one) cuts pods off from each other. That switch is global (a
//!   bridge's own `nf_call_iptables` can only add to it), so
//!   [`PodNetwork::open`] does not change it but logs a warning when it is
//!   on; the `FORWARD` chain must then accept traffic within the pod CIDR.
//!
//! Overlapping routes are checked: [`PodNetwork::open`] fails with
//! [`NetworkError::CidrConflict`] when another interface routes the pod CIDR
//! or part of it.

mod cidr;
mod error;
mod netns;
mod pod_setup;
mod pod_teardown;
mod rtnl;
mod state;

use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

pub use error::NetworkError;

use cidr::PodCidr;
use rtnl::Rtnl;
use state::{Allocation, StateStore};

/// Name of the pod-side interface.
pub const POD_INTERFACE: &str = "eth0";

/// Longest interface name Linux accepts (`IFNAMSIZ - 1`).
const MAX_IFNAME: usize = 15;

/// How a node's pod network is laid out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Name of the node's bridge, at most 15 bytes (e.g. `trellis0`).
    /// Created when absent; an existing bridge of that name is adopted.
    pub bridge: String,
    /// The node's pod CIDR in IPv4 CIDR notation (e.g. `10.88.0.0/24`),
    /// prefix length 1 to 30, no host bits set. Its first host address goes
    /// to the bridge as the pods' gateway; the others (but the broadcast
    /// address) to pods.
    pub pod_cidr: String,
    /// Directory for the allocations file and the namespaces' files
    /// (`netns/<pod uid>`); created if absent. One per agent.
    pub state_dir: PathBuf,
    /// MTU of both ends of every veth, and of the bridge when it is created
    /// (an existing bridge keeps its MTU). Default (`None`): the kernel's
    /// (1500 for veths; a bridge follows its ports).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A pod's network, as [`PodNetwork::setup`] made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNet {
    /// The namespace's file: pass it as the OCI `network` namespace path.
    pub netns: PathBuf,
    /// The pod's address, on its `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod CIDR.
    pub prefix_len: u8,
    /// The bridge's address; the pod's default route goes through it.
    pub gateway: Ipv4Addr,
    /// Host-side end of the pod's veth pair, a port of the bridge.
    pub host_veth: String,
}

/// The pod network of one node. See the [crate docs](crate).
#[derive(Debug)]
pub struct PodNetwork {
    config: NetworkConfig,
    cidr: PodCidr,
    state: StateStore,
    netns_dir: PathBuf,
    busy: PodLocks,
}

impl PodNetwork {
    /// Opens the node's pod network: validates `config`, loads the persisted
    /// allocations of `config.state_dir`, and creates the bridge (with the
    /// gateway address, up) unless it exists. Idempotent; opening again after
    /// a restart re-adopts every pod set up before.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidConfig`] for a bad name, CIDR or MTU;
    /// [`NetworkError::StateMismatch`] when the state holds pods of another
    /// bridge or CIDR; [`NetworkError::CidrConflict`] when another interface
    /// routes the CIDR; [`NetworkError::NotABridge`]; and I/O or netlink
    /// errors (`EPERM` without `CAP_NET_ADMIN`/`CAP_SYS_ADMIN`).
    pub fn open(config: NetworkConfig) -> Result<PodNetwork, NetworkError> {
        let cidr = validate(&config)?;
        fs::create_dir_all(&config.state_dir)
            .map_err(|e| NetworkError::io("create directory", &config.state_dir, e))?;
        let network = PodNetwork {
            state: StateStore::new(&config.state_dir),
            netns_dir: config.state_dir.join("netns"),
            config,
            cidr,
            busy: PodLocks::default(),
        };
        network.adopt_state()?;
        netns::prepare_dir(&network.netns_dir)?;
        let checked = host_rtnl().and_then(|mut host| {
            network.check_routes(&mut host)?;
            network.ensure_bridge(&mut host)
        });
        if let Err(e) = checked {
            // Refused: leave no mount behind when no pod needs it.
            if network.pods().is_ok_and(|p| p.is_empty()) {
                netns::release_dir(&network.netns_dir).ok();
            }
            return Err(e);
        }
        warn_on_bridge_netfilter();
        tracing::info!(
            bridge = %network.config.bridge,
            pod_cidr = %network.cidr,
            gateway = %network.cidr.gateway(),
            "pod network open"
        );
        Ok(network)
    }

    /// The configuration this network was opened with.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The gateway (bridge) address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.cidr.gateway()
    }

    /// Every pod with an allocation, set up completely or not (for
    /// re-adoption after a restart: [`setup`](Self::setup) repairs a pod
    /// that is incomplete, [`teardown`](Self::teardown) removes one no longer
    /// wanted), sorted by pod UID.
    pub fn pods(&self) -> Result<Vec<(String, PodNet)>, NetworkError> {
        let state = self.state.read(&self.config.bridge, &self.cidr)?;
        Ok(state
            .pods
            .iter()
            .map(|(uid, allocation)| (uid.clone(), self.pod_net(uid, allocation)))
            .collect())
    }

    /// Tears down every pod, deletes the bridge, the namespace directory and
    /// the state files (the state directory itself stays). Goes on after an
    /// error and returns the first one.
    pub fn destroy(self) -> Result<(), NetworkError> {
        let mut first_error = None;
        let mut note = |result: Result<(), NetworkError>| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "destroying the pod network");
                first_error.get_or_insert(e);
            }
        };
        match self.pods() {
            Ok(pods) => {
                for (uid, _) in pods {
                    note(self.teardown(&uid));
                }
            }
            Err(e) => note(Err(e)),
        }
        note(host_rtnl().and_then(|mut host| {
            host.delete_link(&self.config.bridge)
                .map(drop)
                .map_err(|e| {
                    NetworkError::netlink(format!("delete bridge {}", self.config.bridge), e)
                })
        }));
        note(netns::release_dir(&self.netns_dir));
        note(self.state.remove());
        first_error.map_or(Ok(()), Err)
    }

    fn pod_net(&self, uid: &str, allocation: &Allocation) -> PodNet {
        PodNet {
            netns: self.netns_dir.join(uid),
            ip: allocation.ip,
            prefix_len: self.cidr.prefix_len(),
            gateway: self.cidr.gateway(),
            host_veth: allocation.host_veth.clone(),
        }
    }

    /// Checks the persisted state against the config; a state left corrupt
    /// by a machine crash (when no namespace of it can be alive) is set
    /// aside.
    fn adopt_state(&self) -> Result<(), NetworkError> {
        let bridge = &self.config.bridge;
        let state = match self.state.read(bridge, &self.cidr) {
            Ok(state) => state,
            Err(NetworkError::StateCorrupt { path, source }) => {
                if self.any_namespace_mounted() {
                    return Err(NetworkError::StateCorrupt { path, source });
                }
                let aside = self.state.set_aside()?;
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %source,
                    "network state was corrupt and no pod namespace is alive; starting empty"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if state.bridge == *bridge && state.pod_cidr == self.cidr.to_string() {
            return Ok(());
        }
        if !state.pods.is_empty() {
            return Err(NetworkError::StateMismatch {
                state_dir: self.config.state_dir.clone(),
                state_bridge: state.bridge,
                state_cidr: state.pod_cidr,
                pods: state.pods.len(),
            });
        }
        self.state.update(bridge, &self.cidr, |s| {
            s.bridge = bridge.clone();
            s.pod_cidr = self.cidr.to_string();
            s.last_ip = None;
            Ok(())
        })
    }

    fn any_namespace_mounted(&self) -> bool {
        fs::read_dir(&self.netns_dir)
            .map(|entries| entries.flatten().any(|e| netns::is_mounted(&e.path())))
            .unwrap_or(false)
    }

    /// Fails when a route of another interface covers the pod CIDR or a part
    /// of it at least as specifically, so it would take pod traffic.
    fn check_routes(&self, host: &mut Rtnl) -> Result<(), NetworkError> {
        let bridge = host
            .link(&self.config.bridge)
            .map_err(|e| NetworkError::netlink(format!("look up {}", self.config.bridge), e))?
            .map(|l| l.index);
        let routes = host
            .routes()
            .map_err(|e| NetworkError::netlink("list routes", e))?;
        for route in routes {
            if route.prefix_len < self.cidr.prefix_len()
                || !self.cidr.overlaps(route.destination, route.prefix_len)
                || route.oif.is_none()
                || route.oif == bridge
            {
                continue;
            }
            let oif = route.oif.unwrap_or_default();
            let interface = host
                .link_name(oif)
                .ok()
                .flatten()
                .unwrap_or_else(|| format!("#{oif}"));
            return Err(NetworkError::CidrConflict {
                pod_cidr: self.cidr.to_string(),
                route: format!("{}/{}", route.destination, route.prefix_len),
                interface,
            });
        }
        Ok(())
    }

    /// Makes sure the bridge exists, is up and has the gateway address;
    /// returns its index.
    fn ensure_bridge(&self, host: &mut Rtnl) -> Result<u32, NetworkError> {
        let name = &self.config.bridge;
        let lookup = |host: &mut Rtnl| {
            host.link(name)
                .map_err(|e| NetworkError::netlink(format!("look up bridge {name}"), e))
        };
        let link = match lookup(host)? {
            Some(link) => link,
            None => {
                match host.create_bridge(name, bridge_mac(name), self.config.mtu) {
                    Ok(()) => tracing::info!(bridge = %name, "created bridge"),
                    // Another agent process or thread was quicker.
                    Err(e) if rtnl::is_exists(&e) => {}
                    Err(e) => {
                        return Err(NetworkError::netlink(format!("create bridge {name}"), e))
                    }
                }
                lookup(host)?.ok_or_else(|| {
                    NetworkError::netlink(
                        format!("look up bridge {name}"),
                        std::io::Error::from_raw_os_error(libc::ENODEV),
                    )
                })?
            }
        };
        if link.kind != "bridge" {
            return Err(NetworkError::NotABridge {
                name: name.clone(),
                kind: if link.kind.is_empty() {
                    "none".into()
                } else {
                    link.kind
                },
            });
        }
        host.add_address(
            link.index,
            self.cidr.gateway(),
            self.cidr.prefix_len(),
            self.cidr.broadcast(),
        )
        .map_err(|e| {
            NetworkError::netlink(
                format!(
                    "add {}/{} to {name}",
                    self.cidr.gateway(),
                    self.cidr.prefix_len()
                ),
                e,
            )
        })?;
        if !link.up {
            host.set_up(link.index)
                .map_err(|e| NetworkError::netlink(format!("set {name} up"), e))?;
        }
        Ok(link.index)
    }
}

/// A netlink socket in the caller's (the node's) network namespace.
fn host_rtnl() -> Result<Rtnl, NetworkError> {
    Rtnl::new().map_err(|e| NetworkError::netlink("open netlink socket", e))
}

fn validate(config: &NetworkConfig) -> Result<PodCidr, NetworkError> {
    let invalid = |reason: String| NetworkError::InvalidConfig { reason };
    let bridge = &config.bridge;
    if bridge.is_empty()
        || bridge.len() > MAX_IFNAME
        || bridge == "."
        || bridge == ".."
        || bridge
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid(format!(
            "bridge name {bridge:?} must be 1 to {MAX_IFNAME} bytes without '/', ':' or spaces"
        )));
    }
    if let Some(mtu) = config.mtu {
        if !(68..=65535).contains(&mtu) {
            return Err(invalid(format!("mtu {mtu} is outside 68..=65535")));
        }
    }
    if config.state_dir.as_os_str().is_empty() {
        return Err(invalid("state_dir is empty".into()));
    }
    config.pod_cidr.parse().map_err(invalid)
}

/// Rejects UIDs that cannot safely name a file.
fn validate_uid(uid: &str) -> Result<(), NetworkError> {
    let ok = (1..=128).contains(&uid.len())
        && uid != "."
        && uid != ".."
        && uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::InvalidPodUid {
            uid: uid.to_owned(),
        })
    }
}

/// A locally administered unicast MAC derived from the bridge name.
fn bridge_mac(name: &str) -> [u8; 6] {
    let hash = state::host_veth_name(name, "bridge-mac", 0);
    let hex = &hash[3..];
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0);
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

fn warn_on_bridge_netfilter() {
    let path = Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables");
    if fs::read_to_string(path).is_ok_and(|v| v.trim() == "1") {
        tracing::warn!(
            "net.bridge.bridge-nf-call-iptables=1: bridged pod traffic passes the iptables FORWARD chain, which must accept traffic within the pod CIDR"
        );
    }
}

/// Serializes setup and teardown per pod UID within this process (pods with
/// different UIDs proceed in parallel).
#[derive(Debug, Default)]
struct PodLocks {
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

struct PodLockGuard<'a> {
    locks: &'a PodLocks,
    uid: String,
}

impl PodLocks {
    fn busy(&self) -> MutexGuard<'_, HashSet<String>> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn acquire(&self, uid: &str) -> PodLockGuard<'_> {
        let mut busy = self.busy();
        while busy.contains(uid) {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy.insert(uid.to_owned());
        PodLockGuard {
            locks: self,
            uid: uid.to_owned(),
        }
    }
}

impl Drop for PodLockGuard<'_> {
    fn drop(&mut self) {
        self.locks.busy().remove(&self.uid);
        self.locks.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bridge: &str, cidr: &str) -> NetworkConfig {
        NetworkConfig {
            bridge: bridge.into(),
            pod_cidr: cidr.into(),
            state_dir: "/tmp/x".into(),
            mtu: None,
        }
    }

    #[test]
    fn config_validation_explains() {
        assert!(validate(&config("trellis0", "10.88.0.0/24")).is_ok());
        for (bridge, cidr, needle) in [
            ("a-very-long-bridge", "10.88.0.0/24", "bridge name"),
            ("", "10.88.0.0/24", "bridge name"),
            ("br 0", "10.88.0.0/24", "bridge name"),
            ("br0", "10.88.0.0/31", "prefix length"),
            ("br0", "fd00::/64", "IPv4"),
        ] {
            let err = validate(&config(bridge, cidr)).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut c = config("br0", "10.88.0.0/24");
        c.mtu = Some(10);
        assert!(validate(&c).unwrap_err().to_string().contains("mtu"));
    }

    #[test]
    fn uid_validation() {
        assert!(validate_uid("6f1c2a9e-0d4b-4c1e-9a8b-3f2d1e0c9b8a").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_uid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bridge_mac_is_local_unicast_and_stable() {
        let mac = bridge_mac("trellis0");
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(mac, bridge_mac("trellis0"));
        assert_ne!(mac, bridge_mac("trellis1"));
    }
}
