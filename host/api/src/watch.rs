//! Watch streams: one JSON event per chunk (`{"type": "ADDED", "object": ...}`),
//! from a resource version or from a synthetic listing of the current state,
//! with label and field selectors (an object leaving the selection is DELETED,
//! one entering it ADDED), bookmarks, a timeout, and a 410 ERROR event once the
//! requested history is compacted.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use trellis_store::{EventKind, StoreError, WatchRequest, WatchResponse};

use crate::error::ApiError;
use crate::handlers::{list_options, Render};
use crate::http::Query;
use crate::registry::Kind;
use crate::storage::{ListOptions, Objects};
use crate::util::now_unix;

/// How often bookmarks are sent when asked for (upstream: about once a minute).
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(30);

fn matches(opts: &ListOptions, obj: &Value) -> bool {
    opts.labels.as_ref().is_none_or(|s| s.matches_object(obj))
        && opts.fields.as_ref().is_none_or(|s| s.matches(obj))
}

struct Sink {
    tx: mpsc::Sender<Bytes>,
    table: bool,
    kind: &'static Kind,
}

impl Sink {
    async fn send(&self, ty: &str, obj: Value) -> bool {
        let obj = if self.table && ty != "ERROR" && ty != "BOOKMARK" {
            let rv = obj["metadata"]["resourceVersion"].clone();
            crate::table::table(
                self.kind,
                &[obj],
                now_unix(),
                crate::table::IncludeObject::Metadata,
                json!({"resourceVersion": rv}),
            )
        } else {
            obj
        };
        let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).expect("serializes");
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }
}

/// Run one watch into `tx` until the client goes, the timeout passes, or the
/// server shuts down.
pub async fn run(
    objects: Objects,
    kind: &'static Kind,
    namespace: String,
    q: Query,
    accept: String,
    tx: mpsc::Sender<Bytes>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let render = Render {
        accept: &accept,
        query: &q,
    };
    let sink = Sink {
        tx,
        table: render_table(&render),
        kind,
    };
    let opts = match list_options(kind, &q) {
        Ok(o) => ListOptions {
            limit: 0,
            continue_token: None,
            exact_revision: None,
            ..o
        },
        Err(e) => {
            sink.send("ERROR", e.to_status()).await;
            return;
        }
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let timeout = q
        .non_empty("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let deadline = tokio::time::Instant::now() + timeout;

    // Where to start: after the given version, or with the current state as ADDED events.
    let start = match q.non_empty("resourceVersion").filter(|rv| *rv != "0") {
        Some(rv) => match rv.parse::<i64>() {
            Ok(rv) => rv + 1,
            Err(_) => {
                sink.send(
                    "ERROR",
                    ApiError::bad_request(format!("resourceVersion {rv:?} is not a number"))
                        .to_status(),
                )
                .await;
                return;
            }
        },
        None => {
            let page = match objects.list(kind, &namespace, &opts).await {
                Ok(p) => p,
                Err(e) => {
                    sink.send("ERROR", e.to_status()).await;
                    return;
                }
            };
            for obj in page.items {
                if !sink.send("ADDED", obj).await {
                    return;
                }
            }
            page.revision + 1
        }
    };
    let prefix = kind.store_namespace_prefix(&namespace);
    let req = WatchRequest::prefix(prefix.into_bytes())
        .from_revision(start)
        .with_prev_kv()
        .with_progress_notify();
    let mut watch = match objects.store().watch(req).await {
        Ok(w) => w,
        Err(e) => {
            sink.send("ERROR", watch_error(e, kind).to_status()).await;
            return;
        }
    };
    let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
    ticker.tick().await;
    let mut last_rev = start - 1;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = shutdown.changed() => return,
            _ = sink.tx.closed() => return,
            _ = ticker.tick(), if bookmarks => {
                let _ = watch.request_progress().await;
            }
            item = watch.next() => {
                let Some(item) = item else { return };
                match item {
                    Err(e) => {
                        sink.send("ERROR", watch_error(e, kind).to_status()).await;
                        return;
                    }
                    Ok(WatchResponse::Progress { revision }) => {
                        last_rev = last_rev.max(revision);
                        if bookmarks {
                            let b = json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": {"resourceVersion": last_rev.to_string()}});
                            if !sink.send("BOOKMARK", b).await {
                                return;
                            }
                        }
                    }
                    Ok(WatchResponse::Events(events)) => {
                        for ev in events {
                            last_rev = last_rev.max(ev.kv.mod_revision);
                            let prev = ev.prev_kv.as_ref().and_then(|p| Objects::decode(p).ok());
                            let (ty, obj) = match ev.kind {
                                EventKind::Delete => match prev {
                                    Some(mut p) => {
                                        crate::storage::set_resource_version(&mut p, ev.kv.mod_revision);
                                        if !matches(&opts, &p) {
                                            continue;
                                        }
                                        ("DELETED", p)
                                    }
                                    None => continue,
                                },
                                EventKind::Put => {
                                    let Ok(obj) = Objects::decode(&ev.kv) else { continue };
                                    let now = matches(&opts, &obj);
                                    let before = prev.as_ref().is_some_and(|p| matches(&opts, p));
                                    match (prev.is_some(), before, now) {
                                        (_, false, false) => continue,
                                        (false, _, true) | (true, false, true) => ("ADDED", obj),
                                        (true, true, true) => ("MODIFIED", obj),
                                        (true, true, false) => ("DELETED", obj),
                                        (false, true, false) => continue,
                                    }
                                }
                            };
                            if !sink.send(ty, obj).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

fn render_table(r: &Render<'_>) -> bool {
    crate::table::is_table_request(r.accept)
}

fn watch_error(e: StoreError, kind: &Kind) -> ApiError {
    match e {
        StoreError::Compacted {
            requested_revision,
            compact_revision,
        } => ApiError::gone(format!(
            "too old resource version: {} ({compact_revision})",
            requested_revision.saturating_sub(1)
        )),
        other => ApiError::from_store(other, kind, ""),
    }
}
