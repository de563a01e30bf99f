//! Admission plugins: implement [`AdmissionPlugin`] and call
//! [`export_admission!`](crate::export_admission). Each review runs in a fresh
//! instance, after `configure`.

pub use crate::bindings::admission::exports::trellis::plugin::admission::AdmissionResponse;
pub use crate::{Label, PluginError};

/// An admission plugin.
pub trait AdmissionPlugin: Default + 'static {
    /// Apply configuration (JSON; `{}` when none).
    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let _ = config;
        Ok(())
    }

    /// Review one `AdmissionRequest` (JSON).
    fn review(&mut self, request: &str) -> Result<AdmissionResponse, PluginError>;
}

/// Allow the request unchanged.
pub fn allow() -> AdmissionResponse {
    AdmissionResponse {
        allowed: true,
        message: String::new(),
        code: 0,
        patch: String::new(),
        warnings: Vec::new(),
        audit_annotations: Vec::new(),
    }
}

/// Allow with an RFC 6902 JSON patch (mutating plugins only).
pub fn patch(json_patch: impl Into<String>) -> AdmissionResponse {
    AdmissionResponse {
        patch: json_patch.into(),
        ..allow()
    }
}

/// Deny with 403 and a message.
pub fn deny(message: impl Into<String>) -> AdmissionResponse {
    AdmissionResponse {
        allowed: false,
        message: message.into(),
        code: 403,
        ..allow()
    }
}

/// Export an [`AdmissionPlugin`]. Expands to nothing outside wasm.
#[macro_export]
macro_rules! export_admission {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::admission::AdmissionPlugin as _;
            use $crate::bindings::admission::exports::trellis::plugin::admission as __w;
            static __STATE: $crate::__State<$t> = $crate::__State::new();
            struct __Export;
            impl __w::Guest for __Export {
                fn configure(config: String) -> Result<(), $crate::PluginError> {
                    __STATE.with(|p| p.configure(&config))
                }
                fn review(request: String) -> Result<__w::AdmissionResponse, $crate::PluginError> {
                    __STATE.with(|p| p.review(&request))
                }
            }
            $crate::bindings::admission::__export_admission_world!(__Export with_types_in $crate::bindings::admission);
        };
    };
}

/// Read API objects through the host cache (grant `objects-read` and the kinds).
/// `update_status` (grant `objects-write`) is staged: the host commits it with
/// the request's own write, only if the object is still at the
/// `resourceVersion` read here, and reruns the chain otherwise.
pub mod objects {
    pub use crate::bindings::admission::trellis::plugin::objects_write::update_status;
    pub use crate::bindings::controller::trellis::plugin::objects_read::{get, list};
}
