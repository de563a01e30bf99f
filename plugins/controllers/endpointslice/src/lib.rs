//! Upstream's EndpointSlice controller (`pkg/controller/endpointslice` and
//! its reconciler in `staging/src/k8s.io/endpointslice`): every Service with
//! a selector gets EndpointSlices (`discovery.k8s.io/v1`) listing the pods it
//! selects, one set per address type of the Service and per distinct set of
//! resolved ports, at most `maxEndpointsPerSlice` endpoints each. Slices are
//! named from `generateName: <service>-`, labelled
//! `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//! (plus the Service's own labels and `service.kubernetes.io/headless`), and
//! controlled by the Service through an ownerReference — so the garbage
//! collector, not this controller, removes them with the Service, as upstream.
//! Existing slices are updated in place with upstream's churn-minimising
//! algorithm: keep what is still wanted where it is, fill slices being
//! updated anyway, put a small remainder into the fullest unchanged slice
//! that fits, and only then create slices; a Service without endpoints keeps
//! one empty placeholder slice.
//!
//! Keys: the primary kind is `v1 Service`; Pods are watched with `Object`
//! mapping and EndpointSlices with `Owner` mapping, so a key `(ns, name)`
//! means: reconcile Service `name`, every Service in `ns` whose selector
//! selects Pod `name` when it exists, and every Service in `ns` whose managed
//! slices list a pod named `name` (a deleted or relabelled pod). That costs a
//! list of the namespace's Services and managed slices from the cache per key.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{endpoint_slice, node, pod, service};
use trellis_sdk::controller::*;
use trellis_sdk::objects;

use trellis_sdk::services::*;

/// `discovery.LabelServiceName`.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// `discovery.LabelManagedBy`.
pub const LABEL_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// Upstream's controller name, the value of [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// `v1.IsHeadlessService`.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// `v1.LabelTopologyZone`, copied from the pod's node into `zone`.
const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Configuration (JSON); unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `maxEndpointsPerSlice`, upstream's `--max-endpoints-per-slice`:
    /// default 100, from 1 to 1000.
    pub max_endpoints_per_slice: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_endpoints_per_slice: 100,
        }
    }
}

impl Config {
    /// Parse the JSON configuration (`{}` or empty: the defaults).
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let mut c = Self::default();
        if text.trim().is_empty() {
            return Ok(c);
        }
        let bad = |m: String| PluginError::InvalidConfig(m);
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Some(m) = v.as_object() else {
            return Err(bad("the configuration is not a JSON object".into()));
        };
        for (k, val) in m {
            match k.as_str() {
                "maxEndpointsPerSlice" => {
                    c.max_endpoints_per_slice = val
                        .as_u64()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| bad("maxEndpointsPerSlice must be from 1 to 1000".into()))?
                        as usize
                }
                other => return Err(bad(format!("unknown configuration key {other:?}"))),
            }
        }
        Ok(c)
    }
}

/// The controller.
#[derive(Default)]
pub struct EndpointSliceController {
    config: Config,
}

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

fn not_found_is_none(r: Result<Value, ObjectError>) -> Result<Option<Value>, PluginError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ObjectError::NotFound) => Ok(None),
        Err(e) => Err(internal(e)),
    }
}

fn endpoints_of(slice: &Value) -> Vec<Value> {
    slice["endpoints"].as_array().cloned().unwrap_or_default()
}

fn ports_of(slice: &Value) -> Vec<Value> {
    slice["ports"].as_array().cloned().unwrap_or_default()
}

/// The Services a key concerns; see the module documentation.
fn services_for_key(api: &impl Api, ns: &str, name: &str) -> Result<BTreeSet<String>, PluginError> {
    let mut out = BTreeSet::from([name.to_string()]);
    if let Some(p) = not_found_is_none(api.get(&pod(), ns, name))? {
        for svc in api.list(&service(), ns, "").map_err(internal)? {
            if selects(&svc, &p) {
                out.insert(objects::name(&svc).to_string());
            }
        }
    }
    let managed = format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}");
    for slice in api
        .list(&endpoint_slice(), ns, &managed)
        .map_err(internal)?
    {
        let lists_pod = endpoints_of(&slice)
            .iter()
            .any(|e| e["targetRef"]["kind"] == "Pod" && e["targetRef"]["name"] == name);
        if let (true, Some(svc)) = (
            lists_pod,
            slice["metadata"]["labels"][LABEL_SERVICE_NAME].as_str(),
        ) {
            out.insert(svc.to_string());
        }
    }
    Ok(out)
}

