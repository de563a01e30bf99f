//! Events about pods, recorded as kubelet does (`source.component: kubelet`,
//! the node as host, the container as field path), in the background.

use serde_json::Value;
use trellis_client::{Client, Resource};

/// Records events; a failure to record is logged, never fatal.
#[derive(Clone)]
pub(crate) struct Events {
    client: Client,
    node: String,
}

impl Events {
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            client,
            node: node.to_string(),
        }
    }

    /// Record `reason` on `pod`, about `container` when given.
    pub fn record(
        &self,
        pod: &Value,
        ty: &str,
        reason: &str,
        message: &str,
        container: Option<&str>,
    ) {
        let field = container.map(|c| {
            let init = pod["spec"]["initContainers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"] == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let ev = trellis_client::event_object(
            pod,
            ty,
            reason,
            message,
            "kubelet",
            Some(&self.node),
            field.as_deref(),
        );
        let client = self.client.clone();
        tokio::spawn(async move {
            let ns = ev["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let events = Resource::new("", "v1", "events", true);
            if let Err(e) = client.create(&events, &ns, &ev).await {
                tracing::warn!(error = %e, "cannot record an event");
            }
        });
    }
}
