//! Plugin benchmark: prints the figures issue #3 asks for, each beside its
//! baseline in the same run.
//!
//! 1. Per-pod cost of one scheduler plugin (zone-maintenance: filter then score)
//!    over 100, 1,000 and 5,000 nodes: the Rust component vs the same crate
//!    compiled natively, scanning every node and with upstream's sampling
//!    (stop after max(100, adaptive %) feasible nodes, rotating start); then
//!    the boundary's floor (a plugin that looks at no node, answering as
//!    many refusals as zone-maintenance or none) and, beside it, what the
//!    plugin's own code costs over that floor against native.
//! 2. Cost of applying one node change (upsert of a node with 10 labels).
//! 3. The same plugin in Rust, C, Python and JavaScript at 1,000 nodes.
//! 4. Cold compile vs cached load of each language's component.
//! 5. Each default plugin (real per-node work: taints, affinity, resources,
//!    spreading) over 5,000 nodes for a pod that makes it filter and score:
//!    the component vs the same crate native, both through the scheduler's
//!    `ChainPlugin` interface.
//!
//! Run: `cargo bench -p trellis-tests --bench plugins` (after `cargo xtask plugins`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_plugin_host::scheduler::{self as host, NodeId, SchedulerSession};
use trellis_plugin_host::{EngineConfig, PluginEngine, PluginSpec};
use trellis_sdk::scheduler::{self as sdk, SchedulerPlugin as _};
use trellis_tests::native::ToSdk;
use trellis_tests::{load_scheduler, session_with, Cycle as _};
use zone_maintenance::ZoneMaintenance;

const CONFIG: &str = r#"{"preferredZones":["zone-1","zone-3"]}"#;

fn labels(i: usize) -> Vec<(String, String)> {
    let mut l = vec![
        (
            "topology.kubernetes.io/zone".to_string(),
            format!("zone-{}", i % 5),
        ),
        ("kubernetes.io/hostname".to_string(), format!("node-{i}")),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        (
            "node.kubernetes.io/instance-type".to_string(),
            format!("m{}.large", i % 3),
        ),
        (
            "topology.kubernetes.io/region".to_string(),
            "region-1".to_string(),
        ),
        ("team".to_string(), format!("team-{}", i % 7)),
        ("pool".to_string(), format!("pool-{}", i % 4)),
        (
            "disk".to_string(),
            if i % 2 == 0 { "ssd" } else { "hdd" }.to_string(),
        ),
    ];
    l.push(("maintenance".to_string(), (i % 20 == 7).to_string())); // 5 % under maintenance
    l
}

fn host_node(i: usize) -> host::Node {
    let l: Vec<(String, String)> = labels(i);
    let refs: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    trellis_tests::node(&format!("node-{i}"), &refs)
}

/// Upstream's numFeasibleNodesToFind with the adaptive percentage.
fn feasible_to_find(n: usize) -> u32 {
    if n < 100 {
        return 0;
    }
    let pct = (50 - n as i64 / 125).max(5) as usize;
    ((n * pct / 100).max(100)) as u32
}

