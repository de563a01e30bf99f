//! The [`Store`] trait: the one contract both backends implement.

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::error::{Result, StoreError};
use crate::types::{
    Compare, CompareOp, KeyValue, RangeRequest, RangeResponse, Txn, TxnOp, TxnOpResult,
    TxnResponse, WatchRequest, WatchResponse,
};

/// A key-value store with etcd's semantics.
///
/// Revisions are global and start at 1 on an empty store; every transaction that writes
/// something gets the next revision, shared by all its writes. A key's `mod_revision` is
/// Kubernetes' `resourceVersion`.
///
/// Backends implement the five required methods; the Kubernetes-shaped helpers (`create`,
/// `update`, `delete`...) are provided on top of [`Store::txn`] so both backends share
/// their exact semantics.
#[async_trait]
pub trait Store: Send + Sync {
    /// The store's current revision.
    async fn revision(&self) -> Result<i64>;

    /// Read one key or a prefix, paged, at the current or a past revision.
    ///
    /// Errors: [`StoreError::Compacted`] below the compact revision,
    /// [`StoreError::FutureRevision`] above the current one.
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// Run an atomic multi-key transaction. Returns once the result is durable.
    ///
    /// Errors: [`StoreError::ValueTooLarge`], [`StoreError::InvalidRequest`] (see
    /// [`Txn::validate`]); a failed guard is not an error (`succeeded == false`).
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Watch a key or range from a revision.
    ///
    /// Errors are delivered on the stream (never by this call for a start revision): the
    /// first item is `Err(`[`StoreError::Compacted`]`)` when the start revision has been
    /// compacted, or later if the watcher fell so far behind that compaction overtook it.
    /// A slow watcher never blocks writers or other watchers: it is served from history
    /// (at its own pace) until it catches up. After an error the stream ends; resume with
    /// a new watch from the last delivered revision + 1 (or re-list after `Compacted`).
    async fn watch(&self, req: WatchRequest) -> Result<Watch>;

    /// Discard history before `revision`: afterwards reads at revisions `< revision` and
    /// watches starting below it fail with [`StoreError::Compacted`].
    ///
    /// Errors: [`StoreError::Compacted`] if `revision` is at or below the current compact
    /// revision, [`StoreError::FutureRevision`] if it is above the current revision.
    async fn compact(&self, revision: i64) -> Result<()>;

    /// Read one key at the current revision.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let mut resp = self
            .range(RangeRequest::key(Bytes::copy_from_slice(key)))
            .await?;
        Ok(resp.kvs.pop())
    }

    /// Write a key unconditionally; returns the write's revision.
    async fn put(&self, key: &[u8], value: Bytes) -> Result<i64> {
        let txn = Txn::new().and_then([TxnOp::Put(Bytes::copy_from_slice(key), value)]);
        Ok(self.txn(txn).await?.revision)
    }

    /// Create a key that must not exist; returns the new revision.
    ///
    /// Errors: [`StoreError::AlreadyExists`] carrying what the key holds.
    async fn create(&self, key: &[u8], value: Bytes) -> Result<i64> {
        let key = Bytes::copy_from_slice(key);
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([TxnOp::Put(key.clone(), value)])
            .or_else([TxnOp::Get(key.clone())]);
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        match resp.results.into_iter().next() {
            Some(TxnOpResult::Get(Some(current))) => Err(StoreError::AlreadyExists {
                key,
                current: Box::new(current),
            }),
            _ => Err(inconsistent("create")),
        }
    }

    /// Compare-and-swap: write `value` only if the key's mod revision is
    /// `expected_revision`; returns the new revision.
    ///
    /// Errors: [`StoreError::Conflict`] (with the current revision and value) when the key
    /// changed, [`StoreError::NotFound`] when it is absent.
    async fn update(&self, key: &[u8], value: Bytes, expected_revision: i64) -> Result<i64> {
        check_expected(expected_revision)?;
        let key = Bytes::copy_from_slice(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                expected_revision,
            )])
            .and_then([TxnOp::Put(key.clone(), value)])
            .or_else([TxnOp::Get(key.clone())]);
        let resp = self.txn(txn).await?;
        if resp.succeeded {
            return Ok(resp.revision);
        }
        Err(lost(key, expected_revision, resp.results))
    }

    /// Delete a key, only if its mod revision is `expected_revision` when given; returns
    /// the delete's revision and the deleted key-value.
    ///
    /// Errors: [`StoreError::NotFound`], [`StoreError::Conflict`].
    async fn delete(&self, key: &[u8], expected_revision: Option<i64>) -> Result<(i64, KeyValue)> {
        let key = Bytes::copy_from_slice(key);
        let mut txn = Txn::new().and_then([TxnOp::Delete(key.clone())]);
        if let Some(expected) = expected_revision {
            check_expected(expected)?;
            txn = txn
                .when([Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    expected,
                )])
                .or_else([TxnOp::Get(key.clone())]);
        }
        let resp = self.txn(txn).await?;
        if !resp.succeeded {
            return Err(lost(key, expected_revision.unwrap_or(0), resp.results));
        }
        match resp.results.into_iter().next() {
            Some(TxnOpResult::Delete { prev: Some(prev) }) => Ok((resp.revision, prev)),
            Some(TxnOpResult::Delete { prev: None }) => Err(StoreError::NotFound { key }),
            _ => Err(inconsistent("delete")),
        }
    }
}

fn check_expected(expected: i64) -> Result<()> {
    if expected <= 0 {
        return Err(StoreError::invalid(format!(
            "expected revision must be positive, got {expected} (use create for absent keys)"
        )));
    }
    Ok(())
}

/// Turn the failure branch's `Get` into the precise error.
fn lost(key: Bytes, expected_revision: i64, results: Vec<TxnOpResult>) -> StoreError {
    match results.into_iter().next() {
        Some(TxnOpResult::Get(Some(current))) => StoreError::Conflict {
            key,
            expected_revision,
            current_revision: current.mod_revision,
            current: Some(Box::new(current)),
        },
        Some(TxnOpResult::Get(None)) => StoreError::NotFound { key },
        _ => inconsistent("compare-and-swap"),
    }
}

fn inconsistent(what: &str) -> StoreError {
    StoreError::Etcd {
        message: format!("{what}: transaction answer does not match the request"),
        source: None,
    }
}

/// A running watch: a stream of [`WatchResponse`]s.
///
/// Dropping it cancels the watch. After an `Err` item the stream ends.
#[derive(Debug)]
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchResponse>>,
    progress: mpsc::Sender<()>,
    ended: bool,
}

impl Watch {
    /// Build a watch from the channel a backend feeds and the channel it reads progress
    /// requests from.
    pub(crate) fn new(
        rx: mpsc::Receiver<Result<WatchResponse>>,
        progress: mpsc::Sender<()>,
    ) -> Self {
        Watch {
            rx,
            progress,
            ended: false,
        }
    }

    /// The next item; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<WatchResponse>> {
        if self.ended {
            return None;
        }
        let item = self.rx.recv().await;
        if !matches!(item, Some(Ok(_))) {
            self.ended = true;
        }
        item
    }

    /// Ask for a [`WatchResponse::Progress`] as soon as the watch has delivered everything
    /// up to the store's current revision.
    pub async fn request_progress(&self) -> Result<()> {
        self.progress
            .send(())
            .await
            .map_err(|_| StoreError::unavailable("the watch has ended"))
    }
}
