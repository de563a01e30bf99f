//! API objects in the store: one key per object (`Kind::store_key`), the value
//! its JSON without `resourceVersion`, which is always the key's mod revision
//! when read. Lists page with continue tokens that pin the list's revision, so
//! every page of one list shows the same moment.
//!
//! A Service's cluster IPs and node ports are keys of their own beside it
//! (`services::held`): every write of a Service creates the ones it gains
//! (which must be absent) and deletes the ones it drops, in its own
//! transaction.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use trellis_store::{KeyValue, RangeRequest, Store, StoreError};

use crate::error::ApiError;
use crate::registry::Kind;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::services;

/// How to list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub labels: Option<LabelSelector>,
    /// `fieldSelector`.
    pub fields: Option<FieldSelector>,
    /// `limit` (0 = all).
    pub limit: usize,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion` with `resourceVersionMatch=Exact`: read at that revision.
    pub exact_revision: Option<i64>,
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// Matching objects, in key order.
    pub items: Vec<Value>,
    /// The list's resource version.
    pub revision: i64,
    /// Token for the next page.
    pub continue_token: Option<String>,
}

/// Objects of every kind, over one store.
#[derive(Clone)]
pub struct Objects {
    store: Arc<dyn Store>,
}

fn encode_continue(revision: i64, next_key: &[u8]) -> String {
    format!("{revision}.{}", hex::encode(next_key))
}

fn decode_continue(token: &str) -> Option<(i64, Vec<u8>)> {
    let (rev, key) = token.split_once('.')?;
    Some((rev.parse().ok()?, hex::decode(key).ok()?))
}

impl Objects {
    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Decode a stored value, stamping its resource version.
    pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
        let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
            ApiError::internal(format!(
                "stored object at {} is not JSON: {e}",
                String::from_utf8_lossy(&kv.key)
            ))
        })?;
        set_resource_version(&mut v, kv.mod_revision);
        Ok(v)
    }

    fn encode(obj: &Value) -> Bytes {
        let mut o = obj.clone();
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        Bytes::from(serde_json::to_vec(&o).expect("a Value always serializes"))
    }

    /// One object.
    pub async fn get(&self, kind: &Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.get_kv(kind, ns, name)
            .await
            .and_then(|kv| Self::decode(&kv))
    }

    async fn get_kv(&self, kind: &Kind, ns: &str, name: &str) -> Result<KeyValue, ApiError> {
        let key = kind.store_key(ns, name);
        match self.store.get(key.as_bytes()).await {
            Ok(Some(kv)) => Ok(kv),
            Ok(None) => Err(ApiError::not_found(kind, name)),
            Err(e) => Err(ApiError::from_store(e, kind, name)),
        }
    }

    /// One page of objects in `ns` ("" = all namespaces).
    pub async fn list(
        &self,
        kind: &Kind,
        ns: &str,
        opts: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let prefix = kind.store_namespace_prefix(ns);
        let mut req = RangeRequest::prefix(prefix.clone().into_bytes());
        let mut revision = opts.exact_revision.unwrap_or(0);
        if let Some(token) = &opts.continue_token {
            let (rev, key) = decode_continue(token)
                .filter(|(_, k)| k.starts_with(prefix.as_bytes()))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "continue key is not valid: it was issued for another list or is malformed",
                    )
                })?;
            revision = rev;
            req.start = Bytes::from(key);
        }
        let mut items = Vec::new();
        let want = opts.limit;
        // Selectors filter after reading, so read in chunks until the page is full.
        let chunk = if want == 0 { 0 } else { (want * 2).max(100) };
        loop {
            let mut r = req.clone();
            r.limit = chunk;
            r.revision = revision;
            let resp = self.store.range(r).await.map_err(|e| match e {
                StoreError::Compacted { .. } if opts.continue_token.is_some() => ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                e => ApiError::from_store(e, kind, ""),
            })?;
            revision = resp.revision;
            let more = resp.more;
            let mut last_key: Option<Bytes> = None;
            for kv in &resp.kvs {
                if want != 0 && items.len() == want {
                    // Page full: continue from this key.
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: Some(encode_continue(revision, &kv.key)),
                    });
                }
                last_key = Some(kv.key.clone());
                let obj = Self::decode(kv)?;
                if opts
                    .labels
                    .as_ref()
                    .is_some_and(|s| !s.matches_object(&obj))
                {
                    continue;
                }
                if opts.fields.as_ref().is_some_and(|s| !s.matches(&obj)) {
                    continue;
                }
                items.push(obj);
            }
            match (more, last_key) {
                (true, Some(k)) => {
                    let mut next = k.to_vec();
                    next.push(0);
                    if want != 0 && items.len() == want {
                        return Ok(ListPage {
                            items,
                            revision,
                            continue_token: Some(encode_continue(revision, &next)),
                        });
                    }
                    req.start = Bytes::from(next);
                }
                _ => {
                    return Ok(ListPage {
                        items,
                        revision,
                        continue_token: None,
                    })
                }
            }
        }
    }

    /// Store a new object (already fully prepared); returns it with its version.
    pub async fn create(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        if services::is_service(kind) {
            return self
                .write_with(kind, ns, name, obj, None, &[])
                .await?
                .ok_or_else(|| lost_claim(kind, name));
        }
        let key = kind.store_key(ns, name);
        let rev = self
            .store
            .create(key.as_bytes(), Self::encode(&obj))
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?;
        set_resource_version(&mut obj, rev);
        Ok(obj)
    }

    /// Store an object the server makes itself (system namespaces and
    /// classes, the `kubernetes` Service) under its `metadata.name`, with a
    /// new uid and the creation time.
    pub async fn create_stamped(
        &self,
        kind: &Kind,
        ns: &str,
        mut obj: Value,
    ) -> Result<Value, ApiError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let m = &mut obj["metadata"];
        m["uid"] = Value::String(uuid::Uuid::new_v4().to_string());
        m["creationTimestamp"] = Value::String(crate::util::now_rfc3339());
        self.create(kind, ns, &name, obj).await
    }

    /// Store `obj` (a create when `expected` is `None`, else a replace at
    /// `expected`) together with status writes staged by admission plugins,
    /// and a Service with its claims, in one transaction. `Ok(None)` means a
    /// staged write or a claim lost a race: the caller reruns admission (and
    /// the allocation) on fresh data.
    pub async fn write_with(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        mut obj: Value,
        expected: Option<i64>,
        staged: &[crate::admission::Staged],
    ) -> Result<Option<Value>, ApiError> {
        use trellis_store::{Compare, CompareOp, Txn, TxnOp};
        let key = kind.store_key(ns, name);
        let mut compares = vec![match expected {
            None => Compare::absent(key.clone().into_bytes()),
            Some(rev) => Compare::mod_revision(key.clone().into_bytes(), CompareOp::Equal, rev),
        }];
        let mut ops = vec![TxnOp::Put(
            key.clone().into_bytes().into(),
            Self::encode(&obj),
        )];
        if services::is_service(kind) {
            let before = match expected {
                None => Default::default(),
                Some(rev) => {
                    let cur = self.get_kv(kind, ns, name).await?;
                    if cur.mod_revision != rev {
                        return Err(ApiError::conflict(kind, name));
                    }
                    services::held(&Self::decode(&cur)?)
                }
            };
            let after = services::held(&obj);
            let value = Bytes::from(services::claim_value(&obj));
            for k in after.difference(&before) {
                compares.push(Compare::absent(k.clone().into_bytes()));
                ops.push(TxnOp::Put(k.clone().into_bytes().into(), value.clone()));
            }
            for k in before.difference(&after) {
                ops.push(TxnOp::Delete(k.clone().into_bytes().into()));
            }
        }
        for w in staged {
            // The staged status lands on the object as it was read; nothing
            // else of it changes.
            let wkey = w.kind.store_key(&w.namespace, &w.name);
            if wkey == key {
                return Err(ApiError::internal(
                    "an admission plugin staged a write to the request's own object",
                ));
            }
            let cur = self.get(w.kind, &w.namespace, &w.name).await?;
            if resource_version(&cur) != Some(w.expected) {
                return Ok(None);
            }
            let mut next = cur;
            next["status"] = w.status.clone();
            compares.push(Compare::mod_revision(
                wkey.clone().into_bytes(),
                CompareOp::Equal,
                w.expected,
            ));
            ops.push(TxnOp::Put(wkey.into_bytes().into(), Self::encode(&next)));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        if let Some(rev) = self.commit(txn, kind, name).await? {
            set_resource_version(&mut obj, rev);
            return Ok(Some(obj));
        }
        // Which guard failed: the object's own (409) or a staged one (rerun).
        let now = self
            .store
            .get(key.as_bytes())
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?;
        match (expected, now) {
            (None, Some(_)) => Err(ApiError::already_exists(kind, name)),
            (Some(_), None) => Err(ApiError::not_found(kind, name)),
            (Some(rev), Some(kv)) if kv.mod_revision != rev => Err(ApiError::conflict(kind, name)),
            _ => Ok(None),
        }
    }

    /// Replace an object if its version is still `expected`.
    pub async fn replace(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        mut obj: Value,
        expected: i64,
    ) -> Result<Value, ApiError> {
        if services::is_service(kind) {
            return self
                .write_with(kind, ns, name, obj, Some(expected), &[])
                .await?
                .ok_or_else(|| lost_claim(kind, name));
        }
        let key = kind.store_key(ns, name);
        let rev = self
            .store
            .update(key.as_bytes(), Self::encode(&obj), expected)
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?;
        set_resource_version(&mut obj, rev);
        Ok(obj)
    }

    /// Delete an object (if its version is still `expected`, when given).
    pub async fn remove(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<Value, ApiError> {
        if services::is_service(kind) {
            return self.remove_service(kind, ns, name, expected).await;
        }
        let key = kind.store_key(ns, name);
        let (rev, prev) = self
            .store
            .delete(key.as_bytes(), expected)
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?;
        let mut obj = Self::decode(&prev)?;
        set_resource_version(&mut obj, rev);
        Ok(obj)
    }

    /// Delete a Service and its claims together.
    async fn remove_service(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        expected: Option<i64>,
    ) -> Result<Value, ApiError> {
        use trellis_store::{Compare, CompareOp, Txn, TxnOp};
        let key = kind.store_key(ns, name);
        loop {
            let cur = self.get_kv(kind, ns, name).await?;
            if expected.is_some_and(|rev| rev != cur.mod_revision) {
                return Err(ApiError::conflict(kind, name));
            }
            let mut obj = Self::decode(&cur)?;
            let mut ops = vec![TxnOp::Delete(key.clone().into_bytes().into())];
            ops.extend(
                services::held(&obj)
                    .into_iter()
                    .map(|k| TxnOp::Delete(k.into_bytes().into())),
            );
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    key.clone().into_bytes(),
                    CompareOp::Equal,
                    cur.mod_revision,
                )])
                .and_then(ops);
            if let Some(rev) = self.commit(txn, kind, name).await? {
                set_resource_version(&mut obj, rev);
                return Ok(obj);
            }
            // Changed since read: with a precondition that is a conflict,
            // the next read says which; without, delete what is there now.
        }
    }

    /// Run a transaction about `kind` `name`: its revision if its guards
    /// held, None if not.
    async fn commit(
        &self,
        txn: trellis_store::Txn,
        kind: &Kind,
        name: &str,
    ) -> Result<Option<i64>, ApiError> {
        let r = self
            .store
            .txn(txn)
            .await
            .map_err(|e| ApiError::from_store(e, kind, name))?;
        Ok(r.succeeded.then_some(r.revision))
    }

    /// Whether a claim key (see `services`) is taken.
    pub(crate) async fn claimed(&self, key: &str) -> Result<bool, ApiError> {
        self.store
            .get(key.as_bytes())
            .await
            .map(|kv| kv.is_some())
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }

    /// The claims under `prefix`, as what follows it in their keys.
    pub(crate) async fn claims(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let resp = self
            .store
            .range(RangeRequest::prefix(prefix.as_bytes().to_vec()))
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(prefix.as_bytes()))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect())
    }

    /// The store's current revision.
    pub async fn revision(&self) -> Result<i64, ApiError> {
        self.store
            .revision()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))
    }
}

/// A Service's write lost a race for one of its claims where the caller
/// cannot rerun the allocation.
fn lost_claim(kind: &Kind, name: &str) -> ApiError {
    ApiError::conflict_because(
        kind,
        name,
        "a cluster IP or node port it asks for was just allocated to another service; please try again",
    )
}

/// Set `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, rev: i64) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
}

/// `metadata.resourceVersion` as a number, if set and numeric.
pub fn resource_version(obj: &Value) -> Option<i64> {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
}
