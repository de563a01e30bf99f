//! Scheduler plugin crates compiled natively into the host, behind the same
//! [`ChainPlugin`] trait the runtime drives Wasm components through. The
//! scheduler benchmark runs the default chain both ways to measure what the
//! sandbox costs, and `tests/scheduler_plugins_native.rs` proves both ways
//! give the same answers.
//!
//! Each call converts the host's records into the SDK's (the WIT records as
//! `wasmtime::bindgen!` and `wit_bindgen::generate!` each spell them), the pod
//! once per cycle in `prepare`. That is the work a guest does anyway when it
//! lifts its arguments, so what the native side saves over Wasm is the
//! boundary, not the copy. Like a Wasm session, it sends pods only to plugins
//! that track them.
//!
//! ```no_run
//! use trellis_scheduler::{Entry, Profile};
//! use trellis_tests::native::NativePlugin;
//! let fit = NativePlugin::<node_resources_fit::NodeResourcesFit>::new("{}").unwrap();
//! let profile = Profile::new("default-scheduler").with(Entry::new("node-resources-fit", Box::new(fit), 1));
//! ```

use std::panic::AssertUnwindSafe;

use trellis_plugin_host::scheduler as host;
use trellis_plugin_host::{CallError, FaultKind, PluginFault};
use trellis_scheduler::ChainPlugin;
use trellis_sdk::scheduler::{self as sdk, SchedulerPlugin};

/// Upstream's default plugins, in chain order with their score weights, as
/// `DEFAULT_PLUGINS` in `host/trellis/src/cmd/cluster.rs` lists them. Each
/// can be loaded as the component `build/plugins/<crate_name>.wasm` or made
/// natively with [`DefaultPlugin::native`].
pub const DEFAULT_PLUGINS: &[DefaultPlugin] = &[
    DefaultPlugin::of::<node_name::NodeName>("node-name", 0),
    DefaultPlugin::of::<node_unschedulable::NodeUnschedulable>("node-unschedulable", 0),
    DefaultPlugin::of::<taint_toleration::TaintToleration>("taint-toleration", 3),
    DefaultPlugin::of::<node_affinity::NodeAffinity>("node-affinity", 2),
    DefaultPlugin::of::<node_resources_fit::NodeResourcesFit>("node-resources-fit", 1),
    DefaultPlugin::of::<node_resources_balanced_allocation::BalancedAllocation>(
        "node-resources-balanced-allocation",
        1,
    ),
    DefaultPlugin::of::<pod_topology_spread::PodTopologySpread>("pod-topology-spread", 2),
    DefaultPlugin::of::<inter_pod_affinity::InterPodAffinity>("inter-pod-affinity", 2),
    DefaultPlugin::of::<image_locality::ImageLocality>("image-locality", 1),
];

/// One default plugin: the crate (and component file) name, the upstream
/// score weight, and how to make it natively.
#[derive(Clone, Copy)]
pub struct DefaultPlugin {
    /// `plugins/scheduler/<crate_name>`, built to `<crate_name>.wasm`.
    pub crate_name: &'static str,
    /// Upstream's score weight (0: filter only).
    pub weight: i64,
    make: fn(&str) -> Result<Box<dyn ChainPlugin>, CallError>,
}

impl DefaultPlugin {
    const fn of<T: SchedulerPlugin + Send>(crate_name: &'static str, weight: i64) -> Self {
        Self {
            crate_name,
            weight,
            make: NativePlugin::<T>::boxed,
        }
    }

    /// The crate compiled into the host, configured with `config` (JSON).
    pub fn native(&self, config: &str) -> Result<Box<dyn ChainPlugin>, CallError> {
        (self.make)(config)
    }
}

