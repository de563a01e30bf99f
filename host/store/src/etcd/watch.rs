//! etcd watches: one etcd watch stream per [`Watch`], forwarded by a small task.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use etcd_client::{EventType, WatchClient, WatchOptions};
use tokio::sync::mpsc;

use super::convert::{from_etcd_kv, map_error, ErrorContext};
use crate::error::{Result, StoreError};
use crate::store::Watch;
use crate::types::{Event, EventKind, WatchRequest, WatchResponse, WATCH_CHANNEL_CAPACITY};

pub(crate) async fn start(
    mut client: WatchClient,
    req: WatchRequest,
    known_compact: Arc<AtomicI64>,
) -> Result<Watch> {
    let ctx = ErrorContext {
        revision: req.start_revision,
        known_compact: known_compact.load(Ordering::Relaxed),
    };
    let mut opts = WatchOptions::new();
    if !req.end.is_empty() {
        opts = opts.with_range(req.end.to_vec());
    }
    if req.start_revision > 0 {
        opts = opts.with_start_revision(req.start_revision);
    }
    if req.prev_kv {
        opts = opts.with_prev_key();
    }
    if req.progress_notify {
        opts = opts.with_progress_notify();
    }
    let stream = client
        .watch(req.start.to_vec(), Some(opts))
        .await
        .map_err(|e| map_error(e, ctx))?;
    let (mut requests, mut responses) = stream.split();
    // Wait until etcd has registered the watch, so that a write made after this call
    // returns is always seen by a watch "from now".
    let first = responses
        .message()
        .await
        .map_err(|e| map_error(e, ctx))?
        .ok_or_else(|| StoreError::unavailable("etcd closed the watch stream"))?;

    let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
    let (progress_tx, mut progress_rx) = mpsc::channel::<()>(4);
    tokio::spawn(async move {
        let mut pending = Some(first);
        loop {
            let resp = match pending.take() {
                Some(r) => r,
                None => tokio::select! {
                    msg = responses.message() => match msg {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            let _ = tx.send(Err(StoreError::unavailable("etcd closed the watch stream"))).await;
                            return;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(map_error(e, ctx))).await;
                            return;
                        }
                    },
                    request = progress_rx.recv() => {
                        match request {
                            Some(()) => {
                                if let Err(e) = requests.request_progress().await {
                                    let _ = tx.send(Err(map_error(e, ctx))).await;
                                    return;
                                }
                            }
                            None => return,
                        }
                        continue;
                    }
                    () = tx.closed() => return,
                },
            };
            if resp.canceled() {
                let compact_revision = resp.compact_revision();
                let err = if compact_revision > 0 {
                    known_compact.fetch_max(compact_revision, Ordering::Relaxed);
                    StoreError::Compacted {
                        requested_revision: req.start_revision,
                        compact_revision,
                    }
                } else {
                    StoreError::unavailable(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    ))
                };
                let _ = tx.send(Err(err)).await;
                return;
            }
            let item = if resp.events().is_empty() {
                if resp.created() {
                    continue;
                }
                WatchResponse::Progress {
                    revision: resp.header().map_or(0, |h| h.revision()),
                }
            } else {
                WatchResponse::Events(
                    resp.events()
                        .iter()
                        .filter_map(|e| {
                            let kv = from_etcd_kv(e.kv()?.clone());
                            Some(Event {
                                kind: match e.event_type() {
                                    EventType::Put => EventKind::Put,
                                    EventType::Delete => EventKind::Delete,
                                },
                                kv,
                                prev_kv: if req.prev_kv {
                                    e.prev_kv().cloned().map(from_etcd_kv)
                                } else {
                                    None
                                },
                            })
                        })
                        .collect(),
                )
            };
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    Ok(Watch::new(rx, progress_tx))
}
