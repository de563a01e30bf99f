//! The agent's kubelet-like HTTP server: the API server reaches containers'
//! logs and runs commands in them through it (`kubectl logs`, `kubectl exec`).
//!
//! The agent implements [`NodeServices`] (where a container's log file is,
//! how to run a command in it); [`serve`] does the HTTP side:
//!
//! - `GET /healthz` answers `ok` (no token needed).
//! - `GET /containerLogs/{namespace}/{pod}/{container}` with kubelet's
//!   parameters `follow`, `previous`, `timestamps`, `tailLines`,
//!   `sinceSeconds`, `sinceTime`, `limitBytes` and `stream`
//!   (`All`/`Stdout`/`Stderr`) answers the log as plain text, read from the
//!   CRI log file the shim writes (`<RFC3339Nano> <stdout|stderr> <F|P>
//!   <content>` per record). With `timestamps`, each line starts with its
//!   record's time in Go's RFC3339Nano form, as kubelet prints it. With
//!   `follow`, new records stream as the file grows, until the container
//!   stops ([`LogFile::running`] turns false) and the file is drained, the
//!   client goes away or the server shuts down. `tailLines` counts logical
//!   lines (a run of partial records and the full record ending it).
//! - `POST /exec/{namespace}/{pod}/{container}?command=A&command=B[&stdin=true]`
//!   runs the command to completion; with `stdin`, the request body is its
//!   standard input. The 200 answer ([`EXEC_CONTENT_TYPE`]) is a sequence of
//!   frames, each `[stream: u8][length: u32, big-endian][payload]`:
//!   [`EXEC_STDOUT`] and [`EXEC_STDERR`] carry output, and a last
//!   [`EXEC_EXIT`] frame carries the exit code as an `i32`, big-endian.
//!   Output is sent once the command ends today; the framing lets it stream
//!   later without changing the API server.
//!
//! Errors are plain text with kubelet's codes: 400 for a bad request or a
//! log that cannot be served, 404 for an unknown pod or container, 401 when
//! the bearer token is missing or wrong, 500 otherwise; the API server turns
//! them into `Status` objects.
//!
//! Security, compared with kubelet: kubelet serves HTTPS with a serving
//! certificate the API server verifies, authenticates the API server by its
//! client certificate (or a webhook token review) and authorizes each call
//! with a SubjectAccessReview. This server speaks plain HTTP and checks only
//! an optional shared bearer token: the token, logs, stdin and command output
//! cross the network in clear, so the port must be reachable only from the
//! control plane (loopback or a private network) until TLS arrives.
//!
//! ```no_run
//! use std::sync::Arc;
//! use trellis_agent::server::{self, BoxFuture, ExecOutput, LogFile, NodeServices, ServiceError};
//!
//! struct Node;
//! impl NodeServices for Node {
//!     fn container_log(&self, ns: &str, pod: &str, c: &str, previous: bool) -> Result<LogFile, ServiceError> {
//!         let dir = if previous { "previous" } else { "current" };
//!         Ok(LogFile::new(format!("/var/log/pods/{ns}_{pod}/{c}/{dir}.log"), || true))
//!     }
//!     fn exec(&self, _: &str, _: &str, c: &str, _: Vec<String>, _: Option<Vec<u8>>)
//!         -> BoxFuture<'static, Result<ExecOutput, ServiceError>> {
//!         let c = c.to_string();
//!         Box::pin(async move { Err(ServiceError::NotFound(format!("container not found ({c:?})"))) })
//!     }
//! }
//!
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:10250").await?;
//! server::serve(listener, Arc::new(Node), Some("shared-token".into()), async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// A boxed, sendable future (what [`NodeServices::exec`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Content type of an exec answer: a sequence of frames (see the module docs).
pub const EXEC_CONTENT_TYPE: &str = "application/vnd.trellis.exec-frames";
/// Exec frame stream id: standard output.
pub const EXEC_STDOUT: u8 = 1;
/// Exec frame stream id: standard error.
pub const EXEC_STDERR: u8 = 2;
/// Exec frame stream id: the exit code (an `i32`, big-endian); always last.
pub const EXEC_EXIT: u8 = 3;

/// Largest exec stdin the server accepts (413 above).
pub const MAX_EXEC_STDIN: usize = 16 * 1024 * 1024;

