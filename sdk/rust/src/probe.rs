//! Probe plugins: implement [`ProbePlugin`] and call
//! [`export_probe!`](crate::export_probe). Network and exec reach only the
//! probed pod.

pub use crate::bindings::probe::exports::trellis::plugin::probe::{
    ProbeOutcome, ProbeRequest, ProbeResult,
};
pub use crate::bindings::probe::trellis::plugin::pod_exec::{exec, ExecError, ExecOutput};
pub use crate::bindings::probe::trellis::plugin::pod_network::{
    http_get, tcp_connect, HttpHeader, HttpResponse, NetError,
};
pub use crate::PluginError;

/// A probe plugin.
pub trait ProbePlugin: Default + 'static {
    /// Run one probe.
    fn check(&mut self, request: ProbeRequest) -> Result<ProbeResult, PluginError>;
}

/// A success with a message.
pub fn success(message: impl Into<String>) -> ProbeResult {
    ProbeResult {
        outcome: ProbeOutcome::Success,
        message: message.into(),
    }
}

/// A failure with a message.
pub fn failure(message: impl Into<String>) -> ProbeResult {
    ProbeResult {
        outcome: ProbeOutcome::Failure,
        message: message.into(),
    }
}

/// Export a [`ProbePlugin`]. Expands to nothing outside wasm.
#[macro_export]
macro_rules! export_probe {
    ($t:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::probe::exports::trellis::plugin::probe as __w;
            use $crate::probe::ProbePlugin as _;
            static __STATE: $crate::__State<$t> = $crate::__State::new();
            struct __Export;
            impl __w::Guest for __Export {
                fn check(request: __w::ProbeRequest) -> Result<__w::ProbeResult, $crate::PluginError> {
                    __STATE.with(|p| p.check(request))
                }
            }
            $crate::bindings::probe::__export_probe_world!(__Export with_types_in $crate::bindings::probe);
        };
    };
}
