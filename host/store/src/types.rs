//! Plain data types of the store contract: key-values, ranges, transactions, watch events.
//!
//! They mirror etcd's v3 API closely (so the etcd backend is a direct mapping) while
//! leaving out what Trellis does not use (leases, sort orders, range deletes).

use std::time::Duration;

use bytes::Bytes;

use crate::error::{Result, StoreError};

/// Largest value the store accepts, in bytes: 1.5 MiB, etcd's default request limit and
/// the object size limit Kubernetes users know. Both backends refuse larger values with
/// [`StoreError::ValueTooLarge`] before sending anything.
pub const MAX_VALUE_BYTES: usize = 1_572_864;

/// Largest key the store accepts, in bytes. Kubernetes keys are far shorter; the limit
/// only keeps a bad caller from bloating the index.
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// One key with its value and etcd's per-key metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: Bytes,
    /// The value (for a delete event: empty).
    pub value: Bytes,
    /// Revision of the write that created the key (since its last deletion).
    pub create_revision: i64,
    /// Revision of the last write to the key: Kubernetes' `resourceVersion`.
    pub mod_revision: i64,
    /// Number of writes since creation (1 after create; reset by delete).
    pub version: i64,
}

/// A read of one key or of all keys under a prefix, optionally paged and at a past revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeRequest {
    /// First key (inclusive).
    pub start: Bytes,
    /// End key (exclusive). Empty means "only `start`".
    pub end: Bytes,
    /// At most this many keys (0 = no limit).
    pub limit: usize,
    /// Read at this revision (0 = current). Must be `>=` the compact revision.
    pub revision: i64,
}

impl RangeRequest {
    /// All keys starting with `prefix`, in key order.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        RangeRequest {
            start,
            end,
            limit: 0,
            revision: 0,
        }
    }

    /// Exactly one key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        RangeRequest {
            start: key.into(),
            end: Bytes::new(),
            limit: 0,
            revision: 0,
        }
    }

    /// Return at most `limit` keys; [`RangeResponse::continue_key`] gives the next page.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Read at a past revision (what a Kubernetes `continue` token pins).
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// Resume a paged read: start at `key` (inclusive), usually a previous page's
    /// [`RangeResponse::continue_key`].
    pub fn continue_from(mut self, key: impl Into<Bytes>) -> Self {
        self.start = key.into();
        self
    }

    /// Whether `key` falls in this range.
    pub fn contains(&self, key: &[u8]) -> bool {
        range_contains(&self.start, &self.end, key)
    }
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeResponse {
    /// Matching keys in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether more keys matched than `limit` allowed.
    pub more: bool,
    /// The revision the read was served at: pass it back with
    /// [`RangeRequest::at_revision`] to read the next page consistently.
    pub revision: i64,
}

impl RangeResponse {
    /// Where the next page starts (`last key + \0`), if there is one.
    pub fn continue_key(&self) -> Option<Bytes> {
        if !self.more {
            return None;
        }
        self.kvs.last().map(|kv| {
            let mut next = kv.key.to_vec();
            next.push(0);
            Bytes::from(next)
        })
    }
}

/// What a [`Compare`] looks at, with the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision (0 when absent).
    ModRevision(i64),
    /// The key's create revision (0 when absent): `CreateRevision(0) == ` means "absent".
    CreateRevision(i64),
    /// The key's version (0 when absent).
    Version(i64),
    /// The key's value. A comparison on the value of an absent key is false.
    Value(Bytes),
}

/// How a [`Compare`] compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
    /// `>` (the key's field is greater than the operand)
    Greater,
    /// `<`
    Less,
}

/// A guard in a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key whose field is compared.
    pub key: Bytes,
    /// The comparison.
    pub op: CompareOp,
    /// The field and the operand.
    pub target: CompareTarget,
}

impl Compare {
    /// `mod_revision(key) == revision`: the compare-and-swap guard.
    pub fn mod_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        Compare {
            key: key.into(),
            op,
            target: CompareTarget::ModRevision(revision),
        }
    }

    /// `create_revision(key) == 0`: the create-if-absent guard.
    pub fn absent(key: impl Into<Bytes>) -> Self {
        Compare {
            key: key.into(),
            op: CompareOp::Equal,
            target: CompareTarget::CreateRevision(0),
        }
    }

    /// Evaluate against the key's current state (`None` = absent), with etcd's rules.
    pub fn matches(&self, current: Option<&KeyValue>) -> bool {
        use std::cmp::Ordering;
        let ord: Ordering = match (&self.target, current) {
            (CompareTarget::Value(_), None) => return false,
            (CompareTarget::Value(v), Some(kv)) => kv.value.as_ref().cmp(v.as_ref()),
            (CompareTarget::ModRevision(r), kv) => kv.map_or(0, |k| k.mod_revision).cmp(r),
            (CompareTarget::CreateRevision(r), kv) => kv.map_or(0, |k| k.create_revision).cmp(r),
            (CompareTarget::Version(r), kv) => kv.map_or(0, |k| k.version).cmp(r),
        };
        match self.op {
            CompareOp::Equal => ord == Ordering::Equal,
            CompareOp::NotEqual => ord != Ordering::Equal,
            CompareOp::Greater => ord == Ordering::Greater,
            CompareOp::Less => ord == Ordering::Less,
        }
    }
}

/// One operation in a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOp {
    /// Read one key.
    Get(Bytes),
    /// Write one key.
    Put(Bytes, Bytes),
    /// Delete one key (a no-op if absent).
    Delete(Bytes),
}

impl TxnOp {
    fn write_key(&self) -> Option<&Bytes> {
        match self {
            TxnOp::Get(_) => None,
            TxnOp::Put(k, _) | TxnOp::Delete(k) => Some(k),
        }
    }
}

