//! A container's probes as the pod spells them: the Kubernetes `Probe`
//! fields with kubelet's defaults, the handler resolved to the plugin that
//! runs it (named ports looked up in the container's `ports`), and the
//! `probe.trellis.dev/<container>.<kind>` annotations that hand a probe to a
//! custom plugin.

use std::time::Duration;

use serde_json::{json, Value};

use super::{DefaultProbe, ProbeKind};

/// The annotation prefix that names a custom probe plugin:
/// `probe.trellis.dev/<container>.<liveness|readiness|startup>`.
pub const ANNOTATION_PREFIX: &str = "probe.trellis.dev/";

/// What runs one probe.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Handler {
    /// A default plugin, with the handler JSON it is sent (`{"httpGet": {...}}`,
    /// ports already numbers).
    Default { plugin: DefaultProbe, config: Value },
    /// A `Plugin` object by name, with the config the annotation gives (or
    /// `None` for the object's own `spec.config`), and the annotation itself for
    /// its optional `memoryLimit`.
    Custom {
        plugin: String,
        config: Option<Value>,
        entry: Value,
    },
    /// The probe cannot run; why, for the event.
    Invalid(String),
}

/// One probe of one container, with kubelet's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeSpec {
    pub kind: ProbeKind,
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

/// The container named `name` in the pod, among `containers` and
/// `initContainers` (sidecars, restartPolicy Always, may have probes).
pub(crate) fn container<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|list| pod["spec"][list].as_array())
        .flatten()
        .find(|c| c["name"].as_str() == Some(name))
}

/// The probes of container `name` of `pod`: those in its spec, each replaced
/// (or added) by a `probe.trellis.dev/<name>.<kind>` annotation.
pub(crate) fn probes(pod: &Value, name: &str) -> Vec<ProbeSpec> {
    let empty = Value::Null;
    let c = container(pod, name).unwrap_or(&empty);
    ProbeKind::ALL
        .into_iter()
        .filter_map(|kind| {
            let key = format!("{ANNOTATION_PREFIX}{name}.{}", kind.as_str());
            let annotation = pod["metadata"]["annotations"][&key].as_str();
            let probe = &c[kind.field()];
            if annotation.is_none() && !probe.is_object() {
                return None;
            }
            let handler = match annotation {
                Some(text) => custom(&key, text),
                None => handler(probe, c),
            };
            Some(ProbeSpec {
                kind,
                handler,
                initial_delay: Duration::from_secs(int(probe, "initialDelaySeconds", 0, 0)),
                period: Duration::from_secs(int(probe, "periodSeconds", 10, 1)),
                timeout: Duration::from_secs(int(probe, "timeoutSeconds", 1, 1)),
                success_threshold: int(probe, "successThreshold", 1, 1) as u32,
                failure_threshold: int(probe, "failureThreshold", 3, 1) as u32,
            })
        })
        .collect()
}

/// An integer field with its default, raised to `min` (the API server does not
/// validate probes, so a zero period must not spin).
fn int(probe: &Value, field: &str, default: u64, min: u64) -> u64 {
    probe[field]
        .as_i64()
        .map(|v| v.max(0) as u64)
        .unwrap_or(default)
        .clamp(min, u64::from(u32::MAX))
}

/// A custom plugin annotation: `{"plugin": "NAME", "config": {...}}`.
fn custom(key: &str, text: &str) -> Handler {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return Handler::Invalid(format!("annotation {key} is not JSON: {e}")),
    };
    match v["plugin"].as_str().filter(|p| !p.is_empty()) {
        Some(plugin) => Handler::Custom {
            plugin: plugin.to_string(),
            config: v.get("config").filter(|c| !c.is_null()).cloned(),
            entry: v.clone(),
        },
        None => Handler::Invalid(format!(
            "annotation {key} must be {{\"plugin\": \"NAME\", \"config\": {{...}}}}, naming a Plugin object with role probe"
        )),
    }
}

/// The handler of a Kubernetes `Probe`: exactly one of `exec`, `httpGet`,
/// `tcpSocket` (`grpc` is not supported), named ports resolved from
/// `container.ports`.
fn handler(probe: &Value, container: &Value) -> Handler {
    let set: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc"]
        .into_iter()
        .filter(|k| probe[*k].is_object())
        .collect();
    match set.as_slice() {
        [] => Handler::Invalid(
            "the probe has no handler: set one of exec, httpGet or tcpSocket, or name a probe plugin in a probe.trellis.dev annotation"
                .into(),
        ),
        [_, _, ..] => Handler::Invalid(format!(
            "the probe sets more than one handler ({}); set exactly one",
            set.join(", ")
        )),
        ["grpc"] => Handler::Invalid(
            "grpc probes are not supported by Trellis; use exec, httpGet or tcpSocket, or a probe plugin"
                .into(),
        ),
        ["exec"] => Handler::Default {
            plugin: DefaultProbe::Exec,
            config: json!({ "exec": probe["exec"] }),
        },
        [field] => {
            let plugin = if *field == "httpGet" {
                DefaultProbe::HttpGet
            } else {
                DefaultProbe::TcpSocket
            };
            let mut h = probe[*field].clone();
            match port(&h["port"], container) {
                Ok(p) => {
                    h["port"] = json!(p);
                    Handler::Default {
                        plugin,
                        config: json!({ *field: h }),
                    }
                }
                Err(m) => Handler::Invalid(format!("{field}.port: {m}")),
            }
        }
    }
}

