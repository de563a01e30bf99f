//! Services' cluster IPs and node ports, allocated as kube-apiserver does.
//!
//! - A Service of type ClusterIP, NodePort or LoadBalancer gets a cluster IP
//!   from the service range (`spec.clusterIP` and `spec.clusterIPs`), unless
//!   it asks for one (which must be in the range and free) or is headless
//!   (`clusterIP: None`). ExternalName Services get none.
//! - NodePort Services, and LoadBalancer ones unless
//!   `allocateLoadBalancerNodePorts: false`, get a node port for each port
//!   that names none, from the node port range.
//! - A cluster IP never changes once set; an update that leaves it (or a
//!   port's node port) out keeps it. Changing the type to one without them
//!   drops them, as upstream does.
//! - Dynamic cluster IPs come from the upper part of the range first, so the
//!   lower part (16 to 256 addresses) is left for IPs chosen by hand; the
//!   first address is the `kubernetes` Service's.
//!
//! Each address or port in use is a key of its own in the store beside the
//! Service (`held`), created and deleted in the Service's own transaction
//! (see `storage`): two API servers on one etcd cannot hand out the same one,
//! and deleting the Service frees them.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::registry::Kind;
use crate::storage::Objects;

/// kubeadm's service range.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// kube-apiserver's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORTS: &str = "30000-32767";

const IP_KEYS: &str = "/allocations/serviceips/";
const PORT_KEYS: &str = "/allocations/servicenodeports/";

/// Where cluster IPs and node ports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    base: u32,
    prefix: u8,
    ports: (u16, u16),
}

impl Default for ServiceRanges {
    fn default() -> Self {
        Self::new(DEFAULT_SERVICE_CIDR, DEFAULT_NODE_PORTS).expect("the defaults parse")
    }
}

impl ServiceRanges {
    /// From an IPv4 CIDR (`10.96.0.0/12`; a mask of 12 to 30 bits, as
    /// kube-apiserver allows) and a port range (`30000-32767`).
    pub fn new(cidr: &str, node_ports: &str) -> Result<Self, String> {
        let bad_cidr = || {
            format!("invalid service range {cidr:?}: expected an IPv4 CIDR such as {DEFAULT_SERVICE_CIDR}")
        };
        let (ip, bits) = cidr.split_once('/').ok_or_else(bad_cidr)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad_cidr())?;
        let prefix: u8 = bits.parse().map_err(|_| bad_cidr())?;
        if !(12..=30).contains(&prefix) {
            return Err(format!(
                "invalid service range {cidr:?}: the mask must be 12 to 30 bits"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        let bad_ports = || {
            format!("invalid node port range {node_ports:?}: expected FIRST-LAST such as {DEFAULT_NODE_PORTS}")
        };
        let (lo, hi) = node_ports.split_once('-').ok_or_else(bad_ports)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad_ports())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad_ports())?;
        if lo == 0 || lo > hi {
            return Err(bad_ports());
        }
        Ok(Self {
            base: u32::from(ip) & mask,
            prefix,
            ports: (lo, hi),
        })
    }

    /// Addresses in the range, the network and broadcast ones included.
    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// The first usable address: the `kubernetes` Service's.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// The CIDR, as given to kube-apiserver.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }

    /// Whether `ip` may be a cluster IP: in the range, neither its network
    /// nor its broadcast address.
    fn usable(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(self.base);
        offset > 0 && offset < self.size() - 1
    }

    /// The lower part of the range, kept for IPs chosen by hand (upstream's
    /// static band: a sixteenth of it, at least 16 and at most 256).
    fn static_band(&self) -> u32 {
        (self.size() / 16).clamp(16, 256).min(self.size() - 2)
    }

    /// A free address: a random one in the upper part of the range, else
    /// the next free one after it, else any free one below.
    fn pick_ip(&self, used: &BTreeSet<u32>) -> Option<Ipv4Addr> {
        let last = self.size() - 2;
        let band = self.static_band();
        let start = band + 1 + random_below(last - band);
        let scan = (start..=last).chain(band + 1..start).chain(1..=band);
        scan.map(|o| self.base + o)
            .find(|a| !used.contains(a))
            .map(Ipv4Addr::from)
    }

