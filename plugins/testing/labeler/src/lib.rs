//! A controller for the host's own tests: reconciling a ConfigMap reads it
//! through the cache and, unless it carries `trellis.dev/seen=true`, patches
//! that label on through the API; a missing object is fine. It also tries to
//! read a Secret, which its grants do not cover, and logs the denial.
//!
//! Keys in the namespace `instance` test the host's instance keeping:
//! `instance/count` answers `requeue-after(N)`, N being the reconciles this
//! instance has served, and `instance/trap` traps.

use trellis_sdk::controller::*;

#[derive(Default)]
struct Labeler {
    reconciles: u64,
}

fn configmap() -> KindRef {
    KindRef {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
    }
}

impl Controller for Labeler {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "labeler".into(),
            version: "0.1.0".into(),
            primary: configmap(),
            watches: vec![Watch {
                kind: configmap(),
                mapping: WatchMapping::Object,
            }],
        }
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        self.reconciles += 1;
        if key.namespace == "instance" {
            return match key.name.as_str() {
                "count" => Ok(Action::RequeueAfter(self.reconciles)),
                _ => panic!("asked to trap"),
            };
        }
        let secret = KindRef {
            group: String::new(),
            version: "v1".into(),
            kind: "Secret".into(),
        };
        if let Err(ObjectError::AccessDenied(m)) = read::get(&secret, &key.namespace, &key.name) {
            trellis_sdk::log::info(&format!("as expected: {m}"));
        } else {
            return Err(PluginError::Internal(
                "reading a Secret was not denied".into(),
            ));
        }
        let obj = match read::get(&configmap(), &key.namespace, &key.name) {
            Ok(o) => o,
            Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
            Err(e) => return Err(PluginError::Internal(format!("{e:?}"))),
        };
        let v: serde_json::Value =
            serde_json::from_str(&obj).map_err(|e| PluginError::Internal(e.to_string()))?;
        if v["metadata"]["labels"]["trellis.dev/seen"] == "true" {
            return Ok(Action::AwaitChange);
        }
        let patch = r#"{"metadata":{"labels":{"trellis.dev/seen":"true"}}}"#;
        write::merge_patch(&configmap(), &key.namespace, &key.name, patch)
            .map_err(|e| PluginError::Internal(format!("{e:?}")))?;
        Ok(Action::RequeueAfter(30_000))
    }
}

trellis_sdk::export_controller!(Labeler);
