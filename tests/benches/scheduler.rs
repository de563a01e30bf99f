//! Scheduler benchmark: the figures issue #6 asks for, in one run. For 500
//! and 5,000 simulated nodes, 10,000 pods are scheduled by the default chain
//! (upstream's default plugins with their weights) once as Wasm components
//! and once as the same plugin crates compiled natively into the same
//! runtime; printed are pods/s, per-pod latency p50/p99 and the Wasm/native
//! ratio.
//!
//! Each run gets a fresh API server (`trellis-api` on an `EmbeddedStore` in a
//! temp dir, TLS on a loopback port) running in this process on the same
//! tokio runtime as the scheduler, which is how `trellis up` runs the two.
//! The scheduler reaches it only through `trellis-client` over HTTPS, like
//! any other client. Server, store and disk are the same for both modes, so
//! the Wasm/native ratio isolates the plugins; the absolute pods/s includes
//! the API server's share of this machine's cores.
//!
//! Per run: register N simulated nodes (`trellis-sim`; 5 zones, 45 % ssd and
//! 45 % hdd nodes, 5 % tainted `dedicated=infra:NoSchedule`, 5 % tainted
//! `spot=true:PreferNoSchedule`; 32 cpu, 256Gi, 110 pods each), create the
//! pods (most plain `100m`/`500Mi` as upstream scheduler_perf's
//! `pod-default.yaml`; some with a nodeSelector, required and preferred node
//! affinity, tolerations, zone and hostname topology spread, hostname
//! anti-affinity), then start the scheduler and time until every pod is
//! bound. Like scheduler_perf, no kubelet runs while measuring. Afterwards
//! the placements are checked against the pods' constraints, and the
//! placements of the two modes compared (pods are queued in name order and
//! node ids follow node names, so the same plugins must place alike).
//!
//! - pods/s: pods ÷ (scheduler start → last binding acknowledged), including
//!   the initial list and the plugins learning every node (`startup`).
//! - steady: (pods − 1) ÷ (first binding → last binding).
//! - p50/p99: the scheduler's attempt latency per bound pod (leaving the
//!   queue → binding acknowledged).
//! - busy: the share of the wall time the scheduler's own task was running
//!   (its loop: watches, cache, queue, plugin calls, explanations; not the
//!   bindings it spawns nor the API server); loop/pod: that time per pod,
//!   the serial part of the pipeline and the least noisy figure here (the
//!   end-to-end ones move with the disk's fsync latency).
//! - cpu: this process (API server + scheduler) and everything else on the
//!   machine, in % of all cores: a run with much "rest" was disturbed.
//!
//! Each configuration runs `SCHED_BENCH_REPEAT` times (modes alternating);
//! the ratios use the median run of each.
//!
//! Run: `cargo bench -p trellis-tests --bench scheduler` (after `cargo xtask
//! plugins`). Environment: `SCHED_BENCH_PODS` (10000), `SCHED_BENCH_NODES`
//! (`500,5000`), `SCHED_BENCH_MODES` (`wasm,native`), `SCHED_BENCH_REPEAT`
//! (3), `SCHED_BENCH_RECORD=0` (no explanation annotations and events:
//! upstream writes no annotation), `SCHED_BENCH_BREAKDOWN=1` (also time
//! every plugin call, two clock reads each), `SCHED_BENCH_BINDINGS` (the
//! scheduler's default, 32: bindings in flight). Diagnostics:
//! `SCHED_BENCH_NODELAY=1` sets `TCP_NODELAY` on the API server's listening
//! socket (accepted sockets inherit it; `trellis-api` does not set it),
//! `SCHED_BENCH_OWN_THREAD=1` runs the scheduler on a current-thread runtime
//! of its own instead of beside the API server,
//! `SCHED_BENCH_PERF_CTL=FIFO` enables a `perf record -D -1 --control
//! fifo:FIFO` only while scheduling.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use trellis_client::{Client, Kubeconfig, ListParams, Resource};
use trellis_plugin_host::scheduler::{
    FilterResult, Node, NodeId, Phases, PlacedPod, PluginInfo, Pod, SchedulerPlugin,
};
use trellis_plugin_host::{CallError, PluginEngine, PluginSpec};
use trellis_scheduler::{ChainPlugin, Entry, Profile, Scheduler, SchedulerConfig, WasmPlugin};
use trellis_sim::{NodeTemplate, SimNodes};
use trellis_tests::native::DEFAULT_PLUGINS;

