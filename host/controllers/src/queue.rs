//! The work queue, as client-go's: a key waiting is queued once however many
//! events name it; a key being reconciled is never handed out again until it
//! is done (an event meanwhile marks it dirty and it is queued again then);
//! failures come back after a per-key exponential back-off; requeue-after
//! delays. The queue outlives a controller's versions: a swap keeps it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Back-off after failures: `base * 2^(failures-1)`, at most `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The first delay.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// client-go's default controller rate limiter: 5 ms doubling to 1000 s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(5),
            max: Duration::from_secs(1000),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.max)
    }
}

struct Inner<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    dirty: HashSet<K>,
    delayed: HashMap<K, Instant>,
    failures: HashMap<K, u32>,
    shut: bool,
}

/// A deduplicating work queue with delays and back-off.
pub struct WorkQueue<K> {
    inner: Mutex<Inner<K>>,
    notify: Notify,
    backoff: Backoff,
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: HashMap::new(),
                failures: HashMap::new(),
                shut: false,
            }),
            notify: Notify::new(),
            backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().expect("queue lock")
    }

    /// Queue `key` now (once, however often it is added).
    pub fn add(&self, key: K) {
        let mut q = self.lock();
        if q.shut {
            return;
        }
        q.delayed.remove(&key);
        if q.processing.contains(&key) {
            q.dirty.insert(key);
            return;
        }
        if q.queued.insert(key.clone()) {
            q.queue.push_back(key);
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Queue `key` after `delay` (an earlier pending time wins).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut q = self.lock();
        if q.shut || q.queued.contains(&key) {
            return;
        }
        let e = q.delayed.entry(key).or_insert(at);
        if at < *e {
            *e = at;
        }
        drop(q);
        self.notify.notify_one();
    }

    /// Queue `key` after its back-off (one more failure).
    pub fn add_rate_limited(&self, key: K) -> Duration {
        let n = {
            let mut q = self.lock();
            let n = q.failures.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let d = self.backoff.delay(n);
        self.add_after(key, d);
        d
    }

    /// Forget `key`'s failures (it succeeded).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to reconcile; waits. `None` once shut down.
    pub async fn pop(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            let wait = {
                let mut q = self.lock();
                if q.shut {
                    return None;
                }
                // Move due delayed keys into the queue.
                let now = Instant::now();
                let due: Vec<K> = q
                    .delayed
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in due {
                    q.delayed.remove(&k);
                    if q.processing.contains(&k) {
                        q.dirty.insert(k);
                    } else if q.queued.insert(k.clone()) {
                        q.queue.push_back(k);
                    }
                }
                if let Some(k) = q.queue.pop_front() {
                    q.queued.remove(&k);
                    q.processing.insert(k.clone());
                    return Some(k);
                }
                q.delayed
                    .values()
                    .min()
                    .map(|at| at.saturating_duration_since(now))
            };
            match wait {
                Some(d) => {
                    let _ = tokio::time::timeout(d, notified).await;
                }
                None => notified.await,
            }
        }
    }

    /// `key` is reconciled; if it changed meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let mut q = self.lock();
        q.processing.remove(key);
        if q.dirty.remove(key) && !q.shut && q.queued.insert(key.clone()) {
            q.queue.push_back(key.clone());
            drop(q);
            self.notify.notify_one();
        }
    }

    /// Keys waiting now (not delayed, not in flight).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether nothing waits now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys waiting for a delay or back-off.
    pub fn delayed(&self) -> usize {
        self.lock().delayed.len()
    }

    /// Keys being reconciled.
    pub fn in_flight(&self) -> usize {
        self.lock().processing.len()
    }

    /// Stop handing out keys; every `pop` returns `None`.
    pub fn shut_down(&self) {
        self.lock().shut = true;
        self.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dedups_and_never_hands_out_a_key_twice_at_once() {
        let q = WorkQueue::new(Backoff::default());
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.pop().await.unwrap();
        assert_eq!(a, "a");
        q.add("a"); // changed while in flight: dirty, not queued
        assert_eq!(q.pop().await.unwrap(), "b");
        assert_eq!(q.len(), 0);
        q.done(&"a");
        assert_eq!(q.len(), 1, "queued again once done");
        assert_eq!(q.pop().await.unwrap(), "a");
        q.done(&"a");
        q.done(&"b");
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delays_and_backoff() {
        let q = WorkQueue::new(Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(300),
        });
        assert_eq!(q.add_rate_limited("k"), Duration::from_millis(100));
        assert_eq!(q.delayed(), 1);
        let t0 = tokio::time::Instant::now();
        assert_eq!(q.pop().await, Some("k"));
        assert!(t0.elapsed() >= Duration::from_millis(100));
        q.done(&"k");
        assert_eq!(q.add_rate_limited("k"), Duration::from_millis(200));
        assert_eq!(q.add_rate_limited("x"), Duration::from_millis(100));
        assert_eq!(q.backoff.delay(5), Duration::from_millis(300), "capped");
        q.forget(&"k");
        assert_eq!(q.add_rate_limited("k"), Duration::from_millis(100));
        q.shut_down();
        assert_eq!(q.pop().await, None);
    }
}
