//! `tcpSocket` probes as kubelet runs them: success when a TCP connection to
//! the pod's IP on the port opens within `timeoutSeconds`. The host's
//! `pod-network` capability only ever connects to the probed pod.

use trellis_sdk::probe::*;

#[derive(Default)]
struct TcpSocket;

/// The probe's port: a number (named ports are resolved by the host first).
fn port(config: &str) -> Result<u16, PluginError> {
    let v: serde_json::Value = serde_json::from_str(config)
        .map_err(|e| PluginError::InvalidConfig(format!("probe config is not JSON: {e}")))?;
    let p = &v["tcpSocket"]["port"];
    p.as_u64()
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
        .ok_or_else(|| {
            PluginError::InvalidConfig(format!(
                "tcpSocket.port must be a number in 1..65535, got {p}"
            ))
        })
}

impl ProbePlugin for TcpSocket {
    fn check(&mut self, req: ProbeRequest) -> Result<ProbeResult, PluginError> {
        let port = port(&req.config)?;
        Ok(match tcp_connect(port, req.timeout_ms) {
            Ok(()) => success(""),
            Err(NetError::Timeout) => {
                failure(format!("dial tcp {}:{port}: i/o timeout", req.pod_ip))
            }
            Err(NetError::Refused(m)) | Err(NetError::Failed(m)) => {
                failure(format!("dial tcp {}:{port}: connect: {m}", req.pod_ip))
            }
            Err(NetError::AccessDenied(m)) => return Err(PluginError::AccessDenied(m)),
        })
    }
}

trellis_sdk::export_probe!(TcpSocket);