/// Longest a run may take before it is called stuck.
const PATIENCE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Wasm,
    Native,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Wasm => "wasm",
            Mode::Native => "native",
        }
    }
}

struct Settings {
    pods: usize,
    nodes: Vec<usize>,
    modes: Vec<Mode>,
    record: bool,
    breakdown: bool,
    repeat: usize,
    bindings: usize,
    own_thread: bool,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn settings() -> Settings {
    let list = |name: &str, default: &str| -> Vec<String> {
        env_or(name, default)
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    Settings {
        pods: env_or("SCHED_BENCH_PODS", "10000")
            .parse()
            .expect("SCHED_BENCH_PODS is a count"),
        nodes: list("SCHED_BENCH_NODES", "500,5000")
            .iter()
            .map(|n| n.parse().expect("SCHED_BENCH_NODES is a list of counts"))
            .collect(),
        modes: list("SCHED_BENCH_MODES", "wasm,native")
            .iter()
            .map(|m| match m.as_str() {
                "wasm" => Mode::Wasm,
                "native" => Mode::Native,
                other => panic!("SCHED_BENCH_MODES: {other:?} is neither wasm nor native"),
            })
            .collect(),
        record: env_or("SCHED_BENCH_RECORD", "1") != "0",
        breakdown: env_or("SCHED_BENCH_BREAKDOWN", "0") != "0",
        bindings: env_or(
            "SCHED_BENCH_BINDINGS",
            &SchedulerConfig::default().parallel_bindings.to_string(),
        )
        .parse()
        .expect("SCHED_BENCH_BINDINGS is a count"),
        own_thread: env_or("SCHED_BENCH_OWN_THREAD", "0") != "0",
        repeat: env_or("SCHED_BENCH_REPEAT", "3")
            .parse::<usize>()
            .expect("SCHED_BENCH_REPEAT is a count")
            .max(1),
    }
}

// ---------------------------------------------------------------------------
// The cluster: an API server on a fresh store, and what runs against it.

/// A fresh API server on an `EmbeddedStore` in a temp dir, served over TLS
/// on a loopback port by a task of the current runtime. Dropping it stops
/// the server, then removes the dir (the runtime's drop ends the task if a
/// panic skipped `shutdown`).
struct ApiServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    client: Client,
    // Last: removed once the server is gone.
    _dir: tempfile::TempDir,
}

impl ApiServer {
    async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("trellis-sched-bench-")
            .tempdir()
            .expect("temp dir");
        let pki =
            trellis_api::pki::ensure(&dir.path().join("pki"), &["127.0.0.1".into()]).expect("pki");
        let store = trellis_store::EmbeddedStore::open(dir.path().join("store"))
            .await
            .expect("embedded store");
        let token = format!("bench-{}", std::process::id());
        let config = trellis_api::ApiConfig::new(trellis_api::auth::TokenAuthenticator::single(
            &token, "admin",
        ));
        let server = trellis_api::ApiServer::new(Arc::new(store), config)
            .await
            .expect("API server");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if std::env::var("SCHED_BENCH_NODELAY").is_ok() {
            socket.set_nodelay(true).expect("nodelay");
        }
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind");
        let listener = socket.listen(1024).expect("listen");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(listener, Some(pki.server_config), async move {
            let _ = stopped.await;
        }));
        let client = Client::new(&Kubeconfig {
            server: format!("https://{addr}"),
            ca_pem: pki.ca_pem,
            token,
        })
        .expect("client");
        Self {
            stop: Some(stop),
            served: Some(served),
            client,
            _dir: dir,
        }
    }

    /// Stop serving and wait for it (at most the server's own 5 s grace).
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn nodes_res() -> Resource {
    Resource::new("", "v1", "nodes", false)
}
fn pods_res() -> Resource {
    Resource::new("", "v1", "pods", true)
}

