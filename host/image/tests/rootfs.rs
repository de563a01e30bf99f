//! Root filesystems: overlay mounts over unpacked images (needs root).

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{docker_archive, Layer, RootfsGuard};
use serde_json::json;
use trellis_image::{Image, ImageError, ImageStore};

fn mount_count(path: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.display().to_string();
    info.lines()
        .filter(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .count()
}

fn snapshots(store: &ImageStore) -> Vec<PathBuf> {
    std::fs::read_dir(store.root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// As root, a store in a new temporary directory with busybox imported.
fn busybox_store() -> Option<(tempfile::TempDir, ImageStore, Image)> {
    if !common::root() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let tar = common::busybox_tar()?;
    store.import(&tar).unwrap();
    let image = store.resolve("busybox").unwrap().expect("busybox imported");
    Some((dir, store, image))
}

/// Kills a child process on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn busybox_rootfs_runs_and_keeps_writes_private() {
    let Some((dir, store, image)) = busybox_store() else {
        return;
    };
    let c1 = dir.path().join("c1");
    let c2 = dir.path().join("c2");
    let _guard = RootfsGuard {
        store: &store,
        dirs: vec![c1.clone(), c2.clone()],
    };

    let r1 = store.prepare_rootfs(&image, &c1).unwrap();
    assert_eq!(r1, c1.canonicalize().unwrap().join("rootfs"));
    // The overlay's options are relative to the container directory (short
    // mountinfo lines), its lowerdir a symlink to the snapshot.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(r1.to_str().unwrap()))
        .expect("r1 is mounted");
    assert!(
        line.ends_with(" - overlay overlay rw,lowerdir=lower,upperdir=upper,workdir=work")
            || line.contains("rw,lowerdir=lower,upperdir=upper,workdir=work,"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_link(c1.join("lower"))
            .unwrap()
            .parent()
            .unwrap(),
        store.root().join("snapshots")
    );
    let sh = std::fs::symlink_metadata(r1.join("bin/sh")).unwrap();
    assert!(sh.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(r1.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let bb = std::fs::metadata(r1.join("bin/busybox")).unwrap();
    assert_eq!(bb.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::metadata(r1.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert!(std::fs::read_to_string(r1.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0:"));

    // The image's shell runs in it, and its writes land in c1/upper only.
    let out = Command::new("chroot")
        .arg(&r1)
        .args([
            "/bin/sh",
            "-c",
            "echo private > /tmp/written && cat /tmp/written",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "private\n");
    assert!(c1.join("upper/tmp/written").exists());
    let snaps = snapshots(&store);
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].join("bin/busybox").exists());
    assert!(!snaps[0].join("tmp/written").exists());

    let r2 = store.prepare_rootfs(&image, &c2).unwrap();
    assert!(r2.join("bin/sh").exists() || std::fs::symlink_metadata(r2.join("bin/sh")).is_ok());
    assert!(
        !r2.join("tmp/written").exists(),
        "a write leaked to another container"
    );
    assert_eq!(snapshots(&store).len(), 1, "the image is unpacked once");

    // Preparing again re-adopts the mount.
    assert_eq!(store.prepare_rootfs(&image, &c1).unwrap(), r1);
    assert_eq!(mount_count(&r1), 1);

    // A process using the mount keeps it; once it is gone, release works,
    // and again.
    let sleeper = ChildGuard(
        Command::new("sleep")
            .arg("60")
            .current_dir(&r1)
            .spawn()
            .unwrap(),
    );
    let err = store.release_rootfs(&c1).unwrap_err();
    assert!(matches!(err, ImageError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("busy"), "{err}");
    drop(sleeper);
    store.release_rootfs(&c1).unwrap();
    assert_eq!(mount_count(&r1), 0);
    assert!(!c1.exists());
    store.release_rootfs(&c1).unwrap();

    // Removing the image keeps the snapshot c2 still mounts; releasing c2
    // lets the next collection take it.
    assert!(store.remove("busybox").unwrap());
    store.gc().unwrap();
    assert_eq!(snapshots(&store).len(), 1);
    assert!(std::fs::symlink_metadata(r2.join("bin/sh")).is_ok());
    store.release_rootfs(&c2).unwrap();
    store.gc().unwrap();
    assert!(snapshots(&store).is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

/// The agent stages root filesystems and its shims mount them in their own
/// mount namespaces, out of the store's sight: a staged directory keeps its
/// snapshot through garbage collection until it is released.
#[test]
fn a_staged_rootfs_keeps_its_snapshot_until_released() {
    let Some((dir, store, image)) = busybox_store() else {
        return;
    };
    let c = dir.path().join("c");
    let _guard = RootfsGuard {
        store: &store,
        dirs: vec![c.clone()],
    };
    let staged = store.stage_rootfs(&image, &c).unwrap();
    assert_eq!(staged.dir, c.canonicalize().unwrap());
    let rootfs = staged.dir.join("rootfs");
    assert_eq!(staged.rootfs, rootfs);
    assert!(!trellis_image::is_mount_point(&rootfs).unwrap());
    assert_eq!(std::fs::read_dir(&rootfs).unwrap().count(), 0);
    let snaps = snapshots(&store);
    assert_eq!(snaps.len(), 1);
    assert_eq!(staged.snapshot, snaps[0]);
    assert_eq!(
        std::fs::read_link(staged.dir.join("lower")).unwrap(),
        snaps[0]
    );
    // Staging again changes nothing.
    assert_eq!(store.stage_rootfs(&image, &c).unwrap(), staged);

    // The image goes; its snapshot stays while the staged directory uses it.
    assert!(store.remove("busybox").unwrap());
    store.gc().unwrap();
    assert_eq!(snapshots(&store), snaps);

    // Mounted wherever the caller is, once however often asked.
    assert_eq!(trellis_image::mount_rootfs(&staged.dir).unwrap(), rootfs);
    assert_eq!(trellis_image::mount_rootfs(&staged.dir).unwrap(), rootfs);
    assert_eq!(mount_count(&rootfs), 1);
    assert!(rootfs.join("bin/busybox").exists());

    store.release_rootfs(&c).unwrap();
    assert_eq!(mount_count(&rootfs), 0);
    assert!(!c.exists());
    store.gc().unwrap();
    assert!(snapshots(&store).is_empty());
    assert!(!store
        .root()
        .join("users")
        .join(snaps[0].file_name().unwrap())
        .exists());
}

#[test]
fn concurrent_prepares_unpack_once() {
    let Some((dir, store, image)) = busybox_store() else {
        return;
    };
    let dirs: Vec<PathBuf> = (0..4).map(|i| dir.path().join(format!("c{i}"))).collect();
    let _guard = RootfsGuard {
        store: &store,
        dirs: dirs.clone(),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| {
                let store = store.clone();
                let image = image.clone();
                s.spawn(move || store.prepare_rootfs(&image, d))
            })
            .collect();
        for h in handles {
            let r = h.join().unwrap().unwrap();
            assert!(std::fs::symlink_metadata(r.join("bin/sh")).is_ok());
        }
    });
    assert_eq!(snapshots(&store).len(), 1);
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn whiteouts_metadata_and_links_across_two_layers() {
    if !common::root() {
        return;
    }
    let unique = format!("trellis-image-test-{}", std::process::id());
    let l1 = Layer::new()
        .dir("./", 0o755)
        .dir("a/", 0o755)
        .file("a/gone", 0o644, b"gone")
        .file("a/kept", 0o640, b"kept")
        .dir("b/", 0o755)
        .file("b/old1", 0o644, b"old")
        .dir("b/sub/", 0o755)
        .file("b/sub/old2", 0o644, b"old")
        .dir("bin/", 0o755)
        .file_owned("bin/tool", 0o4755, 1000, 2000, b"#!/bin/sh\n")
        .symlink("link", "a/kept")
        .hardlink("hard", "a/kept")
        .fifo("pipe")
        .char_device("null", 1, 3)
        .file("replaced", 0o644, b"file")
        .dir("d/", 0o700)
        .file("d/x", 0o644, b"x")
        .finish();
    let l2 = Layer::new()
        .file("a/.wh.gone", 0o644, b"")
        .file("b/early", 0o644, b"early")
        .dir("b/sub/", 0o755)
        .file("b/sub/fresh", 0o644, b"fresh")
        .file("b/.wh..wh..opq", 0o644, b"")
        .file("b/new", 0o644, b"new")
        .dir("replaced/", 0o755)
        .file("replaced/inner", 0o644, b"inner")
        .file("d", 0o600, b"now a file")
        .file(".wh.never-existed", 0o644, b"")
        .symlink("escape", "/")
        .file(&format!("escape/tmp/{unique}"), 0o644, b"inside")
        .symlink("up", "../../../../..")
        .file(&format!("up/etc/{unique}"), 0o644, b"inside")
        .finish();
    let archive = docker_archive(
        &[(l1, true), (l2, false)],
        json!({"Cmd": ["/bin/tool"]}),
        &["layers:test"],
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("layers.tar");
    std::fs::write(&file, archive).unwrap();
    let store = ImageStore::open(&dir.path().join("store")).unwrap();
    let image = store.import(&file).unwrap().remove(0);
    let c = dir.path().join("c");
    let _guard = RootfsGuard {
        store: &store,
        dirs: vec![c.clone()],
    };
    let r = store.prepare_rootfs(&image, &c).unwrap();

    let names = |p: &str| {
        let mut v: Vec<String> = std::fs::read_dir(r.join(p))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("a"), ["kept"]);
    assert_eq!(names("b"), ["early", "new", "sub"]);
    assert_eq!(names("b/sub"), ["fresh"]);
    assert_eq!(std::fs::read_to_string(r.join("b/early")).unwrap(), "early");
    assert!(std::fs::metadata(r.join("replaced")).unwrap().is_dir());
    assert_eq!(
        std::fs::read_to_string(r.join("replaced/inner")).unwrap(),
        "inner"
    );
    assert_eq!(std::fs::read_to_string(r.join("d")).unwrap(), "now a file");
    assert!(!r.join(".wh.never-existed").exists());

    let tool = std::fs::metadata(r.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((tool.uid(), tool.gid()), (1000, 2000));
    let kept = std::fs::metadata(r.join("a/kept")).unwrap();
    assert_eq!(kept.permissions().mode() & 0o7777, 0o640);
    assert_eq!(kept.mtime(), 1_000_000);
    assert_eq!(
        std::fs::read_link(r.join("link")).unwrap(),
        Path::new("a/kept")
    );
    assert!(std::fs::metadata(r.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = std::fs::metadata(r.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));

    // Links are links in the unpacked snapshot.
    let snap = snapshots(&store).remove(0);
    assert_eq!(
        std::fs::metadata(snap.join("hard")).unwrap().ino(),
        std::fs::metadata(snap.join("a/kept")).unwrap().ino()
    );
    // Writes through symlinks to `/` stayed inside the image.
    assert_eq!(
        std::fs::read_to_string(r.join("tmp").join(&unique)).unwrap(),
        "inside"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc").join(&unique)).unwrap(),
        "inside"
    );
    assert!(!Path::new("/tmp").join(&unique).exists());
    assert!(!Path::new("/etc").join(&unique).exists());
}