/// Reconcile one key: every Service it concerns.
pub fn reconcile(api: &impl Api, config: &Config, key: &ObjectKey) -> Result<Action, PluginError> {
    if key.namespace.is_empty() {
        return Ok(Action::AwaitChange);
    }
    let mut first_err = None;
    for svc in services_for_key(api, &key.namespace, &key.name)? {
        if let Err(e) = sync_service(api, config, &key.namespace, &svc) {
            trellis_sdk::log::warn(&format!("endpointslices of {}/{svc}: {e:?}", key.namespace));
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(Action::AwaitChange), Err)
}

/// Upstream's `getAddressTypesForService`: the Service's IP families, else the
/// family of its cluster IP, else (headless) both.
fn address_types(svc: &Value) -> Vec<&'static str> {
    let mut out = Vec::new();
    for f in svc["spec"]["ipFamilies"].as_array().into_iter().flatten() {
        for t in ["IPv4", "IPv6"] {
            if f == t && !out.contains(&t) {
                out.push(t);
            }
        }
    }
    if !out.is_empty() {
        return out;
    }
    match svc["spec"]["clusterIP"].as_str() {
        Some(ip) if !ip.is_empty() && ip != "None" => {
            vec![if ip.contains(':') { "IPv6" } else { "IPv4" }]
        }
        _ => vec!["IPv4", "IPv6"],
    }
}

/// Upstream's `getEndpointPorts`: one port per service port whose target the
/// pod serves.
fn endpoint_ports(svc: &Value, pod: &Value) -> Vec<Value> {
    svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sp| {
            let n = find_port(pod, sp)?;
            let mut p = json!({
                "name": sp["name"].as_str().unwrap_or(""),
                "port": n,
                "protocol": protocol(&sp["protocol"]),
            });
            if let Some(ap) = sp["appProtocol"].as_str() {
                p["appProtocol"] = json!(ap);
            }
            Some(p)
        })
        .collect()
}

/// Upstream's `NewPortMapKey`: the port set, order-insensitive.
fn port_map_key(ports: &[Value]) -> String {
    let mut keys: Vec<String> = ports.iter().map(Value::to_string).collect();
    keys.sort();
    keys.join(",")
}

/// Upstream's `podToEndpoint`.
fn pod_to_endpoint(pod: &Value, node: Option<&Value>, svc: &Value, ip: &str) -> Value {
    let serving = objects::pod_is_ready(pod);
    let terminating = objects::is_deleting(pod);
    // "ready" is never true for a terminating pod unless publishNotReadyAddresses
    let ready = svc["spec"]["publishNotReadyAddresses"] == true || (serving && !terminating);
    let mut ep = json!({
        "addresses": [ip],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
    });
    if let Some(h) = hostname_for(pod, svc) {
        ep["hostname"] = json!(h);
    }
    ep["targetRef"] = json!({
        "kind": "Pod",
        "namespace": objects::namespace(pod),
        "name": objects::name(pod),
        "uid": objects::uid(pod),
    });
    if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        ep["nodeName"] = json!(n);
    }
    if let Some(z) = node.and_then(|n| n["metadata"]["labels"][LABEL_ZONE].as_str()) {
        if !z.is_empty() {
            ep["zone"] = json!(z);
        }
    }
    ep
}

/// An endpoint's identity (upstream's `hashEndpoint`): addresses, hostname
/// and the pod it stands for; the rest may change in place.
fn endpoint_id(ep: &Value) -> String {
    json!([
        ep["addresses"],
        ep["hostname"],
        ep["targetRef"]["namespace"],
        ep["targetRef"]["name"]
    ])
    .to_string()
}

/// The labels a slice of this Service carries (upstream's `setEndpointSliceLabels`).
fn slice_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = objects::labels(svc);
    for reserved in [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS] {
        labels.remove(reserved);
    }
    if is_headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), json!(""));
    }
    labels.insert(LABEL_SERVICE_NAME.into(), json!(objects::name(svc)));
    labels.insert(LABEL_MANAGED_BY.into(), json!(CONTROLLER_NAME));
    labels
}

/// A new slice (upstream's `newEndpointSlice`), without a name yet.
fn new_slice(svc: &Value, address_type: &str, ports: &[Value]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "generateName": format!("{}-", objects::name(svc)),
            "namespace": objects::namespace(svc),
            "labels": slice_labels(svc),
            "ownerReferences": [objects::controller_owner_ref(svc, &service())],
        },
        "addressType": address_type,
        "endpoints": [],
        "ports": ports,
    })
}

/// Desired endpoints of one port set, by identity (ordered, so the fill
/// order is stable).
struct PortGroup {
    ports: Vec<Value>,
    endpoints: BTreeMap<String, Value>,
}

/// What to write for one address type.
#[derive(Default)]
struct Plan {
    create: Vec<Value>,
    update: Vec<Value>,
    delete: Vec<Value>,
}

