//! The node agent end to end, as root, with real containers: `trellis up`
//! runs the API server, the scheduler and an agent with its own bridge and
//! pod CIDR; pods are applied with the real kubectl and run from the busybox
//! image that `dev/busybox-image.sh` makes from Debian's busybox-static.
//!
//! Under `CI=true` a missing prerequisite (root, busybox, plugins) fails.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Cluster;
use serde_json::Value;

/// A cluster with an agent, cleaned up (containers, mounts, network) on drop.
struct Node {
    c: Option<Cluster>,
    cfg: trellis_agent::AgentConfig,
}

impl Drop for Node {
    fn drop(&mut self) {
        // Stop the cluster, but keep its data directory until `reset` has
        // read it: it lists the pods, shims and network to remove.
        let dir = self.c.as_mut().map(Cluster::take_dir);
        drop(self.c.take());
        if let Err(e) = trellis_agent::reset(&self.cfg) {
            eprintln!("cleaning up the test node: {e}");
        }
        drop(dir);
    }
}

impl std::ops::Deref for Node {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        self.c.as_ref().expect("running")
    }
}

fn prerequisites() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let busybox = std::path::Path::new("/bin/busybox").exists();
    if root && busybox {
        return true;
    }
    let why = format!("the agent tests need root ({root}) and busybox-static ({busybox})");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// The busybox OCI archive, built once per test binary.
fn busybox_tar() -> PathBuf {
    static TAR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TAR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let out = dir.join("busybox-oci.tar");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../dev/busybox-image.sh");
        let st = std::process::Command::new("bash")
            .arg(script)
            .arg(&out)
            .status()
            .expect("run dev/busybox-image.sh");
        assert!(st.success(), "dev/busybox-image.sh failed");
        out
    })
    .clone()
}

fn unique() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    t ^ (std::process::id() << 8)
}

