//! Host functions behind each capability. Every function checks the plugin's
//! grants itself and answers `access-denied` (a WIT error, never a trap) when
//! the call is outside them, even though an ungranted interface is not linked
//! at all.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::bindings::pod_exec::{self, ExecError as WitExecError, ExecOutput as WitExecOutput};
use crate::bindings::pod_network::{self, HttpHeader, HttpResponse, NetError};
use crate::bindings::types::{self, KindRef, LogLevel, ObjectError};
use crate::bindings::{log, objects_read, objects_write};
use crate::state::{ExecError, PluginState};
use crate::Capability;

const MAX_LOG_BYTES: usize = 4096;
const MAX_LOG_LINES_PER_CALL: u32 = 100;
const MAX_BODY: usize = 10 * 1024;

impl types::Host for PluginState {}

impl log::Host for PluginState {
    fn log(&mut self, level: LogLevel, mut message: String) {
        if !self.grants.has(Capability::Log) || self.log_lines >= MAX_LOG_LINES_PER_CALL {
            return;
        }
        self.log_lines += 1;
        if message.len() > MAX_LOG_BYTES {
            let mut cut = MAX_LOG_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let plugin = &*self.plugin;
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

fn kind_name(kind: &KindRef) -> String {
    if kind.group.is_empty() {
        format!("{}/{}", kind.version, kind.kind)
    } else {
        format!("{}/{}/{}", kind.group, kind.version, kind.kind)
    }
}

impl PluginState {
    fn check_read(&self, kind: &KindRef) -> Result<(), ObjectError> {
        if self.grants.may_read(&kind.group, &kind.kind) {
            Ok(())
        } else {
            Err(ObjectError::AccessDenied(format!(
                "plugin {} may not read {}",
                self.plugin,
                kind_name(kind)
            )))
        }
    }

    fn check_write(&self, kind: &KindRef) -> Result<(), ObjectError> {
        if self.grants.may_write(&kind.group, &kind.kind) {
            Ok(())
        } else {
            Err(ObjectError::AccessDenied(format!(
                "plugin {} may not write {}",
                self.plugin,
                kind_name(kind)
            )))
        }
    }

    fn no_service(&self, what: &str) -> ObjectError {
        ObjectError::Unavailable(format!("no {what} service is attached to this host"))
    }
}

impl objects_read::Host for PluginState {
    fn get(
        &mut self,
        kind: KindRef,
        namespace: String,
        name: String,
    ) -> Result<String, ObjectError> {
        self.check_read(&kind)?;
        let src = self
            .services
            .objects
            .clone()
            .ok_or_else(|| self.no_service("object read"))?;
        src.get(&kind, &namespace, &name)
    }

    fn list(
        &mut self,
        kind: KindRef,
        namespace: String,
        label_selector: String,
    ) -> Result<Vec<String>, ObjectError> {
        self.check_read(&kind)?;
        let src = self
            .services
            .objects
            .clone()
            .ok_or_else(|| self.no_service("object read"))?;
        src.list(&kind, &namespace, &label_selector)
    }
}

impl objects_write::Host for PluginState {
    fn create(
        &mut self,
        kind: KindRef,
        namespace: String,
        object: String,
    ) -> Result<String, ObjectError> {
        self.check_write(&kind)?;
        let w = self
            .services
            .writer
            .clone()
            .ok_or_else(|| self.no_service("object write"))?;
        w.create(&kind, &namespace, &object)
    }

    fn update(
        &mut self,
        kind: KindRef,
        namespace: String,
        object: String,
    ) -> Result<String, ObjectError> {
        self.check_write(&kind)?;
        let w = self
            .services
            .writer
            .clone()
            .ok_or_else(|| self.no_service("object write"))?;
        w.update(&kind, &namespace, &object)
    }

    fn update_status(
        &mut self,
        kind: KindRef,
        namespace: String,
        object: String,
    ) -> Result<String, ObjectError> {
        self.check_write(&kind)?;
        let w = self
            .services
            .writer
            .clone()
            .ok_or_else(|| self.no_service("object write"))?;
        w.update_status(&kind, &namespace, &object)
    }

    fn merge_patch(
        &mut self,
        kind: KindRef,
        namespace: String,
        name: String,
        patch: String,
    ) -> Result<String, ObjectError> {
        self.check_write(&kind)?;
        let w = self
            .services
            .writer
            .clone()
            .ok_or_else(|| self.no_service("object write"))?;
        w.merge_patch(&kind, &namespace, &name, &patch)
    }

    fn delete(
        &mut self,
        kind: KindRef,
        namespace: String,
        name: String,
        propagation: String,
    ) -> Result<(), ObjectError> {
        self.check_write(&kind)?;
        let w = self
            .services
            .writer
            .clone()
            .ok_or_else(|| self.no_service("object write"))?;
        w.delete(&kind, &namespace, &name, &propagation)
    }
}

impl PluginState {
    fn pod_target(&self, port: u16) -> Result<SocketAddr, NetError> {
        if !self.grants.has(Capability::PodNetwork) {
            return Err(NetError::AccessDenied(format!(
                "plugin {} was not granted pod-network",
                self.plugin
            )));
        }
        let pod = self.pod.as_ref().ok_or_else(|| {
            NetError::AccessDenied("this call is not scoped to a pod".to_string())
        })?;
        Ok(SocketAddr::new(pod.ip, port))
    }
}

fn net_error(e: std::io::Error) -> NetError {
    use std::io::ErrorKind::*;
    match e.kind() {
        TimedOut | WouldBlock => NetError::Timeout,
        ConnectionRefused | ConnectionReset | ConnectionAborted => NetError::Refused(e.to_string()),
        _ => NetError::Failed(e.to_string()),
    }
}

fn timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms.clamp(1, 60_000)))
}

