//! Test and benchmark support: a real etcd on loopback.
//!
//! [`EtcdServer::start`] runs the `etcd` binary (Debian's `etcd-server`, or the one named
//! by `TRELLIS_ETCD_BIN`) with a temporary data directory and free ports, waits until it
//! answers, and kills it when dropped (also when a test panics). [`EtcdServer::start_or_skip`]
//! is what tests call: without an `etcd` binary it fails under `CI=true` and skips loudly
//! otherwise.
//!
//! ```no_run
//! # async fn demo() {
//! use trellis_store::{testing::EtcdServer, Store};
//! let Some(etcd) = EtcdServer::start_or_skip("my_test").await else { return };
//! let store = etcd.store().await.unwrap();
//! store.put(b"/k", "v".into()).await.unwrap();
//! # }
//! ```

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::EtcdStore;
use crate::store::Store;

/// How long etcd gets to start answering.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Failures starting a test etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdServerError {
    /// No `etcd` binary was found.
    #[error("etcd binary not found (install Debian's etcd-server or set TRELLIS_ETCD_BIN)")]
    BinaryNotFound,
    /// Creating the data directory or log file failed.
    #[error("preparing etcd's directory failed")]
    Io(#[source] std::io::Error),
    /// Starting the process failed.
    #[error("spawning {binary} failed")]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// etcd exited or did not answer within the patience.
    #[error("etcd did not become ready: {reason}; its log:\n{log}")]
    NotReady {
        /// What happened.
        reason: String,
        /// etcd's output.
        log: String,
    },
}

/// A running etcd, killed on drop.
pub struct EtcdServer {
    child: Child,
    endpoint: String,
    log_path: PathBuf,
    // Declared last so the directory is removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for EtcdServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdServer")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl EtcdServer {
    /// The `etcd` binary: `TRELLIS_ETCD_BIN`, else `etcd` on `PATH`, else `/usr/bin/etcd`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("TRELLIS_ETCD_BIN") {
            return Some(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join("etcd"))
            .chain([PathBuf::from("/usr/bin/etcd")])
            .find(|p| p.is_file())
    }

    /// Start etcd for a test, or decide to skip: returns `None` (after a loud message on
    /// stderr) when no binary exists and `CI` is not `true`.
    ///
    /// # Panics
    ///
    /// When etcd cannot be started, or under `CI=true` when the binary is missing: in CI a
    /// missing prerequisite is a failure, never a skip.
    pub async fn start_or_skip(test: &str) -> Option<EtcdServer> {
        if Self::binary().is_none() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: etcd binary not found and CI=true; install etcd-server");
            }
            // A skipped test must be visible in test output, which tracing is not.
            eprintln!(
                "\n######## SKIPPED {test}: no etcd binary (install etcd-server or set TRELLIS_ETCD_BIN) ########\n"
            );
            return None;
        }
        match Self::start().await {
            Ok(server) => Some(server),
            Err(e) => panic!("{test}: {e}"),
        }
    }

    /// Start etcd with its data directory under the system temp directory.
    pub async fn start() -> Result<EtcdServer, EtcdServerError> {
        Self::start_in(&std::env::temp_dir()).await
    }

    /// Start etcd with its data directory under `parent` (benchmarks put it on the disk
    /// they measure).
    pub async fn start_in(parent: &Path) -> Result<EtcdServer, EtcdServerError> {
        let mut last = None;
        // Free ports are picked by binding port 0 and releasing it; another process can
        // grab one in between, so retry a couple of times.
        for _ in 0..3 {
            match Self::try_start(parent).await {
                Ok(server) => return Ok(server),
                Err(e @ (EtcdServerError::BinaryNotFound | EtcdServerError::Spawn { .. })) => {
                    return Err(e)
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    async fn try_start(parent: &Path) -> Result<EtcdServer, EtcdServerError> {
        let binary = Self::binary().ok_or(EtcdServerError::BinaryNotFound)?;
        let dir = tempfile::Builder::new()
            .prefix("trellis-etcd-")
            .tempdir_in(parent)
            .map_err(EtcdServerError::Io)?;
        let client_port = free_port().map_err(EtcdServerError::Io)?;
        let peer_port = free_port().map_err(EtcdServerError::Io)?;
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).map_err(EtcdServerError::Io)?;
        let log2 = log.try_clone().map_err(EtcdServerError::Io)?;
        let child = Command::new(&binary)
            .arg("--name=trellis-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=trellis-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            // Room for a 1.5 MiB value plus its key and framing (see the etcd backend docs).
            .arg("--max-request-bytes=2097152")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|source| EtcdServerError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        let mut server = EtcdServer {
            child,
            endpoint: client_url,
            log_path,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), EtcdServerError> {
        let deadline = Instant::now() + START_PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.not_ready(format!("etcd exited with {status}")));
            }
            if let Ok(Ok(store)) = tokio::time::timeout(
                Duration::from_secs(2),
                EtcdStore::connect(&[self.endpoint.as_str()]),
            )
            .await
            {
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_secs(2), store.revision()).await
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!("no answer within {START_PATIENCE:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn not_ready(&self, reason: String) -> EtcdServerError {
        EtcdServerError::NotReady {
            reason,
            log: self.log(),
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// etcd's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A store connected to this etcd.
    pub async fn store(&self) -> crate::Result<EtcdStore> {
        EtcdStore::connect(&[self.endpoint.as_str()]).await
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
