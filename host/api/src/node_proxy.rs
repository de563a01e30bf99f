//! `pods/{name}/log` and `pods/{name}/exec`: find the pod, its container and
//! its node in the store, then reach the node agent's kubelet-like server
//! (`trellis_agent::server`) at the Node's address (`status.addresses`:
//! InternalIP, else Hostname) and port
//! (`status.daemonEndpoints.kubeletEndpoint.Port`, 10250 when unset).
//!
//! Logs stream through as plain text, so `follow` streams. Exec is served to
//! the client over WebSocket ([`crate::websocket`]) and run on the agent's
//! `POST /exec/...`, whose framed answer is relayed as it arrives.
//!
//! The agent is called over plain HTTP with the shared bearer token of
//! [`crate::ApiConfig::node_agent_token`]; upstream's TLS to the kubelet
//! (and `insecureSkipTLSVerifyBackend`) has no counterpart yet.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::handlers::Target;
use crate::http::{self, Body};
use crate::registry;
use crate::storage::Objects;
use crate::websocket::{self, ExecEvent, Protocol, Streams};

/// How long to wait for an agent's TCP connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The agent port when a Node does not report one (kubelet's default).
const DEFAULT_AGENT_PORT: u16 = 10250;
/// kubectl's annotation naming the container to use when none is given.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

// The agent's exec frame stream ids (see `trellis_agent::server`).
const EXEC_STDOUT: u8 = 1;
const EXEC_STDERR: u8 = 2;
const EXEC_EXIT: u8 = 3;

/// What a proxied request needs from the server.
pub(crate) struct Context<'a> {
    /// The store's objects.
    pub objects: &'a Objects,
    /// Bearer token for the agents.
    pub token: Option<String>,
    /// Turns true when the server shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// Serve `GET pods/NAME/log` or `GET|POST pods/NAME/exec`.
pub(crate) async fn serve<B>(
    cx: Context<'_>,
    req: Request<B>,
    t: &Target,
) -> Result<Response<Body>, ApiError> {
    let query = query_pairs(req.uri().query());
    match (t.subresource.as_str(), req.method()) {
        ("log", &Method::GET) => log(cx, t, &query).await,
        ("exec", &Method::GET | &Method::POST) => exec(cx, req, t, &query).await,
        (sub, m) => Err(ApiError::method_not_allowed(
            m.as_str(),
            &format!("pods/{sub}"),
        )),
    }
}

// ---------------------------------------------------------------------------
// Logs

