//! The in-memory index: every key's retained history, the per-revision event log that
//! watches read, and the transaction evaluation the writer runs.
//!
//! The whole live state and the history since the last compaction live in memory (as in
//! etcd, whose bbolt file is memory-mapped). The log on disk is only replayed at open.
//!
//! Compaction at revision `C` keeps what reads at revisions `>= C` and watches from
//! revisions `>= C` need, which is the same boundary etcd has: each key's last write at or
//! below `C - 1` (unless it was a delete) plus every later write, and the events of
//! revisions `>= C`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Result, StoreError};
use crate::types::{
    Event, EventKind, KeyValue, RangeRequest, RangeResponse, Txn, TxnOp, TxnOpResult, TxnResponse,
    WatchRequest,
};

/// One retained write to a key: `None` is a delete.
#[derive(Clone, Debug)]
struct Entry {
    revision: i64,
    kv: Option<KeyValue>,
}

/// The writes of one revision, with previous values always attached (watches that did not
/// ask for them get them stripped).
#[derive(Debug)]
pub(crate) struct RevisionEvents {
    pub(crate) revision: i64,
    pub(crate) events: Vec<Event>,
}

/// A write decided by the writer: `Some` value for a put, `None` for a delete.
#[derive(Clone, Debug)]
pub(crate) struct Write {
    pub(crate) key: Bytes,
    pub(crate) value: Option<Bytes>,
}

