//! Applying layer tars to a directory, safely.
//!
//! Layers are applied in order onto one tree (the image is flattened), so
//! whiteouts are carried out rather than kept: `.wh.NAME` deletes `NAME`
//! from the layers below, and `.wh..wh..opq` empties its directory of
//! everything the layers below put there.
//!
//! Nothing is written outside the tree: an entry whose name climbs out of
//! it (`../x`) or a hard link to outside it is refused, and every parent
//! directory is resolved as if the tree were `/` (a symlink to `/etc` in a
//! layer leads to the tree's `etc`, as it will in the container). The last
//! component of a path is never followed: an entry replaces whatever is
//! there. Modes (with setuid/setgid/sticky), owners, modification times,
//! symlinks, hard links, device nodes, FIFOs and extended attributes (PAX
//! `SCHILY.xattr.*`) are kept; owners and device nodes only when running as
//! root (otherwise owners are left as the current user and device nodes
//! skipped, with a debug log).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::digest::{Digest, HashingReader};
use crate::oci::ContentError;

/// Most symlinks followed resolving one path, as Linux' limit.
const MAX_SYMLINKS: u32 = 40;

/// A layer could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// An entry's name leads outside the root filesystem.
    #[error("layer {layer}: entry {path:?} escapes the root filesystem (path traversal)")]
    PathTraversal {
        /// The layer digest (or file).
        layer: String,
        /// The entry's name.
        path: String,
    },
    /// A hard link's target leads outside the root filesystem, or is absent.
    #[error("layer {layer}: hard link {path:?} -> {target:?}: {reason}")]
    BadHardLink {
        /// The layer.
        layer: String,
        /// The link's name.
        path: String,
        /// Its target.
        target: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Symlinks loop (or nest too deep) while resolving a path.
    #[error("layer {layer}: too many levels of symbolic links resolving {path:?}")]
    SymlinkLoop {
        /// The layer.
        layer: String,
        /// The path.
        path: String,
    },
    /// Reading the layer or writing the tree failed.
    #[error("layer {layer}: {context}: {error}")]
    Io {
        /// The layer.
        layer: String,
        /// What was being done.
        context: String,
        /// The error.
        error: io::Error,
    },
    /// The layer is not what its config says (diff id), or is compressed in a
    /// way the store cannot read.
    #[error("{0}")]
    Content(ContentError),
}

/// Opens a layer blob, decompressing gzip (told by its magic number, as
/// registries do not always label layers right).
pub(crate) fn open_layer(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut r = BufReader::with_capacity(1 << 16, File::open(path)?);
    let head = r.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd-compressed layers are not supported",
        ))
    } else {
        Ok(Box::new(r))
    }
}

/// Reads a layer through without writing anything: its diff id, after
/// checking that no entry name or hard link target climbs out of the root.
pub(crate) fn check_layer(path: &Path, name: &str) -> Result<Digest, UnpackError> {
    let io_err = |context: &str, error| UnpackError::Io {
        layer: name.to_string(),
        context: context.to_string(),
        error,
    };
    let r = open_layer(path).map_err(|e| io_err("cannot open", e))?;
    let mut hashing = HashingReader::new(r);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive
            .entries()
            .map_err(|e| io_err("cannot read the tar", e))?
        {
            let entry = entry.map_err(|e| io_err("cannot read the tar", e))?;
            let raw = entry.path_bytes();
            if clean(Path::new(OsStr::from_bytes(&raw))).is_none() {
                return Err(UnpackError::PathTraversal {
                    layer: name.to_string(),
                    path: String::from_utf8_lossy(&raw).into_owned(),
                });
            }
            if entry.header().entry_type() == tar::EntryType::Link {
                let target = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                if clean(Path::new(OsStr::from_bytes(&target))).is_none() {
                    return Err(UnpackError::BadHardLink {
                        layer: name.to_string(),
                        path: String::from_utf8_lossy(&raw).into_owned(),
                        target: String::from_utf8_lossy(&target).into_owned(),
                        reason: "the target escapes the root filesystem (path traversal)",
                    });
                }
            }
        }
    }
    hashing
        .finish()
        .map(|(d, _)| d)
        .map_err(|e| io_err("cannot read the tar", e))
}

