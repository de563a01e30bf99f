//! The per-cycle calls of the scheduler contract (0.2 on): `prepare` hands
//! the pod over once, `filter` and `score` follow without it, and pods are
//! sent only to plugins that track them; 0.3 skips a `prepare` that would
//! repeat the last one.

use std::sync::Arc;

use trellis_plugin_host::scheduler::{
    k8s, Phases, PrepareStats, TaintEffect, Toleration, TolerationOperator,
};
use trellis_plugin_host::{Budget, CallError, Capability, FaultKind, Grants, PluginSpec};
use trellis_tests::*;

fn two_nodes() -> Vec<trellis_plugin_host::scheduler::Node> {
    vec![node("n0", &[]), node("n1", &[])]
}

#[test]
fn pods_go_only_to_plugins_that_track_them() {
    let engine = engine();
    let placed = Arc::new(k8s::placed_pod(&pod("p")));
    // NodeResourcesFit tracks pods: an unknown node id reaches it and is refused.
    let fit = load_scheduler(&engine, "node-resources-fit", PluginSpec::new("fit"));
    assert!(fit.info().tracks_pods);
    let (_a, mut s) = session_with(fit, &two_nodes());
    s.filter_pod(&pod("warm"), &[0], 0).unwrap(); // make the instance
    match s.assume_pod(99, placed.clone()) {
        Err(CallError::Plugin(f)) => assert_eq!(f.kind, FaultKind::InvalidInput, "{f:?}"),
        other => panic!("the pod should have reached the plugin: {other:?}"),
    }
    // NodeName looks only at nodes: the same call never crosses.
    let name = load_scheduler(&engine, "node-name", PluginSpec::new("name"));
    assert!(!name.info().tracks_pods);
    let (_b, mut s) = session_with(name, &two_nodes());
    s.filter_pod(&pod("warm"), &[0], 0).unwrap();
    s.assume_pod(99, placed).expect("not sent, so not refused");
    s.forget_pod(99, "uid-p").unwrap();
}

/// A pod asking for `cpu` on `node`, as the scheduler assumes it.
fn placed(name: &str, node: &str, cpu: &str) -> Arc<trellis_plugin_host::scheduler::PlacedPod> {
    let p = k8s::pod(
        &serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                     "resources": {"requests": {"cpu": cpu}}}]}
        }),
        vec![],
    )
    .unwrap();
    Arc::new(k8s::placed_pod(&p))
}

/// A new instance (after a swap) of a plugin that tracks pods gets every
/// placed pod by replay, and then the changes that follow.
#[test]
fn a_rebuilt_instance_gets_the_placed_pods_by_replay() {
    let engine = engine();
    let fit = load_scheduler(&engine, "node-resources-fit", PluginSpec::new("fit"));
    let (slot, mut s) = session_with(fit, &two_nodes());
    s.filter_pod(&pod("warm"), &[0, 1], 0).unwrap();
    s.assume_pod(0, placed("a", "n0", "2")).unwrap();
    s.assume_pod(0, placed("b", "n0", "2")).unwrap();
    let r = s.filter_pod(&pod("full"), &[0, 1], 0).unwrap();
    assert_eq!(
        r.feasible,
        vec![1],
        "the test nodes have 4 CPUs: n0 is full"
    );
    assert_eq!(r.reasons[0].message, "Insufficient cpu");
    // A swap to the same plugin makes the next call build a fresh instance.
    let again = load_scheduler(&engine, "node-resources-fit", PluginSpec::new("fit"));
    slot.swap(again);
    let r = s.filter_pod(&pod("next"), &[0, 1], 0).unwrap();
    assert_eq!(r.feasible, vec![1], "both replayed pods fill n0");
    s.forget_pod(0, "uid-a").unwrap();
    let r = s.filter_pod(&pod("then"), &[0, 1], 0).unwrap();
    assert_eq!(r.feasible, vec![0, 1], "one 2-CPU pod left on n0");
}

#[test]
fn prepare_answers_the_phases_that_apply_to_the_pod() {
    let engine = engine();
    let plugin = load_scheduler(&engine, "node-name", PluginSpec::new("name"));
    let (_slot, mut s) = session_with(plugin, &two_nodes());
    assert_eq!(s.prepare(&Arc::new(pod("free"))).unwrap(), Phases::empty());
    let mut pinned = pod("pinned");
    pinned.node_name = Some("n1".into());
    assert_eq!(s.prepare(&Arc::new(pinned)).unwrap(), Phases::FILTER);
    assert_eq!(s.filter(&[0, 1], 0).unwrap().feasible, vec![1]);
}

