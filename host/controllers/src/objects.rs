//! What a controller's `objects-read` and `objects-write` reach: reads from
//! the shared cache (an informer starts on the first read of a kind), writes
//! through the API server as the controller's own user, each answer put back
//! into the cache. The plugin host has already checked the grants; these run
//! on the blocking thread of a reconcile and wait on the runtime from there.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::runtime::Handle;
use trellis_api::selectors::LabelSelector;
use trellis_client::{Client, ClientError, Patch, Resource};
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{ObjectSink, ObjectSource};

use crate::cache::{Cache, CacheError, Informer};

/// How long a read waits for a kind's first list.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// The list limit of the `objects-read` contract.
const LIST_LIMIT: usize = 10_000;

fn cache_error(e: CacheError) -> ObjectError {
    match e {
        CacheError::UnknownKind(m) => ObjectError::Invalid(m),
        CacheError::Unavailable(m) => ObjectError::Unavailable(m),
    }
}

/// Reads through the shared cache.
#[derive(Clone)]
pub struct CacheReader {
    cache: Arc<Cache>,
    rt: Handle,
}

impl CacheReader {
    /// Reads from `cache`, waiting on `rt` for informers to sync.
    pub fn new(cache: Arc<Cache>, rt: Handle) -> Self {
        Self { cache, rt }
    }

    fn informer(&self, kind: &KindRef) -> Result<Arc<Informer>, ObjectError> {
        let cache = self.cache.clone();
        let kind = kind.clone();
        self.rt.block_on(async move {
            let i = cache.ensure(&kind).await.map_err(cache_error)?;
            if !i.wait_synced(SYNC_WAIT).await {
                return Err(ObjectError::Unavailable(format!(
                    "the cache of {} has not synced yet",
                    i.kind
                )));
            }
            Ok(i)
        })
    }
}

impl ObjectSource for CacheReader {
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<String, ObjectError> {
        self.informer(kind)?
            .get(namespace, name)
            .map(|o| o.to_string())
            .ok_or(ObjectError::NotFound)
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<String>, ObjectError> {
        let selector = LabelSelector::parse(label_selector)
            .map_err(|e| ObjectError::Invalid(e.to_string()))?;
        let items = self
            .informer(kind)?
            .list(namespace, |o| selector.matches_object(o));
        if items.len() > LIST_LIMIT {
            return Err(ObjectError::Invalid(format!(
                "{} objects match; a list answers at most {LIST_LIMIT}: narrow it with a namespace or a label selector",
                items.len()
            )));
        }
        Ok(items.iter().map(|o| o.to_string()).collect())
    }
}

/// Writes through the API server as the controller's user.
#[derive(Clone)]
pub struct ApiWriter {
    client: Client,
    cache: Arc<Cache>,
    rt: Handle,
}

/// The API server's answer as the contract's error, with its `Status` message.
fn object_error(e: ClientError) -> ObjectError {
    let message = match &e {
        ClientError::Api { message, .. } => message.clone(),
        other => other.to_string(),
    };
    match e.code() {
        Some(404) => ObjectError::NotFound,
        Some(409) => ObjectError::Conflict(message),
        Some(400 | 403 | 405 | 413 | 415 | 422) => ObjectError::Invalid(message),
        _ => ObjectError::Unavailable(message),
    }
}

impl ApiWriter {
    /// Writes with `client` (already impersonating the controller), answers into `cache`.
    pub fn new(client: Client, cache: Arc<Cache>, rt: Handle) -> Self {
        Self { client, cache, rt }
    }

    fn resource(&self, kind: &KindRef) -> Result<Resource, ObjectError> {
        let cache = self.cache.clone();
        let kind = kind.clone();
        self.rt
            .block_on(async move { cache.resource(&kind).await })
            .map_err(cache_error)
    }

    fn parse(object: &str) -> Result<Value, ObjectError> {
        serde_json::from_str(object).map_err(|e| ObjectError::Invalid(format!("not JSON: {e}")))
    }

    /// Run a write and put its answer in the cache.
    fn write(
        &self,
        kind: &KindRef,
        call: impl std::future::Future<Output = Result<Value, ClientError>>,
    ) -> Result<String, ObjectError> {
        let stored = self.rt.block_on(call).map_err(object_error)?;
        self.cache.observe(kind, &stored);
        Ok(stored.to_string())
    }

    fn with_type(kind: &KindRef, mut obj: Value) -> Value {
        obj["apiVersion"] = json!(crate::cache::api_version(kind));
        obj["kind"] = json!(kind.kind);
        obj
    }
}

impl ObjectSink for ApiWriter {
    fn create(&self, kind: &KindRef, namespace: &str, object: &str) -> Result<String, ObjectError> {
        let r = self.resource(kind)?;
        let obj = Self::with_type(kind, Self::parse(object)?);
        self.write(kind, self.client.create(&r, namespace, &obj))
    }

    fn update(&self, kind: &KindRef, namespace: &str, object: &str) -> Result<String, ObjectError> {
        let r = self.resource(kind)?;
        let obj = Self::with_type(kind, Self::parse(object)?);
        self.write(kind, self.client.replace(&r, namespace, &obj))
    }

    fn update_status(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &str,
    ) -> Result<String, ObjectError> {
        let r = self.resource(kind)?;
        let obj = Self::with_type(kind, Self::parse(object)?);
        self.write(kind, self.client.replace_status(&r, namespace, &obj))
    }

    fn merge_patch(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        patch: &str,
    ) -> Result<String, ObjectError> {
        let r = self.resource(kind)?;
        let patch = Self::parse(patch)?;
        self.write(
            kind,
            self.client
                .patch(&r, namespace, name, "", Patch::Merge, &patch),
        )
    }

    fn delete(
        &self,
        kind: &KindRef,
        namespace: &str,
        name: &str,
        propagation: &str,
    ) -> Result<(), ObjectError> {
        let r = self.resource(kind)?;
        let options = (!propagation.is_empty()).then(|| {
            json!({"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation})
        });
        let answer = self
            .rt
            .block_on(self.client.delete(&r, namespace, name, options.as_ref()))
            .map_err(object_error)?;
        // 202: still there, being deleted (grace period, finalizers).
        if answer["metadata"]["deletionTimestamp"].is_string() && answer["kind"] != "Status" {
            self.cache.observe(kind, &answer);
        } else {
            self.cache.forget(kind, namespace, name);
        }
        Ok(())
    }
}
