//! LimitRange objects as LimitRanger sees them: read from JSON, with
//! upstream's `SetDefaults_LimitRangeItem` applied (the API server defaults a
//! LimitRange when it decodes it; here the plugin does it on what it reads).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::Quantity;

/// Resource name → quantity. Sorted, so messages come out in a stable order
/// (upstream ranges over Go maps, whose order is random).
pub type ResourceList = BTreeMap<String, Quantity>;

/// One `spec.limits[]` entry.
#[derive(Debug, Clone, Default)]
pub struct LimitItem {
    /// `Container`, `Pod` or `PersistentVolumeClaim` (others are ignored).
    pub kind: String,
    /// `max`.
    pub max: ResourceList,
    /// `min`.
    pub min: ResourceList,
    /// `default`: limits for containers that set none.
    pub default: ResourceList,
    /// `defaultRequest`: requests for containers that set none.
    pub default_request: ResourceList,
    /// `maxLimitRequestRatio`.
    pub max_limit_request_ratio: ResourceList,
}

/// One LimitRange.
#[derive(Debug, Clone, Default)]
pub struct LimitRange {
    /// `metadata.name`, for error messages and ordering.
    pub name: String,
    /// `spec.limits`, defaulted.
    pub limits: Vec<LimitItem>,
}

/// A resource list at `v` (absent or null is empty); `path` names it in errors.
pub fn resource_list(v: &Value, path: &str) -> Result<ResourceList, String> {
    match v {
        Value::Null => Ok(ResourceList::new()),
        Value::Object(map) => map
            .iter()
            .map(|(k, q)| {
                Quantity::from_json(q)
                    .map(|q| (k.clone(), q))
                    .map_err(|e| format!("{path}[{k}]: {e}"))
            })
            .collect(),
        other => Err(format!("{path}: expected an object, got {other}")),
    }
}

impl LimitRange {
    /// Read a LimitRange object and apply upstream's defaulting.
    pub fn from_json(obj: &Value) -> Result<Self, String> {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let items = match &obj["spec"]["limits"] {
            Value::Null => &[][..],
            Value::Array(a) => a.as_slice(),
            _ => return Err(format!("limitrange {name:?}: spec.limits must be a list")),
        };
        let mut limits = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let list = |field: &str| {
                resource_list(&item[field], &format!("spec.limits[{i}].{field}"))
                    .map_err(|e| format!("limitrange {name:?}: {e}"))
            };
            let mut li = LimitItem {
                kind: item["type"].as_str().unwrap_or_default().to_string(),
                max: list("max")?,
                min: list("min")?,
                default: list("default")?,
                default_request: list("defaultRequest")?,
                max_limit_request_ratio: list("maxLimitRequestRatio")?,
            };
            li.set_defaults();
            limits.push(li);
        }
        Ok(Self { name, limits })
    }
}

impl LimitItem {
    /// Upstream's `SetDefaults_LimitRangeItem`: for `Container` items, a
    /// missing default limit is the max; a missing default request is the
    /// default limit, else the min.
    pub fn set_defaults(&mut self) {
        if self.kind != "Container" {
            return;
        }
        for (k, v) in &self.max {
            self.default.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in &self.default {
            self.default_request.entry(k.clone()).or_insert(*v);
        }
        for (k, v) in &self.min {
            self.default_request.entry(k.clone()).or_insert(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_items_default_from_max_then_default_then_min() {
        let lr = LimitRange::from_json(&json!({
            "metadata": {"name": "lr"},
            "spec": {"limits": [
                {"type": "Container", "max": {"cpu": "2", "memory": "1Gi"},
                 "min": {"cpu": "100m", "ephemeral-storage": "1Gi"},
                 "default": {"memory": "512Mi"}},
                {"type": "Pod", "max": {"cpu": "4"}}
            ]}
        }))
        .unwrap();
        let c = &lr.limits[0];
        let show = |l: &ResourceList| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert_eq!(show(&c.default), "cpu=2,memory=512Mi");
        assert_eq!(
            show(&c.default_request),
            "cpu=2,ephemeral-storage=1Gi,memory=512Mi"
        );
        assert!(lr.limits[1].default.is_empty());
    }
}
