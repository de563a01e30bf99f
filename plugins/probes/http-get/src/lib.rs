//! `httpGet` probes as kubelet runs them: a GET on the pod's IP; a status in
//! 200..400 is success, anything else failure ("HTTP probe failed with
//! statuscode: 503"). Fields: `path` (default "/"), `port`, `scheme` (default
//! "HTTP"), `host`, `httpHeaders`.

use trellis_sdk::probe::*;

#[derive(Default)]
struct HttpGet;

struct Target {
    scheme: String,
    host: String,
    port: u16,
    path: String,
    headers: Vec<HttpHeader>,
}

fn target(config: &str) -> Result<Target, PluginError> {
    let bad = |m: String| PluginError::InvalidConfig(m);
    let v: serde_json::Value =
        serde_json::from_str(config).map_err(|e| bad(format!("probe config is not JSON: {e}")))?;
    let h = &v["httpGet"];
    if !h.is_object() {
        return Err(bad("httpGet is required".into()));
    }
    let port = h["port"]
        .as_u64()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| {
            bad(format!(
                "httpGet.port must be a number in 1..65535, got {}",
                h["port"]
            ))
        })? as u16;
    let path = h["path"].as_str().unwrap_or("/");
    Ok(Target {
        scheme: h["scheme"].as_str().unwrap_or("HTTP").to_string(),
        host: h["host"].as_str().unwrap_or_default().to_string(),
        port,
        path: if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        },
        headers: h["httpHeaders"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| HttpHeader {
                        name: x["name"].as_str().unwrap_or_default().to_string(),
                        value: x["value"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

impl ProbePlugin for HttpGet {
    fn check(&mut self, req: ProbeRequest) -> Result<ProbeResult, PluginError> {
        let t = target(&req.config)?;
        let url = format!(
            "{}://{}:{}{}",
            t.scheme.to_lowercase(),
            req.pod_ip,
            t.port,
            t.path
        );
        Ok(match http_get(&t.scheme, &t.host, t.port, &t.path, &t.headers, req.timeout_ms) {
            Ok(r) if (200..400).contains(&r.status) => success(""),
            Ok(r) => failure(format!("HTTP probe failed with statuscode: {}", r.status)),
            Err(NetError::Timeout) => failure(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Err(NetError::Refused(m)) | Err(NetError::Failed(m)) => failure(format!("Get \"{url}\": {m}")),
            Err(NetError::AccessDenied(m)) => return Err(PluginError::AccessDenied(m)),
        })
    }
}

trellis_sdk::export_probe!(HttpGet);