    /// A free node port, from a random start.
    fn pick_port(&self, used: &BTreeSet<u16>) -> Option<u16> {
        let (lo, hi) = self.ports;
        let start = lo + random_below(u32::from(hi - lo) + 1) as u16;
        (start..=hi).chain(lo..start).find(|p| !used.contains(p))
    }
}

fn random_below(n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    (uuid::Uuid::new_v4().as_u128() % u128::from(n)) as u32
}

/// Whether `kind` is the core Service.
pub(crate) fn is_service(kind: &Kind) -> bool {
    kind.group.is_empty() && kind.kind == "Service"
}

/// The store keys of the cluster IPs and node ports `svc` holds.
pub(crate) fn held(svc: &Value) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = cluster_ips(&svc["spec"])
        .iter()
        .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
        .map(|ip| format!("{IP_KEYS}{ip}"))
        .collect();
    keys.extend(node_ports(&svc["spec"]).map(|p| format!("{PORT_KEYS}{p}")));
    keys
}

/// What a claim key records: whose it is.
pub(crate) fn claim_value(svc: &Value) -> Vec<u8> {
    let m = &svc["metadata"];
    json!({"namespace": m["namespace"], "name": m["name"], "uid": m["uid"]})
        .to_string()
        .into_bytes()
}

fn cluster_ips(spec: &Value) -> Vec<String> {
    let listed: Vec<String> = spec["clusterIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return listed;
    }
    match spec["clusterIP"].as_str() {
        Some(ip) if !ip.is_empty() => vec![ip.to_string()],
        _ => vec![],
    }
}

fn node_ports(spec: &Value) -> impl Iterator<Item = u16> + '_ {
    spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64())
        .filter(|p| *p > 0)
        .filter_map(|p| u16::try_from(p).ok())
}

fn ty(spec: &Value) -> &str {
    spec["type"].as_str().unwrap_or("ClusterIP")
}

fn wants_node_ports(spec: &Value) -> bool {
    match ty(spec) {
        "NodePort" => true,
        "LoadBalancer" => spec["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

/// The old port a new one continues: the same port number and protocol.
fn same_port<'a>(old: &'a Value, p: &Value) -> Option<&'a Value> {
    let proto = |v: &Value| v["protocol"].as_str().unwrap_or("TCP").to_string();
    old["ports"]
        .as_array()?
        .iter()
        .find(|o| o["port"] == p["port"] && proto(o) == proto(p))
}

/// Before an update is validated: what it leaves out of what `old` was
/// given is kept (the cluster IPs, each port's node port), and what its new
/// type has no use for is dropped, as upstream does (a cluster IP for
/// ExternalName, node ports for ClusterIP), when it is `old`'s.
pub(crate) fn keep_allocated(new: &mut Value, old: &Value) {
    let old_spec = &old["spec"];
    let Some(spec) = new.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    let old_ips = cluster_ips(old_spec);
    // A change of `clusterIP` alone (a patch) is a change of the first of
    // `clusterIPs` too, which `assign` then refuses.
    if let Some(ip) = spec["clusterIP"].as_str().filter(|ip| !ip.is_empty()) {
        if cluster_ips(spec) == old_ips && old_ips.first().is_some_and(|o| o != ip) {
            spec["clusterIPs"] = json!([ip]);
        }
    }
    if ty(spec) != "NodePort" && ty(spec) != "LoadBalancer" {
        drop_if_same(spec, old_spec, "externalTrafficPolicy");
    }
    if ty(spec) == "ExternalName" {
        drop_if_same(spec, old_spec, "internalTrafficPolicy");
        if cluster_ips(spec) == old_ips {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                spec.as_object_mut().map(|m| m.remove(f));
            }
        }
    } else if cluster_ips(spec).is_empty() && !old_ips.is_empty() && ty(old_spec) != "ExternalName"
    {
        spec["clusterIP"] = json!(old_ips[0]);
        spec["clusterIPs"] = json!(old_ips);
    } else if spec["clusterIPs"].as_array().is_none_or(|a| a.is_empty()) {
        if let Some(ip) = spec["clusterIP"].as_str().filter(|ip| !ip.is_empty()) {
            spec["clusterIPs"] = json!([ip]);
        }
    }
    let keep = wants_node_ports(spec);
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for p in ports.iter_mut() {
        let before = same_port(old_spec, p)
            .and_then(|o| o["nodePort"].as_u64())
            .filter(|n| *n > 0);
        let now = p["nodePort"].as_u64().filter(|n| *n > 0);
        match (keep, before, now) {
            (true, Some(b), None) => p["nodePort"] = json!(b),
            (false, Some(b), Some(n)) if b == n => {
                p.as_object_mut().map(|m| m.remove("nodePort"));
            }
            _ => {}
        }
    }
}

