//! Upstream's ServiceAccounts controller: every active namespace has a
//! ServiceAccount named `default`, created when the namespace appears and
//! again when someone deletes it. Keys are namespaces (`("", ns)` from a
//! Namespace event) or ServiceAccounts (`(ns, name)`); both name the namespace
//! to check.

use serde_json::json;
use trellis_sdk::controller::kinds::{namespace, service_account};
use trellis_sdk::controller::*;
use trellis_sdk::objects;

/// The accounts every namespace gets.
const ACCOUNTS: &[&str] = &["default"];

/// The controller.
#[derive(Default)]
pub struct ServiceAccounts;

fn internal(e: ObjectError) -> PluginError {
    PluginError::Internal(format!("{e:?}"))
}

/// Make sure the namespace the key names has its accounts.
pub fn reconcile(api: &impl Api, key: &ObjectKey) -> Result<Action, PluginError> {
    let ns = if key.namespace.is_empty() {
        &key.name
    } else {
        &key.namespace
    };
    let nsobj = match api.get(&namespace(), "", ns) {
        Ok(o) => o,
        Err(ObjectError::NotFound) => return Ok(Action::AwaitChange),
        Err(e) => return Err(internal(e)),
    };
    if objects::is_deleting(&nsobj) || nsobj["status"]["phase"] == "Terminating" {
        return Ok(Action::AwaitChange);
    }
    for name in ACCOUNTS {
        match api.get(&service_account(), ns, name) {
            Ok(_) => continue,
            Err(ObjectError::NotFound) => {}
            Err(e) => return Err(internal(e)),
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": name, "namespace": ns}});
        match api.create(&service_account(), ns, &sa) {
            // Someone made it first, or the namespace began terminating.
            Ok(_) | Err(ObjectError::Conflict(_)) => {}
            Err(ObjectError::AccessDenied(m)) | Err(ObjectError::Invalid(m))
                if m.contains("being terminated") => {}
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(Action::AwaitChange)
}

impl Controller for ServiceAccounts {
    fn info() -> ControllerInfo {
        ControllerInfo {
            name: "serviceaccount".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            primary: namespace(),
            watches: vec![Watch {
                kind: service_account(),
                mapping: WatchMapping::Object,
            }],
        }
    }

    fn configure(&mut self, _config: &str) -> Result<(), PluginError> {
        trellis_sdk::log::debug(&format!(
            "serviceaccount controller configured at {}",
            objects::rfc3339(Host.now())
        ));
        Ok(())
    }

    fn reconcile(&mut self, key: ObjectKey) -> Result<Action, PluginError> {
        reconcile(&Host, &key)
    }
}

trellis_sdk::export_controller!(ServiceAccounts);

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_sdk::controller::fake::FakeCluster;

    #[test]
    fn every_active_namespace_gets_a_default_account() {
        let c = FakeCluster::new();
        c.put(
            &namespace(),
            json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}}),
        );
        c.put(
            &namespace(),
            json!({"metadata": {"name": "b", "deletionTimestamp": "2024-01-01T00:00:00Z"},
                                   "status": {"phase": "Terminating"}}),
        );
        let info = ServiceAccounts::info();
        c.settle(&info, |c, k| reconcile(c, &k)).unwrap();
        assert!(c.object(&service_account(), "a", "default").is_some());
        assert!(c.object(&service_account(), "b", "default").is_none());
        // deleted by someone: made again
        c.remove(&service_account(), "a", "default");
        c.clear_writes();
        c.settle(&info, |c, k| reconcile(c, &k)).unwrap();
        assert!(c.object(&service_account(), "a", "default").is_some());
        assert_eq!(c.writes().len(), 1, "{:?}", c.writes());
    }
}
