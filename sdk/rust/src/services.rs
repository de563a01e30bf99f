//! Which pods back a Service and on which ports, as upstream's
//! `endpointsliceutil` and `podutil.FindPort` decide it: the shared part of
//! the Endpoints and EndpointSlice controllers.

use crate::objects;
use serde_json::{Map, Value};

/// `v1.EndpointsLastChangeTriggerTime`: when the last change that this
/// Endpoints (or EndpointSlice) object reflects happened.
pub const ANNOTATION_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Set (or, for `None`, remove) [`ANNOTATION_TRIGGER_TIME`] on an Endpoints
/// or EndpointSlice object (Unix seconds); an annotation map left empty goes.
pub fn set_trigger_time(obj: &mut Value, trigger: Option<i64>) {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = serde_json::json!({});
    }
    let ann = obj["metadata"]["annotations"]
        .as_object_mut()
        .expect("an object");
    match trigger {
        Some(t) => {
            ann.insert(
                ANNOTATION_TRIGGER_TIME.into(),
                Value::String(objects::rfc3339(t)),
            );
        }
        None => {
            ann.remove(ANNOTATION_TRIGGER_TIME);
        }
    }
    if ann.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    }
}

/// `spec.selector` when the Service has one (a missing or empty selector
/// means "endpoints are managed by someone else", as upstream's `nil`: an
/// empty map does not survive the API server's storage).
pub fn selector(svc: &Value) -> Option<&Map<String, Value>> {
    svc["spec"]["selector"]
        .as_object()
        .filter(|s| !s.is_empty())
}

/// Whether the Service's selector (a plain label map) selects the pod.
pub fn selects(svc: &Value, pod: &Value) -> bool {
    let Some(sel) = selector(svc) else {
        return false;
    };
    let labels = &pod["metadata"]["labels"];
    sel.iter().all(|(k, v)| labels[k] == *v)
}

/// The selector in the string syntax of `Api::list`.
pub fn selector_string(sel: &Map<String, Value>) -> String {
    sel.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// `type: ExternalName` Services get no endpoints (upstream issue 105986).
pub fn is_external_name(svc: &Value) -> bool {
    svc["spec"]["type"] == "ExternalName"
}

/// `spec.clusterIP: None`.
pub fn is_headless(svc: &Value) -> bool {
    svc["spec"]["clusterIP"] == "None"
}

/// Upstream's `ShouldPodBeInEndpoints`: not terminal, has an IP, and not
/// being deleted unless terminating pods are wanted.
pub fn should_pod_be_in_endpoints(pod: &Value, include_terminating: bool) -> bool {
    if matches!(objects::pod_phase(pod), "Succeeded" | "Failed") {
        return false;
    }
    let has_ip = pod["status"]["podIP"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
        || pod["status"]["podIPs"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if !has_ip {
        return false;
    }
    include_terminating || !objects::is_deleting(pod)
}

/// The pod's IPs: `status.podIPs`, else `status.podIP`.
fn pod_ips(pod: &Value) -> Vec<&str> {
    let mut ips: Vec<&str> = pod["status"]["podIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["ip"].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    if ips.is_empty() {
        if let Some(ip) = pod["status"]["podIP"].as_str().filter(|s| !s.is_empty()) {
            ips.push(ip);
        }
    }
    ips
}

/// The pod's first IP of `family` ("IPv4" or "IPv6").
pub fn pod_ip_of_family<'a>(pod: &'a Value, family: &str) -> Option<&'a str> {
    pod_ips(pod)
        .into_iter()
        .find(|ip| ip.contains(':') == (family == "IPv6"))
}

/// The Service's primary IP family: `spec.ipFamilies[0]`, else the family of
/// `spec.clusterIP`, else IPv4 (upstream's `podToEndpointAddressForService`).
pub fn primary_ip_family(svc: &Value) -> &'static str {
    let first = svc["spec"]["ipFamilies"][0].as_str();
    let v6 = match first {
        Some(f) => f == "IPv6",
        None => svc["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.contains(':')),
    };
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Upstream's `ShouldSetHostname`: the pod names a hostname and its
/// subdomain is this Service, in the same namespace.
pub fn hostname_for<'a>(pod: &'a Value, svc: &Value) -> Option<&'a str> {
    let hostname = pod["spec"]["hostname"].as_str().filter(|h| !h.is_empty())?;
    (pod["spec"]["subdomain"] == svc["metadata"]["name"]
        && objects::namespace(pod) == objects::namespace(svc))
    .then_some(hostname)
}

/// A protocol, defaulted to TCP as the API server does.
pub fn protocol(v: &Value) -> &str {
    v.as_str().filter(|p| !p.is_empty()).unwrap_or("TCP")
}

