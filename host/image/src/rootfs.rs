//! Containers' root filesystems: an image's layers unpacked once into a
//! flattened, read-only snapshot, and an overlay mount per container on top.
//!
//! ```text
//! <store>/snapshots/<chain id>/   all layers applied in order, whiteouts carried out
//! <dir>/rootfs                    overlay: lowerdir=snapshot, upperdir=<dir>/upper, workdir=<dir>/work
//! ```
//!
//! A snapshot is keyed by the chain id of the image's layers, so images
//! with the same layers share it. It is unpacked in `tmp/` and renamed into
//! place, under a per-snapshot flock: concurrent preparations (threads or
//! processes) unpack once and the others wait and reuse it. One lowerdir per
//! container keeps the mount options short whatever the number of layers.
//!
//! The overlay is mounted with paths relative to `<dir>` (`lowerdir=lower`, a
//! symlink to the snapshot, `upperdir=upper,workdir=work`), from a thread with
//! its own working directory. The kernel keeps the options as given and
//! prints them in every mountinfo line of the mount, and every container
//! set-up reads mountinfo a dozen times (libcontainer, libcgroups): with 50
//! overlays, absolute paths made one read cost twice as much.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::error::{ImageError, IoContext};
use crate::oci;
use crate::store::{remove_tree, FileLock, Image, ImageStore};

/// The snapshot directory name for a stack of layers.
pub(crate) fn snapshot_key(diff_ids: &[Digest]) -> String {
    match oci::chain_id(diff_ids) {
        Some(c) => c.hex().to_string(),
        None => "empty".to_string(),
    }
}

/// A container's root filesystem, staged by [`ImageStore::stage_rootfs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedRootfs {
    /// The container directory (canonical): what [`mount_rootfs`] and
    /// [`ImageStore::release_rootfs`] take.
    pub dir: PathBuf,
    /// Where the root filesystem is once mounted (`dir/rootfs`).
    pub rootfs: PathBuf,
    /// The image's unpacked snapshot (the overlay's lower layer): a new
    /// container's files, readable before the mount.
    pub snapshot: PathBuf,
}

impl ImageStore {
    /// Makes a writable root filesystem for `image` at `dir/rootfs`: an
    /// overlay mount whose lower layer is the image's unpacked snapshot
    /// (shared, never written) and whose upper and work directories are
    /// `dir/upper` and `dir/work`. Writes land in `dir/upper` only.
    ///
    /// [`ImageStore::stage_rootfs`] then [`mount_rootfs`], in this process's
    /// mount namespace. Idempotent: when `dir/rootfs` is already mounted (say,
    /// the agent restarted and re-adopts a container) it is returned as is.
    /// Needs root (mount).
    pub fn prepare_rootfs(&self, image: &Image, dir: &Path) -> Result<PathBuf, ImageError> {
        mount_rootfs(&self.stage_rootfs(image, dir)?.dir)
    }

    /// Everything [`ImageStore::prepare_rootfs`] does but the mount: unpacks
    /// the image's snapshot on first use, makes `dir/rootfs`, `dir/upper`,
    /// `dir/work` and the `dir/lower` symlink to the snapshot, and says where
    /// they are. [`mount_rootfs`] mounts `dir`, in whichever mount
    /// namespace the container is made from: the agent's shim mounts it in
    /// its own, so the node's mount table does not grow with its containers.
    /// Until [`ImageStore::release_rootfs`], garbage collection keeps the
    /// snapshot, mounted or not (`users/<snapshot>/` names `dir`).
    pub fn stage_rootfs(&self, image: &Image, dir: &Path) -> Result<StagedRootfs, ImageError> {
        fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .ctx(|| format!("cannot resolve {}", dir.display()))?;
        // Shared: garbage collection waits until the snapshot has its user,
        // which then keeps it.
        let _gc = self.lock("gc.lock", false)?;
        let lower = self.ensure_snapshot(image)?;
        for d in ["rootfs", "upper", "work"].map(|d| dir.join(d)) {
            fs::create_dir_all(&d).ctx(|| format!("cannot create {}", d.display()))?;
        }
        let link = dir.join(LOWER_LINK);
        match fs::read_link(&link) {
            Ok(target) if target == lower => {}
            _ => {
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(&lower, &link)
                    .ctx(|| format!("cannot create {}", link.display()))?;
            }
        }
        let user = self.user_link(&lower, &dir);
        if fs::read_link(&user).ok().as_deref() != Some(dir.as_path()) {
            let parent = user.parent().expect("a user link has a parent");
            fs::create_dir_all(parent).ctx(|| format!("cannot create {}", parent.display()))?;
            let _ = fs::remove_file(&user);
            std::os::unix::fs::symlink(&dir, &user)
                .ctx(|| format!("cannot create {}", user.display()))?;
        }
        Ok(StagedRootfs {
            rootfs: dir.join("rootfs"),
            snapshot: lower,
            dir,
        })
    }