/// Remove `field` from `spec` where it is what `old` had.
fn drop_if_same(spec: &mut Value, old: &Value, field: &str) {
    if spec.get(field).is_some() && spec.get(field) == old.get(field) {
        spec.as_object_mut().map(|m| m.remove(field));
    }
}

/// One field's 422, in upstream's words.
fn refuse(kind: &Kind, name: &str, field: &str, value: &str, why: &str) -> ApiError {
    let message = format!("Invalid value: {value}: {why}");
    ApiError::invalid(
        kind,
        name,
        format!("{} \"{name}\" is invalid: {field}: {message}", kind.kind),
        json!([{"reason": "FieldValueInvalid", "message": message, "field": field}]),
    )
}

/// After validation, before admission: give `svc` the cluster IP and node
/// ports it needs, checking the ones it asks for against the ranges and
/// against every other Service's (`old` is the object it updates, whose
/// own are its to keep). Nothing is reserved here: the store write claims
/// them, and a create that loses a race for one reruns this.
pub(crate) async fn assign(
    objects: &Objects,
    ranges: &ServiceRanges,
    kind: &Kind,
    svc: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = svc["metadata"]["name"].as_str().unwrap_or("").to_string();
    let held_before = old.map(held).unwrap_or_default();
    let spec = &mut svc["spec"];
    let headless = spec["clusterIP"] == "None";
    if let Some(old) = old {
        let before = cluster_ips(&old["spec"]);
        let now = cluster_ips(spec);
        if !before.is_empty()
            && ty(&old["spec"]) != "ExternalName"
            && ty(spec) != "ExternalName"
            && now != before
        {
            return Err(refuse(
                kind,
                &name,
                "spec.clusterIPs[0]",
                &format!("{:?}", now.first().map(String::as_str).unwrap_or("")),
                "may not change once set",
            ));
        }
    }
    if ty(spec) != "ExternalName" && !headless {
        match cluster_ips(spec).first() {
            Some(ip) => {
                let bad = |why: String| {
                    refuse(
                        kind,
                        &name,
                        "spec.clusterIPs",
                        &format!("[]string{{{ip:?}}}"),
                        &format!("failed to allocate IP {ip}: {why}"),
                    )
                };
                let addr: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad("must be a valid IPv4 address".into()))?;
                let key = format!("{IP_KEYS}{addr}");
                if !held_before.contains(&key) {
                    if !ranges.usable(addr) {
                        return Err(bad(format!(
                            "provided IP is not in the valid range. The range of valid IPs is {}",
                            ranges.cidr()
                        )));
                    }
                    if objects.claimed(&key).await? {
                        return Err(bad("provided IP is already allocated".into()));
                    }
                }
                spec["clusterIP"] = json!(addr.to_string());
                spec["clusterIPs"] = json!([addr.to_string()]);
            }
            None => {
                let used: BTreeSet<u32> = objects
                    .claims(IP_KEYS)
                    .await?
                    .iter()
                    .filter_map(|k| k.parse::<Ipv4Addr>().ok())
                    .map(u32::from)
                    .collect();
                let ip = ranges.pick_ip(&used).ok_or_else(|| {
                    ApiError::internal(format!(
                        "failed to allocate a serviceIP: range is full ({})",
                        ranges.cidr()
                    ))
                })?;
                spec["clusterIP"] = json!(ip.to_string());
                spec["clusterIPs"] = json!([ip.to_string()]);
            }
        }
    }
    if !wants_node_ports(spec) {
        return Ok(());
    }
    // Every other Service's ports (this one's old ones are its to keep),
    // and those this one has taken so far (a port may serve two protocols).
    let own: BTreeSet<u16> = old
        .map(|o| node_ports(&o["spec"]).collect())
        .unwrap_or_default();
    let others: BTreeSet<u16> = objects
        .claims(PORT_KEYS)
        .await?
        .iter()
        .filter_map(|k| k.parse().ok())
        .filter(|p| !own.contains(p))
        .collect();
    let mut here: BTreeSet<u16> = BTreeSet::new();
    let (lo, hi) = ranges.ports;
    let count = spec["ports"].as_array().map_or(0, Vec::len);
    for i in 0..count {
        let port = match spec["ports"][i]["nodePort"].as_u64().filter(|n| *n > 0) {
            Some(port) => {
                let port16 = u16::try_from(port).unwrap_or(0);
                let why = if own.contains(&port16) || here.contains(&port16) {
                    None
                } else if !(lo..=hi).contains(&port16) {
                    Some(format!(
                        "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    ))
                } else if others.contains(&port16) {
                    Some("provided port is already allocated".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    let field = format!("spec.ports[{i}].nodePort");
                    return Err(refuse(kind, &name, &field, &port.to_string(), &why));
                }
                port16
            }
            None => {
                let busy: BTreeSet<u16> = others.union(&here).copied().collect();
                let port = ranges.pick_port(&busy).ok_or_else(|| {
                    ApiError::internal(format!(
                        "failed to allocate a nodePort: range is full ({lo}-{hi})"
                    ))
                })?;
                spec["ports"][i]["nodePort"] = json!(port);
                port
            }
        };
        here.insert(port);
    }
    Ok(())
}

/// Make (or bring up to date) the `kubernetes` Service in `default`, the
/// range's first address on port 443, and its Endpoints and EndpointSlice
/// pointing at `addr`, as kube-apiserver keeps them. They carry no
/// controller's managed-by label, so no controller touches them.
pub(crate) async fn publish_kubernetes_service(
    objects: &Objects,
    ranges: &ServiceRanges,
    addr: std::net::SocketAddr,
) -> Result<(), ApiError> {
    let port = addr.port();
    let ip = addr.ip().to_string();
    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let cluster_ip = ranges.kubernetes_ip().to_string();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                 "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"},
        "status": {"loadBalancer": {}},
    });
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    for (group, kind, obj, synced) in [
        ("", "Service", service, &["/spec/ports"][..]),
        ("", "Endpoints", endpoints, &["/subsets"][..]),
        (
            "discovery.k8s.io",
            "EndpointSlice",
            slice,
            &["/addressType", "/endpoints", "/ports"][..],
        ),
    ] {
        let k = crate::registry::by_kind(group, kind).expect("served");
        ensure(objects, k, obj, synced).await?;
    }
    Ok(())
}

