//! Controllers: implement [`Controller`] and call
//! [`export_controller!`](crate::export_controller).

pub use crate::bindings::controller::exports::trellis::plugin::reconciler::{
    Action, ControllerInfo, ObjectKey, Watch, WatchMapping,
};
pub use crate::{KindRef, ObjectError, PluginError};

/// A controller.
pub trait Controller: Default + 'static {
    /// What it reconciles and watches.
    fn info() -> ControllerInfo;

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
                    <$t>::info()
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
