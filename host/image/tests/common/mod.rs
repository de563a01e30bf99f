//! Shared test helpers: prerequisites, the busybox image, and builders for
//! small layers and archives.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Whether a missing prerequisite fails the test (under CI) or skips it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `true` when `ok`; otherwise fails under `CI=true` and skips (false) elsewhere.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !ci(),
        "prerequisite missing (CI=true makes this a failure): {what}"
    );
    eprintln!("skipping: {what}");
    false
}

/// Whether we may mount (overlay needs root).
pub fn root() -> bool {
    require(
        rustix::process::geteuid().is_root(),
        "root is needed for overlay mounts",
    )
}

pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The busybox OCI layout tar made by `dev/busybox-image.sh`, built once
/// per test process. `None` (skip) when busybox-static is missing outside CI.
pub fn busybox_tar() -> Option<PathBuf> {
    static TAR: OnceLock<Option<PathBuf>> = OnceLock::new();
    TAR.get_or_init(|| {
        let has_static = ["/bin/busybox", "/usr/bin/busybox"].iter().any(|p| {
            Path::new(p).exists()
                && !Command::new("ldd")
                    .arg(p)
                    .output()
                    .is_ok_and(|o| o.status.success())
        });
        if !require(
            has_static,
            "busybox-static (apt-get install busybox-static)",
        ) {
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dev/busybox-image.sh");
        // The script writes a temporary file and renames it: test processes
        // building at once each get a whole (and identical) file.
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox.tar");
        let status = Command::new("bash")
            .arg(&script)
            .arg(&out)
            .status()
            .expect("run dev/busybox-image.sh");
        assert!(status.success(), "dev/busybox-image.sh failed");
        Some(out)
    })
    .clone()
}

/// Every file under `dir` with its size (and link target), for comparing a
/// store before and after.
pub fn tree(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if m.is_dir() {
                out.push((format!("{rel}/"), 0));
                walk(base, &p, out);
            } else {
                out.push((rel, m.len()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

pub fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A layer tar written entry by entry, names taken verbatim (so a test can
/// write `../escape`).
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        assert!(bytes.len() < 100, "test names are short");
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h
    }

    fn append(mut self, mut h: tar::Header, data: &[u8]) -> Layer {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, name: &str, mode: u32) -> Layer {
        let h = Self::header(name, tar::EntryType::Directory, mode, 0);
        self.append(h, &[])
    }

    pub fn file(self, name: &str, mode: u32, data: &[u8]) -> Layer {
        self.file_owned(name, mode, 0, 0, data)
    }

    pub fn file_owned(self, name: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Layer {
        let mut h = Self::header(name, tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.append(h, data)
    }

    fn link(self, name: &str, kind: tar::EntryType, target: &str) -> Layer {
        let mut h = Self::header(name, kind, 0o777, 0);
        let t = target.as_bytes();
        h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        self.append(h, &[])
    }

    pub fn symlink(self, name: &str, target: &str) -> Layer {
        self.link(name, tar::EntryType::Symlink, target)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Layer {
        self.link(name, tar::EntryType::Link, target)
    }

    pub fn fifo(self, name: &str) -> Layer {
        let h = Self::header(name, tar::EntryType::Fifo, 0o600, 0);
        self.append(h, &[])
    }

    pub fn char_device(self, name: &str, major: u32, minor: u32) -> Layer {
        let mut h = Self::header(name, tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, &[])
    }

    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A `docker save` archive of one image: layers (uncompressed tars, stored
/// gzip-compressed when the flag says so) with a config whose `config`
/// object is `run`.
pub fn docker_archive(
    layers: &[(Vec<u8>, bool)],
    run: serde_json::Value,
    repo_tags: &[&str],
) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|(l, _)| sha256(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    let mut layer_names = Vec::new();
    for (i, (l, gz)) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        if *gz {
            add(&name, &gzip(l));
        } else {
            add(&name, l);
        }
        layer_names.push(name);
    }
    add(&config_name, &config);
    let manifest = json!([{ "Config": config_name, "RepoTags": repo_tags, "Layers": layer_names }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap()
}

/// Rewrites a tar, passing each entry's data through `f(name, data)`.
pub fn rewrite_tar(input: &[u8], mut f: impl FnMut(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    use std::io::Read;
    let mut ar = tar::Archive::new(input);
    let mut b = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let data = f(&name, data);
        let mut h = e.header().clone();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Unmounts and removes root filesystems on drop, also when a test fails.
pub struct RootfsGuard<'a> {
    pub store: &'a trellis_image::ImageStore,
    pub dirs: Vec<PathBuf>,
}

impl Drop for RootfsGuard<'_> {
    fn drop(&mut self) {
        for d in &self.dirs {
            if let Err(e) = self.store.release_rootfs(d) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}
