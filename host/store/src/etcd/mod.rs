//! The etcd backend: the [`Store`] contract mapped directly onto etcd's v3 API through
//! `etcd-client`, for Trellis clusters of more than one machine.
//!
//! Mapping: ranges are etcd ranges (with `limit` and `revision`), transactions are etcd
//! `Txn`s (compare on `ModRevision`/`CreateRevision`/`Version`/`Value`), compaction is a
//! physical `Compact`, and each watch is one etcd watch stream with `prev_kv` and
//! `progress_notify`. etcd reports a compacted watch by creating it and cancelling it with
//! the compact revision; this backend turns that into `Err(Compacted)` on the stream.
//!
//! Sizes: values over [`crate::MAX_VALUE_BYTES`] are refused before sending. etcd's own
//! `--max-request-bytes` (default 1.5 MiB) counts the whole request, so a value of exactly
//! 1.5 MiB needs etcd started with a somewhat larger limit (Trellis' test etcd uses 2 MiB);
//! otherwise etcd answers "request is too large", reported as
//! [`StoreError::InvalidRequest`].

mod convert;
mod watch;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{Client, CompactionOptions, ConnectOptions, GetOptions, KvClient};

use self::convert::{from_etcd_kv, map_error, to_etcd_txn, ErrorContext};
use crate::error::{Result, StoreError};
use crate::store::{Store, Watch};
use crate::types::{RangeRequest, RangeResponse, Txn, TxnOp, TxnResponse, WatchRequest};

/// Largest gRPC response accepted (a range over many large objects).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// A [`Store`] backed by etcd. Cheap to clone: clones share one HTTP/2 connection.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    /// The highest compact revision this handle has performed or observed: etcd's range
    /// errors do not carry it, so `Compacted` from a range reports this (0 if unknown).
    known_compact: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connect to etcd at `endpoints` (e.g. `["http://127.0.0.1:2379"]`).
    ///
    /// Errors: [`StoreError::Unavailable`] when no endpoint answers.
    pub async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Unavailable {
                reason: "cannot connect to etcd".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self::from_client(client))
    }

    /// Use an existing client.
    pub fn from_client(client: Client) -> Self {
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        EtcdStore {
            client,
            kv,
            known_compact: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The underlying client (for benchmarks and tools).
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn ctx(&self, revision: i64) -> ErrorContext {
        ErrorContext {
            revision,
            known_compact: self.known_compact.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn revision(&self) -> Result<i64> {
        // A serializable-free, cheap linearizable read of one (absent) key returns the
        // current revision in its header.
        let resp = self
            .kv
            .clone()
            .get(
                &b"\0trellis/revision-probe"[..],
                Some(GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| map_error(e, self.ctx(0)))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        let mut opts = GetOptions::new();
        if !req.end.is_empty() {
            opts = opts.with_range(req.end.to_vec());
        }
        if req.limit > 0 {
            opts = opts.with_limit(req.limit as i64);
        }
        if req.revision > 0 {
            opts = opts.with_revision(req.revision);
        }
        let mut resp = self
            .kv
            .clone()
            .get(req.start.to_vec(), Some(opts))
            .await
            .map_err(|e| map_error(e, self.ctx(req.revision)))?;
        let header_revision = resp.header().map_or(0, |h| h.revision());
        let more = resp.more();
        let kvs = resp.take_kvs().into_iter().map(from_etcd_kv).collect();
        Ok(RangeResponse {
            kvs,
            more,
            revision: if req.revision > 0 {
                req.revision
            } else {
                header_revision
            },
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        txn.validate()?;
        let etcd_txn = to_etcd_txn(&txn);
        let resp = self
            .kv
            .clone()
            .txn(etcd_txn)
            .await
            .map_err(|e| map_error(e, self.ctx(0)))?;
        convert::from_etcd_txn_response(&txn, resp)
    }

    async fn watch(&self, req: WatchRequest) -> Result<Watch> {
        crate::types::validate_key(&req.start)?;
        watch::start(self.client.watch_client(), req, self.known_compact.clone()).await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.kv
            .clone()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| map_error(e, self.ctx(revision)))?;
        self.known_compact.fetch_max(revision, Ordering::Relaxed);
        Ok(())
    }

    /// A plain etcd `Put` (cheaper than a one-operation `Txn`).
    async fn put(&self, key: &[u8], value: Bytes) -> Result<i64> {
        let key = Bytes::copy_from_slice(key);
        Txn::new()
            .and_then([TxnOp::Put(key.clone(), value.clone())])
            .validate()?;
        let resp = self
            .kv
            .clone()
            .put(key.to_vec(), value.to_vec(), None)
            .await
            .map_err(|e| map_error(e, self.ctx(0)))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }
}
