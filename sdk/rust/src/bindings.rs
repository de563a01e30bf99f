//! Generated bindings, one module per world. The controller world imports the
//! most, so it owns the shared interfaces and the others reuse them.

#![allow(missing_docs, clippy::all, unsafe_op_in_unsafe_fn)]

pub mod controller {
    wit_bindgen::generate!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "controller",
        pub_export_macro: true,
        export_macro_name: "__export_controller_world",
        default_bindings_module: "trellis_sdk::bindings::controller",
    });
}

pub mod scheduler {
    wit_bindgen::generate!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "scheduler-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_scheduler_world",
        default_bindings_module: "trellis_sdk::bindings::scheduler",
        with: {
            "trellis:plugin/types@0.4.0": crate::bindings::controller::trellis::plugin::types,
            "trellis:plugin/log@0.4.0": crate::bindings::controller::trellis::plugin::log,
        },
    });
}

pub mod admission {
    wit_bindgen::generate!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "admission-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_admission_world",
        default_bindings_module: "trellis_sdk::bindings::admission",
        with: {
            "trellis:plugin/types@0.4.0": crate::bindings::controller::trellis::plugin::types,
            "trellis:plugin/log@0.4.0": crate::bindings::controller::trellis::plugin::log,
            "trellis:plugin/objects-read@0.4.0": crate::bindings::controller::trellis::plugin::objects_read,
        },
    });
}

pub mod probe {
    wit_bindgen::generate!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "probe-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_probe_world",
        default_bindings_module: "trellis_sdk::bindings::probe",
        with: {
            "trellis:plugin/types@0.4.0": crate::bindings::controller::trellis::plugin::types,
            "trellis:plugin/log@0.4.0": crate::bindings::controller::trellis::plugin::log,
        },
    });
}

pub use controller::trellis::plugin::types;

/// `wasi:clocks/wall-clock`, imported only by guests that ask for the time.
pub mod clock {
    wit_bindgen::generate!({
        path: "wit/wasi-clocks",
        world: "clock",
    });
}