async fn log(
    cx: Context<'_>,
    t: &Target,
    q: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let int = |name: &str| -> Result<Option<i64>, ApiError> {
        match get(q, name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value {v:?} for {name}: must be an integer"
                ))
            }),
        }
    };
    let tail_lines = int("tailLines")?;
    let limit_bytes = int("limitBytes")?;
    let since_seconds = int("sinceSeconds")?;
    let since_time = match get(q, "sinceTime").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(crate::table::parse_rfc3339(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid value {v:?} for sinceTime: must be an RFC 3339 time such as 2024-05-01T10:00:00Z"
            ))
        })?),
    };
    let stream = get(q, "stream").filter(|v| !v.is_empty());
    let mut causes = Vec::new();
    let mut invalid = |field: &str, value: String, why: &str| {
        causes.push(json!({
            "reason": "FieldValueInvalid",
            "message": format!("Invalid value: {value}: {why}"),
            "field": field,
        }));
    };
    if let Some(n) = tail_lines.filter(|n| *n < 0) {
        invalid(
            "tailLines",
            n.to_string(),
            "must be greater than or equal to 0",
        );
    }
    if let Some(n) = limit_bytes.filter(|n| *n < 1) {
        invalid("limitBytes", n.to_string(), "must be greater than 0");
    }
    if let Some(n) = since_seconds.filter(|n| *n < 1) {
        invalid("sinceSeconds", n.to_string(), "must be greater than 0");
    }
    if since_seconds.is_some() && since_time.is_some() {
        causes.push(json!({
            "reason": "FieldValueForbidden",
            "message": "at most one of `sinceTime` or `sinceSeconds` may be specified",
            "field": "",
        }));
    }
    if let Some(s) = stream.filter(|s| !matches!(*s, "All" | "Stdout" | "Stderr")) {
        causes.push(json!({
            "reason": "FieldValueNotSupported",
            "message": format!("Unsupported value: \"{s}\": supported values: \"All\", \"Stderr\", \"Stdout\""),
            "field": "stream",
        }));
    }
    if !causes.is_empty() {
        return Err(invalid_options(&t.name, causes));
    }

    let pod = cx.objects.get(pod_kind(), &t.namespace, &t.name).await?;
    let container = resolve_container(&pod, &t.name, get(q, "container"))?;
    let previous = flag(q, "previous");
    let Some(node) = node_name(&pod) else {
        // Upstream answers an unscheduled pod's log with nothing.
        return Ok(Response::builder()
            .status(200)
            .header("Content-Type", "text/plain")
            .body(Full::new(Bytes::new()).boxed())
            .expect("valid response"));
    };
    check_log_status(&pod, &t.name, &container, previous)?;
    let agent = Agent::of_node(cx.objects, &node, cx.token).await?;

    let mut params = Vec::new();
    for name in ["follow", "previous", "timestamps"] {
        if flag(q, name) {
            params.push((name, "true".to_string()));
        }
    }
    for (name, v) in [
        ("sinceSeconds", since_seconds),
        ("tailLines", tail_lines),
        ("limitBytes", limit_bytes),
    ] {
        if let Some(v) = v {
            params.push((name, v.to_string()));
        }
    }
    if let Some(t) = since_time {
        params.push(("sinceTime", crate::table::format_rfc3339(t)));
    }
    if let Some(s) = stream {
        params.push(("stream", s.to_string()));
    }
    let path = format!(
        "/containerLogs/{}/{}/{}{}",
        encode(&t.namespace),
        encode(&t.name),
        encode(&container),
        query_string(&params)
    );
    let mut send = agent
        .connect()
        .await
        .map_err(|e| proxy_error(format!("Get \"{}\": {e}", agent.url(&path))))?;
    let resp = send
        .send_request(agent.request(Method::GET, &path, Bytes::new()))
        .await
        .map_err(|e| proxy_error(format!("Get \"{}\": {e}", agent.url(&path))))?;
    if resp.status() != 200 {
        return Err(agent_error(resp, &agent).await);
    }
    let (tx, out) = http::streaming("text/plain");
    let mut shutdown = cx.shutdown;
    tokio::spawn(async move {
        // The connection lives as long as the request.
        let _send = send;
        let mut body = resp.into_body();
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = tx.closed() => break,
                _ = shutdown.changed() => break,
            };
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        if tx.send(data).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "reading a log stream from a node agent failed");
                    break;
                }
                None => break,
            }
        }
    });
    Ok(out)
}

/// 422 for invalid `PodLogOptions`.
fn invalid_options(name: &str, causes: Vec<Value>) -> ApiError {
    let messages: Vec<String> = causes
        .iter()
        .map(|c| {
            let field = c["field"].as_str().unwrap_or("");
            let msg = c["message"].as_str().unwrap_or("");
            if field.is_empty() {
                msg.to_string()
            } else {
                format!("{field}: {msg}")
            }
        })
        .collect();
    let list = if messages.len() == 1 {
        messages[0].clone()
    } else {
        format!("[{}]", messages.join(", "))
    };
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("PodLogOptions \"{name}\" is invalid: {list}"),
        details: Some(json!({"name": name, "kind": "PodLogOptions", "causes": causes})),
    }
}

/// kubelet's checks before serving a log, read from the pod's status.
fn check_log_status(
    pod: &Value,
    pod_name: &str,
    container: &str,
    previous: bool,
) -> Result<(), ApiError> {
    let Some(status) = container_status(pod, container) else {
        return Err(waiting(container, pod_name, "ContainerCreating"));
    };
    let state = &status["state"];
    let last = &status["lastState"];
    if previous {
        if last["terminated"].is_object() {
            return Ok(());
        }
        return Err(ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
        )));
    }
    if state["running"].is_object()
        || state["terminated"].is_object()
        || last["terminated"].is_object()
    {
        return Ok(());
    }
    match state["waiting"]["reason"].as_str() {
        Some("ErrImagePull") => Err(waiting(container, pod_name, "image can't be pulled")),
        Some("ImagePullBackOff") => Err(waiting(
            container,
            pod_name,
            "trying and failing to pull image",
        )),
        Some(reason) => Err(waiting(container, pod_name, reason)),
        None if state["waiting"].is_object() => Err(waiting(container, pod_name, "")),
        None => Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start - no logs yet"
        ))),
    }
}

