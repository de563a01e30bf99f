//! OCI bundles: what the agent derived from a pod's container, written as the
//! runtime spec's `config.json` that libcontainer runs.
//!
//! The spec starts from the OCI defaults (runc's: the usual namespaces,
//! `/proc`, `/dev`, `/sys` mounts, masked and read-only paths) and takes
//! containerd's defaults where Kubernetes users expect them: Docker's 14
//! capabilities, privilege escalation allowed, a high `nofile` limit.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Docker's and containerd's default capability set, which Kubernetes pods get.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Path inside the container.
    pub destination: String,
    /// Path on the node.
    pub source: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
    /// Propagation: `rprivate` (the default when empty), `rslave` or
    /// `rshared`.
    #[serde(default)]
    pub propagation: String,
}

/// cgroup limits, from the container's `resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `cpu.shares`, from the CPU request (kubelet: millicores × 1024 / 1000,
    /// at least 2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in µs per [`Resources::cpu_period`], from the CPU limit.
    pub cpu_quota: Option<i64>,
    /// CFS period in µs (kubelet uses 100 ms).
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes.
    pub memory_limit: Option<i64>,
    /// Maximum number of processes.
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// kubelet's mapping of a CPU request and limit (millicores) and a memory
    /// limit (bytes) to cgroup values.
    pub fn from_kubernetes(
        cpu_request_millis: Option<u64>,
        cpu_limit_millis: Option<u64>,
        memory_limit: Option<i64>,
    ) -> Self {
        const PERIOD: u64 = 100_000;
        // kubelet: with no request but a limit, the request defaults to the
        // limit; with neither, the minimum shares.
        let request = cpu_request_millis.or(cpu_limit_millis);
        let shares = request.map_or(2, |m| (m * 1024 / 1000).max(2));
        Self {
            cpu_shares: Some(shares),
            cpu_quota: cpu_limit_millis.map(|m| ((m * PERIOD / 1000) as i64).max(1000)),
            cpu_period: cpu_limit_millis.map(|_| PERIOD),
            memory_limit,
            pids_limit: None,
        }
    }
}

