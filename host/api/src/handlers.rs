//! The verbs on resources: get, list, create, update, patch, delete,
//! deletecollection, and the status, scale and binding subresources, with
//! Kubernetes' semantics for metadata, resource versions, graceful deletion and
//! finalizers.

use serde_json::{json, Value};

use crate::admission::{Admitted, Request as AdmissionRequest, MAX_RERUNS};
use crate::error::ApiError;
use crate::http::Query;
use crate::registry::{self, Kind};
use crate::server::State;
use crate::storage::{resource_version, ListOptions, ListPage};
use crate::table::format_rfc3339 as rfc3339;
use crate::util::{now_rfc3339, now_unix, random_suffix};
use crate::{patch, priority, selectors, services, table, validation};

/// Where a request points.
#[derive(Debug, Clone)]
pub struct Target {
    /// The kind.
    pub kind: &'static Kind,
    /// Namespace ("" for cluster-scoped kinds or all namespaces).
    pub namespace: String,
    /// Object name ("" for the collection).
    pub name: String,
    /// Subresource ("" for none).
    pub subresource: String,
    /// Who asks (for admission's `userInfo`).
    pub user: Option<crate::auth::UserInfo>,
}

fn dry_run(q: &Query) -> bool {
    q.get("dryRun") == Some("All")
}

fn strict(q: &Query) -> bool {
    q.get("fieldValidation") == Some("Strict")
}

/// Options that decide how a list or get is rendered.
pub struct Render<'a> {
    /// The Accept header.
    pub accept: &'a str,
    /// The query.
    pub query: &'a Query,
}

impl Render<'_> {
    fn table(&self) -> bool {
        table::is_table_request(self.accept)
    }

    fn include(&self) -> table::IncludeObject {
        table::IncludeObject::from_query(self.query.get("includeObject")).unwrap_or_default()
    }

    /// One object, as itself or as a one-row Table.
    pub fn object(&self, kind: &Kind, obj: Value) -> Value {
        if self.table() {
            let rv = obj["metadata"]["resourceVersion"].clone();
            table::table(
                kind,
                &[obj],
                now_unix(),
                self.include(),
                json!({"resourceVersion": rv}),
            )
        } else {
            obj
        }
    }
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("just made an object")
}

/// Check and fill `apiVersion` and `kind` of a body.
fn check_type(kind: &Kind, obj: &mut Value) -> Result<(), ApiError> {
    let want = kind.api_version();
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(want),
        Some(v) if v == want => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )))
        }
    }
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(kind.kind),
        Some(k) if k == kind.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                kind.kind
            )))
        }
    }
    Ok(())
}

fn check_namespace(kind: &Kind, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let m = meta_mut(obj);
    if !kind.namespaced {
        m.remove("namespace");
        return Ok(());
    }
    match m.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("namespace".into(), json!(ns));
            Ok(())
        }
        Some(n) if n == ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// A validation failure as a 422. Unknown fields under `fieldValidation=Strict`
/// are a 422 too, with one cause per field (the issue asks for 422; upstream
/// answers 400 there).
fn invalid(kind: &Kind, name: &str, e: validation::ValidationError) -> ApiError {
    let causes = match &e {
        validation::ValidationError::StrictDecoding { fields } => json!(fields
            .iter()
            .map(|f| json!({"reason": "FieldValueInvalid", "message": format!("unknown field {f:?}"), "field": f}))
            .collect::<Vec<_>>()),
        other => serde_json::to_value(other.causes()).unwrap_or_else(|_| json!([])),
    };
    ApiError::invalid(kind, name, e.to_string(), causes)
}

fn warnings_header(warnings: &[String]) -> Vec<String> {
    warnings.iter().map(|w| format!("299 - {:?}", w)).collect()
}

/// Results of mutating verbs: the object (or Status), the HTTP code and any warnings.
pub struct Outcome {
    /// Response body.
    pub body: Value,
    /// Status code.
    pub code: u16,
    /// `Warning` header values.
    pub warnings: Vec<String>,
}

impl Outcome {
    fn ok(body: Value) -> Self {
        Self {
            body,
            code: 200,
            warnings: vec![],
        }
    }
}

