//! Controllers: implement [`Controller`] and call
//! [`export_controller!`](crate::export_controller).

pub use crate::bindings::controller::exports::trellis::plugin::reconciler::{
    Action, ControllerInfo, ObjectKey, Watch, WatchMapping,
};
pub use crate::{KindRef, ObjectError, PluginError};

mod api;
#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
pub mod kinds;

pub use api::{Api, Host};

/// Record a Kubernetes Event about `object` (of `kind`), as `kubectl describe`
/// shows it: `type_` is "Normal" or "Warning", `reason` a CamelCase word,
/// `component` the reporting controller (e.g. "replicaset-controller").
/// Needs the write grant for core `Event`s; a failure is only logged.
pub fn record_event(
    api: &impl Api,
    object: &serde_json::Value,
    kind: &KindRef,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let name = crate::objects::name(object);
    let ns = crate::objects::namespace(object);
    let now = crate::objects::rfc3339(api.now());
    let ev = serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": if ns.is_empty() { "default" } else { ns }},
        "involvedObject": {
            "apiVersion": kinds::api_version(kind), "kind": kind.kind, "name": name,
            "namespace": ns, "uid": crate::objects::uid(object),
            "resourceVersion": object["metadata"]["resourceVersion"],
        },
        "type": type_, "reason": reason, "message": message,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component,
    });
    if let Err(e) = api.create(
        &crate::controller::kinds::event(),
        if ns.is_empty() { "default" } else { ns },
        &ev,
    ) {
        crate::log::debug(&format!("event {reason} on {name}: {e:?}"));
    }
}

/// A controller.
pub trait Controller: Default + 'static {
    /// What it reconciles and watches.
    fn info() -> ControllerInfo;

    /// What it reconciles and watches once configured (the host asks after
    /// `configure`); by default [`Controller::info`]. Override it when the
    /// configuration chooses the kinds, as the garbage collector's does.
    fn describe(&self) -> ControllerInfo {
        Self::info()
    }

    /// Apply configuration (JSON; `{}` when none).
    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let _ = config;
        Ok(())
    }

    /// Reconcile one key.
    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError>;
}

/// Read API objects through the host cache.
pub mod read {
    pub use crate::bindings::controller::trellis::plugin::objects_read::{get, list};
}

/// Write API objects through the API server.
pub mod write {
    pub use crate::bindings::controller::trellis::plugin::objects_write::{
        create, delete, merge_patch, update, update_status,
    };
}

/// Export a [`Controller`]. Expands to nothing outside wasm.
#[macro_export]
macro_rules! export_controller {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::controller::exports::trellis::plugin::reconciler as __w;
            use $crate::controller::Controller as _;
            static __STATE: $crate::__State<$t> = $crate::__State::new();
            struct __Export;
            impl __w::Guest for __Export {
                fn info() -> __w::ControllerInfo {
                    __STATE.with(|p| p.describe())
                }
                fn configure(config: String) -> Result<(), $crate::PluginError> {
                    __STATE.with(|p| p.configure(&config))
                }
                fn reconcile(key: __w::ObjectKey) -> Result<__w::Action, $crate::PluginError> {
                    __STATE.with(|p| p.reconcile(key))
                }
            }
            $crate::bindings::controller::__export_controller_world!(__Export with_types_in $crate::bindings::controller);
        };
    };
}
