//! A small Kubernetes API client for Trellis' own runtimes (scheduler,
//! controllers, node agent, simulated nodes): reads a kubeconfig, speaks TLS
//! with the cluster's CA and a bearer token, keeps a few keep-alive
//! connections, and offers the verbs on JSON objects plus watch streams.
//! Errors carry the server's `Status`, so callers decide by code
//! (404, 409, 410) and never by message text.
//!
//! ```no_run
//! use trellis_client::{Client, Resource, ListParams};
//! # async fn demo() -> Result<(), trellis_client::ClientError> {
//! let client = Client::from_kubeconfig("/var/lib/trellis/kubeconfig")?;
//! let pods = Resource::new("", "v1", "pods", true);
//! let list = client.list(&pods, "default", &ListParams::default().labels("app=web")).await?;
//! let mut watch = client.watch(&pods, "default", &ListParams::default(), list.resource_version()).await?;
//! while let Some(event) = watch.next().await? {
//!     println!("{} {}", event.kind, event.object["metadata"]["name"]);
//! }
//! # Ok(()) }
//! ```

mod client;
mod kubeconfig;

/// Now as RFC 3339 with second precision, for the timestamps runtimes write.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    trellis_types::time::rfc3339(secs)
}

pub use client::{Client, ListParams, ObjectList, Patch, Resource, WatchEvent, WatchStream};
pub use kubeconfig::{Kubeconfig, KubeconfigError};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a `Status` failure.
    #[error("{code} {reason}: {message}")]
    Api {
        /// HTTP code (404, 409, 410, 422, ...).
        code: u16,
        /// `Status.reason`, e.g. "Conflict".
        reason: String,
        /// `Status.message`.
        message: String,
    },
    /// Connecting, TLS or HTTP failed.
    #[error("cannot reach the API server at {server}: {message}")]
    Transport {
        /// The server address.
        server: String,
        /// What failed.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer from the API server: {0}")]
    Decode(String),
    /// The kubeconfig could not be used.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
}

impl ClientError {
    /// The HTTP code of an API error.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// 404.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409 (conflict or already exists).
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// 410: the resource version is too old; list again.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410)
    }
}

/// An `Event` about `object` (a pod, say) as Kubernetes components record
/// them: `component` is the reporter (`kubelet`, `default-scheduler`), `host`
/// its node when it has one, `field_path` the part concerned
/// (`spec.containers{web}`).
pub fn event_object(
    object: &serde_json::Value,
    ty: &str,
    reason: &str,
    message: &str,
    component: &str,
    host: Option<&str>,
    field_path: Option<&str>,
) -> serde_json::Value {
    let meta = &object["metadata"];
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let name = meta["name"].as_str().unwrap_or("");
    let now = now_rfc3339();
    let mut involved = serde_json::json!({
        "apiVersion": object["apiVersion"].as_str().unwrap_or("v1"),
        "kind": object["kind"].as_str().unwrap_or("Pod"),
        "namespace": ns, "name": name, "uid": meta["uid"],
    });
    if let Some(f) = field_path {
        involved["fieldPath"] = f.into();
    }
    let mut source = serde_json::json!({"component": component});
    if let Some(h) = host {
        source["host"] = h.into();
    }
    serde_json::json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": format!("{name}."), "namespace": ns},
        "involvedObject": involved,
        "reason": reason, "message": message, "type": ty, "count": 1,
        "firstTimestamp": now, "lastTimestamp": now,
        "source": source, "reportingComponent": component,
    })
}
