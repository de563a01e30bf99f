//! A probe plugin for the host's own tests. The probe's config is
//! `{"mode": "ok"|"fail"|"loop"|"trap"|"error"}`: succeed, fail with the
//! message "asked to fail", spin until the host's deadline stops it, panic,
//! or return an `internal` error. It needs no capability.

use trellis_sdk::probe::*;

// Only the wasm export (absent in native test builds) constructs it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[derive(Default)]
struct ProbeMisbehave;

impl ProbePlugin for ProbeMisbehave {
    fn check(&mut self, req: ProbeRequest) -> Result<ProbeResult, PluginError> {
        let v: serde_json::Value = serde_json::from_str(&req.config)
            .map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
        match v["mode"].as_str().unwrap_or("ok") {
            "ok" => Ok(success("")),
            "fail" => Ok(failure("asked to fail")),
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "trap" => panic!("probe-misbehave was asked to trap"),
            "error" => Err(PluginError::Internal("asked to return an error".into())),
            other => Err(PluginError::InvalidConfig(format!(
                "unknown mode {other:?}"
            ))),
        }
    }
}

trellis_sdk::export_probe!(ProbeMisbehave);
