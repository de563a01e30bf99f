//! Pull and push over the OCI distribution protocol (the registry v2 API).
//!
//! A pull asks for the reference's manifest accepting OCI and docker
//! schema 2 manifests and indexes (manifest lists), picks this machine's
//! platform from an index, fetches the config and layers it lacks, verifies
//! every digest and every layer's diff id, and only then stores the image.
//! A push uploads missing blobs (monolithic upload: POST, then PUT with the
//! digest) and puts the manifest.
//!
//! Registries on loopback (`localhost`, `127.0.0.0/8`, `[::1]`) or listed in
//! [`PullOptions::insecure_registries`] are spoken to over plain HTTP, others
//! over HTTPS (rustls with the Mozilla root certificates). A `401` with a
//! `Bearer` challenge gets a token from the named realm (with the
//! credentials, if any, as Basic auth); a `Basic` challenge gets the
//! credentials. The calls block: run them on a blocking thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::http;

use crate::digest::Digest;
use crate::error::ImageError;
use crate::oci::{self, ContentError, ManifestKind, Platform};
use crate::reference::{Reference, DEFAULT_REGISTRY};
use crate::store::{parse_manifest, Image, ImageStore, StageError, Staging};

const MAX_DOCUMENT: u64 = 8 << 20;

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Registries (`host` or `host:port`) spoken to over plain HTTP. Loopback
    /// registries always are.
    pub insecure_registries: Vec<String>,
    /// Credentials, for registries or token services that want them.
    pub auth: Option<RegistryAuth>,
    /// The platform to pick from an image index [default: linux and this
    /// machine's architecture].
    pub platform: Option<Platform>,
}

/// A user name and password (or token) for a registry.
#[derive(Clone)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why talking to a registry failed. Messages follow containerd's, which
/// kubelet shows in `ErrImagePull` events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry has no such repository or manifest.
    #[error("failed to resolve reference \"{reference}\": {reference}: not found")]
    NotFound {
        /// The normalised reference.
        reference: String,
    },
    /// The registry refused access (or hides a missing repository so).
    #[error("failed to resolve reference \"{reference}\": pull access denied, repository does not exist or may require authorization: server message: {message}")]
    AccessDenied {
        /// The normalised reference.
        reference: String,
        /// The registry's message.
        message: String,
    },
    /// The registry could not be reached while resolving the reference.
    #[error("failed to resolve reference \"{reference}\": failed to do request: {method} \"{url}\": {message}")]
    Unreachable {
        /// The normalised reference.
        reference: String,
        /// HTTP method.
        method: &'static str,
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A later request failed (connection, TLS, timeout).
    #[error("failed to do request: {method} \"{url}\": {message}")]
    Request {
        /// HTTP method.
        method: &'static str,
        /// URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry answered with an unexpected status.
    #[error("unexpected status from {method} request to {url}: {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// HTTP method.
        method: &'static str,
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's error message, if any.
        message: String,
    },
    /// Authentication with the registry's token service failed.
    #[error("failed to authorize: {0}")]
    Auth(String),
    /// The content does not match its digests, or cannot be used.
    #[error("{0}")]
    Content(ContentError),
    /// Storing the content locally failed.
    #[error("{0}")]
    Local(String),
}

impl RegistryError {
    /// Whether the image (or repository) does not exist, as opposed to a
    /// registry that could not be reached or refused access.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RegistryError::NotFound { .. })
    }
}