impl State {
    /// Run the admission chain on a write: mutating plugins, validation
    /// again if they changed the object, then validating plugins.
    async fn admit(
        &self,
        t: &Target,
        operation: &'static str,
        object: Option<Value>,
        old: Option<&Value>,
        q: &Query,
    ) -> Result<Admitted, ApiError> {
        let kind = t.kind;
        if t.subresource != "" || !self.admission.applies(operation, kind) {
            return Ok(Admitted {
                object,
                ..Default::default()
            });
        }
        let ns_obj = if kind.namespaced {
            let nsk = registry::by_kind("", "Namespace").expect("namespaces are served");
            self.objects.get(nsk, "", &t.namespace).await.ok()
        } else {
            None
        };
        let name = object
            .as_ref()
            .or(old)
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or(&t.name)
            .to_string();
        let mut req = AdmissionRequest {
            operation,
            kind,
            namespace: &t.namespace,
            name: &name,
            user: t.user.as_ref(),
            object: object.clone(),
            old,
            dry_run: dry_run(q),
        };
        let mut out = Admitted::default();
        self.admission
            .run(&mut req, true, ns_obj.as_ref(), &mut out)
            .await?;
        if let (Some(before), Some(after)) = (&object, &mut req.object) {
            if before != after {
                let op = if operation == "CREATE" {
                    validation::Operation::Create
                } else {
                    validation::Operation::Update
                };
                validation::prepare(kind, after, old, op, strict(q))
                    .map_err(|e| invalid(kind, &name, e))?;
            }
        }
        self.admission
            .run(&mut req, false, ns_obj.as_ref(), &mut out)
            .await?;
        out.object = req.object;
        Ok(out)
    }

