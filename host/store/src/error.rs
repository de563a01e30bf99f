//! The one error type every backend returns.
//!
//! Variants are chosen so the API server can map them to HTTP without looking at text:
//! [`StoreError::http_status`] gives the code, and each variant carries the data the
//! Kubernetes `Status` needs (the key, the current object for a 409, the compact revision
//! for a 410, the sizes for a 413).

use std::path::PathBuf;

use bytes::Bytes;

use crate::types::KeyValue;

/// Result alias used throughout the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A compare-and-swap or conditional delete lost: the key's mod revision is not the
    /// expected one. Carries the current revision (and value) so the caller can retry
    /// without another read. Maps to 409 Conflict.
    #[error(
        "conflict on key {}: expected mod revision {expected_revision}, current mod revision is {current_revision}",
        show_key(key)
    )]
    Conflict {
        /// The key that was compared.
        key: Bytes,
        /// The mod revision the caller expected.
        expected_revision: i64,
        /// The key's mod revision at the time the comparison failed.
        current_revision: i64,
        /// The key's value at that revision, so the caller can retry without a read.
        current: Option<Box<KeyValue>>,
    },

    /// Create-if-absent found the key present. Maps to 409 Conflict (reason AlreadyExists).
    #[error("key {} already exists (mod revision {})", show_key(key), current.mod_revision)]
    AlreadyExists {
        /// The key that was to be created.
        key: Bytes,
        /// What the key holds now.
        current: Box<KeyValue>,
    },

    /// The key does not exist (update or delete of an absent key). Maps to 404 Not Found.
    #[error("key {} not found", show_key(key))]
    NotFound {
        /// The missing key.
        key: Bytes,
    },

    /// The requested revision is older than the store's compaction point; history before it
    /// is gone. For a watch, the caller must re-list and watch from the new list's revision.
    /// Maps to 410 Gone (reason Expired).
    #[error(
        "revision {requested_revision} has been compacted (compact revision is {compact_revision}); re-list and watch from a newer revision"
    )]
    Compacted {
        /// The revision the caller asked for (0 if the backend did not report it).
        requested_revision: i64,
        /// The store's compaction point: reads at revisions `>= compact_revision` and
        /// watches starting at revisions `>= compact_revision` still work.
        compact_revision: i64,
    },

    /// The requested revision is newer than the store's current revision.
    /// Kubernetes answers this with 504 "Too large resource version".
    #[error(
        "revision {requested_revision} is in the future (current revision is {current_revision})"
    )]
    FutureRevision {
        /// The revision the caller asked for.
        requested_revision: i64,
        /// The store's current revision (0 if the backend did not report it).
        current_revision: i64,
    },

    /// A value is larger than the store accepts. Maps to 413 Request Entity Too Large.
    #[error(
        "value for key {} is {size} bytes, larger than the {limit}-byte limit; store large data outside the object (e.g. split it) and retry",
        show_key(key)
    )]
    ValueTooLarge {
        /// The key being written.
        key: Bytes,
        /// The value's size in bytes.
        size: usize,
        /// The limit in bytes ([`crate::MAX_VALUE_BYTES`]).
        limit: usize,
    },

    /// The request is malformed (empty key, the same key written twice in one transaction,
    /// a non-positive expected revision...). Maps to 400 Bad Request.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong, in words a user can act on.
        reason: String,
    },

    /// A data file is damaged: a record whose checksum does not match in the middle of the
    /// log, or a record that cannot be decoded. The store refuses to open rather than
    /// silently drop acknowledged writes.
    #[error("data file {path} is corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What was found there.
        reason: String,
    },

    /// A data file was not written by this store (wrong magic) or by a newer format version.
    #[error("data file {path} is not a trellis store file: {reason}")]
    Foreign {
        /// The file that was recognised as foreign.
        path: PathBuf,
        /// Why (e.g. the magic bytes found).
        reason: String,
    },

    /// Another process (or another handle in this process) holds the data directory.
    #[error("data directory {path} is in use by another store instance")]
    Locked {
        /// The locked directory.
        path: PathBuf,
    },

    /// Reading or writing a data file failed.
    #[error("i/o error on {path}")]
    Io {
        /// The file or directory being accessed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The store cannot serve requests right now: etcd is unreachable, the embedded store
    /// was closed, or a failed fsync made the embedded store stop accepting writes.
    /// Retry later (or, for a failed fsync, restart). Maps to 503 Service Unavailable.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// What happened.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// etcd answered with an error this crate has no specific variant for.
    #[error("etcd error: {message}")]
    Etcd {
        /// etcd's message.
        message: String,
        /// The client error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// The HTTP status code the API server should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            StoreError::Conflict { .. } | StoreError::AlreadyExists { .. } => 409,
            StoreError::NotFound { .. } => 404,
            StoreError::Compacted { .. } => 410,
            StoreError::FutureRevision { .. } => 504,
            StoreError::ValueTooLarge { .. } => 413,
            StoreError::InvalidRequest { .. } => 400,
            StoreError::Unavailable { .. } => 503,
            StoreError::Corrupt { .. }
            | StoreError::Foreign { .. }
            | StoreError::Locked { .. }
            | StoreError::Io { .. }
            | StoreError::Etcd { .. } => 500,
        }
    }

    /// Whether retrying the same request later may succeed (the store was unreachable).
    /// Conflicts are not "retryable" in this sense: the caller must re-read first.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        StoreError::InvalidRequest {
            reason: reason.into(),
        }
    }

    pub(crate) fn unavailable(reason: impl Into<String>) -> Self {
        StoreError::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Render a key for messages: UTF-8 keys (all Kubernetes keys) as text, others escaped.
pub(crate) fn show_key(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}
