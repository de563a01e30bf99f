//! Importing archives, resolving references, refusing bad archives, removal.

mod common;

use common::{docker_archive, gzip, rewrite_tar, tree, Layer};
use serde_json::json;
use trellis_image::{ImageError, ImageStore};

#[test]
fn imports_the_busybox_oci_layout_and_resolves_it() {
    let Some(tar) = common::busybox_tar() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let images = store.import(&tar).unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(image.references, ["docker.io/library/busybox:latest"]);
    assert_eq!(image.config.cmd, ["sh"]);
    assert!(image.config.entrypoint.is_empty());
    assert!(image
        .config
        .env
        .iter()
        .any(|e| e.starts_with("PATH=") && e.contains("/bin")));
    assert!(image.id.starts_with("sha256:") && image.digest.starts_with("sha256:"));
    assert!(
        image.size > 500_000,
        "busybox is about 1 MB compressed: {}",
        image.size
    );
    assert_eq!(
        image.repo_digests(),
        [format!("docker.io/library/busybox@{}", image.digest)]
    );

    let hex = &image.id[7..];
    let digest_ref = format!("docker.io/library/busybox@{}", image.digest);
    for r in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox:latest",
        image.id.as_str(),
        hex,
        &hex[..12],
        image.digest.as_str(),
        digest_ref.as_str(),
    ] {
        let found = store.resolve(r).unwrap();
        assert_eq!(found.as_ref(), Some(image), "resolve({r:?})");
    }
    assert_eq!(store.resolve("alpine").unwrap(), None);
    assert_eq!(store.resolve("busybox:1.36").unwrap(), None);
    assert!(matches!(
        store.resolve("Bad/Name"),
        Err(ImageError::Reference(_))
    ));

    // Importing again changes nothing; the same content gzip-compressed
    // (a `.tar.gz`) is the same image.
    let before = tree(dir.path());
    assert_eq!(store.import(&tar).unwrap(), images);
    let gz = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(gz.path(), gzip(&std::fs::read(&tar).unwrap())).unwrap();
    assert_eq!(store.import(gz.path()).unwrap(), images);
    assert_eq!(tree(dir.path()), before);
    assert_eq!(store.list().unwrap(), images);
}