/// One container of a pod, as the runtime needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// The root filesystem on the node (writable).
    pub rootfs: PathBuf,
    /// The process: executable and arguments (already resolved from the
    /// image's entrypoint/cmd and the container's command/args).
    pub args: Vec<String>,
    /// `NAME=value` pairs.
    pub env: Vec<String>,
    /// Working directory ("/" when empty).
    pub cwd: String,
    /// User and group ids.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Hostname inside the container (the pod's name).
    pub hostname: String,
    /// The pod's network namespace; `None` shares the node's (hostNetwork).
    pub netns: Option<PathBuf>,
    /// Bind mounts (volumes, `/etc/hosts`, `/etc/resolv.conf`, the
    /// termination log).
    pub mounts: Vec<BindMount>,
    /// cgroup limits.
    pub resources: Resources,
    /// cgroup path relative to each hierarchy's root, e.g.
    /// `/trellis/pod<uid>/<container>`.
    pub cgroup_path: String,
    /// Root filesystem mounted read-only.
    pub read_only_rootfs: bool,
    /// All capabilities and devices (`securityContext.privileged`).
    pub privileged: bool,
    /// Capabilities added to and dropped from the default set.
    pub cap_add: Vec<String>,
    /// Capabilities dropped (`ALL` drops every one).
    pub cap_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false` sets no_new_privs.
    pub no_new_privileges: bool,
}

impl ContainerConfig {
    /// The runtime spec (`config.json`) for this container.
    pub fn spec(&self) -> Value {
        let mut spec = serde_json::to_value(oci_spec::runtime::Spec::default())
            .expect("the default OCI spec serialises");
        let caps = self.capabilities();
        spec["process"] = json!({
            "terminal": false,
            "user": {
                "uid": self.uid,
                "gid": self.gid,
                "additionalGids": self.additional_gids,
            },
            "args": self.args,
            "env": self.env,
            "cwd": if self.cwd.is_empty() { "/" } else { &self.cwd },
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile(), "soft": nofile()}],
            "noNewPrivileges": self.no_new_privileges,
        });
        spec["root"] = json!({
            "path": self.rootfs,
            "readonly": self.read_only_rootfs,
        });
        spec["hostname"] = json!(self.hostname);

        let mounts = spec["mounts"].as_array_mut().expect("default mounts");
        for m in &self.mounts {
            let propagation = if m.propagation.is_empty() {
                "rprivate"
            } else {
                m.propagation.as_str()
            };
            let mut options = vec!["rbind", propagation];
            options.push(if m.read_only { "ro" } else { "rw" });
            mounts.push(json!({
                "destination": m.destination,
                "type": "bind",
                "source": m.source,
                "options": options,
            }));
        }
        if self.privileged {
            // A privileged container sees /sys read-write.
            for m in mounts.iter_mut() {
                if m["destination"] == "/sys" {
                    m["options"] = json!(["nosuid", "noexec", "nodev"]);
                }
            }
        }

        let linux = &mut spec["linux"];
        let mut namespaces = vec![
            json!({"type": "pid"}),
            json!({"type": "ipc"}),
            json!({"type": "uts"}),
            json!({"type": "mount"}),
        ];
        if let Some(netns) = &self.netns {
            namespaces.push(json!({"type": "network", "path": netns}));
        }
        linux["namespaces"] = json!(namespaces);
        linux["cgroupsPath"] = json!(self.cgroup_path);
        if self.privileged {
            linux["maskedPaths"] = json!([]);
            linux["readonlyPaths"] = json!([]);
        }
        let r = &self.resources;
        let mut resources = json!({
            "devices": [{"allow": self.privileged, "access": "rwm"}],
        });
        let mut cpu = serde_json::Map::new();
        if let Some(s) = r.cpu_shares {
            cpu.insert("shares".into(), json!(s));
        }
        if let Some(q) = r.cpu_quota {
            cpu.insert("quota".into(), json!(q));
        }
        if let Some(p) = r.cpu_period {
            cpu.insert("period".into(), json!(p));
        }
        if !cpu.is_empty() {
            resources["cpu"] = Value::Object(cpu);
        }
        if let Some(m) = r.memory_limit {
            // Swap is not given to pods (kubelet's default): limit + swap = limit.
            resources["memory"] = json!({"limit": m, "swap": m});
        }
        if let Some(p) = r.pids_limit {
            resources["pids"] = json!({"limit": p});
        }
        linux["resources"] = resources;
        spec
    }

    fn capabilities(&self) -> Vec<String> {
        if self.privileged {
            return all_capabilities();
        }
        let norm = |c: &String| {
            let c = c.to_ascii_uppercase();
            if c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            }
        };
        let drop: Vec<String> = self.cap_drop.iter().map(norm).collect();
        let mut caps: Vec<String> = if drop.iter().any(|c| c == "CAP_ALL") {
            Vec::new()
        } else {
            DEFAULT_CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .filter(|c| !drop.contains(c))
                .collect()
        };
        for c in self.cap_add.iter().map(norm) {
            if c == "CAP_ALL" {
                return all_capabilities();
            }
            if !caps.contains(&c) {
                caps.push(c);
            }
        }
        caps
    }

    /// Write `config.json` into `bundle` (created if needed).
    pub fn write_bundle(&self, bundle: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(bundle)?;
        let tmp = bundle.join("config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.spec())?)?;
        std::fs::rename(tmp, bundle.join("config.json"))
    }
}

/// containerd's open-files limit (1048576), or the most this process may
/// give when that is lower: a container cannot be given more.
fn nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok {
        (lim.rlim_max as u64).min(1_048_576)
    } else {
        1024
    }
}

fn all_capabilities() -> Vec<String> {
    // Every capability the OCI spec crate knows, as the kernel names them.
    const ALL: &[&str] = &[
        "CAP_AUDIT_CONTROL",
        "CAP_AUDIT_READ",
        "CAP_AUDIT_WRITE",
        "CAP_BLOCK_SUSPEND",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_KILL",
        "CAP_LEASE",
        "CAP_LINUX_IMMUTABLE",
        "CAP_MAC_ADMIN",
        "CAP_MAC_OVERRIDE",
        "CAP_MKNOD",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_RAW",
        "CAP_PERFMON",
        "CAP_SETGID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_CHROOT",
        "CAP_SYS_MODULE",
        "CAP_SYS_NICE",
        "CAP_SYS_PACCT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
    ];
    ALL.iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_carries_process_namespaces_and_limits() {
        let c = ContainerConfig {
            rootfs: "/r".into(),
            args: vec!["echo".into(), "hi".into()],
            env: vec!["A=1".into()],
            netns: Some("/run/ns/p".into()),
            cgroup_path: "/trellis/podx/c".into(),
            resources: Resources::from_kubernetes(Some(250), Some(500), Some(64 << 20)),
            mounts: vec![BindMount {
                destination: "/data".into(),
                source: "/v/data".into(),
                read_only: true,
                propagation: String::new(),
            }],
            cap_drop: vec!["NET_RAW".into()],
            ..Default::default()
        };
        let s = c.spec();
        assert_eq!(s["process"]["args"], json!(["echo", "hi"]));
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 << 20);
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/ns/p"})));
        let caps = s["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert!(!caps.contains(&json!("CAP_NET_RAW")));
        assert!(caps.contains(&json!("CAP_CHOWN")));
        let m = s["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(m["options"], json!(["rbind", "rprivate", "ro"]));
        // The spec must parse back as an OCI spec.
        let _: oci_spec::runtime::Spec = serde_json::from_value(s).unwrap();
    }

    #[test]
    fn host_network_has_no_network_namespace() {
        let s = ContainerConfig::default().spec();
        let ns = s["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.iter().all(|n| n["type"] != "network"));
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], Value::Null);
    }

    #[test]
    fn kubelet_cpu_shares() {
        assert_eq!(
            Resources::from_kubernetes(None, None, None).cpu_shares,
            Some(2)
        );
        assert_eq!(
            Resources::from_kubernetes(None, Some(1000), None).cpu_shares,
            Some(1024)
        );
        assert_eq!(
            Resources::from_kubernetes(Some(1), None, None).cpu_shares,
            Some(2)
        );
    }
}
