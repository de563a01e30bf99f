//! A real `trellis up` on a free port, the real kubectl against it, and a raw
//! HTTP client for what kubectl cannot send.

#![allow(dead_code)]

pub mod tls;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// kubectl as kubectl 1.32 (the version dispatcher picks by server version;
/// call the 1.32 binary directly when it is there).
pub fn kubectl_binary() -> PathBuf {
    let pinned = Path::new("/usr/lib/google-cloud-sdk/bin/kubectl.1.32");
    if pinned.exists() {
        return pinned.to_path_buf();
    }
    match which("kubectl") {
        Some(p) => p,
        None => panic!(
            "kubectl is not installed: these tests need the real kubectl (CI={:?})",
            std::env::var("CI").ok()
        ),
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// A running `trellis up`, killed on drop.
pub struct Cluster {
    child: Child,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub addr: String,
    pub token: String,
    cache: tempfile::TempDir,
    output: std::sync::Arc<std::sync::Mutex<String>>,
    /// What must outlive the server (the etcd it uses, and its runtime).
    keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Cluster {
    /// Start `trellis up` with a fresh data dir.
    pub fn up() -> Self {
        Self::start(&["up"], None)
    }

    /// `trellis server` on a real etcd started for this test (None only when
    /// etcd is missing outside CI; under CI=true that is a failure).
    pub fn on_etcd() -> Option<Self> {
        Self::on_etcd_with(&[])
    }

    /// `trellis server ARGS` on a real etcd started for this test.
    pub fn on_etcd_with(args: &[&str]) -> Option<Self> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let etcd = rt.block_on(trellis_store::testing::EtcdServer::start_or_skip(
            "API suite on etcd",
        ))?;
        let store = format!("etcd://{}", etcd.endpoint().trim_start_matches("http://"));
        let mut all = vec!["server", "--store", &store];
        all.extend_from_slice(args);
        let mut c = Self::start(&all, None);
        c.keep = Some(Box::new((etcd, rt)));
        Some(c)
    }

    /// Compact the etcd under an `on_etcd` cluster at `revision`.
    pub fn compact_etcd(&self, revision: i64) {
        let (etcd, rt) = self
            .keep
            .as_ref()
            .and_then(|k| {
                k.downcast_ref::<(trellis_store::testing::EtcdServer, tokio::runtime::Runtime)>()
            })
            .expect("an on_etcd cluster");
        rt.block_on(async {
            use trellis_store::Store;
            etcd.store().await.unwrap().compact(revision).await.unwrap();
        });
    }

    /// Start the binary with `args` plus `--data-dir` and `--listen 127.0.0.1:0`.
    pub fn start(args: &[&str], dir: Option<tempfile::TempDir>) -> Self {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        // `trellis up` runs a node agent as root; tests that want one say so
        // with `--agent-port` (and their own bridge and pod CIDR).
        let no_agent: &[&str] = if args.first() == Some(&"up") && !args.contains(&"--agent-port") {
            &["--no-agent"]
        } else {
            &[]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .args(no_agent)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start trellis");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(url) = line.split("listening on ").nth(1) {
                        let _ = tx.send(url.trim().to_string());
                    }
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        {
            let output = output.clone();
            let stderr = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    output.lock().unwrap().push_str(&format!("{line}\n"));
                }
            });
        }
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!("trellis did not start; output:\n{}", output.lock().unwrap());
            }
        };
        let addr = url.trim_start_matches("https://").to_string();
        let tokens = std::fs::read_to_string(dir.path().join("tokens.csv")).unwrap();
        let token = tokens
            .lines()
            .next()
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string();
        let c = Cluster {
            child,
            dir,
            url,
            addr,
            token,
            cache: tempfile::tempdir().unwrap(),
            output,
            keep: None,
        };
        c.eventually("/readyz answers 200", Duration::from_secs(30), || {
            c.http("GET", "/readyz", None, &[]).0 == 200
        });
        c
    }

    /// Everything the server printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Run kubectl; returns (exit code, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (i32, String, String) {
        self.kubectl_stdin(args, None)
    }

    /// Run kubectl with `stdin`.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut cmd = Command::new(kubectl_binary());
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// kubectl that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.kubectl(args);
        assert_eq!(
            code,
            0,
            "kubectl {args:?} failed:\n{out}\n{err}\nserver output:\n{}",
            self.output()
        );
        out
    }

    /// `kubectl apply -f -` of a manifest; returns stdout.
    pub fn apply(&self, manifest: &str) -> String {
        let (code, out, err) = self.kubectl_stdin(&["apply", "-f", "-"], Some(manifest));
        assert_eq!(
            code,
            0,
            "kubectl apply failed:\n{out}\n{err}\nmanifest:\n{manifest}\nserver output:\n{}",
            self.output()
        );
        out
    }

    /// A raw HTTP request with the admin token (unless `headers` has Authorization).
    /// Returns (status, body).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        let tcp = TcpStream::connect(&self.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let conn =
            rustls::ClientConnection::new(self.tls_client(), "127.0.0.1".try_into().unwrap())
                .unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req.push_str(&format!("Authorization: Bearer {}\r\n", self.token));
        }
        for (k, v) in headers {
            if !v.is_empty() {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        let body = body.unwrap_or(b"");
        req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(req.as_bytes()).unwrap();
        let _ = s.write_all(body);
        let _ = s.flush();
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = match text.split_once("\r\n\r\n") {
            Some((head, rest))
                if head
                    .to_ascii_lowercase()
                    .contains("transfer-encoding: chunked") =>
            {
                dechunk(rest)
            }
            Some((_, rest)) => rest.to_string(),
            None => String::new(),
        };
        (status, body)
    }

    /// A TLS client trusting only the cluster's CA.
    fn tls_client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        tls::client_config(&std::fs::read_to_string(self.dir.path().join("pki/ca.crt")).unwrap())
    }

    /// `kubectl get KIND NAME -o json`, which must succeed.
    pub fn object(&self, kind: &str, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["get", kind, name, "-o", "json"])).unwrap()
    }

    /// JSON of a GET that must succeed.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.http("GET", path, None, &[]);
        assert_eq!(code, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until `check` holds, failing after `patience`.
    pub fn eventually(&self, what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > patience {
                panic!(
                    "not true after {patience:?}: {what}\nserver output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop with SIGTERM and wait; returns whether it exited cleanly.
    pub fn stop(&mut self) -> bool {
        unsafe { libc_kill(self.child.id() as i32, 15) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The data directory, taken out (an empty one takes its place), so
    /// that it outlives the cluster: to restart on it, or to clean up what
    /// it describes after the cluster stopped.
    pub fn take_dir(&mut self) -> tempfile::TempDir {
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("a temp dir"))
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            out.push_str(&tail[..n.min(tail.len())]);
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Instantiate each `fn name(c: Cluster)` as a test on the embedded store
/// (`trellis up`) and on etcd (`trellis server --store etcd://...`).
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $( #[test] fn $name() { super::$name(super::common::Cluster::up()) } )*
        }
        mod etcd {
            $( #[test] fn $name() { if let Some(c) = super::common::Cluster::on_etcd() { super::$name(c) } } )*
        }
    };
}
#[allow(unused_imports)]
pub use on_both_stores;

/// A child process killed on drop (for `trellis sim nodes` and the like).
pub struct Background(pub std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Cluster {
    /// Start `trellis ARGS --kubeconfig <this cluster's>` in the background.
    pub fn spawn(&self, args: &[&str]) -> Background {
        Background(
            Command::new(env!("CARGO_BIN_EXE_trellis"))
                .args(args)
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start trellis"),
        )
    }
}
