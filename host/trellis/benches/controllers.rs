//! The controller runtime, measured over simulated nodes (no root needed):
//!
//! 1. time until a 100-replica Deployment is fully Running (create → the
//!    Deployment's status says 100 available), against its baseline: the
//!    same 100 pods created directly (no controller) until all Running,
//!    through the same scheduler and nodes; runs interleaved, medians, ratio;
//! 2. reconcile calls/s per controller: 1,000 ReplicaSets of 0 replicas made
//!    at once, each controller's reconcile count over the time its queue took
//!    to drain (read from the `Plugin` status, refreshed every 100 ms);
//! 3. the controller runtime's memory (its own `trellis controllers`
//!    process) before and after 10,000 pods are in its cache.
//!
//! `cargo bench -p trellis --bench controllers` (env CONTROLLERS_BENCH_RUNS,
//! default 5; CONTROLLERS_BENCH_OBJECTS, default 10000).

#[path = "common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_client::{Client, ListParams, Resource};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start trellis"),
    )
}

fn res(group: &str, version: &str, plural: &str) -> Resource {
    Resource::new(
        group,
        version,
        plural,
        plural != "plugins" && plural != "nodes",
    )
}

async fn wait_for(what: &str, patience: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < patience, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m"}}}]},
            },
        },
    })
}

fn bare_pod(name: &str, app: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m"}}}]},
    })
}

async fn running(client: &Client, app: &str) -> usize {
    let list = client
        .list(
            &res("", "v1", "pods"),
            "default",
            &ListParams::default().labels(&format!("app={app}")),
        )
        .await
        .unwrap();
    list.items()
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

async fn gone(client: &Client, app: &str) {
    wait_for("pods deleted", Duration::from_secs(120), async || {
        client
            .list(
                &res("", "v1", "pods"),
                "default",
                &ListParams::default().labels(&format!("app={app}")),
            )
            .await
            .unwrap()
            .items()
            .is_empty()
    })
    .await;
}

/// Create → 100 available through the Deployment and ReplicaSet controllers.
async fn deployment_run(client: &Client, name: &str, n: usize) -> f64 {
    let deploys = res("apps", "v1", "deployments");
    let t0 = Instant::now();
    client
        .create(&deploys, "default", &deployment(name, n))
        .await
        .unwrap();
    wait_for(
        "the Deployment Running",
        Duration::from_secs(120),
        async || {
            let d = client.get(&deploys, "default", name).await.unwrap();
            d["status"]["availableReplicas"].as_u64() == Some(n as u64)
                && d["status"]["updatedReplicas"].as_u64() == Some(n as u64)
        },
    )
    .await;
    let took = t0.elapsed().as_secs_f64() * 1e3;
    assert_eq!(running(client, name).await, n);
    client
        .delete(
            &deploys,
            "default",
            name,
            Some(&json!({"propagationPolicy": "Background"})),
        )
        .await
        .unwrap();
    gone(client, name).await;
    took
}

/// The same pods created directly, 16 at a time, until all Running.
async fn bare_run(client: &Client, name: &str, n: usize) -> f64 {
    let pods = res("", "v1", "pods");
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = client.clone();
        let p = bare_pod(&format!("{name}-{i}"), name);
        let pods = pods.clone();
        set.spawn(async move { c.create(&pods, "default", &p).await.unwrap() });
        if set.len() >= 16 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
    wait_for("bare pods Running", Duration::from_secs(120), async || {
        running(client, name).await == n
    })
    .await;
    let took = t0.elapsed().as_secs_f64() * 1e3;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let c = client.clone();
        let pods = pods.clone();
        let name = format!("{name}-{i}");
        set.spawn(async move { c.delete(&pods, "default", &name, None).await });
        if set.len() >= 16 {
            set.join_next().await;
        }
    }
    while set.join_next().await.is_some() {}
    gone(client, name).await;
    took
}

