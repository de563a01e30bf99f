//! One pod's worker: a level-triggered loop. Each pass relists the shim's
//! containers (as kubelet's PLEG relists), starts what should run — init
//! containers one by one, then the app containers — restarts per
//! `restartPolicy` with crash back-off, acts on probe results, and writes the
//! status when it changed. It wakes on a pod update, a probe change, a
//! back-off expiring, or the relist period.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use trellis_client::Patch;
use trellis_plugin_host::PodScope;
use trellis_runtime::shim::{ContainerState, ShimClient, Status};

use super::pod_start::{Sandbox, StartError};
use super::{ns_name, pods, uid_of, Ctx, PodRecord, Runs};
use crate::prober::{ContainerProbes, ProbeStatus};
use crate::volumes::Volumes;

/// How often mounted configMap/secret/downward API files are refreshed.
const VOLUME_REFRESH: Duration = Duration::from_secs(5);
/// A container that ran this long gets its crash back-off reset (kubelet).
const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// Crash back-off of one container.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// What the next restart waits after the exit.
    pub delay: Duration,
}

/// A running container's probes: the forwarding task owns them.
pub(crate) struct Probing {
    pub id: String,
    pub status: watch::Receiver<ProbeStatus>,
    pub task: tokio::task::JoinHandle<()>,
    pub killing: bool,
}

impl Drop for Probing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) struct Worker {
    pub ctx: Arc<Ctx>,
    pub pod: Value,
    pub uid: String,
    pub ns: String,
    pub name: String,
    pub rec: Arc<PodRecord>,
    pub sandbox: Option<Sandbox>,
    pub volumes: Option<Volumes>,
    /// Container name → imageID shown in its status.
    pub image_ids: HashMap<String, String>,
    /// Container name → (retry at, delay) after a failed pull.
    pub pull_backoff: HashMap<String, (Instant, Duration)>,
    /// Container name → crash back-off.
    pub backoff: HashMap<String, Backoff>,
    /// Container name → why it waits (reason, message).
    pub waiting: HashMap<String, StartError>,
    /// Shim's containers at the last relist.
    pub states: Vec<ContainerState>,
    /// Container name → its probes while it runs.
    pub probing: HashMap<String, Probing>,
    pub wake: Arc<Notify>,
    pub sandbox_error: Option<StartError>,
    pub last_status: Value,
    pub last_refresh: Instant,
    pub force_deleted: bool,
    /// This pass's admission to the CPU-bound part of starting (see
    /// [`Ctx::starts`]); dropped at the end of the pass and before an
    /// image pull.
    pub start_permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

enum Next {
    At(Instant),
    Done,
}

/// Run the worker for the pod `rx` carries until the pod is gone.
pub(crate) async fn run(ctx: Arc<Ctx>, mut rx: watch::Receiver<Option<Value>>) {
    let Some(pod) = rx.borrow_and_update().clone() else {
        return;
    };
    let uid = uid_of(&pod).to_string();
    let (ns, name) = ns_name(&pod);
    let run = ctx.pod_run_dir(&uid);
    let rec = Arc::new(PodRecord {
        uid: uid.clone(),
        dir: ctx.pod_dir(&uid),
        shim: ShimClient::new(&run),
        run,
        containers: Default::default(),
    });
    ctx.registry.insert(&ns, &name, rec.clone());
    let mut w = Worker {
        last_status: pod["status"].clone(),
        ctx: ctx.clone(),
        pod,
        uid,
        ns: ns.clone(),
        name: name.clone(),
        rec,
        sandbox: None,
        volumes: None,
        image_ids: HashMap::new(),
        pull_backoff: HashMap::new(),
        backoff: HashMap::new(),
        waiting: HashMap::new(),
        states: Vec::new(),
        probing: HashMap::new(),
        wake: Arc::new(Notify::new()),
        sandbox_error: None,
        last_refresh: Instant::now(),
        force_deleted: false,
        start_permit: None,
    };
    loop {
        let next = w.sync().await;
        let deadline = match next {
            Next::Done => break,
            Next::At(t) => t,
        };
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    // The manager is gone: the agent is stopping; containers stay.
                    break;
                }
            }
            _ = w.wake.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        // The newest copy, also of a change that did not wake the worker.
        match &*rx.borrow_and_update() {
            Some(p) if p["metadata"]["resourceVersion"] != w.pod["metadata"]["resourceVersion"] => {
                w.pod = p.clone()
            }
            Some(_) => {}
            None => w.force_deleted = true,
        }
    }
    ctx.registry.remove(&ns, &name, &w.uid);
}

