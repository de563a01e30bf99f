//! Kubernetes JSON (Node and Pod objects) to the scheduler contract's records.
//! The scheduler runtime and the test kit both feed plugins through here, so a
//! fixture written as ordinary manifests reaches a plugin exactly as a real
//! object would.

use serde_json::Value;
use trellis_types::quantity::{parse_bytes, parse_cpu_milli, QuantityError};

use super::scheduler::{
    Container, HostPort, Label, LabelSelector, Node, NodeAffinity, NodeImage, NodeSelectorTerm,
    PlacedPod, Pod, PodAffinity, PodAffinityTerm, PreferredSchedulingTerm, Requirement, Resources,
    SelectorOperator, Taint, TaintEffect, Toleration, TolerationOperator, TopologySpreadConstraint,
    UnsatisfiableAction, WeightedPodAffinityTerm,
};

/// Why an object could not be converted; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    /// JSON path of the bad field, e.g. `spec.containers[0].resources.requests.cpu`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

fn err(field: &str, message: impl Into<String>) -> ConvertError {
    ConvertError {
        field: field.to_string(),
        message: message.into(),
    }
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn labels(v: &Value) -> Vec<Label> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| Label {
                    key: k.clone(),
                    value: s(v),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// Zero of every resource.
pub fn zero() -> Resources {
    Resources {
        milli_cpu: 0,
        memory: 0,
        ephemeral_storage: 0,
        pods: 0,
        scalar: Vec::new(),
    }
}

/// A resource list (`{"cpu": "500m", "memory": "1Gi", ...}`).
pub fn resources(v: &Value, field: &str) -> Result<Resources, ConvertError> {
    let mut r = zero();
    let Some(m) = v.as_object() else {
        return Ok(r);
    };
    for (name, q) in m {
        let f = format!("{field}.{name}");
        let text = match q {
            Value::String(t) => t.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(err(&f, "must be a quantity string")),
        };
        let qe = |e: QuantityError| err(&f, e.to_string());
        match name.as_str() {
            "cpu" => r.milli_cpu = parse_cpu_milli(&text).map_err(qe)?,
            "memory" => r.memory = parse_bytes(&text).map_err(qe)?,
            "ephemeral-storage" => r.ephemeral_storage = parse_bytes(&text).map_err(qe)?,
            "pods" => r.pods = parse_bytes(&text).map_err(qe)?,
            other => r
                .scalar
                .push((other.to_string(), parse_bytes(&text).map_err(qe)?)),
        }
    }
    Ok(r)
}

fn effect(v: &Value, field: &str) -> Result<TaintEffect, ConvertError> {
    match v.as_str() {
        Some("NoSchedule") => Ok(TaintEffect::NoSchedule),
        Some("PreferNoSchedule") => Ok(TaintEffect::PreferNoSchedule),
        Some("NoExecute") => Ok(TaintEffect::NoExecute),
        other => Err(err(field, format!("unsupported value {other:?}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\""))),
    }
}

/// A `Node` object.
pub fn node(v: &Value) -> Result<Node, ConvertError> {
    let name = s(&v["metadata"]["name"]);
    if name.is_empty() {
        return Err(err("metadata.name", "Required value"));
    }
    let taints = arr(&v["spec"]["taints"])
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(Taint {
                key: s(&t["key"]),
                value: s(&t["value"]),
                effect: effect(&t["effect"], &format!("spec.taints[{i}].effect"))?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let images = arr(&v["status"]["images"])
        .iter()
        .map(|i| NodeImage {
            names: arr(&i["names"]).iter().map(s).collect(),
            size_bytes: i["sizeBytes"].as_i64().unwrap_or(0),
        })
        .collect();
    let alloc = if v["status"]["allocatable"].is_object() {
        &v["status"]["allocatable"]
    } else {
        &v["status"]["capacity"]
    };
    Ok(Node {
        name,
        labels: labels(&v["metadata"]["labels"]),
        taints,
        allocatable: resources(alloc, "status.allocatable")?,
        unschedulable: v["spec"]["unschedulable"].as_bool().unwrap_or(false),
        images,
    })
}

fn operator(v: &Value, field: &str) -> Result<SelectorOperator, ConvertError> {
    Ok(match v.as_str() {
        Some("In") => SelectorOperator::In,
        Some("NotIn") => SelectorOperator::NotIn,
        Some("Exists") => SelectorOperator::Exists,
        Some("DoesNotExist") => SelectorOperator::DoesNotExist,
        Some("Gt") => SelectorOperator::Gt,
        Some("Lt") => SelectorOperator::Lt,
        other => {
            return Err(err(
                field,
                format!("not a valid selector operator: {other:?}"),
            ))
        }
    })
}

fn requirements(v: &Value, field: &str) -> Result<Vec<Requirement>, ConvertError> {
    arr(v)
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(Requirement {
                key: s(&r["key"]),
                operator: operator(&r["operator"], &format!("{field}[{i}].operator"))?,
                values: arr(&r["values"]).iter().map(s).collect(),
            })
        })
        .collect()
}

fn label_selector(v: &Value, field: &str) -> Result<Option<LabelSelector>, ConvertError> {
    if v.is_null() {
        return Ok(None);
    }
    Ok(Some(LabelSelector {
        match_labels: labels(&v["matchLabels"]),
        match_expressions: requirements(
            &v["matchExpressions"],
            &format!("{field}.matchExpressions"),
        )?,
    }))
}

fn term(v: &Value, field: &str) -> Result<NodeSelectorTerm, ConvertError> {
    Ok(NodeSelectorTerm {
        match_expressions: requirements(
            &v["matchExpressions"],
            &format!("{field}.matchExpressions"),
        )?,
        match_fields: requirements(&v["matchFields"], &format!("{field}.matchFields"))?,
    })
}

fn affinity_term(v: &Value, field: &str) -> Result<PodAffinityTerm, ConvertError> {
    Ok(PodAffinityTerm {
        label_selector: label_selector(&v["labelSelector"], &format!("{field}.labelSelector"))?,
        namespaces: arr(&v["namespaces"]).iter().map(s).collect(),
        namespace_selector: label_selector(
            &v["namespaceSelector"],
            &format!("{field}.namespaceSelector"),
        )?,
        topology_key: s(&v["topologyKey"]),
    })
}

fn pod_affinity(v: &Value, field: &str) -> Result<Option<PodAffinity>, ConvertError> {
    if v.is_null() {
        return Ok(None);
    }
    let required = arr(&v["requiredDuringSchedulingIgnoredDuringExecution"])
        .iter()
        .enumerate()
        .map(|(i, t)| {
            affinity_term(
                t,
                &format!("{field}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"),
            )
        })
        .collect::<Result<_, _>>()?;
    let preferred = arr(&v["preferredDuringSchedulingIgnoredDuringExecution"])
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let f = format!("{field}.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
            Ok(WeightedPodAffinityTerm {
                weight: t["weight"].as_i64().unwrap_or(0) as i32,
                term: affinity_term(&t["podAffinityTerm"], &format!("{f}.podAffinityTerm"))?,
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(Some(PodAffinity {
        required,
        preferred,
    }))
}

fn containers(v: &Value, field: &str) -> Result<Vec<Container>, ConvertError> {
    arr(v)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format!("{field}[{i}]");
            Ok(Container {
                name: s(&c["name"]),
                image: s(&c["image"]),
                requests: resources(
                    &c["resources"]["requests"],
                    &format!("{f}.resources.requests"),
                )?,
                host_ports: arr(&c["ports"])
                    .iter()
                    .filter_map(|p| {
                        let port = p["hostPort"].as_u64().filter(|p| *p > 0 && *p <= 65535)?;
                        Some(HostPort {
                            port: port as u16,
                            protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                            host_ip: s(&p["hostIP"]),
                        })
                    })
                    .collect(),
            })
        })
        .collect()
}

/// A `Pod` object, with the labels of its namespace (for namespace selectors).
pub fn pod(v: &Value, namespace_labels: Vec<Label>) -> Result<Pod, ConvertError> {
    let spec = &v["spec"];
    let aff = &spec["affinity"];
    let node_affinity = if aff["nodeAffinity"].is_null() {
        None
    } else {
        let na = &aff["nodeAffinity"];
        let required = arr(&na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"])
            .iter()
            .enumerate()
            .map(|(i, t)| term(t, &format!("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]")))
            .collect::<Result<_, _>>()?;
        let preferred = arr(&na["preferredDuringSchedulingIgnoredDuringExecution"])
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(PreferredSchedulingTerm {
                    weight: p["weight"].as_i64().unwrap_or(0) as i32,
                    preference: term(&p["preference"], &format!("spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference"))?,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Some(NodeAffinity {
            required,
            preferred,
        })
    };
    let tolerations = arr(&spec["tolerations"])
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(Toleration {
                key: s(&t["key"]),
                operator: match t["operator"].as_str() {
                    None | Some("Equal") => TolerationOperator::Equal,
                    Some("Exists") => TolerationOperator::Exists,
                    Some(o) => {
                        return Err(err(
                            &format!("spec.tolerations[{i}].operator"),
                            format!("unsupported value {o:?}"),
                        ))
                    }
                },
                value: s(&t["value"]),
                effect: match &t["effect"] {
                    Value::Null => None,
                    Value::String(e) if e.is_empty() => None,
                    e => Some(effect(e, &format!("spec.tolerations[{i}].effect"))?),
                },
                toleration_seconds: t["tolerationSeconds"].as_i64(),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let spread = arr(&spec["topologySpreadConstraints"])
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let f = format!("spec.topologySpreadConstraints[{i}]");
            Ok(TopologySpreadConstraint {
                max_skew: c["maxSkew"].as_i64().unwrap_or(1) as i32,
                topology_key: s(&c["topologyKey"]),
                when_unsatisfiable: match c["whenUnsatisfiable"].as_str() {
                    Some("ScheduleAnyway") => UnsatisfiableAction::ScheduleAnyway,
                    None | Some("DoNotSchedule") => UnsatisfiableAction::DoNotSchedule,
                    Some(o) => {
                        return Err(err(
                            &format!("{f}.whenUnsatisfiable"),
                            format!("unsupported value {o:?}"),
                        ))
                    }
                },
                label_selector: label_selector(&c["labelSelector"], &format!("{f}.labelSelector"))?,
                min_domains: c["minDomains"].as_i64().map(|m| m as i32),
            })
        })
        .collect::<Result<_, ConvertError>>()?;
    let node_name = spec["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    Ok(Pod {
        name: s(&v["metadata"]["name"]),
        namespace: v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        uid: s(&v["metadata"]["uid"]),
        labels: labels(&v["metadata"]["labels"]),
        namespace_labels,
        node_name,
        node_selector: labels(&spec["nodeSelector"]),
        node_affinity,
        pod_affinity: pod_affinity(&aff["podAffinity"], "spec.affinity.podAffinity")?,
        pod_anti_affinity: pod_affinity(&aff["podAntiAffinity"], "spec.affinity.podAntiAffinity")?,
        tolerations,
        topology_spread_constraints: spread,
        containers: containers(&spec["containers"], "spec.containers")?,
        init_containers: containers(&spec["initContainers"], "spec.initContainers")?,
        overhead: resources(&spec["overhead"], "spec.overhead")?,
        priority: spec["priority"].as_i64().unwrap_or(0) as i32,
    })
}

/// Effective requests of a pod: max(sum of containers, each init container) + overhead.
pub fn effective_requests(p: &Pod) -> Resources {
    fn merge(into: &mut Resources, r: &Resources, f: fn(i64, i64) -> i64) {
        into.milli_cpu = f(into.milli_cpu, r.milli_cpu);
        into.memory = f(into.memory, r.memory);
        into.ephemeral_storage = f(into.ephemeral_storage, r.ephemeral_storage);
        into.pods = f(into.pods, r.pods);
        for (n, v) in &r.scalar {
            match into.scalar.iter_mut().find(|(m, _)| m == n) {
                Some((_, x)) => *x = f(*x, *v),
                None => into.scalar.push((n.clone(), f(0, *v))),
            }
        }
    }
    let mut sum = zero();
    for c in &p.containers {
        merge(&mut sum, &c.requests, |a, b| a + b);
    }
    for c in &p.init_containers {
        merge(&mut sum, &c.requests, i64::max);
    }
    merge(&mut sum, &p.overhead, |a, b| a + b);
    sum
}

/// A pod already on a node, as other pods' scheduling sees it.
pub fn placed_pod(p: &Pod) -> PlacedPod {
    let required =
        |a: &Option<PodAffinity>| a.as_ref().map(|a| a.required.clone()).unwrap_or_default();
    PlacedPod {
        uid: if p.uid.is_empty() {
            format!("{}/{}", p.namespace, p.name)
        } else {
            p.uid.clone()
        },
        namespace: p.namespace.clone(),
        labels: p.labels.clone(),
        requests: effective_requests(p),
        host_ports: p
            .containers
            .iter()
            .flat_map(|c| c.host_ports.clone())
            .collect(),
        required_anti_affinity: required(&p.pod_anti_affinity),
        required_affinity: required(&p.pod_affinity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn converts_a_node() {
        let n = node(&json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110", "nvidia.com/gpu": "2"}}
        }))
        .unwrap();
        assert_eq!(n.name, "n1");
        assert_eq!(n.allocatable.milli_cpu, 4000);
        assert_eq!(n.allocatable.memory, 8 << 30);
        assert_eq!(n.allocatable.pods, 110);
        assert_eq!(
            n.allocatable.scalar,
            vec![("nvidia.com/gpu".to_string(), 2)]
        );
        assert_eq!(n.taints[0].effect, TaintEffect::NoSchedule);
    }

    #[test]
    fn names_the_bad_field() {
        let e = pod(&json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}}), vec![]).unwrap_err();
        assert_eq!(e.field, "spec.containers[0].resources.requests.cpu");
    }

    #[test]
    fn effective_requests_follow_upstream() {
        let p = pod(&json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}, {"name": "b", "resources": {"requests": {"cpu": "200m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}],
            "overhead": {"cpu": "10m"}
        }}), vec![]).unwrap();
        assert_eq!(effective_requests(&p).milli_cpu, 510);
    }
}