const ZONES: u32 = 5;
const ZONE: &str = "topology.kubernetes.io/zone";
const HOSTNAME: &str = "kubernetes.io/hostname";

/// A kind of simulated node: its name prefix, its share of the nodes in
/// percent, its extra labels and its taints.
struct NodeGroup {
    prefix: &'static str,
    share: usize,
    labels: &'static [(&'static str, &'static str)],
    taints: &'static [&'static str],
}

const NODE_GROUPS: &[NodeGroup] = &[
    NodeGroup {
        prefix: "ssd",
        share: 45,
        labels: &[
            ("disktype", "ssd"),
            ("node.kubernetes.io/instance-type", "m5.8xlarge"),
        ],
        taints: &[],
    },
    NodeGroup {
        prefix: "hdd",
        share: 45,
        labels: &[
            ("disktype", "hdd"),
            ("node.kubernetes.io/instance-type", "c5.9xlarge"),
        ],
        taints: &[],
    },
    NodeGroup {
        prefix: "infra",
        share: 5,
        labels: &[("disktype", "ssd"), ("node-role", "infra")],
        taints: &["dedicated=infra:NoSchedule"],
    },
    NodeGroup {
        prefix: "spot",
        share: 5,
        labels: &[("disktype", "hdd"), ("lifecycle", "spot")],
        taints: &["spot=true:PreferNoSchedule"],
    },
];

/// Register `n` simulated nodes, in chunks registered concurrently.
async fn register_nodes(client: &Client, n: usize) {
    const CHUNK: usize = 250;
    let mut left = n;
    let mut tasks = tokio::task::JoinSet::new();
    for (g, group) in NODE_GROUPS.iter().enumerate() {
        let count = if g + 1 == NODE_GROUPS.len() {
            left
        } else {
            (n * group.share / 100).min(left)
        };
        left -= count;
        for (c, start) in (0..count).step_by(CHUNK).enumerate() {
            let template = NodeTemplate {
                prefix: format!("{}{c:02}", group.prefix),
                cpu: "32".into(),
                memory: "256Gi".into(),
                pods: 110,
                zones: ZONES,
                labels: group
                    .labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                taints: group.taints.iter().map(|t| t.to_string()).collect(),
            };
            let client = client.clone();
            let count = CHUNK.min(count - start);
            tasks.spawn(async move {
                SimNodes::register(&client, &template, count)
                    .await
                    .expect("register simulated nodes");
            });
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("registering nodes");
    }
}

/// What kind of pod `pod-i` is; most are plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Plain,
    Selector,
    Affinity,
    Toleration,
    ZoneSpread,
    HostSpread,
    AntiAffinity,
}

fn kind(i: usize) -> Kind {
    match i % 100 {
        0..=79 => Kind::Plain,
        80..=84 => Kind::Selector,
        85..=87 => Kind::Affinity,
        88..=91 => Kind::Toleration,
        92..=95 => Kind::ZoneSpread,
        96..=97 => Kind::HostSpread,
        _ => Kind::AntiAffinity,
    }
}

