//! Upstream's CronJob controller (v2, kube-controller-manager 1.32) as a
//! Trellis controller: it creates a Job from `spec.jobTemplate` at each time
//! of `spec.schedule`.
//!
//! Keys: the primary kind is `batch/v1 CronJob` and Jobs are watched with
//! `WatchMapping::Owner`, so every key `(namespace, name)` names a CronJob
//! (a Job's key is its controlling CronJob's). A reconcile:
//!
//! - deletes finished Jobs beyond `successfulJobsHistoryLimit` (3) and
//!   `failedJobsHistoryLimit` (1), oldest first;
//! - keeps `status.active` to the running Jobs it made (events
//!   `SawCompletedJob`, `MissingJob`, `UnexpectedJob`) and
//!   `status.lastSuccessfulTime`;
//! - unless suspended, finds the most recent unmet schedule time since
//!   `status.lastScheduleTime` (or the creation), within
//!   `startingDeadlineSeconds` (`MissSchedule`, `TooManyMissedTimes`),
//!   applies `concurrencyPolicy` (Allow, Forbid, Replace) and creates the Job
//!   `<cronjob>-<scheduled time in Unix minutes>`;
//! - requeues itself for the next schedule time plus 100 ms.
//!
//! `spec.timeZone` is limited to zones with a fixed offset (UTC and its
//! aliases, `Etc/GMT±N`): there is no tz database in the sandbox.

pub mod cron;

use serde_json::{json, Map, Value};
use trellis_sdk::controller::kinds::{cron_job, job};
use trellis_sdk::controller::*;
use trellis_sdk::objects::{self, parse_rfc3339, rfc3339};

use cron::Schedule;

/// The component named in events.
const COMPONENT: &str = "cronjob-controller";
/// The annotation with a Job's scheduled time.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream's `nextScheduleDelta`: wake a little after the schedule time.
const NEXT_SCHEDULE_DELTA_MS: i64 = 100;

/// The controller.
#[derive(Default)]
pub struct CronJobController;

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

fn event(api: &impl Api, cj: &Value, type_: &str, reason: &str, message: &str) {
    record_event(api, cj, &cron_job(), type_, reason, message, COMPONENT);
}

/// The terminal condition of a Job ("Complete" or "Failed"), if finished.
pub fn finished(j: &Value) -> Option<&'static str> {
    let conds = j["status"]["conditions"].as_array()?;
    ["Complete", "Failed"].into_iter().find(|t| {
        conds
            .iter()
            .any(|c| c["type"] == *t && c["status"] == "True")
    })
}

/// The Job's name for a scheduled time: `<cronjob>-<Unix minutes>`.
pub fn job_name(cj_name: &str, scheduled: i64) -> String {
    format!("{cj_name}-{}", scheduled.div_euclid(60))
}

/// An `ObjectReference` to a Job, as in `status.active`.
fn job_ref(j: &Value) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": objects::namespace(j),
           "name": objects::name(j), "uid": objects::uid(j),
           "resourceVersion": j["metadata"]["resourceVersion"]})
}

