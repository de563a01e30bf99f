//! API server benchmark: each figure beside the bare store underneath, in one
//! run. A real `trellis up` (TLS, HTTP/1.1 keep-alive, one connection per
//! client) against an `EmbeddedStore` opened in this process on the same disk.
//!
//! Run: `cargo bench -p trellis --bench api`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::rss_kib;
use http_body_util::BodyExt as _;
use trellis_store::{EmbeddedStore, RangeRequest, Store, WatchRequest, WatchResponse};

const CLIENTS: usize = 16;
const OPS_PER_CLIENT: usize = 250;
const LIST_PODS: usize = 10_000;
const WATCHERS: usize = 1_000;
const WATCH_EVENTS: usize = 20;

fn pod(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"],
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    })
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let base = std::env::var_os("TRELLIS_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let api_dir = tempfile::tempdir_in(&base).unwrap();
    let store_dir = tempfile::tempdir_in(&base).unwrap();
    let server = common::start(api_dir.path(), &[]);
    let pid = server.child.id();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(store_dir.path()).await.unwrap());
    {
        let mut c = server.client().await;
        for _ in 0..50 {
            if c.call("GET", "/readyz", vec![]).await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(pid);
    println!("trellis API benchmark ({CLIENTS} clients, {OPS_PER_CLIENT} ops each; TLS, keep-alive; embedded store on the same disk)\n");

    // Creates.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            for j in 0..OPS_PER_CLIENT {
                let body = serde_json::to_vec(&pod(&format!("p-{i}-{j}"))).unwrap();
                let (code, _) = c
                    .call("POST", "/api/v1/namespaces/default/pods", body)
                    .await;
                assert_eq!(code, 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let api_create = t.elapsed();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..OPS_PER_CLIENT {
                let body = serde_json::to_vec(&pod(&format!("p-{i}-{j}"))).unwrap();
                store
                    .create(
                        format!("/registry/core/pods/default/p-{i}-{j}").as_bytes(),
                        Bytes::from(body),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store_create = t.elapsed();

    // Gets.
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            for j in 0..OPS_PER_CLIENT {
                let (code, _) = c
                    .call(
                        "GET",
                        &format!("/api/v1/namespaces/default/pods/p-{i}-{j}"),
                        vec![],
                    )
                    .await;
                assert_eq!(code, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let api_get = t.elapsed();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for j in 0..OPS_PER_CLIENT {
                let kv = store
                    .get(format!("/registry/core/pods/default/p-{i}-{j}").as_bytes())
                    .await
                    .unwrap()
                    .unwrap();
                std::hint::black_box(
                    serde_json::from_slice::<serde_json::Value>(&kv.value).unwrap(),
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let store_get = t.elapsed();
    let n = CLIENTS * OPS_PER_CLIENT;
    println!("| operation                  |      API |  bare store | store/API |");
    println!("|----------------------------|---------:|------------:|----------:|");
    let row = |what: &str, a: f64, s: f64, unit: &str| {
        println!(
            "| {what:<26} | {a:>8.0} | {s:>11.0} | {:>8.2}x | {unit}",
            s / a
        )
    };
    row(
        "creates/s (16 clients)",
        per_sec(n, api_create),
        per_sec(n, store_create),
        "durable",
    );
    row(
        "gets/s (16 clients)",
        per_sec(n, api_get),
        per_sec(n, store_get),
        "store side decodes JSON too",
    );

    // LIST of 10,000 pods (fill both up to 10,000).
    let mut c = server.client().await;
    let mut fill = Vec::new();
    for k in n..LIST_PODS {
        let mut c = server.client().await;
        if fill.len() < CLIENTS {
            fill.push(tokio::spawn(async move {
                let mut k = k;
                while k < LIST_PODS {
                    let body = serde_json::to_vec(&pod(&format!("q-{k}"))).unwrap();
                    assert_eq!(
                        c.call("POST", "/api/v1/namespaces/default/pods", body)
                            .await
                            .0,
                        201
                    );
                    k += CLIENTS;
                }
            }));
        } else {
            break;
        }
    }
    for f in fill {
        f.await.unwrap();
    }
    let mut fill = Vec::new();
    for w in 0..CLIENTS {
        let store = store.clone();
        fill.push(tokio::spawn(async move {
            let mut k = n + w;
            while k < LIST_PODS {
                let body = serde_json::to_vec(&pod(&format!("q-{k}"))).unwrap();
                store
                    .create(
                        format!("/registry/core/pods/default/q-{k}").as_bytes(),
                        Bytes::from(body),
                    )
                    .await
                    .unwrap();
                k += CLIENTS;
            }
        }));
    }
    for f in fill {
        f.await.unwrap();
    }
    let (mut api_list, mut store_list) = (Vec::new(), Vec::new());
    let mut count = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let (code, body) = c
            .call("GET", "/api/v1/namespaces/default/pods", vec![])
            .await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        api_list.push(t.elapsed());
        count = v["items"].as_array().unwrap().len();
        let t = Instant::now();
        let r = store
            .range(RangeRequest::prefix(&b"/registry/core/pods/default/"[..]))
            .await
            .unwrap();
        let items: Vec<serde_json::Value> = r
            .kvs
            .iter()
            .map(|kv| serde_json::from_slice(&kv.value).unwrap())
            .collect();
        std::hint::black_box(items);
        store_list.push(t.elapsed());
    }
    assert_eq!(count, LIST_PODS);
    let (a, s) = (median(api_list), median(store_list));
    println!("| LIST {LIST_PODS} pods (ms, median) | {:>8.1} | {:>11.1} | {:>8.2}x | client parses the JSON", ms(a), ms(s), ms(a) / ms(s));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_full = rss_kib(pid);

    // Watch fan-out: WATCHERS HTTP watches vs WATCHERS store watches, WATCH_EVENTS writes.
    let rv: i64 = {
        let (_, body) = c
            .call("GET", "/api/v1/namespaces/default/configmaps", vec![])
            .await;
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Instant>(WATCHERS);
    for _ in 0..WATCHERS {
        let mut w = server.client().await;
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            w.send.ready().await.unwrap();
            let req = w.request(
                "GET",
                &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
                vec![],
            );
            let resp = w.send.send_request(req).await.unwrap();
            let mut body = resp.into_body();
            let mut seen = 0;
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { return };
                if let Some(d) = frame.data_ref() {
                    buf.extend_from_slice(d);
                    seen += buf.iter().filter(|b| **b == b'\n').count();
                    buf.retain(|_| false);
                }
                if seen >= WATCH_EVENTS {
                    let _ = done_tx.send(Instant::now()).await;
                    return;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    for k in 0..WATCH_EVENTS {
        let body = serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w-{k}")}})).unwrap();
        assert_eq!(
            c.call("POST", "/api/v1/namespaces/default/configmaps", body)
                .await
                .0,
            201
        );
    }
    let mut last = t;
    let mut lags = Vec::new();
    for _ in 0..WATCHERS {
        match tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
            Ok(Some(at)) => {
                lags.push(at - t);
                last = last.max(at);
            }
            _ => break,
        }
    }
    let api_watch = (lags.len(), last - t, median(lags.clone()));
    let srev = store.revision().await.unwrap();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Instant>(WATCHERS);
    for _ in 0..WATCHERS {
        let mut w = store
            .watch(
                WatchRequest::prefix(&b"/registry/core/configmaps/default/"[..])
                    .from_revision(srev + 1),
            )
            .await
            .unwrap();
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(Ok(r)) = w.next().await {
                if let WatchResponse::Events(ev) = r {
                    for e in &ev {
                        std::hint::black_box(
                            serde_json::from_slice::<serde_json::Value>(&e.kv.value).ok(),
                        );
                    }
                    seen += ev.len();
                }
                if seen >= WATCH_EVENTS {
                    let _ = done_tx.send(Instant::now()).await;
                    return;
                }
            }
        });
    }
    let t = Instant::now();
    for k in 0..WATCH_EVENTS {
        let body = serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("w-{k}")}})).unwrap();
        store
            .create(
                format!("/registry/core/configmaps/default/w-{k}").as_bytes(),
                Bytes::from(body),
            )
            .await
            .unwrap();
    }
    let mut slast = t;
    let mut slags = Vec::new();
    for _ in 0..WATCHERS {
        match tokio::time::timeout(Duration::from_secs(60), done_rx.recv()).await {
            Ok(Some(at)) => {
                slags.push(at - t);
                slast = slast.max(at);
            }
            _ => break,
        }
    }
    let api_rate = per_sec(api_watch.0 * WATCH_EVENTS, api_watch.1);
    let store_rate = per_sec(slags.len() * WATCH_EVENTS, slast - t);
    println!(
        "| watch fan-out events/s     | {api_rate:>8.0} | {store_rate:>11.0} | {:>8.2}x | {WATCHERS} watchers x {WATCH_EVENTS} events; delivered {}/{} vs {}/{}",
        store_rate / api_rate,
        api_watch.0,
        WATCHERS,
        slags.len(),
        WATCHERS
    );
    println!(
        "| watch: all delivered (ms)  | {:>8.1} | {:>11.1} | {:>8.2}x | median watcher done {:.1} ms vs {:.1} ms",
        ms(api_watch.1),
        ms(slast - t),
        ms(api_watch.1) / ms(slast - t).max(0.001),
        ms(api_watch.2),
        ms(median(slags))
    );
    println!(
        "\nRSS of trellis up: idle {} MiB; with {LIST_PODS} pods stored {} MiB",
        rss_idle / 1024,
        rss_full / 1024
    );
}
