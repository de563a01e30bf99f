//! Upstream's Job controller (`batch/v1`, kube-controller-manager 1.32) as a
//! Trellis controller: it runs a Job's pods to completion.
//!
//! Keys: the primary kind is `batch/v1 Job` and Pods are watched with
//! `WatchMapping::Owner`, so every key `(namespace, name)` names a Job (a pod's
//! key is its controlling Job's). A reconcile reads the Job and the pods it
//! controls (the API server's defaulting gives each Job a selector on
//! `batch.kubernetes.io/controller-uid` and labels its template), then:
//!
//! - creates pods from the template (generateName `<job>-`, or
//!   `<job>-<index>-` in Indexed mode, the controller ownerReference) until
//!   `parallelism` are active, never more than the completions still missing,
//!   and deletes the excess;
//! - counts `succeeded`/`failed` pods, fails the Job past `backoffLimit`
//!   (failed pods, or container restarts with `restartPolicy: OnFailure`) or
//!   past `activeDeadlineSeconds`, completes it when `completions` pods
//!   succeeded (or, without `completions`, when one succeeded and none is
//!   active), with 1.32's interim conditions (`FailureTarget`,
//!   `SuccessCriteriaMet`) first and the terminal ones (`Failed`, `Complete`)
//!   once no pod is terminating;
//! - suspends (deletes the active pods, condition `Suspended`) and resumes;
//! - delays new pods after failures (`podFailureBackoff`, doubling, capped at
//!   `podFailureBackoffMax`);
//! - deletes a finished Job `ttlSecondsAfterFinished` after it finished (done
//!   upstream by the separate ttl-after-finished controller).
//!
//! Pods are counted from the pods that exist: upstream's pod finalizer
//! (`batch.kubernetes.io/job-tracking`) and `status.uncountedTerminatedPods`
//! are left out, and counts never go down (a deleted finished pod keeps its
//! share of `status.succeeded`/`status.failed`; Indexed Jobs keep
//! `status.completedIndexes`).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{job, pod};
use trellis_sdk::controller::*;
use trellis_sdk::objects::{self, parse_rfc3339, rfc3339};

/// The component named in events.
const COMPONENT: &str = "job-controller";
/// Annotation and label with a pod's completion index (Indexed Jobs).
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable upstream gives every container of an Indexed Job.
const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Configuration (JSON), with upstream's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `podFailureBackoff` (Go duration, default "10s"): the delay before a
    /// pod replaces a failed one, doubled for each further failure since the
    /// last success (upstream's `DefaultJobPodFailureBackOff`).
    pub pod_failure_backoff_ms: i64,
    /// `podFailureBackoffMax` (default "10m"): the cap of that delay
    /// (upstream's `MaxJobPodFailureBackOff`).
    pub pod_failure_backoff_max_ms: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pod_failure_backoff_ms: 10_000,
            pod_failure_backoff_max_ms: 600_000,
        }
    }
}

