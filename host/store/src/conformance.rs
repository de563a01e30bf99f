//! The conformance suite: one set of checks every [`Store`] backend must pass.
//!
//! Each case is a public `async fn(Arc<dyn Store>)` that panics on a violation and only
//! touches keys under `/conformance/<case>/`, so cases can share a store. Backends run the
//! whole suite with [`conformance_tests!`](crate::conformance_tests), which expands to one
//! `#[tokio::test]` per case:
//!
//! ```ignore
//! async fn setup() -> Option<(Box<dyn std::any::Any + Send>, Arc<dyn Store>)> { ... }
//! trellis_store::conformance_tests!(setup);
//! ```
//!
//! `setup` returns a guard that keeps the backend alive (a temp dir, an etcd process) and
//! the store, or `None` to skip (see [`crate::testing::EtcdServer::start_or_skip`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::StoreError;
use crate::store::{Store, Watch};
use crate::types::{
    Compare, CompareOp, Event, EventKind, RangeRequest, Txn, TxnOp, TxnOpResult, WatchRequest,
    WatchResponse, MAX_VALUE_BYTES,
};

/// Expand to one `#[tokio::test]` per conformance case, each calling `$setup().await`.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@cases $setup;
            revisions_and_get,
            create_if_absent,
            compare_and_swap,
            conditional_delete,
            range_prefix_paging,
            range_at_past_revision,
            multi_key_txn,
            cas_race,
            watch_order_and_resume,
            watch_prev_kv_and_progress,
            watch_replays_history,
            compaction,
            value_size_limit,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((_guard, store)) = $setup().await else { return };
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

fn key(case: &str, name: &str) -> Bytes {
    Bytes::from(format!("/conformance/{case}/{name}"))
}

fn prefix(case: &str) -> Bytes {
    Bytes::from(format!("/conformance/{case}/"))
}

/// Bounded patience for one watch item: a broken backend must fail the test, not hang it.
async fn next_item(watch: &mut Watch) -> Option<Result<WatchResponse, StoreError>> {
    tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
        .await
        .expect("no watch item within 30 s")
}

/// Read exactly `count` events (skipping progress notifications).
async fn next_events(watch: &mut Watch, count: usize) -> Vec<Event> {
    let out = at_least_events(watch, count).await;
    assert_eq!(out.len(), count, "more events than expected: {out:?}");
    out
}

/// Read whole responses until at least `count` events have arrived.
async fn at_least_events(watch: &mut Watch, count: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < count {
        match next_item(watch).await {
            Some(Ok(WatchResponse::Events(events))) => out.extend(events),
            Some(Ok(WatchResponse::Progress { .. })) => {}
            Some(Err(e)) => panic!("watch failed after {} events: {e}", out.len()),
            None => panic!("watch ended after {} events", out.len()),
        }
    }
    out
}

/// Revisions are global, start above 0, and advance by one per write; per-key metadata
/// follows etcd (create revision, mod revision, version).
pub async fn revisions_and_get(store: Arc<dyn Store>) {
    let k = key("revisions_and_get", "a");
    let r0 = store.revision().await.unwrap();
    assert!(r0 >= 1, "revisions start at 1, got {r0}");
    assert_eq!(store.get(&k).await.unwrap(), None);

    let r1 = store.put(&k, Bytes::from_static(b"one")).await.unwrap();
    assert_eq!(r1, r0 + 1, "one write advances the revision by one");
    assert_eq!(store.revision().await.unwrap(), r1);
    let kv = store
        .get(&k)
        .await
        .unwrap()
        .expect("written key is readable");
    assert_eq!(kv.value, Bytes::from_static(b"one"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );

    let r2 = store.put(&k, Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, Bytes::from_static(b"two"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );

    // A read does not advance the revision; a delete does, and resets the key's metadata.
    assert_eq!(store.revision().await.unwrap(), r2);
    let (r3, prev) = store.delete(&k, None).await.unwrap();
    assert_eq!(r3, r2 + 1);
    assert_eq!(prev.mod_revision, r2);
    let r4 = store.put(&k, Bytes::from_static(b"again")).await.unwrap();
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r4, r4, 1)
    );
}

