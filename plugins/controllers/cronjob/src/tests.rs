use super::*;
use trellis_sdk::controller::fake::FakeCluster;
use trellis_sdk::controller::kinds::event as event_kind;

const NS: &str = "default";
// FakeCluster starts at 1,700,000,000 s = 2023-11-14T22:13:20Z (a Tuesday).

/// A CronJob as the API server stores it (defaulted).
fn put_cj(c: &FakeCluster, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    let defaults = json!({"concurrencyPolicy": "Allow", "suspend": false,
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"metadata": {"labels": {"app": "hello"}, "annotations": {"team": "a"}},
            "spec": {"template": {"spec": {"restartPolicy": "OnFailure",
                "containers": [{"name": "hello", "image": "busybox", "command": ["date"]}]}}}}});
    for (k, v) in defaults.as_object().unwrap() {
        if spec.get(k).is_none() {
            spec[k] = v.clone();
        }
    }
    c.put(&cron_job(), json!({"metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}")}, "spec": spec}))
}

/// Reconcile every CronJob until a round writes nothing but Events:
/// `FakeCluster::settle` counts Events as writes, and like upstream this
/// controller repeats some (`JobAlreadyActive`, `MissSchedule`, ...) on every
/// reconcile while their cause lasts. (Every key this controller gets names
/// a CronJob, so reconciling them all covers the Job watch.)
fn settle(c: &FakeCluster) {
    let real = |c: &FakeCluster| c.writes().iter().filter(|w| w.kind != "Event").count();
    for _ in 0..100 {
        let before = real(c);
        for cj in c.all(&cron_job()) {
            let key = ObjectKey {
                namespace: objects::namespace(&cj).into(),
                name: objects::name(&cj).into(),
            };
            reconcile(c, &key).unwrap();
        }
        if real(c) == before {
            return;
        }
    }
    panic!("the controller did not settle in 100 rounds");
}

/// Reconcile once; the requeue delay, if any.
fn run(c: &FakeCluster, name: &str) -> Option<u64> {
    match reconcile(
        c,
        &ObjectKey {
            namespace: NS.into(),
            name: name.into(),
        },
    )
    .unwrap()
    {
        Action::RequeueAfter(ms) => Some(ms),
        Action::AwaitChange => None,
    }
}

fn job_names(c: &FakeCluster) -> Vec<String> {
    c.all(&job())
        .iter()
        .map(|j| objects::name(j).to_string())
        .collect()
}

fn events(c: &FakeCluster, reason: &str) -> Vec<String> {
    c.all(&event_kind())
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect()
}

fn status(c: &FakeCluster, name: &str) -> Value {
    c.object(&cron_job(), NS, name).unwrap()["status"].clone()
}