    /// `users/<snapshot>/<hash of dir>`: a symlink to a container directory
    /// made over the snapshot at `lower`.
    fn user_link(&self, lower: &Path, dir: &Path) -> PathBuf {
        let key = lower.file_name().unwrap_or_default();
        let id = Digest::of(dir.as_os_str().as_encoded_bytes());
        self.root().join("users").join(key).join(&id.hex()[..32])
    }

    /// Whether a container directory staged over `snapshot` still uses it
    /// (its `lower` link points there); user links that no longer hold are
    /// removed. The caller holds gc.lock exclusively.
    pub(crate) fn snapshot_in_use(&self, snapshot: &Path) -> bool {
        let users = self
            .root()
            .join("users")
            .join(snapshot.file_name().unwrap_or_default());
        let Ok(entries) = fs::read_dir(&users) else {
            return false;
        };
        let mut used = false;
        for e in entries.flatten() {
            let holds = fs::read_link(e.path())
                .and_then(|dir| fs::read_link(dir.join(LOWER_LINK)))
                .is_ok_and(|l| l == snapshot);
            if holds {
                used = true;
            } else {
                let _ = fs::remove_file(e.path());
            }
        }
        if !used {
            let _ = fs::remove_dir(&users);
        }
        used
    }

    /// Unmounts `dir/rootfs` and removes `dir/rootfs`, `dir/upper` and
    /// `dir/work` (and `dir` if that leaves it empty). Idempotent: a missing
    /// or unmounted directory is fine. Fails with [`ImageError::Busy`] while a
    /// process still uses the mount.
    pub fn release_rootfs(&self, dir: &Path) -> Result<(), ImageError> {
        let dir = match dir.canonicalize() {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ImageError::io(
                    format!("cannot resolve {}", dir.display()),
                    e,
                ))
            }
        };
        let rootfs = dir.join("rootfs");
        // Mounted twice (a racing prepare) unmounts twice.
        while is_mount_point(&rootfs).unwrap_or(false) {
            match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::BUSY) => return Err(ImageError::Busy { target: rootfs }),
                Err(rustix::io::Errno::INVAL) => break,
                Err(e) => {
                    return Err(ImageError::io(
                        format!("cannot unmount {}", rootfs.display()),
                        e.into(),
                    ))
                }
            }
        }
        // rmdir, not a recursive removal: an empty mount point is all that
        // may be there once unmounted.
        match fs::remove_dir(&rootfs) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ImageError::io(
                    format!("cannot remove {}", rootfs.display()),
                    e,
                ))
            }
        }
        remove_tree(&dir.join("upper"))?;
        remove_tree(&dir.join("work"))?;
        if let Ok(lower) = fs::read_link(dir.join(LOWER_LINK)) {
            let _ = fs::remove_file(self.user_link(&lower, &dir));
        }
        let _ = fs::remove_file(dir.join(LOWER_LINK));
        let _ = fs::remove_dir(&dir);
        Ok(())
    }

    /// The image's snapshot, unpacked if needed. The caller holds gc.lock.
    fn ensure_snapshot(&self, image: &Image) -> Result<PathBuf, ImageError> {
        let (manifest, diff_ids) = self.image_layers(image)?;
        let key = snapshot_key(&diff_ids);
        let path = self.snapshots_dir().join(&key);
        if path.is_dir() {
            return Ok(path);
        }
        let _lock = FileLock::acquire(
            &self
                .root()
                .join("locks")
                .join(format!("snapshot-{key}.lock")),
            true,
            true,
        )?;
        if path.is_dir() {
            return Ok(path);
        }
        let tmp = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(self.tmp_dir())
            .ctx(|| format!("cannot create a directory in {}", self.tmp_dir().display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
                .ctx(|| format!("cannot chmod {}", tmp.path().display()))?;
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            crate::unpack::apply_layer(
                tmp.path(),
                &self.blob_path(&layer.digest),
                layer.digest.as_str(),
                diff_id,
            )
            .map_err(|cause| ImageError::Unpack {
                image: image.id.clone(),
                cause,
            })?;
        }
        add_mount_points(tmp.path())
            .ctx(|| format!("cannot add mount points to {}", tmp.path().display()))?;
        // The tree must be on disk before its name says it is complete.
        let f =
            fs::File::open(tmp.path()).ctx(|| format!("cannot open {}", tmp.path().display()))?;
        rustix::fs::syncfs(&f)
            .map_err(|e| ImageError::io("cannot sync the unpacked image", e.into()))?;
        let unpacked = tmp.keep();
        if let Err(e) = fs::rename(&unpacked, &path) {
            let _ = remove_tree(&unpacked);
            return Err(ImageError::io(
                format!("cannot rename into {}", path.display()),
                e,
            ));
        }
        tracing::info!(image = %image.id, snapshot = %key, layers = diff_ids.len(), "image unpacked");
        Ok(path)
    }
}

