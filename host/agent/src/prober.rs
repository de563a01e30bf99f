//! Container probes with kubelet's semantics, each run by a Wasm probe plugin.
//!
//! [`ContainerProbes::start`] probes one running container from its
//! Kubernetes spec (`startupProbe`, `livenessProbe`, `readinessProbe`, with
//! kubelet's defaults: `initialDelaySeconds` 0, `periodSeconds` 10,
//! `timeoutSeconds` 1, `successThreshold` 1, `failureThreshold` 3) and
//! publishes a [`ProbeStatus`]:
//!
//! - the startup probe runs first; liveness and readiness only once it
//!   succeeded (`started`), and it stops then;
//! - `ready` is false until the readiness probe's first success (true as soon
//!   as the container started when it has none), and false again after
//!   `failureThreshold` failures in a row;
//! - `restart` is set when the liveness or startup probe failed
//!   `failureThreshold` times in a row, with kubelet's message ("Container web
//!   failed liveness probe, will be restarted"); that probe then stops.
//!
//! Each failed attempt also yields a [`ProbeEvent`] (reason `Unhealthy`,
//! type Warning, "Liveness probe failed: HTTP probe failed with statuscode:
//! 500"), for the agent to record.
//!
//! Handlers run in the default plugins of [`ProbePlugins`]: `httpGet`
//! (`probe-http-get`), `tcpSocket` (`probe-tcp-socket`), `exec`
//! (`probe-exec`); `grpc` is not supported and says so in events. A probe can
//! instead name a custom probe plugin, a `Plugin` object with role `probe`,
//! through a pod annotation that replaces (or adds) that probe's handler:
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     probe.trellis.dev/web.readiness: '{"plugin": "redis-ping", "config": {"key": "health"}}'
//! ```
//!
//! The probe's timings still come from the container's `readinessProbe`
//! (kubelet's defaults when the container has none); `config` is sent to the
//! plugin as the request's config (the object's `spec.config` when absent);
//! an optional `memoryLimit` caps the plugin's memory. The plugin's grants
//! are the object's; its call deadline is the probe's `timeoutSeconds` plus
//! [`DEADLINE_MARGIN`]. The `Plugin` object is read when the container's
//! probes start, so an edited plugin applies from the next container start.
//!
//! As in kubelet, a probe the host cannot run at all (no handler, `grpc`, a
//! port name the container does not have, a custom plugin that cannot be
//! loaded) is reported as "errored" on each attempt but not counted; a plugin
//! that fails, traps, returns an error or runs past its deadline counts as a
//! failure.
//!
//! ```no_run
//! # async fn f(plugins: trellis_agent::prober::ProbePlugins, scope: trellis_plugin_host::PodScope, pod: serde_json::Value) {
//! use trellis_agent::prober::ContainerProbes;
//! let mut probes = ContainerProbes::start(&plugins, scope, &pod, "web", std::time::SystemTime::now());
//! let mut status = probes.status();
//! while status.changed().await.is_ok() {
//!     let s = status.borrow_and_update().clone();
//!     if let Some(why) = s.restart { /* kill and restart the container: why */ break; }
//!     // set the pod's Ready condition from s.ready
//! }
//! while let Ok(event) = probes.events().try_recv() { /* record event.message */ }
//! # }
//! ```

mod plugins;
mod spec;
mod worker;

use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use trellis_plugin_host::PodScope;

pub use plugins::{DefaultProbe, PluginObjects, ProbePluginError, ProbePlugins, DEADLINE_MARGIN};
pub use spec::ANNOTATION_PREFIX;

/// How many events wait for the agent before newer ones are dropped.
pub const EVENT_BUFFER: usize = 64;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// `livenessProbe`.
    Liveness,
    /// `readinessProbe`.
    Readiness,
    /// `startupProbe`.
    Startup,
}

impl ProbeKind {
    /// Every kind.
    pub const ALL: [ProbeKind; 3] = [
        ProbeKind::Liveness,
        ProbeKind::Readiness,
        ProbeKind::Startup,
    ];

    /// "liveness", "readiness" or "startup", as sent to plugins and used in
    /// annotations.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }

    /// "Liveness", "Readiness" or "Startup", as events spell it.
    pub fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }

    /// The container field: "livenessProbe", ...
    pub fn field(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Startup => "startupProbe",
        }
    }
}

/// What the probes say about one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStatus {
    /// The startup probe succeeded (true from the start without one): the
    /// container status' `started`.
    pub started: bool,
    /// Started and the readiness probe's last verdict was success (true once
    /// started without one): the container status' `ready`.
    pub ready: bool,
    /// The liveness or startup probe failed `failureThreshold` times in a
    /// row: the container must be restarted; kubelet's message for the
    /// `Killing` event, e.g. "Container web failed liveness probe, will be
    /// restarted".
    pub restart: Option<String>,
}

/// An event to record on the pod (type Warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The probe that produced it.
    pub probe: ProbeKind,
    /// The event's reason: `Unhealthy`.
    pub reason: &'static str,
    /// e.g. "Readiness probe failed: HTTP probe failed with statuscode: 500"
    /// or "Liveness probe errored: grpc probes are not supported ...".
    pub message: String,
}

/// The probes of one running container. Probing stops when it is dropped.
#[derive(Debug)]
pub struct ContainerProbes {
    status: watch::Receiver<ProbeStatus>,
    events: mpsc::Receiver<ProbeEvent>,
    _tasks: JoinSet<()>,
}

impl ContainerProbes {
    /// Start probing container `container` of `pod` (its JSON, for the
    /// container's spec and the `probe.trellis.dev/` annotations), which
    /// started running at `started_at` (`initialDelaySeconds` counts from
    /// there). `scope` is the pod's IP and containers, the only ones the
    /// plugins reach. A container without probes is started and ready at
    /// once; so is a container `pod` does not have. Must be called within a
    /// tokio runtime.
    pub fn start(
        plugins: &ProbePlugins,
        scope: PodScope,
        pod: &Value,
        container: &str,
        started_at: SystemTime,
    ) -> Self {
        let probes = spec::probes(pod, container);
        let has = |k: ProbeKind| probes.iter().any(|p| p.kind == k);
        let started = !has(ProbeKind::Startup);
        let initial = ProbeStatus {
            started,
            ready: started && !has(ProbeKind::Readiness),
            restart: None,
        };
        let (status_tx, status) = watch::channel(initial);
        let (events_tx, events) = mpsc::channel(EVENT_BUFFER);
        let ctx = std::sync::Arc::new(worker::Ctx {
            plugins: plugins.clone(),
            scope,
            container: container.to_string(),
            started_at,
            has_readiness: has(ProbeKind::Readiness),
            status: status_tx,
            events: events_tx,
        });
        let mut tasks = JoinSet::new();
        for p in probes {
            tasks.spawn(worker::run(ctx.clone(), p));
        }
        Self {
            status,
            events,
            _tasks: tasks,
        }
    }

    /// A receiver of the status, which changes as probes reach their
    /// thresholds. Its `changed()` fails once nothing can change it any more:
    /// the container has no probes, every probe finished, or this value was
    /// dropped.
    pub fn status(&self) -> watch::Receiver<ProbeStatus> {
        self.status.clone()
    }

    /// The status now.
    pub fn current(&self) -> ProbeStatus {
        self.status.borrow().clone()
    }

    /// Events to record, oldest first; at most [`EVENT_BUFFER`] wait, newer
    /// ones are dropped (and logged) while the buffer is full.
    pub fn events(&mut self) -> &mut mpsc::Receiver<ProbeEvent> {
        &mut self.events
    }
}