fn active_names(c: &FakeCluster, name: &str) -> Vec<String> {
    status(c, name)["active"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// Play the Job controller: the Job started at its creation and finished now.
fn finish(c: &FakeCluster, name: &str, outcome: &str) {
    let j = c.object(&job(), NS, name).unwrap();
    let now = rfc3339(c.now());
    let mut st = json!({"startTime": j["metadata"]["creationTimestamp"],
        "conditions": [{"type": outcome, "status": "True", "lastTransitionTime": now}]});
    if outcome == "Complete" {
        st["completionTime"] = json!(now);
    }
    c.patch(&job(), NS, name, json!({"status": st}));
}

/// Advance to `ms` after the fake's start.
fn at(c: &FakeCluster, ms: i64) {
    c.advance(1_700_000_000_000 + ms - c.now_millis());
}

#[test]
fn creates_a_job_at_each_schedule_time() {
    let c = FakeCluster::new();
    put_cj(&c, "hello", json!({"schedule": "*/5 * * * *"}));
    settle(&c);
    assert!(job_names(&c).is_empty());
    // next: 22:15:00, 100 s away, plus 100 ms
    assert_eq!(run(&c, "hello"), Some(100_100));
    c.advance(100_100);
    settle(&c);
    let name = "hello-28333335"; // 1,700,000,100 s / 60
    assert_eq!(job_names(&c), [name]);
    let j = c.object(&job(), NS, name).unwrap();
    assert_eq!(j["metadata"]["labels"]["app"], "hello");
    assert_eq!(j["metadata"]["annotations"]["team"], "a");
    assert_eq!(
        j["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
        "2023-11-14T22:15:00Z"
    );
    let owner = &j["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["controller"].as_bool()
        ),
        (Some("CronJob"), Some("hello"), Some(true))
    );
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
    let st = status(&c, "hello");
    assert_eq!(st["lastScheduleTime"], "2023-11-14T22:15:00Z");
    assert_eq!(st["active"][0]["name"], name);
    assert_eq!(st["active"][0]["kind"], "Job");
    assert_eq!(st["active"][0]["uid"], objects::uid(&j));
    assert_eq!(
        events(&c, "SuccessfulCreate"),
        [format!("Created job {name}")]
    );
    // next: 22:20:00
    assert_eq!(run(&c, "hello"), Some(300_000));

    // the Job completes
    c.advance(30_000);
    finish(&c, name, "Complete");
    settle(&c);
    let st = status(&c, "hello");
    assert!(st.get("active").is_none());
    assert_eq!(st["lastSuccessfulTime"], rfc3339(c.now()));
    assert_eq!(
        events(&c, "SawCompletedJob"),
        [format!("Saw completed job: {name}, condition: Complete")]
    );

    // idempotent between schedule times
    c.clear_writes();
    settle(&c);
    assert!(c.writes().is_empty(), "{:?}", c.writes());
    at(&c, 400_100);
    settle(&c);
    assert_eq!(job_names(&c), [name, "hello-28333340"]);
}

#[test]
fn only_the_most_recent_missed_time_runs() {
    let c = FakeCluster::new();
    put_cj(&c, "m", json!({"schedule": "*/5 * * * *"}));
    c.advance(3_600_000); // 23:13:20; 12 times missed
    settle(&c);
    assert_eq!(job_names(&c), ["m-28333390"]); // 23:10
    assert_eq!(status(&c, "m")["lastScheduleTime"], "2023-11-14T23:10:00Z");
    assert!(events(&c, "TooManyMissedTimes").is_empty());
    assert_eq!(run(&c, "m"), Some(100_000 + 100));
}

#[test]
fn too_many_missed_times() {
    let c = FakeCluster::new();
    put_cj(&c, "many", json!({"schedule": "* * * * *"}));
    c.advance(200 * 60_000);
    settle(&c);
    assert_eq!(job_names(&c).len(), 1);
    let e = events(&c, "TooManyMissedTimes");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(
            "too many missed start times: 200. Set or decrease .spec.startingDeadlineSeconds"
        ),
        "{e:?}"
    );
    // within a deadline window, not too many
    let c = FakeCluster::new();
    put_cj(
        &c,
        "few",
        json!({"schedule": "* * * * *", "startingDeadlineSeconds": 600}),
    );
    c.advance(200 * 60_000);
    settle(&c);
    assert_eq!(job_names(&c).len(), 1);
    assert!(events(&c, "TooManyMissedTimes").is_empty());
}

#[test]
fn starting_deadline() {
    let c = FakeCluster::new();
    put_cj(
        &c,
        "late",
        json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 60}),
    );
    // 23:01:30: the 23:00 run is 90 s late
    at(&c, (46 * 60 + 40 + 90) * 1000);
    settle(&c);
    assert!(job_names(&c).is_empty());
    assert_eq!(
        events(&c, "MissSchedule"),
        ["Missed scheduled time to start a job: Tue, 14 Nov 2023 23:00:00 +0000"]
    );
    assert_eq!(run(&c, "late"), Some((58 * 60 + 30) * 1000 + 100));
    // 00:00:30 is within the minute
    c.advance((58 * 60 + 60) * 1000);
    settle(&c);
    assert_eq!(job_names(&c), ["late-28333440"]);
}

