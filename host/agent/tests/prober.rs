//! The prober end to end, without containers: real probe plugins (built by
//! `cargo xtask plugins`) against servers in the test on 127.0.0.1, `exec`
//! through a fake `ContainerExec`, custom plugins through fixture `Plugin`
//! objects. Every wait is bounded and asserts state, never elapsed time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use trellis_agent::prober::{
    ContainerProbes, PluginObjects, ProbeEvent, ProbeKind, ProbePlugins, ProbeStatus,
};
use trellis_plugin_host::{
    ContainerExec, EngineConfig, ExecError, ExecOutput, PluginEngine, PluginSource, PodScope,
};

/// How long any one expected change may take: probes here run every second.
const PATIENCE: Duration = Duration::from_secs(30);

fn plugin_dir() -> PathBuf {
    std::env::var_os("TRELLIS_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/plugins"))
}

/// Answers exec probes by the command's first word, and remembers each call.
#[derive(Default)]
struct FakeExec {
    started: AtomicBool,
    calls: Mutex<Vec<(String, Vec<String>, Duration)>>,
}

impl ContainerExec for FakeExec {
    fn exec(
        &self,
        _namespace: &str,
        _pod: &str,
        container: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        self.calls
            .lock()
            .unwrap()
            .push((container.to_string(), command.to_vec(), timeout));
        let out = |exit_code, text: &str| {
            Ok(ExecOutput {
                exit_code,
                output: text.as_bytes().to_vec(),
            })
        };
        match command[0].as_str() {
            "true" => out(0, ""),
            "false" => out(1, "probe says no\n"),
            "silent" => out(3, ""),
            "sleep" => Err(ExecError::Timeout),
            "started" if self.started.load(Ordering::SeqCst) => out(0, ""),
            "started" => out(1, "not yet\n"),
            other => Err(ExecError::Failed(format!(
                "{other}: executable file not found"
            ))),
        }
    }
}

/// `Plugin` objects from a map.
#[derive(Default)]
struct Objects(HashMap<String, Value>);

impl PluginObjects for Objects {
    fn get<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send + 'a>>
    {
        Box::pin(async move {
            self.0
                .get(name)
                .cloned()
                .ok_or_else(|| format!("plugins.trellis.dev {name:?} not found"))
        })
    }
}

fn plugin_object(name: &str, role: &str, builtin: &str, grants: Value) -> (String, Value) {
    (
        name.to_string(),
        json!({"apiVersion": "trellis.dev/v1alpha1", "kind": "Plugin",
               "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1},
               "spec": {"role": role, "source": {"builtin": builtin}, "grants": grants}}),
    )
}

fn source() -> PluginSource {
    PluginSource::new(
        PluginEngine::new(EngineConfig::default()).expect("wasm engine"),
        Some(plugin_dir()),
    )
}

fn plugins(exec: &Arc<FakeExec>) -> ProbePlugins {
    let exec: Arc<dyn ContainerExec> = exec.clone();
    ProbePlugins::new(source(), exec).unwrap_or_else(|e| panic!("{e}"))
}

fn scope() -> PodScope {
    PodScope {
        namespace: "default".into(),
        name: "shop".into(),
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        containers: vec!["web".into()],
    }
}

/// A pod whose container `web` has the given fields (probes, ports).
fn pod(web: Value, annotations: Value) -> Value {
    let mut c = json!({"name": "web", "image": "busybox"});
    for (k, v) in web.as_object().unwrap() {
        c[k] = v.clone();
    }
    json!({"metadata": {"name": "shop", "namespace": "default", "annotations": annotations},
           "spec": {"containers": [c]}})
}

fn start(plugins: &ProbePlugins, pod: &Value) -> ContainerProbes {
    ContainerProbes::start(plugins, scope(), pod, "web", SystemTime::now())
}

