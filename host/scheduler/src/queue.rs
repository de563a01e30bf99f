//! The scheduling queue, after upstream's: an active queue in arrival order,
//! and pods that did not fit waiting out a back-off (1 s doubling to 10 s by
//! default) until the cluster changes, or at most the flush interval.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::SchedulerConfig;

struct Pending {
    pod: Value,
    /// Not retried before this.
    retry_at: Instant,
    /// When it was set aside, for the flush.
    since: Instant,
    /// Retried once `retry_at` passes (a cluster change happened, or the
    /// failure was an error rather than "does not fit").
    moved: bool,
}

pub(crate) struct Queue {
    order: VecDeque<String>,
    active: HashMap<String, Value>,
    pending: BTreeMap<String, Pending>,
    attempts: HashMap<String, u32>,
    initial: Duration,
    max: Duration,
    flush: Duration,
}

impl Queue {
    pub(crate) fn new(config: &SchedulerConfig) -> Self {
        Self {
            order: VecDeque::new(),
            active: HashMap::new(),
            pending: BTreeMap::new(),
            attempts: HashMap::new(),
            initial: config.initial_backoff,
            max: config.max_backoff,
            flush: config.unschedulable_flush,
        }
    }

    /// An unscheduled pod as the watch delivers it. A pod already set aside
    /// keeps waiting, with the newer object.
    pub(crate) fn add(&mut self, key: String, pod: Value) {
        if let Some(p) = self.pending.get_mut(&key) {
            p.pod = pod;
        } else if let Some(v) = self.active.get_mut(&key) {
            *v = pod;
        } else {
            self.order.push_back(key.clone());
            self.active.insert(key, pod);
        }
    }

    /// The pod was bound or deleted.
    pub(crate) fn remove(&mut self, key: &str) {
        self.active.remove(key);
        self.pending.remove(key);
        self.attempts.remove(key);
    }

    /// The pod was bound: its back-off starts over next time.
    pub(crate) fn forget_attempts(&mut self, key: &str) {
        self.attempts.remove(key);
    }

    fn promote(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, p)| (p.moved && p.retry_at <= now) || now >= p.since + self.flush)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            if let Some(p) = self.pending.remove(&k) {
                self.order.push_back(k.clone());
                self.active.insert(k, p.pod);
            }
        }
    }

    /// The next pod to schedule.
    pub(crate) fn pop(&mut self) -> Option<Value> {
        if self.order.is_empty() {
            self.promote();
        }
        while let Some(k) = self.order.pop_front() {
            if let Some(v) = self.active.remove(&k) {
                return Some(v);
            }
        }
        None
    }

    /// Whether a pod is ready now.
    pub(crate) fn has_ready(&mut self) -> bool {
        if self.active.is_empty() {
            self.promote();
        }
        !self.active.is_empty()
    }

    /// Set a pod aside after a failed cycle. `retry` retries it after the
    /// back-off whether or not the cluster changes (for errors).
    pub(crate) fn backoff(&mut self, key: String, pod: Value, retry: bool) {
        let n = self.attempts.entry(key.clone()).or_default();
        *n += 1;
        let factor = 1u32 << (*n - 1).min(16);
        let wait = self.initial.saturating_mul(factor).min(self.max);
        let now = Instant::now();
        self.pending.insert(
            key,
            Pending {
                pod,
                retry_at: now + wait,
                since: now,
                moved: retry,
            },
        );
    }

    /// Set a pod aside until the next cluster change, without back-off (its
    /// profile does not exist yet).
    pub(crate) fn park(&mut self, key: String, pod: Value) {
        let now = Instant::now();
        self.pending.insert(
            key,
            Pending {
                pod,
                retry_at: now,
                since: now,
                moved: false,
            },
        );
    }

    /// Something changed that may let waiting pods fit.
    pub(crate) fn cluster_changed(&mut self) {
        for p in self.pending.values_mut() {
            p.moved = true;
        }
    }

    /// When a waiting pod next becomes due.
    pub(crate) fn next_wake(&self) -> Instant {
        self.pending
            .values()
            .map(|p| {
                if p.moved {
                    p.retry_at.min(p.since + self.flush)
                } else {
                    p.since + self.flush
                }
            })
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn queue() -> Queue {
        Queue::new(&SchedulerConfig {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(500),
            unschedulable_flush: Duration::from_secs(60),
            ..Default::default()
        })
    }

    #[test]
    fn fifo_without_duplicates() {
        let mut q = queue();
        q.add("a".into(), json!(1));
        q.add("b".into(), json!(2));
        q.add("a".into(), json!(3));
        assert_eq!(q.pop(), Some(json!(3)));
        assert_eq!(q.pop(), Some(json!(2)));
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn a_pod_that_did_not_fit_waits_for_a_change_and_its_backoff() {
        let mut q = queue();
        q.backoff("a".into(), json!(1), false);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(q.pop(), None, "no cluster change yet");
        q.cluster_changed();
        assert_eq!(q.pop(), Some(json!(1)));
        // Second failure: 400 ms back-off, so a change right away is not enough.
        q.backoff("a".into(), json!(1), false);
        q.cluster_changed();
        assert_eq!(q.pop(), None, "still backing off");
        assert!(q.next_wake() > Instant::now());
        std::thread::sleep(Duration::from_millis(450));
        assert_eq!(q.pop(), Some(json!(1)));
    }

    #[test]
    fn backoff_is_capped_and_errors_retry_without_a_change() {
        let mut q = queue();
        for _ in 0..10 {
            q.backoff("a".into(), json!(1), true);
        }
        let wait = q.next_wake() - Instant::now();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        std::thread::sleep(Duration::from_millis(550));
        assert_eq!(q.pop(), Some(json!(1)));
    }

    #[test]
    fn removed_pods_never_come_back() {
        let mut q = queue();
        q.add("a".into(), json!(1));
        q.remove("a");
        q.backoff("b".into(), json!(2), true);
        q.remove("b");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(q.pop(), None);
    }
}
