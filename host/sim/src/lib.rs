//! Simulated nodes, like KWOK: each registers a Node (capacity, labels,
//! taints, Ready), renews its Lease in `kube-node-lease`, and plays the
//! kubelet for pods bound to it: a pending pod becomes Running (with an IP and
//! ready containers) and a pod being deleted gracefully is finished off. With
//! no containers behind them, thousands fit on one machine, so schedulers and
//! controllers can be exercised at scale.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = trellis_client::Client::from_kubeconfig("/tmp/trellis/kubeconfig")?;
//! let sim = trellis_sim::SimNodes::register(&client, &trellis_sim::NodeTemplate::default(), 100).await?;
//! sim.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use trellis_client::{Client, ClientError, ListParams, Patch, Resource};

/// What every simulated node looks like.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    /// Name prefix; nodes are `PREFIX-00001`, ...
    pub prefix: String,
    /// CPU capacity (a Kubernetes quantity).
    pub cpu: String,
    /// Memory capacity.
    pub memory: String,
    /// Pod capacity.
    pub pods: u32,
    /// Spread nodes over this many zones (`topology.kubernetes.io/zone=zone-N`).
    pub zones: u32,
    /// Extra labels.
    pub labels: Vec<(String, String)>,
    /// Taints as `key=value:Effect`.
    pub taints: Vec<String>,
}

impl Default for NodeTemplate {
    fn default() -> Self {
        Self {
            prefix: "sim-node".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: 110,
            zones: 3,
            labels: Vec::new(),
            taints: Vec::new(),
        }
    }
}

/// Why simulation stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The API server refused or could not be reached.
    #[error("simulated nodes: {0}")]
    Client(#[from] ClientError),
    /// A taint is not `key[=value]:Effect`.
    #[error("taint {0:?} is not key[=value]:Effect with Effect NoSchedule, PreferNoSchedule or NoExecute")]
    BadTaint(String),
}

fn nodes() -> Resource {
    Resource::new("", "v1", "nodes", false)
}
fn pods() -> Resource {
    Resource::new("", "v1", "pods", true)
}
fn leases() -> Resource {
    Resource::new("coordination.k8s.io", "v1", "leases", true)
}

use trellis_client::now_rfc3339 as now;

fn parse_taint(t: &str) -> Result<Value, SimError> {
    let (kv, effect) = t
        .rsplit_once(':')
        .ok_or_else(|| SimError::BadTaint(t.into()))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(SimError::BadTaint(t.into()));
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    if key.is_empty() {
        return Err(SimError::BadTaint(t.into()));
    }
    Ok(json!({"key": key, "value": value, "effect": effect}))
}

fn conditions(ready: &str) -> Value {
    let t = now();
    let c = |ty: &str, status: &str, reason: &str, message: &str| json!({"type": ty, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": t, "lastTransitionTime": t});
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "simulated node has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "simulated node has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "simulated node has sufficient PID available"
        ),
        c(
            "Ready",
            ready,
            "KubeletReady",
            "simulated node is posting ready status"
        ),
    ])
}

/// A set of registered simulated nodes.
pub struct SimNodes {
    client: Client,
    /// Node name → its InternalIP.
    nodes: Arc<HashMap<String, String>>,
}