/// (name, reconciles, queued + in flight) of every running controller.
async fn controller_stats(client: &Client) -> Vec<(String, u64, u64)> {
    let list = client
        .list(
            &res("trellis.dev", "v1alpha1", "plugins"),
            "",
            &ListParams::default(),
        )
        .await
        .unwrap();
    list.items()
        .iter()
        .filter(|p| {
            p["spec"]["role"] == "controller" && p["status"]["controller"]["reconciles"].is_u64()
        })
        .map(|p| {
            let c = &p["status"]["controller"];
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                c["reconciles"].as_u64().unwrap_or(0),
                c["queued"].as_u64().unwrap_or(0) + c["inFlight"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn main() {
    let runs = common::env_n("CONTROLLERS_BENCH_RUNS", 5);
    let objects = common::env_n("CONTROLLERS_BENCH_OBJECTS", 10_000);
    let plugins = trellis_testkit::plugin_dir();
    assert!(
        plugins.join("deployment.wasm").exists(),
        "run `cargo xtask plugins` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = common::start(
        dir.path(),
        &[
            "--no-controllers",
            "--plugin-dir",
            plugins.to_str().unwrap(),
        ],
    );
    let kubeconfig = dir.path().join("kubeconfig");
    let kc = kubeconfig.to_str().unwrap();
    let _sim = spawn(&["sim", "nodes", "--count", "20", "--kubeconfig", kc]);
    let controllers = spawn(&[
        "controllers",
        "--kubeconfig",
        kc,
        "--plugin-dir",
        plugins.to_str().unwrap(),
        "--status-interval",
        "100ms",
    ]);
    let pid = controllers.0.id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = Client::from_kubeconfig(&kubeconfig).unwrap();
    rt.block_on(async {
        wait_for("20 nodes and the controllers", Duration::from_secs(120), async || {
            let nodes = client
                .list(&res("", "v1", "nodes"), "", &ListParams::default())
                .await
                .map(|l| l.items().len())
                .unwrap_or(0);
            let stats = controller_stats(&client).await;
            nodes == 20 && stats.len() >= 10
        })
        .await;
        let n = 100;
        // Warm both paths once.
        deployment_run(&client, "warm-d", n).await;
        bare_run(&client, "warm-b", n).await;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for i in 0..runs {
            with.push(deployment_run(&client, &format!("web{i}"), n).await);
            without.push(bare_run(&client, &format!("bare{i}"), n).await);
        }
        println!("controllers: {n}-replica Deployment create → all {n} available, {runs} runs over 20 simulated nodes");
        println!("  runs (ms): deployment {with:.0?}");
        println!("  runs (ms): bare pods  {without:.0?}");
        let (mw, mb) = (median(&mut with), median(&mut without));
        println!("  median: deployment {mw:.0} ms, the same {n} pods created directly {mb:.0} ms (ratio {:.2})", mw / mb);

        // Reconcile throughput: 1,000 ReplicaSets of 0 replicas at once.
        let before: std::collections::HashMap<String, u64> =
            controller_stats(&client).await.into_iter().map(|(n, r, _)| (n, r)).collect();
        let rs = res("apps", "v1", "replicasets");
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..1000 {
            let c = client.clone();
            let rs = rs.clone();
            set.spawn(async move {
                let mut obj = deployment(&format!("rs{i}"), 0);
                obj["kind"] = json!("ReplicaSet");
                c.create(&rs, "default", &obj).await.unwrap()
            });
            if set.len() >= 16 {
                set.join_next().await;
            }
        }
        while set.join_next().await.is_some() {}
        let mut drained = Vec::new();
        wait_for("queues drained", Duration::from_secs(300), async || {
            let stats = controller_stats(&client).await;
            for (name, r, busy) in &stats {
                let delta = r - before.get(name).copied().unwrap_or(0);
                if delta >= 1000 && *busy == 0 && !drained.iter().any(|(n, _, _): &(String, u64, f64)| n == name) {
                    drained.push((name.clone(), delta, t0.elapsed().as_secs_f64()));
                }
            }
            ["replicaset", "garbage-collector-replicaset"]
                .iter()
                .all(|n| drained.iter().any(|(d, _, _)| d == n))
        })
        .await;
        println!("controllers: reconcile calls/s, 1000 ReplicaSets created at once (16 creates in flight)");
        for (name, calls, secs) in &drained {
            println!("  {name}: {calls} reconciles, queue drained after {secs:.2} s: {:.0} calls/s", *calls as f64 / secs);
        }
        // At a full queue: a new version of the replicaset controller (its
        // config changed) is swapped in and queues every ReplicaSet again.
        let stats = controller_stats(&client).await;
        let start = stats.iter().find(|(n, _, _)| n == "replicaset").unwrap().1;
        let t0 = Instant::now();
        client
            .patch(
                &res("trellis.dev", "v1alpha1", "plugins"),
                "",
                "replicaset",
                "",
                trellis_client::Patch::Merge,
                &json!({"spec": {"config": {"burstReplicas": 499}}}),
            )
            .await
            .unwrap();
        let mut took = 0.0;
        let mut calls = 0;
        wait_for("the swapped controller drained its queue", Duration::from_secs(300), async || {
            let stats = controller_stats(&client).await;
            let (_, r, busy) = stats.iter().find(|(n, _, _)| n == "replicaset").unwrap().clone();
            calls = r - start;
            took = t0.elapsed().as_secs_f64();
            calls >= 1000 && busy == 0
        })
        .await;
        println!(
            "  replicaset after a swap re-queued all 1000: {calls} reconciles, drained after {took:.2} s (load included): {:.0} calls/s",
            calls as f64 / took
        );
        client
            .delete(&rs, "default", "", None)
            .await
            .ok();

        // Memory with many objects cached.
        let idle = common::rss_kib(pid);
        let pods = res("", "v1", "pods");
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..objects {
            let c = client.clone();
            let pods = pods.clone();
            set.spawn(async move {
                let mut p = bare_pod(&format!("cached-{i}"), "cached");
                // Bound to a node nobody runs: nothing schedules or starts it.
                p["spec"]["nodeName"] = json!("nowhere");
                c.create(&pods, "default", &p).await.unwrap()
            });
            if set.len() >= 32 {
                set.join_next().await;
            }
        }
        while set.join_next().await.is_some() {}
        let created = t0.elapsed();
        // The runtime has them once a controller lists them: wait until its
        // statuses settle, then a moment for the allocator.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let full = common::rss_kib(pid);
        println!("controllers: runtime memory (its own process, RSS)");
        println!(
            "  idle after the runs above: {idle} KiB; with {objects} more pods cached: {full} KiB (+{} KiB, {:.0} bytes per pod; {objects} pods created in {:.1} s)",
            full.saturating_sub(idle),
            (full.saturating_sub(idle) * 1024) as f64 / objects as f64,
            created.as_secs_f64()
        );
    });
    drop(controllers);
    drop(server);
}