/// A plugin crate compiled into the host: the same `SchedulerPlugin` value
/// the Wasm export macro would wrap, called directly. Errors map as the Wasm
/// path maps them: a `plugin-error` to [`CallError::Plugin`], a panic (a
/// trap in Wasm) to [`CallError::Trapped`], an answer that breaks the WIT
/// contract to [`CallError::Contract`] (the session's own checks,
/// `scheduler::check_*`). Unlike a Wasm session, nothing is
/// rebuilt after a panic: the benchmark and tests treat one as fatal.
pub struct NativePlugin<T> {
    plugin: T,
    info: host::PluginInfo,
    /// The pod of the cycle under way.
    cycle: Option<sdk::Pod>,
}

impl<T: SchedulerPlugin + Send> NativePlugin<T> {
    /// A configured plugin (`configure` with `config`, `{}` for none).
    pub fn new(config: &str) -> Result<Self, CallError> {
        let mut plugin = T::default();
        guard(|| plugin.configure(config))?;
        Ok(Self {
            plugin,
            info: info_to_host(T::info()),
            cycle: None,
        })
    }

    /// [`NativePlugin::new`], boxed for a chain [`trellis_scheduler::Entry`].
    pub fn boxed(config: &str) -> Result<Box<dyn ChainPlugin>, CallError> {
        Ok(Box::new(Self::new(config)?))
    }
}

/// Run one plugin call, mapping its error and a panic as the Wasm path would.
fn guard<R>(f: impl FnOnce() -> Result<R, trellis_sdk::PluginError>) -> Result<R, CallError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(CallError::Plugin(fault(e))),
        Err(panic) => Err(CallError::Trapped {
            reason: panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "native plugin panicked".into()),
        }),
    }
}

/// The host's typed fault for an SDK `plugin-error`.
pub fn fault(e: trellis_sdk::PluginError) -> PluginFault {
    use trellis_sdk::PluginError as E;
    let (kind, message) = match e {
        E::InvalidConfig(m) => (FaultKind::InvalidConfig, m),
        E::InvalidInput(m) => (FaultKind::InvalidInput, m),
        E::AccessDenied(m) => (FaultKind::AccessDenied, m),
        E::Internal(m) => (FaultKind::Internal, m),
    };
    PluginFault { kind, message }
}

/// An SDK flags value as the host's value of the same WIT flags type.
macro_rules! flags {
    ($value:expr, $sdk:ty => $host:ty { $($flag:ident),* $(,)? }) => {{
        let mut out = <$host>::empty();
        $(if $value.contains(<$sdk>::$flag) {
            out |= <$host>::$flag;
        })*
        out
    }};
}

fn phases_to_host(p: sdk::Phases) -> host::Phases {
    flags!(p, sdk::Phases => host::Phases { FILTER, SCORE })
}

fn info_to_host(i: sdk::PluginInfo) -> host::PluginInfo {
    host::PluginInfo {
        name: i.name,
        version: i.version,
        phases: phases_to_host(i.phases),
        tracks_pods: i.tracks_pods,
        pod_fields: flags!(i.pod_fields, sdk::PodFields => host::PodFields {
            META, NODE_NAME, NODE_SELECTION, POD_AFFINITY, TOLERATIONS, TOPOLOGY_SPREAD, CONTAINERS,
        }),
        node_fields: flags!(i.node_fields, sdk::NodeFields => host::NodeFields {
            LABELS, TAINTS, ALLOCATABLE, IMAGES,
        }),
    }
}

fn filter_to_host(r: sdk::FilterResult) -> host::FilterResult {
    host::FilterResult {
        feasible: r.feasible,
        rejected: r.rejected,
        rejected_reasons: r.rejected_reasons,
        reasons: r
            .reasons
            .into_iter()
            .map(|x| host::Reason {
                message: x.message,
                unresolvable: x.unresolvable,
            })
            .collect(),
    }
}

impl<T: SchedulerPlugin + Send> ChainPlugin for NativePlugin<T> {
    fn info(&self) -> host::PluginInfo {
        self.info.clone()
    }

