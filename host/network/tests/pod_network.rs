//! The pod network against the real kernel: bridges, namespaces and veths,
//! with busybox run inside pod namespaces through `nsenter`. Needs root,
//! `busybox` and `nsenter`; without them a test is skipped, or fails under
//! `CI=true`. Each test has its own bridge, CIDR and state directory, torn
//! down by a guard also when the test fails. Traffic goes only to addresses
//! on the test's own bridge.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use trellis_network::{NetworkConfig, NetworkError, PodNet, PodNetwork};

/// `None` (after saying why) when this machine cannot run the test; panics
/// instead under `CI=true`.
fn prerequisites() -> Option<()> {
    let mut missing = Vec::new();
    // SAFETY: plain syscall without arguments.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for tool in ["busybox", "nsenter", "ip"] {
        let found = Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            missing.push(format!("`{tool}` on PATH"));
        }
    }
    if missing.is_empty() {
        return Some(());
    }
    let message = format!("pod network test needs {}", missing.join(", "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message} (CI=true: a missing prerequisite is a failure)");
    }
    eprintln!("skipping: {message}");
    None
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unlikely to repeat across test processes and threads.
fn unique() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64 finaliser
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One test's pod network; destroys it (bridge, pods, mounts) on drop.
struct TestNet {
    config: NetworkConfig,
    net: Option<PodNetwork>,
    _state: tempfile::TempDir,
}

impl TestNet {
    /// A network on a fresh bridge with a random `10.x.y.0/<prefix>` that no
    /// other interface routes.
    fn new(prefix: u8) -> TestNet {
        let state = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let u = unique();
            let config = NetworkConfig {
                bridge: format!("tnt{:06x}", u & 0xff_ffff),
                pod_cidr: format!(
                    "10.{}.{}.{}/{prefix}",
                    100 + (u >> 24) % 100,
                    (u >> 32) % 256,
                    last_octet(prefix, u >> 40),
                ),
                state_dir: state.path().join("network"),
                mtu: None,
            };
            match PodNetwork::open(config.clone()) {
                Ok(net) => {
                    return TestNet {
                        config,
                        net: Some(net),
                        _state: state,
                    }
                }
                Err(NetworkError::CidrConflict { .. }) => continue,
                Err(e) => panic!(
                    "open pod network: {e} ({:?})",
                    std::error::Error::source(&e)
                ),
            }
        }
        panic!("no free pod CIDR found in 20 tries");
    }

    fn net(&self) -> &PodNetwork {
        self.net.as_ref().expect("network is open")
    }

    /// Drops the `PodNetwork` (as an agent exit would) and opens it again.
    fn restart(&mut self) {
        drop(self.net.take());
        self.net = Some(PodNetwork::open(self.config.clone()).expect("re-open pod network"));
    }
}

/// The last octet of a random `10.x.y.z/prefix`: 0 for prefixes up to 24,
/// else a random network boundary.
fn last_octet(prefix: u8, random: u64) -> u64 {
    if prefix <= 24 {
        return 0;
    }
    let block = 1u64 << (32 - prefix);
    (random % (256 / block)) * block
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let net = match self.net.take() {
            Some(net) => Some(net),
            None => PodNetwork::open(self.config.clone()).ok(),
        };
        let result = net.map(PodNetwork::destroy);
        if !matches!(result, Some(Ok(()))) {
            eprintln!("destroying {}: {result:?}", self.config.bridge);
            let _ = Command::new("ip")
                .args(["link", "del", &self.config.bridge])
                .status();
        }
    }
}

/// A process started inside a pod's namespace; killed on drop.
struct PodProcess(Child);

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn in_pod(netns: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns.display()))
        .arg("busybox")
        .args(args);
    cmd
}

