//! The ResourceQuota controller: keeps each quota's `status.hard` and
//! `status.used` current. Admission (the ResourceQuota plugin) charges usage
//! atomically with each create; this recomputes it from the objects when
//! something leaves (a delete, a pod finishing) or a quota changes, the way
//! upstream's quota controller does, with the rules of
//! [`trellis_types::quota`] shared with the plugin.
//!
//! It watches the store and recomputes, shortly after, the namespaces where
//! an object was deleted, a pod finished or a quota changed (creates were
//! charged by admission already); every quota is also recomputed every
//! [`RESYNC`]. Its
//! status write is a compare-and-swap on the quota, so a charge committed
//! meanwhile makes it read again rather than be overwritten.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value};
use trellis_store::{Event, EventKind, WatchRequest, WatchResponse};
use trellis_types::quota;

use crate::registry::{self, Kind, KINDS};
use crate::storage::{resource_version, ListOptions, Objects};
use crate::ApiError;

/// Changes are gathered this long before a recompute.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// Full recompute interval.
const RESYNC: Duration = Duration::from_secs(30);

/// The namespace of a store key, if it is a namespaced kind's.
fn namespace_of(key: &[u8]) -> Option<String> {
    let key = std::str::from_utf8(key).ok()?;
    KINDS.iter().filter(|k| k.namespaced).find_map(|k| {
        let rest = key.strip_prefix(&k.store_prefix())?;
        rest.split_once('/').map(|(ns, _)| ns.to_string())
    })
}

fn quotas_kind() -> &'static Kind {
    registry::by_kind("", "ResourceQuota").expect("served")
}