/// `create` succeeds once; afterwards it fails with `AlreadyExists` carrying the current
/// object.
pub async fn create_if_absent(store: Arc<dyn Store>) {
    let k = key("create_if_absent", "a");
    let rev = store
        .create(&k, Bytes::from_static(b"first"))
        .await
        .unwrap();
    match store.create(&k, Bytes::from_static(b"second")).await {
        Err(e @ StoreError::AlreadyExists { .. }) => {
            assert_eq!(e.http_status(), 409);
            let StoreError::AlreadyExists { key: ek, current } = e else {
                unreachable!()
            };
            assert_eq!(ek, k);
            assert_eq!(current.mod_revision, rev);
            assert_eq!(current.value, Bytes::from_static(b"first"));
        }
        other => panic!("second create must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        store.revision().await.unwrap(),
        rev,
        "a failed create writes nothing"
    );
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().value,
        Bytes::from_static(b"first")
    );
}

/// `update` is a compare-and-swap on the mod revision: a stale revision gets `Conflict`
/// with the current revision and value; an absent key gets `NotFound`.
pub async fn compare_and_swap(store: Arc<dyn Store>) {
    let k = key("compare_and_swap", "a");
    let r1 = store.create(&k, Bytes::from_static(b"v1")).await.unwrap();
    let r2 = store
        .update(&k, Bytes::from_static(b"v2"), r1)
        .await
        .unwrap();
    assert!(r2 > r1);
    match store.update(&k, Bytes::from_static(b"stale"), r1).await {
        Err(StoreError::Conflict {
            key: ek,
            expected_revision,
            current_revision,
            current,
        }) => {
            assert_eq!(ek, k);
            assert_eq!(expected_revision, r1);
            assert_eq!(current_revision, r2);
            let current = current.expect("conflict carries the current value");
            assert_eq!(current.value, Bytes::from_static(b"v2"));
            assert_eq!(current.mod_revision, r2);
        }
        other => panic!("stale update must conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().value,
        Bytes::from_static(b"v2"),
        "a lost compare-and-swap writes nothing"
    );
    let missing = key("compare_and_swap", "missing");
    match store.update(&missing, Bytes::from_static(b"x"), r2).await {
        Err(e @ StoreError::NotFound { .. }) => assert_eq!(e.http_status(), 404),
        other => panic!("update of an absent key must be NotFound, got {other:?}"),
    }
    assert!(matches!(
        store.update(&k, Bytes::from_static(b"x"), 0).await,
        Err(StoreError::InvalidRequest { .. })
    ));
}

/// Deletes, conditional and not: conflicts carry the current revision, absent keys are
/// `NotFound`, the deleted value is returned.
pub async fn conditional_delete(store: Arc<dyn Store>) {
    let k = key("conditional_delete", "a");
    let r1 = store.create(&k, Bytes::from_static(b"v1")).await.unwrap();
    let r2 = store
        .update(&k, Bytes::from_static(b"v2"), r1)
        .await
        .unwrap();
    match store.delete(&k, Some(r1)).await {
        Err(StoreError::Conflict {
            current_revision, ..
        }) => assert_eq!(current_revision, r2),
        other => panic!("delete with a stale revision must conflict, got {other:?}"),
    }
    assert!(
        store.get(&k).await.unwrap().is_some(),
        "lost delete keeps the key"
    );
    let (r3, prev) = store.delete(&k, Some(r2)).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(prev.value, Bytes::from_static(b"v2"));
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert!(matches!(
        store.delete(&k, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete(&k, Some(r2)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.revision().await.unwrap(),
        r3,
        "deleting an absent key does not advance the revision"
    );
}

/// Prefix ranges are exact, sorted, and page consistently with limit + continue at a
/// pinned revision, even while the prefix changes.
pub async fn range_prefix_paging(store: Arc<dyn Store>) {
    let case = "range_prefix_paging";
    let p = prefix(case);
    for i in 0..25 {
        store
            .put(
                &key(case, &format!("item-{i:03}")),
                Bytes::from(format!("{i}")),
            )
            .await
            .unwrap();
    }
    // Neighbours that must not match the prefix.
    let outside = Bytes::from(format!("/conformance/{case}0"));
    store.put(&outside, Bytes::from_static(b"x")).await.unwrap();
    store
        .put(b"/conformance/range_prefix_pagin", Bytes::from_static(b"x"))
        .await
        .unwrap();

    let all = store.range(RangeRequest::prefix(p.clone())).await.unwrap();
    assert_eq!(all.kvs.len(), 25);
    assert!(!all.more);
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "range is in key order");

    // Page through in 10s at the first page's revision while writes happen in between.
    let mut page = store
        .range(RangeRequest::prefix(p.clone()).with_limit(10))
        .await
        .unwrap();
    let pinned = page.revision;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(page.kvs.len() <= 10);
        seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
        store
            .put(&key(case, "item-000"), Bytes::from_static(b"changed"))
            .await
            .unwrap();
        let Some(next) = page.continue_key() else {
            break;
        };
        page = store
            .range(
                RangeRequest::prefix(p.clone())
                    .with_limit(10)
                    .continue_from(next)
                    .at_revision(pinned),
            )
            .await
            .unwrap();
        assert_eq!(page.revision, pinned);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, keys, "pages cover the prefix exactly once, in order");

    // A single-key range, and a future revision.
    let one = store
        .range(RangeRequest::key(key(case, "item-007")))
        .await
        .unwrap();
    assert_eq!(one.kvs.len(), 1);
    let future = store.revision().await.unwrap() + 1000;
    assert!(matches!(
        store
            .range(RangeRequest::prefix(p).at_revision(future))
            .await,
        Err(StoreError::FutureRevision { .. })
    ));
}

/// Reads at a past revision see the values, deletions and absences of that moment.
pub async fn range_at_past_revision(store: Arc<dyn Store>) {
    let case = "range_at_past_revision";
    let (a, b) = (key(case, "a"), key(case, "b"));
    let r1 = store.put(&a, Bytes::from_static(b"a1")).await.unwrap();
    let r2 = store.put(&b, Bytes::from_static(b"b1")).await.unwrap();
    let r3 = store.put(&a, Bytes::from_static(b"a2")).await.unwrap();
    let (r4, _) = store.delete(&b, None).await.unwrap();

    let at = |rev: i64| {
        let store = store.clone();
        async move {
            store
                .range(RangeRequest::prefix(prefix(case)).at_revision(rev))
                .await
                .unwrap()
                .kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(at(r1).await, vec![(a.clone(), Bytes::from_static(b"a1"))]);
    assert_eq!(
        at(r2).await,
        vec![
            (a.clone(), Bytes::from_static(b"a1")),
            (b.clone(), Bytes::from_static(b"b1"))
        ]
    );
    assert_eq!(
        at(r3).await,
        vec![
            (a.clone(), Bytes::from_static(b"a2")),
            (b.clone(), Bytes::from_static(b"b1"))
        ]
    );
    assert_eq!(at(r4).await, vec![(a.clone(), Bytes::from_static(b"a2"))]);
    assert_eq!(at(r1 - 1).await, vec![]);
}

/// A multi-key transaction is atomic: all writes share one revision, a failed guard runs
/// the other branch and writes nothing of the first.
pub async fn multi_key_txn(store: Arc<dyn Store>) {
    let case = "multi_key_txn";
    let (a, b, c) = (key(case, "a"), key(case, "b"), key(case, "c"));
    let rc = store.put(&c, Bytes::from_static(b"c0")).await.unwrap();
    let resp = store
        .txn(
            Txn::new()
                .when([Compare::absent(a.clone()), Compare::absent(b.clone())])
                .and_then([
                    TxnOp::Put(a.clone(), Bytes::from_static(b"a")),
                    TxnOp::Put(b.clone(), Bytes::from_static(b"b")),
                    TxnOp::Delete(c.clone()),
                    TxnOp::Get(c.clone()),
                ]),
        )
        .await
        .unwrap();
    assert!(resp.succeeded);
    assert_eq!(resp.revision, rc + 1, "one transaction, one revision");
    assert_eq!(resp.results.len(), 4);
    assert!(
        matches!(&resp.results[2], TxnOpResult::Delete { prev: Some(p) } if p.mod_revision == rc)
    );
    for k in [&a, &b] {
        assert_eq!(
            store.get(k).await.unwrap().unwrap().mod_revision,
            resp.revision
        );
    }
    assert_eq!(store.get(&c).await.unwrap(), None);

    // Guard fails: the failure branch runs, nothing of the success branch is written.
    let resp2 = store
        .txn(
            Txn::new()
                .when([
                    Compare::mod_revision(a.clone(), CompareOp::Equal, resp.revision),
                    Compare::absent(b.clone()),
                ])
                .and_then([TxnOp::Put(a.clone(), Bytes::from_static(b"no"))])
                .or_else([TxnOp::Get(a.clone()), TxnOp::Get(b.clone())]),
        )
        .await
        .unwrap();
    assert!(!resp2.succeeded);
    assert_eq!(
        resp2.revision, resp.revision,
        "a read-only branch writes nothing"
    );
    match &resp2.results[..] {
        [TxnOpResult::Get(Some(ka)), TxnOpResult::Get(Some(kb))] => {
            assert_eq!(ka.value, Bytes::from_static(b"a"));
            assert_eq!(kb.value, Bytes::from_static(b"b"));
        }
        other => panic!("failure branch results: {other:?}"),
    }
    // Writing one key twice in a transaction is refused up front.
    assert!(matches!(
        store
            .txn(Txn::new().and_then([
                TxnOp::Put(a.clone(), Bytes::from_static(b"1")),
                TxnOp::Delete(a.clone()),
            ]))
            .await,
        Err(StoreError::InvalidRequest { .. })
    ));
}

/// 100 tasks race compare-and-swap increments on one counter. The final value equals the
/// number of successful swaps, and every loser sees a conflict carrying the revision and
/// value that beat it.
pub async fn cas_race(store: Arc<dyn Store>) {
    let k = key("cas_race", "counter");
    store.create(&k, Bytes::from_static(b"0")).await.unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            let k = k.clone();
            tokio::spawn(async move {
                let kv = store.get(&k).await.unwrap().unwrap();
                let (mut value, mut rev) = (parse(&kv.value), kv.mod_revision);
                let (mut wins, mut losses) = (0u64, 0u64);
                for _ in 0..3 {
                    match store
                        .update(&k, Bytes::from((value + 1).to_string()), rev)
                        .await
                    {
                        Ok(new_rev) => {
                            assert!(new_rev > rev);
                            wins += 1;
                            value += 1;
                            rev = new_rev;
                        }
                        Err(StoreError::Conflict {
                            expected_revision,
                            current_revision,
                            current,
                            ..
                        }) => {
                            losses += 1;
                            assert_eq!(expected_revision, rev);
                            assert!(
                                current_revision > rev,
                                "a conflict reports a newer revision ({current_revision} vs {rev})"
                            );
                            let current = current.expect("conflict carries the value");
                            assert_eq!(current.mod_revision, current_revision);
                            value = parse(&current.value);
                            rev = current_revision;
                        }
                        Err(e) => panic!("unexpected error in the race: {e}"),
                    }
                }
                (wins, losses)
            })
        })
        .collect();
    let (mut wins, mut losses) = (0, 0);
    for t in tasks {
        let (w, l) = t.await.unwrap();
        wins += w;
        losses += l;
    }
    let kv = store.get(&k).await.unwrap().unwrap();
    assert_eq!(parse(&kv.value), wins, "counter == successful swaps");
    assert_eq!(
        kv.version as u64,
        wins + 1,
        "one version per successful swap"
    );
    assert_eq!(wins + losses, 300);
    assert!(
        wins > 0 && losses > 0,
        "the race must have winners and losers"
    );
}

fn parse(value: &[u8]) -> u64 {
    std::str::from_utf8(value).unwrap().parse().unwrap()
}

/// A watch delivers every change in revision order without gaps; dropped and resumed from
/// the last seen revision + 1, it continues exactly where it stopped.
pub async fn watch_order_and_resume(store: Arc<dyn Store>) {
    let case = "watch_order_and_resume";
    let start = store.revision().await.unwrap() + 1;
    let mut watch = store
        .watch(WatchRequest::prefix(prefix(case)).from_revision(start))
        .await
        .unwrap();
    // Concurrent writers: puts, deletes and a multi-key transaction.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let k = key(case, &format!("w{w}-{}", i % 5));
                    if i % 7 == 6 {
                        let _ = store.delete(&k, None).await;
                    } else {
                        store
                            .put(&k, Bytes::from(format!("{w}-{i}")))
                            .await
                            .unwrap();
                    }
                }
                store
                    .txn(Txn::new().and_then([
                        TxnOp::Put(key(case, &format!("txn-{w}-a")), Bytes::from_static(b"a")),
                        TxnOp::Put(key(case, &format!("txn-{w}-b")), Bytes::from_static(b"b")),
                    ]))
                    .await
                    .unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Unrelated writes outside the prefix must not appear.
    store
        .put(b"/conformance/elsewhere", Bytes::from_static(b"x"))
        .await
        .unwrap();
    let end = store.revision().await.unwrap();
    let history = store
        .range(RangeRequest::prefix(prefix(case)))
        .await
        .unwrap();

    let first = at_least_events(&mut watch, 40).await;
    drop(watch);
    let last = first.last().unwrap().kv.mod_revision;
    // A transaction's events are never split: resume after the whole revision.
    let mut watch = store
        .watch(WatchRequest::prefix(prefix(case)).from_revision(last + 1))
        .await
        .unwrap();
    let mut all = first;
    while all.last().map(|e| e.kv.mod_revision) < Some(end - 1) {
        match next_item(&mut watch).await {
            Some(Ok(WatchResponse::Events(ev))) => all.extend(ev),
            Some(Ok(WatchResponse::Progress { .. })) => {}
            other => panic!("watch ended early: {other:?}"),
        }
    }
    // Every revision from start to end-1 (end is the unrelated write) appears, in order,
    // each exactly once per key.
    let mut revs: Vec<i64> = all.iter().map(|e| e.kv.mod_revision).collect();
    assert!(
        revs.windows(2).all(|w| w[0] <= w[1]),
        "events in revision order"
    );
    revs.dedup();
    let expected: Vec<i64> = (start..end).collect();
    assert_eq!(
        revs, expected,
        "no gaps and no duplicates across the resume"
    );
    assert!(all.iter().all(|e| e.kv.key.starts_with(&prefix(case))));
    // Replaying the events gives the final state.
    let mut state: BTreeMap<Bytes, Bytes> = BTreeMap::new();
    for e in &all {
        match e.kind {
            EventKind::Put => {
                state.insert(e.kv.key.clone(), e.kv.value.clone());
            }
            EventKind::Delete => {
                state.remove(&e.kv.key);
            }
        }
    }
    let final_state: BTreeMap<Bytes, Bytes> = history
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(state, final_state, "events replay to the current state");
}

/// Events carry previous values when asked; progress notifications report a revision up
/// to which everything was delivered.
pub async fn watch_prev_kv_and_progress(store: Arc<dyn Store>) {
    let case = "watch_prev_kv_and_progress";
    let k = key(case, "a");
    let mut watch = store
        .watch(WatchRequest::prefix(prefix(case)).with_prev_kv())
        .await
        .unwrap();
    let r1 = store.put(&k, Bytes::from_static(b"v1")).await.unwrap();
    let r2 = store.put(&k, Bytes::from_static(b"v2")).await.unwrap();
    let (r3, _) = store.delete(&k, None).await.unwrap();
    let events = next_events(&mut watch, 3).await;
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.mod_revision, r1);
    assert_eq!(events[0].prev_kv, None);
    assert_eq!(events[1].kv.value, Bytes::from_static(b"v2"));
    assert_eq!(events[1].kv.version, 2);
    let prev = events[1].prev_kv.as_ref().expect("prev_kv on update");
    assert_eq!((prev.value.as_ref(), prev.mod_revision), (&b"v1"[..], r1));
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].kv.mod_revision, r3);
    assert_eq!(events[2].kv.key, k);
    let prev = events[2].prev_kv.as_ref().expect("prev_kv on delete");
    assert_eq!((prev.value.as_ref(), prev.mod_revision), (&b"v2"[..], r2));

    // Progress on request, after an unrelated write.
    let other = store
        .put(b"/conformance/elsewhere-progress", Bytes::from_static(b"x"))
        .await
        .unwrap();
    watch.request_progress().await.unwrap();
    match next_item(&mut watch).await {
        Some(Ok(WatchResponse::Progress { revision })) => assert!(
            revision >= other,
            "progress {revision} must cover revision {other}"
        ),
        other => panic!("expected a progress notification, got {other:?}"),
    }
    // Without prev_kv, events carry none.
    let mut plain = store
        .watch(WatchRequest::key(k.clone()).from_revision(r2))
        .await
        .unwrap();
    let events = next_events(&mut plain, 2).await;
    assert!(events.iter().all(|e| e.prev_kv.is_none()));
}

