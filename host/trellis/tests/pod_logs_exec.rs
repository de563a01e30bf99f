//! `kubectl logs` and `kubectl exec` through the API server to a node agent's
//! kubelet-like server (`trellis_agent::server`) run in the test, whose
//! services are fakes: CRI log files in a temp dir, and commands run on the
//! host. The Node object points at it through its InternalIP and
//! `daemonEndpoints.kubeletEndpoint.Port`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Cluster;
use serde_json::{json, Value};
use trellis_agent::server::{BoxFuture, ExecOutput, LogFile, NodeServices, ServiceError};

/// One fake container: its log files and whether it runs.
struct FakeContainer {
    running: Arc<AtomicBool>,
    log: PathBuf,
    previous: Option<PathBuf>,
}

/// The agent's services over a temp dir of CRI logs; exec runs on the host.
#[derive(Default)]
struct FakeNode {
    containers: Mutex<HashMap<(String, String), FakeContainer>>,
}

impl NodeServices for FakeNode {
    fn container_log(
        &self,
        _namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogFile, ServiceError> {
        let all = self.containers.lock().unwrap();
        let c = all
            .get(&(pod.to_string(), container.to_string()))
            .ok_or_else(|| {
                ServiceError::NotFound(format!("container not found ({container:?})"))
            })?;
        if previous {
            return c.previous.clone().map(LogFile::finished).ok_or_else(|| {
                ServiceError::BadRequest(format!(
                    "previous terminated container {container:?} in pod {pod:?} not found"
                ))
            });
        }
        let running = c.running.clone();
        Ok(LogFile::new(c.log.clone(), move || {
            running.load(Ordering::SeqCst)
        }))
    }

    fn exec(
        &self,
        _namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> BoxFuture<'static, Result<ExecOutput, ServiceError>> {
        let known = self
            .containers
            .lock()
            .unwrap()
            .get(&(pod.to_string(), container.to_string()))
            .is_some_and(|c| c.running.load(Ordering::SeqCst));
        let container = container.to_string();
        Box::pin(async move {
            if !known {
                return Err(ServiceError::NotFound(format!(
                    "container not found ({container:?})"
                )));
            }
            let mut cmd = tokio::process::Command::new(&command[0]);
            cmd.args(&command[1..])
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|e| ServiceError::Internal(format!("starting {command:?}: {e}")))?;
            if let Some(input) = stdin {
                use tokio::io::AsyncWriteExt;
                let mut pipe = child.stdin.take().expect("piped");
                pipe.write_all(&input).await.ok();
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))?;
            Ok(ExecOutput {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.status.code().unwrap_or(255),
            })
        })
    }
}

/// The in-test agent server, stopped on drop.
struct Agent {
    node: Arc<FakeNode>,
    dir: tempfile::TempDir,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Agent {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let node = Arc::new(FakeNode::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(trellis_agent::server::serve(
            listener,
            node.clone(),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        Agent {
            node,
            dir: tempfile::tempdir().unwrap(),
            port,
            stop: Some(stop),
            rt: Some(rt),
        }
    }

    /// Add a container whose current log is `log` (and previous run's log,
    /// when given); returns its running switch.
    fn container(
        &self,
        pod: &str,
        container: &str,
        log: &str,
        previous: Option<&str>,
    ) -> Arc<AtomicBool> {
        let path = self.dir.path().join(format!("{pod}_{container}.log"));
        std::fs::write(&path, log).unwrap();
        let prev = previous.map(|p| {
            let path = self.dir.path().join(format!("{pod}_{container}.0.log"));
            std::fs::write(&path, p).unwrap();
            path
        });
        let running = Arc::new(AtomicBool::new(true));
        self.node.containers.lock().unwrap().insert(
            (pod.into(), container.into()),
            FakeContainer {
                running: running.clone(),
                log: path,
                previous: prev,
            },
        );
        running
    }

    fn append(&self, pod: &str, container: &str, records: &str) {
        let path = self.dir.path().join(format!("{pod}_{container}.log"));
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(records.as_bytes()).unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
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

fn post(c: &Cluster, path: &str, body: &Value) {
    let (code, text) = c.http(
        "POST",
        path,
        Some(body.to_string().as_bytes()),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 201, "POST {path}: {text}");
}

/// A Node whose agent listens on 127.0.0.1:`port`.
fn create_node(c: &Cluster, name: &str, port: u16) {
    post(
        c,
        "/api/v1/nodes",
        &json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name},
            "status": {
                "addresses": [
                    {"type": "Hostname", "address": name},
                    {"type": "InternalIP", "address": "127.0.0.1"},
                ],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            },
        }),
    );
}

/// A pod with `containers` on `node` (None: unscheduled, and no scheduler
/// takes it), with `statuses` as its container statuses.
fn create_pod(
    c: &Cluster,
    name: &str,
    containers: &[&str],
    node: Option<&str>,
    annotations: Value,
    statuses: Value,
) {
    let mut spec = json!({
        "containers": containers.iter().map(|n| json!({"name": n, "image": "busybox"})).collect::<Vec<_>>(),
        "schedulerName": "nobody-schedules-this",
    });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    post(
        c,
        "/api/v1/namespaces/default/pods",
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": spec,
        }),
    );
    if statuses.as_array().is_some_and(|s| !s.is_empty()) {
        let patch = json!({"status": {"phase": "Running", "containerStatuses": statuses}});
        let (code, text) = c.http(
            "PATCH",
            &format!("/api/v1/namespaces/default/pods/{name}/status"),
            Some(patch.to_string().as_bytes()),
            &[("Content-Type", "application/merge-patch+json")],
        );
        assert_eq!(code, 200, "status of {name}: {text}");
    }
}

