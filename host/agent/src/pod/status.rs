//! The pod's `status` as kubelet writes it: phase (kubelet's `getPhase`),
//! conditions, IPs, and a status per container with state, last state,
//! restart count and readiness.

use serde_json::{json, Value};
use trellis_client::now_rfc3339;
use trellis_runtime::shim::{ContainerState, Status};

use super::worker::{specs, Worker};

fn terminated(s: &ContainerState, uid: &str) -> Value {
    let code = s.exit_code.unwrap_or(0);
    let reason = if s.oom_killed {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": code,
        "reason": reason,
        "startedAt": s.started_at,
        "finishedAt": s.finished_at,
        "containerID": format!("trellis://{uid}/{}", s.id),
    });
    if let Some(sig) = s.signal {
        t["signal"] = json!(sig);
    }
    json!({"terminated": t})
}

impl Worker {
    fn container_status(&self, c: &Value, init: bool, inits_done: bool) -> Value {
        let name = c["name"].as_str().unwrap_or_default();
        let runs = self.runs_of(name);
        let latest = runs.first().copied();
        let waiting = self.waiting.get(name);
        let probe = self
            .probing
            .get(name)
            .filter(|p| latest.is_some_and(|l| l.id == p.id));
        let running = latest.is_some_and(|l| l.status == Status::Running);
        let (started, ready) = match (running, probe) {
            (true, Some(p)) => {
                let s = p.status.borrow();
                (s.started, s.ready)
            }
            (true, None) => (true, !init),
            _ => (false, false),
        };
        let (state, last_state) = match (latest, waiting) {
            (Some(l), None) if l.status == Status::Running => (
                json!({"running": {"startedAt": l.started_at}}),
                runs.get(1).map_or(json!({}), |p| terminated(p, &self.uid)),
            ),
            (Some(l), Some(w)) if l.status == Status::Exited => (
                json!({"waiting": {"reason": w.reason, "message": w.message}}),
                terminated(l, &self.uid),
            ),
            (Some(l), None) => (
                terminated(l, &self.uid),
                runs.get(1).map_or(json!({}), |p| terminated(p, &self.uid)),
            ),
            (Some(l), Some(_)) => (json!({"running": {"startedAt": l.started_at}}), json!({})),
            (None, Some(w)) => (
                json!({"waiting": {"reason": w.reason, "message": w.message}}),
                json!({}),
            ),
            (None, None) => {
                let reason = if !init && !inits_done {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                };
                (json!({"waiting": {"reason": reason}}), json!({}))
            }
        };
        let mut st = json!({
            "name": name,
            "image": c["image"],
            "imageID": self.image_ids.get(name).cloned().unwrap_or_default(),
            "ready": ready,
            "started": started,
            "restartCount": latest.map_or(0, |l| l.id.rsplit('.').next().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0)),
            "state": state,
            "lastState": last_state,
        });
        if let Some(l) = latest {
            st["containerID"] = json!(format!("trellis://{}/{}", self.uid, l.id));
        }
        st
    }

    /// The status to write.
    pub(crate) fn compute_status(&self) -> Value {
        let policy = self.pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always");
        let inits = specs(&self.pod, "initContainers");
        let apps = specs(&self.pod, "containers");
        let mut init_failed = false;
        let mut incomplete_inits = Vec::new();
        for c in &inits {
            let name = c["name"].as_str().unwrap_or_default();
            match self.runs_of(name).first() {
                Some(s) if s.status == Status::Exited && s.exit_code == Some(0) => {}
                Some(s) if s.status == Status::Exited && policy == "Never" => {
                    init_failed = true;
                    incomplete_inits.push(name.to_string());
                }
                _ => incomplete_inits.push(name.to_string()),
            }
        }
        let inits_done = incomplete_inits.is_empty();
        let init_statuses: Vec<Value> = inits
            .iter()
            .map(|c| self.container_status(c, true, inits_done))
            .collect();
        let statuses: Vec<Value> = apps
            .iter()
            .map(|c| self.container_status(c, false, inits_done))
            .collect();

        // kubelet's getPhase.
        let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for st in &statuses {
            let state = &st["state"];
            if state["running"].is_object() {
                running += 1;
            } else if state["terminated"].is_object() {
                stopped += 1;
                if state["terminated"]["exitCode"] == 0 {
                    succeeded += 1;
                }
            } else if st["lastState"]["terminated"].is_object() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        }
        let phase = if init_failed {
            "Failed"
        } else if !inits_done || waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            match policy {
                "Always" => "Running",
                _ if stopped == succeeded => "Succeeded",
                "Never" => "Failed",
                _ => "Running",
            }
        } else {
            "Pending"
        };
        let unready: Vec<String> = statuses
            .iter()
            .filter(|s| s["ready"] != true)
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect();
        let finished = matches!(phase, "Succeeded" | "Failed");
        let cond = |ty: &str, ok: bool, reason: &str, message: String| {
            let status = if ok { "True" } else { "False" };
            let mut c = json!({"type": ty, "status": status, "lastProbeTime": null,
                               "lastTransitionTime": self.transition_time(ty, status)});
            if !ok {
                c["reason"] = json!(reason);
                c["message"] = json!(message);
            }
            c
        };
        let ready_reason = if finished {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        };
        let ready_msg = format!("containers with unready status: [{}]", unready.join(" "));
        let mut conditions = vec![
            cond(
                "PodReadyToStartContainers",
                self.sandbox.is_some(),
                "",
                String::new(),
            ),
            cond(
                "Initialized",
                inits_done,
                "ContainersNotInitialized",
                format!(
                    "containers with incomplete status: [{}]",
                    incomplete_inits.join(" ")
                ),
            ),
            cond(
                "Ready",
                unready.is_empty() && !finished,
                ready_reason,
                ready_msg.clone(),
            ),
            cond(
                "ContainersReady",
                unready.is_empty() && !finished,
                ready_reason,
                ready_msg,
            ),
        ];
        if let Some(s) = self.pod["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == "PodScheduled"))
        {
            conditions.push(s.clone());
        }
        let host_ip = self.ctx.cfg.node_ip.to_string();
        let mut status = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time(),
            "containerStatuses": statuses,
        });
        if !inits.is_empty() {
            status["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(sb) = &self.sandbox {
            status["podIP"] = json!(sb.pod_ip);
            status["podIPs"] = json!([{"ip": sb.pod_ip}]);
        }
        if let Some(q) = self.pod["status"]["qosClass"].as_str() {
            status["qosClass"] = json!(q);
        }
        status
    }

    /// When the agent first saw the pod: as written in its status, or as this
    /// worker last wrote it (the pod copy may predate that write), or now.
    fn start_time(&self) -> String {
        [&self.pod["status"], &self.last_status]
            .iter()
            .find_map(|s| s["startTime"].as_str())
            .map_or_else(now_rfc3339, str::to_string)
    }

    /// Keep a condition's transition time while its status stays.
    fn transition_time(&self, ty: &str, status: &str) -> Value {
        let old = self.last_status["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["type"] == ty).cloned());
        match old {
            Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
            _ => json!(now_rfc3339()),
        }
    }
}