/// An HTTP server on 127.0.0.1 answering every request with `status`,
/// counting requests and keeping the last request's head.
struct HttpServer {
    port: u16,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    last: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn http_server(status: u16) -> HttpServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let status = Arc::new(AtomicU16::new(status));
    let hits = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(String::new()));
    let (s, h, l) = (status.clone(), hits.clone(), last.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            *l.lock().unwrap() = String::from_utf8_lossy(&head).into_owned();
            h.fetch_add(1, Ordering::SeqCst);
            let code = s.load(Ordering::SeqCst);
            let reply =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    HttpServer {
        port,
        status,
        hits,
        last,
        task,
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until the status satisfies `want`.
async fn status_until(
    probes: &ContainerProbes,
    what: &str,
    want: impl FnMut(&ProbeStatus) -> bool,
) -> ProbeStatus {
    let mut rx: watch::Receiver<ProbeStatus> = probes.status();
    let waited = tokio::time::timeout(PATIENCE, async {
        rx.wait_for(want).await.map(|s| s.clone())
    })
    .await;
    match waited {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => panic!("probing stopped before {what}: {:?}", probes.current()),
        Err(_) => panic!("no {what} within {PATIENCE:?}: {:?}", probes.current()),
    }
}

/// The next event.
async fn next_event(probes: &mut ContainerProbes) -> ProbeEvent {
    match tokio::time::timeout(PATIENCE, probes.events().recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => panic!("probing stopped"),
        Err(_) => panic!("no event within {PATIENCE:?}: {:?}", probes.current()),
    }
}

/// Events already sent.
fn drain(probes: &mut ContainerProbes) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(e) = probes.events().try_recv() {
        out.push(e.message);
    }
    out
}

/// Wait until `f` holds, polling.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_follows_an_http_endpoint_with_thresholds() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let server = http_server(200).await;
    let pod = pod(
        json!({"readinessProbe": {
            "httpGet": {"port": server.port, "path": "/healthz", "host": "shop.example",
                        "httpHeaders": [{"name": "X-Probe", "value": "yes"}]},
            "periodSeconds": 1, "failureThreshold": 3}}),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    // Nothing has run yet (the test's runtime has one thread and has not
    // yielded): no readiness before the first success.
    assert_eq!(
        probes.current(),
        ProbeStatus {
            started: true,
            ready: false,
            restart: None
        }
    );

    status_until(&probes, "ready", |s| s.ready).await;
    let head = server.last.lock().unwrap().clone();
    assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Host: shop.example\r\n"), "{head}");
    assert!(head.contains("X-Probe: yes\r\n"), "{head}");

    let before = server.hits.load(Ordering::SeqCst);
    server.status.store(500, Ordering::SeqCst);
    let s = status_until(&probes, "unready", |s| !s.ready).await;
    assert_eq!(s.restart, None);
    let failed = server.hits.load(Ordering::SeqCst) - before;
    assert!(
        failed >= 3,
        "readiness dropped after {failed} failures, before failureThreshold 3"
    );
    let events = drain(&mut probes);
    assert!(events.len() >= 3, "{events:?}");
    for e in &events {
        assert_eq!(
            e,
            "Readiness probe failed: HTTP probe failed with statuscode: 500"
        );
    }

    server.status.store(204, Ordering::SeqCst);
    status_until(&probes, "ready again", |s| s.ready).await;
}

#[tokio::test]
async fn liveness_failures_past_the_threshold_ask_for_a_restart() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let server = http_server(500).await;
    let pod = pod(
        json!({"livenessProbe": {"httpGet": {"port": server.port},
                                 "periodSeconds": 1, "failureThreshold": 2}}),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    assert!(
        probes.current().ready,
        "no readiness probe: ready once running"
    );
    let s = status_until(&probes, "restart", |s| s.restart.is_some()).await;
    assert_eq!(
        s.restart.as_deref(),
        Some("Container web failed liveness probe, will be restarted")
    );
    // The liveness probe stops at its verdict: exactly failureThreshold events.
    assert_eq!(
        drain(&mut probes),
        vec!["Liveness probe failed: HTTP probe failed with statuscode: 500"; 2]
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_startup_probe_gates_liveness_and_readiness() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let server = http_server(200).await;
    let pod = pod(
        json!({
            "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 1, "failureThreshold": 100},
            "livenessProbe": {"httpGet": {"port": server.port}, "periodSeconds": 1},
        }),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    for _ in 0..2 {
        let e = next_event(&mut probes).await;
        assert_eq!(e.probe, ProbeKind::Startup);
        assert_eq!(e.message, "Startup probe failed: not yet");
    }
    assert_eq!(
        probes.current(),
        ProbeStatus::default(),
        "not started, not ready"
    );
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        0,
        "liveness ran before startup succeeded"
    );

    exec.started.store(true, Ordering::SeqCst);
    let s = status_until(&probes, "started", |s| s.started).await;
    assert!(s.ready, "no readiness probe: ready once started");
    eventually("liveness probe after startup", || {
        server.hits.load(Ordering::SeqCst) > 0
    })
    .await;
    assert_eq!(probes.current().restart, None);
}

#[tokio::test]
async fn a_startup_probe_that_never_succeeds_asks_for_a_restart() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let pod = pod(
        json!({
            "startupProbe": {"exec": {"command": ["started"]}, "periodSeconds": 1, "failureThreshold": 2},
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
        }),
        json!({}),
    );
    let probes = start(&plugins, &pod);
    let s = status_until(&probes, "restart", |s| s.restart.is_some()).await;
    assert_eq!(
        s,
        ProbeStatus {
            started: false,
            ready: false,
            restart: Some("Container web failed startup probe, will be restarted".into())
        }
    );
    let calls = exec.calls.lock().unwrap().clone();
    assert!(
        calls.iter().all(|(_, cmd, _)| cmd == &["started"]),
        "readiness ran before startup: {calls:?}"
    );
}

#[tokio::test]
async fn tcp_socket_probes_open_and_closed_ports() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = closed_port();
    let pod = pod(
        json!({
            "readinessProbe": {"tcpSocket": {"port": open.local_addr().unwrap().port()}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": closed}, "periodSeconds": 1, "failureThreshold": 1},
        }),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    status_until(&probes, "restart", |s| s.restart.is_some()).await;
    status_until(&probes, "ready", |s| s.ready).await;
    let events = drain(&mut probes);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].starts_with(&format!(
            "Liveness probe failed: dial tcp 127.0.0.1:{closed}: connect:"
        )),
        "{events:?}"
    );
}

