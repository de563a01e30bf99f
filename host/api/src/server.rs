//! The server: accept connections, authenticate, route, authorize, dispatch,
//! and shut down gracefully.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use trellis_store::Store;

use crate::auth::{AllowAuthenticated, Attributes, Authorizer, TokenAuthenticator};
use crate::error::ApiError;
use crate::handlers::{list_body, Outcome, Render, Target};
use crate::http::{self, Body, Query};
use crate::registry;
use crate::storage::Objects;

/// Largest request body accepted (upstream: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Namespaces that always exist.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Server settings.
#[derive(Clone)]
pub struct ApiConfig {
    /// Who may call.
    pub authenticator: TokenAuthenticator,
    /// What they may do.
    pub authorizer: Arc<dyn Authorizer>,
    /// Where `Plugin` objects' components come from; without it no
    /// admission chain runs.
    pub plugins: Option<trellis_plugin_host::PluginSource>,
    /// Append audit events (admission annotations) to this file.
    pub audit_log: Option<std::path::PathBuf>,
    /// Bearer token sent to node agents for pod logs and exec (their
    /// `trellis_agent::server::serve` token); None sends none.
    pub node_agent_token: Option<String>,
    /// Empty deleted namespaces here (true, for an API server alone), or
    /// leave it to a namespace controller that removes the `kubernetes`
    /// finalizer from `spec.finalizers` when the namespace is empty (false;
    /// `trellis up` runs one).
    pub namespace_cleanup: bool,
    /// Where Services' cluster IPs and node ports come from.
    pub service_ranges: crate::services::ServiceRanges,
    /// The address and port clients in the cluster reach this server at:
    /// given, the `kubernetes` Service in `default` (the range's first
    /// address, port 443) and its Endpoints and EndpointSlice point there,
    /// as kube-apiserver's `--advertise-address` and `--secure-port` make
    /// them.
    pub advertise: Option<std::net::SocketAddr>,
}

impl ApiConfig {
    /// Bearer tokens from `authenticator`, every authenticated user allowed.
    pub fn new(authenticator: TokenAuthenticator) -> Self {
        Self {
            authenticator,
            authorizer: Arc::new(AllowAuthenticated),
            plugins: None,
            audit_log: None,
            node_agent_token: None,
            namespace_cleanup: true,
            service_ranges: Default::default(),
            advertise: None,
        }
    }