impl pod_network::Host for PluginState {
    fn tcp_connect(&mut self, port: u16, timeout_ms: u32) -> Result<(), NetError> {
        let addr = self.pod_target(port)?;
        TcpStream::connect_timeout(&addr, timeout(timeout_ms))
            .map(drop)
            .map_err(net_error)
    }

    fn http_get(
        &mut self,
        scheme: String,
        host: String,
        port: u16,
        path: String,
        headers: Vec<HttpHeader>,
        timeout_ms: u32,
    ) -> Result<HttpResponse, NetError> {
        let addr = self.pod_target(port)?;
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(NetError::Failed(format!(
                "scheme {scheme} is not supported yet; use HTTP"
            )));
        }
        if !path.starts_with('/') || path.contains(['\r', '\n', ' ']) {
            return Err(NetError::Failed(format!("invalid path {path:?}")));
        }
        let t = timeout(timeout_ms);
        let mut conn = TcpStream::connect_timeout(&addr, t).map_err(net_error)?;
        conn.set_read_timeout(Some(t)).map_err(net_error)?;
        conn.set_write_timeout(Some(t)).map_err(net_error)?;
        let host = if host.is_empty() {
            addr.to_string()
        } else {
            host
        };
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: trellis-probe/0.1\r\nAccept: */*\r\nConnection: close\r\n");
        for h in &headers {
            if h.name.contains(['\r', '\n', ':']) || h.value.contains(['\r', '\n']) {
                return Err(NetError::Failed(format!("invalid header {:?}", h.name)));
            }
            req.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        req.push_str("\r\n");
        conn.write_all(req.as_bytes()).map_err(net_error)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > 64 * 1024 + MAX_BODY {
                        break;
                    }
                }
                Err(e) if raw.is_empty() => return Err(net_error(e)),
                Err(_) => break,
            }
        }
        parse_http_response(&raw)
    }
}

fn parse_http_response(raw: &[u8]) -> Result<HttpResponse, NetError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| NetError::Failed("malformed HTTP response: no end of headers".into()))?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| NetError::Failed("malformed HTTP response: headers not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| NetError::Failed(format!("malformed status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| HttpHeader {
            name: n.trim().to_string(),
            value: v.trim().to_string(),
        })
        .collect();
    let body = raw[end + 4..].iter().copied().take(MAX_BODY).collect();
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

impl pod_exec::Host for PluginState {
    fn exec(
        &mut self,
        container: String,
        command: Vec<String>,
        timeout_ms: u32,
    ) -> Result<WitExecOutput, WitExecError> {
        if !self.grants.has(Capability::PodExec) {
            return Err(WitExecError::AccessDenied(format!(
                "plugin {} was not granted pod-exec",
                self.plugin
            )));
        }
        let pod = self
            .pod
            .as_ref()
            .ok_or_else(|| WitExecError::AccessDenied("this call is not scoped to a pod".into()))?;
        if !pod.containers.iter().any(|c| c == &container) {
            return Err(WitExecError::AccessDenied(format!(
                "container {container} is not in pod {}/{}",
                pod.namespace, pod.name
            )));
        }
        let exec = self.services.exec.clone().ok_or_else(|| {
            WitExecError::Failed("no exec service is attached to this host".into())
        })?;
        match exec.exec(
            &pod.namespace,
            &pod.name,
            &container,
            &command,
            timeout(timeout_ms),
        ) {
            Ok(out) => Ok(WitExecOutput {
                exit_code: out.exit_code,
                output: out.output,
            }),
            Err(ExecError::NotRunning(c)) => Err(WitExecError::NotRunning(c)),
            Err(ExecError::Timeout) => Err(WitExecError::Timeout),
            Err(ExecError::Failed(m)) => Err(WitExecError::Failed(m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_responses() {
        let r =
            parse_http_response(b"HTTP/1.1 503 Service Unavailable\r\nX-A: b\r\n\r\nbusy").unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.headers[0].name, "X-A");
        assert_eq!(r.body, b"busy");
        assert!(matches!(
            parse_http_response(b"garbage"),
            Err(NetError::Failed(_))
        ));
    }
}
