//! Plugin benchmark: prints the figures issue #3 asks for, each beside its
//! baseline in the same run.
//!
//! 1. Per-pod cost of one scheduler plugin (zone-maintenance: filter then score)
//!    over 100, 1,000 and 5,000 nodes: the Rust component vs the same crate
//!    compiled natively, scanning every node and with upstream's sampling
//!    (stop after max(100, adaptive %) feasible nodes, rotating start).
//! 2. Cost of applying one node change (upsert of a node with 10 labels).
//! 3. The same plugin in Rust, C, Python and JavaScript at 1,000 nodes.
//! 4. Cold compile vs cached load of each language's component.
//!
//! Run: `cargo bench -p trellis-tests --bench plugins` (after `cargo xtask plugins`).

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
        let plugin = load_scheduler(
            &engine,
            "zone-maintenance",
            PluginSpec::new("zones").config(CONFIG),
        );
        let (_slot, mut session) = session_with(plugin, &nodes);
        let mut native = ZoneMaintenance::default();
        native.configure(CONFIG).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            native.upsert_node(i as NodeId, node.to_sdk()).unwrap();
        }
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

    println!("\n   boundary floor: test-misbehave (accepts every candidate, scores a constant; no per-node work)");
    for &n in &[100usize, 1_000, 5_000] {
        let nodes: Vec<host::Node> = (0..n).map(host_node).collect();
        let spec = PluginSpec::new("floor")
            .config(r#"{"mode":"ok","tag":1}"#)
            .grants(trellis_plugin_host::Grants::none().with(trellis_plugin_host::Capability::Log));
        let plugin = load_scheduler(&engine, "test-misbehave", spec);
        let (_slot, mut session) = session_with(plugin, &nodes);
        run_wasm(&mut session, n, 200, false);
        let (t, _) = run_wasm(&mut session, n, 2_000, false);
        let s = stats(t);
        println!(
            "{:>6} {:>8} {:>11} {:>9.2}µs {:>11} {:>9.2}µs",
            n,
            "all",
            "-",
            us(s.median),
            "-",
            us(s.p99)
        );
    }

    println!("\n== 2. one node change (upsert of a node with 10 labels), 5,000 nodes known ==");
    {
        let nodes: Vec<host::Node> = (0..5_000).map(host_node).collect();
        let plugin = load_scheduler(
            &engine,
            "zone-maintenance",
            PluginSpec::new("zones").config(CONFIG),
        );
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
}