fn waiting(container: &str, pod: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{pod}\" is waiting to start: {why}"
    ))
}

// ---------------------------------------------------------------------------
// Exec

async fn exec<B>(
    cx: Context<'_>,
    mut req: Request<B>,
    t: &Target,
    q: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let command: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let streams = Streams {
        stdin: flag(q, "stdin"),
        stdout: flag(q, "stdout"),
        stderr: flag(q, "stderr"),
    };
    if command.is_empty() {
        return Err(ApiError::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    if !streams.stdin && !streams.stdout && !streams.stderr {
        return Err(ApiError::bad_request(
            "you must specify at least one of stdin, stdout, stderr",
        ));
    }
    if flag(q, "tty") {
        return Err(ApiError::bad_request(
            "exec with a TTY (kubectl exec -t) is not supported yet: run the command without -t (with -i, stdin is sent when it ends)",
        ));
    }
    let pod = cx.objects.get(pod_kind(), &t.namespace, &t.name).await?;
    let container = resolve_container(&pod, &t.name, get(q, "container"))?;
    let Some(node) = node_name(&pod) else {
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            t.name
        )));
    };
    check_exec_status(&pod, &t.name, &container)?;
    let agent = Agent::of_node(cx.objects, &node, cx.token).await?;

    // Dial before upgrading, so an unreachable node is a plain error. Every
    // check comes before the protocol's: when the WebSocket upgrade is
    // refused, kubectl retries over SPDY and shows that answer.
    let send = agent
        .connect()
        .await
        .map_err(|e| proxy_error(format!("error dialing backend: {e}")))?;
    let headers = req.headers();
    if !websocket::is_upgrade(headers) {
        let asked = headers
            .get("upgrade")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        return Err(ApiError::bad_request(if asked.is_empty() {
            "Upgrade request required".to_string()
        } else {
            format!(
                "Upgrade request required: this server serves exec over WebSocket ({}), not {asked}; use kubectl 1.30 or newer, without KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false",
                Protocol::all_names()
            )
        }));
    }
    let protocol = Protocol::negotiate(headers).ok_or_else(|| {
        ApiError::bad_request(format!(
            "none of the requested WebSocket subprotocols is supported; this server speaks {}",
            Protocol::all_names()
        ))
    })?;
    let accept = websocket::accept_key(headers)
        .ok_or_else(|| ApiError::bad_request("the WebSocket upgrade has no Sec-WebSocket-Key"))?;

    let mut params: Vec<(&str, String)> = command.iter().map(|c| ("command", c.clone())).collect();
    if streams.stdin {
        params.push(("stdin", "true".into()));
    }
    let path = format!(
        "/exec/{}/{}/{}{}",
        encode(&t.namespace),
        encode(&t.name),
        encode(&container),
        query_string(&params)
    );

    let on_upgrade = hyper::upgrade::on(&mut req);
    let shutdown = cx.shutdown;
    let what = format!("{}/{}/{container}", t.namespace, t.name);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!(error = %e, exec = %what, "the exec upgrade failed");
                return;
            }
        };
        let start = move |stdin: Option<Vec<u8>>| run_on_agent(agent, send, path, stdin);
        websocket::exec_session(io, protocol, streams, command, start, shutdown).await;
    });
    Ok(Response::builder()
        .status(101)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Accept", accept)
        .header("Sec-WebSocket-Protocol", protocol.name())
        .body(Full::new(Bytes::new()).boxed())
        .expect("valid response"))
}

/// Only a running container takes an exec (kubelet: `container not found`).
fn check_exec_status(pod: &Value, pod_name: &str, container: &str) -> Result<(), ApiError> {
    let Some(status) = container_status(pod, container) else {
        return Err(waiting(container, pod_name, "ContainerCreating"));
    };
    let state = &status["state"];
    if state["running"].is_object() {
        return Ok(());
    }
    if let Some(reason) = state["waiting"]["reason"].as_str() {
        return Err(waiting(container, pod_name, reason));
    }
    Err(ApiError::bad_request(format!(
        "container not found (\"{container}\")"
    )))
}