#[tokio::test]
async fn exec_probes_run_in_the_container_with_the_probe_timeout() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let pod = pod(
        json!({
            "readinessProbe": {"exec": {"command": ["true", "ok"]}, "periodSeconds": 1, "timeoutSeconds": 2},
            "livenessProbe": {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1},
        }),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    status_until(&probes, "ready", |s| s.ready).await;
    let s = status_until(&probes, "restart", |s| s.restart.is_some()).await;
    assert_eq!(
        s.restart.as_deref(),
        Some("Container web failed liveness probe, will be restarted")
    );
    assert_eq!(drain(&mut probes), ["Liveness probe failed: probe says no"]);
    let calls = exec.calls.lock().unwrap().clone();
    let ready = calls.iter().find(|(_, cmd, _)| cmd[0] == "true").unwrap();
    assert_eq!(
        ready,
        &(
            "web".to_string(),
            vec!["true".to_string(), "ok".to_string()],
            Duration::from_secs(2)
        )
    );
}

#[tokio::test]
async fn exec_timeouts_and_silent_failures_are_failures_with_a_message() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let pod = pod(
        json!({
            "livenessProbe": {"exec": {"command": ["sleep", "10"]}, "periodSeconds": 1, "failureThreshold": 1},
            "readinessProbe": {"exec": {"command": ["silent"]}, "periodSeconds": 1},
            "startupProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
        }),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    status_until(&probes, "restart", |s| s.restart.is_some()).await;
    let mut seen = Vec::new();
    while !(seen.iter().any(|m: &String| m.starts_with("Liveness"))
        && seen.iter().any(|m| m.starts_with("Readiness")))
    {
        seen.push(next_event(&mut probes).await.message);
    }
    assert!(
        seen.contains(&"Liveness probe failed: command \"sleep 10\" timed out".to_string()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"Readiness probe failed: command \"silent\" exited with code 3".to_string()),
        "{seen:?}"
    );
    assert!(!probes.current().ready);
}

#[tokio::test]
async fn named_ports_resolve_and_unrunnable_probes_say_why_without_counting() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let server = http_server(200).await;
    let pod = pod(
        json!({
            "ports": [{"name": "http", "containerPort": server.port}],
            "readinessProbe": {"httpGet": {"port": "http"}, "periodSeconds": 1},
            "livenessProbe": {"tcpSocket": {"port": "metrics"}, "periodSeconds": 1, "failureThreshold": 1},
        }),
        json!({}),
    );
    let mut probes = start(&plugins, &pod);
    status_until(&probes, "ready", |s| s.ready).await;
    for _ in 0..2 {
        let e = next_event(&mut probes).await;
        assert_eq!(
            e.message,
            "Liveness probe errored: tcpSocket.port: container web has no port named \"metrics\""
        );
    }
    assert_eq!(
        probes.current().restart,
        None,
        "a probe that cannot run is not a failure"
    );

    let grpc = self::pod(
        json!({"readinessProbe": {"grpc": {"port": 9000}, "periodSeconds": 1}}),
        json!({}),
    );
    let mut probes = start(&plugins, &grpc);
    let e = next_event(&mut probes).await;
    assert!(
        e.message
            .starts_with("Readiness probe errored: grpc probes are not supported"),
        "{}",
        e.message
    );
    assert!(!probes.current().ready);
}