    fn upsert_node(
        &mut self,
        id: host::NodeId,
        node: &std::sync::Arc<host::Node>,
    ) -> Result<(), CallError> {
        // What the Wasm plugin would receive: only the parts it reads.
        let node = node.for_plugin(self.info.node_fields).to_sdk().into();
        guard(|| self.plugin.upsert_node(id, node))
    }

    fn remove_node(&mut self, id: host::NodeId) -> Result<(), CallError> {
        guard(|| {
            self.plugin.remove_node(id);
            Ok(())
        })
    }

    fn assume_pod(
        &mut self,
        node: host::NodeId,
        pod: &std::sync::Arc<host::PlacedPod>,
    ) -> Result<(), CallError> {
        if !self.info.tracks_pods {
            return Ok(());
        }
        let pod = pod.to_sdk();
        guard(|| self.plugin.assume_pod(node, pod))
    }

    fn forget_pod(&mut self, node: host::NodeId, uid: &str) -> Result<(), CallError> {
        if !self.info.tracks_pods {
            return Ok(());
        }
        guard(|| {
            self.plugin.forget_pod(node, uid);
            Ok(())
        })
    }

    fn prepare(&mut self, pod: &std::sync::Arc<host::Pod>) -> Result<host::Phases, CallError> {
        // What the Wasm plugin would receive: only the parts it reads.
        let pod = self
            .cycle
            .insert(pod.for_plugin(self.info.pod_fields).to_sdk().into());
        let phases = guard(|| self.plugin.prepare(pod))?;
        Ok(phases_to_host(phases) & self.info.phases)
    }

    fn filter(
        &mut self,
        candidates: &[host::NodeId],
        max_feasible: u32,
    ) -> Result<host::FilterResult, CallError> {
        host::check_candidates(candidates)?;
        let pod = self.cycle.as_ref().ok_or_else(host::not_prepared)?;
        let r = filter_to_host(guard(|| self.plugin.filter(pod, candidates, max_feasible))?);
        host::check_filter_answer(candidates, &r)?;
        Ok(r)
    }

    fn score(&mut self, candidates: &[host::NodeId]) -> Result<Vec<u8>, CallError> {
        host::check_candidates(candidates)?;
        let pod = self.cycle.as_ref().ok_or_else(host::not_prepared)?;
        let r = guard(|| self.plugin.score(pod, candidates))?;
        host::check_scores(candidates, &r)?;
        Ok(r)
    }
}

/// A host-side WIT record (from `wasmtime::component::bindgen!`) as the
/// SDK's record of the same WIT type (from `wit_bindgen::generate!`).
pub trait ToSdk {
    /// The SDK's type.
    type Sdk;
    /// A deep copy in the SDK's type.
    fn to_sdk(&self) -> Self::Sdk;
}

macro_rules! same {
    ($($t:ty),*) => {$(
        impl ToSdk for $t {
            type Sdk = $t;
            #[inline]
            fn to_sdk(&self) -> $t {
                self.clone()
            }
        }
    )*};
}
same!(String, bool, u16, u32, i32, i64);

impl<T: ToSdk> ToSdk for Vec<T> {
    type Sdk = Vec<T::Sdk>;
    fn to_sdk(&self) -> Self::Sdk {
        self.iter().map(ToSdk::to_sdk).collect()
    }
}

impl<T: ToSdk> ToSdk for Option<T> {
    type Sdk = Option<T::Sdk>;
    fn to_sdk(&self) -> Self::Sdk {
        self.as_ref().map(ToSdk::to_sdk)
    }
}

/// The whole node, as a plugin that reads every part receives it.
impl ToSdk for host::Node {
    type Sdk = sdk::Node;
    fn to_sdk(&self) -> Self::Sdk {
        self.for_plugin(host::NodeFields::all()).to_sdk().into()
    }
}

/// The whole pod, as a plugin that reads every part receives it.
impl ToSdk for host::Pod {
    type Sdk = sdk::Pod;
    fn to_sdk(&self) -> Self::Sdk {
        self.for_plugin(host::PodFields::all()).to_sdk().into()
    }
}

