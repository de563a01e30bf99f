//! The agent's answers to the logs/exec server ([`NodeServices`]) and to
//! probe plugins' `pod-exec` ([`ContainerExec`]): both find the pod in the
//! [`Registry`] and ask its shim.

use std::sync::Arc;
use std::time::Duration;

use trellis_plugin_host::{ContainerExec, ExecError, ExecOutput as PluginExecOutput};

use crate::pod::{Ctx, PodRecord, Registry};
use crate::server::{BoxFuture, ExecOutput, LogFile, NodeServices, ServiceError};

/// Longest `kubectl exec` (kubelet's streaming idle timeout is 4 h; a
/// non-interactive exec here is bounded tighter).
const EXEC_TIMEOUT: Duration = Duration::from_secs(3600);

pub(crate) struct Services(pub Arc<Ctx>);

fn pod(registry: &Registry, namespace: &str, name: &str) -> Result<Arc<PodRecord>, ServiceError> {
    registry.get(namespace, name).ok_or_else(|| {
        ServiceError::NotFound(format!(
            "pod {namespace}/{name} is not running on this node"
        ))
    })
}

impl NodeServices for Services {
    fn container_log(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        previous: bool,
    ) -> Result<LogFile, ServiceError> {
        let rec = pod(&self.0.registry, namespace, name)?;
        let runs = rec
            .containers
            .lock()
            .expect("runs lock")
            .get(container)
            .cloned()
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "container {container:?} in pod {name:?} is not available"
                ))
            })?;
        if previous {
            let id = runs.previous.ok_or_else(|| {
                ServiceError::BadRequest(format!(
                    "previous terminated container {container:?} in pod {name:?} not found"
                ))
            })?;
            return Ok(LogFile::finished(rec.log_path(container, &id)));
        }
        let id = runs.current.ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "container {container:?} in pod {name:?} is waiting to start: ContainerCreating"
            ))
        })?;
        let path = rec.log_path(container, &id);
        let (rec2, c, id2) = (rec.clone(), container.to_string(), id.clone());
        Ok(LogFile::new(path, move || {
            rec2.containers
                .lock()
                .expect("runs lock")
                .get(&c)
                .is_some_and(|r| r.running && r.current.as_deref() == Some(id2.as_str()))
        }))
    }

    fn exec(
        &self,
        namespace: &str,
        name: &str,
        container: &str,
        command: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> BoxFuture<'static, Result<ExecOutput, ServiceError>> {
        let found = running_id(&self.0.registry, namespace, name, container);
        Box::pin(async move {
            let (rec, id) = found.map_err(ServiceError::NotFound)?;
            let r = tokio::task::spawn_blocking(move || {
                rec.shim
                    .exec(&id, command, stdin.unwrap_or_default(), EXEC_TIMEOUT)
            })
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
            Ok(ExecOutput {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: r.exit_code,
            })
        })
    }
}

/// The pod's record and the shim id of `container`'s running run.
fn running_id(
    registry: &Registry,
    namespace: &str,
    name: &str,
    container: &str,
) -> Result<(Arc<PodRecord>, String), String> {
    let rec = registry
        .get(namespace, name)
        .ok_or_else(|| format!("pod {namespace}/{name} is not running on this node"))?;
    let id = {
        let runs = rec.containers.lock().expect("runs lock");
        match runs.get(container) {
            Some(r) if r.running => r.current.clone(),
            _ => None,
        }
    };
    let id = id.ok_or_else(|| format!("container not found ({container:?})"))?;
    Ok((rec, id))
}

/// `pod-exec` for probe plugins: commands in the probed pod's containers.
pub(crate) struct PodExec(pub Arc<Registry>);

impl ContainerExec for PodExec {
    fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<PluginExecOutput, ExecError> {
        let (rec, id) = running_id(&self.0, namespace, pod, container)
            .map_err(|_| ExecError::NotRunning(container.to_string()))?;
        let r = rec
            .shim
            .exec(&id, command.to_vec(), Vec::new(), timeout)
            .map_err(|e| ExecError::Failed(e.to_string()))?;
        if r.timed_out {
            return Err(ExecError::Timeout);
        }
        let mut output = r.stdout;
        output.extend_from_slice(&r.stderr);
        output.truncate(10 * 1024);
        Ok(PluginExecOutput {
            exit_code: r.exit_code,
            output,
        })
    }
}