/// Upstream's `reconcileByPortMapping` for one port set.
fn reconcile_port_group(
    svc: &Value,
    address_type: &str,
    existing: &[Value],
    mut group: PortGroup,
    max: usize,
    plan: &mut Plan,
) {
    let labels = slice_labels(svc);
    let mut unchanged: Vec<Value> = Vec::new();
    let mut to_update: Vec<Value> = Vec::new();
    // 1. keep wanted endpoints where they are, refreshed
    for slice in existing {
        let old = endpoints_of(slice);
        let mut kept = Vec::new();
        let mut changed = false;
        for ep in &old {
            if let Some(want) = group.endpoints.remove(&endpoint_id(ep)) {
                changed |= want != *ep;
                kept.push(want);
            }
        }
        let labels_changed = objects::labels(slice) != labels;
        if changed || kept.len() != old.len() {
            if kept.is_empty() {
                plan.delete.push(slice.clone());
            } else {
                let mut s = slice.clone();
                s["endpoints"] = json!(kept);
                s["metadata"]["labels"] = json!(labels);
                to_update.push(s);
            }
        } else if labels_changed {
            let mut s = slice.clone();
            s["metadata"]["labels"] = json!(labels);
            to_update.push(s);
        } else {
            unchanged.push(slice.clone());
        }
    }
    fn pop(from: &mut BTreeMap<String, Value>, n: usize, into: &mut Value) {
        let mut eps = endpoints_of(into);
        while eps.len() < n {
            let Some((_, ep)) = from.pop_first() else {
                break;
            };
            eps.push(ep);
        }
        into["endpoints"] = json!(eps);
    }
    // 2. fill the slices being updated anyway, fullest first
    to_update.sort_by_key(|s| std::cmp::Reverse(endpoints_of(s).len()));
    for s in &mut to_update {
        pop(&mut group.endpoints, max, s);
    }
    // 3. a remainder that fits goes into the fullest unchanged slice with
    //    room, the rest into new slices
    loop {
        let left = group.endpoints.len();
        if left == 0 {
            break;
        }
        let fit = (left < max)
            .then(|| {
                unchanged
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| endpoints_of(s).len() + left <= max)
                    .max_by_key(|(_, s)| endpoints_of(s).len())
                    .map(|(i, _)| i)
            })
            .flatten();
        match fit {
            Some(i) => {
                let mut s = unchanged.remove(i);
                pop(&mut group.endpoints, max, &mut s);
                to_update.push(s);
            }
            None => {
                let mut s = new_slice(svc, address_type, &group.ports);
                pop(&mut group.endpoints, max, &mut s);
                plan.create.push(s);
            }
        }
    }
    plan.update.extend(to_update);
}

/// Upstream's placeholder: no endpoints, no ports, the Service's labels.
fn is_placeholder(slice: &Value, svc: &Value, address_type: &str) -> bool {
    endpoints_of(slice).is_empty()
        && ports_of(slice).is_empty()
        && slice["addressType"] == address_type
        && objects::labels(slice) == slice_labels(svc)
}

/// Upstream's `reconcileByAddressType`: the plan for one address type.
fn reconcile_address_type(
    svc: &Value,
    address_type: &str,
    pods: &[(&Value, Option<&Value>)],
    existing: Vec<Value>,
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut groups: BTreeMap<String, PortGroup> = BTreeMap::new();
    for &(p, node) in pods {
        let ports = endpoint_ports(svc, p);
        let group = groups
            .entry(port_map_key(&ports))
            .or_insert_with(|| PortGroup {
                ports,
                endpoints: BTreeMap::new(),
            });
        if let Some(ip) = pod_ip_of_family(p, address_type) {
            let ep = pod_to_endpoint(p, node, svc, ip);
            group.endpoints.insert(endpoint_id(&ep), ep);
        }
    }
    let existing_count = existing.len();
    let mut by_ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for s in existing {
        if objects::is_controlled_by(&s, objects::uid(svc)) {
            by_ports
                .entry(port_map_key(&ports_of(&s)))
                .or_default()
                .push(s);
        } else {
            // labelled for this Service but not its own (an older namesake's)
            plan.delete.push(s);
        }
    }
    for (key, group) in groups {
        let slices = by_ports.remove(&key).unwrap_or_default();
        reconcile_port_group(svc, address_type, &slices, group, max, &mut plan);
    }
    plan.delete.extend(by_ports.into_values().flatten());
    if existing_count == plan.delete.len() && plan.create.is_empty() {
        if plan.delete.len() == 1 && is_placeholder(&plan.delete[0], svc, address_type) {
            plan.delete.clear();
        } else {
            plan.create.push(new_slice(svc, address_type, &[]));
        }
    }
    // upstream's `finalize`: turn a delete and a create into one update
    let mut deletes = Vec::new();
    for d in std::mem::take(&mut plan.delete) {
        if !plan.create.is_empty() && objects::is_controlled_by(&d, objects::uid(svc)) {
            let c = plan.create.remove(0);
            let mut s = d;
            for f in ["addressType", "endpoints", "ports"] {
                s[f] = c[f].clone();
            }
            s["metadata"]["labels"] = c["metadata"]["labels"].clone();
            plan.update.push(s);
        } else {
            deletes.push(d);
        }
    }
    plan.delete = deletes;
    plan
}