/// The store's state at its current revision, plus retained history.
#[derive(Debug)]
pub(crate) struct State {
    index: BTreeMap<Bytes, Vec<Entry>>,
    revlog: VecDeque<Arc<RevisionEvents>>,
    /// Current revision (1 on an empty store, like etcd).
    pub(crate) revision: i64,
    /// Reads below this revision fail with `Compacted`.
    pub(crate) compact_revision: i64,
    /// Number of live keys.
    pub(crate) live_keys: usize,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            index: BTreeMap::new(),
            revlog: VecDeque::new(),
            revision: 1,
            compact_revision: 0,
            live_keys: 0,
        }
    }

    /// Build the state a snapshot describes: `kvs` live at `revision`, compacted at
    /// `compact_revision`.
    pub(crate) fn from_snapshot(revision: i64, compact_revision: i64, kvs: Vec<KeyValue>) -> Self {
        let mut state = State::new();
        state.revision = revision;
        state.compact_revision = compact_revision;
        state.live_keys = kvs.len();
        for kv in kvs {
            state.index.insert(
                kv.key.clone(),
                vec![Entry {
                    revision: kv.mod_revision,
                    kv: Some(kv),
                }],
            );
        }
        state
    }

    fn current(&self, key: &[u8]) -> Option<&KeyValue> {
        self.index.get(key)?.last()?.kv.as_ref()
    }

    /// Read a range at the current or a past revision.
    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let at = if req.revision <= 0 {
            self.revision
        } else {
            req.revision
        };
        self.check_readable(at)?;
        let mut kvs = Vec::new();
        let mut more = false;
        for (_, entries) in self.keys_in(&req.start, &req.end) {
            let Some(kv) = visible_at(entries, at) else {
                continue;
            };
            if req.limit > 0 && kvs.len() == req.limit {
                more = true;
                break;
            }
            kvs.push(kv.clone());
        }
        Ok(RangeResponse {
            kvs,
            more,
            revision: at,
        })
    }

    fn check_readable(&self, at: i64) -> Result<()> {
        if at < self.compact_revision {
            return Err(StoreError::Compacted {
                requested_revision: at,
                compact_revision: self.compact_revision,
            });
        }
        if at > self.revision {
            return Err(StoreError::FutureRevision {
                requested_revision: at,
                current_revision: self.revision,
            });
        }
        Ok(())
    }

    fn keys_in<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a Vec<Entry>)> + 'a {
        let upper = if end.is_empty() {
            Bound::Included(start)
        } else if end == b"\0" {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let valid = end.is_empty() || end == b"\0" || start < end;
        valid
            .then(|| self.index.range::<[u8], _>((Bound::Included(start), upper)))
            .into_iter()
            .flatten()
    }

    /// Evaluate a transaction against this state plus the writes already decided in the
    /// current batch (`overlay`), as if it ran at `revision`. Returns the response and the
    /// writes (empty when nothing changes; then the revision is not consumed).
    pub(crate) fn evaluate(
        &self,
        overlay: &mut HashMap<Bytes, Option<KeyValue>>,
        revision: i64,
        txn: &Txn,
    ) -> (TxnResponse, Vec<Write>) {
        let lookup = |overlay: &HashMap<Bytes, Option<KeyValue>>, key: &[u8]| -> Option<KeyValue> {
            match overlay.get(key) {
                Some(pending) => pending.clone(),
                None => self.current(key).cloned(),
            }
        };
        let succeeded = txn
            .compares
            .iter()
            .all(|c| c.matches(lookup(overlay, &c.key).as_ref()));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut results = Vec::with_capacity(ops.len());
        let mut writes = Vec::new();
        // Reads in a transaction see the state before the transaction's own writes, as
        // in etcd; keys are written at most once per branch (see `Txn::validate`).
        let mut staged: Vec<(Bytes, Option<KeyValue>)> = Vec::new();
        for op in ops {
            match op {
                TxnOp::Get(key) => results.push(TxnOpResult::Get(lookup(overlay, key))),
                TxnOp::Put(key, value) => {
                    let prev = lookup(overlay, key);
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                    };
                    staged.push((key.clone(), Some(kv)));
                    writes.push(Write {
                        key: key.clone(),
                        value: Some(value.clone()),
                    });
                    results.push(TxnOpResult::Put);
                }
                TxnOp::Delete(key) => {
                    let prev = lookup(overlay, key);
                    if prev.is_some() {
                        staged.push((key.clone(), None));
                        writes.push(Write {
                            key: key.clone(),
                            value: None,
                        });
                    }
                    results.push(TxnOpResult::Delete { prev });
                }
            }
        }
        overlay.extend(staged);
        let resp = TxnResponse {
            succeeded,
            revision: if writes.is_empty() {
                revision - 1
            } else {
                revision
            },
            results,
        };
        (resp, writes)
    }

    /// Apply the writes of `revision` (which must be the next revision) and record their
    /// events. Used by the writer after fsync and by replay at open, so both derive
    /// create revisions and versions identically.
    pub(crate) fn apply(&mut self, revision: i64, writes: &[Write]) -> Result<(), String> {
        if revision != self.revision + 1 {
            return Err(format!(
                "revision {revision} does not follow revision {}",
                self.revision
            ));
        }
        let mut events = Vec::with_capacity(writes.len());
        for w in writes {
            let prev = self.current(&w.key).cloned();
            let event = match &w.value {
                Some(value) => {
                    let kv = KeyValue {
                        key: w.key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                    };
                    if prev.is_none() {
                        self.live_keys += 1;
                    }
                    self.index.entry(w.key.clone()).or_default().push(Entry {
                        revision,
                        kv: Some(kv.clone()),
                    });
                    Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev,
                    }
                }
                None => {
                    if prev.is_none() {
                        return Err(format!(
                            "delete of absent key {} at revision {revision}",
                            crate::error::show_key(&w.key)
                        ));
                    }
                    self.live_keys -= 1;
                    self.index
                        .entry(w.key.clone())
                        .or_default()
                        .push(Entry { revision, kv: None });
                    Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            key: w.key.clone(),
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: revision,
                            version: 0,
                        },
                        prev_kv: prev,
                    }
                }
            };
            events.push(event);
        }
        self.revlog
            .push_back(Arc::new(RevisionEvents { revision, events }));
        self.revision = revision;
        Ok(())
    }

    /// Check a compaction target with etcd's rules.
    pub(crate) fn check_compact(&self, revision: i64) -> Result<()> {
        if revision <= self.compact_revision {
            return Err(StoreError::Compacted {
                requested_revision: revision,
                compact_revision: self.compact_revision,
            });
        }
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested_revision: revision,
                current_revision: self.revision,
            });
        }
        Ok(())
    }

    /// Drop history that reads at `>= revision` and watches from `>= revision` do not need.
    pub(crate) fn compact(&mut self, revision: i64) {
        let floor = revision - 1;
        self.index.retain(|_, entries| {
            // Index of the last entry at or below the floor: it is what a read at the
            // floor sees, so everything before it can go.
            let keep_from = entries.partition_point(|e| e.revision <= floor);
            if keep_from > 0 {
                let last_old = keep_from - 1;
                let drop_to = if entries[last_old].kv.is_none() {
                    keep_from
                } else {
                    last_old
                };
                entries.drain(..drop_to);
            }
            !entries.is_empty()
        });
        while self.revlog.front().is_some_and(|r| r.revision < revision) {
            self.revlog.pop_front();
        }
        self.compact_revision = revision;
    }

    /// The state at `compact_revision - 1` (the snapshot a rewritten log starts with): the
    /// revision it describes and its live key-values.
    pub(crate) fn snapshot_base(&self) -> (i64, Vec<&KeyValue>) {
        let floor = (self.compact_revision - 1).max(1);
        let kvs = self
            .index
            .values()
            .filter_map(|entries| {
                entries
                    .first()
                    .filter(|e| e.revision <= floor)
                    .and_then(|e| e.kv.as_ref())
            })
            .collect();
        (floor, kvs)
    }

    /// Retained revisions after the snapshot base, oldest first.
    pub(crate) fn retained_revisions(&self) -> impl Iterator<Item = &Arc<RevisionEvents>> {
        let floor = (self.compact_revision - 1).max(1);
        self.revlog.iter().filter(move |r| r.revision > floor)
    }

    /// Events for a watcher at `cursor`, up to roughly `max_events`, whole revisions only.
    /// Returns the events and the next cursor.
    pub(crate) fn collect(
        &self,
        cursor: i64,
        req: &WatchRequest,
        max_events: usize,
    ) -> Result<(Vec<Event>, i64)> {
        if cursor < self.compact_revision {
            return Err(StoreError::Compacted {
                requested_revision: cursor,
                compact_revision: self.compact_revision,
            });
        }
        let mut events = Vec::new();
        let Some(first) = self.revlog.front().map(|r| r.revision) else {
            return Ok((events, cursor.max(self.revision + 1)));
        };
        let skip = usize::try_from(cursor - first).unwrap_or(0);
        let mut next = cursor.max(first);
        for rev in self.revlog.iter().skip(skip) {
            for e in &rev.events {
                if req.contains(&e.kv.key) {
                    let mut e = e.clone();
                    if !req.prev_kv {
                        e.prev_kv = None;
                    }
                    events.push(e);
                }
            }
            next = rev.revision + 1;
            if events.len() >= max_events {
                break;
            }
        }
        Ok((events, next.max(cursor)))
    }
}

