//! An admission plugin for the host's own tests: for a request
//! `{"read": {"group": G, "version": V, "kind": K, "namespace": N, "name": X}}`
//! it calls `objects-read.get` and allows, with a message saying what the host
//! answered ("ok: <json>" or "error: <variant>: <message>"). With config
//! `{"loopOn": NAME}` it loops forever on a request for an object named NAME.

use trellis_sdk::admission::*;
use trellis_sdk::{KindRef, ObjectError};

#[derive(Default)]
struct Reader {
    /// Config `{"loopOn": NAME}`: loop forever reviewing an object of that
    /// name (for the admission chain's deadline tests).
    loop_on: Option<String>,
}

impl AdmissionPlugin for Reader {
    fn configure(&mut self, config: &str) -> Result<(), PluginError> {
        let v: serde_json::Value =
            serde_json::from_str(config).map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        self.loop_on = v["loopOn"].as_str().map(String::from);
        Ok(())
    }

    fn review(&mut self, request: &str) -> Result<AdmissionResponse, PluginError> {
        let v: serde_json::Value =
            serde_json::from_str(request).map_err(|e| PluginError::InvalidInput(e.to_string()))?;
        if self.loop_on.is_some() && v["name"].as_str() == self.loop_on.as_deref() {
            let mut i: u64 = 0;
            loop {
                i = std::hint::black_box(i.wrapping_add(1));
            }
        }
        let r = &v["read"];
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let kind = KindRef {
            group: s("group"),
            version: s("version"),
            kind: s("kind"),
        };
        let message = match objects::get(&kind, &s("namespace"), &s("name")) {
            Ok(obj) => format!("ok: {obj}"),
            Err(ObjectError::AccessDenied(m)) => format!("error: access-denied: {m}"),
            Err(ObjectError::NotFound) => "error: not-found".to_string(),
            Err(e) => format!("error: other: {e:?}"),
        };
        let mut resp = allow();
        resp.message = message;
        if v["deny"].as_bool() == Some(true) {
            resp = deny("denied on request");
        }
        Ok(resp)
    }
}

trellis_sdk::export_admission!(Reader);