/// Run the command on the agent; events arrive as its answer does.
fn run_on_agent(
    agent: Agent,
    mut send: SendRequest<Full<Bytes>>,
    path: String,
    stdin: Option<Vec<u8>>,
) -> mpsc::Receiver<ExecEvent> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let body = Bytes::from(stdin.unwrap_or_default());
        let failed = |message: String| ExecEvent::Failed {
            code: 500,
            reason: "InternalError",
            message,
        };
        let resp = match send
            .send_request(agent.request(Method::POST, &path, body))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = tx
                    .send(failed(format!(
                        "error talking to the node agent at {}: {e}",
                        agent.authority()
                    )))
                    .await;
                return;
            }
        };
        if resp.status() != 200 {
            let e = agent_error(resp, &agent).await;
            let _ = tx
                .send(ExecEvent::Failed {
                    code: e.code,
                    reason: e.reason,
                    message: e.message,
                })
                .await;
            return;
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        loop {
            // Whole frames first.
            while buf.len() >= 5 {
                let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                if buf.len() < 5 + len {
                    break;
                }
                let stream = buf[0];
                buf.advance(5);
                let data = buf.split_to(len).freeze();
                let event = match stream {
                    EXEC_STDOUT => ExecEvent::Stdout(data),
                    EXEC_STDERR => ExecEvent::Stderr(data),
                    EXEC_EXIT if data.len() == 4 => {
                        let code = i32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                        let _ = tx.send(ExecEvent::Exited(code)).await;
                        return;
                    }
                    other => {
                        let _ = tx
                            .send(failed(format!(
                                "the node agent at {} sent an exec frame this server does not know (stream {other}, {len} bytes)",
                                agent.authority()
                            )))
                            .await;
                        return;
                    }
                };
                if tx.send(event).await.is_err() {
                    // The client left.
                    return;
                }
            }
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(failed(format!(
                            "reading the exec answer of the node agent at {} failed: {e}",
                            agent.authority()
                        )))
                        .await;
                    return;
                }
                None => {
                    let _ = tx
                        .send(failed(format!(
                            "the node agent at {} ended the exec answer without an exit code",
                            agent.authority()
                        )))
                        .await;
                    return;
                }
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------
// Pods, containers, nodes

fn pod_kind() -> &'static registry::Kind {
    registry::by_kind("", "Pod").expect("pods are served")
}

fn node_name(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// Every container name, init containers first, as upstream lists them.
fn container_names(pod: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|f| pod["spec"][f].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// The container a request means: the one named, else the
/// `kubectl.kubernetes.io/default-container`, else the only one.
fn resolve_container(pod: &Value, pod_name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = container_names(pod);
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None => {
            let containers = pod["spec"]["containers"].as_array();
            let default = pod["metadata"]["annotations"][DEFAULT_CONTAINER_ANNOTATION]
                .as_str()
                .filter(|c| names.contains(c));
            match (default, containers.map(Vec::len).unwrap_or(0)) {
                (Some(c), _) => Ok(c.to_string()),
                (None, 1) => Ok(containers.expect("one container")[0]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()),
                (None, 0) => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}"
                ))),
                (None, _) => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    names.join(" ")
                ))),
            }
        }
    }
}

/// A container's status, wherever the pod keeps it.
fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    [
        "containerStatuses",
        "initContainerStatuses",
        "ephemeralContainerStatuses",
    ]
    .iter()
    .flat_map(|f| pod["status"][f].as_array().into_iter().flatten())
    .find(|s| s["name"] == container)
}

/// A node agent's address and how to call it.
#[derive(Debug, Clone)]
struct Agent {
    host: String,
    port: u16,
    token: Option<String>,
}

