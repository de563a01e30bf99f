//! Store benchmark: the embedded backend, the etcd backend and raw `etcd-client` in one
//! run, against a real etcd this program starts itself.
//!
//! Usage: `cargo run --release -p trellis-store --bin store-bench [-- --quick]`
//! Data directories go under `TRELLIS_BENCH_DIR` (default: the system temp directory);
//! put it on the disk you want to measure.
//!
//! Figures: durable puts/s with 1, 16 and 64 concurrent writers (median of 3 runs), gets/s
//! (16 readers), range of 10,000 keys (median latency), and watch fan-out to 1,000
//! watchers (events delivered per second, lag from write to delivery p50/p99).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use trellis_store::testing::EtcdServer;
use trellis_store::{
    Bytes, EmbeddedConfig, EmbeddedStore, RangeRequest, Store, WatchRequest, WatchResponse,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type PutFn = Arc<
    dyn Fn(Vec<u8>, Bytes) -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>
        + Send
        + Sync,
>;

const VALUE_BYTES: usize = 256;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Run `writers` tasks putting unique keys for `secs`; returns puts/s.
async fn put_rate(put: PutFn, tag: &str, writers: usize, secs: f64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let put = put.clone();
            let count = count.clone();
            let tag = tag.to_string();
            tokio::spawn(async move {
                let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("/bench/put/{tag}/{w}/{i}").into_bytes();
                    put(key, value.clone()).await.expect("put");
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn store_put(store: Arc<dyn Store>) -> PutFn {
    Arc::new(move |k, v| {
        let store = store.clone();
        Box::pin(async move {
            store.put(&k, v).await?;
            Ok(())
        })
    })
}

fn raw_put(client: etcd_client::Client) -> PutFn {
    Arc::new(move |k, v| {
        let mut kv = client.kv_client();
        Box::pin(async move {
            kv.put(k, v.to_vec(), None).await?;
            Ok(())
        })
    })
}

async fn get_rate(store: Arc<dyn Store>, keys: usize, readers: usize, secs: f64) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..readers)
        .map(|r| {
            let store = store.clone();
            let count = count.clone();
            tokio::spawn(async move {
                let mut i = r * 7919;
                while Instant::now() < deadline {
                    let key = format!("/bench/range/{:06}", i % keys);
                    assert!(store.get(key.as_bytes()).await.unwrap().is_some());
                    count.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn preload(store: &Arc<dyn Store>, keys: usize) {
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = store.clone();
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= keys {
                        break;
                    }
                    let key = format!("/bench/range/{i:06}");
                    store
                        .put(key.as_bytes(), Bytes::from(vec![b'r'; VALUE_BYTES]))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn range_latency_ms(store: &Arc<dyn Store>, keys: usize) -> f64 {
    let mut samples = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        let resp = store
            .range(RangeRequest::prefix("/bench/range/"))
            .await
            .unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(resp.kvs.len(), keys);
    }
    median(samples)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct FanOut {
    events_per_sec: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
}

/// `watchers` watches on one prefix; 16 writers put `events` keys carrying their write
/// time; every watcher must receive every event.
async fn fan_out(store: Arc<dyn Store>, tag: &str, watchers: usize, events: usize) -> FanOut {
    let prefix = format!("/bench/watch/{tag}/");
    let mut handles = Vec::new();
    for _ in 0..watchers {
        let w = store
            .watch(WatchRequest::prefix(prefix.clone()))
            .await
            .unwrap();
        handles.push(tokio::spawn(async move {
            let mut w = w;
            let mut lags = Vec::with_capacity(events);
            while lags.len() < events {
                match w.next().await {
                    Some(Ok(WatchResponse::Events(ev))) => {
                        let now = now_micros();
                        for e in ev {
                            let sent: u64 = std::str::from_utf8(&e.kv.value[..20])
                                .unwrap()
                                .parse()
                                .unwrap();
                            lags.push(now.saturating_sub(sent));
                        }
                    }
                    Some(Ok(WatchResponse::Progress { .. })) => {}
                    other => panic!("watch failed: {other:?}"),
                }
            }
            (lags, Instant::now())
        }));
    }
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            let next = next.clone();
            let prefix = prefix.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= events {
                        break;
                    }
                    let mut value = format!("{:020}", now_micros()).into_bytes();
                    value.resize(VALUE_BYTES, b'w');
                    store
                        .put(format!("{prefix}{i}").as_bytes(), Bytes::from(value))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let mut lags = Vec::new();
    let mut last = start;
    for h in handles {
        let (l, done) = h.await.unwrap();
        lags.extend(l);
        last = last.max(done);
    }
    lags.sort_unstable();
    let pct = |p: f64| lags[((lags.len() as f64 - 1.0) * p) as usize] as f64 / 1e3;
    FanOut {
        events_per_sec: lags.len() as f64 / (last - start).as_secs_f64(),
        lag_p50_ms: pct(0.50),
        lag_p99_ms: pct(0.99),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let secs = if quick { 0.5 } else { 1.5 };
    let reps = if quick { 1 } else { 3 };
    let base = std::env::var_os("TRELLIS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("trellis-store-bench-")
        .tempdir_in(&base)?;
    eprintln!("data under {} ; starting etcd...", dir.path().display());
    let etcd = EtcdServer::start_in(dir.path()).await?;
    let mut cfg = EmbeddedConfig::new(dir.path().join("embedded"));
    cfg.compaction_interval = None;
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open_with(cfg).await?);
    let etcd_store: Arc<dyn Store> = Arc::new(etcd.store().await?);
    let raw = etcd_client::Client::connect([etcd.endpoint()], None).await?;

    let targets: Vec<(&str, PutFn)> = vec![
        ("embedded", store_put(embedded.clone())),
        ("etcd backend", store_put(etcd_store.clone())),
        ("raw etcd-client", raw_put(raw.clone())),
    ];
    // Runs are interleaved (rep by rep, target by target) so drift in the machine's
    // load or in etcd's state affects every target alike.
    let mut runs = vec![vec![Vec::new(); 3]; targets.len()];
    for (wi, writers) in [1usize, 16, 64].into_iter().enumerate() {
        for rep in 0..reps {
            for (ti, (name, put)) in targets.iter().enumerate() {
                let tag = format!("{}-{writers}-{rep}", name.replace(' ', "_"));
                let rate = put_rate(put.clone(), &tag, writers, secs).await;
                eprintln!("{name:>16} {writers:>2} writers, run {rep}: {rate:>8.0} puts/s");
                runs[ti][wi].push(rate);
            }
        }
    }
    let put_table: Vec<(&str, Vec<f64>)> = targets
        .iter()
        .zip(runs)
        .map(|((name, _), r)| (*name, r.into_iter().map(median).collect()))
        .collect();

    let keys = 10_000;
    let mut reads = Vec::new();
    for (name, store) in [("embedded", &embedded), ("etcd backend", &etcd_store)] {
        preload(store, keys).await;
        let gets = get_rate(store.clone(), keys, 16, secs).await;
        let range = range_latency_ms(store, keys).await;
        eprintln!("{name:>16}: {gets:.0} gets/s, range of {keys} keys {range:.1} ms");
        reads.push((name, gets, range));
    }

    let watchers = 1000;
    let events = if quick { 100 } else { 300 };
    let mut fan = Vec::new();
    for (name, store) in [("embedded", &embedded), ("etcd backend", &etcd_store)] {
        let f = fan_out(store.clone(), &name.replace(' ', "_"), watchers, events).await;
        eprintln!(
            "{name:>16}: fan-out {:.0} events/s, lag p50 {:.1} ms p99 {:.1} ms",
            f.events_per_sec, f.lag_p50_ms, f.lag_p99_ms
        );
        fan.push((name, f));
    }

    println!();
    println!(
        "trellis-store benchmark ({secs} s per run, median of {reps}; values {VALUE_BYTES} B; etcd-server 3.4 through etcd-client 0.21)"
    );
    println!();
    println!("| durable puts/s      | 1 writer | 16 writers | 64 writers |");
    println!("|---------------------|---------:|-----------:|-----------:|");
    for (name, row) in &put_table {
        println!(
            "| {name:<19} | {:>8.0} | {:>10.0} | {:>10.0} |",
            row[0], row[1], row[2]
        );
    }
    let ratio = |i: usize| put_table[2].1[i] / put_table[1].1[i];
    println!(
        "| raw / etcd backend  | {:>7.2}x | {:>9.2}x | {:>9.2}x |",
        ratio(0),
        ratio(1),
        ratio(2)
    );
    println!();
    println!("| reads               | gets/s (16 readers) | range of {keys} keys (median) |");
    println!("|---------------------|--------------------:|-----------------------------:|");
    for (name, gets, range) in &reads {
        println!("| {name:<19} | {gets:>19.0} | {range:>25.1} ms |");
    }
    println!();
    println!("| watch fan-out, {watchers} watchers x {events} events | events/s delivered | lag p50 | lag p99 |");
    println!(
        "|------------------------------------------|-------------------:|--------:|--------:|"
    );
    for (name, f) in &fan {
        println!(
            "| {name:<40} | {:>18.0} | {:>4.1} ms | {:>4.1} ms |",
            f.events_per_sec, f.lag_p50_ms, f.lag_p99_ms
        );
    }
    drop(etcd);
    Ok(())
}
