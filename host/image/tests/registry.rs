//! Push to and pull from a real registry: Debian's `docker-registry` on
//! 127.0.0.1 at a free port, with its storage in a temporary directory.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trellis_image::{ImageError, ImageStore, PullOptions, RegistryError};

/// A running `docker-registry`, killed (and its storage removed) on drop.
struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Option<Registry> {
        if !common::require(
            common::have("docker-registry"),
            "docker-registry (apt-get install docker-registry)",
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        // The port is free now; the registry binds it right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut registry = Registry { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = ureq::get(&format!("http://{}/v2/", registry.addr)).call() {
                if resp.status() == 200 {
                    return Some(registry);
                }
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}:\n{}",
                registry.addr,
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.path().join("registry.log"))
            .map(|mut f| f.read_to_string(&mut s));
        s
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("docker-registry log:\n{}", self.log());
        }
    }
}

fn store_in(dir: &Path, name: &str) -> ImageStore {
    ImageStore::open(&dir.join(name)).unwrap()
}

#[test]
fn push_then_pull_busybox_through_a_local_registry() {
    let Some(tar) = common::busybox_tar() else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = store_in(dir.path(), "source");
    let imported = source.import(&tar).unwrap().remove(0);
    let target = format!("{}/test/busybox:v1", registry.addr);
    let opts = PullOptions::default();
    let pushed = source.push("busybox", &target, &opts).unwrap();
    assert_eq!(pushed, imported.digest);
    // Pushing again sends no blob twice and succeeds.
    source.push(&imported.id, &target, &opts).unwrap();

    let node = store_in(dir.path(), "node");
    let pulled = node.pull(&target, &opts).unwrap();
    assert_eq!(pulled.id, imported.id);
    assert_eq!(pulled.digest, imported.digest);
    assert_eq!(pulled.references, std::slice::from_ref(&target));
    assert_eq!(pulled.config, imported.config);
    assert_eq!(node.resolve(&target).unwrap().as_ref(), Some(&pulled));
    // `localhost:PORT/...` is the same registry over plain HTTP as well.
    let by_name = target.replace("127.0.0.1", "localhost");
    assert_eq!(node.pull(&by_name, &opts).unwrap().id, imported.id);
    // By digest.
    let by_digest = format!("{}/test/busybox@{}", registry.addr, imported.digest);
    let p = node.pull(&by_digest, &opts).unwrap();
    assert_eq!(p.references.len(), 3);
    assert_eq!(node.resolve(&by_digest).unwrap().unwrap().id, imported.id);

    if common::root() {
        let c = dir.path().join("c");
        let _guard = common::RootfsGuard {
            store: &node,
            dirs: vec![c.clone()],
        };
        let r = node.prepare_rootfs(&pulled, &c).unwrap();
        assert_eq!(
            std::fs::read_link(r.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
    }
}

#[test]
fn pull_picks_this_platform_from_an_index() {
    let Some(tar) = common::busybox_tar() else {
        return;
    };
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = store_in(dir.path(), "source");
    let image = source.import(&tar).unwrap().remove(0);
    let opts = PullOptions::default();
    source
        .push(
            "busybox",
            &format!("{}/multi/busybox:single", registry.addr),
            &opts,
        )
        .unwrap();
    let manifest =
        std::fs::read(source.root().join("blobs/sha256").join(&image.digest[7..])).unwrap();
    let platform = trellis_image::Platform::host();
    // An index listing another platform first, then this one.
    let other = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.digest, "size": manifest.len(),
        "platform": {"architecture": "s390x-does-not-exist", "os": "linux"},
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [other, {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.digest, "size": manifest.len(),
            "platform": {"architecture": platform.architecture, "os": "linux"},
        }],
    });
    let resp = ureq::put(&format!(
        "http://{}/v2/multi/busybox/manifests/multi",
        registry.addr
    ))
    .header("Content-Type", "application/vnd.oci.image.index.v1+json")
    .send(serde_json::to_vec(&index).unwrap())
    .unwrap();
    assert_eq!(resp.status(), 201);

    let node = store_in(dir.path(), "node");
    let pulled = node
        .pull(&format!("{}/multi/busybox:multi", registry.addr), &opts)
        .unwrap();
    assert_eq!(pulled.digest, image.digest);
    assert_eq!(pulled.id, image.id);
    // An index with nothing for the wanted platform is refused.
    let err = node
        .pull(
            &format!("{}/multi/busybox:multi", registry.addr),
            &PullOptions {
                platform: Some(trellis_image::Platform {
                    architecture: "mips".into(),
                    os: "linux".into(),
                    variant: None,
                }),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no manifest for platform linux/mips"),
        "{err}"
    );
}

#[test]
fn pull_errors_read_like_kubelet() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), "node");
    let before = common::tree(store.root());
    let missing = format!("{}/nope/nothing", registry.addr);
    let err = store.pull(&missing, &PullOptions::default()).unwrap_err();
    let full = format!("{missing}:latest");
    assert_eq!(
        err.to_string(),
        format!("failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found")
    );
    assert!(matches!(&err, ImageError::Pull { cause, .. } if cause.is_not_found()));

    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = store
        .pull(&format!("127.0.0.1:{port}/x:v1"), &PullOptions::default())
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("failed to pull and unpack image \"127.0.0.1:{port}/x:v1\": failed to resolve reference \"127.0.0.1:{port}/x:v1\": failed to do request: GET \"http://127.0.0.1:{port}/v2/x/manifests/v1\": ")),
        "{msg}"
    );
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(matches!(
        err,
        ImageError::Pull {
            cause: RegistryError::Unreachable { .. },
            ..
        }
    ));
    assert_eq!(
        common::tree(store.root()),
        before,
        "a failed pull changed the store"
    );
}

