//! Trellis' cluster state store: one contract with etcd's semantics, two backends.
//!
//! Everything Trellis knows about a cluster (pods, nodes, plugins...) lives in a key-value
//! store with etcd's model: global revisions (Kubernetes' `resourceVersion`), reads of a
//! key or prefix at the current or a past revision, compare-and-swap on a key's mod
//! revision, multi-key transactions, and watches that resume from a revision until
//! compaction discards the history they need. The [`Store`] trait is that contract.
//!
//! - [`EmbeddedStore`] is the default: one data directory, durable on acknowledgement,
//!   group commit, in-process watches, periodic compaction.
//! - [`EtcdStore`] talks to a real etcd through `etcd-client`, for clusters of more than
//!   one machine.
//!
//! Both pass the same [`conformance`] suite. [`testing`] starts a throw-away etcd for tests
//! and benchmarks.
//!
//! ```no_run
//! use bytes::Bytes;
//! use trellis_store::{EmbeddedStore, RangeRequest, Store, StoreError};
//!
//! # async fn demo() -> Result<(), StoreError> {
//! let store = EmbeddedStore::open("/var/lib/trellis/store").await?;
//! let rv = store.create(b"/registry/pods/default/web", Bytes::from_static(b"{}")).await?;
//! // Optimistic concurrency: the update only lands if nobody wrote in between.
//! match store.update(b"/registry/pods/default/web", Bytes::from_static(b"{\"x\":1}"), rv).await {
//!     Ok(_) => {}
//!     Err(StoreError::Conflict { current_revision, .. }) => println!("409, now at {current_revision}"),
//!     Err(e) => return Err(e),
//! }
//! let pods = store.range(RangeRequest::prefix("/registry/pods/")).await?;
//! println!("{} pods at revision {}", pods.kvs.len(), pods.revision);
//! # Ok(()) }
//! ```

pub mod conformance;
pub mod embedded;
mod error;
pub mod etcd;
mod store;
pub mod testing;
mod types;

pub use crate::embedded::{EmbeddedConfig, EmbeddedStore};
pub use crate::error::{Result, StoreError};
pub use crate::etcd::EtcdStore;
pub use crate::store::{Store, Watch};
pub use crate::types::{
    prefix_end, Compare, CompareOp, CompareTarget, Event, EventKind, KeyValue, RangeRequest,
    RangeResponse, Txn, TxnOp, TxnOpResult, TxnResponse, WatchRequest, WatchResponse,
    DEFAULT_PROGRESS_INTERVAL, MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
pub use bytes::Bytes;