/// The mount points every container gets (`/proc`, `/sys`, `/dev`, and the
/// `/etc/hosts` and `/etc/resolv.conf` the agent binds), made in the shared
/// snapshot where the image lacks them, as Docker's init layer does. Else
/// each container start made them in its own writable layer: five copy-ups
/// and as many new inodes on the node's disk, per container. Whatever the
/// image has at those paths (a symlink included) is left as it is; mounts
/// hide these empty ones either way.
fn add_mount_points(root: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let missing =
        |p: &Path| matches!(fs::symlink_metadata(p), Err(e) if e.kind() == io::ErrorKind::NotFound);
    for dir in ["proc", "sys", "dev", "etc"] {
        let p = root.join(dir);
        if missing(&p) {
            fs::DirBuilder::new().mode(0o755).create(&p)?;
        }
    }
    // Not through a symlinked /etc (whose target is outside the snapshot).
    if !fs::symlink_metadata(root.join("etc"))?.is_dir() {
        return Ok(());
    }
    for file in ["etc/hosts", "etc/resolv.conf"] {
        let p = root.join(file);
        if missing(&p) {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&p)?;
        }
    }
    Ok(())
}

/// The symlink in a container directory to its snapshot (the lowerdir).
const LOWER_LINK: &str = "lower";

/// Mount the overlay of container directory `dir` on `dir/rootfs` with
/// relative options. The working directory is a process-wide setting, so the
/// mount runs on a short-lived thread that gets its own (`unshare(CLONE_FS)`)
/// and changes it without touching the caller's threads.
fn mount_relative(dir: &Path) -> rustix::io::Result<()> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: CLONE_FS unshares only this thread's root, working
            // directory and umask; no file descriptor table is unshared.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
            rustix::process::chdir(dir)?;
            rustix::mount::mount(
                "overlay",
                "rootfs",
                "overlay",
                rustix::mount::MountFlags::empty(),
                c"lowerdir=lower,upperdir=upper,workdir=work",
            )
        })
        .join()
        .unwrap_or(Err(rustix::io::Errno::INTR))
    })
}