/// `pod-i`, after upstream scheduler_perf's templates (`pod-default.yaml`,
/// `pod-with-node-affinity.yaml`, `pod-with-pod-anti-affinity.yaml`,
/// `pod-with-topology-spreading.yaml`, ...).
fn pod_object(i: usize) -> Value {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i:05}"), "namespace": "default", "labels": {"bench": "sched"}},
        "spec": {"containers": [{
            "name": "pause", "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"},
                          "limits": {"cpu": "100m", "memory": "500Mi"}},
        }]},
    });
    let spec = &mut pod["spec"];
    match kind(i) {
        Kind::Plain => {}
        Kind::Selector => spec["nodeSelector"] = json!({"disktype": "ssd"}),
        Kind::Affinity => {
            spec["affinity"] = json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["zone-0", "zone-1"]}]}]},
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 10, "preference": {"matchExpressions": [
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["m5.8xlarge"]}]}}],
            }})
        }
        Kind::Toleration => {
            spec["tolerations"] = json!([
                {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"},
                {"key": "spot", "operator": "Exists", "effect": "PreferNoSchedule"},
            ])
        }
        Kind::ZoneSpread => {
            pod["metadata"]["labels"]["app"] = json!("zone-spread");
            pod["spec"]["topologySpreadConstraints"] = json!([{
                "maxSkew": 1, "topologyKey": ZONE, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "zone-spread"}},
            }]);
        }
        Kind::HostSpread => {
            pod["metadata"]["labels"]["app"] = json!("host-spread");
            pod["spec"]["topologySpreadConstraints"] = json!([{
                "maxSkew": 1, "topologyKey": HOSTNAME, "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "host-spread"}},
            }]);
        }
        Kind::AntiAffinity => {
            pod["metadata"]["labels"]["app"] = json!("anti");
            pod["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": HOSTNAME,
                }],
            }});
        }
    }
    pod
}

async fn create_pods(client: &Client, pods: usize) {
    const WORKERS: usize = 32;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let client = client.clone();
        tasks.spawn(async move {
            for i in (w..pods).step_by(WORKERS) {
                client
                    .create(&pods_res(), "default", &pod_object(i))
                    .await
                    .unwrap_or_else(|e| panic!("creating pod-{i:05}: {e}"));
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("creating pods");
    }
}

// ---------------------------------------------------------------------------
// The chain, and optional timing of every plugin call.

/// Time spent in plugin calls, per kind of call, over a whole run.
#[derive(Debug, Default, Clone)]
struct CallTimes {
    prepare: (u64, Duration),
    filter: (u64, Duration),
    score: (u64, Duration),
    changes: (u64, Duration),
}

/// A chain plugin whose calls are timed (only with `SCHED_BENCH_BREAKDOWN=1`).
struct Timed {
    inner: Box<dyn ChainPlugin>,
    times: Times,
    name: String,
}

impl Timed {
    fn time<R>(
        &mut self,
        which: fn(&mut CallTimes) -> &mut (u64, Duration),
        f: impl FnOnce(&mut dyn ChainPlugin) -> R,
    ) -> R {
        let t = Instant::now();
        let r = f(self.inner.as_mut());
        let d = t.elapsed();
        let mut times = self.times.lock().unwrap();
        let slot = which(times.entry(self.name.clone()).or_default());
        slot.0 += 1;
        slot.1 += d;
        r
    }
}

impl ChainPlugin for Timed {
    fn info(&self) -> PluginInfo {
        self.inner.info()
    }
    fn upsert_node(&mut self, id: NodeId, node: &Arc<Node>) -> Result<(), CallError> {
        self.time(|t| &mut t.changes, |p| p.upsert_node(id, node))
    }
    fn remove_node(&mut self, id: NodeId) -> Result<(), CallError> {
        self.time(|t| &mut t.changes, |p| p.remove_node(id))
    }
    fn assume_pod(&mut self, node: NodeId, pod: &Arc<PlacedPod>) -> Result<(), CallError> {
        self.time(|t| &mut t.changes, |p| p.assume_pod(node, pod))
    }
    fn forget_pod(&mut self, node: NodeId, uid: &str) -> Result<(), CallError> {
        self.time(|t| &mut t.changes, |p| p.forget_pod(node, uid))
    }
    fn prepare(&mut self, pod: &Arc<Pod>) -> Result<Phases, CallError> {
        self.time(|t| &mut t.prepare, |p| p.prepare(pod))
    }
    fn filter(
        &mut self,
        candidates: &[NodeId],
        max_feasible: u32,
    ) -> Result<FilterResult, CallError> {
        self.time(|t| &mut t.filter, |p| p.filter(candidates, max_feasible))
    }
    fn score(&mut self, candidates: &[NodeId]) -> Result<Vec<u8>, CallError> {
        self.time(|t| &mut t.score, |p| p.score(candidates))
    }
}

type Times = Arc<Mutex<BTreeMap<String, CallTimes>>>;

/// The default chain, each plugin loaded or made before the clock starts.
fn chain(engine: &PluginEngine, mode: Mode, times: Option<&Times>) -> Profile {
    let mut profile = Profile::new("default-scheduler");
    for p in DEFAULT_PLUGINS {
        let plugin: Box<dyn ChainPlugin> = match mode {
            // As a `Plugin` object with no grants and the default budget loads it.
            Mode::Wasm => {
                let wasm = trellis_tests::read_plugin(p.crate_name);
                let loaded = SchedulerPlugin::load(engine, &wasm, PluginSpec::new(p.crate_name))
                    .unwrap_or_else(|e| panic!("loading {}: {e}", p.crate_name));
                Box::new(WasmPlugin::new(loaded))
            }
            Mode::Native => p
                .native("{}")
                .unwrap_or_else(|e| panic!("making {}: {e}", p.crate_name)),
        };
        let plugin = match times {
            Some(times) => Box::new(Timed {
                inner: plugin,
                times: times.clone(),
                name: p.crate_name.to_string(),
            }),
            None => plugin,
        };
        profile = profile.with(Entry::new(p.crate_name, plugin, p.weight));
    }
    profile
}

// ---------------------------------------------------------------------------
// One run.

struct Run {
    nodes: usize,
    mode: Mode,
    pods: usize,
    setup: Duration,
    startup: Duration,
    total: Duration,
    last_first: Duration,
    p50: Duration,
    p99: Duration,
    unschedulable: u64,
    errors: u64,
    violations: Vec<String>,
    placements: u64,
    /// CPU of this process and of everything else, % of all cores.
    cpu: (f64, f64),
    /// Time the scheduler's own task (its loop: cache, queue, plugins,
    /// explanations; not the bindings it spawns) spent running.
    loop_busy: Duration,
    /// TCP connections opened while scheduling.
    connections: u64,
    times: Option<BTreeMap<String, CallTimes>>,
}

/// CPU use over a stretch of wall time, from `/proc`: this process (API
/// server, scheduler, plugins) and everything else on the machine (another
/// build running during a run makes its figures worthless: it shows here).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    /// Busy ticks of the whole machine.
    busy: u64,
    /// Ticks of this process (user + system).
    this: u64,
}

impl Cpu {
    fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal
        let busy = [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&i| f.get(i).copied().unwrap_or(0))
            .sum();
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command (which may hold spaces) start at `state`.
        let rest: Vec<u64> = own
            .rsplit_once(')')
            .map(|x| x.1)
            .unwrap_or("")
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let this = rest.get(11).copied().unwrap_or(0) + rest.get(12).copied().unwrap_or(0);
        Self { busy, this }
    }

    /// (this process, everything else) in percent of all cores over `wall`.
    fn share_since(self, start: Cpu, wall: Duration, cores: usize) -> (f64, f64) {
        let ticks = wall.as_secs_f64() * 100.0 * cores as f64; // USER_HZ is 100
        let this = self.this.saturating_sub(start.this) as f64;
        let busy = self.busy.saturating_sub(start.busy) as f64;
        (100.0 * this / ticks, 100.0 * (busy - this).max(0.0) / ticks)
    }
}