/// A probe port: a number, or the name of one of the container's ports.
fn port(port: &Value, container: &Value) -> Result<u16, String> {
    let number = |n: i64| {
        u16::try_from(n)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{n} is not a port number (1-65535)"))
    };
    if let Some(n) = port.as_i64() {
        return number(n);
    }
    let Some(name) = port.as_str() else {
        return Err(format!("must be a number or a port name, got {port}"));
    };
    let named = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"].as_str() == Some(name));
    match named {
        Some(p) => number(p["containerPort"].as_i64().unwrap_or(0)),
        None => match name.parse::<i64>() {
            Ok(n) => number(n),
            Err(_) => Err(format!(
                "container {} has no port named {name:?}",
                container["name"].as_str().unwrap_or_default()
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(container: Value, annotations: Value) -> Value {
        json!({"metadata": {"name": "p", "annotations": annotations},
               "spec": {"containers": [container]}})
    }

    #[test]
    fn defaults_follow_kubelet() {
        let p = pod(
            json!({"name": "web", "livenessProbe": {"tcpSocket": {"port": 80}}}),
            json!({}),
        );
        let probes = super::probes(&p, "web");
        assert_eq!(probes.len(), 1);
        let l = &probes[0];
        assert_eq!(l.kind, ProbeKind::Liveness);
        assert_eq!(
            (l.initial_delay, l.period, l.timeout),
            (
                Duration::ZERO,
                Duration::from_secs(10),
                Duration::from_secs(1)
            )
        );
        assert_eq!((l.success_threshold, l.failure_threshold), (1, 3));
        assert_eq!(
            l.handler,
            Handler::Default {
                plugin: DefaultProbe::TcpSocket,
                config: json!({"tcpSocket": {"port": 80}})
            }
        );
        assert!(super::probes(&p, "other").is_empty());
    }

    #[test]
    fn named_ports_resolve_from_the_container() {
        let c = json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"port": "http", "path": "/ready"}, "periodSeconds": 0},
            "startupProbe": {"tcpSocket": {"port": "nope"}}});
        let probes = super::probes(&pod(c, json!(null)), "web");
        let r = probes
            .iter()
            .find(|p| p.kind == ProbeKind::Readiness)
            .unwrap();
        assert_eq!(
            r.handler,
            Handler::Default {
                plugin: DefaultProbe::HttpGet,
                config: json!({"httpGet": {"port": 8080, "path": "/ready"}})
            }
        );
        assert_eq!(r.period, Duration::from_secs(1), "a zero period is raised");
        let s = probes
            .iter()
            .find(|p| p.kind == ProbeKind::Startup)
            .unwrap();
        assert_eq!(
            s.handler,
            Handler::Invalid("tcpSocket.port: container web has no port named \"nope\"".into())
        );
    }

    #[test]
    fn unsupported_and_missing_handlers_say_why() {
        let c = json!({"name": "web",
            "livenessProbe": {"grpc": {"port": 9000}},
            "readinessProbe": {"periodSeconds": 5},
            "startupProbe": {"exec": {"command": ["true"]}, "tcpSocket": {"port": 1}}});
        let probes = super::probes(&pod(c, json!({})), "web");
        let why = |k: ProbeKind| match &probes.iter().find(|p| p.kind == k).unwrap().handler {
            Handler::Invalid(m) => m.clone(),
            h => panic!("{h:?}"),
        };
        assert!(why(ProbeKind::Liveness).contains("grpc probes are not supported"));
        assert!(why(ProbeKind::Readiness).contains("no handler"));
        assert!(why(ProbeKind::Startup).contains("more than one handler (exec, tcpSocket)"));
    }

    #[test]
    fn annotations_name_custom_plugins() {
        let c =
            json!({"name": "web", "livenessProbe": {"periodSeconds": 2, "httpGet": {"port": 80}}});
        let p = pod(
            c,
            json!({
                "probe.trellis.dev/web.liveness": r#"{"plugin": "redis-ping", "config": {"key": "x"}}"#,
                "probe.trellis.dev/web.readiness": r#"{"plugin": "redis-ping"}"#,
                "probe.trellis.dev/web.startup": "{oops",
                "probe.trellis.dev/other.startup": r#"{"plugin": "x"}"#,
            }),
        );
        let probes = super::probes(&p, "web");
        assert_eq!(probes.len(), 3);
        let l = &probes[0];
        assert_eq!(l.period, Duration::from_secs(2), "timings stay the spec's");
        assert!(
            matches!(&l.handler, Handler::Custom { plugin, config: Some(c), .. }
            if plugin == "redis-ping" && c["key"] == "x")
        );
        assert!(matches!(
            &probes[1].handler,
            Handler::Custom { config: None, .. }
        ));
        assert!(
            matches!(&probes[2].handler, Handler::Invalid(m) if m.contains("probe.trellis.dev/web.startup is not JSON"))
        );
    }
}
