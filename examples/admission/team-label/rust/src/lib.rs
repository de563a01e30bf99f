//! Example admission plugin (a mutating one; see ../README.md): every
//! Deployment needs a `team` label, and gets an `owner` annotation naming
//! the user who created it when it has none.
//!
//! Configuration (both optional): `{"label": "team", "annotation": "owner"}`.

use serde::Deserialize;
use serde_json::{json, Value};
use trellis_sdk::admission::*;

/// The documented configuration, and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The label every Deployment must carry.
    #[serde(default = "default_label")]
    pub label: String,
    /// The annotation added with the requesting user's name when missing.
    #[serde(default = "default_annotation")]
    pub annotation: String,
}

fn default_label() -> String {
    "team".into()
}

fn default_annotation() -> String {
    "owner".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            label: default_label(),
            annotation: default_annotation(),
        }
    }
}

impl Config {
    /// Parse the plugin's configuration (`{}` or empty for the defaults).
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let invalid = |e: String| {
            PluginError::InvalidConfig(format!(
                "invalid configuration, expected {{\"label\": \"team\", \"annotation\": \"owner\"}}: {e}"
            ))
        };
        let text = if text.trim().is_empty() { "{}" } else { text };
        let value: Value = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if !value.is_object() {
            return Err(invalid("not a JSON object".into()));
        }
        let c: Config = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        if c.label.is_empty() || c.annotation.is_empty() {
            return Err(PluginError::InvalidConfig(
                "label and annotation must not be empty".into(),
            ));
        }
        Ok(c)
    }
}

/// RFC 6901 escaping of one path segment.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// How a user would write the field in YAML paths: `metadata.labels.team`,
/// or `metadata.labels["example.com/team"]` for a prefixed key.
fn field(map: &str, key: &str) -> String {
    if key.contains(['.', '/']) {
        format!("metadata.{map}[{key:?}]")
    } else {
        format!("metadata.{map}.{key}")
    }
}

/// Review one AdmissionRequest (JSON value) under `config`.
pub fn decide(config: &Config, request: &Value) -> AdmissionResponse {
    let kind = &request["kind"];
    let is_deployment = kind["group"] == "apps" && kind["kind"] == "Deployment";
    let op = request["operation"].as_str().unwrap_or_default();
    let subresource = request["subResource"].as_str().unwrap_or_default();
    let object = &request["object"];
    let meta = &object["metadata"];
    // Deletes and subresources (scale, status) carry no Deployment to check;
    // an object being deleted must stay updatable so finalizers can go.
    if !is_deployment
        || !matches!(op, "CREATE" | "UPDATE")
        || !subresource.is_empty()
        || !object.is_object()
        || !meta["deletionTimestamp"].is_null()
    {
        return allow();
    }

    let label = meta["labels"][&config.label].as_str().unwrap_or_default();
    if label.is_empty() {
        let name = [&request["name"], &meta["name"], &meta["generateName"]]
            .into_iter()
            .filter_map(Value::as_str)
            .find(|n| !n.is_empty())
            .unwrap_or_default();
        return deny(format!(
            "Deployment {name:?} needs a {:?} label: add {}",
            config.label,
            field("labels", &config.label)
        ));
    }

    let annotations = &meta["annotations"];
    if annotations[&config.annotation].is_string() {
        return allow();
    }
    // On update, keep the owner recorded at creation if the update dropped it.
    let owner = request["oldObject"]["metadata"]["annotations"][&config.annotation]
        .as_str()
        .or_else(|| request["userInfo"]["username"].as_str())
        .unwrap_or_default();
    if owner.is_empty() {
        return allow();
    }
    let op = if annotations.is_object() {
        json!({"op": "add", "path": format!("/metadata/annotations/{}", escape(&config.annotation)), "value": owner})
    } else {
        json!({"op": "add", "path": "/metadata/annotations", "value": {config.annotation.as_str(): owner}})
    };
    patch(json!([op]).to_string())
}

/// The plugin.
#[derive(Default)]
pub struct TeamLabel {
    config: Config,
}

impl AdmissionPlugin for TeamLabel {
    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        self.config = Config::parse(config)?;
        Ok(())
    }

    fn review(&mut self, request: &str) -> Result<AdmissionResponse, PluginError> {
        let request: Value = serde_json::from_str(request)
            .map_err(|e| PluginError::InvalidInput(format!("request is not JSON: {e}")))?;
        Ok(decide(&self.config, &request))
    }
}

trellis_sdk::export_admission!(TeamLabel);

#[cfg(test)]
mod tests {
    use super::*;

    fn request(labels: Value, annotations: Value) -> Value {
        json!({
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "operation": "CREATE", "name": "web", "namespace": "default",
            "userInfo": {"username": "alice"},
            "object": {"metadata": {"name": "web", "labels": labels, "annotations": annotations}},
        })
    }

    #[test]
    fn denies_without_the_label_and_adds_the_owner() {
        let c = Config::default();
        let r = decide(&c, &request(json!({}), Value::Null));
        assert!(!r.allowed);
        assert_eq!(
            r.message,
            r#"Deployment "web" needs a "team" label: add metadata.labels.team"#
        );
        let r = decide(&c, &request(json!({"team": "a"}), Value::Null));
        assert_eq!(
            r.patch,
            r#"[{"op":"add","path":"/metadata/annotations","value":{"owner":"alice"}}]"#
        );
        let r = decide(&c, &request(json!({"team": "a"}), json!({"owner": "bob"})));
        assert!(r.allowed && r.patch.is_empty());
    }

    #[test]
    fn config_is_strict() {
        assert!(Config::parse(r#"{"label": "squad"}"#).is_ok());
        assert!(Config::parse(r#"{"lable": "squad"}"#).is_err());
        assert!(Config::parse(r#"{"label": ""}"#).is_err());
        assert!(Config::parse("[]").is_err());
    }
}
