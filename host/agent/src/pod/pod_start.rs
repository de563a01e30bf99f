//! Starting a pod: its sandbox (directory, shim, network namespace, volumes,
//! `/etc/hosts`) once, then each container: image, environment, mounts,
//! command, root filesystem, bundle, and the shim's `run`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use trellis_image::{Image, PullOptions};
use trellis_runtime::bundle::{BindMount, ContainerConfig, Resources};
use trellis_runtime::shim::ContainerState;
use trellis_types::quantity::{parse_bytes, parse_cpu_milli};

use super::worker::Worker;
use crate::env::{self, NodeInfo};
use crate::sources::ApiSources;
use crate::volumes::Volumes;

/// The parts of a pod that outlive its containers.
#[derive(Debug, Clone)]
pub(crate) struct Sandbox {
    pub pod_ip: String,
    pub netns: Option<PathBuf>,
}

/// Why a container could not be started: kubelet's waiting reason, a
/// message, and whether to record it as a warning event.
#[derive(Debug, Clone)]
pub(crate) struct StartError {
    pub reason: &'static str,
    pub message: String,
}

impl StartError {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

impl Worker {
    pub(crate) fn host_network(&self) -> bool {
        self.pod["spec"]["hostNetwork"].as_bool().unwrap_or(false)
    }

    pub(crate) fn node_info(&self) -> NodeInfo {
        let ctx = &self.ctx;
        NodeInfo {
            name: ctx.cfg.node_name.clone(),
            host_ips: vec![ctx.cfg.node_ip.to_string()],
            pod_ips: self
                .sandbox
                .as_ref()
                .map(|s| vec![s.pod_ip.clone()])
                .unwrap_or_default(),
            allocatable_cpu_millis: ctx.capacity.cpus as i64 * 1000,
            allocatable_memory_bytes: ctx.capacity.memory as i64,
            allocatable_ephemeral_storage_bytes: ctx.capacity.ephemeral_storage as i64,
        }
    }

    /// Directory, shim, network and volumes; idempotent, so an agent that
    /// restarts finds the same shim and the same IP.
    pub(crate) async fn ensure_sandbox(&mut self) -> Result<(), StartError> {
        if self.sandbox.is_some() {
            return Ok(());
        }
        let dir = self.rec.dir.clone();
        let run = self.rec.run.clone();
        for d in [&dir, &run] {
            std::fs::create_dir_all(d).map_err(|e| {
                StartError::new(
                    "CreateContainerConfigError",
                    format!("{}: {e}", d.display()),
                )
            })?;
        }
        let meta = json!({"uid": self.uid, "namespace": self.ns, "name": self.name});
        std::fs::write(dir.join("pod.json"), meta.to_string()).ok();
        self.admit().await;
        let shim = self.rec.shim.clone();
        let shims = self.ctx.shims.clone();
        blocking(move || shims.spawn(&shim)).await.map_err(|e| {
            StartError::new(
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e}"),
            )
        })?;
        let sandbox = if self.host_network() {
            Sandbox {
                pod_ip: self.ctx.cfg.node_ip.to_string(),
                netns: None,
            }
        } else {
            let net = self.ctx.network.clone();
            let uid = self.uid.clone();
            let pn = blocking(move || net.setup(&uid)).await.map_err(|e| {
                StartError::new(
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: setting up the pod network: {e}"),
                )
            })?;
            Sandbox {
                pod_ip: pn.ip.to_string(),
                netns: Some(pn.netns),
            }
        };
        self.write_hosts(&run, &sandbox.pod_ip).map_err(|e| {
            StartError::new("FailedCreatePodSandBox", format!("writing /etc/hosts: {e}"))
        })?;
        self.sandbox = Some(sandbox);
        let mut volumes = Volumes::new(dir.join("volumes"));
        let node = self.node_info();
        let sources = ApiSources(self.ctx.client.clone());
        if let Err(e) = volumes.prepare(&self.pod, &node, &sources).await {
            // The sandbox stays; volumes are retried on the next sync.
            return Err(StartError::new("FailedMount", e.to_string()));
        }
        self.volumes = Some(volumes);
        Ok(())
    }

    /// Volumes that failed earlier, retried; configMap, secret and downward
    /// API files brought up to date.
    pub(crate) async fn refresh_volumes(&mut self) -> Result<(), StartError> {
        let node = self.node_info();
        let sources = ApiSources(self.ctx.client.clone());
        match self.volumes.as_mut() {
            Some(v) => v
                .refresh(&self.pod, &node, &sources)
                .await
                .map(drop)
                .map_err(|e| StartError::new("FailedMount", e.to_string())),
            None => {
                let mut v = Volumes::new(self.rec.dir.join("volumes"));
                v.prepare(&self.pod, &node, &sources)
                    .await
                    .map_err(|e| StartError::new("FailedMount", e.to_string()))?;
                self.volumes = Some(v);
                Ok(())
            }
        }
    }