/// How often a followed log is checked for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What the agent provides to the server. The server never touches
/// containers itself: it reads the files and runs the commands this gives.
pub trait NodeServices: Send + Sync + 'static {
    /// The CRI log file of a container's current run (or, with `previous`,
    /// of its last finished run, whose `running` is always false).
    ///
    /// Errors: [`ServiceError::NotFound`] for an unknown pod or container;
    /// [`ServiceError::BadRequest`] when there is no such log, with kubelet's
    /// wording, e.g. `previous terminated container "app" in pod "web" not
    /// found`. A file that does not exist yet reads as an empty log.
    fn container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogFile, ServiceError>;

    /// Run `command` to completion in a running container, non-interactively,
    /// with `stdin` (when given) as its standard input.
    ///
    /// Errors: [`ServiceError::NotFound`] when the pod or a running container
    /// of that name is not there (kubelet says `container not found ("app")`);
    /// [`ServiceError::Internal`] when the command could not be started.
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> BoxFuture<'static, Result<ExecOutput, ServiceError>>;
}

/// Where a container's log is, and whether its writer may still append.
#[derive(Clone)]
pub struct LogFile {
    /// The CRI log file.
    pub path: PathBuf,
    /// True while the container runs (a followed log ends once this turns
    /// false and the file is drained).
    pub running: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl LogFile {
    /// A log at `path` whose container runs while `running` says so.
    pub fn new(
        path: impl Into<PathBuf>,
        running: impl Fn() -> bool + Send + Sync + 'static,
    ) -> Self {
        Self {
            path: path.into(),
            running: Arc::new(running),
        }
    }

    /// The log of a run that has ended.
    pub fn finished(path: impl Into<PathBuf>) -> Self {
        Self::new(path, || false)
    }
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile")
            .field("path", &self.path)
            .field("running", &(self.running)())
            .finish()
    }
}

/// What a finished command wrote and how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
    /// Its exit code (128 + N when killed by signal N, as shells report it).
    pub exit_code: i32,
}

/// Why a [`NodeServices`] call failed; the message reaches the user as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// No such pod or container (404).
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be served as asked (400).
    #[error("{0}")]
    BadRequest(String),
    /// The agent failed (500).
    #[error("{0}")]
    Internal(String),
}

impl ServiceError {
    fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::BadRequest(_) => 400,
            Self::Internal(_) => 500,
        }
    }
}

/// Serve on `listener` until `shutdown` resolves; then stop accepting, end
/// followed logs and give open requests up to 5 s. With `token`, every
/// request but `/healthz` must carry `Authorization: Bearer <token>`.
pub async fn serve(
    listener: TcpListener,
    services: Arc<dyn NodeServices>,
    token: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        services,
        token,
        stop: stop_rx.clone(),
    });
    // Each connection task holds a sender; when all are gone, every
    // connection has ended.
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent server: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Streamed logs and exec output are small writes: no Nagle
                // delay (see the API server's accept loop).
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let mut stop = stop_rx.clone();
                let drain = drain_tx.clone();
                tokio::spawn(async move {
                    let _drain = drain;
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(handle(&shared, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, %peer, "agent server: connection ended with an error");
                            }
                        }
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                        }
                    }
                });
            }
            _ = &mut shutdown => break,
        }
    }
    let _ = stop_tx.send(true);
    drop(drain_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), drain_rx.recv()).await;
    Ok(())
}

struct Shared {
    services: Arc<dyn NodeServices>,
    token: Option<String>,
    stop: watch::Receiver<bool>,
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn text(status: u16, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)).boxed())
        .expect("valid response")
}

/// Answer one request.
async fn handle<B>(shared: &Shared, req: Request<B>) -> Response<Body>
where
    B: HttpBody,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::debug_span!("agent_request", %method, %path);
    let _enter = span.enter();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    if segs == ["healthz"] {
        return text(200, "ok");
    }
    if let Some(token) = &shared.token {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|g| same_token(g.as_bytes(), token.as_bytes())) {
            return text(401, "Unauthorized");
        }
    }
    let query = query_pairs(req.uri().query());
    match (segs.as_slice(), &method) {
        (["containerLogs", ns, pod, container], &Method::GET) => {
            container_logs(shared, ns, pod, container, &query).await
        }
        (["exec", ns, pod, container], &Method::POST) => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            exec(shared, &ns, &pod, &container, &query, req.into_body()).await
        }
        (["containerLogs", ..] | ["exec", ..], _) if segs.len() == 4 => {
            text(405, format!("method {method} is not allowed on {path}"))
        }
        _ => text(404, "404 page not found"),
    }
}

