//! Damaged and foreign data files: a clear error naming the file, never a panic and never
//! silent loss; a torn tail (a crash before the acknowledging fsync) is cut and the store
//! opens.

use std::io::Write;
use std::path::Path;

use trellis_store::embedded::LOG_FILE;
use trellis_store::{
    Bytes, EmbeddedStore, RangeRequest, Store, StoreError, WatchRequest, WatchResponse,
};

async fn write_keys(dir: &Path, n: usize) -> i64 {
    let store = EmbeddedStore::open(dir).await.unwrap();
    let mut rev = 0;
    for i in 0..n {
        rev = store
            .put(
                format!("/k/{i:04}").as_bytes(),
                Bytes::from(vec![b'v'; 100 + i]),
            )
            .await
            .unwrap();
    }
    store.close().await;
    rev
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join(LOG_FILE)
}

#[tokio::test]
async fn foreign_files_are_refused_with_a_clear_error() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
        ),
        ("sqlite database", {
            let mut v = b"SQLite format 3\0".to_vec();
            v.resize(4096, 0);
            v
        }),
        ("empty file", Vec::new()),
        ("short file", b"TRLS".to_vec()),
    ];
    for (what, contents) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), &contents).unwrap();
        match EmbeddedStore::open(dir.path()).await {
            Err(e @ StoreError::Foreign { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(LOG_FILE),
                    "{what}: message names the file: {msg}"
                );
            }
            other => panic!("{what}: expected Foreign, got {other:?}"),
        }
        // Nothing was overwritten.
        assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), contents);
    }
}

#[tokio::test]
async fn unknown_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path(), 3).await;
    let mut data = std::fs::read(log_path(dir.path())).unwrap();
    data[8] = 99;
    std::fs::write(log_path(dir.path()), &data).unwrap();
    match EmbeddedStore::open(dir.path()).await {
        Err(e @ StoreError::Foreign { .. }) => assert!(e.to_string().contains("version 99")),
        other => panic!("expected Foreign, got {other:?}"),
    }
}

#[tokio::test]
async fn flipped_byte_in_the_middle_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    write_keys(dir.path(), 100).await;
    let path = log_path(dir.path());
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    std::fs::write(&path, &data).unwrap();
    match EmbeddedStore::open(dir.path()).await {
        Err(e @ StoreError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(LOG_FILE) && msg.contains("offset"),
                "message: {msg}"
            );
            let StoreError::Corrupt { offset, .. } = e else {
                unreachable!()
            };
            assert!(offset <= mid as u64);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The damaged file is left alone for inspection.
    assert_eq!(std::fs::read(&path).unwrap(), data);
}

#[tokio::test]
async fn torn_tail_is_cut_and_only_the_torn_write_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let last_rev = write_keys(dir.path(), 50).await;
    let path = log_path(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut into the last record, as a crash during its write would.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 7).unwrap();
    drop(f);

    let store = EmbeddedStore::open(dir.path())
        .await
        .expect("a torn tail is not corruption");
    assert_eq!(store.revision().await.unwrap(), last_rev - 1);
    let all = store.range(RangeRequest::prefix("/k/")).await.unwrap();
    assert_eq!(all.kvs.len(), 49, "only the torn record is gone");
    assert!(store.get(b"/k/0049").await.unwrap().is_none());
    // The store keeps working and reopens cleanly.
    let rev = store
        .put(b"/k/after", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(rev, last_rev);
    store.close().await;
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(
        store
            .range(RangeRequest::prefix("/k/"))
            .await
            .unwrap()
            .kvs
            .len(),
        50
    );
    store.close().await;
}

#[tokio::test]
async fn garbage_and_zeros_after_the_last_record_are_a_torn_tail() {
    for tail in [vec![0u8; 4096], vec![0xAB; 3], {
        // A whole frame whose checksum does not match, at the very end.
        let mut v = 20u32.to_le_bytes().to_vec();
        v.extend_from_slice(&[1, 2, 3, 4]);
        v.extend_from_slice(&[7u8; 20]);
        v
    }] {
        let dir = tempfile::tempdir().unwrap();
        let last_rev = write_keys(dir.path(), 10).await;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(log_path(dir.path()))
            .unwrap();
        f.write_all(&tail).unwrap();
        drop(f);
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), last_rev);
        assert_eq!(
            store
                .range(RangeRequest::prefix("/k/"))
                .await
                .unwrap()
                .kvs
                .len(),
            10
        );
        store.close().await;
    }
}

#[tokio::test]
async fn a_second_instance_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert!(matches!(
        EmbeddedStore::open(dir.path()).await,
        Err(StoreError::Locked { .. })
    ));
    store.close().await;
    EmbeddedStore::open(dir.path()).await.unwrap().close().await;
}

#[tokio::test]
async fn compaction_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let r1 = store.put(b"/c/a", Bytes::from_static(b"1")).await.unwrap();
    store.put(b"/c/b", Bytes::from_static(b"1")).await.unwrap();
    let r3 = store.put(b"/c/a", Bytes::from_static(b"2")).await.unwrap();
    store.delete(b"/c/b", None).await.unwrap();
    store.compact(r3).await.unwrap();
    let r5 = store.put(b"/c/c", Bytes::from_static(b"3")).await.unwrap();
    let before = store.range(RangeRequest::prefix("/c/")).await.unwrap();
    store.close().await;

    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(store.revision().await.unwrap(), r5);
    assert_eq!(store.compact_revision(), r3);
    assert_eq!(
        store.range(RangeRequest::prefix("/c/")).await.unwrap(),
        before
    );
    assert!(matches!(
        store
            .range(RangeRequest::prefix("/c/").at_revision(r1))
            .await,
        Err(StoreError::Compacted { .. })
    ));
    // History from the compact revision on is still there for watches.
    let mut w = store
        .watch(WatchRequest::prefix("/c/").from_revision(r3))
        .await
        .unwrap();
    let mut revs = Vec::new();
    while revs.len() < 3 {
        match w.next().await {
            Some(Ok(WatchResponse::Events(ev))) => {
                revs.extend(ev.iter().map(|e| e.kv.mod_revision))
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(revs, [r3, r3 + 1, r5]);
    store.close().await;
}