#[tokio::test]
async fn custom_plugins_come_from_plugin_objects_with_their_grants() {
    let exec = Arc::new(FakeExec::default());
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = open.local_addr().unwrap().port();
    let objects = Objects(HashMap::from([
        plugin_object("spin", "probe", "test-probe-misbehave", json!(null)),
        plugin_object(
            "tcp",
            "probe",
            "probe-tcp-socket",
            json!({"capabilities": ["pod-network"]}),
        ),
        plugin_object("tcp-ungranted", "probe", "probe-tcp-socket", json!(null)),
        plugin_object("sched", "scheduler", "test-misbehave", json!(null)),
    ]));
    let plugins = plugins(&exec).with_plugin_objects(Arc::new(objects));
    let annotation =
        |plugin: &str, config: Value| json!({"plugin": plugin, "config": config}).to_string();

    // A plugin that loops is stopped at its deadline (timeoutSeconds plus
    // the margin) and counts as a failure.
    let spinning = pod(
        json!({"livenessProbe": {"periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 1}}),
        json!({
            "probe.trellis.dev/web.liveness": annotation("spin", json!({"mode": "loop"})),
            "probe.trellis.dev/web.readiness": annotation("tcp", json!({"tcpSocket": {"port": port}})),
        }),
    );
    let mut probes = start(&plugins, &spinning);
    let s = status_until(&probes, "restart", |s| s.restart.is_some()).await;
    assert_eq!(
        s.restart.as_deref(),
        Some("Container web failed liveness probe, will be restarted")
    );
    status_until(&probes, "ready", |s| s.ready).await;
    assert_eq!(
        drain(&mut probes),
        ["Liveness probe errored: probe plugin spin: plugin exceeded its deadline of 2s"]
    );

    // A plugin's failure message, a plugin refused for its grants, a wrong
    // role and a missing object.
    let broken = pod(
        json!({"readinessProbe": {"periodSeconds": 1}}),
        json!({
            "probe.trellis.dev/web.readiness": annotation("spin", json!({"mode": "fail"})),
            "probe.trellis.dev/web.liveness": annotation("tcp-ungranted", json!({"tcpSocket": {"port": port}})),
            "probe.trellis.dev/web.startup": annotation("sched", json!({})),
        }),
    );
    let mut probes = start(&plugins, &broken);
    let startup = next_event(&mut probes).await;
    assert!(
        startup.message.starts_with("Startup probe errored: probe plugin \"sched\": plugin \"sched\" has role \"scheduler\", not \"probe\""),
        "{}",
        startup.message
    );
    assert!(!probes.current().started);
    drop(probes);

    let ungranted = pod(
        json!({}),
        json!({
            "probe.trellis.dev/web.liveness": annotation("tcp-ungranted", json!({"tcpSocket": {"port": port}})),
            "probe.trellis.dev/web.readiness": annotation("spin", json!({"mode": "fail"})),
        }),
    );
    let mut probes = start(&plugins, &ungranted);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let e = next_event(&mut probes).await;
        if !seen.iter().any(|s: &ProbeEvent| s.probe == e.probe) {
            seen.push(e);
        }
    }
    seen.sort_by_key(|e| e.probe == ProbeKind::Readiness);
    assert!(
        seen[0].message.contains("probe plugin \"tcp-ungranted\"")
            && seen[0].message.contains("not granted"),
        "{}",
        seen[0].message
    );
    assert_eq!(seen[1].message, "Readiness probe failed: asked to fail");
    assert_eq!(
        probes.current().restart,
        None,
        "a load failure is not counted"
    );

    let missing = pod(
        json!({}),
        json!({"probe.trellis.dev/web.readiness": annotation("nope", json!({}))}),
    );
    let mut probes = start(&plugins, &missing);
    let e = next_event(&mut probes).await;
    assert!(
        e.message
            .contains("probe plugin \"nope\": cannot read its Plugin object"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn without_plugin_objects_custom_probes_say_so() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let pod = pod(
        json!({}),
        json!({"probe.trellis.dev/web.readiness": r#"{"plugin": "spin"}"#}),
    );
    let mut probes = start(&plugins, &pod);
    let e = next_event(&mut probes).await;
    assert!(
        e.message.contains("cannot read Plugin objects"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn no_probes_means_started_and_ready_and_dropping_stops_probing() {
    let exec = Arc::new(FakeExec::default());
    let plugins = plugins(&exec);
    let probes = start(&plugins, &pod(json!({}), json!({})));
    assert_eq!(
        probes.current(),
        ProbeStatus {
            started: true,
            ready: true,
            restart: None
        }
    );
    assert!(
        probes.status().changed().await.is_err(),
        "nothing can change it"
    );

    let server = http_server(200).await;
    let probes = start(
        &plugins,
        &pod(
            json!({"readinessProbe": {"httpGet": {"port": server.port}, "periodSeconds": 1}}),
            json!({}),
        ),
    );
    status_until(&probes, "ready", |s| s.ready).await;
    let mut rx = probes.status();
    rx.borrow_and_update();
    drop(probes);
    let stopped = tokio::time::timeout(PATIENCE, rx.changed()).await;
    assert!(
        matches!(stopped, Ok(Err(_))),
        "the probe kept running after drop: {stopped:?}"
    );
}