struct Stats {
    median: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        median: v[v.len() / 2],
        p99: v[(v.len() * 99 / 100).min(v.len() - 1)],
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Schedule `pods` pods over `n` nodes through `cycle` (filter then score, giving
/// back the nodes it examined and the scores), rotating the start like
/// upstream; returns per-pod timings and a checksum of the answers.
fn run(
    n: usize,
    pods: usize,
    sample: bool,
    mut cycle: impl FnMut(&[NodeId], u32) -> (usize, Vec<u8>),
) -> (Vec<Duration>, u64) {
    let ids: Vec<NodeId> = (0..n as NodeId).collect();
    let max = if sample { feasible_to_find(n) } else { 0 };
    let mut start = 0usize;
    let mut times = Vec::with_capacity(pods);
    let mut sum = 0u64;
    let mut cands = Vec::with_capacity(n);
    for _ in 0..pods {
        cands.clear();
        cands.extend_from_slice(&ids[start..]);
        cands.extend_from_slice(&ids[..start]);
        let t = Instant::now();
        let (examined, scores) = cycle(&cands, max);
        times.push(t.elapsed());
        start = (start + examined) % n;
        sum = sum
            .wrapping_mul(31)
            .wrapping_add(scores.iter().map(|&x| x as u64).sum::<u64>() + scores.len() as u64);
    }
    (times, sum)
}

fn run_wasm(s: &mut SchedulerSession, n: usize, pods: usize, sample: bool) -> (Vec<Duration>, u64) {
    let pod = std::sync::Arc::new(trellis_tests::pod("bench"));
    run(n, pods, sample, |cands, max| {
        // The plugin skips no phase for this pod. The pod and the plugin's
        // nodes stay the same from cycle to cycle, so after the first cycle
        // the session answers `prepare` itself (as in a cluster for pods of
        // one workload) and a cycle calls the instance for filter and score.
        s.prepare(&pod).unwrap();
        let f = s.filter(cands, max).unwrap();
        let scores = s.score(&f.feasible).unwrap();
        (f.feasible.len() + f.rejected.len(), scores)
    })
}

fn run_native(
    p: &mut ZoneMaintenance,
    n: usize,
    pods: usize,
    sample: bool,
) -> (Vec<Duration>, u64) {
    let pod = trellis_tests::pod("bench").to_sdk();
    run(n, pods, sample, |cands, max| {
        std::hint::black_box(p.prepare(&pod).unwrap());
        let f = std::hint::black_box(p.filter(&pod, cands, max).unwrap());
        let scores = std::hint::black_box(p.score(&pod, &f.feasible).unwrap());
        (f.feasible.len() + f.rejected.len(), scores)
    })
}

/// The zone-maintenance component, configured with [`CONFIG`].
fn zone_plugin(engine: &PluginEngine) -> host::SchedulerPlugin {
    load_scheduler(
        engine,
        "zone-maintenance",
        PluginSpec::new("zones").config(CONFIG),
    )
}

/// zone-maintenance over `nodes`: the component in a session, and the same
/// crate native, both configured alike and told every node.
fn zone_pair(
    engine: &PluginEngine,
    nodes: &[host::Node],
) -> (
    Arc<trellis_plugin_host::PluginSlot<host::SchedulerPlugin>>,
    SchedulerSession,
    ZoneMaintenance,
) {
    let (slot, session) = session_with(zone_plugin(engine), nodes);
    let mut native = ZoneMaintenance::default();
    native.configure(CONFIG).unwrap();
    for (i, node) in nodes.iter().enumerate() {
        native.upsert_node(i as NodeId, node.to_sdk()).unwrap();
    }
    (slot, session, native)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let engine = PluginEngine::new(EngineConfig {
        cache_dir: Some(trellis_tests::cache_dir()),
        ..EngineConfig::default()
    })
    .unwrap();

    println!("== 1. per-pod cost, zone-maintenance: Rust component vs the same crate native ==");
    println!(
        "(filter + score per pod; median and p99 over the pods; 'target' = 5 µs + 20 ns per node)"
    );
    println!(
        "{:>6} {:>8} {:>11} {:>11} {:>11} {:>11} {:>7} {:>9}",
        "nodes", "mode", "native p50", "wasm p50", "native p99", "wasm p99", "ratio", "target"
    );
    for &n in &[100usize, 1_000, 5_000] {
        let nodes: Vec<host::Node> = (0..n).map(host_node).collect();
        let (_slot, mut session, mut native) = zone_pair(&engine, &nodes);
        let pods = if n >= 5_000 { 2_000 } else { 5_000 };
        for sample in [false, true] {
            // Warm both up, then measure alternately so drift hits both alike.
            run_wasm(&mut session, n, 200, sample);
            run_native(&mut native, n, 200, sample);
            let (mut wt, mut nt) = (Vec::new(), Vec::new());
            let (mut wsum, mut nsum) = (0, 0);
            for _ in 0..4 {
                let (t, s) = run_wasm(&mut session, n, pods / 4, sample);
                wt.extend(t);
                wsum ^= s;
                let (t, s) = run_native(&mut native, n, pods / 4, sample);
                nt.extend(t);
                nsum ^= s;
            }
            assert_eq!(wsum, nsum, "wasm and native placed pods differently");
            let (w, nv) = (stats(wt), stats(nt));
            println!(
                "{:>6} {:>8} {:>9.2}µs {:>9.2}µs {:>9.2}µs {:>9.2}µs {:>6.2}x {:>7.1}µs",
                n,
                if sample { "sampled" } else { "all" },
                us(nv.median),
                us(w.median),
                us(nv.p99),
                us(w.p99),
                us(w.median) / us(nv.median),
                5.0 + 0.02 * n as f64
            );
        }
    }

    println!(
        "\n   boundary floor: test-misbehave, which looks at no node: it accepts every candidate \
         (or, 'shaped', refuses the last 5 % as zone-maintenance refuses 5 %) and scores a constant;"
    );
    println!(
        "   measured again interleaved with zone-maintenance, Wasm and native; 'own code' = \
         zone-maintenance minus the shaped floor, against native"
    );
    println!(
        "{:>6} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9}",
        "nodes", "floor p50", "shaped p50", "wasm p50", "native p50", "own code", "ratio"
    );
    for &n in &[100usize, 1_000, 5_000] {
        let nodes: Vec<host::Node> = (0..n).map(host_node).collect();
        let floor = |refuse: usize| {
            let spec = PluginSpec::new("floor")
                .config(format!(r#"{{"mode":"ok","tag":1,"refuse":{refuse}}}"#))
                .grants(
                    trellis_plugin_host::Grants::none().with(trellis_plugin_host::Capability::Log),
                );
            session_with(load_scheduler(&engine, "test-misbehave", spec), &nodes)
        };
        let (_a, mut plain) = floor(0);
        let (_b, mut shaped) = floor(n / 20);
        let (_c, mut wasm, mut native) = zone_pair(&engine, &nodes);
        let mut times: [Vec<Duration>; 4] = Default::default();
        for round in 0..5 {
            // The first round warms up.
            let pods = if round == 0 { 200 } else { 500 };
            let runs = [
                run_wasm(&mut plain, n, pods, false).0,
                run_wasm(&mut shaped, n, pods, false).0,
                run_wasm(&mut wasm, n, pods, false).0,
                run_native(&mut native, n, pods, false).0,
            ];
            if round > 0 {
                for (all, t) in times.iter_mut().zip(runs) {
                    all.extend(t);
                }
            }
        }
        let [plain, shaped, wasm, native] = times.map(|t| us(stats(t).median));
        println!(
            "{:>6} {:>9.2}µs {:>9.2}µs {:>9.2}µs {:>9.2}µs {:>9.2}µs {:>8.2}x",
            n,
            plain,
            shaped,
            wasm,
            native,
            wasm - shaped,
            (wasm - shaped) / native
        );
    }

    chain_example(&engine);

    println!("\n== 2. one node change (upsert of a node with 10 labels), 5,000 nodes known ==");
    {
        let nodes: Vec<host::Node> = (0..5_000).map(host_node).collect();
        let plugin = zone_plugin(&engine);
        let (_slot, mut session) = session_with(plugin, &nodes);
        session
            .filter_pod(&trellis_tests::pod("warm"), &[0], 0)
            .unwrap(); // make the instance
        let mut native = ZoneMaintenance::default();
        native.configure(CONFIG).unwrap();
        let sdk_nodes: Vec<sdk::Node> = nodes.iter().map(ToSdk::to_sdk).collect();
        for (i, n) in sdk_nodes.iter().enumerate() {
            native.upsert_node(i as NodeId, n.clone()).unwrap();
        }
        let (mut wt, mut nt) = (Vec::new(), Vec::new());
        for round in 0..4 {
            for i in 0..2_000usize {
                let id = ((i * 7 + round) % 5_000) as NodeId;
                let node = nodes[id as usize].clone();
                let t = Instant::now();
                session.upsert_node(id, node).unwrap();
                wt.push(t.elapsed());
                let node = sdk_nodes[id as usize].clone();
                let t = Instant::now();
                native.upsert_node(id, node).unwrap();
                nt.push(t.elapsed());
            }
        }
        let (w, nv) = (stats(wt), stats(nt));
        println!("native p50 {:.2}µs  wasm p50 {:.2}µs  (wasm p99 {:.2}µs; includes the host keeping its replay copy)", us(nv.median), us(w.median), us(w.p99));
    }

    println!("\n== 3. the same plugin in four languages, 1,000 nodes, filter + score per pod ==");
    let n = 1_000;
    let nodes: Vec<host::Node> = (0..n).map(host_node).collect();
    let mut reference = None;
    for lang in ["", "-c", "-python", "-js"] {
        let name = format!("zone-maintenance{lang}");
        let Ok(wasm) = std::fs::read(trellis_tests::plugin_dir().join(format!("{name}.wasm")))
        else {
            println!("{name:<26} not built (cargo xtask plugins)");
            continue;
        };
        let plugin = host::SchedulerPlugin::load(
            &engine,
            &wasm,
            PluginSpec::new(&*name)
                .config(CONFIG)
                .budget(trellis_plugin_host::Budget {
                    deadline: Duration::from_secs(10),
                    memory_bytes: 512 << 20,
                }),
        )
        .unwrap();
        let t = Instant::now();
        let (_slot, mut session) = session_with(plugin, &nodes);
        session
            .filter_pod(&trellis_tests::pod("warm"), &[0], 0)
            .unwrap();
        let setup = t.elapsed();
        let pods = if lang == "-python" || lang == "-js" {
            200
        } else {
            2_000
        };
        run_wasm(&mut session, n, 20, false);
        let (times, sum) = run_wasm(&mut session, n, pods, false);
        let s = stats(times);
        let (_, check) = run_wasm(&mut session, n, 3, false);
        let same = match reference {
            None => {
                reference = Some(check);
                "reference"
            }
            Some(r) if r == check => "same answers",
            Some(_) => "DIFFERENT ANSWERS",
        };
        let _ = sum;
        println!(
            "{name:<26} p50 {:>9.1}µs  p99 {:>9.1}µs  (instance + {n} upserts {:>8.1}ms)  {same}",
            us(s.median),
            us(s.p99),
            setup.as_secs_f64() * 1e3
        );
    }

    println!("\n== 4. cold compile vs cached load (precompiled .cwasm) ==");
    let dir = std::env::temp_dir().join(format!("trellis-bench-cache-{}", std::process::id()));
    for lang in ["", "-c", "-python", "-js"] {
        let name = format!("zone-maintenance{lang}");
        let Ok(wasm) = std::fs::read(trellis_tests::plugin_dir().join(format!("{name}.wasm")))
        else {
            continue;
        };
        let cold_engine = PluginEngine::new(EngineConfig::default()).unwrap();
        let t = Instant::now();
        cold_engine.compile(&wasm).unwrap();
        let cold = t.elapsed();
        let cfg = EngineConfig {
            cache_dir: Some(dir.clone()),
            ..EngineConfig::default()
        };
        PluginEngine::new(cfg.clone())
            .unwrap()
            .compile(&wasm)
            .unwrap(); // fill the cache
        let cached_engine = PluginEngine::new(cfg).unwrap();
        let mut loads = Vec::new();
        for _ in 0..9 {
            let t = Instant::now();
            let c = cached_engine.compile(&wasm).unwrap();
            loads.push(t.elapsed());
            assert_eq!(c.provenance, trellis_plugin_host::Provenance::Cached);
        }
        let cached = stats(loads).median;
        println!(
            "{name:<26} {:>8.1} KiB  cold compile {:>9.1}ms  cached load {:>7.2}ms  ({:.0}x)",
            wasm.len() as f64 / 1024.0,
            cold.as_secs_f64() * 1e3,
            cached.as_secs_f64() * 1e3,
            cold.as_secs_f64() / cached.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);

    default_plugins(&engine);
}

/// Section 5: each default plugin, Wasm vs native, per pod over 5,000 nodes.
fn default_plugins(engine: &PluginEngine) {
    use trellis_plugin_host::scheduler::k8s;
    use trellis_scheduler::{ChainPlugin, WasmPlugin};
    use trellis_tests::native::DEFAULT_PLUGINS;

    let n = 5_000;
    println!("\n== 5. each default plugin, {n} nodes, prepare + filter + score per pod (every candidate, no sampling) ==");
    println!("(nodes as the scheduler benchmark's: 5 zones, ssd/hdd, 5 % NoSchedule and 5 % PreferNoSchedule taints, 2 % cordoned; 2 pods on every node;");
    println!(" the pods have required and preferred node affinity, preferred pod affinity, required anti-affinity, required zone spread, preferred zone and host spread)");
    println!(
        "{:<36} {:>12} {:>11} {:>11} {:>7}",
        "plugin", "phases", "native p50", "wasm p50", "ratio"
    );
    let nodes: Vec<Arc<host::Node>> = (0..n).map(|i| Arc::new(rich_node(i))).collect();
    let placed: Vec<Arc<host::PlacedPod>> = (0..2 * n)
        .map(|i| Arc::new(k8s::placed_pod(&rich_pod(&format!("placed-{i}")))))
        .collect();
    // Two pods alternate, so that no `prepare` is skipped as a repeat.
    let pods = [Arc::new(rich_pod("a")), Arc::new(rich_pod("b"))];
    let ids: Vec<NodeId> = (0..n as NodeId).collect();
    let (mut native_sum, mut wasm_sum) = (0.0, 0.0);
    for p in DEFAULT_PLUGINS {
        let wasm = load_scheduler(engine, p.crate_name, PluginSpec::new(p.crate_name));
        let mut plugins: [Box<dyn ChainPlugin>; 2] = [
            p.native("{}").expect("native plugin"),
            Box::new(WasmPlugin::new(wasm)),
        ];
        for plugin in plugins.iter_mut() {
            let tracks = plugin.info().tracks_pods;
            for (i, node) in nodes.iter().enumerate() {
                plugin.upsert_node(i as NodeId, node).expect("upsert");
                if tracks {
                    for pod in &placed[2 * i..2 * i + 2] {
                        plugin.assume_pod(i as NodeId, pod).expect("assume");
                    }
                }
            }
        }
        let (native, wasm, phases) = chain_pair(p.crate_name, &mut plugins, &pods, &ids);
        native_sum += native;
        wasm_sum += wasm;
        let shown = [
            (host::Phases::FILTER, "filter"),
            (host::Phases::SCORE, "score"),
        ]
        .iter()
        .filter(|(f, _)| phases.contains(*f))
        .map(|(_, s)| *s)
        .collect::<Vec<_>>()
        .join("+");
        println!(
            "{:<36} {:>12} {:>9.1}µs {:>9.1}µs {:>6.2}x",
            p.crate_name,
            if shown.is_empty() { "skipped" } else { &shown },
            native,
            wasm,
            wasm / native
        );
    }
    println!(
        "{:<36} {:>12} {:>9.1}µs {:>9.1}µs {:>6.2}x",
        "all nine (sum of the medians)",
        "",
        native_sum,
        wasm_sum,
        wasm_sum / native_sum
    );
}

/// Section 1's plugin at 5,000 nodes as the scheduler runs it: the component
/// and the same crate native, both behind the scheduler's `ChainPlugin`
/// interface (section 5's method), so the native side too pays for what a
/// chain does with the answers.
fn chain_example(engine: &PluginEngine) {
    use trellis_scheduler::{ChainPlugin, WasmPlugin};
    let n = 5_000;
    let nodes: Vec<Arc<host::Node>> = (0..n).map(|i| Arc::new(host_node(i))).collect();
    let wasm = zone_plugin(engine);
    let native =
        trellis_tests::native::NativePlugin::<ZoneMaintenance>::new(CONFIG).expect("native plugin");
    let mut plugins: [Box<dyn ChainPlugin>; 2] =
        [Box::new(native), Box::new(WasmPlugin::new(wasm))];
    for plugin in plugins.iter_mut() {
        for (i, node) in nodes.iter().enumerate() {
            plugin.upsert_node(i as NodeId, node).expect("upsert");
        }
    }
    let pods = [
        Arc::new(trellis_tests::pod("a")),
        Arc::new(trellis_tests::pod("b")),
    ];
    let ids: Vec<NodeId> = (0..n as NodeId).collect();
    let (native, wasm, _) = chain_pair("zone-maintenance", &mut plugins, &pods, &ids);
    println!(
        "\n   through the scheduler's ChainPlugin (section 5's method), {n} nodes, all: native {native:.2}µs, wasm {wasm:.2}µs, ratio {:.2}x",
        wasm / native
    );
}

/// Prepare + filter + score per pod through the scheduler's `ChainPlugin`
/// interface, for the native plugin (`plugins[0]`) and its component
/// (`plugins[1]`) alternately, the two `pods` in turn (so that no `prepare` is
/// skipped as a repeat); asserts they answer alike. Returns the medians in
/// µs (native, wasm) and the phases that ran.
fn chain_pair(
    name: &str,
    plugins: &mut [Box<dyn trellis_scheduler::ChainPlugin>; 2],
    pods: &[Arc<host::Pod>; 2],
    ids: &[NodeId],
) -> (f64, f64, host::Phases) {
    use trellis_scheduler::ChainPlugin;
    // One cycle as the chain runs it for a single plugin; returns the
    // phases that ran and a checksum of the answers.
    let cycle = |plugin: &mut Box<dyn ChainPlugin>, pod: &Arc<host::Pod>| {
        let phases = plugin.prepare(pod).expect("prepare");
        let mut sum = 0u64;
        let mut feasible = ids.to_vec();
        if phases.contains(host::Phases::FILTER) {
            let r = plugin.filter(ids, 0).expect("filter");
            sum += r.rejected.len() as u64;
            feasible = r.feasible;
        }
        if phases.contains(host::Phases::SCORE) {
            let s = plugin.score(&feasible).expect("score");
            sum += s.iter().map(|&x| x as u64).sum::<u64>();
        }
        sum = sum * 31 + feasible.len() as u64;
        (phases, sum)
    };
    let mut times: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut sums = [0u64; 2];
    let mut phases = host::Phases::empty();
    for round in 0..24 {
        for (k, plugin) in plugins.iter_mut().enumerate() {
            for i in 0..10 {
                let pod = &pods[i % 2];
                let t = Instant::now();
                let (ph, sum) = cycle(plugin, pod);
                // The first rounds warm up.
                if round >= 4 {
                    times[k].push(t.elapsed());
                }
                sums[k] = sums[k].wrapping_mul(7).wrapping_add(sum);
                phases = ph;
            }
        }
    }
    assert_eq!(
        sums[0], sums[1],
        "{}: wasm and native answered differently",
        name
    );
    let [native, wasm] = times.map(|t| us(stats(t).median));
    (native, wasm, phases)
}

/// A node as the scheduler benchmark's simulated ones: zone `i % 5`, 45 %
/// `disktype=ssd` and 45 % `hdd`, 5 % tainted `dedicated=infra:NoSchedule`
/// and 5 % `spot=true:PreferNoSchedule`, 2 % cordoned; 32 CPUs, 256Gi, 110
/// pods; every third node holds the busybox image.
fn rich_node(i: usize) -> host::Node {
    let disk = match i % 20 {
        0..=8 => "ssd",
        9..=17 => "hdd",
        _ => "none",
    };
    let taints = match i % 20 {
        18 => serde_json::json!([{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
        19 => serde_json::json!([{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}]),
        _ => serde_json::json!([]),
    };
    let images = if i % 3 == 0 {
        serde_json::json!([{"names": ["docker.io/library/busybox:latest"], "sizeBytes": 4_000_000}])
    } else {
        serde_json::json!([])
    };
    let name = format!("node-{i:05}");
    trellis_plugin_host::scheduler::k8s::node(&serde_json::json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 5),
            "disktype": disk,
        }},
        "spec": {"taints": taints, "unschedulable": i % 50 == 25},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "images": images,
        }
    }))
    .expect("valid node")
}

/// A pod of app `bench` that every default plugin but node-name examines:
/// requests, required (zones 0-3) and preferred (ssd) node affinity,
/// preferred pod affinity to its app per zone, required anti-affinity to app
/// `solo` per host, zone spread (DoNotSchedule) and host and zone spread
/// (ScheduleAnyway, as upstream's default constraints).
fn rich_pod(name: &str) -> host::Pod {
    let app = serde_json::json!({"matchLabels": {"app": "bench"}});
    trellis_plugin_host::scheduler::k8s::pod(
        &serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "bench"}},
            "spec": {
                "containers": [{"name": "c", "image": "docker.io/library/busybox:latest",
                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0", "zone-1", "zone-2", "zone-3"]}]}]},
                        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "preference": {"matchExpressions": [
                            {"key": "disktype", "operator": "In", "values": ["ssd"]}]}}]
                    },
                    "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": {
                        "labelSelector": app, "topologyKey": "topology.kubernetes.io/zone"}}]},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"app": "solo"}}, "topologyKey": "kubernetes.io/hostname"}]}
                },
                "topologySpreadConstraints": [
                    {"maxSkew": 5, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": app},
                    {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": app},
                    {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": app}
                ]
            }
        }),
        vec![],
    )
    .expect("valid pod")
}
