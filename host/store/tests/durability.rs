//! Durability: a child process writes as fast as it can and reports each acknowledged key;
//! it is killed with SIGKILL at random moments; after every kill the store must reopen
//! cleanly with every acknowledged write present and its revision never going back.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trellis_store::{EmbeddedStore, Store};

const KILLS: usize = 24;

/// Same as `value_for` in the writer binary.
fn value_for(key: &str, seq: u64) -> Vec<u8> {
    let len = 512 + (seq as usize * 797) % 6000;
    key.as_bytes().iter().copied().cycle().take(len).collect()
}

/// xorshift: enough randomness for kill delays, reproducible from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (rerun with CRASH_SEED={seed})");
    let mut rng = seed;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut acked: Vec<String> = Vec::new();
    let mut last_revision = 0;
    for run in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_store-crash-writer"))
            .arg(dir.path())
            .arg(run.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn store-crash-writer");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut keys = Vec::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    // A line without its newline was cut by the kill: not a report.
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.last() != Some(&b'\n') => break,
                    Ok(_) => {
                        let key = String::from_utf8(line[..line.len() - 1].to_vec()).unwrap();
                        if keys.is_empty() {
                            let _ = tx.send(());
                        }
                        keys.push(key);
                    }
                }
            }
            keys
        });
        // Kill at a random moment after the writer is demonstrably writing.
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the writer acknowledged nothing within 60 s");
        std::thread::sleep(Duration::from_millis(10 + next(&mut rng) % 400));
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        let keys = reader.join().unwrap();
        assert!(!keys.is_empty());
        acked.extend(keys);

        rt.block_on(async {
            let store = EmbeddedStore::open(dir.path()).await.unwrap_or_else(|e| {
                panic!("run {run}: store must reopen cleanly after SIGKILL: {e}")
            });
            let revision = store.revision().await.unwrap();
            assert!(
                revision >= last_revision,
                "revision went back from {last_revision} to {revision}"
            );
            last_revision = revision;
            for key in &acked {
                let seq: u64 = key.rsplit('/').next().unwrap().parse().unwrap();
                let kv = store.get(key.as_bytes()).await.unwrap().unwrap_or_else(|| {
                    panic!("run {run}: acknowledged key {key} lost (seed {seed})")
                });
                assert_eq!(
                    kv.value.as_ref(),
                    value_for(key, seq).as_slice(),
                    "value of {key}"
                );
            }
            store.close().await;
        });
        eprintln!(
            "run {run}: {} acknowledged writes verified, revision {last_revision}",
            acked.len()
        );
    }
}
