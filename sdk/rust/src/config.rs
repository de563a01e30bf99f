//! A plugin's JSON configuration (the text `configure` receives).

use serde_json::{Map, Value};

use crate::PluginError;

/// The configuration as a JSON object: blank text or `null` is `{}`.
pub fn object(text: &str) -> Result<Map<String, Value>, PluginError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err(PluginError::InvalidConfig(
            "the configuration must be a JSON object".into(),
        )),
        Err(e) => Err(PluginError::InvalidConfig(format!("invalid JSON: {e}"))),
    }
}

/// For a controller that takes no configuration: blank, `{}` or `null`, else
/// an error naming the first key and the `controller`.
pub fn none(text: &str, controller: &str) -> Result<(), PluginError> {
    match object(text)?.keys().next() {
        None => Ok(()),
        Some(k) => Err(PluginError::InvalidConfig(format!(
            "unknown key {k:?}: the {controller} controller takes no configuration"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_configuration() {
        for ok in ["", " ", "{}", "null"] {
            assert!(none(ok, "x").is_ok(), "{ok:?}");
        }
        let err = |t: &str| match none(t, "x") {
            Err(PluginError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            err(r#"{"a": 1}"#),
            "unknown key \"a\": the x controller takes no configuration"
        );
        assert_eq!(err("[]"), "the configuration must be a JSON object");
        assert!(err("{").starts_with("invalid JSON"));
        assert_eq!(object(r#"{"a": 1}"#).unwrap().len(), 1);
    }
}
