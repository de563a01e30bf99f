//! The node agent, measured (root, real containers):
//!
//! 1. pod create → Running (container started, seen through a watch), p50
//!    and p99, for N pods created one by one and N at once, each phase on a
//!    quiet node (the previous phase's pods torn down, the machine idle);
//!    "at once" is repeated (bursts; latencies pooled) and also gives
//!    create → bound, the machine's CPU per pod (split into the control
//!    plane, the agent, this bench's client and the rest, and the shims'
//!    share of the rest; the median burst's), the store writes per pod, and
//!    where the median pod would be Running were the work done in strict
//!    order at that CPU, and at the CPU left once the control plane, the
//!    agent, this bench and the shims take none;
//! 2. container create+start+wait+delete through the agent's runtime (the
//!    per-pod shim over its socket, libcontainer inside) against `runc run`
//!    on the same bundle, interleaved, medians and ratio;
//! 3. the agent's RSS and CPU while idle with 20 pods (the agent runs as its
//!    own `trellis agent` process beside a `trellis up --no-agent`).
//!
//! `cargo bench -p trellis --bench agent` (env AGENT_BENCH_PODS, default 50;
//! AGENT_BENCH_RUNS, default 30; AGENT_BENCH_BURSTS, default 3;
//! BENCH_PERF_CTL=FIFO profiles only the "at once" bursts under
//! `perf record -D -1 --control fifo:FIFO`;
//! AGENT_BENCH_LOG=FILE keeps the agent's log).

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_client::{Client, ListParams, Resource};

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn busybox_tar(dir: &Path) -> PathBuf {
    let out = dir.join("busybox-oci.tar");
    let script = trellis_testkit::repo_root().join("dev/busybox-image.sh");
    let ok = Command::new("bash")
        .arg(script)
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "dev/busybox-image.sh failed");
    out
}

fn pods() -> Resource {
    Resource::new("", "v1", "pods", true)
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "agent"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": "busybox", "imagePullPolicy": "IfNotPresent",
                            "command": ["sleep", "3600"]}],
        },
    })
}

fn running(p: &Value) -> bool {
    p["status"]["containerStatuses"][0]["state"]["running"].is_object()
}

/// Create → Running, and create → bound to the node (seen through the same
/// watch), in ms per pod.
struct Latencies {
    running: Vec<f64>,
    bound: Vec<f64>,
}

