//! One probe's loop, as kubelet's prober worker runs it: wait for the startup
//! probe (liveness, readiness) and the initial delay, then one attempt per
//! period; a verdict is published once the same outcome came
//! `successThreshold` / `failureThreshold` times in a row.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use trellis_plugin_host::probe::{ProbeOutcome, ProbeRequest};
use trellis_plugin_host::PodScope;

use super::plugins::Component;
use super::spec::{Handler, ProbeSpec};
use super::{ProbeEvent, ProbeKind, ProbePlugins, ProbeStatus};

/// What every probe of one container shares.
pub(crate) struct Ctx {
    pub plugins: ProbePlugins,
    pub scope: PodScope,
    pub container: String,
    pub started_at: SystemTime,
    pub has_readiness: bool,
    pub status: watch::Sender<ProbeStatus>,
    pub events: mpsc::Sender<ProbeEvent>,
}

/// The outcome of one attempt.
#[derive(Debug, PartialEq)]
enum Attempt {
    Success,
    /// The plugin said failure: counted.
    Failed(String),
    /// Something went wrong; `counted` when it was the plugin's fault (a
    /// trap, an error, its deadline), not when the host could not run the
    /// probe at all (as kubelet throws away prober errors).
    Errored {
        message: String,
        counted: bool,
    },
}

/// Consecutive outcomes, as kubelet counts them.
#[derive(Debug)]
struct Counter {
    success_threshold: u32,
    failure_threshold: u32,
    last: Option<bool>,
    run: u32,
}

impl Counter {
    fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Self {
            success_threshold,
            failure_threshold,
            last: None,
            run: 0,
        }
    }

    /// Count one outcome; the verdict once the run of equal outcomes reached
    /// its threshold.
    fn observe(&mut self, ok: bool) -> Option<bool> {
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        (self.run >= threshold).then_some(ok)
    }
}

/// Run one probe until it has nothing more to decide (startup succeeded or
/// failed, liveness failed) or its task is aborted.
pub(crate) async fn run(ctx: Arc<Ctx>, spec: ProbeSpec) {
    let span = tracing::info_span!(
        "probe",
        namespace = %ctx.scope.namespace,
        pod = %ctx.scope.name,
        container = %ctx.container,
        probe = spec.kind.as_str(),
    );
    probe_loop(ctx, spec).instrument(span).await
}

