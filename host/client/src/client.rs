//! The client: a small pool of keep-alive TLS connections, JSON in and out.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::{ClientError, Kubeconfig};

/// Where a kind lives: `group/version/plural` and its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// API group, "" for core.
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

impl Resource {
    /// A resource.
    pub fn new(group: &str, version: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    fn path(&self, namespace: &str, name: &str, sub: &str) -> String {
        let mut p = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        if self.namespaced && !namespace.is_empty() {
            p.push_str(&format!("/namespaces/{namespace}"));
        }
        p.push_str(&format!("/{}", self.plural));
        if !name.is_empty() {
            p.push_str(&format!("/{name}"));
        }
        if !sub.is_empty() {
            p.push_str(&format!("/{sub}"));
        }
        p
    }
}

/// Selectors and paging for list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    labels: String,
    fields: String,
    limit: usize,
    continue_token: String,
}

impl ListParams {
    /// `labelSelector`.
    pub fn labels(mut self, s: &str) -> Self {
        self.labels = s.into();
        self
    }

    /// `fieldSelector`.
    pub fn fields(mut self, s: &str) -> Self {
        self.fields = s.into();
        self
    }

    /// `limit`.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n;
        self
    }

    /// `continue`.
    pub fn continue_from(mut self, token: &str) -> Self {
        self.continue_token = token.into();
        self
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if !self.labels.is_empty() {
            q.push(("labelSelector", self.labels.clone()));
        }
        if !self.fields.is_empty() {
            q.push(("fieldSelector", self.fields.clone()));
        }
        if self.limit > 0 {
            q.push(("limit", self.limit.to_string()));
        }
        if !self.continue_token.is_empty() {
            q.push(("continue", self.continue_token.clone()));
        }
        q
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn with_query(path: String, q: &[(&str, String)]) -> String {
    if q.is_empty() {
        return path;
    }
    let qs: Vec<String> = q
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("{path}?{}", qs.join("&"))
}

/// A list answer.
#[derive(Debug, Clone)]
pub struct ObjectList {
    /// The whole list object.
    pub raw: Value,
}

impl ObjectList {
    /// The items.
    pub fn items(&self) -> &[Value] {
        self.raw["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The list's resourceVersion: watch from here.
    pub fn resource_version(&self) -> &str {
        self.raw["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
    }

    /// The continue token of the next page, if any.
    pub fn continue_token(&self) -> Option<&str> {
        self.raw["metadata"]["continue"]
            .as_str()
            .filter(|c| !c.is_empty())
    }
}

/// How a patch body is to be read.
#[derive(Debug, Clone, Copy)]
pub enum Patch {
    /// RFC 7386.
    Merge,
    /// Strategic merge patch.
    Strategic,
    /// RFC 6902.
    Json,
}

impl Patch {
    fn content_type(self) -> &'static str {
        match self {
            Patch::Merge => "application/merge-patch+json",
            Patch::Strategic => "application/strategic-merge-patch+json",
            Patch::Json => "application/json-patch+json",
        }
    }
}

/// One watch event.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    /// ADDED, MODIFIED, DELETED, BOOKMARK or ERROR.
    pub kind: String,
    /// The object (a Status for ERROR).
    pub object: Value,
}

/// A running watch.
pub struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
    server: String,
}

impl WatchStream {
    /// The next event; `None` when the server ends the watch (resume from the
    /// last resourceVersion seen). An ERROR event is returned as
    /// `ClientError::Api` (410 means: list again).
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if line.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                let v: Value = serde_json::from_slice(&line)
                    .map_err(|e| ClientError::Decode(e.to_string()))?;
                let kind = v["type"].as_str().unwrap_or("").to_string();
                if kind == "ERROR" {
                    return Err(status_error(v["object"].clone(), 500));
                }
                return Ok(Some(WatchEvent {
                    kind,
                    object: v["object"].clone(),
                }));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Transport {
                        server: self.server.clone(),
                        message: e.to_string(),
                    })
                }
                Some(Ok(frame)) => {
                    if let Some(d) = frame.data_ref() {
                        self.buf.extend_from_slice(d);
                    }
                }
            }
        }
    }
}