#[test]
fn forbid_waits_for_the_running_job() {
    let c = FakeCluster::new();
    put_cj(
        &c,
        "f",
        json!({"schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid"}),
    );
    at(&c, 100_100);
    settle(&c);
    assert_eq!(job_names(&c), ["f-28333335"]);
    at(&c, 400_100);
    settle(&c);
    assert_eq!(job_names(&c), ["f-28333335"]);
    assert_eq!(
        events(&c, "JobAlreadyActive"),
        ["Not starting job because prior execution is running and concurrency policy is Forbid"]
    );
    assert_eq!(
        run(&c, "f"),
        Some(300_000),
        "waits for 22:25 unless the job ends"
    );
    // it ends: the 22:20 run starts late
    c.advance(60_000);
    finish(&c, "f-28333335", "Failed");
    settle(&c);
    assert_eq!(job_names(&c), ["f-28333335", "f-28333340"]);
    assert_eq!(active_names(&c, "f"), ["f-28333340"]);
    assert_eq!(
        events(&c, "SawCompletedJob"),
        ["Saw completed job: f-28333335, condition: Failed"]
    );
}

#[test]
fn replace_deletes_the_running_job() {
    let c = FakeCluster::new();
    put_cj(
        &c,
        "r",
        json!({"schedule": "*/5 * * * *", "concurrencyPolicy": "Replace"}),
    );
    at(&c, 100_100);
    settle(&c);
    at(&c, 400_100);
    c.clear_writes();
    settle(&c);
    assert_eq!(job_names(&c), ["r-28333340"]);
    assert_eq!(active_names(&c, "r"), ["r-28333340"]);
    assert_eq!(events(&c, "SuccessfulDelete"), ["Deleted job r-28333335"]);
    assert!(c
        .writes()
        .iter()
        .any(|w| w.verb == "delete" && w.name == "r-28333335"));
}

#[test]
fn allow_runs_jobs_side_by_side() {
    let c = FakeCluster::new();
    put_cj(&c, "a", json!({"schedule": "*/5 * * * *"}));
    at(&c, 100_100);
    settle(&c);
    at(&c, 400_100);
    settle(&c);
    assert_eq!(active_names(&c, "a"), ["a-28333335", "a-28333340"]);
}

#[test]
fn history_limits_delete_the_oldest_finished_jobs() {
    let c = FakeCluster::new();
    put_cj(
        &c,
        "h",
        json!({"schedule": "* * * * *", "concurrencyPolicy": "Forbid"}),
    );
    // six runs: four succeed, then two fail
    for i in 0..6 {
        at(&c, (40 + 60 * i) * 1000 + 100);
        settle(&c);
        let name = active_names(&c, "h")[0].clone();
        c.advance(10_000);
        finish(&c, &name, if i < 4 { "Complete" } else { "Failed" });
        settle(&c);
    }
    let minute = |i: i64| format!("h-{}", 28333334 + i);
    assert_eq!(job_names(&c), [minute(1), minute(2), minute(3), minute(5)]);
    assert_eq!(
        events(&c, "SuccessfulDelete"),
        [
            format!("Deleted job {}", minute(0)),
            format!("Deleted job {}", minute(4))
        ]
    );
    assert!(c
        .writes()
        .iter()
        .filter(|w| w.verb == "delete")
        .all(|w| w.kind == "Job"));
    assert_eq!(
        status(&c, "h")["lastSuccessfulTime"],
        rfc3339(1_700_000_000 + 3 * 60 + 40 + 10)
    );
}

#[test]
fn suspended_cron_jobs_start_nothing() {
    let c = FakeCluster::new();
    put_cj(&c, "s", json!({"schedule": "*/5 * * * *", "suspend": true}));
    at(&c, 400_100);
    settle(&c);
    assert!(job_names(&c).is_empty());
    assert_eq!(run(&c, "s"), None);
    // resumed: the most recent missed time runs
    c.patch(&cron_job(), NS, "s", json!({"spec": {"suspend": false}}));
    settle(&c);
    assert_eq!(job_names(&c), ["s-28333340"]);
}

