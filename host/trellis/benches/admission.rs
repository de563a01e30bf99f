//! Admission benchmark: the latency a create gains from the admission chain,
//! in one run. Two real `trellis up` servers side by side: one with the
//! default chain (LimitRange, ResourceQuota) plus the team-label example
//! plugin, in a namespace that has a LimitRange and a ResourceQuota; one
//! with no admission chain at all. One keep-alive client creates pods (and
//! Deployments, which the example plugin reviews) one after another in
//! each, interleaved in rounds so both see the same machine.
//!
//! Run: `cargo bench -p trellis --bench admission` (after `cargo xtask plugins`).

mod common;

use std::time::{Duration, Instant};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 100;

fn pod(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "labels": {"app": "bench"}},
        // No profile serves this name, so the scheduler beside the chain
        // leaves these pods alone (it would otherwise write events).
        "spec": {"schedulerName": "bench-none", "containers": [{"name": "app", "image": "busybox:1.36"}]}
    }))
    .unwrap()
}

fn deployment(name: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "bench", "labels": {"team": "bench"}},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}}}
    }))
    .unwrap()
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn post(c: &mut common::Client, path: &str, body: Vec<u8>) -> Duration {
    let t = Instant::now();
    let (code, body) = c.call("POST", path, body).await;
    let took = t.elapsed();
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    took
}

async fn setup(c: &mut common::Client, chain: bool) {
    let ns = br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bench"}}"#.to_vec();
    assert_eq!(c.call("POST", "/api/v1/namespaces", ns).await.0, 201);
    if !chain {
        return;
    }
    let lr = serde_json::json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "100m", "memory": "64Mi"},
                             "max": {"cpu": "2"}, "min": {"cpu": "10m"}}]}});
    let rq = serde_json::json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota"},
        "spec": {"hard": {"pods": "100000", "requests.cpu": "100000", "limits.memory": "10000Gi",
                          "count/deployments.apps": "100000"}}});
    let wasm = std::fs::read(trellis_testkit::plugin_dir().join("team-label.wasm"))
        .expect("run `cargo xtask plugins` first");
    use base64::Engine as _;
    let plugin = serde_json::json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "Plugin",
        "metadata": {"name": "team-label"},
        "spec": {"role": "admission", "source": {"wasm": base64::engine::general_purpose::STANDARD.encode(wasm)}}});
    let chain = serde_json::json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "AdmissionChain",
        "metadata": {"name": "teams"},
        "spec": {"plugins": [{"name": "team-label", "type": "Mutating",
            "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["deployments"]}]}]}});
    for (path, obj) in [
        ("/api/v1/namespaces/bench/limitranges", lr),
        ("/api/v1/namespaces/bench/resourcequotas", rq),
        ("/apis/trellis.dev/v1alpha1/plugins", plugin),
        ("/apis/trellis.dev/v1alpha1/admissionchains", chain),
    ] {
        let (code, body) = c
            .call("POST", path, serde_json::to_vec(&obj).unwrap())
            .await;
        assert_eq!(code, 201, "{path}: {}", String::from_utf8_lossy(&body));
    }
    // Ready when the quota has its usage, both chains are active and the
    // scheduler has built its profile (it compiles its plugins first, which
    // would otherwise overlap the measurement).
    for _ in 0..600 {
        let (_, q) = c
            .call(
                "GET",
                "/api/v1/namespaces/bench/resourcequotas/quota",
                vec![],
            )
            .await;
        let q: serde_json::Value = serde_json::from_slice(&q).unwrap();
        let mut active = 0;
        for path in [
            "admissionchains/default",
            "admissionchains/teams",
            "schedulerprofiles/default-scheduler",
        ] {
            let (_, ch) = c
                .call("GET", &format!("/apis/trellis.dev/v1alpha1/{path}"), vec![])
                .await;
            let ch: serde_json::Value = serde_json::from_slice(&ch).unwrap();
            if ch["status"]["conditions"][0]["status"] == "True" {
                active += 1;
            }
        }
        if q["status"]["used"]["pods"] == "0" && active == 3 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the admission chain did not become ready");
}

#[tokio::main]
async fn main() {
    let plugins = trellis_testkit::plugin_dir();
    let plugins = plugins.to_str().unwrap();
    let with_dir = tempfile::tempdir().unwrap();
    let without_dir = tempfile::tempdir().unwrap();
    // No controllers in either: they would add background work (ReplicaSets
    // and pods for every Deployment) to one server and not the other.
    let with = common::start(
        with_dir.path(),
        &["--plugin-dir", plugins, "--no-controllers"],
    );
    // No plugin directory: no admission chain runs (and no scheduler).
    let without = common::start(
        without_dir.path(),
        &["--plugin-dir", "/nonexistent", "--no-controllers"],
    );
    let mut cw = with.client().await;
    let mut cn = without.client().await;
    for c in [&mut cw, &mut cn] {
        for _ in 0..100 {
            if c.call("GET", "/readyz", vec![]).await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    setup(&mut cw, true).await;
    setup(&mut cn, false).await;
    let check: serde_json::Value = {
        let (_, b) = cw
            .call("POST", "/api/v1/namespaces/bench/pods", pod("probe"))
            .await;
        serde_json::from_slice(&b).unwrap()
    };
    assert_eq!(
        check["spec"]["containers"][0]["resources"]["limits"]["cpu"], "100m",
        "the chain runs (LimitRange defaulted the probe pod)"
    );

    let (mut pw, mut pn, mut dw, mut dn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..ROUNDS {
        for i in 0..PER_ROUND {
            let name = format!("p-{r}-{i}");
            pw.push(post(&mut cw, "/api/v1/namespaces/bench/pods", pod(&name)).await);
            pn.push(post(&mut cn, "/api/v1/namespaces/bench/pods", pod(&name)).await);
        }
        for i in 0..PER_ROUND / 4 {
            let name = format!("d-{r}-{i}");
            let path = "/apis/apps/v1/namespaces/bench/deployments";
            dw.push(post(&mut cw, path, deployment(&name)).await);
            dn.push(post(&mut cn, path, deployment(&name)).await);
        }
    }
    println!("admission benchmark: sequential creates over one keep-alive TLS connection, {ROUNDS} interleaved rounds\n");
    println!(
        "{:<34} {:>10} {:>10} {:>12} {:>12}",
        "", "p50 µs", "p99 µs", "added p50", "added p99"
    );
    for (what, w, n) in [
        ("pod: LimitRange + ResourceQuota", &mut pw, &mut pn),
        ("deployment: + team-label, quota", &mut dw, &mut dn),
    ] {
        let (w50, w99) = (percentile(w, 0.5), percentile(w, 0.99));
        let (n50, n99) = (percentile(n, 0.5), percentile(n, 0.99));
        println!(
            "{:<34} {:>10.0} {:>10.0}",
            format!("{what} (chain)"),
            us(w50),
            us(w99)
        );
        println!(
            "{:<34} {:>10.0} {:>10.0} {:>12.0} {:>12.0}",
            format!("{what} (none)"),
            us(n50),
            us(n99),
            us(w50) - us(n50),
            us(w99) - us(n99)
        );
    }
    println!("\ntarget: p99 added ≤ 1,000 µs");
}