    /// Publish the `kubernetes` Service, pointing at `addr`.
    pub fn advertise(mut self, addr: std::net::SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Allocate Services' cluster IPs and node ports from `ranges`.
    pub fn service_ranges(mut self, ranges: crate::services::ServiceRanges) -> Self {
        self.service_ranges = ranges;
        self
    }

    /// Leave emptying deleted namespaces to a namespace controller.
    pub fn external_namespace_controller(mut self) -> Self {
        self.namespace_cleanup = false;
        self
    }

    /// Send `token` to node agents (pod logs and exec).
    pub fn node_agent_token(mut self, token: impl Into<String>) -> Self {
        self.node_agent_token = Some(token.into());
        self
    }

    /// Run admission chains with plugins from `source`.
    pub fn plugins(mut self, source: trellis_plugin_host::PluginSource) -> Self {
        self.plugins = Some(source);
        self
    }

    /// Write audit events to `path`.
    pub fn audit_log(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.audit_log = Some(path.into());
        self
    }
}

/// Shared by every request.
pub struct State {
    /// Objects in the store.
    pub objects: Objects,
    pub(crate) admission: Arc<crate::admission::Admission>,
    pub(crate) config: ApiConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The API server. Cheap to clone.
#[derive(Clone)]
pub struct ApiServer {
    state: Arc<State>,
    shutdown_tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ApiServer {
    /// A server over `store`; makes the system namespaces and resumes the
    /// deletion of namespaces that were terminating.
    pub async fn new(store: Arc<dyn Store>, config: ApiConfig) -> Result<Self, ApiError> {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let admission = Arc::new(crate::admission::Admission::new(config.audit_log.clone()));
        if let Some(source) = config.plugins.clone() {
            tokio::spawn(crate::admission::watch_chains(
                admission.clone(),
                Objects::new(store.clone()),
                source,
                rx.clone(),
            ));
        }
        tokio::spawn(crate::quota::run(Objects::new(store.clone()), rx.clone()));
        let state = Arc::new(State {
            objects: Objects::new(store),
            admission,
            config,
            shutdown: rx,
        });
        let nsk = registry::by_kind("", "Namespace").expect("served");
        let namespaces = SYSTEM_NAMESPACES.iter().map(|ns| {
            let obj = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            });
            (nsk, obj)
        });
        let classes = crate::priority::system_classes();
        for (kind, obj) in namespaces.chain(classes) {
            match state.objects.create_stamped(kind, "", obj).await {
                Ok(_) => {}
                Err(e) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(addr) = state.config.advertise {
            crate::services::publish_kubernetes_service(
                &state.objects,
                &state.config.service_ranges,
                addr,
            )
            .await?;
        }
        let all = state.objects.list(nsk, "", &Default::default()).await?;
        for ns in all
            .items
            .iter()
            .filter(|n| n["status"]["phase"] == "Terminating" && state.config.namespace_cleanup)
        {
            if let Some(name) = ns["metadata"]["name"].as_str() {
                state.spawn_namespace_cleanup(name.to_string());
            }
        }
        Ok(Self {
            state,
            shutdown_tx: Arc::new(tx),
        })
    }

    /// Serve on `listener` until `shutdown` resolves, then stop accepting, end
    /// watches, and give open requests up to 5 s to finish.
    /// With `tls`, connections are TLS (what kubectl needs to send tokens).
    pub async fn serve(
        self,
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        // Each connection task holds a sender; when all are gone, every
        // connection has ended.
        let (drain_tx, mut drain_rx) = tokio::sync::mpsc::channel::<()>(1);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    // As Go's net package (so kube-apiserver) does. With
                    // Nagle's algorithm a watch event written while the
                    // previous one is unacknowledged waits for the ack, which
                    // a client that only reads delays by up to 40 ms.
                    let _ = stream.set_nodelay(true);
                    let server = self.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let builder = {
                        let mut b = http1::Builder::new();
                        b.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
                        b
                    };
                    let stop = self.state.shutdown.clone();
                    let drain = drain_tx.clone();
                    match &acceptor {
                        None => {
                            tokio::spawn(async move {
                                let _drain = drain;
                                serve_connection(builder, TokioIo::new(stream), svc, stop).await;
                            });
                        }
                        Some(acceptor) => {
                            // The handshake runs in the connection's task, bounded so a
                            // silent client cannot hold it forever.
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let _drain = drain;
                                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::debug!(error = %e, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => return,
                                };
                                serve_connection(builder, TokioIo::new(tls), svc, stop).await;
                            });
                        }
                    }
                }
                _ = &mut shutdown => break,
            }
        }
        let _ = self.shutdown_tx.send(true);
        drop(drain_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), drain_rx.recv()).await;
        Ok(())
    }

    /// Answer one request (any body type, so tests can call it without sockets).
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let span = tracing::debug_span!("request", %method, %path);
        let _enter = span.enter();
        match self.route(req).await {
            Ok(resp) => resp,
            Err(e) => {
                if e.code >= 500 {
                    tracing::warn!(%method, %path, code = e.code, message = %e.message, "request failed");
                }
                http::error(&e)
            }
        }
    }

    async fn route<B>(&self, req: Request<B>) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().trim_end_matches('/').to_string();
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        match path.as_str() {
            "/healthz" | "/livez" | "/readyz" => {
                return Ok(match self.state.objects.revision().await {
                    Ok(_) => http::text(200, "ok"),
                    Err(_) => http::text(503, "store unavailable"),
                })
            }
            "/version" => return Ok(http::json(200, &crate::discovery::version())),
            _ => {}
        }
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let user = self
            .state
            .config
            .authenticator
            .authenticate(auth)
            .ok_or_else(ApiError::unauthorized)?;
        let user = crate::auth::impersonate(user, req.headers())?;

        if path == "/metrics" {
            return Ok(http::metrics(self.state.admission.metrics.render()));
        }
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(http::decode)
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        if req.method() == Method::GET {
            if let Some(doc) = discovery_doc(&segs) {
                return Ok(http::json(200, &doc));
            }
            if segs.first() == Some(&"openapi") {
                return openapi(&segs[1..]);
            }
        }
        let (group, version, rest) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return Err(ApiError::no_route(&path)),
        };
        let mut target =
            parse_target(group, version, rest).ok_or_else(|| ApiError::no_route(&path))?;
        target.user = Some(user.clone());
        let q = Query::parse(req.uri().query());
        let verb = verb_of(req.method(), &target, &q);
        self.state
            .config
            .authorizer
            .authorize(
                &user,
                &Attributes {
                    verb,
                    group,
                    resource: target.kind.plural,
                    subresource: &target.subresource,
                    namespace: &target.namespace,
                    name: &target.name,
                },
            )
            .map_err(|reason| {
                ApiError::forbidden(format!(
                    "{} \"{}\" is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"{group}\": {reason}",
                    target.kind.plural, target.name, user.name, target.kind.plural
                ))
            })?;
        if matches!(target.subresource.as_str(), "log" | "exec") {
            let cx = crate::node_proxy::Context {
                objects: &self.state.objects,
                token: self.state.config.node_agent_token.clone(),
                shutdown: self.state.shutdown.clone(),
            };
            return crate::node_proxy::serve(cx, req, &target).await;
        }
        self.dispatch(req, target, q, verb).await
    }

    async fn dispatch<B>(
        &self,
        req: Request<B>,
        t: Target,
        q: Query,
        verb: &str,
    ) -> Result<Response<Body>, ApiError>
    where
        B: hyper::body::Body,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let st = &self.state;
        let accept = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let render = Render {
            accept: &accept,
            query: &q,
        };
        let body = http::read_body(req.into_body(), MAX_BODY_BYTES).await?;
        let parsed = |body: &[u8]| http::decode_body(t.kind, &content_type, body);
        let outcome = match verb {
            "get" => Outcome {
                body: render.object(t.kind, st.get(&t).await?),
                code: 200,
                warnings: vec![],
            },
            "list" => Outcome {
                body: list_body(t.kind, st.list(&t, &q).await?, &render),
                code: 200,
                warnings: vec![],
            },
            "watch" => {
                let content = if crate::table::is_table_request(&accept) {
                    "application/json;as=Table;g=meta.k8s.io;v=v1"
                } else {
                    "application/json"
                };
                let (tx, resp) = http::streaming(content);
                let t2 = t.clone();
                tokio::spawn(crate::watch::run(
                    st.objects.clone(),
                    t2.kind,
                    t2.namespace,
                    q,
                    accept,
                    tx,
                    st.shutdown.clone(),
                ));
                return Ok(resp);
            }
            "create" if t.subresource == "binding" => st.bind(&t, parsed(&body)?).await?,
            "create" => st.create(&t, parsed(&body)?, &q).await?,
            "update" => st.update(&t, parsed(&body)?, &q).await?,
            "patch" => st.patch(&t, &content_type, &body, &q).await?,
            "delete" => {
                let options = if body.is_empty() {
                    json!({})
                } else {
                    parsed(&body)?
                };
                st.delete(&t, &options, &q).await?
            }
            "deletecollection" => {
                let options = if body.is_empty() {
                    json!({})
                } else {
                    parsed(&body)?
                };
                st.delete_collection(&t, &options, &q).await?
            }
            other => return Err(ApiError::method_not_allowed(other, t.kind.plural)),
        };
        let mut resp = http::json(outcome.code, &outcome.body);
        for w in outcome.warnings {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&w) {
                resp.headers_mut().append("Warning", v);
            }
        }
        Ok(resp)
    }
}

