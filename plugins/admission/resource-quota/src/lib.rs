//! Upstream's ResourceQuota admission, as a validating plugin. For a CREATE
//! (or an UPDATE that can grow usage: pods, services, PVCs) in a namespace,
//! it reads the namespace's `ResourceQuota` objects, refuses the request with
//! upstream's message if it would exceed one of them, and otherwise charges
//! every quota that covers it through `objects-write.update-status`.
//!
//! The charge is the quota exactly as read, `resourceVersion` included, with
//! `status.used` raised: the host stages it and commits it with the request's
//! own write only if the quota has not changed since, and reruns the chain on
//! a lost race, so concurrent creates cannot overrun a quota. A `dryRun`
//! request is checked but not charged; a DELETE changes nothing (the quota
//! controller recomputes `status.used`).
//!
//! The rules themselves live in [`trellis_types::quota`], shared with the
//! host's quota controller. Grants: `objects-read` and `objects-write` for
//! `ResourceQuota` (core).

use serde_json::Value;
use trellis_sdk::admission::*;
use trellis_sdk::{KindRef, ObjectError};
use trellis_types::quota;

/// The plugin; it keeps no state between reviews.
#[derive(Default)]
pub struct ResourceQuota;

fn resource_quota() -> KindRef {
    KindRef {
        group: String::new(),
        version: "v1".into(),
        kind: "ResourceQuota".into(),
    }
}

fn describe(e: &ObjectError) -> String {
    match e {
        ObjectError::AccessDenied(m) => format!("access denied: {m}"),
        ObjectError::NotFound => "not found".into(),
        ObjectError::Conflict(m) => format!("conflict: {m}"),
        ObjectError::Invalid(m) => format!("invalid: {m}"),
        ObjectError::Unavailable(m) => format!("unavailable: {m}"),
    }
}

impl AdmissionPlugin for ResourceQuota {
    fn review(&mut self, request: &str) -> Result<AdmissionResponse, PluginError> {
        let req: Value = serde_json::from_str(request)
            .map_err(|e| PluginError::InvalidInput(format!("request is not JSON: {e}")))?;
        if !quota::applies(&req) {
            return Ok(allow());
        }
        let namespace = req["namespace"].as_str().unwrap_or_default();
        let listed = objects::list(&resource_quota(), namespace, "").map_err(|e| {
            PluginError::Internal(format!(
                "listing ResourceQuota in {namespace}: {}",
                describe(&e)
            ))
        })?;
        if listed.is_empty() {
            return Ok(allow());
        }
        let quotas = listed
            .iter()
            .map(|q| serde_json::from_str::<Value>(q))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PluginError::Internal(format!("a ResourceQuota is not JSON: {e}")))?;
        let charges = match quota::admit(&req, &quotas) {
            Ok(charges) => charges,
            Err(message) => return Ok(deny(message)),
        };
        if req["dryRun"].as_bool() == Some(true) {
            return Ok(allow());
        }
        for q in &charges {
            objects::update_status(&resource_quota(), namespace, &q.to_string()).map_err(|e| {
                PluginError::Internal(format!(
                    "charging quota {}: {}",
                    q["metadata"]["name"].as_str().unwrap_or_default(),
                    describe(&e)
                ))
            })?;
        }
        Ok(allow())
    }
}

trellis_sdk::export_admission!(ResourceQuota);