fn status_error(status: Value, code: u16) -> ClientError {
    ClientError::Api {
        code: status["code"].as_u64().map(|c| c as u16).unwrap_or(code),
        reason: status["reason"].as_str().unwrap_or("").to_string(),
        message: status["message"].as_str().unwrap_or("").to_string(),
    }
}

/// A Kubernetes API client. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    host: String,
    token: String,
    tls: tokio_rustls::TlsConnector,
    idle: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>>,
    impersonate: Option<Arc<str>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("host", &self.host).finish()
    }
}

impl Client {
    /// From a kubeconfig file's current context.
    pub fn from_kubeconfig(path: impl AsRef<std::path::Path>) -> Result<Self, ClientError> {
        Self::new(&Kubeconfig::load(path)?)
    }

    /// From a loaded kubeconfig.
    pub fn new(cfg: &Kubeconfig) -> Result<Self, ClientError> {
        let host = cfg
            .server
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::Decode(format!("server {} is not https://", cfg.server)))?
            .trim_end_matches('/')
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        let der: String = cfg
            .ca_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        use base64::Engine as _;
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .map_err(|e| ClientError::Decode(format!("CA is not PEM: {e}")))?;
        roots
            .add(rustls::pki_types::CertificateDer::from(der))
            .map_err(|e| ClientError::Decode(format!("CA certificate: {e}")))?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Decode(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            host,
            token: cfg.token.clone(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            idle: Arc::new(Mutex::new(Vec::new())),
            impersonate: None,
        })
    }

    fn transport(&self, message: impl std::fmt::Display) -> ClientError {
        ClientError::Transport {
            server: self.host.clone(),
            message: message.to_string(),
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, ClientError> {
        let tcp = tokio::net::TcpStream::connect(&self.host)
            .await
            .map_err(|e| self.transport(e))?;
        let _ = tcp.set_nodelay(true);
        let host = self
            .host
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.host)
            .trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| self.transport(e))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| self.transport(e))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.transport(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(send)
    }

    /// One request with the token and JSON accept headers.
    fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("Host", &self.host)
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Accept", "application/json")
            .header("Content-Type", content_type);
        if let Some(user) = &self.impersonate {
            b = b.header("Impersonate-User", &**user);
        }
        b.body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))
    }

    /// The same client acting as `user` (Kubernetes impersonation; the
    /// client's own user must be allowed to impersonate). Shares connections.
    pub fn impersonating(&self, user: &str) -> Self {
        Self {
            impersonate: Some(user.into()),
            ..self.clone()
        }
    }

    /// GET any path (discovery documents, for example).
    pub async fn get_path(&self, path: &str) -> Result<Value, ClientError> {
        self.call("GET", path, "application/json", vec![]).await
    }

    /// A call whose body is `obj` as JSON.
    async fn call_json(&self, method: &str, path: &str, obj: &Value) -> Result<Value, ClientError> {
        let body = serde_json::to_vec(obj).expect("a Value always serializes");
        self.call(method, path, "application/json", body).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let pooled = self.idle.lock().expect("pool lock").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => self.connect().await?,
        };
        if conn.ready().await.is_err() {
            // The server closed it while idle.
            conn = self.connect().await?;
        }
        let req = self.request(method, path, content_type, body)?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| self.transport(e))?;
        // The connection is free again once this response's body is read;
        // hyper queues the next request until then.
        let mut idle = self.idle.lock().expect("pool lock");
        // Enough for a runtime's parallel requests (the scheduler binds 32
        // pods at once and records events beside): a connection dropped
        // here costs a TLS handshake later.
        if idle.len() < 64 {
            idle.push(conn);
        }
        Ok(resp)
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Value, ClientError> {
        let resp = self.send(method, path, content_type, body).await?;
        let code = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.transport(e))?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Decode(format!(
                "{method} {path} answered {code} with non-JSON: {e}"
            ))
        })?;
        if code >= 400 {
            return Err(status_error(v, code));
        }
        Ok(v)
    }

    /// GET one object.
    pub async fn get(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ClientError> {
        self.call(
            "GET",
            &r.path(namespace, name, ""),
            "application/json",
            vec![],
        )
        .await
    }

    /// LIST objects ("" namespace = all).
    pub async fn list(
        &self,
        r: &Resource,
        namespace: &str,
        p: &ListParams,
    ) -> Result<ObjectList, ClientError> {
        let path = with_query(r.path(namespace, "", ""), &p.query());
        Ok(ObjectList {
            raw: self.call("GET", &path, "application/json", vec![]).await?,
        })
    }

    /// POST a new object.
    pub async fn create(
        &self,
        r: &Resource,
        namespace: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        self.call_json("POST", &r.path(namespace, "", ""), obj)
            .await
    }

    /// PUT an object (its resourceVersion must be current).
    pub async fn replace(
        &self,
        r: &Resource,
        namespace: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        self.put(r, namespace, obj, "").await
    }

    /// PUT an object's status.
    pub async fn replace_status(
        &self,
        r: &Resource,
        namespace: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        self.put(r, namespace, obj, "status").await
    }

    async fn put(
        &self,
        r: &Resource,
        namespace: &str,
        obj: &Value,
        sub: &str,
    ) -> Result<Value, ClientError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        self.call_json("PUT", &r.path(namespace, name, sub), obj)
            .await
    }

    /// PATCH an object (or a subresource: "status", "scale").
    pub async fn patch(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        sub: &str,
        kind: Patch,
        patch: &Value,
    ) -> Result<Value, ClientError> {
        self.call(
            "PATCH",
            &r.path(namespace, name, sub),
            kind.content_type(),
            serde_json::to_vec(patch).expect("serializes"),
        )
        .await
    }

    /// POST a subresource (e.g. pods/NAME/binding).
    pub async fn create_subresource(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        sub: &str,
        obj: &Value,
    ) -> Result<Value, ClientError> {
        self.call_json("POST", &r.path(namespace, name, sub), obj)
            .await
    }

    /// DELETE an object, with optional DeleteOptions.
    pub async fn delete(
        &self,
        r: &Resource,
        namespace: &str,
        name: &str,
        options: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let body = options
            .map(|o| serde_json::to_vec(o).expect("serializes"))
            .unwrap_or_default();
        self.call(
            "DELETE",
            &r.path(namespace, name, ""),
            "application/json",
            body,
        )
        .await
    }

    /// WATCH from `resource_version` ("" = current state as ADDED events first).
    /// A watch uses its own connection.
    pub async fn watch(
        &self,
        r: &Resource,
        namespace: &str,
        p: &ListParams,
        resource_version: &str,
    ) -> Result<WatchStream, ClientError> {
        let mut q = p.query();
        q.retain(|(k, _)| *k != "limit" && *k != "continue");
        q.push(("watch", "1".into()));
        q.push(("allowWatchBookmarks", "true".into()));
        if !resource_version.is_empty() {
            q.push(("resourceVersion", resource_version.into()));
        }
        let path = with_query(r.path(namespace, "", ""), &q);
        let mut conn = self.connect().await?;
        let req = self.request("GET", &path, "application/json", Vec::new())?;
        let resp = conn
            .send_request(req)
            .await
            .map_err(|e| self.transport(e))?;
        let code = resp.status().as_u16();
        if code >= 400 {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.transport(e))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(status_error(v, code));
        }
        Ok(WatchStream {
            body: resp.into_body(),
            buf: Vec::new(),
            server: self.host.clone(),
        })
    }
}
