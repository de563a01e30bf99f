//! The agent's side of the shim socket. Calls block: the agent makes them
//! from blocking threads.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{ContainerState, Request, Response, SOCKET};

/// Why a shim call failed.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// No shim answers on the socket.
    #[error("shim at {path} is not reachable: {source}")]
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The shim could not be started.
    #[error("starting the shim for {dir}: {message}")]
    Spawn {
        /// The pod directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// The shim refused or failed the request.
    #[error("{0}")]
    Failed(String),
    /// The shim answered something unexpected.
    #[error("shim protocol error: {0}")]
    Protocol(String),
}

/// A connection factory for one pod's shim.
#[derive(Debug, Clone)]
pub struct ShimClient {
    dir: PathBuf,
}

impl ShimClient {
    /// The shim of the pod directory `dir` (which may not run yet).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// The pod directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Start a shim for this pod directory with `program args… --dir DIR`
    /// (e.g. the `trellis` executable and `["shim"]`) unless one answers
    /// already. Returns once it listens.
    pub fn spawn(&self, program: &Path, args: &[String]) -> Result<(), ShimError> {
        if self.ping().is_ok() {
            return Ok(());
        }
        let out = Command::new(program)
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .map_err(|e| ShimError::Spawn {
                dir: self.dir.clone(),
                message: format!("{}: {e}", program.display()),
            })?;
        if !out.status.success() {
            // Two agents racing to start the same shim: the loser finds the
            // winner serving.
            if self.ping().is_ok() {
                return Ok(());
            }
            return Err(ShimError::Spawn {
                dir: self.dir.clone(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        self.ping()
    }

    /// Send one request and read the answer.
    pub fn call(&self, req: &Request, timeout: Duration) -> Result<Response, ShimError> {
        let path = self.dir.join(SOCKET);
        let unreachable = |source| ShimError::Unreachable {
            path: path.clone(),
            source,
        };
        let mut conn = UnixStream::connect(&path).map_err(unreachable)?;
        conn.set_read_timeout(Some(timeout)).map_err(unreachable)?;
        conn.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(unreachable)?;
        let mut line = serde_json::to_vec(req).map_err(|e| ShimError::Protocol(e.to_string()))?;
        line.push(b'\n');
        conn.write_all(&line).map_err(unreachable)?;
        let mut answer = String::new();
        BufReader::new(&conn)
            .read_line(&mut answer)
            .map_err(unreachable)?;
        if answer.is_empty() {
            return Err(ShimError::Protocol("the shim closed the connection".into()));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Error { message }) => Err(ShimError::Failed(message)),
            Ok(r) => Ok(r),
            Err(e) => Err(ShimError::Protocol(format!("{e}: {answer}"))),
        }
    }

    /// Is the shim alive?
    pub fn ping(&self) -> Result<(), ShimError> {
        self.call(&Request::Ping, Duration::from_secs(5)).map(drop)
    }

    /// Create and start a container; `rootfs`, a container directory the
    /// image store staged, is mounted by the shim first (see
    /// [`Request::Run`]).
    pub fn run(
        &self,
        id: &str,
        bundle: &Path,
        log: &Path,
        rootfs: Option<&Path>,
    ) -> Result<ContainerState, ShimError> {
        let req = Request::Run {
            id: id.into(),
            bundle: bundle.into(),
            log: log.into(),
            rootfs: rootfs.map(Path::to_path_buf),
        };
        match self.call(&req, Duration::from_secs(60))? {
            Response::Started { state } => Ok(state),
            other => Err(ShimError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Signal a container's init process.
    pub fn kill(&self, id: &str, signal: i32) -> Result<(), ShimError> {
        let req = Request::Kill {
            id: id.into(),
            signal,
        };
        self.call(&req, Duration::from_secs(10)).map(drop)
    }

    /// Remove a container (killed first if it runs).
    pub fn delete(&self, id: &str) -> Result<(), ShimError> {
        self.call(&Request::Delete { id: id.into() }, Duration::from_secs(30))
            .map(drop)
    }

    /// Every container of the pod.
    pub fn state(&self) -> Result<Vec<ContainerState>, ShimError> {
        match self.call(&Request::State, Duration::from_secs(10))? {
            Response::State { containers } => Ok(containers),
            other => Err(ShimError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Run a command in a container and wait for it (at most `timeout`).
    pub fn exec(
        &self,
        id: &str,
        args: Vec<String>,
        stdin: Vec<u8>,
        timeout: Duration,
    ) -> Result<ExecResult, ShimError> {
        let req = Request::Exec {
            id: id.into(),
            args,
            stdin,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.call(&req, timeout + Duration::from_secs(10))? {
            Response::Exec {
                stdout,
                stderr,
                exit_code,
                timed_out,
            } => Ok(ExecResult {
                stdout,
                stderr,
                exit_code,
                timed_out,
            }),
            other => Err(ShimError::Protocol(format!("unexpected answer {other:?}"))),
        }
    }

    /// Ask the shim to exit once no container runs.
    pub fn shutdown(&self) -> Result<(), ShimError> {
        self.call(&Request::Shutdown, Duration::from_secs(5))
            .map(drop)
    }
}

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Standard output (bounded).
    pub stdout: Vec<u8>,
    /// Standard error (bounded).
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
    /// Killed at the deadline.
    pub timed_out: bool,
}
