//! Upstream's Endpoints controller (`pkg/controller/endpoint`): every Service
//! with a selector has an Endpoints object of the same name listing the
//! addresses of the pods it selects — ready pods under `addresses`, the others
//! under `notReadyAddresses` (all under `addresses` with
//! `publishNotReadyAddresses`) — grouped into subsets by the ports they
//! serve. Services without a selector and `type: ExternalName` ones are left
//! alone; when a Service goes, so does its Endpoints (upstream sets no
//! ownerReference on it).
//!
//! Keys: the primary kind is `v1 Service`; Pods and Endpoints are watched
//! with `Object` mapping, so a key `(ns, name)` may name a Service, a Pod or
//! an Endpoints, and all three share the queue. A key therefore means:
//! reconcile Service `name` (or delete its managed Endpoints when the Service
//! is gone), every Service in `ns` whose selector selects Pod `name` when that
//! pod exists, and every Service in `ns` whose Endpoints list a pod named
//! `name` (so a deleted or relabelled pod leaves them). Each of those costs a
//! list of the namespace's Services and managed Endpoints from the cache.
//!
//! Endpoints this controller writes carry the Service's labels plus
//! `endpoints.kubernetes.io/managed-by: endpoint-controller` (as upstream
//! since 1.33) and `service.kubernetes.io/headless` for headless Services;
//! only Endpoints with that managed-by label are ever deleted.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{endpoints, pod, service};
use trellis_sdk::controller::*;
use trellis_sdk::objects;

use trellis_sdk::services::*;

/// Upstream's `LabelManagedBy`.
pub const LABEL_MANAGED_BY: &str = "endpoints.kubernetes.io/managed-by";
/// Upstream's `ControllerName`, the value of [`LABEL_MANAGED_BY`].
pub const CONTROLLER_NAME: &str = "endpoint-controller";
/// `v1.IsHeadlessService`.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The controller.
#[derive(Default)]
pub struct EndpointsController;

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

fn managed_selector() -> String {
    format!("{LABEL_MANAGED_BY}={CONTROLLER_NAME}")
}

fn is_managed(ep: &Value) -> bool {
    ep["metadata"]["labels"][LABEL_MANAGED_BY] == CONTROLLER_NAME
}

/// Whether an Endpoints lists a pod named `pod_name` (ready or not).
fn references_pod(ep: &Value, pod_name: &str) -> bool {
    ep["subsets"].as_array().into_iter().flatten().any(|s| {
        ["addresses", "notReadyAddresses"].iter().any(|f| {
            s[f].as_array()
                .into_iter()
                .flatten()
                .any(|a| a["targetRef"]["kind"] == "Pod" && a["targetRef"]["name"] == pod_name)
        })
    })
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
    for ep in api
        .list(&endpoints(), ns, &managed_selector())
        .map_err(internal)?
    {
        if references_pod(&ep, name) {
            out.insert(objects::name(&ep).to_string());
        }
    }
    Ok(out)
}

/// Reconcile one key: every Service it concerns.
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    if key.namespace.is_empty() {
        return Ok(Action::AwaitChange);
    }
    let mut first_err = None;
    for svc in services_for_key(api, &key.namespace, &key.name)? {
        if let Err(e) = sync_service(api, &key.namespace, &svc) {
            trellis_sdk::log::warn(&format!("endpoints {}/{svc}: {e:?}", key.namespace));
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(Action::AwaitChange), Err)
}

/// One address per pod as upstream's `podToEndpointAddressForService`.
fn address(pod: &Value, svc: &Value, ip: &str) -> Value {
    let mut a = json!({"ip": ip});
    if let Some(h) = hostname_for(pod, svc) {
        a["hostname"] = json!(h);
    }
    if let Some(n) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        a["nodeName"] = json!(n);
    }
    a["targetRef"] = json!({
        "kind": "Pod",
        "namespace": objects::namespace(pod),
        "name": objects::name(pod),
        "uid": objects::uid(pod),
    });
    a
}

/// An `EndpointPort` for a service port served on `port`.
fn endpoint_port(svc_port: &Value, port: i64) -> Value {
    let mut p = json!({"port": port, "protocol": protocol(&svc_port["protocol"])});
    if let Some(n) = svc_port["name"].as_str().filter(|n| !n.is_empty()) {
        p["name"] = json!(n);
    }
    if let Some(ap) = svc_port["appProtocol"].as_str() {
        p["appProtocol"] = json!(ap);
    }
    p
}

/// A port's name, number and protocol.
type PortKey = (String, i64, String);

/// Per port (`None`: the "no ports" sentinel of a headless Service): the
/// port and its addresses with their readiness.
type ByPort = BTreeMap<Option<PortKey>, (Option<Value>, BTreeMap<AddrKey, bool>)>;

/// A stable order for ports (upstream sorts by a hash; any fixed order does).
fn port_key(p: &Value) -> PortKey {
    (
        p["name"].as_str().unwrap_or("").to_string(),
        p["port"].as_i64().unwrap_or(0),
        p["protocol"].as_str().unwrap_or("").to_string(),
    )
}

/// An address's identity in a repack: IP and pod uid (upstream's `addressKey`).
type AddrKey = (String, String);

fn addr_key(a: &Value) -> AddrKey {
    (
        a["ip"].as_str().unwrap_or("").to_string(),
        a["targetRef"]["uid"].as_str().unwrap_or("").to_string(),
    )
}