/// The Job to create for a scheduled time (upstream's `getJobFromTemplate2`).
fn job_from_template(cj: &Value, scheduled: i64, offset: i64) -> Value {
    let template = &cj["spec"]["jobTemplate"];
    let mut annotations = template["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        json!(cron::rfc3339_at(scheduled, offset)),
    );
    let mut meta = json!({
        "name": job_name(objects::name(cj), scheduled),
        "namespace": objects::namespace(cj),
        "annotations": annotations,
        "ownerReferences": [objects::controller_owner_ref(cj, &cron_job())],
    });
    if let Some(labels) = template["metadata"]["labels"].as_object() {
        meta["labels"] = json!(labels);
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
           "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))})
}

/// Upstream's `mostRecentScheduleTime`: the earliest time to consider, the
/// most recent schedule time in `(earliest, now]`, and how many were missed;
/// `Err` when the schedule never fires.
fn most_recent(sched: &Schedule, earliest: i64, now_ms: i64) -> Result<(Option<i64>, i64), String> {
    let never = || "time difference between two schedules is less than 1 second".to_string();
    let t1 = sched.next(earliest).ok_or_else(never)?;
    if t1 * 1000 > now_ms {
        return Ok((None, 0));
    }
    let now = now_ms.div_euclid(1000);
    let latest = sched.prev(now).unwrap_or(t1).max(t1);
    // Count up to 101; past that, upstream's estimate from the interval.
    let mut missed = 1;
    let mut t = t1;
    while missed <= 100 {
        match sched.next(t) {
            Some(n) if n <= now => {
                missed += 1;
                t = n;
            }
            _ => return Ok((Some(latest), missed)),
        }
    }
    let t2 = sched.next(t1).ok_or_else(never)?;
    Ok((Some(latest), (now - t1) / (t2 - t1).max(1) + 1))
}

/// Milliseconds until the schedule time after the most recent one (upstream's
/// `nextScheduleTimeDuration`).
fn next_schedule_delay(sched: &Schedule, earliest: i64, now_ms: i64) -> Action {
    let base = match most_recent(sched, earliest, now_ms) {
        Ok((Some(t), _)) => t,
        Ok((None, _)) => earliest,
        Err(_) => now_ms.div_euclid(1000),
    };
    match sched.next(base) {
        Some(t) => Action::RequeueAfter((t * 1000 + NEXT_SCHEDULE_DELTA_MS - now_ms).max(1) as u64),
        None => Action::AwaitChange,
    }
}

/// Reconcile one CronJob.
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    let ns = key.namespace.as_str();
    let cj = match api.get(&cron_job(), ns, &key.name) {
        Ok(c) => c,
        Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
        Err(e) => return Err(internal(e)),
    };
    let now_ms = api.now_millis();
    let uid = objects::uid(&cj);
    let jobs: Vec<Value> = api
        .list(&job(), ns, "")
        .map_err(internal)?
        .into_iter()
        .filter(|j| objects::is_controlled_by(j, uid))
        .collect();
    let mut st = Sync {
        active: cj["status"]["active"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        last_schedule: cj["status"]["lastScheduleTime"]
            .as_str()
            .and_then(parse_rfc3339),
        last_successful: cj["status"]["lastSuccessfulTime"]
            .as_str()
            .and_then(parse_rfc3339),
    };
    cleanup_finished_jobs(api, &cj, &jobs, &mut st)?;
    let action = sync(api, &cj, &jobs, &mut st, now_ms);
    write_status(api, &cj, &st)?;
    action
}

/// What a reconcile changes in the status.
struct Sync {
    active: Vec<Value>,
    last_schedule: Option<i64>,
    last_successful: Option<i64>,
}

impl Sync {
    fn is_active(&self, uid: &str) -> bool {
        self.active.iter().any(|r| r["uid"] == uid)
    }
    fn forget(&mut self, uid: &str) {
        self.active.retain(|r| r["uid"] != uid);
    }
}

fn write_status(api: &impl Api, cj: &Value, st: &Sync) -> Result<(), PluginError> {
    let old = &cj["status"];
    let mut status: Map<String, Value> = old.as_object().cloned().unwrap_or_default();
    let mut set = |k: &str, v: Option<Value>| match v {
        Some(v) => {
            status.insert(k.into(), v);
        }
        None => {
            status.remove(k);
        }
    };
    set("active", (!st.active.is_empty()).then(|| json!(st.active)));
    set(
        "lastScheduleTime",
        st.last_schedule.map(|t| json!(rfc3339(t))),
    );
    set(
        "lastSuccessfulTime",
        st.last_successful.map(|t| json!(rfc3339(t))),
    );
    let status = Value::Object(status);
    if status == *old || (old.is_null() && status == json!({})) {
        return Ok(());
    }
    let mut updated = cj.clone();
    updated["status"] = status;
    match api.update_status(&cron_job(), objects::namespace(cj), &updated) {
        Ok(_) | Err(ObjectError::NotFound) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

/// Delete a Job in the background (event `SuccessfulDelete`).
fn delete_job(api: &impl Api, cj: &Value, j: &Value, st: &mut Sync) -> Result<(), PluginError> {
    let name = objects::name(j);
    match api.delete(&job(), objects::namespace(j), name, "Background") {
        Ok(()) | Err(ObjectError::NotFound) => {}
        Err(e) => {
            event(
                api,
                cj,
                "Warning",
                "FailedDelete",
                &format!("Deleted job: {e:?}"),
            );
            return Err(internal(e));
        }
    }
    st.forget(objects::uid(j));
    event(
        api,
        cj,
        "Normal",
        "SuccessfulDelete",
        &format!("Deleted job {name}"),
    );
    Ok(())
}

/// Upstream's `cleanupFinishedJobs`: keep the newest finished Jobs within the
/// history limits.
fn cleanup_finished_jobs(
    api: &impl Api,
    cj: &Value,
    jobs: &[Value],
    st: &mut Sync,
) -> Result<(), PluginError> {
    for (outcome, limit_key, default) in [
        ("Complete", "successfulJobsHistoryLimit", 3),
        ("Failed", "failedJobsHistoryLimit", 1),
    ] {
        let limit = cj["spec"][limit_key].as_i64().unwrap_or(default).max(0) as usize;
        let mut done: Vec<&Value> = jobs
            .iter()
            .filter(|j| finished(j) == Some(outcome))
            .collect();
        if done.len() <= limit {
            continue;
        }
        // Oldest start first; Jobs that never started last; then by name.
        done.sort_by_key(|j| {
            let start = j["status"]["startTime"].as_str().and_then(parse_rfc3339);
            (start.is_none(), start, objects::name(j).to_string())
        });
        let excess = done.len() - limit;
        for j in &done[..excess] {
            delete_job(api, cj, j, st)?;
        }
    }
    Ok(())
}

/// Upstream's `syncCronJob`.
fn sync(
    api: &impl Api,
    cj: &Value,
    jobs: &[Value],
    st: &mut Sync,
    now_ms: i64,
) -> Result<Action, PluginError> {
    let ns = objects::namespace(cj);
    for j in jobs {
        let uid = objects::uid(j);
        let done = finished(j);
        let is_active = st.is_active(uid);
        if !is_active && done.is_none() {
            if !objects::is_deleting(j) {
                event(
                    api,
                    cj,
                    "Warning",
                    "UnexpectedJob",
                    &format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        objects::name(j)
                    ),
                );
            }
        } else if let (true, Some(cond)) = (is_active, done) {
            st.forget(uid);
            event(
                api,
                cj,
                "Normal",
                "SawCompletedJob",
                &format!("Saw completed job: {}, condition: {cond}", objects::name(j)),
            );
        }
        // Upstream notes a success on the reconcile after the one that saw it
        // finish; both happen here at once.
        if done == Some("Complete") {
            if let Some(t) = j["status"]["completionTime"]
                .as_str()
                .and_then(parse_rfc3339)
            {
                if st.last_successful.is_none_or(|l| t > l) {
                    st.last_successful = Some(t);
                }
            }
        }
    }
    // Active Jobs that are gone.
    let gone: Vec<Value> = st
        .active
        .iter()
        .filter(|r| !jobs.iter().any(|j| objects::uid(j) == r["uid"]))
        .cloned()
        .collect();
    for r in gone {
        let name = r["name"].as_str().unwrap_or("");
        match api.get(&job(), r["namespace"].as_str().unwrap_or(ns), name) {
            Err(ObjectError::NotFound) => {
                event(
                    api,
                    cj,
                    "Normal",
                    "MissingJob",
                    &format!("Active job went missing: {name}"),
                );
                st.forget(r["uid"].as_str().unwrap_or(""));
            }
            Err(e) => return Err(internal(e)),
            Ok(_) => {}
        }
    }

    if objects::is_deleting(cj) {
        return Ok(Action::AwaitChange);
    }
    let spec = &cj["spec"];
    let mut schedule_text = spec["schedule"].as_str().unwrap_or("").trim().to_string();
    let mut zone = spec["timeZone"].as_str().map(str::to_string);
    // robfig/cron reads a `TZ=`/`CRON_TZ=` prefix; upstream warns about it.
    if let Some(rest) = schedule_text
        .strip_prefix("CRON_TZ=")
        .or_else(|| schedule_text.strip_prefix("TZ="))
    {
        let (tz, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        event(api, cj, "Warning", "UnsupportedSchedule", &format!(
            "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
            schedule_text));
        zone.get_or_insert_with(|| tz.to_string());
        schedule_text = rest.trim().to_string();
    }
    let offset = match zone.as_deref().map(cron::zone_offset) {
        None => 0,
        Some(Some(o)) => o,
        Some(None) => {
            let z = zone.unwrap_or_default();
            event(api, cj, "Warning", "UnknownTimeZone", &format!(
                "invalid timeZone: {z:?}: unknown time zone {z} (only UTC and fixed offsets such as Etc/GMT+5 are supported)"));
            return Ok(Action::AwaitChange);
        }
    };
    if spec["suspend"] == true {
        return Ok(Action::AwaitChange);
    }
    let sched = match Schedule::parse(&schedule_text) {
        Ok(s) => s.with_offset(offset),
        Err(e) => {
            event(
                api,
                cj,
                "Warning",
                "UnparseableSchedule",
                &format!(
                    "unparseable schedule: {:?} : {e}",
                    spec["schedule"].as_str().unwrap_or("")
                ),
            );
            return Ok(Action::AwaitChange);
        }
    };

    let created = cj["metadata"]["creationTimestamp"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(0);
    let earliest = st.last_schedule.unwrap_or(created);
    let deadline = spec["startingDeadlineSeconds"].as_i64();
    // Nothing is scheduled before now - startingDeadlineSeconds.
    let window_start = match deadline {
        Some(d) => earliest.max(now_ms.div_euclid(1000) - d),
        None => earliest,
    };
    let scheduled = match most_recent(&sched, window_start, now_ms) {
        Err(e) => {
            event(
                api,
                cj,
                "Warning",
                "InvalidSchedule",
                &format!(
                    "invalid schedule: {} : {e}",
                    spec["schedule"].as_str().unwrap_or("")
                ),
            );
            return Ok(Action::AwaitChange);
        }
        Ok((None, _)) => {
            // Upstream never reports a time the deadline window cut off (its
            // `MissSchedule` check below cannot fire); report it here.
            if window_start > earliest {
                if let Ok((Some(missed), _)) = most_recent(&sched, earliest, now_ms) {
                    event(
                        api,
                        cj,
                        "Warning",
                        "MissSchedule",
                        &format!(
                            "Missed scheduled time to start a job: {}",
                            cron::rfc1123z(missed)
                        ),
                    );
                }
            }
            return Ok(next_schedule_delay(&sched, earliest, now_ms));
        }
        Ok((Some(t), missed)) => {
            if missed > 100 {
                event(api, cj, "Warning", "TooManyMissedTimes", &format!(
                    "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"));
            }
            t
        }
    };
    let requeue =
        |st: &Sync| next_schedule_delay(&sched, st.last_schedule.unwrap_or(created), now_ms);

    if deadline.is_some_and(|d| (scheduled + d) * 1000 < now_ms) {
        event(
            api,
            cj,
            "Warning",
            "MissSchedule",
            &format!(
                "Missed scheduled time to start a job: {}",
                cron::rfc1123z(scheduled)
            ),
        );
        return Ok(requeue(st));
    }
    let name = job_name(objects::name(cj), scheduled);
    if st.active.iter().any(|r| r["name"] == name.as_str()) || st.last_schedule == Some(scheduled) {
        return Ok(requeue(st));
    }
    match spec["concurrencyPolicy"].as_str().unwrap_or("Allow") {
        "Forbid" if !st.active.is_empty() => {
            event(api, cj, "Normal", "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid");
            return Ok(requeue(st));
        }
        "Replace" => {
            for r in st.active.clone() {
                let j = match api.get(
                    &job(),
                    r["namespace"].as_str().unwrap_or(ns),
                    r["name"].as_str().unwrap_or(""),
                ) {
                    Ok(j) => j,
                    Err(ObjectError::NotFound) => {
                        st.forget(r["uid"].as_str().unwrap_or(""));
                        continue;
                    }
                    Err(e) => {
                        event(api, cj, "Warning", "FailedGet", &format!("Get job: {e:?}"));
                        return Err(internal(e));
                    }
                };
                delete_job(api, cj, &j, st)?;
            }
        }
        _ => {}
    }

    let want = job_from_template(cj, scheduled, offset);
    let made = match api.create(&job(), ns, &want) {
        Ok(made) => {
            event(
                api,
                cj,
                "Normal",
                "SuccessfulCreate",
                &format!("Created job {}", objects::name(&made)),
            );
            made
        }
        Err(ObjectError::Conflict(_)) => {
            // Made earlier (our status update was lost) or by someone else.
            let have = api.get(&job(), ns, &name).map_err(internal)?;
            if !objects::is_controlled_by(&have, objects::uid(cj))
                || st.is_active(objects::uid(&have))
            {
                return Ok(requeue(st));
            }
            have
        }
        Err(e) => {
            event(
                api,
                cj,
                "Warning",
                "FailedCreate",
                &format!("Error creating job: {e:?}"),
            );
            return Err(internal(e));
        }
    };
    st.active.push(job_ref(&made));
    st.last_schedule = Some(scheduled);
    Ok(requeue(st))
}

impl Controller for CronJobController {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "cronjob".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: cron_job(),
            watches: vec![Watch {
                kind: job(),
                mapping: WatchMapping::Owner,
            }],
        }
    }

    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        trellis_sdk::config::none(config, "cronjob")
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(CronJobController);

#[cfg(test)]
mod tests;