/// Create `names` (all at once when `together`, else one after the other,
/// each waiting for Running) and measure each pod.
async fn create_to_running(client: &Client, names: &[String], together: bool) -> Latencies {
    let list = client
        .list(&pods(), "default", &ListParams::default())
        .await
        .unwrap();
    let mut watch = client
        .watch(
            &pods(),
            "default",
            &ListParams::default(),
            list.resource_version(),
        )
        .await
        .unwrap();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut lat = Vec::new();
    let mut bound = HashMap::new();
    let spawn_create = |name: &String, sent: &mut HashMap<String, Instant>| {
        let c = client.clone();
        let body = pod(name);
        sent.insert(name.clone(), Instant::now());
        tokio::spawn(async move { c.create(&pods(), "default", &body).await.unwrap() });
    };
    let mut idx = 0;
    if together {
        for name in names {
            spawn_create(name, &mut sent);
        }
    } else {
        spawn_create(&names[0], &mut sent);
    }
    let mut done = std::collections::HashSet::new();
    while done.len() < names.len() {
        let ev = tokio::time::timeout(Duration::from_secs(120), watch.next())
            .await
            .expect("pods reach Running within 2 minutes")
            .unwrap()
            .expect("watch open");
        let name = ev.object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let Some(t0) = sent.get(&name) else { continue };
        if ev.object["spec"]["nodeName"].is_string() && !bound.contains_key(&name) {
            bound.insert(name.clone(), t0.elapsed().as_secs_f64() * 1000.0);
        }
        if !running(&ev.object) || done.contains(&name) {
            continue;
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        done.insert(name);
        if !together {
            idx += 1;
            if idx < names.len() {
                spawn_create(&names[idx], &mut sent);
            }
        }
    }
    Latencies {
        running: lat,
        bound: bound.into_values().collect(),
    }
}

/// One burst of pods created at once: their latencies, and per pod the
/// machine's CPU (all of it, the control plane's, the agent's, this bench's
/// own client's, the rest's, in ms) and the store writes.
struct Burst {
    lat: Latencies,
    cpu_ms: f64,
    server_ms: f64,
    agent_ms: f64,
    client_ms: f64,
    /// The shims, libcontainer's processes, the containers and the
    /// kernel's threads.
    rest_ms: f64,
    /// Of `rest_ms`: the shims' own (and their factory's).
    shims_ms: f64,
    writes: f64,
}

impl Burst {
    /// Its CPU per pod, split, and its store writes per pod.
    fn cpu(&self) -> String {
        format!(
            "{:.1} ms per pod (control plane {:.1}, agent {:.1}, this bench's client {:.1}, \
             shims, containers and the rest {:.1}, of which the shims' own {:.1}); \
             {:.1} store writes per pod",
            self.cpu_ms,
            self.server_ms,
            self.agent_ms,
            self.client_ms,
            self.rest_ms,
            self.shims_ms,
            self.writes
        )
    }
}

async fn burst(client: &Client, names: &[String], server_pid: u32, agent_pid: u32) -> Burst {
    let rv0 = store_revision(client).await;
    common::perf_control("enable");
    let busy = machine_busy_ticks();
    let me = std::process::id();
    let shims0 = shims_cpu_ns();
    let (server0, agent0, client0) = (cpu_ticks(server_pid), cpu_ticks(agent_pid), cpu_ticks(me));
    let lat = create_to_running(client, names, true).await;
    let busy = machine_busy_ticks() - busy;
    let server_busy = cpu_ticks(server_pid) - server0;
    let agent_busy = cpu_ticks(agent_pid) - agent0;
    let client_busy = cpu_ticks(me) - client0;
    let shims_ns = shims_cpu_ns().saturating_sub(shims0);
    common::perf_control("disable");
    let writes = store_revision(client).await - rv0;
    let n = names.len() as f64;
    let per_pod = |ticks: u64| ticks as f64 * 1000.0 / USER_HZ / n;
    Burst {
        lat,
        cpu_ms: per_pod(busy),
        server_ms: per_pod(server_busy),
        agent_ms: per_pod(agent_busy),
        client_ms: per_pod(client_busy),
        rest_ms: per_pod(busy.saturating_sub(server_busy + agent_busy + client_busy)),
        shims_ms: shims_ns as f64 / 1e6 / n,
        writes: writes as f64 / n,
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: &[f64]) -> f64 {
    pct(&sorted(v), 0.5)
}

/// The store's revision: every write anywhere moves it by one.
async fn store_revision(client: &Client) -> u64 {
    let events = Resource::new("", "v1", "events", true);
    let list = client
        .list(&events, "", &ListParams::default().limit(1))
        .await
        .unwrap();
    list.resource_version().parse().unwrap_or(0)
}

/// Delete every bench pod, wait until the API server has none, then until
/// the agent has torn them all down, so that a measurement never shares the
/// machine with the previous one's teardown. Returns how long the teardown
/// went on after the API server had no pods.
async fn delete_all(client: &Client, agent_dir: &Path) -> Duration {
    delete_pods(client).await;
    let gone = Instant::now();
    while !trellis_agent::pods_with_state(agent_dir).is_empty() {
        assert!(
            gone.elapsed() < Duration::from_secs(120),
            "the agent did not tear down the deleted pods within 2 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let teardown = gone.elapsed();
    // The kernel finishes some of it in the background (network namespaces,
    // cgroups): wait (10 s at most) for a quiet machine, under a tenth of its
    // CPUs busy over a window.
    let window = Duration::from_millis(200);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let quiet_ticks = 0.1 * cpus * window.as_secs_f64() * USER_HZ;
    for _ in 0..50 {
        let busy = machine_busy_ticks();
        tokio::time::sleep(window).await;
        if ((machine_busy_ticks() - busy) as f64) < quiet_ticks {
            break;
        }
    }
    teardown
}

async fn delete_pods(client: &Client) {
    let list = client
        .list(
            &pods(),
            "default",
            &ListParams::default().labels("bench=agent"),
        )
        .await
        .unwrap();
    for p in list.items() {
        let name = p["metadata"]["name"].as_str().unwrap();
        let now = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0});
        client
            .delete(&pods(), "default", name, Some(&now))
            .await
            .ok();
    }
    let mut left = Vec::new();
    for _ in 0..600 {
        let l = client
            .list(&pods(), "default", &ListParams::default())
            .await
            .unwrap();
        if l.items().is_empty() {
            return;
        }
        left = l.items().to_vec();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<String> = left
        .iter()
        .map(|p| {
            format!(
                "{} ({}, {})",
                p["metadata"]["name"].as_str().unwrap_or("?"),
                p["status"]["phase"].as_str().unwrap_or("no phase"),
                p["status"]["containerStatuses"][0]["state"]
            )
        })
        .collect();
    panic!(
        "{} pods were not deleted within a minute: {}",
        left.len(),
        left.join("; ")
    );
}

fn report(what: &str, ms: Vec<f64>) {
    let ms = sorted(&ms);
    println!(
        "{what:<38} n={:<3} p50 {:>7.1} ms  p90 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        ms.len(),
        pct(&ms, 0.5),
        pct(&ms, 0.9),
        pct(&ms, 0.99),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// Clock ticks a second in `/proc/stat` and `/proc/PID/stat` (USER_HZ).
const USER_HZ: f64 = 100.0;

/// Busy clock ticks of the whole machine (every CPU, everything but idle
/// and iowait), from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu = stat.lines().next().unwrap_or("");
    cpu.split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse::<u64>().ok())
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum()
}

/// utime+stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// CPU time of the shims and their factory, in ns, from each of their
/// threads' `schedstat` (exact, where `/proc/PID/stat` rounds each process
/// down to whole clock ticks: a shim's few ms would read as nothing). The
/// processes libcontainer forks are not counted: they are not shims.
fn shims_cpu_ns() -> u64 {
    let mut ns = 0;
    for pid in pids_whose_cmdline(|cmd| cmd.starts_with(b"trellis-shim\0")) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    ns
}

/// The pods' shims (not their factory).
fn shim_pids() -> Vec<u32> {
    const SHIM: &[u8] = b"shim\0--dir\0";
    pids_whose_cmdline(|cmd| cmd.windows(SHIM.len()).any(|w| w == SHIM))
}

/// The processes whose `/proc/PID/cmdline` satisfies `wanted`.
fn pids_whose_cmdline(wanted: impl Fn(&[u8]) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if wanted(&cmd) {
            out.push(pid);
        }
    }
    out
}

/// Our runtime vs runc on one bundle running `true`.
fn runtime_vs_runc(dir: &Path, store: &trellis_image::ImageStore, runs: usize) {
    let runc = Path::new("/usr/sbin/runc");
    if !runc.exists() {
        println!("runtime vs runc: skipped, runc is not installed (apt-get install runc)");
        return;
    }
    let image = store.resolve("busybox").unwrap().expect("busybox imported");
    let root = store
        .prepare_rootfs(&image, &dir.join("bench-rootfs"))
        .unwrap();
    let cfg = trellis_runtime::bundle::ContainerConfig {
        rootfs: root.clone(),
        args: vec!["true".into()],
        env: vec!["PATH=/bin".into()],
        cgroup_path: "/trellis-bench/c".into(),
        ..Default::default()
    };
    let bundle = dir.join("bench-bundle");
    cfg.write_bundle(&bundle).unwrap();
    let shim_dir = dir.join("bench-shim");
    let shim = trellis_runtime::shim::ShimClient::new(&shim_dir);
    shim.spawn(Path::new(env!("CARGO_BIN_EXE_trellis-shim")), &[])
        .unwrap();
    let log = shim_dir.join("bench.log");
    let ours = |i: usize| -> f64 {
        let id = format!("c{i}");
        let t = Instant::now();
        shim.run(&id, &bundle, &log, None).unwrap();
        loop {
            let st = shim.state().unwrap();
            if st
                .iter()
                .any(|c| c.id == id && c.status == trellis_runtime::shim::Status::Exited)
            {
                break;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        shim.delete(&id).unwrap();
        t.elapsed().as_secs_f64() * 1000.0
    };
    let theirs = |i: usize| -> f64 {
        let id = format!("trellis-bench-runc-{}-{i}", std::process::id());
        let t = Instant::now();
        let st = Command::new(runc)
            .args([
                "--root",
                dir.join("runc-root").to_str().unwrap(),
                "run",
                "--bundle",
            ])
            .arg(&bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "runc run failed");
        t.elapsed().as_secs_f64() * 1000.0
    };
    // Warm both paths once, then interleave.
    ours(0);
    theirs(0);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // The whole machine's CPU while each ran (container processes, shim or
    // runc, kernel; and the bench's own polling for ours).
    let (mut cpu_a, mut cpu_b) = (0, 0);
    for i in 1..=runs {
        let t0 = machine_busy_ticks();
        a.push(ours(i));
        let t1 = machine_busy_ticks();
        b.push(theirs(i));
        cpu_a += t1 - t0;
        cpu_b += machine_busy_ticks() - t1;
    }
    a.sort_by(|x, y| x.partial_cmp(y).unwrap());
    b.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!(
        "create+start+wait+delete ({runs} runs each, interleaved): trellis shim p50 {:.1} ms, runc run p50 {:.1} ms, ratio {:.2}",
        pct(&a, 0.5),
        pct(&b, 0.5),
        pct(&a, 0.5) / pct(&b, 0.5)
    );
    let per_run = |ticks: u64| ticks as f64 * 1000.0 / USER_HZ / runs as f64;
    println!(
        "CPU of the whole machine per container, mean over those runs: trellis shim {:.1} ms, runc run {:.1} ms",
        per_run(cpu_a),
        per_run(cpu_b)
    );
    shim.shutdown().ok();
    store.release_rootfs(&dir.join("bench-rootfs")).ok();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = common::env_n("AGENT_BENCH_PODS", 50);
    let runs = common::env_n("AGENT_BENCH_RUNS", 30);
    let bursts_n = common::env_n("AGENT_BENCH_BURSTS", 3).max(1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let agent_dir = dir.join("agent");
    let store = trellis_image::ImageStore::open(&agent_dir.join("images")).unwrap();
    store.import(&busybox_tar(dir)).unwrap();

    runtime_vs_runc(dir, &store, runs);

    let server = common::start(
        &dir.join("cp"),
        &[
            "--plugin-dir",
            trellis_testkit::plugin_dir().to_str().unwrap(),
        ],
    );
    let kubeconfig = dir.join("cp/kubeconfig");
    let bridge = format!("trb{:05x}", std::process::id() & 0xfffff);
    let agent = Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["agent", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--data-dir")
        .arg(&agent_dir)
        .args([
            "--plugin-dir",
            trellis_testkit::plugin_dir().to_str().unwrap(),
        ])
        .args([
            "--node-name",
            "bench-node",
            "--agent-port",
            "0",
            "--bridge",
            &bridge,
            "--pod-cidr",
            "10.251.0.0/24",
        ])
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("AGENT_BENCH_LOG") {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        })
        .spawn()
        .unwrap();
    let mut cfg = trellis_agent::AgentConfig::new("bench-node", &agent_dir);
    cfg.bridge = bridge.clone();
    cfg.pod_cidr = "10.251.0.0/24".into();
    let agent_pid = agent.id();
    let server_pid = server.child.id();
    // Kill the agent and remove its containers and network even when a
    // measurement panics.
    let _cleanup = Cleanup { agent, cfg };

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = Client::from_kubeconfig(&kubeconfig).unwrap();
        let nodes = Resource::new("", "v1", "nodes", false);
        for _ in 0..600 {
            if client.get(&nodes, "", "bench-node").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Warm the path (image snapshot, plugin compile caches).
        let warm = vec!["warm-0".to_string()];
        create_to_running(&client, &warm, false).await;
        delete_all(&client, &agent_dir).await;

        let one: Vec<String> = (0..n).map(|i| format!("one-{i}")).collect();
        let lat = create_to_running(&client, &one, false).await;
        report(&format!("create -> Running, {n} one by one"), lat.running);
        let teardown = delete_all(&client, &agent_dir).await;
        println!(
            "teardown of {n} pods after the API server deleted them: {:.0} ms",
            teardown.as_secs_f64() * 1000.0
        );

        // The burst is repeated: on a shared machine one burst's CPU per pod
        // varies by a few ms, so the latencies are pooled and the CPU is the
        // median burst's.
        let mut bursts: Vec<Burst> = Vec::new();
        for b in 0..bursts_n {
            let names: Vec<String> = (0..n).map(|i| format!("all{b}-{i}")).collect();
            let burst = burst(&client, &names, server_pid, agent_pid).await;
            println!(
                "burst {}: create -> Running p50 {:.1} ms, p99 {:.1} ms; create -> bound p50 {:.1} ms; CPU {}",
                b + 1,
                median(&burst.lat.running),
                pct(&sorted(&burst.lat.running), 0.99),
                median(&burst.lat.bound),
                burst.cpu()
            );
            bursts.push(burst);
            delete_all(&client, &agent_dir).await;
        }
        let pooled = |f: fn(&Burst) -> &Vec<f64>| -> Vec<f64> {
            bursts.iter().flat_map(|b| f(b).iter().copied()).collect()
        };
        report(
            &format!("create -> Running, {n} at once"),
            pooled(|b| &b.lat.running),
        );
        report(&format!("create -> bound, {n} at once"), pooled(|b| &b.lat.bound));
        bursts.sort_by(|a, b| a.cpu_ms.total_cmp(&b.cpu_ms));
        let mid = &bursts[bursts.len() / 2];
        println!(
            "CPU of the whole machine while {n} pods started at once, median of {} bursts: {}",
            bursts.len(),
            mid.cpu()
        );
        // Were the pods started strictly one after another, each with all
        // the machine's cores and all its CPU spent before it is Running,
        // the median pod would be Running after half of the pods' CPU: the
        // best any order of the work can do at this CPU per pod (less only
        // the part of a pod's CPU that may come after it runs).
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let median_at = |ms_per_pod: f64| ms_per_pod * n.div_ceil(2) as f64 / cores as f64;
        println!(
            "at that CPU per pod, the median of {n} pods started in turn would be Running at {:.0} ms \
             ({} pods' CPU over {cores} cores)",
            median_at(mid.cpu_ms),
            n.div_ceil(2)
        );
        // The same bound for what is left once the control plane, the agent,
        // this bench and the shims take nothing: libcontainer's processes,
        // the containers and the kernel's threads.
        let floor = mid.rest_ms - mid.shims_ms;
        println!(
            "at the CPU of libcontainer's processes, the containers and the kernel's threads alone \
             ({floor:.1} ms per pod), the median would be Running at {:.0} ms",
            median_at(floor)
        );

        let twenty: Vec<String> = (0..20).map(|i| format!("idle-{i}")).collect();
        create_to_running(&client, &twenty, true).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pid = agent_pid;
        let shims = shim_pids();
        let t0 = cpu_ticks(pid);
        let s0: u64 = shims.iter().map(|p| cpu_ticks(*p)).sum();
        let window = Duration::from_secs(10);
        tokio::time::sleep(window).await;
        let percent = |ticks: u64| ticks as f64 / USER_HZ / window.as_secs_f64() * 100.0;
        let agent_cpu = percent(cpu_ticks(pid) - t0);
        let shim_cpu = percent(shims.iter().map(|p| cpu_ticks(*p)).sum::<u64>() - s0);
        let shim_rss: u64 = shims.iter().map(|p| common::rss_kib(*p)).sum();
        let shim_pss: u64 = shims.iter().map(|p| common::pss_kib(*p)).sum();
        println!(
            "idle with 20 pods over {}s: agent RSS {} KiB, CPU {:.2}% of one core; {} shims: RSS {} KiB in all \
             (PSS {} KiB: their shared binary counted once), CPU {:.2}%",
            window.as_secs(),
            common::rss_kib(pid),
            agent_cpu,
            shims.len(),
            shim_rss,
            shim_pss,
            shim_cpu
        );
        delete_all(&client, &agent_dir).await;
    });
    drop(server);
}

struct Cleanup {
    agent: std::process::Child,
    cfg: trellis_agent::AgentConfig,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
        if let Err(e) = trellis_agent::reset(&self.cfg) {
            eprintln!("cleanup: {e}");
        }
    }
}
