//! Atomic hot swap: while two workers call a plugin without pause, its slot is
//! swapped between two different components over a hundred times. No call
//! fails, and every answer is wholly one version's answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use trellis_plugin_host::scheduler::{SchedulerPlugin, SchedulerSession};
use trellis_plugin_host::{Capability, Grants, PluginEngine, PluginSpec};
use trellis_tests::*;

const ZONES: &str = r#"{"preferredZones":["zone-a","zone-b"]}"#;

fn nodes() -> Vec<trellis_plugin_host::scheduler::Node> {
    vec![
        node("a", &[("topology.kubernetes.io/zone", "zone-a")]),
        node("b", &[("topology.kubernetes.io/zone", "zone-b")]),
        node(
            "m",
            &[
                ("topology.kubernetes.io/zone", "zone-a"),
                ("maintenance", "true"),
            ],
        ),
        node("c", &[("topology.kubernetes.io/zone", "zone-c")]),
    ]
}

/// Version A: the zone plugin. Version B: the test plugin tagged 42.
fn version(
    engine: &PluginEngine,
    a: &trellis_plugin_host::CompiledComponent,
    b: &trellis_plugin_host::CompiledComponent,
    which: usize,
) -> SchedulerPlugin {
    if which % 2 == 0 {
        SchedulerPlugin::from_compiled(engine, a, PluginSpec::new("swap").config(ZONES)).unwrap()
    } else {
        let spec = PluginSpec::new("swap")
            .config(r#"{"mode":"ok","tag":42}"#)
            .grants(Grants::none().with(Capability::Log));
        SchedulerPlugin::from_compiled(engine, b, spec).unwrap()
    }
}

#[test]
fn swapping_under_load_fails_no_call_and_never_mixes_versions() {
    let engine = engine();
    let a = engine.compile(&read_plugin("zone-maintenance")).unwrap();
    let b = engine.compile(&read_plugin("test-misbehave")).unwrap();
    // Each call is judged on its own (a swap may land between a pod's filter
    // and score calls): a filter answer is version A's or B's, and a score
    // answer for the given nodes is A's or B's.
    let filter_a = vec![0u32, 1, 3];
    let filter_b = vec![0u32, 1, 2, 3];
    let score_a = |ids: &[u32]| {
        ids.iter()
            .map(|&i| [100u8, 50, 100, 0][i as usize])
            .collect::<Vec<_>>()
    };
    let score_b = |ids: &[u32]| vec![42u8; ids.len()];

    let (slot, _) = session_with(version(&engine, &a, &b, 0), &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (slot, stop, seen) = (slot.clone(), stop.clone(), seen.clone());
            let (filter_a, filter_b) = (filter_a.clone(), filter_b.clone());
            std::thread::spawn(move || {
                let mut s = SchedulerSession::new(slot);
                for (i, n) in nodes().into_iter().enumerate() {
                    s.upsert_node(i as u32, n).unwrap();
                }
                let (mut calls, mut failures) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    // A swap may land between `prepare` and the phases: the
                    // new instance is then given the pod again.
                    let p = Arc::new(pod("web"));
                    calls += 3;
                    if let Err(e) = s.prepare(&p) {
                        failures.push(format!("prepare failed: {e}"));
                        continue;
                    }
                    let feasible = match s.filter(&[0, 1, 2, 3], 0) {
                        Ok(r) if r.feasible == filter_a || r.feasible == filter_b => r.feasible,
                        Ok(r) => {
                            failures.push(format!(
                                "filter answer from neither version: {:?}",
                                r.feasible
                            ));
                            continue;
                        }
                        Err(e) => {
                            failures.push(format!("filter failed: {e}"));
                            continue;
                        }
                    };
                    match s.score(&feasible) {
                        Ok(x) if x == score_a(&feasible) => seen[0].fetch_add(1, Ordering::Relaxed),
                        Ok(x) if x == score_b(&feasible) => seen[1].fetch_add(1, Ordering::Relaxed),
                        Ok(x) => {
                            failures.push(format!(
                                "score answer from neither version: {x:?} for {feasible:?}"
                            ));
                            continue;
                        }
                        Err(e) => {
                            failures.push(format!("score failed: {e}"));
                            continue;
                        }
                    };
                }
                (calls, failures)
            })
        })
        .collect();

    let swaps = 120;
    for i in 1..=swaps {
        slot.swap(version(&engine, &a, &b, i));
        std::thread::sleep(Duration::from_millis(3));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (calls, failures) = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed or mixed calls, first: {}",
            failures.len(),
            failures[0]
        );
        total += calls;
    }
    let (a_seen, b_seen) = (
        seen[0].load(Ordering::Relaxed),
        seen[1].load(Ordering::Relaxed),
    );
    assert!(
        total > swaps as u64,
        "only {total} calls during {swaps} swaps"
    );
    assert!(
        a_seen > 0 && b_seen > 0,
        "both versions must have answered: {a_seen} / {b_seen}"
    );
}