/// A cycle whose pod would carry what the instance already holds, with no
/// change in between, is not prepared again; a node change or a pod that
/// differs in a part the plugin reads is.
#[test]
fn a_prepare_that_would_repeat_the_last_is_skipped_until_something_changes() {
    let engine = engine();
    // NodeUnschedulable reads only the tolerations, and skips its filter
    // while no node is cordoned.
    let plugin = load_scheduler(&engine, "node-unschedulable", PluginSpec::new("u"));
    let (_slot, mut s) = session_with(plugin, &two_nodes());
    // Two pods that differ only in parts the plugin does not read.
    assert_eq!(s.prepare(&Arc::new(pod("a"))).unwrap(), Phases::empty());
    assert_eq!(s.prepare(&Arc::new(pod("b"))).unwrap(), Phases::empty());
    assert_eq!(s.prepare_stats(), PrepareStats { sent: 1, reused: 1 });
    // Cordoning n1 changes the answer for the same pod: prepared again.
    let cordoned = k8s::node(&serde_json::json!({
        "metadata": {"name": "n1"},
        "spec": {"unschedulable": true},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
    }))
    .unwrap();
    s.upsert_node(1, cordoned).unwrap();
    assert_eq!(s.prepare(&Arc::new(pod("b"))).unwrap(), Phases::FILTER);
    assert_eq!(s.filter(&[0, 1], 0).unwrap().feasible, vec![0]);
    assert_eq!(s.prepare(&Arc::new(pod("c"))).unwrap(), Phases::FILTER);
    assert_eq!(s.prepare_stats(), PrepareStats { sent: 2, reused: 2 });
    // A pod that tolerates the cordon differs to the plugin: prepared again,
    // and the filter lets n1 through.
    let mut tolerant = pod("d");
    tolerant.tolerations = vec![Toleration {
        key: "node.kubernetes.io/unschedulable".into(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: Some(TaintEffect::NoSchedule),
        toleration_seconds: None,
    }];
    s.prepare(&Arc::new(tolerant)).unwrap();
    assert_eq!(s.filter(&[0, 1], 0).unwrap().feasible, vec![0, 1]);
    assert_eq!(s.prepare_stats(), PrepareStats { sent: 3, reused: 2 });
}

#[test]
fn filter_before_any_prepare_is_a_contract_error() {
    let engine = engine();
    let plugin = load_scheduler(&engine, "zone-maintenance", PluginSpec::new("z"));
    let (_slot, mut s) = session_with(plugin, &two_nodes());
    assert!(
        matches!(s.filter(&[0], 0), Err(CallError::Contract { .. })),
        "filter without a prepared pod"
    );
    assert!(matches!(s.score(&[0]), Err(CallError::Contract { .. })));
}

/// A trap in `filter` drops the instance; the next call of the same cycle
/// runs on a fresh instance that is given the cycle's pod again first.
#[test]
fn the_cycle_pod_is_given_again_to_a_rebuilt_instance() {
    let engine = engine();
    let spec = PluginSpec::new("trap")
        .config(r#"{"mode":"trap","tag":3}"#)
        .grants(Grants::none().with(Capability::Log))
        .budget(Budget::default());
    let plugin = load_scheduler(&engine, "test-misbehave", spec);
    let (_slot, mut s) = session_with(plugin, &two_nodes());
    s.prepare(&Arc::new(pod("good"))).unwrap();
    let generation = s.generation();
    s.prepare(&Arc::new(pod("bad"))).unwrap();
    assert!(matches!(
        s.filter(&[0, 1], 0),
        Err(CallError::Trapped { .. })
    ));
    // Same cycle, fresh instance: it gets the "bad" pod again, and traps again.
    assert!(matches!(
        s.filter(&[0, 1], 0),
        Err(CallError::Trapped { .. })
    ));
    // A new cycle with a good pod works, and scores come from the plugin.
    s.prepare(&Arc::new(pod("good"))).unwrap();
    assert_eq!(s.filter(&[0, 1], 0).unwrap().feasible, vec![0, 1]);
    assert_eq!(s.score(&[0, 1]).unwrap(), vec![3, 3]);
    assert_eq!(
        s.generation(),
        generation,
        "no swap happened, only rebuilds"
    );
}

/// The plugins benchmark's floor answers with the shape it claims: the last
/// `refuse` candidates refused for one reason, the rest feasible in order.
#[test]
fn the_benchmark_floor_refuses_the_last_candidates_it_is_told_to() {
    let engine = engine();
    let nodes: Vec<_> = (0..5).map(|i| node(&format!("n{i}"), &[])).collect();
    let spec = PluginSpec::new("floor")
        .config(r#"{"mode":"ok","tag":3,"refuse":2}"#)
        .grants(Grants::none().with(Capability::Log));
    let (_slot, mut s) = session_with(load_scheduler(&engine, "test-misbehave", spec), &nodes);
    let r = s.filter_pod(&pod("p"), &[4, 0, 3, 1, 2], 0).unwrap();
    assert_eq!(r.feasible, vec![4, 0, 3]);
    let refused: Vec<(u32, u8)> = r.rejections().collect();
    assert_eq!(refused, vec![(1, 0), (2, 0)]);
    assert_eq!(r.reasons.len(), 1);
    assert_eq!(s.score(&r.feasible).unwrap(), vec![3, 3, 3]);
    // Without `refuse`, nothing is refused and no reason is listed.
    let spec = PluginSpec::new("floor")
        .config(r#"{"mode":"ok","tag":3}"#)
        .grants(Grants::none().with(Capability::Log));
    let (_slot, mut s) = session_with(load_scheduler(&engine, "test-misbehave", spec), &nodes);
    let r = s.filter_pod(&pod("p"), &[4, 0, 3, 1, 2], 0).unwrap();
    assert_eq!(
        (r.feasible.len(), r.rejected.len(), r.reasons.len()),
        (5, 0, 0)
    );
}