/// Applies the layer blob at `layer` (named `name` in errors) to the tree
/// at `root`, checking that it uncompresses to `diff_id`.
pub(crate) fn apply_layer(
    root: &Path,
    layer: &Path,
    name: &str,
    diff_id: &Digest,
) -> Result<(), UnpackError> {
    let io_err = |context: &str, error| UnpackError::Io {
        layer: name.to_string(),
        context: context.to_string(),
        error,
    };
    let reader = open_layer(layer).map_err(|e| io_err("cannot open", e))?;
    let mut hashing = HashingReader::new(reader);
    let mut applier = Applier {
        root: root.to_path_buf(),
        layer: name.to_string(),
        written: HashSet::new(),
        dirs: Vec::new(),
        root_user: rustix::process::geteuid().is_root(),
    };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let entries = archive
            .entries()
            .map_err(|e| io_err("cannot read the tar", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| io_err("cannot read the tar", e))?;
            applier.apply(&mut entry)?;
        }
    }
    let (actual, _) = hashing
        .finish()
        .map_err(|e| io_err("cannot read the tar", e))?;
    if &actual != diff_id {
        return Err(UnpackError::Content(ContentError::DiffIdMismatch {
            layer: Digest::parse(name).unwrap_or_else(|_| actual.clone()),
            expected: diff_id.clone(),
            actual,
        }));
    }
    applier.finish()
}

/// Resolves `path` inside `root` as if `root` were `/`: symlinks in it are
/// followed but cannot lead out of `root`, and `..` stops at `root`. The
/// result is inside `root` (at the time of the call; a process changing the
/// tree meanwhile could move it). Components that do not exist are kept as
/// they are. Use it to find where a path inside an unpacked or mounted root
/// filesystem really is before writing there.
pub fn secure_join(root: &Path, path: &Path) -> io::Result<PathBuf> {
    resolve(root, path).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "too many levels of symbolic links resolving {}",
                path.display()
            ),
        )
    })
}

/// `Err(())` on a symlink loop.
fn resolve(root: &Path, path: &Path) -> Result<PathBuf, ()> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: Vec<OsString> = Vec::new(); // reversed: next component last
    push_components(&mut todo, path);
    let mut hops = 0;
    let mut missing = false;
    while let Some(c) = todo.pop() {
        if c == ".." {
            done.pop();
            continue;
        }
        if missing {
            done.push(c);
            continue;
        }
        let here: PathBuf = root.join(done.iter().collect::<PathBuf>()).join(&c);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(());
                }
                let Ok(target) = fs::read_link(&here) else {
                    done.push(c);
                    continue;
                };
                if target.is_absolute() {
                    done.clear();
                }
                push_components(&mut todo, &target);
            }
            Ok(_) => done.push(c),
            Err(_) => {
                missing = true;
                done.push(c);
            }
        }
    }
    Ok(root.join(done.iter().collect::<PathBuf>()))
}

/// Pushes `path`'s components onto a reversed stack (`..` kept as `..`).
fn push_components(stack: &mut Vec<OsString>, path: &Path) {
    let comps: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    stack.extend(comps.into_iter().rev());
}

/// The lexically cleaned relative form of a tar name; `None` if it climbs
/// above the root.
fn clean(name: &Path) -> Option<PathBuf> {
    let mut out: Vec<&OsStr> = Vec::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop()?;
            }
            _ => {}
        }
    }
    Some(out.iter().collect())
}

struct Applier {
    root: PathBuf,
    layer: String,
    /// Cleaned names this layer wrote, for opaque directories.
    written: HashSet<PathBuf>,
    /// Directories whose mode and times are set once the layer is done
    /// (writing into them would change their times; a read-only mode would
    /// stop a non-root unpacker from filling them).
    dirs: Vec<(PathBuf, u32, u64)>,
    root_user: bool,
}