    async fn namespace_must_accept(&self, kind: &Kind, ns: &str) -> Result<(), ApiError> {
        if !kind.namespaced {
            return Ok(());
        }
        let nsk = registry::by_kind("", "Namespace").expect("namespaces are served");
        let obj = self.objects.get(nsk, "", ns).await?;
        if obj["status"]["phase"] == "Terminating"
            || !obj["metadata"]["deletionTimestamp"].is_null()
        {
            return Err(ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                kind.plural,
                obj["metadata"]["name"].as_str().unwrap_or(ns)
            )));
        }
        Ok(())
    }

    /// GET one object (or its status/scale).
    pub async fn get(&self, t: &Target) -> Result<Value, ApiError> {
        let obj = self.objects.get(t.kind, &t.namespace, &t.name).await?;
        match t.subresource.as_str() {
            "" | "status" => Ok(obj),
            "scale" if t.kind.scale => Ok(scale_of(&obj)),
            other => Err(ApiError::no_route(other)),
        }
    }

    /// GET a collection.
    pub async fn list(&self, t: &Target, q: &Query) -> Result<ListPage, ApiError> {
        let opts = list_options(t.kind, q)?;
        self.objects.list(t.kind, &t.namespace, &opts).await
    }

    /// POST a new object.
    pub async fn create(&self, t: &Target, mut obj: Value, q: &Query) -> Result<Outcome, ApiError> {
        let kind = t.kind;
        check_type(kind, &mut obj)?;
        check_namespace(kind, &mut obj, &t.namespace)?;
        let now = now_rfc3339();
        let m = meta_mut(&mut obj);
        let name = match (m.get("name").and_then(Value::as_str), m.get("generateName").and_then(Value::as_str)) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => {
                let n = format!("{g}{}", random_suffix());
                m.insert("name".into(), json!(n));
                n
            }
            _ => {
                return Err(ApiError::invalid(
                    kind,
                    "",
                    format!("{} \"\" is invalid: metadata.name: Required value: name or generateName is required", kind.kind),
                    json!([{"reason": "FieldValueRequired", "message": "Required value: name or generateName is required", "field": "metadata.name"}]),
                ))
            }
        };
        for server_set in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ] {
            m.remove(server_set);
        }
        m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("creationTimestamp".into(), json!(now));
        if kind.kind != "Event" {
            m.insert("generation".into(), json!(1));
        }
        prepare_status_on_create(kind, &mut obj);
        let warnings = validation::prepare(
            kind,
            &mut obj,
            None,
            validation::Operation::Create,
            strict(q),
        )
        .map_err(|e| invalid(kind, &name, e))?;
        self.namespace_must_accept(kind, &t.namespace).await?;
        if kind.kind == "Pod" {
            priority::admit_pod(&self.objects, &mut obj).await?;
        }
        let service = services::is_service(kind);
        for _ in 0..MAX_RERUNS {
            let mut obj = obj.clone();
            if service {
                services::assign(
                    &self.objects,
                    &self.config.service_ranges,
                    kind,
                    &mut obj,
                    None,
                )
                .await?;
            }
            let admitted = self.admit(t, "CREATE", Some(obj), None, q).await?;
            let mut warnings = warnings_header(&warnings);
            warnings.extend(admitted.warnings);
            let obj = admitted.object.expect("a create has an object");
            if dry_run(q) {
                return Ok(Outcome {
                    body: obj,
                    code: 201,
                    warnings,
                });
            }
            let stored = if admitted.staged.is_empty() && !service {
                Some(self.objects.create(kind, &t.namespace, &name, obj).await?)
            } else {
                self.objects
                    .write_with(kind, &t.namespace, &name, obj, None, &admitted.staged)
                    .await?
            };
            if let Some(stored) = stored {
                return Ok(Outcome {
                    body: stored,
                    code: 201,
                    warnings,
                });
            }
        }
        Err(too_contended(kind, &name))
    }

    /// PUT an object (or its status or scale).
    pub async fn update(
        &self,
        t: &Target,
        mut body: Value,
        q: &Query,
    ) -> Result<Outcome, ApiError> {
        let kind = t.kind;
        if t.subresource == "scale" {
            return self.update_scale(t, body, q).await;
        }
        check_type(kind, &mut body)?;
        check_namespace(kind, &mut body, &t.namespace)?;
        match body["metadata"]["name"].as_str() {
            Some(n) if n == t.name => {}
            None | Some("") => meta_mut(&mut body)
                .insert("name".into(), json!(t.name))
                .map(drop)
                .unwrap_or(()),
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({})",
                    t.name
                )))
            }
        }
        let old = self.objects.get(kind, &t.namespace, &t.name).await?;
        let expected = match resource_version(&body) {
            Some(rv) => rv,
            None if body["metadata"]["resourceVersion"]
                .as_str()
                .is_some_and(|s| !s.is_empty()) =>
            {
                return Err(ApiError::bad_request(
                    "metadata.resourceVersion must be a number",
                ))
            }
            None => resource_version(&old).unwrap_or(0),
        };
        if resource_version(&old) != Some(expected) {
            return Err(ApiError::conflict(kind, &t.name));
        }
        let status_only = t.subresource == "status";
        self.write_update(t, old, body, expected, status_only, q)
            .await
    }

    /// Apply an update computed from `old`: carry server-owned fields over,
    /// keep status or spec apart per subresource, validate, and store if the
    /// object is still at `expected`.
    async fn write_update(
        &self,
        t: &Target,
        old: Value,
        mut new: Value,
        expected: i64,
        status_only: bool,
        q: &Query,
    ) -> Result<Outcome, ApiError> {
        let kind = t.kind;
        if status_only {
            // Only status changes through /status.
            let status = new.get("status").cloned().unwrap_or(Value::Null);
            new = old.clone();
            new["status"] = status;
        } else if kind.status && kind.kind != "Namespace" {
            // ...and status never changes through the main resource.
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
        }
        {
            let om = &old["metadata"];
            let m = meta_mut(&mut new);
            for owned in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(owned) {
                    Some(v) => m.insert(owned.into(), v.clone()),
                    None => m.remove(owned),
                };
            }
        }
        let service = services::is_service(kind) && !status_only;
        if service {
            services::keep_allocated(&mut new, &old);
        }
        if !status_only && old.get("spec") != new.get("spec") && kind.kind != "Event" {
            let g = old["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            meta_mut(&mut new).insert("generation".into(), json!(g));
        }
        let mut warnings = validation::prepare(
            kind,
            &mut new,
            Some(&old),
            validation::Operation::Update,
            strict(q),
        )
        .map_err(|e| invalid(kind, &t.name, e))?;
        if service {
            let ranges = &self.config.service_ranges;
            services::assign(&self.objects, ranges, kind, &mut new, Some(&old)).await?;
        }
        let admitted = self.admit(t, "UPDATE", Some(new), Some(&old), q).await?;
        let new = admitted.object.expect("an update has an object");
        warnings.extend(admitted.warnings);
        if dry_run(q) {
            return Ok(Outcome {
                body: new,
                code: 200,
                warnings: warnings_header(&warnings),
            });
        }
        // The last finalizer of an object being deleted is gone: delete it now.
        let deleting = !new["metadata"]["deletionTimestamp"].is_null();
        // A namespace also waits for the finalizers in its spec (`kubernetes`:
        // the namespace controller empties it, then removes that one).
        let has = |v: &Value| v.as_array().is_some_and(|f| !f.is_empty());
        let finalizers_left = has(&new["metadata"]["finalizers"])
            || (kind.kind == "Namespace" && has(&new["spec"]["finalizers"]));
        if deleting
            && !finalizers_left
            && !(kind.kind == "Pod"
                && new["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .unwrap_or(0)
                    > 0)
        {
            let gone = self
                .objects
                .remove(kind, &t.namespace, &t.name, Some(expected))
                .await?;
            return Ok(Outcome::ok(gone));
        }
        let stored = if admitted.staged.is_empty() {
            self.objects
                .replace(kind, &t.namespace, &t.name, new, expected)
                .await?
        } else {
            // A staged write that lost its race is a conflict for the
            // caller: updates are retried from a fresh read anyway.
            self.objects
                .write_with(
                    kind,
                    &t.namespace,
                    &t.name,
                    new,
                    Some(expected),
                    &admitted.staged,
                )
                .await?
                .ok_or_else(|| ApiError::conflict(kind, &t.name))?
        };
        Ok(Outcome {
            body: stored,
            code: 200,
            warnings: warnings_header(&warnings),
        })
    }

    async fn update_scale(&self, t: &Target, body: Value, q: &Query) -> Result<Outcome, ApiError> {
        if !t.kind.scale {
            return Err(ApiError::no_route("scale"));
        }
        let replicas = body["spec"]["replicas"]
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.replicas is required in a Scale"))?;
        let old = self.objects.get(t.kind, &t.namespace, &t.name).await?;
        let expected = resource_version(&body)
            .or_else(|| resource_version(&old))
            .unwrap_or(0);
        if resource_version(&old) != Some(expected) {
            return Err(ApiError::conflict(t.kind, &t.name));
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        let out = self.write_update(t, old, new, expected, false, q).await?;
        Ok(Outcome {
            body: scale_of(&out.body),
            ..out
        })
    }

    /// PATCH an object (or its status or scale).
    pub async fn patch(
        &self,
        t: &Target,
        content_type: &str,
        body: &[u8],
        q: &Query,
    ) -> Result<Outcome, ApiError> {
        let kind = t.kind;
        let ty = patch::PatchType::from_content_type(content_type).ok_or_else(|| {
            if content_type.starts_with("application/apply-patch") {
                ApiError::unsupported_media_type("server-side apply (application/apply-patch+yaml) is not supported yet; use client-side `kubectl apply`")
            } else {
                ApiError::unsupported_media_type(content_type)
            }
        })?;
        // A patch without a resource version is retried on conflict, as upstream does.
        for _ in 0..5 {
            let old = self.objects.get(kind, &t.namespace, &t.name).await?;
            let expected = resource_version(&old).unwrap_or(0);
            let (base, scale) = if t.subresource == "scale" {
                if !kind.scale {
                    return Err(ApiError::no_route("scale"));
                }
                (scale_of(&old), true)
            } else {
                (old.clone(), false)
            };
            let patched = patch::apply(kind, &base, body, ty).map_err(|e| ApiError {
                code: e.status_code(),
                reason: match e.status_code() {
                    422 => "Invalid",
                    413 => "RequestEntityTooLarge",
                    415 => "UnsupportedMediaType",
                    _ => "BadRequest",
                },
                message: e.to_string(),
                details: None,
            })?;
            let pinned = resource_version(&patched).filter(|rv| *rv != expected);
            if pinned.is_some() {
                return Err(ApiError::conflict(kind, &t.name));
            }
            let new = if scale {
                let replicas = patched["spec"]["replicas"]
                    .as_i64()
                    .ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?;
                let mut n = old.clone();
                n["spec"]["replicas"] = json!(replicas);
                n
            } else {
                let mut n = patched;
                check_type(kind, &mut n)?;
                if n["metadata"]["name"] != old["metadata"]["name"] {
                    return Err(ApiError::bad_request(
                        "metadata.name cannot be changed by a patch",
                    ));
                }
                n
            };
            match self
                .write_update(t, old, new, expected, t.subresource == "status", q)
                .await
            {
                Err(e) if e.reason == "Conflict" && !body_pins_version(body) => continue,
                Ok(out) if scale => {
                    return Ok(Outcome {
                        body: scale_of(&out.body),
                        ..out
                    })
                }
                other => return other,
            }
        }
        Err(ApiError::conflict(kind, &t.name))
    }

    /// POST pods/NAME/binding: assign a pod to a node.
    pub async fn bind(&self, t: &Target, binding: Value) -> Result<Outcome, ApiError> {
        let node = binding["target"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("a Binding needs target.name (the node)"))?
            .to_string();
        for _ in 0..5 {
            let old = self.objects.get(t.kind, &t.namespace, &t.name).await?;
            if !old["metadata"]["deletionTimestamp"].is_null() {
                return Err(ApiError::conflict(t.kind, &t.name));
            }
            if let Some(cur) = old["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!("Operation cannot be fulfilled on pods/binding \"{}\": pod {} is already assigned to node \"{cur}\"", t.name, t.name),
                    details: None,
                });
            }
            let expected = resource_version(&old).unwrap_or(0);
            let mut new = old.clone();
            new["spec"]["nodeName"] = json!(node);
            // As upstream: the Binding's annotations are copied onto the pod.
            if let Some(ann) = binding["metadata"]["annotations"].as_object() {
                for (k, v) in ann {
                    new["metadata"]["annotations"][k] = v.clone();
                }
            }
            let mut conds: Vec<Value> = new["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            conds.retain(|c| c["type"] != "PodScheduled");
            conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
            new["status"]["conditions"] = json!(conds);
            match self
                .objects
                .replace(t.kind, &t.namespace, &t.name, new, expected)
                .await
            {
                Ok(_) => {
                    return Ok(Outcome {
                        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                        code: 201,
                        warnings: vec![],
                    })
                }
                Err(e) if e.reason == "Conflict" => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(t.kind, &t.name))
    }

    /// DELETE one object: immediately, or gracefully (deletionTimestamp) when it
    /// has finalizers, is a pod on a node, or is a namespace.
    ///
    /// Without a resourceVersion precondition a write that lands between the
    /// read and the delete (a kubelet's status update, say) does not fail the
    /// call: as the upstream store does, it reads again and retries.
    pub async fn delete(
        &self,
        t: &Target,
        options: &Value,
        q: &Query,
    ) -> Result<Outcome, ApiError> {
        // More tries than a patch gets: a kubelet may write a pod's status
        // several times while it is being deleted.
        for _ in 0..16 {
            if let Some(out) = self.delete_once(t, options, q).await? {
                return Ok(out);
            }
        }
        Err(ApiError::conflict(t.kind, &t.name))
    }

    /// One read and delete; `None` when the store refused the write because
    /// the object changed since the read and no resourceVersion precondition
    /// pinned it (read again).
    async fn delete_once(
        &self,
        t: &Target,
        options: &Value,
        q: &Query,
    ) -> Result<Option<Outcome>, ApiError> {
        let kind = t.kind;
        let pinned = !options["preconditions"]["resourceVersion"].is_null();
        let changed = |r: Result<Value, ApiError>| match r {
            Err(e) if e.reason == "Conflict" && !pinned => Ok(None),
            r => r.map(Some),
        };
        let old = self.objects.get(kind, &t.namespace, &t.name).await?;
        if let Some(uid) = options["preconditions"]["uid"].as_str() {
            if old["metadata"]["uid"] != uid {
                return Err(ApiError {
                    code: 409,
                    reason: "Conflict",
                    message: format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        old["metadata"]["uid"].as_str().unwrap_or("")
                    ),
                    details: None,
                });
            }
        }
        let expected = match options["preconditions"]["resourceVersion"].as_str() {
            Some(rv) => rv.parse::<i64>().map_err(|_| {
                ApiError::bad_request("preconditions.resourceVersion must be a number")
            })?,
            None => resource_version(&old).unwrap_or(0),
        };
        let grace = options["gracePeriodSeconds"]
            .as_i64()
            .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
        let propagation = options["propagationPolicy"]
            .as_str()
            .or_else(|| q.get("propagationPolicy"))
            .unwrap_or("");
        let orphan = options["orphanDependents"].as_bool() == Some(true);
        self.admit(t, "DELETE", None, Some(&old), q).await?;
        if dry_run(q)
            || options["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "All"))
        {
            return Ok(Some(Outcome::ok(old)));
        }

        let mut new = old.clone();
        let mut finalizers: Vec<Value> = new["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let add = |f: &mut Vec<Value>, name: &str| {
            if !f.iter().any(|x| x == name) {
                f.push(json!(name));
            }
        };
        match propagation {
            "Orphan" => add(&mut finalizers, "orphan"),
            "Foreground" => add(&mut finalizers, "foregroundDeletion"),
            "" if orphan => add(&mut finalizers, "orphan"),
            _ => {}
        }
        let pod_grace = if kind.kind == "Pod"
            && old["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        {
            grace
                .unwrap_or_else(|| {
                    old["spec"]["terminationGracePeriodSeconds"]
                        .as_i64()
                        .unwrap_or(30)
                })
                .max(0)
        } else {
            0
        };
        let namespace = kind.kind == "Namespace";
        if finalizers.is_empty() && pod_grace == 0 && !namespace {
            let gone = self
                .objects
                .remove(kind, &t.namespace, &t.name, Some(expected))
                .await;
            return Ok(changed(gone)?.map(Outcome::ok));
        }
        if !old["metadata"]["deletionTimestamp"].is_null() {
            // Already being deleted: a shorter grace period may end it now.
            if kind.kind == "Pod" && grace == Some(0) && finalizers.is_empty() {
                let gone = self
                    .objects
                    .remove(kind, &t.namespace, &t.name, Some(expected))
                    .await;
                return Ok(changed(gone)?.map(Outcome::ok));
            }
            return Ok(Some(Outcome {
                body: old,
                code: 202,
                warnings: vec![],
            }));
        }
        let m = meta_mut(&mut new);
        m.insert(
            "deletionTimestamp".into(),
            json!(rfc3339(now_unix() + pod_grace)),
        );
        m.insert("deletionGracePeriodSeconds".into(), json!(pod_grace));
        if !finalizers.is_empty() {
            m.insert("finalizers".into(), json!(finalizers));
        }
        if namespace {
            new["status"]["phase"] = json!("Terminating");
        }
        let stored = self
            .objects
            .replace(kind, &t.namespace, &t.name, new, expected)
            .await;
        let Some(stored) = changed(stored)? else {
            return Ok(None);
        };
        if namespace && self.config.namespace_cleanup {
            self.spawn_namespace_cleanup(t.name.clone());
        }
        Ok(Some(Outcome {
            body: stored,
            code: if namespace { 200 } else { 202 },
            warnings: vec![],
        }))
    }

    /// DELETE a collection (with selectors).
    pub async fn delete_collection(
        &self,
        t: &Target,
        options: &Value,
        q: &Query,
    ) -> Result<Outcome, ApiError> {
        let page = self.list(t, q).await?;
        for obj in page.items {
            let name = obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let one = Target {
                namespace: ns,
                name,
                ..t.clone()
            };
            match self.delete(&one, options, q).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Outcome::ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ))
    }

    /// Delete everything in a terminating namespace, then the namespace.
    pub fn spawn_namespace_cleanup(&self, ns: String) {
        let objects = self.objects.clone();
        tokio::spawn(async move {
            for kind in registry::KINDS.iter().filter(|k| k.namespaced) {
                let prefix = kind.store_namespace_prefix(&ns);
                let Ok(resp) = objects
                    .store()
                    .range(trellis_store::RangeRequest::prefix(prefix.into_bytes()))
                    .await
                else {
                    tracing::warn!(namespace = %ns, kind = kind.kind, "namespace cleanup could not list; it resumes at the next start");
                    return;
                };
                for kv in resp.kvs {
                    if let Err(e) = objects.store().delete(&kv.key, None).await {
                        if !matches!(e, trellis_store::StoreError::NotFound { .. }) {
                            tracing::warn!(namespace = %ns, error = %e, "namespace cleanup failed to delete an object");
                        }
                    }
                }
            }
            let nsk = registry::by_kind("", "Namespace").expect("served");
            let _ = objects.remove(nsk, "", &ns, None).await;
            tracing::info!(namespace = %ns, "namespace deleted with its content");
        });
    }
}

