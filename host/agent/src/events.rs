//! Events about pods, recorded as kubelet does (`source.component: kubelet`,
//! the node as host, the container as field path), in the background.
//!
//! Events are best-effort and only informational, so they give way to pod
//! starts: one recorded while pods are being started waits until no start
//! is under way, or at most [`HOLD`]. When many pods start at once, the API
//! server then spends the burst's CPU on the pods (their binds, their
//! statuses) and gets their events just after, instead of three more writes
//! per pod competing with them. (kubelet, too, sends its events through a
//! rate-limited queue, 50 a second by default.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use trellis_client::{Client, Resource};

/// The longest an event waits for the node's pod starts to finish.
pub(crate) const HOLD: Duration = Duration::from_secs(1);

/// How often a held event looks again.
const RECHECK: Duration = Duration::from_millis(20);

/// Records events; a failure to record is logged, never fatal.
#[derive(Clone)]
pub(crate) struct Events {
    queue: mpsc::UnboundedSender<Value>,
    node: String,
}

impl Events {
    /// Records through `client`, holding events while any of the `starts`
    /// permits (`all` of them) is taken. Call within the runtime.
    pub fn new(client: Client, node: &str, starts: Arc<Semaphore>, all: usize) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let events = Resource::new("", "v1", "events", true);
        let create = move |ev: Value| {
            let client = client.clone();
            let events = events.clone();
            tokio::spawn(async move {
                let ns = ev["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                if let Err(e) = client.create(&events, &ns, &ev).await {
                    tracing::warn!(error = %e, "cannot record an event");
                }
            });
        };
        tokio::spawn(send(rx, move || starts.available_permits() < all, create));
        Self {
            queue,
            node: node.to_string(),
        }
    }

    /// Record `reason` on `pod`, about `container` when given.
    pub fn record(
        &self,
        pod: &Value,
        ty: &str,
        reason: &str,
        message: &str,
        container: Option<&str>,
    ) {
        let field = container.map(|c| {
            let init = pod["spec"]["initContainers"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"] == c));
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let ev = trellis_client::event_object(
            pod,
            ty,
            reason,
            message,
            "kubelet",
            Some(&self.node),
            field.as_deref(),
        );
        // The queue closes only with the agent.
        let _ = self.queue.send(ev);
    }
}

/// Pass queued events to `create`, each held while `busy` says pods are
/// being started (at most [`HOLD`] after the first of a batch arrived).
async fn send(
    mut rx: mpsc::UnboundedReceiver<Value>,
    busy: impl Fn() -> bool,
    create: impl Fn(Value),
) {
    while let Some(first) = rx.recv().await {
        let deadline = Instant::now() + HOLD;
        while busy() && Instant::now() < deadline {
            tokio::time::sleep(RECHECK).await;
        }
        create(first);
        while let Ok(ev) = rx.try_recv() {
            create(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// The sender over a queue, with a busy flag and a record of what it
    /// passed on.
    fn sender() -> (
        mpsc::UnboundedSender<Value>,
        Arc<AtomicBool>,
        Arc<Mutex<Vec<Value>>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let busy = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let (b, s) = (busy.clone(), sent.clone());
        tokio::spawn(send(
            rx,
            move || b.load(Ordering::SeqCst),
            move |ev| s.lock().unwrap().push(ev),
        ));
        (tx, busy, sent)
    }

    #[tokio::test(start_paused = true)]
    async fn events_wait_for_pod_starts_to_finish() {
        let (tx, busy, sent) = sender();
        busy.store(true, Ordering::SeqCst);
        tx.send(json!({"reason": "Created"})).unwrap();
        tx.send(json!({"reason": "Started"})).unwrap();
        tokio::time::sleep(HOLD / 2).await;
        assert!(
            sent.lock().unwrap().is_empty(),
            "sent while pods were starting"
        );
        busy.store(false, Ordering::SeqCst);
        tokio::time::sleep(RECHECK * 2).await;
        let reasons: Vec<Value> = sent
            .lock()
            .unwrap()
            .iter()
            .map(|e| e["reason"].clone())
            .collect();
        assert_eq!(
            reasons,
            [json!("Created"), json!("Started")],
            "in order, once the starts are done"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_waits_no_longer_than_the_hold() {
        let (tx, busy, sent) = sender();
        busy.store(true, Ordering::SeqCst);
        tx.send(json!({"reason": "Pulled"})).unwrap();
        tokio::time::sleep(HOLD - RECHECK * 2).await;
        assert!(sent.lock().unwrap().is_empty());
        tokio::time::sleep(RECHECK * 3).await;
        assert_eq!(
            sent.lock().unwrap().len(),
            1,
            "sent at the hold's end, the node still busy"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_a_quiet_node_events_go_at_once() {
        let (tx, _busy, sent) = sender();
        tx.send(json!({"reason": "Killing"})).unwrap();
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(sent.lock().unwrap().len(), 1);
    }
}