/// Runs busybox `ping -c1 -W2` from the pod; `Ok` if a reply came.
fn ping(from: &PodNet, to: Ipv4Addr) -> Result<(), String> {
    let out = in_pod(&from.netns, &["ping", "-c1", "-W2", &to.to_string()])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {to} from {} failed: {}{}",
            from.ip,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The IPv4 addresses `ip` reports on `eth0` inside the pod.
fn pod_addresses(pod: &PodNet) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", pod.netns.display()))
        .args(["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_pods_on_one_bridge_ping_each_other() {
    let Some(()) = prerequisites() else { return };
    let t = TestNet::new(24);
    let a = t.net().setup("pod-a").unwrap();
    let b = t.net().setup("pod-b").unwrap();
    assert_ne!(a.ip, b.ip);
    assert_eq!(a.gateway, b.gateway);
    assert!(
        pod_addresses(&a).contains(&format!("{}/24", a.ip)),
        "{}",
        pod_addresses(&a)
    );
    ping(&a, b.ip).unwrap();
    ping(&b, a.ip).unwrap();
    ping(&a, a.gateway).unwrap();

    // eth0 announces its address when it comes up (gratuitous ARP).
    let arp_notify = in_pod(
        &a.netns,
        &["cat", "/proc/sys/net/ipv4/conf/eth0/arp_notify"],
    )
    .output()
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&arp_notify.stdout).trim(), "1");
}

#[test]
fn host_reaches_a_pod_address() {
    let Some(()) = prerequisites() else { return };
    let t = TestNet::new(24);
    let pod = t.net().setup("pod-web").unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "hello from the pod\n").unwrap();
    let _httpd = PodProcess(
        in_pod(
            &pod.netns,
            &[
                "httpd",
                "-f",
                "-p",
                "8080",
                "-h",
                root.path().to_str().unwrap(),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let addr = SocketAddr::from((pod.ip, 8080));
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            conn.set_read_timeout(Some(Duration::from_secs(2)))?;
            conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut reply = String::new();
            conn.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        match attempt {
            Ok(reply) => break reply,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("host could not reach {addr}: {e}"),
        }
    };
    assert!(body.contains("hello from the pod"), "{body}");
}

#[test]
fn setup_is_idempotent_and_repairs() {
    let Some(()) = prerequisites() else { return };
    let t = TestNet::new(24);

    let mut fresh = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        t.net().setup(&format!("pod-{i}")).unwrap();
        fresh.push(started.elapsed());
    }
    let first = t.net().setup("pod-0").unwrap();
    let started = Instant::now();
    let again = t.net().setup("pod-0").unwrap();
    let repeated = started.elapsed();
    assert_eq!(first, again);
    assert_eq!(t.net().pods().unwrap().len(), 10);
    fresh.sort();
    println!(
        "setup timing: fresh min {:?} median {:?} max {:?}; repeated {:?}",
        fresh[0], fresh[5], fresh[9], repeated
    );

    // A veth deleted behind our back is made anew, same address.
    let status = Command::new("ip")
        .args(["link", "del", &first.host_veth])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!link_exists(&first.host_veth));
    let repaired = t.net().setup("pod-0").unwrap();
    assert_eq!(repaired, first);
    assert!(link_exists(&first.host_veth));
    ping(&repaired, repaired.gateway).unwrap();

    // A namespace lost as in a reboot: the file is back to an empty
    // placeholder. Setup makes a new namespace at the same path.
    let status = Command::new("umount").arg(&first.netns).status().unwrap();
    assert!(status.success());
    let started = Instant::now();
    let renewed = t.net().setup("pod-0").unwrap();
    println!(
        "setup timing: repair after lost namespace {:?}",
        started.elapsed()
    );
    assert_eq!(renewed, first);
    ping(&renewed, renewed.gateway).unwrap();
    let other = t.net().setup("pod-1").unwrap();
    ping(&renewed, other.ip).unwrap();
}