fn body_pins_version(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| !v["metadata"]["resourceVersion"].is_null())
}

fn prepare_status_on_create(kind: &Kind, obj: &mut Value) {
    match kind.kind {
        "Pod" => {
            obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(obj)});
        }
        "Namespace" => {
            obj["status"] = json!({"phase": "Active"});
        }
        // Nodes report their own status on registration; PVs and PVCs keep theirs.
        "Node" | "PersistentVolume" | "PersistentVolumeClaim" => {}
        _ if kind.status => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
}

/// Upstream's QoS class: Guaranteed when every container has equal cpu and
/// memory requests and limits, BestEffort when none has any, else Burstable.
fn qos_class(pod: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let r = &c["resources"];
        for res in ["cpu", "memory"] {
            let (req, lim) = (&r["requests"][res], &r["limits"][res]);
            if !req.is_null() || !lim.is_null() {
                any = true;
            }
            let req = if req.is_null() { lim } else { req };
            if lim.is_null() || req != lim {
                guaranteed = false;
            }
        }
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// The autoscaling/v1 Scale of an object.
pub fn scale_of(obj: &Value) -> Value {
    let m = &obj["metadata"];
    let selector = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// List options from the query.
pub fn list_options(kind: &Kind, q: &Query) -> Result<ListOptions, ApiError> {
    let labels = q
        .non_empty("labelSelector")
        .map(selectors::LabelSelector::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = q
        .non_empty("fieldSelector")
        .map(|s| selectors::FieldSelector::parse(s, kind))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let limit = match q.non_empty("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a number")))?,
        None => 0,
    };
    let exact_revision = match (
        q.non_empty("resourceVersion"),
        q.get("resourceVersionMatch"),
    ) {
        (Some(rv), Some("Exact")) => Some(rv.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion {rv:?} is not a number"))
        })?),
        (None, Some("Exact")) => {
            return Err(ApiError::bad_request(
                "resourceVersionMatch=Exact requires a resourceVersion",
            ))
        }
        _ => None,
    };
    Ok(ListOptions {
        labels,
        fields,
        limit,
        continue_token: q.non_empty("continue").map(str::to_string),
        exact_revision,
    })
}

/// A list response (or a Table of it).
pub fn list_body(kind: &Kind, page: ListPage, render: &Render<'_>) -> Value {
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if render.table() {
        return table::table(kind, &page.items, now_unix(), render.include(), meta);
    }
    json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": meta,
        "items": page.items,
    })
}

fn too_contended(kind: &Kind, name: &str) -> ApiError {
    ApiError {
        code: 409,
        reason: "Conflict",
        message: format!(
            "Operation cannot be fulfilled on {} \"{name}\": the objects admission charged kept changing; please try again",
            kind.plural
        ),
        details: None,
    }
}