async fn probe_loop(ctx: Arc<Ctx>, spec: ProbeSpec) {
    if spec.kind != ProbeKind::Startup {
        let mut status = ctx.status.subscribe();
        if status.wait_for(|s| s.started).await.is_err() {
            return;
        }
    }
    let due = ctx.started_at + spec.initial_delay;
    if let Ok(wait) = due.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    let mut ticker = tokio::time::interval(spec.period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counter = Counter::new(spec.success_threshold, spec.failure_threshold);
    let mut resolved = None;
    loop {
        ticker.tick().await;
        let attempt = attempt(&ctx, &spec, &mut resolved).await;
        tracing::debug!(?attempt, "probe attempt");
        let ok = match attempt {
            Attempt::Success => true,
            Attempt::Failed(m) => {
                event(
                    &ctx,
                    spec.kind,
                    format!("{} probe failed: {m}", spec.kind.title()),
                );
                false
            }
            Attempt::Errored { message, counted } => {
                event(
                    &ctx,
                    spec.kind,
                    format!("{} probe errored: {message}", spec.kind.title()),
                );
                if !counted {
                    continue;
                }
                false
            }
        };
        if let Some(verdict) = counter.observe(ok) {
            if !publish(&ctx, spec.kind, verdict) {
                return;
            }
        }
    }
}

/// Publish a verdict; false when this probe has nothing more to decide.
fn publish(ctx: &Ctx, kind: ProbeKind, ok: bool) -> bool {
    match (kind, ok) {
        (ProbeKind::Startup, true) => {
            tracing::info!("container started");
            ctx.status.send_modify(|s| {
                s.started = true;
                s.ready = !ctx.has_readiness;
            });
            false
        }
        (ProbeKind::Startup | ProbeKind::Liveness, false) => {
            let why = format!(
                "Container {} failed {} probe, will be restarted",
                ctx.container,
                kind.as_str()
            );
            tracing::info!(reason = %why, "container must restart");
            ctx.status.send_if_modified(|s| {
                let first = s.restart.is_none();
                if first {
                    s.restart = Some(why);
                }
                first
            });
            false
        }
        (ProbeKind::Liveness, true) => true,
        (ProbeKind::Readiness, ready) => {
            ctx.status.send_if_modified(|s| {
                let changed = s.ready != ready;
                if changed {
                    tracing::info!(ready, "readiness changed");
                }
                s.ready = ready;
                changed
            });
            true
        }
    }
}

fn event(ctx: &Ctx, probe: ProbeKind, message: String) {
    let e = ProbeEvent {
        probe,
        reason: "Unhealthy",
        message,
    };
    if let Err(mpsc::error::TrySendError::Full(e)) = ctx.events.try_send(e) {
        tracing::warn!(message = %e.message, "probe event dropped: the agent is not reading events");
    }
}

/// The component and request config a probe's handler runs with.
async fn resolve(ctx: &Ctx, spec: &ProbeSpec) -> Result<(Component, Value), String> {
    match &spec.handler {
        Handler::Default { plugin, config } => Ok((
            ctx.plugins.default_component(*plugin).clone(),
            config.clone(),
        )),
        Handler::Custom {
            plugin,
            config,
            entry,
        } => {
            let c = ctx
                .plugins
                .custom_component(plugin, entry)
                .await
                .map_err(|e| e.to_string())?;
            let config = config
                .clone()
                .or_else(|| c.config.clone())
                .unwrap_or_else(|| json!({}));
            Ok((c, config))
        }
        Handler::Invalid(why) => Err(why.clone()),
    }
}

async fn attempt(
    ctx: &Ctx,
    spec: &ProbeSpec,
    resolved: &mut Option<(Component, Value)>,
) -> Attempt {
    let (component, config) = match resolved {
        Some(r) => r.clone(),
        None => match resolve(ctx, spec).await {
            Ok(r) => resolved.insert(r).clone(),
            Err(message) => {
                return Attempt::Errored {
                    message,
                    counted: false,
                }
            }
        },
    };
    let request = ProbeRequest {
        pod_name: ctx.scope.name.clone(),
        pod_namespace: ctx.scope.namespace.clone(),
        pod_ip: ctx.scope.ip.to_string(),
        container: ctx.container.clone(),
        kind: spec.kind.as_str().to_string(),
        config: config.to_string(),
        timeout_ms: u32::try_from(spec.timeout.as_millis()).unwrap_or(u32::MAX),
    };
    let plugins = ctx.plugins.clone();
    let scope = ctx.scope.clone();
    let timeout = spec.timeout;
    let name = component.name.clone();
    // wasmtime calls are synchronous and may block on the network or a
    // command for up to the timeout.
    let joined = tokio::task::spawn_blocking(move || {
        plugins
            .instance(&component, timeout)
            .map(|p| p.check(scope, &request))
    })
    .await;
    match joined {
        Ok(Ok(Ok(r))) => match r.outcome {
            ProbeOutcome::Success => Attempt::Success,
            ProbeOutcome::Failure => Attempt::Failed(r.message),
        },
        Ok(Ok(Err(call))) => Attempt::Errored {
            message: format!("probe plugin {name}: {call}"),
            counted: true,
        },
        Ok(Err(load)) => Attempt::Errored {
            message: load.to_string(),
            counted: false,
        },
        Err(join) => Attempt::Errored {
            message: format!("probe plugin {name}: its call did not finish: {join}"),
            counted: true,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_runs_like_kubelet() {
        let mut c = Counter::new(2, 3);
        assert_eq!(c.observe(true), None);
        assert_eq!(c.observe(true), Some(true));
        assert_eq!(c.observe(true), Some(true), "past the threshold it stays");
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(
            c.observe(true),
            None,
            "a success breaks the run of failures"
        );
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), None);
        assert_eq!(c.observe(false), Some(false));
        assert_eq!(c.observe(false), Some(false));
    }
}