impl Config {
    /// Parse the JSON configuration; unknown keys are refused.
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let bad = |m: String| PluginError::InvalidConfig(m);
        let v: Value = if text.trim().is_empty() {
            json!({})
        } else {
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?
        };
        let obj = v
            .as_object()
            .ok_or_else(|| bad("the configuration must be a JSON object".into()))?;
        let mut cfg = Self::default();
        for (k, val) in obj {
            let ms = || {
                val.as_str()
                    .and_then(|s| objects::duration_ms(s).ok())
                    .and_then(|ms| i64::try_from(ms).ok())
                    .ok_or_else(|| bad(format!("{k}: not a duration such as \"10s\": {val}")))
            };
            match k.as_str() {
                "podFailureBackoff" => cfg.pod_failure_backoff_ms = ms()?,
                "podFailureBackoffMax" => cfg.pod_failure_backoff_max_ms = ms()?,
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        Ok(cfg)
    }
}

/// The controller.
#[derive(Default)]
pub struct JobController {
    config: Config,
}

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

fn event(api: &impl Api, j: &Value, type_: &str, reason: &str, message: &str) {
    record_event(api, j, &job(), type_, reason, message, COMPONENT);
}

/// A condition of `type_` with status "True".
fn cond_true(conds: &[Value], type_: &str) -> bool {
    conds
        .iter()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

fn new_condition(type_: &str, status: &str, reason: &str, message: &str, now: i64) -> Value {
    json!({"type": type_, "status": status, "lastProbeTime": rfc3339(now),
           "lastTransitionTime": rfc3339(now), "reason": reason, "message": message})
}

/// Upstream's `ensureJobConditionStatus`: update an existing condition, or
/// add it when its status is "True"; whether anything changed.
fn ensure_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: i64,
) -> bool {
    if let Some(c) = conds.iter_mut().find(|c| c["type"] == type_) {
        if c["status"] == status && c["reason"] == reason && c["message"] == message {
            return false;
        }
        if c["status"] != status {
            c["lastTransitionTime"] = json!(rfc3339(now));
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        c["lastProbeTime"] = json!(rfc3339(now));
        return true;
    }
    if status == "True" {
        conds.push(new_condition(type_, status, reason, message, now));
        return true;
    }
    false
}

/// Whether the Job has a terminal condition (`Complete` or `Failed`).
pub fn is_finished(j: &Value) -> bool {
    let conds = j["status"]["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    cond_true(conds, "Complete") || cond_true(conds, "Failed")
}

/// When a pod finished (Unix seconds): upstream's `getFinishedTime`.
fn finish_time(p: &Value) -> i64 {
    let from_containers = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| parse_rfc3339(c["state"]["terminated"]["finishedAt"].as_str()?))
        .max();
    let ready_false = || {
        p["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "False")
            .and_then(|c| parse_rfc3339(c["lastTransitionTime"].as_str()?))
    };
    let deleted = || parse_rfc3339(p["metadata"]["deletionTimestamp"].as_str()?);
    from_containers
        .or_else(ready_false)
        .or_else(deleted)
        .or_else(|| parse_rfc3339(p["metadata"]["creationTimestamp"].as_str()?))
        .unwrap_or(0)
}

/// A pod's completion index (annotation, else label), if valid.
fn pod_index(p: &Value) -> Option<i64> {
    let text = objects::annotation(p, INDEX_KEY)
        .or_else(|| p["metadata"]["labels"][INDEX_KEY].as_str())?;
    text.parse::<i64>()
        .ok()
        .filter(|i| *i >= 0 && text == i.to_string())
}

/// Sort key putting the pods to delete first (upstream's `ActivePods` order,
/// without the ready-duration and restart-count tie-breaks): unscheduled,
/// then pending, then not ready, then the newest.
fn removal_order(pods: &mut [&Value]) {
    pods.sort_by_key(|p| {
        let scheduled = p["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let phase = match objects::pod_phase(p) {
            "Pending" | "" => 0,
            "Unknown" => 1,
            _ => 2,
        };
        let created =
            parse_rfc3339(p["metadata"]["creationTimestamp"].as_str().unwrap_or("")).unwrap_or(0);
        (
            scheduled,
            phase,
            objects::pod_is_ready(p),
            std::cmp::Reverse(created),
            objects::name(p).to_string(),
        )
    });
}

/// Parse `status.completedIndexes` ("1,3-5,7").
pub fn parse_indexes(s: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i64>(), b.parse::<i64>()) {
            if a <= b && b - a < 1_000_000 {
                out.extend(a..=b);
            }
        }
    }
    out
}

/// Format indexes as upstream's `orderedIntervals.String()`: runs of three or
/// more as "a-b", two as "a,b".
pub fn format_indexes(set: &BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for &i in set {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => runs.push((i, i)),
        }
    }
    runs.iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The pod to create for the Job (and `index` in Indexed mode).
fn new_pod(j: &Value, index: Option<i64>) -> Value {
    let name = objects::name(j);
    let owner = objects::controller_owner_ref(j, &job());
    let mut p = objects::pod_from_template(&j["spec"]["template"], objects::namespace(j), owner);
    p["metadata"]["generateName"] = json!(format!("{name}-"));
    if let Some(i) = index {
        p["metadata"]["generateName"] = json!(format!("{name}-{i}-"));
        p["metadata"]["annotations"][INDEX_KEY] = json!(i.to_string());
        p["metadata"]["labels"][INDEX_KEY] = json!(i.to_string());
        if p["spec"]["hostname"].as_str().is_none_or(str::is_empty) {
            p["spec"]["hostname"] = json!(format!("{name}-{i}"));
        }
        let var = json!({"name": INDEX_ENV, "valueFrom": {"fieldRef": {
            "fieldPath": format!("metadata.annotations['{INDEX_KEY}']")}}});
        for list in ["initContainers", "containers"] {
            for c in p["spec"][list].as_array_mut().into_iter().flatten() {
                let has = c["env"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|v| v["name"] == INDEX_ENV));
                if !has {
                    if !c["env"].is_array() {
                        c["env"] = json!([]);
                    }
                    c["env"].as_array_mut().expect("an array").push(var.clone());
                }
            }
        }
    }
    p
}

