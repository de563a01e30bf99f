//! A plugin that loops, eats memory or traps is stopped within its budget with
//! a typed error; the host and the plugin's other callers carry on, and the
//! next call gets a fresh, fully replayed instance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_plugin_host::scheduler::SchedulerSession;
use trellis_plugin_host::{
    Budget, CallError, Capability, EngineConfig, Grants, Instances, PluginEngine, PluginSpec,
};
use trellis_tests::*;

fn misbehaving(mode: &str, budget: Budget) -> PluginSpec {
    PluginSpec::new(format!("misbehave-{mode}"))
        .config(format!(r#"{{"mode":"{mode}","tag":7}}"#))
        .grants(Grants::none().with(Capability::Log))
        .budget(budget)
}

fn three_nodes() -> Vec<trellis_plugin_host::scheduler::Node> {
    vec![node("n0", &[]), node("n1", &[]), node("n2", &[])]
}

#[test]
fn a_looping_filter_is_stopped_at_its_deadline_while_other_calls_are_served() {
    let engine = engine();
    let budget = Budget {
        deadline: Duration::from_millis(50),
        ..Budget::default()
    };
    let plugin = load_scheduler(&engine, "test-misbehave", misbehaving("loop", budget));
    let (slot, mut looping) = session_with(plugin, &three_nodes());

    // Another worker keeps calling the same plugin (its own instance) throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let other = {
        let (slot, stop, served) = (slot.clone(), stop.clone(), served.clone());
        std::thread::spawn(move || {
            let mut s = SchedulerSession::new(slot);
            for (i, n) in three_nodes().into_iter().enumerate() {
                s.upsert_node(i as u32, n).unwrap();
            }
            while !stop.load(Ordering::Relaxed) {
                let r = s
                    .filter_pod(&pod("good"), &[0, 1, 2], 0)
                    .expect("good calls succeed");
                assert_eq!(r.feasible, vec![0, 1, 2]);
                served.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while served.load(Ordering::Relaxed) == 0 {
        std::thread::yield_now();
    }
    let before = served.load(Ordering::Relaxed);
    let started = Instant::now();
    let err = looping.filter_pod(&pod("bad"), &[0, 1, 2], 0).unwrap_err();
    let elapsed = started.elapsed();
    let during = served.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();

    assert!(
        matches!(err, CallError::DeadlineExceeded { deadline } if deadline == Duration::from_millis(50)),
        "{err:?}"
    );
    assert!(err.poisons_instance());
    // The deadline is a correctness property, not a speed figure: the call must
    // not end before its budget, and must end long before a second (the issue's bound).
    assert!(
        elapsed >= Duration::from_millis(50),
        "stopped early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "stopped too late: {elapsed:?}"
    );
    assert!(
        during > 0,
        "the other worker was not served while the plugin looped"
    );

    // The next call runs on a fresh instance with the nodes replayed.
    let r = looping
        .filter_pod(&pod("good"), &[0, 1, 2], 0)
        .expect("fresh instance works");
    assert_eq!(r.feasible, vec![0, 1, 2]);
    assert_eq!(
        looping.score_pod(&pod("good"), &[0, 1, 2]).unwrap(),
        vec![7, 7, 7]
    );
}

#[test]
fn a_plugin_growing_memory_is_stopped_at_its_cap() {
    let engine = engine();
    let budget = Budget {
        deadline: Duration::from_secs(5),
        memory_bytes: 64 << 20,
    };
    let plugin = load_scheduler(&engine, "test-misbehave", misbehaving("grow", budget));
    let (_slot, mut s) = session_with(plugin, &three_nodes());
    let err = s.filter_pod(&pod("bad"), &[0, 1, 2], 0).unwrap_err();
    assert!(
        matches!(err, CallError::MemoryExceeded { cap_bytes } if cap_bytes == 64 << 20),
        "{err:?}"
    );
    // Again and again: each time a fresh instance, each time stopped.
    for _ in 0..3 {
        assert!(matches!(
            s.filter_pod(&pod("bad"), &[0], 0),
            Err(CallError::MemoryExceeded { .. })
        ));
        assert_eq!(
            s.filter_pod(&pod("good"), &[0, 1, 2], 0).unwrap().feasible,
            vec![0, 1, 2]
        );
    }
}

#[test]
fn a_trapping_plugin_returns_a_typed_error_and_recovers() {
    let engine = engine();
    let plugin = load_scheduler(
        &engine,
        "test-misbehave",
        misbehaving("trap", Budget::default()),
    );
    let (_slot, mut s) = session_with(plugin, &three_nodes());
    match s.filter_pod(&pod("bad"), &[0, 1, 2], 0) {
        Err(CallError::Trapped { reason }) => assert!(reason.contains("unreachable"), "{reason}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        s.filter_pod(&pod("good"), &[0, 1, 2], 0).unwrap().feasible,
        vec![0, 1, 2]
    );
}

#[test]
fn plugin_errors_do_not_poison_the_instance() {
    let engine = engine();
    let plugin = load_scheduler(&engine, "zone-maintenance", PluginSpec::new("zones"));
    let (_slot, mut s) = session_with(plugin, &three_nodes());
    let gen = {
        s.filter_pod(&pod("p"), &[0], 0).unwrap();
        s.generation()
    };
    match s.filter_pod(&pod("p"), &[0, 99], 0) {
        Err(CallError::Plugin(f)) => assert_eq!(f.message, "unknown node id 99"),
        other => panic!("expected invalid-input, got {other:?}"),
    }
    assert_eq!(s.generation(), gen, "an expected error keeps the instance");
}

/// Instances come from a pool of slots that are reused. A call that finds
/// every slot taken gets a clear error, not a crash, and succeeds once an
/// instance is freed.
#[test]
fn a_full_instance_pool_is_a_clear_error_until_a_slot_frees() {
    let engine = PluginEngine::new(EngineConfig {
        cache_dir: Some(cache_dir()),
        instances: Instances::Pooled { instances: 2 },
        ..EngineConfig::default()
    })
    .unwrap();
    let load = || {
        load_scheduler(
            &engine,
            "zone-maintenance",
            PluginSpec::new("zone").config(r#"{"preferredZones":["zone-1"]}"#),
        )
    };
    // Loading makes (and drops) an instance: load the third plugin first.
    let third = load();
    // A session makes its instance on its first call and keeps it.
    let (_a, mut first) = session_with(load(), &three_nodes());
    let (_b, mut second) = session_with(load(), &three_nodes());
    for s in [&mut first, &mut second] {
        assert_eq!(
            s.filter_pod(&pod("p"), &[0, 1, 2], 0)
                .unwrap()
                .feasible
                .len(),
            3
        );
    }
    let (_c, mut s3) = session_with(third, &[node("n0", &[("maintenance", "true")])]);
    let err = s3.filter_pod(&pod("p"), &[0], 0).unwrap_err();
    assert!(matches!(err, CallError::Instantiate { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("instance pool is full") && msg.contains("maximum concurrent limit of 2"),
        "{msg}"
    );
    drop(first);
    s3.upsert_node(1, node("n1", &[])).unwrap();
    let r = s3
        .filter_pod(&pod("p"), &[0, 1], 0)
        .expect("a slot is free again");
    assert_eq!(r.feasible, vec![1], "the instance in the reused slot works");
}
