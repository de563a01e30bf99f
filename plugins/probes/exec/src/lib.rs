//! `exec` probes as kubelet runs them: the command (argv, no shell) runs in
//! the probed container through the host's `pod-exec` capability, bounded by
//! the probe's `timeoutSeconds`; exit code 0 is success. A failure's message
//! is the command's output, as kubelet reports it ("Liveness probe failed:
//! cat: can't open '/tmp/healthy': No such file or directory"), bounded so
//! that events stay small; a command that printed nothing reports its exit
//! code instead, and one that ran out of time reports `command "..." timed
//! out`.

use trellis_sdk::probe::*;

// Only the wasm export (absent in native test builds) constructs it.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
#[derive(Default)]
struct Exec;

/// Longest failure message, in bytes: an event's message is meant for people.
const MAX_MESSAGE: usize = 1024;

/// The command of an `{"exec": {"command": [...]}}` handler.
fn command(config: &str) -> Result<Vec<String>, PluginError> {
    let bad = |m: String| PluginError::InvalidConfig(m);
    let v: serde_json::Value =
        serde_json::from_str(config).map_err(|e| bad(format!("probe config is not JSON: {e}")))?;
    let c = &v["exec"]["command"];
    let list = c
        .as_array()
        .ok_or_else(|| bad(format!("exec.command must be a list of strings, got {c}")))?;
    let argv = list
        .iter()
        .map(|a| a.as_str().map(str::to_string))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad(format!("exec.command must be a list of strings, got {c}")))?;
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(bad("exec.command must name a program to run".into()));
    }
    Ok(argv)
}

/// `output` as text, trimmed and cut at [`MAX_MESSAGE`] bytes on a character
/// boundary.
fn bounded(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let text = text.trim_end();
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (output truncated)", &text[..end])
}

/// The result kubelet would report for a finished command.
fn verdict(argv: &[String], exit_code: i32, output: &[u8]) -> ProbeResult {
    let text = bounded(output);
    if exit_code == 0 {
        success(text)
    } else if text.is_empty() {
        failure(format!(
            "command {:?} exited with code {exit_code}",
            argv.join(" ")
        ))
    } else {
        failure(text)
    }
}

impl ProbePlugin for Exec {
    fn check(&mut self, req: ProbeRequest) -> Result<ProbeResult, PluginError> {
        let argv = command(&req.config)?;
        Ok(match exec(&req.container, &argv, req.timeout_ms) {
            Ok(out) => verdict(&argv, out.exit_code, &out.output),
            Err(ExecError::Timeout) => failure(format!("command {:?} timed out", argv.join(" "))),
            Err(ExecError::NotRunning(m)) => failure(format!("container is not running: {m}")),
            Err(ExecError::Failed(m)) => failure(format!(
                "command {:?} could not be run: {m}",
                argv.join(" ")
            )),
            Err(ExecError::AccessDenied(m)) => return Err(PluginError::AccessDenied(m)),
        })
    }
}

trellis_sdk::export_probe!(Exec);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_command() {
        assert_eq!(
            command(r#"{"exec":{"command":["cat","/tmp/healthy"]}}"#).unwrap(),
            ["cat", "/tmp/healthy"]
        );
        for bad in [
            r#"{"exec":{}}"#,
            r#"{"exec":{"command":[]}}"#,
            r#"{"exec":{"command":[""]}}"#,
            r#"{"exec":{"command":["ls",1]}}"#,
            r#"{"httpGet":{"port":80}}"#,
            "not json",
        ] {
            assert!(
                matches!(command(bad), Err(PluginError::InvalidConfig(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn failures_carry_the_output_bounded() {
        let argv = vec!["check".to_string()];
        let r = verdict(&argv, 1, b"not healthy\n");
        assert_eq!(r.outcome, ProbeOutcome::Failure);
        assert_eq!(r.message, "not healthy");
        let r = verdict(&argv, 2, b"");
        assert_eq!(r.message, "command \"check\" exited with code 2");
        let long = "é".repeat(MAX_MESSAGE);
        let r = verdict(&argv, 1, long.as_bytes());
        assert!(r.message.len() < MAX_MESSAGE + 30, "{}", r.message.len());
        assert!(r.message.ends_with("... (output truncated)"));
        assert_eq!(verdict(&argv, 0, b"ok").outcome, ProbeOutcome::Success);
    }
}
