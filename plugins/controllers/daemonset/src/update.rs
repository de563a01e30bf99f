//! Upstream's `rollingUpdate` (`pkg/controller/daemon/update.go`): replace pods
//! whose hash is old, either by deleting at most `maxUnavailable` at once and
//! letting the core loop create their successors, or (with `maxSurge`) by
//! creating the successor first and deleting the old pod once it is available.

use std::collections::BTreeMap;

use serde_json::Value;
use trellis_sdk::controller::{Api, PluginError};
use trellis_sdk::objects;

use crate::predicates::node_should_run;
use crate::{is_pod_updated, min_ready_seconds, sync_nodes};

/// `intstr.GetScaledValueFromIntOrPercent(v, total, roundUp=true)`; `None` when invalid.
fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((p * total + 99).div_euclid(100))
        }
        _ => None,
    }
}

fn rolling(ds: &Value) -> &Value {
    &ds["spec"]["updateStrategy"]["rollingUpdate"]
}

/// `util.SurgeCount`: `maxSurge` (default 0) scaled to `total`.
fn surge_count(ds: &Value, total: i64) -> i64 {
    if crate::strategy_type(ds) != "RollingUpdate" {
        return 0;
    }
    let v = &rolling(ds)["maxSurge"];
    if v.is_null() {
        return 0;
    }
    scaled(v, total).unwrap_or(0)
}

/// `util.UnavailableCount`: `maxUnavailable` (default 1) scaled to `total`.
fn unavailable_count(ds: &Value, total: i64) -> i64 {
    if crate::strategy_type(ds) != "RollingUpdate" {
        return 0;
    }
    let v = &rolling(ds)["maxUnavailable"];
    if v.is_null() {
        return 1;
    }
    scaled(v, total).unwrap_or(1)
}

/// `util.AllowsSurge`.
pub fn allows_surge(ds: &Value) -> bool {
    surge_count(ds, 1) != 0
}

/// Upstream's `findUpdatedPodsOnNode`: the node's one new and one old pod
/// (not being deleted); `None` when it has more than one of either.
fn find_updated<'a>(
    pods: &'a [Value],
    hash: &str,
    ds: &Value,
) -> Option<(Option<&'a Value>, Option<&'a Value>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !objects::is_deleting(p)) {
        let slot = if is_pod_updated(p, hash, ds) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// One rolling-update step; returns the writes made.
pub fn rolling_update(
    api: &impl Api,
    ds: &Value,
    nodes: &[Value],
    mut by_node: BTreeMap<String, Vec<Value>>,
    hash: &str,
) -> Result<usize, PluginError> {
    let spec = &ds["spec"]["template"]["spec"];
    let now = api.now();
    let min_ready = min_ready_seconds(ds);
    let available = |p: &Value| objects::pod_is_available(p, min_ready, now);
    let mut should_run: BTreeMap<&str, bool> = BTreeMap::new();
    let mut desired = 0;
    for n in nodes {
        let run = node_should_run(n, spec).0;
        should_run.insert(objects::name(n), run);
        if run {
            desired += 1;
            by_node.entry(objects::name(n).to_string()).or_default();
        }
    }
    let max_surge = surge_count(ds, desired);
    let mut max_unavailable = unavailable_count(ds, desired);
    if desired > 0 && max_unavailable == 0 && max_surge == 0 {
        max_unavailable = 1;
    }

    if max_surge == 0 {
        let mut num_unavailable = 0;
        let mut allowed: Vec<String> = Vec::new();
        let mut candidates: Vec<String> = Vec::new();
        for pods in by_node.values() {
            let Some((new, old)) = find_updated(pods, hash, ds) else {
                num_unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => num_unavailable += 1,
                (Some(new), None) => num_unavailable += i64::from(!available(new)),
                (None, Some(old)) => {
                    if !available(old) {
                        allowed.push(objects::name(old).to_string());
                        num_unavailable += 1;
                    } else if num_unavailable < max_unavailable {
                        candidates.push(objects::name(old).to_string());
                    }
                }
            }
        }
        let remaining = (max_unavailable - num_unavailable).clamp(0, candidates.len() as i64);
        allowed.extend(candidates.into_iter().take(remaining as usize));
        return sync_nodes(api, ds, &allowed, &[], hash);
    }

    let mut delete: Vec<String> = Vec::new();
    let mut should_not_run: Vec<String> = Vec::new();
    let mut candidates: Vec<String> = Vec::new();
    let mut allowed: Vec<String> = Vec::new();
    let (mut num_surge, mut num_available) = (0, 0);
    for (node_name, pods) in &by_node {
        let Some((new, old)) = find_updated(pods, hash, ds) else {
            num_surge += 1;
            continue;
        };
        if let Some(p) = old.or(new) {
            num_available += i64::from(available(p));
        }
        let runs = should_run.get(node_name.as_str()).copied().unwrap_or(false);
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old) {
                    if runs {
                        allowed.push(node_name.clone());
                    } else {
                        delete.push(objects::name(old).to_string());
                    }
                } else if !runs {
                    should_not_run.push(objects::name(old).to_string());
                } else if num_surge < max_surge {
                    candidates.push(node_name.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    delete.push(objects::name(old).to_string());
                } else {
                    num_surge += 1;
                }
            }
        }
    }
    // With surge the owner expects full availability: delete pods on nodes
    // that no longer fit only as others become available elsewhere.
    let deletable = (num_available - desired).clamp(0, should_not_run.len() as i64);
    delete.extend(should_not_run.into_iter().take(deletable as usize));
    let remaining = (max_surge - num_surge).clamp(0, candidates.len() as i64);
    allowed.extend(candidates.into_iter().take(remaining as usize));
    sync_nodes(api, ds, &delete, &allowed, hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scaling_rounds_up() {
        assert_eq!(scaled(&json!(2), 10), Some(2));
        assert_eq!(scaled(&json!("25%"), 10), Some(3));
        assert_eq!(scaled(&json!("0%"), 10), Some(0));
        assert_eq!(scaled(&json!("x"), 10), None);
        let ds = json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}}});
        assert_eq!(unavailable_count(&ds, 5), 1);
        assert!(!allows_surge(&ds));
        let ds = json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxSurge": "10%", "maxUnavailable": 0}}}});
        assert!(allows_surge(&ds));
        assert_eq!(surge_count(&ds, 20), 2);
        assert_eq!(unavailable_count(&ds, 20), 0);
    }
}