/// The subsets for a Service and its pods: upstream's per-pod
/// `addEndpointSubset` followed by `RepackSubsets` — addresses grouped by
/// the exact set of ports they serve — and sorted. Also the newest trigger
/// time of the pods that made it in.
fn desired_subsets(svc: &Value, pods: &[Value]) -> (Vec<Value>, Option<i64>) {
    let publish_not_ready = svc["spec"]["publishNotReadyAddresses"] == true;
    let family = primary_ip_family(svc);
    let svc_ports: Vec<Value> = svc["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let headless = is_headless(svc);
    let mut by_port = ByPort::new();
    let mut all_addrs: BTreeMap<AddrKey, Value> = BTreeMap::new();
    let mut trigger: Option<i64> = None;
    for p in pods {
        if !should_pod_be_in_endpoints(p, publish_not_ready) {
            continue;
        }
        let Some(ip) = pod_ip_of_family(p, family) else {
            continue;
        };
        let a = address(p, svc, ip);
        let k = addr_key(&a);
        let ready = publish_not_ready || objects::pod_is_ready(p);
        let mut add = |port: Option<Value>| {
            let pk = port.as_ref().map(port_key);
            let entry = by_port.entry(pk).or_insert_with(|| (port, BTreeMap::new()));
            // an address ready for one port is ready for all: the same pod
            entry.1.insert(k.clone(), ready);
        };
        let mut added = false;
        if svc_ports.is_empty() {
            if headless {
                add(None);
                added = true;
            }
        } else {
            for sp in &svc_ports {
                if let Some(n) = find_port(p, sp) {
                    add(Some(endpoint_port(sp, n)));
                    added = true;
                }
            }
        }
        if added {
            all_addrs.insert(k, a);
            if let Some(t) = pod_trigger_time(p) {
                trigger = Some(trigger.map_or(t, |x: i64| x.max(t)));
            }
        }
    }
    // group ports by identical address sets
    let mut groups: BTreeMap<Vec<(AddrKey, bool)>, Vec<Value>> = BTreeMap::new();
    for (_, (port, addrs)) in by_port {
        let set: Vec<(AddrKey, bool)> = addrs.into_iter().collect();
        let ports = groups.entry(set).or_default();
        if let Some(p) = port {
            ports.push(p);
        }
    }
    let mut subsets: Vec<Value> = groups
        .into_iter()
        .map(|(set, mut ports)| {
            let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
            for (k, r) in set {
                let a = all_addrs[&k].clone();
                if r {
                    ready.push(a)
                } else {
                    not_ready.push(a)
                }
            }
            ports.sort_by_key(port_key);
            let mut s = Map::new();
            if !ready.is_empty() {
                s.insert("addresses".into(), json!(ready));
            }
            if !not_ready.is_empty() {
                s.insert("notReadyAddresses".into(), json!(not_ready));
            }
            if !ports.is_empty() {
                s.insert("ports".into(), json!(ports));
            }
            Value::Object(s)
        })
        .collect();
    subsets.sort_by_cached_key(|s| s.to_string());
    (subsets, trigger)
}

/// The labels an Endpoints carries: the Service's, the managed-by label, and
/// the headless label when the Service has no cluster IP.
fn desired_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = objects::labels(svc);
    labels.remove(LABEL_HEADLESS);
    labels.insert(LABEL_MANAGED_BY.into(), json!(CONTROLLER_NAME));
    if is_headless(svc) {
        labels.insert(LABEL_HEADLESS.into(), json!(""));
    }
    labels
}

/// Upstream's `syncService` for the Service `ns/name`.
pub fn sync_service(api: &impl Api, ns: &str, name: &str) -> Result<(), PluginError> {
    let current = not_found_is_none(api.get(&endpoints(), ns, name))?;
    let Some(svc) = not_found_is_none(api.get(&service(), ns, name))? else {
        if let Some(ep) = current.filter(is_managed) {
            match api.delete(&endpoints(), ns, objects::name(&ep), "") {
                Ok(()) | Err(ObjectError::NotFound) => {}
                Err(e) => return Err(internal(e)),
            }
        }
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
        .filter(|p| selects(&svc, p))
        .collect();
    let (subsets, pod_trigger) = desired_subsets(&svc, &pods);
    let labels = desired_labels(&svc);
    if let Some(cur) = &current {
        let cur_subsets = cur["subsets"].as_array().cloned().unwrap_or_default();
        if cur_subsets == subsets && objects::labels(cur) == labels {
            return Ok(());
        }
    }
    let mut ep = current.clone().unwrap_or_else(|| {
        json!({"apiVersion": "v1", "kind": "Endpoints",
               "metadata": {"name": name, "namespace": ns}})
    });
    ep["metadata"]["labels"] = Value::Object(labels);
    if subsets.is_empty() {
        if let Some(m) = ep.as_object_mut() {
            m.remove("subsets");
        }
    } else {
        ep["subsets"] = json!(subsets);
    }
    let svc_trigger =
        objects::parse_rfc3339(svc["metadata"]["creationTimestamp"].as_str().unwrap_or(""));
    let trigger = pod_trigger.into_iter().chain(svc_trigger).max();
    set_trigger_time(&mut ep, trigger);
    if current.is_some() {
        api.update(&endpoints(), ns, &ep).map_err(internal)?;
    } else {
        match api.create(&endpoints(), ns, &ep) {
            // made by a reconcile whose write the cache has not shown yet
            Ok(_) | Err(ObjectError::Conflict(_)) => {}
            Err(ObjectError::AccessDenied(m)) | Err(ObjectError::Invalid(m))
                if m.contains("being terminated") => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(())
}

impl Controller for EndpointsController {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "endpoint".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: service(),
            watches: vec![
                Watch {
                    kind: pod(),
                    mapping: WatchMapping::Object,
                },
                Watch {
                    kind: endpoints(),
                    mapping: WatchMapping::Object,
                },
            ],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        trellis_sdk::config::none(config, "endpoint")
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(EndpointsController);

#[cfg(test)]
mod tests;