/// A future and the time spent in its `poll`: how busy the scheduler's loop
/// is. Costs two clock reads per poll.
struct Busy<F> {
    inner: std::pin::Pin<Box<F>>,
    busy: Arc<Mutex<Duration>>,
}

impl<F: std::future::Future> std::future::Future for Busy<F> {
    type Output = F::Output;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let t = Instant::now();
        let r = self.inner.as_mut().poll(cx);
        *self.busy.lock().unwrap() += t.elapsed();
        r
    }
}

/// With `SCHED_BENCH_PERF_CTL=FIFO` (perf record's `-D -1 --control
/// fifo:FIFO`), profile only the timed part of each run.
fn perf_control(command: &str) {
    if let Ok(fifo) = std::env::var("SCHED_BENCH_PERF_CTL") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(fifo) {
            let _ = writeln!(f, "{command}");
        }
    }
}

/// TCP connections opened on this machine so far (`/proc/net/snmp`
/// `Tcp: ActiveOpens`): during a run, the scheduler's and the bench's
/// clients, each a TLS handshake.
fn tcp_active_opens() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

async fn run_one(engine: &PluginEngine, s: &Settings, nodes: usize, mode: Mode) -> Run {
    let t = Instant::now();
    let api = ApiServer::start().await;
    let client = api.client.clone();
    register_nodes(&client, nodes).await;
    create_pods(&client, s.pods).await;
    let times = s.breakdown.then(Times::default);
    let profile = chain(engine, mode, times.as_ref());
    let setup = t.elapsed();

    let mut scheduler = Scheduler::new(client.clone())
        .config(SchedulerConfig {
            record: s.record,
            parallel_bindings: s.bindings,
            ..SchedulerConfig::default()
        })
        .profile(profile);
    let metrics = scheduler.metrics();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    perf_control("enable");
    let cpu = Cpu::now();
    let opens = tcp_active_opens();
    let start = Instant::now();
    let busy = Arc::new(Mutex::new(Duration::ZERO));
    let run = Busy {
        inner: Box::pin(async move {
            scheduler
                .run(async move {
                    let _ = stopped.await;
                })
                .await
        }),
        busy: busy.clone(),
    };
    let (done_tx, mut finished) = tokio::sync::oneshot::channel();
    if s.own_thread {
        // The scheduler (and the bindings it spawns) on a thread of its own.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("scheduler runtime");
            let _ = done_tx.send(rt.block_on(run));
        });
    } else {
        tokio::spawn(async move {
            let _ = done_tx.send(run.await);
        });
    }
    let mut first = None;
    loop {
        let done = metrics.scheduled() as usize;
        if done > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if done >= s.pods {
            break;
        }
        match finished.try_recv() {
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            stopped => panic!("the scheduler stopped after {done} pods: {stopped:?}"),
        }
        assert!(
            start.elapsed() < PATIENCE,
            "{nodes} nodes, {}: only {done}/{} pods bound after {PATIENCE:?} ({} unschedulable cycles, {} errors)",
            mode.name(),
            s.pods,
            metrics.unschedulable(),
            metrics.errors()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = start.elapsed();
    perf_control("disable");
    let loop_busy = *busy.lock().unwrap();
    let connections = tcp_active_opens() - opens;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = Cpu::now().share_since(cpu, total, cores);
    let _ = stop.send(());
    finished
        .await
        .expect("the scheduler task ended")
        .expect("scheduler ran");

    let mut lat = metrics.attempt_latencies();
    lat.sort();
    let (violations, placements) = check_placements(&client, s.pods).await;
    api.shutdown().await;
    Run {
        nodes,
        mode,
        pods: s.pods,
        setup,
        startup: first.unwrap_or_default(),
        total,
        last_first: total - first.unwrap_or_default(),
        p50: percentile(&lat, 50),
        p99: percentile(&lat, 99),
        unschedulable: metrics.unschedulable(),
        errors: metrics.errors(),
        violations,
        placements,
        cpu,
        loop_busy,
        connections,
        times: times.map(|t| t.lock().unwrap().clone()),
    }
}

/// Check every pod is bound and where the pods' constraints allow; returns
/// the violations and a digest of the placements (pod name → node name).
async fn check_placements(client: &Client, pods: usize) -> (Vec<String>, u64) {
    let node_list = client
        .list(&nodes_res(), "", &ListParams::default())
        .await
        .expect("list nodes");
    let label = |n: &Value, k: &str| {
        n["metadata"]["labels"][k]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let nodes: HashMap<String, Value> = node_list
        .items()
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap().to_string(),
                n.clone(),
            )
        })
        .collect();
    let pod_list = client
        .list(&pods_res(), "default", &ListParams::default())
        .await
        .expect("list pods");
    let mut placed: BTreeMap<String, String> = BTreeMap::new();
    let mut bad: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut anti_nodes = HashSet::new();
    let mut zone_spread: BTreeMap<String, usize> = BTreeMap::new();
    for p in pod_list.items() {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        let Some(node) = p["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) else {
            *bad.entry("unbound").or_default() += 1;
            continue;
        };
        let i: usize = name.trim_start_matches("pod-").parse().unwrap();
        let n = &nodes[node];
        let mut wrong = |what: &'static str, ok: bool| {
            if !ok {
                *bad.entry(what).or_default() += 1;
            }
        };
        let k = kind(i);
        wrong(
            "untolerated taint",
            label(n, "node-role") != "infra" || k == Kind::Toleration,
        );
        match k {
            Kind::Selector => wrong("nodeSelector", label(n, "disktype") == "ssd"),
            Kind::Affinity => wrong(
                "node affinity",
                matches!(label(n, ZONE).as_str(), "zone-0" | "zone-1"),
            ),
            Kind::AntiAffinity => wrong("anti-affinity", anti_nodes.insert(node.to_string())),
            Kind::ZoneSpread => *zone_spread.entry(label(n, ZONE)).or_default() += 1,
            _ => {}
        }
        placed.insert(name, node.to_string());
    }
    if placed.len() + bad.get("unbound").copied().unwrap_or(0) != pods {
        bad.insert("pods missing", pods - placed.len());
    }
    let counts: Vec<usize> = (0..ZONES)
        .map(|z| zone_spread.get(&format!("zone-{z}")).copied().unwrap_or(0))
        .collect();
    if counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) > 1 {
        bad.insert("zone spread skew > 1", 1);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    placed.hash(&mut h);
    (
        bad.into_iter().map(|(k, v)| format!("{v} {k}")).collect(),
        h.finish(),
    )
}