/// Upstream's `podutil.FindPort`: a numeric `targetPort` as is (defaulting to
/// `port`), a named one looked up among the containers' (and restartable
/// init containers') ports of the same protocol.
pub fn find_port(pod: &Value, svc_port: &Value) -> Option<i64> {
    let target = match &svc_port["targetPort"] {
        Value::Null => svc_port["port"].clone(),
        t => t.clone(),
    };
    match target {
        Value::Number(n) => n.as_i64().filter(|p| *p > 0),
        Value::String(name) => {
            let proto = protocol(&svc_port["protocol"]);
            let sidecars = pod["spec"]["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["restartPolicy"] == "Always");
            pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(sidecars)
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .find(|p| p["name"] == name.as_str() && protocol(&p["protocol"]) == proto)
                .and_then(|p| p["containerPort"].as_i64())
        }
        _ => None,
    }
}

/// When a pod last changed in a way endpoints care about (upstream's trigger
/// time tracker: the Ready condition's last transition).
pub fn pod_trigger_time(pod: &Value) -> Option<i64> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
        .and_then(|c| objects::parse_rfc3339(c["lastTransitionTime"].as_str()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_ports_by_number_and_name() {
        let pod = json!({"spec": {
            "containers": [{"ports": [{"name": "http", "containerPort": 8080},
                                      {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}],
            "initContainers": [{"restartPolicy": "Always", "ports": [{"name": "proxy", "containerPort": 15001}]},
                               {"ports": [{"name": "setup", "containerPort": 9}]}]}});
        assert_eq!(find_port(&pod, &json!({"port": 80})), Some(80));
        assert_eq!(
            find_port(&pod, &json!({"port": 80, "targetPort": 9376})),
            Some(9376)
        );
        assert_eq!(
            find_port(&pod, &json!({"port": 80, "targetPort": "http"})),
            Some(8080)
        );
        assert_eq!(
            find_port(
                &pod,
                &json!({"port": 80, "targetPort": "http", "protocol": "UDP"})
            ),
            None
        );
        assert_eq!(
            find_port(
                &pod,
                &json!({"port": 53, "targetPort": "dns", "protocol": "UDP"})
            ),
            Some(53)
        );
        assert_eq!(
            find_port(&pod, &json!({"port": 1, "targetPort": "proxy"})),
            Some(15001)
        );
        assert_eq!(
            find_port(&pod, &json!({"port": 1, "targetPort": "setup"})),
            None
        );
        assert_eq!(
            find_port(&pod, &json!({"port": 1, "targetPort": "8080"})),
            None
        );
    }

    #[test]
    fn selection_hostnames_and_families() {
        let svc = json!({"metadata": {"name": "web", "namespace": "ns"},
                         "spec": {"selector": {"app": "web"}, "clusterIP": "fd00::10"}});
        let pod = json!({"metadata": {"namespace": "ns", "labels": {"app": "web"}},
                         "spec": {"hostname": "h0", "subdomain": "web"}});
        assert!(selects(&svc, &pod));
        assert!(!selects(&json!({"spec": {"selector": {}}}), &pod));
        assert_eq!(
            selector_string(selector(&svc).unwrap()),
            "app=web".to_string()
        );
        assert_eq!(hostname_for(&pod, &svc), Some("h0"));
        assert_eq!(
            hostname_for(
                &pod,
                &json!({"metadata": {"name": "db", "namespace": "ns"}})
            ),
            None
        );
        assert_eq!(primary_ip_family(&svc), "IPv6");
        assert_eq!(
            primary_ip_family(&json!({"spec": {"ipFamilies": ["IPv4", "IPv6"]}})),
            "IPv4"
        );
        assert!(is_headless(&json!({"spec": {"clusterIP": "None"}})));
        assert_eq!(protocol(&Value::Null), "TCP");
        let mut ep = json!({"metadata": {"name": "web"}});
        set_trigger_time(&mut ep, Some(0));
        assert_eq!(
            ep["metadata"]["annotations"][ANNOTATION_TRIGGER_TIME],
            "1970-01-01T00:00:00Z"
        );
        set_trigger_time(&mut ep, None);
        assert_eq!(ep, json!({"metadata": {"name": "web"}}));
    }

    #[test]
    fn pods_in_endpoints() {
        let running = json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}});
        assert!(should_pod_be_in_endpoints(&running, false));
        assert!(!should_pod_be_in_endpoints(
            &json!({"status": {"phase": "Pending"}}),
            false
        ));
        assert!(!should_pod_be_in_endpoints(
            &json!({"status": {"phase": "Succeeded", "podIP": "10.0.0.1"}}),
            true
        ));
        let deleting = json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"},
                              "status": {"phase": "Running", "podIP": "10.0.0.1"}});
        assert!(!should_pod_be_in_endpoints(&deleting, false));
        assert!(should_pod_be_in_endpoints(&deleting, true));
        let dual = json!({"status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}});
        assert_eq!(pod_ip_of_family(&dual, "IPv6"), Some("fd00::1"));
        assert_eq!(pod_ip_of_family(&dual, "IPv4"), Some("10.0.0.1"));
    }
}