/// A watch from a past revision replays history, then continues live.
pub async fn watch_replays_history(store: Arc<dyn Store>) {
    let case = "watch_replays_history";
    let k = key(case, "a");
    let r1 = store.put(&k, Bytes::from_static(b"1")).await.unwrap();
    store.put(&k, Bytes::from_static(b"2")).await.unwrap();
    store.delete(&k, None).await.unwrap();
    let mut watch = store
        .watch(WatchRequest::key(k.clone()).from_revision(r1))
        .await
        .unwrap();
    let replay = next_events(&mut watch, 3).await;
    let kinds: Vec<_> = replay.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Put, EventKind::Put, EventKind::Delete]);
    let r4 = store.put(&k, Bytes::from_static(b"live")).await.unwrap();
    let live = next_events(&mut watch, 1).await;
    assert_eq!(live[0].kv.mod_revision, r4);
    assert_eq!(live[0].kv.version, 1, "version restarts after a delete");
}

/// After compaction, reads and watches below the compact revision fail with `Compacted`
/// (410), while the compact revision itself and newer still work.
pub async fn compaction(store: Arc<dyn Store>) {
    let case = "compaction";
    let k = key(case, "a");
    let r1 = store.put(&k, Bytes::from_static(b"1")).await.unwrap();
    let r2 = store.put(&k, Bytes::from_static(b"2")).await.unwrap();
    let r3 = store.put(&k, Bytes::from_static(b"3")).await.unwrap();
    store.compact(r2).await.unwrap();

    let mut old = store
        .watch(WatchRequest::key(k.clone()).from_revision(r1))
        .await
        .unwrap();
    match next_item(&mut old).await {
        Some(Err(e @ StoreError::Compacted { .. })) => {
            assert_eq!(e.http_status(), 410);
            let StoreError::Compacted {
                compact_revision, ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(compact_revision, r2);
        }
        other => panic!("watch from a compacted revision must yield Compacted, got {other:?}"),
    }
    assert!(
        old.next().await.is_none(),
        "the stream ends after the error"
    );
    match store
        .range(RangeRequest::key(k.clone()).at_revision(r1))
        .await
    {
        Err(StoreError::Compacted { .. }) => {}
        other => panic!("read below the compact revision must be Compacted, got {other:?}"),
    }
    // At and after the compact revision, history is intact.
    let at2 = store
        .range(RangeRequest::key(k.clone()).at_revision(r2))
        .await
        .unwrap();
    assert_eq!(at2.kvs[0].value, Bytes::from_static(b"2"));
    let mut ok = store
        .watch(WatchRequest::key(k.clone()).from_revision(r2))
        .await
        .unwrap();
    let events = next_events(&mut ok, 2).await;
    assert_eq!(
        events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        [r2, r3]
    );
    // Compacting again at or below the compact revision is refused.
    assert!(matches!(
        store.compact(r1).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(
        store.compact(r3 + 1000).await,
        Err(StoreError::FutureRevision { .. })
    ));
    store.compact(r3).await.unwrap();
    assert_eq!(
        store.get(&k).await.unwrap().unwrap().value,
        Bytes::from_static(b"3"),
        "compaction keeps the current state"
    );
}

/// Values up to 1.5 MiB are stored and read back; larger ones are refused with
/// `ValueTooLarge` (413) naming the size and the limit, in puts and in transactions.
pub async fn value_size_limit(store: Arc<dyn Store>) {
    let case = "value_size_limit";
    let k = key(case, "big");
    let max = Bytes::from(vec![b'x'; MAX_VALUE_BYTES]);
    store.put(&k, max.clone()).await.unwrap();
    let back = store.get(&k).await.unwrap().unwrap();
    assert_eq!(back.value.len(), MAX_VALUE_BYTES);
    assert_eq!(back.value, max);

    let too_big = Bytes::from(vec![b'y'; MAX_VALUE_BYTES + 1]);
    let rev = store.revision().await.unwrap();
    match store.put(&k, too_big.clone()).await {
        Err(e @ StoreError::ValueTooLarge { .. }) => {
            assert_eq!(e.http_status(), 413);
            let msg = e.to_string();
            assert!(
                msg.contains("1572865") && msg.contains("1572864"),
                "message: {msg}"
            );
            let StoreError::ValueTooLarge { size, limit, .. } = e else {
                unreachable!()
            };
            assert_eq!((size, limit), (MAX_VALUE_BYTES + 1, MAX_VALUE_BYTES));
        }
        other => panic!("a value over the limit must be refused, got {other:?}"),
    }
    assert!(matches!(
        store.create(&key(case, "new"), too_big.clone()).await,
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert!(matches!(
        store
            .txn(Txn::new().and_then([
                TxnOp::Put(key(case, "small"), Bytes::from_static(b"ok")),
                TxnOp::Put(key(case, "huge"), too_big),
            ]))
            .await,
        Err(StoreError::ValueTooLarge { .. })
    ));
    assert_eq!(
        store.revision().await.unwrap(),
        rev,
        "refused writes write nothing"
    );
    assert_eq!(store.get(&key(case, "small")).await.unwrap(), None);
}