/// What a request sends.
#[derive(Clone, Copy)]
enum Payload<'a> {
    Empty,
    Bytes(&'a [u8]),
    File(&'a Path),
}

/// A registry session for one repository.
struct Client {
    agent: ureq::Agent,
    base: String,
    host: String,
    repository: String,
    actions: &'static str,
    auth: Option<RegistryAuth>,
    authorization: Option<String>,
}

/// Whether `registry` (host[:port]) is on loopback.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Client {
    fn new(r: &Reference, opts: &PullOptions, actions: &'static str) -> Client {
        let registry = r.registry();
        let insecure = is_loopback(registry)
            || opts.insecure_registries.iter().any(|i| {
                let i = i.trim_start_matches("http://").trim_end_matches('/');
                i == registry || registry.split(':').next() == Some(i)
            });
        let host = if registry == DEFAULT_REGISTRY {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        let scheme = if insecure { "http" } else { "https" };
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("trellis/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)));
        if is_loopback(registry) {
            config = config.proxy(None);
        }
        Client {
            agent: config.build().new_agent(),
            base: format!("{scheme}://{host}"),
            host,
            repository: r.repository().to_string(),
            actions,
            auth: opts.auth.clone(),
            authorization: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// Turns a transport error into a message like Go's net errors.
    fn transport_message(&self, e: &ureq::Error) -> String {
        match e {
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                format!("dial tcp {}: connect: connection refused", self.host)
            }
            ureq::Error::HostNotFound => format!("dial tcp: lookup {}: no such host", self.host),
            other => other.to_string(),
        }
    }

    /// Sends a request, answering one authentication challenge.
    fn send(
        &mut self,
        method: &'static str,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> Result<http::Response<ureq::Body>, RegistryError> {
        let mut challenged = false;
        loop {
            let mut b = http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            if let Some(a) = &self.authorization {
                b = b.header("Authorization", a.as_str());
            }
            let request_err = |message: String| RegistryError::Request {
                method,
                url: url.to_string(),
                message,
            };
            let result = match payload {
                Payload::Empty => b.body(()).map(|r| self.agent.run(r)),
                Payload::Bytes(x) => b.body(x).map(|r| self.agent.run(r)),
                Payload::File(p) => {
                    let f = File::open(p).map_err(|e| {
                        RegistryError::Local(format!("cannot read {}: {e}", p.display()))
                    })?;
                    b.body(&f).map(|r| self.agent.run(r))
                }
            }
            .map_err(|e| request_err(e.to_string()))?;
            let resp = result.map_err(|e| request_err(self.transport_message(&e)))?;
            if resp.status() == 401 && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                // Drained, the connection goes back to the pool for the retry.
                let (parts, body) = resp.into_parts();
                let body = body
                    .into_with_config()
                    .limit(MAX_DOCUMENT)
                    .read_to_vec()
                    .unwrap_or_default();
                if self.authenticate(&challenge)? {
                    continue;
                }
                return Ok(http::Response::from_parts(
                    parts,
                    ureq::Body::builder().data(body),
                ));
            }
            return Ok(resp);
        }
    }

    /// Answers a `WWW-Authenticate` challenge; false if it cannot be.
    fn authenticate(&mut self, challenge: &str) -> Result<bool, RegistryError> {
        use base64::Engine;
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic = self.auth.as_ref().map(|a| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", a.username, a.password))
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            return match basic {
                Some(b) if self.authorization.as_deref() != Some(b.as_str()) => {
                    self.authorization = Some(b);
                    Ok(true)
                }
                _ => Ok(false),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(false);
        }
        let params = parse_challenge(params);
        let get = |k: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let Some(realm) = get("realm") else {
            return Ok(false);
        };
        let scope = format!("repository:{}:{}", self.repository, self.actions);
        let mut url = format!(
            "{realm}{}scope={}",
            if realm.contains('?') { '&' } else { '?' },
            encode(&scope)
        );
        if let Some(service) = get("service") {
            url.push_str(&format!("&service={}", encode(service)));
        }
        let mut b = http::Request::builder().method("GET").uri(&url);
        if let Some(basic) = &basic {
            b = b.header("Authorization", basic.as_str());
        }
        let request = b.body(()).map_err(|e| RegistryError::Auth(e.to_string()))?;
        let mut resp = self
            .agent
            .run(request)
            .map_err(|e| RegistryError::Request {
                method: "GET",
                url: url.clone(),
                message: self.transport_message(&e),
            })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_DOCUMENT)
            .read_to_vec()
            .map_err(|e| RegistryError::Auth(format!("reading the token from {realm}: {e}")))?;
        if status != 200 {
            return Err(RegistryError::Auth(format!(
                "token service {realm} answered {status}: {}",
                error_message(&body)
            )));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::Auth(format!("bad token response from {realm}: {e}")))?;
        match t.token.or(t.access_token) {
            Some(t) if !t.is_empty() => {
                self.authorization = Some(format!("Bearer {t}"));
                Ok(true)
            }
            _ => Err(RegistryError::Auth(format!(
                "no token in the response from {realm}"
            ))),
        }
    }

    /// Fetches a manifest or index by tag or digest: its bytes and media type.
    fn manifest(
        &mut self,
        object: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let url = self.url(&format!("manifests/{object}"));
        let resp = self
            .send(
                "GET",
                &url,
                &[("Accept", oci::ACCEPT_MANIFESTS)],
                Payload::Empty,
            )
            .map_err(|e| match e {
                RegistryError::Request {
                    method,
                    url,
                    message,
                } => RegistryError::Unreachable {
                    reference: reference.to_string(),
                    method,
                    url,
                    message,
                },
                other => other,
            })?;
        let status = resp.status().as_u16();
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_body(resp, "GET", &url)?;
        match status {
            200 => Ok((body, media_type)),
            404 => Err(RegistryError::NotFound {
                reference: reference.to_string(),
            }),
            401 | 403 => Err(RegistryError::AccessDenied {
                reference: reference.to_string(),
                message: error_message(&body),
            }),
            _ => Err(RegistryError::Status {
                method: "GET",
                url,
                status,
                message: error_message(&body),
            }),
        }
    }

    /// Downloads a blob into staging, verifying digest and size.
    fn fetch_blob(
        &mut self,
        staging: &mut Staging<'_>,
        d: &Digest,
        size: u64,
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("blobs/{d}"));
        let resp = self.send("GET", &url, &[], Payload::Empty)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = read_body(resp, "GET", &url).unwrap_or_default();
            return Err(RegistryError::Status {
                method: "GET",
                url,
                status,
                message: error_message(&body),
            });
        }
        let mut reader = resp.into_body().into_reader();
        staging
            .write_blob(&mut reader, Some(d), Some(size))
            .map_err(|e| match e {
                StageError::Read(e) => RegistryError::Request {
                    method: "GET",
                    url,
                    message: e.to_string(),
                },
                StageError::Content(c) => RegistryError::Content(c),
                StageError::Write(e) => RegistryError::Local(e.to_string()),
            })?;
        Ok(())
    }

    fn blob_exists(&mut self, d: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{d}"));
        let resp = self.send("HEAD", &url, &[], Payload::Empty)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            status => Err(RegistryError::Status {
                method: "HEAD",
                url,
                status,
                message: String::new(),
            }),
        }
    }

    fn upload_blob(&mut self, d: &Digest, path: &Path) -> Result<(), RegistryError> {
        let url = self.url("blobs/uploads/");
        let resp = self.send("POST", &url, &[], Payload::Bytes(&[]))?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if status != 202 {
            let body = read_body(resp, "POST", &url).unwrap_or_default();
            return Err(RegistryError::Status {
                method: "POST",
                url,
                status,
                message: error_message(&body),
            });
        }
        let Some(location) = location else {
            return Err(RegistryError::Status {
                method: "POST",
                url,
                status,
                message: "no Location header in the upload answer".into(),
            });
        };
        let mut put = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{}", self.base, location)
        };
        put.push(if put.contains('?') { '&' } else { '?' });
        put.push_str(&format!("digest={}", encode(d.as_str())));
        let resp = self.send(
            "PUT",
            &put,
            &[("Content-Type", "application/octet-stream")],
            Payload::File(path),
        )?;
        let status = resp.status().as_u16();
        if status != 201 {
            let body = read_body(resp, "PUT", &put).unwrap_or_default();
            return Err(RegistryError::Status {
                method: "PUT",
                url: put,
                status,
                message: error_message(&body),
            });
        }
        Ok(())
    }

    fn put_manifest(
        &mut self,
        object: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(), RegistryError> {
        let url = self.url(&format!("manifests/{object}"));
        let resp = self.send(
            "PUT",
            &url,
            &[("Content-Type", media_type)],
            Payload::Bytes(bytes),
        )?;
        let status = resp.status().as_u16();
        if status != 201 && status != 200 {
            let body = read_body(resp, "PUT", &url).unwrap_or_default();
            return Err(RegistryError::Status {
                method: "PUT",
                url,
                status,
                message: error_message(&body),
            });
        }
        Ok(())
    }
}

