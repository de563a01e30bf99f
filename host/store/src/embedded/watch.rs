//! In-process watch fan-out.
//!
//! Each watch is a small task that *pulls* from the shared per-revision event log: it
//! reads the events after its cursor (under a short read lock), sends them into its own
//! bounded channel (waiting for the consumer if the channel is full), and sleeps on a
//! revision notification once caught up. Writers only bump that notification, so a slow
//! consumer never blocks writers or other watches and costs no memory beyond the shared
//! history. A watch that falls so far behind that compaction removes the revisions it has
//! not read yet gets [`StoreError::Compacted`] and ends, exactly like an etcd watcher
//! overtaken by compaction: the consumer re-lists and watches again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::commit::read;
use super::index::State;
use crate::error::StoreError;
use crate::store::Watch;
use crate::types::{WatchRequest, WatchResponse, WATCH_CHANNEL_CAPACITY};

/// Most events per response (whole revisions are never split, so it can be exceeded by
/// one transaction).
const MAX_EVENTS_PER_RESPONSE: usize = 256;

pub(crate) fn spawn(
    state: Arc<RwLock<State>>,
    mut revisions: watch::Receiver<i64>,
    req: WatchRequest,
    progress_interval: Duration,
) -> Watch {
    let (tx, rx) = mpsc::channel(WATCH_CHANNEL_CAPACITY);
    let (progress_tx, mut progress_rx) = mpsc::channel(4);
    revisions.borrow_and_update();
    let mut cursor = if req.start_revision > 0 {
        req.start_revision
    } else {
        read(&state).revision + 1
    };
    tokio::spawn(async move {
        let mut ticker = req.progress_notify.then(|| {
            let mut t = tokio::time::interval(progress_interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t.reset();
            t
        });
        let mut progress_wanted = false;
        loop {
            revisions.borrow_and_update();
            let collected = read(&state).collect(cursor, &req, MAX_EVENTS_PER_RESPONSE);
            let (events, next, caught_up) = match collected {
                Ok((events, next)) => {
                    let caught_up = next > *revisions.borrow();
                    (events, next, caught_up)
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            cursor = next;
            if !events.is_empty() && tx.send(Ok(WatchResponse::Events(events))).await.is_err() {
                return;
            }
            if !caught_up {
                continue;
            }
            if progress_wanted {
                progress_wanted = false;
                let progress = WatchResponse::Progress {
                    revision: cursor - 1,
                };
                if tx.send(Ok(progress)).await.is_err() {
                    return;
                }
            }
            let tick = async {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        let _ = tx.send(Err(StoreError::unavailable("the store was closed"))).await;
                        return;
                    }
                }
                request = progress_rx.recv() => match request {
                    Some(()) => progress_wanted = true,
                    None => return,
                },
                () = tick => progress_wanted = true,
                () = tx.closed() => return,
            }
        }
    });
    Watch::new(rx, progress_tx)
}