fn running(name: &str) -> Value {
    json!({
        "name": name, "ready": true, "restartCount": 0, "image": "busybox", "imageID": "",
        "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
    })
}

fn restarted(name: &str) -> Value {
    json!({
        "name": name, "ready": true, "restartCount": 1, "image": "busybox", "imageID": "",
        "state": {"running": {"startedAt": "2024-05-01T10:00:00Z"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
            "startedAt": "2024-05-01T09:00:00Z", "finishedAt": "2024-05-01T09:59:00Z"}},
    })
}

const APP_LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F hello from app
2024-05-01T10:00:01.500000000Z stderr F a warning
2024-05-01T10:00:02Z stdout P split 
2024-05-01T10:00:02.25Z stdout F line
2024-05-01T10:00:03Z stdout F last line
";

/// A cluster, an agent, a Node for it, and pods:
/// `web` (app, restarted once), `duo` (app + sidecar), `pending` (no node),
/// `waiting` (on the node, no container started).
fn setup() -> (Cluster, Agent) {
    let c = Cluster::up();
    let agent = Agent::start();
    create_node(&c, "node-a", agent.port);
    agent.container(
        "web",
        "app",
        APP_LOG,
        Some("2024-05-01T09:00:00Z stdout F previous run\n"),
    );
    agent.container(
        "duo",
        "app",
        "2024-05-01T10:00:00Z stdout F duo app\n",
        None,
    );
    agent.container(
        "duo",
        "sidecar",
        "2024-05-01T10:00:00Z stdout F duo sidecar\n",
        None,
    );
    create_pod(
        &c,
        "web",
        &["app"],
        Some("node-a"),
        json!({}),
        json!([restarted("app")]),
    );
    create_pod(
        &c,
        "duo",
        &["app", "sidecar"],
        Some("node-a"),
        json!({}),
        json!([running("app"), running("sidecar")]),
    );
    create_pod(&c, "pending", &["app"], None, json!({}), json!([]));
    create_pod(
        &c,
        "waiting",
        &["app"],
        Some("node-a"),
        json!({}),
        json!([]),
    );
    (c, agent)
}

/// kubectl that must fail; returns its stderr.
fn fails(c: &Cluster, args: &[&str]) -> String {
    let (code, out, err) = c.kubectl(args);
    assert_ne!(code, 0, "kubectl {args:?} should fail:\n{out}\n{err}");
    err
}

#[test]
fn kubectl_logs_with_its_options() {
    let (c, _agent) = setup();
    assert_eq!(
        c.ok(&["logs", "web"]),
        "hello from app\na warning\nsplit line\nlast line\n"
    );
    assert_eq!(
        c.ok(&["logs", "web", "--timestamps"]),
        "2024-05-01T10:00:00.000000001Z hello from app\n\
         2024-05-01T10:00:01.5Z a warning\n\
         2024-05-01T10:00:02Z split line\n\
         2024-05-01T10:00:03Z last line\n"
    );
    assert_eq!(
        c.ok(&["logs", "web", "--tail=2"]),
        "split line\nlast line\n"
    );
    assert_eq!(c.ok(&["logs", "web", "--limit-bytes=5"]), "hello");
    assert_eq!(
        c.ok(&["logs", "web", "--since-time=2024-05-01T10:00:02Z"]),
        "split line\nlast line\n"
    );
    assert_eq!(c.ok(&["logs", "web", "--previous"]), "previous run\n");
    assert_eq!(c.ok(&["logs", "duo", "-c", "sidecar"]), "duo sidecar\n");
    // Without -c kubectl picks the first container and says so.
    let (code, out, err) = c.kubectl(&["logs", "duo"]);
    assert_eq!((code, out.as_str()), (0, "duo app\n"), "{err}");
    assert!(
        err.contains("Defaulted container \"app\" out of: app, sidecar"),
        "{err}"
    );
    // Every container of a pod, each line prefixed.
    let out = c.ok(&["logs", "duo", "--all-containers", "--prefix"]);
    assert!(out.contains("[pod/duo/app] duo app\n"), "{out}");
    assert!(out.contains("[pod/duo/sidecar] duo sidecar\n"), "{out}");
}