#[test]
fn reopen_after_restart_keeps_addresses() {
    let Some(()) = prerequisites() else { return };
    let mut t = TestNet::new(24);
    let before: Vec<PodNet> = ["r1", "r2", "r3"]
        .iter()
        .map(|uid| t.net().setup(uid).unwrap())
        .collect();
    t.restart();
    let adopted = t.net().pods().unwrap();
    assert_eq!(
        adopted,
        ["r1", "r2", "r3"]
            .iter()
            .map(|u| u.to_string())
            .zip(before.iter().cloned())
            .collect::<Vec<_>>()
    );
    for (uid, pod) in ["r1", "r2", "r3"].iter().zip(&before) {
        assert_eq!(&t.net().setup(uid).unwrap(), pod);
    }
    // The state belongs to this CIDR while it holds pods.
    let mut other = t.config.clone();
    other.pod_cidr = "10.99.0.0/24".into();
    let err = PodNetwork::open(other).unwrap_err();
    assert!(
        matches!(err, NetworkError::StateMismatch { pods: 3, .. }),
        "{err:?}"
    );

    let new = t.net().setup("r4").unwrap();
    assert!(before.iter().all(|p| p.ip != new.ip));
    ping(&before[0], new.ip).unwrap();
}

#[test]
fn teardown_frees_the_address_and_removes_interfaces() {
    let Some(()) = prerequisites() else { return };
    let t = TestNet::new(30); // room for exactly one pod
    let pod = t.net().setup("gone").unwrap();
    assert!(link_exists(&pod.host_veth));
    assert!(pod.netns.exists());

    t.net().teardown("gone").unwrap();
    assert!(!link_exists(&pod.host_veth));
    assert!(!pod.netns.exists());
    assert!(t.net().pods().unwrap().is_empty());
    t.net().teardown("gone").unwrap(); // idempotent
    t.net().teardown("never-existed").unwrap();

    // The only address is free again.
    let next = t.net().setup("next").unwrap();
    assert_eq!(next.ip, pod.ip);
    ping(&next, next.gateway).unwrap();
}

#[test]
fn exhausting_a_tiny_cidr_is_a_clear_error() {
    let Some(()) = prerequisites() else { return };
    let t = TestNet::new(30);
    t.net().setup("first").unwrap();
    let err = t.net().setup("second").unwrap_err();
    assert!(
        matches!(err, NetworkError::AddressesExhausted { capacity: 1, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&t.config.pod_cidr), "{message}");
    assert!(message.contains("no free address"), "{message}");
    // Nothing was left behind for the refused pod.
    assert_eq!(t.net().pods().unwrap().len(), 1);
    assert!(!t.config.state_dir.join("netns/second").exists());
}

#[test]
fn twenty_concurrent_setups_get_distinct_addresses() {
    let Some(()) = prerequisites() else { return };
    let t = Arc::new(TestNet::new(24));
    let started = Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let t = Arc::clone(&t);
            std::thread::spawn(move || t.net().setup(&format!("c{i:02}")))
        })
        .collect();
    // Join every thread before asserting, so the guard tears down after
    // the last setup finished.
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    println!(
        "setup timing: 20 concurrent setups in {:?}",
        started.elapsed()
    );
    let pods: Vec<PodNet> = results
        .into_iter()
        .map(|r| r.expect("setup thread panicked").expect("setup"))
        .collect();
    let ips: HashSet<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    assert_eq!(ips.len(), 20);
    let veths: HashSet<&String> = pods.iter().map(|p| &p.host_veth).collect();
    assert_eq!(veths.len(), 20);
    assert_eq!(t.net().pods().unwrap().len(), 20);
    for pod in &pods {
        assert!(link_exists(&pod.host_veth));
    }
    ping(&pods[0], pods[19].ip).unwrap();
    ping(&pods[19], pods[7].ip).unwrap();
}

#[test]
fn a_cidr_routed_elsewhere_is_refused() {
    let Some(()) = prerequisites() else { return };
    let t = TestNet::new(24);
    let state = tempfile::tempdir().unwrap();
    let other = NetworkConfig {
        bridge: format!("tnx{:06x}", unique() & 0xff_ffff),
        pod_cidr: t.config.pod_cidr.clone(),
        state_dir: PathBuf::from(state.path()),
        mtu: None,
    };
    let err = PodNetwork::open(other.clone()).unwrap_err();
    assert!(
        matches!(&err, NetworkError::CidrConflict { interface, .. } if *interface == t.config.bridge),
        "{err:?}"
    );
    assert!(!link_exists(&other.bridge));
}