#[test]
fn imports_a_docker_archive() {
    let l1 = Layer::new()
        .dir("app/", 0o755)
        .file("app/run.sh", 0o755, b"#!/bin/sh\necho hi\n")
        .finish();
    let l2 = Layer::new().file("app/data.txt", 0o644, b"data").finish();
    let archive = docker_archive(
        &[(l1, false), (l2, true)],
        json!({
            "Entrypoint": ["/app/run.sh"],
            "Cmd": ["--flag"],
            "Env": ["A=1", "PATH=/bin"],
            "WorkingDir": "/app",
            "User": "1000:1000",
        }),
        &["example.com/team/app:v1", "app:2"],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.tar");
    std::fs::write(&file, &archive).unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let images = store.import(&file).unwrap();
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert_eq!(
        image.references,
        ["docker.io/library/app:2", "example.com/team/app:v1"]
    );
    assert_eq!(image.config.entrypoint, ["/app/run.sh"]);
    assert_eq!(image.config.cmd, ["--flag"]);
    assert_eq!(image.config.env, ["A=1", "PATH=/bin"]);
    assert_eq!(image.config.working_dir, "/app");
    assert_eq!(image.config.user, "1000:1000");
    assert_eq!(store.resolve("app:2").unwrap().as_ref(), Some(image));
    assert_eq!(
        store.resolve("example.com/team/app:v1").unwrap().as_ref(),
        Some(image)
    );

    // A gzip-compressed docker-archive too.
    let gz = dir.path().join("app.tar.gz");
    std::fs::write(&gz, gzip(&archive)).unwrap();
    assert_eq!(store.import(&gz).unwrap(), images);
}

/// The store as it was before a failed import: same files, same sizes.
fn assert_refused(store: &ImageStore, root: &std::path::Path, archive: &[u8], expect: &str) {
    let before = tree(root);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), archive).unwrap();
    let err = store.import(file.path()).unwrap_err();
    assert!(matches!(err, ImageError::InvalidArchive { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(expect), "{msg:?} does not mention {expect:?}");
    assert!(msg.starts_with("cannot import "), "{msg}");
    assert_eq!(tree(root), before, "the store changed after: {msg}");
}

#[test]
fn refuses_corrupt_archives_and_leaves_the_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let layer = Layer::new().file("f", 0o644, b"hello").finish();
    let good = docker_archive(
        &[(layer.clone(), true)],
        json!({"Cmd": ["sh"]}),
        &["good:1"],
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &good).unwrap();
    store.import(file.path()).unwrap();

    // A layer whose bytes do not match the config's diff id.
    let other = Layer::new().file("f", 0o644, b"HELLO").finish();
    let wrong = rewrite_tar(&good, |name, data| {
        if name.ends_with("layer.tar") {
            gzip(&other)
        } else {
            data
        }
    });
    assert_refused(&store, dir.path(), &wrong, "the image config says");

    // A blob of an OCI layout that does not match its name.
    if let Some(tar) = common::busybox_tar() {
        let busybox = std::fs::read(tar).unwrap();
        let mut flipped = false;
        let corrupt = rewrite_tar(&busybox, |name, mut data| {
            if name.starts_with("blobs/sha256/") && data.len() > 100_000 {
                data[50_000] ^= 0xff;
                flipped = true;
            }
            data
        });
        assert!(flipped);
        assert_refused(&store, dir.path(), &corrupt, "corrupt or truncated content");
        // Cut in the middle.
        assert_refused(
            &store,
            dir.path(),
            &busybox[..busybox.len() / 2],
            "truncated",
        );
        // Fine content, but a manifest naming a blob the archive lacks.
        let missing = rewrite_tar(&busybox, |name, data| {
            if name.starts_with("blobs/sha256/") && data.len() > 100_000 {
                b"not the layer".to_vec()
            } else {
                data
            }
        });
        assert_refused(&store, dir.path(), &missing, "has digest");
    }
    assert_refused(
        &store,
        dir.path(),
        b"this is not a tar archive at all, not even close......",
        "not a tar archive",
    );
    assert_refused(
        &store,
        dir.path(),
        &Layer::new().file("x", 0o644, b"x").finish(),
        "neither index.json nor manifest.json",
    );
    assert_refused(
        &store,
        dir.path(),
        &docker_archive(&[(layer, false)], json!({}), &["Bad Name"]),
        "invalid reference format",
    );
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn refuses_a_path_traversal_layer() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let root = dir.path().join("store");
    for (layer, expect) in [
        (
            Layer::new()
                .file("ok", 0o644, b"x")
                .file("../../escaped-file", 0o644, b"x")
                .finish(),
            "\"../../escaped-file\" climbs out of the root filesystem",
        ),
        (
            Layer::new()
                .file("a/../../escaped-file", 0o644, b"x")
                .finish(),
            "climbs out of the root filesystem",
        ),
        (
            Layer::new()
                .hardlink("passwd", "../../../../etc/passwd")
                .finish(),
            "escapes the root filesystem",
        ),
    ] {
        let archive = docker_archive(&[(layer, true)], json!({}), &["evil:1"]);
        assert_refused(&store, &root, &archive, expect);
    }
    assert!(!dir.path().join("escaped-file").exists());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn removes_images_and_collects_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let shared = Layer::new().file("shared", 0o644, b"base").finish();
    let own = Layer::new().file("own", 0o644, b"mine").finish();
    let a = docker_archive(
        &[(shared.clone(), true)],
        json!({"Cmd": ["a"]}),
        &["a:1", "a:latest"],
    );
    let b = docker_archive(
        &[(shared, true), (own, true)],
        json!({"Cmd": ["b"]}),
        &["b:1"],
    );
    let fa = tempfile::NamedTempFile::new().unwrap();
    let fb = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(fa.path(), a).unwrap();
    std::fs::write(fb.path(), b).unwrap();
    let ia = store.import(fa.path()).unwrap().remove(0);
    let ib = store.import(fb.path()).unwrap().remove(0);
    let blobs = || {
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count()
    };
    // a: manifest, config, layer; b: manifest, config, its own layer.
    assert_eq!(blobs(), 6);

    // A name goes alone while the image has others.
    assert!(store.remove("a:1").unwrap());
    assert_eq!(
        store.resolve(&ia.id).unwrap().unwrap().references,
        ["docker.io/library/a:latest"]
    );
    assert_eq!(blobs(), 6);
    // By id, every name goes, and unshared content with them.
    assert!(store.remove(&ia.id).unwrap());
    assert_eq!(store.resolve("a").unwrap(), None);
    assert_eq!(blobs(), 4);
    assert_eq!(store.resolve("b:1").unwrap().unwrap(), ib);
    assert!(!store.remove("a:1").unwrap(), "removal is idempotent");
    assert!(store.remove("b:1").unwrap());
    assert_eq!(blobs(), 0);
    assert!(store.list().unwrap().is_empty());
}