#[test]
fn kubectl_logs_follow_streams_until_the_container_stops() {
    let (c, agent) = setup();
    let stopped = agent.container("tail", "app", "2024-05-01T10:00:00Z stdout F first\n", None);
    create_pod(
        &c,
        "tail",
        &["app"],
        Some("node-a"),
        json!({}),
        json!([running("app")]),
    );
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::kubectl_binary())
        .arg("--kubeconfig")
        .arg(c.kubeconfig())
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["logs", "-f", "tail"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    {
        let seen = seen.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                seen.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
    }
    let child = Arc::new(Mutex::new(child));
    let kill = KillOnDrop(child.clone());
    c.eventually(
        "kubectl logs -f prints the first line",
        Duration::from_secs(30),
        || seen.lock().unwrap().as_str() == "first\n",
    );
    // Written while kubectl waits: it must arrive while the container runs.
    agent.append("tail", "app", "2024-05-01T10:00:01Z stdout F second\n");
    c.eventually(
        "kubectl logs -f streams a new line",
        Duration::from_secs(30),
        || seen.lock().unwrap().as_str() == "first\nsecond\n",
    );
    assert!(
        child.lock().unwrap().try_wait().unwrap().is_none(),
        "kubectl logs -f ended early"
    );
    agent.append("tail", "app", "2024-05-01T10:00:02Z stdout F third\n");
    stopped.store(false, Ordering::SeqCst);
    let mut status = None;
    c.eventually(
        "kubectl logs -f ends once the container stopped",
        Duration::from_secs(30),
        || {
            status = child.lock().unwrap().try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success());
    c.eventually("kubectl's output is read", Duration::from_secs(10), || {
        seen.lock().unwrap().as_str() == "first\nsecond\nthird\n"
    });
    drop(kill);
}

/// Kills a child process on drop (if it still runs).
struct KillOnDrop(Arc<Mutex<std::process::Child>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let mut c = self.0.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn kubectl_exec_relays_output_and_exit_codes() {
    let (c, agent) = setup();
    let (code, out, err) = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"]);
    assert_eq!((code, out.as_str()), (0, "out\n"), "{err}\n{}", c.output());
    assert_eq!(err, "err\n");
    let (code, out, err) = c.kubectl(&["exec", "web", "--", "sh", "-c", "echo partial; exit 3"]);
    assert_eq!((code, out.as_str()), (3, "partial\n"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    let (code, out, err) = c.kubectl_stdin(
        &["exec", "-i", "web", "--", "tr", "a-z", "A-Z"],
        Some("piped input\n"),
    );
    assert_eq!((code, out.as_str()), (0, "PIPED INPUT\n"), "{err}");
    assert_eq!(
        c.ok(&["exec", "duo", "-c", "sidecar", "--", "echo", "two words"]),
        "two words\n"
    );
    // Without -c kubectl execs in the first container.
    let (code, out, err) = c.kubectl(&["exec", "duo", "--", "echo", "hi"]);
    assert_eq!((code, out.as_str()), (0, "hi\n"), "{err}");
    // A container that the status says runs but the agent does not know.
    agent_forgets(&agent, "duo", "sidecar");
    let err = fails(&c, &["exec", "duo", "-c", "sidecar", "--", "true"]);
    assert!(err.contains("container not found (\"sidecar\")"), "{err}");
}

fn agent_forgets(agent: &Agent, pod: &str, container: &str) {
    agent
        .node
        .containers
        .lock()
        .unwrap()
        .remove(&(pod.to_string(), container.to_string()));
}

#[test]
fn errors_read_like_upstream() {
    let (c, agent) = setup();
    // An unscheduled pod has no log yet (upstream answers with nothing) and
    // cannot take an exec.
    assert_eq!(c.ok(&["logs", "pending"]), "");
    let err = fails(&c, &["exec", "pending", "--", "true"]);
    assert!(
        err.contains("pod pending does not have a host assigned"),
        "{err}"
    );
    // A container that has not started.
    let expected = "container \"app\" in pod \"waiting\" is waiting to start: ContainerCreating";
    let err = fails(&c, &["logs", "waiting"]);
    assert!(
        err.contains(&format!("Error from server (BadRequest): {expected}")),
        "{err}"
    );
    let err = fails(&c, &["exec", "waiting", "--", "true"]);
    assert!(err.contains(expected), "{err}");
    // Unknown containers, and no --previous run.
    let err = fails(&c, &["logs", "web", "-c", "nope"]);
    assert!(
        err.contains("container nope is not valid for pod web"),
        "{err}"
    );
    let err = fails(&c, &["logs", "duo", "-c", "sidecar", "--previous"]);
    assert!(
        err.contains("previous terminated container \"sidecar\" in pod \"duo\" not found"),
        "{err}"
    );
    let err = fails(&c, &["logs", "ghost"]);
    assert!(err.contains("pods \"ghost\" not found"), "{err}");
    // Several containers and no container named: the API says which exist,
    // unless the pod names a default.
    let (code, body) = c.http("GET", "/api/v1/namespaces/default/pods/duo/log", None, &[]);
    assert_eq!(code, 400, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        "a container name must be specified for pod duo, choose one of: [app sidecar]"
    );
    agent.container(
        "named",
        "sidecar",
        "2024-05-01T10:00:00Z stdout F the default\n",
        None,
    );
    create_pod(
        &c,
        "named",
        &["app", "sidecar"],
        Some("node-a"),
        json!({"kubectl.kubernetes.io/default-container": "sidecar"}),
        json!([running("app"), running("sidecar")]),
    );
    let (code, body) = c.http(
        "GET",
        "/api/v1/namespaces/default/pods/named/log",
        None,
        &[],
    );
    assert_eq!((code, body.as_str()), (200, "the default\n"));
    // Invalid options are 422, as upstream validates PodLogOptions.
    let (code, body) = c.http(
        "GET",
        "/api/v1/namespaces/default/pods/web/log?tailLines=-1",
        None,
        &[],
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("PodLogOptions \\\"web\\\" is invalid: tailLines"),
        "{body}"
    );
    // Exec needs a WebSocket upgrade.
    let (code, body) = c.http(
        "POST",
        "/api/v1/namespaces/default/pods/web/exec?command=true&stdout=true",
        None,
        &[],
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("Upgrade request required"), "{body}");
    // A node whose agent does not answer: a 500 naming the address.
    let port = closed_port();
    create_node(&c, "node-gone", port);
    create_pod(
        &c,
        "orphan",
        &["app"],
        Some("node-gone"),
        json!({}),
        json!([running("app")]),
    );
    let err = fails(&c, &["logs", "orphan"]);
    assert!(
        err.contains(&format!(
            "Error from server: Get \"http://127.0.0.1:{port}/containerLogs/default/orphan/app\": dial tcp 127.0.0.1:{port}"
        )),
        "{err}"
    );
    let err = fails(&c, &["exec", "orphan", "--", "true"]);
    assert!(
        err.contains(&format!("error dialing backend: dial tcp 127.0.0.1:{port}")),
        "{err}"
    );
}

/// The official Python client's `stream()` (v4.channel.k8s.io).
#[test]
fn python_client_exec() {
    let (c, _agent) = setup();
    let script = r#"
import sys
from kubernetes import client, config
from kubernetes.stream import stream
config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
out = stream(api.connect_get_namespaced_pod_exec, "web", "default",
             command=["sh", "-c", "echo from python"], stderr=True, stdin=False, stdout=True, tty=False)
print("joined:" + repr(out))
resp = stream(api.connect_get_namespaced_pod_exec, "web", "default",
              command=["sh", "-c", "echo o; echo e >&2; exit 4"], stderr=True, stdin=False, stdout=True,
              tty=False, _preload_content=False)
resp.run_forever(timeout=30)
print("stdout:" + repr(resp.read_stdout()))
print("stderr:" + repr(resp.read_stderr()))
print("code:" + repr(resp.returncode))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("No module named 'kubernetes'") {
        panic!("the Python client is missing: run dev/setup (pip install kubernetes)");
    }
    assert!(
        out.status.success(),
        "{text}\nserver output:\n{}",
        c.output()
    );
    assert!(text.contains("joined:'from python\\n'"), "{text}");
    assert!(text.contains("stdout:'o\\n'"), "{text}");
    assert!(text.contains("stderr:'e\\n'"), "{text}");
    assert!(text.contains("code:4"), "{text}");
}
