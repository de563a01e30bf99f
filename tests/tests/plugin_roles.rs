//! The probe and controller roles through real plugins built with the SDK:
//! probes reach only their pod's IP through `pod-network`; a controller reads
//! and writes only the kinds it was granted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};

use trellis_plugin_host::controller::{Action, ControllerPlugin, ObjectKey};
use trellis_plugin_host::probe::{ProbeOutcome, ProbePlugin, ProbeRequest};
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{
    Capability, Grants, HostServices, LoadError, ObjectSink, ObjectSource, PluginSpec, PodScope,
};
use trellis_tests::*;

fn scope(ip: [u8; 4]) -> PodScope {
    PodScope {
        namespace: "default".into(),
        name: "web".into(),
        ip: IpAddr::V4(Ipv4Addr::from(ip)),
        containers: vec!["app".into()],
    }
}

fn request(config: serde_json::Value) -> ProbeRequest {
    ProbeRequest {
        pod_name: "web".into(),
        pod_namespace: "default".into(),
        pod_ip: "127.0.0.1".into(),
        container: "app".into(),
        kind: "readiness".into(),
        config: config.to_string(),
        timeout_ms: 1000,
    }
}

fn network() -> PluginSpec {
    PluginSpec::new("probe").grants(Grants::none().with(Capability::PodNetwork))
}

#[test]
fn tcp_probe_succeeds_on_an_open_port_and_fails_on_a_closed_one() {
    let engine = engine();
    let probe = ProbePlugin::load(&engine, &read_plugin("probe-tcp-socket"), network()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let r = probe
        .check(
            scope([127, 0, 0, 1]),
            &request(serde_json::json!({"tcpSocket": {"port": open}})),
        )
        .unwrap();
    assert_eq!(r.outcome, ProbeOutcome::Success, "{}", r.message);

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = probe
        .check(
            scope([127, 0, 0, 1]),
            &request(serde_json::json!({"tcpSocket": {"port": closed}})),
        )
        .unwrap();
    assert_eq!(r.outcome, ProbeOutcome::Failure);
    assert!(
        r.message
            .contains(&format!("dial tcp 127.0.0.1:{closed}: connect:")),
        "{}",
        r.message
    );

    // The plugin names only a port: the host dials the pod's own IP. A pod at
    // 127.0.0.2 does not reach the listener bound to 127.0.0.1.
    let r = probe
        .check(
            scope([127, 0, 0, 2]),
            &request(serde_json::json!({"tcpSocket": {"port": open}})),
        )
        .unwrap();
    assert_eq!(
        r.outcome,
        ProbeOutcome::Failure,
        "reached an address outside the pod"
    );

    let err = probe
        .check(
            scope([127, 0, 0, 1]),
            &request(serde_json::json!({"tcpSocket": {}})),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("tcpSocket.port must be a number"),
        "{err}"
    );
}

#[test]
fn a_probe_without_the_network_grant_does_not_load() {
    let engine = engine();
    let err = ProbePlugin::load(
        &engine,
        &read_plugin("probe-tcp-socket"),
        PluginSpec::new("p"),
    )
    .unwrap_err();
    assert!(
        matches!(&err, LoadError::NotGranted { import, .. } if import == "trellis:plugin/pod-network@0.4.0"),
        "{err:?}"
    );
}

/// Answers each connection with the next status in `statuses`.
fn http_server(statuses: Vec<u16>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for status in statuses {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /healthz HTTP/1.1\r\n"));
            let body = "ok";
            write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    port
}

#[test]
fn http_probe_follows_kubelet_status_rules() {
    let engine = engine();
    let probe = ProbePlugin::load(&engine, &read_plugin("probe-http-get"), network()).unwrap();
    let port = http_server(vec![200, 302, 503]);
    let cfg = serde_json::json!({"httpGet": {"path": "/healthz", "port": port}});
    let outcomes: Vec<_> = (0..3)
        .map(|_| {
            probe
                .check(scope([127, 0, 0, 1]), &request(cfg.clone()))
                .unwrap()
        })
        .collect();
    assert_eq!(outcomes[0].outcome, ProbeOutcome::Success);
    assert_eq!(outcomes[1].outcome, ProbeOutcome::Success);
    assert_eq!(outcomes[2].outcome, ProbeOutcome::Failure);
    assert_eq!(
        outcomes[2].message,
        "HTTP probe failed with statuscode: 503"
    );
}

#[derive(Default)]
struct Memory {
    objects: Mutex<HashMap<(String, String, String), serde_json::Value>>,
}

impl ObjectSource for Memory {
    fn get(&self, kind: &KindRef, ns: &str, name: &str) -> Result<String, ObjectError> {
        let m = self.objects.lock().unwrap();
        m.get(&(kind.kind.clone(), ns.into(), name.into()))
            .map(|v| v.to_string())
            .ok_or(ObjectError::NotFound)
    }
    fn list(&self, _: &KindRef, _: &str, _: &str) -> Result<Vec<String>, ObjectError> {
        Ok(vec![])
    }
}

impl ObjectSink for Memory {
    fn create(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::Unavailable("not used".into()))
    }
    fn update(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::Unavailable("not used".into()))
    }
    fn update_status(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::Unavailable("not used".into()))
    }
    fn merge_patch(
        &self,
        kind: &KindRef,
        ns: &str,
        name: &str,
        patch: &str,
    ) -> Result<String, ObjectError> {
        let mut m = self.objects.lock().unwrap();
        let obj = m
            .get_mut(&(kind.kind.clone(), ns.into(), name.into()))
            .ok_or(ObjectError::NotFound)?;
        let patch: serde_json::Value =
            serde_json::from_str(patch).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        let labels = &patch["metadata"]["labels"];
        for (k, v) in labels.as_object().unwrap() {
            obj["metadata"]["labels"][k] = v.clone();
        }
        Ok(obj.to_string())
    }
    fn delete(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<(), ObjectError> {
        Err(ObjectError::Unavailable("not used".into()))
    }
}

