//! What the benchmarks share: a real `trellis up` child and a keep-alive
//! HTTPS client for it.

#![allow(dead_code)]

#[path = "../../tests/common/tls.rs"]
mod tls;

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A `trellis up` child, killed on drop.
pub struct Server {
    pub child: std::process::Child,
    addr: String,
    token: String,
    tls: tokio_rustls::TlsConnector,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A count from the environment variable `name`, else `default`.
pub fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A process's proportional set size in KiB (`Pss` of smaps_rollup): its
/// resident pages, each shared one divided among the processes mapping it.
/// Summed over processes that run one binary (the shims), it counts the
/// binary's pages once, where summing RSS counts them in each; 0 when
/// unreadable.
pub fn pss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// Resident memory of a process.
pub fn rss_kib(pid: u32) -> u64 {
    kib_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The number after `key` on its line of a /proc file (in KiB there).
fn kib_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// `trellis up` on `dir` with `extra` arguments, on a free port.
pub fn start(dir: &Path, extra: &[&str]) -> Server {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(extra)
        // A node agent only where the benchmark asks for one.
        .args(if extra.contains(&"--agent-port") {
            &[][..]
        } else {
            &["--no-agent"][..]
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start trellis");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("trellis printed its address").unwrap();
        if let Some(u) = line.split("listening on https://").nth(1) {
            break u.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let token = std::fs::read_to_string(dir.join("tokens.csv"))
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let config = tls::client_config(&std::fs::read_to_string(dir.join("pki/ca.crt")).unwrap());
    Server {
        child,
        addr,
        token,
        tls: tokio_rustls::TlsConnector::from(config),
    }
}

/// One keep-alive HTTPS connection.
pub struct Client {
    pub send: SendRequest<Full<Bytes>>,
    token: String,
}

impl Server {
    /// A new connection.
    pub async fn client(&self) -> Client {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = self
            .tls
            .connect("127.0.0.1".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        Client {
            send,
            token: self.token.clone(),
        }
    }
}

impl Client {
    /// A request with the token.
    pub fn request(&self, method: &str, path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("Host", "127.0.0.1")
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    /// One request; (status, body).
    pub async fn call(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        self.send.ready().await.unwrap();
        let resp = self
            .send
            .send_request(self.request(method, path, body))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    }
}

/// With `BENCH_PERF_CTL=FIFO` (perf record's `-D -1 --control fifo:FIFO`),
/// send `command` (`enable`/`disable`) so that only the part of a benchmark
/// between them is profiled.
#[allow(dead_code)]
pub fn perf_control(command: &str) {
    if let Ok(fifo) = std::env::var("BENCH_PERF_CTL") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(fifo) {
            let _ = writeln!(f, "{command}");
        }
    }
}