impl SimNodes {
    /// Register `count` nodes from `template` (existing ones are kept).
    pub async fn register(
        client: &Client,
        template: &NodeTemplate,
        count: usize,
    ) -> Result<Self, SimError> {
        let taints: Vec<Value> = template
            .taints
            .iter()
            .map(|t| parse_taint(t))
            .collect::<Result<_, _>>()?;
        let mut names = HashMap::new();
        for i in 1..=count {
            let name = format!("{}-{i:05}", template.prefix);
            let mut labels = json!({
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "simulated",
                "trellis.dev/simulated": "true",
            });
            if template.zones > 0 {
                labels["topology.kubernetes.io/zone"] =
                    json!(format!("zone-{}", (i - 1) as u32 % template.zones));
            }
            for (k, v) in &template.labels {
                labels[k] = json!(v);
            }
            let ip = format!("10.{}.{}.1", (i >> 8) & 0xff, i & 0xff);
            let capacity = json!({"cpu": template.cpu, "memory": template.memory, "pods": template.pods.to_string(), "ephemeral-storage": "100Gi"});
            let node = json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels, "annotations": {"trellis.dev/simulated": "true"}},
                "spec": {"taints": taints, "podCIDR": format!("10.{}.{}.0/24", (i >> 8) & 0xff, i & 0xff)},
                "status": {
                    "capacity": capacity, "allocatable": capacity,
                    "conditions": conditions("True"),
                    "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0-trellis-sim", "operatingSystem": "linux", "architecture": "amd64",
                                 "containerRuntimeVersion": "simulated://0", "osImage": "simulated", "kernelVersion": "simulated"},
                },
            });
            match client.create(&nodes(), "", &node).await {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e.into()),
            }
            names.insert(name, ip);
        }
        tracing::info!(count, "simulated nodes registered");
        Ok(Self {
            client: client.clone(),
            nodes: Arc::new(names),
        })
    }

    /// Names of the nodes.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.nodes.keys().cloned().collect();
        v.sort();
        v
    }

    /// Renew one Lease per node (the node heartbeat upstream uses).
    pub async fn heartbeat(&self) -> Result<(), SimError> {
        for name in self.nodes.keys() {
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": format!("{}", now().replace('Z', ".000000Z"))},
            });
            let patch = json!({"spec": {"renewTime": lease["spec"]["renewTime"]}});
            match self
                .client
                .patch(&leases(), "kube-node-lease", name, "", Patch::Merge, &patch)
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    self.client
                        .create(&leases(), "kube-node-lease", &lease)
                        .await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Play the kubelet for one pod event.
    async fn on_pod(&self, pod: &Value) -> Result<(), SimError> {
        let Some(host_ip) = pod["spec"]["nodeName"]
            .as_str()
            .and_then(|n| self.nodes.get(n))
        else {
            return Ok(());
        };
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            // The containers "stopped": finish the graceful deletion.
            match self.client.delete(&pods(), ns, name, Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}))).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_not_found() || e.is_conflict() => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        if pod["status"]["phase"] != "Pending" {
            return Ok(());
        }
        let pod_ip = format!(
            "{}.{}",
            host_ip.rsplit_once('.').map(|x| x.0).unwrap_or("10.0.0"),
            2 + (name.len() % 250)
        );
        let t = now();
        let statuses: Vec<Value> = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true, "started": true,
                             "restartCount": 0, "state": {"running": {"startedAt": t}}}))
            .collect();
        let status = json!({"status": {
            "phase": "Running", "hostIP": host_ip, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": t,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": "True", "lastTransitionTime": t},
            ],
            "containerStatuses": statuses,
        }});
        match self
            .client
            .patch(&pods(), ns, name, "status", Patch::Merge, &status)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Heartbeat and run bound pods until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SimError> {
        tokio::pin!(shutdown);
        let mut beat = tokio::time::interval(Duration::from_secs(10));
        let mut rv = String::new();
        loop {
            if rv.is_empty() {
                let list = self
                    .client
                    .list(&pods(), "", &ListParams::default())
                    .await?;
                for p in list.items() {
                    self.on_pod(p).await?;
                }
                rv = list.resource_version().to_string();
            }
            let mut watch = self
                .client
                .watch(&pods(), "", &ListParams::default(), &rv)
                .await?;
            loop {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = beat.tick() => self.heartbeat().await?,
                    ev = watch.next() => match ev {
                        Ok(Some(ev)) => {
                            if let Some(v) = ev.object["metadata"]["resourceVersion"].as_str() {
                                rv = v.to_string();
                            }
                            if ev.kind == "ADDED" || ev.kind == "MODIFIED" {
                                self.on_pod(&ev.object).await?;
                            }
                        }
                        Ok(None) => break,
                        Err(e) if e.is_gone() => {
                            rv.clear();
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taints_parse_like_kubectl_taint() {
        assert_eq!(
            parse_taint("gpu=true:NoSchedule").unwrap(),
            json!({"key": "gpu", "value": "true", "effect": "NoSchedule"})
        );
        assert_eq!(parse_taint("edge:NoExecute").unwrap()["value"], "");
        assert!(parse_taint("gpu=true").is_err());
        assert!(parse_taint("gpu=true:Sometimes").is_err());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now();
        assert_eq!(t.len(), 20);
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T');
    }
}