/// The test labeler, reading and writing ConfigMaps in `store`.
fn labeler(store: Arc<Memory>) -> ControllerPlugin {
    let spec = PluginSpec::new("labeler")
        .grants(
            Grants::none()
                .with(Capability::Log)
                .read("", "ConfigMap")
                .write("", "ConfigMap"),
        )
        .services(HostServices {
            objects: Some(store.clone()),
            writer: Some(store),
            exec: None,
        });
    ControllerPlugin::load(&engine(), &read_plugin("test-labeler"), spec).unwrap()
}

#[test]
fn a_controller_reads_and_writes_within_its_grants() {
    let store = Arc::new(Memory::default());
    store.objects.lock().unwrap().insert(
        ("ConfigMap".into(), "default".into(), "app".into()),
        serde_json::json!({"metadata": {"name": "app", "labels": {"a": "b"}}, "data": {}}),
    );
    store.objects.lock().unwrap().insert(
        ("Secret".into(), "default".into(), "app".into()),
        serde_json::json!({"metadata": {"name": "app"}}),
    );
    let c = labeler(store.clone());
    assert_eq!(c.info().name, "labeler");
    assert_eq!(c.info().primary.kind, "ConfigMap");
    let key = |n: &str| ObjectKey {
        namespace: "default".into(),
        name: n.into(),
    };
    assert_eq!(
        c.reconcile(&key("app")).unwrap(),
        Action::RequeueAfter(30_000)
    );
    let labels = store.objects.lock().unwrap()
        [&("ConfigMap".into(), "default".into(), "app".into())]["metadata"]["labels"]
        .clone();
    assert_eq!(
        labels,
        serde_json::json!({"a": "b", "trellis.dev/seen": "true"})
    );
    assert_eq!(c.reconcile(&key("app")).unwrap(), Action::AwaitChange);
    assert_eq!(c.reconcile(&key("gone")).unwrap(), Action::AwaitChange);
}

#[test]
fn a_controller_instance_is_kept_between_reconciles_and_dropped_after_a_trap() {
    let c = labeler(Arc::new(Memory::default()));
    let key = |n: &str| ObjectKey {
        namespace: "instance".into(),
        name: n.into(),
    };
    // The instance that answered `info` at load serves the reconciles after.
    assert_eq!(c.reconcile(&key("count")).unwrap(), Action::RequeueAfter(1));
    assert_eq!(c.reconcile(&key("count")).unwrap(), Action::RequeueAfter(2));
    let trap = c.reconcile(&key("trap")).unwrap_err();
    assert!(
        matches!(trap, trellis_plugin_host::CallError::Trapped { .. }),
        "{trap:?}"
    );
    // The trapped instance is gone: a fresh one counts from 1.
    assert_eq!(c.reconcile(&key("count")).unwrap(), Action::RequeueAfter(1));
    assert_eq!(c.reconcile(&key("count")).unwrap(), Action::RequeueAfter(2));
}