/// The key-value visible at revision `at` (the last write at or before it, unless a delete).
fn visible_at(entries: &[Entry], at: i64) -> Option<&KeyValue> {
    let idx = entries.partition_point(|e| e.revision <= at);
    entries.get(idx.checked_sub(1)?)?.kv.as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Write {
        Write {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        }
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_compact_revision_need() {
        let mut s = State::new();
        s.apply(2, &[put("/a", "1")]).unwrap();
        s.apply(3, &[put("/a", "2")]).unwrap();
        s.apply(
            4,
            &[Write {
                key: Bytes::from_static(b"/a"),
                value: None,
            }],
        )
        .unwrap();
        s.apply(5, &[put("/b", "1")]).unwrap();
        s.compact(4);
        // A read at 4 sees /a deleted; a read at 3 is refused.
        let at4 = s.range(&RangeRequest::prefix("/").at_revision(4)).unwrap();
        assert!(at4.kvs.is_empty());
        assert!(matches!(
            s.range(&RangeRequest::prefix("/").at_revision(3)),
            Err(StoreError::Compacted {
                compact_revision: 4,
                ..
            })
        ));
        // Watching from 4 still sees the delete.
        let (events, next) = s.collect(4, &WatchRequest::prefix("/"), 100).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Delete);
        assert_eq!(next, 6);
        s.compact(5);
        assert!(
            !s.index.contains_key(&b"/a"[..]),
            "dead key dropped after compaction"
        );
    }
}