/// An atomic multi-key transaction: if every compare holds, run `success`, else `failure`.
/// All writes of the executed branch share one new revision; a branch that writes nothing
/// does not advance the revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Guards, all of which must hold.
    pub compares: Vec<Compare>,
    /// Run when every guard holds.
    pub success: Vec<TxnOp>,
    /// Run otherwise.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Txn::default()
    }

    /// Add guards.
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.compares.extend(compares);
        self
    }

    /// Operations for when the guards hold.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.success.extend(ops);
        self
    }

    /// Operations for when a guard fails.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.failure.extend(ops);
        self
    }

    /// Check the limits every backend enforces the same way, before any I/O: key and value
    /// sizes, empty keys, and no key written twice in one branch (etcd refuses that too).
    pub fn validate(&self) -> Result<()> {
        for c in &self.compares {
            validate_key(&c.key)?;
        }
        for branch in [&self.success, &self.failure] {
            let mut written: Vec<&Bytes> = Vec::new();
            for op in branch {
                match op {
                    TxnOp::Get(k) | TxnOp::Delete(k) => validate_key(k)?,
                    TxnOp::Put(k, v) => {
                        validate_key(k)?;
                        validate_value(k, v)?;
                    }
                }
                if let Some(k) = op.write_key() {
                    if written.contains(&k) {
                        return Err(StoreError::invalid(format!(
                            "key {} is written twice in one transaction",
                            crate::error::show_key(k)
                        )));
                    }
                    written.push(k);
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn validate_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::invalid("empty key"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::invalid(format!(
            "key is {} bytes, longer than the {MAX_KEY_BYTES}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

pub(crate) fn validate_value(key: &Bytes, value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(StoreError::ValueTooLarge {
            key: key.clone(),
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// The result of one [`TxnOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnOpResult {
    /// The key read, if present.
    Get(Option<KeyValue>),
    /// A put happened (its revision is [`TxnResponse::revision`]).
    Put,
    /// A delete ran; `prev` is what was deleted (`None`: the key was absent).
    Delete {
        /// The deleted key-value.
        prev: Option<KeyValue>,
    },
}

/// The answer to a [`Txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// Whether the guards held (so `success` ran).
    pub succeeded: bool,
    /// The store revision after the transaction: its own revision if it wrote anything.
    pub revision: i64,
    /// One result per operation of the branch that ran.
    pub results: Vec<TxnOpResult>,
}

/// What a watch looks at and from where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// First key (inclusive).
    pub start: Bytes,
    /// End key (exclusive); empty means "only `start`".
    pub end: Bytes,
    /// Deliver events from this revision on (0 = only future events). Kubernetes'
    /// "watch from resourceVersion R" is `start_revision = R + 1`.
    pub start_revision: i64,
    /// Attach the previous key-value to each event.
    pub prev_kv: bool,
    /// Ask for periodic [`WatchResponse::Progress`] when nothing happens (the interval is
    /// the backend's: [`crate::embedded::EmbeddedConfig::progress_interval`], etcd's
    /// `--experimental-watch-progress-notify-interval`). Progress on request works
    /// regardless, see [`crate::Watch::request_progress`].
    pub progress_notify: bool,
}

impl WatchRequest {
    /// Watch every key under `prefix`.
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        WatchRequest {
            start,
            end,
            start_revision: 0,
            prev_kv: false,
            progress_notify: false,
        }
    }

    /// Watch one key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        WatchRequest {
            start: key.into(),
            end: Bytes::new(),
            start_revision: 0,
            prev_kv: false,
            progress_notify: false,
        }
    }

    /// Start at `revision` (inclusive), replaying history.
    pub fn from_revision(mut self, revision: i64) -> Self {
        self.start_revision = revision;
        self
    }

    /// Attach previous values to events.
    pub fn with_prev_kv(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    /// Receive periodic progress notifications.
    pub fn with_progress_notify(mut self) -> Self {
        self.progress_notify = true;
        self
    }

    /// Whether `key` falls in the watched range.
    pub fn contains(&self, key: &[u8]) -> bool {
        range_contains(&self.start, &self.end, key)
    }
}

/// Put or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key-value after the change. For a delete: the key, an empty value, the
    /// delete's revision as `mod_revision`, and zero `create_revision` and `version`.
    pub kv: KeyValue,
    /// The key-value before the change, when the watch asked for it and there was one.
    pub prev_kv: Option<KeyValue>,
}

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchResponse {
    /// Events in revision order. Events of one revision (one transaction) are never split
    /// across two responses.
    Events(Vec<Event>),
    /// Every event up to `revision` has been delivered: resuming from `revision + 1` loses
    /// nothing (a Kubernetes bookmark).
    Progress {
        /// The revision the watch has caught up to.
        revision: i64,
    },
}

/// Tunables shared by backends for watches.
pub(crate) const WATCH_CHANNEL_CAPACITY: usize = 64;

/// Default interval of periodic progress notifications.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(60);

/// The smallest key greater than every key starting with `prefix` (etcd's `prefix_end`).
/// An empty result means "no upper bound".
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // All bytes 0xff (or empty prefix): everything from `prefix` on. etcd spells this "\0".
    Bytes::from_static(b"\0")
}

/// Whether `key` lies in `[start, end)`, with etcd's conventions: an empty `end` means
/// "just `start`", an `end` of `"\0"` means "no upper bound".
pub(crate) fn range_contains(start: &[u8], end: &[u8], key: &[u8]) -> bool {
    if end.is_empty() {
        return key == start;
    }
    key >= start && (end == b"\0" || key < end)
}