/// A registry stand-in that wants a bearer token: it answers 401 with a
/// challenge, hands out a token at its realm, and then says the manifest is
/// not found. Records each request line with its Authorization header.
fn token_registry() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (log, realm) = (seen.clone(), format!("http://{addr}/token"));
    std::thread::spawn(move || {
        // Bounded: a pull makes 3 requests, over at most 3 connections, each
        // served on its own thread as a real registry would.
        for stream in listener.incoming().take(3) {
            let Ok(stream) = stream else { return };
            let (log, realm) = (log.clone(), realm.clone());
            std::thread::spawn(move || serve(stream, &log, &realm));
        }
    });
    (addr, seen)
}

fn serve(stream: std::net::TcpStream, log: &std::sync::Mutex<Vec<String>>, realm: &str) {
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("authorization:") {
                auth = v.trim().to_string();
            }
        }
        let request = line.trim().to_string();
        log.lock().unwrap().push(format!("{request} [{auth}]"));
        let (status, extra, body) = if request.starts_with("GET /token") {
            ("200 OK", String::new(), r#"{"token":"t0ken"}"#.to_string())
        } else if auth != "bearer t0ken" {
            (
                "401 Unauthorized",
                format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"test-registry\"\r\n"),
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                    .to_string(),
            )
        } else {
            (
                "404 Not Found",
                String::new(),
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_string(),
            )
        };
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

#[test]
fn pull_answers_a_bearer_token_challenge() {
    let (addr, seen) = token_registry();
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(dir.path(), "node");
    let err = store
        .pull(
            &format!("{addr}/team/app:v1"),
            &PullOptions {
                auth: Some(trellis_image::RegistryAuth {
                    username: "user".into(),
                    password: "pass".into(),
                }),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::Pull { cause, .. } if cause.is_not_found()),
        "{err}"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(seen[0], "GET /v2/team/app/manifests/v1 HTTP/1.1 []");
    // The token request names the repository scope and the service, and
    // carries the credentials (base64 of user:pass).
    assert_eq!(
        seen[1],
        "GET /token?scope=repository%3Ateam%2Fapp%3Apull&service=test-registry HTTP/1.1 [basic dxnlcjpwyxnz]"
    );
    assert_eq!(
        seen[2],
        "GET /v2/team/app/manifests/v1 HTTP/1.1 [bearer t0ken]"
    );
}
