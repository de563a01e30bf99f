//! Crash-test helper: opens an embedded store and writes as fast as it can from several
//! tasks, printing each key on stdout (one line, flushed) once its put is acknowledged.
//! The durability test kills it with SIGKILL and checks every printed key survived.
//!
//! Usage: `store-crash-writer <data-dir> <run-id>`

use std::io::Write;

use trellis_store::{Bytes, EmbeddedStore, Store};

const TASKS: usize = 8;

/// The value written for `key`: the key repeated, 0.5-6 KiB so records straddle pages.
fn value_for(key: &str, seq: u64) -> Vec<u8> {
    let len = 512 + (seq as usize * 797) % 6000;
    key.as_bytes().iter().copied().cycle().take(len).collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(run)) = (args.next(), args.next()) else {
        return Err("usage: store-crash-writer <data-dir> <run-id>".into());
    };
    let store = EmbeddedStore::open(&dir).await?;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            for seq in 0u64.. {
                let key = format!("/crash/{run}/{t}/{seq}");
                store
                    .put(key.as_bytes(), Bytes::from(value_for(&key, seq)))
                    .await?;
                {
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{key}")?;
                    out.flush()?;
                }
                // Now and then compact, so kills also land in the middle of log rewrites.
                if t == 0 && seq % 300 == 299 {
                    let rev = store.revision().await?;
                    store.compact(rev - 50).await?;
                }
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| e.to_string())?;
    }
    Ok(())
}