/// Serve one connection (with upgrades, for exec's WebSocket) until it ends
/// or the server stops; then give it up to 5 s to finish its requests.
async fn serve_connection<I, S>(
    builder: http1::Builder,
    io: I,
    svc: S,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection(io, svc).with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
    }
}

fn verb_of(method: &Method, t: &Target, q: &Query) -> &'static str {
    let collection = t.name.is_empty();
    match *method {
        // Upstream authorizes exec's WebSocket GET as create, like its POST.
        Method::GET | Method::POST if t.subresource == "exec" => "create",
        Method::GET if collection && q.flag("watch") => "watch",
        Method::GET if collection => "list",
        Method::GET => "get",
        Method::POST if collection => "create",
        Method::POST if t.subresource == "binding" => "create",
        Method::PUT if !collection => "update",
        Method::PATCH if !collection => "patch",
        Method::DELETE if collection => "deletecollection",
        Method::DELETE => "delete",
        _ => "unsupported",
    }
}

/// `[namespaces/NS/]PLURAL[/NAME[/SUB]]` under a group-version.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let (namespace, rest): (&str, &[&str]) = match rest {
        // /namespaces/NS/plural...: a namespaced resource (but not /namespaces/NS or /namespaces/NS/status).
        ["namespaces", ns, plural, tail @ ..]
            if !(group.is_empty()
                && tail.is_empty()
                && matches!(*plural, "status" | "finalize")) =>
        {
            let kind = registry::lookup(group, version, plural)?;
            if !kind.namespaced {
                return None;
            }
            (ns, &rest[2..])
        }
        _ => ("", rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, "", ""),
        [plural, name] => (*plural, *name, ""),
        [plural, name, sub] => (*plural, *name, *sub),
        _ => return None,
    };
    let kind = registry::lookup(group, version, plural)?;
    let sub_ok = match sub {
        "" => true,
        "status" => kind.status,
        "scale" => kind.scale,
        "binding" | "log" | "exec" => kind.kind == "Pod",
        "finalize" => kind.kind == "Namespace",
        _ => false,
    };
    if !sub_ok || (kind.namespaced && namespace.is_empty() && !name.is_empty()) {
        return None;
    }
    Some(Target {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
        subresource: if sub == "finalize" {
            "status".into()
        } else {
            sub.to_string()
        },
        user: None,
    })
}

fn discovery_doc(segs: &[&str]) -> Option<Value> {
    use crate::discovery as d;
    match segs {
        ["api"] => Some(d::core_versions()),
        ["api", v] => d::resources("", v),
        ["apis"] => Some(d::groups()),
        ["apis", g] => d::group(g),
        ["apis", g, v] => d::resources(g, v),
        _ => None,
    }
}

fn openapi(rest: &[&str]) -> Result<Response<Body>, ApiError> {
    match rest {
        ["v3"] => Ok(http::json(200, &crate::openapi::index())),
        ["v3", path @ ..] => {
            let p = path.join("/");
            crate::openapi::group_version_doc(&p)
                .map(|doc| http::json(200, &doc))
                .ok_or_else(|| ApiError::no_route(&format!("/openapi/v3/{p}")))
        }
        _ => Err(ApiError::no_route("/openapi")),
    }
}