impl Agent {
    async fn of_node(
        objects: &Objects,
        node: &str,
        token: Option<String>,
    ) -> Result<Self, ApiError> {
        let kind = registry::by_kind("", "Node").expect("nodes are served");
        let obj = objects.get(kind, "", node).await?;
        let addresses = obj["status"]["addresses"].as_array();
        let find = |ty: &str| {
            addresses
                .into_iter()
                .flatten()
                .find(|a| a["type"] == ty)
                .and_then(|a| a["address"].as_str())
                .filter(|a| !a.is_empty())
        };
        let Some(host) = find("InternalIP").or_else(|| find("Hostname")) else {
            let known: Vec<String> = addresses
                .into_iter()
                .flatten()
                .map(|a| {
                    format!(
                        "{}={}",
                        a["type"].as_str().unwrap_or(""),
                        a["address"].as_str().unwrap_or("")
                    )
                })
                .collect();
            return Err(proxy_error(format!(
                "node \"{node}\" reports no InternalIP or Hostname address to reach its agent; known addresses: [{}]",
                known.join(" ")
            )));
        };
        let port = obj["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .unwrap_or(DEFAULT_AGENT_PORT);
        Ok(Self {
            host: host.to_string(),
            port,
            token,
        })
    }

    /// `host:port` (`[v6]:port`).
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.authority())
    }

    /// An HTTP/1 connection to the agent.
    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let addr = self.authority();
        let tcp = match tokio::time::timeout(
            DIAL_TIMEOUT,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("dial tcp {addr}: connect: {e}")),
            Err(_) => return Err(format!("dial tcp {addr}: i/o timeout")),
        };
        let _ = tcp.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "a node agent connection ended with an error");
            }
        });
        Ok(send)
    }

    fn request(&self, method: Method, path: &str, body: Bytes) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", self.authority());
        if let Some(t) = &self.token {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        b.body(Full::new(body)).expect("valid request")
    }
}

/// A failure to reach a backend: 500 with the cause as its whole message,
/// as upstream reports proxy errors.
fn proxy_error(message: String) -> ApiError {
    ApiError {
        code: 500,
        reason: "",
        message,
        details: None,
    }
}

/// An agent's error answer as the API server reports it (upstream's
/// response checker: 400 and 404 pass through, the rest are 500).
async fn agent_error(resp: Response<Incoming>, agent: &Agent) -> ApiError {
    let code = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).trim().to_string())
        .unwrap_or_default();
    match code {
        400 => ApiError::bad_request(body),
        404 => ApiError {
            code: 404,
            reason: "NotFound",
            message: body,
            details: None,
        },
        401 | 403 => proxy_error(format!(
            "the node agent at {} refused this API server's credentials ({code} {body}): give both the same agent token",
            agent.authority()
        )),
        _ => ApiError::internal(body),
    }
}

// ---------------------------------------------------------------------------
// Queries

/// All `key=value` pairs, decoded, in order (repeated keys kept).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (http::decode(k), http::decode(v))
        })
        .collect()
}