/// Whether a stored pod is terminal (its usage is released), without
/// decoding it.
fn finished(value: &[u8]) -> bool {
    let has = |needle: &[u8]| value.windows(needle.len()).any(|w| w == needle);
    has(br#""phase":"Succeeded""#) || has(br#""phase":"Failed""#)
}

/// Whether a quota event changed what the quota limits, which needs a
/// recompute: a new quota or a new spec, not a status write (an admission
/// charge or our own) nor a deletion. `specs` holds each quota's spec as
/// last seen.
fn quota_changed(specs: &mut BTreeMap<Vec<u8>, String>, e: &Event) -> bool {
    if e.kind == EventKind::Delete {
        specs.remove(e.kv.key.as_ref());
        return false;
    }
    let spec = serde_json::from_slice::<Value>(&e.kv.value)
        .map(|v| v["spec"].to_string())
        .unwrap_or_default();
    specs.insert(e.kv.key.to_vec(), spec.clone()).as_ref() != Some(&spec)
}

/// Recompute every quota of `ns`.
async fn sync_namespace(objects: &Objects, ns: &str) -> Result<(), ApiError> {
    let quotas = objects
        .list(quotas_kind(), ns, &ListOptions::default())
        .await?;
    for q in quotas.items {
        sync_quota(objects, ns, q).await?;
    }
    Ok(())
}

async fn sync_quota(objects: &Objects, ns: &str, mut q: Value) -> Result<(), ApiError> {
    let name = q["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for _ in 0..5 {
        let spec_hard = q["spec"]["hard"].clone();
        // Used is computed against the spec's limits (the status may lag).
        let mut probe = q.clone();
        probe["status"]["hard"] = spec_hard.clone();
        let tracked: BTreeSet<(String, String)> = quota::hard(&probe)
            .keys()
            .filter_map(|r| quota::tracked_by(r))
            .collect();
        let mut listed: Vec<(String, String, Value)> = Vec::new();
        for (group, resource) in &tracked {
            let Some(kind) = KINDS
                .iter()
                .find(|k| k.group == group && k.plural == resource && k.namespaced)
            else {
                continue;
            };
            let page = objects.list(kind, ns, &ListOptions::default()).await?;
            listed.extend(
                page.items
                    .into_iter()
                    .map(|o| (group.clone(), resource.clone(), o)),
            );
        }
        let used = quota::calculate_used(
            &probe,
            listed.iter().map(|(g, r, o)| (g.as_str(), r.as_str(), o)),
            Some(crate::util::now_unix()),
        );
        let used: BTreeMap<String, String> = used
            .iter()
            .map(|(r, v)| (r.clone(), quota::format(r, *v)))
            .collect();
        let status = json!({"hard": spec_hard, "used": used});
        let same = q["status"]["hard"] == status["hard"]
            && quota::used(&q) == quota::used(&json!({"status": status}));
        if same {
            return Ok(());
        }
        let rv = resource_version(&q).unwrap_or(0);
        let mut next = q.clone();
        next["status"] = status;
        match objects.replace(quotas_kind(), ns, &name, next, rv).await {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 409 => {
                q = match objects.get(quotas_kind(), ns, &name).await {
                    Ok(q) => q,
                    Err(e) if e.code == 404 => return Ok(()),
                    Err(e) => return Err(e),
                };
            }
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Namespaces that hold at least one quota.
async fn quota_namespaces(objects: &Objects) -> Result<BTreeSet<String>, ApiError> {
    let all = objects
        .list(quotas_kind(), "", &ListOptions::default())
        .await?;
    Ok(all
        .items
        .iter()
        .filter_map(|q| q["metadata"]["namespace"].as_str().map(String::from))
        .collect())
}

/// Run until `shutdown` changes.
pub(crate) async fn run(objects: Objects, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        let start = match objects.revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "quota controller: store unavailable");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut with_quotas = quota_namespaces(&objects).await.unwrap_or_default();
        for ns in &with_quotas {
            if let Err(e) = sync_namespace(&objects, ns).await {
                tracing::warn!(namespace = %ns, error = %e, "quota controller: recompute failed");
            }
        }
        let req = WatchRequest::prefix(&b"/registry/"[..]).from_revision(start + 1);
        let mut watch = match objects.store().watch(req).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "quota controller: cannot watch");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        // Each quota's spec as last seen: every create charges its quota's
        // status, and recomputing a namespace on each of those (listing all
        // its pods) would load the server in proportion to its write rate.
        let mut specs: BTreeMap<Vec<u8>, String> = BTreeMap::new();
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        let quota_prefix = quotas_kind().store_prefix();
        let pods_prefix = registry::by_kind("", "Pod").expect("served").store_prefix();
        loop {
            let flush = async {
                if dirty.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    tokio::time::sleep(DEBOUNCE).await
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = resync.tick() => {
                    with_quotas = quota_namespaces(&objects).await.unwrap_or(with_quotas);
                    dirty.extend(with_quotas.iter().cloned());
                }
                _ = flush => {
                    for ns in std::mem::take(&mut dirty) {
                        if let Err(e) = sync_namespace(&objects, &ns).await {
                            tracing::warn!(namespace = %ns, error = %e, "quota controller: recompute failed");
                        }
                    }
                }
                ev = watch.next() => match ev {
                    Some(Ok(WatchResponse::Events(events))) => {
                        for e in events {
                            let is_quota = e.kv.key.starts_with(quota_prefix.as_bytes());
                            let recompute = if is_quota {
                                quota_changed(&mut specs, &e)
                            } else {
                                // Creates and updates were charged by admission;
                                // what frees usage is a delete or a pod finishing.
                                e.kind == EventKind::Delete
                                    || (e.kv.key.starts_with(pods_prefix.as_bytes())
                                        && finished(&e.kv.value))
                            };
                            if !recompute {
                                continue;
                            }
                            let Some(ns) = namespace_of(&e.kv.key) else { continue };
                            if is_quota {
                                with_quotas.insert(ns.clone());
                            }
                            if with_quotas.contains(&ns) {
                                dirty.insert(ns);
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    // Compacted or ended: list afresh.
                    Some(Err(_)) | None => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_namespace() {
        assert_eq!(
            namespace_of(b"/registry/core/pods/team-a/web-1").as_deref(),
            Some("team-a")
        );
        assert_eq!(
            namespace_of(b"/registry/apps/deployments/default/web").as_deref(),
            Some("default")
        );
        assert_eq!(namespace_of(b"/registry/core/nodes/n1"), None);
    }

    #[test]
    fn only_a_new_or_changed_spec_is_a_quota_change() {
        let event = |kind, value: Value| Event {
            kind,
            kv: trellis_store::KeyValue {
                key: "/registry/core/resourcequotas/a/q".into(),
                value: if value.is_null() {
                    Vec::new()
                } else {
                    value.to_string().into_bytes()
                }
                .into(),
                create_revision: 1,
                mod_revision: 2,
                version: 1,
            },
            prev_kv: None,
        };
        let put = |hard: &str, used: &str| {
            event(
                EventKind::Put,
                json!({"spec": {"hard": {"pods": hard}}, "status": {"used": {"pods": used}}}),
            )
        };
        let mut specs = BTreeMap::new();
        assert!(quota_changed(&mut specs, &put("5", "0")), "a new quota");
        assert!(!quota_changed(&mut specs, &put("5", "1")), "a charge");
        assert!(quota_changed(&mut specs, &put("6", "1")), "a new limit");
        assert!(!quota_changed(
            &mut specs,
            &event(EventKind::Delete, Value::Null)
        ));
        assert!(quota_changed(&mut specs, &put("6", "1")), "created again");
    }
}
