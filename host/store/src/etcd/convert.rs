//! Conversions between this crate's types and `etcd-client`'s, and error mapping.

use bytes::Bytes;
use etcd_client::{
    Compare as EtcdCompare, CompareOp as EtcdOp, DeleteOptions, TxnOp as EtcdTxnOp, TxnOpResponse,
};

use crate::error::{Result, StoreError};
use crate::types::{CompareOp, CompareTarget, KeyValue, Txn, TxnOp, TxnOpResult, TxnResponse};

/// What the caller asked for, to fill in errors etcd reports without numbers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorContext {
    pub(crate) revision: i64,
    pub(crate) known_compact: i64,
}

pub(crate) fn from_etcd_kv(kv: etcd_client::KeyValue) -> KeyValue {
    let create_revision = kv.create_revision();
    let mod_revision = kv.mod_revision();
    let version = kv.version();
    let (key, value) = kv.into_key_value();
    KeyValue {
        key: Bytes::from(key),
        value: Bytes::from(value),
        create_revision,
        mod_revision,
        version,
    }
}

fn op(op: CompareOp) -> EtcdOp {
    match op {
        CompareOp::Equal => EtcdOp::Equal,
        CompareOp::NotEqual => EtcdOp::NotEqual,
        CompareOp::Greater => EtcdOp::Greater,
        CompareOp::Less => EtcdOp::Less,
    }
}

pub(crate) fn to_etcd_txn(txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<EtcdCompare> = txn
        .compares
        .iter()
        .map(|c| {
            let key = c.key.to_vec();
            match &c.target {
                CompareTarget::ModRevision(r) => EtcdCompare::mod_revision(key, op(c.op), *r),
                CompareTarget::CreateRevision(r) => EtcdCompare::create_revision(key, op(c.op), *r),
                CompareTarget::Version(v) => EtcdCompare::version(key, op(c.op), *v),
                CompareTarget::Value(v) => EtcdCompare::value(key, op(c.op), v.to_vec()),
            }
        })
        .collect();
    let ops = |ops: &[TxnOp]| -> Vec<EtcdTxnOp> {
        ops.iter()
            .map(|o| match o {
                TxnOp::Get(k) => EtcdTxnOp::get(k.to_vec(), None),
                TxnOp::Put(k, v) => EtcdTxnOp::put(k.to_vec(), v.to_vec(), None),
                TxnOp::Delete(k) => {
                    EtcdTxnOp::delete(k.to_vec(), Some(DeleteOptions::new().with_prev_key()))
                }
            })
            .collect()
    };
    etcd_client::Txn::new()
        .when(compares)
        .and_then(ops(&txn.success))
        .or_else(ops(&txn.failure))
}

pub(crate) fn from_etcd_txn_response(
    txn: &Txn,
    resp: etcd_client::TxnResponse,
) -> Result<TxnResponse> {
    let succeeded = resp.succeeded();
    let revision = resp.header().map_or(0, |h| h.revision());
    let branch = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let answers = resp.op_responses();
    if answers.len() != branch.len() {
        return Err(StoreError::Etcd {
            message: format!(
                "transaction returned {} results for {} operations",
                answers.len(),
                branch.len()
            ),
            source: None,
        });
    }
    let results = answers
        .into_iter()
        .map(|a| match a {
            TxnOpResponse::Get(mut g) => {
                TxnOpResult::Get(g.take_kvs().into_iter().next().map(from_etcd_kv))
            }
            TxnOpResponse::Put(_) => TxnOpResult::Put,
            TxnOpResponse::Delete(mut d) => TxnOpResult::Delete {
                prev: d.take_prev_kvs().into_iter().next().map(from_etcd_kv),
            },
            TxnOpResponse::Txn(_) => TxnOpResult::Put,
        })
        .collect();
    Ok(TxnResponse {
        succeeded,
        revision,
        results,
    })
}

/// Map an `etcd-client` error to a typed one.
///
/// etcd's gRPC errors are distinguished only by their message (etcd's own Go client maps
/// them the same way, in `rpctypes`), so this is the one place that reads message text.
pub(crate) fn map_error(err: etcd_client::Error, ctx: ErrorContext) -> StoreError {
    use tonic::Code;
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            if message.contains("required revision has been compacted") {
                StoreError::Compacted {
                    requested_revision: ctx.revision,
                    compact_revision: ctx.known_compact,
                }
            } else if message.contains("required revision is a future revision") {
                StoreError::FutureRevision {
                    requested_revision: ctx.revision,
                    current_revision: 0,
                }
            } else if message.contains("request is too large") {
                StoreError::invalid(
                    "request larger than etcd's --max-request-bytes; raise it to at least 2 MiB for 1.5 MiB values",
                )
            } else if message.contains("duplicate key given in txn request") {
                StoreError::invalid("a key is written twice in one transaction")
            } else if matches!(
                status.code(),
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
            ) {
                StoreError::Unavailable {
                    reason: format!("etcd: {message}"),
                    source: Some(Box::new(status)),
                }
            } else {
                StoreError::Etcd {
                    message: message.to_string(),
                    source: Some(Box::new(status)),
                }
            }
        }
        e @ (etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_)) => {
            StoreError::Unavailable {
                reason: "etcd is unreachable".into(),
                source: Some(Box::new(e)),
            }
        }
        other => StoreError::Etcd {
            message: other.to_string(),
            source: Some(Box::new(other)),
        },
    }
}