#[test]
fn time_zones() {
    let c = FakeCluster::new();
    put_cj(
        &c,
        "berlin",
        json!({"schedule": "0 9 * * *", "timeZone": "Europe/Berlin"}),
    );
    put_cj(
        &c,
        "plus2",
        json!({"schedule": "0 9 * * *", "timeZone": "Etc/GMT-2"}),
    );
    put_cj(
        &c,
        "utc",
        json!({"schedule": "0 9 * * *", "timeZone": "Etc/UTC"}),
    );
    settle(&c);
    let e = events(&c, "UnknownTimeZone");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("invalid timeZone: \"Europe/Berlin\": unknown time zone Europe/Berlin"),
        "{e:?}"
    );
    assert_eq!(run(&c, "berlin"), None);
    // 09:00 at UTC+2 is 07:00Z on the 15th
    let to_7: i64 = (24 * 3600 - (22 * 3600 + 13 * 60 + 20) + 7 * 3600) * 1000;
    assert_eq!(run(&c, "plus2"), Some((to_7 + 100) as u64));
    c.advance(to_7 + 100);
    settle(&c);
    let j = c.object(&job(), NS, "plus2-28333860").unwrap();
    assert_eq!(
        j["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
        "2023-11-15T09:00:00+02:00"
    );
    assert_eq!(job_names(&c), ["plus2-28333860"]);
}

#[test]
fn missing_and_unexpected_jobs() {
    let c = FakeCluster::new();
    let cj = put_cj(&c, "x", json!({"schedule": "*/5 * * * *"}));
    at(&c, 100_100);
    settle(&c);
    c.remove(&job(), NS, "x-28333335");
    settle(&c);
    assert!(status(&c, "x").get("active").is_none());
    assert_eq!(
        events(&c, "MissingJob"),
        ["Active job went missing: x-28333335"]
    );
    // a running job it did not make
    c.put(
        &job(),
        json!({"metadata": {"name": "stray", "namespace": NS,
        "ownerReferences": [objects::controller_owner_ref(&cj, &cron_job())]}, "spec": {}}),
    );
    settle(&c);
    assert_eq!(
        events(&c, "UnexpectedJob"),
        ["Saw a job that the controller did not create or forgot: stray"]
    );
    assert!(status(&c, "x").get("active").is_none());
}

#[test]
fn a_lost_status_update_adopts_the_existing_job() {
    let c = FakeCluster::new();
    let cj = put_cj(&c, "y", json!({"schedule": "*/5 * * * *"}));
    at(&c, 100_100);
    // the Job exists but the status never said so
    c.put(&job(), job_from_template(&cj, 1_700_000_100, 0));
    settle(&c);
    assert_eq!(active_names(&c, "y"), ["y-28333335"]);
    assert_eq!(status(&c, "y")["lastScheduleTime"], "2023-11-14T22:15:00Z");
    assert!(events(&c, "SuccessfulCreate").is_empty());
}

#[test]
fn unparseable_and_impossible_schedules() {
    let c = FakeCluster::new();
    put_cj(&c, "bad", json!({"schedule": "61 * * * *"}));
    put_cj(&c, "never", json!({"schedule": "0 0 30 2 *"}));
    settle(&c);
    assert_eq!(events(&c, "UnparseableSchedule").len(), 1);
    assert!(events(&c, "UnparseableSchedule")[0].starts_with(
        "unparseable schedule: \"61 * * * *\" : end of range (61) above maximum (59)"
    ));
    assert_eq!(events(&c, "InvalidSchedule").len(), 1);
    assert_eq!(run(&c, "never"), None);
    assert!(CronJobController.configure("{}").is_ok());
    assert!(CronJobController.configure(r#"{"x": 1}"#).is_err());
}