/// Container specs of a kind (`initContainers` or `containers`).
pub(crate) fn specs<'a>(pod: &'a Value, field: &str) -> Vec<&'a Value> {
    pod["spec"][field]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn run_number(id: &str) -> u32 {
    id.rsplit('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn parse_time(s: &str) -> Option<SystemTime> {
    let secs = trellis_types::time::parse_rfc3339(s)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

impl Worker {
    /// Runs of container `name`, newest first.
    pub(crate) fn runs_of(&self, name: &str) -> Vec<&ContainerState> {
        let prefix = format!("{name}.");
        let mut runs: Vec<&ContainerState> = self
            .states
            .iter()
            .filter(|s| {
                s.id.strip_prefix(&prefix)
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .collect();
        runs.sort_by_key(|s| std::cmp::Reverse(run_number(&s.id)));
        runs
    }

    fn restart_policy(&self) -> &str {
        self.pod["spec"]["restartPolicy"]
            .as_str()
            .unwrap_or("Always")
    }

    /// One pass.
    async fn sync(&mut self) -> Next {
        let next = self.pass().await;
        self.start_permit = None;
        next
    }

    /// Wait for this pass's turn to do CPU-bound start work (creating the
    /// sandbox, starting a container), unless it has it already: pods that
    /// arrive together start in arrival order, a few at a time.
    pub(crate) async fn admit(&mut self) {
        if self.start_permit.is_none() {
            let starts = self.ctx.starts.clone();
            self.start_permit = Some(starts.acquire_owned().await.expect("never closed"));
        }
    }

    async fn pass(&mut self) -> Next {
        if self.force_deleted || !self.pod["metadata"]["deletionTimestamp"].is_null() {
            self.terminate().await;
            return Next::Done;
        }
        let relist = Instant::now() + self.ctx.cfg.relist;
        if let Err(e) = self.ensure_sandbox().await {
            self.report_sandbox_error(e);
            self.write_status().await;
            return Next::At(Instant::now() + Duration::from_secs(2));
        }
        if self.volumes.is_none() || self.last_refresh.elapsed() >= VOLUME_REFRESH {
            self.last_refresh = Instant::now();
            match self.refresh_volumes().await {
                Ok(()) => self.sandbox_error = None,
                Err(e) => {
                    self.report_sandbox_error(e);
                    self.write_status().await;
                    return Next::At(Instant::now() + Duration::from_secs(2));
                }
            }
        }
        if let Err(e) = self.relist().await {
            tracing::warn!(pod = %self.name, error = %e, "cannot read the shim's state");
            // The shim died (node reboot, killed): start a new one.
            self.sandbox = None;
            return Next::At(Instant::now() + Duration::from_secs(1));
        }
        let mut next = relist;
        if let Some(t) = self.step().await {
            next = next.min(t);
        }
        self.write_status().await;
        Next::At(next)
    }

    fn report_sandbox_error(&mut self, e: StartError) {
        let same = self
            .sandbox_error
            .as_ref()
            .is_some_and(|p| p.message == e.message);
        if !same {
            let reason = if e.reason == "FailedMount" {
                "FailedMount"
            } else {
                "FailedCreatePodSandBox"
            };
            self.ctx
                .events
                .record(&self.pod, "Warning", reason, &e.message, None);
        }
        self.sandbox_error = Some(e);
    }

    /// Read the shim's containers and publish them for logs and exec.
    async fn relist(&mut self) -> Result<(), String> {
        let shim = self.rec.shim.clone();
        self.states = tokio::task::spawn_blocking(move || shim.state())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let mut runs: HashMap<String, Runs> = HashMap::new();
        let names: Vec<String> = specs(&self.pod, "initContainers")
            .into_iter()
            .chain(specs(&self.pod, "containers"))
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect();
        for n in names {
            let r = self.runs_of(&n);
            runs.insert(
                n.clone(),
                Runs {
                    current: r.first().map(|s| s.id.clone()),
                    running: r.first().is_some_and(|s| s.status == Status::Running),
                    previous: r.get(1).map(|s| s.id.clone()),
                },
            );
        }
        *self.rec.containers.lock().expect("runs lock") = runs;
        // Probes of runs that ended stop.
        let running: HashSet<String> = self
            .states
            .iter()
            .filter(|s| s.status == Status::Running)
            .map(|s| s.id.clone())
            .collect();
        self.probing.retain(|_, p| running.contains(&p.id));
        Ok(())
    }

    /// Start, restart or kill what the spec and policy ask; returns the
    /// earliest back-off expiry to wake for.
    async fn step(&mut self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let policy = self.restart_policy().to_string();
        // Init containers, in order: each must exit 0 before the next starts.
        for c in specs(&self.pod.clone(), "initContainers") {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let latest = self.runs_of(&name).first().map(|s| (*s).clone());
            match latest {
                None => {
                    self.try_start(c, 0, &mut wake).await;
                    return wake;
                }
                Some(s) if s.status == Status::Running => return wake,
                Some(s) if s.exit_code == Some(0) => continue,
                Some(s) => {
                    if policy == "Never" {
                        return wake;
                    }
                    self.restart_after_backoff(c, &s, &mut wake).await;
                    return wake;
                }
            }
        }
        for c in specs(&self.pod.clone(), "containers") {
            let name = c["name"].as_str().unwrap_or_default().to_string();
            let latest = self.runs_of(&name).first().map(|s| (*s).clone());
            match latest {
                None => self.try_start(c, 0, &mut wake).await,
                Some(s) if s.status == Status::Running => self.check_probes(c, &s),
                Some(s) => {
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => s.exit_code != Some(0),
                        _ => true,
                    };
                    if restart {
                        self.restart_after_backoff(c, &s, &mut wake).await;
                    }
                }
            }
        }
        wake
    }

    async fn try_start(&mut self, c: &Value, n: u32, wake: &mut Option<Instant>) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        match self.start_container(c, n).await {
            Ok(state) => {
                self.waiting.remove(&name);
                self.states.push(state.clone());
                self.start_probes(&name, &state);
                if n >= 2 {
                    // Keep the current and the previous run only.
                    for old in self
                        .runs_of(&name)
                        .iter()
                        .filter(|s| run_number(&s.id) + 2 <= n)
                        .map(|s| s.id.clone())
                        .collect::<Vec<_>>()
                    {
                        self.remove_run(&old).await;
                        self.states.retain(|s| s.id != old);
                    }
                }
                let mut runs = self.rec.containers.lock().expect("runs lock");
                let r = runs.entry(name).or_default();
                r.previous = r.current.take().filter(|p| *p != state.id);
                r.current = Some(state.id.clone());
                r.running = true;
            }
            Err(e) => {
                if !matches!(
                    e.reason,
                    "ImagePullBackOff" | "ErrImagePull" | "ErrImageNeverPull"
                ) {
                    self.ctx.events.record(
                        &self.pod,
                        "Warning",
                        "Failed",
                        &format!("Error: {}", e.message),
                        Some(&name),
                    );
                }
                let retry = match e.reason {
                    "ErrImagePull" | "ImagePullBackOff" => {
                        self.pull_backoff.get(&name).map(|b| b.0)
                    }
                    _ => Some(Instant::now() + Duration::from_secs(2)),
                };
                if let Some(t) = retry {
                    *wake = Some(wake.map_or(t, |w| w.min(t)));
                }
                self.waiting.insert(name, e);
            }
        }
    }

    /// Restart an exited container once its crash back-off has passed.
    async fn restart_after_backoff(
        &mut self,
        c: &Value,
        last: &ContainerState,
        wake: &mut Option<Instant>,
    ) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        let finished = last
            .finished_at
            .as_deref()
            .and_then(parse_time)
            .unwrap_or_else(SystemTime::now);
        let ran = last
            .finished_at
            .as_deref()
            .and_then(parse_time)
            .zip(parse_time(&last.started_at))
            .and_then(|(f, s)| f.duration_since(s).ok())
            .unwrap_or_default();
        if ran >= BACKOFF_RESET {
            self.backoff.remove(&name);
        }
        let since_exit = SystemTime::now()
            .duration_since(finished)
            .unwrap_or_default();
        // kubelet: the first restart is immediate, later ones wait the
        // back-off, which doubles each time up to its maximum.
        let delay = match self.backoff.get(&name) {
            None => None,
            Some(b) if since_exit >= b.delay => Some(b.delay),
            Some(b) => {
                let b = *b;
                self.crash_loop(&name, b, b.delay - since_exit, wake);
                return;
            }
        };
        let next = delay.map_or(self.ctx.cfg.backoff_base, |d| {
            (d * 2).min(self.ctx.cfg.backoff_max)
        });
        self.backoff.insert(name.clone(), Backoff { delay: next });
        self.waiting.remove(&name);
        let n = run_number(&last.id) + 1;
        self.try_start(c, n, wake).await;
    }

    fn crash_loop(&mut self, name: &str, b: Backoff, left: Duration, wake: &mut Option<Instant>) {
        let until = Instant::now() + left;
        let msg = format!(
            "back-off {} restarting failed container={name} pod={}_{}({})",
            humanize(b.delay),
            self.name,
            self.ns,
            self.uid
        );
        if self
            .waiting
            .get(name)
            .is_none_or(|w| w.reason != "CrashLoopBackOff")
        {
            self.ctx.events.record(
                &self.pod,
                "Warning",
                "BackOff",
                &format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    self.name, self.ns, self.uid
                ),
                Some(name),
            );
        }
        self.waiting.insert(
            name.to_string(),
            StartError {
                reason: "CrashLoopBackOff",
                message: msg,
            },
        );
        *wake = Some(wake.map_or(until, |w| w.min(until)));
    }

    fn start_probes(&mut self, name: &str, state: &ContainerState) {
        let Some(sb) = &self.sandbox else { return };
        let Ok(ip) = sb.pod_ip.parse() else { return };
        let scope = PodScope {
            namespace: self.ns.clone(),
            name: self.name.clone(),
            ip,
            containers: specs(&self.pod, "containers")
                .iter()
                .chain(specs(&self.pod, "initContainers").iter())
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect(),
        };
        let mut probes =
            ContainerProbes::start(&self.ctx.probes, scope, &self.pod, name, SystemTime::now());
        let status = probes.status();
        let mut changes = probes.status();
        let wake = self.wake.clone();
        let events = self.ctx.events.clone();
        let pod = self.pod.clone();
        let cname = name.to_string();
        let task = tokio::spawn(async move {
            let mut changes_open = true;
            loop {
                tokio::select! {
                    r = changes.changed(), if changes_open => {
                        if r.is_err() { changes_open = false; } else { wake.notify_one(); }
                    }
                    ev = probes.events().recv() => match ev {
                        Some(ev) => events.record(&pod, "Warning", ev.reason, &ev.message, Some(&cname)),
                        None => if !changes_open { break },
                    }
                }
            }
            // Keep probing alive until aborted.
            std::future::pending::<()>().await;
        });
        self.probing.insert(
            name.to_string(),
            Probing {
                id: state.id.clone(),
                status,
                task,
                killing: false,
            },
        );
    }

    /// A failed liveness or startup probe kills the container; the restart
    /// policy then decides.
    fn check_probes(&mut self, c: &Value, s: &ContainerState) {
        let name = c["name"].as_str().unwrap_or_default();
        let Some(p) = self.probing.get_mut(name) else {
            return;
        };
        if p.killing || p.id != s.id {
            return;
        }
        let restart = p.status.borrow().restart.clone();
        if let Some(message) = restart {
            p.killing = true;
            self.ctx
                .events
                .record(&self.pod, "Normal", "Killing", &message, Some(name));
            let grace = self.pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            let shim = self.rec.shim.clone();
            let id = s.id.clone();
            tokio::task::spawn_blocking(move || {
                super::pod_kill::stop_all(&shim, &[id], Duration::from_secs(grace))
            });
        }
    }

    /// Patch the pod's status when it changed. A field set to null and a
    /// missing one are the same status: the merge patch removes null fields
    /// (in the conditions too), so the pod comes back without them.
    async fn write_status(&mut self) {
        let status = self.compute_status();
        if same_ignoring_nulls(&status, &self.last_status) {
            return;
        }
        self.patch_status(status).await;
    }

    /// Write `status` through the status subresource.
    pub(crate) async fn patch_status(&mut self, status: Value) {
        let patch = json!({"status": status});
        match self
            .ctx
            .client
            .patch(
                &pods(),
                &self.ns,
                &self.name,
                "status",
                Patch::Merge,
                &patch,
            )
            .await
        {
            Ok(_) => self.last_status = status,
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(pod = %self.name, error = %e, "cannot write pod status"),
        }
    }
}