fn get<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A boolean as Kubernetes decodes query parameters: present and not
/// `0`/`false`.
fn flag(q: &[(String, String)], key: &str) -> bool {
    get(q, key).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Percent-encode all but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(params: &[(&str, String)]) -> String {
    if params.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], annotations: Value, statuses: Value) -> Value {
        json!({
            "metadata": {"name": "web", "annotations": annotations},
            "spec": {
                "nodeName": "n1",
                "initContainers": [{"name": "init"}],
                "containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>(),
            },
            "status": {"containerStatuses": statuses},
        })
    }

    #[test]
    fn containers_resolve_like_upstream() {
        let one = pod(&["app"], json!({}), json!([]));
        assert_eq!(resolve_container(&one, "web", None).unwrap(), "app");
        assert_eq!(
            resolve_container(&one, "web", Some("init")).unwrap(),
            "init"
        );
        assert_eq!(
            resolve_container(&one, "web", Some("db"))
                .unwrap_err()
                .message,
            "container db is not valid for pod web"
        );
        let two = pod(&["a", "b"], json!({}), json!([]));
        let e = resolve_container(&two, "web", None).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "a container name must be specified for pod web, choose one of: [init a b]"
        );
        let annotated = pod(
            &["a", "b"],
            json!({DEFAULT_CONTAINER_ANNOTATION: "b"}),
            json!([]),
        );
        assert_eq!(resolve_container(&annotated, "web", None).unwrap(), "b");
    }

    #[test]
    fn log_and_exec_status_checks_use_kubelets_words() {
        let p = pod(&["app"], json!({}), json!([]));
        assert_eq!(
            check_log_status(&p, "web", "app", false)
                .unwrap_err()
                .message,
            "container \"app\" in pod \"web\" is waiting to start: ContainerCreating"
        );
        let p = pod(
            &["app"],
            json!({}),
            json!([{"name": "app", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]),
        );
        assert_eq!(
            check_log_status(&p, "web", "app", false).unwrap_err().message,
            "container \"app\" in pod \"web\" is waiting to start: trying and failing to pull image"
        );
        let p = pod(
            &["app"],
            json!({}),
            json!([{"name": "app", "state": {"running": {}}, "lastState": {}}]),
        );
        assert!(check_log_status(&p, "web", "app", false).is_ok());
        assert!(check_exec_status(&p, "web", "app").is_ok());
        assert_eq!(
            check_log_status(&p, "web", "app", true)
                .unwrap_err()
                .message,
            "previous terminated container \"app\" in pod \"web\" not found"
        );
        let p = pod(
            &["app"],
            json!({}),
            json!([{"name": "app", "state": {"terminated": {"exitCode": 0}}}]),
        );
        assert!(check_log_status(&p, "web", "app", false).is_ok());
        assert_eq!(
            check_exec_status(&p, "web", "app").unwrap_err().message,
            "container not found (\"app\")"
        );
    }

    #[test]
    fn invalid_options_read_like_upstream() {
        let e = invalid_options(
            "web",
            vec![
                json!({"field": "tailLines", "message": "Invalid value: -1: must be greater than or equal to 0"}),
            ],
        );
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
    }

    #[test]
    fn queries_keep_repeated_keys_and_encode() {
        let q = query_pairs(Some(
            "command=sh&command=-c&command=echo%20a%26b&stdin=true&tty=false",
        ));
        let cmds: Vec<&str> = q
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmds, ["sh", "-c", "echo a&b"]);
        assert!(flag(&q, "stdin") && !flag(&q, "tty") && !flag(&q, "stdout"));
        assert_eq!(
            query_string(&[("command", "echo a&b".into())]),
            "?command=echo%20a%26b"
        );
    }

    /// Through `ApiServer::handle`, against a raw TCP "agent" that records
    /// what it was sent.
    #[tokio::test]
    async fn logs_reach_the_agent_with_its_token() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(
            trellis_store::EmbeddedStore::open(dir.path())
                .await
                .unwrap(),
        );
        let config = crate::ApiConfig::new(crate::auth::TokenAuthenticator::single("t", "admin"))
            .node_agent_token("agent-secret");
        let server = crate::ApiServer::new(store, config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let agent = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi\n")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let call = |method: &str, path: &str, ct: &str, body: Value| {
            Request::builder()
                .method(method)
                .uri(path)
                .header("Authorization", "Bearer t")
                .header("Content-Type", ct)
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap()
        };
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]}});
        let status = json!({"status": {"containerStatuses": [{"name": "app", "ready": true,
            "restartCount": 0, "image": "busybox", "imageID": "", "state": {"running": {}}}]}});
        for (method, path, ct, body) in [
            ("POST", "/api/v1/nodes", "application/json", node),
            (
                "POST",
                "/api/v1/namespaces/default/pods",
                "application/json",
                pod,
            ),
            (
                "PATCH",
                "/api/v1/namespaces/default/pods/web/status",
                "application/merge-patch+json",
                status,
            ),
        ] {
            let resp = server.handle(call(method, path, ct, body)).await;
            assert!(
                resp.status().is_success(),
                "{method} {path}: {}",
                resp.status()
            );
        }
        let resp = server
            .handle(call(
                "GET",
                "/api/v1/namespaces/default/pods/web/log?tailLines=1&timestamps=true",
                "",
                json!({}),
            ))
            .await;
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hi\n");
        let head = agent.await.unwrap();
        assert!(
            head.starts_with(
                "GET /containerLogs/default/web/app?timestamps=true&tailLines=1 HTTP/1.1\r\n"
            ),
            "{head}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains("authorization: bearer agent-secret\r\n"),
            "{head}"
        );
    }
}
