//! The agent's Node: registration with the machine's capacity, then a
//! heartbeat — the Lease in `kube-node-lease` and the Node's conditions — as
//! kubelet does.

use std::time::Duration;

use serde_json::{json, Value};
use trellis_client::{now_rfc3339, Client, ClientError, Patch, Resource};

use crate::AgentConfig;

pub(crate) fn nodes() -> Resource {
    Resource::new("", "v1", "nodes", false)
}

fn leases() -> Resource {
    Resource::new("coordination.k8s.io", "v1", "leases", true)
}

/// What this machine offers.
#[derive(Debug, Clone)]
pub struct Capacity {
    /// Logical CPUs.
    pub cpus: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Pods this node takes.
    pub pods: u64,
    /// Bytes of the filesystem holding the data directory.
    pub ephemeral_storage: u64,
}

impl Capacity {
    /// Read the machine: CPUs, `MemTotal`, the data directory's filesystem.
    pub fn of_machine(data_dir: &std::path::Path, pods: u64) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        let ephemeral_storage = nix_statvfs(data_dir).unwrap_or(0);
        Self {
            cpus,
            memory,
            pods,
            ephemeral_storage,
        }
    }

    fn as_json(&self) -> Value {
        json!({
            "cpu": self.cpus.to_string(),
            "memory": format!("{}Ki", self.memory / 1024),
            "pods": self.pods.to_string(),
            "ephemeral-storage": format!("{}Ki", self.ephemeral_storage / 1024),
        })
    }
}

fn nix_statvfs(path: &std::path::Path) -> Option<u64> {
    rustix::fs::statvfs(path)
        .ok()
        .map(|s| s.f_blocks * s.f_frsize)
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// kubelet's four node conditions, all healthy.
pub(crate) fn conditions(now: &str) -> Value {
    let c = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "trellis agent is posting ready status"
        ),
    ])
}

/// The Node object this agent registers.
pub(crate) fn node_object(cfg: &AgentConfig, cap: &Capacity, images: Value) -> Value {
    let now = now_rfc3339();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let mut labels = json!({
        "kubernetes.io/hostname": cfg.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
    });
    for (k, v) in &cfg.labels {
        labels[k] = json!(v);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": cfg.node_name, "labels": labels},
        "spec": {"podCIDR": cfg.pod_cidr, "podCIDRs": [cfg.pod_cidr]},
        "status": {
            "capacity": cap.as_json(),
            "allocatable": cap.as_json(),
            "conditions": conditions(&now),
            "addresses": [
                {"type": "InternalIP", "address": cfg.node_ip.to_string()},
                {"type": "Hostname", "address": cfg.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": cfg.port}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": kernel_version(),
                "osImage": os_image(),
                "containerRuntimeVersion": concat!("trellis://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": "v1.32.0",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
            "images": images,
        },
    })
}

/// Create the Node, or bring an existing one's status up to date.
pub(crate) async fn register(client: &Client, node: &Value) -> Result<(), ClientError> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    match client.create(&nodes(), "", node).await {
        Ok(_) => {}
        Err(e) if e.is_conflict() => {
            let patch =
                json!({"metadata": {"labels": node["metadata"]["labels"]}, "spec": node["spec"]});
            client
                .patch(&nodes(), "", name, "", Patch::Merge, &patch)
                .await?;
        }
        Err(e) => return Err(e),
    }
    // Status is a subresource: written apart from the object.
    let status = json!({"status": node["status"]});
    client
        .patch(&nodes(), "", name, "status", Patch::Merge, &status)
        .await?;
    Ok(())
}

/// Renew the Lease and post the conditions every `period` until dropped.
pub(crate) async fn heartbeat(
    client: Client,
    name: String,
    period: Duration,
    images: impl Fn() -> Value,
) {
    loop {
        let now = now_rfc3339();
        let renew = now.replace('Z', ".000000Z");
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
        });
        let patch = json!({"spec": {"holderIdentity": name, "renewTime": renew}});
        match client
            .patch(
                &leases(),
                "kube-node-lease",
                &name,
                "",
                Patch::Merge,
                &patch,
            )
            .await
        {
            Err(e) if e.is_not_found() => {
                if let Err(e) = client.create(&leases(), "kube-node-lease", &lease).await {
                    tracing::warn!(error = %e, "cannot create the node lease");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the node lease"),
            Ok(_) => {}
        }
        let status = json!({"status": {"conditions": conditions(&now), "images": images()}});
        if let Err(e) = client
            .patch(&nodes(), "", &name, "status", Patch::Merge, &status)
            .await
        {
            tracing::warn!(error = %e, "cannot post node status");
        }
        tokio::time::sleep(period).await;
    }
}