/// What an entry's headers say about its metadata.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Applier {
    fn io(&self, context: String, error: io::Error) -> UnpackError {
        UnpackError::Io {
            layer: self.layer.clone(),
            context,
            error,
        }
    }

    fn resolve(&self, rel: &Path) -> Result<PathBuf, UnpackError> {
        resolve(&self.root, rel).map_err(|_| UnpackError::SymlinkLoop {
            layer: self.layer.clone(),
            path: rel.display().to_string(),
        })
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        use tar::EntryType as T;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let rel = clean(Path::new(OsStr::from_bytes(&raw))).ok_or_else(|| {
            UnpackError::PathTraversal {
                layer: self.layer.clone(),
                path: shown.clone(),
            }
        })?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let meta = self.meta(entry, &shown)?;

        let Some(file_name) = rel.file_name().map(OsStr::to_os_string) else {
            // The root itself (`./`).
            if kind == T::Directory {
                self.chown(&self.root.clone(), &meta)?;
                self.dirs.push((self.root.clone(), meta.mode, meta.mtime));
            }
            return Ok(());
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if let Some(hidden) = file_name.as_bytes().strip_prefix(b".wh.") {
            if hidden == b".wh..opq" {
                return self.opaque(&parent_rel);
            }
            if hidden.starts_with(b".wh.") {
                // aufs' own bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`).
                return Ok(());
            }
            return self.whiteout(&parent_rel.join(OsStr::from_bytes(hidden)));
        }

        let parent = self.resolve(&parent_rel)?;
        fs::create_dir_all(&parent)
            .map_err(|e| self.io(format!("cannot create the parent of {shown:?}"), e))?;
        let target = parent.join(&file_name);
        self.written.insert(rel.clone());

        match kind {
            T::Directory => {
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.remove(&target, &shown)?;
                        self.mkdir(&target, &shown)?;
                    }
                    Err(_) => self.mkdir(&target, &shown)?,
                }
                self.chown(&target, &meta)?;
                self.set_xattrs(&target, &meta);
                self.dirs.push((target, meta.mode, meta.mtime));
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.remove(&target, &shown)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                    .open(&target)
                    .map_err(|e| self.io(format!("cannot create {shown:?}"), e))?;
                io::copy(entry, &mut f)
                    .map_err(|e| self.io(format!("cannot write {shown:?}"), e))?;
                if self.root_user {
                    rustix::fs::fchown(
                        &f,
                        Some(rustix::fs::Uid::from_raw(meta.uid)),
                        Some(rustix::fs::Gid::from_raw(meta.gid)),
                    )
                    .map_err(|e| self.io(format!("cannot chown {shown:?}"), e.into()))?;
                }
                f.set_permissions(fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| self.io(format!("cannot chmod {shown:?}"), e))?;
                self.set_xattrs(&target, &meta);
                f.set_modified(mtime(meta.mtime))
                    .map_err(|e| self.io(format!("cannot set the time of {shown:?}"), e))?;
            }
            T::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .map(|b| OsStr::from_bytes(&b).to_os_string())
                    .unwrap_or_default();
                self.remove(&target, &shown)?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| self.io(format!("cannot create symlink {shown:?}"), e))?;
                self.chown(&target, &meta)?;
                self.set_times(&target, meta.mtime, &shown)?;
            }
            T::Link => {
                let link_raw = entry
                    .link_name_bytes()
                    .map(|b| b.into_owned())
                    .unwrap_or_default();
                let link_display = String::from_utf8_lossy(&link_raw).into_owned();
                let bad = |reason| UnpackError::BadHardLink {
                    layer: self.layer.clone(),
                    path: shown.clone(),
                    target: link_display.clone(),
                    reason,
                };
                let link_rel = clean(Path::new(OsStr::from_bytes(&link_raw))).ok_or_else(|| {
                    bad("the target escapes the root filesystem (path traversal)")
                })?;
                let Some(link_name) = link_rel.file_name() else {
                    return Err(bad("the target is the root directory"));
                };
                let source = self
                    .resolve(link_rel.parent().unwrap_or(Path::new("")))?
                    .join(link_name);
                match fs::symlink_metadata(&source) {
                    Ok(m) if m.is_dir() => return Err(bad("the target is a directory")),
                    Ok(_) => {}
                    Err(_) => return Err(bad("the target does not exist")),
                }
                if source != target {
                    self.remove(&target, &shown)?;
                    fs::hard_link(&source, &target)
                        .map_err(|e| self.io(format!("cannot create hard link {shown:?}"), e))?;
                }
            }
            T::Char | T::Block | T::Fifo => {
                use rustix::fs::FileType;
                self.remove(&target, &shown)?;
                let file_type = match kind {
                    T::Char => FileType::CharacterDevice,
                    T::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let made = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    file_type,
                    rustix::fs::Mode::from_raw_mode(meta.mode),
                    rustix::fs::makedev(major, minor),
                );
                match made {
                    Ok(()) => {}
                    Err(e) if !self.root_user && kind != T::Fifo => {
                        tracing::debug!(path = %shown, error = %e, "device node skipped (not root)");
                        return Ok(());
                    }
                    Err(e) => return Err(self.io(format!("cannot create {shown:?}"), e.into())),
                }
                self.chown(&target, &meta)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| self.io(format!("cannot chmod {shown:?}"), e))?;
                self.set_xattrs(&target, &meta);
                self.set_times(&target, meta.mtime, &shown)?;
            }
            other => {
                tracing::debug!(path = %shown, kind = ?other, "tar entry of unknown type skipped");
            }
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<R>, shown: &str) -> Result<Meta, UnpackError> {
        let bad = |e: io::Error| self.io(format!("bad tar header for {shown:?}"), e);
        let h = entry.header();
        let mut meta = Meta {
            mode: h.mode().map_err(bad)? & 0o7777,
            uid: h.uid().map_err(bad)? as u32,
            gid: h.gid().map_err(bad)? as u32,
            mtime: h.mtime().unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax.flatten() {
                let value = ext.value_bytes();
                let num = || -> Option<u64> {
                    let s = std::str::from_utf8(value).ok()?;
                    s.split('.').next()?.parse().ok()
                };
                match ext.key_bytes() {
                    b"uid" => meta.uid = num().map_or(meta.uid, |v| v as u32),
                    b"gid" => meta.gid = num().map_or(meta.gid, |v| v as u32),
                    b"mtime" => meta.mtime = num().unwrap_or(meta.mtime),
                    k => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            // Overlay's own attributes would change how the
                            // tree mounts.
                            if !name.starts_with(b"trusted.overlay.") {
                                meta.xattrs
                                    .push((OsStr::from_bytes(name).to_os_string(), value.to_vec()));
                            }
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    fn mkdir(&self, path: &Path, shown: &str) -> Result<(), UnpackError> {
        fs::create_dir(path).map_err(|e| self.io(format!("cannot create directory {shown:?}"), e))
    }

    /// Removes whatever is at `path` (not following a symlink there).
    fn remove(&self, path: &Path, shown: &str) -> Result<(), UnpackError> {
        match fs::symlink_metadata(path) {
            Err(_) => Ok(()),
            Ok(m) if m.is_dir() => crate::store::remove_tree(path).map_err(|e| match e {
                crate::ImageError::Io { error, .. } => {
                    self.io(format!("cannot replace {shown:?}"), error)
                }
                other => self.io(
                    format!("cannot replace {shown:?}"),
                    io::Error::other(other.to_string()),
                ),
            }),
            Ok(_) => {
                fs::remove_file(path).map_err(|e| self.io(format!("cannot replace {shown:?}"), e))
            }
        }
    }

    fn chown(&self, path: &Path, meta: &Meta) -> Result<(), UnpackError> {
        if !self.root_user {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
            .map_err(|e| self.io(format!("cannot chown {}", path.display()), e))
    }

    fn set_xattrs(&self, path: &Path, meta: &Meta) {
        for (name, value) in &meta.xattrs {
            if let Err(e) = rustix::fs::lsetxattr(
                path,
                name.as_os_str(),
                value,
                rustix::fs::XattrFlags::empty(),
            ) {
                tracing::debug!(path = %path.display(), xattr = ?name, error = %e, "extended attribute not set");
            }
        }
    }

    fn set_times(&self, path: &Path, secs: u64, shown: &str) -> Result<(), UnpackError> {
        let t = rustix::fs::Timespec {
            tv_sec: secs as i64,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &rustix::fs::Timestamps {
                last_access: t,
                last_modification: t,
            },
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io(format!("cannot set the time of {shown:?}"), e.into()))
    }

    /// `.wh.NAME`: deletes `NAME` from the layers below.
    fn whiteout(&mut self, rel: &Path) -> Result<(), UnpackError> {
        let (Some(name), Some(parent)) = (rel.file_name(), rel.parent()) else {
            return Ok(());
        };
        let target = self.resolve(parent)?.join(name);
        self.remove(&target, &rel.display().to_string())
    }

    /// `.wh..wh..opq`: deletes from `dir` everything this layer did not write.
    fn opaque(&mut self, dir_rel: &Path) -> Result<(), UnpackError> {
        let dir = self.resolve(dir_rel)?;
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
        let mut stack = vec![(dir, dir_rel.to_path_buf())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = fs::read_dir(&dir)
                .map_err(|e| self.io(format!("cannot list {}", rel.display()), e))?;
            for e in entries {
                let e = e.map_err(|e| self.io(format!("cannot list {}", rel.display()), e))?;
                let child_rel = rel.join(e.file_name());
                let child = e.path();
                if !self.written.contains(&child_rel) {
                    self.remove(&child, &child_rel.display().to_string())?;
                } else if fs::symlink_metadata(&child).is_ok_and(|m| m.is_dir()) {
                    stack.push((child, child_rel));
                }
            }
        }
        Ok(())
    }

    /// Sets directory modes and times, deepest first.
    fn finish(mut self) -> Result<(), UnpackError> {
        self.dirs
            .sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
        for (path, mode, mtime) in &self.dirs {
            let shown = path.display().to_string();
            // The sort is stable: a directory listed twice ends with its
            // last entry's mode and time.
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(|e| self.io(format!("cannot chmod {shown}"), e))?;
            self.set_times(path, *mtime, &shown)?;
        }
        Ok(())
    }
}

fn mtime(secs: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_names() {
        assert_eq!(clean(Path::new("./a/b/")), Some(PathBuf::from("a/b")));
        assert_eq!(clean(Path::new("/a/../b")), Some(PathBuf::from("b")));
        assert_eq!(clean(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(clean(Path::new("../x")), None);
        assert_eq!(clean(Path::new("a/../../x")), None);
    }

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("/host/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("lib/x")).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            secure_join(root, Path::new("up/x")).unwrap(),
            root.join("x")
        );
        // An absolute link resolves inside the tree, never on the host.
        assert_eq!(
            secure_join(root, Path::new("etc/passwd")).unwrap(),
            root.join("host/etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("../../a")).unwrap(),
            root.join("a")
        );
        assert!(secure_join(root, Path::new("loop/x")).is_err());
    }
}
