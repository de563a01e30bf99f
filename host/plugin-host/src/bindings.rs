//! The host's only `bindgen!`s, from `wit/trellis-plugin-0.4.0`. The controller
//! world imports the most, so its bindings own the shared interfaces and the
//! other worlds reuse them with `with`.

#![allow(missing_docs, clippy::all)]

pub mod controller {
    wasmtime::component::bindgen!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "controller",
        additional_derives: [PartialEq],
    });
}

pub mod scheduler {
    wasmtime::component::bindgen!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "scheduler-plugin",
        additional_derives: [PartialEq],
        with: {
            "trellis:plugin/types": super::controller::trellis::plugin::types,
            "trellis:plugin/log": super::controller::trellis::plugin::log,
        },
    });
}

pub mod admission {
    wasmtime::component::bindgen!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "admission-plugin",
        additional_derives: [PartialEq],
        with: {
            "trellis:plugin/types": super::controller::trellis::plugin::types,
            "trellis:plugin/log": super::controller::trellis::plugin::log,
            "trellis:plugin/objects-read": super::controller::trellis::plugin::objects_read,
            "trellis:plugin/objects-write": super::controller::trellis::plugin::objects_write,
        },
    });
}

pub mod probe {
    wasmtime::component::bindgen!({
        path: "../../wit/trellis-plugin-0.4.0",
        world: "probe-plugin",
        additional_derives: [PartialEq],
        with: {
            "trellis:plugin/types": super::controller::trellis::plugin::types,
            "trellis:plugin/log": super::controller::trellis::plugin::log,
        },
    });
}

pub use controller::trellis::plugin::{log, objects_read, objects_write, types};
pub use probe::trellis::plugin::{pod_exec, pod_network};