/// The pods the Job controls.
fn job_pods(api: &impl Api, j: &Value) -> Result<Vec<Value>, PluginError> {
    let sel = &j["spec"]["selector"];
    let text = objects::selector_string(sel).unwrap_or_default();
    let uid = objects::uid(j);
    Ok(api
        .list(&pod(), objects::namespace(j), &text)
        .map_err(internal)?
        .into_iter()
        .filter(|p| objects::is_controlled_by(p, uid))
        .filter(|p| sel.is_null() || objects::object_matches(sel, p).unwrap_or(false))
        .collect())
}

/// Why and how the Job finishes.
struct Finish {
    failed: bool,
    reason: String,
    message: String,
}

/// Reconcile one Job.
pub fn reconcile(api: &impl Api, cfg: &Config, key: &ObjectKey) -> Result<Action, PluginError> {
    let ns = key.namespace.as_str();
    let j = match api.get(&job(), ns, &key.name) {
        Ok(j) => j,
        Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
        Err(e) => return Err(internal(e)),
    };
    if objects::is_deleting(&j) {
        return Ok(Action::AwaitChange);
    }
    let now_ms = api.now_millis();
    let now = now_ms.div_euclid(1000);
    if is_finished(&j) {
        return ttl_after_finished(api, &j, now_ms);
    }
    let spec = &j["spec"];
    let status = &j["status"];
    let suspended = spec["suspend"] == true;
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    let completions = match spec["completions"].as_i64() {
        None if spec["parallelism"].is_null() => Some(1),
        c => c,
    };
    let indexed = spec["completionMode"] == "Indexed" && completions.is_some();
    let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
    let replace_only_failed = spec["podReplacementPolicy"] == "Failed";

    let pods = job_pods(api, &j)?;
    let mut active: Vec<&Value> = pods.iter().filter(|p| objects::pod_is_active(p)).collect();
    let terminating_pods: Vec<&Value> = pods
        .iter()
        .filter(|p| {
            objects::is_deleting(p) && !matches!(objects::pod_phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let mut terminating = terminating_pods.len() as i64;
    let succeeded_pods: Vec<&Value> = pods
        .iter()
        .filter(|p| objects::pod_phase(p) == "Succeeded")
        .collect();
    let failed_pods: Vec<&Value> = pods
        .iter()
        .filter(|p| objects::pod_phase(p) == "Failed")
        .collect();

    let mut succeeded_indexes = BTreeSet::new();
    let succeeded = if let (true, Some(c)) = (indexed, completions) {
        succeeded_indexes = parse_indexes(status["completedIndexes"].as_str().unwrap_or(""));
        succeeded_indexes.extend(succeeded_pods.iter().filter_map(|p| pod_index(p)));
        succeeded_indexes.retain(|i| *i < c);
        succeeded_indexes.len() as i64
    } else {
        status["succeeded"]
            .as_i64()
            .unwrap_or(0)
            .max(succeeded_pods.len() as i64)
    };
    let mut failed = status["failed"]
        .as_i64()
        .unwrap_or(0)
        .max(failed_pods.len() as i64);

    let mut conds: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let mut start_time = status["startTime"].as_str().and_then(parse_rfc3339);
    if start_time.is_none() && !suspended {
        start_time = Some(now);
    }
    let mut requeue: Option<i64> = None;
    let mut wake = |ms: i64| requeue = Some(requeue.map_or(ms, |r: i64| r.min(ms)).max(1));

    // An interim condition from an earlier reconcile decides the outcome.
    let interim = |t: &str| {
        conds
            .iter()
            .find(|c| c["type"] == t && c["status"] == "True")
            .cloned()
    };
    let mut finish = if let Some(c) = interim("FailureTarget") {
        Some(Finish {
            failed: true,
            reason: c["reason"].as_str().unwrap_or("").into(),
            message: c["message"].as_str().unwrap_or("").into(),
        })
    } else {
        interim("SuccessCriteriaMet").map(|c| Finish {
            failed: false,
            reason: c["reason"].as_str().unwrap_or("").into(),
            message: c["message"].as_str().unwrap_or("").into(),
        })
    };

    if finish.is_none() {
        let deadline = spec["activeDeadlineSeconds"]
            .as_i64()
            .filter(|_| !suspended);
        if failed > backoff_limit || past_backoff_limit_on_failure(spec, &active, backoff_limit) {
            finish = Some(Finish {
                failed: true,
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into(),
            });
        } else if let (Some(d), Some(start)) = (deadline, start_time) {
            if now_ms >= (start + d) * 1000 {
                finish = Some(Finish {
                    failed: true,
                    reason: "DeadlineExceeded".into(),
                    message: "Job was active longer than specified deadline".into(),
                });
            } else {
                wake((start + d) * 1000 - now_ms);
            }
        }
    }

    if finish.is_none() {
        if suspended {
            // Suspending deletes every active pod.
            removal_order(&mut active);
            let n = active.len();
            terminating += delete_pods(api, &j, &active[..n])?;
            active.clear();
            if ensure_condition(
                &mut conds,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            ) {
                event(api, &j, "Normal", "Suspended", "Job suspended");
            }
        } else {
            if ensure_condition(
                &mut conds,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            ) {
                event(api, &j, "Normal", "Resumed", "Job resumed");
                // activeDeadlineSeconds counts time continuously active.
                start_time = Some(now);
            }
            let ctx = Manage {
                j: &j,
                cfg,
                now_ms,
                parallelism,
                completions,
                succeeded,
                blocked: if replace_only_failed {
                    terminating_pods.clone()
                } else {
                    Vec::new()
                },
                succeeded_pods: &succeeded_pods,
                failed_pods: &failed_pods,
            };
            let (deleted, wait) = if indexed {
                ctx.manage_indexed(api, &mut active, &succeeded_indexes)?
            } else {
                ctx.manage(api, &mut active)?
            };
            terminating += deleted;
            if let Some(w) = wait {
                wake(w);
            }
        }
        let complete = match completions {
            None => succeeded > 0 && active.is_empty(),
            Some(c) => succeeded >= c && active.is_empty(),
        };
        if complete {
            finish = Some(Finish {
                failed: false,
                reason: "CompletionsReached".into(),
                message: "Reached expected number of succeeded pods".into(),
            });
        }
    }

    let mut completion_time = status["completionTime"].as_str().and_then(parse_rfc3339);
    if let Some(f) = &finish {
        // A finishing Job keeps no pod running.
        removal_order(&mut active);
        let deleted = delete_pods(api, &j, &active)?;
        if f.failed {
            failed += deleted;
        }
        terminating += deleted;
        active.clear();
        let (interim, terminal) = if f.failed {
            ("FailureTarget", "Failed")
        } else {
            ("SuccessCriteriaMet", "Complete")
        };
        ensure_condition(&mut conds, interim, "True", &f.reason, &f.message, now);
        if terminating == 0 {
            ensure_condition(&mut conds, terminal, "True", &f.reason, &f.message, now);
            if f.failed {
                event(api, &j, "Warning", &f.reason, &f.message);
            } else {
                completion_time = Some(now);
                event(api, &j, "Normal", "Completed", "Job completed");
            }
            requeue = None;
        }
    }

    // The new status; upstream omits zero counts (omitempty) but not the
    // pointers `ready` and `terminating`.
    let mut st: Map<String, Value> = status.as_object().cloned().unwrap_or_default();
    let mut set = |k: &str, v: Option<Value>| match v {
        Some(v) => {
            st.insert(k.into(), v);
        }
        None => {
            st.remove(k);
        }
    };
    let nonzero = |n: i64| (n != 0).then(|| json!(n));
    let ready = active.iter().filter(|p| objects::pod_is_ready(p)).count() as i64;
    set("active", nonzero(active.len() as i64));
    set("ready", Some(json!(ready)));
    set("terminating", Some(json!(terminating)));
    set("succeeded", nonzero(succeeded));
    set("failed", nonzero(failed));
    set("startTime", start_time.map(|t| json!(rfc3339(t))));
    set("completionTime", completion_time.map(|t| json!(rfc3339(t))));
    if indexed {
        let s = format_indexes(&succeeded_indexes);
        set("completedIndexes", (!s.is_empty()).then(|| json!(s)));
    }
    set("conditions", (!conds.is_empty()).then(|| json!(conds)));
    let st = Value::Object(st);
    if st != *status {
        let mut updated = j.clone();
        updated["status"] = st;
        let stored = match api.update_status(&job(), ns, &updated) {
            Ok(s) => s,
            Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
            Err(e) => return Err(internal(e)),
        };
        if is_finished(&stored) {
            return ttl_after_finished(api, &stored, now_ms);
        }
    }
    Ok(requeue.map_or(Action::AwaitChange, |ms| Action::RequeueAfter(ms as u64)))
}

/// Upstream's `pastBackoffLimitOnFailure`: with `restartPolicy: OnFailure`
/// the kubelet restarts failed containers in place, so their restarts count.
fn past_backoff_limit_on_failure(spec: &Value, active: &[&Value], limit: i64) -> bool {
    if spec["template"]["spec"]["restartPolicy"] != "OnFailure" {
        return false;
    }
    let restarts: i64 = active
        .iter()
        .filter(|p| matches!(objects::pod_phase(p), "Running" | "Pending"))
        .flat_map(|p| {
            ["initContainerStatuses", "containerStatuses"]
                .into_iter()
                .flat_map(move |k| p["status"][k].as_array().into_iter().flatten())
        })
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

/// Delete pods; the number deleted (events `SuccessfulDelete`).
fn delete_pods(api: &impl Api, j: &Value, pods: &[&Value]) -> Result<i64, PluginError> {
    let mut n = 0;
    for p in pods {
        let name = objects::name(p);
        match api.delete(&pod(), objects::namespace(j), name, "") {
            Ok(()) => {
                n += 1;
                event(
                    api,
                    j,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                );
            }
            Err(ObjectError::NotFound) => {}
            Err(e) => {
                event(
                    api,
                    j,
                    "Warning",
                    "FailedDelete",
                    &format!("Error deleting: {e:?}"),
                );
                return Err(internal(e));
            }
        }
    }
    Ok(n)
}

/// What pod management needs to know.
struct Manage<'a> {
    j: &'a Value,
    cfg: &'a Config,
    now_ms: i64,
    parallelism: i64,
    completions: Option<i64>,
    succeeded: i64,
    /// Terminating pods that still hold their slot (`podReplacementPolicy: Failed`).
    blocked: Vec<&'a Value>,
    succeeded_pods: &'a [&'a Value],
    failed_pods: &'a [&'a Value],
}

impl Manage<'_> {
    /// How many pods should be active (upstream's `wantActive`).
    fn want_active(&self, active: i64) -> i64 {
        match self.completions {
            None if self.succeeded > 0 => active,
            None => self.parallelism,
            Some(c) => (c - self.succeeded).clamp(0, self.parallelism),
        }
    }

    /// Milliseconds until a new pod may be created after recent failures
    /// (upstream's back-off record, rebuilt from the pods that exist).
    fn backoff_remaining(&self) -> i64 {
        let last_success = self.succeeded_pods.iter().map(|p| finish_time(p)).max();
        let failures: Vec<i64> = self
            .failed_pods
            .iter()
            .map(|p| finish_time(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let Some(last) = failures.iter().max() else {
            return 0;
        };
        let shift = (failures.len() as u32 - 1).min(30);
        let delay = self
            .cfg
            .pod_failure_backoff_ms
            .saturating_mul(1 << shift)
            .min(self.cfg.pod_failure_backoff_max_ms);
        last * 1000 + delay - self.now_ms
    }

    fn create(&self, api: &impl Api, index: Option<i64>) -> Result<(), PluginError> {
        let p = new_pod(self.j, index);
        match api.create(&pod(), objects::namespace(self.j), &p) {
            Ok(made) => {
                event(
                    api,
                    self.j,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", objects::name(&made)),
                );
                Ok(())
            }
            Err(e) => {
                event(
                    api,
                    self.j,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {e:?}"),
                );
                Err(internal(e))
            }
        }
    }

    /// NonIndexed: create or delete pods to reach `wantActive`; (pods
    /// deleted, milliseconds to wait for the failure back-off).
    fn manage(
        &self,
        api: &impl Api,
        active: &mut Vec<&Value>,
    ) -> Result<(i64, Option<i64>), PluginError> {
        let want = self.want_active(active.len() as i64);
        let have = (active.len() + self.blocked.len()) as i64;
        if (active.len() as i64) > want {
            removal_order(active);
            let excess = active.len() - want as usize;
            let deleted = delete_pods(api, self.j, &active[..excess])?;
            active.drain(..excess);
            return Ok((deleted, None));
        }
        if have < want {
            let wait = self.backoff_remaining();
            if wait > 0 {
                return Ok((0, Some(wait)));
            }
            for _ in have..want {
                self.create(api, None)?;
            }
        }
        Ok((0, None))
    }

    /// Indexed: one active pod per pending index, lowest indexes first.
    fn manage_indexed(
        &self,
        api: &impl Api,
        active: &mut Vec<&Value>,
        succeeded: &BTreeSet<i64>,
    ) -> Result<(i64, Option<i64>), PluginError> {
        let completions = self.completions.unwrap_or(0);
        let mut by_index: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
        let mut doomed: Vec<&Value> = Vec::new();
        for p in active.iter() {
            match pod_index(p) {
                Some(i) if i < completions && !succeeded.contains(&i) => {
                    by_index.entry(i).or_default().push(p)
                }
                _ => doomed.push(p),
            }
        }
        // Duplicates of an index: keep the one least worth removing.
        for pods in by_index.values_mut() {
            removal_order(pods);
            let keep = pods.pop().expect("not empty");
            doomed.append(pods);
            pods.push(keep);
        }
        let want = self.want_active(by_index.len() as i64) as usize;
        while by_index.len() > want {
            let (_, pods) = by_index.pop_last().expect("not empty");
            doomed.extend(pods);
        }
        let deleted = delete_pods(api, self.j, &doomed)?;
        let doomed_names: BTreeSet<&str> = doomed.iter().map(|p| objects::name(p)).collect();
        active.retain(|p| !doomed_names.contains(objects::name(p)));
        let blocked: BTreeSet<i64> = self.blocked.iter().filter_map(|p| pod_index(p)).collect();
        let slots = want.saturating_sub(by_index.len() + blocked.len());
        let pending: Vec<i64> = (0..completions)
            .filter(|i| !succeeded.contains(i) && !by_index.contains_key(i) && !blocked.contains(i))
            .take(slots)
            .collect();
        if !pending.is_empty() {
            let wait = self.backoff_remaining();
            if wait > 0 {
                return Ok((deleted, Some(wait)));
            }
            for i in pending {
                self.create(api, Some(i))?;
            }
        }
        Ok((deleted, None))
    }
}

/// Delete a finished Job `ttlSecondsAfterFinished` after it finished
/// (upstream's ttl-after-finished controller, which deletes in the
/// foreground; here in the background).
fn ttl_after_finished(api: &impl Api, j: &Value, now_ms: i64) -> Result<Action, PluginError> {
    let Some(ttl) = j["spec"]["ttlSecondsAfterFinished"].as_i64() else {
        return Ok(Action::AwaitChange);
    };
    let finished = j["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
        .filter_map(|c| parse_rfc3339(c["lastTransitionTime"].as_str()?))
        .next()
        .or_else(|| parse_rfc3339(j["status"]["completionTime"].as_str()?));
    let Some(finished) = finished else {
        return Ok(Action::AwaitChange);
    };
    let expire_ms = (finished + ttl) * 1000;
    if now_ms < expire_ms {
        return Ok(Action::RequeueAfter((expire_ms - now_ms) as u64));
    }
    match api.delete(
        &job(),
        objects::namespace(j),
        objects::name(j),
        "Background",
    ) {
        Ok(()) | Err(ObjectError::NotFound) => Ok(Action::AwaitChange),
        Err(e) => Err(internal(e)),
    }
}

impl Controller for JobController {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "job".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: job(),
            watches: vec![Watch {
                kind: pod(),
                mapping: WatchMapping::Owner,
            }],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Config::parse(config)?;
        Ok(())
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &self.config, &key)
    }
}

trellis_sdk::export_controller!(JobController);

#[cfg(test)]
mod tests;