fn node() -> Option<Node> {
    if !prerequisites() {
        return None;
    }
    let plugins = trellis_testkit::plugin_dir();
    assert!(
        plugins.join("probe-exec.wasm").exists(),
        "run `cargo xtask plugins` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = trellis_image::ImageStore::open(&dir.path().join("images")).unwrap();
    store.import(&busybox_tar()).unwrap();
    let u = unique();
    let bridge = format!("trt{:06x}", u & 0xff_ffff);
    let cidr = format!("10.{}.{}.0/24", 100 + (u >> 8) % 100, u % 250);
    let mut cfg = trellis_agent::AgentConfig::new("node-a", dir.path());
    cfg.bridge = bridge;
    cfg.pod_cidr = cidr;
    let c = start_node(dir, &cfg);
    let n = Node { c: Some(c), cfg };
    n.eventually("node-a is Ready", Duration::from_secs(60), || {
        n.kubectl(&[
            "get",
            "node",
            "node-a",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .1
        .trim()
            == "True"
    });
    Some(n)
}

/// `trellis up` on `dir` with an agent named node-a on `cfg`'s bridge and
/// pod CIDR, and short crash back-offs.
fn start_node(dir: tempfile::TempDir, cfg: &trellis_agent::AgentConfig) -> Cluster {
    let plugins = trellis_testkit::plugin_dir();
    Cluster::start(
        &[
            "up",
            "--plugin-dir",
            plugins.to_str().unwrap(),
            "--agent-port",
            "0",
            "--node-name",
            "node-a",
            "--bridge",
            &cfg.bridge,
            "--pod-cidr",
            &cfg.pod_cidr,
            "--backoff-base",
            "1s",
            "--backoff-max",
            "2s",
        ],
        Some(dir),
    )
}

fn pod_json(c: &Cluster, name: &str) -> Value {
    let (code, out, err) = c.kubectl(&["get", "pod", name, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn wait_pod(c: &Cluster, name: &str, what: &str, mut check: impl FnMut(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (code, out, _) = c.kubectl(&["get", "pod", name, "-o", "json"]);
        if code == 0 {
            let p: Value = serde_json::from_str(&out).unwrap();
            if check(&p) {
                return p;
            }
            if start.elapsed() > Duration::from_secs(90) {
                let events = c.kubectl(&["get", "events", "-o", "wide"]).1;
                panic!(
                    "pod {name}: not true: {what}\n{p:#}\nevents:\n{events}\nserver:\n{}",
                    c.output()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or("")
}

fn restarts(p: &Value) -> u64 {
    p["status"]["containerStatuses"][0]["restartCount"]
        .as_u64()
        .unwrap_or(0)
}

fn pod(name: &str, policy: &str, script: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", {script:?}]
{extra}
"#
    )
}

#[test]
fn a_pod_runs_echo_and_kubectl_shows_its_log() {
    let Some(n) = node() else { return };
    n.apply(&pod(
        "echo",
        "Never",
        "echo hello from trellis; echo to stderr >&2",
        "",
    ));
    let p = wait_pod(&n, "echo", "Succeeded", |p| phase(p) == "Succeeded");
    let term = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0, "{p:#}");
    assert_eq!(term["reason"], "Completed");
    assert!(p["status"]["podIP"]
        .as_str()
        .is_some_and(|ip| !ip.is_empty()));
    let logs = n.ok(&["logs", "echo"]);
    assert_eq!(logs, "hello from trellis\nto stderr\n");
    let describe = n.ok(&["describe", "pod", "echo"]);
    for reason in ["Scheduled", "Pulled", "Created", "Started"] {
        assert!(describe.contains(reason), "no {reason} event:\n{describe}");
    }
}

#[test]
fn exit_codes_follow_each_restart_policy() {
    let Some(n) = node() else { return };
    n.apply(&pod("never-fails", "Never", "exit 3", ""));
    n.apply(&pod("onfailure-fails", "OnFailure", "echo run; exit 3", ""));
    n.apply(&pod("onfailure-ok", "OnFailure", "exit 0", ""));
    n.apply(&pod("always-ok", "Always", "echo round; exit 0", ""));
    let p = wait_pod(&n, "never-fails", "Failed", |p| phase(p) == "Failed");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Error"
    );
    assert_eq!(restarts(&p), 0);
    let p = wait_pod(&n, "onfailure-ok", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(restarts(&p), 0);
    let p = wait_pod(&n, "onfailure-fails", "restarted twice", |p| {
        restarts(p) >= 2
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 3,
        "{p:#}"
    );
    assert_ne!(phase(&p), "Failed");
    let p = wait_pod(&n, "always-ok", "restarted after exit 0", |p| {
        restarts(p) >= 1
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 0,
        "{p:#}"
    );
    assert_eq!(n.ok(&["logs", "always-ok", "--previous"]), "round\n");
    // Back-off shows as CrashLoopBackOff while it waits.
    wait_pod(&n, "onfailure-fails", "CrashLoopBackOff", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
}

#[test]
fn a_memory_hog_is_oom_killed_and_restarted_per_policy() {
    let Some(n) = node() else { return };
    let limits = "    resources: {limits: {memory: 16Mi}}";
    let hog = "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done";
    n.apply(&pod("hog-never", "Never", hog, limits));
    n.apply(&pod("hog-always", "Always", hog, limits));
    let p = wait_pod(&n, "hog-never", "Failed", |p| phase(p) == "Failed");
    let term = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 137, "{p:#}");
    assert_eq!(term["reason"], "OOMKilled", "{p:#}");
    let p = wait_pod(&n, "hog-always", "restarted after OOM", |p| {
        restarts(p) >= 1
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"], "OOMKilled",
        "{p:#}"
    );
}

fn http_get(ip: &str, port: u16) -> String {
    let mut s = std::net::TcpStream::connect((ip, port)).expect("connect to the pod");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

const HTTPD: &str = "mkdir -p /www && echo served by $(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn httpd_becomes_ready_through_its_probe_and_pods_reach_each_other() {
    let Some(n) = node() else { return };
    let probe = "    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}";
    n.apply(&pod("web", "Always", HTTPD, probe));
    let p = wait_pod(&n, "web", "Ready", |p| {
        p["status"]["conditions"].as_array().is_some_and(|a| {
            a.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    });
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    // From the node.
    let page = http_get(&ip, 8080);
    assert!(page.contains("served by web"), "{page}");
    // From another pod.
    n.apply(&pod(
        "client",
        "Never",
        &format!("wget -qO- http://{ip}:8080/"),
        "",
    ));
    wait_pod(&n, "client", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(n.ok(&["logs", "client"]), "served by web\n");
    // kubectl exec runs in the container.
    assert_eq!(
        n.ok(&["exec", "web", "--", "cat", "/www/index.html"]),
        "served by web\n"
    );
}

#[test]
fn a_failing_liveness_probe_restarts_its_container() {
    let Some(n) = node() else { return };
    let probe = "    livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 1, failureThreshold: 2}";
    n.apply(&pod(
        "sick",
        "Always",
        "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 600",
        probe,
    ));
    let p = wait_pod(&n, "sick", "restarted by liveness", |p| restarts(p) >= 1);
    assert_eq!(phase(&p), "Running");
    let events = n.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=sick",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("Unhealthy"), "{events}");
    assert!(events.contains("Killing"), "{events}");
}

#[test]
fn config_map_and_secret_volumes_and_env_hold_their_content() {
    let Some(n) = node() else { return };
    n.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=mode=fast",
        "--from-literal=level=3",
    ]);
    n.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=s3cret",
    ]);
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: reader, labels: {app: reader}}
spec:
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo MODE=$MODE PASS=$PASS POD=$POD_NAME; sleep 600"]
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: cfg, key: mode}}
    - name: PASS
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: creds, mountPath: /etc/creds}
  volumes:
  - name: cfg
    configMap: {name: cfg}
  - name: creds
    secret: {secretName: creds}
"#,
    );
    wait_pod(&n, "reader", "Running", |p| phase(p) == "Running");
    n.eventually("the env line is logged", Duration::from_secs(30), || {
        n.kubectl(&["logs", "reader"]).1 == "MODE=fast PASS=s3cret POD=reader\n"
    });
    assert_eq!(
        n.ok(&["exec", "reader", "--", "cat", "/etc/cfg/level"]),
        "3"
    );
    assert_eq!(
        n.ok(&["exec", "reader", "--", "cat", "/etc/creds/password"]),
        "s3cret"
    );
    // Files follow the source.
    n.ok(&[
        "patch",
        "configmap",
        "cfg",
        "-p",
        r#"{"data":{"level":"4"}}"#,
    ]);
    n.eventually(
        "the mounted file follows the ConfigMap",
        Duration::from_secs(60),
        || {
            n.kubectl(&["exec", "reader", "--", "cat", "/etc/cfg/level"])
                .1
                == "4"
        },
    );
}

#[test]
fn graceful_deletion_delivers_sigterm_first() {
    let Some(n) = node() else { return };
    let marker = tempfile::tempdir().unwrap();
    let extra = format!(
        "    volumeMounts: [{{name: out, mountPath: /out}}]\n  volumes:\n  - name: out\n    hostPath: {{path: {}}}",
        marker.path().display()
    );
    n.apply(&pod(
        "trapper",
        "Always",
        "trap 'echo got TERM > /out/term; exit 0' TERM; echo started > /out/term; while true; do sleep 1; done",
        &extra,
    ));
    wait_pod(&n, "trapper", "Running", |p| phase(p) == "Running");
    n.eventually("the trap is set", Duration::from_secs(30), || {
        std::fs::read_to_string(marker.path().join("term")).is_ok_and(|s| s == "started\n")
    });
    n.ok(&["delete", "pod", "trapper", "--wait=true", "--timeout=60s"]);
    assert_eq!(
        std::fs::read_to_string(marker.path().join("term")).unwrap(),
        "got TERM\n"
    );
    let (code, _, err) = n.kubectl(&["get", "pod", "trapper"]);
    assert_ne!(code, 0);
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn an_agent_restart_does_not_restart_containers() {
    let Some(mut n) = node() else { return };
    n.apply(&pod("steady", "Always", "sleep 3600", ""));
    let before = wait_pod(&n, "steady", "Running", |p| phase(p) == "Running");
    let id = before["status"]["containerStatuses"][0]["containerID"].clone();
    let started = before["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].clone();
    // Stop the whole single-node cluster (API server, scheduler, agent).
    let mut c = n.c.take().unwrap();
    assert!(c.stop(), "trellis did not stop:\n{}", c.output());
    let dir = c.take_dir();
    drop(c);
    n.c = Some(start_node(dir, &n.cfg));
    // The agent re-adopts the container: same id, same start, no restart.
    std::thread::sleep(Duration::from_secs(3));
    let after = wait_pod(&n, "steady", "Running again", |p| phase(p) == "Running");
    assert_eq!(
        after["status"]["containerStatuses"][0]["containerID"], id,
        "{after:#}"
    );
    assert_eq!(
        after["status"]["containerStatuses"][0]["state"]["running"]["startedAt"],
        started
    );
    assert_eq!(restarts(&after), 0);
    let _ = pod_json(&n, "steady");
}

#[test]
fn init_containers_run_in_order_and_volumes_are_shared() {
    let Some(n) = node() else { return };
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: inits, labels: {tier: web}}
spec:
  restartPolicy: Never
  initContainers:
  - {name: first, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, "echo first >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  - {name: second, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, "echo second >> /work/order"], volumeMounts: [{name: work, mountPath: /work}]}
  containers:
  - name: main
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "cat /work/order; cat /info/labels; echo"]
    volumeMounts: [{name: work, mountPath: /work}, {name: info, mountPath: /info}]
  - name: side
    image: busybox
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "echo from side"]
  volumes:
  - {name: work, emptyDir: {}}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
"#,
    );
    let p = wait_pod(&n, "inits", "Succeeded", |p| phase(p) == "Succeeded");
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    assert!(
        inits
            .iter()
            .all(|s| s["state"]["terminated"]["exitCode"] == 0),
        "{p:#}"
    );
    assert_eq!(
        n.ok(&["logs", "inits", "-c", "main"]),
        "first\nsecond\ntier=\"web\"\n"
    );
    assert_eq!(n.ok(&["logs", "inits", "-c", "side"]), "from side\n");
    // Several containers: kubectl defaults to the first and says so.
    let (code, out, err) = n.kubectl(&["logs", "inits"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "first\nsecond\ntier=\"web\"\n");
    assert!(err.contains("Defaulted container \"main\""), "{err}");
}

#[test]
fn a_missing_image_shows_err_image_pull_then_back_off() {
    let Some(n) = node() else { return };
    // Each waiting reason lasts until the next sync: follow every status
    // write through a watch rather than sampling.
    let cache = tempfile::tempdir().unwrap();
    let mut watch = common::Background(
        std::process::Command::new(common::kubectl_binary())
            .arg("--kubeconfig")
            .arg(n.kubeconfig())
            .arg("--cache-dir")
            .arg(cache.path())
            .args([
                "get",
                "pods",
                "--watch",
                "-o",
                "jsonpath={.status.containerStatuses[0].state.waiting.reason}{\"\\n\"}",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = std::io::BufReader::new(watch.0.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in lines.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    n.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ghost}
spec:
  containers:
  - {name: main, image: "127.0.0.1:9/nothing/here:1.0", imagePullPolicy: Always}
"#,
    );
    let mut seen = std::collections::HashSet::new();
    let start = Instant::now();
    while !(seen.contains("ErrImagePull") && seen.contains("ImagePullBackOff")) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "not seen ErrImagePull then ImagePullBackOff: {seen:?}\n{}",
            n.output()
        );
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
            seen.insert(l.trim().to_string());
        }
    }
    drop(watch);
    let p = pod_json(&n, "ghost");
    assert_eq!(phase(&p), "Pending");
    let events = n.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=ghost",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("Failed") && events.contains("Pulling"),
        "{events}"
    );
}

/// The mount table's lines under `dir`: (file system type, mount point).
fn mounts_under(mountinfo: &str, dir: &std::path::Path) -> Vec<(String, String)> {
    let dir = dir.canonicalize().unwrap().display().to_string();
    trellis_types::mountinfo::parse(mountinfo)
        .into_iter()
        .filter(|m| m.mount_point.starts_with(&dir))
        .map(|m| (m.fs_type, m.mount_point))
        .collect()
}

/// Each pod's shim mounts its root filesystem in a mount namespace of its
/// own, where other pods' network namespace files are left out: container
/// set-ups read the mount table whole, many times, and no longer pay for
/// every pod on the node.
#[test]
fn pods_keep_their_mounts_out_of_the_node_and_each_other() {
    let Some(n) = node() else { return };
    for name in ["one", "two"] {
        n.apply(&pod(name, "Never", "echo up; exec sleep 3600", ""));
    }
    let mut uids = Vec::new();
    for name in ["one", "two"] {
        let p = wait_pod(&n, name, "Running", |p| phase(p) == "Running");
        uids.push(p["metadata"]["uid"].as_str().unwrap().to_string());
    }
    let data = &n.cfg.data_dir;
    let node_mounts = mounts_under(
        &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
        data,
    );
    assert!(
        node_mounts.iter().all(|(fs, _)| fs != "overlay"),
        "a pod's root filesystem is in the node's mount table: {node_mounts:?}"
    );
    // The pods' network namespace files are the node's.
    for uid in &uids {
        assert!(
            node_mounts
                .iter()
                .any(|(fs, m)| fs == "nsfs" && m.ends_with(uid.as_str())),
            "{uid}: {node_mounts:?}"
        );
    }
    for (i, uid) in uids.iter().enumerate() {
        let run = data.join("run/pods").join(uid);
        let pid = std::fs::read_to_string(run.join("shim.pid")).unwrap();
        let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim())).unwrap();
        let own = mounts_under(&info, data);
        let overlays: Vec<_> = own.iter().filter(|(fs, _)| fs == "overlay").collect();
        assert_eq!(overlays.len(), 1, "{uid}'s shim: {own:?}");
        assert!(
            overlays[0].1.contains(uid.as_str()),
            "{uid}'s shim: {own:?}"
        );
        let namespaces: Vec<_> = own.iter().filter(|(fs, _)| fs == "nsfs").collect();
        assert_eq!(namespaces.len(), 1, "{uid}'s shim: {own:?}");
        assert!(
            namespaces[0].1.ends_with(uid.as_str()),
            "{uid}'s shim: {own:?}"
        );
        let other = &uids[1 - i];
        assert!(
            own.iter().all(|(_, m)| !m.contains(other.as_str())),
            "{uid}'s shim holds a mount of {other}: {own:?}"
        );
        assert_eq!(n.ok(&["logs", ["one", "two"][i]]), "up\n");
    }
    // Deleting a pod takes its mounts with it.
    n.ok(&["delete", "pod", "one", "--wait=true"]);
    n.eventually("pod one's mounts are gone", Duration::from_secs(30), || {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts_under(&info, data)
            .iter()
            .all(|(_, m)| !m.contains(uids[0].as_str()))
    });
}

#[test]
fn host_network_pods_use_the_node_address() {
    let Some(n) = node() else { return };
    n.apply(
        &pod("hostnet", "Never", "echo up", "")
            .replace("  containers:", "  hostNetwork: true\n  containers:"),
    );
    let p = wait_pod(&n, "hostnet", "Succeeded", |p| phase(p) == "Succeeded");
    assert_eq!(p["status"]["podIP"], "127.0.0.1", "{p:#}");
    assert_eq!(n.ok(&["logs", "hostnet"]), "up\n");
}

#[test]
fn kubectl_logs_follow_streams_until_the_container_ends() {
    let Some(n) = node() else { return };
    n.apply(&pod(
        "ticker",
        "Never",
        "for i in 1 2 3; do echo tick $i; sleep 1; done",
        "",
    ));
    wait_pod(&n, "ticker", "Running", |p| phase(p) == "Running");
    let out = n.ok(&["logs", "-f", "ticker"]);
    assert_eq!(out, "tick 1\ntick 2\ntick 3\n");
}

#[test]
fn a_deployment_runs_real_containers_and_a_job_completes() {
    let Some(n) = node() else { return };
    n.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - {name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: count}
spec:
  completions: 3
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: busybox, imagePullPolicy: IfNotPresent, command: [sh, -c, "echo counted"]}
"#,
    );
    n.ok(&["rollout", "status", "deploy/web", "--timeout=90s"]);
    let pods: Value =
        serde_json::from_str(&n.ok(&["get", "pods", "-l", "app=web", "-o", "json"])).unwrap();
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 3);
    for p in pods {
        assert_eq!(phase(p), "Running", "{p:#}");
        assert_eq!(p["spec"]["nodeName"], "node-a");
        assert!(p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .is_some_and(|id| !id.is_empty()));
    }
    n.ok(&[
        "wait",
        "--for=condition=complete",
        "job/count",
        "--timeout=90s",
    ]);
    let job: Value = serde_json::from_str(&n.ok(&["get", "job", "count", "-o", "json"])).unwrap();
    assert_eq!(job["status"]["succeeded"], 3, "{job:#}");
    assert!(job["status"]["completionTime"].is_string());
    let logs = n.ok(&["logs", "job/count"]);
    assert_eq!(logs, "counted\n");
    // Deleting the Deployment stops its containers.
    n.ok(&["delete", "deploy", "web"]);
    n.eventually("the web pods are gone", Duration::from_secs(60), || {
        n.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .trim()
            .is_empty()
    });
}