fn read_body(
    resp: http::Response<ureq::Body>,
    method: &'static str,
    url: &str,
) -> Result<Vec<u8>, RegistryError> {
    resp.into_body()
        .into_with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .map_err(|e| RegistryError::Request {
            method,
            url: url.to_string(),
            message: e.to_string(),
        })
}

/// The registry's error message: `CODE: message` from its JSON errors, or
/// the body's text.
fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        if let Some(first) = e.errors.first() {
            return format!("{}: {}", first.code.to_lowercase(), first.message);
        }
    }
    let text = String::from_utf8_lossy(body);
    text.trim().chars().take(200).collect()
}

/// `key="value", key2=value2` pairs of a challenge.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ImageStore {
    /// Pulls `reference` from its registry and stores it under that
    /// (normalised) reference. Content already in the store is not fetched
    /// again. On error the store is unchanged and the message reads like
    /// kubelet's `ErrImagePull` ones.
    pub fn pull(&self, reference: &str, opts: &PullOptions) -> Result<Image, ImageError> {
        let r = Reference::parse(reference)?;
        let name = r.to_string();
        let _span = tracing::info_span!("image_pull", reference = %name).entered();
        let fail = |cause| ImageError::Pull {
            reference: name.clone(),
            cause,
        };
        let mut staging = self.stage()?;
        let mut client = Client::new(&r, opts, "pull");
        let platform = opts.platform.clone().unwrap_or_else(Platform::host);

        let (mut bytes, mut media_type) = client.manifest(&r.object(), &name).map_err(fail)?;
        let mut digest = Digest::of(&bytes);
        if let Some(want) = r.digest() {
            if &digest != want {
                return Err(fail(RegistryError::Content(ContentError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                })));
            }
        }
        let manifest = loop {
            match oci::parse_manifest_like(&bytes, media_type.as_deref(), &digest)
                .map_err(|c| fail(RegistryError::Content(c)))?
            {
                ManifestKind::Manifest(m) => break m,
                ManifestKind::Index(index) => {
                    let d = oci::select_platform(&index, &digest, &platform)
                        .map_err(|c| fail(RegistryError::Content(c)))?
                        .digest
                        .clone();
                    (bytes, media_type) = client.manifest(d.as_str(), &name).map_err(fail)?;
                    digest = Digest::of(&bytes);
                    if digest != d {
                        return Err(fail(RegistryError::Content(ContentError::DigestMismatch {
                            expected: d,
                            actual: digest,
                        })));
                    }
                }
            }
        };
        oci::check_layer_media_types(&manifest).map_err(|c| fail(RegistryError::Content(c)))?;
        let local = |e: StageError| match e {
            StageError::Content(c) => RegistryError::Content(c),
            StageError::Read(e) => RegistryError::Local(e.to_string()),
            StageError::Write(e) => RegistryError::Local(e.to_string()),
        };
        staging.write_bytes(&bytes).map_err(|e| fail(local(e)))?;
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !staging.contains(&d.digest) {
                tracing::debug!(blob = %d.digest, size = d.size, "fetching blob");
                client
                    .fetch_blob(&mut staging, &d.digest, d.size)
                    .map_err(fail)?;
            }
        }
        staging.verify_image(&digest).map_err(|e| fail(local(e)))?;
        let image = staging
            .commit(&[(digest, vec![r])])?
            .pop()
            .expect("one image committed");
        tracing::info!(id = %image.id, digest = %image.digest, "image pulled");
        Ok(image)
    }

    /// Uploads the image `reference` names (in this store) to the registry
    /// as `target` (`localhost:5000/busybox:latest`). Returns the manifest
    /// digest. Blobs the registry has are not sent again.
    pub fn push(
        &self,
        reference: &str,
        target: &str,
        opts: &PullOptions,
    ) -> Result<String, ImageError> {
        let t = Reference::parse(target)?;
        let name = t.to_string();
        let _span =
            tracing::info_span!("image_push", reference = %reference, target = %name).entered();
        let fail = |cause| ImageError::Push {
            reference: name.clone(),
            cause,
        };
        // Shared: the blobs stay while they are read.
        let _gc = self.lock("gc.lock", false)?;
        let image = self
            .resolve(reference)?
            .ok_or_else(|| ImageError::NotFound {
                reference: reference.to_string(),
            })?;
        let digest = Digest::parse(&image.digest).map_err(|_| ImageError::NotFound {
            reference: reference.to_string(),
        })?;
        if let Some(want) = t.digest() {
            if want != &digest {
                return Err(fail(RegistryError::Content(ContentError::DigestMismatch {
                    expected: want.clone(),
                    actual: digest,
                })));
            }
        }
        let bytes = self.read_blob(&digest)?;
        let manifest =
            parse_manifest(&bytes, &digest).map_err(|cause| ImageError::Corrupt { cause })?;
        let media_type = manifest
            .media_type
            .clone()
            .unwrap_or_else(|| oci::OCI_MANIFEST.to_string());
        let mut client = Client::new(&t, opts, "pull,push");
        for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if client.blob_exists(&d.digest).map_err(fail)? {
                continue;
            }
            let path: PathBuf = self.blob_path(&d.digest);
            tracing::debug!(blob = %d.digest, size = d.size, "uploading blob");
            client.upload_blob(&d.digest, &path).map_err(fail)?;
        }
        client
            .put_manifest(&t.object(), &media_type, &bytes)
            .map_err(fail)?;
        tracing::info!(digest = %digest, "image pushed");
        Ok(digest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let p = parse_challenge(
            r#"realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(
            p,
            vec![
                (
                    "realm".to_string(),
                    "https://auth.docker.io/token".to_string()
                ),
                ("service".to_string(), "registry.docker.io".to_string()),
                (
                    "scope".to_string(),
                    "repository:library/busybox:pull,push".to_string()
                ),
            ]
        );
        assert_eq!(
            parse_challenge("a=b, c=\"d\""),
            vec![("a".into(), "b".into()), ("c".into(), "d".into())]
        );
    }

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.1.2.3"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
        assert!(!is_loopback("docker.io"));
    }

    #[test]
    fn not_found_reads_like_kubelet() {
        let e = ImageError::Pull {
            reference: "localhost:5000/nope:latest".into(),
            cause: RegistryError::NotFound {
                reference: "localhost:5000/nope:latest".into(),
            },
        };
        assert_eq!(
            e.to_string(),
            "failed to pull and unpack image \"localhost:5000/nope:latest\": failed to resolve reference \"localhost:5000/nope:latest\": localhost:5000/nope:latest: not found"
        );
    }
}