// ---------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn main() {
    // `cargo bench` passes `--bench`; settings come from the environment.
    let s = settings();
    let engine = trellis_tests::engine();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "== scheduler: {} pods, default chain of {} plugins ({}), {} cores ==",
        s.pods,
        DEFAULT_PLUGINS.len(),
        DEFAULT_PLUGINS
            .iter()
            .map(|p| format!("{}:{}", p.crate_name, p.weight))
            .collect::<Vec<_>>()
            .join(" "),
        cores
    );
    println!(
        "   API server in-process over HTTPS on an embedded store (fsync on), scheduler {}, record={}, parallel bindings {}, {} run(s) each",
        if s.own_thread { "on its own thread" } else { "on the same runtime" },
        if s.record { "on" } else { "off" },
        s.bindings,
        s.repeat
    );
    let mut runs: Vec<Run> = Vec::new();
    for &n in &s.nodes {
        // Modes alternate within each repetition, so drift hits both alike.
        for _ in 0..s.repeat {
            for &mode in &s.modes {
                // A runtime per run, like `trellis up`'s: the API server and
                // the scheduler share it. Dropped (every task ended) before
                // the next run.
                let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
                let r = rt.block_on(run_one(&engine, &s, n, mode));
                drop(rt);
                eprintln!(
                    "   ({} nodes, {}: setup {:.1}s, scheduling {:.2}s, {} TCP connections opened while scheduling)",
                    n,
                    mode.name(),
                    r.setup.as_secs_f64(),
                    r.total.as_secs_f64(),
                    r.connections
                );
                runs.push(r);
            }
        }
    }

    println!();
    println!(
        "{:>6} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9} {:>9}  checks",
        "nodes",
        "mode",
        "pods/s",
        "steady/s",
        "startup",
        "p50",
        "p99",
        "busy",
        "loop/pod",
        "cpu us/rest"
    );
    for r in &runs {
        let mut checks = r.violations.clone();
        if r.unschedulable > 0 {
            checks.push(format!("{} unschedulable cycles", r.unschedulable));
        }
        if r.errors > 0 {
            checks.push(format!("{} errors", r.errors));
        }
        println!(
            "{:>6} {:>7} {:>8.0} {:>8.0} {:>6.0}ms {:>6.2}ms {:>6.2}ms {:>5.0}% {:>7.0}µs {:>5.0}%/{:>3.0}%  {}",
            r.nodes,
            r.mode.name(),
            per_sec(r.pods, r.total),
            per_sec(r.pods.saturating_sub(1), r.last_first),
            ms(r.startup),
            ms(r.p50),
            ms(r.p99),
            100.0 * r.loop_busy.as_secs_f64() / r.total.as_secs_f64(),
            r.loop_busy.as_secs_f64() * 1e6 / r.pods as f64,
            r.cpu.0,
            r.cpu.1,
            if checks.is_empty() {
                format!("ok {:016x}", r.placements)
            } else {
                checks.join(", ")
            }
        );
    }
    println!(
        "   pods/s: pods / (scheduler start -> last binding); steady/s: from the first binding; startup: to the first binding;"
    );
    println!(
        "   p50/p99: attempt latency (queue -> binding acknowledged); busy: share of the wall time the scheduler loop ran; loop/pod: its time per pod;"
    );
    println!(
        "   cpu: this process / everything else, % of {cores} cores (rest > 10 % = a disturbed run); checks: placements obey the constraints (digest)"
    );

    println!();
    println!(
        "wasm/native (median run of each; time ratio, > 1 means Wasm is slower; target <= 1.30)"
    );
    for &n in &s.nodes {
        let median = |m: Mode| {
            let mut v: Vec<&Run> = runs
                .iter()
                .filter(|r| r.nodes == n && r.mode == m)
                .collect();
            v.sort_by_key(|r| r.total);
            v.get(v.len() / 2).copied()
        };
        if let (Some(w), Some(nv)) = (median(Mode::Wasm), median(Mode::Native)) {
            let same = runs
                .iter()
                .filter(|r| r.nodes == n)
                .all(|r| r.placements == w.placements);
            let loop_per_pod = |m: Mode| {
                let mut v: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.nodes == n && r.mode == m)
                    .map(|r| r.loop_busy.as_secs_f64() / r.pods as f64)
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{:>6} nodes: wasm {:>5.0} pods/s, native {:>5.0} pods/s: {:.2}x  (steady {:.2}x, p50 {:.2}x, p99 {:.2}x, scheduler loop per pod {:.2}x)  same placements: {}",
                n,
                per_sec(w.pods, w.total),
                per_sec(nv.pods, nv.total),
                w.total.as_secs_f64() / nv.total.as_secs_f64(),
                w.last_first.as_secs_f64() / nv.last_first.as_secs_f64(),
                w.p50.as_secs_f64() / nv.p50.as_secs_f64(),
                w.p99.as_secs_f64() / nv.p99.as_secs_f64(),
                loop_per_pod(Mode::Wasm) / loop_per_pod(Mode::Native),
                if same { "yes" } else { "NO" }
            );
        }
    }
    println!("target: >= 2000 pods/s at 5000 nodes");

    if s.breakdown {
        println!();
        println!("== time in plugin calls (SCHED_BENCH_BREAKDOWN=1), µs per pod ==");
        println!(
            "{:>6} {:>7} {:<36} {:>9} {:>9} {:>9} {:>9} {:>13}",
            "nodes", "mode", "plugin", "prepare", "filter", "score", "changes", "changes/pod"
        );
        for r in &runs {
            let Some(times) = &r.times else { continue };
            let per_pod = |d: Duration| d.as_secs_f64() * 1e6 / r.pods as f64;
            let mut sum = Duration::ZERO;
            for p in DEFAULT_PLUGINS {
                let t = times.get(p.crate_name).cloned().unwrap_or_default();
                sum += t.prepare.1 + t.filter.1 + t.score.1 + t.changes.1;
                println!(
                    "{:>6} {:>7} {:<36} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>13.2}",
                    r.nodes,
                    r.mode.name(),
                    p.crate_name,
                    per_pod(t.prepare.1),
                    per_pod(t.filter.1),
                    per_pod(t.score.1),
                    per_pod(t.changes.1),
                    t.changes.0 as f64 / r.pods as f64
                );
            }
            println!(
                "{:>6} {:>7} all plugins {:.1} µs/pod; scheduler loop {:.1} µs/pod; wall {:.1} µs/pod",
                r.nodes,
                r.mode.name(),
                per_pod(sum),
                per_pod(r.loop_busy),
                per_pod(r.total),
            );
        }
    }
}
