//! The controller's configuration: upstream's kube-controller-manager flags
//! of the same names, durations as Go writes them ("40s", "1m0s", "500ms").

use serde_json::Value;
use trellis_sdk::PluginError;

/// Configuration (JSON); unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `nodeMonitorGracePeriod` (default "40s"): how long a node may stay
    /// silent (no Lease renewal, no Ready heartbeat) before it is Unknown.
    pub node_monitor_grace_period_ms: i64,
    /// `nodeStartupGracePeriod` (default "1m0s"): the same for a node that
    /// never posted a Ready condition, counted from its creation.
    pub node_startup_grace_period_ms: i64,
    /// `nodeMonitorPeriod` (default "5s"): how often a node that is not Ready
    /// is looked at again (upstream checks every node at this period).
    pub node_monitor_period_ms: i64,
    /// `defaultTolerationSeconds` (default 300): the `tolerationSeconds` of
    /// the not-ready and unreachable tolerations upstream's
    /// DefaultTolerationSeconds admission gives pods that have none.
    pub default_toleration_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_monitor_grace_period_ms: 40_000,
            node_startup_grace_period_ms: 60_000,
            node_monitor_period_ms: 5_000,
            default_toleration_seconds: 300,
        }
    }
}

fn bad(m: String) -> PluginError {
    PluginError::InvalidConfig(m)
}

impl Config {
    /// Parse the JSON configuration (`{}` or empty: the defaults).
    pub fn parse(text: &str) -> Result<Self, PluginError> {
        let mut c = Self::default();
        if text.trim().is_empty() {
            return Ok(c);
        }
        let v: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Some(m) = v.as_object() else {
            return Err(bad("the configuration is not a JSON object".into()));
        };
        let duration = |k: &str, v: &Value| {
            v.as_str()
                .and_then(|s| trellis_sdk::objects::duration_ms(s).ok())
                .and_then(|ms| i64::try_from(ms).ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| bad(format!("{k} must be a positive duration such as \"40s\"")))
        };
        for (k, val) in m {
            match k.as_str() {
                "nodeMonitorGracePeriod" => c.node_monitor_grace_period_ms = duration(k, val)?,
                "nodeStartupGracePeriod" => c.node_startup_grace_period_ms = duration(k, val)?,
                "nodeMonitorPeriod" => c.node_monitor_period_ms = duration(k, val)?,
                "defaultTolerationSeconds" => {
                    c.default_toleration_seconds =
                        val.as_i64().filter(|s| *s >= 0).ok_or_else(|| {
                            bad("defaultTolerationSeconds must be a whole number of seconds".into())
                        })?
                }
                other => return Err(bad(format!("unknown configuration key {other:?}"))),
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_keys() {
        assert_eq!(Config::parse("{}").unwrap(), Config::default());
        let c =
            Config::parse(r#"{"nodeMonitorGracePeriod": "2s", "defaultTolerationSeconds": 10}"#)
                .unwrap();
        assert_eq!(c.node_monitor_grace_period_ms, 2_000);
        assert_eq!(c.default_toleration_seconds, 10);
        let c = Config::parse(r#"{"nodeMonitorPeriod": "1m0s", "nodeStartupGracePeriod": "1.5h"}"#)
            .unwrap();
        assert_eq!(c.node_monitor_period_ms, 60_000);
        assert_eq!(c.node_startup_grace_period_ms, 5_400_000);
        assert!(Config::parse(r#"{"nodeMonitorPeriod": "5"}"#).is_err());
        assert!(Config::parse(r#"{"nodeMonitorPeriod": "0"}"#).is_err());
        assert!(Config::parse(r#"{"podEvictionTimeout": "5m"}"#).is_err());
        assert!(Config::parse(r#"{"nodeMonitorGracePeriod": 40}"#).is_err());
    }
}
