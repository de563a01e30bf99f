//! Ending a pod: graceful termination (SIGTERM, the grace period, then
//! SIGKILL), the final status, removal of the API object (the agent finishes
//! a graceful deletion, as kubelet does), and cleanup of everything the pod
//! had on the node.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use trellis_image::ImageStore;
use trellis_runtime::shim::{ShimClient, Status};

use super::worker::Worker;
use super::{pods, Ctx};

impl Worker {
    /// Stop every container within the grace period, write the final
    /// status, delete the pod object and clean up.
    pub(crate) async fn terminate(&mut self) {
        let grace = self.pod["metadata"]["deletionGracePeriodSeconds"]
            .as_u64()
            .or_else(|| self.pod["spec"]["terminationGracePeriodSeconds"].as_u64())
            .unwrap_or(30);
        let grace = if self.force_deleted { 0 } else { grace };
        self.probing.clear();
        let shim = self.rec.shim.clone();
        let shim2 = shim.clone();
        let states = tokio::task::spawn_blocking(move || shim2.state())
            .await
            .ok()
            .and_then(Result::ok);
        if let Some(states) = states {
            let running: Vec<String> = states
                .into_iter()
                .filter(|s| s.status == Status::Running)
                .map(|s| s.id)
                .collect();
            for id in &running {
                let name = id.rsplit_once('.').map_or(id.as_str(), |(n, _)| n);
                self.ctx.events.record(
                    &self.pod,
                    "Normal",
                    "Killing",
                    &format!("Stopping container {name}"),
                    Some(name),
                );
            }
            let shim2 = shim.clone();
            tokio::task::spawn_blocking(move || {
                stop_all(&shim2, &running, Duration::from_secs(grace))
            })
            .await
            .ok();
            if let Ok(states) = tokio::task::spawn_blocking(move || shim.state()).await {
                self.states = states.unwrap_or_default();
            }
        }
        if !self.force_deleted {
            // The final status, then the object goes (grace 0, this uid only).
            self.write_final_status().await;
            let opts = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                              "preconditions": {"uid": self.uid}});
            match self
                .ctx
                .client
                .delete(&pods(), &self.ns, &self.name, Some(&opts))
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() || e.is_conflict() => {}
                Err(e) => {
                    tracing::warn!(pod = %self.name, error = %e, "cannot finish the pod's deletion")
                }
            }
        }
        if let Some(v) = self.volumes.take() {
            if let Err(e) = v.cleanup() {
                tracing::warn!(pod = %self.name, error = %e, "cannot clean up volumes");
            }
        }
        remove_leftover(self.ctx.clone(), self.uid.clone()).await;
    }

    async fn write_final_status(&mut self) {
        let mut status = self.compute_status();
        if let Some(p) = self.pod["status"]["phase"].as_str() {
            // A pod being deleted keeps its phase unless it finished.
            if !matches!(status["phase"].as_str(), Some("Succeeded" | "Failed")) {
                status["phase"] = json!(p);
            }
        }
        self.patch_status(status).await;
    }
}

/// SIGTERM every run, SIGKILL what is left after `grace`.
pub(crate) fn stop_all(shim: &ShimClient, ids: &[String], grace: Duration) {
    for id in ids {
        shim.kill(id, 15).ok();
    }
    let deadline = Instant::now() + grace;
    let alive = |shim: &ShimClient| -> Vec<String> {
        shim.state()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s.status == Status::Running && ids.contains(&s.id))
            .map(|s| s.id)
            .collect()
    };
    loop {
        let left = alive(shim);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            for id in &left {
                shim.kill(id, 9).ok();
            }
            let until = Instant::now() + Duration::from_secs(10);
            while !alive(shim).is_empty() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Delete the containers of the pod whose directories are `dir` (data) and
/// `run` (runtime state), stop its shim, and release its root filesystems and
/// volumes. Blocking; the directories stay.
pub(crate) fn release_pod(images: &ImageStore, dir: &Path, run: &Path) {
    let shim = ShimClient::new(run);
    if let Ok(states) = shim.state() {
        for s in states {
            shim.delete(&s.id).ok();
        }
        shim.shutdown().ok();
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("containers")) {
        for e in entries.flatten() {
            if let Err(err) = images.release_rootfs(&e.path()) {
                tracing::warn!(error = %err, "releasing a root filesystem");
            }
        }
    }
    if let Err(e) = crate::volumes::cleanup_dir(&dir.join("volumes")) {
        tracing::warn!(error = %e, dir = %dir.display(), "cleaning up volumes");
    }
}

/// Kill and remove everything pod `uid` has on the node: containers, shim,
/// root filesystems, network, volumes, its directory.
pub(crate) async fn remove_leftover(ctx: Arc<Ctx>, uid: String) {
    let dir = ctx.pod_dir(&uid);
    let run = ctx.pod_run_dir(&uid);
    let images = ctx.images.clone();
    let network = ctx.network.clone();
    tokio::task::spawn_blocking(move || {
        release_pod(&images, &dir, &run);
        if let Err(e) = network.teardown(&uid) {
            tracing::warn!(error = %e, uid, "tearing down the pod network");
        }
        // The shim removes its socket as it exits.
        let until = Instant::now() + Duration::from_secs(5);
        while run.join(trellis_runtime::shim::SOCKET).exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in [&run, &dir] {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(error = %e, dir = %dir.display(), "removing the pod directory");
                }
            }
        }
    })
    .await
    .ok();
}