/// Create `obj` in `default`, or set the fields at `synced` (JSON pointers)
/// to `obj`'s where they differ.
async fn ensure(
    objects: &Objects,
    kind: &Kind,
    mut obj: Value,
    synced: &[&str],
) -> Result<(), ApiError> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    match objects.get(kind, "default", &name).await {
        Ok(mut cur) => {
            let mut changed = false;
            for path in synced {
                let want = obj.pointer(path).cloned().unwrap_or(Value::Null);
                match cur.pointer_mut(path) {
                    Some(have) if *have == want => {}
                    Some(have) => {
                        *have = want;
                        changed = true;
                    }
                    None => {}
                }
            }
            if changed {
                let rev = crate::storage::resource_version(&cur).unwrap_or(0);
                objects.replace(kind, "default", &name, cur, rev).await?;
            }
            Ok(())
        }
        Err(e) if e.code == 404 => {
            obj["metadata"]["generation"] = json!(1);
            crate::validation::prepare(
                kind,
                &mut obj,
                None,
                crate::validation::Operation::Create,
                false,
            )
            .map_err(|e| ApiError::internal(format!("the {} {name}: {e}", kind.kind)))?;
            match objects.create_stamped(kind, "default", obj).await {
                Ok(_) => Ok(()),
                // Another server made it meanwhile, or a Service took the
                // address by hand: the cluster works on without it.
                Err(e) if e.code == 409 => {
                    tracing::warn!(kind = kind.kind, error = %e, "cannot publish the kubernetes service");
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_refuse_what_kube_apiserver_refuses() {
        let r = ServiceRanges::default();
        assert_eq!(r.cidr(), "10.96.0.0/12");
        assert_eq!(r.kubernetes_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(r.ports, (30000, 32767));
        let host_bits = ServiceRanges::new("10.0.0.7/24", "30000-30001").unwrap();
        assert_eq!(host_bits.cidr(), "10.0.0.0/24");
        for (cidr, ports) in [
            ("10.0.0.0/8", DEFAULT_NODE_PORTS),
            ("10.0.0.0/31", DEFAULT_NODE_PORTS),
            ("fd00::/108", DEFAULT_NODE_PORTS),
            ("10.0.0.0", DEFAULT_NODE_PORTS),
            (DEFAULT_SERVICE_CIDR, "32767-30000"),
            (DEFAULT_SERVICE_CIDR, "30000"),
        ] {
            assert!(ServiceRanges::new(cidr, ports).is_err(), "{cidr} {ports}");
        }
    }

    #[test]
    fn usable_addresses_leave_out_the_network_and_broadcast_ones() {
        let r = ServiceRanges::new("10.0.0.0/24", DEFAULT_NODE_PORTS).unwrap();
        assert!(!r.usable(Ipv4Addr::new(10, 0, 0, 0)));
        assert!(r.usable(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(r.usable(Ipv4Addr::new(10, 0, 0, 254)));
        assert!(!r.usable(Ipv4Addr::new(10, 0, 0, 255)));
        assert!(!r.usable(Ipv4Addr::new(10, 0, 1, 1)));
        assert!(!r.usable(Ipv4Addr::new(9, 255, 255, 255)));
    }

    #[test]
    fn dynamic_ips_fill_the_upper_band_first_then_the_static_one() {
        // A /27: 30 usable addresses, a static band of 16 (1..=16).
        let r = ServiceRanges::new("10.0.0.0/27", DEFAULT_NODE_PORTS).unwrap();
        let mut used = BTreeSet::new();
        let mut order = Vec::new();
        while let Some(ip) = r.pick_ip(&used) {
            used.insert(u32::from(ip));
            order.push(u32::from(ip) - r.base);
        }
        assert_eq!(order.len(), 30, "every usable address, once: {order:?}");
        assert!(
            order[..14].iter().all(|o| (17..=30).contains(o)),
            "{order:?}"
        );
        assert!(
            order[14..].iter().all(|o| (1..=16).contains(o)),
            "{order:?}"
        );
    }

    #[test]
    fn node_ports_cover_the_range_once() {
        let r = ServiceRanges::new(DEFAULT_SERVICE_CIDR, "30000-30009").unwrap();
        let mut used = BTreeSet::new();
        while let Some(p) = r.pick_port(&used) {
            assert!(used.insert(p));
        }
        assert_eq!(used, (30000..=30009).collect());
    }

    #[test]
    fn held_names_each_ip_and_node_port_once() {
        let svc = json!({"spec": {
            "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 53, "protocol": "UDP", "nodePort": 30053},
                      {"port": 53, "protocol": "TCP", "nodePort": 30053},
                      {"port": 80}]}});
        assert_eq!(
            held(&svc).into_iter().collect::<Vec<_>>(),
            [
                "/allocations/serviceips/10.96.0.10",
                "/allocations/servicenodeports/30053"
            ]
        );
        assert!(held(&json!({"spec": {"clusterIP": "None"}})).is_empty());
        assert!(held(&json!({"spec": {"type": "ExternalName"}})).is_empty());
    }

    #[test]
    fn an_update_keeps_what_it_leaves_out_and_drops_what_its_type_has_no_use_for() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        keep_allocated(&mut new, &old);
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.10"]));
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);

        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        keep_allocated(&mut to_cluster_ip, &old);
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(to_cluster_ip["spec"]["clusterIP"], "10.96.0.10");

        let mut patched = old.clone();
        patched["spec"]["clusterIP"] = json!("10.96.0.99");
        keep_allocated(&mut patched, &old);
        assert_eq!(
            patched["spec"]["clusterIPs"],
            json!(["10.96.0.99"]),
            "a patch of clusterIP alone changes clusterIPs too, for assign to refuse"
        );

        let mut to_external = old.clone();
        to_external["spec"]["type"] = json!("ExternalName");
        keep_allocated(&mut to_external, &old);
        assert!(to_external["spec"].get("clusterIP").is_none());
        assert!(to_external["spec"].get("clusterIPs").is_none());
        assert!(to_external["spec"]["ports"][0].get("nodePort").is_none());
        assert!(to_external["spec"].get("externalTrafficPolicy").is_none());
    }
}