    /// kubelet's managed `/etc/hosts`.
    fn write_hosts(&self, dir: &Path, ip: &str) -> std::io::Result<()> {
        let hostname = self.pod["spec"]["hostname"].as_str().unwrap_or(&self.name);
        let mut hosts = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        if !self.host_network() {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        for alias in self.pod["spec"]["hostAliases"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let names: Vec<&str> = alias["hostnames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|h| h.as_str())
                .collect();
            if let Some(ip) = alias["ip"].as_str() {
                hosts.push_str(&format!(
                    "\n# Entries added by HostAliases.\n{ip}\t{}\n",
                    names.join("\t")
                ));
            }
        }
        std::fs::write(dir.join("etc-hosts"), hosts)?;
        let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(dir.join("resolv.conf"), resolv)
    }

    /// The container's image, pulled per `imagePullPolicy`.
    async fn ensure_image(&mut self, c: &Value) -> Result<Image, StartError> {
        let name = c["name"].as_str().unwrap_or_default();
        let reference = c["image"].as_str().unwrap_or_default().to_string();
        let policy = c["imagePullPolicy"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| default_pull_policy(&reference).to_string());
        let images = self.ctx.images.clone();
        let r2 = reference.clone();
        let local = blocking(move || images.resolve(&r2)).await.map_err(|e| {
            StartError::new(
                "InvalidImageName",
                format!("Failed to apply default image tag {reference:?}: {e}"),
            )
        })?;
        match (policy.as_str(), local) {
            ("Never", Some(img)) | ("IfNotPresent", Some(img)) => {
                self.ctx.events.record(
                    &self.pod,
                    "Normal",
                    "Pulled",
                    &format!("Container image {reference:?} already present on machine"),
                    Some(name),
                );
                Ok(img)
            }
            ("Never", None) => {
                let msg = format!(
                    "Container image {reference:?} is not present with pull policy of Never"
                );
                self.ctx
                    .events
                    .record(&self.pod, "Warning", "ErrImageNeverPull", &msg, Some(name));
                Err(StartError::new("ErrImageNeverPull", msg))
            }
            _ => {
                if let Some(until) = self.pull_backoff.get(name).copied() {
                    if std::time::Instant::now() < until.0 {
                        return Err(StartError::new(
                            "ImagePullBackOff",
                            format!("Back-off pulling image {reference:?}"),
                        ));
                    }
                }
                self.ctx.events.record(
                    &self.pod,
                    "Normal",
                    "Pulling",
                    &format!("Pulling image {reference:?}"),
                    Some(name),
                );
                // A pull may take long: other pods start meanwhile.
                self.start_permit = None;
                let _one_at_a_time = self.ctx.pulls.lock().await;
                let started = std::time::Instant::now();
                let images = self.ctx.images.clone();
                let opts = PullOptions {
                    insecure_registries: self.ctx.cfg.insecure_registries.clone(),
                    ..PullOptions::default()
                };
                let r2 = reference.clone();
                match blocking(move || images.pull(&r2, &opts)).await {
                    Ok(img) => {
                        self.pull_backoff.remove(name);
                        self.ctx.events.record(
                            &self.pod,
                            "Normal",
                            "Pulled",
                            &format!(
                                "Successfully pulled image {reference:?} in {:.3}s. Image size: {} bytes.",
                                started.elapsed().as_secs_f64(),
                                img.size
                            ),
                            Some(name),
                        );
                        Ok(img)
                    }
                    Err(e) => {
                        let msg = format!("Failed to pull image {reference:?}: {e}");
                        self.ctx
                            .events
                            .record(&self.pod, "Warning", "Failed", &msg, Some(name));
                        self.ctx.events.record(
                            &self.pod,
                            "Warning",
                            "Failed",
                            "Error: ErrImagePull",
                            Some(name),
                        );
                        let delay = self
                            .pull_backoff
                            .get(name)
                            .map_or(self.ctx.cfg.backoff_base, |b| {
                                (b.1 * 2).min(self.ctx.cfg.backoff_max)
                            });
                        self.pull_backoff
                            .insert(name.to_string(), (std::time::Instant::now() + delay, delay));
                        Err(StartError::new("ErrImagePull", msg))
                    }
                }
            }
        }
    }

    /// Start run `n` of container `c` (init or app).
    pub(crate) async fn start_container(
        &mut self,
        c: &Value,
        n: u32,
    ) -> Result<ContainerState, StartError> {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let id = format!("{name}.{n}");
        let image = self.ensure_image(c).await?;
        self.image_ids.insert(
            name.clone(),
            image
                .repo_digests()
                .into_iter()
                .next()
                .unwrap_or_else(|| image.id.clone()),
        );
        let sources = ApiSources(self.ctx.client.clone());
        let node = self.node_info();
        let config_error = |e: &dyn std::fmt::Display| {
            StartError::new("CreateContainerConfigError", e.to_string())
        };
        let env = env::container_env(&self.pod, c, &node, &image.config.env, &sources)
            .await
            .map_err(|e| config_error(&e))?;
        let own_env = env::pod_env(&self.pod, c, &node, &sources)
            .await
            .map_err(|e| config_error(&e))?;
        let volumes = self.volumes.as_ref().ok_or_else(|| {
            StartError::new("CreateContainerConfigError", "volumes are not set up yet")
        })?;
        let mounts = volumes
            .mounts(c, &self.pod, &own_env)
            .map_err(|e| config_error(&e))?;
        let args = command_line(c, &image, &own_env);
        if args.is_empty() {
            return Err(StartError::new(
                "CreateContainerError",
                "no command specified: the image has no entrypoint or cmd and the container no command",
            ));
        }
        self.admit().await;
        let dir = self.rec.dir.clone();
        let images = self.ctx.images.clone();
        let img2 = image.clone();
        let root_dir = dir.join("containers").join(&id);
        // Staged only: the shim mounts it in its own mount namespace.
        let staged = blocking(move || images.stage_rootfs(&img2, &root_dir))
            .await
            .map_err(|e| {
                StartError::new(
                    "CreateContainerError",
                    format!("preparing the root filesystem: {e}"),
                )
            })?;
        let sc = merged_security_context(&self.pod, c);
        // A new container's files are its image's: read them in the snapshot.
        let (uid, gid) = resolve_user(&staged.snapshot, &image.config.user, &sc);
        let mut additional_gids: Vec<u32> = self.pod["spec"]["securityContext"]
            ["supplementalGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_u64().map(|g| g as u32))
            .collect();
        if let Some(fs) = self.pod["spec"]["securityContext"]["fsGroup"].as_u64() {
            additional_gids.push(fs as u32);
        }
        let mut binds = vec![
            BindMount {
                destination: "/etc/hosts".into(),
                source: self.rec.run.join("etc-hosts"),
                read_only: false,
                propagation: String::new(),
            },
            BindMount {
                destination: "/etc/resolv.conf".into(),
                source: self.rec.run.join("resolv.conf"),
                read_only: false,
                propagation: String::new(),
            },
        ];
        binds.extend(mounts.into_iter().map(|m| BindMount {
            destination: m.destination,
            source: m.source,
            read_only: m.read_only,
            propagation: m.propagation.oci_option().to_string(),
        }));
        let res = &c["resources"];
        let q_cpu = |v: &Value| {
            v.as_str()
                .and_then(|s| parse_cpu_milli(s).ok())
                .map(|m| m as u64)
        };
        let cfg = ContainerConfig {
            rootfs: staged.rootfs,
            args,
            env: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: c["workingDir"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| image.config.working_dir.clone()),
            uid,
            gid,
            additional_gids,
            hostname: self.pod["spec"]["hostname"]
                .as_str()
                .unwrap_or(&self.name)
                .to_string(),
            netns: self.sandbox.as_ref().and_then(|s| s.netns.clone()),
            mounts: binds,
            resources: Resources::from_kubernetes(
                q_cpu(&res["requests"]["cpu"]),
                q_cpu(&res["limits"]["cpu"]),
                res["limits"]["memory"]
                    .as_str()
                    .and_then(|s| parse_bytes(s).ok()),
            ),
            cgroup_path: format!("/trellis/{}_{id}", self.uid),
            read_only_rootfs: sc["readOnlyRootFilesystem"].as_bool().unwrap_or(false),
            privileged: sc["privileged"].as_bool().unwrap_or(false),
            cap_add: strings(&sc["capabilities"]["add"]),
            cap_drop: strings(&sc["capabilities"]["drop"]),
            no_new_privileges: sc["allowPrivilegeEscalation"] == json!(false),
        };
        let bundle = self.rec.run.join("bundles").join(&id);
        cfg.write_bundle(&bundle).map_err(|e| {
            StartError::new("CreateContainerError", format!("writing the bundle: {e}"))
        })?;
        let log = self.rec.log_path(&name, &id);
        let shim = self.rec.shim.clone();
        let id2 = id.clone();
        let state = blocking(move || shim.run(&id2, &bundle, &log, Some(&staged.dir)))
            .await
            .map_err(|e| StartError::new("RunContainerError", e.to_string()))?;
        self.ctx.events.record(
            &self.pod,
            "Normal",
            "Created",
            &format!("Created container {name}"),
            Some(&name),
        );
        self.ctx.events.record(
            &self.pod,
            "Normal",
            "Started",
            &format!("Started container {name}"),
            Some(&name),
        );
        Ok(state)
    }

    /// Remove run `id` of a container: its shim state, bundle and root.
    pub(crate) async fn remove_run(&self, id: &str) {
        let shim = self.rec.shim.clone();
        let images = self.ctx.images.clone();
        let dir = self.rec.dir.clone();
        let run = self.rec.run.clone();
        let id = id.to_string();
        blocking(move || {
            if let Err(e) = shim.delete(&id) {
                tracing::debug!(error = %e, id, "deleting a container run");
            }
            if let Err(e) = images.release_rootfs(&dir.join("containers").join(&id)) {
                tracing::warn!(error = %e, id, "releasing a root filesystem");
            }
            std::fs::remove_dir_all(run.join("bundles").join(&id)).ok();
        })
        .await;
    }
}

/// kubelet's default: `Always` for `:latest` or no tag, else `IfNotPresent`.
pub(crate) fn default_pull_policy(reference: &str) -> &'static str {
    if reference.contains('@') {
        return "IfNotPresent";
    }
    let last = reference.rsplit('/').next().unwrap_or(reference);
    match last.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// kubelet's rule: `command` replaces the entrypoint (and drops the image's
/// cmd), `args` replaces cmd; `$(VAR)` expands against the pod's variables.
pub(crate) fn command_line(c: &Value, image: &Image, env: &[(String, String)]) -> Vec<String> {
    let command = strings(&c["command"]);
    let args = strings(&c["args"]);
    let mut line = if !command.is_empty() {
        command
    } else {
        image.config.entrypoint.clone()
    };
    if !args.is_empty() {
        line.extend(args);
    } else if c["command"].as_array().is_none_or(|a| a.is_empty()) {
        line.extend(image.config.cmd.iter().cloned());
    }
    line.iter().map(|s| env::expand(s, env)).collect()
}

/// The pod's security context overlaid with the container's.
fn merged_security_context(pod: &Value, c: &Value) -> Value {
    let mut sc = pod["spec"]["securityContext"].clone();
    if !sc.is_object() {
        sc = json!({});
    }
    if let Some(own) = c["securityContext"].as_object() {
        for (k, v) in own {
            sc[k] = v.clone();
        }
    }
    sc
}

/// uid and gid: `runAsUser`/`runAsGroup`, else the image's `User` (a number
/// or a name from the image's `/etc/passwd`), else root.
fn resolve_user(rootfs: &Path, image_user: &str, sc: &Value) -> (u32, u32) {
    let (user, group) = image_user.split_once(':').unwrap_or((image_user, ""));
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
    let lookup = |name: &str| -> Option<(u32, u32)> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name)
                .then(|| (f[2].parse().ok(), f[3].parse().ok()))
                .and_then(|(u, g)| Some((u?, g?)))
        })
    };
    let (mut uid, mut gid) = match user.parse::<u32>() {
        Ok(u) => (u, 0),
        Err(_) if user.is_empty() => (0, 0),
        Err(_) => lookup(user).unwrap_or((0, 0)),
    };
    if let Ok(g) = group.parse::<u32>() {
        gid = g;
    }
    if let Some(u) = sc["runAsUser"].as_u64() {
        uid = u as u32;
    }
    if let Some(g) = sc["runAsGroup"].as_u64() {
        gid = g as u32;
    }
    (uid, gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> Image {
        Image {
            id: "sha256:x".into(),
            digest: "sha256:y".into(),
            references: vec![],
            size: 0,
            config: trellis_image::ImageConfig {
                entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn command_and_args_follow_kubelet() {
        let img = image(&["/ep"], &["c1"]);
        let env = vec![("X".to_string(), "1".to_string())];
        assert_eq!(command_line(&json!({}), &img, &env), ["/ep", "c1"]);
        assert_eq!(
            command_line(&json!({"args": ["a$(X)"]}), &img, &env),
            ["/ep", "a1"]
        );
        assert_eq!(
            command_line(&json!({"command": ["sh"]}), &img, &env),
            ["sh"]
        );
        assert_eq!(
            command_line(
                &json!({"command": ["sh"], "args": ["-c", "$(X)"]}),
                &img,
                &env
            ),
            ["sh", "-c", "1"]
        );
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:1.36"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