/// Compare tokens in time independent of where they differ.
fn same_token(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn exec<B>(
    shared: &Shared,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
    body: B,
) -> Response<Body>
where
    B: HttpBody,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return text(
            400,
            "you must specify at least one command for the container",
        );
    }
    let stdin = if flag(query, "stdin") {
        match http_body_util::Limited::new(body, MAX_EXEC_STDIN)
            .collect()
            .await
        {
            Ok(c) => Some(c.to_bytes().to_vec()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return text(
                    413,
                    format!("stdin is larger than the limit of {MAX_EXEC_STDIN} bytes"),
                )
            }
            Err(e) => return text(400, format!("reading stdin failed: {e}")),
        }
    } else {
        None
    };
    tracing::debug!(ns, pod, container, ?command, "exec");
    match shared
        .services
        .exec(ns, pod, container, command, stdin)
        .await
    {
        Ok(out) => {
            let mut body = Vec::with_capacity(out.stdout.len() + out.stderr.len() + 15);
            for (stream, data) in [(EXEC_STDOUT, &out.stdout), (EXEC_STDERR, &out.stderr)] {
                if !data.is_empty() {
                    push_frame(&mut body, stream, data);
                }
            }
            push_frame(&mut body, EXEC_EXIT, &out.exit_code.to_be_bytes());
            Response::builder()
                .status(200)
                .header("Content-Type", EXEC_CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)).boxed())
                .expect("valid response")
        }
        Err(e) => text(e.status(), e.to_string()),
    }
}

fn push_frame(out: &mut Vec<u8>, stream: u8, data: &[u8]) {
    // Frames over 4 GiB are split so the length always fits.
    for chunk in data.chunks(u32::MAX as usize) {
        out.push(stream);
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

// ---------------------------------------------------------------------------
// Logs

/// Which streams a log request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum StreamFilter {
    #[default]
    All,
    Stdout,
    Stderr,
}

/// kubelet's log options, parsed from the query.
#[derive(Debug, Clone, Default, PartialEq)]
struct LogOptions {
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<u64>,
    since: Option<Timestamp>,
    limit_bytes: Option<u64>,
    stream: StreamFilter,
}

impl LogOptions {
    fn parse(query: &[(String, String)], now: Timestamp) -> Result<Self, String> {
        let int = |name: &str| -> Result<Option<i64>, String> {
            match get(query, name) {
                None => Ok(None),
                Some(v) => v
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| format!("{name}: invalid value {v:?}: must be an integer")),
            }
        };
        let tail_lines = match int("tailLines")? {
            Some(n) if n < 0 => {
                return Err(format!(
                    "tailLines: invalid value {n}: must be greater than or equal to 0"
                ))
            }
            n => n.map(|n| n as u64),
        };
        let limit_bytes = match int("limitBytes")? {
            Some(n) if n < 1 => {
                return Err(format!(
                    "limitBytes: invalid value {n}: must be greater than 0"
                ))
            }
            n => n.map(|n| n as u64),
        };
        let since_seconds = int("sinceSeconds")?;
        let since_time = get(query, "sinceTime").filter(|v| !v.is_empty());
        let since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => {
                return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into())
            }
            (Some(n), None) if n < 1 => {
                return Err(format!(
                    "sinceSeconds: invalid value {n}: must be greater than 0"
                ))
            }
            (Some(n), None) => Some(Timestamp {
                secs: now.secs.saturating_sub(n),
                nanos: now.nanos,
            }),
            (None, Some(t)) => Some(Timestamp::parse(t).ok_or_else(|| {
                format!("sinceTime: invalid value {t:?}: must be an RFC 3339 time")
            })?),
            (None, None) => None,
        };
        let stream = match get(query, "stream") {
            None | Some("" | "All") => StreamFilter::All,
            Some("Stdout") => StreamFilter::Stdout,
            Some("Stderr") => StreamFilter::Stderr,
            Some(other) => {
                return Err(format!(
                    "stream: unsupported value {other:?}: supported values are \"All\", \"Stdout\", \"Stderr\""
                ))
            }
        };
        Ok(Self {
            follow: flag(query, "follow"),
            previous: flag(query, "previous"),
            timestamps: flag(query, "timestamps"),
            tail_lines,
            since,
            limit_bytes,
            stream,
        })
    }
}