/// Mounts the overlay of a container directory staged by
/// [`ImageStore::stage_rootfs`] on `dir/rootfs`, in the calling process's
/// mount namespace, and returns that path. Idempotent: a mounted `dir/rootfs`
/// is returned as is. Needs root.
pub fn mount_rootfs(dir: &Path) -> Result<PathBuf, ImageError> {
    let rootfs = dir.join("rootfs");
    if is_mount_point(&rootfs).unwrap_or(false) {
        return Ok(rootfs);
    }
    mount_relative(dir).map_err(|e| ImageError::Mount {
        target: rootfs.clone(),
        error: e.into(),
    })?;
    tracing::debug!(rootfs = %rootfs.display(), "root filesystem mounted");
    Ok(rootfs)
}

use trellis_types::mountinfo::{unescape, MountEntry};

fn mountinfo() -> Vec<MountEntry> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|text| trellis_types::mountinfo::parse(&text))
        .unwrap_or_default()
}

/// Whether something is mounted at `path` (symlinks followed); a missing
/// path is not.
///
/// statx's `STATX_ATTR_MOUNT_ROOT` answers from the path alone. Reading
/// mountinfo instead costs a formatted line per mount, overlay options
/// included, so a node with many containers paid for each check with every
/// container it ran. A kernel older than 5.8 (no such attribute) falls back
/// to mountinfo.
pub fn is_mount_point(path: &Path) -> io::Result<bool> {
    use rustix::fs::{statx, AtFlags, StatxAttributes, StatxFlags, CWD};
    match statx(CWD, path, AtFlags::empty(), StatxFlags::empty()) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            Ok(st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT))
        }
        Ok(_) => {
            let canon = fs::canonicalize(path)?;
            Ok(mountinfo()
                .iter()
                .any(|m| Path::new(&m.mount_point) == canon))
        }
        Err(rustix::io::Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The lower directories of every overlay mount in this mount namespace. A
/// relative one (see [`mount_relative`]) is read through its symlink beside
/// the mount point.
pub(crate) fn mounted_lowerdirs() -> Vec<PathBuf> {
    mountinfo()
        .into_iter()
        .filter(|m| m.fs_type == "overlay")
        .flat_map(|m| {
            let base = Path::new(&m.mount_point)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            m.super_options
                .split(',')
                .filter_map(|o| o.strip_prefix("lowerdir="))
                .flat_map(|l| {
                    l.split(':')
                        .map(|p| PathBuf::from(unescape(p)))
                        .collect::<Vec<_>>()
                })
                .map(|p| {
                    if p.is_absolute() {
                        return p;
                    }
                    let link = base.join(p);
                    fs::read_link(&link).unwrap_or(link)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(unescape(r"/a\134"), "/a\\");
        assert_eq!(unescape(r"/plain"), "/plain");
    }

    #[test]
    fn mount_points_are_added_only_where_missing() {
        let bare = tempfile::tempdir().unwrap();
        add_mount_points(bare.path()).unwrap();
        for d in ["proc", "sys", "dev", "etc"] {
            assert!(bare.path().join(d).is_dir(), "{d}");
        }
        for f in ["etc/hosts", "etc/resolv.conf"] {
            assert_eq!(fs::read(bare.path().join(f)).unwrap(), b"", "{f}");
        }
        // The image's own entries stay as they are: a file with content, a
        // symlinked /etc (whose target is not written through).
        let own = tempfile::tempdir().unwrap();
        fs::create_dir(own.path().join("etc")).unwrap();
        fs::write(own.path().join("etc/hosts"), "127.0.0.1 mine\n").unwrap();
        add_mount_points(own.path()).unwrap();
        assert_eq!(
            fs::read_to_string(own.path().join("etc/hosts")).unwrap(),
            "127.0.0.1 mine\n"
        );
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/nonexistent-etc", linked.path().join("etc")).unwrap();
        add_mount_points(linked.path()).unwrap();
        assert!(fs::symlink_metadata(linked.path().join("etc"))
            .unwrap()
            .is_symlink());
        assert!(linked.path().join("proc").is_dir());
    }

    #[test]
    fn root_is_a_mountpoint() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        assert!(!is_mount_point(Path::new("/proc/self")).unwrap());
        assert!(!is_mount_point(Path::new("/no/such/path")).unwrap());
    }
}