impl<A: ToSdk, B: ToSdk> ToSdk for (A, B) {
    type Sdk = (A::Sdk, B::Sdk);
    fn to_sdk(&self) -> Self::Sdk {
        (self.0.to_sdk(), self.1.to_sdk())
    }
}

// Struct literals without `..`, so a field added to the WIT fails to compile
// here instead of being silently dropped.
macro_rules! record {
    ($host:path => $sdk:path { $($f:ident),* $(,)? }) => {
        impl ToSdk for $host {
            type Sdk = $sdk;
            fn to_sdk(&self) -> $sdk {
                $sdk { $($f: self.$f.to_sdk()),* }
            }
        }
    };
}

macro_rules! enumeration {
    ($host:path => $sdk:path { $($v:ident),* $(,)? }) => {
        impl ToSdk for $host {
            type Sdk = $sdk;
            fn to_sdk(&self) -> $sdk {
                use $host as H;
                use $sdk as S;
                match self { $(H::$v => S::$v),* }
            }
        }
    };
}

record!(host::Label => trellis_sdk::Label { key, value });
record!(host::Resources => trellis_sdk::Resources {
    milli_cpu, memory, ephemeral_storage, pods, scalar,
});
enumeration!(host::TaintEffect => trellis_sdk::TaintEffect {
    NoSchedule, PreferNoSchedule, NoExecute,
});
record!(host::Taint => trellis_sdk::Taint { key, value, effect });
enumeration!(host::TolerationOperator => trellis_sdk::TolerationOperator { Equal, Exists });
record!(host::Toleration => trellis_sdk::Toleration {
    key, operator, value, effect, toleration_seconds,
});
enumeration!(host::SelectorOperator => trellis_sdk::SelectorOperator {
    In, NotIn, Exists, DoesNotExist, Gt, Lt,
});
record!(host::Requirement => trellis_sdk::Requirement { key, operator, values });
record!(host::LabelSelector => trellis_sdk::LabelSelector { match_labels, match_expressions });
record!(host::NodeSelectorTerm => trellis_sdk::NodeSelectorTerm { match_expressions, match_fields });
record!(host::PreferredSchedulingTerm => trellis_sdk::PreferredSchedulingTerm { weight, preference });
record!(host::NodeAffinity => trellis_sdk::NodeAffinity { required, preferred });
record!(host::PodAffinityTerm => trellis_sdk::PodAffinityTerm {
    label_selector, namespaces, namespace_selector, topology_key,
});
record!(host::WeightedPodAffinityTerm => trellis_sdk::WeightedPodAffinityTerm { weight, term });
record!(host::PodAffinity => trellis_sdk::PodAffinity { required, preferred });
enumeration!(host::UnsatisfiableAction => trellis_sdk::UnsatisfiableAction {
    DoNotSchedule, ScheduleAnyway,
});
record!(host::TopologySpreadConstraint => trellis_sdk::TopologySpreadConstraint {
    max_skew, topology_key, when_unsatisfiable, label_selector, min_domains,
});
record!(host::NodeImage => trellis_sdk::NodeImage { names, size_bytes });
record!(host::HostPort => sdk::HostPort { port, protocol, host_ip });
record!(host::Container => sdk::Container { name, image, requests, host_ports });
record!(host::WireNode => sdk::WireNode {
    name, labels, taints, allocatable, unschedulable, images,
});
record!(host::PodMeta => sdk::PodMeta { name, namespace, uid, labels, namespace_labels });
record!(host::WirePod => sdk::WirePod {
    meta,
    node_name,
    node_selector,
    node_affinity,
    pod_affinity,
    pod_anti_affinity,
    tolerations,
    topology_spread_constraints,
    containers,
    init_containers,
    overhead,
    priority,
});
record!(host::PlacedPod => sdk::PlacedPod {
    uid, namespace, labels, requests, host_ports, required_anti_affinity, required_affinity,
});
