//! The API a controller reconciles through, as a trait: [`Host`] is the real
//! one (the host's `objects-read`/`objects-write` capabilities and the WASI
//! wall clock); [`FakeCluster`](super::fake::FakeCluster) is an in-memory one
//! for native unit tests. Write reconcile logic against `&impl Api` and call
//! it with `&Host` from [`Controller::reconcile`](super::Controller::reconcile).

use serde_json::Value;

use crate::{KindRef, ObjectError};

/// Reads through the host's cache, writes through the API server, and the time.
pub trait Api {
    /// One object; `ObjectError::NotFound` when absent.
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<Value, ObjectError>;
    /// Objects of a kind in `namespace` ("" = all) matching a label selector
    /// in Kubernetes' string syntax ("" = all).
    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ObjectError>;
    /// Create; returns the stored object (name filled from `generateName`).
    fn create(&self, kind: &KindRef, namespace: &str, object: &Value)
        -> Result<Value, ObjectError>;
    /// Replace (`metadata.resourceVersion` must be current).
    fn update(&self, kind: &KindRef, namespace: &str, object: &Value)
        -> Result<Value, ObjectError>;
    /// Replace the status subresource.
    fn update_status(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError>;
    /// JSON merge patch (RFC 7386).
    fn merge_patch(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ObjectError>;
    /// Delete with a propagation policy ("Background", "Foreground", "Orphan", "").
    fn delete(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        propagation: &str,
    ) -> Result<(), ObjectError>;
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;

    /// Seconds since the Unix epoch.
    fn now(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }
}

/// The host: the plugin's granted capabilities and the WASI wall clock. On a
/// native build, object calls answer `unavailable` and the clock is the
/// system's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

fn parse(text: String) -> Result<Value, ObjectError> {
    serde_json::from_str(&text)
        .map_err(|e| ObjectError::Unavailable(format!("the host answered invalid JSON: {e}")))
}

fn text(v: &Value) -> String {
    v.to_string()
}

#[cfg(target_arch = "wasm32")]
mod imp {
    pub use crate::bindings::controller::trellis::plugin::objects_read as read;
    pub use crate::bindings::controller::trellis::plugin::objects_write as write;
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    //! Native builds have no host: every call is `unavailable`.
    use crate::{KindRef, ObjectError};
    fn none<T>() -> Result<T, ObjectError> {
        Err(ObjectError::Unavailable("no host outside wasm".into()))
    }
    pub mod read {
        use super::*;
        pub fn get(_: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
            none()
        }
        pub fn list(_: &KindRef, _: &str, _: &str) -> Result<Vec<String>, ObjectError> {
            none()
        }
    }
    pub mod write {
        use super::*;
        pub fn create(_: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
            none()
        }
        pub fn update(_: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
            none()
        }
        pub fn update_status(_: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
            none()
        }
        pub fn merge_patch(_: &KindRef, _: &str, _: &str, _: &str) -> Result<String, ObjectError> {
            none()
        }
        pub fn delete(_: &KindRef, _: &str, _: &str, _: &str) -> Result<(), ObjectError> {
            none()
        }
    }
}

impl Api for Host {
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<Value, ObjectError> {
        parse(imp::read::get(kind, namespace, name)?)
    }
    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<Value>, ObjectError> {
        imp::read::list(kind, namespace, selector)?
            .into_iter()
            .map(parse)
            .collect()
    }
    fn create(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError> {
        parse(imp::write::create(kind, namespace, &text(object))?)
    }
    fn update(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError> {
        parse(imp::write::update(kind, namespace, &text(object))?)
    }
    fn update_status(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &Value,
    ) -> Result<Value, ObjectError> {
        parse(imp::write::update_status(kind, namespace, &text(object))?)
    }
    fn merge_patch(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ObjectError> {
        parse(imp::write::merge_patch(
            kind,
            namespace,
            name,
            &text(patch),
        )?)
    }
    fn delete(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        propagation: &str,
    ) -> Result<(), ObjectError> {
        imp::write::delete(kind, namespace, name, propagation)
    }
    fn now_millis(&self) -> i64 {
        #[cfg(target_arch = "wasm32")]
        {
            let t = crate::bindings::clock::wasi::clocks::wall_clock::now();
            (t.seconds as i64) * 1000 + i64::from(t.nanoseconds / 1_000_000)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }
    }
}
