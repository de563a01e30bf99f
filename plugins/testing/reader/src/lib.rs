//! An admission plugin for the host's own tests: for a request
//! `{"read": {"group": G, "version": V, "kind": K, "namespace": N, "name": X}}`
//! it calls `objects-read.get` and allows, with a message saying what the host
//! answered ("ok: <json>" or "error: <variant>: <message>").

use trellis_sdk::admission::*;
use trellis_sdk::{KindRef, ObjectError};

#[derive(Default)]
struct Reader;

impl AdmissionPlugin for Reader {
    fn review(&mut self, request: &str) -> Result<AdmissionResponse, PluginError> {
        let v: serde_json::Value =
            serde_json::from_str(request).map_err(|e| PluginError::InvalidInput(e.to_string()))?;
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