/// Whether `a` and `b` are equal when a field whose value is null counts as
/// absent, at any depth (as JSON merge patch treats them).
fn same_ignoring_nulls(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            const NULL: &Value = &Value::Null;
            x.keys()
                .chain(y.keys())
                .all(|k| same_ignoring_nulls(x.get(k).unwrap_or(NULL), y.get(k).unwrap_or(NULL)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_ignoring_nulls(v, w))
        }
        _ => a == b,
    }
}

/// Go's duration format for back-off messages ("10s", "1m20s", "5m0s").
fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() > 0 && s < 10 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_field_is_the_same_status_as_a_missing_one() {
        let written = json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null}]});
        let read_back = json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"}]});
        assert!(same_ignoring_nulls(&written, &read_back));
        assert!(same_ignoring_nulls(&read_back, &written));
        let changed = json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "False"}]});
        assert!(!same_ignoring_nulls(&written, &changed));
        let more = json!({"phase": "Running", "conditions": [
            {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]});
        assert!(!same_ignoring_nulls(&read_back, &more));
        assert!(!same_ignoring_nulls(
            &json!({"podIP": "10.0.0.2"}),
            &json!({})
        ));
        assert!(!same_ignoring_nulls(&json!({"a": {}}), &json!({"a": null})));
    }

    #[test]
    fn times_parse_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(parse_time(&trellis_runtime::log::rfc3339(t)), Some(t));
        assert_eq!(parse_time("nonsense"), None);
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(humanize(Duration::from_secs(10)), "10s");
        assert_eq!(humanize(Duration::from_secs(80)), "1m20s");
        assert_eq!(humanize(Duration::from_secs(300)), "5m0s");
    }
}