async fn container_logs(
    shared: &Shared,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let opts = match LogOptions::parse(query, Timestamp::now()) {
        Ok(o) => o,
        Err(message) => return text(400, message),
    };
    let log = match shared
        .services
        .container_log(ns, pod, container, opts.previous)
    {
        Ok(l) => l,
        Err(e) => return text(e.status(), e.to_string()),
    };
    let file = match tokio::fs::File::open(&log.path).await {
        Ok(f) => Some(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return text(
                500,
                format!("failed to open log file {:?}: {e}", log.path.display()),
            )
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let stop = shared.stop.clone();
    let what = format!("{ns}/{pod}/{container}");
    tokio::spawn(async move {
        if let Err(e) = stream_log(log, file, opts, tx, stop).await {
            tracing::warn!(container = %what, error = %e, "reading a container log failed");
        }
    });
    Response::builder()
        .status(200)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Cache-Control", "no-cache, private")
        .body(ChannelBody { rx }.boxed())
        .expect("valid response")
}

/// A body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads a CRI log file record by record, remembering where it is.
struct LogReader {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    offset: u64,
    /// Bytes of a record not yet ended by a newline.
    pending: Vec<u8>,
}

impl LogReader {
    /// Complete records appended since the last call (empty at the end).
    async fn read_records(&mut self) -> std::io::Result<Vec<Record>> {
        if self.file.is_none() {
            match tokio::fs::File::open(&self.path).await {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        let file = self.file.as_mut().expect("opened above");
        // A file truncated under us (copytruncate) starts over.
        if file.metadata().await?.len() < self.offset {
            file.seek(std::io::SeekFrom::Start(0)).await?;
            self.offset = 0;
            self.pending.clear();
        }
        let mut records = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = file.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            let mut chunk = &buf[..n];
            while let Some(i) = chunk.iter().position(|b| *b == b'\n') {
                self.pending.extend_from_slice(&chunk[..=i]);
                chunk = &chunk[i + 1..];
                match Record::parse(&self.pending) {
                    Some(r) => records.push(r),
                    None => tracing::debug!(
                        line = %String::from_utf8_lossy(&self.pending),
                        "skipping a malformed CRI log record"
                    ),
                }
                self.pending.clear();
            }
            self.pending.extend_from_slice(chunk);
            if records.len() >= 4096 {
                break;
            }
        }
        Ok(records)
    }

    /// A last record the writer left without its newline (read once the
    /// container has stopped).
    fn take_unterminated(&mut self) -> Option<Record> {
        if self.pending.is_empty() {
            return None;
        }
        let mut line = std::mem::take(&mut self.pending);
        line.push(b'\n');
        Record::parse(&line)
    }
}

/// Turns records into kubelet's output: timestamps at line starts, `since`
/// and stream filters, the byte limit.
struct Emitter {
    timestamps: bool,
    since: Option<Timestamp>,
    stream: StreamFilter,
    remaining: Option<u64>,
    /// Per stream: whether the next record starts a line.
    line_start: [bool; 2],
}

impl Emitter {
    fn new(opts: &LogOptions) -> Self {
        Self {
            timestamps: opts.timestamps,
            since: opts.since,
            stream: opts.stream,
            remaining: opts.limit_bytes,
            line_start: [true, true],
        }
    }

    fn done(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Append `r`'s output to `out`.
    fn emit(&mut self, r: &Record, out: &mut Vec<u8>) {
        if self.done() {
            return;
        }
        let wanted = match self.stream {
            StreamFilter::All => true,
            StreamFilter::Stdout => !r.stderr,
            StreamFilter::Stderr => r.stderr,
        };
        if !wanted || self.since.is_some_and(|s| r.time < s) {
            return;
        }
        let start = out.len();
        let at_start = &mut self.line_start[usize::from(r.stderr)];
        if self.timestamps && *at_start {
            out.extend_from_slice(r.time.format_go_nano().as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&r.content);
        if !r.partial {
            out.push(b'\n');
        }
        *at_start = !r.partial;
        if let Some(rem) = &mut self.remaining {
            let written = (out.len() - start) as u64;
            if written >= *rem {
                out.truncate(start + *rem as usize);
                *rem = 0;
            } else {
                *rem -= written;
            }
        }
    }
}

async fn stream_log(
    log: LogFile,
    file: Option<tokio::fs::File>,
    opts: LogOptions,
    tx: mpsc::Sender<Bytes>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut reader = LogReader {
        file,
        path: log.path.clone(),
        offset: 0,
        pending: Vec::new(),
    };
    let mut emitter = Emitter::new(&opts);
    let send = |out: Vec<u8>| {
        let tx = tx.clone();
        async move { out.is_empty() || tx.send(Bytes::from(out)).await.is_ok() }
    };

    // What is in the file now, cut to the last `tailLines` lines.
    let mut running = (log.running)();
    let mut backlog: VecDeque<Record> = VecDeque::new();
    let mut lines = 0u64;
    loop {
        let records = reader.read_records().await?;
        if records.is_empty() {
            break;
        }
        for r in records {
            let ends_line = !r.partial;
            backlog.push_back(r);
            if ends_line {
                lines += 1;
            }
            if let Some(tail) = opts.tail_lines {
                trim_to_lines(&mut backlog, &mut lines, tail);
            }
        }
        if opts.tail_lines.is_none() {
            let mut out = Vec::new();
            for r in backlog.drain(..) {
                emitter.emit(&r, &mut out);
            }
            if !send(out).await || emitter.done() {
                return Ok(());
            }
        }
    }
    if !running {
        if let Some(r) = reader.take_unterminated() {
            backlog.push_back(r);
            if r_ends_line(&backlog) {
                lines += 1;
            }
            if let Some(tail) = opts.tail_lines {
                trim_to_lines(&mut backlog, &mut lines, tail);
            }
        }
    }
    let mut out = Vec::new();
    for r in backlog.drain(..) {
        emitter.emit(&r, &mut out);
    }
    if !send(out).await || emitter.done() || !opts.follow {
        return Ok(());
    }

    // Follow: new records as they come, until the container has stopped and
    // everything it wrote has been sent.
    while running {
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
            _ = stop.changed() => return Ok(()),
        }
        // Read after checking, so a record written just before the container
        // stopped is still sent.
        running = (log.running)();
        let mut out = Vec::new();
        loop {
            let records = reader.read_records().await?;
            if records.is_empty() {
                break;
            }
            for r in &records {
                emitter.emit(r, &mut out);
            }
        }
        if !running {
            if let Some(r) = reader.take_unterminated() {
                emitter.emit(&r, &mut out);
            }
        }
        if !send(out).await || emitter.done() {
            return Ok(());
        }
    }
    Ok(())
}

fn r_ends_line(backlog: &VecDeque<Record>) -> bool {
    backlog.back().is_some_and(|r| !r.partial)
}

/// Drop whole lines from the front until at most `tail` complete lines (and
/// any partial records after the last) remain.
fn trim_to_lines(backlog: &mut VecDeque<Record>, lines: &mut u64, tail: u64) {
    let open = !r_ends_line(backlog) && !backlog.is_empty();
    // An unfinished line at the end counts as a line.
    while *lines + u64::from(open) > tail {
        match backlog.pop_front() {
            Some(r) if !r.partial => *lines -= 1,
            Some(_) => {}
            None => break,
        }
        if backlog.is_empty() {
            break;
        }
    }
    if tail == 0 {
        backlog.clear();
        *lines = 0;
    }
}

/// One CRI log record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    time: Timestamp,
    stderr: bool,
    partial: bool,
    content: Vec<u8>,
}

impl Record {
    /// Parse `<time> <stream> <tag> <content>\n`.
    fn parse(line: &[u8]) -> Option<Record> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let mut parts = line.splitn(4, |b| *b == b' ');
        let time = Timestamp::parse(std::str::from_utf8(parts.next()?).ok()?)?;
        let stderr = match parts.next()? {
            b"stdout" => false,
            b"stderr" => true,
            _ => return None,
        };
        // Tags are ':'-separated; the first says full or partial.
        let tag = parts.next()?;
        let partial = tag.split(|b| *b == b':').next()? == b"P";
        let content = parts.next().unwrap_or(b"").to_vec();
        Some(Record {
            time,
            stderr,
            partial,
            content,
        })
    }
}

// ---------------------------------------------------------------------------
// Time

/// A UTC instant with nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: d.as_secs() as i64,
            nanos: d.subsec_nanos(),
        }
    }

    /// Parse RFC 3339 (`2024-05-01T10:00:00.5Z`, `...+02:00`).
    fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let part = s.get(r)?;
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return None;
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || !(1..=31).contains(&day)
            || hour > 23
            || min > 59
            || sec > 60
        {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0u32;
        if b[i] == b'.' {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let digits = &s[start..i];
            if digits.is_empty() {
                return None;
            }
            let mut padded: String = digits.chars().take(9).collect();
            while padded.len() < 9 {
                padded.push('0');
            }
            nanos = padded.parse().ok()?;
        }
        let offset = match b.get(i)? {
            b'Z' | b'z' if i + 1 == b.len() => 0,
            c @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
                let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                let o = h * 3600 + m * 60;
                if *c == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        Some(Self {
            secs: days * 86_400 + hour * 3600 + min * 60 + sec - offset,
            nanos,
        })
    }

    /// Go's `time.RFC3339Nano` in UTC: trailing zeros of the fraction dropped.
    fn format_go_nano(&self) -> String {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        let mut s = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        );
        if self.nanos > 0 {
            let frac = format!("{:09}", self.nanos);
            s.push('.');
            s.push_str(frac.trim_end_matches('0'));
        }
        s.push('Z');
        s
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `z` days after 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------
// Queries

/// All `key=value` pairs, percent-decoded, in order (repeated keys kept).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The first value of `key`.
fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A boolean as Kubernetes decodes query parameters: present and not
/// `0`/`false`.
fn flag(q: &[(String, String)], key: &str) -> bool {
    get(q, key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Percent-decoding, with '+' as space.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn timestamps_parse_and_format_like_go() {
        let t = ts("2024-05-01T10:00:01.500000000Z");
        assert_eq!(t.format_go_nano(), "2024-05-01T10:00:01.5Z");
        assert_eq!(
            ts("2024-05-01T10:00:01Z").format_go_nano(),
            "2024-05-01T10:00:01Z"
        );
        assert_eq!(
            ts("2024-05-01T12:00:01.000000001+02:00").format_go_nano(),
            "2024-05-01T10:00:01.000000001Z"
        );
        assert_eq!(ts("1970-01-01T00:00:00Z").secs, 0);
        assert_eq!(ts("2000-02-29T00:00:00Z").secs, 951_782_400);
        assert_eq!(
            ts("1969-12-31T23:59:59Z").format_go_nano(),
            "1969-12-31T23:59:59Z"
        );
        for bad in [
            "",
            "2024-05-01",
            "2024-13-01T00:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00.Z",
        ] {
            assert!(Timestamp::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn records_parse() {
        let r = Record::parse(b"2024-05-01T10:00:00.1Z stderr P part one\n").unwrap();
        assert!(r.stderr && r.partial);
        assert_eq!(r.content, b"part one");
        let r = Record::parse(b"2024-05-01T10:00:00.1Z stdout F\n").unwrap();
        assert!(!r.partial && r.content.is_empty());
        let r = Record::parse(b"2024-05-01T10:00:00.1Z stdout F:x  two  spaces\n").unwrap();
        assert_eq!(r.content, b" two  spaces");
        assert!(Record::parse(b"garbage\n").is_none());
        assert!(Record::parse(b"2024-05-01T10:00:00.1Z stdin F x\n").is_none());
    }

    #[test]
    fn log_options_validate_like_upstream() {
        let q = |s: &str| query_pairs(Some(s));
        let now = ts("2024-05-01T10:00:00Z");
        let o = LogOptions::parse(
            &q("follow=true&timestamps=1&tailLines=3&limitBytes=10&sinceSeconds=60"),
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(3), Some(10)));
        assert_eq!(o.since, Some(ts("2024-05-01T09:59:00Z")));
        assert!(LogOptions::parse(&q("follow=false"), now).unwrap().follow == false);
        assert!(LogOptions::parse(&q("tailLines=-1"), now)
            .unwrap_err()
            .contains("tailLines"));
        assert!(LogOptions::parse(&q("limitBytes=0"), now)
            .unwrap_err()
            .contains("limitBytes"));
        assert!(
            LogOptions::parse(&q("sinceSeconds=1&sinceTime=2024-05-01T10:00:00Z"), now)
                .unwrap_err()
                .contains("at most one")
        );
        assert!(LogOptions::parse(&q("stream=Both"), now).is_err());
        assert_eq!(
            LogOptions::parse(&q("stream=Stderr"), now).unwrap().stream,
            StreamFilter::Stderr
        );
    }

    const LOG: &str = "\
2024-05-01T10:00:00.000000001Z stdout F one
2024-05-01T10:00:01.5Z stderr F two
2024-05-01T10:00:02Z stdout P thr
2024-05-01T10:00:02.25Z stdout F ee
not a record
2024-05-01T10:00:03Z stdout F four
";

    struct Fake {
        dir: tempfile::TempDir,
        running: Arc<AtomicBool>,
        exec_seen: Mutex<Vec<(Vec<String>, Option<Vec<u8>>)>>,
    }

    impl NodeServices for Fake {
        fn container_log(
            &self,
            _ns: &str,
            pod: &str,
            container: &str,
            previous: bool,
        ) -> Result<LogFile, ServiceError> {
            if pod != "web" {
                return Err(ServiceError::NotFound(format!("pod {pod} not found")));
            }
            if previous {
                return Err(ServiceError::BadRequest(format!(
                    "previous terminated container {container:?} in pod {pod:?} not found"
                )));
            }
            let running = self.running.clone();
            Ok(LogFile::new(
                self.dir.path().join(format!("{container}.log")),
                move || running.load(Ordering::SeqCst),
            ))
        }

        fn exec(
            &self,
            _ns: &str,
            _pod: &str,
            container: &str,
            command: Vec<String>,
            stdin: Option<Vec<u8>>,
        ) -> BoxFuture<'static, Result<ExecOutput, ServiceError>> {
            self.exec_seen
                .lock()
                .unwrap()
                .push((command.clone(), stdin.clone()));
            let container = container.to_string();
            Box::pin(async move {
                if container != "app" {
                    return Err(ServiceError::NotFound(format!(
                        "container not found ({container:?})"
                    )));
                }
                Ok(ExecOutput {
                    stdout: stdin.unwrap_or_else(|| command.join(" ").into_bytes()),
                    stderr: b"warn".to_vec(),
                    exit_code: 7,
                })
            })
        }
    }

    fn fake(log: &str) -> (Arc<Fake>, Shared, watch::Sender<bool>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log"), log).unwrap();
        let fake = Arc::new(Fake {
            dir,
            running: Arc::new(AtomicBool::new(false)),
            exec_seen: Mutex::new(Vec::new()),
        });
        let (tx, rx) = watch::channel(false);
        let shared = Shared {
            services: fake.clone(),
            token: Some("sekret".into()),
            stop: rx,
        };
        (fake, shared, tx)
    }

    fn req(method: &str, uri: &str, body: &[u8]) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("Authorization", "Bearer sekret")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap()
    }

    async fn call(shared: &Shared, r: Request<Full<Bytes>>) -> (u16, Vec<u8>) {
        let resp = handle(shared, r).await;
        let status = resp.status().as_u16();
        (
            status,
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    async fn logs(shared: &Shared, query: &str) -> String {
        let (code, body) = call(
            shared,
            req(
                "GET",
                &format!("/containerLogs/default/web/app?{query}"),
                b"",
            ),
        )
        .await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        String::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn serves_logs_with_kubelets_options() {
        let (_fake, shared, _stop) = fake(LOG);
        assert_eq!(logs(&shared, "").await, "one\ntwo\nthree\nfour\n");
        assert_eq!(
            logs(&shared, "timestamps=true").await,
            "2024-05-01T10:00:00.000000001Z one\n2024-05-01T10:00:01.5Z two\n2024-05-01T10:00:02Z three\n2024-05-01T10:00:03Z four\n"
        );
        assert_eq!(logs(&shared, "tailLines=2").await, "three\nfour\n");
        assert_eq!(logs(&shared, "tailLines=0").await, "");
        assert_eq!(
            logs(&shared, "tailLines=10").await,
            "one\ntwo\nthree\nfour\n"
        );
        assert_eq!(logs(&shared, "limitBytes=6").await, "one\ntw");
        assert_eq!(
            logs(&shared, "sinceTime=2024-05-01T10:00:02Z").await,
            "three\nfour\n"
        );
        assert_eq!(logs(&shared, "stream=Stderr").await, "two\n");
        assert_eq!(logs(&shared, "stream=Stdout&tailLines=1").await, "four\n");
    }

    #[tokio::test]
    async fn log_errors_are_kubelets() {
        let (_fake, shared, _stop) = fake(LOG);
        let (code, body) = call(
            &shared,
            req("GET", "/containerLogs/default/web/app?previous=true", b""),
        )
        .await;
        assert_eq!(code, 400);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "previous terminated container \"app\" in pod \"web\" not found\n"
        );
        let (code, _) = call(&shared, req("GET", "/containerLogs/default/nope/app", b"")).await;
        assert_eq!(code, 404);
        let (code, body) = call(
            &shared,
            req("GET", "/containerLogs/default/web/app?tailLines=x", b""),
        )
        .await;
        assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
        // A log not written yet is empty.
        assert_eq!(logs_of(&shared, "other").await, "");
        let (code, _) = call(&shared, req("GET", "/nothing", b"")).await;
        assert_eq!(code, 404);
        let (code, _) = call(
            &shared,
            req("DELETE", "/containerLogs/default/web/app", b""),
        )
        .await;
        assert_eq!(code, 405);
    }

    async fn logs_of(shared: &Shared, container: &str) -> String {
        let (code, body) = call(
            shared,
            req(
                "GET",
                &format!("/containerLogs/default/web/{container}"),
                b"",
            ),
        )
        .await;
        assert_eq!(code, 200);
        String::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn token_is_required_when_set() {
        let (_fake, shared, _stop) = fake(LOG);
        for auth in [None, Some("Bearer wrong"), Some("Basic sekret")] {
            let mut b = Request::builder().uri("/containerLogs/default/web/app");
            if let Some(a) = auth {
                b = b.header("Authorization", a);
            }
            let (code, _) = call(&shared, b.body(Full::new(Bytes::new())).unwrap()).await;
            assert_eq!(code, 401, "{auth:?}");
        }
        let r = Request::builder()
            .uri("/healthz")
            .body(Full::new(Bytes::new()))
            .unwrap();
        assert_eq!(call(&shared, r).await, (200, b"ok\n".to_vec()));
    }

    #[tokio::test]
    async fn follow_streams_until_the_container_stops() {
        let (fake, shared, _stop) = fake("2024-05-01T10:00:00Z stdout F first\n");
        fake.running.store(true, Ordering::SeqCst);
        let resp = handle(
            &shared,
            req(
                "GET",
                "/containerLogs/default/web/app?follow=true&timestamps=true",
                b"",
            ),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        assert_eq!(
            next(&mut body).await.unwrap(),
            "2024-05-01T10:00:00Z first\n"
        );
        let path = fake.dir.path().join("app.log");
        let append = |s: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(s.as_bytes()).unwrap();
        };
        append("2024-05-01T10:00:01Z stdout P sec");
        append("ond\n2024-05-01T10:00:01.1Z stdout F !\n");
        let mut got = String::new();
        while got != "2024-05-01T10:00:01Z second!\n" {
            got.push_str(std::str::from_utf8(&next(&mut body).await.unwrap()).unwrap());
        }
        // A last record without its newline still comes out once stopped.
        append("2024-05-01T10:00:02Z stderr F last");
        fake.running.store(false, Ordering::SeqCst);
        let mut rest = String::new();
        while let Some(chunk) = next(&mut body).await {
            rest.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        assert_eq!(rest, "2024-05-01T10:00:02Z last\n");
    }

    #[tokio::test]
    async fn follow_ends_on_shutdown() {
        let (fake, shared, stop) = fake("");
        fake.running.store(true, Ordering::SeqCst);
        let resp = handle(
            &shared,
            req("GET", "/containerLogs/default/web/app?follow=1", b""),
        )
        .await;
        stop.send(true).unwrap();
        assert!(resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty());
    }

    async fn next(body: &mut Body) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !body.is_empty() {
            let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
            out.push((body[0], body[5..5 + len].to_vec()));
            body = &body[5 + len..];
        }
        out
    }

    #[tokio::test]
    async fn exec_answers_frames() {
        let (fake, shared, _stop) = fake("");
        let (code, body) = call(
            &shared,
            req(
                "POST",
                "/exec/default/web/app?command=echo&command=a%20b",
                b"ignored",
            ),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(
            frames(&body),
            vec![
                (EXEC_STDOUT, b"echo a b".to_vec()),
                (EXEC_STDERR, b"warn".to_vec()),
                (EXEC_EXIT, 7i32.to_be_bytes().to_vec())
            ]
        );
        let (code, body) = call(
            &shared,
            req(
                "POST",
                "/exec/default/web/app?command=cat&stdin=true",
                b"input",
            ),
        )
        .await;
        assert_eq!(code, 200);
        assert_eq!(frames(&body)[0], (EXEC_STDOUT, b"input".to_vec()));
        assert_eq!(
            fake.exec_seen.lock().unwrap().clone(),
            vec![
                (vec!["echo".to_string(), "a b".to_string()], None),
                (vec!["cat".to_string()], Some(b"input".to_vec()))
            ]
        );
        let (code, body) = call(&shared, req("POST", "/exec/default/web/db?command=ls", b"")).await;
        assert_eq!(
            (code, body),
            (404, b"container not found (\"db\")\n".to_vec())
        );
        let (code, _) = call(&shared, req("POST", "/exec/default/web/app", b"")).await;
        assert_eq!(code, 400);
    }

    #[tokio::test]
    async fn serves_on_a_socket_and_shuts_down() {
        let (fake, _shared, _stop) = fake(LOG);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, fake, None, async {
            let _ = rx.await;
        }));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET /containerLogs/default/web/app?tailLines=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).await.unwrap();
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("four\n"), "{raw}");
        tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