/// Upstream's `syncService` for the Service `ns/name`.
pub fn sync_service(
    api: &impl Api,
    config: &Config,
    ns: &str,
    name: &str,
) -> Result<(), PluginError> {
    // A deleted Service's slices go with it through their ownerReference.
    let Some(svc) = not_found_is_none(api.get(&service(), ns, name))? else {
        return Ok(());
    };
    if is_external_name(&svc) {
        return Ok(());
    }
    let Some(sel) = selector(&svc) else {
        return Ok(());
    };
    let pods: Vec<Value> = api
        .list(&pod(), ns, &selector_string(sel))
        .map_err(internal)?
        .into_iter()
        .filter(|p| selects(&svc, p) && should_pod_be_in_endpoints(p, true))
        .collect();
    // The pods' nodes, for `zone`; a pod whose node is missing is left out
    // (unless publishNotReadyAddresses) and the Service retried, as upstream.
    let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let mut nodes: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for p in &pods {
        let node_name = p["spec"]["nodeName"].as_str().unwrap_or("");
        if !node_name.is_empty() && !nodes.contains_key(node_name) {
            let n = not_found_is_none(api.get(&node(), "", node_name))?;
            nodes.insert(node_name.to_string(), n);
        }
    }
    let mut missing_node = None;
    let mut with_nodes = Vec::new();
    for p in &pods {
        let node_name = p["spec"]["nodeName"].as_str().unwrap_or("");
        let n = nodes.get(node_name).and_then(Option::as_ref);
        if n.is_none() && !publish_not_ready {
            missing_node = Some(format!(
                "skipping pod {} of service {ns}/{name}: node {node_name:?} not found",
                objects::name(p)
            ));
            continue;
        }
        with_nodes.push((p, n));
    }
    let selector = format!("{LABEL_SERVICE_NAME}={name},{LABEL_MANAGED_BY}={CONTROLLER_NAME}");
    let mut existing: Vec<Value> = api
        .list(&endpoint_slice(), ns, &selector)
        .map_err(internal)?
        .into_iter()
        .filter(|s| !objects::is_deleting(s))
        .collect();
    existing.sort_by(|a, b| objects::name(a).cmp(objects::name(b)));
    let types = address_types(&svc);
    let mut plan = Plan::default();
    let (supported, unsupported): (Vec<Value>, Vec<Value>) = existing
        .into_iter()
        .partition(|s| types.iter().any(|t| s["addressType"] == *t));
    plan.delete.extend(unsupported);
    for t in &types {
        let of_type: Vec<Value> = supported
            .iter()
            .filter(|s| s["addressType"] == *t)
            .cloned()
            .collect();
        let p = reconcile_address_type(
            &svc,
            t,
            &with_nodes,
            of_type,
            config.max_endpoints_per_slice,
        );
        plan.create.extend(p.create);
        plan.update.extend(p.update);
        plan.delete.extend(p.delete);
    }
    let trigger = with_nodes
        .iter()
        .filter_map(|(p, _)| pod_trigger_time(p))
        .chain(objects::parse_rfc3339(
            svc["metadata"]["creationTimestamp"].as_str().unwrap_or(""),
        ))
        .max();
    // No new slices for a Service being deleted: the garbage collector would
    // race them.
    if !objects::is_deleting(&svc) {
        for mut s in plan.create {
            set_trigger_time(&mut s, trigger);
            api.create(&endpoint_slice(), ns, &s).map_err(internal)?;
        }
    }
    for mut s in plan.update {
        set_trigger_time(&mut s, trigger);
        api.update(&endpoint_slice(), ns, &s).map_err(internal)?;
    }
    for s in plan.delete {
        match api.delete(&endpoint_slice(), ns, objects::name(&s), "") {
            Ok(()) | Err(ObjectError::NotFound) => {}
            Err(e) => return Err(internal(e)),
        }
    }
    match missing_node {
        Some(m) => Err(PluginError::Internal(m)),
        None => Ok(()),
    }
}

impl Controller for EndpointSliceController {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "endpointslice".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: service(),
            watches: vec![
                Watch {
                    kind: pod(),
                    mapping: WatchMapping::Object,
                },
                Watch {
                    kind: endpoint_slice(),
                    mapping: WatchMapping::Owner,
                },
            ],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Config::parse(config)?;
        Ok(())
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &self.config, &key)
    }
}

trellis_sdk::export_controller!(EndpointSliceController);

#[cfg(test)]
mod tests;
