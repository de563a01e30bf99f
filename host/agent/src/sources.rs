//! What volumes, environment and custom probes read from the API: ConfigMaps,
//! Secrets and `Plugin` objects, fetched by the agent's own client.

use serde_json::Value;
use trellis_client::{Client, Resource};

use crate::env::{BoxFuture, Sources};
use crate::prober::PluginObjects;

/// [`Sources`] over the API server.
pub(crate) struct ApiSources(pub Client);

async fn get_opt(
    client: &Client,
    r: Resource,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, String> {
    match client.get(&r, ns, name).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

impl Sources for ApiSources {
    fn config_map<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, String>> {
        Box::pin(get_opt(
            &self.0,
            Resource::new("", "v1", "configmaps", true),
            namespace,
            name,
        ))
    }

    fn secret<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<Value>, String>> {
        Box::pin(get_opt(
            &self.0,
            Resource::new("", "v1", "secrets", true),
            namespace,
            name,
        ))
    }
}

/// `Plugin` objects for custom probe plugins.
pub(crate) struct PluginObjectsApi(pub Client);

impl PluginObjects for PluginObjectsApi {
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let r = Resource::new("trellis.dev", "v1alpha1", "plugins", false);
            self.0.get(&r, "", name).await.map_err(|e| e.to_string())
        })
    }
}
